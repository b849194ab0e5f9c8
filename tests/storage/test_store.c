/*
 * Unit tests of storage/store.c, run by ctest: `test_store NAME` runs the
 * case NAME, no argument runs them all. Each case works in its own mkdtemp
 * directory and removes it. The crash case re-executes this binary as
 * `test_store --crash-child DIR FD` so the child starts with no RocksDB
 * threads inherited from earlier cases; the child hands each acknowledged
 * seq back through the pipe FD until it is killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <rocksdb/c.h>

#include "storage/store.h"

/* ---- fixtures ---------------------------------------------------------- */

struct tdir {
	char root[256];
	char db[300];
};

static void tdir_make(struct tdir *t)
{
	const char *base = getenv("TMPDIR");

	snprintf(t->root, sizeof(t->root), "%s/parley-store-XXXXXX",
		 base && *base ? base : "/tmp");
	assert_non_null(mkdtemp(t->root));
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

static store *open_ok(const char *dir, unsigned nranges, unsigned nshards)
{
	store *s = NULL;
	char *err = NULL;

	if (store_open(&s, dir, nranges, nshards, &err)) {
		fprintf(stderr, "store_open: %s\n", err ? err : "?");
		free(err);
		fail();
	}
	assert_null(err);
	return s;
}

struct waiter {
	sem_t sem;
	int status;
};

static void wait_done(void *ctx, int status)
{
	struct waiter *w = ctx;

	w->status = status;
	sem_post(&w->sem);
}

/* Commits b and waits for its callback; returns its status. */
static int commit_wait(store *s, unsigned shard, store_batch *b)
{
	struct waiter w = { .status = 1 };

	sem_init(&w.sem, 0, 0);
	assert_int_equal(store_commit(s, shard, b, wait_done, &w), 0);
	while (sem_wait(&w.sem) && errno == EINTR)
		;
	sem_destroy(&w.sem);
	return w.status;
}

static store_channel chan(const char *id, const char *ws, const char *name,
			  uint8_t kind)
{
	store_channel c;

	memset(&c, 0, sizeof(c));
	snprintf(c.id, sizeof(c.id), "%s", id);
	snprintf(c.ws, sizeof(c.ws), "%s", ws);
	snprintf(c.name, sizeof(c.name), "%s", name);
	snprintf(c.creator, sizeof(c.creator), "creator-of-%s", id);
	c.kind = kind;
	c.created_ms = 1700000000123ull;
	return c;
}

/* Collectors for the scan callbacks. */
struct ids {
	char v[64][STORE_ID_MAX + 1];
	unsigned n;
	unsigned stop_after; /* 0: never stop */
};

static int ids_add(void *arg, const char *id, size_t len)
{
	struct ids *a = arg;

	assert_true(len <= STORE_ID_MAX);
	assert_int_equal(strlen(id), len);
	assert_true(a->n < 64);
	memcpy(a->v[a->n], id, len);
	a->v[a->n][len] = 0;
	a->n++;
	return a->stop_after && a->n == a->stop_after;
}

struct recs {
	uint64_t seq[4096];
	char val[4096][24];
	unsigned n;
	unsigned stop_after;
};

static int recs_add(void *arg, uint64_t seq, const void *v, size_t len)
{
	struct recs *r = arg;

	assert_true(r->n < 4096);
	assert_true(len < sizeof(r->val[0]));
	r->seq[r->n] = seq;
	memcpy(r->val[r->n], v, len);
	r->val[r->n][len] = 0;
	r->n++;
	return r->stop_after && r->n == r->stop_after;
}

static void put_event_text(store_batch *b, const char *ch, uint64_t seq,
			   uint64_t msgs_cum)
{
	char ev[24];
	int n = snprintf(ev, sizeof(ev), "ev%llu", (unsigned long long)seq);

	store_put_event(b, ch, seq, ev, (size_t)n, msgs_cum);
}

static void put_msg_text(store_batch *b, const char *ch, uint64_t root,
			 uint64_t seq)
{
	char m[24];
	int n = snprintf(m, sizeof(m), "m%llu", (unsigned long long)seq);

	store_put_msg(b, ch, root, seq, m, (size_t)n);
}

static void expect_seqs(const struct recs *r, const uint64_t *want, unsigned n)
{
	assert_int_equal(r->n, n);
	for (unsigned i = 0; i < n; i++)
		assert_int_equal(r->seq[i], want[i]);
}

/* ---- records ----------------------------------------------------------- */

static void test_records(void **state)
{
	struct tdir t;
	store *s;
	store_batch *b;
	store_channel pub = chan("general", "ws1", "General chat",
				 STORE_PUBLIC);
	store_channel priv = chan("secret", "ws1", "", STORE_PRIVATE);
	store_channel dm = chan("dm.alice.bob", "ws1", "", STORE_DM);
	store_channel got;
	store_chstat st = { .last_seq = 3, .msgs = 2, .members = 2 }, gst;
	store_member m = { .read_seq = 2, .joined_ms = 42 }, gm;
	char longname[81];
	uint64_t seq, n;
	void *v;
	size_t len;

	(void)state;
	memset(longname, 'x', 80);
	longname[80] = 0;
	snprintf(priv.name, sizeof(priv.name), "%s", longname);

	tdir_make(&t);
	s = open_ok(t.db, 8, 1);
	b = store_batch_new(s);
	assert_non_null(b);
	store_put_channel(b, &pub);
	store_put_channel(b, &priv);
	store_put_channel(b, &dm);
	store_put_chstat(b, "general", &st);
	store_put_member(b, "ws1", "general", "alice", &m);
	store_put_cmid(b, "general", "alice", "c-1", 3, 1);
	store_put_cmid(b, "general", "alice", "c\0x", 3, 2);
	store_put_mention(b, "general", "bob", 3, 1);
	put_event_text(b, "general", 1, 1);
	put_event_text(b, "general", 2, 0);
	put_event_text(b, "general", 3, 2);
	put_msg_text(b, "general", 0, 1);
	put_msg_text(b, "general", 1, 3);
	assert_true(store_batch_count(b) > 10);
	assert_int_equal(commit_wait(s, 0, b), 0);

	assert_int_equal(store_get_channel(s, "general", &got), 0);
	assert_string_equal(got.id, "general");
	assert_string_equal(got.ws, "ws1");
	assert_string_equal(got.name, "General chat");
	assert_string_equal(got.creator, "creator-of-general");
	assert_int_equal(got.kind, STORE_PUBLIC);
	assert_int_equal(got.created_ms, 1700000000123ull);
	assert_int_equal(store_get_channel(s, "secret", &got), 0);
	assert_string_equal(got.name, longname);
	assert_int_equal(got.kind, STORE_PRIVATE);
	assert_int_equal(store_get_channel(s, "dm.alice.bob", &got), 0);
	assert_string_equal(got.name, "");
	assert_int_equal(got.kind, STORE_DM);
	assert_int_equal(store_get_channel(s, "nope", &got), -ENOENT);
	assert_int_equal(store_get_channel(s, "genera", &got), -ENOENT);

	assert_int_equal(store_get_chstat(s, "general", &gst), 0);
	assert_memory_equal(&gst, &st, sizeof(st));
	assert_int_equal(store_get_chstat(s, "secret", &gst), -ENOENT);

	assert_int_equal(store_get_member(s, "general", "alice", &gm), 0);
	assert_memory_equal(&gm, &m, sizeof(m));
	assert_int_equal(store_get_member(s, "general", "alic", &gm), -ENOENT);
	assert_int_equal(store_get_member(s, "secret", "alice", &gm), -ENOENT);

	assert_int_equal(store_get_cmid(s, "general", "alice", "c-1", 3, &seq),
			 0);
	assert_int_equal(seq, 1);
	assert_int_equal(store_get_cmid(s, "general", "alice", "c\0x", 3, &seq),
			 0);
	assert_int_equal(seq, 2);
	assert_int_equal(store_get_cmid(s, "general", "alice", "c-2", 3, &seq),
			 -ENOENT);
	assert_int_equal(store_get_cmid(s, "general", "bob", "c-1", 3, &seq),
			 -ENOENT);

	assert_int_equal(store_count_mentions(s, "general", "bob", 0, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_count_mentions(s, "general", "alice", 0, &n), 0);
	assert_int_equal(n, 0);

	assert_int_equal(store_get_msg(s, "general", 0, 1, &v, &len), 0);
	assert_int_equal(len, 2);
	assert_memory_equal(v, "m1", 2);
	free(v);
	assert_int_equal(store_get_msg(s, "general", 1, 3, &v, &len), 0);
	assert_memory_equal(v, "m3", 2);
	free(v);
	assert_int_equal(store_get_msg(s, "general", 0, 3, &v, &len), -ENOENT);
	assert_int_equal(store_get_msg(s, "general", 1, 1, &v, &len), -ENOENT);

	/* Counts are stored at 1 and 3 only (2 is not a msg event). */
	assert_int_equal(store_msgs_at(s, "general", 0, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(store_msgs_at(s, "general", 1, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_msgs_at(s, "general", 2, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_msgs_at(s, "general", 3, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(store_msgs_at(s, "general", UINT64_MAX, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(store_msgs_at(s, "secret", 10, &n), 0);
	assert_int_equal(n, 0);

	store_close(s);
	tdir_remove(&t);
}

/* ---- scans ------------------------------------------------------------- */

static void test_scans(void **state)
{
	struct tdir t;
	store *s;
	store_batch *b;
	store_member m = { 0 };
	store_channel c1 = chan("c1", "ws1", "one", STORE_PUBLIC);
	store_channel c2 = chan("c2", "ws1", "two", STORE_PRIVATE);
	store_channel c3 = chan("c3", "ws1", "three", STORE_PUBLIC);
	store_channel c4 = chan("c4", "ws10", "four", STORE_PUBLIC);
	static struct recs r;
	struct ids ids;
	char user[16];
	int more;

	(void)state;
	tdir_make(&t);
	/* One history family: channels share it, so a scan that leaks past
	 * its channel's prefix shows up ("c1" vs "c10"). */
	s = open_ok(t.db, 1, 1);
	b = store_batch_new(s);
	store_put_channel(b, &c1);
	store_put_channel(b, &c2);
	store_put_channel(b, &c3);
	store_put_channel(b, &c4);
	store_put_member(b, "ws1", "c1", "bo", &m);
	store_put_member(b, "ws1", "c2", "bo", &m);
	store_put_member(b, "ws1", "c3", "bob", &m);
	store_put_member(b, "ws10", "c4", "bo", &m);
	for (int i = 10; i >= 1; i--) {
		snprintf(user, sizeof(user), "u%02d", i);
		store_put_member(b, "ws1", "c10", user, &m);
	}
	store_put_member(b, "ws1", "c11", "a", &m);
	store_put_member(b, "ws1", "c11", "ab", &m);
	store_put_member(b, "ws1", "c11", "b", &m);
	for (uint64_t q = 1; q <= 20; q++) {
		put_event_text(b, "c1", q, q);
		put_event_text(b, "c10", q + 100, 0);
	}
	/* Top-level 1 2 4 5 7; thread 2: 3 6 8; thread 5: 9; threads 255 and
	 * 256 to cross a byte boundary of the root in the key. */
	put_msg_text(b, "c1", 0, 1);
	put_msg_text(b, "c1", 0, 2);
	put_msg_text(b, "c1", 2, 3);
	put_msg_text(b, "c1", 0, 4);
	put_msg_text(b, "c1", 0, 5);
	put_msg_text(b, "c1", 2, 6);
	put_msg_text(b, "c1", 0, 7);
	put_msg_text(b, "c1", 2, 8);
	put_msg_text(b, "c1", 5, 9);
	put_msg_text(b, "c1", 255, 300);
	put_msg_text(b, "c1", 256, 301);
	put_msg_text(b, "c10", 0, 3);
	put_msg_text(b, "c10", 2, 10);
	assert_int_equal(commit_wait(s, 0, b), 0);

	/* user channels */
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(store_scan_user_channels(s, "ws1", "bo", ids_add,
						  &ids), 0);
	assert_int_equal(ids.n, 2);
	assert_string_equal(ids.v[0], "c1");
	assert_string_equal(ids.v[1], "c2");
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(store_scan_user_channels(s, "ws10", "bo", ids_add,
						  &ids), 0);
	assert_int_equal(ids.n, 1);
	assert_string_equal(ids.v[0], "c4");
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(store_scan_user_channels(s, "ws1", "nobody", ids_add,
						  &ids), 0);
	assert_int_equal(ids.n, 0);

	/* public */
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(store_scan_public(s, "ws1", ids_add, &ids), 0);
	assert_int_equal(ids.n, 2);
	assert_string_equal(ids.v[0], "c1");
	assert_string_equal(ids.v[1], "c3");
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(store_scan_public(s, "ws10", ids_add, &ids), 0);
	assert_int_equal(ids.n, 1);

	/* members: pages of 4 */
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(store_scan_members(s, "c10", NULL, 4, ids_add, &ids,
					    &more), 0);
	assert_int_equal(ids.n, 4);
	assert_string_equal(ids.v[0], "u01");
	assert_string_equal(ids.v[3], "u04");
	assert_int_equal(more, 1);
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(store_scan_members(s, "c10", "u04", 4, ids_add, &ids,
					    &more), 0);
	assert_int_equal(ids.n, 4);
	assert_string_equal(ids.v[0], "u05");
	assert_string_equal(ids.v[3], "u08");
	assert_int_equal(more, 1);
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(store_scan_members(s, "c10", "u08", 4, ids_add, &ids,
					    &more), 0);
	assert_int_equal(ids.n, 2);
	assert_string_equal(ids.v[1], "u10");
	assert_int_equal(more, 0);
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(store_scan_members(s, "c10", "u10", 4, ids_add, &ids,
					    &more), 0);
	assert_int_equal(ids.n, 0);
	assert_int_equal(more, 0);
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(store_scan_members(s, "c10", "", 0, ids_add, &ids,
					    &more), 0);
	assert_int_equal(ids.n, 10);
	assert_int_equal(more, 0);
	memset(&ids, 0, sizeof(ids));
	ids.stop_after = 2;
	assert_int_equal(store_scan_members(s, "c10", "", 100, ids_add, &ids,
					    &more), 0);
	assert_int_equal(ids.n, 2);
	assert_int_equal(more, 1);
	memset(&ids, 0, sizeof(ids));
	ids.stop_after = 1;
	assert_int_equal(store_scan_members(s, "c10", "u09", 100, ids_add,
					    &ids, &more), 0);
	assert_int_equal(ids.n, 1);
	assert_int_equal(more, 0);
	/* "after" that is a prefix of a longer id */
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(store_scan_members(s, "c11", "a", 10, ids_add, &ids,
					    NULL), 0);
	assert_int_equal(ids.n, 2);
	assert_string_equal(ids.v[0], "ab");
	assert_string_equal(ids.v[1], "b");
	/* "c1" must not pick up the members of "c10" and "c11" */
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(store_scan_members(s, "c1", NULL, 0, ids_add, &ids,
					    NULL), 0);
	assert_int_equal(ids.n, 1);
	assert_string_equal(ids.v[0], "bo");

	/* events */
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_events(s, "c1", 0, 5, recs_add, &r, &more),
			 0);
	expect_seqs(&r, (uint64_t[]){ 1, 2, 3, 4, 5 }, 5);
	assert_string_equal(r.val[0], "ev1");
	assert_int_equal(more, 1);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_events(s, "c1", 15, 5, recs_add, &r, &more),
			 0);
	expect_seqs(&r, (uint64_t[]){ 16, 17, 18, 19, 20 }, 5);
	assert_int_equal(more, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_events(s, "c1", 15, 10, recs_add, &r,
					   &more), 0);
	assert_int_equal(r.n, 5);
	assert_int_equal(more, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_events(s, "c1", 20, 10, recs_add, &r,
					   &more), 0);
	assert_int_equal(r.n, 0);
	assert_int_equal(more, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_events(s, "c1", 0, 0, recs_add, &r, NULL),
			 0);
	assert_int_equal(r.n, 20);
	memset(&r, 0, sizeof(r));
	r.stop_after = 3;
	assert_int_equal(store_scan_events(s, "c1", 10, 0, recs_add, &r,
					   &more), 0);
	expect_seqs(&r, (uint64_t[]){ 11, 12, 13 }, 3);
	assert_int_equal(more, 1);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_events(s, "c10", 0, 0, recs_add, &r,
					   &more), 0);
	assert_int_equal(r.n, 20);
	assert_int_equal(r.seq[0], 101);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_events(s, "c2", 0, 0, recs_add, &r,
					   &more), 0);
	assert_int_equal(r.n, 0);

	/* history, top level */
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_msgs(s, "c1", 0, 0, 1, 3, recs_add, &r,
					 &more), 0);
	expect_seqs(&r, (uint64_t[]){ 1, 2, 4 }, 3);
	assert_string_equal(r.val[2], "m4");
	assert_int_equal(more, 1);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_msgs(s, "c1", 0, 4, 1, 3, recs_add, &r,
					 &more), 0);
	expect_seqs(&r, (uint64_t[]){ 5, 7 }, 2);
	assert_int_equal(more, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_msgs(s, "c1", 0, 0, -1, 3, recs_add, &r,
					 &more), 0);
	expect_seqs(&r, (uint64_t[]){ 7, 5, 4 }, 3);
	assert_int_equal(more, 1);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_msgs(s, "c1", 0, 4, -1, 3, recs_add, &r,
					 &more), 0);
	expect_seqs(&r, (uint64_t[]){ 2, 1 }, 2);
	assert_int_equal(more, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_msgs(s, "c1", 0, 1, -1, 3, recs_add, &r,
					 &more), 0);
	assert_int_equal(r.n, 0);
	assert_int_equal(more, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_msgs(s, "c1", 0, 5, -1, 1, recs_add, &r,
					 &more), 0);
	expect_seqs(&r, (uint64_t[]){ 4 }, 1);
	assert_int_equal(more, 1);

	/* history, thread view */
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_msgs(s, "c1", 2, 0, 1, 10, recs_add, &r,
					 &more), 0);
	expect_seqs(&r, (uint64_t[]){ 3, 6, 8 }, 3);
	assert_int_equal(more, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_msgs(s, "c1", 2, 0, -1, 2, recs_add, &r,
					 &more), 0);
	expect_seqs(&r, (uint64_t[]){ 8, 6 }, 2);
	assert_int_equal(more, 1);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_msgs(s, "c1", 2, 6, -1, 2, recs_add, &r,
					 &more), 0);
	expect_seqs(&r, (uint64_t[]){ 3 }, 1);
	assert_int_equal(more, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_msgs(s, "c1", 5, 0, -1, 0, recs_add, &r,
					 &more), 0);
	expect_seqs(&r, (uint64_t[]){ 9 }, 1);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_msgs(s, "c1", 255, 0, -1, 0, recs_add, &r,
					 NULL), 0);
	expect_seqs(&r, (uint64_t[]){ 300 }, 1);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_msgs(s, "c1", 255, 0, 1, 0, recs_add, &r,
					 NULL), 0);
	expect_seqs(&r, (uint64_t[]){ 300 }, 1);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_msgs(s, "c1", 256, 0, 1, 0, recs_add, &r,
					 NULL), 0);
	expect_seqs(&r, (uint64_t[]){ 301 }, 1);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_msgs(s, "c1", 3, 0, 1, 0, recs_add, &r,
					 NULL), 0);
	assert_int_equal(r.n, 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_msgs(s, "c10", 0, 0, -1, 0, recs_add, &r,
					 NULL), 0);
	expect_seqs(&r, (uint64_t[]){ 3 }, 1);

	store_close(s);
	tdir_remove(&t);
}

