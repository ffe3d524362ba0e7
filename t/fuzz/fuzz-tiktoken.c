/* libFuzzer target: the tiktoken rank-file parser on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>

#include "tiktoken.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lmd_tiktoken tk;
	struct lmd_err err;
	if (lmd_tiktoken_parse(&tk, data, size, &err) == LMD_OK) {
		for (int r = 0; r < tk.n; r++)
			if (tk.off[r] > tk.off[r + 1] || tk.off[r + 1] > size)
				__builtin_trap();
		lmd_tiktoken_free(&tk);
	}
	return 0;
}
