/*
 * Presence, as a watcher sees it: presence.watch answers with the current
 * states and replaces the watched set; a user is online while a device
 * beats, away when all its devices fall silent, back online on the next
 * heartbeat, dnd / away / invisible as it chooses (invisible shows as
 * offline), offline when its last device leaves (told after the grace
 * window, so a fast reconnect shows nothing), aggregated over devices;
 * only watchers are told; workspaces do not see each other; the chosen
 * status survives kill -9. Timings are shortened with the server's flags.
 */
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

/* away after 800 ms of silence; offline told 500 ms after the last device
 * leaves; other changes at once */
#define PFLAGS "--shards 2 --away-ms 800 --presence-grace-ms 500 " \
	       "--presence-coalesce-ms 0"

/* watch users (NULL-terminated) and return the answer's presence map */
static void watch(pc_conn *c, const char **users, proto_doc *res)
{
	assert_int_equal(h_req(c, res, "presence.watch", 1, "users", 'S',
			       users), 1);
	if (!h_ok(res))
		fail_msg("presence.watch refused: %s", h_code(res));
}

static const msgpack_object *entry(const proto_doc *res, const char *user)
{
	const msgpack_object *p = proto_get(&res->root, "presence");

	assert_non_null(p);
	assert_int_equal(p->type, MSGPACK_OBJECT_MAP);
	return proto_get(p, user);
}

static void assert_status(const proto_doc *res, const char *user,
			  const char *status)
{
	const msgpack_object *e = entry(res, user);

	if (!e)
		fail_msg("no presence for %s", user);
	assert_string_equal(h_s(e, "status"), status);
}

/* The next presence frame for user within ms: its status (static), or
 * NULL if none came. Other frames are skipped. */
static const char *next_presence(pc_conn *c, const char *user, int ms,
				 uint64_t *since)
{
	static char st[32];
	uint64_t end = now_ms() + (uint64_t)ms;

	for (;;) {
		proto_doc d;
		uint64_t now = now_ms();

		if (now >= end || h_expect(c, "presence", &d,
					   (int)(end - now)) != 1)
			return NULL;
		if (!strcmp(h_s(&d.root, "user"), user)) {
			snprintf(st, sizeof(st), "%s", h_s(&d.root, "status"));
			if (since)
				*since = h_u(&d.root, "since");
			proto_doc_free(&d);
			return st;
		}
		proto_doc_free(&d);
	}
}

static void expect_presence(pc_conn *c, const char *user, const char *status,
			    int ms)
{
	const char *got = next_presence(c, user, ms, NULL);

	if (!got)
		fail_msg("no presence frame for %s (want %s) within %d ms",
			 user, status, ms);
	assert_string_equal(got, status);
}

static void set_status(pc_conn *c, const char *status)
{
	proto_doc res;

	assert_int_equal(h_req(c, &res, "presence.set", 1, "status", 's',
			       status), 1);
	if (!h_ok(&res))
		fail_msg("presence.set %s refused: %s", status, h_code(&res));
	proto_doc_free(&res);
}

/* Several presence.set on the wire before any answer: they reach bob's
 * presence actor within a few ms of each other, however long each answer
 * takes to come back. */
static void set_statuses(pc_conn *c, const char *const *status)
{
	uint64_t rid[8];
	unsigned n = 0;
	proto_doc res;

	for (; status[n]; n++) {
		assert_true(n < 8);
		rid[n] = h_post(c, "presence.set", 1, "status", 's', status[n]);
	}
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(h_await(c, rid[i], &res), 1);
		if (!h_ok(&res))
			fail_msg("presence.set %s refused: %s", status[i],
				 h_code(&res));
		proto_doc_free(&res);
	}
}

