/*
 * Channels, as their users see them: ch.create (the creator's devices all
 * learn of the new channel; bad names and kinds are refused), ch.join of a
 * public channel (the joiner's other devices and the members online are
 * told, events follow, joining twice changes nothing), what non-members may
 * not do (a private channel or DM does not exist for them: NOT_FOUND for
 * joining, reading, writing, inviting; a public one they may read but
 * not write to nor invite to: FORBIDDEN), ch.invite, ch.leave (the leaver hears no more), workspace
 * isolation, ch.list, ch.members paging, and DMs: dm.open gives one
 * channel per set of members whoever opens it, announces it to the others,
 * holds at most 250 members, is scoped to its workspace and cannot be
 * invited to or left.
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

#define QUIET_MS 500 /* how long "nothing arrives" is watched */

/* ---- helpers ------------------------------------------------------------- */

/* Copy of the string at key (h_s() has one static buffer). */
static void str_at(const msgpack_object *m, const char *key, char *out)
{
	snprintf(out, 65, "%.64s", h_s(m, key));
}

/* The map under key in m, as an object (NIL when absent). */
static msgpack_object map_at(const msgpack_object *m, const char *key)
{
	const msgpack_object_map *mp;
	msgpack_object o = { .type = MSGPACK_OBJECT_NIL };

	if (proto_get_map(m, key, &mp) == 0) {
		o.type = MSGPACK_OBJECT_MAP;
		o.via.map = *mp;
	}
	return o;
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

/* The next member frame on c is {ch, user, action}. */
static void expect_member(pc_conn *c, const char *ch, const char *user,
			  const char *action)
{
	proto_doc d;

	assert_int_equal(h_expect(c, "member", &d, H_TIMEOUT), 1);
	assert_string_equal(h_s(&d.root, "ch"), ch);
	assert_string_equal(h_s(&d.root, "user"), user);
	assert_string_equal(h_s(&d.root, "action"), action);
	proto_doc_free(&d);
}

/* The next ev frame on c is msg seq of ch, from user. */
static void expect_ev(pc_conn *c, const char *ch, uint64_t seq,
		      const char *from)
{
	proto_doc d;

	assert_int_equal(h_expect(c, "ev", &d, H_TIMEOUT), 1);
	assert_string_equal(h_s(&d.root, "ch"), ch);
	assert_int_equal(h_u(&d.root, "seq"), seq);
	assert_string_equal(h_s(&d.root, "k"), "msg");
	assert_string_equal(h_s(&d.root, "from"), from);
	proto_doc_free(&d);
}

/* dm.open with users (NULL-terminated); the id into out, checks kind. */
static void dm_open(pc_conn *c, const char **users, char *out)
{
	proto_doc res;
	msgpack_object ch;

	h_req_ok(c, &res, "dm.open", 1, "users", 'S', users);
	ch = map_at(&res.root, "ch");
	assert_int_equal(ch.type, MSGPACK_OBJECT_MAP);
	str_at(&ch, "id", out);
	assert_string_equal(h_s(&ch, "kind"), "dm");
	proto_doc_free(&res);
}

static void send_ok(pc_conn *c, const char *ch, uint64_t want_seq)
{
	static unsigned n;
	char cmid[32];

	snprintf(cmid, sizeof(cmid), "cm-%u", n++);
	assert_int_equal(h_send(c, ch, "hello there", cmid), (int64_t)want_seq);
}

/* Every member of ch, paging by limit; checks sorting and the more flag.
 * Returns how many; their ids in out[] (cap entries of 65). */
static unsigned all_members(pc_conn *c, const char *ch, unsigned limit,
			    char (*out)[65], unsigned cap)
{
	char after[65] = "";
	unsigned n = 0;

	for (;;) {
		proto_doc res;
		const msgpack_object_array *a;
		bool more;

		if (after[0])
			h_req_ok(c, &res, "ch.members", 3, "ch", 's', ch,
				 "limit", 'u', (uint64_t)limit, "after", 's',
				 after);
		else
			h_req_ok(c, &res, "ch.members", 2, "ch", 's', ch,
				 "limit", 'u', (uint64_t)limit);
		a = arr_at(&res.root, "members");
		more = bool_at(&res.root, "more");
		assert_true(a->size <= limit);
		for (uint32_t i = 0; i < a->size; i++) {
			const msgpack_object *o = &a->ptr[i];

			assert_int_equal(o->type, MSGPACK_OBJECT_STR);
			assert_true(o->via.str.size < 65);
			assert_true(n < cap);
			memcpy(out[n], o->via.str.ptr, o->via.str.size);
			out[n][o->via.str.size] = 0;
			if (n)
				assert_true(strcmp(out[n - 1], out[n]) < 0);
			n++;
		}
		/* more only on a full page */
		if (more)
			assert_int_equal(a->size, limit);
		proto_doc_free(&res);
		if (!more)
			return n;
		snprintf(after, sizeof(after), "%s", out[n - 1]);
	}
}

/* The entry for id in a "channels" list; NULL if absent. */
static const msgpack_object *find_ch(const proto_doc *res, const char *id)
{
	const msgpack_object_array *a = arr_at(&res->root, "channels");

	for (uint32_t i = 0; i < a->size; i++)
		if (!strcmp(h_s(&a->ptr[i], "id"), id))
			return &a->ptr[i];
	return NULL;
}

static void check_entry(const msgpack_object *e, const char *name,
			const char *kind, uint64_t last_seq, uint64_t read_seq,
			uint64_t unread, uint64_t mentions)
{
	static const char *const keys[] = { "id", "name", "kind", "last_seq",
					    "read_seq", "unread", "mentions" };

	assert_non_null(e);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (!proto_get(e, keys[i]))
			fail_msg("channel entry without %s", keys[i]);
	assert_string_equal(h_s(e, "name"), name);
	assert_string_equal(h_s(e, "kind"), kind);
	assert_int_equal(h_u(e, "last_seq"), last_seq);
	assert_int_equal(h_u(e, "read_seq"), read_seq);
	assert_int_equal(h_u(e, "unread"), unread);
	assert_int_equal(h_u(e, "mentions"), mentions);
}

/* ---- ch.create ----------------------------------------------------------- */

static void test_create_announces_to_every_device(void **st)
{
	hsrv s;
	pc_conn *a1, *a2;
	char pub[65], priv[65];

	(void)st;
	h_start(&s, "--shards 2");
	a1 = h_connect_ok(&s, "alice", "acme");
	a2 = h_connect_ok(&s, "alice", "acme");

	h_create_ok(a1, "general", "public", pub);
	assert_int_equal(pub[0], 'C');
	expect_member(a1, pub, "alice", "join");
	expect_member(a2, pub, "alice", "join");

	h_create_ok(a2, "design", "private", priv);
	assert_int_equal(priv[0], 'C');
	assert_string_not_equal(pub, priv);
	expect_member(a1, priv, "alice", "join");
	expect_member(a2, priv, "alice", "join");

	/* Both devices now get the new channels' events. */
	send_ok(a1, priv, 1);
	expect_ev(a1, priv, 1, "alice");
	expect_ev(a2, priv, 1, "alice");
	send_ok(a2, pub, 1);
	expect_ev(a1, pub, 1, "alice");
	expect_ev(a2, pub, 1, "alice");

	pc_close(a1);
	pc_close(a2);
	h_finish(&s);
}

static void test_create_refuses_bad_name_and_kind(void **st)
{
	hsrv s;
	pc_conn *a;
	char n80[81], n81[82], id[65];
	proto_doc res;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "alice", "acme");
	memset(n80, 'x', 80);
	n80[80] = 0;
	memset(n81, 'y', 81);
	n81[81] = 0;

	h_req_fail("BAD_REQUEST", a, "ch.create", 2, "name", 's', "", "kind",
		   's', "public");
	h_req_fail("BAD_REQUEST", a, "ch.create", 2, "name", 's', n81, "kind",
		   's', "public");
	h_req_fail("BAD_REQUEST", a, "ch.create", 2, "name", 's', n81, "kind",
		   's', "private");
	h_req_fail("BAD_REQUEST", a, "ch.create", 2, "name", 's', "ok", "kind",
		   's', "secret");
	h_req_fail("BAD_REQUEST", a, "ch.create", 2, "name", 's', "ok", "kind",
		   's', "dm");
	h_req_fail("BAD_REQUEST", a, "ch.create", 1, "name", 's', "ok");
	h_req_fail("BAD_REQUEST", a, "ch.create", 1, "kind", 's', "public");
	h_req_fail("BAD_REQUEST", a, "ch.create", 2, "name", 'u', (uint64_t)7,
		   "kind", 's', "public");

	/* Bytes count, not characters: 27 euro signs are 81 bytes */
	{
		char e81[82] = "", e80[81] = "ab";

		for (int i = 0; i < 27; i++)
			strcat(e81, "\xe2\x82\xac");
		for (int i = 0; i < 26; i++)
			strcat(e80, "\xe2\x82\xac");
		assert_int_equal(strlen(e81), 81);
		assert_int_equal(strlen(e80), 80);
		h_req_fail("BAD_REQUEST", a, "ch.create", 2, "name", 's', e81,
			   "kind", 's', "public");
		h_create_ok(a, e80, "private", id);
		expect_member(a, id, "alice", "join");
		h_req_ok(a, &res, "ch.list", 0);
		check_entry(find_ch(&res, id), e80, "private", 0, 0, 0, 0);
		proto_doc_free(&res);
		h_req_ok(a, &res, "ch.leave", 1, "ch", 's', id);
		proto_doc_free(&res);
		expect_member(a, id, "alice", "leave");
	}

	/* None of them made a channel. */
	h_req_ok(a, &res, "ch.list", 0);
	assert_int_equal(arr_at(&res.root, "channels")->size, 0);
	proto_doc_free(&res);
	/* No barrier: a channel made by mistake would have an id nobody
	 * knows, so there is no channel actor to order after. */
	h_expect_none_for(a, "member", NULL, QUIET_MS);

	/* 80 bytes is the limit, and allowed. */
	h_create_ok(a, n80, "public", id);
	expect_member(a, id, "alice", "join");
	h_req_ok(a, &res, "ch.list", 0);
	assert_int_equal(arr_at(&res.root, "channels")->size, 1);
	check_entry(find_ch(&res, id), n80, "public", 0, 0, 0, 0);
	proto_doc_free(&res);

	pc_close(a);
	h_finish(&s);
}

