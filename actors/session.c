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
 * changes state goes to the user actor, then the channel actor. This file
 * holds lifecycle, hello and frames; the rest is in the sess_*.c files
 * (session.h lists them).
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

#include "actors/directory.h"
#include "actors/session.h"
#include "runtime/log.h"

/* ---- lifecycle ------------------------------------------------------------- */

void sess_open(struct shard_state *ss, rt_conn *c)
{
	struct session *se = calloc(1, sizeof(*se));

	ASSERT_CONN_HERE(rt_conn_get_id(c));
	se->conn = c;
	se->id = rt_conn_get_id(c);
	se->opened_ms = rt_now_ms();
	se->next = ss->sessions;
	if (ss->sessions)
		ss->sessions->prev = se;
	ss->sessions = se;
	rt_conn_set_user(c, se);

	if (ss->nq_len == ss->nq_cap) {
		uint32_t ncap = ss->nq_cap ? ss->nq_cap * 2 : 256;
		struct newbie *n = malloc(ncap * sizeof(*n));

		for (uint32_t i = 0; i < ss->nq_len; i++)
			n[i] = ss->nq[(ss->nq_head + i) % ss->nq_cap];
		free(ss->nq);
		ss->nq = n;
		ss->nq_head = 0;
		ss->nq_cap = ncap;
	}
	ss->nq[(ss->nq_head + ss->nq_len) % ss->nq_cap] = (struct newbie){
		se->id, se->opened_ms + srv.lim.hello_ms
	};
	ss->nq_len++;
}

void sess_close(struct shard_state *ss, rt_conn *c)
{
	struct session *se = sess_of(c);

	ASSERT_CONN_HERE(rt_conn_get_id(c));
	if (!se)
		return;
	while (se->nsubs)
		sess_sub_remove(ss, se, se->subs[se->nsubs - 1]);
	sess_watch_set(se, NULL, 0, 0);
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
	free(se->name);
	free(se);
	rt_conn_set_user(c, NULL);
}

/* The shard is stopping: its deadline queue goes with it. */
void sess_shard_stop(struct shard_state *ss)
{
	free(ss->nq);
	ss->nq = NULL;
	ss->nq_head = ss->nq_len = ss->nq_cap = 0;
}

