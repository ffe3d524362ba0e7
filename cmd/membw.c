/* Memory bandwidth and memory use of this process, for benchmark rooflines. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "membw.h"

struct part {
	const uint64_t *p;
	size_t n;
	uint64_t sum;
};

typedef uint64_t v4u64 __attribute__((vector_size(32)));

/*
 * Sum the buffer with 4 independent 32-byte accumulators: vector loads, so one core can reach the
 * memory's bandwidth (a scalar loop measures the core, not the memory, and flatters every roofline).
 */
#if defined(__x86_64__)
__attribute__((target("avx2")))
#endif
static void *reader(void *arg)
{
	struct part *t = arg;
	v4u64 a = {0}, b = {0}, c = {0}, d = {0};
	size_t i = 0;
	for (; i + 16 <= t->n; i += 16) {
		v4u64 x, y, z, w;
		memcpy(&x, t->p + i, 32);
		memcpy(&y, t->p + i + 4, 32);
		memcpy(&z, t->p + i + 8, 32);
		memcpy(&w, t->p + i + 12, 32);
		a += x;
		b += y;
		c += z;
		d += w;
	}
	a += b + c + d;
	uint64_t s = a[0] + a[1] + a[2] + a[3];
	for (; i < t->n; i++)
		s += t->p[i];
	t->sum = s;
	return NULL;
}

static double seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double lmd_membw(int threads, size_t bytes)
{
	if (threads < 1)
		threads = 1;
	if (threads > 256)
		threads = 256;
	size_t n = bytes / sizeof(uint64_t);
	uint64_t *buf = malloc(n * sizeof(*buf));
	if (!buf)
		return 0;
	memset(buf, 1, n * sizeof(*buf));
	struct part parts[256];
	pthread_t th[256];
	double best = 1e30;
	volatile uint64_t sink = 0;
	for (int pass = 0; pass < 5; pass++) {
		double t0 = seconds();
		for (int i = 0; i < threads; i++) {
			parts[i] = (struct part){buf + n / threads * i, n / threads, 0};
			if (i && pthread_create(&th[i], NULL, reader, &parts[i]))
				reader(&parts[i]), th[i] = 0;
		}
		reader(&parts[0]);
		for (int i = 1; i < threads; i++)
			if (th[i])
				pthread_join(th[i], NULL);
		double dt = seconds() - t0;
		for (int i = 0; i < threads; i++)
			sink += parts[i].sum;
		if (dt < best)
			best = dt;
	}
	(void)sink;
	free(buf);
	return (double)(n / threads * threads * sizeof(uint64_t)) / best;
}

size_t lmd_peak_rss(void)
{
	struct rusage ru;
	return getrusage(RUSAGE_SELF, &ru) == 0 ? (size_t)ru.ru_maxrss * 1024 : 0;
}
