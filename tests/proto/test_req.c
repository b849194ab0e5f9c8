/*
 * test_req: the typed requests (req.h) and the typed encoders (reply.h).
 * Groups (first argument; none: all):
 *   decode  per op, a table of valid and invalid requests with the code
 *           and message the server answers; every valid one goes through
 *           proto_req_encode and back, and through proto_req_copy
 *   copy    a copied request outlives its doc and its input
 *   reply   every answer and frame encoder: the bytes are those the actors
 *           packed by hand before (reference packers below are copied from
 *           them), and the decoded map holds every field
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/reply.h"
#include "proto/req.h"
#include "jpack.h"

/* ---- helpers ------------------------------------------------------------ */

static proto_str ps(const char *s)
{
	return (proto_str){ s, (uint32_t)strlen(s) };
}

static bool pstr_is(proto_str s, const char *want)
{
	return s.s && s.n == strlen(want) && !memcmp(s.s, want, s.n);
}

#define assert_pstr(str_, want_)                                             \
	do {                                                                 \
		proto_str got_ = (str_);                                     \
		if (!pstr_is(got_, (want_)))                                 \
			fail_msg("%s is '%.*s', want '%s'", #str_,           \
				 got_.s ? (int)got_.n : 6,                   \
				 got_.s ? got_.s : "(null)", (want_));       \
	} while (0)

/* Strings the tables build (long bodies, many ids): freed at the end. */
static char *arena[256];
static unsigned narena;

static char *keep(char *s)
{
	assert_true(narena < sizeof(arena) / sizeof(arena[0]));
	arena[narena++] = s;
	return s;
}

static void arena_free(void)
{
	while (narena)
		free(arena[--narena]);
}

static const char *xs(size_t n) /* n times 'x' */
{
	char *s = malloc(n + 1);

	memset(s, 'x', n);
	s[n] = 0;
	return keep(s);
}

static const char *ids(unsigned n) /* "u0","u1",... */
{
	char *s = malloc(n * 12 + 1), *p = s;

	*p = 0;
	for (unsigned i = 0; i < n; i++)
		p += sprintf(p, "%s\"u%u\"", i ? "," : "", i);
	return keep(s);
}

static const char *fmt(const char *f, ...)
{
	va_list ap;
	int n;
	char *s;

	va_start(ap, f);
	n = vsnprintf(NULL, 0, f, ap);
	va_end(ap);
	s = malloc((size_t)n + 1);
	va_start(ap, f);
	vsnprintf(s, (size_t)n + 1, f, ap);
	va_end(ap);
	return keep(s);
}

/* Decode json into doc, exact-size copy of the bytes (ASan sees overreads). */
static void doc_of(proto_doc *doc, const char *json)
{
	proto_out o;
	void *copy;

	proto_out_init(&o, 0, 256);
	jpack(&o, json);
	copy = malloc(o.len);
	memcpy(copy, o.data, o.len);
	if (proto_decode(doc, copy, o.len) != PROTO_OK)
		fail_msg("test frame does not decode: %s", json);
	free(copy);
	proto_out_free(&o);
}

static void encode(proto_out *o, const struct proto_req *r)
{
	proto_out_init(o, 0, 256);
	proto_req_encode(o, r);
}

static bool same(const proto_out *a, const proto_out *b)
{
	return a->len == b->len && !memcmp(a->data, b->data, a->len);
}

/* A valid request r: encode it, decode that, encode again: the same bytes
 * (the decoded struct came back). And its copy encodes the same. */
static void roundtrip(const struct proto_req *r, const struct proto_limits *lim,
		      const char *json)
{
	proto_out a, b, c;
	proto_doc d;
	struct proto_req r2, cp;
	const char *why = NULL;
	size_t need;
	void *tail;

	encode(&a, r);
	if (proto_decode(&d, a.data, a.len) != PROTO_OK)
		fail_msg("%s: its encoding does not decode", json);
	if (proto_req_decode(&d.root, lim, &r2, &why) != PROTO_C_OK)
		fail_msg("%s: its encoding is refused: %s", json, why);
	encode(&b, &r2);
	if (!same(&a, &b))
		fail_msg("%s: encode/decode/encode differs", json);
	assert_int_equal(r2.op, r->op);
	assert_int_equal(r2.has_rid, r->has_rid);
	assert_int_equal(r2.rid, r->rid);
	proto_doc_free(&d);

	need = proto_req_copy(r, NULL, 0, NULL);
	tail = malloc(need ? need : 1);
	assert_int_equal(proto_req_copy(r, tail, need, &cp), need);
	encode(&c, &cp);
	if (!same(&a, &c))
		fail_msg("%s: the copy encodes differently", json);
	free(tail);
	proto_out_free(&a);
	proto_out_free(&b);
	proto_out_free(&c);
}

static struct proto_limits lim_all;

static void check_lim(const struct proto_limits *lim, const char *json,
		      int want, const char *want_msg, int line)
{
	proto_doc d;
	struct proto_req r;
	const char *why = NULL;
	int rc;

	doc_of(&d, json);
	rc = proto_req_decode(&d.root, lim, &r, &why);
	if (rc != want || (want && (!why || strcmp(why, want_msg))))
		fail_msg("line %d: %.200s\n  got %s '%s'\n  want %s '%s'", line,
			 json, rc ? proto_code_name(rc) : "OK",
			 rc ? why : "", want ? proto_code_name(want) : "OK",
			 want ? want_msg : "");
	if (rc == PROTO_C_OK)
		roundtrip(&r, lim, json);
	proto_doc_free(&d);
}

#define OK(json) check_lim(&lim_all, (json), 0, NULL, __LINE__)
#define BAD(json, msg)                                                       \
	check_lim(&lim_all, (json), PROTO_C_BAD_REQUEST, (msg), __LINE__)
#define BIG(json, msg)                                                       \
	check_lim(&lim_all, (json), PROTO_C_TOO_LARGE, (msg), __LINE__)

/* Decode json that must be valid; r points into *d. */
static void dec_ok(proto_doc *d, const char *json, struct proto_req *r)
{
	const char *why = NULL;

	doc_of(d, json);
	if (proto_req_decode(&d->root, &lim_all, r, &why))
		fail_msg("%s: refused: %s", json, why);
}

/* ---- decode: rid and op ------------------------------------------------- */

static void test_header(void **state)
{
	proto_doc d;
	struct proto_req r;
	const char *why;

	(void)state;
	BAD("{\"op\":\"hb\",\"rid\":-1}", "rid must be an unsigned integer");
	BAD("{\"op\":\"hb\",\"rid\":\"1\"}", "rid must be an unsigned integer");
	BAD("{\"rid\":1}", "op must be a string");
	BAD("{\"op\":7,\"rid\":1}", "op must be a string");
	BAD("{\"op\":\"nope\",\"rid\":2}", "unknown op");
	BAD("{\"op\":\"HB\"}", "unknown op");
	OK("{\"op\":\"hb\"}");
	OK("{\"op\":\"hb\",\"rid\":0}");
	OK("{\"op\":\"hb\",\"rid\":null}");

	/* what is known when it fails: enough to answer as the server did */
	doc_of(&d, "{\"op\":\"hb\",\"rid\":-1}");
	assert_int_equal(proto_req_decode(&d.root, &lim_all, &r, &why),
			 PROTO_C_BAD_REQUEST);
	assert_false(r.has_rid); /* answered as {"t":"err"}, no "op" */
	assert_null(r.opname.s);
	assert_int_equal(r.op, PROTO_OP_NONE);
	proto_doc_free(&d);

	doc_of(&d, "{\"op\":\"nope\"}");
	assert_int_equal(proto_req_decode(&d.root, &lim_all, &r, &why),
			 PROTO_C_BAD_REQUEST);
	assert_int_equal(r.op, PROTO_OP_NONE);
	assert_pstr(r.opname, "nope"); /* echoed in the fire-and-forget err */
	proto_doc_free(&d);

	doc_of(&d, "{\"op\":\"send\",\"rid\":9}");
	assert_int_equal(proto_req_decode(&d.root, &lim_all, &r, &why),
			 PROTO_C_BAD_REQUEST);
	assert_int_equal(r.op, PROTO_OP_SEND); /* "hello first" goes first */
	assert_true(r.has_rid);
	assert_int_equal(r.rid, 9);
	assert_pstr(r.opname, "send");
	assert_string_equal(why, "ch must be a channel id");
	proto_doc_free(&d);

	/* every op's name round-trips; the first 21 are the server's order */
	for (int op = 0; op < PROTO_OP__COUNT; op++) {
		const char *n = proto_op_name(op);

		assert_non_null(n);
		assert_int_equal(proto_op_lookup(n, (uint32_t)strlen(n)), op);
	}
	assert_string_equal(proto_op_name(PROTO_OP_SEARCH), "search");
	assert_int_equal(PROTO_OP_SEARCH, 20);
	assert_null(proto_op_name(PROTO_OP__COUNT));
	assert_null(proto_op_name(-1));
	assert_string_equal(proto_code_name(PROTO_C_TOO_LARGE), "TOO_LARGE");
	assert_null(proto_code_name(PROTO_C_OK));
}

/* The ops of the contract the server does not carry out are "unknown op"
 * while it says so, before their arguments are looked at. */
static void test_served(void **state)
{
	struct proto_limits lim = proto_limits_default();

	(void)state;
	lim.ops = PROTO_OPS_SERVED;
	check_lim(&lim, "{\"op\":\"users.search\",\"q\":\"\"}",
		  PROTO_C_BAD_REQUEST, "q must be 1-64 bytes", __LINE__);
	check_lim(&lim, "{\"op\":\"notify.get\",\"rid\":1}", 0, NULL,
		  __LINE__);
	lim.ops = PROTO_OPS_SERVED & ~PROTO_OPS_PUSH;
	check_lim(&lim, "{\"op\":\"notify.get\",\"rid\":1}",
		  PROTO_C_BAD_REQUEST, "unknown op", __LINE__);
	lim.ops = PROTO_OPS_SERVED;
	check_lim(&lim, "{\"op\":\"search\",\"q\":\"hi\"}", 0, NULL, __LINE__);
	check_lim(&lim, "{\"op\":\"presence.watch\",\"users\":[]}", 0, NULL,
		  __LINE__);
	lim.ops = PROTO_OPS_SERVED & ~PROTO_OP_BIT(PROTO_OP_SEARCH);
	check_lim(&lim, "{\"op\":\"search\",\"q\":\"hi\"}",
		  PROTO_C_BAD_REQUEST, "unknown op", __LINE__);
}

/* ---- decode: per op ----------------------------------------------------- */

