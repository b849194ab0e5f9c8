/*
 * Working on messages together: edit (a new seq, told to every device,
 * history shows the text and when it changed, the thread view too), edits
 * (every version, the author only), delete (the author only; the text
 * leaves history and the raw log, edits' text included, and so do its
 * reactions), react (who reacted, in order; repeats are no-ops that send
 * nothing), all of them as channel events a resuming client catches up on;
 * read state (exact unread and mention counts on every device, markers
 * that never move back, across kill -9), typing (throttled, members only,
 * also in a channel of thousands), the send rate covering edit, delete and
 * react, and everything acknowledged surviving kill -9.
 */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/e2e/harness.h"

#define FAST "--shards 2 --send-rate 100000 --send-burst 100000"
#define ANY UINT64_MAX /* check_counts: read_seq not checked */

#define THUMBS "\xf0\x9f\x91\x8d" /* U+1F44D, 4 bytes */
#define TADA   "\xf0\x9f\x8e\x89" /* U+1F389 */

/* ---- helpers ------------------------------------------------------------- */

static void sleep_ms(unsigned ms) { usleep(ms * 1000u); }

/* Copy of the string at key (h_s() has one static buffer). */
static void str_at(const msgpack_object *m, const char *key, char *out)
{
	snprintf(out, 65, "%.64s", h_s(m, key));
}

static const msgpack_object_array *arr_at(const msgpack_object *m,
					  const char *key)
{
	const msgpack_object_array *a = NULL;

	if (proto_get_array(m, key, &a))
		fail_msg("no array at %s", key);
	return a;
}

static bool bool_at(const msgpack_object *m, const char *key)
{
	bool b = false;

	assert_int_equal(proto_get_bool(m, key, &b), 0);
	return b;
}

/* The whole object as text (for comparing two answers). */
static char *dump(const msgpack_object *o)
{
	size_t cap = 1u << 20;
	char *buf = malloc(cap);

	assert_non_null(buf);
	msgpack_object_print_buffer(buf, cap, *o);
	return buf;
}

/* Fail, showing o (as much as fits; nothing is left allocated). */
#define FAIL_SHOWING(o, fmt, ...)                                          \
	do {                                                               \
		char shown_[4096];                                         \
									   \
		msgpack_object_print_buffer(shown_, sizeof(shown_), *(o)); \
		fail_msg(fmt ": %s", __VA_ARGS__, shown_);                 \
	} while (0)

/* Whether any string (key or value) anywhere in o contains needle. */
static bool has_text(const msgpack_object *o, const char *needle)
{
	size_t n = strlen(needle);

	switch (o->type) {
	case MSGPACK_OBJECT_STR:
		return memmem(o->via.str.ptr, o->via.str.size, needle, n) != NULL;
	case MSGPACK_OBJECT_BIN:
		return memmem(o->via.bin.ptr, o->via.bin.size, needle, n) != NULL;
	case MSGPACK_OBJECT_ARRAY:
		for (uint32_t i = 0; i < o->via.array.size; i++)
			if (has_text(&o->via.array.ptr[i], needle))
				return true;
		return false;
	case MSGPACK_OBJECT_MAP:
		for (uint32_t i = 0; i < o->via.map.size; i++)
			if (has_text(&o->via.map.ptr[i].key, needle) ||
			    has_text(&o->via.map.ptr[i].val, needle))
				return true;
		return false;
	default:
		return false;
	}
}

/* send with optional thread (0 = none) and mentions (NULL = none), which
 * must be stored as want_seq; returns its ts. */
static uint64_t send_ok(pc_conn *c, const char *ch, const char *body,
			const char *cmid, uint64_t thread,
			const char **mentions, uint64_t want_seq)
{
	proto_doc res;
	uint64_t ts;

	if (thread && mentions)
		h_req_ok(c, &res, "send", 5, "ch", 's', ch, "body", 's', body,
		         "cmid", 's', cmid, "thread", 'u', thread, "mentions",
		         'S', mentions);
	else if (thread)
		h_req_ok(c, &res, "send", 4, "ch", 's', ch, "body", 's', body,
		         "cmid", 's', cmid, "thread", 'u', thread);
	else if (mentions)
		h_req_ok(c, &res, "send", 4, "ch", 's', ch, "body", 's', body,
		         "cmid", 's', cmid, "mentions", 'S', mentions);
	else
		h_req_ok(c, &res, "send", 3, "ch", 's', ch, "body", 's', body,
		         "cmid", 's', cmid);
	if (h_u(&res.root, "seq") != want_seq)
		fail_msg("send %s: seq %llu, expected %llu", cmid,
			 (unsigned long long)h_u(&res.root, "seq"),
			 (unsigned long long)want_seq);
	ts = h_u(&res.root, "ts");
	proto_doc_free(&res);
	return ts;
}

static void edit_ok(pc_conn *c, const char *ch, uint64_t target,
		    const char *body, uint64_t want_seq)
{
	proto_doc res;

	h_req_ok(c, &res, "edit", 3, "ch", 's', ch, "target", 'u', target,
	         "body", 's', body);
	assert_int_equal(h_u(&res.root, "seq"), want_seq);
	proto_doc_free(&res);
}

static void delete_ok(pc_conn *c, const char *ch, uint64_t target,
		      uint64_t want_seq)
{
	proto_doc res;

	h_req_ok(c, &res, "delete", 2, "ch", 's', ch, "target", 'u', target);
	assert_int_equal(h_u(&res.root, "seq"), want_seq);
	proto_doc_free(&res);
}

/* A reaction that changes something: stored as want_seq. */
static void react_ok(pc_conn *c, const char *ch, uint64_t target,
		     const char *emoji, bool on, uint64_t want_seq)
{
	proto_doc res;

	h_req_ok(c, &res, "react", 4, "ch", 's', ch, "target", 'u', target,
	         "emoji", 's', emoji, "on", 'b', (int)on);
	assert_null(proto_get(&res.root, "noop"));
	assert_int_equal(h_u(&res.root, "seq"), want_seq);
	proto_doc_free(&res);
}

/* A reaction that is already so: {noop:true}, no seq. */
static void react_noop(pc_conn *c, const char *ch, uint64_t target,
		       const char *emoji, bool on)
{
	proto_doc res;

	h_req_ok(c, &res, "react", 4, "ch", 's', ch, "target", 'u', target,
	         "emoji", 's', emoji, "on", 'b', (int)on);
	assert_true(bool_at(&res.root, "noop"));
	assert_null(proto_get(&res.root, "seq"));
	proto_doc_free(&res);
}

/* The next ev frame on c is seq of ch, of kind k, from `from`; the doc is
 * left in d. */
static void next_ev(pc_conn *c, const char *ch, uint64_t seq, const char *k,
		    const char *from, proto_doc *d)
{
	if (h_expect(c, "ev", d, H_TIMEOUT) != 1)
		fail_msg("no event seq %llu (%s)", (unsigned long long)seq, k);
	assert_string_equal(h_s(&d->root, "ch"), ch);
	if (h_u(&d->root, "seq") != seq)
		fail_msg("event seq %llu, expected %llu",
			 (unsigned long long)h_u(&d->root, "seq"),
			 (unsigned long long)seq);
	assert_string_equal(h_s(&d->root, "k"), k);
	assert_string_equal(h_s(&d->root, "from"), from);
	assert_true(h_u(&d->root, "ts") > 1600000000000ull);
}

static void skip_evs(pc_conn *c, const char *ch, uint64_t from_seq,
		     uint64_t to_seq)
{
	for (uint64_t seq = from_seq; seq <= to_seq; seq++) {
		proto_doc d;

		assert_int_equal(h_expect(c, "ev", &d, H_TIMEOUT), 1);
		assert_string_equal(h_s(&d.root, "ch"), ch);
		assert_int_equal(h_u(&d.root, "seq"), seq);
		proto_doc_free(&d);
	}
}

/* The message seq in a history answer (NULL if absent). */
static const msgpack_object *find_msg(const proto_doc *res, uint64_t seq)
{
	const msgpack_object_array *a = arr_at(&res->root, "msgs");

	for (uint32_t i = 0; i < a->size; i++)
		if (h_u(&a->ptr[i], "seq") == seq)
			return &a->ptr[i];
	return NULL;
}

/* The users who reacted with emoji on m, comma-separated in the order
 * given, into out; false when the emoji is not there at all. Also counts
 * the emoji kinds into *kinds. */
static bool reactors(const msgpack_object *m, const char *emoji, char *out,
		     size_t cap, uint32_t *kinds)
{
	const msgpack_object_map *r = NULL;
	size_t el = strlen(emoji);
	bool found = false;

	out[0] = 0;
	*kinds = 0;
	if (proto_get_map(m, "reactions", &r))
		return false;
	*kinds = r->size;
	for (uint32_t i = 0; i < r->size; i++) {
		const msgpack_object *k = &r->ptr[i].key;
		const msgpack_object *v = &r->ptr[i].val;

		assert_int_equal(k->type, MSGPACK_OBJECT_STR);
		if (k->via.str.size != el || memcmp(k->via.str.ptr, emoji, el))
			continue;
		found = true;
		assert_int_equal(v->type, MSGPACK_OBJECT_ARRAY);
		for (uint32_t j = 0; j < v->via.array.size; j++) {
			const msgpack_object *u = &v->via.array.ptr[j];
			size_t n = strlen(out);

			assert_int_equal(u->type, MSGPACK_OBJECT_STR);
			snprintf(out + n, cap - n, "%s%.*s", n ? "," : "",
				 (int)u->via.str.size, u->via.str.ptr);
		}
	}
	return found;
}

/* History of ch (thread 0: the main view), up to 200 messages. */
static void history(pc_conn *c, const char *ch, uint64_t thread,
		    proto_doc *res)
{
	if (thread)
		h_req_ok(c, res, "history", 3, "ch", 's', ch, "thread", 'u',
		         thread, "limit", 'u', (uint64_t)200);
	else
		h_req_ok(c, res, "history", 2, "ch", 's', ch, "limit", 'u',
		         (uint64_t)200);
}

