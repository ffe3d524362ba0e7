/*
 * int4 weights: AutoAWQ packing against the format's definition (nibble slot k of a word holds output
 * column 8j + order[k], order 0,2,4,6,1,3,5,7), the group quantizer against its formulas, and the
 * matmul_q4 op of every CPU backend against dequantize-then-fp32 matmul (the reference definition).
 */
#include <stdlib.h>

#include "quant/awq.h"
#include "engine/backend.h"
#include "engine/ops-cpu.h"
#include "engine/q4.h"
#include "tensor.h"
#include "unit.h"
#include "autoawq.h"

static uint64_t rng = 88172645463325252ULL;
static float frand(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
}

static void test_pack(void)
{
	uint8_t v[2 * 16], back[2 * 16];
	for (int i = 0; i < 32; i++)
		v[i] = (uint8_t)((i * 7 + 3) & 15);
	int32_t p[4];
	lmd_awq_pack(v, 2, 16, p);
	/* the word's nibbles by hand: slot k = column order[k] */
	const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
	for (int r = 0; r < 2; r++)
		for (int j = 0; j < 2; j++)
			for (int k = 0; k < 8; k++)
				CHECK_EQ_INT(((uint32_t)p[r * 2 + j] >> (4 * k)) & 15, v[r * 16 + j * 8 + order[k]]);
	lmd_awq_unpack(p, 2, 16, back);
	CHECK(!memcmp(v, back, sizeof(v)));
	/* 0x76543210 in AWQ order is columns 0,4,1,5,2,6,3,7 = 0,2,4,6,1,3,5,7 stored: unpack gives 0,4,1,5,2,6,3,7 */
	int32_t w = 0x76543210;
	uint8_t u[8];
	lmd_awq_unpack(&w, 1, 8, u);
	const int want[8] = {0, 4, 1, 5, 2, 6, 3, 7};
	for (int i = 0; i < 8; i++)
		CHECK_EQ_INT(u[i], want[i]);
}

static void test_quant(void)
{
	enum { OUT = 8, IN = 64, G = 32 };
	float w[OUT * IN], deq[OUT * IN], s[(IN / G) * OUT];
	uint8_t q[IN * OUT], z[(IN / G) * OUT];
	for (int i = 0; i < OUT * IN; i++)
		w[i] = frand();
	w[5] = 0, w[6] = 0;
	lmd_quant_groups(w, OUT, IN, G, 4, q, z, s, deq);
	for (int o = 0; o < OUT; o++)
		for (int g = 0; g < IN / G; g++) {
			float mn = 1e9f, mx = -1e9f;
			for (int i = 0; i < G; i++)
				mn = fminf(mn, w[o * IN + g * G + i]), mx = fmaxf(mx, w[o * IN + g * G + i]);
			float sc = (mx - mn) / 15;
			CHECK_NEAR(s[g * OUT + o], sc, 1e-7);
			CHECK_EQ_INT(z[g * OUT + o], (int)fminf(fmaxf(-roundf(mn / sc), 0), 15));
			for (int i = 0; i < G; i++) {
				int k = o * IN + g * G + i;
				CHECK(q[(g * G + i) * OUT + o] <= 15);
				CHECK_NEAR(deq[k], ((float)q[(g * G + i) * OUT + o] - z[g * OUT + o]) * sc, 1e-6);
				CHECK(fabsf(deq[k] - w[k]) <= sc * 0.5f + 1e-6f);  /* round to nearest on the grid */
			}
		}
}

/* A random int4 weight in the engine layout, and its dequantized fp32 copy. */
static void make_q4(int out, int in, int g, uint8_t *q, uint16_t *s, uint8_t *z, float *deq)
{
	for (int o = 0; o < out; o++) {
		for (int i = 0; i < in / 2; i++)
			q[o * (in / 2) + i] = (uint8_t)(rng = rng * 6364136223846793005ULL + 1442695040888963407ULL) >> 0;
		for (int k = 0; k < in / g; k++) {
			s[o * (in / g) + k] = lmd_f32_to_f16(0.01f + 0.05f * fabsf(frand()));
			z[o * (in / g) + k] = (uint8_t)((rng >> 33) % 16);
			rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
		}
		struct lmd_q4 w = {out, in, g, q, s, z};
		lmd_q4_row(&w, o, deq + (size_t)o * in);
	}
	/* the dequantized value by the definition, for one element */
	int o = out - 1, i = in - 1;
	float want = ((float)(q[o * (in / 2) + i / 2] >> 4) - z[o * (in / g) + i / g]) * lmd_f16_to_f32(s[o * (in / g) + i / g]);
	CHECK_NEAR(deq[(size_t)o * in + i], want, 0);
}

