/*
 * The AWQ and GPTQ searches against outside definitions: a layer whose best scales are known in closed
 * form (a function-preserving outlier variant of a weight that round-to-nearest holds exactly), s = 1
 * winning where it is exact, the search of a linear on its input's Gram matrix against the search on
 * the rows, the clipping search against a brute-force search written from AutoAWQ's
 * description, and GPTQ against the straightforward dense form (OBQ: the explicit inverse Hessian,
 * updated after each column) on a tiny matrix, GPTQ of a whole layer (true-sequential) against the
 * layer written plainly, and the cross-layer equalization of a balanced layer with planted outlier
 * channels against the balance written from its definition and the layer written plainly.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant/awq.h"
#include "engine/backend.h"
#include "tensor.h"
#include "unit.h"

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static double urand(void)  /* [0, 1) */
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (double)(rng >> 11) * (1.0 / 9007199254740992.0);
}
static double grand(void)
{
	return sqrt(-2 * log(urand() + 1e-300)) * cos(2 * M_PI * urand());
}

/* the block of the tests: the linear itself, y = x · wᵀ in double, written plainly */
struct lin {
	const float *x;
	int n, in, out;
};
static int lin_fwd(void *ctx, float *const *w, float *y, struct lmd_err *err)
{
	(void)err;
	struct lin *l = ctx;
	for (int r = 0; r < l->n; r++)
		for (int o = 0; o < l->out; o++) {
			double a = 0;
			for (int i = 0; i < l->in; i++)
				a += (double)l->x[r * l->in + i] * w[0][o * l->in + i];
			y[r * l->out + o] = (float)a;
		}
	return 0;
}

/* w_mean by AutoAWQ's definition: per row and group |w| / max |w|, averaged over the rows */
static void w_mean_ref(const float *w, int out, int in, int g, double *wm)
{
	for (int i = 0; i < in; i++) {
		wm[i] = 0;
		for (int o = 0; o < out; o++) {
			double mx = 0;
			for (int j = i / g * g; j < i / g * g + g; j++)
				mx = fmax(mx, fabs(w[o * in + j]));
			wm[i] += fabs(w[o * in + i]) / mx / out;
		}
	}
}

enum { OUT = 16, IN = 64, G = 32, N = 48 };

/* W0 on the exact grid of its groups: values -7d or 8d, both present in every group: RTN holds it exactly */
static void grid_weight(float *w0, float d)
{
	for (int o = 0; o < OUT; o++)
		for (int i = 0; i < IN; i++)
			w0[o * IN + i] = i % G == 0 ? -7 * d : i % G == 1 ? 8 * d : urand() < 0.5 ? -7 * d : 8 * d;
}

static void test_closed_form(void)
{
	/* the variant W = W0 / a (columns), x = x0 * a: the best scales are a (up to a constant), and with them
	 * Q(W s)/s = W exactly. x_mean is set so that the ratio 0.5 candidate is a: x_mean = a² w_mean K. */
	float w0[OUT * IN], w[OUT * IN], x[N * IN], s[IN];
	double a[IN], wm[IN], wm2[IN], xm[IN];
	grid_weight(w0, 0.01f);
	for (int i = 0; i < IN; i++)
		a[i] = i == 5 || i == 40 || i == 41 ? 32 : 1;
	for (int o = 0; o < OUT; o++)
		for (int i = 0; i < IN; i++)
			w[o * IN + i] = (float)(w0[o * IN + i] / a[i]);
	w_mean_ref(w, OUT, IN, G, wm);
	float *ws[1] = {w};
	int outs[1] = {OUT};
	lmd_awq_weight_mean(ws, outs, 1, IN, G, wm2);
	for (int i = 0; i < IN; i++) {
		CHECK_NEAR(wm2[i], wm[i], 1e-6);
		xm[i] = a[i] * a[i] * wm[i] * 3;
	}
	for (int r = 0; r < N; r++)
		for (int i = 0; i < IN; i++)
			x[r * IN + i] = (float)(urand() < 0.5 ? -xm[i] : xm[i]);
	struct lin l = {x, N, IN, OUT};
	struct lmd_err err = {0};
	double ratio = 0, loss = -1, loss1 = -1, y2 = 0;
	float y[N * OUT];
	lin_fwd(&l, ws, y, &err);
	for (int k = 0; k < N * OUT; k++)
		y2 += (double)y[k] * y[k] / (N * OUT);
	CHECK_EQ_INT(lmd_awq_search(ws, outs, 1, IN, G, 4, xm, lin_fwd, &l, N * OUT, s, &ratio, &loss, &loss1, &err), 0);
	CHECK_NEAR(ratio, 0.5, 1e-9);
	CHECK(loss < 1e-6 * y2);    /* exact but for the 1e-4 in the formula */
	CHECK(loss1 > 1e-3 * y2);   /* round-to-nearest loses the outlier channels */
	for (int i = 0; i < IN; i++)
		CHECK_NEAR(s[i] / s[0], a[i] / a[0], 1e-3 * a[i]);
}