/* ---- commit path ------------------------------------------------------- */

#define GC_N 1000

struct gc {
	sem_t gate;    /* holds the first callback until all are handed over */
	sem_t all;     /* posted by the last callback */
	uint64_t order[GC_N];
	int status[GC_N];
	unsigned n;    /* written by the sync thread only */
};

struct gc_ctx {
	struct gc *g;
	uint64_t seq;
};

static void gc_done(void *ctx, int status)
{
	struct gc_ctx *c = ctx;
	struct gc *g = c->g;

	if (c->seq == 1)
		while (sem_wait(&g->gate) && errno == EINTR)
			;
	g->order[g->n] = c->seq;
	g->status[g->n] = status;
	g->n++;
	if (g->n == GC_N)
		sem_post(&g->all);
}

static void test_group_commit(void **state)
{
	static struct gc g;
	static struct gc_ctx ctx[GC_N];
	static struct recs r;
	struct tdir t;
	store_stats st;
	store_chstat cs;
	uint64_t hsum = 0, bsum = 0;
	store *s;

	(void)state;
	tdir_make(&t);
	s = open_ok(t.db, 4, 2);
	memset(&g, 0, sizeof(g));
	sem_init(&g.gate, 0, 0);
	sem_init(&g.all, 0, 0);
	for (uint64_t q = 1; q <= GC_N; q++) {
		store_batch *b = store_batch_new(s);
		store_chstat c = { .last_seq = q, .msgs = q, .members = 1 };

		put_event_text(b, "gc", q, q);
		store_put_chstat(b, "gc", &c);
		ctx[q - 1] = (struct gc_ctx){ .g = &g, .seq = q };
		assert_int_equal(store_commit(s, 1, b, gc_done, &ctx[q - 1]),
				 0);
	}
	/* Batch 1 is written and its callback waits: everything after it
	 * is queued behind it, so the next write must merge them. */
	sem_post(&g.gate);
	while (sem_wait(&g.all) && errno == EINTR)
		;
	for (unsigned i = 0; i < GC_N; i++) {
		assert_int_equal(g.order[i], i + 1);
		assert_int_equal(g.status[i], 0);
	}

	store_get_stats(s, &st);
	assert_true(st.batches > st.commits);
	assert_int_equal(st.batches, GC_N);
	/* the event (its msg count in front of it) and the 'S' record */
	assert_int_equal(st.records, 2 * GC_N);
	assert_int_equal(st.failures, 0);
	for (int i = 0; i < 16; i++) {
		hsum += st.hist_us[i];
		bsum += st.hist_batch[i];
	}
	assert_int_equal(hsum, st.commits);
	assert_int_equal(bsum, st.commits);
	/* Whichever way the two writes split the 1,000, one held at least
	 * 500 batches: bucket 9 (<= 512) or up. */
	bsum = 0;
	for (int i = 9; i < 16; i++)
		bsum += st.hist_batch[i];
	assert_true(bsum >= 1);

	assert_int_equal(store_get_chstat(s, "gc", &cs), 0);
	assert_int_equal(cs.last_seq, GC_N);
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_events(s, "gc", 0, 0, recs_add, &r, NULL),
			 0);
	assert_int_equal(r.n, GC_N);

	sem_destroy(&g.gate);
	sem_destroy(&g.all);
	store_close(s);
	tdir_remove(&t);
}

