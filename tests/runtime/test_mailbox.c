/*
 * Mailbox tests: many producers, one consumer, checked for loss,
 * duplication and per-producer order. Run under TSan by scripts/test.sh
 * (build-tsan, label "runtime"), which checks the fences as well.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "runtime/shard.h"

#define PRODUCERS 4 /* 0: external thread, 1..3: shards */
#define PER_PRODUCER 200000
#define SHARDS 4

struct tmsg {
	rt_msg h;
	uint32_t producer;
	uint32_t n;
};

static uint32_t next_expected[PRODUCERS + 1];

static uint64_t received;
static int order_errors;

static void on_msg(rt_shard *s, rt_msg *m)
{
	struct tmsg *t = (struct tmsg *)m;

	(void)s;
	if (t->n != next_expected[t->producer])
		order_errors++;
	next_expected[t->producer] = t->n + 1;
	received++;
	free(t);
}

static rt_hooks hooks = { .on_msg = on_msg };
static rt_config cfg = { .hooks = &hooks };

static void setup_shards(unsigned n)
{
	rt__nshards = n;
	rt__shards = calloc(n, sizeof(*rt__shards));
	for (unsigned i = 0; i < n; i++) {
		rt__shards[i].id = i;
		rt__shards[i].cfg = &cfg;
	}
	rt__mailbox_init(n);
	memset(next_expected, 0, sizeof(next_expected));
	received = 0;
	order_errors = 0;
}

static int teardown(void **st)
{
	(void)st;
	rt__mailbox_fini();
	free(rt__shards);
	rt__shards = NULL;
	return 0;
}

/* Producer 0 is not a shard (like a storage sync thread): it uses the
 * shared ring and waits for room. Producers 1..3 act as shards 1..3: each
 * has its own ring into shard 0 and parks overflow on its own list. */
static void *producer(void *arg)
{
	uint32_t id = (uint32_t)(uintptr_t)arg;

	if (id)
		rt__set_self(&rt__shards[id]);
	for (uint32_t i = 0; i < PER_PRODUCER; i++) {
		struct tmsg *t = malloc(sizeof(*t));

		t->producer = id;
		t->n = i;
		rt_post(0, &t->h);
		if (id && (i & 255) == 0)
			rt__mailbox_flush_overflow(&rt__shards[id]);
	}
	while (id && rt__shards[id].has_overflow)
		rt__mailbox_flush_overflow(&rt__shards[id]);
	return NULL;
}

static volatile int producers_done;

static void drain_until(uint64_t want)
{
	while (received < want)
		rt__mailbox_drain(&rt__shards[0], 4096);
}

