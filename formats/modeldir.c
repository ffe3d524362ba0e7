#include <errno.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "modeldir.h"
#include "msgpack-json.h"

// --- reading msgpack objects

static const msgpack_object *mp_get(const msgpack_object *map, const char *key)
{
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	size_t kl = strlen(key);
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;
		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl && !memcmp(k->via.str.ptr, key, kl))
			return &map->via.map.ptr[i].val;
	}
	return NULL;
}

struct rd {
	const char *what;
	struct lmd_err *err;
};

static int rd_int(struct rd *r, const msgpack_object *map, const char *key, int64_t lo, int64_t hi, int64_t *out)
{
	const msgpack_object *v = mp_get(map, key);
	if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= (uint64_t)INT64_MAX)
		*out = (int64_t)v->via.u64;
	else if (v && v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		*out = v->via.i64;
	else
		return lmd_errorf(r->err, LMD_EFORMAT, "%s: '%s' is missing or not an integer", r->what, key);
	if (*out < lo || *out > hi)
		return lmd_errorf(r->err, LMD_EFORMAT, "%s: '%s' is %lld, out of range", r->what, key, (long long)*out);
	return LMD_OK;
}

static int rd_i32(struct rd *r, const msgpack_object *map, const char *key, int *out)
{
	int64_t v;
	int rc = rd_int(r, map, key, -1, 1 << 30, &v);
	*out = (int)v;
	return rc;
}

static int rd_num(struct rd *r, const msgpack_object *map, const char *key, double *out)
{
	const msgpack_object *v = mp_get(map, key);
	if (v && (v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32))
		*out = v->via.f64;
	else if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		*out = (double)v->via.u64;
	else
		return lmd_errorf(r->err, LMD_EFORMAT, "%s: '%s' is missing or not a number", r->what, key);
	return LMD_OK;
}

static int rd_str(struct rd *r, const msgpack_object *map, const char *key, char *out, size_t n)
{
	const msgpack_object *v = mp_get(map, key);
	if (!v || v->type != MSGPACK_OBJECT_STR || v->via.str.size >= n)
		return lmd_errorf(r->err, LMD_EFORMAT, "%s: '%s' is missing or not a short string", r->what, key);
	memcpy(out, v->via.str.ptr, v->via.str.size);
	out[v->via.str.size] = 0;
	return LMD_OK;
}

static int rd_bool(struct rd *r, const msgpack_object *map, const char *key, int *out)
{
	const msgpack_object *v = mp_get(map, key);
	if (!v || v->type != MSGPACK_OBJECT_BOOLEAN)
		return lmd_errorf(r->err, LMD_EFORMAT, "%s: '%s' is missing or not a boolean", r->what, key);
	*out = v->via.boolean;
	return LMD_OK;
}

