/*
 * lmd-run generate MODEL: --prompt TEXT streams one continuation to stdout; otherwise JSON lines on
 * stdin ({"prompt": ...} or {"messages": [...]}, with per-line sampling fields) become one JSON line
 * each on stdout, in input order, all batched through the scheduler.
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "file.h"
#include "lmd.h"
#include "run.h"
#include "engine/runner.h"
#include "cmd/opts.h"

enum { O_PROMPT = 256, O_PROMPT_FILE, O_ECHO, O_TRUNCATE };

static const struct lmd_opt opts[] = {
	{"prompt", O_PROMPT, "TEXT", "generate from TEXT and stream it to stdout (default: JSON lines on stdin)"},
	{"prompt-file", O_PROMPT_FILE, "FILE", "like --prompt, with the text of FILE ('-': stdin; llama-cli's -f)"},
	{"echo", O_ECHO, NULL, "with --prompt: print the prompt before the continuation"},
	{"truncate", O_TRUNCATE, NULL, "cut prompts longer than the session to their last tokens instead of failing"},
	LMD_GEN_OPTS,
	LMD_RUNNER_OPTS,
	LMD_PREFIX_OPTS,
	{0},
};

struct job {
	struct lmd_request req;
	struct lmd_gen_params p;
	int32_t *ids;
	int nids;
	char *error;            /* owned: a request that failed before running */
	json_t *line;           /* owned: the parsed input (keeps stop strings alive) */
	int done;
};

struct gen {
	struct lmd_runner r;
	struct job *jobs;
	int n, next;            /* next: the first job not printed yet */
	int failed;
	int truncate;
};

static int cut_to_session(struct gen *g, struct job *j, struct lmd_err *err)
{
	int limit = g->r.m.session_len - 1;
	if (j->nids <= limit)
		return LMD_OK;
	if (!g->truncate)
		return lmd_errorf(err, LMD_EINVAL, "the prompt is %d tokens, longer than the session length %d "
				  "(--session-len; --truncate cuts it)", j->nids, g->r.m.session_len);
	memmove(j->ids, j->ids + j->nids - limit, limit * sizeof(*j->ids));
	j->nids = limit;
	return LMD_OK;
}

static void print_job(struct gen *g, struct job *j, int index)
{
	json_t *o;
	if (j->error) {
		o = json_pack("{s:i, s:s}", "index", index, "error", j->error);
	} else {
		struct lmd_request *r = &j->req;
		double total = r->t_end - r->t_submit, ttft = r->t_first > 0 ? r->t_first - r->t_submit : total;
		double decode = r->t_end - r->t_first;
		o = json_pack("{s:i, s:s%, s:i, s:i, s:i, s:s, s:{s:f, s:f, s:f}}", "index", index, "text",
			      r->text ? r->text : "", r->len, "prompt_tokens", r->nprompt_total, "cached_tokens", r->ncached,
			      "completion_tokens", r->ntokens, "finish_reason",
			      lmd_finish_name(r->finish), "timings", "ttft_ms", ttft * 1e3, "total_ms", total * 1e3,
			      "decode_tokens_per_s", r->ntokens > 1 && decode > 0 ? (r->ntokens - 1) / decode : 0.0);
		if (r->finish == LMD_FINISH_ERROR) {
			json_object_set_new(o, "error", json_string(r->error));
			g->failed = 1;
		}
	}
	char *s = json_dumps(o, JSON_COMPACT);
	printf("%s\n", s ? s : "{}");
	lmd_cli_flush();
	free(s);
	json_decref(o);
}

/* The request is the first member of its job. */
static void on_done(struct lmd_request *r, void *ctx)
{
	struct gen *g = ctx;
	if (r)
		((struct job *)r)->done = 1;
	while (g->next < g->n && g->jobs[g->next].done)
		print_job(g, &g->jobs[g->next], g->next), g->next++;
}

