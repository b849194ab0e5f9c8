/*
 * "Outcome unknown", as a client lives it. The disk fails a WAL sync
 * (powercut.so with PC_FAIL_WAL: the sync returns EIO, the bytes written
 * before it stay in the file as they stay in a real disk's page cache).
 * Sends in flight are answered UNAVAILABLE, and so is every state change
 * after them; /healthz says 503. After a restart RocksDB replays the WAL
 * bytes whose sync failed, so some sends answered UNAVAILABLE are in the
 * log after all: the contract calls their outcome unknown. A client that
 * retries each of them with the same cmid gets the original seq back with
 * dup=true where it landed, a new seq where it did not, and never a second
 * message: every cmid is in the channel exactly once, seqs 1..N without a
 * gap, and every send acknowledged before the failure is where its ack
 * said.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tests/e2e/harness.h"
#include "tests/powercut/preload.h"

/* Windows of 16 pipelined sends until the failure has answered some
 * (group commit makes the number of syncs per send vary), at most this. */
#define NSENDS 4000
#define FAST "--shards 2 --send-rate 1000000 --send-burst 1000000"

enum { S_NONE, S_ACKED, S_UNAVAILABLE };

struct sent {
	int state;
	uint64_t seq; /* ack's seq */
};

static void set_env(const char *fail_at)
{
	pc_preload();
	setenv("PC_FAIL_WAL", fail_at, 1);
}

static void clear_env(void)
{
	unsetenv("LD_PRELOAD");
	unsetenv("PC_FAIL_WAL");
}

static void cmid_of(int i, char *buf, size_t cap)
{
	snprintf(buf, cap, "out-%d", i);
}

/* Every event of ch: cmid i seen how many times, at which seq. */
static uint64_t scan(pc_conn *c, const char *ch, int *times, uint64_t *at)
{
	uint64_t after = 0;

	memset(times, 0, sizeof(int) * NSENDS);
	for (;;) {
		proto_doc res;
		const msgpack_object *evs;
		bool more = false;

		assert_int_equal(h_req(c, &res, "events", 3, "ch", 's', ch,
				       "after", 'u', after, "limit", 'u',
				       (uint64_t)1000), 1);
		assert_true(h_ok(&res));
		evs = proto_get(&res.root, "evs");
		assert_non_null(evs);
		for (uint32_t k = 0; k < evs->via.array.size; k++) {
			const msgpack_object *e = &evs->via.array.ptr[k];
			uint64_t seq = h_u(e, "seq");
			const char *cm = h_s(e, "cmid");
			int i;

			/* gap-free: each event is the one after the last */
			assert_int_equal(seq, after + 1);
			after = seq;
			if (sscanf(cm, "out-%d", &i) == 1 && i >= 0 &&
			    i < NSENDS) {
				times[i]++;
				at[i] = seq;
			}
		}
		proto_get_bool(&res.root, "more", &more);
		proto_doc_free(&res);
		if (!more)
			return after;
	}
}

static void test_unavailable_then_retry(void **st)
{
	static struct sent s[NSENDS];
	static int times[NSENDS];
	static uint64_t at[NSENDS];
	hsrv srv;
	pc_conn *c;
	char ch[80], cmid[32];
	static uint64_t rids[NSENDS];
	uint64_t last;
	int nsent = 0;
	int acked = 0, unavail = 0, landed = 0, fresh = 0;

	(void)st;
	memset(s, 0, sizeof(s));
	/* The 12th WAL sync fails: after the setup's and a few sends'. */
	set_env("12");
	h_start(&srv, FAST);
	clear_env();
	c = h_connect(&srv, "alice", "acme", NULL);
	assert_non_null(c);
	assert_int_equal(h_create(c, "outcome", "public", ch), 0);

	/* Pipelined in windows of 16, so commits group several sends and
	 * a failed sync answers a whole group. */
	for (int base = 0; base < NSENDS && !unavail; base += 16) {
		int end = base + 16 < NSENDS ? base + 16 : NSENDS;

		nsent = end;

		for (int i = base; i < end; i++) {
			cmid_of(i, cmid, sizeof(cmid));
			rids[i] = h_post(c, "send", 3, "ch", 's', ch, "body",
					 's', cmid, "cmid", 's', cmid);
			assert_true(rids[i] > 0);
		}
		for (int i = base; i < end; i++) {
			proto_doc res;

			assert_int_equal(h_await(c, rids[i], &res), 1);
			if (h_ok(&res)) {
				s[i].state = S_ACKED;
				s[i].seq = h_u(&res.root, "seq");
				acked++;
			} else {
				const char *code = h_code(&res);

				/* the contract: storage failing is
				 * UNAVAILABLE (INTERNAL would do too) */
				if (strcmp(code, "UNAVAILABLE") &&
				    strcmp(code, "INTERNAL"))
					fail_msg("send %d: %s", i, code);
				s[i].state = S_UNAVAILABLE;
				unavail++;
			}
			proto_doc_free(&res);
		}
	}
	print_message("outcome: %d acked, %d answered UNAVAILABLE\n", acked,
		      unavail);
	assert_true(acked > 0);
	assert_true(unavail > 0); /* the failure happened */
	{
		/* reads still work while writes fail */
		proto_doc res;

		assert_int_equal(h_req(c, &res, "history", 2, "ch", 's', ch,
				       "limit", 'u', (uint64_t)5), 1);
		assert_true(h_ok(&res));
		proto_doc_free(&res);
	}
	pc_close(c);

	/* The process is gone (a failed disk is rarely cleanly stopped);
	 * the restart replays what the WAL file holds, synced or not. */
	h_kill9(&srv);
	h_restart(&srv);
	c = h_connect(&srv, "alice", "acme", NULL);
	assert_non_null(c);

	/* Every acked send is where its ack said. Count the UNAVAILABLE
	 * ones that landed anyway. */
	scan(c, ch, times, at);
	for (int i = 0; i < nsent; i++) {
		assert_true(times[i] <= 1);
		if (s[i].state == S_ACKED) {
			assert_int_equal(times[i], 1);
			assert_int_equal(at[i], s[i].seq);
		} else if (times[i]) {
			landed++;
		}
	}

	/* The client retries every send it does not know the outcome of,
	 * with the same cmid: dup with the logged seq where it landed, a
	 * new message where it did not; an acked one resent is a dup too. */
	for (int i = 0; i < nsent; i++) {
		proto_doc res;
		bool dup = false;

		cmid_of(i, cmid, sizeof(cmid));
		assert_int_equal(h_req(c, &res, "send", 3, "ch", 's', ch,
				       "body", 's', cmid, "cmid", 's', cmid), 1);
		assert_true(h_ok(&res));
		proto_get_bool(&res.root, "dup", &dup);
		if (times[i]) {
			assert_true(dup);
			assert_int_equal(h_u(&res.root, "seq"), at[i]);
		} else {
			assert_false(dup);
			fresh++;
		}
		proto_doc_free(&res);
	}
	print_message("outcome: of %d UNAVAILABLE, %d were in the log after "
		      "the restart (retry: dup), %d were not (retry: new)\n",
		      unavail, landed, fresh);
	/* The batch whose sync failed was written first: the unknown
	 * outcome did happen, and the retries above resolved it. */
	assert_true(landed > 0);

	/* Exactly one message per cmid, no gap. */
	last = scan(c, ch, times, at);
	for (int i = 0; i < nsent; i++)
		assert_int_equal(times[i], 1);
	assert_int_equal(last, (uint64_t)nsent);
	pc_close(c);
	assert_int_equal(h_stop(&srv), 0);
	h_cleanup(&srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unavailable_then_retry),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
