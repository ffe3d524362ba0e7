/**
 * Tensors and element types. A tensor never owns its data: the data points into a file
 * mapping, an arena or a buffer whose owner is named where the tensor is made.
 */
#ifndef LMD_TENSOR_H
#define LMD_TENSOR_H

#include <stddef.h>
#include <stdint.h>

enum lmd_dtype {
	LMD_F32, LMD_F16, LMD_BF16, LMD_F64, LMD_I64, LMD_I32, LMD_I16, LMD_I8, LMD_U8, LMD_BOOL,
	LMD_DTYPE_COUNT,
	LMD_DTYPE_NONE = -1,
};

#define LMD_MAX_DIMS 4

struct lmd_tensor {
	enum lmd_dtype dtype;
	int ndim;
	int64_t shape[LMD_MAX_DIMS];  /* row-major, shape[0] outermost: a matrix is (rows, cols) */
	void *data;                   /* borrowed: the owner is whoever made the tensor */
};

/** The safetensors spelling ("F32", "BF16", ...) and our short spelling ("f32", "bf16"). */
const char *lmd_dtype_name(enum lmd_dtype t);
const char *lmd_dtype_short(enum lmd_dtype t);
/** Either spelling, case-insensitive; LMD_DTYPE_NONE when unknown. */
enum lmd_dtype lmd_dtype_parse(const char *s);
/** Bytes per element. */
size_t lmd_dtype_size(enum lmd_dtype t);
/** Is it a floating-point type we compute with (f32, f16, bf16)? */
int lmd_dtype_is_float(enum lmd_dtype t);

int64_t lmd_tensor_numel(const struct lmd_tensor *t);
size_t lmd_tensor_nbytes(const struct lmd_tensor *t);
/** How many elements of a float tensor (f32, f16, bf16, f64) are NaN or infinite (0 for other dtypes). */
size_t lmd_tensor_nonfinite(const struct lmd_tensor *t);

/** Scalar conversions: f16 and bf16 from f32 round to nearest even; NaN stays NaN. */
float lmd_f16_to_f32(uint16_t h);
uint16_t lmd_f32_to_f16(float f);
float lmd_bf16_to_f32(uint16_t h);
uint16_t lmd_f32_to_bf16(float f);

/**
 * Convert n elements between the float types (f32, f16, bf16). Values beyond the target's range
 * saturate to its largest finite value; *overflow (may be NULL) counts them.
 */
void lmd_dtype_convert(void *dst, enum lmd_dtype dt, const void *src, enum lmd_dtype st, size_t n, size_t *overflow);

#endif
