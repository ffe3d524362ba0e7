/*
 * Tool-call parsing (common/tok/toolcall.c) of recorded answers, well-formed and malformed, for
 * each parser; every answer is also streamed in pieces of every size (and byte by byte), which
 * must give the same content and calls (arguments equal as JSON) as the whole answer at once,
 * except where a streamed call goes bad after it was handed out (check_streamed). Streamed, each
 * call's deltas open with its name and their arguments concatenate to its arguments, a JSON object.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "tok/toolcall.h"
#include "unit.h"

static const char *const names[] = {"add", "multiply", "get_time"};

struct result {
	char *content;
	int n;
	char *name[4], *args[4];
};

static void free_result(struct result *r);

/* Fold the deltas of a stream into per-call names and arguments, checking their shape. */
static void fold(struct lmd_tool_stream *s, struct result *r, int *pieces)
{
	json_t *d = lmd_tool_stream_deltas(s), *x;
	size_t i;
	json_array_foreach(d, i, x) {
		CHECK_EQ_INT((int)json_array_size(x), 1);
		json_t *c = json_array_get(x, 0), *f = json_object_get(c, "function");
		int k = (int)json_integer_value(json_object_get(c, "index"));
		const char *a = json_string_value(json_object_get(f, "arguments"));
		CHECK(k >= 0 && k < 4 && a);
		if (k == r->n) {  /* a call opens: id, type and name, no arguments yet */
			CHECK(json_is_string(json_object_get(c, "id")) && json_is_string(json_object_get(f, "name")) && !*a);
			r->name[r->n] = strdup(json_string_value(json_object_get(f, "name")));
			r->args[r->n++] = strdup("");
			continue;
		}
		CHECK(k < r->n && !json_object_get(f, "name") && *a);
		char *cat = malloc(strlen(r->args[k]) + strlen(a) + 1);
		strcat(strcpy(cat, r->args[k]), a);
		free(r->args[k]);
		r->args[k] = cat;
		(*pieces)++;
	}
	json_decref(d);
}

/* step > strlen(text): the whole answer at once; else streamed, step bytes at a time. */
static void run(enum lmd_tool_parser kind, const char *text, size_t step, struct result *r)
{
	struct lmd_tool_stream s;
	struct lmd_sb content = {0};
	struct result streamed = {0};
	int pieces = 0;
	lmd_tool_stream_init(&s, kind, names, 3);
	size_t n = strlen(text);
	for (size_t i = 0; step <= n && i < n; i += step) {
		CHECK_EQ_INT(lmd_tool_stream_feed(&s, text + i, i + step > n ? n - i : step, &content), 0);
		fold(&s, &streamed, &pieces);
	}
	CHECK_EQ_INT(lmd_tool_stream_finish(&s, step > n ? text : NULL, step > n ? n : 0, &content), 0);
	fold(&s, &streamed, &pieces);
	r->content = lmd_sb_take(&content);
	r->n = s.n_calls;
	CHECK_EQ_INT(streamed.n, s.n_calls);
	for (int i = 0; i < s.n_calls && i < 4; i++) {
		r->name[i] = strdup(s.calls[i].name);
		r->args[i] = strdup(s.calls[i].arguments);
		json_t *a = json_loads(r->args[i], 0, NULL);
		CHECK(json_is_object(a));
		json_decref(a);
		CHECK(!strncmp(s.calls[i].id, "call_", 5) && strlen(s.calls[i].id) == 29);
		if (i)
			CHECK(strcmp(s.calls[i].id, s.calls[i - 1].id));
		if (i < streamed.n) {
			CHECK_EQ_STR(streamed.name[i], r->name[i]);
			CHECK_EQ_STR(streamed.args[i], r->args[i]);
		}
	}
	streamed.content = NULL;
	free_result(&streamed);
	lmd_tool_stream_free(&s);
}

static int same_json(const char *a, const char *b)
{
	json_t *x = json_loads(a, 0, NULL), *y = json_loads(b, 0, NULL);
	int same = x && y && json_equal(x, y);
	json_decref(x);
	json_decref(y);
	return same;
}

static void free_result(struct result *r)
{
	free(r->content);
	for (int i = 0; i < r->n && i < 4; i++) {
		free(r->name[i]);
		free(r->args[i]);
	}
}

static int same_result(const struct result *a, const struct result *b)
{
	int same = !strcmp(a->content, b->content) && a->n == b->n;
	for (int i = 0; same && i < a->n && i < 4; i++)
		same = !strcmp(a->name[i], b->name[i]) && same_json(a->args[i], b->args[i]);
	return same;
}

