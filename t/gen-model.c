/*
 * gen-model: write an HF-format model directory with random weights, of any architecture and shape,
 * for tests and benchmarks; --break writes one of the deliberately broken variants.
 *
 *   gen-model [--arch llama|qwen2|internlm2] [--hidden N] [--inter N] [--layers N] [--heads N]
 *             [--kv-heads N] [--head-dim N] [--vocab N] [--dtype f16|bf16|f32] [--shards N]
 *             [--tie] [--bias] [--style classic|new] [--rope default|linear|dynamic|llama3]
 *             [--seed N] [--max-pos N] [--scaled] [--fast] [--break KIND] DIR
 *
 * Weights are N(0, std) (std 0.08, or 1/sqrt(in) with --scaled), norms U(0.5, 1.5); --fast draws each weight
 * as a sum of four uniforms of the same std (about 20x faster: 7B-parameter benchmark models). Break kinds:
 * no-config, bad-json, unsupported-arch, no-shard, truncated, header-past-end, overlap, out-of-range,
 * shape-mismatch, unknown-dtype, missing-tensor.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "config.h"
#include "file.h"
#include "safetensors.h"

struct gen {
	struct lmd_config c;
	enum lmd_dtype dtype;
	int shards, classic, scaled, fast;
	uint64_t rng;
	const char *brk, *dir;
	/* the tensors of the HF layout */
	int n;
	char *names[4096];
	struct lmd_tensor t[4096];
	int shard_of[4096];
};

static double uniform(struct gen *g)
{
	g->rng ^= g->rng << 13;
	g->rng ^= g->rng >> 7;
	g->rng ^= g->rng << 17;
	return ((g->rng >> 11) + 0.5) / 9007199254740992.0;
}

static double normal(struct gen *g)
{
	return sqrt(-2 * log(uniform(g))) * cos(6.283185307179586 * uniform(g));
}

static void die(const char *what)
{
	fprintf(stderr, "gen-model: %s\n", what);
	exit(1);
}

static void add(struct gen *g, const char *name, int64_t r, int64_t c, int norm, int shard)
{
	struct lmd_tensor *t = &g->t[g->n];
	t->dtype = g->dtype;
	t->ndim = c ? 2 : 1;
	t->shape[0] = r;
	t->shape[1] = c;
	size_t n = (size_t)(r * (c ? c : 1));
	float *f = malloc(n * sizeof(float));
	t->data = malloc(n * lmd_dtype_size(g->dtype));
	if (!f || !t->data) {
		fprintf(stderr, "gen-model: out of memory\n");
		exit(1);
	}
	double std = g->scaled && c ? 1 / sqrt((double)c) : 0.08;
	if (g->fast && !norm) {  /* Irwin-Hall: four 16-bit uniforms of one draw, variance 4/12 */
		float k = (float)(std * sqrt(3.0) / 32768.0);
		for (size_t i = 0; i < n; i++) {
			g->rng ^= g->rng << 13;
			g->rng ^= g->rng >> 7;
			g->rng ^= g->rng << 17;
			uint64_t u = g->rng;
			f[i] = k * ((float)(u & 0xffff) + (float)(u >> 16 & 0xffff) + (float)(u >> 32 & 0xffff) +
				    (float)(u >> 48) - 131070.0f);
		}
	} else {
		for (size_t i = 0; i < n; i++)
			f[i] = norm ? (float)(0.5 + uniform(g)) : (float)(std * normal(g));
	}
	lmd_dtype_convert(t->data, g->dtype, f, LMD_F32, n, NULL);
	free(f);
	g->names[g->n] = strdup(name);
	g->shard_of[g->n] = shard;
	g->n++;
}

