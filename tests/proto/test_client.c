/*
 * test_client: proto/client.c against a fake WebSocket server that runs in
 * a thread of this process, over loopback. The fake server does its half of
 * RFC 6455 by hand (with OpenSSL's SHA-1, so the client's own SHA-1 is
 * checked against an independent one) and then plays a script: lengths in
 * all three encodings, fragments with control frames between them, close
 * codes, a dropped connection, an oversized message, handshake failures,
 * and the non-blocking calls the bench uses.
 *
 * The server thread never calls cmocka (its asserts longjmp): it counts
 * what went wrong in fake.failures, and the test checks that after join.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "proto/client.h"
#include "proto/proto.h"

#define T_MS 5000

enum hs_mode { HS_OK, HS_BAD_ACCEPT, HS_NOT_101, HS_WRONG_PROTO, HS_NO_PROTO };

struct fake {
	int lfd, port;
	pthread_t th;
	void (*script)(struct fake *f, int fd);
	enum hs_mode hs;
	bool greet;         /* send a goaway in the same write as the 101 */
	int arg;            /* for the script */
	char offered[64];   /* the client's Sec-WebSocket-Protocol, or "" */
	char path[64];
	int failures;
	char why[256];
};

static void failed(struct fake *f, const char *why)
{
	if (!f->failures++)
		snprintf(f->why, sizeof(f->why), "%s", why);
}

