/* Built instead of the .cu files in gpu/ when there is no nvcc (or NO_CUDA=1): there is never a GPU. */
#include "cuda.h"

int lmd_cuda_device_count(void)
{
	return 0;
}

const char *lmd_cuda_none_why(void)
{
	return "lmd was built without CUDA";
}

int lmd_cuda_device_info(int dev, char *name, size_t name_len, size_t *total_bytes, struct lmd_err *err)
{
	(void)name, (void)name_len, (void)total_bytes;
	return lmd_errorf(err, LMD_ENODEV, "no CUDA device %d: lmd was built without CUDA", dev);
}

int lmd_backend_cuda_open(struct lmd_backend *b, const struct lmd_backend_opts *opts, struct lmd_err *err)
{
	(void)b, (void)opts;
	return lmd_errorf(err, LMD_ENODEV, "device 'cuda': lmd was built without CUDA");
}

int lmd_cuda_mem_info(int dev, size_t *free_bytes, size_t *total_bytes, struct lmd_err *err)
{
	(void)free_bytes, (void)total_bytes;
	return lmd_errorf(err, LMD_ENODEV, "no CUDA device %d: lmd was built without CUDA", dev);
}

double lmd_cuda_copy_bandwidth(int dev, size_t bytes)
{
	(void)dev, (void)bytes;
	return 0;
}
