/**
 * The model: loading weights into a backend and the forward pass, written once against
 * backend.h (model.h).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "sampler.h"

#define TRY(x) do { int rc_ = (x); if (rc_ < 0) return rc_; } while (0)

// ----------------------------------------------------------------------------
// rotary frequencies (HF's rope_init functions)

void lmd_rope_inv_freq(const struct lmd_rope *r, int head_dim, int max_pos, int seq_len, float *out)
{
	int half = head_dim / 2;
	double base = r->theta;
	int orig = r->original_max_pos > 0 ? r->original_max_pos : max_pos;
	if (r->type == LMD_ROPE_DYNAMIC && seq_len > orig)
		base *= pow(r->factor * seq_len / orig - (r->factor - 1), (double)head_dim / (head_dim - 2));
	for (int j = 0; j < half; j++) {
		float inv = (float)(1.0 / pow(base, (double)(2 * j) / head_dim));
		if (r->type == LMD_ROPE_LINEAR) {
			inv = (float)(inv / r->factor);
		} else if (r->type == LMD_ROPE_LLAMA3) {
			double low_wl = orig / r->low_freq_factor, high_wl = orig / r->high_freq_factor;
			double wl = 2 * M_PI / inv;
			if (wl > low_wl) {
				inv = (float)(inv / r->factor);
			} else if (wl >= high_wl) {  // medium: smooth between scaled and unscaled
				double s = (orig / wl - r->low_freq_factor) / (r->high_freq_factor - r->low_freq_factor);
				inv = (float)((1 - s) * inv / r->factor + s * inv);
			}
		}
		out[j] = inv;
	}
}

// ----------------------------------------------------------------------------
// loading

/*
 * Weights stay in their stored dtype whatever the compute dtype: matmul reads f32, f16 and bf16
 * weights with fp32 accumulation, so nothing is lost converting fp16 weights for bf16 compute.
 */
static enum lmd_dtype weight_dtype(const struct lmd_model *m, enum lmd_dtype stored)
{
	(void)m;
	return stored;
}

static void *keep_host(struct lmd_model *m, void *p)
{
	if (!p)
		return NULL;
	void **h = realloc(m->host, (size_t)(m->nhost + 1) * sizeof(*h));
	if (!h) {
		free(p);
		return NULL;
	}
	m->host = h;
	m->host[m->nhost++] = p;
	return p;
}

/*
 * Make the concatenation (along rows) of the named tensors resident, in the first tensor's dtype
 * mapped through weight_dtype. A single tensor already in that dtype goes to the backend as mapped.
 */
static int load_cat(struct lmd_model *m, const struct lmd_modeldir *dir, struct lmd_tensor *dst,
		    const char *const *names, int n, struct lmd_err *err)
{
	struct lmd_tensor src[3];
	void *owned[3] = {0};
	int rc = LMD_OK;
	int64_t rows = 0;
	for (int i = 0; i < n; i++) {
		if ((rc = lmd_modeldir_gather(dir, names[i], &src[i], &owned[i], err)) < 0)
			goto out;
		keep_host(m, owned[i]);
		if (!lmd_dtype_is_float(src[i].dtype) || src[i].ndim > 2 ||
		    (i && (src[i].ndim != src[0].ndim || (src[i].ndim == 2 && src[i].shape[1] != src[0].shape[1])))) {
			rc = lmd_errorf(err, LMD_EFORMAT, "tensor '%s': unexpected dtype %s or shape", names[i],
					lmd_dtype_short(src[i].dtype));
			goto out;
		}
		rows += src[i].shape[0];
	}
	enum lmd_dtype dt = weight_dtype(m, src[0].dtype);
	struct lmd_tensor host = src[0];
	if (n > 1 || dt != src[0].dtype) {
		host.dtype = dt;
		host.shape[0] = rows;
		size_t off = 0;
		host.data = keep_host(m, malloc(lmd_tensor_nbytes(&host)));
		if (!host.data) {
			rc = lmd_errorf(err, LMD_ENOMEM, "out of memory loading '%s'", names[0]);
			goto out;
		}
		for (int i = 0; i < n; i++) {
			size_t cnt = (size_t)lmd_tensor_numel(&src[i]);
			lmd_dtype_convert((char *)host.data + off, dt, src[i].data, src[i].dtype, cnt, NULL);
			off += cnt * lmd_dtype_size(dt);
		}
	}
	rc = m->be->ops->weight(m->be->ctx, dst, &host, err);
	if (rc == LMD_OK)
		m->weight_bytes += lmd_tensor_nbytes(dst);
out:
	return rc;
}

/*
 * An int4 weight (q4.h) made of the row-concatenation of the named quantized tensors: the packed
 * nibbles, scales and zeros, each concatenated along rows. *group receives the group size.
 */
