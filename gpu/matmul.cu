/*
 * matmul: y[R, N] = x[R, K] · w[N, K]ᵀ (+ bias[N]), fp32 accumulation, y rounded once to its dtype.
 *
 * The default (lmd_backend_opts.deterministic off, no LMD_CUDA_GEMM): a 16-bit product of up to c->gemv_rows
 * rows through gemv (below), every other through cuBLAS at its own shape (the cublas path below), the fastest
 * measured at every batch size; a row's bits may then depend on how many rows share its product.
 *
 * Batch invariance (deterministic, or LMD_CUDA_GEMM set to one of the invariant settings). A row of y must
 * not depend on the other rows in the call: a sequence decoded alone and the same sequence decoded among 63
 * others get the same bits (issue 5's check). Three ways for 16-bit x and w (both f16 or both bf16) keep
 * it, one for each kind of row:
 *
 * Prefill runs. In a step's product (R = the step's tokens) every run of >= BLAS_RUN consecutive tokens of
 * one sequence (a prefill chunk, which the scheduler cuts from that sequence's prompt alone) goes through
 * cuBLAS as one product of the run's length. cuBLAS picks its kernel from the shape, and the run's shape
 * does not depend on the rest of the batch, so the chunk's bits do not either.
 *
 * Padded blocks (deterministic's default for the other rows: decode tokens, short chunks; LMD_CUDA_GEMM=padP,
 * P = PAD_ROWS = 128 by default): cuBLAS on blocks of exactly P rows (the last block padded), so every block
 * is the same product with the same kernel and a row's bits depend on the row alone. A single decode
 * pays for P rows, which costs little while the weights' bytes dominate (H200, Llama-2-7B shape: batch-1
 * decode 1.3 % slower than lmd's kernels, 64 and 256 concurrent 1.5x and 1.3x faster;
 * bench/results/2026-12-01-h200-engine.md). The blocks run in place when x and y are the backend's
 * activations (alloc leaves room for P more rows; both 256-byte aligned, as cudaMalloc's scratch is);
 * other rows are copied through scratch. The padding rows hold whatever was there: rows are independent.
 *
 * lmd's kernels (LMD_CUDA_GEMM=lmd) follow one rule of summation for every R:
 *
 *   acc = 0; for each span s of 32 k (s = 0, 1, ...): acc = mma(step 0 of s); acc = mma(step 1 of s)
 *
 * with mma.sync.m16n8k16 (f32 accumulators) and this fixed fragment map: lane l (g = l / 4, q = l % 4)
 * holds the 8 consecutive k of its row / column starting at 32s + 8q (one 16-byte load); step j uses
 * elements 4j + {0,1} as the mma's k = 2q + {0,1} and 4j + {2,3} as k = 2q + 8 + {0,1}, for A (rows g
 * and g + 8 of x) and B (row g of w, i.e. column g of wᵀ) alike. k beyond K reads as zero. No split-K:
 * the order is the span order. Two kernels follow the rule, so either one gives the same bits:
 *   skinny  R <= 16 (decode): one warp per 8 output columns over the whole of K. The warp streams its 8
 *           rows of w into its own shared-memory ring with cp.async, 512 contiguous bytes of a row per
 *           instruction (SK_STAGES stages of SK_U spans, all but one in flight, __syncwarp between), and
 *           reads the fragments back in the map above; x (rows >= R read as zero) comes from L1.
 *           grid ceil(N / 32), block 128, SK_SMEM bytes of shared memory.
 *   tiled   any R: BM x BN output tiles (128 or 64 x 128 or 64), 8 warps as 2 x 4, three shared-memory
 *           stages of two spans each, filled by cp.async (zero-fill beyond R, N, K); the fragments are
 *           read with 16-byte shared loads in the same map (rows of one span are 64 bytes: no conflicts).
 *           grid (ceil(N / BN), ceil(R / BM)), block 256.
 * The tile shape is chosen from R and N (enough blocks for the GPU) and does not change the bits. They
 * also take the padded path's rows when N % 8 != 0 (scratch rows must stay 16-byte aligned).
 *
 * One algorithm (LMD_CUDA_GEMM=ltR; lt = LT_ROWS = 256): the other rows through cuBLASLt with one
 * algorithm per product shape (N, K, dtypes), chosen once from the heuristic for R rows among those that
 * split no K. Rows are independent in a tensor-core product and the algorithm (tile, stages, order over
 * K) is then the same for every row count, so a row's bits do not depend on the batch, with no padding
 * (test-ops checks it bit for bit; on the H200, 64 concurrent equal alone for R = 1, 16, 32, 64, 128,
 * 256). lt128: 7 % more tok/s than pad128 at 256 concurrent, 18 % less at batch 1
 * (bench/results/2026-12-02-h200-engine.md).
 *
 * gemv (the default's products of up to c->gemv_rows rows, 16-bit x and w of one dtype, 16-byte aligned;
 *   LMD_CUDA_GEMV=R, 0: cuBLAS for those too): a warp per output column n (a persistent grid, n += its
 *   warps), lane l sums chunks l, l + 32, ... of 8 k (one 16-byte load of w), k in order inside a chunk,
 *   GEMV_U chunks loaded a step ahead of the FMAs; then the 32 lanes' sums by a shuffle tree. A row's bits
 *   depend on K alone, not on R, but differ from cuBLAS's, so like cublas it is not batch-invariant across
 *   the boundary c->gemv_rows. The first weights are loaded before the programmatic wait (pdl_launch).
 *
 * Other paths (chosen from the dtypes and K only, never from R):
 *   cublas  f32 x and w: cublasGemmEx, CUBLAS_COMPUTE_32F (no TF32); a bias is broadcast into y first and
 *           added by beta = 1. cuBLAS picks its kernel from the row count too, so under batch invariance
 *           the f32 rows go in padded blocks of P rows (PAD_ROWS with lmd or lt). Without deterministic
 *           (or with LMD_CUDA_GEMM=cublas) every product goes there at its own shape (not batch-invariant).
 *   generic any mix of f32/f16/bf16 (fp32 compute over 16-bit weights), or 16-bit rows that are not
 *           16-byte aligned / K % 8 != 0: 64x64 tiles, k-step 16, 256 threads each 4x4 outputs.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "internal.cuh"

// ----------------------------------------------------------------------------
// CUDA kernels

/* One span (32 k) into c: ag, ah = 8 k of rows g and g + 8 of x, b = the same 8 k of column g of wᵀ. */
template <bool BF>
__device__ __forceinline__ void mma_span(float c[4], uint4 ag, uint4 ah, uint4 b)
{
	mma16816<BF>(c, ag.x, ah.x, ag.y, ah.y, b.x, b.y);
	mma16816<BF>(c, ag.z, ah.z, ag.w, ah.w, b.z, b.w);
}

