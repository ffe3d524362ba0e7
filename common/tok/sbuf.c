#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sbuf.h"

void lmd_sb_add(struct lmd_sb *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t nc = b->cap ? b->cap * 2 : 256;
		while (nc < b->n + n + 1)
			nc *= 2;
		char *np = realloc(b->p, nc);
		if (!np) {
			b->failed = 1;
			return;
		}
		b->p = np;
		b->cap = nc;
	}
	if (n)
		memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

void lmd_sb_str(struct lmd_sb *b, const char *s)
{
	lmd_sb_add(b, s, strlen(s));
}

void lmd_sb_printf(struct lmd_sb *b, const char *fmt, ...)
{
	char small[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->failed = 1;
		return;
	}
	if ((size_t)n < sizeof(small)) {
		lmd_sb_add(b, small, (size_t)n);
		return;
	}
	char *big = malloc((size_t)n + 1);
	if (!big) {
		b->failed = 1;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	lmd_sb_add(b, big, (size_t)n);
	free(big);
}

char *lmd_sb_take(struct lmd_sb *b)
{
	if (!b->failed && !b->p)
		lmd_sb_add(b, "", 0);
	char *p = b->failed ? NULL : b->p;
	if (b->failed)
		free(b->p);
	memset(b, 0, sizeof(*b));
	return p;
}
