/**
 * The paged KV cache's block pool and per-sequence block tables (kvcache.h).
 */
#include <stdlib.h>
#include <string.h>

#include "kvcache.h"

size_t lmd_kvcache_block_bytes(int layers, int kv_heads, int head_dim, int block_len, enum lmd_dtype dtype)
{
	return 2 * (size_t)layers * kv_heads * block_len * head_dim * lmd_dtype_size(dtype);
}

size_t lmd_kvcache_block_bytes_q(int layers, int kv_heads, int head_dim, int block_len, enum lmd_dtype dtype,
				 enum lmd_kv_quant quant)
{
	if (quant == LMD_KV_NONE)
		return lmd_kvcache_block_bytes(layers, kv_heads, head_dim, block_len, dtype);
	size_t data = quant == LMD_KV_INT8 ? (size_t)head_dim : (size_t)head_dim / 2;
	return 2 * (size_t)layers * kv_heads * block_len * (data + 2 * lmd_dtype_size(dtype));
}

int lmd_kvcache_set_quant(struct lmd_kvcache *kv, enum lmd_kv_quant quant, const float *params, struct lmd_err *err)
{
	if (quant == LMD_KV_NONE)
		return LMD_OK;
	if (quant != LMD_KV_INT8 && quant != LMD_KV_INT4)
		return lmd_errorf(err, LMD_EINVAL, "kv cache: quantization %d is not 8 or 4", (int)quant);
	if (quant == LMD_KV_INT4 && kv->head_dim % 2)
		return lmd_errorf(err, LMD_EINVAL, "kv cache: int4 needs an even head_dim, not %d", kv->head_dim);
	kv->kq = lmd_calloc((size_t)kv->layers, sizeof(*kv->kq), err);
	kv->vq = lmd_calloc((size_t)kv->layers, sizeof(*kv->vq), err);
	if (!kv->kq || !kv->vq)
		return LMD_ENOMEM;
	if (params) {
		size_t n = (size_t)kv->layers * 2 * kv->kv_heads * 2;
		if (!(kv->params = lmd_malloc(n * sizeof(float), err)))
			return LMD_ENOMEM;
		memcpy(kv->params, params, n * sizeof(float));
	}
	kv->quant = quant;
	int cols = quant == LMD_KV_INT8 ? kv->head_dim : kv->head_dim / 2;
	for (int l = 0; l < kv->layers; l++)
		for (int w = 0; w < 2; w++) {
			struct lmd_tensor *t = w ? &kv->v[l] : &kv->k[l], *q = w ? &kv->vq[l] : &kv->kq[l];
			kv->be->ops->release(kv->be->ctx, t);
			*t = (struct lmd_tensor){.dtype = LMD_U8, .ndim = 4, .shape = {kv->nblocks, kv->kv_heads, kv->block_len, cols}};
			*q = (struct lmd_tensor){.dtype = kv->dtype, .ndim = 4, .shape = {kv->nblocks, kv->kv_heads, kv->block_len, 2}};
			int rc = kv->be->ops->alloc(kv->be->ctx, t, err);
			if (rc || (rc = kv->be->ops->alloc(kv->be->ctx, q, err)))
				return rc;
		}
	return LMD_OK;
}

