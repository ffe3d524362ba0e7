/* Group-wise int4 quantization, AWQ scaling and AutoAWQ gemm packing (awq.h). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "awq.h"
#include "file.h"
#include "modeldir.h"
#include "safetensors.h"
#include "autoawq.h"
#include "convert/convert.h"
#include "hfconfig.h"

void lmd_quant_groups(const float *w, int out, int in, int g, int bits, uint8_t *q, uint8_t *zero, float *scale,
		      float *deq)
{
	float qmax = (float)((1 << bits) - 1);
	for (int o = 0; o < out; o++)
		for (int g0 = 0; g0 < in; g0 += g) {
			const float *x = w + (size_t)o * in + g0;
			float mn = x[0], mx = x[0];
			for (int i = 1; i < g; i++)
				mn = x[i] < mn ? x[i] : mn, mx = x[i] > mx ? x[i] : mx;
			float d = mx - mn > 1e-5f ? mx - mn : 1e-5f, s = d / qmax;
			float z = fminf(fmaxf(-roundf(mn / s), 0), qmax);
			if (scale)
				scale[(size_t)(g0 / g) * out + o] = s;
			if (zero)
				zero[(size_t)(g0 / g) * out + o] = (uint8_t)z;
			for (int i = 0; i < g; i++) {
				float v = fminf(fmaxf(roundf(x[i] / s) + z, 0), qmax);
				if (q)
					q[(size_t)(g0 + i) * out + o] = (uint8_t)v;
				if (deq)
					deq[(size_t)o * in + g0 + i] = (v - z) * s;
			}
		}
}

/* --- captured activations --- */

int lmd_awq_acts_init(struct lmd_awq_acts *a, const struct lmd_config *c, int rows, int stride, struct lmd_err *err)
{
	memset(a, 0, sizeof(*a));
	a->layers = c->layers, a->rows = rows, a->stride = stride > 0 ? stride : 1;
	a->cols[LMD_CALIB_QKV] = c->hidden, a->cols[LMD_CALIB_O] = c->heads * c->head_dim;
	a->cols[LMD_CALIB_W13] = c->hidden, a->cols[LMD_CALIB_W2] = c->inter;
	int n = c->layers * LMD_CALIB_NIN;
	a->seen = calloc((size_t)n, sizeof(*a->seen));
	a->n = calloc((size_t)n, sizeof(*a->n));
	a->x = calloc((size_t)n, sizeof(*a->x));
	for (int i = 0; a->x && i < n; i++)
		if (!(a->x[i] = malloc((size_t)rows * a->cols[i % LMD_CALIB_NIN] * sizeof(float))))
			break;
	if (!a->seen || !a->n || !a->x || !a->x[n - 1]) {
		lmd_awq_acts_free(a);
		return lmd_errorf(err, LMD_ENOMEM, "out of memory for %d activation rows", rows);
	}
	return LMD_OK;
}

void lmd_awq_acts_free(struct lmd_awq_acts *a)
{
	for (int i = 0; a->x && i < a->layers * LMD_CALIB_NIN; i++)
		free(a->x[i]);
	free(a->x);
	free(a->n);
	free(a->seen);
	memset(a, 0, sizeof(*a));
}

void lmd_awq_acts_tap(void *ctx, int layer, enum lmd_tap point, const struct lmd_tensor *t)
{
	struct lmd_awq_acts *a = ctx;
	int w = point == LMD_TAP_QKV_IN ? LMD_CALIB_QKV : point == LMD_TAP_O_IN ? LMD_CALIB_O
		: point == LMD_TAP_W13_IN ? LMD_CALIB_W13 : point == LMD_TAP_W2_IN ? LMD_CALIB_W2 : -1;
	if (w < 0)
		return;
	int k = layer * LMD_CALIB_NIN + w, cols = a->cols[w];
	size_t es = lmd_dtype_size(t->dtype);
	for (int r = 0; r < (int)t->shape[0] && a->n[k] < a->rows; r++, a->seen[k]++)
		if (a->seen[k] % a->stride == 0)
			lmd_dtype_convert(a->x[k] + (size_t)a->n[k]++ * cols, LMD_F32,
					  (const char *)t->data + (size_t)r * t->shape[1] * es, t->dtype, (size_t)cols, NULL);
}

