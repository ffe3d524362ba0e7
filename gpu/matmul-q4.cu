/*
 * matmul_q4 (W4A16): y[R, N] = x[R, K] · Wᵀ (+ bias) for an int4 weight, W[n][k] = (q - zero) * scale per
 * group of G input channels (q4.h), fp32 accumulation. The CPU reference is lmd_cpu_matmul_q4 (ops-cpu.c).
 *
 * Layout on the device (made once by weight_q4 from q4.h's layout, on the GPU; lmd(7) "int4 on CUDA").
 * N is padded to Np (a multiple of 8) and K to Kp (a multiple of 128) with q = zero = scale = 0:
 *   w       LMD_U8 [Np / 8, Kp / 128 * 512]  tile (t, b) of output rows 8t..8t+7 and inputs 128b..128b+127
 *           is 32 lanes x 16 bytes; lane l (g = l / 4, c = l % 4) holds row 8t + g in 4 words, word s the 8
 *           inputs 128b + 32s + 8c + e (e = 0..7), nibble e at bit 4 * (e / 2) + 16 * (e % 2): so
 *           (word >> 4j) & 0x000F000F is the pair (e = 2j, 2j + 1) as the two halves of a 32-bit word, and
 *           ORed with 0x6400 (f16 1024) or 0x4300 (bf16 128) each half is a 16-bit float 1024 + q or 128 + q.
 *   scales  LMD_F16 [Np / 8, ngp * 8]        group i of row 8t + r at [t][8i + r] (ngp = ceil(Kp / G))
 *   zeros   LMD_U8  [Np / 8, ngp * 8]        the same order
 * One 16-byte load a lane per tile feeds two mma.sync.m16n8k16 per word with a few integer ops: the
 * weights as exact small integers q - zero (the zero folded into the magic constant), the scale applied
 * to the fp32 product of each group, so the only roundings are those of the fp32 sums.
 *
 * Summation rule (batch invariance, as lmd's 16-bit kernels in matmul.cu): the tiles b = 0..Kp/128-1 of
 * K are cut into 8 slices, slice j = [j * KB / 8, (j + 1) * KB / 8) (some empty when KB < 8); a slice's
 * sum is acc = 0, then per tile in order, per group piece of the tile (G / 32 words, or the whole tile
 * when G >= 128) in order: tmp = 0; tmp = mma(words of the piece in order); acc = fma(tmp, scale, acc);
 * the row's result is ((0 + acc_0) + acc_1) + ... + acc_7, then + bias, rounded once. The fragment map
 * is matmul.cu's (lane (g, c) holds the 8 consecutive k of its row at 32s + 8c; step j of a word uses
 * elements 4j + {0,1} as k = 2c + {0,1} and 4j + {2,3} as k = 2c + 8 + {0,1}). Two kernels follow it,
 * so the choice between them (by R) changes no bits:
 *   q4_stream  R <= c->q4_stream_rows (LMD_CUDA_Q4=streamR, default 32; decode): block = 8 warps, warp j sums slice j of
 *              a pair of tile rows (or two pairs) at a time, the weights as the mma's A operand (16 outputs) and x's
 *              rows as B (8 rows an n-block, from global memory through L1), the weights streamed through a
 *              ring of registers across the pairs a persistent block walks; the 8 partials are added in shared
 *              memory in slice order. grid: what the GPU holds at once.
 *   q4_skinny  R <= 16 with LMD_CUDA_Q4=old: block = 8 warps on one tile of 8 output rows,
 *              warp j sums slice j, 4 tiles loaded at once; the partials as above. grid (1, Np / 8).
 *   q4_piped   the other rows (with streamR): block = 64 rows x 128 outputs, warp w on tile rows 2w, 2w + 1 of all 64 rows;
 *              x's rows and the weights, scales and zeros of a tile through a 4-stage cp.async ring in
 *              shared memory; slices summed one after another. Items of 64 rows x 128 outputs; K cut in
 *              ranges, each its own items, when that fills the GPU better (q4_splits; q4_reduce adds them; the
 *              8 slices in order when batch-invariant); as many blocks as the GPU holds, each taking items in
 *              turn with its ring running on across them (LMD_CUDA_Q4_PERSIST=0: one block an item).
 *   q4_tiled   the other rows with old: x through 2 stages, the weights into registers one tile ahead
 *              (split below one block an SM).
 * Prefill runs (the step's runs of >= BLAS_RUN tokens of one sequence, as matmul.cu's 16-bit products):
 * W is dequantized once per call into a [N, K] scratch of x's dtype and the runs go through cuBLAS (the
 * 16-bit path), the rows around them through the kernels above. Products of c->q4_blas_rows rows or more
 * (the default without deterministic, Q4_BLAS_ROWS; not batch-invariant): every row that way. f32 activations, or x not 16-byte aligned:
 * dequantized W through lmd_cuda_matmul.
 */
#include <stdint.h>
#include <string.h>

#include "internal.cuh"

#define Q4_KT 128   /* inputs of a tile */
#define Q4_SLICES 8

// ----------------------------------------------------------------------------
// the repack (weight_q4) and the dequantization (prefill runs)

/* One output word of the packed layout per thread: nibble of (n, k) from q4.h's [N][K/2] bytes. */
__global__ void q4_repack_kernel(uint32_t *dst, const uint8_t *q, int N, int K, int KB, int64_t words)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < words; i += (int64_t)gridDim.x * blockDim.x) {
		int s = (int)(i & 3), lane = (int)(i >> 2) & 31;
		int64_t tile = i >> 7;
		int b = (int)(tile % KB), t = (int)(tile / KB);
		int n = 8 * t + (lane >> 2), k0 = Q4_KT * b + 32 * s + 8 * (lane & 3);
		uint32_t w = 0;
		if (n < N)
			for (int e = 0; e < 8 && k0 + e < K; e++) {
				int k = k0 + e;
				uint32_t nib = (q[(size_t)n * (K / 2) + k / 2] >> (4 * (k & 1))) & 15;
				w |= nib << (4 * (e / 2) + 16 * (e % 2));
			}
		dst[i] = w;
	}
}

/* scales and zeros [N][ng] -> [Np/8][ngp*8] (0 past N or ng). */
__global__ void q4_repack_sz_kernel(__half *sd, uint8_t *zd, const __half *s, const uint8_t *z, int N, int ng, int ngp,
				    int64_t total)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
		int r = (int)(i & 7);
		int64_t rest = i >> 3;
		int gi = (int)(rest % ngp), t = (int)(rest / ngp), n = 8 * t + r;
		bool ok = n < N && gi < ng;
		sd[i] = ok ? s[(size_t)n * ng + gi] : __float2half(0.0f);
		zd[i] = ok ? z[(size_t)n * ng + gi] : 0;
	}
}

/* W [N, K] in dtype dt from the packed layout, one word (8 consecutive k of a row) a thread: (q - zero) * scale. */
__global__ void q4_dequant_kernel(void *dst, int dt, const uint32_t *w, const __half *sc, const uint8_t *zr, int N, int K,
				  int KB, int G, int ngp, int64_t words)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < words; i += (int64_t)gridDim.x * blockDim.x) {
		int s = (int)(i & 3), lane = (int)(i >> 2) & 31;
		int64_t tile = i >> 7;
		int b = (int)(tile % KB), t = (int)(tile / KB), g = lane >> 2;
		int n = 8 * t + g, k0 = Q4_KT * b + 32 * s + 8 * (lane & 3);
		if (n >= N || k0 >= K)
			continue;
		size_t o = ((size_t)t * ngp + k0 / G) * 8 + g;
		float sv = __half2float(sc[o]), z = (float)zr[o], f[8];
		uint32_t word = w[i];
#pragma unroll
		for (int e = 0; e < 8; e++)
			f[e] = ((float)((word >> (4 * (e / 2) + 16 * (e % 2))) & 15) - z) * sv;
		size_t d = (size_t)n * K + k0;
		if (dt == DT_F32) {
			((float4 *)((float *)dst + d))[0] = make_float4(f[0], f[1], f[2], f[3]);
			((float4 *)((float *)dst + d))[1] = make_float4(f[4], f[5], f[6], f[7]);
		} else {
			uint32_t h[4];
#pragma unroll
			for (int e = 0; e < 4; e++) {
				if (dt == DT_BF16) {
					__nv_bfloat162 v = __floats2bfloat162_rn(f[2 * e], f[2 * e + 1]);
					h[e] = *(uint32_t *)&v;
				} else {
					__half2 v = __floats2half2_rn(f[2 * e], f[2 * e + 1]);
					h[e] = *(uint32_t *)&v;
				}
			}
			*(uint4 *)((uint16_t *)dst + d) = make_uint4(h[0], h[1], h[2], h[3]);
		}
	}
}

