#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "convert.h"
#include "hfconfig.h"
#include "safetensors.h"
#include "autoawq.h"

/* Side files copied verbatim from the source directory when present. */
static const char *side_files[] = {
	"config.json", "generation_config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
	"special_tokens_map.json", "added_tokens.json", "original/tokenizer.model",
};

/* Where canonical tensors come from: an HF directory (names mapped, InternLM2's wqkv unpacked) or an lmd one. */
struct source {
	const char *dir;
	struct lmd_config cfg;
	struct lmd_stset st;      /* HF */
	struct lmd_modeldir md;   /* lmd */
	int is_lmd;
	int awq, awq_group;       /* HF AutoAWQ gemm directory (qweight/qzeros/scales) and its group size */
};

static void source_close(struct source *s)
{
	lmd_stset_close(&s->st);
	lmd_modeldir_close(&s->md);
}

static int hf_tensor(struct source *s, const char *hf, struct lmd_tensor *out, struct lmd_err *err)
{
	const char *path = NULL;
	const struct lmd_st_entry *e = lmd_stset_find(&s->st, hf, &path);
	if (!e)
		return lmd_errorf(err, LMD_EFORMAT, "'%s': tensor '%s' is missing (needed for %s)", s->dir, hf,
				  lmd_arch_name(s->cfg.arch));
	if (!lmd_dtype_is_float(e->t.dtype))
		return lmd_errorf(err, LMD_EFORMAT, "%s: tensor '%s' is %s, expected a float type", path, hf,
				  lmd_dtype_name(e->t.dtype));
	*out = e->t;
	return LMD_OK;
}

/*
 * InternLM2 packs q, k and v per kv head: wqkv rows are, for each kv head j, G = heads/kv_heads q heads,
 * then k head j, then v head j (head_dim rows each). Copy out the rows of one part (0 q, 1 k, 2 v).
 */
static int unpack_wqkv(struct source *s, int layer, int part, int bias, struct lmd_tensor *out, void **owned,
		       struct lmd_err *err)
{
	const struct lmd_config *c = &s->cfg;
	char hf[96];
	struct lmd_tensor w;
	int rc, G = c->heads / c->kv_heads, hd = c->head_dim;
	snprintf(hf, sizeof(hf), "model.layers.%d.attention.wqkv.%s", layer, bias ? "bias" : "weight");
	if ((rc = hf_tensor(s, hf, &w, err)))
		return rc;
	int64_t rows = (int64_t)(c->heads + 2 * c->kv_heads) * hd, cols = bias ? 1 : c->hidden;
	if (w.ndim != (bias ? 1 : 2) || w.shape[0] != rows || (!bias && w.shape[1] != cols))
		return lmd_errorf(err, LMD_EFORMAT, "'%s': tensor '%s' has the wrong shape for the config", s->dir, hf);
	int per = part == 0 ? G : 1;  /* heads of this part per kv head */
	size_t row_bytes = (size_t)cols * lmd_dtype_size(w.dtype);
	char *buf = lmd_malloc((size_t)c->kv_heads * per * hd * row_bytes, err);
	if (!buf)
		return LMD_ENOMEM;
	for (int j = 0; j < c->kv_heads; j++) {
		int64_t src_row = (int64_t)j * (G + 2) * hd + (part == 0 ? 0 : part == 1 ? G * hd : (G + 1) * hd);
		memcpy(buf + (size_t)j * per * hd * row_bytes, (char *)w.data + (size_t)src_row * row_bytes,
		       (size_t)per * hd * row_bytes);
	}
	*out = w;
	out->shape[0] = (int64_t)c->kv_heads * per * hd;
	out->data = buf;
	*owned = buf;
	return LMD_OK;
}

