/*
 * Full-text search end to end: a user finds messages only in channels it
 * is a member of, in its own workspace (not in a public channel it never
 * joined, not in another workspace's channel with the same words); hits
 * follow edits and deletes; words, prefixes and phrases; newest first with
 * every field of a hit; limit; bad arguments; the `ch` argument
 * (NOT_FOUND, FORBIDDEN); --no-search; and hits that survive kill -9,
 * including messages acknowledged just before the kill, which only the
 * catch-up on restart can index.
 *
 * Indexing is asynchronous (off the ack path), so a check that something
 * is (or is no longer) found polls for up to 3 s.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/e2e/harness.h"

#define FAST "--shards 2 --send-rate 100000 --send-burst 100000"
#define POLL_MS 10000

/* ---- helpers ------------------------------------------------------------- */

/* A send; the next one comes in a later millisecond, so that order by
 * time is order of sending even across shards. */
static uint64_t send_ok(pc_conn *c, const char *ch, const char *body)
{
	static unsigned n;
	char cmid[32];
	int64_t seq;

	snprintf(cmid, sizeof(cmid), "m%u", ++n);
	seq = h_send(c, ch, body, cmid);
	assert_true(seq > 0);
	usleep(1500);
	return (uint64_t)seq;
}

/* One hit, copied out of the response. */
struct hit {
	char ch[65], from[65], body[256];
	uint64_t seq, ts;
};

struct hits {
	unsigned n;
	struct hit h[100];
};

/* search q (in ch if not NULL, limit if not 0); 1 ok (hits in *out), 0
 * refused (code in code_out). */
static int search(pc_conn *c, const char *q, const char *ch, uint64_t limit,
		  struct hits *out, char *code_out)
{
	proto_doc res;
	const msgpack_object_array *a;
	int rc;

	if (ch && limit)
		rc = h_req(c, &res, "search", 3, "q", 's', q, "ch", 's', ch,
			   "limit", 'u', limit);
	else if (ch)
		rc = h_req(c, &res, "search", 2, "q", 's', q, "ch", 's', ch);
	else if (limit)
		rc = h_req(c, &res, "search", 2, "q", 's', q, "limit", 'u',
			   limit);
	else
		rc = h_req(c, &res, "search", 1, "q", 's', q);
	assert_int_equal(rc, 1);
	if (!h_ok(&res)) {
		if (code_out)
			snprintf(code_out, 65, "%s", h_code(&res));
		proto_doc_free(&res);
		return 0;
	}
	assert_int_equal(proto_get_array(&res.root, "hits", &a), 0);
	assert_true(a->size <= 100);
	memset(out, 0, sizeof(*out));
	out->n = a->size;
	for (uint32_t i = 0; i < a->size; i++) {
		const msgpack_object *m = &a->ptr[i];
		struct hit *h = &out->h[i];

		assert_int_equal(m->type, MSGPACK_OBJECT_MAP);
		assert_int_equal(m->via.map.size, 5);
		snprintf(h->ch, sizeof(h->ch), "%s", h_s(m, "ch"));
		snprintf(h->from, sizeof(h->from), "%s", h_s(m, "from"));
		snprintf(h->body, sizeof(h->body), "%s", h_s(m, "body"));
		h->seq = h_u(m, "seq");
		h->ts = h_u(m, "ts");
		assert_true(h->seq > 0);
		assert_true(h->ts > 0);
	}
	proto_doc_free(&res);
	return 1;
}

static void search_ok(pc_conn *c, const char *q, const char *ch,
		      uint64_t limit, struct hits *out)
{
	char code[65];

	if (!search(c, q, ch, limit, out, code))
		fail_msg("search %s refused: %s", q, code);
}

/* Search until exactly want hits come back (indexing is asynchronous);
 * fails after POLL_MS. */
