/*
 * Causal attention with GQA over the paged KV cache, for prefill chunks and decode tokens alike: online
 * softmax, no score matrix in memory; flash-decoding (split over the key range) when there are too few
 * blocks to fill the GPU.
 *
 * Math: for query token i (position p, sequence s) and head h (kv head h / G, G = H / KV):
 *   att[i, h] = Σ_{t <= p} softmax_t(scale · q[i, h] · K_s[t]) V_s[t]
 * K_s[t] lives in layer's pool [nblocks, KV, block_len, D] at block table[s][t / block_len], row
 * t % block_len (kvcache.h).
 *
 * Work items (built on the host once per step, at the first attention call, see plan(); a decode
 * step's, one per token, come with the step's metadata: lmd_cuda_decode_items):
 *   fa_kernel      runs of >= 32 consecutive tokens of one sequence (prefill), in chunks of 64 tokens,
 *                  f16/bf16 with D 64 or 128: tensor cores (mma.sync), grid (items, H).
 *   decode_kernel  single tokens (decode), D 64 or 128, G 1, 2, 4 or 8: registers only,
 *                  grid (items, KV, splits).
 *   attn_kernel    everything else (short chunks, f32, odd head sizes): up to QT = max(1, 16 / G)
 *                  consecutive tokens of a sequence with the G query heads of one kv head, R = cnt · G
 *                  <= max(16, G) rows sharing every K/V tile the block loads. grid (items, KV, splits).
 *
 * attn_kernel: block 128 threads; shared memory (fp32) q[R][D], k[32][D+1] (padded: the score loop reads k
 * down a column), v[32][D], p[R][32], o[R][D], m[R], l[R], corr[R], pos[R] — 51.5 KB for R = 16, D = 128.
 * Per tile of 32 keys: (1) load K and V (16-byte loads when D % 8 == 0, converted to fp32), (2) scores
 * s[r][j] for (r, j) spread over the threads, masked beyond each row's position, (3) one warp per row:
 * running max m, rescale factor, exp, running sum l, (4) o[r][d] = o·corr + Σ_j p[r][j] v[j][d].
 * Splits. An item of length len (its last position + 1) is cut into key ranges of split_len(len) keys:
 * 256 keys, more only past 64 splits (H200, Llama-2-7B shape: 256-key splits gave 6 % and 7 % more
 * output tok/s than 64-key ones at 64 and 256 concurrent, 128 keys half that, batch 1 the same;
 * bench/results/2026-12-02-h200-engine.md). The cut depends on len alone, never on the rest of the
 * step, so a sequence gets the same bits alone and in any batch (batch invariance, issue 5). With one split the
 * kernels write att = o / l; otherwise each split writes its unnormalized o, m and l to the partials
 * buffer (laid out for the step's largest split count) and combine_kernel (grid (items, H), block D)
 * merges them in split order:  M = max m_s, att = Σ o_s e^{m_s - M} / Σ l_s e^{m_s - M}.
 */
#include <math.h>
#include <type_traits>

#include "internal.cuh"

#define AT 32    /* keys per tile: one per lane in the softmax step */
#define ROWS 16  /* query rows per block (at least G) */
#define THREADS 128
#define SPLIT_KEYS 256  /* keys per split, below 64 splits */
#define MAX_SPLITS 64

__host__ __device__ __forceinline__ int split_len(int len)
{
	return SPLIT_KEYS * ((len + SPLIT_KEYS * MAX_SPLITS - 1) / (SPLIT_KEYS * MAX_SPLITS));
}

__host__ __device__ __forceinline__ int split_count(int len)
{
	int c = split_len(len);
	return c ? (len + c - 1) / c : 1;
}

// ----------------------------------------------------------------------------
// CUDA kernels

__device__ __forceinline__ float tof(float v) { return v; }
__device__ __forceinline__ float tof(__half v) { return __half2float(v); }
__device__ __forceinline__ float tof(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ void load8(const float *p, float f[8])
{
	float4 a = ((const float4 *)p)[0], b = ((const float4 *)p)[1];
	f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}

__device__ __forceinline__ void load8(const __half *p, float f[8])
{
	uint4 v = *(const uint4 *)p;
	const __half2 *h = (const __half2 *)&v;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		float2 t = __half22float2(h[i]);
		f[2 * i] = t.x, f[2 * i + 1] = t.y;
	}
}

__device__ __forceinline__ void load8(const __nv_bfloat16 *p, float f[8])
{
	uint4 v = *(const uint4 *)p;
	const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		float2 t = __bfloat1622float2(h[i]);
		f[2 * i] = t.x, f[2 * i + 1] = t.y;
	}
}

/*
 * 8 elements d..d+7 of cache row tok (the row's index in the pool) as fp32: a 16-bit or f32 cache read as it
 * is, a quantized one (KT uint8_t; kvcache.h) dequantized as the CPU does, q * scale + zero (two roundings),
 * its (scale, zero) pairs qs of dtype pt.
 */
template <typename KT>
__device__ __forceinline__ void kv_load8(const KT *c, const void *qs, int pt, int bits, size_t tok, int D, int d,
					 float f[8])
{
	if constexpr (std::is_same<KT, uint8_t>::value) {
		float sc = ld(qs, pt, tok * 2), z = ld(qs, pt, tok * 2 + 1);
#pragma unroll
		for (int e = 0; e < 8; e++) {
			int v = bits == 8 ? c[tok * D + d + e] : (c[tok * (D / 2) + (d + e) / 2] >> (4 * ((d + e) & 1))) & 15;
			f[e] = __fadd_rn(__fmul_rn((float)v, sc), z);
		}
	} else {
		(void)qs, (void)pt, (void)bits;
		load8(c + tok * D + d, f);
	}
}

template <typename KT>
__device__ __forceinline__ float kv_load1(const KT *c, const void *qs, int pt, int bits, size_t tok, int D, int d)
{
	if constexpr (std::is_same<KT, uint8_t>::value) {
		int v = bits == 8 ? c[tok * D + d] : (c[tok * (D / 2) + d / 2] >> (4 * (d & 1))) & 15;
		return __fadd_rn(__fmul_rn((float)v, ld(qs, pt, tok * 2)), ld(qs, pt, tok * 2 + 1));
	} else {
		(void)qs, (void)pt, (void)bits;
		return tof(c[tok * D + d]);
	}
}

