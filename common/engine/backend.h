/**
 * The backend interface: the ops one forward pass needs, as a table of function pointers
 * plus a context (man lmd(7); aesthetics C10). The model's forward (model.c) is written once
 * against it. Implementations:
 *   "ref"   plain CPU reference of every op (ops-cpu.c): the definition of correct
 *   "cpu"   the fast CPU backend (backend-cpu.c): threads, vectorized matmul and attention
 *   "cuda"  the GPU backend (gpu/backend-cuda.cu; gpu/cuda.h): LMD_ENODEV without a GPU or without nvcc
 *
 * Memory. Every tensor an op reads or writes lives in the backend's memory (made by alloc or
 * weight). For the CPU backends that is ordinary host memory; for CUDA it is device memory,
 * so the caller never dereferences t->data itself: it uses upload/download. A view that keeps
 * the first rows of an allocation (same data, smaller shape[0]) is a valid operand: the model
 * allocates its workspace for max_tokens rows and runs each step on the first n. Tensors are
 * row-major and dense (no strides); 2-D unless said otherwise.
 *
 * Dtypes. Activations are stored in the compute dtype (f32, f16 or bf16): every op reads its
 * inputs, computes in fp32 and rounds its output to the output tensor's dtype, as a GPU kernel
 * does. Weights may be f32, f16 or bf16 independently of the compute dtype. Matmul and attention
 * accumulate in fp32.
 *
 * Steps. A forward pass is one "step": a batch of n tokens from nseq sequences (prefill chunks
 * and decode tokens mixed). step_begin hands the backend the step's metadata (token ids,
 * positions, block tables, rotary frequencies), which the ops below then use implicitly; the
 * host arrays in struct lmd_step must stay valid until the next step_begin. A backend may defer a
 * step's ops until its first download, sync or upload (the CUDA backend replays recorded decode
 * steps as one graph), so the ops' results are only defined from then on.
 *
 * Shapes (n = tokens in the step, H = query heads, KV = key/value heads, D = head_dim):
 *   qkv  [n, (H + 2*KV) * D]   q heads, then k heads, then v heads (HF's head order; rotary pairs
 *                               element i with i + D/2 inside each head)
 *   att  [n, H * D]
 *   gu   [n, 2 * inter]        gate (w1) columns then up (w3) columns
 * Every op returns LMD_OK or a negative enum lmd_status with err filled.
 */
#ifndef LMD_BACKEND_H
#define LMD_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "tensor.h"

struct lmd_kvcache;

/** One forward step's metadata (host memory, borrowed by the backend until the next step_begin). */
struct lmd_step {
	int n;                       /* tokens in the step */
	const int32_t *tokens;       /* [n] token ids */
	const int32_t *pos;          /* [n] position of each token in its sequence (0-based) */
	const int32_t *seq;          /* [n] which of the step's sequences the token belongs to: 0..nseq-1 */
	int nseq;
	const int32_t *block_table;  /* [nseq][max_blocks] KV block ids of each sequence, in order */
	int max_blocks;
	int rot_half;                /* D/2: length of one row of inv_freq */
	const float *inv_freq;       /* [nseq][rot_half] rotary inverse frequencies of each sequence's tokens
	                              * (scaling already applied: linear, llama3, dynamic NTK) */
	int nout;                    /* rows whose logits are wanted */
	const int32_t *out_rows;     /* [nout] token rows (0..n-1), ascending */
	/*
	 * Nonzero: the ops this step calls, and their tensors, are a function of (replay, the step's shape)
	 * alone, so a backend may record a decode step once and replay the recording (CUDA graphs). The
	 * model sets its own id here; 0 (a tap is set) means every op must run as called.
	 */
	uint64_t replay;
};

/** Attention dimensions, passed to the ops that need them. */
struct lmd_attn_dims {
	int heads, kv_heads, head_dim;
	float scale;                 /* softmax scale, 1/sqrt(head_dim) */
};

/** A backend's device memory (bytes; mem_info). */
struct lmd_mem_info {
	size_t total;          /* the device's memory */
	size_t free;           /* free on the device now */
	size_t free_at_open;   /* free just after the backend opened (its context, library handles and workspace made) */
	size_t allocated;      /* held through alloc, weight and weight_q4 (weights, KV pool, the model's workspace) */
	size_t weights;        /* of which weights */
	size_t internal;       /* the backend's own buffers made since open (step metadata, attention scratch, ...) */
	size_t reserved;       /* the backend's own buffers made at open, before free_at_open (cuBLAS's workspace) */
};

/** A product's weight as matmul and matmul_q4 take it: scales NULL for a 16-bit or f32 w; bias NULL for none. */
struct lmd_linear {
	const struct lmd_tensor *w, *scales, *zeros, *bias;
	int group;
};

struct lmd_backend_ops {
	const char *name;            /* "ref", "cpu", "cuda" */
	int weights_in_place;        /* 1: weight() keeps pointing at the host buffer (the caller keeps it alive) */
	int kv_quant;                /* 1: kv_store and attention take a quantized cache (kvcache.h, lmd_kvcache_set_quant) */
	void (*close)(void *ctx);

