/*
 * Causal attention with GQA over the paged KV cache, for prefill chunks and decode tokens alike
 * (FlashAttention-2 style: online softmax, no score matrix in memory; flash-decoding split over the
 * key range when there are too few blocks to fill the GPU).
 *
 * Math: for query token i (position p, sequence s) and head h (kv head h / G, G = H / KV):
 *   att[i, h] = Σ_{t <= p} softmax_t(scale · q[i, h] · K_s[t]) V_s[t]
 * K_s[t] lives in layer's pool [nblocks, KV, block_len, D] at block table[s][t / block_len], row
 * t % block_len (kvcache.h).
 *
 * Work items (built on the host once per step, at the first attention call): up to QT consecutive
 * tokens of one sequence with consecutive positions, QT = max(1, 16 / G). With the G query heads of
 * one kv head that makes R = cnt · G <= max(16, G) "rows" sharing every K/V tile a block loads:
 * decode (one token per sequence) gives R = G, so the query heads of a kv head read their keys once.
 *
 * Launch: grid (items, KV, splits), block 128 threads. Shared memory (fp32):
 *   q[R][D], k[32][D+1] (padded: the score loop reads k down a column), v[32][D], p[R][32], o[R][D],
 *   m[R], l[R], corr[R], pos[R]   — 51.5 KB for R = 16, D = 128.
 * Per tile of 32 keys: (1) load K and V (16-byte loads when D % 8 == 0, converted to fp32), (2) scores
 * s[r][j] for (r, j) spread over the threads, masked beyond each row's position, (3) one warp per row:
 * running max m, rescale factor, exp, running sum l, (4) o[r][d] = o·corr + Σ_j p[r][j] v[j][d].
 * splits == 1 writes att = o / l; otherwise each split writes its unnormalized o, m and l to the
 * partials buffer and combine_kernel (grid (n, H), block D) merges them:
 *   M = max m_s, att = Σ o_s e^{m_s - M} / Σ l_s e^{m_s - M}.
 */
#include <math.h>

#include "internal.cuh"

#define AT 32    /* keys per tile: one per lane in the softmax step */
#define ROWS 16  /* query rows per block (at least G) */
#define THREADS 128

// ----------------------------------------------------------------------------
// CUDA kernels

__device__ __forceinline__ float tof(float v) { return v; }
__device__ __forceinline__ float tof(__half v) { return __half2float(v); }
__device__ __forceinline__ float tof(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ void load8(const float *p, float f[8])
{
	float4 a = ((const float4 *)p)[0], b = ((const float4 *)p)[1];
	f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}

__device__ __forceinline__ void load8(const __half *p, float f[8])
{
	uint4 v = *(const uint4 *)p;
	const __half2 *h = (const __half2 *)&v;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		float2 t = __half22float2(h[i]);
		f[2 * i] = t.x, f[2 * i + 1] = t.y;
	}
}

__device__ __forceinline__ void load8(const __nv_bfloat16 *p, float f[8])
{
	uint4 v = *(const uint4 *)p;
	const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		float2 t = __bfloat1622float2(h[i]);
		f[2 * i] = t.x, f[2 * i + 1] = t.y;
	}
}

