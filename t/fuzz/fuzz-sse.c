/* libFuzzer target: the client's server-sent-events parser on arbitrary bytes, fed in two pieces. */
#include <stddef.h>
#include <stdint.h>

#include "client/oaiclient.h"

static int on_event(void *ctx, const char *event, const char *data, size_t len)
{
	(void)event;
	*(size_t *)ctx += len ? (unsigned char)data[len - 1] : 0;  /* touch every event's end */
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t sum = 0, cut = size ? data[0] % size : 0;
	struct lmd_sse s = {.on_event = on_event, .ctx = &sum};
	struct lmd_err err;
	if (lmd_sse_feed(&s, (const char *)data, cut, &err) == LMD_OK)
		lmd_sse_feed(&s, (const char *)data + cut, size - cut, &err);
	lmd_sse_free(&s);
	return 0;
}
