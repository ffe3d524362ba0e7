/**
 * Command-line handling for cmd/: one option table drives getopt_long and --help,
 * so the help text and the options accepted cannot drift apart (t/man.bats checks
 * the man pages against --help).
 *
 * Every tool gets --help (stdout, exit 0), --version, -v/--verbose and -q/--quiet
 * from here. Misuse prints a one-line reason and the synopsis to stderr, exit 2.
 * This is the only module besides cmd/ that may call exit().
 */
#ifndef LMD_CLI_H
#define LMD_CLI_H

#include <stdio.h>

#include "err.h"

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
 * lmd_cli_next for commands whose options may come before or after their positional arguments: at the
 * end (-1) the positional ones are collected into pos[*npos..maxpos) (more is a usage error).
 */
int lmd_cli_next_pos(struct lmd_cli *c, int argc, char **argv, const char **arg, char **pos, int *npos, int maxpos);

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
