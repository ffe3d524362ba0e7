/**
 * JSON written the way Python's json.dumps(v, ensure_ascii=False, indent=...) writes it: the text
 * the Hugging Face chat templates put into prompts (their tojson filter) and LMDeploy sends as
 * tool-call arguments. Keys keep their order; floats are written as Python's repr writes them
 * (shortest round trip: 2.5, 1e-07, 1e+16, 1000.0); only '"', '\\' and control characters are
 * escaped (\u00XX in lower case).
 */
#ifndef LMD_PYJSON_H
#define LMD_PYJSON_H

#include <jansson.h>

#include "sbuf.h"

/** Append v to b. indent < 0: one line with ", " and ": "; indent >= 0: one item a line. */
void lmd_pyjson_add(struct lmd_sb *b, const json_t *v, int indent);

/** v as a malloc'd string (caller frees); NULL when out of memory. */
char *lmd_pyjson_dumps(const json_t *v, int indent);

#endif
