/*
 * matmul: y[R, N] = x[R, K] · w[N, K]ᵀ (+ bias[N]), fp32 accumulation, y rounded once to its dtype.
 *
 * Batch invariance. A row of y must not depend on the other rows in the call: a sequence decoded alone
 * and the same sequence decoded among 63 others get the same bits (issue 5's check). Three ways for 16-bit
 * x and w (both f16 or both bf16) keep it, one for each kind of row:
 *
 * Prefill runs. In a step's product (R = the step's tokens) every run of >= BLAS_RUN consecutive tokens of
 * one sequence (a prefill chunk, which the scheduler cuts from that sequence's prompt alone) goes through
 * cuBLAS as one product of the run's length. cuBLAS picks its kernel from the shape, and the run's shape
 * does not depend on the rest of the batch, so the chunk's bits do not either.
 *
 * Padded blocks (the default for the other rows: decode tokens, short chunks; LMD_CUDA_GEMM=padP, P =
 * PAD_ROWS = 128 by default): cuBLAS on blocks of exactly P rows copied into scratch (the last block
 * padded), so every block is the same product with the same kernel and a row's bits depend on the row
 * alone. A single decode pays for P rows, which costs little while the weights' bytes dominate (H200,
 * Llama-2-7B shape: batch-1 decode 1.3 % slower than lmd's kernels, 64 and 256 concurrent 1.5x and 1.3x
 * faster; bench/results/2026-12-01-h200-engine.md).
 *
 * lmd's kernels (LMD_CUDA_GEMM=lmd) follow one rule of summation for every R:
 *
 *   for each slice j of SL_SPANS spans (512 k): p_j = 0; for each span s of 32 k in j, in order:
 *       p_j = mma(step 0 of s); p_j = mma(step 1 of s)
 *   acc = 0; for each slice j in order: acc += p_j (fp32)
 *
 * with mma.sync.m16n8k16 (f32 accumulators) and this fixed fragment map: lane l (g = l / 4, q = l % 4)
 * holds the 8 consecutive k of its row / column starting at 32s + 8q (one 16-byte load); step j uses
 * elements 4j + {0,1} as the mma's k = 2q + {0,1} and 4j + {2,3} as k = 2q + 8 + {0,1}, for A (rows g
 * and g + 8 of x) and B (row g of w, i.e. column g of wᵀ) alike. k beyond K reads as zero; spans at or
 * beyond ceil(K / 32) are not run. The slices let a decode product spread K over the warps of a block
 * (the weights' bytes are the whole cost at a few rows) with the same bits as a tile that runs the
 * whole of K. Two kernels follow the rule, so either one gives the same bits:
 *   skinny  R <= 64 (decode): a block of 8 warps per 8 output columns, the warps taking K's slices in
 *           turn; each loads a slice of its 8 rows of w straight into registers (16 bytes a lane, all
 *           SL_SPANS loads in flight), reads x from L1 (1, 2 or 4 tiles of 16 rows), and leaves the
 *           slice's partial sums in shared memory for the block's final sum in slice order.
 *           grid ceil(N / 8), block 256.
 *   tiled   any R: BM x BN output tiles (64 x 128 or 64), 8 warps as 2 x 4, three shared-memory stages
 *           of two spans each, filled by cp.async (zero-fill beyond R, N, K); the fragments are read with
 *           16-byte shared loads in the same map (rows of one span are 64 bytes: no conflicts); a
 *           slice's sums go into the total at every SL_SPANS spans.
 *           grid (ceil(N / BN), ceil(R / BM)), block 256.
 * The kernel and its tile shape are chosen from R, N and K (enough blocks for the GPU) and do not
 * change the bits. They also take the padded path's rows when N % 8 != 0 (scratch rows must stay
 * 16-byte aligned).
 *
 * One algorithm (LMD_CUDA_GEMM=lt; opt-in, not yet measured on a GPU): the other rows through cuBLASLt with
 * one algorithm per product shape (N, K, dtypes), chosen once from the heuristic for LT_ROWS rows among
 * those that split no K. Rows are independent in a tensor-core product and the algorithm (tile, stages,
 * order over K) is then the same for every row count, so a row's bits should not depend on the batch,
 * with no padding; test-ops checks it bit for bit on the GPU.
 *
 * Other paths (also batch-invariant, chosen from the dtypes and K only, never from R):
 *   cublas  f32 x and w: cublasGemmEx, CUBLAS_COMPUTE_32F (no TF32); a bias is broadcast into y first and
 *           added by beta = 1. LMD_CUDA_GEMM=cublas sends every 16-bit product there too, at its own
 *           shape (rows are then no longer batch-invariant): for comparison.
 *   generic any mix of f32/f16/bf16 (fp32 compute over 16-bit weights), or 16-bit rows that are not
 *           16-byte aligned / K % 8 != 0: 64x64 tiles, k-step 16, 256 threads each 4x4 outputs.
 */
