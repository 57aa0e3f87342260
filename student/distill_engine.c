/* distill_engine.c: the engine of distill.h: teacher slots, the trainer thread, weight
 * publishing and the per-frame path.
 *
 * Locks: `lock` guards the slots, the stride and the statistics, and is only held for
 * bookkeeping; `publish_lock` guards the published weights during a copy in or out. No lock is
 * held while the network runs, and the streaming thread only try-locks publish_lock: when the
 * trainer is publishing at that instant, the frame keeps the weights it has and the next one
 * picks up the new ones. */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "distill_private.h"

typedef enum {
  SLOT_FREE,
  SLOT_REQUESTED, /* input copied, ticket given, waiting for the teacher */
  SLOT_LABELED,   /* labels in, waiting for the trainer */
  SLOT_TRAINING,
} SlotState;

typedef struct {
  SlotState state;
  guint64 ticket;
  gint64 requested_at; /* monotonic, µs */
  FeatureMap input;
  uint8_t *labels;
} Slot;

struct DistillEngine {
  DistillConfig cfg;
  int num_classes, label_h, label_w;

  /* Streaming thread. */
  Student *student;
  ThreadPool *pool;
  const FeatureMap *logits;  /* of the last frame processed */
  guint64 frame;          /* index of the current frame = frames processed so far */
  guint64 decided_frame;  /* frame + 1 once wants_teacher ran for it */
  gboolean queried;       /* a teacher query was made: last_query_frame is valid */
  guint64 last_query_frame;
  float thumb[DISTILL_THUMB_FLOATS], query_thumb[DISTILL_THUMB_FLOATS];
  atomic_uint_fast64_t weights_in_use;
  guint64 rollbacks_reported;  /* by distill_engine_rollback_news */

  GMutex lock;
  GCond work;             /* a slot became LABELED, or stopping */
  Slot *slots;
  guint n_slots;
  guint stride;
  gint stopping;          /* set under the lock, read atomically by a training round too */
  DistillStats stats;     /* counters; the means are computed from the totals below */
  double train_ms_total, student_ms_total;

  GMutex publish_lock;
  float *published;
  atomic_uint_fast64_t published_version;

  GMutex save_lock;
  float *save_buffer;

  DistillTrainer trainer;
  GThread *thread;        /* the trainer, asynchronous mode */
  /* The trainer's own pool, made by the trainer thread (its workers inherit its priority) and
   * kept here rather than on that thread's stack, so that all the engine owns hangs from it. */
  ThreadPool *train_pool;
};

G_DEFINE_QUARK(distill-error-quark, distill_error)

static gboolean invalid(GError **error, const char *what)
{
  g_set_error(error, DISTILL_ERROR, DISTILL_ERROR_CONFIG, "distill: %s", what);
  return FALSE;
}

static gboolean check_config(const DistillConfig *c, int num_classes, GError **error)
{
  if (c->input_width < 2 || c->input_height < 2)
    return invalid(error, "input_width and input_height must be at least 2 (the student's "
                          "input size)");
  if (c->min_stride < 1 || c->max_stride < c->min_stride || c->max_stride > (1u << 20))
    return invalid(error, "strides must satisfy 1 <= min_stride <= max_stride <= 1048576");
  if (!(c->accuracy_threshold >= 0.0 && c->accuracy_threshold <= 1.0))
    return invalid(error, "accuracy_threshold is an mIoU: give a value in [0, 1]");
  if (c->max_pending < 1 || c->max_pending > 64)
    return invalid(error, "max_pending must be in [1, 64]");
  if (!(c->optimizer.learning_rate > 0.0f))
    return invalid(error, "the learning rate must be positive");
  if (!(c->rollback_drop > 0.0 && c->rollback_drop <= 1.0))
    return invalid(error, "rollback_drop is an mIoU difference: give a value in (0, 1]");
  if (!(c->foreground_weight > 0.0))
    return invalid(error, "foreground_weight must be positive (1 = plain loss)");
  if (!(c->scene_change_threshold >= 0.0))
    return invalid(error, "scene_change_threshold must be >= 0 (0 = off)");
  if (c->replay_frames > 64)
    return invalid(error, "replay_frames must be at most 64");
  if (c->train_nice < 0 || c->train_nice > 19)
    return invalid(error, "train_nice is a nice value in [0, 19]");
  if (num_classes < 2 || num_classes > 254)
    return invalid(error, "the student must have 2 to 254 classes");
  return TRUE;
}

