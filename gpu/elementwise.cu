/*
 * The memory-bound ops of a step: embedding gather, RMSNorm (plain and fused with the residual
 * add), rotary embedding, the KV-cache store, SiLU·gate and the gather of the rows that get logits.
 * Each mirrors its CPU reference in ops-cpu.c rounding for rounding; only summation order differs.
 *
 * Math and layout (n = tokens of the step, shapes as in backend.h):
 *   embed        y[i, :] = table[tokens[i], :]                       grid n, block 256
 *   rmsnorm      y[r] = round(g * round(x[r] / sqrt(mean(x[r]²) + eps)))   grid rows, block 256
 *   add_rmsnorm  x[r] = round(x[r] + res[r]); then rmsnorm           grid rows, block 256
 *                (the row stays in registers between the passes: up to 32 values per thread); 16-bit
 *                rows of a multiple of 256 values up to 8192: block n / 8, 16-byte loads
 *   rope         qkv[i, h*D + j], qkv[i, h*D + j + D/2] rotated by angle pos[i] * inv_freq[seq[i]][j]
 *                for the H query and KV key heads; cos/sin in double of the fp32 angle, as the
 *                reference does, computed once a step (the first layer's call) into a table [n][D/2].
 *                grid (n, pairs / 256), block 256
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
	pdl_start();
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

/*
 * res NULL: plain rmsnorm of x; else x += res first (stored back to x). VPT values per thread live in
 * registers between the two passes, and the loads of a row are all issued before the first is used
 * (a loop with a run-time trip count waited for each load in turn: ~10 us a row at decode).
 * VPT 0: any width, a plain loop (rows wider than 256 * 32).
 */
template <int VPT>
__global__ void rmsnorm_kernel(void *y, int yt, void *x, int xt, const void *res, int rt, const void *g, int gt,
			       int n, float eps)
{
	pdl_start();
	size_t base = (size_t)blockIdx.x * n;
	float ss = 0;
	if constexpr (VPT > 0) {
		float v[VPT];
#pragma unroll
		for (int k = 0; k < VPT; k++) {
			int i = threadIdx.x + k * blockDim.x;
			v[k] = i < n ? ld(x, xt, base + i) : 0.0f;
		}
		if (res) {
			float r[VPT];
#pragma unroll
			for (int k = 0; k < VPT; k++) {
				int i = threadIdx.x + k * blockDim.x;
				r[k] = i < n ? ld(res, rt, base + i) : 0.0f;
			}
#pragma unroll
			for (int k = 0; k < VPT; k++) {
				int i = threadIdx.x + k * blockDim.x;
				v[k] = rnd(v[k] + r[k], xt);
				if (i < n)
					st(x, xt, base + i, v[k]);
			}
		}
#pragma unroll
		for (int k = 0; k < VPT; k++)
			ss += v[k] * v[k];
		ss = block_sum(ss);
		float inv = 1.0f / sqrtf(ss / (float)n + eps);
#pragma unroll
		for (int k = 0; k < VPT; k++) {
			int i = threadIdx.x + k * blockDim.x;
			if (i < n)
				st(y, yt, base + i, ld(g, gt, i) * rnd(v[k] * inv, yt));
		}
	} else {
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
}

/*
 * rmsnorm_kernel for rows of n = 8 * blockDim.x values (blockDim.x a multiple of 32), x, res and y all of one
 * 16-bit type T, g of T or f32 (GF): each thread's 8 values of x, res and g in one 16-byte load each (two for
 * f32 g), all issued before the first is used. The same roundings; the sum of squares in another order.
 */
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void to_t(__half &d, float v) { d = __float2half_rn(v); }
__device__ __forceinline__ void to_t(__nv_bfloat16 &d, float v) { d = __float2bfloat16_rn(v); }

template <class T, bool GF>
__global__ void rmsnorm_vec_kernel(T *y, T *x, const T *res, const void *g, int n, float eps)
{
	pdl_start();
	size_t at = (size_t)blockIdx.x * n + 8 * threadIdx.x;
	union u8 { uint4 u; T t[8]; } xv, rv, yv;
	union { uint4 u[2]; float f[8]; T t[8]; } gv;
	xv.u = *(const uint4 *)(x + at);
	if (res)
		rv.u = *(const uint4 *)(res + at);
	if (GF) {
		gv.u[0] = ((const uint4 *)g)[2 * threadIdx.x];
		gv.u[1] = ((const uint4 *)g)[2 * threadIdx.x + 1];
	} else {
		gv.u[0] = ((const uint4 *)g)[threadIdx.x];
	}
	float v[8], ss = 0;
#pragma unroll
	for (int k = 0; k < 8; k++) {
		v[k] = to_f(xv.t[k]);
		if (res) {
			to_t(xv.t[k], v[k] + to_f(rv.t[k]));
			v[k] = to_f(xv.t[k]);
		}
		ss += v[k] * v[k];
	}
	if (res)
		*(uint4 *)(x + at) = xv.u;
	ss = block_sum(ss);
	float inv = 1.0f / sqrtf(ss / (float)n + eps);
#pragma unroll
	for (int k = 0; k < 8; k++) {
		T r;
		to_t(r, v[k] * inv);
		to_t(yv.t[k], (GF ? gv.f[k] : to_f(gv.t[k])) * to_f(r));
	}
	*(uint4 *)(y + at) = yv.u;
}

/* The step's cos/sin of every (token, pair): cs[i * half + j] (cos, sin) of pos[i] * inv_freq[seq[i]][j]. */
__global__ void rope_table_kernel(float2 *cs, const int32_t *pos, const int32_t *seq, const float *inv_freq, int half,
				  int64_t total)
{
	pdl_start();
	for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (int64_t)gridDim.x * blockDim.x) {
		int i = (int)(k / half), j = (int)(k % half);
		float a = (float)pos[i] * inv_freq[(size_t)seq[i] * half + j];
		double s, c;
		sincos((double)a, &s, &c);
		cs[k] = make_float2((float)c, (float)s);
	}
}

