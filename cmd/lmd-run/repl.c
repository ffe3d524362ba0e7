/* The conversation loop of lmd-run chat and lmd-run client (repl.h). */
#include <errno.h>
#include <readline/history.h>
#include <readline/readline.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "repl.h"

int lmd_repl_push(struct lmd_repl *r, const char *role, const char *content)
{
	if (r->n == r->cap) {
		int nc = r->cap ? r->cap * 2 : 16;
		struct lmd_chat_msg *m = realloc(r->msgs, nc * sizeof(*m));
		if (!m)
			return LMD_ENOMEM;
		r->msgs = m;
		r->cap = nc;
	}
	char *dup = strdup(content);
	if (!dup)
		return LMD_ENOMEM;
	r->msgs[r->n++] = (struct lmd_chat_msg){.role = role, .content = dup};
	return LMD_OK;
}

void lmd_repl_pop(struct lmd_repl *r)
{
	if (r->n)
		free((char *)r->msgs[--r->n].content);
}

int lmd_repl_reset(struct lmd_repl *r)
{
	while (r->n)
		lmd_repl_pop(r);
	return r->system ? lmd_repl_push(r, "system", r->system) : LMD_OK;
}

int lmd_repl_init(struct lmd_repl *r, const char *system)
{
	*r = (struct lmd_repl){.system = system, .tty = isatty(0) && isatty(1)};
	return lmd_repl_reset(r);
}

void lmd_repl_free(struct lmd_repl *r)
{
	while (r->n)
		lmd_repl_pop(r);
	free(r->msgs);
	free(r->sys_owned);
	*r = (struct lmd_repl){0};
}

/* One line of input (continued while it ends in a backslash); NULL at end of input. */
static char *read_input(struct lmd_repl *r)
{
	char *all = NULL;
	size_t len = 0;
	for (;;) {
		char *line = NULL;
		if (r->tty) {
			line = readline(all ? "... " : ">>> ");
		} else {
			size_t cap = 0;
			errno = 0;
			ssize_t n = getline(&line, &cap, stdin);
			if (n < 0 && errno == EINTR) {  /* Ctrl-C between answers: not the end of the input */
				free(line);
				clearerr(stdin);
				continue;
			}
			if (n < 0) {
				free(line);
				line = NULL;
			} else if (n && line[n - 1] == '\n') {
				line[n - 1] = 0;
			}
		}
		if (!line)
			return all;
		size_t ll = strlen(line);
		int more = ll && line[ll - 1] == '\\';
		if (more)
			line[--ll] = 0;
		char *na = realloc(all, len + ll + 2);
		if (!na) {
			free(line);
			return all;
		}
		all = na;
		if (len)
			all[len++] = '\n';
		memcpy(all + len, line, ll + 1);
		len += ll;
		free(line);
		if (!more)
			break;
	}
	if (r->tty && *all)
		add_history(all);
	return all;
}

int lmd_repl_next(struct lmd_repl *r)
{
	char *line = read_input(r);
	int rc = LMD_REPL_NONE;
	if (!line || !strcmp(line, "/exit") || !strcmp(line, "/quit")) {
		rc = LMD_REPL_END;
	} else if (!strcmp(line, "/reset")) {
		rc = lmd_repl_reset(r) ? LMD_ENOMEM : LMD_REPL_RESET;
		fprintf(stderr, "(conversation reset)\n");
	} else if (!strncmp(line, "/system", 7) && (!line[7] || line[7] == ' ')) {
		free(r->sys_owned);
		r->system = r->sys_owned = strdup(line[7] ? line + 8 : "");
		rc = !r->system || lmd_repl_reset(r) ? LMD_ENOMEM : LMD_REPL_RESET;
		fprintf(stderr, "(system prompt set; conversation reset)\n");
	} else if (*line == '/') {
		fprintf(stderr, "commands: /reset, /system TEXT, /exit\n");
	} else if (*line) {
		rc = lmd_repl_push(r, "user", line) ? LMD_ENOMEM : LMD_REPL_ASK;
	}
	free(line);
	return rc;
}
