/*
 * search: the full-text index. SQLite FTS5 in DATA/search/index.db (WAL,
 * synchronous=NORMAL: the index is derived data, a lost tail is indexed
 * again from RocksDB's log).
 *
 * Called by the channel actors' shards (search_feed, search_feed_flush: no
 * lock, no SQLite, no syscall), by the sessions' `search` op
 * (search_query, answered on the query thread) and by server.c (open,
 * close). Hands query results to a callback on the query thread.
 *
 * Threads
 *   shard i    appends each durable event to feeds[i].cur (its own, no
 *              sharing); at turn end pushes that batch on feeds[i].head
 *              (a Treiber stack with one producer: a CAS that only the
 *              indexer's exchange can make fail).
 *   indexer    catches up with the store, then every ~20 ms takes every
 *              shard's stack (one exchange each), reverses it (so each
 *              shard's events stay in commit order: a channel lives on one
 *              shard, so its events stay in seq order) and writes it in
 *              transactions of at most TXN_EVENTS events. The only writer.
 *   query      takes submitted queries (a Treiber stack too, woken through
 *              an eventfd), waits until the index holds every event fed
 *              before each was submitted (2 s at most, then it is
 *              partial), runs it on its own read connection, calls the
 *              callback.
 *
 * Freshness (docs/search.md): shard i counts the events it feeds
 * (feeds[i].fed, per event, before the ack that follows the event can
 * leave the shard); search_query snapshots every shard's count; the
 * indexer publishes feeds[i].ready, the count up to which shard i's events
 * are committed in the index. A dropped batch is a hole that only a
 * completed catch-up pass (which read fed before the log) fills.
 *
 * Schema
 *   chans(cid, id, pos)     a channel seen, and the last seq indexed: pos
 *                           moves in the same transaction as the rows
 *   msgs(rid, cid, seq, ts, sender, body)   the current text of each
 *                           message not deleted; rid orders by time
 *   fts(body, c)            FTS5 over msgs_v (external content): body is
 *                           the text, c one token per row naming its
 *                           channel ("k<cid>"), so a query restricted to a
 *                           few channels is an AND in the index itself
 *
 * Invariants
 *   1. chans.pos = the highest seq of that channel whose effect is in the
 *      index, and every event <= pos is in it: events are applied in seq
 *      order, an event <= pos is skipped, and an event past pos + 1 first
 *      indexes the gap from the store's log (events dropped when the
 *      indexer fell too far behind, or lost with a failed transaction).
 *   2. rid = ts * 4096 + k (k the first free slot of that millisecond):
 *      ORDER BY rowid DESC is newest first, and FTS5 walks its doclists in
 *      that order and stops at the limit. An edit keeps the rid.
 *   3. fts holds exactly the tokens of msgs' current rows: an edit or a
 *      delete first removes the old text's tokens ('delete' command with
 *      the old values, which msgs still has).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "proto/proto.h"
#include "runtime/hash.h"
#include "storage/search.h"
#include "runtime/log.h"

#define IDCAP (STORE_ID_MAX + 1)
#define TXN_EVENTS 10000          /* events per indexer transaction */
#define CATCHUP_TXN 5000          /* events per catch-up transaction */
#define WAKE_MS 20                /* indexer's sleep between batches */
/* fed bytes not yet indexed; past it, batches are dropped and re-read from
 * the store (invariant 1). tests/storage builds a test_search with a tiny
 * one, to drop. */
#ifndef PENDING_MAX
#define PENDING_MAX (256u << 20)
#endif
#define FRESH_WAIT_MS 2000        /* a query waits this long for the index
				     to hold what was acked before it */
#define FRESH_POLL_MS 1           /* the indexer's sleep while one waits */
/* At shutdown, index what was fed for this long at most; the next start's
 * catch-up reads the rest back from the store (tests/storage builds a
 * second test_search with 0). */
#ifndef STOP_DRAIN_MS
#define STOP_DRAIN_MS 2000
#endif
#define MIN_PREFIX 2              /* characters before a '*' */
/* The channel filter (see run_query): in FTS5 (c tokens) for at most
 * SET_TOKENS channels holding at most SET_SHARE_PCT of all events, else
 * in C. -DSET_TOKENS=0 turns the FTS5 side off (perf/search_bench). */
#ifndef SET_TOKENS
#define SET_TOKENS 64
#endif
#define SET_SHARE_PCT 3
#define EV_MAX (1u << 20)         /* largest stored event we decode */
#define BATCH_CAP (16u << 10)     /* a feed buffer (an event that does
				     not fit gets one of its own size) */
#define SPARE_MAX 32              /* buffers kept for reuse per shard */

/* ---- structures --------------------------------------------------------- */

struct fbatch {
	struct fbatch *next;
	size_t len, cap;  /* bytes of data used / allocated */
	uint64_t first;   /* the shard's events fed before this batch's
			     first (its events are first+1 .. first+n) */
	uint32_t n;       /* events */
	uint8_t data[];   /* n times: u32 length, frame */
};

struct feed {
	/* shard thread only */
	struct fbatch *cur;
	struct fbatch *spare;  /* buffers to reuse, taken from ret */
	/* Written by the shard only (release), read by queries and the
	 * indexer (acquire). fed: events fed so far, counted as each is
	 * copied (before the shard runs the effects that follow it, such as
	 * the ack); flushed: fed as of the last push (or drop), for
	 * search_sync. */
	uint64_t fed;
	uint64_t flushed;
	/* Shared by the shard and the indexer. head: pushed by the shard
	 * (CAS), taken by the indexer (exchange). ret: buffers the indexer
	 * is done with, pushed back by it (CAS), taken by the shard
	 * (exchange), so a shard reuses warm memory instead of faulting in
	 * fresh pages; nret counts them (atomic). */
	struct fbatch *head __attribute__((aligned(64)));
	struct fbatch *ret;
	unsigned nret;
	/* Freshness (see "Freshness" above search_query). Indexer only:
	 * applied_end, the end (first + n) of the last batch it applied;
	 * covered, the shard's fed as read when the last complete catch-up
	 * pass began; hole, a batch was dropped (or lost with a failed
	 * transaction) past covered and no pass has covered it yet. ready:
	 * written by the indexer under sx->mu (and atomically), read by
	 * queries: every event of this shard numbered <= ready is in the
	 * index, committed. */
	uint64_t applied_end __attribute__((aligned(64)));
	uint64_t covered;
	bool hole;
	uint64_t ready;
} __attribute__((aligned(64)));

/* A channel during one indexer transaction. */
struct chent {
	char id[IDCAP];
	int64_t cid;      /* 0: empty slot */
	uint64_t pos, pos0;
};

struct qreq {
	struct qreq *next;
	search_done_fn done;
	void *arg;
	unsigned limit, nch;
	size_t qlen;
	char *q;
	char (*chs)[IDCAP];
	uint64_t deadline_ms;  /* mono: arrival + FRESH_WAIT_MS */
	uint64_t *snap;        /* [nshards]: each shard's fed at arrival */
};

enum {
	W_BEGIN, W_COMMIT, W_ROLLBACK, W_CHAN_GET, W_CHAN_ADD, W_CHAN_POS,
	W_MSG_GET, W_RID_MAX, W_RID_TOP, W_MSG_INS, W_MSG_UPD, W_MSG_DEL,
	W_FTS_INS, W_FTS_DEL, W_CHAN_MSGS, W_CHAN_CLEAR, W__COUNT
};

static const char *const wsql[W__COUNT] = {
	[W_BEGIN] = "BEGIN IMMEDIATE",
	[W_COMMIT] = "COMMIT",
	[W_ROLLBACK] = "ROLLBACK",
	[W_CHAN_GET] = "SELECT cid, pos FROM chans WHERE id = ?1",
	[W_CHAN_ADD] = "INSERT INTO chans(id, pos) VALUES (?1, 0)",
	[W_CHAN_POS] = "UPDATE chans SET pos = ?2 WHERE cid = ?1",
	/* the text as indexed: the body, then the names of its files */
	[W_MSG_GET] = "SELECT rid, body || coalesce(char(10) || fnames, ''),"
		      " fnames FROM msgs WHERE cid = ?1 AND seq = ?2",
	[W_RID_MAX] = "SELECT max(rid) FROM msgs WHERE rid BETWEEN ?1 AND ?2",
	[W_RID_TOP] = "SELECT max(rid) FROM msgs",
	[W_MSG_INS] = "INSERT INTO msgs(rid, cid, seq, ts, sender, body,"
		      " fnames, files) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
	[W_MSG_UPD] = "UPDATE msgs SET body = ?2 WHERE rid = ?1",
	[W_MSG_DEL] = "DELETE FROM msgs WHERE rid = ?1",
	[W_FTS_INS] = "INSERT INTO fts(rowid, body, c) VALUES (?1, ?2, ?3)",
	[W_FTS_DEL] = "INSERT INTO fts(fts, rowid, body, c) "
		      "VALUES ('delete', ?1, ?2, ?3)",
	[W_CHAN_MSGS] = "SELECT rid, body || coalesce(char(10) || fnames, '')"
			" FROM msgs WHERE cid = ?1",
	[W_CHAN_CLEAR] = "DELETE FROM msgs WHERE cid = ?1",
};

