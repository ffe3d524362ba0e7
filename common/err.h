/**
 * Errors: library code never exits or prints; it returns a negative status and fills a
 * struct lmd_err. Only cmd/ turns an error into a message and an exit code (lmd_die in cli.h).
 * Messages follow git's style: lowercase, no final stop, subject in single quotes.
 */
#ifndef LMD_ERR_H
#define LMD_ERR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum lmd_status {
	LMD_OK = 0,
	LMD_EIO = -1,      /* a file could not be opened, read or written (exit 3) */
	LMD_EFORMAT = -2,  /* a file's contents are invalid (exit 3) */
	LMD_ENOMEM = -3,   /* out of memory (exit 1) */
	LMD_EINVAL = -4,   /* a bad option value or request (exit 2) */
	LMD_EGPU = -5,     /* a CUDA/cuBLAS call failed (exit 1) */
	LMD_ENODEV = -6,   /* no usable GPU (exit 4) */
	LMD_EFAIL = -7,    /* any other runtime failure (exit 1) */
};

struct lmd_err {
	int code;       /* an enum lmd_status; LMD_OK when nothing went wrong */
	char msg[512];  /* one line, no trailing newline */
};

/** Fill e (which may be NULL) with code and a printf-style message (which may quote e->msg); returns code. */
int lmd_errorf(struct lmd_err *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/** Put "prefix: " in front of the message already in e (for context such as a file name); returns e->code. */
int lmd_err_prefix(struct lmd_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** The exit code (enum lmd_exit) for an error status. */
int lmd_err_exit_code(int code);

/** Abort with a message: for programmer errors only, never for bad input. */
#define LMD_BUG(...) lmd_bug(__FILE__, __LINE__, __VA_ARGS__)
void lmd_bug(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));

/** Out-of-memory helper: malloc/calloc/realloc that fill err on failure. */
void *lmd_malloc(size_t n, struct lmd_err *e);
void *lmd_calloc(size_t n, size_t size, struct lmd_err *e);
char *lmd_strdup(const char *s, struct lmd_err *e);

#ifdef __cplusplus
}
#endif

#endif
