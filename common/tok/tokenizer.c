/*
 * Tokenizers (see tokenizer.h): reading the model files and the configuration around them into
 * the tables of tok-impl.h. Encoding is in tok-encode.c, decoding in tok-decode.c.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "file.h"
#include "hftok.h"
#include "spm.h"
#include "tiktoken.h"
#include "tok-impl.h"
#include "tokenizer.h"

// --- the tokenizer's tables







/* Append s[0..n) and a NUL to the arena; the offset goes to *off. */
static int arena_add(struct lmd_tok_impl *m, const void *s, size_t n, uint32_t *off)
{
	if (m->arena.n + n + 1 > UINT32_MAX)
		return -1;
	*off = (uint32_t)m->arena.n;
	if (tok_buf_add(&m->arena, s, n) || tok_buf_add(&m->arena, "", 1))
		return -1;
	return 0;
}

static int piece_byte(const char *s, size_t n)
{
	/* "<0xNN>" with upper-case hex digits, as sentencepiece and tokenizers write it */
	if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>')
		return -1;
	int v = 0;
	for (int i = 3; i < 5; i++) {
		char c = s[i];
		v = v * 16 + (c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1000);
	}
	return v >= 0 ? v : -1;
}


static int grow_vocab(struct lmd_tokenizer *t, int n, struct lmd_err *err)
{
	if (n <= t->n_vocab)
		return 0;
	struct tok_entry *ne = realloc(t->impl->e, (size_t)n * sizeof(*ne));
	if (!ne)
		return tok_oom(err);
	for (int i = t->n_vocab; i < n; i++) {
		ne[i] = (struct tok_entry){0};
		ne[i].byte = -1;
		ne[i].off = ne[i].poff = 0;  /* offset 0 holds "" */
	}
	t->impl->e = ne;
	t->n_vocab = n;
	return 0;
}

/* Set id's encoding bytes and shown piece. */
static int set_entry(struct lmd_tokenizer *t, int id, const void *enc, size_t nenc, const char *piece, size_t npiece)
{
	struct lmd_tok_impl *m = t->impl;
	struct tok_entry *e = &m->e[id];
	if (arena_add(m, enc, nenc, &e->off))
		return -1;
	e->len = (uint32_t)nenc;
	if (piece == enc && npiece == nenc) {
		e->poff = e->off;
	} else if (arena_add(m, piece, npiece, &m->e[id].poff)) {
		return -1;
	}
	m->e[id].plen = (uint32_t)npiece;
	return 0;
}

// --- loading: the three model files

static void note_bad_before(struct lmd_tok_impl *m, const char *s, size_t n)
{
	/* record every character that directly precedes a U+2581 inside a piece */
	for (size_t i = 0; i < n;) {
		int k = tok_utf8_len((const uint8_t *)s + i, n - i);
		if (i + (size_t)k + 3 <= n && !memcmp(s + i + k, SPACE_SYM, 3) && !(k == 3 && !memcmp(s + i, SPACE_SYM, 3))) {
			utf8proc_int32_t cp = -1;
			utf8proc_iterate((const utf8proc_uint8_t *)s + i, k, &cp);
			if (cp >= 0 && cp < 128) {
				m->bad_before_ascii[cp] = 1;
			} else {
				int dup = 0;
				for (int j = 0; j < m->n_bad_before; j++)
					dup |= m->bad_before[j] == cp;
				if (!dup && m->n_bad_before < 64)
					m->bad_before[m->n_bad_before++] = cp;
				else if (!dup)
					m->ws_split = 0;  /* too many to track: never split */
			}
		}
		i += (size_t)k;
	}
}

