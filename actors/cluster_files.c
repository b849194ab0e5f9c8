/*
 * cluster_files: uploaded files between hosts (cluster_core.h, "Files";
 * docs/cluster.md). Only bytes travel here; every record of a file is
 * written by the host that owns the files shard's partition, through the
 * log, like any other write.
 *
 *   an upload on a host that does not own them: its bytes are stored
 *   there, then OFFERed to the owner (a request), which pulls them with
 *   GETs, stores them and its records, and answers with the upload's
 *   HTTP status and JSON body;
 *   every other host pulls the bytes (and the preview) of every file it
 *   has the record of and not the bytes (files.c's pass, and a download
 *   that finds them missing), from the owner first, then from any host.
 *
 * Messages (requests, after their first byte CLUSTER_MSG_*):
 *   FOFFER  str holder, str ws, str user, str name, str type, str sha256,
 *           u64 size; answered u16 HTTP status, str JSON body
 *   FGET    str sha256, u8 thumb, u64 offset; answered u8 0 and bytes
 *           (at most FILE_CHUNK; fewer: the end), or u8 1: not here
 *   FGONE   str sha256 (one-way, to every host): its last record went
 *
 * Everything here blocks (cluster_file_pull) or calls back on a library
 * thread: files.c calls it from its worker threads, never from a shard.
 */
#define _GNU_SOURCE
#include "actors/cluster_core.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "actors/cluster_wire.h"

#define GET_WAIT_MS 10000     /* one chunk from a host */
#define OFFER_WAIT_MS 300000  /* the owner pulls up to --max-file-mb */

/* ---- one request, waited for ----------------------------------------------- */

/* Shared by the waiter and the callback, freed by the last of them: a
 * bus closed meanwhile never calls back, so the waiter gives up on its
 * own clock. */
struct sync_req {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned refs;
	bool done;
	bus_status st;
	uint8_t *data;
	size_t len;
};

static void sync_unref(struct sync_req *s) /* with s->mu held */
{
	bool last = !--s->refs;

	pthread_mutex_unlock(&s->mu);
	if (last) {
		free(s->data);
		pthread_mutex_destroy(&s->mu);
		pthread_cond_destroy(&s->cv);
		free(s);
	}
}

static void sync_answered(void *arg, bus_status st, const void *data,
			  size_t len)
{
	struct sync_req *s = arg;
	uint8_t *copy = NULL;

	if (st == BUS_OK && len && (copy = malloc(len)))
		memcpy(copy, data, len);
	pthread_mutex_lock(&s->mu);
	s->st = st == BUS_OK && len && !copy ? BUS_ERROR : st;
	s->data = copy;
	s->len = copy ? len : 0;
	s->done = true;
	pthread_cond_signal(&s->cv);
	sync_unref(s);
}

/* BLOCKING, ms and a little more at most. The answer of host to w
 * (malloc'd into *out, *n), or not BUS_OK. */
static bus_status ask(const char *host, const struct wbuf *w, int ms,
		      uint8_t **out, size_t *n)
{
	struct sync_req *s = calloc(1, sizeof(*s));
	struct timespec until;
	bus_status st;

	*out = NULL;
	*n = 0;
	if (!s)
		return BUS_ERROR;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	s->refs = 2;
	if (bus_request(core_bus(), host, w->p, w->n, ms, sync_answered, s) !=
	    BUS_OK) {
		pthread_mutex_lock(&s->mu);
		s->refs--; /* no callback will come */
		sync_unref(s);
		return BUS_ERROR;
	}
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000 + 2;
	pthread_mutex_lock(&s->mu);
	while (!s->done &&
	       pthread_cond_timedwait(&s->cv, &s->mu, &until) != ETIMEDOUT)
		;
	st = s->done ? s->st : BUS_TIMEOUT;
	if (s->done) {
		*out = s->data;
		*n = s->len;
		s->data = NULL;
	}
	sync_unref(s);
	return st;
}

/* ---- pulling bytes ---------------------------------------------------------- */

/* The whole of sha's bytes (or preview) from host into fd, from its start.
 * 0, -ENOENT (host has not got them), -EIO (host unreachable, a bad
 * answer, a write that failed; or, for the bytes, a SHA-256 that differs:
 * a corrupt copy is never kept). */