/* Message seq in that history has exactly want_users (comma-separated,
 * in order; "": the emoji is absent) reacting with emoji, and want_kinds
 * emoji in all. */
static void check_reactions(pc_conn *c, const char *ch, uint64_t thread,
			    uint64_t seq, const char *emoji,
			    const char *want_users, uint32_t want_kinds)
{
	proto_doc res;
	const msgpack_object *m;
	char got[512];
	uint32_t kinds;
	bool found;

	history(c, ch, thread, &res);
	m = find_msg(&res, seq);
	if (!m)
		fail_msg("message %llu not in history", (unsigned long long)seq);
	found = reactors(m, emoji, got, sizeof(got), &kinds);
	if (!*want_users && found)
		fail_msg("reaction %s still there: [%s]", emoji, got);
	if (*want_users && !found)
		fail_msg("reaction %s missing", emoji);
	assert_string_equal(got, want_users);
	assert_int_equal(kinds, want_kinds);
	proto_doc_free(&res);
}

/* The entry for id in a "channels" list (fails if absent). */
static const msgpack_object *find_ch(const proto_doc *res, const char *id)
{
	const msgpack_object_array *a = arr_at(&res->root, "channels");

	for (uint32_t i = 0; i < a->size; i++)
		if (!strcmp(h_s(&a->ptr[i], "id"), id))
			return &a->ptr[i];
	fail_msg("channel %s not listed", id);
	return NULL;
}

static void check_counts(const msgpack_object *e, uint64_t last_seq,
			 uint64_t read_seq, uint64_t unread, uint64_t mentions)
{
	char ch[65];

	str_at(e, "id", ch);
	assert_non_null(proto_get(e, "last_seq"));
	assert_non_null(proto_get(e, "read_seq"));
	assert_non_null(proto_get(e, "unread"));
	assert_non_null(proto_get(e, "mentions"));
	if (h_u(e, "last_seq") != last_seq ||
	    (read_seq != ANY && h_u(e, "read_seq") != read_seq) ||
	    h_u(e, "unread") != unread || h_u(e, "mentions") != mentions)
		fail_msg("%s: last_seq %llu read_seq %llu unread %llu "
			 "mentions %llu; expected %llu %lld %llu %llu",
			 ch, (unsigned long long)h_u(e, "last_seq"),
			 (unsigned long long)h_u(e, "read_seq"),
			 (unsigned long long)h_u(e, "unread"),
			 (unsigned long long)h_u(e, "mentions"),
			 (unsigned long long)last_seq,
			 read_seq == ANY ? -1ll : (long long)read_seq,
			 (unsigned long long)unread,
			 (unsigned long long)mentions);
}

static void list_counts(pc_conn *c, const char *ch, uint64_t last_seq,
			uint64_t read_seq, uint64_t unread, uint64_t mentions)
{
	proto_doc res;

	h_req_ok(c, &res, "ch.list", 0);
	check_counts(find_ch(&res, ch), last_seq, read_seq, unread, mentions);
	proto_doc_free(&res);
}

/* last_seq of ch through ch.list */
static uint64_t last_seq(pc_conn *c, const char *ch)
{
	proto_doc res;
	uint64_t v;

	h_req_ok(c, &res, "ch.list", 0);
	v = h_u(find_ch(&res, ch), "last_seq");
	proto_doc_free(&res);
	return v;
}

/* A new device of user: its hello's counts for ch; the connection is
 * returned. */
static pc_conn *hello_counts(hsrv *s, const char *user, const char *ch,
			     uint64_t last_seq, uint64_t read_seq,
			     uint64_t unread, uint64_t mentions)
{
	proto_doc res;
	pc_conn *c = h_connect(s, user, "acme", &res);

	assert_non_null(c);
	check_counts(find_ch(&res, ch), last_seq, read_seq, unread, mentions);
	proto_doc_free(&res);
	return c;
}

static void read_to(pc_conn *c, const char *ch, uint64_t seq)
{
	proto_doc res;

	h_req_ok(c, &res, "read", 2, "ch", 's', ch, "seq", 'u', seq);
	proto_doc_free(&res);
}

static void expect_read(pc_conn *c, const char *ch, uint64_t seq)
{
	proto_doc d;

	if (h_expect(c, "read", &d, H_TIMEOUT) != 1)
		fail_msg("no read frame for seq %llu", (unsigned long long)seq);
	assert_string_equal(h_s(&d.root, "ch"), ch);
	assert_int_equal(h_u(&d.root, "seq"), seq);
	proto_doc_free(&d);
}

/* The raw event log of ch (all of it, up to 1000). */
static void events(pc_conn *c, const char *ch, uint64_t after, proto_doc *res)
{
	h_req_ok(c, res, "events", 3, "ch", 's', ch, "after", 'u', after,
	         "limit", 'u', (uint64_t)1000);
}

/* ---- edit ---------------------------------------------------------------- */

/* The edit event as a member's device sees it. */
static uint64_t check_edit_ev(pc_conn *c, const char *ch, uint64_t seq,
			      const char *from, uint64_t target,
			      const char *body)
{
	proto_doc d;
	uint64_t ts;

	next_ev(c, ch, seq, "edit", from, &d);
	assert_int_equal(h_u(&d.root, "target"), target);
	assert_string_equal(h_s(&d.root, "body"), body);
	ts = h_u(&d.root, "ts");
	proto_doc_free(&d);
	return ts;
}

static void test_edit(void **st)
{
	hsrv s;
	pc_conn *a1, *a2, *b, *c, *e;
	char ch[65], priv[65];
	proto_doc res;
	const msgpack_object *m;
	uint64_t ts1, ts2, tr;
	char *big;

	(void)st;
	h_start(&s, FAST);
	a1 = h_connect_ok(&s, "alice", "acme");
	a2 = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	c = h_connect_ok(&s, "carol", "acme");
	e = h_connect_ok(&s, "eve", "other");
	h_create_ok(a1, "general", "public", ch);
	h_join_ok(b, ch);
	send_ok(a1, ch, "hello", "a-1", 0, NULL, 1);
	send_ok(b, ch, "from bob", "b-2", 0, NULL, 2);
	send_ok(a1, ch, "a reply", "a-3", 1, NULL, 3);
	skip_evs(a1, ch, 1, 3);
	skip_evs(a2, ch, 1, 3);
	skip_evs(b, ch, 1, 3);

	/* The author edits: a new seq, and every device of every member
	 * hears of it, the author's other device and the sending one too */
	edit_ok(a1, ch, 1, "hello, edited", 4);
	ts1 = check_edit_ev(a2, ch, 4, "alice", 1, "hello, edited");
	assert_int_equal(check_edit_ev(b, ch, 4, "alice", 1, "hello, edited"),
			 ts1);
	check_edit_ev(a1, ch, 4, "alice", 1, "hello, edited");
	history(b, ch, 0, &res);
	m = find_msg(&res, 1);
	assert_non_null(m);
	assert_string_equal(h_s(m, "body"), "hello, edited");
	assert_string_equal(h_s(m, "cmid"), "a-1");
	assert_string_equal(h_s(m, "from"), "alice");
	assert_int_equal(h_u(m, "edited"), ts1);
	assert_null(proto_get(find_msg(&res, 2), "edited"));
	/* edit events are not messages of the main view */
	assert_int_equal(arr_at(&res.root, "msgs")->size, 2);
	proto_doc_free(&res);

	/* Again: the newest text and time */
	edit_ok(a2, ch, 1, "hello, edited twice", 5);
	ts2 = check_edit_ev(b, ch, 5, "alice", 1, "hello, edited twice");
	assert_true(ts2 >= ts1);
	history(a1, ch, 0, &res);
	m = find_msg(&res, 1);
	assert_string_equal(h_s(m, "body"), "hello, edited twice");
	assert_int_equal(h_u(m, "edited"), ts2);
	proto_doc_free(&res);

	/* Refused, each taking no seq and sending nothing */
	h_req_fail("FORBIDDEN", b, "edit", 3, "ch", 's', ch, "target", 'u',
		   (uint64_t)1, "body", 's', "bob was here");
	h_req_fail("FORBIDDEN", a1, "edit", 3, "ch", 's', ch, "target", 'u',
		   (uint64_t)2, "body", 's', "alice was here");
	/* carol may read the public channel but is no member */
	h_req_fail("FORBIDDEN", c, "edit", 3, "ch", 's', ch, "target", 'u',
		   (uint64_t)1, "body", 's', "carol");
	/* targets that are no message */
	h_req_fail("NOT_FOUND", a1, "edit", 3, "ch", 's', ch, "target", 'u',
		   (uint64_t)4, "body", 's', "an edit of an edit");
	h_req_fail("NOT_FOUND", a1, "edit", 3, "ch", 's', ch, "target", 'u',
		   (uint64_t)6, "body", 's', "the future");
	h_req_fail("NOT_FOUND", a1, "edit", 3, "ch", 's', ch, "target", 'u',
		   (uint64_t)1000000, "body", 's', "far future");
	h_req_fail("BAD_REQUEST", a1, "edit", 3, "ch", 's', ch, "target", 'u',
		   (uint64_t)0, "body", 's', "zero");
	/* too large; missing or ill-typed arguments */
	big = malloc(16 * 1024 + 2);
	memset(big, 'x', 16 * 1024 + 1);
	big[16 * 1024 + 1] = 0;
	h_req_fail("TOO_LARGE", a1, "edit", 3, "ch", 's', ch, "target", 'u',
		   (uint64_t)1, "body", 's', big);
	h_req_fail("BAD_REQUEST", a1, "edit", 2, "ch", 's', ch, "target", 'u',
		   (uint64_t)1);
	h_req_fail("BAD_REQUEST", a1, "edit", 2, "ch", 's', ch, "body", 's',
		   "no target");
	h_req_fail("BAD_REQUEST", a1, "edit", 2, "target", 'u', (uint64_t)1,
		   "body", 's', "no channel");
	h_req_fail("BAD_REQUEST", a1, "edit", 3, "ch", 's', ch, "target", 's',
		   "1", "body", 's', "target as text");
	h_req_fail("BAD_REQUEST", a1, "edit", 3, "ch", 's', ch, "target", 'u',
		   (uint64_t)1, "body", 'u', (uint64_t)7);
	/* another workspace's channel, and one that does not exist */
	h_req_fail("NOT_FOUND", e, "edit", 3, "ch", 's', ch, "target", 'u',
		   (uint64_t)1, "body", 's', "eve");
	h_req_fail("NOT_FOUND", a1, "edit", 3, "ch", 's', "Cnosuchchannel",
		   "target", 'u', (uint64_t)1, "body", 's', "nowhere");
	/* fire-and-forget: the refusal comes as an err frame naming the op */
	{
		proto_out o;
		proto_doc d;

		proto_out_init(&o, 0, 256);
		proto_enc_req(&o, "edit", 0, 3);
		proto_pk_cstr(&o.pk, "ch");
		proto_pk_cstr(&o.pk, ch);
		proto_pk_cstr(&o.pk, "target");
		msgpack_pack_uint64(&o.pk, 1);
		proto_pk_cstr(&o.pk, "body");
		proto_pk_cstr(&o.pk, "bob again");
		assert_int_equal(pc_send(b, &o), 0);
		proto_out_free(&o);
		assert_int_equal(h_expect(b, "err", &d, H_TIMEOUT), 1);
		assert_string_equal(h_s(&d.root, "code"), "FORBIDDEN");
		assert_string_equal(h_s(&d.root, "op"), "edit");
		proto_doc_free(&d);
	}
	h_expect_none(b, "ev", ch);

	/* exactly 16 KiB is allowed */
	big[16 * 1024] = 0;
	edit_ok(a1, ch, 1, big, 6);
	free(big);
	skip_evs(b, ch, 6, 6);

	/* A thread reply: the thread view shows the new text, the main view
	 * does not list it */
	edit_ok(a1, ch, 3, "a reply, edited", 7);
	tr = check_edit_ev(b, ch, 7, "alice", 3, "a reply, edited");
	history(b, ch, 1, &res);
	assert_int_equal(arr_at(&res.root, "msgs")->size, 1);
	m = find_msg(&res, 3);
	assert_non_null(m);
	assert_string_equal(h_s(m, "body"), "a reply, edited");
	assert_int_equal(h_u(m, "edited"), tr);
	assert_int_equal(h_u(m, "thread"), 1);
	proto_doc_free(&res);
	history(b, ch, 0, &res);
	assert_null(find_msg(&res, 3));
	assert_int_equal(h_u(find_msg(&res, 1), "replies"), 1);
	proto_doc_free(&res);

	/* bob edits his own */
	edit_ok(b, ch, 2, "from bob, edited", 8);
	skip_evs(a2, ch, 5, 7);
	check_edit_ev(a2, ch, 8, "bob", 2, "from bob, edited");

	/* A deleted message cannot be edited */
	delete_ok(b, ch, 2, 9);
	h_req_fail("NOT_FOUND", b, "edit", 3, "ch", 's', ch, "target", 'u',
		   (uint64_t)2, "body", 's', "back from the dead");

	/* The log holds exactly what was acknowledged, gap-free */
	events(a1, ch, 0, &res);
	{
		const msgpack_object_array *evs = arr_at(&res.root, "evs");
		static const char *const kinds[] = {
			"msg", "msg", "msg", "edit", "edit", "edit", "edit",
			"edit", "delete",
		};

		assert_int_equal(evs->size, 9);
		for (uint32_t i = 0; i < evs->size; i++) {
			assert_int_equal(h_u(&evs->ptr[i], "seq"), i + 1);
			assert_string_equal(h_s(&evs->ptr[i], "k"), kinds[i]);
		}
		assert_int_equal(h_u(&evs->ptr[3], "target"), 1);
		assert_string_equal(h_s(&evs->ptr[4], "body"),
				    "hello, edited twice");
		assert_int_equal(h_u(&evs->ptr[6], "target"), 3);
	}
	proto_doc_free(&res);

	/* A private channel does not exist for a non-member */
	h_create_ok(a1, "secret", "private", priv);
	send_ok(a1, priv, "private words", "p-1", 0, NULL, 1);
	h_req_fail("NOT_FOUND", b, "edit", 3, "ch", 's', priv, "target", 'u',
		   (uint64_t)1, "body", 's', "bob");

	pc_close(a1);
	pc_close(a2);
	pc_close(b);
	pc_close(c);
	pc_close(e);
	h_finish(&s);
}

