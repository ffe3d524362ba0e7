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

enum { O_STATS = 256, O_BITS, O_GROUP, O_SEARCH, O_METHOD, O_SEARCH_TOKENS, O_FORCE, O_FIXED, O_NO_CLIP, O_NO_SEARCH, O_ACT_ORDER,
       O_DAMP, O_EQUALIZE, O_EQ_THR };

static const struct lmd_opt opts[] = {
	{"output", 'o', "DIR", "the quantized HF directory to write (required)"},
	{"method", O_METHOD, "M", "awq (default), gptq, or rtn (round-to-nearest, no calibration)"},
	{"stats", O_STATS, "FILE", "statistics from lmd-calib: awq's mean |x| (default: from the calibration run here)"},
	{"fixed-ratio", O_FIXED, NULL, "awq: LMDeploy's smoothing without search or clipping (ratio 0.5 on absmax)"},
	{"search-scale", O_SEARCH, NULL, "awq: search the scales (the default; LMDeploy's flag, kept)"},
	{"no-clip", O_NO_CLIP, NULL, "awq: skip the clipping search"},
	{"no-search", O_NO_SEARCH, NULL, "awq: skip the scale search (every scale 1): the clipping search alone"},
	{"search-tokens", O_SEARCH_TOKENS, "N", "awq: calibration tokens (whole windows) the scale search runs on (default 8192; 0 = all)"},
	{"equalize", O_EQUALIZE, NULL, "cross-layer equalization of each layer's weights first (data-free; any method)"},
	{"equalize-threshold", O_EQ_THR, "X", "equalize: move only channels more than X times off the median (default 2)"},
	{"act-order", O_ACT_ORDER, NULL, "gptq: quantize columns by decreasing Hessian diagonal"},
	{"damp", O_DAMP, "F", "gptq: dampening, a fraction of the mean Hessian diagonal (default 0.01)"},
	{"w-bits", O_BITS, "N", "weight bits (default 4; only 4)"},
	{"w-group-size", O_GROUP, "N", "input channels per scale and zero (default 128)"},
	{"force", O_FORCE, NULL, "replace the output directory if it exists"},
	LMD_CALIB_OPTS,
	{"device", LMD_RO_DEVICE, "DEV", "auto (default: cuda when a GPU is there), cpu or cuda"},
	{"dtype", LMD_RO_DTYPE, "TYPE", "compute dtype of the calibration run: fp32, fp16 or bf16 (default: the weights')"},
	{"threads", LMD_RO_THREADS, "N", "CPU threads (default: every core)"},
	{0},
};

