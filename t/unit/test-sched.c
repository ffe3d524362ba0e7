/*
 * The scheduler samples a step's rows on several threads and gets the tokens it gets on one: a batch of
 * sampled requests (temperatures, top-p, min-p, a repetition penalty, one greedy; lengths that differ, so
 * requests leave mid-batch) on share/models/lmd-tiny ("cpu" device), with 1 and 4 sampling threads,
 * token for token; and prefix caching (below). Exit 77 without the model.
 */
#include <stdlib.h>
#include <string.h>

#include "file.h"
#include "engine/runner.h"
#include "unit.h"

#define NREQ 24
#define NTOK 16

/* Run the requests on a scheduler with `threads` sampling threads: tokens[i] gets request i's. */
static void run(struct lmd_runner *rn, int threads, int32_t tokens[NREQ][NTOK], int *pooled)
{
	static const float temp[] = {0.8f, 1.0f, 1.3f, 0.6f}, top_p[] = {1.0f, 0.95f, 0.9f};
	struct lmd_scheduler s;
	struct lmd_request req[NREQ];
	int32_t prompt[NREQ][4];
	struct lmd_err err = {0};
	CHECK_EQ_INT(lmd_sched_init(&s, &rn->m, &rn->tok, &(struct lmd_sched_opts){.threads = threads}, &err), 0);
	for (int i = 0; i < NREQ; i++) {
		memset(&req[i], 0, sizeof(req[i]));
		memcpy(prompt[i], (int32_t[]){1, 100 + i, 300 + 7 * i, 50 + 3 * i}, sizeof(prompt[i]));
		req[i].prompt = prompt[i];
		req[i].nprompt = 1 + i % 4;
		lmd_sampling_default(&req[i].sampling);
		req[i].sampling.temperature = i == 7 ? 0 : temp[i % 4];
		req[i].sampling.top_p = top_p[i / 4 % 3];
		req[i].sampling.min_p = i == 9 ? 0.05f : 0;
		req[i].sampling.repetition_penalty = i == 5 || i == 13 ? 1.1f : 1;
		req[i].sampling.seed = 1000 + i;
		req[i].max_tokens = NTOK - i % 5;
		req[i].ignore_eos = 1;
		CHECK_EQ_INT(lmd_sched_submit(&s, &req[i], &err), 0);
	}
	CHECK_EQ_INT(lmd_sched_run(&s, &err), 0);
	memset(tokens, 0xff, sizeof(int32_t[NREQ][NTOK]));
	for (int i = 0; i < NREQ; i++) {
		CHECK_EQ_INT(req[i].ntokens, req[i].max_tokens);
		memcpy(tokens[i], req[i].own.toks + req[i].nprompt_total, req[i].ntokens * sizeof(int32_t));
		lmd_request_free(&req[i], &rn->m);
	}
	*pooled = s.pool != NULL;
	lmd_sched_free(&s);
}

/*
 * Prefix caching: requests in two groups sharing 40 prompt tokens, greedy, through a pool of 16 blocks
 * of 16 tokens that holds three at once (so requests wait and are preempted), prefill chunks of 24
 * tokens (ending inside blocks). The tokens with the cache on equal those with it off, the cache was
 * hit, and at the end no block is held by anyone. tokens[i] gets request i's; st the counters.
 */