#define CHECK(f, cond)                                                       \
	do {                                                                 \
		if (!(cond))                                                 \
			failed(f, #cond);                                    \
	} while (0)

/* ---- the fake server's half of the protocol ----------------------------- */

static int write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t r = send(fd, b, n, MSG_NOSIGNAL);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

static int read_all(int fd, void *p, size_t n)
{
	uint8_t *b = p;

	while (n) {
		ssize_t r = recv(fd, b, n, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

/* A server frame header: never masked, the shortest length encoding. */
static size_t frame_hdr(uint8_t *h, bool fin, int op, uint64_t n)
{
	h[0] = (uint8_t)((fin ? 0x80 : 0) | op);
	if (n < 126) {
		h[1] = (uint8_t)n;
		return 2;
	}
	if (n <= 0xffff) {
		h[1] = 126;
		h[2] = (uint8_t)(n >> 8);
		h[3] = (uint8_t)n;
		return 4;
	}
	h[1] = 127;
	for (int i = 0; i < 8; i++)
		h[2 + i] = (uint8_t)(n >> (56 - 8 * i));
	return 10;
}

static int srv_send(int fd, bool fin, int op, const void *p, size_t n)
{
	uint8_t h[10];
	size_t hl = frame_hdr(h, fin, op, n);

	if (write_all(fd, h, hl))
		return -1;
	return n ? write_all(fd, p, n) : 0;
}

static int srv_send_out(int fd, const proto_out *o)
{
	return srv_send(fd, true, 2, o->data, o->len);
}

/* Read one client frame into *buf (malloc'd; caller frees). Client frames
 * must be masked. */
static int srv_read(struct fake *f, int fd, int *op, bool *fin, uint8_t **buf,
		    size_t *len)
{
	uint8_t h[14], mask[4];
	uint64_t n;
	size_t i;

	if (read_all(fd, h, 2))
		return -1;
	*op = h[0] & 0x0f;
	*fin = h[0] & 0x80;
	CHECK(f, h[1] & 0x80);
	n = h[1] & 0x7f;
	if (n == 126) {
		if (read_all(fd, h + 2, 2))
			return -1;
		n = (uint64_t)h[2] << 8 | h[3];
	} else if (n == 127) {
		if (read_all(fd, h + 2, 8))
			return -1;
		n = 0;
		for (i = 0; i < 8; i++)
			n = n << 8 | h[2 + i];
	}
	if (read_all(fd, mask, 4))
		return -1;
	*buf = malloc(n + 1);
	if (!*buf || read_all(fd, *buf, n))
		return -1;
	for (i = 0; i < n; i++)
		(*buf)[i] ^= mask[i & 3];
	*len = n;
	return 0;
}

/* Read one binary client frame and decode it. */
static int srv_read_doc(struct fake *f, int fd, proto_doc *doc)
{
	uint8_t *b;
	size_t n;
	int op, rc;
	bool fin;

	if (srv_read(f, fd, &op, &fin, &b, &n))
		return -1;
	CHECK(f, op == 2 && fin);
	rc = proto_decode(doc, b, n);
	free(b);
	CHECK(f, rc == PROTO_OK);
	return rc == PROTO_OK ? 0 : -1;
}

/* Expect the client's close frame with this code. */
static void srv_expect_close(struct fake *f, int fd, int code)
{
	uint8_t *b = NULL;
	size_t n = 0;
	int op = -1;
	bool fin;

	if (srv_read(f, fd, &op, &fin, &b, &n)) {
		failed(f, "no close frame from the client");
		free(b);
		return;
	}
	CHECK(f, op == 8);
	if (code)
		CHECK(f, n == 2 && (b[0] << 8 | b[1]) == code);
	else
		CHECK(f, n == 0);
	free(b);
}

static void accept_key(const char *key, char out[64])
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char cat[128];
	int n = snprintf(cat, sizeof(cat), "%s%s", key, guid);

	EVP_Digest(cat, (size_t)n, md, &mdlen, EVP_sha1(), NULL);
	EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
}

/* The value of header name in the request head req, or "" */
static void header(const char *req, const char *name, char *out, size_t cap)
{
	const char *p = req;
	size_t nl = strlen(name);

	out[0] = '\0';
	while ((p = strstr(p, "\r\n"))) {
		p += 2;
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1, *e;

			while (*v == ' ')
				v++;
			e = strstr(v, "\r\n");
			if (e && (size_t)(e - v) < cap) {
				memcpy(out, v, (size_t)(e - v));
				out[e - v] = '\0';
			}
			return;
		}
	}
}

static int srv_handshake(struct fake *f, int fd)
{
	char req[4096], key[128], acc[64], resp[1024];
	size_t got = 0;
	int n;

	for (;;) {
		ssize_t r = recv(fd, req + got, sizeof(req) - 1 - got, 0);

		if (r <= 0)
			return -1;
		got += (size_t)r;
		req[got] = '\0';
		if (strstr(req, "\r\n\r\n"))
			break;
		if (got == sizeof(req) - 1)
			return -1;
	}
	sscanf(req, "GET %63s HTTP/1.1", f->path);
	header(req, "Sec-WebSocket-Key", key, sizeof(key));
	header(req, "Sec-WebSocket-Protocol", f->offered, sizeof(f->offered));
	{
		char v[64];

		header(req, "Sec-WebSocket-Version", v, sizeof(v));
		CHECK(f, strcmp(v, "13") == 0);
		header(req, "Upgrade", v, sizeof(v));
		CHECK(f, strcasecmp(v, "websocket") == 0);
	}
	CHECK(f, strlen(key) == 24);
	accept_key(key, acc);
	if (f->hs == HS_BAD_ACCEPT)
		acc[3] ^= 1;
	n = snprintf(resp, sizeof(resp),
		     "%s\r\n"
		     "Upgrade: websocket\r\n"
		     "connection: keep-alive, Upgrade\r\n"
		     "Sec-WebSocket-Accept: %s\r\n"
		     "%s%s%s"
		     "\r\n",
		     f->hs == HS_NOT_101 ? "HTTP/1.1 403 Forbidden"
					 : "HTTP/1.1 101 Switching Protocols",
		     acc,
		     f->hs == HS_NO_PROTO || !f->offered[0] ?
			     "" : "Sec-WebSocket-Protocol: ",
		     f->hs == HS_NO_PROTO || !f->offered[0] ? "" :
		     f->hs == HS_WRONG_PROTO ? "other.v9" : f->offered,
		     f->hs == HS_NO_PROTO || !f->offered[0] ? "" : "\r\n");
	if (f->greet) {
		proto_out o;
		uint8_t h[10];
		size_t hl;

		/* one write: the client must keep what follows the head */
		proto_out_init(&o, 0, 64);
		proto_enc_goaway(&o, 42);
		hl = frame_hdr(h, true, 2, o.len);
		memcpy(resp + n, h, hl);
		memcpy(resp + n + hl, o.data, o.len);
		n += (int)(hl + o.len);
		proto_out_free(&o);
	}
	return write_all(fd, resp, (size_t)n);
}

static void *server_main(void *arg)
{
	struct fake *f = arg;
	struct pollfd pfd = { .fd = f->lfd, .events = POLLIN };
	struct timeval tv = { .tv_sec = 5 };
	int fd;

	if (poll(&pfd, 1, 10000) != 1) {
		failed(f, "no connection");
		return NULL;
	}
	fd = accept(f->lfd, NULL, NULL);
	if (fd < 0) {
		failed(f, "accept");
		return NULL;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (srv_handshake(f, fd) == 0 && f->hs == HS_OK && f->script)
		f->script(f, fd);
	close(fd);
	return NULL;
}

static void fake_start(struct fake *f, void (*script)(struct fake *, int))
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int one = 1;

	f->script = script;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	setsockopt(f->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->lfd, 4), 0);
	assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &sl), 0);
	f->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&f->th, NULL, server_main, f), 0);
}

