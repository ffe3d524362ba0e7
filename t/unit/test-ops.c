/*
 * Every backend op against the CPU reference ("ref" backend, ops-cpu.c), on fresh random inputs
 * with poisoned outputs, NMSE per op and dtype (aesthetics C11). The backends under test: "cpu"
 * with each instruction set this machine has (LMD_CPU_ISA c, avx2, avx512), and "cuda" when a GPU
 * is there (skipped otherwise). Everything goes through upload/download, so any backend fits.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "cuda.h"
#include "engine/kvcache.h"
#include "engine/ops-cpu.h"
#include "unit.h"

static uint64_t rng = 88172645463325252ull;

static float frand(void)  // uniform in [-1, 1)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)((rng >> 11) * 0x1.0p-53 * 2 - 1);
}

static const char *what;  // the backend and ISA under test, for messages
/* matmul_q4 on cuda from Q4_BLAS_ROWS rows without deterministic: W dequantized to x's dtype through cuBLAS at
 * the product's shape, so neither batch-invariant nor exact to f32 outputs */
static int q4_blas;
/* matmul_q4 on cuda of 33 to 95 rows without deterministic: K's ranges (q4_splits) depend on the batch, so the
 * rows' sums are rounded in another order alone than among more rows (not batch-invariant; as exact as the others) */
static int q4_split;

/* A tensor made on both backends with the same contents. */
struct pair {
	struct lmd_tensor t, r;  // on the backend under test, on ref
	size_t bytes;
};

static void make(struct lmd_backend *be, struct lmd_backend *ref, struct pair *p, enum lmd_dtype dt, int ndim,
		 const int64_t *shape, float scale)
{
	struct lmd_err err = {0};
	memset(p, 0, sizeof(*p));
	p->t.dtype = p->r.dtype = dt;
	p->t.ndim = p->r.ndim = ndim;
	memcpy(p->t.shape, shape, (size_t)ndim * sizeof(int64_t));
	memcpy(p->r.shape, shape, (size_t)ndim * sizeof(int64_t));
	if (be->ops->alloc(be->ctx, &p->t, &err) || ref->ops->alloc(ref->ctx, &p->r, &err))
		LMD_BUG("alloc: %s", err.msg);
	size_t n = (size_t)lmd_tensor_numel(&p->t);
	p->bytes = lmd_tensor_nbytes(&p->t);
	float *f = malloc(n * sizeof(float));
	void *h = malloc(p->bytes);
	for (size_t i = 0; i < n; i++)
		f[i] = frand() * scale;
	lmd_cpu_store(h, dt, f, n);
	be->ops->upload(be->ctx, &p->t, 0, h, p->bytes, &err);
	ref->ops->upload(ref->ctx, &p->r, 0, h, p->bytes, &err);
	free(f);
	free(h);
}

static void poison(struct lmd_backend *be, struct pair *p)
{
	struct lmd_err err = {0};
	void *h = malloc(p->bytes);
	memset(h, 0xff, p->bytes);  // NaN in every float type
	be->ops->upload(be->ctx, &p->t, 0, h, p->bytes, &err);
	free(h);
}

static void drop(struct lmd_backend *be, struct lmd_backend *ref, struct pair *p)
{
	be->ops->release(be->ctx, &p->t);
	ref->ops->release(ref->ctx, &p->r);
}

/* NMSE of the backend's p against ref's, both read back as fp32; fails above tol. */
static void compare(struct lmd_backend *be, struct lmd_backend *ref, struct pair *p, double tol, const char *op)
{
	struct lmd_err err = {0};
	size_t n = (size_t)lmd_tensor_numel(&p->t);
	void *a = malloc(p->bytes), *b = malloc(p->bytes);
	float *fa = malloc(n * sizeof(float)), *fb = malloc(n * sizeof(float));
	be->ops->sync(be->ctx, &err);
	be->ops->download(be->ctx, a, &p->t, 0, p->bytes, &err);
	ref->ops->download(ref->ctx, b, &p->r, 0, p->bytes, &err);
	lmd_cpu_load(fa, a, p->t.dtype, n);
	lmd_cpu_load(fb, b, p->t.dtype, n);
	double num = 0, den = 0, worst = -1;
	size_t wi = 0;
	for (size_t i = 0; i < n; i++) {
		double d = (double)fa[i] - fb[i];
		num += d * d;
		den += (double)fb[i] * fb[i];
		if (!(fabs(d) <= worst)) {
			worst = isnan(d) ? INFINITY : fabs(d);
			wi = i;
		}
	}
	double e = den > 0 ? num / den : num;
	if (!(e <= tol)) {
		unit_failures++;
		fprintf(stderr, "%s %s %s: NMSE %.3g > %.3g; worst at %zu: %g vs %g; first: ", what, op,
			lmd_dtype_short(p->t.dtype), e, tol, wi, fa[wi], fb[wi]);
		for (size_t i = 0; i < n && i < 5; i++)
			fprintf(stderr, "%g/%g ", fa[i], fb[i]);
		fprintf(stderr, "\n");
	}
	free(a);
	free(b);
	free(fa);
	free(fb);
}

static double tol_of(enum lmd_dtype dt)
{
	return dt == LMD_F32 ? 1e-10 : dt == LMD_F16 ? 1e-6 : 1e-4;
}

#define BOTH(call_t, call_r) do { \
	struct lmd_err e1 = {0}, e2 = {0}; \
	CHECK_EQ_INT(call_t, 0); \
	CHECK_EQ_INT(call_r, 0); \
	(void)e1, (void)e2; } while (0)

// ----------------------------------------------------------------------------

static void test_rowwise(struct lmd_backend *be, struct lmd_backend *ref, enum lmd_dtype dt, int n, int hidden)
{
	const struct lmd_backend_ops *o = be->ops, *q = ref->ops;
	struct pair x, r, y, g, gu, h;
	enum lmd_dtype gdt[3] = {LMD_F32, LMD_F16, LMD_BF16};
	make(be, ref, &x, dt, 2, (int64_t[]){n, hidden}, 3);
	make(be, ref, &r, dt, 2, (int64_t[]){n, hidden}, 1);
	make(be, ref, &y, dt, 2, (int64_t[]){n, hidden}, 1);
	make(be, ref, &g, gdt[n % 3], 1, (int64_t[]){hidden}, 1);
	poison(be, &y);
	BOTH(o->rmsnorm(be->ctx, &y.t, &x.t, &g.t, 1e-5f, &e1), q->rmsnorm(ref->ctx, &y.r, &x.r, &g.r, 1e-5f, &e2));
	compare(be, ref, &y, tol_of(dt), "rmsnorm");
	poison(be, &y);
	BOTH(o->add_rmsnorm(be->ctx, &y.t, &x.t, &r.t, &g.t, 1e-6f, &e1),
	     q->add_rmsnorm(ref->ctx, &y.r, &x.r, &r.r, &g.r, 1e-6f, &e2));
	compare(be, ref, &y, tol_of(dt), "add_rmsnorm y");
	compare(be, ref, &x, tol_of(dt), "add_rmsnorm x");
	make(be, ref, &gu, dt, 2, (int64_t[]){n, 2 * hidden}, 4);
	make(be, ref, &h, dt, 2, (int64_t[]){n, hidden}, 1);
	poison(be, &h);
	BOTH(o->silu_mul(be->ctx, &h.t, &gu.t, &e1), q->silu_mul(ref->ctx, &h.r, &gu.r, &e2));
	compare(be, ref, &h, tol_of(dt), "silu_mul");
	struct pair *all[] = {&x, &r, &y, &g, &gu, &h};
	for (int i = 0; i < 6; i++)
		drop(be, ref, all[i]);
}

static void test_matmul(struct lmd_backend *be, struct lmd_backend *ref, enum lmd_dtype dt, enum lmd_dtype wt,
			enum lmd_dtype yt, int n, int in, int out, int bias)
{
	struct pair x, w, b, y;
	make(be, ref, &x, dt, 2, (int64_t[]){n, in}, 1);
	make(be, ref, &w, wt, 2, (int64_t[]){out, in}, 0.2f);
	make(be, ref, &b, wt, 1, (int64_t[]){out}, 1);
	make(be, ref, &y, yt, 2, (int64_t[]){n, out}, 1);
	poison(be, &y);
	BOTH(be->ops->matmul(be->ctx, &y.t, &x.t, &w.t, bias ? &b.t : NULL, &e1),
	     ref->ops->matmul(ref->ctx, &y.r, &x.r, &w.r, bias ? &b.r : NULL, &e2));
	char name[64];
	snprintf(name, sizeof(name), "matmul n%d in%d out%d w%s%s", n, in, out, lmd_dtype_short(wt), bias ? " bias" : "");
	compare(be, ref, &y, tol_of(yt), name);
	struct pair *all[] = {&x, &w, &b, &y};
	for (int i = 0; i < 4; i++)
		drop(be, ref, all[i]);
}

/* An int4 weight [N, K] in groups of G (q4.h) on both backends, through weight_q4 where the backend has it. */
struct q4pair {
	struct lmd_tensor t[3], r[3];
	void *host[3];  // q4.h's layout: ref's weights point into it
};

static void q4_make(struct lmd_backend *be, struct lmd_backend *ref, struct q4pair *p, int N, int K, int G)
{
	struct lmd_err err = {0};
	size_t ng = (size_t)N * (K / G);
	uint8_t *q = malloc((size_t)N * K / 2), *z = malloc(ng);
	uint16_t *sc = malloc(ng * 2);
	for (size_t i = 0; i < (size_t)N * K / 2; i++)
		q[i] = (uint8_t)(rng = rng * 6364136223846793005ull + 1442695040888963407ull, rng >> 56);
	for (size_t i = 0; i < ng; i++) {
		float f = (frand() * 0.5f + 1) / (8 * sqrtf((float)K));
		lmd_cpu_store(&sc[i], LMD_F16, &f, 1);
		z[i] = (uint8_t)((frand() + 1) * 8) & 15;
	}
	struct lmd_tensor src[3] = {{LMD_U8, 2, {N, K / 2}, q}, {LMD_F16, 2, {N, K / G}, sc}, {LMD_U8, 2, {N, K / G}, z}};
	p->host[0] = q, p->host[1] = sc, p->host[2] = z;
	for (int i = 0; i < 3; i++)
		if (ref->ops->weight(ref->ctx, &p->r[i], &src[i], &err) ||
		    (!be->ops->weight_q4 && be->ops->weight(be->ctx, &p->t[i], &src[i], &err)))
			LMD_BUG("weight: %s", err.msg);
	if (be->ops->weight_q4 && be->ops->weight_q4(be->ctx, &p->t[0], &p->t[1], &p->t[2], &src[0], &src[1], &src[2], G, &err))
		LMD_BUG("weight_q4: %s", err.msg);
}

static void q4_drop(struct lmd_backend *be, struct lmd_backend *ref, struct q4pair *p)
{
	for (int i = 0; i < 3; i++) {
		be->ops->release(be->ctx, &p->t[i]);
		ref->ops->release(ref->ctx, &p->r[i]);  // frees the host copy when ref's weights point into it
		if (!ref->ops->weights_in_place)
			free(p->host[i]);
	}
}

#define Q4_T(be, p, y, x, G, b, e) (be)->ops->matmul_q4((be)->ctx, y, x, &(p)->t[0], &(p)->t[1], &(p)->t[2], G, b, e)
#define Q4_R(ref, p, y, x, G, b, e) (ref)->ops->matmul_q4((ref)->ctx, y, x, &(p)->r[0], &(p)->r[1], &(p)->r[2], G, b, e)

/*
 * matmul_q4 against the reference; on a backend with its own int4 layout (weight_q4: cuda) also batch
 * invariance: the first R rows alone give the bits they have among n.
 */
