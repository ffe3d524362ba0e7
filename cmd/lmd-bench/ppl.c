/*
 * lmd-bench ppl MODEL --text FILE: perplexity by the reference recipe of ../shared/README.md
 * (ids = [BOS] + tokens of the whole file; non-overlapping windows of seqlen tokens from the start;
 * the mean negative log-likelihood of positions 1..seqlen-1 of each window, each window a fresh
 * sequence), and with --kld-base BASE the KL divergence KL(base || model) and top-1 agreement of
 * the two models' next-token distributions over the same positions: both models run window by
 * window side by side, so no logits are stored.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "cmd/cli.h"
#include "file.h"
#include "lmd.h"
#include "engine/runner.h"
#include "cmd/opts.h"

enum { O_TEXT = 256, O_SEQLEN, O_WINDOWS, O_KLD_BASE };

static const struct lmd_opt opts[] = {
	{"text", O_TEXT, "FILE", "the text to score (required)"},
	{"seqlen", O_SEQLEN, "N", "tokens per window (default 512)"},
	{"windows", O_WINDOWS, "N", "windows scored from the start of the text (default 0: all that fit)"},
	{"kld-base", O_KLD_BASE, "MODEL", "also report KL divergence and top-1 agreement against MODEL"},
	{"format", 'f', "FMT", "text (default: a last line 'ppl VALUE'), csv or json"},
	{"output", 'o', "FILE", "write the result to FILE (default: stdout)"},
	{"session-len", LMD_RO_SESSION_LEN, "N", "unused: a window of --seqlen tokens is the session"},
	{"max-batch-size", LMD_RO_BATCH, "N", "unused: one window at a time"},
	{"chat-template", LMD_RO_TEMPLATE, "NAME", "unused: the text is scored as it is"},
	LMD_RUNNER_OPTS,
	{0},
};

/* The logits of every position of one window (a fresh sequence) into logits [n][vocab]. */
static int run_window(struct lmd_runner *r, const int32_t *ids, int n, float *logits, struct lmd_err *err)
{
	struct lmd_kvseq s = {0};
	struct lmd_batch b = {0};
	int rc = LMD_OK;
	for (int i = 0; !rc && i < n; i++)
		rc = lmd_batch_add(&b, &s, ids[i], 1, err);
	if (!rc)
		rc = lmd_model_forward(&r->m, &b, logits, err);
	lmd_model_seq_release(&r->m, &s);
	lmd_batch_free(&b);
	return rc;
}

/* log-softmax of row[0..v) into out (double); returns the argmax. */
static int log_softmax(const float *row, int v, double *out)
{
	int am = 0;
	double mx = row[0], sum = 0;
	for (int j = 1; j < v; j++)
		if (row[j] > mx)
			mx = row[j], am = j;
	for (int j = 0; j < v; j++)
		sum += exp((double)row[j] - mx);
	double lse = mx + log(sum);
	for (int j = 0; j < v; j++)
		out[j] = (double)row[j] - lse;
	return am;
}

struct ppl_result {
	int windows;
	long scored;
	double nll, base_nll, kld, kld_max, top1;
};

