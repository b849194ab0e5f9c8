/*
 * backup: `parleyd backup`, `parleyd restore`, `parleyd verify` (issue 16).
 * See docs/architecture.md, Backups, for why the copy is consistent.
 *
 * backup --data DIR DEST, in this order:
 *   1. DIR/search/index.db and DIR/push/queue.db with SQLite's online
 *      backup (a read transaction: the server's writer goes on). Both are
 *      derived from the event log and catch up from it at start, so being
 *      behind the store is fine; they are copied first so that they are
 *      never ahead of it.
 *   2. the files once (hard links where DEST is on DIR's file system)
 *   3. DIR/db: a RocksDB checkpoint, made by the running server through
 *      DIR/control.sock (it holds the db's LOCK), or here when no server
 *      runs. This is the backup point: every acknowledged write is in it.
 *   4. the files again: those renamed in since 2 (a file is renamed in
 *      before the record that names it is written, so everything the
 *      checkpoint names is there after this pass)
 *   5. jwt.secret, dm.key (0600)
 *   6. DEST checked as verify would, MANIFEST written, everything fsynced
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "actors/backup.h"
#include "actors/control.h"
#include "proto/proto.h"
#include "proto/reply.h"
#include "storage/store.h"

#define FORMAT 1
#define PROBLEMS_SHOWN 50
#define PATH_CAP 4096

#ifndef PARLEY_VERSION
#define PARLEY_VERSION "unknown"
#endif

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static bool pjoin(char *out, const char *a, const char *b)
{
	int n = snprintf(out, PATH_CAP, "%s/%s", a, b);

	return n > 0 && n < PATH_CAP;
}

/* 0: absent, 1: an empty directory, -1: anything else (errno) */
static int absent_or_empty(const char *p)
{
	struct dirent *e;
	DIR *d = opendir(p);

	if (!d)
		return errno == ENOENT ? 0 : -1;
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			closedir(d);
			errno = ENOTEMPTY;
			return -1;
		}
	}
	closedir(d);
	return 1;
}

static int sync_path(const char *p)
{
	int fd = open(p, O_RDONLY | O_CLOEXEC), rc;

	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

/* ---- copying trees -------------------------------------------------------- */

struct tally {
	uint64_t files, linked, copied, bytes, skipped;
	bool link;       /* try hard links first */
	bool skip_local; /* DATA/files: no tmp/, no dot files */
	bool fsync;      /* fsync each copy */
	const char *err; /* the path that failed */
	char errp[PATH_CAP];
};

static int fail(struct tally *t, const char *p)
{
	int e = errno;

	snprintf(t->errp, sizeof(t->errp), "%s", p);
	t->err = t->errp;
	errno = e;
	return -1;
}

static int copy_file(const char *src, const char *dst, mode_t mode,
		     struct tally *t)
{
	char buf[1 << 16];
	int in, out, rc = 0;
	ssize_t r;

	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return fail(t, src);
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode & 07777);
	if (out < 0) {
		close(in);
		return fail(t, dst);
	}
	while ((r = read(in, buf, sizeof(buf))) != 0) {
		if (r < 0) {
			if (errno == EINTR)
				continue;
			rc = fail(t, src);
			break;
		}
		for (ssize_t off = 0; off < r;) {
			ssize_t w = write(out, buf + off, (size_t)(r - off));

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				rc = fail(t, dst);
				break;
			}
			off += w;
		}
		if (rc)
			break;
		t->bytes += (uint64_t)r;
	}
	/* the mode as it was, whatever the umask did to it */
	if (!rc && fchmod(out, mode & 07777))
		rc = fail(t, dst);
	if (!rc && t->fsync && fsync(out))
		rc = fail(t, dst);
	if (close(out) && !rc)
		rc = fail(t, dst);
	close(in);
	if (rc)
		unlink(dst);
	return rc;
}