template <typename KT>
__global__ void __launch_bounds__(THREADS) attn_kernel(void *att, int at, const void *qkv, int qt, int64_t qcols,
						       const KT *kc, const KT *vc, const struct attn_item *items,
						       const int32_t *pos, const int32_t *table, int max_blocks, int H,
						       int KV, int D, int G, int rmax, int block_len, float scale,
						       int splits, int ntok, float *part, const void *kqs, const void *vqs,
						       int pt, int bits)
{
	extern __shared__ float sm[];
	const struct attn_item it = items[blockIdx.x];
	const int kvh = blockIdx.y, split = blockIdx.z, tid = threadIdx.x, nt = blockDim.x;
	const int R = it.cnt * G;
	float *q = sm, *k = q + rmax * D, *v = k + AT * (D + 1), *p = v + AT * D, *o = p + rmax * AT;
	float *m = o + rmax * D, *l = m + rmax, *cr = l + rmax;
	int *rpos = (int *)(cr + rmax);
	const int len = it.last_pos + 1, chunk = split_len(len), nspl = split_count(len);
	if (split >= nspl)
		return;
	int tb = split * chunk, te = min(len, tb + chunk);

	for (int idx = tid; idx < R * D; idx += nt) {
		int r = idx / D, d = idx % D, tok = it.first + r / G, h = kvh * G + r % G;
		q[idx] = ld(qkv, qt, (size_t)tok * qcols + (size_t)h * D + d);
		o[idx] = 0;
	}
	for (int r = tid; r < R; r += nt) {
		m[r] = -INFINITY;
		l[r] = 0;
		rpos[r] = pos[it.first + r / G];
	}
	__syncthreads();
	const int32_t *tab = table + (size_t)it.seq * max_blocks;
	const int warp = tid / 32, lane = tid % 32, nw = nt / 32;
	for (int t0 = tb; t0 < te; t0 += AT) {
		if (D % 8 == 0) {
			int d8n = D / 8;
			for (int idx = tid; idx < AT * d8n; idx += nt) {
				int j = idx / d8n, d = (idx % d8n) * 8, t = t0 + j;
				float kf[8], vf[8];
				if (t < te) {
					int blk = tab[t / block_len];
					size_t tok = ((size_t)blk * KV + kvh) * block_len + t % block_len;
					kv_load8(kc, kqs, pt, bits, tok, D, d, kf);
					kv_load8(vc, vqs, pt, bits, tok, D, d, vf);
				} else {
#pragma unroll
					for (int e = 0; e < 8; e++)
						kf[e] = vf[e] = 0;
				}
#pragma unroll
				for (int e = 0; e < 8; e++) {
					k[j * (D + 1) + d + e] = kf[e];
					v[j * D + d + e] = vf[e];
				}
			}
		} else {
			for (int idx = tid; idx < AT * D; idx += nt) {
				int j = idx / D, d = idx % D, t = t0 + j;
				float kf = 0, vf = 0;
				if (t < te) {
					int blk = tab[t / block_len];
					size_t tok = ((size_t)blk * KV + kvh) * block_len + t % block_len;
					kf = kv_load1(kc, kqs, pt, bits, tok, D, d);
					vf = kv_load1(vc, vqs, pt, bits, tok, D, d);
				}
				k[j * (D + 1) + d] = kf;
				v[j * D + d] = vf;
			}
		}
		__syncthreads();
		for (int idx = tid; idx < R * AT; idx += nt) {
			int r = idx / AT, j = idx % AT, t = t0 + j;
			float s = -INFINITY;
			if (t < te && t <= rpos[r]) {
				const float *qr = q + r * D, *kr = k + j * (D + 1);
				float dot = 0;
				for (int d = 0; d < D; d++)
					dot = fmaf(qr[d], kr[d], dot);
				s = dot * scale;
			}
			p[idx] = s;
		}
		__syncthreads();
		for (int r = warp; r < R; r += nw) {
			float s = p[r * AT + lane], mx = s;
			for (int off = 16; off > 0; off >>= 1)
				mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
			float mo = m[r], mn = fmaxf(mo, mx);
			float e = mn == -INFINITY ? 0.0f : expf(s - mn);
			float c = mn == -INFINITY ? 1.0f : expf(mo - mn);
			float sum = e;
			for (int off = 16; off > 0; off >>= 1)
				sum += __shfl_xor_sync(0xffffffffu, sum, off);
			p[r * AT + lane] = e;
			if (lane == 0) {
				l[r] = l[r] * c + sum;
				m[r] = mn;
				cr[r] = c;
			}
		}
		__syncthreads();
		for (int idx = tid; idx < R * D; idx += nt) {
			int r = idx / D, d = idx % D;
			const float *pr = p + r * AT;
			float acc = o[idx] * cr[r];
#pragma unroll 8
			for (int j = 0; j < AT; j++)
				acc = fmaf(pr[j], v[j * D + d], acc);
			o[idx] = acc;
		}
		__syncthreads();
	}
	if (nspl == 1) {
		for (int idx = tid; idx < R * D; idx += nt) {
			int r = idx / D, d = idx % D, tok = it.first + r / G, h = kvh * G + r % G;
			st(att, at, ((size_t)tok * H + h) * D + d, o[idx] / l[r]);
		}
	} else {
		float *po = part, *pml = part + (size_t)splits * ntok * H * D;
		for (int idx = tid; idx < R * D; idx += nt) {
			int r = idx / D, d = idx % D, tok = it.first + r / G, h = kvh * G + r % G;
			po[(((size_t)split * ntok + tok) * H + h) * D + d] = o[idx];
		}
		for (int r = tid; r < R; r += nt) {
			int tok = it.first + r / G, h = kvh * G + r % G;
			size_t i = (((size_t)split * ntok + tok) * H + h) * 2;
			pml[i] = m[r];
			pml[i + 1] = l[r];
		}
	}
}

/* Merge the splits of the items' tokens (grid (items, H), block D): see the top of the file. */
__global__ void combine_kernel(void *att, int at, const float *part, const struct attn_item *items, int splits, int ntok,
			       int H, int D)
{
	pdl_start();
	const struct attn_item it = items[blockIdx.x];
	int h = blockIdx.y, nspl = split_count(it.last_pos + 1);
	if (nspl == 1)
		return;  // written by the attention kernel
	const float *po = part, *pml = part + (size_t)splits * ntok * H * D;
	for (int k = 0; k < it.cnt; k++) {
		int tok = it.first + k;
		float M = -INFINITY;
		for (int s = 0; s < nspl; s++)
			M = fmaxf(M, pml[(((size_t)s * ntok + tok) * H + h) * 2]);
		for (int d = threadIdx.x; d < D; d += blockDim.x) {
			float L = 0, acc = 0;
			for (int s = 0; s < nspl; s++) {
				size_t i = ((size_t)s * ntok + tok) * H + h;
				float ms = pml[i * 2];
				if (ms == -INFINITY)
					continue;
				float w = expf(ms - M);
				L += pml[i * 2 + 1] * w;
				acc += po[i * D + d] * w;
			}
			st(att, at, ((size_t)tok * H + h) * D + d, acc / L);
		}
	}
}

