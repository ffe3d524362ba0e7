/*
 * Tokenizer and chat-template tests against outside oracles:
 *   - ../shared/reference/tokenizers/FAMILY.jsonl (each family's own library: ids of texts);
 *   - llama.cpp's vectors in ../shared/tokenizers/testvectors/llama.cpp/;
 *   - chat prompts written by hand from each family's published Jinja template.
 * Parts that need ../shared are skipped when it is absent (lmd-tiny is also looked for in
 * share/models/lmd-tiny). The parsers also get corrupt inputs, which must fail cleanly.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tok/chat.h"
#include "file.h"
#include "hftok.h"
#include "spm.h"
#include "tiktoken.h"
#include "tok/tokenizer.h"
#include "unit.h"

static char shared[4096];

static int find_shared(void)
{
	const char *env = getenv("LMD_SHARED");
	const char *cands[] = {env, "../shared", "../../shared"};
	for (int i = 0; i < 3; i++)
		if (cands[i] && *cands[i]) {
			char p[4200];
			snprintf(p, sizeof(p), "%s/reference/tokenizers", cands[i]);
			if (lmd_is_dir(p)) {
				snprintf(shared, sizeof(shared), "%s", cands[i]);
				return 1;
			}
		}
	return 0;
}

static uint32_t rng = 12345;
static uint32_t next_rand(void)
{
	rng = rng * 1103515245u + 12345u;
	return rng >> 8;
}

/* Streaming decode of ids equals one-shot decode. */
static void check_stream(const struct lmd_tokenizer *t, const int *ids, size_t n, int flags)
{
	struct lmd_err err = {0};
	char *one = NULL;
	size_t len = 0;
	CHECK_EQ_INT(lmd_tokenizer_decode(t, ids, n, flags, &one, &len, &err), 0);
	struct lmd_tokdec d;
	lmd_tokdec_init(&d, t, flags);
	char *acc = malloc(len + 16);
	size_t an = 0;
	int ok = 1;
	const char *s;
	size_t sl;
	for (size_t i = 0; i < n && ok; i++) {
		CHECK_EQ_INT(lmd_tokdec_push(&d, ids[i], &s, &sl, &err), 0);
		/* every piece of streamed text is valid UTF-8 on its own */
		for (size_t k = 0; k < sl;) {
			int c = 0;
			unsigned char b = (unsigned char)s[k];
			c = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 0;
			if (!c || k + (size_t)c > sl) {
				ok = 0;
				break;
			}
			k += (size_t)c;
		}
		if (an + sl > len) {
			ok = 0;
			break;
		}
		memcpy(acc + an, s, sl);
		an += sl;
	}
	CHECK(ok);
	if (ok) {
		CHECK_EQ_INT(lmd_tokdec_flush(&d, &s, &sl, &err), 0);
		CHECK(an + sl == len);
		if (an + sl == len) {
			memcpy(acc + an, s, sl);
			CHECK(!memcmp(acc, one, len));
		}
	}
	lmd_tokdec_free(&d);
	free(acc);
	free(one);
}

