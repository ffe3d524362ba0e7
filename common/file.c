#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "file.h"

int lmd_map_open(struct lmd_map *m, const char *path, struct lmd_err *err)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	m->data = NULL;
	m->size = 0;
	if (fd < 0)
		return lmd_errorf(err, LMD_EIO, "cannot open '%s': %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return lmd_errorf(err, LMD_EIO, "'%s' is not a regular file", path);
	}
	if (st.st_size > 0) {
		void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p == MAP_FAILED) {
			close(fd);
			return lmd_errorf(err, LMD_EIO, "cannot map '%s': %s", path, strerror(errno));
		}
		m->data = p;
		m->size = (size_t)st.st_size;
	}
	close(fd);
	return LMD_OK;
}

void lmd_map_close(struct lmd_map *m)
{
	if (m->data)
		munmap((void *)m->data, m->size);
	m->data = NULL;
	m->size = 0;
}

int lmd_read_file(const char *path, char **buf, size_t *len, struct lmd_err *err)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	size_t cap = 1 << 16, n = 0;
	char *b;
	*buf = NULL;
	if (!f)
		return lmd_errorf(err, LMD_EIO, "cannot open '%s': %s", path, strerror(errno));
	b = malloc(cap);
	for (;;) {
		if (!b)
			break;
		n += fread(b + n, 1, cap - n - 1, f);
		if (n + 1 < cap)
			break;
		char *nb = realloc(b, cap * 2);
		if (!nb) {
			free(b);
			b = NULL;
			break;
		}
		b = nb;
		cap *= 2;
	}
	int bad = ferror(f);
	if (f != stdin)
		fclose(f);
	if (!b)
		return lmd_errorf(err, LMD_ENOMEM, "out of memory reading '%s'", path);
	if (bad) {
		free(b);
		return lmd_errorf(err, LMD_EIO, "cannot read '%s'", path);
	}
	b[n] = 0;
	*buf = b;
	if (len)
		*len = n;
	return LMD_OK;
}

int lmd_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

int lmd_is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int lmd_need_dir(const char *path, const char *what, struct lmd_err *err)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return lmd_errorf(err, LMD_EIO, "cannot open %s '%s': %s", what, path, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return lmd_errorf(err, LMD_EIO, "'%s' is not a directory", path);
	return LMD_OK;
}

char *lmd_path_join(const char *dir, const char *name, struct lmd_err *err)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = lmd_malloc(n, err);
	if (p)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

// --- removing trees without following links (also from a signal handler: no malloc, no stdio)

/* Remove name in dirfd: a directory's contents first, never following a symbolic link. */
static int remove_at(int dirfd, const char *name, int depth)
{
	if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -1;
	if (depth > 64)
		return -1;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	for (int pass = 0; pass < 3; pass++) {
		_Alignas(8) char buf[4096];
		long n;
		lseek(fd, 0, SEEK_SET);
		while ((n = syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0)
			for (long off = 0; off < n;) {
				struct {
					unsigned long long ino;
					long long off;
					unsigned short reclen;
					unsigned char type;
					char name[];
				} *e = (void *)(buf + off);
				off += e->reclen;
				if (strcmp(e->name, ".") && strcmp(e->name, ".."))
					remove_at(fd, e->name, depth + 1);
			}
		if (unlinkat(dirfd, name, AT_REMOVEDIR) == 0) {
			close(fd);
			return 0;
		}
		if (errno != ENOTEMPTY && errno != EEXIST)
			break;
	}
	close(fd);
	return -1;
}

void lmd_rmtree(const char *path)
{
	remove_at(AT_FDCWD, path, 0);
}

// --- temporaries: "PATH.tmp.PID", removed on SIGINT/SIGTERM and by later runs once PID is gone

enum { MAX_TMPS = 16 };
static char tmp_paths[MAX_TMPS][PATH_MAX];
static volatile sig_atomic_t tmp_used[MAX_TMPS];

static void on_fatal_signal(int sig)
{
	for (int i = 0; i < MAX_TMPS; i++)
		if (tmp_used[i])
			remove_at(AT_FDCWD, tmp_paths[i], 0);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void tmp_register(const char *path)
{
	static int installed;
	if (!installed) {
		installed = 1;
		const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
		for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
			struct sigaction old, sa = {.sa_handler = on_fatal_signal};
			sigemptyset(&sa.sa_mask);
			if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL)
				sigaction(sigs[i], &sa, NULL);
		}
	}
	if (strlen(path) >= PATH_MAX)
		return;
	for (int i = 0; i < MAX_TMPS; i++)
		if (!tmp_used[i]) {
			strcpy(tmp_paths[i], path);
			tmp_used[i] = 1;
			return;
		}
}

