/*
 * AWQ as AutoAWQ runs it (awq.h): the calibration activations, the scale search on the output of the
 * block the scaled linears feed, and the clipping search.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "awq.h"
#include "engine/model.h"
#include "engine/ops-cpu.h"

/* --- captured activations --- */

int lmd_awq_acts_init(struct lmd_awq_acts *a, const struct lmd_config *c, int seqlen, struct lmd_err *err)
{
	memset(a, 0, sizeof(*a));
	a->layers = c->layers, a->seqlen = seqlen;
	a->cols[LMD_CALIB_QKV] = c->hidden, a->cols[LMD_CALIB_O] = c->heads * c->head_dim;
	a->cols[LMD_CALIB_W13] = c->hidden, a->cols[LMD_CALIB_W2] = c->inter;
	size_t n = (size_t)c->layers * LMD_CALIB_NIN;
	a->n = calloc(n, sizeof(*a->n)), a->cap = calloc(n, sizeof(*a->cap)), a->x = calloc(n, sizeof(*a->x));
	if (!a->n || !a->cap || !a->x) {
		lmd_awq_acts_free(a);
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	}
	return LMD_OK;
}

void lmd_awq_acts_free(struct lmd_awq_acts *a)
{
	for (int i = 0; a->x && i < a->layers * LMD_CALIB_NIN; i++)
		free(a->x[i]);
	free(a->x), free(a->n), free(a->cap), free(a->resid);
	memset(a, 0, sizeof(*a));
}

/* the rows of t [rows][cols] appended to *x [*n][cols] (*cap rows allocated); -1 when out of memory */
static int append(float **x, int64_t *n, int64_t *cap, int cols, const struct lmd_tensor *t)
{
	int64_t rows = t->shape[0];
	if (*n + rows > *cap) {
		int64_t c = 2 * (*n + rows);
		float *nx = realloc(*x, (size_t)c * cols * sizeof(float));
		if (!nx)
			return -1;
		*x = nx, *cap = c;
	}
	lmd_dtype_convert(*x + (size_t)*n * cols, LMD_F32, t->data, t->dtype, (size_t)rows * cols, NULL);
	*n += rows;
	return 0;
}

void lmd_awq_acts_tap(void *ctx, int layer, enum lmd_tap point, const struct lmd_tensor *t)
{
	struct lmd_awq_acts *a = ctx;
	int w = point == LMD_TAP_QKV_IN ? LMD_CALIB_QKV : point == LMD_TAP_O_IN ? LMD_CALIB_O
		: point == LMD_TAP_W13_IN ? LMD_CALIB_W13 : point == LMD_TAP_W2_IN ? LMD_CALIB_W2 : -1;
	if (a->err)
		return;
	if (point == LMD_TAP_RESID && layer == 0)
		a->err = append(&a->resid, &a->nresid, &a->resid_cap, a->cols[LMD_CALIB_QKV], t);
	else if (w >= 0) {
		int k = layer * LMD_CALIB_NIN + w;
		a->err = append(&a->x[k], &a->n[k], &a->cap[k], a->cols[w], t);
	}
}

/* --- scale candidates --- */

void lmd_awq_weight_mean(float *const *ws, const int *outs, int nw, int in, int g, double *wm)
{
	int rows = 0;
	for (int i = 0; i < in; i++)
		wm[i] = 0;
	for (int k = 0; k < nw; k++)
		for (int o = 0; o < outs[k]; o++, rows++)
			for (int g0 = 0; g0 < in; g0 += g) {
				const float *x = ws[k] + (size_t)o * in + g0;
				float mx = 0;
				for (int i = 0; i < g; i++)
					mx = fabsf(x[i]) > mx ? fabsf(x[i]) : mx;
				for (int i = 0; i < g; i++)
					wm[g0 + i] += mx > 0 ? fabsf(x[i]) / mx : 0;
			}
	for (int i = 0; i < in; i++)
		wm[i] /= rows;
}

void lmd_awq_ratio_scales(const double *xm, const double *wm, int in, double r, double eps, float *s)
{
	double mx = 0, mn = INFINITY;
	for (int i = 0; i < in; i++) {
		double x = xm[i] > 0 ? xm[i] : 0, w = wm[i] > 0 ? wm[i] : 0;
		double v = pow(x, r) / (pow(w, 1 - r) + eps);
		v = v < 1e-4 || isnan(v) ? 1e-4 : v;
		s[i] = (float)v;
		mx = v > mx ? v : mx, mn = v < mn ? v : mn;
	}
	double nrm = sqrt(mx * mn);
	for (int i = 0; i < in; i++)
		s[i] = (float)(s[i] / nrm);
}