/* ---- edits: every version ------------------------------------------------ */

static void check_versions(pc_conn *c, const char *ch, uint64_t target,
			   const char *const *bodies, const uint64_t *ts,
			   uint32_t n)
{
	proto_doc res;
	const msgpack_object_array *v;

	h_req_ok(c, &res, "edits", 2, "ch", 's', ch, "target", 'u', target);
	v = arr_at(&res.root, "versions");
	assert_int_equal(v->size, n);
	for (uint32_t i = 0; i < n; i++) {
		assert_int_equal(v->ptr[i].type, MSGPACK_OBJECT_MAP);
		assert_string_equal(h_s(&v->ptr[i], "body"), bodies[i]);
		assert_int_equal(h_u(&v->ptr[i], "ts"), ts[i]);
	}
	proto_doc_free(&res);
}

static void test_edits_versions(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char ch[65];
	static const char *const v[] = { "first draft", "second draft",
					 "third draft", "final" };
	static const char *const rv[] = { "reply", "reply, fixed" };
	uint64_t ts[4], rts[2];

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a, "general", "public", ch);
	h_join_ok(b, ch);
	ts[0] = send_ok(a, ch, v[0], "a-1", 0, NULL, 1);
	send_ok(b, ch, "bob's", "b-2", 0, NULL, 2);
	skip_evs(b, ch, 1, 2);

	/* A message never edited has one version: the original */
	check_versions(a, ch, 1, v, ts, 1);
	for (uint64_t i = 1; i < 4; i++) {
		edit_ok(a, ch, 1, v[i], 2 + i);
		ts[i] = check_edit_ev(b, ch, 2 + i, "alice", 1, v[i]);
	}
	/* The original first, then every edit in order */
	check_versions(a, ch, 1, v, ts, 4);
	for (int i = 1; i < 4; i++)
		assert_true(ts[i] >= ts[i - 1]);

	/* A reply's versions */
	rts[0] = send_ok(a, ch, rv[0], "a-6", 2, NULL, 6);
	edit_ok(a, ch, 6, rv[1], 7);
	skip_evs(b, ch, 6, 6);
	rts[1] = check_edit_ev(b, ch, 7, "alice", 6, rv[1]);
	check_versions(a, ch, 6, rv, rts, 2);

	/* The author only; targets that are no message */
	h_req_fail("FORBIDDEN", b, "edits", 2, "ch", 's', ch, "target", 'u',
		   (uint64_t)1);
	h_req_fail("FORBIDDEN", a, "edits", 2, "ch", 's', ch, "target", 'u',
		   (uint64_t)2);
	h_req_fail("NOT_FOUND", a, "edits", 2, "ch", 's', ch, "target", 'u',
		   (uint64_t)3);
	h_req_fail("NOT_FOUND", a, "edits", 2, "ch", 's', ch, "target", 'u',
		   (uint64_t)99);
	h_req_fail("BAD_REQUEST", a, "edits", 2, "ch", 's', ch, "target", 'u',
		   (uint64_t)0);
	h_req_fail("BAD_REQUEST", a, "edits", 1, "ch", 's', ch);

	/* Deleted: no versions any more */
	delete_ok(a, ch, 1, 8);
	h_req_fail("NOT_FOUND", a, "edits", 2, "ch", 's', ch, "target", 'u',
		   (uint64_t)1);
	/* the reply is untouched */
	check_versions(a, ch, 6, rv, rts, 2);

	pc_close(a);
	pc_close(b);
	h_finish(&s);
}

/* ---- delete -------------------------------------------------------------- */