/* One synced write holds batches that put, delete and range-delete the
 * same keys: the write sorts its puts by key and keeps only the last put
 * of a key, but nothing crosses a delete, so the result is what the
 * batches said in handoff order. */
static void test_group_order(void **state)
{
	static struct gc g;
	static struct gc_ctx ctx[5];
	struct tdir t;
	store *s;
	store_batch *b[5];
	store_member m1 = { .read_seq = 1 }, m5 = { .read_seq = 5 },
		     m9 = { .read_seq = 9 }, gm;
	store_stats st;
	store_chstat cs;
	uint64_t n;

	(void)state;
	tdir_make(&t);
	s = open_ok(t.db, 4, 1);
	memset(&g, 0, sizeof(g));
	sem_init(&g.gate, 0, 0);
	sem_init(&g.all, 0, 0);
	for (int i = 0; i < 5; i++)
		b[i] = store_batch_new(s);
	/* 0: written alone; its callback holds the thread while 1-4 queue */
	put_event_text(b[0], "go", 1, 1);
	/* 1: alice is a member, mentioned at 2 and 3; the counters */
	store_put_member(b[1], "ws", "go", "alice", &m1);
	store_put_mention(b[1], "go", "alice", 2, 1);
	store_put_mention(b[1], "go", "alice", 3, 2);
	store_put_chstat(b[1], "go", &(store_chstat){ 3, 3, 1 });
	/* 2: she leaves: her record, her channel, her mentions (a range) */
	store_del_member(b[2], "ws", "go", "alice");
	store_put_chstat(b[2], "go", &(store_chstat){ 3, 3, 0 });
	/* 3: she comes back and is mentioned at 7 */
	store_put_member(b[3], "ws", "go", "alice", &m5);
	store_put_mention(b[3], "go", "alice", 7, 1);
	store_put_chstat(b[3], "go", &(store_chstat){ 7, 4, 1 });
	/* 4: she reads up to 9; the counters again */
	store_put_marker(b[4], "go", "alice", &m9);
	store_put_chstat(b[4], "go", &(store_chstat){ 9, 5, 1 });
	for (int i = 0; i < 5; i++) {
		ctx[i] = (struct gc_ctx){ .g = &g, .seq = (uint64_t)i + 1 };
		assert_int_equal(store_commit(s, 0, b[i], gc_done, &ctx[i]),
				 0);
		/* 0 written, its callback holding the thread at the gate */
		do {
			store_get_stats(s, &st);
		} while (i == 0 && st.commits == 0 && !usleep(1000));
	}
	sem_post(&g.gate);
	while (__atomic_load_n(&g.n, __ATOMIC_ACQUIRE) < 5)
		usleep(1000);
	for (int i = 0; i < 5; i++)
		assert_int_equal(g.status[i], 0);
	store_get_stats(s, &st);
	assert_int_equal(st.commits, 2); /* batch 0, then 1-4 together */
	/* after the deletes: 3's member record and 4's marker are one key,
	 * and 2's, 3's and 4's counters another: three puts left out (1's
	 * counters are before the deletes) */
	assert_int_equal(st.records_merged, 3);

	assert_int_equal(store_get_member(s, "go", "alice", &gm), 0);
	assert_int_equal(gm.read_seq, 9);
	/* the mentions at 2 and 3 went with the range delete; 7 is back */
	assert_int_equal(store_count_mentions(s, "go", "alice", 0, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_count_mentions(s, "go", "alice", 6, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_get_chstat(s, "go", &cs), 0);
	assert_int_equal(cs.last_seq, 9);
	assert_int_equal(cs.msgs, 5);
	sem_destroy(&g.gate);
	sem_destroy(&g.all);
	store_close(s);
	tdir_remove(&t);
}

#define MS_SHARDS 4
#define MS_N 300

struct ms_prod {
	store *s;
	unsigned shard;
	char ch[8];
	uint64_t next_done; /* written by the shard's sync thread */
	int bad;
	sem_t fin;
};

static void ms_done(void *ctx, int status)
{
	struct ms_prod *p = ctx;

	p->next_done++;
	if (status)
		p->bad = 1;
	if (p->next_done == MS_N)
		sem_post(&p->fin);
}

static void *ms_main(void *arg)
{
	struct ms_prod *p = arg;

	for (uint64_t q = 1; q <= MS_N; q++) {
		store_batch *b = store_batch_new(p->s);
		store_chstat c = { .last_seq = q, .msgs = 0, .members = 0 };

		put_event_text(b, p->ch, q, 0);
		store_put_chstat(b, p->ch, &c);
		if (store_commit(p->s, p->shard, b, ms_done, p))
			p->bad = 1;
	}
	return NULL;
}

static void test_multi_shard(void **state)
{
	static struct ms_prod p[MS_SHARDS];
	static struct recs r;
	pthread_t th[MS_SHARDS];
	struct tdir t;
	store *s;

	(void)state;
	tdir_make(&t);
	s = open_ok(t.db, 16, MS_SHARDS);
	for (unsigned i = 0; i < MS_SHARDS; i++) {
		p[i] = (struct ms_prod){ .s = s, .shard = i };
		snprintf(p[i].ch, sizeof(p[i].ch), "ms%u", i);
		sem_init(&p[i].fin, 0, 0);
		assert_int_equal(pthread_create(&th[i], NULL, ms_main, &p[i]),
				 0);
	}
	for (unsigned i = 0; i < MS_SHARDS; i++) {
		pthread_join(th[i], NULL);
		while (sem_wait(&p[i].fin) && errno == EINTR)
			;
	}
	for (unsigned i = 0; i < MS_SHARDS; i++) {
		store_chstat cs;

		assert_int_equal(p[i].bad, 0);
		assert_int_equal(store_get_chstat(s, p[i].ch, &cs), 0);
		assert_int_equal(cs.last_seq, MS_N);
		memset(&r, 0, sizeof(r));
		assert_int_equal(store_scan_events(s, p[i].ch, 0, 0, recs_add,
						   &r, NULL), 0);
		assert_int_equal(r.n, MS_N);
		for (unsigned j = 0; j < MS_N; j++)
			assert_int_equal(r.seq[j], j + 1);
		sem_destroy(&p[i].fin);
	}
	store_close(s);
	tdir_remove(&t);
}

/* A cluster's log carries batches as bytes (store_batch_bytes) to other
 * hosts (store_batch_load): the same records land there; bytes that are
 * not whole records of this store's families are refused whole. */
static void test_batch_bytes(void **state)
{
	struct tdir ta, tb;
	store *a, *b;
	store_batch *x, *y;
	store_channel ch = chan("Cbytes", "ws1", "bytes", 1);
	store_channel got;
	const void *d;
	size_t n;
	char *bad;

	(void)state;
	tdir_make(&ta);
	tdir_make(&tb);
	a = open_ok(ta.db, 4, 1);
	b = open_ok(tb.db, 4, 1);
	x = store_batch_new(a);
	store_put_channel(x, &ch);
	put_event_text(x, "Cbytes", 1, 0);
	store_del_member(x, "ws1", "Cbytes", "gone");
	d = store_batch_bytes(x, &n);
	assert_non_null(d);
	assert_true(n > 0);
	y = store_batch_load(b, d, n);
	assert_non_null(y);
	assert_int_equal(store_batch_count(y), store_batch_count(x));
	assert_int_equal(commit_wait(b, 0, y), 0);
	assert_int_equal(store_get_channel(b, "Cbytes", &got), 0);
	assert_string_equal(got.name, "bytes");
	{
		static struct recs r;

		memset(&r, 0, sizeof(r));
		assert_int_equal(store_scan_events(b, "Cbytes", 0, 0, recs_add,
						   &r, NULL), 0);
		assert_int_equal(r.n, 1);
	}
	/* torn: every shorter prefix that ends inside a record */
	bad = malloc(n);
	memcpy(bad, d, n);
	for (size_t cut = 1; cut < n; cut++) {
		y = store_batch_load(b, bad, cut);
		if (y) /* only at a record boundary */
			store_batch_free(y);
	}
	assert_null(store_batch_load(b, bad, n - 1));
	/* an unknown op, a family this store does not have */
	bad[0] = 9;
	assert_null(store_batch_load(b, bad, n));
	memcpy(bad, d, n);
	bad[2] = 7; /* the first record's family: 7, of 4 (and not meta) */
	bad[3] = 0;
	assert_null(store_batch_load(b, bad, n));
	/* empty is a valid batch */
	y = store_batch_load(b, NULL, 0);
	assert_non_null(y);
	assert_int_equal(store_batch_count(y), 0);
	store_batch_free(y);
	free(bad);
	store_batch_free(x);
	store_close(a);
	store_close(b);
	tdir_remove(&ta);
	tdir_remove(&tb);
}

static void test_empty_and_invalid(void **state)
{
	struct tdir t;
	store_stats st;
	store_batch *b;
	store *s;

	(void)state;
	tdir_make(&t);
	s = open_ok(t.db, 2, 2);
	b = store_batch_new(s);
	assert_int_equal(store_batch_count(b), 0);
	assert_int_equal(commit_wait(s, 1, b), 0);
	store_get_stats(s, &st);
	assert_int_equal(st.failures, 0);

	b = store_batch_new(s);
	assert_int_equal(store_commit(s, 2, b, wait_done, NULL), -EINVAL);
	store_batch_free(b);

	/* batches left in flight are written before close returns */
	for (uint64_t q = 1; q <= 50; q++) {
		b = store_batch_new(s);
		put_event_text(b, "late", q, 0);
		assert_int_equal(store_commit(s, (unsigned)q % 2, b, NULL,
					      NULL), 0);
	}
	store_close(s);
	s = open_ok(t.db, 2, 2);
	{
		static struct recs r;

		memset(&r, 0, sizeof(r));
		assert_int_equal(store_scan_events(s, "late", 0, 0, recs_add,
						   &r, NULL), 0);
		assert_int_equal(r.n, 50);
	}
	store_close(s);
	tdir_remove(&t);
}

/* ---- reopen and open errors -------------------------------------------- */

static size_t count_families(const char *dir, char *names_out, size_t cap)
{
	rocksdb_options_t *o = rocksdb_options_create();
	char *err = NULL, **names;
	size_t n = 0;

	names = rocksdb_list_column_families(o, dir, &n, &err);
	assert_null(err);
	names_out[0] = 0;
	for (size_t i = 0; i < n; i++) {
		strncat(names_out, names[i], cap - strlen(names_out) - 2);
		strcat(names_out, " ");
	}
	rocksdb_list_column_families_destroy(names, n);
	rocksdb_options_destroy(o);
	return n;
}

static void test_reopen(void **state)
{
	struct tdir t;
	store *s;
	store_batch *b;
	store_channel c = chan("keep", "ws", "Keep", STORE_PUBLIC);
	store_chstat cs = { .last_seq = 30, .msgs = 30, .members = 1 }, got;
	store_member m = { .read_seq = 7, .joined_seq = 0, .joined_ms = 9 }, gm;
	char names[512];
	static struct recs r;
	uint64_t n;
	struct ids ids;

	(void)state;
	tdir_make(&t);
	s = open_ok(t.db, 4, 1);
	b = store_batch_new(s);
	store_put_channel(b, &c);
	store_put_member(b, "ws", "keep", "zoe", &m);
	for (uint64_t q = 1; q <= 30; q++) {
		put_event_text(b, "keep", q, q);
		put_msg_text(b, "keep", 0, q);
		for (int k = 0; k < 10; k++) {
			char ch[16];

			snprintf(ch, sizeof(ch), "k%d", k);
			put_event_text(b, ch, q, 0);
		}
	}
	store_put_chstat(b, "keep", &cs);
	assert_int_equal(commit_wait(s, 0, b), 0);
	store_close(s);

	assert_int_equal(count_families(t.db, names, sizeof(names)), 6);
	/* A different nranges is ignored: the channels must stay where the
	 * database put them. */
	s = open_ok(t.db, 16, 3);
	assert_int_equal(count_families(t.db, names, sizeof(names)), 6);
	assert_non_null(strstr(names, "h03 "));
	assert_null(strstr(names, "h04"));
	assert_int_equal(store_get_chstat(s, "keep", &got), 0);
	assert_memory_equal(&got, &cs, sizeof(cs));
	assert_int_equal(store_get_member(s, "keep", "zoe", &gm), 0);
	assert_memory_equal(&gm, &m, sizeof(m));
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(store_scan_public(s, "ws", ids_add, &ids), 0);
	assert_int_equal(ids.n, 1);
	for (int k = 0; k < 10; k++) {
		char ch[16];

		snprintf(ch, sizeof(ch), "k%d", k);
		memset(&r, 0, sizeof(r));
		assert_int_equal(store_scan_events(s, ch, 0, 0, recs_add, &r,
						   NULL), 0);
		assert_int_equal(r.n, 30);
	}
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_scan_msgs(s, "keep", 0, 0, -1, 5, recs_add, &r,
					 NULL), 0);
	expect_seqs(&r, (uint64_t[]){ 30, 29, 28, 27, 26 }, 5);
	assert_int_equal(store_msgs_at(s, "keep", 12, &n), 0);
	assert_int_equal(n, 12);
	store_close(s);
	tdir_remove(&t);
}

static void expect_open_fails(const char *dir, unsigned nranges,
			      const char *needle)
{
	store *s = (store *)&s;
	char *err = NULL;

	assert_int_equal(store_open(&s, dir, nranges, 1, &err), -1);
	assert_null(s);
	assert_non_null(err);
	if (needle && !strstr(err, needle)) {
		fprintf(stderr, "unexpected error: %s\n", err);
		fail();
	}
	free(err);
}

static void test_open_errors(void **state)
{
	struct tdir t;
	rocksdb_options_t *o;
	rocksdb_t *db;
	char *err = NULL;
	store *s;

	(void)state;
	tdir_make(&t);
	expect_open_fails(t.db, 0, "ranges");
	expect_open_fails(t.db, 101, "ranges");
	s = open_ok(t.db, 100, 1);
	store_close(s);
	tdir_remove(&t);

	/* a database with a family this layout does not know */
	tdir_make(&t);
	o = rocksdb_options_create();
	rocksdb_options_set_create_if_missing(o, 1);
	db = rocksdb_open(o, t.db, &err);
	assert_null(err);
	rocksdb_column_family_handle_destroy(
		rocksdb_create_column_family(db, o, "zzz", &err));
	assert_null(err);
	rocksdb_close(db);
	rocksdb_options_destroy(o);
	expect_open_fails(t.db, 4, "zzz");
	tdir_remove(&t);
}

/* ---- recovery ---------------------------------------------------------- */

static void test_recover_consistent(void **state)
{
	struct tdir t;
	store *s;
	store_member m = { 0 };
	store_chstat want[3], got;
	uint64_t nch, nrep;
	const char *chs[3] = { "ra", "rb", "rc" };

	(void)state;
	tdir_make(&t);
	s = open_ok(t.db, 8, 2);
	for (int i = 0; i < 3; i++) {
		store_channel c = chan(chs[i], "ws", chs[i], STORE_PRIVATE);
		store_batch *b = store_batch_new(s);
		uint64_t msgs = 0;

		store_put_channel(b, &c);
		store_put_member(b, "ws", chs[i], "u1", &m);
		store_put_member(b, "ws", chs[i], "u2", &m);
		want[i] = (store_chstat){ .last_seq = 0, .members = 2 };
		store_put_chstat(b, chs[i], &want[i]);
		assert_int_equal(commit_wait(s, (unsigned)i % 2, b), 0);
		for (uint64_t q = 1; q <= (uint64_t)(10 * (i + 1)); q++) {
			bool msg = q % 3 != 0;

			b = store_batch_new(s);
			if (msg)
				msgs++;
			put_event_text(b, chs[i], q, msg ? msgs : 0);
			want[i].last_seq = q;
			want[i].msgs = msgs;
			store_put_chstat(b, chs[i], &want[i]);
			assert_int_equal(commit_wait(s, (unsigned)i % 2, b), 0);
		}
	}
	store_close(s);

	s = open_ok(t.db, 8, 2);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(store_get_chstat(s, chs[i], &got), 0);
		assert_memory_equal(&got, &want[i], sizeof(got));
	}
	assert_int_equal(store_recover(s, &nch, &nrep), 0);
	assert_int_equal(nch, 3);
	assert_int_equal(nrep, 0);
	store_close(s);
	tdir_remove(&t);
}