enum { R_BEGIN, R_COMMIT, R_CID, R_MSG, R_MATCH, R__COUNT };

static const char *const rsql[R__COUNT] = {
	[R_BEGIN] = "BEGIN",
	[R_COMMIT] = "COMMIT",
	[R_CID] = "SELECT cid, pos FROM chans WHERE id = ?1",
	[R_MSG] = "SELECT cid, seq, ts, sender, body, files FROM msgs"
		  " WHERE rid = ?1",
	[R_MATCH] = "SELECT rowid FROM fts WHERE fts MATCH ?1 "
		    "ORDER BY rowid DESC",
};

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS chans("
	" cid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
	" pos INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS msgs("
	" rid INTEGER PRIMARY KEY, cid INTEGER NOT NULL, seq INTEGER NOT NULL,"
	" ts INTEGER NOT NULL, sender TEXT NOT NULL, body TEXT NOT NULL,"
	" fnames TEXT, files BLOB);"
	"CREATE UNIQUE INDEX IF NOT EXISTS msgs_cs ON msgs(cid, seq);"
	/* fnames: the message's file names, one per line, indexed after the
	 * body; files: its files as events carry them, for the hits */
	"DROP VIEW IF EXISTS msgs_v;"
	"CREATE VIEW msgs_v AS"
	" SELECT rid, body || coalesce(char(10) || fnames, '') AS body,"
	" 'k' || cid AS c FROM msgs;"
	"CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5("
	" body, c, content='msgs_v', content_rowid='rid', columnsize=0,"
	" tokenize='unicode61 remove_diacritics 2', prefix='2 3');"
	"PRAGMA user_version = 1;";

struct search {
	store *st;
	unsigned nshards;
	struct feed *feeds;

	/* the indexer's */
	sqlite3 *wdb;
	sqlite3_stmt *w[W__COUNT];
	struct chent *cache;   /* open addressing, this transaction's channels */
	size_t ccap, cn;
	unsigned txn_events;   /* applied in the open transaction */
	bool in_txn;
	pthread_t indexer;

	/* the query thread's */
	sqlite3 *rdb;
	sqlite3_stmt *r[R__COUNT];
	fts5_tokenizer tok;
	Fts5Tokenizer *tokinst;
	pthread_t querier;
	struct qreq *qhead;    /* submitted (any thread pushes, CAS) */
	unsigned qdepth;       /* atomic: submitted, not yet answered */

	/* shared; the first two written by every shard */
	size_t pending __attribute__((aligned(64))); /* atomic: bytes pushed,
							not yet indexed */
	int resync;            /* atomic: batches were dropped: catch up */
	int efd_idx __attribute__((aligned(64))); /* wake the indexer */
	int efd_q;             /* wake the query thread */
	int stop;              /* atomic */
	uint64_t stop_by;      /* mono ms: written before stop is set */
	int qstop;             /* atomic */
	int failing;           /* atomic: the last indexer transaction failed */
	uint64_t events;       /* atomic: sum of chans.pos, about (written by
				  the indexer after each commit, read by
				  queries to size a channel set) */

	pthread_mutex_t mu;    /* caught_up, feeds[].ready, waiters */
	pthread_cond_t cv;     /* CLOCK_MONOTONIC */
	bool caught_up;
	unsigned waiters;      /* search_sync callers and queries waiting for
				  the indexer (atomic: the indexer polls
				  every millisecond while there are any) */
	unsigned stall_ms;     /* PARLEY_TEST_SEARCH_STALL_MS (tests only) */
};

/* ---- small helpers ------------------------------------------------------ */

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void wake(int fd)
{
	uint64_t one = 1;
	ssize_t rc;

	do
		rc = write(fd, &one, sizeof(one));
	while (rc < 0 && errno == EINTR);
}

/* Wait up to ms for fd to be woken (and reset it). */
static void wait_fd(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint64_t v;

	if (poll(&p, 1, ms) > 0 && read(fd, &v, sizeof(v)) < 0)
		(void)0; /* EAGAIN: someone else read it; nothing lost */
}

static char *dupf(const char *fmt, const char *a, const char *b)
{
	size_t n = strlen(fmt) + strlen(a) + strlen(b) + 1;
	char *s = malloc(n);

	if (s)
		snprintf(s, n, fmt, a, b);
	return s;
}

static uint64_t fnv(const char *s)
{
	return rt_fnv1a_str(RT_FNV_OFFSET, s);
}

static int step_done(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);

	sqlite3_reset(s);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -EIO;
}

/* ---- feeding: shard threads ---------------------------------------------- */

/* Push shard's current batch for the indexer. */
static void push(search *sx, struct feed *f)
{
	struct fbatch *b = f->cur, *old;

	if (!b)
		return;
	f->cur = NULL;
	/* Relaxed: only a bound on memory, never an ordering. Over it, drop
	 * the batch and let the indexer re-read the log (invariant 1); a
	 * flag, since the dropped channels may never send again. */
	if (__atomic_load_n(&sx->pending, __ATOMIC_RELAXED) > PENDING_MAX) {
		/* the indexer sees the hole (the next batch's first is past
		 * its applied_end) or the pass covers it (it reads fed) */
		free(b);
		__atomic_store_n(&sx->resync, 1, __ATOMIC_RELEASE);
		__atomic_store_n(&f->flushed, f->fed, __ATOMIC_RELEASE);
		return;
	}
	__atomic_fetch_add(&sx->pending, b->len, __ATOMIC_RELAXED);
	old = __atomic_load_n(&f->head, __ATOMIC_RELAXED);
	do
		b->next = old;
	/* Release: the batch's bytes and next are written before the
	 * indexer can take it (its exchange is acquire). */
	while (!__atomic_compare_exchange_n(&f->head, &old, b, true,
					    __ATOMIC_RELEASE,
					    __ATOMIC_RELAXED));
	/* Release: search_sync reading flushed then finds this batch taken
	 * or still on the stack. */
	__atomic_store_n(&f->flushed, f->fed, __ATOMIC_RELEASE);
}

/* A buffer for at least need bytes: a returned one if it fits. */
static struct fbatch *batch_get(struct feed *f, size_t need)
{
	struct fbatch *b;

	if (!f->spare && __atomic_load_n(&f->ret, __ATOMIC_RELAXED)) {
		unsigned n = 0;

		/* Acquire: pairs with the indexer's release CAS (it is done
		 * reading the buffers before it returns them). */
		f->spare = __atomic_exchange_n(&f->ret, NULL, __ATOMIC_ACQUIRE);
		for (b = f->spare; b; b = b->next)
			n++;
		__atomic_fetch_sub(&f->nret, n, __ATOMIC_RELAXED);
	}
	if ((b = f->spare) && need <= b->cap) {
		f->spare = b->next;
	} else {
		size_t cap = need > BATCH_CAP ? need : BATCH_CAP;

		if (!(b = malloc(sizeof(*b) + cap)))
			abort(); /* as every allocation on the shards */
		b->cap = cap;
	}
	b->len = 0;
	b->n = 0;
	b->first = f->fed;
	return b;
}

void search_feed(search *sx, unsigned shard, const void *ev, size_t len)
{
	struct feed *f = &sx->feeds[shard];
	struct fbatch *b = f->cur;
	size_t need = 4 + len;
	uint32_t n32 = (uint32_t)len;

	if (b && b->len + need > b->cap) {
		/* a full buffer goes now (order kept: the stack is per
		 * shard); the turn's rest follows in the next */
		push(sx, f);
		b = NULL;
	}
	if (!b)
		b = f->cur = batch_get(f, need);
	memcpy(b->data + b->len, &n32, 4);
	memcpy(b->data + b->len + 4, ev, len);
	b->len += need;
	b->n++;
	/* Release: a query that reads this count (snapshot at its arrival)
	 * waits until the indexer has this event. Counted here, per event,
	 * not at the turn's flush: the ack that follows in this turn may
	 * reach its connection's shard, and the client, before this shard's
	 * turn ends (send_buf_to_conn posts it at once). One plain store on
	 * x86, to a line only this shard writes. */
	__atomic_store_n(&f->fed, f->fed + 1, __ATOMIC_RELEASE);
}

void search_feed_flush(search *sx, unsigned shard)
{
	push(sx, &sx->feeds[shard]);
}

/* ---- the indexer's channel cache ---------------------------------------- */

static int cache_grow(search *sx)
{
	size_t ncap = sx->ccap ? sx->ccap * 2 : 256;
	struct chent *nv = calloc(ncap, sizeof(*nv));

	if (!nv)
		return -ENOMEM;
	for (size_t i = 0; i < sx->ccap; i++) {
		struct chent *e = &sx->cache[i];
		size_t j;

		if (!e->cid)
			continue;
		for (j = fnv(e->id) & (ncap - 1); nv[j].cid; j = (j + 1) & (ncap - 1))
			;
		nv[j] = *e;
	}
	free(sx->cache);
	sx->cache = nv;
	sx->ccap = ncap;
	return 0;
}

