/*
 * files: uploads, downloads, the janitor (see files.h and docs/rest.md,
 * Files).
 *
 * An upload, step by step:
 *   connection's shard  files_begin: path, token, name, Content-Length
 *                       against --max-file-mb and the stored quota (413
 *                       before a byte is read); DATA/files/tmp/<rnd>.part
 *                       files_data: write(), SHA-256, the first 64 KiB
 *                       files_end: type from those bytes (preview_sniff)
 *     --M_CALL--> files shard  fin_check: quota again (with the uploads
 *                       in flight), pin the sha256 (the janitor will not
 *                       unlink those bytes meanwhile)
 *     --job--> worker   fsync the .part; the bytes exist already: drop it
 *                       (stored once); else rename to DATA/files/<aa>/<sha>
 *                       and fsync the directories
 *     --M_CALL--> files shard  fin_store: 'F', 'H' +1, 'Q' +size into the
 *                       shard's batch; the answer is an effect of it
 *     --M_CALL (after the commit)--> connection's shard: 201
 *   files shard         preview_submit; its answer rewrites 'F'
 *                       (w, h, thumb, snippet)
 *
 * Every 'F', 'H', 'Q' write is the files shard's, through its batch; the
 * current values of 'H' and 'Q' whose writes are not yet durable are kept
 * here (struct rec) until they are, as pushers.c keeps its records. That
 * state lives in the statics below, touched only by the files shard's
 * thread.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "actors/actors.h"
#include "actors/cluster_core.h"
#include "actors/cluster_log.h"
#include "actors/commit.h"
#include "actors/files.h"
#include "actors/preview.h"
#include "actors/smap.h"
#include "runtime/log.h"

#define FILES_SHARD 0
#define HEAD_KEEP (64 * 1024)
#define TYPE_CAP 128
#define NAME_MAX_B 255
#define ID_LEN 25 /* "F" + 24 hex */
#define SHA_HEX 64
#define JANITOR_MAX 64 /* records reclaimed per tick at most */

/* A thread and the jobs it waits for (under F.mu). */
struct queue {
	pthread_t th;
	pthread_cond_t cv;
	struct job *head, *tail;
};

enum { Q_WORKER, Q_PULLER, NQUEUES };

static struct {
	uint64_t max_file, quota, ttl_ms;
	char dir[3072];       /* DATA/files */
	bool running, stop;
	_Atomic bool halt;    /* stopping: pulls give up */
	pthread_mutex_t mu;
	/* the worker (fsync, rename, unlink) and, in a cluster, the puller
	 * (bytes from other hosts: a slow pull holds up no upload) */
	struct queue q[NQUEUES];
} F = { .max_file = 100ull << 20, .quota = 1024ull << 20,
	.ttl_ms = 24ull * 3600 * 1000, .mu = PTHREAD_MUTEX_INITIALIZER,
	.q = { { .cv = PTHREAD_COND_INITIALIZER },
	       { .cv = PTHREAD_COND_INITIALIZER } } };

void files_configure(uint64_t max_file_mb, uint64_t quota_mb)
{
	F.max_file = max_file_mb << 20;
	F.quota = quota_mb << 20;
}

uint64_t files_max_bytes(void) { return F.max_file; }

/* Does this host keep the files (their records, the janitor)? Always, but
 * in a cluster only the owner of the files shard's partition: the others
 * offer it their uploads and pull the bytes (docs/cluster.md, "Files"). */
static bool here(void)
{
	return !cluster_on || cluster_owns(FILES_SHARD);
}

/* ---- JSON answers ---------------------------------------------------------- */

static void set_json(rt_http_resp *r, int status, json_t *j)
{
	r->status = status;
	r->content_type = "application/json";
	r->body = json_dumps(j, JSON_COMPACT);
	r->body_len = r->body ? strlen(r->body) : 0;
	json_decref(j);
}

static void err(rt_http_resp *r, int status, const char *code,
		const char *msg)
{
	set_json(r, status, json_pack("{s:s, s:s}", "code", code, "msg", msg));
	if (status == 401)
		rt_http_add_header(r, "WWW-Authenticate", "Bearer");
}

static bool bearer(const rt_http_req *req, rt_http_resp *resp,
		   struct auth_claims *cl)
{
	const char *a = req->authorization, *why = "bad token";

	if (strncasecmp(a, "Bearer ", 7)) {
		err(resp, 401, "UNAUTHORIZED", "Authorization: Bearer JWT needed");
		return false;
	}
	a += 7;
	if (auth_verify(srv.key, srv.key_len, a, strlen(a),
			(int64_t)(rt_now_ms() / 1000), cl, &why)) {
		err(resp, 401, "UNAUTHORIZED", why);
		return false;
	}
	return true;
}

static void hex(char *out, const uint8_t *b, size_t n)
{
	static const char d[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[b[i] >> 4];
		out[2 * i + 1] = d[b[i] & 15];
	}
	out[2 * n] = '\0';
}

static void bytes_path(char *p, size_t cap, const char *sha)
{
	snprintf(p, cap, "%s/%.2s/%s", F.dir, sha, sha);
}

static void thumb_path(char *p, size_t cap, const char *sha)
{
	snprintf(p, cap, "%s/thumbs/%s.jpg", F.dir, sha);
}


/* ---- the worker: fsync, rename, unlink -------------------------------- */

enum { JOB_FIN = 1, JOB_UNLINK, JOB_UNLINK_SHA, JOB_FORWARD, JOB_PULL,
       JOB_FETCH };

struct job {
	struct job *next;
	int kind;
	void *arg;            /* JOB_FIN, _FORWARD, _PULL: the struct fin */
	char path[4096];      /* JOB_UNLINK */
	char sha[SHA_HEX + 1]; /* JOB_UNLINK_SHA, JOB_FETCH */
	bool thumb;           /* JOB_FETCH: the preview, not the bytes */
};

static void job_post_to(unsigned q, struct job *j)
{
	struct queue *x = &F.q[q];

	pthread_mutex_lock(&F.mu);
	j->next = NULL;
	if (x->tail)
		x->tail->next = j;
	else
		x->head = j;
	x->tail = j;
	pthread_cond_signal(&x->cv);
	pthread_mutex_unlock(&F.mu);
}

static void job_post(struct job *j)
{
	job_post_to(Q_WORKER, j);
}

static struct job *job_new(int kind, void *arg)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		abort();
	j->kind = kind;
	j->arg = arg;
	return j;
}

static void unlink_later(const char *path)
{
	struct job *j = calloc(1, sizeof(*j));

	j->kind = JOB_UNLINK;
	snprintf(j->path, sizeof(j->path), "%s", path);
	job_post(j);
}

/* An upload on its way from the connection's shard to the files shard,
 * the worker and back (self-contained: a commit that fails frees it
 * with free()). */
struct fin {
	struct m_call c; /* first: the mailbox sees an M_CALL */
	rt_conn_id conn;
	int fd;          /* the .part, open (the worker closes it); -1: an
			  * upload another host took (tok) */
	int status;      /* worker: 0, or an errno */
	uint64_t size;
	char ws[ID_CAP], user[ID_CAP], name[NAME_MAX_B + 1], type[TYPE_CAP];
	char sha[SHA_HEX + 1], tmp[4096];
	/* a cluster's owner storing another host's upload: the offer to
	 * answer (instead of conn), the host to pull the bytes from */
	bus_reply_token *tok;
	char holder[BUS_HOST_MAX + 1];
};

