/**
 * 4-bit weight quantization (lmd-awq): group-wise asymmetric round-to-nearest, AWQ's
 * activation-aware scaling folded into the preceding norm or linear, and the AutoAWQ "gemm"
 * packing (../shared/docs/lmdeploy.md §1.4):
 *   qweight int32 [in, out/8]   nibble slot k (bits 4k..4k+3) of word [i][j] holds output column
 *                               j*8 + order[k], order = 0,2,4,6,1,3,5,7
 *   qzeros  int32 [in/g, out/8] the same packing of the zero points
 *   scales  fp16  [in/g, out]
 * dequantized w[o][i] = (q - zero) * scale of group i/g.
 */
#ifndef LMD_AWQ_H
#define LMD_AWQ_H

#include <stdint.h>

#include "engine/backend.h"
#include "calib.h"
#include "err.h"
#include "lmd.h"

/**
 * Quantize w [out][in] in groups of g input channels to bits: per (group, output) scale =
 * max(max - min, 1e-5) / (2^bits - 1), zero = clamp(-round(min / scale), 0, 2^bits - 1),
 * q = clamp(round(w / scale) + zero, 0, 2^bits - 1). Outputs in the AWQ orientation:
 * q [in][out], zero [in/g][out], scale [in/g][out] (any may be NULL); deq (may be NULL)
 * receives the dequantized w [out][in].
 */
void lmd_quant_groups(const float *w, int out, int in, int g, int bits, uint8_t *q, uint8_t *zero, float *scale,
		      float *deq);

enum lmd_quant_method { LMD_QUANT_RTN, LMD_QUANT_AWQ, LMD_QUANT_GPTQ };

struct lmd_awq_opts {
	int bits;                 /* 4 */
	int group_size;           /* 128 */
	enum lmd_quant_method method;
	int fixed_ratio;          /* awq: LMDeploy's smoothing without search (ratio 0.5 on absmax from stats) */
	int no_clip;              /* awq: skip the clipping search */
	int no_search;            /* awq: skip the scale search (every scale 1) */
	int search_rows;          /* awq: calibration rows (whole windows) the scale search runs on; 0 = all */
	int act_order;            /* gptq: columns in order of decreasing Hessian diagonal (static groups) */
	double damp;              /* gptq: dampening, a fraction of the mean Hessian diagonal (0.01) */
	double equalize;          /* 0, or cross-layer equalization of each layer first with this threshold (2) */
	int threads;              /* CPU threads of the search (0 = every core) */
	const char *stats_name;   /* the statistics' file name, for messages (NULL = "--stats") */
	/* NULL, or told after each layer searched or quantized by GPTQ (lmd.h) */
	const struct lmd_progress *progress;
};

/**
 * The calibration activations the search and GPTQ run on: every row of the calibration windows, per
 * layer and linear input (calib.h's LMD_CALIB_*). Row r is token r % seqlen of window r / seqlen.
 */
struct lmd_awq_acts {
	int layers, seqlen;
	int64_t *n, *cap;         /* owned [layers * LMD_CALIB_NIN] rows kept, rows allocated */
	float **x;                /* owned [layers * LMD_CALIB_NIN] -> [n][cols] */
	int cols[LMD_CALIB_NIN];
	float *resid;             /* owned [nresid][hidden]: the residual stream entering layer 0 (GPTQ's start) */
	int64_t nresid, resid_cap;
	int err;                  /* a tap ran out of memory */
};
int lmd_awq_acts_init(struct lmd_awq_acts *a, const struct lmd_config *c, int seqlen, struct lmd_err *err);
void lmd_awq_acts_free(struct lmd_awq_acts *a);
/** A model tap (model.h) filling ctx, a struct lmd_awq_acts *. */
void lmd_awq_acts_tap(void *ctx, int layer, enum lmd_tap point, const struct lmd_tensor *t);

/**
 * AutoAWQ's scale candidate for ratio r: s = x_mean^r / (w_mean^(1-r) + eps), at least 1e-4, divided
 * by sqrt(max(s) * min(s)). eps = 1e-4 (AutoAWQ) or 0 (LMDeploy's fixed smoothing).
 */
void lmd_awq_ratio_scales(const double *x_mean, const double *w_mean, int in, double r, double eps, float *s);
/** w_mean [in]: the mean over the rows of the nw linears ws[k] [outs[k]][in] of |w| / max |w| of its group. */
void lmd_awq_weight_mean(float *const *ws, const int *outs, int nw, int in, int g, double *w_mean);

/**
 * The block the scale search minimizes the output error of: fwd computes the block's output y
 * [ny floats] from the (pseudo-quantized) weights w[k] [outs[k]][in] of the scaled linears.
 */
typedef int (*lmd_awq_block_fn)(void *ctx, float *const *w, float *y, struct lmd_err *err);