static void cache_clear(search *sx)
{
	if (sx->cn)
		memset(sx->cache, 0, sx->ccap * sizeof(*sx->cache));
	sx->cn = 0;
}

/* The channel's entry, loaded from (or created in) chans. NULL on error. */
static struct chent *chan_get(search *sx, const char *id)
{
	sqlite3_stmt *s;
	struct chent *e;
	size_t j;
	int rc;

	if ((sx->cn + 1) * 2 > sx->ccap && cache_grow(sx))
		return NULL;
	for (j = fnv(id) & (sx->ccap - 1); sx->cache[j].cid;
	     j = (j + 1) & (sx->ccap - 1))
		if (!strcmp(sx->cache[j].id, id))
			return &sx->cache[j];
	e = &sx->cache[j];
	s = sx->w[W_CHAN_GET];
	sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		e->cid = sqlite3_column_int64(s, 0);
		e->pos = (uint64_t)sqlite3_column_int64(s, 1);
	}
	sqlite3_reset(s);
	if (rc == SQLITE_DONE) {
		s = sx->w[W_CHAN_ADD];
		sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
		if (step_done(s))
			return NULL;
		e->cid = sqlite3_last_insert_rowid(sx->wdb);
		e->pos = 0;
	} else if (rc != SQLITE_ROW) {
		return NULL;
	}
	snprintf(e->id, sizeof(e->id), "%s", id);
	e->pos0 = e->pos;
	sx->cn++;
	return e;
}

/* ---- the indexer's transactions ------------------------------------------ */

static int txn_begin(search *sx)
{
	if (sx->in_txn)
		return 0;
	if (step_done(sx->w[W_BEGIN]))
		return -EIO;
	sx->in_txn = true;
	sx->txn_events = 0;
	return 0;
}

/* Write the positions that moved and commit; on failure roll back (the
 * events are lost to the index until catch-up re-reads them). */
static int txn_commit(search *sx)
{
	int rc = 0;

	if (!sx->in_txn)
		return 0;
	for (size_t i = 0; i < sx->ccap && !rc; i++) {
		struct chent *e = &sx->cache[i];

		if (!e->cid || e->pos == e->pos0)
			continue;
		sqlite3_bind_int64(sx->w[W_CHAN_POS], 1, e->cid);
		sqlite3_bind_int64(sx->w[W_CHAN_POS], 2, (int64_t)e->pos);
		rc = step_done(sx->w[W_CHAN_POS]);
	}
	if (!rc)
		rc = step_done(sx->w[W_COMMIT]);
	if (rc) {
		plog(PL_ERROR, "search", "%s: writing the index failed: %s; "
		     "the events wait for the next catch-up",
		     sqlite3_db_filename(sx->wdb, "main"),
		     sqlite3_errmsg(sx->wdb));
		step_done(sx->w[W_ROLLBACK]);
	} else {
		int64_t moved = 0;

		for (size_t i = 0; i < sx->ccap; i++)
			if (sx->cache[i].cid)
				moved += (int64_t)(sx->cache[i].pos -
						   sx->cache[i].pos0);
		__atomic_fetch_add(&sx->events, (uint64_t)moved,
				   __ATOMIC_RELAXED);
	}
	sx->in_txn = false;
	cache_clear(sx);
	__atomic_store_n(&sx->failing, rc != 0, __ATOMIC_RELAXED);
	return rc;
}

static void txn_abort(search *sx)
{
	if (sx->in_txn)
		step_done(sx->w[W_ROLLBACK]);
	sx->in_txn = false;
	cache_clear(sx);
	__atomic_store_n(&sx->failing, 1, __ATOMIC_RELAXED);
}

/* ---- applying one event --------------------------------------------------- */

static void bind_ctok(sqlite3_stmt *s, int i, int64_t cid)
{
	char t[24];

	snprintf(t, sizeof(t), "k%lld", (long long)cid);
	sqlite3_bind_text(s, i, t, -1, SQLITE_TRANSIENT);
}

/* A free rid for a message of time ts (invariant 2). */
static int rid_for(search *sx, uint64_t ts, int64_t *rid)
{
	sqlite3_stmt *s = sx->w[W_RID_MAX];
	int64_t base = (int64_t)(ts & ((1ull << 50) - 1)) * 4096;
	int rc;

	sqlite3_bind_int64(s, 1, base);
	sqlite3_bind_int64(s, 2, base + 4095);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		if (sqlite3_column_type(s, 0) == SQLITE_NULL)
			*rid = base;
		else
			*rid = sqlite3_column_int64(s, 0) + 1;
	}
	sqlite3_reset(s);
	if (rc != SQLITE_ROW)
		return -EIO;
	if (*rid <= base + 4095)
		return 0;
	/* 4096 messages in one millisecond: after everything (order bends) */
	s = sx->w[W_RID_TOP];
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*rid = sqlite3_column_int64(s, 0) + 1;
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? 0 : -EIO;
}

/* The rid and indexed text (body, then file names) of (cid, seq), and the
 * file names alone if fnames; 1 if found (body and *fnames malloc'd, the
 * latter NULL when it has no files), 0 if not. */
static int msg_find(search *sx, int64_t cid, uint64_t seq, int64_t *rid,
		    char **body, char **fnames)
{
	sqlite3_stmt *s = sx->w[W_MSG_GET];
	int rc;

	sqlite3_bind_int64(s, 1, cid);
	sqlite3_bind_int64(s, 2, (int64_t)seq);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*rid = sqlite3_column_int64(s, 0);
		*body = strdup((const char *)sqlite3_column_text(s, 1));
		rc = *body ? 1 : -ENOMEM;
		if (fnames) {
			const char *f = (const char *)sqlite3_column_text(s, 2);

			*fnames = f ? strdup(f) : NULL;
		}
	} else {
		rc = rc == SQLITE_DONE ? 0 : -EIO;
	}
	sqlite3_reset(s);
	return rc;
}

/* Remove the tokens of row rid (old text body) from fts. */
static int fts_unindex(search *sx, int64_t rid, const char *body, int64_t cid)
{
	sqlite3_stmt *s = sx->w[W_FTS_DEL];

	sqlite3_bind_int64(s, 1, rid);
	sqlite3_bind_text(s, 2, body, -1, SQLITE_STATIC);
	bind_ctok(s, 3, cid);
	return step_done(s);
}

static int fts_index(search *sx, int64_t rid, const char *body, size_t n,
		     int64_t cid)
{
	sqlite3_stmt *s = sx->w[W_FTS_INS];

	sqlite3_bind_int64(s, 1, rid);
	sqlite3_bind_text(s, 2, body, (int)n, SQLITE_STATIC);
	bind_ctok(s, 3, cid);
	return step_done(s);
}

/* The names of ev's files, one per line (malloc'd), or NULL. */
static char *file_names(const proto_event *ev)
{
	proto_doc d;
	const msgpack_object_array *a;
	msgpack_object root;
	size_t len = 0, cap = 0;
	char *out = NULL;

	if (!ev->files || !ev->files_len)
		return NULL;
	/* the array alone: wrap it in a map to decode it as a doc */
	{
		size_t n = ev->files_len + 7;
		uint8_t *buf = malloc(n);
		int rc;

		buf[0] = 0x81;
		buf[1] = 0xa1;
		buf[2] = 'f';
		memcpy(buf + 3, ev->files, ev->files_len);
		rc = proto_decode_max(&d, buf, ev->files_len + 3,
				      PROTO_MAX_STATE);
		free(buf);
		if (rc != PROTO_OK)
			return NULL;
	}
	root = d.root;
	if (proto_get_array(&root, "f", &a) == 0) {
		for (uint32_t i = 0; i < a->size; i++) {
			const char *nm;
			uint32_t nl;

			if (a->ptr[i].type != MSGPACK_OBJECT_MAP ||
			    proto_get_str(&a->ptr[i], "name", &nm, &nl))
				continue;
			if (len + nl + 2 > cap) {
				cap = 2 * (len + nl + 2);
				out = realloc(out, cap);
			}
			if (len)
				out[len++] = '\n';
			memcpy(out + len, nm, nl);
			len += nl;
			out[len] = 0;
		}
	}
	proto_doc_free(&d);
	return out;
}

/* body, then a newline and fnames if any (malloc'd), and its length */
static char *indexed_text(const char *body, size_t bn, const char *fnames,
			  size_t *n)
{
	size_t fl = fnames ? strlen(fnames) : 0;
	char *t = malloc(bn + fl + 2);

	memcpy(t, body, bn);
	*n = bn;
	if (fl) {
		t[(*n)++] = '\n';
		memcpy(t + *n, fnames, fl);
		*n += fl;
	}
	t[*n] = 0;
	return t;
}

