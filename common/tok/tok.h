/**
 * The tokenizer room: text <-> token ids and chat prompts, exactly as each model family's own
 * libraries do it.
 *
 *   tokenizer.h  the public API: open a model's tokenizer, encode, decode, stream-decode
 *   tok-impl.h   what the tokenizer files share inside the room (encode, decode and util split)
 *   chat.h       chat templates (share/templates) rendering messages into a prompt
 *
 * Depends on the basics and on formats/ (spm, hftok, tiktoken files). Used by engine/, quant/, cmd/.
 */
#ifndef LMD_TOK_H
#define LMD_TOK_H

#include "chat.h"
#include "tokenizer.h"

#endif
