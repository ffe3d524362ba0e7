/**
 * Files: read-only maps, whole-file reads, and atomic outputs. Every output of every tool is
 * written to a temporary name beside its destination ("DST.tmp.PID") and renamed into place at
 * the end, so a failed or killed step leaves nothing half-written. Only what we create is ever
 * replaced: an existing device or FIFO is written into (never renamed over), a symbolic link is
 * written through (its target is the output), a directory output never replaces a link or a
 * non-regular file, and tree removal never follows a symbolic link. Temporaries are removed on
 * SIGINT, SIGTERM and SIGHUP (when those signals have their default action), and a later run
 * removes "DST.tmp.PID" left by a process that is gone.
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

/** LMD_OK when path is a directory; else an error naming what (e.g. "model directory") and why. */
int lmd_need_dir(const char *path, const char *what, struct lmd_err *err);

/** "dir/name" into a malloc'd string (NULL on out of memory, err filled). */
char *lmd_path_join(const char *dir, const char *name, struct lmd_err *err);

/**
 * An output file being written: lmd_out_open creates "PATH.tmp.PID" (or uses stdout for "-"),
 * lmd_out_commit flushes, fsyncs and renames it to PATH, lmd_out_abort removes it (standard output is
 * left to the program's check at exit: cli.h, lmd_cli_init). When PATH is an
 * existing device or FIFO it is opened and written directly (tmp NULL); when PATH is a symbolic
 * link, its target is PATH (a link to nothing is refused). Open outputs before long work: opening
 * is the check that the output can be created. A zeroed struct is safe to abort.
 */
struct lmd_out {
	FILE *f;          /* owned unless it is stdout */
	char *path;       /* owned: the final name */
	char *tmp;        /* owned: the temporary name; NULL for stdout, a device or a FIFO */
};
int lmd_out_open(struct lmd_out *o, const char *path, struct lmd_err *err);
int lmd_out_commit(struct lmd_out *o, struct lmd_err *err);
void lmd_out_abort(struct lmd_out *o);

/** Write buf to path atomically (temporary file + rename). */
int lmd_write_atomic(const char *path, const void *buf, size_t len, struct lmd_err *err);

/**
 * A directory output: lmd_outdir_open makes "DST.tmp.PID" beside DST; lmd_outdir_commit renames it
 * to DST (DST must not exist, or be an empty directory, or force is set and DST, a directory or a
 * regular file, is replaced); lmd_outdir_abort removes the temporary tree. The paths are owned by
 * the struct.
 *
 * lmd_outdir_check (also done by open) refuses, before any work: DST "-"; DST a symbolic link or
 * another non-regular file; an existing DST without force; DST the same as src (which may be NULL),
 * inside it or containing it (compared by device and inode along the real paths); a parent that
 * is missing or not writable.
 */
struct lmd_outdir {
	char *dst;
	char *tmp;
};
int lmd_outdir_check(const char *dst, const char *src, int force, struct lmd_err *err);
int lmd_outdir_open(struct lmd_outdir *d, const char *dst, const char *src, int force, struct lmd_err *err);
int lmd_outdir_commit(struct lmd_outdir *d, int force, struct lmd_err *err);
void lmd_outdir_abort(struct lmd_outdir *d);

/** Remove path, a directory tree or anything else (best effort), never following a symbolic link. */
void lmd_rmtree(const char *path);

/** Remove, in dir, "BASE.tmp.PID" (any BASE when base is NULL) left by a process that is gone. */
void lmd_remove_stale_tmps(const char *dir, const char *base);

/** Copy a file (not atomic: for use inside an lmd_outdir). */
int lmd_copy_file(const char *src, const char *dst, struct lmd_err *err);

#endif
