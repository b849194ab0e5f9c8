/*
 * Reading a channel's past, and what is unread: history pages (newest
 * first page, before/after, the more flag, every field of a message, bad
 * arguments refused), threads (replies stay out of the main view, the root
 * counts them, history by thread, replies to nothing or to a reply are
 * NOT_FOUND), the raw log through events (paging, replies included, limit
 * 1-1000), and read markers: unread and mention counts in hello and
 * ch.list, `read` moving them (never backwards, told to the user's other
 * devices), and sending moving the sender's own marker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "tests/e2e/harness.h"

#define FAST "--shards 2 --send-rate 100000 --send-burst 100000"

/* ---- helpers ------------------------------------------------------------- */

/* Copy of the string at key (h_s() has one static buffer). */
static void str_at(const msgpack_object *m, const char *key, char *out)
{
	snprintf(out, 65, "%.64s", h_s(m, key));
}

static const msgpack_object_array *arr_at(const msgpack_object *m,
					  const char *key)
{
	const msgpack_object_array *a = NULL;

	assert_int_equal(proto_get_array(m, key, &a), 0);
	return a;
}

static bool bool_at(const msgpack_object *m, const char *key)
{
	bool b = false;

	assert_int_equal(proto_get_bool(m, key, &b), 0);
	return b;
}

/* send with optional thread (0 = none) and mentions (NULL = none); the
 * response in res. */
static void send_req(pc_conn *c, proto_doc *res, const char *ch,
		     const char *body, const char *cmid, uint64_t thread,
		     const char **mentions)
{
	int rc;

	if (thread && mentions)
		rc = h_req(c, res, "send", 5, "ch", 's', ch, "body", 's', body,
			   "cmid", 's', cmid, "thread", 'u', thread,
			   "mentions", 'S', mentions);
	else if (thread)
		rc = h_req(c, res, "send", 4, "ch", 's', ch, "body", 's', body,
			   "cmid", 's', cmid, "thread", 'u', thread);
	else if (mentions)
		rc = h_req(c, res, "send", 4, "ch", 's', ch, "body", 's', body,
			   "cmid", 's', cmid, "mentions", 'S', mentions);
	else
		rc = h_req(c, res, "send", 3, "ch", 's', ch, "body", 's', body,
			   "cmid", 's', cmid);
	assert_int_equal(rc, 1);
}

/* A send that must be stored as want_seq. */
static void send_ok(pc_conn *c, const char *ch, const char *body,
		    const char *cmid, uint64_t thread, const char **mentions,
		    uint64_t want_seq)
{
	proto_doc res;

	send_req(c, &res, ch, body, cmid, thread, mentions);
	if (!h_ok(&res))
		fail_msg("send %s refused: %s", cmid, h_code(&res));
	assert_int_equal(h_u(&res.root, "seq"), want_seq);
	assert_non_null(proto_get(&res.root, "ts"));
	proto_doc_free(&res);
}

static void send_fail(const char *code, pc_conn *c, const char *ch,
		      const char *cmid, uint64_t thread)
{
	proto_doc res;

	send_req(c, &res, ch, "nope", cmid, thread, NULL);
	assert_false(h_ok(&res));
	assert_string_equal(h_code(&res), code);
	proto_doc_free(&res);
}

/* The next ev frame on c is seq of ch; the doc is left in d. */
static void next_ev(pc_conn *c, const char *ch, uint64_t seq, proto_doc *d)
{
	assert_int_equal(h_expect(c, "ev", d, H_TIMEOUT), 1);
	assert_string_equal(h_s(&d->root, "ch"), ch);
	assert_int_equal(h_u(&d->root, "seq"), seq);
}

/* The entry for id in a "channels" list (fails if absent). */
static const msgpack_object *find_ch(const proto_doc *res, const char *id)
{
	const msgpack_object_array *a = arr_at(&res->root, "channels");

	for (uint32_t i = 0; i < a->size; i++)
		if (!strcmp(h_s(&a->ptr[i], "id"), id))
			return &a->ptr[i];
	fail_msg("channel %s not listed", id);
	return NULL;
}

static void check_counts(const msgpack_object *e, uint64_t last_seq,
			 uint64_t read_seq, uint64_t unread, uint64_t mentions)
{
	assert_non_null(proto_get(e, "last_seq"));
	assert_non_null(proto_get(e, "read_seq"));
	assert_non_null(proto_get(e, "unread"));
	assert_non_null(proto_get(e, "mentions"));
	assert_int_equal(h_u(e, "last_seq"), last_seq);
	assert_int_equal(h_u(e, "read_seq"), read_seq);
	assert_int_equal(h_u(e, "unread"), unread);
	assert_int_equal(h_u(e, "mentions"), mentions);
}

