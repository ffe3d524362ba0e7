/**
 * The CPU reference ops (see ops-cpu.h) and the "ref" backend built from them.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops-cpu.h"
#include "q4.h"
#include "sampler.h"

// ----------------------------------------------------------------------------
// element conversion

void lmd_cpu_load(float *dst, const void *src, enum lmd_dtype t, size_t n)
{
	if (t == LMD_F32) {
		memcpy(dst, src, n * sizeof(float));
	} else if (t == LMD_F16) {
		const uint16_t *s = src;
		for (size_t i = 0; i < n; i++)
			dst[i] = lmd_f16_to_f32(s[i]);
	} else if (t == LMD_BF16) {
		const uint16_t *s = src;
		for (size_t i = 0; i < n; i++) {
			uint32_t u = (uint32_t)s[i] << 16;
			memcpy(&dst[i], &u, 4);
		}
	} else {
		LMD_BUG("load from dtype %s", lmd_dtype_short(t));
	}
}

void lmd_cpu_store(void *dst, enum lmd_dtype t, const float *src, size_t n)
{
	if (t == LMD_F32) {
		memcpy(dst, src, n * sizeof(float));
	} else if (t == LMD_F16) {
		uint16_t *d = dst;
		for (size_t i = 0; i < n; i++)
			d[i] = lmd_f32_to_f16(src[i]);
	} else if (t == LMD_BF16) {
		uint16_t *d = dst;
		for (size_t i = 0; i < n; i++)
			d[i] = lmd_f32_to_bf16(src[i]);
	} else {
		LMD_BUG("store to dtype %s", lmd_dtype_short(t));
	}
}

float lmd_cpu_round(float v, enum lmd_dtype t)
{
	if (t == LMD_F16)
		return lmd_f16_to_f32(lmd_f32_to_f16(v));
	if (t == LMD_BF16)
		return lmd_bf16_to_f32(lmd_f32_to_bf16(v));
	return v;
}

static float load1(const void *p, enum lmd_dtype t, size_t i)
{
	float v;
	lmd_cpu_load(&v, (const char *)p + i * lmd_dtype_size(t), t, 1);
	return v;
}

static void store1(void *p, enum lmd_dtype t, size_t i, float v)
{
	lmd_cpu_store((char *)p + i * lmd_dtype_size(t), t, &v, 1);
}

static void *row(const struct lmd_tensor *t, int64_t r)
{
	return (char *)t->data + (size_t)r * (size_t)t->shape[t->ndim - 1] * lmd_dtype_size(t->dtype);
}

static int64_t rows(const struct lmd_tensor *t)
{
	return t->ndim == 1 ? 1 : lmd_tensor_numel(t) / t->shape[t->ndim - 1];
}

static int64_t cols(const struct lmd_tensor *t)
{
	return t->shape[t->ndim - 1];
}

// ----------------------------------------------------------------------------
// the ops

void lmd_cpu_embed(struct lmd_tensor *y, const struct lmd_tensor *table, const struct lmd_step *s)
{
	int64_t hidden = cols(table);
	if (cols(y) != hidden || rows(y) < s->n)
		LMD_BUG("embed: shapes");
	float *tmp = malloc((size_t)hidden * sizeof(float));
	if (!tmp)
		LMD_BUG("out of memory");
	for (int i = 0; i < s->n; i++) {
		if (s->tokens[i] < 0 || s->tokens[i] >= rows(table))
			LMD_BUG("embed: token %d out of range", s->tokens[i]);
		lmd_cpu_load(tmp, row(table, s->tokens[i]), table->dtype, (size_t)hidden);
		lmd_cpu_store(row(y, i), y->dtype, tmp, (size_t)hidden);
	}
	free(tmp);
}

/* y[r] = round(g * x * rsqrt(mean(x²) + eps)), in fp32 with one rounding (a fused kernel's). */
static void rmsnorm_row(void *y, enum lmd_dtype yt, const float *x, const struct lmd_tensor *g, float eps, int64_t n)
{
	float ss = 0;
	for (int64_t i = 0; i < n; i++)
		ss += x[i] * x[i];
	float inv = 1.0f / sqrtf(ss / (float)n + eps);
	for (int64_t i = 0; i < n; i++)
		store1(y, yt, (size_t)i, load1(g->data, g->dtype, (size_t)i) * (x[i] * inv));
}

