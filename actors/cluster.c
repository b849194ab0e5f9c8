/*
 * cluster: see cluster.h. This file: joining, ownership (which host owns
 * each partition, and taking one over), forwarded writes and their
 * answers. The log is cluster_log.c.
 *
 * Messages between hosts (bus_send, at most once, in order per sender):
 *   REQ      u8 1, str origin host, u64 conn, u8 has_rid, u64 rid, u8 op,
 *            str ws, str user, u8 admin, str ch, bytes frame
 *   DELIVER  u8 2, u8 partition, u64 log position, u64 conn, bytes frame
 *   TYPING   u8 3, str host, str ch, str skip, bytes frame (to every host)
 *   DIRNAME  u8 4, str ws, str user, str name (to the directory's owner)
 *   PRESENCE, PCHOSEN: cluster_presence.c (to every host)
 * (str: u16 n + bytes; bytes: u32 n + bytes; little-endian)
 */
#include "actors/cluster.h"

#include <endian.h>
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
#include "actors/cluster_log.h"
#include "actors/session.h"
#include "cluster/bus.h"
#include "cluster/hosts.h"
#include "proto/reply.h"
#include "proto/req.h"
#include "runtime/log.h"

/* Every partition goes to this key's preferred host: one owner for the
 * cluster (docs/cluster.md says why, for now). */
#define OWNER_KEY "parley-partitions"
#define PROXY_HOSTS 127

enum { MSG_REQ = CLUSTER_MSG_REQ, MSG_DELIVER = CLUSTER_MSG_DELIVER,
       MSG_TYPING = CLUSTER_MSG_TYPING, MSG_DIRNAME = CLUSTER_MSG_DIRNAME };

bool cluster_on;

/* An answer from the owner that waits until this host stored the write. */
struct held_ans {
	struct held_ans *next;
	unsigned p;
	uint64_t sseq;
	rt_conn_id conn;
	rt_buf *buf;
};

/* A forwarded request still waiting for its answer: if its owner dies
 * first, this host answers UNAVAILABLE (the client sends it again, with
 * its cmid: idempotent), rather than leave it unanswered. */
struct pending {
	struct pending *next;
	rt_conn_id conn;
	uint64_t rid;
	uint8_t op;
	unsigned p;
	char owner[BUS_HOST_MAX + 1];
	uint64_t t_ms;
};

#define PENDING_MAX_MS 60000 /* answered UNAVAILABLE after it, whatever */

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
	pthread_mutex_t mu; /* owners, proxy hosts, held */
	char owner[RT_MAX_SHARDS][BUS_HOST_MAX + 1];
	uint64_t dead_since[RT_MAX_SHARDS]; /* owner thread: owner not live */
	char phost[PROXY_HOSTS][BUS_HOST_MAX + 1];
	unsigned nphost;
	struct held_ans *held, **held_tail;
	struct pending *pending;
	_Atomic uint64_t forwarded, served, held_n, unavailable;
} C = { .mu = PTHREAD_MUTEX_INITIALIZER };

/* ---- bytes (the same encoding as the log's) ------------------------------ */

struct wb {
	uint8_t *p;
	size_t n, cap;
};

static void wb_raw(struct wb *w, const void *d, size_t n)
{
	if (w->n + n > w->cap) {
		size_t cap = w->cap ? w->cap : 256;

		while (cap < w->n + n)
			cap *= 2;
		w->p = realloc(w->p, cap);
		if (!w->p)
			abort();
		w->cap = cap;
	}
	if (n)
		memcpy(w->p + w->n, d, n);
	w->n += n;
}

static void wb_u8(struct wb *w, uint8_t v) { wb_raw(w, &v, 1); }
static void wb_u64(struct wb *w, uint64_t v) { v = htole64(v); wb_raw(w, &v, 8); }

static void wb_str(struct wb *w, const char *s)
{
	uint16_t n = htole16((uint16_t)strlen(s));

	wb_raw(w, &n, 2);
	wb_raw(w, s, strlen(s));
}

