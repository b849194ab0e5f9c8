/*
 * cluster: see cluster.h. This file is the top of the cluster: joining
 * and leaving, ownership (which host owns each partition, and taking one
 * over), and what other hosts send this one (their forwarded writes, our
 * forwarded writes' answers, typing, directory names, presence), handed
 * to the actors. Below it: cluster_log.c (the log), cluster_presence.c,
 * cluster_core.c (what the actors call; the messages' layout is there).
 */
#include "actors/cluster.h"

#include <endian.h>
#include <errno.h>
#include <nats/nats.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "actors/actors.h"
#include "actors/chan.h"
#include "actors/commit.h"
#include "actors/directory.h"
#include "actors/files.h"
#include "actors/cluster_core.h"
#include "actors/cluster_log.h"
#include "actors/cluster_wire.h"
#include "actors/session.h"
#include "cluster/bus.h"
#include "cluster/hosts.h"
#include "proto/reply.h"
#include "proto/req.h"
#include "runtime/log.h"

/* Every partition goes to this key's preferred host: one owner for the
 * cluster (docs/cluster.md says why, for now). */
#define OWNER_KEY "parley-partitions"

static struct {
	bus *b;
	hosts *h;
	char self[BUS_HOST_MAX + 1];
	unsigned n;
	int64_t lease_ms;
	bus_sub *inbox, *all;
	pthread_t owner_thread;
	bool owner_started;
	_Atomic bool stop;
	uint64_t dead_since[RT_MAX_SHARDS]; /* owner thread: owner not live */
	_Atomic uint64_t served;
} C;

/* ---- forwarded writes -------------------------------------------------------- */

static bool host_live(const char *id)
{
	char ids[HOSTS_MAX][BUS_HOST_MAX + 1];
	unsigned n = hosts_live(C.h, ids, HOSTS_MAX);

	for (unsigned i = 0; i < n && i < HOSTS_MAX; i++)
		if (!strcmp(ids[i], id))
			return true;
	return false;
}

static void on_req(struct rbuf *r)
{
	char host[BUS_HOST_MAX + 1], ws[ID_CAP], user[ID_CAP], ch[ID_CAP];
	rt_conn_id conn, proxy;
	bool has_rid, admin;
	uint64_t rid;
	uint8_t op;
	const void *frame;
	size_t n;

	r_str(r, host, sizeof(host));
	conn = r_u64(r);
	has_rid = r_u8(r);
	rid = r_u64(r);
	op = r_u8(r);
	r_str(r, ws, sizeof(ws));
	r_str(r, user, sizeof(user));
	admin = r_u8(r);
	r_str(r, ch, sizeof(ch));
	frame = r_bytes(r, &n);
	if (r->bad || !ws[0] || !user[0])
		return;
	proxy = core_proxy(host, conn);
	if (!proxy)
		return;
	atomic_fetch_add(&C.served, 1);
	if (!cluster_owns(user_shard(ws, user))) {
		core_unavailable(proxy, has_rid, rid, op,
				   "this host does not own it any more; "
				   "try again");
		return;
	}
	sess_forward_remote(proxy, ws, user, admin, ch, frame, n);
}

static void on_typing(struct rbuf *r);

