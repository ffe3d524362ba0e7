#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "file.h"
#include "pyjson.h"
#include "sbuf.h"
#include "share.h"

// --- the template file

static const struct {
	const char *key;
	size_t off;
} keys[] = {
#define K(f) {#f, offsetof(struct lmd_chat_template, f)}
	K(prefix), K(system), K(default_system), K(system_first_user), K(user), K(assistant), K(other), K(tool),
	K(tool_open), K(tool_close), K(generation), K(tools_in_system), K(tools_message), K(tool_call_open),
	K(tool_call_close), K(system_tools), K(tools_in_first_user), K(assistant_tool_calls), K(tool_calls_content),
	K(tool_call), K(tool_parser),
#undef K
};

/* Unescape v[0..n) (quotes removed when present) into a malloc'd string; NULL on a bad escape. */
static char *unescape(const char *v, size_t n, int *bad)
{
	*bad = 0;
	if (n >= 2 && v[0] == '"' && v[n - 1] == '"')
		v++, n -= 2;
	char *o = malloc(n + 1), *q = o;
	if (!o)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (v[i] != '\\') {
			*q++ = v[i];
			continue;
		}
		if (++i >= n) {
			*bad = 1;
			break;
		}
		switch (v[i]) {
		case 'n': *q++ = '\n'; break;
		case 't': *q++ = '\t'; break;
		case '"': *q++ = '"'; break;
		case '\\': *q++ = '\\'; break;
		default: *bad = 1;
		}
	}
	*q = 0;
	if (*bad) {
		free(o);
		return NULL;
	}
	return o;
}

int lmd_chat_template_parse(struct lmd_chat_template *ct, const char *text, size_t len, const char *what,
			    struct lmd_err *err)
{
	memset(ct, 0, sizeof(*ct));
	int line = 0, rc = 0;
	for (const char *p = text, *end = text + len; p < end;) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol)
			eol = end;
		line++;
		const char *a = p, *b = eol;
		p = eol + 1;
		while (a < b && (*a == ' ' || *a == '\t'))
			a++;
		while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r'))
			b--;
		if (a == b || *a == '#')
			continue;
		const char *eq = memchr(a, '=', (size_t)(b - a));
		if (!eq) {
			rc = lmd_errorf(err, LMD_EFORMAT, "'%s': line %d: expected 'key = value'", what, line);
			goto fail;
		}
		const char *ke = eq, *v = eq + 1;
		while (ke > a && (ke[-1] == ' ' || ke[-1] == '\t'))
			ke--;
		while (v < b && (*v == ' ' || *v == '\t'))
			v++;
		int bad;
		char *val = unescape(v, (size_t)(b - v), &bad);
		if (!val) {
			rc = bad ? lmd_errorf(err, LMD_EFORMAT, "'%s': line %d: bad escape", what, line)
				 : lmd_errorf(err, LMD_ENOMEM, "out of memory");
			goto fail;
		}
		size_t kl = (size_t)(ke - a);
		char **slot = NULL;
		if (kl == 4 && !memcmp(a, "name", 4)) {
			slot = &ct->name;
		} else if (kl == 4 && !memcmp(a, "trim", 4)) {
			ct->trim = !strcmp(val, "yes");
			free(val);
			continue;
		} else if (kl == 9 && !memcmp(a, "tool_json", 9)) {
			ct->tool_json = !strcmp(val, "yes");
			free(val);
			continue;
		} else if (kl == 14 && !memcmp(a, "tool_calls_max", 14)) {
			ct->tool_calls_max = atoi(val);
			free(val);
			continue;
		} else if (kl == 4 && !memcmp(a, "stop", 4)) {
			if (ct->n_stop == LMD_CHAT_MAX_STOP) {
				free(val);
				rc = lmd_errorf(err, LMD_EFORMAT, "'%s': line %d: too many stop tokens", what, line);
				goto fail;
			}
			ct->stop[ct->n_stop++] = val;
			continue;
		} else {
			for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
				if (strlen(keys[i].key) == kl && !memcmp(keys[i].key, a, kl))
					slot = (char **)((char *)ct + keys[i].off);
		}
		if (!slot) {
			free(val);
			rc = lmd_errorf(err, LMD_EFORMAT, "'%s': line %d: unknown key '%.*s'", what, line, (int)kl, a);
			goto fail;
		}
		free(*slot);
		*slot = val;
	}
	if (!ct->name || !ct->user || !ct->assistant) {
		rc = lmd_errorf(err, LMD_EFORMAT, "'%s': 'name', 'user' and 'assistant' are required", what);
		goto fail;
	}
	return 0;
