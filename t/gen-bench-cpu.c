/*
 * gen-bench-cpu: decode and prefill speed of the engine beside a memory-bandwidth roofline measured
 * in the same run. Prints a markdown table on stdout.
 *
 *   gen-bench-cpu [--device cpu|ref] [--threads N] [--dtype fp32|fp16|bf16] [--steps N] [--prefill N] MODEL
 *
 * Decode: 8-token prompts prefilled, then --steps greedy steps (default 128) with 1 and 8 sequences,
 * best of three runs (the machine may be shared).
 * Prefill: one step of --prefill tokens (default 512), logits of the last only, best of 3.
 * Roofline: weight bytes read per step / read bandwidth, for a buffer the size of the weights (what
 * decode streams; it may fit the last-level cache) and for 256 MiB (DRAM).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/backend.h"
#include "cmd/cli.h"
#include "convert/convert.h"
#include "cmd/membw.h"
#include "engine/model.h"
#include "engine/sampler.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die_if(int rc, const char *prog, struct lmd_err *err)
{
	if (rc < 0)
		lmd_die(prog, err);
}

/* tokens/s of steps decode steps over nseq sequences (each prefilled with 8 tokens first). */
static double decode(struct lmd_model *m, int nseq, int steps, float *logits, struct lmd_err *err)
{
	struct lmd_kvseq seq[64] = {0};
	struct lmd_batch b = {0};
	int V = m->cfg.vocab, next[64];
	for (int s = 0; s < nseq; s++) {
		lmd_batch_clear(&b);
		for (int i = 0; i < 8; i++)
			lmd_batch_add(&b, &seq[s], (int32_t)(1 + (i * 37 + s * 11) % (V - 1)), i == 7, err);
		die_if(lmd_model_forward(m, &b, logits, err), "gen-bench-cpu", err);
		next[s] = lmd_argmax(logits, V);
	}
	double t0 = now();
	for (int k = 0; k < steps; k++) {
		lmd_batch_clear(&b);
		for (int s = 0; s < nseq; s++)
			lmd_batch_add(&b, &seq[s], next[s], 1, err);
		die_if(lmd_model_forward(m, &b, logits, err), "gen-bench-cpu", err);
		for (int s = 0; s < nseq; s++)
			next[s] = lmd_argmax(logits + (size_t)s * V, V);
	}
	double dt = now() - t0;
	for (int s = 0; s < nseq; s++)
		lmd_model_seq_release(m, &seq[s]);
	lmd_batch_free(&b);
	return nseq * steps / dt;
}

static double prefill(struct lmd_model *m, int n, float *logits, struct lmd_err *err)
{
	double best = 1e30;
	for (int rep = 0; rep < 3; rep++) {
		struct lmd_kvseq s = {0};
		struct lmd_batch b = {0};
		for (int i = 0; i < n; i++)
			lmd_batch_add(&b, &s, (int32_t)(1 + (i * 131) % (m->cfg.vocab - 1)), i == n - 1, err);
		double t0 = now();
		die_if(lmd_model_forward(m, &b, logits, err), "gen-bench-cpu", err);
		double dt = now() - t0;
		best = dt < best ? dt : best;
		lmd_model_seq_release(m, &s);
		lmd_batch_free(&b);
	}
	return best;
}

