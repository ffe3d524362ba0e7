/*
 * lmd-run chat MODEL: an interactive, multi-turn chat on a terminal (readline: history, editing).
 * The KV cache is kept between turns: each turn renders the whole conversation, and only the tokens
 * after what is already cached are prefilled (--verbose shows how many). Lines ending in '\' continue
 * on the next line. Commands: /reset, /system TEXT, /exit. Ctrl-C stops the current answer.
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
#include "engine/runner.h"
#include "cmd/opts.h"

static const struct lmd_opt opts[] = {
	{"system", 256, "TEXT", "system prompt (the template's default otherwise)"},
	{"max-tokens", LMD_GO_MAX_TOKENS, "N", "most tokens to generate per answer (default 1024)"},
	LMD_GEN_OPTS,
	LMD_RUNNER_OPTS,
	{0},
};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

struct chat {
	struct lmd_runner r;
	struct lmd_session sess;
	struct lmd_repl q;           /* the conversation and its input */
};

static void on_text(struct lmd_request *r, const char *text, size_t len, void *ctx)
{
	(void)r, (void)ctx;
	fwrite(text, 1, len, stdout);
	lmd_cli_flush();
}

/*
 * The tokens of the conversation for the next answer. After the first answer, the cache holds exactly
 * what the model saw (the prompt and its own tokens), so only the text the template puts after the last
 * answer is tokenized and appended; re-tokenizing the whole conversation could split the answer's text
 * differently and lose the cache. That text is found by rendering with a marker in place of the answer.
 */
static int conversation_ids(struct chat *c, int32_t **ids, int *n, struct lmd_err *err)
{
	static const char marker[] = "\x01lmd-answer\x01";
	int last = -1, rc;
	for (int i = 0; i < c->q.n; i++)
		if (!strcmp(c->q.msgs[i].role, "assistant"))
			last = i;
	if (last < 0 || c->sess.n == 0)
		return lmd_runner_prompt(&c->r, NULL, c->q.msgs, c->q.n, ids, n, err);
	struct lmd_chat_msg *m = malloc(c->q.n * sizeof(*m));
	char *text = NULL, *tail;
	size_t len, ntail = 0;
	int *tk = NULL;
	if (!m)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	memcpy(m, c->q.msgs, c->q.n * sizeof(*m));
	m[last].content = marker;
	rc = lmd_chat_render(&c->r.tmpl, m, c->q.n, 1, NULL, &text, &len, err);
	free(m);
	if (rc)
		return rc;
	if (!(tail = strstr(text, marker))) {  /* the template dropped the answer: render it all */
		free(text);
		return lmd_runner_prompt(&c->r, NULL, c->q.msgs, c->q.n, ids, n, err);
	}
	tail += sizeof(marker) - 1;
	rc = lmd_tokenizer_encode(&c->r.tok, tail, strlen(tail), 0, &tk, &ntail, err);
	free(text);
	if (rc)
		return rc;
	/* the answer's own stop token is already in the cache: do not add it twice */
	size_t skip = ntail && c->sess.toks[c->sess.n - 1] == tk[0] ? 1 : 0;
	*n = c->sess.n + (int)(ntail - skip);
	if (!(*ids = malloc((*n ? *n : 1) * sizeof(**ids)))) {
		free(tk);
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	}
	memcpy(*ids, c->sess.toks, c->sess.n * sizeof(**ids));
	for (size_t i = skip; i < ntail; i++)
		(*ids)[c->sess.n + i - skip] = tk[i];
	free(tk);
	return LMD_OK;
}

