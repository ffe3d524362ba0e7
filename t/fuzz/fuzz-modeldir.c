/* libFuzzer target: the lmd model directory index parser (msgpack) on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>

#include "modeldir.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lmd_modeldir m;
	struct lmd_err err;
	if (lmd_modeldir_parse_index(&m, data, size, &err) == LMD_OK)
		lmd_modeldir_close(&m);
	return 0;
}
