/*
 * session: one per WebSocket connection, on the shard that accepted it.
 *
 * Accepts (from the transport): frames; (from other actors, by mailbox):
 *   M_ATTACH_RES  the user actor lets this device in (or: 4029)
 *   M_DELIVER     a response or frame for this connection
 *   M_FANOUT      a channel's event (or member/typing frame) for local subs
 *   M_SUBACK      a channel's catch-up; the subscription goes live
 *   M_CONN_CHAN   this user joined/left/was invited to a channel
 *
 * It decodes and validates every request. Reads (history, events, lists)
 * are answered here, straight from storage's synced data; anything that
 * changes state goes to the user actor, then the channel actor.
 *
 * Subscriptions: a connection listens to each of its user's channels. A
 * subscription starts inactive: the channel actor answers M_SUB with the
 * events after the client's position up to its durable seq L (M_SUBACK),
 * and live events after L follow in the same mailbox order, so the client
 * sees every event once and in order. Live events that reach an inactive
 * subscription are dropped: the catch-up still to come covers them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

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

struct session {
	rt_conn *conn;
	rt_conn_id id;
	struct session *prev, *next;
	uint64_t opened_ms;
	uint8_t state;
	bool attached;
	char ws[ID_CAP], user[ID_CAP];
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
};

/* Pre-hello deadline queue: connections in accept order. */
struct newbie {
	rt_conn_id id;
	uint64_t deadline;
};
static __thread struct newbie *nq;
static __thread uint32_t nq_head, nq_len, nq_cap;

static struct session *sess_of(rt_conn *c) { return rt_conn_user(c); }

static struct session *find_sess(rt_shard *s, rt_conn_id id)
{
	rt_conn *c = rt_conn_find(s, id);

	return c ? sess_of(c) : NULL;
}

/* ---- subscriptions -------------------------------------------------------- */

static struct sub *sub_find(struct session *se, const char *ch)
{
	for (uint32_t i = 0; i < se->nsubs; i++)
		if (!strcmp(se->subs[i]->ch, ch))
			return se->subs[i];
	return NULL;
}

static void sub_add(struct shard_state *ss, struct session *se, const char *ch,
		    uint64_t after, bool resume)
{
	struct sublist *l = smap_get(&ss->subs, ch, strlen(ch));
	struct sub *sb;
	struct m_sub *m;

	if (sub_find(se, ch))
		return;
	if (!l) {
		l = calloc(1, sizeof(*l));
		strcpy(l->ch, ch);
		smap_put(&ss->subs, l->ch, strlen(l->ch), l);
	}
	sb = calloc(1, sizeof(*sb));
	sb->sess = se;
	strcpy(sb->ch, ch);
	sb->last_seq = after;
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 4;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
	}
	sb->li = l->n;
	l->v[l->n++] = sb;
	if (se->nsubs == se->capsubs) {
		se->capsubs = se->capsubs ? se->capsubs * 2 : 8;
		se->subs = realloc(se->subs, se->capsubs * sizeof(*se->subs));
	}
	se->subs[se->nsubs++] = sb;

	m = msg_new(sizeof(*m), M_SUB);
	strcpy(m->ch, ch);
	strcpy(m->ws, se->ws);
	strcpy(m->user, se->user);
	m->conn = se->id;
	m->after = after;
	m->resume = resume;
	rt_post(chan_shard(ch), &m->h);
}

static void sub_remove(struct shard_state *ss, struct session *se,
		       struct sub *sb)
{
	struct sublist *l = smap_get(&ss->subs, sb->ch, strlen(sb->ch));
	struct m_unsub *m = msg_new(sizeof(*m), M_UNSUB);

	strcpy(m->ch, sb->ch);
	rt_post(chan_shard(sb->ch), &m->h);
	if (l) {
		/* swap-remove from the channel's list */
		l->v[sb->li] = l->v[--l->n];
		l->v[sb->li]->li = sb->li;
		if (!l->n) {
			smap_del(&ss->subs, l->ch, strlen(l->ch));
			free(l->v);
			free(l);
		}
	}
	for (uint32_t i = 0; i < se->nsubs; i++) {
		if (se->subs[i] == sb) {
			se->subs[i] = se->subs[--se->nsubs];
			break;
		}
	}
	free(sb);
}

void sess_on_fanout(struct shard_state *ss, struct m_fanout *m)
{
	struct sublist *l = smap_get(&ss->subs, m->ch, strlen(m->ch));

	if (!l)
		return;
	for (uint32_t i = 0; i < l->n; i++) {
		struct sub *sb = l->v[i];

		if (!sb->active)
			continue;
		if (m->skip_user[0] && !strcmp(sb->sess->user, m->skip_user))
			continue;
		if (m->seq) {
			if (m->seq <= sb->last_seq)
				continue; /* already had it from its catch-up */
			sb->last_seq = m->seq;
		}
		rt_conn_send(sb->sess->conn, m->buf);
		ss->deliveries++;
	}
}

void sess_on_suback(struct shard_state *ss, struct m_suback *m)
{
	struct session *se = find_sess(rt_self(), m->conn);
	struct sub *sb = se ? sub_find(se, m->ch) : NULL;

	if (!sb)
		return;
	if (m->denied) {
		sub_remove(ss, se, sb);
		return;
	}
	for (uint32_t i = 0; i < m->n; i++) {
		rt_conn_send(se->conn, m->frames[i]);
		ss->deliveries++;
	}
	if (m->last_seq > sb->last_seq)
		sb->last_seq = m->last_seq;
	sb->active = true;
}

void sess_on_conn_chan(struct shard_state *ss, struct m_user_chan *m)
{
	struct session *se = find_sess(rt_self(), m->conn);
	struct sub *sb;

	if (!se || se->state != S_READY)
		return;
	if (m->action == ACT_FRAME) {
		if (m->conn != m->except && m->frame)
			rt_conn_send(se->conn, m->frame);
		return;
	}
	if (m->frame)
		rt_conn_send(se->conn, m->frame);
	sb = sub_find(se, m->ch);
	if (m->action == ACT_LEAVE) {
		if (sb)
			sub_remove(ss, se, sb);
	} else if (!sb) {
		sub_add(ss, se, m->ch, m->after, false);
	}
}

void sess_on_deliver(struct shard_state *ss, struct m_deliver *m)
{
	rt_conn *c = rt_conn_find(rt_self(), m->conn);

	(void)ss;
	if (!c)
		return;
	if (m->buf)
		rt_conn_send(c, m->buf);
	if (m->close_code)
		rt_conn_close(c, m->close_code, NULL);
}

/* ---- presence: what this connection watches ------------------------------ */

static int cmp_id(const void *a, const void *b)
{
	return strcmp(a, b);
}

static bool watching(const struct session *se, const char *user)
{
	return se->nwatch &&
	       bsearch(user, se->watch, se->nwatch, ID_CAP, cmp_id) != NULL;
}

/* Replace the watched set with users[n] (sorted, no duplicates; taken
 * over). Tells the presence shards what changed; with gen != 0 each shard
 * that holds one of the users also reports their states (M_WATCH_RES).
 * Returns how many shards will answer. */