static void test_matmul_q4(struct lmd_backend *be, struct lmd_backend *ref, enum lmd_dtype dt, enum lmd_dtype yt, int n,
			   int K, int N, int G, int bias)
{
	struct lmd_err err = {0};
	struct q4pair w;
	struct pair x, b, y;
	CHECK_EQ_INT(be->ops->sync(be->ctx, &err), 0);  // no step: the rows are unrelated
	q4_make(be, ref, &w, N, K, G);
	make(be, ref, &x, dt, 2, (int64_t[]){n, K}, 1);
	make(be, ref, &b, dt, 1, (int64_t[]){N}, 1);
	make(be, ref, &y, yt, 2, (int64_t[]){n, N}, 1);
	poison(be, &y);
	struct lmd_tensor *bt = bias ? &b.t : NULL, *br = bias ? &b.r : NULL;
	BOTH(Q4_T(be, &w, &y.t, &x.t, G, bt, &e1), Q4_R(ref, &w, &y.r, &x.r, G, br, &e2));
	char name[80];
	snprintf(name, sizeof(name), "matmul_q4 n%d in%d out%d g%d%s", n, K, N, G, bias ? " bias" : "");
	compare(be, ref, &y, tol_of(q4_blas ? dt : yt), name);
	if (be->ops->weight_q4 && !q4_blas && !q4_split) {
		size_t rowy = (size_t)N * lmd_dtype_size(yt);
		char *all = malloc(y.bytes), *part = malloc(y.bytes);
		be->ops->download(be->ctx, all, &y.t, 0, y.bytes, &err);
		int rs[] = {1, 3, 8, 16, 17, 33, 64, 65};
		for (size_t i = 0; i < sizeof(rs) / sizeof(rs[0]) && rs[i] < n; i++) {
			struct lmd_tensor xv = x.t, yv = y.t;
			xv.shape[0] = yv.shape[0] = rs[i];
			poison(be, &y);
			CHECK_EQ_INT(Q4_T(be, &w, &yv, &xv, G, bt, &err), 0);
			be->ops->download(be->ctx, part, &y.t, 0, (size_t)rs[i] * rowy, &err);
			if (memcmp(part, all, (size_t)rs[i] * rowy)) {
				unit_failures++;
				fprintf(stderr, "%s %s: %d rows alone differ from the same rows among %d\n", what, name, rs[i], n);
			}
		}
		free(all), free(part);
	}
	q4_drop(be, ref, &w);
	struct pair *ps[] = {&x, &b, &y};
	for (int i = 0; i < 3; i++)
		drop(be, ref, ps[i]);
}

/*
 * gate_up against the reference, and bit for bit against the backend's own product then silu_mul (the op may
 * fuse the two: CUDA does unless LMD_CUDA_GU=0). G = 0: a 16-bit weight of x's dtype, else int4 in groups of G.
 */
static void test_gate_up(struct lmd_backend *be, struct lmd_backend *ref, enum lmd_dtype dt, int n, int K, int I, int G)
{
	struct lmd_err err = {0};
	struct pair x, w, y, y2, gu;
	struct q4pair q;
	CHECK_EQ_INT(be->ops->sync(be->ctx, &err), 0);  // no step: the rows are unrelated
	make(be, ref, &x, dt, 2, (int64_t[]){n, K}, 1);
	if (G)
		q4_make(be, ref, &q, 2 * I, K, G);
	else
		make(be, ref, &w, dt, 2, (int64_t[]){2 * I, K}, 0.2f);
	make(be, ref, &y, dt, 2, (int64_t[]){n, I}, 1);
	make(be, ref, &y2, dt, 2, (int64_t[]){n, I}, 1);
	make(be, ref, &gu, dt, 2, (int64_t[]){n, 2 * I}, 1);
	poison(be, &y);
	poison(be, &y2);
	BOTH(be->ops->gate_up(be->ctx, &y.t, &gu.t, &x.t, G ? &q.t[0] : &w.t, G ? &q.t[1] : NULL, G ? &q.t[2] : NULL, G, &e1),
	     ref->ops->gate_up(ref->ctx, &y.r, &gu.r, &x.r, G ? &q.r[0] : &w.r, G ? &q.r[1] : NULL, G ? &q.r[2] : NULL, G,
			       &e2));
	char name[80];
	snprintf(name, sizeof(name), "gate_up n%d in%d inter%d %s%d", n, K, I, G ? "int4 g" : "16-bit", G);
	compare(be, ref, &y, tol_of(dt), name);
	CHECK_EQ_INT(G ? Q4_T(be, &q, &gu.t, &x.t, G, NULL, &err) : be->ops->matmul(be->ctx, &gu.t, &x.t, &w.t, NULL, &err), 0);
	CHECK_EQ_INT(be->ops->silu_mul(be->ctx, &y2.t, &gu.t, &err), 0);
	char *a = malloc(y.bytes), *b = malloc(y.bytes);
	be->ops->download(be->ctx, a, &y.t, 0, y.bytes, &err);
	be->ops->download(be->ctx, b, &y2.t, 0, y.bytes, &err);
	if (memcmp(a, b, y.bytes)) {
		unit_failures++;
		fprintf(stderr, "%s %s: not the bits of the product then silu_mul\n", what, name);
	}
	free(a), free(b);
	if (G)
		q4_drop(be, ref, &q);
	else
		drop(be, ref, &w);
	struct pair *ps[] = {&x, &y, &y2, &gu};
	for (int i = 0; i < 4; i++)
		drop(be, ref, ps[i]);
}

/*
 * matmul_q4 in a step whose rows are decodes around a 100-token prefill run (cuda: the run through the
 * dequantized weight): the numbers against the reference, and the decodes' bits against the same rows
 * with no step.
 */
static void test_matmul_q4_runs(struct lmd_backend *be, struct lmd_backend *ref, enum lmd_dtype dt, int K, int N, int G)
{
	enum { RUN = 100, B = 3, A = 2, n = B + RUN + A };
	struct lmd_err err = {0};
	struct q4pair w;
	struct pair x, y;
	CHECK_EQ_INT(be->ops->sync(be->ctx, &err), 0);
	q4_make(be, ref, &w, N, K, G);
	make(be, ref, &x, dt, 2, (int64_t[]){n, K}, 1);
	make(be, ref, &y, dt, 2, (int64_t[]){n, N}, 1);
	size_t rowy = (size_t)N * lmd_dtype_size(dt);
	char *alone = malloc(y.bytes), *got = malloc(y.bytes);
	poison(be, &y);
	CHECK_EQ_INT(Q4_T(be, &w, &y.t, &x.t, G, NULL, &err), 0);
	be->ops->download(be->ctx, alone, &y.t, 0, y.bytes, &err);
	int32_t tok[n] = {0}, pos[n], seq[n], table[8] = {0};
	float freq[8] = {0};
	for (int i = 0; i < n; i++) {
		int in_run = i >= B && i < B + RUN;
		seq[i] = in_run ? 0 : i < B ? i + 1 : i - RUN + 1;
		pos[i] = in_run ? i - B : 7;
	}
	struct lmd_step st = {.n = n, .tokens = tok, .pos = pos, .seq = seq, .nseq = B + A + 1, .block_table = table,
			      .max_blocks = 1, .rot_half = 1, .inv_freq = freq};
	CHECK_EQ_INT(be->ops->step_begin(be->ctx, &st, &err), 0);
	poison(be, &y);
	BOTH(Q4_T(be, &w, &y.t, &x.t, G, NULL, &e1), Q4_R(ref, &w, &y.r, &x.r, G, NULL, &e2));
	be->ops->download(be->ctx, got, &y.t, 0, y.bytes, &err);
	char name[80];
	snprintf(name, sizeof(name), "matmul_q4 in%d out%d g%d, a step with a prefill run", K, N, G);
	compare(be, ref, &y, tol_of(dt), name);
	if (be->ops->weight_q4 && (memcmp(got, alone, B * rowy) || memcmp(got + (B + RUN) * rowy, alone + (B + RUN) * rowy, A * rowy))) {
		unit_failures++;
		fprintf(stderr, "%s %s: the decode rows differ from the same rows with no step\n", what, name);
	}
	CHECK_EQ_INT(be->ops->sync(be->ctx, &err), 0);
	free(alone), free(got);
	q4_drop(be, ref, &w);
	drop(be, ref, &x);
	drop(be, ref, &y);
}

/*
 * A mixed step: sequence 0 prefills positions 0..n0-1, sequence 1 continues a cached prefix with
 * a chunk at positions far/2.., sequence 2 decodes position far. Rope, kv_store, attention,
 * embed and gather_rows are checked on it.
 */
/* Bytes of a backend's tensor against ref's, exactly. */
static void compare_bytes(struct lmd_backend *be, struct lmd_backend *ref, struct pair *p, const char *op)
{
	struct lmd_err err = {0};
	char *a = malloc(p->bytes), *b = malloc(p->bytes);
	be->ops->sync(be->ctx, &err);
	be->ops->download(be->ctx, a, &p->t, 0, p->bytes, &err);
	ref->ops->download(ref->ctx, b, &p->r, 0, p->bytes, &err);
	if (memcmp(a, b, p->bytes)) {
		size_t i = 0;
		while (a[i] == b[i])
			i++;
		unit_failures++;
		fprintf(stderr, "%s %s: byte %zu of %zu differs (%d vs %d)\n", what, op, i, p->bytes, (uint8_t)a[i], (uint8_t)b[i]);
	}
	free(a), free(b);
}

/*
 * A quantized cache's pool (quant 8 or 4; offline: fixed parameters) filled with the same random codes and
 * (scale, zero) pairs on both backends (on be alone when kr's pool is not allocated).
 */
static void fill_quant_cache(struct lmd_backend *be, struct lmd_backend *ref, struct lmd_kvcache *kt,
			     struct lmd_kvcache *kr)
{
	struct lmd_err err = {0};
	for (int w = 0; w < 2; w++) {
		struct lmd_tensor *t = w ? &kt->v[0] : &kt->k[0], *tq = w ? &kt->vq[0] : &kt->kq[0];
		size_t n = lmd_tensor_nbytes(t), nq = (size_t)lmd_tensor_numel(tq), qb = lmd_tensor_nbytes(tq);
		uint8_t *b = malloc(n), *h = malloc(qb);
		float *f = malloc(nq * sizeof(float));
		for (size_t i = 0; i < n; i++)
			b[i] = (uint8_t)(frand() * 128 + 128);
		for (size_t i = 0; i < nq; i += 2)
			f[i] = (frand() + 1.5f) * 0.01f, f[i + 1] = frand();
		lmd_cpu_store(h, tq->dtype, f, nq);  // scale and zero in the cache's dtype
		be->ops->upload(be->ctx, t, 0, b, n, &err);
		be->ops->upload(be->ctx, tq, 0, h, qb, &err);
		if (kr) {
			ref->ops->upload(ref->ctx, w ? &kr->v[0] : &kr->k[0], 0, b, n, &err);
			ref->ops->upload(ref->ctx, w ? &kr->vq[0] : &kr->kq[0], 0, h, qb, &err);
		}
		free(b), free(h), free(f);
	}
}

