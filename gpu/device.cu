/*
 * Device discovery (how many GPUs, their names and memory) and the device-to-device copy bandwidth that
 * lmd-bench puts beside its rooflines: the best of 10 cudaMemcpy of a buffer after 2 warm-ups, timed with
 * events, counting bytes read plus bytes written. No kernels here.
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include "cuda.h"

static const char *none_why = "";

extern "C" int lmd_cuda_device_count(void)
{
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess) {
		none_why = cudaGetErrorString(e);
		cudaGetLastError();
		return 0;
	}
	none_why = n ? "" : "the CUDA runtime lists no device";
	return n;
}

extern "C" const char *lmd_cuda_none_why(void)
{
	return none_why;
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

extern "C" int lmd_cuda_mem_info(int dev, size_t *free_bytes, size_t *total_bytes, struct lmd_err *err)
{
	if (dev < 0 || dev >= lmd_cuda_device_count())
		return lmd_errorf(err, LMD_ENODEV, "no CUDA device %d", dev);
	cudaError_t e = cudaSetDevice(dev);
	if (e == cudaSuccess)
		e = cudaMemGetInfo(free_bytes, total_bytes);
	if (e != cudaSuccess)
		return lmd_errorf(err, LMD_EGPU, "cudaMemGetInfo: %s", cudaGetErrorString(e));
	return LMD_OK;
}

/* The best of 10 timed copies after 2 warm-ups, each counted as 2 * bytes moved. */
extern "C" double lmd_cuda_copy_bandwidth(int dev, size_t bytes)
{
	void *a = NULL, *b = NULL;
	cudaEvent_t e0 = NULL, e1 = NULL;
	double best = 0;
	if (cudaSetDevice(dev) != cudaSuccess || cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess ||
	    cudaMemset(a, 1, bytes) != cudaSuccess || cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess)
		goto out;
	for (int i = 0; i < 12; i++) {
		float ms = 0;
		if (cudaEventRecord(e0) != cudaSuccess || cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice) != cudaSuccess ||
		    cudaEventRecord(e1) != cudaSuccess || cudaEventSynchronize(e1) != cudaSuccess ||
		    cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess)
			goto out;
		double bw = 2.0 * (double)bytes / (ms * 1e-3);
		if (i >= 2 && bw > best)
			best = bw;
	}
out:
	cudaFree(a);
	cudaFree(b);
	if (e0)
		cudaEventDestroy(e0);
	if (e1)
		cudaEventDestroy(e1);
	cudaGetLastError();
	return best;
}
