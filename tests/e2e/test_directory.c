/*
 * The user directory, as a client sees it: users appear from their first
 * hello, from ch.invite and from dm.open; the token's name claim is the
 * display name (in hello's answer too), updated at each hello;
 * users.search matches a prefix of the id or of any word of the name,
 * case-insensitively, ascending by id, up to limit, in the caller's
 * workspace only; users.get leaves out unknown ids and gives status and
 * last seen (the latest hello while connected, the disconnect after),
 * kept across a restart and a kill -9, and presence's since for an
 * offline user is the same last seen. GET /api/v1/channels answers
 * ch.list over REST.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>

#include "tests/e2e/harness.h"

#define FLAGS "--shards 2 --presence-coalesce-ms 0 --presence-grace-ms 300"
#define WAIT_MS 20000 /* generous: a loaded CI machine, ASan */

/* ---- helpers ----------------------------------------------------------- */

/* users.search q (limit 0: none given); the ids found, comma separated,
 * into out ("" if none). Fails the test unless ok. */
static void search(pc_conn *c, const char *q, uint64_t limit, char *out,
		   size_t cap)
{
	proto_doc res;
	const msgpack_object *u;

	if (limit)
		h_req_ok(c, &res, "users.search", 2, "q", 's', q, "limit",
			 'u', limit);
	else
		h_req_ok(c, &res, "users.search", 1, "q", 's', q);
	u = proto_get(&res.root, "users");
	assert_non_null(u);
	assert_int_equal(u->type, MSGPACK_OBJECT_ARRAY);
	out[0] = 0;
	for (uint32_t i = 0; i < u->via.array.size; i++) {
		const msgpack_object *e = &u->via.array.ptr[i];

		assert_non_null(proto_get(e, "name"));
		assert_non_null(proto_get(e, "status"));
		snprintf(out + strlen(out), cap - strlen(out), "%s%s",
			 i ? "," : "", h_s(e, "id"));
	}
	proto_doc_free(&res);
}

/* Search until the answer is want (the directory hears of invited users
 * once their invite is durable, by message): fails after WAIT_MS. */
static void search_until(pc_conn *c, const char *q, const char *want)
{
	uint64_t end = now_ms() + WAIT_MS;
	char got[4096];

	for (;;) {
		search(c, q, 0, got, sizeof(got));
		if (!strcmp(got, want))
			return;
		if (now_ms() > end)
			fail_msg("users.search %s: got [%s], want [%s]", q, got,
				 want);
		usleep(20 * 1000);
	}
}

/* The name of user in a users.search/users.get answer entry */
static const msgpack_object *find_user(const proto_doc *res, const char *id)
{
	const msgpack_object *u = proto_get(&res->root, "users");

	assert_non_null(u);
	for (uint32_t i = 0; i < u->via.array.size; i++)
		if (!strcmp(h_s(&u->via.array.ptr[i], "id"), id))
			return &u->via.array.ptr[i];
	return NULL;
}

/* users.get [user] -> its entry's fields (fails if absent) */
struct uinfo {
	char name[130], status[16];
	uint64_t last_seen;
};

static void get_one(pc_conn *c, const char *user, struct uinfo *ui)
{
	const char *v[] = { user, NULL };
	const msgpack_object *e;
	proto_doc res;

	h_req_ok(c, &res, "users.get", 1, "users", 'S', v);
	e = find_user(&res, user);
	if (!e)
		fail_msg("users.get: %s missing", user);
	snprintf(ui->name, sizeof(ui->name), "%s", h_s(e, "name"));
	snprintf(ui->status, sizeof(ui->status), "%s", h_s(e, "status"));
	assert_non_null(proto_get(e, "last_seen"));
	ui->last_seen = h_u(e, "last_seen");
	proto_doc_free(&res);
}

/* users.get until user's status is status and its last_seen > after */
static void get_until(pc_conn *c, const char *user, const char *status,
		      uint64_t after, struct uinfo *ui)
{
	uint64_t end = now_ms() + WAIT_MS;

	for (;;) {
		get_one(c, user, ui);
		if (!strcmp(ui->status, status) && ui->last_seen > after)
			return;
		if (now_ms() > end)
			fail_msg("users.get %s: %s since %llu, want %s after "
				 "%llu", user, ui->status,
				 (unsigned long long)ui->last_seen, status,
				 (unsigned long long)after);
		usleep(20 * 1000);
	}
}

