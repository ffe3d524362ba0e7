#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "hftok.h"

static char *dup_str(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = malloc(n);
	if (p)
		memcpy(p, s, n);
	return p;
}

static int oom(struct lmd_err *err)
{
	return lmd_errorf(err, LMD_ENOMEM, "out of memory");
}

static int jbool(json_t *o, const char *k, int dflt)
{
	json_t *v = json_object_get(o, k);
	return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static const char *jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

// --- model

static int parse_model(struct lmd_hftok *h, json_t *m, struct lmd_err *err)
{
	const char *type = jstr(m, "type");
	if (!json_is_object(m))
		return lmd_errorf(err, LMD_EFORMAT, "'model' missing");
	if (type && strcmp(type, "BPE"))
		return lmd_errorf(err, LMD_EFORMAT, "model type '%s' is not supported (only BPE)", type);
	json_t *vocab = json_object_get(m, "vocab"), *merges = json_object_get(m, "merges");
	if (!json_is_object(vocab) || !json_is_array(merges))
		return lmd_errorf(err, LMD_EFORMAT, "'model.vocab' or 'model.merges' missing");
	const char *k;
	json_t *v;
	long maxid = -1;
	json_object_foreach(vocab, k, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 24))
			return lmd_errorf(err, LMD_EFORMAT, "'model.vocab': bad id for '%.40s'", k);
		if (json_integer_value(v) > maxid)
			maxid = (long)json_integer_value(v);
	}
	h->n_vocab = (int)(maxid + 1);
	h->vocab = calloc((size_t)h->n_vocab + 1, sizeof(char *));
	if (!h->vocab)
		return oom(err);
	json_object_foreach(vocab, k, v) {
		long id = (long)json_integer_value(v);
		if (h->vocab[id])
			return lmd_errorf(err, LMD_EFORMAT, "'model.vocab': id %ld used twice", id);
		if (!(h->vocab[id] = dup_str(k)))
			return oom(err);
	}
	size_t n = json_array_size(merges);
	if (n > (1u << 24))
		return lmd_errorf(err, LMD_EFORMAT, "'model.merges': too many merges");
	h->merges = calloc(2 * n + 1, sizeof(char *));
	if (!h->merges)
		return oom(err);
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(merges, i);
		const char *a = NULL, *b = NULL;
		char *tmp = NULL;
		if (json_is_string(e)) {
			/* legacy form "left right": exactly one space */
			const char *s = json_string_value(e), *sp = strchr(s, ' ');
			if (!sp || strchr(sp + 1, ' '))
				return lmd_errorf(err, LMD_EFORMAT, "'model.merges[%zu]': expected 'LEFT RIGHT'", i);
			if (!(tmp = dup_str(s)))
				return oom(err);
			tmp[sp - s] = 0;
			a = tmp, b = tmp + (sp - s) + 1;
		} else if (json_is_array(e) && json_array_size(e) == 2) {
			a = json_string_value(json_array_get(e, 0));
			b = json_string_value(json_array_get(e, 1));
		}
		if (!a || !b) {
			free(tmp);
			return lmd_errorf(err, LMD_EFORMAT, "'model.merges[%zu]': expected two strings", i);
		}
		h->merges[2 * i] = dup_str(a);
		h->merges[2 * i + 1] = dup_str(b);
		free(tmp);
		h->n_merges = (int)i + 1;
		if (!h->merges[2 * i] || !h->merges[2 * i + 1])
			return oom(err);
	}
	h->byte_fallback = jbool(m, "byte_fallback", 0);
	h->ignore_merges = jbool(m, "ignore_merges", 0);
	h->fuse_unk = jbool(m, "fuse_unk", 0);
	const char *unk = jstr(m, "unk_token");
	if (unk && !(h->unk_token = dup_str(unk)))
		return oom(err);
	const char *csp = jstr(m, "continuing_subword_prefix"), *eow = jstr(m, "end_of_word_suffix");
	if ((csp && *csp) || (eow && *eow))
		return lmd_errorf(err, LMD_EFORMAT, "'model': continuing_subword_prefix / end_of_word_suffix not supported");
	json_t *drop = json_object_get(m, "dropout");
	if (json_is_number(drop) && json_number_value(drop) > 0)
		return lmd_errorf(err, LMD_EFORMAT, "'model.dropout' is not supported");
	return 0;
}