#define SK_U 8       /* spans per pipeline stage: 512 bytes of each of the warp's 8 rows of w */
#define SK_PITCH 36  /* uint4 per row in the ring: 32 used, 4 of padding (no bank conflicts) */
/*
 * Stages per warp: SK_STAGES - 1 in flight while one is used. (8 stages for the o and down projections, whose
 * 128 blocks leave SMs one block each, were built at aab6829 but never timed on their own: that run's
 * op test stopped early on an unrelated bug. Left out until measured; 147 KB of shared memory would
 * also leave little L1 for x.)
 */
#define SK_STAGES 4
#define SK_SMEM (4 * SK_STAGES * 8 * SK_PITCH * 16)

template <bool BF, bool LOW8>  // LOW8: R <= 8, rows g + 8 are all zero
__global__ void __launch_bounds__(128) gemm_skinny(void *y, int yt, const uint4 *x, const uint4 *w, const void *bias,
						   int bt, int R, int N, int K)
{
	extern __shared__ uint4 sk[];  // [warp][stage][8 rows][SK_PITCH]
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
	const int n0 = (blockIdx.x * 4 + warp) * 8;
	if (n0 >= N)
		return;
	const int K8 = K / 8, S = (K + 31) / 32, NS = (S + SK_U - 1) / SK_U;
	const bool gok = g < R, hok = !LOW8 && g + 8 < R;
	const uint4 *xg = x + (size_t)(gok ? g : 0) * K8, *xh = x + (size_t)(hok ? g + 8 : 0) * K8;
	uint4 *ring = sk + (size_t)warp * SK_STAGES * 8 * SK_PITCH;
	const uint4 z = make_uint4(0, 0, 0, 0);
	auto issue = [&](int t) {  // stage t: 512 contiguous bytes of each row, one row per instruction (zero beyond K, N)
		uint4 *d = ring + (t % SK_STAGES) * 8 * SK_PITCH + lane;
		int ch = t * SK_U * 4 + lane;
#pragma unroll
		for (int r = 0; r < 8; r++) {
			bool ok = n0 + r < N && ch < K8;
			cp_async16(d + r * SK_PITCH, w + (ok ? (size_t)(n0 + r) * K8 + ch : 0), ok);
		}
		asm volatile("cp.async.commit_group;\n" ::);
	};
	for (int t = 0; t < SK_STAGES - 1; t++)
		issue(t);
	float c[4] = {0, 0, 0, 0};
	for (int t = 0; t < NS; t++) {
		asm volatile("cp.async.wait_group %0;\n" ::"n"(SK_STAGES - 2));
		__syncwarp();  // every lane's copies of stage t are in; every lane is done with the slot issued below
		const uint4 *d = ring + (t % SK_STAGES) * 8 * SK_PITCH + g * SK_PITCH + q;
		uint4 bv[SK_U], a[SK_U], h[SK_U];
#pragma unroll
		for (int u = 0; u < SK_U; u++) {
			int ch = (t * SK_U + u) * 4 + q;
			bool in = ch < K8;
			bv[u] = d[u * 4];
			a[u] = in && gok ? __ldg(xg + ch) : z;
			h[u] = in && hok ? __ldg(xh + ch) : z;
		}
		issue(t + SK_STAGES - 1);  // the slot read in the last iteration
#pragma unroll
		for (int u = 0; u < SK_U; u++)
			if (t * SK_U + u < S)
				mma_span<BF>(c, a[u], h[u], bv[u]);
	}
	asm volatile("cp.async.wait_all;\n" ::);
	store_frag(y, yt, bias, bt, R, N, g, n0 + 2 * q, c);
}

