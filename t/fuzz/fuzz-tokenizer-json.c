/* libFuzzer target: the tokenizer.json parser, then a tokenizer built from it, on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "hftok.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lmd_hftok h;
	struct lmd_err err;
	if (lmd_hftok_parse(&h, data, size, &err) == LMD_OK)
		lmd_hftok_free(&h);
	struct lmd_tokenizer t = {0};
	if (lmd_tokenizer_open_mem(&t, LMD_TOK_HF, data, size, &err) == LMD_OK) {
		static const char text[] = " Hello  world's\n\xff\xc3 <s>\xe2\x96\x81x 123\xf0\x9f\x98\x80 e\xcc\x81";
		int *ids = NULL;
		size_t n = 0;
		if (lmd_tokenizer_encode(&t, text, sizeof(text) - 1, 1, &ids, &n, &err) == LMD_OK) {
			char *out = NULL;
			size_t len = 0;
			for (size_t i = 0; i < n; i++)
				if (ids[i] < 0 || ids[i] >= t.n_vocab)
					__builtin_trap();
			if (lmd_tokenizer_decode(&t, ids, n, LMD_DECODE_SKIP_SPECIAL, &out, &len, &err) == LMD_OK)
				free(out);
			free(ids);
		}
	}
	lmd_tokenizer_close(&t);
	return 0;
}
