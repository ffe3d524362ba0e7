/**
 * Token sampling as a pure function of (logits, parameters, RNG state, previous tokens): the same
 * inputs and seed give the same token on every machine (own PRNG, no libc rand).
 *
 * Order of the transforms (HF's): repetition penalty, temperature, top-k, top-p, min-p, then a
 * draw. temperature 0 (or top_k 1) is greedy: the first index of the largest logit.
 * Stop tokens, stop strings and max tokens belong to the scheduler.
 */
#ifndef LMD_SAMPLER_H
#define LMD_SAMPLER_H

#include <stdint.h>

#include "err.h"

struct lmd_sampling {
	float temperature;         /* 0 = greedy; default 1 */
	int top_k;                 /* 0 = off */
	float top_p;               /* 1 = off; (0, 1] */
	float min_p;               /* 0 = off; [0, 1] */
	float repetition_penalty;  /* 1 = off; > 0 (HF: positive logits divided, negative multiplied) */
	float presence_penalty;    /* 0 = off; [-2, 2] (OpenAI's): subtracted once from each generated token's logit */
	float frequency_penalty;   /* 0 = off; [-2, 2] (OpenAI's): subtracted per occurrence of a generated token */
	uint64_t seed;
};

/**
 * The defaults: temperature 1, top_k 0, top_p 1, min_p 0, repetition_penalty 1, presence and frequency
 * penalties 0, seed 0. The presence and frequency penalties apply to generated tokens only, which the
 * sampler cannot tell from the prompt: the scheduler applies them to the row before lmd_sample.
 */
void lmd_sampling_default(struct lmd_sampling *p);
/** LMD_EINVAL naming the field when a value is out of range (negative temperature, top_p > 1, ...). */
int lmd_sampling_validate(const struct lmd_sampling *p, struct lmd_err *err);

/** xoshiro256** state, seeded through splitmix64. */
struct lmd_rng {
	uint64_t s[4];
};
void lmd_rng_seed(struct lmd_rng *r, uint64_t seed);
uint64_t lmd_rng_next(struct lmd_rng *r);
/** Uniform in [0, 1) with 53 random bits. */
double lmd_rng_uniform(struct lmd_rng *r);

/** A candidate token: its logit and its vocabulary index. */
struct lmd_cand {
	float val;
	int32_t idx;
};

/** Workspace for sampling over a vocabulary of vocab entries. A zeroed struct is safe to free. */
struct lmd_sampler {
	int vocab;
	float *val;              /* owned [vocab]: penalized logits, then the candidates' probabilities */
	int32_t *idx;            /* owned [vocab] */
	struct lmd_cand *cand;   /* owned [vocab]: the candidates, sorted */
	uint64_t *keys;          /* owned [2 * vocab]: their sort keys and the radix sort's second buffer */
};
int lmd_sampler_init(struct lmd_sampler *s, int vocab, struct lmd_err *err);
void lmd_sampler_free(struct lmd_sampler *s);

/**
 * Pick the next token from logits [vocab] (not modified). prev [nprev] are the tokens the
 * repetition penalty applies to (prompt and generated so far, as HF). Draws one number from rng
 * unless the choice is greedy.
 *
 * Steps: the repetition penalty; greedy (temperature 0 or top_k 1) returns lmd_argmax; else the
 * candidates, the tokens within 40 nats of the best after temperature (logits within 40·T; the
 * rest weigh < e^-40 each):
 * logits[i] >= mx - lmd_sample_spread(p), mx the largest, then lmd_sample_candidates on them.
 */
int lmd_sample(struct lmd_sampler *s, const float *logits, const struct lmd_sampling *p, struct lmd_rng *rng,
	       const int32_t *prev, int nprev);

/**
 * What lmd_sample needs of a row of logits with p, so that a caller can reduce the row where it
 * lives (the backend's pick op) and hand over only that:
 *   -1      the argmax only (greedy without repetition penalty): the token is lmd_argmax's
 *   NaN     the whole row (a repetition, presence or frequency penalty changes the values first): call lmd_sample
 *   s > 0   the candidates, every i with logits[i] >= mx - s (the float subtraction, mx the
 *           largest; NaN is never one): call lmd_sample_candidates on them. s = 40.0f * temperature.
 */
float lmd_sample_spread(const struct lmd_sampling *p);

/**
 * The cut of a row v [n] whose largest value is v[best], for spread >= 0 (lmd_sample_spread) and p->top_k
 * (0 = none): v[best] - spread (that float subtraction), raised to the top_k-th largest value of the row
 * when top_k > 0 (NaN not counted, ties counted; no raise when the row has fewer values). The tokens
 * with v[i] >= cut hold the first top_k of the sorted candidates, so lmd_sample_candidates on them gives
 * the same token as on all within the spread. The backend's pick op cuts rows by this rule.
 */
float lmd_sample_cut(const float *v, int64_t n, int64_t best, float spread, int32_t top_k);

/**
 * The candidates of a row v [n] for a cut (the row's largest value minus the spread): every i with
 * v[i] >= cut, in index order, values into val and indices into idx, at most max of them; returns how
 * many. val may be v (the row is compacted in place).
 */
int lmd_sample_gather(const float *v, int n, float cut, int max, float *val, int32_t *idx);

/**
 * Draw from the candidates of a row (see lmd_sample_spread): n values val[n] with their vocabulary
 * indices idx[n], in any order (n <= s->vocab; the best of the row is among them). They are sorted
 * by value, largest first, then by index, and top-k, temperature, top-p and min-p applied as in
 * lmd_sample, which gives the same token for the same rng state. Draws one number from rng. No
 * candidates (a row of NaN) gives token 0.
 */
int lmd_sample_candidates(struct lmd_sampler *s, const float *val, const int32_t *idx, int n,
			  const struct lmd_sampling *p, struct lmd_rng *rng);

/** Index of the largest value (the first one on ties); NaN never wins; 0 when all are NaN. */
int lmd_argmax(const float *v, int n);

#endif
