/*
 * Authentication, as a client sees it: a valid hello returns the user, the
 * workspace, hb_ms, the limits and the user's channels. Every kind of bad
 * token (another secret, alg none, HS384/HS512 with the right secret, an
 * alg spelled other than exactly "HS256" such as "hs256", a `crit` header,
 * expired beyond the 30 s skew, nbf in the future beyond it, a fraction
 * counting, an nbf or exp that is not a number, missing sub, ws or exp,
 * ids with bad characters or too long, garbage) gets ok:false
 * UNAUTHORIZED and then close 4001, while tokens inside the skew are
 * accepted, and so are exp values up to the last int64 or a huge float
 * (no overflow in the comparison). Other requests before hello are
 * UNAUTHORIZED and leave the connection usable; a second hello is BAD_REQUEST, a malformed resume
 * too (hello may then be tried again); requests sent right behind a hello,
 * without waiting for its answer, are served; a bad token in a hello
 * without rid is an err frame naming hello, then 4001; no hello within the
 * deadline closes with 4001 without touching authenticated connections.
 * The 17th device of a user is refused (FORBIDDEN, close 4029) while its
 * 16 others and other users go on, a slot freed by a closing device is
 * taken again (also by devices that vanish before their hello is
 * answered), and --max-devices is what hello reports and enforces. A user
 * sees nothing of another workspace, nor does the same id in another.
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
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "actors/actors.h"
#include "tests/e2e/harness.h"

#define SKEW_S 30

/* ---- helpers ------------------------------------------------------------- */

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

/* The server's secret, as the harness wrote it. */
static size_t read_secret(const hsrv *s, unsigned char *key, size_t cap)
{
	FILE *f = fopen(s->secret, "rb");
	size_t n;

	assert_non_null(f);
	n = fread(key, 1, cap, f);
	fclose(f);
	while (n && (key[n - 1] == '\n' || key[n - 1] == '\r'))
		n--;
	assert_true(n > 0);
	return n;
}

/* What goes into a token; NULL strings and 0 times are left out. */
struct claims {
	jwt_alg_t alg;
	const unsigned char *key;
	size_t keylen;
	const char *sub, *ws;
	int64_t exp, nbf;
};

static char *mint(const struct claims *c)
{
	jwt_t *jwt = NULL;
	char *tok;

	assert_int_equal(jwt_new(&jwt), 0);
	if (c->sub)
		assert_int_equal(jwt_add_grant(jwt, "sub", c->sub), 0);
	if (c->ws)
		assert_int_equal(jwt_add_grant(jwt, "ws", c->ws), 0);
	if (c->exp)
		assert_int_equal(jwt_add_grant_int(jwt, "exp", (long)c->exp),
				 0);
	if (c->nbf)
		assert_int_equal(jwt_add_grant_int(jwt, "nbf", (long)c->nbf),
				 0);
	if (c->alg == JWT_ALG_NONE)
		assert_int_equal(jwt_set_alg(jwt, JWT_ALG_NONE, NULL, 0), 0);
	else
		assert_int_equal(jwt_set_alg(jwt, c->alg, c->key,
					     (int)c->keylen), 0);
	tok = jwt_encode_str(jwt);
	jwt_free(jwt);
	assert_non_null(tok);
	return tok;
}

/* A well-formed HS256 token for sub@ws with the server's secret, valid for
 * an hour; the caller changes what the case is about. */
static struct claims good_claims(const unsigned char *key, size_t keylen,
				 const char *sub, const char *ws)
{
	struct claims c = {
		.alg = JWT_ALG_HS256, .key = key, .keylen = keylen,
		.sub = sub, .ws = ws, .exp = now_s() + 3600,
	};

	return c;
}

/* Send hello with rid and token (NULL: no token field); returns the
 * response (caller frees). */
static void hello_raw(pc_conn *c, const char *token, proto_doc *res)
{
	if (token) {
		assert_int_equal(h_req(c, res, "hello", 1, "token", 's', token),
				 1);
	} else {
		assert_int_equal(h_req(c, res, "hello", 0), 1);
	}
}

/* The request must be answered ok:true; the response is freed. */
static void req_ok(pc_conn *c, const char *op)
{
	proto_doc res;

	assert_int_equal(h_req(c, &res, op, 0), 1);
	if (!h_ok(&res))
		fail_msg("%s: expected ok, got %s", op, h_code(&res));
	proto_doc_free(&res);
}

/* The connection must be closed by the server with code, with no other
 * frame before it. */
static void expect_closed(pc_conn *c, int code, int timeout_ms)
{
	proto_doc d;
	int rc = h_next(c, &d, timeout_ms);

	if (rc == 1) {
		char t[32], cd[64];

		snprintf(t, sizeof(t), "%s", h_s(&d.root, "t"));
		snprintf(cd, sizeof(cd), "%s", h_code(&d));
		proto_doc_free(&d);
		fail_msg("expected close %d, got a frame t=%s code=%s", code, t,
			 cd);
	}
	assert_int_equal(rc, -1);
	assert_int_equal(pc_close_code(c), code);
}

/* The hello with this token must be refused: ok:false UNAUTHORIZED, then
 * close 4001. The server must go on serving others. */
static void expect_rejected(hsrv *s, const char *token)
{
	pc_conn *c = h_connect_raw(s), *ok;
	proto_doc res;

	assert_non_null(c);
	hello_raw(c, token, &res);
	assert_false(h_ok(&res));
	assert_string_equal(h_code(&res), "UNAUTHORIZED");
	assert_true(strlen(h_s(&res.root, "msg")) > 0);
	proto_doc_free(&res);
	expect_closed(c, 4001, H_TIMEOUT);
	pc_close(c);

	ok = h_connect(s, "alice", "acme", NULL);
	assert_non_null(ok);
	req_ok(ok, "hb");
	pc_close(ok);
}

/* The hello with this token must succeed as user@ws, and the connection
 * must be usable. */
