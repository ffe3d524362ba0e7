/**
 * The paged KV cache: a pool of blocks of block_len tokens, per-sequence block tables, a free
 * list and reference counts (so a block can later be shared by sequences with a common prefix).
 * The same layout serves every backend; the pool tensors live in the backend's memory.
 *
 * Layout, per layer, one tensor for K and one for V:
 *   k[layer], v[layer]   [nblocks, kv_heads, block_len, head_dim] in the cache dtype
 * so token t of a sequence is at block table[t / block_len], row t % block_len; one head of one
 * block is a contiguous [block_len, head_dim] tile (what a decode kernel streams).
 *
 * Quantized KV (lmd_kvcache_set_quant; --quant-policy 8 or 4):
 *   k[layer], v[layer]   int8: [nblocks, kv_heads, block_len, head_dim] LMD_U8 (0..255)
 *                        int4: [nblocks, kv_heads, block_len, head_dim/2] LMD_U8 (two per byte, low first)
 *   kq[layer], vq[layer] [nblocks, kv_heads, block_len, 2] LMD_F32: per token, per head scale, zero
 * x̂ = q * scale + zero. Online (LMDeploy's, per token per head, asymmetric): over the head_dim values
 * scale = (max - min) / (2^bits - 1), zero = round(min / scale) * scale, q = clamp(round((x - zero) / scale)).
 * Offline (params given): scale and zero fixed per layer, K or V and head, stored in each token's slot.
 *
 * The block manager (alloc/ref/unref, sequences) is host-side bookkeeping only. Prefix sharing
 * (later) must share only full blocks: there is no copy-on-write, so a sequence must never append
 * into a block whose reference count is above one.
 */
#ifndef LMD_KVCACHE_H
#define LMD_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "err.h"
#include "tensor.h"

enum lmd_kv_quant { LMD_KV_NONE = 0, LMD_KV_INT4 = 4, LMD_KV_INT8 = 8 };

struct lmd_kvcache {
	int layers, kv_heads, head_dim;
	int block_len;                /* tokens per block (cache_block_seq_len) */
	int nblocks;                  /* blocks in the pool */
	enum lmd_dtype dtype;         /* element type of k and v (the compute dtype) */
	enum lmd_kv_quant quant;      /* LMD_KV_NONE: k and v hold the dtype */
	struct lmd_tensor *k, *v;     /* owned array of layers, data in the backend's memory */
	struct lmd_tensor *kq, *vq;   /* owned array of layers when quantized: per token, per head scale, zero */
	float *params;                /* owned [layers][2][kv_heads][2] offline scale, zero (K then V); NULL = online */
	int32_t *refs;                /* owned [nblocks]: references of each block (0 = free) */
	int32_t *free_list;           /* owned [nblocks]: a stack of free block ids */
	int nfree;
	struct lmd_backend *be;       /* borrowed */
};

/**
 * Make a pool of nblocks blocks in be's memory. A zeroed struct is safe to free.
 */
int lmd_kvcache_init(struct lmd_kvcache *kv, struct lmd_backend *be, int layers, int kv_heads, int head_dim,
		     int block_len, int nblocks, enum lmd_dtype dtype, struct lmd_err *err);
void lmd_kvcache_free(struct lmd_kvcache *kv);

/** Bytes of one block over all layers (K and V): for memory reports and pool sizing. */
size_t lmd_kvcache_block_bytes(int layers, int kv_heads, int head_dim, int block_len, enum lmd_dtype dtype);

/** The same for a quantized cache (quant LMD_KV_NONE = lmd_kvcache_block_bytes). */
size_t lmd_kvcache_block_bytes_q(int layers, int kv_heads, int head_dim, int block_len, enum lmd_dtype dtype,
				 enum lmd_kv_quant quant);

/**
 * Switch a freshly made pool to quantized storage (reallocating k and v, adding kq and vq). params
 * (copied; may be NULL for online quantization) is [layers][2][kv_heads][2]: scale and zero of K then V.
 * LMD_EINVAL for int4 with an odd head_dim. Call before any block is used.
 */
int lmd_kvcache_set_quant(struct lmd_kvcache *kv, enum lmd_kv_quant quant, const float *params, struct lmd_err *err);

/** Blocks free now. */
int lmd_kvcache_free_blocks(const struct lmd_kvcache *kv);

/** Take a free block (refcount 1); -1 when none is free. */
int lmd_kvcache_block_alloc(struct lmd_kvcache *kv);
/** Add a reference to a block in use (prefix sharing). */
void lmd_kvcache_block_ref(struct lmd_kvcache *kv, int block);
/** Drop a reference; the block returns to the free list at 0. */
void lmd_kvcache_block_unref(struct lmd_kvcache *kv, int block);

/**
 * One sequence's view of the cache: the blocks holding its tokens 0..len-1. A zeroed struct is an
 * empty sequence. Whoever owns the sequence (the scheduler, a test) calls lmd_kvseq_release when
 * it is done or preempted; re-running the same tokens afterwards recomputes them.
 */
struct lmd_kvseq {
	int len;          /* tokens whose K/V are in the cache */
	int nblocks, cap;
	int32_t *blocks;  /* owned [cap]: block ids, nblocks used */
};

/** Blocks that must still be allocated for seq to hold new_len tokens (0 when it already can). */
int lmd_kvseq_blocks_needed(const struct lmd_kvcache *kv, const struct lmd_kvseq *seq, int new_len);
/**
 * Allocate blocks so seq can hold new_len tokens (seq->len is not changed: the forward sets it).
 * LMD_ENOMEM (err names the counts) when the pool has too few free blocks; nothing changes then.
 */
int lmd_kvseq_reserve(struct lmd_kvcache *kv, struct lmd_kvseq *seq, int new_len, struct lmd_err *err);
/** Forget tokens from len on (len <= seq->len); blocks no longer needed are unreferenced. */
void lmd_kvseq_truncate(struct lmd_kvcache *kv, struct lmd_kvseq *seq, int len);
/** Unreference every block and free the table; seq becomes empty (and may be reused). */
void lmd_kvseq_release(struct lmd_kvcache *kv, struct lmd_kvseq *seq);

#endif
