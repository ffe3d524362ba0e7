/* Shared by the tokenizer fuzzers: build a tokenizer from the input, encode a tricky text, check every id
 * is in the vocabulary, decode it again. */
#ifndef LMD_FUZZ_TOK_EXERCISE_H
#define LMD_FUZZ_TOK_EXERCISE_H

#include <stdlib.h>

#include "tok/tokenizer.h"

static void tok_exercise(enum lmd_tok_kind kind, const uint8_t *data, size_t size, const char *text, size_t tlen,
			 int decode_flags)
{
	struct lmd_tokenizer t = {0};
	struct lmd_err err;
	if (lmd_tokenizer_open_mem(&t, kind, data, size, &err) == LMD_OK) {
		int *ids = NULL;
		size_t n = 0;
		if (lmd_tokenizer_encode(&t, text, tlen, 1, &ids, &n, &err) == LMD_OK) {
			char *out = NULL;
			size_t len = 0;
			for (size_t i = 0; i < n; i++)
				if (ids[i] < 0 || ids[i] >= t.n_vocab)
					__builtin_trap();
			if (lmd_tokenizer_decode(&t, ids, n, decode_flags, &out, &len, &err) == LMD_OK)
				free(out);
			free(ids);
		}
	}
	lmd_tokenizer_close(&t);
}

#endif
