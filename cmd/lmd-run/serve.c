/*
 * lmd-run serve MODEL: the OpenAI-compatible HTTP server.
 *
 * Threads: libmicrohttpd runs a thread per connection (keep-alive; a slow client holds only its own
 * thread). One engine thread owns the model and the scheduler: it takes the requests the connection
 * threads decoded and tokenized (an inbox), steps the scheduler over all of them at once (continuous
 * batching across HTTP requests), and hands text back through each request's buffers and an eventfd.
 * A connection thread waits on that eventfd and on its socket: a client that hangs up has its request
 * cancelled at the engine's next turn, between two steps, and its KV blocks freed there. The main
 * thread loads nothing; it waits for SIGTERM / SIGINT and drains.
 *
 * Locking: srv.mu guards the inbox, the retire list, every job's shared fields (marked) and the stats.
 * The engine never holds it while it steps; the scheduler's callbacks take it briefly.
 */
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "cmd/opts.h"
#include "file.h"
#include "hfconfig.h"
#include "lmd.h"
#include "run.h"
#include "engine/runner.h"
#include "serve/serve.h"
#include "tok/toolcall.h"
#include "share.h"

#define MAX_BODY (8u << 20)        /* the largest request body (413 beyond) */
#define MAX_PENDING (4u << 20)     /* stream text a reader has not taken: beyond, it is stalled and dropped */
#define SEND_BUFFER (64 << 10) /* a connection's socket send buffer: a reader that stalls shows within it */
#define PING_MS 10000              /* an SSE comment after this long without text */
#define DRAIN_SECONDS 30           /* SIGTERM: how long in-flight requests may take to finish */

enum {
	O_SERVER_NAME = 256, O_SERVER_PORT, O_API_KEYS, O_MODEL_NAME, O_MAX_CONCURRENT, O_LOG_LEVEL, O_TIMEOUT,
	O_TOOL_PARSER,
};

static const struct lmd_opt opts[] = {
	{"server-name", O_SERVER_NAME, "HOST", "address to listen on, IPv4 or IPv6 (default 127.0.0.1)"},
	{"server-port", O_SERVER_PORT, "PORT", "port to listen on (default 23333; 0 = any free port)"},
	{"api-keys", O_API_KEYS, "KEY", "accept only these keys (Authorization: Bearer KEY): the words after it up to the next option"},
	{"model-name", O_MODEL_NAME, "NAME", "the model's name in the API (default: MODEL as given)"},
	{"max-concurrent-requests", O_MAX_CONCURRENT, "N", "requests in flight before 429 (default 1024)"},
	{"log-level", O_LOG_LEVEL, "LEVEL", "ERROR, WARNING (default), INFO (a line a request) or DEBUG"},
	{"timeout", O_TIMEOUT, "SEC", "drop a connection that neither sends nor reads for SEC seconds, waits for the engine aside (default 60)"},
	{"tool-call-parser", O_TOOL_PARSER, "NAME", "internlm, qwen or llama3: the tool calls in answers (default: template)"},
	LMD_RUNNER_OPTS,
	LMD_PREFIX_OPTS,
	{0},
};

struct job;

/* One choice of a request: a scheduler request and what the stream has not sent yet. */
struct choice {
	struct lmd_request req;
	struct job *job;
	int index;
	int prompt;                  /* which prompt of the request */
	/* under srv.mu (streams) */
	char *out;                   /* owned: text generated and not yet sent */
	size_t nout, capout;
	struct lmd_logprob *lp;      /* owned: log-probabilities not yet sent */
	int nlp, lpseen;             /* lpseen: req.lp entries copied so far */
	size_t lpcap;
	int done;
	/* the connection thread's */
	struct lmd_tool_stream ts;   /* with tools: the answer's text -> content and tool calls */
	int tools;                   /* ts is in use */
	int opened;                  /* the chunk with the role went out */
	size_t sent;                 /* text bytes sent (completion log-probabilities' offsets) */
};

struct job {
	struct lmd_api_request api;
	struct lmd_api_meta meta;
	char id[48];
	int32_t **ids;               /* owned [nprompt]: each prompt's tokens */
	int *nids;
	char *tool_prefix;           /* owned: the start of a forced tool call, after the generation prompt */
	char **echo;                 /* owned [nprompt]: the prompts' text, with echo */
	struct choice *ch;           /* owned [nch] */
	int nch;
	int efd;                     /* eventfd: the engine wakes the connection thread */
	int sock;                    /* the client's socket (hang-ups) */
	/* under srv.mu */
	int ndone;
	int cancel;                  /* the client left or stalled: the engine cancels the rest */
	char failed[256];            /* a choice failed: the message */
	int fail_status;             /* and the HTTP status it answers (400: the scheduler refused the request) */
	struct job *next;            /* the inbox and retire lists */
	struct job *anext;           /* the engine's list of jobs it runs (the engine's alone) */
};

