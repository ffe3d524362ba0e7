/**
 * The thread pool (threads.h): a generation counter the workers watch, spinning first, then a
 * condition variable.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "threads.h"

#define SPINS 200000

struct worker {
	struct lmd_pool *p;
	int tid;
};

struct lmd_pool {
	int n;
	pthread_t *th;
	struct worker *w;
	void (*fn)(void *, int, int);
	void *arg;
	atomic_uint gen;
	atomic_int pending;
	atomic_int sleepers;
	atomic_int stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct lmd_pool *p = w->p;
	unsigned seen = 0;
	for (;;) {
		unsigned g;
		int spins = 0;
		while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
			if (++spins < SPINS) {
				relax();
				continue;
			}
			pthread_mutex_lock(&p->mu);
			atomic_fetch_add(&p->sleepers, 1);
			while (atomic_load(&p->gen) == seen)
				pthread_cond_wait(&p->cv, &p->mu);
			atomic_fetch_sub(&p->sleepers, 1);
			pthread_mutex_unlock(&p->mu);
			spins = 0;
		}
		seen = g;
		if (atomic_load(&p->stop))
			return NULL;
		p->fn(p->arg, w->tid, p->n);
		atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
	}
}

int lmd_pool_open(struct lmd_pool **pp, int nthreads, struct lmd_err *err)
{
	if (nthreads <= 0) {
		long c = sysconf(_SC_NPROCESSORS_ONLN);
		nthreads = c > 0 ? (int)c : 1;
	}
	struct lmd_pool *p = lmd_calloc(1, sizeof(*p), err);
	if (!p)
		return LMD_ENOMEM;
	p->n = nthreads;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->th = lmd_calloc((size_t)nthreads, sizeof(*p->th), err);
	p->w = lmd_calloc((size_t)nthreads, sizeof(*p->w), err);
	if (!p->th || !p->w) {
		free(p->th);
		free(p->w);
		free(p);
		return LMD_ENOMEM;
	}
	for (int i = 1; i < nthreads; i++) {
		p->w[i] = (struct worker){p, i};
		if (pthread_create(&p->th[i], NULL, worker_main, &p->w[i])) {
			p->n = i;  // the ones started so far
			lmd_pool_close(p);
			return lmd_errorf(err, LMD_EFAIL, "cannot start thread %d of %d", i, nthreads);
		}
	}
	*pp = p;
	return LMD_OK;
}

void lmd_pool_close(struct lmd_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	atomic_store(&p->stop, 1);
	atomic_fetch_add(&p->gen, 1);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 1; i < p->n; i++)
		pthread_join(p->th[i], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p->th);
	free(p->w);
	free(p);
}

int lmd_pool_threads(const struct lmd_pool *p)
{
	return p->n;
}

void lmd_pool_run(struct lmd_pool *p, void (*fn)(void *arg, int tid, int nthreads), void *arg)
{
	if (p->n == 1) {
		fn(arg, 0, 1);
		return;
	}
	p->fn = fn;
	p->arg = arg;
	atomic_store(&p->pending, p->n - 1);
	atomic_fetch_add(&p->gen, 1);  // seq_cst, then read sleepers: a worker either sees the new gen or is counted
	if (atomic_load(&p->sleepers)) {
		pthread_mutex_lock(&p->mu);
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
	}
	fn(arg, 0, p->n);
	while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0)
		relax();
}

void lmd_pool_split(int n, int align, int tid, int nt, int *lo, int *hi)
{
	int units = (n + align - 1) / align;
	int per = units / nt, extra = units % nt;
	int u0 = tid * per + (tid < extra ? tid : extra);
	int u1 = u0 + per + (tid < extra);
	*lo = u0 * align < n ? u0 * align : n;
	*hi = u1 * align < n ? u1 * align : n;
}