/* Field key of o, when present and not null, as a whole number from lo to hi (64 and 1e8 are whole) into *out. */
static int whole_field(json_t *o, const char *key, json_int_t lo, json_int_t hi, json_int_t *out, struct lmd_err *err)
{
	json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v))
		return 0;
	double d = json_number_value(v);
	if (!json_is_number(v) || !isfinite(d) || d != floor(d))
		return lmd_errorf(err, LMD_EINVAL, "'%s' must be a whole number from %lld to %lld", key, (long long)lo,
				  (long long)hi);
	if (d < (double)lo || d > (double)hi)
		return lmd_errorf(err, LMD_EINVAL, "'%s' is %.0f, out of range (%lld to %lld)", key, d, (long long)lo,
				  (long long)hi);
	*out = json_is_integer(v) ? json_integer_value(v) : (json_int_t)d;
	return 1;
}

/* Per-line fields over the command line's defaults. */
static int parse_fields(struct job *j, json_t *o, struct lmd_err *err)
{
	json_t *v;
	json_int_t x;
	int rc;
	if ((rc = whole_field(o, "max_tokens", 1, 1 << 24, &x, err)) < 0)
		return rc;
	if (rc)
		j->p.max_tokens = (int)x;
	static const struct { const char *key; int off; } floats[] = {
		{"temperature", offsetof(struct lmd_sampling, temperature)}, {"top_p", offsetof(struct lmd_sampling, top_p)},
		{"min_p", offsetof(struct lmd_sampling, min_p)},
		{"repetition_penalty", offsetof(struct lmd_sampling, repetition_penalty)},
	};
	for (size_t i = 0; i < sizeof(floats) / sizeof(floats[0]); i++)
		if ((v = json_object_get(o, floats[i].key)) && !json_is_null(v)) {
			if (!json_is_number(v))
				return lmd_errorf(err, LMD_EINVAL, "'%s' is not a number", floats[i].key);
			*(float *)((char *)&j->p.sampling + floats[i].off) = (float)json_number_value(v);
		}
	if ((rc = whole_field(o, "top_k", 0, INT32_MAX, &x, err)) < 0)
		return rc;
	if (rc)
		j->p.sampling.top_k = (int)x;
	if ((rc = whole_field(o, "seed", 0, INT64_MAX, &x, err)) < 0)
		return rc;
	if (rc)
		j->p.sampling.seed = (uint64_t)x;
	if ((v = json_object_get(o, "ignore_eos")) && !json_is_null(v)) {
		if (!json_is_boolean(v))
			return lmd_errorf(err, LMD_EINVAL, "'ignore_eos' must be true or false");
		j->p.ignore_eos = json_is_true(v);
	}
	if ((v = json_object_get(o, "stop")) && !json_is_null(v)) {
		size_t i;
		json_t *x;
		if (json_is_string(v))
			v = json_pack("[O]", v), json_object_set_new(o, "stop", v);
		if (!json_is_array(v) || json_array_size(v) > LMD_MAX_STOP_STRINGS)
			return lmd_errorf(err, LMD_EINVAL, "'stop' must be a string or a list of at most %d strings",
					  LMD_MAX_STOP_STRINGS);
		j->p.n_stop = 0;
		json_array_foreach(v, i, x) {
			if (!json_is_string(x) || !json_string_length(x))
				return lmd_errorf(err, LMD_EINVAL, "'stop' holds something that is not a non-empty string");
			j->p.stop[j->p.n_stop++] = json_string_value(x);
		}
	}
	return lmd_sampling_validate(&j->p.sampling, err);
}

