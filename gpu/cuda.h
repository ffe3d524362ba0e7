/**
 * Plain-C declarations of what gpu/ exports. Built from the .cu files in gpu/ when nvcc is present,
 * otherwise from gpu/stub.c, where every entry reports that no GPU exists (LMD_ENODEV).
 */
#ifndef LMD_GPU_CUDA_H
#define LMD_GPU_CUDA_H

#include <stddef.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Number of usable CUDA devices (0 when the driver or the GPU is missing; never an error). */
int lmd_cuda_device_count(void);

/** Name and memory of device dev; LMD_ENODEV when there is none. */
int lmd_cuda_device_info(int dev, char *name, size_t name_len, size_t *total_bytes, struct lmd_err *err);

#ifdef __cplusplus
}
#endif

#endif