static int apply_msg(search *sx, struct chent *ce, const proto_event *ev)
{
	sqlite3_stmt *s = sx->w[W_MSG_INS];
	int64_t rid, old;
	char *body, *fnames, *text;
	size_t tn;
	int rc = msg_find(sx, ce->cid, ev->seq, &old, &body, NULL);

	if (rc) {
		/* already there (an index reset half way?): keep it */
		if (rc == 1)
			free(body);
		return rc < 0 ? rc : 0;
	}
	if (rid_for(sx, ev->ts, &rid))
		return -EIO;
	fnames = file_names(ev);
	sqlite3_bind_int64(s, 1, rid);
	sqlite3_bind_int64(s, 2, ce->cid);
	sqlite3_bind_int64(s, 3, (int64_t)ev->seq);
	sqlite3_bind_int64(s, 4, (int64_t)ev->ts);
	sqlite3_bind_text(s, 5, ev->from.s, (int)ev->from.n, SQLITE_STATIC);
	sqlite3_bind_text(s, 6, ev->body.s, (int)ev->body.n, SQLITE_STATIC);
	if (fnames)
		sqlite3_bind_text(s, 7, fnames, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(s, 7);
	if (fnames)
		sqlite3_bind_blob(s, 8, ev->files, (int)ev->files_len,
				  SQLITE_STATIC);
	else
		sqlite3_bind_null(s, 8);
	if (step_done(s)) {
		free(fnames);
		return -EIO;
	}
	text = indexed_text(ev->body.s ? ev->body.s : "", ev->body.n, fnames,
			    &tn);
	rc = fts_index(sx, rid, text, tn, ce->cid);
	free(text);
	free(fnames);
	return rc;
}

/* edit (body set) or delete (body NULL) of message ev->target */
static int apply_change(search *sx, struct chent *ce, const proto_event *ev,
			bool del)
{
	int64_t rid;
	char *old, *fnames = NULL, *text;
	size_t tn;
	int rc = msg_find(sx, ce->cid, ev->target, &rid, &old, &fnames);
	sqlite3_stmt *s;

	if (rc <= 0)
		return rc; /* not a message we hold (deleted, never indexed) */
	rc = fts_unindex(sx, rid, old, ce->cid);
	free(old);
	if (rc || del) {
		free(fnames);
		if (rc)
			return rc;
		s = sx->w[W_MSG_DEL];
		sqlite3_bind_int64(s, 1, rid);
		return step_done(s);
	}
	s = sx->w[W_MSG_UPD];
	sqlite3_bind_int64(s, 1, rid);
	sqlite3_bind_text(s, 2, ev->body.s, (int)ev->body.n, SQLITE_STATIC);
	if (step_done(s)) {
		free(fnames);
		return -EIO;
	}
	/* an edit changes the text; the files stay */
	text = indexed_text(ev->body.s ? ev->body.s : "", ev->body.n, fnames,
			    &tn);
	rc = fts_index(sx, rid, text, tn, ce->cid);
	free(text);
	free(fnames);
	return rc;
}

static bool kind_is(proto_str k, const char *s)
{
	return k.n == strlen(s) && !memcmp(k.s, s, k.n);
}

/* Apply a decoded event of channel ce (its next one). */
static int apply(search *sx, struct chent *ce, const proto_event *ev)
{
	int rc = 0;

	if (kind_is(ev->k, "msg"))
		rc = apply_msg(sx, ce, ev);
	else if (kind_is(ev->k, "edit"))
		rc = apply_change(sx, ce, ev, false);
	else if (kind_is(ev->k, "delete"))
		rc = apply_change(sx, ce, ev, true);
	/* react and anything newer: nothing to index, the position moves */
	if (!rc) {
		ce->pos = ev->seq;
		sx->txn_events++;
	}
	return rc;
}

static int decode(proto_doc *doc, proto_event *ev, const void *f, size_t n)
{
	if (proto_decode_max(doc, f, n, EV_MAX) != PROTO_OK)
		return -1;
	if (proto_dec_event(&doc->root, ev, NULL, 0) || !ev->seq ||
	    !ev->ch.n || ev->ch.n > STORE_ID_MAX) {
		proto_doc_free(doc);
		return -1;
	}
	return 0;
}

/* Shutting down, and past the time allowed to drain: leave the rest to the
 * next start's catch-up (indexing follows the store, so nothing is lost).
 * Without a store there is nothing to catch up from: everything fed is
 * indexed before the indexer leaves. */
static bool past_stop(search *sx)
{
	/* Acquire: pairs with search_close's release store; stop_by is
	 * written before it. */
	return sx->st && __atomic_load_n(&sx->stop, __ATOMIC_ACQUIRE) &&
	       mono_ms() >= sx->stop_by;
}

/* Index channel ce's events from the store's log, up to seq upto. */
struct backfill {
	search *sx;
	struct chent *ce;
	uint64_t upto;
	int rc;
};

static int backfill_one(void *arg, uint64_t seq, const void *v, size_t len)
{
	struct backfill *b = arg;
	proto_doc doc;
	proto_event ev;

	if (seq > b->upto)
		return 1;
	if (seq <= b->ce->pos)
		return 0;
	if (decode(&doc, &ev, v, len)) {
		/* unreadable: skip it (nothing can index it) */
		b->ce->pos = seq;
		return 0;
	}
	ev.seq = seq;
	b->rc = apply(b->sx, b->ce, &ev);
	proto_doc_free(&doc);
	return b->rc ? 1 : 0;
}

static int backfill(search *sx, struct chent *ce, uint64_t upto)
{
	struct backfill b = { .sx = sx, .ce = ce, .upto = upto };
	char id[IDCAP];
	int more = 1;

	/* ce may move when the cache grows: only between scans, and scans
	 * here never add channels; copy the id for the store anyway. */
	snprintf(id, sizeof(id), "%s", ce->id);
	while (!b.rc && more && ce->pos < upto) {
		uint64_t from = ce->pos;

		if (past_stop(sx))
			return -ECANCELED; /* ce->pos: as far as it got */
		if (store_scan_events(sx->st, id, from, 256, backfill_one, &b,
				      &more))
			return -EIO;
		if (ce->pos == from)
			break; /* nothing there: the log has a hole; jump */
	}
	if (!b.rc && ce->pos < upto)
		ce->pos = upto;
	return b.rc;
}

/* One fed event. A gap before it is filled from the store first. */
static int ingest(search *sx, const void *frame, size_t len)
{
	proto_doc doc;
	proto_event ev;
	struct chent *ce;
	char id[IDCAP];
	int rc = 0;

	if (decode(&doc, &ev, frame, len))
		return 0; /* not an event: nothing to index */
	memcpy(id, ev.ch.s, ev.ch.n);
	id[ev.ch.n] = 0;
	ce = chan_get(sx, id);
	if (!ce) {
		rc = -EIO;
		goto out;
	}
	if (ev.seq <= ce->pos)
		goto out; /* catch-up or a backfill had it already */
	if (ev.seq > ce->pos + 1 && sx->st)
		rc = backfill(sx, ce, ev.seq - 1);
	if (!rc)
		rc = apply(sx, ce, &ev);
out:
	proto_doc_free(&doc);
	return rc;
}

/* ---- catch-up: the whole store against the positions ---------------------- */

/* Drop everything indexed for a channel (its index is ahead of its log:
 * the store was replaced under us). */
static int chan_reset(search *sx, struct chent *ce)
{
	sqlite3_stmt *s = sx->w[W_CHAN_MSGS];
	int rc;

	sqlite3_bind_int64(s, 1, ce->cid);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (fts_unindex(sx, sqlite3_column_int64(s, 0),
				(const char *)sqlite3_column_text(s, 1),
				ce->cid)) {
			rc = SQLITE_ERROR;
			break;
		}
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		return -EIO;
	s = sx->w[W_CHAN_CLEAR];
	sqlite3_bind_int64(s, 1, ce->cid);
	if (step_done(s))
		return -EIO;
	ce->pos = 0;
	return 0;
}

struct catchup {
	search *sx;
	int rc;
	bool cut;              /* stopped for shutdown, the rest left */
	uint64_t events;
};

static int catchup_one(void *arg, const char *idp, size_t n)
{
	struct catchup *c = arg;
	search *sx = c->sx;
	store_chstat cs;
	struct chent *ce;
	char id[IDCAP];
	unsigned before;

	if (n == 0 || n > STORE_ID_MAX)
		return 0;
	if (past_stop(sx)) {
		c->cut = true;
		return 1;
	}
	memcpy(id, idp, n);
	id[n] = 0;
	if (store_get_chstat(sx->st, id, &cs))
		return 0; /* gone since the scan saw it */
	if (!cs.last_seq)
		return 0;
	if ((c->rc = txn_begin(sx)))
		return 1;
	before = sx->txn_events;
	if (!(ce = chan_get(sx, id))) {
		c->rc = -EIO;
		return 1;
	}
	if (ce->pos > cs.last_seq)
		c->rc = chan_reset(sx, ce);
	if (!c->rc && ce->pos < cs.last_seq)
		c->rc = backfill(sx, ce, cs.last_seq);
	c->events += sx->txn_events - before;
	if (c->rc == -ECANCELED) {
		c->rc = 0; /* what it did is kept */
		c->cut = true;
		return 1;
	}
	if (!c->rc && (sx->txn_events >= CATCHUP_TXN || sx->cn >= 4096))
		c->rc = txn_commit(sx);
	return c->rc ? 1 : 0;
}

static int catchup_all(search *sx, bool *cut)
{
	struct catchup c = { .sx = sx };
	uint64_t t0 = mono_ms();

	if (!sx->st)
		return 0;
	if (store_scan_channels(sx->st, catchup_one, &c) && !c.rc && !c.cut)
		c.rc = -EIO;
	if (c.rc)
		txn_abort(sx);
	else
		c.rc = txn_commit(sx);
	if (c.events || c.rc)
		plog(PL_INFO, "search", "caught up %llu events from the log "
				"in %llu ms%s",
			(unsigned long long)c.events,
			(unsigned long long)(mono_ms() - t0),
			c.rc  ? " (failed; will retry)"
			: c.cut ? " (stopped: shutting down)"
				: "");
	*cut = c.cut;
	return c.rc;
}

/* ---- the indexer thread --------------------------------------------------- */

/* Take every shard's pushed batches, oldest first per shard. */
static bool take_all(search *sx, struct fbatch **lists)
{
	bool any = false;

	for (unsigned i = 0; i < sx->nshards; i++) {
		/* Acquire: pairs with the shard's release CAS. */
		struct fbatch *b = __atomic_exchange_n(&sx->feeds[i].head, NULL,
						       __ATOMIC_ACQUIRE);
		struct fbatch *rev = NULL;

		while (b) {
			struct fbatch *next = b->next;

			b->next = rev;
			rev = b;
			b = next;
		}
		lists[i] = rev;
		any |= rev != NULL;
	}
	return any;
}

/* Give a buffer back to its shard for reuse, or free it. */
static void batch_return(struct feed *f, struct fbatch *b)
{
	struct fbatch *old;

	if (b->cap != BATCH_CAP ||
	    __atomic_load_n(&f->nret, __ATOMIC_RELAXED) >= SPARE_MAX) {
		free(b);
		return;
	}
	__atomic_fetch_add(&f->nret, 1, __ATOMIC_RELAXED);
	old = __atomic_load_n(&f->ret, __ATOMIC_RELAXED);
	do
		b->next = old;
	/* Release: done with b's bytes before the shard may reuse them. */
	while (!__atomic_compare_exchange_n(&f->ret, &old, b, true,
					    __ATOMIC_RELEASE,
					    __ATOMIC_RELAXED));
}

/* Publish each shard's ready (under mu, for the waiting queries and
 * search_sync) and wake whoever waits. Indexer thread. */
static void publish(search *sx)
{
	pthread_mutex_lock(&sx->mu);
	for (unsigned i = 0; i < sx->nshards; i++) {
		struct feed *f = &sx->feeds[i];
		uint64_t r = f->covered;

		/* Without a store (tests, benchmarks) what a hole lost is
		 * gone for good: nothing to wait for. */
		if ((!f->hole || !sx->st) && f->applied_end > r)
			r = f->applied_end;
		if (r > f->ready)
			__atomic_store_n(&f->ready, r, __ATOMIC_RELEASE);
	}
	if (sx->waiters)
		pthread_cond_broadcast(&sx->cv);
	pthread_mutex_unlock(&sx->mu);
}

/* Index the taken batches; always gives them back. Moves each shard's
 * applied_end, and marks a hole where a batch is missing (dropped by the
 * shard), cut short or lost with a failed transaction. */
static void index_lists(search *sx, struct fbatch **lists)
{
	size_t bytes = 0, left = 0;
	int rc = 0;

	for (unsigned i = 0; i < sx->nshards; i++) {
		struct feed *f = &sx->feeds[i];

		for (struct fbatch *b = lists[i], *next; b; b = next) {
			const uint8_t *p = b->data, *end = b->data + b->len;
			const uint8_t *p_ev = p;
			uint64_t have = f->applied_end > f->covered
						? f->applied_end
						: f->covered;

			next = b->next;
			/* events have..first were dropped, and no pass has
			 * read them back yet (the drop set resync: one will) */
			if (b->first > have)
				f->hole = true;
			if (left || past_stop(sx)) {
				left += b->len; /* the catch-up's, next start */
				p = end;
				f->hole = true;
			}
			while (p < end && !rc) {
				uint32_t n;

				p_ev = p;
				memcpy(&n, p, 4);
				if (!(rc = txn_begin(sx)))
					rc = ingest(sx, p + 4, n);
				if (!rc && sx->txn_events >= TXN_EVENTS)
					rc = txn_commit(sx);
				p += 4 + n;
			}
			if (rc == -ECANCELED) {
				/* a backfill met the shutdown deadline: keep
				 * what is done, leave this event on (p is
				 * past it: count it back in) */
				rc = 0;
				left += (size_t)(end - p_ev);
				f->hole = true;
			}
			if (rc)
				f->hole = true; /* the rest of it is not in */
			if (b->first + b->n > f->applied_end)
				f->applied_end = b->first + b->n;
			bytes += b->len;
			batch_return(f, b);
		}
	}
	if (rc) {
		txn_abort(sx);
		/* What was lost is still in the store: read it back later;
		 * until then, the shards' batches here are a hole. */
		for (unsigned i = 0; i < sx->nshards; i++)
			if (lists[i])
				sx->feeds[i].hole = true;
		__atomic_store_n(&sx->resync, 1, __ATOMIC_RELEASE);
	} else if (txn_commit(sx)) {
		for (unsigned i = 0; i < sx->nshards; i++)
			if (lists[i])
				sx->feeds[i].hole = true;
		__atomic_store_n(&sx->resync, 1, __ATOMIC_RELEASE);
	}
	if (left)
		plog(PL_INFO, "search", "stopping; %zu bytes of events left to "
				"the next start's catch-up", left);
	__atomic_fetch_sub(&sx->pending, bytes, __ATOMIC_RELAXED);
	publish(sx);
}

/* The indexer's CPU time is what the index costs the commit path when
 * the cores are busy: at nice 19 it takes what the shards and the sync
 * threads leave (about 1/70 of a core's share against them when all want
 * it), so acks do not slow down; under a sustained overload the index
 * falls behind (bounded by PENDING_MAX, then re-read from the log) and
 * catches up when the load eases. Linux applies nice per thread. */
static void lower_priority(void)
{
	if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19))
		plog(PL_WARN, "search", "indexer priority: %s",
			strerror(errno));
}

