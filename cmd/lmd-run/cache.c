/*
 * lmd-run cache list|clean (man lmd-run(1)): the lmd directories that running an HF directory
 * converted into the cache (convert/convert.h, lmd_model_open_any). list prints "BYTES<TAB>PATH"
 * per entry and the total on stderr; clean removes every entry (or those unused for --older-than
 * DAYS), never following a symbolic link, and says what it freed on stderr.
 */
#include <dirent.h>
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cmd/cli.h"
#include "convert/convert.h"
#include "file.h"
#include "run.h"

enum { O_OLDER = 256 };

static uint64_t tree_bytes;
static time_t tree_newest;

static int add_file(const char *path, const struct stat *st, int type, struct FTW *f)
{
	(void)path, (void)type, (void)f;
	tree_bytes += (uint64_t)st->st_blocks * 512;
	if (st->st_mtime > tree_newest)
		tree_newest = st->st_mtime;
	if (st->st_atime > tree_newest)
		tree_newest = st->st_atime;
	return 0;
}

/* Bytes on disk under path and the latest access or change in it (no links followed). */
static uint64_t usage(const char *path, time_t *newest)
{
	tree_bytes = 0;
	tree_newest = 0;
	nftw(path, add_file, 16, FTW_PHYS);
	*newest = tree_newest;
	return tree_bytes;
}

int lmd_run_cache(int argc, char **argv)
{
	static const struct lmd_opt opts[] = {
		{"older-than", O_OLDER, "DAYS", "clean: only entries not used for DAYS days (default 0: all)"},
		{0},
	};
	struct lmd_cli c = {
		.prog = "lmd-run cache",
		.synopsis = "list | clean [OPTIONS]",
		.purpose = "List or remove the lmd directories kept for running HF directories ($LMD_CACHE, "
			   "$XDG_CACHE_HOME/lmd or ~/.cache/lmd).",
		.example = "lmd-run cache list",
		.opts = opts,
	};
	struct lmd_err err = {0};
	const char *arg;
	char *pos[1];
	int k, npos = 0;
	long days = 0;
	while ((k = lmd_cli_next_pos(&c, argc, argv, &arg, pos, &npos, 1)) != -1)
		if (k == O_OLDER)
			days = lmd_cli_long(&c, "older-than", arg, 0, 100000);
	if (npos != 1 || (strcmp(pos[0], "list") && strcmp(pos[0], "clean")))
		lmd_usage(&c, "expected list or clean");
	int clean = !strcmp(pos[0], "clean");
	char dir[PATH_MAX];
	if (lmd_cache_dir(dir, sizeof(dir), &err))
		lmd_die(c.prog, &err);
	lmd_remove_stale_tmps(dir, NULL);
	DIR *d = opendir(dir);
	if (!d) {
		lmd_errorf(&err, LMD_EIO, "cannot read '%s'", dir);
		lmd_die(c.prog, &err);
	}
	uint64_t total = 0;
	int n = 0;
	time_t now = time(NULL);
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char *p = lmd_path_join(dir, e->d_name, &err);
		if (!p)
			lmd_die(c.prog, &err);
		time_t newest;
		uint64_t bytes = usage(p, &newest);
		if (!clean) {
			printf("%llu\t%s\n", (unsigned long long)bytes, p);
		} else if (now - newest >= days * 86400) {
			lmd_rmtree(p);
			lmd_log(&c, 1, "removed '%s'", p);
		} else {
			bytes = 0;
		}
		total += bytes;
		n += bytes > 0;
		free(p);
	}
	closedir(d);
	lmd_log(&c, 0, "%s%d entr%s, %.1f MiB, %s '%s'", clean ? "removed " : "", n, n == 1 ? "y" : "ies",
		(double)total / (1 << 20), clean ? "from" : "in", dir);
	return 0;
}
