/*
 * The "cuda" backend (backend.h): context, device memory, the step's metadata, and the op table
 * whose entries are the launchers in elementwise.cu, matmul.cu, attention.cu and sample.cu.
 *
 * Everything runs in order on one non-blocking stream; download and sync wait for it. Each step's
 * host metadata (tokens, positions, sequence of each token, block tables, rotary frequencies, logit
 * rows) is packed into one pinned buffer and sent with one asynchronous copy in step_begin; the
 * device buffers only grow, so a steady decode loop allocates nothing. cuBLAS gets a 32 MiB
 * workspace (Hopper's recommendation) so that it never allocates either.
 *
 * CUDA graphs. A decode step (every sequence one token, every row's logits wanted, a model that
 * allows replay: lmd_step.replay) gets its attention items in the metadata upload and its block
 * table laid out with a power-of-two row stride, so that all its launches are fixed by a key
 * (model, tokens, attention splits, stride; struct graph_ent). The first step with a key runs as
 * called (it makes every buffer the key needs), the second is recorded by stream capture and
 * launched, later ones launch the graph at step_begin, so the GPU runs while the host walks the
 * step's ops, which skip their launches (each only adds its arguments to a signature, checked
 * against the recording's at the step's first download, sync, upload or pick: a mismatch is an
 * error). LMD_CUDA_GRAPH=0 runs every step as called.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.cuh"

#define BLAS_WS (32u << 20)

static struct cuda_ctx *CTX(void *p)
{
	return (struct cuda_ctx *)p;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int lmd_cuda_grow(struct cuda_ctx *c, void **p, size_t *cap, size_t need, struct lmd_err *err)
{
	if (need <= *cap)
		return LMD_OK;
	if (c->gmode == G_CAPTURE)
		return lmd_errorf(err, LMD_EGPU, "cuda: a buffer of %zu bytes needed while recording a graph (bug)", need);
	CUDA_TRY(cudaStreamSynchronize(c->st), err);
	cudaFree(*p);
	*p = NULL, *cap = 0;
	c->gen++;
	CUDA_TRY(cudaMalloc(p, need), err);
	*cap = need;
	return LMD_OK;
}

// ----------------------------------------------------------------------------
// CUDA graphs of decode steps (see the top of the file)

/* End a capture left open by a step that failed midway; its entry stays unrecorded. */
static void graph_abort(struct cuda_ctx *c)
{
	if (c->gmode == G_CAPTURE) {
		cudaGraph_t g = NULL;
		cudaStreamEndCapture(c->st, &g);
		if (g)
			cudaGraphDestroy(g);
		cudaGetLastError();
	}
	c->gmode = G_EAGER;
	c->gcur = NULL;
}

/* Pick this step's mode: find or make the key's entry (least recently used one replaced). */
static int graph_begin(struct cuda_ctx *c, int n, int splits, int stride, struct lmd_err *err)
{
	struct graph_ent *e = NULL, *old = &c->gcache[0];
	for (int i = 0; i < GRAPHS && !e; i++) {
		struct graph_ent *g = &c->gcache[i];
		if (g->used && g->replay == c->step.replay && g->n == n && g->splits == splits && g->stride == stride)
			e = g;
		else if (g->used < old->used)
			old = g;
	}
	if (e && e->gen != c->gen) {  // made before a buffer moved: start over
		if (e->exec)
			cudaGraphExecDestroy(e->exec);
		e->exec = NULL;
		e->gen = c->gen;
		e->used = ++c->gclock;
		return LMD_OK;
	}
	if (!e) {
		if (old->exec)
			cudaGraphExecDestroy(old->exec);
		memset(old, 0, sizeof(*old));
		old->replay = c->step.replay, old->n = n, old->splits = splits, old->stride = stride;
		old->gen = c->gen, old->used = ++c->gclock;
		return LMD_OK;  // first time: run as called
	}
	e->used = ++c->gclock;
	c->gcur = e;
	c->gops = 0;
	c->gsig = 1469598103934665603ull;
	if (e->exec) {  // launched now, so the GPU runs while the host walks the step's ops (checked at the end)
		c->gmode = G_REPLAY;
		CUDA_TRY(cudaGraphLaunch(e->exec, c->st), err);
		return LMD_OK;
	}
	CUDA_TRY(cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal), err);
	c->gmode = G_CAPTURE;
	return LMD_OK;
}

/*
 * An op of a captured or replayed step adds its arguments to the step's signature; returns 1 when the
 * op must not launch (its launch is in the graph).
 */
static int graph_note(struct cuda_ctx *c, int op, const void *a, const void *b, const void *d, int64_t v)
{
	if (c->gmode == G_EAGER)
		return 0;
	uint64_t w[5] = {(uint64_t)op, (uint64_t)(uintptr_t)a, (uint64_t)(uintptr_t)b, (uint64_t)(uintptr_t)d, (uint64_t)v};
	for (int i = 0; i < 5; i++)
		c->gsig = (c->gsig ^ w[i]) * 1099511628211ull;
	c->gops++;
	return c->gmode == G_REPLAY;
}