fail:
	lmd_chat_template_free(ct);
	return rc;
}

void lmd_chat_template_free(struct lmd_chat_template *ct)
{
	free(ct->name);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		free(*(char **)((char *)ct + keys[i].off));
	for (int i = 0; i < ct->n_stop; i++)
		free(ct->stop[i]);
	free(ct->bos);
	free(ct->eos);
	memset(ct, 0, sizeof(*ct));
}

int lmd_chat_template_load(struct lmd_chat_template *ct, const char *name, struct lmd_err *err)
{
	char rel[256];
	memset(ct, 0, sizeof(*ct));
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.') ||
		    p - name > 64)
			return lmd_errorf(err, LMD_EINVAL, "bad chat template name '%s'", name);
	snprintf(rel, sizeof(rel), "templates/%s.tmpl", name);
	char *path = lmd_share_path(rel, err);
	if (!path)
		return lmd_errorf(err, LMD_EINVAL, "no chat template '%s': %s", name, err->msg);
	char *text = NULL;
	size_t len = 0;
	int rc = lmd_read_file(path, &text, &len, err);
	if (!rc)
		rc = lmd_chat_template_parse(ct, text, len, path, err);
	free(text);
	free(path);
	return rc;
}

const char *lmd_chat_template_auto(const struct lmd_tokenizer *t)
{
	const char *j = lmd_tokenizer_jinja(t);
	if (!j)
		return "base";
	if (strstr(j, "<|im_start|>")) {
		if (strstr(j, "You are Qwen"))
			return "qwen";
		if (strstr(j, "You are a helpful assistant"))
			return "qwen2";
		return "internlm2";
	}
	if (strstr(j, "<|start_header_id|>"))
		return strstr(j, "Cutting Knowledge Date") ? "llama3_1" : "llama3";
	if (strstr(j, "[INST]"))
		return "llama2";
	return "base";
}

int lmd_chat_template_choose(struct lmd_chat_template *ct, const char *name, const struct lmd_tokenizer *t,
			     struct lmd_err *err)
{
	if (!name || !*name)
		name = lmd_chat_template_auto(t);
	int rc = lmd_chat_template_load(ct, name, err);
	if (rc)
		return rc;
	const char *b = t->bos >= 0 ? lmd_tokenizer_piece(t, t->bos) : "";
	const char *e = t->eos >= 0 ? lmd_tokenizer_piece(t, t->eos) : "";
	ct->bos = strdup(b ? b : "");
	ct->eos = strdup(e ? e : "");
	if (!ct->bos || !ct->eos) {
		lmd_chat_template_free(ct);
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	}
	return 0;
}

// --- rendering

struct vars {
	const char *content, *role, *system, *tools, *calls, *name, *arguments;
	size_t content_len;
};

/* Write fmt with its {variables}; stop before the variable named upto (e.g. "{name}") when given. */
static void render_upto(struct lmd_sb *o, const struct lmd_chat_template *ct, const char *fmt, const struct vars *v,
			const char *upto)
{
	const struct {
		const char *key;
		const char *val;
	} vars[] = {
		{"{content}", v->content}, {"{role}", v->role}, {"{system}", v->system}, {"{tools}", v->tools},
		{"{calls}", v->calls},     {"{name}", v->name}, {"{arguments}", v->arguments}, {"{bos}", ct->bos},
		{"{eos}", ct->eos},
	};
	for (const char *p = fmt; *p;) {
		const char *br = strchr(p, '{');
		if (!br) {
			lmd_sb_str(o, p);
			return;
		}
		lmd_sb_add(o, p, (size_t)(br - p));
		if (upto && !strncmp(br, upto, strlen(upto)))
			return;
		size_t k = 0, nv = sizeof(vars) / sizeof(vars[0]);
		while (k < nv && strncmp(br, vars[k].key, strlen(vars[k].key)))
			k++;
		if (k == nv) {
			lmd_sb_add(o, "{", 1);
			p = br + 1;
			continue;
		}
		if (k == 0 && v->content)
			lmd_sb_add(o, v->content, v->content_len);
		else if (vars[k].val)
			lmd_sb_str(o, vars[k].val);
		p = br + strlen(vars[k].key);
	}
}

