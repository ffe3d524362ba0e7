/* lmd-bench: one binary, several benchmarks; each subcommand lives in common/ (bench.h). */
#include "bench.h"
#include "cli.h"

static const struct lmd_subcommand subs[] = {
	{"gen", lmd_bench_gen, "generation latency and throughput at several concurrencies"},
};

int main(int argc, char **argv)
{
	return lmd_cli_dispatch("lmd-bench", "Measure a model: speed, memory, quality.", subs,
				(int)(sizeof(subs) / sizeof(subs[0])), argc, argv);
}
