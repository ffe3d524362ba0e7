#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"
#include "hfconfig.h"

static const struct {
	const char *hf_arch, *model_type;
	enum lmd_arch arch;
} archs[] = {
	{"LlamaForCausalLM", "llama", LMD_ARCH_LLAMA},
	{"Qwen2ForCausalLM", "qwen2", LMD_ARCH_QWEN2},
	{"InternLM2ForCausalLM", "internlm2", LMD_ARCH_INTERNLM2},
};

/* A number field: *out = the value, or def when the field is absent or null. */
static int num(json_t *o, const char *key, double def, double *out, const char *what, struct lmd_err *err)
{
	json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v)) {
		*out = def;
		return LMD_OK;
	}
	if (!json_is_number(v))
		return lmd_errorf(err, LMD_EFORMAT, "%s: field '%s' is not a number", what, key);
	*out = json_number_value(v);
	return LMD_OK;
}

enum { REQUIRED = INT_MIN };  /* integer()'s default for a field that must be there */

static int integer(json_t *o, const char *key, int def, int *out, const char *what, struct lmd_err *err)
{
	double d;
	json_t *v = json_object_get(o, key);
	if (def == REQUIRED && (!v || json_is_null(v)))
		return lmd_errorf(err, LMD_EFORMAT, "%s: field '%s' is missing", what, key);
	int rc = num(o, key, def, &d, what, err);
	if (rc)
		return rc;
	if (d != floor(d))
		return lmd_errorf(err, LMD_EFORMAT, "%s: field '%s' is not a whole number", what, key);
	if (fabs(d) > (1 << 30))
		return lmd_errorf(err, LMD_EFORMAT, "%s: field '%s' is %.0f, out of range (at most %d)", what, key, d, 1 << 30);
	*out = (int)d;
	return LMD_OK;
}

static int boolean(json_t *o, const char *key, int def, int *out, const char *what, struct lmd_err *err)
{
	json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v))
		*out = def;
	else if (json_is_boolean(v))
		*out = json_is_true(v);
	else
		return lmd_errorf(err, LMD_EFORMAT, "%s: field '%s' is not true or false", what, key);
	return LMD_OK;
}

static int find_arch(json_t *root, enum lmd_arch *a, const char *what, struct lmd_err *err)
{
	json_t *al = json_object_get(root, "architectures");
	const char *name = json_string_value(json_array_get(al, 0));
	const char *mt = json_string_value(json_object_get(root, "model_type"));
	for (size_t i = 0; i < sizeof(archs) / sizeof(archs[0]); i++)
		if ((name && !strcmp(name, archs[i].hf_arch)) || (!name && mt && !strcmp(mt, archs[i].model_type))) {
			*a = archs[i].arch;
			return LMD_OK;
		}
	if (name)
		return lmd_errorf(err, LMD_EFORMAT, "%s: architecture '%s' is not supported (supported: LlamaForCausalLM, "
				  "Qwen2ForCausalLM, InternLM2ForCausalLM)", what, name);
	if (mt)
		return lmd_errorf(err, LMD_EFORMAT, "%s: model_type '%s' is not supported", what, mt);
	return lmd_errorf(err, LMD_EFORMAT, "%s: no 'architectures' or 'model_type' field", what);
}

