/*
 * The memory-bound ops of a step: embedding gather, RMSNorm (plain and fused with the residual
 * add), rotary embedding, the KV-cache store, SiLU·gate and the gather of the rows that get logits.
 * Each mirrors its CPU reference in ops-cpu.c rounding for rounding; only summation order differs.
 *
 * Math and layout (n = tokens of the step, shapes as in backend.h):
 *   embed        y[i, :] = table[tokens[i], :]                       grid n, block 256
 *   rmsnorm      y[r] = round(g * round(x[r] / sqrt(mean(x[r]²) + eps)))   grid rows, block 256
 *   add_rmsnorm  x[r] = round(x[r] + res[r]); then rmsnorm           grid rows, block 256
 *                (one pass: each thread re-reads the x elements it wrote itself, so no barrier is needed)
 *   rope         qkv[i, h*D + j], qkv[i, h*D + j + D/2] rotated by angle pos[i] * inv_freq[seq[i]][j]
 *                for the H query and KV key heads; cos/sin in double of the fp32 angle, as the
 *                reference does, computed once per token into shared memory.  grid n, block 256
 *   kv_store     K/V heads of qkv row i -> block table[seq[i]][pos[i] / block_len], row pos[i] % block_len
 *                of layer's [nblocks, KV, block_len, D] pools.   grid (n, KV), block D (<= 1024)
 *   silu_mul     y[r, j] = round(silu(gu[r, j])) * gu[r, inter + j]  grid-stride
 *   gather_rows  y[j] = x[out_rows[first + j]]                       grid rows, block 256
 */
#include "internal.cuh"

// ----------------------------------------------------------------------------
// CUDA kernels

__global__ void embed_kernel(void *y, int yt, const void *table, int tt, const int32_t *tokens, int hidden)
{
	size_t row = (size_t)tokens[blockIdx.x] * hidden, out = (size_t)blockIdx.x * hidden;
	for (int j = threadIdx.x; j < hidden; j += blockDim.x)
		st(y, yt, out + j, ld(table, tt, row + j));
}

__device__ float block_sum(float v)
{
	__shared__ float part[32];
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	int w = threadIdx.x / 32, l = threadIdx.x % 32;
	if (l == 0)
		part[w] = v;
	__syncthreads();
	float s = 0;
	for (int i = 0; i < (int)(blockDim.x + 31) / 32; i++)
		s += part[i];
	__syncthreads();
	return s;
}

/* res NULL: plain rmsnorm of x; else x += res first (stored back to x). */
__global__ void rmsnorm_kernel(void *y, int yt, void *x, int xt, const void *res, int rt, const void *g, int gt,
			       int n, float eps)
{
	size_t base = (size_t)blockIdx.x * n;
	float ss = 0;
	for (int i = threadIdx.x; i < n; i += blockDim.x) {
		float v = ld(x, xt, base + i);
		if (res) {
			v = rnd(v + ld(res, rt, base + i), xt);
			st(x, xt, base + i, v);
		}
		ss += v * v;
	}
	ss = block_sum(ss);
	float inv = 1.0f / sqrtf(ss / (float)n + eps);
	for (int i = threadIdx.x; i < n; i += blockDim.x) {
		float v = ld(x, xt, base + i);
		st(y, yt, base + i, ld(g, gt, i) * rnd(v * inv, yt));
	}
}