/*
 * Decode (one query token per item; D and G are template parameters so q and o stay in registers): no
 * shared-memory staging. Each lane holds EPL consecutive elements of a key row, read with one load: 16
 * bytes of a 16-bit or f32 cache (EPL 8 or 4), 8 codes of a quantized one (BITS 8: 8 bytes, BITS 4: 4
 * bytes; EPL 8). LPK = D / EPL lanes read a key, so one warp-wide load takes KPI = 32 / LPK consecutive
 * keys. A warp takes U such loads of K and of V at once (KPI·U keys; U = 8, 4, 2 for G <= 2, 4, 8: the
 * registers), all addresses first, then the scores of all of them (dot products reduced over the LPK
 * lanes), one running maximum and one rescale per round (the round's largest score against the running
 * one), and o += p·V on each lane's own key. The warps take rounds in turn over the split's range; at the
 * end each warp adds up its key groups (shuffles) and the warps merge through shared memory.
 *
 * A quantized cache (kvcache.h: codes c, per token and head scale s and zero z of the cache's dtype PT) is
 * dequantized in registers and never whole: a code becomes an exact float by putting it into the
 * mantissa of 2^23 (byte_perm or a nibble mask) and subtracting 2^23; then
 *   q · k  = s Σ q_e c_e + z Σ q_e       (Σ q_e of the lane's elements computed once)
 *   o     += (p s) c + p z               (p z summed apart, once a key, added to o at the end)
 * grid (items, KV, splits), block 32·NW, shared NW·G·(D+2) floats. NW = DEC_WARPS, or 8 for a plain 16-bit
 * cache when the grid has fewer blocks than the GPU has SMs (not with deterministic: the warps' merge order is
 * part of a row's bits, and the grid depends on the batch).
 */
#define DEC_WARPS 4

template <int B> struct raw_of;  // an unsigned type of B bytes, loaded at once
template <> struct raw_of<4> { typedef uint32_t T; };
template <> struct raw_of<8> { typedef uint2 T; };
template <> struct raw_of<16> { typedef uint4 T; };

/* The EPL elements of a lane's load as floats: a 16-bit or f32 cache's values, a quantized one's codes. */
template <typename KT, int BITS, int EPL>
__device__ __forceinline__ void unpack(const typename raw_of<BITS ? EPL * BITS / 8 : 16>::T &u, float *f)
{
	if constexpr (BITS == 8) {
		const uint32_t w[2] = {u.x, u.y};
#pragma unroll
		for (int i = 0; i < 8; i++)
			f[i] = __uint_as_float(__byte_perm(w[i / 4], 0x4B000000u, 0x7540 | (i % 4))) - 8388608.0f;
	} else if constexpr (BITS == 4) {
#pragma unroll
		for (int i = 0; i < 8; i++)
			f[i] = __uint_as_float(0x4B000000u | ((u >> (4 * i)) & 15u)) - 8388608.0f;
	} else {
		const KT *e = (const KT *)&u;
#pragma unroll
		for (int i = 0; i < EPL; i++)
			f[i] = tof(e[i]);
	}
}

/* A (scale, zero) pair of the cache's dtype, loaded as raw bits (zero bits: 0, 0), as floats. */
__device__ __forceinline__ float2 pair_f2(uint32_t r, __half) { return __half22float2(*(const __half2 *)&r); }
__device__ __forceinline__ float2 pair_f2(uint32_t r, __nv_bfloat16) { return __bfloat1622float2(*(const __nv_bfloat162 *)&r); }

template <typename KT, int D, int G, int BITS, typename PT, int NW = DEC_WARPS>
__global__ void __launch_bounds__(NW * 32) decode_kernel(void *att, int at, const void *qkv, int qt, int64_t qcols,
								const KT *kc, const KT *vc, const PT *kqs, const PT *vqs,
								const struct attn_item *items, const int32_t *table,
								int max_blocks, int H, int KV, int block_len,
								float scale, int splits, int ntok, float *part)
{
	pdl_start();
	constexpr int EPL = BITS ? 8 : 16 / (int)sizeof(KT), LB = BITS ? EPL * BITS / 8 : 16;  // LB: bytes a lane loads
	constexpr int LPK = D / EPL, KPI = 32 / LPK, U = G <= 2 ? 8 : G <= 4 ? 4 : 2;
	constexpr int ROWB = BITS ? D * BITS / 8 : D * (int)sizeof(KT);  // bytes of a key row
	typedef typename raw_of<LB>::T RAW;
	extern __shared__ float sm[];
	const struct attn_item it = items[blockIdx.x];
	const int kvh = blockIdx.y, split = blockIdx.z, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	const int grp = lane / LPK, gl = lane % LPK;  // the lane's key in a load, and its slice of that key
	const int len = it.last_pos + 1, chunk = split_len(len), nspl = split_count(len);
	if (split >= nspl)
		return;
	const int tb = split * chunk, te = min(len, tb + chunk), tok = it.first;
	float q[G][EPL], o[G][EPL], m[G], l[G], qsum[G], oz[G];  // qsum, oz: quantized caches only
#pragma unroll
	for (int g = 0; g < G; g++) {
		m[g] = -INFINITY;
		l[g] = qsum[g] = oz[g] = 0;
#pragma unroll
		for (int e = 0; e < EPL; e++) {
			o[g][e] = 0;
			q[g][e] = ld(qkv, qt, (size_t)tok * qcols + (size_t)(kvh * G + g) * D + gl * EPL + e);
			qsum[g] += q[g][e];
		}
	}
	const char *kb = (const char *)kc, *vb = (const char *)vc;
	const int32_t *tab = table + (size_t)it.seq * max_blocks;
	for (int t0 = tb + warp * U * KPI; t0 < te; t0 += NW * U * KPI) {
		RAW kr[U], vr[U];
		uint32_t kp[U], vp[U];  // quantized: the keys' (scale, zero) pairs
#pragma unroll
		for (int u = 0; u < U; u++) {
			int t = t0 + u * KPI + grp;
			kr[u] = vr[u] = RAW{};  // a key past the range weighs 0, and 0 · 0 stays 0
			kp[u] = vp[u] = 0;
			if (t < te) {
				size_t row = ((size_t)tab[t / block_len] * KV + kvh) * block_len + t % block_len;
				kr[u] = *(const RAW *)(kb + row * ROWB + gl * LB);
				vr[u] = *(const RAW *)(vb + row * ROWB + gl * LB);
				if constexpr (BITS != 0) {
					kp[u] = ((const uint32_t *)kqs)[row];
					vp[u] = ((const uint32_t *)vqs)[row];
				}
			}
		}
		float s[G][U];
#pragma unroll
		for (int u = 0; u < U; u++) {
			float kf[EPL];
			unpack<KT, BITS, EPL>(kr[u], kf);
			float2 sz = make_float2(0, 0);
			if constexpr (BITS != 0)
				sz = pair_f2(kp[u], PT());
#pragma unroll
			for (int g = 0; g < G; g++) {
				float dot = 0;
#pragma unroll
				for (int e = 0; e < EPL; e++)
					dot = fmaf(q[g][e], kf[e], dot);
				if constexpr (BITS != 0)
					dot = fmaf(dot, sz.x, sz.y * qsum[g]);
#pragma unroll
				for (int off = LPK / 2; off > 0; off >>= 1)
					dot += __shfl_xor_sync(0xffffffffu, dot, off);
				s[g][u] = t0 + u * KPI + grp < te ? dot * scale : -INFINITY;
			}
		}
#pragma unroll
		for (int g = 0; g < G; g++) {
			float mx = -INFINITY;
#pragma unroll
			for (int u = 0; u < U; u++)
				mx = fmaxf(mx, s[g][u]);
#pragma unroll
			for (int off = LPK; off < 32; off <<= 1)
				mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
			float mn = fmaxf(m[g], mx);  // the same in every lane
			if (mn == -INFINITY)
				continue;
			float c = expf(m[g] - mn), ps = 0;
#pragma unroll
			for (int e = 0; e < EPL; e++)
				o[g][e] *= c;
			oz[g] *= c;
#pragma unroll
			for (int u = 0; u < U; u++) {
				float p = expf(s[g][u] - mn), vf[EPL];
				unpack<KT, BITS, EPL>(vr[u], vf);
				ps += p;
				float pw = p;
				if constexpr (BITS != 0) {
					float2 sz = pair_f2(vp[u], PT());
					pw = p * sz.x;
					oz[g] = fmaf(p, sz.y, oz[g]);
				}
#pragma unroll
				for (int e = 0; e < EPL; e++)
					o[g][e] = fmaf(pw, vf[e], o[g][e]);
			}
#pragma unroll
			for (int off = LPK; off < 32; off <<= 1)
				ps += __shfl_xor_sync(0xffffffffu, ps, off);
			l[g] = l[g] * c + ps;
			m[g] = mn;
		}
	}
	float *w = sm + (size_t)warp * G * (D + 2);
#pragma unroll
	for (int g = 0; g < G; g++) {
#pragma unroll
		for (int e = 0; e < EPL; e++) {
			o[g][e] += oz[g];
#pragma unroll
			for (int off = LPK; off < 32; off <<= 1)
				o[g][e] += __shfl_xor_sync(0xffffffffu, o[g][e], off);
			if (grp == 0)
				w[g * (D + 2) + gl * EPL + e] = o[g][e];
		}
		if (lane == 0) {
			w[g * (D + 2) + D] = m[g];
			w[g * (D + 2) + D + 1] = l[g];
		}
	}
	__syncthreads();
	float *po = part, *pml = part + (size_t)splits * ntok * H * D;
	for (int idx = threadIdx.x; idx < G * D; idx += blockDim.x) {
		int g = idx / D, d = idx % D, h = kvh * G + g;
		float M = -INFINITY, L = 0, acc = 0;
		for (int wi = 0; wi < NW; wi++)
			M = fmaxf(M, sm[(wi * G + g) * (D + 2) + D]);
		for (int wi = 0; wi < NW; wi++) {
			const float *x = sm + (wi * G + g) * (D + 2);
			if (x[D] == -INFINITY)
				continue;
			float f = expf(x[D] - M);
			L += x[D + 1] * f;
			acc += x[d] * f;
		}
		if (nspl == 1) {
			st(att, at, ((size_t)tok * H + h) * D + d, acc / L);
		} else {
			size_t i = ((size_t)split * ntok + tok) * H + h;
			po[i * D + d] = acc;
			if (d == 0) {
				pml[i * 2] = M;
				pml[i * 2 + 1] = L;
			}
		}
	}
}

