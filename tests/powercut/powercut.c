/*
 * powercut: an LD_PRELOAD library that records what a power cut would leave
 * of parleyd's data directory. kill -9 cannot test fsync (the page cache
 * survives it); this library keeps, beside the data directory, the state a
 * strict POSIX file system guarantees after a power loss:
 *
 *   - a file's bytes are durable as they were at its last fsync() or
 *     fdatasync() (sync_file_range() makes nothing durable);
 *   - a directory's entries (creates, renames, unlinks, mkdirs) are durable
 *     as they were at its last fsync(): a file that was synced but whose
 *     directory was not is lost, a rename not followed by a directory sync
 *     is undone.
 *
 * Files are known by an id of ours (fid), given when a file is created, not
 * by inode number (inodes are reused). Everything "durable" is written out,
 * synchronously, into the shadow directory before the intercepted fsync
 * returns, so it survives the kill -9 of the process:
 *
 *   SHADOW/f/<fid>      the durable bytes of file fid (absent: none)
 *   SHADOW/ns/<dir>     the durable entries of a directory of the data dir,
 *                       one per line: "d NAME" or "f FID NAME"; <dir> is its
 *                       path relative to the data dir with '/' as '%'
 *                       ("%" for the data dir itself)
 *   SHADOW/fids         "FID INO" per file created (the torn-tail variant
 *                       finds a crashed file's unsynced bytes by it)
 *   SHADOW/cut          written just before a self-inflicted kill: why
 *
 * tests/powercut/test_powercut.c rebuilds the data directory from the shadow
 * after the kill. At load the library snapshots the data directory as it is
 * (all of it durable: it was rebuilt from the last shadow).
 *
 * Environment (read at load):
 *   PC_DATA      the data directory (default: parleyd's --data argument)
 *   PC_SHADOW    the shadow directory (default: PC_DATA.pcshadow); must not
 *                hold a previous run's files
 *   PC_DROP_WAL  1: the control run. fsync/fdatasync of a WAL file (*.log)
 *                is silently dropped: it returns 0 and makes nothing
 *                durable. The test must then see acknowledged sends lost.
 *   PC_WBS       bytes: overrides every rocksdb_options_set_write_buffer_size
 *                (small memtables: flushes, WAL switches and compactions
 *                happen every few hundred messages)
 *   PC_KILL      KIND:N: the process SIGKILLs itself right after the N-th
 *                event of KIND once SHADOW/armed exists. KIND: "sst" (an
 *                .sst file created: a flush or compaction has begun), "wal"
 *                (a new WAL file created: a memtable switch), "manifest"
 *                (MANIFEST synced), "dirsync" (a directory synced), "sync"
 *                (any file synced), "walsync" (just BEFORE a WAL file's
 *                sync: its newest bytes are written, not durable).
 *
 *   PC_FAIL_WAL  N: the N-th fsync/fdatasync of a WAL file fails with EIO
 *                (and every later one: a disk that failed stays failed),
 *                the bytes written before it staying in the file, as they
 *                stay in the page cache of a real disk that failed a sync.
 *                tests/powercut/test_outcome.c: a send answered UNAVAILABLE
 *                may then be in the log after a restart.
 *
 * The real fsync is not called: the model is the shadow, and the test only
 * ever kills the process, never the machine.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FD   65536
#define MAX_FID  (1u << 18)
#define NO_DIRTY UINT64_MAX

/* ---- the real functions ------------------------------------------------- */

static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_posix_fallocate)(int, off_t, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_close)(int);
static int (*real_rename)(const char *, const char *);

/* ---- state (all under mu) ---------------------------------------------- */

struct fent {
	ino_t ino;
	bool live;          /* ino still names this fid's file */
	uint64_t dirty_lo;  /* lowest offset written since the last sync */
	uint64_t dsize;     /* durable size */
};

