/*
 * test_codec: proto_decode() against every class of malformed input, the
 * typed accessors, every encoder of frames.c through its decoder, and a
 * fuzz loop that also runs every accepted doc through the request decoder
 * (req.h), its copy and its encoder. Run by ctest one group at a time (the first argument names it:
 * malformed, access, roundtrip, fuzz); with no argument, all groups.
 *
 * Every input is copied into a heap block of exactly its size, so that
 * under -DPARLEY_ASAN=ON a read one byte past the end is caught.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"
#include "proto/reply.h"
#include "proto/req.h"
#include "jpack.h"

/* ---- helpers ------------------------------------------------------------ */

static int decode_exact(proto_doc *doc, const void *buf, size_t len)
{
	void *copy = malloc(len ? len : 1);
	int rc;

	assert_non_null(copy);
	if (len)
		memcpy(copy, buf, len);
	rc = proto_decode(doc, copy, len);
	free(copy); /* the doc must not need it any more */
	return rc;
}

/* Decode buf and expect status want; an accepted doc is freed. */
static void expect_status(const void *buf, size_t len, int want)
{
	proto_doc doc;
	int rc = decode_exact(&doc, buf, len);

	if (rc != want)
		fail_msg("decode of %zu bytes: got %d (%s), want %d (%s)", len,
			 rc, proto_strerror(rc), want, proto_strerror(want));
	if (rc == PROTO_OK) {
		assert_int_equal(doc.root.type, MSGPACK_OBJECT_MAP);
		proto_doc_free(&doc);
	}
}

#define EXPECT(want, ...)                                                    \
	do {                                                                 \
		static const uint8_t b_[] = { __VA_ARGS__ };                 \
		expect_status(b_, sizeof(b_), want);                         \
	} while (0)

static void raw(proto_out *o, const void *p, size_t n)
{
	proto_pk_raw(&o->pk, p, n);
}

static void key(proto_out *o, const char *k)
{
	proto_pk_cstr(&o->pk, k);
}

/* {"k": <value bytes>} */
static void value_status(const void *v, size_t n, int want)
{
	proto_out o;

	proto_out_init(&o, 0, 64);
	msgpack_pack_map(&o.pk, 1);
	key(&o, "k");
	raw(&o, v, n);
	expect_status(o.data, o.len, want);
	proto_out_free(&o);
}

/* A frame that uses every msgpack type proto accepts, in every length
 * encoding, nested three deep: cutting it anywhere must give TRUNCATED. */
static void build_everything(proto_out *o)
{
	char s300[300], pad[300];
	unsigned i;

	memset(s300, 'x', sizeof(s300));
	memset(pad, 0xab, sizeof(pad));
	msgpack_pack_map(&o->pk, 27);
	key(o, "nil");
	msgpack_pack_nil(&o->pk);
	key(o, "t");
	msgpack_pack_true(&o->pk);
	key(o, "f");
	msgpack_pack_false(&o->pk);
	key(o, "fix");
	msgpack_pack_uint64(&o->pk, 7);
	key(o, "u8");
	raw(o, "\xcc\xff", 2);
	key(o, "u16");
	raw(o, "\xcd\x12\x34", 3);
	key(o, "u32");
	raw(o, "\xce\x12\x34\x56\x78", 5);
	key(o, "u64");
	raw(o, "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9);
	key(o, "nfix");
	raw(o, "\xe0", 1);
	key(o, "i8");
	raw(o, "\xd0\x80", 2);
	key(o, "i16");
	raw(o, "\xd1\x80\x00", 3);
	key(o, "i32");
	raw(o, "\xd2\x80\x00\x00\x00", 5);
	key(o, "i64");
	raw(o, "\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9);
	key(o, "f32");
	msgpack_pack_float(&o->pk, 1.5f);
	key(o, "f64");
	msgpack_pack_double(&o->pk, -2.25);
	key(o, "s8");
	proto_pk_str(&o->pk, s300, 40);
	key(o, "s16");
	proto_pk_str(&o->pk, s300, 300);
	key(o, "s32");
	raw(o, "\xdb\x00\x00\x00\x05\xc3\xa9\xe2\x82", 9);
	raw(o, "\xac", 1); /* completes the euro sign: "é€" */
	key(o, "utf");
	proto_pk_cstr(&o->pk, "\xf0\x9d\x84\x9e \xf4\x8f\xbf\xbf");
	key(o, "b8");
	msgpack_pack_bin(&o->pk, 3);
	msgpack_pack_bin_body(&o->pk, pad, 3);
	key(o, "b16");
	msgpack_pack_bin(&o->pk, 300);
	msgpack_pack_bin_body(&o->pk, pad, 300);
	key(o, "b32");
	raw(o, "\xc6\x00\x00\x00\x02\x00\xff", 7);
	key(o, "arr");
	msgpack_pack_array(&o->pk, 3);
	msgpack_pack_uint64(&o->pk, 1);
	msgpack_pack_array(&o->pk, 2);
	msgpack_pack_map(&o->pk, 1);
	key(o, "x");
	msgpack_pack_nil(&o->pk);
	msgpack_pack_array(&o->pk, 0);
	msgpack_pack_map(&o->pk, 0);
	key(o, "a16");
	msgpack_pack_array(&o->pk, 20);
	for (i = 0; i < 20; i++)
		msgpack_pack_uint64(&o->pk, i);
	key(o, "m16");
	msgpack_pack_map(&o->pk, 16);
	for (i = 0; i < 16; i++) {
		char k[8];

		snprintf(k, sizeof(k), "k%u", i);
		key(o, k);
		msgpack_pack_int64(&o->pk, -(int64_t)i);
	}
	key(o, "a32");
	raw(o, "\xdd\x00\x00\x00\x01\x01", 6);
	key(o, "m32");
	raw(o, "\xdf\x00\x00\x00\x01\xa1k\xc0", 8);
}

/* ---- malformed input ---------------------------------------------------- */

static void test_empty(void **state)
{
	proto_doc doc;

	(void)state;
	expect_status("", 0, PROTO_E_EMPTY);
	assert_int_equal(proto_decode(&doc, NULL, 0), PROTO_E_EMPTY);
	EXPECT(PROTO_OK, 0x80); /* {} is a frame, if a useless one */
}

static void test_truncated_everywhere(void **state)
{
	proto_out o;
	size_t cut;

	(void)state;
	proto_out_init(&o, 0, 64);
	build_everything(&o);
	expect_status(o.data, o.len, PROTO_OK);
	for (cut = 1; cut < o.len; cut++)
		expect_status(o.data, cut, PROTO_E_TRUNCATED);
	proto_out_free(&o);
}

static void test_trailing(void **state)
{
	(void)state;
	EXPECT(PROTO_E_TRAILING, 0x80, 0x00);
	EXPECT(PROTO_E_TRAILING, 0x80, 0x80);
	EXPECT(PROTO_E_TRAILING, 0x81, 0xa1, 'a', 0x01, 0xc1);
	EXPECT(PROTO_E_TRAILING, 0x81, 0xa1, 'a', 0x01, 0x81, 0xa1, 'a', 0x01);
}

static void test_not_map(void **state)
{
	static const struct {
		const char *what;
		const char *b;
		size_t n;
	} v[] = {
#define V(what, s) { what, s, sizeof(s) - 1 }
		V("nil", "\xc0"),
		V("false", "\xc2"),
		V("true", "\xc3"),
		V("positive fixint", "\x05"),
		V("negative fixint", "\xff"),
		V("uint8", "\xcc\x01"),
		V("uint16", "\xcd\x01\x00"),
		V("uint32", "\xce\x01\x00\x00\x00"),
		V("uint64", "\xcf\x01\x00\x00\x00\x00\x00\x00\x00"),
		V("int8", "\xd0\x80"),
		V("int16", "\xd1\x80\x00"),
		V("int32", "\xd2\x80\x00\x00\x00"),
		V("int64", "\xd3\x80\x00\x00\x00\x00\x00\x00\x00"),
		V("float32", "\xca\x3f\xc0\x00\x00"),
		V("float64", "\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00"),
		V("fixstr", "\xa1" "a"),
		V("str8", "\xd9\x01" "a"),
		V("str16", "\xda\x00\x01" "a"),
		V("str32", "\xdb\x00\x00\x00\x01" "a"),
		V("bin8", "\xc4\x01\x00"),
		V("bin16", "\xc5\x00\x01\x00"),
		V("bin32", "\xc6\x00\x00\x00\x01\x00"),
		V("fixarray", "\x91\x80"),
		V("array16", "\xdc\x00\x01\x80"),
		V("array32", "\xdd\x00\x00\x00\x01\x80"),
		V("fixext1", "\xd4\x01\x00"),
		V("fixext2", "\xd5\x01\x00\x00"),
		V("fixext4", "\xd6\x01\x00\x00\x00\x00"),
		V("fixext8", "\xd7\x01\x00\x00\x00\x00\x00\x00\x00\x00"),
		V("fixext16", "\xd8\x01\x00\x00\x00\x00\x00\x00\x00\x00"
			      "\x00\x00\x00\x00\x00\x00\x00\x00"),
		V("ext8", "\xc7\x01\x01\x00"),
		V("ext16", "\xc8\x00\x01\x01\x00"),
		V("ext32", "\xc9\x00\x00\x00\x01\x01\x00"),
		V("reserved 0xc1", "\xc1"),
#undef V
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		proto_doc doc;
		int rc = decode_exact(&doc, v[i].b, v[i].n);

		if (rc != PROTO_E_NOT_MAP)
			fail_msg("%s at top level: got %d", v[i].what, rc);
	}
}

/* depth containers in all: the top map, then maps (or arrays) inside. */
static void nested(proto_out *o, unsigned depth, bool arrays)
{
	unsigned i;

	msgpack_pack_map(&o->pk, 1);
	key(o, "a");
	for (i = 1; i < depth; i++) {
		if (arrays) {
			msgpack_pack_array(&o->pk, 1);
		} else {
			msgpack_pack_map(&o->pk, 1);
			key(o, "a");
		}
	}
	msgpack_pack_uint64(&o->pk, 1);
}

static void test_depth(void **state)
{
	proto_out o;
	int arrays;

	(void)state;
	proto_out_init(&o, 0, 64);
	for (arrays = 0; arrays < 2; arrays++) {
		proto_out_reset(&o);
		nested(&o, PROTO_MAX_DEPTH, arrays);
		expect_status(o.data, o.len, PROTO_OK);
		proto_out_reset(&o);
		nested(&o, PROTO_MAX_DEPTH + 1, arrays);
		expect_status(o.data, o.len, PROTO_E_DEPTH);
		proto_out_reset(&o);
		nested(&o, 64, arrays);
		expect_status(o.data, o.len, PROTO_E_DEPTH);
	}
	/* An empty container counts as a level too. */
	proto_out_reset(&o);
	msgpack_pack_map(&o.pk, 1);
	key(&o, "a");
	for (arrays = 0; arrays < PROTO_MAX_DEPTH - 1; arrays++)
		msgpack_pack_array(&o.pk, 1);
	msgpack_pack_array(&o.pk, 0);
	expect_status(o.data, o.len, PROTO_E_DEPTH);
	proto_out_free(&o);
}

static const struct {
	const char *what;
	const char *s;
} bad_utf8[] = {
	{ "overlong 2-byte NUL", "\xc0\x80" },
	{ "overlong 2-byte C1", "\xc1\xbf" },
	{ "overlong 3-byte", "\xe0\x80\xaf" },
	{ "overlong 3-byte top", "\xe0\x9f\xbf" },
	{ "overlong 4-byte", "\xf0\x80\x80\xaf" },
	{ "overlong 4-byte top", "\xf0\x8f\xbf\xbf" },
	{ "high surrogate", "\xed\xa0\x80" },
	{ "low surrogate", "\xed\xbf\xbf" },
	{ "surrogate pair as CESU-8", "\xed\xa0\xbd\xed\xb8\x80" },
	{ "above U+10FFFF", "\xf4\x90\x80\x80" },
	{ "F5 lead", "\xf5\x80\x80\x80" },
	{ "0xFF", "\xff" },
	{ "0xFE", "ab\xfe" },
	{ "lone continuation", "\x80" },
	{ "truncated 2-byte at end", "ab\xc3" },
	{ "truncated 3-byte at end", "\xe2\x82" },
	{ "truncated 4-byte at end", "\xf0\x9d\x84" },
	{ "truncated 2-byte then ASCII", "\xc3" "a" },
	{ "truncated 3-byte then ASCII", "\xe2\x82" "a" },
	{ "bad second continuation", "\xe2\x82\x41" },
	{ "bad third continuation", "\xf0\x9d\x84\xc0" },
	{ "after 8 ASCII bytes", "abcdefgh\xff" },
};

static void pack_str_raw(proto_out *o, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(&o->pk, n);
	msgpack_pack_str_body(&o->pk, s, n);
}

static void test_utf8_key(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
		proto_out o;
		proto_doc doc;
		int rc;

		proto_out_init(&o, 0, 64);
		msgpack_pack_map(&o.pk, 2);
		key(&o, "ok");
		msgpack_pack_true(&o.pk);
		pack_str_raw(&o, bad_utf8[i].s);
		msgpack_pack_uint64(&o.pk, 1);
		rc = decode_exact(&doc, o.data, o.len);
		if (rc != PROTO_E_UTF8)
			fail_msg("key with %s: got %d", bad_utf8[i].what, rc);
		proto_out_free(&o);
	}
}

static void test_utf8_value(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
		proto_out o;
		proto_doc doc;
		int rc;

		proto_out_init(&o, 0, 64);
		msgpack_pack_map(&o.pk, 1);
		key(&o, "body");
		msgpack_pack_array(&o.pk, 1); /* nested, as in mentions */
		pack_str_raw(&o, bad_utf8[i].s);
		rc = decode_exact(&doc, o.data, o.len);
		if (rc != PROTO_E_UTF8)
			fail_msg("value with %s: got %d", bad_utf8[i].what, rc);
		assert_false(proto_utf8_valid(bad_utf8[i].s,
					      strlen(bad_utf8[i].s)));
		proto_out_free(&o);
	}
}

