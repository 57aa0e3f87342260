/* test_threadpool.c: every index runs exactly once, on a valid thread, whatever the pool size,
 * run after run; scratch memory is per thread, aligned and kept; a NULL pool runs inline; pools
 * free cleanly whether their workers spin, sleep or never ran; the shared pool takes callers
 * from several threads in turn. */
#include <glib.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "threadpool.h"

#define MAX_TASKS 1000
#define MAX_THREADS 8

typedef struct {
  atomic_int runs[MAX_TASKS];
  atomic_int bad_thread;
  int threads;
} Tally;

static void count_task(void *ctx, int index, int thread)
{
  Tally *tally = ctx;
  atomic_fetch_add(&tally->runs[index], 1);
  if (thread < 0 || thread >= tally->threads)
    atomic_fetch_add(&tally->bad_thread, 1);
}

static void check_every_index_once(ThreadPool *pool, int threads)
{
  static Tally tally;
  for (int n = 0; n <= MAX_TASKS; n++) {
    for (int i = 0; i < MAX_TASKS; i++)
      atomic_store(&tally.runs[i], 0);
    atomic_store(&tally.bad_thread, 0);
    tally.threads = threads;
    thread_pool_run(pool, n, count_task, &tally);
    for (int i = 0; i < MAX_TASKS; i++)
      if (atomic_load(&tally.runs[i]) != (i < n ? 1 : 0))
        g_error("threads %d, n_tasks %d: index %d ran %d times", threads, n, i,
                atomic_load(&tally.runs[i]));
    g_assert_cmpint(atomic_load(&tally.bad_thread), ==, 0);
  }
}

static void test_every_index_once(void)
{
  const int sizes[] = { 1, 2, 3, 8 };
  for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++) {
    ThreadPool *pool = thread_pool_new(sizes[s]);
    g_assert_cmpint(thread_pool_threads(pool), ==, sizes[s]);
    check_every_index_once(pool, sizes[s]);
    thread_pool_free(pool);
  }
}

static void test_null_pool(void)
{
  g_assert_cmpint(thread_pool_threads(NULL), ==, 1);
  check_every_index_once(NULL, 1);
}

static void test_default_size(void)
{
  ThreadPool *pool = thread_pool_new(0);
  int threads = thread_pool_threads(pool);
  g_assert_cmpint(threads, >=, 1);
  g_assert_cmpint(threads, ==, (int)sysconf(_SC_NPROCESSORS_ONLN));
  thread_pool_free(pool);
}

typedef struct {
  atomic_long sum;
} Sum;

static void add_index_task(void *ctx, int index, int thread)
{
  Sum *s = ctx;
  atomic_fetch_add_explicit(&s->sum, index + 1, memory_order_relaxed);
}

/* The short kernels of one forward pass: many tiny runs back to back, no run may be lost or
 * overlap the next (a run returns only when all its tasks are done). */
static void back_to_back(int threads, int runs)
{
  ThreadPool *pool = thread_pool_new(threads);
  Sum s;
  long expected = 0;
  for (int r = 0; r < runs; r++) {
    int n = 1 + r % 4;
    atomic_store(&s.sum, 0);
    thread_pool_run(pool, n, add_index_task, &s);
    expected = (long)n * (n + 1) / 2;
    if (atomic_load(&s.sum) != expected)
      g_error("threads %d, run %d: sum %ld, expected %ld", threads, r, atomic_load(&s.sum),
              expected);
  }
  thread_pool_free(pool);
}

static void test_back_to_back(void)
{
  back_to_back(2, 100000);
  back_to_back(3, 20000);
  back_to_back(8, 2000);
}

typedef struct {
  ThreadPool *pool;
  size_t floats;
  float *seen[MAX_THREADS];
  atomic_int misaligned, clobbered;
} ScratchUse;

/* Each task fills its thread's scratch with the thread's number, then checks nobody else wrote
 * into it meanwhile. */
static void scratch_task(void *ctx, int index, int thread)
{
  ScratchUse *use = ctx;
  float *s = thread_pool_scratch(use->pool, thread, use->floats);
  if ((uintptr_t)s % 64 != 0)
    atomic_fetch_add(&use->misaligned, 1);
  use->seen[thread] = s;
  for (size_t i = 0; i < use->floats; i++)
    s[i] = (float)thread;
  for (size_t i = 0; i < use->floats; i++)
    if (s[i] != (float)thread) {
      atomic_fetch_add(&use->clobbered, 1);
      break;
    }
}