#include <stdint.h>
#include <string.h>

#include "internal.cuh"

#define SL_SPANS 16  /* spans of 32 k in a slice (see the rule above) */

// ----------------------------------------------------------------------------
// CUDA kernels

/* One span (32 k) into c: ag, ah = 8 k of rows g and g + 8 of x, b = the same 8 k of column g of wᵀ. */
template <bool BF>
__device__ __forceinline__ void mma_span(float c[4], uint4 ag, uint4 ah, uint4 b)
{
	mma16816<BF>(c, ag.x, ah.x, ag.y, ah.y, b.x, b.y);
	mma16816<BF>(c, ag.z, ah.z, ag.w, ah.w, b.z, b.w);
}

/* c holds rows g, g + 8 and columns n, n + 1 (n = 2q): y = c + bias, rounded to y's dtype. */
__device__ __forceinline__ void store_frag(void *y, int yt, const void *bias, int bt, int R, int N, int r, int n,
					   const float c[4])
{
#pragma unroll
	for (int i = 0; i < 4; i++) {
		int rr = r + (i >> 1) * 8, nn = n + (i & 1);
		if (rr < R && nn < N)
			st(y, yt, (size_t)rr * N + nn, c[i] + (bias ? ld(bias, bt, nn) : 0.0f));
	}
}

/* A stream of weights: read once, so kept out of L1, where x stays. */
__device__ __forceinline__ uint4 ld_stream(const uint4 *p)
{
	uint4 v;
	asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
	    : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
	    : "l"(p));
	return v;
}

#define SK_WARPS 8
#define SK_SMEM_MAX (96 * 1024)  /* the slice partials of one block: MT * slices * 512 bytes at most */

template <int MT>
constexpr size_t skinny_smem(int K) { return (size_t)MT * ((K + 32 * SL_SPANS - 1) / (32 * SL_SPANS)) * 32 * 16; }

/*
 * R <= 16 * MT (decode): a block of SK_WARPS warps per 8 output columns. Warp i takes slices i,
 * i + SK_WARPS, ...: it loads the slice's SL_SPANS spans of its 8 rows of w at once (16 bytes a lane,
 * 8 KB a warp in flight), then runs the mma over its MT tiles of 16 rows of x (from L1; rows >= R read
 * as zero) and writes the slice's partial sums to shared memory; warps 0 .. MT - 1 then add the
 * partials of their tile in slice order. LOW8 (MT == 1, R <= 8): rows g + 8 are all zero.
 */