template <typename KT>
__global__ void __launch_bounds__(THREADS) attn_kernel(void *att, int at, const void *qkv, int qt, int64_t qcols,
						       const KT *kc, const KT *vc, const struct attn_item *items,
						       const int32_t *pos, const int32_t *table, int max_blocks, int H,
						       int KV, int D, int G, int rmax, int block_len, float scale,
						       int splits, int ntok, float *part)
{
	extern __shared__ float sm[];
	const struct attn_item it = items[blockIdx.x];
	const int kvh = blockIdx.y, split = blockIdx.z, tid = threadIdx.x, nt = blockDim.x;
	const int R = it.cnt * G;
	float *q = sm, *k = q + rmax * D, *v = k + AT * (D + 1), *p = v + AT * D, *o = p + rmax * AT;
	float *m = o + rmax * D, *l = m + rmax, *cr = l + rmax;
	int *rpos = (int *)(cr + rmax);
	int len = it.last_pos + 1;
	int chunk = (len + splits - 1) / splits;
	chunk = (chunk + AT - 1) / AT * AT;
	int tb = split * chunk, te = min(len, tb + chunk);

	for (int idx = tid; idx < R * D; idx += nt) {
		int r = idx / D, d = idx % D, tok = it.first + r / G, h = kvh * G + r % G;
		q[idx] = ld(qkv, qt, (size_t)tok * qcols + (size_t)h * D + d);
		o[idx] = 0;
	}
	for (int r = tid; r < R; r += nt) {
		m[r] = -INFINITY;
		l[r] = 0;
		rpos[r] = pos[it.first + r / G];
	}
	__syncthreads();
	const int32_t *tab = table + (size_t)it.seq * max_blocks;
	const int warp = tid / 32, lane = tid % 32, nw = nt / 32;
	for (int t0 = tb; t0 < te; t0 += AT) {
		if (D % 8 == 0) {
			int d8n = D / 8;
			for (int idx = tid; idx < AT * d8n; idx += nt) {
				int j = idx / d8n, d = (idx % d8n) * 8, t = t0 + j;
				float kf[8], vf[8];
				if (t < te) {
					int blk = tab[t / block_len];
					size_t off = (((size_t)blk * KV + kvh) * block_len + t % block_len) * D + d;
					load8(kc + off, kf);
					load8(vc + off, vf);
				} else {
#pragma unroll
					for (int e = 0; e < 8; e++)
						kf[e] = vf[e] = 0;
				}
#pragma unroll
				for (int e = 0; e < 8; e++) {
					k[j * (D + 1) + d + e] = kf[e];
					v[j * D + d + e] = vf[e];
				}
			}
		} else {
			for (int idx = tid; idx < AT * D; idx += nt) {
				int j = idx / D, d = idx % D, t = t0 + j;
				float kf = 0, vf = 0;
				if (t < te) {
					int blk = tab[t / block_len];
					size_t off = (((size_t)blk * KV + kvh) * block_len + t % block_len) * D + d;
					kf = tof(kc[off]);
					vf = tof(vc[off]);
				}
				k[j * (D + 1) + d] = kf;
				v[j * D + d] = vf;
			}
		}
		__syncthreads();
		for (int idx = tid; idx < R * AT; idx += nt) {
			int r = idx / AT, j = idx % AT, t = t0 + j;
			float s = -INFINITY;
			if (t < te && t <= rpos[r]) {
				const float *qr = q + r * D, *kr = k + j * (D + 1);
				float dot = 0;
				for (int d = 0; d < D; d++)
					dot = fmaf(qr[d], kr[d], dot);
				s = dot * scale;
			}
			p[idx] = s;
		}
		__syncthreads();
		for (int r = warp; r < R; r += nw) {
			float s = p[r * AT + lane], mx = s;
			for (int off = 16; off > 0; off >>= 1)
				mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
			float mo = m[r], mn = fmaxf(mo, mx);
			float e = mn == -INFINITY ? 0.0f : expf(s - mn);
			float c = mn == -INFINITY ? 1.0f : expf(mo - mn);
			float sum = e;
			for (int off = 16; off > 0; off >>= 1)
				sum += __shfl_xor_sync(0xffffffffu, sum, off);
			p[r * AT + lane] = e;
			if (lane == 0) {
				l[r] = l[r] * c + sum;
				m[r] = mn;
				cr[r] = c;
			}
		}
		__syncthreads();
		for (int idx = tid; idx < R * D; idx += nt) {
			int r = idx / D, d = idx % D;
			const float *pr = p + r * AT;
			float acc = o[idx] * cr[r];
#pragma unroll 8
			for (int j = 0; j < AT; j++)
				acc = fmaf(pr[j], v[j * D + d], acc);
			o[idx] = acc;
		}
		__syncthreads();
	}
	if (splits == 1) {
		for (int idx = tid; idx < R * D; idx += nt) {
			int r = idx / D, d = idx % D, tok = it.first + r / G, h = kvh * G + r % G;
			st(att, at, ((size_t)tok * H + h) * D + d, o[idx] / l[r]);
		}
	} else {
		float *po = part, *pml = part + (size_t)splits * ntok * H * D;
		for (int idx = tid; idx < R * D; idx += nt) {
			int r = idx / D, d = idx % D, tok = it.first + r / G, h = kvh * G + r % G;
			po[(((size_t)split * ntok + tok) * H + h) * D + d] = o[idx];
		}
		for (int r = tid; r < R; r += nt) {
			int tok = it.first + r / G, h = kvh * G + r % G;
			size_t i = (((size_t)split * ntok + tok) * H + h) * 2;
			pml[i] = m[r];
			pml[i + 1] = l[r];
		}
	}
}