/* Set for answers whose streamed calls are handed out before they go bad (see check_streamed). */
static int streamed_differs;

/* want: content, then name and arguments of each call */
static void check(enum lmd_tool_parser kind, const char *text, const char *content, int ncalls, ...)
{
	struct result whole;
	run(kind, text, strlen(text) + 1, &whole);
	if (strcmp(whole.content, content) || whole.n != ncalls) {
		fprintf(stderr, "answer '%s':\n  content '%s' (want '%s'), %d calls (want %d)\n", text, whole.content,
			content, whole.n, ncalls);
		CHECK(0);
	}
	va_list ap;
	va_start(ap, ncalls);
	for (int i = 0; i < ncalls && i < whole.n; i++) {
		const char *name = va_arg(ap, const char *), *args = va_arg(ap, const char *);
		CHECK_EQ_STR(whole.name[i], name);
		CHECK_EQ_STR(whole.args[i], args);
	}
	va_end(ap);
	struct result bytes;
	run(kind, text, 1, &bytes);
	for (size_t step = 1; step <= strlen(text); step++) {
		struct result part;
		run(kind, text, step, &part);
		int same = same_result(&part, &whole) || (streamed_differs && same_result(&part, &bytes));
		if (!same) {
			fprintf(stderr, "answer '%s' fed %zu bytes at a time: content '%s', %d calls\n", text, step,
				part.content, part.n);
			CHECK(0);
		}
		free_result(&part);
	}
	free_result(&bytes);
	free_result(&whole);
}

#define ADD "{\"a\": 3, \"b\": 5}"

/* Streamed byte by byte (as a tokenizer's pieces may come), where that differs from the whole answer:
 * a call handed out stays one. want: content, then name and arguments of each call. */
static void check_streamed(enum lmd_tool_parser kind, const char *text, const char *content, int ncalls, ...)
{
	struct result r;
	run(kind, text, 1, &r);
	if (strcmp(r.content, content) || r.n != ncalls) {
		fprintf(stderr, "answer '%s' streamed:\n  content '%s' (want '%s'), %d calls (want %d)\n", text, r.content,
			content, r.n, ncalls);
		CHECK(0);
	}
	va_list ap;
	va_start(ap, ncalls);
	for (int i = 0; i < ncalls && i < r.n; i++) {
		const char *name = va_arg(ap, const char *), *args = va_arg(ap, const char *);
		CHECK_EQ_STR(r.name[i], name);
		CHECK_EQ_STR(r.args[i], args);
	}
	va_end(ap);
	free_result(&r);
}

/* The arguments streamed while the answer is fed up to each of cuts (NULL-terminated): the
 * concatenation so far must be want[i]. */
static void check_pieces(enum lmd_tool_parser kind, const char *text, const char *const *cuts, const char *const *want)
{
	struct lmd_tool_stream s;
	struct lmd_sb content = {0};
	struct result r = {0};
	int pieces = 0;
	size_t at = 0;
	lmd_tool_stream_init(&s, kind, names, 3);
	for (int i = 0; cuts[i]; i++) {
		size_t to = (size_t)(strstr(text + at, cuts[i]) - text) + strlen(cuts[i]);
		CHECK_EQ_INT(lmd_tool_stream_feed(&s, text + at, to - at, &content), 0);
		at = to;
		fold(&s, &r, &pieces);
		CHECK_EQ_STR(r.n ? r.args[0] : "(none)", want[i]);
	}
	CHECK_EQ_INT(lmd_tool_stream_finish(&s, text + at, strlen(text) - at, &content), 0);
	fold(&s, &r, &pieces);
	CHECK(pieces > 1);
	r.content = lmd_sb_take(&content);
	free_result(&r);
	lmd_tool_stream_free(&s);
}

