/*
 * Internal to the tokenizer (tokenizer.c loads, tok-encode.c encodes, tok-decode.c decodes,
 * tok-util.c holds the shared helpers): the tables of an open tokenizer. Not a public API:
 * include tokenizer.h instead.
 */
#ifndef LMD_TOK_IMPL_H
#define LMD_TOK_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "hftok.h"
#include "tokenizer.h"

#define SPACE_SYM "\xE2\x96\x81"  /* U+2581, sentencepiece's escaped space */

// --- hash maps and buffers (tok-util.c)

struct tok_smap_ent {
	uint32_t hash, off, len;
	int32_t val;  /* -1: empty slot */
};

/* Byte-string keys (copied into the map's own arena) to int values. */
struct tok_smap {
	struct tok_smap_ent *t;
	uint32_t cap, n;  /* cap is a power of two, or 0 */
	char *keys;
	size_t nkeys, capkeys;
};

struct tok_mmap_ent {
	uint64_t key;  /* UINT64_MAX: empty */
	int32_t rank, id;
};

struct tok_mmap {
	struct tok_mmap_ent *t;
	uint32_t cap, n;
};

struct tok_buf {
	char *p;
	size_t n, cap;
};

struct tok_ibuf {
	int *p;
	size_t n, cap;
};


void tok_smap_free(struct tok_smap *m);
/** The value of key k[0..len), or -1. */
int tok_smap_get(const struct tok_smap *m, const void *k, size_t len);
/** Insert k -> val unless k is present (then *old, when not NULL, gets its value); -1 on out of memory. */
int tok_smap_put(struct tok_smap *m, const void *k, size_t len, int val, int *old);

/** The merge of the pair (a, b), or NULL. */
const struct tok_mmap_ent *tok_mmap_get(const struct tok_mmap *m, int a, int b);
/** Room for n merges; -1 on out of memory. */
int tok_mmap_init(struct tok_mmap *m, uint32_t n);
/** Keep the first (best-ranked) merge of a pair, as the tokenizers library does. */
void tok_mmap_put(struct tok_mmap *m, int a, int b, int rank, int id);

/** Room for extra more bytes and a NUL; -1 on out of memory. */
int tok_buf_reserve(struct tok_buf *b, size_t extra);
/** Append s[0..n) (kept NUL-terminated); -1 on out of memory. */
int tok_buf_add(struct tok_buf *b, const void *s, size_t n);
int tok_ibuf_add(struct tok_ibuf *b, int v);

/** Fill err with LMD_ENOMEM; returns LMD_ENOMEM. */
int tok_oom(struct lmd_err *err);

// --- UTF-8 and the byte-level alphabet (tok-util.c)

/**
 * Look at s[0..n): > 0 is the length of a valid character; 0 means s is a proper prefix of a
 * valid character (more bytes needed); < 0 is minus the length of the maximal invalid subpart.
 */
int tok_utf8_char(const uint8_t *s, size_t n);
/** Length of the character at s (1 for an invalid byte), never past n. */
int tok_utf8_len(const uint8_t *s, size_t n);

/** Build GPT-2's byte <-> printable character table (idempotent). */
void tok_bytelevel_init(void);
/** s as byte-level characters, appended to b; -1 on out of memory. */
int tok_bytelevel_encode(struct tok_buf *b, const uint8_t *s, size_t n);
/** Byte-level characters back to bytes, appended to b; -1 (b unchanged) when a char is not in the table. */
int tok_bytelevel_decode(struct tok_buf *b, const char *s, size_t n);

// --- the tables of an open tokenizer (tokenizer.c)

enum bpe_mode { BPE_SPM = 1, BPE_MERGES, BPE_RANKS };

struct tok_entry {
	uint32_t off, len;    /* bytes the token stands for when encoding (impl->arena) */
	uint32_t poff, plen;  /* the piece as shown (impl->arena) */
	float score;          /* sentencepiece score */
	uint8_t spm_type;     /* sentencepiece piece type, 0 for others */
	uint8_t attr;         /* LMD_TOKA_* */
	int16_t byte;         /* byte of a <0xNN> piece, else -1 */
};

struct tok_added {
	int id;
	uint32_t off, len;  /* the text matched (impl->arena): the content, normalized when normalized is set */
	uint8_t lstrip, rstrip, single_word, normalized;
};

struct lmd_tok_impl {
	struct tok_entry *e;   /* [n_vocab] */
	struct tok_buf arena;
	struct tok_smap vocab;     /* encoding bytes -> id, for the model's own vocabulary */
	struct tok_smap pieces;    /* shown piece or added content -> id (lmd_tokenizer_find) */
	struct tok_mmap merges;
	int mode;              /* enum bpe_mode */
	int byte_id[256];      /* id of <0xNN>, or of the single byte (byte-level); -1 when none */
	int byte_fallback;
	int unk_id;
	int fuse_unk;
	int ignore_merges;     /* a word that is a vocabulary entry is one token (tiktoken, Llama 3 HF) */
	struct tok_added *added;   /* sorted by first byte, longer first */
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


static inline const char *tok_arena_str(const struct lmd_tok_impl *m, uint32_t off)
{
	return m->arena.p + off;
}

/** Apply the tokenizer.json normalizers to s[0..n) into o (replacing its contents); -1 on out of memory (tok-encode.c). */
int tok_normalize(const struct lmd_tok_impl *m, const uint8_t *s, size_t n, struct tok_buf *o);

#endif