/* ch.list through c, then check ch's counts. */
static void list_counts(pc_conn *c, const char *ch, uint64_t last_seq,
			uint64_t read_seq, uint64_t unread, uint64_t mentions)
{
	proto_doc res;

	h_req_ok(c, &res, "ch.list", 0);
	check_counts(find_ch(&res, ch), last_seq, read_seq, unread, mentions);
	proto_doc_free(&res);
}

/* ---- history paging ------------------------------------------------------ */

#define NMSG 120

/* Message seq of the paging test: alice wrote the odd ones, bob the even. */
static const char *author(uint64_t seq) { return seq % 2 ? "alice" : "bob"; }

/* res is a history page holding exactly the messages from..to (ascending;
 * from > to: none) and the given more flag; checks every field. */
static void check_page(const proto_doc *res, uint64_t from, uint64_t to,
		       bool more)
{
	const msgpack_object_array *a = arr_at(&res->root, "msgs");
	uint64_t n = from <= to ? to - from + 1 : 0, prev_ts = 0;

	assert_int_equal(a->size, n);
	assert_int_equal(bool_at(&res->root, "more"), more);
	for (uint32_t i = 0; i < a->size; i++) {
		const msgpack_object *m = &a->ptr[i];
		uint64_t seq = from + i;
		char want[32];

		assert_int_equal(m->type, MSGPACK_OBJECT_MAP);
		assert_int_equal(h_u(m, "seq"), seq);
		assert_string_equal(h_s(m, "from"), author(seq));
		snprintf(want, sizeof(want), "message %llu",
			 (unsigned long long)seq);
		assert_string_equal(h_s(m, "body"), want);
		snprintf(want, sizeof(want), "cm-%llu",
			 (unsigned long long)seq);
		assert_string_equal(h_s(m, "cmid"), want);
		assert_non_null(proto_get(m, "ts"));
		assert_true(h_u(m, "ts") > 1600000000000ull);
		assert_true(h_u(m, "ts") >= prev_ts);
		prev_ts = h_u(m, "ts");
		assert_null(proto_get(m, "thread"));
		assert_null(proto_get(m, "replies"));
		assert_null(proto_get(m, "deleted"));
	}
}

