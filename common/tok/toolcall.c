#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "err.h"
#include "pyjson.h"
#include "toolcall.h"

static const struct {
	const char *name, *open, *close;
} parsers[] = {
	[LMD_TOOLS_NONE] = {"", NULL, NULL},
	[LMD_TOOLS_INTERNLM] = {"internlm", "<|action_start|><|plugin|>", "<|action_end|>"},
	[LMD_TOOLS_QWEN] = {"qwen", "<tool_call>", "</tool_call>"},
	[LMD_TOOLS_LLAMA3] = {"llama3", "<|python_tag|>", NULL},
};

int lmd_tool_parser_named(const char *name)
{
	if (!name || !*name)
		return LMD_TOOLS_NONE;
	for (int i = 1; i < (int)(sizeof(parsers) / sizeof(parsers[0])); i++)
		if (!strcmp(name, parsers[i].name))
			return i;
	return -1;
}

void lmd_tool_stream_init(struct lmd_tool_stream *s, enum lmd_tool_parser kind, const char *const *names, int n_names)
{
	memset(s, 0, sizeof(*s));
	s->kind = kind;
	s->names = names;
	s->n_names = n_names;
}

void lmd_tool_stream_free(struct lmd_tool_stream *s)
{
	for (int i = 0; i < s->n_calls; i++) {
		free(s->calls[i].name);
		free(s->calls[i].arguments);
	}
	free(s->calls);
	free(s->pend.p);
	free(s->raw.p);
	free(s->held.p);
	memset(s, 0, sizeof(*s));
}

static int is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Drop the first n bytes of b. */
static void shift(struct lmd_sb *b, size_t n)
{
	if (!n)
		return;
	memmove(b->p, b->p + n, b->n - n);
	b->n -= n;
	b->p[b->n] = 0;
}

/* Content: white space at its end is held back (it is dropped when a call follows), and white
 * space right after a call is dropped. */
static void emit(struct lmd_tool_stream *s, const char *p, size_t n, struct lmd_sb *out)
{
	size_t last = n;
	while (last && is_ws(p[last - 1]))
		last--;
	if (!last) {
		if (!s->after_call)
			lmd_sb_add(&s->held, p, n);
		return;
	}
	size_t first = 0;
	if (s->after_call)
		while (is_ws(p[first]))
			first++;
	else if (s->held.n)
		lmd_sb_add(out, s->held.p, s->held.n);
	s->held.n = 0;
	s->after_call = 0;
	lmd_sb_add(out, p + first, last - first);
	lmd_sb_add(&s->held, p + last, n - last);
}

static int known(const struct lmd_tool_stream *s, const char *name)
{
	for (int i = 0; i < s->n_names; i++)
		if (s->names[i] && !strcmp(s->names[i], name))
			return 1;
	return 0;
}