// ----------------------------------------------------------------------------
// the products

/* (a & m) | c in one LOP3 (the compiler splits an and with an or of two constants in two) */
template <uint32_t M>
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t c)
{
	uint32_t d;
	asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(d) : "r"(a), "n"(M), "r"(c));
	return d;
}

/*
 * The lane's 8 weights of word u as exact q - zero, f16 or bf16 (a[j]: the pair j, elements 2j, 2j + 1);
 * zb: the magic constant plus the zero in both halves; mg: the bare magic constant (a register).
 */
template <bool BF>
__device__ __forceinline__ void qs_word(uint32_t (&a)[4], uint32_t u, uint32_t zb, uint32_t zh, uint32_t mg)
{
	if (BF) {
#pragma unroll
		for (int j = 0; j < 4; j++) {
			uint32_t m = and_or<0x000F000Fu>(u >> 4 * j, mg);
			__nv_bfloat162 d = __hsub2(*(__nv_bfloat162 *)&m, *(__nv_bfloat162 *)&zb);
			a[j] = *(uint32_t *)&d;
		}
	} else {  // the odd pairs as 1024 + 16q: (1024 + 16q) / 16 - (64 + zero), exact in one fma
		uint32_t v = u >> 8, m[4] = {and_or<0x000F000Fu>(u, mg), and_or<0x00F000F0u>(u, mg), and_or<0x000F000Fu>(v, mg),
					     and_or<0x00F000F0u>(v, mg)};
		const __half2 sixteenth = __half2half2(__ushort_as_half(0x2C00));
#pragma unroll
		for (int j = 0; j < 4; j++) {
			__half2 d = j & 1 ? __hfma2(*(__half2 *)&m[j], sixteenth, *(const __half2 *)&zh)
					  : __hsub2(*(__half2 *)&m[j], *(const __half2 *)&zb);
			a[j] = *(uint32_t *)&d;
		}
	}
}

/* The pair "magic + zero" (zb) and, for f16's odd pairs, -(64 + zero) (zh), of a zero point 0..15. */
template <bool BF>
__device__ __forceinline__ void q4_zero(uint32_t z, uint32_t &zb, uint32_t &zh)
{
	zb = z * 0x10001u + (BF ? 0x43004300u : 0x64006400u);
	zh = z * 0x100010u + 0xD400D400u;
}

/*
 * A lane's weights of one tile (t, b): its 16 bytes, and for each of the P group pieces of the tile (P = 4 for
 * groups of 32, 2 for 64, 1 for 128 and more) the zero of its row g and the scales of outputs 2c, 2c + 1.
 * Loaded together, ahead of their use.
 */
template <int P>
struct q4_w {
	uint4 q;
	uint32_t z[P], s[P];
};

template <int P>
__device__ __forceinline__ void q4_load(q4_w<P> &w, const uint4 *wq, const __half *sc, const uint8_t *zr, int t, int b,
					int KB, int G, int ngp, bool ok, bool stream)
{
	int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
	const uint4 *p = wq + ((size_t)t * KB + b) * 32 + lane;
	w.q = !ok ? make_uint4(0, 0, 0, 0) : stream ? __ldcs(p) : __ldg(p);
#pragma unroll
	for (int i = 0; i < P; i++) {
		size_t o = ((size_t)t * ngp + (Q4_KT * b + Q4_KT / P * i) / G) * 8;
		w.z[i] = ok ? zr[o + g] : 0;
		w.s[i] = ok ? __ldg((const unsigned int *)(sc + o + 2 * c)) : 0;
	}
}

/*
 * One tile of K for MT m-tiles and NT n-tiles of a warp: w[j] the lane's weights of n-tile j, a(s, ag, ah)
 * the lane's x fragments of word s (rows g and g + 8 of each m-tile). acc += the tile's group pieces, each
 * fma'd with its scales (the summation rule at the top of the file).
 */
template <bool BF, int MT, int NT, int P, class A>
__device__ __forceinline__ void q4_tile(float (&acc)[MT][NT][4], const q4_w<P> (&w)[NT], A a)
{
#pragma unroll
	for (int i = 0; i < P; i++) {
		float tmp[MT][NT][4];
		uint32_t zb[NT], zh[NT];
		const uint32_t mg = BF ? 0x43004300u : 0x64006400u;
#pragma unroll
		for (int j = 0; j < NT; j++) {
			q4_zero<BF>(w[j].z[i], zb[j], zh[j]);
#pragma unroll
			for (int m = 0; m < MT; m++)
				tmp[m][j][0] = tmp[m][j][1] = tmp[m][j][2] = tmp[m][j][3] = 0;
		}
#pragma unroll
		for (int s = 4 / P * i; s < 4 / P * (i + 1); s++) {
			uint4 ag[MT], ah[MT];
			a(s, ag, ah);
#pragma unroll
			for (int j = 0; j < NT; j++) {
				uint32_t u = s == 0 ? w[j].q.x : s == 1 ? w[j].q.y : s == 2 ? w[j].q.z : w[j].q.w;
				uint32_t bq[4];
				qs_word<BF>(bq, u, zb[j], zh[j], mg);
#pragma unroll
				for (int m = 0; m < MT; m++) {
					mma16816<BF>(tmp[m][j], ag[m].x, ah[m].x, ag[m].y, ah[m].y, bq[0], bq[1]);
					mma16816<BF>(tmp[m][j], ag[m].z, ah[m].z, ag[m].w, ah[m].w, bq[2], bq[3]);
				}
			}
		}
#pragma unroll
		for (int j = 0; j < NT; j++) {
			float2 sv = __half22float2(*(const __half2 *)&w[j].s[i]);
#pragma unroll
			for (int m = 0; m < MT; m++) {
				acc[m][j][0] = fmaf(tmp[m][j][0], sv.x, acc[m][j][0]);
				acc[m][j][1] = fmaf(tmp[m][j][1], sv.y, acc[m][j][1]);
				acc[m][j][2] = fmaf(tmp[m][j][2], sv.x, acc[m][j][2]);
				acc[m][j][3] = fmaf(tmp[m][j][3], sv.y, acc[m][j][3]);
			}
		}
	}
}

#define Q4_U 4  /* tiles a skinny warp loads ahead */

