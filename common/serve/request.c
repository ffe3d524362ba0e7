/*
 * HTTP bodies -> requests (serve.h): the fields of OpenAI's chat and completion requests with
 * vLLM's and LMDeploy's sampling extras, checked for type and range; every mistake a 400 naming
 * the field.
 */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"

const char *lmd_api_error_type(int status)
{
	switch (status) {
	case 400: return "invalid_request_error";
	case 401: return "authentication_error";
	case 403: return "permission_error";
	case 404: return "not_found_error";
	case 405: return "method_not_allowed_error";
	case 413: return "request_too_large_error";
	case 429: return "rate_limit_error";
	case 503: return "unavailable_error";
	default: return status >= 500 ? "server_error" : "invalid_request_error";
	}
}

int lmd_api_errorf(struct lmd_api_error *e, int status, const char *param, const char *code, const char *fmt, ...)
{
	va_list ap;
	e->status = status;
	snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
	snprintf(e->code, sizeof(e->code), "%s", code ? code : "");
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	return -1;
}

/* A field's value, NULL when absent or null (null means "not given", as OpenAI's clients send it). */
static json_t *field(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_null(v) ? NULL : v;
}

static int bad(struct lmd_api_error *e, const char *param, const char *what)
{
	return lmd_api_errorf(e, 400, param, NULL, "'%s' must be %s", param, what);
}

/* A number in [lo, hi] (open at lo when open_lo). */
static int real(json_t *o, const char *key, double lo, double hi, int open_lo, float *out, struct lmd_api_error *e)
{
	json_t *v = field(o, key);
	if (!v)
		return 0;
	double d = json_number_value(v);
	if (!json_is_number(v) || !isfinite(d) || d < lo || (open_lo && d == lo) || d > hi) {
		char what[96];
		snprintf(what, sizeof(what), "a number in %c%g, %g]", open_lo ? '(' : '[', lo, hi);
		return bad(e, key, what);
	}
	*out = (float)d;
	return 0;
}

/* A whole number in [lo, hi]; *out unchanged when absent. */
static int whole(json_t *o, const char *key, long long lo, long long hi, long long *out, struct lmd_api_error *e)
{
	json_t *v = field(o, key);
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
		char what[96];
		snprintf(what, sizeof(what), "a whole number from %lld to %lld", lo, hi);
		return bad(e, key, what);
	}
	*out = json_integer_value(v);
	return 0;
}

static int boolean(json_t *o, const char *key, int *out, struct lmd_api_error *e)
{
	json_t *v = field(o, key);
	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return bad(e, key, "true or false");
	*out = json_is_true(v);
	return 0;
}

/* The sampling and length fields both endpoints share. */
static int common_fields(struct lmd_api_request *q, json_t *o, struct lmd_api_error *e)
{
	struct lmd_sampling *s = &q->p.sampling;
	long long x;
	json_t *v;
	if ((v = field(o, "model")) && !json_is_string(v))
		return bad(e, "model", "a string");
	q->model = json_string_value(v);
	if (real(o, "temperature", 0, 2, 0, &s->temperature, e) || real(o, "top_p", 0, 1, 1, &s->top_p, e) ||
	    real(o, "min_p", 0, 1, 0, &s->min_p, e) || real(o, "repetition_penalty", 0, 100, 1, &s->repetition_penalty, e) ||
	    real(o, "presence_penalty", -2, 2, 0, &s->presence_penalty, e) ||
	    real(o, "frequency_penalty", -2, 2, 0, &s->frequency_penalty, e))
		return -1;
	x = s->top_k;
	if (whole(o, "top_k", -1, 1 << 30, &x, e))  /* -1 is vLLM's "off" */
		return -1;
	s->top_k = x < 0 ? 0 : (int)x;
	x = 0;
	if (whole(o, "max_tokens", 1, 1 << 30, &x, e) || whole(o, "max_completion_tokens", 1, 1 << 30, &x, e))
		return -1;
	q->max_tokens = (int)x;
	if ((v = field(o, "seed"))) {
		if (!json_is_integer(v))
			return bad(e, "seed", "a whole number");
		s->seed = (uint64_t)json_integer_value(v);
		q->seed_given = 1;
	}
	x = 1;
	if (whole(o, "n", 1, LMD_API_MAX_CHOICES, &x, e))
		return -1;
	q->n = (int)x;
	int skip = 1;
	if (boolean(o, "stream", &q->stream, e) || boolean(o, "ignore_eos", &q->p.ignore_eos, e) ||
	    boolean(o, "skip_special_tokens", &skip, e))
		return -1;
	q->keep_special = !skip;
	if ((v = field(o, "stream_options"))) {
		if (!json_is_object(v))
			return bad(e, "stream_options", "an object");
		if (boolean(v, "include_usage", &q->include_usage, e))
			return -1;
	}
	if ((v = field(o, "user")) && !json_is_string(v))
		return bad(e, "user", "a string");
	if ((v = field(o, "stop"))) {
		size_t i;
		json_t *x1;
		q->p.n_stop = 0;
		if (json_is_string(v)) {
			if (json_string_length(v))
				q->p.stop[q->p.n_stop++] = json_string_value(v);
		} else if (json_is_array(v) && json_array_size(v) <= LMD_MAX_STOP_STRINGS) {
			json_array_foreach(v, i, x1) {
				if (!json_is_string(x1))
					return bad(e, "stop", "a string or a list of strings");
				if (json_string_length(x1))  /* an empty string never matches: dropped */
					q->p.stop[q->p.n_stop++] = json_string_value(x1);
			}
		} else {
			return lmd_api_errorf(e, 400, "stop", NULL, "'stop' must be a string or a list of at most %d strings",
					      LMD_MAX_STOP_STRINGS);
		}
	}
	return 0;
}