static void wb_bytes(struct wb *w, const void *d, size_t n)
{
	uint32_t l = htole32((uint32_t)n);

	wb_raw(w, &l, 4);
	wb_raw(w, d, n);
}

struct rb {
	const uint8_t *p, *end;
	bool bad;
};

static const void *rb_raw(struct rb *r, size_t n)
{
	const void *p = r->p;

	if (r->bad || (size_t)(r->end - r->p) < n) {
		r->bad = true;
		return NULL;
	}
	r->p += n;
	return p;
}

static uint8_t rb_u8(struct rb *r)
{
	const uint8_t *p = rb_raw(r, 1);

	return p ? *p : 0;
}

static uint64_t rb_u64(struct rb *r)
{
	uint64_t v = 0;
	const void *p = rb_raw(r, 8);

	if (p)
		memcpy(&v, p, 8);
	return le64toh(v);
}

static void rb_str(struct rb *r, char *out, size_t cap)
{
	uint16_t n = 0;
	const void *p = rb_raw(r, 2);
	const char *s;

	if (p)
		memcpy(&n, p, 2);
	n = le16toh(n);
	s = rb_raw(r, n);
	if (!s || n >= cap) {
		r->bad = true;
		out[0] = 0;
		return;
	}
	memcpy(out, s, n);
	out[n] = 0;
}

static const void *rb_bytes(struct rb *r, size_t *n)
{
	uint32_t l = 0;
	const void *p = rb_raw(r, 4);

	if (p)
		memcpy(&l, p, 4);
	*n = le32toh(l);
	return rb_raw(r, *n);
}

/* ---- proxy connection ids --------------------------------------------------- */

/* A connection of another host, as this host's actors address it: the shard
 * byte is 0x80 + the host's index in phost (no shard has it), then the
 * connection's own shard (6 bits), generation and slot (24 bits each). */
static int phost_index(const char *host)
{
	int i;

	pthread_mutex_lock(&C.mu);
	for (i = 0; i < (int)C.nphost; i++)
		if (!strcmp(C.phost[i], host))
			goto out;
	if (C.nphost == PROXY_HOSTS) {
		i = -1;
		goto out;
	}
	snprintf(C.phost[C.nphost], BUS_HOST_MAX + 1, "%s", host);
	i = (int)C.nphost++;
out:
	pthread_mutex_unlock(&C.mu);
	return i;
}

static rt_conn_id proxy_make(int hidx, rt_conn_id conn)
{
	uint64_t shard = conn >> 56, gen = (conn >> 32) & 0xffffff,
		 slot = conn & 0xffffffffu;

	if (slot > 0xffffff || shard >= RT_MAX_SHARDS)
		return 0;
	return ((uint64_t)(0x80 | hidx) << 56) | (shard << 48) | (gen << 24) |
	       slot;
}

rt_conn_id cluster_proxy_origin(rt_conn_id proxy, char host[BUS_HOST_MAX + 1])
{
	unsigned hidx = (unsigned)(proxy >> 56) & 0x7f;

	pthread_mutex_lock(&C.mu);
	snprintf(host, BUS_HOST_MAX + 1, "%s",
		 hidx < C.nphost ? C.phost[hidx] : "");
	pthread_mutex_unlock(&C.mu);
	return (((proxy >> 48) & 0xff) << 56) | (((proxy >> 24) & 0xffffff) << 32) |
	       (proxy & 0xffffff);
}

void cluster_self(char out[BUS_HOST_MAX + 1])
{
	memcpy(out, C.self, BUS_HOST_MAX + 1);
}

/* ---- answers to other hosts' connections ------------------------------------ */

void cluster_deliver(rt_conn_id proxy, rt_buf *b)
{
	char host[BUS_HOST_MAX + 1];
	rt_conn_id conn = cluster_proxy_origin(proxy, host);
	rt_shard *self = rt_self();
	unsigned p = self ? rt_shard_id(self) : 0;
	struct wb w = { 0 };

	wb_u8(&w, MSG_DELIVER);
	wb_u8(&w, (uint8_t)p);
	/* this shard's log as far as it went: the origin shows the answer
	 * once its own store has the write it answers */
	wb_u64(&w, self ? clog_last_sseq(p) : 0);
	wb_u64(&w, conn);
	wb_bytes(&w, b->data, b->len);
	if (host[0])
		bus_send(C.b, host, w.p, w.n);
	free(w.p);
	rt_buf_unref(b);
}

