/**
 * Sampling (sampler.h): repetition penalty, temperature, top-k, top-p, min-p, seeded draw.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

void lmd_sampling_default(struct lmd_sampling *p)
{
	*p = (struct lmd_sampling){.temperature = 1, .top_k = 0, .top_p = 1, .min_p = 0, .repetition_penalty = 1};
}

int lmd_sampling_validate(const struct lmd_sampling *p, struct lmd_err *err)
{
	if (!(p->temperature >= 0) || !isfinite(p->temperature))
		return lmd_errorf(err, LMD_EINVAL, "temperature %g: expected a finite value >= 0", p->temperature);
	if (p->top_k < 0)
		return lmd_errorf(err, LMD_EINVAL, "top_k %d: expected >= 0", p->top_k);
	if (!(p->top_p > 0 && p->top_p <= 1))
		return lmd_errorf(err, LMD_EINVAL, "top_p %g: expected a value in (0, 1]", p->top_p);
	if (!(p->min_p >= 0 && p->min_p <= 1))
		return lmd_errorf(err, LMD_EINVAL, "min_p %g: expected a value in [0, 1]", p->min_p);
	if (!(p->repetition_penalty > 0) || !isfinite(p->repetition_penalty))
		return lmd_errorf(err, LMD_EINVAL, "repetition_penalty %g: expected a finite value > 0",
				  p->repetition_penalty);
	if (!(p->presence_penalty >= -2 && p->presence_penalty <= 2))
		return lmd_errorf(err, LMD_EINVAL, "presence_penalty %g: expected a value in [-2, 2]", p->presence_penalty);
	if (!(p->frequency_penalty >= -2 && p->frequency_penalty <= 2))
		return lmd_errorf(err, LMD_EINVAL, "frequency_penalty %g: expected a value in [-2, 2]",
				  p->frequency_penalty);
	return LMD_OK;
}

// ----------------------------------------------------------------------------
// the PRNG: splitmix64 seeding xoshiro256**

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void lmd_rng_seed(struct lmd_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t lmd_rng_next(struct lmd_rng *r)
{
	uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

double lmd_rng_uniform(struct lmd_rng *r)
{
	return (double)(lmd_rng_next(r) >> 11) * 0x1.0p-53;
}

// ----------------------------------------------------------------------------
// sampling

int lmd_sampler_init(struct lmd_sampler *s, int vocab, struct lmd_err *err)
{
	memset(s, 0, sizeof(*s));
	s->vocab = vocab;
	s->val = lmd_malloc((size_t)vocab * sizeof(float), err);
	s->idx = lmd_malloc((size_t)vocab * sizeof(int32_t), err);
	s->cand = lmd_malloc((size_t)vocab * sizeof(struct lmd_cand), err);
	s->keys = lmd_malloc((size_t)vocab * 2 * sizeof(uint64_t), err);
	if (!s->val || !s->idx || !s->cand || !s->keys) {
		lmd_sampler_free(s);
		return LMD_ENOMEM;
	}
	return LMD_OK;
}

void lmd_sampler_free(struct lmd_sampler *s)
{
	free(s->val);
	free(s->idx);
	free(s->cand);
	free(s->keys);
	memset(s, 0, sizeof(*s));
}

/*
 * The first index of the largest value. Two passes: eight running maxima (no loop-carried load, so
 * the compiler keeps them in vector registers), then the first index holding the maximum; the plain
 * scan handles what that cannot (short rows, and rows of -inf and NaN only).
 */
int lmd_argmax(const float *v, int n)
{
	float m8[8];
	int i = 0;
	if (n >= 16) {
		for (int k = 0; k < 8; k++)
			m8[k] = -INFINITY;  // NaN never wins a comparison, so it is skipped as the plain scan skips it
		for (i = 0; i + 8 <= n; i += 8)
			for (int k = 0; k < 8; k++)
				m8[k] = v[i + k] > m8[k] ? v[i + k] : m8[k];
		float mx = m8[0];
		for (int k = 1; k < 8; k++)
			mx = m8[k] > mx ? m8[k] : mx;
		for (; i < n; i++)
			mx = v[i] > mx ? v[i] : mx;
		for (i = 0; i < n; i++)
			if (v[i] == mx)
				return i;
	}
	int best = 0;
	for (i = 1; i < n; i++)
		if (v[i] > v[best] || (isnan(v[best]) && !isnan(v[i])))  // a NaN in front is passed over too
			best = i;
	return best;
}

float lmd_sample_spread(const struct lmd_sampling *p)
{
	if (p->repetition_penalty != 1 || p->presence_penalty != 0 || p->frequency_penalty != 0)
		return NAN;
	if (p->temperature == 0 || p->top_k == 1)
		return -1;
	return 40.0f * p->temperature;
}

/* Order-preserving key of a float that is not NaN (-0 as +0), and back. */
static uint32_t order_key(float x)
{
	uint32_t b;
	x = x == 0 ? 0.0f : x;
	memcpy(&b, &x, sizeof(b));
	return b & 0x80000000u ? ~b : b | 0x80000000u;
}

static float order_value(uint32_t k)
{
	uint32_t b = k & 0x80000000u ? k & 0x7fffffffu : ~k;
	float x;
	memcpy(&x, &b, sizeof(x));
	return x;
}

