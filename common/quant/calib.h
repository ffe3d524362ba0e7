/**
 * Calibration (lmd-calib, lmd-kvparams, lmd-awq): the calibration text, the sampled windows, the
 * activation statistics collected through the model's taps (model.h), and their msgpack file
 * (schema in man lmd(7), FILES, Calibration statistics).
 *
 *   char *path = lmd_calib_dataset_path("wikitext2", NULL, &err);
 *   lmd_calib_windows(&tok, path, 128, 2048, 0, &ids, &err);       // ids [128 * 2048]
 *   lmd_calib_stats_init(&st, &model.cfg, &err);
 *   lmd_calib_run(&model, ids, 128, 2048, lmd_calib_stats_tap, &st, &err);
 *   lmd_calib_stats_write(&st, out.f, &err);                     // out: lmd_out_open'ed first
 */
#ifndef LMD_CALIB_H
#define LMD_CALIB_H

#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "err.h"
#include "lmd.h"
#include "engine/model.h"
#include "tok/tokenizer.h"

/**
 * The file of a calibration dataset: a named set ("wikitext2", "ptb", "c4") is looked up in data_dir,
 * else $LMD_DATA, else the installed share/lmd/data (share.h) as NAME.txt or NAME.jsonl; anything else is
 * a file path. Returns a malloc'd path (caller frees); NULL with LMD_EIO in err when not found.
 */
char *lmd_calib_dataset_path(const char *dataset, const char *data_dir, struct lmd_err *err);

/**
 * The calibration windows (LMDeploy's recipe): the file's text (plain text, or JSON lines whose "text"
 * fields are taken) joined with "\n\n", tokenized once without BOS, then samples windows of seqlen
 * tokens at random offsets (xorshift64* seeded with seed). *ids is malloc'd [samples * seqlen].
 * LMD_EINVAL when the text has fewer than seqlen + 1 tokens (err names the file and both counts).
 */
int lmd_calib_windows(const struct lmd_tokenizer *tok, const char *path, int samples, int seqlen, uint64_t seed,
		      int32_t **ids, struct lmd_err *err);

/**
 * AutoAWQ's calibration windows: the documents of path (the "text" of each JSON line, else each line)
 * in an order shuffled with seed, each stripped and tokenized with BOS; empty ones and those longer
 * than seqlen are skipped; the first docs taken are joined and cut into *windows windows of seqlen
 * tokens (the remainder is dropped). *ids is malloc'd [*windows * seqlen]. LMD_EINVAL when they make
 * no whole window.
 */
int lmd_calib_doc_windows(const struct lmd_tokenizer *tok, const char *path, int docs, int seqlen, uint64_t seed,
			  int32_t **ids, int *windows, struct lmd_err *err);

/** Run the model over the windows (batch of them at a time, each a fresh sequence) with tap set. */
int lmd_calib_run(struct lmd_model *m, const int32_t *ids, int samples, int seqlen, int batch, lmd_tap_fn tap,
		  void *ctx, const struct lmd_progress *progress, struct lmd_err *err);

/* The inputs of one layer's linears: 0 = wq/wk/wv, 1 = wo, 2 = w1/w3, 3 = w2. */
enum { LMD_CALIB_QKV, LMD_CALIB_O, LMD_CALIB_W13, LMD_CALIB_W2, LMD_CALIB_NIN };

/** Statistics of one linear input (per channel) over count tokens. */
struct lmd_calib_in {
	int channels;
	int64_t count;
	float *absmax;            /* owned [channels] */
	double *abssum, *sumsq;   /* owned [channels]: sum of |x| and of x² (llama.cpp's imatrix) */
};

/** Statistics of one layer's K or V (after rotary, as cached), per head and per channel. */
struct lmd_calib_kv {
	float *min, *max;         /* owned [kv_heads * head_dim] per channel; per head = min / max over its channels */
};

struct lmd_calib_stats {
	struct lmd_config cfg;    /* the model's (checked against the model a tool loads) */
	char dataset[256];
	int samples, seqlen;
	uint64_t seed;
	int64_t tokens;
	struct lmd_calib_in (*in)[LMD_CALIB_NIN];  /* owned [layers][LMD_CALIB_NIN] */
	struct lmd_calib_kv (*kv)[2];              /* owned [layers][2]: k, v */
	int err;                  /* a tap ran out of memory */
};

int lmd_calib_stats_init(struct lmd_calib_stats *s, const struct lmd_config *cfg, struct lmd_err *err);
void lmd_calib_stats_free(struct lmd_calib_stats *s);
/** The tap that accumulates into ctx (a struct lmd_calib_stats *). */
void lmd_calib_stats_tap(void *ctx, int layer, enum lmd_tap point, const struct lmd_tensor *t);
/** Write as msgpack to f (an lmd_out's, opened before the work: file.h). */
int lmd_calib_stats_write(const struct lmd_calib_stats *s, FILE *f, struct lmd_err *err);
/** Read a stats file (LMD_EFORMAT naming the file and key when malformed). */
int lmd_calib_stats_read(struct lmd_calib_stats *s, const char *path, struct lmd_err *err);
/**
 * Check the stats were made for a model of config c: LMD_EINVAL naming the first differing
 * dimension ("layers 6 in 'stats' but 12 in the model") otherwise.
 */
int lmd_calib_stats_check(const struct lmd_calib_stats *s, const struct lmd_config *c, const char *what,
			  struct lmd_err *err);

/** The calibration options lmd-calib and lmd-awq share (LMDeploy's names and defaults, but --calib-seqlen). */
struct lmd_calib_opts {
	const char *dataset;      /* default "wikitext2" */
	const char *data_dir;     /* NULL = $LMD_DATA, else the installed data */
	int samples, seqlen, batch;
	uint64_t seed;
	int docs;                 /* cut the windows as AutoAWQ does (lmd_calib_doc_windows; samples = documents) */
	const struct lmd_progress *progress;  /* NULL, or told of each window run (lmd.h) */
};
void lmd_calib_opts_default(struct lmd_calib_opts *o);

/**
 * Resolve the dataset, cut the windows with m's tokenizer tok (lmd_calib_windows, or with o->docs
 * lmd_calib_doc_windows) and run m over them with tap; fills
 * s's dataset, samples, seqlen and seed when s is not NULL.
 */
int lmd_calib_collect(struct lmd_model *m, const struct lmd_tokenizer *tok, const struct lmd_calib_opts *o,
		      lmd_tap_fn tap, void *ctx, struct lmd_calib_stats *s, struct lmd_err *err);

/**
 * Offline KV-cache parameters (lmd-kvparams) from stats: per layer, K then V, per KV head, the scale and
 * zero of x̂ = q * scale + zero with q in 0..2^bits-1 (kvcache.h). Asymmetric: scale = (max - min) /
 * (2^bits - 1), zero = min. Symmetric: scale = absmax / (2^(bits-1) - 1), zero = -absmax.
 * params [layers][2][kv_heads][2].
 */
void lmd_kvparams_compute(const struct lmd_calib_stats *s, int bits, int sym, float *params);

#endif