static uint32_t watch_set(struct session *se, char (*users)[ID_CAP],
			  uint32_t n, uint64_t gen)
{
	uint32_t per[RT_MAX_SHARDS] = { 0 }, answering = 0;
	struct m_watch *m[RT_MAX_SHARDS] = { 0 };
	unsigned *home_new = calloc(n + 1, sizeof(unsigned));
	unsigned *home_old = calloc(se->nwatch + 1, sizeof(unsigned));
	uint32_t i = 0, j = 0;

	for (i = 0; i < n; i++)
		per[home_new[i] = user_shard(se->ws, users[i])]++;
	for (j = 0; j < se->nwatch; j++)
		per[home_old[j] = user_shard(se->ws, se->watch[j])]++;
	for (unsigned s = 0; s < rt_nshards(); s++) {
		if (!per[s])
			continue;
		m[s] = msg_new(sizeof(*m[s]) + per[s] * sizeof(m[s]->e[0]),
			       M_WATCH);
		m[s]->conn = se->id;
		m[s]->gen = gen;
		strcpy(m[s]->ws, se->ws);
	}
	/* merge the two sorted sets */
	i = j = 0;
	while (i < n || j < se->nwatch) {
		int c = i == n ? 1 : j == se->nwatch ? -1
			: strcmp(users[i], se->watch[j]);
		struct pw_ent *e;

		if (c <= 0) {
			e = &m[home_new[i]]->e[m[home_new[i]]->n++];
			strcpy(e->user, users[i]);
			e->flags = (c < 0 ? PW_ADD : 0) | (gen ? PW_REPORT : 0);
			i++;
			j += c == 0;
		} else {
			e = &m[home_old[j]]->e[m[home_old[j]]->n++];
			strcpy(e->user, se->watch[j]);
			e->flags = PW_DEL;
			j++;
		}
	}
	for (unsigned s = 0; s < rt_nshards(); s++) {
		bool reports = false;

		if (!m[s])
			continue;
		for (uint32_t k = 0; k < m[s]->n && !reports; k++)
			reports = (m[s]->e[k].flags & PW_REPORT) != 0;
		answering += reports;
		if (m[s]->n)
			rt_post(s, &m[s]->h);
		else
			free(m[s]);
	}
	free(home_new);
	free(home_old);
	free(se->watch);
	se->watch = users;
	se->nwatch = n;
	return answering;
}

static void gather_answer(struct shard_state *ss, struct session *se,
			  struct gather *g)
{
	msgpack_packer *pk = &ss->out.pk;

	if (!g->has_rid)
		return;
	proto_out_reset(&ss->out);
	proto_enc_res_ok(&ss->out, g->rid, 1);
	proto_pk_cstr(pk, "presence");
	msgpack_pack_map(pk, g->n);
	for (uint32_t i = 0; i < g->n; i++) {
		proto_pk_cstr(pk, g->e[i].user);
		msgpack_pack_map(pk, 2);
		proto_pk_cstr(pk, "status");
		proto_pk_cstr(pk, pstatus_names[g->e[i].status]);
		proto_pk_cstr(pk, "since");
		msgpack_pack_uint64(pk, g->e[i].since);
	}
	rt_conn_send_bytes(se->conn, ss->out.data, ss->out.len);
}

void sess_on_watch_res(struct shard_state *ss, struct m_watch *m)
{
	struct session *se = find_sess(rt_self(), m->conn);
	struct gather *g, **pg;

	if (!se)
		return;
	for (pg = &se->gathers; (g = *pg) && g->gen != m->gen; pg = &g->next)
		;
	if (!g)
		return;
	for (uint32_t i = 0; i < m->n; i++) {
		struct pw_ent *e = bsearch(m->e[i].user, g->e, g->n,
					   sizeof(*g->e), cmp_id);

		if (e) {
			e->status = m->e[i].status;
			e->since = m->e[i].since;
			e->flags = 1; /* answered */
		}
	}
	if (--g->shards_left)
		return;
	*pg = g->next;
	gather_answer(ss, se, g);
	free(g->e);
	free(g);
}

void sess_search_done(rt_conn_id conn)
{
	struct session *se = find_sess(rt_self(), conn);

	if (se && se->searching)
		se->searching--;
}

void sess_on_presence(struct shard_state *ss, struct m_presence *m)
{
	for (uint32_t i = 0; i < m->n; i++) {
		struct session *se = find_sess(rt_self(), m->conns[i]);
		bool held = false;

		if (!se || !watching(se, m->user))
			continue;
		/* A watch still gathering already has this user's state:
		 * its answer carries the change (a frame now would come
		 * before an answer that is older). */
		for (struct gather *g = se->gathers; g; g = g->next) {
			struct pw_ent *e = bsearch(m->user, g->e, g->n,
						   sizeof(*g->e), cmp_id);

			if (e && e->flags) {
				e->status = m->status;
				e->since = m->since;
				held = true;
			}
		}
		if (!held) {
			rt_conn_send(se->conn, m->buf);
			ss->deliveries++;
		}
	}
}

/* ---- lifecycle ------------------------------------------------------------- */

void sess_open(struct shard_state *ss, rt_conn *c)
{
	struct session *se = calloc(1, sizeof(*se));

	se->conn = c;
	se->id = rt_conn_get_id(c);
	se->opened_ms = rt_now_ms();
	se->next = ss->sessions;
	if (ss->sessions)
		ss->sessions->prev = se;
	ss->sessions = se;
	rt_conn_set_user(c, se);

	if (nq_len == nq_cap) {
		uint32_t ncap = nq_cap ? nq_cap * 2 : 256;
		struct newbie *n = malloc(ncap * sizeof(*n));

		for (uint32_t i = 0; i < nq_len; i++)
			n[i] = nq[(nq_head + i) % nq_cap];
		free(nq);
		nq = n;
		nq_head = 0;
		nq_cap = ncap;
	}
	nq[(nq_head + nq_len) % nq_cap] = (struct newbie){
		se->id, se->opened_ms + srv.lim.hello_ms
	};
	nq_len++;
}

void sess_close(struct shard_state *ss, rt_conn *c)
{
	struct session *se = sess_of(c);

	if (!se)
		return;
	while (se->nsubs)
		sub_remove(ss, se, se->subs[se->nsubs - 1]);
	watch_set(se, NULL, 0, 0);
	while (se->gathers) {
		struct gather *g = se->gathers;

		se->gathers = g->next;
		free(g->e);
		free(g);
	}
	if (se->attached) {
		struct m_attach *m = msg_new(sizeof(*m), M_DETACH);

		m->conn = se->id;
		strcpy(m->ws, se->ws);
		strcpy(m->user, se->user);
		rt_post(user_shard(se->ws, se->user), &m->h);
	}
	if (se->prev)
		se->prev->next = se->next;
	else
		ss->sessions = se->next;
	if (se->next)
		se->next->prev = se->prev;
	while (se->held) {
		struct held *h = se->held;

		se->held = h->next;
		free(h);
	}
	free(se->bad_ts);
	free(se->subs);
	free(se->resume);
	free(se);
	rt_conn_set_user(c, NULL);
}

/* The shard is stopping: its thread-local deadline queue goes with it. */
void sess_shard_stop(struct shard_state *ss)
{
	(void)ss;
	free(nq);
	nq = NULL;
	nq_head = nq_len = nq_cap = 0;
}

