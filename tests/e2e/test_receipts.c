/*
 * Receipts in DMs: a member's read marker that moves (read, send) is told
 * to the other members' devices as a "receipt" frame while the member's
 * own other devices get the "read" frame as before; `delivered` from any
 * of a user's devices moves the user's delivered position (the highest,
 * never back, clamped to the channel's end, at least the read marker) and
 * tells the others when it moves; `receipts` answers every member's
 * positions. The positions survive a restart and a kill -9 after the
 * answer. Elsewhere: `delivered` is answered ok and does nothing,
 * `receipts` is BAD_REQUEST; a DM one is not in does not exist (NOT_FOUND),
 * nor does one of another workspace; bad arguments are BAD_REQUEST.
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

/* Generous: a loaded 2-core CI machine running the ASan build. */
#define T_FRAME 20000

/* ---- helpers ------------------------------------------------------------- */

static void str_at(const msgpack_object *m, const char *key, char *out)
{
	snprintf(out, 65, "%.64s", h_s(m, key));
}

/* dm.open of the caller and users (NULL-terminated): the id into out. */
static void dm_open(pc_conn *c, const char **users, char *out)
{
	proto_doc res;
	const msgpack_object *ch;

	h_req_ok(c, &res, "dm.open", 1, "users", 'S', users);
	ch = proto_get(&res.root, "ch");
	assert_non_null(ch);
	str_at(ch, "id", out);
	assert_string_equal(h_s(ch, "kind"), "dm");
	proto_doc_free(&res);
}

static void send_ok(pc_conn *c, const char *ch, uint64_t want_seq)
{
	char cmid[32];

	snprintf(cmid, sizeof(cmid), "m-%llu", (unsigned long long)want_seq);
	assert_int_equal(h_send(c, ch, "hello there", cmid),
			 (int64_t)want_seq);
}

static void read_ok(pc_conn *c, const char *ch, uint64_t seq)
{
	proto_doc res;

	h_req_ok(c, &res, "read", 2, "ch", 's', ch, "seq", 'u', seq);
	proto_doc_free(&res);
}

static void delivered_ok(pc_conn *c, const char *ch, uint64_t seq)
{
	proto_doc res;

	h_req_ok(c, &res, "delivered", 2, "ch", 's', ch, "seq", 'u', seq);
	proto_doc_free(&res);
}

/* delivered without rid, as a client reports it */
static void delivered_ff(pc_conn *c, const char *ch, uint64_t seq)
{
	proto_out o;

	proto_out_init(&o, 0, 128);
	proto_enc_req(&o, "delivered", 0, 2);
	proto_pk_cstr(&o.pk, "ch");
	proto_pk_cstr(&o.pk, ch);
	proto_pk_cstr(&o.pk, "seq");
	msgpack_pack_uint64(&o.pk, seq);
	assert_int_equal(pc_send(c, &o), 0);
	proto_out_free(&o);
}

/* The next receipt frame on c: about user in ch, with only the position
 * what ("read" or "delivered") at seq. */
static void expect_receipt(pc_conn *c, const char *ch, const char *user,
			   const char *what, uint64_t seq)
{
	const char *other = strcmp(what, "read") ? "read" : "delivered";
	proto_doc d;

	assert_int_equal(h_expect(c, "receipt", &d, T_FRAME), 1);
	assert_string_equal(h_s(&d.root, "ch"), ch);
	assert_string_equal(h_s(&d.root, "user"), user);
	assert_non_null(proto_get(&d.root, what));
	assert_int_equal(h_u(&d.root, what), seq);
	assert_null(proto_get(&d.root, other));
	proto_doc_free(&d);
}

static void expect_read(pc_conn *c, const char *ch, uint64_t seq)
{
	proto_doc d;

	assert_int_equal(h_expect(c, "read", &d, T_FRAME), 1);
	assert_string_equal(h_s(&d.root, "ch"), ch);
	assert_int_equal(h_u(&d.root, "seq"), seq);
	proto_doc_free(&d);
}

struct pos {
	const char *user;
	uint64_t delivered, read;
};