static void test_delete(void **st)
{
	hsrv s;
	pc_conn *a, *b, *c;
	char ch[65];
	proto_doc res, d;
	const msgpack_object *m;
	const msgpack_object_array *evs;

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	c = h_connect_ok(&s, "carol", "acme");
	h_create_ok(a, "general", "public", ch);
	h_join_ok(b, ch);
	h_join_ok(c, ch);
	send_ok(a, ch, "the launch code is hunter2", "a-1", 0, NULL, 1);
	send_ok(b, ch, "keep it quiet", "b-2", 0, NULL, 2);
	edit_ok(a, ch, 1, "the launch code is now swordfish", 3);
	edit_ok(a, ch, 1, "the launch code is now opensesame", 4);
	react_ok(b, ch, 1, THUMBS, true, 5);
	react_ok(c, ch, 1, TADA, true, 6);
	react_ok(c, ch, 2, THUMBS, true, 7);
	skip_evs(b, ch, 1, 7);
	skip_evs(c, ch, 1, 7);
	check_reactions(a, ch, 0, 1, THUMBS, "bob", 2);

	/* The author only (or an owner: alice made the channel, so carol
	 * stands for a member who is neither; test_roles.c has owners) */
	h_req_fail("FORBIDDEN", b, "delete", 2, "ch", 's', ch, "target", 'u',
		   (uint64_t)1);
	h_req_fail("FORBIDDEN", c, "delete", 2, "ch", 's', ch, "target", 'u',
		   (uint64_t)2);
	h_req_fail("NOT_FOUND", a, "delete", 2, "ch", 's', ch, "target", 'u',
		   (uint64_t)3);
	h_req_fail("NOT_FOUND", a, "delete", 2, "ch", 's', ch, "target", 'u',
		   (uint64_t)50);
	h_req_fail("BAD_REQUEST", a, "delete", 2, "ch", 's', ch, "target", 'u',
		   (uint64_t)0);
	h_req_fail("BAD_REQUEST", a, "delete", 1, "ch", 's', ch);
	h_expect_none(b, "ev", ch);

	delete_ok(a, ch, 1, 8);
	next_ev(b, ch, 8, "delete", "alice", &d);
	assert_int_equal(h_u(&d.root, "target"), 1);
	assert_false(has_text(&d.root, "launch code"));
	proto_doc_free(&d);
	next_ev(c, ch, 8, "delete", "alice", &d);
	assert_int_equal(h_u(&d.root, "target"), 1);
	proto_doc_free(&d);

	/* History keeps its place: deleted, no text, no reactions */
	history(c, ch, 0, &res);
	assert_int_equal(arr_at(&res.root, "msgs")->size, 2);
	m = find_msg(&res, 1);
	assert_non_null(m);
	assert_true(bool_at(m, "deleted"));
	assert_non_null(proto_get(m, "body"));
	assert_string_equal(h_s(m, "body"), "");
	assert_string_equal(h_s(m, "from"), "alice");
	assert_null(proto_get(m, "reactions"));
	assert_false(has_text(&res.root, "launch code"));
	/* bob's message is untouched, its reaction too */
	m = find_msg(&res, 2);
	assert_string_equal(h_s(m, "body"), "keep it quiet");
	assert_null(proto_get(m, "deleted"));
	proto_doc_free(&res);
	check_reactions(b, ch, 0, 2, THUMBS, "carol", 1);

	/* The raw log no longer has the text anywhere: not in the message,
	 * not in its edits */
	events(b, ch, 0, &res);
	evs = arr_at(&res.root, "evs");
	assert_int_equal(evs->size, 8);
	for (uint32_t i = 0; i < evs->size; i++)
		assert_int_equal(h_u(&evs->ptr[i], "seq"), i + 1);
	assert_string_equal(h_s(&evs->ptr[0], "k"), "msg");
	assert_string_equal(h_s(&evs->ptr[2], "k"), "edit");
	assert_string_equal(h_s(&evs->ptr[3], "k"), "edit");
	assert_string_equal(h_s(&evs->ptr[7], "k"), "delete");
	if (has_text(&res.root, "launch code") || has_text(&res.root, "hunter2")
	    || has_text(&res.root, "swordfish") ||
	    has_text(&res.root, "opensesame"))
		FAIL_SHOWING(&res.root, "deleted text still in the log%s", "");
	assert_string_equal(h_s(&evs->ptr[1], "body"), "keep it quiet");
	proto_doc_free(&res);

	/* Nothing more may be done to it */
	h_req_fail("NOT_FOUND", a, "delete", 2, "ch", 's', ch, "target", 'u',
		   (uint64_t)1);
	h_req_fail("NOT_FOUND", a, "edit", 3, "ch", 's', ch, "target", 'u',
		   (uint64_t)1, "body", 's', "again");
	h_req_fail("NOT_FOUND", b, "react", 4, "ch", 's', ch, "target", 'u',
		   (uint64_t)1, "emoji", 's', TADA, "on", 'b', 1);
	h_req_fail("NOT_FOUND", b, "react", 4, "ch", 's', ch, "target", 'u',
		   (uint64_t)1, "emoji", 's', THUMBS, "on", 'b', 0);
	h_req_fail("NOT_FOUND", a, "edits", 2, "ch", 's', ch, "target", 'u',
		   (uint64_t)1);
	h_expect_none(c, "ev", ch);

	/* The numbering goes on */
	send_ok(c, ch, "what happened?", "c-9", 0, NULL, 9);
	/* a deleted thread reply leaves the thread view's text too */
	send_ok(a, ch, "in a thread: hunter2", "a-10", 2, NULL, 10);
	delete_ok(a, ch, 10, 11);
	history(b, ch, 2, &res);
	m = find_msg(&res, 10);
	assert_non_null(m);
	assert_true(bool_at(m, "deleted"));
	assert_string_equal(h_s(m, "body"), "");
	proto_doc_free(&res);
	events(b, ch, 8, &res);
	assert_int_equal(arr_at(&res.root, "evs")->size, 3);
	assert_false(has_text(&res.root, "hunter2"));
	proto_doc_free(&res);

	pc_close(a);
	pc_close(b);
	pc_close(c);
	h_finish(&s);
}

/* An edit and a delete sent back to back, the delete before the edit is
 * acknowledged: the edit's text leaves the log too (it may be still on its
 * way to disk when the delete comes). */
static void test_delete_right_after_edit(void **st)
{
	enum { K = 30 };
	hsrv s;
	pc_conn *a, *b;
	char ch[65];
	proto_doc res;
	uint64_t seq = 0;

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a, "general", "public", ch);
	h_join_ok(b, ch);
	for (int i = 0; i < K; i++) {
		char body[64], cmid[32];
		proto_out o;
		proto_doc r;
		uint64_t target;

		snprintf(body, sizeof(body), "classified %d", i);
		snprintf(cmid, sizeof(cmid), "m%d", i);
		target = ++seq;
		send_ok(a, ch, body, cmid, 0, NULL, target);

		/* edit (rid 1) and delete (rid 2), pipelined */
		snprintf(body, sizeof(body), "classified, amended %d", i);
		proto_out_init(&o, 0, 256);
		proto_enc_req(&o, "edit", 700000 + 2 * (uint64_t)i, 3);
		proto_pk_cstr(&o.pk, "ch");
		proto_pk_cstr(&o.pk, ch);
		proto_pk_cstr(&o.pk, "target");
		msgpack_pack_uint64(&o.pk, target);
		proto_pk_cstr(&o.pk, "body");
		proto_pk_cstr(&o.pk, body);
		assert_int_equal(pc_send(a, &o), 0);
		proto_out_free(&o);
		proto_out_init(&o, 0, 256);
		proto_enc_req(&o, "delete", 700001 + 2 * (uint64_t)i, 2);
		proto_pk_cstr(&o.pk, "ch");
		proto_pk_cstr(&o.pk, ch);
		proto_pk_cstr(&o.pk, "target");
		msgpack_pack_uint64(&o.pk, target);
		assert_int_equal(pc_send(a, &o), 0);
		proto_out_free(&o);
		/* both answered, both taken: one connection's requests
		 * reach the channel in the order they were sent, so the
		 * edit comes first (its target is durable) */
		for (int j = 0; j < 2; j++) {
			assert_int_equal(h_expect(a, "res", &r, H_TIMEOUT), 1);
			if (!h_ok(&r))
				fail_msg("%s refused: %s",
					 h_u(&r.root, "rid") % 2 ? "delete"
								 : "edit",
					 h_code(&r));
			seq++;
			proto_doc_free(&r);
		}
	}
	/* every seq is accounted for */
	assert_int_equal(last_seq(b, ch), seq);

	events(b, ch, 0, &res);
	assert_int_equal(arr_at(&res.root, "evs")->size, seq);
	{
		const msgpack_object_array *evs = arr_at(&res.root, "evs");
		uint32_t leaks = 0, first = 0;

		for (uint32_t i = 0; i < evs->size; i++)
			if (has_text(&evs->ptr[i], "classified") && !leaks++)
				first = i;
		if (leaks)
			FAIL_SHOWING(&evs->ptr[first], "deleted text left in "
				     "%u of %u events; the first", leaks,
				     evs->size);
	}
	proto_doc_free(&res);
	history(b, ch, 0, &res);
	assert_false(has_text(&res.root, "classified"));
	proto_doc_free(&res);

	pc_close(a);
	pc_close(b);
	h_finish(&s);
}

/* ---- react --------------------------------------------------------------- */

static void check_react_ev(pc_conn *c, const char *ch, uint64_t seq,
			   const char *from, uint64_t target,
			   const char *emoji, bool on)
{
	proto_doc d;

	next_ev(c, ch, seq, "react", from, &d);
	assert_int_equal(h_u(&d.root, "target"), target);
	assert_string_equal(h_s(&d.root, "emoji"), emoji);
	assert_int_equal(bool_at(&d.root, "on"), on);
	proto_doc_free(&d);
}

