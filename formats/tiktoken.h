/**
 * tiktoken rank files (Llama 3 original/tokenizer.model): one "BASE64 RANK" line per token.
 * The token bytes are kept decoded in one owned arena. Ranks must be distinct and below
 * the number of lines, and every line well formed; blank lines are ignored.
 */
#ifndef LMD_TIKTOKEN_H
#define LMD_TIKTOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct lmd_tiktoken {
	int n;            /* number of tokens; ranks are 0..n-1 */
	uint32_t *off;    /* owned [n + 1]: token with rank r is bytes[off[r] .. off[r+1]) */
	uint8_t *bytes;   /* owned arena */
};

/** Parse buf[0..len). err says which line was bad. Free with lmd_tiktoken_free (zeroed struct safe). */
int lmd_tiktoken_parse(struct lmd_tiktoken *tk, const void *buf, size_t len, struct lmd_err *err);
void lmd_tiktoken_free(struct lmd_tiktoken *tk);

/** Does buf look like a rank file (its first line is "BASE64 NUMBER")? */
int lmd_tiktoken_sniff(const void *buf, size_t len);

#endif