/* src into dst (made with src's mode when missing); a file that exists in
 * dst already is left as it is (the second pass over DATA/files). */
static int copy_tree(const char *src, const char *dst, int depth,
		     struct tally *t)
{
	char s[PATH_CAP], d[PATH_CAP];
	struct dirent *e;
	struct stat st;
	DIR *dir;
	int rc = 0;

	if (stat(src, &st))
		return fail(t, src);
	if (mkdir(dst, st.st_mode & 07777) && errno != EEXIST)
		return fail(t, dst);
	dir = opendir(src);
	if (!dir)
		return fail(t, src);
	while (!rc && (e = readdir(dir))) {
		struct stat es, ds;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (t->skip_local && (e->d_name[0] == '.' ||
				      (depth == 0 && !strcmp(e->d_name, "tmp"))))
			continue;
		if (!pjoin(s, src, e->d_name) || !pjoin(d, dst, e->d_name)) {
			errno = ENAMETOOLONG;
			rc = fail(t, src);
			break;
		}
		if (lstat(s, &es)) {
			if (errno == ENOENT)
				continue; /* gone meanwhile (the janitor) */
			rc = fail(t, s);
			break;
		}
		if (S_ISDIR(es.st_mode)) {
			rc = copy_tree(s, d, depth + 1, t);
			continue;
		}
		if (!S_ISREG(es.st_mode)) {
			t->skipped++; /* control.sock, LOCK's kin */
			continue;
		}
		if (lstat(d, &ds) == 0)
			continue; /* the first pass had it */
		t->files++;
		if (t->link && link(s, d) == 0) {
			t->linked++;
			t->bytes += (uint64_t)es.st_size;
			continue;
		}
		if (t->link && errno != EXDEV && errno != EPERM &&
		    errno != EMLINK) {
			if (errno == ENOENT)
				continue;
			rc = fail(t, d);
			break;
		}
		t->link = false; /* another file system: copy from now on */
		if (copy_file(s, d, es.st_mode, t)) {
			if (errno == ENOENT && access(s, F_OK))
				continue;
			rc = -1;
			break;
		}
		t->copied++;
	}
	closedir(dir);
	return rc;
}

/* fsync every file and directory under p, then p. */
static int sync_tree(const char *p)
{
	char c[PATH_CAP];
	struct dirent *e;
	DIR *dir = opendir(p);
	int rc = 0;

	if (!dir)
		return -1;
	while (!rc && (e = readdir(dir))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (!pjoin(c, p, e->d_name))
			continue;
		if (e->d_type == DT_DIR)
			rc = sync_tree(c);
		else if (e->d_type == DT_REG)
			rc = sync_path(c);
	}
	closedir(dir);
	return rc ? rc : sync_path(p);
}

/* ---- SQLite: online backup ------------------------------------------------ */

/* 0 copied, 1 no such database, -1 failed (*why: a static or sqlite's). */
static int sqlite_copy(const char *src, const char *dst, const char **why)
{
	sqlite3 *s = NULL, *d = NULL;
	sqlite3_backup *b;
	int rc = -1;

	*why = NULL;
	if (access(src, F_OK))
		return 1;
	if (sqlite3_open_v2(src, &s, SQLITE_OPEN_READWRITE, NULL) !=
	    SQLITE_OK) {
		*why = sqlite3_errmsg(s);
		goto out;
	}
	sqlite3_busy_timeout(s, 10000);
	if (sqlite3_open_v2(dst, &d, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
			    NULL) != SQLITE_OK) {
		*why = sqlite3_errmsg(d);
		goto out;
	}
	b = sqlite3_backup_init(d, "main", s, "main");
	if (!b) {
		*why = sqlite3_errmsg(d);
		goto out;
	}
	/* all pages in one step: one read transaction, one snapshot of the
	 * source, and a WAL writer is not held up by it */
	for (;;) {
		int r = sqlite3_backup_step(b, -1);

		if (r == SQLITE_DONE)
			break;
		if (r == SQLITE_BUSY || r == SQLITE_LOCKED) {
			sqlite3_sleep(50);
			continue;
		}
		*why = sqlite3_errstr(r);
		sqlite3_backup_finish(b);
		goto out;
	}
	if (sqlite3_backup_finish(b) != SQLITE_OK) {
		*why = sqlite3_errmsg(d);
		goto out;
	}
	rc = 0;
out:
	if (rc && !*why)
		*why = "cannot open";
	if (rc && *why) {
		/* the message lives in a connection about to close */
		static __thread char keep[256];

		snprintf(keep, sizeof(keep), "%s", *why);
		*why = keep;
	}
	sqlite3_close(d);
	sqlite3_close(s);
	if (rc == 0)
		chmod(dst, 0600);
	return rc;
}