int lmd_kvcache_init(struct lmd_kvcache *kv, struct lmd_backend *be, int layers, int kv_heads, int head_dim,
		     int block_len, int nblocks, enum lmd_dtype dtype, struct lmd_err *err)
{
	memset(kv, 0, sizeof(*kv));
	if (layers <= 0 || kv_heads <= 0 || head_dim <= 0 || block_len <= 0 || nblocks <= 0)
		return lmd_errorf(err, LMD_EINVAL, "kv cache: bad geometry (%d layers, %d blocks of %d tokens)", layers,
				  nblocks, block_len);
	kv->layers = layers;
	kv->kv_heads = kv_heads;
	kv->head_dim = head_dim;
	kv->block_len = block_len;
	kv->nblocks = nblocks;
	kv->dtype = dtype;
	kv->be = be;
	kv->k = lmd_calloc((size_t)layers, sizeof(*kv->k), err);
	kv->v = lmd_calloc((size_t)layers, sizeof(*kv->v), err);
	kv->refs = lmd_calloc((size_t)nblocks, sizeof(*kv->refs), err);
	kv->free_list = lmd_calloc((size_t)nblocks, sizeof(*kv->free_list), err);
	if (!kv->k || !kv->v || !kv->refs || !kv->free_list)
		goto fail;
	for (int l = 0; l < layers; l++)
		for (int w = 0; w < 2; w++) {
			struct lmd_tensor *t = w ? &kv->v[l] : &kv->k[l];
			*t = (struct lmd_tensor){.dtype = dtype, .ndim = 4, .shape = {nblocks, kv_heads, block_len, head_dim}};
			if (be->ops->alloc(be->ctx, t, err))
				goto fail;
		}
	for (int i = 0; i < nblocks; i++)  // pop order 0, 1, 2, ...
		kv->free_list[i] = nblocks - 1 - i;
	kv->nfree = nblocks;
	return LMD_OK;
fail:
	lmd_kvcache_free(kv);
	return err ? err->code : LMD_ENOMEM;
}

void lmd_kvcache_free(struct lmd_kvcache *kv)
{
	for (int l = 0; l < kv->layers && kv->k && kv->v; l++) {
		if (kv->k[l].data)
			kv->be->ops->release(kv->be->ctx, &kv->k[l]);
		if (kv->v[l].data)
			kv->be->ops->release(kv->be->ctx, &kv->v[l]);
		if (kv->kq && kv->kq[l].data)
			kv->be->ops->release(kv->be->ctx, &kv->kq[l]);
		if (kv->vq && kv->vq[l].data)
			kv->be->ops->release(kv->be->ctx, &kv->vq[l]);
	}
	free(kv->kq);
	free(kv->vq);
	free(kv->params);
	free(kv->k);
	free(kv->v);
	free(kv->refs);
	free(kv->free_list);
	free(kv->blk);
	free(kv->btoks);
	free(kv->buckets);
	memset(kv, 0, sizeof(*kv));
}

int lmd_kvcache_enable_prefix(struct lmd_kvcache *kv, struct lmd_err *err)
{
	int nb = 1;
	while (nb < kv->nblocks)
		nb *= 2;
	kv->blk = lmd_calloc((size_t)kv->nblocks, sizeof(*kv->blk), err);
	kv->btoks = lmd_calloc((size_t)kv->nblocks * kv->block_len, sizeof(*kv->btoks), err);
	kv->buckets = lmd_calloc((size_t)nb, sizeof(*kv->buckets), err);
	if (!kv->blk || !kv->btoks || !kv->buckets) {
		free(kv->blk), free(kv->btoks), free(kv->buckets);
		kv->blk = NULL, kv->btoks = kv->buckets = NULL;
		return LMD_ENOMEM;
	}
	kv->nbuckets = nb;
	for (int i = 0; i < nb; i++)
		kv->buckets[i] = -1;
	kv->lru_head = kv->lru_tail = -1;
	return LMD_OK;
}

uint64_t lmd_kvcache_hash(uint64_t prev, const int32_t *toks, int n)
{
	uint64_t h = prev ^ 0x9e3779b97f4a7c15u;
	for (int i = 0; i < n; i++) {
		h ^= (uint32_t)toks[i];
		h *= 0xff51afd7ed558ccdu;
		h ^= h >> 32;
	}
	return h;
}

int lmd_kvcache_free_blocks(const struct lmd_kvcache *kv)
{
	return kv->nfree + kv->ncached;
}

int lmd_kvcache_cached_blocks(const struct lmd_kvcache *kv)
{
	return kv->ncached;
}

static void lru_remove(struct lmd_kvcache *kv, int b)
{
	struct lmd_kvblock *k = &kv->blk[b];
	if (k->lru_prev >= 0)
		kv->blk[k->lru_prev].lru_next = k->lru_next;
	else
		kv->lru_head = k->lru_next;
	if (k->lru_next >= 0)
		kv->blk[k->lru_next].lru_prev = k->lru_prev;
	else
		kv->lru_tail = k->lru_prev;
	k->lru_prev = k->lru_next = -1;
	kv->ncached--;
}