/* ---- ch.join ------------------------------------------------------------- */

static void test_join_public(void **st)
{
	hsrv s;
	pc_conn *a, *b1, *b2, *c;
	char ch[65];
	char members[8][65];
	proto_doc res;
	msgpack_object m;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "alice", "acme");
	b1 = h_connect_ok(&s, "bob", "acme");
	b2 = h_connect_ok(&s, "bob", "acme");
	c = h_connect_ok(&s, "carol", "acme");

	h_create_ok(a, "general", "public", ch);
	expect_member(a, ch, "alice", "join");
	h_join_ok(c, ch);
	expect_member(c, ch, "carol", "join");
	expect_member(a, ch, "carol", "join");
	send_ok(a, ch, 1);
	send_ok(a, ch, 2);
	expect_ev(c, ch, 1, "alice");
	expect_ev(c, ch, 2, "alice");

	/* bob joins from b1: ch and where his live events start */
	h_req_ok(b1, &res, "ch.join", 1, "ch", 's', ch);
	m = map_at(&res.root, "ch");
	assert_int_equal(m.type, MSGPACK_OBJECT_MAP);
	assert_string_equal(h_s(&m, "id"), ch);
	assert_string_equal(h_s(&m, "name"), "general");
	assert_string_equal(h_s(&m, "kind"), "public");
	assert_non_null(proto_get(&res.root, "last_seq"));
	assert_int_equal(h_u(&res.root, "last_seq"), 2);
	proto_doc_free(&res);

	/* His other device learns of it; the members online too. */
	expect_member(b2, ch, "bob", "join");
	expect_member(b1, ch, "bob", "join");
	expect_member(a, ch, "bob", "join");
	expect_member(c, ch, "bob", "join");

	/* Both of bob's devices get the channel's events from then on. */
	send_ok(a, ch, 3);
	expect_ev(b1, ch, 3, "alice");
	expect_ev(b2, ch, 3, "alice");
	expect_ev(c, ch, 3, "alice");
	expect_ev(a, ch, 3, "alice");
	send_ok(b2, ch, 4);
	expect_ev(a, ch, 4, "bob");
	expect_ev(b1, ch, 4, "bob");
	expect_ev(b2, ch, 4, "bob");

	/* Joining again is fine and changes nothing. */
	h_req_ok(b2, &res, "ch.join", 1, "ch", 's', ch);
	assert_int_equal(h_u(&res.root, "last_seq"), 4);
	m = map_at(&res.root, "ch");
	assert_string_equal(h_s(&m, "id"), ch);
	proto_doc_free(&res);
	h_expect_none(a, "member", ch);
	h_expect_none(c, "member", ch);
	h_expect_none(b1, "member", ch);
	assert_int_equal(all_members(a, ch, 1000, members, 8), 3);
	assert_string_equal(members[0], "alice");
	assert_string_equal(members[1], "bob");
	assert_string_equal(members[2], "carol");
	/* ... and bob still gets each event once */
	send_ok(a, ch, 5);
	expect_ev(b1, ch, 5, "alice");
	expect_ev(b2, ch, 5, "alice");
	h_expect_none(b1, "ev", ch);

	/* No such channel; not a channel id */
	h_req_fail("NOT_FOUND", b1, "ch.join", 1, "ch", 's',
		   "Cdeadbeefdeadbeef");
	h_req_fail("BAD_REQUEST", b1, "ch.join", 1, "ch", 's', "no/such!");
	h_req_fail("BAD_REQUEST", b1, "ch.join", 0);

	pc_close(a);
	pc_close(b1);
	pc_close(b2);
	pc_close(c);
	h_finish(&s);
}