/* --- the model's weights as f32 --- */

struct wset {
	int n;
	char **name;
	float **w;
	int64_t (*shape)[2];
	int *ndim;
};

static float *wget(struct wset *s, const char *name)
{
	for (int i = 0; i < s->n; i++)
		if (!strcmp(s->name[i], name))
			return s->w[i];
	return NULL;
}

struct load_ctx {
	struct wset *s;
	const struct lmd_modeldir *md;
	struct lmd_err *err;
};

static int load_one(const char *name, const int64_t *shape, int ndim, int split_axis, void *ctx)
{
	(void)split_axis;
	struct load_ctx *c = ctx;
	struct wset *s = c->s;
	struct lmd_tensor t;
	void *owned = NULL;
	int rc = lmd_modeldir_gather(c->md, name, &t, &owned, c->err);
	if (rc)
		return rc;
	int64_t n = lmd_tensor_numel(&t);
	float *w = malloc((size_t)n * sizeof(float));
	if (!w) {
		free(owned);
		return lmd_errorf(c->err, LMD_ENOMEM, "out of memory");
	}
	lmd_dtype_convert(w, LMD_F32, t.data, t.dtype, (size_t)n, NULL);
	free(owned);
	s->name[s->n] = strdup(name);
	s->w[s->n] = w;
	s->ndim[s->n] = ndim;
	s->shape[s->n][0] = shape[0];
	s->shape[s->n][1] = ndim > 1 ? shape[1] : 1;
	s->n++;
	return LMD_OK;
}

static int count_one(const char *name, const int64_t *shape, int ndim, int split_axis, void *ctx)
{
	(void)name, (void)shape, (void)ndim, (void)split_axis;
	(*(int *)ctx)++;
	return 0;
}

static void wset_free(struct wset *s)
{
	for (int i = 0; i < s->n; i++)
		free(s->name[i]), free(s->w[i]);
	free(s->name), free(s->w), free(s->shape), free(s->ndim);
	memset(s, 0, sizeof(*s));
}

/* --- AWQ scales --- */

/* w_mean[i]: mean over the rows of the linears of |w| / max|w| of its group (LMDeploy's weight scale). */
static void weight_mean(float *const *ws, const int *outs, int nw, int in, int g, double *wm)
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

/* s = x^r / w^(1-r), clamped at 1e-4, normalized by sqrt(max * min). */
static void ratio_scales(const double *xs, const double *wm, int in, double r, float *s)
{
	double mx = 0, mn = INFINITY;
	for (int i = 0; i < in; i++) {
		double v = pow(xs[i] > 1e-12 ? xs[i] : 1e-12, r) / pow(wm[i] > 1e-12 ? wm[i] : 1e-12, 1 - r);
		v = v < 1e-4 ? 1e-4 : v;
		s[i] = (float)v;
		mx = v > mx ? v : mx, mn = v < mn ? v : mn;
	}
	double nrm = sqrt(mx * mn);
	for (int i = 0; i < in; i++)
		s[i] = (float)(s[i] / nrm);
}

/* sum over captured rows of |x (W - Q(W s)/s)^T|² for the linears: the output error with scales s. */
static double scaled_error(float *const *ws, const int *outs, int nw, int in, int g, int bits, const float *s,
			   const float *x, int rows, float *tmp, float *deq)
{
	double e = 0;
	for (int k = 0; k < nw; k++) {
		int out = outs[k];
		for (size_t j = 0; j < (size_t)out * in; j++)
			tmp[j] = ws[k][j] * s[j % in];
		lmd_quant_groups(tmp, out, in, g, bits, NULL, NULL, NULL, deq);
		for (size_t j = 0; j < (size_t)out * in; j++)
			deq[j] = ws[k][j] - deq[j] / s[j % in];
		for (int r = 0; r < rows; r++) {
			const float *xr = x + (size_t)r * in;
			for (int o = 0; o < out; o++) {
				const float *d = deq + (size_t)o * in;
				float a[8] = {0};  /* eight partial sums: vectorizes without reassociating */
				int i = 0;
				for (; i + 8 <= in; i += 8)
					for (int k = 0; k < 8; k++)
						a[k] += xr[i + k] * d[i + k];
				float acc = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
				for (; i < in; i++)
					acc += xr[i] * d[i];
				e += (double)acc * acc;
			}
		}
	}
	return e;
}

