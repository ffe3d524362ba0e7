#include <stdlib.h>
#include <string.h>

#include "tiktoken.h"

static int b64val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decode base64 s[0..n) into out (room for 3*n/4 bytes); -1 when malformed. */
static long b64_decode(const char *s, size_t n, uint8_t *out)
{
	if (n == 0 || n % 4)
		return -1;
	long k = 0;
	for (size_t i = 0; i < n; i += 4) {
		int v[4], pad = 0;
		for (int j = 0; j < 4; j++) {
			if (s[i + j] == '=' && i + 4 == n && j >= 2) {
				v[j] = 0;
				pad++;
			} else {
				if (pad || (v[j] = b64val((unsigned char)s[i + j])) < 0)
					return -1;
			}
		}
		uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
		out[k++] = (uint8_t)(x >> 16);
		if (pad < 2)
			out[k++] = (uint8_t)(x >> 8);
		if (pad < 1)
			out[k++] = (uint8_t)x;
	}
	return k;
}

int lmd_tiktoken_sniff(const void *buf, size_t len)
{
	const char *s = buf;
	size_t i = 0;
	while (i < len && b64val((unsigned char)s[i]) >= 0)
		i++;
	while (i < len && s[i] == '=')
		i++;
	if (i == 0 || i >= len || s[i] != ' ')
		return 0;
	i++;
	size_t d = i;
	while (i < len && s[i] >= '0' && s[i] <= '9')
		i++;
	return i > d && (i == len || s[i] == '\n' || s[i] == '\r');
}

int lmd_tiktoken_parse(struct lmd_tiktoken *tk, const void *buf, size_t len, struct lmd_err *err)
{
	const char *s = buf, *end = s + len;
	int rc = 0, lines = 0;
	memset(tk, 0, sizeof(*tk));
	for (const char *p = s; p < end; p++)
		lines += *p == '\n';
	lines++;
	uint32_t *tmp_off = calloc((size_t)lines, sizeof(uint32_t));
	uint32_t *tmp_len = calloc((size_t)lines, sizeof(uint32_t));
	tk->bytes = malloc(len ? len : 1);
	if (!tmp_off || !tmp_len || !tk->bytes) {
		rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < lines; i++)
		tmp_len[i] = UINT32_MAX;  /* rank not seen yet */
	size_t used = 0;
	int line = 0, n = 0;
	for (const char *p = s; p < end; ) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol)
			eol = end;
		line++;
		const char *q = eol;
		if (q > p && q[-1] == '\r')
			q--;
		if (q > p) {
			const char *sp = memchr(p, ' ', (size_t)(q - p));
			if (!sp || sp == p || sp + 1 == q) {
				rc = lmd_errorf(err, LMD_EFORMAT, "line %d: expected 'BASE64 RANK'", line);
				goto out;
			}
			long rank = 0;
			for (const char *d = sp + 1; d < q; d++) {
				if (*d < '0' || *d > '9' || rank > 100000000) {
					rc = lmd_errorf(err, LMD_EFORMAT, "line %d: bad rank", line);
					goto out;
				}
				rank = rank * 10 + (*d - '0');
			}
			long k = b64_decode(p, (size_t)(sp - p), tk->bytes + used);
			if (k <= 0) {
				rc = lmd_errorf(err, LMD_EFORMAT, "line %d: bad base64 token", line);
				goto out;
			}
			if (rank >= lines || tmp_len[rank] != UINT32_MAX) {
				rc = lmd_errorf(err, LMD_EFORMAT, "line %d: rank %ld out of range or repeated", line, rank);
				goto out;
			}
			tmp_off[rank] = (uint32_t)used;
			tmp_len[rank] = (uint32_t)k;
			used += (size_t)k;
			n++;
		}
		p = eol + 1;
	}
	if (n == 0) {
		rc = lmd_errorf(err, LMD_EFORMAT, "no tokens");
		goto out;
	}
	/* Ranks must be exactly 0..n-1; lay the arena out in rank order. */
	tk->off = malloc(((size_t)n + 1) * sizeof(uint32_t));
	uint8_t *arena = malloc(used ? used : 1);
	if (!tk->off || !arena) {
		free(arena);
		rc = lmd_errorf(err, LMD_ENOMEM, "out of memory");
		goto out;
	}
	size_t o = 0;
	for (int r = 0; r < n; r++) {
		if (tmp_len[r] == UINT32_MAX) {
			free(arena);
			rc = lmd_errorf(err, LMD_EFORMAT, "rank %d missing (ranks must be 0..%d)", r, n - 1);
			goto out;
		}
		tk->off[r] = (uint32_t)o;
		memcpy(arena + o, tk->bytes + tmp_off[r], tmp_len[r]);
		o += tmp_len[r];
	}
	tk->off[n] = (uint32_t)o;
	free(tk->bytes);
	tk->bytes = arena;
	tk->n = n;
out:
	free(tmp_off);
	free(tmp_len);
	if (rc)
		lmd_tiktoken_free(tk);
	return rc;
}

void lmd_tiktoken_free(struct lmd_tiktoken *tk)
{
	free(tk->off);
	free(tk->bytes);
	memset(tk, 0, sizeof(*tk));
}