/* Take block b out of the prefix cache's index (its K/V are about to change or be cut). */
static void unregister(struct lmd_kvcache *kv, int b)
{
	int32_t *p = &kv->buckets[kv->blk[b].hash & (uint64_t)(kv->nbuckets - 1)];
	while (*p != b)
		p = &kv->blk[*p].bucket_next;
	*p = kv->blk[b].bucket_next;
	kv->blk[b].uid = 0;
}

int lmd_kvcache_block_alloc(struct lmd_kvcache *kv)
{
	int b;
	if (kv->nfree) {
		b = kv->free_list[--kv->nfree];
	} else if (kv->ncached) {  /* evict the least recently used cached block */
		b = kv->lru_head;
		lru_remove(kv, b);
		unregister(kv, b);
	} else {
		return -1;
	}
	kv->refs[b] = 1;
	return b;
}

static int is_cached(const struct lmd_kvcache *kv, int block)
{
	return kv->blk && kv->blk[block].uid;
}

void lmd_kvcache_block_ref(struct lmd_kvcache *kv, int block)
{
	if (block < 0 || block >= kv->nblocks || (kv->refs[block] <= 0 && !is_cached(kv, block)))
		LMD_BUG("ref of free block %d", block);
	if (kv->refs[block]++ == 0)
		lru_remove(kv, block);
}

void lmd_kvcache_block_unref(struct lmd_kvcache *kv, int block)
{
	if (block < 0 || block >= kv->nblocks || kv->refs[block] <= 0)
		LMD_BUG("unref of free block %d", block);
	if (--kv->refs[block])
		return;
	if (!is_cached(kv, block)) {
		kv->free_list[kv->nfree++] = block;
		return;
	}
	struct lmd_kvblock *k = &kv->blk[block];  /* the LRU list's recent end */
	k->lru_prev = kv->lru_tail;
	k->lru_next = -1;
	if (kv->lru_tail >= 0)
		kv->blk[kv->lru_tail].lru_next = block;
	else
		kv->lru_head = block;
	kv->lru_tail = block;
	kv->ncached++;
}

int lmd_kvseq_blocks_needed(const struct lmd_kvcache *kv, const struct lmd_kvseq *seq, int new_len)
{
	int need = (new_len + kv->block_len - 1) / kv->block_len - seq->nblocks;
	return need > 0 ? need : 0;
}

/* Room in seq's table for `more` blocks; -1 when out of memory. */
static int table_grow(struct lmd_kvseq *seq, int more)
{
	if (seq->nblocks + more <= seq->cap)
		return 0;
	int cap = seq->cap ? seq->cap : 4;
	while (cap < seq->nblocks + more)
		cap *= 2;
	int32_t *nb = realloc(seq->blocks, (size_t)cap * sizeof(*nb));
	if (!nb)
		return -1;
	seq->blocks = nb;
	seq->cap = cap;
	return 0;
}

int lmd_kvseq_reserve(struct lmd_kvcache *kv, struct lmd_kvseq *seq, int new_len, struct lmd_err *err)
{
	int need = lmd_kvseq_blocks_needed(kv, seq, new_len), nfree = lmd_kvcache_free_blocks(kv);
	if (need == 0)
		return LMD_OK;
	if (need > nfree)
		return lmd_errorf(err, LMD_ENOMEM, "kv cache full: %d blocks needed, %d free of %d", need, nfree,
				  kv->nblocks);
	if (table_grow(seq, need))
		return lmd_errorf(err, LMD_ENOMEM, "out of memory growing a block table");
	for (int i = 0; i < need; i++)
		seq->blocks[seq->nblocks++] = lmd_kvcache_block_alloc(kv);
	return LMD_OK;
}

