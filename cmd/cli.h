/**
 * Command-line handling for cmd/: one option table drives getopt_long and --help,
 * so the help text and the options accepted cannot drift apart (t/man.bats checks
 * the man pages against --help).
 *
 * Every tool gets --help (stdout, exit 0), --version, -v/--verbose and -q/--quiet
 * from here. LMDeploy's underscore spellings of long options (--session_len) are accepted. A row
 * of a table overrides a later row of the same name (a command's own default over a shared
 * macro's). Misuse prints a one-line reason and the synopsis to stderr, exit 2.
 * This is the only module besides cmd/ that may call exit().
 */
#ifndef LMD_CLI_H
#define LMD_CLI_H

#include <stdio.h>

#include "err.h"
#include "lmd.h"

struct lmd_opt {
	const char *name;  /* long name without "--" */
	int key;           /* short letter, or a value >= 256 for long-only options */
	const char *arg;   /* argument name shown in help, NULL for a flag */
	const char *help;  /* one line */
};

struct lmd_cli {
	const char *prog;      /* "lmd-convert" or "lmd-run generate" */
	const char *synopsis;  /* "[OPTIONS] SRC DST" */
	const char *purpose;   /* one sentence */
	const char *example;   /* one example command line, or NULL */
	const struct lmd_opt *opts;  /* terminated by {0}; borrowed */
	int verbose;           /* -v count minus -q count, set by lmd_cli_next */
	int started;           /* lmd_cli_next has begun parsing */
};

/**
 * Return the next option's key, with its argument in *arg (NULL for flags); -1 when the
 * options end (positional arguments start at optind). Handles --help, --version,
 * -v and -q itself, and exits 2 on an unknown option or a missing argument.
 */
int lmd_cli_next(struct lmd_cli *c, int argc, char **argv, const char **arg);

/**
 * Name the program for messages and arrange that, at exit, standard output is flushed and checked:
 * lost output prints "PROG: cannot write standard output: REASON" and exits 3. lmd_cli_next and
 * lmd_cli_dispatch call it; a main that uses neither calls it first.
 */
void lmd_cli_init(const char *prog);

/** Flush standard output (for streamed text); -1 when it is lost (the exit check then reports why). */
int lmd_cli_flush(void);

/**
 * Print the options of c (NULL: none) and, when common, those every tool takes, as roff .TP
 * paragraphs for a man page's OPTIONS (the hidden option --man-options prints them; `make man`
 * puts them into man/; t/man.bats checks the pages agree).
 */
void lmd_cli_man(const struct lmd_cli *c, FILE *f, int common);

/**
 * lmd_cli_next for commands whose options may come before or after their positional arguments: at the
 * end (-1) the positional ones are collected into pos[*npos..maxpos) (more is a usage error).
 */
int lmd_cli_next_pos(struct lmd_cli *c, int argc, char **argv, const char **arg, char **pos, int *npos, int maxpos);

/**
 * The one progress line of every long step: "PROG: WHAT DONE/TOTAL, M:SS left" rewritten in place on
 * stderr, only when stderr is a terminal and not under -q. lmd_cli_progress fills pr (owned by the
 * caller, alive while the step runs) and returns what to give the library (NULL when not shown).
 */
struct lmd_cli_progress {
	struct lmd_progress p;
	const struct lmd_cli *cli;
	const char *what;
	double t0, shown;
};
const struct lmd_progress *lmd_cli_progress(struct lmd_cli_progress *pr, const struct lmd_cli *c, const char *what);

/** Print the help text to f. */
void lmd_cli_help(const struct lmd_cli *c, FILE *f);

/** Print "PROG: MSG" and the synopsis to stderr, exit 2. */
void lmd_usage(const struct lmd_cli *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));

/** Print "PROG: MSG" for e to stderr and exit with its exit code. */
void lmd_die(const char *prog, const struct lmd_err *e) __attribute__((noreturn));

/** A subcommand: a whole command taking (argc, argv) with argv[0] its own name; returns the exit status. */
struct lmd_subcommand {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *purpose;
};

/**
 * main() of a tool made of subcommands: "PROG COMMAND ..." runs the command; --help lists the commands
 * (under "Commands:"), --version prints the version; anything else is a usage error (exit 2).
 */
int lmd_cli_dispatch(const char *prog, const char *purpose, const struct lmd_subcommand *subs, int n, int argc,
		     char **argv);

/** Parse numbers strictly (whole string, range-checked); exit 2 naming the option otherwise. */
long lmd_cli_long(const struct lmd_cli *c, const char *opt, const char *s, long lo, long hi);
double lmd_cli_double(const struct lmd_cli *c, const char *opt, const char *s, double lo, double hi);

/** Log to stderr when c->verbose >= level (0: normal, -1 always unless -q, 1: -v). */
void lmd_log(const struct lmd_cli *c, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