/* receipts of ch, asked by c: exactly the n members of want. */
static void receipts_are(pc_conn *c, const char *ch, const struct pos *want,
			 unsigned n)
{
	proto_doc res;
	const msgpack_object *m;

	h_req_ok(c, &res, "receipts", 1, "ch", 's', ch);
	m = proto_get(&res.root, "receipts");
	assert_non_null(m);
	assert_int_equal(m->type, MSGPACK_OBJECT_MAP);
	assert_int_equal(m->via.map.size, n);
	for (unsigned i = 0; i < n; i++) {
		const msgpack_object *e = proto_get(m, want[i].user);

		if (!e)
			fail_msg("no receipts for %s", want[i].user);
		assert_int_equal(h_u(e, "delivered"), want[i].delivered);
		assert_int_equal(h_u(e, "read"), want[i].read);
		assert_non_null(proto_get(e, "delivered"));
		assert_non_null(proto_get(e, "read"));
	}
	proto_doc_free(&res);
}

/* Connect user@acme and wait until its subscription to ch is live (a
 * receipt frame is not an event: a device that is not yet listening
 * misses it, as it would miss a typing frame). */
static pc_conn *device(hsrv *s, const char *user, const char *ch)
{
	pc_conn *c = h_connect_ok(s, user, "acme");

	assert_int_equal(h_barrier(c, ch, NULL, NULL), 1);
	return c;
}

/* A server with alice, bob and carol's DM holding 4 messages of alice's
 * (her read marker at 4, theirs at 0). */
static pc_conn *dm_setup(hsrv *s, char *dm)
{
	const char *users[] = { "bob", "carol", NULL };
	pc_conn *a;

	h_start(s, "--shards 2");
	a = h_connect_ok(s, "alice", "acme");
	dm_open(a, users, dm);
	for (uint64_t i = 1; i <= 4; i++)
		send_ok(a, dm, i);
	return a;
}

/* ---- tests --------------------------------------------------------------- */

static void test_read_receipts(void **st)
{
	hsrv s;
	pc_conn *a, *b1, *b2, *c1;
	char dm[65], pub[65];

	(void)st;
	a = dm_setup(&s, dm);
	b1 = device(&s, "bob", dm);
	b2 = device(&s, "bob", dm);
	c1 = device(&s, "carol", dm);

	/* bob reads: alice and carol get a receipt, bob's other device the
	 * read frame and no receipt, the reading device neither */
	read_ok(b1, dm, 2);
	expect_receipt(a, dm, "bob", "read", 2);
	expect_receipt(c1, dm, "bob", "read", 2);
	expect_read(b2, dm, 2);
	h_expect_none(b2, "receipt", dm);
	h_expect_none(b1, "receipt", dm);
	h_expect_none(b1, "read", dm);

	/* a marker that does not move tells nobody */
	read_ok(b2, dm, 1);
	read_ok(b2, dm, 2);
	h_expect_none(a, "receipt", dm);
	h_expect_none(c1, "receipt", dm);

	/* past the end: the last seq */
	read_ok(b1, dm, 1000);
	expect_receipt(a, dm, "bob", "read", 4);
	expect_receipt(c1, dm, "bob", "read", 4);
	expect_read(b2, dm, 4);

	/* a send moves the sender's marker to its message: the others are
	 * told after the message itself */
	send_ok(c1, dm, 5);
	{
		proto_doc d;

		assert_int_equal(h_expect(a, "ev", &d, T_FRAME), 1);
		assert_int_equal(h_u(&d.root, "seq"), 5);
		proto_doc_free(&d);
	}
	expect_receipt(a, dm, "carol", "read", 5);
	expect_receipt(b1, dm, "carol", "read", 5);
	expect_receipt(b2, dm, "carol", "read", 5);
	h_expect_none(c1, "receipt", dm);

	/* not in other channels */
	h_create_ok(a, "general", "public", pub);
	assert_int_equal(h_barrier(a, pub, NULL, NULL), 1);
	h_join_ok(b1, pub);
	send_ok(a, pub, 1);
	read_ok(b1, pub, 1);
	expect_read(b2, pub, 1);
	h_expect_none(a, "receipt", pub);
	h_expect_none(b2, "receipt", pub);

	pc_close(a);
	pc_close(b1);
	pc_close(b2);
	pc_close(c1);
	h_finish(&s);
}

