#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "oaiclient.h"

enum { SSE_MAX = 64 << 20, RESP_MAX = 16 << 20 };

// ---------------------------------------------------------------------------------------------
// Server-sent events

static int grow(char **p, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t nc = *cap ? *cap : 256;
	while (nc < need)
		nc *= 2;
	char *q = realloc(*p, nc);
	if (!q)
		return -1;
	*p = q;
	*cap = nc;
	return 0;
}

static int sse_line(struct lmd_sse *s, struct lmd_err *err)
{
	char *l = s->line;
	size_t n = s->nline;
	s->nline = 0;
	if (!s->started) {  /* a byte-order mark may open the stream */
		s->started = 1;
		if (n >= 3 && !memcmp(l, "\xEF\xBB\xBF", 3))
			l += 3, n -= 3;
	}
	if (n == 0) {  /* a blank line dispatches the event */
		if (!s->has_data) {
			s->event[0] = 0;
			return LMD_OK;
		}
		if (s->ndata && s->data[s->ndata - 1] == '\n')
			s->data[--s->ndata] = 0;
		int rc = s->on_event ? s->on_event(s->ctx, s->event[0] ? s->event : "message", s->data, s->ndata) : 0;
		s->ndata = 0;
		s->has_data = 0;
		s->event[0] = 0;
		if (s->data)
			s->data[0] = 0;
		return rc;
	}
	if (l[0] == ':')
		return LMD_OK;
	char *colon = memchr(l, ':', n);
	size_t nf = colon ? (size_t)(colon - l) : n;
	const char *v = colon ? colon + 1 : l + n;
	size_t nv = l + n - v;
	if (nv && *v == ' ')
		v++, nv--;
	if (nf == 4 && !memcmp(l, "data", 4)) {
		if (s->ndata + nv + 2 > SSE_MAX)
			return lmd_errorf(err, LMD_EFORMAT, "an event of the stream passes %d MiB", SSE_MAX >> 20);
		if (grow(&s->data, &s->cdata, s->ndata + nv + 2))
			return lmd_errorf(err, LMD_ENOMEM, "out of memory");
		memcpy(s->data + s->ndata, v, nv);
		s->ndata += nv;
		s->data[s->ndata++] = '\n';
		s->data[s->ndata] = 0;
		s->has_data = 1;
	} else if (nf == 5 && !memcmp(l, "event", 5)) {
		size_t k = nv < sizeof(s->event) - 1 ? nv : sizeof(s->event) - 1;
		memcpy(s->event, v, k);
		s->event[k] = 0;
	}  /* id, retry and unknown fields change nothing here */
	return LMD_OK;
}

int lmd_sse_feed(struct lmd_sse *s, const char *p, size_t n, struct lmd_err *err)
{
	for (size_t i = 0; i < n; i++) {
		char ch = p[i];
		if (s->after_cr) {
			s->after_cr = 0;
			if (ch == '\n')
				continue;  /* the LF of a CRLF */
		}
		if (ch == '\r' || ch == '\n') {
			s->after_cr = ch == '\r';
			int rc = sse_line(s, err);
			if (rc)
				return rc;
			continue;
		}
		/* copy the run of ordinary bytes at once */
		size_t j = i;
		while (j < n && p[j] != '\r' && p[j] != '\n')
			j++;
		if (s->nline + (j - i) + 1 > SSE_MAX)
			return lmd_errorf(err, LMD_EFORMAT, "a line of the stream passes %d MiB", SSE_MAX >> 20);
		if (grow(&s->line, &s->cline, s->nline + (j - i) + 1))
			return lmd_errorf(err, LMD_ENOMEM, "out of memory");
		memcpy(s->line + s->nline, p + i, j - i);
		s->nline += j - i;
		i = j - 1;
	}
	return LMD_OK;
}

void lmd_sse_free(struct lmd_sse *s)
{
	free(s->line);
	free(s->data);
	*s = (struct lmd_sse){.on_event = s->on_event, .ctx = s->ctx};
}

// ---------------------------------------------------------------------------------------------
// Answers: a chunk of a stream or a whole answer

