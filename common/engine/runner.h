/**
 * A model ready to generate: the model directory, a backend, the weights and KV pool, the
 * tokenizer, the chat template and a scheduler, opened together from the options every running
 * tool shares (lmd-run generate / chat / serve, lmd-bench). Fields are owned unless noted.
 */
#ifndef LMD_RUNNER_H
#define LMD_RUNNER_H

#include "backend.h"
#include "tok/chat.h"
#include "model.h"
#include "modeldir.h"
#include "scheduler.h"
#include "tok/tokenizer.h"

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
	int prefix_caching;           /* share KV blocks of common prompt prefixes (lmd_model_opts.prefix_cache) */
	int deterministic;            /* --deterministic: batch-invariant results (lmd_backend_opts.deterministic) */
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
 * The memory a runner with options o takes for the model in dir (bytes), predicted as lmd_runner_open
 * sizes it: the weights' stored bytes, the model's workspace (model.h: seven activations of max_tokens
 * rows, the logit rows), one KV block (all layers, K and V, in the KV dtype of quant_policy), and the
 * pool: max_batch sessions of session_len tokens, at most cache_max_entry_count of avail (the memory
 * free once the weights and the workspace are resident; 0: no cap), at least one session.
 */
struct lmd_runner_mem {
	size_t weights, workspace, block_bytes;
	int max_tokens;               /* rows of the workspace: a prefill chunk beside a decode token of each sequence */
	int block_len, session_len, session_blocks, max_batch;
	int kv_blocks;                /* the pool */
};
void lmd_runner_predict(const struct lmd_modeldir *dir, const struct lmd_runner_opts *o, size_t avail,
			struct lmd_runner_mem *m);
/** A field of /proc/meminfo ("MemAvailable", "MemTotal") in bytes; 0 when unknown. */
size_t lmd_host_mem(const char *field);


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

/**
 * The prompt tokens for chat messages with tools (tools_json: a JSON array of OpenAI tools, or NULL),
 * rendered as the chat template shows them, and suffix (or NULL) after the generation prompt: the
 * start of a tool call, when one is forced.
 */
int lmd_runner_prompt_tools(const struct lmd_runner *r, const struct lmd_chat_msg *msgs, int nmsg,
			    const char *tools_json, const char *suffix, int32_t **ids, int *n, struct lmd_err *err);

/** Fill a request's generation fields from p (sampling, max_tokens, ignore_eos, stop strings). */
void lmd_gen_params_apply(const struct lmd_gen_params *p, struct lmd_request *req);

/** One line describing the runner (device, dtype, weights and KV memory) for --verbose. */
void lmd_runner_describe(const struct lmd_runner *r, char *buf, size_t n);

#endif
