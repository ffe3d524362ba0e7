/*
 * lmd-run client URL: a terminal chat against any OpenAI-compatible server (lmd-run serve, LMDeploy,
 * vLLM, llama.cpp, ...). The conversation is kept here and sent whole each turn, as the stateless
 * API wants; the answer is streamed to stdout as it arrives. The commands are those of lmd-run chat.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "lmd.h"
#include "repl.h"
#include "run.h"
#include "client/oaiclient.h"

enum { O_API_KEY = 256, O_MODEL, O_SYSTEM, O_MAX_TOKENS, O_TEMPERATURE, O_TOP_P, O_TOP_K, O_MIN_P, O_REPETITION,
       O_SEED, O_IGNORE_EOS, O_STOP };

static const struct lmd_opt opts[] = {
	{"api-key", O_API_KEY, "KEY", "send 'Authorization: Bearer KEY' (default: $OPENAI_API_KEY, if set)"},
	{"model", O_MODEL, "NAME", "the model to ask (default: the first of the server's /v1/models)"},
	{"system", O_SYSTEM, "TEXT", "system prompt (default: none)"},
	{"max-tokens", O_MAX_TOKENS, "N", "most tokens of an answer (default: the server's)"},
	{"temperature", O_TEMPERATURE, "T", "sampling temperature, 0 = greedy (default: the server's)"},
	{"top-p", O_TOP_P, "P", "nucleus sampling (default: the server's)"},
	{"top-k", O_TOP_K, "K", "sample among the K most likely tokens (default: the server's)"},
	{"min-p", O_MIN_P, "P", "drop tokens below P times the top probability (default: the server's)"},
	{"repetition-penalty", O_REPETITION, "R", "penalize tokens already seen (default: the server's)"},
	{"seed", O_SEED, "N", "random seed (default: the server's)"},
	{"ignore-eos", O_IGNORE_EOS, NULL, "do not stop at the end-of-sequence token"},
	{"stop", O_STOP, "TEXT", "stop when TEXT is generated (repeatable)"},
	{0},
};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

struct answer {
	char *text;  /* owned: what arrived so far */
	size_t len;
};

static int on_piece(struct lmd_oai_call *c, const struct lmd_oai_piece *p, void *ctx)
{
	(void)c;
	struct answer *a = ctx;
	char *t = realloc(a->text, a->len + p->len + 1);
	if (!t)
		return 1;
	memcpy(t + a->len, p->text, p->len);
	a->len += p->len;
	t[a->len] = 0;
	a->text = t;
	fwrite(p->text, 1, p->len, stdout);
	fflush(stdout);
	return interrupted;
}

/* Ctrl-C stops a transfer even while no token arrives (a long prefill, a silent server). */
static int on_progress(void *ctx, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	(void)a, (void)b, (void)c, (void)d;
	if (interrupted)
		((struct lmd_oai_call *)ctx)->stopped = 1;
	return interrupted;
}

/* Answer the conversation; the answer (or what arrived before Ctrl-C) joins it. */
static int turn(struct lmd_repl *r, const char *url, const char *key, const char *model, const json_t *params,
		const struct lmd_cli *cli, struct lmd_err *err)
{
	json_t *msgs = json_array();
	for (int i = 0; msgs && i < r->n; i++)
		json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", r->msgs[i].role, "content", r->msgs[i].content));
	char *body = msgs ? lmd_oai_chat_body(model, msgs, params, err) : NULL;
	json_decref(msgs);
	if (!body)
		return err->code ? err->code : lmd_errorf(err, LMD_ENOMEM, "out of memory");
	struct answer a = {0};
	struct lmd_oai_call c = {.on_piece = on_piece, .ctx = &a};
	int rc = lmd_oai_call_init(&c, url, key, body, err);
	free(body);
	if (!rc) {
		curl_easy_setopt(c.h, CURLOPT_XFERINFOFUNCTION, on_progress);
		curl_easy_setopt(c.h, CURLOPT_XFERINFODATA, &c);
		curl_easy_setopt(c.h, CURLOPT_NOPROGRESS, 0L);
		interrupted = 0;
		rc = lmd_oai_call_run(&c, err);
	}
	if (a.len || c.stopped)
		printf("\n");
	fflush(stdout);  /* the answer before any remark on stderr */
	if (!rc && c.stopped)
		fprintf(stderr, "(stopped)\n");
	if (!rc) {
		if (c.completion_tokens >= 0)
			lmd_log(cli, 1, "%ld prompt tokens, %ld generated, finish '%s'", c.prompt_tokens, c.completion_tokens,
				c.finish);
		if (!strcmp(c.finish, "length") && !c.stopped)
			fprintf(stderr, "(the answer reached its token limit)\n");
		rc = lmd_repl_push(r, "assistant", a.text ? a.text : "");
		if (rc)
			lmd_errorf(err, rc, "out of memory");
	}
	free(a.text);
	lmd_oai_call_free(&c);
	return rc;
}