static void test_history_pages(void **st)
{
	hsrv s;
	pc_conn *a, *b, *d;
	char ch[65];
	proto_doc res;

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	d = h_connect_ok(&s, "dave", "acme");
	h_create_ok(a, "general", "public", ch);
	h_join_ok(b, ch);
	for (uint64_t seq = 1; seq <= NMSG; seq++) {
		char body[32], cmid[32];

		snprintf(body, sizeof(body), "message %llu",
			 (unsigned long long)seq);
		snprintf(cmid, sizeof(cmid), "cm-%llu",
			 (unsigned long long)seq);
		send_ok(seq % 2 ? a : b, ch, body, cmid, 0, NULL, seq);
	}

	/* Neither before nor after: the newest 50, ascending */
	h_req_ok(a, &res, "history", 1, "ch", 's', ch);
	check_page(&res, 71, 120, true);
	proto_doc_free(&res);
	/* Scrolling back */
	h_req_ok(a, &res, "history", 3, "ch", 's', ch, "before", 'u',
	         (uint64_t)71, "limit", 'u', (uint64_t)50);
	check_page(&res, 21, 70, true);
	proto_doc_free(&res);
	h_req_ok(b, &res, "history", 2, "ch", 's', ch, "before", 'u',
	         (uint64_t)21);
	check_page(&res, 1, 20, false);
	proto_doc_free(&res);
	h_req_ok(b, &res, "history", 2, "ch", 's', ch, "before", 'u',
	         (uint64_t)1);
	check_page(&res, 1, 0, false);
	proto_doc_free(&res);
	/* Forward */
	h_req_ok(a, &res, "history", 2, "ch", 's', ch, "after", 'u',
	         (uint64_t)100);
	check_page(&res, 101, 120, false);
	proto_doc_free(&res);
	h_req_ok(a, &res, "history", 3, "ch", 's', ch, "after", 'u',
	         (uint64_t)0, "limit", 'u', (uint64_t)10);
	check_page(&res, 1, 10, true);
	proto_doc_free(&res);
	h_req_ok(a, &res, "history", 3, "ch", 's', ch, "after", 'u',
	         (uint64_t)110, "limit", 'u', (uint64_t)10);
	check_page(&res, 111, 120, false);
	proto_doc_free(&res);
	h_req_ok(a, &res, "history", 2, "ch", 's', ch, "after", 'u',
	         (uint64_t)120);
	check_page(&res, 1, 0, false);
	proto_doc_free(&res);
	/* Exactly what is left before: more is false */
	h_req_ok(a, &res, "history", 3, "ch", 's', ch, "before", 'u',
	         (uint64_t)11, "limit", 'u', (uint64_t)10);
	check_page(&res, 1, 10, false);
	proto_doc_free(&res);
	/* The largest page */
	h_req_ok(a, &res, "history", 2, "ch", 's', ch, "limit", 'u',
	         (uint64_t)200);
	check_page(&res, 1, 120, false);
	proto_doc_free(&res);
	h_req_ok(a, &res, "history", 2, "ch", 's', ch, "limit", 'u',
	         (uint64_t)120);
	check_page(&res, 1, 120, false);
	proto_doc_free(&res);
	h_req_ok(a, &res, "history", 2, "ch", 's', ch, "limit", 'u',
	         (uint64_t)119);
	check_page(&res, 2, 120, true);
	proto_doc_free(&res);
	/* A non-member may read a public channel */
	h_req_ok(d, &res, "history", 3, "ch", 's', ch, "before", 'u',
	         (uint64_t)61, "limit", 'u', (uint64_t)5);
	check_page(&res, 56, 60, true);
	proto_doc_free(&res);

	/* Refused */
	h_req_fail("BAD_REQUEST", a, "history", 3, "ch", 's', ch, "before", 'u',
		   (uint64_t)50, "after", 'u', (uint64_t)10);
	h_req_fail("BAD_REQUEST", a, "history", 2, "ch", 's', ch, "limit", 'u',
		   (uint64_t)0);
	h_req_fail("BAD_REQUEST", a, "history", 2, "ch", 's', ch, "limit", 'u',
		   (uint64_t)201);
	h_req_fail("BAD_REQUEST", a, "history", 2, "ch", 's', ch, "before", 's',
		   "50");
	h_req_fail("BAD_REQUEST", a, "history", 0);
	h_req_fail("NOT_FOUND", a, "history", 1, "ch", 's',
		   "C0123456789abcdef");

	pc_close(a);
	pc_close(b);
	pc_close(d);
	h_finish(&s);
}

/* ---- threads ------------------------------------------------------------- */

/* alice writes 1..10, bob replies to 5 three times (11, 12, 13), alice
 * writes 14. */
static void make_thread(pc_conn *a, pc_conn *b, const char *ch)
{
	for (uint64_t seq = 1; seq <= 10; seq++) {
		char body[32], cmid[32];

		snprintf(body, sizeof(body), "top %llu",
			 (unsigned long long)seq);
		snprintf(cmid, sizeof(cmid), "a-%llu", (unsigned long long)seq);
		send_ok(a, ch, body, cmid, 0, NULL, seq);
	}
	send_ok(b, ch, "reply one", "b-r1", 5, NULL, 11);
	send_ok(b, ch, "reply two", "b-r2", 5, NULL, 12);
	send_ok(b, ch, "reply three", "b-r3", 5, NULL, 13);
	send_ok(a, ch, "top 14", "a-14", 0, NULL, 14);
}

/* msgs of res are exactly the seqs in want[n], in that order */
static void check_seqs(const proto_doc *res, const uint64_t *want,
		       unsigned n, bool more)
{
	const msgpack_object_array *a = arr_at(&res->root, "msgs");

	assert_int_equal(a->size, n);
	for (unsigned i = 0; i < n; i++)
		assert_int_equal(h_u(&a->ptr[i], "seq"), want[i]);
	assert_int_equal(bool_at(&res->root, "more"), more);
}

static void check_replies(const proto_doc *res, const uint64_t *want,
			  unsigned n, uint64_t root, bool more)
{
	const msgpack_object_array *a = arr_at(&res->root, "msgs");

	check_seqs(res, want, n, more);
	for (unsigned i = 0; i < n; i++) {
		assert_non_null(proto_get(&a->ptr[i], "thread"));
		assert_int_equal(h_u(&a->ptr[i], "thread"), root);
		assert_null(proto_get(&a->ptr[i], "replies"));
	}
}

/* The top-level view: seqs top[n]; the root has replies/last_reply, no
 * other message has, and none has thread. */