static void test_step(struct lmd_backend *be, struct lmd_backend *ref, enum lmd_dtype dt, int H, int KV, int D,
		      int bl, int far, enum lmd_kv_quant quant, int offline)
{
	struct lmd_err err = {0};
	int n0 = 9, n1 = 5, n = n0 + n1 + 1, nseq = 3, half = D / 2, vocab = 50, hidden = 24;
	int32_t tokens[16], pos[16], seq[16], out_rows[3] = {n0 - 1, n0 + n1 - 1, n - 1};
	for (int i = 0; i < n; i++) {
		tokens[i] = (i * 7) % vocab;
		seq[i] = i < n0 ? 0 : i < n0 + n1 ? 1 : 2;
		pos[i] = i < n0 ? i : i < n0 + n1 ? far / 2 + i - n0 : far;
	}
	int max_blocks = (far + 1 + bl - 1) / bl, nblocks = 3 * max_blocks + 1;
	int32_t *table = malloc((size_t)nseq * max_blocks * sizeof(int32_t));
	for (int i = 0; i < nseq * max_blocks; i++)  // out of order, every block used once
		table[i] = nblocks - 1 - i;
	float *freq = malloc((size_t)nseq * half * sizeof(float));
	for (int s = 0; s < nseq; s++)
		for (int j = 0; j < half; j++)
			freq[s * half + j] = (float)pow(10000.0 + 1000.0 * s, -2.0 * j / D);
	struct lmd_step st = {.n = n, .tokens = tokens, .pos = pos, .seq = seq, .nseq = nseq, .block_table = table,
			      .max_blocks = max_blocks, .rot_half = half, .inv_freq = freq, .nout = 3, .out_rows = out_rows};
	CHECK_EQ_INT(be->ops->step_begin(be->ctx, &st, &err), 0);
	CHECK_EQ_INT(ref->ops->step_begin(ref->ctx, &st, &err), 0);
	struct lmd_attn_dims d = {H, KV, D, (float)(1 / sqrt(D))};

	struct pair table_e, emb, qkv, att, lo;
	make(be, ref, &table_e, n % 2 ? LMD_F16 : LMD_BF16, 2, (int64_t[]){vocab, hidden}, 1);
	make(be, ref, &emb, dt, 2, (int64_t[]){n, hidden}, 1);
	poison(be, &emb);
	BOTH(be->ops->embed(be->ctx, &emb.t, &table_e.t, &e1), ref->ops->embed(ref->ctx, &emb.r, &table_e.r, &e2));
	compare(be, ref, &emb, 0, "embed");
	make(be, ref, &lo, dt, 2, (int64_t[]){2, hidden}, 1);
	poison(be, &lo);
	BOTH(be->ops->gather_rows(be->ctx, &lo.t, &emb.t, 1, &e1), ref->ops->gather_rows(ref->ctx, &lo.r, &emb.r, 1, &e2));
	compare(be, ref, &lo, 0, "gather_rows");

	static int steps;  // every other step: rope and kv_store as one op
	int fused = steps++ % 2;
	make(be, ref, &qkv, dt, 2, (int64_t[]){n, (int64_t)(H + 2 * KV) * D}, 2);
	if (!fused) {
		BOTH(be->ops->rope(be->ctx, &qkv.t, &d, &e1), ref->ops->rope(ref->ctx, &qkv.r, &d, &e2));
		compare(be, ref, &qkv, tol_of(dt), "rope");
	}

	/* Two caches with the same random contents (the cached prefixes), then this step's tokens. */
	struct lmd_kvcache kt = {0}, kr = {0};
	CHECK_EQ_INT(lmd_kvcache_init(&kt, be, 1, KV, D, bl, nblocks, dt, &err), 0);
	CHECK_EQ_INT(lmd_kvcache_init(&kr, ref, 1, KV, D, bl, nblocks, dt, &err), 0);
	if (quant) {
		float *params = malloc((size_t)2 * KV * 2 * sizeof(float));
		for (int i = 0; i < 2 * KV; i++)
			params[2 * i] = (frand() + 1.5f) * 0.02f, params[2 * i + 1] = frand();
		CHECK_EQ_INT(lmd_kvcache_set_quant(&kt, quant, offline ? params : NULL, &err), 0);
		CHECK_EQ_INT(lmd_kvcache_set_quant(&kr, quant, offline ? params : NULL, &err), 0);
		free(params);
	}
	struct pair kp = {.t = kt.k[0], .r = kr.k[0], .bytes = lmd_tensor_nbytes(&kt.k[0])};
	struct pair vp = {.t = kt.v[0], .r = kr.v[0], .bytes = kp.bytes};
	if (quant) {
		fill_quant_cache(be, ref, &kt, &kr);
	} else {
		size_t cnt = (size_t)lmd_tensor_numel(&kt.k[0]);
		float *f = malloc(cnt * sizeof(float));
		void *hb = malloc(kp.bytes);
		for (int w = 0; w < 2; w++) {
			for (size_t i = 0; i < cnt; i++)
				f[i] = frand() * 2;
			lmd_cpu_store(hb, dt, f, cnt);
			be->ops->upload(be->ctx, w ? &kt.v[0] : &kt.k[0], 0, hb, kp.bytes, &err);
			ref->ops->upload(ref->ctx, w ? &kr.v[0] : &kr.k[0], 0, hb, kp.bytes, &err);
		}
		free(f);
		free(hb);
	}
	if (fused) {
		BOTH(be->ops->rope_kv_store(be->ctx, &qkv.t, &kt, 0, &d, &e1),
		     ref->ops->rope_kv_store(ref->ctx, &qkv.r, &kr, 0, &d, &e2));
		compare(be, ref, &qkv, tol_of(dt), "rope_kv_store (qkv)");
	} else
		BOTH(be->ops->kv_store(be->ctx, &kt, 0, &qkv.t, &d, &e1), ref->ops->kv_store(ref->ctx, &kr, 0, &qkv.r, &d, &e2));
	if (quant) {  // the codes and parameters bit for bit (the same float operations in the same order)
		struct pair kq = {.t = kt.kq[0], .r = kr.kq[0], .bytes = lmd_tensor_nbytes(&kt.kq[0])};
		struct pair vq = {.t = kt.vq[0], .r = kr.vq[0], .bytes = kq.bytes};
		compare_bytes(be, ref, &kp, "kv_store k (quantized)");
		compare_bytes(be, ref, &vp, "kv_store v (quantized)");
		compare_bytes(be, ref, &kq, "kv_store k scales and zeros");
		compare_bytes(be, ref, &vq, "kv_store v scales and zeros");
	} else {
		compare(be, ref, &kp, 0, "kv_store k");
		compare(be, ref, &vp, 0, "kv_store v");
	}
	make(be, ref, &att, dt, 2, (int64_t[]){n, (int64_t)H * D}, 1);
	poison(be, &att);
	BOTH(be->ops->attention(be->ctx, &att.t, &qkv.t, &kt, 0, &d, &e1),
	     ref->ops->attention(ref->ctx, &att.r, &qkv.r, &kr, 0, &d, &e2));
	char name[64];
	snprintf(name, sizeof(name), "attention H%d KV%d D%d block %d far %d kv %s%s", H, KV, D, bl, far,
		 quant == LMD_KV_INT8 ? "int8" : quant == LMD_KV_INT4 ? "int4" : "plain", offline ? " offline" : "");
	compare(be, ref, &att, tol_of(dt), name);
	lmd_kvcache_free(&kt);
	lmd_kvcache_free(&kr);
	struct pair *all[] = {&table_e, &emb, &qkv, &att, &lo};
	for (int i = 0; i < 5; i++)
		drop(be, ref, all[i]);
	free(table);
	free(freq);
}


// ----------------------------------------------------------------------------
// GPU-sized shapes (cuda only): the GEMV and cuBLAS paths at Llama-2-7B shapes, attention over long
// cached contexts (the split-K path) and a long prefill (multi-token work items), plus timings.

#include <time.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Seconds per call of f over reps calls, after one warm-up, synchronized at both ends. */
#define TIME_IT(be, reps, secs, call) do { struct lmd_err te_ = {0}; call; (be)->ops->sync((be)->ctx, &te_); \
	double t0_ = now_s(); for (int r_ = 0; r_ < (reps); r_++) { call; } (be)->ops->sync((be)->ctx, &te_); \
	secs = (now_s() - t0_) / (reps); } while (0)

static void test_big_matmul(struct lmd_backend *be, struct lmd_backend *ref, int n, int in, int out, int check)
{
	struct pair x, w, y;
	make(be, ref, &x, LMD_F16, 2, (int64_t[]){n, in}, 1);
	make(be, ref, &w, LMD_F16, 2, (int64_t[]){out, in}, (float)(1 / sqrt(in)));
	make(be, ref, &y, LMD_F16, 2, (int64_t[]){n, out}, 1);
	poison(be, &y);
	struct lmd_err err = {0};
	CHECK_EQ_INT(be->ops->matmul(be->ctx, &y.t, &x.t, &w.t, NULL, &err), 0);
	char name[64];
	snprintf(name, sizeof(name), "matmul n%d in%d out%d", n, in, out);
	if (check) {
		CHECK_EQ_INT(ref->ops->matmul(ref->ctx, &y.r, &x.r, &w.r, NULL, &err), 0);
		compare(be, ref, &y, 1e-6, name);
	}
	double secs;
	TIME_IT(be, 50, secs, be->ops->matmul(be->ctx, &y.t, &x.t, &w.t, NULL, &te_));
	fprintf(stderr, "%s %-28s f16: %8.1f us  %7.0f GB/s  %7.1f TFLOP/s\n", what, name, secs * 1e6,
		(double)w.bytes / secs / 1e9, 2.0 * n * in * out / secs / 1e12);
	struct pair *all[] = {&x, &w, &y};
	for (int i = 0; i < 3; i++)
		drop(be, ref, all[i]);
}

/*
 * A step over nseq sequences: sequence i has ctx[i] tokens cached and adds add[i] tokens, its blocks
 * interleaved with the others' in a pool of dtype dt (quantized when quant); the cache filled with random
 * values (codes and pairs) on be and, when kr, the same on ref. The caller frees the step's arrays (big_free).
 */
struct big {
	int n, maxb, nblocks;
	int32_t *tokens, *pos, *seq, *table;
	float *freq;
	struct lmd_step st;
};

static void big_step(struct big *b, int nseq, const int *ctx, const int *add, int bl, int D)
{
	b->n = 0, b->maxb = 0;
	for (int i = 0; i < nseq; i++) {
		b->n += add[i];
		int k = (ctx[i] + add[i] + bl - 1) / bl;
		b->maxb = k > b->maxb ? k : b->maxb;
	}
	b->nblocks = nseq * b->maxb;
	b->tokens = calloc(b->n, 4), b->pos = malloc(b->n * 4), b->seq = malloc(b->n * 4);
	b->table = malloc((size_t)b->nblocks * 4), b->freq = malloc((size_t)nseq * D / 2 * sizeof(float));
	for (int i = 0, k = 0; i < nseq; i++)
		for (int j = 0; j < add[i]; j++, k++)
			b->pos[k] = ctx[i] + j, b->seq[k] = i;
	for (int i = 0; i < b->nblocks; i++)  // interleaved: sequence i's blocks are not contiguous
		b->table[i] = (i % b->maxb) * nseq + i / b->maxb;
	for (int i = 0; i < nseq * D / 2; i++)
		b->freq[i] = 0.01f;
	b->st = (struct lmd_step){.n = b->n, .tokens = b->tokens, .pos = b->pos, .seq = b->seq, .nseq = nseq,
				  .block_table = b->table, .max_blocks = b->maxb, .rot_half = D / 2, .inv_freq = b->freq};
}

static void big_free(struct big *b)
{
	free(b->tokens), free(b->pos), free(b->seq), free(b->table), free(b->freq);
}

static void big_cache(struct lmd_backend *be, struct lmd_backend *ref, struct lmd_kvcache *kt, struct lmd_kvcache *kr,
		      enum lmd_dtype dt, int KV, int D, int bl, int nblocks, enum lmd_kv_quant quant)
{
	struct lmd_err err = {0};
	CHECK_EQ_INT(lmd_kvcache_init(kt, be, 1, KV, D, bl, nblocks, dt, &err), 0);
	if (kr)
		CHECK_EQ_INT(lmd_kvcache_init(kr, ref, 1, KV, D, bl, nblocks, dt, &err), 0);
	if (quant) {
		CHECK_EQ_INT(lmd_kvcache_set_quant(kt, quant, NULL, &err), 0);
		if (kr)
			CHECK_EQ_INT(lmd_kvcache_set_quant(kr, quant, NULL, &err), 0);
		fill_quant_cache(be, ref, kt, kr);
		return;
	}
	size_t cnt = (size_t)lmd_tensor_numel(&kt->k[0]), bytes = lmd_tensor_nbytes(&kt->k[0]);
	float *f = malloc(cnt * sizeof(float));
	void *hb = malloc(bytes);
	for (int w = 0; w < 2; w++) {
		for (size_t i = 0; i < cnt; i++)
			f[i] = frand() * 2;
		lmd_cpu_store(hb, dt, f, cnt);
		be->ops->upload(be->ctx, w ? &kt->v[0] : &kt->k[0], 0, hb, bytes, &err);
		if (kr)
			ref->ops->upload(ref->ctx, w ? &kr->v[0] : &kr->k[0], 0, hb, bytes, &err);
	}
	free(f);
	free(hb);
}