static int rd_config(struct rd *r, const msgpack_object *c, struct lmd_config *cfg)
{
	char s[64];
	int rc, t;
	const msgpack_object *rope = mp_get(c, "rope"), *eos = mp_get(c, "eos_token_ids");
	memset(cfg, 0, sizeof(*cfg));
	if (!c || c->type != MSGPACK_OBJECT_MAP || !rope || rope->type != MSGPACK_OBJECT_MAP)
		return lmd_errorf(r->err, LMD_EFORMAT, "%s: 'config' (with 'rope') is missing", r->what);
	if ((rc = rd_str(r, c, "architecture", s, sizeof(s))))
		return rc;
	if ((t = lmd_arch_parse(s)) < 0)
		return lmd_errorf(r->err, LMD_EFORMAT, "%s: architecture '%s' is not supported", r->what, s);
	cfg->arch = t;
	if ((rc = rd_i32(r, c, "hidden_size", &cfg->hidden)) || (rc = rd_i32(r, c, "intermediate_size", &cfg->inter)) ||
	    (rc = rd_i32(r, c, "num_layers", &cfg->layers)) || (rc = rd_i32(r, c, "num_heads", &cfg->heads)) ||
	    (rc = rd_i32(r, c, "num_kv_heads", &cfg->kv_heads)) || (rc = rd_i32(r, c, "head_dim", &cfg->head_dim)) ||
	    (rc = rd_i32(r, c, "vocab_size", &cfg->vocab)) ||
	    (rc = rd_i32(r, c, "max_position_embeddings", &cfg->max_pos)) ||
	    (rc = rd_num(r, c, "rms_norm_eps", &cfg->rms_eps)) || (rc = rd_bool(r, c, "tie_embeddings", &cfg->tie_embeddings)) ||
	    (rc = rd_bool(r, c, "qkv_bias", &cfg->qkv_bias)) || (rc = rd_bool(r, c, "o_bias", &cfg->o_bias)) ||
	    (rc = rd_i32(r, c, "bos_token_id", &cfg->bos)) || (rc = rd_i32(r, c, "tp", &cfg->tp)) ||
	    (rc = rd_str(r, c, "model_name", cfg->model_name, sizeof(cfg->model_name))) ||
	    (rc = rd_str(r, c, "chat_template", cfg->chat_template, sizeof(cfg->chat_template))) ||
	    (rc = rd_str(r, c, "dtype", s, sizeof(s))))
		return rc;
	cfg->dtype = lmd_dtype_parse(s);
	if ((rc = rd_str(r, rope, "type", s, sizeof(s))))
		return rc;
	if ((t = lmd_rope_parse(s)) < 0)
		return lmd_errorf(r->err, LMD_EFORMAT, "%s: rope type '%s' is not supported", r->what, s);
	cfg->rope.type = t;
	if ((rc = rd_num(r, rope, "theta", &cfg->rope.theta)) || (rc = rd_num(r, rope, "factor", &cfg->rope.factor)) ||
	    (rc = rd_num(r, rope, "low_freq_factor", &cfg->rope.low_freq_factor)) ||
	    (rc = rd_num(r, rope, "high_freq_factor", &cfg->rope.high_freq_factor)) ||
	    (rc = rd_i32(r, rope, "original_max_position_embeddings", &cfg->rope.original_max_pos)))
		return rc;
	if (!eos || eos->type != MSGPACK_OBJECT_ARRAY || eos->via.array.size > LMD_MAX_EOS)
		return lmd_errorf(r->err, LMD_EFORMAT, "%s: 'eos_token_ids' is missing or too long", r->what);
	for (uint32_t i = 0; i < eos->via.array.size; i++) {
		const msgpack_object *e = &eos->via.array.ptr[i];
		if (e->type != MSGPACK_OBJECT_POSITIVE_INTEGER || e->via.u64 > (1u << 30))
			return lmd_errorf(r->err, LMD_EFORMAT, "%s: 'eos_token_ids' holds a bad id", r->what);
		cfg->eos[cfg->n_eos++] = (int)e->via.u64;
	}
	return lmd_config_validate(cfg, r->what, r->err);
}

static int rd_quant(struct rd *r, const msgpack_object *q, struct lmd_quant *out)
{
	memset(out, 0, sizeof(*out));
	if (!q || q->type == MSGPACK_OBJECT_NIL)
		return LMD_OK;
	int rc;
	if ((rc = rd_str(r, q, "method", out->method, sizeof(out->method))) || (rc = rd_i32(r, q, "bits", &out->bits)) ||
	    (rc = rd_i32(r, q, "group_size", &out->group_size)) ||
	    (rc = rd_str(r, q, "scales", out->scales, sizeof(out->scales))) ||
	    (rc = rd_str(r, q, "zeros", out->zeros, sizeof(out->zeros))))
		return rc;
	return LMD_OK;
}

