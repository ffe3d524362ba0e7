/**
 * The offline KV-cache parameters file of lmd-kvparams (CSV "layer,kv,head,scale,zero,bits"): per layer, K then
 * V, per KV head, the scale and zero of x = q * scale + zero (engine/kvcache.h). params is
 * [layers][2][kv_heads][2] floats.
 */
#ifndef LMD_KVPARAMS_H
#define LMD_KVPARAMS_H

#include <stdio.h>

#include "config.h"
#include "err.h"

/** Write params, made for bits, as CSV "layer,kv,head,scale,zero,bits" (kv is k or v) to f. */
int lmd_kvparams_write(const struct lmd_config *c, const float *params, int bits, FILE *f);
/**
 * Read such a CSV for a model of config c and a cache of bits (8 or 4) into *params (malloc'd
 * [layers][2][kv_heads][2]); every (layer, kv, head) must appear once, with its bits (when the
 * column is there: files without it are older) equal to bits (LMD_EINVAL otherwise), a scale above 0
 * and small enough that every level stays within fp16's range, and a zero within it. LMD_EFORMAT
 * naming the file, line and field otherwise.
 */
int lmd_kvparams_read(const char *path, const struct lmd_config *c, int bits, float **params, struct lmd_err *err);

#endif