#define PREQ 16
#define PTOK 20
static void run_prefix(const char *model, int on, int quant, int32_t tokens[PREQ][PTOK], struct lmd_sched_stats *st)
{
	struct lmd_runner rn;
	struct lmd_err err = {0};
	struct lmd_runner_opts o = {.model = model, .device = "cpu", .threads = 2, .session_len = 256, .block_len = 16,
				    .max_batch = 8, .max_prefill = 24, .cache_max_entry_count = 1e-6,
				    .quant_policy = quant, .prefix_caching = on};
	if (lmd_runner_open(&rn, &o, &err)) {
		fprintf(stderr, "test-sched: %s\n", err.msg);
		CHECK(0);
		return;
	}
	CHECK_EQ_INT(rn.m.kv.nblocks, 16);
	struct lmd_request req[PREQ];
	int32_t prompt[PREQ][64];
	for (int i = 0; i < PREQ; i++) {
		memset(&req[i], 0, sizeof(req[i]));
		for (int t = 0; t < 64; t++)
			prompt[i][t] = t < 40 ? 5 + 11 * t + 300 * (i % 2) : 7 + 13 * i + t;
		req[i].prompt = prompt[i];
		req[i].nprompt = 41 + i % 7;
		lmd_sampling_default(&req[i].sampling);
		req[i].sampling.temperature = 0;
		req[i].max_tokens = PTOK;
		req[i].ignore_eos = 1;
		CHECK_EQ_INT(lmd_sched_submit(&rn.s, &req[i], &err), 0);
	}
	CHECK_EQ_INT(lmd_sched_run(&rn.s, &err), 0);
	for (int i = 0; i < PREQ; i++) {
		CHECK_EQ_INT(req[i].ntokens, PTOK);
		memcpy(tokens[i], req[i].own.toks + req[i].nprompt_total, PTOK * sizeof(int32_t));
		lmd_request_free(&req[i], &rn.m);
	}
	lmd_sched_stats(&rn.s, st);
	CHECK_EQ_INT(st->blocks_used, 0);
	CHECK_EQ_INT(st->blocks_total, 16);
	CHECK_EQ_INT(lmd_kvcache_free_blocks(&rn.m.kv), 16);
	for (int b = 0; b < rn.m.kv.nblocks; b++)
		CHECK_EQ_INT(rn.m.kv.refs[b], 0);
	lmd_runner_close(&rn);
}

static void prefix(const char *model)
{
	static const int quants[] = {0, 8, 4};
	for (int q = 0; q < 3; q++) {
		int32_t off[PREQ][PTOK], on[PREQ][PTOK];
		struct lmd_sched_stats so, sn;
		run_prefix(model, 0, quants[q], off, &so);
		run_prefix(model, 1, quants[q], on, &sn);
		CHECK(!so.prefix_caching && so.prefix_hits == 0 && so.blocks_cached == 0);
		CHECK(sn.prefix_caching);
		CHECK(sn.prefix_hits >= 32);  // at least the shared blocks of a few requests
		CHECK(sn.prefix_hits <= sn.prefix_queries);
		CHECK(sn.blocks_cached > 0);
		CHECK(so.preemptions > 0 && sn.preemptions > 0);
		for (int i = 0; i < PREQ; i++)
			for (int k = 0; k < PTOK; k++)
				CHECK_EQ_INT(on[i][k], off[i][k]);
		fprintf(stderr, "test-sched: prefix caching, quant-policy %d: %ld of %ld tokens cached, %ld/%ld preemptions "
			"(on/off), %ld/%ld steps\n", quants[q], sn.prefix_hits, sn.prefix_queries, sn.preemptions, so.preemptions,
			sn.steps, so.steps);
	}
}

int main(void)
{
	const char *model = "share/models/lmd-tiny";
	if (!lmd_is_dir(model)) {
		fprintf(stderr, "test-sched: no %s, skipped\n", model);
		return 77;
	}
	char cache[] = "/tmp/lmd-sched-cache.XXXXXX";
	if (!mkdtemp(cache)) {
		perror("mkdtemp");
		return 1;
	}
	setenv("LMD_CACHE", cache, 1);
	struct lmd_runner rn;
	struct lmd_err err = {0};
	if (lmd_runner_open(&rn, &(struct lmd_runner_opts){.model = model, .device = "cpu", .threads = 2}, &err)) {
		fprintf(stderr, "test-sched: %s\n", err.msg);
		lmd_rmtree(cache);
		return 1;
	}
	int32_t one[NREQ][NTOK], many[NREQ][NTOK];
	int pooled_one, pooled_many;
	run(&rn, 1, one, &pooled_one);
	run(&rn, 4, many, &pooled_many);
	CHECK(!pooled_one);
	CHECK(pooled_many);  // the rows were heavy enough for the pool: the threads did run
	for (int i = 0; i < NREQ; i++)
		for (int k = 0; k < NTOK; k++)
			CHECK_EQ_INT(many[i][k], one[i][k]);
	lmd_runner_close(&rn);
	prefix(model);
	lmd_rmtree(cache);
	return UNIT_DONE();
}