static void test_scratch(void)
{
  const int threads = 3;
  ThreadPool *pool = thread_pool_new(threads);
  float *first[MAX_THREADS];
  for (int t = 0; t < threads; t++) {
    first[t] = thread_pool_scratch(pool, t, 1000);
    g_assert_nonnull(first[t]);
    g_assert_cmpuint((uintptr_t)first[t] % 64, ==, 0);
    for (int u = 0; u < t; u++)
      g_assert_true(first[t] != first[u]);
  }
  /* Same or smaller: the same memory, kept. */
  for (int t = 0; t < threads; t++) {
    g_assert_true(thread_pool_scratch(pool, t, 1000) == first[t]);
    g_assert_true(thread_pool_scratch(pool, t, 10) == first[t]);
  }

  ScratchUse use = { .pool = pool, .floats = 4099 };
  for (int r = 0; r < 200; r++)
    thread_pool_run(pool, 64, scratch_task, &use);
  g_assert_cmpint(atomic_load(&use.misaligned), ==, 0);
  g_assert_cmpint(atomic_load(&use.clobbered), ==, 0);
  for (int t = 0; t < threads; t++) {
    float *s = thread_pool_scratch(pool, t, 4099);
    g_assert_cmpuint((uintptr_t)s % 64, ==, 0);
    g_assert_true(use.seen[t] == NULL || use.seen[t] == s);
    for (int u = 0; u < t; u++)
      g_assert_true(s != thread_pool_scratch(pool, u, 4099));
  }
  /* Grown memory is usable to its end. */
  float *big = thread_pool_scratch(pool, 1, 1 << 20);
  g_assert_cmpuint((uintptr_t)big % 64, ==, 0);
  big[0] = big[(1 << 20) - 1] = 1.0f;
  thread_pool_free(pool);
}

static void test_scratch_without_pool(void)
{
  float *s = thread_pool_scratch(NULL, 0, 100);
  g_assert_nonnull(s);
  g_assert_cmpuint((uintptr_t)s % 64, ==, 0);
  g_assert_true(thread_pool_scratch(NULL, 0, 50) == s);
  float *grown = thread_pool_scratch(NULL, 0, 100000);
  g_assert_cmpuint((uintptr_t)grown % 64, ==, 0);
  grown[99999] = 1.0f;
}

static void test_free(void)
{
  /* Workers that may not have started yet. */
  for (int i = 0; i < 20; i++)
    thread_pool_free(thread_pool_new(3));
  /* Workers still spinning right after a run. */
  for (int i = 0; i < 20; i++) {
    ThreadPool *pool = thread_pool_new(3);
    Sum s = { 0 };
    thread_pool_run(pool, 10, add_index_task, &s);
    thread_pool_free(pool);
    g_assert_cmpint(atomic_load(&s.sum), ==, 55);
  }
  /* Workers asleep: woken by a run, then by the free. */
  ThreadPool *pool = thread_pool_new(8);
  Sum s = { 0 };
  g_usleep(20000);
  thread_pool_run(pool, 100, add_index_task, &s);
  g_assert_cmpint(atomic_load(&s.sum), ==, 5050);
  g_usleep(20000);
  thread_pool_free(pool);
  thread_pool_free(NULL);
}

/* Callers on two threads running on one pool at once: every run still runs each of its indices
 * once, and a held pool keeps another caller's runs out until it is released. */
typedef struct {
  ThreadPool *pool;
  int failures;
} Caller;

static void *caller_main(void *arg)
{
  Caller *c = arg;
  for (int round = 0; round < 200; round++) {
    Sum s = { 0 };
    thread_pool_run(c->pool, 100, add_index_task, &s);
    c->failures += atomic_load(&s.sum) != 5050;
  }
  return NULL;
}

static void *held_run_main(void *arg)
{
  Sum *s = arg;
  ThreadPool *pool = thread_pool_shared();
  thread_pool_run(pool, 10, add_index_task, s);
  thread_pool_free(pool);
  return NULL;
}

static void test_shared(void)
{
  ThreadPool *a = thread_pool_shared(), *b = thread_pool_shared();
  g_assert_true(a == b);
  g_assert_cmpint(thread_pool_threads(a), ==, (int)sysconf(_SC_NPROCESSORS_ONLN));

  Caller callers[2] = { { a, 0 }, { b, 0 } };
  GThread *threads[2];
  for (int i = 0; i < 2; i++)
    threads[i] = g_thread_new("caller", caller_main, &callers[i]);
  for (int i = 0; i < 2; i++)
    g_thread_join(threads[i]);
  g_assert_cmpint(callers[0].failures + callers[1].failures, ==, 0);

  thread_pool_hold(a);
  Sum s = { 0 };
  GThread *other = g_thread_new("held-out", held_run_main, &s);
  g_usleep(50000);
  g_assert_cmpint(atomic_load(&s.sum), ==, 0); /* still waiting for the pool */
  thread_pool_run(a, 10, add_index_task, &s);    /* the holder itself may run */
  g_assert_cmpint(atomic_load(&s.sum), ==, 55);
  thread_pool_release(a);
  g_thread_join(other);
  g_assert_cmpint(atomic_load(&s.sum), ==, 110);

  thread_pool_free(a);
  thread_pool_free(b); /* the last reference: a later call makes a new pool */
  ThreadPool *c = thread_pool_shared();
  Sum t = { 0 };
  thread_pool_run(c, 10, add_index_task, &t);
  g_assert_cmpint(atomic_load(&t.sum), ==, 55);
  thread_pool_free(c);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/threadpool/every-index-once", test_every_index_once);
  g_test_add_func("/threadpool/null-pool", test_null_pool);
  g_test_add_func("/threadpool/default-size", test_default_size);
  g_test_add_func("/threadpool/back-to-back", test_back_to_back);
  g_test_add_func("/threadpool/scratch", test_scratch);
  g_test_add_func("/threadpool/scratch-without-pool", test_scratch_without_pool);
  g_test_add_func("/threadpool/free", test_free);
  g_test_add_func("/threadpool/shared", test_shared);
  return g_test_run();
}
