/*
 * channel: one actor per channel, on the shard the channel id hashes to. The
 * only writer of its channel: it checks membership and rights, assigns seq,
 * encodes each event once, and puts everything the event changes into the
 * shard's batch for this loop turn.
 *
 * This file: its requests. Accepts M_REQ ch.create, dm.open, ch.join,
 * ch.leave, ch.invite, send, read, typing (already validated by the
 * session, rate-limited by the user actor); edit, delete and react are
 * dispatched to chan_msg.c. The rest of the actor (chan.h): chan_load.c
 * (memory, checks), chan_sub.c (M_SUB, M_UNSUB), commit.c (M_COMMIT: a
 * batch of this shard is durable, its effects run in order).
 *
 * Invariants:
 *   1. next_seq - 1 >= durable_seq: seqs are assigned at request time, in
 *      order; a batch reaches the WAL in the order it was made, so durable
 *      seqs grow one by one and every seq is used exactly once.
 *   2. Nothing leaves the actor before its batch is durable: acks,
 *      fan-out and membership notices are effects run on M_COMMIT.
 *   3. online[s] counts the subscriptions of shard s (M_SUB minus
 *      M_UNSUB); fan-out posts one M_FANOUT per shard with online[s] > 0,
 *      holding the one encoded frame.
 *   4. If a commit fails, the seqs it held were never acknowledged: every
 *      channel with an effect in it reloads next_seq, counters, members
 *      and their read markers from storage (which has none of them), so
 *      the numbering stays gap-free and memory is never ahead of disk.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/cluster.h"
#include "actors/cluster_log.h"
#include "actors/chan.h"
#include "actors/commit.h"
#include "actors/directory.h"

static void fx_user_chan(struct shard_state *ss, struct chan *c,
			 const char *user, uint8_t action, uint64_t after,
			 rt_conn_id except)
{
	struct m_user_chan *m = msg_new(sizeof(*m), M_USER_CHAN);

	strcpy(m->ws, c->rec.ws);
	strcpy(m->user, user);
	strcpy(m->ch, c->id);
	m->action = action;
	m->after = after;
	m->except = except;
	proto_out_reset(&ss->out);
	if (action == ACT_FRAME)
		proto_enc_read(&ss->out, c->id, after);
	else
		proto_enc_member(&ss->out, c->id, user, action_names[action]);
	m->frame = rt_buf_new(ss->out.data, ss->out.len);
	fx_post(ss, c, user_shard(c->rec.ws, user), &m->h);
}

/* A member frame for everyone online in a channel of at most 1,000. */
static void fx_member_bcast(struct shard_state *ss, struct chan *c,
			    const char *user, uint8_t action)
{
	if (c->nmembers > 1000)
		return;
	proto_out_reset(&ss->out);
	proto_enc_member(&ss->out, c->id, user, action_names[action]);
	fx_bcast(ss, c, rt_buf_new(ss->out.data, ss->out.len), user);
}

/* ---- requests ----------------------------------------------------------- */


/* The answer {ch:{id,name,kind}} of ch.create and dm.open, in ss->out. */
static void enc_chan_ok(struct shard_state *ss, const struct m_req *r,
			const struct chan *c)
{
	proto_chref ref = { c->id, c->rec.name, c->rec.kind };

	proto_out_reset(&ss->out);
	proto_enc_chan_ok(&ss->out, r->rid, &ref);
}



static void op_create(struct shard_state *ss, struct m_req *r)
{
	const struct proto_a_ch_create *a = &r->q.a.create;
	store_channel rec;
	struct chan *c;

	if (chan_get(ss, r->ch)) {
		names_release_req(r);
		chan_fail(r, "CONFLICT", "channel id taken; try again");
		return;
	}
	memset(&rec, 0, sizeof(rec));
	strcpy(rec.id, r->ch);
	strcpy(rec.ws, r->ws);
	strcpy(rec.creator, r->user);
	memcpy(rec.name, a->name.s,
	       a->name.n < sizeof(rec.name) ? a->name.n : sizeof(rec.name) - 1);
	rec.kind = a->kind == PROTO_KIND_PUBLIC ? STORE_PUBLIC : STORE_PRIVATE;
	rec.created_ms = rt_now_ms();
	c = chan_new(ss, &rec);
	store_put_channel(ss->batch, &rec);
	chan_add_member(ss, c, r->user);
	chan_roles_on_create(ss, c, r); /* owner, topic, name registry */
	put_stat(ss, c);

	enc_chan_ok(ss, r, c);
	fx_reply(ss, c, r);
	fx_user_chan(ss, c, r->user, ACT_JOIN, 0, 0);
}

