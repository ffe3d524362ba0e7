/* The OpenAI client's pure parts: SSE split anywhere, error objects, URLs, bodies, model lists, token counts. */
#include <stdlib.h>

#include "client/oaiclient.h"
#include "unit.h"

struct got {
	char all[4096];  /* "event|data\n" per event */
	int n;
};

static int on_event(void *ctx, const char *event, const char *data, size_t len)
{
	struct got *g = ctx;
	size_t at = strlen(g->all);
	snprintf(g->all + at, sizeof(g->all) - at, "%s|%.*s\n", event, (int)len, data);
	g->n++;
	return 0;
}

/* Feed s in pieces cut at the given points; the events seen. */
static void feed(const char *s, const size_t *cuts, int ncut, struct got *g)
{
	struct lmd_sse p = {.on_event = on_event, .ctx = g};
	struct lmd_err err = {0};
	size_t at = 0, n = strlen(s);
	memset(g, 0, sizeof(*g));
	for (int i = 0; i <= ncut; i++) {
		size_t to = i < ncut ? cuts[i] : n;
		CHECK_EQ_INT(lmd_sse_feed(&p, s + at, to - at, &err), LMD_OK);
		at = to;
	}
	lmd_sse_free(&p);
}

static void test_sse(void)
{
	/* a BOM, CRLF, CR and LF line ends, a comment, a multi-line data field, an event type, fields without space */
	static const char stream[] =
		"\xEF\xBB\xBF: ping\r\n\r\ndata: {\"a\":\"\xC3\xA9\"}\r\n\r\ndata:x\rdata:  y\r\r"
		"event: error\ndata: {\"error\":{}}\nid: 7\nretry: 10\n\n\n\ndata\n\ndata: [DONE]\n\ndata: unfinished";
	static const char want[] = "message|{\"a\":\"\xC3\xA9\"}\nmessage|x\n y\nerror|{\"error\":{}}\nmessage|\n"
				   "message|[DONE]\n";
	struct got one, g;
	feed(stream, NULL, 0, &one);
	CHECK_EQ_STR(one.all, want);
	CHECK_EQ_INT(one.n, 5);
	size_t n = strlen(stream);
	for (size_t i = 0; i <= n; i++) {  /* every cut in two, and in three */
		feed(stream, &i, 1, &g);
		CHECK_EQ_STR(g.all, want);
		for (size_t j = i; j <= n; j += 7) {
			size_t cuts[2] = {i, j};
			feed(stream, cuts, 2, &g);
			CHECK_EQ_STR(g.all, want);
		}
	}
	size_t every[sizeof(stream)];  /* a byte at a time */
	for (size_t i = 0; i < n; i++)
		every[i] = i + 1;
	feed(stream, every, (int)n - 1, &g);
	CHECK_EQ_STR(g.all, want);
}

static void test_answers(void)
{
	char out[256], *s;
	const char *obj = "{\"error\":{\"message\":\"bad key\",\"type\":\"x\",\"param\":null,\"code\":null}}";
	lmd_oai_error_text(obj, strlen(obj), out, sizeof(out));
	CHECK_EQ_STR(out, "bad key");
	const char *flat = "{\"object\":\"error\",\"message\":\"too long\",\"type\":\"BadRequestError\",\"code\":400}";
	lmd_oai_error_text(flat, strlen(flat), out, sizeof(out));
	CHECK_EQ_STR(out, "too long");
	lmd_oai_error_text("Not\nFound", 9, out, sizeof(out));
	CHECK_EQ_STR(out, "Not Found");
	lmd_oai_error_text("", 0, out, sizeof(out));
	CHECK_EQ_STR(out, "(empty answer)");

	const char *bases[] = {"http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/"};
	for (int i = 0; i < 4; i++) {
		s = lmd_oai_url(bases[i], "/v1/models");
		CHECK_EQ_STR(s, "http://h:1/v1/models");
		free(s);
	}

	const char *models = "{\"object\":\"list\",\"data\":[{\"id\":\"m1\",\"object\":\"model\"},{\"id\":\"m2\"}]}";
	CHECK_EQ_INT(lmd_oai_parse_models(models, strlen(models), out, sizeof(out), NULL), LMD_OK);
	CHECK_EQ_STR(out, "m1");
	CHECK_EQ_INT(lmd_oai_parse_models("{\"data\":[]}", 11, out, sizeof(out), NULL), LMD_EFORMAT);

	CHECK_EQ_INT(lmd_oai_token_count("{\"input_ids\":[1,2,3],\"length\":3}", 32), 3);
	CHECK_EQ_INT(lmd_oai_token_count("{\"count\":4,\"max_model_len\":9,\"tokens\":[1,2,3,4]}", 48), 4);
	CHECK_EQ_INT(lmd_oai_token_count("{\"tokens\":[1,2]}", 16), 2);
	CHECK_EQ_INT(lmd_oai_token_count("{}", 2), -1);

	json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "hi"), *params = json_pack("{s:i}", "max_tokens", 5);
	s = lmd_oai_chat_body("m", msgs, params, NULL);
	CHECK_EQ_STR(s, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true,"
			"\"stream_options\":{\"include_usage\":true},\"max_tokens\":5}");
	free(s);
	s = lmd_oai_completion_body(NULL, "once", NULL, NULL);
	CHECK_EQ_STR(s, "{\"prompt\":\"once\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
	free(s);
	CHECK(lmd_oai_completion_body("m", "\xff not UTF-8", NULL, NULL) == NULL);
	json_decref(msgs);
	json_decref(params);
}

static int on_piece(struct lmd_oai_call *c, const struct lmd_oai_piece *p, void *ctx)
{
	(void)c;
	struct got *g = ctx;
	if (p->has_text && g->n + p->len < sizeof(g->all)) {
		memcpy(g->all + g->n, p->text, p->len);
		g->n += (int)p->len;
	}
	return 0;
}

/* A token that decodes to a NUL byte arrives as "\u0000": text, not an error (vLLM sends it so too). */
static void test_nul_text(void)
{
	struct got g = {0};
	struct lmd_oai_call c = {.on_piece = on_piece, .ctx = &g};
	struct lmd_err err = {0};
	CHECK_EQ_INT(lmd_oai_call_init(&c, "http://127.0.0.1:1/v1/completions", NULL, "{}", &err), LMD_OK);
	const char *s = "data: {\"choices\":[{\"index\":0,\"text\":\"a\\u0000b\",\"finish_reason\":null}]}\n\n"
			"data: [DONE]\n\n";
	CHECK_EQ_INT(lmd_sse_feed(&c.sse, s, strlen(s), &err), LMD_OK);
	CHECK_EQ_STR(c.stream_error, "");
	CHECK_EQ_INT(g.n, 3);
	CHECK(!memcmp(g.all, "a\0b", 3));
	CHECK_EQ_INT(c.done, 1);
	lmd_oai_call_free(&c);
}

int main(void)
{
	test_sse();
	test_answers();
	test_nul_text();
	return UNIT_DONE();
}
