/**
 * Model hyperparameters: one struct for every architecture, filled from an HF config.json
 * (formats/hfconfig.c) or from an lmd model directory's index (formats/modeldir.c).
 *
 * Canonical tensor names, the same for every architecture (shapes are [out, in] as in HF):
 *   tok_embeddings        [vocab, hidden]
 *   layers.L.attn_norm    [hidden]
 *   layers.L.wq           [heads*head_dim, hidden]     layers.L.bq [heads*head_dim]      (qkv_bias)
 *   layers.L.wk, .wv      [kv_heads*head_dim, hidden]  layers.L.bk, .bv [kv_heads*head_dim] (qkv_bias)
 *   layers.L.wo           [hidden, heads*head_dim]     layers.L.bo [hidden]              (o_bias)
 *   layers.L.ffn_norm     [hidden]
 *   layers.L.w1 (gate), .w3 (up) [inter, hidden];  layers.L.w2 (down) [hidden, inter]
 *   norm                  [hidden]
 *   output                [vocab, hidden]   absent when tie_embeddings (tok_embeddings is used)
 * q and k rows keep HF's order (rotary pairs element i with i + head_dim/2 in each head).
 */
#ifndef LMD_CONFIG_H
#define LMD_CONFIG_H

#include "err.h"
#include "tensor.h"

enum lmd_arch { LMD_ARCH_LLAMA, LMD_ARCH_QWEN2, LMD_ARCH_INTERNLM2, LMD_ARCH_COUNT };
enum lmd_rope_type { LMD_ROPE_DEFAULT, LMD_ROPE_LINEAR, LMD_ROPE_DYNAMIC, LMD_ROPE_LLAMA3, LMD_ROPE_COUNT };

#define LMD_MAX_EOS 8

struct lmd_rope {
	enum lmd_rope_type type;
	double theta;             /* base, e.g. 10000 */
	double factor;            /* linear / dynamic / llama3 scaling factor (1 when none) */
	double low_freq_factor;   /* llama3 */
	double high_freq_factor;  /* llama3 */
	int original_max_pos;     /* llama3: original_max_position_embeddings; dynamic: max_position_embeddings */
};

struct lmd_config {
	enum lmd_arch arch;
	int hidden, inter, layers, heads, kv_heads, head_dim, vocab;
	int max_pos;              /* max_position_embeddings */
	double rms_eps;
	struct lmd_rope rope;
	int tie_embeddings;       /* no 'output' tensor: logits use tok_embeddings */
	int qkv_bias, o_bias;     /* bq/bk/bv and bo present */
	enum lmd_dtype dtype;     /* the weights' dtype */
	int bos;                  /* -1 when none */
	int eos[LMD_MAX_EOS];     /* generation stop ids */
	int n_eos;
	int tp;                   /* ranks the weights are split for (1 = unsplit) */
	char model_name[128];     /* free text, "" when unknown */
	char chat_template[64];   /* template name in share/templates, "" = choose automatically */
};

/** Architecture names as written in the lmd index ("llama", "qwen2", "internlm2"). */
const char *lmd_arch_name(enum lmd_arch a);
int lmd_arch_parse(const char *s);  /* -1 when unknown */
const char *lmd_rope_name(enum lmd_rope_type t);
int lmd_rope_parse(const char *s);  /* -1 when unknown */

/** Check the numbers are consistent (heads divisible by kv_heads, sizes positive, ...). what names the source. */
int lmd_config_validate(const struct lmd_config *c, const char *what, struct lmd_err *err);

/** Number of parameters of the full (unsplit) model. */
int64_t lmd_config_param_count(const struct lmd_config *c);

/**
 * The canonical tensors the architecture needs, in file order: calls fn(name, shape, ndim, split_axis, ctx)
 * for each; split_axis is the axis split across tensor-parallel ranks (0 = rows, 1 = columns, -1 = replicated).
 * Stops and returns fn's value when it is nonzero.
 */
typedef int (*lmd_tensor_fn)(const char *name, const int64_t *shape, int ndim, int split_axis, void *ctx);
int lmd_config_tensors(const struct lmd_config *c, lmd_tensor_fn fn, void *ctx);

#endif
