/*
 * lmd-bench gen MODEL: for each concurrency C and prompt length P, C requests of P random prompt
 * tokens each generate exactly N tokens (ignore_eos) at once through the scheduler. Reported
 * (definitions of ../shared/docs/perf.md §4): time to first token (min, mean, p50, p95, p99), time
 * per output token after the first (mean), output tokens/s over the wall time, peak memory, and the
 * decode roofline: memory bandwidth measured in the same run / bytes read per decode step
 * (weights + the KV cache of every sequence), in tokens/s for the whole batch.
 */
#include <jansson.h>
#include <math.h>
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

#include "commit.h"
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
	LMD_SAMPLING_OPTS,
	LMD_RUNNER_OPTS,
	{0},
};

static int parse_list(const struct lmd_cli *cli, const char *opt, const char *s, int *v, int max)
{
	int n = 0;
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", s);
	for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
		if (n == max)
			lmd_usage(cli, "--%s: at most %d values", opt, max);
		v[n++] = (int)lmd_cli_long(cli, opt, t, 1, 1 << 20);
	}
	if (!n)
		lmd_usage(cli, "--%s: empty list", opt);
	return n;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const double *sorted, int n, double p)
{
	double k = p / 100 * (n - 1);
	int lo = (int)floor(k), hi = (int)ceil(k);
	return sorted[lo] + (sorted[hi] - sorted[lo]) * (k - lo);
}

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

/* C requests of P random tokens, N generated each; fills row. */
static int measure(struct lmd_runner *r, const struct lmd_sampling *sp, int conc, int prompt, int completion, double bw,
		   struct row *row, struct lmd_err *err)
{
	struct lmd_request *req = calloc(conc, sizeof(*req));
	int32_t *ids = malloc((size_t)conc * prompt * sizeof(*ids));
	double *ttft = malloc(conc * sizeof(double));
	int rc = !req || !ids || !ttft ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	uint64_t x = 88172645463325252ULL;
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
		qsort(ttft, conc, sizeof(double), cmp_d);
		double sum = 0;
		for (int i = 0; i < conc; i++)
			sum += ttft[i];
		/* a decode step reads every weight once and each sequence's KV cache (at mid-generation length) */
		double kv_tok = (double)lmd_kvcache_block_bytes(r->m.cfg.layers, r->m.cfg.kv_heads, r->m.cfg.head_dim, 1,
								 r->m.dtype);
		double step_bytes = (double)r->m.weight_bytes + conc * kv_tok * (prompt + completion / 2.0);
		*row = (struct row){conc, prompt, completion, ttft[0], sum / conc, pct(ttft, conc, 50), pct(ttft, conc, 95),
				    pct(ttft, conc, 99), tpot / conc, out / wall, wall, bw > 0 ? bw / step_bytes * conc : 0,
				    lmd_peak_rss() / 1048576.0, 0};
		struct lmd_cuda_mem cm;
		if (!lmd_cuda_mem(&r->be, &cm, NULL))  /* device memory held: weights, KV pool, workspace, buffers */
			row->gpu_mb = (cm.allocated + cm.internal) / 1048576.0;
	}
	for (int i = 0; i < conc; i++)
		lmd_request_free(&req[i], &r->m);
	free(req);
	free(ids);
	free(ttft);
	return rc;
}

static const char *cols[] = {"date", "commit", "device", "model", "dtype", "concurrency", "prompt_tokens",
			     "completion_tokens", "ttft_min_ms", "ttft_mean_ms", "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms",
			     "tpot_mean_ms", "output_tok_s", "wall_s", "mem_bw_gbs", "roofline_tok_s", "roofline_pct",
			     "peak_rss_mb", "gpu_mem_mb", "sampling"};

static void print_rows(FILE *f, const char *fmt, const struct row *rows, int n, const char *date, const char *device,
		       const char *model, const char *dtype, double bw, const struct lmd_sampling *sp)
{
	int ncol = (int)(sizeof(cols) / sizeof(cols[0]));
	json_t *arr = json_array();
	if (!strcmp(fmt, "md")) {
		for (int c = 0; c < ncol; c++)
			fprintf(f, "| %s ", cols[c]);
		fprintf(f, "|\n");
		for (int c = 0; c < ncol; c++)
			fprintf(f, "|---");
		fprintf(f, "|\n");
	} else if (!strcmp(fmt, "csv")) {
		for (int c = 0; c < ncol; c++)
			fprintf(f, "%s%s", c ? "," : "", cols[c]);
		fprintf(f, "\n");
	}
	for (int i = 0; i < n; i++) {
		const struct row *r = &rows[i];
		char v[22][96];
		snprintf(v[0], 96, "%s", date);
		snprintf(v[1], 96, "%s", LMD_COMMIT);
		snprintf(v[2], 96, "%s", device);
		snprintf(v[3], 96, "%s", model);
		snprintf(v[4], 96, "%s", dtype);
		snprintf(v[5], 96, "%d", r->conc);
		snprintf(v[6], 96, "%d", r->prompt);
		snprintf(v[7], 96, "%d", r->completion);
		const double nums[] = {r->ttft_min, r->ttft_mean, r->ttft_p50, r->ttft_p95, r->ttft_p99, r->tpot_mean,
				       r->out_tok_s, r->wall, bw / 1e9, r->roof_tok_s,
				       r->roof_tok_s > 0 ? 100 * r->out_tok_s / r->roof_tok_s : 0, r->peak_mb, r->gpu_mb};
		for (int k = 0; k < 13; k++)
			snprintf(v[8 + k], 96, "%.3f", nums[k]);
		if (sp->temperature == 0)
			snprintf(v[21], 96, "greedy");
		else  // no commas: a CSV field
			snprintf(v[21], 96, "t=%g k=%d p=%g min_p=%g rep=%g seed=%llu", sp->temperature, sp->top_k, sp->top_p,
				 sp->min_p, sp->repetition_penalty, (unsigned long long)sp->seed);
		json_t *o = json_object();
		for (int c = 0; c < ncol; c++) {
			if (!strcmp(fmt, "json"))
				json_object_set_new(o, cols[c], c < 5 || c == 21 ? json_string(v[c]) : json_real(atof(v[c])));
			else
				fprintf(f, !strcmp(fmt, "md") ? "| %s " : "%s%s", !strcmp(fmt, "md") ? v[c] : (c ? "," : ""),
					v[c]);
		}
		if (!strcmp(fmt, "json"))
			json_array_append_new(arr, o);
		else
			json_decref(o), fprintf(f, !strcmp(fmt, "md") ? "|\n" : "\n");
	}
	if (!strcmp(fmt, "json")) {
		char *s = json_dumps(arr, JSON_INDENT(2));
		fprintf(f, "%s\n", s ? s : "[]");
		free(s);
	}
	json_decref(arr);
}

