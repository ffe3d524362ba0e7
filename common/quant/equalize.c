/* Cross-layer equalization of one layer before its quantization, data-free (awq.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "awq.h"

/* r [in] += the squared norms of the columns of w [out][in] */
static void col_norm2(const float *w, int out, int in, double *r)
{
	for (int o = 0; o < out; o++)
		for (int j = 0; j < in; j++)
			r[j] += (double)w[(size_t)o * in + j] * w[(size_t)o * in + j];
}

/* r [out] = the norms of the rows of w [out][in] */
static void row_norm(const float *w, int out, int in, double *r)
{
	for (int o = 0; o < out; o++) {
		double e = 0;
		for (int j = 0; j < in; j++)
			e += (double)w[(size_t)o * in + j] * w[(size_t)o * in + j];
		r[o] = sqrt(e);
	}
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return x < y ? -1 : x > y;
}

/* s [in] from the producer's magnitudes r1 and the consumer's squared column norms r2; t [in] scratch */
static int site_scales(const double *r1, const double *r2, int in, double thr, float *s, float *t)
{
	for (int j = 0; j < in; j++)
		s[j] = t[j] = r1[j] > 0 && r2[j] > 0 ? (float)sqrt(r1[j] / sqrt(r2[j])) : 1;
	qsort(t, (size_t)in, sizeof(float), cmp_float);
	float med = t[in / 2];
	int moved = 0;
	for (int j = 0; j < in; j++) {
		float v = s[j] / med;
		s[j] = v > thr || v < 1 / thr ? v : 1;
		moved += s[j] != 1;
	}
	return moved;
}

/* site p's producer magnitudes r1 and the consumers' squared column norms r2 [in_p], from L as it is now */
static void site_norms(const struct lmd_config *c, const struct lmd_awq_layer *L, int p, double *r1, double *r2)
{
	const int H = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim;
	int in = p == LMD_CALIB_O ? H : p == LMD_CALIB_W2 ? c->inter : c->hidden;
	memset(r2, 0, (size_t)in * sizeof(double));
	if (p == LMD_CALIB_QKV) {
		for (int j = 0; j < in; j++)
			r1[j] = fabsf(L->attn_norm[j]);
		col_norm2(L->wq, H, in, r2), col_norm2(L->wk, KV, in, r2), col_norm2(L->wv, KV, in, r2);
	} else if (p == LMD_CALIB_O) {
		row_norm(L->wv, KV, c->hidden, r1);
		col_norm2(L->wo, c->hidden, in, r2);
	} else if (p == LMD_CALIB_W13) {
		for (int j = 0; j < in; j++)
			r1[j] = fabsf(L->ffn_norm[j]);
		col_norm2(L->w1, c->inter, in, r2), col_norm2(L->w3, c->inter, in, r2);
	} else {
		row_norm(L->w3, c->inter, c->hidden, r1);
		col_norm2(L->w2, c->hidden, in, r2);
	}
}

int lmd_awq_equalize(const struct lmd_config *c, struct lmd_awq_layer *L, double thr, float *sc[4], int moved[4],
		     struct lmd_err *err)
{
	const int H = c->heads * c->head_dim;
	const int ins[4] = {c->hidden, H, c->hidden, c->inter};
	int maxc = c->inter > c->hidden ? c->inter : c->hidden;
	maxc = H > maxc ? H : maxc;
	double *r1 = malloc((size_t)maxc * sizeof(double)), *r2 = malloc((size_t)maxc * sizeof(double));
	float *t = malloc((size_t)maxc * sizeof(float)), *one = malloc((size_t)maxc * sizeof(float));
	int rc = !r1 || !r2 || !t || !one ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	for (int p = 0; p < 4; p++)
		sc[p] = NULL, moved[p] = 0;
	for (int p = 0; !rc && p < 4; p++)
		if (!(p == LMD_CALIB_O && c->heads != c->kv_heads) && !(sc[p] = malloc((size_t)ins[p] * sizeof(float))))
			rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
	for (int j = 0; !rc && j < maxc; j++)
		one[j] = 1;
	/*
	 * The rows of up and v first: a planted row dominates the column norms of the linear it belongs to,
	 * so the norms' sites are found on the linears once their rows are balanced.
	 */
	for (int stage = 0; !rc && stage < 2; stage++) {
		float *part[4] = {one, NULL, one, one};
		for (int p = 0; p < 4; p++) {
			int rows = p == LMD_CALIB_O || p == LMD_CALIB_W2;  /* the producer is a linear's rows */
			if (!sc[p] || rows != (stage == 0))
				continue;
			site_norms(c, L, p, r1, r2);
			moved[p] = site_scales(r1, r2, ins[p], thr, sc[p], t);
			part[p] = sc[p];
		}
		lmd_awq_apply(c, L, part);
	}
	if (rc)
		for (int p = 0; p < 4; p++)
			free(sc[p]), sc[p] = NULL;
	free(r1), free(r2), free(t), free(one);
	return rc;
}

void lmd_awq_equalize_data(int l, float *const sc[4], struct lmd_awq_acts *a, struct lmd_calib_stats *st)
{
	for (int p = 0; p < LMD_CALIB_NIN; p++) {
		const float *s = sc[p];
		if (!s)
			continue;
		if (a) {
			int k = l * LMD_CALIB_NIN + p, in = a->cols[p];
			for (int64_t r = 0; r < a->n[k]; r++)
				for (int j = 0; j < in; j++)
					a->x[k][(size_t)r * in + j] /= s[j];
		}
		struct lmd_calib_in *ci = st ? &st->in[l][p] : NULL;
		for (int j = 0; ci && ci->count && j < ci->channels; j++)
			ci->absmax[j] /= s[j], ci->abssum[j] /= s[j], ci->sumsq[j] /= (double)s[j] * s[j];
	}
}
