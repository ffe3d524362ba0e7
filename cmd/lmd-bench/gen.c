/*
 * lmd-bench gen MODEL: for each concurrency C and prompt length P, C requests of P random prompt
 * tokens each generate exactly N tokens (ignore_eos) at once through the scheduler. Reported
 * (definitions of ../shared/docs/perf.md §4): time to first token (min, mean, p50, p95, p99), time
 * per output token after the first (mean), output tokens/s over the wall time, peak memory, and the
 * decode roofline: memory bandwidth measured in the same run / bytes read per decode step
 * (weights + the KV cache of every sequence), in tokens/s for the whole batch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cmd/membw.h"
#include "cmd/cli.h"
#include "cuda.h"
#include "lmd.h"
#include "engine/runner.h"

#include "cmd/opts.h"

enum { O_CONC = 256, O_PROMPT, O_COMPLETION, O_FORMAT, O_OUTPUT, O_WARMUP };

static const struct lmd_opt opts[] = {
	{"concurrency", O_CONC, "LIST", "requests run at once, comma-separated (default 1)"},
	{"prompt-tokens", O_PROMPT, "LIST", "prompt lengths, comma-separated (default 128)"},
	{"completion-tokens", O_COMPLETION, "N", "tokens generated per request (default 128)"},
	{"warmup", O_WARMUP, "N", "warm-up requests of each prompt length before measuring (default 1)"},
	{"format", 'f', "FMT", "csv (default), md or json"},
	{"output", 'o', "FILE", "write the table to FILE (default: stdout)"},
	{"temperature", LMD_GO_TEMPERATURE, "T", "sampling temperature (default 0: greedy)"},
	{"session-len", LMD_RO_SESSION_LEN, "N", "most tokens in one sequence (default: the longest prompt plus the completion)"},
	{"max-batch-size", LMD_RO_BATCH, "N", "most sequences run at once (default: the largest concurrency)"},
	{"chat-template", LMD_RO_TEMPLATE, "NAME", "chat template (unused: the prompts are token ids)"},
	LMD_SAMPLING_OPTS,
	LMD_RUNNER_OPTS,
	LMD_PREFIX_OPTS,
	{0},
};

struct row {
	int conc, prompt, completion;
	double ttft_min, ttft_mean, ttft_p50, ttft_p95, ttft_p99, tpot_mean, out_tok_s, wall, roof_tok_s;
	double peak_mb, gpu_mb;
};

static double seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/*
 * C requests of P random tokens, N generated each; fills row. Each call draws new prompts (seed: the
 * call's number), so that with prefix caching on no request finds an earlier call's prompt cached.
 */
static int measure(struct lmd_runner *r, const struct lmd_sampling *sp, int conc, int prompt, int completion, double bw,
		   struct row *row, int seed, struct lmd_err *err)
{
	struct lmd_request *req = calloc(conc, sizeof(*req));
	int32_t *ids = malloc((size_t)conc * prompt * sizeof(*ids));
	double *ttft = malloc(conc * sizeof(double));
	int rc = !req || !ids || !ttft ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	uint64_t x = 88172645463325252ULL + 0x9e3779b97f4a7c15ULL * (uint64_t)seed;
	for (int i = 0; !rc && i < conc; i++) {
		for (int t = 0; t < prompt; t++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			ids[(size_t)i * prompt + t] = (int32_t)(3 + x % (uint64_t)(r->m.cfg.vocab - 3));
		}
		req[i].sampling = *sp;
		req[i].max_tokens = completion;
		req[i].ignore_eos = 1;
		req[i].prompt = ids + (size_t)i * prompt;
		req[i].nprompt = prompt;
		rc = lmd_sched_submit(&r->s, &req[i], err);
	}
	double t0 = seconds();
	if (!rc)
		rc = lmd_sched_run(&r->s, err);
	double wall = seconds() - t0, tpot = 0;
	long out = 0;
	for (int i = 0; !rc && i < conc; i++) {
		if (req[i].finish == LMD_FINISH_ERROR)
			rc = lmd_errorf(err, LMD_EFAIL, "%s", req[i].error);
		ttft[i] = (req[i].t_first - req[i].t_submit) * 1e3;
		tpot += req[i].ntokens > 1 ? (req[i].t_end - req[i].t_first) * 1e3 / (req[i].ntokens - 1) : 0;
		out += req[i].ntokens;
	}
	if (!rc) {
		lmd_bench_sort(ttft, conc);
		/* a decode step reads every weight once and each sequence's KV cache (at mid-generation length) */
		double kv_tok = (double)lmd_kvcache_block_bytes_q(r->m.cfg.layers, r->m.cfg.kv_heads, r->m.cfg.head_dim, 1,
								   r->m.dtype, r->m.kv.quant);
		double step_bytes = (double)r->m.weight_bytes + conc * kv_tok * (prompt + completion / 2.0);
		*row = (struct row){conc, prompt, completion, ttft[0], lmd_bench_mean(ttft, conc), lmd_bench_pct(ttft, conc, 50),
				    lmd_bench_pct(ttft, conc, 95), lmd_bench_pct(ttft, conc, 99), tpot / conc, out / wall, wall, bw > 0 ? bw / step_bytes * conc : 0,
				    lmd_peak_rss() / 1048576.0, 0};
		struct lmd_mem_info cm;  /* device memory held: weights, KV pool, workspace, buffers */
		if (r->be.ops->mem_info && !r->be.ops->mem_info(r->be.ctx, &cm, NULL))
			row->gpu_mb = (cm.allocated + cm.internal) / 1048576.0;
	}
	for (int i = 0; i < conc; i++)
		lmd_request_free(&req[i], &r->m);
	free(req);
	free(ids);
	free(ttft);
	return rc;
}

