/*
 * Durability: what a user keeps when the server stops, restarts or is
 * killed.
 *   - idempotent sends: same cmid, same seq and ts, dup:true, no new event;
 *     across reconnects, SIGTERM and kill -9; also when the copies race
 *     (pipelined, two devices); per user and per channel;
 *   - a restart (SIGTERM or kill -9) keeps channels, membership, history,
 *     threads, read markers and counters; every acknowledged change
 *     survives a kill -9 right after its ack;
 *   - kill -9 under a pipelined load of 8 senders: every acked message is
 *     in the log at its seq, so is every event a member saw live, seqs are
 *     1..M with no gap or duplicate, re-sending what was not acked gives
 *     dup (committed) or the next seq (not), never a second copy;
 *   - SIGTERM: goaway (retry_ms > 0) to every connection, then close, exit
 *     status 0, in-flight acks durable;
 *   - /healthz and /metrics (Prometheus text) over plain HTTP; 404.
 * E2E_FILTER=name runs one test.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/e2e/harness.h"

#define FAST "--send-rate 1000000 --send-burst 1000000"

/* ---- helpers ------------------------------------------------------------ */

struct sent {
	bool ok;
	uint64_t seq, ts;
	bool dup;
	char code[32];
};

/* send with every field of the answer: 1 answered, 0/-1 as h_req */
static int send_x(pc_conn *c, const char *ch, const char *body,
		  const char *cmid, uint64_t thread, const char *const *ment,
		  unsigned nment, struct sent *out)
{
	static uint64_t rid = 500000;
	proto_out o;
	proto_doc res;
	int rc;

	memset(out, 0, sizeof(*out));
	proto_out_init(&o, 0, 256);
	proto_enc_send(&o, ++rid, ch, body, strlen(body), cmid, thread, ment,
		       nment);
	rc = pc_request(c, &o, rid, &res, H_TIMEOUT);
	proto_out_free(&o);
	if (rc != 1)
		return rc;
	out->ok = h_ok(&res);
	out->seq = h_u(&res.root, "seq");
	out->ts = h_u(&res.root, "ts");
	if (proto_get_bool(&res.root, "dup", &out->dup))
		out->dup = false;
	snprintf(out->code, sizeof(out->code), "%s", h_code(&res));
	proto_doc_free(&res);
	return 1;
}

static struct sent send_ok(pc_conn *c, const char *ch, const char *body,
			   const char *cmid)
{
	struct sent r;

	assert_int_equal(send_x(c, ch, body, cmid, 0, NULL, 0, &r), 1);
	if (!r.ok)
		fail_msg("send %s: %s", cmid, r.code);
	return r;
}

/* Count "ev" frames arriving within ms (other frames are dropped). */
static int count_ev(pc_conn *c, int ms)
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
		if (!strcmp(h_s(&d.root, "t"), "ev"))
			n++;
		proto_doc_free(&d);
	}
}

/* The next event of channel ch (events of other channels are skipped)
 * must be seq, from, cmid (NULL: any). */
static void expect_ev(pc_conn *c, const char *ch, uint64_t seq,
		      const char *from, const char *cmid)
{
	proto_doc d;

	for (;;) {
		assert_int_equal(h_expect(c, "ev", &d, H_TIMEOUT), 1);
		if (!strcmp(h_s(&d.root, "ch"), ch))
			break;
		proto_doc_free(&d);
	}
	if (strcmp(h_s(&d.root, "ch"), ch) || h_u(&d.root, "seq") != seq) {
		char buf[512];

		msgpack_object_print_buffer(buf, sizeof(buf), d.root);
		fail_msg("expected ev %s seq %llu, got %s", ch,
			 (unsigned long long)seq, buf);
	}
	if (from)
		assert_string_equal(h_s(&d.root, "from"), from);
	if (cmid)
		assert_string_equal(h_s(&d.root, "cmid"), cmid);
	proto_doc_free(&d);
}

/* One event of a channel's log, as `events` returns it. */
struct logev {
	uint64_t seq;
	char from[PROTO_MAX_ID + 1];
	char cmid[PROTO_MAX_CMID + 1];
	char body[128];
};

/* The whole event log of ch, paged with `events` from after=0 until
 * more:false. Asserts each page is ascending. Caller frees.
 *
 * LOG_PAGE is 500, not the protocol's 1000: proto/client.c decodes what
 * the server sends with proto_decode(), which refuses anything over
 * PROTO_MAX_FRAME (64 KiB, the limit on *incoming* frames), so a page of
 * 1000 of this file's ~100-byte events would never come out of pc_recv(). */
#define LOG_PAGE 500
static struct logev *fetch_log(pc_conn *c, const char *ch, size_t *n_out)
{
	struct logev *v = NULL;
	size_t n = 0, cap = 0;
	uint64_t after = 0;
	bool more = true;

	while (more) {
		proto_doc res;
		const msgpack_object_array *a;

		assert_int_equal(h_req(c, &res, "events", 3, "ch", 's', ch,
				       "after", 'u', after, "limit", 'u',
				       (uint64_t)LOG_PAGE), 1);
		if (!h_ok(&res))
			fail_msg("events: %s", h_code(&res));
		assert_int_equal(proto_get_array(&res.root, "evs", &a), 0);
		assert_int_equal(proto_get_bool(&res.root, "more", &more), 0);
		if (more)
			assert_true(a->size > 0);
		for (uint32_t i = 0; i < a->size; i++) {
			const msgpack_object *e = &a->ptr[i];
			uint64_t seq = h_u(e, "seq");

			assert_true(seq > after);
			after = seq;
			if (n == cap) {
				cap = cap ? cap * 2 : 1024;
				v = realloc(v, cap * sizeof(*v));
				assert_non_null(v);
			}
			v[n].seq = seq;
			snprintf(v[n].from, sizeof(v[n].from), "%s",
				 h_s(e, "from"));
			snprintf(v[n].cmid, sizeof(v[n].cmid), "%s",
				 h_s(e, "cmid"));
			snprintf(v[n].body, sizeof(v[n].body), "%s",
				 h_s(e, "body"));
			n++;
		}
		proto_doc_free(&res);
	}
	*n_out = n;
	return v;
}

/* ---- idempotency -------------------------------------------------------- */