/* The wall clock in ms, as the server stamps `since` */
static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void hb(pc_conn *c)
{
	proto_doc res;

	assert_int_equal(h_req(c, &res, "hb", 0), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_watch_answers_current_states(void **state)
{
	hsrv s;
	pc_conn *w, *bob;
	proto_doc res;
	const char *users[] = { "bob", "carol", "bob", NULL };
	uint64_t t0 = (uint64_t)time(NULL) * 1000;

	(void)state;
	h_start(&s, "--shards 2 --presence-coalesce-ms 0");
	bob = h_connect_ok(&s, "bob", "acme");
	w = h_connect_ok(&s, "alice", "acme");
	/* the online status is told at once; the watch sees it */
	usleep(100 * 1000);
	watch(w, users, &res);
	assert_status(&res, "bob", "online");
	assert_true(h_u(entry(&res, "bob"), "since") >= t0 - 1000);
	/* never seen: offline, since 0; duplicates answered once */
	assert_status(&res, "carol", "offline");
	assert_int_equal(h_u(entry(&res, "carol"), "since"), 0);
	assert_int_equal(proto_get(&res.root, "presence")->via.map.size, 2);
	proto_doc_free(&res);
	pc_close(bob);
	pc_close(w);
	h_finish(&s);
}

static void test_away_on_silence_and_back(void **state)
{
	hsrv s;
	pc_conn *w, *bob1, *bob2;
	proto_doc res;
	const char *users[] = { "bob", NULL };
	uint64_t t;

	(void)state;
	/* away after 2 s here: heartbeats 200 ms apart keep bob online even
	 * when a slow machine stalls one of them by a second */
	h_start(&s, "--shards 2 --away-ms 2000 --presence-grace-ms 500 "
		    "--presence-coalesce-ms 0");
	bob1 = h_connect_ok(&s, "bob", "acme");
	bob2 = h_connect_ok(&s, "bob", "acme");
	w = h_connect_ok(&s, "alice", "acme");
	watch(w, users, &res);
	proto_doc_free(&res);
	/* heartbeats keep bob online past the away window: a user is as
	 * active as its most active device (bob2 stays silent) */
	t = now_ms();
	while (now_ms() - t < 3000) {
		hb(bob1);
		usleep(200 * 1000);
	}
	assert_null(next_presence(w, "bob", 10, NULL));
	/* silence on every device: away (2 s + a tick) */
	expect_presence(w, "bob", "away", 4000);
	/* one heartbeat, from either device: online again, at once */
	t = now_ms();
	hb(bob2);
	expect_presence(w, "bob", "online", 1000);
	assert_true(now_ms() - t < 1000);
	/* a chosen dnd turns away on silence too, and back to dnd (not
	 * online) on the next heartbeat */
	hb(bob1);
	set_status(bob1, "dnd");
	expect_presence(w, "bob", "dnd", 1000);
	expect_presence(w, "bob", "away", 4000);
	hb(bob1);
	expect_presence(w, "bob", "dnd", 1000);
	pc_close(bob1);
	pc_close(bob2);
	pc_close(w);
	h_finish(&s);
}

static void test_chosen_statuses(void **state)
{
	hsrv s;
	pc_conn *w, *bob;
	proto_doc res;
	const char *users[] = { "bob", NULL };

	(void)state;
	h_start(&s, "--shards 2 --presence-coalesce-ms 0");
	bob = h_connect_ok(&s, "bob", "acme");
	w = h_connect_ok(&s, "alice", "acme");
	watch(w, users, &res);
	proto_doc_free(&res);
	set_status(bob, "dnd");
	expect_presence(w, "bob", "dnd", 2000);
	set_status(bob, "away");
	expect_presence(w, "bob", "away", 2000);
	set_status(bob, "invisible");
	expect_presence(w, "bob", "offline", 2000);
	/* setting what is already shown tells nobody */
	set_status(bob, "invisible");
	assert_null(next_presence(w, "bob", 300, NULL));
	set_status(bob, "online");
	expect_presence(w, "bob", "online", 2000);

	/* bad statuses: offline cannot be chosen */
	assert_int_equal(h_req(bob, &res, "presence.set", 1, "status", 's',
			       "offline"), 1);
	assert_false(h_ok(&res));
	assert_string_equal(h_code(&res), "BAD_REQUEST");
	proto_doc_free(&res);
	assert_int_equal(h_req(bob, &res, "presence.set", 1, "status", 'u',
			       (uint64_t)1), 1);
	assert_string_equal(h_code(&res), "BAD_REQUEST");
	proto_doc_free(&res);
	assert_int_equal(h_req(bob, &res, "presence.set", 0), 1);
	assert_string_equal(h_code(&res), "BAD_REQUEST");
	proto_doc_free(&res);
	pc_close(bob);
	pc_close(w);
	h_finish(&s);
}

static void test_offline_after_last_device(void **state)
{
	hsrv s;
	pc_conn *w, *bob1, *bob2;
	proto_doc res;
	const char *users[] = { "bob", NULL };
	uint64_t t, since = 0, wall;

	(void)state;
	h_start(&s, "--shards 2 --away-ms 5000 --presence-grace-ms 500 "
		    "--presence-coalesce-ms 0");
	bob1 = h_connect_ok(&s, "bob", "acme");
	bob2 = h_connect_ok(&s, "bob", "acme");
	w = h_connect_ok(&s, "alice", "acme");
	watch(w, users, &res);
	assert_status(&res, "bob", "online");
	proto_doc_free(&res);
	/* one of two devices leaves: still online, nothing told */
	pc_close(bob1);
	assert_null(next_presence(w, "bob", 900, NULL));
	/* the last one leaves: offline, after the grace window, within 2 s */
	t = now_ms();
	wall = wall_ms();
	pc_close(bob2);
	assert_string_equal(next_presence(w, "bob", 2000, &since), "offline");
	assert_true(now_ms() - t >= 400);
	assert_true(now_ms() - t < 2000);
	/* since: when it left, not when it was told (500 ms later) */
	assert_true(since + 50 >= wall);
	assert_true(since + 400 <= wall_ms());
	pc_close(w);
	h_finish(&s);
}

static void test_fast_reconnect_does_not_flap(void **state)
{
	hsrv s;
	pc_conn *w, *bob;
	proto_doc res;
	const char *users[] = { "bob", NULL };

	(void)state;
	h_start(&s, "--shards 2 --presence-grace-ms 1500 "
		    "--presence-coalesce-ms 0");
	bob = h_connect_ok(&s, "bob", "acme");
	w = h_connect_ok(&s, "alice", "acme");
	watch(w, users, &res);
	proto_doc_free(&res);
	pc_close(bob);
	usleep(100 * 1000);
	bob = h_connect_ok(&s, "bob", "acme");
	/* no offline, no online: nothing at all */
	assert_null(next_presence(w, "bob", 2500, NULL));
	pc_close(bob);
	expect_presence(w, "bob", "offline", 3000);
	pc_close(w);
	h_finish(&s);
}

static void test_only_watchers_are_told(void **state)
{
	hsrv s;
	pc_conn *w, *other, *bob;
	proto_doc res;
	char ch[65];
	const char *users[] = { "bob", NULL };
	const char *none[] = { NULL };
	const char *carol[] = { "carol", NULL };

	(void)state;
	h_start(&s, "--shards 2 --presence-coalesce-ms 0");
	bob = h_connect_ok(&s, "bob", "acme");
	w = h_connect_ok(&s, "alice", "acme");
	other = h_connect_ok(&s, "dave", "acme");
	/* dave shares a channel with bob but does not watch him */
	assert_int_equal(h_create(bob, "general", "public", ch), 0);
	assert_int_equal(h_req(other, &res, "ch.join", 1, "ch", 's', ch), 1);
	proto_doc_free(&res);
	watch(w, users, &res);
	proto_doc_free(&res);
	set_status(bob, "dnd");
	expect_presence(w, "bob", "dnd", 2000);
	assert_null(next_presence(other, "bob", 500, NULL));

	/* a new watch replaces the set: bob's changes stop */
	watch(w, carol, &res);
	assert_status(&res, "carol", "offline");
	assert_null(entry(&res, "bob"));
	proto_doc_free(&res);
	set_status(bob, "online");
	assert_null(next_presence(w, "bob", 500, NULL));
	/* an empty list clears it */
	watch(w, none, &res);
	assert_int_equal(proto_get(&res.root, "presence")->via.map.size, 0);
	proto_doc_free(&res);
	pc_close(bob);
	pc_close(other);
	pc_close(w);
	h_finish(&s);
}

static void test_watch_refusals(void **state)
{
	hsrv s;
	pc_conn *w;
	proto_doc res;
	const char **many = calloc(502, sizeof(*many));
	char (*ids)[16] = calloc(501, 16);
	const char *bad[] = { "ok", "not valid!", NULL };

	(void)state;
	h_start(&s, "--shards 2");
	w = h_connect_ok(&s, "alice", "acme");
	for (int i = 0; i < 501; i++) {
		snprintf(ids[i], 16, "u%d", i);
		many[i] = ids[i];
	}
	assert_int_equal(h_req(w, &res, "presence.watch", 1, "users", 'S',
			       many), 1);
	assert_string_equal(h_code(&res), "BAD_REQUEST");
	proto_doc_free(&res);
	many[500] = NULL; /* exactly 500 is allowed */
	watch(w, many, &res);
	assert_int_equal(proto_get(&res.root, "presence")->via.map.size, 500);
	proto_doc_free(&res);
	assert_int_equal(h_req(w, &res, "presence.watch", 1, "users", 'S',
			       bad), 1);
	assert_string_equal(h_code(&res), "BAD_REQUEST");
	proto_doc_free(&res);
	assert_int_equal(h_req(w, &res, "presence.watch", 1, "users", 's',
			       "bob"), 1);
	assert_string_equal(h_code(&res), "BAD_REQUEST");
	proto_doc_free(&res);
	/* the connection keeps working */
	assert_int_equal(h_req(w, &res, "hb", 0), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	pc_close(w);
	h_finish(&s);
	free(many);
	free(ids);
}

static void test_workspaces_are_apart(void **state)
{
	hsrv s;
	pc_conn *w, *bob;
	proto_doc res;
	const char *users[] = { "bob", NULL };

	(void)state;
	h_start(&s, "--shards 2 --presence-coalesce-ms 0");
	bob = h_connect_ok(&s, "bob", "acme");
	w = h_connect_ok(&s, "alice", "globex");
	/* globex's bob is not acme's bob */
	watch(w, users, &res);
	assert_status(&res, "bob", "offline");
	proto_doc_free(&res);
	set_status(bob, "dnd");
	assert_null(next_presence(w, "bob", 500, NULL));
	pc_close(bob);
	pc_close(w);
	h_finish(&s);
}

static void test_invisible_survives_kill9(void **state)
{
	hsrv s;
	pc_conn *w, *bob;
	proto_doc res;
	const char *users[] = { "bob", NULL };

	(void)state;
	/* the default away window: a slow (sanitized) run must not turn
	 * bob away before the last check */
	h_start(&s, "--shards 2 --presence-grace-ms 500 "
		    "--presence-coalesce-ms 0");
	bob = h_connect_ok(&s, "bob", "acme");
	set_status(bob, "invisible"); /* acknowledged: durable */
	h_kill9(&s);
	pc_close(bob);
	h_restart(&s);
	bob = h_connect_ok(&s, "bob", "acme");
	w = h_connect_ok(&s, "alice", "acme");
	usleep(200 * 1000);
	watch(w, users, &res);
	assert_status(&res, "bob", "offline");
	proto_doc_free(&res);
	assert_null(next_presence(w, "bob", 500, NULL));
	set_status(bob, "online");
	expect_presence(w, "bob", "online", 2000);
	pc_close(bob);
	pc_close(w);
	h_finish(&s);
}

static void test_watcher_leaving_is_forgotten(void **state)
{
	hsrv s;
	pc_conn *w, *bob;
	proto_doc res;
	const char *users[] = { "bob", NULL };

	(void)state;
	h_start(&s, "--shards 2 --presence-coalesce-ms 0");
	bob = h_connect_ok(&s, "bob", "acme");
	for (int i = 0; i < 20; i++) {
		w = h_connect_ok(&s, "alice", "acme");
		watch(w, users, &res);
		proto_doc_free(&res);
		pc_close(w);
	}
	/* bob's changes go nowhere now, and nothing breaks */
	set_status(bob, "dnd");
	set_status(bob, "online");
	w = h_connect_ok(&s, "alice", "acme");
	watch(w, users, &res);
	assert_status(&res, "bob", "online");
	proto_doc_free(&res);
	set_status(bob, "dnd");
	expect_presence(w, "bob", "dnd", 2000);
	pc_close(bob);
	pc_close(w);
	h_finish(&s);
}

/* With the server's default timings: a user who arrives is told online
 * within 2 s; one who drops and comes back within 1 s shows nothing; the
 * last device leaving is told offline after the grace window (1.8 s) and
 * by about 2 s (the bound allows a sanitized run's scheduling). */
static void test_defaults_arrival_and_leaving(void **state)
{
	hsrv s;
	pc_conn *w, *bob;
	proto_doc res;
	const char *users[] = { "bob", NULL };
	uint64_t t;

	(void)state;
	h_start(&s, "--shards 2");
	w = h_connect_ok(&s, "alice", "acme");
	watch(w, users, &res);
	assert_status(&res, "bob", "offline");
	proto_doc_free(&res);
	t = now_ms();
	bob = h_connect_ok(&s, "bob", "acme");
	expect_presence(w, "bob", "online", 2000);
	assert_true(now_ms() - t < 2000);
	pc_close(bob);
	usleep(300 * 1000);
	bob = h_connect_ok(&s, "bob", "acme");
	assert_null(next_presence(w, "bob", 2500, NULL));
	t = now_ms();
	pc_close(bob);
	expect_presence(w, "bob", "offline", 4000);
	assert_true(now_ms() - t >= 1700);
	assert_true(now_ms() - t < 3000);
	pc_close(w);
	h_finish(&s);
}

/* Changes within the coalescing window are told as one: a status set and
 * set back before the window ends is never told; one that stays is told
 * once, no earlier than the window. */
static void test_changes_coalesce(void **state)
{
	hsrv s;
	pc_conn *w, *bob;
	proto_doc res;
	const char *users[] = { "bob", NULL };
	uint64_t t;

	(void)state;
	h_start(&s, "--shards 2 --presence-coalesce-ms 1000 "
		    "--away-ms 60000");
	bob = h_connect_ok(&s, "bob", "acme");
	w = h_connect_ok(&s, "alice", "acme");
	/* wait until bob's arrival is told and done (1 s after it): a watch
	 * answers what watchers were told */
	{
		uint64_t dl = now_ms() + 5000;

		for (;;) {
			usleep(200 * 1000);
			watch(w, users, &res);
			if (!strcmp(h_s(entry(&res, "bob"), "status"),
				    "online"))
				break;
			proto_doc_free(&res);
			if (now_ms() > dl)
				fail_msg("bob's arrival was never told");
		}
		proto_doc_free(&res);
		h_drain(w, 0); /* an "online" told to an earlier watch */
	}
	set_statuses(bob, (const char *[]){ "dnd", "online", NULL });
	assert_null(next_presence(w, "bob", 1800, NULL));
	t = now_ms();
	set_statuses(bob, (const char *[]){ "dnd", "away", "dnd", NULL });
	expect_presence(w, "bob", "dnd", 3000);
	assert_true(now_ms() - t >= 200);
	assert_null(next_presence(w, "bob", 1500, NULL));
	pc_close(bob);
	pc_close(w);
	h_finish(&s);
}

/* kill -9: a chosen dnd is kept; the users whose connections died with
 * the server are offline to a watcher after the restart, until they come
 * back, which is told. */
static void test_dnd_and_offline_after_kill9(void **state)
{
	hsrv s;
	pc_conn *w, *bob, *carol;
	proto_doc res;
	const char *users[] = { "bob", "carol", NULL };

	(void)state;
	h_start(&s, "--shards 2 --presence-grace-ms 500 "
		    "--presence-coalesce-ms 0");
	bob = h_connect_ok(&s, "bob", "acme");
	carol = h_connect_ok(&s, "carol", "acme");
	set_status(bob, "dnd");
	h_kill9(&s);
	pc_close(bob);
	pc_close(carol);
	h_restart(&s);
	w = h_connect_ok(&s, "alice", "acme");
	watch(w, users, &res);
	assert_status(&res, "bob", "offline");
	assert_status(&res, "carol", "offline");
	proto_doc_free(&res);
	bob = h_connect_ok(&s, "bob", "acme");
	expect_presence(w, "bob", "dnd", 2000);
	carol = h_connect_ok(&s, "carol", "acme");
	expect_presence(w, "carol", "online", 2000);
	pc_close(bob);
	pc_close(carol);
	pc_close(w);
	h_finish(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_watch_answers_current_states),
		cmocka_unit_test(test_away_on_silence_and_back),
		cmocka_unit_test(test_chosen_statuses),
		cmocka_unit_test(test_offline_after_last_device),
		cmocka_unit_test(test_fast_reconnect_does_not_flap),
		cmocka_unit_test(test_only_watchers_are_told),
		cmocka_unit_test(test_watch_refusals),
		cmocka_unit_test(test_workspaces_are_apart),
		cmocka_unit_test(test_invisible_survives_kill9),
		cmocka_unit_test(test_watcher_leaving_is_forgotten),
		cmocka_unit_test(test_defaults_arrival_and_leaving),
		cmocka_unit_test(test_changes_coalesce),
		cmocka_unit_test(test_dnd_and_offline_after_kill9),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
