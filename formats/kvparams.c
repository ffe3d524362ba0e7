/* The offline KV-cache parameters CSV of lmd-kvparams (kvparams.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"
#include "kvparams.h"

int lmd_kvparams_write(const struct lmd_config *c, const float *params, int bits, FILE *f)
{
	fprintf(f, "layer,kv,head,scale,zero,bits\n");
	for (int l = 0; l < c->layers; l++)
		for (int w = 0; w < 2; w++)
			for (int h = 0; h < c->kv_heads; h++) {
				const float *p = params + (((size_t)l * 2 + w) * c->kv_heads + h) * 2;
				fprintf(f, "%d,%c,%d,%.9g,%.9g,%d\n", l, "kv"[w], h, p[0], p[1], bits);
			}
	return ferror(f) ? -1 : 0;
}

int lmd_kvparams_read(const char *path, const struct lmd_config *c, int bits, float **params, struct lmd_err *err)
{
	/* the cache holds fp16-range values: q * scale + zero must stay within it for every q */
	const double levels = (double)((1 << bits) - 1), max_scale = 2 * 65504.0 / levels, max_zero = 65504.0;
	char *buf;
	size_t len;
	int rc = lmd_read_file(path, &buf, &len, err);
	if (rc)
		return rc;
	size_t n = (size_t)c->layers * 2 * c->kv_heads;
	float *p = malloc(n * 2 * sizeof(float));
	char *seen = calloc(n, 1);
	if (!p || !seen) {
		free(buf), free(p), free(seen);
		return lmd_errorf(err, LMD_ENOMEM, "out of memory");
	}
	int line = 0;
	for (char *s = buf, *nl; !rc && s && *s; s = nl ? nl + 1 : NULL) {
		nl = strchr(s, '\n');
		if (nl)
			*nl = 0;
		line++;
		if (line == 1 && !strncmp(s, "layer,", 6))  /* files of before the bits column are read as of any bits */
			continue;
		if (!*s)
			continue;
		int l, h, k = 0, k2 = 0, b = bits;
		char kv;
		double sc, z;
		if (sscanf(s, "%d,%c,%d,%lf,%lf%n", &l, &kv, &h, &sc, &z, &k) != 5 || (s[k] && (sscanf(s + k, ",%d%n", &b, &k2) != 1 || s[k + k2])) || (kv != 'k' && kv != 'v') || l < 0 || l >= c->layers || h < 0 || h >= c->kv_heads)
			rc = lmd_errorf(err, LMD_EFORMAT, "'%s' line %d: expected layer,k|v,head,scale,zero,bits for a model of %d "
					"layers and %d kv heads", path, line, c->layers, c->kv_heads);
		else if (b != bits)
			rc = lmd_errorf(err, LMD_EINVAL, "'%s' line %d: made for --kv-bits %d, not --quant-policy %d",
					path, line, b, bits);
		else if (!(sc > 0 && sc <= max_scale))
			rc = lmd_errorf(err, LMD_EFORMAT, "'%s' line %d: scale %g is out of range (above 0, at most %g for %d bits)",
					path, line, sc, max_scale, bits);
		else if (!(fabs(z) <= max_zero))
			rc = lmd_errorf(err, LMD_EFORMAT, "'%s' line %d: zero %g is out of range (-%g to %g)", path, line, z,
					max_zero, max_zero);
		else {
			size_t i = ((size_t)l * 2 + (kv == 'v')) * c->kv_heads + h;
			if (seen[i]++)
				rc = lmd_errorf(err, LMD_EFORMAT, "'%s' line %d: layer %d %c head %d given twice", path, line, l, kv, h);
			p[i * 2] = (float)sc, p[i * 2 + 1] = (float)z;
		}
	}
	for (size_t i = 0; !rc && i < n; i++)
		if (!seen[i])
			rc = lmd_errorf(err, LMD_EFORMAT, "'%s': no line for layer %d %c head %d", path,
					(int)(i / (2 * (size_t)c->kv_heads)), "kv"[(i / c->kv_heads) % 2], (int)(i % c->kv_heads));
	free(buf), free(seen);
	if (rc)
		free(p);
	else
		*params = p;
	return rc;
}