static void test_hello(void **state)
{
	proto_doc d;
	struct proto_req r;

	(void)state;
	OK("{\"op\":\"hello\",\"rid\":1,\"token\":\"t\"}");
	OK("{\"op\":\"hello\",\"token\":\"t\",\"resume\":{\"g\":5,\"h\":0}}");
	OK("{\"op\":\"hello\",\"token\":\"t\",\"resume\":null}");
	OK("{\"op\":\"hello\",\"token\":\"t\",\"resume\":{}}");
	OK("{\"op\":\"hello\"}"); /* no token: UNAUTHORIZED, the caller's */
	OK("{\"op\":\"hello\",\"token\":5}");
	BAD("{\"op\":\"hello\",\"token\":\"t\",\"resume\":[1]}", PROTO_MSG_RESUME);
	BAD("{\"op\":\"hello\",\"resume\":5}", PROTO_MSG_RESUME);

	dec_ok(&d, "{\"op\":\"hello\",\"token\":\"abc\",\"resume\":{\"g\":5,"
		   "\"h.2\":7}}", &r);
	assert_int_equal(r.op, PROTO_OP_HELLO);
	assert_pstr(r.a.hello.token, "abc");
	assert_int_equal(r.a.hello.resume.n, 2);
	assert_pstr(proto_resume_ch(&r.a.hello.resume, 1), "h.2");
	assert_int_equal(proto_resume_seq(&r.a.hello.resume, 1), 7);
	assert_false(r.a.hello.resume_bad);
	proto_doc_free(&d);

	dec_ok(&d, "{\"op\":\"hello\",\"token\":5}", &r);
	assert_null(r.a.hello.token.s);
	proto_doc_free(&d);

	/* a bad entry is the caller's to answer after the token */
	static const char *const bad[] = {
		"{\"op\":\"hello\",\"token\":\"t\",\"resume\":{\"g\":-1}}",
		"{\"op\":\"hello\",\"token\":\"t\",\"resume\":{\"g\":\"5\"}}",
		"{\"op\":\"hello\",\"token\":\"t\",\"resume\":{\"a b\":5}}",
		"{\"op\":\"hello\",\"token\":\"t\",\"resume\":{\"\":5}}",
		"{\"op\":\"hello\",\"token\":\"t\",\"resume\":{\"g\":5,\"h\":{}}}",
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		dec_ok(&d, bad[i], &r);
		if (!r.a.hello.resume_bad)
			fail_msg("%s: resume_bad not set", bad[i]);
		roundtrip(&r, &lim_all, bad[i]);
		proto_doc_free(&d);
	}
}

static void test_channels(void **state)
{
	proto_doc d;
	struct proto_req r;

	(void)state;
	OK("{\"op\":\"ch.create\",\"rid\":1,\"name\":\"x\",\"kind\":\"public\"}");
	OK("{\"op\":\"ch.create\",\"name\":\"x\",\"kind\":\"private\"}");
	OK(fmt("{\"op\":\"ch.create\",\"name\":\"%s\",\"kind\":\"public\"}",
	       xs(80)));
	BAD(fmt("{\"op\":\"ch.create\",\"name\":\"%s\",\"kind\":\"public\"}",
		xs(81)), "name must be 1-80 bytes");
	BAD("{\"op\":\"ch.create\",\"name\":\"\",\"kind\":\"public\"}",
	    "name must be 1-80 bytes");
	BAD("{\"op\":\"ch.create\",\"name\":5,\"kind\":\"public\"}",
	    "name must be 1-80 bytes");
	BAD("{\"op\":\"ch.create\",\"name\":\"x\",\"kind\":\"dm\"}",
	    "kind must be public or private");
	BAD("{\"op\":\"ch.create\",\"name\":\"x\"}",
	    "kind must be public or private");
	BAD("{\"op\":\"ch.create\",\"kind\":\"nope\"}", /* name first */
	    "name must be 1-80 bytes");
	/* topic: optional, checked as ch.set checks it (it used to be
	 * dropped without a word when it did not fit) */
	BAD("{\"op\":\"ch.create\",\"name\":\"x\",\"kind\":\"public\","
	    "\"topic\":5}", "topic must be at most 250 bytes");
	BAD(fmt("{\"op\":\"ch.create\",\"name\":\"x\",\"kind\":\"public\","
		"\"topic\":\"%s\"}", xs(251)), "topic must be at most 250 bytes");
	OK(fmt("{\"op\":\"ch.create\",\"name\":\"x\",\"kind\":\"public\","
	       "\"topic\":\"%s\"}", xs(250)));
	OK("{\"op\":\"ch.create\",\"name\":\"x\",\"kind\":\"public\","
	   "\"topic\":null}");
	dec_ok(&d, "{\"op\":\"ch.create\",\"name\":\"n\",\"kind\":\"private\","
		   "\"topic\":\"tt\"}", &r);
	assert_pstr(r.a.create.name, "n");
	assert_int_equal(r.a.create.kind, PROTO_KIND_PRIVATE);
	assert_pstr(r.a.create.topic, "tt");
	proto_doc_free(&d);

	OK("{\"op\":\"dm.open\",\"rid\":1,\"users\":[\"b\"]}");
	OK(fmt("{\"op\":\"dm.open\",\"users\":[%s]}", ids(249)));
	BAD(fmt("{\"op\":\"dm.open\",\"users\":[%s]}", ids(250)),
	    "users must be a list of user ids");
	BAD("{\"op\":\"dm.open\",\"users\":[]}", "users must be a list of user ids");
	BAD("{\"op\":\"dm.open\",\"users\":[\"a b\"]}",
	    "users must be a list of user ids");
	BAD("{\"op\":\"dm.open\",\"users\":[1]}", "users must be a list of user ids");
	BAD("{\"op\":\"dm.open\",\"users\":\"b\"}",
	    "users must be a list of user ids");
	BAD("{\"op\":\"dm.open\"}", "users must be a list of user ids");

	static const char *const chops[] = { "ch.join", "ch.leave", "typing",
					     "ch.info", "receipts" };
	for (unsigned i = 0; i < 5; i++) {
		OK(fmt("{\"op\":\"%s\",\"rid\":3,\"ch\":\"g-1.x_Y\"}", chops[i]));
		OK(fmt("{\"op\":\"%s\",\"ch\":\"%s\"}", chops[i], xs(64)));
		BAD(fmt("{\"op\":\"%s\",\"ch\":\"%s\"}", chops[i], xs(65)),
		    "ch must be a channel id");
		BAD(fmt("{\"op\":\"%s\",\"ch\":\"\"}", chops[i]),
		    "ch must be a channel id");
		BAD(fmt("{\"op\":\"%s\",\"ch\":\"a/b\"}", chops[i]),
		    "ch must be a channel id");
		BAD(fmt("{\"op\":\"%s\",\"ch\":5}", chops[i]),
		    "ch must be a channel id");
		BAD(fmt("{\"op\":\"%s\"}", chops[i]), "ch must be a channel id");
	}

	static const char *const uops[] = { "ch.invite", "ch.kick" };
	for (unsigned i = 0; i < 2; i++) {
		OK(fmt("{\"op\":\"%s\",\"ch\":\"g\",\"users\":[\"a\",\"a\"]}",
		       uops[i]));
		OK(fmt("{\"op\":\"%s\",\"ch\":\"g\",\"users\":[%s]}", uops[i],
		       ids(1000)));
		BAD(fmt("{\"op\":\"%s\",\"ch\":\"g\",\"users\":[%s]}", uops[i],
			ids(1001)), "users must be a list of user ids");
		BAD(fmt("{\"op\":\"%s\",\"ch\":\"g\",\"users\":[]}", uops[i]),
		    "users must be a list of user ids");
		BAD(fmt("{\"op\":\"%s\",\"users\":[]}", uops[i]),
		    "ch must be a channel id");
	}
	dec_ok(&d, "{\"op\":\"ch.invite\",\"ch\":\"g\",\"users\":[\"a\",\"b\"]}",
	       &r);
	assert_pstr(r.a.users.ch, "g");
	assert_int_equal(r.a.users.users.n, 2);
	assert_pstr(proto_strs_at(&r.a.users.users, 1), "b");
	proto_doc_free(&d);

	OK("{\"op\":\"ch.list\",\"rid\":4}");
	OK("{\"op\":\"ch.members\",\"ch\":\"g\"}");
	OK("{\"op\":\"ch.members\",\"ch\":\"g\",\"after\":\"\",\"limit\":1}");
	OK("{\"op\":\"ch.members\",\"ch\":\"g\",\"after\":null}");
	BAD("{\"op\":\"ch.members\",\"ch\":\"g\",\"limit\":0}",
	    "limit must be 1-1000");
	BAD("{\"op\":\"ch.members\",\"ch\":\"g\",\"limit\":1001}",
	    "limit must be 1-1000");
	BAD("{\"op\":\"ch.members\",\"ch\":\"g\",\"limit\":\"5\"}",
	    "limit must be 1-1000");
	BAD("{\"op\":\"ch.members\",\"ch\":\"g\",\"after\":\"a b\"}",
	    "after must be a user id");
	BAD("{\"op\":\"ch.members\",\"ch\":\"g\",\"after\":5}",
	    "after must be a user id");
	BAD("{\"op\":\"ch.members\",\"ch\":\"g\",\"after\":5,\"limit\":0}",
	    "limit must be 1-1000"); /* limit first, as the server did */
	dec_ok(&d, "{\"op\":\"ch.members\",\"ch\":\"g\"}", &r);
	assert_int_equal(r.a.members.limit, 1000);
	assert_null(r.a.members.after.s);
	proto_doc_free(&d);
	dec_ok(&d, "{\"op\":\"ch.members\",\"ch\":\"g\",\"after\":\"bob\","
		   "\"limit\":7}", &r);
	assert_int_equal(r.a.members.limit, 7);
	assert_pstr(r.a.members.after, "bob");
	proto_doc_free(&d);
}