/* ---- verify ---------------------------------------------------------------- */

struct vstate {
	uint64_t problems, shown;
	const char *prefix; /* "verify" */
};

static void vline(void *arg, const char *line)
{
	struct vstate *v = arg;

	v->problems++;
	if (v->shown < PROBLEMS_SHOWN) {
		v->shown++;
		printf("%s: %s\n", v->prefix, line);
	}
}

struct fcheck {
	const char *data;
	bool sha;
	struct vstate *v;
	uint64_t files, bytes;
	char (*shas)[65];
	size_t nshas, cap;
	int oom;
};

static int sha_file(const char *p, char out[65])
{
	unsigned char buf[1 << 16], md[32];
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	unsigned mdl = 0;
	ssize_t r;
	int fd = open(p, O_RDONLY | O_CLOEXEC), rc = -1;

	if (fd < 0 || !c || !EVP_DigestInit_ex(c, EVP_sha256(), NULL))
		goto out;
	while ((r = read(fd, buf, sizeof(buf))) > 0)
		EVP_DigestUpdate(c, buf, (size_t)r);
	if (r == 0 && EVP_DigestFinal_ex(c, md, &mdl)) {
		for (unsigned i = 0; i < 32; i++)
			sprintf(out + 2 * i, "%02x", md[i]);
		rc = 0;
	}
out:
	if (fd >= 0)
		close(fd);
	EVP_MD_CTX_free(c);
	return rc;
}

static int check_file(void *arg, const char *rest, size_t rlen, const void *v,
		      size_t vlen)
{
	struct fcheck *f = arg;
	proto_doc d;
	proto_file fr;
	char p[PATH_CAP], line[PATH_CAP + 200], sha[65], got[65];
	struct stat st;

	f->files++;
	if (proto_dec_file_rec(&d, v, vlen, &fr)) {
		snprintf(line, sizeof(line), "file %.*s: its record does not "
			 "decode", (int)rlen, rest);
		vline(f->v, line);
		return 0;
	}
	if (fr.sha256.n != 64) {
		snprintf(line, sizeof(line), "file %.*s: no sha256", (int)rlen,
			 rest);
		vline(f->v, line);
		proto_doc_free(&d);
		return 0;
	}
	memcpy(sha, fr.sha256.s, 64);
	sha[64] = 0;
	if (f->nshas == f->cap) {
		size_t nc = f->cap ? f->cap * 2 : 256;
		void *n = realloc(f->shas, nc * sizeof(*f->shas));

		if (!n) {
			f->oom = 1;
			proto_doc_free(&d);
			return 1;
		}
		f->shas = n;
		f->cap = nc;
	}
	memcpy(f->shas[f->nshas++], sha, 65);
	snprintf(p, sizeof(p), "%s/files/%.2s/%s", f->data, sha, sha);
	if (stat(p, &st)) {
		snprintf(line, sizeof(line), "file %.*s: %s: %s", (int)rlen,
			 rest, p, strerror(errno));
		vline(f->v, line);
	} else if ((uint64_t)st.st_size != fr.size) {
		snprintf(line, sizeof(line), "file %.*s: %s: %lld bytes, the "
			 "record says %llu", (int)rlen, rest, p,
			 (long long)st.st_size, (unsigned long long)fr.size);
		vline(f->v, line);
	} else if (f->sha && (sha_file(p, got) || strcmp(got, sha))) {
		snprintf(line, sizeof(line), "file %.*s: %s: the bytes' "
			 "sha256 is not the record's", (int)rlen, rest, p);
		vline(f->v, line);
	} else {
		f->bytes += fr.size;
	}
	proto_doc_free(&d);
	return 0;
}

