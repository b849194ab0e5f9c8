/*
 * Names, roles and moderation (PROTOCOL.md "People, roles and moderation"
 * and the ch.create row), as users see them:
 *   - channel names are unique in a workspace, ASCII-case-insensitively:
 *     a taken name is CONFLICT, with the holder's ch when it is public and
 *     without it when it is private; other workspaces and DMs are apart;
 *   - concurrent creates of one name from several connections on a server
 *     of two shards: exactly one wins, the others CONFLICT with its ch;
 *   - names survive a restart and a kill -9 right after the answer;
 *     a rename to a taken name is CONFLICT, a rename frees the old name;
 *   - ch.info (members; anyone in the workspace for public channels;
 *     NOT_FOUND otherwise), ch.set (owners and admins; the chan frame
 *     reaches members online), ch.role (at least one owner stays),
 *     ch.kick (the kicked user is told, loses a private channel: its
 *     history is NOT_FOUND and its events stop);
 *   - archived channels are read-only; announcement channels take
 *     top-level messages from owners and admins only;
 *   - owners and admins delete any message; edit stays the author's.
 * E2E_FILTER=name runs one test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <semaphore.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "storage/store.h"
#include "tests/e2e/harness.h"

/* ---- helpers ------------------------------------------------------------- */

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

static bool bool_at(const msgpack_object *m, const char *key)
{
	bool b = false;

	assert_int_equal(proto_get_bool(m, key, &b), 0);
	return b;
}

/* ch.create that must be refused CONFLICT; holder: the id its ch must
 * name (NULL: the answer must carry no ch at all). */
static void create_conflict(pc_conn *c, const char *name, const char *kind,
			    const char *holder)
{
	proto_doc res;
	msgpack_object ch;

	assert_int_equal(h_req(c, &res, "ch.create", 2, "name", 's', name,
			       "kind", 's', kind), 1);
	assert_false(h_ok(&res));
	assert_string_equal(h_code(&res), "CONFLICT");
	ch = map_at(&res.root, "ch");
	if (holder) {
		assert_int_equal(ch.type, MSGPACK_OBJECT_MAP);
		assert_string_equal(h_s(&ch, "id"), holder);
		assert_string_equal(h_s(&ch, "kind"), "public");
	} else {
		assert_int_equal(ch.type, MSGPACK_OBJECT_NIL);
		assert_null(proto_get(&res.root, "ch"));
	}
	proto_doc_free(&res);
}

/* ch.info ok; the answer's ch map in *d's root (caller frees d) */
static msgpack_object info_ok(pc_conn *c, const char *ch, proto_doc *d)
{
	msgpack_object m;

	h_req_ok(c, d, "ch.info", 1, "ch", 's', ch);
	m = map_at(&d->root, "ch");
	assert_int_equal(m.type, MSGPACK_OBJECT_MAP);
	assert_string_equal(h_s(&m, "id"), ch);
	return m;
}

/* The owners of ch as ch.info lists them, joined with ',' */
static void owners_of(pc_conn *c, const char *ch, char *out, size_t cap)
{
	proto_doc d;
	msgpack_object m = info_ok(c, ch, &d);
	const msgpack_object_array *a = NULL;
	size_t o = 0;

	assert_int_equal(proto_get_array(&m, "owners", &a), 0);
	out[0] = 0;
	for (uint32_t i = 0; i < a->size; i++) {
		assert_int_equal(a->ptr[i].type, MSGPACK_OBJECT_STR);
		o += (size_t)snprintf(out + o, cap - o, "%s%.*s", i ? "," : "",
				      (int)a->ptr[i].via.str.size,
				      a->ptr[i].via.str.ptr);
	}
	proto_doc_free(&d);
}

static void invite_ok(pc_conn *c, const char *ch, const char *user)
{
	const char *users[] = { user, NULL };
	proto_doc res;

	h_req_ok(c, &res, "ch.invite", 2, "ch", 's', ch, "users", 'S', users);
	proto_doc_free(&res);
}

static uint64_t send_ok(pc_conn *c, const char *ch, const char *body,
			const char *cmid)
{
	int64_t seq = h_send(c, ch, body, cmid);

	assert_true(seq > 0);
	return (uint64_t)seq;
}

/* A member frame {ch, user, action "kick"} reaches c (earlier member
 * frames, of the joins and invites before, are passed over). */
static void expect_kick(pc_conn *c, const char *ch, const char *user)
{
	for (;;) {
		proto_doc d;
		bool kick;

		assert_int_equal(h_expect(c, "member", &d, H_TIMEOUT), 1);
		kick = !strcmp(h_s(&d.root, "action"), "kick");
		if (kick) {
			assert_string_equal(h_s(&d.root, "ch"), ch);
			assert_string_equal(h_s(&d.root, "user"), user);
		}
		proto_doc_free(&d);
		if (kick)
			return;
	}
}

/* POST /api/v1/channels/{ch}/messages as user@ws; the status, and the
 * response's text in out (cap bytes). */
