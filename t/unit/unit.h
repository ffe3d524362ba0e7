/**
 * A tiny unit-test helper: CHECK* macros record failures with file:line and keep going;
 * UNIT_DONE() returns the exit status (1 if anything failed).
 */
#ifndef LMD_UNIT_H
#define LMD_UNIT_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int unit_failures;

#define CHECK(cond) do { if (!(cond)) { unit_failures++; \
	fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_EQ_INT(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); if (a_ != b_) { unit_failures++; \
	fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, #a, a_, #b, b_); } } while (0)
#define CHECK_EQ_STR(a, b) do { const char *a_ = (a), *b_ = (b); if (!a_ || !b_ || strcmp(a_, b_)) { unit_failures++; \
	fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a, a_ ? a_ : "(null)", \
		b_ ? b_ : "(null)"); } } while (0)
#define CHECK_NEAR(a, b, tol) do { double a_ = (a), b_ = (b); if (!(fabs(a_ - b_) <= (tol))) { unit_failures++; \
	fprintf(stderr, "%s:%d: %s == %.9g, expected %.9g (tol %g)\n", __FILE__, __LINE__, #a, a_, b_, (double)(tol)); } \
	} while (0)
#define UNIT_DONE() (unit_failures ? (fprintf(stderr, "%d check(s) failed\n", unit_failures), 1) : 0)

#endif
