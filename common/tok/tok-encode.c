/*
 * Tokenizer encoding: the added-token splitter, the sentencepiece normalizer, the tokenizer.json
 * and tiktoken pre-processing, and one BPE engine with a priority queue for all three models.
 * Every call works in its own scratch space (struct enc), so encoding is thread-safe.
 */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "spm.h"
#include "tok-impl.h"
#include "tokenizer.h"

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
	struct tok_ibuf out;
	struct sym *sym;
	size_t nsym, capsym;
	struct agenda_ent *heap;
	size_t nheap, capheap;
	struct tok_smap cache;     /* word -> index into cids (value), its length stored first */
	struct tok_ibuf cids;
	struct tok_buf norm, pre;  /* normalization / pre-tokenization scratch */
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
	if (tok_ibuf_add(&E->out, id))
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
		const struct tok_mmap_ent *me = tok_mmap_get(&m->merges, a->id, b->id);
		if (me)
			heap_push(E, (struct agenda_ent){(double)me->rank, l, -1, 0, me->id});
		return;
	}
	if (a->freeze || b->freeze)
		return;
	int32_t size = a->len + b->len;
	int id = tok_smap_get(&m->vocab, w + a->start, (size_t)size);
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
			int a = tok_smap_get(&m->vocab, w + start, (size_t)k), b = tok_smap_get(&m->vocab, w + start + k, (size_t)(len - k));
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
				int u = tok_smap_get(&m->vocab, w + i, (size_t)L);
				if (u >= 0 && m->e[u].spm_type == LMD_SPM_USER_DEFINED) {
					k = L, id = u, freeze = 1;
					break;
				}
			}
		}
		if (!k) {
			k = tok_utf8_len(w + i, (size_t)(n - i));
			id = tok_smap_get(&m->vocab, w + i, (size_t)k);
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
		int id = tok_smap_get(&m->vocab, w, (size_t)n);
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
			const struct tok_mmap_ent *me = tok_mmap_get(&m->merges, a->id, E->sym[r].id);
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
	int at = tok_smap_get(&E->cache, w, (size_t)n);
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
	if (tok_ibuf_add(&E->cids, (int)(E->out.n - before)))
		return;
	for (size_t i = before; i < E->out.n; i++)
		if (tok_ibuf_add(&E->cids, E->out.p[i]))
			return;
	tok_smap_put(&E->cache, w, (size_t)n, pos, NULL);
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
	struct tok_buf *o = &E->norm;
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
		r |= tok_buf_add(o, ws, nws);
	int prev_space = m->remove_extra_ws;
	for (size_t i = 0; i < n;) {
		int k = tok_utf8_char(s + i, n - i);
		if (k <= 0) {
			/* a malformed byte becomes U+FFFD (one byte consumed) */
			r |= tok_buf_add(o, "\xEF\xBF\xBD", 3);
			prev_space = 0;
			i++;
			continue;
		}
		if (s[i] == ' ') {
			if (!prev_space)
				r |= tok_buf_add(o, ws, nws);
			prev_space = m->remove_extra_ws;
		} else {
			r |= tok_buf_add(o, s + i, (size_t)k);
			prev_space = 0;
		}
		i += (size_t)k;
	}
	if (m->remove_extra_ws)
		while (o->n >= nws && !memcmp(o->p + o->n - nws, ws, nws))
			o->n -= nws;
	if (m->ws_suffix && m->add_dummy_prefix)
		r |= tok_buf_add(o, ws, nws);
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
static int unicode_normalize(struct tok_buf *o, const uint8_t *s, size_t n, int compat)
{
	size_t i = 0;
	while (i < n) {
		size_t j = i;
		int ascii = 1;
		while (j < n) {
			int k = tok_utf8_char(s + j, n - j);
			if (k <= 0)
				break;
			ascii &= s[j] < 0x80;
			j += (size_t)k;
		}
		if (j > i) {
			if (ascii) {
				if (tok_buf_add(o, s + i, j - i))
					return -1;
			} else {
				utf8proc_uint8_t *dst = NULL;
				int opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE | (compat ? UTF8PROC_COMPAT : 0);
				utf8proc_ssize_t r = utf8proc_map(s + i, (utf8proc_ssize_t)(j - i), &dst, opt);
				int bad = r < 0 || tok_buf_add(o, dst, (size_t)r);
				free(dst);
				if (bad)
					return -1;
			}
		}
		if (j < n) {
			if (tok_buf_add(o, s + j, 1))
				return -1;
			j++;
		}
		i = j;
	}
	return 0;
}

/* Apply the tokenizer.json normalizers to s[0..n) into o (replacing its contents); -1 when out of memory. */
int tok_normalize(const struct lmd_tok_impl *m, const uint8_t *s, size_t n, struct tok_buf *o)
{
	struct tok_buf tmp = {0};
	int r = 0;
	o->n = 0;
	if (tok_buf_add(o, s, n))
		return -1;
	for (int i = 0; i < m->n_norm && !r; i++) {
		const struct lmd_hf_norm *st = &m->norm[i];
		tmp.n = 0;
		if (st->kind == LMD_HF_NFC || st->kind == LMD_HF_NFKC) {
			r = unicode_normalize(&tmp, (const uint8_t *)o->p, o->n, st->kind == LMD_HF_NFKC);
		} else if (st->kind == LMD_HF_PREPEND) {
			if (o->n)  /* the library prepends only to non-empty text */
				r = tok_buf_add(&tmp, st->a, strlen(st->a));
			r |= tok_buf_add(&tmp, o->p, o->n);
		} else {
			size_t la = strlen(st->a), lb = strlen(st->b);
			for (size_t j = 0; j < o->n && !r;) {
				if (j + la <= o->n && !memcmp(o->p + j, st->a, la)) {
					r = tok_buf_add(&tmp, st->b, lb);
					j += la;
				} else {
					r = tok_buf_add(&tmp, o->p + j, 1);
					j++;
				}
			}
		}
		struct tok_buf sw = *o;
		*o = tmp;
		tmp = sw;
	}
	free(tmp.p);
	return r ? -1 : 0;
}

static void hf_normalize(struct enc *E, const uint8_t *s, size_t n)
{
	if (tok_normalize(E->m, s, n, &E->norm))
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
			pos = ov[0] + (PCRE2_SIZE)tok_utf8_len(s + ov[0], n - ov[0]);
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
	struct tok_buf *text = &E->norm, nb = {0};
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
						r |= tok_buf_add(&nb, " ", 1);
					r |= tok_buf_add(&nb, s, (size_t)len);
				} else {
					int starts = len >= 1 && (s[0] == ' ' || (len >= 3 && !memcmp(s, SPACE_SYM, 3)));
					int prepend = p->prepend_scheme == LMD_HF_PREPEND_ALWAYS ||
						      (p->prepend_scheme == LMD_HF_PREPEND_FIRST && at_start && j == 0);
					if (prepend && !starts)
						r |= tok_buf_add(&nb, SPACE_SYM, 3);
					for (int32_t k = 0; k < len; k++)
						r |= s[k] == ' ' ? tok_buf_add(&nb, SPACE_SYM, 3) : tok_buf_add(&nb, s + k, 1);
				}
				if (r || spans_add(&rew, o, (int32_t)nb.n - o))
					E->failed = 1;
			}
			struct tok_buf sw = *text;
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
			const struct tok_added *a = &m->added[j];
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
		if (tok_buf_add(&E->norm, s, n)) {
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
	struct tok_buf whole = E->norm;
	memset(&E->norm, 0, sizeof(E->norm));
	size_t pos = 0;
	struct match mt;
	while (pos < whole.n && !E->failed) {
		int found = find_added(m, (const uint8_t *)whole.p, whole.n, pos, 1, pos, &mt);
		size_t stop = found ? mt.start : whole.n;
		if (stop > pos) {
			E->norm.n = 0;
			if (tok_buf_add(&E->norm, whole.p + pos, stop - pos))
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
	tok_smap_free(&E.cache);
	free(E.cids.p);
	free(E.norm.p);
	free(E.pre.p);
	pcre2_match_data_free(E.md);
	pcre2_match_context_free(E.mctx);
	pcre2_jit_stack_free(E.jstack);
	if (E.failed) {
		free(E.out.p);
		return tok_oom(err);
	}
	*ids = E.out.p ? E.out.p : malloc(sizeof(int));
	*n = E.out.n;
	if (!*ids)
		return tok_oom(err);
	return 0;
}