void lmd_cpu_rmsnorm(struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *g, float eps)
{
	int64_t n = cols(x);
	if (cols(y) != n || rows(y) != rows(x) || lmd_tensor_numel(g) != n)
		LMD_BUG("rmsnorm: shapes");
	float *tmp = malloc((size_t)n * sizeof(float));
	if (!tmp)
		LMD_BUG("out of memory");
	for (int64_t r = 0; r < rows(x); r++) {
		lmd_cpu_load(tmp, row(x, r), x->dtype, (size_t)n);
		rmsnorm_row(row(y, r), y->dtype, tmp, g, eps, n);
	}
	free(tmp);
}

void lmd_cpu_add_rmsnorm(struct lmd_tensor *y, struct lmd_tensor *x, const struct lmd_tensor *r,
			 const struct lmd_tensor *g, float eps)
{
	int64_t n = cols(x);
	if (cols(y) != n || rows(y) != rows(x) || cols(r) != n || rows(r) != rows(x) || lmd_tensor_numel(g) != n)
		LMD_BUG("add_rmsnorm: shapes");
	float *tmp = malloc((size_t)n * sizeof(float));
	if (!tmp)
		LMD_BUG("out of memory");
	for (int64_t k = 0; k < rows(x); k++) {
		for (int64_t i = 0; i < n; i++)
			tmp[i] = lmd_cpu_round(load1(row(x, k), x->dtype, (size_t)i) + load1(row(r, k), r->dtype, (size_t)i),
					       x->dtype);
		lmd_cpu_store(row(x, k), x->dtype, tmp, (size_t)n);
		rmsnorm_row(row(y, k), y->dtype, tmp, g, eps, n);
	}
	free(tmp);
}

/* Column o of y: every row of xf [n, in] times the weight row wf [in], plus bias[o]; both reference matmuls end here. */
static void store_column(struct lmd_tensor *y, const float *xf, const float *wf, int64_t n, int64_t in, int64_t o,
			 const struct lmd_tensor *bias)
{
	for (int64_t r = 0; r < n; r++) {
		float acc = 0;
		for (int64_t i = 0; i < in; i++)
			acc += xf[r * in + i] * wf[i];
		if (bias)
			acc += load1(bias->data, bias->dtype, (size_t)o);
		store1(row(y, r), y->dtype, (size_t)o, acc);
	}
}

void lmd_cpu_matmul(struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
		    const struct lmd_tensor *bias)
{
	int64_t in = cols(x), out = rows(w), n = rows(x);
	if (cols(w) != in || cols(y) != out || rows(y) != n || (bias && lmd_tensor_numel(bias) != out))
		LMD_BUG("matmul: shapes");
	float *xf = malloc((size_t)(n * in) * sizeof(float)), *wf = malloc((size_t)in * sizeof(float));
	if (!xf || !wf)
		LMD_BUG("out of memory");
	lmd_cpu_load(xf, x->data, x->dtype, (size_t)(n * in));
	for (int64_t o = 0; o < out; o++) {
		lmd_cpu_load(wf, row(w, o), w->dtype, (size_t)in);
		store_column(y, xf, wf, n, in, o, bias);
	}
	free(xf);
	free(wf);
}

void lmd_cpu_matmul_q4(struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
		       const struct lmd_tensor *scales, const struct lmd_tensor *zeros, int group,
		       const struct lmd_tensor *bias)
{
	int64_t in = cols(x), out = rows(w), n = rows(x);
	if (cols(w) * 2 != in || cols(y) != out || rows(y) != n || in % group || rows(scales) != out ||
	    cols(scales) != in / group || rows(zeros) != out || cols(zeros) != in / group ||
	    (bias && lmd_tensor_numel(bias) != out))
		LMD_BUG("matmul_q4: shapes");
	struct lmd_q4 q = {(int)out, (int)in, group, w->data, scales->data, zeros->data};
	float *xf = malloc((size_t)(n * in) * sizeof(float)), *wf = malloc((size_t)in * sizeof(float));
	if (!xf || !wf)
		LMD_BUG("out of memory");
	lmd_cpu_load(xf, x->data, x->dtype, (size_t)(n * in));
	for (int64_t o = 0; o < out; o++) {
		lmd_q4_row(&q, (int)o, wf);
		store_column(y, xf, wf, n, in, o, bias);
	}
	free(xf);
	free(wf);
}

