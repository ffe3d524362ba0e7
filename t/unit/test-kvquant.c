/*
 * Quantized KV cache (int8 and int4, online per token per head, and offline parameters; scale and zero
 * in the cache's dtype): the stored codes against kvcache.h's formulas written out here, and attention over
 * the quantized cache (through the "ref" and "cpu" backends) against attention over an fp32 cache holding
 * the dequantized values.
 */
#include <stdlib.h>

#include "engine/backend.h"
#include "engine/kvcache.h"
#include "engine/ops-cpu.h"
#include "unit.h"

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static float frand(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
}

/* The value of dtype t nearest to v on its side dir (+1: the least >= v, -1: the greatest <= v), found by
 * trying every 16-bit pattern (an oracle independent of the quantizer's bit stepping); f32: v. */
static float side(float v, enum lmd_dtype t, int dir)
{
	if (t == LMD_F32)
		return v;
	float best = dir > 0 ? INFINITY : -INFINITY;
	for (uint32_t h = 0; h < 65536; h++) {
		float f = t == LMD_F16 ? lmd_f16_to_f32((uint16_t)h) : lmd_bf16_to_f32((uint16_t)h);
		if (isfinite(f) && (dir > 0 ? f >= v && f < best : f <= v && f > best))
			best = f;
	}
	return best;
}

/* kvcache.h's online formulas, written out: zero = min rounded down to t, scale = (max - zero) / qmax rounded
 * up to t (at least LMD_KV_MIN_SCALE), q = clamp(round((x - zero) / scale)), x̂ = q * scale + zero. */
static void oracle(const float *x, int D, int bits, const float *fixed, enum lmd_dtype t, float *xh, float *sz)
{
	float mn = x[0], mx = x[0];
	for (int j = 1; j < D; j++)
		mn = fminf(mn, x[j]), mx = fmaxf(mx, x[j]);
	float qmax = (float)((1 << bits) - 1), scale, zero;
	if (fixed) {
		scale = lmd_cpu_round(fixed[0], t), zero = lmd_cpu_round(fixed[1], t);
	} else {
		zero = side(mn, t, -1);
		scale = side(fmaxf((mx - zero) / qmax, LMD_KV_MIN_SCALE), t, 1);
	}
	sz[0] = scale, sz[1] = zero;
	for (int j = 0; j < D; j++)
		xh[j] = fminf(fmaxf(roundf((x[j] - zero) / scale), 0), qmax) * scale + zero;
}

static void test_codes(int bits, enum lmd_dtype t)
{
	enum { D = 64 };
	float x[D], xh[D], back[D], sz[2], osz[2];
	uint8_t q[D];
	for (int rep = 0; rep < 40; rep++) {
		float off = rep % 4 == 3 ? 100 : 0, spread = rep % 4 == 3 ? 0.01f : 1 + rep;  /* also clustered far from 0 */
		for (int j = 0; j < D; j++)
			x[j] = lmd_cpu_round(off + frand() * spread, t);
		lmd_kv_quantize(x, D, bits, NULL, t, q, sz);
		lmd_kv_dequantize(q, D, bits, sz, back);
		oracle(x, D, bits, NULL, t, xh, osz);
		CHECK(sz[0] == osz[0] && sz[1] == osz[1]);
		CHECK(sz[0] == lmd_cpu_round(sz[0], t) && sz[1] == lmd_cpu_round(sz[1], t));  /* values of t */
		for (int j = 0; j < D; j++) {
			CHECK(back[j] == xh[j]);
			CHECK(fabsf(back[j] - x[j]) <= sz[0] * 0.5001f + fabsf(x[j]) * 1e-6f);  /* within half a step */
		}
		float fixed[2] = {0.05f, -1.5f};
		lmd_kv_quantize(x, D, bits, fixed, t, q, sz);
		lmd_kv_dequantize(q, D, bits, sz, back);
		oracle(x, D, bits, fixed, t, xh, osz);
		for (int j = 0; j < D; j++)
			CHECK(back[j] == xh[j]);
	}
}

