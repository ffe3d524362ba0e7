/*
 * lmd-run tokenize / detokenize (man lmd-run(1)): the tokenizer on the command line, in the
 * manner of llama.cpp's tokenize tool.
 */
#include <ctype.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat.h"
#include "cli.h"
#include "file.h"
#include "lmd.h"
#include "modeldir.h"
#include "run.h"
#include "tokenizer.h"

enum { OPT_ADD_SPECIAL = 256, OPT_JSON, OPT_CHAT, OPT_TEMPLATE, OPT_RENDER, OPT_STATS, OPT_SKIP, OPT_STREAM };

/* Options may come before or after the positional arguments (lmd_cli_next permutes them);
 * at the end the positional ones are collected into pos. Returns the next key or -1 at the end. */
static int next_opt(struct lmd_cli *c, int argc, char **argv, const char **arg, char **pos, int *npos, int maxpos)
{
	int k = lmd_cli_next(c, argc, argv, arg);
	if (k != -1)
		return k;
	while (optind < argc) {
		if (*npos >= maxpos)
			lmd_usage(c, "too many arguments");
		pos[(*npos)++] = argv[optind++];
	}
	return -1;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int print_ids(const struct lmd_tokenizer *t, const int *ids, size_t n, int json)
{
	if (!json) {
		for (size_t i = 0; i < n; i++)
			printf(i ? " %d" : "%d", ids[i]);
		putchar('\n');
		return 0;
	}
	json_t *o = json_object(), *ja = json_array(), *pa = json_array();
	json_object_set_new(o, "ids", ja);
	json_object_set_new(o, "pieces", pa);
	for (size_t i = 0; i < n; i++) {
		const char *p = lmd_tokenizer_piece(t, ids[i]);
		json_array_append_new(ja, json_integer(ids[i]));
		json_array_append_new(pa, json_stringn(p ? p : "", p ? strlen(p) : 0));
	}
	char *s = json_dumps(o, JSON_PRESERVE_ORDER);
	json_decref(o);
	if (!s)
		return -1;
	puts(s);
	free(s);
	return 0;
}

int lmd_run_tokenize(int argc, char **argv)
{
	static const struct lmd_opt opts[] = {
		{"add-special", OPT_ADD_SPECIAL, NULL, "add BOS/EOS as the model's tokenizer does"},
		{"json", OPT_JSON, NULL, "print {\"ids\": [...], \"pieces\": [...]}"},
		{"chat", OPT_CHAT, "FILE", "tokenize the chat prompt of the JSON messages in FILE, not stdin"},
		{"chat-template", OPT_TEMPLATE, "NAME", "chat template to use (default: chosen from the model)"},
		{"render", OPT_RENDER, NULL, "with --chat: print the rendered prompt text, not ids"},
		{"stats", OPT_STATS, NULL, "print bytes, tokens and encoding speed on stderr"},
		{0},
	};
	struct lmd_cli c = {
		.prog = "lmd-run tokenize",
		.synopsis = "[OPTIONS] DIR < TEXT",
		.purpose = "Print the token ids of the text on stdin (the whole of stdin is one text).",
		.example = "echo -n 'Hello world' | lmd-run tokenize --json models/lmd-tiny",
		.opts = opts,
	};
	int add_special = 0, json = 0, render = 0, stats = 0, k, npos = 0;
	const char *arg, *chat = NULL, *tmpl = NULL;
	char *pos[1];
	struct lmd_err err = {0};
	optind = 1;
	while ((k = next_opt(&c, argc, argv, &arg, pos, &npos, 1)) != -1) {
		switch (k) {
		case OPT_ADD_SPECIAL: add_special = 1; break;
		case OPT_JSON: json = 1; break;
		case OPT_CHAT: chat = arg; break;
		case OPT_TEMPLATE: tmpl = arg; break;
		case OPT_RENDER: render = 1; break;
		case OPT_STATS: stats = 1; break;
		}
	}
	if (npos != 1)
		lmd_usage(&c, "expected one DIR");
	if (render && !chat)
		lmd_usage(&c, "--render needs --chat");
	struct lmd_tokenizer t = {0};
	char *text = NULL;
	size_t len = 0;
	int *ids = NULL;
	size_t n = 0;
	if (lmd_tokenizer_open(&t, pos[0], &err))
		lmd_die(c.prog, &err);
	lmd_log(&c, 1, "tokenizer '%s' (%d ids, bos %d, eos %d)", t.path ? t.path : "", t.n_vocab, t.bos, t.eos);
	if (chat) {
		struct lmd_chat_template ct = {0};
		char recorded[64] = "";
		if (lmd_modeldir_is(pos[0])) {
			/* an lmd model directory may record its template (lmd-convert --chat-template) */
			struct lmd_modeldir md = {0};
			if (lmd_modeldir_open(&md, pos[0], &err))
				lmd_die(c.prog, &err);
			snprintf(recorded, sizeof(recorded), "%s", md.cfg.chat_template);
			lmd_modeldir_close(&md);
		}
		if (lmd_chat_template_choose(&ct, tmpl && *tmpl ? tmpl : recorded, &t, &err))
			lmd_die(c.prog, &err);
		lmd_log(&c, 1, "chat template '%s'", ct.name);
		if (lmd_chat_render_file(&ct, chat, 1, &text, &len, &err))
			lmd_die(c.prog, &err);
		lmd_chat_template_free(&ct);
		if (render) {
			fwrite(text, 1, len, stdout);
			free(text);
			lmd_tokenizer_close(&t);
			return 0;
		}
	} else if (lmd_read_file("-", &text, &len, &err)) {
		lmd_die(c.prog, &err);
	}
	double t0 = now();
	if (lmd_tokenizer_encode(&t, text, len, add_special, &ids, &n, &err))
		lmd_die(c.prog, &err);
	double dt = now() - t0;
	if (stats)
		fprintf(stderr, "%s: %zu bytes, %zu tokens, %.3f s, %.2f MB/s\n", c.prog, len, n, dt,
			dt > 0 ? len / dt / 1e6 : 0.0);
	if (print_ids(&t, ids, n, json)) {  /* lost output is caught at exit (lmd_cli_init) */
		lmd_errorf(&err, LMD_ENOMEM, "out of memory");
		lmd_die(c.prog, &err);
	}
	free(ids);
	free(text);
	lmd_tokenizer_close(&t);
	return 0;
}

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
		.example = "echo 15043 3186 | lmd-run detokenize models/lmd-tiny",
		.opts = opts,
	};
	int flags = 0, stream = 0, k, npos = 0;
	const char *arg;
	char *pos[1];
	struct lmd_err err = {0};
	optind = 1;
	while ((k = next_opt(&c, argc, argv, &arg, pos, &npos, 1)) != -1) {
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