static int source_get(struct source *s, const char *canon, struct lmd_tensor *out, void **owned, struct lmd_err *err)
{
	char hf[96];
	int layer;
	*owned = NULL;
	if (s->is_lmd)
		return lmd_modeldir_gather(&s->md, canon, out, owned, err);
	lmd_hf_name(&s->cfg, canon, hf, sizeof(hf));
	if (hf[0])
		return hf_tensor(s, hf, out, err);
	const char *p = strrchr(canon, '.') + 1;
	sscanf(canon, "layers.%d.", &layer);
	int part = p[1] == 'q' ? 0 : p[1] == 'k' ? 1 : 2;
	return unpack_wqkv(s, layer, part, p[0] == 'b', out, owned, err);
}

/* A tensor of a layer beyond the config's count would be dropped without a word: refuse it. */
static int check_layers(const struct source *s, struct lmd_err *err)
{
	for (int k = 0; k < s->st.n; k++)
		for (int i = 0; i < s->st.shard[k].n; i++) {
			const char *name = s->st.shard[k].e[i].name, *p = strstr(name, "layers.");
			long l;
			char *end;
			if (p && (p == name || p[-1] == '.') && (l = strtol(p + 7, &end, 10)) >= s->cfg.layers && end > p + 7 &&
			    *end == '.')
				return lmd_errorf(err, LMD_EFORMAT, "'%s': tensor '%s' is of layer %ld, but config.json's "
						  "'num_hidden_layers' is %d", s->dir, name, l, s->cfg.layers);
		}
	return LMD_OK;
}

static int source_open(struct source *s, const char *dir, struct lmd_err *err)
{
	int rc;
	memset(s, 0, sizeof(*s));
	s->dir = dir;
	if ((rc = lmd_need_dir(dir, "model directory", err)))
		return rc;
	if (lmd_modeldir_is(dir)) {
		s->is_lmd = 1;
		if ((rc = lmd_modeldir_open(&s->md, dir, err)))
			return rc;
		s->cfg = s->md.cfg;
		return LMD_OK;
	}
	if ((rc = lmd_hfconfig_load(&s->cfg, dir, err)) ||
	    (rc = lmd_config_validate(&(struct lmd_config){.dtype = LMD_F32, .tp = 1, .hidden = s->cfg.hidden, .inter = s->cfg.inter,
			.layers = s->cfg.layers, .heads = s->cfg.heads, .kv_heads = s->cfg.kv_heads, .head_dim = s->cfg.head_dim,
			.vocab = s->cfg.vocab, .max_pos = s->cfg.max_pos, .rms_eps = s->cfg.rms_eps, .rope = s->cfg.rope},
			"config.json", err)) ||
	    (rc = lmd_stset_open(&s->st, dir, err))) {
		source_close(s);
		return rc;
	}
	if ((rc = check_layers(s, err)))
		return source_close(s), rc;
	char hf0[96];
	lmd_hf_name(&s->cfg, "layers.0.wq", hf0, sizeof(hf0));
	if (strlen(hf0) > 7) {
		strcpy(hf0 + strlen(hf0) - 7, ".scales");
		const struct lmd_st_entry *e = lmd_stset_find(&s->st, hf0, NULL);
		if (e) {
			s->awq = 1;
			s->awq_group = e->t.ndim == 2 && e->t.shape[0] > 0 ? (int)(s->cfg.hidden / e->t.shape[0]) : 0;
			if (s->awq_group < 8 || s->cfg.hidden % s->awq_group)
				return source_close(s), lmd_errorf(err, LMD_EFORMAT, "'%s': tensor '%s' has an unexpected shape",
								   dir, hf0);
			if (s->cfg.dtype == LMD_DTYPE_NONE)
				s->cfg.dtype = LMD_F16;
		}
	}
	if (s->cfg.dtype == LMD_DTYPE_NONE) {
		struct lmd_tensor e;
		char hf[96];
		lmd_hf_name(&s->cfg, "tok_embeddings", hf, sizeof(hf));
		if ((rc = hf_tensor(s, hf, &e, err))) {
			source_close(s);
			return rc;
		}
		s->cfg.dtype = e.dtype;
	}
	return LMD_OK;
}