static void tmp_unregister(const char *path)
{
	for (int i = 0; i < MAX_TMPS; i++)
		if (tmp_used[i] && !strcmp(tmp_paths[i], path))
			tmp_used[i] = 0;
}

/* Is name "BASE.tmp.PID" or "BASE.old.PID" (any BASE when base is NULL) with PID a process that is gone? */
static int is_stale_tmp(const char *name, const char *base)
{
	const char *dot = strrchr(name, '.'), *t = dot && dot - name >= 4 ? dot - 4 : NULL;
	if (!t || (strncmp(t, ".tmp.", 5) && strncmp(t, ".old.", 5)))
		return 0;
	if (base && ((size_t)(t - name) != strlen(base) || strncmp(name, base, t - name)))
		return 0;
	char *end;
	long pid = strtol(dot + 1, &end, 10);
	if (end == dot + 1 || *end || pid <= 0 || pid == (long)getpid())
		return 0;
	return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

void lmd_remove_stale_tmps(const char *dir, const char *base)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)))
		if (is_stale_tmp(e->d_name, base))
			remove_at(dirfd(d), e->d_name, 0);
	closedir(d);
}

/* The directory part and the last part of path, into dir and base (PATH_MAX each). */
static void split_path(const char *path, char *dir, char *base)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s", path);
	size_t l = strlen(p);
	while (l > 1 && p[l - 1] == '/')
		p[--l] = 0;
	char *s = strrchr(p, '/');
	if (!s) {
		strcpy(dir, ".");
		snprintf(base, PATH_MAX, "%s", p);
	} else {
		snprintf(base, PATH_MAX, "%s", s + 1);
		if (s == p)
			strcpy(dir, "/");
		else
			*s = 0, snprintf(dir, PATH_MAX, "%s", p);
	}
}

static char *tmp_name_as(const char *path, const char *kind, struct lmd_err *err)
{
	char dir[PATH_MAX], base[PATH_MAX];
	split_path(path, dir, base);
	lmd_remove_stale_tmps(dir, base);
	size_t n = strlen(path) + 32;
	char *p = lmd_malloc(n, err);
	if (p)
		snprintf(p, n, "%s.%s.%ld", path, kind, (long)getpid());
	return p;
}

static char *tmp_name(const char *path, struct lmd_err *err)
{
	return tmp_name_as(path, "tmp", err);
}

// --- output files

int lmd_out_open(struct lmd_out *o, const char *path, struct lmd_err *err)
{
	struct stat st;
	char real[PATH_MAX];
	int exists = 1;
	memset(o, 0, sizeof(*o));
	if (!strcmp(path, "-")) {
		o->f = stdout;
		return LMD_OK;
	}
	if (lstat(path, &st) != 0) {
		if (errno != ENOENT)
			return lmd_errorf(err, LMD_EIO, "cannot write '%s': %s", path, strerror(errno));
		exists = 0;
	} else if (S_ISLNK(st.st_mode)) {  /* write through the link: its target is the output */
		if (!realpath(path, real) || stat(real, &st) != 0)
			return lmd_errorf(err, LMD_EIO, "cannot write '%s': a symbolic link to nothing", path);
		path = real;
	}
	if (exists && S_ISDIR(st.st_mode))
		return lmd_errorf(err, LMD_EIO, "cannot write '%s': it is a directory", path);
	if (!(o->path = lmd_strdup(path, err)))
		return LMD_ENOMEM;
	if (exists && !S_ISREG(st.st_mode)) {  /* a device or a FIFO: write into it, never replace it */
		if (!(o->f = fopen(path, "wb"))) {
			int rc = lmd_errorf(err, LMD_EIO, "cannot write '%s': %s", path, strerror(errno));
			lmd_out_abort(o);
			return rc;
		}
		return LMD_OK;
	}
	if (!(o->tmp = tmp_name(path, err))) {
		lmd_out_abort(o);
		return LMD_ENOMEM;
	}
	unlink(o->tmp);
	int fd = open(o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, exists ? st.st_mode & 0777 : 0666);
	if (fd < 0 || !(o->f = fdopen(fd, "wb"))) {
		int rc = lmd_errorf(err, LMD_EIO, "cannot write '%s': %s", path, strerror(errno));
		if (fd >= 0)
			close(fd), unlink(o->tmp);
		free(o->tmp);
		o->tmp = NULL;
		lmd_out_abort(o);
		return rc;
	}
	tmp_register(o->tmp);
	return LMD_OK;
}