static int load_spm(struct lmd_tokenizer *t, const void *buf, size_t len, struct lmd_err *err)
{
	struct lmd_spm_model sm;
	struct lmd_tok_impl *m = t->impl;
	int rc = lmd_spm_parse(&sm, buf, len, err);
	if (rc)
		return rc;
	if (sm.model_type != LMD_SPM_BPE) {
		rc = lmd_errorf(err, LMD_EFORMAT, "model type %d is not supported (only BPE)", sm.model_type);
		goto out;
	}
	if (sm.charsmap_len > 0) {
		rc = lmd_errorf(err, LMD_EFORMAT, "normalizer '%s' with a precompiled charsmap is not supported",
				sm.normalizer);
		goto out;
	}
	m->mode = BPE_SPM;
	m->decoder = DEC_SPM;
	m->byte_fallback = sm.byte_fallback;
	m->add_dummy_prefix = sm.add_dummy_prefix;
	m->remove_extra_ws = sm.remove_extra_whitespaces;
	m->escape_ws = sm.escape_whitespaces;
	m->ws_suffix = sm.treat_ws_as_suffix;
	m->ws_split = !m->ws_suffix && m->escape_ws;
	snprintf(m->unk_surface, sizeof(m->unk_surface), "%s", sm.unk_surface);
	m->unk_id = -1;
	if ((rc = grow_vocab(t, sm.n, err)))
		goto out;
	for (int i = 0; i < sm.n; i++) {
		struct lmd_spm_piece *p = &sm.pieces[i];
		struct tok_entry *e = &m->e[i];
		if (set_entry(t, i, p->piece, (size_t)p->len, p->piece, (size_t)p->len)) {
			rc = tok_oom(err);
			goto out;
		}
		e->score = p->score;
		e->spm_type = (uint8_t)p->type;
		int normal = p->type == LMD_SPM_NORMAL || p->type == LMD_SPM_USER_DEFINED || p->type == LMD_SPM_UNUSED;
		int old;
		if (tok_smap_put(normal ? &m->vocab : &m->pieces, p->piece, (size_t)p->len, i, &old)) {
			rc = tok_oom(err);
			goto out;
		}
		if (old >= 0) {
			rc = lmd_errorf(err, LMD_EFORMAT, "piece '%s' is defined twice (ids %d and %d)", p->piece, old, i);
			goto out;
		}
		if (normal)
			note_bad_before(m, p->piece, (size_t)p->len);
		switch (p->type) {
		case LMD_SPM_UNKNOWN:
			e->attr |= LMD_TOKA_UNKNOWN;
			if (m->unk_id < 0)
				m->unk_id = i;
			break;
		case LMD_SPM_CONTROL:
			e->attr |= LMD_TOKA_CONTROL | LMD_TOKA_SPECIAL;
			break;
		case LMD_SPM_BYTE: {
			int b = piece_byte(p->piece, (size_t)p->len);
			if (b < 0 || !sm.byte_fallback) {
				rc = lmd_errorf(err, LMD_EFORMAT, "byte piece %d '%s' is malformed or byte_fallback is off", i, p->piece);
				goto out;
			}
			e->attr |= LMD_TOKA_BYTE;
			e->byte = (int16_t)b;
			m->byte_id[b] = i;
			break;
		}
		case LMD_SPM_USER_DEFINED:
			m->user_first[(uint8_t)p->piece[0]] = 1;
			if (p->len > m->user_maxlen)
				m->user_maxlen = p->len;
			break;
		case LMD_SPM_UNUSED:
			m->has_unused = 1;
			break;
		}
	}
	if (m->unk_id < 0) {
		rc = lmd_errorf(err, LMD_EFORMAT, "no unknown piece");
		goto out;
	}
	if (sm.bos_id >= 0 && sm.bos_id < sm.n && (m->e[sm.bos_id].attr & LMD_TOKA_CONTROL))
		t->bos = sm.bos_id;
	if (sm.eos_id >= 0 && sm.eos_id < sm.n && (m->e[sm.eos_id].attr & LMD_TOKA_CONTROL))
		t->eos = sm.eos_id;
	t->add_bos = 1;
out:
	lmd_spm_free(&sm);
	return rc;
}

static const char gpt2_pattern[] =
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char llama3_pattern[] =
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
	"|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/*
 * Compile a tokenizers / tiktoken pattern with PCRE2. Those libraries' \s is Unicode White_Space,
 * which has U+0085; PCRE2's \s (with UCP) does not, so it is added.
 */
static pcre2_code *compile_re(const char *pat, struct lmd_err *err)
{
	struct tok_buf b = {0};
	int in_class = 0;
	for (const char *p = pat; *p; p++) {
		int r = 0;
		if (*p == '\\' && p[1]) {
			if (p[1] == 's')
				r = tok_buf_add(&b, in_class ? "\\s\\x{85}" : "[\\s\\x{85}]", in_class ? 8 : 10);
			else if (p[1] == 'S')
				r = tok_buf_add(&b, in_class ? "\\S" : "[^\\s\\x{85}]", in_class ? 2 : 11);
			else
				r = tok_buf_add(&b, p, 2);
			p++;
		} else {
			if (*p == '[' && !in_class)
				in_class = 1;
			else if (*p == ']' && in_class)
				in_class = 0;
			r = tok_buf_add(&b, p, 1);
		}
		if (r) {
			free(b.p);
			tok_oom(err);
			return NULL;
		}
	}
	int ec;
	PCRE2_SIZE eo;
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)b.p, b.n, PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &ec, &eo, NULL);
	free(b.p);
	if (!re) {
		PCRE2_UCHAR msg[128];
		pcre2_get_error_message(ec, msg, sizeof(msg));
		lmd_errorf(err, LMD_EFORMAT, "pattern '%.60s': %s at offset %zu", pat, (char *)msg, (size_t)eo);
		return NULL;
	}
	pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);  /* falls back to the interpreter when JIT is unavailable */
	return re;
}

