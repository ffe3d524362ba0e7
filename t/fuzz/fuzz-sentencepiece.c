/* libFuzzer target: the sentencepiece model parser, then a tokenizer built from it, on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "spm.h"
#include "tok-exercise.h"

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
	static const char text[] = " Hello  world\n\xff\xc3 <s>\xe2\x96\x81x\xf0\x9f\x98\x80";
	tok_exercise(LMD_TOK_SPM, data, size, text, sizeof(text) - 1, 0);
	return 0;
}
