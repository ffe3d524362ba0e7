#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "convert/convert.h"
#include "cuda.h"
#include "kvparams.h"
#include "runner.h"

void lmd_gen_params_default(struct lmd_gen_params *p)
{
	memset(p, 0, sizeof(*p));
	lmd_sampling_default(&p->sampling);
	p->max_tokens = 256;
	uint64_t seed = 0;  /* random unless --seed is given, as LMDeploy and llama.cpp do */
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
		seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	p->sampling.seed = seed & 0x7fffffffffffffffULL;
}

void lmd_gen_params_apply(const struct lmd_gen_params *p, struct lmd_request *req)
{
	req->sampling = p->sampling;
	req->max_tokens = p->max_tokens;
	req->ignore_eos = p->ignore_eos;
	req->stop = p->stop;
	req->n_stop = p->n_stop;
}

static int prompt(const struct lmd_runner *r, const char *text, const struct lmd_chat_msg *msgs, int nmsg,
		  const char *tools_json, const char *suffix, int32_t **ids, int *n, struct lmd_err *err)
{
	char *rendered = NULL;
	size_t len = 0, cnt = 0;
	int *tk = NULL, rc, base = r->tmpl.name && !strcmp(r->tmpl.name, "base");
	struct lmd_chat_msg one = {.role = "user", .content = text};
	for (int i = 0; msgs && i < nmsg; i++)
		if (!msgs[i].content || !lmd_utf8_valid(msgs[i].content, strlen(msgs[i].content)))
			return lmd_errorf(err, LMD_EINVAL, "message %d: content is missing or not UTF-8", i);
	if (!msgs && (!text || !*text))
		return lmd_errorf(err, LMD_EINVAL, "the prompt is empty");
	if (!msgs && !lmd_utf8_valid(text, strlen(text)))
		return lmd_errorf(err, LMD_EINVAL, "the prompt is not valid UTF-8");
	if (msgs || !base) {
		if ((rc = lmd_chat_render(&r->tmpl, msgs ? msgs : &one, msgs ? nmsg : 1, 1, tools_json, &rendered, &len, err)))
			return rc;
		if (suffix && *suffix) {
			char *more = realloc(rendered, len + strlen(suffix) + 1);
			if (!more) {
				free(rendered);
				return lmd_errorf(err, LMD_ENOMEM, "out of memory");
			}
			memcpy(more + len, suffix, strlen(suffix) + 1);
			len += strlen(suffix);
			rendered = more;
		}
		text = rendered;
	} else {
		len = strlen(text);
	}
	rc = lmd_tokenizer_encode(&r->tok, text, len, base, &tk, &cnt, err);
	free(rendered);
	if (rc)
		return rc;
	if (!cnt) {
		free(tk);
		return lmd_errorf(err, LMD_EINVAL, "the prompt is empty");
	}
	*ids = malloc(cnt * sizeof(**ids));
	if (!*ids) {
		free(tk);
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < cnt; i++)
		(*ids)[i] = tk[i];
	*n = (int)cnt;
	free(tk);
	return LMD_OK;
}

int lmd_runner_prompt(const struct lmd_runner *r, const char *text, const struct lmd_chat_msg *msgs, int nmsg,
		      int32_t **ids, int *n, struct lmd_err *err)
{
	return prompt(r, text, msgs, nmsg, NULL, NULL, ids, n, err);
}

int lmd_runner_prompt_tools(const struct lmd_runner *r, const struct lmd_chat_msg *msgs, int nmsg,
			    const char *tools_json, const char *suffix, int32_t **ids, int *n, struct lmd_err *err)
{
	return prompt(r, NULL, msgs, nmsg, tools_json, suffix, ids, n, err);
}

size_t lmd_host_mem(const char *field)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256], fmt[64];
	size_t kb = 0;
	snprintf(fmt, sizeof(fmt), "%s: %%zu kB", field);
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, fmt, &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb * 1024;
}