/*
 * Prefill chunks (f16/bf16, D 64 or 128): FlashAttention-2 on the tensor cores (mma.sync m16n8k16, f32
 * accumulate), S, P and O in registers. A block takes up to 64 consecutive query tokens of one sequence
 * and one query head; each of the 4 warps owns 16 query rows (a lane: rows g and g + 8 of them, g = lane
 * / 4, q = lane % 4). The warp's Q fragments are loaded once from qkv. Per tile of 64 keys (gathered from
 * the paged cache into shared memory by cp.async, two stages: the next tile loads while this one is
 * used; keys past the end read as zero):
 *   S = Q Kᵀ       B fragments of K by ldmatrix (rows of K are the mma's columns), 8 n-blocks of 8 keys
 *   softmax       scores masked past each row's position, scaled into log2 units; each row's running
 *                 maximum (over the lane quad), one rescale of O and of the row sum per tile, exp2
 *   O += P V      the S accumulators rounded to the 16-bit type are the A fragments (FlashAttention-2's
 *                 register reuse); B fragments of V by ldmatrix.trans
 * The row sums are completed over the quad at the end; att = O / l. Blocks take the items longest
 * first (the causal tail). Shared rows are D + 8 elements (16-byte aligned, ldmatrix conflict-free).
 * grid (items, H), block 128, shared 2 stages x (K, V) x 64 x (D + 8) elements.
 */
#define FA_BM 64
#define FA_BN 64

__device__ __forceinline__ uint32_t pack2(float lo, float hi, __half)
{
	__half2 h = __floats2half2_rn(lo, hi);
	return *(uint32_t *)&h;
}

__device__ __forceinline__ uint32_t pack2(float lo, float hi, __nv_bfloat16)
{
	__nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
	return *(uint32_t *)&h;
}

/* Four 8x8 matrices of 16-bit elements from shared memory; lanes 8i..8i+7 give the rows of matrix i. */
__device__ __forceinline__ void ldsm4(uint32_t r[4], const void *p)
{
	unsigned s = (unsigned)__cvta_generic_to_shared(p);
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s) : "memory");
}

/* The same, each matrix transposed. */
__device__ __forceinline__ void ldsm4t(uint32_t r[4], const void *p)
{
	unsigned s = (unsigned)__cvta_generic_to_shared(p);
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s) : "memory");
}

template <int D>
static size_t fa_smem(void)
{
	return (size_t)2 * 2 * FA_BN * (D + 8) * 2;
}