static void op_dm_open(struct shard_state *ss, struct m_req *r)
{
	const proto_strs *a = &r->q.a.users.users;
	struct chan *c = chan_get(ss, r->ch);
	store_channel rec;

	if (c) {
		if (c->rec.kind != STORE_DM || strcmp(c->rec.ws, r->ws) ||
		    !member_of(c, r->user)) {
			chan_fail(r, "CONFLICT", "DM id collision");
			return;
		}
		enc_chan_ok(ss, r, c);
		reply_state(ss, c, r);
		return;
	}
	memset(&rec, 0, sizeof(rec));
	strcpy(rec.id, r->ch);
	strcpy(rec.ws, r->ws);
	strcpy(rec.creator, r->user);
	rec.kind = STORE_DM;
	rec.created_ms = rt_now_ms();
	c = chan_new(ss, &rec);
	store_put_channel(ss->batch, &rec);
	chan_add_member(ss, c, r->user);
	for (uint32_t i = 0; i < a->n; i++) {
		const char *u = a->v[i].via.str.ptr; /* copied: NUL-ended */

		if (!member_of(c, u))
			chan_add_member(ss, c, u);
	}
	put_stat(ss, c);
	{ /* the directory: everyone named exists */
		const char **who = malloc((a->n + 1) * sizeof(*who));

		who[0] = r->user;
		for (uint32_t i = 0; i < a->n; i++)
			who[i + 1] = a->v[i].via.str.ptr;
		dir_fx_named(ss, c, r->ws, who, a->n + 1);
		free(who);
	}

	enc_chan_ok(ss, r, c);
	fx_reply(ss, c, r);
	smap_foreach(&c->members, it) {
		struct member *mb = it->val;

		fx_user_chan(ss, c, mb->user,
			     strcmp(mb->user, r->user) ? ACT_INVITE : ACT_JOIN,
			     0, 0);
	}
}


static void op_join(struct shard_state *ss, struct m_req *r)
{
	struct chan *c = chan_visible(ss, r);

	if (!c)
		return;
	if (c->rec.kind != STORE_PUBLIC) {
		chan_fail(r, "FORBIDDEN", "not a public channel");
		return;
	}
	proto_out_reset(&ss->out);
	proto_enc_join_ok(&ss->out, r->rid,
			  &(proto_chref){ c->id, c->rec.name, c->rec.kind },
			  c->next_seq - 1);
	if (member_of(c, r->user)) {
		reply_state(ss, c, r);
		return;
	}
	if (c->nmembers >= srv.lim.max_members) {
		chan_fail(r, "CONFLICT", "channel is full");
		return;
	}
	chan_add_member(ss, c, r->user);
	put_stat(ss, c);
	fx_reply(ss, c, r);
	fx_user_chan(ss, c, r->user, ACT_JOIN, c->next_seq - 1, 0);
	fx_member_bcast(ss, c, r->user, ACT_JOIN);
}

static void op_leave(struct shard_state *ss, struct m_req *r)
{
	struct chan *c = chan_visible(ss, r);
	struct member *mb;

	if (!c)
		return;
	mb = member_of(c, r->user);
	if (mb && c->rec.kind == STORE_DM) {
		chan_fail(r, "FORBIDDEN", "a DM cannot be left");
		return;
	}
	proto_out_reset(&ss->out);
	proto_enc_ok(&ss->out, r->rid);
	if (!mb) {
		reply_state(ss, c, r);
		return;
	}
	fx_member_bcast(ss, c, r->user, ACT_LEAVE);
	if (mb->owner) { /* the role goes with the membership */
		c->nowners--;
		store_del_owner(ss->batch, c->id, mb->user);
		cluster_chan_changed(ss, c->id);
	}
	smap_del(&c->typing, mb->user, strlen(mb->user)); /* keyed by mb */
	smap_del(&c->members, mb->user, strlen(mb->user));
	free(mb);
	c->nmembers--;
	store_del_member(ss->batch, c->rec.ws, c->id, r->user);
	cluster_chan_changed(ss, c->id);
	put_stat(ss, c);
	proto_out_reset(&ss->out);
	proto_enc_ok(&ss->out, r->rid);
	fx_reply(ss, c, r);
	fx_user_chan(ss, c, r->user, ACT_LEAVE, 0, 0);
	fx_drop_subs(ss, c, r->user);
}