static int rest_post(hsrv *s, const char *user, const char *ws,
		     const char *ch, const char *cmid, char *out, size_t cap)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)s->port) };
	struct timeval tv = { .tv_sec = 10 };
	char req[2048], body[128];
	char *tok = h_token(s, user, ws);
	int fd = socket(AF_INET, SOCK_STREAM, 0), status = 0, n;
	size_t len = 0;

	assert_true(fd >= 0);
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	snprintf(body, sizeof(body), "{\"body\":\"hi\",\"cmid\":\"%s\"}", cmid);
	n = snprintf(req, sizeof(req),
		     "POST /api/v1/channels/%s/messages HTTP/1.1\r\n"
		     "Host: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
		     "Content-Type: application/json\r\nConnection: close\r\n"
		     "Content-Length: %zu\r\n\r\n%s",
		     ch, tok, strlen(body), body);
	free(tok);
	assert_int_equal(write(fd, req, (size_t)n), n);
	for (;;) {
		ssize_t got = read(fd, out + len, cap - len - 1);

		if (got <= 0)
			break;
		len += (size_t)got;
		if (len + 1 >= cap)
			break;
	}
	out[len] = 0;
	close(fd);
	assert_int_equal(sscanf(out, "HTTP/1.1 %d", &status), 1);
	return status;
}

/* ---- names --------------------------------------------------------------- */

static void test_names_unique_case_insensitive(void **st)
{
	hsrv s;
	pc_conn *a, *b, *x;
	char gen[65], sec[65], other[65];
	const char *users[] = { "b", NULL };
	proto_doc res;

	(void)st;
	h_start(&s, "");
	a = h_connect_ok(&s, "a", "w1");
	b = h_connect_ok(&s, "b", "w1");
	x = h_connect_ok(&s, "x", "w2");

	h_create_ok(a, "general", "public", gen);
	/* the same name, any case, either kind: CONFLICT naming the public
	 * holder, so that the client can join it */
	create_conflict(b, "general", "public", gen);
	create_conflict(b, "General", "public", gen);
	create_conflict(a, "GENERAL", "private", gen);
	h_join_ok(b, gen);

	/* a private holder is never named */
	h_create_ok(a, "Secret-Plans", "private", sec);
	create_conflict(b, "secret-plans", "public", NULL);
	create_conflict(b, "SECRET-PLANS", "private", NULL);

	/* a name that only starts alike is another name */
	h_create_ok(b, "general2", "public", other);

	/* another workspace has its own names */
	h_create_ok(x, "general", "public", other);
	h_create_ok(x, "secret-plans", "private", other);

	/* DMs have no names and are not affected */
	h_req_ok(a, &res, "dm.open", 1, "users", 'S', users);
	proto_doc_free(&res);

	/* a refused create made no channel: the name still names one */
	proto_doc l;
	h_req_ok(b, &l, "ch.list", 0);
	{
		const msgpack_object_array *arr = NULL;
		unsigned n = 0;

		assert_int_equal(proto_get_array(&l.root, "channels", &arr), 0);
		for (uint32_t i = 0; i < arr->size; i++) {
			const char *nm = h_s(&arr->ptr[i], "name");

			n += !strcmp(nm, "general") || !strcmp(nm, "General") ||
			     !strcmp(nm, "GENERAL");
		}
		assert_int_equal(n, 1);
	}
	proto_doc_free(&l);

	pc_close(a);
	pc_close(b);
	pc_close(x);
	h_finish(&s);
}

#define RACERS 6
#define ROUNDS 4

static void test_names_concurrent_creates_two_shards(void **st)
{
	hsrv s;
	pc_conn *c[RACERS];
	char users[RACERS][16];

	(void)st;
	h_start(&s, "--shards 2");
	for (int i = 0; i < RACERS; i++) {
		snprintf(users[i], sizeof(users[i]), "racer%d", i);
		c[i] = h_connect_ok(&s, users[i], "w1");
	}
	for (int round = 0; round < ROUNDS; round++) {
		uint64_t rid[RACERS];
		char name[32], winner[65] = "";
		const char *kind = round % 2 ? "private" : "public";
		int wins = 0, conflicts = 0;
		proto_doc res[RACERS];

		/* each round a name of its own, in varying case */
		snprintf(name, sizeof(name), "race-%d", round);
		for (int i = 0; i < RACERS; i++) {
			char nm[32];

			snprintf(nm, sizeof(nm), "%s", name);
			if (i % 2)
				nm[0] = 'R';
			rid[i] = h_post(c[i], "ch.create", 2, "name", 's', nm,
					"kind", 's', kind);
			assert_true(rid[i] != 0);
		}
		for (int i = 0; i < RACERS; i++) {
			assert_int_equal(h_await(c[i], rid[i], &res[i]), 1);
			if (h_ok(&res[i])) {
				msgpack_object ch = map_at(&res[i].root, "ch");

				wins++;
				snprintf(winner, sizeof(winner), "%s",
					 h_s(&ch, "id"));
			}
		}
		assert_int_equal(wins, 1);
		for (int i = 0; i < RACERS; i++) {
			msgpack_object ch;

			if (h_ok(&res[i])) {
				proto_doc_free(&res[i]);
				continue;
			}
			assert_string_equal(h_code(&res[i]), "CONFLICT");
			conflicts++;
			ch = map_at(&res[i].root, "ch");
			if (round % 2 == 0) {
				assert_int_equal(ch.type, MSGPACK_OBJECT_MAP);
				assert_string_equal(h_s(&ch, "id"), winner);
			} else {
				assert_int_equal(ch.type, MSGPACK_OBJECT_NIL);
			}
			proto_doc_free(&res[i]);
		}
		assert_int_equal(conflicts, RACERS - 1);
		/* and afterwards, it stays taken */
		create_conflict(c[0], name, "public",
				round % 2 == 0 ? winner : NULL);
	}
	for (int i = 0; i < RACERS; i++)
		pc_close(c[i]);
	h_finish(&s);
}

