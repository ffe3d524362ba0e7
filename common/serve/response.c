/*
 * OpenAI JSON out (serve.h): whole responses, stream chunks, errors, the model list and
 * LMDeploy's /v1/encode answer, shaped as the official clients read them.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"

static char *dump(json_t *o)
{
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return s;
}

static json_t *str_or_null(const char *s)
{
	return s && *s ? json_string(s) : json_null();
}

char *lmd_api_error_json(const struct lmd_api_error *e)
{
	return dump(json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", e->message, "type",
			      lmd_api_error_type(e->status), "param", str_or_null(e->param), "code", str_or_null(e->code)));
}

/* A token's text as it reads inside a text (a sentencepiece word keeps its leading space): decoded as a
 * continuation of itself. Bytes that do not make a whole character come out as U+FFFD. */
static json_t *token_text(const struct lmd_tokenizer *t, int id)
{
	struct lmd_tokdec d;
	const char *s = "";
	size_t n = 0;
	json_t *j;
	lmd_tokdec_init(&d, t, 0);
	lmd_tokdec_push(&d, id, &s, &n, NULL);
	lmd_tokdec_flush(&d, &s, &n, NULL);
	if (lmd_tokdec_push(&d, id, &s, &n, NULL) || (!n && lmd_tokdec_flush(&d, &s, &n, NULL)))
		s = "", n = 0;
	j = json_stringn(s, n);
	if (!j) {  /* not UTF-8: a piece of a character */
		char *fix = malloc(n * 3 + 1), *p = fix;
		for (size_t i = 0; fix && i < n; i++)
			if ((unsigned char)s[i] < 0x80)
				*p++ = s[i];
			else
				memcpy(p, "\xef\xbf\xbd", 3), p += 3;
		j = fix ? json_stringn(fix, (size_t)(p - fix)) : NULL;
		free(fix);
	}
	lmd_tokdec_free(&d);
	return j ? j : json_string("");
}

static json_t *bytes_of(json_t *text)
{
	json_t *a = json_array();
	const unsigned char *s = (const unsigned char *)json_string_value(text);
	for (size_t i = 0; a && i < json_string_length(text); i++)
		json_array_append_new(a, json_integer(s[i]));
	return a;
}

/* Chat's {"content": [{token, logprob, bytes, top_logprobs: [...]}], "refusal": null}. */
static json_t *chat_logprobs(const struct lmd_api_meta *m, const struct lmd_api_choice *c)
{
	json_t *content = json_array();
	for (int i = 0; content && i < c->nlp; i++) {
		const struct lmd_logprob *lp = &c->lp[i];
		json_t *top = json_array(), *tok = token_text(m->tok, lp->id);
		for (int k = 0; top && k < lp->ntop; k++) {
			json_t *tt = token_text(m->tok, lp->top_id[k]);
			json_array_append_new(top, json_pack("{s:O, s:f, s:o}", "token", tt, "logprob", (double)lp->top[k],
							     "bytes", bytes_of(tt)));
			json_decref(tt);
		}
		json_array_append_new(content, json_pack("{s:O, s:f, s:o, s:o}", "token", tok, "logprob", (double)lp->logprob,
							 "bytes", bytes_of(tok), "top_logprobs", top));
		json_decref(tok);
	}
	return json_pack("{s:o, s:n}", "content", content, "refusal");
}

/* The completion API's {"tokens", "token_logprobs", "top_logprobs", "text_offset"}. */
static json_t *completion_logprobs(const struct lmd_api_meta *m, const struct lmd_api_choice *c)
{
	json_t *toks = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
	size_t off = c->offset;
	for (int i = 0; i < c->nlp; i++) {
		const struct lmd_logprob *lp = &c->lp[i];
		json_t *tok = token_text(m->tok, lp->id), *top = json_object();
		for (int k = 0; k < lp->ntop; k++) {
			json_t *tt = token_text(m->tok, lp->top_id[k]);
			json_object_set_new(top, json_string_value(tt), json_real(lp->top[k]));
			json_decref(tt);
		}
		json_array_append_new(offs, json_integer((json_int_t)off));
		off += json_string_length(tok);
		json_array_append_new(toks, tok);
		json_array_append_new(lps, json_real(lp->logprob));
		json_array_append_new(tops, top);
	}
	return json_pack("{s:o, s:o, s:o, s:o}", "tokens", toks, "token_logprobs", lps, "top_logprobs", tops,
			 "text_offset", offs);
}

static json_t *logprobs_of(const struct lmd_api_meta *m, const struct lmd_api_choice *c)
{
	if (!m->logprobs)
		return json_null();
	return m->kind == LMD_API_CHAT ? chat_logprobs(m, c) : completion_logprobs(m, c);
}

static json_t *finish_of(const struct lmd_api_choice *c)
{
	return c->finish ? json_string(c->finish) : json_null();
}