#define GEMV_U 4     /* chunks of 8 k a lane loads at once */

/*
 * y[r][n] for r < R <= NR: the summation at the top of the file (gemv). FU (gate_up): N = inter, the warp's column
 * n is the pair (gate n, up n + N) of w, summed one after the other; y[r][n] = silu_of(gate, up), each first
 * rounded to gt (gu's dtype) as the product would have stored it.
 */
template <bool BF, int NR, bool FU>
__global__ void __launch_bounds__(256, 4) gemv_kernel(void *y, int yt, const uint4 *x, const uint4 *w, const void *bias,
						       int bt, int R, int N, int K8, int gt)
{
	const int lane = threadIdx.x & 31, step = (int)gridDim.x * 8;
	int n = (int)blockIdx.x * 8 + (threadIdx.x >> 5), c0 = 0, ph = 0;  // the warp's next column, its half (FU), chunk
	uint4 nx[GEMV_U];
	auto load = [&]() {  // nx = chunks c0 + 32u + lane of column n (of its half ph; zero past K)
		const uint4 *wr = w + (size_t)(n + ph * N) * K8;
#pragma unroll
		for (int u = 0; u < GEMV_U; u++) {
			int ch = c0 + 32 * u + lane;
			nx[u] = n < N && ch < K8 ? __ldcs(wr + ch) : make_uint4(0, 0, 0, 0);
		}
	};
	load();
	pdl_start();  // the weights above, x and y below
	float acc[NR], gate[NR];
#pragma unroll
	for (int r = 0; r < NR; r++)
		acc[r] = gate[r] = 0;
	while (n < N) {
		uint4 cur[GEMV_U];
#pragma unroll
		for (int u = 0; u < GEMV_U; u++)
			cur[u] = nx[u];
		const int cn = n, cph = ph, cc = c0;
		c0 += 32 * GEMV_U;
		if (c0 >= K8) {
			c0 = 0;
			if (FU && !ph) {
				ph = 1;
			} else {
				ph = 0;
				n += step;
			}
		}
		load();  // the next chunks in flight while these are summed
#pragma unroll
		for (int u = 0; u < GEMV_U; u++) {
			int ch = cc + 32 * u + lane;
			if (ch >= K8)
				break;
			const uint32_t *wq = (const uint32_t *)&cur[u];
#pragma unroll
			for (int r = 0; r < NR; r++) {
				if (r >= R)
					break;
				uint4 xv = __ldg(x + (size_t)r * K8 + ch);
				const uint32_t *xq = (const uint32_t *)&xv;
#pragma unroll
				for (int j = 0; j < 4; j++) {
					float2 a = BF ? __bfloat1622float2(*(const __nv_bfloat162 *)&wq[j])
						      : __half22float2(*(const __half2 *)&wq[j]);
					float2 b = BF ? __bfloat1622float2(*(const __nv_bfloat162 *)&xq[j])
						      : __half22float2(*(const __half2 *)&xq[j]);
					acc[r] = fmaf(a.x, b.x, acc[r]);
					acc[r] = fmaf(a.y, b.y, acc[r]);
				}
			}
		}
		if (n != cn || ph != cph) {  // column cn (its half cph) is summed: the lanes' sums, then y
#pragma unroll
			for (int r = 0; r < NR; r++) {
#pragma unroll
				for (int o = 16; o > 0; o >>= 1)
					acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
				if (FU && !cph)
					gate[r] = acc[r];
				else if (FU && lane == 0 && r < R)
					st(y, yt, (size_t)r * N + cn, silu_of(rnd(gate[r], gt), rnd(acc[r], gt), yt));
				else if (!FU && lane == 0 && r < R)
					st(y, yt, (size_t)r * N + cn, acc[r] + (bias ? ld(bias, bt, cn) : 0.0f));
				acc[r] = 0;
			}
		}
	}
}