static void test_react(void **st)
{
	hsrv s;
	pc_conn *a, *b, *c, *d, *e;
	char ch[65], e64[65], e65[66];

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	c = h_connect_ok(&s, "carol", "acme");
	d = h_connect_ok(&s, "dave", "acme");
	e = h_connect_ok(&s, "eve", "other");
	h_create_ok(a, "general", "public", ch);
	h_join_ok(b, ch);
	h_join_ok(c, ch);
	send_ok(a, ch, "lunch?", "a-1", 0, NULL, 1);
	send_ok(a, ch, "in a thread", "a-2", 1, NULL, 2);
	skip_evs(a, ch, 1, 2);
	skip_evs(b, ch, 1, 2);
	skip_evs(c, ch, 1, 2);

	/* Adds: an event each, users in the order they reacted */
	react_ok(b, ch, 1, THUMBS, true, 3);
	check_react_ev(a, ch, 3, "bob", 1, THUMBS, true);
	check_react_ev(c, ch, 3, "bob", 1, THUMBS, true);
	check_react_ev(b, ch, 3, "bob", 1, THUMBS, true);
	react_ok(a, ch, 1, THUMBS, true, 4);
	react_ok(c, ch, 1, TADA, true, 5);
	react_ok(c, ch, 1, THUMBS, true, 6);
	check_react_ev(b, ch, 4, "alice", 1, THUMBS, true);
	check_react_ev(b, ch, 5, "carol", 1, TADA, true);
	check_react_ev(b, ch, 6, "carol", 1, THUMBS, true);
	skip_evs(a, ch, 4, 6);
	skip_evs(c, ch, 4, 6);
	check_reactions(d, ch, 0, 1, THUMBS, "bob,alice,carol", 2);
	check_reactions(a, ch, 0, 1, TADA, "carol", 2);

	/* The same again: a no-op, nobody hears of it */
	react_noop(b, ch, 1, THUMBS, true);
	react_noop(c, ch, 1, TADA, true);
	/* removing what one lacks: a no-op */
	react_noop(b, ch, 1, TADA, false);
	react_noop(a, ch, 1, "\xe2\x9d\xa4", false);
	h_expect_none(a, "ev", ch);
	h_expect_none(b, "ev", ch);
	check_reactions(a, ch, 0, 1, THUMBS, "bob,alice,carol", 2);

	/* Removing: an event with on=false; the order of the rest stays */
	react_ok(a, ch, 1, THUMBS, false, 7);
	check_react_ev(b, ch, 7, "alice", 1, THUMBS, false);
	check_reactions(b, ch, 0, 1, THUMBS, "bob,carol", 2);
	/* ... and back on: at the end */
	react_ok(a, ch, 1, THUMBS, true, 8);
	check_react_ev(b, ch, 8, "alice", 1, THUMBS, true);
	check_reactions(b, ch, 0, 1, THUMBS, "bob,carol,alice", 2);
	/* an emoji nobody has any more disappears */
	react_ok(c, ch, 1, TADA, false, 9);
	check_react_ev(b, ch, 9, "carol", 1, TADA, false);
	check_reactions(b, ch, 0, 1, TADA, "", 1);
	react_ok(b, ch, 1, THUMBS, false, 10);
	react_ok(c, ch, 1, THUMBS, false, 11);
	react_ok(a, ch, 1, THUMBS, false, 12);
	skip_evs(b, ch, 10, 12);
	check_reactions(b, ch, 0, 1, THUMBS, "", 0);

	/* On a thread reply: the thread view shows it */
	react_ok(b, ch, 2, TADA, true, 13);
	skip_evs(a, ch, 7, 12);
	check_react_ev(a, ch, 13, "bob", 2, TADA, true);
	check_reactions(c, ch, 1, 2, TADA, "bob", 1);

	/* The emoji is 1-64 bytes */
	memset(e64, 'e', 64);
	e64[64] = 0;
	memset(e65, 'e', 65);
	e65[65] = 0;
	react_ok(b, ch, 1, e64, true, 14);
	h_req_fail("BAD_REQUEST", b, "react", 4, "ch", 's', ch, "target", 'u',
		   (uint64_t)1, "emoji", 's', e65, "on", 'b', 1);
	h_req_fail("BAD_REQUEST", b, "react", 4, "ch", 's', ch, "target", 'u',
		   (uint64_t)1, "emoji", 's', "", "on", 'b', 1);
	/* on is required, and a bool */
	h_req_fail("BAD_REQUEST", b, "react", 3, "ch", 's', ch, "target", 'u',
		   (uint64_t)1, "emoji", 's', TADA);
	h_req_fail("BAD_REQUEST", b, "react", 4, "ch", 's', ch, "target", 'u',
		   (uint64_t)1, "emoji", 's', TADA, "on", 'u', (uint64_t)1);
	h_req_fail("BAD_REQUEST", b, "react", 3, "ch", 's', ch, "emoji", 's',
		   TADA, "on", 'b', 1);
	h_req_fail("BAD_REQUEST", b, "react", 3, "ch", 's', ch, "target", 'u',
		   (uint64_t)1, "on", 'b', 1);
	/* members only; another workspace's channel does not exist */
	h_req_fail("FORBIDDEN", d, "react", 4, "ch", 's', ch, "target", 'u',
		   (uint64_t)1, "emoji", 's', TADA, "on", 'b', 1);
	h_req_fail("NOT_FOUND", e, "react", 4, "ch", 's', ch, "target", 'u',
		   (uint64_t)1, "emoji", 's', TADA, "on", 'b', 1);
	/* on messages only */
	h_req_fail("NOT_FOUND", b, "react", 4, "ch", 's', ch, "target", 'u',
		   (uint64_t)3, "emoji", 's', TADA, "on", 'b', 1);
	h_req_fail("NOT_FOUND", b, "react", 4, "ch", 's', ch, "target", 'u',
		   (uint64_t)15, "emoji", 's', TADA, "on", 'b', 1);
	skip_evs(a, ch, 14, 14);
	h_expect_none(a, "ev", ch);

	/* The log has every change, in order */
	{
		proto_doc res;
		const msgpack_object_array *evs;

		events(d, ch, 2, &res);
		evs = arr_at(&res.root, "evs");
		assert_int_equal(evs->size, 12);
		for (uint32_t i = 0; i < evs->size; i++) {
			assert_int_equal(h_u(&evs->ptr[i], "seq"), 3 + i);
			assert_string_equal(h_s(&evs->ptr[i], "k"), "react");
			assert_non_null(proto_get(&evs->ptr[i], "on"));
		}
		assert_string_equal(h_s(&evs->ptr[4], "from"), "alice");
		assert_false(bool_at(&evs->ptr[4], "on"));
		assert_string_equal(h_s(&evs->ptr[2], "emoji"), TADA);
		proto_doc_free(&res);
	}

	pc_close(a);
	pc_close(b);
	pc_close(c);
	pc_close(d);
	pc_close(e);
	h_finish(&s);
}

/* ---- changes are channel events: resume and the log ---------------------- */

/* hello with resume {ch: seq}; the hello response must come first. */
/* Regression: a message's stored state was decoded with the 64 KiB limit
 * of a client's frame, so once its reaction lists passed that (here 22
 * users with 64-byte ids, 50 emoji each: ~70 KiB) every edit, react and
 * delete of it failed, and the author could no longer delete it. */
static void test_many_reactions(void **st)
{
	enum { USERS = 22, KINDS = 50 };
	hsrv s;
	pc_conn *a, *u[USERS];
	char ch[65], id[USERS][65], emoji[KINDS][65], got[4096], want[4096];
	proto_doc res;
	const msgpack_object *m;
	uint32_t kinds;
	uint64_t seq = 2;

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	h_create_ok(a, "general", "public", ch);
	send_ok(a, ch, "react to me", "a-1", 0, NULL, 1);
	want[0] = 0;
	for (int i = 0; i < USERS; i++) {
		snprintf(id[i], sizeof(id[i]), "u%02d-%060d", i, 0);
		u[i] = h_connect_ok(&s, id[i], "acme");
		h_join_ok(u[i], ch);
		snprintf(want + strlen(want), sizeof(want) - strlen(want),
			 "%s%s", i ? "," : "", id[i]);
	}
	for (int k = 0; k < KINDS; k++)
		snprintf(emoji[k], sizeof(emoji[k]), "e%02d-%060d", k, 0);
	for (int i = 0; i < USERS; i++)
		for (int k = 0; k < KINDS; k++)
			react_ok(u[i], ch, 1, emoji[k], true, seq++);

	/* history has every reaction, in order */
	history(a, ch, 0, &res);
	m = find_msg(&res, 1);
	assert_non_null(m);
	assert_true(reactors(m, emoji[KINDS - 1], got, sizeof(got), &kinds));
	assert_string_equal(got, want);
	assert_int_equal(kinds, KINDS);
	proto_doc_free(&res);
	/* and the message still takes changes */
	react_ok(a, ch, 1, emoji[0], true, seq++);
	react_ok(u[0], ch, 1, emoji[0], false, seq++);
	edit_ok(a, ch, 1, "edited", seq++);
	delete_ok(a, ch, 1, seq++);
	history(a, ch, 0, &res);
	m = find_msg(&res, 1);
	assert_non_null(m);
	assert_true(bool_at(m, "deleted"));
	assert_null(proto_get(m, "reactions"));
	proto_doc_free(&res);
	for (int i = 0; i < USERS; i++)
		pc_close(u[i]);
	pc_close(a);
	h_finish(&s);
}

/* Regression: a reply whose state was still on its way to disk (a react
 * just before) passed for a top-level message, so a reply to a reply was
 * accepted when the two requests came together. */
static void test_reply_to_pending_reply(void **st)
{
	hsrv s;
	pc_conn *a;
	char ch[65];
	proto_out o;
	proto_doc res;
	uint64_t seq = 3;

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	h_create_ok(a, "general", "public", ch);
	send_ok(a, ch, "root", "a-1", 0, NULL, 1);
	send_ok(a, ch, "reply", "a-2", 1, NULL, 2);
	for (int i = 0; i < 20; i++) {
		char cmid[16];

		/* a react on the reply, not waited for ... */
		proto_out_init(&o, 0, 256);
		proto_enc_req(&o, "react", 900000 + (uint64_t)i, 4);
		proto_pk_cstr(&o.pk, "ch");
		proto_pk_cstr(&o.pk, ch);
		proto_pk_cstr(&o.pk, "target");
		msgpack_pack_uint64(&o.pk, 2);
		proto_pk_cstr(&o.pk, "emoji");
		proto_pk_cstr(&o.pk, THUMBS);
		proto_pk_cstr(&o.pk, "on");
		if (i % 2)
			msgpack_pack_false(&o.pk);
		else
			msgpack_pack_true(&o.pk);
		assert_int_equal(pc_send(a, &o), 0);
		proto_out_free(&o);
		seq++;
		/* ... then a reply to the reply, in the same breath */
		snprintf(cmid, sizeof(cmid), "rr-%d", i);
		h_req_fail("NOT_FOUND", a, "send", 4, "ch", 's', ch, "body",
			   's', "nested", "cmid", 's', cmid, "thread", 'u',
			   (uint64_t)2);
	}
	/* the root's thread has the one reply and nothing else */
	history(a, ch, 1, &res);
	assert_int_equal(arr_at(&res.root, "msgs")->size, 1);
	proto_doc_free(&res);
	history(a, ch, 0, &res);
	assert_int_equal(h_u(find_msg(&res, 1), "replies"), 1);
	assert_int_equal(h_u(find_msg(&res, 1), "last_reply"), 2);
	proto_doc_free(&res);
	/* every react was a change (on, off, ...), none lost */
	react_ok(a, ch, 2, TADA, true, seq);
	assert_int_equal(last_seq(a, ch), seq);
	pc_close(a);
	h_finish(&s);
}

static pc_conn *resume(hsrv *s, const char *user, const char *ch,
		       uint64_t seq)
{
	pc_conn *c = h_connect_raw(s);
	char *tok = h_token(s, user, "acme");
	const char *chs[] = { ch };
	proto_doc res;

	assert_non_null(c);
	assert_int_equal(pc_hello(c, tok, chs, &seq, 1, &res, H_TIMEOUT), 1);
	free(tok);
	proto_doc_free(&res);
	return c;
}