static void copy_str(char *out, size_t cap, const char *s, size_t n)
{
	size_t k = n < cap - 1 ? n : cap - 1;
	memcpy(out, s, k);
	out[k] = 0;
	for (size_t i = 0; i < k; i++)  /* one line */
		if (out[i] == '\n' || out[i] == '\r')
			out[i] = ' ';
}

void lmd_oai_error_text(const char *body, size_t len, char *out, size_t cap)
{
	json_t *j = json_loadb(body, len, JSON_ALLOW_NUL, NULL), *e = json_object_get(j, "error");
	const char *m = NULL;
	if (json_is_string(e))
		m = json_string_value(e);
	else if (json_is_string(json_object_get(e, "message")))
		m = json_string_value(json_object_get(e, "message"));
	else if (json_is_string(json_object_get(j, "message")))  /* vLLM's older flat error body */
		m = json_string_value(json_object_get(j, "message"));
	if (m)
		copy_str(out, cap, m, strlen(m));
	else if (len)
		copy_str(out, cap, body, len < 200 ? len : 200);
	else
		snprintf(out, cap, "(empty answer)");
	json_decref(j);
}

/* Usage, and the first choice's text; a nonzero return: the caller's callback asked to stop. */
static int take_answer(struct lmd_oai_call *c, json_t *j)
{
	json_t *u = json_object_get(j, "usage");
	if (json_is_integer(json_object_get(u, "prompt_tokens")))
		c->prompt_tokens = (long)json_integer_value(json_object_get(u, "prompt_tokens"));
	if (json_is_integer(json_object_get(u, "completion_tokens")))
		c->completion_tokens = (long)json_integer_value(json_object_get(u, "completion_tokens"));
	json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
	if (!json_is_object(ch))
		return 0;
	json_t *d = json_object_get(ch, "delta");
	if (!d)
		d = json_object_get(ch, "message");
	json_t *t = json_object_get(d, "content");
	if (!json_is_string(t))
		t = json_object_get(ch, "text");
	struct lmd_oai_piece p = {"", 0, json_is_string(t), NULL};
	if (p.has_text) {
		p.text = json_string_value(t);
		p.len = json_string_length(t);
	}
	json_t *f = json_object_get(ch, "finish_reason");
	if (json_is_string(f)) {
		p.finish = json_string_value(f);
		snprintf(c->finish, sizeof(c->finish), "%s", p.finish);
	}
	c->pieces++;
	if (c->on_piece && c->on_piece(c, &p, c->ctx))
		c->stopped = 1;
	return c->stopped;
}

static int on_event(void *ctx, const char *event, const char *data, size_t len)
{
	struct lmd_oai_call *c = ctx;
	if (len >= 6 && !memcmp(data, "[DONE]", 6)) {
		c->done = 1;
		return 0;
	}
	json_t *j = json_loadb(data, len, JSON_ALLOW_NUL, NULL);
	int rc = 0;
	if (!strcmp(event, "error") || !j || json_object_get(j, "error")) {
		if (!c->stream_error[0]) {
			if (j)
				lmd_oai_error_text(data, len, c->stream_error, sizeof(c->stream_error));
			else
				copy_str(c->stream_error, sizeof(c->stream_error), data, len < 200 ? len : 200);
		}
	} else {
		rc = take_answer(c, j);
	}
	json_decref(j);
	return rc;
}

// ---------------------------------------------------------------------------------------------
// One call

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
	struct lmd_oai_call *c = ud;
	size_t n = size * nmemb;
	if (!c->status) {
		const char *ct = NULL;
		curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &c->status);
		curl_easy_getinfo(c->h, CURLINFO_CONTENT_TYPE, &ct);
		c->is_sse = c->status / 100 == 2 && ct && !strncasecmp(ct, "text/event-stream", 17);
	}
	if (c->is_sse) {
		struct lmd_err e = {0};
		int rc = lmd_sse_feed(&c->sse, p, n, &e);
		if (rc < 0)
			snprintf(c->stream_error, sizeof(c->stream_error), "%s", e.msg);
		return rc ? 0 : n;
	}
	if (c->nresp + n + 1 > RESP_MAX || grow(&c->resp, &c->cresp, c->nresp + n + 1)) {
		snprintf(c->stream_error, sizeof(c->stream_error), "the answer passes %d MiB", RESP_MAX >> 20);
		return 0;
	}
	memcpy(c->resp + c->nresp, p, n);
	c->nresp += n;
	c->resp[c->nresp] = 0;
	return n;
}

