/*
 * Tokenizers (see tokenizer.h): tables and loading, the added-token splitter, the three
 * pre-processing pipelines, one BPE engine with a priority queue, and the streaming decoder.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "file.h"
#include "hftok.h"
#include "spm.h"
#include "tiktoken.h"
#include "tokenizer.h"

#define SPACE_SYM "\xE2\x96\x81"  /* U+2581, sentencepiece's escaped space */

// --- hash maps

static uint32_t hash_bytes(const void *k, size_t n)
{
	const uint8_t *p = k;
	uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
	while (n >= 8) {
		uint64_t x;
		memcpy(&x, p, 8);
		h = (h ^ x) * 0xbf58476d1ce4e5b9ull;
		h ^= h >> 31;
		p += 8;
		n -= 8;
	}
	uint64_t x = 0;
	if (n)
		memcpy(&x, p, n);
	h = (h ^ x) * 0x94d049bb133111ebull;
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ull;
	return (uint32_t)(h ^ (h >> 32));
}

struct smap_ent {
	uint32_t hash, off, len;
	int32_t val;  /* -1: empty slot */
};

/* Byte-string keys (copied into the map's own arena) to int values. */
struct smap {
	struct smap_ent *t;
	uint32_t cap, n;  /* cap is a power of two, or 0 */
	char *keys;
	size_t nkeys, capkeys;
};

static void smap_free(struct smap *m)
{
	free(m->t);
	free(m->keys);
	memset(m, 0, sizeof(*m));
}

static int smap_get(const struct smap *m, const void *k, size_t len)
{
	if (!m->cap)
		return -1;
	uint32_t h = hash_bytes(k, len);
	for (uint32_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		const struct smap_ent *e = &m->t[i];
		if (e->val < 0)
			return -1;
		if (e->hash == h && e->len == len && !memcmp(m->keys + e->off, k, len))
			return e->val;
	}
}

static int smap_grow(struct smap *m)
{
	uint32_t nc = m->cap ? m->cap * 2 : 1024;
	struct smap_ent *nt = malloc((size_t)nc * sizeof(*nt));
	if (!nt)
		return -1;
	for (uint32_t i = 0; i < nc; i++)
		nt[i].val = -1;
	for (uint32_t i = 0; i < m->cap; i++) {
		struct smap_ent *e = &m->t[i];
		if (e->val < 0)
			continue;
		uint32_t j = e->hash & (nc - 1);
		while (nt[j].val >= 0)
			j = (j + 1) & (nc - 1);
		nt[j] = *e;
	}
	free(m->t);
	m->t = nt;
	m->cap = nc;
	return 0;
}

/* Insert k -> val unless k is present (then *old gets its value). Returns -1 on out of memory. */
static int smap_put(struct smap *m, const void *k, size_t len, int val, int *old)
{
	if (old)
		*old = -1;
	if ((m->n + 1) * 2 > m->cap && smap_grow(m))
		return -1;
	uint32_t h = hash_bytes(k, len), i;
	for (i = h & (m->cap - 1); m->t[i].val >= 0; i = (i + 1) & (m->cap - 1)) {
		struct smap_ent *e = &m->t[i];
		if (e->hash == h && e->len == len && !memcmp(m->keys + e->off, k, len)) {
			if (old)
				*old = e->val;
			return 0;
		}
	}
	if (m->nkeys + len > m->capkeys) {
		size_t nc = m->capkeys ? m->capkeys * 2 : 4096;
		while (nc < m->nkeys + len)
			nc *= 2;
		char *nk = realloc(m->keys, nc);
		if (!nk)
			return -1;
		m->keys = nk;
		m->capkeys = nc;
	}
	memcpy(m->keys + m->nkeys, k, len);
	m->t[i] = (struct smap_ent){h, (uint32_t)m->nkeys, (uint32_t)len, val};
	m->nkeys += len;
	m->n++;
	return 0;
}

/* (left id, right id) -> (rank, merged id), for tokenizer.json merges. */
struct mmap_ent {
	uint64_t key;  /* UINT64_MAX: empty */
	int32_t rank, id;
};
struct mmap {
	struct mmap_ent *t;
	uint32_t cap, n;
};

static uint32_t hash_u64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return (uint32_t)x;
}

static const struct mmap_ent *mmap_get(const struct mmap *m, int a, int b)
{
	if (!m->cap || a < 0 || b < 0)
		return NULL;
	uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	for (uint32_t i = hash_u64(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		if (m->t[i].key == UINT64_MAX)
			return NULL;
		if (m->t[i].key == key)
			return &m->t[i];
	}
}

static int mmap_init(struct mmap *m, uint32_t n)
{
	m->cap = 1024;
	while (m->cap < 2 * n + 2)
		m->cap *= 2;
	m->t = malloc((size_t)m->cap * sizeof(*m->t));
	if (!m->t)
		return -1;
	for (uint32_t i = 0; i < m->cap; i++)
		m->t[i].key = UINT64_MAX;
	return 0;
}

/* Keep the first (best-ranked) merge of a pair, as the tokenizers library does. */
static void mmap_put(struct mmap *m, int a, int b, int rank, int id)
{
	uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	uint32_t i;
	for (i = hash_u64(key) & (m->cap - 1); m->t[i].key != UINT64_MAX; i = (i + 1) & (m->cap - 1))
		if (m->t[i].key == key)
			return;
	m->t[i] = (struct mmap_ent){key, rank, id};
	m->n++;
}

// --- growable byte and int buffers

struct buf {
	char *p;
	size_t n, cap;
};

static int buf_reserve(struct buf *b, size_t extra)
{
	if (b->n + extra + 1 <= b->cap)
		return 0;
	size_t nc = b->cap ? b->cap * 2 : 256;
	while (nc < b->n + extra + 1)
		nc *= 2;
	char *np = realloc(b->p, nc);
	if (!np)
		return -1;
	b->p = np;
	b->cap = nc;
	return 0;
}

static int buf_add(struct buf *b, const void *s, size_t n)
{
	if (buf_reserve(b, n))
		return -1;
	if (n)
		memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
	return 0;
}

struct ibuf {
	int *p;
	size_t n, cap;
};

static int ibuf_add(struct ibuf *b, int v)
{
	if (b->n == b->cap) {
		size_t nc = b->cap ? b->cap * 2 : 256;
		int *np = realloc(b->p, nc * sizeof(int));
		if (!np)
			return -1;
		b->p = np;
		b->cap = nc;
	}
	b->p[b->n++] = v;
	return 0;
}

// --- UTF-8 helpers

/*
 * Look at s[0..n): > 0 is the length of a valid character; 0 means s is a proper prefix of a
 * valid character (more bytes needed); < 0 is minus the length of the maximal invalid subpart.
 */
static int utf8_char(const uint8_t *s, size_t n)
{
	uint8_t c = s[0];
	int need;
	uint8_t lo = 0x80, hi = 0xBF;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		need = 1;
	else if (c >= 0xE0 && c <= 0xEF) {
		need = 2;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 3;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else
		return -1;
	for (int i = 1; i <= need; i++) {
		if ((size_t)i >= n)
			return 0;
		uint8_t b = s[i];
		if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
			return -i;
	}
	return need + 1;
}

/* Length of the character at s (1 for an invalid byte), never past n. */
static int utf8_len(const uint8_t *s, size_t n)
{
	int k = utf8_char(s, n);
	return k > 0 ? k : 1;
}

static int utf8_valid(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		int k = utf8_char(s + i, n - i);
		if (k <= 0)
			return 0;
		i += (size_t)k;
	}
	return 1;
}

static int put_cp(char *out, int32_t cp)
{
	return (int)utf8proc_encode_char(cp, (utf8proc_uint8_t *)out);
}

/* GPT-2's byte <-> printable character table used by byte-level BPE. */
static int32_t byte_to_cp[256];
static int16_t cp_to_byte[324];

static void bytelevel_table(void)
{
	if (byte_to_cp['!'])
		return;
	int n = 0;
	for (int b = 0; b < 256; b++) {
		int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
		byte_to_cp[b] = printable ? b : 256 + n++;
	}
	for (int i = 0; i < 324; i++)
		cp_to_byte[i] = -1;
	for (int b = 0; b < 256; b++)
		cp_to_byte[byte_to_cp[b]] = (int16_t)b;
}

/* s as byte-level characters into b. */
static int bytelevel_encode(struct buf *b, const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char tmp[4];
		if (buf_add(b, tmp, (size_t)put_cp(tmp, byte_to_cp[s[i]])))
			return -1;
	}
	return 0;
}