void sess_tick(struct shard_state *ss, uint64_t now)
{
	(void)ss;
	while (nq_len && nq[nq_head].deadline <= now) {
		struct session *se = find_sess(rt_self(), nq[nq_head].id);

		if (se && se->state != S_READY)
			rt_conn_close(se->conn, 4001, "hello timeout");
		nq_head = (nq_head + 1) % nq_cap;
		nq_len--;
	}
}

void sess_goaway_all(struct shard_state *ss)
{
	for (struct session *se = ss->sessions; se; se = se->next) {
		uint16_t jitter;

		if (getrandom(&jitter, sizeof(jitter), 0) != sizeof(jitter))
			jitter = 0;
		proto_out_reset(&ss->out);
		proto_enc_goaway(&ss->out, 1000 + jitter % 2000);
		rt_conn_send_bytes(se->conn, ss->out.data, ss->out.len);
	}
}

/* ---- request helpers ---------------------------------------------------- */

struct req {
	struct shard_state *ss;
	struct session *se; /* NULL for a request that came over HTTP */
	rt_conn *conn;      /* where the answer goes */
	rt_conn_id id;
	const char *ws, *user;
	const msgpack_object *map;
	const uint8_t *frame;
	size_t len;
	uint64_t rid;
	bool has_rid;
	int op;
	uint64_t t_rx_us; /* when the frame arrived */
};

static void fail(struct req *r, const char *code, const char *msg)
{
	reply_err(r->conn, r->has_rid, r->rid, op_names[r->op], code, msg,
		  0);
}

static void ok_empty(struct req *r)
{
	if (!r->has_rid)
		return;
	proto_out_reset(&r->ss->out);
	proto_enc_res_ok(&r->ss->out, r->rid, 0);
	rt_conn_send_bytes(r->conn, r->ss->out.data, r->ss->out.len);
}

/* A required channel id argument; false (and answered) if bad. */
static bool arg_ch(struct req *r, char *ch)
{
	const char *s;
	uint32_t n;

	if (proto_get_str(r->map, "ch", &s, &n) || !proto_id_valid(s, n)) {
		fail(r, "BAD_REQUEST", "ch must be a channel id");
		return false;
	}
	memcpy(ch, s, n);
	ch[n] = 0;
	return true;
}

/* For reads: the channel must exist in the user's workspace; a private or
 * DM channel only for its members. One the user may not see does not
 * exist for them: the same answer, word for word, as an id never made
 * (the channel actor's visible() says the same). */
static bool can_read(struct req *r, const char *ch, store_channel *rec,
		     store_member *mem, bool *member)
{
	int rc = store_get_channel(srv.st, ch, rec);

	if (rc && rc != -ENOENT) {
		fail(r, "UNAVAILABLE", "storage unavailable");
		return false;
	}
	if (rc == 0 && !strcmp(rec->ws, r->ws)) {
		rc = store_get_member(srv.st, ch, r->user, mem);
		if (rc && rc != -ENOENT) {
			fail(r, "UNAVAILABLE", "storage unavailable");
			return false;
		}
		*member = rc == 0;
		if (*member || rec->kind == STORE_PUBLIC)
			return true;
	}
	fail(r, "NOT_FOUND", "no such channel");
	return false;
}

static const char *kind_name(uint8_t k)
{
	return k == STORE_PUBLIC ? "public" : k == STORE_PRIVATE ? "private" : "dm";
}

/* Channel summary {id,name,kind,last_seq,read_seq,unread,mentions[,member]} */
static void pack_channel(msgpack_packer *pk, const store_channel *rec,
			 const char *user, bool with_member, bool member)
{
	store_chstat st = { 0 };
	store_member m = { 0 };
	uint64_t at = 0, men = 0;

	/* one point in time: a commit landing between these reads would
	 * count a mention whose message last_seq and unread do not have */
	bool pinned = store_read_pin(srv.st) == 0;

	store_get_chstat(srv.st, rec->id, &st);
	if (member && store_get_member(srv.st, rec->id, user, &m) == 0) {
		store_msgs_at(srv.st, rec->id, m.read_seq, &at);
		store_count_mentions(srv.st, rec->id, user, m.read_seq, &men);
	}
	if (pinned)
		store_read_unpin(srv.st);
	msgpack_pack_map(pk, with_member ? 8 : 7);
	proto_pk_cstr(pk, "id");
	proto_pk_cstr(pk, rec->id);
	proto_pk_cstr(pk, "name");
	proto_pk_cstr(pk, rec->name);
	proto_pk_cstr(pk, "kind");
	proto_pk_cstr(pk, kind_name(rec->kind));
	proto_pk_cstr(pk, "last_seq");
	msgpack_pack_uint64(pk, st.last_seq);
	proto_pk_cstr(pk, "read_seq");
	msgpack_pack_uint64(pk, m.read_seq);
	proto_pk_cstr(pk, "unread");
	msgpack_pack_uint64(pk, member && st.msgs > at ? st.msgs - at : 0);
	proto_pk_cstr(pk, "mentions");
	msgpack_pack_uint64(pk, men);
	if (with_member) {
		proto_pk_cstr(pk, "member");
		if (member)
			msgpack_pack_true(pk);
		else
			msgpack_pack_false(pk);
	}
}

/* ---- collecting ids from scans ------------------------------------------ */

struct idvec {
	char (*v)[ID_CAP];
	uint32_t n, cap;
};

static int collect_id(void *arg, const char *id, size_t len)
{
	struct idvec *iv = arg;

	if (len >= ID_CAP)
		return 0;
	if (iv->n == iv->cap) {
		iv->cap = iv->cap ? iv->cap * 2 : 16;
		iv->v = realloc(iv->v, iv->cap * sizeof(*iv->v));
	}
	memcpy(iv->v[iv->n], id, len);
	iv->v[iv->n][len] = 0;
	iv->n++;
	return 0;
}

/* ---- hello ------------------------------------------------------------------ */

static void op_hello(struct req *r)
{
	struct session *se = r->se;
	struct auth_claims cl;
	const char *tok, *why = "bad token";
	uint32_t tn;
	const msgpack_object_map *res = NULL;
	int rc;

	if (se->state != S_NEW) {
		fail(r, "BAD_REQUEST", "already authenticated");
		return;
	}
	rc = proto_get_map(r->map, "resume", &res);
	if (rc == PROTO_F_TYPE || (res && res->size > 100000)) {
		fail(r, "BAD_REQUEST", "resume must be a map of channel -> seq");
		return;
	}
	if (proto_get_str(r->map, "token", &tok, &tn) ||
	    auth_verify(srv.key, srv.key_len, tok, tn,
			(int64_t)(rt_now_ms() / 1000), &cl, &why)) {
		r->ss->auth_failures++;
		fail(r, "UNAUTHORIZED", why);
		rt_conn_close(se->conn, 4001, why);
		return;
	}
	if (res && res->size) {
		se->resume = calloc(res->size, sizeof(*se->resume));
		for (uint32_t i = 0; i < res->size; i++) {
			const msgpack_object *k = &res->ptr[i].key,
					     *v = &res->ptr[i].val;

			if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
			    !proto_id_valid(k->via.str.ptr, k->via.str.size)) {
				free(se->resume);
				se->resume = NULL;
				se->nresume = 0;
				fail(r, "BAD_REQUEST",
				     "resume must be a map of channel -> seq");
				return;
			}
			memcpy(se->resume[se->nresume].ch, k->via.str.ptr,
			       k->via.str.size);
			se->resume[se->nresume].seq = v->via.u64;
			se->nresume++;
		}
	}
	strcpy(se->ws, cl.ws);
	strcpy(se->user, cl.sub);
	se->hello_rid = r->rid;
	se->hello_has_rid = r->has_rid;
	se->state = S_ATTACHING;

	struct m_attach *m = msg_new(sizeof(*m), M_ATTACH);
	m->conn = se->id;
	strcpy(m->ws, se->ws);
	strcpy(m->user, se->user);
	rt_post(user_shard(se->ws, se->user), &m->h);
}

