/*
 * pick (backend.h): each row of logits reduced on the device to what sampling needs (sampler.h,
 * lmd_sample_spread), so that a greedy step downloads two ints a row instead of the whole row.
 * Matches lmd_cpu_pick (ops-cpu.c) exactly: there is no arithmetic but one subtraction.
 *
 *   pick   grid rows (at most PICK_ROWS a launch), block 1024; for row r:
 *          1. best: each thread keeps the first largest of its strided elements (NaN skipped), then a
 *             reduction over shuffles and shared memory that prefers the larger value and, on ties,
 *             the smaller index: the first index of the largest value, whatever the thread count.
 *          2. the top_k[r]-th largest value, when spread[r] >= 0 and top_k[r] > 0: a radix select over
 *             the values' order-preserving 32-bit keys (-0 as +0, NaN left out), 8 bits a pass from
 *             the top: a shared histogram of the digit among the keys that share the digits fixed so
 *             far (one shared atomicAdd per run of equal digits in a warp, __match_any_sync), then
 *             warp 0 finds the digit where the count from the top reaches what is left of k.
 *          A row whose largest value is not finite (all NaN, or +inf) gets count -1 and no candidates.
 *          3. count, when spread[r] >= 0: cut = logits[best] - spread[r] (rounded once: __fsub_rn, no
 *             contraction), raised to that value when it is larger (lmd_sample_cut); each warp's
 *             elements >= cut take consecutive slots from one shared atomicAdd per warp and round, and
 *             are written as (value bits, index) while slots < cap.
 *
 * The spreads and top-k are host memory: they travel by value in the launch's argument (a PICK_ROWS
 * struct), so the op needs no device buffer, no copy and no synchronization.
 */
#include <string.h>

#include "internal.cuh"

extern "C" {
#include "engine/ops-cpu.h"
}

#define PICK_THREADS 1024
#define PICK_ROWS 256

struct pick_rules {
	float s[PICK_ROWS];
	int32_t k[PICK_ROWS];
};

// ----------------------------------------------------------------------------
// CUDA kernels

/* (av, ai) goes before (bv, bi): an index < 0 is "none"; larger values first, then smaller indices. */
__device__ __forceinline__ bool pick_before(float av, int ai, float bv, int bi)
{
	return ai >= 0 && (bi < 0 || av > bv || (av == bv && ai < bi));
}

__device__ __forceinline__ void warp_best(float &v, int &i)
{
	for (int o = 16; o > 0; o >>= 1) {
		float ov = __shfl_xor_sync(0xffffffffu, v, o);
		int oi = __shfl_xor_sync(0xffffffffu, i, o);
		if (pick_before(ov, oi, v, i))
			v = ov, i = oi;
	}
}

/* Order-preserving key of a float that is not NaN (-0 as +0), and back. */
__device__ __forceinline__ unsigned order_key(float x)
{
	unsigned b = __float_as_uint(x == 0 ? 0.0f : x);
	return b & 0x80000000u ? ~b : b | 0x80000000u;
}

__device__ __forceinline__ float order_value(unsigned k)
{
	return __uint_as_float(k & 0x80000000u ? k & 0x7fffffffu : ~k);
}

/*
 * The k-th largest value of v[vocab] (NaN not counted, ties counted) into *kth; false when the row has
 * fewer than k values. Called by the whole block; hist: 256 shared ints.
 */
__device__ bool kth_largest(const float *v, int vocab, int k, int *hist, unsigned *s_prefix, int *s_left, float *kth)
{
	int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
	unsigned mask = 0;
	if (threadIdx.x == 0)
		*s_prefix = 0, *s_left = k;
	for (int shift = 24; shift >= 0; shift -= 8) {
		for (int j = threadIdx.x; j < 256; j += blockDim.x)
			hist[j] = 0;
		__syncthreads();
		unsigned prefix = *s_prefix;
		for (int base = 0; base < vocab; base += blockDim.x) {  // the same trip count in every thread
			int i = base + threadIdx.x, d = -1;
			float x = i < vocab ? v[i] : NAN;
			if (!isnan(x) && (order_key(x) & mask) == prefix)
				d = order_key(x) >> shift & 255;
			unsigned peers = __match_any_sync(0xffffffffu, d);
			if (d >= 0 && lane == __ffs(peers) - 1)
				atomicAdd(&hist[d], __popc(peers));
		}
		__syncthreads();
		if (warp == 0) {  // lane l sums bins 255 - 8l down to 248 - 8l; counts run from the top
			int c[8], sum = 0, left = *s_left;
#pragma unroll
			for (int j = 0; j < 8; j++)
				sum += c[j] = hist[255 - 8 * lane - j];
			int incl = sum;
			for (int o = 1; o < 32; o <<= 1) {
				int t = __shfl_up_sync(0xffffffffu, incl, o);
				incl += lane >= o ? t : 0;
			}
			int excl = incl - sum;
			bool mine = excl < left && left <= incl;
			if (!__any_sync(0xffffffffu, mine)) {
				if (lane == 0)
					*s_left = 0;  // fewer than k values (first pass only)
			} else if (mine) {
				left -= excl;
				int j = 0;
				while (c[j] < left)
					left -= c[j++];
				*s_prefix = prefix | (unsigned)(255 - 8 * lane - j) << shift;
				*s_left = left;
			}
		}
		__syncthreads();
		if (*s_left == 0)
			return false;
		mask |= 255u << shift;
	}
	*kth = order_value(*s_prefix);
	return true;
}