static const char *kv_name(enum lmd_kv_quant quant)
{
	return quant == LMD_KV_INT8 ? "int8" : quant == LMD_KV_INT4 ? "int4" : "plain";
}

/*
 * One step over nseq sequences (big_step): kv_store of the step's tokens, attention against ref (when check),
 * and its time with the K/V bytes it reads (codes and pairs for a quantized cache).
 */
static void test_big_attention(struct lmd_backend *be, struct lmd_backend *ref, enum lmd_dtype dt, int H, int KV, int D,
			       int bl, int nseq, const int *ctx, const int *add, int check, enum lmd_kv_quant quant)
{
	struct lmd_err err = {0};
	struct big b;
	big_step(&b, nseq, ctx, add, bl, D);
	CHECK_EQ_INT(be->ops->step_begin(be->ctx, &b.st, &err), 0);
	CHECK_EQ_INT(ref->ops->step_begin(ref->ctx, &b.st, &err), 0);
	struct lmd_attn_dims d = {H, KV, D, (float)(1 / sqrt(D))};
	struct lmd_kvcache kt = {0}, kr = {0};
	big_cache(be, ref, &kt, check ? &kr : NULL, dt, KV, D, bl, b.nblocks, quant);
	struct pair qkv, att;
	make(be, ref, &qkv, dt, 2, (int64_t[]){b.n, (int64_t)(H + 2 * KV) * D}, 2);
	make(be, ref, &att, dt, 2, (int64_t[]){b.n, (int64_t)H * D}, 1);
	poison(be, &att);
	if (check) {  // rope at many heads (several rounds of the kernel's pair loop)
		CHECK_EQ_INT(be->ops->rope(be->ctx, &qkv.t, &d, &err), 0);
		CHECK_EQ_INT(ref->ops->rope(ref->ctx, &qkv.r, &d, &err), 0);
		compare(be, ref, &qkv, tol_of(dt), "rope (big)");
	}
	CHECK_EQ_INT(be->ops->kv_store(be->ctx, &kt, 0, &qkv.t, &d, &err), 0);
	CHECK_EQ_INT(be->ops->attention(be->ctx, &att.t, &qkv.t, &kt, 0, &d, &err), 0);
	char name[96];
	snprintf(name, sizeof(name), "attention H%d KV%d D%d %d seqs ctx %d +%d kv %s", H, KV, D, nseq, ctx[0], add[0],
		 kv_name(quant));
	if (check) {
		CHECK_EQ_INT(ref->ops->kv_store(ref->ctx, &kr, 0, &qkv.r, &d, &err), 0);
		CHECK_EQ_INT(ref->ops->attention(ref->ctx, &att.r, &qkv.r, &kr, 0, &d, &err), 0);
		compare(be, ref, &att, tol_of(dt), name);
	}
	double secs, kvb = 0, per = (double)lmd_kvcache_block_bytes_q(1, KV, D, 1, dt, quant);  // a token's K and V
	for (int i = 0; i < nseq; i++)
		kvb += per * (ctx[i] + add[i]);
	TIME_IT(be, 20, secs, be->ops->attention(be->ctx, &att.t, &qkv.t, &kt, 0, &d, &te_));
	fprintf(stderr, "%s %-58s %s: %8.1f us  %7.0f GB/s of K/V\n", what, name, lmd_dtype_short(dt), secs * 1e6,
		kvb / secs / 1e9);
	lmd_kvcache_free(&kt);
	if (check)
		lmd_kvcache_free(&kr);
	drop(be, ref, &qkv);
	drop(be, ref, &att);
	big_free(&b);
}

/*
 * Rows alone vs among others (cuda): the attention of a sequence's prefill chunk and of its decode token has
 * the same bits in a step of its own as in a step with other sequences (work is cut by each item's own
 * length; a quantized cache's blocks are dequantized the same wherever they land in the scratch). The
 * cache holds random values at every position (no kv_store).
 */
static void test_attention_alone(struct lmd_backend *be, struct lmd_backend *ref, enum lmd_dtype dt, int H, int KV, int D,
				 enum lmd_kv_quant quant)
{
	enum { NS = 4, BL = 64 };
	int ctx[NS] = {0, 40, 3000, 700}, add[NS] = {300, 100, 1, 1};
	struct lmd_err err = {0};
	struct big b;
	big_step(&b, NS, ctx, add, BL, D);
	struct lmd_attn_dims d = {H, KV, D, (float)(1 / sqrt(D))};
	struct lmd_kvcache kt = {0};
	big_cache(be, ref, &kt, NULL, dt, KV, D, BL, b.nblocks, quant);
	int64_t cols = (int64_t)(H + 2 * KV) * D, ac = (int64_t)H * D;
	size_t es = lmd_dtype_size(dt);
	struct pair qkv, att;
	make(be, ref, &qkv, dt, 2, (int64_t[]){b.n, cols}, 2);
	make(be, ref, &att, dt, 2, (int64_t[]){b.n, ac}, 1);
	char *all = malloc((size_t)b.n * ac * es), *one = malloc((size_t)b.n * ac * es), *q = malloc((size_t)b.n * cols * es);
	CHECK_EQ_INT(be->ops->step_begin(be->ctx, &b.st, &err), 0);
	CHECK_EQ_INT(be->ops->attention(be->ctx, &att.t, &qkv.t, &kt, 0, &d, &err), 0);
	be->ops->download(be->ctx, all, &att.t, 0, (size_t)b.n * ac * es, &err);
	be->ops->download(be->ctx, q, &qkv.t, 0, (size_t)b.n * cols * es, &err);
	CHECK_EQ_INT(be->ops->sync(be->ctx, &err), 0);
	for (int j = 1, first = add[0]; j < NS; first += add[j], j++) {  // sequence j alone: its rows, its table row
		struct lmd_step st = b.st;
		int32_t zero[1024] = {0};
		st.n = add[j], st.pos = b.pos + first, st.seq = zero, st.nseq = 1, st.block_table = b.table + (size_t)j * b.maxb;
		st.inv_freq = b.freq + (size_t)j * D / 2;
		be->ops->upload(be->ctx, &qkv.t, 0, q + (size_t)first * cols * es, (size_t)add[j] * cols * es, &err);
		poison(be, &att);
		CHECK_EQ_INT(be->ops->step_begin(be->ctx, &st, &err), 0);
		CHECK_EQ_INT(be->ops->attention(be->ctx, &att.t, &qkv.t, &kt, 0, &d, &err), 0);
		be->ops->download(be->ctx, one, &att.t, 0, (size_t)add[j] * ac * es, &err);
		CHECK_EQ_INT(be->ops->sync(be->ctx, &err), 0);
		if (memcmp(one, all + (size_t)first * ac * es, (size_t)add[j] * ac * es)) {
			unit_failures++;
			fprintf(stderr, "%s attention alone vs among others: sequence %d (ctx %d +%d) H%d KV%d D%d %s kv %s differs\n",
				what, j, ctx[j], add[j], H, KV, D, lmd_dtype_short(dt), kv_name(quant));
		}
	}
	free(all), free(one), free(q);
	lmd_kvcache_free(&kt);
	drop(be, ref, &qkv);
	drop(be, ref, &att);
	big_free(&b);
}

/*
 * Batch invariance of matmul (cuda): every row of y must have the same bits whether it is computed
 * alone, among a few rows or among RMAX, and wherever it sits in x (the kernels cut the work differently
 * for each R; see gpu/matmul.cu). K and N have ragged tails; a bias is added.
 */
static void test_matmul_invariance(struct lmd_backend *be, struct lmd_backend *ref, enum lmd_dtype dt, int K, int N)
{
	enum { OFF = 7, RMAX = 2048 };
	struct lmd_err err = {0};
	struct pair x, w, b, y, y2, x2;
	CHECK_EQ_INT(be->ops->sync(be->ctx, &err), 0);  // no step: the rows are unrelated
	make(be, ref, &x, dt, 2, (int64_t[]){RMAX, K}, 1);
	make(be, ref, &w, dt, 2, (int64_t[]){N, K}, (float)(1 / sqrt(K)));
	make(be, ref, &b, dt, 1, (int64_t[]){N}, 1);
	make(be, ref, &y, dt, 2, (int64_t[]){RMAX, N}, 1);
	make(be, ref, &y2, dt, 2, (int64_t[]){RMAX, N}, 1);
	make(be, ref, &x2, dt, 2, (int64_t[]){RMAX, K}, 1);
	poison(be, &y);
	CHECK_EQ_INT(be->ops->matmul(be->ctx, &y.t, &x.t, &w.t, &b.t, &err), 0);
	size_t rowx = (size_t)K * lmd_dtype_size(dt), rowy = (size_t)N * lmd_dtype_size(dt);
	char *hx = malloc(x.bytes), *hy = malloc(y.bytes), *hy2 = malloc(y.bytes);
	be->ops->download(be->ctx, hx, &x.t, 0, x.bytes, &err);
	be->ops->download(be->ctx, hy, &y.t, 0, y.bytes, &err);
	be->ops->upload(be->ctx, &x2.t, 0, hx + OFF * rowx, (RMAX - OFF) * rowx, &err);  // x shifted up by OFF rows
	int rs[] = {1, 2, 5, 8, 9, 12, 16, 17, 25, 32, 33, 40, 64, 65, 100, 300, 1000, RMAX - OFF};
	for (size_t i = 0; i < sizeof(rs) / sizeof(rs[0]); i++) {
		int R = rs[i];
		for (int shifted = 0; shifted < 2; shifted++) {
			struct lmd_tensor xv = shifted ? x2.t : x.t, yv = y2.t;
			xv.shape[0] = yv.shape[0] = R;
			poison(be, &y2);
			CHECK_EQ_INT(be->ops->matmul(be->ctx, &yv, &xv, &w.t, &b.t, &err), 0);
			be->ops->download(be->ctx, hy2, &y2.t, 0, (size_t)R * rowy, &err);
			const char *want = hy + (shifted ? OFF : 0) * rowy;
			if (memcmp(hy2, want, (size_t)R * rowy)) {
				unit_failures++;
				size_t k = 0;
				while (hy2[k] == want[k])
					k++;
				fprintf(stderr, "%s matmul %s K%d N%d: %d rows%s differ from the same rows among %d (row %zu)\n",
					what, lmd_dtype_short(dt), K, N, R, shifted ? " (shifted)" : "", RMAX, k / rowy);
			}
		}
	}
	int nr = 100;
	struct lmd_tensor xs = x.t, ys = y.t, xr = x.r, yr = y.r;  // and the numbers themselves, on 100 rows
	xs.shape[0] = ys.shape[0] = xr.shape[0] = yr.shape[0] = nr;
	CHECK_EQ_INT(be->ops->matmul(be->ctx, &ys, &xs, &w.t, &b.t, &err), 0);
	CHECK_EQ_INT(ref->ops->matmul(ref->ctx, &yr, &xr, &w.r, &b.r, &err), 0);
	struct pair yp = {ys, yr, (size_t)nr * rowy};
	char name[64];
	snprintf(name, sizeof(name), "matmul K%d N%d (invariance shapes)", K, N);
	compare(be, ref, &yp, tol_of(dt), name);
	free(hx), free(hy), free(hy2);
	struct pair *all[] = {&x, &w, &b, &y, &y2, &x2};
	for (int i = 0; i < 6; i++)
		drop(be, ref, all[i]);
}