/* A catch-up pass, and what it covers: it indexes, for every channel,
 * the log up to the channel's last seq as read during the pass, so every
 * event fed before the pass began is in the index once it completes (a
 * shard feeds an event only once it is durable, with its channel's 'S'
 * record in the same batch). So each shard's fed, read before the pass,
 * is covered after it: drops before that point are healed. 0, or the
 * pass failed (or was cut by shutdown). */
static int catchup_pass(search *sx)
{
	uint64_t *fed = calloc(sx->nshards, sizeof(*fed));
	bool cut = false;
	int rc;

	if (!fed)
		return -ENOMEM;
	for (unsigned i = 0; i < sx->nshards; i++)
		/* Acquire: pairs with search_feed's release store; those
		 * events' records are in the store. */
		fed[i] = __atomic_load_n(&sx->feeds[i].fed, __ATOMIC_ACQUIRE);
	rc = catchup_all(sx, &cut);
	if (!rc && !cut) {
		for (unsigned i = 0; i < sx->nshards; i++) {
			struct feed *f = &sx->feeds[i];
			/* Without a store (tests, benchmarks) the pass reads
			 * nothing: events still on their way are not covered,
			 * and dropped ones are gone for good, so what was
			 * applied is all there will be of them. */
			uint64_t c = sx->st ? fed[i] : f->applied_end;

			if (c > f->covered)
				f->covered = c;
			/* every hole is below applied_end <= fed[i] */
			f->hole = false;
		}
		publish(sx);
	}
	free(fed);
	return rc ? rc : cut ? -ECANCELED : 0;
}

/* PARLEY_TEST_SEARCH_STALL_MS: hold what was taken this long before
 * indexing it (a test's way to keep the index behind; 0 in production). */
static void test_stall(search *sx)
{
	uint64_t until = mono_ms() + sx->stall_ms;

	while (mono_ms() < until && !__atomic_load_n(&sx->stop, __ATOMIC_ACQUIRE)) {
		struct timespec ts = { 0, 10 * 1000000L };

		nanosleep(&ts, NULL);
	}
}

