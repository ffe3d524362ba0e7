/**
 * A growing string: append bytes, read .p (NUL-terminated, owned; free it) and .n. On out of
 * memory the appends stop and .failed is set, so a caller checks once at the end.
 */
#ifndef LMD_SBUF_H
#define LMD_SBUF_H

#include <stddef.h>

struct lmd_sb {
	char *p;        /* owned; NULL until something (even "") is appended */
	size_t n, cap;
	int failed;
};

void lmd_sb_add(struct lmd_sb *b, const char *s, size_t n);
void lmd_sb_str(struct lmd_sb *b, const char *s);
void lmd_sb_printf(struct lmd_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** The text so far, read-only: "" while nothing was appended (.p is still NULL then). */
static inline const char *lmd_sb_cstr(const struct lmd_sb *b)
{
	return b->p ? b->p : "";
}

/** Hand over the text (never NULL unless failed: "" when nothing was appended); the buffer is reset. */
char *lmd_sb_take(struct lmd_sb *b);

#endif