static void test_s1_wins(void)
{
	/* W on its exact grid, x anything: s = 1 is exact, every ratio's uneven scales are not */
	float w[OUT * IN], x[N * IN], s[IN];
	double xm[IN] = {0};
	grid_weight(w, 0.02f);
	for (int r = 0; r < N; r++)
		for (int i = 0; i < IN; i++) {
			x[r * IN + i] = (float)(grand() * (1 + i % 7));
			xm[i] += fabs(x[r * IN + i]) / N;
		}
	float *ws[1] = {w};
	int outs[1] = {OUT};
	struct lin l = {x, N, IN, OUT};
	struct lmd_err err = {0};
	double ratio = 0, loss = -1;
	CHECK_EQ_INT(lmd_awq_search(ws, outs, 1, IN, G, 4, xm, lin_fwd, &l, N * OUT, s, &ratio, &loss, NULL, &err), 0);
	CHECK_NEAR(ratio, -1, 0);
	CHECK(loss < 1e-12);
	for (int i = 0; i < IN; i++)
		CHECK_NEAR(s[i], 1, 0);
}

static void test_search_linear(struct lmd_backend *be)
{
	/* the search on the Gram matrix against the search on the rows: the same losses, the same pick */
	float w[OUT * IN], x[N * IN], s[IN], s2[IN], gm[IN * IN];
	double xm[IN] = {0};
	for (int k = 0; k < OUT * IN; k++)
		w[k] = (float)(grand() * (k % IN == 3 ? 0.05 : 1));  /* a column an outlier input feeds */
	for (int r = 0; r < N; r++)
		for (int i = 0; i < IN; i++) {
			x[r * IN + i] = (float)(grand() * (i == 3 ? 20 : 1 + i % 5));
			xm[i] += fabs(x[r * IN + i]) / N;
		}
	float *ws[1] = {w};
	int outs[1] = {OUT};
	struct lin l = {x, N, IN, OUT};
	struct lmd_err err = {0};
	double ratio = 0, ratio2 = 1, loss = -1, loss2 = -2, loss1 = -1, loss12 = -2;
	CHECK_EQ_INT(lmd_awq_search(ws, outs, 1, IN, G, 4, xm, lin_fwd, &l, N * OUT, s, &ratio, &loss, &loss1, &err), 0);
	CHECK_EQ_INT(lmd_awq_gram(be, x, N, IN, IN, gm, &err), 0);
	for (int i = 0; i < IN; i++)  /* the Gram matrix by its definition */
		for (int j = 0; j < IN; j += 7) {
			double e = 0, a = 0;
			for (int r = 0; r < N; r++)
				e += (double)x[r * IN + i] * x[r * IN + j], a += fabs((double)x[r * IN + i] * x[r * IN + j]);
			CHECK_NEAR(gm[i * IN + j], e, 1e-5 * a);
		}
	CHECK_EQ_INT(lmd_awq_search_linear(be, w, OUT, IN, G, 4, xm, gm, N, s2, &ratio2, &loss2, &loss12, &err), 0);
	CHECK_NEAR(ratio2, ratio, 0);
	CHECK(ratio > 0);
	CHECK_NEAR(loss2, loss, 1e-4 * loss);
	CHECK_NEAR(loss12, loss1, 1e-4 * loss1);
	for (int i = 0; i < IN; i++)
		CHECK_NEAR(s2[i], s[i], 0);
}

/* group quantization of v[n] by its definition (awq.h), in double */
static void quant_ref(const double *v, int n, double *dq)
{
	double mn = v[0], mx = v[0];
	for (int i = 1; i < n; i++)
		mn = fmin(mn, v[i]), mx = fmax(mx, v[i]);
	float sc = fmaxf((float)(mx - mn), 1e-5f) / 15;
	float z = fminf(fmaxf(-roundf((float)mn / sc), 0), 15);
	for (int i = 0; i < n; i++)
		dq[i] = (fminf(fmaxf(roundf((float)v[i] / sc) + z, 0), 15) - z) * sc;
}

static void test_clip(struct lmd_backend *be)
{
	enum { CO = 12, CI = 96, CG = 32, CN = 40 };
	float w[CO * CI], w0[CO * CI], x[CN * CI], mv[CO * (CI / CG)];
	for (int k = 0; k < CO * CI; k++)
		w[k] = w0[k] = (float)(grand() * (k % 11 == 0 ? 4 : 1));  /* a few large weights: clipping pays */
	for (int k = 0; k < CN * CI; k++)
		x[k] = (float)grand();
	struct lmd_err err = {0};
	CHECK_EQ_INT(lmd_awq_clip(be, w, CO, CI, CG, 4, x, CN, mv, &err), 0);
	int shrunk = 0;
	for (int o = 0; o < CO; o++)
		for (int gi = 0; gi < CI / CG; gi++) {
			const float *wg = w0 + o * CI + gi * CG;
			double org = 0, best = 1e300, bm = 0, v[CG], dq[CG];
			for (int i = 0; i < CG; i++)
				org = fmax(org, fabs(wg[i]));
			for (int k = 0; k < 10; k++) {  /* brute force: every shrink, the error by its definition */
				double m = (float)org * (float)(1 - k / 20.0), e = 0;
				for (int i = 0; i < CG; i++)
					v[i] = fmin(fmax(wg[i], -m), m);
				quant_ref(v, CG, dq);
				for (int r = 0; r < CN; r++) {
					double d = 0;
					for (int i = 0; i < CG; i++)
						d += (double)x[r * CI + gi * CG + i] * (wg[i] - dq[i]);
					e += d * d / CN;
				}
				if (e < best * (1 - 1e-9))
					best = e, bm = m;
			}
			shrunk += bm < org;
			CHECK_NEAR(mv[o * (CI / CG) + gi], bm, 1e-6 * org);
			for (int i = 0; i < CG; i++)
				CHECK_NEAR(w[o * CI + gi * CG + i], fmin(fmax(wg[i], -bm), bm), 1e-6 * org);
		}
	CHECK(shrunk > 0);
}