/* Every line of reference/tokenizers/NAME.jsonl: encode == ids, decode(ids) == text, streaming. */
static void check_reference(const char *name, const char *dir)
{
	char path[8300];
	struct lmd_tokenizer t = {0};
	struct lmd_err err = {0};
	snprintf(path, sizeof(path), "%s/reference/tokenizers/%s.jsonl", shared, name);
	int rc = lmd_tokenizer_open(&t, dir, &err);
	CHECK_EQ_INT(rc, 0);
	if (rc) {
		fprintf(stderr, "%s: %s\n", name, err.msg);
		return;
	}
	FILE *f = fopen(path, "r");
	CHECK(f != NULL);
	char *line = NULL;
	size_t cap = 0;
	int lines = 0, bad = 0;
	while (f && getline(&line, &cap, f) > 0) {
		json_error_t je;
		json_t *j = json_loads(line, JSON_ALLOW_NUL, &je), *jt = json_object_get(j, "text"), *ji = json_object_get(j, "ids");
		CHECK(json_is_string(jt) && json_is_array(ji));
		if (!json_is_string(jt) || !json_is_array(ji)) {
			json_decref(j);
			continue;
		}
		lines++;
		int *ids = NULL;
		size_t n = 0;
		CHECK_EQ_INT(lmd_tokenizer_encode(&t, json_string_value(jt), json_string_length(jt), 0, &ids, &n, &err), 0);
		int same = n == json_array_size(ji);
		for (size_t i = 0; same && i < n; i++)
			same = ids[i] == json_integer_value(json_array_get(ji, i));
		if (!same) {
			bad++;
			fprintf(stderr, "%s: encoding of '%s' differs from the reference\n", name, json_string_value(jt));
		}
		char *text = NULL;
		size_t len = 0;
		CHECK_EQ_INT(lmd_tokenizer_decode(&t, ids, n, 0, &text, &len, &err), 0);
		if (len != json_string_length(jt) || memcmp(text, json_string_value(jt), len)) {
			bad++;
			fprintf(stderr, "%s: decode(encode('%s')) == '%s'\n", name, json_string_value(jt), text);
		}
		check_stream(&t, ids, n, 0);
		check_stream(&t, ids, n, LMD_DECODE_SKIP_SPECIAL);
		free(text);
		free(ids);
		json_decref(j);
	}
	free(line);
	if (f)
		fclose(f);
	CHECK(lines >= 40);
	CHECK_EQ_INT(bad, 0);

	/* random id sequences (byte pieces and specials included): streaming == one-shot */
	for (int k = 0; k < 300; k++) {
		int ids[12];
		size_t n = next_rand() % 12;
		for (size_t i = 0; i < n; i++) {
			uint32_t r = next_rand();
			ids[i] = (r & 3) == 0 ? (int)(3 + r % 256) : (int)(next_rand() % (uint32_t)t.n_vocab);
		}
		check_stream(&t, ids, n, 0);
		check_stream(&t, ids, n, LMD_DECODE_SKIP_SPECIAL);
	}

	/* invalid UTF-8 is tokenized (byte fallback / byte level) without harm */
	static const char junk[] = "ok \xff\xfe \xc3 \xe4\xbd \xed\xa0\x80 \xf4\x90\x80\x80 \x80\x80 end\xc3";
	int *ids = NULL;
	size_t n = 0;
	CHECK_EQ_INT(lmd_tokenizer_encode(&t, junk, sizeof(junk) - 1, 1, &ids, &n, &err), 0);
	CHECK(n > 4);
	for (size_t i = 0; i < n; i++)
		CHECK(ids[i] >= 0 && ids[i] < t.n_vocab);
	check_stream(&t, ids, n, 0);
	free(ids);
	lmd_tokenizer_close(&t);
}

