/**
 * The model: weights resident in a backend, the paged KV cache, and the forward pass written once
 * against the backend interface (backend.h). Architectures: llama, qwen2 (qkv bias, tied
 * embeddings), internlm2 (converted to canonical names by lmd-convert).
 *
 * A forward step runs a batch of tokens from several sequences at once: prefill chunks (a chunk
 * continues the sequence's cached tokens) and decode tokens, mixed. Positions are implicit: the
 * tokens of one sequence in a batch follow its cached tokens in order. Sequences join and leave
 * between steps; a sequence's K/V blocks are reserved by the forward as needed and released with
 * lmd_model_seq_release (after finishing or on preemption; re-running its tokens recomputes them).
 *
 *   struct lmd_model m = {0};
 *   lmd_model_open(&m, &backend, &dir, &opts, &err);
 *   struct lmd_kvseq s = {0};
 *   struct lmd_batch b = {0};
 *   for (i = 0; i < n; i++) lmd_batch_add(&b, &s, ids[i], i == n - 1, &err);
 *   lmd_model_forward(&m, &b, logits, &err);        // logits [1][vocab]
 *   lmd_batch_clear(&b); lmd_batch_add(&b, &s, next, 1, &err); lmd_model_forward(...);
 *   lmd_model_seq_release(&m, &s);
 *
 * One thread drives a model (forward calls are not reentrant); the backend parallelizes each op.
 */
#ifndef LMD_MODEL_H
#define LMD_MODEL_H

#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "err.h"
#include "kvcache.h"
#include "modeldir.h"
#include "tensor.h"

struct lmd_model_opts {
	enum lmd_dtype dtype;  /* compute dtype (f32, f16, bf16); LMD_DTYPE_NONE = the weights' dtype */
	int max_tokens;        /* most tokens in one step (chunked prefill + decodes); 0 = 2048 */
	int max_seqs;          /* most sequences in one step; 0 = 64 */
	int session_len;       /* most tokens in one sequence; 0 = the model's max_position_embeddings */
	int block_len;         /* KV cache_block_seq_len; 0 = 64 */
	int kv_blocks;         /* blocks in the KV pool; 0 = 4 sequences of session_len, capped at 2 GiB
	                        * but at least one sequence (the scheduler queues or preempts beyond) */
	/*
	 * Round the rotary inverse frequencies to the weights' dtype, as HF transformers does when a model
	 * built in fp32 is cast to f16/bf16 (the inv_freq buffer is cast with it; HF's dynamic NTK
	 * recomputes it in fp32 past max_position_embeddings). The references for ../shared/models/rand
	 * were made that way; the trained models' were not. 0 = exact fp32 frequencies.
	 */
	int hf_rope_rounding;
	enum lmd_kv_quant kv_quant;  /* LMD_KV_NONE, LMD_KV_INT8 or LMD_KV_INT4 (--quant-policy) */
	const float *kv_params;      /* NULL (online) or [layers][2][kv_heads][2] offline scale, zero (copied) */
	/*
	 * Share cached KV blocks between sequences with a common prefix (kvcache.h; the scheduler
	 * attaches and commits them). Ignored under dynamic NTK rotary scaling, where a token's K depends
	 * on the length of the step that computed it: m->kv.blk says whether it is on.
	 */
	int prefix_cache;
};

/** The weights of one layer, resident in the backend (fused where the ops want it). */
struct lmd_layer {
	struct lmd_tensor attn_norm;  /* [hidden] */
	struct lmd_tensor wqkv;       /* [(H + 2*KV) * D, hidden]: wq, wk, wv rows stacked */
	struct lmd_tensor bqkv;       /* [(H + 2*KV) * D] when qkv_bias, else data NULL */
	struct lmd_tensor wo;         /* [hidden, H * D] */
	struct lmd_tensor bo;         /* [hidden] when o_bias, else data NULL */
	struct lmd_tensor ffn_norm;   /* [hidden] */
	struct lmd_tensor w13;        /* [2 * inter, hidden]: w1 (gate) rows then w3 (up) rows */
	struct lmd_tensor w2;         /* [hidden, inter] */
	/*
	 * int4 weights (q4.h): when a weight above is LMD_U8 [out, in/2] its scales (LMD_F16) and zeros
	 * (LMD_U8), both [out, in/group], are here; data NULL otherwise.
	 */
	struct lmd_tensor wqkv_s, wqkv_z, wo_s, wo_z, w13_s, w13_z, w2_s, w2_z;
	int group;                    /* the int4 group size; 0 when the weights are not quantized */
};