/* GPTQ the straightforward way: the inverse Hessian in full, updated after each quantized column */
static void gptq_ref(const float *w, int out, int in, const double *h0, int g, int act, double damp, double *deq)
{
	double *h = malloc(sizeof(double) * in * in), *hi = malloc(sizeof(double) * in * in);
	double *ww = malloc(sizeof(double) * out * in), *gs = malloc(sizeof(double) * out * (in / g));
	double *gz = malloc(sizeof(double) * out * (in / g));
	int *ord = malloc(sizeof(int) * in), *done = calloc((size_t)in, sizeof(int));
	double mean = 0;
	memcpy(h, h0, sizeof(double) * in * in);
	for (int k = 0; k < out * in; k++)
		ww[k] = w[k];
	for (int i = 0; i < in; i++)
		mean += h[i * in + i] / in, ord[i] = i;
	for (int i = 0; i < in; i++)
		h[i * in + i] += damp * mean;
	if (act)  /* decreasing diagonal (of the undamped Hessian), stable */
		for (int i = 1; i < in; i++)
			for (int j = i; j > 0 && h0[ord[j] * in + ord[j]] > h0[ord[j - 1] * in + ord[j - 1]]; j--) {
				int t = ord[j];
				ord[j] = ord[j - 1], ord[j - 1] = t;
			}
	/* Gauss-Jordan inverse */
	for (int i = 0; i < in; i++)
		for (int j = 0; j < in; j++)
			hi[i * in + j] = i == j;
	for (int c = 0; c < in; c++) {
		double p = h[c * in + c];
		for (int j = 0; j < in; j++)
			h[c * in + j] /= p, hi[c * in + j] /= p;
		for (int r = 0; r < in; r++)
			if (r != c) {
				double f = h[r * in + c];
				for (int j = 0; j < in; j++)
					h[r * in + j] -= f * h[c * in + j], hi[r * in + j] -= f * hi[c * in + j];
			}
	}
	/* scale and zero: lmd_quant_groups's formulas with the scale rounded to fp16 */
#define PARAMS(o, gi) do { \
		double mn = ww[(o) * in + (gi) * g], mx = mn; \
		for (int j = 1; j < g; j++) mn = fmin(mn, ww[(o) * in + (gi) * g + j]), mx = fmax(mx, ww[(o) * in + (gi) * g + j]); \
		float sc = lmd_f16_to_f32(lmd_f32_to_f16(fmaxf((float)(mx - mn), 1e-5f) / 15)); \
		gs[(o) * (in / g) + (gi)] = sc, gz[(o) * (in / g) + (gi)] = fminf(fmaxf(-roundf((float)mn / sc), 0), 15); \
	} while (0)
	if (act)
		for (int o = 0; o < out; o++)
			for (int gi = 0; gi < in / g; gi++)
				PARAMS(o, gi);
	for (int t = 0; t < in; t++) {
		int c = ord[t];
		double d = hi[c * in + c];
		for (int o = 0; o < out; o++) {
			if (!act && c % g == 0)
				PARAMS(o, c / g);
			double sc = gs[o * (in / g) + c / g], z = gz[o * (in / g) + c / g];
			double q = (fmin(fmax(roundf((float)(ww[o * in + c] / sc)) + z, 0), 15) - z) * sc;
			double e = (ww[o * in + c] - q) / d;
			deq[o * in + c] = q;
			ww[o * in + c] = q;
			for (int j = 0; j < in; j++)
				if (!done[j] && j != c)
					ww[o * in + j] -= e * hi[c * in + j];
		}
		done[c] = 1;
		for (int i = 0; i < in; i++)  /* remove column c from the inverse */
			for (int j = 0; j < in; j++)
				if (i != c && j != c)
					hi[i * in + j] -= hi[i * in + c] * hi[c * in + j] / d;
		for (int j = 0; j < in; j++)
			hi[c * in + j] = hi[j * in + c] = 0;
		hi[c * in + c] = 1;
	}
#undef PARAMS
	free(h), free(hi), free(ww), free(gs), free(gz), free(ord), free(done);
}

