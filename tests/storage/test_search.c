/*
 * Unit tests of storage/search.c, run by ctest: `test_search NAME` runs the
 * case NAME, no argument runs them all. Each case feeds events as shard 0
 * would (search_feed, search_feed_flush), waits for the indexer with
 * search_sync and queries through search_query with a callback that copies
 * the hits. The catch-up cases also write the events into a real store,
 * some of them never fed, and reopen the index over it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "proto/proto.h"
#include "storage/search.h"
#include "storage/store.h"

/* ---- fixtures ------------------------------------------------------------- */

struct tdir {
	char root[256];
	char idx[300];
	char db[300];
};

static void tdir_make(struct tdir *t)
{
	const char *base = getenv("TMPDIR");

	snprintf(t->root, sizeof(t->root), "%s/parley-search-XXXXXX",
		 base && *base ? base : "/tmp");
	assert_non_null(mkdtemp(t->root));
	snprintf(t->idx, sizeof(t->idx), "%s/search", t->root);
	snprintf(t->db, sizeof(t->db), "%s/db", t->root);
}

static int rm_one(const char *p, const struct stat *st, int flag,
		  struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static void tdir_remove(struct tdir *t)
{
	nftw(t->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static search *open_ok(const char *path, store *st)
{
	search *sx = NULL;
	char *err = NULL;

	if (search_open(&sx, path, st, 1, &err)) {
		fprintf(stderr, "search_open: %s\n", err ? err : "?");
		free(err);
		fail();
	}
	assert_non_null(sx);
	return sx;
}

static store *store_ok(const char *dir)
{
	store *s = NULL;
	char *err = NULL;

	if (store_open(&s, dir, 4, 1, &err)) {
		fprintf(stderr, "store_open: %s\n", err ? err : "?");
		free(err);
		fail();
	}
	return s;
}

/* ---- events ----------------------------------------------------------------- */

#define T0 1700000000000ull

static proto_str ps(const char *s)
{
	proto_str r = { s, s ? (uint32_t)strlen(s) : 0 };

	return r;
}

/* Encode an event into o (reset first). kind: msg, edit, delete, react. */
static void enc(proto_out *o, const char *ch, uint64_t seq, const char *k,
		uint64_t ts, const char *from, const char *body,
		uint64_t target)
{
	proto_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.ch = ps(ch);
	ev.seq = seq;
	ev.k = ps(k);
	ev.ts = ts;
	ev.from = ps(from);
	if (!strcmp(k, "msg")) {
		ev.body = ps(body);
		ev.cmid = ps("c");
	} else if (!strcmp(k, "edit")) {
		ev.body = ps(body);
		ev.target = target;
	} else if (!strcmp(k, "delete")) {
		ev.target = target;
	} else {
		ev.target = target;
		ev.emoji = ps(":+1:");
		ev.on = true;
	}
	proto_out_reset(o);
	proto_enc_event(o, &ev);
}

static void feed(search *sx, const char *ch, uint64_t seq, const char *k,
		 uint64_t ts, const char *from, const char *body,
		 uint64_t target)
{
	proto_out o;

	proto_out_init(&o, 0, 256);
	enc(&o, ch, seq, k, ts, from, body, target);
	search_feed(sx, 0, o.data, o.len);
	proto_out_free(&o);
}

static void feed_msg(search *sx, const char *ch, uint64_t seq, uint64_t ts,
		     const char *body)
{
	feed(sx, ch, seq, "msg", ts, "alice", body, 0);
}

static void flush_sync(search *sx)
{
	search_feed_flush(sx, 0);
	search_sync(sx);
}

/* ---- queries ------------------------------------------------------------------ */

struct qres {
	sem_t sem;
	int status;
	unsigned n;
	struct {
		char ch[65], from[65], body[512];
		uint64_t seq, ts;
	} h[SEARCH_MAX_LIMIT];
};

static void qdone(void *arg, int status, const search_hit *hits, unsigned n)
{
	struct qres *r = arg;

	r->status = status;
	r->n = n;
	for (unsigned i = 0; i < n; i++) {
		snprintf(r->h[i].ch, 65, "%s", hits[i].ch);
		snprintf(r->h[i].from, 65, "%s", hits[i].from);
		snprintf(r->h[i].body, 512, "%.*s", (int)hits[i].body_len,
			 hits[i].body);
		r->h[i].seq = hits[i].seq;
		r->h[i].ts = hits[i].ts;
	}
	sem_post(&r->sem);
}

/* Query chs (NULL-terminated), wait for the answer; returns the status. */
static int query_in(search *sx, const char *q, const char *const *chs,
		    unsigned limit, struct qres *r)
{
	unsigned nch = 0;

	while (chs[nch])
		nch++;
	memset(r, 0, sizeof(*r));
	sem_init(&r->sem, 0, 0);
	assert_int_equal(search_query(sx, q, strlen(q), chs, nch, limit, qdone,
				      r), 0);
	while (sem_wait(&r->sem) && errno == EINTR)
		;
	sem_destroy(&r->sem);
	return r->status;
}

static const char *const ALL[] = { "a", "b", "c", NULL };

/* Seqs of the hits of q in channels a, b, c, as "ch:seq ch:seq ..." */
static const char *hits(search *sx, const char *q)
{
	static char out[2048];
	static struct qres r;
	size_t n = 0;

	out[0] = 0;
	if (query_in(sx, q, ALL, 100, &r))
		snprintf(out, sizeof(out), "error %d", r.status);
	for (unsigned i = 0; i < r.n; i++)
		n += (size_t)snprintf(out + n, sizeof(out) - n, "%s%s:%llu",
				      i ? " " : "", r.h[i].ch,
				      (unsigned long long)r.h[i].seq);
	return out;
}

/* ---- cases ---------------------------------------------------------------------- */

static void fill_basic(search *sx)
{
	feed_msg(sx, "a", 1, T0 + 1, "The quick brown fox jumps");
	feed_msg(sx, "a", 2, T0 + 2, "a lazy dog sleeps");
	feed_msg(sx, "b", 1, T0 + 3, "Brown bread is quick to bake");
	feed_msg(sx, "b", 2, T0 + 4, "help, hello, helicopter");
	feed_msg(sx, "c", 1, T0 + 5, "Le café est très bon");
	flush_sync(sx);
}

static void test_words(void **state)
{
	struct tdir t;
	search *sx;
	struct qres r;

	(void)state;
	tdir_make(&t);
	sx = open_ok(t.idx, NULL);
	fill_basic(sx);
	assert_string_equal(hits(sx, "fox"), "a:1");
	assert_string_equal(hits(sx, "FOX"), "a:1");
	/* every word must occur; newest first */
	assert_string_equal(hits(sx, "quick brown"), "b:1 a:1");
	assert_string_equal(hits(sx, "quick lazy"), "");
	assert_string_equal(hits(sx, "brown"), "b:1 a:1");
	/* diacritics and case folded both ways */
	assert_string_equal(hits(sx, "cafe"), "c:1");
	assert_string_equal(hits(sx, "CAFÉ tres"), "c:1");
	/* punctuation is not part of words */
	assert_string_equal(hits(sx, "hello,"), "b:2");
	assert_string_equal(hits(sx, "nothing"), "");
	/* a whole hit */
	assert_int_equal(query_in(sx, "dog", ALL, 10, &r), 0);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.h[0].ch, "a");
	assert_int_equal(r.h[0].seq, 2);
	assert_int_equal(r.h[0].ts, T0 + 2);
	assert_string_equal(r.h[0].from, "alice");
	assert_string_equal(r.h[0].body, "a lazy dog sleeps");
	/* no searchable word */
	assert_int_equal(query_in(sx, "  ,;! ", ALL, 10, &r), -EINVAL);
	assert_int_equal(query_in(sx, "\"\"", ALL, 10, &r), -EINVAL);
	assert_int_equal(query_in(sx, "***", ALL, 10, &r), -EINVAL);
	/* too many terms */
	assert_int_equal(query_in(sx, "a b c d e f g h i j k l m n o p q",
				  ALL, 10, &r), -E2BIG);
	assert_int_equal(query_in(sx, "a b c d e f g h i j k l m n o p",
				  ALL, 10, &r), 0);
	/* bad calls are refused at once */
	assert_int_equal(search_query(sx, "", 0, ALL, 3, 10, qdone, &r),
			 -EINVAL);
	assert_int_equal(search_query(sx, "x", 1, ALL, 3, 0, qdone, &r),
			 -EINVAL);
	assert_int_equal(search_query(sx, "x", 1, ALL, 3, 101, qdone, &r),
			 -EINVAL);
	search_close(sx);
	tdir_remove(&t);
}

static void test_prefix(void **state)
{
	struct tdir t;
	search *sx;

	(void)state;
	tdir_make(&t);
	sx = open_ok(t.idx, NULL);
	fill_basic(sx);
	assert_string_equal(hits(sx, "hel*"), "b:2");
	assert_string_equal(hits(sx, "he*"), "b:2");       /* prefix index */
	assert_string_equal(hits(sx, "helic*"), "b:2");    /* no index */
	assert_string_equal(hits(sx, "helicopters*"), "");
	assert_string_equal(hits(sx, "bro* qui*"), "b:1 a:1");
	assert_string_equal(hits(sx, "caf*"), "c:1");
	assert_string_equal(hits(sx, "slee*"), "a:2");
	/* one character is too broad: "a*" is the word "a" */
	assert_string_equal(hits(sx, "a*"), "a:2");
	assert_string_equal(hits(sx, "b*"), "");
	search_close(sx);
	tdir_remove(&t);
}

static void test_phrase(void **state)
{
	struct tdir t;
	search *sx;

	(void)state;
	tdir_make(&t);
	sx = open_ok(t.idx, NULL);
	fill_basic(sx);
	assert_string_equal(hits(sx, "\"quick brown\""), "a:1");
	assert_string_equal(hits(sx, "\"brown quick\""), "");
	assert_string_equal(hits(sx, "\"brown bread\" bake"), "b:1");
	/* a phrase ending in a prefix; an unterminated phrase runs to the end */
	assert_string_equal(hits(sx, "\"quick bro\"*"), "a:1");
	assert_string_equal(hits(sx, "\"lazy dog"), "a:2");
	/* punctuation between words is no obstacle to a phrase */
	assert_string_equal(hits(sx, "\"help hello\""), "b:2");
	assert_string_equal(hits(sx, "help-hello"), "b:2");
	assert_string_equal(hits(sx, "\"the quick\" \"brown fox\""), "a:1");
	search_close(sx);
	tdir_remove(&t);
}

/* Nothing the user types is FTS5 syntax. */
static void test_hostile(void **state)
{
	static const char *const qs[] = {
		"\"", "\"\"\"", "a\"b", "\"a\"\"b\"", "NEAR(quick fox)",
		"NEAR(quick fox, 2)", "body:secret", "body : secret",
		"c:k1", "c : \"k1\"", "{body c}: quick", "quick OR lazy",
		"quick AND", "NOT quick", "quick NOT brown", "(quick", ")",
		"quick)", "^quick", "-quick", "+quick", "*", "**quick",
		"quick**", "\"quick\"*\"", "k1", "rowid", "fts", "'", "''",
		"\\", "quick\0lazy", "%", "_", "a:b:c", "\"*\"", "\xc3\xa9*",
		"NEAR", "AND", "OR", "NOT", "{", "}", "k1*",
	};
	struct tdir t;
	search *sx;
	struct qres r;

	(void)state;
	tdir_make(&t);
	sx = open_ok(t.idx, NULL);
	fill_basic(sx);
	feed_msg(sx, "a", 3, T0 + 10, "body secret NEAR c k1 AND OR NOT");
	flush_sync(sx);
	for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
		int rc = query_in(sx, qs[i], ALL, 100, &r);

		if (rc != 0 && rc != -EINVAL)
			fail_msg("q %s: status %d", qs[i], rc);
	}
	/* the operators are words like any other */
	assert_string_equal(hits(sx, "quick OR lazy"), "");
	assert_string_equal(hits(sx, "NOT"), "a:3");
	/* "NEAR(quick" is the phrase "near quick", not a NEAR group */
	assert_string_equal(hits(sx, "NEAR(quick fox)"), "");
	assert_string_equal(hits(sx, "NEAR(secret"), "");
	assert_string_equal(hits(sx, "secret NEAR"), "a:3");
	/* column names are words: never a filter on the channel column */
	assert_string_equal(hits(sx, "c:k1"), "a:3");
	assert_string_equal(hits(sx, "k1"), "a:3");
	assert_string_equal(hits(sx, "k1*"), "a:3");
	assert_string_equal(hits(sx, "body:secret"), "a:3");
	assert_string_equal(hits(sx, "{body c}: quick"), "");
	assert_string_equal(hits(sx, "quick)"), "b:1 a:1");
	assert_string_equal(hits(sx, "-quick"), "b:1 a:1");
	assert_string_equal(hits(sx, "a\"b"), "");
	search_close(sx);
	tdir_remove(&t);
}

static void test_edit_delete(void **state)
{
	struct tdir t;
	search *sx;
	struct qres r;

	(void)state;
	tdir_make(&t);
	sx = open_ok(t.idx, NULL);
	feed_msg(sx, "a", 1, T0 + 1, "original words here");
	feed_msg(sx, "a", 2, T0 + 2, "second message stays");
	feed(sx, "a", 3, "edit", T0 + 3, "alice", "replacement text", 1);
	flush_sync(sx);
	assert_string_equal(hits(sx, "original"), "");
	assert_string_equal(hits(sx, "replacement"), "a:1");
	assert_int_equal(query_in(sx, "replacement", ALL, 10, &r), 0);
	assert_string_equal(r.h[0].body, "replacement text");
	assert_int_equal(r.h[0].ts, T0 + 1); /* the message's own time */

	/* a reaction moves the position, changes nothing */
	feed(sx, "a", 4, "react", T0 + 4, "bob", NULL, 1);
	feed(sx, "a", 5, "edit", T0 + 5, "alice", "third version", 1);
	feed(sx, "a", 6, "delete", T0 + 6, "alice", NULL, 2);
	flush_sync(sx);
	assert_string_equal(hits(sx, "replacement"), "");
	assert_string_equal(hits(sx, "third"), "a:1");
	assert_string_equal(hits(sx, "second"), "");
	assert_string_equal(hits(sx, "stays"), "");

	/* edits and deletes of what is gone or never was: nothing */
	feed(sx, "a", 7, "edit", T0 + 7, "alice", "ghost edit", 2);
	feed(sx, "a", 8, "delete", T0 + 8, "alice", NULL, 99);
	feed(sx, "a", 9, "delete", T0 + 9, "alice", NULL, 1);
	/* in one batch: a message, its edit, another edit, then delete */
	feed_msg(sx, "b", 1, T0 + 10, "alpha");
	feed(sx, "b", 2, "edit", T0 + 11, "alice", "beta", 1);
	feed(sx, "b", 3, "edit", T0 + 12, "alice", "gamma", 1);
	feed_msg(sx, "b", 4, T0 + 13, "delta");
	feed(sx, "b", 5, "delete", T0 + 14, "alice", NULL, 4);
	flush_sync(sx);
	assert_string_equal(hits(sx, "ghost"), "");
	assert_string_equal(hits(sx, "third"), "");
	assert_string_equal(hits(sx, "alpha"), "");
	assert_string_equal(hits(sx, "beta"), "");
	assert_string_equal(hits(sx, "gamma"), "b:1");
	assert_string_equal(hits(sx, "delta"), "");
	/* events already indexed, fed again (a replay): no effect */
	feed_msg(sx, "b", 1, T0 + 10, "alpha");
	feed_msg(sx, "b", 4, T0 + 13, "delta");
	flush_sync(sx);
	assert_string_equal(hits(sx, "alpha"), "");
	assert_string_equal(hits(sx, "delta"), "");
	search_close(sx);
	tdir_remove(&t);
}

static void test_order(void **state)
{
	struct tdir t;
	search *sx;
	struct qres r;
	char body[64];

	(void)state;
	tdir_make(&t);
	sx = open_ok(t.idx, NULL);
	/* interleaved channels, several in the same millisecond, some fed
	 * out of time order across channels */
	for (unsigned i = 1; i <= 30; i++) {
		snprintf(body, sizeof(body), "common word number%u", i);
		feed_msg(sx, i % 2 ? "a" : "b", (i + 1) / 2, T0 + i / 3, body);
	}
	feed_msg(sx, "c", 1, T0 - 1000, "common but old");
	flush_sync(sx);
	assert_int_equal(query_in(sx, "common", ALL, 100, &r), 0);
	assert_int_equal(r.n, 31);
	for (unsigned i = 1; i < r.n; i++)
		assert_true(r.h[i - 1].ts >= r.h[i].ts);
	/* within a millisecond, the later one first */
	assert_string_equal(r.h[0].body, "common word number30");
	assert_string_equal(r.h[30].body, "common but old");
	/* limit keeps the newest */
	assert_int_equal(query_in(sx, "common", ALL, 5, &r), 0);
	assert_int_equal(r.n, 5);
	assert_string_equal(r.h[0].body, "common word number30");
	assert_string_equal(r.h[4].body, "common word number26");
	assert_int_equal(query_in(sx, "common", ALL, 1, &r), 0);
	assert_int_equal(r.n, 1);
	search_close(sx);
	tdir_remove(&t);
}

static void test_channels(void **state)
{
	static const char *const only_a[] = { "a", NULL };
	static const char *const a_c[] = { "c", "a", NULL };
	static const char *const none[] = { NULL };
	static const char *const unknown[] = { "zz", "yy", NULL };
	const char **many;
	struct tdir t;
	search *sx;
	struct qres r;
	char ch[32];

	(void)state;
	tdir_make(&t);
	sx = open_ok(t.idx, NULL);
	feed_msg(sx, "a", 1, T0 + 1, "shared word in a");
	feed_msg(sx, "b", 1, T0 + 2, "shared word in b");
	feed_msg(sx, "c", 1, T0 + 3, "shared word in c");
	flush_sync(sx);
	assert_int_equal(query_in(sx, "shared", only_a, 10, &r), 0);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.h[0].ch, "a");
	assert_int_equal(query_in(sx, "shared", a_c, 10, &r), 0);
	assert_int_equal(r.n, 2);
	assert_string_equal(r.h[0].ch, "c");
	assert_string_equal(r.h[1].ch, "a");
	assert_int_equal(query_in(sx, "shared", none, 10, &r), 0);
	assert_int_equal(r.n, 0);
	assert_int_equal(query_in(sx, "shared", unknown, 10, &r), 0);
	assert_int_equal(r.n, 0);

	/* More channels than the query puts in FTS5 itself: filtered after. */
	for (unsigned i = 0; i < 200; i++) {
		snprintf(ch, sizeof(ch), "ch%03u", i);
		feed_msg(sx, ch, 1, T0 + 100 + i, "wide word");
	}
	flush_sync(sx);
	many = calloc(202, sizeof(*many));
	for (unsigned i = 0; i < 100; i++) {
		char *id = malloc(8);

		snprintf(id, 8, "ch%03u", 2 * i); /* the even ones */
		many[i] = id;
	}
	many[100] = "a";
	assert_int_equal(query_in(sx, "wide", many, 100, &r), 0);
	assert_int_equal(r.n, 100);
	for (unsigned i = 0; i < r.n; i++) {
		unsigned k = (unsigned)atoi(r.h[i].ch + 2);

		assert_int_equal(k % 2, 0);
		assert_int_equal(k, 198 - 2 * i);
	}
	assert_int_equal(query_in(sx, "shared", many, 100, &r), 0);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.h[0].ch, "a");
	/* the same, with a set small enough (5 of 203 channels, 2.5% of the
	 * events) for FTS5 to filter */
	{
		const char *keep = many[5];

		many[5] = NULL;
		assert_int_equal(query_in(sx, "wide", many, 100, &r), 0);
		assert_int_equal(r.n, 5);
		assert_string_equal(r.h[0].ch, "ch008");
		assert_string_equal(r.h[4].ch, "ch000");
		assert_int_equal(query_in(sx, "shared", many, 100, &r), 0);
		assert_int_equal(r.n, 0);
		many[5] = keep;
	}
	assert_int_equal(query_in(sx, "shared", only_a, 10, &r), 0);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.h[0].ch, "a");
	assert_int_equal(query_in(sx, "shared", a_c, 10, &r), 0);
	assert_int_equal(r.n, 2);
	assert_string_equal(r.h[0].ch, "c");
	for (unsigned i = 0; i < 100; i++)
		free((void *)many[i]);
	free(many);
	search_close(sx);
	tdir_remove(&t);
}