__global__ void rope_kernel(void *qkv, int qt, int64_t cols, const int32_t *pos, const int32_t *seq,
			    const float *inv_freq, int half, int D, int nheads)
{
	extern __shared__ float cs[];  // [half][2]
	int i = blockIdx.x;
	const float *f = inv_freq + (size_t)seq[i] * half;
	for (int j = threadIdx.x; j < half; j += blockDim.x) {
		float a = (float)pos[i] * f[j];
		double s, c;
		sincos((double)a, &s, &c);
		cs[2 * j] = (float)c;
		cs[2 * j + 1] = (float)s;
	}
	__syncthreads();
	size_t row = (size_t)i * cols;
	for (int k = threadIdx.x; k < nheads * half; k += blockDim.x) {
		int h = k / half, j = k % half;
		size_t a = row + (size_t)h * D + j, b = a + half;
		float c = cs[2 * j], sn = cs[2 * j + 1];
		float x0 = ld(qkv, qt, a), x1 = ld(qkv, qt, b);
		/* no FMA contraction: bit for bit what the reference's separate multiplies give */
		st(qkv, qt, a, __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, sn)));
		st(qkv, qt, b, __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, sn)));
	}
}

__global__ void kv_store_kernel(void *kc, void *vc, int kt, const void *qkv, int qt, int64_t cols, const int32_t *pos,
				const int32_t *seq, const int32_t *table, int max_blocks, int H, int KV, int D,
				int block_len)
{
	int i = blockIdx.x, h = blockIdx.y, p = pos[i];
	int blk = table[(size_t)seq[i] * max_blocks + p / block_len];
	if (blk < 0)
		return;  // the host reserved every block before the step; a hole here is a bug upstream
	size_t dst = (((size_t)blk * KV + h) * block_len + p % block_len) * D;
	size_t ks = (size_t)i * cols + (size_t)(H + h) * D, vs = (size_t)i * cols + (size_t)(H + KV + h) * D;
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		st(kc, kt, dst + d, ld(qkv, qt, ks + d));
		st(vc, kt, dst + d, ld(qkv, qt, vs + d));
	}
}

__global__ void silu_mul_kernel(void *y, int yt, const void *gu, int gt, int64_t rows, int64_t inter)
{
	int64_t total = rows * inter;
	for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (int64_t)gridDim.x * blockDim.x) {
		int64_t r = k / inter, j = k % inter;
		float g = ld(gu, gt, (size_t)(r * 2 * inter + j)), u = ld(gu, gt, (size_t)(r * 2 * inter + inter + j));
		st(y, yt, (size_t)k, rnd(g / (1.0f + expf(-g)), yt) * u);
	}
}

__global__ void gather_kernel(void *y, int yt, const void *x, int xt, const int32_t *out_rows, int first, int64_t n)
{
	size_t src = (size_t)out_rows[first + blockIdx.x] * n, dst = (size_t)blockIdx.x * n;
	for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
		st(y, yt, dst + j, ld(x, xt, src + j));
}

// ----------------------------------------------------------------------------
// kernel launchers

#define SHAPE_CHECK(cond, what) do { if (!(cond)) return lmd_errorf(err, LMD_EINVAL, "cuda %s: tensor shapes or dtypes do not match", what); } while (0)

int lmd_cuda_embed(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *table, struct lmd_err *err)
{
	int n = c->step.n;
	SHAPE_CHECK(t_cols(y) == t_cols(table) && t_rows(y) >= n && float_dt(y->dtype) && float_dt(table->dtype), "embed");
	embed_kernel<<<n, 256, 0, c->st>>>(y->data, y->dtype, table->data, table->dtype, c->d_tokens, (int)t_cols(y));
	LAUNCH_TRY(err);
	return LMD_OK;
}

int lmd_cuda_rmsnorm(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *g,
		     float eps, struct lmd_err *err)
{
	int64_t n = t_cols(x), rows = t_rows(x);
	SHAPE_CHECK(t_cols(y) == n && t_rows(y) == rows && lmd_tensor_numel(g) == n, "rmsnorm");
	if (rows == 0)
		return LMD_OK;
	rmsnorm_kernel<<<(unsigned)rows, 256, 0, c->st>>>(y->data, y->dtype, x->data, x->dtype, NULL, 0, g->data, g->dtype,
							   (int)n, eps);
	LAUNCH_TRY(err);
	return LMD_OK;
}