static void search_until(pc_conn *c, const char *q, const char *ch,
			 uint64_t limit, unsigned want, struct hits *out)
{
	uint64_t end = now_ms() + POLL_MS;

	for (;;) {
		char code[65];

		if (!search(c, q, ch, limit, out, code)) {
			/* right after a restart, while the index catches up
			 * from the log, a query may answer UNAVAILABLE */
			if (strcmp(code, "UNAVAILABLE"))
				fail_msg("search %s refused: %s", q, code);
			out->n = UINT_MAX;
		} else if (out->n == want) {
			return;
		}
		if (now_ms() > end && out->n == UINT_MAX)
			fail_msg("search %s: still UNAVAILABLE", q);
		if (now_ms() > end)
			fail_msg("search %s: %u hits, want %u", q, out->n, want);
		usleep(20000);
	}
}

static void search_fail(pc_conn *c, const char *code, const char *q,
			const char *ch, uint64_t limit)
{
	struct hits h;
	char got[65];

	if (search(c, q, ch, limit, &h, got))
		fail_msg("search %s: ok, want %s", q, code);
	assert_string_equal(got, code);
}

/* hits contains (ch, seq) */
static bool has(const struct hits *h, const char *ch, uint64_t seq)
{
	for (unsigned i = 0; i < h->n; i++)
		if (!strcmp(h->h[i].ch, ch) && h->h[i].seq == seq)
			return true;
	return false;
}

static void expect_err_frame(pc_conn *c, const char *code)
{
	proto_doc d;

	assert_int_equal(h_expect(c, "err", &d, H_TIMEOUT), 1);
	assert_string_equal(h_s(&d.root, "code"), code);
	assert_string_equal(h_s(&d.root, "op"), "search");
	proto_doc_free(&d);
}

/* ---- cases ------------------------------------------------------------------ */

/* Only the user's channels, only its workspace. */
static void test_scope(void **st)
{
	hsrv s;
	pc_conn *a, *b, *c, *e;
	char pub[65], priv[65], bobs[65], open[65], other[65], dm[65];
	struct hits h;

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	c = h_connect_ok(&s, "carol", "acme");
	/* the same user id, in another workspace */
	e = h_connect_ok(&s, "alice", "evil");
	h_create_ok(a, "general", "public", pub);
	h_create_ok(a, "alice-private", "private", priv);
	h_create_ok(b, "bob-private", "private", bobs);
	h_create_ok(c, "carols-open", "public", open);
	h_create_ok(e, "general", "public", other);
	h_join_ok(b, pub);
	{
		proto_doc res;
		const char *users[] = { "bob", NULL };
		const msgpack_object_map *m;

		h_req_ok(a, &res, "dm.open", 1, "users", 'S', users);
		assert_int_equal(proto_get_map(&res.root, "ch", &m), 0);
		msgpack_object o = { .type = MSGPACK_OBJECT_MAP, .via.map = *m };
		snprintf(dm, sizeof(dm), "%s", h_s(&o, "id"));
		proto_doc_free(&res);
	}
	send_ok(a, pub, "pineapple in general");
	send_ok(a, priv, "pineapple only for alice");
	send_ok(b, bobs, "pineapple only for bob");
	send_ok(c, open, "pineapple in a public channel alice never joined");
	send_ok(e, other, "pineapple in another workspace");
	send_ok(b, dm, "pineapple between alice and bob");

	search_until(a, "pineapple", NULL, 0, 3, &h);
	assert_true(has(&h, pub, 1));
	assert_true(has(&h, priv, 1));
	assert_true(has(&h, dm, 1));
	/* newest first */
	assert_string_equal(h.h[0].ch, dm);
	assert_string_equal(h.h[1].ch, priv);
	assert_string_equal(h.h[2].ch, pub);
	search_until(b, "pineapple", NULL, 0, 3, &h);
	assert_true(has(&h, pub, 1));
	assert_true(has(&h, bobs, 1));
	assert_true(has(&h, dm, 1));
	search_until(c, "pineapple", NULL, 0, 1, &h);
	assert_true(has(&h, open, 1));
	search_until(e, "pineapple", NULL, 0, 1, &h);
	assert_string_equal(h.h[0].ch, other);
	assert_string_equal(h.h[0].body, "pineapple in another workspace");

	/* the ch argument */
	search_until(a, "pineapple", pub, 0, 1, &h);
	assert_string_equal(h.h[0].ch, pub);
	search_fail(a, "NOT_FOUND", "pineapple", bobs, 0); /* private */
	search_fail(a, "FORBIDDEN", "pineapple", open, 0); /* public: join first */
	search_fail(a, "NOT_FOUND", "pineapple", other, 0); /* other ws */
	search_fail(a, "NOT_FOUND", "pineapple", "no-such-channel", 0);
	search_fail(e, "NOT_FOUND", "pineapple", pub, 0);

	/* joining brings the channel's past in; leaving takes it away */
	h_join_ok(a, open);
	search_until(a, "pineapple", NULL, 0, 4, &h);
	assert_true(has(&h, open, 1));
	search_until(a, "pineapple", open, 0, 1, &h);
	{
		proto_doc res;

		h_req_ok(a, &res, "ch.leave", 1, "ch", 's', open);
		proto_doc_free(&res);
	}
	search_until(a, "pineapple", NULL, 0, 3, &h);
	assert_false(has(&h, open, 1));
	search_fail(a, "FORBIDDEN", "pineapple", open, 0);

	pc_close(a);
	pc_close(b);
	pc_close(c);
	pc_close(e);
	h_finish(&s);
}