static void test_send(void **state)
{
	proto_doc d;
	struct proto_req r;

	(void)state;
	OK("{\"op\":\"send\",\"rid\":1,\"ch\":\"g\",\"body\":\"hi\",\"cmid\":\"c\"}");
	OK("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"\",\"cmid\":\"c\"}");
	OK(fmt("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"%s\",\"cmid\":\"%s\"}",
	       xs(16384), xs(64)));
	BIG(fmt("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"%s\",\"cmid\":\"c\"}",
		xs(16385)), "body too large");
	BIG(fmt("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"%s\",\"cmid\":\"\"}",
		xs(16385)), "body too large"); /* body before cmid */
	BAD("{\"op\":\"send\",\"ch\":\"g\",\"cmid\":\"c\"}",
	    "body must be a string");
	BAD("{\"op\":\"send\",\"ch\":\"g\",\"body\":5,\"cmid\":\"c\"}",
	    "body must be a string");
	BAD("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"\"}",
	    "cmid must be 1-64 bytes");
	BAD(fmt("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"%s\"}",
		xs(65)), "cmid must be 1-64 bytes");
	BAD("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\"}",
	    "cmid must be 1-64 bytes");
	BAD("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"c\","
	    "\"thread\":0}", "thread must be a seq");
	BAD("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"c\","
	    "\"thread\":-3}", "thread must be a seq");
	OK("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"c\","
	   "\"thread\":null}");
	BAD("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"c\","
	    "\"mentions\":\"bob\"}", "mentions must be a list of user ids, \"@channel\" or \"@here\"");
	BAD("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"c\","
	    "\"mentions\":[5]}", "mentions must be a list of user ids, \"@channel\" or \"@here\"");
	BAD("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"c\","
	    "\"mentions\":[\"a b\"]}", "mentions must be a list of user ids, \"@channel\" or \"@here\"");
	OK(fmt("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"c\","
	       "\"mentions\":[%s]}", ids(50)));
	BAD(fmt("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"c\","
		"\"mentions\":[%s]}", ids(51)),
	    "mentions must be a list of user ids, \"@channel\" or \"@here\"");
	OK("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"c\","
	   "\"mentions\":[]}");
	/* files: 1-10 ids */
	OK("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"\",\"cmid\":\"c\","
	   "\"files\":[\"F0a\",\"F0b\"]}");
	BAD("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"c\","
	    "\"files\":[]}", "files must be a list of 1-10 file ids");
	BAD("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"c\","
	    "\"files\":[\"a b\"]}", "files must be a list of 1-10 file ids");
	BAD("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"c\","
	    "\"files\":\"F0a\"}", "files must be a list of 1-10 file ids");
	BAD("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"c\","
	    "\"files\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\","
	    "\"i\",\"j\",\"k\"]}", "files must be a list of 1-10 file ids");
	/* everyone, or everyone online: the two words that are not ids */
	OK("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"c\","
	   "\"mentions\":[\"@channel\",\"@here\",\"bob\"]}");
	BAD("{\"op\":\"send\",\"ch\":\"g\",\"body\":\"b\",\"cmid\":\"c\","
	    "\"mentions\":[\"@everyone\"]}",
	    "mentions must be a list of user ids, \"@channel\" or \"@here\"");
	BAD("{\"op\":\"send\",\"ch\":\"a b\",\"body\":5}",
	    "ch must be a channel id");

	dec_ok(&d, "{\"op\":\"send\",\"rid\":5,\"ch\":\"gen\",\"body\":"
		   "\"h\\\"i\",\"cmid\":\"c1\",\"thread\":9,\"mentions\":"
		   "[\"bob\",\"eve\"]}", &r);
	assert_int_equal(r.op, PROTO_OP_SEND);
	assert_int_equal(r.rid, 5);
	assert_pstr(r.a.send.ch, "gen");
	assert_pstr(r.a.send.body, "h\"i");
	assert_pstr(r.a.send.cmid, "c1");
	assert_int_equal(r.a.send.thread, 9);
	assert_int_equal(r.a.send.mentions.n, 2);
	assert_pstr(proto_strs_at(&r.a.send.mentions, 0), "bob");
	assert_pstr(proto_strs_at(&r.a.send.mentions, 1), "eve");
	proto_doc_free(&d);

	/* the server's configured limits, not the defaults */
	struct proto_limits lim = proto_limits_default();

	lim.max_body = 4;
	lim.max_mentions = 1;
	check_lim(&lim, "{\"op\":\"send\",\"ch\":\"g\",\"body\":\"12345\","
			"\"cmid\":\"c\"}", PROTO_C_TOO_LARGE, "body too large",
		  __LINE__);
	check_lim(&lim, "{\"op\":\"edit\",\"ch\":\"g\",\"target\":1,"
			"\"body\":\"12345\"}", PROTO_C_TOO_LARGE,
		  "body too large", __LINE__);
	check_lim(&lim, "{\"op\":\"send\",\"ch\":\"g\",\"body\":\"1234\","
			"\"cmid\":\"c\",\"mentions\":[\"a\",\"b\"]}",
		  PROTO_C_BAD_REQUEST, "mentions must be a list of user ids, \"@channel\" or \"@here\"",
		  __LINE__);
	lim.max_dm = 3;
	lim.max_watch = 1;
	lim.max_name = 2;
	check_lim(&lim, "{\"op\":\"dm.open\",\"users\":[\"a\",\"b\",\"c\"]}",
		  PROTO_C_BAD_REQUEST, "users must be a list of user ids",
		  __LINE__);
	check_lim(&lim, "{\"op\":\"dm.open\",\"users\":[\"a\",\"b\"]}", 0, NULL,
		  __LINE__);
	check_lim(&lim, "{\"op\":\"presence.watch\",\"users\":[\"a\",\"b\"]}",
		  PROTO_C_BAD_REQUEST,
		  "users must be a list of at most 500 user ids", __LINE__);
	check_lim(&lim, "{\"op\":\"ch.create\",\"name\":\"abc\",\"kind\":"
			"\"public\"}", PROTO_C_BAD_REQUEST,
		  "name must be 1-80 bytes", __LINE__);
}

static void test_reads(void **state)
{
	proto_doc d;
	struct proto_req r;

	(void)state;
	OK("{\"op\":\"history\",\"rid\":1,\"ch\":\"g\"}");
	OK("{\"op\":\"history\",\"ch\":\"g\",\"before\":10,\"limit\":200}");
	OK("{\"op\":\"history\",\"ch\":\"g\",\"after\":0,\"thread\":4}");
	OK("{\"op\":\"history\",\"ch\":\"g\",\"before\":null,\"after\":3}");
	BAD("{\"op\":\"history\",\"ch\":\"g\",\"limit\":201}",
	    "limit must be 1-200");
	BAD("{\"op\":\"history\",\"ch\":\"g\",\"limit\":0}",
	    "limit must be 1-200");
	BAD("{\"op\":\"history\",\"ch\":\"g\",\"before\":1,\"after\":2}",
	    "before/after/thread must be seqs, not both before and after");
	BAD("{\"op\":\"history\",\"ch\":\"g\",\"thread\":0}",
	    "before/after/thread must be seqs, not both before and after");
	BAD("{\"op\":\"history\",\"ch\":\"g\",\"before\":\"1\"}",
	    "before/after/thread must be seqs, not both before and after");
	BAD("{\"op\":\"history\",\"ch\":\"g\",\"after\":-1}",
	    "before/after/thread must be seqs, not both before and after");
	BAD("{\"op\":\"history\",\"before\":1,\"after\":2}",
	    "ch must be a channel id");
	dec_ok(&d, "{\"op\":\"history\",\"ch\":\"g\"}", &r);
	assert_int_equal(r.a.history.limit, 50);
	assert_false(r.a.history.has_before);
	assert_false(r.a.history.has_after);
	assert_int_equal(r.a.history.thread, 0);
	proto_doc_free(&d);
	dec_ok(&d, "{\"op\":\"history\",\"ch\":\"g\",\"after\":0,\"thread\":4,"
		   "\"limit\":3}", &r);
	assert_true(r.a.history.has_after);
	assert_int_equal(r.a.history.after, 0);
	assert_int_equal(r.a.history.thread, 4);
	assert_int_equal(r.a.history.limit, 3);
	proto_doc_free(&d);

	OK("{\"op\":\"events\",\"ch\":\"g\",\"after\":0}");
	OK("{\"op\":\"events\",\"ch\":\"g\",\"after\":5,\"limit\":1000}");
	BAD("{\"op\":\"events\",\"ch\":\"g\"}", "after must be a seq");
	BAD("{\"op\":\"events\",\"ch\":\"g\",\"after\":\"5\"}",
	    "after must be a seq");
	BAD("{\"op\":\"events\",\"ch\":\"g\",\"after\":5,\"limit\":1001}",
	    "limit must be 1-1000");
	BAD("{\"op\":\"events\",\"ch\":\"g\",\"limit\":1001}",
	    "limit must be 1-1000"); /* limit before after */
	dec_ok(&d, "{\"op\":\"events\",\"ch\":\"g\",\"after\":5}", &r);
	assert_int_equal(r.a.events.limit, 100);
	assert_int_equal(r.a.events.after, 5);
	proto_doc_free(&d);

	OK("{\"op\":\"search\",\"rid\":1,\"q\":\"hi\"}");
	OK(fmt("{\"op\":\"search\",\"q\":\"%s\",\"ch\":\"g\",\"limit\":100}",
	       xs(1024)));
	OK("{\"op\":\"search\",\"q\":\"hi\",\"ch\":null}");
	BAD("{\"op\":\"search\",\"q\":\"\"}", "q must be a non-empty string");
	BAD("{\"op\":\"search\",\"q\":5}", "q must be a non-empty string");
	BAD("{\"op\":\"search\"}", "q must be a non-empty string");
	BAD(fmt("{\"op\":\"search\",\"q\":\"%s\"}", xs(1025)),
	    "q is too long (at most 1024 bytes)");
	BAD("{\"op\":\"search\",\"q\":\"x\",\"limit\":101}", "limit must be 1-100");
	BAD("{\"op\":\"search\",\"q\":\"x\",\"limit\":0}", "limit must be 1-100");
	BAD("{\"op\":\"search\",\"q\":\"x\",\"ch\":\"a b\"}",
	    "ch must be a channel id");
	BAD("{\"op\":\"search\",\"q\":\"x\",\"ch\":5,\"limit\":0}",
	    "limit must be 1-100"); /* limit before ch */
	dec_ok(&d, "{\"op\":\"search\",\"q\":\"a b\"}", &r);
	assert_pstr(r.a.search.q, "a b");
	assert_int_equal(r.a.search.limit, 20);
	assert_null(r.a.search.ch.s);
	proto_doc_free(&d);
}