static int rd_tensor(struct rd *r, const msgpack_object *o, struct lmd_mtensor *t, int nfiles, int tp)
{
	char name[128], dt[16];
	int64_t v;
	int rc;
	if ((rc = rd_str(r, o, "name", name, sizeof(name))))
		return rc;
	if (!(t->name = lmd_strdup(name, r->err)))
		return LMD_ENOMEM;
	const msgpack_object *shape = mp_get(o, "shape");
	if ((rc = rd_str(r, o, "dtype", dt, sizeof(dt))))
		return lmd_err_prefix(r->err, "tensor '%s'", name);
	t->t.dtype = lmd_dtype_parse(dt);
	if (t->t.dtype == LMD_DTYPE_NONE)
		return lmd_errorf(r->err, LMD_EFORMAT, "%s: tensor '%s': unknown dtype '%s'", r->what, name, dt);
	if (!shape || shape->type != MSGPACK_OBJECT_ARRAY || shape->via.array.size > LMD_MAX_DIMS)
		return lmd_errorf(r->err, LMD_EFORMAT, "%s: tensor '%s': bad shape", r->what, name);
	t->t.ndim = (int)shape->via.array.size;
	uint64_t numel = 1;
	for (int i = 0; i < t->t.ndim; i++) {
		const msgpack_object *d = &shape->via.array.ptr[i];
		if (d->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
			return lmd_errorf(r->err, LMD_EFORMAT, "%s: tensor '%s': bad shape", r->what, name);
		if (d->via.u64 > (1ULL << 40))
			return lmd_errorf(r->err, LMD_EFORMAT, "%s: tensor '%s': bad shape", r->what, name);
		t->t.shape[i] = (int64_t)d->via.u64;
		numel *= d->via.u64;
		if (numel > (1ULL << 48))
			return lmd_errorf(r->err, LMD_EFORMAT, "%s: tensor '%s': shape too large", r->what, name);
	}
	if ((rc = rd_int(r, o, "file", 0, nfiles - 1, &v)))
		return lmd_err_prefix(r->err, "tensor '%s'", name);
	t->file = (int)v;
	if ((rc = rd_int(r, o, "offset", 0, INT64_MAX, &v)))
		return lmd_err_prefix(r->err, "tensor '%s'", name);
	t->offset = (uint64_t)v;
	if ((rc = rd_int(r, o, "nbytes", 0, INT64_MAX, &v)))
		return lmd_err_prefix(r->err, "tensor '%s'", name);
	t->nbytes = (uint64_t)v;
	if ((rc = rd_int(r, o, "rank", -1, tp - 1, &v)))
		return lmd_err_prefix(r->err, "tensor '%s'", name);
	t->rank = (int)v;
	if ((rc = rd_int(r, o, "split_axis", -1, t->t.ndim - 1, &v)))
		return lmd_err_prefix(r->err, "tensor '%s'", name);
	t->split_axis = (int)v;
	if ((rc = rd_quant(r, mp_get(o, "quant"), &t->quant)))
		return lmd_err_prefix(r->err, "tensor '%s'", name);
	if (numel * lmd_dtype_size(t->t.dtype) != t->nbytes)
		return lmd_errorf(r->err, LMD_EFORMAT, "%s: tensor '%s': shape needs %llu bytes, index says %llu", r->what,
				  name, (unsigned long long)(numel * lmd_dtype_size(t->t.dtype)), (unsigned long long)t->nbytes);
	if (t->offset % LMD_MODELDIR_ALIGN)
		return lmd_errorf(r->err, LMD_EFORMAT, "%s: tensor '%s': offset %llu is not aligned to %d", r->what, name,
				  (unsigned long long)t->offset, LMD_MODELDIR_ALIGN);
	if ((t->rank < 0) != (t->split_axis < 0))
		return lmd_errorf(r->err, LMD_EFORMAT, "%s: tensor '%s': rank and split_axis disagree", r->what, name);
	return LMD_OK;
}

void lmd_modeldir_close(struct lmd_modeldir *m)
{
	for (int i = 0; i < m->nfiles; i++) {
		if (m->files)
			free(m->files[i]);
		if (m->maps)
			lmd_map_close(&m->maps[i]);
	}
	for (int i = 0; i < m->n; i++)
		free(m->t[i].name);
	free(m->files);
	free(m->maps);
	free(m->t);
	free(m->path);
	memset(m, 0, sizeof(*m));
}

static int parse_index(struct lmd_modeldir *m, const void *buf, size_t len, const char *what, struct lmd_err *err)
{
	msgpack_unpacked u;
	size_t off = 0;
	struct rd r = {what, err};
	char magic[32];
	int64_t ver;
	int rc = LMD_OK;
	if (lmd_msgpack_check(buf, len))
		return lmd_errorf(err, LMD_EFORMAT, "%s: not a valid msgpack object", what);
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS || u.data.type != MSGPACK_OBJECT_MAP) {
		msgpack_unpacked_destroy(&u);
		return lmd_errorf(err, LMD_EFORMAT, "%s: not a msgpack map", what);
	}
	const msgpack_object *root = &u.data, *files = mp_get(root, "files"), *ts = mp_get(root, "tensors");
	if ((rc = rd_str(&r, root, "magic", magic, sizeof(magic))))
		goto out;
	if (strcmp(magic, LMD_MODELDIR_MAGIC)) {
		rc = lmd_errorf(err, LMD_EFORMAT, "%s: magic '%s' is not '%s'", what, magic, LMD_MODELDIR_MAGIC);
		goto out;
	}
	if ((rc = rd_int(&r, root, "version", 0, INT64_MAX, &ver)))
		goto out;
	if (ver != LMD_MODELDIR_VERSION) {
		rc = lmd_errorf(err, LMD_EFORMAT, "%s: version %lld is not supported (this lmd reads version %d)", what,
				(long long)ver, LMD_MODELDIR_VERSION);
		goto out;
	}
	if ((rc = rd_config(&r, mp_get(root, "config"), &m->cfg)))
		goto out;
	if (!files || files->type != MSGPACK_OBJECT_ARRAY || !files->via.array.size || files->via.array.size > 64 ||
	    !ts || ts->type != MSGPACK_OBJECT_ARRAY) {
		rc = lmd_errorf(err, LMD_EFORMAT, "%s: 'files' (1 to 64) or 'tensors' is missing", what);
		goto out;
	}
	m->files = calloc(files->via.array.size, sizeof(*m->files));
	m->maps = calloc(files->via.array.size, sizeof(*m->maps));
	m->t = calloc(ts->via.array.size ? ts->via.array.size : 1, sizeof(*m->t));
	if (!m->files || !m->maps || !m->t) {
		rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
		goto out;
	}
	m->nfiles = (int)files->via.array.size;
	for (int i = 0; i < m->nfiles; i++) {
		const msgpack_object *f = &files->via.array.ptr[i];
		if (f->type != MSGPACK_OBJECT_STR || !f->via.str.size || memchr(f->via.str.ptr, '/', f->via.str.size) ||
		    memchr(f->via.str.ptr, 0, f->via.str.size) || (f->via.str.size == 2 && !memcmp(f->via.str.ptr, "..", 2))) {
			rc = lmd_errorf(err, LMD_EFORMAT, "%s: files[%d] is not a plain file name", what, i);
			goto out;
		}
		if (!(m->files[i] = strndup(f->via.str.ptr, f->via.str.size))) {
			rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
			goto out;
		}
	}
	for (uint32_t i = 0; i < ts->via.array.size; i++) {
		m->n++;
		if ((rc = rd_tensor(&r, &ts->via.array.ptr[i], &m->t[i], m->nfiles, m->cfg.tp)))
			goto out;
		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(m->t[j].name, m->t[i].name) && m->t[j].rank == m->t[i].rank) {
				rc = lmd_errorf(err, LMD_EFORMAT, "%s: tensor '%s' rank %d is listed twice", what, m->t[i].name,
						m->t[i].rank);
				goto out;
			}
	}
