/* libFuzzer target: the sentencepiece model parser, then a tokenizer built from it, on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "spm.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lmd_spm_model m;
	struct lmd_err err;
	if (lmd_spm_parse(&m, data, size, &err) == LMD_OK) {
		for (int i = 0; i < m.n; i++)
			if (!m.pieces[i].piece || m.pieces[i].len < 0)
				__builtin_trap();
		lmd_spm_free(&m);
	}
	struct lmd_tokenizer t = {0};
	if (lmd_tokenizer_open_mem(&t, LMD_TOK_SPM, data, size, &err) == LMD_OK) {
		static const char text[] = " Hello  world\n\xff\xc3 <s>\xe2\x96\x81x\xf0\x9f\x98\x80";
		int *ids = NULL;
		size_t n = 0;
		if (lmd_tokenizer_encode(&t, text, sizeof(text) - 1, 1, &ids, &n, &err) == LMD_OK) {
			char *out = NULL;
			size_t len = 0;
			for (size_t i = 0; i < n; i++)
				if (ids[i] < 0 || ids[i] >= t.n_vocab)
					__builtin_trap();
			if (lmd_tokenizer_decode(&t, ids, n, 0, &out, &len, &err) == LMD_OK)
				free(out);
			free(ids);
		}
	}
	lmd_tokenizer_close(&t);
	return 0;
}