static void pack_limits(msgpack_packer *pk)
{
	const struct limits *l = &srv.lim;

	msgpack_pack_map(pk, 11);
	proto_pk_cstr(pk, "frame");
	msgpack_pack_uint32(pk, l->max_frame);
	proto_pk_cstr(pk, "body");
	msgpack_pack_uint32(pk, l->max_body);
	proto_pk_cstr(pk, "name");
	msgpack_pack_uint32(pk, l->max_name);
	proto_pk_cstr(pk, "members");
	msgpack_pack_uint32(pk, l->max_members);
	proto_pk_cstr(pk, "dm");
	msgpack_pack_uint32(pk, l->max_dm);
	proto_pk_cstr(pk, "devices");
	msgpack_pack_uint32(pk, l->max_devices);
	proto_pk_cstr(pk, "send_per_s");
	msgpack_pack_uint32(pk, l->rate_per_s);
	proto_pk_cstr(pk, "send_burst");
	msgpack_pack_uint32(pk, l->rate_burst);
	proto_pk_cstr(pk, "outbuf");
	msgpack_pack_uint64(pk, l->max_outbuf);
	proto_pk_cstr(pk, "outbuf_max");
	msgpack_pack_uint64(pk, RT_OUTBUF_MAX_FACTOR * l->max_outbuf);
	proto_pk_cstr(pk, "outbuf_stall_ms");
	msgpack_pack_uint32(pk, RT_OUTBUF_STALL_MS);
}

static void replay_held(struct shard_state *ss, struct session *se)
{
	rt_conn_id id = se->id;

	while (se->held) {
		struct held *h = se->held;

		se->held = h->next;
		se->nheld--;
		se->held_bytes -= h->len;
		sess_frame(ss, se->conn, h->data, h->len, h->binary);
		free(h);
		/* a replayed request may have closed the connection */
		if (!rt_conn_find(rt_self(), id))
			return;
	}
}

void sess_on_attach_res(struct shard_state *ss, struct m_attach *m)
{
	struct session *se = find_sess(rt_self(), m->conn);
	struct idvec iv = { 0 };
	msgpack_packer *pk = &ss->out.pk;
	store_channel *recs;
	uint64_t *lasts;
	uint32_t n = 0;

	if (!se) {
		if (m->ok) { /* gone meanwhile: give the device slot back */
			struct m_attach *d = msg_new(sizeof(*d), M_DETACH);

			*d = *m;
			d->h.type = M_DETACH;
			rt_post(user_shard(m->ws, m->user), &d->h);
		}
		return;
	}
	if (!m->ok) {
		proto_out_reset(&ss->out);
		if (se->hello_has_rid)
			proto_enc_res_err(&ss->out, se->hello_rid, "FORBIDDEN",
					  "too many connections for this user", 0);
		else
			proto_enc_err(&ss->out, "FORBIDDEN",
				      "too many connections for this user",
				      "hello", 5, 0);
		rt_conn_send_bytes(se->conn, ss->out.data, ss->out.len);
		rt_conn_close(se->conn, 4029, "too many connections");
		return;
	}
	se->attached = true;
	store_scan_user_channels(srv.st, se->ws, se->user, collect_id, &iv);
	recs = calloc(iv.n ? iv.n : 1, sizeof(*recs));
	lasts = calloc(iv.n ? iv.n : 1, sizeof(*lasts));
	for (uint32_t i = 0; i < iv.n; i++)
		if (store_get_channel(srv.st, iv.v[i], &recs[n]) == 0)
			n++;

	proto_out_reset(&ss->out);
	proto_enc_res_ok(&ss->out, se->hello_rid, 5);
	proto_pk_cstr(pk, "user");
	proto_pk_cstr(pk, se->user);
	proto_pk_cstr(pk, "ws");
	proto_pk_cstr(pk, se->ws);
	proto_pk_cstr(pk, "hb_ms");
	msgpack_pack_uint32(pk, srv.lim.hb_ms);
	proto_pk_cstr(pk, "limits");
	pack_limits(pk);
	proto_pk_cstr(pk, "channels");
	msgpack_pack_array(pk, n);
	/* One point in time for the whole answer (pack_channel's own pin is
	 * then -EBUSY and left alone): one snapshot instead of one per
	 * channel, and the last_seq each channel is told is the one its
	 * live stream starts from. */
	bool pinned = store_read_pin(srv.st) == 0;

	for (uint32_t i = 0; i < n; i++) {
		store_chstat st = { 0 };

		/* The position the client is told is where its live stream
		 * starts, unless it resumes from an older one. */
		pack_channel(pk, &recs[i], se->user, false, true);
		store_get_chstat(srv.st, recs[i].id, &st);
		lasts[i] = st.last_seq;
	}
	if (pinned)
		store_read_unpin(srv.st);
	if (se->hello_has_rid)
		rt_conn_send_bytes(se->conn, ss->out.data, ss->out.len);
	se->state = S_READY;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t after = lasts[i];
		bool resume = false;

		for (uint32_t j = 0; j < se->nresume; j++) {
			if (!strcmp(se->resume[j].ch, recs[i].id)) {
				after = se->resume[j].seq;
				resume = true;
				break;
			}
		}
		sub_add(ss, se, recs[i].id, after, resume);
	}
	free(se->resume);
	se->resume = NULL;
	se->nresume = 0;
	free(recs);
	free(lasts);
	free(iv.v);
	replay_held(ss, se);
}

/* ---- reads ----------------------------------------------------------------- */

static void op_ch_list(struct req *r)
{
	struct idvec mine = { 0 }, pub = { 0 };
	msgpack_packer *pk = &r->ss->out.pk;
	store_channel *recs;
	bool *member;
	uint32_t n = 0;

	store_scan_user_channels(srv.st, r->ws, r->user, collect_id, &mine);
	store_scan_public(srv.st, r->ws, collect_id, &pub);
	recs = calloc(mine.n + pub.n + 1, sizeof(*recs));
	member = calloc(mine.n + pub.n + 1, sizeof(*member));
	for (uint32_t i = 0; i < mine.n; i++)
		if (store_get_channel(srv.st, mine.v[i], &recs[n]) == 0)
			member[n++] = true;
	for (uint32_t i = 0; i < pub.n; i++) {
		bool dup = false;

		for (uint32_t j = 0; j < mine.n && !dup; j++)
			dup = !strcmp(mine.v[j], pub.v[i]);
		if (!dup && store_get_channel(srv.st, pub.v[i], &recs[n]) == 0)
			member[n++] = false;
	}
	if (r->has_rid) {
		proto_out_reset(&r->ss->out);
		proto_enc_res_ok(&r->ss->out, r->rid, 1);
		proto_pk_cstr(pk, "channels");
		msgpack_pack_array(pk, n);
		/* one point in time for the whole list (pack_channel's own
		 * pin is then -EBUSY and left alone) */
		bool pinned = store_read_pin(srv.st) == 0;

		for (uint32_t i = 0; i < n; i++)
			pack_channel(pk, &recs[i], r->user, true, member[i]);
		if (pinned)
			store_read_unpin(srv.st);
		rt_conn_send_bytes(r->conn, r->ss->out.data, r->ss->out.len);
	}
	free(recs);
	free(member);
	free(mine.v);
	free(pub.v);
}