static void op_invite(struct shard_state *ss, struct m_req *r)
{
	const proto_strs *a = &r->q.a.users.users;
	struct chan *c = chan_visible(ss, r);
	uint32_t added = 0;

	if (!c)
		return;
	if (!member_of(c, r->user)) {
		chan_fail(r, "FORBIDDEN", "not a member of this channel");
		return;
	}
	if (c->rec.kind == STORE_DM) {
		chan_fail(r, "FORBIDDEN", "a DM's members are fixed; open another");
		return;
	}
	/* Only newcomers count against the size limit, each once. */
	uint32_t fresh = 0;
	for (uint32_t i = 0; i < a->n; i++) {
		const msgpack_object_str *u = &a->v[i].via.str;
		bool seen = smap_get(&c->members, u->ptr, u->size) != NULL;

		for (uint32_t j = 0; j < i && !seen; j++)
			seen = a->v[j].via.str.size == u->size &&
			       !memcmp(a->v[j].via.str.ptr, u->ptr, u->size);
		fresh += !seen;
	}
	if (c->nmembers + fresh > srv.lim.max_members) {
		chan_fail(r, "CONFLICT", "channel would be too large");
		return;
	}
	for (uint32_t i = 0; i < a->n; i++) {
		const char *u = a->v[i].via.str.ptr; /* copied: NUL-ended */

		if (member_of(c, u))
			continue;
		chan_add_member(ss, c, u);
		fx_user_chan(ss, c, u, ACT_INVITE, c->next_seq - 1, 0);
		fx_member_bcast(ss, c, u, ACT_INVITE);
		added++;
	}
	proto_out_reset(&ss->out);
	proto_enc_ok(&ss->out, r->rid);
	if (!added) {
		reply_state(ss, c, r);
		return;
	}
	put_stat(ss, c);
	{ /* the directory: everyone named exists */
		const char **who = malloc(a->n * sizeof(*who));

		for (uint32_t i = 0; i < a->n; i++)
			who[i] = a->v[i].via.str.ptr;
		dir_fx_named(ss, c, r->ws, who, a->n);
		free(who);
	}
	fx_reply(ss, c, r);
}

/* Answer a repeated cmid whose event is durable: the original seq and ts. */
static int dup_ts(void *arg, uint64_t seq, const void *v, size_t len)
{
	proto_doc d;

	(void)seq;
	if (proto_decode_max(&d, v, len, PROTO_MAX_STATE) == PROTO_OK) {
		proto_get_uint(&d.root, "ts", arg);
		proto_doc_free(&d);
	}
	return 1;
}

static void reply_dup(struct shard_state *ss, struct m_req *r, struct chan *c,
		      uint64_t seq)
{
	uint64_t ts = 0;

	store_scan_events(srv.st, c->id, seq - 1, 1, dup_ts, &ts, NULL);
	proto_out_reset(&ss->out);
	proto_enc_send_ok(&ss->out, r->rid, seq, ts, true);
	reply_now(ss, r);
}





/* A send's files: each an upload of the sender in this workspace ('F'
 * record), encoded once as the array events and history show. 0 with the
 * bytes in out, or -1 (answered). */
struct send_files {
	proto_doc doc[PROTO_MAX_FILES];
	void *raw[PROTO_MAX_FILES];
	proto_file f[PROTO_MAX_FILES];
	uint32_t n;
};

static void send_files_free(struct send_files *sf)
{
	for (uint32_t i = 0; i < sf->n; i++) {
		proto_doc_free(&sf->doc[i]);
		free(sf->raw[i]);
	}
	sf->n = 0;
}

