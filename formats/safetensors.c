#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct lmd_st_entry *)a)->name, ((const struct lmd_st_entry *)b)->name);
}

static int cmp_range(const void *a, const void *b)
{
	const struct lmd_st_entry *x = *(const struct lmd_st_entry *const *)a, *y = *(const struct lmd_st_entry *const *)b;
	return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static int parse_entry(struct lmd_st_entry *e, const char *name, json_t *v, const uint8_t *data, uint64_t data_len,
		       const char *what, struct lmd_err *err)
{
	json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape"),
	       *offs = json_object_get(v, "data_offsets");
	if (!json_is_object(v) || !json_is_string(dt) || !json_is_array(shape) || !json_is_array(offs) ||
	    json_array_size(offs) != 2)
		return lmd_errorf(err, LMD_EFORMAT, "%s: tensor '%s': needs dtype, shape and data_offsets", what, name);
	e->t.dtype = lmd_dtype_parse(json_string_value(dt));
	if (e->t.dtype == LMD_DTYPE_NONE || strcmp(json_string_value(dt), lmd_dtype_name(e->t.dtype)))
		return lmd_errorf(err, LMD_EFORMAT, "%s: tensor '%s': unknown dtype '%s'", what, name,
				  json_string_value(dt));
	if (json_array_size(shape) > LMD_MAX_DIMS)
		return lmd_errorf(err, LMD_EFORMAT, "%s: tensor '%s': %zu dimensions (at most %d)", what, name,
				  json_array_size(shape), LMD_MAX_DIMS);
	e->t.ndim = (int)json_array_size(shape);
	uint64_t numel = 1;
	for (int i = 0; i < e->t.ndim; i++) {
		json_t *d = json_array_get(shape, i);
		if (!json_is_integer(d) || json_integer_value(d) < 0 || json_integer_value(d) > (1LL << 40))
			return lmd_errorf(err, LMD_EFORMAT, "%s: tensor '%s': bad shape", what, name);
		e->t.shape[i] = json_integer_value(d);
		numel *= (uint64_t)e->t.shape[i];
		if (numel > (1ULL << 48))
			return lmd_errorf(err, LMD_EFORMAT, "%s: tensor '%s': shape too large", what, name);
	}
	json_t *b = json_array_get(offs, 0), *en = json_array_get(offs, 1);
	if (!json_is_integer(b) || !json_is_integer(en) || json_integer_value(b) < 0 ||
	    json_integer_value(en) < json_integer_value(b))
		return lmd_errorf(err, LMD_EFORMAT, "%s: tensor '%s': bad data_offsets", what, name);
	e->begin = (uint64_t)json_integer_value(b);
	e->end = (uint64_t)json_integer_value(en);
	if (e->end > data_len)
		return lmd_errorf(err, LMD_EFORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] past the end of the data (%llu bytes)",
				  what, name, (unsigned long long)e->begin, (unsigned long long)e->end,
				  (unsigned long long)data_len);
	if (numel * lmd_dtype_size(e->t.dtype) != e->end - e->begin)
		return lmd_errorf(err, LMD_EFORMAT, "%s: tensor '%s': shape needs %llu bytes but data_offsets span %llu",
				  what, name, (unsigned long long)(numel * lmd_dtype_size(e->t.dtype)),
				  (unsigned long long)(e->end - e->begin));
	e->t.data = (void *)(data + e->begin);
	return LMD_OK;
}