static void test_names_survive_restart_and_kill9(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char keep[65], priv[65], moved[65], bef[65];
	proto_doc res;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "a", "w1");
	h_create_ok(a, "keep", "public", keep);
	h_create_ok(a, "hidden", "private", priv);
	h_create_ok(a, "before", "public", moved);
	h_req_ok(a, &res, "ch.set", 2, "ch", 's', moved, "name", 's',
		 "after");
	proto_doc_free(&res);
	/* killed right after the answers */
	h_kill9(&s);
	pc_close(a);
	h_restart(&s);

	b = h_connect_ok(&s, "b", "w1");
	create_conflict(b, "KEEP", "public", keep);
	create_conflict(b, "Hidden", "public", NULL);
	create_conflict(b, "after", "private", moved);
	/* the renamed channel's old name is free */
	h_create_ok(b, "before", "public", bef);
	pc_close(b);

	/* and once more across a clean stop */
	assert_int_equal(h_stop(&s), 0);
	h_restart(&s);
	b = h_connect_ok(&s, "b", "w1");
	create_conflict(b, "Before", "public", bef);
	create_conflict(b, "keep", "private", keep);
	create_conflict(b, "HIDDEN", "private", NULL);
	pc_close(b);
	h_finish(&s);
}

static void test_rename(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char one[65], two[65], three[65];
	proto_doc res, d;
	msgpack_object m;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "a", "w1");
	b = h_connect_ok(&s, "b", "w1");
	h_create_ok(a, "one", "public", one);
	h_create_ok(a, "two", "private", two);
	h_join_ok(b, one);

	/* to a taken name (any case): CONFLICT, nothing changes */
	h_req_fail("CONFLICT", a, "ch.set", 2, "ch", 's', one, "name", 's',
		   "TWO");
	m = info_ok(a, one, &d);
	assert_string_equal(h_s(&m, "name"), "one");
	proto_doc_free(&d);

	/* to a free name: the answer is ch.info's, members hear of it */
	h_req_ok(a, &res, "ch.set", 2, "ch", 's', one, "name", 's', "uno");
	m = map_at(&res.root, "ch");
	assert_string_equal(h_s(&m, "name"), "uno");
	proto_doc_free(&res);
	assert_int_equal(h_expect(b, "chan", &d, H_TIMEOUT), 1);
	assert_string_equal(h_s(&d.root, "ch"), one);
	assert_string_equal(h_s(&d.root, "name"), "uno");
	assert_null(proto_get(&d.root, "topic"));
	proto_doc_free(&d);

	/* the old name is free now, the new one taken */
	h_create_ok(b, "One", "public", three);
	create_conflict(b, "UNO", "public", one);
	/* a channel may change the case of its own name */
	h_req_ok(a, &res, "ch.set", 2, "ch", 's', one, "name", 's', "Uno");
	proto_doc_free(&res);
	create_conflict(b, "uno", "public", one);
	/* a member who is no owner may not rename */
	h_req_fail("FORBIDDEN", b, "ch.set", 2, "ch", 's', one, "name", 's',
		   "mine");
	h_create_ok(b, "mine", "public", three);

	pc_close(a);
	pc_close(b);
	h_finish(&s);
}

/* ---- ch.info, ch.set, ch.role -------------------------------------------- */