template <bool BF, int P>
__global__ void __launch_bounds__(256) q4_skinny(void *y, int yt, const uint4 *x, const uint4 *w, const __half *sc,
						 const uint8_t *zr, const void *bias, int bt, int R, int N, int K, int KB,
						 int G, int ngp)
{
	__shared__ float red[Q4_SLICES][4][32];
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
	int r0 = (int)blockIdx.x * 16, t = (int)blockIdx.y, K8 = K / 8;
	int b0 = warp * KB / Q4_SLICES, b1 = (warp + 1) * KB / Q4_SLICES;
	const uint4 *xg = x + (size_t)(r0 + g) * K8, *xh = x + (size_t)(r0 + g + 8) * K8;
	bool gok = r0 + g < R, hok = r0 + g + 8 < R;
	float acc[1][1][4] = {{{0, 0, 0, 0}}};
	for (int b = b0; b < b1; b += Q4_U) {
		q4_w<P> wv[Q4_U][1];
#pragma unroll
		for (int u = 0; u < Q4_U; u++)
			q4_load<P>(wv[u][0], w, sc, zr, t, b + u, KB, G, ngp, b + u < b1, true);
#pragma unroll
		for (int u = 0; u < Q4_U; u++) {
			int bb = b + u;
			if (bb < b1) {
				auto a = [&](int s, uint4 (&ag)[1], uint4 (&ah)[1]) {
					int k8 = (Q4_KT * bb + 32 * s) / 8 + c;
					const uint4 z = make_uint4(0, 0, 0, 0);
					ag[0] = gok && k8 < K8 ? xg[k8] : z;
					ah[0] = hok && k8 < K8 ? xh[k8] : z;
				};
				q4_tile<BF, 1, 1, P>(acc, wv[u], a);
			}
		}
	}
#pragma unroll
	for (int i = 0; i < 4; i++)
		red[warp][i][lane] = acc[0][0][i];
	__syncthreads();
	if (warp == 0) {
		float tot[4] = {0, 0, 0, 0};
		for (int j = 0; j < Q4_SLICES; j++)
#pragma unroll
			for (int i = 0; i < 4; i++)
				tot[i] += red[j][i][lane];
		store_frag(y, yt, bias, bt, R, N, r0 + g, 8 * t + 2 * c, tot);
	}
}

/*
 * q4_stream (R <= 8 NB): the decode product at the memory limit. The weights are the mma's A operand, two
 * tile rows (t = 2p, 2p + 1: outputs 16p + 0..15, a "pair") of one word s making the 16 x 16 fragment of
 * a step (a0, a2 from tile 2p, a1, a3 from tile 2p + 1: the pairs of the word's step j as the B fragments of
 * the rule at the top), x's rows 8nb + g the B operand (the lane's 8 k of word s, as A's fragments in the
 * other kernels): the same products in the same order, so the same bits as q4_piped for every row. Block =
 * 8 warps, warp j = slice j; the grid is what the GPU holds at once, a persistent loop over groups of NP
 * pairs (gi = blockIdx.x, + gridDim.x, ...); one load of x's fragments serves the NP pairs. The weights,
 * scales and zeros come through a ring of D register slots: slot u of round r holds item rD + u (an item:
 * tile b of the warp's slice in each of the group's 2 NP tile rows), refilled once used with item
 * (r + 1)D + u, or item u of the next group after the last round, so the stream runs on across groups.
 * The 8 slice sums of a group meet in shared memory and warp nb < NB adds its rows' sums in slice order.
 */
template <int P, int NP>
struct qs_item {
	uint4 q[2 * NP];
	uint32_t sz[2 * NP][P];  // row g of each tile, per group piece: scale bits | zero << 16
};

/*
 * One item of a warp's slice: tile b of the group's 2 NP tile rows (it: their words, scales and zeros) times x's
 * rows (xr: the lane's row 8nb + g at its column c; K8 = K / 8), into acc (the summation rule at the top).
 */
template <bool BF, int P, int NB, int NP>
__device__ __forceinline__ void qs_step(float (&acc)[NP][NB][4], const qs_item<P, NP> &it, const uint4 *const (&xr)[NB],
					int b, int K, int K8)
{
	const int c = threadIdx.x & 3;
	const uint32_t mg = BF ? 0x43004300u : 0x64006400u;
	const bool kin = (b + 1) * Q4_KT <= K;  // every word of the tile inside K
#pragma unroll
	for (int i2 = 0; i2 < P; i2++) {
		float tmp[NP][NB][4];
		uint32_t zb[2 * NP], zh[2 * NP];
#pragma unroll
		for (int j = 0; j < 2 * NP; j++)
			q4_zero<BF>(it.sz[j][i2] >> 16, zb[j], zh[j]);
#pragma unroll
		for (int p = 0; p < NP; p++)
#pragma unroll
			for (int nb = 0; nb < NB; nb++)
				tmp[p][nb][0] = tmp[p][nb][1] = tmp[p][nb][2] = tmp[p][nb][3] = 0;
		constexpr int W = 4 / P, XW = W < 4 / NB ? W : 4 / NB > 0 ? 4 / NB : 1;
#pragma unroll
		for (int s0 = W * i2; s0 < W * (i2 + 1); s0 += XW) {  // x's words s0.. at once
			uint4 xv[XW][NB];
			if (kin) {
#pragma unroll
				for (int e = 0; e < XW; e++)
#pragma unroll
					for (int nb = 0; nb < NB; nb++)
						xv[e][nb] = __ldg(xr[nb] + 16 * b + 4 * (s0 + e));
			} else {
#pragma unroll
				for (int e = 0; e < XW; e++)
#pragma unroll
					for (int nb = 0; nb < NB; nb++) {
						int k8 = 16 * b + 4 * (s0 + e);
						xv[e][nb] = k8 + c < K8 ? __ldg(xr[nb] + k8) : make_uint4(0, 0, 0, 0);
					}
			}
#pragma unroll
			for (int e = 0; e < XW; e++) {
				const int s = s0 + e;
#pragma unroll
				for (int p = 0; p < NP; p++) {
					uint32_t a[4], h[4];
					const uint4 &q0 = it.q[2 * p], &q1 = it.q[2 * p + 1];
					qs_word<BF>(a, s == 0 ? q0.x : s == 1 ? q0.y : s == 2 ? q0.z : q0.w,
						    zb[2 * p], zh[2 * p], mg);
					qs_word<BF>(h, s == 0 ? q1.x : s == 1 ? q1.y : s == 2 ? q1.z : q1.w,
						    zb[2 * p + 1], zh[2 * p + 1], mg);
#pragma unroll
					for (int nb = 0; nb < NB; nb++) {
						const uint4 &v = xv[e][nb];
						mma16816<BF>(tmp[p][nb], a[0], h[0], a[1], h[1], v.x, v.y);
						mma16816<BF>(tmp[p][nb], a[2], h[2], a[3], h[3], v.z, v.w);
					}
				}
			}
		}
#pragma unroll
		for (int p = 0; p < NP; p++) {
			float s0 = __half2float(__ushort_as_half((unsigned short)it.sz[2 * p][i2]));
			float s1 = __half2float(__ushort_as_half((unsigned short)it.sz[2 * p + 1][i2]));
#pragma unroll
			for (int nb = 0; nb < NB; nb++) {
				acc[p][nb][0] = fmaf(tmp[p][nb][0], s0, acc[p][nb][0]);
				acc[p][nb][1] = fmaf(tmp[p][nb][1], s0, acc[p][nb][1]);
				acc[p][nb][2] = fmaf(tmp[p][nb][2], s1, acc[p][nb][2]);
				acc[p][nb][3] = fmaf(tmp[p][nb][3], s1, acc[p][nb][3]);
			}
		}
	}
}

/*
 * The end of a group (gi) of NP pairs: the warps' slice sums through red (bar: a barrier of the block's 8
 * summing warps), then warp nb < NB adds its rows' sums in slice order and stores them (with the bias). FU
 * (gate_up, NP = 1, no bias): the pair is gate tile row gi and up tile row gi + N / 16 of w [N = 2 inter, K], and
 * y [R, inter] gets silu_of(gate, up), each rounded to gt (gu's dtype) first, as the product would have stored it.
 */