/*
 * The scales for the input feeding linears ws (rows outs[k], in columns): LMDeploy's fixed ratio 0.5 on
 * absmax, or with acts the grid r = 0, 0.05, ..., 0.95 on absmean minimizing the linears' output error.
 * *ratio receives the ratio used.
 */
static int find_scales(float *const *ws, const int *outs, int nw, int in, const struct lmd_awq_opts *o,
		       const struct lmd_calib_in *st, const float *x, int rows, float *s, double *ratio,
		       struct lmd_err *err)
{
	double *wm = malloc((size_t)in * sizeof(double)), *xs = malloc((size_t)in * sizeof(double));
	int maxout = 0;
	for (int k = 0; k < nw; k++)
		maxout = outs[k] > maxout ? outs[k] : maxout;
	float *tmp = x ? malloc((size_t)maxout * in * sizeof(float)) : NULL;
	float *deq = x ? malloc((size_t)maxout * in * sizeof(float)) : NULL;
	float *cand = x ? malloc((size_t)in * sizeof(float)) : NULL;
	int rc = LMD_OK;
	if (!wm || !xs || (x && (!tmp || !deq || !cand))) {
		rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
		goto done;
	}
	weight_mean(ws, outs, nw, in, o->group_size, wm);
	if (!x) {
		for (int i = 0; i < in; i++)
			xs[i] = st->absmax[i];
		ratio_scales(xs, wm, in, 0.5, s);
		*ratio = 0.5;
		goto done;
	}
	for (int i = 0; i < in; i++)
		xs[i] = st->count ? st->abssum[i] / (double)st->count : 0;
	double best = INFINITY;
	for (int gi = 0; gi < 20; gi++) {
		double r = gi * 0.05;
		ratio_scales(xs, wm, in, r, cand);
		double e = scaled_error(ws, outs, nw, in, o->group_size, o->bits, cand, x, rows, tmp, deq);
		if (e < best) {
			best = e, *ratio = r;
			memcpy(s, cand, (size_t)in * sizeof(float));
		}
	}
done:
	free(wm), free(xs), free(tmp), free(deq), free(cand);
	return rc;
}

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

/* --- writing --- */

struct outset {
	int n, cap;
	char **names;
	struct lmd_tensor *t;
	void **bufs;
};

static int out_add(struct outset *o, const char *name, enum lmd_dtype dt, int ndim, int64_t d0, int64_t d1, void *buf,
		   struct lmd_err *err)
{
	if (!buf)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	if (o->n == o->cap) {
		int cap = o->cap ? o->cap * 2 : 64;
		char **nn = realloc(o->names, (size_t)cap * sizeof(*nn));
		if (nn)
			o->names = nn;
		struct lmd_tensor *nt = realloc(o->t, (size_t)cap * sizeof(*nt));
		if (nt)
			o->t = nt;
		void **nb = realloc(o->bufs, (size_t)cap * sizeof(*nb));
		if (nb)
			o->bufs = nb;
		if (!nn || !nt || !nb) {
			free(buf);
			return lmd_errorf(err, LMD_ENOMEM, "out of memory");
		}
		o->cap = cap;
	}
	o->names[o->n] = strdup(name);
	o->t[o->n] = (struct lmd_tensor){.dtype = dt, .ndim = ndim, .shape = {d0, d1}, .data = buf};
	o->bufs[o->n] = buf;
	o->n++;
	return LMD_OK;
}

static void outset_free(struct outset *o)
{
	for (int i = 0; i < o->n; i++)
		free(o->names[i]), free(o->bufs[i]);
	free(o->names), free(o->t), free(o->bufs);
	memset(o, 0, sizeof(*o));
}

