#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "lmd.h"

int lmd_errorf(struct lmd_err *e, int code, const char *fmt, ...)
{
	if (e) {  /* through a copy: the arguments may point into e->msg */
		char msg[sizeof(e->msg)];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		memcpy(e->msg, msg, sizeof(msg));
		e->code = code;
	}
	return code;
}

int lmd_err_prefix(struct lmd_err *e, const char *fmt, ...)
{
	char head[256], old[sizeof(e->msg)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(head, sizeof(head), fmt, ap);
	va_end(ap);
	memcpy(old, e->msg, sizeof(old));
	snprintf(e->msg, sizeof(e->msg), "%s: %s", head, old);
	return e->code;
}

int lmd_err_exit_code(int code)
{
	switch (code) {
	case LMD_OK: return LMD_EXIT_OK;
	case LMD_EIO:
	case LMD_EFORMAT: return LMD_EXIT_FORMAT;
	case LMD_EINVAL: return LMD_EXIT_USAGE;
	case LMD_ENODEV: return LMD_EXIT_NOGPU;
	default: return LMD_EXIT_FAIL;
	}
}

void lmd_bug(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "BUG: %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

void *lmd_malloc(size_t n, struct lmd_err *e)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		lmd_errorf(e, LMD_ENOMEM, "out of memory (%zu bytes)", n);
	return p;
}

void *lmd_calloc(size_t n, size_t size, struct lmd_err *e)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		lmd_errorf(e, LMD_ENOMEM, "out of memory (%zu x %zu bytes)", n, size);
	return p;
}

char *lmd_strdup(const char *s, struct lmd_err *e)
{
	char *p = strdup(s);
	if (!p)
		lmd_errorf(e, LMD_ENOMEM, "out of memory");
	return p;
}
