/**
 * lmd-bench's subcommands (each a whole command, like run.h's) and the measurements they share.
 */
#ifndef LMD_BENCH_H
#define LMD_BENCH_H

#include <stddef.h>

/** lmd-bench gen MODEL: latency and throughput of generation at several concurrencies (bench-gen.c). */
int lmd_bench_gen(int argc, char **argv);

/** lmd-bench ppl MODEL --text FILE: perplexity, KL divergence and top-1 agreement (bench-ppl.c). */
int lmd_bench_ppl(int argc, char **argv);

/**
 * Memory read bandwidth in bytes/s, measured by threads reading a buffer of bytes (>= 4x the last-level
 * cache) several times; the best pass counts. 0 when the buffer cannot be allocated.
 */
double lmd_membw(int threads, size_t bytes);

/** Peak resident memory of this process, in bytes. */
size_t lmd_peak_rss(void);

#endif