static int load_cat_q4(struct lmd_model *m, const struct lmd_modeldir *dir, struct lmd_tensor *dst,
		       struct lmd_tensor *ds, struct lmd_tensor *dz, const char *const *names, int n, int *group,
		       struct lmd_err *err)
{
	if (!m->be->ops->matmul_q4)
		return lmd_errorf(err, LMD_EINVAL, "the %s backend has no int4 matmul for '%s'", m->be->ops->name, names[0]);
	struct lmd_tensor host[3];
	for (int part = 0; part < 3; part++) {
		struct lmd_tensor src[3];
		int64_t rows = 0;
		for (int i = 0; i < n; i++) {
			const struct lmd_mtensor *mt = lmd_modeldir_find(dir, names[i], -1);
			if (!mt || !mt->quant.method[0] || mt->quant.bits != 4 ||
			    (*group && mt->quant.group_size != *group))
				return lmd_errorf(err, LMD_EFORMAT, "%s: tensor '%s': expected a 4-bit weight like '%s'", dir->path,
						  names[i], names[0]);
			*group = mt->quant.group_size;
			const char *nm = part == 0 ? names[i] : part == 1 ? mt->quant.scales : mt->quant.zeros;
			const struct lmd_mtensor *pt = lmd_modeldir_find(dir, nm, -1);
			enum lmd_dtype want = part == 1 ? LMD_F16 : LMD_U8;
			if (!pt || pt->t.dtype != want || pt->t.ndim != 2 ||
			    (i && pt->t.shape[1] != src[0].shape[1]))
				return lmd_errorf(err, LMD_EFORMAT, "%s: tensor '%s' is missing or not %s [out, cols]", dir->path, nm,
						  lmd_dtype_short(want));
			src[i] = pt->t;
			rows += src[i].shape[0];
		}
		host[part] = src[0];
		if (n > 1) {
			host[part].shape[0] = rows;
			host[part].data = keep_host(m, malloc(lmd_tensor_nbytes(&host[part])));
			if (!host[part].data)
				return lmd_errorf(err, LMD_ENOMEM, "out of memory loading '%s'", names[0]);
			size_t off = 0;
			for (int i = 0; i < n; i++) {
				memcpy((char *)host[part].data + off, src[i].data, lmd_tensor_nbytes(&src[i]));
				off += lmd_tensor_nbytes(&src[i]);
			}
		}
	}
	if (host[1].shape[0] != host[0].shape[0] || host[2].shape[0] != host[0].shape[0] ||
	    host[1].shape[1] * *group != host[0].shape[1] * 2 || host[2].shape[1] != host[1].shape[1])
		return lmd_errorf(err, LMD_EFORMAT, "%s: tensor '%s': packed weight, scales and zeros disagree in shape",
				  dir->path, names[0]);
	struct lmd_tensor *d[3] = {dst, ds, dz};
	if (m->be->ops->weight_q4) {
		int rc = m->be->ops->weight_q4(m->be->ctx, dst, ds, dz, &host[0], &host[1], &host[2], *group, err);
		if (rc)
			return rc;
		for (int part = 0; part < 3; part++)
			m->weight_bytes += lmd_tensor_nbytes(d[part]);
		return LMD_OK;
	}
	for (int part = 0; part < 3; part++) {
		int rc = m->be->ops->weight(m->be->ctx, d[part], &host[part], err);
		if (rc)
			return rc;
		m->weight_bytes += lmd_tensor_nbytes(d[part]);
	}
	return LMD_OK;
}

/* A linear weight: int4 when the directory holds it quantized, else as load_cat. */
static int load_lin(struct lmd_model *m, const struct lmd_modeldir *dir, struct lmd_tensor *dst, struct lmd_tensor *ds,
		    struct lmd_tensor *dz, const char *const *names, int n, int *group, struct lmd_err *err)
{
	const struct lmd_mtensor *mt = lmd_modeldir_find(dir, names[0], -1);
	if (mt && mt->quant.method[0])
		return load_cat_q4(m, dir, dst, ds, dz, names, n, group, err);
	return load_cat(m, dir, dst, names, n, err);
}

static int load1(struct lmd_model *m, const struct lmd_modeldir *dir, struct lmd_tensor *dst, const char *name,
		 struct lmd_err *err)
{
	return load_cat(m, dir, dst, &name, 1, err);
}

static int alloc_ws(struct lmd_model *m, struct lmd_tensor *t, enum lmd_dtype dt, int64_t rows, int64_t cols,
		    struct lmd_err *err)
{
	return lmd_backend_alloc2(m->be, t, dt, rows, cols, err);
}