static uint16_t *to_f16(const float *w, size_t n)
{
	uint16_t *h = malloc(n * sizeof(*h));
	for (size_t i = 0; h && i < n; i++)
		h[i] = lmd_f32_to_f16(w[i]);
	return h;
}

/* HF name stem of a canonical linear ("model.layers.0.self_attn.q_proj") */
static void hf_stem(const struct lmd_config *c, const char *canon, char *out, size_t n)
{
	lmd_hf_name(c, canon, out, n);
	char *dot = strrchr(out, '.');
	if (dot)
		*dot = 0;
}

static int add_quantized(struct outset *os, const struct lmd_config *c, const char *canon, const float *w, int out,
			 int in, const struct lmd_awq_opts *o, struct lmd_err *err)
{
	int g = o->group_size, ng = in / g;
	uint8_t *q = malloc((size_t)in * out), *z = malloc((size_t)ng * out);
	float *s = malloc((size_t)ng * out * sizeof(float));
	int rc = !q || !z || !s ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	char stem[160], name[192];
	hf_stem(c, canon, stem, sizeof(stem));
	if (!rc) {
		lmd_quant_groups(w, out, in, g, o->bits, q, z, s, NULL);
		int32_t *qw = malloc((size_t)in * (out / 8) * sizeof(int32_t)), *qz = malloc((size_t)ng * (out / 8) * sizeof(int32_t));
		if (qw)
			lmd_awq_pack(q, in, out, qw);
		if (qz)
			lmd_awq_pack(z, ng, out, qz);
		snprintf(name, sizeof(name), "%s.qweight", stem);
		rc = out_add(os, name, LMD_I32, 2, in, out / 8, qw, err);
		snprintf(name, sizeof(name), "%s.qzeros", stem);
		if (!rc)
			rc = out_add(os, name, LMD_I32, 2, ng, out / 8, qz, err);
		else
			free(qz);
		snprintf(name, sizeof(name), "%s.scales", stem);
		if (!rc)
			rc = out_add(os, name, LMD_F16, 2, ng, out, to_f16(s, (size_t)ng * out), err);
	}
	free(q), free(z), free(s);
	return rc;
}

static int is_linear(const char *canon)
{
	const char *d = strrchr(canon, '.');
	static const char *lin[] = {"wq", "wk", "wv", "wo", "w1", "w2", "w3"};
	for (size_t i = 0; d && i < sizeof(lin) / sizeof(lin[0]); i++)
		if (!strcmp(d + 1, lin[i]))
			return 1;
	return 0;
}

static int write_config(const struct lmd_modeldir *md, const char *dir, const struct lmd_awq_opts *o,
			struct lmd_err *err)
{
	char *src = lmd_path_join(md->path, "config.json", err), *dst = lmd_path_join(dir, "config.json", err);
	json_error_t je;
	json_t *cfg = src ? json_load_file(src, 0, &je) : NULL;
	int rc = LMD_OK;
	if (!src || !dst)
		rc = LMD_ENOMEM;
	else if (!cfg)
		rc = lmd_errorf(err, LMD_EFORMAT, "'%s': %s (line %d)", src, je.text, je.line);
	else {
		json_t *q = json_object();
		json_object_set_new(q, "quant_method", json_string("awq"));
		json_object_set_new(q, "version", json_string("gemm"));
		json_object_set_new(q, "bits", json_integer(o->bits));
		json_object_set_new(q, "group_size", json_integer(o->group_size));
		json_object_set_new(q, "zero_point", json_true());
		json_object_set_new(q, "modules_to_not_convert", json_null());
		json_object_set_new(cfg, "quantization_config", q);
		json_object_set_new(cfg, "torch_dtype", json_string("float16"));
		if (json_dump_file(cfg, dst, JSON_INDENT(2) | JSON_SORT_KEYS))
			rc = lmd_errorf(err, LMD_EIO, "cannot write '%s'", dst);
	}
	json_decref(cfg);
	free(src), free(dst);
	return rc;
}