template <int NB, int NP, bool FU, class B>
__device__ __forceinline__ void qs_out(float (*red)[NP][NB * 4][32], const float (&acc)[NP][NB][4], B bar, void *y, int yt,
				       const void *bias, int bt, int R, int N, int gi, int gt)
{
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
#pragma unroll
	for (int p = 0; p < NP; p++)
#pragma unroll
		for (int e = 0; e < NB * 4; e++)
			red[warp][p][e][lane] = acc[p][e / 4][e % 4];
	bar();
	if (warp < NB) {  // warp nb: x's rows 8nb + 2c, + 1 of every pair
#pragma unroll
		for (int p = 0; p < NP; p++) {
			float tot[4] = {0, 0, 0, 0};
			for (int s = 0; s < Q4_SLICES; s++)
#pragma unroll
				for (int e = 0; e < 4; e++)
					tot[e] += red[s][p][4 * warp + e][lane];
			int o = 16 * (gi * NP + p) + g, rr = 8 * warp + 2 * c;
			if constexpr (FU) {
#pragma unroll
				for (int e = 0; e < 2; e++)
					if (rr + e < R)
						st(y, yt, (size_t)(rr + e) * (N / 2) + 8 * gi + g,
						   silu_of(rnd(tot[e], gt), rnd(tot[e + 2], gt), yt));
			} else {
#pragma unroll
				for (int e = 0; e < 4; e++) {
					int n = o + 8 * (e >> 1), r2 = rr + (e & 1);
					if (r2 < R && n < N)
						st(y, yt, (size_t)r2 * N + n, tot[e] + (bias ? ld(bias, bt, n) : 0.0f));
				}
			}
		}
	}
}

/* MB: the blocks an SM must hold (the registers' bound), 0 for q4_stream's own choice */
template <bool BF, int P, int NB, int NP, bool FU = false, int DR = 0, int MB = 0>
__global__ void __launch_bounds__(256, MB ? MB : NB > 1 ? 1 : DR > 2 ? 2 : 3) q4_stream(void *y, int yt, const uint4 *x,
											 const uint4 *w, const __half *sc,
											 const uint8_t *zr, const void *bias, int bt,
											 int R, int N, int K, int KB, int G, int ngp,
											 int gt)
{
	static_assert(!FU || NP == 1, "gate_up: one pair a group");
	constexpr int D = DR ? DR : NB == 1 || NP * P > 2 ? 2 : 4;  // the ring's depth (DR: qs_launch_1's choice)
	__shared__ float red[Q4_SLICES][NP][NB * 4][32];
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
	const int T = (N + 7) / 8, TG = N / 16, NG = FU ? TG : (T + 2 * NP - 1) / (2 * NP), K8 = K / 8;
	const unsigned gmul = ((1u << 20) + G / Q4_KT - 1) / (G / Q4_KT);  // b / (G / 128) = b * gmul >> 20 (b < 2^11)
	const int b0 = warp * KB / Q4_SLICES, L = (warp + 1) * KB / Q4_SLICES - b0, rounds = (L + D - 1) / D;
	qs_item<P, NP> ring[D];
	const uint4 *wl = w + lane;  // 32-bit offsets from here on (a weight of fewer than 2^31 16-byte words)
	const __half *sg = sc + g;
	const uint8_t *zg = zr + g;
	auto load = [&](qs_item<P, NP> &it, int gi, int i) {  // item i of group gi (a valid tile past either end)
		bool ok = gi < NG && i < L;
		unsigned b = ok ? b0 + i : 0;
#pragma unroll
		for (int j = 0; j < 2 * NP; j++) {
			unsigned t = FU ? (ok ? gi + j * TG : 0) : min(ok ? gi * 2 * NP + j : 0, T - 1);
			it.q[j] = __ldcs(wl + (t * KB + b) * 32);
#pragma unroll
			for (int i2 = 0; i2 < P; i2++) {
				unsigned o = (t * ngp + (P > 1 ? P * b + i2 : b * gmul >> 20)) * 8;
				it.sz[j][i2] = __half_as_ushort(__ldg(sg + o)) | (uint32_t)__ldg(zg + o) << 16;
			}
		}
	};
#pragma unroll
	for (int u = 0; u < D; u++)
		load(ring[u], blockIdx.x, u);
	pdl_start();  // the weights above, x and y below (pdl_launch)
	const uint4 *xr[NB];  // x's row 8nb + g (the last row for rows past R: their sums are not stored)
#pragma unroll
	for (int nb = 0; nb < NB; nb++)
		xr[nb] = x + (size_t)min(8 * nb + g, R - 1) * K8 + c;
	for (int gi = blockIdx.x; gi < NG; gi += gridDim.x) {
		float acc[NP][NB][4];
#pragma unroll
		for (int p = 0; p < NP; p++)
#pragma unroll
			for (int nb = 0; nb < NB; nb++)
				acc[p][nb][0] = acc[p][nb][1] = acc[p][nb][2] = acc[p][nb][3] = 0;
		for (int r = 0; r < rounds; r++) {
#pragma unroll
			for (int u = 0; u < D; u++) {
				int i = r * D + u;
				if (i < L)
					qs_step<BF, P, NB, NP>(acc, ring[u], xr, b0 + i, K, K8);
				bool last = r == rounds - 1;
				load(ring[u], last ? gi + (int)gridDim.x : gi, last ? u : i + D);
			}
		}
		qs_out<NB, NP, FU>(red, acc, [] { __syncthreads(); }, y, yt, bias, bt, R, N, gi, gt);
		__syncthreads();  // red is written again by the next group
	}
}

#define Q4_BM 64
#define Q4_BN 128

/* A tiled warp's sums (MT m-tiles x NT tile rows): all zero; tot += acc, acc = 0 at the end of a slice. */
template <int MT, int NT>
__device__ __forceinline__ void q4_zero_sums(float (&tot)[MT][NT][4], float (&acc)[MT][NT][4])
{
#pragma unroll
	for (int m = 0; m < MT; m++)
#pragma unroll
		for (int j = 0; j < NT; j++)
#pragma unroll
			for (int i = 0; i < 4; i++)
				tot[m][j][i] = acc[m][j][i] = 0;
}

template <int MT, int NT>
__device__ __forceinline__ void q4_end_slice(float (&tot)[MT][NT][4], float (&acc)[MT][NT][4])
{
#pragma unroll
	for (int m = 0; m < MT; m++)
#pragma unroll
		for (int j = 0; j < NT; j++)
#pragma unroll
			for (int i = 0; i < 4; i++)
				tot[m][j][i] += acc[m][j][i], acc[m][j][i] = 0;
}

/*
 * The end of a tiled warp (rows r0 + 0..16 MT - 1, tile rows t0 .. t0 + NT - 1; slice: the slices already added to
 * tot): part != NULL, the sum of its K range z into part [Z][R][N]; else the remaining (empty) slices, then the
 * total into y.
 */
template <int MT, int NT>
__device__ __forceinline__ void q4_tiled_out(float (&tot)[MT][NT][4], float (&acc)[MT][NT][4], int slice, float *part,
					     int z, void *y, int yt, const void *bias, int bt, int R, int N, int r0, int t0,
					     const bool (&tok)[NT])
{
	int g = (threadIdx.x & 31) >> 2, c = threadIdx.x & 3;
	if (part) {
#pragma unroll
		for (int m = 0; m < MT; m++)
#pragma unroll
			for (int j = 0; j < NT; j++)
#pragma unroll
				for (int i = 0; i < 4; i++) {
					int rr = r0 + m * 16 + g + (i >> 1) * 8, nn = 8 * (t0 + j) + 2 * c + (i & 1);
					if (tok[j] && rr < R && nn < N)
						part[((size_t)z * R + rr) * N + nn] = acc[m][j][i];
				}
		return;
	}
	for (; slice < Q4_SLICES; slice++)
		q4_end_slice(tot, acc);
#pragma unroll
	for (int m = 0; m < MT; m++)
#pragma unroll
		for (int j = 0; j < NT; j++)
			if (tok[j])
				store_frag(y, yt, bias, bt, R, N, r0 + m * 16 + g, 8 * (t0 + j) + 2 * c, tot[m][j]);
}

/*
 * part == NULL: slices 0..7 one after another, the sum into y. Else blockIdx.z = K range z of gridDim.z (tiles
 * z KB / Z ..; Z = 8: slice z) alone, its sum into part [Z][R][N] (q4_reduce adds them in order; q4_splits).
 */
