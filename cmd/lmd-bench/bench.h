/**
 * lmd-bench's subcommands, each a whole command like run.h's (the measurements they share: membw.h).
 */
#ifndef LMD_BENCH_H
#define LMD_BENCH_H

#include <stddef.h>
#include <stdio.h>

/** lmd-bench gen MODEL: latency and throughput of generation at several concurrencies (gen.c). */
int lmd_bench_gen(int argc, char **argv);

/** lmd-bench ppl MODEL --text FILE: perplexity, KL divergence and top-1 agreement (ppl.c). */
int lmd_bench_ppl(int argc, char **argv);

/** lmd-bench mem MODEL: memory of a configuration, predicted and measured, and the sessions that fit (mem.c). */
int lmd_bench_mem(int argc, char **argv);

/** lmd-bench serve URL: an OpenAI-compatible server under load, as vLLM's `bench serve` measures it (serve.c). */
int lmd_bench_serve(int argc, char **argv);

// ---------------------------------------------------------------------------------------------
// Results (report.c): what every benchmark's table is made of.

/** Sort v ascending; then the p-th percentile (0..100) with linear interpolation (numpy's default), 0 if n is 0. */
void lmd_bench_sort(double *v, size_t n);
double lmd_bench_pct(const double *sorted, size_t n, double p);
double lmd_bench_mean(const double *v, size_t n);

/** Today's date (UTC, YYYY-MM-DD) and the commit the binary was built from, for the date and commit columns. */
void lmd_bench_stamp(char *date, size_t ndate, const char **commit);

struct lmd_cli;
/** A comma-separated list of at most max whole numbers from 1 to 2^20 into v; its length. Usage error otherwise. */
int lmd_bench_list(const struct lmd_cli *cli, const char *opt, const char *s, int *v, int max);

/** Is fmt one of the table formats: csv, md or json? */
int lmd_bench_format(const char *fmt);

/** A table's column: its name, and whether its values are text (json strings) or numbers. */
struct lmd_bench_col {
	const char *name;
	int text;
};
#define LMD_BENCH_CELL 96

/**
 * Write nrow rows of ncol cells (row-major, each a NUL-terminated string) to f: csv (a header line,
 * then one line a row; cells hold no commas), md (a markdown table) or json (an array of objects).
 */
void lmd_bench_table(FILE *f, const char *fmt, const struct lmd_bench_col *cols, int ncol,
		     const char (*cells)[LMD_BENCH_CELL], int nrow);

#endif