int lmd_model_open(struct lmd_model *m, struct lmd_backend *be, const struct lmd_modeldir *dir,
		   const struct lmd_model_opts *opts, struct lmd_err *err)
{
	struct lmd_model_opts o = opts ? *opts : (struct lmd_model_opts){.dtype = LMD_DTYPE_NONE};
	static uint64_t next_id;
	memset(m, 0, sizeof(*m));
	m->be = be;
	m->cfg = dir->cfg;
	m->id = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);
	const struct lmd_config *c = &m->cfg;
	int rc = LMD_OK;
	if ((rc = lmd_config_validate(c, dir->path ? dir->path : "model", err)) < 0)
		return rc;
	m->dtype = o.dtype == LMD_DTYPE_NONE ? c->dtype : o.dtype;
	if (m->dtype != LMD_F32 && m->dtype != LMD_F16 && m->dtype != LMD_BF16)
		return lmd_errorf(err, LMD_EINVAL, "compute dtype '%s' not supported (fp32, fp16 or bf16)",
				  lmd_dtype_short(m->dtype));
	if (c->head_dim % 2)
		return lmd_errorf(err, LMD_EFORMAT, "head_dim %d is odd", c->head_dim);
	m->max_tokens = o.max_tokens > 0 ? o.max_tokens : 2048;
	m->max_seqs = o.max_seqs > 0 ? o.max_seqs : 64;
	m->session_len = o.session_len > 0 ? o.session_len : c->max_pos;
	m->hf_rope_rounding = o.hf_rope_rounding;
	int block_len = o.block_len > 0 ? o.block_len : 64;
	int max_blocks = (m->session_len + block_len - 1) / block_len;
	int kv_blocks = o.kv_blocks;
	if (kv_blocks <= 0) {  // 4 full sessions, at most 2 GiB, at least one session
		size_t bb = lmd_kvcache_block_bytes(c->layers, c->kv_heads, c->head_dim, block_len,
						    o.dtype == LMD_DTYPE_NONE ? c->dtype : o.dtype);
		size_t cap = ((size_t)2 << 30) / (bb ? bb : 1);
		kv_blocks = 4 * max_blocks;
		if ((size_t)kv_blocks > cap)
			kv_blocks = (int)cap;
		if (kv_blocks < max_blocks)
			kv_blocks = max_blocks;
	}
	m->dims = (struct lmd_attn_dims){c->heads, c->kv_heads, c->head_dim, (float)(1.0 / sqrt(c->head_dim))};

	m->layer = lmd_calloc((size_t)c->layers, sizeof(*m->layer), err);
	if (!m->layer)
		return LMD_ENOMEM;
	if ((rc = load1(m, dir, &m->tok_embeddings, "tok_embeddings", err)) < 0 ||
	    (rc = load1(m, dir, &m->norm, "norm", err)) < 0)
		goto fail;
	if (c->tie_embeddings)
		m->output = m->tok_embeddings;
	else if ((rc = load1(m, dir, &m->output, "output", err)) < 0)
		goto fail;
	for (int l = 0; l < c->layers; l++) {
		struct lmd_layer *L = &m->layer[l];
		char n[8][64];
		const char *suffix[8] = {"attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w3"};
		for (int i = 0; i < 8; i++)
			snprintf(n[i], sizeof(n[i]), "layers.%d.%s", l, suffix[i]);
		const char *qkv[3] = {n[1], n[2], n[3]}, *w13[2] = {n[6], n[7]};
		char w2[64], b[4][64];
		snprintf(w2, sizeof(w2), "layers.%d.w2", l);
		const char *bsuf[4] = {"bq", "bk", "bv", "bo"};
		for (int i = 0; i < 4; i++)
			snprintf(b[i], sizeof(b[i]), "layers.%d.%s", l, bsuf[i]);
		const char *bqkv[3] = {b[0], b[1], b[2]};
		const char *wo[1] = {n[4]}, *w2s[1] = {w2};
		if ((rc = load1(m, dir, &L->attn_norm, n[0], err)) < 0 ||
		    (rc = load_lin(m, dir, &L->wqkv, &L->wqkv_s, &L->wqkv_z, qkv, 3, &L->group, err)) < 0 ||
		    (rc = load_lin(m, dir, &L->wo, &L->wo_s, &L->wo_z, wo, 1, &L->group, err)) < 0 ||
		    (rc = load1(m, dir, &L->ffn_norm, n[5], err)) < 0 ||
		    (rc = load_lin(m, dir, &L->w13, &L->w13_s, &L->w13_z, w13, 2, &L->group, err)) < 0 ||
		    (rc = load_lin(m, dir, &L->w2, &L->w2_s, &L->w2_z, w2s, 1, &L->group, err)) < 0 ||
		    (c->qkv_bias && (rc = load_cat(m, dir, &L->bqkv, bqkv, 3, err)) < 0) ||
		    (c->o_bias && (rc = load1(m, dir, &L->bo, b[3], err)) < 0))
			goto fail;
	}
	if (!be->ops->weights_in_place) {  // the backend copied them: the host copies can go
		for (int i = 0; i < m->nhost; i++)
			free(m->host[i]);
		m->nhost = 0;
	}
	if (o.kv_quant != LMD_KV_NONE && !be->ops->kv_quant) {
		rc = lmd_errorf(err, LMD_EINVAL, "--quant-policy %d: the %s backend has no quantized KV cache yet", (int)o.kv_quant,
				be->ops->name);
		goto fail;
	}
	if ((rc = lmd_kvcache_init(&m->kv, be, c->layers, c->kv_heads, c->head_dim, block_len, kv_blocks, m->dtype,
				   err)) < 0 ||
	    (rc = lmd_kvcache_set_quant(&m->kv, o.kv_quant, o.kv_params, err)) < 0 ||
	    (o.prefix_cache && c->rope.type != LMD_ROPE_DYNAMIC && (rc = lmd_kvcache_enable_prefix(&m->kv, err)) < 0))
		goto fail;

	int64_t T = m->max_tokens, qkvw = (int64_t)(c->heads + 2 * c->kv_heads) * c->head_dim;
	m->logit_rows = m->max_tokens < 128 ? m->max_tokens : 128;
	if ((rc = alloc_ws(m, &m->x, m->dtype, T, c->hidden, err)) < 0 ||
	    (rc = alloc_ws(m, &m->xn, m->dtype, T, c->hidden, err)) < 0 ||
	    (rc = alloc_ws(m, &m->o, m->dtype, T, c->hidden, err)) < 0 ||
	    (rc = alloc_ws(m, &m->qkv, m->dtype, T, qkvw, err)) < 0 ||
	    (rc = alloc_ws(m, &m->att, m->dtype, T, (int64_t)c->heads * c->head_dim, err)) < 0 ||
	    (rc = alloc_ws(m, &m->gu, m->dtype, T, 2 * (int64_t)c->inter, err)) < 0 ||
	    (rc = alloc_ws(m, &m->h, m->dtype, T, c->inter, err)) < 0 ||
	    (rc = alloc_ws(m, &m->lo, m->dtype, m->logit_rows, c->hidden, err)) < 0 ||
	    (rc = alloc_ws(m, &m->logits, LMD_F32, m->logit_rows, c->vocab, err)) < 0 ||
	    (rc = alloc_ws(m, &m->pick_head, LMD_I32, m->logit_rows, 2, err)) < 0 ||
	    (rc = alloc_ws(m, &m->pick_cand, LMD_I32, m->logit_rows, 2 * LMD_PICK_CAP, err)) < 0)
		goto fail;
	int S = m->max_seqs;
	m->s_tokens = lmd_malloc((size_t)T * sizeof(int32_t), err);
	m->s_pos = lmd_malloc((size_t)T * sizeof(int32_t), err);
	m->s_seq = lmd_malloc((size_t)T * sizeof(int32_t), err);
	m->s_out = lmd_malloc((size_t)T * sizeof(int32_t), err);
	m->s_table = lmd_malloc((size_t)S * max_blocks * sizeof(int32_t), err);
	m->s_freq = lmd_malloc((size_t)S * (c->head_dim / 2) * sizeof(float), err);
	m->h_head = lmd_malloc((size_t)m->logit_rows * 2 * sizeof(int32_t), err);
	m->h_cand = lmd_malloc((size_t)m->logit_rows * 2 * LMD_PICK_CAP * sizeof(int32_t), err);
	m->h_cap = LMD_PICK_CAP;  // grown by lmd_model_forward_pick as needed
	m->h_val = lmd_malloc(m->h_cap * sizeof(float), err);
	m->h_idx = lmd_malloc(m->h_cap * sizeof(int32_t), err);
	if (!m->s_tokens || !m->s_pos || !m->s_seq || !m->s_out || !m->s_table || !m->s_freq || !m->h_head ||
	    !m->h_cand || !m->h_val || !m->h_idx) {
		rc = LMD_ENOMEM;
		goto fail;
	}
	return LMD_OK;
