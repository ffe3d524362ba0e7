/*
 * What the .cu files of the CUDA backend share (never included from C): the context, the checking
 * macros (aesthetics C9), the dtype helpers of the kernels, and the op launchers each file exports.
 *
 * Element types. Activations, KV cache and weights may each be f32, f16 or bf16 (backend.h); the
 * simple kernels read and write through ld()/st(), a switch on the tensor's dtype that the compiler
 * hoists out of their loops. Arithmetic is fp32; every store rounds to nearest even, as the CPU
 * reference (ops-cpu.c) does.
 */
#ifndef LMD_GPU_INTERNAL_CUH
#define LMD_GPU_INTERNAL_CUH

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

extern "C" {
#include "engine/backend.h"
#include "cuda.h"
#include "err.h"
#include "engine/kvcache.h"
#include "tensor.h"
}

#define CUDA_TRY(stmt, err) do { cudaError_t e_ = (stmt); if (e_ != cudaSuccess) \
	return lmd_errorf((err), LMD_EGPU, "%s: %s (%s:%d)", #stmt, cudaGetErrorString(e_), __FILE__, __LINE__); \
} while (0)
#define CUBLAS_TRY(stmt, err) do { cublasStatus_t s_ = (stmt); if (s_ != CUBLAS_STATUS_SUCCESS) \
	return lmd_errorf((err), LMD_EGPU, "%s: %s (%s:%d)", #stmt, cublasGetStatusName(s_), __FILE__, __LINE__); \
} while (0)
/* After every launch. */
#define LAUNCH_TRY(err) CUDA_TRY(cudaGetLastError(), err)

/* One attention work item: cnt consecutive tokens of one sequence starting at batch row first. */
struct attn_item {
	int first, cnt, seq, last_pos;
};

/* fa items [item0, item0 + nitems) of a quantized cache read scratch blocks dequantized from pool blocks
 * src[src0 .. src0 + nblocks) (attention.cu). */
struct fq_group {
	int item0, nitems, src0, nblocks;
};

/* LMD_CUDA_GEMM=lt (matmul.cu): the cuBLASLt algorithm chosen once for products of a shape. */
#define LT_ALGOS 32
#define LT_ROWS 256  /* LMD_CUDA_GEMM=lt: the algorithm of 256-row products */
struct lt_algo {
	int N, K, xt, yt;
	cublasLtMatmulAlgo_t algo;
};

/*
 * A recorded decode step (backend-cuda.cu): the ops of a step with this key, from step_begin to the
 * first download, sync, upload or pick, as one CUDA graph. The key fixes every launch argument: the
 * model (replay id), the step's token count, the attention splits and the block table's row stride;
 * gen is the buffers' generation (moving the metadata, split or padding buffers makes old graphs stale).
 */
struct graph_ent {
	uint64_t replay;
	int n, splits, stride;
	long gen, used;
	int nops;
	uint64_t sig;                  /* the ops' arguments, to check a replayed step against the recording */
	cudaGraphExec_t exec;          /* NULL: seen once (ran eagerly); recorded the second time */
};
#define GRAPHS 32

/* A device allocation: where it starts, how many bytes. */
struct dev_alloc {
	const char *p;
	size_t bytes;
};

