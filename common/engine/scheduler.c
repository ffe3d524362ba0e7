#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "scheduler.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

const char *lmd_finish_name(enum lmd_finish f)
{
	static const char *names[] = {"", "stop", "length", "error", "cancelled"};
	return f >= 0 && f <= LMD_FINISH_CANCEL ? names[f] : "?";
}

// --- sessions

static int session_push(struct lmd_session *s, const int32_t *t, int n, struct lmd_err *err)
{
	if (s->n + n > s->cap) {
		int nc = s->cap ? s->cap : 256;
		while (nc < s->n + n)
			nc *= 2;
		int32_t *p = realloc(s->toks, nc * sizeof(*p));
		if (!p)
			return lmd_errorf(err, LMD_ENOMEM, "out of memory");
		s->toks = p;
		s->cap = nc;
	}
	memcpy(s->toks + s->n, t, n * sizeof(*t));
	s->n += n;
	return LMD_OK;
}

void lmd_session_truncate(struct lmd_session *s, struct lmd_model *m, int len)
{
	if (len < s->n)
		s->n = len;
	if (len < s->kv.len)
		lmd_kvseq_truncate(&m->kv, &s->kv, len);
}

void lmd_session_free(struct lmd_session *s, struct lmd_model *m)
{
	if (m)
		lmd_model_seq_release(m, &s->kv);
	free(s->toks);
	memset(s, 0, sizeof(*s));
}

void lmd_request_free(struct lmd_request *r, struct lmd_model *m)
{
	free(r->text);
	r->text = NULL;
	r->len = r->cap = 0;
	lmd_session_free(&r->own, m);
	lmd_tokdec_free(&r->dec);
	free(r->lp);
	free(r->gaps);
	free(r->pen_row);
	r->lp = NULL;
	r->gaps = r->pen_row = NULL;
	r->nlp = r->lpcap = r->gapcap = 0;
}

// --- the scheduler

int lmd_sched_init(struct lmd_scheduler *s, struct lmd_model *m, const struct lmd_tokenizer *tok,
		   const struct lmd_sched_opts *o, struct lmd_err *err)
{
	memset(s, 0, sizeof(*s));
	s->m = m;
	s->tok = tok;
	s->max_batch = o && o->max_batch > 0 && o->max_batch < m->max_seqs ? o->max_batch : m->max_seqs;
	s->max_prefill = o && o->max_prefill > 0 && o->max_prefill < m->max_tokens ? o->max_prefill : m->max_tokens;
	s->chunk = m->max_tokens - s->max_batch < s->max_prefill ? m->max_tokens - s->max_batch : s->max_prefill;
	if (s->chunk < 1)
		s->chunk = 1;
	s->run = calloc(s->max_batch, sizeof(*s->run));
	s->take = calloc(s->max_batch, sizeof(*s->take));
	s->spread = calloc(s->max_batch, sizeof(*s->spread));
	s->top_k = calloc(s->max_batch, sizeof(*s->top_k));
	s->picks = calloc(s->max_batch, sizeof(*s->picks));
	s->rows = calloc(s->max_batch, sizeof(*s->rows));
	s->toks = calloc(s->max_batch, sizeof(*s->toks));
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	s->threads = o && o->threads > 0 ? o->threads : cores > 8 ? 8 : cores > 1 ? (int)cores : 1;
	if (s->threads > s->max_batch)
		s->threads = s->max_batch;
	s->samplers = calloc(s->threads, sizeof(*s->samplers));
	s->stop_ids = calloc(LMD_SCHED_MAX_STOP, sizeof(*s->stop_ids));
	if (!s->run || !s->take || !s->spread || !s->top_k || !s->picks || !s->rows || !s->toks || !s->samplers ||
	    !s->stop_ids) {
		lmd_sched_free(s);
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	}
	/* stop tokens: the model's eos list and the tokenizer's */
	for (int i = 0; i < m->cfg.n_eos; i++)
		lmd_sched_add_stop_id(s, m->cfg.eos[i]);
	for (int i = 0; tok && i < tok->n_stop; i++)
		lmd_sched_add_stop_id(s, tok->stop[i]);
	int rc = lmd_sampler_init(&s->samplers[0], m->cfg.vocab, err);
	if (rc)
		lmd_sched_free(s);
	return rc;
}