static void test_gptq(int act)
{
	enum { GO = 6, GI = 48, GG = 16, GN = 80 };
	float w[GO * GI], wc[GO * GI], x[GN * GI], deq[GO * GI], rtn[GO * GI];
	double h[GI * GI], hc[GI * GI], ref[GO * GI];
	for (int k = 0; k < GO * GI; k++)
		w[k] = (float)grand();
	for (int r = 0; r < GN; r++) {
		double common = grand();
		for (int i = 0; i < GI; i++)  /* correlated inputs of uneven size: where the feedback pays */
			x[r * GI + i] = (float)((grand() + common) * (1 + i % 5));
	}
	for (int i = 0; i < GI; i++)
		for (int j = 0; j < GI; j++) {
			double a = 0;
			for (int r = 0; r < GN; r++)
				a += (double)x[r * GI + i] * x[r * GI + j];
			h[i * GI + j] = 2 * a / GN;
		}
	memcpy(hc, h, sizeof(h));
	memcpy(wc, w, sizeof(w));
	uint8_t q[GI * GO], z[GI / GG * GO];
	float s[GI / GG * GO];
	struct lmd_err err = {0};
	CHECK_EQ_INT(lmd_gptq(wc, GO, GI, hc, GG, 4, act, 0.01, q, z, s, deq, &err), 0);
	gptq_ref(w, GO, GI, h, GG, act, 0.01, ref);
	double worst = 0;
	for (int k = 0; k < GO * GI; k++)
		worst = fmax(worst, fabs(deq[k] - ref[k]));
	CHECK(worst < 1e-4);
	/* q, zero and scale are what deq is made of (the AutoAWQ layout's q [in][out]) */
	for (int o = 0; o < GO; o++)
		for (int i = 0; i < GI; i++)
			CHECK_NEAR(deq[o * GI + i], (q[i * GO + o] - z[i / GG * GO + o]) * s[i / GG * GO + o], 1e-6);
	/* and it beats round-to-nearest on the calibration rows' outputs */
	lmd_quant_groups(w, GO, GI, GG, 4, NULL, NULL, NULL, rtn);
	double eg = 0, er = 0;
	for (int r = 0; r < GN; r++)
		for (int o = 0; o < GO; o++) {
			double a = 0, b = 0;
			for (int i = 0; i < GI; i++)
				a += x[r * GI + i] * ((double)w[o * GI + i] - deq[o * GI + i]),
				b += x[r * GI + i] * ((double)w[o * GI + i] - rtn[o * GI + i]);
			eg += a * a, er += b * b;
		}
	CHECK(eg < 0.9 * er);
}

/* --- GPTQ of a layer, true-sequential, against the layer written plainly (HF Llama) --- */

enum { LH = 32, LHEADS = 2, LKV = 1, LD = 16, LI = 64, LG = 16, LT = 16, LN = 64 };

static void norm_ref(const double *h, const float *g, double *x)
{
	for (int r = 0; r < LN; r++) {
		double ss = 0;
		for (int i = 0; i < LH; i++)
			ss += h[r * LH + i] * h[r * LH + i];
		for (int i = 0; i < LH; i++)
			x[r * LH + i] = h[r * LH + i] / sqrt(ss / LH + 1e-5) * g[i];
	}
}

static void lin_ref(const double *x, const float *w, int in, int out, double *y)
{
	for (int r = 0; r < LN; r++)
		for (int o = 0; o < out; o++) {
			double a = 0;
			for (int i = 0; i < in; i++)
				a += x[r * in + i] * w[o * in + i];
			y[r * out + o] = a;
		}
}

static void rope_ref(double *v, int pos)  /* one head's [LD], rotate-half, theta 10000 */
{
	for (int j = 0; j < LD / 2; j++) {
		double a = pos * pow(10000.0, -2.0 * j / LD), x0 = v[j], x1 = v[j + LD / 2];
		v[j] = x0 * cos(a) - x1 * sin(a), v[j + LD / 2] = x1 * cos(a) + x0 * sin(a);
	}
}

/* causal attention per window of LT tokens, the kv head shared by LHEADS / LKV query heads: att [LN][LHEADS*LD] */
static void att_ref(const double *x, const float *wq, const float *wk, const float *wv, double *att)
{
	static double q[LN * LHEADS * LD], k[LN * LKV * LD], v[LN * LKV * LD];
	lin_ref(x, wq, LH, LHEADS * LD, q), lin_ref(x, wk, LH, LKV * LD, k), lin_ref(x, wv, LH, LKV * LD, v);
	for (int r = 0; r < LN; r++) {
		for (int h = 0; h < LHEADS; h++)
			rope_ref(q + (r * LHEADS + h) * LD, r % LT);
		for (int h = 0; h < LKV; h++)
			rope_ref(k + (r * LKV + h) * LD, r % LT);
	}
	for (int r = 0; r < LN; r++)
		for (int h = 0; h < LHEADS; h++) {
			int kv = h / (LHEADS / LKV), s0 = r / LT * LT;
			double p[LT], mx = -INFINITY, sum = 0;
			for (int j = s0; j <= r; j++) {
				double a = 0;
				for (int d = 0; d < LD; d++)
					a += q[(r * LHEADS + h) * LD + d] * k[(j * LKV + kv) * LD + d];
				p[j - s0] = a / sqrt(LD), mx = fmax(mx, p[j - s0]);
			}
			for (int j = s0; j <= r; j++)
				sum += p[j - s0] = exp(p[j - s0] - mx);
			for (int d = 0; d < LD; d++) {
				double a = 0;
				for (int j = s0; j <= r; j++)
					a += p[j - s0] / sum * v[(j * LKV + kv) * LD + d];
				att[(r * LHEADS + h) * LD + d] = a;
			}
		}
}

