/*
 * sess_read: the requests a session answers itself, straight from
 * storage's synced data: ch.list, ch.members, history, events, edits; and
 * hb (a heartbeat, told to the user's presence actor).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/session.h"

/* ---- reads ----------------------------------------------------------------- */

void sess_op_ch_list(struct req *r)
{
	struct idvec mine = { 0 }, pub = { 0 };
	store_channel *recs;
	bool *member;
	uint32_t n = 0;

	store_scan_user_channels(srv.st, r->ws, r->user, sess_collect_id, &mine);
	store_scan_public(srv.st, r->ws, sess_collect_id, &pub);
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
		proto_chinfo *v = malloc((n + 1) * sizeof(*v));
		/* one point in time for the whole list (sess_chinfo's own
		 * pin is then -EBUSY and left alone) */
		bool pinned = store_read_pin(srv.st) == 0;

		for (uint32_t i = 0; i < n; i++)
			sess_chinfo(&v[i], &recs[i], r->user, true, member[i]);
		if (pinned)
			store_read_unpin(srv.st);
		proto_out_reset(&r->ss->out);
		proto_enc_ch_list_ok(&r->ss->out, r->rid, v, n);
		rt_conn_send_bytes(r->conn, r->ss->out.data, r->ss->out.len);
		free(v);
	}
	free(recs);
	free(member);
	free(mine.v);
	free(pub.v);
}

void sess_op_ch_members(struct req *r)
{
	const struct proto_a_ch_members *a = &r->q->a.members;
	char ch[ID_CAP], after[ID_CAP] = "";
	store_channel rec;
	store_member mem;
	struct idvec iv = { 0 };
	bool member;
	int more = 0;

	sess_id_copy(ch, a->ch);
	if (a->after.s)
		sess_id_copy(after, a->after);
	if (!sess_can_read(r, ch, &rec, &mem, &member))
		return;
	if (store_scan_members(srv.st, ch, after, a->limit, sess_collect_id,
			       &iv, &more)) {
		sess_fail(r, "UNAVAILABLE", "storage unavailable");
		goto out;
	}
	if (r->has_rid) {
		proto_out_reset(&r->ss->out);
		proto_enc_members_ok(&r->ss->out, r->rid, (const char *)iv.v,
				     ID_CAP, iv.n, more != 0);
		rt_conn_send_bytes(r->conn, r->ss->out.data, r->ss->out.len);
	}
out:
	free(iv.v);
}

struct rawvec {
	proto_raw *v;
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
	void *p = malloc(len);

	memcpy(p, v, len);
	rv->v[rv->n].p = p;
	rv->v[rv->n].n = len;
	rv->n++;
	return 0;
}

static void rawvec_free(struct rawvec *rv)
{
	for (uint32_t i = 0; i < rv->n; i++)
		free((void *)rv->v[i].p);
	free(rv->v);
}

/* history (msgs; reverse: read newest first) or events (evs) */
static void send_raw_list(struct req *r, bool history, struct rawvec *rv,
			  bool reverse, int more)
{
	if (r->has_rid) {
		proto_out_reset(&r->ss->out);
		if (history)
			proto_enc_history_ok(&r->ss->out, r->rid, rv->v, rv->n,
					     reverse, more != 0);
		else
			proto_enc_events_ok(&r->ss->out, r->rid, rv->v, rv->n,
					    more != 0);
		rt_conn_send_bytes(r->conn, r->ss->out.data, r->ss->out.len);
	}
	rawvec_free(rv);
}

void sess_op_history(struct req *r)
{
	const struct proto_a_history *a = &r->q->a.history;
	char ch[ID_CAP];
	store_channel rec;
	store_member mem;
	struct rawvec rv = { 0 };
	int more = 0, rc;
	bool member;

	sess_id_copy(ch, a->ch);
	if (!sess_can_read(r, ch, &rec, &mem, &member))
		return;
	/* before is 0 when absent: from the newest */
	if (a->has_after)
		rc = store_scan_msgs(srv.st, ch, a->thread, a->after, 1,
				     a->limit, collect_raw, &rv, &more);
	else
		rc = store_scan_msgs(srv.st, ch, a->thread, a->before, -1,
				     a->limit, collect_raw, &rv, &more);
	if (rc) {
		sess_fail(r, "UNAVAILABLE", "storage unavailable");
		r->has_rid = false; /* answered: just free what was read */
	}
	send_raw_list(r, true, &rv, !a->has_after, more);
}

void sess_op_events(struct req *r)
{
	const struct proto_a_events *a = &r->q->a.events;
	char ch[ID_CAP];
	store_channel rec;
	store_member mem;
	struct rawvec rv = { 0 };
	int more = 0;
	bool member;

	sess_id_copy(ch, a->ch);
	if (!sess_can_read(r, ch, &rec, &mem, &member))
		return;
	if (store_scan_events(srv.st, ch, a->after, a->limit, collect_raw,
			      &rv, &more)) {
		sess_fail(r, "UNAVAILABLE", "storage unavailable");
		r->has_rid = false; /* answered: just free what was read */
	}
	send_raw_list(r, false, &rv, false, more);
}

void sess_op_edits(struct req *r)
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
	uint64_t target = r->q->a.target.target;
	bool member, deleted = false;
	int rc;

	sess_id_copy(ch, r->q->a.target.ch);
	if (!sess_can_read(r, ch, &rec, &mem, &member))
		return;
	rc = store_get_event(srv.st, ch, target, &ev, &len, NULL);
	if (rc && rc != -ENOENT) {
		sess_fail(r, "UNAVAILABLE", "storage unavailable");
		return;
	}
	if (rc || proto_decode_max(&d, ev, len, PROTO_MAX_STATE) != PROTO_OK) {
		free(ev);
		sess_fail(r, "NOT_FOUND", "no such message");
		return;
	}
	if (proto_dec_event(&d.root, &e, men, 64) || e.k.n != 3 ||
	    memcmp(e.k.s, "msg", 3)) {
		sess_fail(r, "NOT_FOUND", "target is not a message");
		goto out;
	}
	if (e.from.n != strlen(r->user) || memcmp(e.from.s, r->user, e.from.n)) {
		sess_fail(r, "FORBIDDEN", "only the author may see the versions");
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
		sess_fail(r, "NOT_FOUND", "message was deleted");
		goto out;
	}
	if (store_scan_versions(srv.st, ch, target, collect_raw, &rv)) {
		sess_fail(r, "UNAVAILABLE", "storage unavailable");
		r->has_rid = false;
	}
	if (r->has_rid) {
		proto_out_reset(&r->ss->out);
		proto_enc_edits_ok(&r->ss->out, r->rid, e.body, e.ts, rv.v,
				   rv.n);
		rt_conn_send_bytes(r->conn, r->ss->out.data, r->ss->out.len);
	}
	rawvec_free(&rv);
out:
	proto_doc_free(&d);
	free(ev);
}

/* A heartbeat keeps the device active for its user's presence actor. */
void sess_op_hb(struct req *r)
{
	sess_ok_empty(r);
	if (r->se && r->se->attached) {
		struct m_attach *m = msg_new(sizeof(*m), M_HB);

		m->conn = r->id;
		strcpy(m->ws, r->ws);
		strcpy(m->user, r->user);
		rt_post(user_shard(r->ws, r->user), &m->h);
	}
}