/* --- the search --- */

/* The loss of a candidate: the pseudo-quantized weights qw[k] -> *loss. */
typedef int (*loss_fn)(void *ctx, float *const *qw, double *loss, struct lmd_err *err);

/* The candidate loop of both searches (awq.h): the scales s = 1, then the ratios 0, 0.05, ..., 0.95. */
static int search(float *const *ws, const int *outs, int nw, int in, int g, int bits, const double *x_mean,
		  loss_fn lf, void *ctx, float *s, double *ratio, double *loss, double *loss1, struct lmd_err *err)
{
	size_t total = 0;
	for (int k = 0; k < nw; k++)
		total += (size_t)outs[k] * in;
	double *wm = malloc((size_t)in * sizeof(double));
	float *cand = malloc((size_t)in * sizeof(float)), *buf = malloc(total * sizeof(float)), *qw[8];
	int rc = !wm || !cand || !buf || nw > 8 ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	if (!rc)
		lmd_awq_weight_mean(ws, outs, nw, in, g, wm);
	for (size_t k = 0, off = 0; !rc && k < (size_t)nw; off += (size_t)outs[k] * in, k++)
		qw[k] = buf + off;
	double best = INFINITY;
	for (int c = -1; !rc && c < 20; c++) {  /* c = -1: s = 1 */
		double r = c * 0.05, e;
		if (c < 0)
			for (int i = 0; i < in; i++)
				cand[i] = 1;
		else
			lmd_awq_ratio_scales(x_mean, wm, in, r, 1e-4, cand);
		for (int k = 0; k < nw; k++) {
			size_t n = (size_t)outs[k] * in;
			for (size_t j = 0; j < n; j++)
				qw[k][j] = ws[k][j] * cand[j % in];
			lmd_quant_groups(qw[k], outs[k], in, g, bits, NULL, NULL, NULL, qw[k]);
			for (size_t j = 0; j < n; j++)
				qw[k][j] /= cand[j % in];
		}
		if ((rc = lf(ctx, qw, &e, err)))
			break;
		if (c < 0 && loss1)
			*loss1 = e;
		if (e < best) {
			best = e;
			if (ratio)
				*ratio = c < 0 ? -1 : r;
			memcpy(s, cand, (size_t)in * sizeof(float));
		}
	}
	if (!rc && loss)
		*loss = best;
	free(wm), free(cand), free(buf);
	return rc;
}

static double mse(const float *a, const float *b, size_t n)
{
	double e = 0;
	for (size_t i = 0; i < n; i++)
		e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
	return e / (double)(n ? n : 1);
}

/* the block's output against the unquantized block's */
struct blk_loss {
	lmd_awq_block_fn fwd;
	void *ctx;
	float *y0, *y;
	size_t ny;
};

static int blk_loss(void *ctx, float *const *qw, double *loss, struct lmd_err *err)
{
	struct blk_loss *b = ctx;
	int rc = b->fwd(b->ctx, qw, b->y, err);
	if (!rc)
		*loss = mse(b->y, b->y0, b->ny);
	return rc;
}

int lmd_awq_search(float *const *ws, const int *outs, int nw, int in, int g, int bits, const double *x_mean,
		   lmd_awq_block_fn fwd, void *ctx, size_t ny, float *s, double *ratio, double *loss, double *loss1,
		   struct lmd_err *err)
{
	struct blk_loss b = {fwd, ctx, malloc(ny * sizeof(float)), malloc(ny * sizeof(float)), ny};
	int rc = !b.y0 || !b.y ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : fwd(ctx, ws, b.y0, err);
	if (!rc)
		rc = search(ws, outs, nw, in, g, bits, x_mean, blk_loss, &b, s, ratio, loss, loss1, err);
	free(b.y0), free(b.y);
	return rc;
}

/* --- y = x · wᵀ (+ bias) on the backend, host f32 --- */

static int mm(struct lmd_backend *be, float *y, const float *x, int64_t n, int64_t in, const float *w, int64_t out,
	      const float *bias, struct lmd_err *err)
{
	struct lmd_tensor ty = {LMD_F32, 2, {n, out}, y}, tx = {LMD_F32, 2, {n, in}, (void *)x};
	struct lmd_tensor tw = {LMD_F32, 2, {out, in}, (void *)w}, tb = {LMD_F32, 1, {out}, (void *)bias};
	return be->ops->matmul(be->ctx, &ty, &tx, &tw, bias ? &tb : NULL, err);
}