out:
	msgpack_unpacked_destroy(&u);
	return rc;
}

int lmd_modeldir_parse_index(struct lmd_modeldir *m, const void *buf, size_t len, struct lmd_err *err)
{
	memset(m, 0, sizeof(*m));
	int rc = parse_index(m, buf, len, LMD_MODELDIR_INDEX, err);
	if (rc)
		lmd_modeldir_close(m);
	return rc;
}

static int cmp_off(const void *a, const void *b)
{
	const struct lmd_mtensor *x = *(const struct lmd_mtensor *const *)a, *y = *(const struct lmd_mtensor *const *)b;
	if (x->file != y->file)
		return x->file - y->file;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Every byte range inside its file, no two overlapping. */
static int check_ranges(struct lmd_modeldir *m, struct lmd_err *err)
{
	struct lmd_mtensor **by = malloc((m->n ? m->n : 1) * sizeof(*by));
	int rc = LMD_OK;
	if (!by)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	for (int i = 0; i < m->n; i++) {
		struct lmd_mtensor *t = &m->t[i];
		by[i] = t;
		if (t->offset > m->maps[t->file].size || t->nbytes > m->maps[t->file].size - t->offset) {
			rc = lmd_errorf(err, LMD_EFORMAT, "%s/%s: tensor '%s' [%llu, +%llu) is past the end of the file (%zu bytes)",
					m->path, m->files[t->file], t->name, (unsigned long long)t->offset,
					(unsigned long long)t->nbytes, m->maps[t->file].size);
			break;
		}
		t->t.data = t->nbytes ? (char *)m->maps[t->file].data + t->offset : NULL;
	}
	if (!rc && m->n) {
		qsort(by, m->n, sizeof(*by), cmp_off);
		for (int i = 1; i < m->n && !rc; i++)
			if (by[i]->file == by[i - 1]->file && by[i]->nbytes && by[i]->offset < by[i - 1]->offset + by[i - 1]->nbytes)
				rc = lmd_errorf(err, LMD_EFORMAT, "%s: tensors '%s' and '%s' overlap in '%s'", m->path,
						by[i - 1]->name, by[i]->name, m->files[by[i]->file]);
	}
	free(by);
	return rc;
}

struct need_ctx {
	const struct lmd_modeldir *m;
	struct lmd_err *err;
};

/* The architecture's tensors are all there, with the shapes the config implies. */
static int need_one(const char *name, const int64_t *shape, int ndim, int split_axis, void *ctx)
{
	struct need_ctx *c = ctx;
	int tp = c->m->cfg.tp, ranks = split_axis < 0 || tp == 1 ? 1 : tp;
	for (int r = 0; r < ranks; r++) {
		const struct lmd_mtensor *t = lmd_modeldir_find(c->m, name, ranks == 1 ? -1 : r);
		if (!t || (ranks > 1 && t->rank != r))
			return lmd_errorf(c->err, LMD_EFORMAT, "%s: tensor '%s'%s is missing", c->m->path, name,
					  ranks > 1 ? " (a rank)" : "");
		if (t->quant.method[0])
			continue;
		int ok = t->t.ndim == ndim;
		for (int d = 0; ok && d < ndim; d++)
			ok = t->t.shape[d] == (d == split_axis && ranks > 1 ? shape[d] / tp : shape[d]);
		if (!ok)
			return lmd_errorf(c->err, LMD_EFORMAT, "%s: tensor '%s' has the wrong shape for the config", c->m->path,
					  name);
	}
	return 0;
}

int lmd_modeldir_is(const char *path)
{
	char *p = lmd_path_join(path, LMD_MODELDIR_INDEX, NULL);
	int is = p && lmd_exists(p);
	free(p);
	return is;
}

int lmd_modeldir_open(struct lmd_modeldir *m, const char *path, struct lmd_err *err)
{
	struct lmd_map idx = {0};
	char *ipath = NULL;
	int rc;
	memset(m, 0, sizeof(*m));
	if (!(m->path = lmd_strdup(path, err)) || !(ipath = lmd_path_join(path, LMD_MODELDIR_INDEX, err))) {
		rc = LMD_ENOMEM;
		goto out;
	}
	if ((rc = lmd_map_open(&idx, ipath, err)) || (rc = parse_index(m, idx.data, idx.size, ipath, err)))
		goto out;
	for (int i = 0; i < m->nfiles; i++) {
		char *fp = lmd_path_join(path, m->files[i], err);
		rc = fp ? lmd_map_open(&m->maps[i], fp, err) : LMD_ENOMEM;
		free(fp);
		if (rc)
			goto out;
	}
	if ((rc = check_ranges(m, err)))
		goto out;
	struct need_ctx nc = {m, err};
	rc = lmd_config_tensors(&m->cfg, need_one, &nc);
out:
	lmd_map_close(&idx);
	free(ipath);
	if (rc)
		lmd_modeldir_close(m);
	return rc;
}

const struct lmd_mtensor *lmd_modeldir_find(const struct lmd_modeldir *m, const char *name, int rank)
{
	for (int i = 0; i < m->n; i++)
		if (!strcmp(m->t[i].name, name) && (m->t[i].rank == rank || m->t[i].rank < 0 || rank < 0))
			return &m->t[i];
	return NULL;
}

int lmd_modeldir_gather(const struct lmd_modeldir *m, const char *name, struct lmd_tensor *out, void **owned,
			struct lmd_err *err)
{
	const struct lmd_mtensor *first = lmd_modeldir_find(m, name, 0);
	*owned = NULL;
	if (!first)
		return lmd_errorf(err, LMD_EFORMAT, "%s: no tensor '%s'", m->path, name);
	*out = first->t;
	if (first->rank < 0)
		return LMD_OK;
	int tp = m->cfg.tp, ax = first->split_axis;
	out->shape[ax] *= tp;
	size_t es = lmd_dtype_size(out->dtype);
	char *buf = lmd_malloc(lmd_tensor_nbytes(out), err);
	if (!buf)
		return LMD_ENOMEM;
	/* rows = product of dims before the axis; chunk = bytes of one rank's slab per row */
	int64_t rows = 1, inner = es;
	for (int d = 0; d < ax; d++)
		rows *= out->shape[d];
	for (int d = ax + 1; d < out->ndim; d++)
		inner *= out->shape[d];
	size_t chunk = (size_t)(first->t.shape[ax] * inner);
	for (int r = 0; r < tp; r++) {
		const struct lmd_mtensor *s = lmd_modeldir_find(m, name, r);
		if (!s || s->rank != r || s->t.shape[ax] != first->t.shape[ax] || s->t.dtype != first->t.dtype) {
			free(buf);
			return lmd_errorf(err, LMD_EFORMAT, "%s: tensor '%s': rank %d is missing or differs", m->path, name, r);
		}
		for (int64_t i = 0; i < rows; i++)
			memcpy(buf + (size_t)i * chunk * tp + (size_t)r * chunk, (const char *)s->t.data + (size_t)i * chunk, chunk);
	}
	out->data = buf;
	*owned = buf;
	return LMD_OK;
}

// --- writing

static void pk_str(msgpack_packer *p, const char *s)
{
	size_t n = strlen(s);
	msgpack_pack_str(p, n);
	msgpack_pack_str_body(p, s, n);
}

static void pk_kv_int(msgpack_packer *p, const char *k, int64_t v)
{
	pk_str(p, k);
	msgpack_pack_int64(p, v);
}

static void pk_kv_num(msgpack_packer *p, const char *k, double v)
{
	pk_str(p, k);
	msgpack_pack_double(p, v);
}

static void pk_kv_str(msgpack_packer *p, const char *k, const char *v)
{
	pk_str(p, k);
	pk_str(p, v);
}

static void pk_kv_bool(msgpack_packer *p, const char *k, int v)
{
	pk_str(p, k);
	v ? msgpack_pack_true(p) : msgpack_pack_false(p);
}

static void pk_config(msgpack_packer *p, const struct lmd_config *c)
{
	msgpack_pack_map(p, 20);
	pk_kv_str(p, "architecture", lmd_arch_name(c->arch));
	pk_kv_int(p, "hidden_size", c->hidden);
	pk_kv_int(p, "intermediate_size", c->inter);
	pk_kv_int(p, "num_layers", c->layers);
	pk_kv_int(p, "num_heads", c->heads);
	pk_kv_int(p, "num_kv_heads", c->kv_heads);
	pk_kv_int(p, "head_dim", c->head_dim);
	pk_kv_int(p, "vocab_size", c->vocab);
	pk_kv_int(p, "max_position_embeddings", c->max_pos);
	pk_kv_num(p, "rms_norm_eps", c->rms_eps);
	pk_str(p, "rope");
	msgpack_pack_map(p, 6);
	pk_kv_str(p, "type", lmd_rope_name(c->rope.type));
	pk_kv_num(p, "theta", c->rope.theta);
	pk_kv_num(p, "factor", c->rope.factor);
	pk_kv_num(p, "low_freq_factor", c->rope.low_freq_factor);
	pk_kv_num(p, "high_freq_factor", c->rope.high_freq_factor);
	pk_kv_int(p, "original_max_position_embeddings", c->rope.original_max_pos);
	pk_kv_bool(p, "tie_embeddings", c->tie_embeddings);
	pk_kv_bool(p, "qkv_bias", c->qkv_bias);
	pk_kv_bool(p, "o_bias", c->o_bias);
	pk_kv_str(p, "dtype", lmd_dtype_short(c->dtype));
	pk_kv_int(p, "bos_token_id", c->bos);
	pk_str(p, "eos_token_ids");
	msgpack_pack_array(p, c->n_eos);
	for (int i = 0; i < c->n_eos; i++)
		msgpack_pack_int64(p, c->eos[i]);
	pk_kv_int(p, "tp", c->tp);
	pk_kv_str(p, "model_name", c->model_name);
	pk_kv_str(p, "chat_template", c->chat_template);
}

json_t *lmd_config_to_json(const struct lmd_config *c)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_unpacked u;
	json_t *j = NULL;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	pk_config(&pk, c);
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, sb.data, sb.size, NULL) == MSGPACK_UNPACK_SUCCESS)
		j = lmd_msgpack_to_json(&u.data);
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&sb);
	return j;
}

