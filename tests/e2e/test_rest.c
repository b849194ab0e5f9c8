/*
 * REST, as an HTTP client sees it: POST /api/v1/channels/{ch}/messages
 * answers 201 {seq, ts} once the message is durable (and it reaches the
 * members on WebSocket), 200 with dup:true for a repeated cmid (also after
 * kill -9), GET pages history like the `history` op, and every refusal
 * has its status and a JSON {code, msg}: 400, 401, 403, 404, 405, 413,
 * 429. Keep-alive works, and a client that hangs up before its answer
 * does not hurt the server.
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
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>

#include "tests/e2e/harness.h"

#define FAST "--shards 2 --send-rate 100000 --send-burst 100000"

/* ---- a tiny HTTP/1.1 client ------------------------------------------ */

struct hres {
	int status;
	char headers[2048];
	json_t *json; /* the body parsed, or NULL */
	char body[512];
};

static int http_open(hsrv *s)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)s->port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct timeval tv = { .tv_sec = 10 };

	assert_true(fd >= 0);
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		assert_true(w > 0);
		p += w;
		n -= (size_t)w;
	}
}

/* Read one response from fd (Content-Length framed) into r. */
static void read_resp(int fd, struct hres *r)
{
	char *buf;
	size_t cap = 1 << 20, len = 0, hl = 0, cl = 0;

	buf = malloc(cap);
	for (;;) {
		ssize_t got = read(fd, buf + len, cap - len - 1);
		char *end;

		assert_true(got > 0);
		len += (size_t)got;
		buf[len] = 0;
		end = strstr(buf, "\r\n\r\n");
		if (!end)
			continue;
		hl = (size_t)(end - buf) + 4;
		{
			char *c = strcasestr(buf, "content-length:");

			assert_non_null(c);
			cl = strtoul(c + 15, NULL, 10);
		}
		if (len >= hl + cl)
			break;
	}
	/* exactly one response: nothing may follow it unasked */
	assert_int_equal(len, hl + cl);
	memset(r, 0, sizeof(*r));
	assert_int_equal(sscanf(buf, "HTTP/1.1 %d", &r->status), 1);
	snprintf(r->headers, sizeof(r->headers), "%.*s", (int)hl, buf);
	snprintf(r->body, sizeof(r->body), "%.*s", (int)cl, buf + hl);
	r->json = json_loadb(buf + hl, cl, 0, NULL);
	free(buf);
}

/* Send one request on fd (auth NULL: no Authorization header). */
static void http_write(int fd, const char *method, const char *path,
		       const char *auth, const char *body)
{
	char head[4096];
	int n;

	n = snprintf(head, sizeof(head),
		     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%s"
		     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
		     method, path, auth ? "Authorization: " : "",
		     auth ? auth : "", auth ? "\r\n" : "",
		     body ? strlen(body) : 0);
	send_all(fd, head, (size_t)n);
	if (body)
		send_all(fd, body, strlen(body));
}

/* Send one request on fd and read one response. */
static void http_on(int fd, const char *method, const char *path,
		    const char *auth, const char *body, struct hres *r)
{
	http_write(fd, method, path, auth, body);
	read_resp(fd, r);
}

/* The server closed fd (after its answer): the next read sees EOF. */
static void expect_closed(int fd)
{
	char c;

	assert_int_equal(read(fd, &c, 1), 0);
}

static void http(hsrv *s, const char *method, const char *path,
		 const char *auth, const char *body, struct hres *r)
{
	int fd = http_open(s);

	http_on(fd, method, path, auth, body, r);
	close(fd);
}

static const char *jcode(const struct hres *r)
{
	json_t *c = r->json ? json_object_get(r->json, "code") : NULL;

	return c ? json_string_value(c) : "(none)";
}

static void expect_error(const struct hres *r, int status, const char *code)
{
	if (r->status != status)
		fail_msg("status %d, want %d: %s", r->status, status, r->body);
	assert_string_equal(jcode(r), code);
	assert_non_null(json_object_get(r->json, "msg"));
}