// --- writing

struct job {
	struct source *src;
	struct lmd_modeldir_writer w;
	const struct lmd_convert_opts *o;
	struct lmd_err *err;
	int done, total;
	void *conv;               /* owned scratch for dtype conversion */
	size_t conv_cap;
	void *slab;               /* owned scratch for one rank's slab */
	size_t slab_cap;
};

static void *scratch(void **p, size_t *cap, size_t n, struct lmd_err *err)
{
	if (n > *cap) {
		void *q = realloc(*p, n);
		if (!q) {
			lmd_errorf(err, LMD_ENOMEM, "out of memory (%zu bytes)", n);
			return NULL;
		}
		*p = q;
		*cap = n;
	}
	return *p;
}

static int count_fn(const char *name, const int64_t *shape, int ndim, int split_axis, void *ctx)
{
	(void)name, (void)shape, (void)ndim, (void)split_axis;
	((struct job *)ctx)->total++;
	return 0;
}

static int write_split(struct job *j, const char *name, const struct lmd_tensor *t, int axis)
{
	int tp = j->w.cfg.tp;
	size_t es = lmd_dtype_size(t->dtype);
	int64_t rows = 1, inner = es;
	for (int d = 0; d < axis; d++)
		rows *= t->shape[d];
	for (int d = axis + 1; d < t->ndim; d++)
		inner *= t->shape[d];
	struct lmd_tensor part = *t;
	part.shape[axis] /= tp;
	size_t chunk = (size_t)(part.shape[axis] * inner);
	char *slab = scratch(&j->slab, &j->slab_cap, lmd_tensor_nbytes(&part), j->err);
	if (!slab)
		return LMD_ENOMEM;
	part.data = slab;
	for (int r = 0; r < tp; r++) {
		for (int64_t i = 0; i < rows; i++)
			memcpy(slab + (size_t)i * chunk, (const char *)t->data + (size_t)i * chunk * tp + (size_t)r * chunk, chunk);
		int rc = lmd_modeldir_writer_add(&j->w, name, &part, r, axis, j->err);
		if (rc)
			return rc;
	}
	return LMD_OK;
}

static int is_linear(const char *name)
{
	const char *d = strrchr(name, '.');
	return d && d[1] == 'w' && strchr("qkvo123", d[2]) && !d[3];
}

/* An AWQ gemm tensor of an HF directory by stem and suffix, checked for dtype and shape. */
static int awq_part(struct source *s, const char *stem, const char *suf, enum lmd_dtype dt, int64_t d0, int64_t d1,
		    const void **data, struct lmd_err *err)
{
	char hf[128];
	snprintf(hf, sizeof(hf), "%s.%s", stem, suf);
	const char *path = NULL;
	const struct lmd_st_entry *e = lmd_stset_find(&s->st, hf, &path);
	if (!e)
		return lmd_errorf(err, LMD_EFORMAT, "'%s': tensor '%s' is missing (an AWQ directory)", s->dir, hf);
	if (e->t.dtype != dt || e->t.ndim != 2 || e->t.shape[0] != d0 || e->t.shape[1] != d1)
		return lmd_errorf(err, LMD_EFORMAT, "%s: tensor '%s': expected %s [%lld, %lld]", path, hf, lmd_dtype_name(dt),
				  (long long)d0, (long long)d1);
	*data = e->t.data;
	return LMD_OK;
}

