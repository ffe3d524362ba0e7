/**
 * The fast CPU backend: the reference ops' semantics (ops-cpu.c) with threads (threads.h) and
 * vectorized inner loops (cpu-kernels.inc, compiled for AVX-512, AVX2 and plain C; the best the
 * CPU supports is picked at open; LMD_CPU_ISA=c|avx2 forces a lower one). Matmul: up to
 * MM_SMALL tokens (decode), weights are converted in registers as they stream by, with software
 * prefetch, each weight vector used for all tokens of the tile; more tokens (prefill), tiles of
 * weight rows are converted to fp32 once and register-blocked 4x2 dot products run over them.
 * Attention runs the query heads that share a kv head together, one (token, kv head) per task.
 * Weights are copied into huge pages at load. t/unit/test-ops.c compares every op with the
 * reference.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "backend.h"
#include "kvcache.h"
#include "ops-cpu.h"
#include "threads.h"

#define MM_TT 64  // tokens per tile
#define MM_RB 16  // weight rows per tile
#ifndef MM_PREFETCH
#define MM_PREFETCH 4096  // bytes ahead of the weight stream to prefetch (small-batch path)
#endif
#define MM_SMALL 8  // up to this many tokens, weights are converted in registers (no fp32 copy)

struct mm_args {
	const float *x;     // [n, in] fp32
	int n, in, out;
	const void *w;      // [out, in] of wt
	enum lmd_dtype wt;
	const float *bias;  // [out] fp32 or NULL
	void *y;            // [n, out] of yt
	enum lmd_dtype yt;
};

struct att_args {
	const struct lmd_step *s;
	const struct lmd_tensor *qkv;
	struct lmd_tensor *att;
	const struct lmd_kvcache *kv;
	int layer;
	const struct lmd_attn_dims *d;
	int maxlen;
};

struct kernels {
	const char *isa;
	void (*load)(float *dst, const void *src, enum lmd_dtype t, size_t n);
	void (*store)(void *dst, enum lmd_dtype t, const float *src, size_t n);
	void (*mm_range)(const struct mm_args *a, int r0, int r1, float *wbuf, float *obuf);
	void (*att_item)(const struct att_args *a, int i, int g, float *scr);
};

// ----------------------------------------------------------------------------
// the kernels, once per instruction set

#define K(f) f##_c
#define KNAME "c"
#define TILE_MAX 4
#define VL 4
typedef float vf_c __attribute__((vector_size(16)));
typedef uint32_t vu_c __attribute__((vector_size(16)));
typedef uint16_t vh_c __attribute__((vector_size(8)));
#define VF vf_c
#define VU vu_c
#define VH vh_c
static inline vf_c loadh_c(const uint16_t *p)
{
	vf_c v;
	for (int i = 0; i < VL; i++)
		v[i] = lmd_f16_to_f32(p[i]);
	return v;
}
static inline vf_c loadb_c(const uint16_t *p)
{
	vh_c h;
	memcpy(&h, p, sizeof(h));
	vu_c u = __builtin_convertvector(h, vu_c) << 16;
	vf_c v;
	memcpy(&v, &u, sizeof(v));
	return v;
}
#define LOADH(p) loadh_c(p)
#define LOADB(p) loadb_c(p)
#include "cpu-kernels.inc"
#undef K
#undef KNAME
#undef TILE_MAX
#undef VL
#undef VF
#undef VU
#undef VH
#undef LOADH
#undef LOADB

#if defined(__x86_64__)
#include <immintrin.h>

#ifdef __clang__  // fp-contract is on in clang already
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#pragma GCC optimize("fp-contract=fast")
#endif
#define K(f) f##_avx2
#define KNAME "avx2"
#define TILE_MAX 4
#define VL 8
typedef float vf_avx2 __attribute__((vector_size(32)));
typedef uint32_t vu_avx2 __attribute__((vector_size(32)));
typedef uint16_t vh_avx2 __attribute__((vector_size(16)));
#define VF vf_avx2
#define VU vu_avx2
#define VH vh_avx2
static inline vf_avx2 loadb_avx2(const uint16_t *p)
{
	__m256i u = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16);
	return (vf_avx2)_mm256_castsi256_ps(u);
}
#define LOADH(p) ((vf_avx2)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p))))
#define LOADB(p) loadb_avx2(p)
static inline float hadd_avx2(vf_avx2 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128((__m256)v), _mm256_extractf128_ps((__m256)v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}
#define HSUM(v) hadd_avx2(v)
#define STOREH(p, v) _mm_storeu_si128((__m128i *)(p), _mm256_cvtps_ph((__m256)(v), _MM_FROUND_TO_NEAREST_INT))
#include "cpu-kernels.inc"
#undef K
#undef KNAME
#undef TILE_MAX
#undef VL
#undef VF
#undef VU
#undef VH
#undef LOADH
#undef LOADB
#undef STOREH
#undef HSUM
#ifdef __clang__
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#ifdef __clang__  // fp-contract is on in clang already
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,fma,f16c")
#pragma GCC optimize("fp-contract=fast")
#endif
#define K(f) f##_avx512
#define KNAME "avx512"
#define TILE_MAX 8
#define VL 16
typedef float vf_avx512 __attribute__((vector_size(64)));
typedef uint32_t vu_avx512 __attribute__((vector_size(64)));
typedef uint16_t vh_avx512 __attribute__((vector_size(32)));
#define VF vf_avx512
#define VU vu_avx512
#define VH vh_avx512
static inline vf_avx512 loadb_avx512(const uint16_t *p)
{
	__m512i u = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16);
	return (vf_avx512)_mm512_castsi512_ps(u);
}
#define LOADH(p) ((vf_avx512)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p))))
#define LOADB(p) loadb_avx512(p)
#define HSUM(v) _mm512_reduce_add_ps((__m512)(v))
#define STOREH(p, v) \
	_mm256_storeu_si256((__m256i *)(p), _mm512_cvtps_ph((__m512)(v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
#include "cpu-kernels.inc"
#undef K
#undef KNAME
#undef TILE_MAX
#undef VL
#undef VF
#undef VU
#undef VH
#undef LOADH
#undef LOADB
#undef STOREH
#undef HSUM
#ifdef __clang__
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

static const struct kernels *pick_kernels(void)
{
	const char *isa = getenv("LMD_CPU_ISA");  // for tests and benchmarks: force "c" or "avx2"
#if defined(__x86_64__)
	__builtin_cpu_init();
	int has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		     __builtin_cpu_supports("avx512vl");
	int has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
	if (has512 && (!isa || !strcmp(isa, "avx512")))
		return &kernels_avx512;
	if (has2 && (!isa || !strcmp(isa, "avx2") || !strcmp(isa, "avx512")))
		return &kernels_avx2;
#endif
	(void)isa;
	return &kernels_c;
}

// ----------------------------------------------------------------------------
// context and scratch

struct cpu_ctx {
	struct lmd_pool *pool;
	int nt;
	const struct kernels *k;
	struct lmd_step step;
	float *cs;          // [n][rot_half][2] cos, sin of the step's tokens
	size_t cs_cap;
	float *xbuf;        // fp32 copy of a matmul's input
	size_t xbuf_cap;
	float **scr;        // [nt] per-thread scratch
	size_t scr_cap;     // floats each
};

static int grow(float **p, size_t *cap, size_t n, struct lmd_err *err)
{
	if (n <= *cap)
		return LMD_OK;
	free(*p);
	*p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
	if (!*p) {
		*cap = 0;
		return lmd_errorf(err, LMD_ENOMEM, "out of memory (cpu scratch of %zu floats)", n);
	}
	*cap = n;
	return LMD_OK;
}

static int need_scratch(struct cpu_ctx *c, size_t n, struct lmd_err *err)
{
	if (n <= c->scr_cap)
		return LMD_OK;
	for (int i = 0; i < c->nt; i++) {
		size_t cap = c->scr_cap;
		if (grow(&c->scr[i], &cap, n, err))
			return LMD_ENOMEM;
	}
	c->scr_cap = n;
	return LMD_OK;
}

static int64_t nrows(const struct lmd_tensor *t)
{
	return t->ndim == 1 ? 1 : lmd_tensor_numel(t) / t->shape[t->ndim - 1];
}

static int64_t ncols(const struct lmd_tensor *t)
{
	return t->shape[t->ndim - 1];
}

static void *rowp(const struct lmd_tensor *t, int64_t r)
{
	return (char *)t->data + (size_t)r * (size_t)ncols(t) * lmd_dtype_size(t->dtype);
}

// ----------------------------------------------------------------------------
// row-wise ops, split over rows

struct rows_args {
	struct cpu_ctx *c;
	struct lmd_tensor *y, *x;
	const struct lmd_tensor *r, *g;
	float eps;
	int first;
	const struct lmd_attn_dims *d;
	struct lmd_kvcache *kv;
	int layer;
	const float *spread;
	const int32_t *top_k;
	void (*row)(struct rows_args *a, int64_t i, float *scr);
	int64_t n;
};

/* Rows per task: a few tasks per thread, so a late thread costs little. */
static int chunk_of(int n, int nt, int align)
{
	int per = (n + 4 * nt - 1) / (4 * nt);
	per = (per + align - 1) / align * align;
	return per > 0 ? per : align;
}