static void hres_free(struct hres *r)
{
	json_decref(r->json);
	r->json = NULL;
}

/* One request that must be refused with status and a JSON code. */
static void refused(hsrv *s, const char *method, const char *path,
		    const char *auth, const char *body, int status,
		    const char *code)
{
	struct hres r;

	http(s, method, path, auth, body, &r);
	expect_error(&r, status, code);
	hres_free(&r);
}

static uint64_t jint(const json_t *o, const char *k)
{
	return (uint64_t)json_integer_value(json_object_get(o, k));
}

static char *bearer(hsrv *s, const char *user, const char *ws)
{
	char *t = h_token(s, user, ws), *b = malloc(strlen(t) + 8);

	sprintf(b, "Bearer %s", t);
	free(t);
	return b;
}

struct world {
	hsrv s;
	pc_conn *alice, *bob;
	char pub[65], priv[65], path[128], ppath[128];
	char *ta, *tb, *tc, *tx; /* alice, bob (member), carol, other ws */
};

static void world_up(struct world *w, const char *flags)
{
	proto_doc res;

	h_start(&w->s, flags);
	w->alice = h_connect(&w->s, "alice", "acme", NULL);
	w->bob = h_connect(&w->s, "bob", "acme", NULL);
	assert_non_null(w->alice);
	assert_non_null(w->bob);
	assert_int_equal(h_create(w->alice, "general", "public", w->pub), 0);
	assert_int_equal(h_create(w->alice, "secret", "private", w->priv), 0);
	assert_int_equal(h_req(w->bob, &res, "ch.join", 1, "ch", 's', w->pub),
			 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	snprintf(w->path, sizeof(w->path), "/api/v1/channels/%s/messages",
		 w->pub);
	snprintf(w->ppath, sizeof(w->ppath), "/api/v1/channels/%s/messages",
		 w->priv);
	w->ta = bearer(&w->s, "alice", "acme");
	w->tb = bearer(&w->s, "bob", "acme");
	w->tc = bearer(&w->s, "carol", "acme");
	w->tx = bearer(&w->s, "alice", "globex");
}

static void world_down(struct world *w)
{
	pc_close(w->alice);
	pc_close(w->bob);
	free(w->ta);
	free(w->tb);
	free(w->tc);
	free(w->tx);
	assert_int_equal(h_stop(&w->s), 0);
	h_cleanup(&w->s);
}

/* ---- tests ------------------------------------------------------------- */

static void test_post_delivers_and_is_idempotent(void **state)
{
	struct world w;
	struct hres r;
	proto_doc ev;
	uint64_t seq, ts;

	(void)state;
	world_up(&w, FAST);
	http(&w.s, "POST", w.path, w.ta,
	     "{\"body\":\"hello from curl\",\"cmid\":\"rest-1\"}", &r);
	assert_int_equal(r.status, 201);
	seq = jint(r.json, "seq");
	ts = jint(r.json, "ts");
	assert_int_equal(seq, 1);
	assert_true(ts > 0);
	assert_null(json_object_get(r.json, "dup"));
	hres_free(&r);
	/* a member on WebSocket gets the event */
	assert_int_equal(h_expect(w.bob, "ev", &ev, H_TIMEOUT), 1);
	assert_string_equal(h_s(&ev.root, "body"), "hello from curl");
	assert_string_equal(h_s(&ev.root, "from"), "alice");
	assert_int_equal(h_u(&ev.root, "seq"), 1);
	proto_doc_free(&ev);

	/* the same cmid: 200, the same seq and ts, no second event */
	http(&w.s, "POST", w.path, w.ta,
	     "{\"body\":\"hello from curl\",\"cmid\":\"rest-1\"}", &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(jint(r.json, "seq"), seq);
	assert_int_equal(jint(r.json, "ts"), ts);
	assert_true(json_is_true(json_object_get(r.json, "dup")));
	hres_free(&r);
	assert_int_equal(h_expect(w.bob, "ev", &ev, 300), 0);

	/* a thread reply with a mention, over REST */
	http(&w.s, "POST", w.path, w.ta,
	     "{\"body\":\"reply\",\"cmid\":\"rest-2\",\"thread\":1,"
	     "\"mentions\":[\"bob\"]}", &r);
	assert_int_equal(r.status, 201);
	assert_int_equal(jint(r.json, "seq"), 2);
	hres_free(&r);
	http(&w.s, "GET", "/api/v1/channels/x/messages?thread=1", w.ta, NULL,
	     &r);
	expect_error(&r, 404, "NOT_FOUND");
	hres_free(&r);
	{
		char p[160];

		snprintf(p, sizeof(p), "%s?thread=1", w.path);
		http(&w.s, "GET", p, w.ta, NULL, &r);
		assert_int_equal(r.status, 200);
		assert_int_equal(json_array_size(json_object_get(r.json,
								 "msgs")),
				 1);
		hres_free(&r);
	}
	world_down(&w);
}

static void test_get_pages_history(void **state)
{
	struct world w;
	struct hres r;
	char p[200];
	json_t *msgs;

	(void)state;
	world_up(&w, FAST);
	for (int i = 1; i <= 7; i++) {
		char cmid[16];

		snprintf(cmid, sizeof(cmid), "m%d", i);
		assert_int_equal(h_send(w.alice, w.pub, "m", cmid), i);
	}
	http(&w.s, "GET", w.path, w.tb, NULL, &r);
	assert_int_equal(r.status, 200);
	msgs = json_object_get(r.json, "msgs");
	assert_int_equal(json_array_size(msgs), 7);
	assert_false(json_is_true(json_object_get(r.json, "more")));
	assert_int_equal(jint(json_array_get(msgs, 0), "seq"), 1);
	hres_free(&r);

	snprintf(p, sizeof(p), "%s?limit=3", w.path);
	http(&w.s, "GET", p, w.tb, NULL, &r);
	msgs = json_object_get(r.json, "msgs");
	assert_int_equal(json_array_size(msgs), 3);
	assert_int_equal(jint(json_array_get(msgs, 0), "seq"), 5);
	assert_true(json_is_true(json_object_get(r.json, "more")));
	hres_free(&r);

	snprintf(p, sizeof(p), "%s?before=5&limit=2", w.path);
	http(&w.s, "GET", p, w.tb, NULL, &r);
	msgs = json_object_get(r.json, "msgs");
	assert_int_equal(json_array_size(msgs), 2);
	assert_int_equal(jint(json_array_get(msgs, 0), "seq"), 3);
	assert_int_equal(jint(json_array_get(msgs, 1), "seq"), 4);
	hres_free(&r);

	snprintf(p, sizeof(p), "%s?after=5", w.path);
	http(&w.s, "GET", p, w.tb, NULL, &r);
	msgs = json_object_get(r.json, "msgs");
	assert_int_equal(json_array_size(msgs), 2);
	assert_int_equal(jint(json_array_get(msgs, 0), "seq"), 6);
	hres_free(&r);

	/* bad parameters */
	snprintf(p, sizeof(p), "%s?limit=0", w.path);
	refused(&w.s, "GET", p, w.tb, NULL, 400, "BAD_REQUEST");
	snprintf(p, sizeof(p), "%s?limit=201", w.path);
	refused(&w.s, "GET", p, w.tb, NULL, 400, "BAD_REQUEST");
	snprintf(p, sizeof(p), "%s?before=abc", w.path);
	refused(&w.s, "GET", p, w.tb, NULL, 400, "BAD_REQUEST");
	snprintf(p, sizeof(p), "%s?before=3&after=1", w.path);
	refused(&w.s, "GET", p, w.tb, NULL, 400, "BAD_REQUEST");
	snprintf(p, sizeof(p), "%s?colour=red", w.path);
	refused(&w.s, "GET", p, w.tb, NULL, 400, "BAD_REQUEST");
	/* ambiguous: which limit? */
	snprintf(p, sizeof(p), "%s?limit=2&limit=3", w.path);
	refused(&w.s, "GET", p, w.tb, NULL, 400, "BAD_REQUEST");
	snprintf(p, sizeof(p), "%s?before=5&limit=2&before=6", w.path);
	refused(&w.s, "GET", p, w.tb, NULL, 400, "BAD_REQUEST");
	world_down(&w);
}

static void test_refusals(void **state)
{
	struct world w;
	struct hres r;
	char big[17 * 1024 + 64], *expired, hs[64], *t;

	(void)state;
	world_up(&w, FAST);
	/* 400: not JSON, not an object, missing or ill-typed fields */
	refused(&w.s, "POST", w.path, w.ta, "{\"body\":", 400, "BAD_REQUEST");
	refused(&w.s, "POST", w.path, w.ta, "[1,2]", 400, "BAD_REQUEST");
	refused(&w.s, "POST", w.path, w.ta,
		"{\"cmid\":\"c\"}", 400, "BAD_REQUEST");
	refused(&w.s, "POST", w.path, w.ta,
		"{\"body\":5,\"cmid\":\"c\"}", 400, "BAD_REQUEST");
	refused(&w.s, "POST", w.path, w.ta,
		"{\"body\":\"x\"}", 400, "BAD_REQUEST");
	refused(&w.s, "POST", w.path, w.ta,
	     "{\"body\":\"x\",\"cmid\":\"c\",\"thread\":\"1\"}", 400, "BAD_REQUEST");
	refused(&w.s, "POST", w.path, w.ta,
	     "{\"body\":\"a\\u0000b\",\"cmid\":\"c\"}", 400, "BAD_REQUEST");
	refused(&w.s, "POST", w.path, w.ta,
	     "{\"body\":\"x\",\"cmid\":\"c\",\"mentions\":[\"bad id!\"]}",
		400, "BAD_REQUEST");

	/* 401: no header, not Bearer, a bad signature, expired, HS512 */
	http(&w.s, "POST", w.path, NULL, "{\"body\":\"x\",\"cmid\":\"c\"}", &r);
	expect_error(&r, 401, "UNAUTHORIZED");
	assert_non_null(strcasestr(r.headers, "www-authenticate: Bearer"));
	hres_free(&r);
	refused(&w.s, "GET", w.path, "Basic YWxpY2U6eA==",
		NULL, 401, "UNAUTHORIZED");
	t = strdup(w.ta);
	t[strlen(t) - 2] = t[strlen(t) - 2] == 'A' ? 'B' : 'A';
	refused(&w.s, "GET", w.path, t, NULL, 401, "UNAUTHORIZED");
	free(t);
	t = h_token_exp(&w.s, "alice", "acme", (int64_t)time(NULL) - 3600);
	expired = malloc(strlen(t) + 8);
	sprintf(expired, "Bearer %s", t);
	refused(&w.s, "GET", w.path, expired, NULL, 401, "UNAUTHORIZED");
	free(t);
	free(expired);
	/* alg none */
	snprintf(hs, sizeof(hs), "Bearer eyJhbGciOiJub25lIn0.e30.");
	refused(&w.s, "GET", w.path, hs, NULL, 401, "UNAUTHORIZED");

	/* 404: a private channel the user is not in (read and write) does
	 * not exist for it */
	refused(&w.s, "GET", w.ppath, w.tb, NULL, 404, "NOT_FOUND");
	refused(&w.s, "POST", w.ppath, w.tb,
		"{\"body\":\"x\",\"cmid\":\"c\"}", 404, "NOT_FOUND");
	/* 403: a public channel it has not joined: reading yes, writing no */
	http(&w.s, "GET", w.path, w.tc, NULL, &r);
	assert_int_equal(r.status, 200);
	hres_free(&r);
	refused(&w.s, "POST", w.path, w.tc,
		"{\"body\":\"x\",\"cmid\":\"c\"}", 403, "FORBIDDEN");

	/* 404: unknown channel, another workspace's channel, bad paths */
	http(&w.s, "GET", "/api/v1/channels/Cnothere/messages", w.ta, NULL,
	     &r);
	expect_error(&r, 404, "NOT_FOUND");
	hres_free(&r);
	refused(&w.s, "POST", w.path, w.tx,
		"{\"body\":\"x\",\"cmid\":\"c\"}", 404, "NOT_FOUND");
	refused(&w.s, "GET", w.path, w.tx, NULL, 404, "NOT_FOUND");
	refused(&w.s, "GET", "/api/v1/channel", w.ta, NULL, 404, "NOT_FOUND");
	refused(&w.s, "GET", "/api/v1/channels/bad!id/messages", w.ta,
		NULL, 404, "NOT_FOUND");

	/* 405 */
	http(&w.s, "DELETE", w.path, w.ta, NULL, &r);
	assert_int_equal(r.status, 405);
	assert_non_null(strcasestr(r.headers, "allow: GET, POST"));
	hres_free(&r);

	/* 413: a body over 16 KiB (exactly 16 KiB is fine) */
	memset(big, 0, sizeof(big));
	strcpy(big, "{\"cmid\":\"big\",\"body\":\"");
	memset(big + strlen(big), 'x', 16 * 1024 + 1);
	strcat(big, "\"}");
	refused(&w.s, "POST", w.path, w.ta, big, 413, "TOO_LARGE");
	memset(big, 0, sizeof(big));
	strcpy(big, "{\"cmid\":\"big\",\"body\":\"");
	memset(big + strlen(big), 'x', 16 * 1024);
	strcat(big, "\"}");
	http(&w.s, "POST", w.path, w.ta, big, &r);
	assert_int_equal(r.status, 201);
	hres_free(&r);
	world_down(&w);
}

static void test_rate_limit(void **state)
{
	enum { N = 6 };
	struct world w;
	struct hres r;
	char body[64];
	int fd[N], ok = 0, limited = 0;

	(void)state;
	world_up(&w, "--shards 2 --send-rate 1 --send-burst 3");
	/* all six on the wire before any answer, so they meet the bucket
	 * within a few ms however long each commit takes */
	for (int i = 0; i < N; i++) {
		snprintf(body, sizeof(body),
			 "{\"body\":\"x\",\"cmid\":\"rl-%d\"}", i);
		fd[i] = http_open(&w.s);
		http_write(fd[i], "POST", w.path, w.ta, body);
	}
	for (int i = 0; i < N; i++) {
		read_resp(fd[i], &r);
		if (r.status == 429) {
			expect_error(&r, 429, "RATE_LIMITED");
			assert_true(jint(r.json, "retry_ms") >= 1);
			assert_non_null(strcasestr(r.headers, "retry-after:"));
			limited++;
		} else {
			assert_int_equal(r.status, 201);
			ok++;
		}
		hres_free(&r);
		close(fd[i]);
	}
	/* the burst of 3 goes through (creating and joining the channel
	 * were not sends); beyond it, refused */
	assert_int_equal(ok, 3);
	assert_int_equal(limited, 3);
	world_down(&w);
}

static void test_keepalive_and_hangup(void **state)
{
	struct world w;
	struct hres r;
	int fd;

	(void)state;
	world_up(&w, FAST);
	fd = http_open(&w.s);
	http_on(fd, "POST", w.path, w.ta, "{\"body\":\"a\",\"cmid\":\"k1\"}", &r);
	assert_int_equal(r.status, 201);
	hres_free(&r);
	http_on(fd, "GET", w.path, w.ta, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(json_array_size(json_object_get(r.json, "msgs")), 1);
	hres_free(&r);
	http_on(fd, "POST", w.path, w.ta, "{\"body\":\"b\",\"cmid\":\"k2\"}", &r);
	assert_int_equal(r.status, 201);
	assert_int_equal(jint(r.json, "seq"), 2);
	hres_free(&r);
	close(fd);

	/* hang up right after sending: the send still happens, once */
	for (int i = 0; i < 20; i++) {
		const char *req_fmt =
			"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
			"Content-Length: %zu\r\n\r\n%s";
		char body[64], buf[2048];
		int n;

		snprintf(body, sizeof(body),
			 "{\"body\":\"gone\",\"cmid\":\"h%d\"}", i);
		n = snprintf(buf, sizeof(buf), req_fmt, w.path, w.ta,
			     strlen(body), body);
		fd = http_open(&w.s);
		send_all(fd, buf, (size_t)n);
		close(fd);
	}
	/* all 20 land (the server reads what was sent before the hang-up) */
	{
		uint64_t dl = now_ms() + H_TIMEOUT;
		size_t n;

		for (;;) {
			http(&w.s, "GET", w.path, w.ta, NULL, &r);
			assert_int_equal(r.status, 200);
			n = json_array_size(json_object_get(r.json, "msgs"));
			hres_free(&r);
			if (n == 22)
				break;
			if (now_ms() > dl)
				fail_msg("%zu of 22 messages stored", n);
			usleep(50 * 1000);
		}
	}
	/* the retried cmid gives the stored seq */
	http(&w.s, "POST", w.path, w.ta, "{\"body\":\"gone\",\"cmid\":\"h0\"}",
	     &r);
	assert_int_equal(r.status, 200);
	assert_true(json_is_true(json_object_get(r.json, "dup")));
	hres_free(&r);
	world_down(&w);
}

static void test_survives_kill9(void **state)
{
	struct world w;
	struct hres r;
	uint64_t seq;

	(void)state;
	world_up(&w, FAST);
	http(&w.s, "POST", w.path, w.ta, "{\"body\":\"durable\",\"cmid\":\"d1\"}",
	     &r);
	assert_int_equal(r.status, 201);
	seq = jint(r.json, "seq");
	hres_free(&r);
	/* a burst over one keep-alive connection; the kill follows the
	 * last 201 at once */
	{
		int fd = http_open(&w.s);
		char body[64];

		for (int i = 0; i < 40; i++) {
			snprintf(body, sizeof(body),
				 "{\"body\":\"burst %d\",\"cmid\":\"b%d\"}", i, i);
			http_on(fd, "POST", w.path, w.ta, body, &r);
			assert_int_equal(r.status, 201);
			assert_int_equal(jint(r.json, "seq"), seq + 1 + (uint64_t)i);
			hres_free(&r);
		}
		close(fd);
	}
	h_kill9(&w.s);
	h_restart(&w.s);
	/* every acknowledged message is there, in order */
	{
		char p[200];
		json_t *msgs;

		snprintf(p, sizeof(p), "%s?limit=200", w.path);
		http(&w.s, "GET", p, w.tb, NULL, &r);
		assert_int_equal(r.status, 200);
		msgs = json_object_get(r.json, "msgs");
		assert_int_equal(json_array_size(msgs), 41);
		assert_string_equal(json_string_value(json_object_get(
			json_array_get(msgs, 0), "body")), "durable");
		for (int i = 0; i < 40; i++)
			assert_int_equal(jint(json_array_get(msgs, (size_t)i + 1),
					      "seq"), seq + 1 + (uint64_t)i);
		hres_free(&r);
	}
	seq += 40;
	http(&w.s, "POST", w.path, w.ta, "{\"body\":\"burst 39\",\"cmid\":\"b39\"}",
	     &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(jint(r.json, "seq"), seq);
	hres_free(&r);
	/* and a retry after the restart is still the same message */
	http(&w.s, "POST", w.path, w.ta, "{\"body\":\"durable\",\"cmid\":\"d1\"}",
	     &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(jint(r.json, "seq"), seq - 40);
	hres_free(&r);
	http(&w.s, "POST", w.path, w.ta, "{\"body\":\"next\",\"cmid\":\"d2\"}",
	     &r);
	assert_int_equal(r.status, 201);
	assert_int_equal(jint(r.json, "seq"), seq + 1);
	hres_free(&r);
	pc_close(w.alice);
	pc_close(w.bob);
	w.alice = h_connect(&w.s, "alice", "acme", NULL);
	w.bob = h_connect(&w.s, "bob", "acme", NULL);
	world_down(&w);
}

/* A POST to the public channel as alice, its headers after Authorization
 * and its body given raw as tail: the answer must be status/code, and
 * with closes the connection must end after it. */
static void raw_refused(struct world *w, const char *tail, int status,
			const char *code, bool closes)
{
	struct hres r;
	char buf[4096];
	int fd = http_open(&w->s);
	int n = snprintf(buf, sizeof(buf),
			 "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n%s",
			 w->path, w->ta, tail);

	send_all(fd, buf, (size_t)n);
	read_resp(fd, &r);
	expect_error(&r, status, code);
	hres_free(&r);
	if (closes)
		expect_closed(fd);
	close(fd);
}

/* Requests whose framing the server cannot or will not take. Each gets a
 * JSON answer, once; where the body is not read the connection closes,
 * elsewhere it carries the next request. Regression: a GET with a body
 * was answered twice (headers, then again at the body's end), which
 * corrupted the response stream and left a stale slot behind. */
static void test_framing(void **state)
{
	struct world w;
	struct hres r;
	char q[1400];
	int fd, n;

	(void)state;
	world_up(&w, FAST);
	http(&w.s, "POST", w.path, w.ta, "{\"body\":\"one\",\"cmid\":\"f1\"}", &r);
	assert_int_equal(r.status, 201);
	hres_free(&r);

	/* a GET with a body: answered once, after the body; the same
	 * connection then carries more requests */
	fd = http_open(&w.s);
	for (int i = 0; i < 3; i++) {
		http_on(fd, "GET", w.path, w.ta, "{\"ignored\":true}", &r);
		assert_int_equal(r.status, 200);
		assert_int_equal(json_array_size(json_object_get(r.json, "msgs")), 1);
		hres_free(&r);
	}
	/* an error answer keeps the connection too */
	http_on(fd, "POST", w.path, w.ta, "{\"body\":", &r);
	expect_error(&r, 400, "BAD_REQUEST");
	hres_free(&r);
	/* empty bodies are answered at once (lws reports an empty body's
	 * end for POST only: a PUT with Content-Length 0 used to hang) */
	http_on(fd, "PUT", w.path, w.ta, "", &r);
	assert_int_equal(r.status, 405);
	hres_free(&r);
	http_on(fd, "POST", w.path, w.ta, "", &r);
	expect_error(&r, 400, "BAD_REQUEST");
	hres_free(&r);
	http_on(fd, "GET", w.path, w.ta, NULL, &r);
	assert_int_equal(r.status, 200);
	hres_free(&r);
	close(fd);

	/* POST without Content-Length: 411, JSON, closed */
	raw_refused(&w, "\r\n{\"body\":\"x\",\"cmid\":\"nl\"}", 411,
		    "BAD_REQUEST", true);
	/* chunked: 411 (lws cannot decode it), closed, and nothing sent */
	raw_refused(&w, "Transfer-Encoding: chunked\r\n\r\n"
		    "1c\r\n{\"body\":\"x\",\"cmid\":\"ch1\"}\r\n0\r\n\r\n",
		    411, "BAD_REQUEST", true);
	/* a bad Content-Length: 400 */
	raw_refused(&w, "Content-Length: 12x\r\n\r\n{}", 400, "BAD_REQUEST",
		    false);
	/* a declared body over 1 MiB: 413 as JSON before any of it is sent */
	raw_refused(&w, "Content-Length: 5000000\r\n\r\n", 413, "TOO_LARGE",
		    false);

	/* a query string too long to read whole: 400, not parameters
	 * silently dropped (which would page from the newest instead) */
	n = snprintf(q, sizeof(q), "%s?before=", w.path);
	memset(q + n, '1', 1200);
	strcpy(q + n + 1200, "&limit=5");
	refused(&w.s, "GET", q, w.ta, NULL, 400, "BAD_REQUEST");

	/* "thread": null and "mentions": null mean absent */
	http(&w.s, "POST", w.path, w.ta,
	     "{\"body\":\"two\",\"cmid\":\"f2\",\"thread\":null,"
	     "\"mentions\":null}", &r);
	assert_int_equal(r.status, 201);
	assert_int_equal(jint(r.json, "seq"), 2);
	hres_free(&r);

	/* nothing refused above was sent: seqs 1 and 2 only */
	http(&w.s, "GET", w.path, w.ta, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(json_array_size(json_object_get(r.json, "msgs")), 2);
	hres_free(&r);
	world_down(&w);
}

/* REST and WebSocket are one set of rules: a cmid used on one is a dup
 * on the other; raw bytes that are not UTF-8 are refused like a bad
 * string; a thread root that is not a message is 404; GET's default page
 * is 50, newest last, like history. */
static void test_same_rules_as_ws(void **state)
{
	struct world w;
	struct hres r;
	char body[64];
	int64_t seq;
	json_t *msgs;

	(void)state;
	world_up(&w, FAST);
	seq = h_send(w.alice, w.pub, "from the socket", "shared-1");
	assert_int_equal(seq, 1);
	http(&w.s, "POST", w.path, w.ta,
	     "{\"body\":\"from the socket\",\"cmid\":\"shared-1\"}", &r);
	assert_int_equal(r.status, 200);
	assert_true(json_is_true(json_object_get(r.json, "dup")));
	assert_int_equal(jint(r.json, "seq"), 1);
	hres_free(&r);
	http(&w.s, "POST", w.path, w.ta,
	     "{\"body\":\"from curl\",\"cmid\":\"shared-2\"}", &r);
	assert_int_equal(r.status, 201);
	hres_free(&r);
	assert_int_equal(h_send(w.alice, w.pub, "from curl", "shared-2"), 2);

	/* \xff\xfe is no UTF-8: 400, nothing stored */
	refused(&w.s, "POST", w.path, w.ta,
	     "{\"body\":\"bad \xff\xfe bytes\",\"cmid\":\"u8\"}", 400, "BAD_REQUEST");
	/* a thread root past the end, or one that is a reply */
	refused(&w.s, "POST", w.path, w.ta,
	     "{\"body\":\"x\",\"cmid\":\"t1\",\"thread\":999}", 404, "NOT_FOUND");
	http(&w.s, "POST", w.path, w.ta,
	     "{\"body\":\"a reply\",\"cmid\":\"t2\",\"thread\":1}", &r);
	assert_int_equal(r.status, 201);
	assert_int_equal(jint(r.json, "seq"), 3);
	hres_free(&r);
	refused(&w.s, "POST", w.path, w.ta,
	     "{\"body\":\"x\",\"cmid\":\"t3\",\"thread\":3}", 404, "NOT_FOUND");

	/* 58 more top-level messages: 60 in the main view, 50 by default */
	for (int i = 0; i < 58; i++) {
		snprintf(body, sizeof(body), "{\"body\":\"n%d\",\"cmid\":\"n%d\"}",
			 i, i);
		http(&w.s, "POST", w.path, w.ta, body, &r);
		assert_int_equal(r.status, 201);
		hres_free(&r);
	}
	http(&w.s, "GET", w.path, w.tb, NULL, &r);
	assert_int_equal(r.status, 200);
	msgs = json_object_get(r.json, "msgs");
	assert_int_equal(json_array_size(msgs), 50);
	assert_true(json_is_true(json_object_get(r.json, "more")));
	assert_string_equal(json_string_value(json_object_get(
		json_array_get(msgs, 49), "body")), "n57");
	assert_int_equal(jint(json_array_get(msgs, 49), "seq"), 61);
	hres_free(&r);
	world_down(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_post_delivers_and_is_idempotent),
		cmocka_unit_test(test_get_pages_history),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_rate_limit),
		cmocka_unit_test(test_keepalive_and_hangup),
		cmocka_unit_test(test_framing),
		cmocka_unit_test(test_same_rules_as_ws),
		cmocka_unit_test(test_survives_kill9),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
