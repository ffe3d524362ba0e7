#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lmd.h"

enum { KEY_HELP = 1000, KEY_VERSION };

static const struct lmd_opt common_opts[] = {
	{"help", KEY_HELP, NULL, "print this help and exit"},
	{"version", KEY_VERSION, NULL, "print the version and exit"},
	{"verbose", 'v', NULL, "more messages on stderr (repeatable)"},
	{"quiet", 'q', NULL, "only errors on stderr"},
	{0},
};

static int count(const struct lmd_opt *o)
{
	int n = 0;
	while (o && o[n].name)
		n++;
	return n;
}

static void help_rows(const struct lmd_opt *o, FILE *f)
{
	for (; o->name; o++) {
		char left[64];
		int n = 0;
		if (o->key > 0 && o->key < 128)
			n = snprintf(left, sizeof(left), "-%c, ", o->key);
		else
			n = snprintf(left, sizeof(left), "    ");
		snprintf(left + n, sizeof(left) - n, "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
		fprintf(f, "  %-30s %s\n", left, o->help);
	}
}

void lmd_cli_help(const struct lmd_cli *c, FILE *f)
{
	fprintf(f, "Usage: %s %s\n\n%s\n", c->prog, c->synopsis, c->purpose);
	if (c->example)
		fprintf(f, "\nExample:\n  %s\n", c->example);
	fprintf(f, "\nOptions:\n");
	if (c->opts)
		help_rows(c->opts, f);
	help_rows(common_opts, f);
}

void lmd_usage(const struct lmd_cli *c, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", c->prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nUsage: %s %s\nTry '%s --help' for more.\n", c->prog, c->synopsis, c->prog);
	exit(LMD_EXIT_USAGE);
}

void lmd_die(const char *prog, const struct lmd_err *e)
{
	fprintf(stderr, "%s: %s\n", prog, e->msg[0] ? e->msg : "failed");
	exit(lmd_err_exit_code(e->code ? e->code : LMD_EFAIL));
}

int lmd_cli_next(struct lmd_cli *c, int argc, char **argv, const char **arg)
{
	int n = count(c->opts), m = count(common_opts);
	struct option lo[n + m + 1];
	char so[3 * (n + m) + 2];
	int k = 0;
	if (!c->started) {  /* GNU order: options may follow positional arguments; restart for each command */
		optind = 0;
		c->started = 1;
	}
	for (int i = 0; i < n + m; i++) {
		const struct lmd_opt *o = i < n ? &c->opts[i] : &common_opts[i - n];
		lo[i] = (struct option){o->name, o->arg ? required_argument : no_argument, NULL, o->key};
		if (o->key > 0 && o->key < 128) {
			so[k++] = (char)o->key;
			if (o->arg)
				so[k++] = ':';
		}
	}
	lo[n + m] = (struct option){0};
	so[k] = 0;
	opterr = 0;
	for (;;) {
		int key = getopt_long(argc, argv, so, lo, NULL);
		*arg = optarg;
		switch (key) {
		case KEY_HELP:
			lmd_cli_help(c, stdout);
			exit(0);
		case KEY_VERSION:
			printf("%s %s\n", c->prog, LMD_VERSION);
			exit(0);
		case 'v':
			c->verbose++;
			continue;
		case 'q':
			c->verbose--;
			continue;
		case '?':
			if (optopt && optopt < 128)
				lmd_usage(c, "bad option '-%c' or missing argument", optopt);
			lmd_usage(c, "bad option '%s' or missing argument", argv[optind - 1]);
		default:
			return key;
		}
	}
}

long lmd_cli_long(const struct lmd_cli *c, const char *opt, const char *s, long lo, long hi)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (!*s || *end || errno || v < lo || v > hi)
		lmd_usage(c, "--%s: '%s' is not a whole number from %ld to %ld", opt, s, lo, hi);
	return v;
}

double lmd_cli_double(const struct lmd_cli *c, const char *opt, const char *s, double lo, double hi)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (!*s || *end || errno || !isfinite(v) || v < lo || v > hi)
		lmd_usage(c, "--%s: '%s' is not a number from %g to %g", opt, s, lo, hi);
	return v;
}

void lmd_log(const struct lmd_cli *c, int level, const char *fmt, ...)
{
	if (c->verbose < level)
		return;
	va_list ap;
	fprintf(stderr, "%s: ", c->prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void dispatch_usage(const char *prog, const char *purpose, const struct lmd_subcommand *subs, int n, FILE *f)
{
	fprintf(f, "Usage: %s COMMAND [OPTIONS] ...\n\n%s\n\nCommands:\n", prog, purpose);
	for (int i = 0; i < n; i++)
		fprintf(f, "  %-12s %s\n", subs[i].name, subs[i].purpose);
	fprintf(f, "\nOptions:\n  --help        print this help and exit\n  --version     print the version and exit\n"
		   "\n'%s COMMAND --help' describes a command.\n", prog);
}

int lmd_cli_dispatch(const char *prog, const char *purpose, const struct lmd_subcommand *subs, int n, int argc,
		     char **argv)
{
	if (argc < 2) {
		dispatch_usage(prog, purpose, subs, n, stderr);
		return LMD_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		dispatch_usage(prog, purpose, subs, n, stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("%s %s\n", prog, LMD_VERSION);
		return 0;
	}
	for (int i = 0; i < n; i++)
		if (!strcmp(argv[1], subs[i].name))
			return subs[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "%s: unknown command '%s'\n", prog, argv[1]);
	dispatch_usage(prog, purpose, subs, n, stderr);
	return LMD_EXIT_USAGE;
}

/* Options may come before or after the positional arguments (lmd_cli_next permutes them);
 * at the end the positional ones are collected into pos. Returns the next key or -1 at the end. */
int lmd_cli_next_pos(struct lmd_cli *c, int argc, char **argv, const char **arg, char **pos, int *npos, int maxpos)
{
	int k = lmd_cli_next(c, argc, argv, arg);
	if (k != -1)
		return k;
	while (optind < argc) {
		if (*npos >= maxpos)
			lmd_usage(c, "too many arguments");
		pos[(*npos)++] = argv[optind++];
	}
	return -1;
}