int lmd_oai_call_init(struct lmd_oai_call *c, const char *url, const char *api_key, const char *body,
		      struct lmd_err *err)
{
	struct lmd_oai_call keep = {.on_piece = c->on_piece, .ctx = c->ctx};
	*c = keep;
	c->prompt_tokens = c->completion_tokens = -1;
	c->sse.on_event = on_event;
	c->sse.ctx = c;
	char auth[1100];
	if (api_key && strlen(api_key) > 1000)
		return lmd_errorf(err, LMD_EINVAL, "the API key is longer than 1000 bytes");
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", api_key ? api_key : "");
	if (!(c->h = curl_easy_init()) || !(c->url = strdup(url)) || (body && !(c->body = strdup(body))) ||
	    !(c->headers = curl_slist_append(NULL, "Content-Type: application/json")) ||
	    !curl_slist_append(c->headers, "Expect:") || (api_key && !curl_slist_append(c->headers, auth)))
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	curl_easy_setopt(c->h, CURLOPT_URL, c->url);
	curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, c->headers);
	curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(c->h, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(c->h, CURLOPT_PRIVATE, c);
	curl_easy_setopt(c->h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->h, CURLOPT_CONNECTTIMEOUT, 10L);
	if (body) {
		curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, c->body);
		curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(c->body));
	}
	return LMD_OK;
}

int lmd_oai_call_end(struct lmd_oai_call *c, CURLcode res, struct lmd_err *err)
{
	long st = 0;
	curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &st);
	if (st)
		c->status = st;
	if (c->stopped)
		return LMD_OK;
	if (res != CURLE_OK && !c->status)
		return lmd_errorf(err, LMD_EFAIL, "cannot reach '%s': %s", c->url, curl_easy_strerror(res));
	if (c->status >= 400) {
		char m[256];
		lmd_oai_error_text(c->resp ? c->resp : "", c->nresp, m, sizeof(m));
		return lmd_errorf(err, c->status == 400 || c->status == 422 ? LMD_EINVAL : LMD_EFAIL, "HTTP %ld: %s",
				  c->status, m);
	}
	if (c->status / 100 != 2)
		return lmd_errorf(err, LMD_EFAIL, "HTTP %ld from '%s'", c->status, c->url);
	if (!c->is_sse && res == CURLE_OK) {
		if (c->nresp >= 5 && !memcmp(c->resp, "data:", 5)) {  /* an event stream sent with another type */
			struct lmd_err e = {0};
			if (lmd_sse_feed(&c->sse, c->resp, c->nresp, &e) < 0 || lmd_sse_feed(&c->sse, "\n\n", 2, &e) < 0)
				return lmd_errorf(err, LMD_EFORMAT, "%s", e.msg);
		} else {
			json_t *j = json_loadb(c->resp ? c->resp : "", c->nresp, JSON_ALLOW_NUL, NULL);
			if (!j)
				return lmd_errorf(err, LMD_EFORMAT, "the answer of '%s' is not JSON", c->url);
			take_answer(c, j);
			json_decref(j);
			c->done = 1;
			if (c->stopped)
				return LMD_OK;
		}
	}
	if (c->stream_error[0])
		return lmd_errorf(err, LMD_EFAIL, "the server reported an error: %s", c->stream_error);
	if (res != CURLE_OK)
		return lmd_errorf(err, LMD_EFAIL, "the answer of '%s' was cut: %s", c->url, curl_easy_strerror(res));
	if (!c->done)
		return lmd_errorf(err, LMD_EFAIL, "the stream of '%s' ended before 'data: [DONE]'", c->url);
	return LMD_OK;
}

int lmd_oai_call_run(struct lmd_oai_call *c, struct lmd_err *err)
{
	return lmd_oai_call_end(c, curl_easy_perform(c->h), err);
}

void lmd_oai_call_free(struct lmd_oai_call *c)
{
	if (c->h)
		curl_easy_cleanup(c->h);
	curl_slist_free_all(c->headers);
	free(c->url);
	free(c->body);
	free(c->resp);
	lmd_sse_free(&c->sse);
	*c = (struct lmd_oai_call){.on_piece = c->on_piece, .ctx = c->ctx};
}