static void test_utf8_valid(void **state)
{
	static const char *const good[] = {
		"",
		"plain ASCII, long enough for the 8-byte fast path",
		"\xc2\x80",              /* U+0080 */
		"\xc3\xa9t\xc3\xa9",     /* été */
		"\xdf\xbf",              /* U+07FF */
		"\xe0\xa0\x80",          /* U+0800 */
		"\xe2\x82\xac",          /* € */
		"\xed\x9f\xbf",          /* U+D7FF, below the surrogates */
		"\xee\x80\x80",          /* U+E000, above them */
		"\xef\xbf\xbf",          /* U+FFFF */
		"\xf0\x90\x80\x80",      /* U+10000 */
		"\xf0\x9f\x91\x8d",      /* 👍 */
		"\xf4\x8f\xbf\xbf",      /* U+10FFFF */
		"12345678\xf0\x9f\x8e\x89 after",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		proto_out o;

		assert_true(proto_utf8_valid(good[i], strlen(good[i])));
		proto_out_init(&o, 0, 64);
		msgpack_pack_map(&o.pk, 1);
		pack_str_raw(&o, good[i]);
		pack_str_raw(&o, good[i]);
		expect_status(o.data, o.len, PROTO_OK);
		proto_out_free(&o);
	}
	/* U+0000 is UTF-8; ids keep it out. */
	assert_true(proto_utf8_valid("a\0b", 3));
	assert_false(proto_id_valid("a\0b", 3));
}

static void test_non_str_key(void **state)
{
	(void)state;
	EXPECT(PROTO_E_KEY, 0x81, 0x01, 0x01);              /* int */
	EXPECT(PROTO_E_KEY, 0x81, 0xff, 0x01);              /* negative */
	EXPECT(PROTO_E_KEY, 0x81, 0xc0, 0x01);              /* nil */
	EXPECT(PROTO_E_KEY, 0x81, 0xc3, 0x01);              /* bool */
	EXPECT(PROTO_E_KEY, 0x81, 0xc4, 0x01, 'a', 0x01);   /* bin */
	EXPECT(PROTO_E_KEY, 0x81, 0x90, 0x01);              /* array */
	EXPECT(PROTO_E_KEY, 0x81, 0x80, 0x01);              /* map */
	EXPECT(PROTO_E_KEY, 0x81, 0xca, 0, 0, 0, 0, 0x01);  /* float */
	EXPECT(PROTO_E_KEY, 0x81, 0xd4, 0x01, 0x00, 0x01);  /* ext */
	EXPECT(PROTO_E_KEY, 0x81, 0xc1, 0x01);              /* reserved */
	/* the second key, and a key of a nested map */
	EXPECT(PROTO_E_KEY, 0x82, 0xa1, 'a', 0x01, 0x02, 0x01);
	EXPECT(PROTO_E_KEY, 0x81, 0xa1, 'a', 0x81, 0x02, 0x01);
	/* str8 keys are keys */
	EXPECT(PROTO_OK, 0x81, 0xd9, 0x01, 'a', 0x01);
}