static void render_fmt(struct lmd_sb *o, const struct lmd_chat_template *ct, const char *fmt, const struct vars *v)
{
	render_upto(o, ct, fmt, v, NULL);
}

/* Length of the white space (Python's str.isspace, as Jinja's trim strips) that starts s[0..n), or
 * with from_end the white space that ends it. */
static size_t space_run(const char *s, size_t n, int from_end)
{
	static const unsigned cps[] = {0x85,   0xa0,   0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006,
				       0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000};
	size_t run = 0;
	while (run < n) {
		const unsigned char *p = (const unsigned char *)s + (from_end ? n - run - 1 : run);
		size_t len = 1;
		unsigned cp = *p;
		if (from_end) {
			while (len < 4 && len < n - run && (*p & 0xc0) == 0x80)
				p--, len++;
			cp = *p;
		}
		if (cp >= 0xf0)
			return run;
		if (cp >= 0xe0 && p + 2 < (const unsigned char *)s + n)
			cp = (cp & 0x0f) << 12 | (p[1] & 0x3fu) << 6 | (p[2] & 0x3fu), len = 3;
		else if (cp >= 0xc0 && p + 1 < (const unsigned char *)s + n)
			cp = (cp & 0x1f) << 6 | (p[1] & 0x3fu), len = 2;
		int sp = (cp >= 9 && cp <= 13) || (cp >= 0x1c && cp <= 0x20);
		for (size_t i = 0; !sp && i < sizeof(cps) / sizeof(cps[0]); i++)
			sp = cp == cps[i];
		if (!sp)
			return run;
		run += len;
	}
	return run;
}

/* Content, trimmed when the template says so. */
static struct vars content_of(const struct lmd_chat_template *ct, const char *s, const char *role)
{
	struct vars v = {.content = s ? s : "", .role = role};
	v.content_len = strlen(v.content);
	if (ct->trim) {
		size_t a = space_run(v.content, v.content_len, 0);
		v.content += a;
		v.content_len -= a;
		v.content_len -= space_run(v.content, v.content_len, 1);
	}
	return v;
}

static int is_tool_role(const char *r)
{
	return !strcmp(r, "tool") || !strcmp(r, "ipython") || !strcmp(r, "environment") || !strcmp(r, "function");
}

enum tools_form { TOOLS_LINES, TOOLS_FUNCTIONS, TOOLS_BLOCKS };

/* The tools as a template shows them: each tool's JSON on a line of its own, each preceded by "\n"
 * (Qwen2.5); the JSON list of their function objects as LMDeploy's InternLM2 prompt has them; or
 * each tool indented by 4 and followed by a blank line (Llama 3.x). */
static char *tools_text(const json_t *arr, enum tools_form form)
{
	struct lmd_sb o = {0};
	json_t *fns = form == TOOLS_FUNCTIONS ? json_array() : NULL;
	size_t i;
	json_t *e;
	json_array_foreach(arr, i, e) {
		if (form == TOOLS_LINES) {
			lmd_sb_add(&o, "\n", 1);
			lmd_pyjson_add(&o, e, -1);
		} else if (form == TOOLS_BLOCKS) {
			lmd_pyjson_add(&o, e, 4);
			lmd_sb_str(&o, "\n\n");
		} else {
			/* LMDeploy sends Function.model_dump(): name, description, parameters (null when absent) */
			json_t *f = json_object_get(e, "function"), *g = json_object();
			json_t *d = json_object_get(f, "description"), *p = json_object_get(f, "parameters");
			json_object_set(g, "name", json_object_get(f, "name"));
			json_object_set_new(g, "description", d ? json_incref(d) : json_null());
			json_object_set_new(g, "parameters", p ? json_incref(p) : json_null());
			json_array_append_new(fns, g);
		}
	}
	if (fns)
		lmd_pyjson_add(&o, fns, -1);
	json_decref(fns);
	return lmd_sb_take(&o);
}

