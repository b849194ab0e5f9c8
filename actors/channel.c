/*
 * channel: one actor per channel, on the shard the channel id hashes to. The
 * only writer of its channel: it checks membership and rights, assigns seq,
 * encodes each event once, and puts everything the event changes into the
 * shard's batch for this loop turn.
 *
 * Accepts:
 *   M_REQ     ch.create, dm.open, ch.join, ch.leave, ch.invite, send, read,
 *             typing (already validated by the session, rate-limited by the
 *             user actor)
 *   M_SUB     a connection wants the events after some seq: answered with
 *             the catch-up (or a gap notice) up to the durable seq
 *   M_UNSUB   it no longer does
 *   M_COMMIT  a batch of this shard is durable: run its effects in order
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

#include "actors/chan.h"
#include "actors/commit.h"
#include "storage/search.h"

/* ---- loading ---------------------------------------------------------------- */

static int collect_member(void *arg, const char *id, size_t len)
{
	struct chan *c = arg;
	struct member *m = calloc(1, sizeof(*m));

	memcpy(m->user, id, len < ID_CAP ? len : ID_CAP - 1);
	store_get_member(srv.st, c->id, m->user, &m->m);
	m->mention_cum = MENTION_UNKNOWN;
	smap_put(&c->members, m->user, strlen(m->user), m);
	return 0;
}

int chan_reload(struct chan *c)
{
	store_chstat st = { 0 };
	int rc = store_get_chstat(srv.st, c->id, &st);

	if (rc && rc != -ENOENT)
		return rc;
	c->next_seq = st.last_seq + 1;
	c->durable_seq = st.last_seq;
	c->msgs = st.msgs;
	smap_foreach(&c->members, it) free(it->val);
	smap_free(&c->members);
	if (store_scan_members(srv.st, c->id, "", 0xffffffffu, collect_member,
			       c, NULL))
		return -EIO;
	c->nmembers = c->members.n;
	c->broken = false;
	return 0;
}

static void loaded_changed(struct shard_state *ss)
{
	__atomic_store_n(&ss->chans_loaded, (uint64_t)ss->chans.n,
			 __ATOMIC_RELAXED);
}

static struct chan *chan_get(struct shard_state *ss, const char *id)
{
	struct chan *c = smap_get(&ss->chans, id, strlen(id));

	if (c) {
		c->touched_ms = rt_now_ms();
		return c;
	}
	c = calloc(1, sizeof(*c));
	strcpy(c->id, id);
	if (store_get_channel(srv.st, id, &c->rec) || chan_reload(c)) {
		free(c);
		return NULL;
	}
	c->touched_ms = rt_now_ms();
	smap_put(&ss->chans, c->id, strlen(c->id), c);
	loaded_changed(ss);
	return c;
}

static struct chan *chan_new(struct shard_state *ss, const store_channel *rec)
{
	struct chan *c = calloc(1, sizeof(*c));

	strcpy(c->id, rec->id);
	c->rec = *rec;
	c->next_seq = 1;
	c->touched_ms = rt_now_ms();
	smap_put(&ss->chans, c->id, strlen(c->id), c);
	loaded_changed(ss);
	return c;
}

/* A channel actor may leave memory when nothing of it is in flight and
 * nobody listens: everything it knows is in storage (invariant 1 of
 * storage) and comes back on the next touch. Its subscriber counts are the
 * one thing storage does not have, hence "nobody listens". */
static bool evictable(const struct chan *c, uint64_t now)
{
	if (c->pending || c->cmids.n || c->ov.n || c->stat_dirty ||
	    now - c->touched_ms < srv.lim.chan_idle_ms)
		return false;
	for (unsigned s = 0; s < rt_nshards(); s++)
		if (c->online[s])
			return false;
	return true;
}

static void chan_free(struct chan *c)
{
	smap_foreach(&c->members, it) free(it->val);
	smap_free(&c->members);
	smap_free(&c->cmids);
	smap_free(&c->ov);
	smap_free(&c->typing);
	free(c);
}

void chan_tick(struct shard_state *ss, uint64_t now)
{
	static __thread uint64_t next_scan;
	uint64_t every = srv.lim.chan_idle_ms / 2;
	struct chan **gone;
	uint32_t n = 0;

	if (now < next_scan || !ss->chans.n)
		return;
	next_scan = now + (every < 100 ? 100 : every > 5000 ? 5000 : every);
	gone = malloc(ss->chans.n * sizeof(*gone));
	smap_foreach(&ss->chans, it) {
		if (evictable(it->val, now))
			gone[n++] = it->val;
	}
	for (uint32_t i = 0; i < n; i++) {
		smap_del(&ss->chans, gone[i]->id, strlen(gone[i]->id));
		chan_free(gone[i]);
	}
	free(gone);
	if (n)
		loaded_changed(ss);
}

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

/* ---- subscriptions ---------------------------------------------------------- */

struct catchup {
	rt_buf **v;
	uint32_t n;
};