/* A linear of an AWQ directory, repacked into the engine's int4 layout (q4.h): NAME, NAME.scales, NAME.zeros. */
static int convert_awq(struct job *j, const char *name, const int64_t *shape)
{
	struct source *s = j->src;
	int out = (int)shape[0], in = (int)shape[1], g = s->awq_group, ng = in / g, rc;
	char stem[128], nm[128];
	lmd_hf_name(&s->cfg, name, stem, sizeof(stem));
	stem[strlen(stem) - 7] = 0;  /* ".weight" */
	if (in % g || out % 8)
		return lmd_errorf(j->err, LMD_EFORMAT, "'%s': tensor '%s': %d inputs not a multiple of the group size %d",
				  s->dir, stem, in, g);
	const void *qw, *qz, *sc;
	if ((rc = awq_part(s, stem, "qweight", LMD_I32, in, out / 8, &qw, j->err)) ||
	    (rc = awq_part(s, stem, "qzeros", LMD_I32, ng, out / 8, &qz, j->err)) ||
	    (rc = awq_part(s, stem, "scales", LMD_F16, ng, out, &sc, j->err)))
		return rc;
	uint8_t *q = malloc((size_t)in * out), *z = malloc((size_t)ng * out);
	uint8_t *pq = malloc((size_t)out * in / 2), *pz = malloc((size_t)out * ng);
	uint16_t *ps = malloc((size_t)out * ng * sizeof(uint16_t));
	if (!q || !z || !pq || !pz || !ps) {
		rc = lmd_errorf(j->err, LMD_ENOMEM, "out of memory");
		goto done;
	}
	lmd_awq_unpack(qw, in, out, q);
	lmd_awq_unpack(qz, ng, out, z);
	for (int o = 0; o < out; o++) {
		for (int i = 0; i < in; i += 2)
			pq[(size_t)o * (in / 2) + i / 2] = (uint8_t)(q[(size_t)i * out + o] | q[(size_t)(i + 1) * out + o] << 4);
		for (int k = 0; k < ng; k++) {
			pz[(size_t)o * ng + k] = z[(size_t)k * out + o];
			ps[(size_t)o * ng + k] = ((const uint16_t *)sc)[(size_t)k * out + o];
		}
	}
	struct lmd_quant qt = {.method = "awq", .bits = 4, .group_size = g};
	snprintf(qt.scales, sizeof(qt.scales), "%s.scales", name);
	snprintf(qt.zeros, sizeof(qt.zeros), "%s.zeros", name);
	struct lmd_tensor t = {.dtype = LMD_U8, .ndim = 2, .shape = {out, in / 2}, .data = pq};
	if ((rc = lmd_modeldir_writer_add(&j->w, name, &t, -1, -1, j->err)))
		goto done;
	j->w.t[j->w.n - 1].quant = qt;
	t = (struct lmd_tensor){.dtype = LMD_F16, .ndim = 2, .shape = {out, ng}, .data = ps};
	if ((rc = lmd_modeldir_writer_add(&j->w, qt.scales, &t, -1, -1, j->err)))
		goto done;
	t = (struct lmd_tensor){.dtype = LMD_U8, .ndim = 2, .shape = {out, ng}, .data = pz};
	snprintf(nm, sizeof(nm), "%s", qt.zeros);
	rc = lmd_modeldir_writer_add(&j->w, nm, &t, -1, -1, j->err);
done:
	free(q), free(z), free(pq), free(pz), free(ps);
	j->done++;
	return rc;
}