/* The pair (x0, x1) rotated by (cos, sin) t, without FMA contraction: bit for bit the reference's separate multiplies. */
__device__ __forceinline__ float2 rope_rot(float x0, float x1, float2 t)
{
	return make_float2(__fsub_rn(__fmul_rn(x0, t.x), __fmul_rn(x1, t.y)), __fadd_rn(__fmul_rn(x1, t.x), __fmul_rn(x0, t.y)));
}

/* Token blockIdx.x's pairs k = blockIdx.y * blockDim.x + threadIdx.x, + gridDim.y * blockDim.x, ... (pair j of head k / half). */
__global__ void rope_kernel(void *qkv, int qt, int64_t cols, const float2 *cs, int half, int D, int nheads)
{
	pdl_start();
	int i = blockIdx.x, total = nheads * half;
	size_t row = (size_t)i * cols;
	for (int k = blockIdx.y * blockDim.x + threadIdx.x; k < total; k += gridDim.y * blockDim.x) {
		int j = k % half;
		size_t a = row + (size_t)(k / half) * D + j;
		float2 t = cs[(size_t)i * half + j];
		float2 r = rope_rot(ld(qkv, qt, a), ld(qkv, qt, a + half), t);
		st(qkv, qt, a, r.x);
		st(qkv, qt, a + half, r.y);
	}
}

/*
 * rope and kv_store of a 16-bit or f32 cache in one kernel: block (token blockIdx.x, head blockIdx.y of the H q
 * and KV k heads), half threads on the pairs j, j + half as rope_kernel; a k head also goes to the cache as
 * kv_store_kernel would copy it (the value rounded to qkv's dtype, then to the cache's), with its v head.
 */