static int prepare(struct gen *g, struct job *j, const char *line, struct lmd_err *err)
{
	json_error_t je;
	int rc;
	j->line = json_loads(line, 0, &je);
	if (!j->line || !json_is_object(j->line))
		return lmd_errorf(err, LMD_EINVAL, "not a JSON object: %s", j->line ? "" : je.text);
	if ((rc = parse_fields(j, j->line, err)))
		return rc;
	json_t *prompt = json_object_get(j->line, "prompt"), *msgs = json_object_get(j->line, "messages");
	if (json_is_string(prompt) == json_is_array(msgs))
		return lmd_errorf(err, LMD_EINVAL, "give either \"prompt\" (a string) or \"messages\" (a list)");
	if (json_is_string(prompt)) {
		rc = lmd_runner_prompt(&g->r, json_string_value(prompt), NULL, 0, &j->ids, &j->nids, err);
	} else {
		size_t n = json_array_size(msgs), i;
		struct lmd_chat_msg *m = calloc(n ? n : 1, sizeof(*m));
		json_t *x;
		if (!m)
			return lmd_errorf(err, LMD_ENOMEM, "out of memory");
		json_array_foreach(msgs, i, x) {
			m[i].role = json_string_value(json_object_get(x, "role"));
			m[i].content = json_string_value(json_object_get(x, "content"));
			if (!m[i].role || !m[i].content) {
				free(m);
				return lmd_errorf(err, LMD_EINVAL, "messages[%zu] needs string 'role' and 'content'", i);
			}
		}
		rc = n ? lmd_runner_prompt(&g->r, NULL, m, (int)n, &j->ids, &j->nids, err)
		       : lmd_errorf(err, LMD_EINVAL, "'messages' is empty");
		free(m);
	}
	return rc ? rc : cut_to_session(g, j, err);
}

/* Read every line of stdin (blank lines skipped) into *lines (owned by the caller). */
static int read_lines(char ***lines, int *n, struct lmd_err *err)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int rc = LMD_OK;
	*lines = NULL;
	*n = 0;
	while ((len = getline(&line, &cap, stdin)) >= 0) {
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = 0;
		if (!len)
			continue;
		char **nl = realloc(*lines, (*n + 1) * sizeof(*nl));
		if (!nl || !(nl[*n] = strdup(line))) {
			if (nl)
				*lines = nl;
			rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
			break;
		}
		*lines = nl;
		(*n)++;
	}
	free(line);
	return rc;
}

static void submit(struct gen *g, struct job *j, const char *line)
{
	struct lmd_err err = {0};
	int rc = prepare(g, j, line, &err);
	if (!rc) {
		lmd_gen_params_apply(&j->p, &j->req);
		j->req.prompt = j->ids;
		j->req.nprompt = j->nids;
		j->req.on_done = on_done;
		j->req.ctx = g;
		rc = lmd_sched_submit(&g->r.s, &j->req, &err);
	}
	if (rc) {
		j->error = strdup(err.msg);
		j->done = 1;
		g->failed = 1;
	}
}

static int run_jsonl(struct gen *g, const struct lmd_gen_params *defaults, struct lmd_err *err)
{
	char **lines;
	int rc = read_lines(&lines, &g->n, err);
	if (!rc && g->n && !(g->jobs = calloc(g->n, sizeof(*g->jobs))))
		rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
	for (int i = 0; !rc && i < g->n; i++) {
		g->jobs[i].p = *defaults;
		submit(g, &g->jobs[i], lines[i]);
	}
	if (!rc) {
		on_done(NULL, g);  /* print the lines that failed before running, in order */
		rc = lmd_sched_run(&g->r.s, err);
	}
	for (int i = 0; i < g->n; i++) {
		free(lines[i]);
		lmd_request_free(&g->jobs[i].req, &g->r.m);
		free(g->jobs[i].ids);
		free(g->jobs[i].error);
		json_decref(g->jobs[i].line);
	}
	free(lines);
	free(g->jobs);
	return rc;
}

static void on_stream(struct lmd_request *r, const char *text, size_t len, void *ctx)
{
	(void)r, (void)ctx;
	fwrite(text, 1, len, stdout);
	lmd_cli_flush();
}