static int cmp_sha(const void *a, const void *b)
{
	return memcmp(a, b, 64);
}

struct hcheck {
	struct fcheck *f;
	size_t i; /* into the sorted shas */
};

static uint64_t count_sha(struct fcheck *f, const char *sha, size_t *i)
{
	uint64_t n = 0;

	while (*i < f->nshas && memcmp(f->shas[*i], sha, 64) < 0)
		(*i)++;
	while (*i < f->nshas && !memcmp(f->shas[*i], sha, 64)) {
		n++;
		(*i)++;
	}
	return n;
}

/* 'H' sha -> u64 LE: the number of 'F' records with those bytes */
static int check_hash(void *arg, const char *rest, size_t rlen, const void *v,
		      size_t vlen)
{
	struct hcheck *h = arg;
	char line[300];
	uint64_t want = 0, have;
	size_t j = 0;

	if (rlen != 64)
		return 0;
	if (vlen == 8)
		for (int i = 7; i >= 0; i--)
			want = want << 8 | ((const uint8_t *)v)[i];
	/* shas in 'H' order; any shas the walk skipped have no 'H' */
	j = h->i;
	have = count_sha(h->f, rest, &j);
	h->i = j;
	if (have != want) {
		snprintf(line, sizeof(line), "bytes %.64s: 'H' says %llu file "
			 "records, there are %llu", rest,
			 (unsigned long long)want, (unsigned long long)have);
		vline(h->f->v, line);
	}
	return 0;
}

