/*
 * base: the low layer of actors/. What every actor uses and nothing else:
 * the server-wide settings, the mailbox messages and their allocation,
 * the per-shard state, the stage counters, and the helpers that send a
 * frame or an error to a connection. base.c calls no other file of
 * actors/ (scripts/actors-graph.sh checks it); the actors stand on it and
 * the dispatcher (server.c) stands on them.
 *
 * Ownership, asserted (assert(): on in the Debug/ASan build, compiled out
 * under NDEBUG, i.e. the RelWithDebInfo release and TSan builds):
 *   - a channel actor runs on its own shard: chan_shard(id) == ss->id;
 *   - a connection is touched only on its shard: rt_conn_shard(id) == self;
 *   - a mailbox is drained by its owner: on_msg runs on the shard the
 *     message was posted to, which is the home of what it names;
 *   - the seq invariants of the commit path (commit.c).
 */
#ifndef PARLEY_BASE_H
#define PARLEY_BASE_H

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "actors/smap.h"
#include "proto/proto.h"
#include "proto/reply.h"
#include "runtime/rt.h"
#include "storage/store.h"

#define ID_CAP (PROTO_MAX_ID + 1)

/* ---- server-wide, read-only after start ---------------------------------- */

struct limits {
	uint32_t max_frame, max_body, max_name, max_members, max_dm,
		max_devices, rate_per_s, rate_burst, hello_ms, resume_max,
		max_mentions, hb_ms, bad_frames, bad_window_ms, chan_idle_ms;
	uint64_t max_outbuf;
	/* presence: a device is active for away_ms after its last
	 * heartbeat; a change is told to watchers after grace_ms (going
	 * offline: so a quick reconnect does not flap) or coalesce_ms
	 * (anything else); max_watch users per presence.watch */
	uint32_t away_ms, grace_ms, coalesce_ms, max_watch;
};

struct search;

struct server {
	store *st;
	struct search *sx; /* full-text index; NULL with --no-search */
	uint8_t key[512];
	size_t key_len;
	/* DM ids' key: DATA/dm.key, made on first start. Not the JWT secret,
	 * so that rotating that secret (an operator's routine) keeps every
	 * DM under its id. */
	uint8_t dm_key[512];
	size_t dm_key_len;
	struct limits lim;
	uint64_t started_ms;
	int storage_failed; /* atomic: a commit failed; /healthz says so */
};

extern struct server srv;

unsigned chan_shard(const char *ch);
unsigned user_shard(const char *ws, const char *user);

/* The key "a \0 b" of the actors' maps (ws \0 user, ws \0 name) into k,
 * which has room for both; returns its length. */
static inline size_t pair_key(char *k, const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	memcpy(k, a, la);
	k[la] = 0;
	memcpy(k + la + 1, b, lb);
	return la + 1 + lb;
}

/* ---- operations ---------------------------------------------------------- */

/* The ops the server carries out: the first OP__COUNT of enum proto_op
 * (proto/req.h), in its order (session.c asserts it); proto_op_name()
 * names them. */
enum op {
	OP_HELLO, OP_HB, OP_CH_CREATE, OP_DM_OPEN, OP_CH_JOIN, OP_CH_LEAVE,
	OP_CH_INVITE, OP_CH_LIST, OP_CH_MEMBERS, OP_SEND, OP_HISTORY,
	OP_EVENTS, OP_TYPING, OP_READ, OP_EDIT, OP_EDITS, OP_DELETE,
	OP_REACT, OP_PRESENCE_SET, OP_PRESENCE_WATCH, OP_SEARCH, OP__COUNT
};

/* ---- mailbox messages ---------------------------------------------------- */

enum msg_type {
	M_REQ = 1,    /* a request on its way to a user or channel actor */
	M_DELIVER,    /* a frame for one connection (optionally close after) */
	M_FANOUT,     /* a frame for every local subscriber of a channel */
	M_SUB,        /* a connection wants a channel's events */
	M_SUBACK,     /* ... here is what it missed; live from now on */
	M_UNSUB,      /* a connection stopped listening to a channel */
	M_ATTACH,     /* a device of a user authenticated */
	M_ATTACH_RES, /* ... and may stay (or not: 4029) */
	M_DETACH,     /* a device of a user went away */
	M_USER_CHAN,  /* channel -> user actor: membership changed, tell devices */
	M_CONN_CHAN,  /* user actor -> device's shard: the same, for one conn */
	M_COMMIT,     /* storage: a batch of this shard is durable (or failed) */
	M_CALL,       /* run fn(ss, msg) on the destination shard */
	M_WATCH,      /* session -> presence actors: watch / unwatch users */
	M_WATCH_RES,  /* ... their states now */
	M_PRESENCE,   /* presence actor -> watchers' shard: a change */
	M_HB,         /* session -> presence actor: a device's heartbeat */
};

struct shard_state;

/* A closure for another shard: fn runs there and owns m (frees it). */
struct m_call {
	rt_msg h;
	void (*fn)(struct shard_state *ss, struct m_call *m);
	void *arg;
};