/* GPTQ of w [out][in] on the rows x [LN][in] (Hessian 2/n Σ x xᵀ): its dequantized values into wq */
static void gptq_on(const double *x, const float *w, int out, int in, float *wq)
{
	double *h = malloc((size_t)in * in * sizeof(double));
	for (int i = 0; i < in; i++)
		for (int j = 0; j < in; j++) {
			double a = 0;
			for (int r = 0; r < LN; r++)
				a += x[r * in + i] * x[r * in + j];
			h[i * in + j] = 2 * a / LN;
		}
	struct lmd_err err = {0};
	memcpy(wq, w, (size_t)out * in * sizeof(float));
	CHECK_EQ_INT(lmd_gptq(wq, out, in, h, LG, 4, 0, 0.01, NULL, NULL, NULL, NULL, &err), 0);
	free(h);
}

static double rel(const float *a, const float *b, int n)
{
	double d = 0, s = 0;
	for (int i = 0; i < n; i++)
		d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), s += (double)b[i] * b[i];
	return sqrt(d / s);
}

static void test_gptq_layer(struct lmd_backend *be)
{
	const int HQ = LHEADS * LD, HK = LKV * LD, outs[7] = {HQ, HK, HK, LH, LI, LI, LH}, ins[7] = {LH, LH, LH, HQ, LH, LH, LI};
	struct lmd_config c = {.hidden = LH, .inter = LI, .layers = 1, .heads = LHEADS, .kv_heads = LKV, .head_dim = LD,
			       .max_pos = 64, .rms_eps = 1e-5, .rope = {.type = LMD_ROPE_DEFAULT, .theta = 10000, .factor = 1}};
	float *w0[7], *w[7], *ref[7], an[LH], fn[LH];
	for (int k = 0; k < 7; k++) {
		w0[k] = malloc((size_t)outs[k] * ins[k] * sizeof(float)), w[k] = malloc((size_t)outs[k] * ins[k] * sizeof(float));
		ref[k] = malloc((size_t)outs[k] * ins[k] * sizeof(float));
		for (int i = 0; i < outs[k] * ins[k]; i++)
			w0[k][i] = w[k][i] = (float)(grand() / sqrt(ins[k]));
	}
	for (int i = 0; i < LH; i++)
		an[i] = (float)(0.5 + urand()), fn[i] = (float)(0.5 + urand());
	static float h[LN * LH];
	static double hd[LN * LH], x[LN * LH], att[LN * LHEADS * LD], y[LN * LI], u[LN * LI];
	for (int i = 0; i < LN * LH; i++)
		hd[i] = h[i] = (float)(grand() * (1 + i % LH % 3));
	struct lmd_awq_layer L = {an, fn, w[0], w[1], w[2], w[3], w[4], w[6], w[5], NULL, NULL, NULL, NULL};
	struct lmd_awq_opts o = {.bits = 4, .group_size = LG, .method = LMD_QUANT_GPTQ, .damp = 0.01};
	struct lmd_qgroups q[7] = {0};
	struct lmd_err err = {0};
	CHECK_EQ_INT(lmd_gptq_layer(be, &c, &L, h, LN, LT, &o, q, &err), 0);
	/* the reference: each linear's rows made by the linears quantized before it */
	norm_ref(hd, an, x);
	for (int k = 0; k < 3; k++)
		gptq_on(x, w0[k], outs[k], LH, ref[k]);
	att_ref(x, ref[0], ref[1], ref[2], att);
	gptq_on(att, w0[3], LH, HQ, ref[3]);
	float wo_fp[LH * LHEADS * LD];  /* what o would be with its rows from the unquantized q, k, v */
	static double att0[LN * LHEADS * LD];
	att_ref(x, w0[0], w0[1], w0[2], att0);
	gptq_on(att0, w0[3], LH, HQ, wo_fp);
	lin_ref(att, ref[3], HQ, LH, y);
	for (int i = 0; i < LN * LH; i++)
		hd[i] += y[i];
	norm_ref(hd, fn, x);
	gptq_on(x, w0[4], LI, LH, ref[4]), gptq_on(x, w0[5], LI, LH, ref[5]);
	lin_ref(x, ref[4], LH, LI, y), lin_ref(x, ref[5], LH, LI, u);
	for (int i = 0; i < LN * LI; i++)
		y[i] = y[i] / (1 + exp(-y[i])) * u[i];
	gptq_on(y, w0[6], LH, LI, ref[6]);
	static double d2[LN * LH];
	lin_ref(y, ref[6], LI, LH, d2);
	for (int k = 0; k < 7; k++) {
		CHECK(rel(w[k], ref[k], outs[k] * ins[k]) < 1e-3);
		for (int i = 0; i < ins[k]; i++)  /* the int4 values are the weights left in L */
			for (int oo = 0; oo < outs[k]; oo++) {
				int gi = i / LG * outs[k] + oo;
				CHECK_NEAR(w[k][oo * ins[k] + i], (q[k].q[i * outs[k] + oo] - q[k].zero[gi]) * q[k].scale[gi], 1e-5);
			}
	}
	CHECK(rel(w[3], ref[3], LH * HQ) < 0.1 * rel(wo_fp, ref[3], LH * HQ));  /* o saw the quantized q, k, v */
	double e = 0, s2 = 0;
	for (int i = 0; i < LN * LH; i++)
		e += (h[i] - hd[i] - d2[i]) * (h[i] - hd[i] - d2[i]), s2 += (hd[i] + d2[i]) * (hd[i] + d2[i]);
	CHECK(e / s2 < 1e-8);  /* h left the quantized layer */
	for (int k = 0; k < 7; k++)
		free(w0[k]), free(w[k]), free(ref[k]), lmd_qgroups_free(&q[k]);
}