static int convert_fn(const char *name, const int64_t *shape, int ndim, int split_axis, void *ctx)
{
	struct job *j = ctx;
	struct lmd_tensor t;
	void *owned = NULL;
	if (j->src->awq && is_linear(name))
		return convert_awq(j, name, shape);
	int rc = source_get(j->src, name, &t, &owned, j->err);
	if (rc)
		return rc;
	int ok = t.ndim == ndim;
	for (int d = 0; ok && d < ndim; d++)
		ok = t.shape[d] == shape[d];
	if (!ok) {
		char want[64], got[64];
		int n = 0, m = 0;
		for (int d = 0; d < ndim; d++)
			n += snprintf(want + n, sizeof(want) - n, "%s%lld", d ? "," : "", (long long)shape[d]);
		for (int d = 0; d < t.ndim; d++)
			m += snprintf(got + m, sizeof(got) - m, "%s%lld", d ? "," : "", (long long)t.shape[d]);
		free(owned);
		return lmd_errorf(j->err, LMD_EFORMAT, "'%s': tensor '%s': expected shape [%s] from the config, found [%s]",
				  j->src->dir, name, want, got);
	}
	size_t nonfinite = lmd_tensor_nonfinite(&t);
	if (nonfinite && !j->o->quiet)
		fprintf(stderr, "%slmd-convert: warning: tensor '%s' has %zu values that are NaN or infinite\n",
			j->o->progress ? "\n" : "", name, nonfinite);
	enum lmd_dtype dt = j->o->dtype == LMD_DTYPE_NONE ? t.dtype : j->o->dtype;
	if (dt != t.dtype) {
		size_t n = (size_t)lmd_tensor_numel(&t), over = 0;
		void *buf = scratch(&j->conv, &j->conv_cap, n * lmd_dtype_size(dt), j->err);
		if (!buf) {
			free(owned);
			return LMD_ENOMEM;
		}
		lmd_dtype_convert(buf, dt, t.data, t.dtype, n, &over);
		if (over && !j->o->quiet)
			fprintf(stderr, "lmd-convert: warning: %zu values of '%s' exceed the %s range; saturated\n", over, name,
				lmd_dtype_short(dt));
		t.data = buf;
		t.dtype = dt;
	}
	if (split_axis < 0 || j->w.cfg.tp == 1)
		rc = lmd_modeldir_writer_add(&j->w, name, &t, -1, -1, j->err);
	else
		rc = write_split(j, name, &t, split_axis);
	free(owned);
	j->done++;
	lmd_progress(j->o->progress, j->done, j->total);
	return rc;
}

static int check_tp(const struct lmd_config *c, int tp, struct lmd_err *err)
{
	if (tp < 1 || tp > 32)
		return lmd_errorf(err, LMD_EINVAL, "--tp %d is out of range (1 to 32)", tp);
	if (c->heads % tp || c->kv_heads % tp || c->inter % tp)
		return lmd_errorf(err, LMD_EINVAL, "--tp %d does not divide the heads (%d), kv heads (%d) and "
				  "intermediate size (%d)", tp, c->heads, c->kv_heads, c->inter);
	return LMD_OK;
}

static const char *base_name(const char *path, char *buf, size_t n)
{
	char tmp[PATH_MAX];
	snprintf(tmp, sizeof(tmp), "%s", path);
	size_t l = strlen(tmp);
	while (l > 1 && tmp[l - 1] == '/')
		tmp[--l] = 0;
	const char *b = strrchr(tmp, '/');
	snprintf(buf, n, "%s", b ? b + 1 : tmp);
	return buf;
}

static int copy_side_files(struct job *j, const char *src)
{
	for (size_t i = 0; i < sizeof(side_files) / sizeof(side_files[0]); i++) {
		char *p = lmd_path_join(src, side_files[i], j->err);
		int rc = p ? LMD_OK : LMD_ENOMEM;
		if (!rc && lmd_exists(p)) {
			if (strchr(side_files[i], '/')) {
				char *d = lmd_path_join(j->w.dir.tmp, "original", j->err);
				if (d)
					mkdir(d, 0755);
				free(d);
			}
			rc = lmd_modeldir_writer_copy(&j->w, p, side_files[i], j->err);
		}
		free(p);
		if (rc)
			return rc;
	}
	return LMD_OK;
}

