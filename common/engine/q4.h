/**
 * The engine's int4 weight layout (lmd model directories, lmd-convert --model-format awq), for a
 * linear weight W [out, in] quantized in groups of g input channels, asymmetric:
 *   NAME         LMD_U8  [out, in/2]  byte k of row o: low nibble q[o][2k], high nibble q[o][2k+1]
 *   NAME.scales  LMD_F16 [out, in/g]
 *   NAME.zeros   LMD_U8  [out, in/g]  0..15
 * with the index entry of NAME carrying quant {method "awq" or "rtn", bits 4, group_size g, scales
 * "NAME.scales", zeros "NAME.zeros"}. W[o][i] = (q[o][i] - zeros[o][i/g]) * scales[o][i/g].
 */
#ifndef LMD_Q4_H
#define LMD_Q4_H

#include <stdint.h>

/** Borrowed views of one int4 weight (host memory). */
struct lmd_q4 {
	int out, in, group;
	const uint8_t *q;           /* [out][in/2] */
	const uint16_t *scales;     /* [out][in/group] fp16 */
	const uint8_t *zeros;       /* [out][in/group] */
};

/** Row o of W, dequantized, into dst[in]. */
static inline void lmd_q4_row(const struct lmd_q4 *w, int o, float *dst);

#include "tensor.h"
static inline void lmd_q4_row(const struct lmd_q4 *w, int o, float *dst)
{
	int ng = w->in / w->group;
	const uint8_t *q = w->q + (size_t)o * (w->in / 2);
	for (int gi = 0; gi < ng; gi++) {
		float s = lmd_f16_to_f32(w->scales[(size_t)o * ng + gi]), z = (float)w->zeros[(size_t)o * ng + gi];
		for (int i = gi * w->group; i < (gi + 1) * w->group; i += 2) {
			uint8_t b = q[i / 2];
			dst[i] = ((float)(b & 15) - z) * s;
			dst[i + 1] = ((float)(b >> 4) - z) * s;
		}
	}
}

#endif