/* The held answers whose writes this host's store now has, in order. */
void cluster_release_held(void)
{
	struct held_ans *go = NULL, **tail = &go;

	pthread_mutex_lock(&C.mu);
	while (C.held && clog_applied(C.held->p) >= C.held->sseq) {
		struct held_ans *h = C.held;

		C.held = h->next;
		h->next = NULL;
		*tail = h;
		tail = &h->next;
	}
	if (!C.held)
		C.held_tail = &C.held;
	pthread_mutex_unlock(&C.mu);
	while (go) {
		struct held_ans *h = go;

		go = h->next;
		h->buf->t_post_us = rt_mono_us();
		send_buf_to_conn(h->conn, h->buf);
		free(h);
	}
}

/* A frame for conn came from an owner: if it is the answer to a pending
 * request (a "res" with its rid), that request is not pending any more. */
static void answered(rt_conn_id conn, const void *d, size_t n)
{
	proto_doc doc;
	const char *t;
	uint32_t tl;
	uint64_t rid;

	if (!C.pending || proto_decode(&doc, d, n) != PROTO_OK)
		return;
	if (proto_get_str(&doc.root, "t", &t, &tl) == 0 && tl == 3 &&
	    !memcmp(t, "res", 3) && proto_get_uint(&doc.root, "rid", &rid) == 0) {
		pthread_mutex_lock(&C.mu);
		for (struct pending **q = &C.pending; *q; q = &(*q)->next) {
			if ((*q)->conn == conn && (*q)->rid == rid) {
				struct pending *g = *q;

				*q = g->next;
				free(g);
				break;
			}
		}
		pthread_mutex_unlock(&C.mu);
	}
	proto_doc_free(&doc);
}

static void on_deliver(struct rb *r)
{
	unsigned p = rb_u8(r);
	uint64_t sseq = rb_u64(r);
	rt_conn_id conn = rb_u64(r);
	size_t n;
	const void *d = rb_bytes(r, &n);
	struct held_ans *h;

	if (r->bad || p >= C.n || rt_conn_shard(conn) >= rt_nshards())
		return;
	answered(conn, d, n);
	h = calloc(1, sizeof(*h));
	if (!h)
		abort();
	h->p = p;
	h->sseq = sseq;
	h->conn = conn;
	h->buf = rt_buf_new(d, n);
	h->buf->kind = BUF_ACK;
	pthread_mutex_lock(&C.mu);
	*C.held_tail = h;
	C.held_tail = &h->next;
	pthread_mutex_unlock(&C.mu);
	if (clog_applied(p) < sseq)
		atomic_fetch_add(&C.held_n, 1);
	cluster_release_held();
}

/* ---- forwarded writes -------------------------------------------------------- */

static void answer_unavailable(rt_conn_id conn, bool has_rid, uint64_t rid,
			       uint8_t op, const char *why)
{
	proto_out o;
	const char *name = proto_op_name(op);

	proto_out_init(&o, 0, 256);
	proto_enc_fail(&o, has_rid, rid, name, strlen(name), "UNAVAILABLE",
		       why, 1000);
	if (cluster_is_proxy(conn))
		cluster_deliver(conn, rt_buf_new(o.data, o.len));
	else
		send_buf_to_conn(conn, rt_buf_new(o.data, o.len));
	proto_out_free(&o);
	atomic_fetch_add(&C.unavailable, 1);
}

static bool host_live(const char *id)
{
	char ids[HOSTS_MAX][BUS_HOST_MAX + 1];
	unsigned n = hosts_live(C.h, ids, HOSTS_MAX);

	for (unsigned i = 0; i < n && i < HOSTS_MAX; i++)
		if (!strcmp(ids[i], id))
			return true;
	return false;
}