__global__ void rope_kv_kernel(void *qkv, int qt, int64_t cols, const float2 *cs, int half, void *kc, void *vc, int kt,
			       const int32_t *pos, const int32_t *seq, const int32_t *table, int max_blocks, int H,
			       int KV, int block_len)
{
	pdl_start();
	const int i = blockIdx.x, hh = blockIdx.y, D = 2 * half;
	const size_t a = (size_t)i * cols + (size_t)hh * D;
	bool store = hh >= H;
	size_t dst = 0;
	if (store) {
		int p = pos[i], blk = table[(size_t)seq[i] * max_blocks + p / block_len];
		store = blk >= 0;  // the host reserved every block before the step; a hole here is a bug upstream
		dst = (((size_t)blk * KV + (hh - H)) * block_len + p % block_len) * D;
	}
	for (int j = threadIdx.x; j < half; j += blockDim.x) {
		float2 t = cs[(size_t)i * half + j];
		float2 r = rope_rot(ld(qkv, qt, a + j), ld(qkv, qt, a + j + half), t);
		float y0 = rnd(r.x, qt), y1 = rnd(r.y, qt);
		st(qkv, qt, a + j, y0);
		st(qkv, qt, a + j + half, y1);
		if (store)
			st(kc, kt, dst + j, y0), st(kc, kt, dst + j + half, y1);
	}
	if (store) {
		size_t vs = (size_t)i * cols + (size_t)(hh + KV) * D;  // v head hh - H at column (H + KV + hh - H) D
		for (int d = threadIdx.x; d < D; d += blockDim.x)
			st(vc, kt, dst + d, ld(qkv, qt, vs + d));
	}
}