void lmd_cpu_rope_table(float *cs, const struct lmd_step *s)
{
	int half = s->rot_half;
	for (int i = 0; i < s->n; i++) {
		const float *f = s->inv_freq + (size_t)s->seq[i] * half;
		for (int j = 0; j < half; j++) {
			float a = (float)s->pos[i] * f[j];  // fp32 angle, as HF computes it
			cs[((size_t)i * half + j) * 2] = (float)cos((double)a);
			cs[((size_t)i * half + j) * 2 + 1] = (float)sin((double)a);
		}
	}
}

void lmd_cpu_rope(struct lmd_tensor *qkv, const struct lmd_attn_dims *d, const struct lmd_step *s)
{
	int D = d->head_dim, half = D / 2, nh = d->heads + d->kv_heads;
	if (cols(qkv) != (int64_t)(d->heads + 2 * d->kv_heads) * D || half != s->rot_half || rows(qkv) < s->n)
		LMD_BUG("rope: shapes");
	float *cs = malloc((size_t)s->n * half * 2 * sizeof(float));
	if (!cs)
		LMD_BUG("out of memory");
	lmd_cpu_rope_table(cs, s);
	for (int i = 0; i < s->n; i++) {
		void *r = row(qkv, i);
		for (int h = 0; h < nh; h++)
			for (int j = 0; j < half; j++) {
				size_t a = (size_t)h * D + j, b = a + half;
				float c = cs[((size_t)i * half + j) * 2], sn = cs[((size_t)i * half + j) * 2 + 1];
				float x0 = load1(r, qkv->dtype, a), x1 = load1(r, qkv->dtype, b);
				store1(r, qkv->dtype, a, x0 * c - x1 * sn);
				store1(r, qkv->dtype, b, x1 * c + x0 * sn);
			}
	}
	free(cs);
}

/* Element (head, t) of a sequence's K or V in the pool tensor p of layer. */
static void *kv_at(const struct lmd_kvcache *kv, const struct lmd_tensor *p, const struct lmd_step *s, int seq,
		   int head, int t)
{
	int blk = s->block_table[(size_t)seq * s->max_blocks + t / kv->block_len];
	size_t off = (((size_t)blk * kv->kv_heads + head) * kv->block_len + t % kv->block_len) * (size_t)p->shape[3];
	return (char *)p->data + off * lmd_dtype_size(p->dtype);  /* shape[3]: head_dim, or head_dim/2 for int4 */
}

/* Element (head, t)'s scale and zero pair in a quantized cache's kq or vq (the cache's dtype). */
static void *kvq_at(const struct lmd_kvcache *kv, const struct lmd_tensor *p, const struct lmd_step *s, int seq,
		    int head, int t)
{
	int blk = s->block_table[(size_t)seq * s->max_blocks + t / kv->block_len];
	size_t off = (((size_t)blk * kv->kv_heads + head) * kv->block_len + t % kv->block_len) * 2;
	return (char *)p->data + off * lmd_dtype_size(p->dtype);
}

/*
 * v as a value of dtype t: the nearest (dir 0, ties to even), or the nearest on v's side dir (+1: >= v, -1: <= v).
 * gpu/elementwise.cu's kv_round is the same function.
 */
static float kv_round(float v, enum lmd_dtype t, int dir)
{
	if (t == LMD_F32)
		return v;
	int bf = t == LMD_BF16;
	uint16_t h = bf ? lmd_f32_to_bf16(v) : lmd_f32_to_f16(v);
	float r = bf ? lmd_bf16_to_f32(h) : lmd_f16_to_f32(h);
	if ((dir > 0 && r < v) || (dir < 0 && r > v)) {  /* one step of t further along dir */
		h = r == 0 ? (dir > 0 ? 0x0001 : 0x8001) : (uint16_t)((r > 0) == (dir > 0) ? h + 1 : h - 1);
		r = bf ? lmd_bf16_to_f32(h) : lmd_f16_to_f32(h);
	}
	return r;
}