void lmd_kvseq_truncate(struct lmd_kvcache *kv, struct lmd_kvseq *seq, int len)
{
	if (len < 0 || len > seq->len)
		LMD_BUG("truncate to %d of %d tokens", len, seq->len);
	int keep = (len + kv->block_len - 1) / kv->block_len;
	if (len % kv->block_len && keep <= seq->ncached) {  /* len cuts a cached block: it will be written */
		seq->ncached = keep - 1;
		if (kv->refs[seq->blocks[keep - 1]] == 1)
			unregister(kv, seq->blocks[keep - 1]);  /* seq's alone: it leaves the cache */
		else
			len = --keep * kv->block_len;  /* shared: seq lets it go */
	}
	while (seq->nblocks > keep)
		lmd_kvcache_block_unref(kv, seq->blocks[--seq->nblocks]);
	if (seq->ncached > keep)
		seq->ncached = keep;
	seq->len = len;
}

void lmd_kvseq_release(struct lmd_kvcache *kv, struct lmd_kvseq *seq)
{
	while (seq->nblocks)
		lmd_kvcache_block_unref(kv, seq->blocks[--seq->nblocks]);
	free(seq->blocks);
	memset(seq, 0, sizeof(*seq));
}

/* The registered block holding toks [block_len] after the registration parent with chain hash h; -1 none. */
static int lookup(const struct lmd_kvcache *kv, uint64_t h, uint64_t parent, const int32_t *toks)
{
	int b = kv->buckets[h & (uint64_t)(kv->nbuckets - 1)];
	while (b >= 0 && (kv->blk[b].hash != h || kv->blk[b].parent != parent ||
			  memcmp(kv->btoks + (size_t)b * kv->block_len, toks, (size_t)kv->block_len * sizeof(*toks))))
		b = kv->blk[b].bucket_next;
	return b;
}

/* The chain hash and uid of seq's first i blocks (0, 0 for none). */
static void chain_at(const struct lmd_kvcache *kv, const struct lmd_kvseq *seq, int i, uint64_t *h, uint64_t *uid)
{
	*h = i ? kv->blk[seq->blocks[i - 1]].hash : 0;
	*uid = i ? kv->blk[seq->blocks[i - 1]].uid : 0;
}

int lmd_kvseq_attach(struct lmd_kvcache *kv, struct lmd_kvseq *seq, const int32_t *toks, int n)
{
	int L = kv->block_len, start = seq->len;
	if (!kv->blk || seq->len != seq->ncached * L || seq->nblocks != seq->ncached)
		return 0;
	for (int i = seq->nblocks; (i + 1) * L <= n - 1; i++) {
		uint64_t h, parent;
		chain_at(kv, seq, i, &h, &parent);
		h = lmd_kvcache_hash(h, toks + (size_t)i * L, L);
		int b = lookup(kv, h, parent, toks + (size_t)i * L);
		if (b < 0 || table_grow(seq, 1))
			break;
		lmd_kvcache_block_ref(kv, b);
		seq->blocks[seq->nblocks++] = b;
		seq->ncached++;
		seq->len += L;
	}
	return seq->len - start;
}

void lmd_kvseq_commit(struct lmd_kvcache *kv, struct lmd_kvseq *seq, const int32_t *toks)
{
	int L = kv->block_len;
	for (int i = seq->ncached; kv->blk && (i + 1) * L <= seq->len; i++) {
		int b = seq->blocks[i];
		if (kv->refs[b] != 1 || kv->blk[b].uid)
			LMD_BUG("commit of block %d: %d references, uid %llu", b, kv->refs[b],
				(unsigned long long)kv->blk[b].uid);
		uint64_t h, parent;
		chain_at(kv, seq, i, &h, &parent);
		h = lmd_kvcache_hash(h, toks + (size_t)i * L, L);
		int32_t *head = &kv->buckets[h & (uint64_t)(kv->nbuckets - 1)];
		kv->blk[b] = (struct lmd_kvblock){.hash = h, .uid = ++kv->uids, .parent = parent, .bucket_next = *head,
						  .lru_prev = -1, .lru_next = -1};
		*head = b;
		memcpy(kv->btoks + (size_t)b * L, toks + (size_t)i * L, (size_t)L * sizeof(*toks));
		seq->ncached++;
	}
}
