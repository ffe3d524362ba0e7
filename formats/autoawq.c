/* The AutoAWQ "gemm" int4 packing (autoawq.h). */
#include <stddef.h>
#include <stdint.h>

#include "autoawq.h"

const int lmd_awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
const int lmd_awq_unorder[8] = {0, 4, 1, 5, 2, 6, 3, 7};

void lmd_awq_pack(const uint8_t *v, int rows, int cols, int32_t *dst)
{
	for (int r = 0; r < rows; r++)
		for (int j = 0; j < cols / 8; j++) {
			uint32_t w = 0;
			for (int k = 0; k < 8; k++)
				w |= (uint32_t)(v[(size_t)r * cols + j * 8 + lmd_awq_order[k]] & 15) << (4 * k);
			dst[(size_t)r * (cols / 8) + j] = (int32_t)w;
		}
}

void lmd_awq_unpack(const int32_t *src, int rows, int cols, uint8_t *v)
{
	for (int r = 0; r < rows; r++)
		for (int j = 0; j < cols / 8; j++) {
			uint32_t w = (uint32_t)src[(size_t)r * (cols / 8) + j];
			for (int k = 0; k < 8; k++)
				v[(size_t)r * cols + j * 8 + lmd_awq_order[k]] = (uint8_t)((w >> (4 * k)) & 15);
		}
}
