/**
 * A small thread pool for data-parallel ops: lmd_pool_run calls fn(arg, task, tid) once for every
 * task in [0, ntasks), spread over the pool's threads (the caller is tid 0, the others 1..n-1), and
 * returns when all are done. Tasks are claimed one by one, so a worker the OS has not scheduled
 * yet never holds the caller up: the caller then simply runs the tasks itself. Idle workers spin
 * briefly (a decode step runs dozens of short parallel regions) and then sleep.
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
/** Run fn for tasks 0..ntasks-1; tid (0..threads-1) tells which thread runs it. Not reentrant. */
void lmd_pool_run(struct lmd_pool *p, void (*fn)(void *arg, int task, int tid), void *arg, int ntasks);

#endif