/*
 * A prefill chunk's rows of a product get the same bits whatever else its step holds (the CUDA backend
 * sends runs of a sequence's consecutive tokens through cuBLAS, one product per run): 100 tokens of
 * sequence 0 alone, between decodes of other sequences, and beside another chunk.
 */
static void test_matmul_runs(struct lmd_backend *be, struct lmd_backend *ref, enum lmd_dtype dt, int K, int N)
{
	enum { RUN = 100, MAXN = 180 };
	struct lmd_err err = {0};
	struct pair x, w, y;
	make(be, ref, &x, dt, 2, (int64_t[]){MAXN, K}, 1);
	make(be, ref, &w, dt, 2, (int64_t[]){N, K}, (float)(1 / sqrt(K)));
	make(be, ref, &y, dt, 2, (int64_t[]){MAXN, N}, 1);
	size_t rowx = (size_t)K * lmd_dtype_size(dt), rowy = (size_t)N * lmd_dtype_size(dt);
	char *hx = malloc(x.bytes), *want = malloc((size_t)RUN * rowy), *got = malloc(y.bytes);
	be->ops->download(be->ctx, hx, &x.t, 0, x.bytes, &err);
	int32_t tok[MAXN] = {0}, pos[MAXN], seq[MAXN], table[8] = {0};
	float freq[8] = {0};
	/* before: rows of other sequences (decodes, or a 70-token chunk of sequence 1) ahead of the run */
	int before[3] = {0, 3, 70}, after[3] = {0, 2, 0};
	for (int c = 0; c < 3; c++) {
		int n = before[c] + RUN + after[c], nseq = 1;
		for (int i = 0; i < n; i++) {
			int in_run = i >= before[c] && i < before[c] + RUN;
			seq[i] = in_run ? 0 : c == 2 ? 1 : nseq++;
			pos[i] = in_run ? i - before[c] : c == 2 ? i : 5;
		}
		nseq = c == 2 ? 2 : nseq;
		struct lmd_step st = {.n = n, .tokens = tok, .pos = pos, .seq = seq, .nseq = nseq, .block_table = table,
				      .max_blocks = 1, .rot_half = 1, .inv_freq = freq};
		CHECK_EQ_INT(be->ops->step_begin(be->ctx, &st, &err), 0);
		if (before[c])
			be->ops->upload(be->ctx, &x.t, 0, hx, (size_t)before[c] * rowx, &err);
		be->ops->upload(be->ctx, &x.t, (size_t)before[c] * rowx, hx, (size_t)RUN * rowx, &err);  // the run's rows
		struct lmd_tensor xv = x.t, yv = y.t;
		xv.shape[0] = yv.shape[0] = n;
		poison(be, &y);
		CHECK_EQ_INT(be->ops->matmul(be->ctx, &yv, &xv, &w.t, NULL, &err), 0);
		be->ops->download(be->ctx, got, &y.t, 0, (size_t)n * rowy, &err);
		CHECK_EQ_INT(be->ops->sync(be->ctx, &err), 0);
		if (c == 0)
			memcpy(want, got, (size_t)RUN * rowy);
		else if (memcmp(want, got + before[c] * rowy, (size_t)RUN * rowy)) {
			unit_failures++;
			fprintf(stderr, "%s matmul %s K%d N%d: a 100-token run after %d other rows differs from the run alone\n",
				what, lmd_dtype_short(dt), K, N, before[c]);
		}
	}
	struct lmd_tensor xr = x.r, yr = y.r, xs = x.t, ys = y.t;  // and the numbers (last step's rows)
	xr.shape[0] = yr.shape[0] = xs.shape[0] = ys.shape[0] = before[2] + RUN;
	ref->ops->upload(ref->ctx, &x.r, 0, hx, (size_t)before[2] * rowx, &err);
	ref->ops->upload(ref->ctx, &x.r, (size_t)before[2] * rowx, hx, (size_t)RUN * rowx, &err);
	CHECK_EQ_INT(ref->ops->matmul(ref->ctx, &yr, &xr, &w.r, NULL, &err), 0);
	be->ops->upload(be->ctx, &y.t, 0, got, (size_t)(before[2] + RUN) * rowy, &err);
	struct pair yp = {ys, yr, (size_t)(before[2] + RUN) * rowy};
	compare(be, ref, &yp, tol_of(dt), "matmul of a step with prefill runs");
	free(hx), free(want), free(got);
	struct pair *all[] = {&x, &w, &y};
	for (int i = 0; i < 3; i++)
		drop(be, ref, all[i]);
}

static int by_index(const void *a, const void *b)  // (value bits, index) pairs
{
	int32_t i = ((const int32_t *)a)[1], j = ((const int32_t *)b)[1];
	return (i > j) - (i < j);
}

static int by_value_desc(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x < y) - (x > y);
}

/*
 * pick on rows that mix levels on a 0.25 grid (ties, a repeated maximum, values exactly at the cut
 * of spread 1 and 0.5), random values, -inf, +inf and NaN, and whole rows of NaN, of -inf, or with
 * NaN in front. Spreads cycle through argmax only (-1, NaN), 0, 0.5, 1, 3, more than cap and
 * +inf; top-k through none, 1, 3, 40, cap, cap + 1 and vocab. best and count must equal the
 * reference's; when count <= cap the candidate sets, too. The reference's count under a top-k is
 * checked against a sort of the row (the top_k-th largest value by qsort).
 */
static void test_pick(struct lmd_backend *be, struct lmd_backend *ref, int rows, int vocab, int cap, int timed)
{
	struct lmd_err err = {0};
	struct lmd_tensor lt = {LMD_F32, 2, {rows, vocab}, NULL}, ht = {LMD_I32, 2, {rows, 2}, NULL};
	struct lmd_tensor ct = {LMD_I32, 2, {rows, 2 * cap}, NULL};
	struct lmd_tensor lr = lt, hr = ht, cr = ct;
	CHECK_EQ_INT(be->ops->alloc(be->ctx, &lt, &err) | be->ops->alloc(be->ctx, &ht, &err) |
		     be->ops->alloc(be->ctx, &ct, &err), 0);
	CHECK_EQ_INT(ref->ops->alloc(ref->ctx, &lr, &err) | ref->ops->alloc(ref->ctx, &hr, &err) |
		     ref->ops->alloc(ref->ctx, &cr, &err), 0);
	size_t nl = (size_t)rows * vocab, hb = (size_t)rows * 2 * 4, cb = (size_t)rows * 2 * cap * 4;
	float *lg = malloc(nl * sizeof(float)), *spread = malloc((size_t)rows * sizeof(float));
	float *sorted = malloc((size_t)vocab * sizeof(float));
	int32_t *h1 = malloc(hb), *h2 = malloc(hb), *c1 = malloc(cb + 4), *c2 = malloc(cb + 4);
	int32_t *top_k = malloc((size_t)rows * sizeof(int32_t));
	float spreads[] = {-1, NAN, 0, 0.5f, 1, 3, 1e6f, INFINITY, 1};
	int32_t ks[] = {0, 1, 3, 40, cap, cap + 1, vocab, 0};
	float range = cap > 0 && vocab / cap > 4 ? (float)(vocab / cap) : 4;  // spread 1: about cap/2 candidates
	for (int r = 0; r < rows; r++) {
		float *v = lg + (size_t)r * vocab;
		int kind = r % 11;
		for (int i = 0; i < vocab; i++) {
			float u = frand();
			v[i] = kind % 2 ? floorf(u * range * 4) * 0.25f : u * range;
			if (kind == 4 && i % 3 == 0)
				v[i] = NAN;
			if ((kind == 5 || kind == 6) && i % 7 == 1)
				v[i] = -INFINITY;
		}
		if (kind == 7)
			for (int i = 0; i < vocab; i++)
				v[i] = NAN;
		if (kind == 8)
			for (int i = 0; i < vocab; i++)
				v[i] = i % 2 ? -INFINITY : NAN;
		if (kind == 9)
			v[0] = NAN;
		if (kind == 10 && vocab > 3)
			v[vocab / 3] = v[vocab - 1] = range + 1;  // the largest twice
		if (kind == 6 && vocab > 5)
			v[5] = INFINITY;
		spread[r] = spreads[(r / 2) % 9];
		top_k[r] = ks[(r / 5) % 8];
	}
	CHECK_EQ_INT(be->ops->upload(be->ctx, &lt, 0, lg, nl * sizeof(float), &err), 0);
	CHECK_EQ_INT(ref->ops->upload(ref->ctx, &lr, 0, lg, nl * sizeof(float), &err), 0);
	memset(h1, 0xff, hb);
	memset(c1, 0xff, cb);
	be->ops->upload(be->ctx, &ht, 0, h1, hb, &err);  // poisoned
	if (cb)
		be->ops->upload(be->ctx, &ct, 0, c1, cb, &err);
	CHECK_EQ_INT(be->ops->pick(be->ctx, &ht, &ct, &lt, spread, top_k, &err), 0);
	CHECK_EQ_INT(ref->ops->pick(ref->ctx, &hr, &cr, &lr, spread, top_k, &err), 0);
	be->ops->sync(be->ctx, &err);
	be->ops->download(be->ctx, h1, &ht, 0, hb, &err);
	ref->ops->download(ref->ctx, h2, &hr, 0, hb, &err);
	if (cb) {
		be->ops->download(be->ctx, c1, &ct, 0, cb, &err);
		ref->ops->download(ref->ctx, c2, &cr, 0, cb, &err);
	}
	int bad = 0, sets = 0, over = 0, kcut = 0;
	for (int r = 0; r < rows && bad < 5; r++) {
		int32_t best = h1[2 * r], count = h1[2 * r + 1];
		float mx = NAN;  // the largest value that is not NaN: a row whose largest is not finite counts -1
		for (int i = 0; i < vocab; i++)
			if (!isnan(lg[(size_t)r * vocab + i]) && !(lg[(size_t)r * vocab + i] <= mx))
				mx = lg[(size_t)r * vocab + i];
		if (!isfinite(mx) != (h2[2 * r + 1] == -1)) {
			bad++;
			fprintf(stderr, "%s pick row %d: largest %g but the reference counts %d\n", what, r, mx, h2[2 * r + 1]);
		}
		if (spread[r] >= 0 && top_k[r] > 0 && isfinite(mx)) {  // the reference's count under a top-k, from a sort
			const float *v = lg + (size_t)r * vocab;
			int nv = 0;
			for (int i = 0; i < vocab; i++)
				if (!isnan(v[i]))
					sorted[nv++] = v[i];
			qsort(sorted, (size_t)nv, sizeof(float), by_value_desc);
			float cut = v[h2[2 * r]] - spread[r];
			if (top_k[r] <= nv && sorted[top_k[r] - 1] > cut)
				cut = sorted[top_k[r] - 1];
			int want = 0;
			for (int i = 0; i < vocab; i++)
				want += v[i] >= cut;
			kcut += top_k[r] < nv && want < nv;
			if (want != h2[2 * r + 1]) {
				bad++;
				fprintf(stderr, "%s pick %dx%d row %d spread %g top_k %d: the reference counts %d, a sort %d\n", what,
					rows, vocab, r, spread[r], top_k[r], h2[2 * r + 1], want);
			}
		}
		/* a row whose largest value is not finite counts -1: its best is not used (the request fails) */
		if ((best != h2[2 * r] && h2[2 * r + 1] != -1) || count != h2[2 * r + 1]) {
			bad++;
			fprintf(stderr, "%s pick %dx%d row %d spread %g top_k %d: best %d count %d, expected %d %d\n", what, rows,
				vocab, r, spread[r], top_k[r], best, count, h2[2 * r], h2[2 * r + 1]);
			continue;
		}
		over += count > cap;
		if (count > cap || count <= 0)
			continue;
		int32_t *a = c1 + (size_t)r * 2 * cap, *b = c2 + (size_t)r * 2 * cap;
		qsort(a, (size_t)count, 8, by_index);
		qsort(b, (size_t)count, 8, by_index);
		sets++;
		if (memcmp(a, b, (size_t)count * 8)) {
			bad++;
			fprintf(stderr, "%s pick %dx%d row %d spread %g top_k %d: the %d candidates differ\n", what, rows, vocab,
				r, spread[r], top_k[r], count);
		}
	}
	unit_failures += bad;
	CHECK(sets >= rows / 4 || cap == 0 || vocab == 1);  // the test had sets to compare, and rows over cap
	CHECK(over > 0 || rows < 30 || cap >= vocab);  // rows 25-29: top-k cap + 1, spreads 1 and 3
	CHECK(kcut > 0 || rows < 40 || vocab < 64);  // some rows were cut by their top-k
	if (timed) {
		double secs, secs_k;
		TIME_IT(be, 20, secs, be->ops->pick(be->ctx, &ht, &ct, &lt, spread, NULL, &te_));
		for (int r = 0; r < rows; r++)
			spread[r] = 32, top_k[r] = 40;  // temperature 0.8, top-k 40
		TIME_IT(be, 20, secs_k, be->ops->pick(be->ctx, &ht, &ct, &lt, spread, top_k, &te_));
		fprintf(stderr, "%s pick %d rows of %d, cap %d: %8.1f us; spread 32, top-k 40: %8.1f us\n", what, rows, vocab,
			cap, secs * 1e6, secs_k * 1e6);
	}
	be->ops->release(be->ctx, &lt), be->ops->release(be->ctx, &ht), be->ops->release(be->ctx, &ct);
	ref->ops->release(ref->ctx, &lr), ref->ops->release(ref->ctx, &hr), ref->ops->release(ref->ctx, &cr);
	free(lg), free(spread), free(sorted), free(top_k), free(h1), free(h2), free(c1), free(c2);
}