/* Words, prefixes, phrases; every field; limit and order; threads. */
static void test_query(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char ch[65];
	struct hits h;
	uint64_t seq, root;
	char body[64];

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a, "team", "public", ch);
	h_join_ok(b, ch);
	seq = send_ok(a, ch, "The deployment of the Quick Brown service");
	send_ok(b, ch, "brown bread, quick lunch");
	send_ok(a, ch, "Réunion au café demain");
	/* one channel is indexed in seq order: the last there, all there */
	search_until(a, "demain", NULL, 0, 1, &h);
	search_ok(a, "deployment", NULL, 0, &h);
	assert_int_equal(h.n, 1);
	assert_string_equal(h.h[0].ch, ch);
	assert_int_equal(h.h[0].seq, seq);
	assert_string_equal(h.h[0].from, "alice");
	assert_string_equal(h.h[0].body,
			    "The deployment of the Quick Brown service");
	assert_true(h.h[0].ts > 1600000000000ull);

	/* words: all must be there, any case */
	search_ok(a, "quick BROWN", NULL, 0, &h);
	assert_int_equal(h.n, 2);
	assert_int_equal(h.h[0].seq, 2); /* newest first */
	assert_int_equal(h.h[1].seq, 1);
	search_ok(a, "quick deployment", NULL, 0, &h);
	assert_int_equal(h.n, 1);
	/* prefixes */
	search_ok(a, "deploy*", NULL, 0, &h);
	assert_int_equal(h.n, 1);
	search_ok(a, "br*", NULL, 0, &h);
	assert_int_equal(h.n, 2);
	search_ok(a, "deploy", NULL, 0, &h);
	assert_int_equal(h.n, 0);
	/* phrases */
	search_ok(a, "\"quick brown\"", NULL, 0, &h);
	assert_int_equal(h.n, 1);
	assert_int_equal(h.h[0].seq, 1);
	search_ok(a, "\"brown quick\"", NULL, 0, &h);
	assert_int_equal(h.n, 0);
	search_ok(a, "\"brown bread\" lunch", NULL, 0, &h);
	assert_int_equal(h.n, 1);
	assert_string_equal(h.h[0].from, "bob");
	/* diacritics */
	search_ok(a, "reunion cafe", NULL, 0, &h);
	assert_int_equal(h.n, 1);
	/* operators and syntax are just text */
	search_ok(a, "quick OR nothing", NULL, 0, &h);
	assert_int_equal(h.n, 0);
	search_ok(a, "NEAR(quick brown)", NULL, 0, &h);
	assert_int_equal(h.n, 0);
	search_ok(a, "body:quick", NULL, 0, &h);
	assert_int_equal(h.n, 0);
	search_ok(a, "quick)", NULL, 0, &h);
	assert_int_equal(h.n, 2);

	/* thread replies are messages too */
	root = seq;
	{
		proto_doc res;

		h_req_ok(b, &res, "send", 4, "ch", 's', ch, "body", 's',
		         "a threaded zebra reply", "cmid", 's', "t1", "thread",
		         'u', root);
		proto_doc_free(&res);
	}
	search_until(a, "zebra", NULL, 0, 1, &h);
	assert_int_equal(h.h[0].seq, 4);

	/* limit: default 20, at most 100, newest first */
	for (unsigned i = 1; i <= 30; i++) {
		snprintf(body, sizeof(body), "numbered walrus %u", i);
		send_ok(a, ch, body);
	}
	search_until(a, "walrus", NULL, 100, 30, &h);
	for (unsigned i = 0; i < 30; i++) {
		snprintf(body, sizeof(body), "numbered walrus %u", 30 - i);
		assert_string_equal(h.h[i].body, body);
		assert_int_equal(h.h[i].seq, 34 - i);
	}
	search_ok(a, "walrus", NULL, 0, &h);
	assert_int_equal(h.n, 20);
	assert_int_equal(h.h[0].seq, 34);
	search_ok(a, "walrus", NULL, 5, &h);
	assert_int_equal(h.n, 5);
	assert_string_equal(h.h[4].body, "numbered walrus 26");
	search_ok(a, "walrus", ch, 1, &h);
	assert_int_equal(h.n, 1);
	assert_int_equal(h.h[0].seq, 34);

	pc_close(a);
	pc_close(b);
	h_finish(&s);
}