/* ---- what non-members may not do ----------------------------------------- */

static void test_non_members_refused(void **st)
{
	hsrv s;
	pc_conn *a, *d;
	char priv[65], pub[65];
	const char *erin[] = { "erin", NULL };
	const char *dave[] = { "dave", NULL };
	proto_doc res;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "alice", "acme");
	d = h_connect_ok(&s, "dave", "acme");
	h_create_ok(a, "plans", "private", priv);
	expect_member(a, priv, "alice", "join");
	h_create_ok(a, "lobby", "public", pub);
	expect_member(a, pub, "alice", "join");
	send_ok(a, priv, 1);
	send_ok(a, pub, 1);

	/* A private channel: does not exist for dave, in every way. */
	h_req_fail("NOT_FOUND", d, "ch.join", 1, "ch", 's', priv);
	h_req_fail("NOT_FOUND", d, "history", 1, "ch", 's', priv);
	h_req_fail("NOT_FOUND", d, "events", 3, "ch", 's', priv, "after", 'u',
		   (uint64_t)0, "limit", 'u', (uint64_t)10);
	h_req_fail("NOT_FOUND", d, "ch.members", 1, "ch", 's', priv);
	h_req_fail("NOT_FOUND", d, "send", 3, "ch", 's', priv, "body", 's',
		   "let me in", "cmid", 's', "d1");
	h_req_fail("NOT_FOUND", d, "ch.invite", 2, "ch", 's', priv, "users",
		   'S', dave);
	h_req_fail("NOT_FOUND", d, "ch.invite", 2, "ch", 's', priv, "users",
		   'S', erin);
	h_req_fail("NOT_FOUND", d, "read", 2, "ch", 's', priv, "seq", 'u',
		   (uint64_t)1);

	/* A public channel: dave may read it but not write or invite. */
	h_req_ok(d, &res, "history", 1, "ch", 's', pub);
	assert_int_equal(arr_at(&res.root, "msgs")->size, 1);
	proto_doc_free(&res);
	h_req_ok(d, &res, "events", 3, "ch", 's', pub, "after", 'u',
	         (uint64_t)0, "limit", 'u', (uint64_t)10);
	assert_int_equal(arr_at(&res.root, "evs")->size, 1);
	proto_doc_free(&res);
	h_req_ok(d, &res, "ch.members", 1, "ch", 's', pub);
	assert_int_equal(arr_at(&res.root, "members")->size, 1);
	proto_doc_free(&res);
	h_req_fail("FORBIDDEN", d, "send", 3, "ch", 's', pub, "body", 's',
		   "drive-by", "cmid", 's', "d2");
	h_req_fail("FORBIDDEN", d, "ch.invite", 2, "ch", 's', pub, "users", 'S',
		   erin);

	/* Nothing of it reached the channels or their members. */
	send_ok(a, priv, 2);
	send_ok(a, pub, 2);
	h_req_ok(a, &res, "ch.members", 1, "ch", 's', priv);
	assert_int_equal(arr_at(&res.root, "members")->size, 1);
	proto_doc_free(&res);
	h_req_ok(a, &res, "ch.members", 1, "ch", 's', pub);
	assert_int_equal(arr_at(&res.root, "members")->size, 1);
	proto_doc_free(&res);
	h_expect_none_any(d, "ev", pub);
	h_expect_none_any(d, "ev", priv);
	h_expect_none_any(a, "member", pub);
	h_expect_none_any(a, "member", priv);

	pc_close(a);
	pc_close(d);
	h_finish(&s);
}

/* ---- ch.invite ----------------------------------------------------------- */