static void on_inbox(void *arg, const void *data, size_t len)
{
	struct rbuf r = { data, (const uint8_t *)data + len, false };

	uint8_t kind = r_u8(&r);

	(void)arg;
	/* draining: only the other hosts' reports, which our last turns'
	 * acknowledgements wait for, and who else is leaving (they would
	 * wait for nothing) */
	if (atomic_load(&C.stop) && kind != CLUSTER_MSG_APPLIED &&
	    kind != CLUSTER_MSG_LEAVE)
		return;
	switch (kind) {
	case CLUSTER_MSG_REQ: on_req(&r); break;
	case CLUSTER_MSG_DELIVER: core_on_deliver(&r); break;
	case CLUSTER_MSG_TYPING: on_typing(&r); break;
	case CLUSTER_MSG_PRESENCE: cluster_presence_on_msg(r.p, r.end); break;
	case CLUSTER_MSG_PCHOSEN: cluster_presence_on_chosen(r.p, r.end); break;
	case CLUSTER_MSG_DIRSEEN: {
		char ws[ID_CAP], user[ID_CAP];
		uint64_t ms;

		r_str(&r, ws, sizeof(ws));
		r_str(&r, user, sizeof(user));
		ms = r_u64(&r);
		if (!r.bad && ws[0] && user[0] && cluster_owns(dir_shard(ws)))
			dir_note_seen(ws, user, ms);
		break;
	}
	case CLUSTER_MSG_FGONE: {
		char sha[65];

		r_str(&r, sha, sizeof(sha));
		if (!r.bad)
			files_gone(sha);
		break;
	}
	case CLUSTER_MSG_LEAVE: {
		char host[BUS_HOST_MAX + 1];

		r_str(&r, host, sizeof(host));
		if (!r.bad && strcmp(host, C.self)) {
			clog_host_left(host);
			plog(PL_INFO, "cluster", "%s is leaving", host);
		}
		break;
	}
	case CLUSTER_MSG_APPLIED: {
		char host[BUS_HOST_MAX + 1];
		unsigned p;
		uint64_t sseq;

		r_str(&r, host, sizeof(host));
		p = r_u8(&r);
		sseq = r_u64(&r);
		if (!r.bad)
			clog_on_report(host, p, sseq);
		break;
	}
	default: break;
	}
}

/* A host that has just taken its lease joins (JOIN, from join() there):
 * from now on our turns wait for it to store them, and it waits, before it
 * says it is ready, until it has stored everything acknowledged before:
 * our log positions of the partitions we own, in the answer. Without it,
 * the new host stayed out of our live list until our next listing (up to
 * a third of a lease), and writes acknowledged meanwhile could be missing
 * from reads on it. */
static void on_join(struct rbuf *r, bus_reply_token *tok)
{
	char host[BUS_HOST_MAX + 1], live[HOSTS_MAX][BUS_HOST_MAX + 1];
	struct wbuf w = { 0 };
	unsigned n;

	r_str(r, host, sizeof(host));
	if (r->bad || !host[0]) {
		bus_reply(C.b, tok, "", 0);
		return;
	}
	clog_host_joined(host);
	hosts_add(C.h, host);
	n = hosts_live(C.h, live, HOSTS_MAX);
	core_set_live(live, n < HOSTS_MAX ? n : HOSTS_MAX);
	/* after the live list: a write acknowledged from here on waited
	 * for it; one acknowledged before is at or below these */
	w_u8(&w, (uint8_t)C.n);
	for (unsigned p = 0; p < C.n; p++)
		w_u64(&w, cluster_owns(p) ? core_applied(p) : 0);
	bus_reply(C.b, tok, w.p, w.n);
	free(w.p);
	plog(PL_INFO, "cluster", "%s joined", host);
}

/* Another host's upload, for us to store (cluster_files.c's FOFFER). */
static void on_offer(struct rbuf *r, bus_reply_token *tok)
{
	char holder[BUS_HOST_MAX + 1], ws[ID_CAP], user[ID_CAP], name[256],
		type[128], sha[65];
	struct cluster_file f = { ws, user, name, type, sha, 0 };

	r_str(r, holder, sizeof(holder));
	r_str(r, ws, sizeof(ws));
	r_str(r, user, sizeof(user));
	r_str(r, name, sizeof(name));
	r_str(r, type, sizeof(type));
	r_str(r, sha, sizeof(sha));
	f.size = r_u64(r);
	if (r->bad)
		cluster_file_answer(tok, 400, "{\"code\":\"BAD_REQUEST\","
				    "\"msg\":\"a bad offer of a file\"}");
	else
		files_remote_store(&f, holder, tok);
}