/* Answer the conversation so far; the reply joins it. */
static int turn(struct chat *c, const struct lmd_gen_params *p, const struct lmd_cli *cli, struct lmd_err *err)
{
	int32_t *ids;
	int n, rc;
	if ((rc = conversation_ids(c, &ids, &n, err)))
		return rc;
	if (n >= c->r.m.session_len) {
		free(ids);
		lmd_repl_pop(&c->q);  /* forget the message that did not fit */
		fprintf(stderr, "the conversation is %d tokens, the session holds %d: /reset to start over "
			"(or a larger --session-len)\n", n, c->r.m.session_len);
		return LMD_OK;
	}
	/* keep what the cache already holds of this rendering; prefill only the rest */
	int same = 0;
	while (same < n && same < c->sess.n && c->sess.toks[same] == ids[same])
		same++;
	lmd_session_truncate(&c->sess, &c->r.m, same);
	struct lmd_request req = {0};
	lmd_gen_params_apply(p, &req);
	req.session = &c->sess;
	req.prompt = ids + same;
	req.nprompt = n - same;
	req.on_text = on_text;
	int room = c->r.m.session_len - n;
	if (req.max_tokens > room)
		req.max_tokens = room;
	if ((rc = lmd_sched_submit(&c->r.s, &req, err))) {
		free(ids);
		return rc;
	}
	interrupted = 0;
	while ((rc = lmd_sched_step(&c->r.s, err)) > 0)
		if (interrupted)
			lmd_sched_cancel(&c->r.s, &req);
	free(ids);
	if (rc < 0) {
		lmd_request_free(&req, &c->r.m);
		return rc;
	}
	printf("\n");
	if (req.finish == LMD_FINISH_CANCEL)
		fprintf(stderr, "(stopped)\n");
	if (req.finish == LMD_FINISH_LENGTH && c->sess.n >= c->r.m.session_len - 1)
		fprintf(stderr, "the session is full (%d tokens): /reset to start over\n", c->r.m.session_len);
	double dec = req.t_end - req.t_first;
	lmd_log(cli, 1, "prefilled %d new tokens (%d cached), generated %d tokens, %.2f tokens/s", req.nprefill,
		req.nprompt_total - req.nprefill, req.ntokens, req.ntokens > 1 && dec > 0 ? (req.ntokens - 1) / dec : 0.0);
	rc = lmd_repl_push(&c->q, "assistant", req.text ? req.text : "") ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	lmd_request_free(&req, &c->r.m);
	return rc;
}

int lmd_run_chat(int argc, char **argv)
{
	struct lmd_cli cli = {
		.prog = "lmd-run chat",
		.synopsis = "MODEL [OPTIONS]",
		.purpose = "Chat with a model on the terminal: /reset, /system TEXT, /exit; Ctrl-C stops an answer.",
		.example = "echo 'Tell me a story.' | lmd-run chat share/models/lmd-tiny --temperature 0.7 --max-tokens 64",
		.opts = opts,
	};
	static struct chat c;
	struct lmd_runner_opts ro = {.dtype = LMD_DTYPE_NONE};
	struct lmd_gen_params p;
	struct lmd_err err = {0};
	const char *arg, *system = NULL;
	int k, rc = 0, step;
	lmd_gen_params_default(&p);
	p.max_tokens = 1024;
	while ((k = lmd_cli_next(&cli, argc, argv, &arg)) != -1) {
		if (lmd_runner_opt(&ro, &cli, k, arg) || lmd_gen_opt(&p, &cli, k, arg))
			continue;
		if (k == 256)
			system = arg;
	}
	if (argc - optind != 1)
		lmd_usage(&cli, "expected one MODEL directory");
	ro.model = argv[optind];
	lmd_log(&cli, 1, "seed %llu", (unsigned long long)p.sampling.seed);
	if (lmd_runner_open(&c.r, &ro, &err))
		lmd_die(cli.prog, &err);
	if (cli.verbose > 0) {
		char d[512];
		lmd_runner_describe(&c.r, d, sizeof(d));
		lmd_log(&cli, 1, "%s", d);
	}
	struct sigaction sa = {.sa_handler = on_sigint};
	sigaction(SIGINT, &sa, NULL);
	if (lmd_repl_init(&c.q, system))
		rc = lmd_errorf(&err, LMD_ENOMEM, "out of memory");
	while (!rc && (step = lmd_repl_next(&c.q)) != LMD_REPL_END) {
		if (step < 0) {
			rc = lmd_errorf(&err, step, "out of memory");
		} else if (step == LMD_REPL_RESET) {
			lmd_session_free(&c.sess, &c.r.m);
		} else if (step == LMD_REPL_ASK && (rc = turn(&c, &p, &cli, &err)) == LMD_EINVAL) {
			fprintf(stderr, "%s\n", err.msg);  /* a bad message (not UTF-8, ...): say so, go on */
			lmd_repl_pop(&c.q);
			rc = 0;
		}
	}
	lmd_repl_free(&c.q);
	lmd_session_free(&c.sess, &c.r.m);
	lmd_runner_close(&c.r);
	if (rc)
		lmd_die(cli.prog, &err);
	return 0;
}