__global__ void kv_store_kernel(void *kc, void *vc, int kt, const void *qkv, int qt, int64_t cols, const int32_t *pos,
				const int32_t *seq, const int32_t *table, int max_blocks, int H, int KV, int D,
				int block_len)
{
	pdl_start();
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

/*
 * v as a value of the dtype pt: the nearest (dir 0), or the nearest on v's side dir (+1: >= v, -1: <= v); the
 * CPU's kv_round (ops-cpu.c), step for step.
 */
__device__ __forceinline__ float kv_round(float v, int pt, int dir)
{
	if (pt == DT_F32)
		return v;
	unsigned short h = pt == DT_F16 ? __half_as_ushort(__float2half_rn(v)) : __bfloat16_as_ushort(__float2bfloat16_rn(v));
	float r = pt == DT_F16 ? __half2float(__ushort_as_half(h)) : __bfloat162float(__ushort_as_bfloat16(h));
	if ((dir > 0 && r < v) || (dir < 0 && r > v)) {  // one step of pt further along dir
		h = r == 0 ? (dir > 0 ? 0x0001 : 0x8001) : (unsigned short)((r > 0) == (dir > 0) ? h + 1 : h - 1);
		r = pt == DT_F16 ? __half2float(__ushort_as_half(h)) : __bfloat162float(__ushort_as_bfloat16(h));
	}
	return r;
}

/*
 * Quantized store (kvcache.h, the CPU's lmd_kv_quantize): one warp per (token, kv head, K or V = blockIdx.z).
 * Online: zero = min rounded down to the cache's dtype pt, scale = (max - zero) / qmax (at least
 * LMD_KV_MIN_SCALE) rounded up; offline: the layer's fixed pair from params [2][KV][2], rounded to nearest.
 * q = clamp(round((x - zero) / scale), 0, qmax); int4 two a byte, low first. kq, vq: pairs of pt.
 */
__global__ void kv_store_q_kernel(uint8_t *kc, uint8_t *vc, void *kq, void *vq, int pt, int bits, const float *params,
				  const void *qkv, int qt, int64_t cols, const int32_t *pos, const int32_t *seq,
				  const int32_t *table, int max_blocks, int H, int KV, int D, int block_len)
{
	pdl_start();
	int i = blockIdx.x, h = blockIdx.y, w = blockIdx.z, lane = threadIdx.x, p = pos[i];
	int blk = table[(size_t)seq[i] * max_blocks + p / block_len];
	if (blk < 0)
		return;
	size_t tok = ((size_t)blk * KV + h) * block_len + p % block_len;
	size_t src = (size_t)i * cols + (size_t)(H + w * KV + h) * D;
	float qmax = (float)((1 << bits) - 1), scale, zero;
	if (params) {
		float fs = params[((size_t)w * KV + h) * 2];
		scale = kv_round(fs > LMD_KV_MIN_SCALE ? fs : LMD_KV_MIN_SCALE, pt, 0);
		zero = kv_round(params[((size_t)w * KV + h) * 2 + 1], pt, 0);
	} else {
		float mn = INFINITY, mx = -INFINITY;
		for (int d = lane; d < D; d += 32) {
			float x = ld(qkv, qt, src + d);
			mn = fminf(mn, x), mx = fmaxf(mx, x);
		}
		for (int off = 16; off > 0; off >>= 1) {
			mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, off));
			mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
		}
		zero = kv_round(__fadd_rn(mn, 0.0f), pt, -1);  // + 0: a -0 minimum gives +0, as on the CPU
		scale = __fdiv_rn(__fsub_rn(mx, zero), qmax);
		scale = kv_round(scale >= LMD_KV_MIN_SCALE ? scale : LMD_KV_MIN_SCALE, pt, 1);
	}
	if (lane == 0) {
		st(w ? vq : kq, pt, tok * 2, scale);
		st(w ? vq : kq, pt, tok * 2 + 1, zero);
	}
	uint8_t *dst = w ? vc : kc;
	if (bits == 8) {
		for (int d = lane; d < D; d += 32)
			dst[tok * D + d] = (uint8_t)fminf(fmaxf(roundf(__fdiv_rn(__fsub_rn(ld(qkv, qt, src + d), zero), scale)), 0),
							 qmax);
	} else {
		for (int d = 2 * lane; d < D; d += 64) {
			float a = fminf(fmaxf(roundf(__fdiv_rn(__fsub_rn(ld(qkv, qt, src + d), zero), scale)), 0), qmax);
			float b = fminf(fmaxf(roundf(__fdiv_rn(__fsub_rn(ld(qkv, qt, src + d + 1), zero), scale)), 0), qmax);
			dst[tok * (D / 2) + d / 2] = (uint8_t)((uint8_t)a | (uint8_t)b << 4);
		}
	}
}

__global__ void silu_mul_kernel(void *y, int yt, const void *gu, int gt, int64_t rows, int64_t inter)
{
	pdl_start();
	int64_t total = rows * inter;
	for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (int64_t)gridDim.x * blockDim.x) {
		int64_t r = k / inter, j = k % inter;
		float g = ld(gu, gt, (size_t)(r * 2 * inter + j)), u = ld(gu, gt, (size_t)(r * 2 * inter + inter + j));
		st(y, yt, (size_t)k, silu_of(g, u, yt));
	}
}

__global__ void gather_kernel(void *y, int yt, const void *x, int xt, const int32_t *out_rows, int first, int64_t n)
{
	pdl_start();
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
	pdl_launch(c, embed_kernel, n, 256, 0, y->data, y->dtype, table->data, table->dtype, c->d_tokens, (int)t_cols(y));
	LAUNCH_TRY(err);
	return LMD_OK;
}