static void check_main(pc_conn *c, const char *ch, const uint64_t *top,
		       unsigned n, uint64_t root, uint64_t replies,
		       uint64_t last_reply)
{
	proto_doc res;
	const msgpack_object_array *a;

	h_req_ok(c, &res, "history", 1, "ch", 's', ch);
	check_seqs(&res, top, n, false);
	a = arr_at(&res.root, "msgs");
	for (unsigned i = 0; i < n; i++) {
		const msgpack_object *m = &a->ptr[i];

		assert_null(proto_get(m, "thread"));
		if (top[i] == root) {
			assert_non_null(proto_get(m, "replies"));
			assert_int_equal(h_u(m, "replies"), replies);
			assert_non_null(proto_get(m, "last_reply"));
			assert_int_equal(h_u(m, "last_reply"), last_reply);
			assert_string_equal(h_s(m, "from"), "alice");
			assert_string_equal(h_s(m, "body"), "top 5");
		} else if (!proto_get(m, "replies")) {
			assert_null(proto_get(m, "last_reply"));
		} else {
			assert_int_equal(h_u(m, "replies"), 0);
		}
	}
	proto_doc_free(&res);
}

static void test_threads(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char ch[65];
	proto_doc res, d;
	static const uint64_t top[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14 };
	static const uint64_t top2[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14,
					 15 };
	static const uint64_t rep[] = { 11, 12, 13 };
	static const uint64_t rep4[] = { 11, 12, 13, 16 };

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a, "general", "public", ch);
	h_join_ok(b, ch);
	make_thread(a, b, ch);

	/* Live: replies carry thread, top-level messages do not */
	for (uint64_t seq = 1; seq <= 14; seq++) {
		next_ev(a, ch, seq, &d);
		assert_string_equal(h_s(&d.root, "k"), "msg");
		if (seq >= 11 && seq <= 13) {
			assert_int_equal(h_u(&d.root, "thread"), 5);
			assert_string_equal(h_s(&d.root, "from"), "bob");
		} else {
			assert_null(proto_get(&d.root, "thread"));
		}
		proto_doc_free(&d);
	}

	/* The main view leaves the replies out; the root counts them */
	check_main(b, ch, top, 11, 5, 3, 13);
	/* The thread: its replies, ascending */
	h_req_ok(a, &res, "history", 2, "ch", 's', ch, "thread", 'u',
	         (uint64_t)5);
	check_replies(&res, rep, 3, 5, false);
	{
		const msgpack_object_array *m = arr_at(&res.root, "msgs");

		assert_string_equal(h_s(&m->ptr[0], "body"), "reply one");
		assert_string_equal(h_s(&m->ptr[2], "body"), "reply three");
		assert_string_equal(h_s(&m->ptr[1], "from"), "bob");
		assert_string_equal(h_s(&m->ptr[1], "cmid"), "b-r2");
	}
	proto_doc_free(&res);
	/* ... paged like the main view */
	h_req_ok(a, &res, "history", 3, "ch", 's', ch, "thread", 'u',
	         (uint64_t)5, "limit", 'u', (uint64_t)2);
	check_replies(&res, rep + 1, 2, 5, true);
	proto_doc_free(&res);
	h_req_ok(a, &res, "history", 3, "ch", 's', ch, "thread", 'u',
	         (uint64_t)5, "before", 'u', (uint64_t)12);
	check_replies(&res, rep, 1, 5, false);
	proto_doc_free(&res);
	h_req_ok(a, &res, "history", 4, "ch", 's', ch, "thread", 'u',
	         (uint64_t)5, "after", 'u', (uint64_t)11, "limit", 'u',
	         (uint64_t)1);
	check_replies(&res, rep + 1, 1, 5, true);
	proto_doc_free(&res);
	/* The main view pages over the replies' seqs */
	h_req_ok(a, &res, "history", 3, "ch", 's', ch, "before", 'u',
	         (uint64_t)14, "limit", 'u', (uint64_t)3);
	check_seqs(&res, top + 7, 3, true);
	proto_doc_free(&res);
	h_req_ok(a, &res, "history", 3, "ch", 's', ch, "after", 'u',
	         (uint64_t)9, "limit", 'u', (uint64_t)2);
	check_seqs(&res, top + 9, 2, false);
	proto_doc_free(&res);
	h_req_ok(a, &res, "history", 3, "ch", 's', ch, "after", 'u',
	         (uint64_t)10, "limit", 'u', (uint64_t)5);
	check_seqs(&res, top + 10, 1, false);
	proto_doc_free(&res);
	/* A message without replies has an empty thread */
	h_req_ok(a, &res, "history", 2, "ch", 's', ch, "thread", 'u',
	         (uint64_t)4);
	check_seqs(&res, NULL, 0, false);
	proto_doc_free(&res);

	/* Replies to nothing, to the future, or to a reply */
	send_fail("NOT_FOUND", b, ch, "bad-1", 999);
	send_fail("NOT_FOUND", b, ch, "bad-2", 15);
	send_fail("NOT_FOUND", b, ch, "bad-3", 11);
	send_fail("NOT_FOUND", a, ch, "bad-4", 13);
	/* ... took no seq, and made no event */
	send_ok(a, ch, "top 15", "a-15", 0, NULL, 15);
	h_req_ok(a, &res, "events", 2, "ch", 's', ch, "after", 'u',
	         (uint64_t)14);
	assert_int_equal(arr_at(&res.root, "evs")->size, 1);
	proto_doc_free(&res);

	/* A fourth reply, by alice: the root follows */
	send_ok(a, ch, "reply four", "a-r4", 5, NULL, 16);
	check_main(b, ch, top2, 12, 5, 4, 16);
	h_req_ok(b, &res, "history", 2, "ch", 's', ch, "thread", 'u',
	         (uint64_t)5);
	check_replies(&res, rep4, 4, 5, false);
	proto_doc_free(&res);

	/* Thread state survives a restart */
	pc_close(a);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_restart(&s);
	a = h_connect_ok(&s, "alice", "acme");
	check_main(a, ch, top2, 12, 5, 4, 16);
	h_req_ok(a, &res, "history", 2, "ch", 's', ch, "thread", 'u',
	         (uint64_t)5);
	check_replies(&res, rep4, 4, 5, false);
	proto_doc_free(&res);
	send_fail("NOT_FOUND", a, ch, "bad-5", 12);
	send_ok(a, ch, "reply five", "a-r5", 5, NULL, 17);
	{
		static const uint64_t rep5[] = { 11, 12, 13, 16, 17 };

		check_main(a, ch, top2, 12, 5, 5, 17);
		h_req_ok(a, &res, "history", 2, "ch", 's', ch, "thread", 'u',
		         (uint64_t)5);
		check_replies(&res, rep5, 5, 5, false);
		proto_doc_free(&res);
	}

	pc_close(a);
	h_finish(&s);
}