static void test_changes(void **state)
{
	proto_doc d;
	struct proto_req r;

	(void)state;
	OK("{\"op\":\"edit\",\"ch\":\"g\",\"target\":1,\"body\":\"b\"}");
	BAD("{\"op\":\"edit\",\"ch\":\"g\",\"target\":0,\"body\":\"b\"}",
	    "target must be a message seq");
	BAD("{\"op\":\"edit\",\"ch\":\"g\",\"body\":\"b\"}",
	    "target must be a message seq");
	BAD("{\"op\":\"edit\",\"ch\":\"g\",\"target\":1}",
	    "body must be a string");
	BIG(fmt("{\"op\":\"edit\",\"ch\":\"g\",\"target\":1,\"body\":\"%s\"}",
		xs(16385)), "body too large");
	static const char *const tops[] = { "edits", "delete" };
	for (unsigned i = 0; i < 2; i++) {
		OK(fmt("{\"op\":\"%s\",\"ch\":\"g\",\"target\":3}", tops[i]));
		BAD(fmt("{\"op\":\"%s\",\"ch\":\"g\",\"target\":0}", tops[i]),
		    "target must be a message seq");
		BAD(fmt("{\"op\":\"%s\",\"ch\":\"g\",\"target\":true}",
			tops[i]), "target must be a message seq");
		BAD(fmt("{\"op\":\"%s\",\"target\":3}", tops[i]),
		    "ch must be a channel id");
	}
	OK("{\"op\":\"react\",\"ch\":\"g\",\"target\":1,\"emoji\":\"+1\","
	   "\"on\":false}");
	OK(fmt("{\"op\":\"react\",\"ch\":\"g\",\"target\":1,\"emoji\":\"%s\","
	       "\"on\":true}", xs(64)));
	BAD(fmt("{\"op\":\"react\",\"ch\":\"g\",\"target\":1,\"emoji\":\"%s\","
		"\"on\":true}", xs(65)), "emoji must be 1-64 bytes");
	BAD("{\"op\":\"react\",\"ch\":\"g\",\"target\":1,\"emoji\":\"\","
	    "\"on\":true}", "emoji must be 1-64 bytes");
	BAD("{\"op\":\"react\",\"ch\":\"g\",\"target\":1,\"emoji\":\"x\"}",
	    "on must be a boolean");
	BAD("{\"op\":\"react\",\"ch\":\"g\",\"target\":1,\"emoji\":\"x\","
	    "\"on\":1}", "on must be a boolean");
	BAD("{\"op\":\"react\",\"ch\":\"g\",\"emoji\":\"x\",\"on\":true}",
	    "target must be a message seq");
	dec_ok(&d, "{\"op\":\"react\",\"ch\":\"g\",\"target\":8,\"emoji\":"
		   "\"\xf0\x9f\x91\x8d\",\"on\":true}", &r);
	assert_int_equal(r.a.react.target, 8);
	assert_pstr(r.a.react.emoji, "\xf0\x9f\x91\x8d");
	assert_true(r.a.react.on);
	proto_doc_free(&d);

	static const char *const sops[] = { "read", "delivered" };
	for (unsigned i = 0; i < 2; i++) {
		OK(fmt("{\"op\":\"%s\",\"ch\":\"g\",\"seq\":0}", sops[i]));
		BAD(fmt("{\"op\":\"%s\",\"ch\":\"g\"}", sops[i]),
		    "seq must be an unsigned integer");
		BAD(fmt("{\"op\":\"%s\",\"ch\":\"g\",\"seq\":-1}", sops[i]),
		    "seq must be an unsigned integer");
		BAD(fmt("{\"op\":\"%s\",\"ch\":\"g\",\"seq\":1.5}", sops[i]),
		    "seq must be an unsigned integer");
	}
}

static void test_presence(void **state)
{
	proto_doc d;
	struct proto_req r;

	(void)state;
	OK("{\"op\":\"presence.set\",\"status\":\"online\"}");
	OK("{\"op\":\"presence.set\",\"status\":\"invisible\"}");
	BAD("{\"op\":\"presence.set\",\"status\":\"offline\"}",
	    "status must be online, away, dnd or invisible");
	BAD("{\"op\":\"presence.set\",\"status\":\"Online\"}",
	    "status must be online, away, dnd or invisible");
	BAD("{\"op\":\"presence.set\"}",
	    "status must be online, away, dnd or invisible");
	dec_ok(&d, "{\"op\":\"presence.set\",\"status\":\"dnd\"}", &r);
	assert_int_equal(r.a.pset.status, PROTO_PS_DND);
	proto_doc_free(&d);

	OK("{\"op\":\"presence.watch\",\"users\":[]}");
	OK(fmt("{\"op\":\"presence.watch\",\"users\":[%s]}", ids(500)));
	BAD(fmt("{\"op\":\"presence.watch\",\"users\":[%s]}", ids(501)),
	    "users must be a list of at most 500 user ids");
	BAD("{\"op\":\"presence.watch\"}",
	    "users must be a list of at most 500 user ids");
	BAD("{\"op\":\"presence.watch\",\"users\":{}}",
	    "users must be a list of at most 500 user ids");
	BAD("{\"op\":\"presence.watch\",\"users\":[\"a\",2]}",
	    "users must be a list of user ids");
}

/* The contract's ops the server does not carry out yet. */
static void test_next_ops(void **state)
{
	proto_doc d;
	struct proto_req r;

	(void)state;
	OK("{\"op\":\"users.search\",\"q\":\"al\"}");
	OK(fmt("{\"op\":\"users.search\",\"q\":\"%s\",\"limit\":50}", xs(64)));
	BAD(fmt("{\"op\":\"users.search\",\"q\":\"%s\"}", xs(65)),
	    "q must be 1-64 bytes");
	BAD("{\"op\":\"users.search\",\"q\":\"\"}", "q must be 1-64 bytes");
	BAD("{\"op\":\"users.search\",\"q\":\"a\",\"limit\":51}",
	    "limit must be 1-50");
	dec_ok(&d, "{\"op\":\"users.search\",\"q\":\"al\"}", &r);
	assert_int_equal(r.a.usearch.limit, 20);
	proto_doc_free(&d);

	OK(fmt("{\"op\":\"users.get\",\"users\":[%s]}", ids(500)));
	OK("{\"op\":\"users.get\",\"users\":[]}");
	BAD(fmt("{\"op\":\"users.get\",\"users\":[%s]}", ids(501)),
	    "users must be a list of at most 500 user ids");
	BAD("{\"op\":\"users.get\",\"users\":[\"\"]}",
	    "users must be a list of user ids");

	OK("{\"op\":\"ch.set\",\"ch\":\"g\",\"name\":\"n\"}");
	OK("{\"op\":\"ch.set\",\"ch\":\"g\",\"topic\":\"\",\"archived\":true,"
	   "\"post\":\"owners\"}");
	BAD("{\"op\":\"ch.set\",\"ch\":\"g\"}",
	    "nothing to set: name, topic, archived or post");
	BAD("{\"op\":\"ch.set\",\"ch\":\"g\",\"name\":null}",
	    "nothing to set: name, topic, archived or post");
	BAD("{\"op\":\"ch.set\",\"ch\":\"g\",\"name\":\"\"}",
	    "name must be 1-80 bytes");
	BAD(fmt("{\"op\":\"ch.set\",\"ch\":\"g\",\"topic\":\"%s\"}", xs(251)),
	    "topic must be at most 250 bytes");
	BAD("{\"op\":\"ch.set\",\"ch\":\"g\",\"archived\":1}",
	    "archived must be a boolean");
	BAD("{\"op\":\"ch.set\",\"ch\":\"g\",\"post\":\"some\"}",
	    "post must be all or owners");
	dec_ok(&d, "{\"op\":\"ch.set\",\"ch\":\"g\",\"topic\":\"t\","
		   "\"post\":\"all\"}", &r);
	assert_false(r.a.chset.has_name);
	assert_true(r.a.chset.has_topic);
	assert_pstr(r.a.chset.topic, "t");
	assert_false(r.a.chset.has_archived);
	assert_true(r.a.chset.has_post);
	assert_int_equal(r.a.chset.post, PROTO_POST_ALL);
	proto_doc_free(&d);

	OK("{\"op\":\"ch.role\",\"ch\":\"g\",\"user\":\"u\",\"role\":\"owner\"}");
	BAD("{\"op\":\"ch.role\",\"ch\":\"g\",\"role\":\"owner\"}",
	    "user must be a user id");
	BAD("{\"op\":\"ch.role\",\"ch\":\"g\",\"user\":\"u\",\"role\":\"admin\"}",
	    "role must be owner or member");
	dec_ok(&d, "{\"op\":\"ch.role\",\"ch\":\"g\",\"user\":\"u\",\"role\":"
		   "\"member\"}", &r);
	assert_int_equal(r.a.role.role, PROTO_ROLE_MEMBER);
	assert_pstr(r.a.role.user, "u");
	proto_doc_free(&d);

	OK("{\"op\":\"push.register\",\"app\":\"a\",\"pushkey\":\"k\","
	   "\"platform\":\"ios\"}");
	OK("{\"op\":\"push.register\",\"app\":\"a\",\"pushkey\":\"k\","
	   "\"platform\":\"ios\",\"data\":{\"x\":[1,2],\"y\":null}}");
	OK("{\"op\":\"push.register\",\"app\":\"a\",\"pushkey\":\"k\","
	   "\"platform\":\"ios\",\"data\":null}");
	BAD("{\"op\":\"push.register\",\"app\":\"\",\"pushkey\":\"k\","
	    "\"platform\":\"ios\"}", "app must be 1-512 bytes");
	BAD(fmt("{\"op\":\"push.register\",\"app\":\"a\",\"pushkey\":\"%s\","
		"\"platform\":\"ios\"}", xs(513)),
	    "pushkey must be 1-512 bytes");
	BAD("{\"op\":\"push.register\",\"app\":\"a\",\"pushkey\":\"k\"}",
	    "platform must be 1-64 bytes");
	BAD("{\"op\":\"push.register\",\"app\":\"a\",\"pushkey\":\"k\","
	    "\"platform\":\"ios\",\"data\":[1]}", "data must be a map");
	BIG(fmt("{\"op\":\"push.register\",\"app\":\"a\",\"pushkey\":\"k\","
		"\"platform\":\"ios\",\"data\":{\"x\":\"%s\"}}", xs(1100)),
	    "data too large (at most 1 KiB)");
	OK("{\"op\":\"push.unregister\",\"app\":\"a\",\"pushkey\":\"k\"}");
	BAD("{\"op\":\"push.unregister\",\"app\":\"a\"}",
	    "pushkey must be 1-512 bytes");
	dec_ok(&d, "{\"op\":\"push.register\",\"app\":\"a\",\"pushkey\":\"k\","
		   "\"platform\":\"ios\",\"data\":{\"x\":1}}", &r);
	assert_int_equal(r.a.push.data.n, 4);
	assert_memory_equal(r.a.push.data.p, "\x81\xa1x\x01", 4);
	proto_doc_free(&d);

	OK("{\"op\":\"push.list\"}");
	OK("{\"op\":\"notify.get\",\"rid\":1}");
	OK("{\"op\":\"notify.set\",\"level\":\"mentions\"}");
	OK("{\"op\":\"notify.set\",\"level\":\"none\",\"ch\":\"g\"}");
	BAD("{\"op\":\"notify.set\",\"level\":\"some\"}",
	    "level must be all, mentions or none");
	BAD("{\"op\":\"notify.set\",\"level\":\"all\",\"ch\":\"a b\"}",
	    "ch must be a channel id");
	dec_ok(&d, "{\"op\":\"notify.set\",\"level\":\"none\"}", &r);
	assert_int_equal(r.a.notify.level, PROTO_LEVEL_NONE);
	assert_null(r.a.notify.ch.s);
	proto_doc_free(&d);
}

/* ---- copy --------------------------------------------------------------- */

