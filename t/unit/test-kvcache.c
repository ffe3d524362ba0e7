/* The KV block pool and sequences: allocation, reference counts, reserve / truncate / release,
 * running out of blocks without side effects; the prefix cache: the hash chain, hits and misses,
 * verification of the tokens, LRU eviction only under pressure, truncation of shared blocks, and
 * every block back at the end. */
#include "engine/backend.h"
#include "engine/kvcache.h"
#include "unit.h"

/* A sequence of n tokens computed from scratch: blocks reserved, len set, full blocks committed. */
static void compute(struct lmd_kvcache *kv, struct lmd_kvseq *s, const int32_t *toks, int n)
{
	struct lmd_err err = {0};
	CHECK_EQ_INT(lmd_kvseq_reserve(kv, s, n, &err), 0);
	s->len = n;
	lmd_kvseq_commit(kv, s, toks);
}

static int used_blocks(const struct lmd_kvcache *kv)
{
	int used = 0;
	for (int i = 0; i < kv->nblocks; i++)
		used += kv->refs[i] > 0;
	return used;
}

static void prefix(struct lmd_backend *be)
{
	struct lmd_kvcache kv = {0};
	struct lmd_err err = {0};
	/* blocks of 4 tokens, 8 of them */
	CHECK_EQ_INT(lmd_kvcache_init(&kv, be, 1, 1, 4, 4, 8, LMD_F32, &err), 0);
	CHECK_EQ_INT(lmd_kvcache_enable_prefix(&kv, &err), 0);

	/* the hash chain: a block's hash depends on every token before it, and on their order */
	const int32_t x[4] = {1, 2, 3, 4}, y[4] = {1, 2, 4, 3}, z[4] = {9, 9, 9, 9};
	uint64_t hx = lmd_kvcache_hash(0, x, 4), hy = lmd_kvcache_hash(0, y, 4);
	CHECK(hx != hy);
	CHECK(hx == lmd_kvcache_hash(0, x, 4));
	CHECK(lmd_kvcache_hash(hx, z, 4) != lmd_kvcache_hash(hy, z, 4));
	CHECK(lmd_kvcache_hash(hx, z, 4) != lmd_kvcache_hash(0, z, 4));

	/* a: 10 tokens, two full blocks registered, the third partial and private */
	int32_t ta[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
	struct lmd_kvseq a = {0}, b = {0}, c = {0}, d = {0};
	compute(&kv, &a, ta, 10);
	CHECK_EQ_INT(a.ncached, 2);
	CHECK_EQ_INT(lmd_kvcache_free_blocks(&kv), 5);
	CHECK_EQ_INT(lmd_kvcache_cached_blocks(&kv), 0);

	/* b starts with the same 9 tokens: both full blocks are shared */
	int32_t tb[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 0};
	CHECK_EQ_INT(lmd_kvseq_attach(&kv, &b, tb, 12), 8);
	CHECK_EQ_INT(b.len, 8);
	CHECK_EQ_INT(b.blocks[0], a.blocks[0]);
	CHECK_EQ_INT(b.blocks[1], a.blocks[1]);
	CHECK_EQ_INT(kv.refs[a.blocks[1]], 2);
	CHECK_EQ_INT(lmd_kvcache_free_blocks(&kv), 5);
	/* b then appends into a block of its own, never into a shared one */
	CHECK_EQ_INT(lmd_kvseq_reserve(&kv, &b, 12, &err), 0);
	CHECK(b.blocks[2] != a.blocks[2]);
	b.len = 12;
	lmd_kvseq_commit(&kv, &b, tb);
	CHECK_EQ_INT(b.ncached, 3);

	/* a whole cached prompt still leaves a token to compute: 8 tokens attach one block */
	CHECK_EQ_INT(lmd_kvseq_attach(&kv, &c, ta, 8), 4);
	lmd_kvseq_release(&kv, &c);
	/* misses: another first block; the same second block after another first block */
	int32_t tc[9] = {1, 2, 3, 5, 5, 6, 7, 8, 0}, td[9] = {0, 2, 3, 4, 5, 6, 7, 8, 0};
	CHECK_EQ_INT(lmd_kvseq_attach(&kv, &c, tc, 9), 0);
	CHECK_EQ_INT(lmd_kvseq_attach(&kv, &d, td, 9), 0);
	/* a hit is verified: a block whose stored tokens differ is not taken, whatever the hash says */
	kv.btoks[a.blocks[0] * 4 + 3] = 99;
	CHECK_EQ_INT(lmd_kvseq_attach(&kv, &c, ta, 9), 0);
	kv.btoks[a.blocks[0] * 4 + 3] = 4;
	/* only a sequence at a block boundary with every block registered attaches */
	struct lmd_kvseq e = {0};
	compute(&kv, &e, tc, 3);
	CHECK_EQ_INT(lmd_kvseq_attach(&kv, &e, tc, 9), 0);
	lmd_kvseq_release(&kv, &e);

	/* released, registered blocks stay cached and count as free; the private partial one is free */
	lmd_kvseq_release(&kv, &a);
	lmd_kvseq_release(&kv, &b);
	CHECK_EQ_INT(used_blocks(&kv), 0);
	CHECK_EQ_INT(lmd_kvcache_cached_blocks(&kv), 3);
	CHECK_EQ_INT(lmd_kvcache_free_blocks(&kv), 8);
	/* ... and are found again (a recompute after preemption hits) */
	CHECK_EQ_INT(lmd_kvseq_attach(&kv, &a, tb, 12), 8);
	CHECK_EQ_INT(lmd_kvcache_cached_blocks(&kv), 1);
	CHECK_EQ_INT(lmd_kvseq_attach(&kv, &a, tb, 12), 0);  // the third block would leave no token to compute
	lmd_kvseq_release(&kv, &a);

	/* LRU: the truly free blocks go first; then the least recently released, a sequence's last block first */
	int order[3];
	CHECK_EQ_INT(lmd_kvseq_attach(&kv, &b, tb, 13), 12);
	memcpy(order, b.blocks, sizeof(order));
	lmd_kvseq_release(&kv, &b);  // LRU: block 3 of b, then 2, then 1 (most recent)
	int taken[8];
	for (int i = 0; i < 5; i++)
		taken[i] = lmd_kvcache_block_alloc(&kv);
	CHECK_EQ_INT(lmd_kvcache_cached_blocks(&kv), 3);  // no eviction while other blocks were free
	taken[5] = lmd_kvcache_block_alloc(&kv);
	CHECK_EQ_INT(taken[5], order[2]);
	CHECK_EQ_INT(lmd_kvcache_cached_blocks(&kv), 2);
	CHECK_EQ_INT(lmd_kvseq_attach(&kv, &c, tb, 13), 8);  // the first two are still there
	CHECK_EQ_INT(lmd_kvcache_cached_blocks(&kv), 0);
	CHECK_EQ_INT(lmd_kvcache_free_blocks(&kv), 0);
	CHECK_EQ_INT(lmd_kvcache_block_alloc(&kv), -1);  // blocks a sequence holds are never evicted
	CHECK_EQ_INT(lmd_kvseq_reserve(&kv, &c, 12, &err), LMD_ENOMEM);
	for (int i = 0; i < 6; i++)
		lmd_kvcache_block_unref(&kv, taken[i]);
	lmd_kvseq_release(&kv, &c);
	CHECK_EQ_INT(lmd_kvcache_free_blocks(&kv), 8);

	/* truncation inside a cached block: shared, the sequence lets it go; alone, it leaves the cache */
	CHECK_EQ_INT(lmd_kvseq_attach(&kv, &a, tb, 13), 8);
	CHECK_EQ_INT(lmd_kvseq_attach(&kv, &b, tb, 13), 8);
	lmd_kvseq_truncate(&kv, &a, 6);
	CHECK_EQ_INT(a.len, 4);
	CHECK_EQ_INT(a.nblocks, 1);
	CHECK_EQ_INT(a.ncached, 1);
	lmd_kvseq_release(&kv, &a);
	int alone = b.blocks[1];
	lmd_kvseq_truncate(&kv, &b, 6);
	CHECK_EQ_INT(b.len, 6);
	CHECK_EQ_INT(b.nblocks, 2);
	CHECK_EQ_INT(b.ncached, 1);
	CHECK_EQ_INT(kv.blk[alone].uid, 0);
	CHECK_EQ_INT(lmd_kvseq_attach(&kv, &c, tb, 13), 4);  // the second block is no longer offered
	lmd_kvseq_release(&kv, &c);
	lmd_kvseq_release(&kv, &b);

	/* nothing leaked: every block free, the LRU list consistent with the count */
	CHECK_EQ_INT(used_blocks(&kv), 0);
	CHECK_EQ_INT(lmd_kvcache_free_blocks(&kv), 8);
	int n = 0;
	for (int i = kv.lru_head; i >= 0; i = kv.blk[i].lru_next)
		n++;
	CHECK_EQ_INT(n, lmd_kvcache_cached_blocks(&kv));
	lmd_kvcache_free(&kv);
}

int main(void)
{
	struct lmd_backend be = {0};
	struct lmd_kvcache kv = {0};
	struct lmd_err err = {0};
	CHECK_EQ_INT(lmd_backend_open(&be, "ref", NULL, &err), 0);
	CHECK_EQ_INT(lmd_kvcache_init(&kv, &be, 2, 2, 8, 4, 6, LMD_F16, &err), 0);
	CHECK_EQ_INT(lmd_kvcache_block_bytes(2, 2, 8, 4, LMD_F16), 2 * 2 * 2 * 4 * 8 * 2);
	CHECK_EQ_INT(kv.k[1].shape[0], 6);
	CHECK_EQ_INT(kv.k[1].shape[2], 4);
	CHECK_EQ_INT(lmd_kvcache_free_blocks(&kv), 6);

	struct lmd_kvseq a = {0}, b = {0};
	CHECK_EQ_INT(lmd_kvseq_blocks_needed(&kv, &a, 9), 3);
	CHECK_EQ_INT(lmd_kvseq_reserve(&kv, &a, 9, &err), 0);
	a.len = 9;
	CHECK_EQ_INT(a.nblocks, 3);
	CHECK_EQ_INT(lmd_kvcache_free_blocks(&kv), 3);
	CHECK_EQ_INT(lmd_kvseq_blocks_needed(&kv, &a, 12), 0);
	CHECK_EQ_INT(lmd_kvseq_reserve(&kv, &b, 16, &err), LMD_ENOMEM);  // 4 needed, 3 free: nothing taken
	CHECK(strstr(err.msg, "4 blocks needed, 3 free") != NULL);
	CHECK_EQ_INT(b.nblocks, 0);
	CHECK_EQ_INT(lmd_kvcache_free_blocks(&kv), 3);

	/* Sharing a block: it returns to the pool only when both let go. */
	int shared = a.blocks[0];
	lmd_kvcache_block_ref(&kv, shared);
	CHECK_EQ_INT(kv.refs[shared], 2);
	lmd_kvseq_truncate(&kv, &a, 5);
	CHECK_EQ_INT(a.nblocks, 2);
	CHECK_EQ_INT(a.len, 5);
	CHECK_EQ_INT(lmd_kvcache_free_blocks(&kv), 4);
	lmd_kvseq_release(&kv, &a);
	CHECK_EQ_INT(a.nblocks, 0);
	CHECK_EQ_INT(lmd_kvcache_free_blocks(&kv), 5);
	lmd_kvcache_block_unref(&kv, shared);
	CHECK_EQ_INT(lmd_kvcache_free_blocks(&kv), 6);

	/* Every block can be taken, then none. */
	for (int i = 0; i < 6; i++)
		CHECK(lmd_kvcache_block_alloc(&kv) >= 0);
	CHECK_EQ_INT(lmd_kvcache_block_alloc(&kv), -1);
	lmd_kvcache_free(&kv);
	lmd_kvcache_free(&kv);  // a freed (zeroed) cache is safe to free again
	prefix(&be);
	lmd_backend_close(&be);
	return UNIT_DONE();
}