/* --- cross-layer equalization --- */

enum { EQ_HQ = LHEADS * LD };

/* the norm of column j of the nw linears w[k] [outs[k]][in] stacked */
static double col_norm(float *const *w, const int *outs, int nw, int in, int j)
{
	double e = 0;
	for (int k = 0; k < nw; k++)
		for (int o = 0; o < outs[k]; o++)
			e += (double)w[k][o * in + j] * w[k][o * in + j];
	return sqrt(e);
}

static double row_norm(const float *w, int in, int j)
{
	double e = 0;
	for (int i = 0; i < in; i++)
		e += (double)w[j * in + i] * w[j * in + i];
	return sqrt(e);
}

static void mul_col(float *w, int out, int in, int j, double f)
{
	for (int o = 0; o < out; o++)
		w[o * in + j] = (float)(w[o * in + j] * f);
}

static void mul_row(float *w, int in, int j, double f)
{
	for (int i = 0; i < in; i++)
		w[j * in + i] = (float)(w[j * in + i] * f);
}

/* r[p][j] = producer / consumer of channel j of site p (awq.h's table), written from the definition */
static void eq_ratios(int kv, float *const w[7], const float *an, const float *fn, double r[4][LI])
{
	const int KV = kv * LD, oq[3] = {EQ_HQ, KV, KV}, o13[2] = {LI, LI}, oh[1] = {LH};
	for (int j = 0; j < LH; j++)
		r[0][j] = fabs(an[j]) / col_norm(w, oq, 3, LH, j), r[2][j] = fabs(fn[j]) / col_norm(w + 4, o13, 2, LH, j);
	for (int j = 0; j < KV && kv == LHEADS; j++)
		r[1][j] = row_norm(w[2], LH, j) / col_norm(w + 3, oh, 1, EQ_HQ, j);
	for (int j = 0; j < LI; j++)
		r[3][j] = row_norm(w[5], LH, j) / col_norm(w + 6, oh, 1, LI, j);
}

/* wq wk wv wo w1 w3 w2 (as test_gptq_layer) with kv KV heads, balanced as weight decay leaves a layer: every ratio 1 ± 10 % */
static void eq_layer(int kv, float *w[7], float *an, float *fn)
{
	const int KV = kv * LD, outs[7] = {EQ_HQ, KV, KV, LH, LI, LI, LH}, ins[7] = {LH, LH, LH, EQ_HQ, LH, LH, LI};
	for (int k = 0; k < 7; k++)
		for (int i = 0; i < outs[k] * ins[k]; i++)
			w[k][i] = (float)(grand() / sqrt(ins[k]));
	for (int j = 0; j < LH; j++)
		an[j] = (float)((0.5 + urand()) * (j % 5 ? 1 : -1)), fn[j] = (float)(0.5 + urand());
	for (int j = 0; j < LH; j++) {
		double fq = fabs(an[j]) * (0.9 + 0.2 * urand()) / col_norm(w, outs, 3, LH, j);
		double f13 = fn[j] * (0.9 + 0.2 * urand()) / col_norm(w + 4, outs + 4, 2, LH, j);
		for (int k = 0; k < 3; k++)
			mul_col(w[k], outs[k], LH, j, fq);
		mul_col(w[4], LI, LH, j, f13), mul_col(w[5], LI, LH, j, f13);
	}
	for (int j = 0; j < KV && kv == LHEADS; j++)
		mul_col(w[3], LH, EQ_HQ, j, row_norm(w[2], LH, j) * (0.9 + 0.2 * urand()) / col_norm(w + 3, outs + 3, 1, EQ_HQ, j));
	for (int j = 0; j < LI; j++)
		mul_col(w[6], LH, LI, j, row_norm(w[5], LH, j) * (0.9 + 0.2 * urand()) / col_norm(w + 6, outs + 6, 1, LI, j));
}