int main(int argc, char **argv)
{
	static const struct lmd_opt opts[] = {
		{"device", 256, "NAME", "backend: cpu (default) or ref"},
		{"threads", 't', "N", "threads (default: all cores)"},
		{"dtype", 257, "TYPE", "compute dtype fp32, fp16 or bf16 (default: the weights')"},
		{"steps", 258, "N", "decode steps (default 128)"},
		{"prefill", 259, "N", "prefill tokens (default 512)"},
		{0},
	};
	struct lmd_cli cli = {.prog = "gen-bench-cpu", .synopsis = "[OPTIONS] MODEL",
			      .purpose = "Measure decode and prefill speed beside a roofline.", .opts = opts};
	const char *arg, *device = "cpu";
	int threads = 0, steps = 128, npre = 512, k;
	enum lmd_dtype dt = LMD_DTYPE_NONE;
	while ((k = lmd_cli_next(&cli, argc, argv, &arg)) != -1)
		switch (k) {
		case 256: device = arg; break;
		case 't': threads = (int)lmd_cli_long(&cli, "--threads", arg, 0, 1024); break;
		case 257:
			if ((dt = lmd_dtype_parse(arg)) == LMD_DTYPE_NONE)
				lmd_usage(&cli, "unknown dtype '%s'", arg);
			break;
		case 258: steps = (int)lmd_cli_long(&cli, "--steps", arg, 1, 1 << 20); break;
		case 259: npre = (int)lmd_cli_long(&cli, "--prefill", arg, 1, 1 << 16); break;
		}
	if (optind != argc - 1)
		lmd_usage(&cli, "expected one MODEL");
	struct lmd_err err = {0};
	struct lmd_modeldir dir = {0};
	struct lmd_backend be = {0};
	struct lmd_model m = {0};
	die_if(lmd_model_open_any(&dir, argv[optind], &err), cli.prog, &err);
	die_if(lmd_backend_open(&be, device, &(struct lmd_backend_opts){.threads = threads}, &err), cli.prog, &err);
	struct lmd_model_opts mo = {.dtype = dt, .max_tokens = npre > 64 ? npre : 64, .max_seqs = 64,
				    .session_len = npre + steps + 16 > 512 ? npre + steps + 16 : 512};
	mo.kv_blocks = 16 * ((mo.session_len + 63) / 64);
	die_if(lmd_model_open(&m, &be, &dir, &mo, &err), cli.prog, &err);
	float *logits = malloc((size_t)64 * m.cfg.vocab * sizeof(float));

	size_t wbytes = m.weight_bytes;
	int nth = threads > 0 ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
	double bw_ws = lmd_membw(nth, wbytes), bw_dram = lmd_membw(nth, (size_t)256 << 20);
	/* Bytes read per decode step: every weight except the embedding table (only a few rows of it) */
	size_t emb = (size_t)lmd_tensor_nbytes(&m.tok_embeddings);
	size_t step_bytes = wbytes - (m.cfg.tie_embeddings ? 0 : emb);

	double d1 = 0, d8 = 0;  // best of three: the machine may be shared
	for (int rep = 0; rep < 3; rep++) {
		double a = decode(&m, 1, steps, logits, &err), b = decode(&m, 8, steps, logits, &err);
		d1 = a > d1 ? a : d1;
		d8 = b > d8 ? b : d8;
	}
	double pf = prefill(&m, npre, logits, &err);

	printf("| item | value |\n|---|---|\n");
	printf("| model | %s (%s weights, %.1f MB) |\n", argv[optind], lmd_dtype_short(m.cfg.dtype), wbytes / 1e6);
	printf("| backend | %s%s%s, %d threads, compute %s |\n", device, lmd_backend_cpu_isa(&be) ? "/" : "",
	       lmd_backend_cpu_isa(&be) ? lmd_backend_cpu_isa(&be) : "", nth, lmd_dtype_short(m.dtype));
	printf("| read bandwidth, %.1f MB buffer (weights' size) | %.1f GB/s |\n", wbytes / 1e6, bw_ws / 1e9);
	printf("| read bandwidth, 256 MiB buffer (DRAM) | %.1f GB/s |\n", bw_dram / 1e9);
	printf("| bytes read per decode step (weights less the embedding table) | %.1f MB |\n", step_bytes / 1e6);
	printf("| roofline, weights' size bandwidth | %.0f tok/s |\n", bw_ws / step_bytes);
	printf("| roofline, DRAM bandwidth | %.0f tok/s |\n", bw_dram / step_bytes);
	printf("| decode batch 1 | %.1f tok/s (%.0f%% of the weights'-size roofline, %.0f%% of DRAM's) |\n", d1,
	       100 * d1 / (bw_ws / step_bytes), 100 * d1 / (bw_dram / step_bytes));
	printf("| decode batch 8 | %.1f tok/s (%.2fx batch 1) |\n", d8, d8 / d1);
	printf("| prefill %d tokens | %.3f s (%.0f tok/s) |\n", npre, pf, npre / pf);
	free(logits);
	lmd_model_close(&m);
	lmd_backend_close(&be);
	lmd_modeldir_close(&dir);
	return 0;
}