int lmd_awq_gram(struct lmd_backend *be, const float *x, int64_t n, int in, int64_t stride, float *gm,
		 struct lmd_err *err)
{
	float *xt = malloc((size_t)in * n * sizeof(float));
	if (!xt)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	for (int64_t r = 0; r < n; r++)
		for (int i = 0; i < in; i++)
			xt[(size_t)i * n + r] = x[(size_t)r * stride + i];
	int rc = mm(be, gm, xt, in, n, xt, in, NULL, err);
	free(xt);
	return rc;
}

/*
 * A linear's output error is linear in its weights: x·w - x·qw = x·d, so its mean square over the n
 * rows and out outputs is Σ_o d_oᵀ G d_o / (n·out) with G = Σ x xᵀ: out·in² per candidate, not n·out·in.
 */
struct gram_loss {
	struct lmd_backend *be;
	const float *w, *gm;
	float *d, *dg;
	int64_t n;
	int out, in;
};

static int gram_loss(void *ctx, float *const *qw, double *loss, struct lmd_err *err)
{
	struct gram_loss *q = ctx;
	size_t m = (size_t)q->out * q->in;
	for (size_t j = 0; j < m; j++)
		q->d[j] = q->w[j] - qw[0][j];
	int rc = mm(q->be, q->dg, q->d, q->out, q->in, q->gm, q->in, NULL, err);  /* dg = d · G (G symmetric) */
	double e = 0;
	for (size_t j = 0; !rc && j < m; j++)
		e += (double)q->d[j] * q->dg[j];
	*loss = e / ((double)q->n * q->out);
	return rc;
}

int lmd_awq_search_linear(struct lmd_backend *be, float *w, int out, int in, int g, int bits, const double *x_mean,
			  const float *gm, int64_t n, float *s, double *ratio, double *loss, double *loss1,
			  struct lmd_err *err)
{
	struct gram_loss q = {be, w, gm, malloc((size_t)out * in * sizeof(float)),
			      malloc((size_t)out * in * sizeof(float)), n, out, in};
	int rc = !q.d || !q.dg ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	float *ws[1] = {w};
	if (!rc)
		rc = search(ws, &out, 1, in, g, bits, x_mean, gram_loss, &q, s, ratio, loss, loss1, err);
	free(q.d), free(q.dg);
	return rc;
}

/* --- clipping --- */

/*
 * The error of a clipped group is linear in the weights: x·w - x·Q(w') = x·d with d = w - Q(w'), so its
 * mean square over the rows is dᵀ G d / n with G = Σ x xᵀ the group's Gram matrix [g][g], taken once:
 * each of the ten shrinks costs out·g² instead of n·out·g.
 */
int lmd_awq_clip(struct lmd_backend *be, float *w, int out, int in, int g, int bits, const float *x, int n,
		 float *maxv, struct lmd_err *err)
{
	int ng = in / g;
	float *gm = malloc((size_t)g * g * sizeof(float));
	float *d = malloc((size_t)out * g * sizeof(float)), *gd = malloc((size_t)out * g * sizeof(float));
	float *org = malloc((size_t)out * sizeof(float)), *best = malloc((size_t)out * sizeof(float));
	double *emin = malloc((size_t)out * sizeof(double));
	int rc = !gm || !d || !gd || !org || !best || !emin ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	for (int gi = 0; !rc && gi < ng; gi++) {
		if ((rc = lmd_awq_gram(be, x + (size_t)gi * g, n, g, in, gm, err)))
			break;
		for (int o = 0; o < out; o++) {
			const float *wr = w + (size_t)o * in + (size_t)gi * g;
			float m = 0;
			for (int i = 0; i < g; i++)
				m = fabsf(wr[i]) > m ? fabsf(wr[i]) : m;
			org[o] = best[o] = m, emin[o] = 1e9;
		}
		for (int k = 0; !rc && k < 10; k++) {
			for (int o = 0; o < out; o++) {
				const float *wr = w + (size_t)o * in + (size_t)gi * g;
				float m = org[o] * (float)(1 - k / 20.0);
				for (int i = 0; i < g; i++)
					d[(size_t)o * g + i] = fminf(fmaxf(wr[i], -m), m);
			}
			lmd_quant_groups(d, out, g, g, bits, NULL, NULL, NULL, d);
			for (int o = 0; o < out; o++)
				for (int i = 0; i < g; i++)
					d[(size_t)o * g + i] = w[(size_t)o * in + (size_t)gi * g + i] - d[(size_t)o * g + i];
			if ((rc = mm(be, gd, d, out, g, gm, g, NULL, err)))  /* gd = d · G (G symmetric) */
				break;
			for (int o = 0; o < out; o++) {
				double e = 0;
				for (int i = 0; i < g; i++)
					e += (double)d[(size_t)o * g + i] * gd[(size_t)o * g + i];
				if (e / n < emin[o])
					emin[o] = e / n, best[o] = org[o] * (float)(1 - k / 20.0);
			}
		}
		for (int o = 0; !rc && o < out; o++) {
			float *wr = w + (size_t)o * in + (size_t)gi * g;
			for (int i = 0; i < g; i++)
				wr[i] = fminf(fmaxf(wr[i], -best[o]), best[o]);
			if (maxv)
				maxv[(size_t)o * ng + gi] = best[o];
		}
	}
	free(gm), free(d), free(gd), free(org), free(best), free(emin);
	return rc;
}