static void new_id(char *id)
{
	static const char al[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	unsigned char r[24];
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		for (size_t i = 0; i < sizeof(r); i++)
			r[i] = (unsigned char)rand();
	memcpy(id, "call_", 5);
	for (size_t i = 0; i < sizeof(r); i++)
		id[5 + i] = al[r[i] % (sizeof(al) - 1)];
	id[5 + sizeof(r)] = 0;
}

/* One call's JSON object: its name and arguments text, or -1 when it is not a valid call. */
static int one_call(const struct lmd_tool_stream *s, const json_t *v, struct lmd_tool_call *c)
{
	const char *name = json_string_value(json_object_get(v, "name"));
	json_t *a = json_object_get(v, "arguments"), *dec = NULL;
	if (!a)
		a = json_object_get(v, "parameters");
	int absent = !a;
	if (json_is_string(a))  /* some models write the arguments as a JSON string */
		a = dec = json_loads(json_string_value(a), 0, NULL);
	int ok = json_is_object(v) && name && known(s, name) && (absent || json_is_object(a));
	if (ok) {
		c->name = strdup(name);
		c->arguments = a ? lmd_pyjson_dumps(a, -1) : strdup("{}");
		new_id(c->id);
	}
	json_decref(dec);
	return ok ? 0 : -1;
}

/* A call's body: JSON objects, separated by white space or ';'. Adds them all, or none (-1). */
static int add_calls(struct lmd_tool_stream *s, const char *p, size_t n)
{
	int first = s->n_calls, rc = 0;
	size_t i = 0;
	while (!rc) {
		while (i < n && (is_ws(p[i]) || (p[i] == ';' && s->n_calls > first)))
			i++;
		if (i == n)
			break;
		json_error_t e;
		json_t *v = json_loadb(p + i, n - i, JSON_DISABLE_EOF_CHECK, &e);
		if (!v || e.position <= 0) {
			json_decref(v);
			rc = -1;
			break;
		}
		i += (size_t)e.position;
		if (s->n_calls == s->cap) {
			int nc = s->cap ? 2 * s->cap : 4;
			struct lmd_tool_call *np = realloc(s->calls, (size_t)nc * sizeof(*np));
			if (!np) {
				json_decref(v);
				return LMD_ENOMEM;
			}
			s->calls = np;
			s->cap = nc;
		}
		struct lmd_tool_call *c = &s->calls[s->n_calls];
		memset(c, 0, sizeof(*c));
		rc = one_call(s, v, c);
		json_decref(v);
		if (!rc && (!c->name || !c->arguments)) {
			free(c->name);
			free(c->arguments);
			return LMD_ENOMEM;
		}
		if (!rc)
			s->n_calls++;
	}
	if (rc || s->n_calls == first) {
		while (s->n_calls > first) {
			s->n_calls--;
			free(s->calls[s->n_calls].name);
			free(s->calls[s->n_calls].arguments);
		}
		return -1;
	}
	return 0;
}

/* The call in s->raw (marker, body and end marker as written) ends: a call, or content. */
static int end_call(struct lmd_tool_stream *s, size_t body_off, size_t body_len, struct lmd_sb *out)
{
	int rc = add_calls(s, s->raw.p + body_off, body_len);
	if (rc == LMD_ENOMEM)
		return rc;
	if (rc) {
		s->held.n = 0;
		emit(s, s->raw.p, s->raw.n, out);
	} else {
		s->held.n = 0;
		s->after_call = 1;
	}
	s->raw.n = 0;
	s->in_call = 0;
	return 0;
}

/* Does b (from off) start with a proper prefix of tag, running to b's end? */
static int prefix_of(const struct lmd_sb *b, size_t off, const char *tag)
{
	size_t k = b->n - off;
	return k < strlen(tag) && !memcmp(b->p + off, tag, k);
}

static int process(struct lmd_tool_stream *s, int final, struct lmd_sb *out)
{
	const char *open = parsers[s->kind].open, *close = parsers[s->kind].close;
	if (!open) {
		emit(s, s->pend.p, s->pend.n, out);
		s->pend.n = 0;
		return 0;
	}
	for (;;) {
		if (s->in_call) {
			/* raw holds the marker and the body so far; pend was moved into it */
			lmd_sb_add(&s->raw, s->pend.p, s->pend.n);
			s->pend.n = 0;
			size_t body = (size_t)s->in_call - 1;
			const char *end = close ? memmem(s->raw.p + body, s->raw.n - body, close, strlen(close)) : NULL;
			if (end) {
				size_t stop = (size_t)(end - s->raw.p), after = stop + strlen(close);
				lmd_sb_add(&s->pend, s->raw.p + after, s->raw.n - after);
				s->raw.n = after;
				if (end_call(s, body, stop - body, out))
					return LMD_ENOMEM;
				continue;
			}
			if (!final)
				return 0;
			return end_call(s, body, s->raw.n - body, out);
		}
		if (s->kind == LMD_TOOLS_LLAMA3 && !s->decided) {
			/* an answer that starts with JSON is calls */
			size_t i = 0;
			while (i < s->pend.n && is_ws(s->pend.p[i]))
				i++;
			if (i == s->pend.n && !final)
				return 0;
			if (i < s->pend.n && prefix_of(&s->pend, i, open) && !final)
				return 0;
			s->decided = 1;
			if (i < s->pend.n && s->pend.p[i] == '{') {
				lmd_sb_add(&s->raw, s->held.p ? s->held.p : "", s->held.n);
				s->held.n = 0;
				s->in_call = (int)s->raw.n + 1;
				continue;
			}
		}
		const char *at = s->pend.n ? memmem(s->pend.p, s->pend.n, open, strlen(open)) : NULL;
		if (at) {
			size_t pos = (size_t)(at - s->pend.p);
			emit(s, s->pend.p, pos, out);
			/* the white space before the marker goes with the call (back to content if it is bad) */
			lmd_sb_add(&s->raw, s->held.p ? s->held.p : "", s->held.n);
			s->held.n = 0;
			lmd_sb_add(&s->raw, open, strlen(open));
			s->in_call = (int)s->raw.n + 1;
			shift(&s->pend, pos + strlen(open));
			continue;
		}
		size_t keep = 0;
		if (!final)
			for (size_t k = strlen(open) - 1; k > 0 && !keep; k--)
				if (k <= s->pend.n && !memcmp(s->pend.p + s->pend.n - k, open, k))
					keep = k;
		emit(s, s->pend.p, s->pend.n - keep, out);
		shift(&s->pend, s->pend.n - keep);
		return 0;
	}
}

int lmd_tool_stream_feed(struct lmd_tool_stream *s, const char *text, size_t n, struct lmd_sb *content)
{
	lmd_sb_add(&s->pend, text, n);
	int rc = process(s, 0, content);
	return rc ? rc : (s->pend.failed || s->raw.failed || s->held.failed || content->failed) ? LMD_ENOMEM : 0;
}

int lmd_tool_stream_finish(struct lmd_tool_stream *s, struct lmd_sb *content)
{
	int rc = process(s, 1, content);
	if (!s->n_calls && s->held.n)
		lmd_sb_add(content, s->held.p, s->held.n);
	s->held.n = 0;
	return rc ? rc : (s->pend.failed || s->raw.failed || s->held.failed || content->failed) ? LMD_ENOMEM : 0;
}

json_t *lmd_tool_calls_json(const struct lmd_tool_call *calls, int n)
{
	json_t *a = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(a, json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", calls[i].id, "type", "function",
						   "function", "name", calls[i].name, "arguments", calls[i].arguments));
	return a;
}

json_t *lmd_tool_call_deltas(const struct lmd_tool_call *c, int index)
{
	return json_pack("[[{s:i, s:s, s:s, s:{s:s, s:s}}], [{s:i, s:{s:s}}]]", "index", index, "id", c->id, "type",
			 "function", "function", "name", c->name, "arguments", "", "index", index, "function",
			 "arguments", c->arguments);
}

const char **lmd_tool_names(const json_t *tools, const char *only_name, int *n)
{
	size_t i, k = 0;
	json_t *t;
	const char **names = json_array_size(tools) ? calloc(json_array_size(tools), sizeof(*names)) : NULL;
	json_array_foreach(tools, i, t) {
		const char *name = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
		if (names && name && (!only_name || !strcmp(name, only_name)))
			names[k++] = name;
	}
	*n = (int)k;
	if (!k) {
		free(names);
		return NULL;
	}
	return names;
}