/* ---- with a store ------------------------------------------------------------- */

static void wait_done(void *ctx, int status)
{
	struct { sem_t sem; int status; } *w = ctx;

	w->status = status;
	sem_post(&w->sem);
}

/* Write events seq from..to of ch into the store: msg "text<seq> tag",
 * as the channel actor would (event + 'S'). */
static void store_msgs(store *st, const char *ch, uint64_t from, uint64_t to,
		       const char *tag)
{
	store_batch *b = store_batch_new(st);
	struct { sem_t sem; int status; } w;
	store_chstat cs = { .last_seq = to, .msgs = to, .members = 1 };
	proto_out o;
	char body[128];

	proto_out_init(&o, 0, 256);
	for (uint64_t s = from; s <= to; s++) {
		snprintf(body, sizeof(body), "text%llu %s",
			 (unsigned long long)s, tag);
		enc(&o, ch, s, "msg", T0 + s, "alice", body, 0);
		store_put_event(b, ch, s, o.data, o.len, s);
	}
	store_put_chstat(b, ch, &cs);
	proto_out_free(&o);
	sem_init(&w.sem, 0, 0);
	assert_int_equal(store_commit(st, 0, b, wait_done, &w), 0);
	while (sem_wait(&w.sem) && errno == EINTR)
		;
	sem_destroy(&w.sem);
	assert_int_equal(w.status, 0);
}