template <bool BF, int P>
__global__ void __launch_bounds__(256) q4_tiled(void *y, int yt, float *part, const uint4 *x, const uint4 *w,
						const __half *sc, const uint8_t *zr, const void *bias, int bt, int R, int N,
						int K, int KB, int G, int ngp)
{
	__shared__ uint4 xs[2][4][Q4_BM][4];  // [stage][word s][row][lane c]: a span's rows are 64 bytes (no conflicts)
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
	int r0 = (int)blockIdx.y * Q4_BM, K8 = K / 8, NT8 = (N + 7) / 8;
	int t0 = (int)blockIdx.x * (Q4_BN / 8) + warp * 2;
	bool tok[2] = {t0 < NT8, t0 + 1 < NT8};
	int first = part ? (int)(blockIdx.z * KB / gridDim.z) : 0, last = part ? (int)((blockIdx.z + 1) * KB / gridDim.z) : KB;
	auto load_x = [&](int b, int stage) {
		for (int i = threadIdx.x; i < Q4_BM * 16; i += 256) {  // 16 chunks of 8 k per row
			int row = i / 16, ch = i % 16, k8 = Q4_KT / 8 * b + ch;
			bool ok = r0 + row < R && k8 < K8;
			cp_async16(&xs[stage][ch / 4][row][ch % 4], x + (ok ? (size_t)(r0 + row) * K8 + k8 : 0), ok);
		}
		asm volatile("cp.async.commit_group;\n" ::);
	};
	auto load_w = [&](int b, q4_w<P> (&wv)[2]) {
#pragma unroll
		for (int j = 0; j < 2; j++)
			q4_load<P>(wv[j], w, sc, zr, tok[j] ? t0 + j : 0, b, KB, G, ngp, tok[j] && b < last, false);
	};
	float tot[4][2][4], acc[4][2][4];
	auto end_slice = [&]() { q4_end_slice(tot, acc); };
	q4_zero_sums(tot, acc);
	q4_w<P> wcur[2], wnext[2];
	if (first < last) {
		load_x(first, first & 1);
		load_w(first, wcur);
	}
	int slice = 0, end = KB / Q4_SLICES;
	for (int b = first; b < last; b++) {
		if (b + 1 < last)
			load_x(b + 1, (b + 1) & 1);
		load_w(b + 1, wnext);
		if (b + 1 < last)
			asm volatile("cp.async.wait_group 1;\n" ::);
		else
			asm volatile("cp.async.wait_group 0;\n" ::);
		__syncthreads();
		for (; !part && b >= end; end = (++slice + 1) * KB / Q4_SLICES)  // the slices that ended before b (some empty)
			end_slice();
		int sg = b & 1;
		auto a = [&](int s, uint4 (&ag)[4], uint4 (&ah)[4]) {
#pragma unroll
			for (int m = 0; m < 4; m++) {
				ag[m] = xs[sg][s][m * 16 + g][c];
				ah[m] = xs[sg][s][m * 16 + g + 8][c];
			}
		};
		q4_tile<BF, 4, 2, P>(acc, wcur, a);
		__syncthreads();  // the stage is refilled by the next round's load_x
		wcur[0] = wnext[0], wcur[1] = wnext[1];
	}
	q4_tiled_out(tot, acc, slice, part, blockIdx.z, y, yt, bias, bt, R, N, r0, t0, tok);
}

/*
 * q4_piped: q4_tiled's block (64 rows x 16 tile rows, warp w on tile rows 2w, 2w + 1 of all 64 rows) with everything
 * a tile needs, x's rows and the weights, scales and zeros, copied into shared memory by cp.async Q4_STAGES tiles
 * ahead, so that the weights' latency hides behind the tiles before them. The work is gx x gy x S items: tile rows
 * 16 bx.., rows 64 by.., K range z of S (tiles z KB / S ..; part as q4_tiled's, S = 1 without part), item
 * (z gy + by) gx + bx; block i takes items i, i + gridDim.x, ... (q4_rows_p: as many blocks as the GPU holds, or
 * one an item), and the ring runs on across them: the next item's first tiles load while this one's last are
 * summed. Stage layout (uint4): x [4 words][64 rows][4 lanes c] | w [16 tile rows][32 lanes] | scales [16][P] (8
 * halves each) | zeros [16][P] (8 bytes each, half a uint4).
 */
#define Q4_STAGES 4

template <int P>
constexpr int q4_stage() { return 4 * Q4_BM * 4 + 16 * 32 + 16 * P + 8 * P; }

__device__ __forceinline__ void cp_async8(void *smem, const void *gmem, bool ok)
{
	unsigned s = (unsigned)__cvta_generic_to_shared(smem);
	asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(s), "l"(gmem), "r"(ok ? 8 : 0));
}

/*
 * K tile b of a 64-row x 16-tile-row block (rows r0.., tile rows tb..) into the stage sb by cp.async, every thread
 * of the block taking part (no commit): x [4 words][64 rows][4 lanes c] | w [16 tile rows][32 lanes] | scales
 * [16][P] (8 halves each, rows 0..7 of the tile) | zeros [16][P] (8 bytes each, half a uint4). Rows past R, tile
 * rows past NT8 and k past K are zeros.
 */
template <int P>
__device__ __forceinline__ void q4_stage_load(uint4 *sb, const uint4 *x, const uint4 *w, const __half *sc, const uint8_t *zr,
					      int b, int r0, int tb, int R, int K8, int NT8, int KB, int G, int ngp)
{
	constexpr int XS = 4 * Q4_BM * 4, WS = 16 * 32, SS = 16 * P;
	for (int i = threadIdx.x; i < Q4_BM * 16; i += 256) {  // 16 chunks of 8 k per row
		int row = i / 16, ch = i % 16, k8 = Q4_KT / 8 * b + ch;
		bool ok = r0 + row < R && k8 < K8;
		cp_async16(sb + (ch / 4) * Q4_BM * 4 + row * 4 + ch % 4, x + (ok ? (size_t)(r0 + row) * K8 + k8 : 0), ok);
	}
	for (int i = threadIdx.x; i < 16 * 32; i += 256) {
		int t = tb + (i >> 5);
		bool ok = t < NT8;
		cp_async16(sb + XS + i, w + (ok ? ((size_t)t * KB + b) * 32 + (i & 31) : 0), ok);
	}
	if (threadIdx.x < 16 * P) {
		int t = tb + (int)threadIdx.x / P, pc = (int)threadIdx.x % P;
		bool ok = t < NT8;
		size_t o = ((size_t)(ok ? t : 0) * ngp + (Q4_KT * b + Q4_KT / P * pc) / G) * 8;
		cp_async16(sb + XS + WS + threadIdx.x, sc + o, ok);
		cp_async8((uint8_t *)(sb + XS + WS + SS) + 8 * threadIdx.x, zr + o, ok);
	}
}

