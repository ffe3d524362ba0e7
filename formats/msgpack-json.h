/**
 * Thin helpers over msgpack-c shared by the files lmd writes in msgpack (the model index,
 * calibration statistics): turning a msgpack object into a jansson value for printing.
 */
#ifndef LMD_MSGPACK_H
#define LMD_MSGPACK_H

#include <jansson.h>
#include <msgpack.h>

/** A new jansson value (caller owns it) for o; binary and extension data become null. */
json_t *lmd_msgpack_to_json(const msgpack_object *o);

#endif
