/**
 * The scheduler: continuous batching over one model, independent of the backend.
 *
 * Requests are submitted at any time and advance together: each step runs, in one forward, one
 * decode token of every running sequence and chunks of the prompts being prefilled (at most
 * max_prefill tokens of prefill per step). Requests join between steps while there is room
 * (max_batch sequences); when the KV pool runs short, the most recently admitted sequence is
 * preempted: its blocks are released and its tokens recomputed when it runs again, so a full pool
 * delays requests but never fails them (a single request larger than the whole pool fails with an
 * error naming the sizes).
 *
 * A session holds a token history and its KV blocks across requests (multi-turn chat): a request
 * on a session continues from the cached tokens, so only its new tokens are prefilled. With the
 * model's prefix cache on (kvcache.h), each step registers the full blocks it filled, and a request
 * whose cached tokens end at a block boundary (a new one, one preempted, one between prefill chunks)
 * attaches the cached blocks that continue its tokens, when admitted and at each step: a request
 * resending a chat's history prefills only what no earlier request computed, and requests sharing a
 * system prompt admitted together compute it once or a few times. Prefill then starts at a block
 * boundary, as a session's does at its cached length.
 * Outputs are the same whatever else runs beside a request: each request samples with its own RNG,
 * and a prompt is prefilled in chunks of a fixed size cut from its start (the last one shorter), a
 * chunk that does not fit a step waiting for the next, so that the work a request's tokens see
 * depends on the request alone (with a batch-invariant backend, the same bits alone and in a batch).
 */
#ifndef LMD_SCHEDULER_H
#define LMD_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "kvcache.h"
#include "model.h"
#include "sampler.h"
#include "threads.h"
#include "tok/tokenizer.h"

enum lmd_finish { LMD_FINISH_NONE, LMD_FINISH_STOP, LMD_FINISH_LENGTH, LMD_FINISH_ERROR, LMD_FINISH_CANCEL };

/** "stop", "length", "error", "cancelled" ("" while running). */
const char *lmd_finish_name(enum lmd_finish f);

/** A token history with its KV blocks. A zeroed struct is an empty session; the caller owns it. */
struct lmd_session {
	int32_t *toks;          /* owned [cap]: every token so far (prompts and generated) */
	int n, cap;
	struct lmd_kvseq kv;    /* the cached K/V of toks[0 .. kv.len) */
	int busy;               /* a request is running on it */
};
/** Keep only the first len tokens (KV included). */
void lmd_session_truncate(struct lmd_session *s, struct lmd_model *m, int len);
/** Release the KV blocks and the history. */
void lmd_session_free(struct lmd_session *s, struct lmd_model *m);

/** A generated token's log-probability and its most likely alternatives (the model's own distribution). */
#define LMD_MAX_TOP_LOGPROBS 20
struct lmd_logprob {
	int32_t id;
	float logprob;                          /* log softmax of the row of logits, before any sampling setting */
	int ntop;                               /* the request's top_logprobs (fewer when the vocabulary is smaller) */
	int32_t top_id[LMD_MAX_TOP_LOGPROBS];   /* the most likely tokens, best first (lowest id first on ties) */
	float top[LMD_MAX_TOP_LOGPROBS];        /* their log-probabilities */
};

struct lmd_request;
/** Streaming callback: text that is final (never a broken UTF-8 sequence, never part of a stop string). */
typedef void (*lmd_text_fn)(struct lmd_request *r, const char *text, size_t len, void *ctx);
/** Called once when the request finishes. */
typedef void (*lmd_done_fn)(struct lmd_request *r, void *ctx);

struct lmd_request {
	/* set by the caller before lmd_sched_submit */
	const int32_t *prompt;       /* borrowed until submit returns: tokens appended to the session */
	int nprompt;
	struct lmd_session *session; /* borrowed, may be NULL: the request then uses its own */
	struct lmd_sampling sampling;
	int max_tokens;              /* > 0 */
	int ignore_eos;              /* do not stop at the model's stop tokens */
	const int32_t *stop_ids;     /* borrowed: more stop tokens */
	int n_stop_ids;
	const char *const *stop;     /* borrowed: stop strings (matched across token boundaries) */
	int n_stop;
	int keep_special;            /* special tokens stay in the text (else left out, as a chat shows it) */
	int continues;               /* the text continues the prompt's (a completion): its first space is kept */
	int logprobs;                /* record each generated token's log-probability in lp */
	int top_logprobs;            /* with logprobs: alternatives per token, 0 .. LMD_MAX_TOP_LOGPROBS */
	int token_gaps;              /* record the time between consecutive tokens in gaps */
	const int32_t *script;       /* tests only (LMD_TEST_SCRIPT, t/README), borrowed: tokens produced instead of */
	int nscript;                 /* the model's choice, then a stop token; script_delay_us before each */
	int script_delay_us;
	lmd_text_fn on_text;         /* may be NULL */
	lmd_done_fn on_done;         /* may be NULL */
	void *ctx;

