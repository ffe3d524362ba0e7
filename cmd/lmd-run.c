/*
 * lmd-run: one binary, several subcommands. Each subcommand lives in common/ (see run.h);
 * this file only dispatches.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "lmd.h"
#include "run.h"

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *purpose;
} subcommands[] = {
	{"tokenize", lmd_run_tokenize, "text on stdin to token ids"},
	{"detokenize", lmd_run_detokenize, "token ids on stdin to text"},
};

#define N_SUB ((int)(sizeof(subcommands) / sizeof(subcommands[0])))

static void usage(FILE *f)
{
	fprintf(f, "Usage: lmd-run COMMAND [OPTIONS] ...\n\nRun a model or its tokenizer.\n\nCommands:\n");
	for (int i = 0; i < N_SUB; i++)
		fprintf(f, "  %-12s %s\n", subcommands[i].name, subcommands[i].purpose);
	fprintf(f, "\nOptions:\n  --help        print this help and exit\n  --version     print the version and exit\n"
		   "\n'lmd-run COMMAND --help' describes a command.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return LMD_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("lmd-run %s\n", LMD_VERSION);
		return 0;
	}
	for (int i = 0; i < N_SUB; i++)
		if (!strcmp(argv[1], subcommands[i].name))
			return subcommands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "lmd-run: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return LMD_EXIT_USAGE;
}
