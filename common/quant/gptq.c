/* GPTQ (awq.h lmd_gptq): int4 groups with the rounding error fed back through the Hessian's inverse. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "awq.h"

/* a [n][n] symmetric positive definite -> its lower Cholesky factor in place (upper part zeroed); -1 when not PD */
static int cholesky(double *a, int n)
{
	for (int j = 0; j < n; j++) {
		double d = a[(size_t)j * n + j];
		for (int k = 0; k < j; k++)
			d -= a[(size_t)j * n + k] * a[(size_t)j * n + k];
		if (!(d > 0))
			return -1;
		d = sqrt(d);
		a[(size_t)j * n + j] = d;
		for (int i = j + 1; i < n; i++) {
			double v = a[(size_t)i * n + j];
			for (int k = 0; k < j; k++)
				v -= a[(size_t)i * n + k] * a[(size_t)j * n + k];
			a[(size_t)i * n + j] = v / d;
		}
		for (int i = 0; i < j; i++)
			a[(size_t)i * n + j] = 0;
	}
	return 0;
}

/* h [n][n] SPD -> the upper Cholesky factor U of h⁻¹ (Uᵀ U = h⁻¹) in place; -1 when not PD */
static int inverse_upper(double *h, int n, double *tmp)
{
	if (cholesky(h, n))
		return -1;
	/* tmp = L⁻¹ (lower), by forward substitution column by column */
	memset(tmp, 0, (size_t)n * n * sizeof(double));
	for (int j = 0; j < n; j++) {
		tmp[(size_t)j * n + j] = 1 / h[(size_t)j * n + j];
		for (int i = j + 1; i < n; i++) {
			double v = 0;
			for (int k = j; k < i; k++)
				v -= h[(size_t)i * n + k] * tmp[(size_t)k * n + j];
			tmp[(size_t)i * n + j] = v / h[(size_t)i * n + i];
		}
	}
	/* h⁻¹ = L⁻ᵀ L⁻¹: (i, j) = Σ_k≥max(i,j) tmp[k][i] tmp[k][j] */
	for (int i = 0; i < n; i++)
		for (int j = 0; j <= i; j++) {
			double v = 0;
			for (int k = i; k < n; k++)
				v += tmp[(size_t)k * n + i] * tmp[(size_t)k * n + j];
			h[(size_t)i * n + j] = h[(size_t)j * n + i] = v;
		}
	if (cholesky(h, n))
		return -1;
	for (int i = 0; i < n; i++)  /* transpose the lower factor into the upper one */
		for (int j = 0; j < i; j++)
			h[(size_t)j * n + i] = h[(size_t)i * n + j], h[(size_t)i * n + j] = 0;
	return 0;
}

/* scale and zero of the values v[k * stride], k < n: lmd_quant_groups's formulas, the scale rounded to fp16 */
static void group_params(const float *v, int n, size_t stride, float qmax, float *s, float *z)
{
	float mn = v[0], mx = v[0];
	for (int k = 1; k < n; k++)
		mn = fminf(mn, v[k * stride]), mx = fmaxf(mx, v[k * stride]);
	float d = mx - mn > 1e-5f ? mx - mn : 1e-5f;
	*s = lmd_f16_to_f32(lmd_f32_to_f16(d / qmax));
	*z = fminf(fmaxf(-roundf(mn / *s), 0), qmax);
}

