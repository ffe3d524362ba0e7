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
 * (white space next to a call is dropped).
 *
 * Streamed (lmd_tool_stream_feed), a call is handed out as soon as its name is a known function and
 * its arguments object has begun as valid JSON, and its arguments follow as the model writes them,
 * the model's JSON with Python's separators (", " and ": "); only a key, a number or an escape not yet
 * complete, and what may be the start of the closing marker, is held back. Once handed out a call
 * stays a call: should its arguments break off (the answer ends, or they stop being JSON) they are
 * closed there, so the fragments always concatenate to a JSON object, and the text from the fault
 * on is content. A whole answer (lmd_tool_stream_finish alone) is decided call by call when complete,
 * as above, with the arguments as Python's json.dumps writes them.
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
	char *arguments;  /* owned: a JSON object; NULL while a streamed call is still being read */
	size_t sent;      /* private: bytes of the arguments handed out as deltas */
	int announced;    /* private: the call's first delta is out */
};

/* private: the JSON object of the call being streamed (toolcall.c) */
#define LMD_TOOL_DEPTH 32
struct lmd_tool_lex {
	int st, bad, depth, is_key, esc, u8, key, name_st, args_st, committed;
	unsigned char lo, hi;           /* the range of the next byte of a UTF-8 sequence */
	char stack[LMD_TOOL_DEPTH];     /* the closing bracket of each open level */
	struct lmd_sb *cap;             /* the string of the call object being captured (key or name) */
	struct lmd_sb keyb, name, lit;
	struct lmd_sb out;              /* the arguments as sent: the model's JSON, Python's separators */
	size_t safe;                    /* out[0..safe) can be sent: closing it gives a JSON object */
};

struct lmd_tool_stream {
	enum lmd_tool_parser kind;
	const char *const *names;      /* borrowed: the functions a call may name */
	int n_names;
	struct lmd_tool_call *calls;   /* owned: every call found so far, in order */
	int n_calls;
	/* private */
	struct lmd_sb pend, raw, held;
	struct lmd_tool_lex lex;
	size_t scan, rest;   /* in raw: the next byte to read; where the calls not streamed begin */
	int cap, in_call, decided, after_call;
	int open, streamed, stop, from;
};

/** Start parsing one answer. kind LMD_TOOLS_NONE passes everything through as content. */
void lmd_tool_stream_init(struct lmd_tool_stream *s, enum lmd_tool_parser kind, const char *const *names, int n_names);

/**
 * Feed the next piece of the answer (the prefix that forced a call first, when one did). Appends
 * to *content the content to send now; calls found (or, streamed, begun) are appended to s->calls.
 * Returns 0 or LMD_ENOMEM.
 */
int lmd_tool_stream_feed(struct lmd_tool_stream *s, const char *text, size_t n, struct lmd_sb *content);

/**
 * The answer ends with text[0..n): decide what was held back (an unclosed call is still a call when
 * valid); every call's arguments are then set. The whole answer given here at once is decided whole.
 */
int lmd_tool_stream_finish(struct lmd_tool_stream *s, const char *text, size_t n, struct lmd_sb *content);

void lmd_tool_stream_free(struct lmd_tool_stream *s);

/** The OpenAI message.tool_calls array of calls[0..n) (new reference). */
json_t *lmd_tool_calls_json(const struct lmd_tool_call *calls, int n);

/**
 * What the calls gained since the last call of this, as choices[].delta.tool_calls arrays (new
 * reference, an array of them; NULL when nothing): a call opens with {index, id, type, function:
 * {name, arguments: ""}}, then {index, function: {arguments}} pieces follow; a call's pieces
 * concatenate to its arguments.
 */
json_t *lmd_tool_stream_deltas(struct lmd_tool_stream *s);

/**
 * The names of the functions in a request's tools (borrowed from tools; caller frees the array);
 * with only_name, just that one when it is offered. *n is the count; NULL and *n = 0 when none.
 */
const char **lmd_tool_names(const json_t *tools, const char *only_name, int *n);

#endif
