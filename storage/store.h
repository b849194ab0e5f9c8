/*
 * storage: parley's durable state in one RocksDB.
 *
 * Called by the channel actors (writes, through per-shard batches) and by the
 * sessions (reads, directly, from any shard thread). Hands completions back
 * through a callback that runs on the shard's sync thread; the caller turns it
 * into a mailbox message.
 *
 * Column families
 *   "default"   unused
 *   "meta"      channels, memberships, indexes, idempotency keys, counters
 *   "h00".."hNN" history, one family per channel range: hash(ch) % nranges
 *
 * Keys ('\0' separates ids; ids never contain it; seq8 = uint64 big-endian)
 *   meta  'C' ch                   -> channel record (binary, see store.c)
 *   meta  'S' ch                   -> store_chstat (packed, little-endian)
 *   meta  'M' ch \0 user           -> store_member (packed)
 *   meta  'U' ws \0 user \0 ch     -> ""  (a user's channels)
 *   meta  'P' ws \0 ch             -> ""  (a workspace's public channels)
 *   meta  'I' ch \0 user \0 cmid   -> seq8 (idempotency key of a send)
 *   meta  'Y' ws \0 user           -> store_presence (the status a user
 *                                     chose, when it was last online)
 *   meta  'W' ws \0 user           -> the display name of the user's
 *                                     latest hello (the directory)
 *   meta  'w' ws \0 user           -> ""  (named in ch.invite or dm.open)
 *   meta  'K' ws \0 user           -> the user's pushers (actors' bytes)
 *   meta  'Z' ws \0 user           -> the user's notification levels
 *   meta  'N' ch \0 user \0 seq8   -> u64 LE mentions of user in ch up to
 *                                     and including this one (a mention
 *                                     of user at seq)
 *   meta  'R' ch \0 user           -> u64 LE delivered position of user in
 *                                     DM ch (receipts; DMs only, whose
 *                                     members never leave)
 *   hist  ch \0 'e' seq8           -> u64 LE msg events up to and including
 *                                     seq (for unread counts; 0 on events
 *                                     that are not messages), then the
 *                                     event frame, msgpack, as sent
 *   hist  ch \0 'm' seq8           -> top-level message state (history view)
 *   hist  ch \0 'r' root8 seq8     -> thread reply state (thread view)
 *   hist  ch \0 'v' target8 seq8   -> a version of message target's text
 *                                     made by the edit event seq (msgpack
 *                                     {body, ts}; the original is target's
 *                                     own 'e' record)
 *
 * Invariants
 *   1. Everything one event changes goes into one batch: the event, the
 *      message state, the idempotency key, the counters. A batch is written
 *      atomically with the WAL synced, so after a crash either all of an
 *      event is there or none of it.
 *   2. A shard commits its batches in the order it made them, one at a time;
 *      a channel belongs to one shard, so its events reach the WAL in seq
 *      order and 'S'.last_seq always equals the highest 'e' key.
 *   3. Reads see only synced data (a batch is visible only after its write
 *      returned), so a reader never sees an event that could still be lost.
 */
#ifndef PARLEY_STORE_H
#define PARLEY_STORE_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct store store;
typedef struct store_batch store_batch;

#define STORE_ID_MAX 64 /* ids are 1-64 bytes of [A-Za-z0-9._-] */

enum store_kind { STORE_PUBLIC = 0, STORE_PRIVATE = 1, STORE_DM = 2 };

/* 'C' value: written when a channel is created; rewritten by a rename
 * (ch.set name), nothing else changes it. */
typedef struct store_channel {
	char id[STORE_ID_MAX + 1];
	char ws[STORE_ID_MAX + 1];
	char name[81];        /* 1-80 bytes UTF-8; DMs: "" */
	uint8_t kind;         /* enum store_kind */
	uint64_t created_ms;
	char creator[STORE_ID_MAX + 1];
} store_channel;