struct fdent {
	uint8_t kind;       /* 0 untracked, 1 file, 2 directory */
	bool wal;           /* a *.log file */
	bool manifest;
	bool osync;         /* opened O_SYNC/O_DSYNC: every write is synced */
	uint32_t fid;
	char *dir;          /* kind 2: path relative to the data dir */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static bool on;
static char data[PATH_MAX];
static size_t data_len;
static char shadow[PATH_MAX];
static bool drop_wal;
/* PC_FAIL_WAL: the WAL sync that fails first (0: none), and the count. */
static long fail_wal, wal_syncs;
static size_t wbs;
static char kill_kind[16];
static long kill_n;
static bool armed;
static struct fent *fents;  /* fents[fid], fid >= 1 */
static uint32_t nfid;
static struct fdent *fds;

static void die(const char *what)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf), "powercut: %s: %s\n", what,
			 strerror(errno));

	if (n > 0)
		(void)!real_write(2, buf, (size_t)n);
	abort();
}

/* ---- paths -------------------------------------------------------------- */

/* Absolute, with "//", "/./" and a trailing '/' removed; 0 or -1. */
static int resolve(int dirfd, const char *path, char *out)
{
	char tmp[PATH_MAX * 2];
	size_t o = 0;

	if (path[0] == '/') {
		snprintf(tmp, sizeof(tmp), "%s", path);
	} else {
		char base[PATH_MAX];

		if (dirfd == AT_FDCWD) {
			if (!getcwd(base, sizeof(base)))
				return -1;
		} else {
			char link[64];
			ssize_t n;

			snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
			n = readlink(link, base, sizeof(base) - 1);
			if (n < 0)
				return -1;
			base[n] = 0;
		}
		snprintf(tmp, sizeof(tmp), "%s/%s", base, path);
	}
	for (const char *p = tmp; *p;) {
		if (p[0] == '/' && (p[1] == '/' || p[1] == 0)) {
			p++;
			continue;
		}
		if (p[0] == '/' && p[1] == '.' && (p[2] == '/' || p[2] == 0)) {
			p += 2;
			continue;
		}
		if (o >= PATH_MAX - 1)
			return -1;
		out[o++] = *p++;
	}
	if (!o)
		out[o++] = '/';
	out[o] = 0;
	return 0;
}