static void test_ext(void **state)
{
	static const char *const ext[] = {
		"\xd4\x01\x00",
		"\xd5\x01\x00\x00",
		"\xd6\x01\x00\x00\x00\x00",
		"\xd7\xff\x00\x00\x00\x00\x00\x00\x00\x00", /* timestamp */
		"\xd8\x01",
		"\xc7\x00\x01",
		"\xc8\x00\x00\x01",
		"\xc9\x00\x00\x00\x00\x01",
	};
	static const size_t len[] = { 3, 4, 6, 10, 2, 3, 4, 6 };
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(ext) / sizeof(ext[0]); i++)
		value_status(ext[i], len[i], PROTO_E_TYPE);
	/* inside an array, too */
	EXPECT(PROTO_E_TYPE, 0x81, 0xa1, 'a', 0x92, 0x01, 0xd4, 0x01, 0x00);
}

static void test_c1(void **state)
{
	(void)state;
	value_status("\xc1", 1, PROTO_E_TYPE);
	EXPECT(PROTO_E_TYPE, 0x81, 0xa1, 'a', 0x91, 0xc1);
	EXPECT(PROTO_E_TYPE, 0x81, 0xa1, 'a', 0x81, 0xa1, 'b', 0xc1);
}

static void test_huge_counts(void **state)
{
	(void)state;
	/* 2^32-1 elements claimed by a handful of bytes: no allocation, and
	 * an answer before looking at a single element. */
	EXPECT(PROTO_E_TOO_LARGE, 0x81, 0xa1, 'a', 0xdd, 0xff, 0xff, 0xff,
	       0xff);
	EXPECT(PROTO_E_TOO_LARGE, 0x81, 0xa1, 'a', 0xdf, 0xff, 0xff, 0xff,
	       0xff);
	EXPECT(PROTO_E_TOO_LARGE, 0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'a',
	       0x01);
	EXPECT(PROTO_E_TOO_LARGE, 0x81, 0xa1, 'a', 0xdd, 0x00, 0x01, 0x00,
	       0x01, 0x01);
	/* 32,769 pairs need 65,538 bytes: more than any frame holds */
	EXPECT(PROTO_E_TOO_LARGE, 0xde, 0x80, 0x01, 0xa1, 'a', 0x01);
	/* A count that a frame could hold but this one does not: it simply
	 * ends too soon. */
	EXPECT(PROTO_E_TRUNCATED, 0x81, 0xa1, 'a', 0xdc, 0xff, 0xff, 0x01);
	EXPECT(PROTO_E_TRUNCATED, 0x81, 0xa1, 'a', 0x9f, 0x01);
	EXPECT(PROTO_E_TRUNCATED, 0x8f, 0xa1, 'a', 0x01);
}

static void test_str32_past_end(void **state)
{
	(void)state;
	EXPECT(PROTO_E_TRUNCATED, 0x81, 0xa1, 'a', 0xdb, 0x00, 0x00, 0x00,
	       0x10, 'x', 'y');
	EXPECT(PROTO_E_TOO_LARGE, 0x81, 0xa1, 'a', 0xdb, 0xff, 0xff, 0xff,
	       0xff, 'x', 'y');
	EXPECT(PROTO_E_TOO_LARGE, 0x81, 0xa1, 'a', 0xdb, 0x00, 0x01, 0x00,
	       0x01, 'x');
	EXPECT(PROTO_E_TOO_LARGE, 0x81, 0xdb, 0x80, 0x00, 0x00, 0x00, 'k',
	       0x01);
	EXPECT(PROTO_E_TOO_LARGE, 0x81, 0xa1, 'a', 0xc6, 0xff, 0xff, 0xff,
	       0xff, 0x00);
	EXPECT(PROTO_E_TRUNCATED, 0x81, 0xa1, 'a', 0xc6, 0x00, 0x00, 0x01,
	       0x00, 0x00);
	EXPECT(PROTO_E_TRUNCATED, 0x81, 0xa1, 'a', 0xdb, 0x00, 0x00);
	EXPECT(PROTO_E_TRUNCATED, 0x81, 0xa5, 'a');
}

static void test_frame_too_large(void **state)
{
	static uint8_t pad[PROTO_MAX_FRAME];
	proto_out o;
	size_t hdr;

	(void)state;
	/* {"p": bin32} filling exactly PROTO_MAX_FRAME bytes is fine... */
	hdr = 1 + 2 + 5;
	proto_out_init(&o, 0, 64);
	msgpack_pack_map(&o.pk, 1);
	key(&o, "p");
	raw(&o, "\xc6", 1);
	{
		size_t n = PROTO_MAX_FRAME - hdr;
		uint8_t be32[4] = { 0, 0, (uint8_t)(n >> 8), (uint8_t)n };

		raw(&o, be32, 4);
	}
	raw(&o, pad, PROTO_MAX_FRAME - hdr);
	assert_int_equal(o.len, PROTO_MAX_FRAME);
	expect_status(o.data, o.len, PROTO_OK);
	/* ...one byte more is not, whatever the bytes say. */
	raw(&o, "", 1);
	expect_status(o.data, o.len, PROTO_E_TOO_LARGE);
	proto_out_free(&o);

	pad[0] = 0x80;
	expect_status(pad, sizeof(pad), PROTO_E_TRAILING);
	{
		uint8_t *big = calloc(1, 1 << 20);

		assert_non_null(big);
		big[0] = 0x80;
		expect_status(big, 1 << 20, PROTO_E_TOO_LARGE);
		free(big);
	}
}

static void test_strings_and_ids(void **state)
{
	char buf[8];
	msgpack_object o = { .type = MSGPACK_OBJECT_STR };
	char id65[66];
	int s;

	(void)state;
	assert_true(proto_id_valid("general", 7));
	assert_true(proto_id_valid("A-Z.a_z-09", 10));
	assert_false(proto_id_valid("", 0));
	assert_false(proto_id_valid(NULL, 3));
	assert_false(proto_id_valid("a b", 3));
	assert_false(proto_id_valid("a/b", 3));
	assert_false(proto_id_valid("\xc3\xa9", 2));
	memset(id65, 'a', sizeof(id65));
	assert_true(proto_id_valid(id65, 64));
	assert_false(proto_id_valid(id65, 65));

	o.via.str.ptr = "abcdefg";
	o.via.str.size = 7;
	assert_true(proto_str_copy(&o, buf, sizeof(buf)));
	assert_string_equal(buf, "abcdefg");
	o.via.str.size = 8;
	o.via.str.ptr = "abcdefgh";
	assert_false(proto_str_copy(&o, buf, sizeof(buf)));
	o.via.str.size = 0;
	assert_true(proto_str_copy(&o, buf, 1));
	assert_string_equal(buf, "");
	o.type = MSGPACK_OBJECT_BIN;
	assert_false(proto_str_copy(&o, buf, sizeof(buf)));
	assert_false(proto_str_copy(NULL, buf, sizeof(buf)));

	for (s = PROTO_OK; s <= PROTO_E_NOMEM; s++)
		assert_true(strlen(proto_strerror(s)) > 0);
	assert_string_equal(proto_strerror(12345), "unknown error");
}

/* ---- accessors ---------------------------------------------------------- */