static int score(struct lmd_runner *r, struct lmd_runner *base, const int32_t *ids, int seqlen, int windows,
		 const struct lmd_cli *cli, struct ppl_result *res, struct lmd_err *err)
{
	struct lmd_cli_progress pr;
	const struct lmd_progress *progress = cli->verbose > 0 ? NULL : lmd_cli_progress(&pr, cli, "windows");
	int v = r->m.cfg.vocab;
	if (base && base->m.cfg.vocab != v)
		return lmd_errorf(err, LMD_EINVAL, "--kld-base: vocabulary %d differs from the model's %d",
				  base->m.cfg.vocab, v);
	float *lg = malloc((size_t)seqlen * v * sizeof(float));
	float *blg = base ? malloc((size_t)seqlen * v * sizeof(float)) : NULL;
	double *lp = malloc((size_t)v * sizeof(double)), *blp = malloc((size_t)v * sizeof(double));
	int rc = !lg || !lp || !blp || (base && !blg) ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	double nll = 0, bnll = 0, kld = 0, kmax = 0;
	long scored = 0, agree = 0;
	for (int w = 0; !rc && w < windows; w++) {
		const int32_t *x = ids + (size_t)w * seqlen;
		if ((rc = run_window(r, x, seqlen, lg, err)) || (base && (rc = run_window(base, x, seqlen, blg, err))))
			break;
		double wn = 0;
		for (int i = 0; i + 1 < seqlen; i++) {
			int am = log_softmax(lg + (size_t)i * v, v, lp);
			wn -= lp[x[i + 1]];
			if (base) {
				int bam = log_softmax(blg + (size_t)i * v, v, blp);
				double k = 0;
				for (int j = 0; j < v; j++)
					k += exp(blp[j]) * (blp[j] - lp[j]);
				kld += k;
				kmax = k > kmax ? k : kmax;
				agree += am == bam;
				bnll -= blp[x[i + 1]];
			}
		}
		if (!isfinite(wn)) {
			rc = lmd_errorf(err, LMD_EFORMAT, "window %d: the logits are not finite (NaN or inf): the model's "
					"weights or its dtype's range are broken", w + 1);
			break;
		}
		nll += wn;
		scored += seqlen - 1;
		lmd_progress(progress, w + 1, windows);
		lmd_log(cli, 1, "window %d/%d: ppl %.4f (running %.4f)", w + 1, windows, exp(wn / (seqlen - 1)),
			exp(nll / scored));
	}
	if (!rc)
		*res = (struct ppl_result){windows, scored, nll / scored, base ? bnll / scored : 0,
					   base ? kld / scored : 0, kmax, base ? (double)agree / scored : 0};
	free(lg);
	free(blg);
	free(lp);
	free(blp);
	return rc;
}

/* [BOS] + the tokens of the whole file. */
static int read_ids(struct lmd_runner *r, const char *path, int32_t **ids, size_t *n, struct lmd_err *err)
{
	char *text;
	size_t len;
	int rc = lmd_read_file(path, &text, &len, err);
	if (rc)
		return rc;
	int *t = NULL;
	size_t nt = 0;
	rc = lmd_tokenizer_encode(&r->tok, text, len, 0, &t, &nt, err);
	free(text);
	if (rc)
		return rc;
	int bos = r->tok.bos >= 0 ? r->tok.bos : r->m.cfg.bos;
	*ids = malloc((nt + 1) * sizeof(**ids));
	if (!*ids) {
		free(t);
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	}
	*n = 0;
	if (bos >= 0)
		(*ids)[(*n)++] = bos;
	for (size_t i = 0; i < nt; i++)
		(*ids)[(*n)++] = t[i];
	free(t);
	return LMD_OK;
}

static void print_result(FILE *f, const char *fmt, const char *model, const char *text, int seqlen, int has_base,
			 const struct ppl_result *p)
{
	const char *names[] = {"model", "text", "seqlen", "windows", "tokens_scored", "ppl", "nll", "base_ppl", "kld",
			       "kld_max", "top1"};
	int ncol = has_base ? 11 : 7;
	double num[] = {0, 0, seqlen, p->windows, (double)p->scored, exp(p->nll), p->nll, exp(p->base_nll), p->kld,
			p->kld_max, p->top1};
	if (!strcmp(fmt, "json")) {
		json_t *o = json_object();
		json_object_set_new(o, "model", json_string(model));
		json_object_set_new(o, "text", json_string(text));
		for (int c = 2; c < ncol; c++)
			json_object_set_new(o, names[c], c < 5 ? json_integer((json_int_t)num[c]) : json_real(num[c]));
		char *s = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
		fprintf(f, "%s\n", s ? s : "{}");
		free(s);
		json_decref(o);
	} else if (!strcmp(fmt, "csv")) {
		for (int c = 0; c < ncol; c++)
			fprintf(f, "%s%s", c ? "," : "", names[c]);
		fprintf(f, "\n%s,%s", model, text);
		for (int c = 2; c < ncol; c++)
			fprintf(f, c < 5 ? ",%.0f" : ",%.6f", num[c]);
		fprintf(f, "\n");
	} else {
		fprintf(f, "tokens_scored %ld\nnll %.6f\n", p->scored, p->nll);
		if (has_base)
			fprintf(f, "base_ppl %.4f\nkld %.6f\nkld_max %.6f\ntop1 %.6f\n", exp(p->base_nll), p->kld, p->kld_max,
			       p->top1);
		fprintf(f, "ppl %.4f\n", exp(p->nll));
	}
}