/* --- the blocks --- */

/* the MLP: y = w2 · (silu(w1 · x) * (w3 · x)), w2 unquantized; g keeps w2's input. */
struct mlp_blk {
	struct lmd_backend *be;
	const float *x, *w2;
	int n, hidden, inter;
	float *g, *u;  /* [n][inter] */
};

static int mlp_init(struct mlp_blk *m, struct lmd_backend *be, const struct lmd_config *c, const float *x,
		    const float *w2, int n, struct lmd_err *err)
{
	*m = (struct mlp_blk){.be = be, .x = x, .w2 = w2, .n = n, .hidden = c->hidden, .inter = c->inter};
	m->g = malloc((size_t)n * c->inter * sizeof(float)), m->u = malloc((size_t)n * c->inter * sizeof(float));
	return !m->g || !m->u ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
}

static void mlp_free(struct mlp_blk *m)
{
	free(m->g), free(m->u);
}

static int mlp_fwd(void *ctx, float *const *w, float *y, struct lmd_err *err)
{
	struct mlp_blk *c = ctx;
	int rc = mm(c->be, c->g, c->x, c->n, c->hidden, w[0], c->inter, NULL, err);
	if (!rc)
		rc = mm(c->be, c->u, c->x, c->n, c->hidden, w[1], c->inter, NULL, err);
	for (size_t i = 0; !rc && i < (size_t)c->n * c->inter; i++)
		c->g[i] = c->g[i] / (1 + expf(-c->g[i])) * c->u[i];
	return rc ? rc : mm(c->be, y, c->g, c->n, c->inter, c->w2, c->hidden, NULL, err);
}

enum { ATT_ROWS = 64 };  /* query rows per product: each block of them sees the keys up to its last */

/*
 * Attention: q, k, v of the windows of T tokens (positions 0..T-1), rotary, causal softmax attention
 * per window (att keeps it: wo's input), then wo (unquantized).
 */
struct att_blk {
	struct lmd_backend *be;
	const struct lmd_config *c;
	const float *x, *wo, *bo;
	int n, T;
	float *wqkv, *bqkv;           /* [(H + 2KV) D][hidden], NULL or [(H + 2KV) D] */
	float *qkv, *att;             /* [n][(H + 2KV) D], [n][H D] */
	float *qh, *kh, *vt, *vl, *sc, *oh;  /* [T][D], [T][D], [D][T], [D][T], [ATT_ROWS][T], [T][D] */
	float *freq;                  /* [D / 2] */
	int32_t *pos, *seq;           /* [n] */
	struct lmd_step step;
	struct lmd_attn_dims dims;
};

static void att_free(struct att_blk *a)
{
	free(a->wqkv), free(a->bqkv), free(a->qkv), free(a->att), free(a->qh), free(a->kh), free(a->vt), free(a->vl);
	free(a->sc);
	free(a->oh), free(a->freq), free(a->pos), free(a->seq);
}