static void set_param(json_t *params, const char *key, json_t *v)
{
	json_object_set_new(params, key, v);
}

int lmd_run_client(int argc, char **argv)
{
	struct lmd_cli cli = {
		.prog = "lmd-run client",
		.synopsis = "URL [OPTIONS]",
		.purpose = "Chat on the terminal with an OpenAI-compatible server at URL: /reset, /system TEXT, /exit; "
			   "Ctrl-C stops an answer.",
		.example = "lmd-run client http://127.0.0.1:23333 --temperature 0.7",
		.opts = opts,
	};
	const char *arg, *key = getenv("OPENAI_API_KEY"), *model = NULL, *system = NULL;
	json_t *params = json_object(), *stop = json_array();
	struct lmd_err err = {0};
	int k;
	if (key && !*key)
		key = NULL;
	while ((k = lmd_cli_next(&cli, argc, argv, &arg)) != -1) {
		switch (k) {
		case O_API_KEY: key = arg; break;
		case O_MODEL: model = arg; break;
		case O_SYSTEM: system = arg; break;
		case O_MAX_TOKENS: set_param(params, "max_tokens", json_integer(lmd_cli_long(&cli, "max-tokens", arg, 1, 1 << 30))); break;
		case O_TEMPERATURE: set_param(params, "temperature", json_real(lmd_cli_double(&cli, "temperature", arg, 0, 100))); break;
		case O_TOP_P: set_param(params, "top_p", json_real(lmd_cli_double(&cli, "top-p", arg, 0, 1))); break;
		case O_TOP_K: set_param(params, "top_k", json_integer(lmd_cli_long(&cli, "top-k", arg, 0, 1 << 30))); break;
		case O_MIN_P: set_param(params, "min_p", json_real(lmd_cli_double(&cli, "min-p", arg, 0, 1))); break;
		case O_REPETITION:
			set_param(params, "repetition_penalty", json_real(lmd_cli_double(&cli, "repetition-penalty", arg, 0.01, 100)));
			break;
		case O_SEED: set_param(params, "seed", json_integer(lmd_cli_long(&cli, "seed", arg, 0, 0x7fffffffffffffffL))); break;
		case O_IGNORE_EOS: set_param(params, "ignore_eos", json_true()); break;
		case O_STOP: json_array_append_new(stop, json_string(arg)); break;
		}
	}
	if (argc - optind != 1)
		lmd_usage(&cli, "expected one URL");
	if (json_array_size(stop))
		json_object_set(params, "stop", stop);
	json_decref(stop);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	const char *base = argv[optind];
	char *chat_url = lmd_oai_url(base, "/v1/chat/completions");
	char name[256];
	int rc = !chat_url ? lmd_errorf(&err, LMD_ENOMEM, "out of memory") : LMD_OK;
	if (!rc && !model && !(rc = lmd_oai_first_model(base, key, name, sizeof(name), &err))) {
		model = name;
		lmd_log(&cli, 1, "model '%s'", model);
	}
	struct lmd_repl r = {0};
	int failed = 0, step;
	if (!rc && lmd_repl_init(&r, system))
		rc = lmd_errorf(&err, LMD_ENOMEM, "out of memory");
	struct sigaction sa = {.sa_handler = on_sigint};
	sigaction(SIGINT, &sa, NULL);
	while (!rc && (step = lmd_repl_next(&r)) != LMD_REPL_END) {
		if (step < 0) {
			rc = lmd_errorf(&err, step, "out of memory");
		} else if (step == LMD_REPL_ASK && (rc = turn(&r, chat_url, key, model, params, &cli, &err)) &&
			   rc != LMD_ENOMEM) {
			/* the server refused or failed this turn: say so, forget the message, go on */
			fprintf(stderr, "%s: %s\n", cli.prog, err.msg);
			lmd_repl_pop(&r);
			failed = 1;
			rc = LMD_OK;
		}
	}
	lmd_repl_free(&r);
	json_decref(params);
	free(chat_url);
	curl_global_cleanup();
	if (rc)
		lmd_die(cli.prog, &err);
	return failed ? LMD_EXIT_FAIL : 0;
}
