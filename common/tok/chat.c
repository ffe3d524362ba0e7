#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "file.h"
#include "share.h"

struct sb {
	char *p;
	size_t n, cap;
	int failed;
};

static void sb_add(struct sb *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t nc = b->cap ? b->cap * 2 : 256;
		while (nc < b->n + n + 1)
			nc *= 2;
		char *np = realloc(b->p, nc);
		if (!np) {
			b->failed = 1;
			return;
		}
		b->p = np;
		b->cap = nc;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

static void sb_str(struct sb *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

// --- the template file

static const struct {
	const char *key;
	size_t off;
} keys[] = {
#define K(f) {#f, offsetof(struct lmd_chat_template, f)}
	K(prefix), K(system), K(default_system), K(system_first_user), K(user), K(assistant), K(other), K(tool),
	K(tool_open), K(tool_close), K(generation), K(tools_in_system), K(tools_message), K(tool_call_open),
	K(tool_call_close),
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
		return lmd_errorf(err, LMD_EINVAL, "no chat template '%s' (%s)", name, err->msg);
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
	const char *content, *role, *system, *tools;
	size_t content_len;
};

static void render_fmt(struct sb *o, const struct lmd_chat_template *ct, const char *fmt, const struct vars *v)
{
	for (const char *p = fmt; *p;) {
		const char *br = strchr(p, '{');
		if (!br) {
			sb_str(o, p);
			return;
		}
		sb_add(o, p, (size_t)(br - p));
		const char *val = NULL;
		size_t n = 0;
		if (!strncmp(br, "{content}", 9))
			val = v->content, n = 9;
		else if (!strncmp(br, "{role}", 6))
			val = v->role, n = 6;
		else if (!strncmp(br, "{system}", 8))
			val = v->system, n = 8;
		else if (!strncmp(br, "{tools}", 7))
			val = v->tools, n = 7;
		else if (!strncmp(br, "{bos}", 5))
			val = ct->bos, n = 5;
		else if (!strncmp(br, "{eos}", 5))
			val = ct->eos, n = 5;
		if (!n) {
			sb_add(o, "{", 1);
			p = br + 1;
			continue;
		}
		if (val == v->content && v->content)
			sb_add(o, val, v->content_len);
		else if (val)
			sb_str(o, val);
		p = br + n;
	}
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Content, trimmed when the template says so. */
static struct vars content_of(const struct lmd_chat_template *ct, const char *s, const char *role)
{
	struct vars v = {.content = s ? s : "", .role = role};
	v.content_len = strlen(v.content);
	if (ct->trim) {
		while (v.content_len && is_space(*v.content))
			v.content++, v.content_len--;
		while (v.content_len && is_space(v.content[v.content_len - 1]))
			v.content_len--;
	}
	return v;
}

static int is_tool_role(const char *r)
{
	return !strcmp(r, "tool") || !strcmp(r, "ipython") || !strcmp(r, "environment") || !strcmp(r, "function");
}

/* Python writes \u escapes with lower-case hex digits, jansson with upper case. */
static void lower_escapes(char *s)
{
	for (; *s; s++) {
		if (*s != '\\' || !s[1])
			continue;
		if (s[1] == 'u')
			for (int i = 2; i < 6 && s[i]; i++)
				if (s[i] >= 'A' && s[i] <= 'F')
					s[i] = (char)(s[i] - 'A' + 'a');
		s++;
	}
}

/* Each tool's JSON (one "\n"-prefixed line each) or the whole array. */
static char *tools_text(const char *tools_json, int lines, struct lmd_err *err)
{
	json_error_t je;
	json_t *arr = json_loads(tools_json, 0, &je);
	if (!json_is_array(arr)) {
		json_decref(arr);
		lmd_errorf(err, LMD_EINVAL, "tools: expected a JSON array");
		return NULL;
	}
	struct sb o = {0};
	if (lines) {
		size_t i;
		json_t *e;
		json_array_foreach(arr, i, e) {
			char *s = json_dumps(e, JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
			sb_add(&o, "\n", 1);
			if (s) {
				lower_escapes(s);
				sb_str(&o, s);
			}
			o.failed |= !s;
			free(s);
		}
	} else {
		/* LMDeploy writes the whole list with Python's json.dumps: non-ASCII escaped */
		char *s = json_dumps(arr, JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
		if (s) {
			lower_escapes(s);
			sb_str(&o, s);
		}
		o.failed |= !s;
		free(s);
	}
	json_decref(arr);
	if (o.failed || !o.p) {
		free(o.p);
		if (o.failed)
			lmd_errorf(err, LMD_ENOMEM, "out of memory");
		return o.failed ? NULL : strdup("");
	}
	return o.p;
}

int lmd_chat_render(const struct lmd_chat_template *ct, const struct lmd_chat_msg *msgs, int n,
		    int add_generation_prompt, const char *tools_json, char **out, size_t *len, struct lmd_err *err)
{
	struct sb o = {0};
	char *tl = NULL, *ta = NULL;
	*out = NULL;
	*len = 0;
	if (tools_json && ((ct->tools_in_system && !(tl = tools_text(tools_json, 1, err))) ||
			   (ct->tools_message && !(ta = tools_text(tools_json, 0, err))))) {
		free(tl);
		return err->code;
	}
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
	/* the system block (unless merged into the first user message) */
	/* merged into the first user message (Llama 2), the system text is used as it is: that
	 * template strips the whole merged content instead */
	struct vars sv = content_of(ct, sys, "system");
	if (ct->system_first_user && sys)
		sv.content = sys, sv.content_len = strlen(sys);
	struct sb sys_full = {0};
	if (sys) {
		sb_add(&sys_full, sv.content, sv.content_len);
		if (tl && ct->tools_in_system) {
			struct vars tv = {.tools = tl};
			render_fmt(&sys_full, ct, ct->tools_in_system, &tv);
		}
		if (!sys_full.p)
			sb_add(&sys_full, "", 0);
	}
	if (sys && ct->system && !ct->system_first_user) {
		struct vars v = {.content = sys_full.p, .content_len = sys_full.n, .role = "system"};
		render_fmt(&o, ct, ct->system, &v);
	}
	if (ta && ct->tools_message) {
		struct vars v = {.tools = ta, .role = "system"};
		render_fmt(&o, ct, ct->tools_message, &v);
	}
	int merged = !(sys && ct->system_first_user);
	for (int i = first; i < n; i++) {
		const char *role = msgs[i].role ? msgs[i].role : "user";
		int tool = is_tool_role(role) && ct->tool;
		struct vars v = content_of(ct, msgs[i].content, role);
		if (tool)  /* tool results are not trimmed (Llama 3.1's ipython block) */
			v.content = msgs[i].content ? msgs[i].content : "", v.content_len = strlen(v.content);
		struct sb tmp = {0};
		if (!merged && !strcmp(role, "user")) {
			const char *raw = msgs[i].content ? msgs[i].content : "";
			struct vars mv = {.content = raw, .content_len = strlen(raw), .system = sys_full.p, .role = role};
			render_fmt(&tmp, ct, ct->system_first_user, &mv);
			v = content_of(ct, tmp.p ? tmp.p : "", role);
			merged = 1;
		}
		const char *fmt;
		if (!strcmp(role, "user"))
			fmt = ct->user;
		else if (!strcmp(role, "assistant"))
			fmt = ct->assistant;
		else if (!strcmp(role, "system"))
			fmt = ct->system ? ct->system : ct->other ? ct->other : ct->user;
		else if (is_tool_role(role) && ct->tool)
			fmt = ct->tool;
		else
			fmt = ct->other ? ct->other : ct->user;
		if (tool && ct->tool_open && (i == first || !is_tool_role(msgs[i - 1].role ? msgs[i - 1].role : "")))
			render_fmt(&o, ct, ct->tool_open, &v);
		render_fmt(&o, ct, fmt, &v);
		if (tool && ct->tool_close && (i + 1 == n || !is_tool_role(msgs[i + 1].role ? msgs[i + 1].role : "")))
			render_fmt(&o, ct, ct->tool_close, &v);
		free(tmp.p);
	}
	if (add_generation_prompt && ct->generation)
		render_fmt(&o, ct, ct->generation, &(struct vars){0});
	free(sys_full.p);
	free(tl);
	free(ta);
	if (o.failed || sys_full.failed) {
		free(o.p);
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	}
	if (!o.p)
		sb_add(&o, "", 0);
	if (!o.p)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	*out = o.p;
	*len = o.n;
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
	char *tj = tools ? json_dumps(tools, JSON_PRESERVE_ORDER) : NULL;
	int rc = 0;
	if (!m) {
		rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(msgs, i);
		m[i].role = json_string_value(json_object_get(e, "role"));
		m[i].content = json_string_value(json_object_get(e, "content"));
		if (!m[i].role || (!m[i].content && !json_is_null(json_object_get(e, "content")))) {
			rc = lmd_errorf(err, LMD_EINVAL, "'%s': message %zu needs string 'role' and 'content'", path, i);
			goto out;
		}
	}
	rc = lmd_chat_render(ct, m, (int)n, add_generation_prompt, tj, out, len, err);
out:
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