static void test_idempotent_send(void **st)
{
	hsrv s;
	char ch[65], other[65];
	pc_conn *a, *b, *a2;
	struct sent r1, r;
	struct logev *log;
	size_t n;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "bob", "acme", NULL);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(h_create(a, "idem", "public", ch), 0);
	h_join_ok(b, ch);

	r1 = send_ok(a, ch, "first", "x");
	assert_int_equal(r1.seq, 1);
	assert_false(r1.dup);
	expect_ev(b, ch, 1, "alice", "x");

	/* Same connection: the original seq and ts, dup, no new event. */
	r = send_ok(a, ch, "first again", "x");
	assert_int_equal(r.seq, r1.seq);
	assert_true(r.dup);
	assert_int_equal(r.ts, r1.ts);
	assert_int_equal(count_ev(b, 300), 0);
	/* alice's own connection saw seq 1 once, nothing for the retry */
	expect_ev(a, ch, 1, "alice", "x");
	assert_int_equal(count_ev(a, 100), 0);

	/* A new connection of the same user */
	pc_close(a);
	a = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	r = send_ok(a, ch, "from the phone", "x");
	assert_int_equal(r.seq, r1.seq);
	assert_true(r.dup);
	assert_int_equal(r.ts, r1.ts);
	assert_int_equal(count_ev(b, 300), 0);

	/* Across a clean restart */
	pc_close(a);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_restart(&s);
	a = h_connect(&s, "alice", "acme", NULL);
	a2 = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "bob", "acme", NULL);
	assert_non_null(a);
	assert_non_null(a2);
	assert_non_null(b);
	r = send_ok(a, ch, "after restart", "x");
	assert_int_equal(r.seq, r1.seq);
	assert_true(r.dup);
	assert_int_equal(r.ts, r1.ts);
	assert_int_equal(count_ev(b, 300), 0);
	assert_int_equal(count_ev(a2, 1), 0);
	/* A new cmid: the next seq, no gap and no reuse */
	r = send_ok(a, ch, "second", "y");
	assert_int_equal(r.seq, 2);
	assert_false(r.dup);
	expect_ev(b, ch, 2, "alice", "y");
	expect_ev(a2, ch, 2, "alice", "y");

	/* Same cmid from another user: a new message */
	r = send_ok(b, ch, "bob's x", "x");
	assert_int_equal(r.seq, 3);
	assert_false(r.dup);
	expect_ev(a2, ch, 3, "bob", "x");

	/* Same cmid in another channel: a new message there */
	assert_int_equal(h_create(a, "idem2", "public", other), 0);
	r = send_ok(a, other, "x elsewhere", "x");
	assert_int_equal(r.seq, 1);
	assert_false(r.dup);
	r = send_ok(a, other, "x elsewhere again", "x");
	assert_int_equal(r.seq, 1);
	assert_true(r.dup);

	/* The log holds exactly one copy of each */
	log = fetch_log(a, ch, &n);
	assert_int_equal(n, 3);
	assert_string_equal(log[0].cmid, "x");
	assert_string_equal(log[0].from, "alice");
	assert_string_equal(log[0].body, "first");
	assert_string_equal(log[1].cmid, "y");
	assert_string_equal(log[2].from, "bob");
	assert_string_equal(log[2].cmid, "x");
	free(log);
	log = fetch_log(a, other, &n);
	assert_int_equal(n, 1);
	free(log);

	/* And still after a kill -9 */
	pc_close(a);
	pc_close(a2);
	pc_close(b);
	h_kill9(&s);
	h_restart(&s);
	a = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	r = send_ok(a, ch, "after kill", "x");
	assert_int_equal(r.seq, 1);
	assert_true(r.dup);
	r = send_ok(a, ch, "after kill", "y");
	assert_int_equal(r.seq, 2);
	assert_true(r.dup);
	r = send_ok(a, ch, "third", "z");
	assert_int_equal(r.seq, 4);
	assert_false(r.dup);
	pc_close(a);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* The same cmid sent again before the first is even committed, from the
 * same connection (pipelined) and from another device at the same time:
 * one message, every answer its seq, one of them not a dup. */
static void test_idempotent_concurrent(void **st)
{
	enum { NC = 60 };
	hsrv s;
	char ch[65];
	pc_conn *a1, *a2, *b;
	uint64_t seq[NC] = { 0 };
	int fresh[NC] = { 0 }, answers[NC] = { 0 };
	bool used[NC + 1] = { false };
	struct logev *log;
	size_t n;

	(void)st;
	h_start(&s, "--shards 2 " FAST);
	a1 = h_connect(&s, "alice", "acme", NULL);
	a2 = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "bob", "acme", NULL);
	assert_int_equal(h_create(a1, "race", "public", ch), 0);
	h_join_ok(b, ch);
	for (int i = 0; i < NC; i++) {
		const struct { pc_conn *c; uint64_t rid; } q[3] = {
			{ a1, 1000 + 2 * (uint64_t)i },
			{ a2, 5000 + (uint64_t)i },
			{ a1, 1001 + 2 * (uint64_t)i },
		};
		char cmid[16];

		snprintf(cmid, sizeof(cmid), "c%d", i);
		for (int j = 0; j < 3; j++) {
			proto_out o;

			proto_out_init(&o, 0, 128);
			proto_enc_send(&o, q[j].rid, ch, cmid, strlen(cmid),
				       cmid, 0, NULL, 0);
			assert_int_equal(pc_queue(q[j].c,
						  2, o.data, o.len), 0);
			proto_out_free(&o);
		}
		assert_int_equal(pc_flush(a1), 0);
		assert_int_equal(pc_flush(a2), 0);
	}
	for (int k = 0; k < 2; k++) {
		pc_conn *c = k ? a2 : a1;
		int want = k ? NC : 2 * NC;

		for (int got = 0; got < want;) {
			proto_doc d;
			uint64_t rid, sq;
			bool dup = false;
			int i;

			assert_int_equal(h_next(c, &d, H_TIMEOUT), 1);
			if (strcmp(h_s(&d.root, "t"), "res")) {
				proto_doc_free(&d);
				continue;
			}
			got++;
			if (!h_ok(&d))
				fail_msg("send refused: %s", h_code(&d));
			rid = h_u(&d.root, "rid");
			i = k ? (int)(rid - 5000) : (int)(rid - 1000) / 2;
			assert_true(i >= 0 && i < NC);
			sq = h_u(&d.root, "seq");
			proto_get_bool(&d.root, "dup", &dup);
			if (seq[i] && seq[i] != sq)
				fail_msg("c%d answered with seq %llu and %llu",
					 i, (unsigned long long)seq[i],
					 (unsigned long long)sq);
			seq[i] = sq;
			fresh[i] += !dup;
			answers[i]++;
			proto_doc_free(&d);
		}
	}
	for (int i = 0; i < NC; i++) {
		assert_int_equal(answers[i], 3);
		if (fresh[i] != 1)
			fail_msg("c%d: %d answers without dup (want 1)", i,
				 fresh[i]);
		assert_true(seq[i] >= 1 && seq[i] <= NC);
		assert_false(used[seq[i]]);
		used[seq[i]] = true;
	}
	/* bob: one event per cmid */
	for (uint64_t i = 1; i <= NC; i++)
		expect_ev(b, ch, i, NULL, NULL);
	assert_int_equal(count_ev(b, 300), 0);
	log = fetch_log(b, ch, &n);
	assert_int_equal(n, NC);
	free(log);
	pc_close(a1);
	pc_close(a2);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* ---- restart keeps everything ------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* msgpack text of o; arrays of maps (lists of channels) sorted, so that
 * the order the server lists them in does not matter. Caller frees. */
static char *canon(const msgpack_object *o, bool sort)
{
	size_t cap = 1 << 20;
	char *out = malloc(cap);

	assert_non_null(out);
	if (!sort || o->type != MSGPACK_OBJECT_ARRAY) {
		msgpack_object_print_buffer(out, cap, *o);
		return out;
	}
	char **el = calloc(o->via.array.size + 1, sizeof(*el));
	size_t len = 0;

	assert_non_null(el);
	for (uint32_t i = 0; i < o->via.array.size; i++)
		el[i] = canon(&o->via.array.ptr[i], false);
	qsort(el, o->via.array.size, sizeof(*el), cmp_str);
	out[0] = 0;
	for (uint32_t i = 0; i < o->via.array.size; i++) {
		size_t l = strlen(el[i]);

		assert_true(len + l + 2 < cap);
		memcpy(out + len, el[i], l);
		len += l;
		out[len++] = '\n';
		out[len] = 0;
		free(el[i]);
	}
	free(el);
	return out;
}

/* Everything a user can see, as one string: the hello channel list,
 * ch.list, and per channel members, events and history (top level and the
 * thread of seq 1). */
