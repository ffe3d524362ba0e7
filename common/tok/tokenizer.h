/**
 * Tokenizers: text <-> token ids, exactly as each model family's own library does it.
 *
 * Three kinds of model files are read, each parsed in its own file under formats/:
 *   - sentencepiece  tokenizer.model (protobuf, BPE type): Llama 2, InternLM2, lmd-tiny.
 *                    Encoding follows the sentencepiece library (normalizer spec: dummy prefix,
 *                    extra-whitespace removal, U+2581 escaping; BPE by piece score; user-defined
 *                    pieces matched first; byte fallback <0xNN>); decoding follows its DecodeIds.
 *   - HF tokenizer.json (BPE model): Llama-2 style (Prepend/Replace normalizer or Metaspace,
 *                    byte_fallback) and byte-level style (Qwen2, Llama 3: NFC, Split by the model's
 *                    regex, ByteLevel, ignore_merges), as the tokenizers library does.
 *   - tiktoken       rank file (Llama 3 original/tokenizer.model) with the Llama 3 pattern.
 *
 * Which file is used when a directory holds several (lmd_tokenizer_open):
 *   1. tokenizer.model when it is a sentencepiece protobuf. It is the original from which a
 *      tokenizer.json is converted, and the reference outputs of Llama 2, InternLM2 and lmd-tiny
 *      come from the sentencepiece library; with added tokens matched first (as transformers'
 *      slow tokenizers do) each text segment between them is encoded on its own.
 *   2. else tokenizer.json (Qwen2 and every HF-only model, Llama 3 HF dirs included).
 *   3. else a tiktoken rank file: tokenizer.model or original/tokenizer.model.
 *
 * Added tokens are matched in the text before the model runs (leftmost, longest first), whether
 * or not they are "special": tokenizer.json's added_tokens (honouring lstrip/rstrip/single_word/
 * normalized), tokenizer_config.json's added_tokens_decoder (which may rename pieces: InternLM2's
 * ids 92538..92543 become <|plugin|> ... <|im_start|>), the sentencepiece control pieces, and the
 * tiktoken special tokens (from tokenizer_config.json, or Llama 3.1's 256 names when absent).
 *
 * Decoding is a streaming state machine (struct lmd_tokdec); one-shot decoding runs the same
 * machine, so streaming and one-shot output are equal by construction. It never emits a broken
 * UTF-8 sequence: bytes of an unfinished character wait for the next token; bytes that cannot
 * become valid UTF-8 are replaced by U+FFFD the way the family's library does it (sentencepiece:
 * one per byte; tokenizers ByteFallback: one per byte of a byte-token run that is not valid as a
 * whole; byte-level and tiktoken: one per maximal invalid subpart).
 *
 * Special tokens in decoded text: with LMD_DECODE_SKIP_SPECIAL they are left out (what a chat
 * client sees); without it their text is shown, as the tokenizers library does, and a
 * sentencepiece control piece (<s>) is shown too although sentencepiece itself hides it (it
 * still does not count as text for sentencepiece's leading-space rule).
 *
 * Invalid UTF-8 in the text: sentencepiece turns each malformed byte into U+FFFD (so it is not
 * kept); tokenizer.json and tiktoken models keep the raw bytes (byte level, or byte fallback).
 * Not done: Meta's tokenizer.py splitting of runs of over 25,000 non-space characters.
 *
 * A struct lmd_tokenizer is read-only once open: several threads may encode and decode with it
 * at once (every call allocates its own scratch space).
 */
#ifndef LMD_TOKENIZER_H
#define LMD_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

enum lmd_tok_kind { LMD_TOK_SPM = 1, LMD_TOK_HF, LMD_TOK_TIKTOKEN };

/* Per-id attributes (lmd_tokenizer_attr). */
enum {
	LMD_TOKA_SPECIAL = 1,   /* control / special added token: dropped by LMD_DECODE_SKIP_SPECIAL */
	LMD_TOKA_ADDED = 2,     /* matched in the text before the model runs */
	LMD_TOKA_BYTE = 4,      /* a byte-fallback piece <0xNN> */
	LMD_TOKA_UNKNOWN = 8,   /* the unknown piece */
	LMD_TOKA_CONTROL = 16,  /* sentencepiece control piece (<s>, </s>) */
};

/* Flags of lmd_tokenizer_decode and lmd_tokdec_init. */
enum { LMD_DECODE_SKIP_SPECIAL = 1 };

struct lmd_tok_impl;

struct lmd_tokenizer {
	enum lmd_tok_kind kind;
	char *path;          /* owned: the tokenizer file used */
	int n_vocab;         /* ids are 0..n_vocab-1 (the model's vocabulary and every added token) */
	int bos, eos;        /* -1 when none (tokenizer_config.json bos_token / eos_token, else the model's) */
	int add_bos, add_eos;  /* what lmd_tokenizer_encode adds with add_special set */
	int n_stop;
	int stop[16];        /* generation stop ids: eos, generation_config.json / config.json eos_token_id */
	struct lmd_tok_impl *impl;  /* owned: tables, hash maps, compiled regexes */
};