void sess_tick(struct shard_state *ss, uint64_t now)
{
	while (ss->nq_len && ss->nq[ss->nq_head].deadline <= now) {
		struct session *se = find_sess(rt_self(), ss->nq[ss->nq_head].id);

		if (se && se->state != S_READY)
			rt_conn_close(se->conn, 4001, "hello timeout");
		ss->nq_head = (ss->nq_head + 1) % ss->nq_cap;
		ss->nq_len--;
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

/* ---- hello ------------------------------------------------------------------ */

/* rc, why: what proto_req_decode said of the arguments; answered after
 * "already authenticated", and a bad resume entry only once the token
 * checked out (a bad token wins). */
static void op_hello(struct req *r, int rc, const char *why)
{
	struct session *se = r->se;
	const struct proto_a_hello *a = &r->q->a.hello;
	struct auth_claims cl;

	if (se->state != S_NEW) {
		sess_fail(r, "BAD_REQUEST", "already authenticated");
		return;
	}
	if (rc) {
		sess_fail(r, proto_code_name(rc), why);
		return;
	}
	why = "bad token";
	if (!a->token.s ||
	    auth_verify(srv.key, srv.key_len, a->token.s, a->token.n,
			(int64_t)(rt_now_ms() / 1000), &cl, &why)) {
		RT_STAT_ADD(r->ss->auth_failures, 1);
		plog(PL_WARN, "auth", "refused %s: %s", rt_conn_peer(se->conn),
		     why);
		sess_fail(r, "UNAUTHORIZED", why);
		rt_conn_close(se->conn, 4001, why);
		return;
	}
	if (a->resume_bad) {
		sess_fail(r, "BAD_REQUEST", PROTO_MSG_RESUME);
		return;
	}
	if (a->resume.n) {
		se->resume = calloc(a->resume.n, sizeof(*se->resume));
		for (uint32_t i = 0; i < a->resume.n; i++) {
			sess_id_copy(se->resume[i].ch,
				     proto_resume_ch(&a->resume, i));
			se->resume[i].seq = proto_resume_seq(&a->resume, i);
		}
		se->nresume = a->resume.n;
	}
	strcpy(se->ws, cl.ws);
	strcpy(se->user, cl.sub);
	se->admin = cl.admin;
	/* the directory: the user exists, under its latest name; hello's
	 * answer names it (the id when the token has no name) */
	se->name = strdup(cl.name[0] ? cl.name : cl.sub);
	se->hello_rid = r->rid;
	se->hello_has_rid = r->has_rid;
	se->state = S_ATTACHING;

	struct m_attach *m = msg_new(sizeof(*m), M_ATTACH);
	m->conn = se->id;
	strcpy(m->ws, se->ws);
	strcpy(m->user, se->user);
	/* attached (and answered) once the directory has the name: on a
	 * cluster's other host, a round trip to the directory's owner */
	dir_on_hello(se->ws, se->user, cl.name, user_shard(se->ws, se->user),
		     &m->h);
}

static void hello_limits(proto_hello_limits *hl)
{
	const struct limits *l = &srv.lim;

	*hl = (proto_hello_limits){
		.frame = l->max_frame,
		.body = l->max_body,
		.name = l->max_name,
		.members = l->max_members,
		.dm = l->max_dm,
		.devices = l->max_devices,
		.send_per_s = l->rate_per_s,
		.send_burst = l->rate_burst,
		.outbuf = l->max_outbuf,
		.outbuf_max = RT_OUTBUF_MAX_FACTOR * l->max_outbuf,
		.outbuf_stall_ms = RT_OUTBUF_STALL_MS,
	};
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
	proto_hello_limits hl;
	proto_chinfo *v;
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
		proto_enc_fail(&ss->out, se->hello_has_rid, se->hello_rid,
			       "hello", 5, "FORBIDDEN",
			       "too many connections for this user", 0);
		rt_conn_send_bytes(se->conn, ss->out.data, ss->out.len);
		plog(PL_INFO, "auth", "refused %s: user %s of %s has %u "
		     "connections", rt_conn_peer(se->conn), m->user, m->ws,
		     srv.lim.max_devices);
		rt_conn_close(se->conn, 4029, "too many connections");
		return;
	}
	se->attached = true;
	store_scan_user_channels(srv.st, se->ws, se->user, sess_collect_id, &iv);
	recs = calloc(iv.n ? iv.n : 1, sizeof(*recs));
	lasts = calloc(iv.n ? iv.n : 1, sizeof(*lasts));
	v = calloc(iv.n ? iv.n : 1, sizeof(*v));
	for (uint32_t i = 0; i < iv.n; i++)
		if (store_get_channel(srv.st, iv.v[i], &recs[n]) == 0)
			n++;

	/* One point in time for the whole answer (sess_chinfo's own pin is
	 * then -EBUSY and left alone): one snapshot instead of one per
	 * channel, and the last_seq each channel is told is the one its
	 * live stream starts from. */
	bool pinned = store_read_pin(srv.st) == 0;

	for (uint32_t i = 0; i < n; i++) {
		store_chstat st = { 0 };

		/* The position the client is told is where its live stream
		 * starts, unless it resumes from an older one. */
		sess_chinfo(&v[i], &recs[i], se->user, false, true);
		store_get_chstat(srv.st, recs[i].id, &st);
		lasts[i] = st.last_seq;
	}
	if (pinned)
		store_read_unpin(srv.st);
	hello_limits(&hl);
	proto_out_reset(&ss->out);
	proto_enc_hello_ok(&ss->out, se->hello_rid, se->user, se->ws, se->name,
			   srv.lim.hb_ms, &hl, v, n);
	free(v);
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
		sess_sub_add(ss, se, recs[i].id, after, resume);
	}
	free(se->resume);
	se->resume = NULL;
	se->nresume = 0;
	free(recs);
	free(lasts);
	free(iv.v);
	replay_held(ss, se);
}

/* ---- flow: requests in flight (session.h, SESS_INFLIGHT_MAX) -------------- */

