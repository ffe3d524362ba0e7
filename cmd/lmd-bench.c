/* lmd-bench: one binary, several benchmarks; each subcommand lives in cmd/lmd-bench/NAME.c (bench.h). */
#include "cmd/lmd-bench/bench.h"
#include "cli.h"

static const struct lmd_subcommand subs[] = {
	{"gen", lmd_bench_gen, "generation latency and throughput at several concurrencies"},
	{"serve", lmd_bench_serve, "an OpenAI-compatible server under load: throughput, TTFT, TPOT, ITL, E2E latency"},
	{"ppl", lmd_bench_ppl, "perplexity on a text; KL divergence and top-1 agreement against a base model"},
	{"mem", lmd_bench_mem, "memory of a configuration (weights, KV pool, workspace, context) and the sessions that fit"},
};

int main(int argc, char **argv)
{
	return lmd_cli_dispatch("lmd-bench", "Measure a model: speed, memory, quality.", subs,
				(int)(sizeof(subs) / sizeof(subs[0])), argc, argv);
}
