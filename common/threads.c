/**
 * The thread pool (threads.h). One 64-bit atomic holds the job's generation (high half) and the
 * next unclaimed task (low half): a worker claims a task with a compare-and-swap that also proves
 * the job it read (fn, arg, ntasks) is still the current one, because lmd_pool_run seals the old
 * generation (next task = INT_MAX) before it writes the next job's fields. Workers watch the generation,
 * spinning first, then sleeping on a condition variable.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "threads.h"

#define SPINS 20000

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
	int ntasks;
	_Atomic uint64_t state;  // gen << 32 | next task
	atomic_int done;         // tasks finished in this generation
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

/* Claim and run tasks of generation gen until none is left. */
static void work(struct lmd_pool *p, uint32_t gen, int tid)
{
	void (*fn)(void *, int, int) = p->fn;
	void *arg = p->arg;
	int ntasks = p->ntasks;
	for (;;) {
		uint64_t s = atomic_load(&p->state);
		if ((uint32_t)(s >> 32) != gen || (int)(uint32_t)s >= ntasks)
			return;
		if (!atomic_compare_exchange_weak(&p->state, &s, s + 1))
			continue;
		fn(arg, (int)(uint32_t)s, tid);
		atomic_fetch_add(&p->done, 1);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct lmd_pool *p = w->p;
	uint32_t seen = 0;
	for (;;) {
		uint32_t g;
		int spins = 0;
		while ((g = (uint32_t)(atomic_load(&p->state) >> 32)) == seen) {
			if (++spins < SPINS) {
				relax();
				continue;
			}
			pthread_mutex_lock(&p->mu);
			atomic_fetch_add(&p->sleepers, 1);
			while ((uint32_t)(atomic_load(&p->state) >> 32) == seen)
				pthread_cond_wait(&p->cv, &p->mu);
			atomic_fetch_sub(&p->sleepers, 1);
			pthread_mutex_unlock(&p->mu);
			spins = 0;
		}
		seen = g;
		if (atomic_load(&p->stop))
			return NULL;
		work(p, g, w->tid);
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

/* Publish a new generation (fn, arg, ntasks already set) and wake sleepers. */
static uint32_t publish(struct lmd_pool *p)
{
	uint32_t gen = (uint32_t)(atomic_load(&p->state) >> 32) + 1;
	atomic_store(&p->done, 0);
	atomic_store(&p->state, (uint64_t)gen << 32);  // seq_cst, then read sleepers: no lost wake-up
	if (atomic_load(&p->sleepers)) {
		pthread_mutex_lock(&p->mu);
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
	}
	return gen;
}

void lmd_pool_close(struct lmd_pool *p)
{
	if (!p)
		return;
	p->ntasks = 0;
	atomic_store(&p->stop, 1);
	pthread_mutex_lock(&p->mu);
	atomic_store(&p->state, ((atomic_load(&p->state) >> 32) + 1) << 32);
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

void lmd_pool_run(struct lmd_pool *p, void (*fn)(void *arg, int task, int tid), void *arg, int ntasks)
{
	if (p->n == 1 || ntasks <= 1) {
		for (int t = 0; t < ntasks; t++)
			fn(arg, t, 0);
		return;
	}
	/* Seal the finished generation first: a worker that saw it may still be about to read fn, arg and
	 * ntasks; if it read the new job's fields under the old generation, the old state's next task could
	 * pass the new ntasks and its claim would succeed. Sealed, no task of the old generation can be claimed. */
	atomic_store(&p->state, (atomic_load(&p->state) & ~(uint64_t)0xffffffffu) | 0x7fffffffu);
	p->fn = fn;
	p->arg = arg;
	p->ntasks = ntasks;
	uint32_t gen = publish(p);
	work(p, gen, 0);
	for (int spins = 0; atomic_load(&p->done) < ntasks; spins++)  // only tasks a worker has claimed remain
		if (spins < 2000)
			relax();
		else
			sched_yield();  // the worker may have been descheduled (a busy machine): let it run here
}
