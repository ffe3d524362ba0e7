/* The sampler: greedy, seeded determinism, temperature frequencies against softmax, top-k, top-p,
 * min-p, repetition penalty (HF's rule), and rejection of nonsense values. */
#include <math.h>
#include <stdlib.h>

#include "sampler.h"
#include "unit.h"

#define V 6

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
	return UNIT_DONE();
}
