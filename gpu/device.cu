/*
 * Device discovery: how many GPUs there are and what they are. No kernels here.
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include "cuda.h"

extern "C" int lmd_cuda_device_count(void)
{
	int n = 0;
	if (cudaGetDeviceCount(&n) != cudaSuccess) {
		cudaGetLastError();
		return 0;
	}
	return n;
}

extern "C" int lmd_cuda_device_info(int dev, char *name, size_t name_len, size_t *total_bytes, struct lmd_err *err)
{
	cudaDeviceProp p;
	if (dev < 0 || dev >= lmd_cuda_device_count())
		return lmd_errorf(err, LMD_ENODEV, "no CUDA device %d", dev);
	cudaError_t e = cudaGetDeviceProperties(&p, dev);
	if (e != cudaSuccess)
		return lmd_errorf(err, LMD_EGPU, "cudaGetDeviceProperties: %s", cudaGetErrorString(e));
	snprintf(name, name_len, "%s", p.name);
	*total_bytes = p.totalGlobalMem;
	return LMD_OK;
}