int lmd_bench_ppl(int argc, char **argv)
{
	struct lmd_cli cli = {
		.prog = "lmd-bench ppl",
		.synopsis = "MODEL --text FILE [OPTIONS]",
		.purpose = "Measure perplexity on a text, and KL divergence and top-1 agreement against a base model.",
		.example = "lmd-bench ppl tiny-awq --text share/data/wikitext2.txt --windows 8 --kld-base share/models/lmd-tiny",
		.opts = opts,
	};
	struct lmd_runner_opts ro = {.dtype = LMD_DTYPE_NONE};
	struct lmd_err err = {0};
	int seqlen = 512, windows = 0, k;
	const char *arg, *fmt = "text", *text = NULL, *base_dir = NULL, *out = "-";
	while ((k = lmd_cli_next(&cli, argc, argv, &arg)) != -1) {
		if (lmd_runner_opt(&ro, &cli, k, arg))
			continue;
		switch (k) {
		case O_TEXT: text = arg; break;
		case O_SEQLEN: seqlen = (int)lmd_cli_long(&cli, "seqlen", arg, 2, 1 << 20); break;
		case O_WINDOWS: windows = (int)lmd_cli_long(&cli, "windows", arg, 0, 1 << 24); break;
		case O_KLD_BASE: base_dir = arg; break;
		case 'f':
			if (strcmp(arg, "text") && strcmp(arg, "csv") && strcmp(arg, "json"))
				lmd_usage(&cli, "--format: '%s' is not text, csv or json", arg);
			fmt = arg;
			break;
		case 'o': out = arg; break;
		}
	}
	if (argc - optind != 1)
		lmd_usage(&cli, "expected one MODEL directory");
	if (!text)
		lmd_usage(&cli, "--text FILE is required");
	ro.model = argv[optind];
	ro.max_batch = 1;
	ro.session_len = seqlen;
	if (!ro.max_prefill || ro.max_prefill < seqlen)
		ro.max_prefill = seqlen;
	struct lmd_out o;
	struct lmd_runner r, b;
	memset(&b, 0, sizeof(b));
	lmd_open_out_runner(&cli, &o, out, &r, &ro);
	if (base_dir) {
		struct lmd_runner_opts bo = ro;
		bo.model = base_dir;
		bo.quant_policy = 0;
		bo.kv_params = NULL;
		if (lmd_runner_open(&b, &bo, &err)) {
			lmd_runner_close(&r);
			lmd_out_abort(&o);
			lmd_die(cli.prog, &err);
		}
	}
	int32_t *ids = NULL;
	size_t n = 0;
	struct ppl_result res = {0};
	int rc = read_ids(&r, text, &ids, &n, &err);
	if (!rc) {
		int fit = (int)(n / (size_t)seqlen);
		if (!windows)
			windows = fit;
		if (windows > fit || fit == 0)
			rc = lmd_errorf(&err, LMD_EINVAL, "--windows %d: '%s' holds %zu tokens, %d windows of %d", windows,
					text, n, fit, seqlen);
	}
	if (!rc)
		rc = score(&r, base_dir ? &b : NULL, ids, seqlen, windows, &cli, &res, &err);
	if (!rc) {
		const char *slash = strrchr(text, '/');
		print_result(o.f, fmt, ro.model, slash ? slash + 1 : text, seqlen, base_dir != NULL, &res);
		rc = lmd_out_commit(&o, &err);
	}
	if (rc)
		lmd_out_abort(&o);
	free(ids);
	lmd_runner_close(&b);
	lmd_runner_close(&r);
	if (rc)
		lmd_die(cli.prog, &err);
	return 0;
}