/* Hits follow edits and deletes. */
static void test_edit_delete(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char ch[65];
	struct hits h;
	proto_doc res;
	uint64_t s1, s2;

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a, "edits", "public", ch);
	h_join_ok(b, ch);
	s1 = send_ok(a, ch, "the original giraffe text");
	s2 = send_ok(a, ch, "a doomed giraffe message");
	search_until(b, "giraffe", NULL, 0, 2, &h);

	h_req_ok(a, &res, "edit", 3, "ch", 's', ch, "target", 'u', s1, "body",
	         's', "the corrected okapi text");
	proto_doc_free(&res);
	search_until(b, "okapi", NULL, 0, 1, &h);
	assert_int_equal(h.h[0].seq, s1);
	assert_string_equal(h.h[0].body, "the corrected okapi text");
	search_until(b, "giraffe", NULL, 0, 1, &h);
	assert_int_equal(h.h[0].seq, s2);
	search_ok(b, "original", NULL, 0, &h);
	assert_int_equal(h.n, 0);

	h_req_ok(a, &res, "delete", 2, "ch", 's', ch, "target", 'u', s2);
	proto_doc_free(&res);
	search_until(b, "giraffe", NULL, 0, 0, &h);
	search_ok(b, "doomed", NULL, 0, &h);
	assert_int_equal(h.n, 0);

	/* an edited message, then deleted */
	h_req_ok(a, &res, "edit", 3, "ch", 's', ch, "target", 'u', s1, "body",
	         's', "second thought okapi");
	proto_doc_free(&res);
	search_until(b, "thought", NULL, 0, 1, &h);
	h_req_ok(a, &res, "delete", 2, "ch", 's', ch, "target", 'u', s1);
	proto_doc_free(&res);
	search_until(b, "okapi", NULL, 0, 0, &h);
	search_ok(b, "thought", NULL, 0, &h);
	assert_int_equal(h.n, 0);

	pc_close(a);
	pc_close(b);
	h_finish(&s);
}

