/*
 * lmd-bench serve URL: an OpenAI-compatible server (lmd-run serve, or any other) under load, measured
 * from the client side as vLLM's `bench serve` measures it (../shared/docs/peers.md §2.6): requests
 * arrive as a Poisson process, or one whose gaps are gamma-distributed (--burstiness), or all at once, at most --max-concurrency in flight (one run per value of
 * the list), each streamed on one libcurl multi handle. Per request: TTFT (sent to the first chunk with
 * a choice), E2E latency (sent to the last such chunk), TPOT = (E2E - TTFT) / (output tokens - 1) for
 * requests of two tokens or more, and every gap between chunks (ITL, pooled over requests); failed
 * requests count in no metric. Throughputs are over the run's wall time; goodput counts the requests
 * that meet every SLO given (--goodput), a second.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cmd/cli.h"
#include "dataset.h"
#include "file.h"
#include "lmd.h"
#include "client/oaiclient.h"

enum { O_ENDPOINT = 256, O_MODEL, O_API_KEY, O_NUM, O_RATE, O_BURST, O_MAXC, O_IN, O_OUT, O_RANGE, O_DATASET, O_SEED, O_TEMP,
       O_GOODPUT };

static const struct lmd_opt opts[] = {
	{"endpoint", O_ENDPOINT, "PATH", "/v1/completions (default) or /v1/chat/completions"},
	{"model", O_MODEL, "NAME", "the model to ask (default: the first of the server's /v1/models)"},
	{"api-key", O_API_KEY, "KEY", "send 'Authorization: Bearer KEY' (default: $OPENAI_API_KEY, if set)"},
	{"num-prompts", O_NUM, "N", "requests of each run (default 1000)"},
	{"request-rate", O_RATE, "R", "requests a second, Poisson arrivals; inf sends them all at once (default inf)"},
	{"burstiness", O_BURST, "B", "gaps between arrivals gamma-distributed, shape B, mean 1/R: 1 is Poisson, "
				    "less is burstier, more is steadier (default 1)"},
	{"max-concurrency", O_MAXC, "LIST", "most requests in flight, comma-separated: one run each (default: no limit)"},
	{"random-input-len", O_IN, "N", "prompt tokens of the random prompts (default 1024)"},
	{"random-output-len", O_OUT, "N", "tokens generated for the random prompts (default 128)"},
	{"random-range-ratio", O_RANGE, "R", "random lengths uniform in [N(1-R), N(1+R)] (default 0)"},
	{"dataset", O_DATASET, "FILE", "prompts from ShareGPT JSON or CSV prompt,output_len instead of random ones"},
	{"seed", O_SEED, "N", "seed of the random prompts, the dataset's order and the arrivals (default 0)"},
	{"temperature", O_TEMP, "T", "sampling temperature (default 0: greedy)"},
	{"goodput", O_GOODPUT, "SLO...", "count as good the requests that meet every SLO, each ttft:MS, tpot:MS or "
					 "e2el:MS (vLLM's spelling: several after one --goodput)"},
	{"format", 'f', "FMT", "csv (default), md, json, png (a plot of tokens/s and of TTFT, by gnuplot) or gnuplot (its script)"},
	{"output", 'o', "FILE", "write the table (or the plot) to FILE (default: stdout)"},
	{0},
};

struct cfg {
	const struct lmd_cli *cli;
	const char *key, *model, *endpoint;
	char *gen_url;                       /* owned */
	char *tok_url;                       /* owned; NULL when the server has no tokenizer endpoint */
	enum lmd_oai_tokenizer tok;
	double rate, burstiness, temperature;
	double slo[3];                       /* seconds: the TTFT, TPOT and E2EL a good request meets; 0: none */
	char slo_text[96];                   /* as given, "ttft:500 tpot:50" */
	int num;
};

struct item {
	char *prompt;  /* owned */
	int input_len, output_len;
};

