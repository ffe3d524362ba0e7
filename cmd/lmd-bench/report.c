/* The results of lmd-bench's measurements: percentiles and the csv / md / json tables (bench.h). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "cmd/cli.h"

#include "commit.h"

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

void lmd_bench_sort(double *v, size_t n)
{
	if (n)
		qsort(v, n, sizeof(double), cmp_d);
}

double lmd_bench_pct(const double *sorted, size_t n, double p)
{
	if (!n)
		return 0;
	double k = p / 100 * (double)(n - 1);
	size_t lo = (size_t)k, hi = lo + 1 < n ? lo + 1 : lo;
	return sorted[lo] + (sorted[hi] - sorted[lo]) * (k - (double)lo);
}

double lmd_bench_mean(const double *v, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += v[i];
	return n ? s / (double)n : 0;
}

void lmd_bench_stamp(char *date, size_t ndate, const char **commit)
{
	time_t now = time(NULL);
	strftime(date, ndate, "%Y-%m-%d", gmtime(&now));
	*commit = LMD_COMMIT;
}

int lmd_bench_list(const struct lmd_cli *cli, const char *opt, const char *s, int *v, int max)
{
	int n = 0;
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", s);
	for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
		if (n == max)
			lmd_usage(cli, "--%s: at most %d values", opt, max);
		v[n++] = (int)lmd_cli_long(cli, opt, t, 1, 1 << 20);
	}
	if (!n)
		lmd_usage(cli, "--%s: empty list", opt);
	return n;
}

int lmd_bench_format(const char *fmt)
{
	return !strcmp(fmt, "csv") || !strcmp(fmt, "md") || !strcmp(fmt, "json");
}

void lmd_bench_table(FILE *f, const char *fmt, const struct lmd_bench_col *cols, int ncol,
		     const char (*cells)[LMD_BENCH_CELL], int nrow)
{
	int md = !strcmp(fmt, "md"), json = !strcmp(fmt, "json");
	if (json) {
		json_t *arr = json_array();
		for (int r = 0; r < nrow; r++) {
			json_t *o = json_object();
			for (int c = 0; c < ncol; c++) {
				const char *v = cells[(size_t)r * ncol + c];
				json_object_set_new(o, cols[c].name, cols[c].text ? json_string(v) : json_real(atof(v)));
			}
			json_array_append_new(arr, o);
		}
		char *s = json_dumps(arr, JSON_INDENT(2));
		fprintf(f, "%s\n", s ? s : "[]");
		free(s);
		json_decref(arr);
		return;
	}
	for (int c = 0; c < ncol; c++)
		fprintf(f, md ? "| %s " : "%s%s", md ? cols[c].name : (c ? "," : ""), cols[c].name);
	fprintf(f, md ? "|\n" : "\n");
	if (md) {
		for (int c = 0; c < ncol; c++)
			fprintf(f, "|---");
		fprintf(f, "|\n");
	}
	for (int r = 0; r < nrow; r++) {
		for (int c = 0; c < ncol; c++) {
			const char *v = cells[(size_t)r * ncol + c];
			fprintf(f, md ? "| %s " : "%s%s", md ? v : (c ? "," : ""), v);
		}
		fprintf(f, md ? "|\n" : "\n");
	}
}