/* rope_scaling (classic) or rope_parameters (newer); theta comes from either place. */
static int parse_rope(struct lmd_config *c, json_t *root, const char *what, struct lmd_err *err)
{
	json_t *rp = json_object_get(root, "rope_parameters");
	json_t *rs = json_is_object(rp) ? rp : json_object_get(root, "rope_scaling");
	int rc;
	if ((rc = num(root, "rope_theta", 10000.0, &c->rope.theta, what, err)))
		return rc;
	c->rope.type = LMD_ROPE_DEFAULT;
	c->rope.factor = 1;
	c->rope.original_max_pos = c->max_pos;
	if (!rs || json_is_null(rs))
		return LMD_OK;
	if (!json_is_object(rs))
		return lmd_errorf(err, LMD_EFORMAT, "%s: field '%s' is not an object", what,
				  rs == rp ? "rope_parameters" : "rope_scaling");
	const char *field = rs == rp ? "rope_parameters" : "rope_scaling";
	if ((rc = num(rs, "rope_theta", c->rope.theta, &c->rope.theta, what, err)))
		return rc;
	json_t *t = json_object_get(rs, "rope_type");
	if (!t)
		t = json_object_get(rs, "type");
	const char *type = json_is_string(t) ? json_string_value(t) : "default";
	int rt = lmd_rope_parse(type);
	if (rt < 0)
		return lmd_errorf(err, LMD_EFORMAT, "%s: %s type '%s' is not supported (default, linear, dynamic, llama3)",
				  what, field, type);
	c->rope.type = rt;
	if (rt == LMD_ROPE_DEFAULT)
		return LMD_OK;
	if ((rc = num(rs, "factor", rt == LMD_ROPE_DEFAULT ? 1 : NAN, &c->rope.factor, what, err)))
		return rc;
	if (isnan(c->rope.factor))
		return lmd_errorf(err, LMD_EFORMAT, "%s: %s type '%s' needs a 'factor'", what, field, type);
	if (rt == LMD_ROPE_LLAMA3) {
		int om;
		if ((rc = num(rs, "low_freq_factor", 1, &c->rope.low_freq_factor, what, err)) ||
		    (rc = num(rs, "high_freq_factor", 4, &c->rope.high_freq_factor, what, err)) ||
		    (rc = integer(rs, "original_max_position_embeddings", 8192, &om, what, err)))
			return rc;
		c->rope.original_max_pos = om;
	}
	return LMD_OK;
}

static int parse_ids(json_t *v, int *ids, int *n, const char *what, const char *key, struct lmd_err *err)
{
	*n = 0;
	if (!v || json_is_null(v))
		return LMD_OK;
	if (json_is_integer(v)) {
		ids[(*n)++] = (int)json_integer_value(v);
		return LMD_OK;
	}
	if (!json_is_array(v))
		return lmd_errorf(err, LMD_EFORMAT, "%s: field '%s' is not an id or a list of ids", what, key);
	size_t i;
	json_t *x;
	json_array_foreach(v, i, x) {
		if (!json_is_integer(x))
			return lmd_errorf(err, LMD_EFORMAT, "%s: field '%s' holds a non-integer", what, key);
		if (*n == LMD_MAX_EOS)
			return lmd_errorf(err, LMD_EFORMAT, "%s: field '%s' lists more than %d ids", what, key, LMD_MAX_EOS);
		ids[(*n)++] = (int)json_integer_value(x);
	}
	return LMD_OK;
}

static int parse_dtype(struct lmd_config *c, json_t *root, const char *what, struct lmd_err *err)
{
	json_t *d = json_object_get(root, "dtype");
	if (!json_is_string(d))
		d = json_object_get(root, "torch_dtype");
	c->dtype = LMD_DTYPE_NONE;
	if (!d || json_is_null(d))
		return LMD_OK;
	if (json_is_string(d))
		c->dtype = lmd_dtype_parse(json_string_value(d));
	if (!lmd_dtype_is_float(c->dtype))
		return lmd_errorf(err, LMD_EFORMAT, "%s: dtype '%s' is not float32, float16 or bfloat16", what,
				  json_is_string(d) ? json_string_value(d) : "?");
	return LMD_OK;
}

