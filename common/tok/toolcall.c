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
	s->open = -1;
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
	struct lmd_tool_lex *x = &s->lex;
	free(x->keyb.p);
	free(x->name.p);
	free(x->lit.p);
	free(x->out.p);
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

/* Room for one more call, zeroed (not yet counted); NULL when out of memory. */
static struct lmd_tool_call *slot(struct lmd_tool_stream *s)
{
	if (s->n_calls == s->cap) {
		int nc = s->cap ? 2 * s->cap : 4;
		struct lmd_tool_call *np = realloc(s->calls, (size_t)nc * sizeof(*np));
		if (!np)
			return NULL;
		s->calls = np;
		s->cap = nc;
	}
	struct lmd_tool_call *c = &s->calls[s->n_calls];
	memset(c, 0, sizeof(*c));
	return c;
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
		struct lmd_tool_call *c = slot(s);
		if (!c) {
			json_decref(v);
			return LMD_ENOMEM;
		}
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

// --- a streamed call: its JSON object read byte by byte, the arguments sent as they come

enum { X_VALUE, X_KEY1, X_KEY, X_COLON, X_ELEM1, X_AFTER, X_STR, X_LIT, X_DONE };
enum { K_OTHER, K_NAME, K_ARGS };         /* the call object's key whose value is being read */
enum { A_NONE, A_OPEN, A_DONE, A_OTHER }; /* its arguments: absent, an object being read, read, not an object */

static void lex_reset(struct lmd_tool_lex *x)
{
	struct lmd_sb keep[4] = {x->keyb, x->name, x->lit, x->out};
	memset(x, 0, sizeof(*x));
	x->keyb = keep[0], x->name = keep[1], x->lit = keep[2], x->out = keep[3];
	x->keyb.n = x->name.n = x->lit.n = x->out.n = 0;
}

/* Inside the arguments object (its brackets included once pushed)? */
static int in_args(const struct lmd_tool_lex *x)
{
	return x->args_st == A_OPEN && x->depth >= 2;
}

/* Output of the arguments; safe: what is out so far can be sent. */
static void put(struct lmd_tool_lex *x, const char *p, size_t n, int safe)
{
	if (!in_args(x))
		return;
	lmd_sb_add(&x->out, p, n);
	if (safe)
		x->safe = x->out.n;
}

static void value_end(struct lmd_tool_lex *x)
{
	x->st = x->depth ? X_AFTER : X_DONE;
}

static void lex_close(struct lmd_tool_lex *x, char c)
{
	put(x, &c, 1, 1);
	if (--x->depth == 1 && x->args_st == A_OPEN)
		x->args_st = A_DONE;
	value_end(x);
}

static int lit_ok(const char *p)
{
	if (!strcmp(p, "true") || !strcmp(p, "false") || !strcmp(p, "null"))
		return 1;
	/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
	const char *q = p + (*p == '-');
	if (*q == '0')
		q++;
	else if (*q >= '1' && *q <= '9')
		while (*q >= '0' && *q <= '9')
			q++;
	else
		return 0;
	if (*q == '.') {
		if (!(*++q >= '0' && *q <= '9'))
			return 0;
		while (*q >= '0' && *q <= '9')
			q++;
	}
	if (*q == 'e' || *q == 'E') {
		q += q[1] == '+' || q[1] == '-';
		if (!(*++q >= '0' && *q <= '9'))
			return 0;
		while (*q >= '0' && *q <= '9')
			q++;
	}
	return !*q;
}

static int lit_char(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '-' || c == '+' || c == '.' || c == 'E';
}

static void lit_end(struct lmd_tool_lex *x)
{
	if (!x->lit.p || !lit_ok(x->lit.p)) {
		x->bad = 1;
		return;
	}
	put(x, x->lit.p, x->lit.n, 1);
	value_end(x);
}

static void value_start(struct lmd_tool_lex *x, char c)
{
	if (x->depth == 1 && x->key == K_NAME)
		x->name_st = c == '"' ? 1 : 3;
	if (x->depth == 1 && x->key == K_ARGS)
		x->args_st = c == '{' ? A_OPEN : A_OTHER;
	if ((c == '{' || c == '[') && (x->depth || c == '{') && x->depth < LMD_TOOL_DEPTH) {
		x->stack[x->depth++] = c == '{' ? '}' : ']';
		put(x, &c, 1, 1);
		x->st = c == '{' ? X_KEY1 : X_ELEM1;
	} else if (c == '"' && x->depth) {
		x->st = X_STR;
		x->is_key = 0;
		x->cap = x->depth == 1 && x->key == K_NAME ? &x->name : NULL;
		put(x, "\"", 1, 1);
	} else if (lit_char((unsigned char)c) && x->depth) {
		x->st = X_LIT;
		x->lit.n = 0;
		lmd_sb_add(&x->lit, &c, 1);
	} else {
		x->bad = 1;
	}
}

static void str_end(struct lmd_tool_lex *x)
{
	put(x, "\"", 1, !x->is_key);
	if (!x->is_key) {
		if (x->cap == &x->name)
			x->name_st = 2;
		value_end(x);
		return;
	}
	x->st = X_COLON;
	if (x->depth == 1) {
		const char *k = lmd_sb_cstr(&x->keyb);
		x->key = !strcmp(k, "name") && !x->name_st ? K_NAME
			 : (!strcmp(k, "arguments") || !strcmp(k, "parameters")) && !x->args_st ? K_ARGS : K_OTHER;
	}
}

/* One byte of a string (JSON's escapes; UTF-8 as jansson accepts it). */
static void str_byte(struct lmd_tool_lex *x, unsigned char c)
{
	if (x->esc == 1)
		x->esc = c == 'u' ? 2 : strchr("\"\\/bfnrt", c) && c ? 0 : -1;
	else if (x->esc > 1)
		x->esc = !strchr("0123456789abcdefABCDEF", c) || !c ? -1 : x->esc == 5 ? 0 : x->esc + 1;
	else if (x->u8) {
		if (c < x->lo || c > x->hi)
			x->bad = 1;
		x->u8--, x->lo = 0x80, x->hi = 0xbf;
	} else if (c == '\\') {
		x->esc = 1;
	} else if (c == '"') {
		str_end(x);
		return;
	} else if (c < 0x20) {
		x->bad = 1;
	} else if (c >= 0x80) {
		x->lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
		x->hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
		x->u8 = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : 0;
		x->bad = !x->u8;
	}
	if (x->esc < 0)
		x->bad = 1;
	if (x->bad)
		return;
	char ch = (char)c;
	if (x->cap)
		lmd_sb_add(x->cap, &ch, 1);
	put(x, &ch, 1, !x->is_key && !x->esc && !x->u8);
}

/* One byte of the call object; x->bad when it is not JSON, X_DONE once the object is closed. */
static void lex_byte(struct lmd_tool_lex *x, char c)
{
	if (x->bad || x->st == X_DONE)
		return;
	if (x->st == X_STR) {
		str_byte(x, (unsigned char)c);
		return;
	}
	if (x->st == X_LIT) {
		if (lit_char((unsigned char)c) && x->lit.n < 64) {
			lmd_sb_add(&x->lit, &c, 1);
			return;
		}
		lit_end(x);  /* then c is what follows the value */
		if (x->bad)
			return;
	}
	if (is_ws(c))
		return;
	switch (x->st) {
	case X_KEY1:
		if (c == '}') {
			lex_close(x, c);
			return;
		}
		/* fall through */
	case X_KEY:
		x->bad = c != '"';
		x->st = X_STR;
		x->is_key = 1;
		x->cap = x->depth == 1 ? &x->keyb : NULL;
		x->keyb.n = 0;
		lmd_sb_add(&x->keyb, "", 0);
		put(x, "\"", 1, 0);
		return;
	case X_COLON:
		x->bad = c != ':';
		x->st = X_VALUE;
		put(x, ": ", 2, 0);
		return;
	case X_AFTER:
		if (c == ',') {
			x->st = x->stack[x->depth - 1] == '}' ? X_KEY : X_VALUE;
			put(x, ", ", 2, 0);
		} else if (c == x->stack[x->depth - 1]) {
			lex_close(x, c);
		} else {
			x->bad = 1;
		}
		return;
	case X_ELEM1:
		if (c == ']') {
			lex_close(x, c);
			return;
		}
		/* fall through */
	default:
		value_start(x, c);
	}
}

/* The arguments sent so far, closed: a JSON object. */
static char *lex_closed(struct lmd_tool_lex *x)
{
	struct lmd_sb b = {0};
	lmd_sb_add(&b, x->out.p, x->args_st == A_DONE ? x->out.n : x->safe);
	if (x->args_st == A_OPEN) {
		if (x->st == X_STR && !x->is_key)
			lmd_sb_add(&b, "\"", 1);
		for (int k = x->depth - 1; k >= 1; k--)
			lmd_sb_add(&b, &x->stack[k], 1);
	}
	return lmd_sb_take(&b);
}

/* The streamed call ends: its arguments are what was read, closed. */
static int end_open(struct lmd_tool_stream *s)
{
	if (s->open < 0)
		return 0;
	struct lmd_tool_call *c = &s->calls[s->open];
	s->open = -1;
	s->after_call = 1;
	return (c->arguments = lex_closed(&s->lex)) ? 0 : LMD_ENOMEM;
}

/* Read the call body in raw up to upto. eager: hand a call out once it is known to be one. */
static int scan(struct lmd_tool_stream *s, size_t upto, int eager)
{
	struct lmd_tool_lex *x = &s->lex;
	while (s->scan < upto && !s->stop) {
		char c = s->raw.p[s->scan];
		if (x->st == X_DONE) {  /* after a streamed call: another, or the end of streaming here */
			if (is_ws(c) || c == ';') {
				s->scan++;
				continue;
			}
			if (c != '{') {
				s->stop = 1;
				break;
			}
			lex_reset(x);
		}
		lex_byte(x, c);
		if (x->bad) {  /* a streamed call is closed; the text from here on is decided at its end */
			s->stop = 1;
			if (x->committed) {
				s->rest = s->scan;
				return end_open(s);
			}
			break;
		}
		s->scan++;
		if (eager && !x->committed && x->args_st == A_OPEN && x->out.n > 1 && x->name_st == 2 &&
		    known(s, lmd_sb_cstr(&x->name))) {
			struct lmd_tool_call *nc = slot(s);
			if (!nc || !(nc->name = strdup(lmd_sb_cstr(&x->name))))
				return LMD_ENOMEM;
			new_id(nc->id);
			s->open = s->n_calls++;
			x->committed = s->streamed = 1;
		}
		if (x->st == X_DONE) {
			if (!x->committed) {
				s->stop = 1;
				break;
			}
			s->rest = s->scan;
			if (end_open(s))
				return LMD_ENOMEM;
		}
	}
	return x->out.failed || x->keyb.failed || x->name.failed || x->lit.failed ? LMD_ENOMEM : 0;
}

/* The call in s->raw (marker, body and end marker as written) ends: calls, or content. */
static int end_call(struct lmd_tool_stream *s, size_t body_off, size_t body_len, struct lmd_sb *out)
{
	size_t stop = body_off + body_len;
	int rc = scan(s, stop, 0);
	if (!rc && s->open >= 0) {  /* a streamed call cut short */
		if (s->lex.st == X_LIT)
			lit_end(&s->lex);
		rc = end_open(s);
		s->rest = stop;
	}
	size_t from = s->streamed ? s->rest : body_off;
	while (s->streamed && from < stop && is_ws(s->raw.p[from]))
		from++;
	if (!rc && (!s->streamed || from < stop))
		rc = add_calls(s, s->raw.p + from, stop - from);
	if (rc == LMD_ENOMEM)
		return rc;
	s->held.n = 0;
	if (rc && s->streamed)
		emit(s, s->raw.p + from, stop - from, out);
	else if (rc)
		emit(s, s->raw.p, s->raw.n, out);
	else
		s->after_call = 1;
	s->raw.n = 0;
	s->in_call = 0;
	return 0;
}

/* The length of the longest end of b (after off) that is a proper prefix of tag. */
static size_t tag_start(const struct lmd_sb *b, size_t off, const char *tag)
{
	for (size_t k = strlen(tag) - 1; k > 0; k--)
		if (k <= b->n - off && !memcmp(b->p + b->n - k, tag, k))
			return k;
	return 0;
}

/* The call's body starts at the end of raw. */
static void begin_call(struct lmd_tool_stream *s)
{
	s->in_call = (int)s->raw.n + 1;
	s->scan = s->rest = s->raw.n;
	s->stop = s->streamed = 0;
	lex_reset(&s->lex);
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
			if (final)
				return end_call(s, body, s->raw.n - body, out);
			/* what may be the start of the end marker waits */
			return scan(s, s->raw.n - (close ? tag_start(&s->raw, body, close) : 0), 1);
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
				lmd_sb_add(&s->raw, lmd_sb_cstr(&s->held), s->held.n);
				s->held.n = 0;
				begin_call(s);
				continue;
			}
		}
		const char *at = s->pend.n ? memmem(s->pend.p, s->pend.n, open, strlen(open)) : NULL;
		if (at) {
			size_t pos = (size_t)(at - s->pend.p);
			emit(s, s->pend.p, pos, out);
			/* the white space before the marker goes with the call (back to content if it is bad) */
			lmd_sb_add(&s->raw, lmd_sb_cstr(&s->held), s->held.n);
			s->held.n = 0;
			lmd_sb_add(&s->raw, open, strlen(open));
			begin_call(s);
			shift(&s->pend, pos + strlen(open));
			continue;
		}
		size_t keep = final ? 0 : tag_start(&s->pend, 0, open);
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

int lmd_tool_stream_finish(struct lmd_tool_stream *s, const char *text, size_t n, struct lmd_sb *content)
{
	lmd_sb_add(&s->pend, text ? text : "", n);
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

json_t *lmd_tool_stream_deltas(struct lmd_tool_stream *s)
{
	json_t *d = json_array();
	for (int k = s->from; d && k < s->n_calls; k++) {
		struct lmd_tool_call *c = &s->calls[k];
		const char *a = c->arguments ? c->arguments : s->lex.out.p;
		size_t n = c->arguments ? strlen(c->arguments) : s->lex.safe;
		if (!c->announced)
			json_array_append_new(d, json_pack("[{s:i, s:s, s:s, s:{s:s, s:s}}]", "index", k, "id", c->id, "type",
							   "function", "function", "name", c->name, "arguments", ""));
		c->announced = 1;
		if (n > c->sent)
			json_array_append_new(d, json_pack("[{s:i, s:{s:s%}}]", "index", k, "function", "arguments",
							   a + c->sent, n - c->sent));
		c->sent = n;
		if (c->arguments)
			s->from = k + 1;
	}
	if (!json_array_size(d)) {
		json_decref(d);
		return NULL;
	}
	return d;
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
