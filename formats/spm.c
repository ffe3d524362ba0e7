#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spm.h"

// --- protobuf wire reading

struct pb {
	const uint8_t *p, *end;
};

static int pb_varint(struct pb *b, uint64_t *v)
{
	uint64_t x = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (b->p >= b->end)
			return -1;
		uint8_t c = *b->p++;
		x |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -1;
}

/* Read one field's key and, for length-delimited fields, its bounds. */
struct pb_field {
	uint32_t num;
	int wire;
	uint64_t v;                  /* varint / fixed value */
	const uint8_t *data;         /* wire 2: contents */
	size_t len;
};

static int pb_next(struct pb *b, struct pb_field *f)
{
	uint64_t key;
	if (pb_varint(b, &key))
		return -1;
	f->num = (uint32_t)(key >> 3);
	f->wire = (int)(key & 7);
	if (f->num == 0)
		return -1;
	switch (f->wire) {
	case 0:
		return pb_varint(b, &f->v);
	case 1:
		if (b->end - b->p < 8)
			return -1;
		memcpy(&f->v, b->p, 8);
		b->p += 8;
		return 0;
	case 5: {
		uint32_t x;
		if (b->end - b->p < 4)
			return -1;
		memcpy(&x, b->p, 4);
		f->v = x;
		b->p += 4;
		return 0;
	}
	case 2: {
		uint64_t n;
		if (pb_varint(b, &n) || n > (uint64_t)(b->end - b->p))
			return -1;
		f->data = b->p;
		f->len = (size_t)n;
		b->p += n;
		return 0;
	}
	default:
		return -1;  /* groups (3, 4) are not used by ModelProto */
	}
}

// --- ModelProto

static int copy_str(char *dst, size_t cap, const struct pb_field *f)
{
	if (f->wire != 2 || f->len >= cap || memchr(f->data, 0, f->len))
		return -1;
	memcpy(dst, f->data, f->len);
	dst[f->len] = 0;
	return 0;
}

static int parse_piece(struct lmd_spm_piece *sp, const uint8_t *d, size_t n, struct lmd_err *err, int idx)
{
	struct pb b = {d, d + n};
	struct pb_field f;
	sp->type = LMD_SPM_NORMAL;
	while (b.p < b.end) {
		if (pb_next(&b, &f))
			return lmd_errorf(err, LMD_EFORMAT, "piece %d: bad protobuf encoding", idx);
		if (f.num == 1 && f.wire == 2) {
			if (f.len > 4096)
				return lmd_errorf(err, LMD_EFORMAT, "piece %d: bad piece string", idx);
			free(sp->piece);
			sp->piece = malloc(f.len + 1);
			if (!sp->piece)
				return lmd_errorf(err, LMD_ENOMEM, "out of memory");
			memcpy(sp->piece, f.data, f.len);
			sp->piece[f.len] = 0;
			sp->len = (int)f.len;
		} else if (f.num == 2 && f.wire == 5) {
			uint32_t x = (uint32_t)f.v;
			memcpy(&sp->score, &x, 4);
		} else if (f.num == 3 && f.wire == 0) {
			if (f.v < 1 || f.v > 6)
				return lmd_errorf(err, LMD_EFORMAT, "piece %d: unknown type %llu", idx,
						  (unsigned long long)f.v);
			sp->type = (int)f.v;
		}
	}
	if (!sp->piece)
		return lmd_errorf(err, LMD_EFORMAT, "piece %d: no piece string", idx);
	return 0;
}