static void fin_stored(struct shard_state *ss, struct m_call *c);

/* DATA/files/tmp/<random>.part */
static void tmp_path(char *out, size_t cap)
{
	uint8_t rnd[16];
	char rh[33];

	RAND_bytes(rnd, sizeof(rnd));
	hex(rh, rnd, sizeof(rnd));
	snprintf(out, cap, "%s/tmp/%s.part", F.dir, rh);
}

/* Makes tmp (fd open on it, closed here) durable as dst in dir sub: fsync,
 * mkdir, rename, fsync the directories; with dst there already, drops tmp
 * (stored once). 0, or an errno (tmp removed). */
static int put_in_place(int fd, const char *tmp, const char *dst,
			const char *sub)
{
	struct stat st;
	int rc = 0;

	if (fsync(fd)) {
		rc = errno;
		goto out;
	}
	if (stat(dst, &st) == 0) {
		unlink(tmp); /* stored once: these bytes are there */
		goto out;
	}
	if (mkdir(sub, 0700) == 0) {
		if (store_sync_dir(F.dir)) {
			rc = errno;
			goto out;
		}
	} else if (errno != EEXIST) {
		rc = errno;
		goto out;
	}
	if (rename(tmp, dst) || store_sync_dir(sub))
		rc = errno ? errno : EIO;
out:
	if (rc)
		unlink(tmp);
	close(fd);
	return rc;
}

/* The upload's .part into DATA/files/<aa>/<sha>: 0 or an errno. */
static int put_bytes(struct fin *f)
{
	char dst[4200], sub[4200];
	int rc;

	bytes_path(dst, sizeof(dst), f->sha);
	snprintf(sub, sizeof(sub), "%s/%.2s", F.dir, f->sha);
	rc = put_in_place(f->fd, f->tmp, dst, sub);
	if (rc)
		plog(PL_ERROR, "files", "storing %s (%s, by %s): %s",
		     f->tmp, f->name, f->user, strerror(rc));
	f->fd = -1;
	return rc;
}

static void worker_fin(struct fin *f)
{
	f->status = put_bytes(f);
	f->c.fn = fin_stored;
	rt_post(FILES_SHARD, &f->c.h);
}

static void worker_forward(struct fin *f);
static void worker_pull(struct fin *f);
static void worker_fetch(const char *sha, bool thumb);

static void *worker(void *arg)
{
	struct queue *x = arg;

	pthread_mutex_lock(&F.mu);
	for (;;) {
		struct job *j;
		char p[4200];

		while (!x->head && !F.stop)
			pthread_cond_wait(&x->cv, &F.mu);
		if (!x->head)
			break;
		j = x->head;
		x->head = j->next;
		if (!x->head)
			x->tail = NULL;
		pthread_mutex_unlock(&F.mu);
		switch (j->kind) {
		case JOB_FIN:
			worker_fin(j->arg);
			break;
		case JOB_FORWARD:
			worker_forward(j->arg);
			break;
		case JOB_PULL:
			worker_pull(j->arg);
			break;
		case JOB_FETCH:
			worker_fetch(j->sha, j->thumb);
			break;
		case JOB_UNLINK:
			unlink(j->path);
			break;
		case JOB_UNLINK_SHA:
			bytes_path(p, sizeof(p), j->sha);
			unlink(p);
			thumb_path(p, sizeof(p), j->sha);
			unlink(p);
			break;
		}
		free(j);
		pthread_mutex_lock(&F.mu);
	}
	pthread_mutex_unlock(&F.mu);
	return NULL;
}