/* presence.watch [user] -> since (status into st) */
static uint64_t watch_since(pc_conn *c, const char *user, char *st)
{
	const char *v[] = { user, NULL };
	const msgpack_object *p, *e = NULL;
	proto_doc res;
	uint64_t since;

	h_req_ok(c, &res, "presence.watch", 1, "users", 'S', v);
	p = proto_get(&res.root, "presence");
	assert_non_null(p);
	for (uint32_t i = 0; i < p->via.map.size; i++)
		if (p->via.map.ptr[i].key.via.str.size == strlen(user) &&
		    !memcmp(p->via.map.ptr[i].key.via.str.ptr, user,
			    strlen(user)))
			e = &p->via.map.ptr[i].val;
	assert_non_null(e);
	since = h_u(e, "since");
	strcpy(st, h_s(e, "status"));
	proto_doc_free(&res);
	return since;
}

/* ---- users appear; names ---------------------------------------------- */

static void test_users_appear(void **state)
{
	hsrv s;
	pc_conn *a, *b;
	proto_doc hello;
	char ch[65], got[1024];
	const char *inv[] = { "bob-inv", NULL }, *dm[] = { "carol-dm", NULL };

	(void)state;
	h_start(&s, FLAGS);
	a = h_connect_named(&s, "alice", "acme", "Alice Smith", &hello);
	assert_non_null(a);
	assert_string_equal(h_s(&hello.root, "name"), "Alice Smith");
	proto_doc_free(&hello);
	/* no name claim: hello names the user by its id */
	b = h_connect_named(&s, "dave", "acme", NULL, &hello);
	assert_non_null(b);
	assert_string_equal(h_s(&hello.root, "name"), "dave");
	proto_doc_free(&hello);

	/* named in ch.invite and dm.open: they exist, never having said
	 * hello (their name is their id) */
	search(a, "bob", 0, got, sizeof(got));
	assert_string_equal(got, "");
	h_create_ok(a, "general", "public", ch);
	h_req_ok(a, &hello, "ch.invite", 2, "ch", 's', ch, "users", 'S', inv);
	proto_doc_free(&hello);
	h_req_ok(a, &hello, "dm.open", 1, "users", 'S', dm);
	proto_doc_free(&hello);
	search_until(b, "bob", "bob-inv");
	search_until(b, "carol", "carol-dm");
	h_req_ok(b, &hello, "users.search", 1, "q", 's', "carol");
	assert_string_equal(h_s(find_user(&hello, "carol-dm"), "name"),
			    "carol-dm");
	assert_string_equal(h_s(find_user(&hello, "carol-dm"), "status"),
			    "offline");
	proto_doc_free(&hello);

	/* a later word of the name, any case; the id too */
	search_until(b, "SMI", "alice");
	search_until(b, "aLi", "alice");
	search_until(b, "alice sm", "alice");

	/* the name changes at the next hello */
	pc_close(a);
	a = h_connect_named(&s, "alice", "acme", "Alice Jones", NULL);
	assert_non_null(a);
	search_until(b, "jones", "alice");
	search_until(b, "smith", "");
	h_req_ok(b, &hello, "users.search", 1, "q", 's', "jon");
	assert_string_equal(h_s(find_user(&hello, "alice"), "name"),
			    "Alice Jones");
	proto_doc_free(&hello);

	/* and it is kept across a restart */
	pc_close(a);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_restart(&s);
	b = h_connect_ok(&s, "dave", "acme");
	search(b, "jo", 0, got, sizeof(got));
	assert_string_equal(got, "alice");
	search(b, "c", 0, got, sizeof(got));
	assert_string_equal(got, "carol-dm");
	search(b, "b", 0, got, sizeof(got));
	assert_string_equal(got, "bob-inv");
	pc_close(b);
	h_finish(&s);
}

/* A name whose words end in the user's id ("Ann Lee" of lee), renamed
 * after a restart (the index then holds two equal keys of one user), must
 * leave the id findable (the wrong one of the two was dropped, and the
 * other pointed at the freed name); and a name over 128 bytes is cut
 * between characters, not inside one. */
