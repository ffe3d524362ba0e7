/* The tool fields of chat requests (serve.h: lmd_api_decode_tools) and the start of a forced call. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"
#include "tok/toolcall.h"

static int tools_bad(struct lmd_api_error *e, const char *param, const char *what)
{
	return lmd_api_errorf(e, 400, param, NULL, "'%s' must be %s", param, what);
}

/* OpenAI's rule for function names: 1 to 64 of a-z A-Z 0-9 _ - */
static int good_name(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n < 1 || n > 64)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
		      s[i] == '_' || s[i] == '-'))
			return 0;
	return 1;
}

static json_t *present(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_null(v) ? NULL : v;
}

static int check_tools(json_t *tools, struct lmd_api_error *e)
{
	size_t i;
	json_t *t;
	char param[64];
	if (!json_is_array(tools))
		return tools_bad(e, "tools", "a list of {\"type\": \"function\", \"function\": {\"name\", ...}}");
	json_array_foreach(tools, i, t) {
		json_t *f = json_object_get(t, "function"), *type = json_object_get(t, "type");
		snprintf(param, sizeof(param), "tools[%zu]", i);
		if (!json_is_object(t) || !json_is_object(f) || (type && (!json_is_string(type) ||
								      strcmp(json_string_value(type), "function"))))
			return tools_bad(e, param, "{\"type\": \"function\", \"function\": {\"name\", ...}}");
		snprintf(param, sizeof(param), "tools[%zu].function.name", i);
		if (!good_name(json_string_value(json_object_get(f, "name"))))
			return tools_bad(e, param, "1 to 64 letters, digits, '_' or '-'");
		snprintf(param, sizeof(param), "tools[%zu].function.parameters", i);
		if (present(f, "parameters") && !json_is_object(present(f, "parameters")))
			return tools_bad(e, param, "a JSON schema object");
		snprintf(param, sizeof(param), "tools[%zu].function.description", i);
		if (present(f, "description") && !json_is_string(present(f, "description")))
			return tools_bad(e, param, "a string");
	}
	return 0;
}

static int check_calls(json_t *calls, int at, struct lmd_api_error *e)
{
	size_t k;
	json_t *c;
	char param[80];
	snprintf(param, sizeof(param), "messages[%d].tool_calls", at);
	if (!json_is_array(calls))
		return tools_bad(e, param, "a list of tool calls");
	json_array_foreach(calls, k, c) {
		json_t *f = json_object_get(c, "function");
		snprintf(param, sizeof(param), "messages[%d].tool_calls[%zu]", at, k);
		if (!json_is_object(f) || !json_is_string(json_object_get(f, "name")) ||
		    !json_is_string(json_object_get(f, "arguments")))
			return tools_bad(e, param, "{\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\": "
					 "a JSON string}}");
	}
	return 0;
}

int lmd_api_decode_tools(struct lmd_api_request *q, struct lmd_api_error *e)
{
	json_t *tools = present(q->body, "tools"), *choice = present(q->body, "tool_choice");
	json_t *msgs = json_object_get(q->body, "messages"), *m;
	size_t i;
	if (tools && check_tools(tools, e))
		return -1;
	int any = json_array_size(tools) > 0;
	q->tool_choice = any ? LMD_TOOL_AUTO : LMD_TOOL_NONE;
	if (json_is_string(choice)) {
		const char *c = json_string_value(choice);
		if (!strcmp(c, "none"))
			q->tool_choice = LMD_TOOL_NONE;
		else if (!strcmp(c, "auto"))
			q->tool_choice = any ? LMD_TOOL_AUTO : LMD_TOOL_NONE;
		else if (!strcmp(c, "required"))
			q->tool_choice = LMD_TOOL_REQUIRED;
		else
			return tools_bad(e, "tool_choice", "\"none\", \"auto\", \"required\" or {\"type\": \"function\", "
					 "\"function\": {\"name\"}}");
	} else if (choice) {
		q->tool_name = json_string_value(json_object_get(json_object_get(choice, "function"), "name"));
		if (!json_is_object(choice) || !q->tool_name)
			return tools_bad(e, "tool_choice", "\"none\", \"auto\", \"required\" or {\"type\": \"function\", "
					 "\"function\": {\"name\"}}");
		q->tool_choice = LMD_TOOL_NAMED;
	}
	if ((q->tool_choice == LMD_TOOL_REQUIRED || q->tool_choice == LMD_TOOL_NAMED) && !any)
		return lmd_api_errorf(e, 400, "tool_choice", NULL, "'tool_choice' asks for a tool call, and 'tools' offers none");
	if (q->tool_choice != LMD_TOOL_NONE) {
		q->tool_names = lmd_tool_names(tools, q->tool_name, &q->ntool_names);
		if (!q->ntool_names)
			return lmd_api_errorf(e, 400, "tool_choice", NULL, "'tool_choice' names '%s', which 'tools' does not offer",
					      q->tool_name);
		json_t *shown = tools;
		if (q->tool_name) {  /* only the named function is shown */
			shown = json_array();
			json_array_foreach(tools, i, m)
				if (!strcmp(json_string_value(json_object_get(json_object_get(m, "function"), "name")),
					    q->tool_name))
					json_array_append(shown, m);
		}
		q->tools_json = json_dumps(shown, JSON_PRESERVE_ORDER);
		if (shown != tools)
			json_decref(shown);
		if (!q->tools_json)
			return lmd_api_errorf(e, 500, NULL, NULL, "out of memory");
	}
	/* the assistant messages' calls go back into the prompt as the template writes them */
	json_array_foreach(msgs, i, m) {
		json_t *calls = present(m, "tool_calls");
		if (!calls || (int)i >= q->nmsg || strcmp(q->msgs[i].role, "assistant") || !json_array_size(calls))
			continue;
		if (check_calls(calls, (int)i, e))
			return -1;
		if (!q->tool_calls && !(q->tool_calls = calloc(q->nmsg, sizeof(*q->tool_calls))))
			return lmd_api_errorf(e, 500, NULL, NULL, "out of memory");
		if (!(q->tool_calls[i] = json_dumps(calls, JSON_PRESERVE_ORDER)))
			return lmd_api_errorf(e, 500, NULL, NULL, "out of memory");
		q->msgs[i].tool_calls = q->tool_calls[i];
	}
	return 0;
}

void lmd_api_tools_free(struct lmd_api_request *q)
{
	for (int i = 0; q->tool_calls && i < q->nmsg; i++)
		free(q->tool_calls[i]);
	free(q->tool_calls);
	free(q->tools_json);
	free(q->tool_names);
	q->tool_calls = NULL;
	q->tools_json = NULL;
	q->tool_names = NULL;
}

char *lmd_api_tool_prefix(const struct lmd_api_request *q, const struct lmd_chat_template *ct)
{
	if (q->tool_choice != LMD_TOOL_REQUIRED && q->tool_choice != LMD_TOOL_NAMED)
		return NULL;
	return lmd_chat_tool_call_prefix(ct, q->tool_choice == LMD_TOOL_NAMED ? q->tool_name : NULL);
}