template <bool BF, int MT, bool LOW8>
__global__ void __launch_bounds__(32 * SK_WARPS, 2) gemm_skinny(void *y, int yt, const uint4 *x, const uint4 *w,
							     const void *bias, int bt, int R, int N, int K)
{
	extern __shared__ float4 part[];  // [slice][MT][32 lanes]
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
	const int n0 = blockIdx.x * 8;
	const int K8 = K / 8, S = (K + 31) / 32, NSL = (S + SL_SPANS - 1) / SL_SPANS;
	const bool wok = n0 + g < N;
	const uint4 *wg = w + (size_t)(wok ? n0 + g : 0) * K8, z = make_uint4(0, 0, 0, 0);
	const uint4 *xg[MT], *xh[MT];
	bool gok[MT], hok[MT];
#pragma unroll
	for (int i = 0; i < MT; i++) {
		gok[i] = 16 * i + g < R, hok[i] = !LOW8 && 16 * i + g + 8 < R;
		xg[i] = x + (size_t)(gok[i] ? 16 * i + g : 0) * K8, xh[i] = x + (size_t)(hok[i] ? 16 * i + g + 8 : 0) * K8;
	}
	for (int sl = warp; sl < NSL; sl += SK_WARPS) {
		uint4 bv[SL_SPANS];
#pragma unroll
		for (int u = 0; u < SL_SPANS; u++) {
			int ch = (sl * SL_SPANS + u) * 4 + q;
			bv[u] = wok && ch < K8 ? ld_stream(wg + ch) : z;
		}
		float c[MT][4];
#pragma unroll
		for (int i = 0; i < MT; i++)
			c[i][0] = c[i][1] = c[i][2] = c[i][3] = 0;
#pragma unroll
		for (int u = 0; u < SL_SPANS; u++) {
			int s = sl * SL_SPANS + u, ch = s * 4 + q;
			if (s >= S)
				break;
			bool in = ch < K8;
#pragma unroll
			for (int i = 0; i < MT; i++)
				mma_span<BF>(c[i], in && gok[i] ? __ldg(xg[i] + ch) : z, in && hok[i] ? __ldg(xh[i] + ch) : z, bv[u]);
		}
#pragma unroll
		for (int i = 0; i < MT; i++)
			part[(sl * MT + i) * 32 + lane] = make_float4(c[i][0], c[i][1], c[i][2], c[i][3]);
	}
	__syncthreads();
	if (warp >= MT)
		return;
	float c[4] = {0, 0, 0, 0};
	for (int sl = 0; sl < NSL; sl++) {
		float4 p = part[(sl * MT + warp) * 32 + lane];
		c[0] += p.x, c[1] += p.y, c[2] += p.z, c[3] += p.w;
	}
	store_frag(y, yt, bias, bt, R, N, 16 * warp + g, n0 + 2 * q, c);
}

#define TILED_STAGES 3
#define TILED_SPANS 2  /* spans per stage */

template <int BM, int BN>
constexpr int tiled_smem() { return TILED_STAGES * TILED_SPANS * (BM + BN) * 4 * 16; }

