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

/* --- LMDeploy's fixed smoothing and GPTQ --- */

/* LMDeploy's smoothing without search: s = absmax^0.5 / w_mean^0.5 for the nw linears ws sharing input st. */
static int fixed_scales(float *const *ws, const int *outs, int nw, int in, int g, const struct lmd_calib_in *st,
			float *s, struct lmd_err *err)
{
	double *wm = malloc((size_t)in * sizeof(double)), *xs = malloc((size_t)in * sizeof(double));
	if (!wm || !xs) {
		free(wm), free(xs);
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	}
	lmd_awq_weight_mean(ws, outs, nw, in, g, wm);
	for (int i = 0; i < in; i++)
		xs[i] = st->absmax[i];
	lmd_awq_ratio_scales(xs, wm, in, 0.5, 0, s);
	free(wm), free(xs);
	return LMD_OK;
}

static int fixed_layer(const struct lmd_config *c, struct lmd_awq_layer *L, const struct lmd_calib_in *st,
		       const struct lmd_awq_opts *o, struct lmd_err *err)
{
	const int H = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim;
	float *sc[4] = {0};  /* sc[1] stays NULL under GQA */
	int ins[4] = {c->hidden, H, c->hidden, c->inter}, rc = LMD_OK;
	for (int p = 0; !rc && p < 4; p++) {
		if (p == 1 && c->heads != c->kv_heads)
			continue;  /* v -> o only when v's outputs are o's inputs (no GQA) */
		float *lin[3] = {L->wq, L->wk, L->wv};
		int outs[3] = {H, KV, KV}, nw = 3;
		if (p == 1)
			lin[0] = L->wo, outs[0] = c->hidden, nw = 1;
		else if (p == 2)
			lin[0] = L->w1, lin[1] = L->w3, outs[0] = outs[1] = c->inter, nw = 2;
		else if (p == 3)
			lin[0] = L->w2, outs[0] = c->hidden, nw = 1;
		if (!(sc[p] = malloc((size_t)ins[p] * sizeof(float))))
			rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
		else
			rc = fixed_scales(lin, outs, nw, ins[p], o->group_size, &st[p], sc[p], err);
	}
	if (!rc)
		lmd_awq_apply(c, L, sc);
	for (int p = 0; p < 4; p++)
		free(sc[p]);
	return rc;
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

/* Add w [out][in]'s three tensors: its values pre when not NULL, else RTN's. */
static int add_quantized(struct outset *os, const struct lmd_config *c, const char *canon, const float *w, int out,
			 int in, const struct lmd_qgroups *pre, const struct lmd_awq_opts *o, struct lmd_err *err)
{
	int g = o->group_size, ng = in / g;
	uint8_t *q = malloc((size_t)in * out), *z = malloc((size_t)ng * out);
	float *s = malloc((size_t)ng * out * sizeof(float));
	int rc = !q || !z || !s ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	char stem[160], name[192];
	hf_stem(c, canon, stem, sizeof(stem));
	if (!rc && pre) {
		memcpy(q, pre->q, (size_t)in * out);
		memcpy(z, pre->zero, (size_t)ng * out);
		memcpy(s, pre->scale, (size_t)ng * out * sizeof(float));
	} else if (!rc)
		lmd_quant_groups(w, out, in, g, o->bits, q, z, s, NULL);
	if (!rc) {
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

/* The index (wq, wk, wv, wo, w1, w3, w2: 0..6) of a canonical name "layers.L.wq" and its layer; -1 when not a linear. */
static int linear_index(const char *canon, int *layer)
{
	const char *d = strrchr(canon, '.');
	static const char *lin[] = {"wq", "wk", "wv", "wo", "w1", "w3", "w2"};
	for (int i = 0; d && i < 7; i++)
		if (!strcmp(d + 1, lin[i]) && sscanf(canon, "layers.%d.", layer) == 1)
			return i;
	return -1;
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
		     struct lmd_calib_stats *stats, struct lmd_awq_acts *acts, int force,
		     void (*log)(void *ctx, const char *line), void *log_ctx, struct lmd_err *err)
{
	struct lmd_modeldir md = {0};
	struct wset ws = {0};
	struct outset os = {0};
	struct lmd_outdir od = {0};
	struct lmd_backend be = {0};
	struct lmd_qgroups *gq = NULL;  /* [layers][7] for GPTQ */
	float *resid = NULL;
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
	if (o->method == LMD_QUANT_GPTQ)
		gq = calloc((size_t)c->layers * 7, sizeof(*gq));
	if (!ws.name || !ws.w || !ws.shape || !ws.ndim || (o->method == LMD_QUANT_GPTQ && !gq)) {
		rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
		goto done;
	}
	struct load_ctx lc = {&ws, &md, err};
	if ((rc = lmd_config_tensors(c, load_one, &lc)))
		goto done;
	if (o->method == LMD_QUANT_AWQ && o->fixed_ratio && !stats) {
		rc = lmd_errorf(err, LMD_EINVAL, "the fixed-ratio smoothing needs statistics (--stats)");
		goto done;
	}
	if (((o->method == LMD_QUANT_AWQ && !o->fixed_ratio) || o->method == LMD_QUANT_GPTQ) && !acts) {
		rc = lmd_errorf(err, LMD_EINVAL, "the %s needs calibration activations", o->method == LMD_QUANT_GPTQ
				? "GPTQ" : "AWQ search");
		goto done;
	}
	if (acts && acts->layers != c->layers) {
		rc = lmd_errorf(err, LMD_EINVAL, "calibration activations of %d layers for a model of %d", acts->layers,
				c->layers);
		goto done;
	}
	struct lmd_backend_opts bo = {.threads = o->threads};
	if (acts && (rc = lmd_backend_open(&be, "cpu", &bo, err)))
		goto done;
	int T = acts ? acts->seqlen : 1, nres = acts ? (int)(acts->nresid / T * T) : 0;
	if (o->method == LMD_QUANT_GPTQ && nres < T) {
		rc = lmd_errorf(err, LMD_EINVAL, "GPTQ: fewer calibration rows (%lld) than one window of %d",
				(long long)acts->nresid, T);
		goto done;
	}
	if (o->method == LMD_QUANT_GPTQ && !(resid = malloc((size_t)nres * c->hidden * sizeof(float)))) {
		rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
		goto done;
	}
	if (resid)
		memcpy(resid, acts->resid, (size_t)nres * c->hidden * sizeof(float));
	for (int l = 0; (o->method != LMD_QUANT_RTN || o->equalize > 0) && l < c->layers; l++) {
		char nb[64];
#define W(x) (snprintf(nb, sizeof(nb), "layers.%d.%s", l, x), wget(&ws, nb))
		struct lmd_awq_layer L = {W("attn_norm"), W("ffn_norm"), W("wq"), W("wk"), W("wv"), W("wo"), W("w1"),
					  W("w2"), W("w3"), c->qkv_bias ? W("bq") : NULL, c->qkv_bias ? W("bk") : NULL,
					  c->qkv_bias ? W("bv") : NULL, c->o_bias ? W("bo") : NULL};
#undef W
		if (o->equalize > 0) {
			float *eq[4];
			int mv[4];
			if ((rc = lmd_awq_equalize(c, &L, o->equalize, eq, mv, err)))
				goto done;
			lmd_awq_equalize_data(l, eq, acts, stats);
			if (log) {
				char o1[16] = "-";
				if (eq[LMD_CALIB_O])
					snprintf(o1, sizeof(o1), "%d", mv[LMD_CALIB_O]);
				snprintf(line, sizeof(line), "layer %d: equalized channels qkv %d, o %s, w13 %d, w2 %d", l,
					 mv[LMD_CALIB_QKV], o1, mv[LMD_CALIB_W13], mv[LMD_CALIB_W2]);
				log(log_ctx, line);
			}
			for (int p = 0; p < 4; p++)
				free(eq[p]);
		}
		line[0] = 0;
		if (o->method == LMD_QUANT_GPTQ)
			rc = lmd_gptq_layer(&be, c, &L, resid, nres, T, o, gq + (size_t)l * 7, err);
		else if (o->method == LMD_QUANT_AWQ && o->fixed_ratio)
			rc = fixed_layer(c, &L, stats->in[l], o, err);
		else if (o->method == LMD_QUANT_AWQ)
			rc = lmd_awq_layer(&be, c, l, &L, acts, stats, o, line, sizeof(line), err);
		if (rc)
			goto done;
		if (log && line[0])
			log(log_ctx, line);
		lmd_progress(o->progress, l + 1, c->layers);
	}
	/* the output tensors: quantized linears, everything else in fp16 */
	for (int i = 0; !rc && i < ws.n; i++) {
		char hf[160];
		int out = (int)ws.shape[i][0], in = (int)ws.shape[i][1], l, k = linear_index(ws.name[i], &l);
		if (k >= 0)
			rc = add_quantized(&os, c, ws.name[i], ws.w[i], out, in, gq ? &gq[(size_t)l * 7 + k] : NULL, o, err);
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
	for (int k = 0; gq && k < c->layers * 7; k++)
		lmd_qgroups_free(&gq[k]);
	free(gq), free(resid);
	lmd_backend_close(&be);
	outset_free(&os);
	wset_free(&ws);
	lmd_modeldir_close(&md);
	return rc;
}