struct both {
	struct lmd_calib_stats *st;  /* NULL when not collected here */
	struct lmd_awq_acts *acts;   /* NULL when not needed */
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
		.purpose = "Quantize a model's linear weights to 4 bits (AWQ, GPTQ or round-to-nearest) as an AutoAWQ HF directory.",
		.example = "lmd-awq share/models/lmd-tiny --calib-samples 32 --search-tokens 1024 -o tiny-awq",
		.opts = opts,
	};
	struct lmd_calib_opts co;
	lmd_calib_opts_default(&co);
	co.seqlen = 512;  /* AutoAWQ's windows */
	struct lmd_runner_opts ro = {.dtype = LMD_DTYPE_NONE};
	struct lmd_awq_opts ao = {.bits = 4, .group_size = 128, .method = LMD_QUANT_AWQ, .damp = 0.01,
				  .search_rows = 8192};
	struct lmd_err err = {0};
	const char *arg, *out = NULL, *stats_path = NULL;
	int k, force = 0, awq_only = 0, gptq_only = 0, equalize = 0;
	double eq_thr = 0;
	while ((k = lmd_cli_next(&cli, argc, argv, &arg)) != -1) {
		if (lmd_calib_opt(&co, &cli, k, arg) || lmd_runner_opt(&ro, &cli, k, arg))
			continue;
		switch (k) {
		case 'o': out = arg; break;
		case O_STATS: stats_path = ao.stats_name = arg; awq_only = 1; break;
		case O_METHOD:
			if (strcmp(arg, "awq") && strcmp(arg, "rtn") && strcmp(arg, "gptq"))
				lmd_usage(&cli, "--method: '%s' is not awq, gptq or rtn", arg);
			ao.method = !strcmp(arg, "awq") ? LMD_QUANT_AWQ : !strcmp(arg, "gptq") ? LMD_QUANT_GPTQ : LMD_QUANT_RTN;
			break;
		case O_BITS: ao.bits = (int)lmd_cli_long(&cli, "w-bits", arg, 4, 4); break;
		case O_GROUP: ao.group_size = (int)lmd_cli_long(&cli, "w-group-size", arg, 8, 1 << 16); break;
		case O_FIXED: ao.fixed_ratio = awq_only = 1; break;
		case O_SEARCH: awq_only = 1; break;
		case O_NO_CLIP: ao.no_clip = awq_only = 1; break;
		case O_NO_SEARCH: ao.no_search = awq_only = 1; break;
		case O_SEARCH_TOKENS: ao.search_rows = (int)lmd_cli_long(&cli, "search-tokens", arg, 0, 1 << 30); awq_only = 1; break;
		case O_ACT_ORDER: ao.act_order = gptq_only = 1; break;
		case O_DAMP:
			ao.damp = lmd_cli_double(&cli, "damp", arg, 0, 1);
			gptq_only = 1;
			break;
		case O_EQUALIZE: equalize = 1; break;
		case O_EQ_THR: eq_thr = lmd_cli_double(&cli, "equalize-threshold", arg, 1.01, 1e6); break;
		case O_FORCE: force = 1; break;
		}
	}
	if (argc - optind != 1)
		lmd_usage(&cli, "expected one MODEL directory");
	if (!out)
		lmd_usage(&cli, "-o DIR is required");
	if (awq_only && ao.method != LMD_QUANT_AWQ)
		lmd_usage(&cli, "--stats, --fixed-ratio, --search-scale, --no-clip, --no-search and --search-tokens need --method awq");
	if (gptq_only && ao.method != LMD_QUANT_GPTQ)
		lmd_usage(&cli, "--act-order and --damp need --method gptq");
	if (eq_thr > 0 && !equalize)
		lmd_usage(&cli, "--equalize-threshold needs --equalize");
	ao.equalize = equalize ? (eq_thr > 0 ? eq_thr : 2) : 0;
	ao.threads = ro.threads;
	ro.model = argv[optind];
	int fixed = ao.method == LMD_QUANT_AWQ && ao.fixed_ratio;
	int need_stats = fixed && !stats_path, need_acts = ao.method != LMD_QUANT_RTN && !fixed;
	if (lmd_outdir_check(out, ro.model, force, &err))  /* before minutes of work */
		lmd_die(cli.prog, &err);
	if (need_stats || need_acts) {  /* calibration text, before loading the model */
		char *dataset = lmd_calib_dataset_path(co.dataset, co.data_dir, &err);
		if (!dataset)
			lmd_die(cli.prog, &err);
		free(dataset);
	}
	struct lmd_calib_stats st = {0};
	struct lmd_awq_acts acts = {0};
	struct lmd_runner r = {0};
	struct lmd_cli_progress pr, pl;
	int rc = LMD_OK;
	if (stats_path)
		rc = lmd_calib_stats_read(&st, stats_path, &err);
	if (!rc && (need_stats || need_acts)) {
		co.docs = need_acts;
		ro.max_batch = co.batch, ro.session_len = co.seqlen, ro.max_prefill = co.batch * co.seqlen;
		rc = lmd_runner_open(&r, &ro, &err);
		if (!rc && stats_path)
			rc = lmd_calib_stats_check(&st, &r.m.cfg, stats_path, &err);
		if (!rc && need_stats)
			rc = lmd_calib_stats_init(&st, &r.m.cfg, &err);
		if (!rc && need_acts)
			rc = lmd_awq_acts_init(&acts, &r.m.cfg, co.seqlen, &err);
		struct both b = {need_stats ? &st : NULL, need_acts ? &acts : NULL};
		if (!rc) {
			if (need_acts)
				lmd_log(&cli, 0, "calibrating on windows of %d tokens cut from %d documents of '%s'", co.seqlen,
					co.samples, co.dataset);
			else
				lmd_log(&cli, 0, "calibrating on %d windows of %d tokens from '%s'", co.samples, co.seqlen,
					co.dataset);
			co.progress = lmd_cli_progress(&pr, &cli, "calibration windows");
			rc = lmd_calib_collect(&r.m, &r.tok, &co, both_tap, &b, need_stats ? &st : NULL, &err);
		}
		if (!rc && need_acts)
			lmd_log(&cli, 0, "%lld calibration windows of %d tokens", (long long)(acts.n[0] / co.seqlen), co.seqlen);
		if (!rc && (acts.err || st.err))
			rc = lmd_errorf(&err, LMD_ENOMEM, "out of memory for the calibration activations");
		lmd_runner_close(&r);
	}
	if (!rc) {
		static const char *names[] = {"rtn", "awq", "gptq"};
		lmd_log(&cli, 0, "quantizing with %s%s%s, %d bits, groups of %d", equalize ? "equalization, then " : "",
			names[ao.method], fixed ? " (fixed ratio)" : ao.method == LMD_QUANT_AWQ ? (ao.no_clip ? (ao.no_search ? " (neither search nor clip)" : " (search)")
			: ao.no_search ? " (clip)" : " (search + clip)") : ao.act_order ? " (act-order)" : "", ao.bits, ao.group_size);
		ao.progress = lmd_cli_progress(&pl, &cli, "layers");
		rc = lmd_awq_quantize(ro.model, out, &ao, stats_path || need_stats ? &st : NULL, need_acts ? &acts : NULL,
				      force, log_line, &cli, &err);
	}
	lmd_awq_acts_free(&acts);
	lmd_calib_stats_free(&st);
	if (rc)
		lmd_die(cli.prog, &err);
	lmd_log(&cli, 0, "wrote '%s'", out);
	return 0;
}
