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

struct lmd_backend;
struct lmd_backend_opts;

/** Number of usable CUDA devices (0 when the driver or the GPU is missing; never an error). */
int lmd_cuda_device_count(void);
/* Why the last lmd_cuda_device_count() found none (a static string; "" when it found some). */
const char *lmd_cuda_none_why(void);

/** Name and memory of device dev; LMD_ENODEV when there is none. */
int lmd_cuda_device_info(int dev, char *name, size_t name_len, size_t *total_bytes, struct lmd_err *err);

/**
 * The "cuda" backend (backend.h) on device opts->device (0 when opts is NULL): tensors in device
 * memory, cuBLAS for GEMMs, own kernels for the rest. LMD_ENODEV without a GPU, LMD_EGPU when a CUDA
 * call fails. Used by lmd_backend_open.
 */
int lmd_backend_cuda_open(struct lmd_backend *b, const struct lmd_backend_opts *opts, struct lmd_err *err);

/** cudaMemGetInfo of device dev (before any backend is open, for sizing); LMD_ENODEV/LMD_EGPU on failure. */
int lmd_cuda_mem_info(int dev, size_t *free_bytes, size_t *total_bytes, struct lmd_err *err);

/**
 * Device-to-device copy bandwidth of device dev in bytes/s, counting bytes read plus bytes written
 * (the best of several cudaMemcpy of bytes each); 0 when it cannot be measured.
 */
double lmd_cuda_copy_bandwidth(int dev, size_t bytes);

#ifdef __cplusplus
}
#endif

#endif