// --- normalizer, pre-tokenizer, decoder, post-processor

static int add_norm(struct lmd_hftok *h, json_t *n, struct lmd_err *err)
{
	if (json_is_null(n) || !n)
		return 0;
	const char *type = jstr(n, "type");
	if (!type)
		return lmd_errorf(err, LMD_EFORMAT, "'normalizer': no type");
	if (!strcmp(type, "Sequence")) {
		json_t *list = json_object_get(n, "normalizers");
		size_t i;
		json_t *e;
		json_array_foreach(list, i, e) {
			int rc = add_norm(h, e, err);
			if (rc)
				return rc;
		}
		return 0;
	}
	struct lmd_hf_norm s = {0};
	if (!strcmp(type, "NFC")) {
		s.kind = LMD_HF_NFC;
	} else if (!strcmp(type, "NFKC")) {
		s.kind = LMD_HF_NFKC;
	} else if (!strcmp(type, "Prepend")) {
		const char *p = jstr(n, "prepend");
		if (!p)
			return lmd_errorf(err, LMD_EFORMAT, "'normalizer' Prepend: no 'prepend'");
		s.kind = LMD_HF_PREPEND;
		s.a = dup_str(p);
	} else if (!strcmp(type, "Replace")) {
		const char *pat = jstr(json_object_get(n, "pattern"), "String"), *c = jstr(n, "content");
		if (!pat || !*pat || !c)
			return lmd_errorf(err, LMD_EFORMAT, "'normalizer' Replace: only String patterns are supported");
		s.kind = LMD_HF_REPLACE;
		s.a = dup_str(pat);
		s.b = dup_str(c);
	} else {
		return lmd_errorf(err, LMD_EFORMAT, "normalizer '%s' is not supported", type);
	}
	struct lmd_hf_norm *nn = realloc(h->norm, (size_t)(h->n_norm + 1) * sizeof(*nn));
	if (!nn || (s.kind == LMD_HF_PREPEND && !s.a) || (s.kind == LMD_HF_REPLACE && (!s.a || !s.b))) {
		free(s.a);
		free(s.b);
		if (nn)
			h->norm = nn;
		return oom(err);
	}
	h->norm = nn;
	h->norm[h->n_norm++] = s;
	return 0;
}

static int prepend_scheme(json_t *o)
{
	const char *s = jstr(o, "prepend_scheme");
	if (s && !strcmp(s, "first"))
		return LMD_HF_PREPEND_FIRST;
	if (s && !strcmp(s, "never"))
		return LMD_HF_PREPEND_NEVER;
	if (!s && !jbool(o, "add_prefix_space", 1))
		return LMD_HF_PREPEND_NEVER;
	return LMD_HF_PREPEND_ALWAYS;
}

static int add_pre(struct lmd_hftok *h, json_t *p, struct lmd_err *err)
{
	if (json_is_null(p) || !p)
		return 0;
	const char *type = jstr(p, "type");
	if (!type)
		return lmd_errorf(err, LMD_EFORMAT, "'pre_tokenizer': no type");
	if (!strcmp(type, "Sequence")) {
		json_t *list = json_object_get(p, "pretokenizers");
		size_t i;
		json_t *e;
		json_array_foreach(list, i, e) {
			int rc = add_pre(h, e, err);
			if (rc)
				return rc;
		}
		return 0;
	}
	struct lmd_hf_pre s = {0};
	if (!strcmp(type, "Split")) {
		const char *re = jstr(json_object_get(p, "pattern"), "Regex");
		const char *beh = jstr(p, "behavior");
		if (!re || !beh || strcmp(beh, "Isolated") || jbool(p, "invert", 0))
			return lmd_errorf(err, LMD_EFORMAT, "'pre_tokenizer' Split: only Regex patterns with Isolated behavior are supported");
		s.kind = LMD_HF_SPLIT;
		if (!(s.regex = dup_str(re)))
			return oom(err);
	} else if (!strcmp(type, "ByteLevel")) {
		s.kind = LMD_HF_BYTELEVEL;
		s.add_prefix_space = jbool(p, "add_prefix_space", 1);
		s.use_regex = jbool(p, "use_regex", 1);
	} else if (!strcmp(type, "Metaspace")) {
		const char *r = jstr(p, "replacement");
		if (r && strcmp(r, "\xE2\x96\x81"))
			return lmd_errorf(err, LMD_EFORMAT, "'pre_tokenizer' Metaspace: only U+2581 replacement is supported");
		s.kind = LMD_HF_METASPACE;
		s.prepend_scheme = prepend_scheme(p);
		s.split = jbool(p, "split", 1);
	} else {
		return lmd_errorf(err, LMD_EFORMAT, "pre_tokenizer '%s' is not supported", type);
	}
	struct lmd_hf_pre *np = realloc(h->pre, (size_t)(h->n_pre + 1) * sizeof(*np));
	if (!np) {
		free(s.regex);
		return oom(err);
	}
	h->pre = np;
	h->pre[h->n_pre++] = s;
	return 0;
}