static void rows_run(void *arg, int task, int tid)
{
	struct rows_args *a = arg;
	int per = chunk_of((int)a->n, a->c->nt, 1);
	for (int64_t i = (int64_t)task * per; i < a->n && i < (int64_t)(task + 1) * per; i++)
		a->row(a, i, a->c->scr[tid]);
}

static int run_rows(struct cpu_ctx *c, struct rows_args *a, int64_t n, size_t scratch, struct lmd_err *err)
{
	if (need_scratch(c, scratch, err))
		return LMD_ENOMEM;
	a->c = c;
	a->n = n;
	int per = chunk_of((int)n, c->nt, 1);
	lmd_pool_run(c->pool, rows_run, a, (int)((n + per - 1) / per));
	return LMD_OK;
}

/* y = round(g * x * inv), from the fp32 row in buf; gbuf holds g in fp32. */
static void norm_row(const struct kernels *k, void *y, enum lmd_dtype yt, float *buf, const float *gbuf, float eps,
		     int64_t n)
{
	float ss = 0;
	for (int64_t i = 0; i < n; i++)
		ss += buf[i] * buf[i];
	float inv = 1.0f / sqrtf(ss / (float)n + eps);
	for (int64_t i = 0; i < n; i++)
		buf[i] = gbuf[i] * (buf[i] * inv);
	k->store(y, yt, buf, (size_t)n);
}

