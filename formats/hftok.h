/**
 * Hugging Face tokenizer.json (tokenizers library), BPE models only.
 *
 * The parser keeps what a BPE tokenizer needs, as plain data: the vocabulary by id, the merges
 * (as pairs of token strings, in rank order), the added tokens with their matching flags, and the
 * normalizer / pre-tokenizer / decoder pipeline flattened into short lists of known steps. A step
 * this code does not implement is an LMD_EFORMAT error naming it, never silently ignored.
 * All strings are owned copies; the JSON text may be freed after parsing.
 */
#ifndef LMD_HFTOK_H
#define LMD_HFTOK_H

#include <stddef.h>

#include "err.h"

enum lmd_hf_norm_kind { LMD_HF_NFC = 1, LMD_HF_NFKC, LMD_HF_PREPEND, LMD_HF_REPLACE };
struct lmd_hf_norm {
	int kind;
	char *a;  /* owned: PREPEND text, or REPLACE pattern (a literal string) */
	char *b;  /* owned: REPLACE content */
};

enum lmd_hf_pre_kind { LMD_HF_SPLIT = 1, LMD_HF_BYTELEVEL, LMD_HF_METASPACE };
enum { LMD_HF_PREPEND_ALWAYS, LMD_HF_PREPEND_FIRST, LMD_HF_PREPEND_NEVER };
struct lmd_hf_pre {
	int kind;
	char *regex;           /* owned: SPLIT pattern (Isolated behaviour); NULL otherwise */
	int add_prefix_space;  /* BYTELEVEL */
	int use_regex;         /* BYTELEVEL: split with the GPT-2 pattern first */
	int prepend_scheme;    /* METASPACE */
	int split;             /* METASPACE: split into words at each replacement char */
};

enum lmd_hf_dec_kind {
	LMD_HF_DEC_NONE,       /* tokens joined with spaces (the library's default) */
	LMD_HF_DEC_BYTELEVEL,  /* ByteLevel: byte-level chars back to bytes, lossy UTF-8 */
	LMD_HF_DEC_SPM,        /* Sequence of Replace(U+2581 -> ' '), ByteFallback, Fuse, Strip(' ', N, 0) */
	LMD_HF_DEC_METASPACE,  /* Metaspace: U+2581 -> ' ', first token's leading space dropped */
};

struct lmd_hf_added {
	int id;
	char *content;  /* owned */
	int single_word, lstrip, rstrip, normalized, special;
};

struct lmd_hftok {
	int n_vocab;            /* 1 + the largest model id */
	char **vocab;           /* owned [n_vocab]: token string by id, NULL for unused ids */
	int n_merges;
	char **merges;          /* owned [2 * n_merges]: left, right token strings in rank order */
	int byte_fallback, ignore_merges, fuse_unk;
	char *unk_token;        /* owned or NULL */
	int n_added;
	struct lmd_hf_added *added;  /* owned [n_added] */
	int n_norm;
	struct lmd_hf_norm *norm;    /* owned [n_norm], applied in order */
	int n_pre;
	struct lmd_hf_pre *pre;      /* owned [n_pre], applied in order */
	int decoder;                 /* enum lmd_hf_dec_kind */
	int dec_strip;               /* LMD_HF_DEC_SPM: leading spaces stripped (Strip start) */
	int dec_prepend_scheme;      /* LMD_HF_DEC_METASPACE */
	int bos_id, eos_id;          /* from a TemplateProcessing post-processor: ids added around a
				      * single sequence (-1 when none) */
};

/** Parse tokenizer.json text buf[0..len). Zeroed struct safe to free; freed on error. */
int lmd_hftok_parse(struct lmd_hftok *h, const void *buf, size_t len, struct lmd_err *err);
void lmd_hftok_free(struct lmd_hftok *h);

#endif