/* 'S' value: rewritten with every event and membership change. */
typedef struct store_chstat {
	uint64_t last_seq; /* highest durable seq, 0 = no events */
	uint64_t msgs;     /* msg events so far (cumulative, for unread) */
	uint64_t members;  /* current member count */
} store_chstat;

/* 'M' value */
typedef struct store_member {
	uint64_t read_seq;   /* read marker: forward only */
	uint64_t joined_seq; /* last_seq when the user joined */
	uint64_t joined_ms;
} store_member;

/* 'Y' value: what presence keeps across restarts. */
typedef struct store_presence {
	uint8_t status;   /* the status the user chose (actors' enum) */
	uint64_t seen_ms; /* when its last device left, 0 = never */
} store_presence;

/* ---- lifetime ---------------------------------------------------------- */

/* Open (creating if missing) the database in dir with nranges history
 * families (a reopened database keeps the count it was created with) and one
 * sync thread per shard. Returns 0, or -1 with *err set to a malloc'd message
 * the caller frees; STORE_OPEN_CORRUPT (and *err) when RocksDB found the
 * database corrupt: starting again will not help, a restore will. */
#define STORE_OPEN_CORRUPT (-2)
int store_open(store **out, const char *dir, unsigned nranges, unsigned nshards,
	       char **err);
/* Stops the sync threads (after they finish what they hold) and closes. */
void store_close(store *s);

/* ---- write side: built on one shard thread, committed by its sync thread */

store_batch *store_batch_new(store *s);
void store_batch_free(store_batch *b);
size_t store_batch_count(const store_batch *b); /* records put so far */
/* A cluster's log carries a shard's batch to the other hosts as bytes
 * (docs/cluster.md): the records as this store encodes them. NULL (and
 * *len 0) if a record was lost to memory: such a batch must not commit. */
const void *store_batch_bytes(const store_batch *b, size_t *len);
bool store_batch_failed(const store_batch *b);
/* A batch of another host's bytes, for store_commit; NULL if they are not
 * whole records of a store with this one's families (or out of memory). */
store_batch *store_batch_load(store *s, const void *data, size_t len);
unsigned store_nranges(const store *s);

void store_put_channel(store_batch *b, const store_channel *c); /* + 'P' if public */
void store_put_chstat(store_batch *b, const char *ch, const store_chstat *st);
void store_put_member(store_batch *b, const char *ws, const char *ch,
		      const char *user, const store_member *m); /* 'M' + 'U' */
/* Only the 'M' record: a member's read marker moved ('U' does not change). */
void store_put_marker(store_batch *b, const char *ch, const char *user,
		      const store_member *m);
void store_del_member(store_batch *b, const char *ws, const char *ch,
		      const char *user); /* 'M' + 'U', and the user's 'N' keys */
void store_put_cmid(store_batch *b, const char *ch, const char *user,
		    const char *cmid, size_t cmid_len, uint64_t seq);
/* cum: mentions of user in ch up to and including this one (counts come
 * from two seeks, never from walking the keys). */
void store_put_mention(store_batch *b, const char *ch, const char *user,
		       uint64_t seq, uint64_t cum);
/* ev: the encoded event frame; msgs_cum: msg events up to and including
 * this one, stored in front of the frame in the same record (pass 0 for
 * other kinds, or the running count: store_msgs_at skips zeros). */
void store_put_event(store_batch *b, const char *ch, uint64_t seq,
		     const void *ev, size_t len, uint64_t msgs_cum);
void store_put_presence(store_batch *b, const char *ws, const char *user,
			const store_presence *p);
/* An edit's version of target's text, and dropping them all (delete). */
void store_put_version(store_batch *b, const char *ch, uint64_t target,
		       uint64_t seq, const void *v, size_t len);
void store_del_versions(store_batch *b, const char *ch, uint64_t target);
/* Message state for history: thread_root 0 = top-level ('m'), else 'r'. */
void store_put_msg(store_batch *b, const char *ch, uint64_t thread_root,
		   uint64_t seq, const void *state, size_t len);