static void test_access_types(void **state)
{
	proto_out o;
	proto_doc doc;
	const char *s;
	uint32_t n;
	uint64_t u;
	bool b;
	const msgpack_object_array *a;
	const msgpack_object_map *m;

	(void)state;
	proto_out_init(&o, 0, 64);
	msgpack_pack_map(&o.pk, 11);
	key(&o, "s");
	proto_pk_cstr(&o.pk, "hi");
	key(&o, "u");
	msgpack_pack_uint64(&o.pk, UINT64_MAX);
	key(&o, "neg");
	msgpack_pack_int64(&o.pk, -1);
	key(&o, "i8pos"); /* int8 holding 5: msgpack-c calls it positive */
	raw(&o, "\xd0\x05", 2);
	key(&o, "fl");
	msgpack_pack_double(&o.pk, 1.0);
	key(&o, "b");
	msgpack_pack_true(&o.pk);
	key(&o, "nil");
	msgpack_pack_nil(&o.pk);
	key(&o, "arr");
	msgpack_pack_array(&o.pk, 2);
	msgpack_pack_uint64(&o.pk, 1);
	msgpack_pack_uint64(&o.pk, 2);
	key(&o, "map");
	msgpack_pack_map(&o.pk, 0);
	key(&o, "bin");
	msgpack_pack_bin(&o.pk, 2);
	msgpack_pack_bin_body(&o.pk, "hi", 2);
	key(&o, "s"); /* duplicate: the first one counts */
	proto_pk_cstr(&o.pk, "second");
	assert_int_equal(decode_exact(&doc, o.data, o.len), PROTO_OK);
	proto_out_free(&o);

	assert_int_equal(proto_get_str(&doc.root, "s", &s, &n), 0);
	assert_int_equal(n, 2);
	assert_memory_equal(s, "hi", 2);
	assert_int_equal(proto_get_uint(&doc.root, "u", &u), 0);
	assert_true(u == UINT64_MAX);
	assert_int_equal(proto_get_uint(&doc.root, "i8pos", &u), 0);
	assert_true(u == 5);
	assert_int_equal(proto_get_bool(&doc.root, "b", &b), 0);
	assert_true(b);
	assert_int_equal(proto_get_array(&doc.root, "arr", &a), 0);
	assert_int_equal(a->size, 2);
	assert_int_equal(proto_get_map(&doc.root, "map", &m), 0);
	assert_int_equal(m->size, 0);

	/* absent and nil are both missing */
	assert_int_equal(proto_get_str(&doc.root, "zz", &s, &n),
			 PROTO_F_MISSING);
	assert_int_equal(proto_get_uint(&doc.root, "nil", &u),
			 PROTO_F_MISSING);
	assert_int_equal(proto_get_bool(&doc.root, "nil", &b),
			 PROTO_F_MISSING);
	assert_int_equal(proto_get_array(&doc.root, "nil", &a),
			 PROTO_F_MISSING);
	assert_int_equal(proto_get_map(&doc.root, "nil", &m),
			 PROTO_F_MISSING);
	assert_non_null(proto_get(&doc.root, "nil"));
	assert_null(proto_get(&doc.root, "zz"));

	/* wrong types */
	assert_int_equal(proto_get_uint(&doc.root, "neg", &u), PROTO_F_TYPE);
	assert_int_equal(proto_get_uint(&doc.root, "fl", &u), PROTO_F_TYPE);
	assert_int_equal(proto_get_uint(&doc.root, "s", &u), PROTO_F_TYPE);
	assert_int_equal(proto_get_uint(&doc.root, "b", &u), PROTO_F_TYPE);
	assert_int_equal(proto_get_str(&doc.root, "bin", &s, &n),
			 PROTO_F_TYPE);
	assert_int_equal(proto_get_str(&doc.root, "u", &s, &n), PROTO_F_TYPE);
	assert_int_equal(proto_get_bool(&doc.root, "u", &b), PROTO_F_TYPE);
	assert_int_equal(proto_get_array(&doc.root, "map", &a),
			 PROTO_F_TYPE);
	assert_int_equal(proto_get_map(&doc.root, "arr", &m), PROTO_F_TYPE);

	/* keys compare as whole byte strings */
	assert_null(proto_get(&doc.root, ""));
	assert_null(proto_get(&doc.root, "ar"));
	assert_null(proto_get(&doc.root, "arrr"));
	assert_null(proto_get(&doc.root, "S"));

	/* not a map */
	assert_null(proto_get(&doc.root.via.map.ptr[0].val, "s"));
	assert_null(proto_get(NULL, "s"));
	assert_int_equal(proto_get_str(&doc.root.via.map.ptr[0].val, "s", &s,
				       &n), PROTO_F_MISSING);

	proto_doc_free(&doc);
	proto_doc_free(&doc); /* harmless */
}

static void test_doc_outlives_input(void **state)
{
	uint8_t buf[] = { 0x81, 0xa1, 'k', 0xa3, 'a', 'b', 'c' };
	proto_doc doc;
	const char *s;
	uint32_t n;

	(void)state;
	assert_int_equal(proto_decode(&doc, buf, sizeof(buf)), PROTO_OK);
	memset(buf, 0, sizeof(buf));
	assert_int_equal(proto_get_str(&doc.root, "k", &s, &n), 0);
	assert_int_equal(n, 3);
	assert_memory_equal(s, "abc", 3);
	proto_doc_free(&doc);
}

/* ---- round trips -------------------------------------------------------- */

static proto_str ps(const char *s)
{
	return (proto_str){ s, (uint32_t)strlen(s) };
}

static void assert_pstr(proto_str got, const char *want)
{
	assert_int_equal(got.n, strlen(want));
	if (got.n)
		assert_memory_equal(got.s, want, got.n);
}

static void assert_key_str(const msgpack_object *m, const char *k,
			   const char *want)
{
	const char *s;
	uint32_t n;

	if (proto_get_str(m, k, &s, &n))
		fail_msg("no str \"%s\"", k);
	assert_int_equal(n, strlen(want));
	assert_memory_equal(s, want, n);
}

static uint64_t key_uint(const msgpack_object *m, const char *k)
{
	uint64_t v = 0;

	if (proto_get_uint(m, k, &v))
		fail_msg("no uint \"%s\"", k);
	return v;
}

static bool key_bool(const msgpack_object *m, const char *k)
{
	bool v = false;

	if (proto_get_bool(m, k, &v))
		fail_msg("no bool \"%s\"", k);
	return v;
}

static void decode_out(const proto_out *o, proto_doc *doc)
{
	assert_int_equal(decode_exact(doc, o->data, o->len), PROTO_OK);
}

static void test_rt_event_msg(void **state)
{
	static const proto_str ment[] = { { "bob", 3 }, { "carol", 5 },
					  { "dave", 4 } };
	proto_event ev = {
		.ch = ps("general"), .seq = 42, .k = ps("msg"),
		.ts = 1700000000123ull, .from = ps("alice"),
		.body = ps("hello \xf0\x9f\x91\x8b @bob"), .cmid = ps("c-1"),
		.thread = 7, .mentions = ment, .nmentions = 3,
		.target = 99, .emoji = ps("x"), /* not for a msg: dropped */
	};
	proto_event got;
	proto_str out[4];
	proto_out o;
	proto_doc doc;

	(void)state;
	proto_out_init(&o, 0, 16);
	proto_enc_event(&o, &ev);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 10);
	assert_key_str(&doc.root, "t", "ev");
	assert_null(proto_get(&doc.root, "target"));
	assert_null(proto_get(&doc.root, "emoji"));
	assert_null(proto_get(&doc.root, "on"));
	assert_int_equal(proto_dec_event(&doc.root, &got, out, 4), 0);
	assert_pstr(got.ch, "general");
	assert_int_equal(got.seq, 42);
	assert_pstr(got.k, "msg");
	assert_true(got.ts == 1700000000123ull);
	assert_pstr(got.from, "alice");
	assert_pstr(got.body, "hello \xf0\x9f\x91\x8b @bob");
	assert_pstr(got.cmid, "c-1");
	assert_int_equal(got.thread, 7);
	assert_int_equal(got.target, 0);
	assert_null(got.emoji.s);
	assert_int_equal(got.nmentions, 3);
	assert_ptr_equal(got.mentions, out);
	assert_pstr(got.mentions[0], "bob");
	assert_pstr(got.mentions[2], "dave");
	/* fewer slots than mentions: the rest are ignored */
	assert_int_equal(proto_dec_event(&doc.root, &got, out, 1), 0);
	assert_int_equal(got.nmentions, 1);
	assert_int_equal(proto_dec_event(&doc.root, &got, NULL, 0), 0);
	assert_int_equal(got.nmentions, 0);
	proto_doc_free(&doc);

	/* top-level, no mentions: neither key is sent */
	ev.thread = 0;
	ev.nmentions = 0;
	proto_out_reset(&o);
	proto_enc_event(&o, &ev);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 8);
	assert_null(proto_get(&doc.root, "thread"));
	assert_null(proto_get(&doc.root, "mentions"));
	assert_int_equal(proto_dec_event(&doc.root, &got, out, 4), 0);
	assert_int_equal(got.thread, 0);
	assert_int_equal(got.nmentions, 0);
	assert_null(got.files);
	proto_doc_free(&doc);

	/* files: the array events and history carry, handed on as bytes */
	proto_file fv[2] = {
		{ .id = ps("Fa"), .name = ps("cat.png"), .type = ps("image/png"),
		  .size = 70, .w = 640, .h = 480, .thumb = true },
		{ .id = ps("Fb"), .name = ps("a.txt"), .type = ps("text/plain"),
		  .size = 5, .snippet = ps("hello") },
	};
	proto_out fo;
	const msgpack_object_array *fa;

	proto_out_init(&fo, 0, 16);
	proto_enc_files(&fo, fv, 2);
	ev.files = fo.data;
	ev.files_len = fo.len;
	ev.body = ps("");
	proto_out_reset(&o);
	proto_enc_event(&o, &ev);
	decode_out(&o, &doc);
	assert_int_equal(proto_get_array(&doc.root, "files", &fa), 0);
	assert_int_equal(fa->size, 2);
	assert_key_str(&fa->ptr[0], "name", "cat.png");
	assert_non_null(proto_get(&fa->ptr[0], "w"));
	assert_non_null(proto_get(&fa->ptr[0], "thumb"));
	assert_null(proto_get(&fa->ptr[1], "w"));
	assert_null(proto_get(&fa->ptr[1], "thumb"));
	assert_key_str(&fa->ptr[1], "snippet", "hello");
	assert_int_equal(proto_dec_event(&doc.root, &got, out, 4), 0);
	assert_int_equal(got.files_len, fo.len);
	assert_memory_equal(got.files, fo.data, fo.len);
	proto_doc_free(&doc);

	/* and a history message keeps them through a decode and encode */
	proto_msg hm = { .seq = 3, .from = ps("u"), .ts = 1, .body = ps(""),
			 .files = fo.data, .files_len = fo.len };
	proto_msg hg;

	proto_out_reset(&o);
	proto_enc_msg(&o, &hm);
	decode_out(&o, &doc);
	assert_int_equal(proto_dec_msg(&doc.root, &hg, out, 4), 0);
	assert_int_equal(hg.files_len, fo.len);
	assert_memory_equal(hg.files, fo.data, fo.len);
	proto_doc_free(&doc);
	proto_out_free(&fo);
	proto_out_free(&o);
}

