/* Unit tests of dtype conversion, the safetensors parser and the lmd index parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "modeldir.h"
#include "safetensors.h"
#include "tensor.h"
#include "unit.h"

static void test_halves(void)
{
	/* exact values from the IEEE 754 binary16 / bfloat16 definitions */
	CHECK_EQ_INT(lmd_f32_to_f16(1.0f), 0x3c00);
	CHECK_EQ_INT(lmd_f32_to_f16(-2.0f), 0xc000);
	CHECK_EQ_INT(lmd_f32_to_f16(65504.0f), 0x7bff);
	CHECK_EQ_INT(lmd_f32_to_f16(65520.0f), 0x7c00);              /* rounds to infinity */
	CHECK_EQ_INT(lmd_f32_to_f16(5.9604645e-08f), 0x0001);        /* smallest subnormal */
	CHECK_EQ_INT(lmd_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);    /* tie to even */
	CHECK_EQ_INT(lmd_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);    /* tie to even, upwards */
	CHECK_NEAR(lmd_f16_to_f32(0x3555), 0.333251953125, 0);
	CHECK_NEAR(lmd_f16_to_f32(0x0001), 5.9604644775390625e-08, 0);
	CHECK_EQ_INT(lmd_f32_to_bf16(1.0f), 0x3f80);
	CHECK_EQ_INT(lmd_f32_to_bf16(3.14159265f), 0x4049);
	CHECK_NEAR(lmd_bf16_to_f32(0x4049), 3.140625, 0);
	/* every f16 bit pattern that is a number survives f16 -> f32 -> f16 */
	for (uint32_t h = 0; h < 0x10000; h++)
		if ((h & 0x7c00) != 0x7c00 && lmd_f32_to_f16(lmd_f16_to_f32((uint16_t)h)) != h)
			CHECK_EQ_INT(lmd_f32_to_f16(lmd_f16_to_f32((uint16_t)h)), h);
	float big[2] = {1e6f, -70000.0f};
	uint16_t out[2];
	size_t over;
	lmd_dtype_convert(out, LMD_F16, big, LMD_F32, 2, &over);
	CHECK_EQ_INT(over, 2);
	CHECK_EQ_INT(out[0], 0x7bff);
	CHECK_EQ_INT(out[1], 0xfbff);
}

static void test_safetensors(void)
{
	float a[6] = {1, 2, 3, 4, 5, 6};
	uint16_t b[3] = {1, 2, 3};
	struct lmd_tensor ts[2] = {{.dtype = LMD_F32, .ndim = 2, .shape = {2, 3}, .data = a},
				   {.dtype = LMD_BF16, .ndim = 1, .shape = {3}, .data = b}};
	const char *names[2] = {"x", "y"};
	char path[] = "/tmp/lmd-test-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	struct lmd_err err = {0};
	CHECK_EQ_INT(lmd_safetensors_write(path, names, ts, 2, NULL, &err), 0);
	struct lmd_safetensors st;
	CHECK_EQ_INT(lmd_safetensors_open(&st, path, &err), 0);
	CHECK_EQ_INT(st.n, 2);
	const struct lmd_st_entry *x = lmd_safetensors_find(&st, "x"), *y = lmd_safetensors_find(&st, "y");
	CHECK(x && y && !lmd_safetensors_find(&st, "z"));
	if (x && y) {
		CHECK_EQ_INT(x->t.shape[1], 3);
		CHECK(!memcmp(x->t.data, a, sizeof(a)));
		CHECK_EQ_INT(y->t.dtype, LMD_BF16);
		CHECK(!memcmp(y->t.data, b, sizeof(b)));
	}
	lmd_safetensors_close(&st);
	unlink(path);
	close(fd);

	/* hand-made headers */
	static const struct { const char *hdr; int ok; const char *msg; } cases[] = {
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 1, NULL},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, "shape needs"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 0, "past the end"},
		{"{\"a\":{\"dtype\":\"Q9\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, "unknown dtype"},
		{"{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
		 "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 0, "overlap"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 0, "bad shape"},
		{"[1,2]", 0, "not a JSON object"},
		{"{\"a\":", 0, "invalid JSON"},
		{"{\"__metadata__\":{\"format\":\"pt\"}}", 1, NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t hl = strlen(cases[i].hdr), len = 8 + hl + 8;
		unsigned char *buf = calloc(1, len);
		for (int k = 0; k < 8; k++)
			buf[k] = (unsigned char)(hl >> (8 * k));
		memcpy(buf + 8, cases[i].hdr, hl);
		struct lmd_safetensors s = {0};
		int rc = lmd_safetensors_parse(&s, buf, len, "case", &err);
		CHECK_EQ_INT(rc == 0, cases[i].ok);
		if (!cases[i].ok)
			CHECK(strstr(err.msg, cases[i].msg) != NULL);
		lmd_safetensors_close(&s);
		free(buf);
	}
}

static void test_index(void)
{
	struct lmd_modeldir m;
	struct lmd_err err = {0};
	static const unsigned char junk[] = {0x81, 0xa5, 'm', 'a', 'g', 'i', 'c', 0xa3, 'x', 'y', 'z'};
	CHECK(lmd_modeldir_parse_index(&m, junk, sizeof(junk), &err) == LMD_EFORMAT);
	CHECK(strstr(err.msg, "magic") != NULL);
	CHECK(lmd_modeldir_parse_index(&m, "", 0, &err) == LMD_EFORMAT);
}

int main(void)
{
	test_halves();
	test_safetensors();
	test_index();
	return UNIT_DONE();
}
