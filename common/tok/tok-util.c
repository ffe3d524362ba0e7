/* Shared helpers of the tokenizer files: hash maps, buffers, UTF-8, the byte-level alphabet. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok-impl.h"

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



void tok_smap_free(struct tok_smap *m)
{
	free(m->t);
	free(m->keys);
	memset(m, 0, sizeof(*m));
}

int tok_smap_get(const struct tok_smap *m, const void *k, size_t len)
{
	if (!m->cap)
		return -1;
	uint32_t h = hash_bytes(k, len);
	for (uint32_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		const struct tok_smap_ent *e = &m->t[i];
		if (e->val < 0)
			return -1;
		if (e->hash == h && e->len == len && !memcmp(m->keys + e->off, k, len))
			return e->val;
	}
}

static int smap_grow(struct tok_smap *m)
{
	uint32_t nc = m->cap ? m->cap * 2 : 1024;
	struct tok_smap_ent *nt = malloc((size_t)nc * sizeof(*nt));
	if (!nt)
		return -1;
	for (uint32_t i = 0; i < nc; i++)
		nt[i].val = -1;
	for (uint32_t i = 0; i < m->cap; i++) {
		struct tok_smap_ent *e = &m->t[i];
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
int tok_smap_put(struct tok_smap *m, const void *k, size_t len, int val, int *old)
{
	if (old)
		*old = -1;
	if ((m->n + 1) * 2 > m->cap && smap_grow(m))
		return -1;
	uint32_t h = hash_bytes(k, len), i;
	for (i = h & (m->cap - 1); m->t[i].val >= 0; i = (i + 1) & (m->cap - 1)) {
		struct tok_smap_ent *e = &m->t[i];
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
	m->t[i] = (struct tok_smap_ent){h, (uint32_t)m->nkeys, (uint32_t)len, val};
	m->nkeys += len;
	m->n++;
	return 0;
}

/* (left id, right id) -> (rank, merged id), for tokenizer.json merges. */

static uint32_t hash_u64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return (uint32_t)x;
}

const struct tok_mmap_ent *tok_mmap_get(const struct tok_mmap *m, int a, int b)
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

int tok_mmap_init(struct tok_mmap *m, uint32_t n)
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
void tok_mmap_put(struct tok_mmap *m, int a, int b, int rank, int id)
{
	uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	uint32_t i;
	for (i = hash_u64(key) & (m->cap - 1); m->t[i].key != UINT64_MAX; i = (i + 1) & (m->cap - 1))
		if (m->t[i].key == key)
			return;
	m->t[i] = (struct tok_mmap_ent){key, rank, id};
	m->n++;
}

// --- growable byte and int buffers


int tok_buf_reserve(struct tok_buf *b, size_t extra)
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

int tok_buf_add(struct tok_buf *b, const void *s, size_t n)
{
	if (tok_buf_reserve(b, n))
		return -1;
	if (n)
		memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
	return 0;
}


int tok_ibuf_add(struct tok_ibuf *b, int v)
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
int tok_utf8_char(const uint8_t *s, size_t n)
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
int tok_utf8_len(const uint8_t *s, size_t n)
{
	int k = tok_utf8_char(s, n);
	return k > 0 ? k : 1;
}

int lmd_utf8_valid(const void *text, size_t n)
{
	const uint8_t *s = text;
	for (size_t i = 0; i < n;) {
		int k = tok_utf8_char(s + i, n - i);
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

static void bytelevel_build(void)
{
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

void tok_bytelevel_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, bytelevel_build);
}

/* s as byte-level characters into b. */
int tok_bytelevel_encode(struct tok_buf *b, const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char tmp[4];
		if (tok_buf_add(b, tmp, (size_t)put_cp(tmp, byte_to_cp[s[i]])))
			return -1;
	}
	return 0;
}

/* Byte-level characters back to bytes into b; -1 (b unchanged) when a char is not in the table. */
int tok_bytelevel_decode(struct tok_buf *b, const char *s, size_t n)
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
		if (tok_buf_add(b, &c, 1))
			return -1;
		i += (size_t)k;
	}
	return 0;
}

int tok_oom(struct lmd_err *err)
{
	return lmd_errorf(err, LMD_ENOMEM, "out of memory");
}