/**
 * AutoAWQ's scale search for the nw linears ws[k] [outs[k]][in] that share an input (x_mean [in]
 * its mean |x|): the candidates s = 1 and the ratios r = 0, 0.05, ..., 0.95; each linear becomes
 * Q(w·s)/s (lmd_quant_groups, groups of g, bits) and fwd gives the block's output; the candidate
 * with the least mean squared difference from the unquantized block's output wins (s = 1 on ties).
 * s [in] receives the scales, *ratio the ratio (-1 for s = 1), *loss its mean squared error, *loss1
 * that of s = 1 (either may be NULL).
 */
int lmd_awq_search(float *const *ws, const int *outs, int nw, int in, int g, int bits, const double *x_mean,
		   lmd_awq_block_fn fwd, void *ctx, size_t ny, float *s, double *ratio, double *loss, double *loss1,
		   struct lmd_err *err);

/**
 * lmd_awq_search for a single linear w [out][in] whose output is the block (v -> o, up -> down), on the
 * Gram matrix gm [in][in] = Σ x xᵀ of its n input rows (lmd_awq_gram) instead of the rows themselves:
 * the same losses (the mean squared output error), at out·in² per candidate. be runs the products.
 */
int lmd_awq_search_linear(struct lmd_backend *be, float *w, int out, int in, int g, int bits, const double *x_mean,
			  const float *gm, int64_t n, float *s, double *ratio, double *loss, double *loss1,
			  struct lmd_err *err);

/** gm [in][in] = Σ x xᵀ over the n rows of x (row r at x + r·stride, in floats used), on be. */
int lmd_awq_gram(struct lmd_backend *be, const float *x, int64_t n, int in, int64_t stride, float *gm,
		 struct lmd_err *err);

/**
 * AutoAWQ's clipping search on w [out][in] with the input rows x [n][in]: for every output row and
 * group of g inputs, the max |w| shrunk by 1 - k/20 (k = 0..9) that gives the least mean over the
 * rows of (x·w - x·Q(clamp(w, -m, m)))² on that group's part of the dot product (the first on ties),
 * computed as dᵀ G d / n with d the group's weight error and G its Gram matrix Σ x xᵀ; w is clamped
 * to it. maxv [out][in/g] (may be NULL) receives m. be runs the products.
 */
int lmd_awq_clip(struct lmd_backend *be, float *w, int out, int in, int g, int bits, const float *x, int n,
		 float *maxv, struct lmd_err *err);

/** One layer's weights, f32 [out][in] as the checkpoint holds them; biases NULL when absent. */
struct lmd_awq_layer {
	float *attn_norm, *ffn_norm, *wq, *wk, *wv, *wo, *w1, *w2, *w3, *bq, *bk, *bv, *bo;
};

/**
 * Fold the scales into layer L: sc[0] (q/k/v inputs) and sc[2] (gate/up inputs) divide the norms and
 * multiply the linears' input columns; sc[1] (o's inputs; NULL = none) divides wv's rows (and bv),
 * sc[3] (down's inputs) w3's rows. The model's function is unchanged.
 */
void lmd_awq_apply(const struct lmd_config *c, struct lmd_awq_layer *L, float *const sc[4]);

/**
 * Cross-layer equalization of layer L (Nagel et al. 2019, "Data-Free Quantization"), from the weights
 * alone. Per site p (calib.h's order) a producer's magnitude r1 and a consumer's column norm r2, per
 * channel j of the site's in_p channels:
 *   q/k/v [hidden]:  r1 = |attn_norm_j|,       r2 = ||column j of [wq; wk; wv]||
 *   v -> o [H]:      r1 = ||row j of wv||,      r2 = ||column j of wo||   (only without GQA)
 *   gate/up [hidden]: r1 = |ffn_norm_j|,        r2 = ||column j of [w1; w3]||
 *   up -> down [inter]: r1 = ||row j of w3||,   r2 = ||column j of w2||
 * s_j = sqrt(r1_j / r2_j) divided by its median over the site, then exactly 1 unless s_j > thr or
 * s_j < 1 / thr (1 also where r1_j or r2_j is 0), folded as lmd_awq_apply folds AWQ's scales (producers
 * divided by s, the consumers' columns multiplied): the function is unchanged and the moved channels'
 * r1 / r2 becomes the median's. up -> down and v -> o are found and folded first, the two norms' sites
 * then on the weights they left (a row of up or v scaled up dominates the column norms of [w1; w3] or
 * [wq; wk; wv]). A trained model,
 * balanced by weight decay, moves none (every s_j exactly 1: the weights are left bit for bit).
 * sc[p] [in_p] receive s (owned by the caller after, free(); sc[1] NULL under GQA), moved[p] the
 * channels with s_j != 1.
 */
int lmd_awq_equalize(const struct lmd_config *c, struct lmd_awq_layer *L, double thr, float *sc[4], int moved[4],
		     struct lmd_err *err);

