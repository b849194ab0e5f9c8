/*
 * What a user cannot see inside its own workspace, as a client sees it. A
 * private channel or DM the user is not a member of does not exist for it:
 * every op that names the channel (send, history, events, edit, edits,
 * delete, react, read, typing, ch.join, ch.leave, ch.invite, ch.members,
 * search in it), with and without rid, and REST GET/POST on its messages,
 * answers word for word what an id never created gets: NOT_FOUND, the same
 * msg, the same HTTP body. A public channel stays visible (readable, and
 * FORBIDDEN for writing without joining).
 *
 * DM ids are keyed with the data directory's dm.key: not the unkeyed hash
 * older servers used (which anyone could compute from the member ids), the
 * same for the same members in any order, the same after the JWT secret is
 * rotated, different on another server (another dm.key). A DM made by an older server under its unkeyed id (written here
 * into the data directory the way that server wrote it) is the channel
 * dm.open answers after the upgrade, with its history.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
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

#include "storage/store.h"
#include "runtime/hash.h"
#include "tests/e2e/harness.h"

#define FAST "--shards 2 --send-rate 100000 --send-burst 100000"
#define NEVER "Cnever0000000000" /* a channel id nobody made */

/* ---- helpers ------------------------------------------------------------- */

static const char *ch_id(const proto_doc *res)
{
	const msgpack_object *ch = proto_get(&res->root, "ch");

	assert_non_null(ch);
	return h_s(ch, "id");
}

/* dm.open by c with users; the DM's id into out. */
static void dm_open(pc_conn *c, const char **users, char *out)
{
	proto_doc res;

	assert_int_equal(h_req(c, &res, "dm.open", 1, "users", 'S', users), 1);
	if (!h_ok(&res))
		fail_msg("dm.open: %s %s", h_code(&res), h_s(&res.root, "msg"));
	snprintf(out, 65, "%s", ch_id(&res));
	proto_doc_free(&res);
}

/* The ops that name a channel, each encoded for ch (rid 0: none). */
static const char *const ops[] = {
	"send",      "history",  "events",     "edit",     "edits",
	"delete",    "react",    "read",       "typing",   "ch.join",
	"ch.leave",  "ch.invite", "ch.members", "search",
};
#define NOPS (sizeof(ops) / sizeof(ops[0]))

static void enc_op(proto_out *o, const char *op, const char *ch,
		   uint64_t rid)
{
	msgpack_packer *pk = &o->pk;
	unsigned n = !strcmp(op, "send") || !strcmp(op, "edit") ||
				     !strcmp(op, "events")
			     ? 3
		     : !strcmp(op, "react")                        ? 4
		     : !strcmp(op, "edits") || !strcmp(op, "delete") ||
				     !strcmp(op, "read") ||
				     !strcmp(op, "ch.invite") ||
				     !strcmp(op, "search")
			     ? 2
			     : 1;

	proto_enc_req(o, op, rid, n);
	proto_pk_cstr(pk, "ch");
	proto_pk_cstr(pk, ch);
	if (!strcmp(op, "send")) {
		proto_pk_cstr(pk, "body");
		proto_pk_cstr(pk, "let me in");
		proto_pk_cstr(pk, "cmid");
		proto_pk_cstr(pk, "x1");
	} else if (!strcmp(op, "events")) {
		proto_pk_cstr(pk, "after");
		msgpack_pack_uint64(pk, 0);
		proto_pk_cstr(pk, "limit");
		msgpack_pack_uint64(pk, 10);
	} else if (!strcmp(op, "edit")) {
		proto_pk_cstr(pk, "target");
		msgpack_pack_uint64(pk, 1);
		proto_pk_cstr(pk, "body");
		proto_pk_cstr(pk, "mine now");
	} else if (!strcmp(op, "react")) {
		proto_pk_cstr(pk, "target");
		msgpack_pack_uint64(pk, 1);
		proto_pk_cstr(pk, "emoji");
		proto_pk_cstr(pk, "eyes");
		proto_pk_cstr(pk, "on");
		msgpack_pack_true(pk);
	} else if (!strcmp(op, "edits") || !strcmp(op, "delete")) {
		proto_pk_cstr(pk, "target");
		msgpack_pack_uint64(pk, 1);
	} else if (!strcmp(op, "read")) {
		proto_pk_cstr(pk, "seq");
		msgpack_pack_uint64(pk, 1);
	} else if (!strcmp(op, "ch.invite")) {
		proto_pk_cstr(pk, "users");
		msgpack_pack_array(pk, 1);
		proto_pk_cstr(pk, "mallory");
	} else if (!strcmp(op, "search")) {
		proto_pk_cstr(pk, "q");
		proto_pk_cstr(pk, "secret");
	}
}