template <bool BF, int BM, int BN>
__global__ void __launch_bounds__(256, 2) gemm_tiled(void *y, int yt, const uint4 *x, const uint4 *w, const void *bias,
						  int bt, int R, int N, int K)
{
	constexpr int MI = BM / 32, NJ = BN / 32;  // m16 / n8 tiles of one warp (warp tile BM/2 x BN/4)
	constexpr int SPAN = (BM + BN) * 4;        // uint4 of one span: BM rows of x, then BN rows of w, 4 chunks each
	extern __shared__ uint4 sm[];              // [stage][span][BM + BN rows][4 chunks of 8 k]
	const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, q = lane % 4;
	const int wm = warp / 4, wn = warp % 4, r0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
	const int K8 = K / 8, S = (K + 31) / 32, NT = (S + TILED_SPANS - 1) / TILED_SPANS;
	auto load = [&](int t) {  // stage t: spans t * TILED_SPANS ...
		uint4 *st0 = sm + (t % TILED_STAGES) * TILED_SPANS * SPAN;
		for (int i = tid; i < TILED_SPANS * SPAN; i += 256) {
			int sp = i / SPAN, row = i % SPAN / 4, ch = (t * TILED_SPANS + sp) * 4 + i % 4;
			bool isa = row < BM;
			int gr = isa ? r0 + row : n0 + row - BM;
			bool ok = gr < (isa ? R : N) && ch < K8;
			const uint4 *src = isa ? x : w;
			cp_async16(st0 + i, src + (ok ? (size_t)gr * K8 + ch : 0), ok);
		}
		asm volatile("cp.async.commit_group;\n" ::);
	};
	float c[MI][NJ][4], tot[MI][NJ][4];  // the slice's sums; the total of the slices before it
#pragma unroll
	for (int i = 0; i < MI; i++)
#pragma unroll
		for (int j = 0; j < NJ; j++)
#pragma unroll
			for (int e = 0; e < 4; e++)
				c[i][j][e] = tot[i][j][e] = 0;
	for (int t = 0; t < TILED_STAGES - 1; t++)
		load(t);  // beyond the end: zero-filled, never read
	for (int t = 0; t < NT; t++) {
		asm volatile("cp.async.wait_group %0;\n" ::"n"(TILED_STAGES - 2));
		__syncthreads();  // stage t is in; every warp is done with the slot the next load overwrites
		load(t + TILED_STAGES - 1);
#pragma unroll
		for (int sp = 0; sp < TILED_SPANS; sp++) {
			if (t * TILED_SPANS + sp >= S)
				break;
			const uint4 *sa = sm + ((t % TILED_STAGES) * TILED_SPANS + sp) * SPAN, *sb = sa + BM * 4;
			uint4 ag[MI], ah[MI], bv[NJ];
#pragma unroll
			for (int i = 0; i < MI; i++) {
				int row = wm * (BM / 2) + 16 * i + g;
				ag[i] = sa[row * 4 + q];
				ah[i] = sa[(row + 8) * 4 + q];
			}
#pragma unroll
			for (int j = 0; j < NJ; j++)
				bv[j] = sb[(wn * (BN / 4) + 8 * j + g) * 4 + q];
#pragma unroll
			for (int i = 0; i < MI; i++)
#pragma unroll
				for (int j = 0; j < NJ; j++)
					mma_span<BF>(c[i][j], ag[i], ah[i], bv[j]);
		}
		if ((t + 1) * TILED_SPANS % SL_SPANS == 0 || t == NT - 1) {  // the end of a slice: into the total
#pragma unroll
			for (int i = 0; i < MI; i++)
#pragma unroll
				for (int j = 0; j < NJ; j++)
#pragma unroll
					for (int e = 0; e < 4; e++)
						tot[i][j][e] += c[i][j][e], c[i][j][e] = 0;
		}
	}
	asm volatile("cp.async.wait_all;\n" ::);
#pragma unroll
	for (int i = 0; i < MI; i++)
#pragma unroll
		for (int j = 0; j < NJ; j++)
			store_frag(y, yt, bias, bt, R, N, r0 + wm * (BM / 2) + 16 * i + g, n0 + wn * (BN / 4) + 8 * j + 2 * q,
				   tot[i][j]);
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

template <bool BF, int BM, int BN>
static void tiled_launch(struct cuda_ctx *c, void *y, int yt, const void *x, const void *w, const void *bias, int bt,
			 int R, int N, int K)
{
	dim3 grid((unsigned)((N + BN - 1) / BN), (unsigned)((R + BM - 1) / BM));
	gemm_tiled<BF, BM, BN><<<grid, 256, tiled_smem<BM, BN>(), c->st>>>(y, yt, (const uint4 *)x, (const uint4 *)w,
									     bias, bt, R, N, K);
}

template <bool BF, int MT, bool LOW8>
static void skinny_launch(struct cuda_ctx *c, void *y, int yt, const void *x, const void *w, const void *bias, int bt,
			  int R, int N, int K)
{
	gemm_skinny<BF, MT, LOW8><<<(unsigned)((N + 7) / 8), 32 * SK_WARPS, skinny_smem<MT>(K), c->st>>>(
		y, yt, (const uint4 *)x, (const uint4 *)w, bias, bt, R, N, K);
}

/* The tensor-core kernels (see the top of the file); the shape only picks how the work is cut. */
template <bool BF>
static void tc_launch(struct cuda_ctx *c, void *y, int yt, const void *x, const void *w, const void *bias, int bt,
		      int R, int N, int K)
{
	if (R <= 64 && skinny_smem<4>(K) <= SK_SMEM_MAX) {
		if (R <= 8)
			skinny_launch<BF, 1, true>(c, y, yt, x, w, bias, bt, R, N, K);
		else if (R <= 16)
			skinny_launch<BF, 1, false>(c, y, yt, x, w, bias, bt, R, N, K);
		else if (R <= 32)
			skinny_launch<BF, 2, false>(c, y, yt, x, w, bias, bt, R, N, K);
		else
			skinny_launch<BF, 4, false>(c, y, yt, x, w, bias, bt, R, N, K);
		return;
	}
	if ((long)((R + 63) / 64) * ((N + 127) / 128) >= c->sms)
		tiled_launch<BF, 64, 128>(c, y, yt, x, w, bias, bt, R, N, K);
	else
		tiled_launch<BF, 64, 64>(c, y, yt, x, w, bias, bt, R, N, K);
}

int lmd_cuda_matmul_init(struct cuda_ctx *c, struct lmd_err *err)
{
	(void)c;
#define SKINNY_ATTR(BF, MT, LOW8) CUDA_TRY(cudaFuncSetAttribute(gemm_skinny<BF, MT, LOW8>, \
	cudaFuncAttributeMaxDynamicSharedMemorySize, SK_SMEM_MAX), err)
