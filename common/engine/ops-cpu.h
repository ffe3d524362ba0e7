/**
 * The plain CPU reference of every backend op (aesthetics C11): one thread, no tricks, fp32 math,
 * outputs rounded to their tensor's dtype. This is the definition of correct that the fast CPU
 * backend (backend-cpu.c) and the CUDA backend are tested against (t/unit/test-ops.c); the CUDA
 * ops get the same names with lmd_cuda_. Tensors are host memory; shapes as in backend.h.
 * Shape mismatches are programmer errors (LMD_BUG).
 */
#ifndef LMD_OPS_CPU_H
#define LMD_OPS_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "kvcache.h"
#include "tensor.h"

void lmd_cpu_embed(struct lmd_tensor *y, const struct lmd_tensor *table, const struct lmd_step *s);
void lmd_cpu_rmsnorm(struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *g, float eps);
void lmd_cpu_add_rmsnorm(struct lmd_tensor *y, struct lmd_tensor *x, const struct lmd_tensor *r,
			 const struct lmd_tensor *g, float eps);
void lmd_cpu_matmul(struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
		    const struct lmd_tensor *bias);
/** The int4 matmul (backend.h matmul_q4) the plain way: each weight row dequantized to fp32, then matmul. */
void lmd_cpu_matmul_q4(struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
		       const struct lmd_tensor *scales, const struct lmd_tensor *zeros, int group,
		       const struct lmd_tensor *bias);
/**
 * Quantize one (token, head) row x[D] of K or V to bits (8 or 4) into q (D bytes, or D/2 with two
 * nibbles a byte, low first) and sz = {scale, zero}, values of pt (the cache's dtype, which stores them;
 * kvcache.h); fixed = {scale, zero} for offline parameters, NULL for online. lmd_kv_dequantize is
 * x̂ = q * scale + zero.
 */
void lmd_kv_quantize(const float *x, int D, int bits, const float *fixed, enum lmd_dtype pt, uint8_t *q, float *sz);
void lmd_kv_dequantize(const uint8_t *q, int D, int bits, const float *sz, float *x);
/** cos/sin of every token's angles: cs [n][rot_half][2] (what the fast backend precomputes once a step). */
void lmd_cpu_rope_table(float *cs, const struct lmd_step *s);
void lmd_cpu_rope(struct lmd_tensor *qkv, const struct lmd_attn_dims *d, const struct lmd_step *s);
void lmd_cpu_kv_store(struct lmd_kvcache *kv, int layer, const struct lmd_tensor *qkv, const struct lmd_attn_dims *d,
		      const struct lmd_step *s);
void lmd_cpu_attention(struct lmd_tensor *att, const struct lmd_tensor *qkv, const struct lmd_kvcache *kv, int layer,
		       const struct lmd_attn_dims *d, const struct lmd_step *s);
void lmd_cpu_silu_mul(struct lmd_tensor *y, const struct lmd_tensor *gu);
void lmd_cpu_gather_rows(struct lmd_tensor *y, const struct lmd_tensor *x, int first, const struct lmd_step *s);
/** pick (backend.h) of one row v[n]: writes {best, count} to head[2] and up to cap pairs to cand[2 * cap]. */
void lmd_cpu_pick_row(const float *v, int64_t n, float spread, int32_t top_k, int32_t *head, int32_t *cand,
		      int64_t cap);
void lmd_cpu_pick(struct lmd_tensor *head, struct lmd_tensor *cand, const struct lmd_tensor *logits,
		  const float *spread, const int32_t *top_k);
/** Do head, cand and logits have pick's shapes and dtypes (backend.h)? */
int lmd_pick_shapes_ok(const struct lmd_tensor *head, const struct lmd_tensor *cand, const struct lmd_tensor *logits);

/** Convert n values of a float dtype (f32, f16, bf16) to f32, and back with rounding to nearest even. */
void lmd_cpu_load(float *dst, const void *src, enum lmd_dtype t, size_t n);
void lmd_cpu_store(void *dst, enum lmd_dtype t, const float *src, size_t n);
/** Round v to what dtype t can hold (identity for f32). */
float lmd_cpu_round(float v, enum lmd_dtype t);

/** Host-memory helpers shared by the CPU backends: alloc/release/weight/upload/download/sync. */
int lmd_cpu_alloc(void *ctx, struct lmd_tensor *t, struct lmd_err *err);
void lmd_cpu_release(void *ctx, struct lmd_tensor *t);
int lmd_cpu_weight(void *ctx, struct lmd_tensor *dst, const struct lmd_tensor *src, struct lmd_err *err);
int lmd_cpu_upload(void *ctx, struct lmd_tensor *dst, size_t off, const void *src, size_t nbytes,
		   struct lmd_err *err);
int lmd_cpu_download(void *ctx, void *dst, const struct lmd_tensor *src, size_t off, size_t nbytes,
		     struct lmd_err *err);
int lmd_cpu_sync(void *ctx, struct lmd_err *err);

#endif
