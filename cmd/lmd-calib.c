/* lmd-calib: activation statistics of a model on calibration text (calib.h), as msgpack. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quant/calib.h"
#include "cli.h"
#include "engine/runner.h"
#include "file.h"
#include "opts.h"

static const struct lmd_opt opts[] = {
	LMD_CALIB_OPTS,
	{"output", 'o', "FILE", "write the statistics to FILE (default: stdout)"},
	{"device", LMD_RO_DEVICE, "DEV", "auto (default: cuda when a GPU is there), cpu or cuda"},
	{"dtype", LMD_RO_DTYPE, "TYPE", "compute dtype: fp32, fp16 or bf16 (default: the weights')"},
	{"threads", LMD_RO_THREADS, "N", "CPU threads (default: every core)"},
	{0},
};

int main(int argc, char **argv)
{
	struct lmd_cli cli = {
		.prog = "lmd-calib",
		.synopsis = "MODEL [OPTIONS]",
		.purpose = "Collect activation statistics of a model on calibration text (for lmd-awq and lmd-kvparams).",
		.example = "lmd-calib share/models/lmd-tiny --calib-samples 16 --calib-seqlen 256 -o tiny.calib",
		.opts = opts,
	};
	struct lmd_calib_opts co;
	lmd_calib_opts_default(&co);
	struct lmd_runner_opts ro = {.dtype = LMD_DTYPE_NONE};
	struct lmd_err err = {0};
	const char *arg, *out = "-";
	int k;
	while ((k = lmd_cli_next(&cli, argc, argv, &arg)) != -1) {
		if (lmd_calib_opt(&co, &cli, k, arg) || lmd_runner_opt(&ro, &cli, k, arg))
			continue;
		if (k == 'o')
			out = arg;
	}
	if (argc - optind != 1)
		lmd_usage(&cli, "expected one MODEL directory");
	if (!strcmp(out, "-") && isatty(STDOUT_FILENO))
		lmd_usage(&cli, "the statistics are binary: give -o FILE or redirect stdout");
	ro.model = argv[optind];
	char *dataset = lmd_calib_dataset_path(co.dataset, co.data_dir, &err);  /* before loading the model */
	if (!dataset)
		lmd_die(cli.prog, &err);
	free(dataset);
	struct lmd_out o;
	struct lmd_runner r;
	ro.max_batch = co.batch;
	ro.session_len = co.seqlen;
	ro.max_prefill = co.batch * co.seqlen;
	lmd_open_out_runner(&cli, &o, out, &r, &ro);
	struct lmd_calib_stats st;
	struct lmd_cli_progress pr;
	co.progress = lmd_cli_progress(&pr, &cli, "windows");
	int rc = lmd_calib_stats_init(&st, &r.m.cfg, &err);
	if (!rc)
		rc = lmd_calib_collect(&r.m, &r.tok, &co, lmd_calib_stats_tap, &st, &st, &err);
	if (!rc && st.err)
		rc = lmd_errorf(&err, LMD_ENOMEM, "out of memory");
	if (!rc) {
		lmd_log(&cli, 0, "%d windows of %d tokens from '%s': %lld tokens", co.samples, co.seqlen, co.dataset,
			(long long)st.tokens);
		rc = lmd_calib_stats_write(&st, o.f, &err);
	}
	rc = rc ? rc : lmd_out_commit(&o, &err);
	if (rc)
		lmd_out_abort(&o);
	lmd_calib_stats_free(&st);
	lmd_runner_close(&r);
	if (rc)
		lmd_die(cli.prog, &err);
	return 0;
}