static void pk_tensor(msgpack_packer *p, const struct lmd_mtensor *t)
{
	msgpack_pack_map(p, 9);
	pk_kv_str(p, "name", t->name);
	pk_kv_str(p, "dtype", lmd_dtype_short(t->t.dtype));
	pk_str(p, "shape");
	msgpack_pack_array(p, t->t.ndim);
	for (int d = 0; d < t->t.ndim; d++)
		msgpack_pack_int64(p, t->t.shape[d]);
	pk_kv_int(p, "file", t->file);
	pk_kv_int(p, "offset", (int64_t)t->offset);
	pk_kv_int(p, "nbytes", (int64_t)t->nbytes);
	pk_kv_int(p, "rank", t->rank);
	pk_kv_int(p, "split_axis", t->split_axis);
	pk_str(p, "quant");
	if (!t->quant.method[0]) {
		msgpack_pack_nil(p);
		return;
	}
	msgpack_pack_map(p, 5);
	pk_kv_str(p, "method", t->quant.method);
	pk_kv_int(p, "bits", t->quant.bits);
	pk_kv_int(p, "group_size", t->quant.group_size);
	pk_kv_str(p, "scales", t->quant.scales);
	pk_kv_str(p, "zeros", t->quant.zeros);
}

static const char *weight_file(int rank, char *buf, size_t n)
{
	if (rank < 0)
		snprintf(buf, n, "weights.bin");
	else
		snprintf(buf, n, "weights.rank%d.bin", rank);
	return buf;
}