static void fake_join(struct fake *f)
{
	pthread_join(f->th, NULL);
	close(f->lfd);
	if (f->failures)
		fail_msg("fake server: %d failures, first: %s", f->failures,
			 f->why);
}

static pc_conn *connect_to(struct fake *f)
{
	return pc_connect("127.0.0.1", f->port, NULL, "parley.v1", T_MS);
}

static uint64_t get_u(const proto_doc *d, const char *k)
{
	uint64_t v = 0;

	assert_int_equal(proto_get_uint(&d->root, k, &v), 0);
	return v;
}

static void assert_t(const proto_doc *d, const char *t)
{
	const char *s;
	uint32_t n;

	assert_int_equal(proto_get_str(&d->root, "t", &s, &n), 0);
	assert_int_equal(n, strlen(t));
	assert_memory_equal(s, t, n);
}

/* ---- request, response, kept frames ------------------------------------- */

static void script_request(struct fake *f, int fd)
{
	proto_doc req;
	proto_out o;
	uint64_t rid = 0;
	proto_event ev = {
		.ch = { "general", 7 }, .seq = 1, .k = { "msg", 3 }, .ts = 5,
		.from = { "bob", 3 }, .body = { "hi", 2 }, .cmid = { "c", 1 },
	};

	if (srv_read_doc(f, fd, &req))
		return;
	CHECK(f, proto_get_uint(&req.root, "rid", &rid) == 0);
	CHECK(f, proto_get(&req.root, "op") != NULL);
	proto_doc_free(&req);

	/* an event and a typing notice overtake the response */
	proto_out_init(&o, 0, 64);
	proto_enc_event(&o, &ev);
	srv_send_out(fd, &o);
	proto_out_reset(&o);
	proto_enc_typing(&o, "general", "bob");
	srv_send_out(fd, &o);
	proto_out_reset(&o);
	proto_enc_res_ok(&o, rid + 1, 0); /* someone else's response */
	srv_send_out(fd, &o);
	proto_out_reset(&o);
	proto_enc_res_ok(&o, rid, 1);
	proto_pk_cstr(&o.pk, "last_seq");
	msgpack_pack_uint64(&o.pk, 1);
	srv_send_out(fd, &o);
	proto_out_free(&o);
	srv_expect_close(f, fd, 1000);
}

static void test_request_keeps_frames(void **state)
{
	struct fake f = { 0 };
	proto_doc res, d;
	proto_out o;
	pc_conn *c;

	(void)state;
	fake_start(&f, script_request);
	c = pc_connect("localhost", f.port, "127.0.0.1", "parley.v1", T_MS);
	assert_non_null(c);
	assert_true(pc_fd(c) >= 0);
	assert_int_equal(pc_close_code(c), 0);

	proto_out_init(&o, 0, 64);
	proto_enc_req(&o, "ch.join", 5, 1);
	proto_pk_cstr(&o.pk, "ch");
	proto_pk_cstr(&o.pk, "general");
	assert_int_equal(pc_request(c, &o, 5, &res, T_MS), 1);
	proto_out_free(&o);
	assert_t(&res, "res");
	assert_int_equal(get_u(&res, "rid"), 5);
	assert_int_equal(get_u(&res, "last_seq"), 1);
	proto_doc_free(&res);

	/* what arrived meanwhile, in order */
	assert_int_equal(pc_recv(c, &d, T_MS), 1);
	assert_t(&d, "ev");
	assert_int_equal(get_u(&d, "seq"), 1);
	proto_doc_free(&d);
	assert_int_equal(pc_recv(c, &d, T_MS), 1);
	assert_t(&d, "typing");
	proto_doc_free(&d);
	assert_int_equal(pc_recv(c, &d, T_MS), 1);
	assert_int_equal(get_u(&d, "rid"), 6);
	proto_doc_free(&d);
	assert_int_equal(pc_recv(c, &d, 50), 0);
	pc_close(c);
	fake_join(&f);
	assert_string_equal(f.offered, "parley.v1");
	assert_string_equal(f.path, "/ws");
}