static void rmsnorm_row(struct rows_args *a, int64_t i, float *scr)
{
	const struct kernels *k = a->c->k;
	int64_t n = ncols(a->x);
	float *g = scr, *buf = scr + n;
	k->load(g, a->g->data, a->g->dtype, (size_t)n);
	k->load(buf, rowp(a->x, i), a->x->dtype, (size_t)n);
	norm_row(k, rowp(a->y, i), a->y->dtype, buf, g, a->eps, n);
}

static void add_rmsnorm_row(struct rows_args *a, int64_t i, float *scr)
{
	const struct kernels *k = a->c->k;
	int64_t n = ncols(a->x);
	float *g = scr, *buf = scr + n, *rb = scr + 2 * n;
	k->load(g, a->g->data, a->g->dtype, (size_t)n);
	k->load(buf, rowp(a->x, i), a->x->dtype, (size_t)n);
	k->load(rb, rowp(a->r, i), a->r->dtype, (size_t)n);
	for (int64_t j = 0; j < n; j++)
		buf[j] += rb[j];
	k->store(rowp(a->x, i), a->x->dtype, buf, (size_t)n);
	if (a->x->dtype != LMD_F32)
		k->load(buf, rowp(a->x, i), a->x->dtype, (size_t)n);
	norm_row(k, rowp(a->y, i), a->y->dtype, buf, g, a->eps, n);
}

static void silu_row(struct rows_args *a, int64_t i, float *scr)
{
	const struct kernels *k = a->c->k;
	int64_t n = ncols(a->y);
	float *gb = scr, *ub = scr + n;
	k->load(gb, rowp(a->x, i), a->x->dtype, (size_t)(2 * n));
	for (int64_t j = 0; j < n; j++)
		gb[j] = gb[j] / (1.0f + expf(-gb[j])) * ub[j];
	k->store(rowp(a->y, i), a->y->dtype, gb, (size_t)n);
}

