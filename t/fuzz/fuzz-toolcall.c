/*
 * libFuzzer target: tool-call parsing of arbitrary answers. The first byte picks the parser and
 * the piece size; the answer fed in pieces must give exactly what it gives fed whole, and every
 * call's arguments must be a JSON object.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tok/toolcall.h"

static const char *const names[] = {"add", "multiply"};

static char *parse(int kind, const char *text, size_t n, size_t step, int *ncalls, char ***calls)
{
	struct lmd_tool_stream s;
	struct lmd_sb content = {0};
	lmd_tool_stream_init(&s, kind, names, 2);
	for (size_t i = 0; i < n; i += step)
		if (lmd_tool_stream_feed(&s, text + i, i + step > n ? n - i : step, &content))
			abort();
	if (lmd_tool_stream_finish(&s, &content))
		abort();
	*ncalls = s.n_calls;
	*calls = calloc((size_t)s.n_calls * 2 + 1, sizeof(char *));
	for (int i = 0; i < s.n_calls; i++) {
		json_t *a = json_loads(s.calls[i].arguments, 0, NULL);
		if (!json_is_object(a))
			abort();
		json_decref(a);
		(*calls)[2 * i] = strdup(s.calls[i].name);
		(*calls)[2 * i + 1] = strdup(s.calls[i].arguments);
	}
	lmd_tool_stream_free(&s);
	return lmd_sb_take(&content);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int kind = data[0] % 4;
	size_t step = (size_t)(data[0] >> 2) + 1;
	const char *text = (const char *)data + 1;
	size_t n = size - 1;
	int n1, n2;
	char **c1, **c2;
	char *a = parse(kind, text, n, n ? n : 1, &n1, &c1);
	char *b = parse(kind, text, n, step, &n2, &c2);
	if (strcmp(a, b) || n1 != n2)
		abort();
	for (int i = 0; i < 2 * n1; i++)
		if (strcmp(c1[i], c2[i]))
			abort();
	for (int i = 0; i < 2 * n1; i++) {
		free(c1[i]);
		free(c2[i]);
	}
	free(c1);
	free(c2);
	free(a);
	free(b);
	return 0;
}