void cluster_forward(unsigned p, rt_conn_id conn, bool has_rid, uint64_t rid,
		     uint8_t op, const char *ws, const char *user, bool admin,
		     const char *ch, const uint8_t *frame, size_t len)
{
	char owner[BUS_HOST_MAX + 1];
	struct wb w = { 0 };

	pthread_mutex_lock(&C.mu);
	memcpy(owner, C.owner[p], sizeof(owner));
	pthread_mutex_unlock(&C.mu);
	if (!owner[0] || !strcmp(owner, C.self)) {
		answer_unavailable(conn, has_rid, rid, op,
				   "no host owns this yet; try again");
		return;
	}
	wb_u8(&w, MSG_REQ);
	wb_str(&w, C.self);
	wb_u64(&w, conn);
	wb_u8(&w, has_rid);
	wb_u64(&w, rid);
	wb_u8(&w, op);
	wb_str(&w, ws);
	wb_str(&w, user);
	wb_u8(&w, admin);
	wb_str(&w, ch);
	wb_bytes(&w, frame, len);
	if (bus_send(C.b, owner, w.p, w.n) == BUS_OK) {
		atomic_fetch_add(&C.forwarded, 1);
		if (has_rid) {
			struct pending *q = calloc(1, sizeof(*q));

			if (!q)
				abort();
			q->conn = conn;
			q->rid = rid;
			q->op = op;
			q->p = p;
			memcpy(q->owner, owner, sizeof(owner));
			q->t_ms = rt_now_ms();
			pthread_mutex_lock(&C.mu);
			q->next = C.pending;
			C.pending = q;
			pthread_mutex_unlock(&C.mu);
		}
	} else
		answer_unavailable(conn, has_rid, rid, op,
				   "the cluster cannot be reached");
	free(w.p);
}

static void on_req(struct rb *r)
{
	char host[BUS_HOST_MAX + 1], ws[ID_CAP], user[ID_CAP], ch[ID_CAP];
	rt_conn_id conn, proxy;
	bool has_rid, admin;
	uint64_t rid;
	uint8_t op;
	const void *frame;
	size_t n;
	int hidx;

	rb_str(r, host, sizeof(host));
	conn = rb_u64(r);
	has_rid = rb_u8(r);
	rid = rb_u64(r);
	op = rb_u8(r);
	rb_str(r, ws, sizeof(ws));
	rb_str(r, user, sizeof(user));
	admin = rb_u8(r);
	rb_str(r, ch, sizeof(ch));
	frame = rb_bytes(r, &n);
	if (r->bad || !ws[0] || !user[0])
		return;
	hidx = phost_index(host);
	proxy = hidx < 0 ? 0 : proxy_make(hidx, conn);
	if (!proxy)
		return;
	atomic_fetch_add(&C.served, 1);
	if (!cluster_owns(user_shard(ws, user))) {
		answer_unavailable(proxy, has_rid, rid, op,
				   "this host does not own it any more; "
				   "try again");
		return;
	}
	sess_forward_remote(proxy, ws, user, admin, ch, frame, n);
}

static void on_typing(struct rb *r);

static void on_inbox(void *arg, const void *data, size_t len)
{
	struct rb r = { data, (const uint8_t *)data + len, false };

	(void)arg;
	if (atomic_load(&C.stop))
		return;
	switch (rb_u8(&r)) {
	case MSG_REQ: on_req(&r); break;
	case MSG_DELIVER: on_deliver(&r); break;
	case MSG_TYPING: on_typing(&r); break;
	case CLUSTER_MSG_PRESENCE: cluster_presence_on_msg(r.p, r.end); break;
	case CLUSTER_MSG_PCHOSEN: cluster_presence_on_chosen(r.p, r.end); break;
	case MSG_DIRNAME: {
		char ws[ID_CAP], user[ID_CAP], name[256];

		rb_str(&r, ws, sizeof(ws));
		rb_str(&r, user, sizeof(user));
		rb_str(&r, name, sizeof(name));
		if (!r.bad && ws[0] && user[0] && cluster_owns(dir_shard(ws)))
			dir_on_hello(ws, user, name);
		break;
	}
	default: break;
	}
}