/* Feed the events the store has for ch, from..to. */
static void feed_from_store(search *sx, store *st, const char *ch,
			    uint64_t from, uint64_t to)
{
	for (uint64_t s = from; s <= to; s++) {
		void *ev;
		size_t len;
		uint64_t cum;

		assert_int_equal(store_get_event(st, ch, s, &ev, &len, &cum), 0);
		search_feed(sx, 0, ev, len);
		free(ev);
	}
}

static unsigned count(search *sx, const char *q)
{
	static struct qres r;

	assert_int_equal(query_in(sx, q, ALL, 100, &r), 0);
	return r.n;
}

/* The index is behind the log after a crash: opening catches up. */
static void test_catchup(void **state)
{
	struct tdir t;
	store *st;
	search *sx;

	(void)state;
	tdir_make(&t);
	st = store_ok(t.db);
	store_msgs(st, "a", 1, 10, "alpha");
	store_msgs(st, "b", 1, 3, "beta");
	sx = open_ok(t.idx, st);
	/* opening found 13 messages it was never fed */
	assert_int_equal(count(sx, "alpha"), 10);
	assert_int_equal(count(sx, "beta"), 3);
	/* fed from now on, as the shards do */
	store_msgs(st, "a", 11, 12, "alpha");
	feed_from_store(sx, st, "a", 11, 12);
	flush_sync(sx);
	assert_int_equal(count(sx, "alpha"), 12);
	search_close(sx);

	/* durable but never fed (the crash came first), in an old channel
	 * and in a channel the index has never seen */
	store_msgs(st, "a", 13, 20, "alpha");
	store_msgs(st, "c", 1, 5, "gamma");
	sx = open_ok(t.idx, st);
	assert_int_equal(count(sx, "alpha"), 20);
	assert_int_equal(count(sx, "gamma"), 5);
	assert_string_equal(hits(sx, "text20"), "a:20");
	/* events fed again after catch-up had them: skipped */
	feed_from_store(sx, st, "a", 19, 20);
	flush_sync(sx);
	assert_int_equal(count(sx, "alpha"), 20);
	search_close(sx);

	/* nothing new: reopening changes nothing */
	sx = open_ok(t.idx, st);
	assert_int_equal(count(sx, "alpha"), 20);
	search_close(sx);
	store_close(st);
	tdir_remove(&t);
}