template <typename T, int D>
__global__ void __launch_bounds__(128, 3) fa_kernel(T *att, const T *qkv, int64_t qcols, const T *kc, const T *vc,
						 const struct attn_item *items, int nitems, const int32_t *pos,
						 const int32_t *table, int max_blocks, int H, int KV, int G, int block_len,
						 float scale)
{
	constexpr bool BF = sizeof(T) == 2 && !std::is_same<T, __half>::value;
	constexpr int LD = D + 8, KB = D / 16, NB = D / 8;
	extern __shared__ __align__(128) unsigned char fsm[];
	T *Ks = (T *)fsm, *Vs = Ks + 2 * FA_BN * LD;  // [stage][key][LD]
	const struct attn_item it = items[nitems - 1 - blockIdx.x];
	const int h = blockIdx.y, kvh = h / G, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
	const int g = lane / 4, q = lane % 4, mi = lane / 8, mr = lane % 8;  // mi, mr: ldmatrix's matrix and row
	const int len = it.last_pos + 1, ntile = (len + FA_BN - 1) / FA_BN, cnt = it.cnt;
	const int32_t *tab = table + (size_t)it.seq * max_blocks;
	const int r0 = warp * 16 + g, r1 = r0 + 8;
	const int p0 = r0 < cnt ? pos[it.first + r0] : -1, p1 = r1 < cnt ? pos[it.first + r1] : -1;

	auto load_tile = [&](int tile) {
		T *ks = Ks + (tile & 1) * FA_BN * LD, *vs = Vs + (tile & 1) * FA_BN * LD;
		for (int idx = tid; idx < FA_BN * D / 8; idx += 128) {
			int j = idx / (D / 8), c8 = idx % (D / 8) * 8, t = tile * FA_BN + j;
			bool ok = t < len;
			size_t off = ok ? (((size_t)tab[t / block_len] * KV + kvh) * block_len + t % block_len) * D + c8 : 0;
			cp_async16(ks + j * LD + c8, kc + off, ok);
			cp_async16(vs + j * LD + c8, vc + off, ok);
		}
		asm volatile("cp.async.commit_group;\n" ::);
	};
	load_tile(0);

	uint32_t qa[KB][4];
	const T *q0 = qkv + (size_t)(it.first + r0) * qcols + (size_t)h * D, *q1 = q0 + 8 * qcols;
#pragma unroll
	for (int kk = 0; kk < KB; kk++) {
		int d = 16 * kk + 2 * q;
		qa[kk][0] = r0 < cnt ? *(const uint32_t *)(q0 + d) : 0;
		qa[kk][1] = r1 < cnt ? *(const uint32_t *)(q1 + d) : 0;
		qa[kk][2] = r0 < cnt ? *(const uint32_t *)(q0 + d + 8) : 0;
		qa[kk][3] = r1 < cnt ? *(const uint32_t *)(q1 + d + 8) : 0;
	}
	float o[NB][4], m0 = -INFINITY, m1 = -INFINITY, l0 = 0, l1 = 0;
#pragma unroll
	for (int nb = 0; nb < NB; nb++)
		o[nb][0] = o[nb][1] = o[nb][2] = o[nb][3] = 0;
	const float sl2 = scale * 1.4426950408889634f;  // scores in log2 units: e^x = 2^(x log2 e)

	for (int tile = 0; tile < ntile; tile++) {
		if (tile + 1 < ntile) {
			load_tile(tile + 1);
			asm volatile("cp.async.wait_group 1;\n" ::);
		} else {
			asm volatile("cp.async.wait_group 0;\n" ::);
		}
		__syncthreads();
		const T *ks = Ks + (tile & 1) * FA_BN * LD, *vs = Vs + (tile & 1) * FA_BN * LD;
		float s[8][4];
#pragma unroll
		for (int j = 0; j < 8; j++)
			s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0;
#pragma unroll
		for (int kk = 0; kk < KB; kk++) {
#pragma unroll
			for (int j = 0; j < 8; j += 2) {  // matrices: keys of n-block j / j + 1 x d 16kk / 16kk + 8
				uint32_t b[4];
				ldsm4(b, ks + (8 * (j + (mi >> 1)) + mr) * LD + 16 * kk + (mi & 1) * 8);
				mma16816<BF>(s[j], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b[0], b[1]);
				mma16816<BF>(s[j + 1], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b[2], b[3]);
			}
		}
		const int tb = tile * FA_BN;
		float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
		for (int j = 0; j < 8; j++) {
#pragma unroll
			for (int e = 0; e < 2; e++) {
				int t = tb + 8 * j + 2 * q + e;
				s[j][e] = t <= p0 ? s[j][e] * sl2 : -INFINITY;
				s[j][2 + e] = t <= p1 ? s[j][2 + e] * sl2 : -INFINITY;
				mx0 = fmaxf(mx0, s[j][e]);
				mx1 = fmaxf(mx1, s[j][2 + e]);
			}
		}
#pragma unroll
		for (int off = 1; off < 4; off <<= 1) {
			mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
			mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
		}
		float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
		float c0 = mn0 == -INFINITY ? 1.0f : exp2f(m0 - mn0), c1 = mn1 == -INFINITY ? 1.0f : exp2f(m1 - mn1);
		float b0 = mn0 == -INFINITY ? 0.0f : mn0, b1 = mn1 == -INFINITY ? 0.0f : mn1;  // a row with no key yet
		m0 = mn0, m1 = mn1;
		l0 *= c0, l1 *= c1;
#pragma unroll
		for (int nb = 0; nb < NB; nb++) {
			o[nb][0] *= c0, o[nb][1] *= c0;
			o[nb][2] *= c1, o[nb][3] *= c1;
		}
#pragma unroll
		for (int j = 0; j < 8; j++) {
			s[j][0] = exp2f(s[j][0] - b0), s[j][1] = exp2f(s[j][1] - b0);
			s[j][2] = exp2f(s[j][2] - b1), s[j][3] = exp2f(s[j][3] - b1);
			l0 += s[j][0] + s[j][1];
			l1 += s[j][2] + s[j][3];
		}
#pragma unroll
		for (int kb = 0; kb < 4; kb++) {  // 16 keys: n-blocks 2kb and 2kb + 1 of S are P's A fragment
			uint32_t a0 = pack2(s[2 * kb][0], s[2 * kb][1], T()), a1 = pack2(s[2 * kb][2], s[2 * kb][3], T());
			uint32_t a2 = pack2(s[2 * kb + 1][0], s[2 * kb + 1][1], T());
			uint32_t a3 = pack2(s[2 * kb + 1][2], s[2 * kb + 1][3], T());
#pragma unroll
			for (int nb = 0; nb < NB; nb += 2) {  // matrices: keys 16kb / 16kb + 8 x d of n-block nb / nb + 1
				uint32_t b[4];
				ldsm4t(b, vs + (16 * kb + (mi & 1) * 8 + mr) * LD + 8 * nb + (mi >> 1) * 8);
				mma16816<BF>(o[nb], a0, a1, a2, a3, b[0], b[1]);
				mma16816<BF>(o[nb + 1], a0, a1, a2, a3, b[2], b[3]);
			}
		}
		__syncthreads();  // this stage is loaded again two tiles on
	}
#pragma unroll
	for (int off = 1; off < 4; off <<= 1) {
		l0 += __shfl_xor_sync(0xffffffffu, l0, off);
		l1 += __shfl_xor_sync(0xffffffffu, l1, off);
	}
	T *y0 = att + ((size_t)(it.first + r0) * H + h) * D + 2 * q, *y1 = y0 + (size_t)8 * H * D;
#pragma unroll
	for (int nb = 0; nb < NB; nb++) {
		if (r0 < cnt)
			*(uint32_t *)(y0 + 8 * nb) = pack2(o[nb][0] / l0, o[nb][1] / l0, T());
		if (r1 < cnt)
			*(uint32_t *)(y1 + 8 * nb) = pack2(o[nb][2] / l1, o[nb][3] / l1, T());
	}
}