int lmd_cuda_add_rmsnorm(struct cuda_ctx *c, struct lmd_tensor *y, struct lmd_tensor *x, const struct lmd_tensor *r,
			 const struct lmd_tensor *g, float eps, struct lmd_err *err)
{
	int64_t n = t_cols(x), rows = t_rows(x);
	SHAPE_CHECK(t_cols(y) == n && t_rows(y) == rows && t_cols(r) == n && t_rows(r) == rows && lmd_tensor_numel(g) == n,
		    "add_rmsnorm");
	if (rows == 0)
		return LMD_OK;
	rmsnorm_kernel<<<(unsigned)rows, 256, 0, c->st>>>(y->data, y->dtype, x->data, x->dtype, r->data, r->dtype, g->data,
							   g->dtype, (int)n, eps);
	LAUNCH_TRY(err);
	return LMD_OK;
}

int lmd_cuda_rope(struct cuda_ctx *c, struct lmd_tensor *qkv, const struct lmd_attn_dims *d, struct lmd_err *err)
{
	int D = d->head_dim, half = D / 2, n = c->step.n;
	SHAPE_CHECK(t_cols(qkv) == (int64_t)(d->heads + 2 * d->kv_heads) * D && half == c->step.rot_half && t_rows(qkv) >= n,
		    "rope");
	rope_kernel<<<n, 256, (size_t)half * 2 * sizeof(float), c->st>>>(qkv->data, qkv->dtype, t_cols(qkv), c->d_pos,
									   c->d_seq, c->d_freq, half, D,
									   d->heads + d->kv_heads);
	LAUNCH_TRY(err);
	return LMD_OK;
}

int lmd_cuda_kv_store(struct cuda_ctx *c, struct lmd_kvcache *kv, int layer, const struct lmd_tensor *qkv,
		      const struct lmd_attn_dims *d, struct lmd_err *err)
{
	int D = d->head_dim, n = c->step.n;
	SHAPE_CHECK(D == kv->head_dim && d->kv_heads == kv->kv_heads && kv->quant == LMD_KV_NONE &&
		    t_cols(qkv) == (int64_t)(d->heads + 2 * d->kv_heads) * D && layer >= 0 && layer < kv->layers,
		    "kv_store");
	dim3 grid(n, d->kv_heads);
	kv_store_kernel<<<grid, D < 1024 ? D : 1024, 0, c->st>>>(kv->k[layer].data, kv->v[layer].data, kv->dtype,
								  qkv->data, qkv->dtype, t_cols(qkv), c->d_pos, c->d_seq,
								  c->d_table, c->step.max_blocks, d->heads, d->kv_heads,
								  D, kv->block_len);
	LAUNCH_TRY(err);
	return LMD_OK;
}

int lmd_cuda_silu_mul(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *gu, struct lmd_err *err)
{
	int64_t inter = t_cols(y), rows = t_rows(y);
	SHAPE_CHECK(t_cols(gu) == 2 * inter && t_rows(gu) == rows, "silu_mul");
	int64_t total = rows * inter, blocks = (total + 255) / 256;
	if (total == 0)
		return LMD_OK;
	silu_mul_kernel<<<(unsigned)(blocks < 8192 ? blocks : 8192), 256, 0, c->st>>>(y->data, y->dtype, gu->data,
										       gu->dtype, rows, inter);
	LAUNCH_TRY(err);
	return LMD_OK;
}

int lmd_cuda_gather_rows(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *x, int first,
			 struct lmd_err *err)
{
	int64_t rows = t_rows(y);
	SHAPE_CHECK(t_cols(y) == t_cols(x) && first >= 0 && first + rows <= c->step.nout, "gather_rows");
	if (rows == 0)
		return LMD_OK;
	gather_kernel<<<(unsigned)rows, 256, 0, c->st>>>(y->data, y->dtype, x->data, x->dtype, c->d_out, first, t_cols(x));
	LAUNCH_TRY(err);
	return LMD_OK;
}
