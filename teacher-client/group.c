/* group.c: a teacher client shared by elements with the same settings, and the arbiter
 * granting its capacity (teacher_group.h). */
#include <string.h>

#include "teacher_group.h"

typedef struct {
  gchar *key;                /* the settings, as compared */
  gint refs;                 /* members; under registry_lock */
  TeacherClient *client;
  guint capacity;            /* queries out at once, all members together */

  GMutex lock;
  guint inflight;            /* sent and not yet answered */
  GPtrArray *waiting;        /* Waiting *, oldest first */
  guint timeout_ms;
} TeacherGroup;

struct TeacherMember {
  TeacherGroup *group;
  TeacherStream *stream;
  /* Under the group's lock: */
  guint outstanding;         /* waiting + in flight */
  double need;               /* last mIoU, -1 = none */
  gboolean leaving;
};

typedef struct {
  TeacherMember *member;
  TeacherFrame frame;        /* rgb owned */
  TeacherResultFunc callback;
  gpointer user_data;
  gint64 queued;             /* monotonic us */
} Waiting;

static GMutex registry_lock;
static GHashTable *registry;  /* key -> TeacherGroup */

static gchar *settings_key(const TeacherClientConfig *cfg)
{
  return g_strdup_printf("%s\n%s\n%s\n%s\n%u %d %u %u %.6f %u %u %" G_GSIZE_FORMAT " %d",
                         cfg->urls ? cfg->urls : "", cfg->model ? cfg->model : "",
                         cfg->token_file ? cfg->token_file : "", cfg->ca_file ? cfg->ca_file : "",
                         cfg->timeout_ms, (int)cfg->encoding, cfg->max_side, cfg->inflight,
                         cfg->confidence, cfg->max_retries, cfg->backoff_ms,
                         cfg->max_reply_bytes, cfg->jpeg_qscale);
}

static void waiting_free(Waiting *w)
{
  g_free((guint8 *)w->frame.rgb);
  g_free(w);
}

/* ---- the arbiter ---------------------------------------------------------------------------- */

static void on_answer(TeacherResult *result, const GError *error, gpointer user_data);

/* The waiting query to send next: the member with the lowest accuracy, oldest among equals. */
static guint most_needed(TeacherGroup *group)
{
  guint best = 0;

  for (guint i = 1; i < group->waiting->len; i++) {
    Waiting *w = g_ptr_array_index(group->waiting, i);
    Waiting *b = g_ptr_array_index(group->waiting, best);
    if (w->member->need < b->member->need)
      best = i;
  }
  return best;
}

/* Under the group's lock: sends what the teacher has room for; queries that waited too long
 * go to expired (their callbacks are called by the caller, without the lock). */
static void dispatch(TeacherGroup *group, GPtrArray *expired)
{
  gint64 now = g_get_monotonic_time();

  while (group->inflight < group->capacity && group->waiting->len > 0) {
    Waiting *w = g_ptr_array_steal_index(group->waiting, most_needed(group));
    if (now - w->queued > (gint64)group->timeout_ms * 1000) {
      g_ptr_array_add(expired, w);
      continue;
    }
    TeacherSubmitStatus status =
        teacher_stream_submit(w->member->stream, &w->frame, on_answer, w, NULL);
    if (status == TEACHER_SUBMIT_OK) {
      group->inflight++;
      continue;
    }
    if (status == TEACHER_SUBMIT_BUSY) {  /* its stream's last answer is still returning */
      g_ptr_array_insert(group->waiting, 0, w);
      break;
    }
    g_ptr_array_add(expired, w);
  }
}

/* Without the group's lock: the callbacks of queries given up, then their places freed. */
static void fail_waiting(TeacherGroup *group, GPtrArray *given_up, GQuark domain, int code,
                         const char *message)
{
  for (guint i = 0; i < given_up->len; i++) {
    Waiting *w = g_ptr_array_index(given_up, i);
    GError *error = g_error_new_literal(domain, code, message);
    g_mutex_lock(&group->lock);
    w->member->outstanding--;
    g_mutex_unlock(&group->lock);
    w->callback(NULL, error, w->user_data);
    g_error_free(error);
    waiting_free(w);
  }
  g_ptr_array_set_size(given_up, 0);
}

static void dispatch_now(TeacherGroup *group)
{
  g_mutex_lock(&group->lock);
  if (group->waiting->len == 0) {  /* the common case, every frame: nothing to allocate */
    g_mutex_unlock(&group->lock);
    return;
  }
  g_autoptr(GPtrArray) expired = g_ptr_array_new();
  dispatch(group, expired);
  g_mutex_unlock(&group->lock);
  fail_waiting(group, expired, TEACHER_ERROR, TEACHER_ERROR_TIMEOUT,
               "the query waited for the shared teacher longer than its timeout");
}

