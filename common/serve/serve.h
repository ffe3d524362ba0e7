/**
 * common/serve/: what serving the OpenAI API needs that is not HTTP glue, as pure functions of their
 * inputs (no I/O, no printing, no exit), so that the request decoding can be fuzzed and every
 * encoding tested without a socket. cmd/lmd-run/serve.c holds the HTTP server and the engine thread.
 *
 *   request.c   an HTTP body -> struct lmd_api_request (chat, completion, encode), or an OpenAI error
 *   response.c  OpenAI JSON out: responses, stream chunks, errors, the model list, /v1/encode
 *   metrics.c   the server's counters and histograms -> Prometheus text
 *
 * Strings handed back are malloc'd (the caller frees); NULL means out of memory.
 */
#ifndef LMD_SERVE_H
#define LMD_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include "tok/chat.h"
#include "engine/runner.h"
#include "engine/scheduler.h"
#include "tok/tokenizer.h"

struct json_t;

/** An OpenAI error object: {"error": {"message", "type", "param", "code"}} sent with HTTP status. */
struct lmd_api_error {
	int status;             /* 400, 401, 404, 405, 413, 429, 500, 503 */
	char param[64];         /* the request field at fault; "" = null */
	char code[40];          /* a machine-readable code ("model_not_found", ...); "" = null */
	char message[512];
};
/** Fill e; the type follows the status (400 invalid_request_error, 401 authentication_error, ...). Returns -1. */
int lmd_api_errorf(struct lmd_api_error *e, int status, const char *param, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
/** "invalid_request_error" for 400, and so on for each status. */
const char *lmd_api_error_type(int status);

enum lmd_api_kind { LMD_API_CHAT, LMD_API_COMPLETION };

/** Most choices one request may ask for (prompts x n). */
#define LMD_API_MAX_CHOICES 64

/** A completion prompt: text, or token ids. */
struct lmd_api_prompt {
	const char *text;       /* borrowed from the body; NULL when ids */
	size_t len;
	int32_t *ids;           /* owned [nids] */
	int nids;
};

/** A decoded request. Strings are borrowed from body unless noted. A zeroed struct is safe to free. */
struct lmd_api_request {
	enum lmd_api_kind kind;
	struct json_t *body;            /* owned: the parsed body */
	const char *model;              /* NULL when not given */
	struct lmd_chat_msg *msgs;      /* owned [nmsg] (chat); contents borrowed from body or joined */
	int nmsg;
	char **joined;                  /* owned [nmsg]: contents joined from text parts (NULL where a string) */
	struct lmd_api_prompt *prompts; /* owned [nprompt] (completion) */
	int nprompt;
	struct lmd_gen_params p;        /* the defaults given to lmd_api_decode, overridden by the request */
	int max_tokens;                 /* max_completion_tokens, else max_tokens; 0 = not given */
	int seed_given;
	int n;                          /* choices per prompt, >= 1 */
	int stream, include_usage;
	int logprobs, top_logprobs;     /* log-probabilities wanted, and alternatives per token */
	int echo;                       /* completion: the prompt comes before the text */
	int keep_special;               /* skip_special_tokens: false */
};

/**
 * Decode body[0..len) of a chat or completion request: JSON, the fields OpenAI, vLLM and LMDeploy
 * define (unknown fields ignored, null as absent), types and ranges checked. defaults (the model's
 * generation_config.json over lmd's) fill what the request leaves out. On a client mistake returns -1
 * with e filled (status 400, param naming the field); 0 on success. Never reads past len.
 */
int lmd_api_decode(struct lmd_api_request *q, enum lmd_api_kind kind, const char *body, size_t len,
		   const struct lmd_gen_params *defaults, struct lmd_api_error *e);
void lmd_api_request_free(struct lmd_api_request *q);

/** LMDeploy's /v1/encode: {"input": str | [str], "do_preprocess": false, "add_bos": true}. */
struct lmd_api_encode {
	struct json_t *body;            /* owned */
	const char **input;             /* owned [n] of borrowed */
	int n;
	int is_list;
	int do_preprocess;              /* render each input as a user message through the chat template */
	int add_bos;
};
int lmd_api_decode_encode(struct lmd_api_encode *q, const char *body, size_t len, struct lmd_api_error *e);
void lmd_api_encode_free(struct lmd_api_encode *q);

/** Constant-time check of an "Authorization: Bearer KEY" header value against keys[0..n). */
int lmd_api_key_ok(const char *authorization, const char *const *keys, int n);

// --- responses (response.c)

/** What every response and chunk of one request shares. */
struct lmd_api_meta {
	enum lmd_api_kind kind;
	const char *id;                 /* "chatcmpl-..." or "cmpl-..." */
	long created;                   /* unix seconds */
	const char *model;
	const struct lmd_tokenizer *tok;/* for the tokens' text in log-probabilities */
	int logprobs;
};

/** One choice: its whole text (a response) or the piece a chunk carries. */
struct lmd_api_choice {
	int index;
	const char *text;
	size_t len;
	const char *finish;             /* "stop", "length", ...; NULL while running */
	const struct lmd_logprob *lp;   /* [nlp] the tokens of this text (with logprobs) */
	int nlp;
	size_t offset;                  /* completion log-probabilities: where text starts in the choice's text */
};

struct lmd_api_usage {
	int prompt, completion;
};

char *lmd_api_error_json(const struct lmd_api_error *e);
/** A whole response: "chat.completion" or "text_completion". */
char *lmd_api_response(const struct lmd_api_meta *m, const struct lmd_api_choice *c, int n,
		       const struct lmd_api_usage *u);
/**
 * A stream chunk for one choice ("data: " and the blank line are the caller's). first: the chat
 * chunk that opens a choice (delta.role). usage_null: the chunk carries "usage": null (include_usage).
 */
char *lmd_api_chunk(const struct lmd_api_meta *m, const struct lmd_api_choice *c, int first, int usage_null);
/** The last chunk with include_usage: no choices, the usage. */
char *lmd_api_usage_chunk(const struct lmd_api_meta *m, const struct lmd_api_usage *u);
/** GET /v1/models. */
char *lmd_api_models(const char *model, long created);
/** /v1/encode's answer: ids[i][0..n[i]) for each input (one input: not nested). */
char *lmd_api_encoded(int32_t *const *ids, const int *n, int count, int is_list);

// --- metrics (metrics.c)

#define LMD_HIST_MAX 24
struct lmd_histogram {
	int nb;
	const double *le;               /* borrowed [nb]: the buckets' upper bounds, rising (+Inf added) */
	uint64_t counts[LMD_HIST_MAX];  /* per bucket, not cumulative */
	uint64_t count;
	double sum;
};
void lmd_histogram_observe(struct lmd_histogram *h, double v, uint64_t times);

#define LMD_METRIC_FINISH_KINDS (LMD_FINISH_CANCEL + 1)

/** The server's state and counters, as /metrics shows them. */
struct lmd_serve_stats {
	int running, waiting;                   /* requests in the scheduler */
	int blocks_used, blocks_total;          /* KV blocks held by requests; the pool */
	int blocks_cached;                      /* KV blocks kept only by the prefix cache (free, counted apart) */
	uint64_t prompt_tokens, generation_tokens, prefill_tokens, preemptions;
	uint64_t prefix_queries, prefix_hits;   /* prefix cache: prompt tokens looked up, found cached */
	uint64_t finished[LMD_METRIC_FINISH_KINDS];
	struct lmd_histogram ttft, itl, e2e;    /* seconds */
};
void lmd_serve_stats_init(struct lmd_serve_stats *st);
/** Count a finished request: tokens, finish reason, latencies. */
void lmd_serve_stats_finished(struct lmd_serve_stats *st, const struct lmd_request *r);
/** The Prometheus text exposition (version 0.0.4) of st, labelled with the model name. */
char *lmd_serve_metrics_text(const struct lmd_serve_stats *st, const char *model);

#endif