static void script_silent(struct fake *f, int fd)
{
	proto_doc req;

	if (srv_read_doc(f, fd, &req) == 0)
		proto_doc_free(&req);
	srv_expect_close(f, fd, 1000);
}

static void test_request_timeout(void **state)
{
	struct fake f = { 0 };
	proto_doc res;
	proto_out o;
	pc_conn *c;

	(void)state;
	fake_start(&f, script_silent);
	c = pc_connect("127.0.0.1", f.port, NULL, NULL, T_MS);
	assert_non_null(c);
	proto_out_init(&o, 0, 64);
	proto_enc_req(&o, "hb", 1, 0);
	assert_int_equal(pc_request(c, &o, 1, &res, 100), 0);
	proto_out_free(&o);
	pc_close(c);
	fake_join(&f);
	assert_string_equal(f.offered, "");
}

/* ---- hello -------------------------------------------------------------- */

static void script_hello(struct fake *f, int fd)
{
	const msgpack_object_map *resume;
	proto_doc req;
	proto_out o;
	uint64_t rid = 0;
	const char *tok;
	uint32_t tn;

	if (srv_read_doc(f, fd, &req))
		return;
	CHECK(f, proto_get_uint(&req.root, "rid", &rid) == 0);
	CHECK(f, proto_get_str(&req.root, "token", &tok, &tn) == 0 &&
		 tn == 3 && memcmp(tok, "tok", 3) == 0);
	if (f->arg) {
		CHECK(f, proto_get_map(&req.root, "resume", &resume) == 0 &&
			 resume->size == 1 &&
			 resume->ptr[0].val.via.u64 == 7);
	} else {
		CHECK(f, proto_get(&req.root, "resume") == NULL);
	}
	proto_doc_free(&req);
	proto_out_init(&o, 0, 64);
	if (f->arg) {
		proto_enc_res_ok(&o, rid, 1);
		proto_pk_cstr(&o.pk, "user");
		proto_pk_cstr(&o.pk, "alice");
	} else {
		proto_enc_res_err(&o, rid, "UNAUTHORIZED", "bad token", 0);
	}
	srv_send_out(fd, &o);
	proto_out_free(&o);
	srv_expect_close(f, fd, 1000);
}

static void test_hello(void **state)
{
	static const char *const chs[] = { "general" };
	static const uint64_t seqs[] = { 7 };
	struct fake f = { .arg = 1 };
	proto_doc res;
	pc_conn *c;

	(void)state;
	fake_start(&f, script_hello);
	c = connect_to(&f);
	assert_non_null(c);
	assert_int_equal(pc_hello(c, "tok", chs, seqs, 1, &res, T_MS), 1);
	assert_t(&res, "res");
	proto_doc_free(&res);
	pc_close(c);
	fake_join(&f);

	memset(&f, 0, sizeof(f));
	fake_start(&f, script_hello);
	c = connect_to(&f);
	assert_non_null(c);
	assert_int_equal(pc_hello(c, "tok", NULL, NULL, 0, &res, T_MS), -2);
	proto_doc_free(&res);
	pc_close(c);
	fake_join(&f);
}

/* ---- lengths ------------------------------------------------------------ */

/* {"n": i, "pad": bin} of exactly size bytes */
static void sized(proto_out *o, unsigned i, size_t size)
{
	static uint8_t zero[1 << 17];
	size_t pad = size > 16 ? size - 16 : 0;

	for (;;) {
		proto_out_reset(o);
		msgpack_pack_map(&o->pk, 2);
		proto_pk_cstr(&o->pk, "n");
		msgpack_pack_uint64(&o->pk, i);
		proto_pk_cstr(&o->pk, "pad");
		msgpack_pack_bin(&o->pk, pad);
		msgpack_pack_bin_body(&o->pk, zero, pad);
		if (o->len == size)
			return;
		pad += size - o->len; /* the bin header may have grown */
	}
}

static const size_t lengths[] = { 20, 125, 126, 127, 1000, 65535, 65536 };

