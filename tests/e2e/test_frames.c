/*
 * Frames and requests the server must refuse, and the limits that protect
 * it, as a client sees them: a text frame, bytes that are not one complete
 * msgpack map (garbage, empty, an array, trailing bytes, truncated, invalid
 * UTF-8, a non-string key, nesting deeper than 8) each earn an err frame
 * BAD_FRAME and the connection goes on; more than 20 of them within any
 * 10 s close it with 1008. A fragmented message counts as one. An unknown
 * op and missing or ill-typed arguments are BAD_REQUEST (a res with the
 * rid, or an err frame naming the op without one), a body over 16 KiB is
 * TOO_LARGE, and refused requests create nothing. A message over 64 KiB
 * (binary, text or in fragments) closes that connection with 1009 and no
 * other; --max-frame and --max-body are reported in hello and enforced. A
 * connection that does not read is closed with 4008 once its unsent output
 * passes --max-outbuf, without harming the sender or readers. The send
 * rate (50/s, bursts of 100) answers RATE_LIMITED with retry_ms, seqs of
 * the sends that went through stay contiguous, and waiting retry_ms works.
 * A fire-and-forget request that fails yields an err frame naming its op.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/e2e/harness.h"

#define OP_TEXT 1
#define OP_BIN  2

/* ---- helpers ------------------------------------------------------------- */

/* The request must be answered ok:true; the response is freed. */
static void req_ok(pc_conn *c, const char *op)
{
	proto_doc res;

	assert_int_equal(h_req(c, &res, op, 0), 1);
	if (!h_ok(&res))
		fail_msg("%s: expected ok, got %s", op, h_code(&res));
	proto_doc_free(&res);
}

/* The next frame must be {"t":"err","code":code} (with "op" when op);
 * member notices (of a channel just created) may come first. */
static void expect_err(pc_conn *c, const char *code, const char *op)
{
	proto_doc d;

	for (;;) {
		assert_int_equal(h_next(c, &d, H_TIMEOUT), 1);
		if (strcmp(h_s(&d.root, "t"), "member"))
			break;
		proto_doc_free(&d);
	}
	assert_string_equal(h_s(&d.root, "t"), "err");
	assert_string_equal(h_code(&d), code);
	assert_true(strlen(h_s(&d.root, "msg")) > 0);
	assert_null(proto_get(&d.root, "rid"));
	if (op)
		assert_string_equal(h_s(&d.root, "op"), op);
	proto_doc_free(&d);
}

/* The response must be ok:false with code. */
static void expect_code(proto_doc *res, const char *code)
{
	if (h_ok(res))
		fail_msg("expected %s, got ok", code);
	assert_string_equal(h_s(&res->root, "t"), "res");
	assert_string_equal(h_code(res), code);
	assert_true(strlen(h_s(&res->root, "msg")) > 0);
	proto_doc_free(res);
}

/* The connection must be closed by the server with code; frames before
 * the close are skipped. */
static void expect_closed(pc_conn *c, int code, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	proto_doc d;
	char last[64] = "none";
	int rc, frames = 0;

	while ((rc = h_next(c, &d, (int)(end - now_ms()))) == 1) {
		char t[17];

		snprintf(t, sizeof(t), "%s", h_s(&d.root, "t"));
		snprintf(last, sizeof(last), "t=%s ok=%d code=%.24s", t,
			 h_ok(&d), h_code(&d)); /* h_s: one static buffer */
		frames++;
		proto_doc_free(&d);
		if (now_ms() >= end)
			break;
	}
	if (rc != -1)
		fail_msg("connection not closed (expected %d) after %d frames, "
			 "last: %s", code, frames, last);
	assert_int_equal(pc_close_code(c), code);
}

/* A bad binary frame gets BAD_FRAME, and the connection still answers. */
static void bad_frame_then_ok(pc_conn *c, const void *p, size_t n)
{
	assert_int_equal(pc_send_raw(c, OP_BIN, p, n), 0);
	expect_err(c, "BAD_FRAME", NULL);
	req_ok(c, "hb");
}

/* Send o (built by the caller) and wait for the response to rid, dropping
 * every other frame on the way. */
static int request_drop(pc_conn *c, proto_out *o, uint64_t rid,
			proto_doc *res)
{
	assert_int_equal(pc_send(c, o), 0);
	for (;;) {
		int rc = h_next(c, res, H_TIMEOUT);

		if (rc != 1)
			return rc;
		if (!strcmp(h_s(&res->root, "t"), "res") &&
		    h_u(&res->root, "rid") == rid)
			return 1;
		proto_doc_free(res);
	}
}

/* ---- bad frames ---------------------------------------------------------- */