/* A piece of a file's bytes, for a host that pulls them (FGET). */
static void on_fget(struct rbuf *r, bus_reply_token *tok)
{
	char sha[65];
	bool thumb;
	uint64_t off;
	struct wbuf w = { 0 };
	uint8_t *buf;
	long n;

	r_str(r, sha, sizeof(sha));
	thumb = r_u8(r);
	off = r_u64(r);
	buf = malloc(FILE_CHUNK);
	n = r->bad || !buf ? -ENOENT :
	    files_read_part(sha, thumb, off, buf, FILE_CHUNK);
	if (n < 0) {
		w_u8(&w, 1);
	} else {
		w_u8(&w, 0);
		w_bytes(&w, buf, (size_t)n);
	}
	bus_reply(C.b, tok, w.p, w.n);
	free(w.p);
	free(buf);
}

/* Requests that want an answer (bus_request): a hello's directory name,
 * answered once it is on its way to the directory actor, ahead of
 * anything sent here after the answer; a host's JOIN; files' offers and
 * pieces. */
static void on_serve(void *arg, const void *data, size_t len,
		     bus_reply_token *tok)
{
	struct rbuf r = { data, (const uint8_t *)data + len, false };
	char ws[ID_CAP], user[ID_CAP], name[256];
	uint8_t kind = r_u8(&r);

	(void)arg;
	if (kind == CLUSTER_MSG_JOIN) {
		on_join(&r, tok);
		return;
	}
	if (kind == CLUSTER_MSG_FOFFER) {
		on_offer(&r, tok);
		return;
	}
	if (kind == CLUSTER_MSG_FGET) {
		on_fget(&r, tok);
		return;
	}
	if (kind == CLUSTER_MSG_DIRNAME && !atomic_load(&C.stop)) {
		r_str(&r, ws, sizeof(ws));
		r_str(&r, user, sizeof(user));
		r_str(&r, name, sizeof(name));
		if (!r.bad && ws[0] && user[0] && cluster_owns(dir_shard(ws)))
			dir_on_hello(ws, user, name, 0, NULL);
	}
	bus_reply(C.b, tok, "ok", 2);
}

/* ---- typing (not stored: straight to every host) --------------------------- */

struct typing {
	char ch[ID_CAP], skip[ID_CAP];
	rt_buf *buf;
};

static void typing_on_shard(struct shard_state *ss, struct m_call *m)
{
	struct typing *t = m->arg;
	struct chan *c = smap_get(&ss->chans, t->ch, strlen(t->ch));

	t->buf->t_post_us = rt_mono_us();
	if (c)
		fanout(c, 0, t->buf, t->skip[0] ? t->skip : NULL);
	rt_buf_unref(t->buf);
	free(t);
	free(m);
}

static void on_typing(struct rbuf *r)
{
	char host[BUS_HOST_MAX + 1];
	struct typing *t = calloc(1, sizeof(*t));
	struct m_call *m;
	const void *d;
	size_t n;

	if (!t)
		abort();
	r_str(r, host, sizeof(host));
	r_str(r, t->ch, sizeof(t->ch));
	r_str(r, t->skip, sizeof(t->skip));
	d = r_bytes(r, &n);
	if (r->bad || !strcmp(host, C.self) || !t->ch[0]) {
		free(t);
		return; /* ours: its owner shard told our clients already */
	}
	t->buf = rt_buf_new(d, n);
	m = msg_new(sizeof(*m), M_CALL);
	m->fn = typing_on_shard;
	m->arg = t;
	rt_post(chan_shard(t->ch), &m->h);
}

/* ---- ownership ----------------------------------------------------------------- */

/* One look at partition p's record: follow it, or take p. */
/* Who should own partition p: p0's owner for every other partition (the
 * actors' hops between partitions stay on one host; docs/cluster.md), and
 * for p0 (or while p0 has none) its live owner, else the preferred live
 * host. "" for nobody yet. */