/* The step's recorded part ends here: finish the capture and launch it, or check the replay (launched at its begin). */
static int graph_end(struct cuda_ctx *c, struct lmd_err *err)
{
	struct graph_ent *e = c->gcur;
	int mode = c->gmode;
	if (mode == G_EAGER)
		return LMD_OK;
	c->gmode = G_EAGER;
	c->gcur = NULL;
	if (mode == G_CAPTURE) {
		cudaGraph_t g = NULL;
		CUDA_TRY(cudaStreamEndCapture(c->st, &g), err);
		cudaError_t r = cudaGraphInstantiate(&e->exec, g, 0);
		cudaGraphDestroy(g);
		if (r != cudaSuccess) {
			e->exec = NULL;
			return lmd_errorf(err, LMD_EGPU, "cudaGraphInstantiate: %s", cudaGetErrorString(r));
		}
		e->nops = c->gops;
		e->sig = c->gsig;
		c->g_captured++;
		CUDA_TRY(cudaGraphLaunch(e->exec, c->st), err);
		return LMD_OK;
	}
	if (c->gops != e->nops || c->gsig != e->sig)
		return lmd_errorf(err, LMD_EGPU, "cuda graph: the step called %d ops unlike the %d recorded for its key (bug)",
				  c->gops, e->nops);
	c->g_replayed++;
	return LMD_OK;
}

static void cuda_close(void *ctx)
{
	struct cuda_ctx *c = CTX(ctx);
	if (!c)
		return;
	cudaSetDevice(c->dev);
	if (c->st)
		cudaStreamSynchronize(c->st);
	if (c->prof && c->prof_steps)
		fprintf(stderr, "lmd cuda profile: %ld steps; per step: host between steps %.3f ms, enqueueing %.3f ms, "
			"waiting for the GPU and copies %.3f ms; GPU time from step start to the logits copy %.3f ms; "
			"CUDA graphs: %ld recorded, %ld replayed\n",
			c->prof_steps, c->prof_host_gap * 1e3 / c->prof_steps, c->prof_enqueue * 1e3 / c->prof_steps,
			c->prof_wait * 1e3 / c->prof_steps, c->prof_gpu_ms / c->prof_steps, c->g_captured, c->g_replayed);
	graph_abort(c);
	for (int i = 0; i < GRAPHS; i++)
		if (c->gcache[i].exec)
			cudaGraphExecDestroy(c->gcache[i].exec);
	if (c->prof_e0)
		cudaEventDestroy(c->prof_e0);
	if (c->prof_e1)
		cudaEventDestroy(c->prof_e1);
	free(c->runs);
	cudaFree(c->pad_x);
	cudaFree(c->rope_cs);
	cudaFree(c->pad_y);
	cudaFree(c->q4_deq);
	cudaFree(c->q4_part);
	cudaFree(c->kvp);
	free(c->kvp_host);
	cudaFreeHost(c->h_stage);
	cudaFree(c->d_meta);
	cudaFreeHost(c->h_meta);
	cudaFree(c->d_items);
	cudaFreeHost(c->h_items);
	cudaFree(c->d_fq);
	cudaFreeHost(c->h_fq);
	cudaFree(c->fq_scr);
	free(c->fq_groups);
	cudaFree(c->part);
	cudaFree(c->blas_ws);
	if (c->blas)
		cublasDestroy(c->blas);
	if (c->lt)
		cublasLtDestroy(c->lt);
	if (c->meta_done)
		cudaEventDestroy(c->meta_done);
	if (c->items_done)
		cudaEventDestroy(c->items_done);
	if (c->st)
		cudaStreamDestroy(c->st);
	cudaGetLastError();
	free(c->allocs);
	free(c);
}

/*
 * Room that alloc leaves after t: a 16-bit matrix (the model's activations; not weights) gets pad_rows
 * more rows, so that a padded product can read and write its last block in place (matmul.cu); it is
 * registered for lmd_cuda_room.
 */
static size_t alloc_room(const struct cuda_ctx *c, const struct lmd_tensor *t)
{
	bool pad = t->ndim == 2 && (t->dtype == LMD_F16 || t->dtype == LMD_BF16) && !c->lt_gemm && !c->cublas_gemm;
	return pad ? (size_t)c->pad_rows * (size_t)t->shape[1] * 2 : 0;
}

size_t lmd_cuda_room(const struct cuda_ctx *c, const void *p)
{
	const char *q = (const char *)p;
	for (int i = 0; i < c->n_allocs; i++)
		if (q >= c->allocs[i].p && q < c->allocs[i].p + c->allocs[i].bytes)
			return (size_t)(c->allocs[i].p + c->allocs[i].bytes - q);
	return 0;
}

