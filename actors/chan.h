/*
 * chan: the channel actor's state, shared by the files that make it up:
 *   chan_load.c  loading, eviction, the checks every request makes
 *   commit.c     the shard's commit pipeline (effects, turn end, commit)
 *   chan_sub.c   subscriptions (M_SUB, M_UNSUB)
 *   chan_msg.c   a message's state (overlay) and its changes: edit,
 *                delete, react
 *   channel.c    the requests (M_REQ) and their dispatch
 *   receipts.c   DMs: delivered and read positions (delivered, receipts)
 * The invariants are in channel.c's header comment.
 */
#ifndef PARLEY_CHAN_H
#define PARLEY_CHAN_H

#include <stdlib.h>
#include <string.h>

#include "actors/actors.h"

struct member {
	char user[ID_CAP];
	store_member m;
	/* Mentions of this user in the channel so far (the count the next
	 * mention key carries), MENTION_UNKNOWN until first needed. */
	uint64_t mention_cum;
	/* receipts.c (DMs): the highest seq a device of this user said it
	 * has received, read from storage on first need (dlv_known) */
	uint64_t dlv_seq;
	bool dlv_known;
	bool owner; /* role "owner" ('O' record; chan_admin.c) */
};

#define MENTION_UNKNOWN UINT64_MAX

struct waiter {
	rt_conn_id conn;
	uint64_t rid;
	bool has_rid;
};

/* A send whose batch is not durable yet: a retry with the same cmid waits
 * for it instead of making a second event. */
struct pcmid {
	char key[ID_CAP + PROTO_MAX_CMID + 1]; /* user \0 cmid */
	size_t klen;
	uint64_t seq, ts;
	struct waiter *w;
	uint32_t nw;
};

/* The newest state of a message changed by a batch not yet durable (a
 * thread root's reply count, an edit, a reaction): later changes build on
 * it, not on storage. */
struct ov {
	uint8_t key[8];
	uint64_t seq, root; /* the message, and its thread root (0: none) */
	uint8_t *bytes;
	size_t len;
	uint32_t pending;
	/* edits of this message in batches not yet durable: a delete must
	 * blank their events too, and storage does not have them yet */
	struct pedit { uint64_t seq, ts, cum; } *pedits;
	uint32_t npedits;
};

static inline void ov_free(struct ov *o)
{
	free(o->bytes);
	free(o->pedits);
	free(o);
}

struct chan {
	char id[ID_CAP];
	store_channel rec;
	uint64_t next_seq, durable_seq, msgs, nmembers;
	smap members;          /* user -> struct member */
	smap cmids;            /* pending sends: user\0cmid -> struct pcmid */
	smap ov;               /* seq8 -> struct ov */
	smap typing;           /* user -> last broadcast ms (in the pointer) */
	uint32_t online[RT_MAX_SHARDS];
	uint32_t pending;      /* effects not yet run */
	uint32_t pending_events; /* of them, events: next_seq == durable_seq +
				  * pending_events + 1 unless broken */
	bool broken;
	bool stat_dirty;       /* 'S' to write at the end of this turn */
	struct chan *dirty_next;
	uint64_t touched_ms;   /* last request or subscription (eviction) */
	store_chcfg cfg;       /* topic, archived, post ('G'; chan_admin.c) */
	uint32_t nowners;      /* members with owner set */
};

static inline struct member *member_of(struct chan *c, const char *user)
{
	return smap_get(&c->members, user, strlen(user));
}

/* chan_load.c */
struct chan *chan_get(struct shard_state *ss, const char *id); /* or load */
struct chan *chan_new(struct shard_state *ss, const store_channel *rec);
/* the channel's state from storage again (invariant 4) */
int chan_reload(struct chan *c);
/* an error answer to r, from the channel's shard */
void chan_fail(const struct m_req *r, const char *code, const char *msg);
/* r's channel as r's user may see it, or NULL (answered NOT_FOUND) */
struct chan *chan_visible(struct shard_state *ss, struct m_req *r);
bool chan_member_or_fail(struct chan *c, const struct m_req *r);
struct member *chan_add_member(struct shard_state *ss, struct chan *c,
			       const char *user);
void chan_move_marker(struct shard_state *ss, struct chan *c,
		      struct member *mb, uint64_t seq);

/* chan_sub.c: one M_FANOUT of b (a reference each) to every shard with
 * c's subscribers online; seq 0 for a frame that is not an event. */
void fanout(struct chan *c, uint64_t seq, rt_buf *b, const char *skip);

/* chan_msg.c */
int chan_state_decode(proto_doc *d, const void *bytes, size_t len);
struct ov *chan_msg_state(struct chan *c, uint64_t root, uint64_t seq);
/* 'A' id \0 ch \0 seq8: message seq of ch carries file id (on), or no
 * more (deleted). chan_msg.c */
void chan_file_share(store_batch *b, const char *ch, proto_str id,
		     uint64_t seq, bool on);
void chan_ov_set(struct shard_state *ss, struct chan *c, struct ov *o,
		 const proto_out *out);
void chan_ov_release(struct chan *c, struct ov *o);
void chan_op_edit(struct shard_state *ss, struct m_req *r);
void chan_op_delete(struct shard_state *ss, struct m_req *r);
void chan_op_react(struct shard_state *ss, struct m_req *r);

/* receipts.c: delivered and read positions in DMs */
void chan_op_delivered(struct shard_state *ss, struct m_req *r);
void chan_op_receipts(struct shard_state *ss, struct m_req *r);
/* mb's read marker of c just moved (read, send): tell the others */
void chan_receipt_read(struct shard_state *ss, struct chan *c,
		       const struct member *mb);
/* chan_admin.c: names, roles and moderation (issue 13) */
/* settings and owners from storage (chan_load.c; chan_reload calls it) */
int chan_roles_load(struct chan *c);
/* r (ch.create, dm.open...) is refused: give its name reservation back */
void names_release_req(const struct m_req *r);
/* a new channel c made by r (ch.create, stage 2): owner, settings, the
 * name's registry entry, in this turn's batch */
void chan_roles_on_create(struct shard_state *ss, struct chan *c,
			  const struct m_req *r);
/* may r's user post (top_level: a message that is not a thread reply;
 * false: edit, react) in c? false: answered FORBIDDEN */
bool chan_may_post(struct chan *c, const struct m_req *r, bool top_level);
/* is r's user a moderator of c (an owner, or a workspace admin)? */
bool chan_is_moderator(struct chan *c, const struct m_req *r);
void chan_op_info(struct shard_state *ss, struct m_req *r);
/* true: r was passed on (to the name registry); the caller must not free it */
bool chan_op_set(struct shard_state *ss, struct m_req *r);
void chan_op_role(struct shard_state *ss, struct m_req *r);
void chan_op_kick(struct shard_state *ss, struct m_req *r);

#endif
