/* LMD_TEST_SCRIPT: scripted answers for tests (see serve.h and t/README). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"

int lmd_test_script_load(struct lmd_test_script *s, const char *path, const struct lmd_tokenizer *tok,
			 struct lmd_err *err)
{
	json_error_t je;
	memset(s, 0, sizeof(*s));
	json_t *a = json_load_file(path, 0, &je), *x;
	size_t i;
	if (!json_is_array(a)) {
		json_decref(a);
		return lmd_errorf(err, LMD_EFORMAT, "'%s': expected a JSON array of answers (%s)", path, je.text);
	}
	size_t n = json_array_size(a);
	s->ids = calloc(n + 1, sizeof(*s->ids));
	s->nids = calloc(n + 1, sizeof(*s->nids));
	s->delay_ms = calloc(n + 1, sizeof(*s->delay_ms));
	int rc = s->ids && s->nids && s->delay_ms ? 0 : lmd_errorf(err, LMD_ENOMEM, "out of memory");
	json_array_foreach(a, i, x) {
		const char *text = json_is_string(x) ? json_string_value(x) : json_string_value(json_object_get(x, "text"));
		if (rc)
			break;
		if (!text) {
			rc = lmd_errorf(err, LMD_EFORMAT, "'%s': answer %zu has no \"text\"", path, i);
			break;
		}
		int *t = NULL;
		size_t k = 0;
		if ((rc = lmd_tokenizer_encode(tok, text, strlen(text), 0, &t, &k, err)))
			break;
		s->ids[i] = malloc((k + 1) * sizeof(int32_t));
		for (size_t j = 0; s->ids[i] && j < k; j++)
			s->ids[i][j] = t[j];
		free(t);
		if (!s->ids[i]) {
			rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
			break;
		}
		s->nids[i] = (int)k;
		s->delay_ms[i] = (int)json_integer_value(json_object_get(x, "delay_ms"));
		s->n++;
	}
	json_decref(a);
	if (rc)
		lmd_test_script_free(s);
	return rc;
}

void lmd_test_script_free(struct lmd_test_script *s)
{
	for (int i = 0; s->ids && i < s->n; i++)
		free(s->ids[i]);
	free(s->ids);
	free(s->nids);
	free(s->delay_ms);
	memset(s, 0, sizeof(*s));
}
