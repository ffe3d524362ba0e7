/*
 * matmul: y[R, N] = x[R, K] · w[N, K]ᵀ (+ bias[N]), fp32 accumulation, y rounded once to its dtype.
 *
 * Three paths, picked per call:
 *   gemv    R <= 8, x and w both f16 or both bf16, K % 8 == 0, 16-byte aligned rows: the decode case.
 *           One warp per output column n streams w's row n once with 16-byte loads (evict-first)
 *           and dots it with the R rows of x (L1-resident), fp32 accumulate, shuffle reduction.
 *           grid ceil(N / 8), block 256 (8 warps = 8 columns). Bytes moved ≈ N·K·2: bandwidth-bound.
 *   cublas  x and w of one dtype, y of that dtype or f32: cublasGemmEx with CUBLAS_COMPUTE_32F (no TF32
 *           for f32). Row-major y = x wᵀ is column-major yᵀ = w xᵀ: gemm(T, N, m=N, n=R, k=K, w, x, y).
 *           A bias is first broadcast into y and added by beta = 1.
 *   generic any mix of f32/f16/bf16 (e.g. fp32 compute over f16 weights): 64×64 tiles, k-step 16,
 *           256 threads each 4×4 outputs, operands converted to fp32 in shared memory.
 */
#include <stdint.h>

#include "internal.cuh"

// ----------------------------------------------------------------------------
// CUDA kernels

__device__ __forceinline__ void unpack8(uint4 v, const __half *, float f[8])
{
	const __half2 *h = (const __half2 *)&v;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		float2 t = __half22float2(h[i]);
		f[2 * i] = t.x;
		f[2 * i + 1] = t.y;
	}
}

__device__ __forceinline__ void unpack8(uint4 v, const __nv_bfloat16 *, float f[8])
{
	const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		float2 t = __bfloat1622float2(h[i]);
		f[2 * i] = t.x;
		f[2 * i + 1] = t.y;
	}
}

template <typename T, int M>
__global__ void __launch_bounds__(256) gemv_kernel(void *y, int yt, const T *x, const T *w, const void *bias, int bt,
						   int K, int N)
{
	int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	int n = blockIdx.x * (blockDim.x / 32) + warp;
	if (n >= N)
		return;
	float acc[M];
#pragma unroll
	for (int m = 0; m < M; m++)
		acc[m] = 0;
	const uint4 *wr = (const uint4 *)(w + (size_t)n * K);
	int K8 = K / 8;
#pragma unroll 4
	for (int k = lane; k < K8; k += 32) {
		uint4 wv = __ldcs(wr + k);
		float wf[8];
		unpack8(wv, (const T *)0, wf);
#pragma unroll
		for (int m = 0; m < M; m++) {
			uint4 xv = __ldg((const uint4 *)(x + (size_t)m * K) + k);
			float xf[8];
			unpack8(xv, (const T *)0, xf);
#pragma unroll
			for (int j = 0; j < 8; j++)
				acc[m] = fmaf(wf[j], xf[j], acc[m]);
		}
	}
#pragma unroll
	for (int m = 0; m < M; m++) {
		float v = acc[m];
		for (int o = 16; o > 0; o >>= 1)
			v += __shfl_xor_sync(0xffffffffu, v, o);
		if (lane == 0)
			st(y, yt, (size_t)m * N + n, v + (bias ? ld(bias, bt, n) : 0.0f));
	}
}

__global__ void __launch_bounds__(256) gemm_generic_kernel(void *y, int yt, const void *x, int xt, const void *w,
							   int wt, const void *bias, int bt, int R, int N, int K)
{
	__shared__ float xs[16][65], ws[16][65];
	int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
	int r0 = blockIdx.y * 64, n0 = blockIdx.x * 64;
	float acc[4][4] = {};
	for (int k0 = 0; k0 < K; k0 += 16) {
		for (int idx = threadIdx.x; idx < 64 * 16; idx += 256) {
			int rr = idx / 16, kk = idx % 16;
			xs[kk][rr] = r0 + rr < R && k0 + kk < K ? ld(x, xt, (size_t)(r0 + rr) * K + k0 + kk) : 0.0f;
			ws[kk][rr] = n0 + rr < N && k0 + kk < K ? ld(w, wt, (size_t)(n0 + rr) * K + k0 + kk) : 0.0f;
		}
		__syncthreads();
#pragma unroll
		for (int kk = 0; kk < 16; kk++) {
			float a[4], b[4];
#pragma unroll
			for (int i = 0; i < 4; i++) {
				a[i] = xs[kk][ty + 16 * i];
				b[i] = ws[kk][tx + 16 * i];
			}
#pragma unroll
			for (int i = 0; i < 4; i++)
#pragma unroll
				for (int j = 0; j < 4; j++)
					acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
		}
		__syncthreads();
	}
#pragma unroll
	for (int i = 0; i < 4; i++)
#pragma unroll
		for (int j = 0; j < 4; j++) {
			int r = r0 + ty + 16 * i, n = n0 + tx + 16 * j;
			if (r < R && n < N)
				st(y, yt, (size_t)r * N + n, acc[i][j] + (bias ? ld(bias, bt, n) : 0.0f));
		}
}