void lmd_kv_quantize(const float *x, int D, int bits, const float *fixed, enum lmd_dtype pt, uint8_t *q, float *sz)
{
	float qmax = (float)((1 << bits) - 1), scale, zero;
	if (fixed) {
		scale = kv_round(fixed[0] > LMD_KV_MIN_SCALE ? fixed[0] : LMD_KV_MIN_SCALE, pt, 0);
		zero = kv_round(fixed[1], pt, 0);
	} else {
		float mn = x[0], mx = x[0];
		for (int j = 1; j < D; j++)
			mn = x[j] < mn ? x[j] : mn, mx = x[j] > mx ? x[j] : mx;
		zero = kv_round(mn + 0.0f, pt, -1);  /* + 0: whichever zero min is, +0 (the GPU's fminf may give -0) */
		scale = (mx - zero) / qmax;
		scale = kv_round(scale >= LMD_KV_MIN_SCALE ? scale : LMD_KV_MIN_SCALE, pt, 1);
	}
	sz[0] = scale, sz[1] = zero;
	for (int j = 0; j < D; j++) {
		float v = fminf(fmaxf(roundf((x[j] - zero) / scale), 0), qmax);
		if (bits == 8)
			q[j] = (uint8_t)v;
		else if (j % 2)
			q[j / 2] = (uint8_t)(q[j / 2] | (uint8_t)v << 4);
		else
			q[j / 2] = (uint8_t)v;
	}
}

void lmd_kv_dequantize(const uint8_t *q, int D, int bits, const float *sz, float *x)
{
	for (int j = 0; j < D; j++) {
		int v = bits == 8 ? q[j] : (q[j / 2] >> (4 * (j % 2))) & 15;
		x[j] = (float)v * sz[0] + sz[1];
	}
}

/* Store / load one (token, head) row of K (w 0) or V (w 1), quantizing when the cache is. */
static void kv_put(struct lmd_kvcache *kv, int layer, int w, const struct lmd_step *s, int seq, int h, int t,
		   const float *x)
{
	const struct lmd_tensor *p = w ? &kv->v[layer] : &kv->k[layer];
	if (kv->quant == LMD_KV_NONE) {
		lmd_cpu_store(kv_at(kv, p, s, seq, h, t), kv->dtype, x, (size_t)kv->head_dim);
		return;
	}
	const float *fixed = kv->params ? kv->params + (((size_t)layer * 2 + w) * kv->kv_heads + h) * 2 : NULL;
	float sz[2];
	lmd_kv_quantize(x, kv->head_dim, kv->quant, fixed, kv->dtype, kv_at(kv, p, s, seq, h, t), sz);
	lmd_cpu_store(kvq_at(kv, w ? &kv->vq[layer] : &kv->kq[layer], s, seq, h, t), kv->dtype, sz, 2);
}

static void kv_get(const struct lmd_kvcache *kv, int layer, int w, const struct lmd_step *s, int seq, int h, int t,
		   float *x)
{
	const struct lmd_tensor *p = w ? &kv->v[layer] : &kv->k[layer];
	if (kv->quant == LMD_KV_NONE) {
		lmd_cpu_load(x, kv_at(kv, p, s, seq, h, t), kv->dtype, (size_t)kv->head_dim);
		return;
	}
	float sz[2];
	lmd_cpu_load(sz, kvq_at(kv, w ? &kv->vq[layer] : &kv->kq[layer], s, seq, h, t), kv->dtype, 2);
	lmd_kv_dequantize(kv_at(kv, p, s, seq, h, t), kv->head_dim, kv->quant, sz, x);
}

void lmd_cpu_kv_store(struct lmd_kvcache *kv, int layer, const struct lmd_tensor *qkv, const struct lmd_attn_dims *d,
		      const struct lmd_step *s)
{
	int D = d->head_dim;
	if (D != kv->head_dim || d->kv_heads != kv->kv_heads || cols(qkv) != (int64_t)(d->heads + 2 * d->kv_heads) * D)
		LMD_BUG("kv_store: shapes");
	float *tmp = malloc((size_t)D * sizeof(float));
	if (!tmp)
		LMD_BUG("out of memory");
	size_t es = lmd_dtype_size(qkv->dtype);
	for (int i = 0; i < s->n; i++)
		for (int h = 0; h < d->kv_heads; h++) {
			const char *r = row(qkv, i);
			lmd_cpu_load(tmp, r + ((size_t)(d->heads + h) * D) * es, qkv->dtype, (size_t)D);
			kv_put(kv, layer, 0, s, s->seq[i], h, s->pos[i], tmp);
			lmd_cpu_load(tmp, r + ((size_t)(d->heads + d->kv_heads + h) * D) * es, qkv->dtype, (size_t)D);
			kv_put(kv, layer, 1, s, s->seq[i], h, s->pos[i], tmp);
		}
	free(tmp);
}

