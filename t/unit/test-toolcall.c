/*
 * Tool-call parsing (common/serve/toolcall.c) of recorded answers, well-formed and malformed, for
 * each parser; every answer is also fed in pieces of every size (and byte by byte), which must
 * give the same content and calls as the whole answer at once.
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

static void run(enum lmd_tool_parser kind, const char *text, size_t step, struct result *r)
{
	struct lmd_tool_stream s;
	struct lmd_sb content = {0};
	lmd_tool_stream_init(&s, kind, names, 3);
	size_t n = strlen(text);
	for (size_t i = 0; i < n; i += step)
		CHECK_EQ_INT(lmd_tool_stream_feed(&s, text + i, i + step > n ? n - i : step, &content), 0);
	CHECK_EQ_INT(lmd_tool_stream_finish(&s, &content), 0);
	r->content = lmd_sb_take(&content);
	r->n = s.n_calls;
	for (int i = 0; i < s.n_calls && i < 4; i++) {
		r->name[i] = strdup(s.calls[i].name);
		r->args[i] = strdup(s.calls[i].arguments);
		CHECK(!strncmp(s.calls[i].id, "call_", 5) && strlen(s.calls[i].id) == 29);
		if (i)
			CHECK(strcmp(s.calls[i].id, s.calls[i - 1].id));
	}
	lmd_tool_stream_free(&s);
}

static void free_result(struct result *r)
{
	free(r->content);
	for (int i = 0; i < r->n && i < 4; i++) {
		free(r->name[i]);
		free(r->args[i]);
	}
}

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
	for (size_t step = 1; step <= strlen(text); step++) {
		struct result part;
		run(kind, text, step, &part);
		int same = !strcmp(part.content, whole.content) && part.n == whole.n;
		for (int i = 0; same && i < part.n && i < 4; i++)
			same = !strcmp(part.name[i], whole.name[i]) && !strcmp(part.args[i], whole.args[i]);
		if (!same) {
			fprintf(stderr, "answer '%s' fed %zu bytes at a time: content '%s', %d calls\n", text, step,
				part.content, part.n);
			CHECK(0);
		}
		free_result(&part);
	}
	free_result(&whole);
}

#define ADD "{\"a\": 3, \"b\": 5}"

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
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		check(q, bad[i], bad[i], 0);
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
	check(k, "{\"name\": \"add\", \"parameters\": {\"a\": 3, \"b\": 5}} and more",
	      "{\"name\": \"add\", \"parameters\": {\"a\": 3, \"b\": 5}} and more", 0);
	check(k, "", "", 0);
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

	/* the OpenAI shapes */
	struct lmd_tool_call c = {.id = "call_x", .name = "add", .arguments = ADD};
	json_t *a = lmd_tool_calls_json(&c, 1);
	char *s = json_dumps(a, JSON_COMPACT);
	CHECK_EQ_STR(s, "[{\"id\":\"call_x\",\"type\":\"function\",\"function\":{\"name\":\"add\",\"arguments\":"
			"\"{\\\"a\\\": 3, \\\"b\\\": 5}\"}}]");
	free(s);
	json_decref(a);
	a = lmd_tool_call_deltas(&c, 2);
	s = json_dumps(a, JSON_COMPACT);
	CHECK_EQ_STR(s, "[[{\"index\":2,\"id\":\"call_x\",\"type\":\"function\",\"function\":{\"name\":\"add\","
			"\"arguments\":\"\"}}],[{\"index\":2,\"function\":{\"arguments\":\"{\\\"a\\\": 3, \\\"b\\\": 5}\"}}]]");
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