static int opt_limit(struct req *r, const char *key, uint64_t def,
		     uint64_t max, uint64_t *out)
{
	int rc = proto_get_uint(r->map, key, out);

	if (rc == PROTO_F_MISSING) {
		*out = def;
		return 0;
	}
	if (rc || *out < 1 || *out > max) {
		char msg[64];

		snprintf(msg, sizeof(msg), "%s must be 1-%llu", key,
			 (unsigned long long)max);
		fail(r, "BAD_REQUEST", msg);
		return -1;
	}
	return 0;
}

static void op_ch_members(struct req *r)
{
	char ch[ID_CAP], after[ID_CAP] = "";
	store_channel rec;
	store_member mem;
	struct idvec iv = { 0 };
	const char *s;
	uint32_t sn;
	uint64_t limit;
	bool member;
	int more = 0, rc;

	if (!arg_ch(r, ch) || opt_limit(r, "limit", 1000, 1000, &limit))
		return;
	rc = proto_get_str(r->map, "after", &s, &sn);
	if (rc == PROTO_F_TYPE || (rc == 0 && sn && !proto_id_valid(s, sn))) {
		fail(r, "BAD_REQUEST", "after must be a user id");
		return;
	}
	if (rc == 0) {
		memcpy(after, s, sn);
		after[sn] = 0;
	}
	if (!can_read(r, ch, &rec, &mem, &member))
		return;
	if (store_scan_members(srv.st, ch, after, (unsigned)limit, collect_id,
			       &iv, &more)) {
		fail(r, "UNAVAILABLE", "storage unavailable");
		goto out;
	}
	if (r->has_rid) {
		msgpack_packer *pk = &r->ss->out.pk;

		proto_out_reset(&r->ss->out);
		proto_enc_res_ok(&r->ss->out, r->rid, 2);
		proto_pk_cstr(pk, "members");
		msgpack_pack_array(pk, iv.n);
		for (uint32_t i = 0; i < iv.n; i++)
			proto_pk_cstr(pk, iv.v[i]);
		proto_pk_cstr(pk, "more");
		if (more)
			msgpack_pack_true(pk);
		else
			msgpack_pack_false(pk);
		rt_conn_send_bytes(r->conn, r->ss->out.data, r->ss->out.len);
	}
out:
	free(iv.v);
}

struct rawvec {
	struct { void *p; size_t n; } *v;
	uint32_t n, cap;
};

static int collect_raw(void *arg, uint64_t seq, const void *v, size_t len)
{
	struct rawvec *rv = arg;

	(void)seq;
	if (rv->n == rv->cap) {
		rv->cap = rv->cap ? rv->cap * 2 : 16;
		rv->v = realloc(rv->v, rv->cap * sizeof(*rv->v));
	}
	rv->v[rv->n].p = malloc(len);
	memcpy(rv->v[rv->n].p, v, len);
	rv->v[rv->n].n = len;
	rv->n++;
	return 0;
}

static void send_raw_list(struct req *r, const char *key, struct rawvec *rv,
			  bool reverse, int more)
{
	msgpack_packer *pk = &r->ss->out.pk;

	if (r->has_rid) {
		proto_out_reset(&r->ss->out);
		proto_enc_res_ok(&r->ss->out, r->rid, 2);
		proto_pk_cstr(pk, key);
		msgpack_pack_array(pk, rv->n);
		for (uint32_t i = 0; i < rv->n; i++) {
			uint32_t j = reverse ? rv->n - 1 - i : i;

			proto_pk_raw(pk, rv->v[j].p, rv->v[j].n);
		}
		proto_pk_cstr(pk, "more");
		if (more)
			msgpack_pack_true(pk);
		else
			msgpack_pack_false(pk);
		rt_conn_send_bytes(r->conn, r->ss->out.data, r->ss->out.len);
	}
	for (uint32_t i = 0; i < rv->n; i++)
		free(rv->v[i].p);
	free(rv->v);
}

static void op_history(struct req *r)
{
	char ch[ID_CAP];
	store_channel rec;
	store_member mem;
	struct rawvec rv = { 0 };
	uint64_t before = 0, after = 0, limit, thread = 0;
	int rb, ra, rt, more = 0, rc;
	bool member;

	if (!arg_ch(r, ch) || opt_limit(r, "limit", 50, 200, &limit))
		return;
	rb = proto_get_uint(r->map, "before", &before);
	ra = proto_get_uint(r->map, "after", &after);
	rt = proto_get_uint(r->map, "thread", &thread);
	if (rb == PROTO_F_TYPE || ra == PROTO_F_TYPE || rt == PROTO_F_TYPE ||
	    (rb == 0 && ra == 0) || (rt == 0 && thread == 0)) {
		fail(r, "BAD_REQUEST",
		     "before/after/thread must be seqs, not both before and after");
		return;
	}
	if (!can_read(r, ch, &rec, &mem, &member))
		return;
	if (ra == 0)
		rc = store_scan_msgs(srv.st, ch, thread, after, 1,
				     (unsigned)limit, collect_raw, &rv, &more);
	else
		rc = store_scan_msgs(srv.st, ch, thread, rb == 0 ? before : 0,
				     -1, (unsigned)limit, collect_raw, &rv,
				     &more);
	if (rc) {
		fail(r, "UNAVAILABLE", "storage unavailable");
		r->has_rid = false; /* answered: just free what was read */
	}
	send_raw_list(r, "msgs", &rv, ra != 0, more);
}

static void op_events(struct req *r)
{
	char ch[ID_CAP];
	store_channel rec;
	store_member mem;
	struct rawvec rv = { 0 };
	uint64_t after, limit;
	int more = 0;
	bool member;

	if (!arg_ch(r, ch) || opt_limit(r, "limit", 100, 1000, &limit))
		return;
	if (proto_get_uint(r->map, "after", &after)) {
		fail(r, "BAD_REQUEST", "after must be a seq");
		return;
	}
	if (!can_read(r, ch, &rec, &mem, &member))
		return;
	if (store_scan_events(srv.st, ch, after, (unsigned)limit, collect_raw,
			      &rv, &more)) {
		fail(r, "UNAVAILABLE", "storage unavailable");
		r->has_rid = false; /* answered: just free what was read */
	}
	send_raw_list(r, "evs", &rv, false, more);
}