/* The path relative to the data dir ("" for the dir itself), or NULL. */
static const char *in_data(const char *abs)
{
	if (strncmp(abs, data, data_len))
		return NULL;
	if (abs[data_len] == 0)
		return abs + data_len;
	if (abs[data_len] == '/')
		return abs + data_len + 1;
	return NULL;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && !strcmp(s + a - b, suffix);
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

/* ---- the shadow --------------------------------------------------------- */

static void shadow_path(char *out, const char *sub, const char *name)
{
	snprintf(out, PATH_MAX, "%s/%s%s", shadow, sub, name);
}

/* A new fid for ino: older fids of that inode no longer name it. */
static uint32_t new_fid(ino_t ino)
{
	char line[64], p[PATH_MAX];
	int fd, n;

	for (uint32_t f = 1; f <= nfid; f++)
		if (fents[f].live && fents[f].ino == ino)
			fents[f].live = false;
	if (nfid + 1 >= MAX_FID) {
		errno = ENOSPC;
		die("too many files");
	}
	nfid++;
	fents[nfid] = (struct fent){ ino, true, NO_DIRTY, 0 };
	shadow_path(p, "fids", "");
	fd = real_open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		die("fids");
	n = snprintf(line, sizeof(line), "%u %llu\n", nfid,
		     (unsigned long long)ino);
	if (real_write(fd, line, (size_t)n) != n)
		die("fids write");
	real_close(fd);
	return nfid;
}

static uint32_t fid_of(ino_t ino)
{
	for (uint32_t f = nfid; f >= 1; f--)
		if (fents[f].live && fents[f].ino == ino)
			return f;
	return new_fid(ino);
}

static void mark_dirty(uint32_t fid, uint64_t off)
{
	if (off < fents[fid].dirty_lo)
		fents[fid].dirty_lo = off;
}

/* Make the current bytes of fid (readable through rfd) durable. */
static void sync_file(uint32_t fid, int rfd)
{
	struct fent *e = &fents[fid];
	char p[PATH_MAX], name[16];
	static char buf[1 << 20];
	struct stat st;
	uint64_t lo;
	int sfd;

	if (fstat(rfd, &st))
		die("fstat");
	lo = e->dirty_lo < e->dsize ? e->dirty_lo : e->dsize;
	snprintf(name, sizeof(name), "%u", fid);
	shadow_path(p, "f/", name);
	sfd = real_open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (sfd < 0)
		die("shadow file");
	for (uint64_t off = lo; off < (uint64_t)st.st_size;) {
		ssize_t n = pread(rfd, buf, sizeof(buf), (off_t)off);

		if (n <= 0)
			break; /* shrunk under us: the ftruncate below */
		if (real_pwrite(sfd, buf, (size_t)n, (off_t)off) != n)
			die("shadow write");
		off += (uint64_t)n;
	}
	if (real_ftruncate(sfd, st.st_size))
		die("shadow truncate");
	real_close(sfd);
	e->dsize = (uint64_t)st.st_size;
	e->dirty_lo = NO_DIRTY;
}

/* fd may be write-only: read through a second open of the same inode. */
static void sync_fd(uint32_t fid, int fd)
{
	char link[64];
	int rfd;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	rfd = real_open(link, O_RDONLY | O_CLOEXEC);
	if (rfd < 0)
		die("reopen for reading");
	sync_file(fid, rfd);
	real_close(rfd);
}

/* Make the current entries of directory rel durable. */
static void sync_dir(const char *rel)
{
	char abs[PATH_MAX], enc[PATH_MAX], p[PATH_MAX], tmp[PATH_MAX];
	DIR *d;
	struct dirent *de;
	FILE *f;
	int fd;
	size_t i;

	snprintf(abs, sizeof(abs), "%s%s%s", data, *rel ? "/" : "", rel);
	for (i = 0; rel[i] && i < sizeof(enc) - 2; i++)
		enc[i] = rel[i] == '/' ? '%' : rel[i];
	enc[i] = 0;
	if (!i)
		snprintf(enc, sizeof(enc), "%%");
	shadow_path(p, "ns/", enc);
	snprintf(tmp, sizeof(tmp), "%s.tmp", p);
	fd = real_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		die("ns file");
	f = fdopen(fd, "w");
	d = opendir(abs);
	if (!f || !d)
		die("ns opendir");
	while ((de = readdir(d))) {
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW))
			continue; /* gone meanwhile */
		if (S_ISDIR(st.st_mode))
			fprintf(f, "d %s\n", de->d_name);
		else if (S_ISREG(st.st_mode))
			fprintf(f, "f %u %s\n", fid_of(st.st_ino), de->d_name);
	}
	closedir(d);
	/* fclose writes through the real write: not intercepted, the fd is
	 * not a data-dir fd */
	if (fclose(f))
		die("ns write");
	if (real_rename(tmp, p))
		die("ns rename");
}

/* At load: the data directory as it is now is what survived. */
static void snapshot(const char *rel)
{
	char abs[PATH_MAX];
	DIR *d;
	struct dirent *de;

	snprintf(abs, sizeof(abs), "%s%s%s", data, *rel ? "/" : "", rel);
	d = opendir(abs);
	if (!d)
		return;
	while ((de = readdir(d))) {
		char sub[PATH_MAX];
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW))
			continue;
		snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "",
			 de->d_name);
		if (S_ISDIR(st.st_mode)) {
			snapshot(sub);
		} else if (S_ISREG(st.st_mode)) {
			char fp[PATH_MAX];
			int fd;

			snprintf(fp, sizeof(fp), "%s/%s", data, sub);
			fd = real_open(fp, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				die("snapshot open");
			sync_file(new_fid(st.st_ino), fd);
			real_close(fd);
		}
	}
	closedir(d);
	sync_dir(rel);
}

/* ---- self-kill at a chosen moment -------------------------------------- */

static void event(const char *kind, const char *what)
{
	char p[PATH_MAX];
	struct stat st;

	if (!kill_n || strcmp(kind, kill_kind))
		return;
	if (!armed) {
		shadow_path(p, "armed", "");
		if (stat(p, &st))
			return;
		armed = true;
	}
	if (--kill_n == 0) {
		char msg[PATH_MAX + 64];
		int fd, n;

		shadow_path(p, "cut", "");
		n = snprintf(msg, sizeof(msg), "%s %s\n", kind, what);
		fd = real_open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			       0600);
		if (fd >= 0) {
			(void)!real_write(fd, msg, (size_t)n);
			real_close(fd);
		}
		kill(getpid(), SIGKILL);
	}
}

