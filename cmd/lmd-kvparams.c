/* lmd-kvparams: offline KV-cache scales and zeros per layer and head from lmd-calib statistics (calib.h). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "quant/calib.h"
#include "cli.h"
#include "file.h"
#include "kvparams.h"

enum { O_BITS = 256, O_SYM };

static const struct lmd_opt opts[] = {
	{"kv-bits", O_BITS, "N", "8 (default) or 4"},
	{"kv-sym", O_SYM, NULL, "symmetric: zero = -absmax (default: asymmetric, zero = min)"},
	{"output", 'o', "FILE", "write the CSV to FILE (default: stdout)"},
	{0},
};

int main(int argc, char **argv)
{
	struct lmd_cli cli = {
		.prog = "lmd-kvparams",
		.synopsis = "STATS [OPTIONS]",
		.purpose = "Compute offline KV-cache quantization parameters (CSV) from lmd-calib statistics.",
		.example = "lmd-kvparams tiny.calib --kv-bits 8 > tiny.kv.csv",
		.opts = opts,
	};
	struct lmd_err err = {0};
	const char *arg, *out = "-";
	int k, bits = 8, sym = 0;
	while ((k = lmd_cli_next(&cli, argc, argv, &arg)) != -1) {
		switch (k) {
		case O_BITS:
			bits = (int)lmd_cli_long(&cli, "kv-bits", arg, 4, 8);
			if (bits != 4 && bits != 8)
				lmd_usage(&cli, "--kv-bits: '%s' is not 8 or 4", arg);
			break;
		case O_SYM: sym = 1; break;
		case 'o': out = arg; break;
		}
	}
	if (argc - optind != 1)
		lmd_usage(&cli, "expected one STATS file");
	struct lmd_calib_stats st;
	if (lmd_calib_stats_read(&st, argv[optind], &err))
		lmd_die(cli.prog, &err);
	float *p = malloc((size_t)st.cfg.layers * 4 * st.cfg.kv_heads * sizeof(float));
	struct lmd_out o = {0};
	int rc = p ? lmd_out_open(&o, out, &err) : lmd_errorf(&err, LMD_ENOMEM, "out of memory");
	if (!rc) {
		lmd_kvparams_compute(&st, bits, sym, p);
		lmd_kvparams_write(&st.cfg, p, bits, o.f);
		rc = lmd_out_commit(&o, &err);
	}
	free(p);
	lmd_calib_stats_free(&st);
	if (rc)
		lmd_die(cli.prog, &err);
	return 0;
}