int lmd_modeldir_writer_open(struct lmd_modeldir_writer *w, const char *dst, const char *src,
			     const struct lmd_config *cfg, int force, struct lmd_err *err)
{
	memset(w, 0, sizeof(*w));
	w->cfg = *cfg;
	if (cfg->tp < 1 || cfg->tp > 63)
		return lmd_errorf(err, LMD_EINVAL, "tp %d is out of range (1 to 63)", cfg->tp);
	w->nfiles = cfg->tp == 1 ? 1 : cfg->tp + 1;
	return lmd_outdir_open(&w->dir, dst, src, force, err);
}

int lmd_modeldir_writer_add(struct lmd_modeldir_writer *w, const char *name, const struct lmd_tensor *t, int rank,
			    int split_axis, struct lmd_err *err)
{
	int file = rank < 0 ? 0 : rank + 1;
	char fn[64];
	if (file >= w->nfiles)
		LMD_BUG("rank %d for tp %d", rank, w->cfg.tp);
	if (!w->f[file]) {
		char *p = lmd_path_join(w->dir.tmp, weight_file(rank, fn, sizeof(fn)), err);
		if (!p)
			return LMD_ENOMEM;
		w->f[file] = fopen(p, "wb");
		free(p);
		if (!w->f[file])
			return lmd_errorf(err, LMD_EIO, "cannot write '%s': %s", w->dir.dst, strerror(errno));
	}
	if (w->n == w->cap) {
		int nc = w->cap ? w->cap * 2 : 64;
		struct lmd_mtensor *nt = realloc(w->t, nc * sizeof(*nt));
		if (!nt)
			return lmd_errorf(err, LMD_ENOMEM, "out of memory");
		w->t = nt;
		w->cap = nc;
	}
	static const char zeros[LMD_MODELDIR_ALIGN];
	size_t pad = (LMD_MODELDIR_ALIGN - w->size[file] % LMD_MODELDIR_ALIGN) % LMD_MODELDIR_ALIGN;
	size_t nb = lmd_tensor_nbytes(t);
	if (fwrite(zeros, 1, pad, w->f[file]) != pad || (nb && fwrite(t->data, 1, nb, w->f[file]) != nb))
		return lmd_errorf(err, LMD_EIO, "cannot write '%s': %s", w->dir.dst, strerror(errno));
	struct lmd_mtensor *mt = &w->t[w->n];
	memset(mt, 0, sizeof(*mt));
	if (!(mt->name = lmd_strdup(name, err)))
		return LMD_ENOMEM;
	w->n++;
	mt->t = *t;
	mt->t.data = NULL;
	mt->file = file;
	mt->offset = w->size[file] + pad;
	mt->nbytes = nb;
	mt->rank = rank;
	mt->split_axis = split_axis;
	w->size[file] += pad + nb;
	return LMD_OK;
}