static void test_changes_resume(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char ch[65];
	proto_doc d, res;
	const msgpack_object_array *evs;

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a, "general", "public", ch);
	h_join_ok(b, ch);
	send_ok(a, ch, "one", "a-1", 0, NULL, 1);
	send_ok(b, ch, "two", "b-2", 0, NULL, 2);
	send_ok(a, ch, "three", "a-3", 0, NULL, 3);
	skip_evs(b, ch, 1, 3);
	pc_close(b);

	/* bob is away while things change */
	edit_ok(a, ch, 1, "one, edited", 4);
	react_ok(a, ch, 2, THUMBS, true, 5);
	delete_ok(a, ch, 3, 6);
	send_ok(a, ch, "four", "a-7", 0, NULL, 7);
	react_ok(a, ch, 2, THUMBS, false, 8);
	edit_ok(a, ch, 7, "four, edited", 9);

	/* ... and catches up on all of it, in order, once */
	b = resume(&s, "bob", ch, 3);
	next_ev(b, ch, 4, "edit", "alice", &d);
	assert_int_equal(h_u(&d.root, "target"), 1);
	assert_string_equal(h_s(&d.root, "body"), "one, edited");
	proto_doc_free(&d);
	next_ev(b, ch, 5, "react", "alice", &d);
	assert_int_equal(h_u(&d.root, "target"), 2);
	assert_string_equal(h_s(&d.root, "emoji"), THUMBS);
	assert_true(bool_at(&d.root, "on"));
	proto_doc_free(&d);
	next_ev(b, ch, 6, "delete", "alice", &d);
	assert_int_equal(h_u(&d.root, "target"), 3);
	proto_doc_free(&d);
	next_ev(b, ch, 7, "msg", "alice", &d);
	assert_string_equal(h_s(&d.root, "body"), "four");
	proto_doc_free(&d);
	next_ev(b, ch, 8, "react", "alice", &d);
	assert_false(bool_at(&d.root, "on"));
	proto_doc_free(&d);
	next_ev(b, ch, 9, "edit", "alice", &d);
	assert_int_equal(h_u(&d.root, "target"), 7);
	proto_doc_free(&d);
	h_expect_none(b, "ev", ch);

	/* Live again after the catch-up */
	react_ok(a, ch, 7, TADA, true, 10);
	check_react_ev(b, ch, 10, "alice", 7, TADA, true);

	/* The log lists them */
	events(b, ch, 3, &res);
	evs = arr_at(&res.root, "evs");
	assert_int_equal(evs->size, 7);
	{
		static const char *const k[] = { "edit", "react", "delete",
						 "msg", "react", "edit",
						 "react" };

		for (uint32_t i = 0; i < 7; i++) {
			assert_int_equal(h_u(&evs->ptr[i], "seq"), 4 + i);
			assert_string_equal(h_s(&evs->ptr[i], "k"), k[i]);
			assert_string_equal(h_s(&evs->ptr[i], "ch"), ch);
		}
		assert_string_equal(h_s(&evs->ptr[0], "body"), "one, edited");
		assert_int_equal(h_u(&evs->ptr[2], "target"), 3);
	}
	proto_doc_free(&res);

	/* ... and a resume from the start after a restart replays the same */
	pc_close(b);
	h_kill9(&s);
	h_restart(&s);
	b = resume(&s, "bob", ch, 0);
	for (uint64_t seq = 1; seq <= 10; seq++) {
		assert_int_equal(h_expect(b, "ev", &d, H_TIMEOUT), 1);
		assert_int_equal(h_u(&d.root, "seq"), seq);
		proto_doc_free(&d);
	}
	h_expect_none(b, "ev", ch);

	pc_close(a);
	pc_close(b);
	h_finish(&s);
}

/* ---- read state ---------------------------------------------------------- */

static void test_read_state(void **st)
{
	hsrv s;
	pc_conn *a, *b1, *b2, *b3, *c;
	char ch[65];
	const char *m_bob[] = { "bob", NULL };
	const char *m_bob2[] = { "bob", "bob", NULL };
	const char *m_carol[] = { "carol", NULL };
	const char *m_bob_carol[] = { "bob", "carol", NULL };

	(void)st;
	h_start(&s, "--shards 2");
	a = h_connect_ok(&s, "alice", "acme");
	b1 = h_connect_ok(&s, "bob", "acme");
	b2 = h_connect_ok(&s, "bob", "acme");
	c = h_connect_ok(&s, "carol", "acme");
	h_create_ok(a, "general", "public", ch);
	h_join_ok(b1, ch);
	h_join_ok(c, ch);
	send_ok(a, ch, "welcome", "a-1", 0, NULL, 1);
	read_to(b1, ch, 1);
	expect_read(b2, ch, 1);
	/* bob mentions himself: no count, and his marker moves */
	send_ok(b1, ch, "note to @bob", "b-2", 0, m_bob, 2);
	send_ok(a, ch, "one", "a-3", 0, NULL, 3);
	send_ok(a, ch, "two @bob", "a-4", 0, m_bob, 4);
	send_ok(a, ch, "three @bob @bob", "a-5", 0, m_bob2, 5);
	send_ok(a, ch, "four @carol", "a-6", 0, m_carol, 6);
	send_ok(c, ch, "five @bob @carol", "c-7", 0, m_bob_carol, 7);
	send_ok(a, ch, "six @bob", "a-8", 3, m_bob, 8);
	send_ok(a, ch, "seven", "a-9", 0, NULL, 9);
	/* bob: 3..9 unread (7), mentioned in 4, 5, 7, 8 */
	list_counts(b1, ch, 9, 2, 7, 4);
	list_counts(b2, ch, 9, 2, 7, 4);
	b3 = hello_counts(&s, "bob", ch, 9, 2, 7, 4);
	pc_close(b3);
	list_counts(c, ch, 9, 7, 2, 0);
	list_counts(a, ch, 9, 9, 0, 0);

	/* Edits, reactions and deletes are no unread messages */
	edit_ok(a, ch, 4, "two @bob (edited)", 10);
	react_ok(c, ch, 3, THUMBS, true, 11);
	delete_ok(a, ch, 1, 12);
	react_ok(a, ch, 9, TADA, true, 13);
	edit_ok(c, ch, 7, "five @bob @carol (edited)", 14);
	list_counts(b1, ch, 14, 2, 7, 4);
	list_counts(b2, ch, 14, 2, 7, 4);
	b3 = hello_counts(&s, "bob", ch, 14, 2, 7, 4);
	pc_close(b3);
	list_counts(c, ch, 14, ANY, 2, 0);
	list_counts(a, ch, 14, ANY, 0, 0);

	/* Reading moves the marker; the other device is told, not this one */
	read_to(b1, ch, 5);
	expect_read(b2, ch, 5);
	list_counts(b1, ch, 14, 5, 4, 2);
	list_counts(b2, ch, 14, 5, 4, 2);
	/* never back: the higher marker stays, and nobody is told */
	read_to(b2, ch, 3);
	read_to(b2, ch, 5);
	list_counts(b1, ch, 14, 5, 4, 2);
	list_counts(b2, ch, 14, 5, 4, 2);
	h_expect_none(b1, "read", ch);
	h_expect_none(b2, "read", ch);
	read_to(b2, ch, 7);
	expect_read(b1, ch, 7);
	list_counts(b1, ch, 14, 7, 2, 1);
	h_expect_none(b2, "read", ch);

	/* The counts survive kill -9 exactly */
	pc_close(a);
	pc_close(b1);
	pc_close(b2);
	pc_close(c);
	h_kill9(&s);
	h_restart(&s);
	b1 = hello_counts(&s, "bob", ch, 14, 7, 2, 1);
	c = hello_counts(&s, "carol", ch, 14, ANY, 2, 0);
	a = hello_counts(&s, "alice", ch, 14, ANY, 0, 0);
	b2 = h_connect_ok(&s, "bob", "acme");
	list_counts(b2, ch, 14, 7, 2, 1);
	read_to(b2, ch, 6);
	list_counts(b1, ch, 14, 7, 2, 1);

	/* and go on from there */
	send_ok(a, ch, "eight @bob", "a-15", 0, m_bob, 15);
	list_counts(b1, ch, 15, 7, 3, 2);
	list_counts(b2, ch, 15, 7, 3, 2);
	/* a marker on a change (the delete at 12) counts the messages
	 * before it as read */
	read_to(b2, ch, 12);
	expect_read(b1, ch, 12);
	list_counts(b1, ch, 15, 12, 1, 1);
	send_ok(b2, ch, "caught up", "b-16", 0, NULL, 16);
	list_counts(b1, ch, 16, 16, 0, 0);
	list_counts(a, ch, 16, 15, 1, 0);
	list_counts(c, ch, 16, ANY, 4, 0);
	/* past the end: the last seq */
	read_to(c, ch, 1000);
	list_counts(c, ch, 16, 16, 0, 0);

	pc_close(a);
	pc_close(b1);
	pc_close(b2);
	pc_close(c);
	h_finish(&s);
}

/* A user mentioned, who leaves and comes back, then is mentioned again:
 * one new mention, not a count carried over (nor one below zero). */
static void test_mentions_after_rejoin(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char ch[65];
	const char *m_bob[] = { "bob", NULL };
	proto_doc res;

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a, "general", "public", ch);
	h_join_ok(b, ch);
	send_ok(a, ch, "hi @bob", "a-1", 0, m_bob, 1);
	send_ok(a, ch, "hey @bob", "a-2", 0, m_bob, 2);
	send_ok(a, ch, "yo @bob", "a-3", 0, m_bob, 3);
	list_counts(b, ch, 3, 0, 3, 3);
	read_to(b, ch, 3);
	list_counts(b, ch, 3, 3, 0, 0);
	h_req_ok(b, &res, "ch.leave", 1, "ch", 's', ch);
	proto_doc_free(&res);
	send_ok(a, ch, "while bob is away @bob", "a-4", 0, m_bob, 4);
	h_join_ok(b, ch);
	list_counts(b, ch, 4, 4, 0, 0);
	send_ok(a, ch, "welcome back @bob", "a-5", 0, m_bob, 5);
	list_counts(b, ch, 5, 4, 1, 1);
	send_ok(a, ch, "again @bob", "a-6", 0, m_bob, 6);
	list_counts(b, ch, 6, 4, 2, 2);
	/* and after a restart */
	pc_close(a);
	pc_close(b);
	h_kill9(&s);
	h_restart(&s);
	b = hello_counts(&s, "bob", ch, 6, 4, 2, 2);
	pc_close(b);
	h_finish(&s);
}