int lmd_awq_quantize(const char *src, const char *dst, const struct lmd_awq_opts *o,
		     const struct lmd_calib_stats *stats, const struct lmd_awq_acts *acts, int force,
		     void (*log)(void *ctx, const char *line), void *log_ctx, struct lmd_err *err)
{
	struct lmd_modeldir md = {0};
	struct wset ws = {0};
	struct outset os = {0};
	struct lmd_outdir od = {0};
	float *s = NULL;
	int rc = lmd_model_open_any(&md, src, err);
	if (rc)
		return rc;
	const struct lmd_config *c = &md.cfg;
	const int H = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim;
	char line[256];
	if (c->arch == LMD_ARCH_INTERNLM2) {
		rc = lmd_errorf(err, LMD_EINVAL, "'%s': internlm2 models are not supported by lmd-awq yet", src);
		goto done;
	}
	if (c->tp != 1) {
		rc = lmd_errorf(err, LMD_EINVAL, "'%s': split for %d ranks; quantize the unsplit model", src, c->tp);
		goto done;
	}
	/* every linear's input must split into whole groups and its outputs into words of 8 */
	for (int l = 0; l < c->layers; l++) {
		const char *nm[] = {"wq", "wk", "wv", "wo", "w1", "w3", "w2"};
		const int in[] = {c->hidden, c->hidden, c->hidden, H, c->hidden, c->hidden, c->inter};
		const int out[] = {H, KV, KV, c->hidden, c->inter, c->inter, c->hidden};
		for (int k = 0; k < 7; k++) {
			if (in[k] % o->group_size) {
				rc = lmd_errorf(err, LMD_EINVAL,
						"--w-group-size %d does not divide the %d input channels of 'layers.%d.%s'",
						o->group_size, in[k], l, nm[k]);
				goto done;
			}
			if (out[k] % 8) {
				rc = lmd_errorf(err, LMD_EINVAL, "'layers.%d.%s': %d outputs, not a multiple of 8", l, nm[k],
						out[k]);
				goto done;
			}
		}
	}
	if (stats && (rc = lmd_calib_stats_check(stats, c, o->stats_name ? o->stats_name : "--stats", err)))
		goto done;
	int nt = 0;
	lmd_config_tensors(c, count_one, &nt);
	ws.name = calloc((size_t)nt, sizeof(*ws.name));
	ws.w = calloc((size_t)nt, sizeof(*ws.w));
	ws.shape = calloc((size_t)nt, sizeof(*ws.shape));
	ws.ndim = calloc((size_t)nt, sizeof(*ws.ndim));
	int maxin = c->inter > c->hidden ? c->inter : c->hidden;
	maxin = H > maxin ? H : maxin;
	s = malloc((size_t)maxin * sizeof(float));
	if (!ws.name || !ws.w || !ws.shape || !ws.ndim || !s) {
		rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
		goto done;
	}
	struct load_ctx lc = {&ws, &md, err};
	if ((rc = lmd_config_tensors(c, load_one, &lc)))
		goto done;
	for (int l = 0; o->method == 1 && l < c->layers; l++) {
		char nb[64];
#define W(x) (snprintf(nb, sizeof(nb), "layers.%d.%s", l, x), wget(&ws, nb))
		float *an = W("attn_norm"), *fn = W("ffn_norm"), *wq = W("wq"), *wk = W("wk"), *wv = W("wv"), *wo = W("wo");
		float *w1 = W("w1"), *w2 = W("w2"), *w3 = W("w3"), *bv = c->qkv_bias ? W("bv") : NULL;
#undef W
		/* all four scales are searched on the original weights, then applied (as AutoAWQ does) */
		float *sc[4] = {0};
		double ratio[4] = {0};
		int ins[4] = {c->hidden, H, c->hidden, c->inter};
		for (int p = 0; !rc && p < 4; p++) {
			if (p == 1 && c->heads != c->kv_heads)
				continue;  /* v -> o only when v's outputs are o's inputs (no GQA) */
			float *lin[3];
			int outs[3], nw;
			if (p == 0)
				lin[0] = wq, lin[1] = wk, lin[2] = wv, outs[0] = H, outs[1] = KV, outs[2] = KV, nw = 3;
			else if (p == 1)
				lin[0] = wo, outs[0] = c->hidden, nw = 1;
			else if (p == 2)
				lin[0] = w1, lin[1] = w3, outs[0] = outs[1] = c->inter, nw = 2;
			else
				lin[0] = w2, outs[0] = c->hidden, nw = 1;
			int k = l * LMD_CALIB_NIN + p;
			const float *x = acts && acts->n[k] ? acts->x[k] : NULL;
			if (!(sc[p] = malloc((size_t)ins[p] * sizeof(float))))
				rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
			else
				rc = find_scales(lin, outs, nw, ins[p], o, &stats->in[l][p], o->search_scale ? x : NULL,
						 x ? acts->n[k] : 0, sc[p], &ratio[p], err);
		}
		if (!rc) {
			for (int i = 0; i < c->hidden; i++)
				an[i] /= sc[0][i], fn[i] /= sc[2][i];
			scale_cols(wq, H, c->hidden, sc[0]), scale_cols(wk, KV, c->hidden, sc[0]), scale_cols(wv, KV, c->hidden, sc[0]);
			if (sc[1]) {
				div_rows(wv, KV, c->hidden, sc[1]);
				if (bv)
					for (int i = 0; i < KV; i++)
						bv[i] /= sc[1][i];
				scale_cols(wo, c->hidden, H, sc[1]);
			}
			scale_cols(w1, c->inter, c->hidden, sc[2]), scale_cols(w3, c->inter, c->hidden, sc[2]);
			div_rows(w3, c->inter, c->hidden, sc[3]);
			scale_cols(w2, c->hidden, c->inter, sc[3]);
			if (log) {
				snprintf(line, sizeof(line), "layer %d: ratios qkv %.2f, o %s, w13 %.2f, w2 %.2f", l, ratio[0],
					 sc[1] ? "scaled" : "-", ratio[2], ratio[3]);
				if (sc[1])
					snprintf(line, sizeof(line), "layer %d: ratios qkv %.2f, o %.2f, w13 %.2f, w2 %.2f", l,
						 ratio[0], ratio[1], ratio[2], ratio[3]);
				log(log_ctx, line);
			}
		}
		for (int p = 0; p < 4; p++)
			free(sc[p]);
		if (rc)
			goto done;
	}
	/* the output tensors: quantized linears, everything else in fp16 */
	for (int i = 0; !rc && i < ws.n; i++) {
		char hf[160];
		int out = (int)ws.shape[i][0], in = (int)ws.shape[i][1];
		if (is_linear(ws.name[i]))
			rc = add_quantized(&os, c, ws.name[i], ws.w[i], out, in, o, err);
		else {
			lmd_hf_name(c, ws.name[i], hf, sizeof(hf));
			rc = out_add(&os, hf, LMD_F16, ws.ndim[i], ws.shape[i][0], ws.shape[i][1],
				     to_f16(ws.w[i], (size_t)out * (ws.ndim[i] > 1 ? in : 1)), err);
		}
	}
	if (rc || (rc = lmd_outdir_open(&od, dst, src, force, err)))
		goto done;
	char *st = lmd_path_join(od.tmp, "model.safetensors", err);
	rc = st ? lmd_safetensors_write(st, (const char *const *)os.names, os.t, os.n, "{\"format\": \"pt\"}", err)
		: LMD_ENOMEM;
	free(st);
	if (!rc)
		rc = write_config(&md, od.tmp, o, err);
	const char *side[] = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
			      "generation_config.json"};
	for (size_t i = 0; !rc && i < sizeof(side) / sizeof(side[0]); i++) {
		char *a = lmd_path_join(md.path, side[i], err), *b = lmd_path_join(od.tmp, side[i], err);
		if (!a || !b)
			rc = LMD_ENOMEM;
		else if (lmd_exists(a))
			rc = lmd_copy_file(a, b, err);
		free(a), free(b);
	}
	if (!rc)
		rc = lmd_outdir_commit(&od, force, err);
	else
		lmd_outdir_abort(&od);
done:
	free(s);
	outset_free(&os);
	wset_free(&ws);
	lmd_modeldir_close(&md);
	return rc;
}
