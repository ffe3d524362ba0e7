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

#include "calib.h"
#include "err.h"

/**
 * Quantize w [out][in] in groups of g input channels to bits: per (group, output) scale =
 * max(max - min, 1e-5) / (2^bits - 1), zero = clamp(-round(min / scale), 0, 2^bits - 1),
 * q = clamp(round(w / scale) + zero, 0, 2^bits - 1). Outputs in the AWQ orientation:
 * q [in][out], zero [in/g][out], scale [in/g][out] (any may be NULL); deq (may be NULL)
 * receives the dequantized w [out][in].
 */
void lmd_quant_groups(const float *w, int out, int in, int g, int bits, uint8_t *q, uint8_t *zero, float *scale,
		      float *deq);

struct lmd_awq_opts {
	int bits;                 /* 4 */
	int group_size;           /* 128 */
	int method;               /* 0 = rtn, 1 = awq */
	int search_scale;         /* grid-search the AWQ ratio on captured activations */
	const char *stats_name;   /* the statistics' file name, for messages (NULL = "--stats") */
};

/** Activation rows captured for the scale search: per layer and per input (calib.h's LMD_CALIB_*). */
struct lmd_awq_acts {
	int layers, rows;         /* rows kept per input */
	int stride;               /* keep every stride-th token */
	int64_t *seen;            /* owned [layers * LMD_CALIB_NIN] rows seen */
	int *n;                   /* owned [layers * LMD_CALIB_NIN] rows kept */
	float **x;                /* owned [layers * LMD_CALIB_NIN] -> [rows][channels] */
	int cols[LMD_CALIB_NIN];
	int err;
};
int lmd_awq_acts_init(struct lmd_awq_acts *a, const struct lmd_config *c, int rows, int stride, struct lmd_err *err);
void lmd_awq_acts_free(struct lmd_awq_acts *a);
/** A model tap (model.h) filling ctx, a struct lmd_awq_acts *. */
void lmd_awq_acts_tap(void *ctx, int layer, enum lmd_tap point, const struct lmd_tensor *t);

/**
 * Quantize the model in src (any model directory) with stats (NULL for rtn) and acts (NULL without
 * search_scale) and write an HF directory in the AutoAWQ gemm format to dst (atomically; force
 * replaces it). Refuses stats of another model and a group size that does not divide a layer
 * (LMD_EINVAL naming the layer). log (may be NULL) gets one line per layer.
 */
int lmd_awq_quantize(const char *src, const char *dst, const struct lmd_awq_opts *o,
		     const struct lmd_calib_stats *stats, const struct lmd_awq_acts *acts, int force,
		     void (*log)(void *ctx, const char *line), void *log_ctx, struct lmd_err *err);

#endif
