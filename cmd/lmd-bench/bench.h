/**
 * lmd-bench's subcommands, each a whole command like run.h's (the measurements they share: membw.h).
 */
#ifndef LMD_BENCH_H
#define LMD_BENCH_H

/** lmd-bench gen MODEL: latency and throughput of generation at several concurrencies (gen.c). */
int lmd_bench_gen(int argc, char **argv);

/** lmd-bench ppl MODEL --text FILE: perplexity, KL divergence and top-1 agreement (ppl.c). */
int lmd_bench_ppl(int argc, char **argv);

#endif
