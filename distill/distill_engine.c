/* distill_engine.c: the engine of distill.h: teacher slots and queries, the trainer thread,
 * weight publishing and the per-frame path.
 *
 * The stream runs the network's inference form (student_fused_copy: for a re-parameterised
 * architecture, its training branches folded into its convolutions), the trainer its trainable
 * form; the trainer publishes both, the one for the stream, the other for checkpoints.
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

/* Sync mode waits this much past teacher_timeout_ms before giving a query up: the caller's
 * teacher client gives up at the same timeout and fails the query itself, which ends the wait. */
#define SYNC_WAIT_GRACE_MS 2000

typedef enum {
  SLOT_FREE,
  SLOT_REQUESTED, /* input copied, query out, waiting for the teacher */
  SLOT_LABELED,   /* labels in, waiting for the trainer */
  SLOT_TRAINING,
} SlotState;

/* A teacher frame: its input, at its own size, and its labels. The buffers keep the size of the
 * largest frame they held. */
typedef struct {
  SlotState state;
  guint64 query_id;    /* of the frame in it */
  gint64 requested_at; /* monotonic, µs */
  FeatureMap input;
  size_t input_capacity;  /* floats */
  uint8_t *labels;
  size_t label_capacity;  /* bytes */
  uint8_t *shown;         /* the labels at the size the user sees, when given */
  size_t shown_capacity;  /* bytes */
  int shown_h, shown_w;   /* 0 = none */
  uint8_t *held;          /* the answer the stream held for this frame (label size), if any */
  gboolean has_held;
  guint held_age;         /* frames from the held answer's to this one */
} Slot;

/* A teacher answer kept for the stream's fusion. A frame held back by the caller
 * (distill_engine_show) may be shown after newer answers came: it takes the newest of its own
 * time, so a few are kept. */
typedef struct {
  uint8_t *labels;
  size_t capacity;      /* bytes */
  int h, w;
  guint64 query;        /* of the frame it is of; 0 = none */
} HeldAnswer;
#define HELD_ANSWERS 8

/* A frame inferred and not yet shown: its logits (out of the student's buffers, which the next
 * frame overwrites) and its class map's size. */
typedef struct {
  FeatureMap logits;
  size_t capacity;      /* floats */
  int label_h, label_w;
} Pending;

struct DistillQuery {
  DistillEngine *engine;
  guint64 id;
  int label_h, label_w;
};

struct DistillEngine {
  DistillConfig cfg;
  int num_classes;

  /* Streaming thread. */
  Student *student;
  ThreadPool *pool;
  const FeatureMap *logits;  /* of the last frame shown */
  guint64 frame;          /* index of the current frame = frames inferred so far */
  guint64 shown;          /* frames shown so far */
  /* The frames shown .. frame - 1, oldest first; the entries after them keep their buffers for
   * the next frames. */
  Pending pending[DISTILL_SHOW_PENDING_MAX];
  guint64 decided_frame;  /* frame + 1 once wants_teacher ran for it */
  gboolean queried;       /* a teacher query was made: last_query_frame is valid */
  guint64 last_query_frame;
  float thumb[DISTILL_THUMB_FLOATS], query_thumb[DISTILL_THUMB_FLOATS];
  atomic_uint_fast64_t weights_in_use;
  guint64 rollbacks_reported;  /* by distill_engine_rollback_news */
  /* The compute governor: the stream's input, resized when it runs smaller than the nominal. */
  DistillGovernor governor;
  double interval_ms;     /* 0 = unknown */
  double load;            /* this engine's part of process_load */
  FeatureMap resized;
  size_t resized_capacity; /* floats */
  /* Fusion with the teacher's last answer (cfg.fuse_teacher): the stream's copy of the answer
   * a frame takes and its query (the frame it is of; 0 = none), the same moved with the scene
   * to the frame shown (cfg.follow_motion; made for frame moved_frame - 1 from the answer of
   * query moved_query), and the fused logits. */
  uint8_t *stream_held, *stream_shown;
  size_t stream_held_capacity;
  int stream_held_h, stream_held_w;
  guint64 stream_held_query;
  guint64 moved_frame, moved_query;
  DistillMotion motion;
  FeatureMap fused;
  size_t fused_capacity;  /* floats */

  GMutex lock;
  GCond work;             /* a slot became LABELED, or stopping */
  GCond answered;         /* a query was answered or failed (sync mode waits on it) */
  Slot *slots;
  guint n_slots;
  guint stride;
  gint stopping;          /* set under the lock, read atomically by a training round too */
  DistillStats stats;     /* counters; the means are computed from the totals below */
  double train_ms_total, student_ms_total;
  gint64 round_start;     /* monotonic µs of the round running, 0 = none */
  gboolean hibernating;
  int input_w, input_h;   /* the stream's, in use */
  int frame_w, frame_h;   /* the stream's nominal input (the frames'), for input_w/_h */
  double inference_share;
  /* The newest answers (labels' size), for the stream's fusion; frames from held_from - 1 on
   * (a scene change) take no answer to a query before it. */
  HeldAnswer answers[HELD_ANSWERS];
  guint64 held_from;
  double fusion_weight;   /* the trainer's, after its last round (0 = the student alone) */
  guint fusion_age;       /* the age of the held answer that round fitted it on (0 = none) */
  /* The training size (distill_growth_update, at the end of each round): the long side the
   * caller is asked to give the input at, and why it last changed, for the stream to report
   * when inputs of that size come. inference_room: the share of the frame interval the
   * stream's inference may take (the budget less the process's other streams'), 0 while the
   * governor runs the stream smaller. */
  DistillGrowth growth;
  DistillResizeReason growth_reason;
  double inference_room;
  gboolean stream_lowered; /* the governor runs the stream below its input's size */

