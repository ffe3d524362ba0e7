/* libFuzzer target: the safetensors header parser on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lmd_safetensors st = {0};
	struct lmd_err err;
	if (lmd_safetensors_parse(&st, data, size, "fuzz", &err) == LMD_OK) {
		for (int i = 0; i < st.n; i++) {  /* every tensor lies inside the buffer */
			const uint8_t *p = st.e[i].t.data;
			size_t n = lmd_tensor_nbytes(&st.e[i].t);
			if (n && (p < data || p + n > data + size))
				__builtin_trap();
		}
	}
	lmd_safetensors_close(&st);
	return 0;
}
