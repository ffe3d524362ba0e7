/**
 * safetensors (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length N,
 * N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
 * then the data; offsets are relative to the data start.
 *
 * The parser reads memory and validates everything: header length within the buffer, known dtype,
 * shape * element size == end - begin, every range inside the data section, no two ranges overlapping.
 * A set (lmd_stset) opens a single model.safetensors or a sharded model.safetensors.index.json.
 */
#ifndef LMD_SAFETENSORS_H
#define LMD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "file.h"
#include "tensor.h"

struct lmd_st_entry {
	char *name;            /* owned */
	struct lmd_tensor t;   /* t.data borrowed: points into the parsed buffer */
	uint64_t begin, end;   /* offsets relative to the data section */
};

struct lmd_safetensors {
	struct lmd_map map;          /* owned by _open; empty after _parse alone */
	int n;
	struct lmd_st_entry *e;      /* owned array of n, sorted by name */
};

/** Parse buf (borrowed, must outlive st). what names the source in messages. */
int lmd_safetensors_parse(struct lmd_safetensors *st, const void *buf, size_t len, const char *what,
			  struct lmd_err *err);
/** Map path and parse it. A zeroed struct is safe to close. */
int lmd_safetensors_open(struct lmd_safetensors *st, const char *path, struct lmd_err *err);
void lmd_safetensors_close(struct lmd_safetensors *st);
const struct lmd_st_entry *lmd_safetensors_find(const struct lmd_safetensors *st, const char *name);

/** Write n tensors (names[i], ts[i]) to path atomically, with optional metadata JSON object text (NULL = none). */
int lmd_safetensors_write(const char *path, const char *const *names, const struct lmd_tensor *ts, int n,
			  const char *metadata_json, struct lmd_err *err);

/** All the shards of a model directory. */
struct lmd_stset {
	int n;
	struct lmd_safetensors *shard;  /* owned array of n */
	char **shard_path;              /* owned */
};

/**
 * Open dir/model.safetensors.index.json (its weight_map names the shards; each tensor must be in the shard
 * the map names) or else dir/model.safetensors. Zeroed struct is safe to close.
 */
int lmd_stset_open(struct lmd_stset *s, const char *dir, struct lmd_err *err);
void lmd_stset_close(struct lmd_stset *s);
/** Find a tensor in any shard; *path (may be NULL) receives the shard's path (borrowed). */
const struct lmd_st_entry *lmd_stset_find(const struct lmd_stset *s, const char *name, const char **path);

#endif