void lmd_sched_add_stop_id(struct lmd_scheduler *s, int id)
{
	for (int i = 0; i < s->n_stop_ids; i++)
		if (s->stop_ids[i] == id)
			return;
	if (id >= 0 && s->n_stop_ids < LMD_SCHED_MAX_STOP)
		s->stop_ids[s->n_stop_ids++] = id;
}

void lmd_sched_free(struct lmd_scheduler *s)
{
	free(s->wait);
	free(s->run);
	free(s->take);
	free(s->spread);
	free(s->top_k);
	free(s->picks);
	free(s->rows);
	free(s->toks);
	free(s->stop_ids);
	lmd_batch_free(&s->b);
	lmd_pool_close(s->pool);
	for (int t = 0; s->samplers && t < s->threads; t++)
		lmd_sampler_free(&s->samplers[t]);
	free(s->samplers);
	memset(s, 0, sizeof(*s));
}

static struct lmd_session *sess(struct lmd_request *r)
{
	return r->session ? r->session : &r->own;
}

int lmd_sched_submit(struct lmd_scheduler *s, struct lmd_request *r, struct lmd_err *err)
{
	struct lmd_session *se = sess(r);
	int rc;
	if (r->nprompt <= 0 && se->n == 0)
		return lmd_errorf(err, LMD_EINVAL, "the prompt is empty");
	if (r->max_tokens <= 0)
		return lmd_errorf(err, LMD_EINVAL, "max_tokens must be at least 1");
	if (se->busy)
		return lmd_errorf(err, LMD_EINVAL, "the session is busy with another request");
	if (se->n + r->nprompt >= s->m->session_len)
		return lmd_errorf(err, LMD_EINVAL, "the prompt is %d tokens, more than the session length %d allows",
				  se->n + r->nprompt, s->m->session_len);
	for (int i = 0; i < r->nprompt; i++)
		if (r->prompt[i] < 0 || r->prompt[i] >= s->m->cfg.vocab)
			return lmd_errorf(err, LMD_EINVAL, "token id %d is outside the vocabulary (%d)", r->prompt[i],
					  s->m->cfg.vocab);
	if ((rc = lmd_sampling_validate(&r->sampling, err)))
		return rc;
	if (r->logprobs && (r->top_logprobs < 0 || r->top_logprobs > LMD_MAX_TOP_LOGPROBS))
		return lmd_errorf(err, LMD_EINVAL, "top_logprobs %d: expected 0 to %d", r->top_logprobs,
				  LMD_MAX_TOP_LOGPROBS);
	/* room for every token's log-probability and the penalized row, so that sampling never allocates */
	int most = r->max_tokens < s->m->session_len ? r->max_tokens : s->m->session_len;
	if (r->logprobs && r->lpcap < most) {
		free(r->lp);
		if (!(r->lp = malloc((size_t)most * sizeof(*r->lp))))
			return r->lpcap = 0, lmd_errorf(err, LMD_ENOMEM, "out of memory");
		r->lpcap = most;
	}
	if (r->token_gaps && r->gapcap < most) {
		free(r->gaps);
		if (!(r->gaps = malloc((size_t)most * sizeof(*r->gaps))))
			return r->gapcap = 0, lmd_errorf(err, LMD_ENOMEM, "out of memory");
		r->gapcap = most;
	}
	if ((r->sampling.presence_penalty || r->sampling.frequency_penalty) && !r->pen_row &&
	    !(r->pen_row = malloc((size_t)s->m->cfg.vocab * sizeof(*r->pen_row))))
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	if (s->nwait + s->nrun + 1 >= s->wcap) {  /* room for every live request: preemption puts them back */
		int nc = s->wcap ? s->wcap * 2 : 64;
		struct lmd_request **w = realloc(s->wait, nc * sizeof(*w));
		if (!w)
			return lmd_errorf(err, LMD_ENOMEM, "out of memory");
		s->wait = w;
		s->wcap = nc;
	}
	if ((rc = session_push(se, r->prompt, r->nprompt, err)))
		return rc;
	r->text = NULL;
	r->len = r->emitted = r->cap = 0;
	r->ntokens = r->nprefill = r->nlp = r->ncached = 0;
	r->nprompt_total = se->n;
	r->prefill_start = se->kv.len;
	r->finish = LMD_FINISH_NONE;
	r->error[0] = 0;
	r->t_submit = now();
	r->t_first = r->t_end = 0;
	lmd_rng_seed(&r->rng, r->sampling.seed);
	lmd_tokdec_init(&r->dec, s->tok, r->keep_special ? 0 : LMD_DECODE_SKIP_SPECIAL);
	for (int i = se->n - 1; r->continues && i >= 0; i--)  /* the decoder goes on from the prompt's last piece */
		if (!(lmd_tokenizer_attr(s->tok, se->toks[i]) & LMD_TOKA_SPECIAL)) {
			const char *t;
			size_t n;
			lmd_tokdec_push(&r->dec, se->toks[i], &t, &n, NULL);
			break;
		}
	se->busy = 1;
	s->wait[s->nwait++] = r;
	return LMD_OK;
}

