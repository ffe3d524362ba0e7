/*
 * The server's metrics (serve.h) in Prometheus' text format, named after vLLM's (lmd: for vllm:).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"
#include "tok/sbuf.h"

/* Seconds: 1 ms to 60 s, as vLLM's time-to-first-token buckets. */
static const double latency_le[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
				    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 60.0};
enum { NLAT = sizeof(latency_le) / sizeof(latency_le[0]) };
_Static_assert(NLAT < LMD_HIST_MAX, "room for +Inf");

void lmd_histogram_observe(struct lmd_histogram *h, double v, uint64_t times)
{
	int b = 0;
	while (b < h->nb && v > h->le[b])
		b++;
	h->counts[b] += times;
	h->count += times;
	h->sum += v * (double)times;
}

void lmd_serve_stats_init(struct lmd_serve_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->ttft.le = st->itl.le = st->e2e.le = latency_le;
	st->ttft.nb = st->itl.nb = st->e2e.nb = NLAT;
}

void lmd_serve_stats_finished(struct lmd_serve_stats *st, const struct lmd_request *r)
{
	st->prompt_tokens += (uint64_t)r->nprompt_total;
	st->generation_tokens += (uint64_t)r->ntokens;
	st->prefill_tokens += (uint64_t)r->nprefill;
	if ((int)r->finish >= 0 && (int)r->finish < LMD_METRIC_FINISH_KINDS)
		st->finished[r->finish]++;
	if (r->ntokens > 0 && r->t_first > 0) {
		lmd_histogram_observe(&st->ttft, r->t_first - r->t_submit, 1);
		for (int i = 0; r->gaps && i < r->ntokens - 1 && i < r->gapcap; i++)  /* each gap, as vLLM */
			lmd_histogram_observe(&st->itl, r->gaps[i], 1);
	}
	lmd_histogram_observe(&st->e2e, r->t_end - r->t_submit, 1);
}

static void metric(struct lmd_sb *b, const char *name, const char *type, const char *help, const char *model, double v)
{
	lmd_sb_printf(b, "# HELP lmd:%s %s\n# TYPE lmd:%s %s\nlmd:%s{model_name=\"%s\"} %.17g\n", name, help, name, type, name,
	    model, v);
}

static void histogram(struct lmd_sb *b, const char *name, const char *help, const char *model,
		      const struct lmd_histogram *h)
{
	uint64_t cum = 0;
	lmd_sb_printf(b, "# HELP lmd:%s %s\n# TYPE lmd:%s histogram\n", name, help, name);
	for (int i = 0; i <= h->nb; i++) {
		cum += h->counts[i];
		if (i < h->nb)
			lmd_sb_printf(b, "lmd:%s_bucket{model_name=\"%s\",le=\"%g\"} %llu\n", name, model, h->le[i], (unsigned long long)cum);
		else
			lmd_sb_printf(b, "lmd:%s_bucket{model_name=\"%s\",le=\"+Inf\"} %llu\n", name, model, (unsigned long long)cum);
	}
	lmd_sb_printf(b, "lmd:%s_sum{model_name=\"%s\"} %.17g\nlmd:%s_count{model_name=\"%s\"} %llu\n", name, model, h->sum, name,
	    model, (unsigned long long)h->count);
}

char *lmd_serve_metrics_text(const struct lmd_serve_stats *st, const char *model)
{
	struct lmd_sb b = {0};
	char name[256];
	size_t k = 0;
	/* the label value, escaped as the format asks (backslash, quote, newline) */
	for (const char *p = model; *p && k + 3 < sizeof(name); p++) {
		if (*p == '\\' || *p == '"' || *p == '\n')
			name[k++] = '\\';
		name[k++] = *p == '\n' ? 'n' : *p;
	}
	name[k] = 0;
	metric(&b, "num_requests_running", "gauge", "Requests running in the engine's batch.", name, st->running);
	metric(&b, "num_requests_waiting", "gauge", "Requests waiting for the engine (queued or preempted).", name,
	       st->waiting);
	metric(&b, "kv_cache_blocks_used", "gauge", "KV-cache blocks held by requests.", name, st->blocks_used);
	metric(&b, "kv_cache_blocks_total", "gauge", "KV-cache blocks in the pool.", name, st->blocks_total);
	metric(&b, "kv_cache_blocks_cached", "gauge", "KV-cache blocks kept only by the prefix cache (free to reuse).", name,
	       st->blocks_cached);
	metric(&b, "kv_cache_usage_perc", "gauge", "Fraction of the KV-cache blocks held by requests.", name,
	       st->blocks_total ? (double)st->blocks_used / st->blocks_total : 0);
	metric(&b, "prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.", name,
	       (double)st->prefix_queries);
	metric(&b, "prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.", name,
	       (double)st->prefix_hits);
	metric(&b, "prompt_tokens_total", "counter", "Prompt tokens of finished requests.", name, (double)st->prompt_tokens);
	metric(&b, "prefill_tokens_total", "counter", "Prompt tokens computed (prefilled) for finished requests.", name,
	       (double)st->prefill_tokens);
	metric(&b, "generation_tokens_total", "counter", "Tokens generated for finished requests.", name,
	       (double)st->generation_tokens);
	metric(&b, "num_preemptions_total", "counter", "Sequences preempted (KV blocks released, recomputed later).", name,
	       (double)st->preemptions);
	lmd_sb_printf(&b, "# HELP lmd:request_success_total Finished requests by finish reason.\n"
		"# TYPE lmd:request_success_total counter\n");
	for (int f = LMD_FINISH_STOP; f < LMD_METRIC_FINISH_KINDS; f++)
		lmd_sb_printf(&b, "lmd:request_success_total{model_name=\"%s\",finished_reason=\"%s\"} %llu\n", name,
		    lmd_finish_name((enum lmd_finish)f), (unsigned long long)st->finished[f]);
	histogram(&b, "time_to_first_token_seconds", "Time from arrival to the first token.", name, &st->ttft);
	histogram(&b, "inter_token_latency_seconds", "Time between two tokens of a request.", name, &st->itl);
	histogram(&b, "e2e_request_latency_seconds", "Time from arrival to the end of a request.", name, &st->e2e);
	if (b.failed) {
		free(b.p);
		return NULL;
	}
	return b.p;
}
