/* threadpool.h: a fixed set of worker threads for splitting one kernel over the cores.
 *
 * OpenBLAS's own threading costs more than it gives on the small GEMMs of a compact network, so
 * kernels split their work here and call OpenBLAS single-threaded. The caller takes part in the
 * work: a pool of n threads starts n - 1 workers. Workers spin briefly before sleeping, so the
 * short back-to-back kernels of one forward pass do not pay a wake-up each. */
#pragma once

#include <stddef.h>

typedef struct ThreadPool ThreadPool;

/* task(ctx, index, thread): index runs over [0, n_tasks); thread over [0, threads). */
typedef void (*ThreadPoolTask)(void *ctx, int index, int thread);

/* threads <= 0: one per online core. */
ThreadPool *thread_pool_new(int threads);
/* The process's pool of one thread per online core, made at the first call; each call takes a
 * reference that thread_pool_free drops. Several streams in one process share it and take turns
 * run by run, rather than each starting a thread per core and oversubscribing the cores. */
ThreadPool *thread_pool_shared(void);
void thread_pool_free(ThreadPool *pool);
/* pool may be NULL: then 1. */
int thread_pool_threads(const ThreadPool *pool);

/* Runs task for every index, spread over the pool's threads and the caller's; returns when all
 * are done. pool may be NULL (runs on the caller's thread). Runs called from several threads at
 * once take turns (a task must not start another run on the same pool). */
void thread_pool_run(ThreadPool *pool, int n_tasks, ThreadPoolTask task, void *ctx);

/* Keeps the pool to the calling thread from hold to release, across several runs (nested holds
 * are fine): a kernel whose runs pass results through the scratch memory holds it, so that a run
 * from another thread cannot come in between. pool may be NULL. */
void thread_pool_hold(ThreadPool *pool);
void thread_pool_release(ThreadPool *pool);

/* Per-thread scratch memory, 64-byte aligned, grown on demand and kept for later calls, so that
 * steady-state kernels allocate nothing. Valid until the next call with the same thread and a
 * larger size, or thread_pool_free. thread is the index passed to the task. */
float *thread_pool_scratch(ThreadPool *pool, int thread, size_t floats);