/* attention over a quantized cache == attention over an fp32 cache of the oracle's dequantized values */
static void test_attention(const char *backend, int bits, int offline)
{
	enum { H = 4, KVH = 2, D = 32, N = 70, BL = 16 };
	struct lmd_backend be = {0};
	struct lmd_err err = {0};
	CHECK_EQ_INT(lmd_backend_open(&be, backend, &(struct lmd_backend_opts){.threads = 2}, &err), 0);
	struct lmd_kvcache kq = {0}, kf = {0};
	float params[1 * 2 * KVH * 2];
	for (int i = 0; i < 2 * KVH; i++)
		params[2 * i] = 0.02f + 0.01f * i, params[2 * i + 1] = -1.2f;
	CHECK_EQ_INT(lmd_kvcache_init(&kq, &be, 1, KVH, D, BL, 8, LMD_F32, &err), 0);
	CHECK_EQ_INT(lmd_kvcache_set_quant(&kq, bits, offline ? params : NULL, &err), 0);
	CHECK_EQ_INT(lmd_kvcache_init(&kf, &be, 1, KVH, D, BL, 8, LMD_F32, &err), 0);
	int cols = (H + 2 * KVH) * D;
	float *qkv = malloc(sizeof(float) * N * cols), *qkv2 = malloc(sizeof(float) * N * cols);
	float *a1 = malloc(sizeof(float) * N * H * D), *a2 = malloc(sizeof(float) * N * H * D);
	int32_t tokens[N], pos[N], seq[N], table[8] = {3, 0, 5, 1, 7, 2, 4, 6}, out[1] = {N - 1};
	for (int i = 0; i < N; i++)
		tokens[i] = 0, pos[i] = i, seq[i] = 0;
	for (int i = 0; i < N * cols; i++)
		qkv[i] = frand() * 2;
	for (int i = 0; i < N; i++)
		for (int h = 0; h < 2 * KVH; h++) {
			float *src = qkv + (size_t)i * cols + (H + h) * D;
			float sz[2];
			oracle(src, D, bits, offline ? params + 2 * h : NULL, LMD_F32, qkv2 + (size_t)i * cols + (H + h) * D, sz);
		}
	for (int i = 0; i < N; i++)
		for (int j = 0; j < H * D; j++)
			qkv2[(size_t)i * cols + j] = qkv[(size_t)i * cols + j];
	float freq[D / 2] = {0};
	struct lmd_step st = {.n = N, .tokens = tokens, .pos = pos, .seq = seq, .nseq = 1, .block_table = table,
			      .max_blocks = 8, .rot_half = D / 2, .inv_freq = freq, .nout = 1, .out_rows = out};
	struct lmd_attn_dims d = {H, KVH, D, 1.0f / sqrtf(D)};
	struct lmd_tensor t1 = {0}, t2 = {0}, o1 = {0}, o2 = {0};
	lmd_backend_alloc2(&be, &t1, LMD_F32, N, cols, &err);
	lmd_backend_alloc2(&be, &t2, LMD_F32, N, cols, &err);
	lmd_backend_alloc2(&be, &o1, LMD_F32, N, H * D, &err);
	lmd_backend_alloc2(&be, &o2, LMD_F32, N, H * D, &err);
	be.ops->upload(be.ctx, &t1, 0, qkv, sizeof(float) * N * cols, &err);
	be.ops->upload(be.ctx, &t2, 0, qkv2, sizeof(float) * N * cols, &err);
	CHECK_EQ_INT(be.ops->step_begin(be.ctx, &st, &err), 0);
	CHECK_EQ_INT(be.ops->kv_store(be.ctx, &kq, 0, &t1, &d, &err), 0);
	CHECK_EQ_INT(be.ops->attention(be.ctx, &o1, &t1, &kq, 0, &d, &err), 0);
	CHECK_EQ_INT(be.ops->kv_store(be.ctx, &kf, 0, &t2, &d, &err), 0);
	CHECK_EQ_INT(be.ops->attention(be.ctx, &o2, &t2, &kf, 0, &d, &err), 0);
	be.ops->download(be.ctx, a1, &o1, 0, sizeof(float) * N * H * D, &err);
	be.ops->download(be.ctx, a2, &o2, 0, sizeof(float) * N * H * D, &err);
	be.ops->sync(be.ctx, &err);
	double worst = 0;
	for (int i = 0; i < N * H * D; i++)
		worst = fmax(worst, fabs(a1[i] - a2[i]));
	CHECK(worst < 2e-5);
	fprintf(stderr, "kv int%d %s %s: attention max |diff| vs dequantized fp32 cache %.3g\n", bits,
		offline ? "offline" : "online", backend, worst);
	be.ops->release(be.ctx, &t1), be.ops->release(be.ctx, &t2), be.ops->release(be.ctx, &o1), be.ops->release(be.ctx, &o2);
	lmd_kvcache_free(&kq);
	lmd_kvcache_free(&kf);
	lmd_backend_close(&be);
	free(qkv), free(qkv2), free(a1), free(a2);
}

int main(void)
{
	enum lmd_dtype dts[3] = {LMD_F32, LMD_F16, LMD_BF16};
	for (int i = 0; i < 3; i++) {
		test_codes(8, dts[i]);
		test_codes(4, dts[i]);
	}
	/* scale and zero in the cache's dtype: 2 x 2 bytes a token and head in fp16, 2 x 4 in f32 */
	CHECK_EQ_INT(lmd_kvcache_block_bytes_q(2, 4, 32, 16, LMD_F16, LMD_KV_INT8), 2 * 2 * 4 * 16 * (32 + 4));
	CHECK_EQ_INT(lmd_kvcache_block_bytes_q(2, 4, 32, 16, LMD_BF16, LMD_KV_INT4), 2 * 2 * 4 * 16 * (16 + 4));
	CHECK_EQ_INT(lmd_kvcache_block_bytes_q(2, 4, 32, 16, LMD_F32, LMD_KV_INT8), 2 * 2 * 4 * 16 * (32 + 8));
	/* issue 14's targets at Llama-2-7B's head_dim: int8 >= 1.9x and int4 >= 3.4x the tokens of fp16 */
	double f16 = (double)lmd_kvcache_block_bytes(32, 32, 128, 64, LMD_F16);
	CHECK(f16 / (double)lmd_kvcache_block_bytes_q(32, 32, 128, 64, LMD_F16, LMD_KV_INT8) >= 1.9);
	CHECK(f16 / (double)lmd_kvcache_block_bytes_q(32, 32, 128, 64, LMD_F16, LMD_KV_INT4) >= 3.4);
	const char *bes[] = {"ref", "cpu"};
	for (int b = 0; b < 2; b++)
		for (int off = 0; off < 2; off++) {
			test_attention(bes[b], 8, off);
			test_attention(bes[b], 4, off);
		}
	return UNIT_DONE();
}