static int pull_from(const char *host, const char *sha, bool thumb, int fd,
		     const _Atomic bool *cancel)
{
	EVP_MD_CTX *md = thumb ? NULL : EVP_MD_CTX_new();
	uint64_t off = 0;
	int rc = -EIO;

	if (!thumb && (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)))
		goto out;
	if (ftruncate(fd, 0) || lseek(fd, 0, SEEK_SET))
		goto out;
	for (;;) {
		struct wbuf w = { 0 };
		uint8_t *ans;

		if (cancel && atomic_load(cancel))
			goto out;
		size_t n, dn;
		struct rbuf r;
		const void *d;
		bus_status st;

		w_u8(&w, CLUSTER_MSG_FGET);
		w_str(&w, sha);
		w_u8(&w, thumb);
		w_u64(&w, off);
		st = ask(host, &w, GET_WAIT_MS, &ans, &n);
		free(w.p);
		if (st != BUS_OK)
			goto out;
		r = (struct rbuf){ ans, ans + n, false };
		if (r_u8(&r)) {
			free(ans);
			rc = r.bad ? -EIO : -ENOENT;
			goto out;
		}
		d = r_bytes(&r, &dn);
		if (r.bad || dn > FILE_CHUNK ||
		    (dn && write(fd, d, dn) != (ssize_t)dn) ||
		    (md && !EVP_DigestUpdate(md, d, dn))) {
			free(ans);
			goto out;
		}
		free(ans);
		off += dn;
		if (dn < FILE_CHUNK)
			break;
	}
	rc = 0;
	if (md) {
		unsigned char h[32];
		char hex[65];
		unsigned hn = 0;

		EVP_DigestFinal_ex(md, h, &hn);
		for (unsigned i = 0; i < 32; i++)
			snprintf(hex + 2 * i, 3, "%02x", h[i]);
		if (strcmp(hex, sha))
			rc = -EIO;
	}
out:
	EVP_MD_CTX_free(md);
	return rc;
}

int cluster_file_pull(const char *from, unsigned p, const char *sha,
		      bool thumb, int fd, const _Atomic bool *cancel)
{
	char owner[BUS_HOST_MAX + 1], self[BUS_HOST_MAX + 1];
	char live[64][BUS_HOST_MAX + 1];
	unsigned n;
	int rc;

	if (from)
		return pull_from(from, sha, thumb, fd, cancel);
	/* the owner first (it stores every upload), then anyone */
	cluster_self(self);
	core_owner_get(p, owner);
	rc = -ENOENT;
	if (owner[0] && strcmp(owner, self) &&
	    (rc = pull_from(owner, sha, thumb, fd, cancel)) == 0)
		return 0;
	n = core_live(live, 64);
	for (unsigned i = 0; i < n && i < 64; i++) {
		int r;

		if (!strcmp(live[i], self) || !strcmp(live[i], owner))
			continue;
		if ((r = pull_from(live[i], sha, thumb, fd, cancel)) == 0)
			return 0;
		if (r != -ENOENT)
			rc = r;
	}
	return rc;
}

/* ---- an upload taken here, for the owner ------------------------------------ */

struct offer {
	void (*done)(void *arg, int status, const char *body);
	void *arg;
};

static void offer_answered(void *arg, bus_status st, const void *data,
			   size_t len)
{
	struct offer *o = arg;
	struct rbuf r = { data, (const uint8_t *)data + len, false };
	char body[2048];
	int status = 0;

	if (st == BUS_OK) {
		status = r_u16(&r);
		r_str(&r, body, sizeof(body));
	}
	if (st != BUS_OK || r.bad || !status)
		o->done(o->arg, 503, "{\"code\":\"UNAVAILABLE\",\"msg\":\"the "
			"host that keeps the files did not answer; try "
			"again\"}");
	else
		o->done(o->arg, status, body);
	free(o);
}

void cluster_file_offer(unsigned p, const struct cluster_file *f,
			void (*done)(void *arg, int status, const char *body),
			void *arg)
{
	char owner[BUS_HOST_MAX + 1], self[BUS_HOST_MAX + 1];
	struct offer *o = calloc(1, sizeof(*o));
	struct wbuf w = { 0 };

	if (!o)
		abort();
	o->done = done;
	o->arg = arg;
	cluster_self(self);
	core_owner_get(p, owner);
	if (!owner[0] || !strcmp(owner, self)) {
		/* nobody owns it now, or we took it meanwhile: try again */
		offer_answered(o, BUS_ERROR, NULL, 0);
		return;
	}
	w_u8(&w, CLUSTER_MSG_FOFFER);
	w_str(&w, self);
	w_str(&w, f->ws);
	w_str(&w, f->user);
	w_str(&w, f->name);
	w_str(&w, f->type);
	w_str(&w, f->sha);
	w_u64(&w, f->size);
	if (bus_request(core_bus(), owner, w.p, w.n, OFFER_WAIT_MS,
			offer_answered, o) != BUS_OK)
		offer_answered(o, BUS_ERROR, NULL, 0);
	free(w.p);
}

void cluster_file_answer(bus_reply_token *tok, int status, const char *body)
{
	struct wbuf w = { 0 };

	w_u16(&w, (uint16_t)status);
	w_str(&w, body);
	bus_reply(core_bus(), tok, w.p, w.n);
	free(w.p);
}

void cluster_file_gone(const char *sha)
{
	struct wbuf w = { 0 };

	w_u8(&w, CLUSTER_MSG_FGONE);
	w_str(&w, sha);
	cluster_broadcast(w.p, w.n);
	free(w.p);
}