__global__ void bias_fill_kernel(void *y, int yt, const void *bias, int bt, int64_t R, int64_t N)
{
	for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < R * N; k += (int64_t)gridDim.x * blockDim.x)
		st(y, yt, (size_t)k, ld(bias, bt, (size_t)(k % N)));
}

// ----------------------------------------------------------------------------
// kernel launchers

static cudaDataType_t cu_type(enum lmd_dtype t)
{
	return t == LMD_F16 ? CUDA_R_16F : t == LMD_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

template <typename T>
static void gemv_launch(struct cuda_ctx *c, int R, void *y, int yt, const void *x, const void *w, const void *bias,
			int bt, int K, int N)
{
	unsigned grid = (unsigned)((N + 7) / 8);
	const T *xx = (const T *)x, *ww = (const T *)w;
	switch (R) {
	case 1: gemv_kernel<T, 1><<<grid, 256, 0, c->st>>>(y, yt, xx, ww, bias, bt, K, N); break;
	case 2: gemv_kernel<T, 2><<<grid, 256, 0, c->st>>>(y, yt, xx, ww, bias, bt, K, N); break;
	case 3: gemv_kernel<T, 3><<<grid, 256, 0, c->st>>>(y, yt, xx, ww, bias, bt, K, N); break;
	case 4: gemv_kernel<T, 4><<<grid, 256, 0, c->st>>>(y, yt, xx, ww, bias, bt, K, N); break;
	case 5: gemv_kernel<T, 5><<<grid, 256, 0, c->st>>>(y, yt, xx, ww, bias, bt, K, N); break;
	case 6: gemv_kernel<T, 6><<<grid, 256, 0, c->st>>>(y, yt, xx, ww, bias, bt, K, N); break;
	case 7: gemv_kernel<T, 7><<<grid, 256, 0, c->st>>>(y, yt, xx, ww, bias, bt, K, N); break;
	default: gemv_kernel<T, 8><<<grid, 256, 0, c->st>>>(y, yt, xx, ww, bias, bt, K, N); break;
	}
}

int lmd_cuda_matmul(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
		    const struct lmd_tensor *bias, struct lmd_err *err)
{
	int64_t K = t_cols(x), N = t_rows(w), R = t_rows(x);
	if (t_cols(w) != K || t_cols(y) != N || t_rows(y) != R || (bias && lmd_tensor_numel(bias) != N) ||
	    !float_dt(x->dtype) || !float_dt(w->dtype) || !float_dt(y->dtype) || (bias && !float_dt(bias->dtype)))
		return lmd_errorf(err, LMD_EINVAL, "cuda matmul: tensor shapes or dtypes do not match");
	if (R == 0 || N == 0)
		return LMD_OK;
	int same = x->dtype == w->dtype;
	int aligned = ((uintptr_t)x->data % 16 == 0) && ((uintptr_t)w->data % 16 == 0);
	if (c->gemv && R <= 8 && same && x->dtype != LMD_F32 && K % 8 == 0 && aligned) {
		if (x->dtype == LMD_F16)
			gemv_launch<__half>(c, (int)R, y->data, y->dtype, x->data, w->data, bias ? bias->data : NULL,
					    bias ? bias->dtype : 0, (int)K, (int)N);
		else
			gemv_launch<__nv_bfloat16>(c, (int)R, y->data, y->dtype, x->data, w->data,
						   bias ? bias->data : NULL, bias ? bias->dtype : 0, (int)K, (int)N);
		LAUNCH_TRY(err);
		return LMD_OK;
	}
	if (same && (y->dtype == x->dtype || y->dtype == LMD_F32)) {
		float alpha = 1, beta = 0;
		if (bias) {
			int64_t tot = R * N, blocks = (tot + 255) / 256;
			bias_fill_kernel<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, c->st>>>(y->data, y->dtype, bias->data,
												   bias->dtype, R, N);
			LAUNCH_TRY(err);
			beta = 1;
		}
		CUBLAS_TRY(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)R, (int)K, &alpha, w->data,
					cu_type(w->dtype), (int)K, x->data, cu_type(x->dtype), (int)K, &beta, y->data,
					cu_type(y->dtype), (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
			   err);
		return LMD_OK;
	}
	dim3 grid((unsigned)((N + 63) / 64), (unsigned)((R + 63) / 64));
	gemm_generic_kernel<<<grid, 256, 0, c->st>>>(y->data, y->dtype, x->data, x->dtype, w->data, w->dtype,
						     bias ? bias->data : NULL, bias ? bias->dtype : 0, (int)R, (int)N, (int)K);
	LAUNCH_TRY(err);
	return LMD_OK;
}