/* Replies sent back to back, before any is acknowledged, all count. */
static void test_thread_replies_pipelined(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char ch[65];
	proto_doc res;
	const msgpack_object_array *m;
	uint64_t l1, l2;
	enum { R = 40 };

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a, "general", "public", ch);
	h_join_ok(b, ch);
	send_ok(a, ch, "root", "root", 0, NULL, 1);
	send_ok(a, ch, "other root", "root2", 0, NULL, 2);
	for (int i = 0; i < R; i++) {
		pc_conn *c = i % 2 ? b : a;
		proto_out o;
		char body[32], cmid[32];

		snprintf(body, sizeof(body), "reply %d", i);
		snprintf(cmid, sizeof(cmid), "r%d", i);
		proto_out_init(&o, 0, 128);
		proto_enc_send(&o, 5000 + (uint64_t)i, ch, body, strlen(body),
			       cmid, i % 4 == 3 ? 2 : 1, NULL, 0);
		assert_int_equal(pc_send(c, &o), 0);
		proto_out_free(&o);
	}
	/* Every reply is accepted (R/2 acks on each connection) */
	for (int i = 0; i < R; i++) {
		proto_doc d;

		assert_int_equal(h_expect(i < R / 2 ? a : b, "res", &d,
					  H_TIMEOUT), 1);
		if (!h_ok(&d))
			fail_msg("reply refused: %s", h_code(&d));
		proto_doc_free(&d);
	}

	/* Root 1 got 30 replies, root 2 got 10; they hold seqs 3..42 */
	h_req_ok(b, &res, "history", 1, "ch", 's', ch);
	m = arr_at(&res.root, "msgs");
	assert_int_equal(m->size, 2);
	assert_int_equal(h_u(&m->ptr[0], "seq"), 1);
	assert_int_equal(h_u(&m->ptr[0], "replies"), R * 3 / 4);
	assert_int_equal(h_u(&m->ptr[1], "seq"), 2);
	assert_int_equal(h_u(&m->ptr[1], "replies"), R / 4);
	l1 = h_u(&m->ptr[0], "last_reply");
	l2 = h_u(&m->ptr[1], "last_reply");
	proto_doc_free(&res);
	assert_true(l1 >= 3 && l1 <= 2 + R);
	assert_true(l2 >= 3 && l2 <= 2 + R);
	assert_int_equal(l1 > l2 ? l1 : l2, 2 + R);

	/* Each thread: its replies, ascending, the newest its last_reply */
	h_req_ok(a, &res, "history", 3, "ch", 's', ch, "thread", 'u',
	         (uint64_t)1, "limit", 'u', (uint64_t)200);
	m = arr_at(&res.root, "msgs");
	assert_int_equal(m->size, R * 3 / 4);
	assert_int_equal(h_u(&m->ptr[m->size - 1], "seq"), l1);
	for (uint32_t i = 1; i < m->size; i++)
		assert_true(h_u(&m->ptr[i - 1], "seq") <
			    h_u(&m->ptr[i], "seq"));
	proto_doc_free(&res);
	h_req_ok(a, &res, "history", 3, "ch", 's', ch, "thread", 'u',
	         (uint64_t)2, "limit", 'u', (uint64_t)200);
	m = arr_at(&res.root, "msgs");
	assert_int_equal(m->size, R / 4);
	assert_int_equal(h_u(&m->ptr[m->size - 1], "seq"), l2);
	proto_doc_free(&res);

	pc_close(a);
	pc_close(b);
	h_finish(&s);
}