/* Hand b to shard's sync thread. The thread writes it with sync=true (group
 * commit: batches handed over while a write is in flight wait and go in the
 * next write, merged) and then calls done(ctx, status) ON THE SYNC THREAD,
 * status 0 or -EIO. b is freed by storage after done() returns. Batches of
 * one shard complete in the order they were handed over. Never blocks. */
int store_commit(store *s, unsigned shard, store_batch *b,
		 void (*done)(void *ctx, int status), void *ctx);

/* ---- read side: any thread, synced data only ------------------------- */
/* All return 0 on success, -ENOENT when absent, -EIO on storage failure. */

/* Reads on this thread between store_read_pin and store_read_unpin see one
 * point in time (a RocksDB snapshot), for answers built from several reads
 * that must agree (a channel's unread and mention counts). No nesting:
 * a second pin returns -EBUSY and changes nothing; unpin only after a 0. */
int store_read_pin(store *s);
void store_read_unpin(store *s);

int store_get_channel(store *s, const char *ch, store_channel *out);
int store_get_chstat(store *s, const char *ch, store_chstat *out);
int store_get_member(store *s, const char *ch, const char *user,
		     store_member *out);
int store_get_presence(store *s, const char *ws, const char *user,
		       store_presence *out);
int store_get_cmid(store *s, const char *ch, const char *user, const char *cmid,
		   size_t cmid_len, uint64_t *seq);
/* Msg events up to the newest event with seq <= at that is a message (the
 * count stored in front of it), 0 if none. */
int store_msgs_at(store *s, const char *ch, uint64_t at, uint64_t *cum);
/* Mentions of user in ch with seq > after (two seeks). */
int store_count_mentions(store *s, const char *ch, const char *user,
			 uint64_t after, uint64_t *n);
/* Mentions of user in ch so far (the newest key's count), 0 if none. */
int store_mentions_total(store *s, const char *ch, const char *user,
			 uint64_t *cum);
/* The event at seq as stored: its frame (*ev malloc'd, caller frees) and
 * the msg count in front of it. */
int store_get_event(store *s, const char *ch, uint64_t seq, void **ev,
		    size_t *len, uint64_t *msgs_cum);
/* Message state at seq (thread_root as stored, 0 for top-level). */
int store_get_msg(store *s, const char *ch, uint64_t thread_root, uint64_t seq,
		  void **state, size_t *len); /* *state: malloc'd, caller frees */

/* Scans call fn for each item in key order until fn returns non-zero or
 * limit items were given; *more (if not NULL) says whether another item
 * existed past the last one given. Return 0 or -EIO. */
typedef int (*store_id_fn)(void *arg, const char *id, size_t len);
typedef int (*store_rec_fn)(void *arg, uint64_t seq, const void *v, size_t len);

int store_scan_user_channels(store *s, const char *ws, const char *user,
			     store_id_fn fn, void *arg);
int store_scan_public(store *s, const char *ws, store_id_fn fn, void *arg);
/* Every channel that has a 'S' record (all of them, in id order). */
int store_scan_channels(store *s, store_id_fn fn, void *arg);
/* Members with user id > after (after NULL or "" = from the first). */
int store_scan_members(store *s, const char *ch, const char *after,
		       unsigned limit, store_id_fn fn, void *arg, int *more);
/* Versions of target's text made by edits, ascending by the edit's seq. */
int store_scan_versions(store *s, const char *ch, uint64_t target,
			store_rec_fn fn, void *arg);
/* Events with seq > after, ascending. */
int store_scan_events(store *s, const char *ch, uint64_t after, unsigned limit,
		      store_rec_fn fn, void *arg, int *more);
/* History view (thread_root 0: top-level, else that thread's replies).
 * dir > 0: seq > from, ascending; dir < 0: seq < from, descending (from 0 =
 * from the newest). The caller reverses a descending page. */