static void test_rt_event_kinds(void **state)
{
	proto_event ev = { .ch = ps("c"), .seq = 5, .ts = 9, .from = ps("u") };
	proto_event got;
	proto_out o;
	proto_doc doc;

	(void)state;
	proto_out_init(&o, 0, 64);

	ev.k = ps("edit");
	ev.target = 3;
	ev.body = ps("fixed");
	proto_enc_event(&o, &ev);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 8);
	assert_int_equal(proto_dec_event(&doc.root, &got, NULL, 0), 0);
	assert_int_equal(got.target, 3);
	assert_pstr(got.body, "fixed");
	assert_null(proto_get(&doc.root, "cmid"));
	proto_doc_free(&doc);

	memset(&ev.body, 0, sizeof(ev.body));
	ev.k = ps("delete");
	proto_out_reset(&o);
	proto_enc_event(&o, &ev);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 7);
	assert_int_equal(proto_dec_event(&doc.root, &got, NULL, 0), 0);
	assert_pstr(got.k, "delete");
	assert_int_equal(got.target, 3);
	proto_doc_free(&doc);

	ev.k = ps("react");
	ev.emoji = ps("\xf0\x9f\x91\x8d");
	ev.on = false;
	proto_out_reset(&o);
	proto_enc_event(&o, &ev);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 9);
	assert_false(key_bool(&doc.root, "on"));
	assert_int_equal(proto_dec_event(&doc.root, &got, NULL, 0), 0);
	assert_pstr(got.emoji, "\xf0\x9f\x91\x8d");
	assert_false(got.on);
	assert_int_equal(got.target, 3);
	proto_doc_free(&doc);

	/* required fields of a kind, and frames that are not events */
	proto_out_reset(&o);
	msgpack_pack_map(&o.pk, 6);
	key(&o, "t");
	proto_pk_cstr(&o.pk, "ev");
	key(&o, "ch");
	proto_pk_cstr(&o.pk, "c");
	key(&o, "seq");
	msgpack_pack_uint64(&o.pk, 1);
	key(&o, "k");
	proto_pk_cstr(&o.pk, "react");
	key(&o, "ts");
	msgpack_pack_uint64(&o.pk, 1);
	key(&o, "from");
	proto_pk_cstr(&o.pk, "u");
	decode_out(&o, &doc);
	assert_int_equal(proto_dec_event(&doc.root, &got, NULL, 0), -1);
	proto_doc_free(&doc);

	proto_out_reset(&o);
	proto_enc_typing(&o, "c", "u");
	decode_out(&o, &doc);
	assert_int_equal(proto_dec_event(&doc.root, &got, NULL, 0), -1);
	assert_int_equal(proto_dec_event(&doc.root.via.map.ptr[0].val, &got,
					 NULL, 0), -1);
	proto_doc_free(&doc);
	proto_out_free(&o);
}

static void test_rt_msg(void **state)
{
	static const proto_str ment[] = { { "bob", 3 } };
	proto_out r, o, again;
	proto_doc doc;
	proto_msg m = {
		.seq = 10, .from = ps("alice"), .ts = 1234, .body = ps("hi"),
		.cmid = ps("c-9"), .thread = 0, .replies = 2,
		.last_reply = 12, .edited = 2000, .deleted = false,
		.mentions = ment, .nmentions = 1,
	};
	proto_msg got;
	proto_str out[2];
	const msgpack_object_map *rm;
	const msgpack_object_array *ra;

	(void)state;
	/* reactions: emoji -> user ids, encoded by whoever keeps them */
	proto_out_init(&r, 0, 64);
	msgpack_pack_map(&r.pk, 2);
	proto_pk_cstr(&r.pk, "\xf0\x9f\x91\x8d");
	msgpack_pack_array(&r.pk, 2);
	proto_pk_cstr(&r.pk, "bob");
	proto_pk_cstr(&r.pk, "carol");
	proto_pk_cstr(&r.pk, "\xf0\x9f\x8e\x89");
	msgpack_pack_array(&r.pk, 0);
	m.reactions = r.data;
	m.reactions_len = r.len;

	proto_out_init(&o, 0, 64);
	proto_enc_msg(&o, &m);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 10);
	assert_null(proto_get(&doc.root, "thread"));
	assert_null(proto_get(&doc.root, "deleted"));
	assert_null(proto_get(&doc.root, "t"));
	assert_int_equal(proto_get_map(&doc.root, "reactions", &rm), 0);
	assert_int_equal(rm->size, 2);
	assert_int_equal(rm->ptr[0].val.type, MSGPACK_OBJECT_ARRAY);
	ra = &rm->ptr[0].val.via.array;
	assert_int_equal(ra->size, 2);

	assert_int_equal(proto_dec_msg(&doc.root, &got, out, 2), 0);
	assert_int_equal(got.seq, 10);
	assert_pstr(got.from, "alice");
	assert_int_equal(got.ts, 1234);
	assert_pstr(got.body, "hi");
	assert_pstr(got.cmid, "c-9");
	assert_int_equal(got.replies, 2);
	assert_int_equal(got.last_reply, 12);
	assert_int_equal(got.edited, 2000);
	assert_false(got.deleted);
	assert_int_equal(got.nmentions, 1);
	assert_pstr(got.mentions[0], "bob");
	assert_int_equal(got.reactions_len, r.len);
	assert_memory_equal(got.reactions, r.data, r.len);

	/* decode, change, encode (a thread root gets a reply): the same
	 * bytes but for what changed */
	got.replies = 3;
	got.last_reply = 13;
	proto_out_init(&again, 0, 64);
	proto_enc_msg(&again, &got);
	m.replies = 3;
	m.last_reply = 13;
	proto_out_reset(&o);
	proto_enc_msg(&o, &m);
	assert_int_equal(again.len, o.len);
	assert_memory_equal(again.data, o.data, o.len);
	proto_doc_free(&doc);

	/* a deleted reply: thread set, body empty, nothing optional */
	memset(&m, 0, sizeof(m));
	m.seq = 11;
	m.from = ps("bob");
	m.ts = 5;
	m.cmid = ps("x");
	m.thread = 10;
	m.deleted = true;
	proto_out_reset(&o);
	proto_enc_msg(&o, &m);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 7);
	assert_key_str(&doc.root, "body", "");
	assert_true(key_bool(&doc.root, "deleted"));
	assert_int_equal(proto_dec_msg(&doc.root, &got, NULL, 0), 0);
	assert_true(got.deleted);
	assert_int_equal(got.thread, 10);
	assert_null(got.reactions);
	assert_int_equal(got.body.n, 0);
	proto_doc_free(&doc);

	/* reactions of the wrong type */
	proto_out_reset(&o);
	msgpack_pack_map(&o.pk, 5);
	key(&o, "seq");
	msgpack_pack_uint64(&o.pk, 1);
	key(&o, "from");
	proto_pk_cstr(&o.pk, "a");
	key(&o, "ts");
	msgpack_pack_uint64(&o.pk, 1);
	key(&o, "body");
	proto_pk_cstr(&o.pk, "b");
	key(&o, "reactions");
	msgpack_pack_array(&o.pk, 0);
	decode_out(&o, &doc);
	assert_int_equal(proto_dec_msg(&doc.root, &got, NULL, 0), -1);
	proto_doc_free(&doc);

	proto_out_free(&again);
	proto_out_free(&o);
	proto_out_free(&r);
}