int lmd_bench_gen(int argc, char **argv)
{
	struct lmd_cli cli = {
		.prog = "lmd-bench gen",
		.synopsis = "MODEL [OPTIONS]",
		.purpose = "Measure generation latency and throughput at several concurrencies and prompt lengths.",
		.example = "lmd-bench gen llama2-7b --concurrency 1,16,64 --prompt-tokens 128,2048 -f md",
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
		case O_CONC: nconc = parse_list(&cli, "concurrency", arg, conc, 16); break;
		case O_PROMPT: nplen = parse_list(&cli, "prompt-tokens", arg, plen, 16); break;
		case O_COMPLETION: completion = (int)lmd_cli_long(&cli, "completion-tokens", arg, 1, 1 << 20); break;
		case O_WARMUP: warmup = (int)lmd_cli_long(&cli, "warmup", arg, 0, 100); break;
		case 'f':
			if (strcmp(arg, "csv") && strcmp(arg, "md") && strcmp(arg, "json"))
				lmd_usage(&cli, "--format: '%s' is not csv, md or json", arg);
			fmt = arg;
			break;
		case 'o': out = arg; break;
		}
	}
	if (argc - optind != 1)
		lmd_usage(&cli, "expected one MODEL directory");
	ro.model = argv[optind];
	int maxc = 0, maxp = 0;
	for (int i = 0; i < nconc; i++)
		maxc = conc[i] > maxc ? conc[i] : maxc;
	for (int i = 0; i < nplen; i++)
		maxp = plen[i] > maxp ? plen[i] : maxp;
	if (!ro.max_batch)
		ro.max_batch = maxc;
	if (!ro.session_len)
		ro.session_len = maxp + completion + 1;
	struct lmd_runner r;
	if (lmd_runner_open(&r, &ro, &err))
		lmd_die(cli.prog, &err);
	char desc[512];
	lmd_runner_describe(&r, desc, sizeof(desc));
	lmd_log(&cli, 0, "%s", desc);
	int gpu = !strcmp(r.be.ops->name, "cuda");
	double bw = gpu ? lmd_cuda_copy_bandwidth(0, 1u << 30)
			: lmd_membw(ro.threads ? ro.threads : (int)sysconf(_SC_NPROCESSORS_ONLN), 256u << 20);
	lmd_log(&cli, 0, gpu ? "device-to-device copy bandwidth (read + write) %.1f GB/s" : "memory read bandwidth %.1f GB/s",
		bw / 1e9);
	struct row rows[256], tmp;
	int n = 0, rc = LMD_OK;
	/* warm-up: every prompt length once, so that one-time costs (GPU kernels loaded on first use, cuBLAS
	 * heuristics per shape) stay out of the figures */
	for (int w = 0; !rc && w < warmup; w++)
		for (int j = 0; !rc && j < nplen; j++)
			rc = measure(&r, &gp.sampling, 1, plen[j], 4, bw, &tmp, &err);
	for (int i = 0; !rc && i < nconc; i++)
		for (int j = 0; !rc && j < nplen; j++) {
			rc = measure(&r, &gp.sampling, conc[i], plen[j], completion, bw, &rows[n], &err);
			if (!rc)
				lmd_log(&cli, 0, "concurrency %d, prompt %d: %.1f output tokens/s, ttft p50 %.1f ms", conc[i],
					plen[j], rows[n].out_tok_s, rows[n].ttft_p50);
			n++;
		}
	char date[32], model[128];
	time_t now = time(NULL);
	strftime(date, sizeof(date), "%Y-%m-%d", gmtime(&now));
	snprintf(model, sizeof(model), "%s", r.m.cfg.model_name[0] ? r.m.cfg.model_name : "model");
	char device[128], gname[96];
	size_t gtotal = 0;
	if (gpu && !lmd_cuda_device_info(0, gname, sizeof(gname), &gtotal, NULL))
		snprintf(device, sizeof(device), "cuda %s", gname);
	else
		snprintf(device, sizeof(device), "%s", r.be.ops->name);
	struct lmd_out o = {0};
	if (!rc)
		rc = lmd_out_open(&o, out, &err);
	if (!rc) {
		print_rows(o.f, fmt, rows, n, date, device, model, lmd_dtype_short(r.m.dtype), bw, &gp.sampling);
		rc = lmd_out_commit(&o, &err);
	}
	lmd_runner_close(&r);
	if (rc)
		lmd_die(cli.prog, &err);
	return 0;
}