/* Draw q, k and v as llama would, then replace them by InternLM2's packed wqkv (cols 0: a bias). */
static void pack_wqkv(struct gen *g, const char *name, int64_t cols, int shard)
{
	const struct lmd_config *c = &g->c;
	int G = c->heads / c->kv_heads, hd = c->head_dim;
	int first = g->n;
	add(g, "q", (int64_t)c->heads * hd, cols, 0, shard);
	add(g, "k", (int64_t)c->kv_heads * hd, cols, 0, shard);
	add(g, "v", (int64_t)c->kv_heads * hd, cols, 0, shard);
	size_t row = (size_t)(cols ? cols : 1) * lmd_dtype_size(g->dtype);
	char *out = malloc(row * (size_t)(c->heads + 2 * c->kv_heads) * hd), *o = out;
	if (!out)
		die("out of memory");
	for (int j = 0; j < c->kv_heads; j++) {
		memcpy(o, (char *)g->t[first].data + (size_t)j * G * hd * row, (size_t)G * hd * row);
		o += (size_t)G * hd * row;
		for (int p = 1; p <= 2; p++) {
			memcpy(o, (char *)g->t[first + p].data + (size_t)j * hd * row, (size_t)hd * row);
			o += (size_t)hd * row;
		}
	}
	for (int i = first; i < first + 3; i++) {
		free(g->t[i].data);
		free(g->names[i]);
	}
	g->n = first;
	uint64_t rng = g->rng;  /* the packed tensor's values are replaced: draw nothing for it */
	add(g, name, (int64_t)(c->heads + 2 * c->kv_heads) * hd, cols, 0, shard);
	g->rng = rng;
	free(g->t[first].data);
	g->t[first].data = out;
}

static void build(struct gen *g)
{
	const struct lmd_config *c = &g->c;
	int il = c->arch == LMD_ARCH_INTERNLM2, hd = c->head_dim;
	int64_t q = (int64_t)c->heads * hd, kv = (int64_t)c->kv_heads * hd, h = c->hidden;
	char nm[128];
	add(g, il ? "model.tok_embeddings.weight" : "model.embed_tokens.weight", c->vocab, h, 0, 0);
	for (int l = 0; l < c->layers; l++) {
		int s = (int)((int64_t)l * g->shards / c->layers);
#define N(fmt) (snprintf(nm, sizeof(nm), "model.layers.%d." fmt, l), nm)
		if (il) {
			/* the same random stream as llama: q, k, v drawn apart, then packed per kv head */
			add(g, N("attention_norm.weight"), h, 0, 1, s);
			pack_wqkv(g, N("attention.wqkv.weight"), h, s);
			if (c->qkv_bias)
				pack_wqkv(g, N("attention.wqkv.bias"), 0, s);
			add(g, N("attention.wo.weight"), h, q, 0, s);
			if (c->o_bias)
				add(g, N("attention.wo.bias"), h, 0, 0, s);
			add(g, N("ffn_norm.weight"), h, 0, 1, s);
			add(g, N("feed_forward.w1.weight"), c->inter, h, 0, s);
			add(g, N("feed_forward.w3.weight"), c->inter, h, 0, s);
			add(g, N("feed_forward.w2.weight"), h, c->inter, 0, s);
		} else {
			add(g, N("input_layernorm.weight"), h, 0, 1, s);
			add(g, N("self_attn.q_proj.weight"), q, h, 0, s);
			add(g, N("self_attn.k_proj.weight"), kv, h, 0, s);
			add(g, N("self_attn.v_proj.weight"), kv, h, 0, s);
			if (c->qkv_bias) {
				add(g, N("self_attn.q_proj.bias"), q, 0, 0, s);
				add(g, N("self_attn.k_proj.bias"), kv, 0, 0, s);
				add(g, N("self_attn.v_proj.bias"), kv, 0, 0, s);
			}
			add(g, N("self_attn.o_proj.weight"), h, q, 0, s);
			if (c->o_bias)
				add(g, N("self_attn.o_proj.bias"), h, 0, 0, s);
			add(g, N("post_attention_layernorm.weight"), h, 0, 1, s);
			add(g, N("mlp.gate_proj.weight"), c->inter, h, 0, s);
			add(g, N("mlp.up_proj.weight"), c->inter, h, 0, s);
			add(g, N("mlp.down_proj.weight"), h, c->inter, 0, s);
		}
#undef N
	}
	add(g, "model.norm.weight", h, 0, 1, g->shards - 1);
	if (!c->tie_embeddings)
		add(g, il ? "output.weight" : "lm_head.weight", c->vocab, h, 0, g->shards - 1);
}