/* Byte-level characters back to bytes into b; -1 (b unchanged) when a char is not in the table. */
static int bytelevel_decode(struct buf *b, const char *s, size_t n)
{
	size_t start = b->n;
	for (size_t i = 0; i < n;) {
		utf8proc_int32_t cp;
		utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
		if (k <= 0 || cp < 0 || cp >= 324 || cp_to_byte[cp] < 0) {
			b->n = start;
			return -1;
		}
		char c = (char)cp_to_byte[cp];
		if (buf_add(b, &c, 1))
			return -1;
		i += (size_t)k;
	}
	return 0;
}

// --- the tokenizer's tables

enum bpe_mode { BPE_SPM = 1, BPE_MERGES, BPE_RANKS };

struct tok_entry {
	uint32_t off, len;    /* bytes the token stands for when encoding (impl->arena) */
	uint32_t poff, plen;  /* the piece as shown (impl->arena) */
	float score;          /* sentencepiece score */
	uint8_t spm_type;     /* sentencepiece piece type, 0 for others */
	uint8_t attr;         /* LMD_TOKA_* */
	int16_t byte;         /* byte of a <0xNN> piece, else -1 */
};

struct added {
	int id;
	uint32_t off, len;  /* the text matched (impl->arena): the content, normalized when normalized is set */
	uint8_t lstrip, rstrip, single_word, normalized;
};

struct lmd_tok_impl {
	struct tok_entry *e;   /* [n_vocab] */
	struct buf arena;
	struct smap vocab;     /* encoding bytes -> id, for the model's own vocabulary */
	struct smap pieces;    /* shown piece or added content -> id (lmd_tokenizer_find) */
	struct mmap merges;
	int mode;              /* enum bpe_mode */
	int byte_id[256];      /* id of <0xNN>, or of the single byte (byte-level); -1 when none */
	int byte_fallback;
	int unk_id;
	int fuse_unk;
	int ignore_merges;     /* a word that is a vocabulary entry is one token (tiktoken, Llama 3 HF) */
	struct added *added;   /* sorted by first byte, longer first */
	int n_added;
	int first[257];        /* added[first[b] .. first[b+1]) start with byte b */
	int any_normalized;    /* some added token is matched after normalization (tokenizer.json) */
	/* sentencepiece normalizer */
	int add_dummy_prefix, remove_extra_ws, escape_ws, ws_suffix;
	char unk_surface[64];
	uint8_t user_first[256];  /* a user-defined piece starts with this byte */
	int user_maxlen;
	int has_unused;
	/* word splitting at U+2581 for sentencepiece-style text: exact when no piece has a
	 * character other than U+2581 right before a U+2581 (bad_before lists such characters) */
	int ws_split;
	uint8_t bad_before_ascii[128];
	int n_bad_before;
	int32_t bad_before[64];
	/* tokenizer.json pipeline */
	int n_norm;
	struct lmd_hf_norm *norm;  /* owned (moved out of struct lmd_hftok) */
	int n_pre;
	struct lmd_hf_pre *pre;    /* owned */
	pcre2_code *re[8];         /* compiled SPLIT / GPT-2 patterns, by pre-tokenizer index */
	int bytelevel;             /* vocabulary is byte-level: encode bytes are raw bytes */
	int decoder;               /* enum lmd_hf_dec_kind, or -1 for sentencepiece, -2 for tiktoken */
	int dec_strip, dec_prepend_scheme;
	char *jinja;               /* owned chat template text or NULL */
};

enum { DEC_SPM = -1, DEC_TIKTOKEN = -2 };

static const char *arena_str(const struct lmd_tok_impl *m, uint32_t off)
{
	return m->arena.p + off;
}