/* ---- events -------------------------------------------------------------- */

static void test_events(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char ch[65];
	proto_doc res, live[14];
	const msgpack_object_array *evs;

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a, "general", "public", ch);
	h_join_ok(b, ch);
	make_thread(a, b, ch);
	for (uint64_t seq = 1; seq <= 14; seq++)
		next_ev(b, ch, seq, &live[seq - 1]);

	/* The whole log, replies included, as it was sent live */
	h_req_ok(a, &res, "events", 3, "ch", 's', ch, "after", 'u', (uint64_t)0,
	         "limit", 'u', (uint64_t)1000);
	evs = arr_at(&res.root, "evs");
	assert_int_equal(evs->size, 14);
	assert_false(bool_at(&res.root, "more"));
	for (uint32_t i = 0; i < 14; i++) {
		const msgpack_object *e = &evs->ptr[i];
		const msgpack_object *l = &live[i].root;
		char v[65];

		assert_int_equal(h_u(e, "seq"), i + 1);
		assert_string_equal(h_s(e, "ch"), ch);
		assert_string_equal(h_s(e, "k"), "msg");
		assert_int_equal(h_u(e, "ts"), h_u(l, "ts"));
		assert_true(h_u(e, "ts") > 1600000000000ull);
		str_at(l, "from", v);
		assert_string_equal(h_s(e, "from"), v);
		str_at(l, "body", v);
		assert_string_equal(h_s(e, "body"), v);
		str_at(l, "cmid", v);
		assert_string_equal(h_s(e, "cmid"), v);
		if (i + 1 >= 11 && i + 1 <= 13) {
			assert_int_equal(h_u(e, "thread"), 5);
			assert_string_equal(h_s(e, "from"), "bob");
		} else {
			assert_null(proto_get(e, "thread"));
			assert_string_equal(h_s(e, "from"), "alice");
		}
	}
	proto_doc_free(&res);
	for (int i = 0; i < 14; i++)
		proto_doc_free(&live[i]);

	/* Paging */
	h_req_ok(a, &res, "events", 3, "ch", 's', ch, "after", 'u', (uint64_t)0,
	         "limit", 'u', (uint64_t)5);
	evs = arr_at(&res.root, "evs");
	assert_int_equal(evs->size, 5);
	for (uint32_t i = 0; i < 5; i++)
		assert_int_equal(h_u(&evs->ptr[i], "seq"), i + 1);
	assert_true(bool_at(&res.root, "more"));
	proto_doc_free(&res);
	h_req_ok(b, &res, "events", 3, "ch", 's', ch, "after", 'u',
		 (uint64_t)10, "limit", 'u', (uint64_t)3);
	evs = arr_at(&res.root, "evs");
	assert_int_equal(evs->size, 3);
	for (uint32_t i = 0; i < 3; i++) {
		assert_int_equal(h_u(&evs->ptr[i], "seq"), 11 + i);
		assert_int_equal(h_u(&evs->ptr[i], "thread"), 5);
	}
	assert_true(bool_at(&res.root, "more"));
	proto_doc_free(&res);
	h_req_ok(b, &res, "events", 3, "ch", 's', ch, "after", 'u',
		 (uint64_t)13, "limit", 'u', (uint64_t)3);
	evs = arr_at(&res.root, "evs");
	assert_int_equal(evs->size, 1);
	assert_int_equal(h_u(&evs->ptr[0], "seq"), 14);
	assert_false(bool_at(&res.root, "more"));
	proto_doc_free(&res);
	h_req_ok(b, &res, "events", 3, "ch", 's', ch, "after", 'u',
		 (uint64_t)10, "limit", 'u', (uint64_t)4);
	assert_int_equal(arr_at(&res.root, "evs")->size, 4);
	assert_false(bool_at(&res.root, "more"));
	proto_doc_free(&res);
	h_req_ok(b, &res, "events", 3, "ch", 's', ch, "after", 'u',
		 (uint64_t)14, "limit", 'u', (uint64_t)10);
	assert_int_equal(arr_at(&res.root, "evs")->size, 0);
	assert_false(bool_at(&res.root, "more"));
	proto_doc_free(&res);

	/* limit is 1-1000; after is required */
	h_req_fail("BAD_REQUEST", a, "events", 3, "ch", 's', ch, "after", 'u',
		   (uint64_t)0, "limit", 'u', (uint64_t)1001);
	h_req_fail("BAD_REQUEST", a, "events", 3, "ch", 's', ch, "after", 'u',
		   (uint64_t)0, "limit", 'u', (uint64_t)0);
	h_req_fail("BAD_REQUEST", a, "events", 2, "ch", 's', ch, "limit", 'u',
		   (uint64_t)10);
	h_req_fail("BAD_REQUEST", a, "events", 3, "ch", 's', ch, "after", 's',
		   "3", "limit", 'u', (uint64_t)10);

	pc_close(a);
	pc_close(b);
	h_finish(&s);
}