static int append_text(struct lmd_request *r, const char *t, size_t n)
{
	if (r->len + n + 1 > r->cap) {
		size_t nc = r->cap ? r->cap * 2 : 256;
		while (nc < r->len + n + 1)
			nc *= 2;
		char *p = realloc(r->text, nc);
		if (!p)
			return -1;
		r->text = p;
		r->cap = nc;
	}
	memcpy(r->text + r->len, t, n);
	r->len += n;
	r->text[r->len] = 0;
	return 0;
}

/* Longest tail of the text that could still grow into a stop string: held back from streaming. */
static size_t stop_holdback(const struct lmd_request *r)
{
	size_t hold = 0;
	for (int i = 0; i < r->n_stop; i++) {
		size_t sl = strlen(r->stop[i]);
		for (size_t k = sl > 1 ? sl - 1 : 0; k > hold; k--)
			if (k <= r->len && !memcmp(r->text + r->len - k, r->stop[i], k)) {
				hold = k;
				break;
			}
	}
	return hold;
}

/* A stop string in the text that arrived since the last check: cut the text there. */
static int find_stop(struct lmd_request *r, size_t from)
{
	size_t cut = (size_t)-1;
	for (int i = 0; i < r->n_stop; i++) {
		size_t sl = strlen(r->stop[i]);
		if (!sl)
			continue;
		size_t start = from >= sl ? from - sl + 1 : 0;
		char *p = memmem(r->text + start, r->len - start, r->stop[i], sl);
		if (p && (size_t)(p - r->text) < cut)
			cut = (size_t)(p - r->text);
	}
	if (cut == (size_t)-1)
		return 0;
	r->len = cut;
	r->text[cut] = 0;
	return 1;
}

static void emit(struct lmd_request *r, size_t upto)
{
	if (upto > r->emitted && r->on_text)
		r->on_text(r, r->text + r->emitted, upto - r->emitted, r->ctx);
	if (upto > r->emitted)
		r->emitted = upto;
}

static void finish(struct lmd_scheduler *s, struct lmd_request *r, enum lmd_finish f)
{
	const char *t;
	size_t n;
	/* text held back by the decoder comes out, unless a stop string cut the text before it */
	if (r->finish == LMD_FINISH_NONE && lmd_tokdec_flush(&r->dec, &t, &n, NULL) == LMD_OK && n) {
		size_t from = r->len;
		if (!append_text(r, t, n) && r->n_stop && find_stop(r, from))
			f = LMD_FINISH_STOP;
	}
	r->finish = f;
	emit(r, r->len);
	r->t_end = now();
	struct lmd_session *se = sess(r);
	se->busy = 0;
	if (!r->session)
		lmd_model_seq_release(s->m, &r->own.kv);
	if (r->on_done)
		r->on_done(r, r->ctx);
}