static const struct lmd_bench_col cols[] = {
	{"date", 1}, {"commit", 1}, {"device", 1}, {"model", 1}, {"dtype", 1}, {"concurrency", 0}, {"prompt_tokens", 0},
	{"completion_tokens", 0}, {"ttft_min_ms", 0}, {"ttft_mean_ms", 0}, {"ttft_p50_ms", 0}, {"ttft_p95_ms", 0},
	{"ttft_p99_ms", 0}, {"tpot_mean_ms", 0}, {"output_tok_s", 0}, {"wall_s", 0}, {"mem_bw_gbs", 0},
	{"roofline_tok_s", 0}, {"roofline_pct", 0}, {"peak_rss_mb", 0}, {"gpu_mem_mb", 0}, {"sampling", 1}};
enum { NCOL = sizeof(cols) / sizeof(cols[0]) };

/* The cells of one row (lmd_bench_table's layout). */
static void row_cells(char (*v)[LMD_BENCH_CELL], const struct row *r, const char *device, const char *model,
		      const char *dtype, double bw, const struct lmd_sampling *sp)
{
	const char *commit;
	lmd_bench_stamp(v[0], LMD_BENCH_CELL, &commit);
	snprintf(v[1], LMD_BENCH_CELL, "%s", commit);
	snprintf(v[2], LMD_BENCH_CELL, "%s", device);
	snprintf(v[3], LMD_BENCH_CELL, "%s", model);
	snprintf(v[4], LMD_BENCH_CELL, "%s", dtype);
	snprintf(v[5], LMD_BENCH_CELL, "%d", r->conc);
	snprintf(v[6], LMD_BENCH_CELL, "%d", r->prompt);
	snprintf(v[7], LMD_BENCH_CELL, "%d", r->completion);
	const double nums[] = {r->ttft_min, r->ttft_mean, r->ttft_p50, r->ttft_p95, r->ttft_p99, r->tpot_mean,
			       r->out_tok_s, r->wall, bw / 1e9, r->roof_tok_s,
			       r->roof_tok_s > 0 ? 100 * r->out_tok_s / r->roof_tok_s : 0, r->peak_mb, r->gpu_mb};
	for (int k = 0; k < 13; k++)
		snprintf(v[8 + k], LMD_BENCH_CELL, "%.3f", nums[k]);
	if (sp->temperature == 0)
		snprintf(v[21], LMD_BENCH_CELL, "greedy");
	else  // no commas: a CSV field
		snprintf(v[21], LMD_BENCH_CELL, "t=%g k=%d p=%g min_p=%g rep=%g seed=%llu", sp->temperature, sp->top_k,
			 sp->top_p, sp->min_p, sp->repetition_penalty, (unsigned long long)sp->seed);
}