/* t's device memory, with room bytes after it (registered when room > 0). */
static int dev_alloc_room(struct cuda_ctx *c, struct lmd_tensor *t, size_t room, struct lmd_err *err)
{
	size_t n = lmd_tensor_nbytes(t) + room;
	t->data = NULL;
	if (room && c->n_allocs == c->allocs_cap) {
		int cap = c->allocs_cap ? 2 * c->allocs_cap : 16;
		struct dev_alloc *a = (struct dev_alloc *)realloc(c->allocs, cap * sizeof(*a));
		if (!a)
			return lmd_errorf(err, LMD_ENOMEM, "cuda: out of host memory");
		c->allocs = a, c->allocs_cap = cap;
	}
	cudaError_t e = cudaMalloc(&t->data, n ? n : 16);
	if (e != cudaSuccess) {
		cudaGetLastError();
		t->data = NULL;
		return lmd_errorf(err, e == cudaErrorMemoryAllocation ? LMD_ENOMEM : LMD_EGPU,
				  "cudaMalloc of %zu bytes: %s", n, cudaGetErrorString(e));
	}
	if (room)
		c->allocs[c->n_allocs++] = dev_alloc{(const char *)t->data, n};
	c->allocated += n;
	return LMD_OK;
}

static int cuda_alloc(void *ctx, struct lmd_tensor *t, struct lmd_err *err)
{
	struct cuda_ctx *c = CTX(ctx);
	return dev_alloc_room(c, t, alloc_room(c, t), err);
}

static void cuda_release(void *ctx, struct lmd_tensor *t)
{
	struct cuda_ctx *c = CTX(ctx);
	if (!t->data)
		return;
	size_t n = lmd_tensor_nbytes(t);
	for (int i = 0; i < c->n_allocs; i++)
		if (c->allocs[i].p == (const char *)t->data) {
			n = c->allocs[i].bytes;
			c->allocs[i] = c->allocs[--c->n_allocs];
			break;
		}
	cudaFree(t->data);
	c->allocated -= n;
	t->data = NULL;
}

int lmd_cuda_alloc_weight(struct cuda_ctx *c, struct lmd_tensor *t, struct lmd_err *err)
{
	int rc = dev_alloc_room(c, t, 0, err);
	if (rc == LMD_OK)
		c->weights += lmd_tensor_nbytes(t);
	return rc;
}

int lmd_cuda_kv_params(struct cuda_ctx *c, const struct lmd_kvcache *kv, int layer, const float **out,
		       struct lmd_err *err)
{
	*out = NULL;
	if (!kv->params)
		return LMD_OK;
	size_t per = (size_t)2 * kv->kv_heads * 2, n = per * kv->layers * sizeof(float);
	/* copied when they differ from the last ones copied (a cache made at a freed one's address may hold others) */
	if (c->kvp_bytes != n || memcmp(c->kvp_host, kv->params, n)) {
		float *h = (float *)realloc(c->kvp_host, n);
		if (!h)
			return lmd_errorf(err, LMD_ENOMEM, "out of memory");
		c->kvp_host = h;
		int rc = lmd_cuda_grow(c, &c->kvp, &c->kvp_cap, n, err);
		if (rc)
			return rc;
		CUDA_TRY(cudaMemcpyAsync(c->kvp, kv->params, n, cudaMemcpyHostToDevice, c->st), err);
		CUDA_TRY(cudaStreamSynchronize(c->st), err);
		memcpy(c->kvp_host, kv->params, n);
		c->kvp_bytes = n;
	}
	*out = (const float *)c->kvp + per * layer;
	return LMD_OK;
}

static int cuda_weight(void *ctx, struct lmd_tensor *dst, const struct lmd_tensor *src, struct lmd_err *err)
{
	struct cuda_ctx *c = CTX(ctx);
	*dst = *src;
	int rc = lmd_cuda_alloc_weight(c, dst, err);
	if (rc)
		return rc;
	CUDA_TRY(cudaMemcpy(dst->data, src->data, lmd_tensor_nbytes(src), cudaMemcpyHostToDevice), err);
	return LMD_OK;
}

static int cuda_upload(void *ctx, struct lmd_tensor *dst, size_t off, const void *src, size_t nbytes,
		       struct lmd_err *err)
{
	struct cuda_ctx *c = CTX(ctx);
	int rc = graph_end(c, err);
	if (rc)
		return rc;
	CUDA_TRY(cudaMemcpyAsync((char *)dst->data + off, src, nbytes, cudaMemcpyHostToDevice, c->st), err);
	CUDA_TRY(cudaStreamSynchronize(c->st), err);
	return LMD_OK;
}

