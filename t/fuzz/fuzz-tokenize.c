/*
 * libFuzzer target: encode arbitrary bytes with the bundled lmd-tiny tokenizer (share/models/lmd-tiny,
 * run from the repository root), then check decoding: streaming equals one-shot.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tok/tokenizer.h"

static struct lmd_tokenizer tok;
static int state;  /* 0: not tried, 1: open, -1: unavailable */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lmd_err err;
	if (!state)
		state = lmd_tokenizer_open(&tok, "share/models/lmd-tiny", &err) == LMD_OK ? 1 : -1;
	if (state < 0)
		return 0;
	int *ids = NULL;
	size_t n = 0;
	if (lmd_tokenizer_encode(&tok, (const char *)data, size, 0, &ids, &n, &err) != LMD_OK)
		return 0;
	char *one = NULL;
	size_t len = 0;
	if (lmd_tokenizer_decode(&tok, ids, n, 0, &one, &len, &err) != LMD_OK)
		__builtin_trap();
	struct lmd_tokdec d;
	lmd_tokdec_init(&d, &tok, 0);
	size_t at = 0;
	const char *s;
	size_t sl;
	for (size_t i = 0; i < n; i++) {
		if (lmd_tokdec_push(&d, ids[i], &s, &sl, &err) || at + sl > len || memcmp(one + at, s, sl))
			__builtin_trap();
		at += sl;
	}
	if (lmd_tokdec_flush(&d, &s, &sl, &err) || at + sl != len || memcmp(one + at, s, sl))
		__builtin_trap();
	lmd_tokdec_free(&d);
	free(one);
	free(ids);
	return 0;
}
