/**
 * Data files installed with lmd (chat templates, web pages): where they are looked up.
 * Order: $LMD_SHARE, the build-time LMD_SHARE directory (PREFIX/share/lmd), then "share" next
 * to the source tree of the running executable (EXE_DIR/../../share, so build/bin/lmd-run finds
 * <repo>/share), then EXE_DIR/../share/lmd.
 */
#ifndef LMD_SHARE_H
#define LMD_SHARE_H

#include "err.h"

/** The path of name (e.g. "templates/qwen.tmpl") in the first directory holding it, malloc'd
 * (caller frees); NULL with LMD_EIO in err when no directory has it. */
char *lmd_share_path(const char *name, struct lmd_err *err);

#endif