static void rms_launch(struct cuda_ctx *c, int64_t rows, void *y, int yt, void *x, int xt, const void *r, int rt,
		       const void *g, int gt, int n, float eps)
{
	unsigned b = (unsigned)rows;
	bool vec = n % 256 == 0 && n <= 8 * 1024 && xt == yt && (!r || rt == xt) && (xt == DT_F16 || xt == DT_BF16) &&
		   (gt == xt || gt == DT_F32) && ((uintptr_t)y | (uintptr_t)x | (uintptr_t)r | (uintptr_t)g) % 16 == 0;
	if (vec) {  // the common case: one row's loads at once, 16 bytes a load
#define RMS_VEC(T, GF) pdl_launch(c, rmsnorm_vec_kernel<T, GF>, b, n / 8, 0, (T *)y, (T *)x, (const T *)r, g, n, eps)
		if (xt == DT_F16)
			gt == DT_F32 ? RMS_VEC(__half, true) : RMS_VEC(__half, false);
		else
			gt == DT_F32 ? RMS_VEC(__nv_bfloat16, true) : RMS_VEC(__nv_bfloat16, false);
#undef RMS_VEC
		return;
	}
	if (n <= 256 * 4)
		pdl_launch(c, rmsnorm_kernel<4>, b, 256, 0, y, yt, x, xt, r, rt, g, gt, n, eps);
	else if (n <= 256 * 8)
		pdl_launch(c, rmsnorm_kernel<8>, b, 256, 0, y, yt, x, xt, r, rt, g, gt, n, eps);
	else if (n <= 256 * 16)
		pdl_launch(c, rmsnorm_kernel<16>, b, 256, 0, y, yt, x, xt, r, rt, g, gt, n, eps);
	else if (n <= 256 * 32)
		pdl_launch(c, rmsnorm_kernel<32>, b, 256, 0, y, yt, x, xt, r, rt, g, gt, n, eps);
	else
		pdl_launch(c, rmsnorm_kernel<0>, b, 256, 0, y, yt, x, xt, r, rt, g, gt, n, eps);
}

int lmd_cuda_rmsnorm(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *g,
		     float eps, struct lmd_err *err)
{
	int64_t n = t_cols(x), rows = t_rows(x);
	SHAPE_CHECK(t_cols(y) == n && t_rows(y) == rows && lmd_tensor_numel(g) == n, "rmsnorm");
	if (rows == 0)
		return LMD_OK;
	rms_launch(c, rows, y->data, y->dtype, x->data, x->dtype, NULL, 0, g->data, g->dtype, (int)n, eps);
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
	rms_launch(c, rows, y->data, y->dtype, x->data, x->dtype, r->data, r->dtype, g->data, g->dtype, (int)n, eps);
	LAUNCH_TRY(err);
	return LMD_OK;
}