static int is_role(const char *r)
{
	static const char *const roles[] = {"system", "developer", "user", "assistant", "tool"};
	for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
		if (!strcmp(r, roles[i]))
			return 1;
	return 0;
}

/* A message's content: a string, or a list of text parts joined with newlines (as vLLM does). */
static int content(struct lmd_api_request *q, int i, json_t *c, const char *role, struct lmd_api_error *e)
{
	char param[48];
	snprintf(param, sizeof(param), "messages[%d].content", i);
	if (!c && !strcmp(role, "assistant")) {  /* an assistant turn that only called tools */
		q->msgs[i].content = "";
		return 0;
	}
	if (json_is_string(c)) {
		q->msgs[i].content = json_string_value(c);
		return 0;
	}
	if (!json_is_array(c))
		return bad(e, param, "a string or a list of text parts");
	size_t k, total = 1;
	json_t *part;
	json_array_foreach(c, k, part) {
		json_t *t = json_object_get(part, "text");
		if (!json_is_object(part) || !json_is_string(json_object_get(part, "type")) ||
		    strcmp(json_string_value(json_object_get(part, "type")), "text") || !json_is_string(t))
			return lmd_api_errorf(e, 400, param, NULL, "'%s[%zu]' is not a text part ({\"type\": \"text\", "
					      "\"text\": ...}); only text is supported", param, k);
		total += json_string_length(t) + 1;
	}
	char *s = malloc(total), *p = s;
	if (!s)
		return lmd_api_errorf(e, 500, NULL, NULL, "out of memory");
	json_array_foreach(c, k, part) {
		json_t *t = json_object_get(part, "text");
		if (k)
			*p++ = '\n';
		memcpy(p, json_string_value(t), json_string_length(t));
		p += json_string_length(t);
	}
	*p = 0;
	q->joined[i] = s;
	q->msgs[i].content = s;
	return 0;
}