int lmd_safetensors_parse(struct lmd_safetensors *st, const void *buf, size_t len, const char *what,
			  struct lmd_err *err)
{
	const uint8_t *p = buf;
	uint64_t hlen = 0;
	json_error_t je;
	int rc = LMD_OK;
	st->n = 0;
	st->e = NULL;
	if (len < 8)
		return lmd_errorf(err, LMD_EFORMAT, "%s: too short for a safetensors file (%zu bytes)", what, len);
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | p[i];
	if (hlen > len - 8)
		return lmd_errorf(err, LMD_EFORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)", what,
				  (unsigned long long)hlen, len);
	json_t *root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return lmd_errorf(err, LMD_EFORMAT, "%s: invalid JSON header: %s (line %d)", what, je.text, je.line);
	if (!json_is_object(root)) {
		json_decref(root);
		return lmd_errorf(err, LMD_EFORMAT, "%s: header is not a JSON object", what);
	}
	const uint8_t *data = p + 8 + hlen;
	uint64_t data_len = len - 8 - hlen;
	size_t cap = json_object_size(root);
	st->e = calloc(cap ? cap : 1, sizeof(*st->e));
	if (!st->e) {
		json_decref(root);
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	}
	const char *key;
	json_t *v;
	json_object_foreach(root, key, v) {
		if (!strcmp(key, "__metadata__"))
			continue;
		struct lmd_st_entry *e = &st->e[st->n];
		if (!(e->name = strdup(key))) {
			rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
			break;
		}
		st->n++;
		if ((rc = parse_entry(e, key, v, data, data_len, what, err)))
			break;
	}
	json_decref(root);
	if (!rc && st->n > 0) {
		struct lmd_st_entry **by = malloc(st->n * sizeof(*by));
		if (!by)
			rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
		for (int i = 0; by && i < st->n; i++)
			by[i] = &st->e[i];
		if (by)
			qsort(by, st->n, sizeof(*by), cmp_range);
		for (int i = 1; by && i < st->n && !rc; i++)
			if (by[i]->begin < by[i - 1]->end && by[i]->end > by[i]->begin)
				rc = lmd_errorf(err, LMD_EFORMAT, "%s: tensors '%s' and '%s' overlap", what, by[i - 1]->name,
						by[i]->name);
		free(by);
		qsort(st->e, st->n, sizeof(*st->e), cmp_entry);
	}
	if (rc) {
		struct lmd_map keep = st->map;
		st->map = (struct lmd_map){0};
		lmd_safetensors_close(st);
		st->map = keep;
	}
	return rc;
}

int lmd_safetensors_open(struct lmd_safetensors *st, const char *path, struct lmd_err *err)
{
	memset(st, 0, sizeof(*st));
	int rc = lmd_map_open(&st->map, path, err);
	if (!rc)
		rc = lmd_safetensors_parse(st, st->map.data, st->map.size, path, err);
	if (rc)
		lmd_safetensors_close(st);
	return rc;
}

void lmd_safetensors_close(struct lmd_safetensors *st)
{
	for (int i = 0; i < st->n; i++)
		free(st->e[i].name);
	free(st->e);
	lmd_map_close(&st->map);
	memset(st, 0, sizeof(*st));
}

const struct lmd_st_entry *lmd_safetensors_find(const struct lmd_safetensors *st, const char *name)
{
	struct lmd_st_entry key = {.name = (char *)name};
	return st->n ? bsearch(&key, st->e, st->n, sizeof(*st->e), cmp_entry) : NULL;
}

int lmd_safetensors_write(const char *path, const char *const *names, const struct lmd_tensor *ts, int n,
			  const char *metadata_json, struct lmd_err *err)
{
	json_t *root = json_object();
	uint64_t off = 0;
	int rc = LMD_OK;
	if (!root)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	if (metadata_json) {
		json_t *md = json_loads(metadata_json, 0, NULL);
		if (!md) {
			json_decref(root);
			return lmd_errorf(err, LMD_EINVAL, "invalid metadata JSON for '%s'", path);
		}
		json_object_set_new(root, "__metadata__", md);
	}
	for (int i = 0; i < n; i++) {
		json_t *shape = json_array();
		for (int d = 0; d < ts[i].ndim; d++)
			json_array_append_new(shape, json_integer(ts[i].shape[d]));
		uint64_t nb = lmd_tensor_nbytes(&ts[i]);
		json_object_set_new(root, names[i],
				    json_pack("{s:s, s:o, s:[I,I]}", "dtype", lmd_dtype_name(ts[i].dtype), "shape", shape,
					      "data_offsets", (json_int_t)off, (json_int_t)(off + nb)));
		off += nb;
	}
	char *hdr = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(root);
	if (!hdr)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	size_t hl = strlen(hdr), pad = (8 - hl % 8) % 8;
	uint8_t lenb[8];
	for (int i = 0; i < 8; i++)
		lenb[i] = (uint8_t)((hl + pad) >> (8 * i));
	struct lmd_out o;
	if ((rc = lmd_out_open(&o, path, err))) {
		free(hdr);
		return rc;
	}
	int bad = fwrite(lenb, 1, 8, o.f) != 8 || fwrite(hdr, 1, hl, o.f) != hl || fwrite("        ", 1, pad, o.f) != pad;
	for (int i = 0; i < n && !bad; i++) {
		size_t nb = lmd_tensor_nbytes(&ts[i]);
		bad = nb && fwrite(ts[i].data, 1, nb, o.f) != nb;
	}
	free(hdr);
	if (bad) {
		rc = lmd_errorf(err, LMD_EIO, "cannot write '%s': %s", path, strerror(errno));
		lmd_out_abort(&o);
		return rc;
	}
	return lmd_out_commit(&o, err);
}