static uint64_t rid_next = 1u << 20;

/* op on ch with a rid: its answer. */
static void ask(pc_conn *c, const char *op, const char *ch, proto_doc *res)
{
	proto_out o;
	uint64_t rid = rid_next++;

	proto_out_init(&o, 0, 256);
	enc_op(&o, op, ch, rid);
	assert_int_equal(pc_send(c, &o), 0);
	proto_out_free(&o);
	assert_int_equal(pc_await(c, rid, res, H_TIMEOUT), 1);
}

/* op on ch without a rid: the err frame it gets. */
static void tell(pc_conn *c, const char *op, const char *ch, proto_doc *res)
{
	proto_out o;

	proto_out_init(&o, 0, 256);
	enc_op(&o, op, ch, 0);
	assert_int_equal(pc_send(c, &o), 0);
	proto_out_free(&o);
	for (;;) {
		assert_int_equal(h_next(c, res, H_TIMEOUT), 1);
		if (!strcmp(h_s(&res->root, "t"), "err"))
			return;
		proto_doc_free(res); /* member, presence...: not the answer */
	}
}

/* a and b are the same answer, key for key, but for rid. */
static void same_answer(const proto_doc *a, const proto_doc *b,
			const char *what)
{
	const msgpack_object_map *ma = &a->root.via.map;
	uint32_t na = 0, nb = 0;

	assert_int_equal(a->root.type, MSGPACK_OBJECT_MAP);
	assert_int_equal(b->root.type, MSGPACK_OBJECT_MAP);
	for (uint32_t i = 0; i < ma->size; i++) {
		const msgpack_object *k = &ma->ptr[i].key, *v;
		char key[64];

		assert_int_equal(k->type, MSGPACK_OBJECT_STR);
		snprintf(key, sizeof(key), "%.*s", (int)k->via.str.size,
			 k->via.str.ptr);
		if (!strcmp(key, "rid"))
			continue;
		na++;
		v = proto_get(&b->root, key);
		if (!v || !msgpack_object_equal(ma->ptr[i].val, *v)) {
			char ca[64], ma_[256];

			/* h_code and h_s share one static buffer */
			snprintf(ca, sizeof(ca), "%s", h_code(a));
			snprintf(ma_, sizeof(ma_), "%s", h_s(&a->root, "msg"));
			fail_msg("%s: answers differ in \"%s\" (%s \"%s\" vs "
				 "%s)", what, key, ca, ma_, h_code(b));
		}
	}
	for (uint32_t i = 0; i < b->root.via.map.size; i++) {
		const msgpack_object *k = &b->root.via.map.ptr[i].key;

		if (!(k->via.str.size == 3 && !memcmp(k->via.str.ptr, "rid", 3)))
			nb++;
	}
	if (na != nb)
		fail_msg("%s: %u keys vs %u", what, na, nb);
}

