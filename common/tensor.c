#include <math.h>
#include <string.h>
#include <strings.h>

#include "tensor.h"

static const struct {
	const char *name, *short_name;
	size_t size;
} dtypes[LMD_DTYPE_COUNT] = {
	[LMD_F32] = {"F32", "f32", 4},   [LMD_F16] = {"F16", "f16", 2}, [LMD_BF16] = {"BF16", "bf16", 2},
	[LMD_F64] = {"F64", "f64", 8},   [LMD_I64] = {"I64", "i64", 8}, [LMD_I32] = {"I32", "i32", 4},
	[LMD_I16] = {"I16", "i16", 2},   [LMD_I8] = {"I8", "i8", 1},    [LMD_U8] = {"U8", "u8", 1},
	[LMD_BOOL] = {"BOOL", "bool", 1},
};

const char *lmd_dtype_name(enum lmd_dtype t)
{
	return t >= 0 && t < LMD_DTYPE_COUNT ? dtypes[t].name : "?";
}

const char *lmd_dtype_short(enum lmd_dtype t)
{
	return t >= 0 && t < LMD_DTYPE_COUNT ? dtypes[t].short_name : "?";
}

enum lmd_dtype lmd_dtype_parse(const char *s)
{
	for (int i = 0; i < LMD_DTYPE_COUNT; i++)
		if (!strcasecmp(s, dtypes[i].name))
			return (enum lmd_dtype)i;
	if (!strcasecmp(s, "fp32") || !strcasecmp(s, "float32") || !strcasecmp(s, "float"))
		return LMD_F32;
	if (!strcasecmp(s, "fp16") || !strcasecmp(s, "float16") || !strcasecmp(s, "half"))
		return LMD_F16;
	if (!strcasecmp(s, "bfloat16"))
		return LMD_BF16;
	return LMD_DTYPE_NONE;
}

size_t lmd_dtype_size(enum lmd_dtype t)
{
	return t >= 0 && t < LMD_DTYPE_COUNT ? dtypes[t].size : 0;
}

int lmd_dtype_is_float(enum lmd_dtype t)
{
	return t == LMD_F32 || t == LMD_F16 || t == LMD_BF16;
}

int64_t lmd_tensor_numel(const struct lmd_tensor *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->ndim; i++)
		n *= t->shape[i];
	return n;
}

size_t lmd_tensor_nonfinite(const struct lmd_tensor *t)
{
	size_t n = (size_t)lmd_tensor_numel(t), bad = 0;
	const uint16_t *h = t->data;
	switch (t->dtype) {
	case LMD_F32:
		for (size_t i = 0; i < n; i++)
			bad += !isfinite(((const float *)t->data)[i]);
		break;
	case LMD_F64:
		for (size_t i = 0; i < n; i++)
			bad += !isfinite(((const double *)t->data)[i]);
		break;
	case LMD_F16:  /* exponent all ones */
		for (size_t i = 0; i < n; i++)
			bad += (h[i] & 0x7c00) == 0x7c00;
		break;
	case LMD_BF16:
		for (size_t i = 0; i < n; i++)
			bad += (h[i] & 0x7f80) == 0x7f80;
		break;
	default:
		break;
	}
	return bad;
}

size_t lmd_tensor_nbytes(const struct lmd_tensor *t)
{
	return (size_t)lmd_tensor_numel(t) * lmd_dtype_size(t->dtype);
}

static uint32_t bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float from_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

float lmd_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
	if (exp == 0x1f)
		return from_bits(sign | 0x7f800000 | (man << 13));
	if (exp == 0) {
		float v = ldexpf((float)man, -24);
		return sign ? -v : v;
	}
	return from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t lmd_f32_to_f16(float f)
{
	uint32_t u = bits(f), sign = (u >> 16) & 0x8000;
	float a = fabsf(f);
	if (isnan(f))
		return (uint16_t)(sign | 0x7e00);
	if (a >= 65520.0f)  /* rounds to infinity */
		return (uint16_t)(sign | 0x7c00);
	if (a < 6.103515625e-05f) {  /* subnormal: a multiple of 2^-24, rounded to nearest even */
		float q = nearbyintf(a * 16777216.0f);
		return (uint16_t)(sign | (uint32_t)q);
	}
	uint32_t e = ((u >> 23) & 0xff) - 112, man = u & 0x7fffff;
	uint32_t h = (e << 10) | (man >> 13), rest = man & 0x1fff;
	if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
		h++;
	return (uint16_t)(sign | h);
}

float lmd_bf16_to_f32(uint16_t h)
{
	return from_bits((uint32_t)h << 16);
}

uint16_t lmd_f32_to_bf16(float f)
{
	uint32_t u = bits(f);
	if (isnan(f))
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fff + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

static float load(const void *src, enum lmd_dtype t, size_t i)
{
	switch (t) {
	case LMD_F32: return ((const float *)src)[i];
	case LMD_F16: return lmd_f16_to_f32(((const uint16_t *)src)[i]);
	case LMD_BF16: return lmd_bf16_to_f32(((const uint16_t *)src)[i]);
	default: return 0;
	}
}

void lmd_dtype_convert(void *dst, enum lmd_dtype dt, const void *src, enum lmd_dtype st, size_t n, size_t *overflow)
{
	size_t over = 0;
	if (dt == st) {
		memcpy(dst, src, n * lmd_dtype_size(dt));
	} else {
		float maxv = dt == LMD_F16 ? 65504.0f : dt == LMD_BF16 ? 3.38953139e38f : INFINITY;
		for (size_t i = 0; i < n; i++) {
			float v = load(src, st, i);
			if (isfinite(v) && fabsf(v) > maxv) {
				v = v > 0 ? maxv : -maxv;
				over++;
			}
			if (dt == LMD_F32)
				((float *)dst)[i] = v;
			else if (dt == LMD_F16)
				((uint16_t *)dst)[i] = lmd_f32_to_f16(v);
			else
				((uint16_t *)dst)[i] = lmd_f32_to_bf16(v);
		}
	}
	if (overflow)
		*overflow = over;
}