/* llama.cpp's vectors: strings joined by "\n__ggml_vocab_test__\n", line i of .out holds the ids. */
static void check_llamacpp(const char *name, const char *dir)
{
	char p[8300];
	char *inp = NULL, *out = NULL;
	size_t ni = 0, no = 0;
	struct lmd_err err = {0};
	struct lmd_tokenizer t = {0};
	snprintf(p, sizeof(p), "%s/tokenizers/testvectors/llama.cpp/ggml-vocab-%s.gguf.inp", shared, name);
	CHECK_EQ_INT(lmd_read_file(p, &inp, &ni, &err), 0);
	snprintf(p, sizeof(p), "%s/tokenizers/testvectors/llama.cpp/ggml-vocab-%s.gguf.out", shared, name);
	CHECK_EQ_INT(lmd_read_file(p, &out, &no, &err), 0);
	CHECK_EQ_INT(lmd_tokenizer_open(&t, dir, &err), 0);
	if (!inp || !out || !t.impl)
		goto done;
	static const char sep[] = "\n__ggml_vocab_test__\n";
	char *s = inp, *o = out;
	int cases = 0;
	while (*s) {
		char *e = strstr(s, sep);
		size_t len = e ? (size_t)(e - s) : strlen(s);
		char *eol = strchr(o, '\n');
		if (!eol)
			break;
		*eol = 0;
		int *ids = NULL;
		size_t n = 0;
		CHECK_EQ_INT(lmd_tokenizer_encode(&t, s, len, 0, &ids, &n, &err), 0);
		char got[8192];
		size_t gl = 0;
		got[0] = 0;
		for (size_t i = 0; i < n && gl < sizeof(got) - 16; i++)
			gl += (size_t)snprintf(got + gl, sizeof(got) - gl, i ? " %d" : "%d", ids[i]);
		/* the .out lines may carry a leading space */
		const char *want = o;
		while (*want == ' ')
			want++;
		if (strcmp(got, want)) {
			fprintf(stderr, "llama.cpp %s case %d: got '%s', want '%s'\n", name, cases, got, want);
			CHECK(0);
		}
		free(ids);
		cases++;
		o = eol + 1;
		if (!e)
			break;
		s = e + sizeof(sep) - 1;
	}
	CHECK_EQ_INT(cases, 46);
done:
	lmd_tokenizer_close(&t);
	free(inp);
	free(out);
}

// --- parsers on corrupt input