static int collect_event(void *arg, uint64_t seq, const void *v, size_t len)
{
	struct catchup *cu = arg;

	(void)seq;
	cu->v[cu->n++] = rt_buf_new(v, len);
	return 0;
}

void chan_on_sub(struct shard_state *ss, struct m_sub *m)
{
	struct chan *c = chan_get(ss, m->ch);
	unsigned from = rt_conn_shard(m->conn);
	struct catchup cu = { 0 };
	struct m_suback *a;
	uint64_t L, missing = 0;
	bool denied;

	denied = !c || strcmp(c->rec.ws, m->ws) || !member_of(c, m->user);
	if (c)
		c->online[from]++; /* counted even when denied: see M_UNSUB */
	L = c ? c->durable_seq : 0;
	if (!denied && m->after < L)
		missing = L - m->after;
	if (missing > srv.lim.resume_max) {
		proto_out_reset(&ss->out);
		proto_enc_gap(&ss->out, m->ch, m->after, L);
		cu.v = calloc(1, sizeof(*cu.v));
		cu.v[cu.n++] = rt_buf_new(ss->out.data, ss->out.len);
	} else if (missing) {
		cu.v = calloc(missing, sizeof(*cu.v));
		store_scan_events(srv.st, m->ch, m->after, (unsigned)missing,
				  collect_event, &cu, NULL);
	}
	a = msg_new(sizeof(*a) + cu.n * sizeof(rt_buf *), M_SUBACK);
	strcpy(a->ch, m->ch);
	a->conn = m->conn;
	a->denied = denied;
	/* A position past the channel's end (a confused client) is clamped:
	 * otherwise the next events up to it would be skipped silently. */
	a->last_seq = L;
	a->n = cu.n;
	if (cu.n)
		memcpy(a->frames, cu.v, cu.n * sizeof(rt_buf *));
	free(cu.v);
	rt_post(from, &a->h);
}

void chan_on_unsub(struct shard_state *ss, struct m_unsub *m)
{
	struct chan *c = smap_get(&ss->chans, m->ch, strlen(m->ch));

	if (c && c->online[m->h.from])
		c->online[m->h.from]--;
}

/* ---- requests ----------------------------------------------------------- */

static void fail(const struct m_req *r, const char *code, const char *msg)
{
	reply_err_remote(r, code, msg, 0);
}

static void pack_ch(msgpack_packer *pk, const struct chan *c)
{
	static const char *const kinds[] = { "public", "private", "dm" };

	msgpack_pack_map(pk, 3);
	proto_pk_cstr(pk, "id");
	proto_pk_cstr(pk, c->id);
	proto_pk_cstr(pk, "name");
	proto_pk_cstr(pk, c->rec.name);
	proto_pk_cstr(pk, "kind");
	proto_pk_cstr(pk, kinds[c->rec.kind]);
}

static struct member *add_member(struct shard_state *ss, struct chan *c,
				 const char *user)
{
	struct member *mb = calloc(1, sizeof(*mb));

	strcpy(mb->user, user);
	mb->mention_cum = 0; /* a (re)joined member starts with none */
	mb->m.read_seq = c->next_seq - 1;
	mb->m.joined_seq = c->next_seq - 1;
	mb->m.joined_ms = rt_now_ms();
	smap_put(&c->members, mb->user, strlen(mb->user), mb);
	c->nmembers++;
	store_put_member(ss->batch, c->rec.ws, c->id, user, &mb->m);
	return mb;
}

/* The read marker of mb moves to seq. Mention keys stay: unread mentions
 * are the newest key's count minus the count at the marker. */
static void move_marker(struct shard_state *ss, struct chan *c,
			struct member *mb, uint64_t seq)
{
	mb->m.read_seq = seq;
	store_put_marker(ss->batch, c->id, mb->user, &mb->m);
}

static void op_create(struct shard_state *ss, struct m_req *r,
		      const msgpack_object *map)
{
	store_channel rec;
	struct chan *c;
	const char *s;
	uint32_t n;

	if (chan_get(ss, r->ch)) {
		fail(r, "CONFLICT", "channel id taken; try again");
		return;
	}
	memset(&rec, 0, sizeof(rec));
	strcpy(rec.id, r->ch);
	strcpy(rec.ws, r->ws);
	strcpy(rec.creator, r->user);
	proto_get_str(map, "name", &s, &n);
	memcpy(rec.name, s, n < sizeof(rec.name) ? n : sizeof(rec.name) - 1);
	proto_get_str(map, "kind", &s, &n);
	rec.kind = n == 6 ? STORE_PUBLIC : STORE_PRIVATE;
	rec.created_ms = rt_now_ms();
	c = chan_new(ss, &rec);
	store_put_channel(ss->batch, &rec);
	add_member(ss, c, r->user);
	put_stat(ss, c);

	proto_out_reset(&ss->out);
	proto_enc_res_ok(&ss->out, r->rid, 1);
	proto_pk_cstr(&ss->out.pk, "ch");
	pack_ch(&ss->out.pk, c);
	fx_reply(ss, c, r);
	fx_user_chan(ss, c, r->user, ACT_JOIN, 0, 0);
}