static int load_hf(struct lmd_tokenizer *t, const void *buf, size_t len, struct lmd_err *err)
{
	struct lmd_hftok h;
	struct lmd_tok_impl *m = t->impl;
	int rc = lmd_hftok_parse(&h, buf, len, err);
	if (rc)
		return rc;
	m->mode = BPE_MERGES;
	m->decoder = h.decoder;
	m->dec_strip = h.dec_strip;
	m->dec_prepend_scheme = h.dec_prepend_scheme;
	m->byte_fallback = h.byte_fallback;
	m->ignore_merges = h.ignore_merges;
	m->fuse_unk = h.fuse_unk;
	m->unk_id = -1;
	for (int i = 0; i < h.n_pre; i++)
		m->bytelevel |= h.pre[i].kind == LMD_HF_BYTELEVEL;
	m->bytelevel |= h.decoder == LMD_HF_DEC_BYTELEVEL;
	m->ws_split = !m->bytelevel;
	for (int i = 0; i < h.n_pre; i++)
		if (h.pre[i].kind == LMD_HF_METASPACE)
			m->ws_split = 0;  /* Metaspace splits by itself (or deliberately does not) */
	int n = h.n_vocab;
	for (int i = 0; i < h.n_added; i++)
		if (h.added[i].id >= n)
			n = h.added[i].id + 1;
	if ((rc = grow_vocab(t, n, err)))
		goto out;
	struct tok_buf tmp = {0};
	for (int i = 0; i < h.n_vocab; i++) {
		const char *s = h.vocab[i];
		if (!s)
			continue;
		size_t sl = strlen(s);
		const char *enc = s;
		size_t nenc = sl;
		tmp.n = 0;
		if (m->bytelevel && tok_bytelevel_decode(&tmp, s, sl) == 0) {
			enc = tmp.p ? tmp.p : "";
			nenc = tmp.n;
		}
		int old;
		if (set_entry(t, i, enc, nenc, s, sl) || tok_smap_put(&m->vocab, enc, nenc, i, &old)) {
			free(tmp.p);
			rc = tok_oom(err);
			goto out;
		}
		if (!m->bytelevel) {
			int b = piece_byte(s, sl);
			if (b >= 0) {
				m->e[i].attr |= LMD_TOKA_BYTE;
				m->e[i].byte = (int16_t)b;
				m->byte_id[b] = i;
			}
			note_bad_before(m, s, sl);
		} else if (nenc == 1) {
			m->byte_id[(uint8_t)enc[0]] = i;
		}
	}
	free(tmp.p);
	if (h.unk_token) {
		m->unk_id = tok_smap_get(&m->vocab, h.unk_token, strlen(h.unk_token));
		if (m->unk_id >= 0)
			m->e[m->unk_id].attr |= LMD_TOKA_UNKNOWN;
	}
	if (tok_mmap_init(&m->merges, (uint32_t)h.n_merges)) {
		rc = tok_oom(err);
		goto out;
	}
	for (int i = 0; i < h.n_merges; i++) {
		const char *a = h.merges[2 * i], *b = h.merges[2 * i + 1];
		size_t la = strlen(a), lb = strlen(b);
		struct tok_buf cat = {0};
		int ia = -1, ib = -1, ic = -1;
		/* look the merge up by its token strings (vocab keys are encoding bytes in byte-level) */
		if (m->bytelevel) {
			if (tok_bytelevel_decode(&cat, a, la) == 0)
				ia = tok_smap_get(&m->vocab, cat.p ? cat.p : "", cat.n);
			size_t mid = cat.n;
			if (ia >= 0 && tok_bytelevel_decode(&cat, b, lb) == 0) {
				ib = tok_smap_get(&m->vocab, cat.p + mid, cat.n - mid);
				ic = tok_smap_get(&m->vocab, cat.p, cat.n);
			}
		} else {
			ia = tok_smap_get(&m->vocab, a, la);
			ib = tok_smap_get(&m->vocab, b, lb);
			if (!tok_buf_add(&cat, a, la) && !tok_buf_add(&cat, b, lb))
				ic = tok_smap_get(&m->vocab, cat.p, cat.n);
		}
		free(cat.p);
		if (ia < 0 || ib < 0 || ic < 0) {
			rc = lmd_errorf(err, LMD_EFORMAT, "merge %d '%s %s': a token is not in the vocabulary", i, a, b);
			goto out;
		}
		tok_mmap_put(&m->merges, ia, ib, i, ic);
	}
	for (int i = 0; i < h.n_added; i++) {
		struct lmd_hf_added *a = &h.added[i];
		struct tok_entry *e = &m->e[a->id];
		size_t cl = strlen(a->content);
		if (set_entry(t, a->id, a->content, cl, a->content, cl)) {
			rc = tok_oom(err);
			goto out;
		}
		if (m->bytelevel) {
			/* decoding maps an added token through the byte table when every char is in it */
			struct tok_buf bb = {0};
			if (tok_bytelevel_decode(&bb, a->content, cl) == 0 && arena_add(m, bb.p ? bb.p : "", bb.n, &e->off) == 0)
				e->len = (uint32_t)bb.n;
			free(bb.p);
		}
		e->attr |= LMD_TOKA_ADDED | (a->special ? LMD_TOKA_SPECIAL : 0);
		e->byte = -1;
	}
	/* the added-token list for matching is built by the caller from the entries marked ADDED */
	m->n_norm = h.n_norm;
	m->norm = h.norm;
	h.norm = NULL;
	h.n_norm = 0;
	m->n_pre = h.n_pre;
	m->pre = h.pre;
	h.pre = NULL;
	h.n_pre = 0;
	if (m->n_pre > 8) {
		rc = lmd_errorf(err, LMD_EFORMAT, "too many pre-tokenizers (%d)", m->n_pre);
		goto out;
	}
	for (int i = 0; i < m->n_pre; i++) {
		const char *pat = m->pre[i].kind == LMD_HF_SPLIT ? m->pre[i].regex
				  : m->pre[i].kind == LMD_HF_BYTELEVEL && m->pre[i].use_regex ? gpt2_pattern : NULL;
		if (pat && !(m->re[i] = compile_re(pat, err))) {
			rc = err->code;
			goto out;
		}
	}
	/* lmd_hftok stores the added flags; keep them for the splitter */
	m->added = calloc((size_t)h.n_added + 1, sizeof(*m->added));
	if (!m->added) {
		rc = tok_oom(err);
		goto out;
	}
	for (int i = 0; i < h.n_added; i++) {
		struct lmd_hf_added *a = &h.added[i];
		struct tok_added *ad = &m->added[m->n_added++];
		*ad = (struct tok_added){a->id, m->e[a->id].poff, m->e[a->id].plen, (uint8_t)a->lstrip, (uint8_t)a->rstrip,
				     (uint8_t)a->single_word, (uint8_t)a->normalized};
		if (a->normalized) {
			/* matched in normalized text as its own normalized form ("<s>" -> "\u2581<s>") */
			struct tok_buf nb = {0};
			int r = tok_normalize(m, (const uint8_t *)a->content, strlen(a->content), &nb) ||
				arena_add(m, nb.p ? nb.p : "", nb.n, &ad->off);
			ad->len = (uint32_t)nb.n;
			free(nb.p);
			if (r || !ad->len) {
				rc = r ? tok_oom(err) : lmd_errorf(err, LMD_EFORMAT, "added token %d normalizes to nothing", a->id);
				goto out;
			}
		}
	}
	t->bos = h.bos_id;
	t->eos = h.eos_id;
	t->add_bos = h.bos_id >= 0;
	t->add_eos = h.eos_id >= 0;
	if (t->eos >= 0 && t->bos < 0) {
		t->add_eos = 1;
	}
out:
	lmd_hftok_free(&h);
	return rc;
}