/* Large copies go through a pinned buffer: DMA at full link speed, then one host memcpy. */
static int cuda_download(void *ctx, void *dst, const struct lmd_tensor *src, size_t off, size_t nbytes,
			 struct lmd_err *err)
{
	struct cuda_ctx *c = CTX(ctx);
	int rc = graph_end(c, err);
	if (rc)
		return rc;
	double t0 = c->prof ? now_s() : 0;
	if (c->prof && c->prof_in_step) {
		c->prof_enqueue += t0 - c->prof_t_begin;
		CUDA_TRY(cudaEventRecord(c->prof_e1, c->st), err);
	}
	if (nbytes >= (1u << 20)) {
		if (nbytes > c->stage_cap) {
			CUDA_TRY(cudaStreamSynchronize(c->st), err);
			cudaFreeHost(c->h_stage);
			c->h_stage = NULL;
			c->stage_cap = 0;
			CUDA_TRY(cudaMallocHost(&c->h_stage, nbytes), err);
			c->stage_cap = nbytes;
		}
		CUDA_TRY(cudaMemcpyAsync(c->h_stage, (const char *)src->data + off, nbytes, cudaMemcpyDeviceToHost, c->st), err);
		CUDA_TRY(cudaStreamSynchronize(c->st), err);
		memcpy(dst, c->h_stage, nbytes);
	} else {
		CUDA_TRY(cudaMemcpyAsync(dst, (const char *)src->data + off, nbytes, cudaMemcpyDeviceToHost, c->st), err);
		CUDA_TRY(cudaStreamSynchronize(c->st), err);
	}
	if (c->prof) {
		double t1 = now_s();
		c->prof_wait += t1 - t0;
		if (c->prof_in_step) {
			float ms = 0;
			if (cudaEventElapsedTime(&ms, c->prof_e0, c->prof_e1) == cudaSuccess)
				c->prof_gpu_ms += ms;
			c->prof_in_step = 0;
		}
		c->prof_t_begin = t1;  // later downloads of the step count their own wait only
	}
	return LMD_OK;
}

static int cuda_sync(void *ctx, struct lmd_err *err)
{
	struct cuda_ctx *c = CTX(ctx);
	int rc = graph_end(c, err);
	if (rc)
		return rc;
	c->nruns = 0;  // the step is over: later products are not the step's rows
	double t0 = c->prof ? now_s() : 0;
	CUDA_TRY(cudaStreamSynchronize(c->st), err);
	CUDA_TRY(cudaGetLastError(), err);
	if (c->prof) {
		c->prof_t_sync_end = now_s();
		c->prof_wait += c->prof_t_sync_end - t0;
	}
	return LMD_OK;
}

static size_t up4(size_t n)
{
	return (n + 3) / 4 * 4;
}

static int cuda_step_begin(void *ctx, const struct lmd_step *s, struct lmd_err *err)
{
	struct cuda_ctx *c = CTX(ctx);
	graph_abort(c);  // a step that failed midway may have left a capture open
	if (c->prof) {
		c->prof_t_begin = now_s();
		if (c->prof_t_sync_end > 0)
			c->prof_host_gap += c->prof_t_begin - c->prof_t_sync_end;
		c->prof_steps++;
		c->prof_in_step = 1;
		CUDA_TRY(cudaEventRecord(c->prof_e0, c->st), err);
	}
	/* a decode step: one token per sequence (so n == nseq), every row's logits wanted (out_rows 0..n-1) */
	int dec = s->n == s->nseq && s->nout == s->n;
	int stride = s->max_blocks;
	if (dec)
		for (stride = 1; stride < s->max_blocks; stride *= 2)
			;
	size_t ntab = (size_t)s->nseq * stride, nfreq = (size_t)s->nseq * s->rot_half;
	size_t o_tok = 0, o_pos = o_tok + up4(s->n), o_seq = o_pos + up4(s->n), o_tab = o_seq + up4(s->n);
	size_t o_out = o_tab + up4(ntab), o_freq = o_out + up4(s->nout), o_items = o_freq + up4(nfreq);
	size_t total = (o_items + (dec ? (size_t)s->n * 4 : 0)) * 4;
	if (total > c->meta_cap) {
		size_t cap = total * 2 > 65536 ? total * 2 : 65536;
		CUDA_TRY(cudaStreamSynchronize(c->st), err);
		cudaFree(c->d_meta);
		cudaFreeHost(c->h_meta);
		c->d_meta = c->h_meta = NULL;
		c->meta_cap = 0;
		c->gen++;
		CUDA_TRY(cudaMalloc(&c->d_meta, cap), err);
		CUDA_TRY(cudaMallocHost(&c->h_meta, cap), err);
		c->meta_cap = cap;
	}
	CUDA_TRY(cudaEventSynchronize(c->meta_done), err);  // the previous step's upload has left h_meta
	int32_t *h = (int32_t *)c->h_meta;
	memcpy(h + o_tok, s->tokens, (size_t)s->n * 4);
	memcpy(h + o_pos, s->pos, (size_t)s->n * 4);
	memcpy(h + o_seq, s->seq, (size_t)s->n * 4);
	for (int i = 0; i < s->nseq && s->max_blocks; i++) {
		int32_t *row = h + o_tab + (size_t)i * stride;
		memcpy(row, s->block_table + (size_t)i * s->max_blocks, (size_t)s->max_blocks * 4);
		for (int j = s->max_blocks; j < stride; j++)
			row[j] = -1;
	}
	if (s->nout)
		memcpy(h + o_out, s->out_rows, (size_t)s->nout * 4);
	if (nfreq)
		memcpy(h + o_freq, s->inv_freq, nfreq * 4);
	c->dec_step = dec;
	c->nruns = 0;
	if (!dec) {
		if (s->n > c->runs_cap) {  // at most n / BLAS_RUN runs; host memory, grown
			int *r = (int *)realloc(c->runs, (size_t)s->n * 2 * sizeof(int));
			if (!r)
				return lmd_errorf(err, LMD_ENOMEM, "out of memory");
			c->runs = r;
			c->runs_cap = s->n;
		}
		for (int i = 0, len; i < s->n; i += len) {
			for (len = 1; i + len < s->n && s->seq[i + len] == s->seq[i] && s->pos[i + len] == s->pos[i] + len; len++)
				;
			if (len >= BLAS_RUN) {
				c->runs[2 * c->nruns] = i;
				c->runs[2 * c->nruns + 1] = len;
				c->nruns++;
			}
		}
	}
	c->dec_splits = dec ? lmd_cuda_decode_items(s, (struct attn_item *)(h + o_items)) : 0;
	CUDA_TRY(cudaMemcpyAsync(c->d_meta, c->h_meta, total, cudaMemcpyHostToDevice, c->st), err);
	CUDA_TRY(cudaEventRecord(c->meta_done, c->st), err);
	int32_t *d = (int32_t *)c->d_meta;
	c->d_tokens = d + o_tok;
	c->d_pos = d + o_pos;
	c->d_seq = d + o_seq;
	c->d_table = d + o_tab;
	c->d_out = d + o_out;
	c->d_freq = (const float *)(d + o_freq);
	c->d_dec_items = (const struct attn_item *)(d + o_items);
	c->step = *s;
	c->step.max_blocks = stride;
	c->step_id++;
	if (dec && s->replay && c->graphs)
		return graph_begin(c, s->n, c->dec_splits, stride, err);
	return LMD_OK;
}

