/**
 * Opening a backend by name (backend.h).
 */
#include <string.h>

#include "backend.h"
#include "cuda.h"

int lmd_backend_open(struct lmd_backend *b, const char *name, const struct lmd_backend_opts *opts,
		     struct lmd_err *err)
{
	memset(b, 0, sizeof(*b));
	if (!strcmp(name, "auto") && lmd_cuda_device_count() > 0 && lmd_backend_cuda_open(b, opts, NULL) == LMD_OK)
		return LMD_OK;
	if (!strcmp(name, "cpu") || !strcmp(name, "auto"))
		return lmd_backend_cpu_open(b, opts, err);
	if (!strcmp(name, "ref"))
		return lmd_backend_ref_open(b, opts, err);
	if (!strcmp(name, "cuda")) {
		if (lmd_cuda_device_count() == 0)
			return lmd_errorf(err, LMD_ENODEV, "device 'cuda': no usable GPU found");
		return lmd_backend_cuda_open(b, opts, err);
	}
	return lmd_errorf(err, LMD_EINVAL, "unknown device '%s' (expected auto, cpu or cuda)", name);
}

void lmd_backend_close(struct lmd_backend *b)
{
	if (b->ops && b->ctx)
		b->ops->close(b->ctx);
	b->ops = NULL;
	b->ctx = NULL;
}

int lmd_backend_alloc2(struct lmd_backend *b, struct lmd_tensor *t, enum lmd_dtype dtype, int64_t rows,
		       int64_t cols, struct lmd_err *err)
{
	memset(t, 0, sizeof(*t));
	t->dtype = dtype;
	t->ndim = 2;
	t->shape[0] = rows;
	t->shape[1] = cols;
	return b->ops->alloc(b->ctx, t, err);
}

int lmd_linear_apply(const struct lmd_backend_ops *ops, void *ctx, struct lmd_tensor *y, const struct lmd_tensor *x,
		     const struct lmd_linear *lin, struct lmd_err *err)
{
	if (lin->scales)
		return ops->matmul_q4(ctx, y, x, lin->w, lin->scales, lin->zeros, lin->group, lin->bias, err);
	return ops->matmul(ctx, y, x, lin->w, lin->bias, err);
}

int lmd_gate_up_two(const struct lmd_backend_ops *ops, void *ctx, struct lmd_tensor *y, struct lmd_tensor *gu,
		    const struct lmd_tensor *x, const struct lmd_tensor *w, const struct lmd_tensor *scales,
		    const struct lmd_tensor *zeros, int group, struct lmd_err *err)
{
	const struct lmd_linear lin = {.w = w, .scales = scales, .zeros = zeros, .group = group};
	int rc = lmd_linear_apply(ops, ctx, gu, x, &lin, err);
	return rc ? rc : ops->silu_mul(ctx, y, gu, err);
}
