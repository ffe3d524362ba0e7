/**
 * The option groups several tools share, for their struct lmd_opt tables, and their parsers: each
 * parser returns 1 when key was one of its group's (the value stored), 0 otherwise, and exits 2
 * (lmd_usage) on a bad value. The values land in the library's option structs (engine/runner.h,
 * quant/calib.h).
 */
#ifndef LMD_OPTS_H
#define LMD_OPTS_H

#include "cli.h"
#include "engine/runner.h"
#include "file.h"
#include "quant/calib.h"

/* The engine options every model-running command shares (struct lmd_runner_opts). */
enum {
	LMD_RO_DEVICE = 600, LMD_RO_DTYPE, LMD_RO_THREADS, LMD_RO_SESSION_LEN, LMD_RO_BLOCK, LMD_RO_BATCH,
	LMD_RO_PREFILL, LMD_RO_CACHE, LMD_RO_TEMPLATE, LMD_RO_QUANT_POLICY, LMD_RO_KV_PARAMS, LMD_RO_PREFIX,
	LMD_RO_NO_PREFIX, LMD_RO_TP, LMD_RO_DETERMINISTIC,
};
#define LMD_RUNNER_OPTS \
	{"device", LMD_RO_DEVICE, "DEV", "auto (default: cuda when a GPU is there), cpu or cuda"}, \
	{"dtype", LMD_RO_DTYPE, "TYPE", "compute dtype: fp32, fp16 or bf16 (default: the weights')"}, \
	{"threads", LMD_RO_THREADS, "N", "CPU threads (default: every core; at most 8 for sampling)"}, \
	{"session-len", LMD_RO_SESSION_LEN, "N", "most tokens in one sequence (default: the model's maximum)"}, \
	{"cache-block-seq-len", LMD_RO_BLOCK, "N", "tokens per KV-cache block (default 64)"}, \
	{"max-batch-size", LMD_RO_BATCH, "N", "most sequences run at once (default 64)"}, \
	{"max-prefill-token-num", LMD_RO_PREFILL, "N", "most prompt tokens prefilled per step (default 2048)"}, \
	{"cache-max-entry-count", LMD_RO_CACHE, "F", "fraction of free memory for the KV cache (default 0.8)"}, \
	{"chat-template", LMD_RO_TEMPLATE, "NAME", "chat template (default: the model's)"}, \
	{"quant-policy", LMD_RO_QUANT_POLICY, "N", "KV cache: 0 (default, the compute dtype), 8 (int8) or 4 (int4)"}, \
	{"kv-params", LMD_RO_KV_PARAMS, "FILE", "offline KV-cache scales and zeros from lmd-kvparams"}, \
	{"tp", LMD_RO_TP, "N", "tensor-parallel ranks: must be the model's split (lmd-convert --tp; default: the model's)"}, \
	{"deterministic", LMD_RO_DETERMINISTIC, NULL, "a request's tokens never depend on the others in its batch (the CPU always; on the GPU, slower products)"}
/* Prefix caching, for the tools that take it (parsed by lmd_runner_opt; the tool sets its default, off or on, first). */
#define LMD_PREFIX_OPTS \
	{"enable-prefix-caching", LMD_RO_PREFIX, NULL, "share the KV cache of common prompt prefixes between requests"}, \
	{"no-enable-prefix-caching", LMD_RO_NO_PREFIX, NULL, "do not (recompute every prompt)"}
int lmd_runner_opt(struct lmd_runner_opts *o, const struct lmd_cli *cli, int key, const char *arg);

/* Per-request generation settings (struct lmd_gen_params). */
enum {
	LMD_GO_MAX_TOKENS = 650, LMD_GO_TEMPERATURE, LMD_GO_TOP_P, LMD_GO_TOP_K, LMD_GO_MIN_P, LMD_GO_REPETITION,
	LMD_GO_SEED, LMD_GO_IGNORE_EOS, LMD_GO_STOP,
};
/* The sampling options but --temperature, whose default differs by tool (parsed by lmd_gen_opt). */
#define LMD_SAMPLING_OPTS \
	{"top-p", LMD_GO_TOP_P, "P", "nucleus sampling: smallest set with probability >= P (default 1)"}, \
	{"top-k", LMD_GO_TOP_K, "K", "sample among the K most likely tokens (default 0: all)"}, \
	{"min-p", LMD_GO_MIN_P, "P", "drop tokens below P times the top probability (default 0)"}, \
	{"repetition-penalty", LMD_GO_REPETITION, "R", "penalize tokens already seen (default 1: off)"}, \
	{"seed", LMD_GO_SEED, "N", "random seed: the same seed gives the same text (default: random, printed with -v)"}
#define LMD_GEN_OPTS \
	{"max-tokens", LMD_GO_MAX_TOKENS, "N", "most tokens to generate (default 256)"}, \
	{"temperature", LMD_GO_TEMPERATURE, "T", "sampling temperature, 0 = greedy (default 1)"}, \
	LMD_SAMPLING_OPTS, \
	{"ignore-eos", LMD_GO_IGNORE_EOS, NULL, "do not stop at the end-of-sequence token"}, \
	{"stop", LMD_GO_STOP, "TEXT", "stop when TEXT is generated (repeatable)"}
int lmd_gen_opt(struct lmd_gen_params *p, const struct lmd_cli *cli, int key, const char *arg);

/* The calibration options lmd-calib and lmd-awq share (struct lmd_calib_opts). */
enum { LMD_CO_DATASET = 700, LMD_CO_SAMPLES, LMD_CO_SEQLEN, LMD_CO_BATCH, LMD_CO_SEED, LMD_CO_DATA_DIR };
#define LMD_CALIB_OPTS \
	{"calib-dataset", LMD_CO_DATASET, "NAME", "wikitext2 (default), ptb, c4, or a text or JSON-lines FILE"}, \
	{"calib-samples", LMD_CO_SAMPLES, "N", "random windows of text (default 128; lmd-awq: documents, see its page)"}, \
	{"calib-seqlen", LMD_CO_SEQLEN, "N", "tokens per window (default 2048; lmd-awq: 512)"}, \
	{"batch-size", LMD_CO_BATCH, "N", "windows run at once (default 1)"}, \
	{"seed", LMD_CO_SEED, "N", "seed of the window offsets (default 0)"}, \
	{"data-dir", LMD_CO_DATA_DIR, "DIR", "where named datasets are (default: $LMD_DATA, else the installed data)"}
/** 1 when key was one of LMD_CALIB_OPTS (stored in o), 0 otherwise; exits 2 on a bad value. */
int lmd_calib_opt(struct lmd_calib_opts *o, const struct lmd_cli *cli, int key, const char *arg);

/**
 * Open the output out ("-": standard output), then the runner of ro, and log the runner's one-line
 * description: what every model-running command that writes a file does first. Dies (lmd_die) when
 * either fails, leaving no half-written output.
 */
void lmd_open_out_runner(const struct lmd_cli *cli, struct lmd_out *o, const char *out, struct lmd_runner *r,
			 const struct lmd_runner_opts *ro);

#endif