static void test_names_edge(void **state)
{
	hsrv s;
	pc_conn *a, *b;
	proto_doc hello;
	char got[1024], name[200];

	(void)state;
	h_start(&s, FLAGS);
	a = h_connect_named(&s, "lee", "acme", "Ann Lee", NULL);
	assert_non_null(a);
	b = h_connect_named(&s, "alice", "acme", "Alice", NULL);
	assert_non_null(b);
	pc_close(a);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_restart(&s);
	a = h_connect_named(&s, "lee", "acme", "Zed Quinn", NULL);
	assert_non_null(a);
	b = h_connect_named(&s, "alice", "acme", "Yvonne", NULL);
	assert_non_null(b);
	search_until(a, "zed", "lee");
	search_until(a, "yv", "alice");
	search(a, "le", 0, got, sizeof(got));
	assert_string_equal(got, "lee");
	search(a, "ali", 0, got, sizeof(got));
	assert_string_equal(got, "alice");
	search(a, "ann", 0, got, sizeof(got));
	assert_string_equal(got, "");
	pc_close(a);
	pc_close(b);

	/* 127 bytes of 'a', then a 2-byte character: 129 bytes */
	memset(name, 'a', 127);
	memcpy(name + 127, "\xc3\xa9", 3);
	a = h_connect_named(&s, "long", "acme", name, &hello);
	assert_non_null(a);
	name[127] = 0;
	assert_string_equal(h_s(&hello.root, "name"), name);
	proto_doc_free(&hello);
	pc_close(a);
	h_finish(&s);
}

/* ---- search rules ------------------------------------------------------- */

static void test_search_rules(void **state)
{
	hsrv s;
	pc_conn *c[5], *o;
	char got[1024], q65[66];
	proto_doc res;

	(void)state;
	h_start(&s, FLAGS);
	c[0] = h_connect_named(&s, "ann", "w1", NULL, NULL);
	c[1] = h_connect_named(&s, "Anna-2", "w1", "Zed", NULL);
	c[2] = h_connect_named(&s, "bob", "w1", "Annie Lee", NULL);
	c[3] = h_connect_named(&s, "zoe", "w1", "Mary ANNE Lee", NULL);
	c[4] = h_connect_named(&s, "carl", "w1", "Carl", NULL);
	o = h_connect_named(&s, "anton", "w2", "Ann Other", NULL);
	for (int i = 0; i < 5; i++)
		assert_non_null(c[i]);
	assert_non_null(o);

	/* ascending by id (bytes: upper case first), each user once
	 * although zoe matches by two words */
	search_until(c[4], "an", "Anna-2,ann,bob,zoe");
	search(c[4], "AN", 0, got, sizeof(got));
	assert_string_equal(got, "Anna-2,ann,bob,zoe");
	search(c[4], "lee", 0, got, sizeof(got));
	assert_string_equal(got, "bob,zoe");
	search(c[4], "an", 2, got, sizeof(got));
	assert_string_equal(got, "Anna-2,ann");
	search(c[4], "an", 3, got, sizeof(got));
	assert_string_equal(got, "Anna-2,ann,bob");
	search(c[4], "nn", 0, got, sizeof(got)); /* prefixes only */
	assert_string_equal(got, "");
	search(c[4], "zed", 0, got, sizeof(got));
	assert_string_equal(got, "Anna-2");

	/* another workspace sees only its own */
	search(o, "an", 0, got, sizeof(got));
	assert_string_equal(got, "anton");
	search(c[4], "anto", 0, got, sizeof(got));
	assert_string_equal(got, "");
	search(c[4], "other", 0, got, sizeof(got));
	assert_string_equal(got, "");

	/* statuses: online users show online */
	h_req_ok(c[4], &res, "users.search", 1, "q", 's', "carl");
	assert_string_equal(h_s(find_user(&res, "carl"), "status"), "online");
	proto_doc_free(&res);

	/* bad arguments */
	memset(q65, 'a', 65);
	q65[65] = 0;
	h_req_fail("BAD_REQUEST", c[4], "users.search", 1, "q", 's', "");
	h_req_fail("BAD_REQUEST", c[4], "users.search", 1, "q", 's', q65);
	h_req_fail("BAD_REQUEST", c[4], "users.search", 0);
	h_req_fail("BAD_REQUEST", c[4], "users.search", 2, "q", 's', "a",
		   "limit", 'u', (uint64_t)0);
	h_req_fail("BAD_REQUEST", c[4], "users.search", 2, "q", 's', "a",
		   "limit", 'u', (uint64_t)51);
	h_req_fail("BAD_REQUEST", c[4], "users.search", 1, "q", 'u',
		   (uint64_t)5);
	h_req_fail("BAD_REQUEST", c[4], "users.get", 0);
	{
		const char *bad[] = { "bad id!", NULL };

		h_req_fail("BAD_REQUEST", c[4], "users.get", 1, "users", 'S',
			   bad);
	}
	for (int i = 0; i < 5; i++)
		pc_close(c[i]);
	pc_close(o);
	h_finish(&s);
}