/* Every op on hidden, by c, answers exactly as on NEVER: NOT_FOUND. */
static void hidden_like_never(pc_conn *c, const char *hidden,
			      const char *what)
{
	for (size_t i = 0; i < NOPS; i++) {
		proto_doc h, n;
		char label[128];

		snprintf(label, sizeof(label), "%s %s", what, ops[i]);
		ask(c, ops[i], hidden, &h);
		ask(c, ops[i], NEVER, &n);
		if (h_ok(&h))
			fail_msg("%s: answered ok", label);
		assert_string_equal(h_code(&n), "NOT_FOUND");
		same_answer(&h, &n, label);
		proto_doc_free(&h);
		proto_doc_free(&n);

		snprintf(label, sizeof(label), "%s %s (no rid)", what, ops[i]);
		tell(c, ops[i], hidden, &h);
		tell(c, ops[i], NEVER, &n);
		assert_string_equal(h_code(&n), "NOT_FOUND");
		same_answer(&h, &n, label);
		proto_doc_free(&h);
		proto_doc_free(&n);
	}
}

/* The history of ch as member c sees it: its message count. */
static uint32_t history_len(pc_conn *c, const char *ch)
{
	const msgpack_object_array *msgs;
	proto_doc res;
	uint32_t n;

	assert_int_equal(h_req(c, &res, "history", 1, "ch", 's', ch), 1);
	if (!h_ok(&res))
		fail_msg("history: %s", h_code(&res));
	assert_int_equal(proto_get_array(&res.root, "msgs", &msgs), 0);
	n = msgs->size;
	proto_doc_free(&res);
	return n;
}

/* ---- a tiny HTTP client ---------------------------------------------------- */

/* One request on a fresh connection (Connection: close); the status and
 * the body (malloc'd) of the answer. */
static int http(hsrv *s, const char *method, const char *path,
		const char *token, const char *body, char **out)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)s->port) };
	struct timeval tv = { .tv_sec = 10 };
	int fd = socket(AF_INET, SOCK_STREAM, 0), status = 0;
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap), *end;
	ssize_t got;

	assert_true(fd >= 0);
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	len = (size_t)snprintf(buf, cap,
			       "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
			       "Authorization: Bearer %s\r\nConnection: close\r\n"
			       "Content-Type: application/json\r\n"
			       "Content-Length: %zu\r\n\r\n%s",
			       method, path, token, body ? strlen(body) : 0,
			       body ? body : "");
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	len = 0;
	while ((got = read(fd, buf + len, cap - len - 1)) > 0)
		len += (size_t)got;
	close(fd);
	buf[len] = 0;
	assert_int_equal(sscanf(buf, "HTTP/1.1 %d", &status), 1);
	end = strstr(buf, "\r\n\r\n");
	assert_non_null(end);
	*out = strdup(end + 4);
	free(buf);
	return status;
}

/* ---- hidden channels ------------------------------------------------------- */

/* A private channel and a DM, seen by a workspace member who is in
 * neither and by a user of another workspace: every op answers as for an
 * id nobody made; nothing of it changed the channels. */