/* matmul_q4 at a model's shape: against the reference when check, and timed (GB/s of int4 weights, scales, zeros). */
static void test_big_q4(struct lmd_backend *be, struct lmd_backend *ref, enum lmd_dtype dt, int n, int K, int N, int G,
			int check)
{
	struct q4pair w;
	struct pair x, y;
	struct lmd_err err = {0};
	CHECK_EQ_INT(be->ops->sync(be->ctx, &err), 0);
	q4_make(be, ref, &w, N, K, G);
	make(be, ref, &x, dt, 2, (int64_t[]){n, K}, 1);
	make(be, ref, &y, dt, 2, (int64_t[]){n, N}, 1);
	poison(be, &y);
	char name[80];
	snprintf(name, sizeof(name), "matmul_q4 n%d in%d out%d g%d", n, K, N, G);
	if (check) {
		BOTH(Q4_T(be, &w, &y.t, &x.t, G, NULL, &e1), Q4_R(ref, &w, &y.r, &x.r, G, NULL, &e2));
		compare(be, ref, &y, tol_of(dt), name);
	}
	double secs, bytes = (double)N * K / 2 + (double)N * (K / G) * 3;
	TIME_IT(be, 50, secs, Q4_T(be, &w, &y.t, &x.t, G, NULL, &te_));
	fprintf(stderr, "%s %-32s %s: %8.1f us  %7.0f GB/s  %7.1f TFLOP/s\n", what, name, lmd_dtype_short(dt), secs * 1e6,
		bytes / secs / 1e9, 2.0 * n * K * N / secs / 1e12);
	q4_drop(be, ref, &w);
	drop(be, ref, &x);
	drop(be, ref, &y);
}

/*
 * Quantized KV caches on a GPU: mixed steps of every dtype (online and offline parameters; the codes and pairs
 * bit for bit), decodes at long contexts (split), GQA, MQA and MHA, D 64 and 128, f16 and bf16
 * (decode_kernel dequantizes in registers), prefill runs (fa_kernel over dequantized scratch blocks), f32
 * (attn_kernel): against the reference, and rows alone vs among others bit for bit.
 */
static void test_gpu_kvq(struct lmd_backend *be, struct lmd_backend *ref)
{
	int c1[4] = {3000, 1500, 77, 2900}, a1[4] = {1, 1, 1, 1}, c2[2] = {0, 40}, a2[2] = {300, 37};
	int c7[3] = {0, 500, 100}, a7[3] = {100, 1, 1};
	enum lmd_dtype dts[3] = {LMD_F32, LMD_F16, LMD_BF16};
	for (int i = 0; i < 3; i++) {  // mixed steps: the store bit for bit, then attention
		test_step(be, ref, dts[i], 4, 2, 32, 4, 70, LMD_KV_INT8, 0);
		test_step(be, ref, dts[i], 6, 2, 64, 16, 70, LMD_KV_INT4, 0);
		test_step(be, ref, dts[i], 8, 2, 64, 64, 900, LMD_KV_INT8, 1);
		test_step(be, ref, dts[i], 32, 8, 128, 64, 3000, LMD_KV_INT4, 0);
		test_step(be, ref, dts[i], 32, 32, 128, 64, 3000, LMD_KV_INT8, 0);
		test_step(be, ref, dts[i], 16, 16, 64, 16, 2000, LMD_KV_INT4, 1);
	}
	enum lmd_kv_quant qs[2] = {LMD_KV_INT8, LMD_KV_INT4};
	for (int i = 0; i < 2; i++) {
		enum lmd_kv_quant q = qs[i];
		test_big_attention(be, ref, LMD_F16, 32, 8, 128, 64, 4, c1, a1, 1, q);   // GQA decode, split
		test_big_attention(be, ref, LMD_BF16, 32, 32, 128, 64, 4, c1, a1, 1, q);  // MHA decode, split
		test_big_attention(be, ref, LMD_BF16, 8, 1, 64, 16, 4, c1, a1, 1, q);    // MQA (group 8), D 64
		test_big_attention(be, ref, LMD_F16, 16, 8, 64, 32, 4, c1, a1, 1, q);    // group 2, D 64
		test_big_attention(be, ref, LMD_F16, 32, 8, 128, 64, 2, c2, a2, 1, q);   // prefill + chunk
		test_big_attention(be, ref, LMD_BF16, 8, 2, 64, 16, 2, c2, a2, 1, q);    // bf16 prefill, D 64, GQA
		test_big_attention(be, ref, LMD_F16, 32, 8, 128, 64, 3, c7, a7, 1, q);   // prefill and decodes in one step
		test_big_attention(be, ref, LMD_F32, 8, 2, 64, 16, 3, c7, a7, 1, q);     // f32: the generic kernel
		test_attention_alone(be, ref, LMD_F16, 32, 32, 128, q);
		test_attention_alone(be, ref, LMD_BF16, 32, 8, 64, q);
	}
	test_attention_alone(be, ref, LMD_F16, 32, 8, 128, LMD_KV_NONE);
}

/*
 * Decode attention at a 4k context and a 2048-token prefill, plain fp16 vs int8 vs int4 caches, timed, at the
 * Llama-2-7B (MHA) and Llama-3-8B (GQA) shapes; then (backends of their own) the generic kernel for
 * quantized caches (LMD_CUDA_KVQ=generic) for comparison, and a scratch of one block (LMD_CUDA_FQ_SCRATCH)
 * that cuts every prefill into many groups, checked against the reference.
 */
static void test_gpu_kvq_speed(struct lmd_backend *be, struct lmd_backend *ref)
{
	int c4k[1] = {4095}, a4k[1] = {1}, c8[8], a8[8], c0[1] = {0}, a2k[1] = {2048};
	for (int i = 0; i < 8; i++)
		c8[i] = 4095, a8[i] = 1;
	enum lmd_kv_quant all[3] = {LMD_KV_NONE, LMD_KV_INT8, LMD_KV_INT4};
	for (int i = 0; i < 3; i++) {
		test_big_attention(be, ref, LMD_F16, 32, 32, 128, 64, 1, c4k, a4k, 0, all[i]);  // Llama-2-7B, batch 1 at 4k
		test_big_attention(be, ref, LMD_F16, 32, 32, 128, 64, 8, c8, a8, 0, all[i]);    // 8 decodes at 4k
		test_big_attention(be, ref, LMD_F16, 32, 8, 128, 64, 1, c4k, a4k, 0, all[i]);   // Llama-3-8B, batch 1 at 4k
		test_big_attention(be, ref, LMD_F16, 32, 32, 128, 64, 1, c0, a2k, 0, all[i]);   // the 2048-token prefill
	}
	const char *envs[2][2] = {{"LMD_CUDA_KVQ", "generic"}, {"LMD_CUDA_FQ_SCRATCH", "1"}};
	const char *names[2] = {"cuda/kvq-generic", "cuda/fq-scratch-1"};
	for (int e = 0; e < 2; e++) {
		struct lmd_backend b2;
		struct lmd_err err = {0};
		setenv(envs[e][0], envs[e][1], 1);
		int rc = lmd_backend_open(&b2, "cuda", NULL, &err);
		unsetenv("LMD_CUDA_KVQ");
		unsetenv("LMD_CUDA_FQ_SCRATCH");
		CHECK_EQ_INT(rc, 0);
		if (rc)
			continue;
		const char *was = what;
		what = names[e];
		for (int i = 1; i < 3; i++) {
			if (e == 0) {
				test_big_attention(&b2, ref, LMD_F16, 32, 32, 128, 64, 1, c4k, a4k, 0, all[i]);
				test_big_attention(&b2, ref, LMD_F16, 32, 32, 128, 64, 1, c0, a2k, 0, all[i]);
			} else {
				int c2[2] = {0, 40}, a2[2] = {300, 37}, c7[3] = {0, 500, 100}, a7[3] = {100, 1, 1};
				test_big_attention(&b2, ref, LMD_F16, 32, 8, 128, 64, 2, c2, a2, 1, all[i]);
				test_big_attention(&b2, ref, LMD_BF16, 8, 2, 64, 16, 3, c7, a7, 1, all[i]);
				test_attention_alone(&b2, ref, LMD_F16, 32, 32, 128, all[i]);
			}
		}
		what = was;
		lmd_backend_close(&b2);
	}
}

/*
 * W4A16 on a GPU: Llama-2-7B and Llama-3-8B shapes, every group size, both 16-bit dtypes; decode and prefill
 * timed; and the quantized KV caches (test_gpu_kvq).
 */
static void test_gpu_quant(struct lmd_backend *be, struct lmd_backend *ref)
{
	test_gpu_kvq(be, ref);
	int l2[][2] = {{4096, 12288}, {4096, 4096}, {4096, 22016}, {11008, 4096}};  // qkv, o, gate_up, down
	int l3[][2] = {{4096, 6144}, {4096, 4096}, {4096, 28672}, {14336, 4096}};
	for (int i = 0; i < 4; i++) {
		test_big_q4(be, ref, LMD_F16, 1, l2[i][0], l2[i][1], 128, 1);
		test_big_q4(be, ref, LMD_BF16, 3, l3[i][0], l3[i][1], 128, 1);
	}
	test_big_q4(be, ref, LMD_F16, 16, 4096, 4096, 64, 1);
	test_big_q4(be, ref, LMD_BF16, 16, 11008, 4096, 32, 1);
	test_big_q4(be, ref, LMD_F16, 64, 14336, 4096, 32, 1);
	test_big_q4(be, ref, LMD_BF16, 100, 4096, 6144, 64, 1);
	test_matmul_q4(be, ref, LMD_F16, LMD_F16, 300, 4096, 4096, 128, 1);
	test_matmul_q4(be, ref, LMD_BF16, LMD_BF16, 100, 11008, 4096, 128, 0);
	test_matmul_q4(be, ref, LMD_BF16, LMD_BF16, 40, 14336, 4096, 32, 1);  // every decode kernel vs the tiled one
	test_matmul_q4(be, ref, LMD_F16, LMD_F16, 40, 4096, 6144, 64, 0);
	test_matmul_q4_runs(be, ref, LMD_F16, 4096, 4096, 128);
	test_matmul_q4_runs(be, ref, LMD_BF16, 11008, 4096, 32);
	test_gate_up(be, ref, LMD_F16, 1, 4096, 11008, 128);  // Llama-2-7B's, then Llama-3-8B's
	test_gate_up(be, ref, LMD_BF16, 4, 4096, 14336, 32);
	test_gate_up(be, ref, LMD_F16, 8, 4096, 11008, 64);
	test_gate_up(be, ref, LMD_F16, 1, 4096, 11008, 0);
	test_gate_up(be, ref, LMD_BF16, 3, 4096, 14336, 0);
	int rows[] = {1, 16, 64, 256, 2048};
	for (int r = 0; r < 5; r++)
		for (int i = 0; i < 4; i++)
			test_big_q4(be, ref, LMD_F16, rows[r], l2[i][0], l2[i][1], 128, 0);
	for (int i = 0; i < 4; i++)  // fp16 beside it
		test_big_matmul(be, ref, 1, l2[i][0], l2[i][1], 0);
}