/*
 * A quantized cache's blocks as 16-bit values (x̂ = c · scale + zero, rounded to T), for fa_kernel: scratch
 * block i (layout of the pool, kvcache.h) gets pool block src[i]. grid (blocks, KV), block 128.
 */
template <typename T>
__global__ void dequant_kernel(T *ks, T *vs, const uint8_t *kc, const uint8_t *vc, const T *kqs, const T *vqs,
			       const int32_t *src, int KV, int block_len, int D, int bits)
{
	const size_t from = ((size_t)src[blockIdx.x] * KV + blockIdx.y) * block_len;
	const size_t to = ((size_t)blockIdx.x * KV + blockIdx.y) * block_len;
	const int half = D / 2;
	for (int idx = threadIdx.x; idx < block_len * half; idx += blockDim.x) {
		int r = idx / half, d = idx % half * 2;
#pragma unroll
		for (int w = 0; w < 2; w++) {
			const uint8_t *c = w ? vc : kc;
			const T *qs = w ? vqs : kqs;
			size_t row = from + r;
			float sc = tof(qs[row * 2]), z = tof(qs[row * 2 + 1]);
			int c0, c1;
			if (bits == 8) {
				c0 = c[row * D + d], c1 = c[row * D + d + 1];
			} else {
				int b = c[row * half + d / 2];
				c0 = b & 15, c1 = b >> 4;
			}
			uint32_t v = pack2(__fadd_rn(__fmul_rn((float)c0, sc), z), __fadd_rn(__fmul_rn((float)c1, sc), z), T());
			*(uint32_t *)((w ? vs : ks) + (to + r) * D + d) = v;
		}
	}
}

// ----------------------------------------------------------------------------
// kernel launchers

static size_t smem_bytes(int rmax, int D)
{
	return ((size_t)rmax * D * 2 + (size_t)AT * (D + 1) + (size_t)AT * D + (size_t)rmax * AT + 4 * (size_t)rmax) *
	       sizeof(float);
}

int lmd_cuda_attention_init(struct cuda_ctx *c, struct lmd_err *err)
{
	int optin = 0;
	CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->dev), err);
	c->smem_optin = optin;
	CUDA_TRY(cudaFuncSetAttribute(attn_kernel<float>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin), err);
	CUDA_TRY(cudaFuncSetAttribute(attn_kernel<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin), err);
	CUDA_TRY(cudaFuncSetAttribute(attn_kernel<__nv_bfloat16>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin), err);
	CUDA_TRY(cudaFuncSetAttribute(attn_kernel<uint8_t>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin), err);
	CUDA_TRY(cudaFuncSetAttribute(fa_kernel<__half, 64>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin), err);
	CUDA_TRY(cudaFuncSetAttribute(fa_kernel<__half, 128>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin), err);
	CUDA_TRY(cudaFuncSetAttribute(fa_kernel<__nv_bfloat16, 64>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin), err);
	CUDA_TRY(cudaFuncSetAttribute(fa_kernel<__nv_bfloat16, 128>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin),
		 err);
	return LMD_OK;
}

/* Room in the split partials for splits of the step's tokens. */
static int part_room(struct cuda_ctx *c, int splits, int H, int D, struct lmd_err *err)
{
	size_t need = (size_t)splits * c->step.n * H * (D + 2) * sizeof(float);
	return splits > 1 ? lmd_cuda_grow(c, (void **)&c->part, &c->part_cap, need, err) : LMD_OK;
}

int lmd_cuda_decode_items(const struct lmd_step *s, struct attn_item *items)
{
	int splits = 1;
	for (int i = 0; i < s->n; i++) {
		items[i] = (struct attn_item){i, 1, s->seq[i], s->pos[i]};
		if (split_count(s->pos[i] + 1) > splits)
			splits = split_count(s->pos[i] + 1);
	}
	return splits;
}

/*
 * A quantized cache's prefill runs (fa items h_items[0 .. n_fa)): fa_kernel reads 16-bit tiles, so each run's
 * sequence has its blocks up to the run's end dequantized into the scratch fq_scr (dequant_kernel), once a
 * layer, and fa_kernel reads them there through a table of scratch blocks. The scratch holds fq_scratch
 * bytes' worth of blocks (FQ_SCRATCH, 256 MiB; or one sequence's, when more): the items are cut into groups that fit, each
 * group dequantized and run in turn. An fa item's seq becomes its row of that table. Dequantizing once
 * beats dequantizing tiles inside fa_kernel: every query chunk of a run reads the keys before it again (a
 * 2048-token prompt reads each key 16 times on average), and the scratch costs one write and read of the
 * 16-bit range, a fraction of those reads. bb: bytes of a 16-bit block (K and V, one layer).
 */
static int plan_fq(struct cuda_ctx *c, size_t bb, int block_len, struct lmd_err *err)
{
	const struct lmd_step *s = &c->step;
	int nf = c->n_fa, mb = s->max_blocks, ns = s->nseq, cap = (int)(c->fq_scratch / bb > 0 ? c->fq_scratch / bb : 1);
	size_t ints = (size_t)2 * nf * mb;  // src blocks and table rows: at most one row per item
	int *need = (int *)calloc((size_t)ns * 3, sizeof(int)), *row = need + ns, *grp = row + ns;
	if (!need)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	if (nf > c->fq_groups_cap) {
		struct fq_group *g = (struct fq_group *)realloc(c->fq_groups, (size_t)nf * sizeof(*g));
		if (!g) {
			free(need);
			return lmd_errorf(err, LMD_ENOMEM, "out of memory");
		}
		c->fq_groups = g, c->fq_groups_cap = nf;
	}
	if (ints > c->fq_cap) {  // the last upload from h_fq is done (plan waited for items_done)
		cudaFreeHost(c->h_fq);
		cudaFree(c->d_fq);
		c->h_fq = c->d_fq = NULL, c->fq_cap = 0;
		cudaError_t e = cudaMallocHost(&c->h_fq, ints * 2 * sizeof(int32_t));
		if (e == cudaSuccess)
			e = cudaMalloc(&c->d_fq, ints * 2 * sizeof(int32_t));
		if (e != cudaSuccess) {
			free(need);
			return lmd_errorf(err, LMD_EGPU, "cuda attention: %s", cudaGetErrorString(e));
		}
		c->fq_cap = ints * 2;
	}
	for (int i = 0; i < nf; i++) {
		const struct attn_item *it = &c->h_items[i];
		int nb = (it->last_pos + block_len) / block_len;  // blocks up to its end
		need[it->seq] = nb > need[it->seq] ? nb : need[it->seq];
		row[it->seq] = -1;
	}
	int32_t *src = c->h_fq, *rows = c->h_fq + ints / 2;
	int ng = 0, nrows = 0, total = 0;
	c->fq_rows = (int)(ints / 2);
	struct fq_group *g = NULL;
	for (int i = 0; i < nf; i++) {
		struct attn_item *it = &c->h_items[i];
		int sq = it->seq;
		if (row[sq] < 0 || grp[sq] != ng - 1) {  // the sequence's blocks, new in this group
			if (!g || (g->nblocks && g->nblocks + need[sq] > cap)) {
				g = &c->fq_groups[ng++];
				*g = (struct fq_group){i, 0, total, 0};
			}
			row[sq] = nrows++, grp[sq] = ng - 1;
			for (int b = 0; b < need[sq]; b++) {
				rows[(size_t)row[sq] * mb + b] = g->nblocks + b;
				src[total + b] = s->block_table[(size_t)sq * mb + b];
			}
			g->nblocks += need[sq];
			total += need[sq];
		}
		it->seq = row[sq];
		g->nitems++;
	}
	free(need);
	c->n_fq_groups = ng;
	CUDA_TRY(cudaMemcpyAsync(c->d_fq, c->h_fq, ints * sizeof(int32_t), cudaMemcpyHostToDevice, c->st), err);
	return LMD_OK;
}