static int parse_decoder(struct lmd_hftok *h, json_t *d, struct lmd_err *err)
{
	const char *type = jstr(d, "type");
	if (!d || json_is_null(d)) {
		h->decoder = LMD_HF_DEC_NONE;
		return 0;
	}
	if (type && !strcmp(type, "ByteLevel")) {
		h->decoder = LMD_HF_DEC_BYTELEVEL;
		return 0;
	}
	if (type && !strcmp(type, "Metaspace")) {
		h->decoder = LMD_HF_DEC_METASPACE;
		h->dec_prepend_scheme = prepend_scheme(d);
		return 0;
	}
	if (type && !strcmp(type, "Sequence")) {
		/* The Llama / sentencepiece chain: Replace(U+2581, ' '), ByteFallback, Fuse, Strip(' ', n, 0). */
		json_t *list = json_object_get(d, "decoders"), *e;
		size_t i;
		int replace = 0;
		json_array_foreach(list, i, e) {
			const char *t = jstr(e, "type");
			if (!t)
				return lmd_errorf(err, LMD_EFORMAT, "'decoder': step without type");
			if (!strcmp(t, "Replace")) {
				const char *pat = jstr(json_object_get(e, "pattern"), "String"), *c = jstr(e, "content");
				if (!pat || !c || strcmp(pat, "\xE2\x96\x81") || strcmp(c, " "))
					return lmd_errorf(err, LMD_EFORMAT, "'decoder': only Replace(U+2581, ' ') is supported");
				replace = 1;
			} else if (!strcmp(t, "ByteFallback") || !strcmp(t, "Fuse")) {
				/* ByteFallback is applied whenever the vocabulary has <0xNN> tokens */
			} else if (!strcmp(t, "Strip")) {
				const char *c = jstr(e, "content");
				json_t *stop = json_object_get(e, "stop");
				if (!c || strcmp(c, " ") || (json_is_integer(stop) && json_integer_value(stop) != 0))
					return lmd_errorf(err, LMD_EFORMAT, "'decoder': only Strip(' ', N, 0) is supported");
				h->dec_strip = (int)json_integer_value(json_object_get(e, "start"));
			} else if (!strcmp(t, "ByteLevel")) {
				h->decoder = LMD_HF_DEC_BYTELEVEL;
				return 0;
			} else {
				return lmd_errorf(err, LMD_EFORMAT, "decoder '%s' is not supported", t);
			}
		}
		if (!replace)
			return lmd_errorf(err, LMD_EFORMAT, "'decoder': Sequence without Replace(U+2581, ' ')");
		h->decoder = LMD_HF_DEC_SPM;
		return 0;
	}
	return lmd_errorf(err, LMD_EFORMAT, "decoder '%s' is not supported", type ? type : "(none)");
}

static int special_id(json_t *tp, const char *name)
{
	json_t *st = json_object_get(json_object_get(tp, "special_tokens"), name);
	json_t *ids = json_object_get(st, "ids");
	if (json_array_size(ids) != 1 || !json_is_integer(json_array_get(ids, 0)))
		return -1;
	return (int)json_integer_value(json_array_get(ids, 0));
}

