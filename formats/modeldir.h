/**
 * The lmd model directory (man lmd(7), FILES): what lmd-convert writes and every other tool reads.
 *
 *   DIR/index.msgpack    the index: a msgpack map, readable with any msgpack tool
 *   DIR/weights.bin      tensors of rank -1 (replicated) and, when tp = 1, all tensors
 *   DIR/weights.rankR.bin  the rank-R shards when tp > 1
 *   DIR/tokenizer.model, tokenizer.json, tokenizer_config.json, special_tokens_map.json,
 *   generation_config.json, config.json   copied verbatim from the HF directory when present
 *
 * Weight files are raw little-endian tensor data; every tensor starts at a multiple of
 * LMD_MODELDIR_ALIGN bytes, so a mapped tensor can be used in place.
 */
#ifndef LMD_MODELDIR_H
#define LMD_MODELDIR_H

#include <stdint.h>

#include "config.h"
#include "err.h"
#include "file.h"
#include "tensor.h"

#define LMD_MODELDIR_MAGIC "lmd-model"
#define LMD_MODELDIR_VERSION 1
#define LMD_MODELDIR_INDEX "index.msgpack"
#define LMD_MODELDIR_ALIGN 64

/**
 * Room for quantized weights (index key "quant": nil or a map with these keys): the tensor holds packed
 * integers and names the tensors with its scales and zeros.
 */
struct lmd_quant {
	char method[16];          /* "awq", "rtn", ... ; "" = not quantized */
	int bits, group_size;
	char scales[96], zeros[96];  /* tensor names, "" when absent */
};

struct lmd_mtensor {
	char *name;               /* owned; canonical name (config.h) */
	struct lmd_tensor t;      /* shape of this shard; t.data borrowed from the directory's mapping */
	int file;                 /* index into lmd_modeldir.files */
	uint64_t offset, nbytes;  /* in that file */
	int rank;                 /* tensor-parallel rank, -1 for a replicated tensor */
	int split_axis;           /* axis the full tensor was split on, -1 when replicated */
	struct lmd_quant quant;   /* method "" when the tensor holds plain values */
};

struct lmd_modeldir {
	char *path;               /* owned */
	struct lmd_config cfg;
	int nfiles;
	char **files;             /* owned: file names relative to path */
	struct lmd_map *maps;     /* owned: one mapping per file */
	int n;
	struct lmd_mtensor *t;    /* owned array of n */
};

/** The config as a new JSON object with the index's keys (caller owns it; NULL when out of memory). */
struct json_t;
struct json_t *lmd_config_to_json(const struct lmd_config *c);

/** Does path look like an lmd model directory (has index.msgpack)? */
int lmd_modeldir_is(const char *path);

/** Open and validate (magic, version, config, every tensor's offset, size and shape). Zeroed struct is safe to close. */
int lmd_modeldir_open(struct lmd_modeldir *m, const char *path, struct lmd_err *err);
void lmd_modeldir_close(struct lmd_modeldir *m);

/** Parse an index from memory into m (no files mapped; t[i].t.data stays NULL). For fuzzing and tests. */
int lmd_modeldir_parse_index(struct lmd_modeldir *m, const void *buf, size_t len, struct lmd_err *err);

/** The shard of name for rank (rank -1 or any rank for a replicated tensor); NULL when absent. */
const struct lmd_mtensor *lmd_modeldir_find(const struct lmd_modeldir *m, const char *name, int rank);

/**
 * The whole tensor name, ranks reassembled. *owned receives a malloc'd buffer the caller frees when the
 * tensor had to be joined (NULL when out->data points into the mapping).
 */
int lmd_modeldir_gather(const struct lmd_modeldir *m, const char *name, struct lmd_tensor *out, void **owned,
			struct lmd_err *err);

/**
 * Writing a directory: lmd_modeldir_writer_open starts it in a temporary directory beside dst,
 * _add appends a tensor shard (data copied out at once), _copy copies a side file (tokenizer, ...),
 * _commit writes the index and renames into place, _abort removes everything. src (may be NULL) is
 * the input directory, which dst must neither be, be inside, nor contain (lmd_outdir_check).
 */
struct lmd_modeldir_writer {
	struct lmd_outdir dir;
	struct lmd_config cfg;
	int nfiles;
	FILE *f[64];              /* owned: open weight files */
	uint64_t size[64];
	int n, cap;
	struct lmd_mtensor *t;    /* owned: the index being built (data NULL) */
};
int lmd_modeldir_writer_open(struct lmd_modeldir_writer *w, const char *dst, const char *src,
			     const struct lmd_config *cfg, int force, struct lmd_err *err);
int lmd_modeldir_writer_add(struct lmd_modeldir_writer *w, const char *name, const struct lmd_tensor *t, int rank,
			    int split_axis, struct lmd_err *err);
int lmd_modeldir_writer_copy(struct lmd_modeldir_writer *w, const char *src_path, const char *name,
			     struct lmd_err *err);
int lmd_modeldir_writer_commit(struct lmd_modeldir_writer *w, int force, struct lmd_err *err);
void lmd_modeldir_writer_abort(struct lmd_modeldir_writer *w);

#endif
