/**
 * sentencepiece model files (tokenizer.model): the ModelProto protobuf, parsed by hand.
 *
 * Only the fields a BPE encoder and decoder need are kept: every piece (string, score, type),
 * the trainer spec's model type, byte_fallback, special ids and unk surface, and the normalizer
 * spec's flags. Unknown fields are skipped by wire type, as protobuf readers do. Every length and
 * varint is checked against the buffer; strings are copied out, so the buffer may be freed after
 * parsing.
 */
#ifndef LMD_SPM_H
#define LMD_SPM_H

#include <stddef.h>

#include "err.h"

enum lmd_spm_type {  /* ModelProto.SentencePiece.Type */
	LMD_SPM_NORMAL = 1,
	LMD_SPM_UNKNOWN = 2,
	LMD_SPM_CONTROL = 3,
	LMD_SPM_USER_DEFINED = 4,
	LMD_SPM_UNUSED = 5,
	LMD_SPM_BYTE = 6,
};

enum { LMD_SPM_UNIGRAM = 1, LMD_SPM_BPE = 2, LMD_SPM_WORD = 3, LMD_SPM_CHAR = 4 };

struct lmd_spm_piece {
	char *piece;   /* owned, NUL-terminated (it may also hold NUL bytes: see len) */
	int len;       /* bytes in piece */
	float score;
	int type;      /* enum lmd_spm_type */
};

struct lmd_spm_model {
	int n;                        /* number of pieces (ids 0..n-1) */
	struct lmd_spm_piece *pieces; /* owned array of n */
	int model_type;               /* LMD_SPM_UNIGRAM (protobuf default), LMD_SPM_BPE, ... */
	int byte_fallback;
	int treat_ws_as_suffix;
	int unk_id, bos_id, eos_id, pad_id;  /* as written in the trainer spec (defaults 0, 1, 2, -1) */
	char unk_surface[64];         /* decoded text of the unknown piece (default " \u2047 ") */
	char normalizer[64];          /* normalizer spec name ("identity", "nmt_nfkc", ...) */
	int charsmap_len;             /* bytes of precompiled_charsmap (0: none) */
	int add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
};

/**
 * Parse a serialized ModelProto from buf[0..len). On error m is left zeroed and err names what
 * was wrong (the caller prefixes the file name). Free with lmd_spm_free.
 */
int lmd_spm_parse(struct lmd_spm_model *m, const void *buf, size_t len, struct lmd_err *err);
void lmd_spm_free(struct lmd_spm_model *m);

/** Does buf look like a serialized ModelProto (first field 'pieces', length-delimited)? */
int lmd_spm_sniff(const void *buf, size_t len);

#endif
