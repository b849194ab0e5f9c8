/*
 * sess_util: what a session's requests share: error and empty answers,
 * the channel and target arguments, the read check (may this user see this
 * channel), channel summaries, and collecting ids from a scan.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/session.h"

/* ---- request helpers ---------------------------------------------------- */

void sess_fail(struct req *r, const char *code, const char *msg)
{
	reply_err(r->conn, r->has_rid, r->rid, proto_op_name(r->op), code, msg,
		  0);
}

void sess_ok_empty(struct req *r)
{
	if (!r->has_rid)
		return;
	proto_out_reset(&r->ss->out);
	proto_enc_ok(&r->ss->out, r->rid);
	rt_conn_send_bytes(r->conn, r->ss->out.data, r->ss->out.len);
}

/* For reads: the channel must exist in the user's workspace; a private or
 * DM channel only for its members. One the user may not see does not
 * exist for them: the same answer, word for word, as an id never made
 * (the channel actor's visible() says the same). */
bool sess_can_read(struct req *r, const char *ch, store_channel *rec,
		     store_member *mem, bool *member)
{
	int rc = store_get_channel(srv.st, ch, rec);

	if (rc && rc != -ENOENT) {
		sess_fail(r, "UNAVAILABLE", "storage unavailable");
		return false;
	}
	if (rc == 0 && !strcmp(rec->ws, r->ws)) {
		rc = store_get_member(srv.st, ch, r->user, mem);
		if (rc && rc != -ENOENT) {
			sess_fail(r, "UNAVAILABLE", "storage unavailable");
			return false;
		}
		*member = rc == 0;
		if (*member || rec->kind == STORE_PUBLIC)
			return true;
	}
	sess_fail(r, "NOT_FOUND", "no such channel");
	return false;
}

/* Channel summary {id,name,kind,last_seq,read_seq,unread,mentions[,member]}
 * into ci (id and name point into rec). */
void sess_chinfo(proto_chinfo *ci, const store_channel *rec, const char *user,
		 bool with_member, bool member)
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
	*ci = (proto_chinfo){
		.id = rec->id,
		.name = rec->name,
		.kind = rec->kind,
		.last_seq = st.last_seq,
		.read_seq = m.read_seq,
		.unread = member && st.msgs > at ? st.msgs - at : 0,
		.mentions = men,
		.has_member = with_member,
		.member = member,
	};
}

/* ---- collecting ids from scans ------------------------------------------ */

int sess_collect_id(void *arg, const char *id, size_t len)
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

/* What proto_req_decode checks against: the server's limits, and the ops
 * it carries out (the contract's newer ones stay "unknown op"). */
struct proto_limits sess_req_limits(void)
{
	return (struct proto_limits){
		.max_body = srv.lim.max_body,
		.max_name = srv.lim.max_name,
		.max_dm = srv.lim.max_dm,
		.max_mentions = srv.lim.max_mentions,
		.max_watch = srv.lim.max_watch,
		.ops = PROTO_OPS_SERVED,
	};
}
