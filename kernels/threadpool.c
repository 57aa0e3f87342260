/* threadpool.c: see threadpool.h. */
#include "threadpool.h"

#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* About 50 µs of polling before a worker sleeps: longer than the gap between the kernels of one
 * forward pass, far shorter than the gap between frames. */
#define SPIN_ROUNDS 2000

typedef struct {
  float *data;
  size_t floats;
} Scratch;

typedef struct {
  ThreadPool *pool;
  int index;
} Worker;

struct ThreadPool {
  int threads;
  int refs;                 /* under shared_lock for the shared pool; 1 otherwise */
  pthread_mutex_t run_lock; /* recursive; one run (or hold) at a time: callers take turns */
  pthread_t *handles;
  Worker *workers;
  Scratch *scratch;

  pthread_mutex_t lock;
  pthread_cond_t wake;
  int sleepers; /* under lock */
  int stopping; /* under lock */

  /* The job being run; written by thread_pool_run before the generation moves on. */
  ThreadPoolTask task;
  void *ctx;
  int n_tasks;
  atomic_uint generation;
  atomic_int next_task;
  atomic_int busy_workers;
};

static void run_tasks(ThreadPool *pool, int thread)
{
  for (;;) {
    int i = atomic_fetch_add_explicit(&pool->next_task, 1, memory_order_relaxed);
    if (i >= pool->n_tasks)
      return;
    pool->task(pool->ctx, i, thread);
  }
}

/* Waits for a generation other than seen; returns 0 when the pool is stopping. */
static int wait_for_job(ThreadPool *pool, unsigned seen)
{
  for (int i = 0; i < SPIN_ROUNDS; i++) {
    if (atomic_load_explicit(&pool->generation, memory_order_acquire) != seen)
      return 1;
    _mm_pause();
  }
  pthread_mutex_lock(&pool->lock);
  pool->sleepers++;
  while (!pool->stopping && atomic_load_explicit(&pool->generation, memory_order_acquire) == seen)
    pthread_cond_wait(&pool->wake, &pool->lock);
  pool->sleepers--;
  int go = !pool->stopping;
  pthread_mutex_unlock(&pool->lock);
  return go;
}

static void *worker_main(void *arg)
{
  Worker *self = arg;
  ThreadPool *pool = self->pool;
  unsigned seen = 0;
  while (wait_for_job(pool, seen)) {
    seen = atomic_load_explicit(&pool->generation, memory_order_acquire);
    run_tasks(pool, self->index);
    atomic_fetch_sub_explicit(&pool->busy_workers, 1, memory_order_release);
  }
  return NULL;
}

ThreadPool *thread_pool_new(int threads)
{
  if (threads <= 0)
    threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (threads <= 0)
    threads = 1;
  ThreadPool *pool = calloc(1, sizeof *pool);
  pool->threads = threads;
  pool->scratch = calloc((size_t)threads, sizeof *pool->scratch);
  pool->handles = calloc((size_t)threads, sizeof *pool->handles);
  pool->workers = calloc((size_t)threads, sizeof *pool->workers);
  pool->refs = 1;
  pthread_mutexattr_t recursive;
  pthread_mutexattr_init(&recursive);
  pthread_mutexattr_settype(&recursive, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init(&pool->run_lock, &recursive);
  pthread_mutexattr_destroy(&recursive);
  pthread_mutex_init(&pool->lock, NULL);
  pthread_cond_init(&pool->wake, NULL);
  for (int t = 1; t < threads; t++) {
    pool->workers[t] = (Worker){ pool, t };
    pthread_create(&pool->handles[t], NULL, worker_main, &pool->workers[t]);
  }
  return pool;
}

static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static ThreadPool *shared_pool;

ThreadPool *thread_pool_shared(void)
{
  pthread_mutex_lock(&shared_lock);
  if (shared_pool)
    shared_pool->refs++;
  else
    shared_pool = thread_pool_new(0);
  ThreadPool *pool = shared_pool;
  pthread_mutex_unlock(&shared_lock);
  return pool;
}

/* Drops a reference to the shared pool; TRUE when it was the last one (the pool is then no longer
 * shared and is freed). */
static int shared_pool_release(ThreadPool *pool)
{
  pthread_mutex_lock(&shared_lock);
  int last = 1;
  if (pool == shared_pool) {
    last = --pool->refs == 0;
    if (last)
      shared_pool = NULL;
  }
  pthread_mutex_unlock(&shared_lock);
  return last;
}

void thread_pool_free(ThreadPool *pool)
{
  if (!pool || !shared_pool_release(pool))
    return;
  pthread_mutex_lock(&pool->lock);
  pool->stopping = 1;
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->lock);
  for (int t = 1; t < pool->threads; t++)
    pthread_join(pool->handles[t], NULL);
  for (int t = 0; t < pool->threads; t++)
    free(pool->scratch[t].data);
  pthread_mutex_destroy(&pool->lock);
  pthread_mutex_destroy(&pool->run_lock);
  pthread_cond_destroy(&pool->wake);
  free(pool->scratch);
  free(pool->handles);
  free(pool->workers);
  free(pool);
}

void thread_pool_hold(ThreadPool *pool)
{
  if (pool)
    pthread_mutex_lock(&pool->run_lock);
}

void thread_pool_release(ThreadPool *pool)
{
  if (pool)
    pthread_mutex_unlock(&pool->run_lock);
}

int thread_pool_threads(const ThreadPool *pool)
{
  return pool ? pool->threads : 1;
}

void thread_pool_run(ThreadPool *pool, int n_tasks, ThreadPoolTask task, void *ctx)
{
  if (n_tasks <= 0)
    return;
  /* Held also when the caller runs every task itself: thread 0's scratch is the pool's. */
  thread_pool_hold(pool);
  if (!pool || pool->threads == 1 || n_tasks == 1) {
    for (int i = 0; i < n_tasks; i++)
      task(ctx, i, 0);
    thread_pool_release(pool);
    return;
  }
  pool->task = task;
  pool->ctx = ctx;
  pool->n_tasks = n_tasks;
  atomic_store_explicit(&pool->next_task, 0, memory_order_relaxed);
  atomic_store_explicit(&pool->busy_workers, pool->threads - 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
  pthread_mutex_lock(&pool->lock);
  if (pool->sleepers)
    pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->lock);

  run_tasks(pool, 0);
  /* A worker still busy after the spin was likely preempted (a trainer or another camera shares
   * the cores): give it the core instead of spinning through its time slice. */
  for (int i = 0; atomic_load_explicit(&pool->busy_workers, memory_order_acquire) > 0; i++) {
    if (i < SPIN_ROUNDS)
      _mm_pause();
    else
      sched_yield();
  }
  thread_pool_release(pool);
}

static float *grow(Scratch *s, size_t floats)
{
  if (s->floats < floats) {
    free(s->data);
    size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
    s->data = aligned_alloc(64, bytes);
    s->floats = s->data ? floats : 0;
  }
  return s->data;
}

float *thread_pool_scratch(ThreadPool *pool, int thread, size_t floats)
{
  static __thread Scratch own; /* callers without a pool: one buffer per calling thread */
  if (!pool)
    return grow(&own, floats);
  return grow(&pool->scratch[thread], floats);
}
