/* The shared option groups (opts.h). */
#include <stdint.h>
#include <string.h>

#include "opts.h"

int lmd_runner_opt(struct lmd_runner_opts *o, const struct lmd_cli *cli, int key, const char *arg)
{
	switch (key) {
	case LMD_RO_DEVICE:
		if (strcmp(arg, "auto") && strcmp(arg, "cpu") && strcmp(arg, "cuda"))
			lmd_usage(cli, "--device: '%s' is not auto, cpu or cuda", arg);
		o->device = arg;
		return 1;
	case LMD_RO_DTYPE:
		o->dtype = lmd_dtype_parse(arg);
		if (!lmd_dtype_is_float(o->dtype))
			lmd_usage(cli, "--dtype: '%s' is not fp32, fp16 or bf16", arg);
		return 1;
	case LMD_RO_THREADS: o->threads = (int)lmd_cli_long(cli, "threads", arg, 1, 1024); return 1;
	case LMD_RO_SESSION_LEN: o->session_len = (int)lmd_cli_long(cli, "session-len", arg, 2, 1 << 24); return 1;
	case LMD_RO_BLOCK: o->block_len = (int)lmd_cli_long(cli, "cache-block-seq-len", arg, 1, 1 << 16); return 1;
	case LMD_RO_BATCH: o->max_batch = (int)lmd_cli_long(cli, "max-batch-size", arg, 1, 1 << 16); return 1;
	case LMD_RO_PREFILL: o->max_prefill = (int)lmd_cli_long(cli, "max-prefill-token-num", arg, 1, 1 << 20); return 1;
	case LMD_RO_QUANT_POLICY:
		o->quant_policy = (int)lmd_cli_long(cli, "quant-policy", arg, 0, 8);
		if (o->quant_policy != 0 && o->quant_policy != 4 && o->quant_policy != 8)
			lmd_usage(cli, "--quant-policy: '%s' is not 0, 4 or 8", arg);
		return 1;
	case LMD_RO_KV_PARAMS: o->kv_params = arg; return 1;
	case LMD_RO_TP: o->tp = (int)lmd_cli_long(cli, "tp", arg, 1, 32); return 1;
	case LMD_RO_CACHE: o->cache_max_entry_count = lmd_cli_double(cli, "cache-max-entry-count", arg, 1e-6, 1); return 1;
	case LMD_RO_TEMPLATE: o->chat_template = arg; return 1;
	case LMD_RO_PREFIX: o->prefix_caching = 1; return 1;
	case LMD_RO_NO_PREFIX: o->prefix_caching = 0; return 1;
	case LMD_RO_DETERMINISTIC: o->deterministic = 1; return 1;
	default: return 0;
	}
}

int lmd_gen_opt(struct lmd_gen_params *p, const struct lmd_cli *cli, int key, const char *arg)
{
	switch (key) {
	case LMD_GO_MAX_TOKENS: p->max_tokens = (int)lmd_cli_long(cli, "max-tokens", arg, 1, 1 << 24); return 1;
	case LMD_GO_TEMPERATURE: p->sampling.temperature = (float)lmd_cli_double(cli, "temperature", arg, 0, 100); return 1;
	case LMD_GO_TOP_P: p->sampling.top_p = (float)lmd_cli_double(cli, "top-p", arg, 1e-9, 1); return 1;
	case LMD_GO_TOP_K: p->sampling.top_k = (int)lmd_cli_long(cli, "top-k", arg, 0, 1 << 24); return 1;
	case LMD_GO_MIN_P: p->sampling.min_p = (float)lmd_cli_double(cli, "min-p", arg, 0, 1); return 1;
	case LMD_GO_REPETITION:
		p->sampling.repetition_penalty = (float)lmd_cli_double(cli, "repetition-penalty", arg, 1e-3, 100);
		return 1;
	case LMD_GO_SEED: p->sampling.seed = (uint64_t)lmd_cli_long(cli, "seed", arg, 0, 0x7fffffffffffffffL); return 1;
	case LMD_GO_IGNORE_EOS: p->ignore_eos = 1; return 1;
	case LMD_GO_STOP:
		if (p->n_stop == LMD_MAX_STOP_STRINGS)
			lmd_usage(cli, "--stop: at most %d stop strings", LMD_MAX_STOP_STRINGS);
		if (!*arg)
			lmd_usage(cli, "--stop: empty stop string");
		p->stop[p->n_stop++] = arg;
		return 1;
	default: return 0;
	}
}

int lmd_calib_opt(struct lmd_calib_opts *o, const struct lmd_cli *cli, int key, const char *arg)
{
	switch (key) {
	case LMD_CO_DATASET: o->dataset = arg; return 1;
	case LMD_CO_SAMPLES: o->samples = (int)lmd_cli_long(cli, "calib-samples", arg, 1, 1 << 20); return 1;
	case LMD_CO_SEQLEN: o->seqlen = (int)lmd_cli_long(cli, "calib-seqlen", arg, 2, 1 << 20); return 1;
	case LMD_CO_BATCH: o->batch = (int)lmd_cli_long(cli, "batch-size", arg, 1, 4096); return 1;
	case LMD_CO_SEED: o->seed = (uint64_t)lmd_cli_long(cli, "seed", arg, 0, 0x7fffffffL); return 1;
	case LMD_CO_DATA_DIR: o->data_dir = arg; return 1;
	}
	return 0;
}

void lmd_open_out_runner(const struct lmd_cli *cli, struct lmd_out *o, const char *out, struct lmd_runner *r,
			 const struct lmd_runner_opts *ro)
{
	struct lmd_err err = {0};
	char desc[512];
	if (lmd_out_open(o, out, &err))
		lmd_die(cli->prog, &err);
	if (lmd_runner_open(r, ro, &err)) {
		lmd_out_abort(o);
		lmd_die(cli->prog, &err);
	}
	lmd_runner_describe(r, desc, sizeof(desc));
	lmd_log(cli, 0, "%s", desc);
}