static void check_sqlite(const char *p, const char *what, struct vstate *v)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char line[PATH_CAP + 300];
	const char *res = NULL;

	if (access(p, F_OK))
		return;
	if (sqlite3_open_v2(p, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL) ==
		    SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		res = (const char *)sqlite3_column_text(st, 0);
	if (!res || strcmp(res, "ok")) {
		snprintf(line, sizeof(line), "%s %s: %s", what, p,
			 res ? res : sqlite3_errmsg(db));
		vline(v, line);
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
}

struct vresult {
	store_verify_counts n;
	uint64_t files, file_bytes;
};

/* The checks of `parleyd verify` on DATA (a data directory or a backup):
 * 0 no problems, 1 problems (printed), 2 could not check (printed). */
static int verify_dir(const char *data, bool sha, const char *prefix,
		      struct vresult *out)
{
	char db[PATH_CAP], p[PATH_CAP], *err = NULL;
	struct vstate v = { .prefix = prefix };
	struct fcheck f = { .data = data, .sha = sha, .v = &v };
	struct hcheck h = { .f = &f };
	store *st;
	int rc, locked;

	memset(out, 0, sizeof(*out));
	if (!pjoin(db, data, "db"))
		return 2;
	locked = store_locked(db);
	if (locked == 1) {
		fprintf(stderr, "%s: a server is running on %s (%s/LOCK is "
			"held): stop it, or verify a backup of it\n", prefix,
			data, db);
		return 2;
	}
	if (store_open_ro(&st, db, &err)) {
		fprintf(stderr, "%s: %s\n", prefix, err ? err : "cannot open");
		free(err);
		return 2;
	}
	rc = store_verify(st, vline, &v, &out->n);
	if (!rc)
		rc = store_scan_meta(st, 'F', "", 0, check_file, &f);
	if (!rc && !f.oom) {
		if (f.nshas) /* no files: qsort must not get NULL */
			qsort(f.shas, f.nshas, sizeof(*f.shas), cmp_sha);
		rc = store_scan_meta(st, 'H', "", 0, check_hash, &h);
	}
	store_close(st);
	free(f.shas);
	if (rc || f.oom) {
		fprintf(stderr, "%s: reading %s failed: %s\n", prefix, db,
			strerror(rc ? -rc : ENOMEM));
		return 2;
	}
	out->files = f.files;
	out->file_bytes = f.bytes;
	if (pjoin(p, data, "search/index.db"))
		check_sqlite(p, "search index", &v);
	if (pjoin(p, data, "push/queue.db"))
		check_sqlite(p, "push queue", &v);
	if (v.problems > v.shown)
		printf("%s: ... and %llu more\n", prefix,
		       (unsigned long long)(v.problems - v.shown));
	return v.problems ? 1 : 0;
}

static void print_counts(const char *prefix, const struct vresult *r)
{
	printf("%s: ok: %llu channels, %llu events (%llu messages), %llu "
	       "memberships, %llu files (%.1f MiB)\n", prefix,
	       (unsigned long long)r->n.channels,
	       (unsigned long long)r->n.events, (unsigned long long)r->n.msgs,
	       (unsigned long long)r->n.members, (unsigned long long)r->files,
	       (double)r->file_bytes / (1 << 20));
}

static void usage_verify(FILE *f)
{
	fprintf(f, "usage: parleyd verify --data DIR [--files-sha]\n"
"Checks a data directory or a backup (the server must not be running on\n"
"it): every channel's events have seqs 1..last with no gap and last is\n"
"the channel's recorded last seq; message and member counts agree with\n"
"the records; message, reply and edit records name events that exist;\n"
"every file record's bytes are there with the recorded size (and sha256,\n"
"--files-sha); the search index and push queue pass SQLite's quick_check.\n"
"Exit 0: ok; 1: problems, one line each; 2: could not check.\n");
}

int cmd_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "data", required_argument, 0, 'd' },
		{ "files-sha", no_argument, 0, 's' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 }
	};
	const char *data = NULL;
	struct vresult r;
	bool sha = false;
	int c, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 's': sha = true; break;
		case 'h': usage_verify(stdout); return 0;
		default: usage_verify(stderr); return 2;
		}
	}
	if (!data && optind < argc)
		data = argv[optind++];
	if (!data || optind < argc) {
		usage_verify(stderr);
		return 2;
	}
	rc = verify_dir(data, sha, "verify", &r);
	if (rc == 0)
		print_counts("verify", &r);
	else if (rc == 1)
		printf("verify: %s has problems\n", data);
	return rc;
}

/* ---- backup ------------------------------------------------------------------ */

/* The checkpoint of DATA/db into dir (absolute, must not exist): by the
 * server when one runs, else here. 0, or -1 (printed). */