static int send_files_load(struct m_req *r, struct send_files *sf,
			   proto_out *out)
{
	const proto_strs *ids = &r->q.a.send.files;
	size_t n;
	int rc;

	sf->n = 0;
	for (uint32_t i = 0; i < ids->n; i++) {
		proto_str id = proto_strs_at(ids, i);
		uint32_t k = sf->n;

		rc = store_get_meta(srv.st, 'F', id.s, id.n, &sf->raw[k], &n);
		if (rc == 0 && proto_dec_file_rec(&sf->doc[k], sf->raw[k], n,
						  &sf->f[k]) < 0) {
			free(sf->raw[k]);
			rc = -EIO;
		}
		if (rc == 0)
			sf->n++;
		/* someone else's upload does not exist for the sender */
		if (rc == 0 &&
		    (sf->f[k].ws.n != strlen(r->ws) ||
		     memcmp(sf->f[k].ws.s, r->ws, sf->f[k].ws.n) ||
		     sf->f[k].user.n != strlen(r->user) ||
		     memcmp(sf->f[k].user.s, r->user, sf->f[k].user.n)))
			rc = -ENOENT;
		if (rc) {
			send_files_free(sf);
			chan_fail(r, rc == -ENOENT ? "NOT_FOUND" : "UNAVAILABLE",
				  rc == -ENOENT ? "no such file"
						: "storage unavailable");
			return -1;
		}
	}
	proto_out_reset(out);
	if (sf->n)
		proto_enc_files(out, sf->f, sf->n);
	return 0;
}

/* Past this many members "@channel"/"@here" are for owners and admins. */
#define MENTION_ALL_MAX 1000