struct m_req {
	rt_msg h;
	rt_conn_id conn;
	uint64_t rid;
	bool has_rid;
	uint8_t op;
	uint8_t stage; /* 0: to the user actor, 1: to the channel actor */
	uint64_t t_rx_us; /* when the frame arrived (latency metrics) */
	uint64_t t0_us;   /* when the session posted it */
	uint64_t t_chan_us; /* when the channel actor took it (0: before) */
	char ws[ID_CAP], user[ID_CAP], ch[ID_CAP];
	bool admin; /* the requester is a workspace admin (token claim) */
	/* The request, decoded once by the session (proto_req_decode) and
	 * deep-copied with proto_req_copy: its strings and lists live in
	 * tail (NUL-terminated). No actor past the session sees the frame. */
	struct proto_req q;
	uint64_t tail[]; /* 8-byte aligned, as proto_req_copy wants */
};

struct m_deliver {
	rt_msg h;
	rt_conn_id conn;
	rt_buf *buf;         /* may be NULL (close only) */
	uint16_t close_code; /* 0 = keep open */
};

struct m_fanout {
	rt_msg h;
	char ch[ID_CAP];
	uint64_t seq;  /* 0: not a channel event (member, typing) */
	rt_buf *buf;
	char skip_user[ID_CAP]; /* "" = nobody skipped */
	/* true: no frame (buf NULL); skip_user's devices here stop following
	 * the channel (it left or was kicked), before any later event of the
	 * channel reaches this shard */
	bool drop;
};

struct m_sub {
	rt_msg h;
	char ch[ID_CAP], ws[ID_CAP], user[ID_CAP];
	rt_conn_id conn;
	uint64_t after; /* deliver events with seq > after */
	bool resume;    /* the client asked: a big gap gives a gap notice */
};

struct m_suback {
	rt_msg h;
	char ch[ID_CAP];
	rt_conn_id conn;
	uint64_t last_seq; /* live events start after this */
	bool denied;       /* not a member (any more) */
	uint32_t n;
	rt_buf *frames[];  /* catch-up events in order, or one gap notice */
};

struct m_unsub {
	rt_msg h;
	char ch[ID_CAP];
};

struct m_attach {
	rt_msg h;
	rt_conn_id conn;
	char ws[ID_CAP], user[ID_CAP];
	bool ok; /* M_ATTACH_RES */
};

enum chan_action { ACT_JOIN, ACT_LEAVE, ACT_INVITE, ACT_FRAME };
extern const char *const action_names[];

struct m_user_chan {
	rt_msg h;
	char ws[ID_CAP], user[ID_CAP], ch[ID_CAP];
	uint8_t action;
	uint64_t after;    /* join/invite: events after this are theirs */
	rt_buf *frame;     /* what to tell each device (member / read) */
	rt_conn_id except; /* ACT_FRAME: the device that caused it */
	rt_conn_id conn;   /* M_CONN_CHAN: the device */
};

struct commit;
struct m_commit {
	rt_msg h;
	struct commit *c;
	int status;
};

void *msg_new(size_t size, uint16_t type); /* zeroed */
void msg_free(rt_msg *m);                  /* drops payload references */

/* ---- per-shard state ----------------------------------------------------- */

/* ---- per-stage latency: /metrics parley_stage_seconds ------------------- */

/* The path of a request that commits, cut where it changes hands. Sampled
 * once per request (ack stages) or once per delivery (fan-out stages). */
enum stage {
	ST_DECODE,        /* frame in -> request posted by the session */
	ST_TO_CHANNEL,    /* posted -> channel actor has it (via the user actor) */
	ST_TO_COMMIT,     /* channel actor -> its batch handed to storage */
	ST_WAL_SYNC,      /* handed -> synced write returned (sync thread) */
	ST_AFTER_SYNC,    /* synced -> the channel's shard runs the effects */
	ST_ACK_WRITE,     /* ack posted -> written to the sender's socket */
	ST_FANOUT_WRITE,  /* event posted -> written to a member's socket */
	ST_ACK_TOTAL,     /* frame in -> ack written */
	ST_DELIVER_TOTAL, /* frame in -> event written to a member's socket */
	ST__COUNT
};
/* Finite buckets; bound i is 2^(i/2) us for even i, 1.5 * 2^((i-1)/2) us
 * for odd i (1, 1.5, 2, 3, 4, 6, 8 us ... 67 s); then +Inf. Bursts take
 * seconds: the top finite bucket must hold them. */
#define ST_NB 53
extern const char *const stage_names[ST__COUNT];
double stage_bound_us(unsigned i);

/* rt_buf kinds: what the transport's on_sent reports */
enum { BUF_ACK = 1, BUF_EVENT = 2 };

struct effect;
struct session;

/* Pre-hello deadline queue (session.c): connections in accept order. */
struct newbie {
	rt_conn_id id;
	uint64_t deadline;
};