/*
 * The step's work items (once per step): runs of at least FA_MIN consecutive tokens of one sequence go
 * to fa_kernel in chunks of 64 (when fa); the rest in chunks of qt tokens, single tokens to
 * decode_kernel (when dec), others to attn_kernel. h_items holds [fa | decode | tile] items. fq: the
 * cache is quantized, bb bytes a 16-bit block (plan_fq).
 */
#define FA_MIN 32
static int plan(struct cuda_ctx *c, int G, int H, int D, int fa, int dec, int fq, size_t bb, int block_len,
		struct lmd_err *err)
{
	const struct lmd_step *s = &c->step;
	int qt = G >= ROWS ? 1 : ROWS / G;
	if ((size_t)s->n > c->items_cap) {
		size_t cap = (size_t)s->n * 2;
		if (c->h_items)
			CUDA_TRY(cudaFreeHost(c->h_items), err);
		if (c->d_items)
			CUDA_TRY(cudaFree(c->d_items), err);
		c->h_items = NULL, c->d_items = NULL, c->items_cap = 0;
		CUDA_TRY(cudaMallocHost(&c->h_items, cap * sizeof(struct attn_item)), err);
		CUDA_TRY(cudaMalloc(&c->d_items, cap * sizeof(struct attn_item)), err);
		c->items_cap = cap;
	}
	CUDA_TRY(cudaEventSynchronize(c->items_done), err);  // the last upload from h_items (and h_fq) is done
	int n = 0, cnt3[3] = {0, 0, 0}, splits = 1;  // splits: the most any decode/tile item has
	for (int cls = 0; cls < 3; cls++)
		for (int i = 0; i < s->n;) {
			int run = 1;
			while (i + run < s->n && s->seq[i + run] == s->seq[i] && s->pos[i + run] == s->pos[i + run - 1] + 1)
				run++;
			int chunk = fa && run >= FA_MIN ? FA_BM : qt;
			for (int k = 0; k < run; k += chunk) {
				int cnt = run - k < chunk ? run - k : chunk;
				int kind = fa && run >= FA_MIN ? 0 : dec && cnt == 1 ? 1 : 2;
				if (kind != cls)
					continue;
				int last = s->pos[i + k + cnt - 1];
				c->h_items[n++] = (struct attn_item){i + k, cnt, s->seq[i], last};
				cnt3[cls]++;
				if (cls && split_count(last + 1) > splits)
					splits = split_count(last + 1);
			}
			i += run;
		}
	c->n_fa = cnt3[0], c->n_dec = cnt3[1], c->n_tile = cnt3[2];
	int rc = part_room(c, splits, H, D, err);
	if (rc || (fq && c->n_fa && (rc = plan_fq(c, bb, block_len, err))))
		return rc;
	c->splits = splits;
	CUDA_TRY(cudaMemcpyAsync(c->d_items, c->h_items, (size_t)n * sizeof(struct attn_item), cudaMemcpyHostToDevice, c->st),
		 err);
	CUDA_TRY(cudaEventRecord(c->items_done, c->st), err);
	c->items_step = c->step_id;
	c->items_group = G;
	c->items_mode = fq * 4 + fa * 2 + dec;
	return LMD_OK;
}

/* decode_kernel with nw warps a block (8 only for a plain 16-bit cache, else DEC_WARPS) */
template <typename KT, int D, int G, int BITS, typename PT, typename... A>
static void dec_launch(struct cuda_ctx *c, int nw, dim3 grid, size_t sm, A... args)
{
	if constexpr (!BITS && sizeof(KT) == 2)
		if (nw == 8)
			return pdl_launch(c, decode_kernel<KT, D, G, BITS, PT, 8>, grid, 8 * 32, sm, args...);
	pdl_launch(c, decode_kernel<KT, D, G, BITS, PT>, grid, DEC_WARPS * 32, sm, args...);
}