  GMutex publish_lock;
  float *published;           /* the inference form's weights */
  float *published_trainable; /* the trainable form's, when the forms differ (else NULL) */
  Student *fusing;            /* the trainer's: the inference form it fuses into (idem) */
  atomic_uint_fast64_t published_version;

  GMutex save_lock;
  float *save_buffer;         /* the trainable form's weights */

  DistillTrainer trainer;
  /* The trainer's: the end of its last round (monotonic µs, 0 = none), and the scratch of
   * distill_resolution_miou. */
  gint64 last_round_end;
  float *resolution_shares;
  size_t resolution_shares_capacity; /* floats */
  uint8_t *resolution_map;
  size_t resolution_map_capacity;    /* bytes */
  GThread *thread;        /* the trainer, asynchronous mode */
  /* The trainer's own pool, made by the trainer thread (its workers inherit its priority) and
   * kept here rather than on that thread's stack, so that all the engine owns hangs from it. */
  ThreadPool *train_pool;
};

/* The governor's budget holds per process: the inference loads (share of each stream's frame
 * interval) of all its engines, summed. */
static GMutex process_lock;
static double process_load;

/* Replaces the engine's part of the process's load with load; returns the other engines'. */
static double share_load(DistillEngine *e, double load)
{
  g_mutex_lock(&process_lock);
  process_load += load - e->load;
  e->load = load;
  double others = MAX(process_load - load, 0.0);
  g_mutex_unlock(&process_lock);
  return others;
}

/* ---- weights ----------------------------------------------------------------------------- */

/* The inference form's weights, and the trainable form's. */
static size_t param_bytes(DistillEngine *e)
{
  return student_param_count(e->student) * sizeof(float);
}

static size_t trainable_bytes(DistillEngine *e)
{
  return student_param_count(e->trainer.student) * sizeof(float);
}

/* The newest trainable weights: the published ones when the forms are the same. */
static const float *trainable_published(DistillEngine *e)
{
  return e->published_trainable ? e->published_trainable : e->published;
}