#define TILED_ATTR(BF, BM, BN) CUDA_TRY(cudaFuncSetAttribute(gemm_tiled<BF, BM, BN>, \
	cudaFuncAttributeMaxDynamicSharedMemorySize, tiled_smem<BM, BN>()), err)
#define BOTH(BF) SKINNY_ATTR(BF, 1, true); SKINNY_ATTR(BF, 1, false); SKINNY_ATTR(BF, 2, false); \
	SKINNY_ATTR(BF, 4, false); TILED_ATTR(BF, 64, 128); TILED_ATTR(BF, 64, 64)
	BOTH(false);
	BOTH(true);
#undef BOTH
#undef TILED_ATTR
#undef SKINNY_ATTR
	return LMD_OK;
}

/* Can cuBLAS write y of dtype yt from x of xt: the same dtype, or f32. */
static bool blas_out(enum lmd_dtype yt, enum lmd_dtype xt)
{
	return yt == xt || yt == LMD_F32;
}

/* For a cuBLAS product with bias: y[R, N] = the bias broadcast, and *beta = 1 so that the product adds to it. */
static int bias_fill(struct cuda_ctx *c, void *y, enum lmd_dtype yt, const void *bias, int bt, int64_t R, int64_t N,
		     float *beta, struct lmd_err *err)
{
	*beta = 0;
	if (!bias)
		return LMD_OK;
	int64_t blocks = (R * N + 255) / 256;
	bias_fill_kernel<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, c->st>>>(y, yt, bias, bt, R, N);
	LAUNCH_TRY(err);
	*beta = 1;
	return LMD_OK;
}

/* y[R, N] = x · wᵀ (+ bias) through cuBLAS (x and w of one dtype; y that dtype or f32). */
static int blas_matmul(struct cuda_ctx *c, void *y, enum lmd_dtype yt, const void *x, enum lmd_dtype xt, const void *w,
		       const void *bias, int bt, int64_t R, int64_t N, int64_t K, struct lmd_err *err)
{
	float alpha = 1, beta;
	int rc = bias_fill(c, y, yt, bias, bt, R, N, &beta, err);
	if (rc)
		return rc;
	CUBLAS_TRY(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)R, (int)K, &alpha, w, cu_type(xt), (int)K, x,
				cu_type(xt), (int)K, &beta, y, cu_type(yt), (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
		   err);
	return LMD_OK;
}

