/**
 * HF model directory -> lmd model directory (lmd-convert's core), tensor-parallel splitting and
 * joining, and opening "any" model directory for the tools that run models. The convert room is this
 * header: it depends on the basics and formats/ only; engine/ (opening HF directories) and quant/ use it.
 */
#ifndef LMD_CONVERT_H
#define LMD_CONVERT_H

#include <stdio.h>

#include "config.h"
#include "err.h"
#include "lmd.h"
#include "modeldir.h"

struct lmd_convert_opts {
	enum lmd_dtype dtype;       /* LMD_DTYPE_NONE = keep each tensor's dtype */
	int tp;                     /* ranks to split for (1 = none) */
	const char *model_name;     /* NULL = keep / derive */
	const char *chat_template;  /* NULL = choose automatically later */
	int force;                  /* replace an existing DST */
	const struct lmd_progress *progress;  /* NULL, or told of each tensor written (lmd.h) */
	int quiet;                  /* no warnings on stderr */
	const char *model_format;   /* NULL or "hf": any HF directory (AWQ ones are recognized); "awq": must be AWQ */
};

/**
 * Convert src (an HF directory, or an lmd model directory to re-split or re-type) into dst.
 * Writes into a temporary directory beside dst and renames at the end: on failure nothing is left.
 */
int lmd_convert(const char *src, const char *dst, const struct lmd_convert_opts *o, struct lmd_err *err);

/**
 * Open path for running: an lmd model directory is opened as is; an HF directory is converted once
 * into a cache ($LMD_CACHE, else $XDG_CACHE_HOME/lmd, else ~/.cache/lmd; keyed by the source's path,
 * sizes and modification times) and the cached directory is opened.
 */
int lmd_model_open_any(struct lmd_modeldir *m, const char *path, struct lmd_err *err);

/** The cache directory lmd_model_open_any uses, into out (created when missing). */
int lmd_cache_dir(char *out, size_t n, struct lmd_err *err);




/**
 * Describe the model in dir (lmd or HF): architecture, parameter count, bytes per dtype, tp and the
 * config, as "key: value" lines or (json) one JSON object, on out.
 */
int lmd_model_info(const char *dir, int json, FILE *out, struct lmd_err *err);
#endif