static void check_corrupt(void)
{
	struct lmd_err err = {0};
	struct lmd_spm_model sm;
	static const unsigned char trunc[] = {0x0a, 0x10, 0x0a, 0x05, 'h', 'e'};
	CHECK_EQ_INT(lmd_spm_parse(&sm, trunc, sizeof(trunc), &err), LMD_EFORMAT);
	CHECK_EQ_INT(lmd_spm_parse(&sm, "", 0, &err), LMD_EFORMAT);
	static const unsigned char badvar[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
	CHECK_EQ_INT(lmd_spm_parse(&sm, badvar, sizeof(badvar), &err), LMD_EFORMAT);
	/* one valid piece "a" (score 0, NORMAL) */
	static const unsigned char one[] = {0x0a, 0x03, 0x0a, 0x01, 'a'};
	CHECK_EQ_INT(lmd_spm_parse(&sm, one, sizeof(one), &err), 0);
	CHECK_EQ_INT(sm.n, 1);
	CHECK_EQ_STR(sm.pieces[0].piece, "a");
	CHECK_EQ_INT(sm.model_type, LMD_SPM_UNIGRAM);
	lmd_spm_free(&sm);

	struct lmd_hftok h;
	CHECK_EQ_INT(lmd_hftok_parse(&h, "{", 1, &err), LMD_EFORMAT);
	const char *nomodel = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}";
	CHECK_EQ_INT(lmd_hftok_parse(&h, nomodel, strlen(nomodel), &err), LMD_EFORMAT);
	const char *badmerge = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a\"]}}";
	CHECK_EQ_INT(lmd_hftok_parse(&h, badmerge, strlen(badmerge), &err), LMD_EFORMAT);
	const char *ok = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [[\"a\", \"b\"]]}}";
	CHECK_EQ_INT(lmd_hftok_parse(&h, ok, strlen(ok), &err), 0);
	CHECK_EQ_INT(h.n_vocab, 3);
	CHECK_EQ_INT(h.n_merges, 1);
	lmd_hftok_free(&h);

	struct lmd_tiktoken tk;
	const char *tgood = "YQ== 0\nYg== 1\nYWI= 2\n";
	CHECK_EQ_INT(lmd_tiktoken_parse(&tk, tgood, strlen(tgood), &err), 0);
	CHECK_EQ_INT(tk.n, 3);
	CHECK(tk.off[3] - tk.off[2] == 2 && !memcmp(tk.bytes + tk.off[2], "ab", 2));
	lmd_tiktoken_free(&tk);
	const char *tgap = "YQ== 0\nYg== 2\n";
	CHECK_EQ_INT(lmd_tiktoken_parse(&tk, tgap, strlen(tgap), &err), LMD_EFORMAT);
	const char *tb64 = "Y!== 0\n";
	CHECK_EQ_INT(lmd_tiktoken_parse(&tk, tb64, strlen(tb64), &err), LMD_EFORMAT);

	/* a directory with a corrupt tokenizer.model: the error names the file */
	char dir[] = "/tmp/lmd-tok-XXXXXX";
	if (mkdtemp(dir)) {
		char p[64];
		snprintf(p, sizeof(p), "%s/tokenizer.model", dir);
		CHECK_EQ_INT(lmd_write_atomic(p, "\x0a\x7f garbage", 10, &err), 0);
		struct lmd_tokenizer t = {0};
		CHECK_EQ_INT(lmd_tokenizer_open(&t, dir, &err), LMD_EFORMAT);
		CHECK(strstr(err.msg, "tokenizer.model") != NULL);
		lmd_tokenizer_close(&t);
		unlink(p);
		CHECK_EQ_INT(lmd_tokenizer_open(&t, dir, &err), LMD_EIO);
		rmdir(dir);
	}
}

// --- chat templates: golden prompts written from the Jinja templates

static void check_template(const char *name, const char *bos, const char *eos, const struct lmd_chat_msg *m, int n,
			   const char *tools, const char *want)
{
	struct lmd_chat_template ct;
	struct lmd_err err = {0};
	int rc = lmd_chat_template_load(&ct, name, &err);
	CHECK_EQ_INT(rc, 0);
	if (rc) {
		fprintf(stderr, "%s\n", err.msg);
		return;
	}
	ct.bos = strdup(bos);
	ct.eos = strdup(eos);
	char *out = NULL;
	size_t len = 0;
	CHECK_EQ_INT(lmd_chat_render(&ct, m, n, 1, tools, &out, &len, &err), 0);
	if (out && strcmp(out, want)) {
		fprintf(stderr, "template %s:\n got  '%s'\n want '%s'\n", name, out, want);
		CHECK(0);
	}
	free(out);
	lmd_chat_template_free(&ct);
}

static void check_templates(void)
{
	const struct lmd_chat_msg conv[] = {
		{.role = "system", .content = "  You are terse. "}, {.role = "user", .content = " Hi\n"},
		{.role = "assistant", .content = "Hello. "}, {.role = "user", .content = "2+2?"},
	};
	const struct lmd_chat_msg one[] = {{.role = "user", .content = "Hello!"}};

	/* internlm2-chat-7b: {{ bos_token }} then '<|im_start|>' + role + '\n' + content + '<|im_end|>\n' */
	check_template("internlm2", "<s>", "</s>", conv, 4, NULL,
		       "<s><|im_start|>system\n  You are terse. <|im_end|>\n<|im_start|>user\n Hi\n<|im_end|>\n"
		       "<|im_start|>assistant\nHello. <|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
	check_template("internlm2", "<s>", "</s>", one, 1, NULL,
		       "<s><|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n");

	/* Llama-2-7b-chat-hf: system merged into the first user turn, content.strip() */
	check_template("llama2", "<s>", "</s>", conv, 4, NULL,
		       "<s>[INST] <<SYS>>\n  You are terse. \n<</SYS>>\n\n Hi [/INST] Hello. </s><s>[INST] 2+2? [/INST]");
	check_template("llama2", "<s>", "</s>", one, 1, NULL, "<s>[INST] Hello! [/INST]");

	/* Meta-Llama-3-8B-Instruct: bos, then header + content | trim + <|eot_id|>, then the assistant header */
	check_template("llama3", "<|begin_of_text|>", "<|end_of_text|>", conv, 4, NULL,
		       "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
		       "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
		       "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
		       "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
		       "<|start_header_id|>assistant<|end_header_id|>\n\n");

	/* Llama-3.2-3B-Instruct: the system block is always there, with the dates */
	check_template("llama3_1", "<|begin_of_text|>", "<|eot_id|>", one, 1, NULL,
		       "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
		       "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
		       "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
		       "<|start_header_id|>assistant<|end_header_id|>\n\n");
	check_template("llama3_1", "<|begin_of_text|>", "<|eot_id|>", conv, 2, NULL,
		       "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
		       "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are terse.<|eot_id|>"
		       "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
		       "<|start_header_id|>assistant<|end_header_id|>\n\n");

	/* Qwen2.5-7B-Instruct: default system prompt; tools appended to the system prompt */
	check_template("qwen", "", "", one, 1, NULL,
		       "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
		       "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n");
	check_template("qwen", "", "", conv, 4, NULL,
		       "<|im_start|>system\n  You are terse. <|im_end|>\n<|im_start|>user\n Hi\n<|im_end|>\n"
		       "<|im_start|>assistant\nHello. <|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
	const struct lmd_chat_msg tcall[] = {
		{.role = "user", .content = "Weather?"},
		{.role = "assistant", .content = "<tool_call>\n{\"name\": \"w\", \"arguments\": {}}\n</tool_call>"},
		{.role = "tool", .content = "21C"}, {.role = "tool", .content = "sunny"},
	};
	check_template("qwen", "", "", tcall, 4, "[{\"type\": \"function\", \"function\": {\"name\": \"w\"}}]",
		       "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n"
		       "You may call one or more functions to assist with the user query.\n\n"
		       "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
		       "{\"type\": \"function\", \"function\": {\"name\": \"w\"}}\n</tools>\n\n"
		       "For each function call, return a json object with function name and arguments within "
		       "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
		       "<args-json-object>}\n</tool_call><|im_end|>\n"
		       "<|im_start|>user\nWeather?<|im_end|>\n"
		       "<|im_start|>assistant\n<tool_call>\n{\"name\": \"w\", \"arguments\": {}}\n</tool_call><|im_end|>\n"
		       "<|im_start|>user\n<tool_response>\n21C\n</tool_response>\n<tool_response>\nsunny\n</tool_response>"
		       "<|im_end|>\n<|im_start|>assistant\n");

	/* InternLM2 tools as LMDeploy puts them: a system message named <|plugin|> with json.dumps(tools) */
	const struct lmd_chat_msg isys[] = {
		{.role = "system", .content = "S"}, {.role = "user", .content = "Q"}, {.role = "environment", .content = "R"},
	};
	check_template("internlm2", "<s>", "</s>", isys, 3,
		       "[{\"type\": \"function\", \"function\": {\"parameters\": {}, \"name\": \"w\"}}]",
		       "<s><|im_start|>system\nS<|im_end|>\n<|im_start|>system name=<|plugin|>\n"
		       "[{\"name\": \"w\", \"description\": null, \"parameters\": {}}]<|im_end|>\n"
		       "<|im_start|>user\nQ<|im_end|>\n<|im_start|>environment\nR<|im_end|>\n<|im_start|>assistant\n");

	/* Qwen2-Instruct: "You are a helpful assistant." */
	check_template("qwen2", "", "", one, 1, NULL,
		       "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
		       "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n");

	/* base: the contents as they are */
	check_template("base", "<s>", "</s>", one, 1, NULL, "Hello!");
}

/* Automatic choice from tokenizer_config.json, never from the path. */
static void check_auto(void)
{
	const struct {
		const char *dir, *want;
	} cases[] = {
		{"tokenizers/internlm2", "internlm2"}, {"tokenizers/qwen2", "qwen"}, {"tokenizers/llama3", "llama3_1"},
		{"tokenizers/llama2", "base"}, {"models/lmd-tiny", "base"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char dir[8300];
		struct lmd_tokenizer t = {0};
		struct lmd_err err = {0};
		snprintf(dir, sizeof(dir), "%s/%s", shared, cases[i].dir);
		CHECK_EQ_INT(lmd_tokenizer_open(&t, dir, &err), 0);
		CHECK_EQ_STR(lmd_chat_template_auto(&t), cases[i].want);
		lmd_tokenizer_close(&t);
	}
	/* special ids by name, and BOS/EOS */
	char dir[8300];
	struct lmd_tokenizer t = {0};
	struct lmd_err err = {0};
	snprintf(dir, sizeof(dir), "%s/tokenizers/internlm2", shared);
	if (!lmd_tokenizer_open(&t, dir, &err)) {
		CHECK_EQ_INT(lmd_tokenizer_find(&t, "<|im_end|>"), 92542);
		CHECK_EQ_INT(lmd_tokenizer_find(&t, "<|plugin|>"), 92538);
		CHECK_EQ_STR(lmd_tokenizer_piece(&t, 92543), "<|im_start|>");
		CHECK_EQ_INT(t.bos, 1);
		CHECK_EQ_INT(t.eos, 2);
		lmd_tokenizer_close(&t);
	}
	snprintf(dir, sizeof(dir), "%s/tokenizers/qwen2", shared);
	if (!lmd_tokenizer_open(&t, dir, &err)) {
		CHECK_EQ_INT(t.bos, -1);
		CHECK_EQ_INT(t.eos, 151645);
		CHECK_EQ_INT(t.n_vocab, 151665);
		CHECK_EQ_STR(lmd_tokenizer_piece(&t, 21927), "\xC4\xA0Hello");
		lmd_tokenizer_close(&t);
	}
	snprintf(dir, sizeof(dir), "%s/tokenizers/llama3", shared);
	if (!lmd_tokenizer_open(&t, dir, &err)) {
		CHECK_EQ_INT(t.bos, 128000);
		CHECK_EQ_INT(t.eos, 128009);
		CHECK_EQ_INT(t.n_vocab, 128256);
		CHECK_EQ_INT(lmd_tokenizer_find(&t, "<|start_header_id|>"), 128006);
		lmd_tokenizer_close(&t);
	}
}

int main(void)
{
	check_corrupt();
	check_templates();
	if (!find_shared()) {
		fprintf(stderr, "../shared is absent: reference checks skipped\n");
		return UNIT_DONE();
	}
	char d[5][8300];
	snprintf(d[0], sizeof(d[0]), "%s/tokenizers/llama2", shared);
	snprintf(d[1], sizeof(d[1]), "%s/tokenizers/internlm2", shared);
	snprintf(d[2], sizeof(d[2]), "%s/tokenizers/qwen2", shared);
	snprintf(d[3], sizeof(d[3]), "%s/tokenizers/llama3", shared);
	if (lmd_is_dir("share/models/lmd-tiny"))
		snprintf(d[4], sizeof(d[4]), "share/models/lmd-tiny");
	else
		snprintf(d[4], sizeof(d[4]), "%s/models/lmd-tiny", shared);
	check_reference("llama2", d[0]);
	check_reference("internlm2", d[1]);
	check_reference("qwen2", d[2]);
	check_reference("llama3", d[3]);
	check_reference("lmd-tiny", d[4]);
	/* the same families through their tokenizer.json alone */
	const char *json_only[][2] = {{"llama2", d[0]}, {"lmd-tiny", d[4]}};
	for (int i = 0; i < 2; i++) {
		char tmp[] = "/tmp/lmd-tokjson-XXXXXX", src[8400], dst[64];
		struct lmd_err err = {0};
		if (!mkdtemp(tmp))
			continue;
		snprintf(src, sizeof(src), "%s/tokenizer.json", json_only[i][1]);
		snprintf(dst, sizeof(dst), "%s/tokenizer.json", tmp);
		CHECK_EQ_INT(lmd_copy_file(src, dst, &err), 0);
		check_reference(json_only[i][0], tmp);
		unlink(dst);
		rmdir(tmp);
	}
	check_llamacpp("llama-spm", d[0]);
	check_llamacpp("llama-bpe", d[3]);
	check_llamacpp("qwen2", d[2]);
	check_auto();
	return UNIT_DONE();
}
