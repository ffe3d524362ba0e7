/**
 * A model ready to generate: the model directory, a backend, the weights and KV pool, the
 * tokenizer, the chat template and a scheduler, opened together from the options every running
 * tool shares (lmd-run generate / chat / serve, lmd-bench). Fields are owned unless noted.
 */
#ifndef LMD_RUNNER_H
#define LMD_RUNNER_H

#include "backend.h"
#include "chat.h"
#include "model.h"
#include "modeldir.h"
#include "scheduler.h"
#include "tokenizer.h"

struct lmd_runner_opts {
	const char *model;            /* an lmd or HF model directory */
	const char *device;           /* "auto", "cpu", "cuda" (NULL = $LMD_DEVICE, else auto) */
	enum lmd_dtype dtype;         /* compute dtype; LMD_DTYPE_NONE = the weights' */
	int threads;                  /* the CPU backend's (0 = every core) and the scheduler's sampling threads (0 = at most 8) */
	int session_len;              /* 0 = the model's max_position_embeddings */
	int block_len;                /* --cache-block-seq-len; 0 = 64 */
	int max_batch;                /* --max-batch-size; 0 = 64 */
	int max_prefill;              /* --max-prefill-token-num; 0 = 2048 */
	double cache_max_entry_count; /* fraction of free memory for the KV pool; 0 = 0.8 */
	const char *chat_template;    /* NULL = the model's / chosen from its files */
	int verbose;
	int quant_policy;             /* KV cache: 0 = the compute dtype, 8 = int8, 4 = int4 (online per token per head) */
	const char *kv_params;        /* NULL, or lmd-kvparams CSV: offline KV scales and zeros (quant_policy 8 or 4) */
	int tp;                       /* --tp: 0, or the ranks the model must be split for (checked) */
};

struct lmd_runner {
	struct lmd_modeldir dir;
	struct lmd_backend be;
	struct lmd_model m;
	struct lmd_tokenizer tok;
	struct lmd_chat_template tmpl;
	struct lmd_scheduler s;
	size_t kv_bytes;              /* the KV pool */
};

/**
 * The options every model-running command shares, for its struct lmd_opt table, and their parser:
 * lmd_runner_opt returns 1 when key was one of them (stored in o), 0 otherwise; it exits 2 on a bad value.
 */
enum {
	LMD_RO_DEVICE = 600, LMD_RO_DTYPE, LMD_RO_THREADS, LMD_RO_SESSION_LEN, LMD_RO_BLOCK, LMD_RO_BATCH,
	LMD_RO_PREFILL, LMD_RO_CACHE, LMD_RO_TEMPLATE, LMD_RO_QUANT_POLICY, LMD_RO_KV_PARAMS, LMD_RO_TP,
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
	{"tp", LMD_RO_TP, "N", "tensor-parallel ranks: must be the model's split (lmd-convert --tp; default: the model's)"}
struct lmd_cli;
int lmd_runner_opt(struct lmd_runner_opts *o, const struct lmd_cli *cli, int key, const char *arg);

/** Per-request generation settings: defaults from the command line, overridden per request. */
#define LMD_MAX_STOP_STRINGS 16
struct lmd_gen_params {
	struct lmd_sampling sampling;
	int max_tokens;               /* default 256 */
	int ignore_eos;
	int n_stop;
	const char *stop[LMD_MAX_STOP_STRINGS];  /* borrowed */
};
void lmd_gen_params_default(struct lmd_gen_params *p);
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

/** Open everything; errors name the file or option. A zeroed struct is safe to close. */
int lmd_runner_open(struct lmd_runner *r, const struct lmd_runner_opts *o, struct lmd_err *err);
void lmd_runner_close(struct lmd_runner *r);

/**
 * The prompt tokens for text (msgs NULL) or for the chat messages msgs[0..nmsg): messages go through the
 * chat template with a generation prompt; plain text is one user message, except under the "base"
 * template (base models), where it is used as it is. Under "base" the tokens start with BOS. *ids is malloc'd (caller frees). LMD_EINVAL for an empty
 * prompt or text that is not UTF-8.
 */
int lmd_runner_prompt(const struct lmd_runner *r, const char *text, const struct lmd_chat_msg *msgs, int nmsg,
		      int32_t **ids, int *n, struct lmd_err *err);

/** Fill a request's generation fields from p (sampling, max_tokens, ignore_eos, stop strings). */
void lmd_gen_params_apply(const struct lmd_gen_params *p, struct lmd_request *req);

/** One line describing the runner (device, dtype, weights and KV memory) for --verbose. */
void lmd_runner_describe(const struct lmd_runner *r, char *buf, size_t n);

#endif