static double seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rnd(uint64_t *s)  /* xorshift64*, never seeded with 0 */
{
	*s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static double uniform(uint64_t *s)
{
	return (double)(rnd(s) >> 11) / 9007199254740992.0;
}

static double normal(uint64_t *s)  /* Box-Muller */
{
	return sqrt(-2 * log(1 - uniform(s))) * cos(6.283185307179586 * uniform(s));
}

/* A gamma-distributed number of shape a and scale 1 (Marsaglia and Tsang; below 1, boosted). */
static double gamma1(uint64_t *s, double a)
{
	if (a < 1)
		return gamma1(s, a + 1) * pow(1 - uniform(s), 1 / a);
	double d = a - 1.0 / 3, c = 1 / sqrt(9 * d);
	for (;;) {
		double x, v;
		do {
			x = normal(s);
			v = 1 + c * x;
		} while (v <= 0);
		v = v * v * v;
		if (log(1 - uniform(s)) < 0.5 * x * x + d - d * v + d * log(v))
			return d * v;
	}
}

// ---------------------------------------------------------------------------------------------
// Prompts

/* Tokens of text without special tokens: the server's tokenizer endpoint, or bytes / 4 without one. */
static int count_tokens(const struct cfg *g, const char *text, int *n, struct lmd_err *err)
{
	if (!g->tok_url) {
		size_t b = strlen(text);
		*n = b ? (int)((b + 3) / 4) : 0;
		return LMD_OK;
	}
	char *body = lmd_oai_tokenize_body(g->tok, g->model, text, err);
	struct lmd_oai_call c = {0};
	int rc = body ? lmd_oai_call_init(&c, g->tok_url, g->key, body, err) : err->code;
	if (!rc && !(rc = lmd_oai_call_run(&c, err))) {
		long v = lmd_oai_token_count(c.resp, c.nresp);
		if (v < 0)
			rc = lmd_errorf(err, LMD_EFORMAT, "'%s' answered no token count", g->tok_url);
		*n = (int)v;
	}
	lmd_oai_call_free(&c);
	free(body);
	return rc;
}

/* Which tokenizer endpoint answers: LMDeploy's /v1/encode, then vLLM's /tokenize. */
static void probe_tokenizer(struct cfg *g, const char *url)
{
	for (enum lmd_oai_tokenizer t = LMD_OAI_TOK_ENCODE; t <= LMD_OAI_TOK_TOKENIZE; t++) {
		struct lmd_err e = {0};
		int n;
		g->tok = t;
		g->tok_url = lmd_oai_url(url, lmd_oai_tokenize_path(t));
		if (g->tok_url && !count_tokens(g, "hello world", &n, &e) && n > 0) {
			lmd_log(g->cli, 1, "counting tokens with %s", g->tok_url);
			return;
		}
		free(g->tok_url);
		g->tok_url = NULL;
	}
	g->tok = LMD_OAI_TOK_NONE;
	lmd_log(g->cli, 0, "the server has no /v1/encode or /tokenize: prompt lengths are estimated (4 bytes a token)");
}

static const char *const words[] = {
	"time", "year", "people", "way", "day", "man", "thing", "woman", "life", "child", "world", "school", "state",
	"family", "student", "group", "country", "problem", "hand", "part", "place", "case", "week", "company", "system",
	"program", "question", "work", "number", "night", "point", "home", "water", "room", "mother", "area", "money",
	"story", "fact", "month", "lot", "right", "study", "book", "eye", "job", "word", "business", "issue", "side",
	"kind", "head", "house", "service", "friend", "father", "power", "hour", "game", "line", "end", "member", "law",
	"car",
};

/* n random words, the same first words for the same seed whatever n. */
static char *random_words(uint64_t seed, int n)
{
	char *s = malloc((size_t)n * 10 + 1), *p = s;
	for (int i = 0; s && i < n; i++)
		p += sprintf(p, "%s%s", i ? " " : "", words[rnd(&seed) % (sizeof(words) / sizeof(words[0]))]);
	if (s)
		*p = 0;
	return s;
}

/* A random prompt of target tokens: more or fewer words until the count is right (or as close as it gets). */
static int random_prompt(const struct cfg *g, uint64_t seed, int target, struct item *it, struct lmd_err *err)
{
	int n = target > 1 ? target : 1, best_n = 0, best_c = 0, rc = LMD_OK;
	for (int iter = 0; iter < 12; iter++) {
		char *s = random_words(seed, n);
		int c;
		if (!s)
			return lmd_errorf(err, LMD_ENOMEM, "out of memory");
		rc = count_tokens(g, s, &c, err);
		free(s);
		if (rc)
			return rc;
		if (!best_n || abs(c - target) < abs(best_c - target))
			best_n = n, best_c = c;
		if (c == target)
			break;
		int next = iter < 4 ? (int)lround((double)n * target / (c ? c : 1)) : n + (c < target ? 1 : -1);
		n = next == n ? n + (c < target ? 1 : -1) : next;
		if (n < 1)
			break;
	}
	it->prompt = random_words(seed, best_n);
	it->input_len = best_c;
	return it->prompt ? LMD_OK : lmd_errorf(err, LMD_ENOMEM, "out of memory");
}

/*
 * num prompts from a dataset. ShareGPT as vLLM samples it: shuffled with the seed, the output length
 * the reference answer's, a pair kept when both have 4 tokens or more, the prompt at most 1024 and the
 * two at most 2048. CSV rows in file order. Too few prompts are used again, in the same order.
 */
static int dataset_prompts(const struct cfg *g, const char *path, uint64_t seed, struct item *items,
			   struct lmd_err *err)
{
	struct lmd_dataset d;
	int rc = lmd_dataset_load(&d, path, err), got = 0;
	if (rc)
		return rc;
	for (int i = d.n - 1; d.items[0].completion && i > 0; i--) {  /* Fisher-Yates */
		int j = (int)(rnd(&seed) % (uint64_t)(i + 1));
		struct lmd_dataset_item t = d.items[i];
		d.items[i] = d.items[j], d.items[j] = t;
	}
	for (int i = 0; !rc && i < d.n && got < g->num; i++) {
		struct lmd_dataset_item *di = &d.items[i];
		int pl, ol = di->output_len;
		if ((rc = count_tokens(g, di->prompt, &pl, err)) || (ol < 0 && (rc = count_tokens(g, di->completion, &ol, err))))
			break;
		if (di->completion && (pl < 4 || ol < 4 || pl > 1024 || pl + ol > 2048))
			continue;
		items[got] = (struct item){di->prompt, pl, ol};
		di->prompt = NULL;
		got++;
	}
	lmd_dataset_free(&d);
	if (!rc && !got)
		rc = lmd_errorf(err, LMD_EFORMAT, "'%s': no conversation passes the filter (4 to 1024 prompt tokens, "
				"4 or more output tokens, 2048 in all)", path);
	for (int i = got; !rc && i < g->num; i++)
		if (!(items[i].prompt = strdup(items[i % got].prompt)))
			rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
		else
			items[i].input_len = items[i % got].input_len, items[i].output_len = items[i % got].output_len;
	return rc;
}

// ---------------------------------------------------------------------------------------------
// A run

struct job {
	struct lmd_oai_call c;
	double st, first, last;  /* sent, first and last chunk with a choice (seconds) */
	double *itl;             /* owned: gaps between chunks (seconds) */
	int nitl, citl, texts;   /* texts: chunks with text, the output length when the server sends no usage */
};

static int on_piece(struct lmd_oai_call *c, const struct lmd_oai_piece *p, void *ctx)
{
	struct job *j = ctx;
	double t = seconds();
	(void)c;
	if (!j->first) {
		j->first = t;
	} else {
		if (j->nitl == j->citl) {
			int nc = j->citl ? j->citl * 2 : 64;
			double *v = realloc(j->itl, nc * sizeof(double));
			if (!v)
				return 1;
			j->itl = v, j->citl = nc;
		}
		j->itl[j->nitl++] = t - j->last;
	}
	j->last = t;
	j->texts += p->len > 0;
	return 0;
}

struct samples {
	double *v;
	size_t n, cap;
};

static int add(struct samples *s, double x)
{
	if (s->n == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 256;
		double *v = realloc(s->v, nc * sizeof(double));
		if (!v)
			return -1;
		s->v = v, s->cap = nc;
	}
	s->v[s->n++] = x;
	return 0;
}

enum { M_TTFT, M_TPOT, M_ITL, M_E2EL, M_N };

struct result {
	int conc, completed, failed, good;
	double duration, in_tok, out_tok;
	struct samples m[M_N];  /* owned, in seconds; sorted at the end */
};

static int start(const struct cfg *g, const struct item *it, struct job *j, CURLM *multi, struct lmd_err *err)
{
	json_t *params = json_pack("{s:i, s:b, s:f}", "max_tokens", it->output_len, "ignore_eos", 1, "temperature",
				   g->temperature);
	json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", it->prompt);
	int chat = strstr(g->endpoint, "chat") != NULL;
	char *body = !params || !msgs ? NULL
		     : chat ? lmd_oai_chat_body(g->model, msgs, params, err)
			    : lmd_oai_completion_body(g->model, it->prompt, params, err);
	json_decref(params);
	json_decref(msgs);
	*j = (struct job){.c = {.on_piece = on_piece, .ctx = j}};
	int rc = body ? lmd_oai_call_init(&j->c, g->gen_url, g->key, body, err) : lmd_errorf(err, LMD_ENOMEM, "out of memory");
	free(body);
	if (!rc && curl_multi_add_handle(multi, j->c.h))
		rc = lmd_errorf(err, LMD_EFAIL, "curl_multi_add_handle failed");
	j->st = seconds();
	return rc;
}

/* One finished request into the result; its first error into first_err. */
static int finish(const struct cfg *g, struct job *j, CURLcode res, const struct item *it, struct result *r,
		  struct lmd_err *first_err)
{
	struct lmd_err e = {0};
	int ok = !lmd_oai_call_end(&j->c, res, &e) && j->first;
	if (!ok) {
		if (!e.code)
			lmd_errorf(&e, LMD_EFAIL, "no chunk with a choice arrived");
		if (!first_err->code)
			*first_err = e;
		r->failed++;
	} else {
		long out = j->c.completion_tokens >= 0 ? j->c.completion_tokens : j->texts;
		double e2el = j->last - j->st, ttft = j->first - j->st, tpot = out > 1 ? (e2el - ttft) / (out - 1) : 0;
		r->completed++;
		r->good += (!g->slo[0] || ttft <= g->slo[0]) && (!g->slo[1] || tpot <= g->slo[1]) &&
			   (!g->slo[2] || e2el <= g->slo[2]);
		r->in_tok += j->c.prompt_tokens >= 0 ? j->c.prompt_tokens : it->input_len;
		r->out_tok += out;
		if (add(&r->m[M_TTFT], ttft) || add(&r->m[M_E2EL], e2el) || (out > 1 && add(&r->m[M_TPOT], tpot)))
			return LMD_ENOMEM;
		for (int i = 0; i < j->nitl; i++)
			if (add(&r->m[M_ITL], j->itl[i]))
				return LMD_ENOMEM;
	}
	lmd_oai_call_free(&j->c);
	free(j->itl);
	j->itl = NULL;
	return LMD_OK;
}

static int run(const struct cfg *g, const struct item *items, int conc, uint64_t seed, struct result *r,
	       struct lmd_err *err)
{
	CURLM *multi = curl_multi_init();
	struct job *jobs = calloc(g->num, sizeof(*jobs));
	double *arrival = malloc(g->num * sizeof(double));
	int rc = !multi || !jobs || !arrival ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	int started = 0, running = 0, done = 0, tty = isatty(2) && g->cli->verbose >= 0;
	struct lmd_err first_err = {0};
	for (int i = 0; !rc && i < g->num; i++)  /* as vLLM: the first at once, then gaps of mean 1/rate */
		arrival[i] = i == 0 || isinf(g->rate) ? 0
			     : arrival[i - 1] + (g->burstiness == 1 ? -log(1 - uniform(&seed))
								  : gamma1(&seed, g->burstiness) / g->burstiness) / g->rate;
	*r = (struct result){.conc = conc};
	double t0 = seconds();
	while (!rc && done < g->num) {
		double now = seconds() - t0;
		while (!rc && started < g->num && started - done < conc && arrival[started] <= now) {
			rc = start(g, &items[started], &jobs[started], multi, err);
			started++;
		}
		curl_multi_perform(multi, &running);
		CURLMsg *m;
		int left;
		while (!rc && (m = curl_multi_info_read(multi, &left))) {
			if (m->msg != CURLMSG_DONE)
				continue;
			char *priv = NULL;
			CURLcode res = m->data.result;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
			curl_multi_remove_handle(multi, m->easy_handle);
			struct job *j = (struct job *)(void *)priv;  /* the call is the job's first member */
			if (finish(g, j, res, &items[j - jobs], r, &first_err))
				rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
			done++;
			if (tty)
				fprintf(stderr, "\r%s: concurrency %d: %d/%d requests done", g->cli->prog, conc, done, g->num);
		}
		double wait = started < g->num && started - done < conc ? arrival[started] - (seconds() - t0) : 0.1;
		int ms = wait <= 0 ? 0 : wait > 0.1 ? 100 : (int)(wait * 1000) + 1;
		if (!rc && done < g->num)
			curl_multi_poll(multi, NULL, 0, ms, NULL);
	}
	r->duration = seconds() - t0;
	if (tty)
		fprintf(stderr, "\n");
	for (int i = 0; i < g->num && jobs; i++) {  /* after an error: what is still in flight */
		if (jobs[i].c.h)
			curl_multi_remove_handle(multi, jobs[i].c.h);
		lmd_oai_call_free(&jobs[i].c);
		free(jobs[i].itl);
	}
	for (int k = 0; k < M_N; k++)
		lmd_bench_sort(r->m[k].v, r->m[k].n);
	if (!rc && r->failed && r->completed)
		lmd_log(g->cli, 0, "max concurrency %d: %d of %d requests failed; the first: %s", conc, r->failed, g->num,
			first_err.msg);
	if (!rc && !r->completed) {
		*err = first_err;
		rc = err->code;
		if (g->num > 1)
			lmd_err_prefix(err, "every request failed; the first");
	}
	curl_multi_cleanup(multi);
	free(jobs);
	free(arrival);
	return rc;
}

// ---------------------------------------------------------------------------------------------
// Results

static const char *const metric[M_N] = {"ttft", "tpot", "itl", "e2el"};
static const char *const stat[4] = {"mean", "p50", "p90", "p99"};
enum { NHEAD = 18, NTAIL = 3, NCOL = NHEAD + 16 + NTAIL };

static void columns(struct lmd_bench_col *cols, char (*names)[32])
{
	static const char *const head[NHEAD] = {
		"date", "commit", "url", "model", "endpoint", "dataset", "request_rate", "num_prompts", "max_concurrency",
		"completed", "failed", "duration_s", "total_input_tokens", "total_output_tokens", "request_throughput",
		"input_tok_s", "output_tok_s", "total_tok_s"};
	for (int c = 0; c < NHEAD; c++)
		cols[c] = (struct lmd_bench_col){head[c], c < 7};
	for (int k = 0; k < M_N; k++)
		for (int s = 0; s < 4; s++) {
			snprintf(names[k * 4 + s], 32, "%s_%s_ms", metric[k], stat[s]);
			cols[NHEAD + k * 4 + s] = (struct lmd_bench_col){names[k * 4 + s], 0};
		}
	cols[NCOL - 3] = (struct lmd_bench_col){"burstiness", 0};
	cols[NCOL - 2] = (struct lmd_bench_col){"goodput_slo", 1};
	cols[NCOL - 1] = (struct lmd_bench_col){"request_goodput", 0};
}

static void cells(char (*v)[LMD_BENCH_CELL], const struct result *r, const struct cfg *g, const char *url,
		  const char *dataset)
{
	const char *commit;
	char date[32], rate[32];
	lmd_bench_stamp(date, sizeof(date), &commit);
	snprintf(rate, sizeof(rate), isinf(g->rate) ? "inf" : "%g", g->rate);
	const char *text[7] = {date, commit, url, g->model, g->endpoint, dataset, rate};
	for (int c = 0; c < 7; c++) {
		snprintf(v[c], LMD_BENCH_CELL, "%s", text[c]);
		for (char *p = v[c]; *p; p++)  /* a CSV field: no commas, quotes or line breaks */
			if (*p == ',' || *p == '"' || *p == '\n' || *p == '\r')
				*p = ';';
	}
	double d = r->duration;
	const double nums[NHEAD - 7] = {g->num, r->conc, r->completed, r->failed, d, r->in_tok, r->out_tok,
					  r->completed / d, r->in_tok / d, r->out_tok / d, (r->in_tok + r->out_tok) / d};
	for (int c = 7; c < NHEAD; c++)
		snprintf(v[c], LMD_BENCH_CELL, c < 11 ? "%.0f" : "%.3f", nums[c - 7]);
	for (int k = 0; k < M_N; k++) {
		const struct samples *s = &r->m[k];
		const double st[4] = {lmd_bench_mean(s->v, s->n), lmd_bench_pct(s->v, s->n, 50), lmd_bench_pct(s->v, s->n, 90),
				      lmd_bench_pct(s->v, s->n, 99)};
		for (int i = 0; i < 4; i++)
			snprintf(v[NHEAD + k * 4 + i], LMD_BENCH_CELL, "%.3f", st[i] * 1e3);
	}
	snprintf(v[NCOL - 3], LMD_BENCH_CELL, "%g", g->burstiness);
	snprintf(v[NCOL - 2], LMD_BENCH_CELL, "%s", g->slo_text);
	snprintf(v[NCOL - 1], LMD_BENCH_CELL, "%.3f", r->good / d);
}

/* The plot as a gnuplot script with its data inline (-f gnuplot: `gnuplot FILE > plot.png` elsewhere): output
 * tokens/s against concurrency, and the TTFT of every request as a distribution (CDF). */
static void plot_script(FILE *f, const struct result *rs, int n)
{
	fprintf(f, "set terminal pngcairo size 1280,480 font ',10'\nset multiplot layout 1,2\n"
		   "set grid\nset key top left\nset title 'Output tokens/s against concurrency'\n"
		   "set xlabel 'max concurrency'\nset ylabel 'output tokens/s'\n%s"
		   "plot '-' using 1:2 with linespoints pointtype 7 title 'output tok/s', "
		   "'-' using 1:2 with linespoints pointtype 5 title 'total tok/s'\n",
		n > 1 ? "set logscale x 2\n" : "");
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < n; i++)
			fprintf(f, "%d %.6f\n", rs[i].conc, (pass ? rs[i].in_tok + rs[i].out_tok : rs[i].out_tok) / rs[i].duration);
		fprintf(f, "e\n");
	}
	fprintf(f, "unset logscale x\nset title 'TTFT distribution'\nset xlabel 'TTFT (ms)'\n"
		   "set ylabel 'fraction of requests'\nset key bottom right\nplot");
	for (int i = 0; i < n; i++)
		fprintf(f, "%s '-' using 1:2 with steps title 'concurrency %d'", i ? "," : "", rs[i].conc);
	fprintf(f, "\n");
	for (int i = 0; i < n; i++) {
		const struct samples *s = &rs[i].m[M_TTFT];
		for (size_t k = 0; k < s->n; k++)
			fprintf(f, "%.6f %.6f\n", s->v[k] * 1e3, (double)(k + 1) / (double)s->n);
		fprintf(f, "e\n");
	}
	fprintf(f, "unset multiplot\n");
}