fail:
	lmd_model_close(m);
	return rc;
}

static void release(struct lmd_model *m, struct lmd_tensor *t)
{
	if (t->data)
		m->be->ops->release(m->be->ctx, t);
}

void lmd_model_close(struct lmd_model *m)
{
	if (!m->be)
		return;
	lmd_kvcache_free(&m->kv);
	struct lmd_tensor *ws[] = {&m->x, &m->xn, &m->o, &m->qkv, &m->att, &m->gu, &m->h, &m->lo, &m->logits,
				   &m->pick_head, &m->pick_cand};
	for (size_t i = 0; i < sizeof(ws) / sizeof(ws[0]); i++)
		release(m, ws[i]);
	if (!m->be->ops->weights_in_place) {  // weights are backend allocations
		release(m, &m->tok_embeddings);
		release(m, &m->norm);
		if (!m->cfg.tie_embeddings)
			release(m, &m->output);
		for (int l = 0; m->layer && l < m->cfg.layers; l++) {
			struct lmd_layer *L = &m->layer[l];
			struct lmd_tensor *w[] = {&L->attn_norm, &L->wqkv, &L->bqkv, &L->wo, &L->bo, &L->ffn_norm, &L->w13, &L->w2,
						  &L->wqkv_s, &L->wqkv_z, &L->wo_s, &L->wo_z, &L->w13_s, &L->w13_z, &L->w2_s, &L->w2_z};
			for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++)
				release(m, w[i]);
		}
	}
	free(m->layer);
	for (int i = 0; i < m->nhost; i++)
		free(m->host[i]);
	free(m->host);
	free(m->s_tokens);
	free(m->s_pos);
	free(m->s_seq);
	free(m->s_out);
	free(m->s_table);
	free(m->s_freq);
	free(m->h_head);
	free(m->h_cand);
	free(m->h_val);
	free(m->h_idx);
	free(m->h_rows);
	free(m->h_stage);
	memset(m, 0, sizeof(*m));
}

