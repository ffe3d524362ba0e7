/**
 * Thin helpers over msgpack-c shared by the files lmd writes in msgpack (the model index,
 * calibration statistics): a safety check before unpacking, and msgpack -> jansson for printing.
 */
#ifndef LMD_MSGPACK_H
#define LMD_MSGPACK_H

#include <jansson.h>
#include <msgpack.h>

/** A new jansson value (caller owns it) for o; binary and extension data become null. */
json_t *lmd_msgpack_to_json(const msgpack_object *o);

/**
 * Check that buf holds one well-formed msgpack object whose declared lengths all fit in the buffer,
 * before msgpack-c unpacks it (msgpack-c allocates what a length claims, so a 5-byte input could
 * ask for gigabytes). Returns 0 when it is safe to unpack, -1 otherwise.
 */
int lmd_msgpack_check(const void *buf, size_t len);

#endif