template <bool BF, int NR, bool FU = false>
static void gemv_launch(struct cuda_ctx *c, void *y, int yt, const void *x, const void *w, const void *bias, int bt,
			int R, int N, int K, int gt = 0)
{
	constexpr auto k = gemv_kernel<BF, NR, FU>;
	pdl_launch(c, k, resident_grid<k>(c, (N + 7) / 8), 256, 0, y, yt, (const uint4 *)x, (const uint4 *)w, bias, bt, R, N,
		   K / 8, gt);
}

/* gemv for R <= GEMV_ROWS rows of 16-bit x and w (NR = 1, 2 or 4); FU as gemv_kernel's */
template <bool BF, bool FU = false>
static void gemv_rows(struct cuda_ctx *c, void *y, int yt, const void *x, const void *w, const void *bias, int bt, int R,
		      int N, int K, int gt = 0)
{
	if (R == 1)
		gemv_launch<BF, 1, FU>(c, y, yt, x, w, bias, bt, R, N, K, gt);
	else if (R == 2)
		gemv_launch<BF, 2, FU>(c, y, yt, x, w, bias, bt, R, N, K, gt);
	else
		gemv_launch<BF, 4, FU>(c, y, yt, x, w, bias, bt, R, N, K, gt);
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
	float c[MI][NJ][4];
#pragma unroll
	for (int i = 0; i < MI; i++)
#pragma unroll
		for (int j = 0; j < NJ; j++)
			c[i][j][0] = c[i][j][1] = c[i][j][2] = c[i][j][3] = 0;
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
	}
	asm volatile("cp.async.wait_all;\n" ::);
#pragma unroll
	for (int i = 0; i < MI; i++)
#pragma unroll
		for (int j = 0; j < NJ; j++)
			store_frag(y, yt, bias, bt, R, N, r0 + wm * (BM / 2) + 16 * i + g, n0 + wn * (BN / 4) + 8 * j + 2 * q,
				   c[i][j]);
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

/* The tensor-core kernels (see the top of the file); the shape only picks how the work is cut. */
template <bool BF>
static void tc_launch(struct cuda_ctx *c, void *y, int yt, const void *x, const void *w, const void *bias, int bt,
		      int R, int N, int K)
{
	if (R <= 16) {
		unsigned grid = (unsigned)((N + 31) / 32);
		if (R <= 8)
			gemm_skinny<BF, true><<<grid, 128, SK_SMEM, c->st>>>(y, yt, (const uint4 *)x, (const uint4 *)w, bias, bt, R,
								       N, K);
		else
			gemm_skinny<BF, false><<<grid, 128, SK_SMEM, c->st>>>(y, yt, (const uint4 *)x, (const uint4 *)w, bias, bt,
									R, N, K);
		return;
	}
	long nb128 = (long)((R + 127) / 128) * ((N + 127) / 128), nb64 = (long)((R + 63) / 64) * ((N + 127) / 128);
	if (nb128 >= 2L * c->sms)
		tiled_launch<BF, 128, 128>(c, y, yt, x, w, bias, bt, R, N, K);
	else if (nb64 >= c->sms)
		tiled_launch<BF, 64, 128>(c, y, yt, x, w, bias, bt, R, N, K);
	else
		tiled_launch<BF, 64, 64>(c, y, yt, x, w, bias, bt, R, N, K);
}