int lmd_cuda_attention(struct cuda_ctx *c, struct lmd_tensor *att, const struct lmd_tensor *qkv,
		       const struct lmd_kvcache *kv, int layer, const struct lmd_attn_dims *d, struct lmd_err *err)
{
	int D = d->head_dim, H = d->heads, KV = d->kv_heads;
	if (D != kv->head_dim || KV != kv->kv_heads || KV <= 0 || H % KV || t_cols(att) != (int64_t)H * D ||
	    t_cols(qkv) != (int64_t)(H + 2 * KV) * D || layer < 0 || layer >= kv->layers ||
	    (kv->quant != LMD_KV_NONE && (!kv->kq || !kv->vq || D % 8)) ||
	    t_rows(att) < c->step.n || !float_dt(kv->dtype))
		return lmd_errorf(err, LMD_EINVAL, "cuda attention: tensor shapes or dtypes do not match");
	int G = H / KV, rmax = G >= ROWS ? G : ROWS / G * G;
	size_t smem = smem_bytes(rmax, D);
	if (smem > (size_t)c->smem_optin)
		return lmd_errorf(err, LMD_EINVAL, "cuda attention: head_dim %d with %d query heads per kv head needs %zu bytes "
				  "of shared memory, more than the GPU's %d", D, G, smem, c->smem_optin);
	enum lmd_dtype T = kv->dtype;
	int one_type = qkv->dtype == T && att->dtype == T, half = T == LMD_F16 || T == LMD_BF16;
	/* a quantized cache: decode_kernel and fa_kernel (through the scratch) when 16-bit, else attn_kernel */
	int quant = kv->quant != LMD_KV_NONE, fast = !quant || (half && !c->kvq_generic);
	int fa = fast && one_type && half && (D == 64 || D == 128) && !c->no_fa;
	int dec = fast && (D == 64 || D == 128) && (G == 1 || G == 2 || G == 4 || G == 8);
	int fq = quant && fa;
	size_t bb = (size_t)2 * KV * kv->block_len * D * lmd_dtype_size(T);  // a block dequantized, K and V
	const struct attn_item *it_fa = c->d_items;
	if (c->dec_step) {  // one token per sequence: items from step_begin, in the step's metadata
		int rc = part_room(c, c->dec_splits, H, D, err);
		if (rc)
			return rc;
		it_fa = c->d_dec_items;
		c->n_fa = 0, c->n_dec = dec ? c->step.n : 0, c->n_tile = dec ? 0 : c->step.n;
		c->splits = c->dec_splits;
	} else if (c->items_step != c->step_id || c->items_group != G || c->items_mode != fq * 4 + fa * 2 + dec) {
		int rc = plan(c, G, H, D, fa, dec, fq, bb, kv->block_len, err);
		if (rc)
			return rc;
		it_fa = c->d_items;
	}
	const void *kc = kv->k[layer].data, *vc = kv->v[layer].data;
	const void *kqs = quant ? kv->kq[layer].data : NULL, *vqs = quant ? kv->vq[layer].data : NULL;
	const struct attn_item *it_dec = it_fa + c->n_fa, *it_tile = it_dec + c->n_dec;
	/* fa groups: one of all the items over the pool, or (quantized) plan_fq's over the scratch */
	struct fq_group all = {0, c->n_fa, 0, 0};
	const struct fq_group *grp = fq ? c->fq_groups : &all;
	for (int gi = 0; c->n_fa && gi < (fq ? c->n_fq_groups : 1); gi++) {
		const struct fq_group *g = &grp[gi];
		const void *fk = kc, *fv = vc;
		const int32_t *tab = c->d_table;
		if (fq) {
			size_t half_bytes = (size_t)g->nblocks * bb / 2;
			int rc = lmd_cuda_grow(c, &c->fq_scr, &c->fq_scr_cap, 2 * half_bytes, err);
			if (rc)
				return rc;
			fk = c->fq_scr, fv = (const char *)c->fq_scr + half_bytes;
			tab = c->d_fq + c->fq_rows;
			dim3 dg(g->nblocks, KV);
#define DQ(TT) dequant_kernel<TT><<<dg, 128, 0, c->st>>>((TT *)fk, (TT *)fv, (const uint8_t *)kc, (const uint8_t *)vc, \
		(const TT *)kqs, (const TT *)vqs, c->d_fq + g->src0, KV, kv->block_len, D, (int)kv->quant)
			if (T == LMD_F16)
				DQ(__half);
			else
				DQ(__nv_bfloat16);
#undef DQ
			LAUNCH_TRY(err);
		}
		dim3 grid(g->nitems, H);
#define FA(TT, DD) fa_kernel<TT, DD><<<grid, 128, fa_smem<DD>(), c->st>>>((TT *)att->data, (const TT *)qkv->data, \
		t_cols(qkv), (const TT *)fk, (const TT *)fv, it_fa + g->item0, g->nitems, c->d_pos, tab, c->step.max_blocks, H, \
		KV, G, kv->block_len, d->scale)
		if (T == LMD_F16 && D == 64)
			FA(__half, 64);
		else if (T == LMD_F16)
			FA(__half, 128);
		else if (D == 64)
			FA(__nv_bfloat16, 64);
		else
			FA(__nv_bfloat16, 128);
#undef FA
		LAUNCH_TRY(err);
	}
	if (c->n_dec) {
		dim3 grid(c->n_dec, KV, c->splits);
		/* a block an SM and SMs to spare: twice the warps on a sequence's keys (other bits: not with deterministic) */
		bool few = (long)c->n_dec * KV * c->splits < c->sms;
		int nw = !quant && T != LMD_F32 && (c->dec_warps == 8 || (!c->dec_warps && few)) ? 8 : DEC_WARPS;
		size_t sm = (size_t)nw * G * (D + 2) * sizeof(float);
#define DEC(KT, DD, GG, BB, PT) dec_launch<KT, DD, GG, BB, PT>(c, nw, grid, sm, att->data, att->dtype, qkv->data, \
		qkv->dtype, t_cols(qkv), (const KT *)kc, (const KT *)vc, (const PT *)kqs, (const PT *)vqs, it_dec, c->d_table, \
		c->step.max_blocks, H, KV, kv->block_len, d->scale, c->splits, c->step.n, c->part)
#define DEC_G(KT, DD, BB, PT) do { switch (G) { case 1: DEC(KT, DD, 1, BB, PT); break; \
		case 2: DEC(KT, DD, 2, BB, PT); break; case 4: DEC(KT, DD, 4, BB, PT); break; \
		default: DEC(KT, DD, 8, BB, PT); break; } } while (0)
#define DEC_D(KT, BB, PT) do { if (D == 64) DEC_G(KT, 64, BB, PT); else DEC_G(KT, 128, BB, PT); } while (0)
		if (quant && kv->quant == LMD_KV_INT8 && T == LMD_F16)
			DEC_D(uint8_t, 8, __half);
		else if (quant && kv->quant == LMD_KV_INT8)
			DEC_D(uint8_t, 8, __nv_bfloat16);
		else if (quant && T == LMD_F16)
			DEC_D(uint8_t, 4, __half);
		else if (quant)
			DEC_D(uint8_t, 4, __nv_bfloat16);
		else if (T == LMD_F16)
			DEC_D(__half, 0, __half);
		else if (T == LMD_BF16)
			DEC_D(__nv_bfloat16, 0, __nv_bfloat16);
		else
			DEC_D(float, 0, float);
#undef DEC_G
#undef DEC_D
#undef DEC
		LAUNCH_TRY(err);
	}
	if (c->n_tile) {
		dim3 grid(c->n_tile, KV, c->splits);
#define ATTN(KT) attn_kernel<KT><<<grid, THREADS, smem, c->st>>>(att->data, att->dtype, qkv->data, qkv->dtype, t_cols(qkv), \
		(const KT *)kc, (const KT *)vc, it_tile, c->d_pos, c->d_table, c->step.max_blocks, H, KV, D, G, rmax, \
		kv->block_len, d->scale, c->splits, c->step.n, c->part, kqs, vqs, (int)T, (int)kv->quant)
		if (quant)
			ATTN(uint8_t);
		else if (T == LMD_F16)
			ATTN(__half);
		else if (T == LMD_BF16)
			ATTN(__nv_bfloat16);
		else
			ATTN(float);
#undef ATTN
		LAUNCH_TRY(err);
	}
	if (c->splits > 1 && c->n_dec + c->n_tile) {
		dim3 g2(c->n_dec + c->n_tile, H);
		pdl_launch(c, combine_kernel, g2, D < 1024 ? D : 1024, 0, att->data, att->dtype, c->part, it_dec, c->splits,
			   c->step.n, H, D);
		LAUNCH_TRY(err);
	}
	return LMD_OK;
}