/* On the client thread: the answer goes to the element, and the place to the next query. */
static void on_answer(TeacherResult *result, const GError *error, gpointer user_data)
{
  Waiting *w = user_data;
  TeacherMember *member = w->member;
  TeacherGroup *group = member->group;

  /* The member may ask again as soon as it has its answer; the place frees after. */
  g_mutex_lock(&group->lock);
  member->outstanding--;
  g_mutex_unlock(&group->lock);
  w->callback(result, error, w->user_data);
  g_mutex_lock(&group->lock);
  group->inflight--;
  g_mutex_unlock(&group->lock);
  waiting_free(w);
  dispatch_now(group);
}

/* ---- members -------------------------------------------------------------------------------- */

TeacherMember *teacher_group_join(const TeacherClientConfig *cfg, const char *name,
                                  GError **error)
{
  g_autofree gchar *key = settings_key(cfg);
  TeacherGroup *group;

  g_mutex_lock(&registry_lock);
  if (!registry)
    registry = g_hash_table_new(g_str_hash, g_str_equal);
  group = g_hash_table_lookup(registry, key);
  if (!group) {
    TeacherClient *client = teacher_client_new(cfg, error);
    if (!client) {
      g_mutex_unlock(&registry_lock);
      return NULL;
    }
    group = g_new0(TeacherGroup, 1);
    group->key = g_steal_pointer(&key);
    group->client = client;
    group->capacity = MAX(cfg->inflight, 1);
    group->timeout_ms = cfg->timeout_ms;
    group->waiting = g_ptr_array_new();
    g_mutex_init(&group->lock);
    g_hash_table_insert(registry, group->key, group);
  }
  group->refs++;
  g_mutex_unlock(&registry_lock);

  TeacherMember *member = g_new0(TeacherMember, 1);
  member->group = group;
  member->need = -1;
  /* One more than the group's capacity: a query granted while the stream's previous answer is
   * still returning is not refused. */
  member->stream = teacher_client_open_stream(group->client, name, group->capacity + 1);
  return member;
}

void teacher_group_leave(TeacherMember *member)
{
  TeacherGroup *group = member->group;
  g_autoptr(GPtrArray) mine = g_ptr_array_new();

  g_mutex_lock(&group->lock);
  member->leaving = TRUE;
  for (guint i = 0; i < group->waiting->len;) {
    Waiting *w = g_ptr_array_index(group->waiting, i);
    if (w->member == member)
      g_ptr_array_add(mine, g_ptr_array_steal_index(group->waiting, i));
    else
      i++;
  }
  g_mutex_unlock(&group->lock);
  fail_waiting(group, mine, G_IO_ERROR, G_IO_ERROR_CANCELLED, "the element stops");
  teacher_stream_close(member->stream);  /* runs on_answer for the queries in flight */
  g_free(member);

  g_mutex_lock(&registry_lock);
  gboolean last = --group->refs == 0;
  if (last)
    g_hash_table_remove(registry, group->key);
  g_mutex_unlock(&registry_lock);
  if (!last)
    return;
  teacher_client_free(group->client);
  g_ptr_array_free(group->waiting, TRUE);
  g_mutex_clear(&group->lock);
  g_free(group->key);
  g_free(group);
}

TeacherStream *teacher_member_stream(TeacherMember *member)
{
  return member->stream;
}

guint teacher_member_outstanding(TeacherMember *member)
{
  guint outstanding;

  dispatch_now(member->group);
  g_mutex_lock(&member->group->lock);
  outstanding = member->outstanding;
  g_mutex_unlock(&member->group->lock);
  return outstanding;
}

void teacher_member_set_need(TeacherMember *member, double last_miou)
{
  g_mutex_lock(&member->group->lock);
  member->need = last_miou;
  g_mutex_unlock(&member->group->lock);
}

gboolean teacher_member_request(TeacherMember *member, const TeacherFrame *frame,
                                TeacherResultFunc callback, gpointer user_data, GError **error)
{
  TeacherGroup *group = member->group;
  gsize row = (gsize)frame->width * 3, stride = frame->stride ? (gsize)frame->stride : row;

  if (!frame->rgb || frame->width <= 0 || frame->height <= 0 || stride < row) {
    g_set_error(error, TEACHER_ERROR, TEACHER_ERROR_INVALID, "teacher frame refused: no pixels "
                "or bad sizes");
    return FALSE;
  }
  Waiting *w = g_new0(Waiting, 1);
  guint8 *rgb = g_malloc(row * frame->height);
  for (int y = 0; y < frame->height; y++)
    memcpy(rgb + row * y, frame->rgb + stride * y, row);
  w->member = member;
  w->frame = *frame;
  w->frame.rgb = rgb;
  w->frame.stride = (int)row;
  w->callback = callback;
  w->user_data = user_data;
  w->queued = g_get_monotonic_time();

  g_mutex_lock(&group->lock);
  if (member->leaving) {
    g_mutex_unlock(&group->lock);
    waiting_free(w);
    g_set_error(error, TEACHER_ERROR, TEACHER_ERROR_INVALID, "the element is stopping");
    return FALSE;
  }
  member->outstanding++;
  g_ptr_array_add(group->waiting, w);
  g_mutex_unlock(&group->lock);
  dispatch_now(group);
  return TRUE;
}