static void test_rt_res(void **state)
{
	proto_out o;
	proto_doc doc;

	(void)state;
	proto_out_init(&o, 0, 64);
	proto_enc_res_ok(&o, 77, 2);
	key(&o, "seq");
	msgpack_pack_uint64(&o.pk, 5);
	key(&o, "dup");
	msgpack_pack_true(&o.pk);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 5);
	assert_key_str(&doc.root, "t", "res");
	assert_int_equal(key_uint(&doc.root, "rid"), 77);
	assert_true(key_bool(&doc.root, "ok"));
	assert_int_equal(key_uint(&doc.root, "seq"), 5);
	assert_true(key_bool(&doc.root, "dup"));
	proto_doc_free(&doc);

	proto_out_reset(&o);
	proto_enc_res_err(&o, 78, "RATE_LIMITED", "slow down", 250);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 6);
	assert_key_str(&doc.root, "t", "res");
	assert_int_equal(key_uint(&doc.root, "rid"), 78);
	assert_false(key_bool(&doc.root, "ok"));
	assert_key_str(&doc.root, "code", "RATE_LIMITED");
	assert_key_str(&doc.root, "msg", "slow down");
	assert_int_equal(key_uint(&doc.root, "retry_ms"), 250);
	proto_doc_free(&doc);

	proto_out_reset(&o);
	proto_enc_res_err(&o, 79, "NOT_FOUND", "no such channel", 0);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 5);
	assert_null(proto_get(&doc.root, "retry_ms"));
	proto_doc_free(&doc);
	proto_out_free(&o);
}

static void test_rt_err(void **state)
{
	proto_out o;
	proto_doc doc;
	/* op points into a request, not NUL-terminated */
	static const char opbuf[] = "sendXYZ";

	(void)state;
	proto_out_init(&o, 0, 64);
	proto_enc_err(&o, "RATE_LIMITED", "too fast", opbuf, 4, 1500);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 5);
	assert_key_str(&doc.root, "t", "err");
	assert_key_str(&doc.root, "code", "RATE_LIMITED");
	assert_key_str(&doc.root, "msg", "too fast");
	assert_key_str(&doc.root, "op", "send");
	assert_int_equal(key_uint(&doc.root, "retry_ms"), 1500);
	proto_doc_free(&doc);

	proto_out_reset(&o);
	proto_enc_err(&o, "BAD_FRAME", "frame is not a msgpack map", NULL, 0,
		      0);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 3);
	assert_null(proto_get(&doc.root, "op"));
	assert_null(proto_get(&doc.root, "retry_ms"));
	proto_doc_free(&doc);
	proto_out_free(&o);
}

static void test_rt_small_frames(void **state)
{
	proto_out o;
	proto_doc doc;

	(void)state;
	proto_out_init(&o, 0, 64);
	proto_enc_member(&o, "general", "bob", "invite");
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 4);
	assert_key_str(&doc.root, "t", "member");
	assert_key_str(&doc.root, "ch", "general");
	assert_key_str(&doc.root, "user", "bob");
	assert_key_str(&doc.root, "action", "invite");
	proto_doc_free(&doc);

	proto_out_reset(&o);
	proto_enc_gap(&o, "general", 100, 1000);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 4);
	assert_key_str(&doc.root, "t", "gap");
	assert_key_str(&doc.root, "ch", "general");
	assert_int_equal(key_uint(&doc.root, "after"), 100);
	assert_int_equal(key_uint(&doc.root, "last_seq"), 1000);
	proto_doc_free(&doc);

	proto_out_reset(&o);
	proto_enc_goaway(&o, 2500);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 2);
	assert_key_str(&doc.root, "t", "goaway");
	assert_int_equal(key_uint(&doc.root, "retry_ms"), 2500);
	proto_doc_free(&doc);

	proto_out_reset(&o);
	proto_enc_read(&o, "general", 17);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 3);
	assert_key_str(&doc.root, "t", "read");
	assert_key_str(&doc.root, "ch", "general");
	assert_int_equal(key_uint(&doc.root, "seq"), 17);
	proto_doc_free(&doc);

	proto_out_reset(&o);
	proto_enc_typing(&o, "general", "alice");
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 3);
	assert_key_str(&doc.root, "t", "typing");
	assert_key_str(&doc.root, "ch", "general");
	assert_key_str(&doc.root, "user", "alice");
	proto_doc_free(&doc);
	proto_out_free(&o);
}

static void test_rt_hello(void **state)
{
	static const char *const chs[] = { "general", "dm.a.b" };
	static const uint64_t seqs[] = { 41, 0 };
	const msgpack_object_map *res;
	proto_out o;
	proto_doc doc;

	(void)state;
	proto_out_init(&o, 0, 64);
	proto_enc_hello(&o, 1, "tok.en.sig", chs, seqs, 2);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 4);
	assert_key_str(&doc.root, "op", "hello");
	assert_int_equal(key_uint(&doc.root, "rid"), 1);
	assert_key_str(&doc.root, "token", "tok.en.sig");
	assert_int_equal(proto_get_map(&doc.root, "resume", &res), 0);
	assert_int_equal(res->size, 2);
	assert_int_equal(res->ptr[0].key.type, MSGPACK_OBJECT_STR);
	assert_memory_equal(res->ptr[0].key.via.str.ptr, "general", 7);
	assert_int_equal(res->ptr[0].val.via.u64, 41);
	assert_memory_equal(res->ptr[1].key.via.str.ptr, "dm.a.b", 6);
	assert_int_equal(res->ptr[1].val.type,
			 MSGPACK_OBJECT_POSITIVE_INTEGER);
	assert_int_equal(res->ptr[1].val.via.u64, 0);
	proto_doc_free(&doc);

	/* no resume, no rid */
	proto_out_reset(&o);
	proto_enc_hello(&o, 0, "t", NULL, NULL, 0);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 2);
	assert_null(proto_get(&doc.root, "rid"));
	assert_null(proto_get(&doc.root, "resume"));
	proto_doc_free(&doc);
	proto_out_free(&o);
}

