/*
 * cluster_core: what the actors call of a cluster (cluster_core.h), and the
 * state it keeps: the partitions' owners and log positions, proxy
 * connection ids, forwarded requests and their answers. It calls nothing
 * above base.c: the rest of the cluster (cluster.c, cluster_log.c,
 * cluster_presence.c) is built on it.
 *
 * Messages between hosts (bus_send, at most once, in order per sender),
 * after their first byte (CLUSTER_MSG_*):
 *   REQ      str origin host, u64 conn, u8 has_rid, u64 rid, u8 op,
 *            str ws, str user, u8 admin, str ch, bytes frame
 *   DELIVER  u8 partition, u64 log position, u64 conn, bytes frame
 *   TYPING   str host, str ch, str skip, bytes frame (to every host)
 *   DIRNAME  str ws, str user, str name (a request: answered once the
 *            directory's owner has it)
 *   APPLIED  str host, u8 partition, u64 log position (to its owner)
 *   DIRSEEN  str ws, str user, u64 last seen ms (to the directory's owner)
 *   PRESENCE, PCHOSEN: cluster_presence.c (to every host)
 */
#include "actors/cluster_core.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/base.h"
#include "actors/cluster_wire.h"
#include "proto/proto.h"
#include "proto/reply.h"
#include "proto/req.h"

#define PROXY_HOSTS 127

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

/* answered UNAVAILABLE after it, whatever: more than a NATS election and
 * a partition's takeover take */
#define PENDING_MAX_MS 20000
#define SWEPT_KEEP_MS 300000 /* a late answer to one of those is dropped */
#define DIR_WAIT_MS 2000 /* a hello waits this long for the directory */

static struct {
	bus *b;
	char self[BUS_HOST_MAX + 1];
	unsigned n;
	pthread_mutex_t mu; /* owners, proxy hosts, held, pending */
	char owner[RT_MAX_SHARDS][BUS_HOST_MAX + 1];
	char phost[PROXY_HOSTS][BUS_HOST_MAX + 1];
	unsigned nphost;
	struct held_ans *held, **held_tail;
	struct pending *pending, *swept;
	_Atomic bool owned[RT_MAX_SHARDS];
	_Atomic uint64_t logpos[RT_MAX_SHARDS], applied[RT_MAX_SHARDS];
	/* shard p's thread only: channels its turn changed (reload) */
	struct {
		char (*v)[ID_CAP];
		uint32_t n, cap;
	} changed[RT_MAX_SHARDS];
	_Atomic uint64_t forwarded, held_n, unavailable;
	char live[64][BUS_HOST_MAX + 1];
	unsigned nlive;
} C = { .mu = PTHREAD_MUTEX_INITIALIZER, .held_tail = &C.held };

bool cluster_on;

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

rt_conn_id core_proxy(const char *host, rt_conn_id conn)
{
	int hidx = phost_index(host);

	return hidx < 0 ? 0 : proxy_make(hidx, conn);
}

/* ---- answers to other hosts' connections ------------------------------------ */