static void test_invite(void **st)
{
	hsrv s;
	pc_conn *a, *b1, *b2, *c, *d, *e;
	char ch[65], members[8][65];
	const char *bob[] = { "bob", NULL };
	const char *carol[] = { "carol", NULL };
	const char *erin[] = { "erin", NULL };
	proto_doc res;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "alice", "acme");
	b1 = h_connect_ok(&s, "bob", "acme");
	b2 = h_connect_ok(&s, "bob", "acme");
	c = h_connect_ok(&s, "carol", "acme");
	h_create_ok(a, "design", "private", ch);
	expect_member(a, ch, "alice", "join");

	/* alice invites bob: both his devices learn, then get events */
	h_req_ok(a, &res, "ch.invite", 2, "ch", 's', ch, "users", 'S', bob);
	proto_doc_free(&res);
	expect_member(b1, ch, "bob", "invite");
	expect_member(b2, ch, "bob", "invite");
	expect_member(a, ch, "bob", "invite");
	send_ok(a, ch, 1);
	expect_ev(a, ch, 1, "alice");
	expect_ev(b1, ch, 1, "alice");
	expect_ev(b2, ch, 1, "alice");
	h_req_ok(b1, &res, "history", 1, "ch", 's', ch);
	assert_int_equal(arr_at(&res.root, "msgs")->size, 1);
	proto_doc_free(&res);

	/* Any member may invite: bob invites carol */
	h_req_ok(b2, &res, "ch.invite", 2, "ch", 's', ch, "users", 'S', carol);
	proto_doc_free(&res);
	expect_member(c, ch, "carol", "invite");
	expect_member(a, ch, "carol", "invite");
	expect_member(b1, ch, "carol", "invite");
	expect_member(b2, ch, "carol", "invite");
	send_ok(c, ch, 2);
	expect_ev(a, ch, 2, "carol");
	expect_ev(b1, ch, 2, "carol");
	expect_ev(c, ch, 2, "carol");

	/* Inviting a member again succeeds and changes nothing */
	h_req_ok(a, &res, "ch.invite", 2, "ch", 's', ch, "users", 'S', bob);
	proto_doc_free(&res);
	h_expect_none(a, "member", ch);
	h_expect_none(b1, "member", ch);

	/* A non-member may not invite (not even itself): for it the
	 * private channel does not exist */
	d = h_connect_ok(&s, "dave", "acme");
	h_req_fail("NOT_FOUND", d, "ch.invite", 2, "ch", 's', ch, "users", 'S',
		   erin);
	assert_int_equal(all_members(a, ch, 1000, members, 8), 3);
	assert_string_equal(members[0], "alice");
	assert_string_equal(members[1], "bob");
	assert_string_equal(members[2], "carol");

	/* Bad lists */
	{
		const char *none[] = { NULL };
		const char *bad[] = { "ok", "not ok!", NULL };

		h_req_fail("BAD_REQUEST", a, "ch.invite", 2, "ch", 's', ch,
			   "users", 'S', none);
		h_req_fail("BAD_REQUEST", a, "ch.invite", 2, "ch", 's', ch,
			   "users", 'S', bad);
		h_req_fail("BAD_REQUEST", a, "ch.invite", 1, "ch", 's', ch);
		h_req_fail("NOT_FOUND", a, "ch.invite", 2, "ch", 's',
			   "C0000000000000000", "users", 'S', erin);
	}
	assert_int_equal(all_members(a, ch, 1000, members, 8), 3);

	/* An invited user who is offline finds the channel at its hello */
	h_req_ok(a, &res, "ch.invite", 2, "ch", 's', ch, "users", 'S', erin);
	proto_doc_free(&res);
	expect_member(a, ch, "erin", "invite");
	e = h_connect(&s, "erin", "acme", &res);
	assert_non_null(e);
	check_entry(find_ch(&res, ch), "design", "private", 2, 2, 0, 0);
	proto_doc_free(&res);
	send_ok(a, ch, 3);
	expect_ev(e, ch, 3, "alice");

	pc_close(a);
	pc_close(b1);
	pc_close(b2);
	pc_close(c);
	pc_close(d);
	pc_close(e);
	h_finish(&s);
}

/* ---- ch.leave ------------------------------------------------------------ */

static void test_leave(void **st)
{
	hsrv s;
	pc_conn *a, *b1, *b2, *c;
	char ch[65], priv[65], members[8][65];
	const char *bob[] = { "bob", NULL };
	proto_doc res;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "alice", "acme");
	b1 = h_connect_ok(&s, "bob", "acme");
	b2 = h_connect_ok(&s, "bob", "acme");
	c = h_connect_ok(&s, "carol", "acme");
	h_create_ok(a, "general", "public", ch);
	expect_member(a, ch, "alice", "join");
	h_join_ok(b1, ch);
	expect_member(b1, ch, "bob", "join");
	expect_member(b2, ch, "bob", "join");
	h_join_ok(c, ch);
	expect_member(c, ch, "carol", "join");
	send_ok(a, ch, 1);
	expect_ev(b1, ch, 1, "alice");
	expect_ev(b2, ch, 1, "alice");
	expect_ev(c, ch, 1, "alice");
	h_drain(a, 100);

	/* bob leaves from b1 */
	h_req_ok(b1, &res, "ch.leave", 1, "ch", 's', ch);
	proto_doc_free(&res);
	expect_member(a, ch, "bob", "leave");
	expect_member(c, ch, "bob", "leave");
	expect_member(b1, ch, "bob", "leave");
	expect_member(b2, ch, "bob", "leave");

	/* The others still hear the channel, bob (neither device) no more. */
	send_ok(a, ch, 2);
	expect_ev(c, ch, 2, "alice");
	expect_ev(a, ch, 2, "alice");
	h_expect_none(b1, "ev", ch);
	h_expect_none(b2, "ev", ch);
	send_ok(c, ch, 3);
	expect_ev(a, ch, 3, "carol");
	h_expect_none(b1, "ev", ch);
	h_expect_none(b2, "ev", ch);
	h_req_fail("FORBIDDEN", b2, "send", 3, "ch", 's', ch, "body", 's', "hi",
		   "cmid", 's', "b-after");
	assert_int_equal(all_members(a, ch, 1000, members, 8), 2);
	assert_string_equal(members[0], "alice");
	assert_string_equal(members[1], "carol");

	/* Leaving again succeeds and tells nobody */
	h_req_ok(b2, &res, "ch.leave", 1, "ch", 's', ch);
	proto_doc_free(&res);
	h_expect_none(a, "member", ch);
	h_expect_none(c, "member", ch);

	/* bob's next hello does not list it; ch.list, as not his */
	pc_close(b1);
	b1 = h_connect(&s, "bob", "acme", &res);
	assert_non_null(b1);
	assert_null(find_ch(&res, ch));
	proto_doc_free(&res);
	h_req_ok(b1, &res, "ch.list", 0);
	check_entry(find_ch(&res, ch), "general", "public", 3, 0, 0, 0);
	assert_false(bool_at(find_ch(&res, ch), "member"));
	proto_doc_free(&res);

	/* Coming back: told again, and the events flow again */
	h_req_ok(b1, &res, "ch.join", 1, "ch", 's', ch);
	assert_int_equal(h_u(&res.root, "last_seq"), 3);
	proto_doc_free(&res);
	expect_member(b1, ch, "bob", "join");
	expect_member(b2, ch, "bob", "join");
	expect_member(a, ch, "bob", "join");
	send_ok(c, ch, 4);
	expect_ev(b1, ch, 4, "carol");
	expect_ev(b2, ch, 4, "carol");
	expect_ev(a, ch, 4, "carol");
	h_req_ok(b2, &res, "ch.leave", 1, "ch", 's', ch);
	proto_doc_free(&res);
	expect_member(b1, ch, "bob", "leave");
	expect_member(b2, ch, "bob", "leave");
	expect_member(a, ch, "bob", "leave");

	/* Leaving a private channel closes it to the leaver. */
	h_create_ok(a, "inner", "private", priv);
	h_req_ok(a, &res, "ch.invite", 2, "ch", 's', priv, "users", 'S', bob);
	proto_doc_free(&res);
	expect_member(b1, priv, "bob", "invite");
	h_req_ok(b1, &res, "history", 1, "ch", 's', priv);
	proto_doc_free(&res);
	h_req_ok(b1, &res, "ch.leave", 1, "ch", 's', priv);
	proto_doc_free(&res);
	expect_member(b1, priv, "bob", "leave");
	h_req_fail("NOT_FOUND", b1, "history", 1, "ch", 's', priv);
	h_req_fail("NOT_FOUND", b1, "ch.join", 1, "ch", 's', priv);
	send_ok(a, priv, 1);
	h_expect_none(b1, "ev", priv);

	pc_close(a);
	pc_close(b1);
	pc_close(b2);
	pc_close(c);
	h_finish(&s);
}

