/*
 * Resume: a client that reconnects with hello's `resume` (channel -> last
 * seq seen) gets, after the hello response, every event it missed exactly
 * once and in order, then the live stream, and nothing twice; across a
 * SIGTERM restart and a kill -9 too. More than 500 missing: a gap notice
 * instead and no replay, `events` pages the hole (exactly 500: replayed,
 * 501: gap). Several channels at once: a channel the user is not in (never
 * joined, left, private, another workspace's, unknown) or resumed beyond
 * its end gets nothing. Resuming while the channel is busy, again and
 * again (some absences long enough for a gap): the seqs the client sees
 * are 1..N, contiguous. E2E_FILTER=name runs one test.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/e2e/harness.h"

#define FAST "--send-rate 1000000 --send-burst 1000000"

/* ---- helpers ------------------------------------------------------------ */

static void invite(pc_conn *c, const char *ch, const char *user)
{
	const char *users[] = { user, NULL };
	proto_doc res;

	assert_int_equal(h_req(c, &res, "ch.invite", 2, "ch", 's', ch, "users",
			       'S', users), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
}

/* Send n messages "<pfx><i>" (cmid the same) one by one, first seq want. */
static void send_n(pc_conn *c, const char *ch, const char *pfx, int from,
		   int n, uint64_t want)
{
	for (int i = from; i < from + n; i++) {
		char cmid[32];

		snprintf(cmid, sizeof(cmid), "%s%d", pfx, i);
		assert_int_equal(h_send(c, ch, cmid, cmid),
				 (int64_t)(want + (uint64_t)(i - from)));
	}
}

/* Next "ev" frame, whatever its channel; fails the test on anything odd. */
static void next_ev(pc_conn *c, proto_doc *d)
{
	assert_int_equal(h_expect(c, "ev", d, H_TIMEOUT), 1);
}

static void expect_ev(pc_conn *c, const char *ch, uint64_t seq,
		      const char *cmid)
{
	proto_doc d;

	next_ev(c, &d);
	if (strcmp(h_s(&d.root, "ch"), ch) || h_u(&d.root, "seq") != seq ||
	    (cmid && strcmp(h_s(&d.root, "cmid"), cmid))) {
		char buf[512];

		msgpack_object_print_buffer(buf, sizeof(buf), d.root);
		fail_msg("expected ev %s seq %llu (%s), got %s", ch,
			 (unsigned long long)seq, cmid ? cmid : "-", buf);
	}
	proto_doc_free(&d);
}

/* Frames of kind t (NULL: "ev") that arrive within ms; the others are
 * dropped. */
static int count_frames(pc_conn *c, const char *t, int ms)
{
	uint64_t end = now_ms() + (uint64_t)ms;
	int n = 0;

	for (;;) {
		uint64_t now = now_ms();
		proto_doc d;

		if (now >= end)
			return n;
		if (pc_recv(c, &d, (int)(end - now)) != 1)
			return n;
		if (!strcmp(h_s(&d.root, "t"), t ? t : "ev"))
			n++;
		proto_doc_free(&d);
	}
}

/* Connect as user@acme and hello with resume; the first frame after it
 * must be the hello response (ok). The catch-up follows on the returned
 * connection. hello_res (optional) gets the response. */
static pc_conn *resume_ws(hsrv *s, const char *user, const char *ws,
			  const char *const *chs, const uint64_t *seqs,
			  unsigned n, proto_doc *hello_res)
{
	static uint64_t rid = 900000;
	pc_conn *c = h_connect_raw(s);
	char *tok = h_token(s, user, ws);
	proto_out o;
	proto_doc d;
	uint64_t my = __atomic_add_fetch(&rid, 1, __ATOMIC_RELAXED);

	assert_non_null(c);
	proto_out_init(&o, 0, 256);
	proto_enc_hello(&o, my, tok, chs, seqs, n);
	free(tok);
	assert_int_equal(pc_send(c, &o), 0);
	proto_out_free(&o);
	assert_int_equal(pc_recv(c, &d, H_TIMEOUT), 1);
	if (strcmp(h_s(&d.root, "t"), "res") || h_u(&d.root, "rid") != my) {
		char buf[512];

		msgpack_object_print_buffer(buf, sizeof(buf), d.root);
		fail_msg("first frame after hello is not its response: %s",
			 buf);
	}
	if (!h_ok(&d))
		fail_msg("hello refused: %s", h_code(&d));
	if (hello_res)
		*hello_res = d;
	else
		proto_doc_free(&d);
	return c;
}

static pc_conn *resume(hsrv *s, const char *user, const char *ch,
		       uint64_t seq)
{
	const char *chs[] = { ch };

	return resume_ws(s, user, "acme", chs, &seq, 1, NULL);
}

/* last_seq of ch in a hello response's channel list */
static uint64_t hello_last_seq(const proto_doc *hello, const char *ch)
{
	const msgpack_object_array *a;

	assert_int_equal(proto_get_array(&hello->root, "channels", &a), 0);
	for (uint32_t i = 0; i < a->size; i++)
		if (!strcmp(h_s(&a->ptr[i], "id"), ch))
			return h_u(&a->ptr[i], "last_seq");
	fail_msg("channel %s not in the hello response", ch);
	return 0;
}

/* ---- missed a few: replayed, then live ---------------------------------- */

static void basic(bool restart)
{
	hsrv s;
	char ch[65];
	pc_conn *a, *b;
	const uint64_t k = 5;

	h_start(&s, "--shards 2");
	a = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "bob", "acme", NULL);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(h_create(a, "general", "public", ch), 0);
	h_join_ok(b, ch);
	send_n(a, ch, "a", 1, (int)k, 1);
	for (uint64_t i = 1; i <= k; i++)
		expect_ev(b, ch, i, NULL);
	pc_close(b);

	/* 10 more while bob is away (half of them after a restart) */
	send_n(a, ch, "a", (int)k + 1, 5, k + 1);
	if (restart) {
		pc_close(a);
		assert_int_equal(h_stop(&s), 0);
		h_restart(&s);
		a = h_connect(&s, "alice", "acme", NULL);
		assert_non_null(a);
	}
	send_n(a, ch, "a", (int)k + 6, 5, k + 6);

	b = resume(&s, "bob", ch, k);
	for (uint64_t i = k + 1; i <= k + 10; i++) {
		char cmid[16];

		snprintf(cmid, sizeof(cmid), "a%llu", (unsigned long long)i);
		expect_ev(b, ch, i, cmid);
	}
	/* Then live */
	assert_int_equal(h_send(a, ch, "live", "live1"), (int64_t)k + 11);
	expect_ev(b, ch, k + 11, "live1");
	/* and nothing twice */
	assert_int_equal(count_frames(b, "ev", 300), 0);

	/* Resuming again from the end: nothing, then live */
	pc_close(b);
	b = resume(&s, "bob", ch, k + 11);
	assert_int_equal(count_frames(b, "ev", 200), 0);
	assert_int_equal(h_send(a, ch, "live", "live2"), (int64_t)k + 12);
	expect_ev(b, ch, k + 12, "live2");
	assert_int_equal(count_frames(b, "ev", 300), 0);

	pc_close(a);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

static void test_resume_replays_missed(void **st)
{
	(void)st;
	basic(false);
}

static void test_resume_across_restart(void **st)
{
	(void)st;
	basic(true);
}

/* After kill -9: the catch-up comes from what was durable. */
static void test_resume_after_kill9(void **st)
{
	hsrv s;
	char ch[65];
	pc_conn *a, *b;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "bob", "acme", NULL);
	assert_int_equal(h_create(a, "general", "public", ch), 0);
	h_join_ok(b, ch);
	send_n(a, ch, "a", 1, 3, 1);
	for (uint64_t i = 1; i <= 3; i++)
		expect_ev(b, ch, i, NULL);
	pc_close(b);
	send_n(a, ch, "a", 4, 7, 4);
	pc_close(a);
	h_kill9(&s);
	h_restart(&s);
	b = resume(&s, "bob", ch, 3);
	for (uint64_t i = 4; i <= 10; i++)
		expect_ev(b, ch, i, NULL);
	a = h_connect(&s, "alice", "acme", NULL);
	assert_int_equal(h_send(a, ch, "live", "live"), 11);
	expect_ev(b, ch, 11, "live");
	assert_int_equal(count_frames(b, "ev", 300), 0);
	pc_close(a);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* ---- missed more than 500: a gap notice, then paging -------------------- */

static void pipeline_sends(pc_conn *c, const char *ch, const char *pfx,
			   int n, uint64_t first_seq)
{
	for (int i = 0; i < n; i++) {
		proto_out o;
		char cmid[32];

		snprintf(cmid, sizeof(cmid), "%s%d", pfx, i);
		proto_out_init(&o, 0, 128);
		proto_enc_send(&o, 10000 + (uint64_t)i, ch, cmid, strlen(cmid),
			       cmid, 0, NULL, 0);
		assert_int_equal(pc_send(c, &o), 0);
		proto_out_free(&o);
	}
	for (int acks = 0; acks < n;) {
		proto_doc d;

		assert_int_equal(h_next(c, &d, H_TIMEOUT), 1);
		if (!strcmp(h_s(&d.root, "t"), "res")) {
			uint64_t rid = h_u(&d.root, "rid");

			assert_true(h_ok(&d));
			assert_true(rid >= 10000 && rid < 10000 + (uint64_t)n);
			assert_int_equal(h_u(&d.root, "seq"),
					 first_seq + (rid - 10000));
			acks++;
		}
		proto_doc_free(&d);
	}
}

static void expect_gap(pc_conn *c, const char *ch, uint64_t after,
		       uint64_t last)
{
	proto_doc d;

	/* The gap notice is the next thing for this channel: no event. */
	for (;;) {
		assert_int_equal(h_next(c, &d, H_TIMEOUT), 1);
		if (!strcmp(h_s(&d.root, "t"), "gap"))
			break;
		if (!strcmp(h_s(&d.root, "t"), "ev"))
			fail_msg("an event (seq %llu) where a gap notice was due",
				 (unsigned long long)h_u(&d.root, "seq"));
		proto_doc_free(&d);
	}
	assert_string_equal(h_s(&d.root, "ch"), ch);
	assert_int_equal(h_u(&d.root, "after"), after);
	assert_int_equal(h_u(&d.root, "last_seq"), last);
	proto_doc_free(&d);
}

static void test_resume_gap(void **st)
{
	enum { K = 3, MISSED = 600 };
	hsrv s;
	char ch[65];
	pc_conn *a, *b, *b2;
	proto_doc res;
	const msgpack_object_array *evs;
	bool more = true;
	const uint64_t last = K + MISSED;

	(void)st;
	h_start(&s, "--shards 2 " FAST);
	a = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "bob", "acme", NULL);
	assert_int_equal(h_create(a, "busy", "public", ch), 0);
	h_join_ok(b, ch);
	send_n(a, ch, "x", 1, K, 1);
	for (uint64_t i = 1; i <= K; i++)
		expect_ev(b, ch, i, NULL);
	pc_close(b);
	pipeline_sends(a, ch, "g", MISSED, K + 1);

	b = resume(&s, "bob", ch, K);
	expect_gap(b, ch, K, last);
	/* No replay at all */
	assert_int_equal(count_frames(b, "ev", 300), 0);

	/* The hole, in one page (these events are small: one page < 64 KiB) */
	assert_int_equal(h_req(b, &res, "events", 3, "ch", 's', ch, "after",
			       'u', (uint64_t)K, "limit", 'u', (uint64_t)1000),
			 1);
	assert_true(h_ok(&res));
	assert_int_equal(proto_get_array(&res.root, "evs", &evs), 0);
	assert_int_equal(proto_get_bool(&res.root, "more", &more), 0);
	assert_false(more);
	assert_int_equal(evs->size, MISSED);
	for (uint32_t i = 0; i < evs->size; i++) {
		char cmid[16];

		snprintf(cmid, sizeof(cmid), "g%u", i);
		assert_int_equal(h_u(&evs->ptr[i], "seq"), K + 1 + i);
		assert_string_equal(h_s(&evs->ptr[i], "ch"), ch);
		assert_string_equal(h_s(&evs->ptr[i], "k"), "msg");
		assert_string_equal(h_s(&evs->ptr[i], "cmid"), cmid);
		assert_string_equal(h_s(&evs->ptr[i], "from"), "alice");
	}
	proto_doc_free(&res);

	/* Live events keep flowing */
	assert_int_equal(h_send(a, ch, "after the gap", "live1"),
			 (int64_t)last + 1);
	expect_ev(b, ch, last + 1, "live1");
	assert_int_equal(h_send(a, ch, "and more", "live2"), (int64_t)last + 2);
	expect_ev(b, ch, last + 2, "live2");
	assert_int_equal(count_frames(b, "ev", 300), 0);

	/* The boundary: exactly 500 missing are replayed ... */
	b2 = resume(&s, "bob", ch, last + 2 - 500);
	for (uint64_t i = last + 2 - 500 + 1; i <= last + 2; i++)
		expect_ev(b2, ch, i, NULL);
	assert_int_equal(count_frames(b2, "ev", 300), 0);
	assert_int_equal(count_frames(b2, "gap", 1), 0);
	pc_close(b2);
	/* ... 501 are a gap */
	b2 = resume(&s, "bob", ch, last + 2 - 501);
	expect_gap(b2, ch, last + 2 - 501, last + 2);
	assert_int_equal(count_frames(b2, "ev", 300), 0);
	pc_close(b2);
	/* and resuming from 0 (a fresh device that knows the channel) too */
	b2 = resume(&s, "bob", ch, 0);
	expect_gap(b2, ch, 0, last + 2);
	assert_int_equal(count_frames(b2, "ev", 300), 0);
	pc_close(b2);

	pc_close(a);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* ---- several channels at once ------------------------------------------- */

static void test_resume_many_channels(void **st)
{
	hsrv s;
	char ca[65], cb[65], cp[65], cq[65], cd[65], cx[65], cl[65];
	pc_conn *a, *b, *c, *x;
	proto_doc res;
	const msgpack_object_map *m;
	int got_a = 0, got_b = 0;
	uint64_t next_a = 3, next_b = 1;

	(void)st;
	h_start(&s, "--shards 3");
	a = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "bob", "acme", NULL);
	c = h_connect(&s, "carol", "acme", NULL);
	x = h_connect(&s, "xavier", "other", NULL);
	assert_non_null(x);
	assert_int_equal(h_create(a, "a-public", "public", ca), 0);
	assert_int_equal(h_create(a, "b-private", "private", cb), 0);
	assert_int_equal(h_create(a, "p-public", "public", cp), 0);
	assert_int_equal(h_create(c, "q-private", "private", cq), 0);
	assert_int_equal(h_create(x, "elsewhere", "public", cx), 0);
	assert_int_equal(h_create(a, "l-left", "public", cl), 0);
	h_join_ok(b, ca);
	h_join_ok(b, cl);
	invite(a, cb, "bob");
	{
		const char *users[] = { "bob", NULL };
		msgpack_object mo;

		assert_int_equal(h_req(a, &res, "dm.open", 1, "users", 'S',
				       users), 1);
		assert_true(h_ok(&res));
		assert_int_equal(proto_get_map(&res.root, "ch", &m), 0);
		mo.type = MSGPACK_OBJECT_MAP;
		mo.via.map = *m;
		snprintf(cd, sizeof(cd), "%s", h_s(&mo, "id"));
		proto_doc_free(&res);
	}
	send_n(a, ca, "A", 1, 2, 1);
	send_n(a, cd, "D", 1, 2, 1);
	send_n(a, cl, "L", 1, 2, 1);
	{
		proto_doc r;

		assert_int_equal(h_req(b, &r, "ch.leave", 1, "ch", 's', cl), 1);
		assert_true(h_ok(&r));
		proto_doc_free(&r);
	}
	pc_close(b);
	send_n(a, ca, "A", 3, 3, 3);   /* A: 3..5 missed */
	send_n(a, cb, "B", 1, 4, 1);   /* B: 1..4 missed */
	send_n(a, cp, "P", 1, 3, 1);   /* public, bob not a member */
	send_n(c, cq, "Q", 1, 2, 1);   /* private, bob not a member */
	send_n(x, cx, "X", 1, 2, 1);   /* another workspace */
	send_n(a, cl, "L", 3, 2, 3);   /* bob left it */

	{
		const char *chs[] = { ca, cb, cp, cq, cd, cx,
				      "C0000000000000000", cl };
		const uint64_t seqs[] = { 2, 0, 0, 0, 52, 0, 0, 2 };
		proto_doc hello;

		b = resume_ws(&s, "bob", "acme", chs, seqs, 8, &hello);
		assert_int_equal(hello_last_seq(&hello, ca), 5);
		assert_int_equal(hello_last_seq(&hello, cb), 4);
		assert_int_equal(hello_last_seq(&hello, cd), 2);
		proto_doc_free(&hello);
	}
	/* Everything that comes within a while: A 3..5 and B 1..4, each in
	 * order, nothing else (interleaving between channels is free). */
	for (;;) {
		proto_doc d;
		const char *ch;

		if (h_expect(b, "ev", &d, got_a + got_b < 7 ? H_TIMEOUT : 400)
		    != 1)
			break;
		ch = h_s(&d.root, "ch");
		if (!strcmp(ch, ca)) {
			assert_int_equal(h_u(&d.root, "seq"), next_a);
			next_a++;
			got_a++;
		} else if (!strcmp(ch, cb)) {
			assert_int_equal(h_u(&d.root, "seq"), next_b);
			next_b++;
			got_b++;
		} else {
			fail_msg("resume sent an event of %s (seq %llu)", ch,
				 (unsigned long long)h_u(&d.root, "seq"));
		}
		proto_doc_free(&d);
	}
	assert_int_equal(got_a, 3);
	assert_int_equal(got_b, 4);

	/* Live in A and B; still nothing from P, Q, X */
	assert_int_equal(h_send(a, ca, "live", "A-live"), 6);
	expect_ev(b, ca, 6, "A-live");
	assert_int_equal(h_send(a, cb, "live", "B-live"), 5);
	expect_ev(b, cb, 5, "B-live");
	assert_int_equal(h_send(a, cp, "live", "P-live"), 4);
	assert_int_equal(h_send(c, cq, "live", "Q-live"), 3);
	assert_int_equal(h_send(x, cx, "live", "X-live"), 3);
	assert_int_equal(h_send(a, cl, "live", "L-live"), 5);
	assert_int_equal(count_frames(b, "ev", 300), 0);

	pc_close(a);
	pc_close(b);
	pc_close(c);
	pc_close(x);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* ---- resuming into a live stream ---------------------------------------- */

#define LIVE_N 3000

struct pump {
	hsrv *s;
	const char *ch;
	volatile int sent; /* seq of the newest acked send */
	volatile int err;
};

/* alice sends LIVE_N messages, one at a time, as fast as acks come */
static void *pump_main(void *arg)
{
	struct pump *p = arg;
	pc_conn *a = h_connect(p->s, "alice", "acme", NULL);

	if (!a) {
		p->err = -1;
		return NULL;
	}
	for (int i = 1; i <= LIVE_N; i++) {
		char cmid[16];
		int64_t seq;

		snprintf(cmid, sizeof(cmid), "L%d", i);
		seq = h_send(a, p->ch, cmid, cmid);
		if (seq != i) {
			p->err = i;
			break;
		}
		__atomic_store_n(&p->sent, i, __ATOMIC_RELEASE);
		if (i % 4 == 0)
			usleep(200);
	}
	pc_close(a);
	return NULL;
}

/* Take bob's next event for the channel into *last, which it must follow;
 * on a gap notice, page the hole with events. 1 = progressed, 0 = nothing
 * within ms. */
static int follow(pc_conn *b, const char *ch, uint64_t *last, int ms,
		  unsigned *gaps)
{
	proto_doc d;
	const char *t;

	if (h_next(b, &d, ms) != 1)
		return 0;
	t = h_s(&d.root, "t");
	if (!strcmp(t, "ev")) {
		uint64_t seq = h_u(&d.root, "seq");

		assert_string_equal(h_s(&d.root, "ch"), ch);
		if (seq != *last + 1)
			fail_msg("after seq %llu came seq %llu",
				 (unsigned long long)*last,
				 (unsigned long long)seq);
		*last = seq;
	} else if (!strcmp(t, "gap")) {
		uint64_t after = h_u(&d.root, "after");
		uint64_t to = h_u(&d.root, "last_seq");

		assert_int_equal(after, *last);
		(*gaps)++;
		while (*last < to) {
			proto_doc res;
			const msgpack_object_array *evs;

			assert_int_equal(h_req(b, &res, "events", 3, "ch", 's',
					       ch, "after", 'u', *last, "limit",
					       'u', (uint64_t)500), 1);
			assert_true(h_ok(&res));
			assert_int_equal(proto_get_array(&res.root, "evs",
							 &evs), 0);
			assert_true(evs->size > 0);
			for (uint32_t i = 0; i < evs->size && *last < to; i++) {
				assert_int_equal(h_u(&evs->ptr[i], "seq"),
						 *last + 1);
				(*last)++;
			}
			proto_doc_free(&res);
		}
	}
	proto_doc_free(&d);
	return 1;
}

static void test_resume_during_live_stream(void **st)
{
	hsrv s;
	char ch[65];
	pc_conn *a, *b, *watch;
	pthread_t th;
	struct pump p = { 0 };
	uint64_t last = 0, wlast = 0;
	unsigned resumes = 0, gaps = 0, wgaps = 0;
	uint64_t t0;

	(void)st;
	srand(12345);
	h_start(&s, "--shards 4 " FAST);
	a = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "bob", "acme", NULL);
	watch = h_connect(&s, "bob", "acme", NULL); /* never leaves */
	assert_non_null(watch);
	assert_int_equal(h_create(a, "stream", "public", ch), 0);
	h_join_ok(b, ch);
	pc_close(a);
	/* let the join reach the watcher too */
	{
		proto_doc d;

		assert_int_equal(h_expect(watch, "member", &d, H_TIMEOUT), 1);
		proto_doc_free(&d);
	}

	p.s = &s;
	p.ch = ch;
	t0 = now_ms();
	assert_int_equal(pthread_create(&th, NULL, pump_main, &p), 0);

	/* bob reads a little, drops, comes back with resume, again and
	 * again, while alice keeps sending */
	while (last < LIVE_N && !p.err) {
		int take = 10 + rand() % 150;

		for (int i = 0; i < take && last < LIVE_N; i++)
			if (!follow(b, ch, &last, H_TIMEOUT, &gaps))
				fail_msg("bob stalled at seq %llu (alice at %d)",
					 (unsigned long long)last, p.sent);
		while (follow(watch, ch, &wlast, 0, &wgaps))
			;
		if (last >= LIVE_N)
			break;
		pc_close(b);
		if (resumes % 8 == 3 && p.sent + 700 < LIVE_N) {
			/* stay away for more than 500 events: a gap, while
			 * the channel keeps going. alice waits for each ack,
			 * so on a slow disk 560 sends take a while: the
			 * deadline only stops a pump that died. */
			uint64_t dl = now_ms() + 120000;

			while ((uint64_t)p.sent < last + 560 && !p.err) {
				if (now_ms() > dl)
					fail_msg("alice stuck at %d", p.sent);
				usleep(2000);
			}
		} else {
			usleep((useconds_t)(rand() % 20000));
		}
		b = resume(&s, "bob", ch, last);
		resumes++;
	}
	pthread_join(th, NULL);
	assert_int_equal(p.err, 0);
	assert_int_equal(last, LIVE_N);
	/* nothing after the end, nothing twice */
	assert_int_equal(count_frames(b, "ev", 300), 0);
	while (wlast < LIVE_N)
		if (!follow(watch, ch, &wlast, H_TIMEOUT, &wgaps))
			fail_msg("the watcher stalled at %llu",
				 (unsigned long long)wlast);
	assert_int_equal(wgaps, 0);
	assert_int_equal(count_frames(watch, "ev", 100), 0);
	print_message("%d events in %llu ms; bob resumed %u times (%u gaps),"
		      " saw 1..%llu contiguous\n", LIVE_N,
		      (unsigned long long)(now_ms() - t0), resumes, gaps,
		      (unsigned long long)last);
	assert_true(resumes >= 5);
	assert_true(gaps >= 1);

	pc_close(b);
	pc_close(watch);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_resume_replays_missed),
		cmocka_unit_test(test_resume_across_restart),
		cmocka_unit_test(test_resume_after_kill9),
		cmocka_unit_test(test_resume_gap),
		cmocka_unit_test(test_resume_many_channels),
		cmocka_unit_test(test_resume_during_live_stream),
	};

	/* E2E_FILTER=test_name (or a pattern with *) runs only that */
	if (getenv("E2E_FILTER"))
		cmocka_set_test_filter(getenv("E2E_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