__global__ void combine_kernel(void *att, int at, const float *part, int splits, int ntok, int H, int D)
{
	int tok = blockIdx.x, h = blockIdx.y;
	const float *po = part, *pml = part + (size_t)splits * ntok * H * D;
	float M = -INFINITY;
	for (int s = 0; s < splits; s++)
		M = fmaxf(M, pml[(((size_t)s * ntok + tok) * H + h) * 2]);
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		float L = 0, acc = 0;
		for (int s = 0; s < splits; s++) {
			size_t i = ((size_t)s * ntok + tok) * H + h;
			float ms = pml[i * 2];
			if (ms == -INFINITY)
				continue;
			float w = expf(ms - M);
			L += pml[i * 2 + 1] * w;
			acc += po[i * D + d] * w;
		}
		st(att, at, ((size_t)tok * H + h) * D + d, acc / L);
	}
}

// ----------------------------------------------------------------------------
// kernel launchers

static size_t smem_bytes(int rmax, int D)
{
	return ((size_t)rmax * D * 2 + (size_t)AT * (D + 1) + (size_t)AT * D + (size_t)rmax * AT + 4 * (size_t)rmax) *
	       sizeof(float);
}

int lmd_cuda_attention_init(struct cuda_ctx *c, struct lmd_err *err)
{
	int optin = 0;
	CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->dev), err);
	c->smem_optin = optin;
	CUDA_TRY(cudaFuncSetAttribute(attn_kernel<float>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin), err);
	CUDA_TRY(cudaFuncSetAttribute(attn_kernel<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin), err);
	CUDA_TRY(cudaFuncSetAttribute(attn_kernel<__nv_bfloat16>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin), err);
	return LMD_OK;
}