static int mkdir_p(const char *d)
{
	return mkdir(d, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

int files_start(const char *data_dir, const char **errs)
{
	char p[4200];
	const char *ttl = getenv("PARLEY_FILE_TTL_MS");
	DIR *d;
	struct dirent *e;

	if (ttl && *ttl)
		F.ttl_ms = strtoull(ttl, NULL, 10);
	snprintf(F.dir, sizeof(F.dir), "%s/files", data_dir);
	snprintf(p, sizeof(p), "%s/tmp", F.dir);
	if (mkdir_p(F.dir) || mkdir_p(p)) {
		*errs = "cannot create DATA/files/tmp";
		return -1;
	}
	/* Anything in tmp is an upload that never finished (a crash, a
	 * kill -9): garbage. */
	d = opendir(p);
	while (d && (e = readdir(d))) {
		char f[4500];

		if (e->d_name[0] == '.')
			continue;
		snprintf(f, sizeof(f), "%s/%s", p, e->d_name);
		unlink(f);
	}
	if (d)
		closedir(d);
	snprintf(p, sizeof(p), "%s/thumbs", F.dir);
	if (mkdir_p(p) || store_sync_dir(F.dir) || store_sync_dir(data_dir)) {
		*errs = "cannot create DATA/files/thumbs";
		return -1;
	}
	if (preview_init(data_dir, 0, 0)) { /* its defaults: 50 MP, 10 s */
		*errs = "cannot start previews";
		return -1;
	}
	F.stop = false;
	atomic_store(&F.halt, false);
	for (unsigned i = 0; i < NQUEUES; i++)
		if (pthread_create(&F.q[i].th, NULL, worker, &F.q[i])) {
			*errs = "cannot start the files worker";
			return -1;
		}
	F.running = true;
	return 0;
}

void files_drain(void)
{
	if (F.running)
		preview_stop(); /* its answers still need the shards */
}

void files_stop(void)
{
	if (!F.running)
		return;
	atomic_store(&F.halt, true);
	pthread_mutex_lock(&F.mu);
	F.stop = true;
	for (unsigned i = 0; i < NQUEUES; i++)
		pthread_cond_signal(&F.q[i].cv);
	pthread_mutex_unlock(&F.mu);
	for (unsigned i = 0; i < NQUEUES; i++)
		pthread_join(F.q[i].th, NULL);
	F.running = false;
}

/* ---- the files shard's records in flight ------------------------------ */

/* The current value of an 'H' or 'Q' record whose write is not durable
 * yet (tag + key); dropped when its last write is. */
struct rec {
	uint64_t v;
	uint32_t inflight, klen;
	char key[];
};

static smap recs;   /* tag+key -> struct rec */
static smap pins;   /* sha -> struct pin: uploads between check and store */
static smap pviews; /* id -> "": previews in flight (janitor waits) */
static uint64_t jan_next_ms;
static unsigned jan_bucket;

struct pin {
	uint32_t n;
	char key[SHA_HEX + 1];
};

struct rec_done {
	struct m_call c;
	uint32_t klen;
	char key[1 + 2 * ID_CAP + SHA_HEX];
	bool unlink_if_zero; /* H: the bytes go if nothing counts them */
};

static size_t rec_key(char *k, char tag, const char *a, const char *b)
{
	size_t n = 0;

	k[n++] = tag;
	n += (size_t)sprintf(k + n, "%s", a);
	if (b) {
		k[n++] = '\0';
		n += (size_t)sprintf(k + n, "%s", b);
	}
	return n;
}

/* 0 and *v, or -1 (storage failing). Missing: 0. stored: what storage
 * has (any shard); else what the files shard has written (its own). */
static int rec_get2(const char *k, size_t kl, uint64_t *v, bool stored)
{
	struct rec *r = stored ? NULL : smap_get(&recs, k, kl);
	void *val;
	size_t n;
	int rc;

	if (r) {
		*v = r->v;
		return 0;
	}
	rc = store_get_meta(srv.st, k[0], k + 1, kl - 1, &val, &n);
	if (rc == -ENOENT) {
		*v = 0;
		return 0;
	}
	if (rc)
		return -1;
	*v = 0;
	if (n == 8)
		memcpy(v, val, 8); /* little-endian hosts only, as store.c */
	free(val);
	return 0;
}

static int rec_get(const char *k, size_t kl, uint64_t *v)
{
	return rec_get2(k, kl, v, false);
}

static void rec_released(struct shard_state *ss, struct m_call *c)
{
	struct rec_done *d = (struct rec_done *)c;
	struct rec *r = smap_get(&recs, d->key, d->klen);
	uint64_t v = 1;

	(void)ss;
	if (r && !--r->inflight) {
		smap_del(&recs, r->key, r->klen);
		free(r);
	}
	if (d->unlink_if_zero && rec_get(d->key, d->klen, &v) == 0 && !v &&
	    !smap_get(&pins, d->key + 1, d->klen - 1)) {
		struct job *j = calloc(1, sizeof(*j));

		j->kind = JOB_UNLINK_SHA;
		memcpy(j->sha, d->key + 1, SHA_HEX);
		job_post(j);
		if (cluster_on) /* and on the other hosts */
			cluster_file_gone(j->sha);
	}
	free(d);
}

/* Write v (0: delete) in this turn's batch; remember it until durable. */
static void rec_put(struct shard_state *ss, const char *k, size_t kl,
		    uint64_t v)
{
	struct rec *r = smap_get(&recs, k, kl);
	struct rec_done *d;

	if (!r) {
		r = calloc(1, sizeof(*r) + kl);
		memcpy(r->key, k, kl);
		r->klen = (uint32_t)kl;
		smap_put(&recs, r->key, r->klen, r);
	}
	r->v = v;
	r->inflight++;
	if (v)
		store_put_meta(ss->batch, k[0], k + 1, kl - 1, &v, 8);
	else
		store_del_meta(ss->batch, k[0], k + 1, kl - 1);
	d = msg_new(sizeof(*d), M_CALL);
	d->c.fn = rec_released;
	memcpy(d->key, k, kl);
	d->klen = (uint32_t)kl;
	d->unlink_if_zero = k[0] == 'H' && !v;
	fx_post(ss, NULL, ss->id, &d->c.h);
}

static void pin(const char *sha, int delta)
{
	struct pin *p = smap_get(&pins, sha, SHA_HEX);

	if (!p && delta > 0) {
		p = calloc(1, sizeof(*p));
		memcpy(p->key, sha, SHA_HEX);
		smap_put(&pins, p->key, SHA_HEX, p);
	}
	if (!p)
		return;
	p->n += (uint32_t)delta;
	if (!p->n) {
		smap_del(&pins, p->key, SHA_HEX);
		free(p);
	}
}

/* Bytes of uploads between fin_check and fin_store, per user: they count
 * against the quota before their 'Q' is written. */
static smap reserved; /* ws \0 user -> struct rec (v = bytes) */

static uint64_t *reserve(const char *ws, const char *user, bool make)
{
	char k[2 * ID_CAP];
	size_t kl = (size_t)sprintf(k, "%s", ws) + 1;
	struct rec *r;

	k[kl - 1] = '\0';
	kl += (size_t)sprintf(k + kl, "%s", user);
	r = smap_get(&reserved, k, kl);
	if (!r && make) {
		r = calloc(1, sizeof(*r) + kl);
		memcpy(r->key, k, kl);
		r->klen = (uint32_t)kl;
		smap_put(&reserved, r->key, r->klen, r);
	}
	return r ? &r->v : NULL;
}

static void unreserve(const char *ws, const char *user, uint64_t n)
{
	uint64_t *v = reserve(ws, user, false);

	if (v && (*v -= n) == 0) {
		char k[2 * ID_CAP];
		size_t kl = (size_t)sprintf(k, "%s", ws) + 1;
		struct rec *r;

		kl += (size_t)sprintf(k + kl, "%s", user);
		r = smap_del(&reserved, k, kl);
		free(r);
	}
}

/* ---- answers to the connection's shard -------------------------------- */

struct answer {
	struct m_call c;
	rt_conn_id conn;
	bus_reply_token *tok; /* instead of conn: another host's offer */
	int status;
	char body[2048];
};

static void answer_run(struct shard_state *ss, struct m_call *c)
{
	struct answer *a = (struct answer *)c;
	rt_conn *conn = a->tok ? NULL : rt_conn_find(rt_self(), a->conn);
	rt_http_resp r = { .file_fd = -1 };

	(void)ss;
	if (a->tok) {
		cluster_file_answer(a->tok, a->status, a->body);
	} else if (conn) {
		r.status = a->status;
		r.content_type = "application/json";
		r.body = strdup(a->body);
		r.body_len = strlen(a->body);
		if (a->status == 401)
			rt_http_add_header(&r, "WWW-Authenticate", "Bearer");
		rt_http_reply(conn, &r);
	}
	free(a);
}

static struct answer *answer_new(rt_conn_id conn, int status, json_t *j)
{
	struct answer *a = msg_new(sizeof(*a), M_CALL);
	char *s = json_dumps(j, JSON_COMPACT);

	a->c.fn = answer_run;
	a->conn = conn;
	a->status = status;
	snprintf(a->body, sizeof(a->body), "%s", s ? s : "{}");
	free(s);
	json_decref(j);
	return a;
}

static void answer_err(rt_conn_id conn, int status, const char *code,
		       const char *msg)
{
	struct answer *a = answer_new(
		conn, status, json_pack("{s:s, s:s}", "code", code, "msg", msg));

	rt_post(rt_conn_shard(conn), &a->c.h);
}

/* An upload's answer: to its connection, or to the host that offered it
 * (posted to fin_shard(f)). */
static struct answer *fin_answer(const struct fin *f, int status, json_t *j)
{
	struct answer *a = answer_new(f->conn, status, j);

	a->tok = f->tok;
	return a;
}

static unsigned fin_shard(const struct fin *f)
{
	return f->tok ? FILES_SHARD : rt_conn_shard(f->conn);
}

/* ---- previews ---------------------------------------------------------- */

struct pv {
	char id[ID_LEN + 1];
	void *rec;  /* the 'F' record as written (its batch may not be */
	size_t len; /* durable yet when the preview answers) */
};

static void preview_done(void *arg, const struct preview_result *r)
{
	struct pv *p = arg;
	struct shard_state *ss = shard_state();
	void *v;
	size_t n;
	proto_doc d;
	proto_file f;
	proto_out o;

	free(smap_del(&pviews, p->id, ID_LEN));
	if (r->error || (!r->thumb && !r->w && !r->h && !r->snippet[0]))
		goto out;
	/* the janitor leaves a file alone while its preview runs */
	v = p->rec;
	n = p->len;
	p->rec = NULL;
	if (proto_dec_file_rec(&d, v, n, &f)) {
		free(v);
		goto out;
	}
	f.w = r->w;
	f.h = r->h;
	f.thumb = r->thumb;
	if (r->snippet[0])
		f.snippet = (proto_str){ r->snippet, (uint32_t)strlen(r->snippet) };
	proto_out_init(&o, 0, 512);
	proto_enc_file_rec(&o, &f);
	store_put_meta(ss->batch, 'F', p->id, ID_LEN, o.data, o.len);
	proto_out_free(&o);
	proto_doc_free(&d);
	free(v);
out:
	free(p->rec);
	free(p);
}

/* ---- an upload: the files shard --------------------------------------- */

static void fin_fail(struct fin *f, int status, const char *code,
		     const char *msg)
{
	struct answer *a = fin_answer(
		f, status, json_pack("{s:s, s:s}", "code", code, "msg", msg));

	rt_post(fin_shard(f), &a->c.h);
	free(f);
}

/* Storage and quota checked, the bytes durable: the records. */
static void fin_stored(struct shard_state *ss, struct m_call *c)
{
	struct fin *f = (struct fin *)c;
	char k[1 + 2 * ID_CAP + SHA_HEX], id[ID_LEN + 1], path[4200];
	uint8_t rnd[12];
	uint64_t h = 0, q = 0;
	size_t kl;
	proto_file pf;
	proto_out o;
	struct answer *a;
	struct pv *p;

	pin(f->sha, -1);
	unreserve(f->ws, f->user, f->size);
	if (f->status) {
		fin_fail(f, f->status == ENOSPC ? 507 : 503, "UNAVAILABLE",
			 f->status == ENOSPC ? "no space left for files"
					     : "cannot store the file");
		return;
	}
	if (__atomic_load_n(&srv.storage_failed, __ATOMIC_RELAXED)) {
		fin_fail(f, 503, "UNAVAILABLE", "storage unavailable");
		return;
	}
	kl = rec_key(k, 'H', f->sha, NULL);
	if (rec_get(k, kl, &h)) {
		fin_fail(f, 503, "UNAVAILABLE", "storage unavailable");
		return;
	}
	rec_put(ss, k, kl, h + 1);
	kl = rec_key(k, 'Q', f->ws, f->user);
	if (rec_get(k, kl, &q))
		q = 0; /* read just before, in fin_check */
	rec_put(ss, k, kl, q + f->size);
	RAND_bytes(rnd, sizeof(rnd));
	id[0] = 'F';
	hex(id + 1, rnd, sizeof(rnd));
	pf = (proto_file){
		.id = { id, ID_LEN },
		.ws = { f->ws, (uint32_t)strlen(f->ws) },
		.user = { f->user, (uint32_t)strlen(f->user) },
		.name = { f->name, (uint32_t)strlen(f->name) },
		.type = { f->type, (uint32_t)strlen(f->type) },
		.sha256 = { f->sha, SHA_HEX },
		.snippet = { "", 0 },
		.size = f->size,
		.ts = rt_now_ms(),
	};
	proto_out_init(&o, 0, 512);
	proto_enc_file_rec(&o, &pf);
	store_put_meta(ss->batch, 'F', id, ID_LEN, o.data, o.len);
	p = calloc(1, sizeof(*p));
	p->rec = malloc(o.len);
	memcpy(p->rec, o.data, o.len);
	p->len = o.len;
	proto_out_free(&o);
	a = fin_answer(f, 201,
		       json_pack("{s:s, s:s, s:I, s:s, s:s}", "id", id, "name",
				 f->name, "size", (json_int_t)f->size, "type",
				 f->type, "sha256", f->sha));
	/* answered either way: a failed commit (storage, or this host lost
	 * the partition meanwhile) must not leave the upload waiting */
	fx_post_or(ss, NULL, fin_shard(f), &a->c.h,
		   &fin_answer(f, 503, json_pack("{s:s, s:s}", "code",
						 "UNAVAILABLE", "msg",
						 "the file was not "
						 "stored"))->c.h);
	/* the preview, once the answer is on its way (previews read the
	 * bytes, which are durable) */
	memcpy(p->id, id, ID_LEN + 1);
	smap_put(&pviews, p->id, ID_LEN, strdup(""));
	bytes_path(path, sizeof(path), f->sha);
	preview_submit(f->sha, path, f->type, preview_done, p, FILES_SHARD);
	free(f);
}

static void quota_msg(char *m, size_t cap, uint64_t used)
{
	snprintf(m, cap,
		 "upload quota exceeded: %llu of %llu MiB used (--file-quota-mb)",
		 (unsigned long long)(used >> 20),
		 (unsigned long long)(F.quota >> 20));
}

static void fin_check(struct shard_state *ss, struct m_call *c)
{
	struct fin *f = (struct fin *)c;
	char k[1 + 2 * ID_CAP], m[160];
	uint64_t q = 0, *res;
	size_t kl = rec_key(k, 'Q', f->ws, f->user);

	(void)ss;
	if (!here() || rec_get(k, kl, &q)) {
		if (f->fd >= 0) {
			close(f->fd);
			unlink_later(f->tmp);
		}
		fin_fail(f, 503, "UNAVAILABLE", here() ? "storage unavailable"
			 : "this host does not keep the files now; try again");
		return;
	}
	res = reserve(f->ws, f->user, true);
	if (q + *res + f->size > F.quota) {
		quota_msg(m, sizeof(m), q + *res);
		unreserve(f->ws, f->user, 0);
		if (f->fd >= 0) {
			close(f->fd);
			unlink_later(f->tmp);
		}
		fin_fail(f, 413, "TOO_LARGE", m);
		return;
	}
	*res += f->size;
	pin(f->sha, 1);
	/* another host's upload: its bytes come from there first */
	if (f->fd < 0)
		job_post_to(Q_PULLER, job_new(JOB_PULL, f));
	else
		job_post(job_new(JOB_FIN, f));
}

/* ---- a cluster: uploads and bytes between hosts ------------------------ */

/* The puller, for the owner: another host's upload, pulled from it into a
 * .part, then stored as ours. */
static void worker_pull(struct fin *f)
{
	char dst[4200];
	struct stat st;
	int rc;

	bytes_path(dst, sizeof(dst), f->sha);
	if (stat(dst, &st) == 0) { /* stored once: we have these bytes */
		f->status = 0;
		f->c.fn = fin_stored;
		rt_post(FILES_SHARD, &f->c.h);
		return;
	}
	tmp_path(f->tmp, sizeof(f->tmp));
	f->fd = open(f->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	rc = f->fd < 0 ? -errno
		       : cluster_file_pull(f->holder, FILES_SHARD, f->sha,
					   false, f->fd, &F.halt);
	if (!rc && (fstat(f->fd, &st) || (uint64_t)st.st_size != f->size))
		rc = -EIO;
	if (rc) {
		plog(PL_WARN, "files", "%s's upload %s (%s): not pulled: %s",
		     f->holder, f->sha, f->name, strerror(-rc));
		if (f->fd >= 0) {
			close(f->fd);
			unlink(f->tmp);
		}
		f->fd = -1;
		f->status = -rc;
		f->c.fn = fin_stored;
		rt_post(FILES_SHARD, &f->c.h);
		return;
	}
	worker_fin(f);
}

static void forward_done(void *arg, int status, const char *body)
{
	struct fin *f = arg;
	json_t *j = json_loads(body, 0, NULL);
	struct answer *a;

	if (!j)
		j = json_pack("{s:s, s:s}", "code", "UNAVAILABLE", "msg",
			      "a bad answer from the host that keeps the files");
	a = answer_new(f->conn, status, j);
	rt_post(rt_conn_shard(f->conn), &a->c.h);
	if (status != 201) /* refused: our copy goes, unless another has it */
		files_gone(f->sha);
	free(f);
}

/* The worker, on a host that does not keep the files: the upload's bytes
 * stored here, then offered to the owner, whose answer is the upload's. */
static void worker_forward(struct fin *f)
{
	int rc = put_bytes(f);

	if (rc) {
		answer_err(f->conn, rc == ENOSPC ? 507 : 503, "UNAVAILABLE",
			   rc == ENOSPC ? "no space left for files"
					: "cannot store the file");
		free(f);
		return;
	}
	cluster_file_offer(FILES_SHARD, &(struct cluster_file){
		.ws = f->ws, .user = f->user, .name = f->name,
		.type = f->type, .sha = f->sha, .size = f->size },
		forward_done, f);
}

/* Bytes (or previews) this host has the record of and not the bytes:
 * being pulled, or failed lately (tried again FETCH_RETRY_MS later). The
 * files shard's thread. */
#define FETCH_MAX 16          /* pulls queued at once */
#define FETCH_RETRY_MS 30000

struct fetch {
	char key[SHA_HEX + 1]; /* sha, then 'b' or 't' */
	bool busy;
	uint64_t retry_ms;
};
static smap fetches;
static unsigned fetching;

/* An M_CALL about some bytes, to the files shard: a pull done (fetched),
 * wanted (want_on_shard), or gone on the owner (gone_on_shard). */
struct sha_msg {
	struct m_call c; /* first: the mailbox sees an M_CALL */
	char sha[SHA_HEX + 1]; /* fetched: the sha, then 'b' or 't' */
	bool thumb, ok;
};

static void sha_post(void (*fn)(struct shard_state *, struct m_call *),
		     const char *sha, bool thumb, bool ok)
{
	struct sha_msg *m = msg_new(sizeof(*m), M_CALL);

	m->c.fn = fn;
	memcpy(m->sha, sha, SHA_HEX);
	m->sha[SHA_HEX] = '\0';
	m->thumb = thumb;
	m->ok = ok;
	rt_post(FILES_SHARD, &m->c.h);
}

static void fetched(struct shard_state *ss, struct m_call *c)
{
	struct sha_msg *d = (struct sha_msg *)c;
	struct fetch *x;

	d->sha[SHA_HEX] = d->thumb ? 't' : 'b';
	x = smap_get(&fetches, d->sha, SHA_HEX + 1);

	(void)ss;
	if (x) {
		fetching--;
		x->busy = false;
		x->retry_ms = rt_now_ms() + FETCH_RETRY_MS;
		if (d->ok) {
			smap_del(&fetches, x->key, SHA_HEX + 1);
			free(x);
		}
	}
	free(d);
}

/* The puller: sha's bytes or preview from the cluster into place. */
static void worker_fetch(const char *sha, bool thumb)
{
	char dst[4200], sub[4200], tmp[4200];
	struct stat st;
	int fd, rc;

	if (thumb) {
		thumb_path(dst, sizeof(dst), sha);
		snprintf(sub, sizeof(sub), "%s/thumbs", F.dir);
	} else {
		bytes_path(dst, sizeof(dst), sha);
		snprintf(sub, sizeof(sub), "%s/%.2s", F.dir, sha);
	}
	rc = 0;
	if (stat(dst, &st)) {
		tmp_path(tmp, sizeof(tmp));
		fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		rc = fd < 0 ? -errno
			    : cluster_file_pull(NULL, FILES_SHARD, sha, thumb,
						fd, &F.halt);
		if (rc && fd >= 0) {
			close(fd);
			unlink(tmp);
		} else if (!rc) {
			rc = -put_in_place(fd, tmp, dst, sub);
		}
		if (rc)
			plog(PL_WARN, "files", "%s%s: not pulled from the "
			     "cluster: %s", sha, thumb ? " (preview)" : "",
			     strerror(-rc));
	}
	sha_post(fetched, sha, thumb, !rc);
}

/* Pull sha's bytes (thumb: preview) unless they are on their way or
 * failed lately. The files shard's thread. */
static void want(const char *sha, bool thumb)
{
	char key[SHA_HEX + 1];
	struct fetch *x;
	struct job *j;

	memcpy(key, sha, SHA_HEX);
	key[SHA_HEX] = thumb ? 't' : 'b';
	x = smap_get(&fetches, key, SHA_HEX + 1);
	if ((x && (x->busy || rt_now_ms() < x->retry_ms)) ||
	    fetching >= FETCH_MAX)
		return;
	if (!x) {
		x = calloc(1, sizeof(*x));
		if (!x)
			return;
		memcpy(x->key, key, SHA_HEX + 1);
		smap_put(&fetches, x->key, SHA_HEX + 1, x);
	}
	x->busy = true;
	fetching++;
	j = job_new(JOB_FETCH, NULL);
	memcpy(j->sha, sha, SHA_HEX);
	j->sha[SHA_HEX] = '\0';
	j->thumb = thumb;
	job_post_to(Q_PULLER, j);
}

static void want_on_shard(struct shard_state *ss, struct m_call *c)
{
	struct sha_msg *w = (struct sha_msg *)c;

	(void)ss;
	want(w->sha, w->thumb);
	free(w);
}

/* From any shard: a download found the bytes missing here. */
static void want_soon(const char *sha, bool thumb)
{
	sha_post(want_on_shard, sha, thumb, false);
}

static bool sha_ok(const char *sha)
{
	return strlen(sha) == SHA_HEX &&
	       strspn(sha, "0123456789abcdef") == SHA_HEX;
}

void files_remote_store(const struct cluster_file *cf, const char *holder,
			bus_reply_token *tok)
{
	struct fin *f;

	if (!F.running || !sha_ok(cf->sha) || cf->size > F.max_file ||
	    strlen(cf->ws) >= ID_CAP || strlen(cf->user) >= ID_CAP ||
	    !cf->ws[0] || !cf->user[0] || !cf->name[0] ||
	    strlen(cf->name) > NAME_MAX_B || strlen(cf->type) >= TYPE_CAP ||
	    !holder[0] || strlen(holder) > BUS_HOST_MAX) {
		cluster_file_answer(tok, 400, "{\"code\":\"BAD_REQUEST\","
				    "\"msg\":\"a bad offer of a file\"}");
		return;
	}
	f = msg_new(sizeof(*f), M_CALL);
	f->c.fn = fin_check;
	f->conn = 0;
	f->fd = -1;
	f->tok = tok;
	f->size = cf->size;
	snprintf(f->ws, sizeof(f->ws), "%s", cf->ws);
	snprintf(f->user, sizeof(f->user), "%s", cf->user);
	snprintf(f->name, sizeof(f->name), "%s", cf->name);
	snprintf(f->type, sizeof(f->type), "%s", cf->type);
	snprintf(f->sha, sizeof(f->sha), "%s", cf->sha);
	snprintf(f->holder, sizeof(f->holder), "%s", holder);
	rt_post(FILES_SHARD, &f->c.h);
}

long files_read_part(const char *sha, bool thumb, uint64_t off, void *buf,
		     size_t cap)
{
	char p[4200];
	ssize_t n;
	int fd;

	if (!F.running || !sha_ok(sha))
		return -ENOENT;
	if (thumb)
		thumb_path(p, sizeof(p), sha);
	else
		bytes_path(p, sizeof(p), sha);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT : -EIO;
	n = pread(fd, buf, cap, (off_t)off);
	close(fd);
	return n < 0 ? -EIO : (long)n;
}

static void gone_on_shard(struct shard_state *ss, struct m_call *c)
{
	struct sha_msg *g = (struct sha_msg *)c;
	char k[1 + SHA_HEX + 1];
	uint64_t h = 1;
	size_t kl = rec_key(k, 'H', g->sha, NULL);

	(void)ss;
	/* the owner unlinks its own (rec_released); here, once the 'H'
	 * record has come through the log as 0 */
	if (!here() && rec_get(k, kl, &h) == 0 && !h &&
	    !smap_get(&pins, g->sha, SHA_HEX)) {
		struct job *j = job_new(JOB_UNLINK_SHA, NULL);

		memcpy(j->sha, g->sha, SHA_HEX + 1);
		job_post(j);
	}
	free(g);
}

void files_gone(const char *sha)
{
	if (F.running && sha_ok(sha))
		sha_post(gone_on_shard, sha, false, false);
}

/* ---- an upload: the connection's shard -------------------------------- */

struct upload {
	int fd;
	EVP_MD_CTX *md;
	uint64_t size;
	size_t headn;
	char ws[ID_CAP], user[ID_CAP], name[NAME_MAX_B + 1];
	char tmp[4096];
	uint8_t head[HEAD_KEEP];
};

static void upload_free(struct upload *u, bool drop)
{
	if (u->fd >= 0) {
		close(u->fd);
		if (drop)
			unlink_later(u->tmp);
	}
	EVP_MD_CTX_free(u->md);
	free(u);
}

/* name=NAME, the query's only parameter. lws has percent-decoded the
 * query already (and refuses %00 itself), so everything after "name=" is
 * the name, '&' and '=' included: 1-255 bytes of UTF-8, no NUL, no '/'.
 * NULL, or why not. */
static const char *query_name(const char *q, char *out)
{
	size_t n;

	if (strncmp(q, "name=", 5))
		return *q ? "the only parameter is name" : "name=NAME is required";
	q += 5;
	n = strlen(q);
	if (!n)
		return "name must not be empty";
	if (n > NAME_MAX_B)
		return "name longer than 255 bytes";
	if (strchr(q, '/'))
		return "name must not contain '/'";
	if (!proto_utf8_valid(q, n))
		return "name must be UTF-8";
	memcpy(out, q, n + 1);
	return NULL;
}

void files_begin(rt_shard *s, const rt_http_req *req, rt_http_resp *resp)
{
	struct auth_claims cl;
	struct upload *u;
	char k[1 + 2 * ID_CAP], m[200], name[NAME_MAX_B + 1];
	const char *why;
	uint64_t q = 0;
	uint8_t rnd[16];
	char rh[33];

	(void)s;
	if (strcmp(req->path, FILES_PREFIX)) {
		err(resp, 404, "NOT_FOUND", "no such resource");
		return;
	}
	if (strcmp(req->method, "POST")) {
		err(resp, 405, "BAD_REQUEST", "only POST");
		rt_http_add_header(resp, "Allow", "POST");
		return;
	}
	if (!bearer(req, resp, &cl))
		return;
	if ((why = query_name(req->query, name))) {
		err(resp, 400, "BAD_REQUEST", why);
		return;
	}
	if (req->content_length > F.max_file) {
		snprintf(m, sizeof(m), "file larger than %llu MiB (--max-file-mb)",
			 (unsigned long long)(F.max_file >> 20));
		err(resp, 413, "TOO_LARGE", m);
		return;
	}
	/* what storage says (uploads in flight are counted at the end) */
	if (rec_get2(k, rec_key(k, 'Q', cl.ws, cl.sub), &q, true) == 0 &&
	    q + req->content_length > F.quota) {
		quota_msg(m, sizeof(m), q);
		err(resp, 413, "TOO_LARGE", m);
		return;
	}
	u = calloc(1, sizeof(*u));
	u->md = EVP_MD_CTX_new();
	EVP_DigestInit_ex(u->md, EVP_sha256(), NULL);
	RAND_bytes(rnd, sizeof(rnd));
	hex(rh, rnd, sizeof(rnd));
	snprintf(u->tmp, sizeof(u->tmp), "%s/tmp/%s.part", F.dir, rh);
	u->fd = open(u->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (u->fd < 0) {
		upload_free(u, false);
		err(resp, 503, "UNAVAILABLE", "cannot store the file");
		return;
	}
	memcpy(u->ws, cl.ws, sizeof(u->ws));
	memcpy(u->user, cl.sub, sizeof(u->user));
	memcpy(u->name, name, sizeof(u->name));
	rt_conn_set_user(req->conn, u);
}

void files_data(rt_shard *s, rt_conn *c, const uint8_t *data, size_t len,
		rt_http_resp *resp)
{
	struct upload *u = rt_conn_user(c);
	size_t off = 0;

	(void)s;
	EVP_DigestUpdate(u->md, data, len);
	if (u->headn < HEAD_KEEP) {
		size_t n = HEAD_KEEP - u->headn < len ? HEAD_KEEP - u->headn : len;

		memcpy(u->head + u->headn, data, n);
		u->headn += n;
	}
	while (off < len) {
		ssize_t w = write(u->fd, data + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			bool full = errno == ENOSPC;

			upload_free(u, true);
			rt_conn_set_user(c, NULL);
			err(resp, full ? 507 : 503, "UNAVAILABLE",
			    full ? "no space left for files"
				 : "cannot store the file");
			return;
		}
		off += (size_t)w;
	}
	u->size += len;
}

void files_end(rt_shard *s, rt_conn *c, rt_http_resp *resp)
{
	struct upload *u = rt_conn_user(c);
	struct fin *f;
	uint8_t md[32];
	unsigned mdn = 0;

	(void)s;
	(void)resp;
	rt_conn_set_user(c, NULL);
	f = msg_new(sizeof(*f), M_CALL);
	f->c.fn = fin_check;
	f->conn = rt_conn_get_id(c);
	f->fd = u->fd;
	u->fd = -1;
	f->size = u->size;
	memcpy(f->ws, u->ws, sizeof(f->ws));
	memcpy(f->user, u->user, sizeof(f->user));
	memcpy(f->name, u->name, sizeof(f->name));
	memcpy(f->tmp, u->tmp, sizeof(f->tmp));
	EVP_DigestFinal_ex(u->md, md, &mdn);
	hex(f->sha, md, 32);
	if (preview_sniff(u->head, u->headn, f->type, sizeof(f->type)) ||
	    !f->type[0])
		snprintf(f->type, sizeof(f->type), "application/octet-stream");
	upload_free(u, false);
	if (here())
		rt_post(FILES_SHARD, &f->c.h);
	else /* a cluster: the owner of the files stores it */
		job_post(job_new(JOB_FORWARD, f));
}

void files_abort(rt_shard *s, rt_conn *c)
{
	struct upload *u = rt_conn_user(c);

	(void)s;
	rt_conn_set_user(c, NULL);
	if (u)
		upload_free(u, true);
}

/* ---- downloads --------------------------------------------------------- */

struct can_read {
	const char *ws, *user;
	bool ok, failed;
};

static int can_read_ch(void *arg, const char *rest, size_t rlen,
		       const void *v, size_t vlen)
{
	struct can_read *a = arg;
	char ch[ID_CAP];
	store_channel rec;
	store_member mem;
	int rc;

	(void)v, (void)vlen;
	rlen = strnlen(rest, rlen); /* rest: ch \0 seq8 */
	if (rlen >= sizeof(ch))
		return 0;
	memcpy(ch, rest, rlen);
	ch[rlen] = '\0';
	rc = store_get_channel(srv.st, ch, &rec);
	if (rc == -ENOENT)
		return 0;
	if (rc) {
		a->failed = true;
		return 1;
	}
	if (strcmp(rec.ws, a->ws))
		return 0;
	/* members of the channel, as the contract says: in a public channel
	 * too (its history is readable by the whole workspace, but the
	 * bytes are the members'; joining is one click) */
	rc = store_get_member(srv.st, ch, a->user, &mem);
	if (rc == 0) {
		a->ok = true;
		return 1;
	}
	if (rc != -ENOENT) {
		a->failed = true;
		return 1;
	}
	return 0;
}

/* Range: bytes=a-b | a- | -n against size: 0 whole (absent, several,
 * or not bytes: answered 200), 1 a range in *off and *len, -1 unsatisfiable. */
static int range_of(const char *h, uint64_t size, uint64_t *off,
		    uint64_t *len)
{
	const char *p;
	char *e;
	uint64_t a, b;

	if (!*h || strncasecmp(h, "bytes=", 6))
		return 0;
	p = h + 6;
	while (*p == ' ')
		p++;
	if (strchr(p, ','))
		return 0; /* several ranges: the whole file */
	if (*p == '-') {
		if (p[1] < '0' || p[1] > '9')
			return 0;
		b = strtoull(p + 1, &e, 10);
		if (*e && *e != ' ')
			return 0;
		if (!b || !size)
			return -1;
		if (b > size)
			b = size;
		*off = size - b;
		*len = b;
		return 1;
	}
	if (*p < '0' || *p > '9')
		return 0;
	a = strtoull(p, &e, 10);
	if (*e != '-')
		return 0;
	p = e + 1;
	if (*p >= '0' && *p <= '9') {
		b = strtoull(p, &e, 10);
		if (*e && *e != ' ')
			return 0;
		if (b < a)
			return 0; /* invalid: ignored (RFC 9110 14.2) */
	} else if (!*p || *p == ' ') {
		b = UINT64_MAX;
	} else {
		return 0;
	}
	if (a >= size)
		return -1;
	if (b >= size)
		b = size - 1;
	*off = a;
	*len = b - a + 1;
	return 1;
}

static bool inline_type(const char *t)
{
	return !strcmp(t, "image/png") || !strcmp(t, "image/jpeg") ||
	       !strcmp(t, "image/gif") || !strcmp(t, "image/webp");
}

/* RFC 8187 value chars: the rest percent-encoded. */
static void pct_encode(char *out, size_t cap, const char *s, size_t n)
{
	static const char d[] = "0123456789ABCDEF";
	size_t o = 0;

	for (size_t i = 0; i < n && o + 4 < cap; i++) {
		unsigned char c = (unsigned char)s[i];

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || strchr("!#$&+-.^_`|~", c)) {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = d[c >> 4];
			out[o++] = d[c & 15];
		}
	}
	out[o] = '\0';
}

/* If-None-Match holds etag (or *). */
static bool etag_match(const char *inm, const char *etag)
{
	size_t n = strlen(etag);

	for (const char *p = inm; *p;) {
		while (*p == ' ' || *p == ',')
			p++;
		if (*p == '*')
			return true;
		if (!strncmp(p, "W/", 2))
			p += 2;
		if (!strncmp(p, etag, n))
			return true;
		p = strchr(p, ',');
		if (!p)
			break;
	}
	return false;
}

void files_handle(rt_shard *s, const rt_http_req *req, rt_http_resp *resp)
{
	struct auth_claims cl;
	const char *p = req->path + strlen(FILES_PREFIX);
	char id[ID_LEN + 1], path[4200], etag[SHA_HEX + 8], v[1024], sha[SHA_HEX + 1];
	bool thumb = false;
	char type[TYPE_CAP] = "";
	void *val = NULL;
	size_t n;
	proto_doc d;
	proto_file f;
	struct stat st;
	uint64_t off = 0, len;
	int fd, rg;
	bool head = !strcmp(req->method, "HEAD");

	(void)s;
	if (*p != '/' || strlen(p + 1) < ID_LEN ||
	    (p[1 + ID_LEN] && strcmp(p + 1 + ID_LEN, "/thumb"))) {
		if (!strcmp(req->path, FILES_PREFIX) && strcmp(req->method, "POST")) {
			err(resp, 405, "BAD_REQUEST", "only POST");
			rt_http_add_header(resp, "Allow", "POST");
			return;
		}
		err(resp, 404, "NOT_FOUND", "no such file");
		return;
	}
	memcpy(id, p + 1, ID_LEN);
	id[ID_LEN] = '\0';
	thumb = p[1 + ID_LEN] != '\0';
	if (strcmp(req->method, "GET") && !head) {
		err(resp, 405, "BAD_REQUEST", "only GET and HEAD");
		rt_http_add_header(resp, "Allow", "GET, HEAD");
		return;
	}
	if (!bearer(req, resp, &cl))
		return;
	if (id[0] != 'F' || strspn(id + 1, "0123456789abcdef") != ID_LEN - 1) {
		err(resp, 404, "NOT_FOUND", "no such file");
		return;
	}
	rg = store_get_meta(srv.st, 'F', id, ID_LEN, &val, &n);
	if (rg == -ENOENT) {
		err(resp, 404, "NOT_FOUND", "no such file");
		return;
	}
	if (rg || proto_dec_file_rec(&d, val, n, &f)) {
		free(val);
		err(resp, 503, "UNAVAILABLE", "storage unavailable");
		return;
	}
	if (f.ws.n != strlen(cl.ws) || memcmp(f.ws.s, cl.ws, f.ws.n))
		goto not_found;
	if (f.user.n != strlen(cl.sub) || memcmp(f.user.s, cl.sub, f.user.n)) {
		char pre[ID_LEN + 1];
		struct can_read a = { .ws = cl.ws, .user = cl.sub };

		memcpy(pre, id, ID_LEN);
		pre[ID_LEN] = '\0';
		if (store_scan_meta(srv.st, 'A', pre, ID_LEN + 1, can_read_ch,
				    &a) < 0 ||
		    a.failed) {
			proto_doc_free(&d);
			free(val);
			err(resp, 503, "UNAVAILABLE", "storage unavailable");
			return;
		}
		if (!a.ok)
			goto not_found;
	}
	if (thumb && !f.thumb)
		goto not_found;
	if (f.sha256.n != SHA_HEX)
		goto not_found;
	memcpy(sha, f.sha256.s, SHA_HEX);
	sha[SHA_HEX] = '\0';
	if (thumb)
		thumb_path(path, sizeof(path), sha);
	else
		bytes_path(path, sizeof(path), sha);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st)) {
		if (fd >= 0)
			close(fd);
		if (cluster_on) {
			/* the record came through the log, the bytes follow
			 * (the pass below); at once for this one. (The owner
			 * too: it may have taken the files over from a host
			 * that died before this one had pulled them all.) */
			want_soon(sha, thumb);
			proto_doc_free(&d);
			free(val);
			err(resp, 503, "UNAVAILABLE", "the file is on its way "
			    "to this host; try again in a moment");
			rt_http_add_header(resp, "Retry-After", "1");
			return;
		}
		goto not_found;
	}
	/* the thumbnail's tag differs from the bytes' */
	snprintf(etag, sizeof(etag), "\"%s%s\"", sha, thumb ? "-t" : "");
	rt_http_add_header(resp, "ETag", etag);
	rt_http_add_header(resp, "X-Content-Type-Options", "nosniff");
	rt_http_add_header(resp, "Content-Security-Policy",
			   "sandbox; default-src 'none'");
	/* private: only the token's bearer may see it (no shared cache);
	 * revalidated with If-None-Match every time, since access can end
	 * (a message deleted, a member leaving) while the bytes do not
	 * change */
	rt_http_add_header(resp, "Cache-Control", "private, no-cache");
	rt_http_add_header(resp, "Accept-Ranges", "bytes");
	if (thumb) {
		resp->content_type = "image/jpeg";
	} else {
		snprintf(type, sizeof(type), "%.*s", (int)f.type.n, f.type.s);
		if (!inline_type(type)) {
			char enc[NAME_MAX_B * 3 + 1];

			pct_encode(enc, sizeof(enc), f.name.s, f.name.n);
			snprintf(v, sizeof(v), "attachment; filename*=UTF-8''%s",
				 enc);
			rt_http_add_header(resp, "Content-Disposition", v);
		}
	}
	proto_doc_free(&d);
	free(val);
	len = (uint64_t)st.st_size;
	if (req->if_none_match[0] && etag_match(req->if_none_match, etag)) {
		close(fd);
		resp->status = 304;
		return;
	}
	rg = range_of(req->range, (uint64_t)st.st_size, &off, &len);
	if (rg < 0) {
		close(fd);
		snprintf(v, sizeof(v), "bytes */%llu",
			 (unsigned long long)st.st_size);
		rt_http_add_header(resp, "Content-Range", v);
		err(resp, 416, "BAD_REQUEST", "range not satisfiable");
		return;
	}
	if (rg > 0) {
		snprintf(v, sizeof(v), "bytes %llu-%llu/%llu",
			 (unsigned long long)off,
			 (unsigned long long)(off + len - 1),
			 (unsigned long long)st.st_size);
		rt_http_add_header(resp, "Content-Range", v);
	}
	if (type[0]) {
		/* the record's type, as an extra header: content_type must
		 * be a static string */
		resp->content_type = NULL;
		rt_http_add_header(resp, "Content-Type", type);
	}
	resp->status = rg > 0 ? 206 : 200;
	resp->file = true;
	resp->file_fd = fd;
	resp->file_off = off;
	resp->file_len = len;
	resp->head = head;
	return;
not_found:
	proto_doc_free(&d);
	free(val);
	err(resp, 404, "NOT_FOUND", "no such file");
}

/* ---- the janitor ----------------------------------------------------------
 * On the files shard, one of 256 slices of the 'F' records ("F" + the id's
 * first two hex digits) per tick: a file with no 'A' record (never
 * shared, or every message that shared it deleted) older than the TTL
 * (24 h; PARLEY_FILE_TTL_MS for tests) loses its 'F', and its bytes one
 * count in 'H'; the bytes and thumbnail go when that reaches 0. */

struct jan {
	struct shard_state *ss;
	uint64_t now;
	unsigned done;
	char slice[3];
};

static int any_share(void *arg, const char *rest, size_t rlen, const void *v,
		     size_t vlen)
{
	(void)rest, (void)rlen, (void)v, (void)vlen;
	*(bool *)arg = true;
	return 1;
}

static int jan_one(void *arg, const char *rest, size_t rlen, const void *v,
		   size_t vlen)
{
	struct jan *j = arg;
	char id[ID_LEN + 1], pre[ID_LEN + 1], k[1 + SHA_HEX + 1], sha[SHA_HEX + 1];
	bool shared = false;
	proto_doc d;
	proto_file f;
	uint64_t h = 0;
	size_t kl;

	if (rlen + 3 != ID_LEN)
		return 0;
	id[0] = 'F';
	memcpy(id + 1, j->slice, 2);
	memcpy(id + 3, rest, rlen);
	id[ID_LEN] = '\0';
	if (smap_get(&pviews, id, ID_LEN))
		return 0;
	if (proto_dec_file_rec(&d, v, vlen, &f))
		return 0;
	if (f.ts + F.ttl_ms > j->now || f.sha256.n != SHA_HEX) {
		proto_doc_free(&d);
		return 0;
	}
	memcpy(sha, f.sha256.s, SHA_HEX);
	sha[SHA_HEX] = '\0';
	proto_doc_free(&d);
	memcpy(pre, id, ID_LEN + 1);
	if (store_scan_meta(srv.st, 'A', pre, ID_LEN + 1, any_share, &shared) <
		    0 ||
	    shared)
		return 0;
	kl = rec_key(k, 'H', sha, NULL);
	if (rec_get(k, kl, &h))
		return 1;
	store_del_meta(j->ss->batch, 'F', id, ID_LEN);
	rec_put(j->ss, k, kl, h ? h - 1 : 0);
	return ++j->done >= JANITOR_MAX;
}

/* A cluster's hosts, the same pass: a record whose bytes (or preview) are
 * not here yet has them pulled. */
static int fetch_one(void *arg, const char *rest, size_t rlen, const void *v,
		     size_t vlen)
{
	char p[4200], sha[SHA_HEX + 1];
	struct stat st;
	proto_doc d;
	proto_file f;

	(void)arg, (void)rest, (void)rlen;
	if (proto_dec_file_rec(&d, v, vlen, &f))
		return 0;
	if (f.sha256.n == SHA_HEX) {
		memcpy(sha, f.sha256.s, SHA_HEX);
		sha[SHA_HEX] = '\0';
		bytes_path(p, sizeof(p), sha);
		if (stat(p, &st))
			want(sha, false);
		thumb_path(p, sizeof(p), sha);
		if (f.thumb && stat(p, &st))
			want(sha, true);
	}
	proto_doc_free(&d);
	return fetching >= FETCH_MAX;
}

void files_tick(struct shard_state *ss, uint64_t now_ms)
{
	struct jan j = { .ss = ss, .now = now_ms };
	char pre[4];

	if (ss->id != FILES_SHARD || !F.running || now_ms < jan_next_ms)
		return;
	if (__atomic_load_n(&srv.storage_failed, __ATOMIC_RELAXED))
		return;
	jan_next_ms = now_ms + 50;
	snprintf(j.slice, sizeof(j.slice), "%02x", jan_bucket);
	jan_bucket = (jan_bucket + 1) & 255;
	pre[0] = 'F';
	memcpy(pre + 1, j.slice, 2);
	/* the janitor writes: only where the commit will take it (the
	 * shard's view of ownership, a moment behind here() at a takeover) */
	if (here() && (!cluster_on || clog_owned(ss)))
		store_scan_meta(srv.st, 'F', pre, 3, jan_one, &j);
	/* every host of a cluster, the owner too (it may have taken the
	 * files over before it had pulled them all) */
	if (cluster_on)
		store_scan_meta(srv.st, 'F', pre, 3, fetch_one, &j);
}