static void test_info_visibility(void **st)
{
	hsrv s;
	pc_conn *a, *b, *x;
	char pub[65], priv[65];
	proto_doc res, d;
	msgpack_object m;
	char own[256];
	const msgpack_object_array *arr = NULL;

	(void)st;
	h_start(&s, "");
	a = h_connect_ok(&s, "a", "w1");
	b = h_connect_ok(&s, "b", "w1");
	x = h_connect_ok(&s, "x", "w2");
	h_req_ok(a, &res, "ch.create", 3, "name", 's', "lobby", "kind", 's',
		 "public", "topic", 's', "say hi");
	m = map_at(&res.root, "ch");
	snprintf(pub, sizeof(pub), "%s", h_s(&m, "id"));
	proto_doc_free(&res);
	h_create_ok(a, "inner", "private", priv);
	send_ok(a, pub, "hello", "m1");

	m = info_ok(a, pub, &d);
	assert_string_equal(h_s(&m, "name"), "lobby");
	assert_string_equal(h_s(&m, "kind"), "public");
	assert_string_equal(h_s(&m, "topic"), "say hi");
	assert_false(bool_at(&m, "archived"));
	assert_string_equal(h_s(&m, "post"), "all");
	assert_int_equal(h_u(&m, "members"), 1);
	assert_int_equal(h_u(&m, "last_seq"), 1);
	assert_int_equal(proto_get_array(&m, "owners", &arr), 0);
	assert_int_equal(arr->size, 1);
	proto_doc_free(&d);
	owners_of(a, pub, own, sizeof(own));
	assert_string_equal(own, "a");

	/* a public channel: anyone in the workspace */
	m = info_ok(b, pub, &d);
	assert_string_equal(h_s(&m, "name"), "lobby");
	proto_doc_free(&d);
	/* a private one: members only; others as for a missing id */
	m = info_ok(a, priv, &d);
	assert_string_equal(h_s(&m, "kind"), "private");
	assert_string_equal(h_s(&m, "topic"), "");
	proto_doc_free(&d);
	h_req_fail("NOT_FOUND", b, "ch.info", 1, "ch", 's', priv);
	h_req_fail("NOT_FOUND", b, "ch.info", 1, "ch", 's', "Cnosuchchannel");
	/* another workspace: nothing exists */
	h_req_fail("NOT_FOUND", x, "ch.info", 1, "ch", 's', pub);
	h_req_fail("NOT_FOUND", x, "ch.info", 1, "ch", 's', priv);

	/* joining counts */
	h_join_ok(b, pub);
	m = info_ok(b, pub, &d);
	assert_int_equal(h_u(&m, "members"), 2);
	proto_doc_free(&d);

	pc_close(a);
	pc_close(b);
	pc_close(x);
	h_finish(&s);
}

static void test_set_rights_and_chan_frame(void **st)
{
	hsrv s;
	pc_conn *a, *b, *c, *adm, *xadm;
	char ch[65], priv[65];
	proto_doc res, d;
	msgpack_object m;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "a", "w1");
	b = h_connect_ok(&s, "b", "w1");
	c = h_connect_ok(&s, "c", "w1");
	adm = h_connect_role(&s, "boss", "w1", "admin");
	xadm = h_connect_role(&s, "other", "w2", "admin");
	assert_non_null(adm);
	assert_non_null(xadm);
	h_create_ok(a, "news", "public", ch);
	h_create_ok(a, "club", "private", priv);
	h_join_ok(b, ch);

	/* a member who is no owner, a non-member: FORBIDDEN */
	h_req_fail("FORBIDDEN", b, "ch.set", 2, "ch", 's', ch, "topic", 's',
		   "mine now");
	h_req_fail("FORBIDDEN", c, "ch.set", 2, "ch", 's', ch, "topic", 's',
		   "mine now");
	/* a private channel's non-members, other workspaces (even their
	 * admins): it does not exist */
	h_req_fail("NOT_FOUND", c, "ch.set", 2, "ch", 's', priv, "topic", 's',
		   "x");
	h_req_fail("NOT_FOUND", xadm, "ch.set", 2, "ch", 's', ch, "topic",
		   's', "x");
	h_req_fail("NOT_FOUND", xadm, "ch.info", 1, "ch", 's', ch);

	/* the owner: the answer is ch.info's; members online hear it */
	h_req_ok(a, &res, "ch.set", 2, "ch", 's', ch, "topic", 's',
		 "release notes");
	m = map_at(&res.root, "ch");
	assert_string_equal(h_s(&m, "topic"), "release notes");
	assert_string_equal(h_s(&m, "name"), "news");
	proto_doc_free(&res);
	assert_int_equal(h_expect(b, "chan", &d, H_TIMEOUT), 1);
	assert_string_equal(h_s(&d.root, "ch"), ch);
	assert_string_equal(h_s(&d.root, "topic"), "release notes");
	assert_null(proto_get(&d.root, "name"));
	assert_null(proto_get(&d.root, "archived"));
	proto_doc_free(&d);
	assert_int_equal(h_expect(a, "chan", &d, H_TIMEOUT), 1);
	proto_doc_free(&d);

	/* a workspace admin, not even a member */
	h_req_ok(adm, &res, "ch.set", 3, "ch", 's', ch, "post", 's', "owners",
		 "archived", 'b', 0);
	m = map_at(&res.root, "ch");
	assert_string_equal(h_s(&m, "post"), "owners");
	assert_false(bool_at(&m, "archived"));
	assert_string_equal(h_s(&m, "topic"), "release notes");
	proto_doc_free(&res);
	assert_int_equal(h_expect(b, "chan", &d, H_TIMEOUT), 1);
	assert_string_equal(h_s(&d.root, "post"), "owners");
	assert_false(bool_at(&d.root, "archived"));
	assert_null(proto_get(&d.root, "topic"));
	proto_doc_free(&d);
	/* a non-member hears nothing */
	h_expect_none(c, "chan", ch);

	/* settings last */
	assert_int_equal(h_stop(&s), 0);
	h_restart(&s);
	pc_close(b);
	b = h_connect_ok(&s, "b", "w1");
	m = info_ok(b, ch, &d);
	assert_string_equal(h_s(&m, "post"), "owners");
	assert_string_equal(h_s(&m, "topic"), "release notes");
	proto_doc_free(&d);

	pc_close(a);
	pc_close(b);
	pc_close(c);
	pc_close(adm);
	pc_close(xadm);
	h_finish(&s);
}