static void op_dm_open(struct shard_state *ss, struct m_req *r,
		       const msgpack_object *map)
{
	const msgpack_object_array *a;
	struct chan *c = chan_get(ss, r->ch);
	store_channel rec;

	proto_get_array(map, "users", &a);
	if (c) {
		if (c->rec.kind != STORE_DM || strcmp(c->rec.ws, r->ws) ||
		    !member_of(c, r->user)) {
			fail(r, "CONFLICT", "DM id collision");
			return;
		}
		proto_out_reset(&ss->out);
		proto_enc_res_ok(&ss->out, r->rid, 1);
		proto_pk_cstr(&ss->out.pk, "ch");
		pack_ch(&ss->out.pk, c);
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
	add_member(ss, c, r->user);
	for (uint32_t i = 0; i < a->size; i++) {
		char u[ID_CAP];

		memcpy(u, a->ptr[i].via.str.ptr, a->ptr[i].via.str.size);
		u[a->ptr[i].via.str.size] = 0;
		if (!member_of(c, u))
			add_member(ss, c, u);
	}
	put_stat(ss, c);

	proto_out_reset(&ss->out);
	proto_enc_res_ok(&ss->out, r->rid, 1);
	proto_pk_cstr(&ss->out.pk, "ch");
	pack_ch(&ss->out.pk, c);
	fx_reply(ss, c, r);
	smap_foreach(&c->members, it) {
		struct member *mb = it->val;

		fx_user_chan(ss, c, mb->user,
			     strcmp(mb->user, r->user) ? ACT_INVITE : ACT_JOIN,
			     0, 0);
	}
}

/* The channel as the user may see it, or NULL (answered). A private
 * channel or DM the user is not a member of does not exist for them: the
 * answer is word for word the one for an id never made, so nobody learns
 * which private channels and DMs exist. Public channels are visible to the
 * whole workspace (and answer FORBIDDEN where membership is needed). */
static struct chan *visible(struct shard_state *ss, struct m_req *r)
{
	struct chan *c = chan_get(ss, r->ch);

	if (!c || strcmp(c->rec.ws, r->ws) ||
	    (c->rec.kind != STORE_PUBLIC && !member_of(c, r->user))) {
		fail(r, "NOT_FOUND", "no such channel");
		return NULL;
	}
	return c;
}

static void op_join(struct shard_state *ss, struct m_req *r)
{
	struct chan *c = visible(ss, r);

	if (!c)
		return;
	if (c->rec.kind != STORE_PUBLIC) {
		fail(r, "FORBIDDEN", "not a public channel");
		return;
	}
	proto_out_reset(&ss->out);
	proto_enc_res_ok(&ss->out, r->rid, 2);
	proto_pk_cstr(&ss->out.pk, "ch");
	pack_ch(&ss->out.pk, c);
	proto_pk_cstr(&ss->out.pk, "last_seq");
	msgpack_pack_uint64(&ss->out.pk, c->next_seq - 1);
	if (member_of(c, r->user)) {
		reply_state(ss, c, r);
		return;
	}
	if (c->nmembers >= srv.lim.max_members) {
		fail(r, "CONFLICT", "channel is full");
		return;
	}
	add_member(ss, c, r->user);
	put_stat(ss, c);
	fx_reply(ss, c, r);
	fx_user_chan(ss, c, r->user, ACT_JOIN, c->next_seq - 1, 0);
	fx_member_bcast(ss, c, r->user, ACT_JOIN);
}

static void op_leave(struct shard_state *ss, struct m_req *r)
{
	struct chan *c = visible(ss, r);
	struct member *mb;

	if (!c)
		return;
	mb = member_of(c, r->user);
	if (mb && c->rec.kind == STORE_DM) {
		fail(r, "FORBIDDEN", "a DM cannot be left");
		return;
	}
	proto_out_reset(&ss->out);
	proto_enc_res_ok(&ss->out, r->rid, 0);
	if (!mb) {
		reply_state(ss, c, r);
		return;
	}
	fx_member_bcast(ss, c, r->user, ACT_LEAVE);
	smap_del(&c->typing, mb->user, strlen(mb->user)); /* keyed by mb */
	smap_del(&c->members, mb->user, strlen(mb->user));
	free(mb);
	c->nmembers--;
	store_del_member(ss->batch, c->rec.ws, c->id, r->user);
	put_stat(ss, c);
	proto_out_reset(&ss->out);
	proto_enc_res_ok(&ss->out, r->rid, 0);
	fx_reply(ss, c, r);
	fx_user_chan(ss, c, r->user, ACT_LEAVE, 0, 0);
}

static void op_invite(struct shard_state *ss, struct m_req *r,
		      const msgpack_object *map)
{
	const msgpack_object_array *a;
	struct chan *c = visible(ss, r);
	uint32_t added = 0;

	if (!c)
		return;
	if (!member_of(c, r->user)) {
		fail(r, "FORBIDDEN", "not a member of this channel");
		return;
	}
	if (c->rec.kind == STORE_DM) {
		fail(r, "FORBIDDEN", "a DM's members are fixed; open another");
		return;
	}
	proto_get_array(map, "users", &a);
	/* Only newcomers count against the size limit, each once. */
	uint32_t fresh = 0;
	for (uint32_t i = 0; i < a->size; i++) {
		const msgpack_object_str *u = &a->ptr[i].via.str;
		bool seen = smap_get(&c->members, u->ptr, u->size) != NULL;

		for (uint32_t j = 0; j < i && !seen; j++)
			seen = a->ptr[j].via.str.size == u->size &&
			       !memcmp(a->ptr[j].via.str.ptr, u->ptr, u->size);
		fresh += !seen;
	}
	if (c->nmembers + fresh > srv.lim.max_members) {
		fail(r, "CONFLICT", "channel would be too large");
		return;
	}
	for (uint32_t i = 0; i < a->size; i++) {
		char u[ID_CAP];

		memcpy(u, a->ptr[i].via.str.ptr, a->ptr[i].via.str.size);
		u[a->ptr[i].via.str.size] = 0;
		if (member_of(c, u))
			continue;
		add_member(ss, c, u);
		fx_user_chan(ss, c, u, ACT_INVITE, c->next_seq - 1, 0);
		fx_member_bcast(ss, c, u, ACT_INVITE);
		added++;
	}
	proto_out_reset(&ss->out);
	proto_enc_res_ok(&ss->out, r->rid, 0);
	if (!added) {
		reply_state(ss, c, r);
		return;
	}
	put_stat(ss, c);
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
	proto_enc_res_ok(&ss->out, r->rid, 3);
	proto_pk_cstr(&ss->out.pk, "seq");
	msgpack_pack_uint64(&ss->out.pk, seq);
	proto_pk_cstr(&ss->out.pk, "ts");
	msgpack_pack_uint64(&ss->out.pk, ts);
	proto_pk_cstr(&ss->out.pk, "dup");
	msgpack_pack_true(&ss->out.pk);
	reply_now(ss, r);
}

static int state_decode(proto_doc *d, const void *bytes, size_t len)
{
	return proto_decode_max(d, bytes, len, PROTO_MAX_STATE);
}

/* The state of message seq (in thread root, 0: top-level): the overlay if
 * a pending batch changed it, else storage; NULL if there is none. The
 * caller changes it with ov_set(). */
static struct ov *msg_state(struct chan *c, uint64_t root, uint64_t seq)
{
	uint8_t k[8];
	struct ov *o;
	void *bytes;
	size_t len;

	for (int i = 0; i < 8; i++)
		k[i] = (uint8_t)(seq >> (56 - 8 * i));
	o = smap_get(&c->ov, k, 8);
	if (o)
		/* seqs are unique in a channel, so the entry is message seq;
		 * asked for a top-level message, a reply is not one */
		return o->root == root ? o : NULL;
	if (store_get_msg(srv.st, c->id, root, seq, &bytes, &len))
		return NULL;
	o = calloc(1, sizeof(*o));
	memcpy(o->key, k, 8);
	o->seq = seq;
	o->root = root;
	o->bytes = bytes;
	o->len = len;
	smap_put(&c->ov, (const char *)o->key, 8, o);
	return o;
}

/* o's new state is out's bytes: kept in the overlay until this turn's
 * batch, which writes it, is durable. */
static void ov_set(struct shard_state *ss, struct chan *c, struct ov *o,
		   const proto_out *out)
{
	free(o->bytes);
	o->bytes = malloc(out->len);
	memcpy(o->bytes, out->data, out->len);
	o->len = out->len;
	store_put_msg(ss->batch, c->id, o->root, o->seq, o->bytes, o->len);
	o->pending++;
	fx_ov(ss, c, o);
}

/* An overlay entry nothing changed (a refused request): drop it unless a
 * batch still needs it. */
static void ov_release(struct chan *c, struct ov *o)
{
	if (o->pending)
		return;
	smap_del(&c->ov, o->key, 8);
	ov_free(o);
}

static void op_send(struct shard_state *ss, struct m_req *r,
		    const msgpack_object *map)
{
	struct chan *c = visible(ss, r);
	const msgpack_object_array *ma = NULL;
	proto_str mentions[64];
	unsigned nm = 0;
	const char *body, *cmid;
	uint32_t blen, clen;
	uint64_t thread = 0, seq, ts, dupseq;
	struct member *me;
	struct pcmid *p;
	struct ov *root = NULL;
	char key[ID_CAP + PROTO_MAX_CMID + 1];
	size_t klen;
	rt_buf *ev;

	if (!c)
		return;
	me = member_of(c, r->user);
	if (!me) {
		fail(r, "FORBIDDEN", "not a member of this channel");
		return;
	}
	proto_get_str(map, "body", &body, &blen);
	proto_get_str(map, "cmid", &cmid, &clen);
	proto_get_uint(map, "thread", &thread);
	if (proto_get_array(map, "mentions", &ma) == 0) {
		for (uint32_t i = 0; i < ma->size && nm < 64; i++) {
			mentions[nm].s = ma->ptr[i].via.str.ptr;
			mentions[nm].n = ma->ptr[i].via.str.size;
			nm++;
		}
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

	if (thread) {
		root = thread < c->next_seq ? msg_state(c, 0, thread) : NULL;
		if (!root) {
			fail(r, "NOT_FOUND", "thread root is not a top-level message");
			return;
		}
	}

	seq = c->next_seq++;
	ts = rt_now_ms();
	c->msgs++;

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
		.nmentions = nm,
	};
	proto_out_reset(&ss->out);
	proto_enc_msg(&ss->out, &hm);
	store_put_msg(ss->batch, c->id, thread, seq, ss->out.data, ss->out.len);

	if (root) {
		proto_doc d;
		proto_str rm[64];
		proto_msg rmsg;

		if (state_decode(&d, root->bytes, root->len) == PROTO_OK) {
			if (proto_dec_msg(&d.root, &rmsg, rm, 64) == 0) {
				rmsg.replies++;
				rmsg.last_reply = seq;
				proto_out_reset(&ss->out);
				proto_enc_msg(&ss->out, &rmsg);
				ov_set(ss, c, root, &ss->out);
			}
			proto_doc_free(&d);
		}
		ov_release(c, root);
	}

	store_put_cmid(ss->batch, c->id, r->user, cmid, clen, seq);
	/* Sending moves the sender's read marker to its own message. */
	move_marker(ss, c, me, seq);
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

	proto_out_reset(&ss->out);
	proto_enc_res_ok(&ss->out, r->rid, 2);
	proto_pk_cstr(&ss->out.pk, "seq");
	msgpack_pack_uint64(&ss->out.pk, seq);
	proto_pk_cstr(&ss->out.pk, "ts");
	msgpack_pack_uint64(&ss->out.pk, ts);
	fx_reply(ss, c, r);
	fx_cmid(ss, c, p);
}

static void op_read(struct shard_state *ss, struct m_req *r,
		    const msgpack_object *map)
{
	struct chan *c = visible(ss, r);
	struct member *me;
	uint64_t seq;

	if (!c)
		return;
	me = member_of(c, r->user);
	if (!me) {
		fail(r, "FORBIDDEN", "not a member of this channel");
		return;
	}
	proto_get_uint(map, "seq", &seq);
	/* No further than what is durable: nobody can have seen more, and a
	 * marker on an event still in flight would outlive a failed commit. */
	if (seq > c->durable_seq)
		seq = c->durable_seq;
	proto_out_reset(&ss->out);
	proto_enc_res_ok(&ss->out, r->rid, 0);
	if (seq <= me->m.read_seq) {
		reply_state(ss, c, r); /* never backwards */
		return;
	}
	move_marker(ss, c, me, seq);
	fx_reply(ss, c, r);
	fx_user_chan(ss, c, r->user, ACT_FRAME, seq, r->conn);
}

static void op_typing(struct shard_state *ss, struct m_req *r)
{
	struct chan *c = visible(ss, r);
	struct member *me;
	uint64_t now = rt_now_ms(), last;
	rt_buf *b;

	if (!c)
		return;
	me = member_of(c, r->user);
	if (!me) {
		fail(r, "FORBIDDEN", "not a member of this channel");
		return;
	}
	proto_out_reset(&ss->out);
	proto_enc_res_ok(&ss->out, r->rid, 0);
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
	rt_buf_unref(b);
}

/* ---- changes to a message: edit, delete, react ------------------------- */

/* What a change targets: a durable `msg` event of this channel that is not
 * deleted. Answers the request and returns NULL if there is none (or, with
 * author_only, if r's user did not write it). */
struct target {
	uint64_t seq, cum;
	struct ov *st;
	proto_doc ev;     /* the msg event as stored */
	proto_event e;
	proto_str men[64];
	bool has_ev;
};

static void target_free(struct target *t)
{
	if (t->has_ev)
		proto_doc_free(&t->ev);
	t->has_ev = false;
}

static bool load_target(struct chan *c, const struct m_req *r,
			const msgpack_object *map, bool author_only,
			struct target *t)
{
	void *ev = NULL;
	size_t len;
	int rc;

	memset(t, 0, sizeof(*t));
	proto_get_uint(map, "target", &t->seq);
	rc = t->seq && t->seq <= c->durable_seq
		     ? store_get_event(srv.st, c->id, t->seq, &ev, &len, &t->cum)
		     : -ENOENT;
	if (rc == -ENOENT) {
		fail(r, "NOT_FOUND", "no such message");
		return false;
	}
	if (rc || proto_decode_max(&t->ev, ev, len, PROTO_MAX_STATE) != PROTO_OK) {
		free(ev);
		fail(r, "UNAVAILABLE", "storage unavailable");
		return false;
	}
	free(ev);
	t->has_ev = true;
	if (proto_dec_event(&t->ev.root, &t->e, t->men, 64) ||
	    !(t->e.k.n == 3 && !memcmp(t->e.k.s, "msg", 3))) {
		fail(r, "NOT_FOUND", "target is not a message");
		goto fail;
	}
	if (author_only && (t->e.from.n != strlen(r->user) ||
			    memcmp(t->e.from.s, r->user, t->e.from.n))) {
		fail(r, "FORBIDDEN", "only the author may do that");
		goto fail;
	}
	t->st = msg_state(c, t->e.thread, t->seq);
	if (!t->st) {
		fail(r, "UNAVAILABLE", "storage unavailable");
		goto fail;
	}
	return true;
fail:
	target_free(t);
	return false;
}

/* The channel event of a change: encoded once, put in the batch, delivered
 * once durable; the answer {seq} too. */
static void change_event(struct shard_state *ss, struct chan *c,
			 const struct m_req *r, proto_event *e)
{
	rt_buf *ev;

	proto_out_reset(&ss->out);
	proto_enc_event(&ss->out, e);
	ev = rt_buf_new(ss->out.data, ss->out.len);
	ev->kind = BUF_EVENT;
	ev->t_req_us = r->t_rx_us;
	/* the running msg count rides along, so an unread count at this
	 * seq is one read, however many changes follow a message */
	store_put_event(ss->batch, c->id, e->seq, ev->data, ev->len, c->msgs);
	put_stat(ss, c);
	fx_event(ss, c, e->seq, ev);

	proto_out_reset(&ss->out);
	proto_enc_res_ok(&ss->out, r->rid, 1);
	proto_pk_cstr(&ss->out.pk, "seq");
	msgpack_pack_uint64(&ss->out.pk, e->seq);
	fx_reply(ss, c, r);
}

static proto_event change_of(struct chan *c, const struct m_req *r,
			     const char *k, uint64_t target)
{
	proto_event e = {
		.ch = { c->id, (uint32_t)strlen(c->id) },
		.seq = c->next_seq++,
		.k = { k, (uint32_t)strlen(k) },
		.ts = rt_now_ms(),
		.from = { r->user, (uint32_t)strlen(r->user) },
		.target = target,
	};
	return e;
}

/* Decode the target's current state into m (strings point into d). */
static bool state_of(struct target *t, proto_doc *d, proto_msg *m,
		     proto_str *men)
{
	if (state_decode(d, t->st->bytes, t->st->len) != PROTO_OK)
		return false;
	if (proto_dec_msg(&d->root, m, men, 64)) {
		proto_doc_free(d);
		return false;
	}
	return true;
}

static bool member_or_fail(struct chan *c, const struct m_req *r)
{
	if (member_of(c, r->user))
		return true;
	fail(r, "FORBIDDEN", "not a member of this channel");
	return false;
}

static void op_edit(struct shard_state *ss, struct m_req *r,
		    const msgpack_object *map)
{
	struct chan *c = visible(ss, r);
	struct target t;
	proto_doc d;
	proto_msg m;
	proto_str men[64];
	proto_event e;
	const char *body;
	uint32_t blen;

	if (!c || !member_or_fail(c, r) || !load_target(c, r, map, true, &t))
		return;
	if (!state_of(&t, &d, &m, men)) {
		fail(r, "INTERNAL", "stored message does not decode");
		goto out;
	}
	if (m.deleted) {
		proto_doc_free(&d);
		fail(r, "NOT_FOUND", "message was deleted");
		goto out;
	}
	proto_get_str(map, "body", &body, &blen);
	e = change_of(c, r, "edit", t.seq);
	e.body = (proto_str){ body, blen };

	/* the version this edit makes, for `edits` */
	proto_out_reset(&ss->out);
	msgpack_pack_map(&ss->out.pk, 2);
	proto_pk_cstr(&ss->out.pk, "body");
	proto_pk_str(&ss->out.pk, body, blen);
	proto_pk_cstr(&ss->out.pk, "ts");
	msgpack_pack_uint64(&ss->out.pk, e.ts);
	store_put_version(ss->batch, c->id, t.seq, e.seq, ss->out.data,
			  ss->out.len);

	m.body = e.body;
	m.edited = e.ts;
	proto_out_reset(&ss->out);
	proto_enc_msg(&ss->out, &m);
	ov_set(ss, c, t.st, &ss->out);
	t.st->pedits = realloc(t.st->pedits,
			       (t.st->npedits + 1) * sizeof(*t.st->pedits));
	t.st->pedits[t.st->npedits++] =
		(struct pedit){ e.seq, e.ts, c->msgs };
	proto_doc_free(&d);
	change_event(ss, c, r, &e);
out:
	ov_release(c, t.st);
	target_free(&t);
}

/* Rewrite the stored event at seq with an empty body (a deleted message's
 * text leaves the log too, not only the history view). */
static void scrub_event(struct shard_state *ss, struct chan *c, uint64_t seq,
			const void *frame, size_t len, uint64_t cum)
{
	proto_doc d;
	proto_event e;
	proto_str men[64];

	if (proto_decode_max(&d, frame, len, PROTO_MAX_STATE) != PROTO_OK)
		return;
	if (proto_dec_event(&d.root, &e, men, 64) == 0) {
		e.body = (proto_str){ "", 0 };
		proto_out_reset(&ss->out);
		proto_enc_event(&ss->out, &e);
		store_put_event(ss->batch, c->id, seq, ss->out.data,
				ss->out.len, cum);
	}
	proto_doc_free(&d);
}

struct scrub {
	struct shard_state *ss;
	struct chan *c;
};

static int scrub_version(void *arg, uint64_t seq, const void *v, size_t len)
{
	struct scrub *sc = arg;
	void *ev;
	size_t n;
	uint64_t cum;

	(void)v;
	(void)len;
	if (store_get_event(srv.st, sc->c->id, seq, &ev, &n, &cum) == 0) {
		scrub_event(sc->ss, sc->c, seq, ev, n, cum);
		free(ev);
	}
	return 0;
}

static void op_delete(struct shard_state *ss, struct m_req *r,
		      const msgpack_object *map)
{
	struct chan *c = visible(ss, r);
	struct scrub sc = { ss, c };
	struct target t;
	proto_doc d;
	proto_msg m;
	proto_str men[64];
	proto_event e;

	if (!c || !member_or_fail(c, r) || !load_target(c, r, map, true, &t))
		return;
	if (!state_of(&t, &d, &m, men)) {
		fail(r, "INTERNAL", "stored message does not decode");
		goto out;
	}
	if (m.deleted) {
		proto_doc_free(&d);
		fail(r, "NOT_FOUND", "message was deleted");
		goto out;
	}
	e = change_of(c, r, "delete", t.seq);
	m.body = (proto_str){ "", 0 };
	m.deleted = true;
	m.reactions = NULL;
	m.reactions_len = 0;
	m.nmentions = 0;
	proto_out_reset(&ss->out);
	proto_enc_msg(&ss->out, &m);
	ov_set(ss, c, t.st, &ss->out);
	proto_doc_free(&d);

	/* the text goes from the log and the versions as well */
	store_scan_versions(srv.st, c->id, t.seq, scrub_version, &sc);
	for (uint32_t i = 0; i < t.st->npedits; i++) {
		proto_event pe = {
			.ch = { c->id, (uint32_t)strlen(c->id) },
			.seq = t.st->pedits[i].seq,
			.k = { "edit", 4 },
			.ts = t.st->pedits[i].ts,
			.from = t.e.from,
			.target = t.seq,
			.body = { "", 0 },
		};

		proto_out_reset(&ss->out);
		proto_enc_event(&ss->out, &pe);
		store_put_event(ss->batch, c->id, pe.seq, ss->out.data,
				ss->out.len, t.st->pedits[i].cum);
	}
	store_del_versions(ss->batch, c->id, t.seq);
	t.e.body = (proto_str){ "", 0 };
	proto_out_reset(&ss->out);
	proto_enc_event(&ss->out, &t.e);
	store_put_event(ss->batch, c->id, t.seq, ss->out.data, ss->out.len,
			t.cum);
	change_event(ss, c, r, &e);
out:
	ov_release(c, t.st);
	target_free(&t);
}

#define MAX_EMOJI_KINDS 50

/* The reactions map of a message with user's emoji turned on or off, into
 * out; *changed says whether that changed anything. -1: too many kinds. */
static int react_apply(const proto_msg *m, const char *user, proto_str emoji,
		       bool on, proto_out *out, bool *changed)
{
	proto_doc d;
	const msgpack_object_kv *kv = NULL;
	uint32_t n = 0, keep = 0;
	size_t ulen = strlen(user);
	int found = -1, has = 0;

	*changed = false;
	if (m->reactions && m->reactions_len) {
		/* wrap the map so the codec sees one document */
		proto_out w;

		proto_out_init(&w, 0, m->reactions_len + 16);
		proto_pk_raw(&w.pk, m->reactions, m->reactions_len);
		if (state_decode(&d, w.data, w.len) != PROTO_OK) {
			proto_out_free(&w);
			return -2;
		}
		proto_out_free(&w);
		kv = d.root.via.map.ptr;
		n = d.root.via.map.size;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (kv[i].key.via.str.size == emoji.n &&
		    !memcmp(kv[i].key.via.str.ptr, emoji.s, emoji.n))
			found = (int)i;
	}
	if (found >= 0) {
		const msgpack_object_array *a = &kv[found].val.via.array;

		for (uint32_t j = 0; j < a->size; j++)
			has |= a->ptr[j].via.str.size == ulen &&
			       !memcmp(a->ptr[j].via.str.ptr, user, ulen);
	}
	if ((on && has) || (!on && !has)) {
		if (n)
			proto_doc_free(&d);
		return 0;
	}
	if (on && found < 0 && n >= MAX_EMOJI_KINDS) {
		proto_doc_free(&d);
		return -1;
	}
	*changed = true;
	/* kinds in the order they first appeared; users in the order they
	 * reacted; a kind nobody has any more goes */
	for (uint32_t i = 0; i < n; i++)
		keep += !(i == (uint32_t)found && !on &&
			  kv[i].val.via.array.size == 1);
	msgpack_pack_map(&out->pk, keep + (found < 0));
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object_array *a = &kv[i].val.via.array;
		bool mine = i == (uint32_t)found;

		if (mine && !on && a->size == 1)
			continue;
		proto_pk_str(&out->pk, kv[i].key.via.str.ptr,
			     kv[i].key.via.str.size);
		msgpack_pack_array(&out->pk, a->size + (mine ? (on ? 1 : -1) : 0));
		for (uint32_t j = 0; j < a->size; j++) {
			if (mine && !on && a->ptr[j].via.str.size == ulen &&
			    !memcmp(a->ptr[j].via.str.ptr, user, ulen))
				continue;
			proto_pk_str(&out->pk, a->ptr[j].via.str.ptr,
				     a->ptr[j].via.str.size);
		}
		if (mine && on)
			proto_pk_str(&out->pk, user, ulen);
	}
	if (found < 0) {
		proto_pk_str(&out->pk, emoji.s, emoji.n);
		msgpack_pack_array(&out->pk, 1);
		proto_pk_str(&out->pk, user, ulen);
	}
	if (n)
		proto_doc_free(&d);
	return 0;
}