static void *indexer_main(void *arg)
{
	search *sx = arg;
	struct fbatch **lists = calloc(sx->nshards, sizeof(*lists));
	uint64_t retry_at = 0;

	lower_priority();

	if (catchup_pass(sx)) {
		__atomic_store_n(&sx->resync, 1, __ATOMIC_RELEASE);
		retry_at = mono_ms() + 1000;
	}
	pthread_mutex_lock(&sx->mu);
	sx->caught_up = true;
	pthread_cond_broadcast(&sx->cv);
	pthread_mutex_unlock(&sx->mu);

	for (;;) {
		/* Acquire: every push before search_close's release store
		 * is seen by the take that follows. */
		bool stop = __atomic_load_n(&sx->stop, __ATOMIC_ACQUIRE);
		bool any = take_all(sx, lists);

		if (any && sx->stall_ms)
			test_stall(sx);
		if (any)
			index_lists(sx, lists);
		if (__atomic_load_n(&sx->resync, __ATOMIC_ACQUIRE) &&
		    mono_ms() >= retry_at && !stop) {
			/* Cleared before reading the store: a drop after this
			 * point sets it again and gets its own pass. */
			__atomic_store_n(&sx->resync, 0, __ATOMIC_RELEASE);
			if (catchup_pass(sx)) {
				__atomic_store_n(&sx->resync, 1,
						 __ATOMIC_RELEASE);
				retry_at = mono_ms() + 1000;
			}
		}
		if (stop && !any)
			break;
		if (!any || !stop)
			/* a query (or search_sync) waiting for a shard's
			 * next push: look every millisecond, not every 20 */
			wait_fd(sx->efd_idx,
				__atomic_load_n(&sx->waiters, __ATOMIC_RELAXED)
					? FRESH_POLL_MS
					: WAKE_MS);
	}
	free(lists);
	return NULL;
}

void search_sync(search *sx)
{
	uint64_t *want = calloc(sx->nshards, sizeof(*want));

	for (unsigned i = 0; i < sx->nshards && want; i++)
		want[i] = __atomic_load_n(&sx->feeds[i].flushed,
					  __ATOMIC_ACQUIRE);
	pthread_mutex_lock(&sx->mu);
	__atomic_fetch_add(&sx->waiters, 1, __ATOMIC_RELAXED);
	for (;;) {
		bool behind = !sx->caught_up;

		for (unsigned i = 0; i < sx->nshards && want && !behind; i++)
			behind = sx->feeds[i].ready < want[i];
		if (!behind)
			break;
		wake(sx->efd_idx);
		pthread_cond_wait(&sx->cv, &sx->mu);
	}
	__atomic_fetch_sub(&sx->waiters, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&sx->mu);
	free(want);
}

/* ---- query translation ---------------------------------------------------- */

struct tokcount {
	unsigned n;
	unsigned last_chars; /* characters of the last token */
};

static int count_token(void *ctx, int flags, const char *t, int nt, int s,
		       int e)
{
	struct tokcount *c = ctx;
	unsigned chars = 0;

	(void)s;
	(void)e;
	if (flags & FTS5_TOKEN_COLOCATED)
		return SQLITE_OK;
	for (int i = 0; i < nt; i++)
		chars += ((uint8_t)t[i] & 0xc0) != 0x80;
	c->n++;
	c->last_chars = chars;
	return SQLITE_OK;
}

struct sbuf {
	char *p;
	size_t n, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *p;