/* ---- weights ----------------------------------------------------------------------------- */

static size_t param_bytes(DistillEngine *e)
{
  return student_param_count(e->student) * sizeof(float);
}

static void publish(DistillEngine *e)
{
  g_mutex_lock(&e->publish_lock);
  memcpy(e->published, student_params(e->trainer.student), param_bytes(e));
  atomic_fetch_add(&e->published_version, 1);
  g_mutex_unlock(&e->publish_lock);
}

/* Async: the trainer publishes after every step, so the stream gains from a round of seconds
 * while it runs instead of at its end (vtest in real time: 0.680 against 0.667, means of six and
 * five runs). */
static void publish_step(gpointer data)
{
  publish(data);
}

static void pick_up_weights(DistillEngine *e)
{
  if (atomic_load(&e->published_version) == atomic_load(&e->weights_in_use))
    return;
  if (!g_mutex_trylock(&e->publish_lock))
    return;
  memcpy(student_params(e->student), e->published, param_bytes(e));
  atomic_store(&e->weights_in_use, atomic_load(&e->published_version));
  g_mutex_unlock(&e->publish_lock);
}

/* ---- rounds ------------------------------------------------------------------------------ */

/* Trains on a slot in state SLOT_TRAINING, then frees it. Called without the lock. */
static void train_slot(DistillEngine *e, Slot *slot, ThreadPool *pool)
{
  DistillRound round = { .ticket = slot->ticket, .input = &slot->input, .labels = slot->labels,
                         .miou_before = -1.0, .miou_after = -1.0,
                         .verdict = DISTILL_ROUND_UNCHECKED };
  if (e->cfg.round_started)
    e->cfg.round_started(&round, e->cfg.round_user_data);
  gint64 start = g_get_monotonic_time();
  distill_trainer_round(&e->trainer, &round, pool, &e->stopping);
  /* Steps were published as they were taken (async); after a rollback the stream, too, goes
   * back to the last good weights. */
  if ((round.updates && !e->trainer.stepped) || round.verdict == DISTILL_ROUND_ROLLED_BACK)
    publish(e);
  double ms = (double)(g_get_monotonic_time() - start) / 1000.0;

  g_mutex_lock(&e->lock);
  e->stride = distill_policy_next_stride(&e->cfg, e->stride, round.miou_after);
  round.stride = e->stride;
  e->stats.updates += round.updates;
  e->stats.rounds++;
  e->stats.last_miou = round.miou_before;
  if (round.verdict == DISTILL_ROUND_ROLLED_BACK) {
    e->stats.rollbacks++;
    e->stats.last_collapse = round.collapse;
  }
  e->train_ms_total += ms;
  slot->state = SLOT_FREE;
  g_mutex_unlock(&e->lock);
  if (e->cfg.round_finished)
    e->cfg.round_finished(&round, e->cfg.round_user_data);
}

static Slot *newest_labeled(DistillEngine *e)
{
  Slot *newest = NULL;
  for (guint i = 0; i < e->n_slots; i++)
    if (e->slots[i].state == SLOT_LABELED && (!newest || e->slots[i].ticket > newest->ticket))
      newest = &e->slots[i];
  return newest;
}

/* Called with the lock held, let go while a frame is copied: the teacher frames that came in
 * while a round ran, but the newest, join the replay frames without a round of their own. A
 * round lasts longer than the teacher's stride on a small box; training on the backlog in order
 * would have the stream learn seconds-old frames, and would leave no slot to ask the next frame
 * in, stretching the stride to a round (vtest in real time: 0.688 over five runs at the teacher
 * fraction of sync mode, 0.08-0.10, against 0.678 at 0.044-0.052). */
static void replay_older_labeled(DistillEngine *e, const Slot *newest)
{
  for (guint i = 0; i < e->n_slots; i++) {
    Slot *s = &e->slots[i];
    if (s->state != SLOT_LABELED || s->ticket >= newest->ticket)
      continue; /* one answered while the lock was let go is newer: the next round's */
    s->state = SLOT_TRAINING;
    g_mutex_unlock(&e->lock);
    distill_trainer_keep(&e->trainer, &s->input, s->labels);
    g_mutex_lock(&e->lock);
    s->state = SLOT_FREE;
  }
}