static void test_hidden_channels_answer_like_missing(void **st)
{
	hsrv s;
	pc_conn *a, *b, *d, *x;
	char priv[65], pub[65], dm[65], left[65];
	const char *bob[] = { "bob", NULL }, *dave[] = { "dave", NULL };
	proto_doc res;

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	d = h_connect_ok(&s, "dave", "acme");
	x = h_connect_ok(&s, "dave", "other");
	assert_int_equal(h_create(a, "plans", "private", priv), 0);
	assert_int_equal(h_create(a, "lobby", "public", pub), 0);
	assert_int_equal(h_send(a, priv, "the secret plan", "a1"), 1);
	assert_int_equal(h_send(a, pub, "hello all", "a2"), 1);
	dm_open(a, bob, dm);
	assert_int_equal(h_send(a, dm, "just us, secret", "a3"), 1);
	/* one dave was in and left: closed to him like the others */
	assert_int_equal(h_create(a, "was-open", "private", left), 0);
	assert_int_equal(h_req(a, &res, "ch.invite", 2, "ch", 's', left,
			       "users", 'S', dave), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	assert_int_equal(h_req(d, &res, "ch.leave", 1, "ch", 's', left), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);

	hidden_like_never(d, priv, "private channel");
	hidden_like_never(d, dm, "DM");
	hidden_like_never(d, left, "private channel left");
	hidden_like_never(x, priv, "other workspace's private channel");
	hidden_like_never(x, dm, "other workspace's DM");

	/* None of it reached the channels. */
	assert_int_equal(history_len(a, priv), 1);
	assert_int_equal(history_len(a, dm), 1);
	assert_int_equal(history_len(b, dm), 1);
	assert_int_equal(h_req(a, &res, "ch.members", 1, "ch", 's', priv), 1);
	assert_true(h_ok(&res));
	{
		const msgpack_object_array *m;

		assert_int_equal(proto_get_array(&res.root, "members", &m), 0);
		assert_int_equal(m->size, 1);
	}
	proto_doc_free(&res);

	/* A public channel stays visible: readable, not writable unjoined. */
	assert_int_equal(history_len(d, pub), 1);
	ask(d, "send", pub, &res);
	assert_false(h_ok(&res));
	assert_string_equal(h_code(&res), "FORBIDDEN");
	proto_doc_free(&res);
	ask(d, "search", pub, &res);
	assert_string_equal(h_code(&res), "FORBIDDEN");
	proto_doc_free(&res);
	ask(d, "ch.join", pub, &res);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	assert_int_equal(h_send(d, pub, "joined", "d1"), 2);
	/* ... and another workspace's public channel does not exist */
	ask(x, "history", pub, &res);
	assert_string_equal(h_code(&res), "NOT_FOUND");
	proto_doc_free(&res);

	pc_close(a);
	pc_close(b);
	pc_close(d);
	pc_close(x);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* REST: GET and POST on a private channel's or a DM's messages answer 404
 * with the body a missing channel gets. */
static void test_rest_hidden_is_404_like_missing(void **st)
{
	hsrv s;
	pc_conn *a;
	char priv[65], dm[65], path[160], npath[160];
	const char *bob[] = { "bob", NULL };
	const char *chs[2];
	char *tok, *body_h, *body_n;
	const char *post = "{\"body\":\"let me in\",\"cmid\":\"r1\"}";

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	assert_int_equal(h_create(a, "plans", "private", priv), 0);
	assert_int_equal(h_send(a, priv, "the secret plan", "a1"), 1);
	dm_open(a, bob, dm);
	chs[0] = priv;
	chs[1] = dm;
	tok = h_token(&s, "dave", "acme");
	snprintf(npath, sizeof(npath), "/api/v1/channels/%s/messages", NEVER);
	for (int i = 0; i < 2; i++) {
		int sh, sn;

		snprintf(path, sizeof(path), "/api/v1/channels/%s/messages",
			 chs[i]);
		sh = http(&s, "GET", path, tok, NULL, &body_h);
		sn = http(&s, "GET", npath, tok, NULL, &body_n);
		assert_int_equal(sn, 404);
		assert_int_equal(sh, sn);
		assert_string_equal(body_h, body_n);
		free(body_h);
		free(body_n);
		sh = http(&s, "POST", path, tok, post, &body_h);
		sn = http(&s, "POST", npath, tok, post, &body_n);
		assert_int_equal(sn, 404);
		assert_int_equal(sh, sn);
		assert_string_equal(body_h, body_n);
		free(body_h);
		free(body_n);
	}
	free(tok);
	assert_int_equal(history_len(a, priv), 1);
	pc_close(a);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* ---- DM ids ---------------------------------------------------------------- */

static int cmp_str(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* The DM id older servers made: "D" + 16 hex of FNV-1a 64 over the
 * workspace and the sorted member set, a zero byte before each member. */
static void old_dm_id(const char *ws, const char **members, unsigned n,
		      char *out)
{
	const char *m[256];
	uint64_t h = rt_fnv1a_str(RT_FNV_OFFSET, ws);

	memcpy(m, members, n * sizeof(*m));
	qsort(m, n, sizeof(*m), cmp_str);
	for (unsigned i = 0; i < n; i++) {
		h = rt_fnv1a_step(h, "", 1);
		h = rt_fnv1a_str(h, m[i]);
	}
	snprintf(out, 65, "D%016llx", (unsigned long long)h);
}

/* Replace the server's secret (it is read at start). */
static void set_secret(hsrv *s, const char *secret)
{
	int fd = open(s->secret, O_WRONLY | O_TRUNC);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, secret, strlen(secret)),
			 (ssize_t)strlen(secret));
	close(fd);
}

static void test_dm_ids_keyed(void **st)
{
	hsrv s, t;
	pc_conn *a, *b, *c, *a2;
	char ab[65], ba[65], abc[65], cba[65], old[65], other[65];
	const char *bob[] = { "bob", NULL }, *alice[] = { "alice", NULL };
	const char *bc[] = { "bob", "carol", NULL };
	const char *cb[] = { "bob", "alice", "bob", NULL };
	const char *ab_set[] = { "alice", "bob" };
	const char *abc_set[] = { "alice", "bob", "carol" };

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	c = h_connect_ok(&s, "carol", "acme");
	dm_open(a, bob, ab);
	dm_open(b, alice, ba);
	assert_string_equal(ab, ba); /* same members, either side */
	dm_open(a, bc, abc);
	dm_open(c, cb, cba);
	assert_string_equal(abc, cba); /* any order, duplicates once */
	assert_string_not_equal(ab, abc);
	/* nobody can compute them from the member ids any more */
	old_dm_id("acme", ab_set, 2, old);
	assert_string_not_equal(ab, old);
	old_dm_id("acme", abc_set, 3, old);
	assert_string_not_equal(abc, old);
	/* ids stay ids: 1-64 bytes of [A-Za-z0-9._-] */
	assert_true(strlen(ab) >= 1 && strlen(ab) <= 64);
	assert_int_equal(strspn(ab, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklm"
				    "nopqrstuvwxyz0123456789._-"),
			 strlen(ab));
	/* the same after a restart */
	pc_close(a);
	pc_close(b);
	pc_close(c);
	assert_int_equal(h_stop(&s), 0);
	h_restart(&s);
	a2 = h_connect_ok(&s, "alice", "acme");
	dm_open(a2, bob, ba);
	assert_string_equal(ab, ba);
	pc_close(a2);

	/* The JWT secret rotated: every DM keeps its id (they are keyed by
	 * the data directory's dm.key, not by the secret). */
	assert_int_equal(h_stop(&s), 0);
	set_secret(&s, "a-rotated-jwt-secret-0123456789abcdef");
	h_restart(&s);
	a2 = h_connect_ok(&s, "alice", "acme");
	dm_open(a2, bob, ba);
	assert_string_equal(ab, ba);
	dm_open(a2, bc, cba);
	assert_string_equal(abc, cba);
	pc_close(a2);

	/* Another server (another data directory, another dm.key), the same
	 * secret even: another id for the same DM. */
	h_start(&t, FAST);
	a2 = h_connect_ok(&t, "alice", "acme");
	dm_open(a2, bob, other);
	assert_string_not_equal(other, ab);
	pc_close(a2);

	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
	assert_int_equal(h_stop(&t), 0);
	h_cleanup(&t);
}

static void commit_done(void *ctx, int status)
{
	__atomic_store_n((int *)ctx, status == 0 ? 1 : -1, __ATOMIC_RELEASE);
}

/* Write, into a stopped server's data, a DM the way an older server made
 * it: under its unkeyed id, with its members and one message. */
static void write_old_dm(hsrv *s, const char *ws, const char **members,
			 unsigned n, const char *id, const char *body)
{
	char path[300], *err = NULL;
	store *db;
	store_batch *bt;
	store_channel rec = { 0 };
	store_member m = { .joined_ms = 1 };
	store_chstat stat = { .last_seq = 1, .msgs = 1, .members = n };
	proto_out o;
	uint64_t ts = (uint64_t)time(NULL) * 1000, deadline;
	int done = 0;

	snprintf(path, sizeof(path), "%s/db", s->dir);
	if (store_open(&db, path, 8, 1, &err))
		fail_msg("store_open: %s", err);
	bt = store_batch_new(db);
	snprintf(rec.id, sizeof(rec.id), "%s", id);
	snprintf(rec.ws, sizeof(rec.ws), "%s", ws);
	snprintf(rec.creator, sizeof(rec.creator), "%s", members[0]);
	rec.kind = STORE_DM;
	rec.created_ms = ts;
	store_put_channel(bt, &rec);
	for (unsigned i = 0; i < n; i++) {
		m.read_seq = i == 0 ? 1 : 0; /* the sender read its own */
		store_put_member(bt, ws, id, members[i], &m);
	}
	store_put_chstat(bt, id, &stat);
	proto_event e = {
		.ch = { id, (uint32_t)strlen(id) },
		.seq = 1,
		.k = { "msg", 3 },
		.ts = ts,
		.from = { members[0], (uint32_t)strlen(members[0]) },
		.body = { body, (uint32_t)strlen(body) },
		.cmid = { "old1", 4 },
	};
	proto_out_init(&o, 0, 256);
	proto_enc_event(&o, &e);
	store_put_event(bt, id, 1, o.data, o.len, 1);
	proto_out_reset(&o);
	proto_msg hm = { .seq = 1, .from = e.from, .ts = ts, .body = e.body,
			 .cmid = e.cmid };
	proto_enc_msg(&o, &hm);
	store_put_msg(bt, id, 0, 1, o.data, o.len);
	proto_out_free(&o);
	store_put_cmid(bt, id, members[0], "old1", 4, 1);
	assert_int_equal(store_commit(db, 0, bt, commit_done, &done), 0);
	deadline = now_ms() + 30000;
	while (!__atomic_load_n(&done, __ATOMIC_ACQUIRE) && now_ms() < deadline)
		usleep(1000);
	assert_int_equal(done, 1);
	store_close(db);
}

/* A DM an older server made stays the DM of its members after the
 * upgrade: dm.open answers its old id, from either side, with its
 * history, and it goes on working. */
static void test_dm_from_before_keyed_ids(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	proto_doc res;
	const msgpack_object_array *msgs;
	const char *ab_set[] = { "alice", "bob" };
	const char *bob[] = { "bob", NULL }, *alice[] = { "alice", NULL };
	const char *bc[] = { "bob", "carol", NULL };
	char old[65], got[65], fresh[65];

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	pc_close(a);
	assert_int_equal(h_stop(&s), 0);
	old_dm_id("acme", ab_set, 2, old);
	write_old_dm(&s, "acme", ab_set, 2, old, "from the old days");
	h_restart(&s);

	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	dm_open(a, bob, got);
	assert_string_equal(got, old);
	dm_open(b, alice, got);
	assert_string_equal(got, old);
	assert_int_equal(h_req(b, &res, "history", 1, "ch", 's', old), 1);
	assert_true(h_ok(&res));
	assert_int_equal(proto_get_array(&res.root, "msgs", &msgs), 0);
	assert_int_equal(msgs->size, 1);
	assert_int_equal(msgs->ptr[0].type, MSGPACK_OBJECT_MAP);
	assert_string_equal(h_s(&msgs->ptr[0], "body"), "from the old days");
	assert_string_equal(h_s(&msgs->ptr[0], "from"), "alice");
	proto_doc_free(&res);
	assert_int_equal(h_send(b, old, "still here", "b1"), 2);
	/* the old id names only that member set: others get keyed ids */
	dm_open(a, bc, fresh);
	assert_string_not_equal(fresh, old);
	pc_close(a);
	pc_close(b);

	/* and still after another restart */
	assert_int_equal(h_stop(&s), 0);
	h_restart(&s);
	a = h_connect_ok(&s, "alice", "acme");
	dm_open(a, bob, got);
	assert_string_equal(got, old);
	assert_int_equal(history_len(a, old), 2);
	pc_close(a);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hidden_channels_answer_like_missing),
		cmocka_unit_test(test_rest_hidden_is_404_like_missing),
		cmocka_unit_test(test_dm_ids_keyed),
		cmocka_unit_test(test_dm_from_before_keyed_ids),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
