/*
 * Quantized KV cache (int8 and int4, online per token per head, and offline parameters): the stored
 * codes against LMDeploy's formulas written out here, and attention over the quantized cache (through
 * the "ref" and "cpu" backends) against attention over an fp32 cache holding the dequantized values.
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

/* LMDeploy (quantization.h@v0.4.2): scale = (max - min) / (2^b - 1), zero = round(min / scale) * scale,
 * q = round((x - zero) / scale), x̂ = q * scale + zero. */
static void oracle(const float *x, int D, int bits, const float *fixed, float *xh)
{
	float mn = x[0], mx = x[0];
	for (int j = 1; j < D; j++)
		mn = fminf(mn, x[j]), mx = fmaxf(mx, x[j]);
	float qmax = (float)((1 << bits) - 1);
	float scale = fixed ? fixed[0] : (mx - mn) / qmax, zero = fixed ? fixed[1] : roundf(mn / scale) * scale;
	for (int j = 0; j < D; j++)
		xh[j] = fminf(fmaxf(roundf((x[j] - zero) / scale), 0), qmax) * scale + zero;
}

static void test_codes(int bits)
{
	enum { D = 64 };
	float x[D], xh[D], back[D], sz[2];
	uint8_t q[D];
	for (int rep = 0; rep < 50; rep++) {
		for (int j = 0; j < D; j++)
			x[j] = frand() * (1 + rep);
		lmd_kv_quantize(x, D, bits, NULL, q, sz);
		lmd_kv_dequantize(q, D, bits, sz, back);
		oracle(x, D, bits, NULL, xh);
		for (int j = 0; j < D; j++) {
			CHECK_NEAR(back[j], xh[j], 1e-6 * (1 + rep));
			CHECK(fabsf(back[j] - x[j]) <= sz[0] * 1.0001f);  /* within one step (zero is on the grid) */
		}
		float fixed[2] = {0.05f, -1.5f};
		lmd_kv_quantize(x, D, bits, fixed, q, sz);
		lmd_kv_dequantize(q, D, bits, sz, back);
		oracle(x, D, bits, fixed, xh);
		for (int j = 0; j < D; j++)
			CHECK_NEAR(back[j], xh[j], 1e-6);
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
			oracle(src, D, bits, offline ? params + 2 * h : NULL, qkv2 + (size_t)i * cols + (H + h) * D);
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
	test_codes(8);
	test_codes(4);
	CHECK_EQ_INT(lmd_kvcache_block_bytes_q(2, 4, 32, 16, LMD_F16, LMD_KV_INT8), 2 * 2 * 4 * 16 * (32 + 8));
	CHECK_EQ_INT(lmd_kvcache_block_bytes_q(2, 4, 32, 16, LMD_F16, LMD_KV_INT4), 2 * 2 * 4 * 16 * (16 + 8));
	const char *bes[] = {"ref", "cpu"};
	for (int b = 0; b < 2; b++)
		for (int off = 0; off < 2; off++) {
			test_attention(bes[b], 8, off);
			test_attention(bes[b], 4, off);
		}
	return UNIT_DONE();
}