static void lower_priority(int nice_value)
{
  /* Per thread on Linux; threads created afterwards (the trainer's pool) inherit it. A process
   * already running nicer keeps its value. */
  pid_t tid = gettid();
  errno = 0;
  int current = getpriority(PRIO_PROCESS, tid);
  if (errno == 0 && current < nice_value && setpriority(PRIO_PROCESS, tid, nice_value) != 0)
    g_warning("distill: could not lower the trainer's priority: %s", g_strerror(errno));
}

/* Two threads even on 2 cores: at nice 10 the second takes what inference leaves idle without
 * slowing the stream, and real time is short of training compute (student/README.md). */
static int default_train_threads(void)
{
  int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
  return cores <= 1 ? 1 : MAX(2, cores / 2);
}

static gpointer trainer_main(gpointer data)
{
  DistillEngine *e = data;
  lower_priority(e->cfg.train_nice);
  e->train_pool = thread_pool_new(e->cfg.train_threads > 0 ? e->cfg.train_threads
                                                           : default_train_threads());
  for (;;) {
    g_mutex_lock(&e->lock);
    Slot *slot;
    while (!e->stopping && !(slot = newest_labeled(e)))
      g_cond_wait(&e->work, &e->lock);
    if (e->stopping) {
      g_mutex_unlock(&e->lock);
      break;
    }
    slot->state = SLOT_TRAINING;
    replay_older_labeled(e, slot);
    g_mutex_unlock(&e->lock);
    train_slot(e, slot, e->train_pool);
  }
  return NULL;
}

/* ---- life cycle -------------------------------------------------------------------------- */

DistillEngine *distill_engine_new(const Student *initial, const DistillConfig *cfg,
                                  GError **error)
{
  g_return_val_if_fail(initial && cfg, NULL);
  if (!check_config(cfg, student_get_config(initial)->num_classes, error))
    return NULL;
  DistillEngine *e = g_new0(DistillEngine, 1);
  e->cfg = *cfg;
  e->num_classes = student_get_config(initial)->num_classes;
  e->student = student_new(student_get_config(initial), 0);
  student_set_bf16_forward(e->student, cfg->forward_bf16);
  memcpy(student_params(e->student), student_params((Student *)initial), param_bytes(e));
  student_logits_size(e->student, cfg->input_height, cfg->input_width, &e->label_h, &e->label_w);
  /* Engines in one process (cameras) share one pool unless given their own thread count. */
  e->pool = cfg->threads > 0 ? thread_pool_new(cfg->threads) : thread_pool_shared();
  e->stride = cfg->min_stride;
  e->stats.last_miou = -1.0;
  g_mutex_init(&e->lock);
  g_cond_init(&e->work);
  g_mutex_init(&e->publish_lock);
  g_mutex_init(&e->save_lock);

  e->n_slots = cfg->max_pending;
  e->slots = g_new0(Slot, e->n_slots);
  for (guint i = 0; i < e->n_slots; i++) {
    Slot *s = &e->slots[i];
    s->input = feature_map(g_new(float, (size_t)cfg->input_height * cfg->input_width * 3),
                           cfg->input_height, cfg->input_width, 3);
    s->labels = g_malloc((size_t)e->label_h * e->label_w);
  }
  e->published = g_malloc(param_bytes(e));
  memcpy(e->published, student_params(e->student), param_bytes(e));
  e->save_buffer = g_malloc(param_bytes(e));

  distill_trainer_init(&e->trainer, &e->cfg, initial);
  if (!cfg->sync) {
    e->trainer.stepped = publish_step;
    e->trainer.stepped_user_data = e;
    e->thread = g_thread_new("distill-trainer", trainer_main, e);
  }
  return e;
}

void distill_engine_free(DistillEngine *e)
{
  if (!e)
    return;
  if (e->thread) {
    g_mutex_lock(&e->lock);
    g_atomic_int_set(&e->stopping, TRUE);
    g_cond_broadcast(&e->work);
    g_mutex_unlock(&e->lock);
    g_thread_join(e->thread);
    thread_pool_free(e->train_pool);
  }
  distill_trainer_clear(&e->trainer);
  for (guint i = 0; i < e->n_slots; i++) {
    g_free(e->slots[i].input.data);
    g_free(e->slots[i].labels);
  }
  g_free(e->slots);
  g_free(e->published);
  g_free(e->save_buffer);
  thread_pool_free(e->pool);
  student_free(e->student);
  g_mutex_clear(&e->lock);
  g_cond_clear(&e->work);
  g_mutex_clear(&e->publish_lock);
  g_mutex_clear(&e->save_lock);
  g_free(e);
}