/* The step's work items and split count for group size G (once per step). */
static int plan(struct cuda_ctx *c, int G, int KV, int H, int D, struct lmd_err *err)
{
	const struct lmd_step *s = &c->step;
	int qt = G >= ROWS ? 1 : ROWS / G;
	if ((size_t)s->n > c->items_cap) {
		size_t cap = (size_t)s->n * 2;
		if (c->h_items)
			CUDA_TRY(cudaFreeHost(c->h_items), err);
		if (c->d_items)
			CUDA_TRY(cudaFree(c->d_items), err);
		c->h_items = NULL, c->d_items = NULL, c->items_cap = 0;
		CUDA_TRY(cudaMallocHost(&c->h_items, cap * sizeof(struct attn_item)), err);
		CUDA_TRY(cudaMalloc(&c->d_items, cap * sizeof(struct attn_item)), err);
		c->items_cap = cap;
	}
	CUDA_TRY(cudaEventSynchronize(c->items_done), err);  // the last upload from h_items is done
	int n = 0;
	for (int i = 0; i < s->n;) {
		int cnt = 1;
		while (i + cnt < s->n && cnt < qt && s->seq[i + cnt] == s->seq[i] && s->pos[i + cnt] == s->pos[i + cnt - 1] + 1)
			cnt++;
		c->h_items[n++] = (struct attn_item){i, cnt, s->seq[i], s->pos[i + cnt - 1]};
		i += cnt;
	}
	c->nitems = n;
	int blocks = n * KV, splits = 1;
	if (blocks < 2 * c->sms && c->max_len >= 256) {
		splits = (2 * c->sms + blocks - 1) / blocks;
		if (splits > c->max_len / 128)
			splits = c->max_len / 128;
		if (splits > 32)
			splits = 32;
		if (splits < 1)
			splits = 1;
	}
	size_t need = (size_t)splits * s->n * H * (D + 2);
	if (splits > 1 && need > c->part_cap) {
		if (c->part)
			CUDA_TRY(cudaFree(c->part), err);
		c->part = NULL, c->part_cap = 0;
		CUDA_TRY(cudaMalloc(&c->part, need * sizeof(float)), err);
		c->part_cap = need;
	}
	c->splits = splits;
	CUDA_TRY(cudaMemcpyAsync(c->d_items, c->h_items, (size_t)n * sizeof(struct attn_item), cudaMemcpyHostToDevice, c->st),
		 err);
	CUDA_TRY(cudaEventRecord(c->items_done, c->st), err);
	c->items_step = c->step_id;
	c->items_group = G;
	return LMD_OK;
}

int lmd_cuda_attention(struct cuda_ctx *c, struct lmd_tensor *att, const struct lmd_tensor *qkv,
		       const struct lmd_kvcache *kv, int layer, const struct lmd_attn_dims *d, struct lmd_err *err)
{
	int D = d->head_dim, H = d->heads, KV = d->kv_heads;
	if (D != kv->head_dim || KV != kv->kv_heads || KV <= 0 || H % KV || t_cols(att) != (int64_t)H * D ||
	    t_cols(qkv) != (int64_t)(H + 2 * KV) * D || layer < 0 || layer >= kv->layers || kv->quant != LMD_KV_NONE ||
	    t_rows(att) < c->step.n || !float_dt(kv->dtype))
		return lmd_errorf(err, LMD_EINVAL, "cuda attention: tensor shapes or dtypes do not match");
	int G = H / KV, rmax = G >= ROWS ? G : ROWS / G * G;
	size_t smem = smem_bytes(rmax, D);
	if (smem > (size_t)c->smem_optin)
		return lmd_errorf(err, LMD_EINVAL, "cuda attention: head_dim %d with %d query heads per kv head needs %zu bytes "
				  "of shared memory, more than the GPU's %d", D, G, smem, c->smem_optin);
	if (c->items_step != c->step_id || c->items_group != G) {
		int rc = plan(c, G, KV, H, D, err);
		if (rc)
			return rc;
	}
	dim3 grid(c->nitems, KV, c->splits);
	const void *kc = kv->k[layer].data, *vc = kv->v[layer].data;
#define ATTN(KT) attn_kernel<KT><<<grid, THREADS, smem, c->st>>>(att->data, att->dtype, qkv->data, qkv->dtype, t_cols(qkv), \
		(const KT *)kc, (const KT *)vc, c->d_items, c->d_pos, c->d_table, c->step.max_blocks, H, KV, D, G, rmax, \
		kv->block_len, d->scale, c->splits, c->step.n, c->part)
	if (kv->dtype == LMD_F16)
		ATTN(__half);
	else if (kv->dtype == LMD_BF16)
		ATTN(__nv_bfloat16);
	else
		ATTN(float);
#undef ATTN
	LAUNCH_TRY(err);
	if (c->splits > 1) {
		dim3 g2(c->step.n, H);
		combine_kernel<<<g2, D < 1024 ? D : 1024, 0, c->st>>>(att->data, att->dtype, c->part, c->splits, c->step.n, H, D);
		LAUNCH_TRY(err);
	}
	return LMD_OK;
}
