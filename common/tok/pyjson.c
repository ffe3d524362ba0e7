#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pyjson.h"

static void add_string(struct lmd_sb *b, const char *s, size_t n)
{
	lmd_sb_add(b, "\"", 1);
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		const char *esc = NULL;
		char u[8];
		switch (c) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		default:
			if (c < 0x20) {
				snprintf(u, sizeof(u), "\\u%04x", c);
				esc = u;
			}
		}
		if (!esc)
			continue;
		lmd_sb_add(b, s + run, i - run);
		lmd_sb_str(b, esc);
		run = i + 1;
	}
	lmd_sb_add(b, s + run, n - run);
	lmd_sb_add(b, "\"", 1);
}

/* Python's repr(float): the shortest digits that read back to x, fixed notation when the
 * decimal point falls within 16 digits (then at least ".0"), else d.ddde+XX. */
static void add_real(struct lmd_sb *b, double x)
{
	if (!isfinite(x)) {
		lmd_sb_str(b, isnan(x) ? "NaN" : x > 0 ? "Infinity" : "-Infinity");
		return;
	}
	char e[40];
	for (int p = 0; p < 17; p++) {
		snprintf(e, sizeof(e), "%.*e", p, fabs(x));
		if (strtod(e, NULL) == fabs(x))
			break;
	}
	char digits[24];
	int nd = 0;
	const char *q = e;
	for (; *q && *q != 'e'; q++)
		if (*q >= '0' && *q <= '9')
			digits[nd++] = *q;
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	digits[nd] = 0;
	int decpt = atoi(q + 1) + 1;
	if (signbit(x))
		lmd_sb_add(b, "-", 1);
	if (decpt > -4 && decpt <= 16) {
		if (decpt <= 0) {
			lmd_sb_str(b, "0.");
			for (int i = 0; i < -decpt; i++)
				lmd_sb_add(b, "0", 1);
			lmd_sb_add(b, digits, (size_t)nd);
		} else if (decpt >= nd) {
			lmd_sb_add(b, digits, (size_t)nd);
			for (int i = nd; i < decpt; i++)
				lmd_sb_add(b, "0", 1);
			lmd_sb_str(b, ".0");
		} else {
			lmd_sb_add(b, digits, (size_t)decpt);
			lmd_sb_add(b, ".", 1);
			lmd_sb_add(b, digits + decpt, (size_t)(nd - decpt));
		}
		return;
	}
	lmd_sb_add(b, digits, 1);
	if (nd > 1) {
		lmd_sb_add(b, ".", 1);
		lmd_sb_add(b, digits + 1, (size_t)(nd - 1));
	}
	lmd_sb_printf(b, "e%c%02d", decpt - 1 < 0 ? '-' : '+', abs(decpt - 1));
}

static void newline(struct lmd_sb *b, int indent, int depth)
{
	lmd_sb_add(b, "\n", 1);
	for (int i = 0; i < indent * depth; i++)
		lmd_sb_add(b, " ", 1);
}

static void add_value(struct lmd_sb *b, const json_t *v, int indent, int depth)
{
	const char *sep = indent < 0 ? ", " : ",";
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		if (!json_object_size(v)) {
			lmd_sb_str(b, "{}");
			return;
		}
		lmd_sb_add(b, "{", 1);
		const char *k;
		json_t *e;
		int first = 1;
		json_object_foreach((json_t *)v, k, e) {
			if (!first)
				lmd_sb_str(b, sep);
			first = 0;
			if (indent >= 0)
				newline(b, indent, depth + 1);
			add_string(b, k, strlen(k));
			lmd_sb_str(b, ": ");
			add_value(b, e, indent, depth + 1);
		}
		if (indent >= 0)
			newline(b, indent, depth);
		lmd_sb_add(b, "}", 1);
		return;
	}
	case JSON_ARRAY: {
		if (!json_array_size(v)) {
			lmd_sb_str(b, "[]");
			return;
		}
		lmd_sb_add(b, "[", 1);
		size_t i;
		json_t *e;
		json_array_foreach(v, i, e) {
			if (i)
				lmd_sb_str(b, sep);
			if (indent >= 0)
				newline(b, indent, depth + 1);
			add_value(b, e, indent, depth + 1);
		}
		if (indent >= 0)
			newline(b, indent, depth);
		lmd_sb_add(b, "]", 1);
		return;
	}
	case JSON_STRING: add_string(b, json_string_value(v), json_string_length(v)); return;
	case JSON_INTEGER: lmd_sb_printf(b, "%lld", (long long)json_integer_value(v)); return;
	case JSON_REAL: add_real(b, json_real_value(v)); return;
	case JSON_TRUE: lmd_sb_str(b, "true"); return;
	case JSON_FALSE: lmd_sb_str(b, "false"); return;
	case JSON_NULL: lmd_sb_str(b, "null"); return;
	}
}

void lmd_pyjson_add(struct lmd_sb *b, const json_t *v, int indent)
{
	add_value(b, v, indent, 0);
}

char *lmd_pyjson_dumps(const json_t *v, int indent)
{
	struct lmd_sb b = {0};
	add_value(&b, v, indent, 0);
	return lmd_sb_take(&b);
}