/* the layer written plainly (HF Llama, GQA as att_ref): out [LN][LH] from h [LN][LH] */
static void layer_ref(const double *h, float *const w[7], const float *an, const float *fn, double *out)
{
	static double x[LN * LH], att[LN * EQ_HQ], y[LN * LH], g[LN * LI], u[LN * LI];
	norm_ref(h, an, x);
	att_ref(x, w[0], w[1], w[2], att);
	lin_ref(att, w[3], EQ_HQ, LH, y);
	for (int i = 0; i < LN * LH; i++)
		out[i] = h[i] + y[i];
	norm_ref(out, fn, x);
	lin_ref(x, w[4], LH, LI, g), lin_ref(x, w[5], LH, LI, u);
	for (int i = 0; i < LN * LI; i++)
		g[i] = g[i] / (1 + exp(-g[i])) * u[i];
	lin_ref(g, w[6], LI, LH, y);
	for (int i = 0; i < LN * LH; i++)
		out[i] += y[i];
}

static double maxrel(const double *a, const double *b, int n)
{
	double d = 0, m = 0;
	for (int i = 0; i < n; i++)
		d = fmax(d, fabs(a[i] - b[i])), m = fmax(m, fabs(b[i]));
	return d / m;
}

/*
 * A balanced layer with channels planted as make_outlier.py plants them (norm weight or producer row × α,
 * the consumers' columns ÷ α): exactly those move, by about α, the layer computes the same, the ratios
 * are balanced again and the calibration rows divided match; without GQA v -> o too. A balanced layer
 * is left bit for bit.
 */