static int checkpoint(const char *data, const char *dir, bool *online)
{
	char db[PATH_CAP], line[PATH_CAP + 64], *err = NULL;
	store *st;
	int fd = control_connect(data), n;
	size_t len = 0;

	*online = fd >= 0;
	if (fd >= 0) {
		struct timeval tv = { .tv_sec = 3600 };

		n = snprintf(line, sizeof(line), "checkpoint %s\n", dir);
		if (n <= 0 || (size_t)n >= sizeof(line) ||
		    write(fd, line, (size_t)n) != n) {
			fprintf(stderr, "parleyd backup: %s/control.sock: %s\n",
				data, strerror(errno));
			close(fd);
			return -1;
		}
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		while (len < sizeof(line) - 1) {
			ssize_t r = read(fd, line + len, sizeof(line) - 1 - len);

			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			len += (size_t)r;
			if (memchr(line, '\n', len))
				break;
		}
		close(fd);
		line[len] = 0;
		line[strcspn(line, "\n")] = 0;
		if (!strcmp(line, "ok"))
			return 0;
		fprintf(stderr, "parleyd backup: the server: %s\n",
			len ? line : "no answer");
		return -1;
	}
	if (errno != ENOENT && errno != ECONNREFUSED) {
		fprintf(stderr, "parleyd backup: %s/control.sock: %s\n", data,
			strerror(errno));
		return -1;
	}
	if (!pjoin(db, data, "db"))
		return -1;
	if (store_locked(db) == 1) {
		fprintf(stderr, "parleyd backup: a process holds %s/LOCK but "
			"nothing answers on %s/control.sock (a parleyd without "
			"online backups?)\n", db, data);
		return -1;
	}
	snprintf(line, sizeof(line), "%s/CURRENT", db);
	if (access(line, F_OK)) {
		fprintf(stderr, "parleyd backup: no database in %s\n", db);
		return -1;
	}
	if (store_open(&st, db, 1, 0, &err)) {
		fprintf(stderr, "parleyd backup: %s\n", err ? err : db);
		free(err);
		return -1;
	}
	n = store_checkpoint(st, dir, &err);
	store_close(st);
	if (n) {
		fprintf(stderr, "parleyd backup: %s\n", err ? err : dir);
		free(err);
		return -1;
	}
	return 0;
}

static void usage_backup(FILE *f)
{
	fprintf(f, "usage: parleyd backup --data DIR DEST\n"
"Copies the data directory DIR into DEST (which must not exist, or be\n"
"empty) while the server runs, or while none does: the store (a RocksDB\n"
"checkpoint, made by the server through DIR/control.sock), the search\n"
"index and push queue, the uploaded files, jwt.secret and dm.key, and a\n"
"MANIFEST. Every message acknowledged before it started is in the copy.\n"
"Online, the server's user must be able to write DEST; on DIR's file\n"
"system the store's tables and the files are hard links (immutable\n"
"files: copy DEST elsewhere to survive the disk).\n");
}

static void usage_restore(FILE *f)
{
	fprintf(f, "usage: parleyd restore BACKUP --data DIR\n"
"Copies a backup made by `parleyd backup` into DIR (which must not exist,\n"
"or be empty), then verifies it. Start the server with --data DIR.\n");
}

static bool step_files(const char *data, const char *dest, struct tally *t)
{
	char s[PATH_CAP], d[PATH_CAP];

	if (!pjoin(s, data, "files") || !pjoin(d, dest, "files"))
		return false;
	if (access(s, F_OK))
		return true;
	t->skip_local = true;
	if (copy_tree(s, d, 0, t)) {
		fprintf(stderr, "parleyd backup: files: %s: %s\n", t->err,
			strerror(errno));
		return false;
	}
	return true;
}

static bool copy_secret(const char *data, const char *dest, const char *name,
			bool *had)
{
	char s[PATH_CAP], d[PATH_CAP];
	struct tally t = { .fsync = true };

	*had = false;
	if (!pjoin(s, data, name) || !pjoin(d, dest, name))
		return false;
	if (access(s, F_OK))
		return true;
	*had = true;
	if (copy_file(s, d, 0600, &t)) {
		fprintf(stderr, "parleyd backup: %s: %s\n", t.err,
			strerror(errno));
		return false;
	}
	return true;
}