static void check_qwen(void)
{
	enum lmd_tool_parser q = LMD_TOOLS_QWEN;
	check(q, "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 3, \"b\": 5}}\n</tool_call>", "", 1, "add", ADD);
	check(q, "Let me work it out.\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\":3,\"b\":5}}\n</tool_call>\n"
		 "<tool_call>\n{\"name\": \"multiply\", \"arguments\": {\"a\": 8, \"b\": 2.50}}\n</tool_call>",
	      "Let me work it out.", 2, "add", ADD, "multiply", "{\"a\": 8, \"b\": 2.5}");
	/* no call: the answer as it is, white space included */
	check(q, "(3 + 5) \u00d7 2 = 16.\n", "(3 + 5) \u00d7 2 = 16.\n", 0);
	check(q, "a <tool b <tool_cal", "a <tool b <tool_cal", 0);
	/* malformed: unknown function, arguments that are not JSON or not an object, no name */
	const char *bad[] = {
		"<tool_call>\n{\"name\": \"subtract\", \"arguments\": {\"a\": 3}}\n</tool_call>",
		"<tool_call>\n{\"name\": \"add\", \"arguments\": {a: 3, b: 5}}\n</tool_call>",
		"<tool_call>\n{\"name\": \"add\", \"arguments\": [3, 5]}\n</tool_call>",
		"<tool_call>\n{\"arguments\": {}}\n</tool_call>",
		"<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 3}} trailing\n</tool_call>",
		"<tool_call>\n\n</tool_call>",
		"<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 3",
		"<tool_call>[1, 2]</tool_call>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		streamed_differs = i == 4 || i == 6;
		check(q, bad[i], bad[i], 0);
	}
	streamed_differs = 0;
	/* a bad call between good text stays where it was */
	check(q, "x <tool_call>{\"name\": \"nope\"}</tool_call> y", "x <tool_call>{\"name\": \"nope\"}</tool_call> y", 0);
	/* one good, one bad: the good one is a call, the bad one content */
	check(q, "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 3, \"b\": 5}}</tool_call>\n"
		 "<tool_call>{\"name\": \"nope\"}</tool_call>",
	      "<tool_call>{\"name\": \"nope\"}</tool_call>", 1, "add", ADD);
	/* unclosed at the end (a stop word or max_tokens cut it) but complete: a call */
	check(q, "<tool_call>\n{\"name\": \"get_time\"}", "", 1, "get_time", "{}");
	/* arguments written as a JSON string; non-ASCII kept as it is */
	check(q, "<tool_call>{\"name\": \"add\", \"arguments\": \"{\\\"a\\\": 3, \\\"b\\\": 5}\"}</tool_call>", "", 1,
	      "add", ADD);
	check(q, "<tool_call>{\"name\": \"add\", \"arguments\": {\"s\": \"\\u00e9\u00e9\\n\"}}</tool_call>", "", 1, "add",
	      "{\"s\": \"\u00e9\u00e9\\n\"}");
	/* text after a call is content too */
	check(q, "<tool_call>{\"name\": \"get_time\", \"arguments\": {}}</tool_call>\n\nDone.", "Done.", 1, "get_time",
	      "{}");
	/* streamed, the arguments go out as they come: a number once it is complete, a string as it
	 * grows, never the end marker's start; a call cut short is closed */
	const char *text = "<tool_call>\n{\"name\": \"add\",\n \"arguments\": {\"a\":  3, \"s\": \"x</tool_\", \"l\": [1, "
			   "{\"t\": true}]}}\n</tool_call>";
	const char *cuts[] = {"\"add\"", "{", "3", ",", "\"x", "</tool_", "[1", "true}", "]}", "}", NULL};
#define ARGS_S "{\"a\": 3, \"s\": \"x</tool_\", \"l\": ["
	const char *want[] = {"(none)", "(none)", "{", "{\"a\": 3", "{\"a\": 3, \"s\": \"x", "{\"a\": 3, \"s\": \"x",
			      ARGS_S, ARGS_S "1, {\"t\": true}", ARGS_S "1, {\"t\": true}]}", ARGS_S "1, {\"t\": true}]}"};
	check_pieces(q, text, cuts, want);
	check(q, text, "", 1, "add", ARGS_S "1, {\"t\": true}]}");
	check_streamed(q, "<tool_call>{\"name\": \"add\", \"arguments\": {\"s\": \"x</tool_call> y", "y", 1, "add",
		       "{\"s\": \"x\"}");
	check_streamed(q, "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 3, \"b\": 2.50, \"c\": \"\\u00e9\"}}</tool_call>",
		       "", 1, "add", "{\"a\": 3, \"b\": 2.50, \"c\": \"\\u00e9\"}");
	/* handed out, then bad: the call stays, closed where it broke; the rest is content */
	check_streamed(q, bad[4], "trailing", 1, "add", "{\"a\": 3}");
	check_streamed(q, bad[6], "", 1, "add", "{\"a\": 3}");
	check_streamed(q, "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 3, b: 5}}</tool_call>", "b: 5}}", 1, "add",
		       "{\"a\": 3}");
	check_streamed(q, "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": \"\\u00", "", 1, "add", "{\"a\": \"\"}");
	/* not yet handed out when it goes bad: content, as whole */
	check_streamed(q, bad[1], bad[1], 0);
}