struct cuda_ctx {
	int dev, sms, smem_optin;
	cudaStream_t st;
	cublasHandle_t blas;
	void *blas_ws;
	size_t blas_ws_bytes;
	/* the step's metadata: host copy, pinned staging, device copy (grown, never shrunk) */
	struct lmd_step step;
	long step_id;
	char *h_meta, *d_meta;
	size_t meta_cap;
	cudaEvent_t meta_done;         /* the last upload from h_meta finished */
	const int32_t *d_tokens, *d_pos, *d_seq, *d_table, *d_out;
	const float *d_freq;
	float2 *rope_cs;               /* rope's cos/sin table of a step [n][D/2] (grown, never shrunk) */
	size_t rope_cs_cap;            /* bytes */
	long rope_step;                /* the step_id rope_cs was made for */
	/* attention work list of the step, built by the first attention call (it depends on heads/kv_heads) */
	long items_step;
	int items_group, items_mode, n_fa, n_dec, n_tile, splits;
	int no_fa;                     /* LMD_CUDA_FA=0: prefill through attn_kernel (for comparison) */
	struct attn_item *h_items, *d_items;
	size_t items_cap;
	cudaEvent_t items_done;
	int kvq_generic;               /* quantized caches through attn_kernel alone unless LMD_CUDA_KVQ=fast */
	/* a quantized cache's prefill runs (attention.cu): the blocks they read, dequantized group by group into
	 * fq_scr for fa_kernel; planned with the items: h_fq/d_fq = [src blocks of every group][rows][max_blocks] */
	struct fq_group *fq_groups;    /* owned (host) [n_fq_groups] */
	int n_fq_groups, fq_groups_cap, fq_rows;  /* fq_rows: where the table rows start in h_fq/d_fq */
	int32_t *h_fq, *d_fq;          /* pinned / device, fq_cap ints each */
	size_t fq_cap;
	size_t fq_scratch;             /* bytes of blocks a group may hold (FQ_SCRATCH; LMD_CUDA_FQ_SCRATCH for tests) */
	void *fq_scr;                  /* the dequantized blocks of one group, K then V (grown, never shrunk) */
	size_t fq_scr_cap;             /* bytes */
	float *part;                   /* split-K partials: [splits][n][H][D] outputs, then [splits][n][H][2] (m, l) */
	size_t part_cap;               /* bytes */
	/* memory accounting */
	size_t allocated, weights, free_at_open, total;
	char *h_stage;                 /* pinned staging for large downloads (grown, never shrunk) */
	size_t stage_cap;
	/* LMD_CUDA_PROFILE=1: where a step's time goes, printed to stderr at close */
	int prof;
	long prof_steps;
	double prof_t_sync_end, prof_host_gap, prof_enqueue, prof_wait, prof_gpu_ms, prof_t_begin;
	int prof_in_step;
	cudaEvent_t prof_e0, prof_e1;
	int gemv_rows;                 /* with cublas_gemm: 16-bit products of up to this many rows through gemv (matmul.cu;
	                                * LMD_CUDA_GEMV=R, default GEMV_ROWS; 0: cuBLAS) */
	int cublas_gemm;               /* 16-bit products through cuBLAS at their own shape (not batch-invariant): the
	                                * default without deterministic, or LMD_CUDA_GEMM=cublas */
	int lt_gemm;                   /* LMD_CUDA_GEMM=ltR: the other rows through one cuBLASLt algorithm per shape, the
	                                * heuristic's for R rows (lt: LT_ROWS); 0 = off */
	cublasLtHandle_t lt;           /* owned, when lt_gemm */
	struct lt_algo lt_algos[LT_ALGOS];  /* the algorithm of each product shape met so far */
	int n_lt;
	int pad_rows;                  /* 16-bit rows outside prefill runs through cuBLAS in blocks of P rows (padded: one
	                                * shape, so batch-invariant; LMD_CUDA_GEMM=padP, default PAD_ROWS); 0 = lmd's
	                                * kernels (LMD_CUDA_GEMM=lmd) */
	void *pad_x, *pad_y;           /* the blocks' scratch: [P, K] and [P, N] (grown, never shrunk) */
	struct dev_alloc *allocs;      /* alloc's 16-bit matrices, with room for P more rows (lmd_cuda_room) */
	int n_allocs, allocs_cap;
	size_t pad_x_cap, pad_y_cap;   /* bytes */
	void *q4_deq;                  /* matmul_q4's dequantized weight for cuBLAS (grown, never shrunk) */
	size_t q4_deq_cap;             /* bytes */
	void *kvp;                     /* the offline KV parameters last used (kvcache.h params), on the device */
	float *kvp_host;               /* owned: the same, on the host (kvp_bytes) */
	size_t kvp_cap, kvp_bytes;
	int dec_warps;                 /* decode attention's warps a block for a 16-bit cache: 4, 8, or 0 (the default
	                                * without deterministic): 8 when the grid has fewer blocks than the GPU has SMs */
	int fuse_gu;                   /* gate_up in one kernel where one applies (LMD_CUDA_GU=0: the two ops) */
	int q4_occ4;                   /* q4_stream up to 8 rows with the ring of 2 in 64 registers, 4 blocks an SM instead
	                                * of 3 (LMD_CUDA_Q4_OCC4=1; off until measured) */
	int q4_ring4;                  /* q4_stream up to 8 rows with a ring of 4 tiles a warp (2 blocks an SM) for K of at
	                                * least this many tiles of 128 (LMD_CUDA_Q4_RING4=KB; 0: never; default Q4_RING4_KB) */
	int q4_stream_rows;            /* matmul_q4: products of up to this many rows through q4_stream and the others through
	                                * q4_piped (LMD_CUDA_Q4=streamR, default Q4_STREAM_ROWS); 0 (old): q4_skinny up
	                                * to 16 rows and q4_tiled, the first kernels */
	int q4_blas_rows;              /* matmul_q4: a product of at least this many rows dequantizes W once and goes
	                                * through cuBLAS at its own shape, as prefill runs do (not batch-invariant: the
	                                * default without deterministic, Q4_BLAS_ROWS; LMD_CUDA_Q4_BLAS=R); 0 = never */
	int q4_persist;                /* q4_piped on as many blocks as the GPU holds, each taking items in turn
	                                * (LMD_CUDA_Q4_PERSIST=0: one block an item) */
	int q4_split;                  /* q4_splits may cut K in any count of ranges that fills the GPU best (not batch-
	                                * invariant: the default without deterministic; LMD_CUDA_Q4_SPLIT=0: the 8 slices) */
	float *q4_part;                /* matmul_q4's sums of a product's K ranges (q4_splits; grown, never shrunk) */
	size_t q4_part_cap;            /* bytes */
	/* prefill runs of the step (>= BLAS_RUN consecutive tokens of one sequence): [first row, length] pairs,
	 * for matmul (cuBLAS per run); cleared by sync, when the step is over */
	int *runs, nruns, runs_cap;
	/* decode steps (every sequence one token, every row's logits wanted): items and splits made by step_begin */
	int dec_step, dec_splits;
	const struct attn_item *d_dec_items;
	/* CUDA graphs of decode steps (LMD_CUDA_GRAPH=0: off) */
	int graphs;
	long gen;                      /* bumped when d_meta, part or a padding scratch moves */
	int gmode;                     /* this step: G_EAGER, G_CAPTURE or G_REPLAY */
	struct graph_ent *gcur;        /* the entry this step captures or replays */
	int gops;
	uint64_t gsig;
	long gclock;
	struct graph_ent gcache[GRAPHS];
	long g_captured, g_replayed;   /* counts, for LMD_CUDA_PROFILE's line */
	int pdl;                       /* pdl_launch: programmatic dependent launch (LMD_CUDA_PDL=0: off) */
	int no_fuse;                   /* LMD_CUDA_FUSE=0: rope_kv_store as rope, then kv_store (for comparison) */
};
enum { G_EAGER, G_CAPTURE, G_REPLAY };