/* ---- workspaces ---------------------------------------------------------- */

static void test_workspace_isolation(void **st)
{
	hsrv s;
	pc_conn *a, *oa, *oe;
	char pub[65], priv[65], dm[65], opub[65];
	const char *chs[3];
	const char *alice[] = { "alice", NULL };
	const char *bob[] = { "bob", NULL };
	proto_doc res;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "alice", "acme");
	h_create_ok(a, "general", "public", pub);
	h_create_ok(a, "plans", "private", priv);
	dm_open(a, bob, dm);
	send_ok(a, pub, 1);
	send_ok(a, priv, 1);
	send_ok(a, dm, 1);
	chs[0] = pub;
	chs[1] = priv;
	chs[2] = dm;

	/* The same user name, and another user, in workspace "other" */
	oa = h_connect(&s, "alice", "other", &res);
	assert_non_null(oa);
	assert_int_equal(arr_at(&res.root, "channels")->size, 0);
	proto_doc_free(&res);
	oe = h_connect_ok(&s, "eve", "other");

	for (int i = 0; i < 3; i++) {
		for (int j = 0; j < 2; j++) {
			pc_conn *o = j ? oe : oa;

			h_req_fail("NOT_FOUND", o, "ch.join", 1, "ch", 's',
				   chs[i]);
			h_req_fail("NOT_FOUND", o, "history", 1, "ch", 's',
				   chs[i]);
			h_req_fail("NOT_FOUND", o, "events", 3, "ch", 's',
				   chs[i], "after", 'u', (uint64_t)0, "limit",
				   'u', (uint64_t)10);
			h_req_fail("NOT_FOUND", o, "ch.members", 1, "ch", 's',
				   chs[i]);
			h_req_fail("NOT_FOUND", o, "send", 3, "ch", 's', chs[i],
				   "body", 's', "hi", "cmid", 's', "x1");
			h_req_fail("NOT_FOUND", o, "ch.invite", 2, "ch", 's',
				   chs[i], "users", 'S', alice);
			h_req_fail("NOT_FOUND", o, "ch.leave", 1, "ch", 's',
				   chs[i]);
			h_req_fail("NOT_FOUND", o, "read", 2, "ch", 's', chs[i],
				   "seq", 'u', (uint64_t)1);
		}
	}

	/* other's ch.list: its own public channel, none of acme's */
	h_create_ok(oe, "general", "public", opub);
	h_req_ok(oa, &res, "ch.list", 0);
	assert_int_equal(arr_at(&res.root, "channels")->size, 1);
	check_entry(find_ch(&res, opub), "general", "public", 0, 0, 0, 0);
	assert_false(bool_at(find_ch(&res, opub), "member"));
	for (int i = 0; i < 3; i++)
		assert_null(find_ch(&res, chs[i]));
	proto_doc_free(&res);
	/* ... and the other way round */
	h_req_ok(a, &res, "ch.list", 0);
	assert_null(find_ch(&res, opub));
	assert_int_equal(arr_at(&res.root, "channels")->size, 3);
	proto_doc_free(&res);
	h_req_fail("NOT_FOUND", a, "history", 1, "ch", 's', opub);
	h_req_fail("NOT_FOUND", a, "ch.join", 1, "ch", 's', opub);

	/* Nothing of acme's reached other's connections, nor changed it */
	for (int i = 0; i < 3; i++)
		h_expect_none_any(oa, NULL, chs[i]);
	h_req_ok(a, &res, "ch.members", 1, "ch", 's', priv);
	assert_int_equal(arr_at(&res.root, "members")->size, 1);
	proto_doc_free(&res);
	send_ok(a, pub, 2);

	pc_close(a);
	pc_close(oa);
	pc_close(oe);
	h_finish(&s);
}

/* ---- ch.list ------------------------------------------------------------- */

