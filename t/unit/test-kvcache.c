/* The KV block pool and sequences: allocation, reference counts, reserve / truncate / release,
 * running out of blocks without side effects. */
#include "engine/backend.h"
#include "engine/kvcache.h"
#include "unit.h"

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
	lmd_backend_close(&be);
	return UNIT_DONE();
}