/* cuBLASLt's descriptors of y[R, N] = x[R, K] · wᵀ in its column-major terms: A = w (K x N), B = x (K x R), D = y (N x R). */
struct lt_descs {
	cublasLtMatmulDesc_t op;
	cublasLtMatrixLayout_t a, b, d;
};

static void lt_descs_free(struct lt_descs *ds)
{
	if (ds->op)
		cublasLtMatmulDescDestroy(ds->op);
	if (ds->a)
		cublasLtMatrixLayoutDestroy(ds->a);
	if (ds->b)
		cublasLtMatrixLayoutDestroy(ds->b);
	if (ds->d)
		cublasLtMatrixLayoutDestroy(ds->d);
}

static int lt_descs_make(struct lt_descs *ds, enum lmd_dtype yt, enum lmd_dtype xt, int R, int N, int K, struct lmd_err *err)
{
	cublasOperation_t tr = CUBLAS_OP_T, no = CUBLAS_OP_N;
	memset(ds, 0, sizeof(*ds));
	cublasStatus_t s = cublasLtMatmulDescCreate(&ds->op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
	if (s == CUBLAS_STATUS_SUCCESS)
		s = cublasLtMatmulDescSetAttribute(ds->op, CUBLASLT_MATMUL_DESC_TRANSA, &tr, sizeof(tr));
	if (s == CUBLAS_STATUS_SUCCESS)
		s = cublasLtMatmulDescSetAttribute(ds->op, CUBLASLT_MATMUL_DESC_TRANSB, &no, sizeof(no));
	if (s == CUBLAS_STATUS_SUCCESS)
		s = cublasLtMatrixLayoutCreate(&ds->a, cu_type(xt), K, N, K);
	if (s == CUBLAS_STATUS_SUCCESS)
		s = cublasLtMatrixLayoutCreate(&ds->b, cu_type(xt), K, R, K);
	if (s == CUBLAS_STATUS_SUCCESS)
		s = cublasLtMatrixLayoutCreate(&ds->d, cu_type(yt), N, R, N);
	if (s != CUBLAS_STATUS_SUCCESS) {
		lt_descs_free(ds);
		return lmd_errorf(err, LMD_EGPU, "cuBLASLt descriptors: status %d", (int)s);
	}
	return LMD_OK;
}

/*
 * The one cuBLASLt algorithm for products of this shape, whatever the row count: the heuristic's first
 * for LT_ROWS rows that splits no K (no reduction across blocks) and takes 16-byte aligned pointers.
 */
#define LT_ROWS 256
static int lt_algo(struct cuda_ctx *c, enum lmd_dtype yt, enum lmd_dtype xt, int N, int K, const cublasLtMatmulAlgo_t **out,
		   struct lmd_err *err)
{
	for (int i = 0; i < c->n_lt; i++) {
		struct lt_algo *e = &c->lt_algos[i];
		if (e->N == N && e->K == K && e->xt == (int)xt && e->yt == (int)yt) {
			*out = &e->algo;
			return LMD_OK;
		}
	}
	if (c->n_lt == LT_ALGOS)
		return lmd_errorf(err, LMD_EGPU, "cuda matmul: more than %d product shapes for LMD_CUDA_GEMM=lt", LT_ALGOS);
	struct lt_descs ds;
	int rc = lt_descs_make(&ds, yt, xt, LT_ROWS, N, K, err);
	if (rc)
		return rc;
	cublasLtMatmulPreference_t pref = NULL;
	uint64_t ws = c->blas_ws_bytes;
	uint32_t align = 16;
	cublasLtMatmulHeuristicResult_t res[16];
	int got = 0;
	cublasStatus_t s = cublasLtMatmulPreferenceCreate(&pref);
	if (s == CUBLAS_STATUS_SUCCESS)
		s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
	for (int a = CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES; s == CUBLAS_STATUS_SUCCESS && a <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES; a++)
		s = cublasLtMatmulPreferenceSetAttribute(pref, (cublasLtMatmulPreferenceAttributes_t)a, &align, sizeof(align));
	if (s == CUBLAS_STATUS_SUCCESS)
		s = cublasLtMatmulAlgoGetHeuristic(c->lt, ds.op, ds.a, ds.b, ds.d, ds.d, pref, 16, res, &got);
	if (pref)
		cublasLtMatmulPreferenceDestroy(pref);
	lt_descs_free(&ds);
	for (int i = 0; s == CUBLAS_STATUS_SUCCESS && i < got; i++) {
		int32_t splits = 1;
		size_t n = 0;
		if (res[i].state != CUBLAS_STATUS_SUCCESS ||
		    cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits, sizeof(splits),
							 &n) != CUBLAS_STATUS_SUCCESS || splits > 1)
			continue;
		struct lt_algo *e = &c->lt_algos[c->n_lt++];
		*e = (struct lt_algo){N, K, (int)xt, (int)yt, res[i].algo};
		*out = &e->algo;
		return LMD_OK;
	}
	return lmd_errorf(err, LMD_EGPU, "cuBLASLt has no algorithm without split-K for %d x %d products (status %d)", N, K,
			  (int)s);
}