int lmd_cuda_matmul_init(struct cuda_ctx *c, struct lmd_err *err)
{
	(void)c;
	CUDA_TRY(cudaFuncSetAttribute(gemm_skinny<false, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, SK_SMEM), err);
	CUDA_TRY(cudaFuncSetAttribute(gemm_skinny<false, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, SK_SMEM), err);
	CUDA_TRY(cudaFuncSetAttribute(gemm_skinny<true, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, SK_SMEM), err);
	CUDA_TRY(cudaFuncSetAttribute(gemm_skinny<true, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, SK_SMEM), err);
#define TILED_ATTR(BF, BM, BN) CUDA_TRY(cudaFuncSetAttribute(gemm_tiled<BF, BM, BN>, \
	cudaFuncAttributeMaxDynamicSharedMemorySize, tiled_smem<BM, BN>()), err)
	TILED_ATTR(false, 128, 128);
	TILED_ATTR(false, 64, 128);
	TILED_ATTR(false, 64, 64);
	TILED_ATTR(true, 128, 128);
	TILED_ATTR(true, 64, 128);
	TILED_ATTR(true, 64, 64);
#undef TILED_ATTR
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

int lmd_cuda_blas(struct cuda_ctx *c, void *y, enum lmd_dtype yt, const void *x, enum lmd_dtype xt, const void *w,
		  const void *bias, int bt, int64_t R, int64_t N, int64_t K, struct lmd_err *err)
{
	return blas_matmul(c, y, yt, x, xt, w, bias, bt, R, N, K, err);
}

