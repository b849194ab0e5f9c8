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
 * After a crash the index may be behind the log: search_open() compares
 * each channel's indexed position with its last durable seq and indexes
 * what is missing from the event log before it answers queries.
 */
#ifndef PARLEY_SEARCH_H
#define PARLEY_SEARCH_H

#include <stddef.h>
#include <stdint.h>

#include "storage/store.h"

typedef struct search search;

/* Open (creating) the index at path, catch up with st, start the indexer.
 * 0, or -1 with *err malloc'd. nshards: the shards that will feed it. */
int search_open(search **out, const char *path, store *st, unsigned nshards,
		char **err);
/* Index what was fed, stop the threads, close. */
void search_close(search *sx);

/* Shard thread `shard` only, in commit order: one durable event. Copies. */
void search_feed(search *sx, unsigned shard, const void *ev, size_t len);
/* Shard thread `shard` only: hand this turn's events to the indexer. */
void search_feed_flush(search *sx, unsigned shard);

#endif