static int load_tiktoken(struct lmd_tokenizer *t, const void *buf, size_t len, struct lmd_err *err)
{
	struct lmd_tiktoken tk;
	struct lmd_tok_impl *m = t->impl;
	int rc = lmd_tiktoken_parse(&tk, buf, len, err);
	if (rc)
		return rc;
	m->mode = BPE_RANKS;
	m->decoder = DEC_TIKTOKEN;
	m->ignore_merges = 1;
	m->bytelevel = 1;
	m->unk_id = -1;
	if ((rc = grow_vocab(t, tk.n, err)))
		goto out;
	struct tok_buf shown = {0};
	for (int r = 0; r < tk.n; r++) {
		const uint8_t *s = tk.bytes + tk.off[r];
		size_t n = tk.off[r + 1] - tk.off[r];
		int old;
		shown.n = 0;
		if (tok_bytelevel_encode(&shown, s, n) || set_entry(t, r, s, n, shown.p, shown.n) ||
		    tok_smap_put(&m->vocab, s, n, r, &old)) {
			free(shown.p);
			rc = tok_oom(err);
			goto out;
		}
		if (old >= 0) {
			free(shown.p);
			rc = lmd_errorf(err, LMD_EFORMAT, "token of rank %d repeats rank %d", r, old);
			goto out;
		}
		if (n == 1)
			m->byte_id[s[0]] = r;
	}
	free(shown.p);
	for (int b = 0; b < 256; b++)
		if (m->byte_id[b] < 0) {
			rc = lmd_errorf(err, LMD_EFORMAT, "no token for byte 0x%02X", b);
			goto out;
		}
	m->n_pre = 1;
	m->pre = calloc(1, sizeof(*m->pre));
	if (!m->pre) {
		rc = tok_oom(err);
		goto out;
	}
	m->pre[0].kind = LMD_HF_SPLIT;
	if (!(m->re[0] = compile_re(llama3_pattern, err)))
		rc = err->code;
	t->add_bos = 1;
out:
	lmd_tiktoken_free(&tk);
	return rc;
}

