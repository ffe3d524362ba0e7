/* Memory bandwidth and memory use of this process, for benchmark rooflines. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench.h"

struct part {
	const uint64_t *p;
	size_t n;
	uint64_t sum;
};

static void *reader(void *arg)
{
	struct part *t = arg;
	uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	for (size_t i = 0; i + 4 <= t->n; i += 4) {
		s0 += t->p[i];
		s1 ^= t->p[i + 1];
		s2 += t->p[i + 2];
		s3 ^= t->p[i + 3];
	}
	t->sum = s0 + s1 + s2 + s3;
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