// --- sets of shards

static int add_shard(struct lmd_stset *s, const char *path, struct lmd_err *err)
{
	for (int i = 0; i < s->n; i++)
		if (!strcmp(s->shard_path[i], path))
			return LMD_OK;
	struct lmd_safetensors *ns = realloc(s->shard, (s->n + 1) * sizeof(*ns));
	if (!ns)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	s->shard = ns;
	char **np = realloc(s->shard_path, (s->n + 1) * sizeof(*np));
	if (!np)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	s->shard_path = np;
	if (!(s->shard_path[s->n] = lmd_strdup(path, err)))
		return LMD_ENOMEM;
	int rc = lmd_safetensors_open(&s->shard[s->n], path, err);
	if (rc) {
		free(s->shard_path[s->n]);
		return rc;
	}
	s->n++;
	return LMD_OK;
}

static int open_index(struct lmd_stset *s, const char *dir, const char *ipath, struct lmd_err *err)
{
	json_error_t je;
	json_t *root = json_load_file(ipath, JSON_REJECT_DUPLICATES, &je), *wm;
	int rc = LMD_OK;
	if (!root)
		return lmd_errorf(err, LMD_EFORMAT, "%s: invalid JSON: %s (line %d)", ipath, je.text, je.line);
	wm = json_object_get(root, "weight_map");
	if (!json_is_object(wm)) {
		json_decref(root);
		return lmd_errorf(err, LMD_EFORMAT, "%s: no 'weight_map' object", ipath);
	}
	const char *name;
	json_t *v;
	json_object_foreach(wm, name, v) {
		const char *file = json_string_value(v);
		if (!file || strchr(file, '/')) {
			rc = lmd_errorf(err, LMD_EFORMAT, "%s: weight_map['%s'] is not a file name", ipath, name);
			break;
		}
		char *p = lmd_path_join(dir, file, err);
		if (!p || (rc = add_shard(s, p, err))) {
			rc = p ? rc : LMD_ENOMEM;
			free(p);
			break;
		}
		const char *where = NULL;
		if (!lmd_stset_find(s, name, &where) || strcmp(where, p))
			rc = lmd_errorf(err, LMD_EFORMAT, "%s: tensor '%s' is not in '%s' as weight_map says", ipath, name, file);
		free(p);
		if (rc)
			break;
	}
	json_decref(root);
	return rc;
}

int lmd_stset_open(struct lmd_stset *s, const char *dir, struct lmd_err *err)
{
	memset(s, 0, sizeof(*s));
	char *ipath = lmd_path_join(dir, "model.safetensors.index.json", err);
	char *one = lmd_path_join(dir, "model.safetensors", err);
	int rc = !ipath || !one ? LMD_ENOMEM : LMD_OK;
	if (!rc) {
		if (lmd_exists(ipath))
			rc = open_index(s, dir, ipath, err);
		else if (lmd_exists(one))
			rc = add_shard(s, one, err);
		else
			rc = lmd_errorf(err, LMD_EIO, "'%s': no model.safetensors or model.safetensors.index.json", dir);
	}
	free(ipath);
	free(one);
	if (rc)
		lmd_stset_close(s);
	return rc;
}

void lmd_stset_close(struct lmd_stset *s)
{
	for (int i = 0; i < s->n; i++) {
		lmd_safetensors_close(&s->shard[i]);
		free(s->shard_path[i]);
	}
	free(s->shard);
	free(s->shard_path);
	memset(s, 0, sizeof(*s));
}

const struct lmd_st_entry *lmd_stset_find(const struct lmd_stset *s, const char *name, const char **path)
{
	for (int i = 0; i < s->n; i++) {
		const struct lmd_st_entry *e = lmd_safetensors_find(&s->shard[i], name);
		if (e) {
			if (path)
				*path = s->shard_path[i];
			return e;
		}
	}
	return NULL;
}