/* the attention block of layer L on the n rows x [n][hidden] (windows of T) */
/* (att_free frees it, also after a failure) */
static int att_init(struct att_blk *a, struct lmd_backend *be, const struct lmd_config *c,
		    const struct lmd_awq_layer *L, const float *x, int n, int T, struct lmd_err *err)
{
	const int H = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim, D = c->head_dim;
	*a = (struct att_blk){.be = be, .c = c, .x = x, .wo = L->wo, .bo = L->bo, .n = n, .T = T};
	a->wqkv = malloc((size_t)(H + 2 * KV) * c->hidden * sizeof(float));
	a->qkv = malloc((size_t)n * (H + 2 * KV) * sizeof(float)), a->att = malloc((size_t)n * H * sizeof(float));
	a->qh = malloc((size_t)T * D * sizeof(float)), a->kh = malloc((size_t)T * D * sizeof(float));
	a->vt = malloc((size_t)T * D * sizeof(float)), a->oh = malloc((size_t)T * D * sizeof(float));
	a->vl = malloc((size_t)T * D * sizeof(float));
	a->sc = malloc((size_t)ATT_ROWS * T * sizeof(float)), a->freq = malloc((size_t)(D / 2) * sizeof(float));
	a->pos = malloc((size_t)n * sizeof(int32_t)), a->seq = calloc((size_t)n, sizeof(int32_t));
	if (L->bq && (a->bqkv = malloc((size_t)(H + 2 * KV) * sizeof(float)))) {
		memcpy(a->bqkv, L->bq, (size_t)H * sizeof(float));
		memcpy(a->bqkv + H, L->bk, (size_t)KV * sizeof(float));
		memcpy(a->bqkv + H + KV, L->bv, (size_t)KV * sizeof(float));
	}
	if (!a->wqkv || !a->qkv || !a->att || !a->qh || !a->kh || !a->vt || !a->vl || !a->oh || !a->sc || !a->freq || !a->pos ||
	    !a->seq || (L->bq && !a->bqkv))
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");  /* the caller's att_free frees what there is */
	lmd_rope_inv_freq(&c->rope, D, c->max_pos, T, a->freq);
	for (int i = 0; i < n; i++)
		a->pos[i] = i % T;
	a->step = (struct lmd_step){.n = n, .pos = a->pos, .seq = a->seq, .nseq = 1, .rot_half = D / 2,
				    .inv_freq = a->freq};
	a->dims = (struct lmd_attn_dims){c->heads, c->kv_heads, D, (float)(1 / sqrt((double)D))};
	return LMD_OK;
}

static int att_fwd(void *ctx, float *const *w, float *y, struct lmd_err *err)
{
	struct att_blk *a = ctx;
	const struct lmd_config *c = a->c;
	int H = c->heads, KV = c->kv_heads, D = c->head_dim, T = a->T, cols = (H + 2 * KV) * D;
	size_t hd = (size_t)c->hidden;
	memcpy(a->wqkv, w[0], (size_t)H * D * hd * sizeof(float));
	memcpy(a->wqkv + (size_t)H * D * hd, w[1], (size_t)KV * D * hd * sizeof(float));
	memcpy(a->wqkv + (size_t)(H + KV) * D * hd, w[2], (size_t)KV * D * hd * sizeof(float));
	int rc = mm(a->be, a->qkv, a->x, a->n, c->hidden, a->wqkv, cols, a->bqkv, err);
	if (rc)
		return rc;
	struct lmd_tensor t = {LMD_F32, 2, {a->n, cols}, a->qkv};
	lmd_cpu_rope(&t, &a->dims, &a->step);
	for (int s0 = 0; !rc && s0 < a->n; s0 += T)
		for (int h = 0; !rc && h < H; h++) {
			int kv = h / (H / KV);
			for (int i = 0; i < T; i++) {
				const float *r = a->qkv + (size_t)(s0 + i) * cols;
				memcpy(a->qh + (size_t)i * D, r + (size_t)h * D, (size_t)D * sizeof(float));
				memcpy(a->kh + (size_t)i * D, r + (size_t)(H + kv) * D, (size_t)D * sizeof(float));
				for (int d = 0; d < D; d++)
					a->vt[(size_t)d * T + i] = r[(size_t)(H + KV + kv) * D + d];
			}
			/* causal: rows i0..i0+nb-1 see the keys 0..i0+nb-1 only */
			for (int i0 = 0; !rc && i0 < T; i0 += ATT_ROWS) {
				int nb = T - i0 < ATT_ROWS ? T - i0 : ATT_ROWS, len = i0 + nb;
				if ((rc = mm(a->be, a->sc, a->qh + (size_t)i0 * D, nb, D, a->kh, len, NULL, err)))
					break;
				for (int i = 0; i < nb; i++) {
					float *r = a->sc + (size_t)i * len, mx = -INFINITY, sum = 0;
					for (int j = 0; j <= i0 + i; j++)
						r[j] *= a->dims.scale, mx = r[j] > mx ? r[j] : mx;
					for (int j = 0; j <= i0 + i; j++)
						sum += r[j] = expf(r[j] - mx);
					for (int j = 0; j < len; j++)
						r[j] = j <= i0 + i ? r[j] / sum : 0;
				}
				for (int d = 0; d < D; d++)
					memcpy(a->vl + (size_t)d * len, a->vt + (size_t)d * T, (size_t)len * sizeof(float));
				rc = mm(a->be, a->oh + (size_t)i0 * D, a->sc, nb, len, a->vl, D, NULL, err);
			}
			if (rc)
				break;
			for (int i = 0; i < T; i++)
				memcpy(a->att + (size_t)(s0 + i) * H * D + (size_t)h * D, a->oh + (size_t)i * D,
				       (size_t)D * sizeof(float));
		}
	return rc ? rc : mm(a->be, y, a->att, a->n, H * D, a->wo, c->hidden, a->bo, err);
}