static void test_delivered(void **st)
{
	hsrv s;
	pc_conn *a, *b1, *b2, *c1;
	char dm[65];

	(void)st;
	a = dm_setup(&s, dm);
	b1 = device(&s, "bob", dm);
	b2 = device(&s, "bob", dm);
	c1 = device(&s, "carol", dm);

	/* bob's first device has 2: the others are told, bob's devices not */
	delivered_ok(b1, dm, 2);
	expect_receipt(a, dm, "bob", "delivered", 2);
	expect_receipt(c1, dm, "bob", "delivered", 2);
	h_expect_none(b2, "receipt", dm);
	h_expect_none(b1, "receipt", dm);

	/* his second device is behind: the highest counts, nobody is told */
	delivered_ok(b2, dm, 1);
	delivered_ok(b2, dm, 2);
	h_expect_none(a, "receipt", dm);
	h_expect_none(c1, "receipt", dm);
	receipts_are(c1, dm,
		     (struct pos[]){ { "alice", 4, 4 }, { "bob", 2, 0 },
				     { "carol", 0, 0 } }, 3);

	/* fire-and-forget, as clients send it: moves it on */
	delivered_ff(b2, dm, 3);
	expect_receipt(a, dm, "bob", "delivered", 3);
	expect_receipt(c1, dm, "bob", "delivered", 3);
	delivered_ff(b1, dm, 1); /* behind: no answer, no frame */
	h_expect_none_any(b1, "err", dm);
	h_expect_none(a, "receipt", dm);

	/* past the end: clamped to the last seq */
	delivered_ok(b1, dm, 1000);
	expect_receipt(a, dm, "bob", "delivered", 4);
	expect_receipt(c1, dm, "bob", "delivered", 4);
	receipts_are(a, dm,
		     (struct pos[]){ { "alice", 4, 4 }, { "bob", 4, 0 },
				     { "carol", 0, 0 } }, 3);
	/* and does not move past it when the channel grows */
	send_ok(a, dm, 5);
	expect_receipt(b1, dm, "alice", "read", 5);
	expect_receipt(c1, dm, "alice", "read", 5);
	receipts_are(a, dm,
		     (struct pos[]){ { "alice", 5, 5 }, { "bob", 4, 0 },
				     { "carol", 0, 0 } }, 3);

	/* reading implies having received: carol reads 3, so her delivered
	 * position is 3 and a delivered of 2 is no move */
	read_ok(c1, dm, 3);
	expect_receipt(a, dm, "carol", "read", 3);
	expect_receipt(b1, dm, "carol", "read", 3);
	delivered_ok(c1, dm, 2);
	delivered_ok(c1, dm, 3);
	h_expect_none(a, "receipt", dm);
	h_expect_none(b1, "receipt", dm);
	receipts_are(b2, dm,
		     (struct pos[]){ { "alice", 5, 5 }, { "bob", 4, 0 },
				     { "carol", 3, 3 } }, 3);
	delivered_ok(c1, dm, 5);
	expect_receipt(a, dm, "carol", "delivered", 5);
	expect_receipt(b1, dm, "carol", "delivered", 5);
	receipts_are(c1, dm,
		     (struct pos[]){ { "alice", 5, 5 }, { "bob", 4, 0 },
				     { "carol", 5, 3 } }, 3);

	pc_close(a);
	pc_close(b1);
	pc_close(b2);
	pc_close(c1);
	h_finish(&s);
}

static void test_durable(void **st)
{
	hsrv s;
	pc_conn *a, *b, *c;
	char dm[65];

	(void)st;
	a = dm_setup(&s, dm);
	b = h_connect_ok(&s, "bob", "acme");
	c = h_connect_ok(&s, "carol", "acme");
	delivered_ok(b, dm, 3);
	read_ok(b, dm, 2);
	delivered_ok(c, dm, 1);

	/* across a restart */
	pc_close(a);
	pc_close(b);
	pc_close(c);
	assert_int_equal(h_stop(&s), 0);
	h_restart(&s);
	a = device(&s, "alice", dm);
	b = h_connect_ok(&s, "bob", "acme");
	receipts_are(a, dm,
		     (struct pos[]){ { "alice", 4, 4 }, { "bob", 3, 2 },
				     { "carol", 1, 0 } }, 3);
	/* still never backwards */
	delivered_ok(b, dm, 2);
	h_expect_none(a, "receipt", dm);
	receipts_are(b, dm,
		     (struct pos[]){ { "alice", 4, 4 }, { "bob", 3, 2 },
				     { "carol", 1, 0 } }, 3);

	/* across a kill -9 right after the answers */
	delivered_ok(b, dm, 4);
	read_ok(b, dm, 3);
	h_kill9(&s);
	pc_close(a);
	pc_close(b);
	h_restart(&s);
	c = h_connect_ok(&s, "carol", "acme");
	receipts_are(c, dm,
		     (struct pos[]){ { "alice", 4, 4 }, { "bob", 4, 3 },
				     { "carol", 1, 0 } }, 3);
	/* and a fire-and-forget one: durable before anyone is told */
	b = device(&s, "bob", dm);
	delivered_ff(c, dm, 2);
	expect_receipt(b, dm, "carol", "delivered", 2);
	h_kill9(&s);
	pc_close(b);
	pc_close(c);
	h_restart(&s);
	a = h_connect_ok(&s, "alice", "acme");
	receipts_are(a, dm,
		     (struct pos[]){ { "alice", 4, 4 }, { "bob", 4, 3 },
				     { "carol", 2, 0 } }, 3);

	pc_close(a);
	h_finish(&s);
}

