#include <string.h>

#include "msgpack-json.h"

json_t *lmd_msgpack_to_json(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
	case MSGPACK_OBJECT_POSITIVE_INTEGER: return json_integer((json_int_t)o->via.u64);
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return json_real(o->via.f64);
	case MSGPACK_OBJECT_STR: return json_stringn_nocheck(o->via.str.ptr, o->via.str.size);
	case MSGPACK_OBJECT_ARRAY: {
		json_t *a = json_array();
		for (uint32_t i = 0; a && i < o->via.array.size; i++)
			json_array_append_new(a, lmd_msgpack_to_json(&o->via.array.ptr[i]));
		return a;
	}
	case MSGPACK_OBJECT_MAP: {
		json_t *m = json_object();
		for (uint32_t i = 0; m && i < o->via.map.size; i++) {
			const msgpack_object *k = &o->via.map.ptr[i].key;
			char key[256];
			if (k->type != MSGPACK_OBJECT_STR)
				continue;
			snprintf(key, sizeof(key), "%.*s", (int)k->via.str.size, k->via.str.ptr);
			json_object_set_new(m, key, lmd_msgpack_to_json(&o->via.map.ptr[i].val));
		}
		return m;
	}
	default: return json_null();
	}
}

static uint64_t be(const unsigned char *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

int lmd_msgpack_check(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t pos = 0;
	uint64_t pending = 1;
	while (pending) {
		if (pos >= len)
			return -1;
		unsigned c = p[pos++];
		uint64_t skip = 0, items = 0;
		int lenb = 0, extra = 0;  /* bytes of a length field; fixed bytes after it */
		if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
			;
		else if (c <= 0x8f)
			items = 2 * (uint64_t)(c & 0x0f);
		else if (c <= 0x9f)
			items = c & 0x0f;
		else if (c <= 0xbf)
			skip = c & 0x1f;
		else if (c >= 0xc4 && c <= 0xc6)
			lenb = 1 << (c - 0xc4);
		else if (c >= 0xc7 && c <= 0xc9)
			lenb = 1 << (c - 0xc7), extra = 1;
		else if (c == 0xca || c == 0xcb)
			skip = c == 0xca ? 4 : 8;
		else if (c >= 0xcc && c <= 0xd3)
			skip = 1u << ((c - 0xcc) & 3);
		else if (c >= 0xd4 && c <= 0xd8)
			skip = 1 + (1u << (c - 0xd4));
		else if (c >= 0xd9 && c <= 0xdb)
			lenb = 1 << (c - 0xd9);
		else if (c == 0xdc || c == 0xdd) {
			if (len - pos < (c == 0xdc ? 2u : 4u))
				return -1;
			items = be(p + pos, c == 0xdc ? 2 : 4);
			pos += c == 0xdc ? 2 : 4;
		} else if (c == 0xde || c == 0xdf) {
			if (len - pos < (c == 0xde ? 2u : 4u))
				return -1;
			items = 2 * be(p + pos, c == 0xde ? 2 : 4);
			pos += c == 0xde ? 2 : 4;
		} else
			return -1;  /* 0xc1 */
		if (lenb) {
			if (len - pos < (size_t)lenb)
				return -1;
			skip = be(p + pos, lenb) + extra;
			pos += lenb;
		}
		if (skip > len - pos)
			return -1;
		pos += skip;
		pending += items - 1;
		if (pending > len - pos)
			return -1;
	}
	return 0;
}