/* An event past the channel's position + 1 (the ones between were dropped
 * or lost): the gap comes from the log. */
static void test_gap(void **state)
{
	struct tdir t;
	store *st;
	search *sx;

	(void)state;
	tdir_make(&t);
	st = store_ok(t.db);
	sx = open_ok(t.idx, st);
	store_msgs(st, "a", 1, 2, "alpha");
	feed_from_store(sx, st, "a", 1, 2);
	flush_sync(sx);
	assert_int_equal(count(sx, "alpha"), 2);
	store_msgs(st, "a", 3, 9, "alpha");
	feed_from_store(sx, st, "a", 9, 9); /* 3..8 never fed */
	flush_sync(sx);
	assert_int_equal(count(sx, "alpha"), 9);
	assert_string_equal(hits(sx, "text5"), "a:5");
	/* a channel first seen at seq 4 */
	store_msgs(st, "b", 1, 4, "beta");
	feed_from_store(sx, st, "b", 4, 4);
	flush_sync(sx);
	assert_int_equal(count(sx, "beta"), 4);
	search_close(sx);
	store_close(st);
	tdir_remove(&t);
}

/* The index knows more of a channel than the log (the store was replaced):
 * the channel is indexed again from its log. */
static void test_reset(void **state)
{
	struct tdir t;
	store *st;
	search *sx;
	char cmd[700];

	(void)state;
	tdir_make(&t);
	st = store_ok(t.db);
	store_msgs(st, "a", 1, 6, "old");
	sx = open_ok(t.idx, st);
	assert_int_equal(count(sx, "old"), 6);
	search_close(sx);
	store_close(st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t.db);
	assert_int_equal(system(cmd), 0);
	st = store_ok(t.db);
	store_msgs(st, "a", 1, 2, "new");
	sx = open_ok(t.idx, st);
	assert_int_equal(count(sx, "old"), 0);
	assert_int_equal(count(sx, "new"), 2);
	search_close(sx);
	store_close(st);
	tdir_remove(&t);
}