int lmd_convert(const char *src, const char *dst, const struct lmd_convert_opts *o, struct lmd_err *err)
{
	struct source s;
	struct job j = {.src = &s, .o = o, .err = err};
	int rc;
	if (o->dtype != LMD_DTYPE_NONE && !lmd_dtype_is_float(o->dtype))
		return lmd_errorf(err, LMD_EINVAL, "--dtype must be keep, fp16, bf16 or fp32");
	if (o->chat_template && (strchr(o->chat_template, '/') || strlen(o->chat_template) >= sizeof(s.cfg.chat_template)))
		return lmd_errorf(err, LMD_EINVAL, "--chat-template '%s' is not a template name", o->chat_template);
	if ((rc = source_open(&s, src, err)))
		return rc;
	if (o->model_format && !strcmp(o->model_format, "awq") && !s.awq) {
		source_close(&s);
		return lmd_errorf(err, LMD_EFORMAT, "'%s': not an AWQ directory (no 'qweight' tensors)", src);
	}
	if (s.awq && o->tp > 1) {
		source_close(&s);
		return lmd_errorf(err, LMD_EINVAL, "--tp %d: AWQ models are converted unsplit for now", o->tp);
	}
	if (s.awq && s.cfg.arch == LMD_ARCH_INTERNLM2) {
		source_close(&s);
		return lmd_errorf(err, LMD_EINVAL, "'%s': AWQ InternLM2 directories are not supported yet", src);
	}
	struct lmd_config cfg = s.cfg;
	cfg.tp = o->tp > 0 ? o->tp : 1;
	if (o->dtype != LMD_DTYPE_NONE)
		cfg.dtype = o->dtype;
	if (o->model_name)
		snprintf(cfg.model_name, sizeof(cfg.model_name), "%s", o->model_name);
	else if (!s.is_lmd)
		base_name(src, cfg.model_name, sizeof(cfg.model_name));
	if (o->chat_template)
		snprintf(cfg.chat_template, sizeof(cfg.chat_template), "%s", o->chat_template);
	if ((rc = check_tp(&cfg, cfg.tp, err)) || (rc = lmd_config_validate(&cfg, src, err)) ||
	    (rc = lmd_modeldir_writer_open(&j.w, dst, src, &cfg, o->force, err))) {
		source_close(&s);
		return rc;
	}
	lmd_config_tensors(&cfg, count_fn, &j);
	rc = lmd_config_tensors(&cfg, convert_fn, &j);
	if (!rc)
		rc = copy_side_files(&j, src);
	if (!rc)
		rc = lmd_modeldir_writer_commit(&j.w, o->force, err);
	else
		lmd_modeldir_writer_abort(&j.w);
	free(j.conv);
	free(j.slab);
	source_close(&s);
	return rc;
}

// --- open any model directory

/* FNV-1a over the source's identity: its real path and the size and time of every file we read. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ULL;
	return h;
}

static uint64_t source_key(const char *dir)
{
	char real[PATH_MAX];
	uint64_t h = 14695981039346656037ULL;
	if (realpath(dir, real))
		h = fnv(h, real, strlen(real));
	const char *files[] = {"config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
			       "tokenizer.model", "tokenizer.json", "tokenizer_config.json"};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char *p = lmd_path_join(dir, files[i], NULL);
		struct stat st;
		if (p && stat(p, &st) == 0) {
			h = fnv(h, &st.st_size, sizeof(st.st_size));
			h = fnv(h, &st.st_mtim, sizeof(st.st_mtim));
		}
		free(p);
	}
	h = fnv(h, LMD_MODELDIR_MAGIC, 9);
	return h;
}

int lmd_cache_dir(char *out, size_t n, struct lmd_err *err)
{
	const char *c = getenv("LMD_CACHE"), *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	if (c && *c)
		snprintf(out, n, "%s", c);
	else if (x && *x)
		snprintf(out, n, "%s/lmd", x);
	else if (home && *home)
		snprintf(out, n, "%s/.cache/lmd", home);
	else
		return lmd_errorf(err, LMD_EIO, "no cache directory: set LMD_CACHE");
	char tmp[PATH_MAX];
	snprintf(tmp, sizeof(tmp), "%s", out);
	for (char *p = tmp + 1; *p; p++)
		if (*p == '/') {
			*p = 0;
			mkdir(tmp, 0755);
			*p = '/';
		}
	if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
		return lmd_errorf(err, LMD_EIO, "cannot create cache directory '%s': %s", out, strerror(errno));
	return LMD_OK;
}

int lmd_model_open_any(struct lmd_modeldir *m, const char *path, struct lmd_err *err)
{
	char cache[PATH_MAX], dst[PATH_MAX + 128], name[96];
	int rc;
	memset(m, 0, sizeof(*m));
	if (lmd_modeldir_is(path))
		return lmd_modeldir_open(m, path, err);
	if ((rc = lmd_need_dir(path, "model directory", err)))
		return rc;
	if ((rc = lmd_cache_dir(cache, sizeof(cache), err)))
		return rc;
	lmd_remove_stale_tmps(cache, NULL);  /* the cache is ours: any interrupted conversion */
	snprintf(dst, sizeof(dst), "%s/%s-%016llx", cache, base_name(path, name, sizeof(name)),
		 (unsigned long long)source_key(path));
	if (lmd_modeldir_is(dst) && lmd_modeldir_open(m, dst, NULL) == LMD_OK)
		return LMD_OK;
	struct lmd_convert_opts o = {.dtype = LMD_DTYPE_NONE, .tp = 1, .force = 1, .quiet = 1};
	if ((rc = lmd_convert(path, dst, &o, err)))
		return rc;
	return lmd_modeldir_open(m, dst, err);
}

