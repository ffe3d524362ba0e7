/**
 * The offline KV-cache parameters file of lmd-kvparams (CSV "layer,kv,head,scale,zero"): per layer, K then
 * V, per KV head, the scale and zero of x = q * scale + zero (engine/kvcache.h). params is
 * [layers][2][kv_heads][2] floats.
 */
#ifndef LMD_KVPARAMS_H
#define LMD_KVPARAMS_H

#include <stdio.h>

#include "config.h"
#include "err.h"

/** Write params as CSV "layer,kv,head,scale,zero" (kv is k or v) to f. */
int lmd_kvparams_write(const struct lmd_config *c, const float *params, FILE *f);
/**
 * Read such a CSV for a model of config c into *params (malloc'd [layers][2][kv_heads][2]); every
 * (layer, kv, head) must appear once. LMD_EFORMAT naming the file and line otherwise.
 */
int lmd_kvparams_read(const char *path, const struct lmd_config *c, float **params, struct lmd_err *err);

#endif
