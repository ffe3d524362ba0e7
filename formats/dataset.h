/**
 * Prompt files of the serving benchmark (lmd-bench serve --dataset): ShareGPT JSON, as vLLM's
 * `bench serve` reads it (an array of {"conversations": [{"from", "value"}, ...]}; the first two turns
 * of each conversation with at least two are a prompt and its reference answer), or CSV rows of
 * prompt,output_len (RFC 4180 quoting; a first row whose second field is not a number is a header).
 * The parsers read memory (fuzzed in t/fuzz/fuzz-dataset.c); lmd_dataset_load picks by content.
 */
#ifndef LMD_DATASET_H
#define LMD_DATASET_H

#include <stddef.h>

#include "err.h"

struct lmd_dataset_item {
	char *prompt;      /* owned, UTF-8 */
	char *completion;  /* owned: ShareGPT's reference answer (its length is the output length); NULL for CSV */
	int output_len;    /* tokens to generate (CSV); -1 when the completion decides */
};

struct lmd_dataset {
	struct lmd_dataset_item *items;  /* owned array of n */
	int n;
};

/** Parse ShareGPT JSON / prompt CSV from buf; name (the file) goes in error messages. Zeroed struct safe to free. */
int lmd_dataset_sharegpt(struct lmd_dataset *d, const char *buf, size_t len, const char *name, struct lmd_err *err);
int lmd_dataset_csv(struct lmd_dataset *d, const char *buf, size_t len, const char *name, struct lmd_err *err);

/** Read path: ShareGPT when its first non-blank byte is '[', CSV otherwise. No usable row is an error. */
int lmd_dataset_load(struct lmd_dataset *d, const char *path, struct lmd_err *err);

void lmd_dataset_free(struct lmd_dataset *d);

#endif