/* cuBLASLt's descriptors of y[R, N] = x[R, K] · wᵀ in its column-major terms: A = w (K x N), B = x (K x R),
 * D = y (N x R). */
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
 * for c->lt_gemm rows (LMD_CUDA_GEMM=ltR) that splits no K (no reduction across blocks) and takes
 * 16-byte aligned pointers.
 */
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
	int rc = lt_descs_make(&ds, yt, xt, c->lt_gemm, N, K, err);
	if (rc)
		return rc;
	cublasLtMatmulPreference_t pref = NULL;
	uint64_t ws = c->blas_ws_bytes;
	uint32_t align = 16;
	cublasLtMatmulHeuristicResult_t res[64];  // for a few rows and a long K, the first dozen all split K
	int got = 0;
	cublasStatus_t s = cublasLtMatmulPreferenceCreate(&pref);
	if (s == CUBLAS_STATUS_SUCCESS)
		s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
	for (int a = CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES; s == CUBLAS_STATUS_SUCCESS && a <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES; a++)
		s = cublasLtMatmulPreferenceSetAttribute(pref, (cublasLtMatmulPreferenceAttributes_t)a, &align, sizeof(align));
	if (s == CUBLAS_STATUS_SUCCESS)
		s = cublasLtMatmulAlgoGetHeuristic(c->lt, ds.op, ds.a, ds.b, ds.d, ds.d, pref, 64, res, &got);
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
		if (c->prof) {  // which algorithm: for the profile's reader
			int32_t id = -1, tile = -1, stages = -1;
			cublasLtMatmulAlgoConfigGetAttribute(&e->algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof(id), &n);
			cublasLtMatmulAlgoConfigGetAttribute(&e->algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile), &n);
			cublasLtMatmulAlgoConfigGetAttribute(&e->algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof(stages), &n);
			fprintf(stderr, "lmd cuda profile: lt%d algorithm for N %d K %d: id %d, tile %d, stages %d (heuristic's #%d)\n",
				c->lt_gemm, N, K, (int)id, (int)tile, (int)stages, i + 1);
		}
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
 * y = x · wᵀ (+ bias) by cuBLAS on blocks of exactly P rows, in place or copied through scratch, so that every
 * block is the same product (same kernel, same pointers' alignment) and a row's bits depend on the row alone.
 */
static int pad_matmul(struct cuda_ctx *c, void *y, enum lmd_dtype yt, const void *x, enum lmd_dtype xt, const void *w,
		      const void *bias, int bt, int R, int N, int K, int P, struct lmd_err *err)
{
	int rc;
	size_t xs = (size_t)K * lmd_dtype_size(xt), ys = (size_t)N * lmd_dtype_size(yt), span = (size_t)(R + P - 1) / P * P;
	/* in place: the rows past R are alloc's room, or the next prefill run's (written after these) */
	if ((uintptr_t)x % 256 == 0 && (uintptr_t)y % 256 == 0 && lmd_cuda_room(c, x) >= span * xs &&
	    lmd_cuda_room(c, y) >= span * ys) {
		for (int r0 = 0; r0 < R; r0 += P)
			if ((rc = blas_matmul(c, (char *)y + r0 * ys, yt, (const char *)x + r0 * xs, xt, w, bias, bt, P, N, K, err)))
				return rc;
		return LMD_OK;
	}
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
 * Rows outside prefill runs: cuBLAS on blocks of exactly P rows (pad_matmul); or the shape's one cuBLASLt
 * algorithm (LMD_CUDA_GEMM=ltR); or lmd's tensor-core kernels (LMD_CUDA_GEMM=lmd, or a shape the scratch
 * cannot keep aligned).
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
	return pad_matmul(c, y, yt, x, xt, w, bias, bt, R, N, K, c->pad_rows, err);
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
	if (half && aligned && R <= c->gemv_rows) {
		(x->dtype == LMD_BF16 ? gemv_rows<true> : gemv_rows<false>)(c, y->data, y->dtype, x->data, w->data, b, bt, (int)R,
									     (int)N, (int)K, 0);
		LAUNCH_TRY(err);
		return LMD_OK;
	}
	if (same && blas_out(y->dtype, x->dtype))  // f32: padded blocks unless the rows need not be batch-invariant
		return c->cublas_gemm ? blas_matmul(c, y->data, y->dtype, x->data, x->dtype, w->data, b, bt, R, N, K, err)
				      : pad_matmul(c, y->data, y->dtype, x->data, x->dtype, w->data, b, bt, (int)R, (int)N,
						   (int)K, c->pad_rows ? c->pad_rows : PAD_ROWS, err);
	dim3 grid((unsigned)((N + 63) / 64), (unsigned)((R + 63) / 64));
	gemm_generic_kernel<<<grid, 256, 0, c->st>>>(y->data, y->dtype, x->data, x->dtype, w->data, w->dtype, b, bt,
						     (int)R, (int)N, (int)K);
	LAUNCH_TRY(err);
	return LMD_OK;
}

/* gate_up through gemv (FU): where the product would go through gemv, x and w of one 16-bit dtype */
int lmd_cuda_gate_up_fused(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *gu, const struct lmd_tensor *x,
			   const struct lmd_tensor *w, struct lmd_err *err)
{
	int64_t K = t_cols(x), I = t_cols(y), R = t_rows(x);
	if (t_cols(w) != K || t_rows(w) != 2 * I || t_cols(gu) != 2 * I || t_rows(y) != R || t_rows(gu) < R)
		return lmd_errorf(err, LMD_EINVAL, "cuda gate_up: tensor shapes do not match");
	bool half = x->dtype == w->dtype && x->dtype != LMD_F32 && float_dt(y->dtype) && float_dt(gu->dtype);
	bool aligned = (uintptr_t)x->data % 16 == 0 && (uintptr_t)w->data % 16 == 0 && K % 8 == 0;
	if (!half || !aligned || R == 0 || R > c->gemv_rows || I == 0)
		return 1;
	(x->dtype == LMD_BF16 ? gemv_rows<true, true> : gemv_rows<false, true>)(c, y->data, y->dtype, x->data, w->data, NULL, 0,
										   (int)R, (int)I, (int)K, gu->dtype);
	LAUNCH_TRY(err);
	return LMD_OK;
}