int lmd_gptq(float *w, int out, int in, double *h, int g, int bits, int act_order, double damp, uint8_t *q,
	     uint8_t *zero, float *scale, float *deq, struct lmd_err *err)
{
	const int B = 128, ng = in / g;
	const float qmax = (float)((1 << bits) - 1);
	int *perm = malloc((size_t)in * sizeof(int));
	double *hp = malloc((size_t)in * in * sizeof(double)), *tmp = malloc((size_t)in * in * sizeof(double));
	float *wp = malloc((size_t)out * in * sizeof(float)), *gs = malloc((size_t)ng * out * sizeof(float));
	float *gz = malloc((size_t)ng * out * sizeof(float)), *e = malloc((size_t)out * B * sizeof(float));
	int rc = !perm || !hp || !tmp || !wp || !gs || !gz || !e ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	if (rc)
		goto done;
	double mean = 0;
	for (int i = 0; i < in; i++) {
		if (h[(size_t)i * in + i] == 0) {  /* a dead input: its weights do not matter */
			h[(size_t)i * in + i] = 1;
			for (int o = 0; o < out; o++)
				w[(size_t)o * in + i] = 0;
		}
		perm[i] = i;
	}
	if (act_order) {  /* static groups from the weights as they are, then the columns by decreasing h_ii */
		for (int gi = 0; gi < ng; gi++)
			for (int o = 0; o < out; o++)
				group_params(w + (size_t)o * in + (size_t)gi * g, g, 1, qmax, &gs[(size_t)gi * out + o],
					     &gz[(size_t)gi * out + o]);
		for (int i = 1; i < in; i++)  /* insertion sort: stable */
			for (int j = i; j > 0 && h[(size_t)perm[j] * in + perm[j]] > h[(size_t)perm[j - 1] * in + perm[j - 1]];
			     j--) {
				int t = perm[j];
				perm[j] = perm[j - 1], perm[j - 1] = t;
			}
	}
	for (int i = 0; i < in; i++) {
		for (int j = 0; j < in; j++)
			hp[(size_t)i * in + j] = h[(size_t)perm[i] * in + perm[j]];
		for (int o = 0; o < out; o++)
			wp[(size_t)o * in + i] = w[(size_t)o * in + perm[i]];
		mean += hp[(size_t)i * in + i] / in;
	}
	for (int i = 0; i < in; i++)
		hp[(size_t)i * in + i] += damp * mean;
	if (inverse_upper(hp, in, tmp)) {
		rc = lmd_errorf(err, LMD_EINVAL, "GPTQ: the Hessian is not positive definite (raise the dampening)");
		goto done;
	}
	for (int i1 = 0; i1 < in; i1 += B) {
		int i2 = i1 + B < in ? i1 + B : in;
		for (int i = i1; i < i2; i++) {
			int col = perm[i], gi = col / g;
			if (!act_order && i % g == 0)
				for (int o = 0; o < out; o++)
					group_params(wp + (size_t)o * in + i, g, 1, qmax, &gs[(size_t)gi * out + o],
						     &gz[(size_t)gi * out + o]);
			double d = hp[(size_t)i * in + i];
			for (int o = 0; o < out; o++) {
				float *wr = wp + (size_t)o * in, s = gs[(size_t)gi * out + o], z = gz[(size_t)gi * out + o];
				float v = fminf(fmaxf(roundf(wr[i] / s) + z, 0), qmax), dq = (v - z) * s;
				float er = (float)((wr[i] - dq) / d);
				if (q)
					q[(size_t)col * out + o] = (uint8_t)v;
				if (deq)
					deq[(size_t)o * in + col] = dq;
				wr[i] = dq;
				e[(size_t)o * B + (i - i1)] = er;
				const double *u = hp + (size_t)i * in;
				for (int j = i + 1; j < i2; j++)
					wr[j] -= (float)(er * u[j]);
			}
		}
		/* the block's errors onto the later columns at once */
		for (int o = 0; o < out; o++) {
			float *wr = wp + (size_t)o * in;
			for (int i = i1; i < i2; i++) {
				float er = e[(size_t)o * B + (i - i1)];
				const double *u = hp + (size_t)i * in;
				for (int j = i2; j < in; j++)
					wr[j] -= (float)(er * u[j]);
			}
		}
	}
	for (int o = 0; o < out; o++)
		for (int i = 0; i < in; i++)
			w[(size_t)o * in + perm[i]] = wp[(size_t)o * in + i];
	for (size_t k = 0; k < (size_t)ng * out; k++) {
		if (scale)
			scale[k] = gs[k];
		if (zero)
			zero[k] = (uint8_t)gz[k];
	}
done:
	free(perm), free(hp), free(tmp), free(wp), free(gs), free(gz), free(e);
	return rc;
}

int lmd_gptq_hessian(struct lmd_backend *be, const float *x, int64_t n, int in, double *h, struct lmd_err *err)
{
	float *xt = malloc((size_t)in * n * sizeof(float)), *hf = malloc((size_t)in * in * sizeof(float));
	int rc = !xt || !hf ? lmd_errorf(err, LMD_ENOMEM, "out of memory") : LMD_OK;
	for (int64_t r = 0; !rc && r < n; r++)
		for (int i = 0; i < in; i++)
			xt[(size_t)i * n + r] = x[(size_t)r * in + i];
	struct lmd_tensor ty = {LMD_F32, 2, {in, in}, hf}, tx = {LMD_F32, 2, {in, n}, xt};
	if (!rc)
		rc = be->ops->matmul(be->ctx, &ty, &tx, &tx, NULL, err);
	for (size_t k = 0; !rc && k < (size_t)in * in; k++)
		h[k] = 2.0 * hf[k] / (double)n;
	free(xt), free(hf);
	return rc;
}