// --- loading: the configuration files around the model file

static json_t *load_json(const char *dir, const char *name, struct lmd_err *err, int *rc)
{
	*rc = 0;
	if (!dir)
		return NULL;
	char *path = lmd_path_join(dir, name, err);
	if (!path) {
		*rc = LMD_ENOMEM;
		return NULL;
	}
	json_t *j = NULL;
	if (lmd_exists(path)) {
		json_error_t je;
		j = json_load_file(path, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &je);  /* model_max_length overflows int64 */
		if (!j || !json_is_object(j)) {
			*rc = lmd_errorf(err, LMD_EFORMAT, "'%s': bad JSON at line %d: %s", path, je.line,
					 j ? "not an object" : je.text);
			json_decref(j);
			j = NULL;
		}
	}
	free(path);
	return j;
}

/* "x" or {"content": "x"} */
static const char *token_text(json_t *v)
{
	if (json_is_string(v))
		return json_string_value(v);
	return json_string_value(json_object_get(v, "content"));
}

/* Rename or add id as an added token with content. */
static int add_token(struct lmd_tokenizer *t, int id, const char *content, int special, int lstrip, int rstrip,
		     int single_word, struct lmd_err *err)
{
	struct lmd_tok_impl *m = t->impl;
	size_t cl = strlen(content);
	if (!cl)
		return 0;
	if (id >= t->n_vocab) {
		int rc = grow_vocab(t, id + 1, err);
		if (rc)
			return rc;
	}
	struct tok_entry *e = &m->e[id];
	for (int i = 0; i < m->n_added; i++)
		if (m->added[i].id == id)
			return 0;  /* tokenizer.json already has it */
	if (!(e->attr & LMD_TOKA_ADDED) || e->plen != cl || memcmp(tok_arena_str(m, e->poff), content, cl)) {
		if (m->bytelevel) {
			struct tok_buf bb = {0};
			uint32_t poff = 0;
			int r = arena_add(m, content, cl, &poff);
			if (!r && tok_bytelevel_decode(&bb, content, cl) == 0) {
				r = arena_add(m, bb.p ? bb.p : "", bb.n, &e->off);
				e->len = (uint32_t)bb.n;
			} else if (!r) {
				e->off = poff;
				e->len = (uint32_t)cl;
			}
			free(bb.p);
			e->poff = poff;
			e->plen = (uint32_t)cl;
			if (r)
				return tok_oom(err);
		} else if (set_entry(t, id, content, cl, content, cl)) {
			return tok_oom(err);
		}
	}
	e->attr |= LMD_TOKA_ADDED | (special ? LMD_TOKA_SPECIAL : 0);
	e->byte = -1;
	struct tok_added *na = realloc(m->added, (size_t)(m->n_added + 1) * sizeof(*na));
	if (!na)
		return tok_oom(err);
	m->added = na;
	m->added[m->n_added++] = (struct tok_added){id, e->poff, e->plen, (uint8_t)lstrip, (uint8_t)rstrip,
						(uint8_t)single_word, 0};
	return 0;
}