/* ---- users.get and last seen -------------------------------------------- */

static void test_users_get(void **state)
{
	hsrv s;
	pc_conn *w, *u, *x;
	proto_doc res;
	struct uinfo a, b;
	char st[16];
	const char *ids[] = { "nobody", "ursula", "xavier", "ursula", "watcher",
			      NULL };

	(void)state;
	h_start(&s, FLAGS);
	w = h_connect_ok(&s, "watcher", "acme");
	x = h_connect_ok(&s, "xavier", "other"); /* another workspace */
	u = h_connect_named(&s, "ursula", "acme", "Ursula K", NULL);
	assert_non_null(u);

	/* unknown ids and other workspaces' users are left out, and an id
	 * asked twice is answered once */
	get_until(w, "ursula", "online", 0, &a);
	h_req_ok(w, &res, "users.get", 1, "users", 'S', ids);
	assert_int_equal(proto_get(&res.root, "users")->via.array.size, 2);
	assert_null(find_user(&res, "nobody"));
	assert_null(find_user(&res, "xavier"));
	assert_non_null(find_user(&res, "watcher"));
	proto_doc_free(&res);
	assert_string_equal(a.name, "Ursula K");
	assert_true(a.last_seen > 0); /* connected: its hello */

	/* a second device's hello moves it on */
	usleep(30 * 1000);
	pc_conn *u2 = h_connect_named(&s, "ursula", "acme", "Ursula K", NULL);
	assert_non_null(u2);
	get_until(w, "ursula", "online", a.last_seen, &b);

	/* gone: last seen is when its last device left */
	usleep(30 * 1000);
	pc_close(u);
	pc_close(u2);
	get_until(w, "ursula", "offline", b.last_seen, &a);
	assert_int_equal(watch_since(w, "ursula", st), a.last_seen);
	assert_string_equal(st, "offline");

	/* kept across a restart, for users.get and presence */
	pc_close(w);
	pc_close(x);
	assert_int_equal(h_stop(&s), 0);
	h_restart(&s);
	w = h_connect_ok(&s, "watcher", "acme");
	get_one(w, "ursula", &b);
	assert_string_equal(b.status, "offline");
	assert_int_equal(b.last_seen, a.last_seen);
	assert_string_equal(b.name, "Ursula K");
	assert_int_equal(watch_since(w, "ursula", st), a.last_seen);
	assert_string_equal(st, "offline");
	pc_close(w);
	h_finish(&s);
}

/* Across kill -9. A value users.get reports has been durable before the
 * directory hears of it (the presence actor tells it once the write is
 * synced), so once a watcher sees it, a kill -9 cannot take it back. */