static void test_copy(void **state)
{
	proto_doc d;
	struct proto_req r, c;
	size_t need;
	uint64_t *tail;
	char *s;

	(void)state;
	dec_ok(&d, "{\"op\":\"send\",\"rid\":77,\"ch\":\"gen\",\"body\":"
		   "\"hello\",\"cmid\":\"c9\",\"thread\":4,\"mentions\":"
		   "[\"bob\",\"carol\"]}", &r);
	need = proto_req_copy(&r, NULL, 0, NULL);
	/* the strings with a NUL each and two list entries */
	assert_true(need >= 4 + 6 + 3 + 4 + 6 + 5 + 2 * sizeof(msgpack_object));
	tail = malloc(need);
	/* too small: nothing copied, the size said again */
	memset(&c, 0xab, sizeof(c));
	assert_int_equal(proto_req_copy(&r, tail, need - 1, &c), need);
	assert_int_equal(((uint8_t *)&c)[0], 0xab);
	assert_int_equal(proto_req_copy(&r, tail, need, &c), need);
	proto_doc_free(&d); /* the copy must not need it */
	/* scribble on freed memory of the doc is ASan's part; here the copy
	 * must read the same */
	assert_int_equal(c.op, PROTO_OP_SEND);
	assert_int_equal(c.rid, 77);
	assert_true(c.has_rid);
	assert_pstr(c.opname, "send");
	assert_pstr(c.a.send.ch, "gen");
	assert_pstr(c.a.send.body, "hello");
	assert_pstr(c.a.send.cmid, "c9");
	assert_int_equal(c.a.send.thread, 4);
	assert_int_equal(c.a.send.mentions.n, 2);
	assert_pstr(proto_strs_at(&c.a.send.mentions, 1), "carol");
	/* NUL-terminated, inside the tail */
	assert_string_equal(c.a.send.ch.s, "gen");
	assert_string_equal(proto_strs_at(&c.a.send.mentions, 0).s, "bob");
	s = (char *)tail;
	assert_true(c.a.send.body.s >= s && c.a.send.body.s + 6 <= s + need);
	assert_true((const char *)c.a.send.mentions.v >= s);
	free(tail);

	/* an unknown op keeps what it named */
	{
		const char *why;

		doc_of(&d, "{\"op\":\"frobnicate\",\"rid\":1}");
		assert_int_equal(proto_req_decode(&d.root, &lim_all, &r, &why),
				 PROTO_C_BAD_REQUEST);
		need = proto_req_copy(&r, NULL, 0, NULL);
		tail = malloc(need);
		proto_req_copy(&r, tail, need, &c);
		proto_doc_free(&d);
		assert_pstr(c.opname, "frobnicate");
		assert_int_equal(c.op, PROTO_OP_NONE);
		free(tail);
	}

	/* hello: the resume map with a bad entry copies nothing that points
	 * into the doc */
	dec_ok(&d, "{\"op\":\"hello\",\"token\":\"tok\",\"resume\":{\"g\":3,"
		   "\"h\":{\"x\":\"y\"}}}", &r);
	need = proto_req_copy(&r, NULL, 0, NULL);
	tail = malloc(need);
	proto_req_copy(&r, tail, need, &c);
	proto_doc_free(&d);
	assert_pstr(c.a.hello.token, "tok");
	assert_int_equal(c.a.hello.resume.n, 2);
	assert_pstr(proto_resume_ch(&c.a.hello.resume, 0), "g");
	assert_int_equal(proto_resume_seq(&c.a.hello.resume, 0), 3);
	assert_int_equal(c.a.hello.resume.v[1].val.type, MSGPACK_OBJECT_NIL);
	assert_true(c.a.hello.resume_bad);
	free(tail);

	/* push data: raw bytes */
	dec_ok(&d, "{\"op\":\"push.register\",\"app\":\"a\",\"pushkey\":\"k\","
		   "\"platform\":\"p\",\"data\":{\"z\":true}}", &r);
	need = proto_req_copy(&r, NULL, 0, NULL);
	tail = malloc(need);
	proto_req_copy(&r, tail, need, &c);
	proto_doc_free(&d);
	assert_int_equal(c.a.push.data.n, 4);
	assert_memory_equal(c.a.push.data.p, "\x81\xa1z\xc3", 4);
	free(tail);
}

/* ---- reply: reference packers, as the actors wrote them ----------------- */

static void ref_res_ok(proto_out *o, uint64_t rid, unsigned n)
{
	proto_enc_res_ok(o, rid, n);
}

static void ref_pack_ch(msgpack_packer *pk, const char *id, const char *name,
			const char *kind)
{
	msgpack_pack_map(pk, 3);
	proto_pk_cstr(pk, "id");
	proto_pk_cstr(pk, id);
	proto_pk_cstr(pk, "name");
	proto_pk_cstr(pk, name);
	proto_pk_cstr(pk, "kind");
	proto_pk_cstr(pk, kind);
}

/* session.c pack_channel */
static void ref_pack_channel(msgpack_packer *pk, const proto_chinfo *c,
			     bool with_member)
{
	msgpack_pack_map(pk, with_member ? 8 : 7);
	proto_pk_cstr(pk, "id");
	proto_pk_cstr(pk, c->id);
	proto_pk_cstr(pk, "name");
	proto_pk_cstr(pk, c->name);
	proto_pk_cstr(pk, "kind");
	proto_pk_cstr(pk, proto_kind_names[c->kind]);
	proto_pk_cstr(pk, "last_seq");
	msgpack_pack_uint64(pk, c->last_seq);
	proto_pk_cstr(pk, "read_seq");
	msgpack_pack_uint64(pk, c->read_seq);
	proto_pk_cstr(pk, "unread");
	msgpack_pack_uint64(pk, c->unread);
	proto_pk_cstr(pk, "mentions");
	msgpack_pack_uint64(pk, c->mentions);
	if (with_member) {
		proto_pk_cstr(pk, "member");
		if (c->member)
			msgpack_pack_true(pk);
		else
			msgpack_pack_false(pk);
	}
}

static void expect_same(const proto_out *got, const proto_out *want,
			const char *what)
{
	if (!same(got, want))
		fail_msg("%s: %zu bytes, want %zu (the actors' bytes)", what,
			 got->len, want->len);
}

static void both_init(proto_out *a, proto_out *b)
{
	proto_out_init(a, 0, 64);
	proto_out_init(b, 0, 64);
}

static void both_free(proto_out *a, proto_out *b)
{
	proto_out_free(a);
	proto_out_free(b);
}

/* Decode an encoder's output; check the res header. */
static void dec_res(proto_doc *d, const proto_out *o, uint64_t rid)
{
	uint64_t u;
	bool ok;

	assert_int_equal(proto_decode_max(d, o->data, o->len, 1u << 24),
			 PROTO_OK);
	assert_int_equal(proto_get_uint(&d->root, "rid", &u), 0);
	assert_int_equal(u, rid);
	assert_int_equal(proto_get_bool(&d->root, "ok", &ok), 0);
	assert_true(ok);
}

static uint64_t get_u(const msgpack_object *m, const char *k)
{
	uint64_t u = 0;

	if (proto_get_uint(m, k, &u))
		fail_msg("no uint %s", k);
	return u;
}

static void assert_get_str(const msgpack_object *m, const char *k,
			   const char *want)
{
	proto_str s = { 0 };

	if (proto_get_str(m, k, &s.s, &s.n))
		fail_msg("no str %s", k);
	assert_pstr(s, want);
}

static void test_reply_small(void **state)
{
	proto_out a, b;
	proto_doc d;
	bool t;

	(void)state;
	/* empty ok */
	both_init(&a, &b);
	proto_enc_ok(&a, 12);
	ref_res_ok(&b, 12, 0);
	expect_same(&a, &b, "ok");
	dec_res(&d, &a, 12);
	assert_int_equal(d.root.via.map.size, 3);
	proto_doc_free(&d);
	both_free(&a, &b);

	/* send, and its dup */
	for (int dup = 0; dup < 2; dup++) {
		both_init(&a, &b);
		proto_enc_send_ok(&a, 3, 70000, 1700000000123ull, dup);
		ref_res_ok(&b, 3, 2 + dup);
		proto_pk_cstr(&b.pk, "seq");
		msgpack_pack_uint64(&b.pk, 70000);
		proto_pk_cstr(&b.pk, "ts");
		msgpack_pack_uint64(&b.pk, 1700000000123ull);
		if (dup) {
			proto_pk_cstr(&b.pk, "dup");
			msgpack_pack_true(&b.pk);
		}
		expect_same(&a, &b, "send_ok");
		dec_res(&d, &a, 3);
		assert_int_equal(get_u(&d.root, "seq"), 70000);
		assert_int_equal(get_u(&d.root, "ts"), 1700000000123ull);
		assert_int_equal(proto_get_bool(&d.root, "dup", &t),
				 dup ? 0 : PROTO_F_MISSING);
		proto_doc_free(&d);
		both_free(&a, &b);
	}

	/* edit/delete/react {seq}; react noop */
	both_init(&a, &b);
	proto_enc_seq_ok(&a, 4, 9);
	ref_res_ok(&b, 4, 1);
	proto_pk_cstr(&b.pk, "seq");
	msgpack_pack_uint64(&b.pk, 9);
	expect_same(&a, &b, "seq_ok");
	proto_out_reset(&a);
	proto_enc_react_ok(&a, 4, 9);
	expect_same(&a, &b, "react_ok seq");
	both_free(&a, &b);

	both_init(&a, &b);
	proto_enc_react_ok(&a, 5, 0);
	ref_res_ok(&b, 5, 1);
	proto_pk_cstr(&b.pk, "noop");
	msgpack_pack_true(&b.pk);
	expect_same(&a, &b, "react_ok noop");
	dec_res(&d, &a, 5);
	assert_int_equal(proto_get_bool(&d.root, "noop", &t), 0);
	assert_true(t);
	proto_doc_free(&d);
	both_free(&a, &b);

	/* ch.create / dm.open and ch.join */
	proto_chref ch = { "C0123", "general", PROTO_KIND_PRIVATE };

	both_init(&a, &b);
	proto_enc_chan_ok(&a, 6, &ch);
	ref_res_ok(&b, 6, 1);
	proto_pk_cstr(&b.pk, "ch");
	ref_pack_ch(&b.pk, "C0123", "general", "private");
	expect_same(&a, &b, "chan_ok");
	dec_res(&d, &a, 6);
	{
		const msgpack_object_map *m;

		assert_int_equal(proto_get_map(&d.root, "ch", &m), 0);
		msgpack_object o = { .type = MSGPACK_OBJECT_MAP,
				     .via.map = *m };
		assert_get_str(&o, "id", "C0123");
		assert_get_str(&o, "name", "general");
		assert_get_str(&o, "kind", "private");
	}
	proto_doc_free(&d);
	both_free(&a, &b);

	ch.kind = PROTO_KIND_PUBLIC;
	both_init(&a, &b);
	proto_enc_join_ok(&a, 7, &ch, 41);
	ref_res_ok(&b, 7, 2);
	proto_pk_cstr(&b.pk, "ch");
	ref_pack_ch(&b.pk, "C0123", "general", "public");
	proto_pk_cstr(&b.pk, "last_seq");
	msgpack_pack_uint64(&b.pk, 41);
	expect_same(&a, &b, "join_ok");
	dec_res(&d, &a, 7);
	assert_int_equal(get_u(&d.root, "last_seq"), 41);
	proto_doc_free(&d);
	both_free(&a, &b);

	/* errors: both forms, as server.c's reply_err */
	both_init(&a, &b);
	proto_enc_fail(&a, true, 8, "send", 4, "RATE_LIMITED", "slow", 250);
	proto_enc_res_err(&b, 8, "RATE_LIMITED", "slow", 250);
	expect_same(&a, &b, "fail with rid");
	both_free(&a, &b);
	both_init(&a, &b);
	proto_enc_fail(&a, false, 0, "send", 4, "FORBIDDEN", "no", 0);
	proto_enc_err(&b, "FORBIDDEN", "no", "send", 4, 0);
	expect_same(&a, &b, "fail without rid");
	both_free(&a, &b);
	both_init(&a, &b);
	proto_enc_fail(&a, false, 0, NULL, 0, "BAD_REQUEST", "x", 0);
	proto_enc_err(&b, "BAD_REQUEST", "x", NULL, 0, 0);
	expect_same(&a, &b, "fail without op");
	both_free(&a, &b);

	/* a decoded request's failure names its op, or the unknown one */
	{
		struct proto_req r;
		const char *why;

		doc_of(&d, "{\"op\":\"zap\"}");
		proto_req_decode(&d.root, &lim_all, &r, &why);
		both_init(&a, &b);
		proto_enc_req_fail(&a, &r, "BAD_REQUEST", why, 0);
		proto_enc_err(&b, "BAD_REQUEST", "unknown op", "zap", 3, 0);
		expect_same(&a, &b, "req_fail unknown op");
		both_free(&a, &b);
		proto_doc_free(&d);
	}
}

