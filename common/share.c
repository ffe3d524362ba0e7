#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "file.h"
#include "share.h"

#ifndef LMD_SHARE
#define LMD_SHARE "/usr/local/share/lmd"
#endif

static char *try_dir(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);
	if (!p)
		return NULL;
	snprintf(p, n, "%s/%s", dir, name);
	if (lmd_exists(p))
		return p;
	free(p);
	return NULL;
}

char *lmd_share_path(const char *name, struct lmd_err *err)
{
	char *p = NULL;
	const char *env = getenv("LMD_SHARE");
	if (env && *env && (p = try_dir(env, name)))
		return p;
	if ((p = try_dir(LMD_SHARE, name)))
		return p;
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 32);
	if (n > 0) {
		exe[n] = 0;
		char *slash = strrchr(exe, '/');
		if (slash) {
			strcpy(slash, "/../../share");
			if ((p = try_dir(exe, name)))
				return p;
			strcpy(slash, "/../share/lmd");
			if ((p = try_dir(exe, name)))
				return p;
		}
	}
	lmd_errorf(err, LMD_EIO, "cannot find '%s' in $LMD_SHARE, '%s' or beside the executable", name, LMD_SHARE);
	return NULL;
}