static void test_bad_args(void **st)
{
	hsrv s;
	pc_conn *a;
	char ch[65], big[1100];
	proto_doc d;
	proto_out o;

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	h_create_ok(a, "x", "public", ch);
	send_ok(a, ch, "something findable");

	h_req_fail("BAD_REQUEST", a, "search", 0);
	h_req_fail("BAD_REQUEST", a, "search", 1, "q", 'u', (uint64_t)5);
	h_req_fail("BAD_REQUEST", a, "search", 1, "q", 's', "");
	h_req_fail("BAD_REQUEST", a, "search", 1, "q", 's', " ,;!?  ");
	h_req_fail("BAD_REQUEST", a, "search", 1, "q", 's', "\"\"");
	h_req_fail("BAD_REQUEST", a, "search", 1, "q", 's', "*");
	h_req_fail("BAD_REQUEST", a, "search", 2, "q", 's', "x", "limit", 'u',
		   (uint64_t)0);
	h_req_fail("BAD_REQUEST", a, "search", 2, "q", 's', "x", "limit", 'u',
		   (uint64_t)101);
	h_req_fail("BAD_REQUEST", a, "search", 2, "q", 's', "x", "limit", 's',
		   "10");
	h_req_fail("BAD_REQUEST", a, "search", 2, "q", 's', "x", "ch", 'u',
		   (uint64_t)1);
	h_req_fail("BAD_REQUEST", a, "search", 2, "q", 's', "x", "ch", 's',
		   "bad id!");
	h_req_fail("BAD_REQUEST", a, "search", 1, "q", 's',
		   "a b c d e f g h i j k l m n o p q");
	memset(big, 'w', 1025);
	big[1025] = 0;
	h_req_fail("BAD_REQUEST", a, "search", 1, "q", 's', big);
	/* arguments are checked before the channel */
	h_req_fail("BAD_REQUEST", a, "search", 2, "q", 's', "", "ch", 's',
		   "no-such-channel");
	{
		proto_doc res;

		h_req_ok(a, &res, "search", 2, "q", 's', "x", "limit", 'u',
		         (uint64_t)100);
		proto_doc_free(&res);
		h_req_ok(a, &res, "search", 1, "q", 's', "findable");
		proto_doc_free(&res);
	}

	/* fire-and-forget: an error comes as an err frame naming the op;
	 * success says nothing */
	proto_out_init(&o, 0, 256);
	proto_enc_req(&o, "search", 0, 1);
	proto_pk_cstr(&o.pk, "q");
	proto_pk_cstr(&o.pk, "");
	assert_int_equal(pc_send(a, &o), 0);
	expect_err_frame(a, "BAD_REQUEST");
	proto_out_reset(&o);
	proto_enc_req(&o, "search", 0, 1);
	proto_pk_cstr(&o.pk, "q");
	proto_pk_cstr(&o.pk, "!!!");
	assert_int_equal(pc_send(a, &o), 0);
	expect_err_frame(a, "BAD_REQUEST"); /* refused on the query thread */
	proto_out_reset(&o);
	proto_enc_req(&o, "search", 0, 1);
	proto_pk_cstr(&o.pk, "q");
	proto_pk_cstr(&o.pk, "findable");
	assert_int_equal(pc_send(a, &o), 0);
	proto_out_free(&o);
	{
		uint64_t end = now_ms() + 500;
		int rc;

		/* only the send's own event may come */
		while ((rc = h_next(a, &d, (int)(end - now_ms()))) == 1) {
			char t[65];

			snprintf(t, sizeof(t), "%s", h_s(&d.root, "t"));
			proto_doc_free(&d);
			assert_string_equal(t, "ev");
			if (now_ms() >= end)
				break;
		}
		assert_int_equal(rc == -1, 0);
	}

	/* a search before hello */
	{
		pc_conn *raw = h_connect_raw(&s);

		assert_non_null(raw);
		h_req_fail("UNAUTHORIZED", raw, "search", 1, "q", 's', "x");
		pc_close(raw);
	}
	pc_close(a);
	h_finish(&s);
}

/* Put n searches for q on the wire in one write; rid[i] for each (0 for
 * fire-and-forget). */
static void queue_searches(pc_conn *c, const char *q, unsigned n,
			   uint64_t rid0, uint64_t *rid)
{
	proto_out o;

	proto_out_init(&o, 0, 256);
	for (unsigned i = 0; i < n; i++) {
		rid[i] = rid0 ? rid0 + i : 0;
		proto_out_reset(&o);
		proto_enc_req(&o, "search", rid[i], 1);
		proto_pk_cstr(&o.pk, "q");
		proto_pk_cstr(&o.pk, q);
		assert_int_equal(pc_queue(c, 2, o.data, o.len), 0);
	}
	proto_out_free(&o);
	while (pc_pending(c))
		assert_true(pc_flush(c) >= 0);
}