		while (cap < b->n + n + 1)
			cap *= 2;
		if (!(p = realloc(b->p, cap)))
			abort();
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

static void sb_cstr(struct sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* One term as an FTS5 string: quoted, inner quotes doubled, so nothing in
 * it is syntax; the table's tokenizer splits it into a phrase. */
static void sb_quoted(struct sbuf *b, const char *s, size_t n)
{
	sb_add(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		sb_add(b, &s[i], 1);
		if (s[i] == '"')
			sb_add(b, "\"", 1);
	}
	sb_add(b, "\"", 1);
}

static bool is_space(char c)
{
	/* NUL too: the expression is a C string */
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
	       c == '\v' || c == 0;
}

/* q -> "body : (t1 AND t2* AND "a phrase")" into out. 0, -EINVAL (no
 * searchable term), -E2BIG (too many terms). */
static int translate(search *sx, const char *q, size_t n, struct sbuf *out)
{
	unsigned terms = 0;
	size_t i = 0;

	sb_cstr(out, "body : (");
	while (i < n) {
		const char *t;
		size_t tn;
		bool prefix = false;
		struct tokcount tc = { 0 };

		while (i < n && is_space(q[i]))
			i++;
		if (i >= n)
			break;
		if (q[i] == '"') {
			/* "a phrase", to the next quote or the end */
			t = q + ++i;
			while (i < n && q[i] != '"')
				i++;
			tn = (size_t)(q + i - t);
			if (i < n)
				i++;
			if (i < n && q[i] == '*') {
				prefix = true;
				i++;
			}
		} else {
			t = q + i;
			while (i < n && !is_space(q[i]) && q[i] != '"')
				i++;
			tn = (size_t)(q + i - t);
			while (tn && t[tn - 1] == '*') {
				prefix = true;
				tn--;
			}
		}
		if (!tn)
			continue;
		sx->tok.xTokenize(sx->tokinst, &tc, FTS5_TOKENIZE_QUERY, t,
				  (int)tn, count_token);
		if (!tc.n)
			continue; /* punctuation only: nothing to look for */
		if (prefix && tc.last_chars < MIN_PREFIX)
			prefix = false; /* "a*": too broad; the word itself */
		if (++terms > SEARCH_MAX_TERMS)
			return -E2BIG;
		if (terms > 1)
			sb_cstr(out, " AND ");
		sb_quoted(out, t, tn);
		if (prefix)
			sb_add(out, "*", 1);
	}
	sb_add(out, ")", 1);
	return terms ? 0 : -EINVAL;
}

/* ---- the query thread -------------------------------------------------------- */

struct cidmap {
	int64_t cid;
	unsigned ch; /* index into the request's chs */
};

static int cmp_cid(const void *a, const void *b)
{
	int64_t x = ((const struct cidmap *)a)->cid;
	int64_t y = ((const struct cidmap *)b)->cid;

	return x < y ? -1 : x > y;
}

/* Has the index everything acked before r arrived? Under sx->mu. */
static bool fresh_for(search *sx, const struct qreq *r)
{
	if (!sx->caught_up)
		return false;
	for (unsigned i = 0; i < sx->nshards; i++)
		if (sx->feeds[i].ready < r->snap[i])
			return false;
	return true;
}

/* Wait until the index holds every event fed before r arrived, until r's
 * deadline at most. 0 (fresh), SEARCH_PARTIAL (the deadline passed, or
 * the server is stopping: answer with what the index has), -EAGAIN
 * (stopping before the catch-up after open was done). */
static int wait_fresh(search *sx, const struct qreq *r)
{
	struct timespec dl = { (time_t)(r->deadline_ms / 1000),
			       (long)(r->deadline_ms % 1000) * 1000000L };
	bool counted = false;
	int st;

	pthread_mutex_lock(&sx->mu);
	for (;;) {
		if (fresh_for(sx, r)) {
			st = 0;
			break;
		}
		/* shutting down: the queries left are answered at once, not
		 * after a wait each (search_close broadcasts) */
		if (__atomic_load_n(&sx->qstop, __ATOMIC_ACQUIRE)) {
			st = sx->caught_up ? SEARCH_PARTIAL : -EAGAIN;
			break;
		}
		if (!counted) {
			/* the indexer looks every millisecond from now */
			__atomic_fetch_add(&sx->waiters, 1, __ATOMIC_RELAXED);
			counted = true;
			wake(sx->efd_idx);
		}
		if (pthread_cond_timedwait(&sx->cv, &sx->mu, &dl) == ETIMEDOUT) {
			st = fresh_for(sx, r) ? 0 : SEARCH_PARTIAL;
			break;
		}
	}
	if (counted)
		__atomic_fetch_sub(&sx->waiters, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&sx->mu);
	return st;
}

/* Strings of the hits, kept until the callback returns. */
struct hitbuf {
	search_hit *h;
	char **strs;
	unsigned n;
};

static int run_match(search *sx, const struct qreq *r, const char *expr,
		     const struct cidmap *cm, unsigned ncm, struct hitbuf *hb)
{
	sqlite3_stmt *m = sx->r[R_MATCH], *g = sx->r[R_MSG];
	int rc;

	sqlite3_bind_text(m, 1, expr, -1, SQLITE_STATIC);
	while (hb->n < r->limit && (rc = sqlite3_step(m)) == SQLITE_ROW) {
		int64_t rid = sqlite3_column_int64(m, 0);
		struct cidmap key, *hit;
		search_hit *h = &hb->h[hb->n];
		char *s;
		const char *from, *body;
		size_t fn, bn, fl;

		sqlite3_bind_int64(g, 1, rid);
		if (sqlite3_step(g) != SQLITE_ROW) {
			sqlite3_reset(g);
			continue; /* cannot happen in one read transaction */
		}
		key.cid = sqlite3_column_int64(g, 0);
		/* With c tokens in the query every row is in the set; the
		 * lookup names its channel. Else it is the filter. */
		hit = bsearch(&key, cm, ncm, sizeof(*cm), cmp_cid);
		if (!hit) {
			sqlite3_reset(g);
			continue;
		}
		from = (const char *)sqlite3_column_text(g, 3);
		fn = (size_t)sqlite3_column_bytes(g, 3);
		body = (const char *)sqlite3_column_text(g, 4);
		bn = (size_t)sqlite3_column_bytes(g, 4);
		fl = sqlite3_column_type(g, 5) == SQLITE_BLOB
			     ? (size_t)sqlite3_column_bytes(g, 5) : 0;
		s = malloc(fn + bn + 2 + fl);
		if (!s) {
			sqlite3_reset(g);
			rc = SQLITE_NOMEM;
			break;
		}
		memcpy(s, from ? from : "", fn);
		s[fn] = 0;
		memcpy(s + fn + 1, body ? body : "", bn);
		s[fn + 1 + bn] = 0;
		if (fl)
			memcpy(s + fn + bn + 2, sqlite3_column_blob(g, 5), fl);
		h->files = fl ? s + fn + bn + 2 : NULL;
		h->files_len = fl;
		hb->strs[hb->n] = s;
		h->ch = r->chs[hit->ch];
		h->seq = (uint64_t)sqlite3_column_int64(g, 1);
		h->ts = (uint64_t)sqlite3_column_int64(g, 2);
		h->from = s;
		h->body = s + fn + 1;
		h->body_len = bn;
		hb->n++;
		sqlite3_reset(g);
	}
	if (hb->n >= r->limit)
		rc = SQLITE_DONE;
	sqlite3_reset(m);
	sqlite3_clear_bindings(m);
	return rc == SQLITE_DONE ? 0 : -EIO;
}

static int run_query(search *sx, const struct qreq *r, struct hitbuf *hb)
{
	struct sbuf expr = { 0 };
	struct cidmap *cm = NULL;
	unsigned ncm = 0;
	uint64_t set_events = 0;
	int rc, fresh;

	/* a failing index answers UNAVAILABLE at once, not after a wait */
	if (__atomic_load_n(&sx->failing, __ATOMIC_RELAXED))
		return -EIO;
	if ((fresh = wait_fresh(sx, r)) < 0)
		return fresh;
	if (__atomic_load_n(&sx->failing, __ATOMIC_RELAXED))
		return -EIO;
	if ((rc = translate(sx, r->q, r->qlen, &expr)))
		goto out;
	if (step_done(sx->r[R_BEGIN])) {
		rc = -EIO;
		goto out;
	}
	cm = malloc((r->nch ? r->nch : 1) * sizeof(*cm));
	hb->h = calloc(r->limit, sizeof(*hb->h));
	hb->strs = calloc(r->limit, sizeof(*hb->strs));
	if (!cm || !hb->h || !hb->strs) {
		rc = -EIO;
		goto commit;
	}
	for (unsigned i = 0; i < r->nch; i++) {
		sqlite3_stmt *s = sx->r[R_CID];
		int src;

		sqlite3_bind_text(s, 1, r->chs[i], -1, SQLITE_STATIC);
		src = sqlite3_step(s);
		if (src == SQLITE_ROW) {
			cm[ncm].cid = sqlite3_column_int64(s, 0);
			set_events += (uint64_t)sqlite3_column_int64(s, 1);
			cm[ncm++].ch = i;
		}
		sqlite3_reset(s);
		if (src != SQLITE_ROW && src != SQLITE_DONE) {
			rc = -EIO;
			goto commit;
		}
	}
	if (!ncm)
		goto commit; /* nothing indexed in those channels */
	qsort(cm, ncm, sizeof(*cm), cmp_cid);
	/*
	 * Which side filters by channel (perf/search_bench, 1M messages in
	 * 1,000 channels): FTS5 walks the rows of the terms newest first, and
	 * the C side checks each row's channel, which costs limit / share
	 * rows for a common word and the term's whole doclist when the set
	 * holds few matches: a word in one channel took 2.8 ms (p99 52 ms).
	 * ANDing the terms with "c : (k1 OR k2 ...)" lets FTS5 skip through
	 * the smaller side's doclists (the same query: 0.25 ms, p99 0.7 ms),
	 * but each step of an OR visits every one of its terms, so past a few
	 * percent of the index (50 of 1,000 channels) the C side wins again
	 * (a word: 1.6 ms against 5.1 ms).
	 */
	if (ncm <= SET_TOKENS &&
	    set_events * 100 <= SET_SHARE_PCT *
				__atomic_load_n(&sx->events, __ATOMIC_RELAXED)) {
		/* a small part of the index: FTS5 intersects */
		char t[32];

		sb_cstr(&expr, " AND c : (");
		for (unsigned i = 0; i < ncm; i++) {
			snprintf(t, sizeof(t), "%s\"k%lld\"", i ? " OR " : "",
				 (long long)cm[i].cid);
			sb_cstr(&expr, t);
		}
		sb_cstr(&expr, ")");
	}
	rc = run_match(sx, r, expr.p, cm, ncm, hb);
commit:
	if (step_done(sx->r[R_COMMIT]) && !rc)
		rc = -EIO;
out:
	free(cm);
	free(expr.p);
	return rc ? rc : fresh;
}

static void answer(search *sx, struct qreq *r)
{
	struct hitbuf hb = { 0 };
	int rc = run_query(sx, r, &hb);

	if (rc < 0)
		r->done(r->arg, rc, NULL, 0);
	else
		r->done(r->arg, rc, hb.h, hb.n);
	for (unsigned i = 0; i < hb.n; i++)
		free(hb.strs[i]);
	free(hb.strs);
	free(hb.h);
}

static void *query_main(void *arg)
{
	search *sx = arg;

	for (;;) {
		bool stop = __atomic_load_n(&sx->qstop, __ATOMIC_ACQUIRE);
		/* Acquire: pairs with search_query's release CAS. */
		struct qreq *q = __atomic_exchange_n(&sx->qhead, NULL,
						     __ATOMIC_ACQUIRE);
		struct qreq *rev = NULL;

		while (q) {
			struct qreq *next = q->next;

			q->next = rev;
			rev = q;
			q = next;
		}
		while (rev) {
			struct qreq *next = rev->next;

			/* counted down before done() runs: whoever it wakes
			 * may submit again at once */
			__atomic_sub_fetch(&sx->qdepth, 1, __ATOMIC_RELAXED);
			answer(sx, rev);
			free(rev);
			rev = next;
		}
		if (stop)
			break;
		wait_fd(sx->efd_q, -1);
	}
	return NULL;
}

int search_query(search *sx, const char *q, size_t qlen,
		 const char *const *chs, unsigned nch, unsigned limit,
		 search_done_fn done, void *arg)
{
	struct qreq *r, *old;
	size_t sz;

	if (!qlen || qlen > SEARCH_MAX_Q || !limit || limit > SEARCH_MAX_LIMIT)
		return -EINVAL;
	if (__atomic_load_n(&sx->qstop, __ATOMIC_ACQUIRE))
		return -ESHUTDOWN;
	/* Relaxed: a bound on the queue (one thread answers them all), not
	 * an ordering; it may overshoot by the submitters racing here. */
	if (__atomic_add_fetch(&sx->qdepth, 1, __ATOMIC_RELAXED) >
	    SEARCH_MAX_QUEUED) {
		__atomic_sub_fetch(&sx->qdepth, 1, __ATOMIC_RELAXED);
		return -EBUSY;
	}
	sz = sizeof(*r) + sx->nshards * sizeof(uint64_t) +
	     (size_t)nch * IDCAP + qlen + 1;
	if (!(r = malloc(sz))) {
		__atomic_sub_fetch(&sx->qdepth, 1, __ATOMIC_RELAXED);
		return -ENOMEM;
	}
	r->done = done;
	r->arg = arg;
	r->limit = limit;
	r->nch = nch;
	/* What the index must hold to answer: every event fed so far, on
	 * every shard (acks of those were sent, at the earliest, after
	 * their feed; a request that arrives after an ack finds it here). */
	r->deadline_ms = mono_ms() + FRESH_WAIT_MS;
	r->snap = (void *)(r + 1);
	for (unsigned i = 0; i < sx->nshards; i++)
		/* Acquire: pairs with search_feed's release store. */
		r->snap[i] = __atomic_load_n(&sx->feeds[i].fed,
					     __ATOMIC_ACQUIRE);
	r->chs = (void *)(r->snap + sx->nshards);
	for (unsigned i = 0; i < nch; i++)
		snprintf(r->chs[i], IDCAP, "%s", chs[i]);
	r->q = (char *)(r->chs + nch);
	memcpy(r->q, q, qlen);
	r->q[qlen] = 0;
	r->qlen = qlen;
	old = __atomic_load_n(&sx->qhead, __ATOMIC_RELAXED);
	do
		r->next = old;
	/* Release: the request is complete before the thread can take it. */
	while (!__atomic_compare_exchange_n(&sx->qhead, &old, r, true,
					    __ATOMIC_RELEASE,
					    __ATOMIC_RELAXED));
	if (!old)
		wake(sx->efd_q); /* the first since the last take */
	return 0;
}

/* ---- open and close --------------------------------------------------------- */

static int db_open(sqlite3 **db, const char *file, bool ro, char **err)
{
	int fl = (ro ? SQLITE_OPEN_READONLY
		     : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
		 SQLITE_OPEN_NOMUTEX;

	if (sqlite3_open_v2(file, db, fl, NULL) != SQLITE_OK) {
		*err = dupf("%s: %s", file, *db ? sqlite3_errmsg(*db) : "?");
		sqlite3_close(*db);
		*db = NULL;
		return -1;
	}
	sqlite3_busy_timeout(*db, 5000);
	return 0;
}

static int exec(sqlite3 *db, const char *sql, char **err)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
		return 0;
	*err = dupf("%s: %s", sql, msg ? msg : sqlite3_errmsg(db));
	sqlite3_free(msg);
	return -1;
}

static int prepare(sqlite3 *db, const char *const *sql, sqlite3_stmt **out,
		   unsigned n, char **err)
{
	for (unsigned i = 0; i < n; i++) {
		if (sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT,
				       &out[i], NULL) != SQLITE_OK) {
			*err = dupf("%s: %s", sql[i], sqlite3_errmsg(db));
			return -1;
		}
	}
	return 0;
}

/* The unicode61 tokenizer of the read connection, as the table uses it. */
static int tokenizer_open(search *sx, char **err)
{
	fts5_api *api = NULL;
	sqlite3_stmt *s = NULL;
	void *ud = NULL;
	const char *args[] = { "remove_diacritics", "2" };

	if (sqlite3_prepare_v2(sx->rdb, "SELECT fts5(?1)", -1, &s, NULL) ==
	    SQLITE_OK) {
		sqlite3_bind_pointer(s, 1, &api, "fts5_api_ptr", NULL);
		sqlite3_step(s);
	}
	sqlite3_finalize(s);
	if (!api || api->xFindTokenizer(api, "unicode61", &ud, &sx->tok) ||
	    sx->tok.xCreate(ud, args, 2, &sx->tokinst)) {
		*err = dupf("%s%s", "FTS5 unicode61 tokenizer unavailable", "");
		return -1;
	}
	return 0;
}

static void close_dbs(search *sx)
{
	for (unsigned i = 0; i < W__COUNT; i++)
		sqlite3_finalize(sx->w[i]);
	for (unsigned i = 0; i < R__COUNT; i++)
		sqlite3_finalize(sx->r[i]);
	if (sx->tokinst)
		sx->tok.xDelete(sx->tokinst);
	sqlite3_close(sx->rdb);
	sqlite3_close(sx->wdb);
	memset(sx->w, 0, sizeof(sx->w));
	memset(sx->r, 0, sizeof(sx->r));
	sx->tokinst = NULL;
	sx->rdb = sx->wdb = NULL;
}

static void close_all(search *sx)
{
	close_dbs(sx);
	if (sx->efd_idx >= 0)
		close(sx->efd_idx);
	if (sx->efd_q >= 0)
		close(sx->efd_q);
	pthread_mutex_destroy(&sx->mu);
	pthread_cond_destroy(&sx->cv);
	free(sx->cache);
	for (unsigned i = 0; sx->feeds && i < sx->nshards; i++) {
		struct feed *f = &sx->feeds[i];
		struct fbatch *lists[] = { f->cur, f->spare, f->ret, f->head };

		for (unsigned k = 0; k < 4; k++)
			for (struct fbatch *b = lists[k], *n; b; b = n) {
				n = b->next;
				free(b);
			}
	}
	free(sx->feeds);
	free(sx);
}

/* An index made before files has msgs without fnames and files: add them
 * (NULL for the old rows, which had no files). */
static int add_file_columns(sqlite3 *db, char **err)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(db, "SELECT fnames, files FROM msgs LIMIT 0",
				    -1, &s, NULL);
	const char *m = rc == SQLITE_OK ? "" : sqlite3_errmsg(db);