static int parse_root(struct lmd_config *c, json_t *root, const char *what, struct lmd_err *err)
{
	int rc, hd, bias;
	const char *act = json_string_value(json_object_get(root, "hidden_act"));
	memset(c, 0, sizeof(*c));
	c->tp = 1;
	if ((rc = find_arch(root, &c->arch, what, err)))
		return rc;
	if (act && strcmp(act, "silu"))
		return lmd_errorf(err, LMD_EFORMAT, "%s: hidden_act '%s' is not supported (silu)", what, act);
	if ((rc = integer(root, "hidden_size", REQUIRED, &c->hidden, what, err)) ||
	    (rc = integer(root, "intermediate_size", REQUIRED, &c->inter, what, err)) ||
	    (rc = integer(root, "num_hidden_layers", REQUIRED, &c->layers, what, err)) ||
	    (rc = integer(root, "num_attention_heads", REQUIRED, &c->heads, what, err)) ||
	    (rc = integer(root, "num_key_value_heads", c->heads, &c->kv_heads, what, err)) ||
	    (rc = integer(root, "vocab_size", REQUIRED, &c->vocab, what, err)) ||
	    (rc = integer(root, "max_position_embeddings", 2048, &c->max_pos, what, err)) ||
	    (rc = num(root, "rms_norm_eps", 1e-6, &c->rms_eps, what, err)) ||
	    (rc = integer(root, "bos_token_id", -1, &c->bos, what, err)) ||
	    (rc = boolean(root, "tie_word_embeddings", 0, &c->tie_embeddings, what, err)) ||
	    (rc = parse_ids(json_object_get(root, "eos_token_id"), c->eos, &c->n_eos, what, "eos_token_id", err)) ||
	    (rc = parse_dtype(c, root, what, err)))
		return rc;
	if (c->heads <= 0)
		return lmd_errorf(err, LMD_EFORMAT, "%s: 'num_attention_heads' is missing or not positive", what);
	if ((rc = integer(root, "head_dim", c->hidden / c->heads, &hd, what, err)))
		return rc;
	c->head_dim = hd;
	if ((rc = parse_rope(c, root, what, err)))
		return rc;
	switch (c->arch) {
	case LMD_ARCH_LLAMA: {
		int mlp_bias;
		if ((rc = boolean(root, "attention_bias", 0, &bias, what, err)) ||
		    (rc = boolean(root, "mlp_bias", 0, &mlp_bias, what, err)))
			return rc;
		if (mlp_bias)
			return lmd_errorf(err, LMD_EFORMAT, "%s: mlp_bias true is not supported", what);
		c->qkv_bias = c->o_bias = bias;
		break;
	}
	case LMD_ARCH_QWEN2:
		c->qkv_bias = 1;
		break;
	case LMD_ARCH_INTERNLM2:
		if ((rc = boolean(root, "bias", 1, &bias, what, err)))
			return rc;
		c->qkv_bias = c->o_bias = bias;
		break;
	default:
		break;
	}
	return LMD_OK;
}

int lmd_hfconfig_parse(struct lmd_config *cfg, const char *json, size_t len, const char *what, const char *gen,
		       size_t gen_len, const char *gen_what, struct lmd_err *err)
{
	json_error_t je;
	json_t *root = json_loadb(json, len, 0, &je);
	int rc;
	if (!root)
		return lmd_errorf(err, LMD_EFORMAT, "%s: invalid JSON: %s (line %d)", what, je.text, je.line);
	if (!json_is_object(root))
		rc = lmd_errorf(err, LMD_EFORMAT, "%s: not a JSON object", what);
	else
		rc = parse_root(cfg, root, what, err);
	json_decref(root);
	if (rc || !gen)
		return rc;
	root = json_loadb(gen, gen_len, 0, &je);
	if (!root)
		return lmd_errorf(err, LMD_EFORMAT, "%s: invalid JSON: %s (line %d)", gen_what, je.text, je.line);
	json_t *eos = json_object_get(root, "eos_token_id");
	if (eos && !json_is_null(eos))
		rc = parse_ids(eos, cfg->eos, &cfg->n_eos, gen_what, "eos_token_id", err);
	json_t *bos = json_object_get(root, "bos_token_id");
	if (!rc && json_is_integer(bos))
		cfg->bos = (int)json_integer_value(bos);
	json_decref(root);
	return rc;
}

int lmd_hfconfig_load(struct lmd_config *cfg, const char *dir, struct lmd_err *err)
{
	char *path = lmd_path_join(dir, "config.json", err), *gpath = lmd_path_join(dir, "generation_config.json", err);
	char *buf = NULL, *gbuf = NULL;
	size_t len = 0, glen = 0;
	int rc = !path || !gpath ? LMD_ENOMEM : LMD_OK;
	if (!rc && !lmd_exists(path))
		rc = lmd_errorf(err, LMD_EIO, "'%s': missing config.json", dir);
	if (!rc)
		rc = lmd_read_file(path, &buf, &len, err);
	if (!rc && lmd_exists(gpath))
		rc = lmd_read_file(gpath, &gbuf, &glen, err);
	if (!rc)
		rc = lmd_hfconfig_parse(cfg, buf, len, path, gbuf, glen, gpath, err);
	free(buf);
	free(gbuf);
	free(path);
	free(gpath);
	return rc;
}