/* A tool call's arguments as the templates write them (tojson of the decoded object); arguments
 * that are not JSON stay a string. */
static char *arguments_text(const json_t *a)
{
	if (!json_is_string(a))
		return lmd_pyjson_dumps(a ? a : json_null(), -1);
	json_t *dec = json_loadb(json_string_value(a), json_string_length(a), JSON_DECODE_ANY, NULL);
	char *s = lmd_pyjson_dumps(dec ? dec : a, -1);
	json_decref(dec);
	return s;
}

/* An assistant message with tool calls (a JSON array of OpenAI tool calls). */
static int render_calls(struct lmd_sb *o, const struct lmd_chat_template *ct, const struct lmd_chat_msg *m, int at,
			struct lmd_err *err)
{
	json_t *calls = json_loads(m->tool_calls, 0, NULL);
	size_t i, n = json_array_size(calls);
	json_t *c;
	int rc = 0;
	if (!json_is_array(calls))
		rc = lmd_errorf(err, LMD_EINVAL, "message %d: 'tool_calls' is not a JSON array", at);
	else if (ct->tool_calls_max > 0 && n > (size_t)ct->tool_calls_max)
		rc = lmd_errorf(err, LMD_EINVAL, "message %d: the '%s' template takes at most %d tool call(s) a message, not %zu",
				at, ct->name, ct->tool_calls_max, n);
	struct lmd_sb text = {0};
	json_array_foreach(calls, i, c) {
		if (rc)
			break;
		json_t *f = json_object_get(c, "function");
		if (!json_is_object(f))
			f = c;
		const char *name = json_string_value(json_object_get(f, "name"));
		if (!name) {
			rc = lmd_errorf(err, LMD_EINVAL, "message %d: tool call %zu has no function name", at, i);
			break;
		}
		char *args = arguments_text(json_object_get(f, "arguments"));
		render_fmt(&text, ct, ct->tool_call, &(struct vars){.name = name, .arguments = args});
		text.failed |= !args;
		free(args);
	}
	json_decref(calls);
	char *ctext = lmd_sb_take(&text);
	if (!rc && !ctext)
		rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
	if (!rc) {
		struct vars v = {.content = m->content ? m->content : "", .calls = ctext, .role = m->role};
		v.content_len = strlen(v.content);
		struct lmd_sb ctn = {0};
		if (ct->tool_calls_content && v.content_len) {
			render_fmt(&ctn, ct, ct->tool_calls_content, &v);
			v.content = lmd_sb_cstr(&ctn);
			v.content_len = ctn.n;
		}
		render_fmt(o, ct, ct->assistant_tool_calls, &v);
		o->failed |= ctn.failed;
		free(ctn.p);
	}
	free(ctext);
	return rc;
}

char *lmd_chat_tool_call_prefix(const struct lmd_chat_template *ct, const char *name)
{
	if (!ct->tool_call)
		return NULL;
	struct lmd_sb o = {0};
	const char *fmt = ct->tool_call + space_run(ct->tool_call, strlen(ct->tool_call), 0);
	render_upto(&o, ct, fmt, &(struct vars){.name = name}, name ? "{arguments}" : "{name}");
	return lmd_sb_take(&o);
}

static int is_role(const struct lmd_chat_msg *m, int i, int n, int (*pred)(const char *))
{
	return i >= 0 && i < n && pred(m[i].role ? m[i].role : "");
}