/* A barrier, posted by a session behind the requests it handed on: to the
 * shards they went to (hop 1), from each of those to every shard (hop 2:
 * behind what the actors there passed on, the user actor's requests to
 * the channel actors), and home from the last. Each producer's messages
 * stay in order (runtime/mailbox.c), so once it is home the actors two
 * hops on have taken up every request it covers. It always comes home,
 * whatever the requests did (a request without rid has no answer), so
 * nothing can leak the count; a connection gone meanwhile is skipped. */
struct barrier {
	rt_conn_id conn;
	uint32_t covers; /* the requests it is behind */
	uint32_t left;   /* hop-2 visits still to come (atomic) */
};

static void post_call(unsigned shard, void (*fn)(struct shard_state *,
						 struct m_call *),
		      struct barrier *b)
{
	struct m_call *m = msg_new(sizeof(*m), M_CALL);

	m->fn = fn;
	m->arg = b;
	rt_post(shard, &m->h);
}

static void flow_back(struct session *se, uint32_t covers);

static void barrier_home(struct shard_state *ss, struct m_call *m)
{
	struct barrier *b = m->arg;
	struct session *se = find_sess(rt_self(), b->conn);
	uint32_t covers = b->covers;

	(void)ss;
	free(b);
	msg_free(&m->h);
	if (se)
		flow_back(se, covers);
}

static void barrier_hop2(struct shard_state *ss, struct m_call *m)
{
	struct barrier *b = m->arg;

	(void)ss;
	msg_free(&m->h);
	if (__atomic_sub_fetch(&b->left, 1, __ATOMIC_ACQ_REL) == 0)
		post_call(rt_conn_shard(b->conn), barrier_home, b);
}

static void barrier_hop1(struct shard_state *ss, struct m_call *m)
{
	struct barrier *b = m->arg;

	(void)ss;
	msg_free(&m->h);
	for (unsigned s = 0; s < rt_nshards(); s++)
		post_call(s, barrier_hop2, b);
}

static void barrier_send(struct session *se)
{
	struct barrier *b = malloc(sizeof(*b));
	uint64_t to = se->sent_to;

	if (!b)
		abort();
	b->conn = se->id;
	b->covers = se->uncovered;
	b->left = (uint32_t)__builtin_popcountll(to) * rt_nshards();
	se->uncovered = 0;
	se->sent_to = 0;
	for (unsigned s = 0; s < rt_nshards(); s++)
		if (to & (1ull << s))
			post_call(s, barrier_hop1, b);
}

/* A request of se's went on to the actors of the shards in mask: one
 * barrier behind every SESS_INFLIGHT_BATCH of them, several out at once,
 * so that a client that keeps pipelining is not paused while the actors
 * keep up. */
static void flow_handed(struct session *se, uint64_t mask)
{
	se->inflight++;
	se->uncovered++;
	se->sent_to |= mask;
	if (se->uncovered >= SESS_INFLIGHT_BATCH)
		barrier_send(se);
	if (se->inflight >= SESS_INFLIGHT_MAX && !se->paused) {
		se->paused = true;
		rt_conn_pause(se->conn); /* after this request */
	}
}

/* One of se's barriers is home: what it covers is no longer in flight.
 * Reading resumes at the low-water mark, one batch under the bound. */
static void flow_back(struct session *se, uint32_t covers)
{
	se->inflight -= covers;
	if (se->paused &&
	    se->inflight <= SESS_INFLIGHT_MAX - SESS_INFLIGHT_BATCH) {
		se->paused = false;
		rt_conn_resume(se->conn);
	}
}

/* Which shards a WebSocket request is handed on to: none for those the
 * session answers itself (search has its own bound: searching). */
static uint64_t handed_to(const struct req *r)
{
	unsigned n = rt_nshards();
	uint64_t all = n >= 64 ? ~0ull : (1ull << n) - 1;

	switch (r->op) {
	case OP_CH_LIST:
	case OP_CH_MEMBERS:
	case OP_HISTORY:
	case OP_EVENTS:
	case OP_EDITS:
	case OP_SEARCH:
		return 0;
	case OP_HB:
		return r->se->attached ? 1ull << user_shard(r->ws, r->user) : 0;
	case OP_PRESENCE_WATCH:
	case PROTO_OP_USERS_SEARCH:
	case PROTO_OP_USERS_GET:
		return all;
	default:
		return 1ull << user_shard(r->ws, r->user);
	}
}