static int is_stop(const struct lmd_scheduler *s, const struct lmd_request *r, int tok)
{
	if (!r->ignore_eos)
		for (int i = 0; i < s->n_stop_ids; i++)
			if (s->stop_ids[i] == tok)
				return 1;
	for (int i = 0; i < r->n_stop_ids; i++)
		if (r->stop_ids[i] == tok)
			return 1;
	return 0;
}

/* A new token for r: record it, stream its text, decide whether r is done. Returns 1 when finished. */
static int accept(struct lmd_scheduler *s, struct lmd_request *r, int tok, struct lmd_err *err)
{
	struct lmd_session *se = sess(r);
	const char *t;
	size_t n;
	double at = now();
	if (!r->ntokens)
		r->t_first = at;
	else if (r->ntokens - 1 < r->gapcap)
		r->gaps[r->ntokens - 1] = (float)(at - r->t_last);
	r->t_last = at;
	r->ntokens++;
	if (session_push(se, &(int32_t){tok}, 1, err))
		return -1;
	if (is_stop(s, r, tok)) {
		r->nlp -= r->logprobs && r->nlp > 0;  /* the stop token is not part of the text */
		finish(s, r, LMD_FINISH_STOP);
		return 1;
	}
	if (lmd_tokdec_push(&r->dec, tok, &t, &n, err))
		return -1;
	size_t from = r->len;
	if (n && append_text(r, t, n))
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	if (r->n_stop && find_stop(r, from)) {
		r->finish = LMD_FINISH_STOP;  /* set first: finish() must not flush what follows the stop string */
		finish(s, r, LMD_FINISH_STOP);
		return 1;
	}
	emit(r, r->len - stop_holdback(r));
	if (r->ntokens >= r->max_tokens || se->n >= s->m->session_len) {
		finish(s, r, LMD_FINISH_LENGTH);
		return 1;
	}
	return 0;
}

static void remove_run(struct lmd_scheduler *s, int i)
{
	memmove(s->run + i, s->run + i + 1, (s->nrun - i - 1) * sizeof(*s->run));
	s->nrun--;
}

/* Put the last-admitted running request back at the head of the queue, its KV released. */
static void preempt(struct lmd_scheduler *s)
{
	struct lmd_request *r = s->run[s->nrun - 1];
	lmd_model_seq_release(s->m, &sess(r)->kv);
	memmove(s->wait + 1, s->wait, s->nwait * sizeof(*s->wait));
	s->wait[0] = r;
	s->nwait++;
	s->nrun--;
	s->preemptions++;
}

/* Count tokens r took from the prefix cache. */
static void note_hit(struct lmd_scheduler *s, struct lmd_request *r, int hit)
{
	s->prefix_hits += hit;
	if (!r->ntokens)
		r->ncached += hit;
}

/* Decide how many tokens each running request computes this step; returns the KV blocks needed. */
static int plan(struct lmd_scheduler *s)
{
	int budget = s->m->max_tokens, prefill = s->max_prefill, need = 0;
	for (int i = 0; i < s->nrun; i++) {  /* decodes first: one token each */
		struct lmd_session *se = sess(s->run[i]);
		int left = se->n - se->kv.len;
		s->take[i] = left == 1 && budget > 0 ? 1 : 0;
		budget -= s->take[i];
	}
	for (int i = 0; i < s->nrun; i++) {  /* then prefill chunks, in admission order */
		struct lmd_session *se = sess(s->run[i]);
		int left = se->n - se->kv.len;
		if (left > 1) {  /* a whole chunk or nothing: it always fits beside the decodes when first */
			int k = left < s->chunk ? left : s->chunk;
			s->take[i] = k <= budget && k <= prefill ? k : 0;
			budget -= s->take[i];
			prefill -= s->take[i];
		}
		if (s->take[i])
			need += lmd_model_seq_blocks_needed(s->m, &se->kv, s->take[i]);
	}
	return need;
}