int lmd_chat_render(const struct lmd_chat_template *ct, const struct lmd_chat_msg *msgs, int n,
		    int add_generation_prompt, const char *tools_json, char **out, size_t *len, struct lmd_err *err)
{
	struct lmd_sb o = {0}, sys_full = {0};
	char *tl = NULL, *ta = NULL, *tb = NULL;
	int rc = 0;
	*out = NULL;
	*len = 0;
	json_t *tools = tools_json ? json_loads(tools_json, 0, NULL) : NULL;
	if (tools_json && !json_is_array(tools)) {
		json_decref(tools);
		return lmd_errorf(err, LMD_EINVAL, "tools: expected a JSON array");
	}
	/* an empty list is no tools */
	if (json_array_size(tools)) {
		tl = ct->tools_in_system ? tools_text(tools, TOOLS_LINES) : NULL;
		ta = ct->tools_message ? tools_text(tools, TOOLS_FUNCTIONS) : NULL;
		tb = ct->tools_in_first_user ? tools_text(tools, TOOLS_BLOCKS) : NULL;
		if ((ct->tools_in_system && !tl) || (ct->tools_message && !ta) || (ct->tools_in_first_user && !tb))
			o.failed = 1;
	}
	int with_tools = json_array_size(tools) > 0;
	json_decref(tools);
	if (ct->prefix)
		render_fmt(&o, ct, ct->prefix, &(struct vars){0});
	int first = 0;
	const char *sys = NULL;
	if (n > 0 && !strcmp(msgs[0].role, "system")) {
		sys = msgs[0].content ? msgs[0].content : "";
		first = 1;
	} else if (ct->default_system) {
		sys = ct->default_system;
	}
	/* merged into the first user message (Llama 2), the system text is used as it is: that
	 * template strips the whole merged content instead */
	struct vars sv = content_of(ct, sys, "system");
	if (ct->system_first_user && sys)
		sv.content = sys, sv.content_len = strlen(sys);
	if (sys) {
		lmd_sb_add(&sys_full, sv.content, sv.content_len);
		if (tl)
			render_fmt(&sys_full, ct, ct->tools_in_system, &(struct vars){.tools = tl});
	}
	const char *sys_fmt = with_tools && ct->system_tools ? ct->system_tools : ct->system;
	if (sys && sys_fmt && !ct->system_first_user) {
		struct vars v = {.content = lmd_sb_cstr(&sys_full), .content_len = sys_full.n, .role = "system"};
		render_fmt(&o, ct, sys_fmt, &v);
	}
	if (ta)
		render_fmt(&o, ct, ct->tools_message, &(struct vars){.tools = ta, .role = "system"});
	if (tb) {
		/* Llama 3.x: the tools go into the first message after the system one, whatever its role */
		if (first >= n) {
			rc = lmd_errorf(err, LMD_EINVAL, "the '%s' template puts the tools in the first user message, and "
					"there is none", ct->name);
			goto out;
		}
		struct vars v = content_of(ct, msgs[first].content, "user");
		v.tools = tb;
		render_fmt(&o, ct, ct->tools_in_first_user, &v);
		first++;
	}
	int merged = !(sys && ct->system_first_user);
	for (int i = first; i < n; i++) {
		const char *role = msgs[i].role ? msgs[i].role : "user";
		int tool = is_tool_role(role) && ct->tool;
		if (!strcmp(role, "assistant") && msgs[i].tool_calls && ct->assistant_tool_calls && ct->tool_call &&
		    strcmp(msgs[i].tool_calls, "[]")) {
			if ((rc = render_calls(&o, ct, &msgs[i], i, err)))
				goto out;
			continue;
		}
		struct vars v = content_of(ct, msgs[i].content, role);
		char *quoted = NULL;
		if (tool) {  /* tool results are not trimmed (Llama 3.x's ipython block writes them as JSON) */
			v.content = msgs[i].content ? msgs[i].content : "", v.content_len = strlen(v.content);
			if (ct->tool_json) {
				json_t *s = json_stringn(v.content, v.content_len);
				quoted = s ? lmd_pyjson_dumps(s, -1) : NULL;
				json_decref(s);
				o.failed |= !quoted;
				v.content = quoted ? quoted : "", v.content_len = strlen(v.content);
			}
		}
		struct lmd_sb tmp = {0};
		if (!merged && !strcmp(role, "user")) {
			const char *raw = msgs[i].content ? msgs[i].content : "";
			struct vars mv = {.content = raw, .content_len = strlen(raw), .system = sys_full.p, .role = role};
			render_fmt(&tmp, ct, ct->system_first_user, &mv);
			v = content_of(ct, lmd_sb_cstr(&tmp), role);
			merged = 1;
		}
		const char *fmt;
		if (!strcmp(role, "user"))
			fmt = ct->user;
		else if (!strcmp(role, "assistant"))
			fmt = ct->assistant;
		else if (!strcmp(role, "system"))  /* a later system message: as any other role */
			fmt = ct->other ? ct->other : ct->system ? ct->system : ct->user;
		else if (tool)
			fmt = ct->tool;
		else
			fmt = ct->other ? ct->other : ct->user;
		if (tool && ct->tool_open && !is_role(msgs, i - 1, n, is_tool_role))
			render_fmt(&o, ct, ct->tool_open, &v);
		render_fmt(&o, ct, fmt, &v);
		if (tool && ct->tool_close && !is_role(msgs, i + 1, n, is_tool_role))
			render_fmt(&o, ct, ct->tool_close, &v);
		o.failed |= tmp.failed;
		free(tmp.p);
		free(quoted);
	}
	if (add_generation_prompt && ct->generation)
		render_fmt(&o, ct, ct->generation, &(struct vars){0});
out:
	o.failed |= sys_full.failed;
	free(sys_full.p);
	free(tl);
	free(ta);
	free(tb);
	if (rc) {
		free(o.p);
		return rc;
	}
	*len = o.n;
	if (!(*out = lmd_sb_take(&o)))
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	return 0;
}