	sqlite3_finalize(s);
	if (rc == SQLITE_OK || strstr(m, "no such table"))
		return 0;
	return exec(db, "ALTER TABLE msgs ADD COLUMN fnames TEXT;"
			"ALTER TABLE msgs ADD COLUMN files BLOB;", err);
}

/* Both connections, the schema, the statements, the tokenizer; and the
 * event count that sizes channel sets. */
static int open_dbs(search *sx, const char *file, char **err)
{
	sqlite3_stmt *s = NULL;

	if (db_open(&sx->wdb, file, false, err) ||
	    exec(sx->wdb, "PRAGMA journal_mode = WAL;"
			  "PRAGMA synchronous = NORMAL;"
			  "PRAGMA cache_size = -32768;", err) ||
	    add_file_columns(sx->wdb, err) ||
	    exec(sx->wdb, schema, err) ||
	    prepare(sx->wdb, wsql, sx->w, W__COUNT, err))
		return -1;
	if (db_open(&sx->rdb, file, true, err) ||
	    exec(sx->rdb, "PRAGMA cache_size = -32768;", err) ||
	    prepare(sx->rdb, rsql, sx->r, R__COUNT, err) ||
	    tokenizer_open(sx, err))
		return -1;
	if (sqlite3_prepare_v2(sx->wdb, "SELECT coalesce(sum(pos), 0) FROM chans",
			       -1, &s, NULL) != SQLITE_OK ||
	    sqlite3_step(s) != SQLITE_ROW) {
		*err = dupf("%s: %s", file, sqlite3_errmsg(sx->wdb));
		sqlite3_finalize(s);
		return -1;
	}
	sx->events = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return 0;
}

int search_open(search **out, const char *path, store *st, unsigned nshards,
		char **err)
{
	search *sx = calloc(1, sizeof(*sx));
	char file[4096];

	*out = NULL;
	*err = NULL;
	if (!sx) {
		*err = strdup("out of memory");
		return -1;
	}
	sx->st = st;
	sx->nshards = nshards ? nshards : 1;
	sx->efd_idx = sx->efd_q = -1;
	pthread_mutex_init(&sx->mu, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&sx->cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	{
		const char *e = getenv("PARLEY_TEST_SEARCH_STALL_MS");

		if (e && *e)
			sx->stall_ms = (unsigned)strtoul(e, NULL, 10);
	}
	if (posix_memalign((void **)&sx->feeds, 64,
			   sx->nshards * sizeof(*sx->feeds))) {
		sx->feeds = NULL;
		*err = strdup("out of memory");
		goto fail;
	}
	memset(sx->feeds, 0, sx->nshards * sizeof(*sx->feeds));
	if (mkdir(path, 0700) && errno != EEXIST) {
		*err = dupf("%s: %s", path, strerror(errno));
		goto fail;
	}
	snprintf(file, sizeof(file), "%s/index.db", path);
	if (open_dbs(sx, file, err)) {
		int code = sx->wdb ? sqlite3_errcode(sx->wdb) : SQLITE_OK;
		char aside[4200];

		if (code != SQLITE_CORRUPT && code != SQLITE_NOTADB)
			goto fail;
		/* Derived data: set the damaged file aside and build the
		 * index again from the log (catch-up does it). */
		close_dbs(sx);
		snprintf(aside, sizeof(aside), "%s.corrupt", file);
		plog(PL_ERROR, "search", "%s; moved to %s, indexing again",
			*err, aside);
		free(*err);
		*err = NULL;
		if (rename(file, aside)) {
			*err = dupf("%s: %s", file, strerror(errno));
			goto fail;
		}
		snprintf(aside, sizeof(aside), "%s-wal", file);
		unlink(aside);
		snprintf(aside, sizeof(aside), "%s-shm", file);
		unlink(aside);
		if (open_dbs(sx, file, err))
			goto fail;
	}
	sx->efd_idx = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	sx->efd_q = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (sx->efd_idx < 0 || sx->efd_q < 0) {
		*err = dupf("eventfd: %s%s", strerror(errno), "");
		goto fail;
	}
	if (!st)
		sx->caught_up = true;
	if (pthread_create(&sx->indexer, NULL, indexer_main, sx)) {
		*err = strdup("cannot start the indexer thread");
		goto fail;
	}
	if (pthread_create(&sx->querier, NULL, query_main, sx)) {
		*err = strdup("cannot start the query thread");
		__atomic_store_n(&sx->stop, 1, __ATOMIC_RELEASE);
		wake(sx->efd_idx);
		pthread_join(sx->indexer, NULL);
		goto fail;
	}
	*out = sx;
	return 0;
fail:
	if (!*err)
		*err = strdup("search: cannot open");
	close_all(sx);
	return -1;
}

void search_close(search *sx)
{
	if (!sx)
		return;
	/* Release: pairs with the threads' acquire loads; every push and
	 * submit before this is seen by their last take. */
	__atomic_store_n(&sx->qstop, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&sx->mu);
	pthread_cond_broadcast(&sx->cv); /* a query waiting for catch-up */
	pthread_mutex_unlock(&sx->mu);
	wake(sx->efd_q);
	pthread_join(sx->querier, NULL);
	/* Events fed but never flushed (a shard stopped mid-turn) go too. */
	for (unsigned i = 0; i < sx->nshards; i++)
		search_feed_flush(sx, i);
	sx->stop_by = mono_ms() + STOP_DRAIN_MS;
	__atomic_store_n(&sx->stop, 1, __ATOMIC_RELEASE);
	wake(sx->efd_idx);
	pthread_join(sx->indexer, NULL);
	close_all(sx);
}