int cmd_backup(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "data", required_argument, 0, 'd' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 }
	};
	const char *data = "./parley-data", *destarg, *why;
	char dest[PATH_CAP], s[2 * PATH_CAP + 64], d[2 * PATH_CAP + 64], *rp;
	struct tally files = { .link = true, .fsync = true };
	struct vresult vr;
	bool online, had;
	double t0 = now_s(), t;
	int c, vrc;
	FILE *m;
	static const char *dbs[][2] = { { "search", "index.db" },
					{ "push", "queue.db" } };

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 'h': usage_backup(stdout); return 0;
		default: usage_backup(stderr); return 2;
		}
	}
	if (optind + 1 != argc) {
		usage_backup(stderr);
		return 2;
	}
	destarg = argv[optind];
	if (access(data, F_OK)) {
		fprintf(stderr, "parleyd backup: %s: %s\n", data,
			strerror(errno));
		return 2;
	}
	if (absent_or_empty(destarg) < 0) {
		fprintf(stderr, "parleyd backup: %s: %s (DEST must not exist, "
			"or be empty)\n", destarg, strerror(errno));
		return 2;
	}
	if (mkdir(destarg, 0700) && errno != EEXIST) {
		fprintf(stderr, "parleyd backup: %s: %s\n", destarg,
			strerror(errno));
		return 1;
	}
	rp = realpath(destarg, NULL); /* the server has its own cwd */
	if (!rp || strlen(rp) >= sizeof(dest) - 8) {
		fprintf(stderr, "parleyd backup: %s: %s\n", destarg,
			strerror(errno));
		free(rp);
		return 1;
	}
	snprintf(dest, sizeof(dest), "%s", rp);
	free(rp);

	/* 1. the derived SQLite databases first: never ahead of the store */
	for (unsigned i = 0; i < 2; i++) {
		int r;

		t = now_s();
		snprintf(s, sizeof(s), "%s/%s/%s", data, dbs[i][0], dbs[i][1]);
		snprintf(d, sizeof(d), "%s/%s", dest, dbs[i][0]);
		if (access(s, F_OK))
			continue;
		if (mkdir(d, 0700) && errno != EEXIST) {
			fprintf(stderr, "parleyd backup: %s: %s\n", d,
				strerror(errno));
			return 1;
		}
		snprintf(d, sizeof(d), "%s/%s/%s", dest, dbs[i][0], dbs[i][1]);
		r = sqlite_copy(s, d, &why);
		if (r < 0) {
			fprintf(stderr, "parleyd backup: %s: %s\n", s, why);
			return 1;
		}
		if (r == 0) {
			struct stat st;

			stat(d, &st);
			printf("backup: %s/%s: %.1f MiB in %.2f s\n",
			       dbs[i][0], dbs[i][1],
			       (double)st.st_size / (1 << 20), now_s() - t);
		}
	}
	/* 2. the files there now (most of them: the pass after the
	 * checkpoint has little left to do) */
	t = now_s();
	if (!step_files(data, dest, &files))
		return 1;
	/* 3. the store: the backup point */
	{
		double tc = now_s();

		snprintf(d, sizeof(d), "%s/db", dest);
		if (checkpoint(data, d, &online))
			return 1;
		printf("backup: db: checkpoint (%s) in %.2f s\n",
		       online ? "online, by the server" : "no server running",
		       now_s() - tc);
	}
	/* 4. the files renamed in since, which the checkpoint may name */
	if (!step_files(data, dest, &files))
		return 1;
	printf("backup: files: %llu (%llu linked, %llu copied), %.1f MiB in "
	       "%.2f s\n", (unsigned long long)files.files,
	       (unsigned long long)files.linked,
	       (unsigned long long)files.copied,
	       (double)files.bytes / (1 << 20), now_s() - t);
	/* 5. the secrets: without them tokens and DM ids would change */
	if (!copy_secret(data, dest, "jwt.secret", &had))
		return 1;
	printf("backup: jwt.secret: %s\n", had ? "copied" : "not in DIR "
	       "(--jwt-secret-file? back it up yourself)");
	if (!copy_secret(data, dest, "dm.key", &had))
		return 1;
	if (had)
		printf("backup: dm.key: copied\n");
	/* 6. the copy checked, described, synced */
	vrc = verify_dir(dest, false, "backup: verify", &vr);
	if (vrc == 2)
		return 1;
	snprintf(d, sizeof(d), "%s/MANIFEST", dest);
	m = fopen(d, "wx");
	if (!m) {
		fprintf(stderr, "parleyd backup: %s: %s\n", d, strerror(errno));
		return 1;
	}
	fprintf(m, "{\n  \"format\": %d,\n  \"parleyd\": \"%s\",\n"
		"  \"time\": %lld,\n  \"online\": %s,\n  \"channels\": %llu,\n"
		"  \"events\": %llu,\n  \"messages\": %llu,\n"
		"  \"files\": %llu,\n  \"verified\": %s\n}\n", FORMAT,
		PARLEY_VERSION, (long long)time(NULL),
		online ? "true" : "false", (unsigned long long)vr.n.channels,
		(unsigned long long)vr.n.events, (unsigned long long)vr.n.msgs,
		(unsigned long long)vr.files, vrc ? "false" : "true");
	if (fflush(m) || fsync(fileno(m))) {
		fprintf(stderr, "parleyd backup: %s: %s\n", d, strerror(errno));
		fclose(m);
		return 1;
	}
	fclose(m);
	snprintf(s, sizeof(s), "%s/..", dest);
	if (sync_tree(dest) || sync_path(s)) {
		fprintf(stderr, "parleyd backup: fsync %s: %s\n", dest,
			strerror(errno));
		return 1;
	}
	if (vrc) {
		printf("backup: written to %s, but it has the problems above "
		       "(so has %s: run parleyd verify on it when it is "
		       "stopped)\n", dest, data);
		return 1;
	}
	print_counts("backup: verify", &vr);
	printf("backup: done in %.2f s: %s\n", now_s() - t0, dest);
	return 0;
}