static void test_recover_repair(void **state)
{
	struct tdir t;
	store *s;
	store_batch *b;
	store_member m = { 0 };
	store_channel ca = chan("rep-a", "ws", "a", STORE_PUBLIC);
	store_channel cb = chan("rep-b", "ws", "b", STORE_PUBLIC);
	store_channel cc = chan("rep-c", "ws", "c", STORE_PUBLIC);
	store_chstat good = { .last_seq = 5, .msgs = 3, .members = 2 };
	store_chstat bad = { .last_seq = 99, .msgs = 99, .members = 7 };
	store_chstat ghost = { .last_seq = 3, .msgs = 3, .members = 1 };
	store_chstat got;
	uint64_t nch, nrep;

	(void)state;
	tdir_make(&t);
	s = open_ok(t.db, 4, 1);
	b = store_batch_new(s);
	store_put_channel(b, &ca);
	store_put_member(b, "ws", "rep-a", "u1", &m);
	store_put_member(b, "ws", "rep-a", "u2", &m);
	put_event_text(b, "rep-a", 1, 1);
	put_event_text(b, "rep-a", 2, 2);
	put_event_text(b, "rep-a", 3, 0);
	put_event_text(b, "rep-a", 4, 3);
	put_event_text(b, "rep-a", 5, 0);
	store_put_chstat(b, "rep-a", &good);
	/* rep-b: created, events, but its 'S' never written */
	store_put_channel(b, &cb);
	store_put_member(b, "ws", "rep-b", "u1", &m);
	put_event_text(b, "rep-b", 1, 1);
	put_event_text(b, "rep-b", 2, 0);
	/* rep-c: 'S' claims events that do not exist */
	store_put_channel(b, &cc);
	store_put_member(b, "ws", "rep-c", "u1", &m);
	store_put_chstat(b, "rep-c", &ghost);
	assert_int_equal(commit_wait(s, 0, b), 0);

	assert_int_equal(store_recover(s, &nch, &nrep), 0);
	assert_int_equal(nch, 3);
	assert_int_equal(nrep, 2);

	/* Break rep-a with a batch holding only its 'S' record. */
	b = store_batch_new(s);
	store_put_chstat(b, "rep-a", &bad);
	assert_int_equal(commit_wait(s, 0, b), 0);
	assert_int_equal(store_get_chstat(s, "rep-a", &got), 0);
	assert_int_equal(got.last_seq, 99);

	assert_int_equal(store_recover(s, &nch, &nrep), 0);
	assert_int_equal(nch, 3);
	assert_int_equal(nrep, 1);
	assert_int_equal(store_get_chstat(s, "rep-a", &got), 0);
	assert_memory_equal(&got, &good, sizeof(got));
	assert_int_equal(store_get_chstat(s, "rep-b", &got), 0);
	assert_int_equal(got.last_seq, 2);
	assert_int_equal(got.msgs, 1);
	assert_int_equal(got.members, 1);
	assert_int_equal(store_get_chstat(s, "rep-c", &got), 0);
	assert_int_equal(got.last_seq, 0);
	assert_int_equal(got.msgs, 0);
	assert_int_equal(got.members, 1);

	/* Break it again and let store_open repair it. */
	b = store_batch_new(s);
	store_put_chstat(b, "rep-a", &bad);
	assert_int_equal(commit_wait(s, 0, b), 0);
	store_close(s);
	s = open_ok(t.db, 4, 1);
	assert_int_equal(store_get_chstat(s, "rep-a", &got), 0);
	assert_memory_equal(&got, &good, sizeof(got));
	assert_int_equal(store_recover(s, &nch, &nrep), 0);
	assert_int_equal(nrep, 0);
	store_close(s);
	tdir_remove(&t);
}

