/* lmd-convert: HF model directory -> lmd model directory; --info describes a model. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "convert/convert.h"

enum { O_DTYPE = 256, O_TP, O_MODEL_NAME, O_CHAT_TEMPLATE, O_MODEL_FORMAT, O_INFO, O_JSON, O_FORCE };

static const struct lmd_opt opts[] = {
	{"dtype", O_DTYPE, "TYPE", "weight dtype: keep (default), fp16, bf16 or fp32"},
	{"tp", O_TP, "N", "split the weights for N tensor-parallel ranks (default 1)"},
	{"model-format", O_MODEL_FORMAT, "FMT", "source format: hf (default) or awq (AutoAWQ gemm 4-bit)"},
	{"model-name", O_MODEL_NAME, "NAME", "name recorded in the model (default: the source directory's name)"},
	{"chat-template", O_CHAT_TEMPLATE, "NAME", "chat template recorded in the model (default: chosen when run)"},
	{"force", O_FORCE, NULL, "replace DST if it exists"},
	{"info", O_INFO, NULL, "describe the model in SRC (lmd or HF) instead of converting"},
	{"json", O_JSON, NULL, "with --info: print one JSON object"},
	{0},
};

int main(int argc, char **argv)
{
	struct lmd_cli cli = {
		.prog = "lmd-convert",
		.synopsis = "[OPTIONS] SRC DST | --info [--json] DIR",
		.purpose = "Convert an HF model directory (or re-split an lmd one) into an lmd model directory.",
		.example = "lmd-convert --dtype fp16 --tp 2 share/models/lmd-tiny tiny-tp2",
		.opts = opts,
	};
	struct lmd_convert_opts o = {.dtype = LMD_DTYPE_NONE, .tp = 1};
	struct lmd_err err = {0};
	int info = 0, json = 0, k;
	const char *arg;
	while ((k = lmd_cli_next(&cli, argc, argv, &arg)) != -1) {
		switch (k) {
		case O_DTYPE:
			o.dtype = strcmp(arg, "keep") ? lmd_dtype_parse(arg) : LMD_DTYPE_NONE;
			if (strcmp(arg, "keep") && !lmd_dtype_is_float(o.dtype))
				lmd_usage(&cli, "--dtype: '%s' is not keep, fp16, bf16 or fp32", arg);
			break;
		case O_TP: o.tp = (int)lmd_cli_long(&cli, "tp", arg, 1, 32); break;
		case O_MODEL_FORMAT:
			if (strcmp(arg, "hf") && strcmp(arg, "awq"))
				lmd_usage(&cli, "--model-format: '%s' is not supported (hf, awq)", arg);
			o.model_format = arg;
			break;
		case O_MODEL_NAME: o.model_name = arg; break;
		case O_CHAT_TEMPLATE: o.chat_template = arg; break;
		case O_FORCE: o.force = 1; break;
		case O_INFO: info = 1; break;
		case O_JSON: json = 1; break;
		}
	}
	if (info) {
		if (argc - optind != 1)
			lmd_usage(&cli, "--info takes one directory");
		if (lmd_model_info(argv[optind], json, stdout, &err))
			lmd_die(cli.prog, &err);
		return 0;
	}
	if (json)
		lmd_usage(&cli, "--json goes with --info");
	if (argc - optind != 2)
		lmd_usage(&cli, "expected SRC and DST");
	struct lmd_cli_progress pr;
	o.progress = lmd_cli_progress(&pr, &cli, "tensors");
	o.quiet = cli.verbose < 0;
	if (lmd_convert(argv[optind], argv[optind + 1], &o, &err))
		lmd_die(cli.prog, &err);
	lmd_log(&cli, 0, "wrote '%s'", argv[optind + 1]);
	return 0;
}
