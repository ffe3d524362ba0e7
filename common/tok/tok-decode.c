/*
 * Tokenizer decoding: one streaming state machine per library's rules (sentencepiece, the
 * tokenizers decoders, byte level / tiktoken); one-shot decoding runs the same machine.
 */
#include <stdlib.h>
#include <string.h>

#include "tok-impl.h"
#include "tokenizer.h"

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
		int k = tok_utf8_char(d->pend + i, d->npend - i);
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
	if (lmd_utf8_valid(d->pend, d->npend))
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
	const char *piece = tok_arena_str(m, e->poff);
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
		return pend_add(d, tok_arena_str(m, e->off), e->len) || pend_emit(d, 0, 0);
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
		return tok_oom(err);
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
		return tok_oom(err);
	*text = d->out ? d->out : "";
	*len = d->nout;
	return 0;
}

int lmd_tokenizer_decode(const struct lmd_tokenizer *t, const int *ids, size_t n, int flags, char **text,
			 size_t *len, struct lmd_err *err)
{
	struct lmd_tokdec d;
	struct tok_buf b = {0};
	const char *s;
	size_t k;
	int rc = 0;
	*text = NULL;
	*len = 0;
	lmd_tokdec_init(&d, t, flags);
	for (size_t i = 0; i < n && !rc; i++)
		if (!(rc = lmd_tokdec_push(&d, ids[i], &s, &k, err)) && tok_buf_add(&b, s, k))
			rc = tok_oom(err);
	if (!rc && !(rc = lmd_tokdec_flush(&d, &s, &k, err)) && tok_buf_add(&b, s, k))
		rc = tok_oom(err);
	if (!rc && !b.p && tok_buf_reserve(&b, 0) == 0)
		b.p[0] = 0;
	lmd_tokdec_free(&d);
	if (rc || !b.p) {
		free(b.p);
		return rc ? rc : tok_oom(err);
	}
	*text = b.p;
	*len = b.n;
	return 0;
}