__global__ void __launch_bounds__(PICK_THREADS)
pick_kernel(int32_t *head, int32_t *cand, int cap, const float *logits, int vocab, struct pick_rules sp)
{
	__shared__ int s_hist[256];
	__shared__ unsigned s_prefix;
	__shared__ int s_left;
	__shared__ float s_val[32];
	__shared__ int s_idx[32];
	__shared__ int s_best, s_count, s_bad;
	const float *v = logits + (size_t)blockIdx.x * vocab;
	int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
	float bv = -INFINITY;
	int bi = -1;
	for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
		float x = v[i];
		if (!isnan(x) && (bi < 0 || x > bv))
			bv = x, bi = i;
	}
	warp_best(bv, bi);
	if (lane == 0)
		s_val[warp] = bv, s_idx[warp] = bi;
	__syncthreads();
	if (warp == 0) {
		int nw = blockDim.x / 32;
		bv = lane < nw ? s_val[lane] : -INFINITY;
		bi = lane < nw ? s_idx[lane] : -1;
		warp_best(bv, bi);
		if (lane == 0) {
			s_best = bi < 0 ? 0 : bi;  // a row of NaN: 0, as lmd_argmax
			s_count = 0;
			s_bad = bi < 0 || !isfinite(bv);  // logits of NaN or inf: no choice can be made
		}
	}
	__syncthreads();
	int best = s_best;
	float spread = sp.s[blockIdx.x];
	if (spread >= 0 && !s_bad) {  // not for a negative or NaN spread: the argmax only
		float cut = __fsub_rn(v[best], spread), kth;
		if (sp.k[blockIdx.x] > 0 && kth_largest(v, vocab, sp.k[blockIdx.x], s_hist, &s_prefix, &s_left, &kth) &&
		    kth > cut)
			cut = kth;
		int32_t *c = cand + (size_t)blockIdx.x * 2 * cap;
		for (int base = 0; base < vocab; base += blockDim.x) {  // the same trip count in every thread
			int i = base + threadIdx.x;
			float x = i < vocab ? v[i] : NAN;
			bool take = x >= cut;
			unsigned m = __ballot_sync(0xffffffffu, take);
			int slot = 0;
			if (lane == 0 && m)
				slot = atomicAdd(&s_count, __popc(m));
			slot = __shfl_sync(0xffffffffu, slot, 0) + __popc(m & ((1u << lane) - 1));
			if (take && slot < cap) {
				c[2 * slot] = __float_as_int(x);
				c[2 * slot + 1] = i;
			}
		}
		__syncthreads();
	}
	if (threadIdx.x == 0) {
		head[2 * blockIdx.x] = best;
		head[2 * blockIdx.x + 1] = s_bad ? -1 : spread >= 0 ? s_count : 0;
	}
}

// ----------------------------------------------------------------------------
// kernel launcher

int lmd_cuda_pick(struct cuda_ctx *c, struct lmd_tensor *head, struct lmd_tensor *cand, const struct lmd_tensor *logits,
		  const float *spread, const int32_t *top_k, struct lmd_err *err)
{
	if (!lmd_pick_shapes_ok(head, cand, logits) || cand->shape[1] / 2 > INT32_MAX / 2)
		return lmd_errorf(err, LMD_EINVAL, "cuda pick: tensor shapes or dtypes do not match");
	int64_t rows = logits->shape[0], vocab = logits->shape[1], cap = cand->shape[1] / 2;  // shape[0]: cap may be 0
	for (int64_t r0 = 0; r0 < rows; r0 += PICK_ROWS) {
		int k = rows - r0 < PICK_ROWS ? (int)(rows - r0) : PICK_ROWS;
		struct pick_rules sp = {};
		memcpy(sp.s, spread + r0, (size_t)k * sizeof(float));
		if (top_k)
			memcpy(sp.k, top_k + r0, (size_t)k * sizeof(int32_t));
		pick_kernel<<<k, PICK_THREADS, 0, c->st>>>((int32_t *)head->data + 2 * r0,
							    (int32_t *)cand->data + 2 * cap * r0, (int)cap,
							    (const float *)logits->data + vocab * r0, (int)vocab, sp);
		LAUNCH_TRY(err);
	}
	return LMD_OK;
}