/* ---- load --------------------------------------------------------------- */

#define RESOLVE(name) \
	do { \
		*(void **)&real_##name = dlsym(RTLD_NEXT, #name); \
		if (!real_##name) \
			abort(); \
	} while (0)

static void find_data_arg(char *out, size_t cap)
{
	char buf[8192];
	ssize_t n;
	int fd = real_open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);

	out[0] = 0;
	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	real_close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	for (char *p = buf; p < buf + n; p += strlen(p) + 1) {
		if (!strcmp(p, "--data") && p + strlen(p) + 1 < buf + n) {
			snprintf(out, cap, "%s", p + strlen(p) + 1);
			return;
		}
		if (!strncmp(p, "--data=", 7)) {
			snprintf(out, cap, "%s", p + 7);
			return;
		}
	}
}

/* Other libraries' constructors (mimalloc's) may call in before ours. */
static void resolve_all(void)
{
	static bool done;

	if (done)
		return;
	RESOLVE(open);
	RESOLVE(openat);
	RESOLVE(write);
	RESOLVE(pwrite);
	RESOLVE(pwrite64);
	RESOLVE(writev);
	RESOLVE(pwritev);
	RESOLVE(ftruncate);
	RESOLVE(fallocate);
	RESOLVE(posix_fallocate);
	RESOLVE(fsync);
	RESOLVE(fdatasync);
	RESOLVE(close);
	RESOLVE(rename);
	done = true;
}

__attribute__((constructor)) static void powercut_init(void)
{
	const char *e;
	char arg[PATH_MAX], p[PATH_MAX];

	resolve_all();
	e = getenv("PC_DATA");
	if (e && *e)
		snprintf(arg, sizeof(arg), "%s", e);
	else
		find_data_arg(arg, sizeof(arg));
	if (!arg[0] || !realpath(arg, data))
		return; /* no data dir (yet): a process we do not watch */
	data_len = strlen(data);
	e = getenv("PC_SHADOW");
	if (e && *e)
		snprintf(shadow, sizeof(shadow), "%s", e);
	else
		snprintf(shadow, sizeof(shadow), "%s.pcshadow", data);
	drop_wal = (e = getenv("PC_DROP_WAL")) && atoi(e) > 0;
	fail_wal = (e = getenv("PC_FAIL_WAL")) ? atol(e) : 0;
	wbs = (e = getenv("PC_WBS")) ? strtoull(e, NULL, 10) : 0;
	if ((e = getenv("PC_KILL")) && sscanf(e, "%15[a-z]:%ld", kill_kind,
					      &kill_n) != 2)
		kill_n = 0;

	fents = calloc(MAX_FID, sizeof(*fents));
	fds = calloc(MAX_FD, sizeof(*fds));
	if (!fents || !fds)
		die("calloc");
	if (mkdir(shadow, 0700) && errno != EEXIST)
		die("shadow dir");
	shadow_path(p, "f", "");
	if (mkdir(p, 0700) && errno != EEXIST)
		die("shadow/f");
	shadow_path(p, "ns", "");
	if (mkdir(p, 0700) && errno != EEXIST)
		die("shadow/ns");
	snapshot("");
	on = true;
}

/* ---- interposed calls --------------------------------------------------- */

