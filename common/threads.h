/**
 * A small thread pool for data-parallel ops: lmd_pool_run calls fn(arg, tid, nthreads) once on
 * every thread (the caller is tid 0) and returns when all have finished; fn splits the work by tid.
 * Idle workers spin briefly (a decode step runs dozens of short parallel regions) and then sleep.
 */
#ifndef LMD_THREADS_H
#define LMD_THREADS_H

#include "err.h"

struct lmd_pool;

/** Start a pool of nthreads threads including the caller (0 = all online cores). *p owned by the caller. */
int lmd_pool_open(struct lmd_pool **p, int nthreads, struct lmd_err *err);
/** Stop and free the pool; NULL is fine. */
void lmd_pool_close(struct lmd_pool *p);
int lmd_pool_threads(const struct lmd_pool *p);
/** Run fn on every thread of the pool; not reentrant (one caller at a time). */
void lmd_pool_run(struct lmd_pool *p, void (*fn)(void *arg, int tid, int nthreads), void *arg);

/** The share [*lo, *hi) of [0, n) that thread tid of nt gets, in multiples of align (the last gets the rest). */
void lmd_pool_split(int n, int align, int tid, int nt, int *lo, int *hi);

#endif