/* ---- unread, mentions, read markers -------------------------------------- */

static void expect_read(pc_conn *c, const char *ch, uint64_t seq)
{
	proto_doc d;

	assert_int_equal(h_expect(c, "read", &d, H_TIMEOUT), 1);
	assert_string_equal(h_s(&d.root, "ch"), ch);
	assert_int_equal(h_u(&d.root, "seq"), seq);
	proto_doc_free(&d);
}

static void read_to(pc_conn *c, const char *ch, uint64_t seq)
{
	proto_doc res;

	h_req_ok(c, &res, "read", 2, "ch", 's', ch, "seq", 'u', seq);
	proto_doc_free(&res);
}

static void test_unread_and_mentions(void **st)
{
	hsrv s;
	pc_conn *a, *b1, *b2;
	char ch[65];
	const char *m_bob[] = { "bob", NULL };
	const char *m_bob_carol[] = { "carol", "bob", NULL };
	const char *m_carol[] = { "carol", NULL };
	proto_doc res, d;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "alice", "acme");
	b1 = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a, "general", "public", ch);
	h_join_ok(b1, ch);
	send_ok(b1, ch, "hi all", "b-1", 0, NULL, 1);
	/* alice: 5 messages, bob mentioned in two of them */
	send_ok(a, ch, "plain", "a-2", 0, NULL, 2);
	send_ok(a, ch, "hey @bob", "a-3", 0, m_bob, 3);
	send_ok(a, ch, "hey @carol", "a-4", 0, m_carol, 4);
	send_ok(a, ch, "@carol @bob both", "a-5", 0, m_bob_carol, 5);
	send_ok(a, ch, "in a thread", "a-6", 2, NULL, 6);

	/* The mention is on the live event and in history */
	for (uint64_t seq = 1; seq <= 3; seq++) {
		next_ev(b1, ch, seq, &d);
		if (seq == 3) {
			const msgpack_object_array *m =
				arr_at(&d.root, "mentions");

			assert_int_equal(m->size, 1);
			assert_memory_equal(m->ptr[0].via.str.ptr, "bob", 3);
		}
		proto_doc_free(&d);
	}
	h_req_ok(b1, &res, "history", 3, "ch", 's', ch, "after", 'u',
	         (uint64_t)2, "limit", 'u', (uint64_t)1);
	{
		const msgpack_object_array *m = arr_at(&res.root, "msgs");

		assert_int_equal(m->size, 1);
		assert_int_equal(h_u(&m->ptr[0], "seq"), 3);
		assert_int_equal(arr_at(&m->ptr[0], "mentions")->size, 1);
	}
	proto_doc_free(&res);

	/* bob reconnects: hello counts what alice wrote since his marker */
	pc_close(b1);
	b1 = h_connect(&s, "bob", "acme", &res);
	assert_non_null(b1);
	check_counts(find_ch(&res, ch), 6, 1, 5, 2);
	proto_doc_free(&res);
	b2 = h_connect_ok(&s, "bob", "acme");
	list_counts(b2, ch, 6, 1, 5, 2);
	/* alice has read all of it: sending moved her marker */
	list_counts(a, ch, 6, 6, 0, 0);

	/* bob reads up to 3: one mention and two messages gone */
	read_to(b1, ch, 3);
	expect_read(b2, ch, 3);
	list_counts(b1, ch, 6, 3, 3, 1);
	list_counts(b2, ch, 6, 3, 3, 1);

	/* Never backwards, and nobody is told */
	read_to(b1, ch, 2);
	list_counts(b1, ch, 6, 3, 3, 1);
	read_to(b2, ch, 3);
	list_counts(b2, ch, 6, 3, 3, 1);
	h_expect_none(b2, "read", ch);
	h_expect_none(b1, "read", ch);

	/* From the other device, fire-and-forget */
	{
		proto_out o;

		proto_out_init(&o, 0, 128);
		proto_enc_req(&o, "read", 0, 2);
		proto_pk_cstr(&o.pk, "ch");
		proto_pk_cstr(&o.pk, ch);
		proto_pk_cstr(&o.pk, "seq");
		msgpack_pack_uint64(&o.pk, 5);
		assert_int_equal(pc_send(b2, &o), 0);
		proto_out_free(&o);
	}
	expect_read(b1, ch, 5);
	list_counts(b1, ch, 6, 5, 1, 0);

	/* Past the end: the last seq */
	read_to(b1, ch, 1000);
	expect_read(b2, ch, 6);
	list_counts(b2, ch, 6, 6, 0, 0);

	/* bob writes: alice has one unread, bob none */
	send_ok(b2, ch, "thanks", "b-7", 0, NULL, 7);
	list_counts(a, ch, 7, 6, 1, 0);
	list_counts(b1, ch, 7, 7, 0, 0);
	/* alice answers, mentioning bob: her marker moves past bob's */
	send_ok(a, ch, "np @bob", "a-8", 0, m_bob, 8);
	list_counts(a, ch, 8, 8, 0, 0);
	list_counts(b1, ch, 8, 7, 1, 1);

	/* Markers survive a restart, and still never move back */
	pc_close(a);
	pc_close(b1);
	pc_close(b2);
	assert_int_equal(h_stop(&s), 0);
	h_restart(&s);
	b1 = h_connect(&s, "bob", "acme", &res);
	assert_non_null(b1);
	check_counts(find_ch(&res, ch), 8, 7, 1, 1);
	proto_doc_free(&res);
	read_to(b1, ch, 4);
	list_counts(b1, ch, 8, 7, 1, 1);
	a = h_connect(&s, "alice", "acme", &res);
	assert_non_null(a);
	check_counts(find_ch(&res, ch), 8, 8, 0, 0);
	proto_doc_free(&res);

	pc_close(a);
	pc_close(b1);
	h_finish(&s);
}

