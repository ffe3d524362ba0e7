/* The sampler: greedy, seeded determinism, temperature frequencies against softmax, top-k, top-p,
 * min-p, repetition penalty (HF's rule), and rejection of nonsense values. Then the split that the
 * backend's pick op relies on: lmd_sample on a row gives, token for token and rng state for rng
 * state, what lmd_sample_candidates gives on the row's candidates in any order, and what the
 * sampler gave before the split (old_sample below). */
#include <math.h>
#include <stdlib.h>

#include "engine/sampler.h"
#include "unit.h"

#define V 6

// ----------------------------------------------------------------------------
// candidates against whole rows

static uint64_t seed = 0x9e3779b97f4a7c15ull;

static uint32_t next32(void)
{
	seed ^= seed << 13;
	seed ^= seed >> 7;
	seed ^= seed << 17;
	return (uint32_t)(seed >> 32);
}

static float unif(void)  // [0, 1)
{
	return (float)(next32() >> 8) * 0x1.0p-24f;
}

/* lmd_sample as it was before lmd_sample_candidates existed (the whole row, indices sorted). */
static const float *old_val;

static int old_by_value(const void *a, const void *b)
{
	int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
	if (old_val[i] != old_val[j])
		return old_val[i] > old_val[j] ? -1 : 1;
	return (i > j) - (i < j);
}

static int old_sample(float *val, int32_t *idx, int nv, const float *logits, const struct lmd_sampling *p,
		      struct lmd_rng *rng)
{
	if (p->temperature == 0 || p->top_k == 1)
		return lmd_argmax(logits, nv);
	memcpy(val, logits, (size_t)nv * sizeof(float));
	int best = lmd_argmax(val, nv);
	float mx = val[best];
	int n = 0;
	float cut = mx - 40.0f * p->temperature;
	for (int i = 0; i < nv; i++)
		if (val[i] >= cut)
			idx[n++] = i;
	old_val = val;
	qsort(idx, (size_t)n, sizeof(*idx), old_by_value);
	if (p->top_k > 0 && p->top_k < n)
		n = p->top_k;
	double sum = 0;
	float *prob = val;
	float *tmp = malloc((size_t)n * sizeof(float) + 1);
	for (int j = 0; j < n; j++) {
		tmp[j] = (float)exp((double)(val[idx[j]] - mx) / p->temperature);
		sum += tmp[j];
	}
	for (int j = 0; j < n; j++)
		prob[j] = (float)(tmp[j] / sum);
	free(tmp);
	if (p->top_p < 1) {
		double cum = 0;
		int keep = 0;
		while (keep < n && cum < p->top_p)
			cum += prob[keep++];
		n = keep > 0 ? keep : 1;
	}
	if (p->min_p > 0) {
		float th = p->min_p * prob[0];
		int keep = 1;
		while (keep < n && prob[keep] >= th)
			keep++;
		n = keep;
	}
	double total = 0;
	for (int j = 0; j < n; j++)
		total += prob[j];
	double u = lmd_rng_uniform(rng) * total, acc = 0;
	for (int j = 0; j < n; j++) {
		acc += prob[j];
		if (u < acc)
			return idx[j];
	}
	return idx[n - 1];
}

/* A row with ties (values from a few levels), -0, -inf, +inf and NaN sprinkled in at rate 1/odd. */
static void make_row(float *row, int n, float scale, int odd)
{
	for (int i = 0; i < n; i++) {
		uint32_t k = next32() % 64;
		row[i] = k < 32 ? (float)((int)(next32() % 9) - 4) * scale * 0.25f : (unif() * 2 - 1) * scale;
		uint32_t q = next32() % (unsigned)(odd * 4);
		row[i] = q == 0 ? NAN : q == 1 ? -INFINITY : q == 2 ? -0.0f : q == 3 && next32() % 8 == 0 ? INFINITY : row[i];
	}
	if (next32() % 4 == 0)  // the largest value twice
		row[next32() % n] = row[lmd_argmax(row, n)];
}

