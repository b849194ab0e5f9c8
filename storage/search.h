/*
 * search: full-text search over messages, kept in SQLite's FTS5 beside the
 * RocksDB store. The index is derived data: RocksDB's event log is the
 * truth, and the index follows it.
 *
 * Fed from the commit path: after a batch is durable, the channel's shard
 * hands each event frame (msgpack, exactly as stored in the 'e' record) to
 * search_feed(), and at the end of its loop turn search_feed_flush() passes
 * the turn's events to the indexer thread without taking a lock. The
 * indexer writes them in SQLite transactions of its own, off the ack path:
 * msg events are added, edit events replace the text, delete events remove
 * it, react events are ignored.
 *
 * After a crash the index may be behind the log: the indexer first compares
 * each channel's indexed position with its last durable seq and indexes
 * what is missing from the event log.
 *
 * Freshness: a query reflects every event fed before search_query was
 * called (so every change acknowledged before the request arrived: a
 * shard feeds an event before it runs the ack that follows it). It waits
 * for the indexer up to 2 s for that; past it, it answers with what the
 * index has, as SEARCH_PARTIAL.
 *
 * Queries run on a query thread of their own, with a read connection of
 * their own; their results come back through a callback on that thread.
 *
 * Threads: search_feed/_flush on shard threads (no locks, no SQLite);
 * search_query from any thread; search_sync from any thread that is not
 * a feeding shard; search_open/_close from the thread that owns sx.
 */
#ifndef PARLEY_SEARCH_H
#define PARLEY_SEARCH_H

#include <stddef.h>
#include <stdint.h>

#include "storage/store.h"

typedef struct search search;

#define SEARCH_MAX_Q     1024 /* bytes of a query */
#define SEARCH_MAX_TERMS 16   /* words and phrases in a query */
#define SEARCH_MAX_LIMIT 100  /* hits per query */
#define SEARCH_MAX_QUEUED 256 /* queries waiting for the query thread */

/* Open (creating) the index in the directory path, catch up with st (in the
 * background, on the indexer thread), start the indexer and the query
 * thread. st may be NULL (tests, benchmarks): then only what is fed is
 * indexed, and a gap in a channel's seqs is accepted as it comes.
 * 0, or -1 with *err malloc'd. nshards: the shards that will feed it. */
int search_open(search **out, const char *path, store *st, unsigned nshards,
		char **err);
/* Index what was fed (every shard must have stopped feeding), answer the
 * queries already submitted, stop the threads, close. */
void search_close(search *sx);

/* Shard thread `shard` only, in commit order: one durable event. Copies. */
void search_feed(search *sx, unsigned shard, const void *ev, size_t len);
/* Shard thread `shard` only: hand this turn's events to the indexer. */
void search_feed_flush(search *sx, unsigned shard);

/* Wait until everything flushed before the call (and the catch-up after
 * open, and a catch-up pass for batches dropped before it) is indexed and
 * visible to queries. For tests and benchmarks: it waits as long as it
 * takes. */
void search_sync(search *sx);

/* ---- queries ------------------------------------------------------------- */

/* One hit; the strings are NUL-terminated and valid only during the
 * callback. body is the message's current text (after edits). */
typedef struct search_hit {
	const char *ch;
	uint64_t seq;
	const char *from;
	uint64_t ts;
	const char *body;
	size_t body_len;
	const void *files; /* the message's files as events carry them, or NULL */
	size_t files_len;
} search_hit;

/* status: 0 (hits[0..n), newest first), SEARCH_PARTIAL (the same, but
 * the index did not hold every event fed before the query within 2 s, or
 * the server is stopping: the hits are what it had), -EINVAL (q has no
 * searchable word), -E2BIG (more than SEARCH_MAX_TERMS words and phrases),
 * -EAGAIN (stopping before the catch-up after open was done), -EIO (the
 * index is failing). */
#define SEARCH_PARTIAL 1
typedef void (*search_done_fn)(void *arg, int status, const search_hit *hits,
			       unsigned n);

/* Any thread. Search the channels chs[0..nch) (ids; copied) for q (qlen
 * bytes of UTF-8; copied), at most limit hits (1..SEARCH_MAX_LIMIT),
 * newest first, once the index holds every event fed (on any shard) before
 * this call, or after 2 s with SEARCH_PARTIAL. done(arg, ...) is called exactly once, ON THE QUERY
 * THREAD, if this returns 0; never if it returns -EINVAL (q empty or
 * longer than SEARCH_MAX_Q, limit out of range), -EBUSY (SEARCH_MAX_QUEUED
 * queries are waiting already: the caller turns it into backpressure),
 * -ENOMEM or -ESHUTDOWN (closing).
 *
 * Query language: words (all must occur), word* (a prefix; "a*", one
 * character, is the word "a"), "a phrase" (those words in that order, next to each other;
 * "a phr"* ends with a prefix). Everything else is text: quotes inside a
 * word, AND/OR/NOT/NEAR, column names, parentheses mean nothing special.
 * Matching folds case and diacritics (unicode61, remove_diacritics 2). */
int search_query(search *sx, const char *q, size_t qlen,
		 const char *const *chs, unsigned nch, unsigned limit,
		 search_done_fn done, void *arg);

#endif