template <bool BF, int P>
__global__ void __launch_bounds__(256) q4_piped(void *y, int yt, float *part, int S, const uint4 *x, const uint4 *w,
						const __half *sc, const uint8_t *zr, const void *bias, int bt, int R, int N,
						int K, int KB, int G, int ngp)
{
	/* the warp's tile: 4 m-tiles x 2 tile rows (32 rows x 4 tile rows was slower at 64 rows: bench/results/
	 * 2026-12-07-h100-ring.md; blocks of 32 rows, two an SM, too: 2026-12-07-h100-l2tail.md) */
	constexpr int BM = Q4_BM, XS = 4 * BM * 4, WS = 16 * 32, SS = 16 * P, STAGE = q4_stage<P>(), MT = BM / 16, NT = 2;
	extern __shared__ uint4 q4_sm[];
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
	const int K8 = K / 8, NT8 = (N + 7) / 8, gx = (NT8 + 15) / 16, gy = (R + BM - 1) / BM, items = gx * gy * S;
	struct span {
		int r0, tb, z, first, last;
	};
	auto span_of = [&](int it) {
		int z = it / (gx * gy);
		return span{it / gx % gy * BM, it % gx * 16, z, z * KB / S, (z + 1) * KB / S};
	};
	/* the loader: tile lb of item li (span ls), the block's next tile to load; past its last item, nothing */
	int li = (int)blockIdx.x, lb = 0;
	span ls = {};
	auto seek = [&]() {  // from item li on, the first with tiles (an empty K range has none: KB < S)
		for (; li < items; li += gridDim.x) {
			ls = span_of(li);
			if (ls.first < ls.last)
				break;
		}
		lb = ls.first;
	};
	auto load = [&](int n) {  // the block's n-th tile into stage n % Q4_STAGES; one commit group either way
		if (li < items) {
			q4_stage_load<P>(q4_sm + (n % Q4_STAGES) * STAGE, x, w, sc, zr, lb, ls.r0, ls.tb, R, K8, NT8, KB, G,
					 ngp);
			if (++lb == ls.last)
				li += gridDim.x, seek();
		}
		asm volatile("cp.async.commit_group;\n" ::);
	};
	seek();
#pragma unroll
	for (int i = 0; i < Q4_STAGES - 1; i++)
		load(i);
	int n = 0;  // the block's tiles summed so far
	for (int it = (int)blockIdx.x; it < items; it += gridDim.x) {
		const span sp = span_of(it);
		const int t0 = sp.tb + warp * NT;
		bool tok[NT];
#pragma unroll
		for (int j = 0; j < NT; j++)
			tok[j] = t0 + j < NT8;
		float tot[MT][NT][4], acc[MT][NT][4];
		q4_zero_sums(tot, acc);
		int slice = 0, end = KB / Q4_SLICES;
		for (int b = sp.first; b < sp.last; b++, n++) {
			asm volatile("cp.async.wait_group %0;\n" ::"n"(Q4_STAGES - 2));
			__syncthreads();  // tile n is in for every thread; every warp is done with the stage loaded next
			load(n + Q4_STAGES - 1);
			for (; !part && b >= end; end = (++slice + 1) * KB / Q4_SLICES)  // the slices that ended before b
				q4_end_slice(tot, acc);
			const uint4 *sb = q4_sm + (n % Q4_STAGES) * STAGE;
			q4_w<P> wv[NT];
#pragma unroll
			for (int j = 0; j < NT; j++) {
				int tr = warp * NT + j;
				wv[j].q = sb[XS + tr * 32 + lane];
#pragma unroll
				for (int i = 0; i < P; i++) {
					wv[j].z[i] = ((const uint8_t *)(sb + XS + WS + SS))[8 * (tr * P + i) + g];
					wv[j].s[i] = ((const uint32_t *)(sb + XS + WS))[(tr * P + i) * 4 + c];
				}
			}
			auto a = [&](int s, uint4 (&ag)[MT], uint4 (&ah)[MT]) {
#pragma unroll
				for (int m = 0; m < MT; m++) {
					ag[m] = sb[s * BM * 4 + (m * 16 + g) * 4 + c];
					ah[m] = sb[s * BM * 4 + (m * 16 + g + 8) * 4 + c];
				}
			};
			q4_tile<BF, MT, NT, P>(acc, wv, a);
		}
		q4_tiled_out(tot, acc, slice, part, sp.z, y, yt, bias, bt, R, N, sp.r0, t0, tok);
	}
	asm volatile("cp.async.wait_all;\n" ::);
}

/* y = ((0 + part[0]) + part[1]) + ... + part[S - 1] (+ bias), rounded: the sums of a split product's K ranges
 * (S = 8: its slices, the summation rule's order). */
__global__ void q4_reduce_kernel(void *y, int yt, const float *part, int S, const void *bias, int bt, int R, int N)
{
	int64_t total = (int64_t)R * N;
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
		float v = 0;
		for (int j = 0; j < S; j++)
			v += part[j * total + i];
		st(y, yt, (size_t)i, v + (bias ? ld(bias, bt, (size_t)(i % N)) : 0.0f));
	}
}

// ----------------------------------------------------------------------------
// launchers

/* The packed geometry of an int4 weight for a product [N, K] in groups of G. */
struct q4_geo {
	int N, K, G, KB, ngp, Np;
};

static void q4_geo_of(struct q4_geo *q, int N, int K, int G)
{
	q->N = N, q->K = K, q->G = G;
	q->Np = (N + 7) / 8 * 8;
	q->KB = (K + Q4_KT - 1) / Q4_KT;
	q->ngp = (q->KB * Q4_KT + G - 1) / G;
}

/* The groups the kernels take: 32, 64, 128 or a multiple of 128, dividing K (q4.h's rule). */
static bool q4_group_ok(int K, int G)
{
	return G > 0 && K % G == 0 && (G == 32 || G == 64 || G % Q4_KT == 0);
}

static unsigned q4_grid(int64_t n)
{
	int64_t b = (n + 255) / 256;
	return (unsigned)(b < 65536 ? b : 65536);
}

int lmd_cuda_weight_q4(struct cuda_ctx *c, struct lmd_tensor *dw, struct lmd_tensor *ds, struct lmd_tensor *dz,
		       const struct lmd_tensor *w, const struct lmd_tensor *s, const struct lmd_tensor *z, int group,
		       struct lmd_err *err)
{
	if (w->dtype != LMD_U8 || s->dtype != LMD_F16 || z->dtype != LMD_U8 || w->ndim != 2 || s->ndim != 2 ||
	    z->ndim != 2 || s->shape[0] != w->shape[0] || z->shape[0] != w->shape[0] || z->shape[1] != s->shape[1] ||
	    s->shape[1] * group != w->shape[1] * 2)
		return lmd_errorf(err, LMD_EINVAL, "cuda int4 weight: packed weight, scales and zeros disagree in shape");
	int N = (int)w->shape[0], K = (int)w->shape[1] * 2, ng = (int)s->shape[1];
	if (!q4_group_ok(K, group))
		return lmd_errorf(err, LMD_EINVAL, "cuda int4 weight: group size %d (of %d inputs) is not 32, 64 or a multiple of 128",
				  group, K);
	struct q4_geo q;
	q4_geo_of(&q, N, K, group);
	void *tmp[3] = {NULL, NULL, NULL};
	const struct lmd_tensor *src[3] = {w, s, z};
	*dw = (struct lmd_tensor){.dtype = LMD_U8, .ndim = 2, .shape = {q.Np / 8, (int64_t)q.KB * 512}, .data = NULL};
	*ds = (struct lmd_tensor){.dtype = LMD_F16, .ndim = 2, .shape = {q.Np / 8, (int64_t)q.ngp * 8}, .data = NULL};
	*dz = (struct lmd_tensor){.dtype = LMD_U8, .ndim = 2, .shape = {q.Np / 8, (int64_t)q.ngp * 8}, .data = NULL};
	struct lmd_tensor *dst[3] = {dw, ds, dz};
	int rc = LMD_OK;
	for (int i = 0; i < 3 && !rc; i++) {
		size_t n = lmd_tensor_nbytes(src[i]);
		if (cudaMalloc(&tmp[i], n ? n : 16) != cudaSuccess || cudaMemcpy(tmp[i], src[i]->data, n, cudaMemcpyHostToDevice))
			rc = lmd_errorf(err, LMD_EGPU, "cuda int4 weight: staging %zu bytes failed", n);
	}
	for (int i = 0; i < 3 && !rc; i++)
		rc = lmd_cuda_alloc_weight(c, dst[i], err);
	if (!rc) {
		int64_t words = (int64_t)q.Np / 8 * q.KB * 128, sz = (int64_t)q.Np / 8 * q.ngp * 8;
		q4_repack_kernel<<<q4_grid(words), 256, 0, c->st>>>((uint32_t *)dw->data, (const uint8_t *)tmp[0], N, K, q.KB,
								   words);
		q4_repack_sz_kernel<<<q4_grid(sz), 256, 0, c->st>>>((__half *)ds->data, (uint8_t *)dz->data,
								    (const __half *)tmp[1], (const uint8_t *)tmp[2], N, ng,
								    q.ngp, sz);
		cudaError_t e = cudaStreamSynchronize(c->st);
		if (e == cudaSuccess)
			e = cudaGetLastError();
		if (e != cudaSuccess)
			rc = lmd_errorf(err, LMD_EGPU, "cuda int4 repack: %s", cudaGetErrorString(e));
	}
	for (int i = 0; i < 3; i++)
		cudaFree(tmp[i]);
	return rc;
}

