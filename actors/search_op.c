/*
 * search_op: the `search` op. The session calls it on the connection's
 * shard with the decoded request; it checks the arguments and which
 * channels the user may search (storage reads, as the other read ops do),
 * hands the query to storage/search.c and returns. search_query notes
 * there what the index must hold (every event fed so far on any shard, so
 * every change acked before this request arrived); the query thread waits
 * up to 2 s for it, and an answer that could not wait for it carries
 * partial: true. The answer is encoded on search's query thread and
 * travels back to the connection's shard as an M_CALL, which sends it if
 * the connection is still there.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/actors.h"
#include "storage/search.h"

#define BUSY_RETRY_MS 100 /* retry_ms when the query queue is full */

/* What the query thread needs to answer: where, and how. */
struct pending {
	rt_conn_id conn;
	uint64_t rid;
	bool has_rid;
	bool counted; /* holds one of the session's SEARCH_PER_CONN */
};

/* The encoded answer on its way to the connection's shard. */
struct m_search_res {
	struct m_call c; /* first: the mailbox sees an M_CALL */
	rt_conn_id conn;
	bool counted;
	size_t len;    /* 0: nothing to send (a fire-and-forget that worked) */
	uint8_t data[];
};

struct chlist {
	char (*v)[ID_CAP];
	unsigned n, cap;
	bool oom;
};

static int collect_ch(void *arg, const char *id, size_t len)
{
	struct chlist *l = arg;

	if (len >= ID_CAP)
		return 0;
	if (l->n == l->cap) {
		unsigned cap = l->cap ? l->cap * 2 : 32;
		void *v = realloc(l->v, (size_t)cap * ID_CAP);

		if (!v) {
			l->oom = true;
			return 1;
		}
		l->v = v;
		l->cap = cap;
	}
	memcpy(l->v[l->n], id, len);
	l->v[l->n][len] = 0;
	l->n++;
	return 0;
}

/* On the connection's shard: send the answer if the connection stayed. */
static void deliver(struct shard_state *ss, struct m_call *m)
{
	struct m_search_res *r = (struct m_search_res *)m;
	rt_conn *c = rt_conn_find(rt_self(), r->conn);

	(void)ss;
	if (r->counted)
		sess_search_done(r->conn);
	if (c && r->len)
		rt_conn_send_bytes(c, r->data, r->len);
	free(r);
}

static const char *status_code(int status, const char **msg)
{
	switch (status) {
	case -EINVAL:
		*msg = "q has no word to search for";
		return "BAD_REQUEST";
	case -E2BIG:
		*msg = "q has too many words (at most 16 words and phrases)";
		return "BAD_REQUEST";
	case -EAGAIN:
		*msg = "the server is stopping; try again";
		return "UNAVAILABLE";
	default:
		*msg = "the search index is failing";
		return "UNAVAILABLE";
	}
}

/* On search's query thread: encode, post to the connection's shard. */
static void done(void *arg, int status, const search_hit *hits, unsigned n)
{
	struct pending *p = arg;
	struct m_search_res *m;
	proto_out o;

	/* a fire-and-forget search that worked says nothing: an empty
	 * answer, posted only to give the slot back */
	proto_out_init(&o, 0, 1024);
	if (status >= 0 && p->has_rid) {
		proto_hit *v = malloc((n + 1) * sizeof(*v));

		if (!v)
			abort();
		for (unsigned i = 0; i < n; i++)
			v[i] = (proto_hit){ hits[i].ch, hits[i].seq,
					    hits[i].from, hits[i].ts,
					    hits[i].body, hits[i].body_len,
					    hits[i].files, hits[i].files_len };
		proto_enc_search_ok(&o, p->rid, v, n,
				    status == SEARCH_PARTIAL);
		free(v);
	} else if (status < 0) {
		const char *msg, *code = status_code(status, &msg);

		proto_enc_fail(&o, p->has_rid, p->rid, "search", 6, code, msg,
			       0);
	}
	m = msg_new(sizeof(*m) + o.len, M_CALL);
	m->c.fn = deliver;
	m->conn = p->conn;
	m->counted = p->counted;
	m->len = o.len;
	memcpy(m->data, o.data, o.len);
	proto_out_free(&o);
	/* Any thread may post; the message is the shard's from here. */
	rt_post(rt_conn_shard(p->conn), &m->c.h);
	free(p);
}

void search_op(struct shard_state *ss, rt_conn *c, const char *ws,
	       const char *user, bool has_rid, uint64_t rid,
	       const struct proto_a_search *a, uint16_t *inflight)
{
	struct chlist l = { 0 };
	struct pending *p;
	int rc;

	(void)ss;
#define FAIL(code, msg)                                                   \
	do {                                                              \
		reply_err(c, has_rid, rid, "search", code, msg, 0);       \
		goto out;                                                 \
	} while (0)
	/* q, limit and ch were checked by proto_req_decode */
	if (!srv.sx)
		FAIL("UNAVAILABLE", "search is off on this server");
	if (inflight && *inflight >= SEARCH_PER_CONN) {
		reply_err(c, has_rid, rid, "search", "RATE_LIMITED",
			  "too many searches in flight on this connection "
			  "(at most 8)", BUSY_RETRY_MS);
		goto out;
	}

	if (a->ch.s) {
		store_channel rec;
		store_member mem;
		char ch[ID_CAP];

		memcpy(ch, a->ch.s, a->ch.n);
		ch[a->ch.n] = 0;
		rc = store_get_channel(srv.st, ch, &rec);
		if (rc == -ENOENT || (rc == 0 && strcmp(rec.ws, ws)))
			FAIL("NOT_FOUND", "no such channel");
		if (rc)
			FAIL("UNAVAILABLE", "storage unavailable");
		rc = store_get_member(srv.st, ch, user, &mem);
		/* a private channel or DM one is not in does not exist */
		if (rc == -ENOENT && rec.kind != STORE_PUBLIC)
			FAIL("NOT_FOUND", "no such channel");
		if (rc == -ENOENT)
			FAIL("FORBIDDEN", "not a member of this channel");
		if (rc)
			FAIL("UNAVAILABLE", "storage unavailable");
		collect_ch(&l, ch, a->ch.n);
	} else if (store_scan_user_channels(srv.st, ws, user, collect_ch,
					    &l)) {
		FAIL("UNAVAILABLE", "storage unavailable");
	}
	if (l.oom)
		FAIL("INTERNAL", "out of memory");
	if (!(p = malloc(sizeof(*p))))
		FAIL("INTERNAL", "out of memory");
	p->conn = rt_conn_get_id(c);
	p->rid = rid;
	p->has_rid = has_rid;
	p->counted = inflight != NULL;
	{
		const char **ids = malloc((l.n ? l.n : 1) * sizeof(*ids));

		if (!ids) {
			free(p);
			FAIL("INTERNAL", "out of memory");
		}
		for (unsigned i = 0; i < l.n; i++)
			ids[i] = l.v[i];
		rc = search_query(srv.sx, a->q.s, a->q.n, ids, l.n, a->limit,
				  done, p);
		free(ids);
	}
	if (rc == 0 && inflight)
		(*inflight)++; /* done() will post the slot back */
	if (rc == -EBUSY) {
		free(p);
		reply_err(c, has_rid, rid, "search", "RATE_LIMITED",
			  "too many searches waiting; try again", BUSY_RETRY_MS);
		goto out;
	}
	if (rc) {
		free(p);
		if (rc == -ENOMEM)
			FAIL("INTERNAL", "out of memory");
		FAIL("UNAVAILABLE", "search is shutting down");
	}
#undef FAIL
out:
	free(l.v);
}