static void test_list(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char puba[65], priva[65], pubb[65], privb[65], dm[65];
	const char *bob[] = { "bob", NULL };
	const msgpack_object *e;
	proto_doc res;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a, "a-pub", "public", puba);
	h_create_ok(a, "a-priv", "private", priva);
	h_create_ok(b, "b-pub", "public", pubb);
	h_create_ok(b, "b-priv", "private", privb);
	dm_open(a, bob, dm);
	for (uint64_t i = 1; i <= 3; i++)
		send_ok(b, pubb, i);
	send_ok(b, privb, 1);
	send_ok(a, puba, 1);
	send_ok(b, dm, 1);

	h_req_ok(a, &res, "ch.list", 0);
	assert_int_equal(arr_at(&res.root, "channels")->size, 4);
	e = find_ch(&res, puba);
	check_entry(e, "a-pub", "public", 1, 1, 0, 0);
	assert_true(bool_at(e, "member"));
	e = find_ch(&res, priva);
	check_entry(e, "a-priv", "private", 0, 0, 0, 0);
	assert_true(bool_at(e, "member"));
	e = find_ch(&res, pubb);
	check_entry(e, "b-pub", "public", 3, 0, 0, 0);
	assert_false(bool_at(e, "member"));
	e = find_ch(&res, dm);
	assert_non_null(e);
	assert_string_equal(h_s(e, "kind"), "dm");
	assert_int_equal(h_u(e, "last_seq"), 1);
	assert_int_equal(h_u(e, "read_seq"), 0);
	assert_int_equal(h_u(e, "unread"), 1);
	assert_int_equal(h_u(e, "mentions"), 0);
	assert_true(bool_at(e, "member"));
	assert_null(find_ch(&res, privb));
	proto_doc_free(&res);

	/* bob sees alice's public channel, not her private one */
	h_req_ok(b, &res, "ch.list", 0);
	assert_int_equal(arr_at(&res.root, "channels")->size, 4);
	e = find_ch(&res, puba);
	check_entry(e, "a-pub", "public", 1, 0, 0, 0);
	assert_false(bool_at(e, "member"));
	assert_null(find_ch(&res, priva));
	assert_true(bool_at(find_ch(&res, privb), "member"));
	assert_true(bool_at(find_ch(&res, pubb), "member"));
	check_entry(find_ch(&res, dm), "", "dm", 1, 1, 0, 0);
	proto_doc_free(&res);

	/* alice joins b-pub: a member, read up to where she joined */
	h_join_ok(a, pubb);
	h_req_ok(a, &res, "ch.list", 0);
	assert_int_equal(arr_at(&res.root, "channels")->size, 4);
	e = find_ch(&res, pubb);
	check_entry(e, "b-pub", "public", 3, 3, 0, 0);
	assert_true(bool_at(e, "member"));
	proto_doc_free(&res);

	/* bob writes twice more, mentioning alice once */
	{
		const char *men[] = { "alice", NULL };

		h_req_ok(b, &res, "send", 4, "ch", 's', pubb, "body", 's',
		         "@alice look", "cmid", 's', "b-m1", "mentions", 'S',
		         men);
		assert_int_equal(h_u(&res.root, "seq"), 4);
		proto_doc_free(&res);
	}
	send_ok(b, pubb, 5);
	h_req_ok(a, &res, "ch.list", 0);
	check_entry(find_ch(&res, pubb), "b-pub", "public", 5, 3, 2, 1);
	proto_doc_free(&res);
	/* and hello says the same (without "member") */
	{
		pc_conn *a2 = h_connect(&s, "alice", "acme", &res);

		assert_non_null(a2);
		assert_int_equal(arr_at(&res.root, "channels")->size, 4);
		check_entry(find_ch(&res, pubb), "b-pub", "public", 5, 3, 2,
			    1);
		proto_doc_free(&res);
		pc_close(a2);
	}
	pc_close(a);
	pc_close(b);
	h_finish(&s);
}

/* ---- ch.members ---------------------------------------------------------- */

static void test_members_paging(void **st)
{
	hsrv s;
	pc_conn *a;
	char ch[65], names[30][8], got[40][65];
	const char *users[31];
	proto_doc res;
	const msgpack_object_array *arr;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "alice", "acme");
	h_create_ok(a, "crowd", "private", ch);
	/* Invited in a shuffled order; listed sorted. */
	for (int i = 0; i < 30; i++) {
		snprintf(names[i], sizeof(names[i]), "u%02d", (i * 7) % 30);
		users[i] = names[i];
	}
	users[30] = NULL;
	h_req_ok(a, &res, "ch.invite", 2, "ch", 's', ch, "users", 'S', users);
	proto_doc_free(&res);

	/* Pages of 10: alice u00..u08 | u09..u18 | u19..u28 | u29 */
	h_req_ok(a, &res, "ch.members", 2, "ch", 's', ch, "limit", 'u',
	         (uint64_t)10);
	arr = arr_at(&res.root, "members");
	assert_int_equal(arr->size, 10);
	assert_true(bool_at(&res.root, "more"));
	assert_int_equal(arr->ptr[0].via.str.size, 5);
	assert_memory_equal(arr->ptr[0].via.str.ptr, "alice", 5);
	assert_memory_equal(arr->ptr[9].via.str.ptr, "u08", 3);
	proto_doc_free(&res);
	h_req_ok(a, &res, "ch.members", 3, "ch", 's', ch, "limit", 'u',
	         (uint64_t)10, "after", 's', "u08");
	arr = arr_at(&res.root, "members");
	assert_int_equal(arr->size, 10);
	assert_true(bool_at(&res.root, "more"));
	assert_memory_equal(arr->ptr[0].via.str.ptr, "u09", 3);
	assert_memory_equal(arr->ptr[9].via.str.ptr, "u18", 3);
	proto_doc_free(&res);
	h_req_ok(a, &res, "ch.members", 3, "ch", 's', ch, "limit", 'u',
	         (uint64_t)10, "after", 's', "u28");
	arr = arr_at(&res.root, "members");
	assert_int_equal(arr->size, 1);
	assert_memory_equal(arr->ptr[0].via.str.ptr, "u29", 3);
	assert_false(bool_at(&res.root, "more"));
	proto_doc_free(&res);
	/* after the last one: nothing more */
	h_req_ok(a, &res, "ch.members", 3, "ch", 's', ch, "limit", 'u',
	         (uint64_t)10, "after", 's', "u29");
	assert_int_equal(arr_at(&res.root, "members")->size, 0);
	assert_false(bool_at(&res.root, "more"));
	proto_doc_free(&res);
	/* after an id that is no member: continues from where it sorts */
	h_req_ok(a, &res, "ch.members", 3, "ch", 's', ch, "limit", 'u',
	         (uint64_t)2, "after", 's', "u15x");
	arr = arr_at(&res.root, "members");
	assert_int_equal(arr->size, 2);
	assert_memory_equal(arr->ptr[0].via.str.ptr, "u16", 3);
	assert_memory_equal(arr->ptr[1].via.str.ptr, "u17", 3);
	assert_true(bool_at(&res.root, "more"));
	proto_doc_free(&res);

	/* The whole walk by 10, and exactly 31 in one page: more false */
	assert_int_equal(all_members(a, ch, 10, got, 40), 31);
	assert_string_equal(got[0], "alice");
	for (int i = 0; i < 30; i++) {
		char want[8];

		snprintf(want, sizeof(want), "u%02d", i);
		assert_string_equal(got[i + 1], want);
	}
	h_req_ok(a, &res, "ch.members", 2, "ch", 's', ch, "limit", 'u',
	         (uint64_t)31);
	assert_int_equal(arr_at(&res.root, "members")->size, 31);
	assert_false(bool_at(&res.root, "more"));
	proto_doc_free(&res);
	/* no limit: all of them */
	h_req_ok(a, &res, "ch.members", 1, "ch", 's', ch);
	assert_int_equal(arr_at(&res.root, "members")->size, 31);
	assert_false(bool_at(&res.root, "more"));
	proto_doc_free(&res);

	h_req_fail("BAD_REQUEST", a, "ch.members", 2, "ch", 's', ch, "limit",
		   'u', (uint64_t)0);
	h_req_fail("BAD_REQUEST", a, "ch.members", 2, "ch", 's', ch, "limit",
		   'u', (uint64_t)1001);

	pc_close(a);
	h_finish(&s);
}