const DistillConfig *distill_engine_get_config(const DistillEngine *e) { return &e->cfg; }

void distill_engine_label_size(const DistillEngine *e, int *height, int *width)
{
  *height = e->label_h;
  *width = e->label_w;
}

/* ---- teacher frames ---------------------------------------------------------------------- */

static gboolean check_input(DistillEngine *e, const FeatureMap *input)
{
  if (input->h == e->cfg.input_height && input->w == e->cfg.input_width && input->c == 3)
    return TRUE;
  g_critical("distill: input of %dx%dx%d, the engine was made for %dx%dx3: make another engine "
             "for another size", input->w, input->h, input->c, e->cfg.input_width,
             e->cfg.input_height);
  return FALSE;
}

/* Under lock: gives up requests older than the timeout, so that a lost answer frees its slot. */
static void give_up_stale(DistillEngine *e, gint64 now)
{
  if (!e->cfg.teacher_timeout_ms)
    return;
  for (guint i = 0; i < e->n_slots; i++) {
    Slot *s = &e->slots[i];
    if (s->state == SLOT_REQUESTED && now - s->requested_at > e->cfg.teacher_timeout_ms * 1000LL) {
      s->state = SLOT_FREE;
      e->stats.teacher_errors++;
    }
  }
}

/* Whether this frame is due: the stride has passed, or (scene-change trigger) it departs from
 * the last teacher frame. Fills e->thumb when the trigger is on. */
static gboolean teacher_due(DistillEngine *e, const FeatureMap *input, guint stride)
{
  if (e->cfg.scene_change_threshold > 0.0)
    distill_thumbnail(input, e->thumb);
  if (!e->queried)
    return TRUE;
  guint64 since = e->frame - e->last_query_frame;
  if (since >= stride)
    return TRUE;
  return e->cfg.scene_change_threshold > 0.0 && since >= e->cfg.min_stride &&
         distill_thumbnail_distance(e->thumb, e->query_thumb) > e->cfg.scene_change_threshold;
}

guint64 distill_engine_wants_teacher(DistillEngine *e, const FeatureMap *input)
{
  if (!check_input(e, input) || e->decided_frame == e->frame + 1)
    return 0;
  e->decided_frame = e->frame + 1;

  g_mutex_lock(&e->lock);
  guint stride = e->stride;
  g_mutex_unlock(&e->lock);
  if (!teacher_due(e, input, stride))
    return 0;

  g_mutex_lock(&e->lock);
  gint64 now = g_get_monotonic_time();
  give_up_stale(e, now);
  Slot *slot = NULL;
  for (guint i = 0; i < e->n_slots && !slot; i++)
    if (e->slots[i].state == SLOT_FREE)
      slot = &e->slots[i];
  if (slot) {
    slot->state = SLOT_REQUESTED;
    slot->ticket = e->frame + 1;
    slot->requested_at = now;
    e->stats.teacher_queries++;
  }
  g_mutex_unlock(&e->lock);
  if (!slot)
    return 0; /* all slots busy: the next frame asks again */

  /* Nobody else touches a REQUESTED slot before its ticket is out. */
  for (int y = 0; y < input->h; y++)
    memcpy(feature_map_at(&slot->input, y, 0), feature_map_at(input, y, 0),
           (size_t)input->w * 3 * sizeof(float));
  e->queried = TRUE;
  e->last_query_frame = e->frame;
  memcpy(e->query_thumb, e->thumb, sizeof e->thumb);
  return slot->ticket;
}

static Slot *find_slot(DistillEngine *e, guint64 ticket, SlotState state)
{
  for (guint i = 0; i < e->n_slots; i++)
    if (e->slots[i].state == state && e->slots[i].ticket == ticket)
      return &e->slots[i];
  return NULL;
}

