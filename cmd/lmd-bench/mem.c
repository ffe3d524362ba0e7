/*
 * lmd-bench mem MODEL: the memory a configuration takes — weights, KV pool, workspace, the backend's own
 * buffers and the device context — predicted from the model's files and the options (lmd_runner_predict,
 * the sizing lmd_runner_open does), and, on a backend with device memory (mem_info), measured: the runner
 * opened and warmed up (a session-long prompt beside max_batch - 1 short ones, so that the backend's
 * buffers reach their step sizes), then the backend's accounting and the driver's free memory. Then how
 * many sessions of --session-len tokens fit in --gpu-mem GiB (default: the device's memory; on the CPU,
 * the host's), for this quant policy and, predicted, for each KV format.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "cmd/cli.h"
#include "convert/convert.h"
#include "engine/runner.h"

#include "cmd/opts.h"

enum { O_GPU_MEM = 256, O_FORMAT, O_OUTPUT };

static const struct lmd_opt opts[] = {
	{"gpu-mem", O_GPU_MEM, "GIB", "memory to fit sessions in, GiB (default: the device's; on the CPU the host's)"},
	{"format", 'f', "FMT", "csv (default), md or json"},
	{"output", 'o', "FILE", "write the table to FILE (default: stdout)"},
	LMD_RUNNER_OPTS,
	{0},
};

/* A device context, library handles and workspace as measured on an H200 (CUDA 13, cuBLAS 13): the prediction
 * where the backend has device memory; 0 where it has none. */
#define CONTEXT_MIB 512.0

#define MIB 1048576.0

static const struct lmd_bench_col cols[] = {{"item", 1}, {"predicted", 0}, {"measured", 0}, {"unit", 1}};

struct table {
	char (*v)[LMD_BENCH_CELL];
	int n, cap;
};

/* One row: item, predicted and measured (< 0: none), unit. */
static void add(struct table *t, const char *item, double pred, double meas, const char *unit)
{
	if (t->n == t->cap)
		return;
	char(*r)[LMD_BENCH_CELL] = t->v + (size_t)t->n++ * 4;
	snprintf(r[0], LMD_BENCH_CELL, "%s", item);
	const char *f = strcmp(unit, "MiB") ? "%.0f" : "%.1f";  // counts whole
	snprintf(r[1], LMD_BENCH_CELL, pred < 0 ? "" : f, pred);
	snprintf(r[2], LMD_BENCH_CELL, meas < 0 ? "" : f, meas);
	snprintf(r[3], LMD_BENCH_CELL, "%s", unit);
}

/* Sessions of the predicted block size that fit in mem bytes beside fixed bytes (weights, workspace, context). */
static double sessions(double mem, double fixed, const struct lmd_runner_mem *pm)
{
	double per = (double)pm->session_blocks * (double)pm->block_bytes;
	return mem > fixed ? (double)(long)((mem - fixed) / per) : 0;
}

/*
 * Warm-up on the opened runner: one prompt of session_len - 4 random tokens and max_batch - 1 of 16, each
 * generating 2 tokens, so that the step buffers reach the sizes a full batch and a long prefill need.
 */
static int warm_up(struct lmd_runner *r, const struct lmd_runner_mem *pm, struct lmd_err *err)
{
	int n = pm->max_batch, longp = pm->session_len - 4 > 1 ? pm->session_len - 4 : 1;
	size_t total = (size_t)longp + (size_t)(n - 1) * 16;
	struct lmd_request *req = calloc((size_t)n, sizeof(*req));
	int32_t *ids = malloc(total * sizeof(*ids));
	int rc = !req || !ids ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	for (size_t i = 0; !rc && i < total; i++)
		ids[i] = (int32_t)(3 + (i * 2654435761u) % (uint32_t)(r->m.cfg.vocab - 3));
	size_t off = 0;
	for (int i = 0; !rc && i < n; i++) {
		lmd_sampling_default(&req[i].sampling);
		req[i].sampling.temperature = 0;
		req[i].max_tokens = 2;
		req[i].ignore_eos = 1;
		req[i].prompt = ids + off;
		req[i].nprompt = i ? 16 : longp;
		off += (size_t)req[i].nprompt;
		rc = lmd_sched_submit(&r->s, &req[i], err);
	}
	if (!rc)
		rc = lmd_sched_run(&r->s, err);
	for (int i = 0; !rc && i < n; i++)
		if (req[i].finish == LMD_FINISH_ERROR)
			rc = lmd_errorf(err, LMD_EFAIL, "warm-up: %s", req[i].error);
	for (int i = 0; req && i < n; i++)
		lmd_request_free(&req[i], &r->m);
	free(req);
	free(ids);
	return rc;
}