static void test_elsewhere_and_refusals(void **st)
{
	hsrv s;
	pc_conn *a, *b, *d, *o;
	char dm[65], pub[65], priv[65];

	(void)st;
	a = dm_setup(&s, dm);
	b = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a, "general", "public", pub);
	h_create_ok(a, "plans", "private", priv);
	h_join_ok(b, pub);
	send_ok(a, pub, 1);
	send_ok(a, priv, 1);

	/* other channels: delivered is accepted and ignored, receipts is
	 * not something they have */
	delivered_ok(b, pub, 1);
	delivered_ok(a, priv, 1);
	delivered_ff(b, pub, 1);
	h_expect_none_any(b, "err", pub);
	h_expect_none(a, "receipt", pub);
	h_req_fail("BAD_REQUEST", b, "receipts", 1, "ch", 's', pub);
	h_req_fail("BAD_REQUEST", a, "receipts", 1, "ch", 's', priv);

	/* dave is in the workspace but not in the DM: it does not exist for
	 * him, as for a channel id never made */
	d = h_connect_ok(&s, "dave", "acme");
	h_req_fail("NOT_FOUND", d, "delivered", 2, "ch", 's', dm, "seq", 'u',
		   (uint64_t)1);
	h_req_fail("NOT_FOUND", d, "receipts", 1, "ch", 's', dm);
	h_req_fail("NOT_FOUND", d, "delivered", 2, "ch", 's', priv, "seq",
		   'u', (uint64_t)1);
	h_req_fail("NOT_FOUND", d, "receipts", 1, "ch", 's', priv);
	h_req_fail("NOT_FOUND", d, "receipts", 1, "ch", 's', "Cnosuchchan");
	h_req_fail("NOT_FOUND", d, "delivered", 2, "ch", 's', "Cnosuchchan",
		   "seq", 'u', (uint64_t)1);
	/* and nobody heard of his attempts */
	h_expect_none(a, "receipt", dm);

	/* the same user names in another workspace */
	o = h_connect(&s, "bob", "other", NULL);
	assert_non_null(o);
	h_req_fail("NOT_FOUND", o, "delivered", 2, "ch", 's', dm, "seq", 'u',
		   (uint64_t)1);
	h_req_fail("NOT_FOUND", o, "receipts", 1, "ch", 's', dm);
	h_req_fail("NOT_FOUND", o, "receipts", 1, "ch", 's', pub);
	receipts_are(a, dm,
		     (struct pos[]){ { "alice", 4, 4 }, { "bob", 0, 0 },
				     { "carol", 0, 0 } }, 3);

	/* bad arguments */
	h_req_fail("BAD_REQUEST", b, "delivered", 1, "ch", 's', dm);
	h_req_fail("BAD_REQUEST", b, "delivered", 1, "seq", 'u', (uint64_t)1);
	h_req_fail("BAD_REQUEST", b, "delivered", 2, "ch", 's', dm, "seq", 's',
		   "3");
	h_req_fail("BAD_REQUEST", b, "delivered", 2, "ch", 's', "", "seq",
		   'u', (uint64_t)1);
	h_req_fail("BAD_REQUEST", b, "delivered", 2, "ch", 'u', (uint64_t)5,
		   "seq", 'u', (uint64_t)1);
	h_req_fail("BAD_REQUEST", b, "receipts", 0);
	h_req_fail("BAD_REQUEST", b, "receipts", 1, "ch", 's', "no spaces");
	h_req_fail("BAD_REQUEST", b, "receipts", 1, "ch", 'u', (uint64_t)5);
	receipts_are(b, dm,
		     (struct pos[]){ { "alice", 4, 4 }, { "bob", 0, 0 },
				     { "carol", 0, 0 } }, 3);

	pc_close(a);
	pc_close(b);
	pc_close(d);
	pc_close(o);
	h_finish(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_receipts),
		cmocka_unit_test(test_delivered),
		cmocka_unit_test(test_durable),
		cmocka_unit_test(test_elsewhere_and_refusals),
	};

	/* E2E_FILTER=test_name (or a pattern with *) runs only that */
	if (getenv("E2E_FILTER"))
		cmocka_set_test_filter(getenv("E2E_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