static void test_role(void **st)
{
	hsrv s;
	pc_conn *a, *b, *c, *adm;
	char ch[65], dm[65], own[256];
	const char *users[] = { "b", NULL };
	proto_doc res;
	msgpack_object m;

	(void)st;
	h_start(&s, "");
	a = h_connect_ok(&s, "a", "w1");
	b = h_connect_ok(&s, "b", "w1");
	c = h_connect_ok(&s, "c", "w1");
	adm = h_connect_role(&s, "boss", "w1", "admin");
	h_create_ok(a, "team", "public", ch);
	h_join_ok(b, ch);
	h_join_ok(c, ch);

	/* members may not hand out roles */
	h_req_fail("FORBIDDEN", b, "ch.role", 3, "ch", 's', ch, "user", 's',
		   "b", "role", 's', "owner");
	/* the only owner cannot step down */
	h_req_fail("CONFLICT", a, "ch.role", 3, "ch", 's', ch, "user", 's',
		   "a", "role", 's', "member");
	/* a user who is no member has no role to get */
	h_req_fail("NOT_FOUND", a, "ch.role", 3, "ch", 's', ch, "user", 's',
		   "nobody", "role", 's', "owner");

	h_req_ok(a, &res, "ch.role", 3, "ch", 's', ch, "user", 's', "b",
		 "role", 's', "owner");
	proto_doc_free(&res);
	owners_of(c, ch, own, sizeof(own));
	assert_string_equal(own, "a,b");
	/* the new owner may act as one */
	h_req_ok(b, &res, "ch.role", 3, "ch", 's', ch, "user", 's', "a",
		 "role", 's', "member");
	proto_doc_free(&res);
	owners_of(c, ch, own, sizeof(own));
	assert_string_equal(own, "b");
	h_req_fail("FORBIDDEN", a, "ch.set", 2, "ch", 's', ch, "topic", 's',
		   "x");
	h_req_fail("CONFLICT", b, "ch.role", 3, "ch", 's', ch, "user", 's',
		   "b", "role", 's', "member");
	/* an admin */
	h_req_ok(adm, &res, "ch.role", 3, "ch", 's', ch, "user", 's', "c",
		 "role", 's', "owner");
	proto_doc_free(&res);
	owners_of(a, ch, own, sizeof(own));
	assert_string_equal(own, "b,c");

	/* roles last */
	h_kill9(&s);
	h_restart(&s);
	pc_close(a);
	a = h_connect_ok(&s, "a", "w1");
	owners_of(a, ch, own, sizeof(own));
	assert_string_equal(own, "b,c");

	/* DMs have no owners */
	h_req_ok(a, &res, "dm.open", 1, "users", 'S', users);
	m = map_at(&res.root, "ch");
	snprintf(dm, sizeof(dm), "%s", h_s(&m, "id"));
	proto_doc_free(&res);
	owners_of(a, dm, own, sizeof(own));
	assert_string_equal(own, "");
	h_req_fail("FORBIDDEN", a, "ch.role", 3, "ch", 's', dm, "user", 's',
		   "a", "role", 's', "owner");
	h_req_fail("FORBIDDEN", a, "ch.set", 2, "ch", 's', dm, "topic", 's',
		   "x");

	pc_close(a);
	pc_close(b);
	pc_close(c);
	pc_close(adm);
	h_finish(&s);
}

/* ---- ch.kick ------------------------------------------------------------- */