static char *snapshot(hsrv *s, const char *user, const char *const *chs,
		      unsigned nch)
{
	size_t cap = 4 << 20, len = 0;
	char *out = malloc(cap);
	proto_doc hello, res;
	const msgpack_object *o;
	pc_conn *c;
	char *t;

	assert_non_null(out);
	out[0] = 0;
#define ADD(str) do {							\
		size_t l_ = strlen(str);				\
		assert_true(len + l_ + 2 < cap);			\
		memcpy(out + len, str, l_);				\
		len += l_;						\
		out[len++] = '\n';					\
		out[len] = 0;						\
	} while (0)

	c = h_connect(s, user, "acme", &hello);
	assert_non_null(c);
	o = proto_get(&hello.root, "channels");
	assert_non_null(o);
	t = canon(o, true);
	ADD("hello:");
	ADD(t);
	free(t);
	proto_doc_free(&hello);

	assert_int_equal(h_req(c, &res, "ch.list", 0), 1);
	assert_true(h_ok(&res));
	o = proto_get(&res.root, "channels");
	assert_non_null(o);
	t = canon(o, true);
	ADD("ch.list:");
	ADD(t);
	free(t);
	proto_doc_free(&res);

	for (unsigned i = 0; i < nch; i++) {
		ADD(chs[i]);
		assert_int_equal(h_req(c, &res, "ch.members", 2, "ch", 's',
				       chs[i], "limit", 'u', (uint64_t)1000),
				 1);
		o = proto_get(&res.root, "members");
		if (o) {
			t = canon(o, false);
			ADD(t);
			free(t);
		} else {
			ADD(h_code(&res));
		}
		proto_doc_free(&res);

		assert_int_equal(h_req(c, &res, "events", 3, "ch", 's', chs[i],
				       "after", 'u', (uint64_t)0, "limit", 'u',
				       (uint64_t)1000), 1);
		o = proto_get(&res.root, "evs");
		if (o) {
			t = canon(o, false);
			ADD(t);
			free(t);
		} else {
			ADD(h_code(&res));
		}
		proto_doc_free(&res);

		assert_int_equal(h_req(c, &res, "history", 2, "ch", 's', chs[i],
				       "limit", 'u', (uint64_t)200), 1);
		o = proto_get(&res.root, "msgs");
		if (o) {
			t = canon(o, false);
			ADD(t);
			free(t);
		} else {
			ADD(h_code(&res));
		}
		proto_doc_free(&res);

		assert_int_equal(h_req(c, &res, "history", 3, "ch", 's', chs[i],
				       "thread", 'u', (uint64_t)1, "limit", 'u',
				       (uint64_t)200), 1);
		o = proto_get(&res.root, "msgs");
		if (o) {
			t = canon(o, false);
			ADD(t);
			free(t);
		} else {
			ADD(h_code(&res));
		}
		proto_doc_free(&res);
	}
#undef ADD
	pc_close(c);
	return out;
}

static uint64_t list_last_seq(pc_conn *c, const char *ch)
{
	proto_doc res;
	const msgpack_object_array *a;
	uint64_t last = (uint64_t)-1;

	assert_int_equal(h_req(c, &res, "ch.list", 0), 1);
	assert_int_equal(proto_get_array(&res.root, "channels", &a), 0);
	for (uint32_t i = 0; i < a->size; i++)
		if (!strcmp(h_s(&a->ptr[i], "id"), ch))
			last = h_u(&a->ptr[i], "last_seq");
	proto_doc_free(&res);
	return last;
}