int lmd_chat_render_file(const struct lmd_chat_template *ct, const char *path, int add_generation_prompt,
			 char **out, size_t *len, struct lmd_err *err)
{
	json_error_t je;
	json_t *root = json_load_file(path, 0, &je), *msgs = root, *tools = NULL;
	if (!root)
		return lmd_errorf(err, LMD_EINVAL, "'%s': bad JSON at line %d: %s", path, je.line, je.text);
	if (json_is_object(root)) {
		msgs = json_object_get(root, "messages");
		tools = json_object_get(root, "tools");
	}
	size_t n = json_array_size(msgs);
	if (!json_is_array(msgs)) {
		json_decref(root);
		return lmd_errorf(err, LMD_EINVAL, "'%s': expected an array of messages", path);
	}
	struct lmd_chat_msg *m = calloc(n + 1, sizeof(*m));
	char **calls = calloc(n + 1, sizeof(*calls));
	char *tj = tools ? json_dumps(tools, JSON_PRESERVE_ORDER) : NULL;
	int rc = 0;
	if (!m || !calls) {
		rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(msgs, i), *tc = json_object_get(e, "tool_calls");
		m[i].role = json_string_value(json_object_get(e, "role"));
		m[i].content = json_string_value(json_object_get(e, "content"));
		if (json_is_array(tc) && !(m[i].tool_calls = calls[i] = json_dumps(tc, JSON_PRESERVE_ORDER))) {
			rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
			goto out;
		}
		if (!m[i].role || (!m[i].content && !json_is_null(json_object_get(e, "content")) && !calls[i])) {
			rc = lmd_errorf(err, LMD_EINVAL, "'%s': message %zu needs string 'role' and 'content'", path, i);
			goto out;
		}
	}
	rc = lmd_chat_render(ct, m, (int)n, add_generation_prompt, tj, out, len, err);
out:
	for (size_t i = 0; calls && i < n; i++)
		free(calls[i]);
	free(calls);
	free(tj);
	free(m);
	json_decref(root);
	return rc;
}

int lmd_chat_stop_ids(const struct lmd_chat_template *ct, const struct lmd_tokenizer *t, int *ids, int max)
{
	int k = 0;
	for (int i = 0; i < ct->n_stop && k < max; i++) {
		int id = lmd_tokenizer_find(t, ct->stop[i]);
		if (id >= 0)
			ids[k++] = id;
	}
	return k;
}