/*
 * Programmatic dependent launch (sm_90): a kernel started by pdl_launch may be scheduled while the kernel
 * before it in the stream still runs. It calls pdl_wait() before it touches anything an earlier kernel
 * writes or reads (before the wait it may only read weights), then pdl_trigger(), which lets the next
 * kernel be scheduled. Both are no-ops in a kernel launched the ordinary way, so every kernel that
 * pdl_launch starts begins with them (pdl_start) and may also be launched with <<< >>>.
 */
__device__ __forceinline__ void pdl_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_start()
{
	pdl_wait();
	pdl_trigger();
}

/* kernel<<<grid, block, smem, c->st>>>(args...), programmatically dependent on the kernel before it when c->pdl */
template <typename... P, typename... A>
static inline void pdl_launch(struct cuda_ctx *c, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, A... args)
{
	cudaLaunchAttribute at[1];
	at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
	at[0].val.programmaticStreamSerializationAllowed = 1;
	cudaLaunchConfig_t cfg = {};
	cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = c->st;
	cfg.attrs = at, cfg.numAttrs = c->pdl ? 1 : 0;
	cudaLaunchKernelEx(&cfg, kernel, ((P)args)...);
}

/* A persistent grid: blocks of 256 threads of kernel K (smem: its dynamic shared memory, the same at every launch),
 * as many as the GPU holds at once, at most want. */
