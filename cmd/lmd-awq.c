/* lmd-awq: 4-bit weight quantization (AWQ or round-to-nearest) into an AutoAWQ gemm HF directory (awq.h). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quant/awq.h"
#include "quant/calib.h"
#include "cli.h"
#include "engine/runner.h"
#include "file.h"
#include "opts.h"

enum { O_STATS = 256, O_BITS, O_GROUP, O_SEARCH, O_METHOD, O_SEARCH_TOKENS, O_FORCE };

static const struct lmd_opt opts[] = {
	{"output", 'o', "DIR", "the quantized HF directory to write (required)"},
	{"stats", O_STATS, "FILE", "statistics from lmd-calib (default: computed here)"},
	{"method", O_METHOD, "M", "awq (default) or rtn (round-to-nearest, no scaling)"},
	{"w-bits", O_BITS, "N", "weight bits (default 4; only 4)"},
	{"w-group-size", O_GROUP, "N", "input channels per scale and zero (default 128)"},
	{"search-scale", O_SEARCH, NULL, "search the AWQ ratio per layer on calibration activations"},
	{"search-tokens", O_SEARCH_TOKENS, "N", "activation rows kept per linear input for the search (default 512)"},
	{"force", O_FORCE, NULL, "replace the output directory if it exists"},
	LMD_CALIB_OPTS,
	{"device", LMD_RO_DEVICE, "DEV", "auto (default: cuda when a GPU is there), cpu or cuda"},
	{"dtype", LMD_RO_DTYPE, "TYPE", "compute dtype of the calibration run: fp32, fp16 or bf16 (default: the weights')"},
	{"threads", LMD_RO_THREADS, "N", "CPU threads (default: every core)"},
	{0},
};

struct both {
	struct lmd_calib_stats *st;  /* NULL when read from a file */
	struct lmd_awq_acts *acts;   /* NULL without --search-scale */
};

static void both_tap(void *ctx, int layer, enum lmd_tap point, const struct lmd_tensor *t)
{
	struct both *b = ctx;
	if (b->st)
		lmd_calib_stats_tap(b->st, layer, point, t);
	if (b->acts)
		lmd_awq_acts_tap(b->acts, layer, point, t);
}

static void log_line(void *ctx, const char *line)
{
	lmd_log(ctx, 1, "%s", line);
}

int main(int argc, char **argv)
{
	struct lmd_cli cli = {
		.prog = "lmd-awq",
		.synopsis = "MODEL -o DIR [OPTIONS]",
		.purpose = "Quantize a model's linear weights to 4 bits (AWQ or round-to-nearest) as an AutoAWQ HF directory.",
		.example = "lmd-awq share/models/lmd-tiny --stats tiny.calib --w-group-size 64 -o tiny-awq",
		.opts = opts,
	};
	struct lmd_calib_opts co;
	lmd_calib_opts_default(&co);
	struct lmd_runner_opts ro = {.dtype = LMD_DTYPE_NONE};
	struct lmd_awq_opts ao = {.bits = 4, .group_size = 128, .method = 1};
	struct lmd_err err = {0};
	const char *arg, *out = NULL, *stats_path = NULL;
	int k, force = 0, search_tokens = 512;
	while ((k = lmd_cli_next(&cli, argc, argv, &arg)) != -1) {
		if (lmd_calib_opt(&co, &cli, k, arg) || lmd_runner_opt(&ro, &cli, k, arg))
			continue;
		switch (k) {
		case 'o': out = arg; break;
		case O_STATS: stats_path = ao.stats_name = arg; break;
		case O_METHOD:
			if (strcmp(arg, "awq") && strcmp(arg, "rtn"))
				lmd_usage(&cli, "--method: '%s' is not awq or rtn", arg);
			ao.method = !strcmp(arg, "awq");
			break;
		case O_BITS: ao.bits = (int)lmd_cli_long(&cli, "w-bits", arg, 4, 4); break;
		case O_GROUP: ao.group_size = (int)lmd_cli_long(&cli, "w-group-size", arg, 8, 1 << 16); break;
		case O_SEARCH: ao.search_scale = 1; break;
		case O_SEARCH_TOKENS: search_tokens = (int)lmd_cli_long(&cli, "search-tokens", arg, 1, 1 << 20); break;
		case O_FORCE: force = 1; break;
		}
	}
	if (argc - optind != 1)
		lmd_usage(&cli, "expected one MODEL directory");
	if (!out)
		lmd_usage(&cli, "-o DIR is required");
	if (ao.method == 0 && ao.search_scale)
		lmd_usage(&cli, "--search-scale needs --method awq");
	ro.model = argv[optind];
	if (lmd_outdir_check(out, ro.model, force, &err))  /* before minutes of work */
		lmd_die(cli.prog, &err);
	if ((ao.method == 1 && !stats_path) || ao.search_scale) {  /* calibration text, before loading the model */
		char *dataset = lmd_calib_dataset_path(co.dataset, co.data_dir, &err);
		if (!dataset)
			lmd_die(cli.prog, &err);
		free(dataset);
	}
	struct lmd_calib_stats st = {0};
	struct lmd_awq_acts acts = {0};
	struct lmd_runner r = {0};
	int rc = LMD_OK, need_stats = ao.method == 1 && !stats_path, run = need_stats || ao.search_scale;
	if (stats_path)
		rc = lmd_calib_stats_read(&st, stats_path, &err);
	if (!rc && run) {
		ro.max_batch = co.batch, ro.session_len = co.seqlen, ro.max_prefill = co.batch * co.seqlen;
		rc = lmd_runner_open(&r, &ro, &err);
		if (!rc && stats_path)
			rc = lmd_calib_stats_check(&st, &r.m.cfg, stats_path, &err);
		if (!rc && need_stats)
			rc = lmd_calib_stats_init(&st, &r.m.cfg, &err);
		long total = (long)co.samples * co.seqlen, stride = total / search_tokens;
		if (!rc && ao.search_scale)
			rc = lmd_awq_acts_init(&acts, &r.m.cfg, search_tokens, stride > 0 ? (int)stride : 1, &err);
		struct both b = {need_stats ? &st : NULL, ao.search_scale ? &acts : NULL};
		if (!rc) {
			lmd_log(&cli, 0, "calibrating on %d windows of %d tokens from '%s'", co.samples, co.seqlen, co.dataset);
			struct lmd_cli_progress pr;
			co.progress = lmd_cli_progress(&pr, &cli, "calibration windows");
			rc = lmd_calib_collect(&r.m, &r.tok, &co, both_tap, &b, need_stats ? &st : NULL, &err);
		}
		lmd_runner_close(&r);
	}
	if (!rc) {
		lmd_log(&cli, 0, "quantizing with %s, %d bits, groups of %d%s", ao.method ? "awq" : "rtn", ao.bits,
			ao.group_size, ao.search_scale ? ", searched scales" : "");
		rc = lmd_awq_quantize(ro.model, out, &ao, ao.method ? &st : NULL, ao.search_scale ? &acts : NULL, force,
				      log_line, &cli, &err);
	}
	lmd_awq_acts_free(&acts);
	lmd_calib_stats_free(&st);
	if (rc)
		lmd_die(cli.prog, &err);
	lmd_log(&cli, 0, "wrote '%s'", out);
	return 0;
}
