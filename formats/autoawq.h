/**
 * The AutoAWQ "gemm" int4 checkpoint packing (../shared/docs/lmdeploy.md §1.4), as lmd-awq writes it
 * and lmd-convert --model-format awq reads it:
 *   qweight int32 [in, out/8]   nibble slot k (bits 4k..4k+3) of word [i][j] holds output column
 *                               j*8 + order[k], order = 0,2,4,6,1,3,5,7
 *   qzeros  int32 [in/g, out/8] the same packing of the zero points
 *   scales  fp16  [in/g, out]
 * dequantized w[o][i] = (q - zero) * scale of group i/g.
 */
#ifndef LMD_AUTOAWQ_H
#define LMD_AUTOAWQ_H

#include <stdint.h>

/** The AutoAWQ nibble order and its inverse. */
extern const int lmd_awq_order[8], lmd_awq_unorder[8];

/**
 * Pack v [rows][cols] (values 0..15) into dst [rows][cols/8] with the AWQ order; cols % 8 == 0.
 * lmd_awq_unpack is the inverse.
 */
void lmd_awq_pack(const uint8_t *v, int rows, int cols, int32_t *dst);
void lmd_awq_unpack(const int32_t *src, int rows, int cols, uint8_t *v);

#endif