/* The int4 weight of a product with outputs N, inputs K: its geometry, or LMD_EINVAL when the tensors are not it. */
static int q4_check(struct q4_geo *q, const struct lmd_tensor *w, const struct lmd_tensor *s, const struct lmd_tensor *z,
		    int N, int K, int G, struct lmd_err *err)
{
	q4_geo_of(q, N, K, G);
	if (!q4_group_ok(K, G) || w->dtype != LMD_U8 || s->dtype != LMD_F16 || z->dtype != LMD_U8 ||
	    t_rows(w) != q->Np / 8 || t_cols(w) != (int64_t)q->KB * 512 || t_rows(s) != q->Np / 8 ||
	    t_cols(s) != (int64_t)q->ngp * 8 || t_rows(z) != t_rows(s) || t_cols(z) != t_cols(s))
		return lmd_errorf(err, LMD_EINVAL, "cuda matmul_q4: the weight is not a [%d, %d] int4 weight of groups of %d as "
				  "weight_q4 makes it", N, K, G);
	return LMD_OK;
}

/* q4_stream on as many blocks as the GPU holds at once (2 NP tile rows a group, at least one group a block; FU: the
 * gate_up pairs, N / 16 groups; gt: gu's dtype; DR: the ring's depth, MB the blocks an SM, 0 for q4_stream's own
 * choice) */
template <bool BF, int P, int NB, int NP, bool FU = false, int DR = 0, int MB = 0>
static void qs_launch(struct cuda_ctx *c, void *y, int yt, const uint4 *x, const struct q4_geo *q, const uint4 *w,
		      const __half *sc, const uint8_t *zr, const void *bias, int bt, int R, int gt = 0)
{
	long ng = FU ? q->N / 16 : (q->Np / 8 + 2 * NP - 1) / (2 * NP);
	constexpr auto k = q4_stream<BF, P, NB, NP, FU, DR, MB>;
	pdl_launch(c, k, resident_grid<k>(c, ng), 256, 0, y, yt, x, w, sc, zr, bias, bt, R, q->N, q->K, q->KB, q->G, q->ngp, gt);
}

/* qs_launch with one block of x's rows: a ring of 4 for a long K (the down projection), else of 2 (bench/results/
 * 2026-12-07-h100-ring.md: 4 for every product, 8, and 4 for the o projection too were no faster or slower), in
 * 64 registers for 4 blocks an SM with c->q4_occ4 */
template <bool BF, int P, bool FU, typename... A>
static void qs_launch_1(struct cuda_ctx *c, const struct q4_geo *q, A... args)
{
	if (c->q4_ring4 && q->KB >= c->q4_ring4)
		qs_launch<BF, P, 1, 1, FU, 4>(c, args...);
	else if (c->q4_occ4)
		qs_launch<BF, P, 1, 1, FU, 2, 4>(c, args...);
	else
		qs_launch<BF, P, 1, 1, FU>(c, args...);
}

/*
 * The K ranges q4_piped (q4_tiled) cuts a product of B blocks (items) into, each range in blocks (items) of its
 * own, their sums added by q4_reduce. Batch-invariant (c->q4_split 0): 1, or the 8 slices when the blocks (q4_piped's
 * counted twice) are fewer than the SMs (the summation rule's order, so the same bits). Else (the default without
 * deterministic) the count S = 1..8 of the fewest tile-times, waves x tiles a block, ceil(B S / SMs) x
 * ceil(KB / S), + 1 for the reduce's launch when S > 1; the smaller S of equal ones (a split's sums are rounded in
 * another order than the rule's).
 */
static int q4_splits(const struct cuda_ctx *c, long B, int KB, bool old)
{
	if (!c->q4_split)
		return B * (old ? 1 : 2) >= c->sms ? 1 : Q4_SLICES;
	long slots = c->sms, best = -1;
	int S = 1;
	for (int s = 1; s <= Q4_SLICES && s <= KB; s++) {
		long t = (B * s + slots - 1) / slots * ((KB + s - 1) / s) + (s > 1);
		if (best < 0 || t < best)
			best = t, S = s;
	}
	return S;
}

template <bool BF, int P>
static int q4_rows_p(struct cuda_ctx *c, void *y, int yt, const void *x, const struct q4_geo *q, const void *w, const void *sc,
		     const void *zr, const void *bias, int bt, int R, struct lmd_err *err)
{
	const uint4 *xv = (const uint4 *)x, *wv = (const uint4 *)w;
	const __half *s = (const __half *)sc;
	const uint8_t *z = (const uint8_t *)zr;
	if (R <= c->q4_stream_rows && q->KB < 2048) {  // q4_stream's group index: b * gmul >> 20
		if (R <= 8)
			qs_launch_1<BF, P, false>(c, q, y, yt, xv, q, wv, s, z, bias, bt, R);
		else if (R <= 16)
			qs_launch<BF, P, 2, 2>(c, y, yt, xv, q, wv, s, z, bias, bt, R);
		else if (R <= 32)
			qs_launch<BF, P, 4, 2>(c, y, yt, xv, q, wv, s, z, bias, bt, R);
		else
			qs_launch<BF, P, 8, 1>(c, y, yt, xv, q, wv, s, z, bias, bt, R);
		LAUNCH_TRY(err);
		return LMD_OK;
	}
	if (R <= 16) {  // LMD_CUDA_Q4=old
		dim3 grid(1, (unsigned)(q->Np / 8));
		q4_skinny<BF, P><<<grid, 256, 0, c->st>>>(y, yt, xv, wv, s, z, bias, bt, R, q->N, q->K, q->KB, q->G, q->ngp);
		LAUNCH_TRY(err);
		return LMD_OK;
	}
	dim3 grid((unsigned)((q->Np + Q4_BN - 1) / Q4_BN), (unsigned)((R + Q4_BM - 1) / Q4_BM));
	bool old = !c->q4_stream_rows;
	int S = q4_splits(c, (long)grid.x * grid.y, q->KB, old);
	auto tiled = [&](float *part) {
		if (old) {
			grid.z = S;
			q4_tiled<BF, P><<<grid, 256, 0, c->st>>>(y, yt, part, xv, wv, s, z, bias, bt, R, q->N, q->K, q->KB,
								  q->G, q->ngp);
			return;
		}
		constexpr size_t sm = Q4_STAGES * q4_stage<P>() * sizeof(uint4);
		long items = (long)grid.x * grid.y * S;
		unsigned blocks = c->q4_persist ? resident_grid<q4_piped<BF, P>>(c, items, sm) : (unsigned)items;
		q4_piped<BF, P><<<blocks, 256, sm, c->st>>>(y, yt, part, S, xv, wv, s, z, bias, bt, R, q->N, q->K, q->KB,
							     q->G, q->ngp);
	};
	if (S == 1) {
		tiled(NULL);
		LAUNCH_TRY(err);
		return LMD_OK;
	}
	size_t need = (size_t)S * R * q->N * sizeof(float);
	int rc = lmd_cuda_grow(c, (void **)&c->q4_part, &c->q4_part_cap, need, err);
	if (rc)
		return rc;
	tiled(c->q4_part);
	LAUNCH_TRY(err);
	q4_reduce_kernel<<<q4_grid((int64_t)R * q->N), 256, 0, c->st>>>(y, yt, c->q4_part, S, bias, bt, R, q->N);
	LAUNCH_TRY(err);
	return LMD_OK;
}