int store_scan_msgs(store *s, const char *ch, uint64_t thread_root,
		    uint64_t from, int dir, unsigned limit, store_rec_fn fn,
		    void *arg, int *more);

/* ---- the user directory (issue 13, h-dir) ---- */
/* 'W': the display name of the user's latest hello (len 0: none) */
void store_put_dir_name(store_batch *b, const char *ws, const char *user,
			const char *name, size_t len);
/* 'w': the user was named in ch.invite or dm.open */
void store_put_dir_named(store_batch *b, const char *ws, const char *user);
/* Every key of tag 'W', 'w' or 'Y' in workspace ws, in user order: fn gets
 * the user id (not NUL-terminated) and the value; non-zero stops. */
typedef int (*store_kv_fn)(void *arg, const char *user, size_t ulen,
			   const void *v, size_t vlen);
int store_scan_ws_users(store *s, char tag, const char *ws, store_kv_fn fn,
			void *arg);
/* A 'Y' value as store_scan_ws_users gives it. */
int store_presence_parse(const void *v, size_t len, store_presence *out);

/* Recovery: every channel's 'S' record checked against its newest 'e' key;
 * a mismatch (which invariant 1 forbids) is repaired to the 'e' key and
 * counted. Called once by store_open; exposed for tests. */
int store_recover(store *s, uint64_t *channels, uint64_t *repaired);

/* The history column family (of nranges) that holds channel ch's events:
 * an on-disk format (FNV-1a of the id, runtime/hash.h). */
unsigned store_range_of(const char *ch, unsigned nranges);

/* ---- names, roles and moderation (issue 13) ----------------------------
 * meta 'G' ch (settings), 'O' ch \0 user (owners), 'L' ws \0 lower(name)
 * -> ch (the name registry); see store.c's section at its end. */
typedef struct store_chcfg {
	char topic[251]; /* 0-250 bytes */
	uint8_t archived; /* bool */
	uint8_t post;     /* 0: all, 1: owners */
} store_chcfg;
void store_put_chcfg(store_batch *b, const char *ch, const store_chcfg *c);
int store_get_chcfg(store *s, const char *ch, store_chcfg *out); /* -ENOENT: defaults */
void store_put_owner(store_batch *b, const char *ch, const char *user);
void store_del_owner(store_batch *b, const char *ch, const char *user);
int store_scan_owners(store *s, const char *ch, store_id_fn fn, void *arg);
/* lname: the name ASCII-lowercased; ch: STORE_ID_MAX + 1 bytes */
void store_put_name(store_batch *b, const char *ws, const char *lname,
		    const char *ch);
void store_del_name(store_batch *b, const char *ws, const char *lname);
int store_get_name(store *s, const char *ws, const char *lname, char *ch);

/* Metrics (any thread, relaxed counters). */
typedef struct store_stats {
	uint64_t commits;        /* synced writes */
	uint64_t batches;        /* shard batches they held */
	uint64_t records;        /* records they held */
	uint64_t records_merged; /* puts left out: a later put of the key in
				  * the same write (replay_group) */
	uint64_t commit_us_sum;  /* time in rocksdb_write */
	uint64_t failures;       /* batches completed with -EIO */
	uint64_t hist_us[16];    /* commit latency histogram, bucket i: <= 2^i * 16 us, last: rest */
	uint64_t hist_batch[16]; /* shard batches per synced write, bucket i: <= 2^i, last: rest */
} store_stats;
void store_get_stats(store *s, store_stats *out);

/* ---- receipts: delivered positions in DMs --------------------------------
 * 'R' ch \0 user -> u64 LE: the highest seq one of user's devices said it
 * has received (op delivered). Written only for DM members, which never
 * leave, so nothing deletes it. */
void store_put_delivered(store_batch *b, const char *ch, const char *user,
			 uint64_t seq);
/* 0, -ENOENT (never reported: position 0), or -EIO */
int store_get_delivered(store *s, const char *ch, const char *user,
			uint64_t *out);