void cluster_dir_hello(const char *ws, const char *user, const char *name)
{
	char owner[BUS_HOST_MAX + 1];
	unsigned p = dir_shard(ws);
	struct wb w = { 0 };

	pthread_mutex_lock(&C.mu);
	memcpy(owner, C.owner[p], sizeof(owner));
	pthread_mutex_unlock(&C.mu);
	if (!owner[0] || !strcmp(owner, C.self))
		return; /* no owner now: the next hello tells it */
	wb_u8(&w, MSG_DIRNAME);
	wb_str(&w, ws);
	wb_str(&w, user);
	wb_str(&w, name);
	bus_send(C.b, owner, w.p, w.n);
	free(w.p);
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

static void on_typing(struct rb *r)
{
	char host[BUS_HOST_MAX + 1];
	struct typing *t = calloc(1, sizeof(*t));
	struct m_call *m;
	const void *d;
	size_t n;

	if (!t)
		abort();
	rb_str(r, host, sizeof(host));
	rb_str(r, t->ch, sizeof(t->ch));
	rb_str(r, t->skip, sizeof(t->skip));
	d = rb_bytes(r, &n);
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

void cluster_broadcast(const void *data, size_t len)
{
	if (C.b)
		bus_send(C.b, NULL, data, len);
}

void cluster_ephemeral(const char *ch, const rt_buf *b, const char *skip)
{
	struct wb w = { 0 };

	if (!cluster_on)
		return;
	wb_u8(&w, MSG_TYPING);
	wb_str(&w, C.self);
	wb_str(&w, ch);
	wb_str(&w, skip ? skip : "");
	wb_bytes(&w, b->data, b->len);
	bus_send(C.b, NULL, w.p, w.n);
	free(w.p);
}

/* ---- ownership ----------------------------------------------------------------- */

static void owner_set(unsigned p, const char *who)
{
	pthread_mutex_lock(&C.mu);
	snprintf(C.owner[p], BUS_HOST_MAX + 1, "%s", who);
	pthread_mutex_unlock(&C.mu);
}

/* One look at partition p's record: follow it, or take p. */
static void own_check(unsigned p, bool lease_ok)
{
	char key[16], owner[BUS_HOST_MAX + 1] = "", pref[BUS_HOST_MAX + 1];
	uint64_t rev = 0;
	bus_status st;

	snprintf(key, sizeof(key), "p%u", p);
	st = bus_key_get(C.b, key, owner, sizeof(owner), &rev);
	if (st == BUS_EMPTY) {
		owner[0] = 0;
		rev = 0;
	} else if (st != BUS_OK) {
		return; /* the bucket does not answer: nothing changes */
	}
	if (owner[0] && strcmp(owner, C.self) && host_live(owner)) {
		owner_set(p, owner);
		C.dead_since[p] = 0;
		clog_lost(p); /* if it was ours */
		return;
	}
	if (!strcmp(owner, C.self)) {
		/* Ours, even while our own lease is late: the log's fence,
		 * not the lease, keeps two owners apart; dropping it on a
		 * slow renewal (a NATS election) would only make every
		 * host's partitions move at once. */
		owner_set(p, C.self);
		C.dead_since[p] = 0;
		if (lease_ok && !cluster_owns(p))
			clog_takeover(p);
		return;
	}
	/* no owner, or a dead one: the preferred live host takes it, once
	 * the owner has been gone for half a lease (an election in the
	 * bucket can hide a live host's lease for a moment) */
	owner_set(p, "");
	if (owner[0]) {
		uint64_t now = rt_now_ms();

		if (!C.dead_since[p])
			C.dead_since[p] = now;
		if (now - C.dead_since[p] < (uint64_t)C.lease_ms / 2)
			return;
	}
	if (!lease_ok || !hosts_preferred(C.h, OWNER_KEY, pref) ||
	    strcmp(pref, C.self))
		return;
	st = bus_key_claim(C.b, key, rev, &rev, owner, sizeof(owner));
	if (st != BUS_OK)
		return; /* another host was quicker: next round follows it */
	plog(PL_INFO, "cluster", "p%u: claimed", p);
	owner_set(p, C.self);
	clog_takeover(p);
}

/* Requests forwarded to a host that is not the owner any more, or has
 * died, or that never answered: UNAVAILABLE, so their clients retry. */
static void pending_sweep(void)
{
	struct pending *dead = NULL;
	uint64_t now = rt_now_ms();

	pthread_mutex_lock(&C.mu);
	for (struct pending **q = &C.pending; *q;) {
		struct pending *g = *q;

		if (strcmp(g->owner, C.owner[g->p]) ||
		    now - g->t_ms > PENDING_MAX_MS) {
			*q = g->next;
			g->next = dead;
			dead = g;
		} else {
			q = &g->next;
		}
	}
	pthread_mutex_unlock(&C.mu);
	while (dead) {
		struct pending *g = dead;

		dead = g->next;
		answer_unavailable(g->conn, true, g->rid, g->op,
				   "the host that owned it went away; "
				   "send it again");
		free(g);
	}
}

static void *owner_main(void *arg)
{
	int64_t every = C.lease_ms / 5;
	uint64_t next_refresh = 0;

	(void)arg;
	if (every < 100)
		every = 100;
	if (every > 1000)
		every = 1000;
	while (!atomic_load(&C.stop)) {
		bool ok = hosts_lease_ok(C.h);
		struct timespec ts = { every / 1000, (every % 1000) * 1000000 };

		for (unsigned p = 0; p < C.n && !atomic_load(&C.stop); p++)
			own_check(p, ok);
		pending_sweep();
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
	C.held_tail = &C.held;
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
	if (clog_start(C.b, nshards, writer)) {
		hosts_stop(C.h);
		bus_close(C.b);
		C.b = NULL;
		return -1;
	}
	cluster_on = true;
	plog(PL_INFO, "cluster", "joined as %s (%s), %u partitions", C.self,
	     o->urls, nshards);
	return 0;
}

int cluster_run(void)
{
	if (!cluster_on)
		return 0;
	if (clog_follow())
		return -1;
	if (bus_listen(C.b, C.self, on_inbox, NULL, &C.inbox) != BUS_OK ||
	    bus_listen(C.b, NULL, on_inbox, NULL, &C.all) != BUS_OK) {
		plog(PL_ERROR, "cluster", "cannot listen for other hosts");
		return -1;
	}
	if (pthread_create(&C.owner_thread, NULL, owner_main, NULL))
		return -1;
	C.owner_started = true;
	return 0;
}

void cluster_quiesce(void)
{
	if (!cluster_on)
		return;
	atomic_store(&C.stop, true);
	if (C.owner_started)
		pthread_join(C.owner_thread, NULL);
	C.owner_started = false;
	bus_unsubscribe(C.inbox);
	bus_unsubscribe(C.all);
	C.inbox = C.all = NULL;
	clog_drain();
}

void cluster_stop(void)
{
	if (!C.b)
		return;
	atomic_store(&C.stop, true);
	if (C.owner_started)
		pthread_join(C.owner_thread, NULL);
	C.owner_started = false;
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
	while (C.pending) {
		struct pending *g = C.pending;

		C.pending = g->next;
		free(g);
	}
	while (C.held) {
		struct held_ans *h = C.held;

		C.held = h->next;
		rt_buf_unref(h->buf);
		free(h);
	}
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
	st->forwarded = atomic_load(&C.forwarded);
	st->served = atomic_load(&C.served);
	st->held = atomic_load(&C.held_n);
	st->unavailable = atomic_load(&C.unavailable);
	clog_get_stats(&ls);
	st->applied = ls.applied;
	st->takeovers = ls.takeovers;
	st->log_bytes = ls.log_bytes;
	st->turns = ls.turns;
	st->failed_turns = ls.fenced_turns;
}