	/* results */
	char *text;                  /* owned: the generated text (stop string excluded), NUL-terminated */
	size_t len;
	int ntokens;                 /* tokens generated */
	int nprompt_total;           /* tokens before generation began (session history + prompt) */
	int nprefill;                /* tokens this request prefilled (history that was cached is not counted) */
	struct lmd_logprob *lp;      /* owned [nlp]: with logprobs, one per generated token (stop tokens left out) */
	int nlp;
	int ncached;                 /* prompt tokens taken from the prefix cache (since its last admission before its first token) */
	enum lmd_finish finish;
	char error[256];
	double t_submit, t_first, t_end;  /* seconds (monotonic clock) */
	float *gaps;                 /* owned [ntokens - 1] with token_gaps: seconds from each token to the next */

	/* the scheduler's */
	struct lmd_session own;
	struct lmd_rng rng;
	struct lmd_tokdec dec;
	size_t emitted, cap;
	int prefill_start;
	int lpcap, gapcap;
	double t_last;               /* when the last token came */
	float *pen_row;              /* owned [vocab]: the row with the presence and frequency penalties */
};

/** Free what a finished request owns (text, log-probabilities, its own session). */
void lmd_request_free(struct lmd_request *r, struct lmd_model *m);

struct lmd_sched_opts {
	int max_batch;     /* sequences running at once; 0 = the model's max_seqs */
	int max_prefill;   /* prefill tokens per step (--max-prefill-token-num); 0 = the model's max_tokens */
	int threads;       /* host threads sampling a step's rows, the caller included; 0 = min(8, online cores), 1 = the caller alone */
};

struct lmd_scheduler {
	struct lmd_model *m;                 /* borrowed */
	const struct lmd_tokenizer *tok;     /* borrowed */
	int max_batch, max_prefill;
	int chunk;                           /* prefill chunk: max_prefill, at most max_tokens - max_batch */
	struct lmd_request **wait, **run;    /* owned arrays of borrowed requests */
	int nwait, nrun, wcap;
	struct lmd_batch b;
	int *take;                           /* owned [cap]: tokens each running request computes this step */
	float *spread;                       /* owned [max_batch]: lmd_sample_spread of each row of a step */
	int32_t *top_k;                      /* owned [max_batch]: each row's top_k (pick's cut) */
	struct lmd_pick *picks;              /* owned [max_batch]: what the step's forward gave for sampling */
	int threads;                         /* sampling threads, the caller included (at most max_batch) */
	struct lmd_pool *pool;               /* owned; opened by the first step with 2 heavy rows (when threads > 1) */
	struct lmd_sampler *samplers;        /* owned [threads]: a workspace per thread; [0] from init, the others with the pool */
	struct lmd_request **rows;           /* owned [max_batch] of borrowed: the request of each sampled row of a step */
	int32_t *toks;                       /* owned [max_batch]: the token sampled for each row */
	int32_t *stop_ids;                   /* owned: the model's stop tokens */
	int n_stop_ids;
	long steps, preemptions;
	long prefix_queries, prefix_hits;    /* see struct lmd_sched_stats */
};

/** What a server's metrics report: a snapshot taken by lmd_sched_stats between steps. */
struct lmd_sched_stats {
	int running, waiting;     /* requests */
	int blocks_total;         /* KV blocks in the pool */
	int blocks_used;          /* referenced by a request or a session; blocks kept only by the prefix cache count as free */
	int blocks_cached;        /* kept only by the prefix cache: free, reused least recently used first when needed */
	int prefix_caching;       /* the model's prefix cache is on */
	long prefix_queries;      /* tokens looked up in the prefix cache as requests were admitted (again when preempted; 0 when off) */
	long prefix_hits;         /* of those, tokens found cached, so not prefilled */
	long steps, preemptions;
};
/** Fill st (counters since lmd_sched_init). */
void lmd_sched_stats(const struct lmd_scheduler *s, struct lmd_sched_stats *st);

int lmd_sched_init(struct lmd_scheduler *s, struct lmd_model *m, const struct lmd_tokenizer *tok,
		   const struct lmd_sched_opts *o, struct lmd_err *err);
void lmd_sched_free(struct lmd_scheduler *s);

/** Add a stop token for every request (the chat template's); at most LMD_SCHED_MAX_STOP, duplicates ignored. */
#define LMD_SCHED_MAX_STOP 48
void lmd_sched_add_stop_id(struct lmd_scheduler *s, int id);

/**
 * Queue a request. LMD_EINVAL (err names the lengths) when prompt + history exceeds the session
 * length, the prompt is empty, or the sampling values are bad; the request is then not queued.
 */
int lmd_sched_submit(struct lmd_scheduler *s, struct lmd_request *r, struct lmd_err *err);

/**
 * Run one step. Returns the number of requests still queued or running, or a negative error.
 * The step's rows are sampled on the scheduler's threads when two or more are heavy (sampled over
 * many candidates, or whole); each row uses only its request's RNG, so the tokens are the same.
 */
int lmd_sched_step(struct lmd_scheduler *s, struct lmd_err *err);

/** Step until every request has finished. */
int lmd_sched_run(struct lmd_scheduler *s, struct lmd_err *err);

/** Stop a request now (finish "cancelled"); its session keeps what was generated. */
void lmd_sched_cancel(struct lmd_scheduler *s, struct lmd_request *r);

#endif