static void test_rt_send(void **state)
{
	static const char *const ment[] = { "bob", "carol" };
	const msgpack_object_array *a;
	proto_out o;
	proto_doc doc;
	char body[PROTO_MAX_BODY];

	(void)state;
	memset(body, 'b', sizeof(body));
	proto_out_init(&o, 0, 64);
	proto_enc_send(&o, 9, "general", body, sizeof(body), "cm-1", 4, ment,
		       2);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 7);
	assert_key_str(&doc.root, "op", "send");
	assert_int_equal(key_uint(&doc.root, "rid"), 9);
	assert_key_str(&doc.root, "ch", "general");
	assert_key_str(&doc.root, "cmid", "cm-1");
	assert_int_equal(key_uint(&doc.root, "thread"), 4);
	assert_int_equal(proto_get_array(&doc.root, "mentions", &a), 0);
	assert_int_equal(a->size, 2);
	assert_memory_equal(a->ptr[1].via.str.ptr, "carol", 5);
	{
		const char *s;
		uint32_t n;

		assert_int_equal(proto_get_str(&doc.root, "body", &s, &n), 0);
		assert_int_equal(n, sizeof(body));
		assert_memory_equal(s, body, n);
	}
	proto_doc_free(&doc);

	/* fire-and-forget, top level, no mentions; body not NUL-ended */
	proto_out_reset(&o);
	proto_enc_send(&o, 0, "general", "hello!!", 5, "cm-2", 0, NULL, 0);
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 4);
	assert_null(proto_get(&doc.root, "rid"));
	assert_null(proto_get(&doc.root, "thread"));
	assert_null(proto_get(&doc.root, "mentions"));
	assert_key_str(&doc.root, "body", "hello");
	proto_doc_free(&doc);

	/* a generic request */
	proto_out_reset(&o);
	proto_enc_req(&o, "ch.join", 3, 1);
	key(&o, "ch");
	proto_pk_cstr(&o.pk, "general");
	decode_out(&o, &doc);
	assert_int_equal(doc.root.via.map.size, 3);
	assert_key_str(&doc.root, "op", "ch.join");
	assert_int_equal(key_uint(&doc.root, "rid"), 3);
	proto_doc_free(&doc);
	proto_out_free(&o);
}

static void test_out_buffer(void **state)
{
	proto_out o;
	proto_doc doc;
	size_t first, cap;
	unsigned i;

	(void)state;
	/* tiny start, headroom kept in front through every realloc */
	proto_out_init(&o, 16, 1);
	assert_ptr_equal(o.data, o.base + 16);
	for (i = 0; i < 200; i++)
		proto_enc_gap(&o, "a-channel-name", i, i * 1000);
	assert_ptr_equal(o.data, o.base + 16);
	assert_true(o.cap >= o.len);
	/* frames append: decode the first one alone */
	proto_out_reset(&o);
	assert_int_equal(o.len, 0);
	cap = o.cap;
	proto_enc_goaway(&o, 1);
	first = o.len;
	proto_enc_goaway(&o, 2);
	assert_int_equal(o.len, 2 * first);
	assert_int_equal(o.cap, cap);
	assert_int_equal(decode_exact(&doc, o.data, first), PROTO_OK);
	proto_doc_free(&doc);
	assert_int_equal(decode_exact(&doc, o.data, o.len), PROTO_E_TRAILING);
	assert_int_equal(decode_exact(&doc, o.data + first, first), PROTO_OK);
	assert_int_equal(key_uint(&doc.root, "retry_ms"), 2);
	proto_doc_free(&doc);
	/* raw bytes go in as they are */
	proto_out_reset(&o);
	proto_pk_raw(&o.pk, "\x81\xa1k\x07", 4);
	assert_int_equal(o.len, 4);
	assert_memory_equal(o.data, "\x81\xa1k\x07", 4);
	proto_pk_raw(&o.pk, NULL, 0);
	assert_int_equal(o.len, 4);
	proto_out_free(&o);
	assert_null(o.base);
}

/* ---- fuzz --------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t x = rng_state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545f4914f6cdd1dull;
}

static size_t rnd_below(size_t n)
{
	return n ? (size_t)(rnd() % n) : 0;
}

/* Bytes that steer a mutation toward headers and lengths. */
static uint8_t rnd_byte(void)
{
	static const uint8_t hot[] = {
		0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1,
		0xc4, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcf, 0xd3, 0xd4, 0xd8,
		0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xed, 0xf4, 0xff,
	};

	if (rnd() & 1)
		return hot[rnd_below(sizeof(hot))];
	return (uint8_t)rnd();
}

/* What the session will do with every frame: decode it as a request; then
 * what the mailbox does: copy it, and (tests only) encode the copy. A
 * valid request's copy encodes to the same bytes as the request, and those
 * bytes decode to a valid request again. */
static unsigned long req_valid, req_refused;

static void exercise_req(const proto_doc *doc)
{
	static struct proto_limits lim;
	struct proto_req r, c;
	const char *why = NULL;
	size_t need;
	void *tail;
	int rc;

	if (!lim.ops)
		lim = proto_limits_default();
	rc = proto_req_decode(&doc->root, &lim, &r, &why);
	assert_true(rc >= PROTO_C_OK && rc < PROTO_C__COUNT);
	if (rc)
		req_refused++;
	else
		req_valid++;
	if (rc) {
		assert_non_null(why);
		assert_true(rc == PROTO_C_BAD_REQUEST ||
			    rc == PROTO_C_TOO_LARGE);
	}
	need = proto_req_copy(&r, NULL, 0, NULL);
	tail = malloc(need ? need : 1);
	assert_non_null(tail);
	assert_int_equal(proto_req_copy(&r, tail, need, &c), need);
	if (rc == PROTO_C_OK) {
		proto_out a, b;
		proto_doc again;
		struct proto_req r2;

		proto_out_init(&a, 0, 64);
		proto_out_init(&b, 0, 64);
		proto_req_encode(&a, &r);
		proto_req_encode(&b, &c);
		assert_int_equal(a.len, b.len);
		assert_memory_equal(a.data, b.data, a.len);
		assert_int_equal(proto_decode(&again, a.data, a.len),
				 PROTO_OK);
		assert_int_equal(proto_req_decode(&again.root, &lim, &r2,
						  &why),
				 PROTO_C_OK);
		assert_int_equal(r2.op, r.op);
		proto_doc_free(&again);
		proto_out_free(&a);
		proto_out_free(&b);
	}
	free(tail);
}

/* Touch everything a server would look at in an accepted doc. */
static void exercise(const proto_doc *doc)
{
	static const char *const keys[] = { "t", "op", "rid", "ch", "seq",
					    "body", "mentions", "resume",
					    "reactions", "on", "k" };
	const msgpack_object_array *a;
	const msgpack_object_map *m;
	proto_str ment[4];
	proto_event ev;
	proto_msg msg;
	const char *s;
	uint32_t n;
	uint64_t u;
	bool b;
	size_t i;
	char buf[16];

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		proto_get_str(&doc->root, keys[i], &s, &n);
		proto_get_uint(&doc->root, keys[i], &u);
		proto_get_bool(&doc->root, keys[i], &b);
		proto_get_array(&doc->root, keys[i], &a);
		proto_get_map(&doc->root, keys[i], &m);
		proto_str_copy(proto_get(&doc->root, keys[i]), buf,
			       sizeof(buf));
	}
	if (proto_dec_event(&doc->root, &ev, ment, 4) == 0) {
		proto_out o;

		proto_out_init(&o, 0, 64);
		proto_enc_event(&o, &ev);
		proto_out_free(&o);
	}
	exercise_req(doc);
	if (proto_dec_msg(&doc->root, &msg, ment, 4) == 0) {
		proto_out o;
		proto_doc again;

		/* what the channel actor does with a thread root */
		proto_out_init(&o, 0, 64);
		proto_enc_msg(&o, &msg);
		assert_int_equal(decode_exact(&again, o.data, o.len),
				 PROTO_OK);
		proto_doc_free(&again);
		proto_out_free(&o);
	}
}