template <auto K>
static inline unsigned resident_grid(struct cuda_ctx *c, long want, size_t smem = 0)
{
	static int occ;  // blocks of K one SM holds (the same on every device of a process: one kind of GPU)
	if (!occ && (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, K, 256, smem) != cudaSuccess || occ < 1)) {
		cudaGetLastError();  // not a launch's error
		occ = 1;
	}
	long grid = (long)occ * c->sms;
	return (unsigned)(want < grid ? want : grid);
}
#define BLAS_RUN 64
#define FQ_SCRATCH ((size_t)256 << 20)
#define PAD_ROWS 128
#define Q4_STREAM_ROWS 32  /* q4_stream up to 32 rows, q4_piped above: the fastest at each row count measured */
#define Q4_RING4_KB 64     /* q4_stream's ring of 4 from 64 tiles of input (the down projection; bench/results) */
#define Q4_BLAS_ROWS 96    /* the dequantized weight through cuBLAS from 96 rows (bench/results: faster than q4_piped) */

#define GEMV_ROWS 4  /* the default's 16-bit products of up to this many rows through gemv (LMD_CUDA_GEMV) */

/* dtype codes the kernels switch on (the enum lmd_dtype values) */
#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2

/* c += a b on the tensor cores: m16n8k16, 16-bit a and b (bf16 when BF, else f16), f32 c (PTX's fragments). */
template <bool BF>
__device__ __forceinline__ void mma16816(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
					 uint32_t b1)
{
	if (BF)
		asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
			     "{%0,%1,%2,%3};\n"
			     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
			     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
	else
		asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
			     "{%0,%1,%2,%3};\n"
			     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
			     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* 16 bytes global -> shared, asynchronously; zeros instead when !ok (gmem is then not read). */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool ok)
{
	unsigned s = (unsigned)__cvta_generic_to_shared(smem);
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(ok ? 16 : 0));
}

__device__ __forceinline__ float ld(const void *p, int dt, size_t i)
{
	if (dt == DT_F16)
		return __half2float(((const __half *)p)[i]);
	if (dt == DT_BF16)
		return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
	return ((const float *)p)[i];
}

