/*
 * Fan-out: every member's devices, the sender's other device and the
 * sending connection itself get every event of a channel, once, in seq
 * order, with contiguous seqs; on one shard and across two.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "tests/e2e/harness.h"

#define N 200

static void check_stream(pc_conn *c, const char *ch, uint64_t from,
			 uint64_t to)
{
	for (uint64_t want = from; want <= to; want++) {
		proto_doc d;

		assert_int_equal(h_expect(c, "ev", &d, H_TIMEOUT), 1);
		assert_string_equal(h_s(&d.root, "ch"), ch);
		assert_int_equal(h_u(&d.root, "seq"), want);
		assert_string_equal(h_s(&d.root, "k"), "msg");
		proto_doc_free(&d);
	}
}

static void run(const char *flags)
{
	hsrv s;
	char ch[65];
	pc_conn *a1, *a2, *b, *c;
	proto_doc res;

	h_start(&s, flags);
	a1 = h_connect(&s, "alice", "acme", NULL);
	a2 = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "bob", "acme", NULL);
	c = h_connect(&s, "carol", "acme", NULL);
	assert_non_null(a1);
	assert_non_null(a2);
	assert_non_null(b);
	assert_non_null(c);
	assert_int_equal(h_create(a1, "general", "public", ch), 0);
	assert_int_equal(h_req(b, &res, "ch.join", 1, "ch", 's', ch), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	assert_int_equal(h_req(c, &res, "ch.join", 1, "ch", 's', ch), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);

	/* Pipelined: all sends go out before any ack is read. */
	for (int i = 0; i < N; i++) {
		proto_out o;
		char body[64], cmid[32];

		snprintf(body, sizeof(body), "message %d", i);
		snprintf(cmid, sizeof(cmid), "m%d", i);
		proto_out_init(&o, 0, 128);
		proto_enc_send(&o, 1000 + (uint64_t)i, ch, body, strlen(body),
			       cmid, 0, NULL, 0);
		assert_int_equal(pc_send(a1, &o), 0);
		proto_out_free(&o);
	}
	/* Every ack, with seqs 1..N in order of the requests */
	for (int i = 0, acks = 0; acks < N; i++) {
		proto_doc d;

		assert_int_equal(h_next(a1, &d, H_TIMEOUT), 1);
		if (!strcmp(h_s(&d.root, "t"), "res")) {
			assert_true(h_ok(&d));
			assert_int_equal(h_u(&d.root, "rid"), 1000 + (uint64_t)acks);
			assert_int_equal(h_u(&d.root, "seq"), (uint64_t)acks + 1);
			acks++;
		}
		proto_doc_free(&d);
		(void)i;
	}
	check_stream(a2, ch, 1, N);
	check_stream(b, ch, 1, N);
	check_stream(c, ch, 1, N);
	pc_close(a1);
	pc_close(a2);
	pc_close(b);
	pc_close(c);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* The default send rate (burst 100) would refuse part of a 200-send burst:
 * lift it here; tests/e2e/test_limits.c checks the limit itself. */
static void test_fanout_one_shard(void **st)
{
	(void)st;
	run("--shards 1 --send-burst 100000 --send-rate 100000");
}

static void test_fanout_two_shards(void **st)
{
	(void)st;
	run("--shards 2 --send-burst 100000 --send-rate 100000");
}

/* The sending connection sees its own events too (in order). */
static void test_sender_connection_gets_its_events(void **st)
{
	hsrv s;
	char ch[65];
	pc_conn *a;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect(&s, "alice", "acme", NULL);
	assert_int_equal(h_create(a, "solo", "private", ch), 0);
	for (int i = 0; i < 5; i++) {
		char cmid[8];

		snprintf(cmid, sizeof(cmid), "c%d", i);
		assert_int_equal(h_send(a, ch, "hi", cmid), i + 1);
	}
	check_stream(a, ch, 1, 5);
	pc_close(a);
	h_stop(&s);
	h_cleanup(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fanout_one_shard),
		cmocka_unit_test(test_fanout_two_shards),
		cmocka_unit_test(test_sender_connection_gets_its_events),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