static void script_lengths(struct fake *f, int fd)
{
	proto_out o;
	size_t i;

	proto_out_init(&o, 0, 64);
	for (i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
		sized(&o, (unsigned)i, lengths[i]);
		srv_send_out(fd, &o);
	}
	proto_out_free(&o);
	srv_expect_close(f, fd, 1000);
}

static void test_lengths(void **state)
{
	struct fake f = { 0 };
	pc_conn *c;
	size_t i;

	(void)state;
	fake_start(&f, script_lengths);
	c = connect_to(&f);
	assert_non_null(c);
	for (i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
		proto_doc d;
		const msgpack_object *pad;

		assert_int_equal(pc_recv(c, &d, T_MS), 1);
		assert_int_equal(get_u(&d, "n"), i);
		pad = proto_get(&d.root, "pad");
		assert_non_null(pad);
		assert_int_equal(pad->type, MSGPACK_OBJECT_BIN);
		proto_doc_free(&d);
	}
	pc_close(c);
	fake_join(&f);
}

/* ---- fragments and control frames --------------------------------------- */

static void script_fragments(struct fake *f, int fd)
{
	proto_out o;
	uint8_t *b = NULL;
	size_t n, third;
	int op;
	bool fin;

	proto_out_init(&o, 0, 64);
	sized(&o, 1, 3000);
	third = o.len / 3;
	srv_send(fd, true, 1, "a text message", 14);    /* dropped */
	srv_send(fd, false, 1, "text, ", 6);             /* dropped too */
	srv_send(fd, true, 0, "in two parts", 12);
	srv_send(fd, false, 2, o.data, third);
	srv_send(fd, true, 9, "hb!", 3);                 /* ping */
	srv_send(fd, false, 0, o.data + third, third);
	srv_send(fd, true, 10, "unasked", 7);           /* pong: ignored */
	srv_send(fd, false, 0, NULL, 0);                 /* empty fragment */
	srv_send(fd, true, 0, o.data + 2 * third, o.len - 2 * third);
	sized(&o, 2, 30);
	srv_send_out(fd, &o);
	proto_out_free(&o);

	if (srv_read(f, fd, &op, &fin, &b, &n) == 0) {
		CHECK(f, op == 10 && fin);
		CHECK(f, n == 3 && memcmp(b, "hb!", 3) == 0);
	} else {
		failed(f, "no pong");
	}
	free(b);
	srv_expect_close(f, fd, 1000);
}

static void test_fragments(void **state)
{
	struct fake f = { 0 };
	proto_doc d;
	pc_conn *c;

	(void)state;
	fake_start(&f, script_fragments);
	c = connect_to(&f);
	assert_non_null(c);
	assert_int_equal(pc_recv(c, &d, T_MS), 1);
	assert_int_equal(get_u(&d, "n"), 1);
	proto_doc_free(&d);
	assert_int_equal(pc_recv(c, &d, T_MS), 1);
	assert_int_equal(get_u(&d, "n"), 2);
	proto_doc_free(&d);
	pc_close(c);
	fake_join(&f);
}

/* ---- the end of a connection -------------------------------------------- */

static void script_close(struct fake *f, int fd)
{
	proto_out o;
	uint8_t code[2] = { (uint8_t)(f->arg >> 8), (uint8_t)f->arg };

	proto_out_init(&o, 0, 64);
	proto_enc_goaway(&o, 1);
	srv_send_out(fd, &o);
	proto_out_free(&o);
	srv_send(fd, true, 8, code, f->arg ? 2 : 0);
	srv_expect_close(f, fd, f->arg);
}

static void close_with(int code, int want)
{
	struct fake f = { .arg = code };
	proto_doc d;
	pc_conn *c;

	fake_start(&f, script_close);
	c = connect_to(&f);
	assert_non_null(c);
	assert_int_equal(pc_recv(c, &d, T_MS), 1); /* what came before */
	assert_t(&d, "goaway");
	proto_doc_free(&d);
	assert_int_equal(pc_recv(c, &d, T_MS), -1);
	assert_int_equal(pc_close_code(c), want);
	assert_int_equal(pc_recv(c, &d, T_MS), -1);
	assert_int_equal(pc_send_raw(c, 2, "\x80", 1), -1);
	fake_join(&f); /* the server saw our echo before we close */
	pc_close(c);
}

