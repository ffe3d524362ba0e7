/**
 * Tool calls in a model's answer (LMDeploy's --tool-call-parser): the text is split into content and
 * OpenAI tool calls, as it streams in or all at once (the same code either way).
 *
 *   internlm  <|action_start|><|plugin|> JSON <|action_end|> (the end is a stop word, so often absent)
 *   qwen      <tool_call> JSON </tool_call>, as many as the model writes
 *   llama3    an answer that is JSON (optionally after <|python_tag|>), calls separated by ';'
 *
 * JSON is {"name": N, "arguments" or "parameters": {...}}. A call is accepted when it is complete
 * and valid: its JSON parses, N is one of the offered functions and the arguments are an object
 * (or absent: {}). Anything else, the markers included, stays content, as does text around calls
 * (white space next to a call is dropped). A call is only handed out once complete, so a streamed
 * call never turns back into content.
 */
#ifndef LMD_TOOLCALL_H
#define LMD_TOOLCALL_H

#include <jansson.h>
#include <stddef.h>

#include "sbuf.h"

enum lmd_tool_parser { LMD_TOOLS_NONE, LMD_TOOLS_INTERNLM, LMD_TOOLS_QWEN, LMD_TOOLS_LLAMA3 };

/** The parser named name ("internlm", "qwen", "llama3"; "" or NULL: none); -1 when unknown. */
int lmd_tool_parser_named(const char *name);

struct lmd_tool_call {
	char id[32];      /* "call_" and 24 random letters and digits */
	char *name;       /* owned */
	char *arguments;  /* owned: a JSON object, as Python's json.dumps writes it */
};

struct lmd_tool_stream {
	enum lmd_tool_parser kind;
	const char *const *names;      /* borrowed: the functions a call may name */
	int n_names;
	struct lmd_tool_call *calls;   /* owned: every call found so far, in order */
	int n_calls;
	/* private */
	struct lmd_sb pend, raw, held;
	int cap, in_call, decided, after_call;
};

/** Start parsing one answer. kind LMD_TOOLS_NONE passes everything through as content. */
void lmd_tool_stream_init(struct lmd_tool_stream *s, enum lmd_tool_parser kind, const char *const *names, int n_names);

/**
 * Feed the next piece of the answer (the prefix that forced a call first, when one did). Appends
 * to *content the content to send now; calls completed by this piece are appended to s->calls.
 * Returns 0 or LMD_ENOMEM.
 */
int lmd_tool_stream_feed(struct lmd_tool_stream *s, const char *text, size_t n, struct lmd_sb *content);

/** The answer has ended: decide what was held back (an unclosed call is still a call when valid). */
int lmd_tool_stream_finish(struct lmd_tool_stream *s, struct lmd_sb *content);

void lmd_tool_stream_free(struct lmd_tool_stream *s);

/** The OpenAI message.tool_calls array of calls[0..n) (new reference). */
json_t *lmd_tool_calls_json(const struct lmd_tool_call *calls, int n);

/**
 * The streamed deltas of one call, as choices[].delta.tool_calls arrays (new reference, an array of
 * them): first {index, id, type, function: {name, arguments: ""}}, then {index, function: {arguments}}
 * with the arguments; their arguments concatenate to the call's JSON.
 */
json_t *lmd_tool_call_deltas(const struct lmd_tool_call *c, int index);

/**
 * The names of the functions in a request's tools (borrowed from tools; caller frees the array);
 * with only_name, just that one when it is offered. *n is the count; NULL and *n = 0 when none.
 */
const char **lmd_tool_names(const json_t *tools, const char *only_name, int *n);

#endif