/* A damaged index file is set aside and built again from the log. */
static void test_corrupt(void **state)
{
	struct tdir t;
	store *st;
	search *sx;
	char file[400];
	FILE *f;

	(void)state;
	tdir_make(&t);
	st = store_ok(t.db);
	store_msgs(st, "a", 1, 7, "alpha");
	sx = open_ok(t.idx, st);
	assert_int_equal(count(sx, "alpha"), 7);
	search_close(sx);
	snprintf(file, sizeof(file), "%s/index.db", t.idx);
	f = fopen(file, "r+");
	assert_non_null(f);
	for (int i = 0; i < 8192; i++)
		fputc(0x5a, f);
	fclose(f);
	sx = open_ok(t.idx, st);
	assert_int_equal(count(sx, "alpha"), 7);
	assert_string_equal(hits(sx, "text7"), "a:7");
	search_close(sx);
	snprintf(file, sizeof(file), "%s/index.db.corrupt", t.idx);
	assert_int_equal(access(file, F_OK), 0);
	store_close(st);
	tdir_remove(&t);
}

/* Closing indexes everything fed, even unflushed; reopening keeps it. */
static void test_close_flushes(void **state)
{
	struct tdir t;
	search *sx;
	char body[64];

	(void)state;
	tdir_make(&t);
	sx = open_ok(t.idx, NULL);
	for (unsigned i = 1; i <= 2000; i++) {
		snprintf(body, sizeof(body), "bulk item%u", i);
		feed_msg(sx, i % 3 ? "a" : "b", i, T0 + i, body);
		if (i % 100 == 0)
			search_feed_flush(sx, 0);
	}
	feed_msg(sx, "c", 1, T0, "unflushed tail");
	search_close(sx);
	sx = open_ok(t.idx, NULL);
	assert_int_equal(count(sx, "tail"), 1);
	assert_string_equal(hits(sx, "item1999"), "a:1999");
	{
		static struct qres r;

		assert_int_equal(query_in(sx, "bulk", ALL, 100, &r), 0);
		assert_int_equal(r.n, 100);
		assert_string_equal(r.h[0].body, "bulk item2000");
	}
	search_close(sx);
	tdir_remove(&t);
}

