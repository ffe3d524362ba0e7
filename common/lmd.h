/**
 * lmd: version, the exit codes every tool shares (man lmd(7), EXIT STATUS), and how a long step
 * reports its progress.
 */
#ifndef LMD_H
#define LMD_H

#define LMD_VERSION "0.1.0"

enum lmd_exit {
	LMD_EXIT_OK = 0,      /* success */
	LMD_EXIT_FAIL = 1,    /* runtime failure */
	LMD_EXIT_USAGE = 2,   /* bad command line or request values */
	LMD_EXIT_FORMAT = 3,  /* an input file is missing, unreadable or invalid */
	LMD_EXIT_NOGPU = 4,   /* --device cuda asked for and no usable GPU */
};

/**
 * A long step's progress: library code calls lmd_progress(p, done, total) as units finish (p may be
 * NULL); cmd/ shows it (cmd/cli.h, lmd_cli_progress). Borrowed by whoever it is given to.
 */
struct lmd_progress {
	void (*fn)(void *ctx, long done, long total);
	void *ctx;
};
static inline void lmd_progress(const struct lmd_progress *p, long done, long total)
{
	if (p && p->fn)
		p->fn(p->ctx, done, total);
}

#endif