static void wanted(unsigned p, const char *owner, bool live, char *out)
{
	char p0[BUS_HOST_MAX + 1];

	out[0] = 0;
	if (p) {
		core_owner_get(0, p0);
		if (p0[0] && (!strcmp(p0, C.self) || host_live(p0))) {
			memcpy(out, p0, BUS_HOST_MAX + 1);
			return;
		}
	}
	if (live)
		snprintf(out, BUS_HOST_MAX + 1, "%s", owner);
	else if (!hosts_preferred(C.h, OWNER_KEY, out))
		out[0] = 0;
}

static void claim(unsigned p, const char *key, uint64_t rev)
{
	char owner[BUS_HOST_MAX + 1];

	if (bus_key_claim(C.b, key, rev, &rev, owner, sizeof(owner)) !=
	    BUS_OK)
		return; /* another host was quicker: next round follows it */
	plog(PL_INFO, "cluster", "p%u: claimed", p);
	core_owner_set(p, C.self);
	C.dead_since[p] = 0;
	clog_takeover(p);
}

/* One look at partition p's record: follow it, or take p. */
static void own_check(unsigned p, bool lease_ok)
{
	char key[16], owner[BUS_HOST_MAX + 1] = "", want[BUS_HOST_MAX + 1];
	uint64_t rev = 0;
	bus_status st;
	bool mine, live;

	snprintf(key, sizeof(key), "p%u", p);
	st = bus_key_get(C.b, key, owner, sizeof(owner), &rev);
	if (st == BUS_EMPTY) {
		owner[0] = 0;
		rev = 0;
	} else if (st != BUS_OK) {
		return; /* the bucket does not answer: nothing changes */
	}
	mine = owner[0] && !strcmp(owner, C.self);
	live = owner[0] && (mine || host_live(owner));
	wanted(p, owner, live, want);
	if (mine) {
		/* Ours, even while our own lease is late: the log's fence,
		 * not the lease, keeps two owners apart; dropping it on a
		 * slow renewal (a NATS election) would only make every
		 * host's partitions move at once. If another host should
		 * have it, that host claims it and fences us. */
		core_owner_set(p, C.self);
		C.dead_since[p] = 0;
		if (lease_ok && !cluster_owns(p))
			clog_takeover(p);
		return;
	}
	if (live) {
		core_owner_set(p, owner);
		C.dead_since[p] = 0;
		clog_lost(p); /* if it was ours */
		/* p0's owner takes the others, from a live owner too (two
		 * hosts that saw different live sets may have split them) */
		if (p && lease_ok && !strcmp(want, C.self))
			claim(p, key, rev);
		return;
	}
	/* no owner, or a dead one: taken once the owner has been gone for
	 * half a lease (an election in the bucket can hide a live host's
	 * lease for a moment) */
	core_owner_set(p, "");
	if (owner[0]) {
		uint64_t now = rt_now_ms();

		if (!C.dead_since[p])
			C.dead_since[p] = now;
		if (now - C.dead_since[p] < (uint64_t)C.lease_ms / 2)
			return;
	}
	if (lease_ok && !strcmp(want, C.self))
		claim(p, key, rev);
}

static void *owner_main(void *arg)
{
	int64_t every = C.lease_ms / 5;
	uint64_t next_refresh = 0, reconnects = 0;
	bus_metrics bm;

	(void)arg;
	if (every < 100)
		every = 100;
	if (every > 1000)
		every = 1000;
	while (!atomic_load(&C.stop)) {
		bool ok = hosts_lease_ok(C.h);
		struct timespec ts = { every / 1000, (every % 1000) * 1000000 };
		char live[HOSTS_MAX][BUS_HOST_MAX + 1];
		unsigned nlive = hosts_live(C.h, live, HOSTS_MAX);

		core_set_live(live, nlive < HOSTS_MAX ? nlive : HOSTS_MAX);

		for (unsigned p = 0; p < C.n && !atomic_load(&C.stop); p++)
			own_check(p, ok);
		bus_get_metrics(C.b, &bm);
		/* a reconnect may have lost forwarded requests or their
		 * answers (at most once): their clients send them again */
		core_pending_sweep(bm.reconnects != reconnects);
		reconnects = bm.reconnects;
		clog_watch(rt_now_ms());
		cluster_presence_sweep();
		if (rt_now_ms() >= next_refresh) {
			cluster_presence_refresh();
			next_refresh = rt_now_ms() + 2000;
		}
		nanosleep(&ts, NULL);
	}
	return NULL;
}