/* n (a multiple of 5,000) messages "text<seq> omega" in channel a, never
 * fed: opening starts a catch-up of a few hundred ms over them. */
static void store_long_log(store *st, uint64_t n)
{
	for (uint64_t from = 1; from <= n; from += 5000)
		store_msgs(st, "a", from, from + 4999, "omega");
}

/* Stopping with events fed and not yet indexed: the indexer has
 * STOP_DRAIN_MS for them, then leaves the rest to the next start, which
 * reads them back from the store. This binary is built twice: as
 * test_search (2 s: all of them make it in) and as test_search_nodrain
 * (0: none of them do, and shutdown does not wait for them). */
static void test_stop_leaves_rest(void **state)
{
	struct tdir t;
	store *st;
	search *sx;

	(void)state;
	tdir_make(&t);
	st = store_ok(t.db);
	store_msgs(st, "a", 1, 5, "omega");
	sx = open_ok(t.idx, st);
	assert_int_equal(count(sx, "omega"), 5);
	/* durable, fed, never flushed: search_close pushes them */
	store_msgs(st, "a", 6, 8, "omega");
	feed_from_store(sx, st, "a", 6, 8);
	search_close(sx);

	/* what the index itself holds (no store: no catch-up) */
	sx = open_ok(t.idx, NULL);
#ifdef TEST_NODRAIN
	assert_int_equal(count(sx, "omega"), 5);
#else
	assert_int_equal(count(sx, "omega"), 8);
#endif
	search_close(sx);
	/* and with the store: the start catches up, nothing is missing */
	sx = open_ok(t.idx, st);
	assert_int_equal(count(sx, "omega"), 8);
	assert_string_equal(hits(sx, "text8"), "a:8");
	search_close(sx);
	store_close(st);
	tdir_remove(&t);
}

/* Stopping during the catch-up at open (a long log, never indexed): with
 * no time to drain, the indexer stops between two reads of the log and
 * keeps what it did; the next start goes on from there. */