int lmd_bench_mem(int argc, char **argv)
{
	struct lmd_cli cli = {
		.prog = "lmd-bench mem",
		.synopsis = "MODEL [OPTIONS]",
		.purpose = "Memory of a configuration, predicted and measured, and the sessions that fit.",
		.example = "lmd-bench mem share/models/lmd-tiny --quant-policy 8 --session-len 512 --gpu-mem 1 -f md",
		.opts = opts,
	};
	struct lmd_runner_opts ro = {.dtype = LMD_DTYPE_NONE};
	struct lmd_err err = {0};
	const char *arg, *fmt = "csv", *out = "-";
	double gib = 0;
	int k;
	while ((k = lmd_cli_next(&cli, argc, argv, &arg)) != -1) {
		if (lmd_runner_opt(&ro, &cli, k, arg))
			continue;
		switch (k) {
		case O_GPU_MEM: gib = lmd_cli_double(&cli, "gpu-mem", arg, 1.0 / 1024, 1 << 20); break;
		case 'f':
			if (!lmd_bench_format(arg))
				lmd_usage(&cli, "--format: '%s' is not csv, md or json", arg);
			fmt = arg;
			break;
		case 'o': out = arg; break;
		}
	}
	if (argc - optind != 1)
		lmd_usage(&cli, "expected one MODEL directory");
	ro.model = argv[optind];
	if (ro.kv_params && !ro.quant_policy)
		lmd_usage(&cli, "--kv-params needs --quant-policy 8 or 4");
	struct lmd_out o;
	if (lmd_out_open(&o, out, &err))
		lmd_die(cli.prog, &err);
	struct lmd_modeldir dir;
	if (lmd_model_open_any(&dir, ro.model, &err)) {
		lmd_out_abort(&o);
		lmd_die(cli.prog, &err);
	}
	/* a backend with device memory is measured: the runner opened on it; the others are predicted alone */
	const char *dev = ro.device ? ro.device : getenv("LMD_DEVICE");
	struct lmd_backend be = {0};
	struct lmd_runner r = {0};
	struct lmd_mem_info a = {0}, b = {0};  // after open, after the warm-up
	int rc = lmd_backend_open(&be, dev && *dev ? dev : "auto", NULL, &err), measured = 0;
	if (!rc) {
		measured = be.ops->mem_info != NULL;
		lmd_backend_close(&be);
	}
	struct lmd_runner_mem pm;
	lmd_runner_predict(&dir, &ro, 0, &pm);
	if (!rc && measured && !(rc = lmd_runner_open(&r, &ro, &err)) && !(rc = r.be.ops->mem_info(r.be.ctx, &a, &err)) &&
	    !(rc = warm_up(&r, &pm, &err)))
		rc = r.be.ops->mem_info(r.be.ctx, &b, &err);
	double mem = gib > 0 ? gib * 1073741824.0 : measured ? (double)a.total : (double)lmd_host_mem("MemTotal");
	double ctx = measured ? CONTEXT_MIB * MIB : 0;
	double fixed = (double)pm.weights + (double)pm.workspace + ctx;
	lmd_runner_predict(&dir, &ro, mem > fixed ? (size_t)(mem - fixed) : 0, &pm);
	struct table t = {calloc(16 * 4, LMD_BENCH_CELL), 0, 16};  // rows of 4 cells
	if (!rc && !t.v)
		rc = lmd_errorf(&err, LMD_ENOMEM, "out of memory");
	if (!rc) {
		double w = -1, kv = -1, ws = -1, buf = -1, mctx = -1, used = -1, mses = -1;
		if (measured) {  // the context: what was taken before the backend's first allocation
			w = (double)b.weights, kv = (double)r.kv_bytes, ws = (double)(b.allocated - b.weights - r.kv_bytes);
			buf = (double)b.internal;
			mctx = (double)(b.total - a.free_at_open);
			used = (double)(b.total - b.free);
			mses = sessions(mem, w + ws + buf + mctx, &pm);
		}
		double pkv = (double)pm.kv_blocks * (double)pm.block_bytes;
		add(&t, "weights", pm.weights / MIB, w < 0 ? w : w / MIB, "MiB");
		add(&t, "kv_pool", pkv / MIB, kv < 0 ? kv : kv / MIB, "MiB");
		add(&t, "kv_blocks", pm.kv_blocks, kv < 0 ? kv : (double)r.m.kv.nblocks, "blocks");
		add(&t, "kv_block", pm.block_bytes / MIB, -1, "MiB");
		add(&t, "workspace", pm.workspace / MIB, ws < 0 ? ws : ws / MIB, "MiB");
		add(&t, "backend_buffers", -1, buf < 0 ? buf : buf / MIB, "MiB");
		add(&t, "context", ctx / MIB, mctx < 0 ? mctx : mctx / MIB, "MiB");
		add(&t, "total", (fixed + pkv) / MIB, used < 0 ? used : used / MIB, "MiB");
		add(&t, "memory", mem / MIB, -1, "MiB");
		add(&t, "session_len", pm.session_len, -1, "tokens");
		add(&t, "sessions", sessions(mem, fixed, &pm), mses, "sessions");
		const int qp[3] = {0, 8, 4};
		const char *qn[3] = {"sessions_kv_plain", "sessions_kv_int8", "sessions_kv_int4"};
		for (int i = 0; i < 3; i++) {  // each KV format, predicted
			struct lmd_runner_opts q = ro;
			struct lmd_runner_mem qm;
			q.quant_policy = qp[i];
			lmd_runner_predict(&dir, &q, 0, &qm);
			add(&t, qn[i], sessions(mem, fixed, &qm), -1, "sessions");
		}
		lmd_bench_table(o.f, fmt, cols, 4, (const char(*)[LMD_BENCH_CELL])t.v, t.n);
		rc = lmd_out_commit(&o, &err);
	} else {
		lmd_out_abort(&o);
	}
	free(t.v);
	lmd_runner_close(&r);
	lmd_modeldir_close(&dir);
	if (rc)
		lmd_die(cli.prog, &err);
	return 0;
}