/* One connection has at most 8 searches in flight: the ones past that are
 * RATE_LIMITED with retry_ms (the query queue is shared by everyone).
 * Slots come back with the answers, fire-and-forget ones included, and
 * another connection of the same user has slots of its own. */
static void test_per_connection_cap(void **st)
{
	enum { N = 40 };
	const uint64_t RID0 = 1ull << 40; /* clear of h_req's rids */
	hsrv s;
	pc_conn *a, *a2;
	char ch[65];
	uint64_t rid[N];
	unsigned ok = 0, limited = 0;
	proto_doc res;
	struct hits h;

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	a2 = h_connect_ok(&s, "alice", "acme");
	h_create_ok(a, "x", "public", ch);
	send_ok(a, ch, "a needle in the haystack");
	search_until(a, "needle", NULL, 0, 1, &h);

	/* 40 at once: the first 8 go, the rest are refused at once */
	queue_searches(a, "needle", N, RID0, rid);
	search_ok(a2, "needle", NULL, 0, &h); /* a2 has slots of its own */
	assert_int_equal(h.n, 1);
	for (unsigned i = 0; i < N; i++) {
		assert_int_equal(h_await(a, rid[i], &res), 1);
		if (h_ok(&res)) {
			ok++;
		} else {
			assert_string_equal(h_code(&res), "RATE_LIMITED");
			assert_int_equal(h_u(&res.root, "retry_ms"), 100);
			limited++;
		}
		proto_doc_free(&res);
	}
	print_message("40 searches at once: %u answered, %u RATE_LIMITED\n",
		      ok, limited);
	assert_true(ok >= 8);
	assert_true(limited >= 1);

	/* fire-and-forget ones give their slots back too: after 16 of them
	 * (and one answered search behind them, so all are done), 8 at once
	 * all go */
	queue_searches(a, "needle", 16, 0, rid);
	for (int tries = 0;; tries++) {
		/* as a client would: wait retry_ms while the 8 that went in
		 * are under way; the one that goes is answered after them */
		assert_int_equal(h_req(a, &res, "search", 1, "q", 's',
				       "needle"), 1);
		if (h_ok(&res))
			break;
		assert_string_equal(h_code(&res), "RATE_LIMITED");
		assert_true(tries < 50);
		usleep((useconds_t)h_u(&res.root, "retry_ms") * 1000);
		proto_doc_free(&res);
	}
	proto_doc_free(&res);
	queue_searches(a, "needle", 8, RID0 + 100, rid);
	for (unsigned i = 0; i < 8; i++) {
		assert_int_equal(h_await(a, rid[i], &res), 1);
		if (!h_ok(&res))
			fail_msg("search %u of 8: %s", i, h_code(&res));
		proto_doc_free(&res);
	}
	pc_close(a);
	pc_close(a2);
	h_finish(&s);
}

static void test_no_search(void **st)
{
	hsrv s;
	pc_conn *a;
	char ch[65];

	(void)st;
	h_start(&s, FAST " --no-search");
	a = h_connect_ok(&s, "alice", "acme");
	h_create_ok(a, "x", "public", ch);
	send_ok(a, ch, "something");
	search_fail(a, "UNAVAILABLE", "something", NULL, 0);
	search_fail(a, "UNAVAILABLE", "something", ch, 0);
	/* arguments are still checked first */
	h_req_fail("BAD_REQUEST", a, "search", 1, "q", 's', "");
	pc_close(a);
	h_finish(&s);
}

/* Acked messages (and edits, deletes) are found after kill -9 and a
 * restart, also those the indexer had not reached: the log catches the
 * index up. */