static void test_producers_lose_nothing_and_keep_order(void **st)
{
	pthread_t th[PRODUCERS];

	(void)st;
	setup_shards(SHARDS);
	for (uintptr_t i = 0; i < PRODUCERS; i++)
		pthread_create(&th[i], NULL, producer, (void *)i);
	drain_until((uint64_t)PRODUCERS * PER_PRODUCER);
	for (int i = 0; i < PRODUCERS; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(received, (uint64_t)PRODUCERS * PER_PRODUCER);
	assert_int_equal(order_errors, 0);
	assert_int_equal(rt__mailbox_drain(&rt__shards[0], 10), 0);
}

/* Shard 1 posts to shard 0 far faster than shard 0 drains: its ring (4 Ki
 * entries) fills, later messages park on shard 1's overflow list, and
 * flushing must keep them in order behind the ring's. */
static void *shard_producer(void *arg)
{
	(void)arg;
	rt__set_self(&rt__shards[1]);
	for (uint32_t i = 0; i < PER_PRODUCER; i++) {
		struct tmsg *t = malloc(sizeof(*t));

		t->producer = PRODUCERS;
		t->n = i;
		rt_post(0, &t->h);
		if ((i & 1023) == 0)
			rt__mailbox_flush_overflow(&rt__shards[1]);
	}
	while (rt__shards[1].has_overflow)
		rt__mailbox_flush_overflow(&rt__shards[1]);
	__atomic_store_n(&producers_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void test_shard_overflow_keeps_order(void **st)
{
	pthread_t th;

	(void)st;
	setup_shards(2);
	producers_done = 0;
	pthread_create(&th, NULL, shard_producer, NULL);
	/* Let the producer overrun the ring before draining. */
	while (rt_mailbox_depth(0) < (1u << 12) - 1 &&
	       !__atomic_load_n(&producers_done, __ATOMIC_ACQUIRE))
		;
	drain_until(PER_PRODUCER);
	pthread_join(th, NULL);
	assert_int_equal(received, PER_PRODUCER);
	assert_int_equal(order_errors, 0);
}

/* The consumer's arm/disarm handshake: after arming an empty mailbox, a
 * post must disarm it (so the poster wakes the shard). */
static void test_arm_then_post_disarms(void **st)
{
	struct tmsg *t = malloc(sizeof(*t));

	(void)st;
	setup_shards(1);
	assert_true(rt__mailbox_arm(&rt__shards[0]));
	t->producer = 0;
	t->n = 0;
	rt_post(0, &t->h);
	/* armed again with something queued: must not sleep */
	assert_false(rt__mailbox_arm(&rt__shards[0]));
	assert_int_equal(rt__mailbox_drain(&rt__shards[0], 10), 1);
	assert_true(rt__mailbox_arm(&rt__shards[0]));
}

static void post_from(unsigned src, unsigned dst, uint32_t count)
{
	rt__set_self(&rt__shards[src]);
	for (uint32_t i = 0; i < count; i++) {
		struct tmsg *t = malloc(sizeof(*t));

		t->producer = src;
		t->n = i;
		rt_post(dst, &t->h);
	}
	rt__set_self(NULL);
}

/* What one producer's burst leaves of the budget after the round-robin
 * shares goes to it in the same drain: 3,000 messages from one shard,
 * budget 4,096, come out in one call (the first pass alone gave it
 * 4096 / 3 + 1 = 1,366). Several sources still share a small budget. */
static void test_drain_uses_leftover_budget(void **st)
{
	(void)st;
	setup_shards(2);
	post_from(1, 0, 3000);
	assert_int_equal(rt__mailbox_drain(&rt__shards[0], 4096), 3000);
	assert_int_equal(received, 3000);
	assert_int_equal(rt_mailbox_depth(0), 0);

	/* Two sources, 1,000 each, budget 900: both get turns, 900 taken. */
	memset(next_expected, 0, sizeof(next_expected));
	post_from(1, 0, 1000);
	post_from(0, 0, 1000);
	assert_int_equal(rt__mailbox_drain(&rt__shards[0], 900), 900);
	assert_true(next_expected[0] > 0 && next_expected[1] > 0);
	assert_int_equal(rt_mailbox_depth(0), 1100);
	while (rt_mailbox_depth(0))
		rt__mailbox_drain(&rt__shards[0], 4096);
	assert_int_equal(order_errors, 0);
}

/* A sleeping (armed) consumer is woken once by a burst, also when the
 * burst overflows its ring into the producer's overflow list: 10,000
 * posts, 1 wake-up (every parked message used to wake it again). The
 * parked messages arrive, in order, once the producer flushes. */
static void test_overflow_wakes_once(void **st)
{
	(void)st;
	setup_shards(2);
	assert_true(rt__mailbox_arm(&rt__shards[0]));
	post_from(1, 0, 10000);
	assert_true(rt__shards[1].has_overflow);
	assert_int_equal(rt__mailbox_wakeups(0), 1);
	while (received < 10000) {
		rt__mailbox_drain(&rt__shards[0], 4096);
		rt__set_self(&rt__shards[1]);
		rt__mailbox_flush_overflow(&rt__shards[1]);
		rt__set_self(NULL);
	}
	assert_int_equal(order_errors, 0);
	assert_false(rt__shards[1].has_overflow);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_producers_lose_nothing_and_keep_order, teardown),
		cmocka_unit_test_teardown(test_shard_overflow_keeps_order, teardown),
		cmocka_unit_test_teardown(test_arm_then_post_disarms, teardown),
		cmocka_unit_test_teardown(test_drain_uses_leftover_budget, teardown),
		cmocka_unit_test_teardown(test_overflow_wakes_once, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
