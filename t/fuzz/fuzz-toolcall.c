/*
 * libFuzzer target: tool-call parsing of arbitrary answers. The first byte picks the parser and
 * the piece size; the answer is parsed whole and streamed in pieces. Either way every call's
 * arguments must be a JSON object, and streamed, a call's deltas must concatenate to them. (A
 * streamed call handed out before it went bad may differ from the whole answer's: no equality.)
 * A number too large for a double is accepted by the streamed parser and is still valid JSON.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tok/toolcall.h"

static const char *const names[] = {"add", "multiply"};

/* Append the new deltas' arguments to args[index]. */
static void fold(struct lmd_tool_stream *s, struct lmd_sb *args)
{
	json_t *d = lmd_tool_stream_deltas(s), *x;
	size_t i;
	json_array_foreach(d, i, x) {
		json_t *c = json_array_get(x, 0);
		json_int_t k = json_integer_value(json_object_get(c, "index"));
		const char *a = json_string_value(json_object_get(json_object_get(c, "function"), "arguments"));
		if (k < 0 || k >= s->n_calls || !a)
			abort();
		if (k < 64)
			lmd_sb_str(&args[k], a);
	}
	json_decref(d);
}

static void parse(int kind, const char *text, size_t n, size_t step)
{
	struct lmd_tool_stream s;
	struct lmd_sb content = {0}, args[64] = {{0}};
	lmd_tool_stream_init(&s, kind, names, 2);
	size_t i = 0;
	for (; step <= n && i < n; i += step) {
		if (lmd_tool_stream_feed(&s, text + i, i + step > n ? n - i : step, &content))
			abort();
		fold(&s, args);
	}
	if (lmd_tool_stream_finish(&s, text + (i < n ? i : n), i < n ? n - i : 0, &content))
		abort();
	fold(&s, args);
	for (int k = 0; k < s.n_calls && k < 64; k++) {
		/* Numbers past a double are valid JSON that jansson cannot hold: not counted against us. */
		json_error_t e;
		json_t *a = json_loads(s.calls[k].arguments, JSON_DECODE_INT_AS_REAL, &e);
		if ((!json_is_object(a) && !strstr(e.text, "overflow")) ||
		    strcmp(lmd_sb_cstr(&args[k]), s.calls[k].arguments))
			abort();
		json_decref(a);
	}
	for (int k = 0; k < 64; k++)
		free(args[k].p);
	free(content.p);
	lmd_tool_stream_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int kind = data[0] % 4;
	size_t step = (size_t)(data[0] >> 2) + 1;
	parse(kind, (const char *)data + 1, size - 1, size);
	parse(kind, (const char *)data + 1, size - 1, step);
	return 0;
}
