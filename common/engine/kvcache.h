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
 *   kq[layer], vq[layer] [nblocks, kv_heads, block_len, 2] in the cache's dtype: per token, per head scale, zero
 * x̂ = q * scale + zero (fp32 arithmetic). Online (per token per head, asymmetric, as LMDeploy's), over the
 * head_dim values x, with scale and zero values of the dtype (round_t: to the dtype, on the side named):
 *   zero  = round_t(min, down)        scale = round_t(max(LMD_KV_MIN_SCALE, (max - zero) / (2^bits - 1)), up)
 *   q     = clamp(round((x - zero) / scale), 0, 2^bits - 1)
 * so every x lies in [zero, zero + (2^bits - 1) scale] and is off by at most half a step. (LMDeploy puts
 * zero on the grid, round(min / scale) * scale; stored in 16 bits that grid is lost anyway, and its
 * rounding could push x outside the range: a clamp, many steps off.) Offline (params given): scale and
 * zero fixed per layer, K or V and head (rounded to the dtype, to nearest), stored in each token's slot.
 * Bytes per token and head: head_dim (int8) or head_dim/2 (int4), plus 2 of the dtype: with fp16 at
 * head_dim 128, 132 and 68 against 256, so int8 holds 1.94x and int4 3.76x the tokens of fp16.
 *
 * The block manager (alloc/ref/unref, sequences) is host-side bookkeeping only, the same for every
 * backend.
 *
 * The prefix cache (lmd_kvcache_enable_prefix; --enable-prefix-caching). A full block a sequence has
 * computed is registered (lmd_kvseq_commit) under the chain hash of its whole token prefix:
 * hash(i) = lmd_kvcache_hash(hash(i - 1), the block's tokens), hash(-1) = 0. Another sequence whose
 * tokens start the same way attaches it (lmd_kvseq_attach) instead of computing it: shared read-only,
 * reference counted. Only full blocks are shared and a sequence only appends past its full blocks, so
 * there is no copy-on-write. A hit is verified, never trusted to the hash: the block's tokens are
 * compared, and its parent (the block before it when it was computed) must be the very registration
 * the sequence matched one block earlier (uids are never reused), so by induction the whole prefix
 * is the same. A registered block no sequence references stays cached and counts as free: the pool
 * takes truly free blocks first and evicts cached ones least recently released first (a released
 * sequence's last block before its first) only when it needs them. Unit test: t/unit/test-kvcache.c.
 */
#ifndef LMD_KVCACHE_H
#define LMD_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "err.h"
#include "tensor.h"

enum lmd_kv_quant { LMD_KV_NONE = 0, LMD_KV_INT4 = 4, LMD_KV_INT8 = 8 };
#define LMD_KV_MIN_SCALE 0x1p-24f  /* the smallest online scale (fp16's smallest subnormal) */

struct lmd_kvcache {
	int layers, kv_heads, head_dim;
	int block_len;                /* tokens per block (cache_block_seq_len) */
	int nblocks;                  /* blocks in the pool */
	enum lmd_dtype dtype;         /* element type of k and v (the compute dtype) */
	enum lmd_kv_quant quant;      /* LMD_KV_NONE: k and v hold the dtype */
	struct lmd_tensor *k, *v;     /* owned array of layers, data in the backend's memory */
	struct lmd_tensor *kq, *vq;   /* owned array of layers when quantized: per token, per head scale, zero (dtype) */
	float *params;                /* owned [layers][2][kv_heads][2] offline scale, zero (K then V); NULL = online */
	int32_t *refs;                /* owned [nblocks]: references of each block (0 = free or cached) */
	int32_t *free_list;           /* owned [nblocks]: a stack of free block ids (not cached) */
	int nfree;
	struct lmd_backend *be;       /* borrowed */
	/* the prefix cache: NULL arrays when off */
	struct lmd_kvblock *blk;      /* owned [nblocks]: each block's registration */
	int32_t *btoks;               /* owned [nblocks][block_len]: the tokens of each registered block */
	int32_t *buckets;             /* owned [nbuckets]: first registered block of each hash bucket, -1 none */
	int nbuckets;                 /* a power of two */
	int lru_head, lru_tail;       /* registered blocks with no reference, least recently released first; -1 none */
	int ncached;                  /* blocks on that list */
	uint64_t uids;                /* registrations so far */
};

/** A block's registration in the prefix cache. */
struct lmd_kvblock {
	uint64_t hash;                /* chain hash of the tokens of its sequence up to its end */
	uint64_t uid;                 /* unique per registration; 0 = not registered */
	uint64_t parent;              /* uid of the block before it in its sequence; 0 for a first block */
	int32_t bucket_next;          /* the next block in its hash bucket, -1 = end */
	int32_t lru_prev, lru_next;   /* neighbours on the LRU list while unreferenced, -1 = end */
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

/**
 * Turn the prefix cache on (see above). Call before any block is used. LMD_ENOMEM when the
 * bookkeeping (about 48 + 4 * block_len bytes a block, host memory) cannot be allocated.
 */
int lmd_kvcache_enable_prefix(struct lmd_kvcache *kv, struct lmd_err *err);

/** The chain hash of a block of n tokens after a prefix whose hash is prev (0 before the first block). */
uint64_t lmd_kvcache_hash(uint64_t prev, const int32_t *toks, int n);

/** Blocks free now, cached ones that no sequence references included (they are taken when needed). */
int lmd_kvcache_free_blocks(const struct lmd_kvcache *kv);
/** Of those, the cached ones: blocks kept only by the prefix cache. nblocks - free = blocks in use. */
int lmd_kvcache_cached_blocks(const struct lmd_kvcache *kv);

/** Take a free block (refcount 1), evicting the least recently used cached one when no other is free; -1 when none is free. */
int lmd_kvcache_block_alloc(struct lmd_kvcache *kv);
/** Add a reference to a block in use, or to a cached unreferenced one (which leaves the LRU list). */
void lmd_kvcache_block_ref(struct lmd_kvcache *kv, int block);
/** Drop a reference; at 0 the block returns to the free list, or when registered, to the LRU list's recent end. */
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
	int ncached;      /* leading blocks registered in the prefix cache (committed or attached) */
};

/** Blocks that must still be allocated for seq to hold new_len tokens (0 when it already can). */
int lmd_kvseq_blocks_needed(const struct lmd_kvcache *kv, const struct lmd_kvseq *seq, int new_len);
/**
 * Allocate blocks so seq can hold new_len tokens (seq->len is not changed: the forward sets it).
 * LMD_ENOMEM (err names the counts) when the pool has too few free blocks; nothing changes then.
 */
int lmd_kvseq_reserve(struct lmd_kvcache *kv, struct lmd_kvseq *seq, int new_len, struct lmd_err *err);
/**
 * Forget tokens from len on (len <= seq->len); blocks no longer needed are unreferenced. A cached block
 * that len would cut (it is never written again) leaves the cache when seq alone holds it, else seq
 * lets it go and seq->len ends at its start, below len: those tokens are computed again.
 */
void lmd_kvseq_truncate(struct lmd_kvcache *kv, struct lmd_kvseq *seq, int len);
/** Unreference every block (its last first) and free the table; seq becomes empty (and may be reused). */
void lmd_kvseq_release(struct lmd_kvcache *kv, struct lmd_kvseq *seq);

/**
 * Prefix cache: attach the cached blocks that hold toks[seq->len ..) (toks [n]: the sequence's
 * whole token history, toks[0 .. seq->len) being what seq holds), each block verified; seq->len
 * grows by whole blocks. At least one token is always left to compute (a step needs a last token's
 * logits), so at most n - 1 tokens are cached. Only when seq ends at a block boundary with every
 * block registered (a fresh or released sequence, or one that committed all it holds) and the cache
 * is on; otherwise, or when the table cannot grow, nothing is attached. Returns the tokens attached.
 */
int lmd_kvseq_attach(struct lmd_kvcache *kv, struct lmd_kvseq *seq, const int32_t *toks, int n);
/**
 * Prefix cache: register seq's full blocks not yet registered (toks: its tokens, at least seq->len),
 * so that other sequences can attach them. No-op when the cache is off. Call after each forward.
 */
void lmd_kvseq_commit(struct lmd_kvcache *kv, struct lmd_kvseq *seq, const int32_t *toks);

#endif