/* ---- a full channel (--max-members) -------------------------------------- */

static void test_full_channel_refuses_newcomers(void **st)
{
	hsrv s;
	pc_conn *a, *b, *c, *d;
	char ch[65], members[8][65];
	const char *bob[] = { "bob", NULL };
	const char *dave[] = { "dave", NULL };
	proto_doc res;

	(void)st;
	h_start(&s, "--shards 2 --max-members 3");
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	c = h_connect_ok(&s, "carol", "acme");
	d = h_connect_ok(&s, "dave", "acme");
	h_create_ok(a, "small", "public", ch);
	h_join_ok(b, ch);
	/* Inviting a member, with room left, changes nothing */
	h_req_ok(a, &res, "ch.invite", 2, "ch", 's', ch, "users", 'S', bob);
	proto_doc_free(&res);
	h_join_ok(c, ch);

	/* Three of three: no one else gets in */
	h_req_fail("CONFLICT", d, "ch.join", 1, "ch", 's', ch);
	h_req_fail("CONFLICT", a, "ch.invite", 2, "ch", 's', ch, "users", 'S',
		   dave);
	h_expect_none_any(d, "member", ch);
	/* Members may still "join" again */
	h_req_ok(b, &res, "ch.join", 1, "ch", 's', ch);
	proto_doc_free(&res);
	assert_int_equal(all_members(a, ch, 1000, members, 8), 3);
	h_req_fail("FORBIDDEN", d, "send", 3, "ch", 's', ch, "body", 's', "x",
		   "cmid", 's', "d1");
	/* Room again after a leave */
	h_req_ok(c, &res, "ch.leave", 1, "ch", 's', ch);
	proto_doc_free(&res);
	h_join_ok(d, ch);
	expect_member(d, ch, "dave", "join");

	pc_close(a);
	pc_close(b);
	pc_close(c);
	pc_close(d);
	h_finish(&s);
}

/* docs/protocol.md: CONFLICT is "a join or invite that would exceed the
 * channel's member limit", and "inviting people who are already members
 * succeed[s] and change[s] nothing": only newcomers count against it. */
static void test_full_channel_counts_only_newcomers(void **st)
{
	hsrv s;
	pc_conn *a, *b, *c;
	char ch[65], members[8][65];
	const char *bob[] = { "bob", NULL };
	const char *bob_carol[] = { "bob", "carol", NULL };
	proto_doc res;

	(void)st;
	h_start(&s, "--shards 2 --max-members 3");
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	c = h_connect_ok(&s, "carol", "acme");
	h_create_ok(a, "small", "private", ch);
	h_req_ok(a, &res, "ch.invite", 2, "ch", 's', ch, "users", 'S', bob);
	proto_doc_free(&res);

	/* 2 members, bob one of them: the channel becomes 3 of 3 */
	h_req_ok(a, &res, "ch.invite", 2, "ch", 's', ch, "users", 'S',
	         bob_carol);
	proto_doc_free(&res);
	expect_member(c, ch, "carol", "invite");
	assert_int_equal(all_members(a, ch, 1000, members, 8), 3);

	pc_close(a);
	pc_close(b);
	pc_close(c);
	h_finish(&s);
}

static void test_full_channel_reinvite_changes_nothing(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char ch[65], members[8][65];
	const char *bob[] = { "bob", NULL };
	const char *carol[] = { "carol", NULL };
	proto_doc res;

	(void)st;
	h_start(&s, "--shards 2 --max-members 3");
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a, "small", "private", ch);
	h_req_ok(a, &res, "ch.invite", 2, "ch", 's', ch, "users", 'S', bob);
	proto_doc_free(&res);
	h_req_ok(a, &res, "ch.invite", 2, "ch", 's', ch, "users", 'S', carol);
	proto_doc_free(&res);
	assert_int_equal(all_members(a, ch, 1000, members, 8), 3);

	/* Full; bob is a member: inviting him again succeeds */
	h_req_ok(b, &res, "ch.invite", 2, "ch", 's', ch, "users", 'S', bob);
	proto_doc_free(&res);
	assert_int_equal(all_members(a, ch, 1000, members, 8), 3);

	pc_close(a);
	pc_close(b);
	h_finish(&s);
}

/* ---- DMs ----------------------------------------------------------------- */

static void test_dm_same_set_same_channel(void **st)
{
	hsrv s;
	pc_conn *a, *b, *c;
	char ab[65], ba[65], abc[65], bac[65], cba[65], x[65];
	const char *u_b[] = { "bob", NULL };
	const char *u_a[] = { "alice", NULL };
	const char *u_bb[] = { "bob", "bob", NULL };
	const char *u_bc[] = { "bob", "carol", NULL };
	const char *u_ac[] = { "alice", "carol", NULL };
	const char *u_ba[] = { "bob", "alice", NULL };
	const char *u_cbc[] = { "carol", "bob", "carol", NULL };
	proto_doc res;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	c = h_connect_ok(&s, "carol", "acme");

	dm_open(a, u_b, ab);
	dm_open(b, u_a, ba);
	assert_string_equal(ab, ba);
	assert_int_equal(ab[0], 'D');
	dm_open(a, u_bb, x);
	assert_string_equal(x, ab);
	dm_open(a, u_b, x); /* again: the same */
	assert_string_equal(x, ab);

	dm_open(a, u_bc, abc);
	dm_open(b, u_ac, bac);
	dm_open(c, u_ba, cba);
	assert_string_equal(abc, bac);
	assert_string_equal(abc, cba);
	assert_string_not_equal(abc, ab);
	dm_open(a, u_cbc, x);
	assert_string_equal(x, abc);

	/* One channel: all three write into the same log */
	send_ok(a, abc, 1);
	send_ok(b, abc, 2);
	send_ok(c, abc, 3);
	send_ok(b, ab, 1);
	h_req_ok(a, &res, "ch.members", 1, "ch", 's', abc);
	assert_int_equal(arr_at(&res.root, "members")->size, 3);
	proto_doc_free(&res);
	h_req_ok(a, &res, "ch.members", 1, "ch", 's', ab);
	assert_int_equal(arr_at(&res.root, "members")->size, 2);
	proto_doc_free(&res);
	/* carol is no member of alice and bob's DM: for her it does not
	 * exist */
	h_req_fail("NOT_FOUND", c, "history", 1, "ch", 's', ab);
	h_req_fail("NOT_FOUND", c, "send", 3, "ch", 's', ab, "body", 's', "hi",
		   "cmid", 's', "c1");
	h_req_fail("NOT_FOUND", c, "ch.join", 1, "ch", 's', ab);
	h_req_fail("NOT_FOUND", c, "ch.members", 1, "ch", 's', ab);

	pc_close(a);
	pc_close(b);
	pc_close(c);
	h_finish(&s);
}