static void rope_row(struct rows_args *a, int64_t i, float *scr)
{
	const struct kernels *k = a->c->k;
	int D = a->d->head_dim, half = D / 2, nh = a->d->heads + a->d->kv_heads;
	const float *cs = a->c->cs + (size_t)i * half * 2;
	size_t n = (size_t)nh * D;
	k->load(scr, rowp(a->x, i), a->x->dtype, n);
	for (int h = 0; h < nh; h++) {
		float *x = scr + (size_t)h * D;
		for (int j = 0; j < half; j++) {
			float x0 = x[j], x1 = x[j + half], c = cs[2 * j], s = cs[2 * j + 1];
			x[j] = x0 * c - x1 * s;
			x[j + half] = x1 * c + x0 * s;
		}
	}
	k->store(rowp(a->x, i), a->x->dtype, scr, n);
}

static void embed_row(struct rows_args *a, int64_t i, float *scr)
{
	const struct kernels *k = a->c->k;
	int64_t n = ncols(a->g);
	k->load(scr, rowp(a->g, a->c->step.tokens[i]), a->g->dtype, (size_t)n);
	k->store(rowp(a->y, i), a->y->dtype, scr, (size_t)n);
}

static void gather_row(struct rows_args *a, int64_t i, float *scr)
{
	const struct kernels *k = a->c->k;
	int64_t n = ncols(a->x);
	k->load(scr, rowp(a->x, a->c->step.out_rows[a->first + i]), a->x->dtype, (size_t)n);
	k->store(rowp(a->y, i), a->y->dtype, scr, (size_t)n);
}

static void kv_row(struct rows_args *a, int64_t i, float *scr)
{
	const struct kernels *k = a->c->k;
	const struct lmd_step *s = &a->c->step;
	struct lmd_kvcache *kv = a->kv;
	int D = a->d->head_dim, H = a->d->heads, KV = a->d->kv_heads, bl = kv->block_len;
	size_t es = lmd_dtype_size(a->x->dtype), cs = lmd_dtype_size(kv->dtype);
	int p = s->pos[i], blk = s->block_table[(size_t)s->seq[i] * s->max_blocks + p / bl];
	const char *r = rowp(a->x, i);
	for (int h = 0; h < KV; h++) {
		size_t off = (((size_t)blk * KV + h) * bl + p % bl) * D * cs;
		k->load(scr, r + (size_t)(H + h) * D * es, a->x->dtype, (size_t)D);
		k->store((char *)kv->k[a->layer].data + off, kv->dtype, scr, (size_t)D);
		k->load(scr, r + (size_t)(H + KV + h) * D * es, a->x->dtype, (size_t)D);
		k->store((char *)kv->v[a->layer].data + off, kv->dtype, scr, (size_t)D);
	}
}

// ----------------------------------------------------------------------------
// the ops

static int cpu_step_begin(void *ctx, const struct lmd_step *s, struct lmd_err *err)
{
	struct cpu_ctx *c = ctx;
	c->step = *s;
	if (grow(&c->cs, &c->cs_cap, (size_t)s->n * s->rot_half * 2, err))
		return LMD_ENOMEM;
	lmd_cpu_rope_table(c->cs, s);
	return LMD_OK;
}

static int cpu_embed(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *table, struct lmd_err *err)
{
	struct cpu_ctx *c = ctx;
	if (ncols(y) != ncols(table) || nrows(y) < c->step.n)
		LMD_BUG("embed: shapes");
	struct rows_args a = {.y = y, .g = table, .row = embed_row};
	return run_rows(c, &a, c->step.n, (size_t)ncols(table), err);
}

static int cpu_rmsnorm(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *g,
		       float eps, struct lmd_err *err)
{
	if (ncols(y) != ncols(x) || nrows(y) != nrows(x) || lmd_tensor_numel(g) != ncols(x))
		LMD_BUG("rmsnorm: shapes");
	struct rows_args a = {.y = y, .x = (struct lmd_tensor *)x, .g = g, .eps = eps, .row = rmsnorm_row};
	return run_rows(ctx, &a, nrows(x), 2 * (size_t)ncols(x), err);
}

static int cpu_add_rmsnorm(void *ctx, struct lmd_tensor *y, struct lmd_tensor *x, const struct lmd_tensor *r,
			   const struct lmd_tensor *g, float eps, struct lmd_err *err)
{
	if (ncols(y) != ncols(x) || nrows(y) != nrows(x) || ncols(r) != ncols(x) || nrows(r) != nrows(x) ||
	    lmd_tensor_numel(g) != ncols(x))
		LMD_BUG("add_rmsnorm: shapes");
	struct rows_args a = {.y = y, .x = x, .r = r, .g = g, .eps = eps, .row = add_rmsnorm_row};
	return run_rows(ctx, &a, nrows(x), 3 * (size_t)ncols(x), err);
}