/*
 * `test-ops q4speed`: the int4 products of the Llama-2-7B shape timed at decode row counts, fp16's beside them
 * (with LMD_CUDA_GEMM=lmd also checked: the decode products against the reference, rows alone vs among others).
 */
static void test_q4_speed(struct lmd_backend *be, struct lmd_backend *ref)
{
	int l2[][2] = {{4096, 12288}, {4096, 4096}, {4096, 22016}, {11008, 4096}};
	int rows[] = {1, 4, 8, 16, 32, 64, 128, 256};
	for (int r = 0; r < 8; r++)
		for (int i = 0; i < 4; i++)
			test_big_q4(be, ref, LMD_F16, rows[r], l2[i][0], l2[i][1], 128, 0);
	for (int i = 0; i < 4; i++) {
		test_big_q4(be, ref, LMD_BF16, 1, l2[i][0], l2[i][1], 32, 0);
		test_big_q4(be, ref, LMD_F16, 1, l2[i][0], l2[i][1], 64, 0);
	}
	const char *gemm = getenv("LMD_CUDA_GEMM");
	int lmd = gemm && !strcmp(gemm, "lmd");  // lmd's fp16 kernels: checked too (the decode ones against the reference)
	for (int r = 0; r < 3; r++)
		for (int i = 0; i < 4; i++)
			test_big_matmul(be, ref, (int[]){1, 16, 64}[r], l2[i][0], l2[i][1], lmd && r < 2);
	if (lmd) {
		test_matmul_invariance(be, ref, LMD_F16, 4096, 4096);
		test_matmul_invariance(be, ref, LMD_BF16, 11008, 4096);
	}
}

static void test_gpu_sized(struct lmd_backend *be, struct lmd_backend *ref)
{
	test_matmul_runs(be, ref, LMD_F16, 4096, 4096);
	test_matmul_runs(be, ref, LMD_BF16, 1000, 304);
	test_pick(be, ref, 300, 1000, 64, 0);  // more rows than one launch takes
	test_pick(be, ref, 128, 32000, 1024, 1);
	test_pick(be, ref, 1, 32000, 1024, 1);
	test_pick(be, ref, 16, 128256, 1024, 1);
	test_matmul_invariance(be, ref, LMD_F16, 4104, 4100);
	test_matmul_invariance(be, ref, LMD_BF16, 1000, 300);
	test_matmul_invariance(be, ref, LMD_BF16, 4096, 4096);
	test_rowwise(be, ref, LMD_F16, 3, 4096);   // rmsnorm rows held in registers, 16 per thread
	test_rowwise(be, ref, LMD_BF16, 2, 5000);  // 32 per thread, ragged
	test_rowwise(be, ref, LMD_F32, 2, 9000);   // wider than 8192: the plain loop
	int shapes[][3] = {{1, 4096, 12288}, {1, 4096, 4096}, {1, 4096, 22016}, {1, 11008, 4096}, {1, 4096, 32000},
			   {4, 4096, 4096}, {16, 4096, 12288}, {32, 4096, 4096}, {64, 4096, 22016}, {64, 11008, 4096},
			   {256, 4096, 22016}, {2048, 4096, 12288}};
	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
		test_big_matmul(be, ref, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][0] <= 256);
	int c1[4] = {3000, 1500, 77, 2900}, a1[4] = {1, 1, 1, 1};
	test_big_attention(be, ref, LMD_F16, 32, 8, 128, 64, 4, c1, a1, 1, LMD_KV_NONE);   // GQA decode, split-K
	test_big_attention(be, ref, LMD_BF16, 32, 32, 128, 64, 4, c1, a1, 1, LMD_KV_NONE);  // MHA decode, split-K
	int c2[2] = {0, 40}, a2[2] = {300, 37};
	test_big_attention(be, ref, LMD_F16, 32, 8, 128, 64, 2, c2, a2, 1, LMD_KV_NONE);   // prefill + chunk
	test_big_attention(be, ref, LMD_F32, 8, 1, 64, 16, 2, c2, a2, 1, LMD_KV_NONE);     // MQA, group 8
	test_big_attention(be, ref, LMD_BF16, 8, 2, 64, 16, 2, c2, a2, 1, LMD_KV_NONE);    // bf16 prefill, D 64, GQA
	int c7[3] = {0, 500, 100}, a7[3] = {100, 1, 1};
	test_big_attention(be, ref, LMD_F16, 32, 8, 128, 64, 3, c7, a7, 1, LMD_KV_NONE);   // prefill and decodes in one step
	test_big_attention(be, ref, LMD_BF16, 16, 16, 64, 32, 3, c7, a7, 1, LMD_KV_NONE);
	int c3[1] = {0}, a3[1] = {2048};
	test_big_attention(be, ref, LMD_F16, 32, 32, 128, 64, 1, c3, a3, 0, LMD_KV_NONE);  // the 2048-token prefill (timing)
	int c4[64], a4[64], c5[256], a5[256];
	for (int i = 0; i < 64; i++)
		c4[i] = 1024, a4[i] = 1;
	test_big_attention(be, ref, LMD_F16, 32, 32, 128, 64, 64, c4, a4, 0, LMD_KV_NONE);  // 64 decodes at 1024 (timing)
	for (int i = 0; i < 256; i++)
		c5[i] = 192, a5[i] = 1;
	test_big_attention(be, ref, LMD_F16, 32, 32, 128, 64, 256, c5, a5, 0, LMD_KV_NONE);  // 256 decodes at 192 (timing)
	int c6[1] = {200}, a6[1] = {1};
	test_big_attention(be, ref, LMD_F16, 32, 32, 128, 64, 1, c6, a6, 0, LMD_KV_NONE);  // batch-1 decode (timing)
}

static void test_backend(struct lmd_backend *be, struct lmd_backend *ref)
{
	enum lmd_dtype dts[3] = {LMD_F32, LMD_F16, LMD_BF16};
	for (int i = 0; i < 3; i++) {
		enum lmd_dtype dt = dts[i];
		test_rowwise(be, ref, dt, 1, 64);
		test_rowwise(be, ref, dt, 13, 100);
		test_rowwise(be, ref, dt, 1, 4096);  // rows of 256k values: cuda's 16-byte loads, g of x's dtype
		test_rowwise(be, ref, dt, 3, 768);   // the same with g f32
		for (int j = 0; j < 3; j++) {
			test_matmul(be, ref, dt, dts[j], dt, 1, 128, 40, 0);
			test_matmul(be, ref, dt, dts[j], dt, 7, 100, 37, 1);
			test_matmul(be, ref, dt, dts[j], LMD_F32, 70, 64, 130, 0);  // two token tiles, f32 out (logits)
		}
		test_matmul_runs(be, ref, dt, 136, 72);
		test_matmul_q4(be, ref, dt, dt, 1, 128, 40, 32, 0);
		test_matmul_q4(be, ref, dt, dt, 7, 256, 37, 64, 1);      // ragged N
		test_matmul_q4(be, ref, dt, LMD_F32, 70, 384, 136, 128, 0);  // many rows, f32 out
		test_matmul_q4(be, ref, dt, dt, 20, 160, 24, 32, 1);     // K 160: a padded tile
		test_matmul_q4_runs(be, ref, dt, 256, 72, 64);
		test_gate_up(be, ref, dt, 1, 256, 40, 0);
		test_gate_up(be, ref, dt, 3, 264, 24, 0);
		test_gate_up(be, ref, dt, 1, 128, 40, 32);
		test_gate_up(be, ref, dt, 3, 256, 48, 64);
		test_gate_up(be, ref, dt, 8, 384, 64, 128);  // odd ngp: no copy-engine kernel
		test_gate_up(be, ref, dt, 9, 128, 16, 32);   // more rows than the fused kernels take
		test_gate_up(be, ref, dt, 2, 136, 20, 0);    // inter not a multiple of 8
		test_gate_up(be, ref, dt, 2, 256, 20, 64);
		test_step(be, ref, dt, 4, 2, 32, 4, 70, LMD_KV_NONE, 0);
		test_step(be, ref, dt, 6, 2, 64, 16, 70, LMD_KV_NONE, 0);
		test_step(be, ref, dt, 3, 3, 16, 64, 70, LMD_KV_NONE, 0);
		test_step(be, ref, dt, 8, 2, 64, 64, 900, LMD_KV_NONE, 0);  // enough work for the threaded attention
		test_step(be, ref, dt, 4, 2, 32, 4, 70, LMD_KV_INT8, 0);
		test_step(be, ref, dt, 6, 2, 64, 16, 70, LMD_KV_INT4, 0);
		test_step(be, ref, dt, 8, 2, 64, 64, 900, LMD_KV_INT8, 1);
		test_step(be, ref, dt, 4, 4, 128, 16, 300, LMD_KV_INT4, 1);
	}
	test_pick(be, ref, 5, 100, 16, 0);
	test_pick(be, ref, 37, 3000, 64, 0);
	test_pick(be, ref, 20, 17, 0, 0);     // no room: every count above cap but 0
	test_pick(be, ref, 24, 1, 4, 0);      // a vocabulary of one
}

/*
 * A batch-invariant setting of LMD_CUDA_GEMM (set by the caller) on a CUDA backend of its own: rows alone
 * and among others bit for bit, prefill runs, and the decode-sized products timed; with all, the mixed
 * dtype product and every other op as well.
 */
static void test_invariant_gemm(struct lmd_backend *ref, const char *name, int all)
{
	struct lmd_backend be;
	struct lmd_err err = {0};
	if (lmd_backend_open(&be, "cuda", &(struct lmd_backend_opts){.deterministic = 1}, &err)) {
		fprintf(stderr, "%s: %s\n", name, err.msg);
		unit_failures++;
		return;
	}
	what = name;
	test_matmul_invariance(&be, ref, LMD_F16, 4096, 4096);
	test_matmul_invariance(&be, ref, LMD_BF16, 1000, 304);
	test_matmul_runs(&be, ref, LMD_F16, 4096, 4096);
	int shapes[][3] = {{1, 4096, 12288}, {1, 4096, 22016}, {1, 11008, 4096}, {16, 4096, 12288}, {64, 4096, 22016},
			   {64, 11008, 4096}, {256, 4096, 22016}};
	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
		test_big_matmul(&be, ref, shapes[i][0], shapes[i][1], shapes[i][2], 0);
	if (all) {
		test_matmul(&be, ref, LMD_F16, LMD_F16, LMD_F32, 70, 64, 136, 1);
		test_backend(&be, ref);
	}
	lmd_backend_close(&be);
}