static void test_last_seen_kill9(void **state)
{
	hsrv s;
	pc_conn *w, *u;
	struct uinfo a, b;
	char st[16];

	(void)state;
	h_start(&s, FLAGS);
	w = h_connect_ok(&s, "watcher", "acme");
	u = h_connect_named(&s, "ursula", "acme", "Ursula", NULL);
	assert_non_null(u);
	get_until(w, "ursula", "online", 0, &a);
	usleep(30 * 1000);
	pc_close(u);
	get_until(w, "ursula", "offline", a.last_seen, &a);

	/* after it disconnected */
	h_kill9(&s);
	h_restart(&s);
	pc_close(w);
	w = h_connect_ok(&s, "watcher", "acme");
	get_one(w, "ursula", &b);
	assert_string_equal(b.status, "offline");
	assert_int_equal(b.last_seen, a.last_seen);
	assert_int_equal(watch_since(w, "ursula", st), a.last_seen);

	/* while it is connected: its latest hello */
	usleep(30 * 1000);
	u = h_connect_named(&s, "ursula", "acme", "Ursula", NULL);
	assert_non_null(u);
	get_until(w, "ursula", "online", a.last_seen, &b);
	h_kill9(&s);
	pc_close(u);
	pc_close(w);
	h_restart(&s);
	w = h_connect_ok(&s, "watcher", "acme");
	get_one(w, "ursula", &a);
	assert_string_equal(a.status, "offline");
	assert_int_equal(a.last_seen, b.last_seen);
	assert_int_equal(watch_since(w, "ursula", st), b.last_seen);
	assert_string_equal(st, "offline");
	pc_close(w);
	h_finish(&s);
}

/* ---- GET /api/v1/channels ------------------------------------------------- */

static int http_get(hsrv *s, const char *path, const char *auth,
		    json_t **json)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)s->port) };
	struct timeval tv = { .tv_sec = 10 };
	char head[4096], *buf = malloc(1 << 20), *end;
	size_t len = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0), n, status = 0;

	assert_true(fd >= 0);
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	n = snprintf(head, sizeof(head),
		     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%s"
		     "Connection: close\r\n\r\n",
		     path, auth ? "Authorization: " : "", auth ? auth : "",
		     auth ? "\r\n" : "");
	assert_int_equal(write(fd, head, (size_t)n), n);
	for (;;) {
		ssize_t got = read(fd, buf + len, (1 << 20) - len - 1);

		if (got <= 0)
			break;
		len += (size_t)got;
	}
	close(fd);
	buf[len] = 0;
	assert_int_equal(sscanf(buf, "HTTP/1.1 %d", &status), 1);
	end = strstr(buf, "\r\n\r\n");
	assert_non_null(end);
	*json = json_loads(end + 4, 0, NULL);
	free(buf);
	return status;
}

static void test_rest_channels(void **state)
{
	hsrv s;
	pc_conn *a, *b;
	char mine[65], theirs[65], priv[65], auth[2048], *tok;
	json_t *j, *chs;
	int st, found = 0;

	(void)state;
	h_start(&s, FLAGS);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a, "mine", "public", mine);
	h_create_ok(b, "theirs", "public", theirs);
	h_create_ok(b, "hidden", "private", priv);

	tok = h_token(&s, "alice", "acme");
	snprintf(auth, sizeof(auth), "Bearer %s", tok);
	free(tok);
	st = http_get(&s, "/api/v1/channels", auth, &j);
	assert_int_equal(st, 200);
	assert_non_null(j);
	chs = json_object_get(j, "channels");
	assert_true(json_is_array(chs));
	for (size_t i = 0; i < json_array_size(chs); i++) {
		json_t *c = json_array_get(chs, i);
		const char *id = json_string_value(json_object_get(c, "id"));

		assert_non_null(id);
		assert_string_not_equal(id, priv);
		if (!strcmp(id, mine)) {
			assert_true(json_is_true(json_object_get(c, "member")));
			assert_string_equal(json_string_value(
				json_object_get(c, "name")), "mine");
			found |= 1;
		}
		if (!strcmp(id, theirs)) {
			assert_true(json_is_false(json_object_get(c, "member")));
			found |= 2;
		}
	}
	assert_int_equal(found, 3);
	json_decref(j);

	/* bad and missing tokens */
	st = http_get(&s, "/api/v1/channels", "Bearer not.a.token", &j);
	assert_int_equal(st, 401);
	assert_string_equal(json_string_value(json_object_get(j, "code")),
			    "UNAUTHORIZED");
	json_decref(j);
	st = http_get(&s, "/api/v1/channels", NULL, &j);
	assert_int_equal(st, 401);
	json_decref(j);
	pc_close(a);
	pc_close(b);
	h_finish(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_users_appear),
		cmocka_unit_test(test_names_edge),
		cmocka_unit_test(test_search_rules),
		cmocka_unit_test(test_users_get),
		cmocka_unit_test(test_last_seen_kill9),
		cmocka_unit_test(test_rest_channels),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