/* Rows worth a thread of their own: more candidates than this, or whole rows. */
#define HEAVY_ROW 256

/* What a request needs of its row: the whole row for log-probabilities and the presence/frequency penalties. */
static float row_spread(const struct lmd_request *r)
{
	return r->logprobs || r->pen_row ? NAN : lmd_sample_spread(&r->sampling);
}

/* The row with OpenAI's presence and frequency penalties on the generated tokens, in r->pen_row. */
static const float *penalize(const struct lmd_request *r, const struct lmd_session *se, const float *row, int vocab)
{
	float *v = r->pen_row;
	memcpy(v, row, (size_t)vocab * sizeof(*v));
	for (int i = r->nprompt_total; i < se->n; i++)  /* the frequency penalty, per occurrence */
		if (se->toks[i] >= 0 && se->toks[i] < vocab)
			v[se->toks[i]] -= r->sampling.frequency_penalty;
	for (int i = r->nprompt_total; i < se->n; i++) {  /* the presence penalty, once per distinct token */
		int t = se->toks[i], seen = 0;
		for (int j = r->nprompt_total; j < i && !seen; j++)
			seen = se->toks[j] == t;
		if (!seen && t >= 0 && t < vocab)
			v[t] -= r->sampling.presence_penalty;
	}
	return v;
}

/* Record token tok's log-probability in row [vocab] and the request's top alternatives. */
static void record_logprob(struct lmd_request *r, const float *row, int vocab, int tok)
{
	if (r->nlp >= r->lpcap)
		return;
	struct lmd_logprob *lp = &r->lp[r->nlp++];
	float mx = -INFINITY;
	for (int i = 0; i < vocab; i++)
		if (row[i] > mx)
			mx = row[i];
	double sum = 0;
	for (int i = 0; i < vocab; i++)
		if (row[i] == row[i])
			sum += exp((double)row[i] - mx);
	double lse = mx + log(sum);
	lp->id = tok;
	lp->logprob = (float)(row[tok] - lse);
	lp->ntop = 0;
	int want = r->top_logprobs < vocab ? r->top_logprobs : vocab;
	for (int i = 0; i < vocab && want > 0; i++) {  /* insertion into the sorted top (strictly larger moves up) */
		if (!(row[i] == row[i]) || (lp->ntop == want && !(row[i] > row[lp->top_id[want - 1]])))
			continue;
		int k = lp->ntop < want ? lp->ntop++ : want - 1;
		while (k > 0 && row[i] > row[lp->top_id[k - 1]]) {
			lp->top_id[k] = lp->top_id[k - 1];
			k--;
		}
		lp->top_id[k] = i;
	}
	for (int k = 0; k < lp->ntop; k++)
		lp->top[k] = (float)(row[lp->top_id[k]] - lse);
}

/* A test's scripted token for r (LMD_TEST_SCRIPT): the script's next, then a stop token. */
static int scripted(const struct lmd_scheduler *s, const struct lmd_request *r)
{
	if (r->script_delay_us > 0)
		usleep((useconds_t)r->script_delay_us);
	if (r->ntokens < r->nscript)
		return r->script[r->ntokens];
	return s->n_stop_ids ? s->stop_ids[0] : r->n_stop_ids ? r->stop_ids[0] : 0;
}

