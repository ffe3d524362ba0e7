/*
 * Chat templates with tools against the oracle: t/golden/chat/NAME.TEMPLATE.txt (or .err) are what
 * each family's own Hugging Face Jinja template renders for NAME.json (t/golden/make-chat-goldens.py
 * made them with Jinja); common/chat.c must render the same bytes, or refuse where Jinja refused.
 * Also: pyjson.c's floats against Python's json.dumps (t/golden/floats.txt), the InternLM2 tool
 * format (LMDeploy's, that template has none), and the text that forces a tool call.
 */
#include <glob.h>
#include <stdlib.h>
#include <string.h>

#include "tok/chat.h"
#include "file.h"
#include "tok/pyjson.h"
#include "unit.h"

static const struct {
	const char *name, *bos, *eos;  /* as the golden script took them from tokenizer_config.json */
} families[] = {
	{"qwen", "", "<|im_end|>"},
	{"qwen2", "", "<|im_end|>"},
	{"llama3_1", "<|begin_of_text|>", "<|eot_id|>"},
	{"llama3", "<|begin_of_text|>", "<|end_of_text|>"},
	{"internlm2", "<s>", "</s>"},
};

static int load(struct lmd_chat_template *ct, const char *name)
{
	struct lmd_err err = {0};
	if (lmd_chat_template_load(ct, name, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++)
		if (!strcmp(families[i].name, name)) {
			ct->bos = strdup(families[i].bos);
			ct->eos = strdup(families[i].eos);
		}
	return 0;
}

static void check_golden(const char *json, const char *golden)
{
	const char *dot = strrchr(golden, '.');
	const char *tdot = dot - 1;
	while (tdot > golden && *tdot != '.')
		tdot--;
	char name[64];
	snprintf(name, sizeof(name), "%.*s", (int)(dot - tdot - 1), tdot + 1);
	int want_err = !strcmp(dot, ".err");
	struct lmd_chat_template ct;
	struct lmd_err err = {0};
	CHECK_EQ_INT(load(&ct, name), 0);
	char *want = NULL, *got = NULL;
	size_t wn = 0, gn = 0;
	CHECK_EQ_INT(lmd_read_file(golden, &want, &wn, &err), 0);
	int rc = lmd_chat_render_file(&ct, json, 1, &got, &gn, &err);
	if (want_err) {
		if (rc != LMD_EINVAL) {
			fprintf(stderr, "%s: rendered, but the Jinja template refused: %s", golden, want ? want : "");
			CHECK(0);
		}
	} else if (rc || gn != wn || memcmp(got, want, wn)) {
		fprintf(stderr, "%s: differs (rc %d: %s)\n--- got\n%s\n--- want\n%s\n", golden, rc, err.msg, got ? got : "",
			want ? want : "");
		CHECK(0);
	}
	free(want);
	free(got);
	lmd_chat_template_free(&ct);
}

static void check_goldens(void)
{
	glob_t g;
	int cases = 0, files = 0;
	if (glob("t/golden/chat/*.json", 0, NULL, &g)) {
		fprintf(stderr, "no t/golden/chat/*.json (run from the repository root)\n");
		CHECK(0);
		return;
	}
	for (size_t i = 0; i < g.gl_pathc; i++) {
		char pat[4200];
		snprintf(pat, sizeof(pat), "%.*s.*.[te][xr][tr]", (int)(strlen(g.gl_pathv[i]) - 5), g.gl_pathv[i]);
		glob_t o;
		if (!glob(pat, 0, NULL, &o)) {
			for (size_t k = 0; k < o.gl_pathc; k++, files++)
				check_golden(g.gl_pathv[i], o.gl_pathv[k]);
			globfree(&o);
		}
		cases++;
	}
	globfree(&g);
	CHECK(cases >= 10 && files >= 30);
}

static void check_floats(void)
{
	FILE *f = fopen("t/golden/floats.txt", "r");
	CHECK(f != NULL);
	if (!f)
		return;
	char in[64], want[64];
	int n = 0, bad = 0;
	while (fscanf(f, "%63s %63s", in, want) == 2) {
		json_t *r = json_real(strtod(in, NULL));
		char *got = lmd_pyjson_dumps(r, -1);
		if (!got || strcmp(got, want)) {
			if (bad++ < 5)
				fprintf(stderr, "float %s: got %s, want %s\n", in, got ? got : "(null)", want);
		}
		free(got);
		json_decref(r);
		n++;
	}
	fclose(f);
	CHECK(n > 2000);
	CHECK_EQ_INT(bad, 0);
}

/* InternLM2: LMDeploy's format (lmdeploy/model.py, InternLM2Chat7B.messages2prompt): the tools as
 * json.dumps of their function objects in a system message named <|plugin|> after the system
 * message, each call as json.dumps({name, parameters}) after the content, results as environment. */
static void check_internlm2_tools(void)
{
	struct lmd_chat_template ct;
	struct lmd_err err = {0};
	if (load(&ct, "internlm2")) {
		CHECK(0);
		return;
	}
	const char *tools = "[{\"type\": \"function\", \"function\": {\"name\": \"add\", \"description\": \"\u00e9\", "
			    "\"parameters\": {\"type\": \"object\"}}}]";
	const char *calls = "[{\"id\": \"c0\", \"type\": \"function\", \"function\": {\"name\": \"add\", "
			    "\"arguments\": \"{\\\"a\\\":3,\\\"b\\\":5.0}\"}}]";
	const struct lmd_chat_msg m[] = {
		{.role = "system", .content = "S"},
		{.role = "user", .content = "3+5?"},
		{.role = "assistant", .content = "Sure.", .tool_calls = calls},
		{.role = "tool", .content = "8"},
	};
	char *out = NULL;
	size_t len = 0;
	CHECK_EQ_INT(lmd_chat_render(&ct, m, 4, 1, tools, &out, &len, &err), 0);
	CHECK_EQ_STR(out, "<s><|im_start|>system\nS<|im_end|>\n<|im_start|>system name=<|plugin|>\n"
			  "[{\"name\": \"add\", \"description\": \"\u00e9\", \"parameters\": {\"type\": \"object\"}}]<|im_end|>\n"
			  "<|im_start|>user\n3+5?<|im_end|>\n<|im_start|>assistant\nSure.<|action_start|><|plugin|>\n"
			  "{\"name\": \"add\", \"parameters\": {\"a\": 3, \"b\": 5.0}}<|action_end|><|im_end|>\n"
			  "<|im_start|>environment\n8<|im_end|>\n<|im_start|>assistant\n");
	free(out);
	/* no tools, or an empty list: no plugin message */
	CHECK_EQ_INT(lmd_chat_render(&ct, m + 1, 1, 1, "[]", &out, &len, &err), 0);
	CHECK_EQ_STR(out, "<s><|im_start|>user\n3+5?<|im_end|>\n<|im_start|>assistant\n");
	free(out);
	/* bad tools or calls are the request's fault */
	CHECK_EQ_INT(lmd_chat_render(&ct, m, 1, 1, "{}", &out, &len, &err), LMD_EINVAL);
	const struct lmd_chat_msg bad[] = {{.role = "assistant", .content = "", .tool_calls = "[{\"function\": {}}]"}};
	CHECK_EQ_INT(lmd_chat_render(&ct, bad, 1, 1, NULL, &out, &len, &err), LMD_EINVAL);
	CHECK(strstr(err.msg, "no function name") != NULL);
	lmd_chat_template_free(&ct);
}

static void check_prefix(void)
{
	const struct {
		const char *tmpl, *name, *want;
	} cases[] = {
		{"qwen", NULL, "<tool_call>\n{\"name\": \""},
		{"qwen", "add", "<tool_call>\n{\"name\": \"add\", \"arguments\": "},
		{"internlm2", "add", "<|action_start|><|plugin|>\n{\"name\": \"add\", \"parameters\": "},
		{"llama3_1", NULL, "{\"name\": \""},
		{"llama3_1", "mul", "{\"name\": \"mul\", \"parameters\": "},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct lmd_chat_template ct;
		if (load(&ct, cases[i].tmpl)) {
			CHECK(0);
			continue;
		}
		char *p = lmd_chat_tool_call_prefix(&ct, cases[i].name);
		CHECK_EQ_STR(p, cases[i].want);
		free(p);
		lmd_chat_template_free(&ct);
	}
	struct lmd_chat_template ct;
	if (!load(&ct, "qwen2")) {
		CHECK(lmd_chat_tool_call_prefix(&ct, NULL) == NULL);
		lmd_chat_template_free(&ct);
	}
}

int main(void)
{
	check_goldens();
	check_floats();
	check_internlm2_tools();
	check_prefix();
	return UNIT_DONE();
}