static int parse_trainer(struct lmd_spm_model *m, const uint8_t *d, size_t n, struct lmd_err *err)
{
	struct pb b = {d, d + n};
	struct pb_field f;
	while (b.p < b.end) {
		if (pb_next(&b, &f))
			return lmd_errorf(err, LMD_EFORMAT, "trainer_spec: bad protobuf encoding");
		if (f.wire == 0) {
			int64_t v = (int64_t)f.v;  /* int32 fields are sign-extended to 64 bits */
			switch (f.num) {
			case 3: m->model_type = (int)v; break;
			case 24: m->treat_ws_as_suffix = v != 0; break;
			case 35: m->byte_fallback = v != 0; break;
			case 40: m->unk_id = (int)v; break;
			case 41: m->bos_id = (int)v; break;
			case 42: m->eos_id = (int)v; break;
			case 43: m->pad_id = (int)v; break;
			}
		} else if (f.num == 44) {
			if (copy_str(m->unk_surface, sizeof(m->unk_surface), &f))
				return lmd_errorf(err, LMD_EFORMAT, "trainer_spec: bad unk_surface");
		}
	}
	return 0;
}

static int parse_normalizer(struct lmd_spm_model *m, const uint8_t *d, size_t n, struct lmd_err *err)
{
	struct pb b = {d, d + n};
	struct pb_field f;
	while (b.p < b.end) {
		if (pb_next(&b, &f))
			return lmd_errorf(err, LMD_EFORMAT, "normalizer_spec: bad protobuf encoding");
		if (f.num == 1) {
			if (copy_str(m->normalizer, sizeof(m->normalizer), &f))
				return lmd_errorf(err, LMD_EFORMAT, "normalizer_spec: bad name");
		} else if (f.num == 2 && f.wire == 2) {
			m->charsmap_len = f.len > 0x7fffffff ? 0x7fffffff : (int)f.len;
		} else if (f.wire == 0 && f.num >= 3 && f.num <= 5) {
			int v = f.v != 0;
			if (f.num == 3)
				m->add_dummy_prefix = v;
			else if (f.num == 4)
				m->remove_extra_whitespaces = v;
			else
				m->escape_whitespaces = v;
		}
	}
	return 0;
}

int lmd_spm_sniff(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	return len >= 2 && p[0] == 0x0a;  /* field 1, wire type 2 */
}

int lmd_spm_parse(struct lmd_spm_model *m, const void *buf, size_t len, struct lmd_err *err)
{
	memset(m, 0, sizeof(*m));
	m->model_type = LMD_SPM_UNIGRAM;
	m->unk_id = 0, m->bos_id = 1, m->eos_id = 2, m->pad_id = -1;
	strcpy(m->unk_surface, " \xE2\x81\x87 ");
	m->add_dummy_prefix = m->remove_extra_whitespaces = m->escape_whitespaces = 1;

	struct pb b = {buf, (const uint8_t *)buf + len};
	struct pb_field f;
	int cap = 0, rc = 0;
	while (b.p < b.end) {
		if (pb_next(&b, &f)) {
			rc = lmd_errorf(err, LMD_EFORMAT, "bad protobuf encoding at byte %zu",
					(size_t)(b.p - (const uint8_t *)buf));
			goto fail;
		}
		if (f.wire != 2)
			continue;
		if (f.num == 1) {
			if (m->n == cap) {
				int nc = cap ? cap * 2 : 1024;
				struct lmd_spm_piece *np = realloc(m->pieces, (size_t)nc * sizeof(*np));
				if (!np) {
					rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
					goto fail;
				}
				m->pieces = np;
				cap = nc;
			}
			struct lmd_spm_piece *sp = &m->pieces[m->n++];
			memset(sp, 0, sizeof(*sp));
			if ((rc = parse_piece(sp, f.data, f.len, err, m->n - 1)))
				goto fail;
		} else if (f.num == 2) {
			if ((rc = parse_trainer(m, f.data, f.len, err)))
				goto fail;
		} else if (f.num == 3) {
			if ((rc = parse_normalizer(m, f.data, f.len, err)))
				goto fail;
		}
	}
	if (m->n == 0) {
		rc = lmd_errorf(err, LMD_EFORMAT, "no pieces");
		goto fail;
	}
	return 0;
fail:
	lmd_spm_free(m);
	return rc;
}

void lmd_spm_free(struct lmd_spm_model *m)
{
	for (int i = 0; i < m->n; i++)
		free(m->pieces[i].piece);
	free(m->pieces);
	memset(m, 0, sizeof(*m));
}