static void test_stop_cuts_catchup(void **state)
{
	enum { N = 50000 };
	struct tdir t;
	store *st;
	search *sx;

	(void)state;
	tdir_make(&t);
	st = store_ok(t.db);
	store_long_log(st, N);
	sx = open_ok(t.idx, st);
	usleep(30 * 1000); /* the catch-up is under way (it takes 300 ms
			    * and more) */
	search_close(sx);
#ifdef TEST_NODRAIN
	sx = open_ok(t.idx, NULL);
	assert_string_equal(hits(sx, "text50000"), "");
	search_close(sx);
#endif
	sx = open_ok(t.idx, st);
	search_sync(sx); /* the catch-up may take longer than a query waits */
	assert_string_equal(hits(sx, "text50000"), "a:50000");
	assert_string_equal(hits(sx, "text1"), "a:1");
	assert_string_equal(hits(sx, "text25000"), "a:25000");
	search_close(sx);
	store_close(st);
	tdir_remove(&t);
}

/* Queries waiting for the catch-up when the index closes are answered
 * "catching up" (-EAGAIN) at once, not after CATCHUP_WAIT_MS each: with 8
 * of them waiting, shutdown used to wait 16 s on them, and the catch-up
 * went on meanwhile (and here finished, so they were answered with hits). */
static void test_close_answers_waiting_queries(void **state)
{
	enum { N = 50000, Q = 8 };
	struct tdir t;
	store *st;
	search *sx;
	static struct qres r[Q];

	(void)state;
	tdir_make(&t);
	st = store_ok(t.db);
	store_long_log(st, N);
	sx = open_ok(t.idx, st);
	for (int i = 0; i < Q; i++) {
		memset(&r[i], 0, sizeof(r[i]));
		sem_init(&r[i].sem, 0, 0);
		assert_int_equal(search_query(sx, "omega", 5, ALL, 3, 10, qdone,
					      &r[i]), 0);
	}
	search_close(sx);
	for (int i = 0; i < Q; i++) {
		while (sem_wait(&r[i].sem) && errno == EINTR)
			;
		sem_destroy(&r[i].sem);
		assert_int_equal(r[i].status, -EAGAIN);
	}
	store_close(st);
	tdir_remove(&t);
}

/* A done() that holds the query thread until released. */
struct gate {
	sem_t entered, release;
};

static void gate_done(void *arg, int status, const search_hit *hits,
		      unsigned n)
{
	struct gate *g = arg;

	(void)status;
	(void)hits;
	(void)n;
	sem_post(&g->entered);
	while (sem_wait(&g->release) && errno == EINTR)
		;
}

static void count_done(void *arg, int status, const search_hit *hits,
		       unsigned n)
{
	(void)status;
	(void)hits;
	(void)n;
	__atomic_add_fetch((unsigned *)arg, 1, __ATOMIC_RELAXED);
}

/* One thread answers every query: while it is held up, at most
 * SEARCH_MAX_QUEUED wait and the next is refused with -EBUSY (no memory
 * grows without bound); every accepted one is answered once the thread
 * moves again, and the queue takes queries again. */
static void test_queue_bound(void **state)
{
	struct tdir t;
	search *sx;
	struct gate g;
	unsigned answered = 0;
	static struct qres r;

	(void)state;
	tdir_make(&t);
	sx = open_ok(t.idx, NULL);
	fill_basic(sx);
	sem_init(&g.entered, 0, 0);
	sem_init(&g.release, 0, 0);
	assert_int_equal(search_query(sx, "fox", 3, ALL, 3, 10, gate_done, &g),
			 0);
	while (sem_wait(&g.entered) && errno == EINTR)
		;
	for (unsigned i = 0; i < SEARCH_MAX_QUEUED; i++)
		assert_int_equal(search_query(sx, "fox", 3, ALL, 3, 10,
					      count_done, &answered), 0);
	assert_int_equal(search_query(sx, "fox", 3, ALL, 3, 10, count_done,
				      &answered), -EBUSY);
	sem_post(&g.release);
	/* every accepted one is answered (5 s at most) ... */
	for (int i = 0; i < 5000 && __atomic_load_n(&answered,
						     __ATOMIC_RELAXED) <
					    SEARCH_MAX_QUEUED; i++)
		usleep(1000);
	assert_int_equal(__atomic_load_n(&answered, __ATOMIC_RELAXED),
			 SEARCH_MAX_QUEUED);
	/* ... and the queue takes queries again */
	assert_int_equal(query_in(sx, "fox", ALL, 10, &r), 0);
	assert_int_equal(r.n, 1);
	search_close(sx);
	sem_destroy(&g.entered);
	sem_destroy(&g.release);
	tdir_remove(&t);
}

/* ---- freshness ------------------------------------------------------------ */

/* A query submitted after an event was fed, but before the feeding shard
 * ended its turn (its ack may already be out: it goes to the connection's
 * shard at once), waits for the flush and finds the event. */