	/* --- memory --- */
	/** Allocate t (dtype, ndim, shape set by the caller; t->data filled). Contents undefined. */
	int (*alloc)(void *ctx, struct lmd_tensor *t, struct lmd_err *err);
	/** Free what alloc made; t->data becomes NULL. NULL data is fine. */
	void (*release)(void *ctx, struct lmd_tensor *t);
	/** Make a weight resident: dst gets src's shape and dtype; src->data is host memory. */
	int (*weight)(void *ctx, struct lmd_tensor *dst, const struct lmd_tensor *src, struct lmd_err *err);
	/** Copy nbytes between host memory and a backend tensor at byte offset off. */
	int (*upload)(void *ctx, struct lmd_tensor *dst, size_t off, const void *src, size_t nbytes,
		      struct lmd_err *err);
	int (*download)(void *ctx, void *dst, const struct lmd_tensor *src, size_t off, size_t nbytes,
			struct lmd_err *err);
	/** Wait until every op queued so far has finished. This ends the step: until the next step_begin, a
	 *  matmul treats its rows as unrelated to the step's tokens (the CUDA backend's prefill-run path). */
	int (*sync)(void *ctx, struct lmd_err *err);
	/** The device's memory and what this backend holds of it; NULL in a backend that uses host memory. */
	int (*mem_info)(void *ctx, struct lmd_mem_info *m, struct lmd_err *err);

	/* --- a step --- */
	int (*step_begin)(void *ctx, const struct lmd_step *s, struct lmd_err *err);

	/* --- ops --- */
	/** y[n, hidden] = table[step tokens]; table [vocab, hidden]. */
	int (*embed)(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *table, struct lmd_err *err);
	/** y[r] = x[r] / rms(x[r]) * g for every row; x, y [rows, hidden], g [hidden]. y may equal x. */
	int (*rmsnorm)(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *g,
		       float eps, struct lmd_err *err);
	/** x += r (rounded to x's dtype), then y = rmsnorm(x) * g. The fused residual add. */
	int (*add_rmsnorm)(void *ctx, struct lmd_tensor *y, struct lmd_tensor *x, const struct lmd_tensor *r,
			   const struct lmd_tensor *g, float eps, struct lmd_err *err);
	/** y[rows, out] = x[rows, in] · w[out, in]ᵀ (+ bias[out] when not NULL); fp32 accumulation. */
	int (*matmul)(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
		      const struct lmd_tensor *bias, struct lmd_err *err);
	/** Rotate the q and k heads of qkv in place at the step's positions with its frequencies. */
	int (*rope)(void *ctx, struct lmd_tensor *qkv, const struct lmd_attn_dims *d, struct lmd_err *err);
	/** Write the k and v heads of qkv into the cache of layer at the tokens' positions. */
	int (*kv_store)(void *ctx, struct lmd_kvcache *kv, int layer, const struct lmd_tensor *qkv,
			const struct lmd_attn_dims *d, struct lmd_err *err);
	/** rope, then kv_store, as one op (the engine's; the two alone are for tests and backends' own use). */
	int (*rope_kv_store)(void *ctx, struct lmd_tensor *qkv, struct lmd_kvcache *kv, int layer,
			     const struct lmd_attn_dims *d, struct lmd_err *err);
	/**
	 * att = causal attention of the q heads of qkv over the cache of layer: token at position p of a
	 * sequence sees that sequence's cached positions 0..p (kv_store of this step comes first). GQA:
	 * query head h uses kv head h / (H/KV).
	 */
	int (*attention)(void *ctx, struct lmd_tensor *att, const struct lmd_tensor *qkv, const struct lmd_kvcache *kv,
			 int layer, const struct lmd_attn_dims *d, struct lmd_err *err);
	/** y[rows, inter] = silu(gu[:, :inter]) * gu[:, inter:]. */
	int (*silu_mul)(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *gu, struct lmd_err *err);
	/**
	 * gu = x · wᵀ (matmul_q4 when scales is not NULL, else matmul; w [2 inter, in]: the gate rows, then the up
	 * rows; no bias), then y = silu_mul(gu), as one op (the engine's; a backend may fuse the two, with the same
	 * bits). gu [rows, 2 inter] is room for the product; after the op its contents are undefined.
	 */
	int (*gate_up)(void *ctx, struct lmd_tensor *y, struct lmd_tensor *gu, const struct lmd_tensor *x,
		       const struct lmd_tensor *w, const struct lmd_tensor *scales, const struct lmd_tensor *zeros, int group,
		       struct lmd_err *err);
	/**
	 * y[rows, out] = x[rows, in] · Wᵀ (+ bias) for an int4 weight, W[o][i] = (q - zero) * scale: w, scales
	 * and zeros as weight_q4 made them, or (weight_q4 NULL) in the layout of q4.h made resident by weight():
	 * w LMD_U8 [out, in/2] (two nibbles a byte, low first), scales LMD_F16 [out, in/group], zeros LMD_U8
	 * [out, in/group]. out and in are y's and x's columns. fp32 accumulation. NULL in a backend without it.
	 */
	int (*matmul_q4)(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
			 const struct lmd_tensor *scales, const struct lmd_tensor *zeros, int group,
			 const struct lmd_tensor *bias, struct lmd_err *err);
	/**
	 * Make an int4 weight resident in the backend's own layout for matmul_q4 (NULL: weight() of each of
	 * q4.h's three tensors is used as it is). w, scales, zeros: q4.h's layout in host memory; dw, ds, dz
	 * get the backend's tensors (their shapes and dtypes are the backend's, lmd(7)), which only matmul_q4
	 * and release take.
	 */
	int (*weight_q4)(void *ctx, struct lmd_tensor *dw, struct lmd_tensor *ds, struct lmd_tensor *dz,
			 const struct lmd_tensor *w, const struct lmd_tensor *scales, const struct lmd_tensor *zeros, int group,
			 struct lmd_err *err);
	/** y[j] = x[step out_rows[first + j]] for j < y->shape[0]: the rows that get logits. */
	int (*gather_rows)(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, int first,
			   struct lmd_err *err);
	/**
	 * Reduce each row of logits LMD_F32 [rows, vocab] to what sampling needs (sampler.h,
	 * lmd_sample_spread), so that only that crosses to the host. spread, top_k: host memory [rows]
	 * (top_k may be NULL: 0 for every row).
	 *   head LMD_I32 [rows, 2]      {best, count}: best = the first index of the largest value (NaN
	 *                               never wins; 0 when all are NaN: lmd_argmax's result); count = how
	 *                               many i have logits[i] >= cut, cut = logits[best] - spread[r] (that
	 *                               float subtraction), raised to the top_k[r]-th largest value when
	 *                               top_k[r] > 0 (sampler.h, lmd_sample_cut); 0 when spread[r] < 0 or NaN
	 *                               (argmax only)
	 *   cand LMD_I32 [rows, 2*cap]  when count <= cap: the first count pairs (value's f32 bits, index)
	 *                               are those i, in any order; when count > cap, undefined
	 */
	int (*pick)(void *ctx, struct lmd_tensor *head, struct lmd_tensor *cand, const struct lmd_tensor *logits,
		    const float *spread, const int32_t *top_k, struct lmd_err *err);
};