static void op_send(struct shard_state *ss, struct m_req *r)
{
	const struct proto_a_send *a = &r->q.a.send;
	struct chan *c = chan_visible(ss, r);
	proto_str mentions[64];
	unsigned nm = 0;
	const char *body = a->body.s, *cmid = a->cmid.s;
	uint32_t blen = a->body.n, clen = a->cmid.n;
	uint64_t thread = a->thread, seq, ts, dupseq;
	struct member *me;
	struct pcmid *p;
	struct ov *root = NULL;
	char key[ID_CAP + PROTO_MAX_CMID + 1];
	size_t klen;
	rt_buf *ev;
	struct send_files sf = { .n = 0 };
	proto_out fo;

	if (!c)
		return;
	me = member_of(c, r->user);
	if (!me) {
		chan_fail(r, "FORBIDDEN", "not a member of this channel");
		return;
	}
	for (uint32_t i = 0; i < a->mentions.n && nm < 64; i++) {
		mentions[nm] = proto_strs_at(&a->mentions, i);
		/* everyone (online) in a big channel: its owners' and the
		 * admins' call only */
		if (proto_mention_all(mentions[nm].s, mentions[nm].n) &&
		    c->nmembers > MENTION_ALL_MAX && !me->owner && !r->admin) {
			chan_fail(r, "FORBIDDEN", "only owners and admins may "
				  "mention @channel or @here in a channel of "
				  "more than 1,000 members");
			return;
		}
		nm++;
	}

	/* Idempotency: the same cmid from the same sender is one event. */
	klen = strlen(r->user);
	memcpy(key, r->user, klen);
	key[klen++] = 0;
	memcpy(key + klen, cmid, clen);
	klen += clen;
	p = smap_get(&c->cmids, key, klen);
	if (p) {
		p->w = realloc(p->w, (p->nw + 1) * sizeof(*p->w));
		p->w[p->nw++] = (struct waiter){ r->conn, r->rid, r->has_rid };
		return;
	}
	if (store_get_cmid(srv.st, c->id, r->user, cmid, clen, &dupseq) == 0) {
		reply_dup(ss, r, c, dupseq);
		return;
	}

	/* archived, announcements (after the cmid checks: a retry of a send
	 * made before still gets its seq) */
	if (!chan_may_post(c, r, !thread))
		return;
	if (thread) {
		root = thread < c->next_seq ? chan_msg_state(c, 0, thread) : NULL;
		if (!root) {
			chan_fail(r, "NOT_FOUND", "thread root is not a top-level message");
			return;
		}
	}

	proto_out_init(&fo, 0, 256);
	if (send_files_load(r, &sf, &fo)) {
		proto_out_free(&fo);
		if (root)
			chan_ov_release(c, root);
		return;
	}

	seq = c->next_seq++;
	ts = rt_now_ms();
	c->msgs++;
	for (uint32_t i = 0; i < sf.n; i++)
		chan_file_share(ss->batch, c->id, sf.f[i].id, seq, true);

	/* The event, encoded once: stored, and sent to every recipient. */
	proto_event e = {
		.ch = { c->id, (uint32_t)strlen(c->id) },
		.seq = seq,
		.k = { "msg", 3 },
		.ts = ts,
		.from = { r->user, (uint32_t)strlen(r->user) },
		.body = { body, blen },
		.cmid = { cmid, clen },
		.thread = thread,
		.mentions = mentions,
		.nmentions = nm,
		.files = sf.n ? fo.data : NULL,
		.files_len = sf.n ? fo.len : 0,
	};
	proto_out_reset(&ss->out);
	proto_enc_event(&ss->out, &e);
	ev = rt_buf_new(ss->out.data, ss->out.len);
	ev->kind = BUF_EVENT;
	ev->t_req_us = r->t_rx_us;
	store_put_event(ss->batch, c->id, seq, ev->data, ev->len, c->msgs);

	/* Its state in the history view */
	proto_msg hm = {
		.seq = seq, .from = e.from, .ts = ts, .body = e.body,
		.cmid = e.cmid, .thread = thread, .mentions = mentions,
		.nmentions = nm, .files = e.files, .files_len = e.files_len,
	};
	proto_out_reset(&ss->out);
	proto_enc_msg(&ss->out, &hm);
	store_put_msg(ss->batch, c->id, thread, seq, ss->out.data, ss->out.len);
	send_files_free(&sf);
	proto_out_free(&fo);

	if (root) {
		proto_doc d;
		proto_str rm[64];
		proto_msg rmsg;

		if (chan_state_decode(&d, root->bytes, root->len) == PROTO_OK) {
			if (proto_dec_msg(&d.root, &rmsg, rm, 64) == 0) {
				rmsg.replies++;
				rmsg.last_reply = seq;
				proto_out_reset(&ss->out);
				proto_enc_msg(&ss->out, &rmsg);
				chan_ov_set(ss, c, root, &ss->out);
			}
			proto_doc_free(&d);
		}
		chan_ov_release(c, root);
	}

	store_put_cmid(ss->batch, c->id, r->user, cmid, clen, seq);
	/* Sending moves the sender's read marker to its own message. */
	chan_move_marker(ss, c, me, seq);
	/* Clients drop the sender's typing indicator when its message comes;
	 * the next keystroke's typing must not then be held back by the 3 s
	 * limit. */
	smap_del(&c->typing, me->user, strlen(me->user));
	for (unsigned i = 0; i < nm; i++) {
		char u[ID_CAP];
		struct member *mm;
		bool twice = false;

		for (unsigned j = 0; j < i && !twice; j++)
			twice = mentions[j].n == mentions[i].n &&
				!memcmp(mentions[j].s, mentions[i].s,
					mentions[i].n);
		memcpy(u, mentions[i].s, mentions[i].n);
		u[mentions[i].n] = 0;
		mm = !twice && strcmp(u, r->user) ? member_of(c, u) : NULL;
		if (!mm)
			continue;
		if (mm->mention_cum == MENTION_UNKNOWN &&
		    store_mentions_total(srv.st, c->id, u, &mm->mention_cum))
			mm->mention_cum = 0;
		mm->mention_cum++;
		store_put_mention(ss->batch, c->id, u, seq, mm->mention_cum);
	}
	put_stat(ss, c);

	p = calloc(1, sizeof(*p));
	memcpy(p->key, key, klen);
	p->klen = klen;
	p->seq = seq;
	p->ts = ts;
	smap_put(&c->cmids, p->key, p->klen, p);

	fx_event(ss, c, seq, ev);
	chan_receipt_read(ss, c, me); /* DMs: after the message it reads */

	proto_out_reset(&ss->out);
	proto_enc_send_ok(&ss->out, r->rid, seq, ts, false);
	fx_reply(ss, c, r);
	fx_cmid(ss, c, p);
}