/**
 * Points of the forward where an optional tap sees the activations (for calibration: lmd-calib,
 * AWQ). The tensor passed is in the backend's memory (download it for a GPU backend), rows =
 * the step's tokens, valid only during the call.
 */
enum lmd_tap {
	LMD_TAP_QKV_IN,  /* input of wqkv: [n, hidden] */
	LMD_TAP_QKV,     /* q, k, v after rotary: [n, (H + 2*KV) * D] (k and v as the cache stores them) */
	LMD_TAP_O_IN,    /* input of wo: [n, H * D] */
	LMD_TAP_W13_IN,  /* input of w1 and w3: [n, hidden] */
	LMD_TAP_W2_IN,   /* input of w2: [n, inter] */
	LMD_TAP_RESID,   /* the residual stream entering the layer (before its attention norm): [n, hidden] */
	LMD_TAP_COUNT,
};
typedef void (*lmd_tap_fn)(void *ctx, int layer, enum lmd_tap point, const struct lmd_tensor *t);

struct lmd_model {
	struct lmd_config cfg;        /* copy of the directory's config */
	struct lmd_backend *be;       /* borrowed: outlives the model */
	enum lmd_dtype dtype;         /* compute dtype */
	int max_tokens, max_seqs, session_len;
	int hf_rope_rounding;              /* see lmd_model_opts */
	struct lmd_attn_dims dims;
	struct lmd_tensor tok_embeddings;  /* [vocab, hidden] */
	struct lmd_tensor norm;            /* [hidden] */
	struct lmd_tensor output;          /* [vocab, hidden]; same data as tok_embeddings when tied */
	struct lmd_layer *layer;           /* owned [layers] */
	struct lmd_kvcache kv;
	size_t weight_bytes;               /* bytes of all weights as resident (tied counted once) */
	/* owned workspace (backend memory), each [max_tokens, cols] in the compute dtype */
	struct lmd_tensor x, xn, o, qkv, att, gu, h;    /* x: the residual stream; o: attention / MLP output */
	struct lmd_tensor lo;                           /* [logit_rows, hidden] rows for lm_head */
	struct lmd_tensor logits;                       /* [logit_rows, vocab] f32 */
	int logit_rows;
	/* lmd_model_forward_pick's: the backend's pick outputs, and host buffers its results borrow */
	struct lmd_tensor pick_head;                    /* [logit_rows, 2] i32: best, count */
	struct lmd_tensor pick_cand;                    /* [logit_rows, 2 * LMD_PICK_CAP] i32: (value bits, index) */
	int32_t *h_head, *h_cand;                       /* owned host copies of a chunk's: same shapes */
	float *h_val;                                   /* owned [h_cap]: the candidates of a step's rows, row after row */
	int32_t *h_idx;                                 /* owned [h_cap] */
	size_t h_cap;
	float *h_rows;                                  /* owned [h_nrows]: rows asked for whole (NaN spread), row after row */
	size_t h_nrows;                                 /* floats */
	float *h_stage;                                 /* owned [h_nstage]: a chunk's rows that cross whole, at their places */
	size_t h_nstage;                                /* floats */
	void **host;                       /* owned: host buffers of converted / fused weights */
	int nhost;
	/* owned step scratch (host) */
	int32_t *s_tokens, *s_pos, *s_seq, *s_table, *s_out;
	float *s_freq;
	uint64_t id;                       /* unique per lmd_model_open in the process (lmd_step.replay) */
	lmd_tap_fn tap;                    /* NULL, or called at every enum lmd_tap point of every layer */
	void *tap_ctx;                     /* borrowed: passed to tap */
};

/**
 * Load the weights of an open model directory (which must stay open while the model is) into be,
 * make the KV pool and the workspace. opts may be NULL (defaults). A zeroed struct is safe to close.
 */
int lmd_model_open(struct lmd_model *m, struct lmd_backend *be, const struct lmd_modeldir *dir,
		   const struct lmd_model_opts *opts, struct lmd_err *err);
void lmd_model_close(struct lmd_model *m);

