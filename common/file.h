/**
 * Files: read-only maps, whole-file reads, and atomic outputs. Every output of every tool is
 * written to a temporary name beside its destination and renamed into place at the end, so a
 * failed or killed step leaves nothing half-written.
 */
#ifndef LMD_FILE_H
#define LMD_FILE_H

#include <stddef.h>
#include <stdio.h>

#include "err.h"

struct lmd_map {
	const void *data;  /* owned mapping (munmap on close); NULL for an empty file */
	size_t size;
};

/** Map path read-only. A zeroed struct is safe to close. */
int lmd_map_open(struct lmd_map *m, const char *path, struct lmd_err *err);
void lmd_map_close(struct lmd_map *m);

/** Read the whole of path ("-" = stdin) into a malloc'd, NUL-terminated buffer (*buf owned by the caller). */
int lmd_read_file(const char *path, char **buf, size_t *len, struct lmd_err *err);

/** Does path exist (any type)? Is it a directory? */
int lmd_exists(const char *path);
int lmd_is_dir(const char *path);

/** "dir/name" into a malloc'd string (NULL on out of memory, err filled). */
char *lmd_path_join(const char *dir, const char *name, struct lmd_err *err);

/**
 * An output file being written: lmd_out_open creates "PATH.tmp.PID" (or uses stdout for "-"),
 * lmd_out_commit flushes, fsyncs and renames it to PATH, lmd_out_abort removes it.
 * A zeroed struct is safe to abort.
 */
struct lmd_out {
	FILE *f;          /* owned unless it is stdout */
	char *path;       /* owned: the final name */
	char *tmp;        /* owned: the temporary name; NULL for stdout */
};
int lmd_out_open(struct lmd_out *o, const char *path, struct lmd_err *err);
int lmd_out_commit(struct lmd_out *o, struct lmd_err *err);
void lmd_out_abort(struct lmd_out *o);

/** Write buf to path atomically (temporary file + rename). */
int lmd_write_atomic(const char *path, const void *buf, size_t len, struct lmd_err *err);

/**
 * A directory output: lmd_outdir_open makes "DST.tmp.PID" beside DST; lmd_outdir_commit renames it
 * to DST (DST must not exist, or be an empty directory, or force is set and DST is replaced);
 * lmd_outdir_abort removes the temporary tree. The tmp path is owned by the struct.
 */
struct lmd_outdir {
	char *dst;
	char *tmp;
};
int lmd_outdir_open(struct lmd_outdir *d, const char *dst, int force, struct lmd_err *err);
int lmd_outdir_commit(struct lmd_outdir *d, int force, struct lmd_err *err);
void lmd_outdir_abort(struct lmd_outdir *d);

/** Remove a directory tree (best effort). */
void lmd_rmtree(const char *path);

/** Copy a file (not atomic: for use inside an lmd_outdir). */
int lmd_copy_file(const char *src, const char *dst, struct lmd_err *err);

#endif