static void op_react(struct shard_state *ss, struct m_req *r,
		     const msgpack_object *map)
{
	proto_out rx;
	struct chan *c = visible(ss, r);
	struct target t;
	proto_doc d;
	proto_msg m;
	proto_str men[64], emoji;
	proto_event e;
	bool on = false, changed;
	int rc;

	if (!c || !member_or_fail(c, r) || !load_target(c, r, map, false, &t))
		return;
	proto_out_init(&rx, 0, 256);
	if (!state_of(&t, &d, &m, men)) {
		fail(r, "INTERNAL", "stored message does not decode");
		goto out;
	}
	if (m.deleted) {
		proto_doc_free(&d);
		fail(r, "NOT_FOUND", "message was deleted");
		goto out;
	}
	proto_get_str(map, "emoji", &emoji.s, &emoji.n);
	proto_get_bool(map, "on", &on);
	rc = react_apply(&m, r->user, emoji, on, &rx, &changed);
	if (rc) {
		proto_doc_free(&d);
		fail(r, rc == -1 ? "CONFLICT" : "INTERNAL",
		     rc == -1 ? "too many different reactions on this message"
			      : "stored reactions do not decode");
		goto out;
	}
	if (!changed) {
		/* already so: no event, and the answer says it */
		proto_doc_free(&d);
		proto_out_reset(&ss->out);
		proto_enc_res_ok(&ss->out, r->rid, 1);
		proto_pk_cstr(&ss->out.pk, "noop");
		msgpack_pack_true(&ss->out.pk);
		reply_state(ss, c, r);
		goto out;
	}
	m.reactions = rx.len > 1 ? rx.data : NULL; /* 0x80: nobody */
	m.reactions_len = rx.len > 1 ? rx.len : 0;
	proto_out_reset(&ss->out);
	proto_enc_msg(&ss->out, &m);
	ov_set(ss, c, t.st, &ss->out);
	proto_doc_free(&d);
	e = change_of(c, r, "react", t.seq);
	e.emoji = emoji;
	e.on = on;
	change_event(ss, c, r, &e);
out:
	proto_out_free(&rx);
	ov_release(c, t.st);
	target_free(&t);
}

