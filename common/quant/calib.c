/* Calibration data, activation statistics and their msgpack file (calib.h). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "file.h"
#include "msgpack-json.h"
#include "share.h"

char *lmd_calib_dataset_path(const char *dataset, const char *data_dir, struct lmd_err *err)
{
	static const char *named[] = {"wikitext2", "ptb", "c4"};
	int is_named = 0;
	for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++)
		is_named |= !strcmp(dataset, named[i]);
	if (!is_named) {
		if (!lmd_exists(dataset)) {
			lmd_errorf(err, LMD_EIO, "calibration dataset '%s': no such file (named sets: wikitext2, ptb, c4)",
				   dataset);
			return NULL;
		}
		return strdup(dataset);
	}
	const char *dirs[2] = {data_dir, data_dir ? NULL : getenv("LMD_DATA")};
	const char *ext[2] = {".txt", ".jsonl"};
	char buf[4096];
	for (int d = 0; d < 2; d++)
		for (int e = 0; dirs[d] && *dirs[d] && e < 2; e++) {
			snprintf(buf, sizeof(buf), "%s/%s%s", dirs[d], dataset, ext[e]);
			if (lmd_exists(buf))
				return strdup(buf);
		}
	if (data_dir || (dirs[1] && *dirs[1])) {
		lmd_errorf(err, LMD_EIO, "calibration dataset '%s': no %s.txt or %s.jsonl in '%s'", dataset, dataset,
			   dataset, data_dir ? data_dir : dirs[1]);
		return NULL;
	}
	for (int e = 0; e < 2; e++) {
		snprintf(buf, sizeof(buf), "data/%s%s", dataset, ext[e]);
		struct lmd_err e2 = {0};
		char *p = lmd_share_path(buf, &e2);
		if (p)
			return p;
	}
	lmd_errorf(err, LMD_EIO, "calibration dataset '%s': not installed (lmd ships wikitext2 only): give a text or "
		   "JSON-lines FILE, or --data-dir DIR holding %s.txt", dataset, dataset);
	return NULL;
}

/*
 * The documents of path: the "text" fields of JSON lines, or for plain text the whole file as one
 * (lines = 0) or each line (lines = 1, what a "text" dataset loader gives). *doc and *len are
 * malloc'd [*n]; the texts point into *buf (malloc'd; JSON texts are copied into it).
 */