void lmd_cpu_attention(struct lmd_tensor *att, const struct lmd_tensor *qkv, const struct lmd_kvcache *kv, int layer,
		       const struct lmd_attn_dims *d, const struct lmd_step *s)
{
	int D = d->head_dim, H = d->heads, group = d->heads / d->kv_heads;
	if (D != kv->head_dim || d->kv_heads != kv->kv_heads || cols(att) != (int64_t)H * D ||
	    cols(qkv) != (int64_t)(H + 2 * d->kv_heads) * D)
		LMD_BUG("attention: shapes");
	int maxlen = 0;
	for (int i = 0; i < s->n; i++)
		maxlen = s->pos[i] + 1 > maxlen ? s->pos[i] + 1 : maxlen;
	float *q = malloc((size_t)D * sizeof(float)), *kr = malloc((size_t)D * sizeof(float));
	float *o = malloc((size_t)D * sizeof(float)), *p = malloc((size_t)maxlen * sizeof(float));
	if (!q || !kr || !o || !p)
		LMD_BUG("out of memory");
	size_t es = lmd_dtype_size(qkv->dtype);
	for (int i = 0; i < s->n; i++)
		for (int h = 0; h < H; h++) {
			int kvh = h / group, len = s->pos[i] + 1;
			lmd_cpu_load(q, (const char *)row(qkv, i) + (size_t)h * D * es, qkv->dtype, (size_t)D);
			float mx = -INFINITY;
			for (int t = 0; t < len; t++) {
				kv_get(kv, layer, 0, s, s->seq[i], kvh, t, kr);
				float dot = 0;
				for (int j = 0; j < D; j++)
					dot += q[j] * kr[j];
				p[t] = dot * d->scale;
				mx = p[t] > mx ? p[t] : mx;
			}
			float sum = 0;
			for (int t = 0; t < len; t++)
				sum += p[t] = expf(p[t] - mx);
			for (int j = 0; j < D; j++)
				o[j] = 0;
			for (int t = 0; t < len; t++) {
				kv_get(kv, layer, 1, s, s->seq[i], kvh, t, kr);
				for (int j = 0; j < D; j++)
					o[j] += p[t] / sum * kr[j];
			}
			lmd_cpu_store((char *)row(att, i) + (size_t)h * D * lmd_dtype_size(att->dtype), att->dtype, o,
				      (size_t)D);
		}
	free(q);
	free(kr);
	free(o);
	free(p);
}

void lmd_cpu_silu_mul(struct lmd_tensor *y, const struct lmd_tensor *gu)
{
	int64_t n = cols(y);
	if (cols(gu) != 2 * n || rows(gu) != rows(y))
		LMD_BUG("silu_mul: shapes");
	for (int64_t r = 0; r < rows(y); r++)
		for (int64_t i = 0; i < n; i++) {
			float g = load1(row(gu, r), gu->dtype, (size_t)i), u = load1(row(gu, r), gu->dtype, (size_t)(n + i));
			store1(row(y, r), y->dtype, (size_t)i, g / (1.0f + expf(-g)) * u);
		}
}

void lmd_cpu_gather_rows(struct lmd_tensor *y, const struct lmd_tensor *x, int first, const struct lmd_step *s)
{
	int64_t n = cols(x);
	if (cols(y) != n || first + rows(y) > s->nout)
		LMD_BUG("gather_rows: shapes");
	float *tmp = malloc((size_t)n * sizeof(float));
	if (!tmp)
		LMD_BUG("out of memory");
	for (int64_t j = 0; j < rows(y); j++) {
		lmd_cpu_load(tmp, row(x, s->out_rows[first + j]), x->dtype, (size_t)n);
		lmd_cpu_store(row(y, j), y->dtype, tmp, (size_t)n);
	}
	free(tmp);
}

int lmd_pick_shapes_ok(const struct lmd_tensor *head, const struct lmd_tensor *cand, const struct lmd_tensor *logits)
{
	return head->ndim == 2 && cand->ndim == 2 && logits->ndim == 2 && head->dtype == LMD_I32 &&
	       cand->dtype == LMD_I32 && logits->dtype == LMD_F32 && head->shape[1] == 2 && cand->shape[1] % 2 == 0 &&
	       head->shape[0] == logits->shape[0] && cand->shape[0] == logits->shape[0] && logits->shape[1] > 0 &&
	       logits->shape[1] <= INT32_MAX;
}