static void test_reply_lists(void **state)
{
	proto_out a, b;
	proto_doc d;
	const msgpack_object_array *arr;
	proto_chinfo chs[2] = {
		{ "C1", "one", PROTO_KIND_PUBLIC, 10, 4, 6, 1, true, true },
		{ "D2-ab", "", PROTO_KIND_DM, 0, 0, 0, 0, true, false },
	};

	(void)state;
	/* ch.list */
	both_init(&a, &b);
	proto_enc_ch_list_ok(&a, 1, chs, 2);
	ref_res_ok(&b, 1, 1);
	proto_pk_cstr(&b.pk, "channels");
	msgpack_pack_array(&b.pk, 2);
	ref_pack_channel(&b.pk, &chs[0], true);
	ref_pack_channel(&b.pk, &chs[1], true);
	expect_same(&a, &b, "ch_list_ok");
	dec_res(&d, &a, 1);
	assert_int_equal(proto_get_array(&d.root, "channels", &arr), 0);
	assert_int_equal(arr->size, 2);
	assert_get_str(&arr->ptr[0], "id", "C1");
	assert_get_str(&arr->ptr[1], "kind", "dm");
	assert_int_equal(get_u(&arr->ptr[0], "last_seq"), 10);
	assert_int_equal(get_u(&arr->ptr[0], "read_seq"), 4);
	assert_int_equal(get_u(&arr->ptr[0], "unread"), 6);
	assert_int_equal(get_u(&arr->ptr[0], "mentions"), 1);
	{
		bool m = true;

		assert_int_equal(proto_get_bool(&arr->ptr[1], "member", &m), 0);
		assert_false(m);
	}
	proto_doc_free(&d);
	both_free(&a, &b);

	/* hello, as sess_on_attach_res and pack_limits packed it */
	proto_hello_limits l = { 65536, 16384, 80, 100000, 250, 16, 50, 100,
				 8u << 20, 32u << 20, 5000 };

	chs[0].has_member = chs[1].has_member = false;
	both_init(&a, &b);
	proto_enc_hello_ok(&a, 2, "alice", "acme", NULL, 5000, &l, chs, 2);
	ref_res_ok(&b, 2, 5);
	proto_pk_cstr(&b.pk, "user");
	proto_pk_cstr(&b.pk, "alice");
	proto_pk_cstr(&b.pk, "ws");
	proto_pk_cstr(&b.pk, "acme");
	proto_pk_cstr(&b.pk, "hb_ms");
	msgpack_pack_uint32(&b.pk, 5000);
	proto_pk_cstr(&b.pk, "limits");
	msgpack_pack_map(&b.pk, 11);
	proto_pk_cstr(&b.pk, "frame");
	msgpack_pack_uint32(&b.pk, 65536);
	proto_pk_cstr(&b.pk, "body");
	msgpack_pack_uint32(&b.pk, 16384);
	proto_pk_cstr(&b.pk, "name");
	msgpack_pack_uint32(&b.pk, 80);
	proto_pk_cstr(&b.pk, "members");
	msgpack_pack_uint32(&b.pk, 100000);
	proto_pk_cstr(&b.pk, "dm");
	msgpack_pack_uint32(&b.pk, 250);
	proto_pk_cstr(&b.pk, "devices");
	msgpack_pack_uint32(&b.pk, 16);
	proto_pk_cstr(&b.pk, "send_per_s");
	msgpack_pack_uint32(&b.pk, 50);
	proto_pk_cstr(&b.pk, "send_burst");
	msgpack_pack_uint32(&b.pk, 100);
	proto_pk_cstr(&b.pk, "outbuf");
	msgpack_pack_uint64(&b.pk, 8u << 20);
	proto_pk_cstr(&b.pk, "outbuf_max");
	msgpack_pack_uint64(&b.pk, 32u << 20);
	proto_pk_cstr(&b.pk, "outbuf_stall_ms");
	msgpack_pack_uint32(&b.pk, 5000);
	proto_pk_cstr(&b.pk, "channels");
	msgpack_pack_array(&b.pk, 2);
	ref_pack_channel(&b.pk, &chs[0], false);
	ref_pack_channel(&b.pk, &chs[1], false);
	expect_same(&a, &b, "hello_ok");
	dec_res(&d, &a, 2);
	assert_get_str(&d.root, "user", "alice");
	assert_get_str(&d.root, "ws", "acme");
	assert_int_equal(get_u(&d.root, "hb_ms"), 5000);
	{
		const msgpack_object_map *m;

		assert_int_equal(proto_get_map(&d.root, "limits", &m), 0);
		msgpack_object o = { .type = MSGPACK_OBJECT_MAP,
				     .via.map = *m };
		assert_int_equal(get_u(&o, "frame"), 65536);
		assert_int_equal(get_u(&o, "outbuf_max"), 32u << 20);
		assert_int_equal(get_u(&o, "outbuf_stall_ms"), 5000);
		assert_int_equal(m->size, 11);
	}
	assert_int_equal(proto_get_array(&d.root, "channels", &arr), 0);
	assert_int_equal(arr->size, 2);
	assert_int_equal(arr->ptr[0].via.map.size, 7); /* no "member" */
	proto_doc_free(&d);
	both_free(&a, &b);
	/* with the display name (next round): one pair more, after ws */
	proto_out_init(&a, 0, 64);
	proto_enc_hello_ok(&a, 2, "alice", "acme", "Alice A.", 5000, &l, chs,
			   0);
	dec_res(&d, &a, 2);
	assert_get_str(&d.root, "name", "Alice A.");
	assert_int_equal(d.root.via.map.size, 9);
	{
		/* after t, rid, ok, user, ws */
		const msgpack_object *k = &d.root.via.map.ptr[5].key;

		assert_pstr(((proto_str){ k->via.str.ptr, k->via.str.size }),
			    "name");
	}
	proto_doc_free(&d);
	proto_out_free(&a);

	/* ch.members: ids as the session holds them (char[ID_CAP]) */
	char idv[3][65] = { "a", "bob", "c.d" };

	both_init(&a, &b);
	proto_enc_members_ok(&a, 3, idv[0], sizeof(idv[0]), 3, true);
	ref_res_ok(&b, 3, 2);
	proto_pk_cstr(&b.pk, "members");
	msgpack_pack_array(&b.pk, 3);
	for (int i = 0; i < 3; i++)
		proto_pk_cstr(&b.pk, idv[i]);
	proto_pk_cstr(&b.pk, "more");
	msgpack_pack_true(&b.pk);
	expect_same(&a, &b, "members_ok");
	dec_res(&d, &a, 3);
	assert_int_equal(proto_get_array(&d.root, "members", &arr), 0);
	assert_int_equal(arr->size, 3);
	assert_pstr(((proto_str){ arr->ptr[2].via.str.ptr,
				  arr->ptr[2].via.str.size }), "c.d");
	proto_doc_free(&d);
	both_free(&a, &b);

	/* history (backward scan: reversed) and events */
	proto_out m1, m2;
	proto_msg hm = { .seq = 5, .from = ps("a"), .ts = 1, .body = ps("x"),
			 .cmid = ps("c") };

	proto_out_init(&m1, 0, 64);
	proto_out_init(&m2, 0, 64);
	proto_enc_msg(&m1, &hm);
	hm.seq = 4;
	proto_enc_msg(&m2, &hm);
	proto_raw raws[2] = { { m1.data, m1.len }, { m2.data, m2.len } };
	for (int rev = 0; rev < 2; rev++) {
		both_init(&a, &b);
		proto_enc_history_ok(&a, 4, raws, 2, rev, rev);
		ref_res_ok(&b, 4, 2);
		proto_pk_cstr(&b.pk, "msgs");
		msgpack_pack_array(&b.pk, 2);
		for (uint32_t i = 0; i < 2; i++) {
			uint32_t j = rev ? 1 - i : i;

			proto_pk_raw(&b.pk, raws[j].p, raws[j].n);
		}
		proto_pk_cstr(&b.pk, "more");
		if (rev)
			msgpack_pack_true(&b.pk);
		else
			msgpack_pack_false(&b.pk);
		expect_same(&a, &b, "history_ok");
		dec_res(&d, &a, 4);
		assert_int_equal(proto_get_array(&d.root, "msgs", &arr), 0);
		assert_int_equal(get_u(&arr->ptr[0], "seq"), rev ? 4 : 5);
		proto_doc_free(&d);
		both_free(&a, &b);
	}
	both_init(&a, &b);
	proto_enc_events_ok(&a, 5, raws, 2, false);
	ref_res_ok(&b, 5, 2);
	proto_pk_cstr(&b.pk, "evs");
	msgpack_pack_array(&b.pk, 2);
	proto_pk_raw(&b.pk, raws[0].p, raws[0].n);
	proto_pk_raw(&b.pk, raws[1].p, raws[1].n);
	proto_pk_cstr(&b.pk, "more");
	msgpack_pack_false(&b.pk);
	expect_same(&a, &b, "events_ok");
	both_free(&a, &b);

	/* edits: the original, then the stored versions (proto_enc_version,
	 * as op_edit stored them) */
	proto_out v1;

	proto_out_init(&v1, 0, 64);
	proto_enc_version(&v1, ps("second"), 20);
	both_init(&a, &b);
	msgpack_pack_map(&b.pk, 2);
	proto_pk_cstr(&b.pk, "body");
	proto_pk_str(&b.pk, "second", 6);
	proto_pk_cstr(&b.pk, "ts");
	msgpack_pack_uint64(&b.pk, 20);
	expect_same(&v1, &b, "version");
	both_free(&a, &b);
	proto_raw vr = { v1.data, v1.len };

	both_init(&a, &b);
	proto_enc_edits_ok(&a, 6, ps("first"), 10, &vr, 1);
	ref_res_ok(&b, 6, 1);
	proto_pk_cstr(&b.pk, "versions");
	msgpack_pack_array(&b.pk, 2);
	msgpack_pack_map(&b.pk, 2);
	proto_pk_cstr(&b.pk, "body");
	proto_pk_str(&b.pk, "first", 5);
	proto_pk_cstr(&b.pk, "ts");
	msgpack_pack_uint64(&b.pk, 10);
	proto_pk_raw(&b.pk, vr.p, vr.n);
	expect_same(&a, &b, "edits_ok");
	dec_res(&d, &a, 6);
	assert_int_equal(proto_get_array(&d.root, "versions", &arr), 0);
	assert_int_equal(arr->size, 2);
	assert_get_str(&arr->ptr[0], "body", "first");
	assert_get_str(&arr->ptr[1], "body", "second");
	assert_int_equal(get_u(&arr->ptr[1], "ts"), 20);
	proto_doc_free(&d);
	both_free(&a, &b);
	proto_out_free(&v1);
	proto_out_free(&m1);
	proto_out_free(&m2);

	/* presence.watch, as gather_answer packed it */
	proto_pstate ps2[2] = { { "bob", PROTO_PS_AWAY, 17 },
				{ "eve", PROTO_PS_OFFLINE, 0 } };

	both_init(&a, &b);
	proto_enc_presence_watch_ok(&a, 7, ps2, 2);
	ref_res_ok(&b, 7, 1);
	proto_pk_cstr(&b.pk, "presence");
	msgpack_pack_map(&b.pk, 2);
	for (int i = 0; i < 2; i++) {
		proto_pk_cstr(&b.pk, ps2[i].user);
		msgpack_pack_map(&b.pk, 2);
		proto_pk_cstr(&b.pk, "status");
		proto_pk_cstr(&b.pk, proto_pstatus_names[ps2[i].status]);
		proto_pk_cstr(&b.pk, "since");
		msgpack_pack_uint64(&b.pk, ps2[i].since);
	}
	expect_same(&a, &b, "presence_watch_ok");
	dec_res(&d, &a, 7);
	{
		const msgpack_object_map *m;

		assert_int_equal(proto_get_map(&d.root, "presence", &m), 0);
		assert_int_equal(m->size, 2);
		assert_get_str(&m->ptr[0].val, "status", "away");
		assert_int_equal(get_u(&m->ptr[0].val, "since"), 17);
		assert_get_str(&m->ptr[1].val, "status", "offline");
	}
	proto_doc_free(&d);
	both_free(&a, &b);

	/* search, as search_op.c's done() packed it */
	proto_hit hits[2] = { { "g", 3, "bob", 99, "hello there", 5, NULL, 0 },
			      { "h", 4, "eve", 98, "", 0, NULL, 0 } };

	both_init(&a, &b);
	proto_enc_search_ok(&a, 8, hits, 2, false);
	ref_res_ok(&b, 8, 1);
	proto_pk_cstr(&b.pk, "hits");
	msgpack_pack_array(&b.pk, 2);
	for (int i = 0; i < 2; i++) {
		msgpack_pack_map(&b.pk, 5);
		proto_pk_cstr(&b.pk, "ch");
		proto_pk_cstr(&b.pk, hits[i].ch);
		proto_pk_cstr(&b.pk, "seq");
		msgpack_pack_uint64(&b.pk, hits[i].seq);
		proto_pk_cstr(&b.pk, "from");
		proto_pk_cstr(&b.pk, hits[i].from);
		proto_pk_cstr(&b.pk, "ts");
		msgpack_pack_uint64(&b.pk, hits[i].ts);
		proto_pk_cstr(&b.pk, "body");
		proto_pk_str(&b.pk, hits[i].body, hits[i].body_len);
	}
	expect_same(&a, &b, "search_ok");
	dec_res(&d, &a, 8);
	assert_int_equal(proto_get_array(&d.root, "hits", &arr), 0);
	assert_get_str(&arr->ptr[0], "body", "hello"); /* body_len counts */
	assert_get_str(&arr->ptr[1], "from", "eve");
	assert_int_equal(get_u(&arr->ptr[0], "ts"), 99);
	proto_doc_free(&d);
	proto_out_reset(&a);
	proto_enc_search_ok(&a, 8, hits, 0, true);
	dec_res(&d, &a, 8);
	{
		bool p = false;

		assert_int_equal(proto_get_bool(&d.root, "partial", &p), 0);
		assert_true(p);
	}
	proto_doc_free(&d);
	both_free(&a, &b);
}