int main(int argc, char **argv)
{
	struct lmd_backend ref = {0}, be = {0};
	struct lmd_err err = {0};
	CHECK_EQ_INT(lmd_backend_open(&ref, "ref", NULL, &err), 0);
	/* `test-ops quant`: W4A16 and quantized KV on the GPU only; q4speed: int4 timings only; kvq: quantized KV alone */
	int quant = argc > 1 && !strcmp(argv[1], "quant"), speed = argc > 1 && !strcmp(argv[1], "q4speed");
	int kvq = argc > 1 && !strcmp(argv[1], "kvq");
	/* the batch-invariance checks need the invariant products (the default's cuBLAS at each shape is not) */
	const struct lmd_backend_opts det = {.deterministic = 1};
	if (quant || speed || kvq) {
		int rc = lmd_backend_open(&be, "cuda", &det, &err);
		if (rc == 0) {
			what = "cuda";
			(quant ? test_gpu_quant : speed ? test_q4_speed : test_gpu_kvq)(&be, &ref);
			if (!speed)
				test_gpu_kvq_speed(&be, &ref);
			lmd_backend_close(&be);
			/* each int4 setting: the same bits for rows alone */
			const char *alt[][2] = {{"LMD_CUDA_Q4", "old"}, {"LMD_CUDA_Q4", "stream16"}, {"LMD_CUDA_Q4", "stream64"},
						{"LMD_CUDA_Q4_PERSIST", "0"}};
			for (size_t i = 0; quant && i < sizeof(alt) / sizeof(alt[0]); i++) {
				char name[48];
				snprintf(name, sizeof(name), "cuda/%s=%s", alt[i][0] + 9, alt[i][1]);
				setenv(alt[i][0], alt[i][1], 1);
				CHECK_EQ_INT(lmd_backend_open(&be, "cuda", &det, &err), 0);
				what = name;
				test_matmul_q4(&be, &ref, LMD_F16, LMD_F16, 80, 4096, 4096, 128, 1);
				test_matmul_q4(&be, &ref, LMD_BF16, LMD_BF16, 70, 14336, 4096, 32, 0);
				test_matmul_q4(&be, &ref, LMD_F16, LMD_F32, 70, 384, 136, 64, 0);
				test_matmul_q4(&be, &ref, LMD_F16, LMD_F16, 130, 1024, 16384, 128, 1);  // blocks enough not to split K
				test_matmul_q4_runs(&be, &ref, LMD_BF16, 256, 72, 64);
				lmd_backend_close(&be);
				unsetenv(alt[i][0]);
			}
			if (quant) {  // K cut in the ranges that fill the GPU (the default without deterministic, so not
				      // batch-invariant): 4, 4, 3, 3 and 2 of them on 132 SMs
				CHECK_EQ_INT(lmd_backend_open(&be, "cuda", NULL, &err), 0);
				what = "cuda/default";
				q4_split = 1;
				test_matmul_q4(&be, &ref, LMD_F16, LMD_F16, 64, 4096, 4096, 128, 1);
				test_matmul_q4(&be, &ref, LMD_BF16, LMD_BF16, 70, 4096, 14336, 32, 0);
				test_matmul_q4(&be, &ref, LMD_F16, LMD_F32, 40, 4096, 11008, 64, 1);
				test_matmul_q4(&be, &ref, LMD_F16, LMD_F16, 50, 384, 136, 64, 0);
				test_matmul_q4(&be, &ref, LMD_F16, LMD_F16, 90, 11008, 4096, 128, 1);
				q4_split = 0;
				lmd_backend_close(&be);
			}
			/* up to 8 rows with each ring (and in 64 registers): the bits of 16 rows' kernel */
			const char *ring[][2] = {{"LMD_CUDA_Q4_RING4", "1"}, {"LMD_CUDA_Q4_RING4", "0"}, {"LMD_CUDA_Q4_OCC4", "1"}};
			for (size_t i = 0; quant && i < sizeof(ring) / sizeof(ring[0]); i++) {
				char name[48];
				snprintf(name, sizeof(name), "cuda/%s=%s", ring[i][0] + 9, ring[i][1]);
				setenv(ring[i][0], ring[i][1], 1);
				CHECK_EQ_INT(lmd_backend_open(&be, "cuda", &det, &err), 0);
				what = name;
				test_matmul_q4(&be, &ref, LMD_F16, LMD_F16, 16, 11008, 4096, 128, 1);
				test_matmul_q4(&be, &ref, LMD_BF16, LMD_BF16, 16, 14336, 4096, 32, 0);
				test_matmul_q4(&be, &ref, LMD_F16, LMD_F32, 16, 384, 136, 64, 0);
				test_gate_up(&be, &ref, LMD_F16, 3, 4096, 11008, 128);
				lmd_backend_close(&be);
				unsetenv(ring[i][0]);
			}
			if (quant) {  // the default's 16-bit gate_up (gemv, fused; not the deterministic backend's)
				CHECK_EQ_INT(lmd_backend_open(&be, "cuda", NULL, &err), 0);
				what = "cuda/default";
				test_gate_up(&be, &ref, LMD_F16, 1, 4096, 11008, 0);
				test_gate_up(&be, &ref, LMD_BF16, 3, 264, 24, 0);
				test_gate_up(&be, &ref, LMD_F16, 4, 4104, 40, 0);
				lmd_backend_close(&be);
			}
			setenv("LMD_CUDA_Q4", "stream65", 1);
			CHECK_EQ_INT(lmd_backend_open(&be, "cuda", NULL, &err), LMD_EINVAL);  // a bad setting is an error
			CHECK(strstr(err.msg, "LMD_CUDA_Q4") != NULL);
			unsetenv("LMD_CUDA_Q4");
		} else {
			fprintf(stderr, "cuda: %s\n", err.msg);
			unit_failures += rc != LMD_ENODEV;
		}
		lmd_backend_close(&ref);
		return UNIT_DONE();
	}
	const char *isas[] = {"c", "avx2", "avx512"};
	const char *seen = "";
	for (int i = 0; i < 3; i++) {
		setenv("LMD_CPU_ISA", isas[i], 1);
		if (lmd_backend_open(&be, "cpu", &(struct lmd_backend_opts){.threads = 2}, &err)) {
			fprintf(stderr, "cpu: %s\n", err.msg);
			return 1;
		}
		const char *isa = lmd_backend_cpu_isa(&be);
		if (strcmp(isa, seen)) {  // an ISA this machine lacks falls back to one already tested
			char buf[64];
			snprintf(buf, sizeof(buf), "cpu/%s", isa);
			what = buf;
			test_backend(&be, &ref);
			seen = isa;
		}
		lmd_backend_close(&be);
	}
	unsetenv("LMD_CPU_ISA");
	CHECK_EQ_INT(lmd_backend_open(&be, "tpu", NULL, &err), LMD_EINVAL);
	CHECK(strstr(err.msg, "'tpu'") != NULL);
	CHECK_EQ_INT(lmd_backend_open(&be, "auto", NULL, &err), 0);  // cpu without a GPU
	lmd_backend_close(&be);
	setenv("LMD_CUDA_GEMM", "lmd", 1);  // lmd's kernels for every product first (the default pads, below)
	int rc = lmd_backend_open(&be, "cuda", NULL, &err);
	if (lmd_cuda_device_count() == 0)
		CHECK_EQ_INT(rc, LMD_ENODEV);
	if (rc == 0) {
		what = "cuda";
		test_backend(&be, &ref);
		test_gpu_sized(&be, &ref);
		test_gpu_quant(&be, &ref);
		test_gpu_kvq_speed(&be, &ref);
		lmd_backend_close(&be);
		unsetenv("LMD_CUDA_GEMM");  // the default: cuBLAS at each product's own shape
		if (lmd_backend_open(&be, "cuda", NULL, &err) == 0) {
			what = "cuda/default";
			int shapes[][3] = {{1, 4096, 12288}, {1, 4096, 4096}, {1, 4096, 22016}, {1, 11008, 4096},
					   {64, 4096, 4096}, {64, 11008, 4096}, {256, 4096, 22016}, {2048, 4096, 12288},
					   {2048, 11008, 4096}};
			for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)  // the decode sizes against the CPU too
				test_big_matmul(&be, &ref, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][0] <= 64);
			test_matmul(&be, &ref, LMD_F16, LMD_F16, LMD_F16, 7, 100, 37, 1);
			test_matmul(&be, &ref, LMD_BF16, LMD_BF16, LMD_F32, 70, 64, 130, 0);  // f32 out (logits)
			test_matmul(&be, &ref, LMD_BF16, LMD_BF16, LMD_F32, 3, 136, 77, 1);  // gemv: up to GEMV_ROWS rows
			test_matmul(&be, &ref, LMD_F16, LMD_F16, LMD_F16, 1, 4104, 300, 1);  // K past a whole round of chunks
			test_matmul(&be, &ref, LMD_F16, LMD_F16, LMD_F16, 2, 264, 1000, 0);
			test_step(&be, &ref, LMD_F16, 4, 2, 32, 4, 70, LMD_KV_NONE, 0);
			test_gate_up(&be, &ref, LMD_F16, 1, 4096, 11008, 0);  // gemv's (fused)
			test_gate_up(&be, &ref, LMD_BF16, 3, 264, 24, 0);
			test_gate_up(&be, &ref, LMD_F16, 4, 4104, 40, 0);
			test_gate_up(&be, &ref, LMD_F16, 1, 4096, 11008, 128);
			q4_blas = 1;
			test_matmul_q4(&be, &ref, LMD_F16, LMD_F16, 200, 4096, 4096, 128, 1);
			test_matmul_q4(&be, &ref, LMD_BF16, LMD_BF16, 130, 11008, 4096, 32, 0);
			test_matmul_q4(&be, &ref, LMD_F16, LMD_F32, 150, 384, 136, 64, 0);
			test_matmul_q4(&be, &ref, LMD_F16, LMD_F16, 127, 4096, 4096, 128, 0);  // one row short: the kernels
			lmd_backend_close(&be);
			q4_blas = 0;
		}
		const char *bad_env[][2] = {{"LMD_CUDA_GEMV", "5"}, {"LMD_CUDA_GU", "2"}, {"LMD_CUDA_DEC_WARPS", "6"},
					    {"LMD_CUDA_Q4_BLAS", "many"}, {"LMD_CUDA_Q4_RING4", "-1"},
					    {"LMD_CUDA_Q4_SPLIT", "2"}, {"LMD_CUDA_Q4_PERSIST", "on"}, {"LMD_CUDA_Q4_OCC4", "4"},
					    {"LMD_CUDA_GRAPH", "off"}, {"LMD_CUDA_PDL", "2"}, {"LMD_CUDA_FUSE", "no"},
					    {"LMD_CUDA_FA", "-1"}, {"LMD_CUDA_PROFILE", "yes"}, {"LMD_CUDA_FQ_SCRATCH", "0"}};
		for (size_t i = 0; i < sizeof(bad_env) / sizeof(bad_env[0]); i++) {
			setenv(bad_env[i][0], bad_env[i][1], 1);
			CHECK_EQ_INT(lmd_backend_open(&be, "cuda", NULL, &err), LMD_EINVAL);  // a bad setting is an error
			CHECK(strstr(err.msg, bad_env[i][0]) != NULL);
			unsetenv(bad_env[i][0]);
		}
		test_invariant_gemm(&ref, "cuda/pad128", 1);  // deterministic: cuBLAS on padded blocks of 128 rows
		setenv("LMD_CUDA_GEMM", "lt128", 1);  // one cuBLASLt algorithm per shape: batch-invariant without padding
		test_invariant_gemm(&ref, "cuda/lt128", 0);
		const char *bad[] = {"pad", "pad8", "lt0", "stream32"};
		for (int i = 0; i < 4; i++) {
			setenv("LMD_CUDA_GEMM", bad[i], 1);
			CHECK_EQ_INT(lmd_backend_open(&be, "cuda", NULL, &err), LMD_EINVAL);  // a bad setting is an error
			CHECK(strstr(err.msg, "LMD_CUDA_GEMM") != NULL);
		}
	}
	unsetenv("LMD_CUDA_GEMM");
	if (rc != 0 && rc != LMD_ENODEV) {
		fprintf(stderr, "cuda: %s\n", err.msg);
		unit_failures++;
	}
	lmd_backend_close(&ref);
	return UNIT_DONE();
}
