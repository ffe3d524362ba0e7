/**
 * The tokenizer room: text <-> token ids and chat prompts, exactly as each model family's own
 * libraries do it.
 *
 *   tokenizer.h  the public API: open a model's tokenizer, encode, decode, stream-decode
 *   tok-impl.h   what the tokenizer files share inside the room (encode, decode and util split)
 *   chat.h       chat templates (share/templates) rendering messages into a prompt, tools included
 *   toolcall.h   tool calls found in a model's answer (LMDeploy's tool-call parsers)
 *   pyjson.h     JSON written as Python's json.dumps writes it (what the Jinja templates put in prompts)
 *   sbuf.h       a growing string
 *
 * Depends on the basics and on formats/ (spm, hftok, tiktoken files). Used by engine/, quant/, serve/, cmd/.
 */
#ifndef LMD_TOK_H
#define LMD_TOK_H

#include "chat.h"
#include "tokenizer.h"

#endif