static void test_kick_private(void **st)
{
	hsrv s;
	pc_conn *a, *b, *c, *x;
	char ch[65];
	const char *kick_b[] = { "b", NULL }, *kick_a[] = { "a", NULL };
	proto_doc res, d;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "a", "w1");
	b = h_connect_ok(&s, "b", "w1");
	c = h_connect_ok(&s, "c", "w1");
	x = h_connect_ok(&s, "x", "w2");
	h_create_ok(a, "backroom", "private", ch);
	invite_ok(a, ch, "b");
	invite_ok(a, ch, "c");
	send_ok(b, ch, "b was here", "b1");
	h_drain(b, 100);

	/* members that are no owners, other workspaces */
	h_req_fail("FORBIDDEN", c, "ch.kick", 2, "ch", 's', ch, "users", 'S',
		   kick_b);
	h_req_fail("NOT_FOUND", x, "ch.kick", 2, "ch", 's', ch, "users", 'S',
		   kick_b);
	/* the last owner cannot be kicked */
	h_req_fail("CONFLICT", a, "ch.kick", 2, "ch", 's', ch, "users", 'S',
		   kick_a);

	h_req_ok(a, &res, "ch.kick", 2, "ch", 's', ch, "users", 'S', kick_b);
	proto_doc_free(&res);
	/* the kicked user is told, and so are the members online */
	expect_kick(b, ch, "b");
	expect_kick(c, ch, "b");
	expect_kick(a, ch, "b");

	/* the channel is gone for b: history, info, sending */
	h_req_fail("NOT_FOUND", b, "history", 1, "ch", 's', ch);
	h_req_fail("NOT_FOUND", b, "ch.info", 1, "ch", 's', ch);
	h_req_fail("NOT_FOUND", b, "events", 2, "ch", 's', ch, "after", 'u',
		   (uint64_t)0);
	h_req_fail("NOT_FOUND", b, "send", 3, "ch", 's', ch, "body", 's', "hi",
		   "cmid", 's', "b2");
	/* and its events stop reaching b's devices */
	send_ok(a, ch, "after the kick", "a1");
	assert_int_equal(h_expect(c, "ev", &d, H_TIMEOUT), 1);
	proto_doc_free(&d);
	h_expect_none(b, "ev", ch);
	/* a new device of b does not get it either */
	pc_close(b);
	b = h_connect_ok(&s, "b", "w1");
	h_req_fail("NOT_FOUND", b, "history", 1, "ch", 's', ch);
	h_req_ok(b, &res, "ch.list", 0);
	{
		const msgpack_object_array *arr = NULL;

		assert_int_equal(proto_get_array(&res.root, "channels", &arr),
				 0);
		for (uint32_t i = 0; i < arr->size; i++)
			assert_string_not_equal(h_s(&arr->ptr[i], "id"), ch);
	}
	proto_doc_free(&res);

	pc_close(a);
	pc_close(b);
	pc_close(c);
	pc_close(x);
	h_finish(&s);
}

static void test_kick_by_admin_public(void **st)
{
	hsrv s;
	pc_conn *a, *b, *adm;
	char ch[65];
	const char *kick_b[] = { "b", "nobody", "b", NULL };
	proto_doc res, d;
	msgpack_object m;

	(void)st;
	h_start(&s, "");
	a = h_connect_ok(&s, "a", "w1");
	b = h_connect_ok(&s, "b", "w1");
	adm = h_connect_role(&s, "boss", "w1", "admin");
	h_create_ok(a, "square", "public", ch);
	h_join_ok(b, ch);
	h_req_ok(adm, &res, "ch.kick", 2, "ch", 's', ch, "users", 'S', kick_b);
	proto_doc_free(&res);
	expect_kick(b, ch, "b");
	expect_kick(a, ch, "b");
	m = info_ok(a, ch, &d);
	assert_int_equal(h_u(&m, "members"), 1);
	proto_doc_free(&d);
	/* b may not write to it any more */
	h_req_fail("FORBIDDEN", b, "send", 3, "ch", 's', ch, "body", 's', "hi",
		   "cmid", 's', "b1");
	pc_close(a);
	pc_close(b);
	pc_close(adm);
	h_finish(&s);
}

/* ---- archived and announcement channels ---------------------------------- */