static void build_corpus(proto_out *c, size_t *off, size_t *len, size_t *nc)
{
	static const proto_str ment[] = { { "bob", 3 }, { "carol", 5 } };
	proto_event ev = {
		.ch = ps("general"), .seq = 42, .k = ps("msg"), .ts = 17,
		.from = ps("alice"), .body = ps("h\xc3\xa9llo \xe2\x82\xac"),
		.cmid = ps("c1"), .thread = 3, .mentions = ment,
		.nmentions = 2,
	};
	proto_msg m = {
		.seq = 1, .from = ps("a"), .ts = 2, .body = ps("b"),
		.cmid = ps("c"), .replies = 1, .last_reply = 4, .edited = 9,
		.deleted = true, .mentions = ment, .nmentions = 1,
		.reactions = "\x81\xa1x\x91\xa1y", .reactions_len = 6,
	};
	static const char *const chs[] = { "general" };
	static const uint64_t seqs[] = { 5 };
	size_t k = 0;

#define ADD(stmt)                                                            \
	do {                                                                 \
		off[k] = c->len;                                             \
		stmt;                                                        \
		len[k] = c->len - off[k];                                    \
		k++;                                                         \
	} while (0)
	ADD(proto_enc_event(c, &ev));
	ADD(proto_enc_msg(c, &m));
	ADD(proto_enc_res_err(c, 1, "RATE_LIMITED", "x", 10));
	ADD(proto_enc_err(c, "BAD_FRAME", "y", "send", 4, 5));
	ADD(proto_enc_gap(c, "g", 1, 2));
	ADD(proto_enc_hello(c, 1, "tok", chs, seqs, 1));
	ADD(proto_enc_send(c, 2, "g", "body", 4, "cm", 0, NULL, 0));
	/* requests, so that many mutants reach the request decoder's
	 * argument checks */
	ADD(jpack(c, "{\"op\":\"history\",\"rid\":3,\"ch\":\"g\","
		     "\"before\":9,\"limit\":20,\"thread\":2}"));
	ADD(jpack(c, "{\"op\":\"ch.members\",\"ch\":\"g\",\"after\":"
		     "\"bob\",\"limit\":5}"));
	ADD(jpack(c, "{\"op\":\"react\",\"rid\":1,\"ch\":\"g\","
		     "\"target\":4,\"emoji\":\"x\",\"on\":true}"));
	ADD(jpack(c, "{\"op\":\"presence.watch\",\"users\":[\"a\","
		     "\"b\"]}"));
	ADD(jpack(c, "{\"op\":\"search\",\"q\":\"hi\",\"ch\":\"g\","
		     "\"limit\":3}"));
	ADD(jpack(c, "{\"op\":\"push.register\",\"app\":\"a\","
		     "\"pushkey\":\"k\",\"platform\":\"p\",\"data\":"
		     "{\"x\":[1,\"y\"]}}"));
	ADD(jpack(c, "{\"op\":\"ch.set\",\"ch\":\"g\",\"name\":\"n\","
		     "\"archived\":false,\"post\":\"all\"}"));
	ADD(jpack(c, "{\"op\":\"dm.open\",\"rid\":2,\"users\":[\"b\","
		     "\"c\"]}"));
	ADD(jpack(c, "{\"op\":\"edit\",\"ch\":\"g\",\"target\":1,"
		     "\"body\":\"b\"}"));
	ADD(jpack(c, "{\"op\":\"notify.set\",\"level\":\"all\","
		     "\"ch\":\"g\"}"));
	ADD(build_everything(c));
	ADD(nested(c, PROTO_MAX_DEPTH, false));
	ADD(nested(c, PROTO_MAX_DEPTH, true));
#undef ADD
	*nc = k;
}

static void test_fuzz(void **state)
{
	const char *env_seed = getenv("PROTO_FUZZ_SEED");
	const char *env_iters = getenv("PROTO_FUZZ_ITERS");
	uint64_t seed = env_seed ? strtoull(env_seed, NULL, 0) :
				   0x7061726c6579ull; /* "parley" */
	unsigned long iters = env_iters ? strtoul(env_iters, NULL, 0) :
					  200000;
	size_t off[32], len[32], nc, maxlen = 0;
	unsigned long i, accepted = 0, by_status[PROTO_E_NOMEM + 1] = { 0 };
	proto_out corpus;
	uint8_t *work;

	(void)state;
	printf("fuzz: seed 0x%" PRIx64 ", %lu iterations "
	       "(PROTO_FUZZ_SEED, PROTO_FUZZ_ITERS to change)\n",
	       seed, iters);
	fflush(stdout);
	rng_state = seed ? seed : 1;
	proto_out_init(&corpus, 0, 4096);
	build_corpus(&corpus, off, len, &nc);
	for (i = 0; i < nc; i++)
		if (len[i] > maxlen)
			maxlen = len[i];
	work = malloc(maxlen + 64);
	assert_non_null(work);

	for (i = 0; i < iters; i++) {
		size_t n, j, muts;
		uint8_t *in;
		proto_doc doc;
		int rc;

		if (rnd_below(8) == 0) {
			/* pure noise, usually starting like a map */
			n = rnd_below(96);
			for (j = 0; j < n; j++)
				work[j] = rnd_byte();
			if (n && (rnd() & 1))
				work[0] = 0x80 | (uint8_t)rnd_below(16);
		} else {
			size_t c = rnd_below(nc);

			n = len[c];
			memcpy(work, corpus.data + off[c], n);
			/* mostly one mutation, so that many still decode
			 * and reach msgpack-c and the accessors */
			muts = rnd_below(4) ? 1 : 2 + rnd_below(4);
			for (j = 0; j < muts; j++) {
				size_t at = rnd_below(n ? n : 1);

				switch (rnd_below(5)) {
				case 0: /* bit flip */
					if (n)
						work[at] ^= 1u << rnd_below(8);
					break;
				case 1: /* byte replaced */
					if (n)
						work[at] = rnd_byte();
					break;
				case 2: /* byte inserted */
					if (n < maxlen + 63) {
						memmove(work + at + 1,
							work + at, n - at);
						work[at] = rnd_byte();
						n++;
					}
					break;
				case 3: /* byte deleted */
					if (n) {
						memmove(work + at,
							work + at + 1,
							n - at - 1);
						n--;
					}
					break;
				default: /* truncated */
					n = at;
					break;
				}
			}
		}
		/* exact-size copy: any overread is a heap overflow */
		in = malloc(n ? n : 1);
		assert_non_null(in);
		if (n)
			memcpy(in, work, n);
		rc = proto_decode(&doc, in, n);
		free(in);
		assert_true(rc >= PROTO_OK && rc <= PROTO_E_NOMEM);
		assert_int_not_equal(rc, PROTO_E_NOMEM);
		by_status[rc]++;
		if (rc == PROTO_OK) {
			accepted++;
			assert_int_equal(doc.root.type, MSGPACK_OBJECT_MAP);
			exercise(&doc);
			proto_doc_free(&doc);
		}
	}
	printf("fuzz: requests: %lu valid, %lu refused\n", req_valid,
	       req_refused);
	printf("fuzz: %lu accepted;", accepted);
	for (i = 1; i <= PROTO_E_NOMEM; i++)
		if (by_status[i])
			printf(" %s %lu;", proto_strerror((int)i),
			       by_status[i]);
	printf("\n");
	free(work);
	proto_out_free(&corpus);
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv)
{
	const struct CMUnitTest malformed[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_truncated_everywhere),
		cmocka_unit_test(test_trailing),
		cmocka_unit_test(test_not_map),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_utf8_key),
		cmocka_unit_test(test_utf8_value),
		cmocka_unit_test(test_utf8_valid),
		cmocka_unit_test(test_non_str_key),
		cmocka_unit_test(test_ext),
		cmocka_unit_test(test_c1),
		cmocka_unit_test(test_huge_counts),
		cmocka_unit_test(test_str32_past_end),
		cmocka_unit_test(test_frame_too_large),
		cmocka_unit_test(test_strings_and_ids),
	};
	const struct CMUnitTest access[] = {
		cmocka_unit_test(test_access_types),
		cmocka_unit_test(test_doc_outlives_input),
	};
	const struct CMUnitTest roundtrip[] = {
		cmocka_unit_test(test_rt_event_msg),
		cmocka_unit_test(test_rt_event_kinds),
		cmocka_unit_test(test_rt_msg),
		cmocka_unit_test(test_rt_res),
		cmocka_unit_test(test_rt_err),
		cmocka_unit_test(test_rt_small_frames),
		cmocka_unit_test(test_rt_hello),
		cmocka_unit_test(test_rt_send),
		cmocka_unit_test(test_out_buffer),
	};
	const struct CMUnitTest fuzz[] = {
		cmocka_unit_test(test_fuzz),
	};
	const char *g = argc > 1 ? argv[1] : NULL;
	int failed = 0;

	if (!g || strcmp(g, "malformed") == 0)
		failed += cmocka_run_group_tests_name("malformed", malformed,
						      NULL, NULL);
	if (!g || strcmp(g, "access") == 0)
		failed += cmocka_run_group_tests_name("access", access, NULL,
						      NULL);
	if (!g || strcmp(g, "roundtrip") == 0)
		failed += cmocka_run_group_tests_name("roundtrip", roundtrip,
						      NULL, NULL);
	if (!g || strcmp(g, "fuzz") == 0)
		failed += cmocka_run_group_tests_name("fuzz", fuzz, NULL,
						      NULL);
	if (g && strcmp(g, "malformed") && strcmp(g, "access") &&
	    strcmp(g, "roundtrip") && strcmp(g, "fuzz")) {
		fprintf(stderr, "unknown group %s\n", g);
		return 2;
	}
	return failed ? 1 : 0;
}