static void op_presence_watch(struct req *r)
{
	struct session *se = r->se;
	const msgpack_object_array *a;
	char (*users)[ID_CAP];
	struct gather *g;
	uint32_t n = 0;

	if (proto_get_array(r->map, "users", &a) || a->size > srv.lim.max_watch) {
		fail(r, "BAD_REQUEST", "users must be a list of at most 500 "
				       "user ids");
		return;
	}
	for (uint32_t i = 0; i < a->size; i++) {
		if (a->ptr[i].type != MSGPACK_OBJECT_STR ||
		    !proto_id_valid(a->ptr[i].via.str.ptr,
				    a->ptr[i].via.str.size)) {
			fail(r, "BAD_REQUEST", "users must be a list of user ids");
			return;
		}
	}
	users = calloc(a->size + 1, ID_CAP);
	for (uint32_t i = 0; i < a->size; i++)
		memcpy(users[i], a->ptr[i].via.str.ptr, a->ptr[i].via.str.size);
	qsort(users, a->size, ID_CAP, cmp_id);
	for (uint32_t i = 0; i < a->size; i++)
		if (!n || strcmp(users[i], users[n - 1]))
			memmove(users[n++], users[i], ID_CAP);

	g = calloc(1, sizeof(*g));
	g->gen = ++se->watch_gen;
	g->rid = r->rid;
	g->has_rid = r->has_rid;
	g->n = n;
	g->e = calloc(n + 1, sizeof(*g->e));
	for (uint32_t i = 0; i < n; i++)
		strcpy(g->e[i].user, users[i]);
	g->shards_left = watch_set(se, users, n, g->gen);
	if (!g->shards_left) {
		gather_answer(r->ss, se, g);
		free(g->e);
		free(g);
		return;
	}
	g->next = se->gathers;
	se->gathers = g;
}

/* A heartbeat keeps the device active for its user's presence actor. */
static void sess_heartbeat(struct req *r)
{
	ok_empty(r);
	if (r->se && r->se->attached) {
		struct m_attach *m = msg_new(sizeof(*m), M_HB);

		m->conn = r->id;
		strcpy(m->ws, r->ws);
		strcpy(m->user, r->user);
		rt_post(user_shard(r->ws, r->user), &m->h);
	}
}

/* A required message seq argument ("target"); false (and answered) if bad. */
static bool arg_target(struct req *r, uint64_t *seq)
{
	if (proto_get_uint(r->map, "target", seq) || *seq == 0) {
		fail(r, "BAD_REQUEST", "target must be a message seq");
		return false;
	}
	return true;
}

static void op_edits(struct req *r)
{
	char ch[ID_CAP];
	store_channel rec;
	store_member mem;
	struct rawvec rv = { 0 };
	proto_doc d;
	proto_event e;
	proto_str men[64];
	proto_msg m;
	void *ev = NULL, *st = NULL;
	size_t len, stlen;
	uint64_t target;
	bool member, deleted = false;
	int rc;

	if (!arg_ch(r, ch) || !arg_target(r, &target) ||
	    !can_read(r, ch, &rec, &mem, &member))
		return;
	rc = store_get_event(srv.st, ch, target, &ev, &len, NULL);
	if (rc && rc != -ENOENT) {
		fail(r, "UNAVAILABLE", "storage unavailable");
		return;
	}
	if (rc || proto_decode_max(&d, ev, len, PROTO_MAX_STATE) != PROTO_OK) {
		free(ev);
		fail(r, "NOT_FOUND", "no such message");
		return;
	}
	if (proto_dec_event(&d.root, &e, men, 64) || e.k.n != 3 ||
	    memcmp(e.k.s, "msg", 3)) {
		fail(r, "NOT_FOUND", "target is not a message");
		goto out;
	}
	if (e.from.n != strlen(r->user) || memcmp(e.from.s, r->user, e.from.n)) {
		fail(r, "FORBIDDEN", "only the author may see the versions");
		goto out;
	}
	if (store_get_msg(srv.st, ch, e.thread, target, &st, &stlen) == 0) {
		proto_doc sd;
		proto_str sm[64];

		if (proto_decode_max(&sd, st, stlen, PROTO_MAX_STATE) ==
		    PROTO_OK) {
			if (proto_dec_msg(&sd.root, &m, sm, 64) == 0)
				deleted = m.deleted;
			proto_doc_free(&sd);
		}
		free(st);
	}
	if (deleted) {
		fail(r, "NOT_FOUND", "message was deleted");
		goto out;
	}
	if (store_scan_versions(srv.st, ch, target, collect_raw, &rv)) {
		fail(r, "UNAVAILABLE", "storage unavailable");
		r->has_rid = false;
	}
	if (r->has_rid) {
		msgpack_packer *pk = &r->ss->out.pk;

		proto_out_reset(&r->ss->out);
		proto_enc_res_ok(&r->ss->out, r->rid, 1);
		proto_pk_cstr(pk, "versions");
		msgpack_pack_array(pk, rv.n + 1);
		msgpack_pack_map(pk, 2);
		proto_pk_cstr(pk, "body");
		proto_pk_str(pk, e.body.s, e.body.n);
		proto_pk_cstr(pk, "ts");
		msgpack_pack_uint64(pk, e.ts);
		for (uint32_t i = 0; i < rv.n; i++)
			proto_pk_raw(pk, rv.v[i].p, rv.v[i].n);
		rt_conn_send_bytes(r->conn, r->ss->out.data, r->ss->out.len);
	}
	for (uint32_t i = 0; i < rv.n; i++)
		free(rv.v[i].p);
	free(rv.v);
out:
	proto_doc_free(&d);
	free(ev);
}

/* ---- writes: validated here, carried out by the channel actor ------------- */

