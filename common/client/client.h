/**
 * The client room: the client side of the OpenAI HTTP API, what lmd-run client and lmd-bench serve
 * share (over libcurl).
 *
 *   oaiclient.h  requests, the server-sent-events stream of an answer, usage, error objects, model
 *                list and tokenizer endpoints; one call on a curl easy handle, alone or in a multi handle
 *
 * Depends only on the basics (err.h); nothing in common/ depends on it.
 */
#ifndef LMD_CLIENT_H
#define LMD_CLIENT_H

#include "oaiclient.h"

#endif