static void test_archived_is_read_only(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char ch[65];
	uint64_t seq;
	proto_doc res;
	const msgpack_object_array *arr = NULL;

	(void)st;
	h_start(&s, "");
	a = h_connect_ok(&s, "a", "w1");
	b = h_connect_ok(&s, "b", "w1");
	h_create_ok(a, "old", "public", ch);
	h_join_ok(b, ch);
	seq = send_ok(b, ch, "from before", "b1");
	h_req_ok(a, &res, "ch.set", 2, "ch", 's', ch, "archived", 'b', 1);
	proto_doc_free(&res);

	h_req_fail("FORBIDDEN", b, "send", 3, "ch", 's', ch, "body", 's', "x",
		   "cmid", 's', "b2");
	h_req_fail("FORBIDDEN", a, "send", 3, "ch", 's', ch, "body", 's', "x",
		   "cmid", 's', "a2");
	/* a retry of a send made before still gets its seq */
	h_req_ok(b, &res, "send", 3, "ch", 's', ch, "body", 's', "from before",
		 "cmid", 's', "b1");
	assert_int_equal(h_u(&res.root, "seq"), seq);
	assert_true(bool_at(&res.root, "dup"));
	proto_doc_free(&res);
	h_req_fail("FORBIDDEN", b, "edit", 3, "ch", 's', ch, "target", 'u',
		   seq, "body", 's', "changed");
	h_req_fail("FORBIDDEN", b, "react", 4, "ch", 's', ch, "target", 'u',
		   seq, "emoji", 's', "ok", "on", 'b', 1);
	{
		char resp[2048];

		assert_int_equal(rest_post(&s, "b", "w1", ch, "rest1", resp,
					   sizeof(resp)), 403);
		assert_non_null(strstr(resp, "FORBIDDEN"));
	}
	/* reading still works, and leaving */
	h_req_ok(b, &res, "history", 1, "ch", 's', ch);
	assert_int_equal(proto_get_array(&res.root, "msgs", &arr), 0);
	assert_int_equal(arr->size, 1);
	proto_doc_free(&res);
	h_req_ok(b, &res, "ch.leave", 1, "ch", 's', ch);
	proto_doc_free(&res);

	/* unarchived, it takes messages again */
	h_req_ok(a, &res, "ch.set", 2, "ch", 's', ch, "archived", 'b', 0);
	proto_doc_free(&res);
	send_ok(a, ch, "back", "a3");
	pc_close(a);
	pc_close(b);
	h_finish(&s);
}

static void test_announcement_channel(void **st)
{
	hsrv s;
	pc_conn *a, *b, *adm;
	char ch[65];
	uint64_t root;
	proto_doc res;

	(void)st;
	h_start(&s, "");
	a = h_connect_ok(&s, "a", "w1");
	b = h_connect_ok(&s, "b", "w1");
	adm = h_connect_role(&s, "boss", "w1", "admin");
	h_create_ok(a, "announce", "public", ch);
	h_join_ok(b, ch);
	h_join_ok(adm, ch);
	h_req_ok(a, &res, "ch.set", 2, "ch", 's', ch, "post", 's', "owners");
	proto_doc_free(&res);

	h_req_fail("FORBIDDEN", b, "send", 3, "ch", 's', ch, "body", 's', "x",
		   "cmid", 's', "b1");
	{
		char resp[2048];

		assert_int_equal(rest_post(&s, "b", "w1", ch, "rest1", resp,
					   sizeof(resp)), 403);
		assert_int_equal(rest_post(&s, "a", "w1", ch, "rest2", resp,
					   sizeof(resp)), 201);
	}
	root = send_ok(a, ch, "big news", "a1");
	send_ok(adm, ch, "from the admin", "adm1");
	/* thread replies and reactions stay open */
	h_req_ok(b, &res, "send", 4, "ch", 's', ch, "body", 's', "congrats",
		 "cmid", 's', "b2", "thread", 'u', root);
	proto_doc_free(&res);
	h_req_ok(b, &res, "react", 4, "ch", 's', ch, "target", 'u', root,
		 "emoji", 's', "tada", "on", 'b', 1);
	proto_doc_free(&res);
	/* everyone again */
	h_req_ok(a, &res, "ch.set", 2, "ch", 's', ch, "post", 's', "all");
	proto_doc_free(&res);
	send_ok(b, ch, "now me", "b3");
	pc_close(a);
	pc_close(b);
	pc_close(adm);
	h_finish(&s);
}

/* ---- moderator delete ---------------------------------------------------- */

static void test_moderator_delete(void **st)
{
	hsrv s;
	pc_conn *a, *b, *c, *adm;
	char ch[65];
	uint64_t m1, m2;
	proto_doc res;

	(void)st;
	h_start(&s, "");
	a = h_connect_ok(&s, "a", "w1");
	b = h_connect_ok(&s, "b", "w1");
	c = h_connect_ok(&s, "c", "w1");
	adm = h_connect_role(&s, "boss", "w1", "admin");
	h_create_ok(a, "floor", "public", ch);
	h_join_ok(b, ch);
	h_join_ok(c, ch);
	m1 = send_ok(b, ch, "abusive", "b1");
	m2 = send_ok(b, ch, "also abusive", "b2");

	/* another member: no */
	h_req_fail("FORBIDDEN", c, "delete", 2, "ch", 's', ch, "target", 'u',
		   m1);
	/* the owner may not edit it, but may delete it */
	h_req_fail("FORBIDDEN", a, "edit", 3, "ch", 's', ch, "target", 'u',
		   m1, "body", 's', "nicer");
	h_req_ok(a, &res, "delete", 2, "ch", 's', ch, "target", 'u', m1);
	proto_doc_free(&res);
	/* a workspace admin, no member */
	h_req_ok(adm, &res, "delete", 2, "ch", 's', ch, "target", 'u', m2);
	proto_doc_free(&res);

	h_req_ok(c, &res, "history", 1, "ch", 's', ch);
	{
		const msgpack_object_array *arr = NULL;

		assert_int_equal(proto_get_array(&res.root, "msgs", &arr), 0);
		assert_int_equal(arr->size, 2);
		for (uint32_t i = 0; i < arr->size; i++) {
			assert_true(bool_at(&arr->ptr[i], "deleted"));
			assert_string_equal(h_s(&arr->ptr[i], "body"), "");
		}
	}
	proto_doc_free(&res);
	pc_close(a);
	pc_close(b);
	pc_close(c);
	pc_close(adm);
	h_finish(&s);
}