int lmd_out_commit(struct lmd_out *o, struct lmd_err *err)
{
	int rc = LMD_OK;
	if (o->f == stdout) {  /* checked once, at exit, by the program (cli.h: lmd_cli_init) */
		o->f = NULL;
		return rc;
	}
	if (fflush(o->f) != 0 || ferror(o->f) || (o->tmp && fsync(fileno(o->f)) != 0))
		rc = lmd_errorf(err, LMD_EIO, "cannot write '%s': %s", o->path, strerror(errno));
	if (fclose(o->f) != 0 && !rc)
		rc = lmd_errorf(err, LMD_EIO, "cannot write '%s': %s", o->path, strerror(errno));
	o->f = NULL;
	if (!rc && o->tmp && rename(o->tmp, o->path) != 0)
		rc = lmd_errorf(err, LMD_EIO, "cannot rename '%s' to '%s': %s", o->tmp, o->path, strerror(errno));
	if (rc) {
		lmd_out_abort(o);
		return rc;
	}
	if (o->tmp)
		tmp_unregister(o->tmp);
	free(o->tmp);
	free(o->path);
	o->tmp = o->path = NULL;
	return rc;
}

void lmd_out_abort(struct lmd_out *o)
{
	if (o->f && o->f != stdout)
		fclose(o->f);
	if (o->tmp) {
		unlink(o->tmp);
		tmp_unregister(o->tmp);
	}
	free(o->tmp);
	free(o->path);
	memset(o, 0, sizeof(*o));
}

int lmd_write_atomic(const char *path, const void *buf, size_t len, struct lmd_err *err)
{
	struct lmd_out o;
	int rc = lmd_out_open(&o, path, err);
	if (rc)
		return rc;
	if (len && fwrite(buf, 1, len, o.f) != len) {
		rc = lmd_errorf(err, LMD_EIO, "cannot write '%s': %s", path, strerror(errno));
		lmd_out_abort(&o);
		return rc;
	}
	return lmd_out_commit(&o, err);
}

// --- output directories

static int dir_is_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int empty = 1;
	if (!d)
		return 0;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			empty = 0;
	closedir(d);
	return empty;
}

/* Is the directory at a (a real path) the same as or inside the one with b's device and inode? */
static int inside(const char *a, const struct stat *b)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s", a);
	for (;;) {
		struct stat st;
		if (stat(p, &st) == 0 && st.st_dev == b->st_dev && st.st_ino == b->st_ino)
			return 1;
		char *s = strrchr(p, '/');
		if (!s || !strcmp(p, "/"))
			return 0;
		s[s == p] = 0;
	}
}

int lmd_outdir_check(const char *dst, const char *src, int force, struct lmd_err *err)
{
	struct stat st, sst;
	char dir[PATH_MAX], base[PATH_MAX], real[PATH_MAX], rdst[PATH_MAX + 1 + NAME_MAX];
	if (!strcmp(dst, "-"))
		return lmd_errorf(err, LMD_EINVAL, "the output is a directory: '-' (standard output) cannot be one");
	split_path(dst, dir, base);
	if (!strcmp(base, ".") || !strcmp(base, "..") || !strcmp(base, "/"))
		return lmd_errorf(err, LMD_EINVAL, "'%s' cannot be replaced: name a new directory", dst);
	if (!realpath(dir, real))
		return lmd_errorf(err, LMD_EIO, "cannot create '%s': '%s': %s", dst, dir, strerror(errno));
	snprintf(rdst, sizeof(rdst), "%s/%s", strcmp(real, "/") ? real : "", base);
	if (lstat(dst, &st) == 0) {
		if (S_ISLNK(st.st_mode))
			return lmd_errorf(err, LMD_EINVAL, "'%s' is a symbolic link: give the directory it names, or "
					  "remove the link", dst);
		if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
			return lmd_errorf(err, LMD_EINVAL, "'%s' exists and is not a directory: not replacing it", dst);
		if (!force && !(S_ISDIR(st.st_mode) && dir_is_empty(dst)))
			return lmd_errorf(err, LMD_EINVAL, "'%s' already exists (use --force to replace it)", dst);
	}
	if (src && stat(src, &sst) == 0) {
		if (inside(rdst, &sst))
			return lmd_errorf(err, LMD_EINVAL, "'%s' is '%s' or inside it: write the output elsewhere", dst,
					  src);
		char rsrc[PATH_MAX];
		if (lstat(dst, &st) == 0 && realpath(src, rsrc) && inside(rsrc, &st))
			return lmd_errorf(err, LMD_EINVAL, "'%s' is inside '%s': replacing it would destroy the input",
					  src, dst);
	}
	if (access(real, W_OK | X_OK) != 0)
		return lmd_errorf(err, LMD_EIO, "cannot create '%s': %s", dst, strerror(errno));
	return LMD_OK;
}