int lmd_cuda_matmul_q4_init(struct cuda_ctx *c, struct lmd_err *err)
{
	(void)c;
#define PIPED_ATTR(BF, P) CUDA_TRY(cudaFuncSetAttribute(q4_piped<BF, P>, cudaFuncAttributeMaxDynamicSharedMemorySize, \
	Q4_STAGES * q4_stage<P>() * (int)sizeof(uint4)), err)
	PIPED_ATTR(false, 1);
	PIPED_ATTR(false, 2);
	PIPED_ATTR(false, 4);
	PIPED_ATTR(true, 1);
	PIPED_ATTR(true, 2);
	PIPED_ATTR(true, 4);
#undef PIPED_ATTR
	return LMD_OK;
}

/* f(BF, P) as std::integral_constants: x's 16-bit type (bf) and the group pieces of a tile (P: 4 for groups of 32, 2
 * for 64, 1 from 128) */
template <class F>
static auto q4_with(bool bf, int G, F f)
{
	auto with_p = [&](auto b) {
		return G == 32 ? f(b, std::integral_constant<int, 4>{})
		       : G == 64 ? f(b, std::integral_constant<int, 2>{}) : f(b, std::integral_constant<int, 1>{});
	};
	return bf ? with_p(std::true_type{}) : with_p(std::false_type{});
}

/* W [N, K] in dtype dt into the dequantization scratch. */
static int q4_dequant(struct cuda_ctx *c, enum lmd_dtype dt, const struct q4_geo *q, const void *w, const void *sc,
		      const void *zr, struct lmd_err *err)
{
	int rc = lmd_cuda_grow(c, &c->q4_deq, &c->q4_deq_cap, (size_t)q->N * q->K * lmd_dtype_size(dt), err);
	if (rc)
		return rc;
	int64_t words = (int64_t)q->Np / 8 * q->KB * 128;
	q4_dequant_kernel<<<q4_grid(words), 256, 0, c->st>>>(c->q4_deq, dt, (const uint32_t *)w, (const __half *)sc,
							    (const uint8_t *)zr, q->N, q->K, q->KB, q->G, q->ngp, words);
	LAUNCH_TRY(err);
	return LMD_OK;
}

int lmd_cuda_matmul_q4(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
		       const struct lmd_tensor *s, const struct lmd_tensor *z, int group, const struct lmd_tensor *bias,
		       struct lmd_err *err)
{
	int64_t K = t_cols(x), N = t_cols(y), R = t_rows(x);
	struct q4_geo q;
	if (t_rows(y) != R || (bias && lmd_tensor_numel(bias) != N) || !float_dt(x->dtype) || !float_dt(y->dtype) ||
	    (bias && !float_dt(bias->dtype)))
		return lmd_errorf(err, LMD_EINVAL, "cuda matmul_q4: tensor shapes or dtypes do not match");
	int rc = q4_check(&q, w, s, z, (int)N, (int)K, group, err);
	if (rc || R == 0 || N == 0)
		return rc;
	const void *b = bias ? bias->data : NULL;
	int bt = bias ? bias->dtype : 0;
	bool half = x->dtype != LMD_F32, aligned = (uintptr_t)x->data % 16 == 0 && K % 8 == 0;
	if (!half || !aligned) {  // dequantized W in x's dtype through the general product
		struct lmd_tensor wd = {.dtype = x->dtype, .ndim = 2, .shape = {N, K}, .data = NULL};
		if ((rc = q4_dequant(c, x->dtype, &q, w->data, s->data, z->data, err)))
			return rc;
		wd.data = c->q4_deq;
		return lmd_cuda_matmul(c, y, x, &wd, bias, err);
	}
	bool bf = x->dtype == LMD_BF16;
	/* the step's prefill runs through cuBLAS on W dequantized once (rows 16-byte aligned, as matmul.cu's); all
	 * the rows when there are q4_blas_rows of them */
	bool blas_ok = N % 8 == 0 && (uintptr_t)y->data % 16 == 0 && (y->dtype == x->dtype || y->dtype == LMD_F32);
	if (blas_ok && c->q4_blas_rows && R >= c->q4_blas_rows) {
		if ((rc = q4_dequant(c, x->dtype, &q, w->data, s->data, z->data, err)))
			return rc;
		return lmd_cuda_blas(c, y->data, y->dtype, x->data, x->dtype, c->q4_deq, b, bt, (int)R, (int)N, (int)K, err);
	}
	int nruns = blas_ok && R == c->step.n ? c->nruns : 0;
	if (nruns && (rc = q4_dequant(c, x->dtype, &q, w->data, s->data, z->data, err)))
		return rc;
	size_t xs = (size_t)K * 2, ys = (size_t)N * lmd_dtype_size(y->dtype);
	int r = 0;
	for (int i = 0; i <= nruns; i++) {
		int first = i < nruns ? c->runs[2 * i] : (int)R, len = i < nruns ? c->runs[2 * i + 1] : 0;
		if (first > r) {
			void *yr = (char *)y->data + r * ys;
			const void *xr = (const char *)x->data + r * xs;
			rc = q4_with(bf, q.G, [&](auto bb, auto p) {  // rows through the kernels (x and y of these rows only)
				return q4_rows_p<bb.value, p.value>(c, yr, y->dtype, xr, &q, w->data, s->data, z->data, b, bt,
								    first - r, err);
			});
			if (rc)
				return rc;
		}
		if (len && (rc = lmd_cuda_blas(c, (char *)y->data + first * ys, y->dtype, (const char *)x->data + first * xs,
					       x->dtype, c->q4_deq, b, bt, len, N, K, err)))
			return rc;
		r = first + len;
	}
	return LMD_OK;
}

/*
 * gate_up over an int4 w (FU: q4_stream at up to 8 rows): 16-bit x, 16-byte aligned, inter a multiple
 * of 8 (the gate and up rows whole tile rows apart), y and gu of a float dtype; else 1.
 */
template <bool BF, int P>
static int q4_gate_up_p(struct cuda_ctx *c, void *y, int yt, const void *x, const struct q4_geo *q, const void *w,
			const void *sc, const void *zr, int R, int gt)
{
	const uint4 *xv = (const uint4 *)x, *wv = (const uint4 *)w;
	const __half *s = (const __half *)sc;
	const uint8_t *z = (const uint8_t *)zr;
	if (R > c->q4_stream_rows || q->KB >= 2048)
		return 1;
	qs_launch_1<BF, P, true>(c, q, y, yt, xv, q, wv, s, z, (const void *)NULL, 0, R, gt);
	return 0;
}

int lmd_cuda_gate_up_q4_fused(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *gu,
			      const struct lmd_tensor *x, const struct lmd_tensor *w, const struct lmd_tensor *s,
			      const struct lmd_tensor *z, int group, struct lmd_err *err)
{
	int64_t K = t_cols(x), I = t_cols(y), R = t_rows(x);
	struct q4_geo q;
	if (t_rows(y) != R || t_cols(gu) != 2 * I || t_rows(gu) < R || !float_dt(x->dtype) || !float_dt(y->dtype) ||
	    !float_dt(gu->dtype))
		return lmd_errorf(err, LMD_EINVAL, "cuda gate_up: tensor shapes or dtypes do not match");
	int rc = q4_check(&q, w, s, z, (int)(2 * I), (int)K, group, err);
	if (rc)
		return rc;
	if (R == 0 || R > 8 || I % 8 || x->dtype == LMD_F32 || (uintptr_t)x->data % 16 || K % 8)
		return 1;
	int r = q4_with(x->dtype == LMD_BF16, q.G, [&](auto bf, auto p) {
		return q4_gate_up_p<bf.value, p.value>(c, y->data, y->dtype, x->data, &q, w->data, s->data, z->data, (int)R,
							gu->dtype);
	});
	if (r)
		return r;
	LAUNCH_TRY(err);
	return LMD_OK;
}
