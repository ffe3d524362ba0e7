/**
 * Chat templates: data files share/templates/NAME.tmpl that say how a list of messages becomes
 * a prompt string, which tokens stop generation, and how tools go into the prompt and are found
 * in the output. The prompt string holds special tokens as text (e.g. "<|im_start|>"); encode it
 * with lmd_tokenizer_encode(add_special = 0): the tokenizer matches them.
 *
 * File format: UTF-8 lines "key = value"; '#' starts a comment line; blank lines are ignored.
 * A value is the rest of the line, trimmed, or a "double-quoted" string; both understand the
 * escapes \n \t \" \\. In formats, {content} is the message text, {role} its role, {bos} / {eos}
 * the tokenizer's BOS / EOS token text, {system} (system_first_user only) the system text,
 * {tools} (tools_in_system / tools_message / tools_in_first_user only) the tools, {calls}
 * (assistant_tool_calls only) the rendered calls, {name} and {arguments} (tool_call only) one call's
 * function name and arguments. JSON goes in as the Hugging Face templates' tojson writes it (pyjson.h).
 * An empty list of tools is no tools.
 *
 *   name              the template's name (the file's base name)
 *   prefix            text at the very start of the prompt
 *   system            format of a system message
 *   default_system    system text used when the messages have none; when the key is present
 *                     (even "") a system message is always rendered
 *   system_first_user format of the first user message's {content} when a system message exists:
 *                     the system text is merged into it (Llama 2) instead of rendered alone
 *   user, assistant   formats of user and assistant messages
 *   other             format of a message of any other role (default: the user format)
 *   tool              format of a tool result (roles tool, ipython, environment, function)
 *   tool_open, tool_close  text before the first / after the last of consecutive tool results
 *   generation        appended when a generation prompt is asked for
 *   trim              "yes": strip white space around every message's content (Jinja's | trim),
 *                     except tool results; with system_first_user the merged content is stripped
 *   stop              a stop token (repeatable)
 *   tools_in_system   appended to the system text when tools are given; {tools} is each tool's
 *                     JSON on its own line, each preceded by "\n"
 *   tools_message     a message put after the system message when tools are given; {tools} is the
 *                     JSON list of the tools' function objects as LMDeploy writes it for InternLM2
 *                     (name, description, parameters; null when absent)
 *   system_tools      format of the system message when tools are given (instead of system)
 *   tools_in_first_user  when tools are given, the format of the first message after the system
 *                     one (whatever its role; an error when there is none): {tools} is each tool's
 *                     JSON indented by 4, each followed by a blank line (Llama 3.x)
 *   assistant_tool_calls  format of an assistant message with tool calls: {content} and {calls}
 *   tool_calls_content    format of that message's {content} when it is not empty (default: as is)
 *   tool_call         format of one call in {calls}; {arguments} is the decoded arguments' JSON (a
 *                     JSON string when they are not JSON). Its text up to {name} (leading white
 *                     space dropped) is also what starts a call in the model's answer
 *   tool_calls_max    at most this many calls a message (more is an error, as in Llama 3.x)
 *   tool_json         "yes": tool results are written as a JSON string (Llama 3.x's template)
 *   tool_parser       the --tool-call-parser this family's answers need (internlm, qwen, llama3)
 *   tool_call_open, tool_call_close  what marks a tool call in the model's output
 */
#ifndef LMD_CHAT_H
#define LMD_CHAT_H

#include <stddef.h>

#include "err.h"
#include "tokenizer.h"

#define LMD_CHAT_MAX_STOP 8

struct lmd_chat_template {
	char *name;            /* owned */
	char *prefix, *system, *default_system, *system_first_user, *user, *assistant, *other;
	char *tool, *tool_open, *tool_close, *generation;
	char *tools_in_system, *tools_message, *tool_call_open, *tool_call_close;
	char *system_tools, *tools_in_first_user, *assistant_tool_calls, *tool_calls_content, *tool_call;
	char *tool_parser;     /* owned; NULL when the key is absent */
	int trim, tool_json, tool_calls_max;
	int n_stop;
	char *stop[LMD_CHAT_MAX_STOP];  /* owned */
	char *bos, *eos;       /* owned copies of the tokenizer's BOS / EOS text ("" when none) */
};

struct lmd_chat_msg {
	const char *role;        /* borrowed: "system", "user", "assistant", "tool", ... */
	const char *content;     /* borrowed; NULL renders as "" */
	const char *tool_calls;  /* borrowed JSON array of OpenAI tool calls ({id, type, function: {name,
	                          * arguments}}, arguments a JSON string) of an assistant message; or NULL */
};

/** Parse template text; what names it in errors. Zeroed struct safe to free; freed on error. */
int lmd_chat_template_parse(struct lmd_chat_template *ct, const char *text, size_t len, const char *what,
			    struct lmd_err *err);

/** Load share/templates/NAME.tmpl (see share.h for the lookup). */
int lmd_chat_template_load(struct lmd_chat_template *ct, const char *name, struct lmd_err *err);

/**
 * The template name for the model whose tokenizer is t, read from its files (never from the
 * path): the Jinja chat_template of tokenizer_config.json by its markers (Qwen2.5's default system
 * -> "qwen", ChatML with "You are a helpful assistant." -> "qwen2", other ChatML -> "internlm2",
 * "Cutting Knowledge Date" -> "llama3_1", <|start_header_id|> -> "llama3", [INST] -> "llama2");
 * "base" when there is no chat template. Returns a static string.
 */
const char *lmd_chat_template_auto(const struct lmd_tokenizer *t);

/**
 * Load the template name, or when name is NULL or "" the automatic choice for t
 * (lmd_chat_template_auto), and bind t's BOS/EOS text. Callers pass --chat-template, else the
 * template an lmd model directory records (lmd_config.chat_template), as name.
 */
int lmd_chat_template_choose(struct lmd_chat_template *ct, const char *name, const struct lmd_tokenizer *t,
			     struct lmd_err *err);
void lmd_chat_template_free(struct lmd_chat_template *ct);

/**
 * Render msgs[0..n) into *out (malloc'd, NUL-terminated, caller frees), *len bytes. tools_json is
 * a JSON array of tools (OpenAI style) or NULL. add_generation_prompt appends the generation text.
 */
int lmd_chat_render(const struct lmd_chat_template *ct, const struct lmd_chat_msg *msgs, int n,
		    int add_generation_prompt, const char *tools_json, char **out, size_t *len, struct lmd_err *err);

/**
 * What starts a tool call in the model's answer (the tool_call format up to the function name; with
 * name, up to the arguments), to append to a prompt that must get a call. Malloc'd; NULL when the
 * template has no tool_call format or out of memory.
 */
char *lmd_chat_tool_call_prefix(const struct lmd_chat_template *ct, const char *name);

/** Render the messages of a JSON file: [{"role", "content", "tool_calls"?}, ...] or {"messages": [...], "tools": [...]}. */
int lmd_chat_render_file(const struct lmd_chat_template *ct, const char *path, int add_generation_prompt,
			 char **out, size_t *len, struct lmd_err *err);

/** Ids of the template's stop tokens (those the tokenizer knows), at most max; returns the count. */
int lmd_chat_stop_ids(const struct lmd_chat_template *ct, const struct lmd_tokenizer *t, int *ids, int max);

#endif