int lmd_modeldir_writer_copy(struct lmd_modeldir_writer *w, const char *src_path, const char *name,
			     struct lmd_err *err)
{
	char *p = lmd_path_join(w->dir.tmp, name, err);
	int rc = p ? lmd_copy_file(src_path, p, err) : LMD_ENOMEM;
	free(p);
	return rc;
}

int lmd_modeldir_writer_commit(struct lmd_modeldir_writer *w, int force, struct lmd_err *err)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char fn[64];
	int rc = LMD_OK;
	for (int i = 0; i < w->nfiles; i++) {
		if (!w->f[i]) {  /* a rank with nothing yet still gets its (empty) file */
			char *p = lmd_path_join(w->dir.tmp, weight_file(i - 1, fn, sizeof(fn)), err);
			w->f[i] = p ? fopen(p, "wb") : NULL;
			free(p);
		}
		if (!w->f[i] || fflush(w->f[i]) || ferror(w->f[i]) || fsync(fileno(w->f[i])))
			rc = lmd_errorf(err, LMD_EIO, "cannot write '%s': %s", w->dir.dst, strerror(errno));
		if (w->f[i] && fclose(w->f[i]) && !rc)
			rc = lmd_errorf(err, LMD_EIO, "cannot write '%s': %s", w->dir.dst, strerror(errno));
		w->f[i] = NULL;
	}
	if (rc) {
		lmd_modeldir_writer_abort(w);
		return rc;
	}
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 5);
	pk_kv_str(&pk, "magic", LMD_MODELDIR_MAGIC);
	pk_kv_int(&pk, "version", LMD_MODELDIR_VERSION);
	pk_str(&pk, "config");
	pk_config(&pk, &w->cfg);
	pk_str(&pk, "files");
	msgpack_pack_array(&pk, w->nfiles);
	for (int i = 0; i < w->nfiles; i++)
		pk_str(&pk, weight_file(i - 1, fn, sizeof(fn)));
	pk_str(&pk, "tensors");
	msgpack_pack_array(&pk, w->n);
	for (int i = 0; i < w->n; i++)
		pk_tensor(&pk, &w->t[i]);
	char *ip = lmd_path_join(w->dir.tmp, LMD_MODELDIR_INDEX, err);
	rc = ip ? lmd_write_atomic(ip, sb.data, sb.size, err) : LMD_ENOMEM;
	free(ip);
	msgpack_sbuffer_destroy(&sb);
	if (!rc)
		rc = lmd_outdir_commit(&w->dir, force, err);
	lmd_modeldir_writer_abort(w);
	return rc;
}

void lmd_modeldir_writer_abort(struct lmd_modeldir_writer *w)
{
	for (int i = 0; i < 64; i++)
		if (w->f[i])
			fclose(w->f[i]);
	for (int i = 0; i < w->n; i++)
		free(w->t[i].name);
	free(w->t);
	lmd_outdir_abort(&w->dir);
	memset(w, 0, sizeof(*w));
}