static void test_close_code(void **state)
{
	(void)state;
	close_with(4001, 4001);
	close_with(1008, 1008);
}

static void test_close_no_code(void **state)
{
	(void)state;
	close_with(0, 1005);
}

static void script_drop(struct fake *f, int fd)
{
	proto_out o;

	(void)f;
	proto_out_init(&o, 0, 64);
	proto_enc_read(&o, "general", 3);
	srv_send_out(fd, &o);
	proto_out_free(&o);
	/* and half a frame, then nothing */
	srv_send(fd, true, 2, NULL, 0);
	write_all(fd, "\x82\x7e\x01", 3);
}

static void test_dropped(void **state)
{
	struct fake f = { 0 };
	proto_doc d;
	pc_conn *c;

	(void)state;
	fake_start(&f, script_drop);
	c = connect_to(&f);
	assert_non_null(c);
	assert_int_equal(pc_recv(c, &d, T_MS), 1);
	assert_t(&d, "read");
	proto_doc_free(&d);
	/* the empty binary message is not a map: delivered, fails decode */
	assert_int_equal(pc_recv(c, &d, T_MS), -1);
	assert_int_equal(pc_recv(c, &d, T_MS), -1);
	assert_int_equal(pc_close_code(c), 1006);
	fake_join(&f);
	pc_close(c);
}

static void script_too_big(struct fake *f, int fd)
{
	uint8_t h[10];
	size_t hl = frame_hdr(h, true, 2, (16u << 20) + 1);

	(void)f;
	write_all(fd, h, hl);
	write_all(fd, "\x80\x80\x80\x80", 4);
	/* wait for the client to go */
	{
		char b[64];

		while (recv(fd, b, sizeof(b), 0) > 0)
			;
	}
}

static void test_too_big(void **state)
{
	struct fake f = { 0 };
	proto_doc d;
	pc_conn *c;

	(void)state;
	fake_start(&f, script_too_big);
	c = connect_to(&f);
	assert_non_null(c);
	assert_int_equal(pc_recv(c, &d, T_MS), -1);
	assert_int_equal(pc_close_code(c), 1009);
	pc_close(c);
	fake_join(&f);
}

/* ---- handshake ---------------------------------------------------------- */

static void handshake_with(enum hs_mode hs, const char *sub, bool ok)
{
	struct fake f = { .hs = hs };
	pc_conn *c;

	fake_start(&f, script_silent);
	c = pc_connect("127.0.0.1", f.port, NULL, sub, T_MS);
	if (ok) {
		proto_out o;

		assert_non_null(c);
		/* script_silent wants one request, then the close */
		proto_out_init(&o, 0, 64);
		proto_enc_req(&o, "hb", 0, 0);
		assert_int_equal(pc_send(c, &o), 0);
		proto_out_free(&o);
		pc_close(c);
	} else {
		assert_null(c);
	}
	fake_join(&f);
}

static void test_handshake(void **state)
{
	(void)state;
	handshake_with(HS_OK, "parley.v1", true);
	handshake_with(HS_OK, NULL, true);
	handshake_with(HS_NO_PROTO, "parley.v1", true);
	handshake_with(HS_BAD_ACCEPT, "parley.v1", false);
	handshake_with(HS_NOT_101, "parley.v1", false);
	handshake_with(HS_WRONG_PROTO, "parley.v1", false);
}

static void test_connect_fails(void **state)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int fd, port;

	(void)state;
	/* a port nobody listens on: bind one, learn it, close it */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	getsockname(fd, (struct sockaddr *)&sa, &sl);
	port = ntohs(sa.sin_port);
	close(fd);
	assert_null(pc_connect("127.0.0.1", port, NULL, NULL, T_MS));
	assert_null(pc_connect("no.such.host", 80, NULL, NULL, T_MS));
	assert_null(pc_connect("127.0.0.1", 0, NULL, NULL, T_MS));
	assert_null(pc_connect("127.0.0.1", port, "not-an-ip", NULL, T_MS));

	/* a listener that never answers the upgrade: the timeout holds */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_port = 0;
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 1), 0);
	sl = sizeof(sa);
	getsockname(fd, (struct sockaddr *)&sa, &sl);
	assert_null(pc_connect("127.0.0.1", ntohs(sa.sin_port), NULL, NULL,
			       100));
	close(fd);
}

static void script_greet(struct fake *f, int fd)
{
	srv_expect_close(f, fd, 1000);
}