static void test_candidates(void)
{
	struct lmd_err err = {0};
	int sizes[] = {1, 2, 7, 16, 17, 100, 1000, 5000};
	float temps[] = {0, 1e-3f, 0.1f, 0.5f, 0.7f, 1, 2, 10};
	int topks[] = {0, 1, 2, 5, 40};
	float topps[] = {1, 0.95f, 0.5f, 0.01f};
	float minps[] = {0, 0.05f, 0.5f};
	float scales[] = {0.01f, 1, 10, 100, 1000};
	int odds[] = {1000000, 50, 4};
	long checked = 0, nonempty = 0, drawn_differently = 0;
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		int nv = sizes[si];
		struct lmd_sampler s = {0};
		CHECK_EQ_INT(lmd_sampler_init(&s, nv, &err), 0);
		float *row = malloc((size_t)nv * sizeof(float)), *cv = malloc((size_t)nv * sizeof(float));
		float *ov = malloc((size_t)nv * sizeof(float));
		int32_t *ci = malloc((size_t)nv * sizeof(int32_t)), *oi = malloc((size_t)nv * sizeof(int32_t));
		for (int rep = 0; rep < 12; rep++) {
			make_row(row, nv, scales[rep % 5], odds[rep % 3]);
			int allnan = 1;
			for (int i = 0; i < nv; i++)
				allnan &= isnan(row[i]);
			for (int k = 0; k < 200; k++) {
				struct lmd_sampling p;
				lmd_sampling_default(&p);
				p.temperature = temps[next32() % 8];
				p.top_k = topks[next32() % 5];
				p.top_p = topps[next32() % 4];
				p.min_p = minps[next32() % 3];
				struct lmd_rng r1, r2, r3;
				lmd_rng_seed(&r1, next32());
				r3 = r2 = r1;
				float spread = lmd_sample_spread(&p);
				int want = lmd_sample(&s, row, &p, &r1, NULL, 0), got;
				if (spread < 0) {
					got = lmd_argmax(row, nv);
				} else {
					CHECK(spread == 40.0f * p.temperature);
					float cut = row[lmd_argmax(row, nv)] - spread;  // every other draw narrowed by its top-k
					if (k % 2)
						cut = lmd_sample_cut(row, nv, lmd_argmax(row, nv), spread, p.top_k);
					int n = 0;
					for (int i = 0; i < nv; i++)
						if (row[i] >= cut)
							cv[n] = row[i], ci[n++] = i;
					for (int i = n - 1; i > 0; i--) {  // shuffled
						int j = (int)(next32() % (uint32_t)(i + 1));
						float t = cv[i];
						int32_t u = ci[i];
						cv[i] = cv[j], ci[i] = ci[j], cv[j] = t, ci[j] = u;
					}
					got = lmd_sample_candidates(&s, cv, ci, n, &p, &r2);
					nonempty += n > 1;
				}
				if (want != got || memcmp(&r1, &r2, sizeof(r1))) {
					unit_failures++;
					fprintf(stderr, "vocab %d T %g top_k %d top_p %g min_p %g: lmd_sample %d, candidates %d%s\n", nv,
						p.temperature, p.top_k, p.top_p, p.min_p, want, got,
						memcmp(&r1, &r2, sizeof(r1)) ? " (rng states differ)" : "");
				}
				if (!allnan) {  // the old code's result (a row of NaN was undefined there)
					int old = old_sample(ov, oi, nv, row, &p, &r3);
					if (old != want || memcmp(&r1, &r3, sizeof(r1))) {
						unit_failures++;
						fprintf(stderr, "vocab %d T %g top_k %d top_p %g min_p %g: lmd_sample %d, before %d\n", nv,
							p.temperature, p.top_k, p.top_p, p.min_p, want, old);
					}
				}
				drawn_differently += want != lmd_argmax(row, nv);
				checked++;
			}
		}
		free(row), free(cv), free(ov), free(ci), free(oi);
		lmd_sampler_free(&s);
	}
	CHECK(checked == 8 * 12 * 200);
	CHECK(nonempty > checked / 4);          // the draws had something to choose from
	CHECK(drawn_differently > checked / 10);
	/* The spreads: argmax only, whole row, candidates. */
	struct lmd_sampling p;
	lmd_sampling_default(&p);
	CHECK(lmd_sample_spread(&p) == 40.0f);
	p.top_k = 1;
	CHECK(lmd_sample_spread(&p) == -1);
	p.top_k = 0;
	p.temperature = 0;
	CHECK(lmd_sample_spread(&p) == -1);
	p.repetition_penalty = 1.1f;
	CHECK(isnan(lmd_sample_spread(&p)));
	/* NaN in front of a short row does not win the argmax; nor anywhere in a long one. */
	float nanrow[20];
	for (int i = 0; i < 20; i++)
		nanrow[i] = i == 0 || i == 9 ? NAN : (float)(i % 5);
	CHECK_EQ_INT(lmd_argmax(nanrow, 5), 4);
	CHECK_EQ_INT(lmd_argmax(nanrow, 20), 4);
	for (int i = 0; i < 20; i++)
		nanrow[i] = NAN;
	CHECK_EQ_INT(lmd_argmax(nanrow, 5), 0);
	CHECK_EQ_INT(lmd_argmax(nanrow, 20), 0);
	nanrow[7] = -INFINITY;
	CHECK_EQ_INT(lmd_argmax(nanrow, 5), 0);
	CHECK_EQ_INT(lmd_argmax(nanrow, 20), 7);
	nanrow[3] = -INFINITY;
	CHECK_EQ_INT(lmd_argmax(nanrow, 5), 3);
}