/* ---- start and stop --------------------------------------------------------------- */

/* Hosts that disagree on the partitions or the secrets would corrupt each
 * other's stores (another shard count hashes keys elsewhere) or mint
 * tokens and DM ids the others do not know: the first host to join
 * settles them (a fingerprint of the secrets, never the secrets), and a
 * host that differs refuses to start. */
static int same_as_cluster(unsigned nshards)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	char fp[2 * 24 + 1], got[BUS_HOST_MAX + 1], shape[64];
	EVP_MD_CTX *x = EVP_MD_CTX_new();

	EVP_DigestInit_ex(x, EVP_sha256(), NULL);
	EVP_DigestUpdate(x, "parley-cluster\0", 15);
	EVP_DigestUpdate(x, srv.key, srv.key_len);
	EVP_DigestUpdate(x, "\0", 1);
	EVP_DigestUpdate(x, srv.dm_key, srv.dm_key_len);
	EVP_DigestFinal_ex(x, md, NULL);
	EVP_MD_CTX_free(x);
	for (int i = 0; i < 24; i++)
		snprintf(fp + 2 * i, 3, "%02x", md[i]);
	snprintf(shape, sizeof(shape), "shards-%u-ranges-%u", nshards,
		 store_nranges(srv.st));
	if (bus_key_settle(C.b, "cfg.shape", shape, got, sizeof(got)) !=
	    BUS_OK) {
		plog(PL_ERROR, "cluster", "cannot read the cluster's settings");
		return -1;
	}
	if (strcmp(got, shape)) {
		plog(PL_ERROR, "cluster", "this host has %s, the cluster %s: "
		     "every host needs the same --shards and --ranges", shape,
		     got);
		return -1;
	}
	if (bus_key_settle(C.b, "cfg.secrets", fp, got, sizeof(got)) !=
	    BUS_OK) {
		plog(PL_ERROR, "cluster", "cannot read the cluster's settings");
		return -1;
	}
	if (strcmp(got, fp)) {
		plog(PL_ERROR, "cluster", "this host's JWT secret or DM key is "
		     "not the cluster's: give every host the same "
		     "--jwt-secret-file and --dm-key-file");
		return -1;
	}
	return 0;
}

int cluster_start(const struct cluster_opts *o, unsigned nshards)
{
	char err[256], writer[BUS_HOST_MAX + 40];
	bus_cfg cfg = { 0 };
	uint64_t nonce = 0;

	if (!o->urls)
		return 0;
	if (o->host_id) {
		snprintf(C.self, sizeof(C.self), "%s", o->host_id);
	} else if (gethostname(C.self, sizeof(C.self))) {
		plog(PL_ERROR, "cluster", "no --host-id and no host name");
		return -1;
	}
	C.n = nshards;
	C.lease_ms = o->lease_ms;
	cfg.urls = o->urls;
	cfg.host_id = C.self;
	cfg.replicas = 3;
	cfg.lease_ms = o->lease_ms;
	if (bus_open(&C.b, &cfg, err, sizeof(err)) != BUS_OK) {
		plog(PL_ERROR, "cluster", "%s: %s", o->urls, err);
		return -1;
	}
	if (hosts_start(&C.h, C.b, C.self, o->lease_ms, err, sizeof(err))) {
		plog(PL_ERROR, "cluster", "%s", err);
		bus_close(C.b);
		C.b = NULL;
		return -1;
	}
	/* this process's turns, told from an earlier life's under the same
	 * host id (those its applier stores like anyone's) */
	if (getentropy(&nonce, sizeof(nonce)))
		nonce = (uint64_t)time(NULL) ^ (uint64_t)getpid();
	snprintf(writer, sizeof(writer), "%s/%016llx", C.self,
		 (unsigned long long)nonce);
	if (same_as_cluster(nshards)) {
		hosts_stop(C.h);
		bus_close(C.b);
		C.b = NULL;
		return -1;
	}
	core_init(C.b, C.self, nshards);
	if (clog_start(C.b, nshards, writer, &(struct clog_hooks){
			       .turn_end = commit_turn_end,
			       .logged = commit_logged }, o->new_log)) {
		hosts_stop(C.h);
		bus_close(C.b);
		C.b = NULL;
		return -1;
	}
	base_proxy_send = cluster_deliver;
	cluster_presence_hook(presence_on_remote);
	cluster_on = true;
	plog(PL_INFO, "cluster", "joined as %s (%s), %u partitions", C.self,
	     o->urls, nshards);
	return 0;
}