static int cpu_silu_mul(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *gu, struct lmd_err *err)
{
	if (ncols(gu) != 2 * ncols(y) || nrows(gu) != nrows(y))
		LMD_BUG("silu_mul: shapes");
	struct rows_args a = {.y = y, .x = (struct lmd_tensor *)gu, .row = silu_row};
	return run_rows(ctx, &a, nrows(y), 2 * (size_t)ncols(y), err);
}

static int cpu_rope(void *ctx, struct lmd_tensor *qkv, const struct lmd_attn_dims *d, struct lmd_err *err)
{
	struct cpu_ctx *c = ctx;
	if (ncols(qkv) != (int64_t)(d->heads + 2 * d->kv_heads) * d->head_dim || d->head_dim / 2 != c->step.rot_half ||
	    nrows(qkv) < c->step.n)
		LMD_BUG("rope: shapes");
	struct rows_args a = {.x = qkv, .d = d, .row = rope_row};
	return run_rows(c, &a, c->step.n, (size_t)ncols(qkv), err);
}

static int cpu_kv_store(void *ctx, struct lmd_kvcache *kv, int layer, const struct lmd_tensor *qkv,
			const struct lmd_attn_dims *d, struct lmd_err *err)
{
	struct cpu_ctx *c = ctx;
	if (d->head_dim != kv->head_dim || d->kv_heads != kv->kv_heads ||
	    ncols(qkv) != (int64_t)(d->heads + 2 * d->kv_heads) * d->head_dim)
		LMD_BUG("kv_store: shapes");
	if (kv->quant != LMD_KV_NONE) {  // quantized cache: the reference ops (kvcache.h)
		lmd_cpu_kv_store(kv, layer, qkv, d, &c->step);
		return LMD_OK;
	}
	struct rows_args a = {.x = (struct lmd_tensor *)qkv, .d = d, .kv = kv, .layer = layer, .row = kv_row};
	return run_rows(c, &a, c->step.n, (size_t)d->head_dim, err);
}

static int cpu_rope_kv_store(void *ctx, struct lmd_tensor *qkv, struct lmd_kvcache *kv, int layer,
			     const struct lmd_attn_dims *d, struct lmd_err *err)
{
	int rc = cpu_rope(ctx, qkv, d, err);
	return rc ? rc : cpu_kv_store(ctx, kv, layer, qkv, d, err);
}

static int cpu_gather_rows(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, int first,
			   struct lmd_err *err)
{
	struct cpu_ctx *c = ctx;
	if (ncols(y) != ncols(x) || first + nrows(y) > c->step.nout)
		LMD_BUG("gather_rows: shapes");
	struct rows_args a = {.y = y, .x = (struct lmd_tensor *)x, .first = first, .row = gather_row};
	return run_rows(c, &a, nrows(y), (size_t)ncols(x), err);
}

/* y: head, x: cand, r: logits */
static void pick_row(struct rows_args *a, int64_t i, float *scr)
{
	(void)scr;
	lmd_cpu_pick_row(rowp(a->r, i), ncols(a->r), a->spread[i], a->top_k ? a->top_k[i] : 0, rowp(a->y, i),
			 rowp(a->x, i), ncols(a->x) / 2);
}

static int cpu_pick(void *ctx, struct lmd_tensor *head, struct lmd_tensor *cand, const struct lmd_tensor *logits,
		    const float *spread, const int32_t *top_k, struct lmd_err *err)
{
	if (!lmd_pick_shapes_ok(head, cand, logits))
		LMD_BUG("pick: shapes");
	struct rows_args a = {.y = head, .x = cand, .r = logits, .spread = spread, .top_k = top_k, .row = pick_row};
	return run_rows(ctx, &a, nrows(logits), 0, err);
}

struct mm_job {
	struct cpu_ctx *c;
	struct mm_args a;
	const struct lmd_tensor *x;  // the input when it must be converted to fp32 first
};

