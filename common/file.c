#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
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

char *lmd_path_join(const char *dir, const char *name, struct lmd_err *err)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = lmd_malloc(n, err);
	if (p)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

static char *tmp_name(const char *path, struct lmd_err *err)
{
	size_t n = strlen(path) + 32;
	char *p = lmd_malloc(n, err);
	if (p)
		snprintf(p, n, "%s.tmp.%ld", path, (long)getpid());
	return p;
}

int lmd_out_open(struct lmd_out *o, const char *path, struct lmd_err *err)
{
	memset(o, 0, sizeof(*o));
	if (!strcmp(path, "-")) {
		o->f = stdout;
		return LMD_OK;
	}
	if (!(o->path = lmd_strdup(path, err)) || !(o->tmp = tmp_name(path, err))) {
		lmd_out_abort(o);
		return LMD_ENOMEM;
	}
	o->f = fopen(o->tmp, "wb");
	if (!o->f) {
		int rc = lmd_errorf(err, LMD_EIO, "cannot write '%s': %s", path, strerror(errno));
		lmd_out_abort(o);
		return rc;
	}
	return LMD_OK;
}

int lmd_out_commit(struct lmd_out *o, struct lmd_err *err)
{
	int rc = LMD_OK;
	if (o->f == stdout) {
		if (fflush(stdout) != 0)
			rc = lmd_errorf(err, LMD_EIO, "cannot write standard output: %s", strerror(errno));
		o->f = NULL;
		return rc;
	}
	if (fflush(o->f) != 0 || ferror(o->f) || fsync(fileno(o->f)) != 0)
		rc = lmd_errorf(err, LMD_EIO, "cannot write '%s': %s", o->path, strerror(errno));
	if (fclose(o->f) != 0 && !rc)
		rc = lmd_errorf(err, LMD_EIO, "cannot write '%s': %s", o->path, strerror(errno));
	o->f = NULL;
	if (!rc && rename(o->tmp, o->path) != 0)
		rc = lmd_errorf(err, LMD_EIO, "cannot rename '%s' to '%s': %s", o->tmp, o->path, strerror(errno));
	if (rc)
		lmd_out_abort(o);
	free(o->tmp);
	free(o->path);
	o->tmp = o->path = NULL;
	return rc;
}

void lmd_out_abort(struct lmd_out *o)
{
	if (o->f && o->f != stdout)
		fclose(o->f);
	if (o->tmp)
		unlink(o->tmp);
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

void lmd_rmtree(const char *path)
{
	DIR *d = opendir(path);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			char *p = lmd_path_join(path, e->d_name, NULL);
			if (p) {
				lmd_rmtree(p);
				free(p);
			}
		}
		closedir(d);
		rmdir(path);
	} else {
		unlink(path);
	}
}

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

static int check_dst(const char *dst, int force, struct lmd_err *err)
{
	if (!lmd_exists(dst) || force || (lmd_is_dir(dst) && dir_is_empty(dst)))
		return LMD_OK;
	return lmd_errorf(err, LMD_EINVAL, "'%s' already exists (use --force to replace it)", dst);
}

int lmd_outdir_open(struct lmd_outdir *d, const char *dst, int force, struct lmd_err *err)
{
	int rc;
	memset(d, 0, sizeof(*d));
	if ((rc = check_dst(dst, force, err)))
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
	return LMD_OK;
}

int lmd_outdir_commit(struct lmd_outdir *d, int force, struct lmd_err *err)
{
	int rc = check_dst(d->dst, force, err);
	if (!rc && lmd_exists(d->dst))
		lmd_rmtree(d->dst);
	if (!rc && rename(d->tmp, d->dst) != 0)
		rc = lmd_errorf(err, LMD_EIO, "cannot rename '%s' to '%s': %s", d->tmp, d->dst, strerror(errno));
	if (rc) {
		lmd_outdir_abort(d);
		return rc;
	}
	free(d->tmp);
	free(d->dst);
	memset(d, 0, sizeof(*d));
	return LMD_OK;
}

void lmd_outdir_abort(struct lmd_outdir *d)
{
	if (d->tmp)
		lmd_rmtree(d->tmp);
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