/* ---- joining ------------------------------------------------------------------ */

#define JOIN_WAIT_MS 2000   /* a live host's answer to JOIN */
#define CATCH_UP_MS 60000   /* then at most this to store up to them */

struct joining {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned waiting;
	uint64_t want[RT_MAX_SHARDS];
};

static void join_answered(void *arg, bus_status st, const void *data,
			  size_t len)
{
	struct joining *j = arg;
	struct rbuf r = { data, (const uint8_t *)data + len, false };

	pthread_mutex_lock(&j->mu);
	if (st == BUS_OK && len) {
		unsigned n = r_u8(&r);

		for (unsigned p = 0; p < n && p < C.n && !r.bad; p++) {
			uint64_t v = r_u64(&r);

			if (!r.bad && v > j->want[p])
				j->want[p] = v;
		}
	}
	j->waiting--;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mu);
}

/* BLOCKING. Tells every live host that this one is here (on_join), then
 * waits until our followers have stored what their owners had: clients
 * that connect once we say we are ready read every acknowledged write. A
 * host that does not answer within JOIN_WAIT_MS is dead or cut off: it
 * acknowledges nothing we would miss. */
static void join(void)
{
	char live[HOSTS_MAX][BUS_HOST_MAX + 1];
	unsigned n = hosts_live(C.h, live, HOSTS_MAX);
	struct joining j = { .mu = PTHREAD_MUTEX_INITIALIZER,
			     .cv = PTHREAD_COND_INITIALIZER };
	struct wbuf w = { 0 };
	uint64_t t0 = rt_now_ms(), told = t0;

	w_u8(&w, CLUSTER_MSG_JOIN);
	w_str(&w, C.self);
	for (unsigned i = 0; i < n && i < HOSTS_MAX; i++) {
		if (!strcmp(live[i], C.self))
			continue;
		pthread_mutex_lock(&j.mu);
		j.waiting++;
		pthread_mutex_unlock(&j.mu);
		if (bus_request(C.b, live[i], w.p, w.n, JOIN_WAIT_MS,
				join_answered, &j) != BUS_OK)
			join_answered(&j, BUS_ERROR, NULL, 0);
	}
	free(w.p);
	pthread_mutex_lock(&j.mu);
	while (j.waiting)
		pthread_cond_wait(&j.cv, &j.mu);
	pthread_mutex_unlock(&j.mu);

	for (;;) {
		unsigned behind = C.n;
		uint64_t now = rt_now_ms();

		for (unsigned p = 0; p < C.n; p++)
			if (core_applied(p) >= j.want[p]) {
				behind--;
			} else if (now - told >= 5000) {
				plog(PL_INFO, "cluster", "p%u: catching up with "
				     "the log: at %llu of %llu", p,
				     (unsigned long long)core_applied(p),
				     (unsigned long long)j.want[p]);
			}
		if (!behind)
			break;
		if (now - told >= 5000)
			told = now;
		if (now - t0 >= CATCH_UP_MS || atomic_load(&C.stop)) {
			plog(PL_WARN, "cluster", "%u partitions still behind "
			     "the log after %u ms: serving all the same (reads "
			     "here may miss recent writes until they catch up)",
			     behind, CATCH_UP_MS);
			break;
		}
		usleep(10000);
	}
	if (rt_now_ms() - t0 >= 1000)
		plog(PL_INFO, "cluster", "caught up with the log in %llu ms",
		     (unsigned long long)(rt_now_ms() - t0));
}