static void test_kill9(void **st)
{
	enum { N = 300 };
	hsrv s;
	pc_conn *a;
	char ch[65], ch2[65], body[64];
	uint64_t seqs[N + 1];
	struct hits h;
	proto_doc res;

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	h_create_ok(a, "durable", "public", ch);
	h_create_ok(a, "late", "public", ch2);
	send_ok(a, ch, "an early penguin");
	send_ok(a, ch, "a penguin to be edited");
	send_ok(a, ch, "a penguin to be deleted");
	search_until(a, "penguin", NULL, 0, 3, &h);
	h_req_ok(a, &res, "edit", 3, "ch", 's', ch, "target", 'u', (uint64_t)2,
	         "body", 's', "an edited puffin");
	proto_doc_free(&res);
	h_req_ok(a, &res, "delete", 2, "ch", 's', ch, "target", 'u',
	         (uint64_t)3);
	proto_doc_free(&res);
	/* a burst, acked; the kill comes right after the last ack */
	for (unsigned i = 1; i <= N; i++) {
		snprintf(body, sizeof(body), "burst kiwi %u", i);
		seqs[i] = send_ok(a, i % 2 ? ch : ch2, body);
	}
	/* an edit and a delete acked just before the kill: the index may
	 * not have them yet, the log does */
	h_req_ok(a, &res, "edit", 3, "ch", 's', ch, "target", 'u', seqs[N - 1],
	         "body", 's', "a late walrus");
	proto_doc_free(&res);
	h_req_ok(a, &res, "delete", 2, "ch", 's', ch, "target", 'u',
	         seqs[N - 3]);
	proto_doc_free(&res);
	send_ok(a, ch, "the last osprey of the first channel");
	send_ok(a, ch2, "the very last albatross");
	h_kill9(&s);
	pc_close(a);
	h_restart(&s);
	a = h_connect_ok(&s, "alice", "acme");
	search_until(a, "albatross", NULL, 0, 1, &h);
	assert_string_equal(h.h[0].ch, ch2);
	search_until(a, "osprey", NULL, 0, 1, &h);
	/* caught up on ch: the edit and the delete made before the kill */
	search_until(a, "walrus", NULL, 0, 1, &h);
	assert_int_equal(h.h[0].seq, seqs[N - 1]);
	snprintf(body, sizeof(body), "\"kiwi %u\"", N - 1);
	search_until(a, body, NULL, 0, 0, &h);
	snprintf(body, sizeof(body), "\"kiwi %u\"", N - 3);
	search_until(a, body, NULL, 0, 0, &h);
	search_until(a, "kiwi", NULL, 100, 100, &h);
	/* the newest two (other channels, maybe the same millisecond) */
	snprintf(body, sizeof(body), "burst kiwi %u", N);
	assert_true(!strcmp(h.h[0].body, body) || !strcmp(h.h[1].body, body));
	search_until(a, "kiwi", ch, 100, 100, &h);
	search_until(a, "kiwi", ch2, 100, 100, &h);
	search_until(a, "puffin", NULL, 0, 1, &h);
	assert_int_equal(h.h[0].seq, 2);
	search_until(a, "penguin", NULL, 0, 1, &h);
	assert_int_equal(h.h[0].seq, 1);
	/* every one of the burst, through narrower queries (but the
	 * edited and the deleted one) */
	for (unsigned i = 1; i <= N; i++) {
		if (i == N - 1 || i == N - 3)
			continue;
		snprintf(body, sizeof(body), "\"kiwi %u\"", i);
		search_until(a, body, NULL, 0, 1, &h);
		assert_int_equal(h.h[0].seq, seqs[i]);
	}
	/* and the index goes on from there */
	send_ok(a, ch, "after the restart, a heron");
	search_until(a, "heron", NULL, 0, 1, &h);

	/* again, with a clean stop in between: nothing is indexed twice */
	pc_close(a);
	assert_int_equal(h_stop(&s), 0);
	h_restart(&s);
	a = h_connect_ok(&s, "alice", "acme");
	search_until(a, "heron", NULL, 0, 1, &h);
	search_until(a, "albatross", NULL, 0, 1, &h);
	search_until(a, "penguin", NULL, 0, 1, &h);
	pc_close(a);
	h_finish(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scope),
		cmocka_unit_test(test_query),
		cmocka_unit_test(test_edit_delete),
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test(test_per_connection_cap),
		cmocka_unit_test(test_no_search),
		cmocka_unit_test(test_kill9),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
