/*
 * The vector RMSNorm (elementwise.cu's rmsnorm_vec_kernel) in pieces, so that a product kernel can run it as its
 * prologue (the norm_linear op) with the same bits.
 *
 * The rule, for a row of n values (n a multiple of 256, 16-bit x, r and y of one dtype T, g of T or f32):
 * chunk i (values 8i .. 8i + 7, one 16-byte load) is v = x (+ r, rounded to T); its sum of squares in order
 * (fma); the sums of chunks 32w .. 32w + 31 by a xor tree over 32 lanes (lane 0's value); those n / 256 sums in
 * order from 0; inv = 1 / sqrt(sum / n + eps); y = rnd(g * rnd(v * inv)). rmsnorm_vec_kernel is one block of
 * n / 8 threads, a thread a chunk; prenorm_rows walks the same n / 256 warps' worth with the block it has.
 */
#ifndef LMD_PRENORM_CUH
#define LMD_PRENORM_CUH

#include <type_traits>

#include "internal.cuh"

__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void to_t(__half &d, float v) { d = __float2half_rn(v); }
__device__ __forceinline__ void to_t(__nv_bfloat16 &d, float v) { d = __float2bfloat16_rn(v); }

template <bool BF>
using half_of = typename std::conditional<BF, __nv_bfloat16, __half>::type;  // a kernel's 16-bit type

template <class T>
union chunk8 {
	uint4 u;
	T t[8];
};

/* The sum of v over a warp's 32 lanes by a xor tree (every lane gets a sum; the rule takes lane 0's). */
__device__ __forceinline__ float warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

/* A chunk's values: x, or (add) x + r rounded to T, stored back into xv; returns their sum of squares. */
template <class T>
__device__ __forceinline__ float rms_chunk(chunk8<T> &xv, const chunk8<T> &rv, bool add)
{
	float ss = 0;
#pragma unroll
	for (int k = 0; k < 8; k++) {
		float v = to_f(xv.t[k]);
		if (add) {
			to_t(xv.t[k], v + to_f(rv.t[k]));
			v = to_f(xv.t[k]);
		}
		ss = fmaf(v, v, ss);
	}
	return ss;
}

__device__ __forceinline__ float rms_inv(float ss, int n, float eps) { return 1.0f / sqrtf(ss / (float)n + eps); }

/* Chunk i of the output for the chunk's values xv: rnd(g * rnd(v * inv)), g [n] of T or (gf) f32. */
template <class T>
__device__ __forceinline__ uint4 rms_out(const chunk8<T> &xv, const void *g, bool gf, int i, float inv)
{
	union {
		uint4 u[2];
		float f[8];
		T t[8];
	} gv;
	if (gf) {
		gv.u[0] = ((const uint4 *)g)[2 * i];
		gv.u[1] = ((const uint4 *)g)[2 * i + 1];
	} else {
		gv.u[0] = ((const uint4 *)g)[i];
	}
	chunk8<T> yv;
#pragma unroll
	for (int k = 0; k < 8; k++) {
		T r;
		to_t(r, to_f(xv.t[k]) * inv);
		to_t(yv.t[k], (gf ? gv.f[k] : to_f(gv.t[k])) * to_f(r));
	}
	return yv.u;
}

/* Rows that rmsnorm_vec_kernel takes: n a multiple of 256 up to 8192, x, r (when not NULL) and y of one 16-bit
 * dtype, g of it or f32, all 16-byte aligned. */
static inline bool rms_vec_ok(int n, int xt, int yt, int rt, int gt, const void *y, const void *x, const void *r,
			      const void *g)
{
	return n % 256 == 0 && n <= 8 * 1024 && xt == yt && (!r || rt == xt) && (xt == DT_F16 || xt == DT_BF16) &&
	       (gt == xt || gt == DT_F32) && ((uintptr_t)y | (uintptr_t)x | (uintptr_t)r | (uintptr_t)g) % 16 == 0;
}

/* What a product kernel with the norm as its prologue takes (norm_linear): R rows of n values. */
struct prenorm {
	void *x;          /* [R, n] the residual stream; x + r is stored back by the last block to read it */
	const void *r;    /* [R, n] or NULL (a plain norm) */
	const void *g;    /* [n] of x's dtype, or f32 when gf */
	float eps;
	int gf;
	unsigned *count;  /* zero between launches (cuda_ctx.norm_count): the blocks that have read x */
};
#define NORM_SMEM 32768  /* the most bytes of normalized rows (R n 2) a prologue keeps in shared memory */
#define NORM_ROWS 8

/*
 * The prologue (every block of the grid, once, after pdl_start): xs [R][n / 8] chunks in shared memory =
 * rmsnorm(x + r) * g of the R rows (R <= NORM_ROWS, R n 2 <= NORM_SMEM), bit for bit rmsnorm_vec_kernel's
 * output; the block that reads x last (a count of the blocks done reading) stores x + r back into x.
 */
template <class T>
__device__ void prenorm_rows(uint4 *xs, const struct prenorm &p, int R, int n)
{
	__shared__ float part[NORM_SMEM / 512];  // the n / 256 warps' sums of each row
	__shared__ float inv[NORM_ROWS];
	__shared__ bool last;
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5, vr = n / 256, n8 = n / 8;
	for (int v = warp; v < R * vr; v += nw) {
		int i = v / vr * n8 + v % vr * 32 + lane;
		chunk8<T> xv, rv;
		xv.u = ((const uint4 *)p.x)[i];
		rv.u = p.r ? ((const uint4 *)p.r)[i] : make_uint4(0, 0, 0, 0);
		float ss = warp_sum(rms_chunk<T>(xv, rv, p.r != NULL));
		xs[i] = xv.u;
		if (lane == 0)
			part[v] = ss;
	}
	__syncthreads();
	if (threadIdx.x < R) {
		float s = 0;
		for (int j = 0; j < vr; j++)
			s += part[threadIdx.x * vr + j];
		inv[threadIdx.x] = rms_inv(s, n, p.eps);
	}
	if (threadIdx.x == 0)
		last = p.r && atomicAdd(p.count, 1u) == gridDim.x - 1;
	__syncthreads();
	if (last) {  // every other block has read x: x + r goes back
		for (int i = threadIdx.x; i < R * n8; i += blockDim.x)
			((uint4 *)p.x)[i] = xs[i];
		if (threadIdx.x == 0)
			*p.count = 0;
		__syncthreads();
	}
	for (int v = warp; v < R * vr; v += nw) {
		int c = v % vr * 32 + lane, i = v / vr * n8 + c;
		chunk8<T> xv;
		xv.u = xs[i];
		xs[i] = rms_out<T>(xv, p.g, p.gf, c, inv[v / vr]);
	}
	__syncthreads();
}

#endif