static struct server {
	struct lmd_runner r;
	struct lmd_runner_opts ro;
	struct lmd_gen_params defaults;
	int default_max_tokens;      /* generation_config.json's max_new_tokens; 0 = none */
	const char *model_name;
	const char **keys;
	int nkeys;
	int max_inflight;
	unsigned timeout;
	int verbose;
	int tool_parser;             /* enum lmd_tool_parser, -1: the chat template's */
	const char *script_path;     /* tests only: LMD_TEST_SCRIPT */
	struct lmd_test_script script;  /* under mu */
	long started;
	pthread_t engine;
	pthread_mutex_t mu;
	pthread_cond_t wake;
	/* under mu */
	int ready, draining, stop, engine_done;
	int inflight;                /* jobs accepted and not retired */
	struct job *inbox, *retire;
	struct lmd_serve_stats stats;
	uint64_t next_id;
	struct lmd_err load_err;
} srv = {.mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static const struct lmd_cli *g_cli;

static void logf_(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(int level, const char *fmt, ...)
{
	if (srv.verbose < level)
		return;
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: %s\n", g_cli->prog, line);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void wake_fd(int fd)
{
	uint64_t one = 1;
	if (write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		logf_(1, "eventfd: %s", strerror(errno));
}

/* Room for need elements of size elem in *p (capacity *cap, doubled as it grows); -1 when out of memory. */
static int reserve(void *p, size_t *cap, size_t need, size_t elem)
{
	void **pp = p;
	if (need <= *cap)
		return 0;
	size_t nc = *cap ? *cap * 2 : 256;
	while (nc < need)
		nc *= 2;
	void *q = realloc(*pp, nc * elem);
	if (!q)
		return -1;
	*pp = q;
	*cap = nc;
	return 0;
}

// ----------------------------------------------------------------------------
// the engine thread

static void grow_lp(struct choice *c, const struct lmd_request *r)
{
	int add = r->nlp - c->lpseen;
	if (add <= 0)
		return;
	if (reserve(&c->lp, &c->lpcap, (size_t)(c->nlp + add), sizeof(*c->lp))) {
		c->job->cancel = 1;
		return;
	}
	memcpy(c->lp + c->nlp, r->lp + c->lpseen, add * sizeof(*c->lp));
	c->nlp += add;
	c->lpseen = r->nlp;
}

/* Streams: the text and log-probabilities go to the choice's buffers for the connection thread. */
static void on_text(struct lmd_request *r, const char *text, size_t len, void *ctx)
{
	struct choice *c = ctx;
	pthread_mutex_lock(&srv.mu);
	if (c->nout + len > MAX_PENDING || reserve(&c->out, &c->capout, c->nout + len, 1)) {
		c->job->cancel = 1;  /* the reader stopped reading (or no memory) */
	} else {
		memcpy(c->out + c->nout, text, len);
		c->nout += len;
		grow_lp(c, r);
	}
	pthread_mutex_unlock(&srv.mu);
	wake_fd(c->job->efd);
}

static void on_done(struct lmd_request *r, void *ctx)
{
	struct choice *c = ctx;
	pthread_mutex_lock(&srv.mu);
	if (c->job->api.stream)
		grow_lp(c, r);
	c->done = 1;
	c->job->ndone++;
	if (r->finish == LMD_FINISH_ERROR && !c->job->failed[0]) {
		snprintf(c->job->failed, sizeof(c->job->failed), "%s", r->error);
		c->job->fail_status = 500;
	}
	lmd_serve_stats_finished(&srv.stats, r);
	pthread_mutex_unlock(&srv.mu);
	wake_fd(c->job->efd);
	logf_(1, "%s choice %d: %d prompt tokens (%d prefilled), %d generated, %s, ttft %.1f ms, %.1f ms in all",
	      c->job->id, c->index, r->nprompt_total, r->nprefill, r->ntokens, lmd_finish_name(r->finish),
	      r->t_first > 0 ? (r->t_first - r->t_submit) * 1e3 : 0, (r->t_end - r->t_submit) * 1e3);
}

static uint64_t random_seed(void)
{
	uint64_t s = 0;
	FILE *f = fopen("/dev/urandom", "rb");
	if (!f || fread(&s, sizeof(s), 1, f) != 1)
		s = (uint64_t)(now_s() * 1e9) ^ (uint64_t)getpid();
	if (f)
		fclose(f);
	return s;
}

/* Queue a job's choices; one that the scheduler refuses finishes at once with its error. */
static void submit_job(struct job *j)
{
	for (int i = 0; i < j->nch; i++) {
		struct choice *c = &j->ch[i];
		struct lmd_err err = {0};
		c->req.prompt = j->ids[c->prompt];
		c->req.nprompt = j->nids[c->prompt];
		if (lmd_sched_submit(&srv.r.s, &c->req, &err)) {
			snprintf(c->req.error, sizeof(c->req.error), "%s", err.msg);
			c->req.finish = LMD_FINISH_ERROR;
			pthread_mutex_lock(&srv.mu);
			snprintf(j->failed, sizeof(j->failed), "%s", err.msg);
			j->fail_status = err.code == LMD_EINVAL ? 400 : 500;
			pthread_mutex_unlock(&srv.mu);
			on_done(&c->req, c);
		}
	}
}

static void free_job(struct job *j)
{
	for (int i = 0; i < j->nch; i++) {
		lmd_request_free(&j->ch[i].req, &srv.r.m);
		lmd_tool_stream_free(&j->ch[i].ts);
		free(j->ch[i].out);
		free(j->ch[i].lp);
	}
	for (int i = 0; j->ids && i < j->api.nprompt; i++) {
		free(j->ids[i]);
		free(j->echo ? j->echo[i] : NULL);
	}
	free(j->ids);
	free(j->nids);
	free(j->echo);
	free(j->tool_prefix);
	free(j->ch);
	if (j->efd >= 0)
		close(j->efd);
	lmd_api_request_free(&j->api);
	free(j);
}

static void cancel_job(struct job *j)
{
	for (int i = 0; i < j->nch; i++)
		if (!j->ch[i].done)
			lmd_sched_cancel(&srv.r.s, &j->ch[i].req);
}

static void snapshot_stats(int running, int waiting)
{
	struct lmd_sched_stats st;
	lmd_sched_stats(&srv.r.s, &st);
	pthread_mutex_lock(&srv.mu);
	srv.stats.running = running;
	srv.stats.waiting = waiting;
	srv.stats.blocks_total = st.blocks_total;
	srv.stats.blocks_used = st.blocks_used;
	srv.stats.blocks_cached = st.blocks_cached;
	srv.stats.preemptions = (uint64_t)st.preemptions;
	srv.stats.prefix_queries = (uint64_t)st.prefix_queries;
	srv.stats.prefix_hits = (uint64_t)st.prefix_hits;
	pthread_mutex_unlock(&srv.mu);
}

static void *engine_main(void *arg)
{
	(void)arg;
	struct job *active = NULL;
	struct lmd_err err = {0};
	if (lmd_runner_open(&srv.r, &srv.ro, &err) ||
	    (srv.script_path && lmd_test_script_load(&srv.script, srv.script_path, &srv.r.tok, &err))) {
		pthread_mutex_lock(&srv.mu);
		srv.load_err = err;
		srv.engine_done = 1;
		pthread_mutex_unlock(&srv.mu);
		kill(getpid(), SIGUSR1);
		return NULL;
	}
	if (srv.verbose > 0) {
		char d[1024];
		lmd_runner_describe(&srv.r, d, sizeof(d));
		logf_(1, "%s", d);
	}
	snapshot_stats(0, 0);
	pthread_mutex_lock(&srv.mu);
	srv.ready = 1;
	logf_(0, "model loaded; ready");
	for (;;) {
		while (!srv.inbox && !srv.retire && !active && !srv.stop)
			pthread_cond_wait(&srv.wake, &srv.mu);
		struct job *in = srv.inbox, *ret = srv.retire;
		int stop = srv.stop;
		srv.inbox = srv.retire = NULL;
		for (struct job *j = active; j; j = j->anext)
			if (stop)
				j->cancel = 1;
		pthread_mutex_unlock(&srv.mu);
		/* jobs whose choices are all done leave the engine's list before their connection retires them */
		for (struct job **p = &active; *p;) {
			if ((*p)->ndone == (*p)->nch)
				*p = (*p)->anext;
			else
				p = &(*p)->anext;
		}
		while (ret) {
			struct job *n = ret->next;
			free_job(ret);
			ret = n;
		}
		struct job *arrived = NULL;
		while (in) {  /* the inbox is newest first: into arrival order */
			struct job *n = in->next;
			in->next = arrived;
			arrived = in;
			in = n;
		}
		for (struct job *j = arrived, *n; j; j = n) {
			n = j->next;  /* read first: a job refused at once may be retired (relinked) at once */
			submit_job(j);
			if (stop)
				cancel_job(j);
			j->anext = active;
			active = j;
		}
		for (struct job *j = active; j; j = j->anext) {
			pthread_mutex_lock(&srv.mu);
			int cancel = j->cancel;
			pthread_mutex_unlock(&srv.mu);
			if (cancel)
				cancel_job(j);
		}
		int left = srv.r.s.nrun + srv.r.s.nwait;
		if (left > 0 && lmd_sched_step(&srv.r.s, &err) < 0) {
			logf_(-1, "engine failure: %s", err.msg);
			for (struct job *j = active; j; j = j->anext) {
				pthread_mutex_lock(&srv.mu);
				snprintf(j->failed, sizeof(j->failed), "engine failure: %s", err.msg);
				j->fail_status = 500;
				pthread_mutex_unlock(&srv.mu);
				cancel_job(j);
			}
		}
		snapshot_stats(srv.r.s.nrun, srv.r.s.nwait);
		int busy = 0;
		for (struct job *j = active; j && !busy; j = j->anext)
			busy = j->ndone < j->nch;
		if (!busy)
			active = NULL;
		pthread_mutex_lock(&srv.mu);
		if (srv.stop && !active && !srv.inbox) {
			for (struct job *j = srv.retire; j;) {
				struct job *n = j->next;
				free_job(j);
				j = n;
			}
			srv.retire = NULL;
			break;
		}
	}
	srv.engine_done = 1;
	pthread_mutex_unlock(&srv.mu);
	return NULL;
}

// ----------------------------------------------------------------------------
// HTTP glue

struct conn_req {                /* one HTTP request: its body, read in pieces */
	char *body;
	size_t len, cap;
	int too_big;
	struct job *job;             /* a non-streamed job to retire when the request ends */
};

static enum MHD_Result send_text(struct MHD_Connection *c, int status, const char *type, const char *body,
				 size_t len, int retry_after)
{
	struct MHD_Response *res = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!res)
		return MHD_NO;
	MHD_add_response_header(res, "Content-Type", type);
	if (retry_after)
		MHD_add_response_header(res, "Retry-After", "1");
	if (status == 405)
		MHD_add_response_header(res, "Allow", "GET, POST");
	enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, res);
	MHD_destroy_response(res);
	return rc;
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, char *json)
{
	if (!json)
		return MHD_NO;
	enum MHD_Result rc = send_text(c, status, "application/json", json, strlen(json), 0);
	free(json);
	return rc;
}

static enum MHD_Result send_error(struct MHD_Connection *c, const struct lmd_api_error *e)
{
	char *json = lmd_api_error_json(e);
	if (!json)
		return MHD_NO;
	enum MHD_Result rc = send_text(c, e->status, "application/json", json, strlen(json),
				       e->status == 429 || e->status == 503);
	free(json);
	if (e->status >= 400)
		logf_(1, "%d %s", e->status, e->message);
	return rc;
}

static enum MHD_Result fail(struct MHD_Connection *c, int status, const char *param, const char *code,
			    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static enum MHD_Result fail(struct MHD_Connection *c, int status, const char *param, const char *code,
			    const char *fmt, ...)
{
	struct lmd_api_error e = {0};
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e.message, sizeof(e.message), fmt, ap);
	va_end(ap);
	e.status = status;
	snprintf(e.param, sizeof(e.param), "%s", param ? param : "");
	snprintf(e.code, sizeof(e.code), "%s", code ? code : "");
	return send_error(c, &e);
}

/* Hand a finished job to the engine to free (it owns the model the requests' sessions belong to). */
static void retire(struct job *j)
{
	pthread_mutex_lock(&srv.mu);
	if (srv.engine_done) {
		pthread_mutex_unlock(&srv.mu);
		free_job(j);
		pthread_mutex_lock(&srv.mu);
	} else {
		j->next = srv.retire;
		srv.retire = j;
		pthread_cond_signal(&srv.wake);
	}
	srv.inflight--;
	pthread_mutex_unlock(&srv.mu);
}

/*
 * Wait up to ms for the engine (1) or the client hanging up (-1); 0 on timeout. MHD's idle timeout
 * does not run while we wait on the engine: it is for a client that stops sending or reading.
 */
static int wait_event(struct job *j, struct MHD_Connection *c, int ms)
{
	struct pollfd p[2] = {{.fd = j->efd, .events = POLLIN}, {.fd = j->sock, .events = POLLRDHUP}};
	MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
	int n = poll(p, j->sock >= 0 ? 2 : 1, ms);
	MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, srv.timeout);
	if (n > 0 && (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR)))
		return -1;
	if (n > 0 && (p[0].revents & POLLIN)) {
		uint64_t v;
		if (read(j->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			return -1;
		return 1;
	}
	return 0;
}

/* Every choice finished (or the engine is gone, which ends them all). */
static int job_done(struct job *j)
{
	pthread_mutex_lock(&srv.mu);
	int d = j->ndone == j->nch || srv.engine_done;
	pthread_mutex_unlock(&srv.mu);
	return d;
}

/* The client left: cancel, and wait for the engine to let go of the job (within a step). */
static void abandon(struct job *j, struct MHD_Connection *c)
{
	pthread_mutex_lock(&srv.mu);
	j->cancel = 1;
	pthread_cond_signal(&srv.wake);
	pthread_mutex_unlock(&srv.mu);
	j->sock = -1;
	while (!job_done(j))
		wait_event(j, c, 1000);
}

static const char *finish_text(enum lmd_finish f)
{
	return f == LMD_FINISH_CANCEL ? "abort" : lmd_finish_name(f);
}

static struct lmd_api_usage usage_of(const struct job *j)
{
	struct lmd_api_usage u = {0};
	for (int i = 0; i < j->api.nprompt; i++)
		u.prompt += j->nids[i];
	for (int i = 0; i < j->nch; i++)
		u.completion += j->ch[i].req.ntokens;
	return u;
}

// --- tools: answers through the tool-call parser (serve/toolcall.h); test scripts

/* A choice of a chat request with tools has its answer parsed into content and tool calls (the
 * markers may be special tokens: they stay in the text, as LMDeploy does); a test script, when one
 * is loaded, gives the choice its next answer instead of the model's. */
static int tools_setup(struct job *j, struct choice *c)
{
	const struct lmd_api_request *q = &j->api;
	int kind = srv.tool_parser >= 0 ? srv.tool_parser : lmd_tool_parser_named(srv.r.tmpl.tool_parser);
	if (q->kind == LMD_API_CHAT && q->tool_choice != LMD_TOOL_NONE && kind > 0) {
		struct lmd_sb none = {0};
		lmd_tool_stream_init(&c->ts, kind, q->tool_names, q->ntool_names);
		c->tools = 1;
		c->req.keep_special = 1;
		int rc = j->tool_prefix ? lmd_tool_stream_feed(&c->ts, j->tool_prefix, strlen(j->tool_prefix), &none) : 0;
		free(none.p);
		if (rc)
			return -1;
	}
	pthread_mutex_lock(&srv.mu);
	if (srv.script.next < srv.script.n) {
		int k = srv.script.next++;
		c->req.script = srv.script.ids[k];
		c->req.nscript = srv.script.nids[k];
		c->req.script_delay_us = srv.script.delay_ms[k] * 1000;
	}
	pthread_mutex_unlock(&srv.mu);
	return 0;
}

/* Text of a choice with tools -> its content (replacing *text and *n) and the stream deltas
 * (delta.tool_calls lists) of its calls so far; NULL when none. done: the answer ends with this. */
static json_t *tool_piece(struct choice *c, char **text, size_t *n, int done)
{
	struct lmd_sb content = {0};
	const char *t = *text ? *text : "";
	if (!(done ? lmd_tool_stream_finish(&c->ts, t, *n, &content) : lmd_tool_stream_feed(&c->ts, t, *n, &content))) {
		free(*text);
		*text = content.p;
		*n = content.n;
	} else {
		free(content.p);
	}
	return lmd_tool_stream_deltas(&c->ts);
}

/* The whole answer of a finished non-streamed job. */
static enum MHD_Result answer(struct MHD_Connection *c, struct job *j)
{
	if (j->failed[0])
		return fail(c, j->fail_status, NULL, NULL, "%s", j->failed);
	struct lmd_api_choice *cs = calloc(j->nch, sizeof(*cs));
	char **texts = calloc(j->nch, sizeof(*texts));
	json_t **calls = calloc(j->nch, sizeof(*calls));
	if (!cs || !texts || !calls) {
		free(cs);
		free(texts);
		free(calls);
		return MHD_NO;
	}
	for (int i = 0; i < j->nch; i++) {
		const struct lmd_request *r = &j->ch[i].req;
		const char *e = j->echo ? j->echo[j->ch[i].prompt] : NULL;
		cs[i] = (struct lmd_api_choice){.index = i, .text = r->text ? r->text : "", .len = r->text ? r->len : 0,
						.finish = finish_text(r->finish), .lp = r->lp, .nlp = r->nlp};
		if (e && asprintf(&texts[i], "%s%s", e, cs[i].text) >= 0) {
			cs[i].text = texts[i];
			cs[i].len += strlen(e);
		}
		if (j->ch[i].tools && (texts[i] = strndup(cs[i].text, cs[i].len))) {
			json_decref(tool_piece(&j->ch[i], &texts[i], &cs[i].len, 1));
			cs[i].text = texts[i] ? texts[i] : "";
			if (j->ch[i].ts.n_calls) {
				cs[i].tool_calls = calls[i] = lmd_tool_calls_json(j->ch[i].ts.calls, j->ch[i].ts.n_calls);
				cs[i].finish = "tool_calls";
			}
		}
	}
	struct lmd_api_usage u = usage_of(j);
	char *json = lmd_api_response(&j->meta, cs, j->nch, &u);
	for (int i = 0; i < j->nch; i++) {
		free(texts[i]);
		json_decref(calls[i]);
	}
	free(calls);
	free(texts);
	free(cs);
	return send_json(c, 200, json);
}

// --- streams

struct stream {
	struct job *j;
	struct MHD_Connection *c;
	char *buf;                   /* owned: SSE bytes ready to go */
	size_t len, pos, cap;
	int finals, ended;
};

static int put_bytes(struct stream *s, const char *p, size_t n)
{
	if (reserve(&s->buf, &s->cap, s->len + n, 1))
		return -1;
	memcpy(s->buf + s->len, p, n);
	s->len += n;
	return 0;
}

static int put_event(struct stream *s, char *json)
{
	int rc = !json || put_bytes(s, "data: ", 6) || put_bytes(s, json, strlen(json)) || put_bytes(s, "\n\n", 2);
	free(json);
	return rc ? -1 : 0;
}

/* A choice's tool calls as chunks (each call: its name, then its arguments), then its finish. */
static void tool_chunks(struct stream *s, struct choice *c, json_t *calls, int done, int failed)
{
	size_t k;
	json_t *d;
	json_array_foreach(calls, k, d) {
		struct lmd_api_choice ch = {.index = c->index, .tool_calls = d};
		put_event(s, lmd_api_chunk(&s->j->meta, &ch, !c->opened, s->j->api.include_usage));
		c->opened = 1;
	}
	if (done && !failed) {
		struct lmd_api_choice ch = {.index = c->index, .finish = c->ts.n_calls ? "tool_calls"
										     : finish_text(c->req.finish)};
		put_event(s, lmd_api_chunk(&s->j->meta, &ch, !c->opened, s->j->api.include_usage));
	}
	if (done)
		c->opened = 2;
}

/* Move what the engine produced into SSE events; returns 1 when something was added. */
static int stream_fill(struct stream *s)
{
	struct job *j = s->j;
	int added = 0, all_done = 1, failed;
	for (int i = 0; i < j->nch; i++) {
		struct choice *c = &j->ch[i];
		pthread_mutex_lock(&srv.mu);
		failed = j->failed[0] != 0;
		char *text = c->out;
		size_t n = c->nout;
		struct lmd_logprob *lp = c->lp;
		int nlp = c->nlp, done = c->done;
		c->out = NULL, c->nout = c->capout = 0;
		c->lp = NULL, c->nlp = 0, c->lpcap = 0;
		pthread_mutex_unlock(&srv.mu);
		const char *e = j->echo && !c->opened ? j->echo[c->prompt] : NULL;
		int opens = !c->opened && (j->meta.kind == LMD_API_CHAT || e);  /* chat's role chunk, the echo */
		json_t *calls = c->tools && c->opened != 2 ? tool_piece(c, &text, &n, done) : NULL;
		int later = c->tools && done;  /* with tools, the finish goes after the calls */
		if (n || nlp || opens || (done && c->opened != 2 && !later)) {
			char *joined = NULL;
			struct lmd_api_choice ch = {.index = i, .text = text, .len = n, .lp = lp, .nlp = nlp, .offset = c->sent};
			if (e && asprintf(&joined, "%s%.*s", e, (int)n, text ? text : "") >= 0)
				ch.text = joined, ch.len = strlen(joined);
			if (done && !failed && !later)
				ch.finish = finish_text(c->req.finish);
			if (!failed || n)
				put_event(s, lmd_api_chunk(&j->meta, &ch, !c->opened, j->api.include_usage));
			c->sent += ch.len;
			c->opened = done && !later ? 2 : 1;
			free(joined);
			added = 1;
		}
		if (calls || (later && c->opened != 2)) {
			tool_chunks(s, c, calls, done, failed);
			added = 1;
		}
		json_decref(calls);
		free(text);
		free(lp);
		all_done &= done;
	}
	pthread_mutex_lock(&srv.mu);
	failed = j->failed[0] != 0;
	pthread_mutex_unlock(&srv.mu);
	if (all_done && !s->finals) {
		s->finals = 1;
		if (failed) {  /* a failure in the middle of a stream: an error event, then [DONE] */
			struct lmd_api_error e = {.status = 500};
			snprintf(e.message, sizeof(e.message), "%s", j->failed);
			put_event(s, lmd_api_error_json(&e));
		} else if (j->api.include_usage) {
			struct lmd_api_usage u = usage_of(j);
			put_event(s, lmd_api_usage_chunk(&j->meta, &u));
		}
		put_bytes(s, "data: [DONE]\n\n", 14);
		added = 1;
	}
	return added;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct stream *s = cls;
	(void)pos;
	for (;;) {
		if (s->pos < s->len) {
			size_t n = s->len - s->pos < max ? s->len - s->pos : max;
			memcpy(buf, s->buf + s->pos, n);
			s->pos += n;
			if (s->pos == s->len)
				s->pos = s->len = 0;
			return (ssize_t)n;
		}
		if (s->finals)
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (stream_fill(s))
			continue;
		int ev = wait_event(s->j, s->c, PING_MS);
		if (ev < 0) {
			abandon(s->j, s->c);
			return MHD_CONTENT_READER_END_WITH_ERROR;
		}
		if (!ev && put_bytes(s, ": ping\n\n", 8))
			return MHD_CONTENT_READER_END_WITH_ERROR;
	}
}

static void stream_free(void *cls)
{
	struct stream *s = cls;
	if (!job_done(s->j))  /* the connection ended early (hang-up, stalled reader, shutdown) */
		abandon(s->j, s->c);
	retire(s->j);
	free(s->buf);
	free(s);
}

// --- requests

static int client_fd(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	return ci ? ci->connect_fd : -1;
}

/* Tokenize the prompts and size the answers; 0 or -1 with e filled. */
static int prepare(struct job *j, struct lmd_api_error *e)
{
	struct lmd_api_request *q = &j->api;
	struct lmd_err err = {0};
	int np = q->kind == LMD_API_CHAT ? 1 : q->nprompt, session = srv.r.m.session_len;
	j->tool_prefix = q->kind == LMD_API_CHAT ? lmd_api_tool_prefix(q, &srv.r.tmpl) : NULL;
	if (q->kind == LMD_API_CHAT)
		q->nprompt = 1;
	j->ids = calloc(np, sizeof(*j->ids));
	j->nids = calloc(np, sizeof(*j->nids));
	if (q->echo)
		j->echo = calloc(np, sizeof(*j->echo));
	if (!j->ids || !j->nids || (q->echo && !j->echo))
		return lmd_api_errorf(e, 500, NULL, NULL, "out of memory");
	for (int i = 0; i < np; i++) {
		const struct lmd_api_prompt *p = q->kind == LMD_API_COMPLETION ? &q->prompts[i] : NULL;
		int rc = LMD_OK;
		char param[32];
		snprintf(param, sizeof(param), np > 1 ? "prompt[%d]" : p ? "prompt" : "messages", i);
		if (!p) {
			rc = lmd_runner_prompt_tools(&srv.r, q->msgs, q->nmsg, q->tools_json, j->tool_prefix, &j->ids[i],
						     &j->nids[i], &err);
		} else if (p->text) {
			int *ids = NULL;
			size_t n = 0;
			rc = lmd_tokenizer_encode(&srv.r.tok, p->text, p->len, 1, &ids, &n, &err);
			j->ids[i] = ids;
			j->nids[i] = (int)n;
		} else {
			if (!(j->ids[i] = malloc(p->nids * sizeof(int32_t))))
				return lmd_api_errorf(e, 500, NULL, NULL, "out of memory");
			memcpy(j->ids[i], p->ids, p->nids * sizeof(int32_t));
			j->nids[i] = p->nids;
			for (int k = 0; k < p->nids; k++)
				if (p->ids[k] >= srv.r.m.cfg.vocab)
					return lmd_api_errorf(e, 400, param, NULL, "token id %d in '%s' is outside the vocabulary (%d)",
							      p->ids[k], param, srv.r.m.cfg.vocab);
		}
		if (rc)
			return lmd_api_errorf(e, rc == LMD_ENOMEM ? 500 : 400, param, NULL, "%s", err.msg);
		if (!j->nids[i])
			return lmd_api_errorf(e, 400, param, NULL, "'%s' is empty", param);
		if (j->echo) {
			if (p && p->text) {
				j->echo[i] = strndup(p->text, p->len);
			} else {
				size_t len;
				if (lmd_tokenizer_decode(&srv.r.tok, j->ids[i], j->nids[i], 0, &j->echo[i], &len, &err))
					return lmd_api_errorf(e, 400, param, NULL, "%s", err.msg);
			}
			if (!j->echo[i])
				return lmd_api_errorf(e, 500, NULL, NULL, "out of memory");
		}
		/* prompt + max_tokens within the session: named, never a silent empty answer */
		int room = session - j->nids[i];
		if (q->max_tokens && q->max_tokens > room)
			return lmd_api_errorf(e, 400, "max_tokens", "context_length_exceeded",
					      "the prompt is %d tokens and max_tokens %d: %d in all, more than the session length "
					      "%d (--session-len)", j->nids[i], q->max_tokens, j->nids[i] + q->max_tokens, session);
		if (room < 1)
			return lmd_api_errorf(e, 400, param, "context_length_exceeded",
					      "the prompt is %d tokens, which leaves no room to generate in the session length %d "
					      "(--session-len)", j->nids[i], session);
	}
	j->nch = np * q->n;
	if (!(j->ch = calloc(j->nch, sizeof(*j->ch))))
		return lmd_api_errorf(e, 500, NULL, NULL, "out of memory");
	uint64_t seed = q->seed_given ? q->p.sampling.seed : random_seed();
	for (int i = 0; i < j->nch; i++) {
		struct choice *c = &j->ch[i];
		struct lmd_request *r = &c->req;
		c->job = j;
		c->index = i;
		c->prompt = i / q->n;
		lmd_gen_params_apply(&q->p, r);
		int room = session - j->nids[c->prompt];
		int dflt = srv.default_max_tokens ? srv.default_max_tokens : q->kind == LMD_API_COMPLETION ? 16 : room;
		r->max_tokens = q->max_tokens ? q->max_tokens : dflt < room ? dflt : room;
		r->sampling.seed = seed + (uint64_t)i;  /* n choices: different, and the same again with the seed */
		r->keep_special = q->keep_special;
		r->continues = q->kind == LMD_API_COMPLETION;
		r->logprobs = q->logprobs;
		r->top_logprobs = q->top_logprobs;
		r->token_gaps = 1;
		r->on_text = q->stream ? on_text : NULL;
		r->on_done = on_done;
		r->ctx = c;
		if (tools_setup(j, c))
			return lmd_api_errorf(e, 500, NULL, NULL, "out of memory");
	}
	return 0;
}

static enum MHD_Result generate(struct MHD_Connection *c, struct conn_req *cr, enum lmd_api_kind kind)
{
	struct lmd_api_error e = {0};
	struct job *j = calloc(1, sizeof(*j));
	if (!j)
		return MHD_NO;
	j->efd = -1;
	if (lmd_api_decode(&j->api, kind, cr->body ? cr->body : "", cr->len, &srv.defaults, &e))
		goto refuse;
	if (j->api.model && strcmp(j->api.model, srv.model_name)) {
		lmd_api_errorf(&e, 404, "model", "model_not_found", "the model '%s' does not exist; this server has '%s'",
			       j->api.model, srv.model_name);
		goto refuse;
	}
	if (prepare(j, &e))
		goto refuse;
	if ((j->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
		lmd_api_errorf(&e, 503, NULL, NULL, "cannot take more connections now: %s", strerror(errno));
		goto refuse;
	}
	j->sock = client_fd(c);
	pthread_mutex_lock(&srv.mu);
	if (srv.stop || srv.draining || srv.inflight >= srv.max_inflight) {
		int full = !srv.stop && !srv.draining;
		pthread_mutex_unlock(&srv.mu);
		if (full)
			lmd_api_errorf(&e, 429, NULL, "queue_full", "%d requests are in flight (--max-concurrent-requests): "
				       "retry later", srv.max_inflight);
		else
			lmd_api_errorf(&e, 503, NULL, NULL, "the server is shutting down");
		goto refuse;
	}
	snprintf(j->id, sizeof(j->id), "%s-%llx%06llx", kind == LMD_API_CHAT ? "chatcmpl" : "cmpl",
		 (unsigned long long)srv.started, (unsigned long long)++srv.next_id);
	j->meta = (struct lmd_api_meta){.kind = kind, .id = j->id, .created = (long)time(NULL), .model = srv.model_name,
					.tok = &srv.r.tok, .logprobs = j->api.logprobs};
	srv.inflight++;
	j->next = srv.inbox;
	srv.inbox = j;
	pthread_cond_signal(&srv.wake);
	pthread_mutex_unlock(&srv.mu);
	if (j->api.stream) {
		struct stream *s = calloc(1, sizeof(*s));
		struct MHD_Response *res = s ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, s,
										 stream_free) : NULL;
		if (!res) {
			free(s);
			abandon(j, c);
			retire(j);
			return MHD_NO;
		}
		s->j = j;
		s->c = c;
		MHD_add_response_header(res, "Content-Type", "text/event-stream");
		MHD_add_response_header(res, "Cache-Control", "no-cache");
		enum MHD_Result rc = MHD_queue_response(c, 200, res);
		MHD_destroy_response(res);
		return rc;
	}
	cr->job = j;  /* retired when the request ends, whatever happens */
	while (!job_done(j))
		if (wait_event(j, c, 1000) < 0) {
			abandon(j, c);
			return MHD_NO;
		}
	return answer(c, j);
refuse:
	free_job(j);
	return send_error(c, &e);
}

static enum MHD_Result encode(struct MHD_Connection *c, struct conn_req *cr)
{
	struct lmd_api_encode q;
	struct lmd_api_error e = {0};
	struct lmd_err err = {0};
	if (lmd_api_decode_encode(&q, cr->body ? cr->body : "", cr->len, &e)) {
		lmd_api_encode_free(&q);
		return send_error(c, &e);
	}
	int32_t **ids = calloc(q.n ? q.n : 1, sizeof(*ids));
	int *n = calloc(q.n ? q.n : 1, sizeof(*n)), rc = ids && n ? LMD_OK : LMD_ENOMEM;
	for (int i = 0; !rc && i < q.n; i++) {
		if (q.do_preprocess) {
			struct lmd_chat_msg m = {.role = "user", .content = q.input[i]};
			rc = lmd_runner_prompt(&srv.r, NULL, &m, 1, &ids[i], &n[i], &err);
		} else {
			int *t = NULL;
			size_t k = 0;
			rc = lmd_tokenizer_encode(&srv.r.tok, q.input[i], strlen(q.input[i]), q.add_bos, &t, &k, &err);
			ids[i] = t;
			n[i] = (int)k;
		}
	}
	enum MHD_Result res = rc ? fail(c, rc == LMD_ENOMEM ? 500 : 400, "input", NULL, "%s", err.msg)
				 : send_json(c, 200, lmd_api_encoded(ids, n, q.n, q.is_list));
	for (int i = 0; ids && i < q.n; i++)
		free(ids[i]);
	free(ids);
	free(n);
	lmd_api_encode_free(&q);
	return res;
}

/* GET / and /web/NAME: the files of share/web (the chat page comes there). */
static enum MHD_Result static_file(struct MHD_Connection *c, const char *url)
{
	const char *name = !strcmp(url, "/") ? "index.html" : url + 5;
	static const struct { const char *ext, *type; } types[] = {
		{".html", "text/html; charset=utf-8"}, {".js", "text/javascript"}, {".css", "text/css"},
		{".svg", "image/svg+xml"}, {".png", "image/png"}, {".json", "application/json"},
	};
	const char *type = "application/octet-stream";
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		size_t ln = strlen(name), le = strlen(types[i].ext);
		if (ln > le && !strcmp(name + ln - le, types[i].ext))
			type = types[i].type;
	}
	if (!*name || strstr(name, "..") || strchr(name, '\\'))
		return fail(c, 404, NULL, NULL, "no such file '%s'", url);
	char rel[512], *path, *buf = NULL;
	size_t len = 0;
	struct lmd_err err = {0};
	snprintf(rel, sizeof(rel), "web/%s", name);
	if (!(path = lmd_share_path(rel, &err)) || lmd_read_file(path, &buf, &len, &err)) {
		free(path);
		return fail(c, 404, NULL, NULL, "no such file '%s'", url);
	}
	enum MHD_Result rc = send_text(c, 200, type, buf, len, 0);
	free(buf);
	free(path);
	return rc;
}

enum route_kind { R_CHAT, R_COMPLETION, R_MODELS, R_HEALTH, R_METRICS, R_ENCODE, R_STATIC };

static const struct route {
	const char *path;
	const char *method;
	enum route_kind kind;
	int public;                  /* answered without a key */
} routes[] = {
	{"/v1/chat/completions", "POST", R_CHAT, 0},
	{"/v1/completions", "POST", R_COMPLETION, 0},
	{"/v1/models", "GET", R_MODELS, 0},
	{"/v1/encode", "POST", R_ENCODE, 0},
	{"/health", "GET", R_HEALTH, 1},
	{"/metrics", "GET", R_METRICS, 1},
	{"/", "GET", R_STATIC, 1},
};

static const struct route *find_route(const char *url)
{
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (!strcmp(url, routes[i].path))
			return &routes[i];
	if (!strncmp(url, "/web/", 5))
		return &routes[sizeof(routes) / sizeof(routes[0]) - 1];
	return NULL;
}

static enum MHD_Result handle(struct MHD_Connection *c, struct conn_req *cr, const struct route *rt, const char *url)
{
	pthread_mutex_lock(&srv.mu);
	int ready = srv.ready, draining = srv.draining || srv.stop;
	char *metrics = rt->kind == R_METRICS && ready ? lmd_serve_metrics_text(&srv.stats, srv.model_name) : NULL;
	pthread_mutex_unlock(&srv.mu);
	if (rt->kind == R_HEALTH)
		return ready && !draining ? send_text(c, 200, "application/json", "{\"status\":\"ok\"}", 15, 0)
					  : fail(c, 503, NULL, NULL, "%s", draining ? "shutting down" : "loading the model");
	if (rt->kind == R_STATIC)
		return static_file(c, url);
	if (!ready)
		return fail(c, 503, NULL, NULL, "loading the model");
	switch (rt->kind) {
	case R_METRICS:
		if (!metrics)
			return MHD_NO;
		enum MHD_Result rc = send_text(c, 200, "text/plain; version=0.0.4; charset=utf-8", metrics, strlen(metrics), 0);
		free(metrics);
		return rc;
	case R_MODELS: return send_json(c, 200, lmd_api_models(srv.model_name, srv.started));
	case R_ENCODE: return encode(c, cr);
	case R_CHAT: return generate(c, cr, LMD_API_CHAT);
	case R_COMPLETION: return generate(c, cr, LMD_API_COMPLETION);
	default: return fail(c, 404, NULL, NULL, "no route for '%s'", url);
	}
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	(void)cls, (void)version;
	struct conn_req *cr = *con_cls;
	if (!cr) {  /* the headers: refuse early what can be refused */
		if (!(cr = calloc(1, sizeof(*cr))))
			return MHD_NO;
		*con_cls = cr;
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		cr->too_big = cl && strtoull(cl, NULL, 10) > MAX_BODY;
		return MHD_YES;
	}
	if (*upload_size) {
		if (!cr->too_big && cr->len + *upload_size <= MAX_BODY) {
			if (reserve(&cr->body, &cr->cap, cr->len + *upload_size + 1, 1))
				return MHD_NO;
			memcpy(cr->body + cr->len, upload, *upload_size);
			cr->len += *upload_size;
		} else {
			cr->too_big = 1;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (cr->too_big)
		return fail(c, 413, NULL, "request_too_large", "the request body is larger than %u bytes", MAX_BODY);
	const struct route *rt = find_route(url);
	if (!rt)
		return fail(c, 404, NULL, NULL, "no route for '%s'", url);
	if (strcmp(method, rt->method) && !(rt->kind == R_STATIC && !strcmp(method, "HEAD")))
		return fail(c, 405, NULL, NULL, "'%s' takes %s, not %s", url, rt->method, method);
	if (srv.nkeys && !rt->public &&
	    !lmd_api_key_ok(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION), srv.keys,
			    srv.nkeys))
		return fail(c, 401, NULL, "invalid_api_key", "a missing or wrong API key (Authorization: Bearer KEY)");
	return handle(c, cr, rt, url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	(void)cls, (void)c, (void)toe;
	struct conn_req *cr = *con_cls;
	if (!cr)
		return;
	if (cr->job) {
		if (!job_done(cr->job))
			abandon(cr->job, c);
		retire(cr->job);
	}
	free(cr->body);
	free(cr);
	*con_cls = NULL;
}

/* A small send buffer, so that a client who stops reading blocks its sends (and times out) soon. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	(void)cls, (void)socket_context;
	int fd = client_fd(c), size = SEND_BUFFER;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED && fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	if (srv.verbose < 1)
		return;
	char line[512];
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = 0;
	logf_(1, "libmicrohttpd: %s", line);
}

// ----------------------------------------------------------------------------
// main

/* generation_config.json's sampling defaults (as LMDeploy and vLLM), over lmd's. */
static void model_defaults(const struct lmd_cli *cli, const char *model)
{
	struct lmd_err err = {0};
	struct lmd_hfgen g = {.temperature = 1, .top_p = 1, .min_p = 0, .repetition_penalty = 1, .top_k = 0};
	lmd_gen_params_default(&srv.defaults);
	if (lmd_hfgen_load(&g, model, &err))
		lmd_die(cli->prog, &err);
	srv.defaults.sampling.temperature = (float)g.temperature;
	srv.defaults.sampling.top_p = (float)g.top_p;
	srv.defaults.sampling.min_p = (float)g.min_p;
	srv.defaults.sampling.repetition_penalty = (float)g.repetition_penalty;
	srv.defaults.sampling.top_k = g.top_k > 0 ? g.top_k : 0;
	srv.default_max_tokens = g.max_new_tokens > 0 ? g.max_new_tokens : 0;
	if (lmd_sampling_validate(&srv.defaults.sampling, &err)) {
		lmd_err_prefix(&err, "%s/generation_config.json", model);
		lmd_die(cli->prog, &err);
	}
}

/* LMDeploy's --api-keys K1 K2 ...: the keys that follow the flag are taken out of argv. */
static void take_keys(const struct lmd_cli *cli, int *argc, char **argv)
{
	int out = 1;
	for (int i = 1; i < *argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--api-keys") || !strncmp(a, "--api-keys=", 11)) {
			if (a[10] == '=') {
				if (!a[11])
					lmd_usage(cli, "--api-keys: give at least one key");
				srv.keys[srv.nkeys++] = a + 11;
				continue;
			}
			if (i + 1 >= *argc || argv[i + 1][0] == '-')
				lmd_usage(cli, "--api-keys: give at least one key");
			while (i + 1 < *argc && argv[i + 1][0] != '-')
				srv.keys[srv.nkeys++] = argv[++i];
			continue;
		}
		if (!strcmp(a, "--"))
			while (i < *argc)
				argv[out++] = argv[i++];
		else
			argv[out++] = argv[i];
	}
	*argc = out;
	argv[out] = NULL;
}

static int log_level(const struct lmd_cli *cli, const char *s)
{
	static const struct { const char *name; int v; } levels[] = {
		{"CRITICAL", -1}, {"ERROR", -1}, {"WARNING", 0}, {"INFO", 1}, {"DEBUG", 2},
	};
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (!strcasecmp(s, levels[i].name))
			return levels[i].v;
	lmd_usage(cli, "--log-level: '%s' is not ERROR, WARNING, INFO or DEBUG", s);
}

int lmd_run_serve(int argc, char **argv)
{
	struct lmd_cli cli = {
		.prog = "lmd-run serve",
		.synopsis = "MODEL [OPTIONS]",
		.purpose = "Serve a model over HTTP with the OpenAI API (chat and completions, streamed or not).",
		.example = "lmd-run serve share/models/lmd-tiny --server-port 8000",
		.opts = opts,
	};
	const char *arg, *host = "127.0.0.1", *level = NULL;
	int k, port = 23333;
	g_cli = &cli;
	srv.ro.dtype = LMD_DTYPE_NONE;
	srv.ro.prefix_caching = 1;  /* on unless --no-enable-prefix-caching */
	srv.max_inflight = 1024;
	srv.timeout = 60;
	srv.tool_parser = -1;
	if (!(srv.keys = calloc(argc + 1, sizeof(*srv.keys))))
		return LMD_EXIT_FAIL;
	take_keys(&cli, &argc, argv);
	while ((k = lmd_cli_next(&cli, argc, argv, &arg)) != -1) {
		if (lmd_runner_opt(&srv.ro, &cli, k, arg))
			continue;
		switch (k) {
		case O_SERVER_NAME: host = arg; break;
		case O_SERVER_PORT: port = (int)lmd_cli_long(&cli, "server-port", arg, 0, 65535); break;
		case O_MODEL_NAME: srv.model_name = arg; break;
		case O_MAX_CONCURRENT:
			srv.max_inflight = (int)lmd_cli_long(&cli, "max-concurrent-requests", arg, 1, 1 << 16);
			break;
		case O_LOG_LEVEL: level = arg; break;
		case O_TIMEOUT: srv.timeout = (unsigned)lmd_cli_long(&cli, "timeout", arg, 1, 86400); break;
		case O_TOOL_PARSER:
			if ((srv.tool_parser = lmd_tool_parser_named(arg)) <= 0)
				lmd_usage(&cli, "--tool-call-parser: expected internlm, qwen or llama3");
			break;
		}
	}
	if (argc - optind != 1)
		lmd_usage(&cli, "expected one MODEL directory");
	srv.ro.model = argv[optind];
	if ((srv.script_path = getenv("LMD_TEST_SCRIPT")) && !getenv("LMD_TEST")) {
		fprintf(stderr, "%s: LMD_TEST_SCRIPT is a test hook (t/README): it needs LMD_TEST=1\n", cli.prog);
		return LMD_EXIT_USAGE;
	}
	srv.model_name = srv.model_name ? srv.model_name : srv.ro.model;
	srv.verbose = level ? log_level(&cli, level) + (cli.verbose > 0 ? cli.verbose : 0) : cli.verbose;
	srv.ro.verbose = srv.verbose > 0;
	srv.started = (long)time(NULL);
	lmd_serve_stats_init(&srv.stats);
	model_defaults(&cli, srv.ro.model);

	/* the signals are the main thread's (sigwait): every thread started from here on blocks them */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
	char ports[16];
	snprintf(ports, sizeof(ports), "%d", port);
	int gai = getaddrinfo(host, ports, &hints, &ai);
	if (gai) {
		fprintf(stderr, "%s: --server-name '%s': %s\n", cli.prog, host, gai_strerror(gai));
		return LMD_EXIT_USAGE;
	}
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_POLL |
			 MHD_USE_ERROR_LOG | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
	struct MHD_Daemon *d = MHD_start_daemon(
		flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR,
		ai->ai_addr, MHD_OPTION_CONNECTION_TIMEOUT, srv.timeout, MHD_OPTION_CONNECTION_LIMIT,
		(unsigned)(srv.max_inflight + 64), MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL, MHD_OPTION_THREAD_STACK_SIZE,
		(size_t)(512 << 10), MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
	freeaddrinfo(ai);
	if (!d) {
		fprintf(stderr, "%s: cannot listen on %s port %d: %s\n", cli.prog, host, port,
			errno ? strerror(errno) : "libmicrohttpd refused");
		return LMD_EXIT_FAIL;
	}
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	logf_(0, "listening on http://%s%s%s:%u (model '%s')", strchr(host, ':') ? "[" : "", host,
	      strchr(host, ':') ? "]" : "", di ? di->port : (unsigned)port, srv.model_name);
	if (pthread_create(&srv.engine, NULL, engine_main, NULL)) {
		fprintf(stderr, "%s: cannot start the engine thread\n", cli.prog);
		MHD_stop_daemon(d);
		return LMD_EXIT_FAIL;
	}

	int sig = 0, status = 0;
	sigwait(&sigs, &sig);
	pthread_mutex_lock(&srv.mu);
	if (srv.load_err.code) {  /* SIGUSR1: the model did not load */
		struct lmd_err e = srv.load_err;
		pthread_mutex_unlock(&srv.mu);
		MHD_stop_daemon(d);
		pthread_join(srv.engine, NULL);
		lmd_die(cli.prog, &e);
	}
	srv.draining = 1;
	pthread_mutex_unlock(&srv.mu);
	logf_(0, "%s: draining (no new requests; %d s for those in flight)", strsignal(sig), DRAIN_SECONDS);
	MHD_socket ls = MHD_quiesce_daemon(d);
	if (ls != MHD_INVALID_SOCKET)
		close(ls);
	for (int i = 0; i < DRAIN_SECONDS * 10; i++) {
		pthread_mutex_lock(&srv.mu);
		int left = srv.inflight;
		pthread_mutex_unlock(&srv.mu);
		if (!left)
			break;
		usleep(100000);
	}
	pthread_mutex_lock(&srv.mu);
	if (srv.inflight)
		logf_(-1, "%d requests still in flight after %d s: cancelled", srv.inflight, DRAIN_SECONDS);
	srv.stop = 1;
	pthread_cond_signal(&srv.wake);
	pthread_mutex_unlock(&srv.mu);
	pthread_join(srv.engine, NULL);
	MHD_stop_daemon(d);
	logf_(1, "%ld steps, %ld preemptions", srv.r.s.steps, srv.r.s.preemptions);
	lmd_runner_close(&srv.r);
	free(srv.keys);
	return status;
}