void lmd_runner_predict(const struct lmd_modeldir *dir, const struct lmd_runner_opts *o, size_t avail,
			struct lmd_runner_mem *m)
{
	const struct lmd_config *c = &dir->cfg;
	enum lmd_dtype dt = o->dtype != LMD_DTYPE_NONE ? o->dtype : c->dtype;
	memset(m, 0, sizeof(*m));
	m->max_batch = o->max_batch > 0 ? o->max_batch : 64;
	m->max_tokens = (o->max_prefill > 0 ? (o->max_prefill > 64 ? o->max_prefill : 64) : 2048) + m->max_batch;
	m->session_len = o->session_len > 0 ? o->session_len : c->max_pos;
	m->block_len = o->block_len > 0 ? o->block_len : 64;
	m->session_blocks = (m->session_len + m->block_len - 1) / m->block_len;
	for (int i = 0; i < dir->n; i++)
		m->weights += dir->t[i].nbytes;
	size_t es = lmd_dtype_size(dt), T = (size_t)m->max_tokens, lr = T < 128 ? T : 128;
	m->workspace = T * es * (3 * (size_t)c->hidden + (size_t)(c->heads + 2 * c->kv_heads) * c->head_dim +
				 (size_t)c->heads * c->head_dim + 3 * (size_t)c->inter) +
		       lr * (es * c->hidden + 4 * (size_t)c->vocab);
	m->block_bytes = lmd_kvcache_block_bytes_q(c->layers, c->kv_heads, c->head_dim, m->block_len, dt,
						   (enum lmd_kv_quant)o->quant_policy);
	double frac = o->cache_max_entry_count > 0 ? o->cache_max_entry_count : 0.8;
	size_t want = (size_t)m->max_batch * m->session_blocks;
	size_t fit = avail ? (size_t)(frac * (double)avail / (double)m->block_bytes) : want;
	m->kv_blocks = (int)(want < fit ? want : fit);
	if (m->kv_blocks < m->session_blocks)
		m->kv_blocks = m->session_blocks;  /* always room for one full session */
}

int lmd_runner_open(struct lmd_runner *r, const struct lmd_runner_opts *o, struct lmd_err *err)
{
	int rc;
	memset(r, 0, sizeof(*r));
	const char *dev = o->device ? o->device : getenv("LMD_DEVICE");
	if (!dev || !*dev)
		dev = "auto";
	if (!strcmp(dev, "cuda") && lmd_cuda_device_count() == 0)
		return lmd_errorf(err, LMD_ENODEV, "--device cuda: no usable CUDA GPU found (%s)", lmd_cuda_none_why());
	if ((rc = lmd_model_open_any(&r->dir, o->model, err)))
		goto fail;
	if (o->tp && o->tp != r->dir.cfg.tp) {
		rc = lmd_errorf(err, LMD_EINVAL, "--tp %d: '%s' is split for %d rank%s (lmd-convert --tp %d makes a copy split for %d)",
				o->tp, o->model, r->dir.cfg.tp, r->dir.cfg.tp == 1 ? "" : "s", o->tp, o->tp);
		goto fail;
	}
	if ((rc = lmd_tokenizer_open(&r->tok, r->dir.path, err)))
		goto fail;
	const char *tmpl = o->chat_template ? o->chat_template : r->dir.cfg.chat_template;
	if ((rc = lmd_chat_template_choose(&r->tmpl, tmpl, &r->tok, err)))
		goto fail;
	struct lmd_backend_opts bo = {.threads = o->threads, .deterministic = o->deterministic};
	if ((rc = lmd_backend_open(&r->be, dev, &bo, err)))
		goto fail;
	/* KV pool: a fraction of the memory free after the weights and the workspace (a device's; the host's
	 * MemAvailable), at most what max_batch full sessions need */
	struct lmd_runner_mem pm;
	struct lmd_mem_info mi;
	lmd_runner_predict(&r->dir, o, 0, &pm);
	size_t avail = lmd_host_mem("MemAvailable");
	if (r->be.ops->mem_info) {
		if ((rc = r->be.ops->mem_info(r->be.ctx, &mi, err)))
			goto fail;
		avail = mi.free > pm.weights + pm.workspace ? mi.free - pm.weights - pm.workspace : 0;
	}
	lmd_runner_predict(&r->dir, o, avail, &pm);
	struct lmd_model_opts mo = {
		.dtype = o->dtype,
		.max_tokens = pm.max_tokens,
		.max_seqs = pm.max_batch,
		.session_len = o->session_len,
		.block_len = o->block_len,
		.kv_blocks = pm.kv_blocks,
	};
	r->kv_bytes = (size_t)pm.kv_blocks * pm.block_bytes;
	float *kvp = NULL;
	if (o->kv_params && !o->quant_policy) {
		rc = lmd_errorf(err, LMD_EINVAL, "--kv-params needs --quant-policy 8 or 4");
		goto fail;
	}
	if (o->kv_params && (rc = lmd_kvparams_read(o->kv_params, &r->dir.cfg, o->quant_policy, &kvp, err)))
		goto fail;
	mo.kv_quant = (enum lmd_kv_quant)o->quant_policy;
	mo.kv_params = kvp;
	mo.prefix_cache = o->prefix_caching;
	rc = lmd_model_open(&r->m, &r->be, &r->dir, &mo, err);
	free(kvp);
	if (rc)
		goto fail;
	struct lmd_sched_opts so = {.max_batch = o->max_batch, .max_prefill = o->max_prefill, .threads = o->threads};
	if ((rc = lmd_sched_init(&r->s, &r->m, &r->tok, &so, err)))
		goto fail;
	/* the template's stop tokens join the model's */
	int ids[LMD_CHAT_MAX_STOP];
	int n = lmd_chat_stop_ids(&r->tmpl, &r->tok, ids, LMD_CHAT_MAX_STOP);
	for (int i = 0; i < n; i++)
		lmd_sched_add_stop_id(&r->s, ids[i]);
	return LMD_OK;
fail:
	lmd_runner_close(r);
	return rc;
}