static const char *const llama31_specials[] = {
	"<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
	"<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
	"<|eot_id|>", "<|python_tag|>",
};

static int add_config_tokens(struct lmd_tokenizer *t, json_t *tc, struct lmd_err *err)
{
	struct lmd_tok_impl *m = t->impl;
	int rc;
	const char *k;
	json_t *v;
	json_t *atd = json_object_get(tc, "added_tokens_decoder");
	json_object_foreach(atd, k, v) {
		char *end;
		long id = strtol(k, &end, 10);
		const char *c = json_string_value(json_object_get(v, "content"));
		if (*end || id < 0 || id >= (1 << 24) || !c)
			return lmd_errorf(err, LMD_EFORMAT, "'added_tokens_decoder': bad entry '%.40s'", k);
		if ((rc = add_token(t, (int)id, c, json_is_true(json_object_get(v, "special")),
				    json_is_true(json_object_get(v, "lstrip")), json_is_true(json_object_get(v, "rstrip")),
				    json_is_true(json_object_get(v, "single_word")), err)))
			return rc;
	}
	if (m->mode == BPE_RANKS && !json_object_size(atd)) {
		/* Llama 3.1's tokenizer.py names when no tokenizer_config.json says otherwise */
		int base = t->n_vocab;
		char name[64];
		for (int i = 0; i < 256; i++) {
			if (i < 11)
				snprintf(name, sizeof(name), "%s", llama31_specials[i]);
			else
				snprintf(name, sizeof(name), "<|reserved_special_token_%d|>", i - 11 + 2);
			if ((rc = add_token(t, base + i, name, 1, 0, 0, 0, err)))
				return rc;
		}
	}
	return 0;
}

static int cmp_added(const void *a, const void *b, void *ctx)
{
	const struct tok_added *x = a, *y = b;
	const struct lmd_tok_impl *m = ctx;
	uint8_t fx = (uint8_t)m->arena.p[x->off], fy = (uint8_t)m->arena.p[y->off];
	if (fx != fy)
		return fx - fy;
	if (x->len != y->len)
		return x->len > y->len ? -1 : 1;
	return x->id - y->id;
}

/* Index the added tokens by first byte, longest first (leftmost-longest matching). */
static void index_added(struct lmd_tok_impl *m)
{
	qsort_r(m->added, (size_t)m->n_added, sizeof(*m->added), cmp_added, m);
	int j = 0;
	for (int b = 0; b <= 256; b++) {
		while (j < m->n_added && (uint8_t)m->arena.p[m->added[j].off] < b)
			j++;
		m->first[b] = j;
	}
	for (int i = 0; i < m->n_added; i++)
		m->any_normalized |= m->added[i].normalized;
}

static int set_special(struct lmd_tokenizer *t, int *dst, json_t *v)
{
	const char *s = token_text(v);
	if (!s)
		return 0;
	int id = lmd_tokenizer_find(t, s);
	if (id >= 0)
		*dst = id;
	return id >= 0;
}

static void add_stop_id(struct lmd_tokenizer *t, int id)
{
	if (id < 0 || id >= t->n_vocab)
		return;
	for (int i = 0; i < t->n_stop; i++)
		if (t->stop[i] == id)
			return;
	if (t->n_stop < 16)
		t->stop[t->n_stop++] = id;
}

static void add_stop(struct lmd_tokenizer *t, json_t *v)
{
	if (json_is_array(v)) {
		size_t i;
		json_t *e;
		json_array_foreach(v, i, e)
			add_stop(t, e);
		return;
	}
	double x = json_number_value(v);
	if (json_is_number(v) && x >= 0 && x < t->n_vocab && x == (int)x)
		add_stop_id(t, (int)x);
}