void lmd_cpu_pick_row(const float *v, int64_t n, float spread, int32_t top_k, int32_t *head, int32_t *cand,
		      int64_t cap)
{
	int64_t best = -1;
	for (int64_t i = 0; i < n; i++)
		if (!isnan(v[i]) && (best < 0 || v[i] > v[best]))
			best = i;
	int64_t count = 0;
	if (best < 0 || !isfinite(v[best])) {  // logits of NaN or inf: no choice can be made
		head[0] = 0;
		head[1] = -1;
		return;
	}
	if (spread >= 0) {  // not for a negative or NaN spread: the argmax only
		float cut = lmd_sample_cut(v, n, best, spread, top_k);
		for (int64_t i = 0; i < n; i++)
			if (v[i] >= cut) {
				if (count < cap) {
					memcpy(&cand[2 * count], &v[i], sizeof(float));
					cand[2 * count + 1] = (int32_t)i;
				}
				count++;
			}
	}
	head[0] = (int32_t)best;
	head[1] = (int32_t)count;
}

void lmd_cpu_pick(struct lmd_tensor *head, struct lmd_tensor *cand, const struct lmd_tensor *logits,
		  const float *spread, const int32_t *top_k)
{
	if (!lmd_pick_shapes_ok(head, cand, logits))
		LMD_BUG("pick: shapes");
	for (int64_t r = 0; r < rows(logits); r++)
		lmd_cpu_pick_row(row(logits, r), cols(logits), spread[r], top_k ? top_k[r] : 0, row(head, r), row(cand, r),
				 cols(cand) / 2);
}

// ----------------------------------------------------------------------------
// host memory, shared by the CPU backends

int lmd_cpu_alloc(void *ctx, struct lmd_tensor *t, struct lmd_err *err)
{
	(void)ctx;
	size_t n = lmd_tensor_nbytes(t);
	t->data = aligned_alloc(64, (n + 63) / 64 * 64 + 64);
	if (!t->data)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory allocating %zu bytes", n);
	return LMD_OK;
}

void lmd_cpu_release(void *ctx, struct lmd_tensor *t)
{
	(void)ctx;
	free(t->data);
	t->data = NULL;
}

int lmd_cpu_weight(void *ctx, struct lmd_tensor *dst, const struct lmd_tensor *src, struct lmd_err *err)
{
	(void)ctx;
	(void)err;
	*dst = *src;
	return LMD_OK;
}

int lmd_cpu_upload(void *ctx, struct lmd_tensor *dst, size_t off, const void *src, size_t nbytes,
		   struct lmd_err *err)
{
	(void)ctx;
	(void)err;
	memcpy((char *)dst->data + off, src, nbytes);
	return LMD_OK;
}

int lmd_cpu_download(void *ctx, void *dst, const struct lmd_tensor *src, size_t off, size_t nbytes,
		     struct lmd_err *err)
{
	(void)ctx;
	(void)err;
	memcpy(dst, (const char *)src->data + off, nbytes);
	return LMD_OK;
}

int lmd_cpu_sync(void *ctx, struct lmd_err *err)
{
	(void)ctx;
	(void)err;
	return LMD_OK;
}

// ----------------------------------------------------------------------------
// the "ref" backend: the reference ops behind the interface

struct ref_ctx {
	struct lmd_step step;
};

static void ref_close(void *ctx)
{
	free(ctx);
}

static int ref_step_begin(void *ctx, const struct lmd_step *s, struct lmd_err *err)
{
	(void)err;
	((struct ref_ctx *)ctx)->step = *s;
	return LMD_OK;
}

#define STEP(ctx) (&((struct ref_ctx *)(ctx))->step)

static int ref_embed(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *table, struct lmd_err *err)
{
	(void)err;
	lmd_cpu_embed(y, table, STEP(ctx));
	return LMD_OK;
}

static int ref_rmsnorm(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *g,
		       float eps, struct lmd_err *err)
{
	(void)ctx;
	(void)err;
	lmd_cpu_rmsnorm(y, x, g, eps);
	return LMD_OK;
}

static int ref_add_rmsnorm(void *ctx, struct lmd_tensor *y, struct lmd_tensor *x, const struct lmd_tensor *r,
			   const struct lmd_tensor *g, float eps, struct lmd_err *err)
{
	(void)ctx;
	(void)err;
	lmd_cpu_add_rmsnorm(y, x, r, g, eps);
	return LMD_OK;
}