int lmd_hfgen_parse(struct lmd_hfgen *g, const char *json, size_t len, const char *what, struct lmd_err *err)
{
	json_error_t je;
	json_t *root = json_loadb(json, len, 0, &je), *v;
	int rc = LMD_OK;
	if (!root || !json_is_object(root)) {
		json_decref(root);
		return lmd_errorf(err, LMD_EFORMAT, "%s: not a JSON object", what);
	}
	static const struct { const char *key; size_t off; } reals[] = {
		{"temperature", offsetof(struct lmd_hfgen, temperature)}, {"top_p", offsetof(struct lmd_hfgen, top_p)},
		{"min_p", offsetof(struct lmd_hfgen, min_p)},
		{"repetition_penalty", offsetof(struct lmd_hfgen, repetition_penalty)},
	};
	for (size_t i = 0; !rc && i < sizeof(reals) / sizeof(reals[0]); i++) {
		double *d = (double *)((char *)g + reals[i].off);
		rc = num(root, reals[i].key, *d, d, what, err);
	}
	if (!rc)
		rc = integer(root, "top_k", g->top_k, &g->top_k, what, err);
	if (!rc)
		rc = integer(root, "max_new_tokens", g->max_new_tokens, &g->max_new_tokens, what, err);
	if (!rc && (v = json_object_get(root, "do_sample")) && json_is_false(v))
		g->temperature = 0;
	json_decref(root);
	return rc;
}

int lmd_hfgen_load(struct lmd_hfgen *g, const char *dir, struct lmd_err *err)
{
	char *path = lmd_path_join(dir, "generation_config.json", err), *buf = NULL;
	size_t len = 0;
	int rc = path ? LMD_OK : LMD_ENOMEM;
	if (!rc && lmd_exists(path) && !(rc = lmd_read_file(path, &buf, &len, err)))
		rc = lmd_hfgen_parse(g, buf, len, path, err);
	free(buf);
	free(path);
	return rc;
}

/* The HF name of a canonical tensor for the source's architecture ("" when it comes out of a packed tensor). */
void lmd_hf_name(const struct lmd_config *c, const char *canon, char *out, size_t n)
{
	static const struct { const char *canon, *llama, *internlm2; } map[] = {
		{"attn_norm", "input_layernorm.weight", "attention_norm.weight"},
		{"wq", "self_attn.q_proj.weight", ""}, {"wk", "self_attn.k_proj.weight", ""},
		{"wv", "self_attn.v_proj.weight", ""}, {"bq", "self_attn.q_proj.bias", ""},
		{"bk", "self_attn.k_proj.bias", ""}, {"bv", "self_attn.v_proj.bias", ""},
		{"wo", "self_attn.o_proj.weight", "attention.wo.weight"}, {"bo", "self_attn.o_proj.bias", "attention.wo.bias"},
		{"ffn_norm", "post_attention_layernorm.weight", "ffn_norm.weight"},
		{"w1", "mlp.gate_proj.weight", "feed_forward.w1.weight"}, {"w3", "mlp.up_proj.weight", "feed_forward.w3.weight"},
		{"w2", "mlp.down_proj.weight", "feed_forward.w2.weight"},
	};
	int il = c->arch == LMD_ARCH_INTERNLM2, layer;
	char rest[32];
	if (!strcmp(canon, "tok_embeddings"))
		snprintf(out, n, il ? "model.tok_embeddings.weight" : "model.embed_tokens.weight");
	else if (!strcmp(canon, "norm"))
		snprintf(out, n, "model.norm.weight");
	else if (!strcmp(canon, "output"))
		snprintf(out, n, il ? "output.weight" : "lm_head.weight");
	else if (sscanf(canon, "layers.%d.%31s", &layer, rest) == 2) {
		for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
			if (!strcmp(rest, map[i].canon)) {
				const char *h = il ? map[i].internlm2 : map[i].llama;
				if (*h)
					snprintf(out, n, "model.layers.%d.%s", layer, h);
				else
					out[0] = 0;
				return;
			}
		LMD_BUG("no HF name for '%s'", canon);
	} else {
		LMD_BUG("no HF name for '%s'", canon);
	}
}