int lmd_bench_gen(int argc, char **argv)
{
	struct lmd_cli cli = {
		.prog = "lmd-bench gen",
		.synopsis = "MODEL [OPTIONS]",
		.purpose = "Measure generation latency and throughput at several concurrencies and prompt lengths.",
		.example = "lmd-bench gen share/models/lmd-tiny --concurrency 1,4 --prompt-tokens 32,128 -f md",
		.opts = opts,
	};
	struct lmd_runner_opts ro = {.dtype = LMD_DTYPE_NONE};
	struct lmd_err err = {0};
	int conc[16] = {1}, nconc = 1, plen[16] = {128}, nplen = 1, completion = 128, warmup = 1, k;
	const char *arg, *fmt = "csv", *out = "-";
	struct lmd_gen_params gp;  // its sampling only
	lmd_gen_params_default(&gp);
	gp.sampling.temperature = 0;
	while ((k = lmd_cli_next(&cli, argc, argv, &arg)) != -1) {
		if (lmd_runner_opt(&ro, &cli, k, arg) || lmd_gen_opt(&gp, &cli, k, arg))
			continue;
		switch (k) {
		case O_CONC: nconc = lmd_bench_list(&cli, "concurrency", arg, conc, 16); break;
		case O_PROMPT: nplen = lmd_bench_list(&cli, "prompt-tokens", arg, plen, 16); break;
		case O_COMPLETION: completion = (int)lmd_cli_long(&cli, "completion-tokens", arg, 1, 1 << 20); break;
		case O_WARMUP: warmup = (int)lmd_cli_long(&cli, "warmup", arg, 0, 100); break;
		case 'f':
			if (!lmd_bench_format(arg))
				lmd_usage(&cli, "--format: '%s' is not csv, md or json", arg);
			fmt = arg;
			break;
		case 'o': out = arg; break;
		}
	}
	if (argc - optind != 1)
		lmd_usage(&cli, "expected one MODEL directory");
	ro.model = argv[optind];
	lmd_log(&cli, 1, "seed %llu", (unsigned long long)gp.sampling.seed);
	int maxc = 0, maxp = 0;
	for (int i = 0; i < nconc; i++)
		maxc = conc[i] > maxc ? conc[i] : maxc;
	for (int i = 0; i < nplen; i++)
		maxp = plen[i] > maxp ? plen[i] : maxp;
	if (!ro.max_batch)
		ro.max_batch = maxc;
	if (!ro.session_len)
		ro.session_len = maxp + completion + 1;
	struct lmd_out o;
	struct lmd_runner r;
	lmd_open_out_runner(&cli, &o, out, &r, &ro);
	int gpu = !strcmp(r.be.ops->name, "cuda");
	double bw = gpu ? lmd_cuda_copy_bandwidth(0, 1u << 30)
			: lmd_membw(ro.threads ? ro.threads : (int)sysconf(_SC_NPROCESSORS_ONLN), 256u << 20);
	lmd_log(&cli, 0, gpu ? "device-to-device copy bandwidth (read + write) %.1f GB/s" : "memory read bandwidth %.1f GB/s",
		bw / 1e9);
	struct row rows[256], tmp;
	int n = 0, rc = LMD_OK;
	/* warm-up: every prompt length once, so that one-time costs (GPU kernels loaded on first use, cuBLAS
	 * heuristics per shape) stay out of the figures */
	int calls = 0;
	for (int w = 0; !rc && w < warmup; w++)
		for (int j = 0; !rc && j < nplen; j++)
			rc = measure(&r, &gp.sampling, 1, plen[j], 4, bw, &tmp, calls++, &err);
	for (int i = 0; !rc && i < nconc; i++)
		for (int j = 0; !rc && j < nplen; j++) {
			rc = measure(&r, &gp.sampling, conc[i], plen[j], completion, bw, &rows[n], calls++, &err);
			if (!rc)
				lmd_log(&cli, 0, "concurrency %d, prompt %d: %.1f output tokens/s, ttft p50 %.1f ms", conc[i],
					plen[j], rows[n].out_tok_s, rows[n].ttft_p50);
			n++;
		}
	char model[128];
	snprintf(model, sizeof(model), "%s", r.m.cfg.model_name[0] ? r.m.cfg.model_name : "model");
	char device[128], gname[96];
	size_t gtotal = 0;
	if (gpu && !lmd_cuda_device_info(0, gname, sizeof(gname), &gtotal, NULL))
		snprintf(device, sizeof(device), "cuda %s", gname);
	else
		snprintf(device, sizeof(device), "%s", r.be.ops->name);
	if (!rc) {
		char (*v)[LMD_BENCH_CELL] = calloc((size_t)(n ? n : 1) * NCOL, LMD_BENCH_CELL);
		for (int i = 0; v && i < n; i++)
			row_cells(v + (size_t)i * NCOL, &rows[i], device, model, lmd_dtype_short(r.m.dtype), bw, &gp.sampling);
		if (v)
			lmd_bench_table(o.f, fmt, cols, NCOL, (const char(*)[LMD_BENCH_CELL])v, n);
		else
			rc = lmd_errorf(&err, LMD_ENOMEM, "out of memory");
		free(v);
		rc = rc ? (lmd_out_abort(&o), rc) : lmd_out_commit(&o, &err);
	}
	if (rc)
		lmd_out_abort(&o);
	lmd_runner_close(&r);
	if (rc)
		lmd_die(cli.prog, &err);
	return 0;
}