static void restart_keeps_everything(bool kill)
{
	hsrv s;
	char gen[65], priv[65], rnd[65], dm[65];
	const char *chs[4] = { gen, priv, rnd, dm };
	const char *users[] = { "alice", "bob", "carol" };
	char *before[3];
	pc_conn *a, *b, *c;
	proto_doc res;
	const msgpack_object_map *m;
	struct sent r;
	const char *bob_only[] = { "bob", NULL };
	const char *ment[] = { "bob" };

	h_start(&s, "--shards 2");
	a = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "bob", "acme", NULL);
	c = h_connect(&s, "carol", "acme", NULL);
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	assert_int_equal(h_create(a, "general", "public", gen), 0);
	assert_int_equal(h_create(a, "secret", "private", priv), 0);
	assert_int_equal(h_create(c, "random", "public", rnd), 0);
	h_join_ok(b, gen);
	assert_int_equal(h_req(a, &res, "ch.invite", 2, "ch", 's', priv,
			       "users", 'S', bob_only), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	assert_int_equal(h_req(a, &res, "dm.open", 1, "users", 'S', bob_only),
			 1);
	assert_true(h_ok(&res));
	assert_int_equal(proto_get_map(&res.root, "ch", &m), 0);
	{
		msgpack_object mo = { .type = MSGPACK_OBJECT_MAP, .via.map = *m };

		snprintf(dm, sizeof(dm), "%s", h_s(&mo, "id"));
	}
	proto_doc_free(&res);

	/* History: messages, a thread, a mention, read markers */
	send_ok(a, gen, "hello all", "g1");
	send_ok(b, gen, "hi alice", "g2");
	assert_int_equal(send_x(b, gen, "a reply", "g3", 1, NULL, 0, &r), 1);
	assert_true(r.ok);
	assert_int_equal(send_x(a, gen, "bob, look", "g4", 0, ment, 1, &r), 1);
	assert_true(r.ok);
	send_ok(a, gen, "and this", "g5");
	send_ok(a, priv, "psst", "p1");
	send_ok(b, priv, "yes?", "p2");
	send_ok(c, rnd, "carol alone", "r1");
	send_ok(a, dm, "dm one", "d1");
	send_ok(b, dm, "dm two", "d2");
	send_ok(a, dm, "dm three", "d3");
	assert_int_equal(h_req(a, &res, "read", 2, "ch", 's', priv, "seq", 'u',
			       (uint64_t)2), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	pc_close(a);
	pc_close(b);
	pc_close(c);

	for (int i = 0; i < 3; i++)
		before[i] = snapshot(&s, users[i], chs, 4);
	/* bob has unread messages (4, 5) and a mention (4) in general: the
	 * snapshot compares counters that are not trivially 0 */
	assert_non_null(strstr(before[1], "\"unread\"=>2"));
	assert_non_null(strstr(before[1], "\"mentions\"=>1"));

	if (kill) {
		h_kill9(&s);
	} else {
		assert_int_equal(h_stop(&s), 0);
	}
	h_restart(&s);

	for (int i = 0; i < 3; i++) {
		char *after = snapshot(&s, users[i], chs, 4);

		if (strcmp(before[i], after)) {
			size_t k = 0;

			while (before[i][k] == after[k])
				k++;
			k = k > 200 ? k - 200 : 0;
			fprintf(stderr, "%s sees something else after the "
				"restart:\n--- before\n%.600s\n--- after\n"
				"%.600s\n", users[i], before[i] + k, after + k);
			fail();
		}
		free(after);
		free(before[i]);
	}

	/* Seq continues; membership works live */
	a = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "bob", "acme", NULL);
	c = h_connect(&s, "carol", "acme", NULL);
	assert_int_equal(list_last_seq(a, gen), 5);
	r = send_ok(a, gen, "after restart", "g6");
	assert_int_equal(r.seq, 6);
	expect_ev(b, gen, 6, "alice", "g6");
	r = send_ok(b, priv, "still here", "p3");
	assert_int_equal(r.seq, 3);
	expect_ev(a, priv, 3, "bob", "p3");
	r = send_ok(b, dm, "dm four", "d4");
	assert_int_equal(r.seq, 4);
	expect_ev(a, dm, 4, "bob", "d4");
	/* carol is still not in general nor secret */
	assert_int_equal(send_x(c, gen, "nope", "c1", 0, NULL, 0, &r), 1);
	assert_false(r.ok);
	assert_string_equal(r.code, "FORBIDDEN");
	assert_int_equal(send_x(c, priv, "nope", "c2", 0, NULL, 0, &r), 1);
	assert_false(r.ok);
	assert_int_equal(count_ev(c, 200), 0);
	/* a new channel after restart does not collide with old ones */
	{
		char nc[65];

		assert_int_equal(h_create(c, "newer", "public", nc), 0);
		for (int i = 0; i < 4; i++)
			assert_string_not_equal(nc, chs[i]);
	}
	pc_close(a);
	pc_close(b);
	pc_close(c);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

static void test_restart_keeps_everything(void **st)
{
	(void)st;
	restart_keeps_everything(false);
}

static void test_kill9_keeps_everything(void **st)
{
	(void)st;
	restart_keeps_everything(true);
}

/* Every state change is durable when acknowledged: kill -9 right after
 * each ack, and the change is there after the restart. */
static bool in_channels(const proto_doc *d, const char *key, const char *ch,
			uint64_t *read_seq)
{
	const msgpack_object_array *a;

	assert_int_equal(proto_get_array(&d->root, key, &a), 0);
	for (uint32_t i = 0; i < a->size; i++) {
		if (strcmp(h_s(&a->ptr[i], "id"), ch))
			continue;
		if (read_seq)
			*read_seq = h_u(&a->ptr[i], "read_seq");
		return true;
	}
	return false;
}

static pc_conn *after_kill(hsrv *s, const char *user, proto_doc *hello)
{
	pc_conn *c;

	h_kill9(s);
	h_restart(s);
	c = h_connect(s, user, "acme", hello);
	assert_non_null(c);
	return c;
}

static void test_acked_changes_survive_kill9(void **st)
{
	hsrv s;
	char pub[65], priv[65], dm[65];
	pc_conn *a, *b, *c;
	proto_doc res, hello;
	const char *carol[] = { "carol", NULL };
	const char *alice[] = { "alice", NULL };
	uint64_t rs = 0;

	(void)st;
	h_start(&s, "--shards 2");

	/* ch.create */
	a = h_connect(&s, "alice", "acme", NULL);
	assert_int_equal(h_create(a, "pub", "public", pub), 0);
	pc_close(a);
	a = after_kill(&s, "alice", &hello);
	assert_true(in_channels(&hello, "channels", pub, NULL));
	proto_doc_free(&hello);
	assert_int_equal(h_create(a, "priv", "private", priv), 0);
	pc_close(a);

	/* ch.join */
	b = after_kill(&s, "bob", NULL);
	h_join_ok(b, pub);
	pc_close(b);
	b = after_kill(&s, "bob", &hello);
	assert_true(in_channels(&hello, "channels", pub, NULL));
	proto_doc_free(&hello);
	pc_close(b);

	/* ch.invite (and the private channel created just before a kill) */
	a = h_connect(&s, "alice", "acme", NULL);
	assert_int_equal(h_req(a, &res, "ch.invite", 2, "ch", 's', priv,
			       "users", 'S', carol), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	pc_close(a);
	c = after_kill(&s, "carol", &hello);
	assert_true(in_channels(&hello, "channels", priv, NULL));
	proto_doc_free(&hello);
	pc_close(c);

	/* send, then read marker */
	a = h_connect(&s, "alice", "acme", NULL);
	assert_int_equal(send_ok(a, pub, "one", "k1").seq, 1);
	assert_int_equal(send_ok(a, pub, "two", "k2").seq, 2);
	pc_close(a);
	b = after_kill(&s, "bob", &hello);
	assert_true(in_channels(&hello, "channels", pub, &rs));
	assert_int_equal(rs, 0);
	proto_doc_free(&hello);
	assert_int_equal(h_req(b, &res, "read", 2, "ch", 's', pub, "seq", 'u',
			       (uint64_t)2), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	pc_close(b);
	b = after_kill(&s, "bob", &hello);
	assert_true(in_channels(&hello, "channels", pub, &rs));
	assert_int_equal(rs, 2);
	proto_doc_free(&hello);

	/* dm.open by bob: alice has it */
	assert_int_equal(h_req(b, &res, "dm.open", 1, "users", 'S',
			       alice), 1);
	assert_true(h_ok(&res));
	{
		const msgpack_object_map *m;
		msgpack_object mo = { .type = MSGPACK_OBJECT_MAP };

		assert_int_equal(proto_get_map(&res.root, "ch", &m), 0);
		mo.via.map = *m;
		snprintf(dm, sizeof(dm), "%s", h_s(&mo, "id"));
	}
	proto_doc_free(&res);
	pc_close(b);
	a = after_kill(&s, "alice", &hello);
	assert_true(in_channels(&hello, "channels", dm, NULL));
	proto_doc_free(&hello);
	pc_close(a);

	/* ch.leave */
	b = h_connect(&s, "bob", "acme", NULL);
	assert_int_equal(h_req(b, &res, "ch.leave", 1, "ch", 's', pub), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	pc_close(b);
	b = after_kill(&s, "bob", &hello);
	assert_false(in_channels(&hello, "channels", pub, NULL));
	proto_doc_free(&hello);
	assert_int_equal(h_req(b, &res, "ch.members", 1, "ch", 's', pub), 1);
	assert_true(h_ok(&res));
	{
		char *t = canon(proto_get(&res.root, "members"), false);

		assert_string_equal(t, "[\"alice\"]");
		free(t);
	}
	proto_doc_free(&res);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* ---- the crash test ----------------------------------------------------- */

#define NSEND   8
#define WINDOW  32
#define MAXITER 2
#define RID0    1000000ull

/* What happened to the n-th send of sender u in iteration it. Its cmid is
 * "i<it>-u<u>-<n>", its body "b-<cmid>". */
enum { ST_NONE, ST_SENT, ST_ACKED, ST_REFUSED };

struct slot {
	uint8_t st;
	uint64_t seq;     /* ack's seq */
	uint64_t log_seq; /* where the log has it, 0 = not there */
};

struct sender {
	pc_conn *c;
	uint64_t ev_next; /* the seq its next event must have */
	struct slot *v[MAXITER];
	uint32_t n[MAXITER]; /* sends issued per iteration */
	uint32_t cap[MAXITER];
	uint32_t inflight;
	bool dead;
};

static struct sender snd[NSEND];

/* obs[seq]: which send the events seen live had at that seq (pack_cmid),
 * 0 = none seen. Whatever a member saw must survive the kill. */
static uint64_t *obs;
static size_t obs_cap;

static uint64_t pack_cmid(const char *cmid)
{
	int it, u, k;
	unsigned n;

	if (sscanf(cmid, "i%d-u%d-%u", &it, &u, &n) == 3)
		return ((uint64_t)it << 48 | (uint64_t)u << 32 | n) + 1;
	if (sscanf(cmid, "fresh-%d", &k) == 1)
		return (0xffffull << 48 | (uint64_t)k) + 1;
	fail_msg("unknown cmid '%s'", cmid);
	return 0;
}

static void observe(struct sender *p, int u, const proto_doc *d)
{
	uint64_t seq = h_u(&d->root, "seq");
	uint64_t id = pack_cmid(h_s(&d->root, "cmid"));

	if (seq != p->ev_next)
		fail_msg("u%d: event seq %llu after %llu", u,
			 (unsigned long long)seq,
			 (unsigned long long)p->ev_next - 1);
	p->ev_next++;
	if (seq >= obs_cap) {
		size_t ncap = obs_cap ? obs_cap : 1 << 16;

		while (ncap <= seq)
			ncap *= 2;
		obs = realloc(obs, ncap * sizeof(*obs));
		assert_non_null(obs);
		memset(obs + obs_cap, 0, (ncap - obs_cap) * sizeof(*obs));
		obs_cap = ncap;
	}
	if (obs[seq] && obs[seq] != id)
		fail_msg("seq %llu seen as two different messages",
			 (unsigned long long)seq);
	obs[seq] = id;
}

static void cmid_of(char *buf, size_t cap, int it, int u, uint32_t n)
{
	snprintf(buf, cap, "i%d-u%d-%u", it, u, n);
}

static void user_of(char *buf, size_t cap, int u)
{
	snprintf(buf, cap, "u%d", u);
}

static void queue_send(struct sender *p, int it, int u, const char *ch)
{
	char cmid[48], body[64];
	uint32_t n = p->n[it];
	proto_out o;

	if (n == p->cap[it]) {
		p->cap[it] = p->cap[it] ? p->cap[it] * 2 : 4096;
		p->v[it] = realloc(p->v[it], p->cap[it] * sizeof(struct slot));
		assert_non_null(p->v[it]);
		memset(p->v[it] + n, 0,
		       (p->cap[it] - n) * sizeof(struct slot));
	}
	cmid_of(cmid, sizeof(cmid), it, u, n);
	snprintf(body, sizeof(body), "b-%s", cmid);
	proto_out_init(&o, 0, 128);
	proto_enc_send(&o, RID0 + n, ch, body, strlen(body), cmid, 0, NULL, 0);
	assert_int_equal(pc_queue(p->c, 2, o.data, o.len), 0);
	proto_out_free(&o);
	p->v[it][n].st = ST_SENT;
	p->n[it]++;
	p->inflight++;
}

/* Take every complete frame of p; record acks and events seen. */
static void take_frames(struct sender *p, int it, int u, uint64_t *acks)
{
	const uint8_t *data;
	size_t len;

	while (pc_next(p->c, &data, &len) == 1) {
		proto_doc d;
		uint64_t rid;

		assert_int_equal(proto_decode(&d, data, len), PROTO_OK);
		if (!strcmp(h_s(&d.root, "t"), "ev")) {
			observe(p, u, &d);
			proto_doc_free(&d);
			continue;
		}
		if (strcmp(h_s(&d.root, "t"), "res") ||
		    proto_get_uint(&d.root, "rid", &rid) || rid < RID0) {
			proto_doc_free(&d);
			continue;
		}
		rid -= RID0;
		assert_true(rid < p->n[it]);
		assert_int_equal(p->v[it][rid].st, ST_SENT);
		if (h_ok(&d)) {
			bool dup = false;

			proto_get_bool(&d.root, "dup", &dup);
			assert_false(dup); /* every cmid is new */
			p->v[it][rid].st = ST_ACKED;
			p->v[it][rid].seq = h_u(&d.root, "seq");
			assert_true(p->v[it][rid].seq > 0);
			(*acks)++;
		} else {
			p->v[it][rid].st = ST_REFUSED;
		}
		p->inflight--;
		proto_doc_free(&d);
	}
}

/* Stream from all senders for run_ms, then kill -9 with sends in flight;
 * collect the acks that made it out before the kill. */
static uint64_t stream_and_kill(hsrv *s, int it, const char *ch, int run_ms,
				uint64_t m, uint64_t *inflight_at_kill)
{
	uint64_t acks = 0, end;
	struct pollfd pfd[NSEND];

	for (int u = 0; u < NSEND; u++) {
		snd[u].ev_next = m + 1; /* live from the log's end */
		snd[u].inflight = 0;
		snd[u].dead = false;
		assert_int_equal(pc_set_nonblocking(snd[u].c), 0);
	}
	/* run_ms, and then on until an ack has come (the first commit after
	 * a restart may be slow on a slow disk), 30 s at the most */
	end = now_ms() + (uint64_t)run_ms;
	while (now_ms() < end || (!acks && now_ms() < end + 30000)) {
		for (int u = 0; u < NSEND; u++) {
			while (snd[u].inflight < WINDOW)
				queue_send(&snd[u], it, u, ch);
			assert_int_equal(pc_flush(snd[u].c), 0);
			pfd[u].fd = pc_fd(snd[u].c);
			pfd[u].events = POLLIN |
					(pc_pending(snd[u].c) ? POLLOUT : 0);
			pfd[u].revents = 0;
		}
		assert_true(poll(pfd, NSEND, 100) >= 0);
		for (int u = 0; u < NSEND; u++) {
			if (pfd[u].revents & POLLIN) {
				assert_int_equal(pc_on_readable(snd[u].c), 0);
				take_frames(&snd[u], it, u, &acks);
			}
		}
	}
	/* Top every window up once more so that the kill finds requests
	 * the server has read and not yet committed. */
	*inflight_at_kill = 0;
	for (int u = 0; u < NSEND; u++) {
		while (snd[u].inflight < WINDOW)
			queue_send(&snd[u], it, u, ch);
		pc_flush(snd[u].c);
	}
	h_kill9(s);
	for (int u = 0; u < NSEND; u++)
		*inflight_at_kill += snd[u].inflight;
	/* Acks already on their way still count: read to the end. */
	for (int u = 0; u < NSEND; u++) {
		uint64_t dl = now_ms() + 3000;

		while (now_ms() < dl) {
			struct pollfd p = { pc_fd(snd[u].c), POLLIN, 0 };
			int gone;

			poll(&p, 1, 100);
			gone = pc_on_readable(snd[u].c);
			take_frames(&snd[u], it, u, &acks);
			if (gone)
				break;
		}
		pc_close(snd[u].c);
		snd[u].c = NULL;
	}
	return acks;
}

static void connect_senders(hsrv *s)
{
	for (int u = 0; u < NSEND; u++) {
		char user[16];

		user_of(user, sizeof(user), u);
		snd[u].c = h_connect(s, user, "acme", NULL);
		assert_non_null(snd[u].c);
	}
}

/* The log must be seqs 1..M, every event one of our sends, no cmid twice,
 * every acknowledged send at its acknowledged seq. Returns M. */
static uint64_t check_log(pc_conn *c, const char *ch, int iters,
			  uint64_t *nacked, uint64_t *nfresh)
{
	struct logev *log;
	size_t n;

	log = fetch_log(c, ch, &n);
	*nfresh = 0;
	for (int it = 0; it < iters; it++)
		for (int u = 0; u < NSEND; u++)
			for (uint32_t i = 0; i < snd[u].n[it]; i++)
				snd[u].v[it][i].log_seq = 0;
	for (size_t i = 0; i < n; i++) {
		int it, u;
		unsigned k;
		char user[16], body[80];
		struct slot *sl;

		if (log[i].seq != i + 1)
			fail_msg("log: seq %llu at position %zu (expected %zu):"
				 " a gap or a duplicate seq",
				 (unsigned long long)log[i].seq, i, i + 1);
		if (!strncmp(log[i].cmid, "fresh-", 6)) {
			(*nfresh)++;
			continue;
		}
		if (sscanf(log[i].cmid, "i%d-u%d-%u", &it, &u, &k) != 3 ||
		    it < 0 || it >= iters || u < 0 || u >= NSEND ||
		    k >= snd[u].n[it])
			fail_msg("log: seq %zu has cmid '%s' that was never sent",
				 i + 1, log[i].cmid);
		if (log[i].seq < obs_cap && obs[log[i].seq] &&
		    obs[log[i].seq] != pack_cmid(log[i].cmid))
			fail_msg("seq %llu was delivered live as another "
				 "message than the log has (%s)",
				 (unsigned long long)log[i].seq, log[i].cmid);
		user_of(user, sizeof(user), u);
		assert_string_equal(log[i].from, user);
		snprintf(body, sizeof(body), "b-%s", log[i].cmid);
		assert_string_equal(log[i].body, body);
		sl = &snd[u].v[it][k];
		if (sl->log_seq)
			fail_msg("log: cmid %s twice, at seq %llu and %zu",
				 log[i].cmid, (unsigned long long)sl->log_seq,
				 i + 1);
		sl->log_seq = log[i].seq;
	}
	/* Members only get durable events: all that were seen are there. */
	for (size_t q = n + 1; q < obs_cap; q++)
		if (obs[q])
			fail_msg("seq %zu was delivered live before the kill "
				 "but is not in the log (M = %zu)", q, n);
	*nacked = 0;
	for (int it = 0; it < iters; it++)
		for (int u = 0; u < NSEND; u++)
			for (uint32_t i = 0; i < snd[u].n[it]; i++) {
				struct slot *sl = &snd[u].v[it][i];

				if (sl->st != ST_ACKED)
					continue;
				(*nacked)++;
				if (sl->log_seq != sl->seq)
					fail_msg("acknowledged i%d-u%d-%u at seq "
						 "%llu, but the log has it at "
						 "%llu (0 = lost)", it, u, i,
						 (unsigned long long)sl->seq,
						 (unsigned long long)sl->log_seq);
			}
	free(log);
	return n;
}

/* Re-send everything of iteration it that was sent but not acked: dup at
 * its log seq if committed, else the next seq. Returns the new M. */
static uint64_t resend_unacked(hsrv *s, const char *ch, int it, uint64_t m,
			       unsigned *ndup, unsigned *nnew)
{
	connect_senders(s);
	*ndup = *nnew = 0;
	for (int u = 0; u < NSEND; u++) {
		for (uint32_t i = 0; i < snd[u].n[it]; i++) {
			struct slot *sl = &snd[u].v[it][i];
			char cmid[48], body[64];
			struct sent r;

			if (sl->st == ST_ACKED)
				continue;
			cmid_of(cmid, sizeof(cmid), it, u, i);
			snprintf(body, sizeof(body), "b-%s", cmid);
			assert_int_equal(send_x(snd[u].c, ch, body, cmid, 0,
						NULL, 0, &r), 1);
			if (!r.ok)
				fail_msg("resend %s: %s", cmid, r.code);
			if (sl->log_seq) {
				if (!r.dup || r.seq != sl->log_seq)
					fail_msg("resend %s: committed at %llu "
						 "before the crash, now seq %llu"
						 " dup %d", cmid,
						 (unsigned long long)sl->log_seq,
						 (unsigned long long)r.seq,
						 r.dup);
				(*ndup)++;
			} else {
				if (r.dup || r.seq != m + 1)
					fail_msg("resend %s: not committed "
						 "before the crash, now seq %llu"
						 " dup %d (expected new seq "
						 "%llu)", cmid,
						 (unsigned long long)r.seq,
						 r.dup,
						 (unsigned long long)m + 1);
				m++;
				(*nnew)++;
			}
			sl->st = ST_ACKED;
			sl->seq = r.seq;
		}
	}
	return m;
}

static void test_kill9_under_load(void **st)
{
	static const int run_ms[MAXITER] = { 1500, 900 };
	hsrv s;
	char ch[65];
	pc_conn *c;
	uint64_t m = 0;

	(void)st;
	memset(snd, 0, sizeof(snd));
	free(obs);
	obs = NULL;
	obs_cap = 0;
	h_start(&s, "--shards 2 " FAST);
	connect_senders(&s);
	assert_int_equal(h_create(snd[0].c, "firehose", "public", ch), 0);
	for (int u = 1; u < NSEND; u++)
		h_join_ok(snd[u].c, ch);

	for (int it = 0; it < MAXITER; it++) {
		uint64_t acks, nacked, nfresh, infl, sent = 0, refused = 0;
		uint64_t m0 = m, seen = 0;
		unsigned ndup, nnew;
		struct sent r;
		char cmid[32];

		if (it > 0)
			connect_senders(&s);
		acks = stream_and_kill(&s, it, ch, run_ms[it], m, &infl);
		for (int u = 0; u < NSEND; u++) {
			sent += snd[u].n[it];
			for (uint32_t i = 0; i < snd[u].n[it]; i++)
				refused += snd[u].v[it][i].st == ST_REFUSED;
		}
		h_restart(&s);
		c = h_connect(&s, "u0", "acme", NULL);
		assert_non_null(c);
		m = check_log(c, ch, it + 1, &nacked, &nfresh);
		assert_int_equal(nfresh, it);
		for (int u = 0; u < NSEND; u++)
			seen = snd[u].ev_next - 1 > seen ? snd[u].ev_next - 1
							 : seen;
		print_message("crash %d (kill after %d ms): %llu sent, %llu "
			      "acked, %llu refused, %llu unacked at the kill; "
			      "members saw up to seq %llu live; log M = %llu "
			      "(this round %llu)\n", it + 1,
			      run_ms[it], (unsigned long long)sent,
			      (unsigned long long)acks,
			      (unsigned long long)refused,
			      (unsigned long long)infl,
			      (unsigned long long)seen,
			      (unsigned long long)m,
			      (unsigned long long)(m - m0));
		assert_int_equal(refused, 0);
		assert_true(acks > 0);
		assert_true(infl > 0);
		assert_true(m >= nacked);
		assert_true(m - m0 >= acks);
		assert_true(m <= m0 + sent);
		assert_int_equal(list_last_seq(c, ch), m);

		m = resend_unacked(&s, ch, it, m, &ndup, &nnew);
		print_message("crash %d: re-sent %u committed (dup) and %u "
			      "lost-before-commit (new) cmids; M = %llu\n",
			      it + 1, ndup, nnew, (unsigned long long)m);
		assert_int_equal(check_log(c, ch, it + 1, &nacked, &nfresh), m);
		assert_int_equal(nacked + nfresh, m);
		snprintf(cmid, sizeof(cmid), "fresh-%d", it);
		r = send_ok(c, ch, "fresh", cmid);
		assert_false(r.dup);
		assert_int_equal(r.seq, m + 1);
		m++;
		pc_close(c);
		for (int u = 0; u < NSEND; u++) {
			pc_close(snd[u].c);
			snd[u].c = NULL;
		}
	}
	/* The "fresh" sends are not in snd[]: count them in by hand */
	c = h_connect(&s, "u1", "acme", NULL);
	assert_non_null(c);
	{
		struct logev *log;
		size_t n;

		log = fetch_log(c, ch, &n);
		assert_int_equal(n, m);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(log[i].seq, i + 1);
		free(log);
	}
	pc_close(c);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
	for (int u = 0; u < NSEND; u++)
		for (int it = 0; it < MAXITER; it++)
			free(snd[u].v[it]);
	memset(snd, 0, sizeof(snd));
	free(obs);
	obs = NULL;
	obs_cap = 0;
}

/* ---- SIGTERM drain ------------------------------------------------------ */

static void test_sigterm_goaway(void **st)
{
	enum { NC = 5, NQ = 20 };
	hsrv s;
	char ch[65];
	pc_conn *c[NC];
	const char *who[NC] = { "alice", "alice", "bob", "carol", NULL };
	uint64_t acked[NQ] = { 0 };
	int nacked = 0;

	(void)st;
	h_start(&s, "--shards 2 --drain-ms 1000 " FAST);
	/* the last one has not said hello yet */
	for (int i = 0; i < NC; i++) {
		c[i] = who[i] ? h_connect(&s, who[i], "acme", NULL)
			      : h_connect_raw(&s);
		assert_non_null(c[i]);
	}
	assert_int_equal(h_create(c[0], "lobby", "public", ch), 0);
	h_join_ok(c[2], ch);
	/* Sends in flight when SIGTERM comes: each is answered (then it is
	 * durable) or not at all, never lost after an ok. */
	for (int i = 0; i < NQ; i++) {
		proto_out o;
		char cmid[16];

		snprintf(cmid, sizeof(cmid), "t%d", i);
		proto_out_init(&o, 0, 128);
		proto_enc_send(&o, 7000 + (uint64_t)i, ch, "bye", 3, cmid, 0,
			       NULL, 0);
		assert_int_equal(pc_send(c[0], &o), 0);
		proto_out_free(&o);
	}
	assert_int_equal(h_stop(&s), 0);

	for (int i = 0; i < NC; i++) {
		bool goaway = false;
		proto_doc d;
		int rc;

		while ((rc = pc_recv(c[i], &d, H_TIMEOUT)) == 1) {
			const char *t = h_s(&d.root, "t");

			if (!strcmp(t, "goaway")) {
				assert_false(goaway);
				goaway = true;
				assert_true(h_u(&d.root, "retry_ms") > 0);
			} else if (!strcmp(t, "res") && i == 0 && h_ok(&d)) {
				uint64_t rid = h_u(&d.root, "rid");

				if (rid >= 7000 && rid < 7000 + NQ)
					acked[nacked++] = h_u(&d.root, "seq");
			}
			proto_doc_free(&d);
		}
		assert_int_equal(rc, -1); /* closed, not timed out */
		if (!goaway)
			fail_msg("connection %d (%s) closed without a goaway",
				 i, who[i] ? who[i] : "no hello");
		print_message("connection %d: close code %d\n", i,
			      pc_close_code(c[i]));
		assert_int_not_equal(pc_close_code(c[i]), 1006);
		pc_close(c[i]);
	}
	print_message("%d of %d in-flight sends acked before exit\n", nacked,
		      NQ);

	/* Whatever was acked is there after a restart, at its seq */
	h_restart(&s);
	c[0] = h_connect(&s, "bob", "acme", NULL);
	assert_non_null(c[0]);
	{
		struct logev *log;
		size_t n;

		log = fetch_log(c[0], ch, &n);
		assert_true(n >= (size_t)nacked);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(log[i].seq, i + 1);
		for (int i = 0; i < nacked; i++) {
			assert_true(acked[i] >= 1 && acked[i] <= n);
			assert_string_equal(log[acked[i] - 1].from, "alice");
		}
		free(log);
	}
	pc_close(c[0]);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* ---- HTTP: /healthz, /metrics ------------------------------------------- */

struct http_res {
	int status;
	char head[4096];
	char *body; /* malloc'd, NUL-terminated */
	size_t body_len;
};

/* GET path over a fresh TCP connection; reads to Content-Length or EOF. */
static void http_get(int port, const char *path, struct http_res *r)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char req[256];
	size_t cap = 1 << 20, got = 0;
	char *buf = malloc(cap + 1);
	char *eoh = NULL;
	long clen = -1;
	uint64_t dl = now_ms() + H_TIMEOUT;
	int fd, n;

	memset(r, 0, sizeof(*r));
	assert_non_null(buf);
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	n = snprintf(req, sizeof(req),
		     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
		     "Connection: close\r\n\r\n", path, port);
	assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
	for (;;) {
		struct pollfd p = { fd, POLLIN, 0 };
		ssize_t k;
		uint64_t now = now_ms();

		if (eoh && clen >= 0 &&
		    got - (size_t)(eoh + 4 - buf) >= (size_t)clen)
			break;
		if (now >= dl)
			fail_msg("GET %s: timed out (%zu bytes)", path, got);
		if (poll(&p, 1, (int)(dl - now)) <= 0)
			continue;
		assert_true(got < cap);
		k = recv(fd, buf + got, cap - got, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		got += (size_t)k;
		buf[got] = 0;
		if (!eoh && (eoh = strstr(buf, "\r\n\r\n"))) {
			char *cl = strcasestr(buf, "\r\ncontent-length:");

			if (cl && cl < eoh)
				clen = strtol(cl + 17, NULL, 10);
		}
	}
	close(fd);
	buf[got] = 0;
	assert_non_null(eoh);
	assert_true(sscanf(buf, "HTTP/1.%*d %d", &r->status) == 1);
	snprintf(r->head, sizeof(r->head), "%.*s", (int)(eoh - buf), buf);
	r->body_len = got - (size_t)(eoh + 4 - buf);
	if (clen >= 0)
		assert_int_equal(r->body_len, clen);
	r->body = malloc(r->body_len + 1);
	assert_non_null(r->body);
	memcpy(r->body, eoh + 4, r->body_len);
	r->body[r->body_len] = 0;
	free(buf);
}

/* The value of the sample line "name value" (no labels); -1 if absent. */
static double metric(const char *text, const char *name)
{
	size_t nl = strlen(name);

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
		if (!strncmp(p, name, nl) && p[nl] == ' ')
			return strtod(p + nl + 1, NULL);
	return -1;
}

static bool has_sample(const char *text, const char *prefix)
{
	size_t pl = strlen(prefix);

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
		if (!strncmp(p, prefix, pl))
			return true;
	return false;
}

/* Every line is a comment (# HELP / # TYPE) or name{labels} value. */
static void check_prometheus(const char *text)
{
	const char *p = text;
	int samples = 0;

	assert_true(strlen(text) > 0);
	assert_int_equal(text[strlen(text) - 1], '\n');
	while (*p) {
		const char *e = strchr(p, '\n');
		char line[512], *q, *end;

		assert_non_null(e);
		assert_true((size_t)(e - p) < sizeof(line));
		memcpy(line, p, (size_t)(e - p));
		line[e - p] = 0;
		p = e + 1;
		if (line[0] == '#') {
			if (strncmp(line, "# HELP ", 7) &&
			    strncmp(line, "# TYPE ", 7))
				fail_msg("metrics: bad comment '%s'", line);
			continue;
		}
		q = line;
		if (!(*q == '_' || *q == ':' || (*q >= 'a' && *q <= 'z') ||
		      (*q >= 'A' && *q <= 'Z')))
			fail_msg("metrics: bad name in '%s'", line);
		while (*q == '_' || *q == ':' || (*q >= 'a' && *q <= 'z') ||
		       (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9'))
			q++;
		if (*q == '{') {
			q = strchr(q, '}');
			if (!q)
				fail_msg("metrics: unclosed labels '%s'", line);
			q++;
		}
		if (*q != ' ')
			fail_msg("metrics: no value in '%s'", line);
		q++;
		if (strcmp(q, "+Inf") && strcmp(q, "-Inf") && strcmp(q, "NaN")) {
			strtod(q, &end);
			if (end == q || *end)
				fail_msg("metrics: bad value in '%s'", line);
		}
		samples++;
	}
	assert_true(samples > 10);
}

/* parley_stage_seconds after 7 acked sends that reached two connections:
 * every stage of the ack path counted each send (plus create and join),
 * the delivery stages each delivery; buckets cumulative, +Inf = count, and
 * a request's whole time at least as long as its WAL sync. */
static void check_stages(const char *text)
{
	static const char *const ack_path[] = {
		"decode", "to_channel", "to_commit", "wal_sync", "after_sync",
		"ack_write", "ack_total",
	};
	char name[128];
	double sum_sync, sum_total;

	assert_non_null(strstr(text, "# TYPE parley_stage_seconds histogram"));
	for (size_t i = 0; i < sizeof(ack_path) / sizeof(*ack_path); i++) {
		snprintf(name, sizeof(name),
			 "parley_stage_seconds_count{stage=\"%s\"}", ack_path[i]);
		print_message("%s %g\n", name, metric(text, name));
		assert_true(metric(text, name) >= 7);
	}
	for (int i = 0; i < 2; i++) {
		const char *st = i ? "deliver_total" : "fanout_write";
		double prev = 0, inf;
		const char *p;

		snprintf(name, sizeof(name),
			 "parley_stage_seconds_count{stage=\"%s\"}", st);
		assert_true(metric(text, name) >= 14);
		snprintf(name, sizeof(name),
			 "parley_stage_seconds_bucket{stage=\"%s\",le=\"", st);
		for (p = strstr(text, name); p; p = strstr(p + 1, name)) {
			double v = strtod(strchr(p, '}') + 2, NULL);

			assert_true(v >= prev);
			prev = v;
		}
		snprintf(name, sizeof(name),
			 "parley_stage_seconds_bucket{stage=\"%s\",le=\"+Inf\"}", st);
		inf = metric(text, name);
		snprintf(name, sizeof(name),
			 "parley_stage_seconds_count{stage=\"%s\"}", st);
		assert_true(inf == prev && inf == metric(text, name));
	}
	sum_sync = metric(text, "parley_stage_seconds_sum{stage=\"wal_sync\"}");
	sum_total = metric(text, "parley_stage_seconds_sum{stage=\"ack_total\"}");
	assert_true(sum_sync > 0 && sum_total >= sum_sync);
}

static void test_http_health_metrics(void **st)
{
	hsrv s;
	struct http_res r;
	char ch[65];
	pc_conn *a, *b;
	double ev0, ev1, del1, conns;

	(void)st;
	h_start(&s, "--shards 2");

	http_get(s.port, "/healthz", &r);
	assert_int_equal(r.status, 200);
	assert_true(r.body_len >= 2);
	assert_true(!strcmp(r.body, "ok") || !strcmp(r.body, "ok\n"));
	free(r.body);

	a = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "bob", "acme", NULL);
	assert_non_null(a);
	assert_non_null(b);

	http_get(s.port, "/metrics", &r);
	assert_int_equal(r.status, 200);
	assert_non_null(strcasestr(r.head, "content-type: text/plain"));
	check_prometheus(r.body);
	conns = metric(r.body, "parley_connections");
	assert_true(conns >= 2);
	ev0 = metric(r.body, "parley_events_committed_total");
	assert_true(ev0 >= 0);
	assert_true(metric(r.body, "parley_fanout_deliveries_total") >= 0);
	assert_true(has_sample(r.body, "parley_commit_seconds_bucket{"));
	assert_true(has_sample(r.body, "parley_commit_batches_bucket{"));
	assert_true(has_sample(r.body, "parley_mailbox_depth"));
	assert_non_null(strstr(r.body,
			       "# TYPE parley_commit_seconds histogram"));
	assert_non_null(strstr(r.body,
			       "# TYPE parley_commit_batches histogram"));
	assert_non_null(strstr(r.body,
			       "# TYPE parley_events_committed_total counter"));
	free(r.body);

	assert_int_equal(h_create(a, "stats", "public", ch), 0);
	h_join_ok(b, ch);
	for (int i = 0; i < 7; i++) {
		char cmid[8];

		snprintf(cmid, sizeof(cmid), "m%d", i);
		send_ok(a, ch, "count me", cmid);
	}
	/* a dup is not a new event */
	assert_true(send_ok(a, ch, "count me", "m0").dup);
	for (int i = 1; i <= 7; i++)
		expect_ev(b, ch, (uint64_t)i, "alice", NULL);

	http_get(s.port, "/metrics", &r);
	assert_int_equal(r.status, 200);
	check_prometheus(r.body);
	ev1 = metric(r.body, "parley_events_committed_total");
	del1 = metric(r.body, "parley_fanout_deliveries_total");
	print_message("events_committed %g -> %g, fanout_deliveries %g\n",
		      ev0, ev1, del1);
	assert_true(ev1 == ev0 + 7);
	/* 7 events to two connections */
	assert_true(del1 >= 14);
	assert_true(metric(r.body, "parley_commit_seconds_count") >= 1);
	assert_true(metric(r.body, "parley_commit_batches_count") >= 1);
	check_stages(r.body);
	free(r.body);

	http_get(s.port, "/no/such/thing", &r);
	assert_int_equal(r.status, 404);
	free(r.body);

	pc_close(a);
	pc_close(b);
	/* Connections gone: the gauge comes down */
	for (uint64_t dl = now_ms() + H_TIMEOUT; now_ms() < dl;) {
		http_get(s.port, "/metrics", &r);
		conns = metric(r.body, "parley_connections");
		free(r.body);
		if (conns == 0)
			break;
		usleep(20000);
	}
	assert_true(conns == 0);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* ---- channel actors leave memory when idle and come back intact -------- */

static double loaded_channels(hsrv *s)
{
	struct http_res r;
	double v;

	http_get(s->port, "/metrics", &r);
	v = metric(r.body, "parley_channels_loaded");
	free(r.body);
	return v;
}

/* With --channel-idle-ms 300, a channel nobody listens to is unloaded; the
 * next request reloads it from storage with its seq, history and members.
 * While a member is connected (subscribed) it stays. */
static void test_idle_channel_unloads_and_reloads(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char ch[65];
	proto_doc res;
	const msgpack_object_array *msgs;
	const char *chs[1];
	uint64_t seqs[1] = { 3 };

	(void)st;
	h_start(&s, "--shards 2 --channel-idle-ms 300");
	a = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "bob", "acme", NULL);
	assert_int_equal(h_create(a, "idle", "public", ch), 0);
	h_join_ok(b, ch);
	for (int i = 1; i <= 3; i++) {
		char cmid[8];

		snprintf(cmid, sizeof(cmid), "i%d", i);
		assert_int_equal(send_ok(a, ch, "before", cmid).seq, (uint64_t)i);
	}
	/* subscribed members keep it loaded */
	usleep(1000 * 1000);
	assert_true(loaded_channels(&s) >= 1);

	pc_close(a);
	pc_close(b);
	for (int i = 0; i < 50 && loaded_channels(&s) != 0; i++)
		usleep(100 * 1000);
	assert_true(loaded_channels(&s) == 0);

	/* back: seq continues, history and membership are intact, a repeated
	 * cmid is still a dup, and bob resumes without a gap */
	a = h_connect(&s, "alice", "acme", NULL);
	assert_int_equal(send_ok(a, ch, "after", "i4").seq, 4);
	assert_int_equal(h_send(a, ch, "again", "i2"), 2);
	chs[0] = ch;
	b = h_connect_raw(&s);
	{
		char *tok = h_token(&s, "bob", "acme");

		assert_int_equal(pc_hello(b, tok, chs, seqs, 1, &res, H_TIMEOUT), 1);
		free(tok);
		proto_doc_free(&res);
	}
	expect_ev(b, ch, 4, "alice", "i4");
	assert_int_equal(h_req(a, &res, "history", 1, "ch", 's', ch), 1);
	assert_true(h_ok(&res));
	assert_int_equal(proto_get_array(&res.root, "msgs", &msgs), 0);
	assert_int_equal(msgs->size, 4);
	proto_doc_free(&res);
	assert_int_equal(send_ok(b, ch, "bob is still a member", "b1").seq, 5);
	expect_ev(a, ch, 4, "alice", "i4"); /* her own, first */
	expect_ev(a, ch, 5, "bob", "b1");

	pc_close(a);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_idempotent_send),
		cmocka_unit_test(test_idempotent_concurrent),
		cmocka_unit_test(test_restart_keeps_everything),
		cmocka_unit_test(test_kill9_keeps_everything),
		cmocka_unit_test(test_acked_changes_survive_kill9),
		cmocka_unit_test(test_kill9_under_load),
		cmocka_unit_test(test_sigterm_goaway),
		cmocka_unit_test(test_http_health_metrics),
		cmocka_unit_test(test_idle_channel_unloads_and_reloads),
	};

	/* E2E_FILTER=test_name (or a pattern with *) runs only that */
	if (getenv("E2E_FILTER"))
		cmocka_set_test_filter(getenv("E2E_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
