/**
 * lmd-run's subcommands. Each is a whole command: it parses its own options (argv[0] is the
 * subcommand's name, e.g. "tokenize"), may print and exit through lmd_die / lmd_usage like a
 * cmd/ program, and returns the exit status. cmd/lmd-run.c only dispatches to them; a new
 * subcommand adds a function here and a row to the table in cmd/lmd-run.c.
 */
#ifndef LMD_RUN_H
#define LMD_RUN_H

/** lmd-run tokenize DIR: stdin text -> ids (tokenize.c). */
int lmd_run_tokenize(int argc, char **argv);

/** lmd-run detokenize DIR: stdin ids -> text (detokenize.c). */
int lmd_run_detokenize(int argc, char **argv);

/** lmd-run generate MODEL: a prompt or JSON lines -> generated text (generate.c). */
int lmd_run_generate(int argc, char **argv);

/** lmd-run chat MODEL: interactive multi-turn chat (chat.c). */
int lmd_run_chat(int argc, char **argv);

/** lmd-run serve MODEL: the OpenAI-compatible HTTP server (serve.c). */
int lmd_run_serve(int argc, char **argv);
/** lmd-run client URL: a terminal chat against an OpenAI-compatible server (client.c). */
int lmd_run_client(int argc, char **argv);

/** lmd-run cache list|clean: the HF->lmd conversions kept for running HF directories (cache.c). */
int lmd_run_cache(int argc, char **argv);

#endif