/* Sample row `row` of the step into s->toks (a pool task): it changes only its request and thread tid's workspace. */
static void sample_row(void *arg, int row, int tid)
{
	struct lmd_scheduler *s = arg;
	struct lmd_request *r = s->rows[row];
	const struct lmd_pick *pk = &s->picks[row];
	struct lmd_sampler *sm = &s->samplers[tid];
	struct lmd_session *se = sess(r);
	int vocab = s->m->cfg.vocab;
	if (pk->best < 0)  /* logits not finite */
		s->toks[row] = -1;
	else if (s->spread[row] < 0)  /* greedy */
		s->toks[row] = pk->best;
	else if (s->spread[row] >= 0)
		s->toks[row] = lmd_sample_candidates(sm, pk->val, pk->idx, pk->n, &r->sampling, &r->rng);
	else  /* penalties or log-probabilities: the whole row */
		s->toks[row] = lmd_sample(sm, r->pen_row ? penalize(r, se, pk->row, vocab) : pk->row, &r->sampling,
					  &r->rng, se->toks, se->n);
	if (r->script)
		s->toks[row] = scripted(s, r);
	if (r->logprobs && s->toks[row] >= 0)
		record_logprob(r, pk->row, vocab, s->toks[row]);
}

/* The sampling pool and its threads' workspaces (on failure, neither). */
static int open_pool(struct lmd_scheduler *s, struct lmd_err *err)
{
	int rc = LMD_OK;
	for (int t = 1; t < s->threads && !rc; t++)
		rc = lmd_sampler_init(&s->samplers[t], s->m->cfg.vocab, err);
	if (!rc)
		rc = lmd_pool_open(&s->pool, s->threads, err);
	for (int t = 1; rc && t < s->threads; t++)
		lmd_sampler_free(&s->samplers[t]);
	return rc;
}

int lmd_sched_step(struct lmd_scheduler *s, struct lmd_err *err)
{
	int rc;
	/* admit while a slot is free and the pool holds the newcomer's whole prompt beside the running ones */
	/* a prompt still to prefill takes the blocks the prefix cache got since it was admitted */
	for (int i = 0; i < s->nrun; i++)
		note_hit(s, s->run[i], lmd_kvseq_attach(&s->m->kv, &sess(s->run[i])->kv, sess(s->run[i])->toks,
							sess(s->run[i])->n));
	int need = plan(s);
	while (s->nwait && s->nrun < s->max_batch) {
		struct lmd_request *r = s->wait[0];
		struct lmd_session *se = sess(r);
		/* the prefix cache's blocks for its tokens are attached first: prefill starts after them */
		int from = se->kv.len, hit = lmd_kvseq_attach(&s->m->kv, &se->kv, se->toks, se->n);
		int nb = lmd_model_seq_blocks_needed(s->m, &se->kv, se->n - se->kv.len);
		if (s->nrun && need + nb > lmd_model_free_blocks(s->m)) {
			if (hit)
				lmd_kvseq_truncate(&s->m->kv, &se->kv, from);
			break;
		}
		if (s->m->kv.blk)
			s->prefix_queries += se->n - from;
		if (!r->ntokens)
			r->ncached = 0;
		note_hit(s, r, hit);
		s->run[s->nrun++] = s->wait[0];
		memmove(s->wait, s->wait + 1, (s->nwait - 1) * sizeof(*s->wait));
		s->nwait--;
		need = plan(s);
	}
	if (!s->nrun)
		return 0;
	while (need > lmd_model_free_blocks(s->m) && s->nrun > 1) {
		preempt(s);
		need = plan(s);
	}
	if (need > lmd_model_free_blocks(s->m)) {  /* one request alone does not fit: fail it */
		struct lmd_request *r = s->run[0];
		snprintf(r->error, sizeof(r->error), "the KV cache (%d blocks free) cannot hold this request's %d tokens",
			 lmd_model_free_blocks(s->m), sess(r)->n);
		remove_run(s, 0);
		finish(s, r, LMD_FINISH_ERROR);
		return s->nrun + s->nwait;
	}
	lmd_batch_clear(&s->b);
	for (int i = 0; i < s->nrun; i++) {
		struct lmd_session *se = sess(s->run[i]);
		for (int k = 0; k < s->take[i]; k++) {
			int last = se->kv.len + k + 1 == se->n;
			if (last) {  /* one row at most per request, so at most max_batch */
				s->spread[s->b.nout] = row_spread(s->run[i]);
				s->top_k[s->b.nout] = s->run[i]->sampling.top_k;
			}
			if ((rc = lmd_batch_add(&s->b, &se->kv, se->toks[se->kv.len + k], last, err)))
				return rc;
		}
		for (int k = 0; k < s->take[i]; k++)
			s->run[i]->nprefill += se->kv.len + k < s->run[i]->nprompt_total;
	}
	if ((rc = lmd_model_forward_pick(s->m, &s->b, s->spread, s->top_k, s->picks, err)))
		return rc;
	s->steps++;
	for (int i = 0; i < s->nrun; i++)  /* blocks filled this step join the prefix cache */
		lmd_kvseq_commit(&s->m->kv, &sess(s->run[i])->kv, sess(s->run[i])->toks);
	/* a row for every request whose last token was computed, in batch order */
	int nrows = 0, nheavy = 0;
	for (int i = 0; i < s->nrun; i++) {
		struct lmd_session *se = sess(s->run[i]);
		if (s->take[i] && se->kv.len == se->n) {
			nheavy += s->picks[nrows].n > HEAVY_ROW || s->picks[nrows].row;
			s->rows[nrows++] = s->run[i];
		}
	}
	/* the rows are independent: sampled together, on the pool when two or more are worth a thread */
	if (nheavy >= 2 && s->threads > 1 && !s->pool && (rc = open_pool(s, err)))
		return rc;
	if (nheavy >= 2 && s->pool)
		lmd_pool_run(s->pool, sample_row, s, nrows);
	else
		for (int row = 0; row < nrows; row++)
			sample_row(s, row, 0);
	/* then their tokens, in batch order */
	for (int i = 0, row = 0; i < s->nrun && row < nrows;) {
		if (s->run[i] != s->rows[row]) {
			i++;
			continue;
		}
		if (s->toks[row] < 0) {
			struct lmd_request *r = s->run[i];
			snprintf(r->error, sizeof(r->error), "the logits are not finite (NaN or inf): the model's weights or "
				 "its dtype's range are broken");
			rc = 1;
			row++;
			finish(s, r, LMD_FINISH_ERROR);
		} else {
			rc = accept(s, s->run[i], s->toks[row++], err);
		}
		if (rc < 0)
			return rc;
		if (rc) {
			remove_run(s, i);
			memmove(s->take + i, s->take + i + 1, (s->nrun - i) * sizeof(*s->take));
		} else {
			i++;
		}
	}
	return s->nrun + s->nwait;
}

