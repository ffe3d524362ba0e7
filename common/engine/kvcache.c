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
	return 2 * (size_t)layers * kv_heads * block_len * (data + 2 * sizeof(float));
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
			*q = (struct lmd_tensor){.dtype = LMD_F32, .ndim = 4, .shape = {kv->nblocks, kv->kv_heads, kv->block_len, 2}};
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
	memset(kv, 0, sizeof(*kv));
}

int lmd_kvcache_free_blocks(const struct lmd_kvcache *kv)
{
	return kv->nfree;
}

int lmd_kvcache_block_alloc(struct lmd_kvcache *kv)
{
	if (kv->nfree == 0)
		return -1;
	int b = kv->free_list[--kv->nfree];
	kv->refs[b] = 1;
	return b;
}

void lmd_kvcache_block_ref(struct lmd_kvcache *kv, int block)
{
	if (block < 0 || block >= kv->nblocks || kv->refs[block] <= 0)
		LMD_BUG("ref of free block %d", block);
	kv->refs[block]++;
}

void lmd_kvcache_block_unref(struct lmd_kvcache *kv, int block)
{
	if (block < 0 || block >= kv->nblocks || kv->refs[block] <= 0)
		LMD_BUG("unref of free block %d", block);
	if (--kv->refs[block] == 0)
		kv->free_list[kv->nfree++] = block;
}

int lmd_kvseq_blocks_needed(const struct lmd_kvcache *kv, const struct lmd_kvseq *seq, int new_len)
{
	int need = (new_len + kv->block_len - 1) / kv->block_len - seq->nblocks;
	return need > 0 ? need : 0;
}

int lmd_kvseq_reserve(struct lmd_kvcache *kv, struct lmd_kvseq *seq, int new_len, struct lmd_err *err)
{
	int need = lmd_kvseq_blocks_needed(kv, seq, new_len);
	if (need == 0)
		return LMD_OK;
	if (need > kv->nfree)
		return lmd_errorf(err, LMD_ENOMEM, "kv cache full: %d blocks needed, %d free of %d", need, kv->nfree,
				  kv->nblocks);
	if (seq->nblocks + need > seq->cap) {
		int cap = seq->cap ? seq->cap : 4;
		while (cap < seq->nblocks + need)
			cap *= 2;
		int32_t *nb = realloc(seq->blocks, (size_t)cap * sizeof(*nb));
		if (!nb)
			return lmd_errorf(err, LMD_ENOMEM, "out of memory growing a block table");
		seq->blocks = nb;
		seq->cap = cap;
	}
	for (int i = 0; i < need; i++)
		seq->blocks[seq->nblocks++] = lmd_kvcache_block_alloc(kv);
	return LMD_OK;
}

void lmd_kvseq_truncate(struct lmd_kvcache *kv, struct lmd_kvseq *seq, int len)
{
	if (len < 0 || len > seq->len)
		LMD_BUG("truncate to %d of %d tokens", len, seq->len);
	int keep = (len + kv->block_len - 1) / kv->block_len;
	while (seq->nblocks > keep)
		lmd_kvcache_block_unref(kv, seq->blocks[--seq->nblocks]);
	seq->len = len;
}

void lmd_kvseq_release(struct lmd_kvcache *kv, struct lmd_kvseq *seq)
{
	for (int i = 0; i < seq->nblocks; i++)
		lmd_kvcache_block_unref(kv, seq->blocks[i]);
	free(seq->blocks);
	memset(seq, 0, sizeof(*seq));
}