static int read_configs(struct lmd_tokenizer *t, const char *dir, struct lmd_err *err)
{
	struct lmd_tok_impl *m = t->impl;
	int rc;
	json_t *tc = load_json(dir, "tokenizer_config.json", err, &rc);
	if (rc)
		return rc;
	json_t *stm = load_json(dir, "special_tokens_map.json", err, &rc);
	json_t *gc = rc ? NULL : load_json(dir, "generation_config.json", err, &rc);
	json_t *cfg = rc ? NULL : load_json(dir, "config.json", err, &rc);
	if (rc)
		goto out;
	if ((rc = add_config_tokens(t, tc, err)))
		goto out;
	if (m->mode == BPE_SPM) {
		/* the slow tokenizers match the control and unknown pieces (<s>, </s>, <unk>) in text */
		for (int i = 0; i < t->n_vocab; i++) {
			struct tok_entry *e = &m->e[i];
			if ((e->spm_type == LMD_SPM_CONTROL || e->spm_type == LMD_SPM_UNKNOWN) && !(e->attr & LMD_TOKA_ADDED) &&
			    (rc = add_token(t, i, tok_arena_str(m, e->poff), 1, 0, 0, 0, err)))
				goto out;
		}
	}
	index_added(m);
	/* every shown piece and added content, for lmd_tokenizer_find (added tokens win) */
	for (int i = 0; i < m->n_added; i++)
		if (tok_smap_put(&m->pieces, tok_arena_str(m, m->added[i].off), m->added[i].len, m->added[i].id, NULL)) {
			rc = tok_oom(err);
			goto out;
		}
	for (int i = 0; i < t->n_vocab; i++)
		if (m->e[i].plen && tok_smap_put(&m->pieces, tok_arena_str(m, m->e[i].poff), m->e[i].plen, i, NULL)) {
			rc = tok_oom(err);
			goto out;
		}
	if (m->mode == BPE_RANKS) {
		t->bos = lmd_tokenizer_find(t, "<|begin_of_text|>");
		t->eos = lmd_tokenizer_find(t, "<|end_of_text|>");
	}
	/* bos / eos: tokenizer_config.json, then special_tokens_map.json, then the model file */
	if (!set_special(t, &t->bos, json_object_get(tc, "bos_token")))
		set_special(t, &t->bos, json_object_get(stm, "bos_token"));
	if (!set_special(t, &t->eos, json_object_get(tc, "eos_token")))
		set_special(t, &t->eos, json_object_get(stm, "eos_token"));
	json_t *bos_tok = json_object_get(tc, "bos_token");
	if (json_is_null(bos_tok) && tc && m->mode != BPE_SPM)
		t->bos = -1;
	json_t *ab = json_object_get(tc, "add_bos_token"), *ae = json_object_get(tc, "add_eos_token");
	if (json_is_boolean(ab))
		t->add_bos = json_is_true(ab);
	if (json_is_boolean(ae))
		t->add_eos = json_is_true(ae);
	if (t->bos >= t->n_vocab)  /* e.g. a post-processor naming an id the vocabulary lacks */
		t->bos = -1;
	if (t->eos >= t->n_vocab)
		t->eos = -1;
	if (t->bos < 0)
		t->add_bos = 0;
	if (t->eos < 0)
		t->add_eos = 0;
	add_stop_id(t, t->eos);
	add_stop(t, json_object_get(gc, "eos_token_id"));
	add_stop(t, json_object_get(cfg, "eos_token_id"));
	json_t *ct = json_object_get(tc, "chat_template");
	const char *jt = json_string_value(ct);
	if (json_is_array(ct)) {
		size_t i;
		json_t *e;
		json_array_foreach(ct, i, e) {
			const char *name = json_string_value(json_object_get(e, "name"));
			if (!jt || (name && !strcmp(name, "default")))
				jt = json_string_value(json_object_get(e, "template"));
		}
	}
	if (jt && !(m->jinja = strdup(jt)))
		rc = tok_oom(err);
out:
	json_decref(tc);
	json_decref(stm);
	json_decref(gc);
	json_decref(cfg);
	return rc;
}

static int try_file(const char *dir, const char *name, char **path, struct lmd_err *err)
{
	*path = lmd_path_join(dir, name, err);
	if (!*path)
		return LMD_ENOMEM;
	if (lmd_exists(*path))
		return 1;
	free(*path);
	*path = NULL;
	return 0;
}

static int tok_init(struct lmd_tokenizer *t, struct lmd_err *err)
{
	memset(t, 0, sizeof(*t));
	t->bos = t->eos = -1;
	struct lmd_tok_impl *m = t->impl = calloc(1, sizeof(*m));
	if (!m)
		return tok_oom(err);
	m->unk_id = -1;
	for (int b = 0; b < 256; b++)
		m->byte_id[b] = -1;
	tok_bytelevel_init();
	uint32_t zero;
	if (arena_add(m, "", 0, &zero))
		return tok_oom(err);
	return 0;
}

static int tok_load(struct lmd_tokenizer *t, enum lmd_tok_kind kind, const void *data, size_t len, struct lmd_err *err)
{
	t->kind = kind;
	switch (kind) {
	case LMD_TOK_SPM: return load_spm(t, data, len, err);
	case LMD_TOK_HF: return load_hf(t, data, len, err);
	case LMD_TOK_TIKTOKEN: return load_tiktoken(t, data, len, err);
	}
	return lmd_errorf(err, LMD_EINVAL, "unknown tokenizer kind %d", (int)kind);
}