int lmd_sched_run(struct lmd_scheduler *s, struct lmd_err *err)
{
	int rc;
	while ((rc = lmd_sched_step(s, err)) > 0)
		;
	return rc;
}

void lmd_sched_cancel(struct lmd_scheduler *s, struct lmd_request *r)
{
	for (int i = 0; i < s->nrun; i++)
		if (s->run[i] == r) {
			remove_run(s, i);
			finish(s, r, LMD_FINISH_CANCEL);
			return;
		}
	for (int i = 0; i < s->nwait; i++)
		if (s->wait[i] == r) {
			memmove(s->wait + i, s->wait + i + 1, (s->nwait - i - 1) * sizeof(*s->wait));
			s->nwait--;
			finish(s, r, LMD_FINISH_CANCEL);
			return;
		}
}

void lmd_sched_stats(const struct lmd_scheduler *s, struct lmd_sched_stats *st)
{
	const struct lmd_kvcache *kv = &s->m->kv;
	*st = (struct lmd_sched_stats){
		.running = s->nrun,
		.waiting = s->nwait,
		.blocks_total = kv->nblocks,
		.blocks_used = kv->nblocks - lmd_kvcache_free_blocks(kv),
		.blocks_cached = lmd_kvcache_cached_blocks(kv),
		.prefix_caching = kv->blk != NULL,
		.prefix_queries = s->prefix_queries,
		.prefix_hits = s->prefix_hits,
		.steps = s->steps,
		.preemptions = s->preemptions,
	};
}