void lmd_runner_close(struct lmd_runner *r)
{
	lmd_sched_free(&r->s);
	lmd_model_close(&r->m);
	if (r->be.ops)
		lmd_backend_close(&r->be);
	lmd_chat_template_free(&r->tmpl);
	lmd_tokenizer_close(&r->tok);
	lmd_modeldir_close(&r->dir);
	memset(r, 0, sizeof(*r));
}

void lmd_runner_describe(const struct lmd_runner *r, char *buf, size_t n)
{
	snprintf(buf, n, "%s: %s %s on %s (%s compute), weights %.1f MiB, KV cache %d blocks of %d tokens (%.1f MiB, "
		 "prefix caching %s), session %d tokens, template %s", r->dir.path, lmd_arch_name(r->m.cfg.arch),
		 r->m.cfg.model_name, r->be.ops->name, lmd_dtype_short(r->m.dtype), r->m.weight_bytes / 1048576.0,
		 r->m.kv.nblocks, r->m.kv.block_len, r->kv_bytes / 1048576.0, r->m.kv.blk ? "on" : "off", r->m.session_len,
		 r->tmpl.name ? r->tmpl.name : "?");
	struct lmd_mem_info cm;
	size_t len = strlen(buf);
	if (r->be.ops->mem_info && !r->be.ops->mem_info(r->be.ctx, &cm, NULL) && len < n) {
		/* what we account for against what the driver says was taken since the backend opened */
		size_t ws = cm.allocated - cm.weights - r->kv_bytes, mine = cm.allocated + cm.internal;
		size_t used = cm.free_at_open > cm.free ? cm.free_at_open - cm.free : 0;
		snprintf(buf + len, n - len, "; GPU memory: weights %.1f MiB, KV pool %d blocks x %.2f MiB = %.1f MiB, "
			 "workspace %.1f MiB, backend buffers %.1f MiB, free %.1f of %.1f MiB; accounted %.1f MiB, "
			 "cudaMemGetInfo says %.1f MiB used since open (%+.2f%%)", cm.weights / 1048576.0, r->m.kv.nblocks,
			 r->m.kv.nblocks ? (double)r->kv_bytes / r->m.kv.nblocks / 1048576.0 : 0, r->kv_bytes / 1048576.0,
			 ws / 1048576.0, cm.internal / 1048576.0, cm.free / 1048576.0, cm.total / 1048576.0,
			 mine / 1048576.0, used / 1048576.0, mine ? 100.0 * ((double)used - (double)mine) / (double)mine : 0);
	}
}