int main(void)
{
	struct lmd_sampler s = {0};
	struct lmd_rng rng;
	struct lmd_sampling p;
	struct lmd_err err = {0};
	float lg[V] = {1.0f, 3.0f, 2.5f, -1.0f, 3.0f, 0.0f};
	CHECK_EQ_INT(lmd_sampler_init(&s, V, &err), 0);
	lmd_sampling_default(&p);
	CHECK_EQ_INT(lmd_sampling_validate(&p, &err), 0);

	p.temperature = 0;  // greedy: the first of the tied best
	lmd_rng_seed(&rng, 1);
	CHECK_EQ_INT(lmd_sample(&s, lg, &p, &rng, NULL, 0), 1);
	CHECK_EQ_INT(lmd_argmax(lg, V), 1);

	/* Temperature 1: frequencies follow softmax. */
	lmd_sampling_default(&p);
	int count[V] = {0}, N = 200000;
	lmd_rng_seed(&rng, 42);
	for (int i = 0; i < N; i++)
		count[lmd_sample(&s, lg, &p, &rng, NULL, 0)]++;
	double z = 0;
	for (int i = 0; i < V; i++)
		z += exp(lg[i]);
	for (int i = 0; i < V; i++)
		CHECK_NEAR((double)count[i] / N, exp(lg[i]) / z, 0.005);

	/* Same seed, same sequence; another seed, another sequence. */
	int a[64], b[64], c[64];
	lmd_rng_seed(&rng, 7);
	for (int i = 0; i < 64; i++)
		a[i] = lmd_sample(&s, lg, &p, &rng, NULL, 0);
	lmd_rng_seed(&rng, 7);
	for (int i = 0; i < 64; i++)
		b[i] = lmd_sample(&s, lg, &p, &rng, NULL, 0);
	lmd_rng_seed(&rng, 8);
	for (int i = 0; i < 64; i++)
		c[i] = lmd_sample(&s, lg, &p, &rng, NULL, 0);
	CHECK(memcmp(a, b, sizeof(a)) == 0);
	CHECK(memcmp(a, c, sizeof(a)) != 0);

	/* top-k 2 keeps the two tied best; top-p 0.5 keeps the first of them only. */
	p.top_k = 2;
	for (int i = 0; i < 1000; i++) {
		int t = lmd_sample(&s, lg, &p, &rng, NULL, 0);
		CHECK(t == 1 || t == 4);
	}
	p.top_k = 0;
	p.top_p = 0.3f;
	for (int i = 0; i < 100; i++)
		CHECK_EQ_INT(lmd_sample(&s, lg, &p, &rng, NULL, 0), 1);
	/* min-p 0.5: p(2.5)/p(3) = 0.61 stays, p(1)/p(3) = 0.14 goes. */
	p.top_p = 1;
	p.min_p = 0.5f;
	for (int i = 0; i < 2000; i++) {
		int t = lmd_sample(&s, lg, &p, &rng, NULL, 0);
		CHECK(t == 1 || t == 2 || t == 4);
	}
	/* Repetition penalty 4 on tokens 1 and 4 (3 -> 0.75) makes 2 the greedy choice; negative logits
	 * are multiplied: token 3 (-1) becomes -4. Repeated ids count once. */
	p.min_p = 0;
	p.temperature = 0;
	p.repetition_penalty = 4;
	int32_t prev[] = {1, 4, 4, 1, 3};
	CHECK_EQ_INT(lmd_sample(&s, lg, &p, &rng, prev, 5), 2);
	CHECK(lg[1] == 3.0f);  // logits are not modified

	/* Nonsense values. */
	struct lmd_sampling bad;
	lmd_sampling_default(&bad);
	bad.temperature = -1;
	CHECK_EQ_INT(lmd_sampling_validate(&bad, &err), LMD_EINVAL);
	lmd_sampling_default(&bad);
	bad.top_p = 1.5f;
	CHECK_EQ_INT(lmd_sampling_validate(&bad, &err), LMD_EINVAL);
	CHECK(strstr(err.msg, "top_p") != NULL);
	lmd_sampling_default(&bad);
	bad.top_k = -3;
	CHECK_EQ_INT(lmd_sampling_validate(&bad, &err), LMD_EINVAL);
	lmd_sampling_default(&bad);
	bad.repetition_penalty = 0;
	CHECK_EQ_INT(lmd_sampling_validate(&bad, &err), LMD_EINVAL);
	lmd_sampling_default(&bad);
	bad.min_p = 2;
	CHECK_EQ_INT(lmd_sampling_validate(&bad, &err), LMD_EINVAL);
	lmd_sampler_free(&s);
	test_candidates();
	return UNIT_DONE();
}