/* ---- mentions and members ---------------------------------------------- */

static int collect_version(void *arg, uint64_t seq, const void *v,
			   size_t len)
{
	char *out = arg;

	snprintf(out + strlen(out), 256 - strlen(out), "%llu:%.*s;",
		 (unsigned long long)seq, (int)len, (const char *)v);
	return 0;
}

static void test_mentions(void **state)
{
	struct tdir t;
	store *s;
	store_batch *b;
	uint64_t n, cum;
	void *ev;
	size_t len;
	char got[256] = "";

	(void)state;
	tdir_make(&t);
	s = open_ok(t.db, 4, 1);
	b = store_batch_new(s);
	store_put_mention(b, "mc", "alice", 3, 1);
	store_put_mention(b, "mc", "alice", 5, 2);
	store_put_mention(b, "mc", "alice", 9, 3);
	store_put_mention(b, "mc", "alice", 256, 4);
	store_put_mention(b, "mc", "alic", 4, 1);
	store_put_mention(b, "mc", "alicex", 4, 1);
	store_put_mention(b, "mc2", "alice", 4, 1);
	assert_int_equal(commit_wait(s, 0, b), 0);

	/* counts are the newest count minus the count at the marker */
	assert_int_equal(store_count_mentions(s, "mc", "alice", 0, &n), 0);
	assert_int_equal(n, 4);
	assert_int_equal(store_count_mentions(s, "mc", "alice", 3, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(store_count_mentions(s, "mc", "alice", 4, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(store_count_mentions(s, "mc", "alice", 5, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(store_count_mentions(s, "mc", "alice", 255, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_count_mentions(s, "mc", "alice", 256, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(store_count_mentions(s, "mc", "alice", UINT64_MAX, &n),
			 0);
	assert_int_equal(n, 0);
	/* ids that share a prefix do not see each other's keys */
	assert_int_equal(store_count_mentions(s, "mc", "alic", 0, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_count_mentions(s, "mc", "alicex", 0, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_count_mentions(s, "mc", "nobody", 0, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(store_mentions_total(s, "mc", "alice", &cum), 0);
	assert_int_equal(cum, 4);
	assert_int_equal(store_mentions_total(s, "mc2", "alice", &cum), 0);
	assert_int_equal(cum, 1);
	assert_int_equal(store_mentions_total(s, "mc3", "alice", &cum), 0);
	assert_int_equal(cum, 0);

	/* leaving drops them: a rejoin starts from none */
	b = store_batch_new(s);
	store_del_member(b, "ws", "mc", "alice");
	assert_int_equal(commit_wait(s, 0, b), 0);
	assert_int_equal(store_count_mentions(s, "mc", "alice", 0, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(store_count_mentions(s, "mc", "alicex", 0, &n), 0);
	assert_int_equal(n, 1);

	/* events read back one at a time, with their count; versions */
	b = store_batch_new(s);
	store_put_event(b, "mc", 7, "\x81\xa1" "t" "\xa2" "ev", 6, 3);
	store_put_version(b, "mc", 7, 9, "second", 6);
	store_put_version(b, "mc", 7, 12, "third", 5);
	store_put_version(b, "mc", 70, 13, "other", 5);
	assert_int_equal(commit_wait(s, 0, b), 0);
	assert_int_equal(store_get_event(s, "mc", 7, &ev, &len, &cum), 0);
	assert_int_equal(len, 6);
	assert_int_equal(cum, 3);
	assert_memory_equal(ev, "\x81\xa1" "t" "\xa2" "ev", 6);
	free(ev);
	assert_int_equal(store_get_event(s, "mc", 8, &ev, &len, &cum), -ENOENT);
	assert_int_equal(store_scan_versions(s, "mc", 7, collect_version, got),
			 0);
	assert_string_equal(got, "9:second;12:third;");
	b = store_batch_new(s);
	store_del_versions(b, "mc", 7);
	assert_int_equal(commit_wait(s, 0, b), 0);
	got[0] = 0;
	assert_int_equal(store_scan_versions(s, "mc", 7, collect_version, got),
			 0);
	assert_string_equal(got, "");
	assert_int_equal(store_scan_versions(s, "mc", 70, collect_version, got),
			 0);
	assert_string_equal(got, "13:other;");
	store_close(s);
	tdir_remove(&t);
}

static void test_del_member(void **state)
{
	struct tdir t;
	store *s;
	store_batch *b;
	store_member m = { .read_seq = 1 }, gm;
	struct ids ids;
	uint64_t n;

	(void)state;
	tdir_make(&t);
	s = open_ok(t.db, 4, 1);
	b = store_batch_new(s);
	store_put_member(b, "ws", "dc", "alice", &m);
	store_put_member(b, "ws", "dc2", "alice", &m);
	store_put_member(b, "ws", "dc", "bob", &m);
	store_put_mention(b, "dc", "alice", 2, 1);
	store_put_mention(b, "dc", "alice", 3, 2);
	store_put_mention(b, "dc", "bob", 3, 1);
	store_put_mention(b, "dc2", "alice", 3, 1);
	assert_int_equal(commit_wait(s, 0, b), 0);

	b = store_batch_new(s);
	store_del_member(b, "ws", "dc", "alice");
	assert_int_equal(commit_wait(s, 0, b), 0);

	assert_int_equal(store_get_member(s, "dc", "alice", &gm), -ENOENT);
	assert_int_equal(store_get_member(s, "dc", "bob", &gm), 0);
	assert_int_equal(store_get_member(s, "dc2", "alice", &gm), 0);
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(store_scan_user_channels(s, "ws", "alice", ids_add,
						  &ids), 0);
	assert_int_equal(ids.n, 1);
	assert_string_equal(ids.v[0], "dc2");
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(store_scan_members(s, "dc", NULL, 0, ids_add, &ids,
					    NULL), 0);
	assert_int_equal(ids.n, 1);
	assert_string_equal(ids.v[0], "bob");
	assert_int_equal(store_count_mentions(s, "dc", "alice", 0, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(store_count_mentions(s, "dc", "bob", 0, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_count_mentions(s, "dc2", "alice", 0, &n), 0);
	assert_int_equal(n, 1);
	store_close(s);
	tdir_remove(&t);
}

/* ---- crash ------------------------------------------------------------- */

#define CRASH_CH 2
#define CRASH_INFLIGHT 32
#define CRASH_KILL_AFTER 600
static const char *const crash_ch[CRASH_CH] = { "crash-a", "crash-b" };

struct ack {
	uint64_t ch;
	uint64_t seq;
};

static int crash_fd;
static uint64_t crash_acked[CRASH_CH];

static void crash_done(void *ctx, int status)
{
	uintptr_t v = (uintptr_t)ctx;
	struct ack a = { .ch = v & 1, .seq = v >> 1 };

	if (status)
		_exit(3);
	/* 16 bytes < PIPE_BUF: the two sync threads' writes never mix. */
	if (write(crash_fd, &a, sizeof(a)) != (ssize_t)sizeof(a))
		_exit(4);
	__atomic_store_n(&crash_acked[a.ch], a.seq, __ATOMIC_RELEASE);
}

/* The child: commits events on two channels (two shards) until killed. */
static int crash_child(const char *dir, int fd)
{
	store_member m = { 0 };
	time_t t0 = time(NULL);
	store *s;
	char *err = NULL;

	crash_fd = fd;
	if (store_open(&s, dir, 4, CRASH_CH, &err)) {
		fprintf(stderr, "crash child: %s\n", err);
		return 2;
	}
	for (unsigned c = 0; c < CRASH_CH; c++) {
		store_channel ch = chan(crash_ch[c], "ws", "crash",
					STORE_PUBLIC);
		store_chstat st = { .members = 1 };
		store_batch *b = store_batch_new(s);

		store_put_channel(b, &ch);
		store_put_member(b, "ws", crash_ch[c], "u", &m);
		store_put_chstat(b, crash_ch[c], &st);
		if (commit_wait(s, c, b))
			return 2;
	}
	for (uint64_t q = 1; time(NULL) - t0 < 120; q++) {
		for (unsigned c = 0; c < CRASH_CH; c++) {
			store_chstat st = { .last_seq = q, .msgs = q,
					    .members = 1 };
			store_batch *b = store_batch_new(s);
			char cmid[24];
			int n = snprintf(cmid, sizeof(cmid), "cm%llu",
					 (unsigned long long)q);

			put_event_text(b, crash_ch[c], q, q);
			put_msg_text(b, crash_ch[c], 0, q);
			store_put_cmid(b, crash_ch[c], "u", cmid, (size_t)n, q);
			store_put_chstat(b, crash_ch[c], &st);
			store_commit(s, c, b, crash_done,
				     (void *)(uintptr_t)(q << 1 | c));
			while (q - __atomic_load_n(&crash_acked[c],
						   __ATOMIC_ACQUIRE) >
			       CRASH_INFLIGHT)
				usleep(50);
		}
	}
	store_close(s);
	return 0;
}

static uint64_t be64(const char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | (unsigned char)p[i];
	return v;
}

/*
 * Independent of store.c's decoding: opens the database read-only with plain
 * options and compares each channel's 'S' with its newest 'e' key in any
 * history family.
 */
static void raw_check_consistent(const char *dir)
{
	rocksdb_options_t *o = rocksdb_options_create();
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	rocksdb_column_family_handle_t *h[128];
	const rocksdb_options_t *opts[128];
	char *err = NULL, **names;
	size_t n = 0;
	rocksdb_t *db;
	int meta = -1;

	names = rocksdb_list_column_families(o, dir, &n, &err);
	assert_null(err);
	assert_true(n <= 128);
	for (size_t i = 0; i < n; i++) {
		opts[i] = o;
		if (!strcmp(names[i], "meta"))
			meta = (int)i;
	}
	assert_true(meta >= 0);
	db = rocksdb_open_for_read_only_column_families(
		o, dir, (int)n, (const char *const *)names, opts, h, 0, &err);
	assert_null(err);
	rocksdb_readoptions_set_total_order_seek(ro, 1);

	for (unsigned c = 0; c < CRASH_CH; c++) {
		char key[64], *v;
		size_t klen, vlen;
		uint64_t s_last = 0, e_last = 0;

		klen = (size_t)snprintf(key, sizeof(key), "S%s", crash_ch[c]);
		v = rocksdb_get_cf(db, ro, h[meta], key, klen, &vlen, &err);
		assert_null(err);
		assert_non_null(v);
		assert_int_equal(vlen, 24);
		for (int i = 7; i >= 0; i--)
			s_last = s_last << 8 | (unsigned char)v[i];
		rocksdb_free(v);

		/* ch \0 'e' 0xff x8, then step back to the newest event */
		klen = strlen(crash_ch[c]);
		memcpy(key, crash_ch[c], klen);
		key[klen++] = 0;
		key[klen++] = 'e';
		memset(key + klen, 0xff, 8);
		for (size_t i = 0; i < n; i++) {
			rocksdb_iterator_t *it;
			const char *k;
			size_t kl;

			if (names[i][0] != 'h')
				continue;
			it = rocksdb_create_iterator_cf(db, ro, h[i]);
			rocksdb_iter_seek_for_prev(it, key, klen + 8);
			if (rocksdb_iter_valid(it)) {
				k = rocksdb_iter_key(it, &kl);
				if (kl == klen + 8 && !memcmp(k, key, klen)) {
					/* one family holds the channel */
					assert_int_equal(e_last, 0);
					e_last = be64(k + klen);
				}
			}
			rocksdb_iter_destroy(it);
		}
		assert_int_equal(s_last, e_last);
	}
	for (size_t i = 0; i < n; i++)
		rocksdb_column_family_handle_destroy(h[i]);
	rocksdb_close(db);
	rocksdb_list_column_families_destroy(names, n);
	rocksdb_readoptions_destroy(ro);
	rocksdb_options_destroy(o);
}

static void test_crash(void **state)
{
	static struct recs r;
	uint64_t last[CRASH_CH] = { 0 }, total = 0, nch, nrep;
	struct tdir t;
	struct ack a;
	char fdarg[16];
	int fds[2], wst;
	bool killed = false;
	pid_t pid;
	store *s;

	(void)state;
	tdir_make(&t);
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char *argv[5];

		close(fds[0]);
		snprintf(fdarg, sizeof(fdarg), "%d", fds[1]);
		argv[0] = "test_store";
		argv[1] = "--crash-child";
		argv[2] = t.db;
		argv[3] = fdarg;
		argv[4] = NULL;
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	close(fds[1]);

	for (;;) {
		ssize_t got = read(fds[0], &a, sizeof(a));

		if (got < 0 && errno == EINTR)
			continue;
		if (got == 0)
			break;
		assert_int_equal(got, sizeof(a));
		assert_true(a.ch < CRASH_CH);
		/* acks of one channel come in seq order, none skipped */
		assert_int_equal(a.seq, last[a.ch] + 1);
		last[a.ch] = a.seq;
		if (++total == CRASH_KILL_AFTER) {
			kill(pid, SIGKILL);
			killed = true;
		}
	}
	close(fds[0]);
	assert_int_equal(waitpid(pid, &wst, 0), pid);
	assert_true(killed);
	assert_true(WIFSIGNALED(wst) && WTERMSIG(wst) == SIGKILL);
	fprintf(stderr, "crash: acked %llu and %llu before the kill\n",
		(unsigned long long)last[0], (unsigned long long)last[1]);

	raw_check_consistent(t.db);

	s = open_ok(t.db, 4, 2);
	assert_int_equal(store_recover(s, &nch, &nrep), 0);
	assert_int_equal(nch, CRASH_CH);
	assert_int_equal(nrep, 0);
	for (unsigned c = 0; c < CRASH_CH; c++) {
		store_chstat st;
		uint64_t cum, seq;
		void *v;
		size_t len;
		char cmid[24];
		int n;

		assert_int_equal(store_get_chstat(s, crash_ch[c], &st), 0);
		assert_true(st.last_seq >= last[c]);
		assert_int_equal(st.msgs, st.last_seq);
		assert_int_equal(st.members, 1);
		memset(&r, 0, sizeof(r));
		assert_int_equal(store_scan_events(s, crash_ch[c], 0, 0,
						   recs_add, &r, NULL), 0);
		assert_int_equal(r.n, st.last_seq);
		for (unsigned i = 0; i < r.n; i++)
			assert_int_equal(r.seq[i], i + 1);
		assert_int_equal(store_msgs_at(s, crash_ch[c], UINT64_MAX,
					       &cum), 0);
		assert_int_equal(cum, st.last_seq);
		assert_int_equal(store_get_msg(s, crash_ch[c], 0, st.last_seq,
					       &v, &len), 0);
		free(v);
		n = snprintf(cmid, sizeof(cmid), "cm%llu",
			     (unsigned long long)st.last_seq);
		assert_int_equal(store_get_cmid(s, crash_ch[c], "u", cmid,
						(size_t)n, &seq), 0);
		assert_int_equal(seq, st.last_seq);
	}
	store_close(s);
	tdir_remove(&t);
}

/* ---- main -------------------------------------------------------------- */

int main(int argc, char **argv)
{
	static const struct CMUnitTest all[] = {
		cmocka_unit_test(test_records),
		cmocka_unit_test(test_scans),
		cmocka_unit_test(test_group_commit),
		cmocka_unit_test(test_group_order),
		cmocka_unit_test(test_multi_shard),
		cmocka_unit_test(test_empty_and_invalid),
		cmocka_unit_test(test_batch_bytes),
		cmocka_unit_test(test_reopen),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_recover_consistent),
		cmocka_unit_test(test_recover_repair),
		cmocka_unit_test(test_mentions),
		cmocka_unit_test(test_del_member),
		cmocka_unit_test(test_crash),
	};
	struct CMUnitTest pick[sizeof(all) / sizeof(all[0])];
	size_t n = 0;

	if (argc == 4 && !strcmp(argv[1], "--crash-child"))
		return crash_child(argv[2], atoi(argv[3]));
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		/* cmocka 1.1.5 has no test filter: select by name here */
		if (argc < 2 || !strcmp(all[i].name + strlen("test_"), argv[1]))
			pick[n++] = all[i];
	}
	if (!n) {
		fprintf(stderr, "no test named %s\n", argv[1]);
		return 2;
	}
	return _cmocka_run_group_tests("storage", pick, n, NULL, NULL);
}