static void mm_convert(void *arg, int task, int tid)
{
	(void)tid;
	struct mm_job *j = arg;
	int per = chunk_of(j->a.n, j->c->nt, 1);
	for (int i = task * per; i < j->a.n && i < (task + 1) * per; i++)
		j->c->k->load(j->c->xbuf + (size_t)i * j->a.in, rowp(j->x, i), j->x->dtype, (size_t)j->a.in);
}

static void mm_run(void *arg, int task, int tid)
{
	struct mm_job *j = arg;
	int per = chunk_of(j->a.out, j->c->nt, MM_RB);
	int lo = task * per, hi = lo + per < j->a.out ? lo + per : j->a.out;
	float *scr = j->c->scr[tid];
	j->c->k->mm_range(&j->a, lo, hi, scr, scr + (size_t)MM_RB * j->a.in);
}

static int cpu_matmul(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
		      const struct lmd_tensor *bias, struct lmd_err *err)
{
	struct cpu_ctx *c = ctx;
	int64_t in = ncols(x), out = nrows(w), n = nrows(x);
	if (ncols(w) != in || ncols(y) != out || nrows(y) != n || (bias && lmd_tensor_numel(bias) != out))
		LMD_BUG("matmul: shapes");
	struct mm_job j = {.c = c, .a = {.n = (int)n, .in = (int)in, .out = (int)out, .w = w->data, .wt = w->dtype,
					 .y = y->data, .yt = y->dtype}};
	if (need_scratch(c, (size_t)MM_RB * in + (size_t)MM_TT * MM_RB, err))
		return LMD_ENOMEM;
	float *bias32 = NULL;
	if (bias) {
		if (!(bias32 = lmd_malloc((size_t)out * sizeof(float), err)))
			return LMD_ENOMEM;
		c->k->load(bias32, bias->data, bias->dtype, (size_t)out);
		j.a.bias = bias32;
	}
	if (x->dtype == LMD_F32) {
		j.a.x = x->data;
	} else {
		if (grow(&c->xbuf, &c->xbuf_cap, (size_t)n * in, err)) {
			free(bias32);
			return LMD_ENOMEM;
		}
		j.x = x;
		j.a.x = c->xbuf;
		int per = chunk_of((int)n, c->nt, 1);
		lmd_pool_run(c->pool, mm_convert, &j, (int)((n + per - 1) / per));
	}
	int per = chunk_of((int)out, c->nt, MM_RB);
	lmd_pool_run(c->pool, mm_run, &j, (int)((out + per - 1) / per));
	free(bias32);
	return LMD_OK;
}

/*
 * int4 matmul: per (token row, output) the sum over groups of scale * (Σ x·q - zero * Σ x), the nibbles
 * turned into floats in registers; the group sums of x are computed once per row.
 */
struct q4_job {
	struct cpu_ctx *c;
	const float *x;              // [n][in] fp32
	const float *xs;             // [n][in/group] group sums of x
	const uint8_t *q, *z;
	const uint16_t *s;
	const float *bias;
	struct lmd_tensor *y;
	int n, in, out, group;
};

static void q4_run(void *arg, int task, int tid)
{
	(void)tid;
	struct q4_job *j = arg;
	int per = chunk_of(j->out, j->c->nt, 8), ng = j->in / j->group;
	int lo = task * per, hi = lo + per < j->out ? lo + per : j->out;
	float sc[64], zs[64];
	for (int o = lo; o < hi; o++) {
		const uint8_t *qr = j->q + (size_t)o * (j->in / 2);
		for (int g = 0; g < ng && g < 64; g++)
			sc[g] = lmd_f16_to_f32(j->s[(size_t)o * ng + g]), zs[g] = (float)j->z[(size_t)o * ng + g];
		for (int r = 0; r < j->n; r++) {
			const float *x = j->x + (size_t)r * j->in, *xs = j->xs + (size_t)r * ng;
			float acc = 0;
			for (int g = 0; g < ng; g++) {
				const uint8_t *qg = qr + g * j->group / 2;
				const float *xg = x + g * j->group;
				float a0 = 0, a1 = 0;
				for (int i = 0; i < j->group / 2; i++) {
					a0 += xg[2 * i] * (float)(qg[i] & 15);
					a1 += xg[2 * i + 1] * (float)(qg[i] >> 4);
				}
				acc += sc[g] * (a0 + a1 - zs[g] * xs[g]);
			}
			if (j->bias)
				acc += j->bias[o];
			float v = acc;
			lmd_cpu_store((char *)j->y->data + ((size_t)r * j->out + o) * lmd_dtype_size(j->y->dtype), j->y->dtype,
				      &v, 1);
		}
	}
}

