/*
 * session: the state of a WebSocket session, shared by the files that make
 * it up (each calls only the ones below it and base.c):
 *   session.c     lifecycle, hello, frames: decode a request, dispatch it
 *   sess_read.c   reads answered here from storage (history, events, ...)
 *   sess_write.c  writes: validated here, sent on to the user actor
 *   sess_watch.c  presence.watch: what this connection watches
 *   sess_sub.c    subscriptions: the channels' events for this connection
 *   sess_util.c   request helpers (errors, arguments, channel summaries)
 */
#ifndef PARLEY_SESSION_H
#define PARLEY_SESSION_H

#include <string.h>

#include "actors/actors.h"

enum sess_state { S_NEW, S_ATTACHING, S_READY };

struct sub {
	struct session *sess;
	char ch[ID_CAP];
	uint64_t last_seq; /* newest seq given to the client */
	bool active;
	uint32_t li;       /* index in its sublist */
};

struct sublist {
	char ch[ID_CAP];
	struct sub **v;
	uint32_t n, cap;
};

struct resume_ent {
	char ch[ID_CAP];
	uint64_t seq;
};

struct held {
	struct held *next;
	size_t len;
	bool binary;
	uint8_t data[];
};

/* A presence.watch waiting for the presence shards' answers. */
struct gather {
	struct gather *next;
	uint64_t gen, rid;
	bool has_rid;
	uint32_t n, shards_left;
	struct pw_ent *e; /* sorted by user, like the watched set */
};

/* Requests in flight per connection (docs/protocol.md, Limits): a request
 * the session hands to another actor (M_REQ to the user actor, M_HB,
 * M_WATCH, the directory) is in flight until a barrier posted behind it
 * has come back (session.c, "flow"); one goes out behind every
 * SESS_INFLIGHT_BATCH such requests. At SESS_INFLIGHT_MAX in flight the
 * connection is no longer read (rt_conn_pause) until barriers bring the
 * count down to MAX - BATCH. 256: several barriers' worth, so that a
 * pipelining client whose requests the actors keep up with is not held
 * (a round trip is a few loop turns, a few hundred requests at most),
 * while what one connection can have waiting in the mailboxes stays about
 * 256 messages (a few hundred KiB), not what 256 KiB read turns, one after
 * the other, would post (thousands each). */
#define SESS_INFLIGHT_MAX 256
#define SESS_INFLIGHT_BATCH 64

struct session {
	rt_conn *conn;
	rt_conn_id id;
	struct session *prev, *next;
	uint64_t opened_ms;
	uint8_t state;
	bool attached;
	char ws[ID_CAP], user[ID_CAP];
	bool admin;         /* the token's role claim is "admin" */
	char *name;         /* display name (the id if none): hello's answer */
	uint64_t hello_rid;
	bool hello_has_rid;
	struct resume_ent *resume;
	uint32_t nresume;
	uint64_t *bad_ts;   /* ring of the last bad_frames+1 bad frame times */
	uint32_t bad_n;
	struct held *held;  /* requests that came behind hello, before it was */
	uint32_t nheld;     /* admitted: replayed, in order, once it is */
	size_t held_bytes;
	struct sub **subs;
	uint32_t nsubs, capsubs;
	char (*watch)[ID_CAP]; /* users watched, sorted */
	uint32_t nwatch;
	uint64_t watch_gen;
	struct gather *gathers;
	uint16_t searching; /* search_op's answers still to come */
	/* flow (session.c): requests handed on whose barrier is not home;
	 * of those, the ones behind no barrier yet, and the shards they
	 * went to (a bit each); whether reading is paused (at MAX) */
	uint32_t inflight, uncovered;
	uint64_t sent_to;
	bool paused;
};

static inline struct session *sess_of(rt_conn *c) { return rt_conn_user(c); }

static inline struct session *find_sess(rt_shard *s, rt_conn_id id)
{
	rt_conn *c;

	ASSERT_CONN_HERE(id);
	c = rt_conn_find(s, id);
	return c ? sess_of(c) : NULL;
}

struct req {
	struct shard_state *ss;
	struct session *se; /* NULL for a request that came over HTTP */
	rt_conn *conn;      /* where the answer goes */
	rt_conn_id id;
	const char *ws, *user;
	bool admin;         /* a workspace admin (the token's role claim) */
	const uint8_t *frame;
	size_t len;
	/* the request, decoded once (proto_req_decode: every argument
	 * checked; strings point into the frame's doc, not NUL-terminated) */
	const struct proto_req *q;
	uint64_t rid;
	bool has_rid;
	int op;           /* q->op: enum op and enum proto_op agree */
	uint64_t t_rx_us; /* when the frame arrived */
};

/* A checked id argument (at most PROTO_MAX_ID bytes) into ch[ID_CAP]. */
static inline void sess_id_copy(char *ch, proto_str s)
{
	memcpy(ch, s.s, s.n);
	ch[s.n] = 0;
}

struct idvec {
	char (*v)[ID_CAP];
	uint32_t n, cap;
};

/* sess_util.c */
/* what proto_req_decode checks requests against */
struct proto_limits sess_req_limits(void);
void sess_fail(struct req *r, const char *code, const char *msg);
void sess_ok_empty(struct req *r);
bool sess_can_read(struct req *r, const char *ch, store_channel *rec,
		   store_member *mem, bool *member);
void sess_chinfo(proto_chinfo *ci, const store_channel *rec, const char *user,
		 bool with_member, bool member);
int sess_collect_id(void *arg, const char *id, size_t len); /* idvec */

/* sess_sub.c */
struct sub *sess_sub_find(struct session *se, const char *ch);
void sess_sub_add(struct shard_state *ss, struct session *se, const char *ch,
		  uint64_t after, bool resume);
void sess_sub_remove(struct shard_state *ss, struct session *se,
		     struct sub *sb);

/* sess_watch.c */
uint32_t sess_watch_set(struct session *se, char (*users)[ID_CAP],
			uint32_t n, uint64_t gen);
void sess_op_presence_watch(struct req *r);

/* sess_read.c */
void sess_op_hb(struct req *r);
void sess_op_ch_list(struct req *r);
void sess_op_ch_members(struct req *r);
void sess_op_history(struct req *r);
void sess_op_events(struct req *r);
void sess_op_edits(struct req *r);

/* sess_write.c: validate r, then post it to its user actor */
void sess_forward(struct req *r);
/* A write another host forwarded (cluster.c, any thread): decoded again
 * and on to the user actor, answering proxy (a proxy connection id). */
void sess_forward_remote(rt_conn_id proxy, const char *ws, const char *user,
			 bool admin, const char *ch, const uint8_t *frame,
			 size_t len);

#endif
