/*
 * The "cuda" backend (backend.h): context, device memory, the step's metadata, and the op table
 * whose entries are the launchers in elementwise.cu, matmul.cu and attention.cu.
 *
 * Everything runs in order on one non-blocking stream; download and sync wait for it. Each step's
 * host metadata (tokens, positions, sequence of each token, block tables, rotary frequencies, logit
 * rows) is packed into one pinned buffer and sent with one asynchronous copy in step_begin; the
 * device buffers only grow, so a steady decode loop allocates nothing. cuBLAS gets a 32 MiB
 * workspace (Hopper's recommendation) so that it never allocates either.
 */
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
			"waiting for the GPU and copies %.3f ms; GPU time from step start to the logits copy %.3f ms\n",
			c->prof_steps, c->prof_host_gap * 1e3 / c->prof_steps, c->prof_enqueue * 1e3 / c->prof_steps,
			c->prof_wait * 1e3 / c->prof_steps, c->prof_gpu_ms / c->prof_steps);
	if (c->prof_e0)
		cudaEventDestroy(c->prof_e0);
	if (c->prof_e1)
		cudaEventDestroy(c->prof_e1);
	cudaFreeHost(c->h_stage);
	cudaFree(c->d_meta);
	cudaFreeHost(c->h_meta);
	cudaFree(c->d_items);
	cudaFreeHost(c->h_items);
	cudaFree(c->part);
	cudaFree(c->blas_ws);
	if (c->blas)
		cublasDestroy(c->blas);
	if (c->meta_done)
		cudaEventDestroy(c->meta_done);
	if (c->items_done)
		cudaEventDestroy(c->items_done);
	if (c->st)
		cudaStreamDestroy(c->st);
	cudaGetLastError();
	free(c);
}

static int cuda_alloc(void *ctx, struct lmd_tensor *t, struct lmd_err *err)
{
	struct cuda_ctx *c = CTX(ctx);
	size_t n = lmd_tensor_nbytes(t);
	t->data = NULL;
	cudaError_t e = cudaMalloc(&t->data, n ? n : 16);
	if (e != cudaSuccess) {
		cudaGetLastError();
		t->data = NULL;
		return lmd_errorf(err, e == cudaErrorMemoryAllocation ? LMD_ENOMEM : LMD_EGPU,
				  "cudaMalloc of %zu bytes: %s", n, cudaGetErrorString(e));
	}
	c->allocated += n;
	return LMD_OK;
}

static void cuda_release(void *ctx, struct lmd_tensor *t)
{
	struct cuda_ctx *c = CTX(ctx);
	if (!t->data)
		return;
	cudaFree(t->data);
	c->allocated -= lmd_tensor_nbytes(t);
	t->data = NULL;
}

static int cuda_weight(void *ctx, struct lmd_tensor *dst, const struct lmd_tensor *src, struct lmd_err *err)
{
	struct cuda_ctx *c = CTX(ctx);
	*dst = *src;
	int rc = cuda_alloc(ctx, dst, err);
	if (rc)
		return rc;
	c->weights += lmd_tensor_nbytes(dst);
	CUDA_TRY(cudaMemcpy(dst->data, src->data, lmd_tensor_nbytes(src), cudaMemcpyHostToDevice), err);
	return LMD_OK;
}

static int cuda_upload(void *ctx, struct lmd_tensor *dst, size_t off, const void *src, size_t nbytes,
		       struct lmd_err *err)
{
	struct cuda_ctx *c = CTX(ctx);
	CUDA_TRY(cudaMemcpyAsync((char *)dst->data + off, src, nbytes, cudaMemcpyHostToDevice, c->st), err);
	CUDA_TRY(cudaStreamSynchronize(c->st), err);
	return LMD_OK;
}

/* Large copies go through a pinned buffer: DMA at full link speed, then one host memcpy. */
static int cuda_download(void *ctx, void *dst, const struct lmd_tensor *src, size_t off, size_t nbytes,
			 struct lmd_err *err)
{
	struct cuda_ctx *c = CTX(ctx);
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
	if (c->prof) {
		c->prof_t_begin = now_s();
		if (c->prof_t_sync_end > 0)
			c->prof_host_gap += c->prof_t_begin - c->prof_t_sync_end;
		c->prof_steps++;
		c->prof_in_step = 1;
		CUDA_TRY(cudaEventRecord(c->prof_e0, c->st), err);
	}
	size_t ntab = (size_t)s->nseq * s->max_blocks, nfreq = (size_t)s->nseq * s->rot_half;
	size_t o_tok = 0, o_pos = o_tok + up4(s->n), o_seq = o_pos + up4(s->n), o_tab = o_seq + up4(s->n);
	size_t o_out = o_tab + up4(ntab), o_freq = o_out + up4(s->nout), total = (o_freq + up4(nfreq)) * 4;
	if (total > c->meta_cap) {
		size_t cap = total * 2 > 65536 ? total * 2 : 65536;
		CUDA_TRY(cudaStreamSynchronize(c->st), err);
		cudaFree(c->d_meta);
		cudaFreeHost(c->h_meta);
		c->d_meta = c->h_meta = NULL;
		c->meta_cap = 0;
		CUDA_TRY(cudaMalloc(&c->d_meta, cap), err);
		CUDA_TRY(cudaMallocHost(&c->h_meta, cap), err);
		c->meta_cap = cap;
	}
	CUDA_TRY(cudaEventSynchronize(c->meta_done), err);  // the previous step's upload has left h_meta
	int32_t *h = (int32_t *)c->h_meta;
	memcpy(h + o_tok, s->tokens, (size_t)s->n * 4);
	memcpy(h + o_pos, s->pos, (size_t)s->n * 4);
	memcpy(h + o_seq, s->seq, (size_t)s->n * 4);
	if (ntab)
		memcpy(h + o_tab, s->block_table, ntab * 4);
	if (s->nout)
		memcpy(h + o_out, s->out_rows, (size_t)s->nout * 4);
	if (nfreq)
		memcpy(h + o_freq, s->inv_freq, nfreq * 4);
	CUDA_TRY(cudaMemcpyAsync(c->d_meta, c->h_meta, total, cudaMemcpyHostToDevice, c->st), err);
	CUDA_TRY(cudaEventRecord(c->meta_done, c->st), err);
	int32_t *d = (int32_t *)c->d_meta;
	c->d_tokens = d + o_tok;
	c->d_pos = d + o_pos;
	c->d_seq = d + o_seq;
	c->d_table = d + o_tab;
	c->d_out = d + o_out;
	c->d_freq = (const float *)(d + o_freq);
	c->step = *s;
	c->step_id++;
	c->max_len = 0;
	for (int i = 0; i < s->n; i++)
		if (s->pos[i] + 1 > c->max_len)
			c->max_len = s->pos[i] + 1;
	return LMD_OK;
}