void chan_on_req(struct shard_state *ss, struct m_req *r)
{
	proto_doc doc;
	uint64_t now = rt_mono_us();

	stage_add(ss, ST_TO_CHANNEL, now - r->t0_us);
	if (proto_decode_max(&doc, r->frame, r->len, srv.lim.max_frame) !=
	    PROTO_OK) {
		fail(r, "INTERNAL", "request did not decode twice");
		free(r);
		return;
	}
	r->t_chan_us = now;
	if (__atomic_load_n(&srv.storage_failed, __ATOMIC_RELAXED) &&
	    r->op != OP_TYPING) {
		fail(r, "UNAVAILABLE", "storage is failing");
		goto out;
	}
	switch (r->op) {
	case OP_CH_CREATE: op_create(ss, r, &doc.root); break;
	case OP_DM_OPEN: op_dm_open(ss, r, &doc.root); break;
	case OP_CH_JOIN: op_join(ss, r); break;
	case OP_CH_LEAVE: op_leave(ss, r); break;
	case OP_CH_INVITE: op_invite(ss, r, &doc.root); break;
	case OP_SEND: op_send(ss, r, &doc.root); break;
	case OP_READ: op_read(ss, r, &doc.root); break;
	case OP_TYPING: op_typing(ss, r); break;
	case OP_EDIT: op_edit(ss, r, &doc.root); break;
	case OP_DELETE: op_delete(ss, r, &doc.root); break;
	case OP_REACT: op_react(ss, r, &doc.root); break;
	default: fail(r, "BAD_REQUEST", "unknown op"); break;
	}
out:
	proto_doc_free(&doc);
	free(r);
}