static int op_embed(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *table, struct lmd_err *err)
{
	if (graph_note(CTX(ctx), 1, y->data, table->data, NULL, t_rows(y)))
		return LMD_OK;
	return lmd_cuda_embed(CTX(ctx), y, table, err);
}

static int op_rmsnorm(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *g, float eps,
		      struct lmd_err *err)
{
	if (graph_note(CTX(ctx), 2, y->data, x->data, g->data, t_rows(x)))
		return LMD_OK;
	return lmd_cuda_rmsnorm(CTX(ctx), y, x, g, eps, err);
}

static int op_add_rmsnorm(void *ctx, struct lmd_tensor *y, struct lmd_tensor *x, const struct lmd_tensor *r,
			  const struct lmd_tensor *g, float eps, struct lmd_err *err)
{
	if (graph_note(CTX(ctx), 3, y->data, r->data, g->data, (int64_t)(uintptr_t)x->data ^ t_rows(x)))
		return LMD_OK;
	return lmd_cuda_add_rmsnorm(CTX(ctx), y, x, r, g, eps, err);
}

static int op_matmul(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
		     const struct lmd_tensor *bias, struct lmd_err *err)
{
	if (graph_note(CTX(ctx), 4, y->data, x->data, w->data, (int64_t)(uintptr_t)(bias ? bias->data : NULL) ^ t_rows(x)))
		return LMD_OK;
	return lmd_cuda_matmul(CTX(ctx), y, x, w, bias, err);
}

static int cuda_weight_q4(void *ctx, struct lmd_tensor *dw, struct lmd_tensor *ds, struct lmd_tensor *dz,
			  const struct lmd_tensor *w, const struct lmd_tensor *s, const struct lmd_tensor *z, int group,
			  struct lmd_err *err)
{
	return lmd_cuda_weight_q4(CTX(ctx), dw, ds, dz, w, s, z, group, err);
}

static int op_matmul_q4(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
			const struct lmd_tensor *s, const struct lmd_tensor *z, int group, const struct lmd_tensor *bias,
			struct lmd_err *err)
{
	if (graph_note(CTX(ctx), 10, y->data, x->data, w->data,
		       ((int64_t)(uintptr_t)(bias ? bias->data : NULL) ^ t_rows(x)) * 31 + group))
		return LMD_OK;
	return lmd_cuda_matmul_q4(CTX(ctx), y, x, w, s, z, group, bias, err);
}

static int op_rope(void *ctx, struct lmd_tensor *qkv, const struct lmd_attn_dims *d, struct lmd_err *err)
{
	if (graph_note(CTX(ctx), 5, qkv->data, NULL, NULL, t_rows(qkv)))
		return LMD_OK;
	return lmd_cuda_rope(CTX(ctx), qkv, d, err);
}

static int op_kv_store(void *ctx, struct lmd_kvcache *kv, int layer, const struct lmd_tensor *qkv,
		       const struct lmd_attn_dims *d, struct lmd_err *err)
{
	if (graph_note(CTX(ctx), 6, kv->k[layer].data, kv->v[layer].data, qkv->data, layer))
		return LMD_OK;
	return lmd_cuda_kv_store(CTX(ctx), kv, layer, qkv, d, err);
}