struct lmd_backend {
	const struct lmd_backend_ops *ops;  /* static table */
	void *ctx;                          /* owned: freed by lmd_backend_close */
};

struct lmd_backend_opts {
	int threads;  /* CPU worker threads including the caller; 0 = all online cores */
	int device;   /* CUDA device index */
	int deterministic;  /* 1: a row's results never depend on the other rows of its step (batch invariance; the
	                     * CPU backends always are, CUDA then gives up its fastest products); 0 = the fastest */
};

/**
 * Open a backend by name: "auto" (CUDA when a GPU and the CUDA backend exist, else "cpu"), "cpu",
 * "ref", "cuda" (LMD_ENODEV when no usable GPU or no CUDA backend). opts may be NULL.
 * A zeroed struct is safe to close.
 */
int lmd_backend_open(struct lmd_backend *b, const char *name, const struct lmd_backend_opts *opts,
		     struct lmd_err *err);
void lmd_backend_close(struct lmd_backend *b);

/** y = x · wᵀ (+ bias) through the table's matmul, or matmul_q4 when lin->scales is not NULL. */
int lmd_linear_apply(const struct lmd_backend_ops *ops, void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x,
		     const struct lmd_linear *lin, struct lmd_err *err);

/** The gate_up op as its two ops (matmul or matmul_q4, then silu_mul) of the table ops, for a backend's own use. */
int lmd_gate_up_two(const struct lmd_backend_ops *ops, void *ctx, struct lmd_tensor *y, struct lmd_tensor *gu,
		    const struct lmd_tensor *x, const struct lmd_tensor *w, const struct lmd_tensor *scales,
		    const struct lmd_tensor *zeros, int group, struct lmd_err *err);

/** Allocate a 2-D tensor [rows, cols] of dtype in b's memory. */
int lmd_backend_alloc2(struct lmd_backend *b, struct lmd_tensor *t, enum lmd_dtype dtype, int64_t rows,
		       int64_t cols, struct lmd_err *err);

/** The implementations' constructors (used by lmd_backend_open). */
int lmd_backend_ref_open(struct lmd_backend *b, const struct lmd_backend_opts *opts, struct lmd_err *err);
int lmd_backend_cpu_open(struct lmd_backend *b, const struct lmd_backend_opts *opts, struct lmd_err *err);
/** The instruction set the "cpu" backend picked ("avx512", "avx2", "c"; LMD_CPU_ISA forces a lower one); NULL for others. */
const char *lmd_backend_cpu_isa(const struct lmd_backend *b);

#endif