struct shard_state {
	unsigned id;
	store_batch *batch;     /* this turn's writes */
	struct effect *fx;      /* what to do once they are durable */
	size_t nfx, capfx;
	uint64_t batch_t0;      /* mono us when the batch got its first write */
	uint64_t commits_inflight;
	smap chans;             /* channel actors owned here */
	void *chan_dirty;       /* channels whose 'S' this turn changed */
	smap users;             /* user actors owned here */
	smap presence;          /* presence actors owned here */
	smap names;             /* channel names reserved, in flight
				 * (chan_admin.c: ws \0 lname -> pname) */
	smap dirs;              /* directory actors owned here (directory.c) */
	smap urecs;             /* users' push records in flight (pushers.c) */
	struct presence **pdue; /* those with a change waiting (rt_timer_in) */
	uint32_t npdue, cappdue;
	smap subs;              /* channel -> local subscriptions */
	struct session *sessions; /* all sessions of this shard */
	struct newbie *nq;        /* ring: sessions still to say hello */
	uint32_t nq_head, nq_len, nq_cap;
	uint64_t chan_next_scan;  /* chan_tick: next eviction scan (ms) */
	uint64_t user_next_sweep; /* user_tick: next idle-user sweep (ms) */
	proto_out out;          /* scratch encoder */

	/* counters for /metrics: written by this shard, read relaxed */
	uint64_t events, deliveries, acks, requests, bad_frames, rate_limited,
		auth_failures, chans_loaded;
	uint64_t lat_commit[16]; /* request -> durable, bucket i: <= 2^i*64 us */
	uint64_t lat_commit_sum_us; /* their sum, for _sum */
	uint64_t st_hist[ST__COUNT][ST_NB + 1];
	uint64_t st_sum_us[ST__COUNT];
};

/* ---- ownership asserts (see the top of this file) --------------------- */

/* This thread is shard ss's. */
#define ASSERT_ON_SHARD(ss) \
	assert(rt_self() && rt_shard_id(rt_self()) == (ss)->id)
/* Connection id is touched on its own shard, this one. */
#define ASSERT_CONN_HERE(id) \
	assert(rt_self() && rt_conn_shard(id) == rt_shard_id(rt_self()))
/* Channel ch's actor runs here: on its own shard, which is ss. */
#define ASSERT_CHAN_HERE(ss, ch) \
	assert(chan_shard(ch) == (ss)->id && rt_self() && \
	       rt_shard_id(rt_self()) == (ss)->id)
/* User (ws, user)'s actors (user, presence) run here. */
#define ASSERT_USER_HERE(ss, ws, user) \
	assert(user_shard(ws, user) == (ss)->id && rt_self() && \
	       rt_shard_id(rt_self()) == (ss)->id)

/* Count one sample of stage st on this shard (only its own thread writes). */
void stage_add(struct shard_state *ss, unsigned st, uint64_t us);

struct shard_state *shard_state(void);
struct shard_state *shard_state_new(rt_shard *s); /* on_start */
struct shard_state *shard_state_of(unsigned shard);

/* Encode-and-send helpers (on the session's own shard) */
void reply_err(rt_conn *c, bool has_rid, uint64_t rid, const char *op,
	       const char *code, const char *msg, uint64_t retry_ms);
/* From any shard: send a frame (out's bytes) to a connection anywhere. */
void send_to_conn(rt_conn_id conn, const proto_out *o);
/* Where send_buf_to_conn sends a proxy connection id's frames (a
 * connection on another host of a cluster): set by cluster.c when it
 * joins (cluster_deliver); NULL: dropped. */
extern void (*base_proxy_send)(rt_conn_id conn, rt_buf *b);
void send_buf_to_conn(rt_conn_id conn, rt_buf *b); /* takes b's reference */
/* An error reply for a request that reached another shard. */
void reply_err_remote(const struct m_req *r, const char *code, const char *msg,
		      uint64_t retry_ms);

/* ---- presence messages (presence.c <-> session) ------------------------- */

enum pstatus { PS_OFFLINE, PS_ONLINE, PS_AWAY, PS_DND, PS_INVISIBLE };

enum { PW_ADD = 1, PW_DEL = 2, PW_REPORT = 4 };
struct pw_ent {
	char user[ID_CAP];
	uint8_t flags;  /* M_WATCH: PW_*; M_WATCH_RES: unused */
	uint8_t status; /* M_WATCH_RES */
	uint64_t since; /* M_WATCH_RES */
};
/* M_WATCH and M_WATCH_RES: one per presence shard a watch concerns */
struct m_watch {
	rt_msg h;
	rt_conn_id conn;
	uint64_t gen;      /* which presence.watch of the connection */
	char ws[ID_CAP];
	uint32_t n;
	struct pw_ent e[];
};
/* M_PRESENCE: a change, for the watchers on one shard */
struct m_presence {
	rt_msg h;
	rt_buf *buf;       /* the encoded presence frame */
	char user[ID_CAP];
	uint8_t status;
	uint64_t since;
	uint32_t n;
	rt_conn_id conns[];
};

#endif
