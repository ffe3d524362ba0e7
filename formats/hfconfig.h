/**
 * HF config.json and generation_config.json -> struct lmd_config.
 *
 * Both spellings seen in the wild are read: classic (rope_theta, rope_scaling with "type" or
 * "rope_type", torch_dtype) and newer (rope_parameters, dtype). Architectures: LlamaForCausalLM,
 * Qwen2ForCausalLM, InternLM2ForCausalLM (by "architectures", else "model_type"); anything else is
 * refused by name. Absent fields take the HF defaults of that architecture's config class.
 */
#ifndef LMD_HFCONFIG_H
#define LMD_HFCONFIG_H

#include <stddef.h>

#include "config.h"
#include "err.h"

/**
 * Parse config.json text (what names it in messages) and, when gen is not NULL, generation_config.json
 * text (whose eos_token_id, an id or a list, wins over config.json's). cfg->dtype is LMD_DTYPE_NONE when
 * the config names no dtype.
 */
int lmd_hfconfig_parse(struct lmd_config *cfg, const char *json, size_t len, const char *what, const char *gen,
		       size_t gen_len, const char *gen_what, struct lmd_err *err);

/** Read dir/config.json and dir/generation_config.json (if present) and parse them. */
int lmd_hfconfig_load(struct lmd_config *cfg, const char *dir, struct lmd_err *err);

/**
 * The sampling defaults of generation_config.json (what a request that names none gets, as in
 * LMDeploy and vLLM). Fields the file does not give keep the values the caller put in g; "do_sample":
 * false makes temperature 0 (greedy). max_new_tokens 0 = not given.
 */
struct lmd_hfgen {
	double temperature, top_p, min_p, repetition_penalty;
	int top_k, max_new_tokens;
};
int lmd_hfgen_parse(struct lmd_hfgen *g, const char *json, size_t len, const char *what, struct lmd_err *err);
/** Read dir/generation_config.json into g when the file exists (g unchanged otherwise). */
int lmd_hfgen_load(struct lmd_hfgen *g, const char *dir, struct lmd_err *err);
/** The HF tensor name of canonical tensor canon for c's architecture ("" when it lives in a packed tensor). */
void lmd_hf_name(const struct lmd_config *c, const char *canon, char *out, size_t n);

#endif