/* --- one layer --- */

static void scale_cols(float *w, int out, int in, const float *s)
{
	for (int o = 0; o < out; o++)
		for (int i = 0; i < in; i++)
			w[(size_t)o * in + i] *= s[i];
}

static void div_rows(float *w, int out, int in, const float *s)
{
	for (int o = 0; o < out; o++)
		for (int i = 0; i < in; i++)
			w[(size_t)o * in + i] /= s[o];
}

void lmd_awq_apply(const struct lmd_config *c, struct lmd_awq_layer *L, float *const sc[4])
{
	const int H = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim;
	for (int i = 0; i < c->hidden; i++)
		L->attn_norm[i] /= sc[0][i], L->ffn_norm[i] /= sc[2][i];
	scale_cols(L->wq, H, c->hidden, sc[0]), scale_cols(L->wk, KV, c->hidden, sc[0]);
	scale_cols(L->wv, KV, c->hidden, sc[0]);
	if (sc[1]) {
		div_rows(L->wv, KV, c->hidden, sc[1]);
		for (int i = 0; L->bv && i < KV; i++)
			L->bv[i] /= sc[1][i];
		scale_cols(L->wo, c->hidden, H, sc[1]);
	}
	scale_cols(L->w1, c->inter, c->hidden, sc[2]), scale_cols(L->w3, c->inter, c->hidden, sc[2]);
	div_rows(L->w3, c->inter, c->hidden, sc[3]);
	scale_cols(L->w2, c->hidden, c->inter, sc[3]);
}

/* x_mean of input p of layer l: the statistics' mean |x| when there are some, else the rows'. */
static void x_mean(const struct lmd_awq_acts *a, const struct lmd_calib_stats *st, int l, int p, double *xm)
{
	int k = l * LMD_CALIB_NIN + p, cols = a->cols[p];
	if (st && st->in[l][p].count) {
		for (int i = 0; i < cols; i++)
			xm[i] = st->in[l][p].abssum[i] / (double)st->in[l][p].count;
		return;
	}
	for (int i = 0; i < cols; i++)
		xm[i] = 0;
	for (int64_t r = 0; r < a->n[k]; r++)
		for (int i = 0; i < cols; i++)
			xm[i] += fabsf(a->x[k][(size_t)r * cols + i]);
	for (int i = 0; i < cols; i++)
		xm[i] /= (double)(a->n[k] ? a->n[k] : 1);
}

/*
 * Clip w [out][in] on about 4096 rows of input p sampled evenly as AutoAWQ does (it takes 512: on these
 * models 4096 lowered KLD by 2% at some seconds more), divided by the scales s (NULL: none).
 */
static int clip_on(struct lmd_backend *be, const struct lmd_awq_acts *a, int l, int p, const float *s, float *w,
		   int out, int g, int bits, struct lmd_err *err)
{
	int k = l * LMD_CALIB_NIN + p, in = a->cols[p];
	int64_t n = a->n[k], step = n / 4096 > 0 ? n / 4096 : 1, m = (n + step - 1) / step;
	float *x = malloc((size_t)m * in * sizeof(float));
	if (!x)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	for (int64_t r = 0; r < m; r++)
		for (int i = 0; i < in; i++)
			x[(size_t)r * in + i] = a->x[k][(size_t)(r * step) * in + i] / (s ? s[i] : 1);
	int rc = lmd_awq_clip(be, w, out, in, g, bits, x, (int)m, NULL, err);
	free(x);
	return rc;
}