static void test_reply_next(void **state)
{
	proto_out a;
	proto_doc d;
	const msgpack_object_array *arr;
	const msgpack_object_map *m;

	(void)state;
	proto_user us[2] = { { "al", "Al", PROTO_PS_ONLINE, 5 },
			     { "bo", "", PROTO_PS_DND, 0 } };

	proto_out_init(&a, 0, 64);
	proto_enc_users_search_ok(&a, 1, us, 2);
	dec_res(&d, &a, 1);
	assert_int_equal(proto_get_array(&d.root, "users", &arr), 0);
	assert_int_equal(arr->ptr[0].via.map.size, 3);
	assert_get_str(&arr->ptr[0], "id", "al");
	assert_get_str(&arr->ptr[0], "name", "Al");
	assert_get_str(&arr->ptr[1], "status", "dnd");
	proto_doc_free(&d);
	proto_out_reset(&a);
	proto_enc_users_get_ok(&a, 2, us, 2);
	dec_res(&d, &a, 2);
	assert_int_equal(proto_get_array(&d.root, "users", &arr), 0);
	assert_int_equal(get_u(&arr->ptr[0], "last_seen"), 5);
	proto_doc_free(&d);

	static const char *const owners[] = { "al", "bo" };
	proto_chfull cf = { "C1", "gen", "talk", PROTO_KIND_PUBLIC, true,
			    PROTO_POST_OWNERS, owners, 2, 12, 40 };

	proto_out_reset(&a);
	proto_enc_ch_info_ok(&a, 3, &cf);
	dec_res(&d, &a, 3);
	assert_int_equal(proto_get_map(&d.root, "ch", &m), 0);
	{
		msgpack_object o = { .type = MSGPACK_OBJECT_MAP, .via.map = *m };
		bool b = false;

		assert_get_str(&o, "id", "C1");
		assert_get_str(&o, "topic", "talk");
		assert_get_str(&o, "post", "owners");
		assert_int_equal(proto_get_bool(&o, "archived", &b), 0);
		assert_true(b);
		assert_int_equal(get_u(&o, "members"), 12);
		assert_int_equal(get_u(&o, "last_seq"), 40);
		assert_int_equal(proto_get_array(&o, "owners", &arr), 0);
		assert_int_equal(arr->size, 2);
	}
	proto_doc_free(&d);

	struct proto_a_ch_set set = { .has_topic = true, .topic = ps("new"),
				      .has_archived = true, .archived = false };

	proto_out_reset(&a);
	proto_enc_chan(&a, "C1", &set);
	assert_int_equal(proto_decode(&d, a.data, a.len), PROTO_OK);
	assert_int_equal(d.root.via.map.size, 4);
	assert_get_str(&d.root, "t", "chan");
	assert_get_str(&d.root, "ch", "C1");
	assert_get_str(&d.root, "topic", "new");
	assert_null(proto_get(&d.root, "name"));
	proto_doc_free(&d);

	proto_receipt rc[1] = { { "bo", 7, 5 } };

	proto_out_reset(&a);
	proto_enc_receipts_ok(&a, 4, rc, 1);
	dec_res(&d, &a, 4);
	assert_int_equal(proto_get_map(&d.root, "receipts", &m), 0);
	assert_int_equal(get_u(&m->ptr[0].val, "delivered"), 7);
	assert_int_equal(get_u(&m->ptr[0].val, "read"), 5);
	proto_doc_free(&d);
	proto_out_reset(&a);
	proto_enc_receipt(&a, "D1", "bo", false, 9);
	assert_int_equal(proto_decode(&d, a.data, a.len), PROTO_OK);
	assert_get_str(&d.root, "t", "receipt");
	assert_int_equal(get_u(&d.root, "delivered"), 9);
	assert_null(proto_get(&d.root, "read"));
	proto_doc_free(&d);

	proto_pusher pu[2] = {
		{ ps("app"), ps("key"), ps("ios"), { "\x81\xa1x\x01", 4 }, 7 },
		{ ps("a2"), ps("k2"), ps("web"), { NULL, 0 }, 8 },
	};

	proto_out_reset(&a);
	proto_enc_push_list_ok(&a, 5, pu, 2);
	dec_res(&d, &a, 5);
	assert_int_equal(proto_get_array(&d.root, "pushers", &arr), 0);
	assert_get_str(&arr->ptr[0], "pushkey", "key");
	assert_int_equal(proto_get_map(&arr->ptr[0], "data", &m), 0);
	assert_int_equal(get_u(&(msgpack_object){ .type = MSGPACK_OBJECT_MAP,
						  .via.map = *m }, "x"), 1);
	assert_null(proto_get(&arr->ptr[1], "data"));
	assert_int_equal(get_u(&arr->ptr[1], "ts"), 8);
	proto_doc_free(&d);

	/* the stored forms give back what they were given */
	proto_pusher back[4];

	proto_out_reset(&a);
	proto_enc_pushers(&a, pu, 2);
	assert_int_equal(proto_dec_pushers(&d, a.data, a.len, back, 4), 2);
	assert_pstr(back[0].pushkey, "key");
	assert_int_equal(back[0].data.n, 4);
	assert_memory_equal(back[0].data.p, "\x81\xa1x\x01", 4);
	assert_int_equal(back[0].ts, 7);
	assert_null(back[1].data.p);
	assert_pstr(back[1].platform, "web");
	proto_doc_free(&d);
	assert_int_equal(proto_dec_pushers(&d, "\x81\xa1q\x01", 4, back, 4), -1);

	proto_chlevel lv[1] = { { ps("D1"), PROTO_LEVEL_NONE } };
	proto_chlevel lback[2];
	uint8_t def = 9;

	proto_out_reset(&a);
	proto_enc_prefs(&a, PROTO_LEVEL_ALL, lv, 1);
	assert_int_equal(proto_dec_prefs(&d, a.data, a.len, &def, lback, 2), 1);
	assert_int_equal(def, PROTO_LEVEL_ALL);
	assert_pstr(lback[0].ch, "D1");
	assert_int_equal(lback[0].level, PROTO_LEVEL_NONE);
	proto_doc_free(&d);

	proto_out_reset(&a);
	proto_enc_notify_get_ok(&a, 6, PROTO_LEVEL_MENTIONS, lv, 1);
	dec_res(&d, &a, 6);
	assert_get_str(&d.root, "default", "mentions");
	assert_int_equal(proto_get_map(&d.root, "channels", &m), 0);
	assert_get_str(&(msgpack_object){ .type = MSGPACK_OBJECT_MAP,
					  .via.map = *m }, "D1", "none");
	proto_doc_free(&d);
	proto_out_free(&a);
}