/* -f png: the script above run by gnuplot. */
static int plot(const struct result *rs, int n, const char *out, struct lmd_err *err)
{
	char dir[] = "/tmp/lmd-bench-plot.XXXXXX", path[128], cmd[256];
	if (!mkdtemp(dir))
		return lmd_errorf(err, LMD_EIO, "cannot make a temporary directory: %m");
	snprintf(path, sizeof(path), "%s/plot.gp", dir);
	FILE *f = fopen(path, "w");
	int rc = f ? LMD_OK : lmd_errorf(err, LMD_EIO, "cannot write '%s': %m", path);
	if (f) {
		fprintf(f, "set output '%s/plot.png'\n", dir);
		plot_script(f, rs, n);
		if (fclose(f))
			rc = lmd_errorf(err, LMD_EIO, "cannot write '%s'", path);
	}
	snprintf(cmd, sizeof(cmd), "gnuplot '%s' 2>&1", path);
	if (!rc && system(cmd))
		rc = lmd_errorf(err, LMD_EFAIL, "gnuplot failed (is it installed? Debian: gnuplot-nox)");
	char *png = NULL;
	size_t len = 0;
	snprintf(path, sizeof(path), "%s/plot.png", dir);
	struct lmd_out o = {0};
	if (!rc && !(rc = lmd_read_file(path, &png, &len, err)) && !(rc = lmd_out_open(&o, out, err))) {
		if (fwrite(png, 1, len, o.f) != len)
			lmd_out_abort(&o), rc = lmd_errorf(err, LMD_EIO, "cannot write '%s'", out);
		else
			rc = lmd_out_commit(&o, err);
	}
	free(png);
	lmd_rmtree(dir);
	return rc;
}