static json_t *config_json(struct gen *g)
{
	const struct lmd_config *c = &g->c;
	static const char *arch[] = {"LlamaForCausalLM", "Qwen2ForCausalLM", "InternLM2ForCausalLM"};
	static const char *dt[] = {[LMD_F32] = "float32", [LMD_F16] = "float16", [LMD_BF16] = "bfloat16"};
	json_t *j = json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:b, s:i, s:i, s:s}",
			      "architectures", g->brk && !strcmp(g->brk, "unsupported-arch") ? "MixtralForCausalLM" : arch[c->arch],
			      "model_type", lmd_arch_name(c->arch), "hidden_size", c->hidden, "intermediate_size", c->inter,
			      "num_hidden_layers", c->layers, "num_attention_heads", c->heads, "num_key_value_heads",
			      c->kv_heads, "head_dim", c->head_dim, "vocab_size", c->vocab, "max_position_embeddings",
			      c->max_pos, "rms_norm_eps", c->rms_eps, "tie_word_embeddings", c->tie_embeddings,
			      "bos_token_id", 1, "eos_token_id", 2, "hidden_act", "silu");
	json_object_set_new(j, g->classic ? "torch_dtype" : "dtype", json_string(dt[g->dtype]));
	if (c->arch == LMD_ARCH_LLAMA)
		json_object_set_new(j, "attention_bias", json_boolean(c->qkv_bias));
	if (c->arch == LMD_ARCH_INTERNLM2)
		json_object_set_new(j, "bias", json_boolean(c->qkv_bias));
	json_t *rope = json_object();
	if (c->rope.type != LMD_ROPE_DEFAULT)
		json_object_set_new(rope, "factor", json_real(c->rope.factor));
	if (c->rope.type == LMD_ROPE_LLAMA3) {
		json_object_set_new(rope, "low_freq_factor", json_real(1));
		json_object_set_new(rope, "high_freq_factor", json_real(4));
		json_object_set_new(rope, "original_max_position_embeddings", json_integer(c->max_pos / 8));
	}
	json_object_set_new(rope, g->classic ? "type" : "rope_type", json_string(lmd_rope_name(c->rope.type)));
	if (g->classic) {
		json_object_set_new(j, "rope_theta", json_real(c->rope.theta));
		if (c->rope.type == LMD_ROPE_DEFAULT)
			json_object_set_new(j, "rope_scaling", json_null()), json_decref(rope);
		else
			json_object_set_new(j, "rope_scaling", rope);
	} else {
		json_object_set_new(rope, "rope_theta", json_real(c->rope.theta));
		json_object_set_new(j, "rope_parameters", rope);
	}
	return j;
}

static char *path(struct gen *g, const char *name)
{
	char *p = lmd_path_join(g->dir, name, NULL);
	if (!p)
		die("out of memory");
	return p;
}

/* Rewrite the JSON header of a safetensors file in place of the old one (data kept). */
static void edit_header(const char *file, const char *brk)
{
	char *buf;
	size_t len;
	if (lmd_read_file(file, &buf, &len, NULL))
		die("cannot read shard");
	uint64_t hl = 0;
	for (int i = 7; i >= 0; i--)
		hl = hl << 8 | (unsigned char)buf[i];
	json_t *h = json_loadb(buf + 8, hl, 0, NULL);
	const char *first = NULL, *second = NULL, *k;
	json_t *v;
	json_object_foreach(h, k, v) {
		if (!strcmp(k, "__metadata__"))
			continue;
		if (!first)
			first = k;
		else if (!second)
			second = k;
	}
	json_t *a = json_object_get(h, first), *b = json_object_get(h, second);
	if (!strcmp(brk, "overlap"))
	{
		json_t *ao = json_object_get(a, "data_offsets"), *bo = json_object_get(b, "data_offsets");
		json_int_t a0 = json_integer_value(json_array_get(ao, 0));
		json_int_t bl = json_integer_value(json_array_get(bo, 1)) - json_integer_value(json_array_get(bo, 0));
		json_object_set_new(b, "data_offsets", json_pack("[I,I]", a0 + 2, a0 + 2 + bl));
	}
	else if (!strcmp(brk, "out-of-range"))
		json_object_set_new(a, "data_offsets", json_pack("[I,I]", (json_int_t)(len * 2), (json_int_t)(len * 2 + 8)));
	else if (!strcmp(brk, "shape-mismatch"))
		json_object_set_new(a, "shape", json_pack("[i,i]", 3, 5));
	else if (!strcmp(brk, "unknown-dtype"))
		json_object_set_new(a, "dtype", json_string("F8_E9M9"));
	char *nh = json_dumps(h, JSON_COMPACT);
	size_t nl = strlen(nh);
	FILE *f = fopen(file, "wb");
	unsigned char lb[8];
	for (int i = 0; i < 8; i++)
		lb[i] = (unsigned char)((uint64_t)nl >> (8 * i));
	if (!f || fwrite(lb, 1, 8, f) != 8 || fwrite(nh, 1, nl, f) != nl ||
	    fwrite(buf + 8 + hl, 1, len - 8 - hl, f) != len - 8 - hl || fclose(f))
		die("cannot rewrite shard");
	free(nh);
	json_decref(h);
	free(buf);
}

