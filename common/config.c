#include <stdio.h>
#include <string.h>

#include "config.h"

static const char *arch_names[LMD_ARCH_COUNT] = {"llama", "qwen2", "internlm2"};
static const char *rope_names[LMD_ROPE_COUNT] = {"default", "linear", "dynamic", "llama3"};

const char *lmd_arch_name(enum lmd_arch a)
{
	return a >= 0 && a < LMD_ARCH_COUNT ? arch_names[a] : "?";
}

int lmd_arch_parse(const char *s)
{
	for (int i = 0; i < LMD_ARCH_COUNT; i++)
		if (!strcmp(s, arch_names[i]))
			return i;
	return -1;
}

const char *lmd_rope_name(enum lmd_rope_type t)
{
	return t >= 0 && t < LMD_ROPE_COUNT ? rope_names[t] : "?";
}

int lmd_rope_parse(const char *s)
{
	for (int i = 0; i < LMD_ROPE_COUNT; i++)
		if (!strcmp(s, rope_names[i]))
			return i;
	return -1;
}

int lmd_config_validate(const struct lmd_config *c, const char *what, struct lmd_err *err)
{
	const struct { const char *name; long v; } pos[] = {
		{"hidden_size", c->hidden}, {"intermediate_size", c->inter}, {"num_hidden_layers", c->layers},
		{"num_attention_heads", c->heads}, {"num_key_value_heads", c->kv_heads}, {"head_dim", c->head_dim},
		{"vocab_size", c->vocab}, {"max_position_embeddings", c->max_pos},
	};
	for (size_t i = 0; i < sizeof(pos) / sizeof(pos[0]); i++)
		if (pos[i].v <= 0 || pos[i].v > (1L << 24))
			return lmd_errorf(err, LMD_EFORMAT, "%s: '%s' is %ld, expected a positive size", what, pos[i].name, pos[i].v);
	if (c->heads % c->kv_heads)
		return lmd_errorf(err, LMD_EFORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
				  what, c->heads, c->kv_heads);
	if (c->head_dim % 2)
		return lmd_errorf(err, LMD_EFORMAT, "%s: head_dim %d is odd", what, c->head_dim);
	if (!(c->rms_eps > 0 && c->rms_eps < 1))
		return lmd_errorf(err, LMD_EFORMAT, "%s: rms_norm_eps %g is out of range", what, c->rms_eps);
	if (!(c->rope.theta > 0) || !(c->rope.factor > 0))
		return lmd_errorf(err, LMD_EFORMAT, "%s: rope theta %g / factor %g must be positive", what, c->rope.theta,
				  c->rope.factor);
	if (c->rope.type == LMD_ROPE_LLAMA3 &&
	    (c->rope.original_max_pos <= 0 || !(c->rope.high_freq_factor > c->rope.low_freq_factor)))
		return lmd_errorf(err, LMD_EFORMAT, "%s: llama3 rope scaling needs original_max_position_embeddings > 0 "
				  "and high_freq_factor > low_freq_factor", what);
	if (c->tp < 1)
		return lmd_errorf(err, LMD_EFORMAT, "%s: tp %d must be at least 1", what, c->tp);
	if (!lmd_dtype_is_float(c->dtype))
		return lmd_errorf(err, LMD_EFORMAT, "%s: weight dtype '%s' is not a float type", what, lmd_dtype_short(c->dtype));
	return LMD_OK;
}

struct count_ctx {
	int64_t n;
};

static int count_one(const char *name, const int64_t *shape, int ndim, int split_axis, void *ctx)
{
	(void)name, (void)split_axis;
	int64_t n = 1;
	for (int i = 0; i < ndim; i++)
		n *= shape[i];
	((struct count_ctx *)ctx)->n += n;
	return 0;
}

int64_t lmd_config_param_count(const struct lmd_config *c)
{
	struct count_ctx cc = {0};
	lmd_config_tensors(c, count_one, &cc);
	return cc.n;
}

int lmd_config_tensors(const struct lmd_config *c, lmd_tensor_fn fn, void *ctx)
{
	int64_t h = c->hidden, q = (int64_t)c->heads * c->head_dim, kv = (int64_t)c->kv_heads * c->head_dim;
	char name[64];
	int rc;
#define T(nm, ax, ...) do { const int64_t s_[] = {__VA_ARGS__}; \
		if ((rc = fn(nm, s_, (int)(sizeof(s_) / sizeof(s_[0])), ax, ctx))) return rc; } while (0)
#define L(suffix) (snprintf(name, sizeof(name), "layers.%d.%s", l, suffix), name)
	T("tok_embeddings", -1, c->vocab, h);
	for (int l = 0; l < c->layers; l++) {
		T(L("attn_norm"), -1, h);
		T(L("wq"), 0, q, h);
		T(L("wk"), 0, kv, h);
		T(L("wv"), 0, kv, h);
		if (c->qkv_bias) {
			T(L("bq"), 0, q);
			T(L("bk"), 0, kv);
			T(L("bv"), 0, kv);
		}
		T(L("wo"), 1, h, q);
		if (c->o_bias)
			T(L("bo"), -1, h);
		T(L("ffn_norm"), -1, h);
		T(L("w1"), 0, c->inter, h);
		T(L("w3"), 0, c->inter, h);
		T(L("w2"), 1, h, c->inter);
	}
	T("norm", -1, h);
	if (!c->tie_embeddings)
		T("output", -1, c->vocab, h);
#undef T
#undef L
	return 0;
}