/* channel.c's react_apply as it was, for the bytes */
static int ref_react_apply(const proto_msg *m, const char *user,
			   proto_str emoji, bool on, proto_out *out,
			   bool *changed)
{
	proto_doc d;
	const msgpack_object_kv *kv = NULL;
	uint32_t n = 0, keep = 0;
	size_t ulen = strlen(user);
	int found = -1, has = 0;

	*changed = false;
	if (m->reactions && m->reactions_len) {
		proto_out w;

		proto_out_init(&w, 0, m->reactions_len + 16);
		proto_pk_raw(&w.pk, m->reactions, m->reactions_len);
		if (proto_decode_max(&d, w.data, w.len, PROTO_MAX_STATE)) {
			proto_out_free(&w);
			return -2;
		}
		proto_out_free(&w);
		kv = d.root.via.map.ptr;
		n = d.root.via.map.size;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (kv[i].key.via.str.size == emoji.n &&
		    !memcmp(kv[i].key.via.str.ptr, emoji.s, emoji.n))
			found = (int)i;
	}
	if (found >= 0) {
		const msgpack_object_array *a = &kv[found].val.via.array;

		for (uint32_t j = 0; j < a->size; j++)
			has |= a->ptr[j].via.str.size == ulen &&
			       !memcmp(a->ptr[j].via.str.ptr, user, ulen);
	}
	if ((on && has) || (!on && !has)) {
		if (n)
			proto_doc_free(&d);
		return 0;
	}
	if (on && found < 0 && n >= 3) {
		proto_doc_free(&d);
		return -1;
	}
	*changed = true;
	for (uint32_t i = 0; i < n; i++)
		keep += !(i == (uint32_t)found && !on &&
			  kv[i].val.via.array.size == 1);
	msgpack_pack_map(&out->pk, keep + (found < 0));
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object_array *a = &kv[i].val.via.array;
		bool mine = i == (uint32_t)found;

		if (mine && !on && a->size == 1)
			continue;
		proto_pk_str(&out->pk, kv[i].key.via.str.ptr,
			     kv[i].key.via.str.size);
		msgpack_pack_array(&out->pk, a->size + (mine ? (on ? 1 : -1) : 0));
		for (uint32_t j = 0; j < a->size; j++) {
			if (mine && !on && a->ptr[j].via.str.size == ulen &&
			    !memcmp(a->ptr[j].via.str.ptr, user, ulen))
				continue;
			proto_pk_str(&out->pk, a->ptr[j].via.str.ptr,
				     a->ptr[j].via.str.size);
		}
		if (mine && on)
			proto_pk_str(&out->pk, user, ulen);
	}
	if (found < 0) {
		proto_pk_str(&out->pk, emoji.s, emoji.n);
		msgpack_pack_array(&out->pk, 1);
		proto_pk_str(&out->pk, user, ulen);
	}
	if (n)
		proto_doc_free(&d);
	return 0;
}

/* A sequence of reactions applied to one message, with max 3 kinds: each
 * step's bytes, changed flag and result are the old code's, and the map
 * says what it should. */
static void test_reactions(void **state)
{
	static const struct {
		const char *user, *emoji;
		bool on;
		int rc;
		bool changed;
	} steps[] = {
		{ "al", "+1", false, 0, false }, /* off what is not there */
		{ "al", "+1", true, 0, true },
		{ "al", "+1", true, 0, false },	 /* already */
		{ "bo", "+1", true, 0, true },
		{ "bo", "ok", true, 0, true },
		{ "al", "x", true, 0, true },
		{ "al", "y", true, -1, false },	 /* a 4th kind */
		{ "bo", "+1", true, 0, false },
		{ "al", "+1", false, 0, true },	 /* bo stays on +1 */
		{ "bo", "ok", false, 0, true },	 /* ok goes */
		{ "al", "y", true, 0, true },	 /* room again */
		{ "bo", "+1", false, 0, true },
		{ "al", "x", false, 0, true },
		{ "al", "y", false, 0, true },	 /* nobody: empty map */
	};
	uint8_t state_buf[512];
	size_t state_len = 0;

	(void)state;
	for (unsigned i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		proto_msg m = { .reactions = state_len > 1 ? state_buf : NULL,
				.reactions_len = state_len > 1 ? state_len : 0 };
		proto_out a, b;
		bool ca = true, cb = true;
		int ra, rb;

		both_init(&a, &b);
		ra = proto_reactions_apply(&m, ps(steps[i].user),
					   ps(steps[i].emoji), steps[i].on, 3,
					   &a, &ca);
		rb = ref_react_apply(&m, steps[i].user, ps(steps[i].emoji),
				     steps[i].on, &b, &cb);
		if (ra != steps[i].rc || ca != steps[i].changed)
			fail_msg("step %u: rc %d changed %d, want %d %d", i, ra,
				 ca, steps[i].rc, steps[i].changed);
		assert_int_equal(ra, rb);
		assert_int_equal(ca, cb);
		expect_same(&a, &b, "reactions");
		if (ca) {
			assert_true(a.len <= sizeof(state_buf));
			memcpy(state_buf, a.data, a.len);
			state_len = a.len;
		} else {
			assert_int_equal(a.len, 0);
		}
		both_free(&a, &b);
	}
	assert_int_equal(state_len, 1); /* 0x80 */
	assert_int_equal(state_buf[0], 0x80);

	/* one mid-way state checked by its decoded content */
	{
		proto_msg m = { 0 };
		proto_out a, b2;
		proto_doc d;
		bool c;

		proto_out_init(&a, 0, 64);
		proto_out_init(&b2, 0, 64);
		proto_reactions_apply(&m, ps("al"), ps("+1"), true, 50, &a, &c);
		m.reactions = a.data;
		m.reactions_len = a.len;
		proto_reactions_apply(&m, ps("bo"), ps("+1"), true, 50, &b2, &c);
		assert_int_equal(proto_decode(&d, b2.data, b2.len), PROTO_OK);
		assert_int_equal(d.root.via.map.size, 1);
		assert_int_equal(d.root.via.map.ptr[0].val.via.array.size, 2);
		assert_pstr(((proto_str){
				    d.root.via.map.ptr[0].val.via.array.ptr[1]
					    .via.str.ptr,
				    2 }),
			    "bo");
		proto_doc_free(&d);
		/* a broken state is -2, not a crash */
		m.reactions = "¡x";
		m.reactions_len = 4;
		proto_out_reset(&a);
		assert_int_equal(proto_reactions_apply(&m, ps("al"), ps("x"),
						       true, 50, &a, &c),
				 -2);
		proto_out_free(&a);
		proto_out_free(&b2);
	}
}

/* rest.c's two requests, as it packed them */
static void test_rest_requests(void **state)
{
	proto_out a, b;
	proto_str men[2] = { { "bob", 3 }, { "eve", 3 } };
	struct proto_history_q q = { .has_after = true, .after = 0,
				     .has_thread = true, .thread = 7 };

	(void)state;
	both_init(&a, &b);
	proto_enc_send_req(&a, 1, "gen", ps("hi"), ps("c1"), true, 4, true,
			   men, 2);
	proto_enc_req(&b, "send", 1, 5);
	proto_pk_cstr(&b.pk, "ch");
	proto_pk_cstr(&b.pk, "gen");
	proto_pk_cstr(&b.pk, "body");
	proto_pk_str(&b.pk, "hi", 2);
	proto_pk_cstr(&b.pk, "cmid");
	proto_pk_str(&b.pk, "c1", 2);
	proto_pk_cstr(&b.pk, "thread");
	msgpack_pack_uint64(&b.pk, 4);
	proto_pk_cstr(&b.pk, "mentions");
	msgpack_pack_array(&b.pk, 2);
	proto_pk_str(&b.pk, "bob", 3);
	proto_pk_str(&b.pk, "eve", 3);
	expect_same(&a, &b, "send_req");
	both_free(&a, &b);

	both_init(&a, &b);
	proto_enc_send_req(&a, 1, "gen", ps(""), ps("c1"), false, 0, true, men,
			   0);
	proto_enc_req(&b, "send", 1, 4);
	proto_pk_cstr(&b.pk, "ch");
	proto_pk_cstr(&b.pk, "gen");
	proto_pk_cstr(&b.pk, "body");
	proto_pk_str(&b.pk, "", 0);
	proto_pk_cstr(&b.pk, "cmid");
	proto_pk_str(&b.pk, "c1", 2);
	proto_pk_cstr(&b.pk, "mentions");
	msgpack_pack_array(&b.pk, 0);
	expect_same(&a, &b, "send_req, empty mentions");
	both_free(&a, &b);

	both_init(&a, &b);
	proto_enc_history_req(&a, 1, "gen", &q);
	proto_enc_req(&b, "history", 1, 3);
	proto_pk_cstr(&b.pk, "ch");
	proto_pk_cstr(&b.pk, "gen");
	proto_pk_cstr(&b.pk, "after");
	msgpack_pack_uint64(&b.pk, 0);
	proto_pk_cstr(&b.pk, "thread");
	msgpack_pack_uint64(&b.pk, 7);
	expect_same(&a, &b, "history_req");
	both_free(&a, &b);
}

/* ---- main --------------------------------------------------------------- */

static int teardown(void **state)
{
	(void)state;
	arena_free();
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest decode[] = {
		cmocka_unit_test_teardown(test_header, teardown),
		cmocka_unit_test_teardown(test_served, teardown),
		cmocka_unit_test_teardown(test_hello, teardown),
		cmocka_unit_test_teardown(test_channels, teardown),
		cmocka_unit_test_teardown(test_send, teardown),
		cmocka_unit_test_teardown(test_reads, teardown),
		cmocka_unit_test_teardown(test_changes, teardown),
		cmocka_unit_test_teardown(test_presence, teardown),
		cmocka_unit_test_teardown(test_next_ops, teardown),
	};
	const struct CMUnitTest copy[] = {
		cmocka_unit_test(test_copy),
	};
	const struct CMUnitTest reply[] = {
		cmocka_unit_test(test_reply_small),
		cmocka_unit_test(test_reply_lists),
		cmocka_unit_test(test_reply_next),
		cmocka_unit_test(test_reactions),
		cmocka_unit_test(test_rest_requests),
	};
	const char *g = argc > 1 ? argv[1] : NULL;
	int failed = 0;

	lim_all = proto_limits_default();
	if (!g || !strcmp(g, "decode"))
		failed += cmocka_run_group_tests_name("decode", decode, NULL,
						      NULL);
	if (!g || !strcmp(g, "copy"))
		failed += cmocka_run_group_tests_name("copy", copy, NULL, NULL);
	if (!g || !strcmp(g, "reply"))
		failed += cmocka_run_group_tests_name("reply", reply, NULL,
						      NULL);
	if (g && strcmp(g, "decode") && strcmp(g, "copy") && strcmp(g, "reply")) {
		fprintf(stderr, "unknown group %s\n", g);
		return 2;
	}
	return failed ? 1 : 0;
}