/**
 * A batch for one step: tokens appended with lmd_batch_add, each belonging to a sequence (several
 * tokens of one sequence are consecutive positions following its cached ones). The batch borrows
 * the sequences. A zeroed struct is an empty batch; lmd_batch_free frees its arrays.
 */
struct lmd_batch {
	int n, cap;
	int32_t *tokens;          /* owned [cap] */
	int32_t *seq;             /* owned [cap]: index into seqs */
	uint8_t *logits;          /* owned [cap]: 1 when the token's logits are wanted */
	int nseq, seq_cap;
	struct lmd_kvseq **seqs;  /* owned array of borrowed sequences */
	int32_t *seq_new;         /* owned [seq_cap]: tokens of each sequence in this batch */
	int nout;                 /* tokens with logits wanted */
};
int lmd_batch_add(struct lmd_batch *b, struct lmd_kvseq *s, int32_t token, int want_logits, struct lmd_err *err);
void lmd_batch_clear(struct lmd_batch *b);
void lmd_batch_free(struct lmd_batch *b);

/**
 * Run one step: append the batch's tokens to their sequences' caches (reserving blocks) and write
 * the logits of the wanted tokens to logits [b->nout][vocab] (f32, host memory, in batch order).
 * Errors: LMD_EINVAL (a token id out of range, too many tokens or sequences, a sequence past
 * session_len: err names the lengths), LMD_ENOMEM when the KV pool lacks blocks (check
 * lmd_model_blocks_needed first; nothing is changed then).
 */
int lmd_model_forward(struct lmd_model *m, const struct lmd_batch *b, float *logits, struct lmd_err *err);

/**
 * What lmd_model_forward_pick hands back for a token whose logits were wanted, enough to sample it
 * (sampler.h: lmd_sample_spread says which parts a row needs). The pointers borrow buffers of the
 * model, valid until its next forward.
 */
struct lmd_pick {
	int32_t best;            /* the first index of the largest logit (lmd_argmax); -1 when that logit is not
				  * finite (a row of NaN, or +inf: broken weights), and then n is 0 */
	int n;                   /* candidates: logits >= lmd_sample_cut (when spread >= 0; else 0) */
	const float *val;        /* [n] their logits, in no particular order */
	const int32_t *idx;      /* [n] their token ids */
	const float *row;        /* [vocab] the whole row when spread was NaN, else NULL */
};

/**
 * Candidates the backend hands over per row; a row with more is downloaded whole and its
 * candidates are found on the host (same rule), so the caller never sees the difference.
 */
#define LMD_PICK_CAP 1024

/**
 * Like lmd_model_forward, but instead of the logits of each wanted token, what sampling needs of
 * them: spread [b->nout] (host, lmd_sample_spread of each row's sampling) < 0 gives the argmax only,
 * >= 0 the argmax and the candidates, NaN the argmax and the whole row; top_k [b->nout] (host, each
 * row's top_k; NULL: none) narrows the candidates to lmd_sample_cut's. out [b->nout], in batch
 * order. Only that crosses from the backend (a GPU): a greedy step downloads two ints a row.
 */
int lmd_model_forward_pick(struct lmd_model *m, const struct lmd_batch *b, const float *spread, const int32_t *top_k,
			   struct lmd_pick *out, struct lmd_err *err);

/** KV blocks a batch would still need, and the pool's free blocks. */
int lmd_model_blocks_needed(const struct lmd_model *m, const struct lmd_batch *b);
int lmd_model_free_blocks(const struct lmd_model *m);
/** Blocks sequence s needs to grow by ntokens. */
int lmd_model_seq_blocks_needed(const struct lmd_model *m, const struct lmd_kvseq *s, int ntokens);
/** Release a sequence's KV blocks (finished or preempted). */
void lmd_model_seq_release(struct lmd_model *m, struct lmd_kvseq *s);
/** Forget a sequence's tokens from len on (e.g. generated past a stop string); len <= s->len. */
void lmd_model_seq_truncate(struct lmd_model *m, struct lmd_kvseq *s, int len);

/** The rotary inverse frequencies for a sequence of seq_len tokens (HF semantics): out[head_dim/2]. */
void lmd_rope_inv_freq(const struct lmd_rope *r, int head_dim, int max_pos, int seq_len, float *out);

#endif