/* The k-th largest value of v[n] (k >= 1, NaN not counted, ties counted): a radix select of 8-bit digits. */
static int kth_largest(const float *v, int64_t n, int64_t k, float *kth)
{
	uint32_t prefix = 0, mask = 0;
	for (int shift = 24; shift >= 0; shift -= 8) {
		int64_t cnt[256] = {0};
		for (int64_t i = 0; i < n; i++) {
			if (isnan(v[i]))
				continue;
			uint32_t key = order_key(v[i]);
			if ((key & mask) == prefix)
				cnt[key >> shift & 255]++;
		}
		int d = 255;
		while (d >= 0 && cnt[d] < k)
			k -= cnt[d--];
		if (d < 0)
			return 0;  // fewer than k values
		prefix |= (uint32_t)d << shift;
		mask |= 255u << shift;
	}
	*kth = order_value(prefix);
	return 1;
}

float lmd_sample_cut(const float *v, int64_t n, int64_t best, float spread, int32_t top_k)
{
	float cut = v[best] - spread, kth;
	if (top_k > 0 && kth_largest(v, n, top_k, &kth) && kth > cut)
		cut = kth;
	return cut;
}

/*
 * Sort the candidates by value, largest first, then by index: the order of a comparison sort on
 * (value descending, index ascending), in linear time. Each key is the value's bits made to order
 * as unsigned integers, inverted (descending) in the high half, the index in the low half; an LSD
 * radix sort of 8-bit digits skips the digits all keys share. -0 sorts as +0 (they compare equal);
 * the values themselves come back from val_of [vocab], indexed by token. NaN is never a candidate.
 */
static void sort_cands(struct lmd_cand *c, int n, uint64_t *k, uint64_t *t, float *val_of)
{
	for (int j = 0; j < n; j++) {
		k[j] = (uint64_t)~order_key(c[j].val) << 32 | (uint32_t)c[j].idx;
		val_of[c[j].idx] = c[j].val;
	}
	for (int shift = 0; shift < 64; shift += 8) {
		size_t at[256] = {0};
		for (int j = 0; j < n; j++)
			at[k[j] >> shift & 255]++;
		if (at[k[0] >> shift & 255] == (size_t)n)
			continue;  // one digit for all: nothing moves
		for (size_t d = 0, sum = 0; d < 256; d++) {
			size_t cnt = at[d];
			at[d] = sum;
			sum += cnt;
		}
		for (int j = 0; j < n; j++)
			t[at[k[j] >> shift & 255]++] = k[j];
		uint64_t *x = k;
		k = t, t = x;
	}
	for (int j = 0; j < n; j++) {
		int32_t i = (int32_t)(uint32_t)k[j];
		c[j] = (struct lmd_cand){val_of[i], i};
	}
}

int lmd_sample(struct lmd_sampler *s, const float *logits, const struct lmd_sampling *p, struct lmd_rng *rng,
	       const int32_t *prev, int nprev)
{
	int V = s->vocab;
	float *val = s->val;
	int32_t *idx = s->idx;
	float spread = lmd_sample_spread(p);
	if (spread < 0)
		return lmd_argmax(logits, V);  // greedy: nothing to modify, no copy
	const float *v = logits;
	if (isnan(spread)) {  // the repetition penalty, once per distinct token (idx marks the ones done)
		memcpy(val, logits, (size_t)V * sizeof(float));
		for (int i = 0; i < V; i++)
			idx[i] = 0;
		for (int i = 0; i < nprev; i++) {
			int t = prev[i];
			if (t < 0 || t >= V || idx[t])
				continue;
			idx[t] = 1;
			val[t] = val[t] > 0 ? val[t] / p->repetition_penalty : val[t] * p->repetition_penalty;
		}
		struct lmd_sampling q = *p;  // the penalized values sample as a row without penalty
		q.repetition_penalty = 1;
		q.presence_penalty = q.frequency_penalty = 0;  /* the caller's (sampler.h) */
		if ((spread = lmd_sample_spread(&q)) < 0)
			return lmd_argmax(val, V);
		v = val;
	}
	int n = lmd_sample_gather(v, V, lmd_sample_cut(v, V, lmd_argmax(v, V), spread, p->top_k), V, val, idx);  // in place when v is val
	return lmd_sample_candidates(s, val, idx, n, p, rng);
}

int lmd_sample_gather(const float *v, int n, float cut, int max, float *val, int32_t *idx)
{
	int k = 0;
	for (int i = 0; i < n && k < max; i++)
		if (v[i] >= cut) {
			val[k] = v[i];
			idx[k++] = i;
		}
	return k;
}

int lmd_sample_candidates(struct lmd_sampler *s, const float *val, const int32_t *idx, int n,
			  const struct lmd_sampling *p, struct lmd_rng *rng)
{
	struct lmd_cand *c = s->cand;
	if (n <= 0) {  // a row of NaN
		lmd_rng_uniform(rng);
		return 0;
	}
	for (int j = 0; j < n; j++)
		c[j] = (struct lmd_cand){val[j], idx[j]};
	sort_cands(c, n, s->keys, s->keys + s->vocab, s->val);  // val and idx may be s->val, s->idx: copied above
	if (p->top_k > 0 && p->top_k < n)
		n = p->top_k;
	/* Probabilities of the candidates, in sorted order (s->val: val was copied to c above). */
	float mx = c[0].val, *prob = s->val;
	double sum = 0;
	for (int j = 0; j < n; j++) {
		prob[j] = (float)exp((double)(c[j].val - mx) / p->temperature);
		sum += prob[j];
	}
	for (int j = 0; j < n; j++)
		prob[j] = (float)(prob[j] / sum);
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
			return c[j].idx;
	}
	return c[n - 1].idx;
}