static void check_internlm(void)
{
	enum lmd_tool_parser k = LMD_TOOLS_INTERNLM;
	/* <|action_end|> is a stop word: usually the answer ends before it */
	check(k, "I will add them.<|action_start|><|plugin|>\n{\"name\": \"add\", \"parameters\": {\"a\": 3, \"b\": 5}}",
	      "I will add them.", 1, "add", ADD);
	check(k, "<|action_start|><|plugin|>\n{\"name\": \"add\", \"arguments\": {\"a\": 3, \"b\": 5}}<|action_end|>\n", "",
	      1, "add", ADD);
	check(k, "<|action_start|><|interpreter|>\nprint(1)", "<|action_start|><|interpreter|>\nprint(1)", 0);
	check(k, "<|action_start|><|plugin|>\n{\"name\": \"add\", \"parameters\": \"3, 5\"}",
	      "<|action_start|><|plugin|>\n{\"name\": \"add\", \"parameters\": \"3, 5\"}", 0);
}

static void check_llama3(void)
{
	enum lmd_tool_parser k = LMD_TOOLS_LLAMA3;
	check(k, "{\"name\": \"add\", \"parameters\": {\"a\": 3, \"b\": 5}}", "", 1, "add", ADD);
	check(k, "  <|python_tag|>{\"name\": \"add\", \"parameters\": {\"a\": 3, \"b\": 5}}", "", 1, "add", ADD);
	check(k, "{\"name\": \"add\", \"parameters\": {\"a\": 3, \"b\": 5}}; {\"name\": \"multiply\", \"parameters\": "
		 "{\"a\": 8, \"b\": 2}}",
	      "", 2, "add", ADD, "multiply", "{\"a\": 8, \"b\": 2}");
	check(k, "{\"answer\": 16}", "{\"answer\": 16}", 0);
	check(k, "The result is 16.", "The result is 16.", 0);
	check(k, "<|python_tag|>wolfram_alpha.call(query=\"3+5\")", "<|python_tag|>wolfram_alpha.call(query=\"3+5\")", 0);
	const char *more = "{\"name\": \"add\", \"parameters\": {\"a\": 3, \"b\": 5}} and more";
	streamed_differs = 1;
	check(k, more, more, 0);
	streamed_differs = 0;
	check_streamed(k, more, "and more", 1, "add", ADD);
	check(k, "", "", 0);
	/* an empty name is no known tool: content, never a crash (found by fuzz-toolcall) */
	const char *empty = "{\"name\": \"\", \"parameters\": {\"a\": 1}}";
	check(k, empty, empty, 0);
}

static void check_misc(void)
{
	/* tool_choice none: everything is content */
	const char *raw = "<tool_call>{\"name\": \"add\"}</tool_call> \n";
	check(LMD_TOOLS_NONE, raw, raw, 0);
	CHECK_EQ_INT(lmd_tool_parser_named("qwen"), LMD_TOOLS_QWEN);
	CHECK_EQ_INT(lmd_tool_parser_named("internlm"), LMD_TOOLS_INTERNLM);
	CHECK_EQ_INT(lmd_tool_parser_named("llama3"), LMD_TOOLS_LLAMA3);
	CHECK_EQ_INT(lmd_tool_parser_named(""), LMD_TOOLS_NONE);
	CHECK_EQ_INT(lmd_tool_parser_named("hermes"), -1);

	/* the OpenAI shape */
	struct lmd_tool_call c = {.id = "call_x", .name = "add", .arguments = ADD};
	json_t *a = lmd_tool_calls_json(&c, 1);
	char *s = json_dumps(a, JSON_COMPACT);
	CHECK_EQ_STR(s, "[{\"id\":\"call_x\",\"type\":\"function\",\"function\":{\"name\":\"add\",\"arguments\":"
			"\"{\\\"a\\\": 3, \\\"b\\\": 5}\"}}]");
	free(s);
	json_decref(a);

	json_t *tools = json_loads("[{\"type\": \"function\", \"function\": {\"name\": \"add\"}}, {\"type\": \"function\", "
				   "\"function\": {\"name\": \"mul\"}}, {\"type\": \"x\"}]", 0, NULL);
	int n;
	const char **nm = lmd_tool_names(tools, NULL, &n);
	CHECK(n == 2 && !strcmp(nm[0], "add") && !strcmp(nm[1], "mul"));
	free(nm);
	nm = lmd_tool_names(tools, "mul", &n);
	CHECK(n == 1 && !strcmp(nm[0], "mul"));
	free(nm);
	CHECK(!lmd_tool_names(tools, "div", &n) && n == 0);
	json_decref(tools);
}

int main(void)
{
	check_qwen();
	check_internlm();
	check_llama3();
	check_misc();
	return UNIT_DONE();
}