// ---------------------------------------------------------------------------------------------
// Requests

char *lmd_oai_url(const char *url, const char *path)
{
	size_t n = strlen(url);
	while (n && url[n - 1] == '/')
		n--;
	if (n >= 3 && !memcmp(url + n - 3, "/v1", 3))
		n -= 3;
	char *s = malloc(n + strlen(path) + 1);
	if (s) {
		memcpy(s, url, n);
		strcpy(s + n, path);
	}
	return s;
}

/* The body: model, the given key, then stream with usage, then params' fields (which win). */
static char *body(const char *model, const char *key, json_t *value, const json_t *params, struct lmd_err *err)
{
	json_t *o = json_object();
	char *s = NULL;
	if (o && model)
		json_object_set_new(o, "model", json_string(model));
	if (o && !json_object_set_new(o, key, value) && !json_object_set_new(o, "stream", json_true()) &&
	    !json_object_set_new(o, "stream_options", json_pack("{s:b}", "include_usage", 1)) &&
	    (!params || !json_object_update(o, (json_t *)params)))
		s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!s)
		lmd_errorf(err, LMD_ENOMEM, "cannot build the request (out of memory, or text that is not UTF-8)");
	return s;
}

char *lmd_oai_chat_body(const char *model, const json_t *messages, const json_t *params, struct lmd_err *err)
{
	return body(model, "messages", json_deep_copy(messages), params, err);
}

char *lmd_oai_completion_body(const char *model, const char *prompt, const json_t *params, struct lmd_err *err)
{
	return body(model, "prompt", json_string(prompt), params, err);
}

int lmd_oai_parse_models(const char *b, size_t len, char *out, size_t cap, struct lmd_err *err)
{
	json_t *j = json_loadb(b, len, JSON_ALLOW_NUL, NULL);
	json_t *id = json_object_get(json_array_get(json_object_get(j, "data"), 0), "id");
	int rc = json_is_string(id) ? LMD_OK : lmd_errorf(err, LMD_EFORMAT, "the server lists no model in /v1/models");
	if (!rc)
		snprintf(out, cap, "%s", json_string_value(id));
	json_decref(j);
	return rc;
}

int lmd_oai_first_model(const char *url, const char *api_key, char *out, size_t cap, struct lmd_err *err)
{
	char *u = lmd_oai_url(url, "/v1/models");
	struct lmd_oai_call c = {0};
	int rc = u ? lmd_oai_call_init(&c, u, api_key, NULL, err) : lmd_errorf(err, LMD_ENOMEM, "out of memory");
	if (!rc && !(rc = lmd_oai_call_run(&c, err)))
		rc = lmd_oai_parse_models(c.resp, c.nresp, out, cap, err);
	lmd_oai_call_free(&c);
	free(u);
	return rc;
}

const char *lmd_oai_tokenize_path(enum lmd_oai_tokenizer t)
{
	return t == LMD_OAI_TOK_ENCODE ? "/v1/encode" : t == LMD_OAI_TOK_TOKENIZE ? "/tokenize" : NULL;
}

char *lmd_oai_tokenize_body(enum lmd_oai_tokenizer t, const char *model, const char *text, struct lmd_err *err)
{
	json_t *o = t == LMD_OAI_TOK_ENCODE ? json_pack("{s:s, s:b, s:b}", "input", text, "do_preprocess", 0, "add_bos", 0)
					    : json_pack("{s:s?, s:s, s:b}", "model", model, "prompt", text,
							"add_special_tokens", 0);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!s)
		lmd_errorf(err, LMD_ENOMEM, "cannot build the tokenizer request (out of memory, or text that is not UTF-8)");
	return s;
}

long lmd_oai_token_count(const char *b, size_t len)
{
	json_t *j = json_loadb(b, len, JSON_ALLOW_NUL, NULL), *v;
	long n = -1;
	if (json_is_integer(v = json_object_get(j, "length")) || json_is_integer(v = json_object_get(j, "count")))
		n = (long)json_integer_value(v);
	else if (json_is_array(v = json_object_get(j, "input_ids")) || json_is_array(v = json_object_get(j, "tokens")))
		n = (long)json_array_size(v);
	json_decref(j);
	return n;
}