static json_t *usage_of(const struct lmd_api_usage *u)
{
	return json_pack("{s:i, s:i, s:i}", "prompt_tokens", u->prompt, "completion_tokens", u->completion, "total_tokens",
			 u->prompt + u->completion);
}

static json_t *head(const struct lmd_api_meta *m, const char *object)
{
	return json_pack("{s:s, s:s, s:I, s:s, s:s}", "id", m->id, "object", object, "created", (json_int_t)m->created,
			 "model", m->model, "system_fingerprint", "lmd");
}

char *lmd_api_response(const struct lmd_api_meta *m, const struct lmd_api_choice *c, int n,
		       const struct lmd_api_usage *u)
{
	int chat = m->kind == LMD_API_CHAT;
	json_t *o = head(m, chat ? "chat.completion" : "text_completion"), *choices = json_array();
	for (int i = 0; o && choices && i < n; i++) {
		json_t *text = json_stringn(c[i].text ? c[i].text : "", c[i].text ? c[i].len : 0);
		json_t *ch = chat ? json_pack("{s:i, s:{s:s, s:o, s:n}, s:o, s:o}", "index", c[i].index, "message", "role",
					      "assistant", "content", text, "refusal", "logprobs", logprobs_of(m, &c[i]),
					      "finish_reason", finish_of(&c[i]))
				  : json_pack("{s:i, s:o, s:o, s:o}", "index", c[i].index, "text", text, "logprobs",
					      logprobs_of(m, &c[i]), "finish_reason", finish_of(&c[i]));
		if (chat && c[i].tool_calls) {
			json_t *msg = json_object_get(ch, "message");
			json_object_set(msg, "tool_calls", c[i].tool_calls);
			if (!c[i].len)
				json_object_set_new(msg, "content", json_null());
		}
		json_array_append_new(choices, ch);
	}
	if (!o || !choices) {
		json_decref(choices);
		json_decref(o);
		return NULL;
	}
	json_object_set_new(o, "choices", choices);
	json_object_set_new(o, "usage", usage_of(u));
	return dump(o);
}

char *lmd_api_chunk(const struct lmd_api_meta *m, const struct lmd_api_choice *c, int first, int usage_null)
{
	int chat = m->kind == LMD_API_CHAT;
	json_t *o = head(m, chat ? "chat.completion.chunk" : "text_completion"), *ch;
	json_t *text = json_stringn(c->text ? c->text : "", c->text ? c->len : 0);
	if (chat) {
		json_t *delta = json_object();
		if (first)
			json_object_set_new(delta, "role", json_string("assistant"));
		if (c->len || first)
			json_object_set(delta, "content", text);
		if (c->tool_calls)
			json_object_set(delta, "tool_calls", c->tool_calls);
		ch = json_pack("{s:i, s:o, s:o, s:o}", "index", c->index, "delta", delta, "logprobs", logprobs_of(m, c),
			       "finish_reason", finish_of(c));
	} else {
		ch = json_pack("{s:i, s:O, s:o, s:o}", "index", c->index, "text", text, "logprobs", logprobs_of(m, c),
			       "finish_reason", finish_of(c));
	}
	json_decref(text);
	if (!o || !ch) {
		json_decref(ch);
		json_decref(o);
		return NULL;
	}
	json_object_set_new(o, "choices", json_pack("[o]", ch));
	if (usage_null)
		json_object_set_new(o, "usage", json_null());
	return dump(o);
}

char *lmd_api_usage_chunk(const struct lmd_api_meta *m, const struct lmd_api_usage *u)
{
	json_t *o = head(m, m->kind == LMD_API_CHAT ? "chat.completion.chunk" : "text_completion");
	if (o) {
		json_object_set_new(o, "choices", json_array());
		json_object_set_new(o, "usage", usage_of(u));
	}
	return dump(o);
}

char *lmd_api_models(const char *model, long created)
{
	return dump(json_pack("{s:s, s:[{s:s, s:s, s:I, s:s, s:s}]}", "object", "list", "data", "id", model, "object",
			      "model", "created", (json_int_t)created, "owned_by", "lmd", "root", model));
}

char *lmd_api_encoded(int32_t *const *ids, const int *n, int count, int is_list)
{
	json_t *all = json_array(), *lens = json_array();
	for (int i = 0; all && lens && i < count; i++) {
		json_t *a = json_array();
		for (int k = 0; a && k < n[i]; k++)
			json_array_append_new(a, json_integer(ids[i][k]));
		json_array_append_new(all, a);
		json_array_append_new(lens, json_integer(n[i]));
	}
	if (!is_list && count == 1) {  /* one input: not nested */
		json_t *o = json_pack("{s:O, s:O}", "input_ids", json_array_get(all, 0), "length", json_array_get(lens, 0));
		json_decref(all);
		json_decref(lens);
		return dump(o);
	}
	return dump(json_pack("{s:o, s:o}", "input_ids", all, "length", lens));
}
