/**
 * Memory bandwidth, measured in the same run as a benchmark so it can report a roofline:
 * tokens/s that reading the weights once per step would allow.
 */
#ifndef LMD_MEMBW_H
#define LMD_MEMBW_H

#include <stddef.h>

/**
 * Bytes per second that nthreads threads (0 = all cores) reach reading a buffer of bytes bytes
 * again and again (the best of several passes, about seconds in all). A buffer larger than the
 * last-level cache measures DRAM; one the size of a model's weights measures what decode sees.
 * Returns a negative value when the buffer cannot be allocated.
 */
double lmd_membw_read(size_t bytes, int nthreads, double seconds);
/** The same for memcpy on one thread, counting bytes read plus bytes written. */
double lmd_membw_copy(size_t bytes, double seconds);

#endif
