/**
 * The quantization room: what lmd-calib, lmd-kvparams and lmd-awq compute.
 *
 *   calib.h  calibration windows, activation and KV statistics (msgpack), offline KV parameters
 *   awq.h    int4 weight quantization: round-to-nearest, AWQ (scale and clipping searches), GPTQ
 *
 * File formats it writes live in formats/ (autoawq.h, kvparams.h, modeldir.h). Depends on engine/
 * (running the model over calibration text), tok/ and convert/; nothing below it depends on it.
 */
#ifndef LMD_QUANT_H
#define LMD_QUANT_H

#include "awq.h"
#include "calib.h"

#endif