static int cpu_matmul_q4(void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x, const struct lmd_tensor *w,
			 const struct lmd_tensor *scales, const struct lmd_tensor *zeros, int group,
			 const struct lmd_tensor *bias, struct lmd_err *err)
{
	struct cpu_ctx *c = ctx;
	int64_t in = ncols(x), out = nrows(w), n = nrows(x);
	if (ncols(w) * 2 != in || ncols(y) != out || nrows(y) != n || group < 2 || in % group || nrows(scales) != out ||
	    ncols(scales) != in / group || nrows(zeros) != out || ncols(zeros) != in / group ||
	    (bias && lmd_tensor_numel(bias) != out))
		LMD_BUG("matmul_q4: shapes");
	if (in / group > 64) {  // more groups than q4_run keeps in registers: the reference does it
		lmd_cpu_matmul_q4(y, x, w, scales, zeros, group, bias);
		return LMD_OK;
	}
	int ng = (int)(in / group);
	float *xf = lmd_malloc((size_t)n * in * sizeof(float), err);
	float *xs = xf ? lmd_malloc((size_t)n * ng * sizeof(float), err) : NULL;
	float *b32 = bias && xs ? lmd_malloc((size_t)out * sizeof(float), err) : NULL;
	if (!xf || !xs || (bias && !b32)) {
		free(xf), free(xs);
		return LMD_ENOMEM;
	}
	lmd_cpu_load(xf, x->data, x->dtype, (size_t)(n * in));
	for (int64_t r = 0; r < n; r++)
		for (int g = 0; g < ng; g++) {
			float s = 0;
			for (int i = 0; i < group; i++)
				s += xf[r * in + (int64_t)g * group + i];
			xs[r * ng + g] = s;
		}
	if (bias)
		lmd_cpu_load(b32, bias->data, bias->dtype, (size_t)out);
	struct q4_job j = {c, xf, xs, w->data, zeros->data, scales->data, b32, y, (int)n, (int)in, (int)out, group};
	int per = chunk_of((int)out, c->nt, 8);
	lmd_pool_run(c->pool, q4_run, &j, (int)((out + per - 1) / per));
	free(xf), free(xs), free(b32);
	return LMD_OK;
}

struct att_job {
	struct cpu_ctx *c;
	struct att_args a;
};

static void att_run(void *arg, int task, int tid)
{
	struct att_job *j = arg;
	int KV = j->a.d->kv_heads;
	j->c->k->att_item(&j->a, task / KV, task % KV, j->c->scr[tid]);
}

static int cpu_attention(void *ctx, struct lmd_tensor *att, const struct lmd_tensor *qkv,
			 const struct lmd_kvcache *kv, int layer, const struct lmd_attn_dims *d, struct lmd_err *err)
{
	struct cpu_ctx *c = ctx;
	int D = d->head_dim, H = d->heads, group = H / d->kv_heads;
	if (D != kv->head_dim || d->kv_heads != kv->kv_heads || ncols(att) != (int64_t)H * D ||
	    ncols(qkv) != (int64_t)(H + 2 * d->kv_heads) * D)
		LMD_BUG("attention: shapes");
	if (kv->quant != LMD_KV_NONE) {  // quantized cache: the reference op dequantizes as it reads
		lmd_cpu_attention(att, qkv, kv, layer, d, &c->step);
		return LMD_OK;
	}
	int maxlen = 0;
	for (int i = 0; i < c->step.n; i++)
		maxlen = c->step.pos[i] + 1 > maxlen ? c->step.pos[i] + 1 : maxlen;
	if (need_scratch(c, (size_t)2 * group * D + (size_t)kv->block_len * D + (size_t)group * maxlen, err))
		return LMD_ENOMEM;
	struct att_job j = {c, {&c->step, qkv, att, kv, layer, d, maxlen}};
	int64_t work = 0;  // query-key pairs: a small step is not worth waking the pool for
	for (int i = 0; i < c->step.n; i++)
		work += (int64_t)(c->step.pos[i] + 1) * H;
	if (work < 4096)
		for (int t = 0; t < c->step.n * d->kv_heads; t++)
			att_run(&j, t, 0);
	else
		lmd_pool_run(c->pool, att_run, &j, c->step.n * d->kv_heads);
	return LMD_OK;
}