static bool arg_users(struct req *r, unsigned max)
{
	const msgpack_object_array *a;

	if (proto_get_array(r->map, "users", &a) || a->size < 1 ||
	    a->size > max) {
		fail(r, "BAD_REQUEST", "users must be a list of user ids");
		return false;
	}
	for (uint32_t i = 0; i < a->size; i++) {
		if (a->ptr[i].type != MSGPACK_OBJECT_STR ||
		    !proto_id_valid(a->ptr[i].via.str.ptr,
				    a->ptr[i].via.str.size)) {
			fail(r, "BAD_REQUEST", "users must be a list of user ids");
			return false;
		}
	}
	return true;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The members of a dm.open: the caller and the users it names, sorted,
 * each once. Returns their count; ids holds the strings, m points at them. */
static uint32_t dm_members(struct req *r, char (**ids)[ID_CAP], char ***m)
{
	const msgpack_object_array *a;
	uint32_t n = 0, k = 0;

	proto_get_array(r->map, "users", &a);
	*ids = calloc(a->size + 1, ID_CAP);
	*m = calloc(a->size + 1, sizeof(**m));
	strcpy((*ids)[n++], r->user);
	for (uint32_t i = 0; i < a->size; i++) {
		memcpy((*ids)[n], a->ptr[i].via.str.ptr, a->ptr[i].via.str.size);
		n++;
	}
	for (uint32_t i = 0; i < n; i++)
		(*m)[i] = (*ids)[i];
	qsort(*m, n, sizeof(**m), cmp_str);
	for (uint32_t i = 0; i < n; i++)
		if (!k || strcmp((*m)[i], (*m)[k - 1]))
			(*m)[k++] = (*m)[i]; /* a set: duplicates count once */
	return k;
}

/* The id DMs had before ids were keyed: "D" + 16 hex of an FNV-1a hash of
 * the workspace and the member set, which anyone could compute. Only ever
 * looked up now, so that a DM made by an older server keeps its channel. */
static void dm_id_v1(const char *ws, char *const *m, uint32_t n, char *out)
{
	uint64_t h = 1469598103934665603ULL;

	for (const char *p = ws; *p; p++)
		h = (h ^ (uint8_t)*p) * 1099511628211ULL;
	for (uint32_t i = 0; i < n; i++) {
		h = (h ^ 0) * 1099511628211ULL;
		for (const char *p = m[i]; *p; p++)
			h = (h ^ (uint8_t)*p) * 1099511628211ULL;
	}
	snprintf(out, ID_CAP, "D%016llx", (unsigned long long)h);
}

/* DM id: "D2-" + 32 hex of HMAC-SHA256 over the workspace and the member
 * set ('\0' after each: ids never hold one), keyed by a key derived from
 * the server's DM key (DATA/dm.key, random, made on first start; not the
 * JWT secret, which operators rotate). The same set always names the same
 * channel, and without the key nobody can tell which id two users' DM
 * has. */
static bool dm_id_v2(const char *ws, char *const *m, uint32_t n, char *out)
{
	static const char label[] = "parley dm id v2";
	uint8_t k[EVP_MAX_MD_SIZE], mac[EVP_MAX_MD_SIZE];
	unsigned kl = 0, ml = 0;
	size_t len = strlen(ws) + 1, o = len;
	uint8_t *buf;
	bool ok;

	for (uint32_t i = 0; i < n; i++)
		len += strlen(m[i]) + 1;
	buf = malloc(len);
	memcpy(buf, ws, o);
	for (uint32_t i = 0; i < n; i++) {
		memcpy(buf + o, m[i], strlen(m[i]) + 1);
		o += strlen(m[i]) + 1;
	}
	ok = HMAC(EVP_sha256(), srv.dm_key, (int)srv.dm_key_len,
		  (const uint8_t *)label, sizeof(label) - 1, k, &kl) &&
	     HMAC(EVP_sha256(), k, (int)kl, buf, len, mac, &ml) && ml >= 16;
	free(buf);
	if (!ok)
		return false;
	memcpy(out, "D2-", 3);
	for (int i = 0; i < 16; i++)
		sprintf(out + 3 + 2 * i, "%02x", mac[i]);
	return true;
}

/* Is id a DM of ws whose members are exactly m? 0 yes, -ENOENT no, -EIO. */
static int dm_is(const char *id, const char *ws, char *const *m, uint32_t n)
{
	struct idvec iv = { 0 };
	store_channel rec;
	int rc = store_get_channel(srv.st, id, &rec);

	if (rc)
		return rc;
	if (rec.kind != STORE_DM || strcmp(rec.ws, ws))
		return -ENOENT;
	if (store_scan_members(srv.st, id, "", n + 1, collect_id, &iv, NULL)) {
		free(iv.v);
		return -EIO;
	}
	rc = iv.n == n ? 0 : -ENOENT;
	for (uint32_t i = 0; rc == 0 && i < n; i++)
		if (strcmp(iv.v[i], m[i])) /* both in byte order */
			rc = -ENOENT;
	free(iv.v);
	return rc;
}

/* The channel of a dm.open: the DM an older server made for this member
 * set if there is one, else the keyed id. False (and answered) if storage
 * cannot tell. */
static bool dm_id(struct req *r, char *out)
{
	char (*ids)[ID_CAP];
	char **m;
	uint32_t n = dm_members(r, &ids, &m);
	bool keyed = true;
	int rc;

	dm_id_v1(r->ws, m, n, out);
	rc = dm_is(out, r->ws, m, n);
	if (rc == -ENOENT)
		keyed = dm_id_v2(r->ws, m, n, out);
	free(ids);
	free(m);
	if (rc && rc != -ENOENT) {
		fail(r, "UNAVAILABLE", "storage unavailable");
		return false;
	}
	if (!keyed) {
		fail(r, "INTERNAL", "cannot make the DM id");
		return false;
	}
	return true;
}

static bool validate_write(struct req *r, char *ch)
{
	const char *s;
	uint32_t n;
	uint64_t u;

	switch (r->op) {
	case OP_CH_CREATE: {
		uint64_t rnd;

		if (proto_get_str(r->map, "name", &s, &n) || n < 1 ||
		    n > srv.lim.max_name) {
			fail(r, "BAD_REQUEST", "name must be 1-80 bytes");
			return false;
		}
		if (proto_get_str(r->map, "kind", &s, &n) ||
		    !((n == 6 && !memcmp(s, "public", 6)) ||
		      (n == 7 && !memcmp(s, "private", 7)))) {
			fail(r, "BAD_REQUEST", "kind must be public or private");
			return false;
		}
		if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
			rnd = rt_mono_us() ^ r->id;
		snprintf(ch, ID_CAP, "C%016llx", (unsigned long long)rnd);
		return true;
	}
	case OP_DM_OPEN:
		return arg_users(r, srv.lim.max_dm - 1) && dm_id(r, ch);
	case OP_CH_INVITE:
		return arg_ch(r, ch) && arg_users(r, 1000);
	case OP_SEND: {
		const msgpack_object_array *a;
		int rc;

		if (!arg_ch(r, ch))
			return false;
		if (proto_get_str(r->map, "body", &s, &n)) {
			fail(r, "BAD_REQUEST", "body must be a string");
			return false;
		}
		if (n > srv.lim.max_body) {
			fail(r, "TOO_LARGE", "body too large");
			return false;
		}
		if (proto_get_str(r->map, "cmid", &s, &n) || n < 1 ||
		    n > PROTO_MAX_CMID) {
			fail(r, "BAD_REQUEST", "cmid must be 1-64 bytes");
			return false;
		}
		rc = proto_get_uint(r->map, "thread", &u);
		if (rc == PROTO_F_TYPE || (rc == 0 && u == 0)) {
			fail(r, "BAD_REQUEST", "thread must be a seq");
			return false;
		}
		rc = proto_get_array(r->map, "mentions", &a);
		if (rc == PROTO_F_TYPE ||
		    (rc == 0 && a->size > srv.lim.max_mentions)) {
			fail(r, "BAD_REQUEST", "mentions must be a list of user ids");
			return false;
		}
		for (uint32_t i = 0; rc == 0 && i < a->size; i++) {
			if (a->ptr[i].type != MSGPACK_OBJECT_STR ||
			    !proto_id_valid(a->ptr[i].via.str.ptr,
					    a->ptr[i].via.str.size)) {
				fail(r, "BAD_REQUEST",
				     "mentions must be a list of user ids");
				return false;
			}
		}
		return true;
	}
	case OP_READ:
		if (!arg_ch(r, ch))
			return false;
		if (proto_get_uint(r->map, "seq", &u)) {
			fail(r, "BAD_REQUEST", "seq must be an unsigned integer");
			return false;
		}
		return true;
	case OP_CH_JOIN:
	case OP_CH_LEAVE:
	case OP_TYPING:
		return arg_ch(r, ch);
	case OP_EDIT:
		if (!arg_ch(r, ch) || !arg_target(r, &u))
			return false;
		if (proto_get_str(r->map, "body", &s, &n)) {
			fail(r, "BAD_REQUEST", "body must be a string");
			return false;
		}
		if (n > srv.lim.max_body) {
			fail(r, "TOO_LARGE", "body too large");
			return false;
		}
		return true;
	case OP_DELETE:
		return arg_ch(r, ch) && arg_target(r, &u);
	case OP_REACT: {
		bool on;

		if (!arg_ch(r, ch) || !arg_target(r, &u))
			return false;
		if (proto_get_str(r->map, "emoji", &s, &n) || n < 1 ||
		    n > PROTO_MAX_EMOJI) {
			fail(r, "BAD_REQUEST", "emoji must be 1-64 bytes");
			return false;
		}
		if (proto_get_bool(r->map, "on", &on)) {
			fail(r, "BAD_REQUEST", "on must be a boolean");
			return false;
		}
		return true;
	}
	case OP_PRESENCE_SET:
		if (proto_get_str(r->map, "status", &s, &n) ||
		    presence_status_parse(s, n) < 0) {
			fail(r, "BAD_REQUEST",
			     "status must be online, away, dnd or invisible");
			return false;
		}
		return true;
	default:
		return false;
	}
}

static void forward(struct req *r)
{
	char ch[ID_CAP] = "";
	struct m_req *m;

	if (!validate_write(r, ch))
		return;
	m = msg_new(sizeof(*m) + r->len, M_REQ);
	m->conn = r->id;
	m->rid = r->rid;
	m->has_rid = r->has_rid;
	m->op = (uint8_t)r->op;
	m->stage = 0;
	m->t_rx_us = r->t_rx_us;
	m->t0_us = rt_mono_us();
	stage_add(r->ss, ST_DECODE, m->t0_us - r->t_rx_us);
	strcpy(m->ws, r->ws);
	strcpy(m->user, r->user);
	strcpy(m->ch, ch);
	m->len = (uint32_t)r->len;
	memcpy(m->frame, r->frame, r->len);
	rt_post(user_shard(m->ws, m->user), &m->h);
}

/* ---- frames ----------------------------------------------------------------- */

/* More than bad_frames bad frames in any bad_window_ms closes with 1008:
 * the times of the last bad_frames+1 are kept (allocated on the first). */
static void bad_frame(struct shard_state *ss, struct session *se,
		      const char *msg)
{
	uint32_t cap = srv.lim.bad_frames + 1;
	uint64_t now = rt_now_ms();

	ss->bad_frames++;
	if (!se->bad_ts)
		se->bad_ts = calloc(cap, sizeof(*se->bad_ts));
	se->bad_ts[se->bad_n % cap] = now;
	se->bad_n++;
	/* after the store, the next slot holds the oldest of the last cap:
	 * cap bad frames within the window is one too many */
	if (se->bad_n >= cap &&
	    now - se->bad_ts[se->bad_n % cap] < srv.lim.bad_window_ms) {
		rt_conn_close(se->conn, 1008, "too many bad frames");
		return;
	}
	reply_err(se->conn, false, 0, NULL, "BAD_FRAME", msg, 0);
}

static int op_lookup(const char *s, uint32_t n)
{
	for (int i = 0; i < OP__COUNT; i++)
		if (strlen(op_names[i]) == n && !memcmp(op_names[i], s, n))
			return i;
	return -1;
}

/* Decode one request and run it: reads here, writes on to the actors.
 * ready: the connection has said hello (REST requests always have). */
static void handle(struct shard_state *ss, struct req *r, bool ready)
{
	rt_conn *c = r->conn;
	proto_doc doc;
	const char *op;
	uint32_t opn;
	int rc;

	rc = proto_decode_max(&doc, r->frame, r->len, srv.lim.max_frame);
	if (rc != PROTO_OK) {
		if (r->se)
			bad_frame(ss, r->se, proto_strerror(rc));
		else
			reply_err(c, false, 0, NULL, "BAD_FRAME",
				  proto_strerror(rc), 0);
		return;
	}
	ss->requests++;
	r->map = &doc.root;
	rc = proto_get_uint(r->map, "rid", &r->rid);
	r->has_rid = rc == 0;
	if (rc == PROTO_F_TYPE) {
		reply_err(c, false, 0, NULL, "BAD_REQUEST",
			  "rid must be an unsigned integer", 0);
		goto out;
	}
	if (proto_get_str(r->map, "op", &op, &opn)) {
		reply_err(c, r->has_rid, r->rid, NULL, "BAD_REQUEST",
			  "op must be a string", 0);
		goto out;
	}
	if ((r->op = op_lookup(op, opn)) < 0) {
		/* Echo the op the client sent (fire-and-forget errors name it). */
		proto_out_reset(&ss->out);
		if (r->has_rid)
			proto_enc_res_err(&ss->out, r->rid, "BAD_REQUEST",
					  "unknown op", 0);
		else
			proto_enc_err(&ss->out, "BAD_REQUEST", "unknown op", op,
				      opn, 0);
		rt_conn_send_bytes(c, ss->out.data, ss->out.len);
		goto out;
	}
	if (!ready && r->op != OP_HELLO) {
		fail(r, "UNAUTHORIZED", "hello first");
		goto out;
	}
	if (!r->se && (r->op == OP_HELLO || r->op == OP_PRESENCE_WATCH)) {
		fail(r, "BAD_REQUEST", "only over a WebSocket");
		goto out;
	}
	switch (r->op) {
	case OP_HELLO: op_hello(r); break;
	case OP_HB: sess_heartbeat(r); break;
	case OP_CH_LIST: op_ch_list(r); break;
	case OP_CH_MEMBERS: op_ch_members(r); break;
	case OP_HISTORY: op_history(r); break;
	case OP_EVENTS: op_events(r); break;
	case OP_EDITS: op_edits(r); break;
	case OP_PRESENCE_WATCH: op_presence_watch(r); break;
	case OP_SEARCH:
		search_op(ss, c, r->ws, r->user, r->has_rid, r->rid, r->map,
			  r->se ? &r->se->searching : NULL);
		break;
	default: forward(r); break;
	}
out:
	proto_doc_free(&doc);
}

void sess_request(struct shard_state *ss, rt_conn *c, const char *ws,
		  const char *user, const uint8_t *d, size_t n)
{
	struct req r = { .ss = ss, .conn = c, .id = rt_conn_get_id(c),
			 .ws = ws, .user = user, .frame = d, .len = n,
			 .t_rx_us = rt_mono_us() };

	handle(ss, &r, true);
}

void sess_frame(struct shard_state *ss, rt_conn *c, const uint8_t *d,
		size_t n, bool binary)
{
	struct session *se = sess_of(c);
	struct req r = { .ss = ss, .se = se, .conn = c, .frame = d, .len = n,
			 .t_rx_us = rt_mono_us() };

	if (!se)
		return;
	r.id = se->id;
	r.ws = se->ws;
	r.user = se->user;
	if (se->state == S_ATTACHING) {
		/* hello is being admitted: what follows it waits its turn */
		struct held *h, **tail = &se->held;

		if (se->held_bytes + n > 4 * (size_t)srv.lim.max_frame) {
			rt_conn_close(se->conn, 1008, "too much before hello");
			return;
		}
		h = malloc(sizeof(*h) + n);
		h->next = NULL;
		h->len = n;
		h->binary = binary;
		memcpy(h->data, d, n);
		while (*tail)
			tail = &(*tail)->next;
		*tail = h;
		se->nheld++;
		se->held_bytes += n;
		return;
	}
	if (!binary) {
		bad_frame(ss, se, "text frames are not accepted");
		return;
	}
	handle(ss, &r, se->state == S_READY);
}