void cluster_deliver(rt_conn_id proxy, rt_buf *b)
{
	char host[BUS_HOST_MAX + 1];
	rt_conn_id conn = cluster_proxy_origin(proxy, host);
	rt_shard *self = rt_self();
	unsigned p = self ? rt_shard_id(self) : 0;
	struct wbuf w = { 0 };

	w_u8(&w, CLUSTER_MSG_DELIVER);
	w_u8(&w, (uint8_t)p);
	/* this shard's log as far as it went: the origin shows the answer
	 * once its own store has the write it answers */
	w_u64(&w, self ? atomic_load(&C.logpos[p]) : 0);
	w_u64(&w, conn);
	w_bytes(&w, b->data, b->len);
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
	while (C.held && atomic_load(&C.applied[C.held->p]) >= C.held->sseq) {
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
/* Takes (conn, rid) off list; true if it was there. Under C.mu. */
static bool pending_take(struct pending **list, rt_conn_id conn, uint64_t rid)
{
	for (struct pending **q = list; *q; q = &(*q)->next) {
		if ((*q)->conn == conn && (*q)->rid == rid) {
			struct pending *g = *q;

			*q = g->next;
			free(g);
			return true;
		}
	}
	return false;
}

/* A frame for conn came from an owner. If it answers a pending request
 * (a "res" with its rid), that request is not pending any more; if it
 * answers one this host answered UNAVAILABLE already (its owner was
 * thought gone), it is dropped: a request gets one answer. false: drop. */
static bool answered(rt_conn_id conn, const void *d, size_t n)
{
	proto_doc doc;
	const char *t;
	uint32_t tl;
	uint64_t rid;
	bool keep = true;

	if ((!C.pending && !C.swept) || proto_decode(&doc, d, n) != PROTO_OK)
		return true;
	if (proto_get_str(&doc.root, "t", &t, &tl) == 0 && tl == 3 &&
	    !memcmp(t, "res", 3) && proto_get_uint(&doc.root, "rid", &rid) == 0) {
		pthread_mutex_lock(&C.mu);
		if (!pending_take(&C.pending, conn, rid))
			keep = !pending_take(&C.swept, conn, rid);
		pthread_mutex_unlock(&C.mu);
	}
	proto_doc_free(&doc);
	return keep;
}

void core_on_deliver(struct rbuf *r)
{
	unsigned p = r_u8(r);
	uint64_t sseq = r_u64(r);
	rt_conn_id conn = r_u64(r);
	size_t n;
	const void *d = r_bytes(r, &n);
	struct held_ans *h;

	if (r->bad || p >= C.n || rt_conn_shard(conn) >= rt_nshards())
		return;
	if (!answered(conn, d, n))
		return;
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
	if (atomic_load(&C.applied[p]) < sseq)
		atomic_fetch_add(&C.held_n, 1);
	cluster_release_held();
}

/* ---- forwarded writes -------------------------------------------------------- */

void core_unavailable(rt_conn_id conn, bool has_rid, uint64_t rid,
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

void cluster_forward(unsigned p, rt_conn_id conn, bool has_rid, uint64_t rid,
		     uint8_t op, const char *ws, const char *user, bool admin,
		     const char *ch, const uint8_t *frame, size_t len)
{
	char owner[BUS_HOST_MAX + 1];
	struct wbuf w = { 0 };

	pthread_mutex_lock(&C.mu);
	memcpy(owner, C.owner[p], sizeof(owner));
	pthread_mutex_unlock(&C.mu);
	if (!owner[0] || !strcmp(owner, C.self)) {
		core_unavailable(conn, has_rid, rid, op,
				   "no host owns this yet; try again");
		return;
	}
	w_u8(&w, CLUSTER_MSG_REQ);
	w_str(&w, C.self);
	w_u64(&w, conn);
	w_u8(&w, has_rid);
	w_u64(&w, rid);
	w_u8(&w, op);
	w_str(&w, ws);
	w_str(&w, user);
	w_u8(&w, admin);
	w_str(&w, ch);
	w_bytes(&w, frame, len);
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
		core_unavailable(conn, has_rid, rid, op,
				   "the cluster cannot be reached");
	free(w.p);
}

void cluster_dir_seen(unsigned p, const char *ws, const char *user,
		      uint64_t seen_ms)
{
	char owner[BUS_HOST_MAX + 1];
	struct wbuf w = { 0 };

	pthread_mutex_lock(&C.mu);
	memcpy(owner, C.owner[p], sizeof(owner));
	pthread_mutex_unlock(&C.mu);
	if (!owner[0] || !strcmp(owner, C.self))
		return;
	w_u8(&w, CLUSTER_MSG_DIRSEEN);
	w_str(&w, ws);
	w_str(&w, user);
	w_u64(&w, seen_ms);
	bus_send(C.b, owner, w.p, w.n);
	free(w.p);
}

struct dir_wait {
	unsigned then_shard;
	rt_msg *then;
};

static void dir_answered(void *arg, bus_status st, const void *data,
			 size_t len)
{
	struct dir_wait *w = arg;

	(void)st; /* answered, timed out or nobody serves: go on all the same */
	(void)data;
	(void)len;
	if (w->then)
		rt_post(w->then_shard, w->then);
	free(w);
}

void cluster_dir_hello(unsigned p, const char *ws, const char *user,
		       const char *name, unsigned then_shard, rt_msg *then)
{
	char owner[BUS_HOST_MAX + 1];
	struct wbuf w = { 0 };
	struct dir_wait *dw;

	pthread_mutex_lock(&C.mu);
	memcpy(owner, C.owner[p], sizeof(owner));
	pthread_mutex_unlock(&C.mu);
	dw = calloc(1, sizeof(*dw));
	if (!dw)
		abort();
	dw->then_shard = then_shard;
	dw->then = then;
	if (!owner[0] || !strcmp(owner, C.self)) {
		dir_answered(dw, BUS_OK, NULL, 0); /* no owner now: the next
						    * hello tells it */
		return;
	}
	w_u8(&w, CLUSTER_MSG_DIRNAME);
	w_str(&w, ws);
	w_str(&w, user);
	w_str(&w, name);
	if (bus_request(C.b, owner, w.p, w.n, DIR_WAIT_MS, dir_answered, dw) !=
	    BUS_OK)
		dir_answered(dw, BUS_ERROR, NULL, 0);
	free(w.p);
}

void cluster_broadcast(const void *data, size_t len)
{
	if (C.b)
		bus_send(C.b, NULL, data, len);
}

void cluster_ephemeral(const char *ch, const rt_buf *b, const char *skip)
{
	struct wbuf w = { 0 };

	if (!cluster_on)
		return;
	w_u8(&w, CLUSTER_MSG_TYPING);
	w_str(&w, C.self);
	w_str(&w, ch);
	w_str(&w, skip ? skip : "");
	w_bytes(&w, b->data, b->len);
	bus_send(C.b, NULL, w.p, w.n);
	free(w.p);
}

void core_owner_set(unsigned p, const char *who)
{
	pthread_mutex_lock(&C.mu);
	snprintf(C.owner[p], BUS_HOST_MAX + 1, "%s", who);
	pthread_mutex_unlock(&C.mu);
}

/* Requests forwarded to a host that is not the owner any more, or has
 * died, or that never answered: UNAVAILABLE, so their clients retry. */
void core_pending_sweep(bool all)
{
	struct pending *dead = NULL, **tail = &dead;
	uint64_t now = rt_now_ms();

	pthread_mutex_lock(&C.mu);
	/* answered UNAVAILABLE long ago: a late answer will not come */
	for (struct pending **q = &C.swept; *q;) {
		struct pending *g = *q;

		if (now - g->t_ms > SWEPT_KEEP_MS) {
			*q = g->next;
			free(g);
		} else {
			q = &g->next;
		}
	}
	for (struct pending **q = &C.pending; *q;) {
		struct pending *g = *q;

		if (all || strcmp(g->owner, C.owner[g->p]) ||
		    now - g->t_ms > PENDING_MAX_MS) {
			*q = g->next;
			g->next = NULL;
			*tail = g;
			tail = &g->next;
		} else {
			q = &g->next;
		}
	}
	pthread_mutex_unlock(&C.mu);
	while (dead) {
		struct pending *g = dead;

		dead = g->next;
		core_unavailable(g->conn, true, g->rid, g->op,
				   all ? "the cluster's connection was lost; "
					 "send it again"
				       : "the host that owned it went away; "
					 "send it again");
		g->t_ms = now;
		pthread_mutex_lock(&C.mu);
		g->next = C.swept;
		C.swept = g;
		pthread_mutex_unlock(&C.mu);
	}
}


/* ---- partitions ------------------------------------------------------------- */

void core_init(bus *b, const char *self, unsigned n)
{
	C.b = b;
	snprintf(C.self, sizeof(C.self), "%s", self);
	C.n = n;
}

bus *core_bus(void)
{
	return C.b;
}

unsigned core_parts(void)
{
	return C.n;
}

bool cluster_owns(unsigned p)
{
	return !cluster_on || atomic_load(&C.owned[p]);
}

bool core_set_owned(unsigned p, bool on)
{
	return atomic_exchange(&C.owned[p], on);
}

void core_set_logpos(unsigned p, uint64_t sseq)
{
	atomic_store(&C.logpos[p], sseq);
}

uint64_t core_applied(unsigned p)
{
	return atomic_load(&C.applied[p]);
}

void core_set_applied(unsigned p, uint64_t sseq)
{
	atomic_store(&C.applied[p], sseq);
}

void core_owner_get(unsigned p, char out[BUS_HOST_MAX + 1])
{
	pthread_mutex_lock(&C.mu);
	memcpy(out, C.owner[p], BUS_HOST_MAX + 1);
	pthread_mutex_unlock(&C.mu);
}

void cluster_chan_changed(struct shard_state *ss, const char *ch)
{
	unsigned p = ss->id;

	if (!cluster_on)
		return;
	for (uint32_t i = 0; i < C.changed[p].n; i++)
		if (!strcmp(C.changed[p].v[i], ch))
			return;
	if (C.changed[p].n == C.changed[p].cap) {
		C.changed[p].cap = C.changed[p].cap ? 2 * C.changed[p].cap : 16;
		C.changed[p].v = realloc(C.changed[p].v, C.changed[p].cap *
					 sizeof(*C.changed[p].v));
		if (!C.changed[p].v)
			abort();
	}
	snprintf(C.changed[p].v[C.changed[p].n++], ID_CAP, "%s", ch);
}

uint32_t core_changed(unsigned p, const char (**v)[ID_CAP])
{
	uint32_t n = C.changed[p].n;

	*v = (const char (*)[ID_CAP])C.changed[p].v;
	C.changed[p].n = 0; /* read once, by the turn that changed them */
	return n;
}

void core_set_live(char ids[][BUS_HOST_MAX + 1], unsigned n)
{
	pthread_mutex_lock(&C.mu);
	if (n > 64)
		n = 64;
	memcpy(C.live, ids, n * sizeof(C.live[0]));
	C.nlive = n;
	pthread_mutex_unlock(&C.mu);
}

unsigned core_live(char ids[][BUS_HOST_MAX + 1], unsigned max)
{
	unsigned n;

	pthread_mutex_lock(&C.mu);
	n = C.nlive < max ? C.nlive : max;
	memcpy(ids, C.live, n * sizeof(C.live[0]));
	pthread_mutex_unlock(&C.mu);
	return n;
}

void core_counters(uint64_t *forwarded, uint64_t *held, uint64_t *unavailable)
{
	*forwarded = atomic_load(&C.forwarded);
	*held = atomic_load(&C.held_n);
	*unavailable = atomic_load(&C.unavailable);
}

void core_fini(void)
{
	pthread_mutex_lock(&C.mu);
	while (C.pending) {
		struct pending *g = C.pending;

		C.pending = g->next;
		free(g);
	}
	while (C.swept) {
		struct pending *g = C.swept;

		C.swept = g->next;
		free(g);
	}
	while (C.held) {
		struct held_ans *h = C.held;

		C.held = h->next;
		rt_buf_unref(h->buf);
		free(h);
	}
	C.held_tail = &C.held;
	pthread_mutex_unlock(&C.mu);
	for (unsigned p = 0; p < RT_MAX_SHARDS; p++) {
		free(C.changed[p].v);
		C.changed[p].v = NULL;
		C.changed[p].n = C.changed[p].cap = 0;
	}
	C.b = NULL;
}