static void write_model(struct gen *g)
{
	struct lmd_err err = {0};
	const char *brk = g->brk ? g->brk : "";
	mkdir(g->dir, 0755);
	json_t *idx = json_object(), *wm = json_object();
	char fn[64];
	for (int s = 0; s < g->shards; s++) {
		const char *names[4096];
		struct lmd_tensor ts[4096];
		int n = 0;
		for (int i = 0; i < g->n; i++) {
			if (g->shard_of[i] != s || (!strcmp(brk, "missing-tensor") && i == 1))
				continue;
			names[n] = g->names[i];
			ts[n++] = g->t[i];
		}
		if (g->shards == 1)
			snprintf(fn, sizeof(fn), "model.safetensors");
		else
			snprintf(fn, sizeof(fn), "model-%05d-of-%05d.safetensors", s + 1, g->shards);
		for (int i = 0; i < n; i++)
			json_object_set_new(wm, names[i], json_string(fn));
		char *p = path(g, fn);
		if (lmd_safetensors_write(p, names, ts, n, "{\"format\": \"pt\"}", &err))
			die(err.msg);
		if (s == 0 && (!strcmp(brk, "overlap") || !strcmp(brk, "out-of-range") || !strcmp(brk, "shape-mismatch") ||
			       !strcmp(brk, "unknown-dtype")))
			edit_header(p, brk);
		if (s == g->shards - 1 && !strcmp(brk, "truncated")) {
			struct stat st;
			if (stat(p, &st) || truncate(p, st.st_size / 2))
				die("cannot truncate");
		}
		if (s == 0 && !strcmp(brk, "header-past-end")) {
			FILE *f = fopen(p, "r+b");
			unsigned char big[8] = {0, 0, 0, 0, 1, 0, 0, 0};
			if (!f || fwrite(big, 1, 8, f) != 8 || fclose(f))
				die("cannot patch header");
		}
		if (!strcmp(brk, "no-shard") && s == g->shards - 1)
			unlink(p);
		free(p);
	}
	if (g->shards > 1) {
		json_object_set_new(idx, "metadata", json_pack("{s:I}", "total_size", (json_int_t)0));
		json_object_set(idx, "weight_map", wm);
		char *p = path(g, "model.safetensors.index.json");
		json_dump_file(idx, p, JSON_INDENT(2));
		free(p);
	}
	json_decref(wm);
	json_decref(idx);
	if (strcmp(brk, "no-config")) {
		char *p = path(g, "config.json");
		if (!strcmp(brk, "bad-json")) {
			FILE *f = fopen(p, "w");
			if (!f || fputs("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 12,,}", f) < 0 || fclose(f))
				die("cannot write config");
		} else {
			json_t *cj = config_json(g);
			json_dump_file(cj, p, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
			json_decref(cj);
		}
		free(p);
	}
	char *p = path(g, "generation_config.json");
	FILE *f = fopen(p, "w");
	if (!f || fputs("{\"bos_token_id\": 1, \"eos_token_id\": [2]}\n", f) < 0 || fclose(f))
		die("cannot write generation_config.json");
	free(p);
}

enum { O_ARCH = 256, O_HIDDEN, O_INTER, O_LAYERS, O_HEADS, O_KV, O_HD, O_VOCAB, O_DTYPE, O_SHARDS, O_TIE, O_BIAS,
       O_STYLE, O_ROPE, O_SEED, O_BREAK, O_SCALED, O_FAST, O_MAXPOS };

static const struct lmd_opt opts[] = {
	{"arch", O_ARCH, "ARCH", "llama (default), qwen2 or internlm2"},
	{"hidden", O_HIDDEN, "N", "hidden size (default 64)"},
	{"inter", O_INTER, "N", "intermediate size (default 128)"},
	{"layers", O_LAYERS, "N", "layers (default 2)"},
	{"heads", O_HEADS, "N", "attention heads (default 4)"},
	{"kv-heads", O_KV, "N", "key/value heads (default 2)"},
	{"head-dim", O_HD, "N", "head dimension (default hidden/heads)"},
	{"vocab", O_VOCAB, "N", "vocabulary size (default 256)"},
	{"dtype", O_DTYPE, "TYPE", "f16 (default), bf16 or f32"},
	{"shards", O_SHARDS, "N", "safetensors shards (default 1)"},
	{"tie", O_TIE, NULL, "tie the output to the embeddings"},
	{"bias", O_BIAS, NULL, "q/k/v (and o, for llama and internlm2) biases"},
	{"style", O_STYLE, "STYLE", "config.json spelling: new (default) or classic"},
	{"rope", O_ROPE, "TYPE", "default, linear, dynamic or llama3"},
	{"seed", O_SEED, "N", "random seed (default 1)"},
	{"scaled", O_SCALED, NULL, "weights N(0, 1/in) instead of N(0, 0.08)"},
	{"max-pos", O_MAXPOS, "N", "max_position_embeddings (default 512)"},
	{"fast", O_FAST, NULL, "approximate normals (sum of four uniforms): for large benchmark models"},
	{"break", O_BREAK, "KIND", "write a broken variant (see the source)"},
	{0},
};

int main(int argc, char **argv)
{
	struct lmd_cli cli = {.prog = "gen-model", .synopsis = "[OPTIONS] DIR",
			      .purpose = "Write an HF model directory with random weights.", .opts = opts};
	static struct gen g;
	struct lmd_config *c = &g.c;
	const char *arg;
	int k, hd = 0;
	*c = (struct lmd_config){.hidden = 64, .inter = 128, .layers = 2, .heads = 4, .kv_heads = 2, .vocab = 256,
				 .max_pos = 512, .rms_eps = 1e-6, .rope = {.theta = 10000, .factor = 2}, .tp = 1};
	g.dtype = LMD_F16;
	g.shards = 1;
	g.rng = 1;
	while ((k = lmd_cli_next(&cli, argc, argv, &arg)) != -1) {
		switch (k) {
		case O_ARCH:
			if (lmd_arch_parse(arg) < 0)
				lmd_usage(&cli, "unknown arch '%s'", arg);
			c->arch = lmd_arch_parse(arg);
			break;
		case O_HIDDEN: c->hidden = (int)lmd_cli_long(&cli, "hidden", arg, 2, 1 << 16); break;
		case O_INTER: c->inter = (int)lmd_cli_long(&cli, "inter", arg, 1, 1 << 18); break;
		case O_LAYERS: c->layers = (int)lmd_cli_long(&cli, "layers", arg, 1, 512); break;
		case O_HEADS: c->heads = (int)lmd_cli_long(&cli, "heads", arg, 1, 1024); break;
		case O_KV: c->kv_heads = (int)lmd_cli_long(&cli, "kv-heads", arg, 1, 1024); break;
		case O_HD: hd = (int)lmd_cli_long(&cli, "head-dim", arg, 2, 1024); break;
		case O_VOCAB: c->vocab = (int)lmd_cli_long(&cli, "vocab", arg, 4, 1 << 20); break;
		case O_DTYPE:
			g.dtype = lmd_dtype_parse(arg);
			if (!lmd_dtype_is_float(g.dtype))
				lmd_usage(&cli, "bad dtype '%s'", arg);
			break;
		case O_SHARDS: g.shards = (int)lmd_cli_long(&cli, "shards", arg, 1, 64); break;
		case O_TIE: c->tie_embeddings = 1; break;
		case O_BIAS: c->qkv_bias = 1; c->o_bias = 1; break;
		case O_STYLE: g.classic = !strcmp(arg, "classic"); break;
		case O_ROPE:
			if (lmd_rope_parse(arg) < 0)
				lmd_usage(&cli, "unknown rope '%s'", arg);
			c->rope.type = lmd_rope_parse(arg);
			break;
		case O_SEED: g.rng = (uint64_t)lmd_cli_long(&cli, "seed", arg, 1, 1L << 62); break;
		case O_SCALED: g.scaled = 1; break;
		case O_FAST: g.fast = 1; break;
		case O_MAXPOS: c->max_pos = (int)lmd_cli_long(&cli, "max-pos", arg, 2, 1 << 24); break;
		case O_BREAK: g.brk = arg; break;
		}
	}
	if (argc - optind != 1)
		lmd_usage(&cli, "expected DIR");
	g.dir = argv[optind];
	c->head_dim = hd ? hd : c->hidden / c->heads;
	if (c->arch == LMD_ARCH_QWEN2) {
		c->o_bias = 0;
		c->qkv_bias = 1;
	}
	if (g.shards > c->layers)
		g.shards = c->layers;
	build(&g);
	write_model(&g);
	for (int i = 0; i < g.n; i++) {
		free(g.names[i]);
		free(g.t[i].data);
	}
	return 0;
}