/* The step's cos/sin table (rope_table_kernel), made by its first rope */
static int rope_table(struct cuda_ctx *c, int half, struct lmd_err *err)
{
	if (c->rope_step == c->step_id)
		return LMD_OK;
	int64_t total = (int64_t)c->step.n * half;
	int rc = lmd_cuda_grow(c, (void **)&c->rope_cs, &c->rope_cs_cap, (size_t)total * sizeof(float2), err);
	if (rc)
		return rc;
	int64_t blocks = (total + 255) / 256;
	pdl_launch(c, rope_table_kernel, (unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, c->rope_cs, c->d_pos, c->d_seq,
		   c->d_freq, half, total);
	LAUNCH_TRY(err);
	c->rope_step = c->step_id;
	return LMD_OK;
}

int lmd_cuda_rope(struct cuda_ctx *c, struct lmd_tensor *qkv, const struct lmd_attn_dims *d, struct lmd_err *err)
{
	int D = d->head_dim, half = D / 2, n = c->step.n, nheads = d->heads + d->kv_heads;
	SHAPE_CHECK(t_cols(qkv) == (int64_t)(d->heads + 2 * d->kv_heads) * D && half == c->step.rot_half && t_rows(qkv) >= n,
		    "rope");
	if (n == 0)
		return LMD_OK;
	int rc = rope_table(c, half, err);
	if (rc)
		return rc;
	int by = (nheads * half + 255) / 256;
	pdl_launch(c, rope_kernel, dim3(n, by < 65535 ? by : 65535), 256, 0, qkv->data, qkv->dtype, t_cols(qkv), c->rope_cs,
		   half, D, nheads);
	LAUNCH_TRY(err);
	return LMD_OK;
}

int lmd_cuda_kv_store(struct cuda_ctx *c, struct lmd_kvcache *kv, int layer, const struct lmd_tensor *qkv,
		      const struct lmd_attn_dims *d, struct lmd_err *err)
{
	int D = d->head_dim, n = c->step.n;
	SHAPE_CHECK(D == kv->head_dim && d->kv_heads == kv->kv_heads &&
		    t_cols(qkv) == (int64_t)(d->heads + 2 * d->kv_heads) * D && layer >= 0 && layer < kv->layers &&
		    (kv->quant == LMD_KV_NONE || (kv->kq && kv->vq && D % 2 == 0)), "kv_store");
	if (kv->quant != LMD_KV_NONE) {
		const float *params = NULL;
		int rc = lmd_cuda_kv_params(c, kv, layer, &params, err);
		if (rc)
			return rc;
		dim3 qgrid(n, d->kv_heads, 2);
		pdl_launch(c, kv_store_q_kernel, qgrid, 32, 0, (uint8_t *)kv->k[layer].data, (uint8_t *)kv->v[layer].data,
							   kv->kq[layer].data, kv->vq[layer].data, kv->dtype,
							   (int)kv->quant, params, qkv->data, qkv->dtype, t_cols(qkv), c->d_pos,
							   c->d_seq, c->d_table, c->step.max_blocks, d->heads, d->kv_heads, D,
							   kv->block_len);
		LAUNCH_TRY(err);
		return LMD_OK;
	}
	dim3 grid(n, d->kv_heads);
	pdl_launch(c, kv_store_kernel, grid, D < 1024 ? D : 1024, 0, kv->k[layer].data, kv->v[layer].data, kv->dtype,
								  qkv->data, qkv->dtype, t_cols(qkv), c->d_pos, c->d_seq,
								  c->d_table, c->step.max_blocks, d->heads, d->kv_heads,
								  D, kv->block_len);
	LAUNCH_TRY(err);
	return LMD_OK;
}

int lmd_cuda_rope_kv_store(struct cuda_ctx *c, struct lmd_tensor *qkv, struct lmd_kvcache *kv, int layer,
			   const struct lmd_attn_dims *d, struct lmd_err *err)
{
	int D = d->head_dim, half = D / 2, n = c->step.n;
	if (kv->quant != LMD_KV_NONE || D % 2 || c->no_fuse) {  // the quantized store stays its own kernel
		int rc = lmd_cuda_rope(c, qkv, d, err);
		return rc ? rc : lmd_cuda_kv_store(c, kv, layer, qkv, d, err);
	}
	SHAPE_CHECK(t_cols(qkv) == (int64_t)(d->heads + 2 * d->kv_heads) * D && half == c->step.rot_half && t_rows(qkv) >= n &&
		    D == kv->head_dim && d->kv_heads == kv->kv_heads && layer >= 0 && layer < kv->layers, "rope_kv_store");
	if (n == 0)
		return LMD_OK;
	int rc = rope_table(c, half, err);
	if (rc)
		return rc;
	pdl_launch(c, rope_kv_kernel, dim3(n, d->heads + d->kv_heads), half < 1024 ? half : 1024, 0, qkv->data, qkv->dtype,
		   t_cols(qkv), c->rope_cs, half, kv->k[layer].data, kv->v[layer].data, kv->dtype, c->d_pos, c->d_seq,
		   c->d_table, c->step.max_blocks, d->heads, d->kv_heads, kv->block_len);
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
	pdl_launch(c, silu_mul_kernel, (unsigned)(blocks < 8192 ? blocks : 8192), 256, 0, y->data, y->dtype, gu->data,
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
	pdl_launch(c, gather_kernel, (unsigned)rows, 256, 0, y->data, y->dtype, x->data, x->dtype, c->d_out, first, t_cols(x));
	LAUNCH_TRY(err);
	return LMD_OK;
}
