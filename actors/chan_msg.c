/*
 * chan_msg: the state of one message of a channel (what history shows:
 * body, edits, reactions, reply count), and the requests that change it:
 * edit, delete, react. A state changed by a batch not yet durable stays in
 * the channel's overlay (c->ov) so later changes build on it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "actors/chan.h"
#include "actors/commit.h"

int chan_state_decode(proto_doc *d, const void *bytes, size_t len)
{
	return proto_decode_max(d, bytes, len, PROTO_MAX_STATE);
}

/* The state of message seq (in thread root, 0: top-level): the overlay if
 * a pending batch changed it, else storage; NULL if there is none. The
 * caller changes it with chan_ov_set(). */
struct ov *chan_msg_state(struct chan *c, uint64_t root, uint64_t seq)
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
void chan_ov_set(struct shard_state *ss, struct chan *c, struct ov *o,
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
void chan_ov_release(struct chan *c, struct ov *o)
{
	if (o->pending)
		return;
	smap_del(&c->ov, o->key, 8);
	ov_free(o);
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
			uint64_t target, bool author_only, struct target *t)
{
	void *ev = NULL;
	size_t len;
	int rc;

	memset(t, 0, sizeof(*t));
	t->seq = target;
	rc = t->seq && t->seq <= c->durable_seq
		     ? store_get_event(srv.st, c->id, t->seq, &ev, &len, &t->cum)
		     : -ENOENT;
	if (rc == -ENOENT) {
		chan_fail(r, "NOT_FOUND", "no such message");
		return false;
	}
	if (rc || proto_decode_max(&t->ev, ev, len, PROTO_MAX_STATE) != PROTO_OK) {
		free(ev);
		chan_fail(r, "UNAVAILABLE", "storage unavailable");
		return false;
	}
	free(ev);
	t->has_ev = true;
	if (proto_dec_event(&t->ev.root, &t->e, t->men, 64) ||
	    !(t->e.k.n == 3 && !memcmp(t->e.k.s, "msg", 3))) {
		chan_fail(r, "NOT_FOUND", "target is not a message");
		goto fail;
	}
	if (author_only && (t->e.from.n != strlen(r->user) ||
			    memcmp(t->e.from.s, r->user, t->e.from.n))) {
		chan_fail(r, "FORBIDDEN", "only the author may do that");
		goto fail;
	}
	t->st = chan_msg_state(c, t->e.thread, t->seq);
	if (!t->st) {
		chan_fail(r, "UNAVAILABLE", "storage unavailable");
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
	proto_enc_seq_ok(&ss->out, r->rid, e->seq);
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
	if (chan_state_decode(d, t->st->bytes, t->st->len) != PROTO_OK)
		return false;
	if (proto_dec_msg(&d->root, m, men, 64)) {
		proto_doc_free(d);
		return false;
	}
	return true;
}


/* state_of() for a change to a message: false (answered, nothing to
 * free in d) when the stored state does not decode or the message was
 * deleted. */
static bool live_state_of(const struct m_req *r, struct target *t,
			  proto_doc *d, proto_msg *m, proto_str *men)
{
	if (!state_of(t, d, m, men)) {
		chan_fail(r, "INTERNAL", "stored message does not decode");
		return false;
	}
	if (m->deleted) {
		proto_doc_free(d);
		chan_fail(r, "NOT_FOUND", "message was deleted");
		return false;
	}
	return true;
}


void chan_op_edit(struct shard_state *ss, struct m_req *r)
{
	const struct proto_a_edit *a = &r->q.a.edit;
	struct chan *c = chan_visible(ss, r);
	struct target t;
	proto_doc d;
	proto_msg m;
	proto_str men[64];
	proto_event e;

	if (!c || !chan_member_or_fail(c, r) || !chan_may_post(c, r, false) ||
	    !load_target(c, r, a->target, true, &t))
		return;
	if (!live_state_of(r, &t, &d, &m, men))
		goto out;
	e = change_of(c, r, "edit", t.seq);
	e.body = a->body;

	/* the version this edit makes, for `edits` */
	proto_out_reset(&ss->out);
	proto_enc_version(&ss->out, e.body, e.ts);
	store_put_version(ss->batch, c->id, t.seq, e.seq, ss->out.data,
			  ss->out.len);

	m.body = e.body;
	m.edited = e.ts;
	proto_out_reset(&ss->out);
	proto_enc_msg(&ss->out, &m);
	chan_ov_set(ss, c, t.st, &ss->out);
	t.st->pedits = realloc(t.st->pedits,
			       (t.st->npedits + 1) * sizeof(*t.st->pedits));
	t.st->pedits[t.st->npedits++] =
		(struct pedit){ e.seq, e.ts, c->msgs };
	proto_doc_free(&d);
	change_event(ss, c, r, &e);
out:
	chan_ov_release(c, t.st);
	target_free(&t);
}

/* 'A' id \0 ch \0 seq8: message seq of ch carries file id (its members
 * may read it; a delete removes the key). */
void chan_file_share(store_batch *b, const char *ch, proto_str id,
		     uint64_t seq, bool on)
{
	char k[2 * ID_CAP + 8];
	size_t n = 0, cl = strlen(ch);

	memcpy(k, id.s, id.n);
	n = id.n;
	k[n++] = 0;
	memcpy(k + n, ch, cl);
	n += cl;
	k[n++] = 0;
	for (int i = 7; i >= 0; i--)
		k[n++] = (char)(seq >> (8 * i));
	if (on)
		store_put_meta(b, 'A', k, n, "", 0);
	else
		store_del_meta(b, 'A', k, n);
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

void chan_op_delete(struct shard_state *ss, struct m_req *r)
{
	struct chan *c = chan_visible(ss, r);
	struct scrub sc = { ss, c };
	struct target t;
	proto_doc d;
	proto_msg m;
	proto_str men[64];
	proto_event e;
	/* owners and admins delete any message (moderation) */
	bool mod = c && chan_is_moderator(c, r);

	if (!c || (!mod && !chan_member_or_fail(c, r)) ||
	    !load_target(c, r, r->q.a.target.target, !mod, &t))
		return;
	if (!live_state_of(r, &t, &d, &m, men))
		goto out;
	e = change_of(c, r, "delete", t.seq);
	/* its files: members of c read them through this message no more */
	{
		const msgpack_object_array *fa;

		if (proto_get_array(&d.root, "files", &fa) == 0)
			for (uint32_t i = 0; i < fa->size; i++) {
				proto_str id;

				if (fa->ptr[i].type == MSGPACK_OBJECT_MAP &&
				    proto_get_str(&fa->ptr[i], "id", &id.s,
						  &id.n) == 0)
					chan_file_share(ss->batch, c->id, id,
							t.seq, false);
			}
	}
	m.body = (proto_str){ "", 0 };
	m.deleted = true;
	m.reactions = NULL;
	m.reactions_len = 0;
	m.nmentions = 0;
	m.files = NULL;
	m.files_len = 0;
	proto_out_reset(&ss->out);
	proto_enc_msg(&ss->out, &m);
	chan_ov_set(ss, c, t.st, &ss->out);
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
	t.e.files = NULL;
	t.e.files_len = 0;
	proto_out_reset(&ss->out);
	proto_enc_event(&ss->out, &t.e);
	store_put_event(ss->batch, c->id, t.seq, ss->out.data, ss->out.len,
			t.cum);
	change_event(ss, c, r, &e);
out:
	chan_ov_release(c, t.st);
	target_free(&t);
}

#define MAX_EMOJI_KINDS 50

void chan_op_react(struct shard_state *ss, struct m_req *r)
{
	const struct proto_a_react *a = &r->q.a.react;
	proto_out rx;
	struct chan *c = chan_visible(ss, r);
	struct target t;
	proto_doc d;
	proto_msg m;
	proto_str men[64], emoji = a->emoji;
	proto_event e;
	bool on = a->on, changed;
	int rc;

	if (!c || !chan_member_or_fail(c, r) || !chan_may_post(c, r, false) ||
	    !load_target(c, r, a->target, false, &t))
		return;
	proto_out_init(&rx, 0, 256);
	if (!live_state_of(r, &t, &d, &m, men))
		goto out;
	rc = proto_reactions_apply(&m,
				   (proto_str){ r->user,
						(uint32_t)strlen(r->user) },
				   emoji, on, MAX_EMOJI_KINDS, &rx, &changed);
	if (rc) {
		proto_doc_free(&d);
		chan_fail(r, rc == -1 ? "CONFLICT" : "INTERNAL",
		     rc == -1 ? "too many different reactions on this message"
			      : "stored reactions do not decode");
		goto out;
	}
	if (!changed) {
		/* already so: no event, and the answer says it */
		proto_doc_free(&d);
		proto_out_reset(&ss->out);
		proto_enc_react_ok(&ss->out, r->rid, 0);
		reply_state(ss, c, r);
		goto out;
	}
	m.reactions = rx.len > 1 ? rx.data : NULL; /* 0x80: nobody */
	m.reactions_len = rx.len > 1 ? rx.len : 0;
	proto_out_reset(&ss->out);
	proto_enc_msg(&ss->out, &m);
	chan_ov_set(ss, c, t.st, &ss->out);
	proto_doc_free(&d);
	e = change_of(c, r, "react", t.seq);
	e.emoji = emoji;
	e.on = on;
	change_event(ss, c, r, &e);
out:
	proto_out_free(&rx);
	chan_ov_release(c, t.st);
	target_free(&t);
}