static void test_equalize(int kv)
{
	const int KV = kv * LD, outs[7] = {EQ_HQ, KV, KV, LH, LI, LI, LH}, ins[7] = {LH, LH, LH, EQ_HQ, LH, LH, LI};
	struct lmd_config c = {.hidden = LH, .inter = LI, .layers = 1, .heads = LHEADS, .kv_heads = kv, .head_dim = LD,
			       .max_pos = 64, .rms_eps = 1e-5, .rope = {.type = LMD_ROPE_DEFAULT, .theta = 10000, .factor = 1}};
	float *w[7], *w0[7], an[LH], fn[LH], an0[LH], fn0[LH], *sc[4];
	int moved[4];
	for (int k = 0; k < 7; k++)
		w[k] = malloc((size_t)outs[k] * ins[k] * sizeof(float)), w0[k] = malloc((size_t)outs[k] * ins[k] * sizeof(float));
	struct lmd_awq_layer L = {an, fn, w[0], w[1], w[2], w[3], w[4], w[6], w[5], NULL, NULL, NULL, NULL};
	struct lmd_err err = {0};
	static double r[4][LI], h[LN * LH], y0[LN * LH], y1[LN * LH];
	eq_layer(kv, w, an, fn);
	eq_ratios(kv, w, an, fn, r);
	for (int j = 0; j < LH; j++)
		CHECK(r[0][j] > 0.8 && r[0][j] < 1.25 && r[2][j] > 0.8 && r[2][j] < 1.25);
	/* balanced: nothing moves, bit for bit */
	for (int k = 0; k < 7; k++)
		memcpy(w0[k], w[k], (size_t)outs[k] * ins[k] * sizeof(float));
	memcpy(an0, an, sizeof(an)), memcpy(fn0, fn, sizeof(fn));
	CHECK_EQ_INT(lmd_awq_equalize(&c, &L, 2, sc, moved, &err), 0);
	CHECK(kv == LHEADS ? sc[1] != NULL : sc[1] == NULL);
	for (int p = 0; p < 4; p++) {
		CHECK_EQ_INT(moved[p], 0);
		for (int j = 0; sc[p] && j < (p == 1 ? EQ_HQ : p == 3 ? LI : LH); j++)
			CHECK(sc[p][j] == 1);
		free(sc[p]);
	}
	for (int k = 0; k < 7; k++)
		CHECK(!memcmp(w0[k], w[k], (size_t)outs[k] * ins[k] * sizeof(float)));
	CHECK(!memcmp(an0, an, sizeof(an)) && !memcmp(fn0, fn, sizeof(fn)));
	/* planted: α on 3 channels of q/k/v and gate/up, 2 of v -> o, 3 of up -> down */
	const double A = 16;
	const int cq[3] = {3, 17, 30}, co[2] = {5, 20}, c13[3] = {0, 9, 31}, c2[3] = {7, 40, 63};
	for (int i = 0; i < 3; i++) {
		an[cq[i]] *= (float)A, fn[c13[i]] *= (float)A;
		for (int k = 0; k < 3; k++)
			mul_col(w[k], outs[k], LH, cq[i], 1 / A);
		mul_col(w[4], LI, LH, c13[i], 1 / A), mul_col(w[5], LI, LH, c13[i], 1 / A);
		mul_row(w[5], LH, c2[i], A), mul_col(w[6], LH, LI, c2[i], 1 / A);
	}
	for (int i = 0; i < 2 && kv == LHEADS; i++)
		mul_row(w[2], LH, co[i], A), mul_col(w[3], LH, EQ_HQ, co[i], 1 / A);
	for (int k = 0; k < 7; k++)
		memcpy(w0[k], w[k], (size_t)outs[k] * ins[k] * sizeof(float));
	memcpy(an0, an, sizeof(an)), memcpy(fn0, fn, sizeof(fn));
	/* the q/k/v input rows of the planted layer (normalized h times an), to divide */
	for (int i = 0; i < LN * LH; i++)
		h[i] = grand() * (1 + i % LH % 3);
	static float xq[LN * LH];
	static double xd[LN * LH], yq0[LN * EQ_HQ], yq1[LN * EQ_HQ];
	norm_ref(h, an, xd);
	for (int i = 0; i < LN * LH; i++)
		xq[i] = (float)xd[i];
	lin_ref(xd, w[0], LH, EQ_HQ, yq0);
	if (kv == LKV)
		layer_ref(h, w, an, fn, y0);
	CHECK_EQ_INT(lmd_awq_equalize(&c, &L, 2, sc, moved, &err), 0);
	const int *pc[4] = {cq, co, c13, c2}, np[4] = {3, kv == LHEADS ? 2 : 0, 3, 3}, nin[4] = {LH, EQ_HQ, LH, LI};
	for (int p = 0; p < 4; p++) {
		CHECK_EQ_INT(moved[p], np[p]);
		for (int j = 0; sc[p] && j < nin[p]; j++) {
			int planted = 0;
			for (int i = 0; i < np[p]; i++)
				planted |= pc[p][i] == j;
			if (planted)
				CHECK(sc[p][j] > A / 1.2 && sc[p][j] < A * 1.2);
			else
				CHECK(sc[p][j] == 1);
		}
	}
	eq_ratios(kv, w, an, fn, r);
	for (int p = 0; p < 4; p++)
		for (int j = 0; j < (p == 1 ? (kv == LHEADS ? EQ_HQ : 0) : p == 3 ? LI : LH); j++)
			CHECK(r[p][j] > 0.7 && r[p][j] < 1.4);
	/* the function: per channel, what a producer and its consumers compute together is unchanged */
	double e = 0;
	for (int j = 0; j < LH; j++)
		for (int k = 0; k < (kv == LHEADS ? 2 : 3); k++)  /* v's rows with o's columns below */
			for (int o = 0; o < outs[k]; o++)
				e = fmax(e, fabs((double)w[k][o * LH + j] * an[j] - (double)w0[k][o * LH + j] * an0[j]));
	for (int j = 0; j < LH; j++)
		for (int o = 0; o < LI; o++)
			e = fmax(e, fabs((double)w[4][o * LH + j] * fn[j] - (double)w0[4][o * LH + j] * fn0[j]));
	for (int j = 0; j < LI; j++)
		for (int i = 0; i < LH; i++)
			for (int o = 0; o < LH; o++)
				e = fmax(e, fabs((double)w[6][o * LI + j] * w[5][j * LH + i] * fn[i] -
						 (double)w0[6][o * LI + j] * w0[5][j * LH + i] * fn0[i]));
	for (int j = 0; j < KV; j++)
		for (int i = 0; i < LH; i++)
			for (int o = 0; o < LH && kv == LHEADS; o++)
				e = fmax(e, fabs((double)w[3][o * EQ_HQ + j] * w[2][j * LH + i] * an[i] -
						 (double)w0[3][o * EQ_HQ + j] * w0[2][j * LH + i] * an0[i]));
	CHECK(e < 1e-5);
	if (kv == LKV) {  /* and the whole layer, written plainly */
		layer_ref(h, w, an, fn, y1);
		CHECK(maxrel(y1, y0, LN * LH) < 1e-5);
	}
	/* the calibration rows divided by s feed the equalized q as the rows fed the planted one */
	int64_t n[LMD_CALIB_NIN] = {LN}, cap[LMD_CALIB_NIN] = {LN};
	float *xs[LMD_CALIB_NIN] = {xq};
	struct lmd_awq_acts a = {.layers = 1, .seqlen = LT, .n = n, .cap = cap, .x = xs, .cols = {LH, EQ_HQ, LH, LI}};
	lmd_awq_equalize_data(0, sc, &a, NULL);
	for (int i = 0; i < LN * LH; i++)
		xd[i] = xq[i];
	lin_ref(xd, w[0], LH, EQ_HQ, yq1);
	CHECK(maxrel(yq1, yq0, LN * EQ_HQ) < 1e-5);
	for (int p = 0; p < 4; p++)
		free(sc[p]);
	for (int k = 0; k < 7; k++)
		free(w[k]), free(w0[k]);
}

int main(void)
{
	struct lmd_backend be = {0};
	struct lmd_err err = {0};
	if (lmd_backend_open(&be, "cpu", NULL, &err))
		return 1;
	test_closed_form();
	test_s1_wins();
	test_search_linear(&be);
	test_clip(&be);
	test_gptq(0);
	test_gptq(1);
	test_gptq_layer(&be);
	test_equalize(LKV);
	test_equalize(LHEADS);
	lmd_backend_close(&be);
	return UNIT_DONE();
}