static void test_matmul(const char *backend, int n, int out, int in, int g, enum lmd_dtype xt, int with_bias)
{
	struct lmd_backend be = {0};
	struct lmd_err err = {0};
	if (lmd_backend_open(&be, backend, &(struct lmd_backend_opts){.threads = 2}, &err)) {
		CHECK(0);
		return;
	}
	uint8_t *q = malloc((size_t)out * in / 2), *z = malloc((size_t)out * in / g);
	uint16_t *s = malloc((size_t)out * in / g * 2);
	float *deq = malloc((size_t)out * in * 4), *x = malloc((size_t)n * in * 4), *b = malloc((size_t)out * 4);
	float *want = malloc((size_t)n * out * 4), *got = malloc((size_t)n * out * 4);
	make_q4(out, in, g, q, s, z, deq);
	for (int i = 0; i < n * in; i++)
		x[i] = lmd_cpu_round(frand(), xt);
	for (int i = 0; i < out; i++)
		b[i] = frand();
	void *xb = malloc((size_t)n * in * 4);
	lmd_dtype_convert(xb, xt, x, LMD_F32, (size_t)n * in, NULL);
	struct lmd_tensor tx = {xt, 2, {n, in}, xb}, tw = {LMD_F32, 2, {out, in}, deq}, tb = {LMD_F32, 1, {out}, b};
	struct lmd_tensor ty = {LMD_F32, 2, {n, out}, want};
	lmd_cpu_matmul(&ty, &tx, &tw, with_bias ? &tb : NULL);  /* dequantize-then-fp32 */
	struct lmd_tensor wq = {LMD_U8, 2, {out, in / 2}, q}, ws = {LMD_F16, 2, {out, in / g}, s}, wz = {LMD_U8, 2, {out, in / g}, z};
	struct lmd_tensor bx = {0}, bw = {0}, bs = {0}, bz = {0}, bb = {0}, by = {0};
	CHECK_EQ_INT(lmd_backend_alloc2(&be, &bx, xt, n, in, &err), 0);
	CHECK_EQ_INT(lmd_backend_alloc2(&be, &by, LMD_F32, n, out, &err), 0);
	be.ops->upload(be.ctx, &bx, 0, xb, (size_t)n * in * lmd_dtype_size(xt), &err);
	CHECK_EQ_INT(be.ops->weight(be.ctx, &bw, &wq, &err), 0);
	CHECK_EQ_INT(be.ops->weight(be.ctx, &bs, &ws, &err), 0);
	CHECK_EQ_INT(be.ops->weight(be.ctx, &bz, &wz, &err), 0);
	CHECK_EQ_INT(be.ops->weight(be.ctx, &bb, &tb, &err), 0);
	CHECK(be.ops->matmul_q4 != NULL);
	CHECK_EQ_INT(be.ops->matmul_q4(be.ctx, &by, &bx, &bw, &bs, &bz, g, with_bias ? &bb : NULL, &err), 0);
	be.ops->download(be.ctx, got, &by, 0, (size_t)n * out * 4, &err);
	be.ops->sync(be.ctx, &err);
	double worst = 0;
	for (int i = 0; i < n * out; i++) {
		double tol = 1e-5 * (1 + fabs(want[i])) + 2e-6 * in;
		double d = fabs(got[i] - want[i]);
		worst = d > worst ? d : worst;
		if (d > tol) {
			CHECK_NEAR(got[i], want[i], tol);
			break;
		}
	}
	fprintf(stderr, "matmul_q4 %s n=%d out=%d in=%d g=%d %s%s: max |diff| %.3g\n", backend, n, out, in, g,
		lmd_dtype_short(xt), with_bias ? " bias" : "", worst);
	be.ops->release(be.ctx, &bx), be.ops->release(be.ctx, &by);
	if (!be.ops->weights_in_place)
		be.ops->release(be.ctx, &bw), be.ops->release(be.ctx, &bs), be.ops->release(be.ctx, &bz),
			be.ops->release(be.ctx, &bb);
	lmd_backend_close(&be);
	free(q), free(z), free(s), free(deq), free(x), free(b), free(want), free(got), free(xb);
}

int main(void)
{
	test_pack();
	test_quant();
	const char *bes[] = {"ref", "cpu"};
	for (int i = 0; i < 2; i++) {
		test_matmul(bes[i], 1, 64, 256, 128, LMD_F32, 0);
		test_matmul(bes[i], 7, 40, 384, 128, LMD_BF16, 1);
		test_matmul(bes[i], 3, 16, 256, 32, LMD_F16, 0);
		test_matmul(bes[i], 2, 8, 8192, 64, LMD_F32, 1);  /* 128 groups: the cpu backend's fallback path */
	}
	return UNIT_DONE();
}