static void op_read(struct shard_state *ss, struct m_req *r)
{
	struct chan *c = chan_visible(ss, r);
	struct member *me;
	uint64_t seq = r->q.a.seq.seq;

	if (!c)
		return;
	me = member_of(c, r->user);
	if (!me) {
		chan_fail(r, "FORBIDDEN", "not a member of this channel");
		return;
	}
	/* No further than what is durable: nobody can have seen more, and a
	 * marker on an event still in flight would outlive a failed commit. */
	if (seq > c->durable_seq)
		seq = c->durable_seq;
	proto_out_reset(&ss->out);
	proto_enc_ok(&ss->out, r->rid);
	if (seq <= me->m.read_seq) {
		reply_state(ss, c, r); /* never backwards */
		return;
	}
	chan_move_marker(ss, c, me, seq);
	fx_reply(ss, c, r);
	fx_user_chan(ss, c, r->user, ACT_FRAME, seq, r->conn);
	chan_receipt_read(ss, c, me); /* DMs: the others get a receipt */
}

static void op_typing(struct shard_state *ss, struct m_req *r)
{
	struct chan *c = chan_visible(ss, r);
	struct member *me;
	uint64_t now = rt_now_ms(), last;
	rt_buf *b;

	if (!c)
		return;
	me = member_of(c, r->user);
	if (!me) {
		chan_fail(r, "FORBIDDEN", "not a member of this channel");
		return;
	}
	proto_out_reset(&ss->out);
	proto_enc_ok(&ss->out, r->rid);
	reply_now(ss, r);
	/* At most one broadcast per user per channel per 3 s. The map's
	 * key is the member's own id string; the value is the time. */
	last = (uint64_t)(uintptr_t)smap_get(&c->typing, me->user,
					     strlen(me->user));
	if (last && now - last < 3000)
		return;
	smap_put(&c->typing, me->user, strlen(me->user), (void *)(uintptr_t)now);
	proto_out_reset(&ss->out);
	proto_enc_typing(&ss->out, c->id, r->user);
	b = rt_buf_new(ss->out.data, ss->out.len);
	fanout(c, 0, b, r->user);
	cluster_ephemeral(c->id, b, r->user); /* and other hosts' clients */
	rt_buf_unref(b);
}

/* r->q is the request as the session decoded and checked it (its strings
 * in r's tail): nothing here decodes a frame. */
void chan_on_req(struct shard_state *ss, struct m_req *r)
{
	uint64_t now = rt_mono_us();

	ASSERT_CHAN_HERE(ss, r->ch);
	assert(r->q.op == r->op);
	stage_add(ss, ST_TO_CHANNEL, now - r->t0_us);
	r->t_chan_us = now;
	if (__atomic_load_n(&srv.storage_failed, __ATOMIC_RELAXED) &&
	    r->op != OP_TYPING) {
		chan_fail(r, "UNAVAILABLE", "storage is failing");
		goto out;
	}
	switch (r->op) {
	case OP_CH_CREATE: op_create(ss, r); break;
	case OP_DM_OPEN: op_dm_open(ss, r); break;
	case OP_CH_JOIN: op_join(ss, r); break;
	case OP_CH_LEAVE: op_leave(ss, r); break;
	case OP_CH_INVITE: op_invite(ss, r); break;
	case OP_SEND: op_send(ss, r); break;
	case OP_READ: op_read(ss, r); break;
	case OP_TYPING: op_typing(ss, r); break;
	case OP_EDIT: chan_op_edit(ss, r); break;
	case OP_DELETE: chan_op_delete(ss, r); break;
	case OP_REACT: chan_op_react(ss, r); break;
	case PROTO_OP_DELIVERED: chan_op_delivered(ss, r); break;
	case PROTO_OP_RECEIPTS: chan_op_receipts(ss, r); break;
	case PROTO_OP_CH_INFO: chan_op_info(ss, r); break;
	case PROTO_OP_CH_SET: chan_op_set(ss, r); break;
	case PROTO_OP_CH_ROLE: chan_op_role(ss, r); break;
	case PROTO_OP_CH_KICK: chan_op_kick(ss, r); break;
	default: chan_fail(r, "BAD_REQUEST", "unknown op"); break;
	}
out:
	free(r);
}