static void expect_accepted(hsrv *s, const char *token, const char *user,
			    const char *ws)
{
	pc_conn *c = h_connect_raw(s);
	proto_doc res;

	assert_non_null(c);
	hello_raw(c, token, &res);
	if (!h_ok(&res))
		fail_msg("hello refused: %s %s", h_code(&res),
			 h_s(&res.root, "msg"));
	assert_string_equal(h_s(&res.root, "user"), user);
	assert_string_equal(h_s(&res.root, "ws"), ws);
	proto_doc_free(&res);
	req_ok(c, "hb");
	req_ok(c, "ch.list");
	pc_close(c);
}

/* Start a server and run one token case on it. */
typedef void (*tok_case)(hsrv *s, const unsigned char *key, size_t keylen);

static void run_case(tok_case fn)
{
	hsrv s;
	unsigned char key[512];
	size_t keylen;

	h_start(&s, "");
	keylen = read_secret(&s, key, sizeof(key));
	fn(&s, key, keylen);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

static const msgpack_object *arr_item(const msgpack_object_array *a,
				      uint32_t i)
{
	assert_true(i < a->size);
	return &a->ptr[i];
}

/* ---- a valid hello ------------------------------------------------------- */

static void check_limits(const msgpack_object *root)
{
	const msgpack_object_map *lm;
	msgpack_object l = { .type = MSGPACK_OBJECT_MAP };

	assert_int_equal(proto_get_map(root, "limits", &lm), 0);
	l.via.map = *lm;
	assert_int_equal(h_u(&l, "frame"), 65536);
	assert_int_equal(h_u(&l, "body"), 16384);
	assert_int_equal(h_u(&l, "name"), 80);
	assert_int_equal(h_u(&l, "members"), 100000);
	assert_int_equal(h_u(&l, "dm"), 250);
	assert_int_equal(h_u(&l, "devices"), 16);
	assert_int_equal(h_u(&l, "send_per_s"), 50);
	assert_int_equal(h_u(&l, "send_burst"), 100);
	assert_int_equal(h_u(&l, "outbuf"), 8u << 20);
}

static void test_hello_ok(void **st)
{
	hsrv s;
	proto_doc hr, res;
	const msgpack_object_array *chs;
	const msgpack_object *e;
	pc_conn *a, *b, *a2;
	char ch[65];

	(void)st;
	h_start(&s, "");
	a = h_connect(&s, "alice", "acme", &hr);
	assert_non_null(a);
	assert_true(h_ok(&hr));
	assert_string_equal(h_s(&hr.root, "t"), "res");
	assert_string_equal(h_s(&hr.root, "user"), "alice");
	assert_string_equal(h_s(&hr.root, "ws"), "acme");
	assert_int_equal(h_u(&hr.root, "hb_ms"), 5000);
	check_limits(&hr.root);
	assert_int_equal(proto_get_array(&hr.root, "channels", &chs), 0);
	assert_int_equal(chs->size, 0); /* a new user has no channels */
	proto_doc_free(&hr);

	/* Alice makes a channel, Bob joins and writes twice. */
	assert_int_equal(h_create(a, "general", "public", ch), 0);
	b = h_connect(&s, "bob", "acme", NULL);
	assert_non_null(b);
	assert_int_equal(h_req(b, &res, "ch.join", 1, "ch", 's', ch), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	assert_int_equal(h_send(b, ch, "hello", "b1"), 1);
	assert_int_equal(h_send(b, ch, "anyone?", "b2"), 2);

	/* Alice's next device is told about the channel in hello. */
	a2 = h_connect(&s, "alice", "acme", &hr);
	assert_non_null(a2);
	assert_int_equal(proto_get_array(&hr.root, "channels", &chs), 0);
	assert_int_equal(chs->size, 1);
	e = arr_item(chs, 0);
	assert_int_equal(e->type, MSGPACK_OBJECT_MAP);
	assert_string_equal(h_s(e, "id"), ch);
	assert_string_equal(h_s(e, "name"), "general");
	assert_string_equal(h_s(e, "kind"), "public");
	assert_int_equal(h_u(e, "last_seq"), 2);
	assert_int_equal(h_u(e, "read_seq"), 0);
	assert_int_equal(h_u(e, "unread"), 2);
	assert_int_equal(h_u(e, "mentions"), 0);
	assert_non_null(proto_get(e, "read_seq"));
	assert_non_null(proto_get(e, "mentions"));
	proto_doc_free(&hr);

	/* Bob's own messages moved his marker: nothing unread for him. */
	pc_close(b);
	b = h_connect(&s, "bob", "acme", &hr);
	assert_non_null(b);
	assert_int_equal(proto_get_array(&hr.root, "channels", &chs), 0);
	assert_int_equal(chs->size, 1);
	e = arr_item(chs, 0);
	assert_string_equal(h_s(e, "id"), ch);
	assert_int_equal(h_u(e, "last_seq"), 2);
	assert_int_equal(h_u(e, "read_seq"), 2);
	assert_int_equal(h_u(e, "unread"), 0);
	proto_doc_free(&hr);

	pc_close(a);
	pc_close(a2);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

static void expect_too_many(hsrv *s, const char *user);

/* Limits set on the command line are what hello reports. */
static void test_hello_reports_configured_limits(void **st)
{
	hsrv s;
	proto_doc hr;
	const msgpack_object_map *lm;
	msgpack_object l = { .type = MSGPACK_OBJECT_MAP };
	pc_conn *a;

	(void)st;
	h_start(&s, "--max-devices 3 --send-rate 7 --send-burst 9 "
		    "--max-outbuf 65536 --max-body 1000");
	a = h_connect(&s, "alice", "acme", &hr);
	assert_non_null(a);
	assert_int_equal(proto_get_map(&hr.root, "limits", &lm), 0);
	l.via.map = *lm;
	assert_int_equal(h_u(&l, "devices"), 3);
	assert_int_equal(h_u(&l, "send_per_s"), 7);
	assert_int_equal(h_u(&l, "send_burst"), 9);
	assert_int_equal(h_u(&l, "outbuf"), 65536);
	assert_int_equal(h_u(&l, "body"), 1000);
	proto_doc_free(&hr);
	/* ... and what the server does: a 4th device is one too many. */
	{
		pc_conn *a2 = h_connect(&s, "alice", "acme", NULL);
		pc_conn *a3 = h_connect(&s, "alice", "acme", NULL);

		assert_non_null(a2);
		assert_non_null(a3);
		expect_too_many(&s, "alice");
		req_ok(a3, "hb");
		pc_close(a2);
		pc_close(a3);
	}
	pc_close(a);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* ---- bad tokens ---------------------------------------------------------- */

static void case_bad_signature(hsrv *s, const unsigned char *key, size_t kl)
{
	static const unsigned char other[] = "another-secret-0123456789abcdef!";
	struct claims c = good_claims(key, kl, "alice", "acme");
	char *tok;

	c.key = other;
	c.keylen = sizeof(other) - 1;
	tok = mint(&c);
	expect_rejected(s, tok);
	free(tok);

	/* The right signature with one byte of the payload changed. */
	c = good_claims(key, kl, "alice", "acme");
	tok = mint(&c);
	{
		char *dot = strchr(tok, '.');

		assert_non_null(dot);
		dot[3] = dot[3] == 'A' ? 'B' : 'A';
	}
	expect_rejected(s, tok);
	free(tok);
}

static void test_bad_signature(void **st)
{
	(void)st;
	run_case(case_bad_signature);
}

static void case_alg_none(hsrv *s, const unsigned char *key, size_t kl)
{
	struct claims c = good_claims(key, kl, "alice", "acme");
	char *tok;

	c.alg = JWT_ALG_NONE;
	tok = mint(&c);
	expect_rejected(s, tok);
	free(tok);
}

static void test_alg_none(void **st)
{
	(void)st;
	run_case(case_alg_none);
}

static void case_other_hmac(hsrv *s, const unsigned char *key, size_t kl)
{
	struct claims c = good_claims(key, kl, "alice", "acme");
	char *tok;

	c.alg = JWT_ALG_HS512;
	tok = mint(&c);
	expect_rejected(s, tok);
	free(tok);
	c.alg = JWT_ALG_HS384;
	tok = mint(&c);
	expect_rejected(s, tok);
	free(tok);
	/* The same claims with HS256 are fine: it is the alg. */
	c.alg = JWT_ALG_HS256;
	tok = mint(&c);
	expect_accepted(s, tok, "alice", "acme");
	free(tok);
}

static void test_hs512_with_right_secret(void **st)
{
	(void)st;
	run_case(case_other_hmac);
}

static void case_expired(hsrv *s, const unsigned char *key, size_t kl)
{
	struct claims c = good_claims(key, kl, "alice", "acme");
	char *tok;

	c.exp = now_s() - SKEW_S - 10; /* 40 s ago: beyond the skew */
	tok = mint(&c);
	expect_rejected(s, tok);
	free(tok);
	c.exp = now_s() - 3600;
	tok = mint(&c);
	expect_rejected(s, tok);
	free(tok);
	/* Expired 10 s ago: inside the skew, still good. */
	c.exp = now_s() - 10;
	tok = mint(&c);
	expect_accepted(s, tok, "alice", "acme");
	free(tok);
}

static void test_expired(void **st)
{
	(void)st;
	run_case(case_expired);
}

static void case_nbf(hsrv *s, const unsigned char *key, size_t kl)
{
	struct claims c = good_claims(key, kl, "alice", "acme");
	char *tok;

	c.nbf = now_s() + SKEW_S + 30; /* valid only in a minute */
	tok = mint(&c);
	expect_rejected(s, tok);
	free(tok);
	/* Valid in 10 s: inside the skew, good now. */
	c.nbf = now_s() + 10;
	tok = mint(&c);
	expect_accepted(s, tok, "alice", "acme");
	free(tok);
	/* Valid since a minute ago. */
	c.nbf = now_s() - 60;
	tok = mint(&c);
	expect_accepted(s, tok, "alice", "acme");
	free(tok);
}

static void test_nbf_in_future(void **st)
{
	(void)st;
	run_case(case_nbf);
}

/* ---- hand-made tokens: any header, any claims ---------------------------- */

static void b64url(const unsigned char *in, size_t n, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	uint32_t acc = 0;
	unsigned bits = 0;

	for (size_t i = 0; i < n; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = a[(acc >> bits) & 63];
		}
	}
	if (bits)
		out[o++] = a[(acc << (6 - bits)) & 63];
	out[o] = 0;
}

/* header.claims signed with HMAC-SHA256 and key, whatever they say. */
static char *mint_raw(const unsigned char *key, size_t keylen,
		      const char *header, const char *claims)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned maclen = 0;
	size_t hl = strlen(header), cl = strlen(claims);
	char *tok = malloc(2 * (hl + cl) + 128);
	size_t n;

	b64url((const unsigned char *)header, hl, tok);
	n = strlen(tok);
	tok[n++] = '.';
	b64url((const unsigned char *)claims, cl, tok + n);
	n = strlen(tok);
	assert_non_null(HMAC(EVP_sha256(), key, (int)keylen,
			     (const unsigned char *)tok, n, mac, &maclen));
	tok[n++] = '.';
	b64url(mac, maclen, tok + n);
	return tok;
}

#define HS256 "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

/* One hand-made token: accepted as alice@acme, or refused (4001). */
static void raw_case(hsrv *s, const unsigned char *key, size_t kl,
		     const char *header, const char *claims, bool accepted)
{
	char *tok = mint_raw(key, kl, header, claims);

	if (accepted)
		expect_accepted(s, tok, "alice", "acme");
	else
		expect_rejected(s, tok);
	free(tok);
}

/* Claims for alice@acme with exp and optional more ("" or ",..."). */
static const char *claims_exp(const char *exp, const char *more)
{
	static char buf[512];

	snprintf(buf, sizeof(buf),
		 "{\"sub\":\"alice\",\"ws\":\"acme\",\"exp\":%s%s}", exp, more);
	return buf;
}

/* A NumericDate relative to now, written with a fraction: now+d+0.5 */
static const char *half(int64_t d)
{
	static char bufs[4][64];
	static unsigned i;
	char *b = bufs[i++ % 4];
	int64_t t = now_s() + d;

	if (t >= 0)
		snprintf(b, 64, "%lld.5", (long long)t);
	else
		snprintf(b, 64, "-%lld.5", (long long)-t - 1);
	return b;
}

static void case_alg_spelling(hsrv *s, const unsigned char *key, size_t kl)
{
	char exp[32], tok_claims[512];

	snprintf(exp, sizeof(exp), "%lld", (long long)(now_s() + 3600));
	snprintf(tok_claims, sizeof(tok_claims), "%s", claims_exp(exp, ""));
	/* hand-made and right: accepted (what the rest varies is the alg) */
	raw_case(s, key, kl, HS256, tok_claims, true);
	raw_case(s, key, kl, "{\"alg\":\"HS256\"}", tok_claims, true);
	/* other spellings of HS256, signed with HMAC-SHA256 and the secret */
	raw_case(s, key, kl, "{\"alg\":\"hs256\",\"typ\":\"JWT\"}", tok_claims,
		 false);
	raw_case(s, key, kl, "{\"alg\":\"Hs256\"}", tok_claims, false);
	raw_case(s, key, kl, "{\"alg\":\"hS256\"}", tok_claims, false);
	/* no alg, or not a string */
	raw_case(s, key, kl, "{\"typ\":\"JWT\"}", tok_claims, false);
	raw_case(s, key, kl, "{\"alg\":256}", tok_claims, false);
}

static void test_alg_spelled_exactly(void **st)
{
	(void)st;
	run_case(case_alg_spelling);
}

static void case_crit(hsrv *s, const unsigned char *key, size_t kl)
{
	char exp[32], tok_claims[512];

	snprintf(exp, sizeof(exp), "%lld", (long long)(now_s() + 3600));
	snprintf(tok_claims, sizeof(tok_claims), "%s",
		 claims_exp(exp, ",\"nbf2\":1"));
	raw_case(s, key, kl,
		 "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"crit\":[\"nbf2\"]}",
		 tok_claims, false);
	raw_case(s, key, kl, "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}",
		 tok_claims, false);
	raw_case(s, key, kl, "{\"alg\":\"HS256\",\"crit\":[]}", tok_claims,
		 false);
	/* the same token without crit is fine */
	raw_case(s, key, kl, HS256, tok_claims, true);
}

static void test_crit_header_refused(void **st)
{
	(void)st;
	run_case(case_crit);
}

static void case_nbf_kinds(hsrv *s, const unsigned char *key, size_t kl)
{
	char exp[32], more[128];

	snprintf(exp, sizeof(exp), "%lld", (long long)(now_s() + 3600));
	/* a fraction counts: valid in 100.5 s is beyond the skew */
	snprintf(more, sizeof(more), ",\"nbf\":%s", half(100));
	raw_case(s, key, kl, HS256, claims_exp(exp, more), false);
	snprintf(more, sizeof(more), ",\"nbf\":%s", half(3600));
	raw_case(s, key, kl, HS256, claims_exp(exp, more), false);
	snprintf(more, sizeof(more), ",\"nbf\":%s", half(-101)); /* -100.5 */
	raw_case(s, key, kl, HS256, claims_exp(exp, more), true);
	snprintf(more, sizeof(more), ",\"nbf\":%s", half(5)); /* in skew */
	raw_case(s, key, kl, HS256, claims_exp(exp, more), true);
	raw_case(s, key, kl, HS256, claims_exp(exp, ",\"nbf\":1e300"), false);
	raw_case(s, key, kl, HS256, claims_exp(exp, ",\"nbf\":-1e300"), true);
	raw_case(s, key, kl, HS256,
		 claims_exp(exp, ",\"nbf\":9223372036854775807"), false);
	raw_case(s, key, kl, HS256,
		 claims_exp(exp, ",\"nbf\":-9223372036854775808"), true);
	/* anything but a number refuses the token, even a past time */
	raw_case(s, key, kl, HS256, claims_exp(exp, ",\"nbf\":\"0\""), false);
	raw_case(s, key, kl, HS256, claims_exp(exp, ",\"nbf\":\"1000\""),
		 false);
	raw_case(s, key, kl, HS256, claims_exp(exp, ",\"nbf\":true"), false);
	raw_case(s, key, kl, HS256, claims_exp(exp, ",\"nbf\":null"), false);
	raw_case(s, key, kl, HS256, claims_exp(exp, ",\"nbf\":[0]"), false);
	raw_case(s, key, kl, HS256, claims_exp(exp, ",\"nbf\":{}"), false);
}

static void test_nbf_float_and_types(void **st)
{
	(void)st;
	run_case(case_nbf_kinds);
}

static void case_exp_extremes(hsrv *s, const unsigned char *key, size_t kl)
{
	/* the far future, up to the last int64 (exp + skew overflowed) */
	raw_case(s, key, kl, HS256, claims_exp("9223372036854775807", ""),
		 true);
	raw_case(s, key, kl, HS256, claims_exp("9223372036854775790", ""),
		 true);
	raw_case(s, key, kl, HS256, claims_exp("1e300", ""), true);
	raw_case(s, key, kl, HS256, claims_exp(half(100), ""), true);
	/* expired 100.5 s ago; long ago; never valid */
	raw_case(s, key, kl, HS256, claims_exp(half(-101), ""), false);
	raw_case(s, key, kl, HS256, claims_exp("1.5", ""), false);
	raw_case(s, key, kl, HS256, claims_exp("-9223372036854775808", ""),
		 false);
	raw_case(s, key, kl, HS256, claims_exp("-1e300", ""), false);
	raw_case(s, key, kl, HS256, claims_exp("0", ""), false);
	/* not a number */
	raw_case(s, key, kl, HS256, claims_exp("\"9999999999\"", ""), false);
	raw_case(s, key, kl, HS256, claims_exp("null", ""), false);
	/* iat is not checked: any value, however big, is left alone */
	raw_case(s, key, kl, HS256,
		 claims_exp(half(100), ",\"iat\":9223372036854775807"), true);
	/* a far-future exp with a far-future nbf is still not valid yet */
	raw_case(s, key, kl, HS256,
		 claims_exp("9223372036854775807",
			    ",\"nbf\":9223372036854775807"),
		 false);
}

static void test_exp_extremes(void **st)
{
	(void)st;
	run_case(case_exp_extremes);
}

static void case_missing_claims(hsrv *s, const unsigned char *key, size_t kl)
{
	struct claims c;
	char *tok;

	c = good_claims(key, kl, NULL, "acme");
	tok = mint(&c);
	expect_rejected(s, tok);
	free(tok);

	c = good_claims(key, kl, "alice", NULL);
	tok = mint(&c);
	expect_rejected(s, tok);
	free(tok);

	c = good_claims(key, kl, "alice", "acme");
	c.exp = 0;
	tok = mint(&c);
	expect_rejected(s, tok);
	free(tok);
}

static void test_missing_claims(void **st)
{
	(void)st;
	run_case(case_missing_claims);
}

static void case_bad_ids(hsrv *s, const unsigned char *key, size_t kl)
{
	static const char *const bad_subs[] = {
		"al ice", "alice!", "alice/..", "al\xc3\xa9ice", "",
		/* 65 bytes */
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" "a",
	};
	static const char sub64[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
	struct claims c;
	char *tok;

	_Static_assert(sizeof(sub64) == 65, "64 bytes and a NUL");
	assert_int_equal(strlen(bad_subs[5]), 65);
	for (size_t i = 0; i < sizeof(bad_subs) / sizeof(bad_subs[0]); i++) {
		c = good_claims(key, kl, bad_subs[i], "acme");
		tok = mint(&c);
		expect_rejected(s, tok);
		free(tok);
	}
	c = good_claims(key, kl, "alice", "ac me");
	tok = mint(&c);
	expect_rejected(s, tok);
	free(tok);
	/* Every allowed character, and 64 bytes, are fine. */
	c = good_claims(key, kl, "A.z_0-9", "ws.1_X-y");
	tok = mint(&c);
	expect_accepted(s, tok, "A.z_0-9", "ws.1_X-y");
	free(tok);
	c = good_claims(key, kl, sub64, "acme");
	tok = mint(&c);
	expect_accepted(s, tok, sub64, "acme");
	free(tok);
}

static void test_sub_invalid_characters(void **st)
{
	(void)st;
	run_case(case_bad_ids);
}

static void case_garbage(hsrv *s, const unsigned char *key, size_t kl)
{
	(void)key;
	(void)kl;
	expect_rejected(s, "not.a.jwt");
	expect_rejected(s, "");
	expect_rejected(s, "eyJhbGciOiJIUzI1NiJ9");
}

static void test_garbage_token(void **st)
{
	(void)st;
	run_case(case_garbage);
}

/* ---- before and after hello ---------------------------------------------- */

static void test_request_before_hello(void **st)
{
	hsrv s;
	pc_conn *c, *a;
	proto_doc res, d;
	proto_out o;
	char ch[65];
	char *tok;

	(void)st;
	h_start(&s, "");
	a = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	assert_int_equal(h_create(a, "general", "public", ch), 0);

	c = h_connect_raw(&s);
	assert_non_null(c);
	assert_int_equal(h_req(c, &res, "ch.list", 0), 1);
	assert_false(h_ok(&res));
	assert_string_equal(h_code(&res), "UNAUTHORIZED");
	proto_doc_free(&res);
	assert_int_equal(h_req(c, &res, "send", 3, "ch", 's', ch, "body", 's',
			       "sneaky", "cmid", 's', "x1"), 1);
	assert_false(h_ok(&res));
	assert_string_equal(h_code(&res), "UNAUTHORIZED");
	proto_doc_free(&res);
	assert_int_equal(h_req(c, &res, "history", 1, "ch", 's', ch), 1);
	assert_false(h_ok(&res));
	assert_string_equal(h_code(&res), "UNAUTHORIZED");
	proto_doc_free(&res);
	assert_int_equal(h_req(c, &res, "hb", 0), 1);
	assert_false(h_ok(&res));
	assert_string_equal(h_code(&res), "UNAUTHORIZED");
	proto_doc_free(&res);

	/* Fire-and-forget before hello: an err frame naming the op. */
	proto_out_init(&o, 0, 64);
	proto_enc_req(&o, "hb", 0, 0);
	assert_int_equal(pc_send(c, &o), 0);
	proto_out_free(&o);
	assert_int_equal(h_next(c, &d, H_TIMEOUT), 1);
	assert_string_equal(h_s(&d.root, "t"), "err");
	assert_string_equal(h_code(&d), "UNAUTHORIZED");
	assert_string_equal(h_s(&d.root, "op"), "hb");
	proto_doc_free(&d);

	/* Still open: hello works now, and so does everything else. */
	tok = h_token(&s, "bob", "acme");
	hello_raw(c, tok, &res);
	free(tok);
	assert_true(h_ok(&res));
	assert_string_equal(h_s(&res.root, "user"), "bob");
	proto_doc_free(&res);
	req_ok(c, "ch.list");
	assert_int_equal(h_req(c, &res, "ch.join", 1, "ch", 's', ch), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	/* The refused send created nothing: bob's is seq 1. */
	assert_int_equal(h_send(c, ch, "hi", "b1"), 1);

	pc_close(c);
	pc_close(a);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

static void test_second_hello(void **st)
{
	hsrv s;
	pc_conn *a;
	proto_doc res;
	const msgpack_object_array *m;
	char ch[65], *tok;

	(void)st;
	h_start(&s, "");
	a = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	/* Again as alice, and as somebody else: both BAD_REQUEST. */
	tok = h_token(&s, "alice", "acme");
	hello_raw(a, tok, &res);
	free(tok);
	assert_false(h_ok(&res));
	assert_string_equal(h_code(&res), "BAD_REQUEST");
	proto_doc_free(&res);
	tok = h_token(&s, "mallory", "acme");
	hello_raw(a, tok, &res);
	free(tok);
	assert_false(h_ok(&res));
	assert_string_equal(h_code(&res), "BAD_REQUEST");
	proto_doc_free(&res);

	/* The connection goes on, still as alice. */
	req_ok(a, "hb");
	assert_int_equal(h_create(a, "mine", "private", ch), 0);
	assert_int_equal(h_req(a, &res, "ch.members", 1, "ch", 's', ch), 1);
	assert_true(h_ok(&res));
	assert_int_equal(proto_get_array(&res.root, "members", &m), 0);
	assert_int_equal(m->size, 1);
	assert_int_equal(m->ptr[0].type, MSGPACK_OBJECT_STR);
	assert_int_equal(m->ptr[0].via.str.size, 5);
	assert_memory_equal(m->ptr[0].via.str.ptr, "alice", 5);
	proto_doc_free(&res);

	pc_close(a);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* A hello without a rid and a bad token: an err frame naming hello, then
 * 4001. */
static void test_bad_token_without_rid(void **st)
{
	hsrv s;
	pc_conn *c;
	proto_out o;
	proto_doc d;

	(void)st;
	h_start(&s, "");
	c = h_connect_raw(&s);
	assert_non_null(c);
	proto_out_init(&o, 0, 128);
	proto_enc_hello(&o, 0, "not.a.jwt", NULL, NULL, 0);
	assert_int_equal(pc_send(c, &o), 0);
	proto_out_free(&o);
	assert_int_equal(h_next(c, &d, H_TIMEOUT), 1);
	assert_string_equal(h_s(&d.root, "t"), "err");
	assert_string_equal(h_code(&d), "UNAUTHORIZED");
	assert_string_equal(h_s(&d.root, "op"), "hello");
	proto_doc_free(&d);
	expect_closed(c, 4001, H_TIMEOUT);
	pc_close(c);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* A malformed resume is BAD_REQUEST; the connection may say hello again. */
static void test_hello_bad_resume(void **st)
{
	hsrv s;
	pc_conn *c;
	proto_doc res;
	char *tok;

	(void)st;
	h_start(&s, "");
	tok = h_token(&s, "alice", "acme");
	c = h_connect_raw(&s);
	assert_non_null(c);
	assert_int_equal(h_req(c, &res, "hello", 2, "token", 's', tok,
			       "resume", 's', "everything"), 1);
	assert_false(h_ok(&res));
	assert_string_equal(h_code(&res), "BAD_REQUEST");
	proto_doc_free(&res);
	{
		const char *chs[] = { "C0123456789abcdef" };
		uint64_t rid = 4242;
		proto_out o;

		/* a seq that is a string */
		proto_out_init(&o, 0, 512);
		proto_enc_req(&o, "hello", rid, 2);
		proto_pk_cstr(&o.pk, "token");
		proto_pk_cstr(&o.pk, tok);
		proto_pk_cstr(&o.pk, "resume");
		msgpack_pack_map(&o.pk, 1);
		proto_pk_cstr(&o.pk, chs[0]);
		proto_pk_cstr(&o.pk, "12");
		assert_int_equal(pc_request(c, &o, rid, &res, H_TIMEOUT), 1);
		proto_out_free(&o);
		assert_false(h_ok(&res));
		assert_string_equal(h_code(&res), "BAD_REQUEST");
		proto_doc_free(&res);
	}
	/* Still not authenticated ... */
	assert_int_equal(h_req(c, &res, "ch.list", 0), 1);
	assert_string_equal(h_code(&res), "UNAUTHORIZED");
	proto_doc_free(&res);
	/* ... until a good hello. */
	hello_raw(c, tok, &res);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	req_ok(c, "ch.list");
	free(tok);
	pc_close(c);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* A client may send requests right behind its hello, without waiting for
 * the answer: they come after a successful hello on the connection, so
 * they are served. Two hellos in a row: the second is BAD_REQUEST. */
static void test_hello_pipelined(void **st)
{
	hsrv s;
	pc_conn *a, *c;
	proto_out o;
	char ch[65], *tok;
	bool seen_hello = false, seen_list = false, seen_send = false,
	     seen_hello2 = false;

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	assert_int_equal(h_create(a, "general", "private", ch), 0);
	pc_close(a);

	tok = h_token(&s, "alice", "acme");
	c = h_connect_raw(&s);
	assert_non_null(c);
	/* Four messages back to back, none waiting for an answer ... */
	for (int i = 0; i < 4; i++) {
		proto_out_init(&o, 0, 1024);
		if (i < 2)
			proto_enc_hello(&o, 1 + (uint64_t)i, tok, NULL, NULL,
					0);
		else if (i == 2)
			proto_enc_req(&o, "ch.list", 3, 0);
		else
			proto_enc_send(&o, 4, ch, "right away", 10, "p1", 0,
				       NULL, 0);
		assert_int_equal(pc_queue(c, 2, o.data, o.len), 0);
		proto_out_free(&o);
	}
	free(tok);
	/* ... in one write, as a busy client's socket would carry them. */
	while (pc_pending(c)) {
		assert_int_equal(pc_flush(c), 0);
		if (pc_pending(c))
			usleep(1000);
	}
	while (!(seen_hello && seen_hello2 && seen_list && seen_send)) {
		proto_doc d;
		uint64_t rid;

		assert_int_equal(h_expect(c, "res", &d, H_TIMEOUT), 1);
		rid = h_u(&d.root, "rid");
		switch (rid) {
		case 1:
			assert_true(h_ok(&d));
			seen_hello = true;
			break;
		case 2:
			assert_string_equal(h_code(&d), "BAD_REQUEST");
			seen_hello2 = true;
			break;
		case 3:
			if (!h_ok(&d))
				fail_msg("ch.list right after hello: %s",
					 h_code(&d));
			seen_list = true;
			break;
		case 4:
			if (!h_ok(&d))
				fail_msg("send right after hello: %s",
					 h_code(&d));
			assert_int_equal(h_u(&d.root, "seq"), 1);
			seen_send = true;
			break;
		default:
			fail_msg("unexpected rid %llu",
				 (unsigned long long)rid);
		}
		proto_doc_free(&d);
	}
	pc_close(c);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

static void test_hello_timeout(void **st)
{
	hsrv s;
	pc_conn *a, *n1, *n2;
	proto_doc res;
	uint64_t t0, dt;

	(void)st;
	/* 1.5 s: long enough that alice's own hello and n2's request fit
	 * in it on a slow machine */
	h_start(&s, "--hello-timeout-ms 1500");
	a = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	t0 = now_ms();
	n1 = h_connect_raw(&s);
	n2 = h_connect_raw(&s);
	assert_non_null(n1);
	assert_non_null(n2);
	/* n2 talks, but never says hello: that does not count. */
	assert_int_equal(h_req(n2, &res, "ch.list", 0), 1);
	assert_string_equal(h_code(&res), "UNAUTHORIZED");
	proto_doc_free(&res);

	expect_closed(n1, 4001, 6000);
	dt = now_ms() - t0;
	assert_true(dt >= 1400); /* not before the deadline */
	assert_true(dt < 5000);  /* and not long after it */
	expect_closed(n2, 4001, 6000);

	/* Well past the deadline, the authenticated connection stays. */
	usleep(2000 * 1000);
	req_ok(a, "hb");
	req_ok(a, "ch.list");
	{
		proto_doc d;

		assert_int_equal(h_next(a, &d, 300), 0); /* no close either */
	}
	pc_close(n1);
	pc_close(n2);
	pc_close(a);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* ---- devices ------------------------------------------------------------- */

#define DEVICES 16

/* A 17th hello of a user: refused with FORBIDDEN, then closed 4029. */
static void expect_too_many(hsrv *s, const char *user)
{
	pc_conn *c = h_connect_raw(s);
	char *tok = h_token(s, user, "acme");
	proto_doc res;

	assert_non_null(c);
	hello_raw(c, tok, &res);
	free(tok);
	assert_false(h_ok(&res));
	assert_string_equal(h_code(&res), "FORBIDDEN");
	proto_doc_free(&res);
	expect_closed(c, 4029, H_TIMEOUT);
	pc_close(c);
}

static void test_device_limit(void **st)
{
	hsrv s;
	pc_conn *dev[DEVICES], *b, *again = NULL;
	char ch[65];
	uint64_t end;

	(void)st;
	h_start(&s, "--shards 2");
	for (int i = 0; i < DEVICES; i++) {
		dev[i] = h_connect(&s, "alice", "acme", NULL);
		if (!dev[i])
			fail_msg("device %d of 16 refused", i + 1);
	}
	expect_too_many(&s, "alice");

	/* All 16 keep working; one makes a channel, all hear of it. */
	for (int i = 0; i < DEVICES; i++)
		req_ok(dev[i], "hb");
	assert_int_equal(h_create(dev[0], "room", "private", ch), 0);
	assert_int_equal(h_send(dev[0], ch, "hi", "a1"), 1);
	for (int i = 0; i < DEVICES; i++) {
		proto_doc d;

		assert_int_equal(h_expect(dev[i], "ev", &d, H_TIMEOUT), 1);
		assert_string_equal(h_s(&d.root, "ch"), ch);
		assert_int_equal(h_u(&d.root, "seq"), 1);
		proto_doc_free(&d);
	}

	/* A 17th hello without a rid: an err frame naming hello, 4029. */
	{
		pc_conn *c = h_connect_raw(&s);
		char *tok = h_token(&s, "alice", "acme");
		proto_out o;
		proto_doc d;

		assert_non_null(c);
		proto_out_init(&o, 0, 512);
		proto_enc_hello(&o, 0, tok, NULL, NULL, 0);
		free(tok);
		assert_int_equal(pc_send(c, &o), 0);
		proto_out_free(&o);
		assert_int_equal(h_next(c, &d, H_TIMEOUT), 1);
		assert_string_equal(h_s(&d.root, "t"), "err");
		assert_string_equal(h_code(&d), "FORBIDDEN");
		assert_string_equal(h_s(&d.root, "op"), "hello");
		proto_doc_free(&d);
		expect_closed(c, 4029, H_TIMEOUT);
		pc_close(c);
	}

	/* Another user is not affected, nor the same id in another
	 * workspace. */
	b = h_connect(&s, "bob", "acme", NULL);
	assert_non_null(b);
	req_ok(b, "hb");
	{
		pc_conn *o = h_connect(&s, "alice", "other", NULL);

		assert_non_null(o);
		req_ok(o, "hb");
		pc_close(o);
	}

	/* A device goes: its slot is free again (detach is asynchronous). */
	pc_close(dev[DEVICES - 1]);
	end = now_ms() + 5000;
	while (!again && now_ms() < end) {
		again = h_connect(&s, "alice", "acme", NULL);
		if (!again)
			usleep(50 * 1000);
	}
	assert_non_null(again);
	dev[DEVICES - 1] = again;
	req_ok(again, "hb");
	/* ... and only that one. */
	expect_too_many(&s, "alice");
	for (int i = 0; i < DEVICES; i++)
		req_ok(dev[i], "hb");

	for (int i = 0; i < DEVICES; i++)
		pc_close(dev[i]);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* Devices that go away at any point, even before their hello is answered,
 * give their slot back. */
static void test_device_slots_freed_by_abrupt_close(void **st)
{
	hsrv s;
	pc_conn *dev[DEVICES];
	char *tok;
	int n = 0;
	uint64_t end;

	(void)st;
	h_start(&s, "--shards 2");
	tok = h_token(&s, "alice", "acme");
	for (int i = 0; i < 3 * DEVICES; i++) {
		pc_conn *c = h_connect_raw(&s);
		proto_out o;

		assert_non_null(c);
		proto_out_init(&o, 0, 512);
		proto_enc_hello(&o, 1, tok, NULL, NULL, 0);
		assert_int_equal(pc_send(c, &o), 0);
		proto_out_free(&o);
		if (i % 2) {
			proto_doc res;

			/* half of them wait for the answer first */
			assert_int_equal(h_expect(c, "res", &res, H_TIMEOUT),
					 1);
			assert_true(h_ok(&res));
			proto_doc_free(&res);
		}
		pc_close(c);
	}
	free(tok);
	/* All 16 slots come free (detach is asynchronous: retry a while). */
	end = now_ms() + 5000;
	while (n < DEVICES && now_ms() < end) {
		dev[n] = h_connect(&s, "alice", "acme", NULL);
		if (dev[n])
			n++;
		else
			usleep(50 * 1000);
	}
	assert_int_equal(n, DEVICES);
	expect_too_many(&s, "alice");
	for (int i = 0; i < DEVICES; i++) {
		req_ok(dev[i], "hb");
		pc_close(dev[i]);
	}
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

/* ---- workspaces ---------------------------------------------------------- */

/* The HMAC key is the secret file's bytes less ALL trailing whitespace
 * (the contract), not only a line end: a file that an editor left with
 * "  \t\r\n" at its end takes tokens signed with the bare secret. */
static void test_secret_trailing_whitespace(void **st)
{
	static const char bare[] = "e2e-test-secret-0123456789abcdef";
	hsrv s;
	FILE *f;
	char *tok;
	pc_conn *c;
	proto_doc res;

	(void)st;
	h_start(&s, "");
	assert_int_equal(h_stop(&s), 0);
	f = fopen(s.secret, "w");
	assert_non_null(f);
	fprintf(f, "%s  \t\r\n", bare);
	fclose(f);
	h_restart(&s);
	tok = auth_mint((const uint8_t *)bare, strlen(bare), "alice", "acme",
			now_s() + 600, NULL, NULL);
	c = h_connect_raw(&s);
	assert_non_null(c);
	assert_int_equal(h_req(c, &res, "hello", 1, "token", 's', tok), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	free(tok);
	pc_close(c);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

static void test_workspace_isolation(void **st)
{
	hsrv s;
	pc_conn *a, *b, *a_other;
	proto_doc hr, res;
	const msgpack_object_array *chs;
	char pub[65], priv[65], theirs[65];

	(void)st;
	h_start(&s, "");
	a = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	assert_int_equal(h_create(a, "general", "public", pub), 0);
	assert_int_equal(h_create(a, "secret", "private", priv), 0);
	assert_int_equal(h_send(a, pub, "acme only", "a1"), 1);

	/* bob of "other": hello and ch.list show nothing of acme. */
	b = h_connect(&s, "bob", "other", &hr);
	assert_non_null(b);
	assert_string_equal(h_s(&hr.root, "ws"), "other");
	assert_int_equal(proto_get_array(&hr.root, "channels", &chs), 0);
	assert_int_equal(chs->size, 0);
	proto_doc_free(&hr);
	assert_int_equal(h_req(b, &res, "ch.list", 0), 1);
	assert_true(h_ok(&res));
	assert_int_equal(proto_get_array(&res.root, "channels", &chs), 0);
	assert_int_equal(chs->size, 0);
	proto_doc_free(&res);
	/* acme's channels do not exist for him. */
	assert_int_equal(h_req(b, &res, "history", 1, "ch", 's', pub), 1);
	assert_string_equal(h_code(&res), "NOT_FOUND");
	proto_doc_free(&res);
	assert_int_equal(h_req(b, &res, "ch.join", 1, "ch", 's', pub), 1);
	assert_string_equal(h_code(&res), "NOT_FOUND");
	proto_doc_free(&res);

	/* The same user id in another workspace is another user. */
	a_other = h_connect(&s, "alice", "other", &hr);
	assert_non_null(a_other);
	assert_int_equal(proto_get_array(&hr.root, "channels", &chs), 0);
	assert_int_equal(chs->size, 0);
	proto_doc_free(&hr);

	/* bob's own public channel shows for him, not for acme. */
	assert_int_equal(h_create(b, "general", "public", theirs), 0);
	assert_int_equal(h_req(a_other, &res, "ch.list", 0), 1);
	assert_int_equal(proto_get_array(&res.root, "channels", &chs), 0);
	assert_int_equal(chs->size, 1);
	assert_string_equal(h_s(&chs->ptr[0], "id"), theirs);
	proto_doc_free(&res);
	assert_int_equal(h_req(a, &res, "ch.list", 0), 1);
	assert_int_equal(proto_get_array(&res.root, "channels", &chs), 0);
	assert_int_equal(chs->size, 2);
	for (uint32_t i = 0; i < chs->size; i++) {
		const char *id = h_s(&chs->ptr[i], "id");

		assert_true(!strcmp(id, pub) || !strcmp(id, priv));
	}
	proto_doc_free(&res);

	pc_close(a);
	pc_close(a_other);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello_ok),
		cmocka_unit_test(test_hello_reports_configured_limits),
		cmocka_unit_test(test_bad_signature),
		cmocka_unit_test(test_alg_none),
		cmocka_unit_test(test_hs512_with_right_secret),
		cmocka_unit_test(test_expired),
		cmocka_unit_test(test_nbf_in_future),
		cmocka_unit_test(test_alg_spelled_exactly),
		cmocka_unit_test(test_crit_header_refused),
		cmocka_unit_test(test_nbf_float_and_types),
		cmocka_unit_test(test_exp_extremes),
		cmocka_unit_test(test_missing_claims),
		cmocka_unit_test(test_sub_invalid_characters),
		cmocka_unit_test(test_garbage_token),
		cmocka_unit_test(test_request_before_hello),
		cmocka_unit_test(test_second_hello),
		cmocka_unit_test(test_bad_token_without_rid),
		cmocka_unit_test(test_hello_bad_resume),
		cmocka_unit_test(test_hello_pipelined),
		cmocka_unit_test(test_hello_timeout),
		cmocka_unit_test(test_device_limit),
		cmocka_unit_test(test_device_slots_freed_by_abrupt_close),
		cmocka_unit_test(test_secret_trailing_whitespace),
		cmocka_unit_test(test_workspace_isolation),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