int lmd_tokenizer_open_mem(struct lmd_tokenizer *t, enum lmd_tok_kind kind, const void *data, size_t len,
			   struct lmd_err *err)
{
	int rc = tok_init(t, err);
	if (!rc)
		rc = tok_load(t, kind, data, len, err);
	if (!rc)
		rc = read_configs(t, NULL, err);
	if (rc)
		lmd_tokenizer_close(t);
	return rc;
}

int lmd_tokenizer_open(struct lmd_tokenizer *t, const char *dir, struct lmd_err *err)
{
	int rc = tok_init(t, err);
	if (rc) {
		lmd_tokenizer_close(t);
		return rc;
	}
	char *spm = NULL, *hf = NULL, *tik = NULL, *data = NULL;
	size_t len = 0;
	int kind = 0;
	if ((rc = lmd_need_dir(dir, "tokenizer directory", err)))
		goto out;
	if ((rc = try_file(dir, "tokenizer.model", &spm, err)) < 0)
		goto out;
	if (spm) {
		if ((rc = lmd_read_file(spm, &data, &len, err)))
			goto out;
		if (lmd_tiktoken_sniff(data, len)) {
			tik = spm;
			spm = NULL;
		} else {
			kind = LMD_TOK_SPM;
		}
	}
	if (!kind && (rc = try_file(dir, "tokenizer.json", &hf, err)) < 0)
		goto out;
	if (!kind && hf) {
		free(data);
		data = NULL;
		if ((rc = lmd_read_file(hf, &data, &len, err)))
			goto out;
		kind = LMD_TOK_HF;
	}
	if (!kind && !tik && (rc = try_file(dir, "original/tokenizer.model", &tik, err)) < 0)
		goto out;
	if (!kind && tik) {
		free(data);
		data = NULL;
		if ((rc = lmd_read_file(tik, &data, &len, err)))
			goto out;
		kind = LMD_TOK_TIKTOKEN;
	}
	rc = 0;
	if (!kind) {
		rc = lmd_errorf(err, LMD_EIO, "no tokenizer.model or tokenizer.json in '%s'", dir);
		goto out;
	}
	char **used = kind == LMD_TOK_SPM ? &spm : kind == LMD_TOK_HF ? &hf : &tik;
	t->path = *used;
	*used = NULL;
	if ((rc = tok_load(t, kind, data, len, err))) {
		lmd_err_prefix(err, "'%s'", t->path);
		goto out;
	}
	rc = read_configs(t, dir, err);
out:
	free(spm);
	free(hf);
	free(tik);
	free(data);
	if (rc)
		lmd_tokenizer_close(t);
	return rc;
}

void lmd_tokenizer_close(struct lmd_tokenizer *t)
{
	struct lmd_tok_impl *m = t->impl;
	if (m) {
		free(m->e);
		free(m->arena.p);
		tok_smap_free(&m->vocab);
		tok_smap_free(&m->pieces);
		free(m->merges.t);
		free(m->added);
		for (int i = 0; i < m->n_norm; i++) {
			free(m->norm[i].a);
			free(m->norm[i].b);
		}
		free(m->norm);
		for (int i = 0; i < m->n_pre; i++)
			free(m->pre[i].regex);
		free(m->pre);
		for (int i = 0; i < 8; i++)
			pcre2_code_free(m->re[i]);
		free(m->jinja);
		free(m);
	}
	free(t->path);
	memset(t, 0, sizeof(*t));
	t->bos = t->eos = -1;
}

const char *lmd_tokenizer_piece(const struct lmd_tokenizer *t, int id)
{
	if (!t->impl || id < 0 || id >= t->n_vocab)
		return NULL;
	return tok_arena_str(t->impl, t->impl->e[id].poff);
}

int lmd_tokenizer_attr(const struct lmd_tokenizer *t, int id)
{
	if (!t->impl || id < 0 || id >= t->n_vocab)
		return 0;
	return t->impl->e[id].attr;
}

int lmd_tokenizer_find(const struct lmd_tokenizer *t, const char *text)
{
	if (!t->impl)
		return -1;
	return tok_smap_get(&t->impl->pieces, text, strlen(text));
}

const char *lmd_tokenizer_jinja(const struct lmd_tokenizer *t)
{
	return t->impl ? t->impl->jinja : NULL;
}