static void track_open(int fd, int dirfd, const char *path, bool created,
		       int flags)
{
	char abs[PATH_MAX];
	const char *rel;
	struct stat st;
	struct fdent *t;

	if (fd < 0 || fd >= MAX_FD || resolve(dirfd, path, abs) ||
	    !(rel = in_data(abs)) || fstat(fd, &st))
		return;
	pthread_mutex_lock(&mu);
	t = &fds[fd];
	free(t->dir);
	memset(t, 0, sizeof(*t));
	if (S_ISDIR(st.st_mode)) {
		t->kind = 2;
		t->dir = strdup(rel);
	} else if (S_ISREG(st.st_mode)) {
		t->kind = 1;
		t->fid = created ? new_fid(st.st_ino) : fid_of(st.st_ino);
		t->wal = ends_with(rel, ".log");
		t->manifest = !strncmp(base_name(rel), "MANIFEST-", 9);
		t->osync = flags & (O_SYNC | O_DSYNC);
		if (flags & O_TRUNC)
			mark_dirty(t->fid, 0);
	}
	pthread_mutex_unlock(&mu);
	if (created && t->kind == 1) {
		if (ends_with(rel, ".sst"))
			event("sst", rel);
		else if (t->wal)
			event("wal", rel);
	}
}

/* Would this open create the file? (Asked before the open.) */
static bool will_create(int dirfd, const char *path, int flags)
{
	char abs[PATH_MAX];
	struct stat st;

	if (!on || !(flags & O_CREAT) || resolve(dirfd, path, abs) ||
	    !in_data(abs))
		return false;
	return fstatat(AT_FDCWD, abs, &st, AT_SYMLINK_NOFOLLOW) != 0;
}

static int do_open(int dirfd, const char *path, int flags, mode_t mode)
{
	bool created;
	int fd;

	resolve_all();
	created = will_create(dirfd, path, flags);
	fd = real_openat(dirfd, path, flags, mode);

	if (on && fd >= 0)
		track_open(fd, dirfd, path, created, flags);
	return fd;
}

#define MODE_ARG(flags) \
	mode_t mode = 0; \
	if ((flags) & (O_CREAT | __O_TMPFILE)) { \
		va_list ap; \
		va_start(ap, flags); \
		mode = (mode_t)va_arg(ap, int); \
		va_end(ap); \
	}