// ----------------------------------------------------------------------------
// batches

int lmd_batch_add(struct lmd_batch *b, struct lmd_kvseq *s, int32_t token, int want_logits, struct lmd_err *err)
{
	int si = -1;
	for (int i = b->nseq - 1; i >= 0; i--)
		if (b->seqs[i] == s) {
			si = i;
			break;
		}
	if (si < 0) {
		if (b->nseq == b->seq_cap) {
			int cap = b->seq_cap ? 2 * b->seq_cap : 16;
			struct lmd_kvseq **ns = realloc(b->seqs, (size_t)cap * sizeof(*ns));
			if (ns)
				b->seqs = ns;
			int32_t *nn = realloc(b->seq_new, (size_t)cap * sizeof(*nn));
			if (nn)
				b->seq_new = nn;
			if (!ns || !nn)
				return lmd_errorf(err, LMD_ENOMEM, "out of memory growing a batch");
			b->seq_cap = cap;
		}
		si = b->nseq++;
		b->seqs[si] = s;
		b->seq_new[si] = 0;
	}
	if (b->n == b->cap) {
		int cap = b->cap ? 2 * b->cap : 64;
		int32_t *t = realloc(b->tokens, (size_t)cap * sizeof(*t));
		if (t)
			b->tokens = t;
		int32_t *q = realloc(b->seq, (size_t)cap * sizeof(*q));
		if (q)
			b->seq = q;
		uint8_t *l = realloc(b->logits, (size_t)cap);
		if (l)
			b->logits = l;
		if (!t || !q || !l)
			return lmd_errorf(err, LMD_ENOMEM, "out of memory growing a batch");
		b->cap = cap;
	}
	b->tokens[b->n] = token;
	b->seq[b->n] = si;
	b->logits[b->n] = want_logits != 0;
	b->nout += want_logits != 0;
	b->seq_new[si]++;
	b->n++;
	return LMD_OK;
}

void lmd_batch_clear(struct lmd_batch *b)
{
	b->n = b->nseq = b->nout = 0;
}

void lmd_batch_free(struct lmd_batch *b)
{
	free(b->tokens);
	free(b->seq);
	free(b->logits);
	free(b->seqs);
	free(b->seq_new);
	memset(b, 0, sizeof(*b));
}

int lmd_model_blocks_needed(const struct lmd_model *m, const struct lmd_batch *b)
{
	int need = 0;
	for (int i = 0; i < b->nseq; i++)
		need += lmd_kvseq_blocks_needed(&m->kv, b->seqs[i], b->seqs[i]->len + b->seq_new[i]);
	return need;
}

int lmd_model_free_blocks(const struct lmd_model *m)
{
	return lmd_kvcache_free_blocks(&m->kv);
}

int lmd_model_seq_blocks_needed(const struct lmd_model *m, const struct lmd_kvseq *s, int ntokens)
{
	return lmd_kvseq_blocks_needed(&m->kv, s, s->len + ntokens);
}

void lmd_model_seq_release(struct lmd_model *m, struct lmd_kvseq *s)
{
	lmd_kvseq_release(&m->kv, s);
}

void lmd_model_seq_truncate(struct lmd_model *m, struct lmd_kvseq *s, int len)
{
	lmd_kvseq_truncate(&m->kv, s, len);
}

// ----------------------------------------------------------------------------
// the forward pass

static struct lmd_tensor view(const struct lmd_tensor *t, int64_t rows)
{
	struct lmd_tensor v = *t;
	v.shape[0] = rows;
	return v;
}