int lmd_awq_layer(struct lmd_backend *be, const struct lmd_config *c, int l, struct lmd_awq_layer *L,
		  const struct lmd_awq_acts *a, const struct lmd_calib_stats *st, const struct lmd_awq_opts *o,
		  char *line, size_t len, struct lmd_err *err)
{
	const int H = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim, T = a->seqlen;
	const int g = o->group_size, b = o->bits;
	int64_t avail = a->n[l * LMD_CALIB_NIN + LMD_CALIB_QKV];
	int64_t lim = o->search_rows > 0 && o->search_rows < avail ? o->search_rows : avail;
	int n = (int)(lim / T * T);
	if (n < T)
		n = (int)(avail / T * T);
	if (n < T)
		return lmd_errorf(err, LMD_EINVAL, "layer %d: fewer calibration rows (%lld) than one window of %d", l,
				  (long long)avail, T);
	int maxc = c->inter > c->hidden ? c->inter : c->hidden;
	maxc = H > maxc ? H : maxc;
	double *xm = malloc((size_t)maxc * sizeof(double)), ratio[4] = {-2, -2, -2, -2}, loss[4] = {0}, loss1[4] = {0};
	float *sc[4] = {0}, *gm = malloc((size_t)maxc * maxc * sizeof(float));  /* a Gram matrix */
	struct att_blk at = {0};
	struct mlp_blk mb = {0};
	int rc = !xm || !gm ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	if (!rc)
		rc = att_init(&at, be, c, L, a->x[l * LMD_CALIB_NIN + LMD_CALIB_QKV], n, T, err);
	if (!rc)
		rc = mlp_init(&mb, be, c, a->x[l * LMD_CALIB_NIN + LMD_CALIB_W13], L->w2, n, err);
	/* all four scales are searched on the original weights, then applied (as AutoAWQ does) */
	for (int p = 0; !rc && p < LMD_CALIB_NIN; p++) {
		if (p == LMD_CALIB_O && c->heads != c->kv_heads)
			continue;  /* v -> o only when v's outputs are o's inputs (no GQA) */
		int in = a->cols[p], k = l * LMD_CALIB_NIN + p;
		if (!(sc[p] = malloc((size_t)in * sizeof(float)))) {
			rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
			break;
		}
		if (o->no_search) {
			for (int i = 0; i < in; i++)
				sc[p][i] = 1;
			continue;
		}
		x_mean(a, st, l, p, xm);
		if (p == LMD_CALIB_QKV) {
			float *ws[3] = {L->wq, L->wk, L->wv};
			int outs[3] = {H, KV, KV};
			rc = lmd_awq_search(ws, outs, 3, in, g, b, xm, att_fwd, &at, (size_t)n * c->hidden, sc[p], &ratio[p],
					    &loss[p], &loss1[p], err);
		} else if (p == LMD_CALIB_W13) {
			float *ws[2] = {L->w1, L->w3};
			int outs[2] = {c->inter, c->inter};
			rc = lmd_awq_search(ws, outs, 2, in, g, b, xm, mlp_fwd, &mb, (size_t)n * c->hidden, sc[p], &ratio[p],
					    &loss[p], &loss1[p], err);
		} else {  /* v -> o, up -> down: the linear itself, on the Gram matrix of its input */
			rc = lmd_awq_gram(be, a->x[k], n, in, in, gm, err);
			if (!rc)
				rc = lmd_awq_search_linear(be, p == LMD_CALIB_O ? L->wo : L->w2, c->hidden, in, g, b, xm, gm, n,
							   sc[p], &ratio[p], &loss[p], &loss1[p], err);
		}
	}
	if (!rc)
		lmd_awq_apply(c, L, sc);
	/* the clipping search on the scaled weights and inputs: every linear but q and k */
	if (!rc && !o->no_clip) {
		rc = clip_on(be, a, l, LMD_CALIB_QKV, sc[0], L->wv, KV, g, b, err);
		if (!rc)
			rc = clip_on(be, a, l, LMD_CALIB_O, sc[1], L->wo, c->hidden, g, b, err);
		if (!rc)
			rc = clip_on(be, a, l, LMD_CALIB_W13, sc[2], L->w1, c->inter, g, b, err);
		if (!rc)
			rc = clip_on(be, a, l, LMD_CALIB_W13, sc[2], L->w3, c->inter, g, b, err);
		if (!rc)
			rc = clip_on(be, a, l, LMD_CALIB_W2, sc[3], L->w2, c->hidden, g, b, err);
	}
	if (!rc && line) {
		char r[4][16];
		for (int p = 0; p < 4; p++)
			snprintf(r[p], sizeof(r[p]), ratio[p] < -1.5 ? "-" : ratio[p] < 0 ? "s=1" : "%.2f", ratio[p]);
		snprintf(line, len, "layer %d: ratios qkv %s, o %s, w13 %s, w2 %s; block error / s=1's: %.3f %.3f %.3f %.3f%s",
			 l, r[0], r[1], r[2], r[3], loss1[0] > 0 ? loss[0] / loss1[0] : 1, loss1[1] > 0 ? loss[1] / loss1[1] : 1,
			 loss1[2] > 0 ? loss[2] / loss1[2] : 1, loss1[3] > 0 ? loss[3] / loss1[3] : 1,
			 o->no_clip ? "" : "; clipped");
	}
	for (int p = 0; p < 4; p++)
		free(sc[p]);
	free(xm), free(gm);
	att_free(&at), mlp_free(&mb);
	return rc;
}

/* --- GPTQ, true-sequential --- */

