/* libFuzzer target: the tokenizer.json parser, then a tokenizer built from it, on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "hftok.h"
#include "tok-exercise.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lmd_hftok h;
	struct lmd_err err;
	if (lmd_hftok_parse(&h, data, size, &err) == LMD_OK)
		lmd_hftok_free(&h);
	static const char text[] = " Hello  world's\n\xff\xc3 <s>\xe2\x96\x81x 123\xf0\x9f\x98\x80 e\xcc\x81";
	tok_exercise(LMD_TOK_HF, data, size, text, sizeof(text) - 1, LMD_DECODE_SKIP_SPECIAL);
	return 0;
}