/* Check the batch and fill the step's arrays; reserve KV blocks. */
static int prepare(struct lmd_model *m, const struct lmd_batch *b, struct lmd_step *s, struct lmd_err *err)
{
	const struct lmd_config *c = &m->cfg;
	if (b->n <= 0)
		return lmd_errorf(err, LMD_EINVAL, "empty batch");
	if (b->n > m->max_tokens)
		return lmd_errorf(err, LMD_EINVAL, "batch of %d tokens exceeds max_tokens %d", b->n, m->max_tokens);
	if (b->nseq > m->max_seqs)
		return lmd_errorf(err, LMD_EINVAL, "batch of %d sequences exceeds max_seqs %d", b->nseq, m->max_seqs);
	for (int i = 0; i < b->n; i++)
		if (b->tokens[i] < 0 || b->tokens[i] >= c->vocab)
			return lmd_errorf(err, LMD_EINVAL, "token id %d out of range (vocab %d)", b->tokens[i], c->vocab);
	for (int i = 0; i < b->nseq; i++)
		if (b->seqs[i]->len + b->seq_new[i] > m->session_len)
			return lmd_errorf(err, LMD_EINVAL, "sequence of %d tokens exceeds session_len %d",
					  b->seqs[i]->len + b->seq_new[i], m->session_len);
	int need = lmd_model_blocks_needed(m, b);
	if (need > lmd_kvcache_free_blocks(&m->kv))
		return lmd_errorf(err, LMD_ENOMEM, "kv cache full: %d blocks needed, %d free of %d", need,
				  lmd_kvcache_free_blocks(&m->kv), m->kv.nblocks);
	int max_blocks = 0;
	for (int i = 0; i < b->nseq; i++) {
		TRY(lmd_kvseq_reserve(&m->kv, b->seqs[i], b->seqs[i]->len + b->seq_new[i], err));
		max_blocks = b->seqs[i]->nblocks > max_blocks ? b->seqs[i]->nblocks : max_blocks;
	}
	int half = c->head_dim / 2;
	for (int i = 0; i < b->nseq; i++) {
		const struct lmd_kvseq *q = b->seqs[i];
		memcpy(m->s_table + (size_t)i * max_blocks, q->blocks, (size_t)q->nblocks * sizeof(int32_t));
		for (int j = q->nblocks; j < max_blocks; j++)
			m->s_table[(size_t)i * max_blocks + j] = -1;
		if (i == 0 || c->rope.type == LMD_ROPE_DYNAMIC) {
			int len = q->len + b->seq_new[i];
			float *f = m->s_freq + (size_t)i * half;
			lmd_rope_inv_freq(&c->rope, c->head_dim, c->max_pos, len, f);
			int orig = c->rope.original_max_pos > 0 ? c->rope.original_max_pos : c->max_pos;
			if (m->hf_rope_rounding && !(c->rope.type == LMD_ROPE_DYNAMIC && len > orig))
				for (int j = 0; j < half; j++)
					f[j] = c->dtype == LMD_F16 ? lmd_f16_to_f32(lmd_f32_to_f16(f[j]))
					       : c->dtype == LMD_BF16 ? lmd_bf16_to_f32(lmd_f32_to_bf16(f[j]))
					       : f[j];
		} else
			memcpy(m->s_freq + (size_t)i * half, m->s_freq, (size_t)half * sizeof(float));
	}
	int32_t *placed = m->s_out;  // borrowed as scratch, refilled below
	for (int i = 0; i < b->nseq; i++)
		placed[i] = 0;
	for (int i = 0; i < b->n; i++) {
		int si = b->seq[i];
		m->s_tokens[i] = b->tokens[i];
		m->s_seq[i] = si;
		m->s_pos[i] = b->seqs[si]->len + placed[si]++;
	}
	int nout = 0;
	for (int i = 0; i < b->n; i++)
		if (b->logits[i])
			m->s_out[nout++] = i;
	*s = (struct lmd_step){.n = b->n, .tokens = m->s_tokens, .pos = m->s_pos, .seq = m->s_seq, .nseq = b->nseq,
			       .block_table = m->s_table, .max_blocks = max_blocks, .rot_half = half,
			       .inv_freq = m->s_freq, .nout = nout, .out_rows = m->s_out,
			       .replay = m->tap ? 0 : m->id};
	return LMD_OK;
}

static void tap(struct lmd_model *m, int layer, enum lmd_tap point, const struct lmd_tensor *t, struct lmd_err *err)
{
	if (m->tap) {
		m->be->ops->sync(m->be->ctx, err);  // the tap reads what the ops before it wrote
		m->tap(m->tap_ctx, layer, point, t);
	}
}

/* A layer's weight as the ops take it (scales and bias NULL where the model has none). */
static struct lmd_linear lin_of(const struct lmd_tensor *w, const struct lmd_tensor *s, const struct lmd_tensor *z, int group,
				const struct lmd_tensor *bias)
{
	return (struct lmd_linear){.w = w, .scales = s->data ? s : NULL, .zeros = z, .bias = bias && bias->data ? bias : NULL,
				   .group = group};
}

