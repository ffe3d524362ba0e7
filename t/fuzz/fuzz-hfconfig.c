/* libFuzzer target: config.json parsing on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>

#include "hfconfig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lmd_config c;
	struct lmd_err err;
	lmd_hfconfig_parse(&c, (const char *)data, size, "fuzz", NULL, 0, NULL, &err);
	return 0;
}
