#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "lmd.h"

enum { KEY_HELP = 1000, KEY_VERSION, KEY_MAN };

static const struct lmd_opt common_opts[] = {
	{"help", KEY_HELP, NULL, "print this help and exit"},
	{"version", KEY_VERSION, NULL, "print the version and exit"},
	{"verbose", 'v', NULL, "more messages on stderr (repeatable)"},
	{"quiet", 'q', NULL, "only errors on stderr"},
	{0},
};

static const char *exit_prog = "lmd";
static int stdout_errno;  /* why the first failed lmd_cli_flush failed */

int lmd_cli_flush(void)
{
	if (fflush(stdout) == 0 && !ferror(stdout))
		return 0;
	if (!stdout_errno)
		stdout_errno = errno ? errno : EIO;
	return -1;
}

/* At exit: standard output lost (a full disk, a closed pipe with SIGPIPE ignored) is an error, exit 3. */
static void close_stdout(void)
{
	int bad = lmd_cli_flush() != 0;
	if (fclose(stdout) != 0 && !bad)
		bad = 1, stdout_errno = errno;
	if (!bad)
		return;
	fprintf(stderr, "%s: cannot write standard output: %s\n", exit_prog, strerror(stdout_errno ? stdout_errno : EIO));
	_exit(LMD_EXIT_FORMAT);
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static void show_progress(void *ctx, long done, long total)
{
	struct lmd_cli_progress *pr = ctx;
	double t = now_s();
	if (done < total && t - pr->shown < 0.2)
		return;
	pr->shown = t;
	long left = done > 0 ? (long)((t - pr->t0) * (double)(total - done) / (double)done + 0.5) : -1;
	char eta[32] = "";
	if (done < total && left >= 0)
		snprintf(eta, sizeof(eta), ", %ld:%02ld left", left / 60, left % 60);
	fprintf(stderr, "\r%s: %s %ld/%ld%s\033[K%s", pr->cli->prog, pr->what, done, total, eta, done >= total ? "\n" : "");
}

const struct lmd_progress *lmd_cli_progress(struct lmd_cli_progress *pr, const struct lmd_cli *c, const char *what)
{
	*pr = (struct lmd_cli_progress){.p = {show_progress, pr}, .cli = c, .what = what, .t0 = now_s()};
	return c->verbose >= 0 && isatty(STDERR_FILENO) ? &pr->p : NULL;
}

void lmd_cli_init(const char *prog)
{
	static int done;
	exit_prog = prog;
	if (!done++)
		atexit(close_stdout);
}

/* Is o a later row of the table starting at first with the same name (overridden by the earlier one)? */
static int shadowed(const struct lmd_opt *first, const struct lmd_opt *o)
{
	for (const struct lmd_opt *p = first; p < o; p++)
		if (!strcmp(p->name, o->name))
			return 1;
	return 0;
}

static int count(const struct lmd_opt *o)
{
	int n = 0;
	while (o && o[n].name)
		n++;
	return n;
}

static void help_rows(const struct lmd_opt *opts, FILE *f)
{
	for (const struct lmd_opt *o = opts; o->name; o++) {
		if (shadowed(opts, o))
			continue;
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

/* Text for roff: '-' and '\\' escaped, first letter capitalized, a final stop. */
static void roff_text(const char *s, FILE *f)
{
	for (const char *p = s; *p; p++) {
		if (p == s && *p >= 'a' && *p <= 'z')
			fputc(*p - 'a' + 'A', f);
		else if (*p == '-')
			fputs("\\-", f);
		else if (*p == '\\')
			fputs("\\e", f);
		else
			fputc(*p, f);
	}
	fputs(*s && s[strlen(s) - 1] != '.' ? ".\n" : "\n", f);
}

static void man_rows(const struct lmd_opt *opts, FILE *f)
{
	for (const struct lmd_opt *o = opts; o->name; o++) {
		if (shadowed(opts, o))
			continue;
		fputs(".TP\n", f);
		int shrt = o->key > 0 && o->key < 128;
		fputs(shrt ? ".BR " : o->arg ? ".BI " : ".B ", f);
		if (shrt)
			fprintf(f, "\\-%c \", \" ", o->key);
		fputs("\\-\\-", f);
		for (const char *p = o->name; *p; p++)
			fputs(*p == '-' ? "\\-" : (char[]){*p, 0}, f);
		if (o->arg)
			fprintf(f, " \" %s\"", o->arg);
		fputc('\n', f);
		roff_text(o->help, f);
	}
}

void lmd_cli_man(const struct lmd_cli *c, FILE *f, int common)
{
	if (c && c->opts)
		man_rows(c->opts, f);
	if (common)
		man_rows(common_opts, f);
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

/* "PROG: MSG" on one line of stderr: control characters in MSG (from quoted input) are escaped. */
static void say(const char *prog, const char *fmt, va_list ap)
{
	char msg[1024];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	fprintf(stderr, "%s: ", prog);
	for (const unsigned char *p = (const unsigned char *)msg; *p; p++)
		if (*p == '\n')
			fputs("\\n", stderr);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(stderr, "\\x%02x", *p);
		else
			fputc(*p, stderr);
	fputc('\n', stderr);
}

static void sayf(const char *prog, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	say(prog, fmt, ap);
	va_end(ap);
}

void lmd_usage(const struct lmd_cli *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	say(c->prog, fmt, ap);
	va_end(ap);
	fprintf(stderr, "Usage: %s %s\nTry '%s --help' for more.\n", c->prog, c->synopsis, c->prog);
	exit(LMD_EXIT_USAGE);
}

void lmd_die(const char *prog, const struct lmd_err *e)
{
	sayf(prog, "%s", e->msg[0] ? e->msg : "failed");
	exit(lmd_err_exit_code(e->code ? e->code : LMD_EFAIL));
}

/* LMDeploy's spellings: "--session_len" is "--session-len" (rewritten in argv when that names an option). */
static void dash_names(const struct lmd_opt *opts, int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--"); i++) {
		char *a = argv[i], name[128];
		size_t n = strcspn(a, "=");
		if (strncmp(a, "--", 2) || !memchr(a, '_', n) || n - 2 >= sizeof(name))
			continue;
		for (size_t k = 2; k < n; k++)
			name[k - 2] = a[k] == '_' ? '-' : a[k];
		name[n - 2] = 0;
		for (const struct lmd_opt *o = opts; o && o->name; o++)
			if (!strcmp(o->name, name)) {
				memcpy(a + 2, name, n - 2);
				break;
			}
	}
}

int lmd_cli_next(struct lmd_cli *c, int argc, char **argv, const char **arg)
{
	int n = count(c->opts), m = count(common_opts);
	struct option lo[n + m + 2];
	char so[3 * (n + m) + 2];
	int k = 0;
	if (!c->started) {  /* GNU order: options may follow positional arguments; restart for each command */
		optind = 0;
		c->started = 1;
		lmd_cli_init(c->prog);
		dash_names(c->opts, argc, argv);
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
	lo[n + m] = (struct option){"man-options", no_argument, NULL, KEY_MAN};  /* hidden: for `make man` */
	lo[n + m + 1] = (struct option){0};
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
		case KEY_MAN:
			lmd_cli_man(c, stdout, !strchr(c->prog, ' '));
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
	if (!*s || *end || (errno && errno != ERANGE))
		lmd_usage(c, "--%s: '%s' is not a whole number (%ld to %ld)", opt, s, lo, hi);
	if (errno || v < lo || v > hi)
		lmd_usage(c, "--%s: %s is out of range (%ld to %ld)", opt, s, lo, hi);
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
	va_start(ap, fmt);
	say(c->prog, fmt, ap);
	va_end(ap);
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
	lmd_cli_init(prog);
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
	if (!strcmp(argv[1], "--man-options")) {  /* what every command takes, in roff */
		lmd_cli_man(NULL, stdout, 1);
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
