#include <csv.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "file.h"

static int push(struct lmd_dataset *d, int *cap, const char *prompt, size_t np, const char *completion, int out_len)
{
	if (d->n == *cap) {
		int nc = *cap ? *cap * 2 : 64;
		struct lmd_dataset_item *it = realloc(d->items, nc * sizeof(*it));
		if (!it)
			return LMD_ENOMEM;
		d->items = it;
		*cap = nc;
	}
	struct lmd_dataset_item *it = &d->items[d->n];
	it->prompt = strndup(prompt, np);
	it->completion = completion ? strdup(completion) : NULL;
	it->output_len = out_len;
	if (!it->prompt || (completion && !it->completion)) {
		free(it->prompt);
		free(it->completion);
		return LMD_ENOMEM;
	}
	d->n++;
	return LMD_OK;
}

int lmd_dataset_sharegpt(struct lmd_dataset *d, const char *buf, size_t len, const char *name, struct lmd_err *err)
{
	json_error_t je;
	json_t *j = json_loadb(buf, len, 0, &je), *conv;
	size_t i;
	int cap = 0, rc = LMD_OK;
	*d = (struct lmd_dataset){0};
	if (!json_is_array(j)) {
		rc = j ? lmd_errorf(err, LMD_EFORMAT, "'%s': expected a JSON array of conversations (ShareGPT)", name)
		       : lmd_errorf(err, LMD_EFORMAT, "'%s': line %d: %s", name, je.line, je.text);
		json_decref(j);
		return rc;
	}
	json_array_foreach(j, i, conv) {  /* as vLLM: conversations of two turns or more; the first two */
		json_t *c = json_object_get(conv, "conversations");
		json_t *p = json_object_get(json_array_get(c, 0), "value"), *a = json_object_get(json_array_get(c, 1), "value");
		if (json_array_size(c) < 2 || !json_is_string(p) || !json_is_string(a))
			continue;
		if ((rc = push(d, &cap, json_string_value(p), json_string_length(p), json_string_value(a), -1)))
			break;
	}
	json_decref(j);
	if (rc)
		lmd_errorf(err, rc, "out of memory");
	return rc;
}

struct csv_state {
	struct lmd_dataset *d;
	int cap, field, row, rc;
	char *prompt;          /* owned: the row's first field */
	size_t nprompt;
	char out[32];          /* the row's second field */
	const char *name;
	struct lmd_err *err;
};

static void csv_field(void *s, size_t n, void *ctx)
{
	struct csv_state *st = ctx;
	if (st->field == 0) {
		free(st->prompt);
		st->prompt = strndup(s ? s : "", n);
		st->nprompt = n;
		if (!st->prompt && !st->rc)
			st->rc = lmd_errorf(st->err, LMD_ENOMEM, "out of memory");
	} else if (st->field == 1) {
		snprintf(st->out, sizeof(st->out), "%.*s", (int)(n < 31 ? n : 31), s ? (const char *)s : "");
	}
	st->field++;
}

static void csv_row(int c, void *ctx)
{
	(void)c;
	struct csv_state *st = ctx;
	int row = ++st->row, fields = st->field;
	st->field = 0;
	if (st->rc)
		return;
	char *end;
	errno = 0;
	long v = fields >= 2 ? strtol(st->out, &end, 10) : 0;
	int number = fields >= 2 && *st->out && !*end && !errno;
	if (row == 1 && !number)  /* a header */
		return;
	if (fields != 2 || !number || v < 1 || v > 1 << 24) {
		st->rc = lmd_errorf(st->err, LMD_EFORMAT, "'%s': row %d: expected prompt,output_len with output_len a "
				    "whole number from 1 to %d", st->name, row, 1 << 24);
		return;
	}
	if (push(st->d, &st->cap, st->prompt, st->nprompt, NULL, (int)v))
		st->rc = lmd_errorf(st->err, LMD_ENOMEM, "out of memory");
}

int lmd_dataset_csv(struct lmd_dataset *d, const char *buf, size_t len, const char *name, struct lmd_err *err)
{
	struct csv_parser p;
	struct csv_state st = {.d = d, .name = name, .err = err};
	*d = (struct lmd_dataset){0};
	if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL))
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	if (csv_parse(&p, buf, len, csv_field, csv_row, &st) != len || csv_fini(&p, csv_field, csv_row, &st)) {
		if (!st.rc)
			st.rc = lmd_errorf(err, LMD_EFORMAT, "'%s': row %d: %s", name, st.row + 1, csv_strerror(csv_error(&p)));
	}
	csv_free(&p);
	free(st.prompt);
	if (st.rc)
		lmd_dataset_free(d);
	return st.rc;
}

int lmd_dataset_load(struct lmd_dataset *d, const char *path, struct lmd_err *err)
{
	char *buf;
	size_t len, i = 0;
	int rc = lmd_read_file(path, &buf, &len, err);
	*d = (struct lmd_dataset){0};
	if (rc)
		return rc;
	while (i < len && strchr(" \t\r\n", buf[i]))
		i++;
	rc = i < len && buf[i] == '[' ? lmd_dataset_sharegpt(d, buf, len, path, err) : lmd_dataset_csv(d, buf, len, path, err);
	free(buf);
	if (!rc && !d->n)
		rc = lmd_errorf(err, LMD_EFORMAT, "'%s': no prompts (ShareGPT conversations of two turns, or CSV "
				"prompt,output_len rows)", path);
	return rc;
}

void lmd_dataset_free(struct lmd_dataset *d)
{
	for (int i = 0; i < d->n; i++) {
		free(d->items[i].prompt);
		free(d->items[i].completion);
	}
	free(d->items);
	*d = (struct lmd_dataset){0};
}