/* The step up to the final norm: then m->xn [b->n, hidden] holds the normalized hidden states. */
static int forward_layers(struct lmd_model *m, const struct lmd_batch *b, struct lmd_step *s, struct lmd_err *err)
{
	const struct lmd_backend_ops *ops = m->be->ops;
	void *ctx = m->be->ctx;
	const struct lmd_config *c = &m->cfg;
	const struct lmd_attn_dims *d = &m->dims;
	float eps = (float)c->rms_eps;
	TRY(prepare(m, b, s, err));
	int n = b->n;
	struct lmd_tensor x = view(&m->x, n), xn = view(&m->xn, n), o = view(&m->o, n), qkv = view(&m->qkv, n);
	struct lmd_tensor att = view(&m->att, n), gu = view(&m->gu, n), h = view(&m->h, n);
	TRY(ops->step_begin(ctx, s, err));
	TRY(ops->embed(ctx, &x, &m->tok_embeddings, err));
	for (int l = 0; l < c->layers; l++) {
		const struct lmd_layer *L = &m->layer[l];
		const struct lmd_linear wqkv = lin_of(&L->wqkv, &L->wqkv_s, &L->wqkv_z, L->group, &L->bqkv);
		const struct lmd_linear wo = lin_of(&L->wo, &L->wo_s, &L->wo_z, L->group, &L->bo);
		const struct lmd_linear w13 = lin_of(&L->w13, &L->w13_s, &L->w13_z, L->group, NULL);
		const struct lmd_linear w2 = lin_of(&L->w2, &L->w2_s, &L->w2_z, L->group, NULL);
		if (l == 0)
			TRY(ops->rmsnorm(ctx, &xn, &x, &L->attn_norm, eps, err));
		else
			TRY(ops->add_rmsnorm(ctx, &xn, &x, &o, &L->attn_norm, eps, err));
		tap(m, l, LMD_TAP_RESID, &x, err);
		tap(m, l, LMD_TAP_QKV_IN, &xn, err);
		TRY(lmd_linear_apply(ops, ctx, &qkv, &xn, &wqkv, err));
		TRY(ops->rope_kv_store(ctx, &qkv, &m->kv, l, d, err));
		tap(m, l, LMD_TAP_QKV, &qkv, err);
		TRY(ops->attention(ctx, &att, &qkv, &m->kv, l, d, err));
		tap(m, l, LMD_TAP_O_IN, &att, err);
		TRY(lmd_linear_apply(ops, ctx, &o, &att, &wo, err));
		TRY(ops->add_rmsnorm(ctx, &xn, &x, &o, &L->ffn_norm, eps, err));
		tap(m, l, LMD_TAP_W13_IN, &xn, err);
		TRY(ops->gate_up(ctx, &h, &gu, &xn, w13.w, w13.scales, w13.zeros, w13.group, err));
		tap(m, l, LMD_TAP_W2_IN, &h, err);
		TRY(lmd_linear_apply(ops, ctx, &o, &h, &w2, err));
	}
	TRY(ops->add_rmsnorm(ctx, &xn, &x, &o, &m->norm, eps, err));
	for (int i = 0; i < b->nseq; i++)
		b->seqs[i]->len += b->seq_new[i];
	return LMD_OK;
}

/* lg = a view of m->logits: the logits of the step's wanted rows first .. first + k - 1. */
static int lm_head(struct lmd_model *m, const struct lmd_step *s, int first, int k, struct lmd_tensor *lg,
		   struct lmd_err *err)
{
	struct lmd_tensor lo = view(&m->lo, k), xn = view(&m->xn, s->n);
	*lg = view(&m->logits, k);
	TRY(m->be->ops->gather_rows(m->be->ctx, &lo, &xn, first, err));
	return m->be->ops->matmul(m->be->ctx, lg, &lo, &m->output, NULL, err);
}

int lmd_model_forward(struct lmd_model *m, const struct lmd_batch *b, float *logits, struct lmd_err *err)
{
	const struct lmd_backend_ops *ops = m->be->ops;
	void *ctx = m->be->ctx;
	int V = m->cfg.vocab;
	struct lmd_step s;
	TRY(forward_layers(m, b, &s, err));
	for (int first = 0; first < s.nout; first += m->logit_rows) {
		int k = s.nout - first < m->logit_rows ? s.nout - first : m->logit_rows;
		struct lmd_tensor lg;
		TRY(lm_head(m, &s, first, k, &lg, err));
		TRY(ops->download(ctx, logits + (size_t)first * V, &lg, 0, (size_t)k * V * sizeof(float), err));
	}
	return ops->sync(ctx, err);
}

/* Room for n elements of size each at *p (a float * or int32_t *; it never shrinks); *cap counts them. */
static int grow(void **p, size_t *cap, size_t n, size_t size, struct lmd_err *err)
{
	if (n <= *cap)
		return LMD_OK;
	n = n > 2 * *cap ? n : 2 * *cap;
	void *q = realloc(*p, n * size);
	if (!q)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory (%zu bytes of sampling buffers)", n * size);
	*p = q;
	*cap = n;
	return LMD_OK;
}

/* Does row j of a chunk cross whole: its spread is NaN, or its candidates did not fit the cap? */
static int whole_row(const float *sp, const int32_t *head, int j)
{
	return isnan(sp[j]) || (sp[j] >= 0 && head[2 * j + 1] > LMD_PICK_CAP);
}