/* Sending moves the sender's own marker: its unread stays 0 whatever it
 * writes, in the main view and in threads, on every device. */
static void test_send_moves_own_marker(void **st)
{
	hsrv s;
	pc_conn *a1, *a2, *b;
	char ch[65];
	proto_doc res;

	(void)st;
	h_start(&s, "--shards 2");
	a1 = h_connect_ok(&s, "alice", "acme");
	a2 = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a1, "general", "public", ch);
	h_join_ok(b, ch);
	send_ok(a1, ch, "one", "a-1", 0, NULL, 1);
	send_ok(a2, ch, "two", "a-2", 0, NULL, 2);
	send_ok(a1, ch, "three", "a-3", 1, NULL, 3);
	list_counts(a1, ch, 3, 3, 0, 0);
	list_counts(a2, ch, 3, 3, 0, 0);
	list_counts(b, ch, 3, 0, 3, 0);

	/* bob writes twice, alice once more: all of bob's are behind her */
	send_ok(b, ch, "four", "b-4", 0, NULL, 4);
	send_ok(b, ch, "five", "b-5", 0, NULL, 5);
	list_counts(a2, ch, 5, 3, 2, 0);
	send_ok(a2, ch, "six", "a-6", 0, NULL, 6);
	list_counts(a1, ch, 6, 6, 0, 0);
	list_counts(b, ch, 6, 5, 1, 0);
	pc_close(a1);
	a1 = h_connect(&s, "alice", "acme", &res);
	assert_non_null(a1);
	check_counts(find_ch(&res, ch), 6, 6, 0, 0);
	proto_doc_free(&res);

	pc_close(a1);
	pc_close(a2);
	pc_close(b);
	h_finish(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_history_pages),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_thread_replies_pipelined),
		cmocka_unit_test(test_events),
		cmocka_unit_test(test_unread_and_mentions),
		cmocka_unit_test(test_send_moves_own_marker),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