/* ---- data from before the registry --------------------------------------- */

static void put_done(void *ctx, int status)
{
	*(int *)((char *)ctx + sizeof(sem_t)) = status;
	sem_post((sem_t *)ctx);
}

/* Channels written straight into a stopped server's storage, as a server
 * without the name registry left them: no 'L' key, names shared. */
static void put_legacy_channel(store *st, const char *id, const char *ws,
			       const char *name, const char *user)
{
	struct {
		sem_t sem;
		int status;
	} w;
	store_batch *b = store_batch_new(st);
	store_channel rec = { .kind = STORE_PUBLIC, .created_ms = 1 };
	store_chstat cs = { .members = 1 };
	store_member m = { 0 };

	snprintf(rec.id, sizeof(rec.id), "%s", id);
	snprintf(rec.ws, sizeof(rec.ws), "%s", ws);
	snprintf(rec.name, sizeof(rec.name), "%s", name);
	snprintf(rec.creator, sizeof(rec.creator), "%s", user);
	store_put_channel(b, &rec);
	store_put_chstat(b, id, &cs);
	store_put_member(b, ws, id, user, &m);
	sem_init(&w.sem, 0, 0);
	w.status = -1;
	assert_int_equal(store_commit(st, 0, b, put_done, &w), 0);
	sem_wait(&w.sem);
	sem_destroy(&w.sem);
	assert_int_equal(w.status, 0);
}

static void test_names_from_before_the_registry(void **st)
{
	hsrv s;
	pc_conn *a;
	store *db;
	char *err = NULL, path[300], other[65];
	proto_doc hello, res;
	const msgpack_object_array *arr = NULL;
	unsigned n = 0;

	(void)st;
	h_start(&s, "--shards 2");
	assert_int_equal(h_stop(&s), 0);
	snprintf(path, sizeof(path), "%s/db", s.dir);
	assert_int_equal(store_open(&db, path, 4, 1, &err), 0);
	put_legacy_channel(db, "B-one", "w1", "Dup", "a");
	put_legacy_channel(db, "B-two", "w1", "dup", "a");
	put_legacy_channel(db, "B-three", "w1", "solo", "a");
	store_close(db);
	h_restart(&s);

	/* both keep their names; the first in id order holds the name now */
	a = h_connect(&s, "a", "w1", &hello);
	assert_non_null(a);
	assert_int_equal(proto_get_array(&hello.root, "channels", &arr), 0);
	for (uint32_t i = 0; i < arr->size; i++) {
		const char *nm = h_s(&arr->ptr[i], "name");

		n += !strcmp(nm, "Dup") || !strcmp(nm, "dup");
	}
	assert_int_equal(n, 2);
	proto_doc_free(&hello);
	create_conflict(a, "DUP", "public", "B-one");
	create_conflict(a, "Solo", "private", "B-three");
	/* the creator of a channel from before roles is its owner */
	{
		char own[256];

		owners_of(a, "B-two", own, sizeof(own));
		assert_string_equal(own, "a");
	}
	/* renaming the other one away leaves the holder's name taken */
	h_req_ok(a, &res, "ch.set", 2, "ch", 's', "B-two", "name", 's',
		 "dup-archive");
	proto_doc_free(&res);
	create_conflict(a, "dup", "public", "B-one");
	create_conflict(a, "dup-archive", "public", "B-two");
	h_create_ok(a, "fresh", "public", other);
	pc_close(a);

	/* and at the next start nothing changes hands */
	assert_int_equal(h_stop(&s), 0);
	h_restart(&s);
	a = h_connect_ok(&s, "a", "w1");
	create_conflict(a, "dup", "public", "B-one");
	pc_close(a);
	h_finish(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names_unique_case_insensitive),
		cmocka_unit_test(test_names_concurrent_creates_two_shards),
		cmocka_unit_test(test_names_survive_restart_and_kill9),
		cmocka_unit_test(test_rename),
		cmocka_unit_test(test_names_from_before_the_registry),
		cmocka_unit_test(test_info_visibility),
		cmocka_unit_test(test_set_rights_and_chan_frame),
		cmocka_unit_test(test_role),
		cmocka_unit_test(test_kick_private),
		cmocka_unit_test(test_kick_by_admin_public),
		cmocka_unit_test(test_archived_is_read_only),
		cmocka_unit_test(test_announcement_channel),
		cmocka_unit_test(test_moderator_delete),
	};

	/* E2E_FILTER=test_name (or a pattern with *) runs only that */
	if (getenv("E2E_FILTER"))
		cmocka_set_test_filter(getenv("E2E_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