// --- describing a model

struct info_ctx {
	struct source *src;
	struct lmd_err *err;
	uint64_t bytes[LMD_DTYPE_COUNT];
};

static int info_fn(const char *name, const int64_t *shape, int ndim, int split_axis, void *ctx)
{
	(void)shape, (void)ndim, (void)split_axis;
	struct info_ctx *c = ctx;
	struct lmd_tensor t;
	void *owned;
	int rc = source_get(c->src, name, &t, &owned, c->err);
	if (rc)
		return rc;
	c->bytes[t.dtype] += lmd_tensor_nbytes(&t);
	free(owned);
	return 0;
}

static void print_text(FILE *out, const char *prefix, json_t *v)
{
	const char *k;
	json_t *x;
	json_object_foreach(v, k, x) {
		if (json_is_object(x)) {
			char p[128];
			snprintf(p, sizeof(p), "%s%s.", prefix, k);
			print_text(out, p, x);
			continue;
		}
		if (json_is_string(x)) {
			fprintf(out, "%s%s: %s\n", prefix, k, json_string_value(x));
			continue;
		}
		char *s = json_dumps(x, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(10));
		fprintf(out, "%s%s: %s\n", prefix, k, s ? s : "?");
		free(s);
	}
}

int lmd_model_info(const char *dir, int json, FILE *out, struct lmd_err *err)
{
	struct source s;
	struct info_ctx c = {.src = &s, .err = err};
	int rc = source_open(&s, dir, err);
	if (rc)
		return rc;
	if ((rc = lmd_config_tensors(&s.cfg, info_fn, &c))) {
		source_close(&s);
		return rc;
	}
	json_t *root = json_object(), *bytes = json_object();
	json_object_set_new(root, "path", json_string(dir));
	json_object_set_new(root, "format", json_string(s.is_lmd ? "lmd" : "hf"));
	json_object_set_new(root, "architecture", json_string(lmd_arch_name(s.cfg.arch)));
	json_object_set_new(root, "parameters", json_integer(lmd_config_param_count(&s.cfg)));
	for (int i = 0; i < LMD_DTYPE_COUNT; i++)
		if (c.bytes[i])
			json_object_set_new(bytes, lmd_dtype_short(i), json_integer((json_int_t)c.bytes[i]));
	json_object_set_new(root, "bytes", bytes);
	json_object_set_new(root, "tp", json_integer(s.cfg.tp));
	json_object_set_new(root, "config", lmd_config_to_json(&s.cfg));
	if (json) {
		char *txt = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
		fprintf(out, "%s\n", txt ? txt : "{}");
		free(txt);
	} else {
		print_text(out, "", root);
	}
	json_decref(root);
	source_close(&s);
	return LMD_OK;
}
