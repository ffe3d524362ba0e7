/** Measurements of the machine and the process, for benchmark rooflines (lmd-bench, t/gen-bench-cpu). */
#ifndef LMD_MEMBW_H
#define LMD_MEMBW_H

#include <stddef.h>

/**
 * Memory read bandwidth in bytes/s, measured by threads reading a buffer of bytes (>= 4x the last-level
 * cache) several times; the best pass counts. 0 when the buffer cannot be allocated.
 */
double lmd_membw(int threads, size_t bytes);

/** Peak resident memory of this process, in bytes. */
size_t lmd_peak_rss(void);

#endif