int lmd_model_forward_pick(struct lmd_model *m, const struct lmd_batch *b, const float *spread, const int32_t *top_k,
			   struct lmd_pick *out, struct lmd_err *err)
{
	const struct lmd_backend_ops *ops = m->be->ops;
	void *ctx = m->be->ctx;
	int V = m->cfg.vocab, cap = LMD_PICK_CAP;
	size_t rowb = (size_t)V * sizeof(float), candb = (size_t)2 * cap * sizeof(int32_t);
	struct lmd_step s;
	TRY(forward_layers(m, b, &s, err));
	size_t nval = 0;   // candidates so far, in h_val/h_idx
	size_t nrows = 0;  // rows asked for whole so far, in h_rows
	for (int first = 0; first < s.nout; first += m->logit_rows) {
		int k = s.nout - first < m->logit_rows ? s.nout - first : m->logit_rows;
		const float *sp = spread + first;
		const int32_t *tk = top_k ? top_k + first : NULL;
		const int32_t *head = m->h_head;
		struct lmd_tensor lg, hd = view(&m->pick_head, k), cand = view(&m->pick_cand, k);
		TRY(lm_head(m, &s, first, k, &lg, err));
		TRY(ops->pick(ctx, &hd, &cand, &lg, sp, tk, err));
		TRY(ops->download(ctx, m->h_head, &hd, 0, (size_t)k * 2 * sizeof(int32_t), err));
		/* Room, then the candidate block of rows lo..hi in one copy, then runs of whole rows (staged). */
		int lo = k, hi = -1, stage = 0;
		size_t need = 0, asked = 0;
		for (int j = 0; j < k; j++) {
			stage |= whole_row(sp, head, j);
			asked += isnan(sp[j]);
			if (!(sp[j] >= 0) || head[2 * j + 1] < 0)  /* count -1: logits not finite */
				continue;
			need += (size_t)head[2 * j + 1];
			if (head[2 * j + 1] > 0 && head[2 * j + 1] <= cap) {
				lo = j < lo ? j : lo;
				hi = j;
			}
		}
		size_t vcap = m->h_cap;
		TRY(grow((void **)&m->h_val, &vcap, nval + need, sizeof(float), err));
		TRY(grow((void **)&m->h_idx, &m->h_cap, nval + need, sizeof(int32_t), err));
		TRY(grow((void **)&m->h_rows, &m->h_nrows, (nrows + asked) * V, sizeof(float), err));
		if (stage)
			TRY(grow((void **)&m->h_stage, &m->h_nstage, (size_t)k * V, sizeof(float), err));
		if (hi >= 0)
			TRY(ops->download(ctx, m->h_cand + (size_t)lo * 2 * cap, &cand, (size_t)lo * candb,
					  (size_t)(hi - lo + 1) * candb, err));
		for (int j = 0; j < k;) {
			if (!whole_row(sp, head, j)) {
				j++;
				continue;
			}
			int e = j + 1;
			while (e < k && whole_row(sp, head, e))
				e++;
			TRY(ops->download(ctx, m->h_stage + (size_t)j * V, &lg, (size_t)j * rowb, (size_t)(e - j) * rowb, err));
			j = e;
		}
		for (int j = 0; j < k; j++) {
			int32_t best = head[2 * j], count = head[2 * j + 1];
			const float *row = stage ? m->h_stage + (size_t)j * V : NULL;  // for a whole_row
			out[first + j] = (struct lmd_pick){.best = count < 0 ? -1 : best};
			if (isnan(sp[j])) {
				memcpy(m->h_rows + nrows++ * V, row, rowb);
			} else if (count < 0) {  // not finite: nothing to sample from
			} else if (sp[j] >= 0 && count <= cap) {
				const int32_t *c = m->h_cand + (size_t)j * 2 * cap;
				for (int i = 0; i < count; i++) {
					memcpy(&m->h_val[nval + i], &c[2 * i], sizeof(float));
					m->h_idx[nval + i] = c[2 * i + 1];
				}
				out[first + j].n = count;
				nval += (size_t)count;
			} else if (sp[j] >= 0) {  // over cap: its candidates by pick's rule, from the row
				float cut = lmd_sample_cut(row, V, best, sp[j], tk ? tk[j] : 0);
				int n = lmd_sample_gather(row, V, cut, count, m->h_val + nval, m->h_idx + nval);
				out[first + j].n = n;
				nval += (size_t)n;
			}
		}
	}
	/* The pointers, now that the buffers have stopped moving: rows and candidates in row order. */
	size_t off = 0, r = 0;
	for (int i = 0; i < s.nout; i++) {
		if (isnan(spread[i])) {
			out[i].row = m->h_rows + r++ * V;
		} else if (spread[i] >= 0) {
			out[i].val = m->h_val + off;
			out[i].idx = m->h_idx + off;
			off += (size_t)out[i].n;
		}
	}
	return ops->sync(ctx, err);
}