int lmd_outdir_open(struct lmd_outdir *d, const char *dst, const char *src, int force, struct lmd_err *err)
{
	int rc;
	memset(d, 0, sizeof(*d));
	if ((rc = lmd_outdir_check(dst, src, force, err)))
		return rc;
	if (!(d->dst = lmd_strdup(dst, err)) || !(d->tmp = tmp_name(dst, err))) {
		lmd_outdir_abort(d);
		return LMD_ENOMEM;
	}
	lmd_rmtree(d->tmp);
	if (mkdir(d->tmp, 0755) != 0) {
		rc = lmd_errorf(err, LMD_EIO, "cannot create '%s': %s", dst, strerror(errno));
		free(d->tmp);
		d->tmp = NULL;
		lmd_outdir_abort(d);
		return rc;
	}
	tmp_register(d->tmp);
	return LMD_OK;
}

int lmd_outdir_commit(struct lmd_outdir *d, int force, struct lmd_err *err)
{
	int rc = lmd_outdir_check(d->dst, NULL, force, err);
	struct stat st;
	if (!rc && lstat(d->dst, &st) == 0) {
		/* a directory is renamed aside first, so a failure leaves the old one in place */
		char *old = tmp_name_as(d->dst, "old", err);
		if (!old)
			rc = LMD_ENOMEM;
		else if (S_ISDIR(st.st_mode) ? rename(d->dst, old) != 0 : unlink(d->dst) != 0)
			rc = lmd_errorf(err, LMD_EIO, "cannot replace '%s': %s", d->dst, strerror(errno));
		else if (S_ISDIR(st.st_mode)) {
			if (rename(d->tmp, d->dst) != 0) {
				rc = lmd_errorf(err, LMD_EIO, "cannot rename '%s' to '%s': %s", d->tmp, d->dst,
						strerror(errno));
				rename(old, d->dst);
			} else {
				lmd_rmtree(old);
			}
			free(old);
			goto out;
		}
		free(old);
	}
	if (!rc && rename(d->tmp, d->dst) != 0)
		rc = lmd_errorf(err, LMD_EIO, "cannot rename '%s' to '%s': %s", d->tmp, d->dst, strerror(errno));
out:
	if (rc) {
		lmd_outdir_abort(d);
		return rc;
	}
	tmp_unregister(d->tmp);
	free(d->tmp);
	free(d->dst);
	memset(d, 0, sizeof(*d));
	return LMD_OK;
}

void lmd_outdir_abort(struct lmd_outdir *d)
{
	if (d->tmp) {
		lmd_rmtree(d->tmp);
		tmp_unregister(d->tmp);
	}
	free(d->tmp);
	free(d->dst);
	memset(d, 0, sizeof(*d));
}

int lmd_copy_file(const char *src, const char *dst, struct lmd_err *err)
{
	struct lmd_map m = {0};
	int rc = lmd_map_open(&m, src, err);
	if (rc)
		return rc;
	FILE *f = fopen(dst, "wb");
	int bad = !f || (m.size && fwrite(m.data, 1, m.size, f) != m.size);
	if ((f && fclose(f) != 0) || bad)
		rc = lmd_errorf(err, LMD_EIO, "cannot write '%s': %s", dst, strerror(errno));
	lmd_map_close(&m);
	return rc;
}