int cluster_run(void)
{
	if (!cluster_on)
		return 0;
	if (clog_follow())
		return -1;
	if (bus_listen(C.b, C.self, on_inbox, NULL, &C.inbox) != BUS_OK ||
	    bus_listen(C.b, NULL, on_inbox, NULL, &C.all) != BUS_OK ||
	    bus_serve(C.b, C.self, on_serve, NULL) != BUS_OK) {
		plog(PL_ERROR, "cluster", "cannot listen for other hosts");
		return -1;
	}
	if (pthread_create(&C.owner_thread, NULL, owner_main, NULL))
		return -1;
	C.owner_started = true;
	join();
	return 0;
}

/* No more ownership rounds, nothing more from other hosts but their
 * reports and LEAVEs (on_inbox; the subscriptions go in cluster_stop). */
static void stop_listening(void)
{
	atomic_store(&C.stop, true);
	if (C.owner_started)
		pthread_join(C.owner_thread, NULL);
	C.owner_started = false;
}

void cluster_quiesce(void)
{
	struct wbuf w = { 0 };

	if (!cluster_on)
		return;
	/* the others' turns stop waiting for us: we store no more of them
	 * (clog_drain), and would cost each its AWAIT_MS */
	w_u8(&w, CLUSTER_MSG_LEAVE);
	w_str(&w, C.self);
	bus_send(C.b, NULL, w.p, w.n);
	free(w.p);
	stop_listening();
	clog_drain();
}

void cluster_stop(void)
{
	if (!C.b)
		return;
	stop_listening();
	bus_unsubscribe(C.inbox);
	bus_unsubscribe(C.all);
	C.inbox = C.all = NULL;
	if (cluster_on) {
		clog_stop_follow();
		clog_stop();
	}
	hosts_stop(C.h);
	bus_close(C.b);
	C.h = NULL;
	C.b = NULL;
	cluster_presence_free();
	core_fini();
	nats_CloseAndWait(10000);
}

void cluster_get_stats(struct cluster_stats *st)
{
	bus_metrics m;
	struct clog_stats ls;

	memset(st, 0, sizeof(*st));
	if (!C.b)
		return;
	st->on = true;
	st->hosts_live = hosts_live(C.h, NULL, 0);
	st->lease_ok = hosts_lease_ok(C.h);
	st->nparts = C.n;
	for (unsigned p = 0; p < C.n; p++) {
		st->owned_map[p] = cluster_owns(p);
		st->owned += st->owned_map[p];
	}
	bus_get_metrics(C.b, &m);
	st->appends = m.appends;
	st->fenced = m.fenced;
	st->retries = m.retries;
	st->reconnects = m.reconnects;
	st->disconnects = m.disconnects;
	hosts_counters(C.h, &st->renew_failed, &st->lease_lost);
	core_counters(&st->forwarded, &st->held, &st->unavailable);
	st->served = atomic_load(&C.served);
	clog_get_stats(&ls);
	st->applied = ls.applied;
	st->takeovers = ls.takeovers;
	st->log_bytes = ls.log_bytes;
	st->turns = ls.turns;
	st->failed_turns = ls.fenced_turns;
	st->refollows = ls.refollows;
	st->local_refused = ls.local_refused;
	st->wait_us = ls.wait_us;
	st->append_us = ls.append_us;
	st->timed_turns = ls.timed_turns;
	st->apply_us = ls.apply_us;
	st->applied_turns = ls.applied_turns;
}