// ---------------------------------------------------------------------------------------------

/* One --goodput SLO, KEY:MS, into g; 0 when s is not one. */
static int slo(const struct lmd_cli *cli, struct cfg *g, const char *s)
{
	static const char *const key[3] = {"ttft", "tpot", "e2el"};
	const char *colon = strchr(s, ':');
	for (int k = 0; colon && k < 3; k++)
		if ((size_t)(colon - s) == strlen(key[k]) && !strncmp(s, key[k], strlen(key[k]))) {
			g->slo[k] = lmd_cli_double(cli, "goodput", colon + 1, 1e-3, 1e9) / 1e3;
			size_t n = strlen(g->slo_text);
			snprintf(g->slo_text + n, sizeof(g->slo_text) - n, "%s%s", n ? " " : "", s);
			return 1;
		}
	return 0;
}

int lmd_bench_serve(int argc, char **argv)
{
	struct lmd_cli cli = {
		.prog = "lmd-bench serve",
		.synopsis = "URL [OPTIONS]",
		.purpose = "Measure an OpenAI-compatible server under load: request and token throughput, TTFT, TPOT, "
			   "inter-token and end-to-end latency, as vLLM's bench serve does.",
		.example = "lmd-bench serve http://127.0.0.1:23333 --num-prompts 200 --max-concurrency 1,16,64 -f md",
		.opts = opts,
	};
	struct cfg g = {.cli = &cli, .key = getenv("OPENAI_API_KEY"), .endpoint = "/v1/completions", .rate = INFINITY,
			.burstiness = 1, .num = 1000};
	int conc[16], nconc = 0, in_len = 1024, out_len = 128, k, goodput = 0;
	double range = 0;
	uint64_t seed = 0;
	const char *arg, *dataset = NULL, *fmt = "csv", *out = "-";
	if (g.key && !*g.key)
		g.key = NULL;
	while ((k = lmd_cli_next(&cli, argc, argv, &arg)) != -1) {
		switch (k) {
		case O_ENDPOINT:
			if (strcmp(arg, "/v1/completions") && strcmp(arg, "/v1/chat/completions"))
				lmd_usage(&cli, "--endpoint: '%s' is not /v1/completions or /v1/chat/completions", arg);
			g.endpoint = arg;
			break;
		case O_MODEL: g.model = arg; break;
		case O_API_KEY: g.key = arg; break;
		case O_NUM: g.num = (int)lmd_cli_long(&cli, "num-prompts", arg, 1, 1 << 20); break;
		case O_RATE: g.rate = !strcmp(arg, "inf") ? INFINITY : lmd_cli_double(&cli, "request-rate", arg, 1e-6, 1e9); break;
		case O_BURST: g.burstiness = lmd_cli_double(&cli, "burstiness", arg, 1e-3, 1e3); break;
		case O_GOODPUT:
			if (!slo(&cli, &g, arg))
				lmd_usage(&cli, "--goodput: '%s' is not ttft:MS, tpot:MS or e2el:MS", arg);
			goodput = 1;
			break;
		case O_MAXC: nconc = lmd_bench_list(&cli, "max-concurrency", arg, conc, 16); break;
		case O_IN: in_len = (int)lmd_cli_long(&cli, "random-input-len", arg, 1, 1 << 24); break;
		case O_OUT: out_len = (int)lmd_cli_long(&cli, "random-output-len", arg, 1, 1 << 24); break;
		case O_RANGE: range = lmd_cli_double(&cli, "random-range-ratio", arg, 0, 0.999); break;
		case O_DATASET: dataset = arg; break;
		case O_SEED: seed = (uint64_t)lmd_cli_long(&cli, "seed", arg, 0, 0x7fffffffffffffffL); break;
		case O_TEMP: g.temperature = lmd_cli_double(&cli, "temperature", arg, 0, 100); break;
		case 'f':
			if (!lmd_bench_format(arg) && strcmp(arg, "png") && strcmp(arg, "gnuplot"))
				lmd_usage(&cli, "--format: '%s' is not csv, md, json, png or gnuplot", arg);
			fmt = arg;
			break;
		case 'o': out = arg; break;
		}
	}
	const char *url = NULL;
	for (int i = optind; i < argc; i++)  /* the URL, and vLLM's further SLOs after --goodput */
		if (!(goodput && slo(&cli, &g, argv[i]))) {
			if (url)
				lmd_usage(&cli, "expected one URL");
			url = argv[i];
		}
	if (!url)
		lmd_usage(&cli, "expected one URL");
	if (!nconc)
		conc[nconc++] = g.num;
	struct lmd_err err = {0};
	struct item *items = calloc(g.num, sizeof(*items));
	struct result *rs = calloc(nconc, sizeof(*rs));
	char name[256], (*v)[LMD_BENCH_CELL] = calloc((size_t)nconc * NCOL, LMD_BENCH_CELL);
	int rc = !items || !rs || !v ? lmd_errorf(&err, LMD_ENOMEM, "out of memory") : LMD_OK, nrow = 0;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (!rc && !(g.gen_url = lmd_oai_url(url, g.endpoint)))
		rc = lmd_errorf(&err, LMD_ENOMEM, "out of memory");
	if (!rc && !g.model && !(rc = lmd_oai_first_model(url, g.key, name, sizeof(name), &err)))
		g.model = name;
	if (!rc) {
		probe_tokenizer(&g, url);
		if (dataset) {
			rc = dataset_prompts(&g, dataset, seed ^ 0x9e3779b97f4a7c15ULL, items, &err);
		} else {
			uint64_t s = seed ^ 0x9e3779b97f4a7c15ULL;
			int lo_in = (int)floor(in_len * (1 - range)), lo_out = (int)floor(out_len * (1 - range));
			for (int i = 0; !rc && i < g.num; i++) {
				int span_in = (int)ceil(in_len * (1 + range)) - lo_in + 1, span_out = (int)ceil(out_len * (1 + range)) - lo_out + 1;
				int want = lo_in + (int)(rnd(&s) % (uint64_t)span_in);
				items[i].output_len = lo_out + (int)(rnd(&s) % (uint64_t)span_out);
				rc = random_prompt(&g, rnd(&s) | 1, want > 1 ? want : 1, &items[i], &err);
			}
		}
	}
	for (int i = 0; !rc && i < g.num; i++)
		if (items[i].output_len < 1)
			items[i].output_len = 1;
	if (!rc) {  /* as vLLM: one request alone first, so that a wrong URL, key or model fails at once */
		struct result probe;
		struct cfg one = g;
		one.num = 1;
		rc = run(&one, items, 1, seed + 1, &probe, &err);
		for (int m = 0; m < M_N; m++)
			free(probe.m[m].v);
		if (rc)
			lmd_err_prefix(&err, "the first test request to '%s'", g.gen_url);
	}
	const char *dname = dataset ? strrchr(dataset, '/') ? strrchr(dataset, '/') + 1 : dataset : "random";
	for (int i = 0; !rc && i < nconc; i++) {
		if (!(rc = run(&g, items, conc[i], seed + 1, &rs[i], &err))) {
			lmd_log(&cli, 0, "max concurrency %d: %.2f requests/s (%.2f good), %.1f output tokens/s, TTFT p50 %.1f ms, "
				"TPOT p50 %.2f ms", conc[i], rs[i].completed / rs[i].duration, rs[i].good / rs[i].duration,
				rs[i].out_tok / rs[i].duration, lmd_bench_pct(rs[i].m[M_TTFT].v, rs[i].m[M_TTFT].n, 50) * 1e3,
				lmd_bench_pct(rs[i].m[M_TPOT].v, rs[i].m[M_TPOT].n, 50) * 1e3);
			cells(v + (size_t)nrow * NCOL, &rs[i], &g, url, dname);
			nrow++;
		}
	}
	struct lmd_bench_col cols[NCOL];
	char names[16][32];
	columns(cols, names);
	int script = !strcmp(fmt, "gnuplot");
	if (!rc && !strcmp(fmt, "png")) {
		rc = plot(rs, nrow, out, &err);
	} else if (!rc) {
		struct lmd_out o = {0};
		if (!(rc = lmd_out_open(&o, out, &err))) {
			if (script)
				plot_script(o.f, rs, nrow);
			else
				lmd_bench_table(o.f, fmt, cols, NCOL, (const char(*)[LMD_BENCH_CELL])v, nrow);
			rc = lmd_out_commit(&o, &err);
		}
	}
	if (!rc && (script || !strcmp(fmt, "png")) && cli.verbose >= 0)  /* a plot's figures as a table beside it */
		lmd_bench_table(stderr, "md", cols, NCOL, (const char(*)[LMD_BENCH_CELL])v, nrow);
	for (int i = 0; items && i < g.num; i++)
		free(items[i].prompt);
	for (int i = 0; rs && i < nconc; i++)
		for (int m = 0; m < M_N; m++)
			free(rs[i].m[m].v);
	free(items);
	free(rs);
	free(v);
	free(g.gen_url);
	free(g.tok_url);
	curl_global_cleanup();
	if (rc)
		lmd_die(cli.prog, &err);
	return 0;
}