/* ---- typing -------------------------------------------------------------- */

#define expect_typing(c, ch, user) expect_typing_at(c, ch, user, __LINE__)
static void expect_typing_at(pc_conn *c, const char *ch, const char *user,
			     int line)
{
	proto_doc d;

	if (h_expect(c, "typing", &d, H_TIMEOUT) != 1)
		fail_msg("line %d: no typing frame for %s", line, user);
	assert_string_equal(h_s(&d.root, "ch"), ch);
	assert_string_equal(h_s(&d.root, "user"), user);
	proto_doc_free(&d);
}

static void typing(pc_conn *c, const char *ch)
{
	proto_doc res;

	h_req_ok(c, &res, "typing", 1, "ch", 's', ch);
	proto_doc_free(&res);
}

static void test_typing(void **st)
{
	hsrv s;
	pc_conn *a1, *a2, *b, *c, *d, *e;
	char ch[65];
	uint64_t t0;
	proto_doc res;

	(void)st;
	h_start(&s, FAST);
	a1 = h_connect_ok(&s, "alice", "acme");
	a2 = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	c = h_connect_ok(&s, "carol", "acme");
	d = h_connect_ok(&s, "dave", "acme");
	e = h_connect_ok(&s, "eve", "other");
	h_create_ok(a1, "general", "public", ch);
	h_join_ok(b, ch);
	h_join_ok(c, ch);
	/* everyone's devices follow the channel once they have an event */
	send_ok(a1, ch, "hi", "a-1", 0, NULL, 1);
	skip_evs(a1, ch, 1, 1);
	skip_evs(a2, ch, 1, 1);
	skip_evs(b, ch, 1, 1);
	skip_evs(c, ch, 1, 1);

	/* Members online hear of it; the typer's devices do not. The
	 * server stamps the window before it answers, so the window opened
	 * no later than t0: waiting until t0 + 3 s is waiting long enough,
	 * however slow the steps in between were. */
	typing(a1, ch);
	t0 = now_ms();
	expect_typing(b, ch, "alice");
	expect_typing(c, ch, "alice");
	/* A second one within 3 s: nothing */
	typing(a2, ch);
	typing(a1, ch);
	h_expect_none(b, "typing", ch);
	h_expect_none(c, "typing", ch);
	h_expect_none(a1, "typing", ch);
	h_expect_none(a2, "typing", ch);
	h_expect_none_any(d, "typing", ch);

	/* Per user: bob may type while alice's window is open */
	typing(b, ch);
	expect_typing(a1, ch, "bob");
	expect_typing(a2, ch, "bob");
	expect_typing(c, ch, "bob");
	h_expect_none(b, "typing", ch);

	/* Per channel: alice's window in ch does not cover another one */
	{
		char ch2[65];

		h_create_ok(a1, "random", "public", ch2);
		h_join_ok(b, ch2);
		/* bob's device follows ch2 once it has an event (the join's
		 * answer comes before its subscription is in place) */
		send_ok(a1, ch2, "hi", "r-1", 0, NULL, 1);
		skip_evs(b, ch2, 1, 1);
		typing(a1, ch2);
		expect_typing(b, ch2, "alice");
		h_expect_none(b, "typing", ch);
		h_expect_none(c, "typing", ch2);
	}

	/* Not stored: no seq was taken */
	list_counts(a1, ch, 1, ANY, 0, 0);

	/* Refused */
	h_req_fail("FORBIDDEN", d, "typing", 1, "ch", 's', ch);
	h_req_fail("NOT_FOUND", e, "typing", 1, "ch", 's', ch);
	h_req_fail("NOT_FOUND", a1, "typing", 1, "ch", 's', "Cnosuchchannel");
	h_req_fail("BAD_REQUEST", a1, "typing", 0);
	h_expect_none(b, "typing", ch);

	/* After 3 s, another broadcast */
	while (now_ms() < t0 + 3100)
		sleep_ms(50);
	typing(a2, ch);
	t0 = now_ms();
	expect_typing(b, ch, "alice");
	expect_typing(c, ch, "alice");
	h_expect_none(a1, "typing", ch);
	h_expect_none(a2, "typing", ch);

	/* fire-and-forget works too (no answer) */
	while (now_ms() < t0 + 3100)
		sleep_ms(50);
	{
		proto_out o;

		proto_out_init(&o, 0, 128);
		proto_enc_req(&o, "typing", 0, 1);
		proto_pk_cstr(&o.pk, "ch");
		proto_pk_cstr(&o.pk, ch);
		assert_int_equal(pc_send(a1, &o), 0);
		proto_out_free(&o);
	}
	expect_typing(b, ch, "alice");
	h_expect_none_any(a1, "res", ch);
	h_req_ok(a1, &res, "ch.list", 0);
	proto_doc_free(&res);

	/* A message ends the typing window: the receivers drop the
	 * indicator when the message comes, so typing right after it is
	 * heard at once, not 3 s later. */
	send_ok(a1, ch, "done typing", "a-2", 0, NULL, 2);
	skip_evs(a1, ch, 2, 2);
	skip_evs(a2, ch, 2, 2);
	skip_evs(b, ch, 2, 2);
	skip_evs(c, ch, 2, 2);
	typing(a1, ch);
	expect_typing(b, ch, "alice");
	expect_typing(c, ch, "alice");
	/* and the window is open again after that one */
	typing(a2, ch);
	h_expect_none(b, "typing", ch);

	pc_close(a1);
	pc_close(a2);
	pc_close(b);
	pc_close(c);
	pc_close(d);
	pc_close(e);
	h_finish(&s);
}

/* In a channel of 25,000 (most of them offline), typing still reaches
 * every member who is online, on both shards, and nobody else. */
static void test_typing_large_channel(void **st)
{
	enum { N = 25000, BATCH = 1000, ONLINE = 8 };
	hsrv s;
	pc_conn *a, *b, *u[ONLINE], *out;
	char ch[65];
	char (*ids)[16] = calloc(N, 16);
	const char **users = calloc(BATCH + 1, sizeof(*users));
	proto_doc res;

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	out = h_connect_ok(&s, "outsider", "acme");
	h_create_ok(a, "town-hall", "public", ch);
	h_join_ok(b, ch);
	for (int i = 0; i < N; i++)
		snprintf(ids[i], 16, "u%05d", i);
	for (int off = 0; off < N; off += BATCH) {
		for (int i = 0; i < BATCH; i++)
			users[i] = ids[off + i];
		users[BATCH] = NULL;
		h_req_ok(a, &res, "ch.invite", 2, "ch", 's', ch, "users", 'S',
		         users);
		proto_doc_free(&res);
	}
	h_req_ok(b, &res, "ch.members", 2, "ch", 's', ch, "limit", 'u',
	         (uint64_t)1000);
	assert_int_equal(arr_at(&res.root, "members")->size, 1000);
	assert_true(bool_at(&res.root, "more"));
	proto_doc_free(&res);

	send_ok(a, ch, "all hands", "a-1", 0, NULL, 1);
	skip_evs(b, ch, 1, 1);
	typing(a, ch);
	expect_typing(b, ch, "alice");
	h_expect_none(a, "typing", ch);
	/* invited users who come online (their connections spread over the
	 * shards) hear of bob typing; a non-member does not */
	for (int i = 0; i < ONLINE; i++)
		u[i] = h_connect_ok(&s, ids[i * (N / ONLINE) + 7], "acme");
	/* their devices follow the channel once they have an event (hello's
	 * answer may come before the subscriptions are in place) */
	send_ok(a, ch, "welcome", "a-2", 0, NULL, 2);
	for (int i = 0; i < ONLINE; i++)
		skip_evs(u[i], ch, 2, 2);
	typing(b, ch);
	for (int i = 0; i < ONLINE; i++)
		expect_typing(u[i], ch, "bob");
	expect_typing(a, ch, "bob");
	h_expect_none_any(out, "typing", ch);
	/* and one of them typing reaches the others */
	typing(u[3], ch);
	expect_typing(a, ch, ids[3 * (N / ONLINE) + 7]);
	expect_typing(u[0], ch, ids[3 * (N / ONLINE) + 7]);
	h_expect_none(u[3], "typing", ch);
	for (int i = 0; i < ONLINE; i++)
		pc_close(u[i]);

	free(ids);
	free(users);
	pc_close(out);
	pc_close(a);
	pc_close(b);
	h_finish(&s);
}

/* ---- durability ---------------------------------------------------------- */

/* history (main and thread 1), edits of 1 and 5, the log: as text. */
static void snapshot(pc_conn *c, const char *ch, char **out)
{
	proto_doc res;

	history(c, ch, 0, &res);
	out[0] = dump(&res.root);
	proto_doc_free(&res);
	history(c, ch, 1, &res);
	out[1] = dump(&res.root);
	proto_doc_free(&res);
	h_req_ok(c, &res, "edits", 2, "ch", 's', ch, "target", 'u',
		 (uint64_t)1);
	out[2] = dump(&res.root);
	proto_doc_free(&res);
	h_req_ok(c, &res, "edits", 2, "ch", 's', ch, "target", 'u',
		 (uint64_t)5);
	out[3] = dump(&res.root);
	proto_doc_free(&res);
	events(c, ch, 0, &res);
	out[4] = dump(&res.root);
	proto_doc_free(&res);
}

/* The dumps carry rid; compare from "ok" on. */
static const char *from_ok(const char *s)
{
	const char *p = strstr(s, "\"ok\"");

	return p ? p : s;
}