/* y[R, N] = x · wᵀ (+ bias) through the shape's one cuBLASLt algorithm (LMD_CUDA_GEMM=lt). */
static int lt_matmul(struct cuda_ctx *c, void *y, enum lmd_dtype yt, const void *x, enum lmd_dtype xt, const void *w,
		     const void *bias, int bt, int R, int N, int K, struct lmd_err *err)
{
	const cublasLtMatmulAlgo_t *algo;
	struct lt_descs ds;
	float alpha = 1, beta;
	int rc = lt_algo(c, yt, xt, N, K, &algo, err);
	if (rc || (rc = bias_fill(c, y, yt, bias, bt, R, N, &beta, err)) ||
	    (rc = lt_descs_make(&ds, yt, xt, R, N, K, err)))
		return rc;
	cublasStatus_t s = cublasLtMatmul(c->lt, ds.op, &alpha, w, ds.a, x, ds.b, &beta, y, ds.d, y, ds.d, algo, c->blas_ws,
					  c->blas_ws_bytes, c->st);
	lt_descs_free(&ds);
	if (s != CUBLAS_STATUS_SUCCESS)
		return lmd_errorf(err, LMD_EGPU, "cublasLtMatmul %d x %d x %d: status %d", R, N, K, (int)s);
	return LMD_OK;
}

/*
 * Rows outside prefill runs: cuBLAS on blocks of exactly P rows copied into scratch, so that every block
 * is the same product (same kernel, same pointers' alignment) and a row's bits depend on the row alone;
 * or the shape's one cuBLASLt algorithm (LMD_CUDA_GEMM=lt); or lmd's tensor-core kernels
 * (LMD_CUDA_GEMM=lmd, or a shape the scratch cannot keep aligned).
 */