/* Append s[0..n) and a NUL to the arena; the offset goes to *off. */
static int arena_add(struct lmd_tok_impl *m, const void *s, size_t n, uint32_t *off)
{
	if (m->arena.n + n + 1 > UINT32_MAX)
		return -1;
	*off = (uint32_t)m->arena.n;
	if (buf_add(&m->arena, s, n) || buf_add(&m->arena, "", 1))
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

static int oom(struct lmd_err *err)
{
	return lmd_errorf(err, LMD_ENOMEM, "out of memory");
}

static int grow_vocab(struct lmd_tokenizer *t, int n, struct lmd_err *err)
{
	if (n <= t->n_vocab)
		return 0;
	struct tok_entry *ne = realloc(t->impl->e, (size_t)n * sizeof(*ne));
	if (!ne)
		return oom(err);
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
		int k = utf8_len((const uint8_t *)s + i, n - i);
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
			rc = oom(err);
			goto out;
		}
		e->score = p->score;
		e->spm_type = (uint8_t)p->type;
		int normal = p->type == LMD_SPM_NORMAL || p->type == LMD_SPM_USER_DEFINED || p->type == LMD_SPM_UNUSED;
		int old;
		if (smap_put(normal ? &m->vocab : &m->pieces, p->piece, (size_t)p->len, i, &old)) {
			rc = oom(err);
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
	struct buf b = {0};
	int in_class = 0;
	for (const char *p = pat; *p; p++) {
		int r = 0;
		if (*p == '\\' && p[1]) {
			if (p[1] == 's')
				r = buf_add(&b, in_class ? "\\s\\x{85}" : "[\\s\\x{85}]", in_class ? 8 : 10);
			else if (p[1] == 'S')
				r = buf_add(&b, in_class ? "\\S" : "[^\\s\\x{85}]", in_class ? 2 : 11);
			else
				r = buf_add(&b, p, 2);
			p++;
		} else {
			if (*p == '[' && !in_class)
				in_class = 1;
			else if (*p == ']' && in_class)
				in_class = 0;
			r = buf_add(&b, p, 1);
		}
		if (r) {
			free(b.p);
			oom(err);
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

static int normalize_into(const struct lmd_tok_impl *m, const uint8_t *s, size_t n, struct buf *o);

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
	struct buf tmp = {0};
	for (int i = 0; i < h.n_vocab; i++) {
		const char *s = h.vocab[i];
		if (!s)
			continue;
		size_t sl = strlen(s);
		const char *enc = s;
		size_t nenc = sl;
		tmp.n = 0;
		if (m->bytelevel && bytelevel_decode(&tmp, s, sl) == 0) {
			enc = tmp.p ? tmp.p : "";
			nenc = tmp.n;
		}
		int old;
		if (set_entry(t, i, enc, nenc, s, sl) || smap_put(&m->vocab, enc, nenc, i, &old)) {
			free(tmp.p);
			rc = oom(err);
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
		m->unk_id = smap_get(&m->vocab, h.unk_token, strlen(h.unk_token));
		if (m->unk_id >= 0)
			m->e[m->unk_id].attr |= LMD_TOKA_UNKNOWN;
	}
	if (mmap_init(&m->merges, (uint32_t)h.n_merges)) {
		rc = oom(err);
		goto out;
	}
	for (int i = 0; i < h.n_merges; i++) {
		const char *a = h.merges[2 * i], *b = h.merges[2 * i + 1];
		size_t la = strlen(a), lb = strlen(b);
		struct buf cat = {0};
		int ia = -1, ib = -1, ic = -1;
		/* look the merge up by its token strings (vocab keys are encoding bytes in byte-level) */
		if (m->bytelevel) {
			if (bytelevel_decode(&cat, a, la) == 0)
				ia = smap_get(&m->vocab, cat.p ? cat.p : "", cat.n);
			size_t mid = cat.n;
			if (ia >= 0 && bytelevel_decode(&cat, b, lb) == 0) {
				ib = smap_get(&m->vocab, cat.p + mid, cat.n - mid);
				ic = smap_get(&m->vocab, cat.p, cat.n);
			}
		} else {
			ia = smap_get(&m->vocab, a, la);
			ib = smap_get(&m->vocab, b, lb);
			if (!buf_add(&cat, a, la) && !buf_add(&cat, b, lb))
				ic = smap_get(&m->vocab, cat.p, cat.n);
		}
		free(cat.p);
		if (ia < 0 || ib < 0 || ic < 0) {
			rc = lmd_errorf(err, LMD_EFORMAT, "merge %d '%s %s': a token is not in the vocabulary", i, a, b);
			goto out;
		}
		mmap_put(&m->merges, ia, ib, i, ic);
	}
	for (int i = 0; i < h.n_added; i++) {
		struct lmd_hf_added *a = &h.added[i];
		struct tok_entry *e = &m->e[a->id];
		size_t cl = strlen(a->content);
		if (set_entry(t, a->id, a->content, cl, a->content, cl)) {
			rc = oom(err);
			goto out;
		}
		if (m->bytelevel) {
			/* decoding maps an added token through the byte table when every char is in it */
			struct buf bb = {0};
			if (bytelevel_decode(&bb, a->content, cl) == 0 && arena_add(m, bb.p ? bb.p : "", bb.n, &e->off) == 0)
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
		rc = oom(err);
		goto out;
	}
	for (int i = 0; i < h.n_added; i++) {
		struct lmd_hf_added *a = &h.added[i];
		struct added *ad = &m->added[m->n_added++];
		*ad = (struct added){a->id, m->e[a->id].poff, m->e[a->id].plen, (uint8_t)a->lstrip, (uint8_t)a->rstrip,
				     (uint8_t)a->single_word, (uint8_t)a->normalized};
		if (a->normalized) {
			/* matched in normalized text as its own normalized form ("<s>" -> "\u2581<s>") */
			struct buf nb = {0};
			int r = normalize_into(m, (const uint8_t *)a->content, strlen(a->content), &nb) ||
				arena_add(m, nb.p ? nb.p : "", nb.n, &ad->off);
			ad->len = (uint32_t)nb.n;
			free(nb.p);
			if (r || !ad->len) {
				rc = r ? oom(err) : lmd_errorf(err, LMD_EFORMAT, "added token %d normalizes to nothing", a->id);
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
	struct buf shown = {0};
	for (int r = 0; r < tk.n; r++) {
		const uint8_t *s = tk.bytes + tk.off[r];
		size_t n = tk.off[r + 1] - tk.off[r];
		int old;
		shown.n = 0;
		if (bytelevel_encode(&shown, s, n) || set_entry(t, r, s, n, shown.p, shown.n) ||
		    smap_put(&m->vocab, s, n, r, &old)) {
			free(shown.p);
			rc = oom(err);
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
		rc = oom(err);
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
	if (!(e->attr & LMD_TOKA_ADDED) || e->plen != cl || memcmp(arena_str(m, e->poff), content, cl)) {
		if (m->bytelevel) {
			struct buf bb = {0};
			uint32_t poff;
			int r = arena_add(m, content, cl, &poff);
			if (!r && bytelevel_decode(&bb, content, cl) == 0) {
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
				return oom(err);
		} else if (set_entry(t, id, content, cl, content, cl)) {
			return oom(err);
		}
	}
	e->attr |= LMD_TOKA_ADDED | (special ? LMD_TOKA_SPECIAL : 0);
	e->byte = -1;
	struct added *na = realloc(m->added, (size_t)(m->n_added + 1) * sizeof(*na));
	if (!na)
		return oom(err);
	m->added = na;
	m->added[m->n_added++] = (struct added){id, e->poff, e->plen, (uint8_t)lstrip, (uint8_t)rstrip,
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
	const struct added *x = a, *y = b;
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
			    (rc = add_token(t, i, arena_str(m, e->poff), 1, 0, 0, 0, err)))
				goto out;
		}
	}
	index_added(m);
	/* every shown piece and added content, for lmd_tokenizer_find (added tokens win) */
	for (int i = 0; i < m->n_added; i++)
		if (smap_put(&m->pieces, arena_str(m, m->added[i].off), m->added[i].len, m->added[i].id, NULL)) {
			rc = oom(err);
			goto out;
		}
	for (int i = 0; i < t->n_vocab; i++)
		if (m->e[i].plen && smap_put(&m->pieces, arena_str(m, m->e[i].poff), m->e[i].plen, i, NULL)) {
			rc = oom(err);
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
		rc = oom(err);
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
		return oom(err);
	m->unk_id = -1;
	for (int b = 0; b < 256; b++)
		m->byte_id[b] = -1;
	bytelevel_table();
	uint32_t zero;
	if (arena_add(m, "", 0, &zero))
		return oom(err);
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
	if (!lmd_is_dir(dir)) {
		rc = lmd_errorf(err, LMD_EIO, "'%s' is not a directory", dir);
		goto out;
	}
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
		smap_free(&m->vocab);
		smap_free(&m->pieces);
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
	return arena_str(t->impl, t->impl->e[id].poff);
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
	return smap_get(&t->impl->pieces, text, strlen(text));
}

const char *lmd_tokenizer_jinja(const struct lmd_tokenizer *t)
{
	return t->impl ? t->impl->jinja : NULL;
}

// --- encoding: scratch space of one call

struct sym {
	int32_t start, len;  /* bytes of the word */
	int32_t prev, next;
	int32_t id;          /* -1: not a vocabulary entry (yet) */
	int32_t freeze;      /* sentencepiece user-defined piece: never merged */
};

struct agenda_ent {
	double key;          /* lower is better: -score, or rank */
	int32_t left, right; /* symbols; right is -1 for merges (checked by id instead) */
	int32_t size;        /* bytes of the pair (concatenation modes) */
	int32_t id;          /* merged id */
};

struct enc {
	const struct lmd_tokenizer *t;
	const struct lmd_tok_impl *m;
	struct ibuf out;
	struct sym *sym;
	size_t nsym, capsym;
	struct agenda_ent *heap;
	size_t nheap, capheap;
	struct smap cache;     /* word -> index into cids (value), its length stored first */
	struct ibuf cids;
	struct buf norm, pre;  /* normalization / pre-tokenization scratch */
	pcre2_match_data *md;
	pcre2_match_context *mctx;
	pcre2_jit_stack *jstack;
	struct lmd_err *err;
	int failed;            /* out of memory */
};

static int heap_less(const struct agenda_ent *a, const struct agenda_ent *b)
{
	if (a->key != b->key)
		return a->key < b->key;
	return a->left < b->left;
}

static void heap_push(struct enc *E, struct agenda_ent v)
{
	if (E->nheap == E->capheap) {
		size_t nc = E->capheap ? E->capheap * 2 : 256;
		struct agenda_ent *nh = realloc(E->heap, nc * sizeof(*nh));
		if (!nh) {
			E->failed = 1;
			return;
		}
		E->heap = nh;
		E->capheap = nc;
	}
	size_t i = E->nheap++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!heap_less(&v, &E->heap[p]))
			break;
		E->heap[i] = E->heap[p];
		i = p;
	}
	E->heap[i] = v;
}

static struct agenda_ent heap_pop(struct enc *E)
{
	struct agenda_ent top = E->heap[0], last = E->heap[--E->nheap];
	size_t i = 0, n = E->nheap;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && heap_less(&E->heap[c + 1], &E->heap[c]))
			c++;
		if (!heap_less(&E->heap[c], &last))
			break;
		E->heap[i] = E->heap[c];
		i = c;
	}
	if (n)
		E->heap[i] = last;
	return top;
}

static void add_sym(struct enc *E, int32_t start, int32_t len, int32_t id, int freeze)
{
	if (E->nsym == E->capsym) {
		size_t nc = E->capsym ? E->capsym * 2 : 256;
		struct sym *ns = realloc(E->sym, nc * sizeof(*ns));
		if (!ns) {
			E->failed = 1;
			return;
		}
		E->sym = ns;
		E->capsym = nc;
	}
	int32_t i = (int32_t)E->nsym++;
	E->sym[i] = (struct sym){start, len, i - 1, -1, id, freeze};
	if (i > 0)
		E->sym[i - 1].next = i;
}

static void out_id(struct enc *E, int id)
{
	if (ibuf_add(&E->out, id))
		E->failed = 1;
}

/* Queue the pair (l, r) when it can merge. */
static void try_pair(struct enc *E, const uint8_t *w, int32_t l, int32_t r)
{
	const struct lmd_tok_impl *m = E->m;
	if (l < 0 || r < 0)
		return;
	struct sym *a = &E->sym[l], *b = &E->sym[r];
	if (m->mode == BPE_MERGES) {
		const struct mmap_ent *me = mmap_get(&m->merges, a->id, b->id);
		if (me)
			heap_push(E, (struct agenda_ent){(double)me->rank, l, -1, 0, me->id});
		return;
	}
	if (a->freeze || b->freeze)
		return;
	int32_t size = a->len + b->len;
	int id = smap_get(&m->vocab, w + a->start, (size_t)size);
	if (id < 0)
		return;
	double key = m->mode == BPE_SPM ? -(double)m->e[id].score : (double)id;
	heap_push(E, (struct agenda_ent){key, l, r, size, id});
}

/* sentencepiece: emit a final piece, splitting unused pieces back and applying byte fallback. */
static void spm_emit(struct enc *E, const uint8_t *w, int32_t start, int32_t len, int id, int depth)
{
	const struct lmd_tok_impl *m = E->m;
	if (id >= 0 && m->e[id].spm_type == LMD_SPM_UNUSED && depth < 64) {
		/* resegment: the best split into two pieces (sentencepiece records the pair it merged) */
		for (int32_t k = 1; k < len; k++) {
			int a = smap_get(&m->vocab, w + start, (size_t)k), b = smap_get(&m->vocab, w + start + k, (size_t)(len - k));
			if (a >= 0 && b >= 0) {
				spm_emit(E, w, start, k, a, depth + 1);
				spm_emit(E, w, start + k, len - k, b, depth + 1);
				return;
			}
		}
	}
	if (id >= 0) {
		out_id(E, id);
	} else if (m->byte_fallback) {
		for (int32_t i = 0; i < len; i++)
			out_id(E, m->byte_id[w[start + i]] >= 0 ? m->byte_id[w[start + i]] : m->unk_id);
	} else {
		out_id(E, m->unk_id);
	}
}

/* Initial symbols of a word. */
static void symbolize(struct enc *E, const uint8_t *w, int32_t n)
{
	const struct lmd_tok_impl *m = E->m;
	E->nsym = 0;
	if (m->mode == BPE_RANKS || m->bytelevel) {
		for (int32_t i = 0; i < n; i++)
			add_sym(E, i, 1, m->byte_id[w[i]], 0);
		return;
	}
	int32_t unk_start = -1, unk_len = 0;
	for (int32_t i = 0; i < n;) {
		int32_t k = 0, id = -1, freeze = 0;
		if (m->mode == BPE_SPM && m->user_first[w[i]]) {
			for (int32_t L = m->user_maxlen < n - i ? m->user_maxlen : n - i; L > 0; L--) {
				int u = smap_get(&m->vocab, w + i, (size_t)L);
				if (u >= 0 && m->e[u].spm_type == LMD_SPM_USER_DEFINED) {
					k = L, id = u, freeze = 1;
					break;
				}
			}
		}
		if (!k) {
			k = utf8_len(w + i, (size_t)(n - i));
			id = smap_get(&m->vocab, w + i, (size_t)k);
		}
		if (m->mode == BPE_MERGES && id < 0) {
			int ok = m->byte_fallback;
			for (int32_t j = 0; ok && j < k; j++)
				ok = m->byte_id[w[i + j]] >= 0;
			if (ok) {
				if (unk_start >= 0)
					add_sym(E, unk_start, unk_len, m->unk_id, 0), unk_start = -1;
				for (int32_t j = 0; j < k; j++)
					add_sym(E, i + j, 1, m->byte_id[w[i + j]], 0);
			} else if (m->unk_id >= 0) {
				if (unk_start >= 0 && m->fuse_unk) {
					unk_len += k;
				} else {
					if (unk_start >= 0)
						add_sym(E, unk_start, unk_len, m->unk_id, 0);
					unk_start = i, unk_len = k;
				}
			}
			/* with neither byte fallback nor an unknown token the character is dropped, as tokenizers does */
			i += k;
			continue;
		}
		if (unk_start >= 0)
			add_sym(E, unk_start, unk_len, m->unk_id, 0), unk_start = -1;
		add_sym(E, i, k, id, freeze);
		i += k;
	}
	if (unk_start >= 0)
		add_sym(E, unk_start, unk_len, m->unk_id, 0);
}

/* BPE over one word w[0..n), appending ids to E->out. */
static void bpe_word(struct enc *E, const uint8_t *w, int32_t n)
{
	const struct lmd_tok_impl *m = E->m;
	if (n <= 0)
		return;
	if (m->ignore_merges) {
		int id = smap_get(&m->vocab, w, (size_t)n);
		if (id >= 0) {
			out_id(E, id);
			return;
		}
	}
	symbolize(E, w, n);
	E->nheap = 0;
	for (size_t i = 1; i < E->nsym; i++)
		try_pair(E, w, (int32_t)i - 1, (int32_t)i);
	while (E->nheap && !E->failed) {
		struct agenda_ent top = heap_pop(E);
		struct sym *a = &E->sym[top.left];
		int32_t r;
		if (m->mode == BPE_MERGES) {
			if (a->len == 0 || a->next < 0)
				continue;
			r = a->next;
			const struct mmap_ent *me = mmap_get(&m->merges, a->id, E->sym[r].id);
			if (!me || me->id != top.id)
				continue;
		} else {
			r = top.right;
			struct sym *b = &E->sym[r];
			if (a->len == 0 || b->len == 0 || a->next != r || a->len + b->len != top.size)
				continue;
		}
		struct sym *b = &E->sym[r];
		a->len += b->len;
		a->id = top.id;
		a->next = b->next;
		if (b->next >= 0)
			E->sym[b->next].prev = top.left;
		b->len = 0;
		try_pair(E, w, a->prev, top.left);
		try_pair(E, w, top.left, a->next);
	}
	for (int32_t i = 0; i >= 0 && (size_t)i < E->nsym && !E->failed; i = E->sym[i].next) {
		struct sym *s = &E->sym[i];
		if (m->mode == BPE_SPM)
			spm_emit(E, w, s->start, s->len, s->id, 0);
		else if (s->id >= 0)
			out_id(E, s->id);
	}
}

/* BPE with a per-call cache for short words (natural text repeats them a lot). */
static void bpe_cached(struct enc *E, const uint8_t *w, int32_t n)
{
	if (n > 64) {
		bpe_word(E, w, n);
		return;
	}
	int at = smap_get(&E->cache, w, (size_t)n);
	if (at >= 0) {
		int cnt = E->cids.p[at];
		for (int i = 0; i < cnt; i++)
			out_id(E, E->cids.p[at + 1 + i]);
		return;
	}
	size_t before = E->out.n;
	bpe_word(E, w, n);
	if (E->failed || E->cache.n > (1u << 20))
		return;
	int pos = (int)E->cids.n;
	if (ibuf_add(&E->cids, (int)(E->out.n - before)))
		return;
	for (size_t i = before; i < E->out.n; i++)
		if (ibuf_add(&E->cids, E->out.p[i]))
			return;
	smap_put(&E->cache, w, (size_t)n, pos, NULL);
}

/* Is the character ending right before w[i] one that may precede U+2581 inside a piece? */
static int bad_before(const struct lmd_tok_impl *m, const uint8_t *w, int32_t i)
{
	int32_t j = i - 1;
	while (j > 0 && (w[j] & 0xC0) == 0x80 && i - j < 4)
		j--;
	if (w[j] < 0x80)
		return m->bad_before_ascii[w[j]];
	utf8proc_int32_t cp = -1;
	utf8proc_iterate(w + j, i - j, &cp);
	for (int k = 0; k < m->n_bad_before; k++)
		if (m->bad_before[k] == cp)
			return 1;
	return 0;
}

/* Sentencepiece-style text (U+2581 for spaces): BPE each word that no piece can span. */
static void bpe_spaced(struct enc *E, const uint8_t *w, int32_t n)
{
	const struct lmd_tok_impl *m = E->m;
	if (!m->ws_split) {
		bpe_word(E, w, n);
		return;
	}
	int32_t start = 0;
	for (int32_t i = 1; i + 3 <= n; i++) {
		if (w[i] == 0xE2 && w[i + 1] == 0x96 && w[i + 2] == 0x81 &&
		    !(i >= 3 && w[i - 3] == 0xE2 && w[i - 2] == 0x96 && w[i - 1] == 0x81) && !bad_before(m, w, i)) {
			bpe_cached(E, w + start, i - start);
			start = i;
		}
	}
	bpe_cached(E, w + start, n - start);
}

// --- encoding: sentencepiece

/* The sentencepiece normalizer with an identity charsmap, into E->norm. */
static void spm_normalize(struct enc *E, const uint8_t *s, size_t n)
{
	const struct lmd_tok_impl *m = E->m;
	struct buf *o = &E->norm;
	o->n = 0;
	if (m->remove_extra_ws)
		while (n && *s == ' ')
			s++, n--;
	if (!n)
		return;
	const char *ws = m->escape_ws ? SPACE_SYM : " ";
	size_t nws = m->escape_ws ? 3 : 1;
	int r = 0;
	if (!m->ws_suffix && m->add_dummy_prefix)
		r |= buf_add(o, ws, nws);
	int prev_space = m->remove_extra_ws;
	for (size_t i = 0; i < n;) {
		int k = utf8_char(s + i, n - i);
		if (k <= 0) {
			/* a malformed byte becomes U+FFFD (one byte consumed) */
			r |= buf_add(o, "\xEF\xBF\xBD", 3);
			prev_space = 0;
			i++;
			continue;
		}
		if (s[i] == ' ') {
			if (!prev_space)
				r |= buf_add(o, ws, nws);
			prev_space = m->remove_extra_ws;
		} else {
			r |= buf_add(o, s + i, (size_t)k);
			prev_space = 0;
		}
		i += (size_t)k;
	}
	if (m->remove_extra_ws)
		while (o->n >= nws && !memcmp(o->p + o->n - nws, ws, nws))
			o->n -= nws;
	if (m->ws_suffix && m->add_dummy_prefix)
		r |= buf_add(o, ws, nws);
	if (r)
		E->failed = 1;
}

static void spm_segment(struct enc *E, const uint8_t *s, size_t n)
{
	spm_normalize(E, s, n);
	if (E->norm.n)
		bpe_spaced(E, (const uint8_t *)E->norm.p, (int32_t)E->norm.n);
}

// --- encoding: tokenizer.json and tiktoken pipelines

/* NFC / NFKC of the valid UTF-8 runs of s, appended to o (invalid bytes are kept as they are). */
static int unicode_normalize(struct buf *o, const uint8_t *s, size_t n, int compat)
{
	size_t i = 0;
	while (i < n) {
		size_t j = i;
		int ascii = 1;
		while (j < n) {
			int k = utf8_char(s + j, n - j);
			if (k <= 0)
				break;
			ascii &= s[j] < 0x80;
			j += (size_t)k;
		}
		if (j > i) {
			if (ascii) {
				if (buf_add(o, s + i, j - i))
					return -1;
			} else {
				utf8proc_uint8_t *dst = NULL;
				int opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE | (compat ? UTF8PROC_COMPAT : 0);
				utf8proc_ssize_t r = utf8proc_map(s + i, (utf8proc_ssize_t)(j - i), &dst, opt);
				int bad = r < 0 || buf_add(o, dst, (size_t)r);
				free(dst);
				if (bad)
					return -1;
			}
		}
		if (j < n) {
			if (buf_add(o, s + j, 1))
				return -1;
			j++;
		}
		i = j;
	}
	return 0;
}

/* Apply the tokenizer.json normalizers to s[0..n) into o (replacing its contents); -1 when out of memory. */
static int normalize_into(const struct lmd_tok_impl *m, const uint8_t *s, size_t n, struct buf *o)
{
	struct buf tmp = {0};
	int r = 0;
	o->n = 0;
	if (buf_add(o, s, n))
		return -1;
	for (int i = 0; i < m->n_norm && !r; i++) {
		const struct lmd_hf_norm *st = &m->norm[i];
		tmp.n = 0;
		if (st->kind == LMD_HF_NFC || st->kind == LMD_HF_NFKC) {
			r = unicode_normalize(&tmp, (const uint8_t *)o->p, o->n, st->kind == LMD_HF_NFKC);
		} else if (st->kind == LMD_HF_PREPEND) {
			if (o->n)  /* the library prepends only to non-empty text */
				r = buf_add(&tmp, st->a, strlen(st->a));
			r |= buf_add(&tmp, o->p, o->n);
		} else {
			size_t la = strlen(st->a), lb = strlen(st->b);
			for (size_t j = 0; j < o->n && !r;) {
				if (j + la <= o->n && !memcmp(o->p + j, st->a, la)) {
					r = buf_add(&tmp, st->b, lb);
					j += la;
				} else {
					r = buf_add(&tmp, o->p + j, 1);
					j++;
				}
			}
		}
		struct buf sw = *o;
		*o = tmp;
		tmp = sw;
	}
	free(tmp.p);
	return r ? -1 : 0;
}

static void hf_normalize(struct enc *E, const uint8_t *s, size_t n)
{
	if (normalize_into(E->m, s, n, &E->norm))
		E->failed = 1;
}

struct span {
	int32_t off, len;
};

struct spans {
	struct span *p;
	size_t n, cap;
};

static int spans_add(struct spans *s, int32_t off, int32_t len)
{
	if (len <= 0)
		return 0;
	if (s->n == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 64;
		struct span *np = realloc(s->p, nc * sizeof(*np));
		if (!np)
			return -1;
		s->p = np;
		s->cap = nc;
	}
	s->p[s->n++] = (struct span){off, len};
	return 0;
}

/* Split text[sp] by the regex into matches and the gaps between them (Isolated). */
static int regex_split(struct enc *E, pcre2_code *re, const char *text, struct span sp, struct spans *out)
{
	if (!E->md) {
		E->md = pcre2_match_data_create(8, NULL);
		E->mctx = pcre2_match_context_create(NULL);
		E->jstack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
		if (!E->md || !E->mctx || !E->jstack)
			return -1;
		pcre2_jit_stack_assign(E->mctx, NULL, E->jstack);
	}
	PCRE2_SIZE pos = 0, n = (PCRE2_SIZE)sp.len;
	PCRE2_SPTR s = (PCRE2_SPTR)text + sp.off;
	while (pos < n) {
		int rc = pcre2_match(re, s, n, pos, 0, E->md, E->mctx);
		if (rc == PCRE2_ERROR_NOMATCH)
			break;
		if (rc < 0)
			return -1;
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(E->md);
		if (ov[1] == ov[0]) {  /* an empty match: step over one character */
			pos = ov[0] + (PCRE2_SIZE)utf8_len(s + ov[0], n - ov[0]);
			continue;
		}
		if (spans_add(out, sp.off + (int32_t)pos, (int32_t)(ov[0] - pos)) ||
		    spans_add(out, sp.off + (int32_t)ov[0], (int32_t)(ov[1] - ov[0])))
			return -1;
		pos = ov[1];
	}
	return spans_add(out, sp.off + (int32_t)pos, (int32_t)(n - pos));
}

/*
 * Pre-tokenize E->norm (which starts at original offset orig_off) and BPE every word.
 * Steps that change text (Metaspace, ByteLevel's prefix space) rebuild the buffer.
 */
static void hf_pretokenize(struct enc *E, int at_start)
{
	const struct lmd_tok_impl *m = E->m;
	struct spans cur = {0}, nxt = {0};
	struct buf *text = &E->norm, nb = {0};
	if (spans_add(&cur, 0, (int32_t)text->n)) {
		E->failed = 1;
		return;
	}
	for (int i = 0; i < m->n_pre && !E->failed; i++) {
		const struct lmd_hf_pre *p = &m->pre[i];
		nxt.n = 0;
		if (p->kind == LMD_HF_METASPACE || (p->kind == LMD_HF_BYTELEVEL && p->add_prefix_space)) {
			/* rewrite each piece into a new buffer */
			nb.n = 0;
			struct spans rew = {0};
			for (size_t j = 0; j < cur.n && !E->failed; j++) {
				const char *s = text->p + cur.p[j].off;
				int32_t len = cur.p[j].len, o = (int32_t)nb.n;
				int r = 0;
				if (p->kind == LMD_HF_BYTELEVEL) {
					if (s[0] != ' ')
						r |= buf_add(&nb, " ", 1);
					r |= buf_add(&nb, s, (size_t)len);
				} else {
					int starts = len >= 1 && (s[0] == ' ' || (len >= 3 && !memcmp(s, SPACE_SYM, 3)));
					int prepend = p->prepend_scheme == LMD_HF_PREPEND_ALWAYS ||
						      (p->prepend_scheme == LMD_HF_PREPEND_FIRST && at_start && j == 0);
					if (prepend && !starts)
						r |= buf_add(&nb, SPACE_SYM, 3);
					for (int32_t k = 0; k < len; k++)
						r |= s[k] == ' ' ? buf_add(&nb, SPACE_SYM, 3) : buf_add(&nb, s + k, 1);
				}
				if (r || spans_add(&rew, o, (int32_t)nb.n - o))
					E->failed = 1;
			}
			struct buf sw = *text;
			*text = nb;
			nb = sw;
			free(cur.p);
			cur = rew;
			if (p->kind == LMD_HF_METASPACE && p->split) {
				/* split before every U+2581 (MergedWithNext) */
				for (size_t j = 0; j < cur.n; j++) {
					const uint8_t *s = (const uint8_t *)text->p + cur.p[j].off;
					int32_t len = cur.p[j].len, st = 0;
					for (int32_t k = 1; k + 3 <= len; k++)
						if (s[k] == 0xE2 && s[k + 1] == 0x96 && s[k + 2] == 0x81) {
							spans_add(&nxt, cur.p[j].off + st, k - st);
							st = k;
						}
					if (spans_add(&nxt, cur.p[j].off + st, len - st))
						E->failed = 1;
				}
				struct spans sw2 = cur;
				cur = nxt;
				nxt = sw2;
			}
		}
		if (m->re[i]) {
			nxt.n = 0;
			for (size_t j = 0; j < cur.n && !E->failed; j++)
				if (regex_split(E, m->re[i], text->p, cur.p[j], &nxt))
					E->failed = 1;
			struct spans sw = cur;
			cur = nxt;
			nxt = sw;
		}
	}
	for (size_t j = 0; j < cur.n && !E->failed; j++) {
		const uint8_t *w = (const uint8_t *)text->p + cur.p[j].off;
		if (m->bytelevel || m->n_pre)
			bpe_cached(E, w, cur.p[j].len);
		else
			bpe_spaced(E, w, cur.p[j].len);
	}
	free(cur.p);
	free(nxt.p);
	free(nb.p);
}

// --- encoding: added tokens

static int is_word_char(const uint8_t *s, size_t n)
{
	utf8proc_int32_t cp = -1;
	if (utf8proc_iterate(s, (utf8proc_ssize_t)n, &cp) <= 0)
		return 0;
	utf8proc_category_t c = utf8proc_category(cp);
	return cp == '_' || (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
	       (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
}

static int is_space_at(const uint8_t *s, size_t n, int *k)
{
	utf8proc_int32_t cp = -1;
	utf8proc_ssize_t r = utf8proc_iterate(s, (utf8proc_ssize_t)n, &cp);
	*k = r > 0 ? (int)r : 1;
	if (r <= 0)
		return 0;
	utf8proc_category_t c = utf8proc_category(cp);
	return (cp >= 9 && cp <= 13) || cp == 0x85 || c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL ||
	       c == UTF8PROC_CATEGORY_ZP;
}

struct match {
	size_t start, end;  /* bytes covered, whitespace taken by lstrip/rstrip included */
	int id;
};

/* The leftmost-longest added token in s[from..n) whose normalized flag is norm; 0 when none. */
static int find_added(const struct lmd_tok_impl *m, const uint8_t *s, size_t n, size_t from, int norm,
		      size_t floor, struct match *mt)
{
	for (size_t i = from; i < n; i++) {
		for (int j = m->first[s[i]]; j < m->first[s[i] + 1]; j++) {
			const struct added *a = &m->added[j];
			if (a->normalized != norm || a->len > n - i || memcmp(s + i, m->arena.p + a->off, a->len))
				continue;
			size_t st = i, en = i + a->len;
			if (a->single_word) {
				int before = 0;
				if (i > 0) {
					size_t q = i - 1;
					while (q > 0 && (s[q] & 0xC0) == 0x80)
						q--;
					before = is_word_char(s + q, i - q);
				}
				if (before || (en < n && is_word_char(s + en, n - en)))
					continue;
			}
			if (a->lstrip) {
				while (st > floor) {
					size_t q = st - 1;
					int k;
					while (q > floor && (s[q] & 0xC0) == 0x80)
						q--;
					if (!is_space_at(s + q, st - q, &k))
						break;
					st = q;
				}
			}
			if (a->rstrip) {
				int k;
				while (en < n && is_space_at(s + en, n - en, &k))
					en += (size_t)k;
			}
			*mt = (struct match){st, en, a->id};
			return 1;
		}
	}
	return 0;
}

/* Encode text that holds no added token of the first pass (offset off in the whole input). */
static void encode_plain(struct enc *E, const uint8_t *s, size_t n, size_t off)
{
	const struct lmd_tok_impl *m = E->m;
	if (!n)
		return;
	if (m->mode == BPE_SPM) {
		spm_segment(E, s, n);
		return;
	}
	if (m->mode == BPE_RANKS) {
		E->norm.n = 0;
		if (buf_add(&E->norm, s, n)) {
			E->failed = 1;
			return;
		}
		hf_pretokenize(E, off == 0);
		return;
	}
	hf_normalize(E, s, n);
	if (!m->any_normalized) {
		hf_pretokenize(E, off == 0);
		return;
	}
	/* second pass: tokens with normalized=true are matched in the normalized text */
	struct buf whole = E->norm;
	memset(&E->norm, 0, sizeof(E->norm));
	size_t pos = 0;
	struct match mt;
	while (pos < whole.n && !E->failed) {
		int found = find_added(m, (const uint8_t *)whole.p, whole.n, pos, 1, pos, &mt);
		size_t stop = found ? mt.start : whole.n;
		if (stop > pos) {
			E->norm.n = 0;
			if (buf_add(&E->norm, whole.p + pos, stop - pos))
				E->failed = 1;
			else
				hf_pretokenize(E, off == 0 && pos == 0);
		}
		if (!found)
			break;
		out_id(E, mt.id);
		pos = mt.end;
	}
	free(E->norm.p);
	E->norm = whole;
}

int lmd_tokenizer_encode(const struct lmd_tokenizer *t, const char *text, size_t len, int add_special, int **ids,
			 size_t *n, struct lmd_err *err)
{
	*ids = NULL;
	*n = 0;
	if (!t->impl)
		return lmd_errorf(err, LMD_EINVAL, "tokenizer is not open");
	if (len > (size_t)INT32_MAX / 4)
		return lmd_errorf(err, LMD_EINVAL, "text too long (%zu bytes)", len);
	struct enc E = {.t = t, .m = t->impl, .err = err};
	const struct lmd_tok_impl *m = t->impl;
	const uint8_t *s = (const uint8_t *)text;
	if (add_special && t->add_bos && t->bos >= 0)
		out_id(&E, t->bos);
	size_t pos = 0;
	struct match mt;
	while (pos < len && !E.failed) {
		int found = find_added(m, s, len, pos, 0, pos, &mt);
		size_t stop = found ? mt.start : len;
		encode_plain(&E, s + pos, stop - pos, pos);
		if (!found)
			break;
		out_id(&E, mt.id);
		pos = mt.end;
	}
	if (add_special && t->add_eos && t->eos >= 0)
		out_id(&E, t->eos);
	free(E.sym);
	free(E.heap);
	smap_free(&E.cache);
	free(E.cids.p);
	free(E.norm.p);
	free(E.pre.p);
	pcre2_match_data_free(E.md);
	pcre2_match_context_free(E.mctx);
	pcre2_jit_stack_free(E.jstack);
	if (E.failed) {
		free(E.out.p);
		return oom(err);
	}
	*ids = E.out.p ? E.out.p : malloc(sizeof(int));
	*n = E.out.n;
	if (!*ids)
		return oom(err);
	return 0;
}

// --- decoding

void lmd_tokdec_init(struct lmd_tokdec *d, const struct lmd_tokenizer *t, int flags)
{
	memset(d, 0, sizeof(*d));
	d->t = t;
	d->flags = flags;
	d->strip = t->impl ? t->impl->dec_strip : 0;
}

void lmd_tokdec_free(struct lmd_tokdec *d)
{
	free(d->pend);
	free(d->out);
	memset(d, 0, sizeof(*d));
}

static int out_add(struct lmd_tokdec *d, const void *s, size_t n)
{
	if (!n)
		return 0;
	if (d->nout + n + 1 > d->capout) {
		size_t nc = d->capout ? d->capout * 2 : 256;
		while (nc < d->nout + n + 1)
			nc *= 2;
		char *np = realloc(d->out, nc);
		if (!np)
			return -1;
		d->out = np;
		d->capout = nc;
	}
	memcpy(d->out + d->nout, s, n);
	d->nout += n;
	d->out[d->nout] = 0;
	d->started = 1;
	return 0;
}

/* Emit text through the Strip decoder (tokenizers' Sequence decoder): leading spaces dropped. */
static int out_text(struct lmd_tokdec *d, const char *s, size_t n)
{
	while (d->strip > 0 && n) {
		if (*s != ' ') {
			d->strip = 0;
			break;
		}
		s++, n--, d->strip--;
	}
	return out_add(d, s, n);
}

static int pend_add(struct lmd_tokdec *d, const void *s, size_t n)
{
	if (d->npend + n > d->cappend) {
		size_t nc = d->cappend ? d->cappend * 2 : 64;
		while (nc < d->npend + n)
			nc *= 2;
		unsigned char *np = realloc(d->pend, nc);
		if (!np)
			return -1;
		d->pend = np;
		d->cappend = nc;
	}
	memcpy(d->pend + d->npend, s, n);
	d->npend += n;
	return 0;
}

/*
 * Emit the held-back bytes that are final. per_byte: sentencepiece's rule (each byte that does not
 * start a valid character is one U+FFFD); otherwise a maximal invalid subpart is one U+FFFD.
 * at_end: no more bytes will join them.
 */
static int pend_emit(struct lmd_tokdec *d, int per_byte, int at_end)
{
	size_t i = 0;
	int r = 0;
	while (i < d->npend && !r) {
		int k = utf8_char(d->pend + i, d->npend - i);
		if (k > 0) {
			r = out_text(d, (const char *)d->pend + i, (size_t)k);
			i += (size_t)k;
		} else if (k == 0 && !at_end) {
			break;
		} else {
			size_t skip = per_byte ? 1 : k < 0 ? (size_t)-k : d->npend - i;
			r = out_text(d, "\xEF\xBF\xBD", 3);
			i += skip;
		}
	}
	if (i) {
		memmove(d->pend, d->pend + i, d->npend - i);
		d->npend -= i;
	}
	return r;
}

/* tokenizers' ByteFallback: a run of byte tokens is kept whole when valid, else one U+FFFD per byte. */
static int group_emit(struct lmd_tokdec *d)
{
	int r = 0;
	if (!d->npend)
		return 0;
	if (utf8_valid(d->pend, d->npend))
		r = out_text(d, (const char *)d->pend, d->npend);
	else
		for (size_t i = 0; i < d->npend && !r; i++)
			r = out_text(d, "\xEF\xBF\xBD", 3);
	d->npend = 0;
	return r;
}

/* Replace U+2581 by ' ' in s and emit it, optionally dropping one leading U+2581 / ' '. */
static int emit_spaced(struct lmd_tokdec *d, const char *s, size_t n, int drop_lead, int *dropped)
{
	int r = 0;
	if (dropped)
		*dropped = 0;
	if (drop_lead && n >= 3 && !memcmp(s, SPACE_SYM, 3)) {
		s += 3, n -= 3;
		if (dropped)
			*dropped = 1;
	}
	size_t st = 0;
	for (size_t i = 0; i + 3 <= n; i++)
		if (!memcmp(s + i, SPACE_SYM, 3)) {
			r |= out_text(d, s + st, i - st);
			r |= out_text(d, " ", 1);
			st = i + 3;
			i += 2;
		}
	r |= out_text(d, s + st, n - st);
	return r;
}

static int dec_one(struct lmd_tokdec *d, int id)
{
	const struct lmd_tokenizer *t = d->t;
	const struct lmd_tok_impl *m = t->impl;
	const struct tok_entry *e = &m->e[id];
	int skip = (d->flags & LMD_DECODE_SKIP_SPECIAL) && (e->attr & LMD_TOKA_SPECIAL);
	const char *piece = arena_str(m, e->poff);
	int r = 0;
	if (m->decoder == DEC_SPM) {
		if (e->attr & LMD_TOKA_BYTE && !(e->attr & LMD_TOKA_ADDED)) {
			unsigned char b = (unsigned char)e->byte;
			return pend_add(d, &b, 1) || pend_emit(d, 1, 0);
		}
		if ((r = pend_emit(d, 1, 1)))
			return r;
		if (d->bos_ws_seen || d->started)
			d->bos_done = 1;  /* from now on no leading U+2581 is consumed */
		int is_bos_ws = !d->bos_done;
		d->bos_ws_seen = 0;
		if (e->attr & (LMD_TOKA_CONTROL | LMD_TOKA_ADDED)) {
			/* control pieces are invisible to sentencepiece; shown when not skipping specials */
			if (skip || (e->attr & LMD_TOKA_CONTROL && d->flags & LMD_DECODE_SKIP_SPECIAL))
				return 0;
			int was = d->started;
			r = out_add(d, piece, e->plen);
			if (e->attr & LMD_TOKA_CONTROL)
				d->started = was;
			return r;
		}
		if (e->attr & LMD_TOKA_UNKNOWN)
			return out_add(d, m->unk_surface, strlen(m->unk_surface));
		int dropped = 0;
		r = emit_spaced(d, piece, e->plen, is_bos_ws && (m->add_dummy_prefix || m->remove_extra_ws), &dropped);
		d->bos_ws_seen = dropped && !m->remove_extra_ws;
		return r;
	}
	if (skip)
		return 0;
	if (m->decoder == LMD_HF_DEC_BYTELEVEL || m->decoder == DEC_TIKTOKEN)
		return pend_add(d, arena_str(m, e->off), e->len) || pend_emit(d, 0, 0);
	if (m->decoder == LMD_HF_DEC_SPM) {
		if (e->byte >= 0) {
			unsigned char b = (unsigned char)e->byte;
			return pend_add(d, &b, 1);
		}
		return group_emit(d) || emit_spaced(d, piece, e->plen, 0, NULL);
	}
	if (m->decoder == LMD_HF_DEC_METASPACE) {
		int first = d->ntok++ == 0;
		return emit_spaced(d, piece, e->plen, first && m->dec_prepend_scheme != LMD_HF_PREPEND_NEVER, NULL);
	}
	/* no decoder: tokens joined by spaces */
	if (d->ntok++ && out_add(d, " ", 1))
		return -1;
	return out_add(d, piece, e->plen);
}

int lmd_tokdec_push(struct lmd_tokdec *d, int id, const char **text, size_t *len, struct lmd_err *err)
{
	d->nout = 0;
	*text = "";
	*len = 0;
	if (!d->t || !d->t->impl)
		return lmd_errorf(err, LMD_EINVAL, "decoder is not initialized");
	if (id < 0 || id >= d->t->n_vocab)
		return lmd_errorf(err, LMD_EINVAL, "token id %d is out of range (vocabulary of %d)", id, d->t->n_vocab);
	if (dec_one(d, id))
		return oom(err);
	*text = d->out ? d->out : "";
	*len = d->nout;
	return 0;
}

int lmd_tokdec_flush(struct lmd_tokdec *d, const char **text, size_t *len, struct lmd_err *err)
{
	d->nout = 0;
	*text = "";
	*len = 0;
	if (!d->t || !d->t->impl)
		return 0;
	int dec = d->t->impl->decoder, r;
	if (dec == LMD_HF_DEC_SPM)
		r = group_emit(d);
	else
		r = pend_emit(d, dec == DEC_SPM, 1);
	if (r)
		return oom(err);
	*text = d->out ? d->out : "";
	*len = d->nout;
	return 0;
}

int lmd_tokenizer_decode(const struct lmd_tokenizer *t, const int *ids, size_t n, int flags, char **text,
			 size_t *len, struct lmd_err *err)
{
	struct lmd_tokdec d;
	struct buf b = {0};
	const char *s;
	size_t k;
	int rc = 0;
	*text = NULL;
	*len = 0;
	lmd_tokdec_init(&d, t, flags);
	for (size_t i = 0; i < n && !rc; i++)
		if (!(rc = lmd_tokdec_push(&d, ids[i], &s, &k, err)) && buf_add(&b, s, k))
			rc = oom(err);
	if (!rc && !(rc = lmd_tokdec_flush(&d, &s, &k, err)) && buf_add(&b, s, k))
		rc = oom(err);
	if (!rc && !b.p && buf_reserve(&b, 0) == 0)
		b.p[0] = 0;
	lmd_tokdec_free(&d);
	if (rc || !b.p) {
		free(b.p);
		return rc ? rc : oom(err);
	}
	*text = b.p;
	*len = b.n;
	return 0;
}