static void test_changes_survive_kill9(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char ch[65];
	char *before[5], *after[5];
	proto_doc res;
	const msgpack_object *m;
	char got[256];
	uint32_t kinds;
	uint64_t ts_edit;

	(void)st;
	h_start(&s, FAST);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a, "general", "public", ch);
	h_join_ok(b, ch);
	send_ok(a, ch, "one", "a-1", 0, NULL, 1);
	send_ok(a, ch, "two (to go)", "a-2", 0, NULL, 2);
	send_ok(b, ch, "three", "b-3", 0, NULL, 3);
	send_ok(b, ch, "four", "b-4", 0, NULL, 4);
	send_ok(a, ch, "reply", "a-5", 1, NULL, 5);
	edit_ok(a, ch, 1, "one, edited", 6);
	edit_ok(a, ch, 1, "one, edited again", 7);
	delete_ok(a, ch, 2, 8);
	react_ok(b, ch, 1, THUMBS, true, 9);
	react_ok(a, ch, 1, THUMBS, true, 10);
	react_ok(a, ch, 3, TADA, true, 11);
	react_ok(b, ch, 3, TADA, true, 12);
	react_ok(a, ch, 3, TADA, false, 13);
	edit_ok(a, ch, 5, "reply, edited", 14);
	react_ok(b, ch, 5, THUMBS, true, 15);
	react_ok(b, ch, 4, THUMBS, true, 16);
	delete_ok(b, ch, 4, 17);
	snapshot(a, ch, before);

	/* Straight after the last ack */
	pc_close(a);
	pc_close(b);
	h_kill9(&s);
	h_restart(&s);
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	snapshot(a, ch, after);
	for (int i = 0; i < 5; i++) {
		if (strcmp(from_ok(before[i]), from_ok(after[i]))) {
			char b_[2048], a_[2048];

			snprintf(b_, sizeof(b_), "%s", before[i]);
			snprintf(a_, sizeof(a_), "%s", after[i]);
			free(before[i]);
			free(after[i]);
			fail_msg("changed by the restart:\n%s\n%s", b_, a_);
		}
		free(before[i]);
		free(after[i]);
	}

	/* ... and it is what was acknowledged */
	history(a, ch, 0, &res);
	assert_int_equal(arr_at(&res.root, "msgs")->size, 4);
	m = find_msg(&res, 1);
	assert_string_equal(h_s(m, "body"), "one, edited again");
	assert_non_null(proto_get(m, "edited"));
	ts_edit = h_u(m, "edited");
	assert_true(reactors(m, THUMBS, got, sizeof(got), &kinds));
	assert_string_equal(got, "bob,alice");
	assert_int_equal(kinds, 1);
	assert_int_equal(h_u(m, "replies"), 1);
	m = find_msg(&res, 2);
	assert_true(bool_at(m, "deleted"));
	assert_string_equal(h_s(m, "body"), "");
	m = find_msg(&res, 3);
	assert_true(reactors(m, TADA, got, sizeof(got), &kinds));
	assert_string_equal(got, "bob");
	m = find_msg(&res, 4);
	assert_true(bool_at(m, "deleted"));
	assert_null(proto_get(m, "reactions"));
	proto_doc_free(&res);
	check_reactions(a, ch, 1, 5, THUMBS, "bob", 1);
	{
		static const char *const v[] = { "one", "one, edited",
						 "one, edited again" };
		proto_doc r;
		const msgpack_object_array *vs;

		h_req_ok(a, &r, "edits", 2, "ch", 's', ch, "target", 'u',
		         (uint64_t)1);
		vs = arr_at(&r.root, "versions");
		assert_int_equal(vs->size, 3);
		for (uint32_t i = 0; i < 3; i++)
			assert_string_equal(h_s(&vs->ptr[i], "body"), v[i]);
		assert_int_equal(h_u(&vs->ptr[2], "ts"), ts_edit);
		proto_doc_free(&r);
	}
	events(a, ch, 0, &res);
	assert_false(has_text(&res.root, "to go"));
	assert_false(has_text(&res.root, "four"));
	proto_doc_free(&res);

	/* Numbering goes on without a gap; no-ops are still no-ops */
	react_noop(b, ch, 1, THUMBS, true);
	react_noop(b, ch, 3, THUMBS, false);
	edit_ok(b, ch, 3, "three, edited", 18);
	h_req_fail("NOT_FOUND", a, "edit", 3, "ch", 's', ch, "target", 'u',
		   (uint64_t)2, "body", 's', "undead");
	react_ok(a, ch, 1, THUMBS, false, 19);
	check_reactions(b, ch, 0, 1, THUMBS, "bob", 1);

	pc_close(a);
	pc_close(b);
	h_finish(&s);
}

/* ---- rate limit ---------------------------------------------------------- */

static void expect_limited(pc_conn *c, const char *op, proto_doc *res)
{
	uint64_t retry;

	if (h_ok(res))
		fail_msg("%s: expected RATE_LIMITED, got ok", op);
	if (strcmp(h_code(res), "RATE_LIMITED"))
		fail_msg("%s: expected RATE_LIMITED, got %s", op, h_code(res));
	assert_non_null(proto_get(&res->root, "retry_ms"));
	retry = h_u(&res->root, "retry_ms");
	if (!(retry > 0 && retry <= 1000))
		fail_msg("%s: retry_ms %llu", op, (unsigned long long)retry);
	(void)c;
}

static void test_rate_limit(void **st)
{
	hsrv s;
	pc_conn *a, *b;
	char ch[65];
	proto_doc res;
	uint64_t retry = 0;

	(void)st;
	h_start(&s, "--shards 2 --send-rate 1 --send-burst 2");
	a = h_connect_ok(&s, "alice", "acme");
	b = h_connect_ok(&s, "bob", "acme");
	h_create_ok(a, "general", "public", ch);
	h_join_ok(b, ch);
	send_ok(a, ch, "one", "a-1", 0, NULL, 1);
	sleep_ms(1100); /* the bucket is full again (2) */

	/* edit and react are the burst; a send is the third: refused, and so
	 * are an edit, a delete and a react. All six go out before any answer
	 * comes back, so they meet the bucket within a few ms of each other
	 * however long the commits take (the bucket refills in 1 s). */
	{
		uint64_t rid[6];
		const char *what[6] = { "edit", "react", "send", "edit",
					"delete", "react" };

		rid[0] = h_post(a, "edit", 3, "ch", 's', ch, "target", 'u',
				(uint64_t)1, "body", 's', "one, edited");
		rid[1] = h_post(a, "react", 4, "ch", 's', ch, "target", 'u',
				(uint64_t)1, "emoji", 's', THUMBS, "on", 'b', 1);
		rid[2] = h_post(a, "send", 3, "ch", 's', ch, "body", 's', "two",
				"cmid", 's', "a-2");
		rid[3] = h_post(a, "edit", 3, "ch", 's', ch, "target", 'u',
				(uint64_t)1, "body", 's', "nope");
		rid[4] = h_post(a, "delete", 2, "ch", 's', ch, "target", 'u',
				(uint64_t)1);
		rid[5] = h_post(a, "react", 4, "ch", 's', ch, "target", 'u',
				(uint64_t)1, "emoji", 's', TADA, "on", 'b', 1);
		for (int i = 0; i < 6; i++) {
			assert_int_equal(h_await(a, rid[i], &res), 1);
			if (i < 2) {
				if (!h_ok(&res))
					fail_msg("%s: refused (%s)", what[i],
						 h_code(&res));
				assert_int_equal(h_u(&res.root, "seq"),
						 (uint64_t)i + 2);
			} else {
				expect_limited(a, what[i], &res);
				if (i == 2)
					retry = h_u(&res.root, "retry_ms");
			}
			proto_doc_free(&res);
		}
	}
	/* none of it happened */
	list_counts(b, ch, 3, ANY, 1, 0);
	history(b, ch, 0, &res);
	assert_string_equal(h_s(find_msg(&res, 1), "body"), "one, edited");
	proto_doc_free(&res);
	/* another user has a bucket of its own */
	react_ok(b, ch, 1, TADA, true, 4);

	/* After retry_ms, one more goes */
	sleep_ms((unsigned)retry + 20);
	send_ok(a, ch, "two", "a-2", 0, NULL, 5);

	/* Again from full: react, send, edit -> the edit is refused */
	sleep_ms(2100);
	{
		uint64_t r1, r2, r3;

		r1 = h_post(a, "react", 4, "ch", 's', ch, "target", 'u',
			    (uint64_t)1, "emoji", 's', THUMBS, "on", 'b', 0);
		r2 = h_post(a, "send", 3, "ch", 's', ch, "body", 's', "three",
			    "cmid", 's', "a-3");
		r3 = h_post(a, "edit", 3, "ch", 's', ch, "target", 'u',
			    (uint64_t)7, "body", 's', "nope");
		assert_int_equal(h_await(a, r1, &res), 1);
		assert_true(h_ok(&res));
		assert_int_equal(h_u(&res.root, "seq"), 6);
		proto_doc_free(&res);
		assert_int_equal(h_await(a, r2, &res), 1);
		assert_true(h_ok(&res));
		assert_int_equal(h_u(&res.root, "seq"), 7);
		proto_doc_free(&res);
		assert_int_equal(h_await(a, r3, &res), 1);
		expect_limited(a, "edit", &res);
		proto_doc_free(&res);
	}

	pc_close(a);
	pc_close(b);
	h_finish(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_edit),
		cmocka_unit_test(test_edits_versions),
		cmocka_unit_test(test_delete),
		cmocka_unit_test(test_delete_right_after_edit),
		cmocka_unit_test(test_react),
		cmocka_unit_test(test_many_reactions),
		cmocka_unit_test(test_reply_to_pending_reply),
		cmocka_unit_test(test_changes_resume),
		cmocka_unit_test(test_read_state),
		cmocka_unit_test(test_mentions_after_rejoin),
		cmocka_unit_test(test_typing),
		cmocka_unit_test(test_typing_large_channel),
		cmocka_unit_test(test_changes_survive_kill9),
		cmocka_unit_test(test_rate_limit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
