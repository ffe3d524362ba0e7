/*
 * The scheduler samples a step's rows on several threads and gets the tokens it gets on one: a batch of
 * sampled requests (temperatures, top-p, min-p, a repetition penalty, one greedy; lengths that differ, so
 * requests leave mid-batch) on share/models/lmd-tiny ("cpu" device), with 1 and 4 sampling threads,
 * token for token. Exit 77 without the model.
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
	lmd_rmtree(cache);
	return UNIT_DONE();
}
