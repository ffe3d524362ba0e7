/* libFuzzer target: the serving benchmark's prompt files (ShareGPT JSON, CSV prompt,output_len) on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>

#include "dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lmd_dataset d;
	struct lmd_err err;
	if (lmd_dataset_sharegpt(&d, (const char *)data, size, "fuzz", &err) == LMD_OK)
		lmd_dataset_free(&d);
	if (lmd_dataset_csv(&d, (const char *)data, size, "fuzz", &err) == LMD_OK)
		lmd_dataset_free(&d);
	return 0;
}
