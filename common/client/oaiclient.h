/**
 * The client side of the OpenAI HTTP API, shared by `lmd-run client` and `lmd-bench serve`: request
 * bodies, the server-sent-events (SSE) stream of a streamed answer, usage and error objects, the
 * model list and the tokenizer endpoints (wire format: ../shared/docs/peers.md, Part 3).
 *
 * One struct lmd_oai_call is one HTTP request on a libcurl easy handle, which the caller runs with
 * curl_easy_perform (one at a time) or adds to a curl multi handle (many at once); the call parses
 * the bytes as they arrive, wherever the network splits them, and hands every streamed chunk to a
 * callback at once. The caller initialises libcurl (curl_global_init). Nothing here prints or exits.
 */
#ifndef LMD_OAICLIENT_H
#define LMD_OAICLIENT_H

#include <curl/curl.h>
#include <jansson.h>
#include <stddef.h>

#include "err.h"

// ---------------------------------------------------------------------------------------------
// Server-sent events (the WHATWG parsing rules): lines end in LF, CRLF or CR; "data:" lines of one
// event are joined with LF; a blank line dispatches the event; ":" lines are comments (pings).

struct lmd_sse {
	/* the caller's: called for each event with data; a nonzero return stops lmd_sse_feed */
	int (*on_event)(void *ctx, const char *event, const char *data, size_t len);
	void *ctx;                /* borrowed */
	char *line;               /* owned: the line being read */
	size_t nline, cline;
	char *data;               /* owned: the event's data so far, NUL-terminated */
	size_t ndata, cdata;
	char event[32];           /* the event's type ("" means "message") */
	int has_data, after_cr, started;
};

/**
 * Feed the next n bytes of the stream (any split: mid-line, mid-character). Returns LMD_OK, the
 * callback's nonzero value, or LMD_EFORMAT when a line or an event passes 64 MiB.
 */
int lmd_sse_feed(struct lmd_sse *s, const char *p, size_t n, struct lmd_err *err);

/** Free the buffers; a zeroed struct is safe; leaves the callback in place. */
void lmd_sse_free(struct lmd_sse *s);

// ---------------------------------------------------------------------------------------------
// One call.

/** What one streamed chunk (or a whole non-streamed answer) brought; pointers borrowed for the callback. */
struct lmd_oai_piece {
	const char *text;     /* the first choice's delta.content (chat) or text (completions); "" when absent */
	size_t len;
	int has_text;         /* the first choice carried a content or text field (a role-only chunk does not) */
	const char *finish;   /* finish_reason, or NULL */
};

struct lmd_oai_call {
	/* set by the caller before lmd_oai_call_init (or left NULL): a nonzero return stops the transfer */
	int (*on_piece)(struct lmd_oai_call *c, const struct lmd_oai_piece *p, void *ctx);
	void *ctx;                      /* borrowed */

	/* results, filled as the answer arrives and by lmd_oai_call_end */
	long status;                    /* the HTTP status; 0 when no answer came */
	int done;                       /* data: [DONE] seen, or a whole non-streamed answer read */
	int stopped;                    /* on_piece asked to stop */
	int pieces;                     /* chunks that had a choice */
	long prompt_tokens;             /* usage, or -1 when the server sent none */
	long completion_tokens;
	char finish[24];                /* the last finish_reason seen, "" when none */
	char stream_error[256];         /* the message of a mid-stream error event, "" when none */

	CURL *h;                        /* owned: the easy handle (add it to a multi handle, or perform it) */
	struct curl_slist *headers;     /* owned */
	char *url, *body;               /* owned */
	char *resp;                     /* owned: the body when it is not an event stream (capped at 1 MiB) */
	size_t nresp, cresp;
	int is_sse;                     /* the answer is text/event-stream */
	struct lmd_sse sse;
};

/**
 * Prepare a request to url: a POST of body (a JSON text, copied) or a GET when body is NULL, with
 * "Authorization: Bearer KEY" when api_key is not NULL. A zeroed struct is safe to free.
 */
int lmd_oai_call_init(struct lmd_oai_call *c, const char *url, const char *api_key, const char *body,
		      struct lmd_err *err);

/**
 * After the transfer ended with res: LMD_OK when the server answered 2xx and, for a stream, sent
 * data: [DONE] (or the caller stopped it). Otherwise a one-line message: the server cannot be reached
 * ("cannot reach 'URL': ..."), "HTTP 401: <the error object's message>", a stream cut before [DONE],
 * or a mid-stream error event. A non-streamed 2xx answer to a completion is parsed here (one piece).
 * Codes: LMD_EINVAL for a 400 or 422 (a bad request), LMD_EFAIL otherwise.
 */
int lmd_oai_call_end(struct lmd_oai_call *c, CURLcode res, struct lmd_err *err);

/** Release everything; the struct is zeroed (the callback and ctx kept). */
void lmd_oai_call_free(struct lmd_oai_call *c);

/** Run one call to its end with curl_easy_perform; returns lmd_oai_call_end's status. */
int lmd_oai_call_run(struct lmd_oai_call *c, struct lmd_err *err);

// ---------------------------------------------------------------------------------------------
// Requests and answers.

/**
 * url + path, where url is the server's root or ends in "/v1" (as the openai clients' baseURL does):
 * "http://h:p/v1" and "http://h:p/" both give "http://h:p" + path. Returns an owned string or NULL.
 */
char *lmd_oai_url(const char *url, const char *path);

/**
 * The body of a streamed request with usage asked for (stream_options.include_usage): fields of
 * params (borrowed; may be NULL: max_tokens, temperature, ...) and "model" (omitted when NULL).
 * Chat: messages is an array of {"role", "content"}; completions: prompt is the text.
 * Returns an owned JSON text, or NULL with err set.
 */
char *lmd_oai_chat_body(const char *model, const json_t *messages, const json_t *params, struct lmd_err *err);
char *lmd_oai_completion_body(const char *model, const char *prompt, const json_t *params, struct lmd_err *err);

/** The id of the first model of a /v1/models answer, copied to out; LMD_EFORMAT when there is none. */
int lmd_oai_parse_models(const char *body, size_t len, char *out, size_t cap, struct lmd_err *err);

/** Ask url's GET /v1/models (with api_key, or none) and copy the first model's id to out. */
int lmd_oai_first_model(const char *url, const char *api_key, char *out, size_t cap, struct lmd_err *err);

/** Tokenizer endpoints: LMDeploy's POST /v1/encode and vLLM's (and lmd's) POST /tokenize. */
enum lmd_oai_tokenizer { LMD_OAI_TOK_NONE, LMD_OAI_TOK_ENCODE, LMD_OAI_TOK_TOKENIZE };

/** The path and body that count the tokens of text (without special tokens); body owned, NULL on error. */
const char *lmd_oai_tokenize_path(enum lmd_oai_tokenizer t);
char *lmd_oai_tokenize_body(enum lmd_oai_tokenizer t, const char *model, const char *text, struct lmd_err *err);

/** The token count of a tokenizer endpoint's answer ("length", "count", "input_ids" or "tokens"); -1 if none. */
long lmd_oai_token_count(const char *body, size_t len);

/**
 * One line for an HTTP error answer: the OpenAI error object's message ({"error": {"message"}}),
 * vLLM's older flat {"message"}, or the start of the body; written to out.
 */
void lmd_oai_error_text(const char *body, size_t len, char *out, size_t cap);

#endif
