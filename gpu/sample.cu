/*
 * pick (backend.h): each row of logits reduced on the device to what sampling needs (sampler.h,
 * lmd_sample_spread), so that a greedy step downloads two ints a row instead of the whole row.
 * Matches lmd_cpu_pick (ops-cpu.c) exactly: there is no arithmetic but one subtraction.
 *
 *   pick   grid rows (at most PICK_ROWS a launch), block 1024; for row r:
 *          1. best: each thread keeps the first largest of its strided elements (NaN skipped), then a
 *             reduction over shuffles and shared memory that prefers the larger value and, on ties,
 *             the smaller index: the first index of the largest value, whatever the thread count.
 *          2. count, when spread[r] >= 0: cut = logits[best] - spread[r] (rounded once: __fsub_rn, no
 *             contraction); each warp's elements >= cut take consecutive slots from one shared
 *             atomicAdd per warp and round, and are written as (value bits, index) while slots < cap.
 *
 * The spreads are host memory: they travel by value in the launch's argument (a PICK_ROWS float
 * struct), so the op needs no device buffer, no copy and no synchronization.
 */
#include <string.h>

#include "internal.cuh"

extern "C" {
#include "ops-cpu.h"
}

#define PICK_THREADS 1024
#define PICK_ROWS 256

struct pick_spreads {
	float s[PICK_ROWS];
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

__global__ void __launch_bounds__(PICK_THREADS)
pick_kernel(int32_t *head, int32_t *cand, int cap, const float *logits, int vocab, struct pick_spreads sp)
{
	__shared__ float s_val[32];
	__shared__ int s_idx[32];
	__shared__ int s_best, s_count;
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
		}
	}
	__syncthreads();
	int best = s_best;
	float spread = sp.s[blockIdx.x];
	if (spread >= 0) {  // not for a negative or NaN spread: the argmax only
		float cut = __fsub_rn(v[best], spread);
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
		head[2 * blockIdx.x + 1] = spread >= 0 ? s_count : 0;
	}
}

// ----------------------------------------------------------------------------
// kernel launcher

int lmd_cuda_pick(struct cuda_ctx *c, struct lmd_tensor *head, struct lmd_tensor *cand, const struct lmd_tensor *logits,
		  const float *spread, struct lmd_err *err)
{
	if (!lmd_pick_shapes_ok(head, cand, logits) || cand->shape[1] / 2 > INT32_MAX / 2)
		return lmd_errorf(err, LMD_EINVAL, "cuda pick: tensor shapes or dtypes do not match");
	int64_t rows = logits->shape[0], vocab = logits->shape[1], cap = cand->shape[1] / 2;  // shape[0]: cap may be 0
	for (int64_t r0 = 0; r0 < rows; r0 += PICK_ROWS) {
		int k = rows - r0 < PICK_ROWS ? (int)(rows - r0) : PICK_ROWS;
		struct pick_spreads sp = {};
		memcpy(sp.s, spread + r0, (size_t)k * sizeof(float));
		pick_kernel<<<k, PICK_THREADS, 0, c->st>>>((int32_t *)head->data + 2 * r0,
							    (int32_t *)cand->data + 2 * cap * r0, (int)cap,
							    (const float *)logits->data + vocab * r0, (int)vocab, sp);
		LAUNCH_TRY(err);
	}
	return LMD_OK;
}