static int chat_fields(struct lmd_api_request *q, json_t *o, struct lmd_api_error *e)
{
	json_t *msgs = field(o, "messages"), *m;
	size_t i;
	if (!msgs)
		return lmd_api_errorf(e, 400, "messages", NULL, "'messages' is required");
	if (!json_is_array(msgs) || !json_array_size(msgs))
		return bad(e, "messages", "a non-empty list of messages");
	q->nmsg = (int)json_array_size(msgs);
	q->msgs = calloc(q->nmsg, sizeof(*q->msgs));
	q->joined = calloc(q->nmsg, sizeof(*q->joined));
	if (!q->msgs || !q->joined)
		return lmd_api_errorf(e, 500, NULL, NULL, "out of memory");
	json_array_foreach(msgs, i, m) {
		char param[48];
		snprintf(param, sizeof(param), "messages[%zu]", i);
		if (!json_is_object(m))
			return bad(e, param, "an object with 'role' and 'content'");
		const char *role = json_string_value(json_object_get(m, "role"));
		snprintf(param, sizeof(param), "messages[%zu].role", i);
		if (!role || !is_role(role))
			return lmd_api_errorf(e, 400, param, NULL, "'%s' must be system, developer, user, assistant or tool%s%s%s",
					      param, role ? " (not '" : "", role ? role : "", role ? "')" : "");
		q->msgs[i].role = strcmp(role, "developer") ? role : "system";  /* OpenAI's newer name for system */
		if (content(q, (int)i, field(m, "content"), role, e))
			return -1;
	}
	int lp = 0;
	long long top = -1;
	if (boolean(o, "logprobs", &lp, e) || whole(o, "top_logprobs", 0, LMD_MAX_TOP_LOGPROBS, &top, e))
		return -1;
	if (top >= 0 && !lp)
		return lmd_api_errorf(e, 400, "top_logprobs", NULL, "'top_logprobs' needs 'logprobs': true");
	q->logprobs = lp;
	q->top_logprobs = top > 0 ? (int)top : 0;
	return lmd_api_decode_tools(q, e);
}

/* A list of token ids as a prompt. */
static int id_prompt(struct lmd_api_prompt *p, json_t *a, const char *param, struct lmd_api_error *e)
{
	size_t i;
	json_t *x;
	if (!json_array_size(a))
		return lmd_api_errorf(e, 400, "prompt", NULL, "'%s' is empty", param);
	if (!(p->ids = malloc(json_array_size(a) * sizeof(*p->ids))))
		return lmd_api_errorf(e, 500, NULL, NULL, "out of memory");
	json_array_foreach(a, i, x) {
		if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX)
			return lmd_api_errorf(e, 400, "prompt", NULL, "'%s[%zu]' is not a token id", param, i);
		p->ids[p->nids++] = (int32_t)json_integer_value(x);
	}
	return 0;
}

static int completion_fields(struct lmd_api_request *q, json_t *o, struct lmd_api_error *e)
{
	json_t *pr = field(o, "prompt"), *x;
	size_t i;
	if (!pr)
		return lmd_api_errorf(e, 400, "prompt", NULL, "'prompt' is required");
	/* a string, a list of strings, a list of ids, or a list of lists of ids */
	int one = json_is_string(pr) || (json_is_array(pr) && json_is_integer(json_array_get(pr, 0)));
	if (!json_is_string(pr) && (!json_is_array(pr) || !json_array_size(pr)))
		return bad(e, "prompt", "a string, a list of strings or token ids");
	q->nprompt = one ? 1 : (int)json_array_size(pr);
	if (q->nprompt > LMD_API_MAX_CHOICES)
		return lmd_api_errorf(e, 400, "prompt", NULL, "at most %d prompts", LMD_API_MAX_CHOICES);
	if (!(q->prompts = calloc(q->nprompt, sizeof(*q->prompts))))
		return lmd_api_errorf(e, 500, NULL, NULL, "out of memory");
	for (i = 0; i < (size_t)q->nprompt; i++) {
		char param[32];
		snprintf(param, sizeof(param), one ? "prompt" : "prompt[%zu]", i);
		x = one ? pr : json_array_get(pr, i);
		if (json_is_string(x)) {
			q->prompts[i].text = json_string_value(x);
			q->prompts[i].len = json_string_length(x);
		} else if (!json_is_array(x) || id_prompt(&q->prompts[i], x, param, e)) {
			return json_is_array(x) ? -1 : bad(e, param, "a string or a list of token ids");
		}
	}
	long long lp = -1;
	if (whole(o, "logprobs", 0, LMD_MAX_TOP_LOGPROBS, &lp, e) || boolean(o, "echo", &q->echo, e))
		return -1;
	q->logprobs = lp >= 0;
	q->top_logprobs = lp > 0 ? (int)lp : 0;
	if (q->echo && q->logprobs)
		return lmd_api_errorf(e, 400, "echo", NULL, "'echo' with 'logprobs' is not supported: the server gives the "
				      "log-probabilities of generated tokens only, not the prompt's; drop one of them");
	if ((x = field(o, "suffix")) && (!json_is_string(x) || json_string_length(x)))
		return lmd_api_errorf(e, 400, "suffix", NULL, "'suffix' is not supported");
	return 0;
}