static void test_frame_with_handshake(void **state)
{
	struct fake f = { .greet = true };
	proto_doc d;
	pc_conn *c;

	(void)state;
	fake_start(&f, script_greet);
	c = connect_to(&f);
	assert_non_null(c);
	assert_int_equal(pc_recv(c, &d, T_MS), 1);
	assert_t(&d, "goaway");
	assert_int_equal(get_u(&d, "retry_ms"), 42);
	proto_doc_free(&d);
	pc_close(c);
	fake_join(&f);
}

/* ---- non-blocking use --------------------------------------------------- */

#define BURST 200
#define BIG   (1u << 20)

static void script_burst(struct fake *f, int fd)
{
	uint8_t *big = calloc(1, BIG);
	proto_out o;
	int i;

	proto_out_init(&o, 0, 64);
	for (i = 0; i < BURST; i++) {
		proto_out_reset(&o);
		proto_enc_read(&o, "general", (uint64_t)i);
		srv_send_out(fd, &o);
	}
	proto_out_free(&o);
	srv_send(fd, true, 2, big, BIG); /* raw bytes: pc_next does not care */
	free(big);

	for (i = 0; i < BURST; i++) {
		proto_doc d;
		uint64_t seq = 0;

		if (srv_read_doc(f, fd, &d))
			return;
		CHECK(f, proto_get_uint(&d.root, "seq", &seq) == 0 &&
			 seq == (uint64_t)i);
		proto_doc_free(&d);
	}
	srv_send(fd, true, 8, "\x03\xe8", 2);
	srv_expect_close(f, fd, 1000);
}

static int wait_for(pc_conn *c, short ev)
{
	struct pollfd pfd = { .fd = pc_fd(c), .events = ev };

	return poll(&pfd, 1, T_MS);
}

static void test_nonblocking(void **state)
{
	struct fake f = { 0 };
	const uint8_t *data;
	size_t len;
	pc_conn *c;
	int got = 0, rc, i;
	bool big = false;
	proto_out o;

	(void)state;
	fake_start(&f, script_burst);
	c = connect_to(&f);
	assert_non_null(c);
	assert_int_equal(pc_set_nonblocking(c), 0);
	while (!big) {
		assert_int_equal(wait_for(c, POLLIN), 1);
		assert_int_equal(pc_on_readable(c), 0);
		while ((rc = pc_next(c, &data, &len)) == 1) {
			if (len == BIG) {
				assert_int_equal(got, BURST);
				big = true;
			} else {
				proto_doc d;

				assert_int_equal(proto_decode(&d, data, len),
						 PROTO_OK);
				assert_int_equal(get_u(&d, "seq"), got);
				proto_doc_free(&d);
				got++;
			}
		}
		assert_int_equal(rc, 0);
	}

	/* queue everything at once, then write as the socket allows */
	proto_out_init(&o, 0, 64);
	for (i = 0; i < BURST; i++) {
		proto_out_reset(&o);
		proto_enc_read(&o, "general", (uint64_t)i);
		assert_int_equal(pc_queue(c, 2, o.data, o.len), 0);
	}
	proto_out_free(&o);
	assert_true(pc_pending(c) > 0);
	while (pc_pending(c)) {
		assert_int_equal(pc_flush(c), 0);
		if (pc_pending(c))
			assert_int_equal(wait_for(c, POLLOUT), 1);
	}

	/* then the server closes with 1000 */
	for (;;) {
		assert_int_equal(wait_for(c, POLLIN), 1);
		pc_on_readable(c);
		rc = pc_next(c, &data, &len);
		if (rc < 0)
			break;
		assert_int_equal(rc, 0);
	}
	assert_int_equal(pc_close_code(c), 1000);
	fake_join(&f);
	pc_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_keeps_frames),
		cmocka_unit_test(test_request_timeout),
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_fragments),
		cmocka_unit_test(test_close_code),
		cmocka_unit_test(test_close_no_code),
		cmocka_unit_test(test_dropped),
		cmocka_unit_test(test_too_big),
		cmocka_unit_test(test_handshake),
		cmocka_unit_test(test_connect_fails),
		cmocka_unit_test(test_frame_with_handshake),
		cmocka_unit_test(test_nonblocking),
	};

	return cmocka_run_group_tests_name("client", tests, NULL, NULL);
}