static int op_rope_kv_store(void *ctx, struct lmd_tensor *qkv, struct lmd_kvcache *kv, int layer,
			    const struct lmd_attn_dims *d, struct lmd_err *err)
{
	if (graph_note(CTX(ctx), 11, qkv->data, kv->k[layer].data, kv->v[layer].data, layer))
		return LMD_OK;
	return lmd_cuda_rope_kv_store(CTX(ctx), qkv, kv, layer, d, err);
}

static int op_attention(void *ctx, struct lmd_tensor *att, const struct lmd_tensor *qkv, const struct lmd_kvcache *kv,
			int layer, const struct lmd_attn_dims *d, struct lmd_err *err)
{
	if (graph_note(CTX(ctx), 7, att->data, qkv->data, kv->k[layer].data, layer))
		return LMD_OK;
	return lmd_cuda_attention(CTX(ctx), att, qkv, kv, layer, d, err);
}

static int op_silu_mul(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *gu, struct lmd_err *err)
{
	if (graph_note(CTX(ctx), 8, y->data, gu->data, NULL, t_rows(gu)))
		return LMD_OK;
	return lmd_cuda_silu_mul(CTX(ctx), y, gu, err);
}

/* gate_up without its graph note: one kernel where one applies (LMD_CUDA_GU=1), else the product and silu_mul */
static int gate_up_run(struct cuda_ctx *c, struct lmd_tensor *y, struct lmd_tensor *gu, const struct lmd_tensor *x,
		       const struct lmd_tensor *w, const struct lmd_tensor *s, const struct lmd_tensor *z, int group,
		       struct lmd_err *err)
{
	if (c->fuse_gu) {
		int rc = s ? lmd_cuda_gate_up_q4_fused(c, y, gu, x, w, s, z, group, err) : lmd_cuda_gate_up_fused(c, y, gu, x, w, err);
		if (rc <= 0)
			return rc;
	}
	int rc = s ? lmd_cuda_matmul_q4(c, gu, x, w, s, z, group, NULL, err) : lmd_cuda_matmul(c, gu, x, w, NULL, err);
	return rc ? rc : lmd_cuda_silu_mul(c, y, gu, err);
}

static int op_gate_up(void *ctx, struct lmd_tensor *y, struct lmd_tensor *gu, const struct lmd_tensor *x,
		      const struct lmd_tensor *w, const struct lmd_tensor *s, const struct lmd_tensor *z, int group,
		      struct lmd_err *err)
{
	if (graph_note(CTX(ctx), 13, y->data, x->data, w->data, (int64_t)(uintptr_t)gu->data ^ t_rows(x)))
		return LMD_OK;
	return gate_up_run(CTX(ctx), y, gu, x, w, s, z, group, err);
}

static int op_gather_rows(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, int first, struct lmd_err *err)
{
	if (graph_note(CTX(ctx), 9, y->data, x->data, NULL, (int64_t)first << 32 ^ t_rows(y)))
		return LMD_OK;
	return lmd_cuda_gather_rows(CTX(ctx), y, x, first, err);
}

/* The spreads and top-k travel in the launch's arguments, so pick is never part of a recorded graph. */
static int op_pick(void *ctx, struct lmd_tensor *head, struct lmd_tensor *cand, const struct lmd_tensor *logits,
		   const float *spread, const int32_t *top_k, struct lmd_err *err)
{
	int rc = graph_end(CTX(ctx), err);
	return rc ? rc : lmd_cuda_pick(CTX(ctx), head, cand, logits, spread, top_k, err);
}

static int cuda_mem_info(void *ctx, struct lmd_mem_info *m, struct lmd_err *err)
{
	struct cuda_ctx *c = CTX(ctx);
	memset(m, 0, sizeof(*m));
	CUDA_TRY(cudaMemGetInfo(&m->free, &m->total), err);
	m->free_at_open = c->free_at_open;
	m->allocated = c->allocated;
	m->weights = c->weights;
	m->internal = c->meta_cap + c->items_cap * sizeof(struct attn_item) + c->part_cap + c->pad_x_cap +
		      c->pad_y_cap + c->q4_deq_cap + c->q4_part_cap + c->fq_cap * sizeof(int32_t) + c->fq_scr_cap +
		      c->kvp_cap;
	m->reserved = c->blas_ws_bytes;
	return LMD_OK;
}

static const struct lmd_backend_ops cuda_ops = {
	.name = "cuda",
	.weights_in_place = 0,
	.kv_quant = 1,
	.close = cuda_close,
	.alloc = cuda_alloc,
	.release = cuda_release,
	.weight = cuda_weight,
	.upload = cuda_upload,
	.download = cuda_download,
	.sync = cuda_sync,
	.mem_info = cuda_mem_info,
	.step_begin = cuda_step_begin,
	.embed = op_embed,
	.rmsnorm = op_rmsnorm,
	.add_rmsnorm = op_add_rmsnorm,
	.matmul = op_matmul,
	.rope = op_rope,
	.kv_store = op_kv_store,
	.rope_kv_store = op_rope_kv_store,
	.attention = op_attention,
	.silu_mul = op_silu_mul,
	.gate_up = op_gate_up,
	.matmul_q4 = op_matmul_q4,
	.weight_q4 = cuda_weight_q4,
	.gather_rows = op_gather_rows,
	.pick = op_pick,
};