static void test_text_frame(void **st)
{
	hsrv s;
	pc_conn *a;
	static const char json[] = "{\"op\":\"hb\",\"rid\":1}";

	(void)st;
	h_start(&s, "");
	a = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	assert_int_equal(pc_send_raw(a, OP_TEXT, json, strlen(json)), 0);
	expect_err(a, "BAD_FRAME", NULL);
	req_ok(a, "hb");
	/* A text frame before hello is no better. */
	{
		pc_conn *n = h_connect_raw(&s);
		proto_doc res;
		char *tok = h_token(&s, "bob", "acme");

		assert_non_null(n);
		assert_int_equal(pc_send_raw(n, OP_TEXT, json, strlen(json)),
				 0);
		expect_err(n, "BAD_FRAME", NULL);
		assert_int_equal(pc_hello(n, tok, NULL, NULL, 0, &res,
					  H_TIMEOUT), 1);
		free(tok);
		proto_doc_free(&res);
		req_ok(n, "hb");
		pc_close(n);
	}
	pc_close(a);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* {"op":"hb","rid":rid,"x":[[...]]} with `arrays` nested arrays under the
 * top-level map (which is depth 1): depth 1 + arrays. */
static size_t nested(uint8_t *p, unsigned arrays, uint64_t rid)
{
	size_t n = 0;

	p[n++] = 0x83;
	p[n++] = 0xa2; p[n++] = 'o'; p[n++] = 'p';
	p[n++] = 0xa2; p[n++] = 'h'; p[n++] = 'b';
	p[n++] = 0xa3; p[n++] = 'r'; p[n++] = 'i'; p[n++] = 'd';
	p[n++] = 0xcc; p[n++] = (uint8_t)rid;
	p[n++] = 0xa1; p[n++] = 'x';
	for (unsigned i = 0; i < arrays; i++)
		p[n++] = i + 1 < arrays ? 0x91 : 0x90;
	return n;
}

static void test_malformed_frames(void **st)
{
	static const uint8_t garbage[] = { 0xc1, 0xff, 0x00, 'g', 'a', 'r',
					   'b', 'a', 'g', 'e' };
	static const uint8_t empty[1] = { 0 };
	static const uint8_t array[] = { 0x92, 0xa2, 'o', 'p', 0xa2, 'h',
					 'b' };
	static const uint8_t integer[] = { 0x05 };
	/* {"op":"hb"} and one byte more */
	static const uint8_t trailing[] = { 0x81, 0xa2, 'o', 'p', 0xa2, 'h',
					    'b', 0x00 };
	/* a map of two pairs that ends after the first */
	static const uint8_t truncated[] = { 0x82, 0xa2, 'o', 'p', 0xa2, 'h',
					     'b' };
	/* a str cut short */
	static const uint8_t truncated_str[] = { 0x81, 0xa2, 'o', 'p', 0xa5,
						 'h', 'b' };
	/* {"op":"hb","x":"\xff\xfe"} */
	static const uint8_t bad_utf8[] = { 0x82, 0xa2, 'o', 'p', 0xa2, 'h',
					    'b', 0xa1, 'x', 0xa2, 0xff, 0xfe };
	/* overlong "/" */
	static const uint8_t overlong[] = { 0x82, 0xa2, 'o', 'p', 0xa2, 'h',
					    'b', 0xa1, 'x', 0xa2, 0xc0, 0xaf };
	/* a UTF-16 surrogate */
	static const uint8_t surrogate[] = { 0x82, 0xa2, 'o', 'p', 0xa2, 'h',
					     'b', 0xa1, 'x', 0xa3, 0xed, 0xa0,
					     0x80 };
	/* invalid UTF-8 in the op itself */
	static const uint8_t bad_op[] = { 0x81, 0xa2, 'o', 'p', 0xa2, 0xe2,
					  0x28 };
	/* {1: "hb"}: keys are strings */
	static const uint8_t int_key[] = { 0x81, 0x01, 0xa2, 'h', 'b' };
	hsrv s;
	pc_conn *a, *b;
	uint8_t deep[64];
	size_t n;
	proto_doc d;

	(void)st;
	h_start(&s, "");
	a = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	assert_non_null(b);

	bad_frame_then_ok(a, garbage, sizeof(garbage));
	bad_frame_then_ok(a, empty, 0);
	bad_frame_then_ok(a, array, sizeof(array));
	bad_frame_then_ok(a, integer, sizeof(integer));
	bad_frame_then_ok(a, trailing, sizeof(trailing));
	bad_frame_then_ok(a, truncated, sizeof(truncated));
	bad_frame_then_ok(a, truncated_str, sizeof(truncated_str));
	bad_frame_then_ok(a, bad_utf8, sizeof(bad_utf8));
	bad_frame_then_ok(a, overlong, sizeof(overlong));
	bad_frame_then_ok(a, surrogate, sizeof(surrogate));
	bad_frame_then_ok(b, bad_op, sizeof(bad_op));
	bad_frame_then_ok(b, int_key, sizeof(int_key));

	/* Depth 9 is refused, though it carries a rid: no res comes. */
	n = nested(deep, 8, 77);
	assert_int_equal(pc_send_raw(b, OP_BIN, deep, n), 0);
	expect_err(b, "BAD_FRAME", NULL);
	/* Depth 8 is fine: the hb is answered. */
	n = nested(deep, 7, 78);
	assert_int_equal(pc_send_raw(b, OP_BIN, deep, n), 0);
	assert_int_equal(h_next(b, &d, H_TIMEOUT), 1);
	assert_string_equal(h_s(&d.root, "t"), "res");
	assert_int_equal(h_u(&d.root, "rid"), 78);
	assert_true(h_ok(&d));
	proto_doc_free(&d);

	/* A map with a rid and a trailing byte is still a bad frame, not a
	 * request: err, no res. */
	{
		static const uint8_t hb_rid_trail[] = {
			0x82, 0xa2, 'o', 'p', 0xa2, 'h', 'b',
			0xa3, 'r', 'i', 'd', 0x2a, 0xc0,
		};

		assert_int_equal(pc_send_raw(b, OP_BIN, hb_rid_trail,
					     sizeof(hb_rid_trail)), 0);
		expect_err(b, "BAD_FRAME", NULL);
		assert_int_equal(h_next(b, &d, 300), 0);
	}
	req_ok(a, "ch.list");
	req_ok(b, "ch.list");
	pc_close(a);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

static void test_bad_frame_abuse(void **st)
{
	hsrv s;
	pc_conn *a, *other;
	static const char txt[] = "hello?";

	(void)st;
	h_start(&s, "");
	a = h_connect(&s, "alice", "acme", NULL);
	other = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	assert_non_null(other);
	/* 20 within the window are tolerated, each answered. */
	for (int i = 0; i < 20; i++)
		assert_int_equal(pc_send_raw(a, i % 2 ? OP_TEXT : OP_BIN, txt,
					     strlen(txt)), 0);
	for (int i = 0; i < 20; i++)
		expect_err(a, "BAD_FRAME", NULL);
	req_ok(a, "hb");
	/* The 21st closes the connection with 1008. */
	assert_int_equal(pc_send_raw(a, OP_TEXT, txt, strlen(txt)), 0);
	expect_closed(a, 1008, H_TIMEOUT);
	/* The user's other connection is not punished. */
	req_ok(other, "hb");
	pc_close(a);
	pc_close(other);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* o = {"op":"hb","rid":rid,"pad":"xx..."} of exactly len bytes (caller
 * frees). */
static void pad_frame(proto_out *o, uint64_t rid, size_t len)
{
	/* map(3) op:hb rid:fixint pad:str16 header */
	size_t fixed = 1 + 3 + 3 + 4 + 1 + 4 + 3;
	size_t padlen = len - fixed;
	char *pad = malloc(padlen);

	assert_true(rid < 128 && padlen > 255 && padlen <= 0xffff);
	memset(pad, 'x', padlen);
	proto_out_init(o, 0, len + 64);
	proto_enc_req(o, "hb", rid, 1);
	proto_pk_cstr(&o->pk, "pad");
	proto_pk_str(&o->pk, pad, padlen);
	free(pad);
	assert_int_equal(o->len, len);
}

/* "More than 20 bad frames in 10 s" holds for any 10 s: 19 bad frames
 * late in one stretch of 10 s and 2 early in the next are 21 within 10 s,
 * and close the connection (takes ~10 s). */
static void test_bad_frame_abuse_any_10s(void **st)
{
	hsrv s;
	pc_conn *a;
	static const char txt[] = "nope";
	uint64_t t0, t1;

	(void)st;
	h_start(&s, "");
	a = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	/* the server stamps the first bad frame between t0 and t1 */
	t0 = now_ms();
	assert_int_equal(pc_send_raw(a, OP_TEXT, txt, strlen(txt)), 0);
	expect_err(a, "BAD_FRAME", NULL);
	t1 = now_ms();
	sleep_until(t0 + 9000);
	for (int i = 0; i < 19; i++)
		assert_int_equal(pc_send_raw(a, OP_TEXT, txt, strlen(txt)), 0);
	for (int i = 0; i < 19; i++)
		expect_err(a, "BAD_FRAME", NULL);
	req_ok(a, "hb"); /* 20 in the last 10 s: tolerated */
	sleep_until(t1 + 10300);
	/* The first one is now out of the last 10 s: 19 + 1 = 20, fine. */
	assert_int_equal(pc_send_raw(a, OP_TEXT, txt, strlen(txt)), 0);
	expect_err(a, "BAD_FRAME", NULL);
	/* 19 + 2 = 21 within the last 1.3 s. */
	assert_int_equal(pc_send_raw(a, OP_TEXT, txt, strlen(txt)), 0);
	expect_closed(a, 1008, H_TIMEOUT);
	pc_close(a);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* A frame over the frame limit closes that connection with 1009; one of
 * exactly the limit is accepted. */
static void test_frame_too_large(void **st)
{
	hsrv s;
	pc_conn *a1, *a2, *a3;
	proto_out o;
	proto_doc res;
	char ch[65];
	char *pad;
	size_t padlen;

	(void)st;
	h_start(&s, "");
	a1 = h_connect(&s, "alice", "acme", NULL);
	a2 = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a1);
	assert_non_null(a2);
	assert_int_equal(h_create(a2, "general", "public", ch), 0);
	assert_int_equal(h_send(a2, ch, "before", "m1"), 1);
	h_drain(a1, 100);

	/* Exactly 65536 bytes: {"op":"hb","rid":9,"pad":"xxx..."} */
	pad_frame(&o, 9, 65536);
	assert_int_equal(pc_request(a1, &o, 9, &res, H_TIMEOUT), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	proto_out_free(&o);

	/* One byte more: closed with 1009. */
	pad_frame(&o, 10, 65537);
	pc_send(a1, &o); /* the server may stop reading midway */
	proto_out_free(&o);
	expect_closed(a1, 1009, H_TIMEOUT);

	/* A much larger one on another connection, too. */
	a3 = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a3);
	padlen = 200000;
	pad = malloc(padlen + 1);
	memset(pad, 'y', padlen);
	pad[padlen] = 0;
	proto_out_init(&o, 0, padlen + 64);
	proto_enc_send(&o, 11, ch, pad, padlen, "big", 0, NULL, 0);
	pc_send(a3, &o);
	proto_out_free(&o);
	expect_closed(a3, 1009, H_TIMEOUT);
	free(pad);

	/* The other connection of the same user is fine, and the big send
	 * created nothing. */
	req_ok(a2, "hb");
	assert_int_equal(h_req(a2, &res, "history", 1, "ch", 's', ch), 1);
	assert_true(h_ok(&res));
	{
		const msgpack_object_array *msgs;

		assert_int_equal(proto_get_array(&res.root, "msgs", &msgs), 0);
		assert_int_equal(msgs->size, 1);
		assert_string_equal(h_s(&msgs->ptr[0], "body"), "before");
	}
	proto_doc_free(&res);
	assert_int_equal(h_send(a2, ch, "after", "m2"), 2);

	pc_close(a1);
	pc_close(a2);
	pc_close(a3);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* Write one WebSocket frame straight to the socket, which the client API
 * cannot do for fragments: fin, opcode, masked with a zero key (allowed:
 * RFC 6455 5.3 only asks for a key). */
static int raw_frame(pc_conn *c, bool fin, int opcode, const void *p,
		     size_t n)
{
	uint8_t hdr[14];
	size_t hl = 2;
	const uint8_t *parts[2];
	size_t lens[2];

	hdr[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
	if (n < 126) {
		hdr[1] = 0x80 | (uint8_t)n;
	} else if (n <= 0xffff) {
		hdr[1] = 0x80 | 126;
		hdr[2] = (uint8_t)(n >> 8);
		hdr[3] = (uint8_t)n;
		hl = 4;
	} else {
		hdr[1] = 0x80 | 127;
		for (int i = 0; i < 8; i++)
			hdr[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
		hl = 10;
	}
	memset(hdr + hl, 0, 4);
	hl += 4;
	parts[0] = hdr;
	lens[0] = hl;
	parts[1] = p;
	lens[1] = n;
	for (int k = 0; k < 2; k++) {
		size_t off = 0;

		while (off < lens[k]) {
			ssize_t w = send(pc_fd(c), parts[k] + off,
					 lens[k] - off, MSG_NOSIGNAL);

			if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
				struct pollfd pf = { pc_fd(c), POLLOUT, 0 };

				if (poll(&pf, 1, H_TIMEOUT) <= 0)
					return -1;
				continue;
			}
			if (w < 0)
				return -1;
			off += (size_t)w;
		}
	}
	return 0;
}

/* A message in fragments is one message: answered as a whole; its total
 * size is what the frame limit applies to. */
static void test_fragmented_messages(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	proto_out o;
	proto_doc d;
	char *chunk;

	(void)st;
	h_start(&s, "");
	a = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	assert_non_null(b);

	/* {"op":"hb","rid":33} in three pieces */
	proto_out_init(&o, 0, 64);
	proto_enc_req(&o, "hb", 33, 0);
	assert_true(o.len > 4);
	assert_int_equal(raw_frame(a, false, OP_BIN, o.data, 2), 0);
	assert_int_equal(raw_frame(a, false, 0, o.data + 2, 2), 0);
	assert_int_equal(raw_frame(a, true, 0, o.data + 4, o.len - 4), 0);
	proto_out_free(&o);
	assert_int_equal(h_next(a, &d, H_TIMEOUT), 1);
	assert_string_equal(h_s(&d.root, "t"), "res");
	assert_int_equal(h_u(&d.root, "rid"), 33);
	assert_true(h_ok(&d));
	proto_doc_free(&d);

	/* Fragments of a text message: one BAD_FRAME for the message. */
	assert_int_equal(raw_frame(a, false, OP_TEXT, "{\"op\"", 5), 0);
	assert_int_equal(raw_frame(a, true, 0, ":\"hb\"}", 6), 0);
	expect_err(a, "BAD_FRAME", NULL);
	req_ok(a, "hb");
	assert_int_equal(h_next(a, &d, 300), 0); /* just the one err */

	/* Three fragments of 30000 bytes: 90000 in all, over 64 KiB. */
	chunk = malloc(30000);
	memset(chunk, 0xa1, 30000);
	assert_int_equal(raw_frame(a, false, OP_BIN, chunk, 30000), 0);
	assert_int_equal(raw_frame(a, false, 0, chunk, 30000), 0);
	raw_frame(a, true, 0, chunk, 30000); /* may be cut off */
	free(chunk);
	expect_closed(a, 1009, H_TIMEOUT);
	req_ok(b, "hb");
	pc_close(a);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* A text frame over 64 KiB is closed like a binary one. */
static void test_text_frame_too_large(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char *big;

	(void)st;
	h_start(&s, "");
	a = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	assert_non_null(b);
	big = malloc(70000);
	memset(big, 'j', 70000);
	pc_send_raw(a, OP_TEXT, big, 70000);
	free(big);
	expect_closed(a, 1009, H_TIMEOUT);
	req_ok(b, "hb");
	pc_close(a);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* --max-frame and --max-body are what hello reports and what the server
 * enforces, also for frames far smaller than the default limit. */
static void test_configured_frame_and_body_limits(void **st)
{
	hsrv s;
	pc_conn *a, *b, *c;
	proto_doc hr, res;
	proto_out o;
	const msgpack_object_map *lm;
	msgpack_object l = { .type = MSGPACK_OBJECT_MAP };
	char ch[65];
	char body[102];

	(void)st;
	h_start(&s, "--max-frame 1024 --max-body 100");
	a = h_connect(&s, "alice", "acme", &hr);
	assert_non_null(a);
	assert_int_equal(proto_get_map(&hr.root, "limits", &lm), 0);
	l.via.map = *lm;
	assert_int_equal(h_u(&l, "frame"), 1024);
	assert_int_equal(h_u(&l, "body"), 100);
	proto_doc_free(&hr);
	assert_int_equal(h_create(a, "general", "public", ch), 0);

	memset(body, 'q', sizeof(body));
	body[101] = 0;
	assert_int_equal(h_req(a, &res, "send", 3, "ch", 's', ch, "body", 's',
			       body, "cmid", 's', "b101"), 1);
	expect_code(&res, "TOO_LARGE");
	body[100] = 0;
	assert_int_equal(h_send(a, ch, body, "b100"), 1);

	/* 1024 bytes: fine. */
	pad_frame(&o, 5, 1024);
	assert_int_equal(pc_request(a, &o, 5, &res, H_TIMEOUT), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	proto_out_free(&o);
	/* 1025 and 2000 bytes: closed with 1009. */
	b = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(b);
	pad_frame(&o, 6, 1025);
	pc_send(b, &o);
	proto_out_free(&o);
	expect_closed(b, 1009, H_TIMEOUT);
	c = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(c);
	pad_frame(&o, 7, 2000);
	pc_send(c, &o);
	proto_out_free(&o);
	expect_closed(c, 1009, H_TIMEOUT);
	req_ok(a, "hb");

	pc_close(a);
	pc_close(b);
	pc_close(c);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* --max-frame above the 64 KiB default: what hello advertises is what the
 * decoder takes (it used to cap every frame at 64 KiB, so a 150 KB send
 * that the flags allowed got BAD_FRAME), the message is stored and read
 * back, and only a frame over the flag is closed with 1009. */
static void test_frame_limit_above_default(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	proto_doc res;
	const msgpack_object *msgs;
	char ch[65];
	size_t big = 150000, over = 270000;
	char *body = malloc(over + 1);

	(void)st;
	h_start(&s, "--max-frame 262144 --max-body 200000");
	a = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	assert_int_equal(h_create(a, "big", "public", ch), 0);
	memset(body, 'w', over);
	body[big] = 0;
	assert_int_equal(h_req(a, &res, "send", 3, "ch", 's', ch, "body", 's',
			       body, "cmid", 's', "big1"), 1);
	if (!h_ok(&res))
		fprintf(stderr, "150 KB send: %s\n", h_code(&res));
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	assert_int_equal(h_req(a, &res, "history", 2, "ch", 's', ch, "limit",
			       'u', (uint64_t)10), 1);
	assert_true(h_ok(&res));
	msgs = proto_get(&res.root, "msgs");
	assert_non_null(msgs);
	assert_int_equal(msgs->via.array.size, 1);
	{
		const char *got;
		uint32_t gotn;

		assert_int_equal(proto_get_str(&msgs->via.array.ptr[0], "body",
					       &got, &gotn), 0);
		assert_int_equal(gotn, big);
	}
	proto_doc_free(&res);

	b = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(b);
	body[big] = 'w';
	body[over] = 0;
	assert_true(h_post(b, "send", 3, "ch", 's', ch, "body", 's', body,
			   "cmid", 's', "big2") > 0);
	expect_closed(b, 1009, H_TIMEOUT);
	req_ok(a, "hb");
	free(body);
	pc_close(a);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* ---- bad requests -------------------------------------------------------- */

static void test_unknown_op(void **st)
{
	hsrv s;
	pc_conn *a;
	proto_doc res;
	proto_out o;

	(void)st;
	h_start(&s, "");
	a = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);

	/* With a rid: a res for that rid (pc_request matches it). */
	assert_int_equal(h_req(a, &res, "no.such.op", 0), 1);
	expect_code(&res, "BAD_REQUEST");

	/* Without: an err frame that names the op. */
	proto_out_init(&o, 0, 64);
	proto_enc_req(&o, "no.such.op", 0, 0);
	assert_int_equal(pc_send(a, &o), 0);
	proto_out_free(&o);
	expect_err(a, "BAD_REQUEST", "no.such.op");

	/* No op at all, or an op that is not a string. */
	proto_out_init(&o, 0, 64);
	msgpack_pack_map(&o.pk, 1);
	proto_pk_cstr(&o.pk, "rid");
	msgpack_pack_uint64(&o.pk, 500);
	assert_int_equal(pc_request(a, &o, 500, &res, H_TIMEOUT), 1);
	expect_code(&res, "BAD_REQUEST");
	proto_out_free(&o);
	proto_out_init(&o, 0, 64);
	msgpack_pack_map(&o.pk, 2);
	proto_pk_cstr(&o.pk, "op");
	msgpack_pack_uint64(&o.pk, 7);
	proto_pk_cstr(&o.pk, "rid");
	msgpack_pack_uint64(&o.pk, 501);
	assert_int_equal(pc_request(a, &o, 501, &res, H_TIMEOUT), 1);
	expect_code(&res, "BAD_REQUEST");
	proto_out_free(&o);

	req_ok(a, "hb");
	pc_close(a);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

static void test_bad_arguments(void **st)
{
	static const char cmid64[] = "cccccccccccccccccccccccccccccccc"
				     "cccccccccccccccccccccccccccccccc";
	static const char cmid65[] = "cccccccccccccccccccccccccccccccc"
				     "cccccccccccccccccccccccccccccccc" "c";
	hsrv s;
	pc_conn *a;
	proto_doc res;
	proto_out o;
	char ch[65];
	const msgpack_object_array *msgs;

	(void)st;
	_Static_assert(sizeof(cmid64) == 65 && sizeof(cmid65) == 66,
		       "cmids of 64 and 65 bytes");
	h_start(&s, "");
	a = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	assert_int_equal(h_create(a, "general", "public", ch), 0);

	/* send */
	assert_int_equal(h_req(a, &res, "send", 2, "ch", 's', ch, "cmid", 's',
			       "c1"), 1);
	expect_code(&res, "BAD_REQUEST"); /* no body */
	assert_int_equal(h_req(a, &res, "send", 3, "ch", 's', ch, "body", 'u',
			       (uint64_t)5, "cmid", 's', "c1"), 1);
	expect_code(&res, "BAD_REQUEST"); /* body not a string */
	assert_int_equal(h_req(a, &res, "send", 3, "ch", 'u', (uint64_t)42,
			       "body", 's', "hi", "cmid", 's', "c1"), 1);
	expect_code(&res, "BAD_REQUEST"); /* ch an integer */
	assert_int_equal(h_req(a, &res, "send", 2, "body", 's', "hi", "cmid",
			       's', "c1"), 1);
	expect_code(&res, "BAD_REQUEST"); /* no ch */
	assert_int_equal(h_req(a, &res, "send", 3, "ch", 's', "bad id!",
			       "body", 's', "hi", "cmid", 's', "c1"), 1);
	expect_code(&res, "BAD_REQUEST"); /* malformed ch */
	assert_int_equal(h_req(a, &res, "send", 2, "ch", 's', ch, "body", 's',
			       "hi"), 1);
	expect_code(&res, "BAD_REQUEST"); /* no cmid */
	assert_int_equal(h_req(a, &res, "send", 3, "ch", 's', ch, "body", 's',
			       "hi", "cmid", 's', ""), 1);
	expect_code(&res, "BAD_REQUEST"); /* empty cmid */
	assert_int_equal(h_req(a, &res, "send", 3, "ch", 's', ch, "body", 's',
			       "hi", "cmid", 's', cmid65), 1);
	expect_code(&res, "BAD_REQUEST"); /* cmid of 65 bytes */
	assert_int_equal(h_req(a, &res, "send", 4, "ch", 's', ch, "body", 's',
			       "hi", "cmid", 's', "c1", "thread", 's', "1"), 1);
	expect_code(&res, "BAD_REQUEST"); /* thread not a seq */

	/* Fire-and-forget: the same refusal as an err frame naming send. */
	proto_out_init(&o, 0, 128);
	proto_enc_req(&o, "send", 0, 2);
	proto_pk_cstr(&o.pk, "ch");
	proto_pk_cstr(&o.pk, ch);
	proto_pk_cstr(&o.pk, "cmid");
	proto_pk_cstr(&o.pk, "c1");
	assert_int_equal(pc_send(a, &o), 0);
	proto_out_free(&o);
	expect_err(a, "BAD_REQUEST", "send");

	/* history */
	assert_int_equal(h_req(a, &res, "history", 2, "ch", 's', ch, "limit",
			       'u', (uint64_t)0), 1);
	expect_code(&res, "BAD_REQUEST");
	assert_int_equal(h_req(a, &res, "history", 2, "ch", 's', ch, "limit",
			       'u', (uint64_t)201), 1);
	expect_code(&res, "BAD_REQUEST");
	assert_int_equal(h_req(a, &res, "history", 2, "ch", 's', ch, "limit",
			       's', "10"), 1);
	expect_code(&res, "BAD_REQUEST");
	assert_int_equal(h_req(a, &res, "history", 1, "limit", 'u',
			       (uint64_t)10), 1);
	expect_code(&res, "BAD_REQUEST"); /* no ch */
	assert_int_equal(h_req(a, &res, "history", 2, "ch", 's', ch, "before",
			       's', "5"), 1);
	expect_code(&res, "BAD_REQUEST");

	/* other ops */
	assert_int_equal(h_req(a, &res, "ch.create", 1, "kind", 's', "public"),
			 1);
	expect_code(&res, "BAD_REQUEST"); /* no name */
	assert_int_equal(h_req(a, &res, "ch.create", 2, "name", 's', "x",
			       "kind", 's', "secret"), 1);
	expect_code(&res, "BAD_REQUEST"); /* no such kind */
	assert_int_equal(h_req(a, &res, "ch.join", 1, "ch", 'b', 1), 1);
	expect_code(&res, "BAD_REQUEST");
	assert_int_equal(h_req(a, &res, "events", 1, "ch", 's', ch), 1);
	expect_code(&res, "BAD_REQUEST"); /* no after */
	{
		const char *none[] = { NULL };

		assert_int_equal(h_req(a, &res, "dm.open", 1, "users", 'S',
				       none), 1);
		expect_code(&res, "BAD_REQUEST"); /* nobody */
	}

	/* The limits themselves are fine. */
	assert_int_equal(h_send(a, ch, "max cmid", cmid64), 1);
	assert_int_equal(h_req(a, &res, "history", 2, "ch", 's', ch, "limit",
			       'u', (uint64_t)200), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	assert_int_equal(h_req(a, &res, "history", 2, "ch", 's', ch, "limit",
			       'u', (uint64_t)1), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);

	/* Nothing refused was stored: one message, seq 1. */
	assert_int_equal(h_req(a, &res, "history", 1, "ch", 's', ch), 1);
	assert_true(h_ok(&res));
	assert_int_equal(proto_get_array(&res.root, "msgs", &msgs), 0);
	assert_int_equal(msgs->size, 1);
	assert_int_equal(h_u(&msgs->ptr[0], "seq"), 1);
	assert_string_equal(h_s(&msgs->ptr[0], "cmid"), cmid64);
	proto_doc_free(&res);
	/* Bad requests are not bad frames: many do not close anything. */
	for (int i = 0; i < 25; i++) {
		assert_int_equal(h_req(a, &res, "history", 2, "ch", 's', ch,
				       "limit", 'u', (uint64_t)0), 1);
		expect_code(&res, "BAD_REQUEST");
	}
	req_ok(a, "hb");

	pc_close(a);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

static void test_body_too_large(void **st)
{
	hsrv s;
	pc_conn *a;
	proto_doc res;
	proto_out o;
	char ch[65];
	char *body;
	const msgpack_object_array *msgs;
	const char *b;
	uint32_t bn;

	(void)st;
	h_start(&s, "");
	a = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	assert_int_equal(h_create(a, "general", "public", ch), 0);
	body = malloc(16385 + 1);
	memset(body, 'b', 16385);
	body[16385] = 0;
	assert_int_equal(h_req(a, &res, "send", 3, "ch", 's', ch, "body", 's',
			       body, "cmid", 's', "big"), 1);
	expect_code(&res, "TOO_LARGE");
	/* Without a rid: an err frame. */
	proto_out_init(&o, 0, 17000);
	proto_enc_send(&o, 0, ch, body, 16385, "big2", 0, NULL, 0);
	assert_int_equal(pc_send(a, &o), 0);
	proto_out_free(&o);
	expect_err(a, "TOO_LARGE", "send");
	/* 16 KiB exactly is fine. */
	body[16384] = 0;
	assert_int_equal(h_send(a, ch, body, "max"), 1);
	h_drain(a, 100);
	assert_int_equal(h_req(a, &res, "history", 1, "ch", 's', ch), 1);
	assert_true(h_ok(&res));
	assert_int_equal(proto_get_array(&res.root, "msgs", &msgs), 0);
	assert_int_equal(msgs->size, 1);
	assert_int_equal(proto_get_str(&msgs->ptr[0], "body", &b, &bn), 0);
	assert_int_equal(bn, 16384);
	assert_int_equal(h_u(&msgs->ptr[0], "seq"), 1);
	proto_doc_free(&res);
	free(body);
	pc_close(a);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* ---- slow consumers ------------------------------------------------------ */

#define SLOW_MSGS 600
#define SLOW_BODY (15 * 1024)
/* Sends in flight: their events (~15 KiB each) must not pile up past the
 * 64 KiB bound on the connections that do read. */
#define SLOW_WINDOW 2

static void test_slow_consumer(void **st)
{
	hsrv s;
	pc_conn *a, *slow, *fast;
	proto_doc res;
	char ch[65];
	char *body;
	uint64_t acked = 0, sent = 0, last_seq = 0;
	int fast_evs = 0;

	(void)st;
	h_start(&s, "--max-outbuf 65536 --send-rate 100000 "
		    "--send-burst 100000");
	a = h_connect(&s, "alice", "acme", NULL);
	slow = h_connect(&s, "bob", "acme", NULL);
	fast = h_connect(&s, "carol", "acme", NULL);
	assert_non_null(a);
	assert_non_null(slow);
	assert_non_null(fast);
	assert_int_equal(h_create(a, "firehose", "public", ch), 0);
	h_join_ok(slow, ch);
	h_join_ok(fast, ch);
	/* From here on, slow never reads. */

	body = malloc(SLOW_BODY + 1);
	memset(body, 'z', SLOW_BODY);
	body[SLOW_BODY] = 0;
	while (acked < SLOW_MSGS) {
		proto_doc d;
		int rc;

		while (sent < SLOW_MSGS && sent - acked < SLOW_WINDOW) {
			proto_out o;
			char cmid[16];

			snprintf(cmid, sizeof(cmid), "s%llu",
				 (unsigned long long)sent);
			proto_out_init(&o, 0, SLOW_BODY + 128);
			proto_enc_send(&o, 10000 + sent, ch, body, SLOW_BODY,
				       cmid, 0, NULL, 0);
			assert_int_equal(pc_send(a, &o), 0);
			proto_out_free(&o);
			sent++;
		}
		rc = h_next(a, &d, H_TIMEOUT);
		if (rc != 1)
			fail_msg("sender lost after %llu acks (rc %d, "
				 "close %d)",
				 (unsigned long long)acked, rc,
				 pc_close_code(a));
		if (!strcmp(h_s(&d.root, "t"), "res")) {
			if (!h_ok(&d))
				fail_msg("send refused: %s", h_code(&d));
			assert_int_equal(h_u(&d.root, "rid"), 10000 + acked);
			assert_int_equal(h_u(&d.root, "seq"), acked + 1);
			last_seq = h_u(&d.root, "seq");
			acked++;
		}
		proto_doc_free(&d);
		/* The reading member keeps up. */
		while (h_next(fast, &d, 0) == 1) {
			if (!strcmp(h_s(&d.root, "t"), "ev")) {
				fast_evs++;
				assert_int_equal(h_u(&d.root, "seq"),
						 (uint64_t)fast_evs);
			}
			proto_doc_free(&d);
		}
	}
	free(body);
	assert_int_equal(last_seq, SLOW_MSGS);

	/* The non-reading connection was cut: it reads what the kernel had
	 * buffered, then the close, 4008. */
	expect_closed(slow, 4008, 30000);

	/* The sender and the reading member are fine. */
	req_ok(a, "hb");
	while (fast_evs < SLOW_MSGS) {
		proto_doc d;
		int rc = h_next(fast, &d, H_TIMEOUT);

		if (rc != 1)
			fail_msg("the reading member lost after %d events "
				 "(rc %d, close %d)", fast_evs, rc,
				 pc_close_code(fast));
		if (!strcmp(h_s(&d.root, "t"), "ev")) {
			fast_evs++;
			assert_int_equal(h_u(&d.root, "seq"),
					 (uint64_t)fast_evs);
		}
		proto_doc_free(&d);
	}
	req_ok(fast, "hb");
	/* Nothing was lost: bob comes back and resumes. */
	{
		pc_conn *again = h_connect(&s, "bob", "acme", NULL);
		proto_out o;

		assert_non_null(again);
		proto_out_init(&o, 0, 128);
		proto_enc_req(&o, "events", 7, 3);
		proto_pk_cstr(&o.pk, "ch");
		proto_pk_cstr(&o.pk, ch);
		proto_pk_cstr(&o.pk, "after");
		msgpack_pack_uint64(&o.pk, SLOW_MSGS - 1);
		proto_pk_cstr(&o.pk, "limit");
		msgpack_pack_uint64(&o.pk, 10);
		assert_int_equal(request_drop(again, &o, 7, &res), 1);
		proto_out_free(&o);
		assert_true(h_ok(&res));
		{
			const msgpack_object_array *evs;

			assert_int_equal(
				proto_get_array(&res.root, "evs", &evs), 0);
			assert_int_equal(evs->size, 1);
			assert_int_equal(h_u(&evs->ptr[0], "seq"), SLOW_MSGS);
		}
		proto_doc_free(&res);
		pc_close(again);
	}
	pc_close(a);
	pc_close(slow);
	pc_close(fast);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* Regression: the 4008 bound counted what one turn queued before any of
 * it was written, so an answer larger than --max-outbuf (here history:
 * 10 messages of 15 KiB against 64 KiB), or a burst of fan-outs drained
 * together from a busy shard's mailbox, cut a reader that keeps up. */
static void test_large_answer_is_no_slow_consumer(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	proto_doc res;
	char ch[65], cmid[16];
	char *body = malloc(SLOW_BODY + 1);
	const msgpack_object_array *msgs = NULL;

	(void)st;
	memset(body, 'q', SLOW_BODY);
	body[SLOW_BODY] = 0;
	h_start(&s, "--max-outbuf 65536 --send-rate 100000 "
		    "--send-burst 100000");
	a = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	assert_int_equal(h_create(a, "big", "public", ch), 0);
	for (int i = 0; i < 10; i++) {
		snprintf(cmid, sizeof(cmid), "big%d", i);
		assert_int_equal(h_send(a, ch, body, cmid), i + 1);
	}
	/* a fresh reader asks for all of it at once: ~150 KiB in one frame */
	b = h_connect(&s, "bob", "acme", NULL);
	assert_non_null(b);
	for (int round = 0; round < 3; round++) {
		assert_int_equal(h_req(b, &res, "history", 2, "ch", 's', ch,
				       "limit", 'u', (uint64_t)10), 1);
		assert_true(h_ok(&res));
		assert_int_equal(proto_get_array(&res.root, "msgs", &msgs), 0);
		assert_int_equal(msgs->size, 10);
		proto_doc_free(&res);
	}
	req_ok(b, "hb");
	pc_close(a);
	pc_close(b);
	free(body);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* ---- send rate ----------------------------------------------------------- */

#define RATE_SENDS 150

static void test_rate_limit(void **st)
{
	hsrv s;
	pc_conn *a, *a2;
	char ch[65];
	int got = 0, nok = 0, nlimited = 0, evs = 0;
	uint64_t max_retry = 0, expect_seq = 1;
	int status[RATE_SENDS];
	uint64_t seqs[RATE_SENDS];

	(void)st;
	h_start(&s, "");
	a = h_connect(&s, "alice", "acme", NULL);
	a2 = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	assert_non_null(a2);
	assert_int_equal(h_create(a, "general", "public", ch), 0);

	/* Pipelined: all sends out before any answer is read. */
	for (int i = 0; i < RATE_SENDS; i++) {
		proto_out o;
		char cmid[16];

		snprintf(cmid, sizeof(cmid), "r%d", i);
		proto_out_init(&o, 0, 128);
		proto_enc_send(&o, 1000 + (uint64_t)i, ch, "x", 1, cmid, 0,
			       NULL, 0);
		assert_int_equal(pc_send(a, &o), 0);
		proto_out_free(&o);
		status[i] = 0;
	}
	while (got < RATE_SENDS) {
		proto_doc d;
		uint64_t rid;

		assert_int_equal(h_next(a, &d, H_TIMEOUT), 1);
		if (!strcmp(h_s(&d.root, "t"), "ev")) {
			evs++;
			assert_int_equal(h_u(&d.root, "seq"), (uint64_t)evs);
		}
		if (strcmp(h_s(&d.root, "t"), "res")) {
			proto_doc_free(&d);
			continue;
		}
		rid = h_u(&d.root, "rid");
		assert_true(rid >= 1000 && rid < 1000 + RATE_SENDS);
		assert_int_equal(status[rid - 1000], 0); /* one answer each */
		if (h_ok(&d)) {
			status[rid - 1000] = 1;
			seqs[rid - 1000] = h_u(&d.root, "seq");
			nok++;
		} else {
			uint64_t retry = h_u(&d.root, "retry_ms");

			if (strcmp(h_code(&d), "RATE_LIMITED"))
				fail_msg("send %llu: %s",
					 (unsigned long long)rid, h_code(&d));
			assert_true(retry > 0);
			assert_true(retry <= 1000);
			if (retry > max_retry)
				max_retry = retry;
			status[rid - 1000] = 2;
			nlimited++;
		}
		got++;
		proto_doc_free(&d);
	}
	assert_true(nlimited >= 1);
	assert_true(nok >= 100); /* the burst went through */
	assert_int_equal(nok + nlimited, RATE_SENDS);
	/* The accepted ones got contiguous seqs, in the order sent. */
	for (int i = 0; i < RATE_SENDS; i++) {
		if (status[i] != 1)
			continue;
		assert_int_equal(seqs[i], expect_seq);
		expect_seq++;
	}
	/* The user's other device shares the bucket; after retry_ms, a send
	 * goes through, with the next seq. */
	usleep((useconds_t)max_retry * 1000);
	assert_int_equal(h_send(a2, ch, "later", "later"), (int64_t)nok + 1);

	/* The events the channel got are the accepted sends, no more. */
	{
		proto_doc d;

		while (evs < nok + 1) {
			if (h_expect(a, "ev", &d, H_TIMEOUT) != 1)
				fail_msg("%d of %d events", evs, nok + 1);
			evs++;
			assert_int_equal(h_u(&d.root, "seq"), (uint64_t)evs);
			proto_doc_free(&d);
		}
		assert_int_equal(h_expect(a, "ev", &d, 300), 0);
	}
	pc_close(a);
	pc_close(a2);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* ---- fire and forget ----------------------------------------------------- */

static void test_fire_and_forget_error(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	proto_out o;
	proto_doc d;
	char priv[65], pub[65];
	int rc;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "bob", "acme", NULL);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(h_create(a, "secret", "private", priv), 0);
	assert_int_equal(h_create(a, "open", "public", pub), 0);
	h_drain(a, 200); /* the member notices of the new channels (a late
			  * one is skipped below) */

	/* bob is no member of either, as an err frame for send: the private
	 * one does not exist for him, the public one is FORBIDDEN. */
	proto_out_init(&o, 0, 128);
	proto_enc_send(&o, 0, priv, "let me in", 9, "b1", 0, NULL, 0);
	assert_int_equal(pc_send(b, &o), 0);
	proto_out_free(&o);
	expect_err(b, "NOT_FOUND", "send");
	proto_out_init(&o, 0, 128);
	proto_enc_send(&o, 0, pub, "let me in", 9, "b2", 0, NULL, 0);
	assert_int_equal(pc_send(b, &o), 0);
	proto_out_free(&o);
	expect_err(b, "FORBIDDEN", "send");
	/* A channel that does not exist. */
	proto_out_init(&o, 0, 128);
	proto_enc_send(&o, 0, "C0000000000000000", "hello?", 6, "b3", 0, NULL,
		       0);
	assert_int_equal(pc_send(b, &o), 0);
	proto_out_free(&o);
	expect_err(b, "NOT_FOUND", "send");
	req_ok(b, "hb");

	/* A fire-and-forget send that works: the event, and no answer. */
	proto_out_init(&o, 0, 128);
	proto_enc_send(&o, 0, priv, "quiet", 5, "a1", 0, NULL, 0);
	assert_int_equal(pc_send(a, &o), 0);
	proto_out_free(&o);
	while ((rc = h_next(a, &d, H_TIMEOUT)) == 1 &&
	       !strcmp(h_s(&d.root, "t"), "member"))
		proto_doc_free(&d);
	assert_int_equal(rc, 1);
	assert_string_equal(h_s(&d.root, "t"), "ev");
	assert_int_equal(h_u(&d.root, "seq"), 1);
	assert_string_equal(h_s(&d.root, "body"), "quiet");
	proto_doc_free(&d);
	while (h_next(a, &d, 500) == 1) { /* no answer, nothing else */
		if (strcmp(h_s(&d.root, "t"), "member"))
			fail_msg("then a %s frame", h_s(&d.root, "t"));
		proto_doc_free(&d);
	}
	/* The refused sends made no events: the next seq is 2. */
	assert_int_equal(h_send(a, priv, "loud", "a2"), 2);
	assert_int_equal(h_send(a, pub, "first", "a3"), 1);

	pc_close(a);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_text_frame),
		cmocka_unit_test(test_malformed_frames),
		cmocka_unit_test(test_bad_frame_abuse),
		cmocka_unit_test(test_bad_frame_abuse_any_10s),
		cmocka_unit_test(test_frame_too_large),
		cmocka_unit_test(test_fragmented_messages),
		cmocka_unit_test(test_text_frame_too_large),
		cmocka_unit_test(test_configured_frame_and_body_limits),
		cmocka_unit_test(test_frame_limit_above_default),
		cmocka_unit_test(test_unknown_op),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_body_too_large),
		cmocka_unit_test(test_slow_consumer),
		cmocka_unit_test(test_large_answer_is_no_slow_consumer),
		cmocka_unit_test(test_rate_limit),
		cmocka_unit_test(test_fire_and_forget_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