__device__ __forceinline__ void st(void *p, int dt, size_t i, float v)
{
	if (dt == DT_F16)
		((__half *)p)[i] = __float2half_rn(v);
	else if (dt == DT_BF16)
		((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
	else
		((float *)p)[i] = v;
}

__device__ __forceinline__ float rnd(float v, int dt)
{
	if (dt == DT_F16)
		return __half2float(__float2half_rn(v));
	if (dt == DT_BF16)
		return __bfloat162float(__float2bfloat16_rn(v));
	return v;
}

/* silu_mul's element: silu(g) rounded to y's dtype yt, times u (g, u: gu's values, already of gu's dtype) */
__device__ __forceinline__ float silu_of(float g, float u, int yt) { return rnd(g / (1.0f + expf(-g)), yt) * u; }

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

static inline int64_t t_rows(const struct lmd_tensor *t)  // every dimension but the last (no division: a 0 there is fine)
{
	int64_t r = 1;
	for (int i = 0; i < t->ndim - 1; i++)
		r *= t->shape[i];
	return r;
}

static inline int64_t t_cols(const struct lmd_tensor *t)
{
	return t->shape[t->ndim - 1];
}

static inline int float_dt(enum lmd_dtype t)
{
	return t == LMD_F32 || t == LMD_F16 || t == LMD_BF16;
}

/* launchers (elementwise.cu, matmul.cu, attention.cu); each checks shapes and returns LMD_EINVAL on a mismatch */
int lmd_cuda_embed(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *table, struct lmd_err *err);
int lmd_cuda_rmsnorm(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *g,
		     float eps, struct lmd_err *err);
int lmd_cuda_add_rmsnorm(struct cuda_ctx *c, struct lmd_tensor *y, struct lmd_tensor *x, const struct lmd_tensor *r,
			 const struct lmd_tensor *g, float eps, struct lmd_err *err);
int lmd_cuda_rope(struct cuda_ctx *c, struct lmd_tensor *qkv, const struct lmd_attn_dims *d, struct lmd_err *err);
int lmd_cuda_rope_kv_store(struct cuda_ctx *c, struct lmd_tensor *qkv, struct lmd_kvcache *kv, int layer,
			   const struct lmd_attn_dims *d, struct lmd_err *err);
int lmd_cuda_kv_store(struct cuda_ctx *c, struct lmd_kvcache *kv, int layer, const struct lmd_tensor *qkv,
		      const struct lmd_attn_dims *d, struct lmd_err *err);
int lmd_cuda_silu_mul(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *gu, struct lmd_err *err);
int lmd_cuda_gather_rows(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *x, int first,
			 struct lmd_err *err);
int lmd_cuda_matmul(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
		    const struct lmd_tensor *bias, struct lmd_err *err);
/*
 * The gate_up op (backend.h) in one kernel, the products' sums going straight into silu_mul's formula (the same
 * bits as the two): 1 (nothing done) where no fused kernel applies (see each); a 16-bit w (matmul.cu, gemv) or an
 * int4 one (matmul-q4.cu, q4_stream).
 */
int lmd_cuda_gate_up_fused(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *gu, const struct lmd_tensor *x,
			   const struct lmd_tensor *w, struct lmd_err *err);
int lmd_cuda_gate_up_q4_fused(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *gu,
			      const struct lmd_tensor *x, const struct lmd_tensor *w, const struct lmd_tensor *s,
			      const struct lmd_tensor *z, int group, struct lmd_err *err);
/* int4 weights (matmul-q4.cu): the backend's layout made from q4.h's, and the product over it */
int lmd_cuda_weight_q4(struct cuda_ctx *c, struct lmd_tensor *dw, struct lmd_tensor *ds, struct lmd_tensor *dz,
		       const struct lmd_tensor *w, const struct lmd_tensor *s, const struct lmd_tensor *z, int group,
		       struct lmd_err *err);
int lmd_cuda_matmul_q4(struct cuda_ctx *c, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
		       const struct lmd_tensor *s, const struct lmd_tensor *z, int group, const struct lmd_tensor *bias,
		       struct lmd_err *err);
/* y[R, N] = x · wᵀ (+ bias) through cuBLAS at exactly this shape (x and w 16-bit of one dtype; y that or f32). */
int lmd_cuda_blas(struct cuda_ctx *c, void *y, enum lmd_dtype yt, const void *x, enum lmd_dtype xt, const void *w,
		  const void *bias, int bt, int64_t R, int64_t N, int64_t K, struct lmd_err *err);
/* The device copy of kv's offline parameters of layer ([2][KV][2]); *out NULL for an online cache. */
int lmd_cuda_kv_params(struct cuda_ctx *c, const struct lmd_kvcache *kv, int layer, const float **out,
		       struct lmd_err *err);
/* Device memory for t (shape and dtype set), counted as weights. */
int lmd_cuda_alloc_weight(struct cuda_ctx *c, struct lmd_tensor *t, struct lmd_err *err);
int lmd_cuda_attention(struct cuda_ctx *c, struct lmd_tensor *att, const struct lmd_tensor *qkv,
		       const struct lmd_kvcache *kv, int layer, const struct lmd_attn_dims *d, struct lmd_err *err);
/* Bytes of device memory from p to the end of the alloc'd tensor holding it, padding room included; 0 if none. */
size_t lmd_cuda_room(const struct cuda_ctx *c, const void *p);
/*
 * Room for need bytes at *p, a device buffer that recorded graphs may point into (grown, never shrunk;
 * *cap in bytes): a new one waits for the stream, makes old graphs stale, and is refused while a graph
 * is being recorded (the step with the same key ran as called first and made the room).
 */
int lmd_cuda_grow(struct cuda_ctx *c, void **p, size_t *cap, size_t need, struct lmd_err *err);
/* A decode step's attention items (one per token) into items [s->n]; returns the most splits any has. */
int lmd_cuda_decode_items(const struct lmd_step *s, struct attn_item *items);
int lmd_cuda_pick(struct cuda_ctx *c, struct lmd_tensor *head, struct lmd_tensor *cand, const struct lmd_tensor *logits,
		  const float *spread, const int32_t *top_k, struct lmd_err *err);
/* once at open: kernel attributes (dynamic shared memory limits) */
int lmd_cuda_attention_init(struct cuda_ctx *c, struct lmd_err *err);
int lmd_cuda_matmul_init(struct cuda_ctx *c, struct lmd_err *err);
int lmd_cuda_matmul_q4_init(struct cuda_ctx *c, struct lmd_err *err);

#endif