static void test_fresh_unflushed(void **state)
{
	struct tdir t;
	search *sx;
	static struct qres r;

	(void)state;
	tdir_make(&t);
	sx = open_ok(t.idx, NULL);
	fill_basic(sx);
	feed_msg(sx, "a", 3, T0 + 10, "an unflushed marmot");
	/* the search arrives (another thread, in parleyd) */
	memset(&r, 0, sizeof(r));
	sem_init(&r.sem, 0, 0);
	assert_int_equal(search_query(sx, "marmot", 6, ALL, 3, 10, qdone, &r),
			 0);
	usleep(50 * 1000); /* the shard's turn goes on a while */
	search_feed_flush(sx, 0);
	while (sem_wait(&r.sem) && errno == EINTR)
		;
	sem_destroy(&r.sem);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.h[0].body, "an unflushed marmot");
	/* and without any wait between feed, flush and query */
	for (unsigned i = 0; i < 200; i++) {
		char body[64], q[32];

		snprintf(body, sizeof(body), "fresh word%04u", i);
		snprintf(q, sizeof(q), "word%04u", i);
		feed_msg(sx, "b", 3 + i, T0 + 20 + i, body);
		search_feed_flush(sx, 0);
		assert_int_equal(query_in(sx, q, ALL, 10, &r), 0);
		assert_int_equal(r.n, 1);
	}
	search_close(sx);
	tdir_remove(&t);
}

/* The indexer held up past a query's wait: the answer is what the index
 * has, flagged SEARCH_PARTIAL; once the indexer is through, complete. */
static void test_fresh_partial(void **state)
{
	struct tdir t;
	search *sx;
	static struct qres r;

	(void)state;
	tdir_make(&t);
	setenv("PARLEY_TEST_SEARCH_STALL_MS", "3000", 1);
	sx = open_ok(t.idx, NULL);
	unsetenv("PARLEY_TEST_SEARCH_STALL_MS");
	feed_msg(sx, "a", 1, T0 + 1, "a held up heron");
	search_feed_flush(sx, 0);
	assert_int_equal(query_in(sx, "heron", ALL, 10, &r), SEARCH_PARTIAL);
	assert_int_equal(r.n, 0);
	search_sync(sx);
	assert_int_equal(query_in(sx, "heron", ALL, 10, &r), 0);
	assert_int_equal(r.n, 1);
	search_close(sx);
	tdir_remove(&t);
}

/* Batches dropped under pressure (this binary's PENDING_MAX is tiny, and
 * the indexer is held up so that they are): a query that says it is
 * complete (not SEARCH_PARTIAL) has every event fed before it, also those
 * the catch-up pass has yet to read back from the log. */
static void test_fresh_drops(void **state)
{
	enum { B = 8, PER = 50 };
	struct tdir t;
	store *st;
	search *sx;
	static struct qres r;
	char tag[32];
	uint64_t end;

	(void)state;
	tdir_make(&t);
	st = store_ok(t.db);
	setenv("PARLEY_TEST_SEARCH_STALL_MS", "300", 1);
	sx = open_ok(t.idx, st);
	unsetenv("PARLEY_TEST_SEARCH_STALL_MS");
	for (unsigned k = 0; k < B; k++) {
		uint64_t from = 1 + (uint64_t)k * PER;

		snprintf(tag, sizeof(tag), "batch%u", k);
		store_msgs(st, "a", from, from + PER - 1, tag);
		feed_from_store(sx, st, "a", from, from + PER - 1);
		search_feed_flush(sx, 0);
		if (k == B / 2)
			usleep(500 * 1000); /* the indexer drains: the next
					     * batches go through again, past
					     * a hole */
	}
	end = (uint64_t)time(NULL) + 60;
	for (unsigned k = 0; k < B; k++) {
		snprintf(tag, sizeof(tag), "batch%u", k);
		for (;;) {
			int s = query_in(sx, tag, ALL, 100, &r);

			if (s == 0)
				break;
			assert_int_equal(s, SEARCH_PARTIAL);
			assert_true((uint64_t)time(NULL) < end);
		}
		if (r.n != PER)
			fail_msg("%s: %u hits, not partial; want %u", tag, r.n,
				 PER);
	}
	search_close(sx);
	store_close(st);
	tdir_remove(&t);
}

int main(int argc, char **argv)
{
	static const struct CMUnitTest all[] = {
		cmocka_unit_test(test_words),
		cmocka_unit_test(test_prefix),
		cmocka_unit_test(test_phrase),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_edit_delete),
		cmocka_unit_test(test_order),
		cmocka_unit_test(test_channels),
		cmocka_unit_test(test_catchup),
		cmocka_unit_test(test_gap),
		cmocka_unit_test(test_reset),
		cmocka_unit_test(test_corrupt),
		cmocka_unit_test(test_close_flushes),
		cmocka_unit_test(test_stop_leaves_rest),
		cmocka_unit_test(test_stop_cuts_catchup),
		cmocka_unit_test(test_close_answers_waiting_queries),
		cmocka_unit_test(test_queue_bound),
		cmocka_unit_test(test_fresh_unflushed),
		cmocka_unit_test(test_fresh_partial),
		cmocka_unit_test(test_fresh_drops),
	};
	struct CMUnitTest pick[sizeof(all) / sizeof(all[0])];
	size_t n = 0;

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		/* cmocka 1.1.5 has no test filter: select by name here */
		if (argc < 2 || !strcmp(all[i].name + strlen("test_"), argv[1]))
			pick[n++] = all[i];
	}
	if (!n) {
		fprintf(stderr, "no test named %s\n", argv[1]);
		return 2;
	}
	return _cmocka_run_group_tests("search", pick, n, NULL, NULL);
}