/**
 * Make layer l's calibration data that of the equalized layer: the rows of a (may be NULL) of each
 * input p with sc[p] are divided by it per channel, and st's (may be NULL) absmax and mean |x| too
 * (the mean square by s²).
 */
void lmd_awq_equalize_data(int l, float *const sc[4], struct lmd_awq_acts *a, struct lmd_calib_stats *st);

/**
 * AWQ of layer l in place: the scales searched (lmd_awq_search) on the first o->search_rows rows of a
 * (whole windows) for q/k/v on the attention output (rotary, causal softmax per window, wo in full
 * precision), for v -> o on wo's output (only without GQA), for w1/w3 on the MLP's output (w2 in full
 * precision) and for w3 -> w2 on w2's output (unless o->no_search: every scale 1); then folded into the
 * norms and the preceding linears,
 * then (unless o->no_clip) the clipping search (lmd_awq_clip) on every linear but wq and wk with the
 * scaled inputs. line (may be NULL) receives a summary. be: the CPU backend that runs the products.
 */
int lmd_awq_layer(struct lmd_backend *be, const struct lmd_config *c, int l, struct lmd_awq_layer *L,
		  const struct lmd_awq_acts *a, const struct lmd_calib_stats *st, const struct lmd_awq_opts *o,
		  char *line, size_t len, struct lmd_err *err);

/**
 * GPTQ of w [out][in] with the Hessian h [in][in] (2/n Σ x xᵀ over the calibration rows; modified
 * here): dead channels (h_ii = 0) are zeroed, damp · mean(diag) added to the diagonal, then the
 * columns are quantized in order (act_order: by decreasing h_ii, with every group's scale and zero
 * fixed first from w) with the error fed back through the upper Cholesky factor of h⁻¹, in blocks
 * of 128 columns; a group's scale and zero (lmd_quant_groups's formulas, the scale rounded to fp16)
 * are found on its columns as updated when its first column is reached. Outputs as lmd_quant_groups:
 * q [in][out], zero [in/g][out], scale [in/g][out], deq [out][in] (any may be NULL); w is changed.
 * LMD_EINVAL when h is not positive definite after dampening.
 */
int lmd_gptq(float *w, int out, int in, double *h, int g, int bits, int act_order, double damp, uint8_t *q,
	     uint8_t *zero, float *scale, float *deq, struct lmd_err *err);

/** h [in][in] = 2/n Σ x xᵀ over the n rows x [n][in] (GPTQ's Hessian), the product on be. */
int lmd_gptq_hessian(struct lmd_backend *be, const float *x, int64_t n, int in, double *h, struct lmd_err *err);

/** A linear quantized to groups, in the AWQ orientation (lmd_quant_groups). */
struct lmd_qgroups {
	uint8_t *q, *zero;        /* owned [in][out], [in/g][out] */
	float *scale;             /* owned [in/g][out] */
};
void lmd_qgroups_free(struct lmd_qgroups *q);

/**
 * GPTQ of layer L, true-sequential: h [n][hidden] is the residual stream entering the layer on the
 * calibration windows of T tokens (n a multiple of T), as the already quantized layers before it
 * made it. Each linear's Hessian (lmd_gptq_hessian) is taken on its input as the layer's linears
 * quantized before it make it, in the order q/k/v (one input), o, gate/up, down; each is quantized
 * by lmd_gptq (o->act_order, o->damp) and replaced in L by its dequantized weights; q[0..6] (wq, wk,
 * wv, wo, w1, w3, w2) receive the int4 values (owned by the caller after; lmd_qgroups_free). h becomes the
 * residual stream leaving the quantized layer. be: the CPU backend that runs the products.
 */
int lmd_gptq_layer(struct lmd_backend *be, const struct lmd_config *c, struct lmd_awq_layer *L, float *h, int n,
		   int T, const struct lmd_awq_opts *o, struct lmd_qgroups q[7], struct lmd_err *err);

/**
 * Quantize the model in src (any model directory) and write an HF directory in the AutoAWQ gemm
 * format to dst (atomically; force replaces it). rtn needs neither stats nor acts; awq with
 * fixed_ratio needs stats; the awq search needs acts (and takes x_mean from stats when not NULL,
 * else from acts); gptq needs acts (their residual stream entering layer 0). Refuses stats of another model and a group size that does not
 * divide a layer (LMD_EINVAL naming the layer). With o->equalize each layer is equalized first
 * (lmd_awq_equalize) and its rows in acts and its statistics in stats are divided to match
 * (lmd_awq_equalize_data: both are changed). log (may be NULL) gets one line per layer (two with
 * o->equalize).
 */
int lmd_awq_quantize(const char *src, const char *dst, const struct lmd_awq_opts *o,
		     struct lmd_calib_stats *stats, struct lmd_awq_acts *acts, int force,
		     void (*log)(void *ctx, const char *line), void *log_ctx, struct lmd_err *err);

#endif
