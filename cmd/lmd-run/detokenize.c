/* lmd-run detokenize (man lmd-run(1)): token ids on stdin to text, whole or as a streaming client sees it. */
#include <ctype.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "cmd/cli.h"
#include "file.h"
#include "run.h"
#include "tok/tokenizer.h"

enum { OPT_SKIP = 256, OPT_STREAM };

/* Ids from text: whitespace/comma separated numbers, a JSON array, or {"ids": [...]}. */
static int parse_ids(const char *s, size_t len, int **ids, size_t *n, struct lmd_err *err)
{
	size_t cap = 0;
	*ids = NULL;
	*n = 0;
	size_t i = 0;
	while (i < len && isspace((unsigned char)s[i]))
		i++;
	if (i < len && (s[i] == '{' || s[i] == '[')) {
		json_error_t je;
		json_t *root = json_loadb(s, len, 0, &je), *arr = root;
		if (json_is_object(root))
			arr = json_object_get(root, "ids");
		if (!json_is_array(arr)) {
			json_decref(root);
			return lmd_errorf(err, LMD_EINVAL, "stdin: expected a JSON array of ids or {\"ids\": [...]}");
		}
		*ids = malloc((json_array_size(arr) + 1) * sizeof(int));
		if (!*ids) {
			json_decref(root);
			return lmd_errorf(err, LMD_ENOMEM, "out of memory");
		}
		size_t j;
		json_t *v;
		json_array_foreach(arr, j, v) {
			if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 0x7fffffff) {
				json_decref(root);
				return lmd_errorf(err, LMD_EINVAL, "stdin: id %zu is not a non-negative integer", j);
			}
			(*ids)[(*n)++] = (int)json_integer_value(v);
		}
		json_decref(root);
		return 0;
	}
	while (i < len) {
		if (isspace((unsigned char)s[i]) || s[i] == ',') {
			i++;
			continue;
		}
		long v = 0;
		size_t st = i;
		while (i < len && s[i] >= '0' && s[i] <= '9' && v <= 0x7fffffff)
			v = v * 10 + (s[i++] - '0');
		if (i == st || v > 0x7fffffff || (i < len && !isspace((unsigned char)s[i]) && s[i] != ','))
			return lmd_errorf(err, LMD_EINVAL, "stdin: '%.20s' is not a token id", s + st);
		if (*n == cap) {
			cap = cap ? cap * 2 : 256;
			int *np = realloc(*ids, cap * sizeof(int));
			if (!np)
				return lmd_errorf(err, LMD_ENOMEM, "out of memory");
			*ids = np;
		}
		(*ids)[(*n)++] = (int)v;
	}
	return 0;
}

int lmd_run_detokenize(int argc, char **argv)
{
	static const struct lmd_opt opts[] = {
		{"skip-special", OPT_SKIP, NULL, "leave out special tokens (BOS, EOS, <|im_end|>, ...)"},
		{"stream", OPT_STREAM, NULL, "decode one id at a time as a streaming client would"},
		{0},
	};
	struct lmd_cli c = {
		.prog = "lmd-run detokenize",
		.synopsis = "[OPTIONS] DIR < IDS",
		.purpose = "Print the text of the token ids on stdin (numbers separated by spaces, or JSON).",
		.example = "echo 485 293 4010 1109 | lmd-run detokenize share/models/lmd-tiny",
		.opts = opts,
	};
	int flags = 0, stream = 0, k, npos = 0;
	const char *arg;
	char *pos[1];
	struct lmd_err err = {0};
	optind = 1;
	while ((k = lmd_cli_next_pos(&c, argc, argv, &arg, pos, &npos, 1)) != -1) {
		switch (k) {
		case OPT_SKIP: flags |= LMD_DECODE_SKIP_SPECIAL; break;
		case OPT_STREAM: stream = 1; break;
		}
	}
	if (npos != 1)
		lmd_usage(&c, "expected one DIR");
	struct lmd_tokenizer t = {0};
	char *in = NULL, *text = NULL;
	size_t len = 0, n = 0;
	int *ids = NULL;
	if (lmd_tokenizer_open(&t, pos[0], &err) || lmd_read_file("-", &in, &len, &err) ||
	    parse_ids(in, len, &ids, &n, &err))
		lmd_die(c.prog, &err);
	if (stream) {
		struct lmd_tokdec d;
		const char *s;
		size_t sl;
		lmd_tokdec_init(&d, &t, flags);
		for (size_t i = 0; i < n; i++) {
			if (lmd_tokdec_push(&d, ids[i], &s, &sl, &err))
				lmd_die(c.prog, &err);
			fwrite(s, 1, sl, stdout);
		}
		if (lmd_tokdec_flush(&d, &s, &sl, &err))
			lmd_die(c.prog, &err);
		fwrite(s, 1, sl, stdout);
		lmd_tokdec_free(&d);
	} else {
		if (lmd_tokenizer_decode(&t, ids, n, flags, &text, &len, &err))
			lmd_die(c.prog, &err);
		fwrite(text, 1, len, stdout);
	}
	free(text);
	free(in);
	free(ids);
	lmd_tokenizer_close(&t);
	return 0;
}