static void publish(DistillEngine *e)
{
  const float *trained = student_params(e->trainer.student);
  if (e->fusing)
    student_fuse(e->trainer.student, e->fusing);
  g_mutex_lock(&e->publish_lock);
  if (e->fusing) {
    memcpy(e->published, student_params(e->fusing), param_bytes(e));
    memcpy(e->published_trainable, trained, trainable_bytes(e));
  } else {
    memcpy(e->published, trained, param_bytes(e));
  }
  atomic_fetch_add(&e->published_version, 1);
  g_mutex_unlock(&e->publish_lock);
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

/* Under lock: whether the training size may change (the governor's conditions, and a largest
 * size above the caller's). */
static gboolean growing(const DistillEngine *e)
{
  return e->cfg.inference_budget > 0.0 && e->cfg.train && !e->cfg.sync &&
         e->growth.largest > e->growth.base;
}

/* distill_resolution_miou of the slot's labels. */
static double resolution_miou(DistillEngine *e, const Slot *slot, ThreadPool *pool)
{
  int h, w;
  distill_engine_label_size(e, slot->input.h, slot->input.w, &h, &w);
  size_t shares = (size_t)((h + 1) / 2) * ((w + 1) / 2) * e->num_classes;
  if (shares > e->resolution_shares_capacity) {
    g_free(e->resolution_shares);
    e->resolution_shares = g_new(float, shares);
    e->resolution_shares_capacity = shares;
  }
  if ((size_t)h * w > e->resolution_map_capacity) {
    g_free(e->resolution_map);
    e->resolution_map = g_malloc((size_t)h * w);
    e->resolution_map_capacity = (size_t)h * w;
  }
  return distill_resolution_miou(slot->labels, h, w, e->num_classes, e->resolution_shares,
                                 e->resolution_map, pool);
}

/* Trains on a slot in state SLOT_TRAINING, then frees it. Called without the lock. */
static void train_slot(DistillEngine *e, Slot *slot, ThreadPool *pool)
{
  DistillRound round = { .query_id = slot->query_id, .input = &slot->input,
                         .labels = slot->labels, .miou_before = -1.0, .miou_after = -1.0,
                         .held_miou = -1.0, .fused_miou = -1.0,
                         .shown_labels = slot->shown_h ? slot->shown : NULL,
                         .shown_h = slot->shown_h, .shown_w = slot->shown_w,
                         .held = slot->has_held ? slot->held : NULL,
                         .verdict = DISTILL_ROUND_UNCHECKED };
  /* The policy measures the student at the size the stream runs it now. */
  g_mutex_lock(&e->lock);
  if (e->frame_w == slot->input.w && e->frame_h == slot->input.h) {
    round.measure_h = e->input_h;
    round.measure_w = e->input_w;
  }
  gboolean grows = growing(e) && MAX(slot->input.h, slot->input.w) == e->growth.long_side;
  g_mutex_unlock(&e->lock);
  double coarse_miou = grows ? resolution_miou(e, slot, pool) : 1.0;
  if (e->cfg.round_started)
    e->cfg.round_started(&round, e->cfg.round_user_data);
  gint64 start = g_get_monotonic_time();
  g_mutex_lock(&e->lock);
  e->round_start = start;
  g_mutex_unlock(&e->lock);
  distill_trainer_round(&e->trainer, &round, pool, &e->stopping);
  /* Steps were published as they were taken (async); after a rollback the stream, too, goes
   * back to the last good weights. */
  if ((round.updates && !e->trainer.stepped) || round.verdict == DISTILL_ROUND_ROLLED_BACK)
    publish(e);
  double ms = (double)(g_get_monotonic_time() - start) / 1000.0;

  g_mutex_lock(&e->lock);
  double stride_miou = distill_policy_stride_miou(&round);
  e->stride = distill_policy_next_stride(&e->cfg, e->stride, stride_miou);
  round.stride = e->stride;
  /* Hibernation: the stream meets the threshold at the longest stride, training has nothing
   * to do; a frame below it (or a scene change, distill_engine_wants_teacher) wakes it. */
  e->hibernating = e->cfg.train && e->stride == e->cfg.max_stride &&
                   stride_miou >= e->cfg.accuracy_threshold;
  e->round_start = 0;
  e->stats.updates += round.updates;
  e->stats.rounds++;
  e->stats.last_miou = round.miou_before;
  if (round.fused_miou >= 0.0)
    e->stats.shown_miou = round.fused_miou;
  if (round.verdict == DISTILL_ROUND_ROLLED_BACK) {
    e->stats.rollbacks++;
    e->stats.last_collapse = round.collapse;
  }
  e->train_ms_total += ms;
  e->fusion_weight = round.fusion_weight;
  if (slot->has_held)
    e->fusion_age = slot->held_age;
  gint64 end = g_get_monotonic_time();
  if (grows && e->last_round_end) {
    double busy = ms / MAX((double)(end - e->last_round_end) / 1000.0, ms);
    DistillResizeReason reason =
        distill_growth_update(&e->growth, coarse_miou, busy, e->inference_share,
                              e->inference_room, e->stream_lowered);
    if (reason != DISTILL_RESIZE_NONE)
      e->growth_reason = reason;
  }
  e->last_round_end = end;
  slot->state = SLOT_FREE;
  g_mutex_unlock(&e->lock);
  if (e->cfg.round_finished)
    e->cfg.round_finished(&round, e->cfg.round_user_data);
}

static Slot *newest_labeled(DistillEngine *e)
{
  Slot *newest = NULL;
  for (guint i = 0; i < e->n_slots; i++)
    if (e->slots[i].state == SLOT_LABELED &&
        (!newest || e->slots[i].query_id > newest->query_id))
      newest = &e->slots[i];
  return newest;
}

/* Called with the lock held, let go while a frame is copied: the teacher frames that came in
 * while a round ran, but the newest, join the replay frames without a round of their own. A
 * round lasts longer than the teacher's stride on a small box; training on the backlog in order
 * would have the stream learn seconds-old frames, and would leave no slot to ask the next frame
 * in, stretching the stride to a round (docs/experiments.md, "Three teacher slots"). */
static void replay_older_labeled(DistillEngine *e, const Slot *newest)
{
  for (guint i = 0; i < e->n_slots; i++) {
    Slot *s = &e->slots[i];
    if (s->state != SLOT_LABELED || s->query_id >= newest->query_id)
      continue; /* one answered while the lock was let go is newer: the next round's */
    s->state = SLOT_TRAINING;
    g_mutex_unlock(&e->lock);
    distill_trainer_keep(&e->trainer, &s->input, s->labels, e->train_pool);
    g_mutex_lock(&e->lock);
    s->state = SLOT_FREE;
  }
}

/* Async, after every step of a round: the trainer publishes, so the stream gains from a round of
 * seconds while it runs instead of at its end (docs/experiments.md, "Publishing each step"); and
 * the teacher frames answered meanwhile, but the newest, join the replay frames now rather than
 * when the next round starts, so that their slots are free for the frames the policy asks next:
 * the teacher stride stays the policy's when a round outlasts it, not the trainer's. */
static void after_step(gpointer data)
{
  DistillEngine *e = data;
  publish(e);
  g_mutex_lock(&e->lock);
  Slot *newest = newest_labeled(e);
  if (newest)
    replay_older_labeled(e, newest);
  g_mutex_unlock(&e->lock);
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

static gpointer trainer_main(gpointer data)
{
  DistillEngine *e = data;
  lower_priority(e->cfg.train_nice);
  e->train_pool = thread_pool_new(distill_config_train_threads(&e->cfg));
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
  if (!distill_config_check(cfg, student_get_config(initial)->num_classes, error))
    return NULL;
  DistillEngine *e = g_new0(DistillEngine, 1);
  e->cfg = *cfg;
  /* In sync mode a frame is shown as it is inferred: no later answer is ever carried back. */
  e->motion.one_way = cfg->sync;
  e->num_classes = student_get_config(initial)->num_classes;
  e->student = student_fused_copy(initial);
  student_set_bf16_forward(e->student, cfg->forward_bf16);
  /* Engines in one process (cameras) share one pool unless given their own thread count. */
  e->pool = cfg->threads > 0 ? thread_pool_new(cfg->threads) : thread_pool_shared();
  e->stride = cfg->min_stride;
  e->stats.last_miou = e->stats.shown_miou = -1.0;
  g_mutex_init(&e->lock);
  g_cond_init(&e->work);
  g_cond_init(&e->answered);
  g_mutex_init(&e->publish_lock);
  g_mutex_init(&e->save_lock);

  /* One in training, one answered, the rest out to the teacher. */
  e->n_slots = cfg->teacher_inflight + 2;
  e->slots = g_new0(Slot, e->n_slots);
  distill_trainer_init(&e->trainer, &e->cfg, initial);
  e->fusion_weight = e->trainer.fusion.held;
  e->published = g_malloc(param_bytes(e));
  memcpy(e->published, student_params(e->student), param_bytes(e));
  if (!student_config_equal(student_get_config(e->student), student_get_config(initial))) {
    e->fusing = student_copy(e->student);
    e->published_trainable = g_memdup2(student_params((Student *)initial), trainable_bytes(e));
  }
  e->save_buffer = g_malloc(trainable_bytes(e));

  if (!cfg->sync) {
    e->trainer.stepped = after_step;
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
  share_load(e, 0.0);
  g_free(e->resized.data);
  g_free(e->fused.data);
  g_free(e->stream_held);
  g_free(e->stream_shown);
  distill_motion_clear(&e->motion);
  for (guint i = 0; i < HELD_ANSWERS; i++)
    g_free(e->answers[i].labels);
  for (guint i = 0; i < DISTILL_SHOW_PENDING_MAX; i++)
    g_free(e->pending[i].logits.data);
  g_free(e->resolution_shares);
  g_free(e->resolution_map);
  distill_trainer_clear(&e->trainer);
  for (guint i = 0; i < e->n_slots; i++) {
    g_free(e->slots[i].input.data);
    g_free(e->slots[i].labels);
    g_free(e->slots[i].shown);
    g_free(e->slots[i].held);
  }
  g_free(e->slots);
  g_free(e->published);
  g_free(e->published_trainable);
  student_free(e->fusing);
  g_free(e->save_buffer);
  thread_pool_free(e->pool);
  student_free(e->student);
  g_mutex_clear(&e->lock);
  g_cond_clear(&e->work);
  g_cond_clear(&e->answered);
  g_mutex_clear(&e->publish_lock);
  g_mutex_clear(&e->save_lock);
  g_free(e);
}

const DistillConfig *distill_engine_get_config(const DistillEngine *e) { return &e->cfg; }

const char *distill_engine_arch(const DistillEngine *e)
{
  return student_arch_name(student_get_config(e->student)->arch);
}

void distill_engine_label_size(const DistillEngine *e, int in_h, int in_w, int *height,
                               int *width)
{
  student_logits_size(e->student, in_h, in_w, height, width);
}

/* ---- teacher frames ---------------------------------------------------------------------- */

static gboolean check_input(const FeatureMap *input)
{
  if (input->h >= 2 && input->w >= 2 && input->c == 3)
    return TRUE;
  g_critical("distill: an input of %dx%dx%d: the student takes RGB (3 channels), at least 2x2",
             input->w, input->h, input->c);
  return FALSE;
}

/* Under lock: gives up queries older than the timeout, so that a lost answer frees its slot. */
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

/* Whether this frame is due: the stride has passed, or (scene-change trigger, *changed) it
 * departs from the last teacher frame. Fills e->thumb when the trigger is on. */
static gboolean teacher_due(DistillEngine *e, const FeatureMap *input, guint stride,
                            gboolean *changed)
{
  *changed = FALSE;
  if (e->cfg.scene_change_threshold > 0.0)
    distill_thumbnail(input, e->thumb);
  if (!e->queried)
    return TRUE;
  guint64 since = e->frame - e->last_query_frame;
  if (since >= stride)
    return TRUE;
  *changed = e->cfg.scene_change_threshold > 0.0 && since >= e->cfg.min_stride &&
             distill_thumbnail_distance(e->thumb, e->query_thumb) > e->cfg.scene_change_threshold;
  return *changed;
}

/* The slot's buffers, made to hold a frame of input's size and its labels. Only the streaming
 * thread calls this, on a slot it holds REQUESTED before its query is out. */
static void fit_slot(DistillEngine *e, Slot *slot, const FeatureMap *input, int label_h,
                     int label_w)
{
  size_t floats = (size_t)input->h * input->w * 3, labels = (size_t)label_h * label_w;
  if (floats > slot->input_capacity) {
    g_free(slot->input.data);
    slot->input.data = g_new(float, floats);
    slot->input_capacity = floats;
  }
  if (labels > slot->label_capacity) {
    g_free(slot->labels);
    g_free(slot->held);
    slot->labels = g_malloc(labels);
    slot->held = g_malloc(labels);
    slot->label_capacity = labels;
  }
  slot->input = feature_map(slot->input.data, input->h, input->w, 3);
}

/* Under lock: the answer frame `frame` (0-based) takes: the newest of its time, not before a
 * scene change at or before it; or, once it came (a frame held back, distill_engine_show), the
 * first after it when that one is nearer, not after a scene change past the frame. NULL = none. */
static const HeldAnswer *answer_for(const DistillEngine *e, guint64 frame)
{
  const guint64 id = frame + 1;
  const HeldAnswer *before = NULL, *after = NULL;
  for (guint i = 0; i < HELD_ANSWERS; i++) {
    const HeldAnswer *a = &e->answers[i];
    if (!a->query)
      continue;
    if (a->query <= id) {
      if (a->query < e->held_from && e->held_from <= id)
        continue;
      if (!before || a->query > before->query)
        before = a;
    } else if (!(e->held_from > id && e->held_from <= a->query) &&
               (!after || a->query < after->query)) {
      after = a;
    }
  }
  if (after && (!before || after->query - id < id - before->query))
    return after;
  return before;
}

/* The frame's motion, once: the query's snapshot may have taken it before its inference. */
static void add_motion(DistillEngine *e, const FeatureMap *input)
{
  if (e->cfg.fuse_teacher && e->cfg.follow_motion && e->queried &&
      e->motion.frame_of != e->frame + 1)
    distill_motion_add(&e->motion, input, e->frame);
}

/* The held answer as the stream shows it at frame `frame` (cfg.fuse_teacher): the one it takes
 * (answer_for), moved with the scene from its frame to this one (cfg.follow_motion; as it came
 * when it is of this very frame); NULL while none is held. Its size is the labels' at the time
 * of the answer: *h x *w. */
static const uint8_t *held_shown(DistillEngine *e, guint64 frame, int *h, int *w)
{
  if (!e->cfg.fuse_teacher || !e->queried)
    return NULL;
  g_mutex_lock(&e->lock);
  const HeldAnswer *a = answer_for(e, frame);
  guint64 query = a ? a->query : 0;
  if (a && query != e->stream_held_query) {
    size_t bytes = (size_t)a->h * a->w;
    if (bytes > e->stream_held_capacity) {
      g_free(e->stream_held);
      g_free(e->stream_shown);
      e->stream_held = g_malloc(bytes);
      e->stream_shown = g_malloc(bytes);
      e->stream_held_capacity = bytes;
    }
    memcpy(e->stream_held, a->labels, bytes);
    e->stream_held_h = a->h;
    e->stream_held_w = a->w;
    e->stream_held_query = query;
  }
  g_mutex_unlock(&e->lock);
  if (!query)
    return NULL;
  *h = e->stream_held_h;
  *w = e->stream_held_w;
  if (!e->cfg.follow_motion || query == frame + 1)
    return e->stream_held;
  if (e->moved_frame != frame + 1 || e->moved_query != query) {
    if (distill_motion_carry(&e->motion, query - 1, frame))
      distill_motion_sample(&e->motion, e->stream_held, *h, *w, e->stream_shown);
    else
      memcpy(e->stream_shown, e->stream_held, (size_t)*h * *w);
    e->moved_frame = frame + 1;
    e->moved_query = query;
  }
  return e->stream_shown;
}

DistillQuery *distill_engine_wants_teacher(DistillEngine *e, const FeatureMap *input)
{
  if (!check_input(input) || e->decided_frame == e->frame + 1)
    return NULL;
  e->decided_frame = e->frame + 1;

  g_mutex_lock(&e->lock);
  guint stride = e->stride;
  g_mutex_unlock(&e->lock);
  gboolean scene_changed;
  if (!teacher_due(e, input, stride, &scene_changed))
    return NULL;

  g_mutex_lock(&e->lock);
  if (scene_changed) {
    e->hibernating = FALSE;
    /* The held answers show the scene before: none from this frame until its answer. */
    e->held_from = e->frame + 1;
  }
  gint64 now = g_get_monotonic_time();
  give_up_stale(e, now);
  Slot *slot = NULL;
  for (guint i = 0; i < e->n_slots && !slot; i++)
    if (e->slots[i].state == SLOT_FREE)
      slot = &e->slots[i];
  if (slot) {
    slot->state = SLOT_REQUESTED;
    slot->query_id = e->frame + 1;
    slot->requested_at = now;
    e->stats.teacher_queries++;
  }
  g_mutex_unlock(&e->lock);
  if (!slot)
    return NULL; /* all slots busy (answers waiting for a step to end): the next frame asks */

  /* Nobody else touches a REQUESTED slot before its query is out. */
  DistillQuery *query = g_new(DistillQuery, 1);
  query->engine = e;
  query->id = slot->query_id;
  distill_engine_label_size(e, input->h, input->w, &query->label_h, &query->label_w);
  fit_slot(e, slot, input, query->label_h, query->label_w);
  for (int y = 0; y < input->h; y++)
    memcpy(feature_map_at(&slot->input, y, 0), feature_map_at(input, y, 0),
           (size_t)input->w * 3 * sizeof(float));
  e->queried = TRUE;
  e->last_query_frame = e->frame;
  memcpy(e->query_thumb, e->thumb, sizeof e->thumb);
  /* What the stream holds for this frame: the trainer fits the fusion on it and the answer. */
  int held_h, held_w;
  add_motion(e, input);
  const uint8_t *held = held_shown(e, e->frame, &held_h, &held_w);
  slot->has_held = held && held_h == query->label_h && held_w == query->label_w;
  if (slot->has_held) {
    memcpy(slot->held, held, (size_t)held_h * held_w);
    slot->held_age = (guint)(e->frame + 1 - e->stream_held_query);
  }
  return query;
}

guint64 distill_query_id(const DistillQuery *query)
{
  return query->id;
}

void distill_query_label_size(const DistillQuery *query, int *height, int *width)
{
  *height = query->label_h;
  *width = query->label_w;
}

static Slot *find_slot(DistillEngine *e, guint64 query_id, SlotState state)
{
  for (guint i = 0; i < e->n_slots; i++)
    if (e->slots[i].state == state && e->slots[i].query_id == query_id)
      return &e->slots[i];
  return NULL;
}

gboolean distill_query_answer(DistillQuery *query, const uint8_t *labels, int height, int width,
                              GError **error)
{
  return distill_query_answer_shown(query, labels, height, width, NULL, 0, 0, error);
}

/* Under lock, on an answer in slot: kept for the stream's fusion in place of the oldest. One of a
 * frame before a scene change is kept too: the frames before the change, held back, take it
 * (answer_for). */
static void hold_answer(DistillEngine *e, Slot *slot, int height, int width)
{
  size_t bytes = (size_t)height * width;
  HeldAnswer *oldest = &e->answers[0];
  for (guint i = 0; i < HELD_ANSWERS; i++) {
    if (e->answers[i].query == slot->query_id)
      return;
    if (e->answers[i].query < oldest->query)
      oldest = &e->answers[i];
  }
  if (oldest->query > slot->query_id)
    return; /* older than every one kept */
  if (bytes > oldest->capacity) {
    g_free(oldest->labels);
    oldest->labels = g_malloc(bytes);
    oldest->capacity = bytes;
  }
  memcpy(oldest->labels, slot->labels, bytes);
  oldest->h = height;
  oldest->w = width;
  oldest->query = slot->query_id;
}

gboolean distill_query_answer_shown(DistillQuery *query, const uint8_t *labels, int height,
                                    int width, const uint8_t *shown, int shown_h, int shown_w,
                                    GError **error)
{
  DistillEngine *e = query->engine;
  if (height != query->label_h || width != query->label_w) {
    g_set_error(error, DISTILL_ERROR, DISTILL_ERROR_LABELS,
                "distill: teacher labels of %dx%d, expected %dx%d (the student's logits size, "
                "half the input size): resize them first", width, height, query->label_w,
                query->label_h);
    distill_query_fail(query);
    return FALSE;
  }
  if (shown && (shown_h < height || shown_w < width)) {
    g_set_error(error, DISTILL_ERROR, DISTILL_ERROR_LABELS,
                "distill: shown teacher labels of %dx%d, smaller than the logits' %dx%d: give "
                "them at the size the class map is shown at", shown_w, shown_h, width, height);
    distill_query_fail(query);
    return FALSE;
  }
  g_mutex_lock(&e->lock);
  Slot *slot = find_slot(e, query->id, SLOT_REQUESTED);
  if (slot) {
    memcpy(slot->labels, labels, (size_t)height * width);
    slot->shown_h = slot->shown_w = 0;
    if (shown) {
      size_t bytes = (size_t)shown_h * shown_w;
      if (bytes > slot->shown_capacity) { /* grows with the first frames, then stays */
        g_free(slot->shown);
        slot->shown = g_malloc(bytes);
        slot->shown_capacity = bytes;
      }
      memcpy(slot->shown, shown, bytes);
      slot->shown_h = shown_h;
      slot->shown_w = shown_w;
    }
    hold_answer(e, slot, height, width);
    slot->state = SLOT_LABELED;
    g_cond_signal(&e->work);
  } else {
    e->stats.teacher_errors++;
  }
  g_cond_broadcast(&e->answered);
  g_mutex_unlock(&e->lock);
  if (!slot)
    g_set_error(error, DISTILL_ERROR, DISTILL_ERROR_QUERY,
                "distill: the answer to teacher query %" G_GUINT64_FORMAT " came after it was "
                "given up (teacher_timeout_ms)", query->id);
  g_free(query);
  return slot != NULL;
}

void distill_query_fail(DistillQuery *query)
{
  DistillEngine *e = query->engine;
  g_mutex_lock(&e->lock);
  Slot *slot = find_slot(e, query->id, SLOT_REQUESTED);
  if (slot) {
    slot->state = SLOT_FREE;
    e->stats.teacher_errors++;
  }
  g_cond_broadcast(&e->answered);
  g_mutex_unlock(&e->lock);
  g_free(query);
}

/* ---- frames ------------------------------------------------------------------------------ */

/* Sync mode, under lock: waits while the current frame's query is out, up to the timeout (and
 * a grace period for the caller's own timeout to fail it first); gives it up then. */
static void wait_for_answer(DistillEngine *e, guint64 query_id)
{
  Slot *slot;
  while ((slot = find_slot(e, query_id, SLOT_REQUESTED))) {
    if (!e->cfg.teacher_timeout_ms) {
      g_cond_wait(&e->answered, &e->lock);
      continue;
    }
    gint64 deadline = slot->requested_at +
                      (e->cfg.teacher_timeout_ms + SYNC_WAIT_GRACE_MS) * G_TIME_SPAN_MILLISECOND;
    if (!g_cond_wait_until(&e->answered, &e->lock, deadline) &&
        find_slot(e, query_id, SLOT_REQUESTED) == slot) {
      slot->state = SLOT_FREE;
      e->stats.teacher_errors++;
    }
  }
}

/* Sync mode: the current frame's teacher round, inline. */
static void train_inline(DistillEngine *e)
{
  guint64 query_id = e->frame + 1;
  g_mutex_lock(&e->lock);
  wait_for_answer(e, query_id);
  Slot *slot = find_slot(e, query_id, SLOT_LABELED);
  if (slot)
    slot->state = SLOT_TRAINING;
  g_mutex_unlock(&e->lock);
  if (slot)
    train_slot(e, slot, e->pool);
}

void distill_engine_set_frame_interval(DistillEngine *e, double interval_ms)
{
  e->interval_ms = interval_ms > 0.0 ? interval_ms : 0.0;
}

void distill_engine_set_input_range(DistillEngine *e, int base_long_side, int largest_long_side)
{
  g_mutex_lock(&e->lock);
  if (base_long_side != e->growth.base || largest_long_side != e->growth.largest) {
    distill_growth_init(&e->growth, base_long_side, largest_long_side);
    e->growth_reason = DISTILL_RESIZE_NONE;
  }
  g_mutex_unlock(&e->lock);
}

int distill_engine_input_long_side(DistillEngine *e)
{
  g_mutex_lock(&e->lock);
  int side = growing(e) ? e->growth.long_side : 0;
  g_mutex_unlock(&e->lock);
  return side;
}

/* The input's size changed: if to the training size's, the governor's reason is said. */
static void report_growth(DistillEngine *e, const FeatureMap *input)
{
  g_mutex_lock(&e->lock);
  DistillResizeReason reason =
      MAX(input->h, input->w) == e->growth.long_side ? e->growth_reason : DISTILL_RESIZE_NONE;
  e->growth_reason = DISTILL_RESIZE_NONE;
  DistillResize r = { .from_w = e->input_w, .from_h = e->input_h, .to_w = input->w,
                      .to_h = input->h, .reason = reason, .inference_ms = e->governor.ms,
                      .interval_ms = e->interval_ms, .budget = e->cfg.inference_budget };
  g_mutex_unlock(&e->lock);
  if (reason != DISTILL_RESIZE_NONE && e->cfg.resized)
    e->cfg.resized(&r, e->cfg.round_user_data);
}

/* The stream's input at the governor's size: input itself, or e->resized. */
static const FeatureMap *stream_input(DistillEngine *e, const FeatureMap *input)
{
  if (MAX(input->h, input->w) != e->governor.nominal) {
    if (e->governor.nominal)
      report_growth(e, input);
    distill_governor_init(&e->governor, MAX(input->h, input->w));
  }
  int h, w;
  distill_governor_size(&e->governor, input->h, input->w, &h, &w);
  if (h == input->h && w == input->w)
    return input;
  distill_input_reserve(&e->resized, &e->resized_capacity, h, w);
  return &e->resized;
}

/* The stream's mean inference time over the frame interval; 0 while the interval is unknown. */
static double inference_share(const DistillEngine *e)
{
  return e->interval_ms > 0.0 ? e->governor.ms / e->interval_ms : 0.0;
}

/* After a frame's inference of ms on in (input, or its resized copy): the governor's decision,
 * and the statistics. */
static void govern(DistillEngine *e, const FeatureMap *input, const FeatureMap *in, double ms)
{
  g_mutex_lock(&e->lock);
  gboolean on = e->cfg.inference_budget > 0.0 && e->cfg.train && !e->cfg.sync;
  double budget = !on ? 0.0 : e->hibernating ? e->cfg.hibernate_budget : e->cfg.inference_budget;
  gboolean hibernating = e->hibernating;
  g_mutex_unlock(&e->lock);

  double ms_before = e->governor.ms;
  double others = share_load(e, on ? inference_share(e) : 0.0);
  DistillResizeReason reason =
      distill_governor_update(&e->governor, budget, ms, e->interval_ms, others);
  double share = inference_share(e);

  g_mutex_lock(&e->lock);
  e->stats.frames++;
  e->student_ms_total += ms;
  e->input_w = in->w;
  e->input_h = in->h;
  e->frame_w = input->w;
  e->frame_h = input->h;
  e->inference_share = share;
  e->stream_lowered = e->governor.long_side < e->governor.nominal;
  e->inference_room = on && !e->stream_lowered ? budget - others : 0.0;
  g_mutex_unlock(&e->lock);

  if (reason != DISTILL_RESIZE_NONE && e->cfg.resized) {
    DistillResize r = { .from_w = in->w, .from_h = in->h, .inference_ms = ms_before,
                        .interval_ms = e->interval_ms, .others_load = others, .budget = budget,
                        .reason = reason == DISTILL_RESIZE_ROOM && hibernating
                                      ? DISTILL_RESIZE_HIBERNATING : reason };
    distill_governor_size(&e->governor, input->h, input->w, &r.to_h, &r.to_w);
    e->cfg.resized(&r, e->cfg.round_user_data);
  }
}

/* Frame `frame`'s logits fused with the answer it takes, at the trainer's weight for an answer
 * of its age (alone when the answer is of this very frame); logits while there is no answer or
 * the weight is 0. The younger answers gain weight over min_stride frames at most, however old
 * the fitted one was: at a long stride an answer half of it old is far off on a busy scene. */
static const FeatureMap *fuse_teacher(DistillEngine *e, guint64 frame, const FeatureMap *logits)
{
  int held_h, held_w;
  const uint8_t *held = held_shown(e, frame, &held_h, &held_w);
  if (!held)
    return logits;
  g_mutex_lock(&e->lock);
  guint fitted_age = MIN(e->fusion_age, e->cfg.min_stride);
  guint64 id = frame + 1, query = e->stream_held_query;
  double weight = distill_fusion_weight_at(e->fusion_weight, fitted_age,
                                           (guint)(query > id ? query - id : id - query));
  g_mutex_unlock(&e->lock);
  if (weight == 0.0)
    return logits;
  distill_map_reserve(&e->fused, &e->fused_capacity, logits->h, logits->w, logits->c);
  distill_fusion_apply(weight, logits, held, held_h, held_w, &e->fused);
  return &e->fused;
}

void distill_engine_infer(DistillEngine *e, const FeatureMap *input)
{
  if (!check_input(input))
    return;
  if (e->frame - e->shown >= DISTILL_SHOW_PENDING_MAX) {
    g_critical("distill: %d frames inferred and not shown: show one (distill_engine_show) "
               "before the next", DISTILL_SHOW_PENDING_MAX);
    return;
  }
  if (e->cfg.sync)
    train_inline(e);
  pick_up_weights(e);
  const FeatureMap *in = stream_input(e, input);
  Pending *p = &e->pending[e->frame - e->shown];
  distill_engine_label_size(e, input->h, input->w, &p->label_h, &p->label_w);
  /* A whole frame per turn on a shared pool: handing it over kernel by kernel costs more. The
   * time is the frame's own, without waiting for the other streams' turns. */
  thread_pool_hold(e->pool);
  gint64 start = g_get_monotonic_time();
  if (in != input)
    resize_bilinear_forward(input, &e->resized, e->pool);
  const FeatureMap *logits = student_forward(e->student, in, e->pool);
  distill_map_reserve(&p->logits, &p->capacity, logits->h, logits->w, logits->c);
  for (int y = 0; y < logits->h; y++)
    memcpy(feature_map_at(&p->logits, y, 0), feature_map_at(logits, y, 0),
           (size_t)logits->w * logits->c * sizeof(float));
  double ms = (double)(g_get_monotonic_time() - start) / 1000.0;
  thread_pool_release(e->pool);
  govern(e, input, in, ms);
  add_motion(e, input);
  e->frame++;
}

guint distill_engine_pending(const DistillEngine *e)
{
  return (guint)(e->frame - e->shown);
}

/* What the oldest frame waiting waits for before it is shown. */
typedef enum {
  WAIT_NONE,
  WAIT_ANSWER, /* a query out of its frame or one before, or of a later one nearer than the
                * answer it has */
  WAIT_FRAMES, /* frames still to come that may ask the teacher nearer to it */
} ShowWait;

/* Under lock: the wait of frame `id` - 1. */
static ShowWait show_wait(const DistillEngine *e, guint64 id)
{
  guint64 later = 0; /* the first query after the frame's, out or answered */
  for (guint i = 0; i < e->n_slots; i++) {
    const Slot *slot = &e->slots[i];
    if (slot->state != SLOT_REQUESTED)
      continue;
    if (slot->query_id <= id)
      return WAIT_ANSWER;
    if (!later || slot->query_id < later)
      later = slot->query_id;
  }
  const HeldAnswer *a = answer_for(e, id - 1);
  if (a && a->query >= id)
    return WAIT_NONE; /* its own answer, or a later one already nearer */
  guint64 age = a ? id - a->query : G_MAXUINT64;
  for (guint i = 0; i < HELD_ANSWERS; i++)
    if (e->answers[i].query > id && (!later || e->answers[i].query < later))
      later = e->answers[i].query;
  /* The first later query is known: it is nearer and out (answered and nearer, answer_for has
   * it), or no later one is. */
  if (later)
    return later - id < age && !(e->held_from > id && e->held_from <= later) ? WAIT_ANSWER
                                                                           : WAIT_NONE;
  return e->frame + 1 < id + MIN(age, (guint64)DISTILL_SHOW_PENDING_MAX) ? WAIT_FRAMES
                                                                           : WAIT_NONE;
}

gboolean distill_engine_show_ready(DistillEngine *e, gint64 deadline)
{
  if (e->shown == e->frame)
    return FALSE;
  if (!e->cfg.fuse_teacher)
    return TRUE;
  g_mutex_lock(&e->lock);
  ShowWait wait;
  while ((wait = show_wait(e, e->shown + 1)) == WAIT_ANSWER &&
         deadline > g_get_monotonic_time() &&
         g_cond_wait_until(&e->answered, &e->lock, deadline))
    ;
  g_mutex_unlock(&e->lock);
  return wait == WAIT_NONE;
}

void distill_engine_show(DistillEngine *e, uint8_t *classes)
{
  g_return_if_fail(e->shown < e->frame);
  guint64 frame = e->shown++;
  /* The oldest goes to the back, its buffers to the next frame inferred: the logits stay there
   * for distill_engine_class_map until then. */
  guint waiting = (guint)(e->frame - frame);
  Pending oldest = e->pending[0];
  memmove(e->pending, e->pending + 1, (waiting - 1) * sizeof(Pending));
  e->pending[waiting - 1] = oldest;
  Pending *p = &e->pending[waiting - 1];
  thread_pool_hold(e->pool);
  e->logits = fuse_teacher(e, frame, &p->logits);
  if (e->logits->h == p->label_h && e->logits->w == p->label_w)
    argmax_channels(e->logits, classes, e->pool);
  else
    argmax_bilinear(e->logits, p->label_w, p->label_h, classes, (size_t)p->label_w, e->pool);
  thread_pool_release(e->pool);
}

void distill_engine_drop_pending(DistillEngine *e)
{
  e->shown = e->frame;
}

void distill_engine_process(DistillEngine *e, const FeatureMap *input, uint8_t *classes)
{
  guint64 frame = e->frame;
  distill_engine_infer(e, input);
  if (e->frame > frame)
    distill_engine_show(e, classes);
}

void distill_engine_class_map(DistillEngine *e, int width, int height, uint8_t *classes,
                              size_t row_stride)
{
  g_return_if_fail(e->logits != NULL);
  thread_pool_hold(e->pool);
  argmax_bilinear(e->logits, width, height, classes, row_stride, e->pool);
  thread_pool_release(e->pool);
}

/* ---- statistics and checkpoints ---------------------------------------------------------- */

void distill_engine_get_stats(DistillEngine *e, DistillStats *stats)
{
  g_mutex_lock(&e->lock);
  *stats = e->stats;
  stats->stride = e->stride;
  stats->train_ms = e->stats.rounds ? e->train_ms_total / (double)e->stats.rounds : 0.0;
  stats->student_ms = e->stats.frames ? e->student_ms_total / (double)e->stats.frames : 0.0;
  stats->input_w = e->input_w;
  stats->input_h = e->input_h;
  stats->inference_share = e->inference_share;
  stats->train_ms_total = e->train_ms_total +
      (e->round_start ? (double)(g_get_monotonic_time() - e->round_start) / 1000.0 : 0.0);
  stats->hibernating = e->hibernating;
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
  memcpy(e->save_buffer, trainable_published(e), trainable_bytes(e));
  g_mutex_unlock(&e->publish_lock);
  /* The trainer's network only lends its (immutable) tensor table to the writer. */
  gboolean ok = student_save_values(e->trainer.student, e->save_buffer, path, error);
  g_mutex_unlock(&e->save_lock);
  return ok;
}

Student *distill_engine_snapshot(DistillEngine *e)
{
  Student *copy = student_new_zeroed(student_get_config(e->trainer.student));
  g_mutex_lock(&e->publish_lock);
  memcpy(student_params(copy), trainable_published(e), trainable_bytes(e));
  g_mutex_unlock(&e->publish_lock);
  return copy;
}