static int read_docs(const char *path, int lines, char **buf, const char ***doc, size_t **len, int *n,
		     struct lmd_err *err)
{
	size_t sz;
	int rc = lmd_read_file(path, buf, &sz, err), cap = 0, line = 0;
	*doc = NULL, *len = NULL, *n = 0;
	if (rc)
		return rc;
	char *b = *buf;
	size_t i = 0, m = 0;  /* m: bytes of JSON text written back into b (never more than read) */
	while (i < sz && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r'))
		i++;
	int json = i < sz && b[i] == '{';
	for (char *p = b; !rc && p && p < b + sz && (json || lines || !*n);) {
		char *nl = json || lines ? memchr(p, '\n', (size_t)(b + sz - p)) : NULL;
		size_t ll = nl ? (size_t)(nl - p) : (size_t)(b + sz - p);
		const char *d = p;
		size_t dl = ll;
		line++;
		if (json && !(ll && p[0] == '{')) {
			p = nl ? nl + 1 : NULL;
			continue;
		}
		if (json) {
			json_error_t je;
			json_t *o = json_loadb(p, ll, 0, &je);
			json_t *s = o ? json_object_get(o, "text") : NULL;
			if (!json_is_string(s))
				rc = lmd_errorf(err, LMD_EFORMAT, "'%s' line %d: not a JSON object with a \"text\" string", path,
						line);
			else {  /* the text is shorter than its JSON line: it fits where the lines already read were */
				dl = json_string_length(s);
				memmove(b + m, json_string_value(s), dl);
				d = b + m, m += dl;
			}
			json_decref(o);
		}
		if (!rc && *n == cap) {
			cap = cap ? 2 * cap : 1024;
			const char **nd = realloc(*doc, (size_t)cap * sizeof(**doc));
			size_t *nlen = nd ? realloc(*len, (size_t)cap * sizeof(**len)) : NULL;
			*doc = nd ? nd : *doc, *len = nlen ? nlen : *len;
			if (!nd || !nlen)
				rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
		}
		if (!rc)
			(*doc)[*n] = d, (*len)[(*n)++] = dl;
		p = nl ? nl + 1 : NULL;
	}
	if (rc) {
		free(*buf), free(*doc), free(*len);
		*buf = NULL, *doc = NULL, *len = NULL;
	}
	return rc;
}

/* The text of path: plain, or the "text" fields of JSON lines, joined with "\n\n". */
static int read_text(const char *path, char **out, size_t *len, struct lmd_err *err)
{
	char *buf;
	const char **doc;
	size_t *dl, m = 0;
	int n, rc = read_docs(path, 0, &buf, &doc, &dl, &n, err);
	if (rc)
		return rc;
	size_t total = 1;
	for (int i = 0; i < n; i++)
		total += dl[i] + 2;
	char *t = malloc(total);
	for (int i = 0; t && i < n; i++) {
		if (i)
			t[m++] = '\n', t[m++] = '\n';
		memmove(t + m, doc[i], dl[i]);
		m += dl[i];
	}
	free(buf), free(doc), free(dl);
	if (!t)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	t[m] = 0;
	*out = t, *len = m;
	return LMD_OK;
}

/* xorshift64*, the calibration samplers' generator */
static uint64_t next_rand(uint64_t *x)
{
	*x ^= *x >> 12, *x ^= *x << 25, *x ^= *x >> 27;
	return *x * 0x2545F4914F6CDD1DULL;
}

int lmd_calib_doc_windows(const struct lmd_tokenizer *tok, const char *path, int docs, int seqlen, uint64_t seed,
			  int32_t **ids, int *windows, struct lmd_err *err)
{
	char *buf;
	const char **doc;
	size_t *dl, total = 0, cap = 0;
	int n, taken = 0, rc = read_docs(path, 1, &buf, &doc, &dl, &n, err);
	if (rc)
		return rc;
	int *order = malloc((size_t)(n ? n : 1) * sizeof(*order));
	*ids = NULL;
	if (!order)
		rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
	uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
	for (int i = 0; order && i < n; i++)
		order[i] = i;
	for (int i = n - 1; order && i > 0; i--) {
		int j = (int)((next_rand(&x) >> 11) % (uint64_t)(i + 1)), t = order[i];
		order[i] = order[j], order[j] = t;
	}
	for (int i = 0; !rc && i < n && taken < docs; i++) {
		const char *d = doc[order[i]];
		size_t l = dl[order[i]];
		while (l && (*d == ' ' || *d == '\t' || *d == '\r'))
			d++, l--;
		while (l && (d[l - 1] == ' ' || d[l - 1] == '\t' || d[l - 1] == '\r'))
			l--;
		int *t = NULL;
		size_t tn = 0;
		if (!l)
			continue;
		if ((rc = lmd_tokenizer_encode(tok, d, l, 1, &t, &tn, err)))
			break;
		if (tn && tn <= (size_t)seqlen) {
			if (total + tn > cap) {
				cap = 2 * (total + tn);
				int32_t *ni = realloc(*ids, cap * sizeof(**ids));
				if (!ni)
					rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
				else
					*ids = ni;
			}
			for (size_t k = 0; !rc && k < tn; k++)
				(*ids)[total++] = t[k];
			taken++;
		}
		free(t);
	}
	*windows = (int)(total / (size_t)seqlen);
	if (!rc && !*windows)
		rc = lmd_errorf(err, LMD_EINVAL, "'%s': %d documents of at most --calib-seqlen %d tokens hold %zu tokens, "
				"less than one window", path, taken, seqlen, total);
	if (rc)
		free(*ids), *ids = NULL;
	free(order), free(buf), free(doc), free(dl);
	return rc;
}

int lmd_calib_windows(const struct lmd_tokenizer *tok, const char *path, int samples, int seqlen, uint64_t seed,
		      int32_t **ids, struct lmd_err *err)
{
	char *text = NULL;
	size_t len = 0, n = 0;
	int *t = NULL;
	int rc = read_text(path, &text, &len, err);
	if (rc)
		return rc;
	rc = lmd_tokenizer_encode(tok, text, len, 0, &t, &n, err);
	free(text);
	if (rc)
		return rc;
	if (n < (size_t)seqlen + 1) {
		free(t);
		return lmd_errorf(err, LMD_EINVAL, "'%s' holds %zu tokens, fewer than --calib-seqlen %d + 1", path, n, seqlen);
	}
	*ids = malloc((size_t)samples * seqlen * sizeof(**ids));
	if (!*ids) {
		free(t);
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	}
	uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
	for (int s = 0; s < samples; s++) {
		size_t start = (size_t)(next_rand(&x) >> 11) % (n - (size_t)seqlen);
		for (int i = 0; i < seqlen; i++)
			(*ids)[(size_t)s * seqlen + i] = t[start + i];
	}
	free(t);
	return LMD_OK;
}

int lmd_calib_run(struct lmd_model *m, const int32_t *ids, int samples, int seqlen, int batch, lmd_tap_fn tap,
		  void *ctx, const struct lmd_progress *progress, struct lmd_err *err)
{
	if (batch < 1)
		batch = 1;
	if (batch * seqlen > m->max_tokens)
		batch = m->max_tokens / seqlen;
	if (batch < 1 || seqlen > m->session_len)
		return lmd_errorf(err, LMD_EINVAL, "--calib-seqlen %d: more than the model runs at once (%d tokens)", seqlen,
				  m->max_tokens < m->session_len ? m->max_tokens : m->session_len);
	struct lmd_kvseq *seqs = calloc((size_t)batch, sizeof(*seqs));
	float *logits = malloc((size_t)batch * m->cfg.vocab * sizeof(float));
	struct lmd_batch b = {0};
	int rc = !seqs || !logits ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	lmd_tap_fn old = m->tap;
	void *old_ctx = m->tap_ctx;
	m->tap = tap, m->tap_ctx = ctx;
	for (int s0 = 0; !rc && s0 < samples; s0 += batch) {
		int k = samples - s0 < batch ? samples - s0 : batch;
		lmd_batch_clear(&b);
		for (int j = 0; !rc && j < k; j++)
			for (int i = 0; !rc && i < seqlen; i++)
				rc = lmd_batch_add(&b, &seqs[j], ids[(size_t)(s0 + j) * seqlen + i], i == seqlen - 1, err);
		if (!rc)
			rc = lmd_model_forward(m, &b, logits, err);
		for (int j = 0; j < k; j++)
			lmd_model_seq_release(m, &seqs[j]);
		if (!rc)
			lmd_progress(progress, s0 + k, samples);
	}
	m->tap = old, m->tap_ctx = old_ctx;
	lmd_batch_free(&b);
	free(seqs);
	free(logits);
	return rc;
}

static int in_channels(const struct lmd_config *c, int which)
{
	return which == LMD_CALIB_O ? c->heads * c->head_dim : which == LMD_CALIB_W2 ? c->inter : c->hidden;
}

int lmd_calib_stats_init(struct lmd_calib_stats *s, const struct lmd_config *cfg, struct lmd_err *err)
{
	memset(s, 0, sizeof(*s));
	s->cfg = *cfg;
	int L = cfg->layers, kvc = cfg->kv_heads * cfg->head_dim;
	s->in = calloc((size_t)L, sizeof(*s->in));
	s->kv = calloc((size_t)L, sizeof(*s->kv));
	if (!s->in || !s->kv)
		goto oom;
	for (int l = 0; l < L; l++) {
		for (int w = 0; w < LMD_CALIB_NIN; w++) {
			struct lmd_calib_in *in = &s->in[l][w];
			in->channels = in_channels(cfg, w);
			in->absmax = calloc((size_t)in->channels, sizeof(float));
			in->abssum = calloc((size_t)in->channels, sizeof(double));
			in->sumsq = calloc((size_t)in->channels, sizeof(double));
			if (!in->absmax || !in->abssum || !in->sumsq)
				goto oom;
		}
		for (int j = 0; j < 2; j++) {
			s->kv[l][j].min = malloc((size_t)kvc * sizeof(float));
			s->kv[l][j].max = malloc((size_t)kvc * sizeof(float));
			if (!s->kv[l][j].min || !s->kv[l][j].max)
				goto oom;
			for (int i = 0; i < kvc; i++)
				s->kv[l][j].min[i] = INFINITY, s->kv[l][j].max[i] = -INFINITY;
		}
	}
	return LMD_OK;
oom:
	lmd_calib_stats_free(s);
	return lmd_errorf(err, LMD_ENOMEM, "out of memory");
}

void lmd_calib_stats_free(struct lmd_calib_stats *s)
{
	for (int l = 0; s->in && l < s->cfg.layers; l++)
		for (int w = 0; w < LMD_CALIB_NIN; w++)
			free(s->in[l][w].absmax), free(s->in[l][w].abssum), free(s->in[l][w].sumsq);
	for (int l = 0; s->kv && l < s->cfg.layers; l++)
		for (int j = 0; j < 2; j++)
			free(s->kv[l][j].min), free(s->kv[l][j].max);
	free(s->in);
	free(s->kv);
	memset(s, 0, sizeof(*s));
}

void lmd_calib_stats_tap(void *ctx, int layer, enum lmd_tap point, const struct lmd_tensor *t)
{
	struct lmd_calib_stats *s = ctx;
	if (point == LMD_TAP_RESID)
		return;
	int rows = (int)t->shape[0], cols = (int)t->shape[1];
	float *x = malloc((size_t)cols * sizeof(float));
	if (!x) {
		s->err = 1;
		return;
	}
	size_t es = lmd_dtype_size(t->dtype);
	const struct lmd_config *c = &s->cfg;
	for (int r = 0; r < rows; r++) {
		lmd_dtype_convert(x, LMD_F32, (const char *)t->data + (size_t)r * cols * es, t->dtype, (size_t)cols, NULL);
		if (point == LMD_TAP_QKV) {
			int q = c->heads * c->head_dim, kvc = c->kv_heads * c->head_dim;
			for (int j = 0; j < 2; j++) {
				struct lmd_calib_kv *kv = &s->kv[layer][j];
				const float *v = x + q + j * kvc;
				for (int i = 0; i < kvc; i++) {
					kv->min[i] = v[i] < kv->min[i] ? v[i] : kv->min[i];
					kv->max[i] = v[i] > kv->max[i] ? v[i] : kv->max[i];
				}
			}
			continue;
		}
		int w = point == LMD_TAP_QKV_IN ? LMD_CALIB_QKV : point == LMD_TAP_O_IN ? LMD_CALIB_O
			: point == LMD_TAP_W13_IN ? LMD_CALIB_W13 : LMD_CALIB_W2;
		struct lmd_calib_in *in = &s->in[layer][w];
		for (int i = 0; i < cols && i < in->channels; i++) {
			float a = fabsf(x[i]);
			in->absmax[i] = a > in->absmax[i] ? a : in->absmax[i];
			in->abssum[i] += a;
			in->sumsq[i] += (double)x[i] * x[i];
		}
		in->count++;
	}
	if (point == LMD_TAP_QKV_IN && layer == 0)
		s->tokens += rows;
	free(x);
}

/* --- the msgpack file --- */

static void pk_str(msgpack_packer *p, const char *s)
{
	size_t n = strlen(s);
	msgpack_pack_str(p, n);
	msgpack_pack_str_body(p, s, n);
}

static void pk_f32s(msgpack_packer *p, const char *key, const float *v, int n)
{
	pk_str(p, key);
	msgpack_pack_array(p, (size_t)n);
	for (int i = 0; i < n; i++)
		msgpack_pack_float(p, v[i]);
}

static void pk_int(msgpack_packer *p, const char *key, int64_t v)
{
	pk_str(p, key);
	msgpack_pack_int64(p, v);
}

static const char *in_names[LMD_CALIB_NIN] = {"attn_in", "o_in", "ffn_in", "w2_in"};
static const char *in_linears[LMD_CALIB_NIN][3] = {{"wq", "wk", "wv"}, {"wo"}, {"w1", "w3"}, {"w2"}};
static const int in_nlin[LMD_CALIB_NIN] = {3, 1, 2, 1};

int lmd_calib_stats_write(const struct lmd_calib_stats *s, FILE *f, struct lmd_err *err)
{
	const struct lmd_config *c = &s->cfg;
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msgpack_packer p;
	msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
	int kvc = c->kv_heads * c->head_dim, D = c->head_dim;
	float *tmp = malloc((size_t)(c->inter > c->hidden ? c->inter : c->hidden) * 2 * sizeof(float) + 64);
	if (!tmp) {
		msgpack_sbuffer_destroy(&sb);
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	}
	msgpack_pack_map(&p, 10);
	pk_str(&p, "format");
	pk_str(&p, "lmd-calib");
	pk_int(&p, "version", 1);
	pk_str(&p, "model");
	msgpack_pack_map(&p, 8);
	pk_str(&p, "arch");
	pk_str(&p, lmd_arch_name(c->arch));
	pk_int(&p, "layers", c->layers);
	pk_int(&p, "hidden", c->hidden);
	pk_int(&p, "inter", c->inter);
	pk_int(&p, "heads", c->heads);
	pk_int(&p, "kv_heads", c->kv_heads);
	pk_int(&p, "head_dim", c->head_dim);
	pk_int(&p, "vocab", c->vocab);
	pk_str(&p, "dataset");
	pk_str(&p, s->dataset);
	pk_int(&p, "samples", s->samples);
	pk_int(&p, "seqlen", s->seqlen);
	pk_int(&p, "seed", (int64_t)s->seed);
	pk_int(&p, "tokens", s->tokens);
	pk_str(&p, "inputs");
	msgpack_pack_array(&p, (size_t)c->layers * LMD_CALIB_NIN);
	for (int l = 0; l < c->layers; l++)
		for (int w = 0; w < LMD_CALIB_NIN; w++) {
			const struct lmd_calib_in *in = &s->in[l][w];
			char name[64];
			msgpack_pack_map(&p, 8);
			snprintf(name, sizeof(name), "layers.%d.%s", l, in_names[w]);
			pk_str(&p, "name");
			pk_str(&p, name);
			pk_int(&p, "layer", l);
			pk_str(&p, "linears");
			msgpack_pack_array(&p, (size_t)in_nlin[w]);
			for (int k = 0; k < in_nlin[w]; k++) {
				snprintf(name, sizeof(name), "layers.%d.%s", l, in_linears[w][k]);
				pk_str(&p, name);
			}
			pk_int(&p, "channels", in->channels);
			pk_int(&p, "count", in->count);
			pk_f32s(&p, "absmax", in->absmax, in->channels);
			for (int i = 0; i < in->channels; i++)
				tmp[i] = in->count ? (float)(in->abssum[i] / (double)in->count) : 0;
			pk_f32s(&p, "absmean", tmp, in->channels);
			for (int i = 0; i < in->channels; i++)
				tmp[i] = (float)in->sumsq[i];
			pk_f32s(&p, "sumsq", tmp, in->channels);
		}
	pk_str(&p, "kv");
	msgpack_pack_array(&p, (size_t)c->layers);
	for (int l = 0; l < c->layers; l++) {
		msgpack_pack_map(&p, 9);
		pk_int(&p, "layer", l);
		for (int j = 0; j < 2; j++) {
			const struct lmd_calib_kv *kv = &s->kv[l][j];
			char key[16];
			for (int h = 0; h < c->kv_heads; h++) {
				float mn = INFINITY, mx = -INFINITY;
				for (int d = 0; d < D; d++) {
					mn = kv->min[h * D + d] < mn ? kv->min[h * D + d] : mn;
					mx = kv->max[h * D + d] > mx ? kv->max[h * D + d] : mx;
				}
				tmp[h] = mn, tmp[c->kv_heads + h] = mx;
			}
			snprintf(key, sizeof(key), "%c_min", "kv"[j]);
			pk_f32s(&p, key, tmp, c->kv_heads);
			snprintf(key, sizeof(key), "%c_max", "kv"[j]);
			pk_f32s(&p, key, tmp + c->kv_heads, c->kv_heads);
			snprintf(key, sizeof(key), "%c_min_ch", "kv"[j]);
			pk_f32s(&p, key, kv->min, kvc);
			snprintf(key, sizeof(key), "%c_max_ch", "kv"[j]);
			pk_f32s(&p, key, kv->max, kvc);
		}
	}
	free(tmp);
	int rc = sb.size && fwrite(sb.data, 1, sb.size, f) != sb.size
			 ? lmd_errorf(err, LMD_EIO, "cannot write the statistics: %s", strerror(errno)) : LMD_OK;
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static int get_int(json_t *o, const char *key, const char *path, int64_t *v, struct lmd_err *err)
{
	json_t *x = json_object_get(o, key);
	if (!json_is_integer(x))
		return lmd_errorf(err, LMD_EFORMAT, "'%s': key '%s' missing or not an integer", path, key);
	*v = json_integer_value(x);
	return LMD_OK;
}

static int get_floats(json_t *o, const char *key, int n, const char *path, float *out, double *dout,
		      struct lmd_err *err)
{
	json_t *a = json_object_get(o, key);
	if (!json_is_array(a) || (int)json_array_size(a) != n)
		return lmd_errorf(err, LMD_EFORMAT, "'%s': key '%s' missing or not an array of %d numbers", path, key, n);
	for (int i = 0; i < n; i++) {
		json_t *x = json_array_get(a, (size_t)i);
		if (!json_is_number(x))
			return lmd_errorf(err, LMD_EFORMAT, "'%s': key '%s' holds a non-number", path, key);
		if (out)
			out[i] = (float)json_number_value(x);
		if (dout)
			dout[i] = json_number_value(x);
	}
	return LMD_OK;
}

int lmd_calib_stats_read(struct lmd_calib_stats *s, const char *path, struct lmd_err *err)
{
	char *buf;
	size_t len;
	int rc = lmd_read_file(path, &buf, &len, err);
	if (rc)
		return rc;
	memset(s, 0, sizeof(*s));
	if (lmd_msgpack_check(buf, len)) {
		free(buf);
		return lmd_errorf(err, LMD_EFORMAT, "'%s': not a msgpack calibration statistics file", path);
	}
	msgpack_unpacked u;
	msgpack_unpacked_init(&u);
	json_t *o = NULL;
	if (msgpack_unpack_next(&u, buf, len, NULL) == MSGPACK_UNPACK_SUCCESS)
		o = lmd_msgpack_to_json(&u.data);
	msgpack_unpacked_destroy(&u);
	free(buf);
	json_t *fmt = json_object_get(o, "format"), *m = json_object_get(o, "model");
	if (!json_is_string(fmt) || strcmp(json_string_value(fmt), "lmd-calib") || !json_is_object(m)) {
		json_decref(o);
		return lmd_errorf(err, LMD_EFORMAT, "'%s': not an lmd-calib statistics file (key 'format')", path);
	}
	struct lmd_config c = {0};
	int64_t v[8];
	const char *keys[] = {"layers", "hidden", "inter", "heads", "kv_heads", "head_dim", "vocab"};
	for (int i = 0; i < 7 && !rc; i++) {
		rc = get_int(m, keys[i], path, &v[i], err);
		if (!rc && (v[i] < 1 || v[i] > (1 << 24)))
			rc = lmd_errorf(err, LMD_EFORMAT, "'%s': model.%s %lld out of range", path, keys[i], (long long)v[i]);
	}
	if (rc) {
		json_decref(o);
		return rc;
	}
	c.layers = (int)v[0], c.hidden = (int)v[1], c.inter = (int)v[2], c.heads = (int)v[3], c.kv_heads = (int)v[4];
	c.head_dim = (int)v[5], c.vocab = (int)v[6];
	json_t *arch = json_object_get(m, "arch");
	for (int a = 0; a < LMD_ARCH_COUNT; a++)
		if (json_is_string(arch) && !strcmp(json_string_value(arch), lmd_arch_name(a)))
			c.arch = a;
	if ((rc = lmd_calib_stats_init(s, &c, err))) {
		json_decref(o);
		return rc;
	}
	json_t *ds = json_object_get(o, "dataset");
	snprintf(s->dataset, sizeof(s->dataset), "%s", json_is_string(ds) ? json_string_value(ds) : "");
	int64_t x = 0;
	if (!(rc = get_int(o, "samples", path, &x, err)))
		s->samples = (int)x;
	if (!rc && !(rc = get_int(o, "seqlen", path, &x, err)))
		s->seqlen = (int)x;
	if (!rc && !(rc = get_int(o, "tokens", path, &x, err)))
		s->tokens = x;
	json_t *ins = json_object_get(o, "inputs"), *kvs = json_object_get(o, "kv");
	if (!rc && (!json_is_array(ins) || (int)json_array_size(ins) != c.layers * LMD_CALIB_NIN || !json_is_array(kvs) ||
		    (int)json_array_size(kvs) != c.layers))
		rc = lmd_errorf(err, LMD_EFORMAT, "'%s': 'inputs' or 'kv' missing or not one entry per layer", path);
	for (int l = 0; !rc && l < c.layers; l++) {
		for (int w = 0; !rc && w < LMD_CALIB_NIN; w++) {
			json_t *e = json_array_get(ins, (size_t)(l * LMD_CALIB_NIN + w));
			struct lmd_calib_in *in = &s->in[l][w];
			if (!(rc = get_int(e, "count", path, &in->count, err)) &&
			    !(rc = get_floats(e, "absmax", in->channels, path, in->absmax, NULL, err)) &&
			    !(rc = get_floats(e, "absmean", in->channels, path, NULL, in->abssum, err)))
				rc = get_floats(e, "sumsq", in->channels, path, NULL, in->sumsq, err);
			for (int i = 0; !rc && i < in->channels; i++)
				in->abssum[i] *= (double)in->count;
		}
		json_t *e = json_array_get(kvs, (size_t)l);
		int kvc = c.kv_heads * c.head_dim;
		if (!rc && !(rc = get_floats(e, "k_min_ch", kvc, path, s->kv[l][0].min, NULL, err)) &&
		    !(rc = get_floats(e, "k_max_ch", kvc, path, s->kv[l][0].max, NULL, err)) &&
		    !(rc = get_floats(e, "v_min_ch", kvc, path, s->kv[l][1].min, NULL, err)))
			rc = get_floats(e, "v_max_ch", kvc, path, s->kv[l][1].max, NULL, err);
	}
	json_decref(o);
	if (rc)
		lmd_calib_stats_free(s);
	return rc;
}

int lmd_calib_stats_check(const struct lmd_calib_stats *s, const struct lmd_config *c, const char *what,
			  struct lmd_err *err)
{
	const char *names[] = {"layers", "hidden", "inter", "heads", "kv_heads", "head_dim", "vocab"};
	const int a[] = {s->cfg.layers, s->cfg.hidden, s->cfg.inter, s->cfg.heads, s->cfg.kv_heads, s->cfg.head_dim,
			 s->cfg.vocab};
	const int b[] = {c->layers, c->hidden, c->inter, c->heads, c->kv_heads, c->head_dim, c->vocab};
	for (int i = 0; i < 7; i++)
		if (a[i] != b[i])
			return lmd_errorf(err, LMD_EINVAL, "'%s' was made for another model: %s %d there but %d in this model",
					  what, names[i], a[i], b[i]);
	return LMD_OK;
}

void lmd_calib_opts_default(struct lmd_calib_opts *o)
{
	*o = (struct lmd_calib_opts){.dataset = "wikitext2", .samples = 128, .seqlen = 2048, .batch = 1};
}

int lmd_calib_collect(struct lmd_model *m, const struct lmd_tokenizer *tok, const struct lmd_calib_opts *o,
		      lmd_tap_fn tap, void *ctx, struct lmd_calib_stats *s, struct lmd_err *err)
{
	char *path = lmd_calib_dataset_path(o->dataset, o->data_dir, err);
	if (!path)
		return err->code ? err->code : LMD_EIO;
	int32_t *ids = NULL;
	int windows = o->samples;
	int rc = o->docs ? lmd_calib_doc_windows(tok, path, o->samples, o->seqlen, o->seed, &ids, &windows, err)
			 : lmd_calib_windows(tok, path, o->samples, o->seqlen, o->seed, &ids, err);
	free(path);
	if (!rc)
		rc = lmd_calib_run(m, ids, windows, o->seqlen, o->batch, tap, ctx, o->progress, err);
	free(ids);
	if (!rc && s) {
		snprintf(s->dataset, sizeof(s->dataset), "%s", o->dataset);
		s->samples = o->samples, s->seqlen = o->seqlen, s->seed = o->seed;
	}
	return rc;
}

void lmd_kvparams_compute(const struct lmd_calib_stats *s, int bits, int sym, float *params)
{
	const struct lmd_config *c = &s->cfg;
	int D = c->head_dim;
	for (int l = 0; l < c->layers; l++)
		for (int w = 0; w < 2; w++)
			for (int h = 0; h < c->kv_heads; h++) {
				float mn = INFINITY, mx = -INFINITY;
				for (int d = 0; d < D; d++) {
					mn = fminf(mn, s->kv[l][w].min[h * D + d]);
					mx = fmaxf(mx, s->kv[l][w].max[h * D + d]);
				}
				float *p = params + (((size_t)l * 2 + w) * c->kv_heads + h) * 2;
				if (sym) {
					float a = fmaxf(fabsf(mn), fabsf(mx));
					p[0] = a / (float)((1 << (bits - 1)) - 1), p[1] = -a;
				} else {
					p[0] = (mx - mn) / (float)((1 << bits) - 1), p[1] = mn;
				}
				if (!(p[0] > 1e-12f))
					p[0] = 1e-12f;
			}
}