int lmd_api_decode(struct lmd_api_request *q, enum lmd_api_kind kind, const char *body, size_t len,
		   const struct lmd_gen_params *defaults, struct lmd_api_error *e)
{
	json_error_t je;
	memset(q, 0, sizeof(*q));
	q->kind = kind;
	q->p = *defaults;
	q->n = 1;
	if (!(q->body = json_loadb(body, len, 0, &je)))
		return lmd_api_errorf(e, 400, NULL, "invalid_json", "the body is not valid JSON: %s (line %d, column %d)",
				      je.text, je.line, je.column);
	if (!json_is_object(q->body))
		return lmd_api_errorf(e, 400, NULL, "invalid_json", "the body must be a JSON object");
	if (common_fields(q, q->body, e))
		return -1;
	if (kind == LMD_API_CHAT ? chat_fields(q, q->body, e) : completion_fields(q, q->body, e))
		return -1;
	if ((q->kind == LMD_API_COMPLETION ? q->nprompt : 1) * q->n > LMD_API_MAX_CHOICES)
		return lmd_api_errorf(e, 400, "n", NULL, "%d prompts times n = %d asks for more than %d choices", q->nprompt,
				      q->n, LMD_API_MAX_CHOICES);
	return 0;
}

void lmd_api_request_free(struct lmd_api_request *q)
{
	for (int i = 0; q->joined && i < q->nmsg; i++)
		free(q->joined[i]);
	free(q->joined);
	free(q->msgs);
	for (int i = 0; q->prompts && i < q->nprompt; i++)
		free(q->prompts[i].ids);
	free(q->prompts);
	lmd_api_tools_free(q);
	json_decref(q->body);
	memset(q, 0, sizeof(*q));
}

int lmd_api_decode_encode(struct lmd_api_encode *q, const char *body, size_t len, struct lmd_api_error *e)
{
	json_error_t je;
	json_t *in, *x;
	size_t i;
	memset(q, 0, sizeof(*q));
	q->add_bos = 1;
	if (!(q->body = json_loadb(body, len, 0, &je)) || !json_is_object(q->body))
		return lmd_api_errorf(e, 400, NULL, "invalid_json", "the body must be a JSON object");
	if (boolean(q->body, "do_preprocess", &q->do_preprocess, e) || boolean(q->body, "add_bos", &q->add_bos, e))
		return -1;
	in = field(q->body, "input");
	q->is_list = json_is_array(in);
	q->n = q->is_list ? (int)json_array_size(in) : 1;
	if (!json_is_string(in) && !q->is_list)
		return bad(e, "input", "a string or a list of strings");
	if (!(q->input = calloc(q->n ? q->n : 1, sizeof(*q->input))))
		return lmd_api_errorf(e, 500, NULL, NULL, "out of memory");
	if (!q->is_list)
		q->input[0] = json_string_value(in);
	json_array_foreach(q->is_list ? in : NULL, i, x) {
		if (!json_is_string(x))
			return bad(e, "input", "a string or a list of strings");
		q->input[i] = json_string_value(x);
	}
	return 0;
}

void lmd_api_encode_free(struct lmd_api_encode *q)
{
	free(q->input);
	json_decref(q->body);
	memset(q, 0, sizeof(*q));
}

int lmd_api_key_ok(const char *authorization, const char *const *keys, int n)
{
	static const char bearer[] = "Bearer ";
	if (!authorization || strncmp(authorization, bearer, sizeof(bearer) - 1))
		return 0;
	const char *k = authorization + sizeof(bearer) - 1;
	size_t kl = strlen(k);
	int ok = 0;
	for (int i = 0; i < n; i++) {  /* every key, every byte: the time does not depend on where they differ */
		size_t l = strlen(keys[i]);
		unsigned char diff = (unsigned char)(l != kl);
		for (size_t j = 0; j < l; j++)
			diff |= (unsigned char)(keys[i][j] ^ (j < kl ? k[j] : 0));
		ok |= !diff;
	}
	return ok;
}
