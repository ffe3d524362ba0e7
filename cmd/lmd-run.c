/* lmd-run: one binary, several subcommands; each lives in cmd/lmd-run/NAME.c (run.h); this file only dispatches. */
#include "cli.h"
#include "cmd/lmd-run/run.h"

static const struct lmd_subcommand subs[] = {
	{"generate", lmd_run_generate, "generate text: a prompt, or JSON lines on stdin"},
	{"chat", lmd_run_chat, "chat with a model on the terminal"},
	{"serve", lmd_run_serve, "serve a model over HTTP with the OpenAI API"},
	{"client", lmd_run_client, "chat with an OpenAI-compatible server on the terminal"},
	{"tokenize", lmd_run_tokenize, "text on stdin to token ids"},
	{"detokenize", lmd_run_detokenize, "token ids on stdin to text"},
	{"cache", lmd_run_cache, "list or clean the conversions kept for running HF directories"},
};

int main(int argc, char **argv)
{
	return lmd_cli_dispatch("lmd-run", "Run a model or its tokenizer.", subs, (int)(sizeof(subs) / sizeof(subs[0])),
				argc, argv);
}