#define TRY(x) do { int rc_ = (x); if (rc_) return rc_; } while (0)
#define STR_(x) #x
#define STR(x) STR_(x)

/* *v = the integer setting of the environment variable name, lo..hi (unset or empty: *v as it is); else LMD_EINVAL
 * naming it */
static int env_int(const char *name, int lo, int hi, const char *want, int *v, struct lmd_err *err)
{
	const char *s = getenv(name);
	char tail;
	int x;
	if (s && !*s)  // set to nothing: as if unset
		s = NULL;
	if (s && (sscanf(s, "%d%c", &x, &tail) != 1 || x < lo || x > hi))
		return lmd_errorf(err, LMD_EINVAL, "%s=%s: expected %s", name, s, want);
	if (s)
		*v = x;
	return LMD_OK;
}

static int open_ctx(struct cuda_ctx *c, int dev, int deterministic, struct lmd_err *err)
{
	cudaDeviceProp p;
	c->dev = dev;
	CUDA_TRY(cudaSetDevice(dev), err);
	CUDA_TRY(cudaGetDeviceProperties(&p, dev), err);
	c->sms = p.multiProcessorCount;
	CUDA_TRY(cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking), err);
	CUDA_TRY(cudaEventCreateWithFlags(&c->meta_done, cudaEventDisableTiming), err);
	CUDA_TRY(cudaEventCreateWithFlags(&c->items_done, cudaEventDisableTiming), err);
	CUBLAS_TRY(cublasCreate(&c->blas), err);
	CUBLAS_TRY(cublasSetStream(c->blas, c->st), err);
	/* fp32 accumulation all the way: no split-K reductions in f16/bf16 */
	CUBLAS_TRY(cublasSetMathMode(c->blas, CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION), err);
	c->blas_ws_bytes = BLAS_WS;
	CUDA_TRY(cudaMalloc(&c->blas_ws, c->blas_ws_bytes), err);
	CUBLAS_TRY(cublasSetWorkspace(c->blas, c->blas_ws, c->blas_ws_bytes), err);
	int rc = lmd_cuda_attention_init(c, err);
	if (rc || (rc = lmd_cuda_matmul_init(c, err)) || (rc = lmd_cuda_matmul_q4_init(c, err)))
		return rc;
	/* 16-bit products (matmul.cu): cublas (at each product's own shape: the default without deterministic);
	 * batch-invariant: padP (PAD_ROWS: deterministic's default), lmd (own kernels), lt, ltR. LMD_CUDA_GEMM
	 * overrides deterministic. */
	const char *g = getenv("LMD_CUDA_GEMM");
	char tail;
	c->cublas_gemm = !deterministic && !g;
	c->pad_rows = PAD_ROWS;
	const char *want = NULL;  // what a bad setting should have been
	if (!g)
		;
	else if (!strcmp(g, "cublas"))
		c->cublas_gemm = 1;
	else if (!strcmp(g, "lmd"))
		c->pad_rows = 0;
	else if (!strcmp(g, "lt"))
		c->lt_gemm = LT_ROWS;
	else if (!strncmp(g, "lt", 2)) {
		if (sscanf(g, "lt%d%c", &c->lt_gemm, &tail) != 1 || c->lt_gemm < 1 || c->lt_gemm > 4096)
			want = "ltR with R in 1..4096";
	} else if (sscanf(g, "pad%d%c", &c->pad_rows, &tail) != 1 || c->pad_rows < 16 || c->pad_rows > 4096)
		want = "cublas, lmd, padP (P in 16..4096), lt or ltR";
	if (want)
		return lmd_errorf(err, LMD_EINVAL, "LMD_CUDA_GEMM=%s: expected %s", g, want);
	if (c->lt_gemm)
		CUBLAS_TRY(cublasLtCreate(&c->lt), err);
	/* int4 products (matmul-q4.cu): streamR, q4_stream up to R rows (1..64; default Q4_STREAM_ROWS) and q4_piped
	 * above; or old */
	const char *q4 = getenv("LMD_CUDA_Q4");
	c->q4_stream_rows = Q4_STREAM_ROWS;
	if (q4 && !strcmp(q4, "old"))
		c->q4_stream_rows = 0;
	else if (q4 && (sscanf(q4, "stream%d%c", &c->q4_stream_rows, &tail) != 1 || c->q4_stream_rows < 1 ||
			c->q4_stream_rows > 64))
		return lmd_errorf(err, LMD_EINVAL, "LMD_CUDA_Q4=%s: expected streamR (R in 1..64) or old", q4);
	const char *dw = getenv("LMD_CUDA_DEC_WARPS");  // warps of a decode-attention block (16-bit cache): 4 or 8
	c->dec_warps = c->cublas_gemm ? 0 : 4;  // 0: 4 or 8 by the grid (attention.cu): not batch-invariant
	if (dw && (sscanf(dw, "%d%c", &c->dec_warps, &tail) != 1 || (c->dec_warps != 4 && c->dec_warps != 8)))
		return lmd_errorf(err, LMD_EINVAL, "LMD_CUDA_DEC_WARPS=%s: expected 4 or 8", dw);
	c->fuse_gu = 1;  // 0: the gate_up op as its two ops (the same bits)
	TRY(env_int("LMD_CUDA_GU", 0, 1, "0 or 1", &c->fuse_gu, err));
	c->q4_occ4 = 0;  // q4_stream up to 8 rows in 64 registers, 4 blocks an SM (off until measured)
	TRY(env_int("LMD_CUDA_Q4_OCC4", 0, 1, "0 or 1", &c->q4_occ4, err));
	c->q4_ring4 = Q4_RING4_KB;  // K tiles from which q4_stream's ring is 4 deep (0: never)
	TRY(env_int("LMD_CUDA_Q4_RING4", 0, INT_MAX, "a count of 128-input tiles (0: never)", &c->q4_ring4, err));
	c->gemv_rows = GEMV_ROWS;  // 16-bit products of up to R rows through gemv (with cublas_gemm)
	TRY(env_int("LMD_CUDA_GEMV", 0, GEMV_ROWS, "a row count 0.." STR(GEMV_ROWS) " (0: cuBLAS)", &c->gemv_rows, err));
	if (!c->cublas_gemm)
		c->gemv_rows = 0;
	c->q4_blas_rows = c->cublas_gemm ? Q4_BLAS_ROWS : 0;  // rows from which a product goes through cuBLAS (0: never)
	TRY(env_int("LMD_CUDA_Q4_BLAS", 0, INT_MAX, "a row count (0: never)", &c->q4_blas_rows, err));
	c->q4_persist = 1;  // q4_piped's blocks: as many as the GPU holds (0: one an item, for comparison: bench/results)
	TRY(env_int("LMD_CUDA_Q4_PERSIST", 0, 1, "0 or 1", &c->q4_persist, err));
	c->q4_split = 1;  // q4_piped's K ranges: 1 any count (q4_splits), 0 the slices
	TRY(env_int("LMD_CUDA_Q4_SPLIT", 0, 1, "0 or 1", &c->q4_split, err));
	if (!c->cublas_gemm)
		c->q4_split = 0;
	c->prof = 0;
	TRY(env_int("LMD_CUDA_PROFILE", 0, 1, "0 or 1", &c->prof, err));
	if (c->prof) {
		CUDA_TRY(cudaEventCreate(&c->prof_e0), err);
		CUDA_TRY(cudaEventCreate(&c->prof_e1), err);
	}
	c->graphs = 1;
	TRY(env_int("LMD_CUDA_GRAPH", 0, 1, "0 or 1", &c->graphs, err));
	c->pdl = 1;  // programmatic dependent launch (internal.cuh): Hopper on
	TRY(env_int("LMD_CUDA_PDL", 0, 1, "0 or 1", &c->pdl, err));
	c->pdl = c->pdl && p.major >= 9;
	int fuse = 1, fa = 1, fq = FQ_SCRATCH;
	TRY(env_int("LMD_CUDA_FUSE", 0, 1, "0 or 1", &fuse, err));
	TRY(env_int("LMD_CUDA_FA", 0, 1, "0 or 1", &fa, err));
	c->no_fuse = !fuse, c->no_fa = !fa;
	const char *kq = getenv("LMD_CUDA_KVQ");
	c->kvq_generic = kq && !strcmp(kq, "generic");  // the generic kernel, for comparison
	if (kq && !c->kvq_generic && strcmp(kq, "fast"))
		return lmd_errorf(err, LMD_EINVAL, "LMD_CUDA_KVQ=%s: expected fast or generic", kq);
	TRY(env_int("LMD_CUDA_FQ_SCRATCH", 1, INT_MAX, "a byte count of at least 1", &fq, err));
	c->fq_scratch = (size_t)fq;
	c->items_step = -1;
	CUDA_TRY(cudaMemGetInfo(&c->free_at_open, &c->total), err);
	return LMD_OK;
}

extern "C" int lmd_backend_cuda_open(struct lmd_backend *b, const struct lmd_backend_opts *opts, struct lmd_err *err)
{
	int dev = opts ? opts->device : 0;
	memset(b, 0, sizeof(*b));
	if (lmd_cuda_device_count() <= dev || dev < 0)
		return lmd_errorf(err, LMD_ENODEV, "device 'cuda': no usable GPU %d found", dev);
	struct cuda_ctx *c = (struct cuda_ctx *)calloc(1, sizeof(*c));
	if (!c)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	int rc = open_ctx(c, dev, opts ? opts->deterministic : 0, err);
	if (rc) {
		cuda_close(c);
		return rc;
	}
	b->ops = &cuda_ops;
	b->ctx = c;
	return LMD_OK;
}