/**
 * Open the tokenizer in dir: an lmd model directory, an HF model directory, or a directory holding
 * only tokenizer files (see the file choice above). Also reads tokenizer_config.json,
 * special_tokens_map.json, generation_config.json and config.json when present. Errors name the
 * file (LMD_EIO when nothing usable exists, LMD_EFORMAT when a file is invalid).
 * A zeroed struct is safe to close; close leaves it zeroed.
 */
int lmd_tokenizer_open(struct lmd_tokenizer *t, const char *dir, struct lmd_err *err);
void lmd_tokenizer_close(struct lmd_tokenizer *t);

/** Open from the bytes of one model file of the given kind, without any configuration file
 * (for fuzzing and tests); data is not kept. */
int lmd_tokenizer_open_mem(struct lmd_tokenizer *t, enum lmd_tok_kind kind, const void *data, size_t len,
			   struct lmd_err *err);

/**
 * Encode text[0..len) (any bytes; invalid UTF-8 goes through byte fallback / byte-level) into
 * *ids, a malloc'd array of *n ids owned by the caller. add_special adds BOS (and EOS) as the
 * model's tokenizer would (add_bos / add_eos); added tokens written in the text are always matched.
 */
int lmd_tokenizer_encode(const struct lmd_tokenizer *t, const char *text, size_t len, int add_special,
			 int **ids, size_t *n, struct lmd_err *err);

/** Decode ids[0..n) into *text (malloc'd, NUL-terminated, owned by the caller), *len bytes. */
int lmd_tokenizer_decode(const struct lmd_tokenizer *t, const int *ids, size_t n, int flags, char **text,
			 size_t *len, struct lmd_err *err);

/**
 * The piece of id as the family's library shows it (sentencepiece piece "▁Hello", tokenizers token
 * "ĠHello", tiktoken bytes in byte-level form, an added token's content). Borrowed from t;
 * NULL when id is out of range.
 */
const char *lmd_tokenizer_piece(const struct lmd_tokenizer *t, int id);

/** Is s[0..n) well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF)? */
int lmd_utf8_valid(const void *s, size_t n);

/** LMD_TOKA_* bits of id (0 when out of range). */
int lmd_tokenizer_attr(const struct lmd_tokenizer *t, int id);

/** The id of a token written exactly as text (an added/special token such as "<|im_end|>", or a
 * vocabulary piece as lmd_tokenizer_piece shows it); -1 when there is none. */
int lmd_tokenizer_find(const struct lmd_tokenizer *t, const char *text);

/** The chat template text of tokenizer_config.json (Jinja), or NULL. Borrowed from t. */
const char *lmd_tokenizer_jinja(const struct lmd_tokenizer *t);

/**
 * Streaming decoder: push ids one at a time and get the text that is final so far.
 * Usage: lmd_tokdec_init; lmd_tokdec_push per id (text valid until the next call);
 * lmd_tokdec_flush at the end (emits what was held back); lmd_tokdec_free.
 * The concatenation of every piece of text equals lmd_tokenizer_decode of the same ids.
 * Decoding drops the leading space of the first piece where the library does (sentencepiece's
 * dummy prefix, the Strip decoder); to continue a text instead (a reply after its prompt), push
 * the prompt's last non-special id first and throw its text away. A zeroed struct is safe to free.
 */
struct lmd_tokdec {
	const struct lmd_tokenizer *t;  /* borrowed */
	int flags;
	int started;      /* some text has been emitted (sentencepiece leading-space rule) */
	int bos_ws_seen;  /* sentencepiece: the last piece's leading U+2581 was consumed */
	int bos_done;     /* sentencepiece: no more leading U+2581 is consumed */
	int strip;        /* leading spaces still to strip (tokenizers Strip decoder) */
	int ntok;         /* tokens seen (Metaspace decoder strips only the first one's space) */
	unsigned char *pend;  /* owned: bytes held back (an unfinished character or byte-token run) */
	size_t npend, cappend;
	char *out;        /* owned: the text returned by the last push/flush */
	size_t nout, capout;
};
void lmd_tokdec_init(struct lmd_tokdec *d, const struct lmd_tokenizer *t, int flags);
int lmd_tokdec_push(struct lmd_tokdec *d, int id, const char **text, size_t *len, struct lmd_err *err);
int lmd_tokdec_flush(struct lmd_tokdec *d, const char **text, size_t *len, struct lmd_err *err);
void lmd_tokdec_free(struct lmd_tokdec *d);

#endif