/* ---- frames ----------------------------------------------------------------- */

/* More than bad_frames bad frames in any bad_window_ms closes with 1008:
 * the times of the last bad_frames+1 are kept (allocated on the first). */
static void bad_frame(struct shard_state *ss, struct session *se,
		      const char *msg)
{
	uint32_t cap = srv.lim.bad_frames + 1;
	uint64_t now = rt_now_ms();

	RT_STAT_ADD(ss->bad_frames, 1);
	if (log_enabled(PL_DEBUG))
		plog(PL_DEBUG, "net", "bad frame from %s: %s",
		     rt_conn_peer(se->conn), msg);
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

/* enum op (base.h) is the start of enum proto_op: r->op = q.op */
_Static_assert((int)OP_HELLO == (int)PROTO_OP_HELLO &&
		       (int)OP_SEND == (int)PROTO_OP_SEND &&
		       (int)OP_SEARCH == (int)PROTO_OP_SEARCH &&
		       (int)OP__COUNT == (int)PROTO_OP_USERS_SEARCH,
	       "enum op and enum proto_op disagree");


/* Decode one request and run it: reads here, writes on to the actors.
 * ready: the connection has said hello (REST requests always have). */
static void handle(struct shard_state *ss, struct req *r, bool ready)
{
	rt_conn *c = r->conn;
	struct proto_limits lim = sess_req_limits();
	struct proto_req q;
	proto_doc doc;
	const char *why = NULL;
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
	RT_STAT_ADD(ss->requests, 1);
	rc = proto_req_decode(&doc.root, &lim, &q, &why);
	if (q.op == PROTO_OP_NONE) {
		/* rid, op or an unknown op (named back in an err) */
		proto_out_reset(&ss->out);
		proto_enc_req_fail(&ss->out, &q, proto_code_name(rc), why, 0);
		rt_conn_send_bytes(c, ss->out.data, ss->out.len);
		goto out;
	}
	r->q = &q;
	r->op = q.op;
	r->rid = q.rid;
	r->has_rid = q.has_rid;
	if (!ready && r->op != OP_HELLO) {
		sess_fail(r, "UNAUTHORIZED", "hello first");
		goto out;
	}
	if (!r->se && (r->op == OP_HELLO || r->op == OP_PRESENCE_WATCH)) {
		sess_fail(r, "BAD_REQUEST", "only over a WebSocket");
		goto out;
	}
	if (r->op == OP_HELLO) {
		op_hello(r, rc, why);
		goto out;
	}
	if (rc) {
		sess_fail(r, proto_code_name(rc), why);
		goto out;
	}
	if (r->se) {
		uint64_t to = handed_to(r);

		if (to)
			flow_handed(r->se, to);
	}
	switch (r->op) {
	case OP_HB: sess_op_hb(r); break;
	case OP_CH_LIST: sess_op_ch_list(r); break;
	case OP_CH_MEMBERS: sess_op_ch_members(r); break;
	case OP_HISTORY: sess_op_history(r); break;
	case OP_EVENTS: sess_op_events(r); break;
	case OP_EDITS: sess_op_edits(r); break;
	case OP_PRESENCE_WATCH: sess_op_presence_watch(r); break;
	case PROTO_OP_USERS_SEARCH:
	case PROTO_OP_USERS_GET: dir_request(r); break;
	case OP_SEARCH:
		search_op(ss, c, r->ws, r->user, r->has_rid, r->rid,
			  &q.a.search, r->se ? &r->se->searching : NULL);
		break;
	default: sess_forward(r); break;
	}
out:
	proto_doc_free(&doc);
}

void sess_request(struct shard_state *ss, rt_conn *c, const char *ws,
		  const char *user, bool admin, const uint8_t *d, size_t n)
{
	struct req r = { .ss = ss, .conn = c, .id = rt_conn_get_id(c),
			 .ws = ws, .user = user, .admin = admin,
			 .frame = d, .len = n,
			 .t_rx_us = rt_mono_us() };

	ASSERT_CONN_HERE(r.id);
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
	ASSERT_CONN_HERE(se->id);
	r.id = se->id;
	r.ws = se->ws;
	r.user = se->user;
	r.admin = se->admin;
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