/* ---- restore ------------------------------------------------------------------ */

int cmd_restore(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "data", required_argument, 0, 'd' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 }
	};
	const char *data = NULL, *bk;
	char p[PATH_CAP + 8];
	struct tally t = { .fsync = true };
	struct vresult vr;
	double t0 = now_s();
	int c, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 'h': usage_restore(stdout); return 0;
		default: usage_restore(stderr); return 2;
		}
	}
	if (!data || optind + 1 != argc) {
		usage_restore(stderr);
		return 2;
	}
	bk = argv[optind];
	if (!pjoin(p, bk, "MANIFEST") || access(p, R_OK) ||
	    !pjoin(p, bk, "db/CURRENT") || access(p, R_OK)) {
		fprintf(stderr, "parleyd restore: %s is not a backup made by "
			"parleyd backup (no MANIFEST or db/)\n", bk);
		return 2;
	}
	if (absent_or_empty(data) < 0) {
		fprintf(stderr, "parleyd restore: %s: %s (DIR must not exist, "
			"or be empty)\n", data, strerror(errno));
		return 2;
	}
	/* copies, not links: the backup stays as it was whatever the
	 * restored server does */
	if (copy_tree(bk, data, 0, &t)) {
		fprintf(stderr, "parleyd restore: %s: %s\n", t.err,
			strerror(errno));
		return 1;
	}
	if (pjoin(p, data, "MANIFEST"))
		unlink(p); /* describes the backup, not this directory */
	chmod(data, 0700);
	snprintf(p, sizeof(p), "%s/..", data);
	if (sync_tree(data) || sync_path(p)) {
		fprintf(stderr, "parleyd restore: fsync %s: %s\n", data,
			strerror(errno));
		return 1;
	}
	printf("restore: %llu files, %.1f MiB copied into %s in %.2f s\n",
	       (unsigned long long)t.files, (double)t.bytes / (1 << 20), data,
	       now_s() - t0);
	rc = verify_dir(data, false, "restore: verify", &vr);
	if (rc == 0) {
		print_counts("restore: verify", &vr);
		printf("restore: start the server with --data %s\n", data);
	}
	return rc ? 1 : 0;
}