template <bool BF>
static int rows_matmul(struct cuda_ctx *c, void *y, enum lmd_dtype yt, const void *x, enum lmd_dtype xt, const void *w,
		       const void *bias, int bt, int R, int N, int K, struct lmd_err *err)
{
	if (c->lt_gemm && N % 8 == 0 && blas_out(yt, xt))
		return lt_matmul(c, y, yt, x, xt, w, bias, bt, R, N, K, err);
	if (!c->pad_rows || N % 8 || !blas_out(yt, xt)) {
		tc_launch<BF>(c, y, yt, x, w, bias, bt, R, N, K);
		LAUNCH_TRY(err);
		return LMD_OK;
	}
	int P = c->pad_rows, rc;
	size_t xs = (size_t)K * 2, ys = (size_t)N * lmd_dtype_size(yt);
	if ((rc = lmd_cuda_grow(c, &c->pad_x, &c->pad_x_cap, P * xs, err)) ||
	    (rc = lmd_cuda_grow(c, &c->pad_y, &c->pad_y_cap, P * ys, err)))
		return rc;
	for (int r0 = 0; r0 < R; r0 += P) {
		int m = R - r0 < P ? R - r0 : P;
		CUDA_TRY(cudaMemcpyAsync(c->pad_x, (const char *)x + r0 * xs, m * xs, cudaMemcpyDeviceToDevice, c->st), err);
		if ((rc = blas_matmul(c, c->pad_y, yt, c->pad_x, xt, w, bias, bt, P, N, K, err)))
			return rc;
		CUDA_TRY(cudaMemcpyAsync((char *)y + r0 * ys, c->pad_y, m * ys, cudaMemcpyDeviceToDevice, c->st), err);
	}
	return LMD_OK;
}

/*
 * A 16-bit product: the first nruns of the step's prefill runs (step_begin's c->runs; 0 when the rows
 * are not the step's) each through cuBLAS as one product of the run's own length (see the top of the
 * file), the rows around them by rows_matmul.
 */
template <bool BF>
static int runs_matmul(struct cuda_ctx *c, void *y, enum lmd_dtype yt, const void *x, enum lmd_dtype xt, const void *w,
		       const void *bias, int bt, int R, int N, int K, int nruns, struct lmd_err *err)
{
	size_t xs = (size_t)K * 2, ys = (size_t)N * lmd_dtype_size(yt);
	int r = 0;
	for (int i = 0; i <= nruns; i++) {
		int first = i < nruns ? c->runs[2 * i] : R, len = i < nruns ? c->runs[2 * i + 1] : 0;
		int rc = first > r ? rows_matmul<BF>(c, (char *)y + r * ys, yt, (const char *)x + r * xs, xt, w, bias, bt,
						      first - r, N, K, err) : 0;
		if (!rc && len)
			rc = blas_matmul(c, (char *)y + first * ys, yt, (const char *)x + first * xs, xt, w, bias, bt, len, N, K, err);
		if (rc)
			return rc;
		r = first + len;
	}
	return LMD_OK;
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
	int same = x->dtype == w->dtype, half = same && x->dtype != LMD_F32;
	int aligned = ((uintptr_t)x->data % 16 == 0) && ((uintptr_t)w->data % 16 == 0) && K % 8 == 0;
	const void *b = bias ? bias->data : NULL;
	int bt = bias ? bias->dtype : 0;
	if (half && aligned && !c->cublas_gemm) {
		/* prefill runs through cuBLAS: the step's rows (R == n), every run's rows 16-byte aligned */
		int nruns = R == c->step.n && N % 8 == 0 && (uintptr_t)y->data % 16 == 0 && blas_out(y->dtype, x->dtype)
				    ? c->nruns : 0;
		return x->dtype == LMD_F16 ? runs_matmul<false>(c, y->data, y->dtype, x->data, x->dtype, w->data, b, bt, (int)R,
								 (int)N, (int)K, nruns, err)
					   : runs_matmul<true>(c, y->data, y->dtype, x->data, x->dtype, w->data, b, bt, (int)R,
								(int)N, (int)K, nruns, err);
	}
	if (same && blas_out(y->dtype, x->dtype))
		return blas_matmul(c, y->data, y->dtype, x->data, x->dtype, w->data, b, bt, R, N, K, err);
	dim3 grid((unsigned)((N + 63) / 64), (unsigned)((R + 63) / 64));
	gemm_generic_kernel<<<grid, 256, 0, c->st>>>(y->data, y->dtype, x->data, x->dtype, w->data, w->dtype, b, bt,
						     (int)R, (int)N, (int)K);
	LAUNCH_TRY(err);
	return LMD_OK;
}