static int op_embed(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *table, struct lmd_err *err)
{
	return lmd_cuda_embed(CTX(ctx), y, table, err);
}

static int op_rmsnorm(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *g, float eps,
		      struct lmd_err *err)
{
	return lmd_cuda_rmsnorm(CTX(ctx), y, x, g, eps, err);
}

static int op_add_rmsnorm(void *ctx, struct lmd_tensor *y, struct lmd_tensor *x, const struct lmd_tensor *r,
			  const struct lmd_tensor *g, float eps, struct lmd_err *err)
{
	return lmd_cuda_add_rmsnorm(CTX(ctx), y, x, r, g, eps, err);
}

static int op_matmul(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
		     const struct lmd_tensor *bias, struct lmd_err *err)
{
	return lmd_cuda_matmul(CTX(ctx), y, x, w, bias, err);
}

static int op_rope(void *ctx, struct lmd_tensor *qkv, const struct lmd_attn_dims *d, struct lmd_err *err)
{
	return lmd_cuda_rope(CTX(ctx), qkv, d, err);
}

static int op_kv_store(void *ctx, struct lmd_kvcache *kv, int layer, const struct lmd_tensor *qkv,
		       const struct lmd_attn_dims *d, struct lmd_err *err)
{
	return lmd_cuda_kv_store(CTX(ctx), kv, layer, qkv, d, err);
}

static int op_attention(void *ctx, struct lmd_tensor *att, const struct lmd_tensor *qkv, const struct lmd_kvcache *kv,
			int layer, const struct lmd_attn_dims *d, struct lmd_err *err)
{
	return lmd_cuda_attention(CTX(ctx), att, qkv, kv, layer, d, err);
}

static int op_silu_mul(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *gu, struct lmd_err *err)
{
	return lmd_cuda_silu_mul(CTX(ctx), y, gu, err);
}

static int op_gather_rows(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, int first, struct lmd_err *err)
{
	return lmd_cuda_gather_rows(CTX(ctx), y, x, first, err);
}

static const struct lmd_backend_ops cuda_ops = {
	.name = "cuda",
	.weights_in_place = 0,
	.close = cuda_close,
	.alloc = cuda_alloc,
	.release = cuda_release,
	.weight = cuda_weight,
	.upload = cuda_upload,
	.download = cuda_download,
	.sync = cuda_sync,
	.step_begin = cuda_step_begin,
	.embed = op_embed,
	.rmsnorm = op_rmsnorm,
	.add_rmsnorm = op_add_rmsnorm,
	.matmul = op_matmul,
	.rope = op_rope,
	.kv_store = op_kv_store,
	.attention = op_attention,
	.silu_mul = op_silu_mul,
	.matmul_q4 = NULL,  // int4 weights: CPU only for now (issue 6)
	.gather_rows = op_gather_rows,
	.pick = lmd_cuda_pick,
};

static int open_ctx(struct cuda_ctx *c, int dev, struct lmd_err *err)
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
	if (rc || (rc = lmd_cuda_matmul_init(c, err)))
		return rc;
	const char *g = getenv("LMD_CUDA_GEMM");
	c->cublas_gemm = g && !strcmp(g, "cublas");
	const char *pr = getenv("LMD_CUDA_PROFILE");
	c->prof = pr && !strcmp(pr, "1");
	if (c->prof) {
		CUDA_TRY(cudaEventCreate(&c->prof_e0), err);
		CUDA_TRY(cudaEventCreate(&c->prof_e1), err);
	}
	const char *fa = getenv("LMD_CUDA_FA");
	c->no_fa = fa && !strcmp(fa, "0");
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
	int rc = open_ctx(c, dev, err);
	if (rc) {
		cuda_close(c);
		return rc;
	}
	b->ops = &cuda_ops;
	b->ctx = c;
	return LMD_OK;
}

extern "C" int lmd_cuda_mem(const struct lmd_backend *b, struct lmd_cuda_mem *m, struct lmd_err *err)
{
	if (!b->ops || b->ops != &cuda_ops)
		return lmd_errorf(err, LMD_EINVAL, "not a cuda backend");
	struct cuda_ctx *c = CTX(b->ctx);
	memset(m, 0, sizeof(*m));
	CUDA_TRY(cudaMemGetInfo(&m->free, &m->total), err);
	m->free_at_open = c->free_at_open;
	m->allocated = c->allocated;
	m->weights = c->weights;
	m->internal = c->meta_cap + c->items_cap * sizeof(struct attn_item) + c->part_cap * sizeof(float);
	m->blas_ws = c->blas_ws_bytes;
	return LMD_OK;
}