static int run_prompt(struct gen *g, const char *prompt, int echo, const struct lmd_gen_params *p,
		      const struct lmd_cli *cli, struct lmd_err *err)
{
	struct job j = {.p = *p};
	int rc = lmd_runner_prompt(&g->r, prompt, NULL, 0, &j.ids, &j.nids, err);
	if (!rc)
		rc = cut_to_session(g, &j, err);
	if (rc) {
		free(j.ids);
		return rc;
	}
	lmd_gen_params_apply(p, &j.req);
	j.req.prompt = j.ids;
	j.req.nprompt = j.nids;
	j.req.on_text = on_stream;
	if (echo)
		fputs(prompt, stdout);
	rc = lmd_sched_submit(&g->r.s, &j.req, err);
	if (!rc)
		rc = lmd_sched_run(&g->r.s, err);
	if (j.req.ntokens && isatty(STDOUT_FILENO))  /* the shell's prompt on a line of its own */
		putchar('\n');
	if (!rc && j.req.finish == LMD_FINISH_ERROR)
		rc = lmd_errorf(err, LMD_EFAIL, "%s", j.req.error);
	if (!rc) {
		struct lmd_request *r = &j.req;
		double ttft = r->t_first - r->t_submit, dec = r->t_end - r->t_first;
		lmd_log(cli, 1, "prompt %d tokens, ttft %.1f ms; %d tokens generated, %.2f tokens/s (decode); finish: %s",
			r->nprompt_total, ttft * 1e3, r->ntokens, r->ntokens > 1 && dec > 0 ? (r->ntokens - 1) / dec : 0.0,
			lmd_finish_name(r->finish));
	}
	lmd_request_free(&j.req, &g->r.m);
	free(j.ids);
	return rc;
}

int lmd_run_generate(int argc, char **argv)
{
	struct lmd_cli cli = {
		.prog = "lmd-run generate",
		.synopsis = "MODEL [OPTIONS]",
		.purpose = "Generate text: --prompt streams one continuation; JSON lines on stdin give one JSON line each.",
		.example = "echo '{\"prompt\": \"Once upon a time\", \"max_tokens\": 32}' | lmd-run generate share/models/lmd-tiny",
		.opts = opts,
	};
	static struct gen g;
	struct lmd_runner_opts ro = {.dtype = LMD_DTYPE_NONE};
	struct lmd_gen_params p;
	struct lmd_err err = {0};
	const char *arg, *prompt = NULL, *prompt_file = NULL;
	int k, echo = 0;
	lmd_gen_params_default(&p);
	while ((k = lmd_cli_next(&cli, argc, argv, &arg)) != -1) {
		if (lmd_runner_opt(&ro, &cli, k, arg) || lmd_gen_opt(&p, &cli, k, arg))
			continue;
		switch (k) {
		case O_PROMPT: prompt = arg; break;
		case O_PROMPT_FILE: prompt_file = arg; break;
		case O_ECHO: echo = 1; break;
		case O_TRUNCATE: g.truncate = 1; break;
		}
	}
	if (argc - optind != 1)
		lmd_usage(&cli, "expected one MODEL directory");
	if (prompt && prompt_file)
		lmd_usage(&cli, "give --prompt or --prompt-file, not both");
	char *file_text = NULL;
	if (prompt_file) {
		if (lmd_read_file(prompt_file, &file_text, NULL, &err))
			lmd_die(cli.prog, &err);
		prompt = file_text;
	}
	if (!prompt && isatty(STDIN_FILENO))
		fprintf(stderr, "%s: reading JSON lines from the terminal, e.g. {\"prompt\": \"Hello\"} (end with Ctrl-D); "
			"--prompt TEXT generates from TEXT\n", cli.prog);
	ro.model = argv[optind];
	ro.verbose = cli.verbose;
	lmd_log(&cli, 1, "seed %llu", (unsigned long long)p.sampling.seed);
	if (lmd_runner_open(&g.r, &ro, &err))
		lmd_die(cli.prog, &err);
	if (cli.verbose > 0) {
		char d[512];
		lmd_runner_describe(&g.r, d, sizeof(d));
		lmd_log(&cli, 1, "%s", d);
	}
	int rc = prompt ? run_prompt(&g, prompt, echo, &p, &cli, &err) : run_jsonl(&g, &p, &err);
	struct lmd_sched_stats st;
	lmd_sched_stats(&g.r.s, &st);
	lmd_log(&cli, 1, "%ld steps, %ld preemptions; prefix cache %s: %ld of %ld prompt tokens cached", st.steps,
		st.preemptions, st.prefix_caching ? "on" : "off", st.prefix_hits, st.prefix_queries);
	lmd_runner_close(&g.r);
	free(file_text);
	if (rc)
		lmd_die(cli.prog, &err);
	return g.failed ? LMD_EXIT_USAGE : 0;
}