/*
 * Weights are copied into memory backed by huge pages where the kernel allows (madvise): decode
 * streams every weight once a step, and with 4 KiB pages of a file mapping the TLB misses and the
 * prefetchers stopping at every page boundary cost more than the copy.
 */
static int cpu_alloc_huge(void *ctx, struct lmd_tensor *t, struct lmd_err *err)
{
	(void)ctx;
	size_t n = lmd_tensor_nbytes(t), huge = (size_t)2 << 20;
	size_t cap = n >= huge ? (n + huge - 1) / huge * huge : (n + 63) / 64 * 64 + 64;
	t->data = aligned_alloc(n >= huge ? huge : 64, cap);
	if (!t->data)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory allocating %zu bytes", n);
#ifdef MADV_HUGEPAGE
	if (n >= huge)
		madvise(t->data, cap, MADV_HUGEPAGE);
#endif
	return LMD_OK;
}

static int cpu_weight(void *ctx, struct lmd_tensor *dst, const struct lmd_tensor *src, struct lmd_err *err)
{
	*dst = *src;
	int rc = cpu_alloc_huge(ctx, dst, err);
	if (rc == LMD_OK)
		memcpy(dst->data, src->data, lmd_tensor_nbytes(src));
	return rc;
}

static void cpu_close(void *ctx)
{
	struct cpu_ctx *c = ctx;
	lmd_pool_close(c->pool);
	for (int i = 0; c->scr && i < c->nt; i++)
		free(c->scr[i]);
	free(c->scr);
	free(c->cs);
	free(c->xbuf);
	free(c);
}

static const struct lmd_backend_ops cpu_ops;

static int cpu_gate_up(void *ctx, struct lmd_tensor *y, struct lmd_tensor *gu, const struct lmd_tensor *x,
		       const struct lmd_tensor *w, const struct lmd_tensor *s, const struct lmd_tensor *z, int group,
		       struct lmd_err *err)
{
	return lmd_gate_up_two(&cpu_ops, ctx, y, gu, x, w, s, z, group, err);
}

static const struct lmd_backend_ops cpu_ops = {
	.name = "cpu",
	.weights_in_place = 0,
	.kv_quant = 1,
	.close = cpu_close,
	.alloc = cpu_alloc_huge,
	.release = lmd_cpu_release,
	.weight = cpu_weight,
	.upload = lmd_cpu_upload,
	.download = lmd_cpu_download,
	.sync = lmd_cpu_sync,
	.step_begin = cpu_step_begin,
	.embed = cpu_embed,
	.rmsnorm = cpu_rmsnorm,
	.add_rmsnorm = cpu_add_rmsnorm,
	.matmul = cpu_matmul,
	.matmul_q4 = cpu_matmul_q4,
	.rope = cpu_rope,
	.kv_store = cpu_kv_store,
	.rope_kv_store = cpu_rope_kv_store,
	.attention = cpu_attention,
	.silu_mul = cpu_silu_mul,
	.gate_up = cpu_gate_up,
	.gather_rows = cpu_gather_rows,
	.pick = cpu_pick,
};

int lmd_backend_cpu_open(struct lmd_backend *b, const struct lmd_backend_opts *opts, struct lmd_err *err)
{
	struct cpu_ctx *c = lmd_calloc(1, sizeof(*c), err);
	if (!c)
		return LMD_ENOMEM;
	int rc = lmd_pool_open(&c->pool, opts ? opts->threads : 0, err);
	if (rc < 0) {
		free(c);
		return rc;
	}
	c->nt = lmd_pool_threads(c->pool);
	c->k = pick_kernels();
	c->scr = lmd_calloc((size_t)c->nt, sizeof(*c->scr), err);
	if (!c->scr) {
		cpu_close(c);
		return LMD_ENOMEM;
	}
	b->ops = &cpu_ops;
	b->ctx = c;
	return LMD_OK;
}

/** The instruction set the CPU backend picked ("avx512", "avx2" or "c"), for benchmarks and logs. */
const char *lmd_backend_cpu_isa(const struct lmd_backend *b)
{
	return b->ops == &cpu_ops ? ((struct cpu_ctx *)b->ctx)->k->isa : NULL;
}
