/**
 * The conversation loop that `lmd-run chat` and `lmd-run client` share: lines from a terminal
 * (readline: editing, history) or from piped stdin, a trailing backslash continuing a line, the slash
 * commands (/reset, /system TEXT, /exit), and the messages of the conversation so far.
 */
#ifndef LMD_REPL_H
#define LMD_REPL_H

#include "tok/chat.h"

struct lmd_repl {
	struct lmd_chat_msg *msgs;  /* owned array; each content owned, each role a string literal */
	int n, cap;
	const char *system;         /* borrowed: the --system option's, or sys_owned; NULL for none */
	char *sys_owned;            /* owned: set by /system */
	int tty;                    /* stdin and stdout are terminals: readline and a prompt */
};

enum lmd_repl_step {
	LMD_REPL_END,    /* end of input, /exit or /quit */
	LMD_REPL_ASK,    /* a user message joined the conversation: answer it */
	LMD_REPL_RESET,  /* the conversation started over (/reset, /system): drop what depends on it */
	LMD_REPL_NONE,   /* an empty line or an unknown command (explained on stderr) */
};

/** Set up: tty decided from stdin and stdout, the conversation opened with the system prompt. */
int lmd_repl_init(struct lmd_repl *r, const char *system);

/** Read the next line and act on it; returns an enum lmd_repl_step, or LMD_ENOMEM. */
int lmd_repl_next(struct lmd_repl *r);

/** Add a message (content copied); LMD_ENOMEM on failure. */
int lmd_repl_push(struct lmd_repl *r, const char *role, const char *content);

/** Forget the last message (one that could not be answered). */
void lmd_repl_pop(struct lmd_repl *r);

/** Start over: only the system prompt, when there is one. */
int lmd_repl_reset(struct lmd_repl *r);

/** Free everything; a zeroed struct is safe. */
void lmd_repl_free(struct lmd_repl *r);

#endif
