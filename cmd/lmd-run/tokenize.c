/*
 * lmd-run tokenize (man lmd-run(1)): text to token ids on the command line, in the manner of
 * llama.cpp's tokenize tool (detokenize.c is the way back).
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tok/chat.h"
#include "cmd/cli.h"
#include "file.h"
#include "lmd.h"
#include "modeldir.h"
#include "run.h"
#include "tok/tokenizer.h"

enum { OPT_ADD_SPECIAL = 256, OPT_JSON, OPT_CHAT, OPT_TEMPLATE, OPT_RENDER, OPT_STATS };

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
		.example = "echo -n 'Hello world' | lmd-run tokenize --json share/models/lmd-tiny",
		.opts = opts,
	};
	int add_special = 0, json = 0, render = 0, stats = 0, k, npos = 0;
	const char *arg, *chat = NULL, *tmpl = NULL;
	char *pos[1];
	struct lmd_err err = {0};
	optind = 1;
	while ((k = lmd_cli_next_pos(&c, argc, argv, &arg, pos, &npos, 1)) != -1) {
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