static void parse_post(struct lmd_hftok *h, json_t *p)
{
	const char *type = jstr(p, "type");
	if (!type)
		return;
	if (!strcmp(type, "Sequence")) {
		json_t *e;
		size_t i;
		json_array_foreach(json_object_get(p, "processors"), i, e)
			parse_post(h, e);
		return;
	}
	if (strcmp(type, "TemplateProcessing"))
		return;
	json_t *e;
	size_t i;
	int seen_seq = 0;
	json_array_foreach(json_object_get(p, "single"), i, e) {
		const char *sid = jstr(json_object_get(e, "SpecialToken"), "id");
		if (json_object_get(e, "Sequence"))
			seen_seq = 1;
		else if (sid && !seen_seq)
			h->bos_id = special_id(p, sid);
		else if (sid)
			h->eos_id = special_id(p, sid);
	}
}

// --- top level

int lmd_hftok_parse(struct lmd_hftok *h, const void *buf, size_t len, struct lmd_err *err)
{
	json_error_t je;
	int rc = 0;
	memset(h, 0, sizeof(*h));
	h->bos_id = h->eos_id = -1;
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
	if (!root)
		return lmd_errorf(err, LMD_EFORMAT, "bad JSON at line %d: %s", je.line, je.text);
	if (!json_is_object(root)) {
		rc = lmd_errorf(err, LMD_EFORMAT, "not a JSON object");
		goto out;
	}
	if ((rc = parse_model(h, json_object_get(root, "model"), err)))
		goto out;
	json_t *added = json_object_get(root, "added_tokens"), *e;
	size_t i;
	if (added && !json_is_array(added)) {
		rc = lmd_errorf(err, LMD_EFORMAT, "'added_tokens' is not an array");
		goto out;
	}
	h->added = calloc(json_array_size(added) + 1, sizeof(*h->added));
	if (!h->added) {
		rc = oom(err);
		goto out;
	}
	json_array_foreach(added, i, e) {
		const char *c = jstr(e, "content");
		json_t *id = json_object_get(e, "id");
		if (!c || !*c || !json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (1 << 24)) {
			rc = lmd_errorf(err, LMD_EFORMAT, "'added_tokens[%zu]': bad id or content", i);
			goto out;
		}
		struct lmd_hf_added *a = &h->added[h->n_added++];
		a->id = (int)json_integer_value(id);
		if (!(a->content = dup_str(c))) {
			rc = oom(err);
			goto out;
		}
		a->single_word = jbool(e, "single_word", 0);
		a->lstrip = jbool(e, "lstrip", 0);
		a->rstrip = jbool(e, "rstrip", 0);
		a->normalized = jbool(e, "normalized", 0);
		a->special = jbool(e, "special", 0);
	}
	if ((rc = add_norm(h, json_object_get(root, "normalizer"), err)))
		goto out;
	if ((rc = add_pre(h, json_object_get(root, "pre_tokenizer"), err)))
		goto out;
	if ((rc = parse_decoder(h, json_object_get(root, "decoder"), err)))
		goto out;
	parse_post(h, json_object_get(root, "post_processor"));
out:
	json_decref(root);
	if (rc)
		lmd_hftok_free(h);
	return rc;
}

void lmd_hftok_free(struct lmd_hftok *h)
{
	for (int i = 0; h->vocab && i < h->n_vocab; i++)
		free(h->vocab[i]);
	free(h->vocab);
	for (int i = 0; h->merges && i < 2 * h->n_merges; i++)
		free(h->merges[i]);
	free(h->merges);
	free(h->unk_token);
	for (int i = 0; i < h->n_added; i++)
		free(h->added[i].content);
	free(h->added);
	for (int i = 0; i < h->n_norm; i++) {
		free(h->norm[i].a);
		free(h->norm[i].b);
	}
	free(h->norm);
	for (int i = 0; i < h->n_pre; i++)
		free(h->pre[i].regex);
	free(h->pre);
	memset(h, 0, sizeof(*h));
}