int open(const char *path, int flags, ...)
{
	MODE_ARG(flags);
	return do_open(AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	MODE_ARG(flags);
	return do_open(AT_FDCWD, path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	MODE_ARG(flags);
	return do_open(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	MODE_ARG(flags);
	return do_open(dirfd, path, flags, mode);
}

int creat(const char *path, mode_t mode)
{
	return do_open(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, mode);
}

int creat64(const char *path, mode_t mode)
{
	return do_open(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, mode);
}

static void synced(int fd, struct fdent *t);

/* After a write of n bytes at off to fd. */
static void wrote(int fd, uint64_t off, ssize_t n)
{
	struct fdent *t;

	if (!on || n < 0 || fd < 0 || fd >= MAX_FD || fds[fd].kind != 1)
		return;
	pthread_mutex_lock(&mu);
	t = &fds[fd];
	if (t->kind == 1) {
		mark_dirty(t->fid, off);
		if (t->osync)
			synced(fd, t);
	}
	pthread_mutex_unlock(&mu);
}

/* An fd closed where we could not see it (fclose() of fdopen()). */
static void untrack(int fd)
{
	pthread_mutex_lock(&mu);
	free(fds[fd].dir);
	memset(&fds[fd], 0, sizeof(fds[fd]));
	pthread_mutex_unlock(&mu);
}

static bool tracked_file(int fd)
{
	return on && fd >= 0 && fd < MAX_FD && fds[fd].kind == 1;
}

/* After a write at the file offset (write, writev): n bytes ending at the
 * offset now. */
static ssize_t wrote_at_offset(int fd, ssize_t n)
{
	if (n > 0 && tracked_file(fd)) {
		off_t end = lseek(fd, 0, SEEK_CUR);

		if (end < 0)
			untrack(fd); /* closed behind our back, now a pipe */
		else
			wrote(fd, end >= n ? (uint64_t)(end - n) : 0, n);
	}
	return n;
}

ssize_t write(int fd, const void *buf, size_t len)
{
	resolve_all();
	return wrote_at_offset(fd, real_write(fd, buf, len));
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	resolve_all();
	return wrote_at_offset(fd, real_writev(fd, iov, cnt));
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
	resolve_all();
	ssize_t n = real_pwrite(fd, buf, len, off);

	if (n > 0 && tracked_file(fd))
		wrote(fd, (uint64_t)off, n);
	return n;
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
	resolve_all();
	ssize_t n = real_pwrite64(fd, buf, len, off);

	if (n > 0 && tracked_file(fd))
		wrote(fd, (uint64_t)off, n);
	return n;
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	resolve_all();
	ssize_t n = real_pwritev(fd, iov, cnt, off);

	if (n > 0 && tracked_file(fd))
		wrote(fd, (uint64_t)off, n);
	return n;
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return pwritev(fd, iov, cnt, off);
}

int ftruncate(int fd, off_t len)
{
	resolve_all();
	int rc = real_ftruncate(fd, len);

	if (!rc && tracked_file(fd))
		wrote(fd, (uint64_t)len, 0);
	return rc;
}

int ftruncate64(int fd, off_t len)
{
	return ftruncate(fd, len);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	resolve_all();
	int rc = real_fallocate(fd, mode, off, len);

	/* FALLOC_FL_KEEP_SIZE (1): the size and the bytes stay */
	if (!rc && !(mode & 1) && tracked_file(fd))
		wrote(fd, (uint64_t)off, 0);
	return rc;
}

int fallocate64(int fd, int mode, off_t off, off_t len)
{
	return fallocate(fd, mode, off, len);
}

int posix_fallocate(int fd, off_t off, off_t len)
{
	resolve_all();
	int rc = real_posix_fallocate(fd, off, len);

	if (!rc && tracked_file(fd))
		wrote(fd, (uint64_t)off, 0);
	return rc;
}

int posix_fallocate64(int fd, off_t off, off_t len)
{
	return posix_fallocate(fd, off, len);
}

/* Under mu: fd (a file) is synced. */
static void synced(int fd, struct fdent *t)
{
	sync_fd(t->fid, fd);
}

static int do_sync(int fd)
{
	struct fdent *t;
	const char *kind = NULL;
	char what[64] = "";

	if (!on || fd < 0 || fd >= MAX_FD || !fds[fd].kind)
		return 0;
	/* "walsync": the cut lands after the WAL's bytes are written and
	 * before their sync, so a torn round has an unsynced tail to tear */
	if (fds[fd].kind == 1 && fds[fd].wal)
		event("walsync", "before a WAL sync");
	pthread_mutex_lock(&mu);
	t = &fds[fd];
	if (t->kind == 1 && t->wal && fail_wal > 0 && ++wal_syncs >= fail_wal) {
		pthread_mutex_unlock(&mu);
		errno = EIO;
		return -1;
	}
	if (t->kind == 1) {
		if (!(drop_wal && t->wal))
			synced(fd, t);
		kind = t->manifest ? "manifest" : "sync";
		snprintf(what, sizeof(what), "fid %u%s", t->fid,
			 t->wal ? " (wal)" : "");
	} else if (t->kind == 2) {
		sync_dir(t->dir);
		kind = "dirsync";
		snprintf(what, sizeof(what), "dir '%.50s'", t->dir);
	}
	pthread_mutex_unlock(&mu);
	if (kind) {
		event(kind, what);
		if (strcmp(kind, "dirsync"))
			event("sync", what);
	}
	return 0;
}

int fsync(int fd)
{
	resolve_all();
	if (on && fd >= 0 && fd < MAX_FD && fds[fd].kind)
		return do_sync(fd);
	return real_fsync(fd);
}

int fdatasync(int fd)
{
	resolve_all();
	if (on && fd >= 0 && fd < MAX_FD && fds[fd].kind)
		return do_sync(fd);
	return real_fdatasync(fd);
}

int close(int fd)
{
	resolve_all();
	if (on && fd >= 0 && fd < MAX_FD && fds[fd].kind)
		untrack(fd);
	return real_close(fd);
}

/* ---- RocksDB: small memtables on request -------------------------------- */

void rocksdb_options_set_write_buffer_size(void *opt, size_t v);

void rocksdb_options_set_write_buffer_size(void *opt, size_t v)
{
	static void (*real)(void *, size_t);

	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT,
					"rocksdb_options_set_write_buffer_size");
	if (!real)
		abort();
	real(opt, wbs ? wbs : v);
}