static void test_dm_announced_to_others(void **st)
{
	hsrv s;
	pc_conn *a, *b1, *b2;
	char dm[65], x[65];
	const char *u_b[] = { "bob", NULL };
	const char *u_a[] = { "alice", NULL };

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "alice", "acme");
	b1 = h_connect_ok(&s, "bob", "acme");
	b2 = h_connect_ok(&s, "bob", "acme");

	dm_open(a, u_b, dm);
	expect_member(b1, dm, "bob", "invite");
	expect_member(b2, dm, "bob", "invite");
	expect_member(a, dm, "alice", "join");

	send_ok(a, dm, 1);
	expect_ev(b1, dm, 1, "alice");
	expect_ev(b2, dm, 1, "alice");
	expect_ev(a, dm, 1, "alice");
	send_ok(b2, dm, 2);
	expect_ev(a, dm, 2, "bob");
	expect_ev(b1, dm, 2, "bob");

	/* Opening it again announces nothing */
	dm_open(b1, u_a, x);
	assert_string_equal(x, dm);
	h_expect_none(a, "member", dm);
	h_expect_none(b2, "member", dm);

	pc_close(a);
	pc_close(b1);
	pc_close(b2);
	h_finish(&s);
}

static void test_dm_size_limit(void **st)
{
	hsrv s;
	pc_conn *a, *u7;
	char names[250][8], ch[65], got[260][65];
	const char *users[251];

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "alice", "acme");
	u7 = h_connect_ok(&s, "u007", "acme");
	for (int i = 0; i < 250; i++) {
		snprintf(names[i], sizeof(names[i]), "u%03d", i);
		users[i] = names[i];
	}
	users[250] = NULL;

	/* 250 others + alice = 251 members: too many */
	h_req_fail("BAD_REQUEST", a, "dm.open", 1, "users", 'S', users);
	/* No barrier: the session refuses it before it has a DM id, so
	 * there is no channel actor to order after. */
	h_expect_none_for(u7, "member", NULL, QUIET_MS);

	/* 249 others + alice = 250: allowed */
	users[249] = NULL;
	dm_open(a, users, ch);
	assert_int_equal(all_members(a, ch, 1000, got, 260), 250);
	assert_string_equal(got[0], "alice");
	assert_string_equal(got[249], "u248");
	expect_member(u7, ch, "u007", "invite");
	send_ok(a, ch, 1);
	expect_ev(u7, ch, 1, "alice");

	/* A member who was offline finds it at its hello */
	{
		proto_doc res;
		pc_conn *u248 = h_connect(&s, "u248", "acme", &res);
		const msgpack_object *e;

		assert_non_null(u248);
		e = find_ch(&res, ch);
		assert_non_null(e);
		assert_string_equal(h_s(e, "kind"), "dm");
		assert_int_equal(h_u(e, "last_seq"), 1);
		assert_int_equal(h_u(e, "unread"), 1);
		proto_doc_free(&res);
		pc_close(u248);
	}

	/* An empty list is refused as well */
	users[0] = NULL;
	h_req_fail("BAD_REQUEST", a, "dm.open", 1, "users", 'S', users);
	h_req_fail("BAD_REQUEST", a, "dm.open", 0);

	pc_close(a);
	pc_close(u7);
	h_finish(&s);
}

static void test_dm_workspace_and_fixed_members(void **st)
{
	hsrv s;
	pc_conn *a, *b, *oa;
	char dm[65], odm[65];
	const char *u_b[] = { "bob", NULL };
	const char *u_c[] = { "carol", NULL };
	proto_doc res;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	oa = h_connect_ok(&s, "alice", "other");

	dm_open(a, u_b, dm);
	dm_open(oa, u_b, odm);
	assert_string_not_equal(dm, odm);
	send_ok(a, dm, 1);
	send_ok(oa, odm, 1);
	h_req_fail("NOT_FOUND", oa, "history", 1, "ch", 's', dm);
	h_req_fail("NOT_FOUND", a, "history", 1, "ch", 's', odm);
	h_req_fail("NOT_FOUND", b, "send", 3, "ch", 's', odm, "body", 's', "x",
		   "cmid", 's', "b1");
	/* acme's bob hears nothing of other's DM */
	expect_ev(b, dm, 1, "alice");
	h_expect_none(b, NULL, odm);

	/* A DM's members are fixed */
	h_req_fail("FORBIDDEN", a, "ch.invite", 2, "ch", 's', dm, "users", 'S',
		   u_c);
	h_req_fail("FORBIDDEN", b, "ch.leave", 1, "ch", 's', dm);
	h_req_ok(a, &res, "ch.members", 1, "ch", 's', dm);
	assert_int_equal(arr_at(&res.root, "members")->size, 2);
	proto_doc_free(&res);
	send_ok(b, dm, 2);

	pc_close(a);
	pc_close(b);
	pc_close(oa);
	h_finish(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_announces_to_every_device),
		cmocka_unit_test(test_create_refuses_bad_name_and_kind),
		cmocka_unit_test(test_join_public),
		cmocka_unit_test(test_non_members_refused),
		cmocka_unit_test(test_invite),
		cmocka_unit_test(test_leave),
		cmocka_unit_test(test_workspace_isolation),
		cmocka_unit_test(test_list),
		cmocka_unit_test(test_members_paging),
		cmocka_unit_test(test_full_channel_refuses_newcomers),
		cmocka_unit_test(test_full_channel_counts_only_newcomers),
		cmocka_unit_test(test_full_channel_reinvite_changes_nothing),
		cmocka_unit_test(test_dm_same_set_same_channel),
		cmocka_unit_test(test_dm_announced_to_others),
		cmocka_unit_test(test_dm_size_limit),
		cmocka_unit_test(test_dm_workspace_and_fixed_members),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