/* ---- per-user records of notifications (issue 14) -----------------------
 * 'K' ws \0 user -> the user's pushers (proto_enc_pushers)
 * 'Z' ws \0 user -> the user's notification levels (proto_enc_prefs)
 * Values are the actors' own bytes; storage does not look inside. tag is
 * 'K' or 'Z' (store_get_urec also reads 'W', the directory's name). */
void store_put_urec(store_batch *b, char tag, const char *ws,
		    const char *user, const void *v, size_t n);
void store_del_urec(store_batch *b, char tag, const char *ws,
		    const char *user);
/* 0 with *v malloc'd (the caller frees it), -ENOENT, or -EIO */
int store_get_urec(store *s, char tag, const char *ws, const char *user,
		   void **v, size_t *n);
/* fsync the directory dir (its new and renamed entries survive a power
 * cut only then): 0 or -1 with errno. */
int store_sync_dir(const char *dir);
/* Every member of ch with its 'M' record, in user order; non-zero from fn
 * stops. For the notifier, which needs each member's read marker. */
typedef int (*store_member_fn)(void *arg, const char *user, size_t ulen,
			       const store_member *m);
int store_scan_member_marks(store *s, const char *ch, store_member_fn fn,
			    void *arg);

/* ---- files (issue 15): opaque records under a tag in meta --------------
 * 'F' id                -> the file record (proto_enc_file_rec)
 * 'A' id \0 ch          -> u64 LE seq of the message that shared it in ch
 * 'H' sha256 hex        -> u64 LE file ids with these bytes
 * key is any bytes (klen), under the one-byte tag. */
void store_put_meta(store_batch *b, char tag, const void *key, size_t klen,
		    const void *v, size_t n);
void store_del_meta(store_batch *b, char tag, const void *key, size_t klen);
/* 0 with *v malloc'd (the caller frees it), -ENOENT, or -EIO */
int store_get_meta(store *s, char tag, const void *key, size_t klen,
		   void **v, size_t *n);
/* Every key of tag that starts with prefix, in key order: fn gets the rest
 * of the key after the prefix and the value; non-zero stops. */
typedef int (*store_meta_fn)(void *arg, const char *rest, size_t rlen,
			     const void *v, size_t vlen);
int store_scan_meta(store *s, char tag, const void *prefix, size_t plen,
		    store_meta_fn fn, void *arg);

/* ---- backups (issue 16) ------------------------------------------------- */

/* Opens the database in dir read-only: no LOCK taken, nothing written, no
 * recovery, no sync threads (for verify, and for a backup's own check).
 * Reads only; store_close closes it. 0 or -1 with *err (malloc'd). */
int store_open_ro(store **out, const char *dir, char **err);
/* A consistent copy of the open database in dir (which must not exist),
 * while writes go on: a RocksDB checkpoint (table files hard-linked when
 * dir is on the same file system). Every batch whose write returned
 * before the call is in it. 0 or -1 with *err (malloc'd). */
int store_checkpoint(store *s, const char *dir, char **err);
/* Is the database in dir open in another process (its LOCK held)?
 * 1 yes, 0 no (or no database), -1 with errno. */
int store_locked(const char *dir);
/* Checks the store (see docs/architecture.md, Backups): per channel, its
 * event seqs 1..last without a gap, last = 'S' last_seq, the message
 * counts against 'S' msgs, 'm'/'r'/'v' records name events that exist,
 * member records against 'S' members; 'C' and 'S' come in pairs. fn gets
 * one line per problem. Returns 0 (out->problems says whether any were
 * found) or -EIO/-ENOMEM when the walk itself failed. */
typedef struct store_verify_counts {
	uint64_t channels, events, msgs, members, problems;
} store_verify_counts;
typedef void (*store_problem_fn)(void *arg, const char *line);
int store_verify(store *s, store_problem_fn fn, void *arg,
		 store_verify_counts *out);

#endif