static int ref_matmul(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
		      const struct lmd_tensor *bias, struct lmd_err *err)
{
	(void)ctx;
	(void)err;
	lmd_cpu_matmul(y, x, w, bias);
	return LMD_OK;
}

static int ref_matmul_q4(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
			 const struct lmd_tensor *scales, const struct lmd_tensor *zeros, int group,
			 const struct lmd_tensor *bias, struct lmd_err *err)
{
	(void)ctx;
	(void)err;
	lmd_cpu_matmul_q4(y, x, w, scales, zeros, group, bias);
	return LMD_OK;
}

static int ref_rope(void *ctx, struct lmd_tensor *qkv, const struct lmd_attn_dims *d, struct lmd_err *err)
{
	(void)err;
	lmd_cpu_rope(qkv, d, STEP(ctx));
	return LMD_OK;
}

static int ref_kv_store(void *ctx, struct lmd_kvcache *kv, int layer, const struct lmd_tensor *qkv,
			const struct lmd_attn_dims *d, struct lmd_err *err)
{
	(void)err;
	lmd_cpu_kv_store(kv, layer, qkv, d, STEP(ctx));
	return LMD_OK;
}

static int ref_rope_kv_store(void *ctx, struct lmd_tensor *qkv, struct lmd_kvcache *kv, int layer,
			     const struct lmd_attn_dims *d, struct lmd_err *err)
{
	(void)err;
	lmd_cpu_rope(qkv, d, STEP(ctx));
	lmd_cpu_kv_store(kv, layer, qkv, d, STEP(ctx));
	return LMD_OK;
}

static int ref_attention(void *ctx, struct lmd_tensor *att, const struct lmd_tensor *qkv,
			 const struct lmd_kvcache *kv, int layer, const struct lmd_attn_dims *d, struct lmd_err *err)
{
	(void)err;
	lmd_cpu_attention(att, qkv, kv, layer, d, STEP(ctx));
	return LMD_OK;
}

static int ref_silu_mul(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *gu, struct lmd_err *err)
{
	(void)ctx;
	(void)err;
	lmd_cpu_silu_mul(y, gu);
	return LMD_OK;
}

static int ref_gather_rows(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, int first,
			   struct lmd_err *err)
{
	(void)err;
	lmd_cpu_gather_rows(y, x, first, STEP(ctx));
	return LMD_OK;
}

static int ref_pick(void *ctx, struct lmd_tensor *head, struct lmd_tensor *cand, const struct lmd_tensor *logits,
		    const float *spread, const int32_t *top_k, struct lmd_err *err)
{
	(void)ctx;
	(void)err;
	lmd_cpu_pick(head, cand, logits, spread, top_k);
	return LMD_OK;
}

static const struct lmd_backend_ops ref_ops;

static int ref_gate_up(void *ctx, struct lmd_tensor *y, struct lmd_tensor *gu, const struct lmd_tensor *x,
		       const struct lmd_tensor *w, const struct lmd_tensor *s, const struct lmd_tensor *z, int group,
		       struct lmd_err *err)
{
	return lmd_gate_up_two(&ref_ops, ctx, y, gu, x, w, s, z, group, err);
}

static const struct lmd_backend_ops ref_ops = {
	.name = "ref",
	.weights_in_place = 1,
	.kv_quant = 1,
	.close = ref_close,
	.alloc = lmd_cpu_alloc,
	.release = lmd_cpu_release,
	.weight = lmd_cpu_weight,
	.upload = lmd_cpu_upload,
	.download = lmd_cpu_download,
	.sync = lmd_cpu_sync,
	.step_begin = ref_step_begin,
	.embed = ref_embed,
	.rmsnorm = ref_rmsnorm,
	.add_rmsnorm = ref_add_rmsnorm,
	.matmul = ref_matmul,
	.matmul_q4 = ref_matmul_q4,
	.rope = ref_rope,
	.kv_store = ref_kv_store,
	.rope_kv_store = ref_rope_kv_store,
	.attention = ref_attention,
	.silu_mul = ref_silu_mul,
	.gate_up = ref_gate_up,
	.gather_rows = ref_gather_rows,
	.pick = ref_pick,
};

int lmd_backend_ref_open(struct lmd_backend *b, const struct lmd_backend_opts *opts, struct lmd_err *err)
{
	(void)opts;
	b->ctx = lmd_calloc(1, sizeof(struct ref_ctx), err);
	if (!b->ctx)
		return LMD_ENOMEM;
	b->ops = &ref_ops;
	return LMD_OK;
}