gboolean distill_engine_teacher_result(DistillEngine *e, guint64 ticket, const uint8_t *labels,
                                       int height, int width, GError **error)
{
  if (height != e->label_h || width != e->label_w) {
    g_set_error(error, DISTILL_ERROR, DISTILL_ERROR_LABELS,
                "distill: teacher labels of %dx%d, expected %dx%d (the student's logits size, "
                "half the input size): resize them first", width, height, e->label_w, e->label_h);
    distill_engine_teacher_failed(e, ticket);
    return FALSE;
  }
  g_mutex_lock(&e->lock);
  Slot *slot = find_slot(e, ticket, SLOT_REQUESTED);
  if (slot) {
    memcpy(slot->labels, labels, (size_t)height * width);
    slot->state = SLOT_LABELED;
    g_cond_signal(&e->work);
  } else {
    e->stats.teacher_errors++;
  }
  g_mutex_unlock(&e->lock);
  if (!slot)
    g_set_error(error, DISTILL_ERROR, DISTILL_ERROR_TICKET,
                "distill: no outstanding teacher request for ticket %" G_GUINT64_FORMAT
                " (answered already, given up after teacher_timeout_ms, or never given)", ticket);
  return slot != NULL;
}

void distill_engine_teacher_failed(DistillEngine *e, guint64 ticket)
{
  g_mutex_lock(&e->lock);
  Slot *slot = find_slot(e, ticket, SLOT_REQUESTED);
  if (slot) {
    slot->state = SLOT_FREE;
    e->stats.teacher_errors++;
  }
  g_mutex_unlock(&e->lock);
}

/* ---- frames ------------------------------------------------------------------------------ */

/* Sync mode: the current frame's teacher round, inline. */
static void train_inline(DistillEngine *e)
{
  guint64 ticket = e->frame + 1;
  g_mutex_lock(&e->lock);
  Slot *slot = find_slot(e, ticket, SLOT_LABELED);
  Slot *unanswered = find_slot(e, ticket, SLOT_REQUESTED);
  if (unanswered) {
    unanswered->state = SLOT_FREE;
    e->stats.teacher_errors++;
  }
  if (slot)
    slot->state = SLOT_TRAINING;
  g_mutex_unlock(&e->lock);
  if (slot)
    train_slot(e, slot, e->pool);
}

void distill_engine_process(DistillEngine *e, const FeatureMap *input, uint8_t *classes)
{
  if (!check_input(e, input))
    return;
  if (e->cfg.sync)
    train_inline(e);
  pick_up_weights(e);
  gint64 start = g_get_monotonic_time();
  /* A whole frame per turn on a shared pool: handing it over kernel by kernel costs more. */
  thread_pool_hold(e->pool);
  e->logits = student_forward(e->student, input, e->pool);
  argmax_channels(e->logits, classes, e->pool);
  thread_pool_release(e->pool);
  double ms = (double)(g_get_monotonic_time() - start) / 1000.0;
  g_mutex_lock(&e->lock);
  e->stats.frames++;
  e->student_ms_total += ms;
  g_mutex_unlock(&e->lock);
  e->frame++;
}

const FeatureMap *distill_engine_logits(DistillEngine *e)
{
  return e->logits;
}

/* ---- statistics and checkpoints ---------------------------------------------------------- */

void distill_engine_get_stats(DistillEngine *e, DistillStats *stats)
{
  g_mutex_lock(&e->lock);
  *stats = e->stats;
  stats->stride = e->stride;
  stats->train_ms = e->stats.rounds ? e->train_ms_total / (double)e->stats.rounds : 0.0;
  stats->student_ms = e->stats.frames ? e->student_ms_total / (double)e->stats.frames : 0.0;
  g_mutex_unlock(&e->lock);
  stats->weights_version = atomic_load(&e->weights_in_use);
}

gboolean distill_engine_rollback_news(DistillEngine *e, DistillStats *stats)
{
  distill_engine_get_stats(e, stats);
  if (stats->rollbacks == e->rollbacks_reported)
    return FALSE;
  e->rollbacks_reported = stats->rollbacks;
  return TRUE;
}

gboolean distill_engine_save(DistillEngine *e, const char *path, GError **error)
{
  g_mutex_lock(&e->save_lock);
  g_mutex_lock(&e->publish_lock);
  memcpy(e->save_buffer, e->published, param_bytes(e));
  g_mutex_unlock(&e->publish_lock);
  /* The inference network only lends its (immutable) tensor table to the writer. */
  gboolean ok = student_save_values(e->student, e->save_buffer, path, error);
  g_mutex_unlock(&e->save_lock);
  return ok;
}

Student *distill_engine_snapshot(DistillEngine *e)
{
  Student *copy = student_new(student_get_config(e->student), 0);
  g_mutex_lock(&e->publish_lock);
  memcpy(student_params(copy), e->published, param_bytes(e));
  g_mutex_unlock(&e->publish_lock);
  return copy;
}