void lmd_qgroups_free(struct lmd_qgroups *q)
{
	free(q->q), free(q->zero), free(q->scale);
	memset(q, 0, sizeof(*q));
}

/* GPTQ of w [out][in] with the Hessian hs [in][in] (copied to hw first) into q; w becomes its dequantized values */
static int gptq_one(float *w, int out, int in, const double *hs, double *hw, const struct lmd_awq_opts *o,
		    struct lmd_qgroups *q, struct lmd_err *err)
{
	int ng = in / o->group_size;
	q->q = malloc((size_t)in * out), q->zero = malloc((size_t)ng * out);
	q->scale = malloc((size_t)ng * out * sizeof(float));
	if (!q->q || !q->zero || !q->scale)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	memcpy(hw, hs, (size_t)in * in * sizeof(double));
	return lmd_gptq(w, out, in, hw, o->group_size, o->bits, o->act_order, o->damp, q->q, q->zero, q->scale, NULL,
			err);
}

/* xn [n][hidden] = rmsnorm(h) · g; h += y when y is not NULL (first) */
static void add_norm(const struct lmd_config *c, float *xn, float *h, const float *y, const float *g, int n)
{
	for (size_t i = 0; y && i < (size_t)n * c->hidden; i++)
		h[i] += y[i];
	struct lmd_tensor tx = {LMD_F32, 2, {n, c->hidden}, xn}, th = {LMD_F32, 2, {n, c->hidden}, h};
	struct lmd_tensor tg = {LMD_F32, 1, {c->hidden}, (void *)g};
	lmd_cpu_rmsnorm(&tx, &th, &tg, (float)c->rms_eps);
}

int lmd_gptq_layer(struct lmd_backend *be, const struct lmd_config *c, struct lmd_awq_layer *L, float *h, int n,
		   int T, const struct lmd_awq_opts *o, struct lmd_qgroups q[7], struct lmd_err *err)
{
	const int H = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim, hd = c->hidden;
	int maxin = c->inter > hd ? c->inter : hd;
	maxin = H > maxin ? H : maxin;
	float *xn = malloc((size_t)n * hd * sizeof(float)), *y = malloc((size_t)n * hd * sizeof(float));
	double *hs = malloc((size_t)maxin * maxin * sizeof(double)), *hw = malloc((size_t)maxin * maxin * sizeof(double));
	struct att_blk at = {0};
	struct mlp_blk mb = {0};
	int rc = !xn || !y || !hs || !hw ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	if (!rc)
		rc = att_init(&at, be, c, L, xn, n, T, err);
	if (!rc)
		rc = mlp_init(&mb, be, c, xn, L->w2, n, err);
	float *wqkv[3] = {L->wq, L->wk, L->wv}, *w13[2] = {L->w1, L->w3};
	/* q, k, v on the attention norm's output */
	if (!rc) {
		add_norm(c, xn, h, NULL, L->attn_norm, n);
		rc = lmd_gptq_hessian(be, xn, n, hd, hs, err);
	}
	for (int k = 0; !rc && k < 3; k++)
		rc = gptq_one(wqkv[k], k ? KV : H, hd, hs, hw, o, &q[k], err);
	/* o on the attention output of the quantized q, k, v */
	if (!rc)
		rc = att_fwd(&at, wqkv, y, err);
	if (!rc)
		rc = lmd_gptq_hessian(be, at.att, n, H, hs, err);
	if (!rc)
		rc = gptq_one(L->wo, hd, H, hs, hw, o, &q[3], err);
	if (!rc)
		rc = mm(be, y, at.att, n, H, L->wo, hd, L->bo, err);
	/* gate and up on the MLP norm's output, down on their product */
	if (!rc) {
		add_norm(c, xn, h, y, L->ffn_norm, n);
		rc = lmd_gptq_hessian(be, xn, n, hd, hs, err);
	}
	for (int k = 0; !rc && k < 2; k++)
		rc = gptq_one(w13[k], c->inter, hd, hs, hw, o, &q[4 + k], err);
	if (!rc)
		rc = mlp_fwd(&mb, w13, y, err);
	if (!rc)
		rc = lmd_gptq_hessian(be, mb.g, n, c->inter, hs, err);
	if (!rc)
		rc = gptq_one(L->w2, hd, c->inter, hs, hw, o, &q[6], err);
	if (!rc)
		rc = mm(be, y, mb.g, n, c->inter, L->w2, hd, NULL, err);
	for (size_t i = 0; !rc && i < (size_t)n * hd; i++)
		h[i] += y[i];
	free(xn), free(y), free(hs), free(hw);
	att_free(&at), mlp_free(&mb);
	return rc;
}
