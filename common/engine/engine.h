/**
 * The engine room: running a model, from weights in a backend's memory to sampled tokens.
 *
 *   backend.h   the one backend interface (memory, dtype, step and shape rules); backend.c opens one
 *   ops-cpu.h   the CPU reference of every op ("ref"), the definition of correct; q4.h the int4 layout
 *   backend-cpu.c  the fast CPU backend (cpu-kernels.inc: its vector kernels); CUDA lives in gpu/
 *   kvcache.h   the paged KV pool and a sequence's blocks (fp and int8/int4 storage)
 *   model.h     weights and the forward pass, written once against backend.h
 *   sampler.h   sampling a row of logits (greedy, temperature, top-k/p, min-p, penalties)
 *   scheduler.h continuous batching of requests and sessions over one model
 *   runner.h    a model ready to generate: directory, backend, weights, tokenizer, template, scheduler
 *
 * Depends on the basics (err, file, config, tensor, threads, share), formats/, tok/ (prompts, detokenizing) and convert/ (an HF
 * directory is converted on open). Nothing here prints or exits; cmd/ does.
 */
#ifndef LMD_ENGINE_H
#define LMD_ENGINE_H

#include "runner.h"

#endif
