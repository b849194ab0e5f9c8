/*
 * notify: the notifier thread. From durable events to POSTs at the push
 * gateway (PROTOCOL.md, "Notifications for users who are not there").
 *
 *   shard (M_COMMIT)    notify_feed: copy the event into the shard's list
 *   shard (turn end)    notify_feed_flush: the list onto one stack (a CAS)
 *   notifier thread:
 *     take the stack    each msg event waits in the due queue (memory)
 *                       until ts + --push-delay-ms
 *     a job             the events that fell due: their channels' members
 *                       (storage: read markers) -> candidates; one M_CALL
 *                       per shard asks the presence actors which of them
 *                       have an active device now; the answers come back
 *                       by the same job's counter
 *     decide            level, mentions, @channel/@here, DND, pushers
 *                       (storage); one notification per user, the newest
 *                       event with count; into DATA/push/queue.db with
 *                       each channel's position, in one transaction
 *     deliver           libcurl multi: up to --push-inflight POSTs of <= 100
 *                       notifications; 200 removes them (and the pushers
 *                       the gateway rejected), anything else retries them
 *                       with backoff and jitter, until --push-give-up-ms
 *
 * What survives a crash: the position per channel (pos: every event up to
 * it is decided) and the decided notifications are in SQLite, committed
 * together. Events still in their delay are only in memory: at start the
 * notifier reads every channel whose last seq is past its position from
 * the event log again (catch-up), so nothing is lost and nothing decided
 * twice. A notification's id is a digest of (ws, ch, seq, user): a retry,
 * or a decision made again after a crash, sends the same id.
 *
 * Memory stays bounded when the gateway is down or slow: decided
 * notifications wait on disk (the POSTs in flight are the only ones in
 * memory); when the feed or the due queue passes its cap, the notifier
 * stops taking events and catches up from the log once it has room.
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "actors/actors.h"
#include "actors/notify.h"
#include "runtime/log.h"

#define DUE_MAX 1000000u           /* events waiting for their delay */
#define JOB_MAX_EVENTS 512
#define JOB_MAX_CANDS 200000u      /* more only for one event alone */
#define POST_MAX 100               /* notifications per POST */
#define BACKOFF_MAX_MS 600000u     /* 10 min */

const double notify_delay_bounds[NOTIFY_DELAY_NB] = {
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600,
};

/* ---- decisions ----------------------------------------------------------- */

struct due {
	struct due *next;
	uint64_t due_ms, seq;
	char ch[ID_CAP];
};

struct qpos { /* a channel's positions */
	uint64_t queued;  /* every event up to it is queued or decided */
	uint64_t decided; /* ... decided (as in pos, once committed) */
	uint32_t inq;     /* its events in the due queue */
	bool dirty;       /* queued moved past what pos says */
	uint32_t klen;
	char ch[];
};

enum { C_MENTIONED = 1, C_ACTIVE = 2, C_CONNECTED = 4 };

struct cand {
	uint32_t ev;
	uint8_t flags;
	uint64_t read_seq;
	char user[ID_CAP];
};

struct jev {
	char ch[ID_CAP];
	uint64_t seq, ts, msgs;
	store_channel rec;
	char from[ID_CAP];
	char *from_name; /* malloc'd */
	char *body;      /* malloc'd */
	bool all, here;
};

struct job {
	struct jev *ev;
	uint32_t nev, capev;
	struct cand *c;
	uint32_t nc, capc;
	uint32_t outstanding; /* shards still answering (atomic) */
};

/* M_CALL to a shard: which of these candidates have a device */
struct chk {
	struct m_call c; /* first: the mailbox sees an M_CALL */
	struct job *job;
	uint32_t n;
	uint32_t idx[];
};

/* what a job knows of one user (per job, freed with it) */
struct uinfo {
	bool loaded, skip; /* skip: dnd, or no pusher */
	uint64_t seen_ms;
	void *prefs_raw;
	proto_doc prefs_doc;
	bool has_prefs;
	uint8_t def;
	proto_chlevel *lv;
	uint32_t nlv;
	json_t *devices;
	/* the result */
	int32_t newest;    /* candidate index of the newest event, -1 none */
	uint32_t count;
	bool mention;
	uint32_t klen;
	char key[];        /* ws \0 user */
};

/* ---- delivery ------------------------------------------------------------ */

struct post {
	CURL *h;
	struct curl_slist *hdrs;
	char *body;
	size_t blen;
	char *resp;
	size_t rlen;
	uint32_t n;
	struct {
		char id[33];
		char *ws, *user, *json; /* malloc'd */
		uint32_t attempts;
		uint64_t first_ms;
	} *v;
};

static struct notifier {
	bool enabled; /* --push-url given: shards feed */
	struct notify_cfg cfg;
	char *url;
	uint8_t secret[512];
	size_t secret_len;
	bool has_secret;
	pthread_t th;
	bool started;
	int stop; /* atomic */

	sqlite3 *db;
	sqlite3_stmt *s_pos_get, *s_pos_put, *s_pend_ins, *s_pend_due,
		*s_pend_busy, *s_pend_del, *s_pend_retry;
	smap qpos;
	bool initialized; /* pos is known for every channel */

	struct due *dhead, *dtail;
	uint64_t ndue;
	struct job *job; /* in flight: waiting for the shards */

	CURLM *multi;
	struct post **posts;
	unsigned nposts;
	smap busy; /* ids in flight */

	/* /metrics */
	uint64_t sent, retried, dropped, rejected, pending, posts_ok,
		posts_error, posts_timeout;
	uint64_t delay_hist[NOTIFY_DELAY_NB + 1], delay_count, delay_sum_ms;
} N;

static uint64_t now_ms(void) { return rt_now_ms(); }

static void stat_add(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static uint64_t stat_get(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/* ---- SQLite --------------------------------------------------------------- */

static int exec(const char *sql)
{
	char *e = NULL;
	int rc = sqlite3_exec(N.db, sql, NULL, NULL, &e);

	if (rc != SQLITE_OK) {
		plog(PL_ERROR, "push", "%s: %s: %s",
		     sqlite3_db_filename(N.db, "main"), sql,
			e ? e : sqlite3_errmsg(N.db));
		sqlite3_free(e);
		return -1;
	}
	return 0;
}

static int prep(sqlite3_stmt **st, const char *sql)
{
	if (sqlite3_prepare_v3(N.db, sql, -1, SQLITE_PREPARE_PERSISTENT, st,
			       NULL) != SQLITE_OK) {
		plog(PL_ERROR, "push", "%s: %s: %s",
		     sqlite3_db_filename(N.db, "main"), sql,
			sqlite3_errmsg(N.db));
		return -1;
	}
	return 0;
}

static int db_open(const char *data_dir, char **err)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/push", data_dir);
	if (mkdir(path, 0700) && errno != EEXIST) {
		if (asprintf(err, "%s: %s", path, strerror(errno)) < 0)
			*err = NULL;
		return -1;
	}
	snprintf(path, sizeof(path), "%s/push/queue.db", data_dir);
	if (sqlite3_open_v2(path, &N.db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				    SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		if (asprintf(err, "%s: %s", path, sqlite3_errmsg(N.db)) < 0)
			*err = NULL;
		return -1;
	}
	/* A commit survives kill -9 (it is in the OS once written); a power
	 * cut may take the newest commits, and with them the positions they
	 * moved: catch-up decides those events again, with the same ids. */
	if (exec("PRAGMA journal_mode=WAL") ||
	    exec("PRAGMA synchronous=NORMAL") ||
	    exec("CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v)") ||
	    exec("CREATE TABLE IF NOT EXISTS pos(ch TEXT PRIMARY KEY,"
		 " seq INTEGER NOT NULL) WITHOUT ROWID") ||
	    exec("CREATE TABLE IF NOT EXISTS pending(id TEXT PRIMARY KEY,"
		 " ws TEXT NOT NULL, user TEXT NOT NULL, ts INTEGER NOT NULL,"
		 " first_ms INTEGER NOT NULL, next_ms INTEGER NOT NULL,"
		 " attempts INTEGER NOT NULL, busy INTEGER NOT NULL,"
		 " body TEXT NOT NULL)") ||
	    exec("CREATE INDEX IF NOT EXISTS pending_next ON"
		 " pending(busy, next_ms)") ||
	    exec("UPDATE pending SET busy = 0") ||
	    prep(&N.s_pos_get, "SELECT seq FROM pos WHERE ch = ?") ||
	    prep(&N.s_pos_put, "INSERT INTO pos(ch, seq) VALUES(?, ?)"
			       " ON CONFLICT(ch) DO UPDATE SET seq ="
			       " max(seq, excluded.seq)") ||
	    prep(&N.s_pend_ins, "INSERT OR IGNORE INTO pending(id, ws, user,"
				" ts, first_ms, next_ms, attempts, busy, body)"
				" VALUES(?, ?, ?, ?, 0, ?, 0, 0, ?)") ||
	    prep(&N.s_pend_due, "SELECT id, ws, user, ts, first_ms, attempts,"
				" body FROM pending WHERE busy = 0 AND"
				" next_ms <= ? ORDER BY next_ms LIMIT ?") ||
	    prep(&N.s_pend_busy, "UPDATE pending SET busy = 1, first_ms = ?"
				 " WHERE id = ?") ||
	    prep(&N.s_pend_del, "DELETE FROM pending WHERE id = ?") ||
	    prep(&N.s_pend_retry, "UPDATE pending SET busy = 0, attempts = ?,"
				  " next_ms = ? WHERE id = ?")) {
		if (asprintf(err, "%s: %s", path, sqlite3_errmsg(N.db)) < 0)
			*err = NULL;
		return -1;
	}
	return 0;
}

static uint64_t db_count_pending(void)
{
	sqlite3_stmt *st;
	uint64_t n = 0;

	if (sqlite3_prepare_v2(N.db, "SELECT count(*) FROM pending", -1, &st,
			       NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		n = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

static bool meta_flag(const char *k)
{
	sqlite3_stmt *st;
	bool yes = false;

	if (sqlite3_prepare_v2(N.db, "SELECT 1 FROM meta WHERE k = ?", -1, &st,
			       NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
		yes = sqlite3_step(st) == SQLITE_ROW;
	}
	sqlite3_finalize(st);
	return yes;
}

/* ---- positions ------------------------------------------------------------ */

static struct qpos *qpos_of(const char *ch, uint64_t last_seq_if_new)
{
	size_t n = strlen(ch);
	struct qpos *q = smap_get(&N.qpos, ch, n);
	int64_t seq = -1;

	if (q)
		return q;
	sqlite3_bind_text(N.s_pos_get, 1, ch, (int)n, SQLITE_STATIC);
	if (sqlite3_step(N.s_pos_get) == SQLITE_ROW)
		seq = sqlite3_column_int64(N.s_pos_get, 0);
	sqlite3_reset(N.s_pos_get);
	q = calloc(1, sizeof(*q) + n + 1);
	memcpy(q->ch, ch, n);
	q->klen = (uint32_t)n;
	/* a channel the notifier never saw: from its first event, unless
	 * this is the first start (then from now on) */
	if (seq < 0)
		seq = N.initialized ? 0 : (int64_t)last_seq_if_new;
	q->queued = q->decided = (uint64_t)seq;
	smap_put(&N.qpos, q->ch, q->klen, q);
	return q;
}

/* ---- the due queue ---------------------------------------------------------- */

static void due_push(struct qpos *q, uint64_t seq, uint64_t ts)
{
	struct due *d = malloc(sizeof(*d));
	const char *ch = q->ch;

	d->next = NULL;
	d->seq = seq;
	d->due_ms = ts + N.cfg.delay_ms;
	snprintf(d->ch, sizeof(d->ch), "%s", ch);
	if (N.dtail)
		N.dtail->next = d;
	else
		N.dhead = d;
	N.dtail = d;
	q->inq++;
	__atomic_store_n(&N.ndue, N.ndue + 1, __ATOMIC_RELAXED);
}

/* Take one event of ch into the queue (a msg event), or only move the
 * position past it. */
static void take_event(struct qpos *q, uint64_t seq, const void *ev,
		       size_t len)
{
	proto_doc d;
	proto_event e;
	proto_str men[1];

	q->queued = seq;
	q->dirty = true;
	if (!len || proto_decode_max(&d, ev, len, PROTO_MAX_STATE) != PROTO_OK)
		return;
	if (proto_dec_event(&d.root, &e, men, 1) == 0 && e.k.n == 3 &&
	    !memcmp(e.k.s, "msg", 3) &&
	    e.ts + N.cfg.delay_ms + N.cfg.give_up_ms > now_ms())
		due_push(q, seq, e.ts);
	proto_doc_free(&d);
}

struct fill {
	struct qpos *q;
	uint64_t upto;
};

static int fill_one(void *arg, uint64_t seq, const void *v, size_t len)
{
	struct fill *f = arg;

	if (seq > f->upto)
		return 1;
	take_event(f->q, seq, v, len);
	return 0;
}

/* Events of q's channel after q->queued up to upto, from the log. */
static void fill_from_log(struct qpos *q, uint64_t upto)
{
	struct fill f = { q, upto };
	int more = 1;

	while (more && q->queued < upto && N.ndue < DUE_MAX) {
		uint64_t before = q->queued;

		if (store_scan_events(srv.st, q->ch, q->queued, 1000, fill_one,
				      &f, &more))
			break;
		if (q->queued == before)
			break;
	}
	if (q->queued < upto)
		notify_feed_lost_set();
}

static int catch_up_one(void *arg, const char *ch, size_t len)
{
	store_chstat st;
	struct qpos *q;

	if (store_get_chstat(srv.st, ch, &st))
		return 0;
	q = qpos_of(ch, st.last_seq);
	if (!N.initialized)
		q->dirty = true; /* its position, kept by pos_flush */
	if (st.last_seq > q->queued)
		fill_from_log(q, st.last_seq);
	return N.ndue >= DUE_MAX; /* full: the rest next time */
}

/* Every channel whose log is past what the notifier took. */
static void pos_put(const struct qpos *q, uint64_t seq)
{
	sqlite3_bind_text(N.s_pos_put, 1, q->ch, (int)q->klen, SQLITE_STATIC);
	sqlite3_bind_int64(N.s_pos_put, 2, (sqlite3_int64)seq);
	sqlite3_step(N.s_pos_put);
	sqlite3_reset(N.s_pos_put);
}

/* Channels with nothing in the due queue: every event up to queued is
 * decided (nothing to tell), so pos moves there; a restart need not read
 * their events again. */
static void pos_flush(void)
{
	exec("BEGIN");
	smap_foreach(&N.qpos, it) {
		struct qpos *q = it->val;

		if (!q->dirty || q->inq)
			continue;
		q->dirty = false;
		q->decided = q->queued;
		pos_put(q, q->queued);
	}
	if (!N.initialized) {
		exec("INSERT OR REPLACE INTO meta(k, v) VALUES('init', 1)");
		N.initialized = true;
	}
	exec("COMMIT");
}

static void catch_up(void)
{
	notify_feed_lost_take();
	store_scan_channels(srv.st, catch_up_one, NULL);
	if (N.ndue >= DUE_MAX) /* stopped early: the rest once there is room */
		notify_feed_lost_set();
	pos_flush();
}

/* What the shards handed over since the last call, in commit order. */
static void take_feed(void)
{
	struct fchunk *c = notify_feed_take();

	while (c) {
		struct fchunk *nx = c->next;

		for (struct fitem *it = c->head, *inx; it; it = inx) {
			inx = it->next;
			if (N.ndue >= DUE_MAX) {
				notify_feed_lost_set();
			} else {
				struct qpos *q = qpos_of(it->ch, it->seq - 1);

				if (it->seq > q->queued + 1)
					fill_from_log(q, it->seq - 1);
				if (it->seq == q->queued + 1)
					take_event(q, it->seq, it->ev, it->len);
			}
			free(it);
		}
		notify_feed_done(c);
		c = nx;
	}
}

/* ---- a job: deciding the events that fell due ------------------------------- */

struct scanarg {
	struct job *j;
	uint32_t ev;
	const proto_str *men;
	unsigned nmen;
	const char *from;
};

static int add_member(void *arg, const char *user, size_t ulen,
		      const store_member *m)
{
	struct scanarg *a = arg;
	struct job *j = a->j;
	struct jev *e = &j->ev[a->ev];
	struct cand *c;

	if (m->read_seq >= e->seq || (strlen(a->from) == ulen &&
				      !memcmp(a->from, user, ulen)))
		return 0;
	if (j->nc == j->capc) {
		j->capc = j->capc ? 2 * j->capc : 1024;
		j->c = realloc(j->c, j->capc * sizeof(*j->c));
	}
	c = &j->c[j->nc++];
	c->ev = a->ev;
	c->flags = 0;
	c->read_seq = m->read_seq;
	memcpy(c->user, user, ulen);
	c->user[ulen] = 0;
	for (unsigned i = 0; i < a->nmen; i++)
		if (a->men[i].n == ulen && !memcmp(a->men[i].s, user, ulen))
			c->flags |= C_MENTIONED;
	return 0;
}

/* One due event into the job: its facts, its candidates. */
static void job_add(struct job *j, const struct due *d)
{
	proto_str men[64];
	struct scanarg a;
	struct jev *e;
	store_chstat st;
	proto_event ev;
	proto_doc doc;
	void *raw = NULL, *name = NULL;
	size_t len, nlen;
	uint64_t cum;

	if (store_get_event(srv.st, d->ch, d->seq, &raw, &len, &cum))
		return;
	if (proto_decode_max(&doc, raw, len, PROTO_MAX_STATE) != PROTO_OK) {
		free(raw);
		return;
	}
	if (proto_dec_event(&doc.root, &ev, men, 64) || ev.k.n != 3 ||
	    memcmp(ev.k.s, "msg", 3))
		goto out;
	if (j->nev == j->capev) {
		j->capev = j->capev ? 2 * j->capev : 64;
		j->ev = realloc(j->ev, j->capev * sizeof(*j->ev));
	}
	e = &j->ev[j->nev];
	memset(e, 0, sizeof(*e));
	if (store_get_channel(srv.st, d->ch, &e->rec) ||
	    store_get_chstat(srv.st, d->ch, &st))
		goto out;
	/* a message deleted (its body emptied in the log) in the meantime
	 * is not told */
	if (!ev.body.n)
		goto out;
	snprintf(e->ch, sizeof(e->ch), "%s", d->ch);
	e->seq = d->seq;
	e->ts = ev.ts;
	e->msgs = st.msgs;
	snprintf(e->from, sizeof(e->from), "%.*s", (int)ev.from.n, ev.from.s);
	e->body = strndup(ev.body.s, ev.body.n);
	if (store_get_urec(srv.st, 'W', e->rec.ws, e->from, &name, &nlen) ==
		    0 && nlen)
		e->from_name = strndup(name, nlen);
	else
		e->from_name = strdup(e->from);
	free(name);
	for (unsigned i = 0; i < ev.nmentions; i++) {
		if (men[i].n == 8 && !memcmp(men[i].s, "@channel", 8))
			e->all = true;
		if (men[i].n == 5 && !memcmp(men[i].s, "@here", 5))
			e->here = true;
	}
	a = (struct scanarg){ j, j->nev, men, ev.nmentions, e->from };
	j->nev++;
	store_scan_member_marks(srv.st, d->ch, add_member, &a);
out:
	proto_doc_free(&doc);
	free(raw);
}

/* On a user's shard: which candidates have a device, an active one. */
static void on_check(struct shard_state *ss, struct m_call *mc)
{
	struct chk *k = (struct chk *)mc;
	struct job *j = k->job;
	uint64_t t = now_ms();

	for (uint32_t i = 0; i < k->n; i++) {
		struct cand *c = &j->c[k->idx[i]];
		bool connected = false;

		if (presence_probe(ss, j->ev[c->ev].rec.ws, c->user, t,
				   &connected))
			c->flags |= C_ACTIVE;
		if (connected)
			c->flags |= C_CONNECTED;
	}
	__atomic_fetch_sub(&j->outstanding, 1, __ATOMIC_RELEASE);
	free(k);
}

static void job_ask_shards(struct job *j)
{
	unsigned ns = rt_nshards();
	uint32_t *per = calloc(ns, sizeof(*per));
	struct chk **m = calloc(ns, sizeof(*m));
	unsigned asks = 0;

	for (uint32_t i = 0; i < j->nc; i++)
		per[user_shard(j->ev[j->c[i].ev].rec.ws, j->c[i].user)]++;
	for (unsigned s = 0; s < ns; s++) {
		if (!per[s])
			continue;
		m[s] = msg_new(sizeof(*m[s]) + per[s] * sizeof(uint32_t),
			       M_CALL);
		m[s]->c.fn = on_check;
		m[s]->job = j;
		asks++;
	}
	for (uint32_t i = 0; i < j->nc; i++) {
		struct chk *k = m[user_shard(j->ev[j->c[i].ev].rec.ws,
					     j->c[i].user)];

		k->idx[k->n++] = i;
	}
	__atomic_store_n(&j->outstanding, asks, __ATOMIC_RELEASE);
	for (unsigned s = 0; s < ns; s++)
		if (m[s])
			rt_post(s, &m[s]->c.h);
	free(per);
	free(m);
}

static void job_start(void)
{
	uint64_t t = now_ms();
	struct job *j;

	if (!N.dhead || N.dhead->due_ms > t)
		return;
	j = calloc(1, sizeof(*j));
	while (N.dhead && N.dhead->due_ms <= t && j->nev < JOB_MAX_EVENTS &&
	       (j->nc < JOB_MAX_CANDS || !j->nev)) {
		struct due *d = N.dhead;
		struct qpos *q = qpos_of(d->ch, 0);

		N.dhead = d->next;
		if (!N.dhead)
			N.dtail = NULL;
		__atomic_store_n(&N.ndue, N.ndue - 1, __ATOMIC_RELAXED);
		q->inq--;
		job_add(j, d);
		/* decided with this job, whatever it finds */
		if (d->seq > q->decided)
			q->decided = d->seq;
		free(d);
	}
	N.job = j;
	job_ask_shards(j);
}

/* A pusher's data (msgpack, checked by the session) as JSON: maps with
 * string keys, arrays, strings, numbers, booleans, nil; bytes are left
 * out (JSON has none). */
static json_t *mp_to_json(const msgpack_object *o)
{
	json_t *j;

	switch (o->type) {
	case MSGPACK_OBJECT_NIL: return json_null();
	case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		return json_integer((json_int_t)o->via.u64);
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		return json_integer((json_int_t)o->via.i64);
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return json_real(o->via.f64);
	case MSGPACK_OBJECT_STR:
		return json_stringn(o->via.str.ptr, o->via.str.size);
	case MSGPACK_OBJECT_ARRAY:
		j = json_array();
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			json_t *x = mp_to_json(&o->via.array.ptr[i]);

			if (x)
				json_array_append_new(j, x);
		}
		return j;
	case MSGPACK_OBJECT_MAP:
		j = json_object();
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			const msgpack_object_kv *kv = &o->via.map.ptr[i];
			json_t *x;

			if (kv->key.type != MSGPACK_OBJECT_STR)
				continue;
			x = mp_to_json(&kv->val);
			if (x)
				json_object_setn_new(j, kv->key.via.str.ptr,
						     kv->key.via.str.size, x);
		}
		return j;
	default: return NULL;
	}
}

/* The user's facts a decision needs, read once per job. */
static void uinfo_load(struct uinfo *u, const char *ws, const char *user)
{
	store_presence sp = { 0 };
	void *raw = NULL;
	size_t n;
	proto_pusher pv[16];
	proto_doc pd;
	int k;

	u->loaded = true;
	u->def = PROTO_LEVEL_MENTIONS;
	if (store_get_presence(srv.st, ws, user, &sp) == 0) {
		u->seen_ms = sp.seen_ms;
		if (sp.status == PS_DND) {
			u->skip = true;
			return;
		}
	}
	if (store_get_urec(srv.st, 'K', ws, user, &raw, &n)) {
		u->skip = true; /* no pusher: nothing to push to */
		return;
	}
	k = proto_dec_pushers(&pd, raw, n, pv, 16);
	if (k <= 0) {
		if (k == 0)
			proto_doc_free(&pd);
		free(raw);
		u->skip = true;
		return;
	}
	u->devices = json_array();
	for (int i = 0; i < k; i++) {
		json_t *dev = json_object(), *data = NULL;
		proto_doc dd;

		json_object_set_new(dev, "app", json_stringn(pv[i].app.s,
							     pv[i].app.n));
		json_object_set_new(dev, "pushkey",
				    json_stringn(pv[i].pushkey.s,
						 pv[i].pushkey.n));
		json_object_set_new(dev, "platform",
				    json_stringn(pv[i].platform.s,
						 pv[i].platform.n));
		if (pv[i].data.p &&
		    proto_decode_max(&dd, pv[i].data.p, pv[i].data.n,
				     PROTO_MAX_FRAME) == PROTO_OK) {
			data = mp_to_json(&dd.root);
			proto_doc_free(&dd);
		}
		json_object_set_new(dev, "data", data ? data : json_object());
		json_array_append_new(u->devices, dev);
	}
	proto_doc_free(&pd);
	free(raw);
	if (store_get_urec(srv.st, 'Z', ws, user, &u->prefs_raw, &n) == 0) {
		u->lv = calloc(4096, sizeof(*u->lv));
		k = proto_dec_prefs(&u->prefs_doc, u->prefs_raw, n, &u->def,
				    u->lv, 4096);
		if (k >= 0) {
			u->has_prefs = true;
			u->nlv = (uint32_t)k;
		}
	}
}

static uint8_t level_for(const struct uinfo *u, const struct jev *e)
{
	size_t n = strlen(e->ch);

	for (uint32_t i = 0; i < u->nlv; i++)
		if (u->lv[i].ch.n == n && !memcmp(u->lv[i].ch.s, e->ch, n))
			return u->lv[i].level;
	return e->rec.kind == STORE_DM ? PROTO_LEVEL_ALL : u->def;
}

static void uinfo_free(struct uinfo *u)
{
	if (u->has_prefs)
		proto_doc_free(&u->prefs_doc);
	free(u->prefs_raw);
	free(u->lv);
	if (u->devices)
		json_decref(u->devices);
	free(u);
}

/* id: 32 hex chars of SHA-256(ws \0 ch \0 seq \0 user) */
static void notif_id(char out[33], const char *ws, const char *ch,
		     uint64_t seq, const char *user)
{
	char buf[4 * ID_CAP + 24];
	unsigned char md[SHA256_DIGEST_LENGTH];
	int n = snprintf(buf, sizeof(buf), "%s%c%s%c%llu%c%s", ws, 0, ch, 0,
			 (unsigned long long)seq, 0, user);

	SHA256((const unsigned char *)buf, (size_t)n, md);
	for (int i = 0; i < 16; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
	out[32] = 0;
}

static const char *const kind_names[] = { "public", "private", "dm" };

static char *notif_json(const char *id, const struct jev *e,
			const struct cand *c, const struct uinfo *u)
{
	json_t *o = json_object();
	uint64_t cum = 0, unread;
	char *s;

	if (store_msgs_at(srv.st, e->ch, c->read_seq, &cum))
		cum = 0;
	unread = e->msgs > cum ? e->msgs - cum : 0;
	json_object_set_new(o, "id", json_string(id));
	json_object_set_new(o, "ws", json_string(e->rec.ws));
	json_object_set_new(o, "user", json_string(c->user));
	json_object_set_new(o, "ch", json_string(e->ch));
	json_object_set_new(o, "ch_name", json_string(e->rec.name));
	json_object_set_new(o, "ch_kind",
			    json_string(kind_names[e->rec.kind % 3]));
	json_object_set_new(o, "seq", json_integer((json_int_t)e->seq));
	json_object_set_new(o, "from", json_string(e->from));
	json_object_set_new(o, "from_name", json_string(e->from_name));
	json_object_set_new(o, "ts", json_integer((json_int_t)e->ts));
	if (!N.cfg.id_only)
		json_object_set_new(o, "body", json_string(e->body));
	json_object_set_new(o, "mention", json_boolean(u->mention));
	json_object_set_new(o, "count", json_integer(u->count));
	json_object_set_new(o, "unread", json_integer((json_int_t)unread));
	json_object_set(o, "devices", u->devices);
	s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

/* Everything the shards said is in: decide, and keep it. */
static void job_finish(struct job *j)
{
	smap users = { 0 };
	struct uinfo **list = NULL;
	uint32_t nlist = 0, cap = 0;
	uint64_t t = now_ms();

	for (uint32_t i = 0; i < j->nc; i++) {
		struct cand *c = &j->c[i];
		struct jev *e = &j->ev[c->ev];
		char k[2 * ID_CAP];
		size_t kl;
		struct uinfo *u;
		uint8_t lv;
		bool mention;

		if (c->flags & C_ACTIVE)
			continue;
		kl = pair_key(k, e->rec.ws, c->user);
		u = smap_get(&users, k, kl);
		if (!u) {
			u = calloc(1, sizeof(*u) + kl + 1);
			memcpy(u->key, k, kl);
			u->klen = (uint32_t)kl;
			u->newest = -1;
			smap_put(&users, u->key, u->klen, u);
			uinfo_load(u, e->rec.ws, c->user);
			if (nlist == cap) {
				cap = cap ? 2 * cap : 256;
				list = realloc(list, cap * sizeof(*list));
			}
			list[nlist++] = u;
		}
		if (u->skip)
			continue;
		mention = (c->flags & C_MENTIONED) || e->all ||
			  (e->here && ((c->flags & C_CONNECTED) ||
				       u->seen_ms >= e->ts));
		lv = level_for(u, e);
		if (lv == PROTO_LEVEL_NONE ||
		    (lv == PROTO_LEVEL_MENTIONS && !mention))
			continue;
		u->count++;
		u->mention |= mention;
		u->newest = (int32_t)i; /* candidates are in event order */
	}
	exec("BEGIN");
	for (uint32_t i = 0; i < nlist; i++) {
		struct uinfo *u = list[i];
		const struct cand *c;
		const struct jev *e;
		char id[33], *body;

		if (u->newest < 0)
			continue;
		c = &j->c[u->newest];
		e = &j->ev[c->ev];
		notif_id(id, e->rec.ws, e->ch, e->seq, c->user);
		body = notif_json(id, e, c, u);
		sqlite3_bind_text(N.s_pend_ins, 1, id, -1, SQLITE_STATIC);
		sqlite3_bind_text(N.s_pend_ins, 2, e->rec.ws, -1, SQLITE_STATIC);
		sqlite3_bind_text(N.s_pend_ins, 3, c->user, -1, SQLITE_STATIC);
		sqlite3_bind_int64(N.s_pend_ins, 4, (sqlite3_int64)e->ts);
		sqlite3_bind_int64(N.s_pend_ins, 5, (sqlite3_int64)t);
		sqlite3_bind_text(N.s_pend_ins, 6, body, -1, free);
		if (sqlite3_step(N.s_pend_ins) == SQLITE_DONE &&
		    sqlite3_changes(N.db))
			stat_add(&N.pending, 1);
		sqlite3_reset(N.s_pend_ins);
	}
	/* every channel of the job: its events up to here are decided */
	for (uint32_t i = 0; i < j->nev; i++) {
		struct qpos *q = qpos_of(j->ev[i].ch, 0);

		pos_put(q, q->decided);
	}
	exec("COMMIT");
	for (uint32_t i = 0; i < nlist; i++)
		uinfo_free(list[i]);
	free(list);
	smap_free(&users);
	for (uint32_t i = 0; i < j->nev; i++) {
		free(j->ev[i].body);
		free(j->ev[i].from_name);
	}
	free(j->ev);
	free(j->c);
	free(j);
}

/* ---- delivery ------------------------------------------------------------- */

static size_t on_body(char *p, size_t sz, size_t nm, void *arg)
{
	struct post *po = arg;
	size_t n = sz * nm;

	if (po->rlen + n > 1 << 20)
		return 0; /* an answer past 1 MiB is not an answer */
	po->resp = realloc(po->resp, po->rlen + n + 1);
	memcpy(po->resp + po->rlen, p, n);
	po->rlen += n;
	po->resp[po->rlen] = 0;
	return n;
}

static void post_free(struct post *po)
{
	for (uint32_t i = 0; i < po->n; i++) {
		smap_del(&N.busy, po->v[i].id, 32);
		free(po->v[i].ws);
		free(po->v[i].user);
		free(po->v[i].json);
	}
	free(po->v);
	free(po->body);
	free(po->resp);
	curl_slist_free_all(po->hdrs);
	curl_easy_cleanup(po->h);
	free(po);
}

static void observe_delay(uint64_t ms)
{
	double s = (double)ms / 1000.0;
	unsigned i = 0;

	while (i < NOTIFY_DELAY_NB && s > notify_delay_bounds[i])
		i++;
	stat_add(&N.delay_hist[i], 1);
	stat_add(&N.delay_count, 1);
	stat_add(&N.delay_sum_ms, ms);
}

/* Up to POST_MAX notifications that are due into one POST. */
static bool post_start(void)
{
	uint64_t t = now_ms();
	struct post *po;
	size_t cap = 64, len;
	char sig[128]; /* "X-Parley-Signature: sha256=" + 64 hex + NUL */
	int rc;

	sqlite3_bind_int64(N.s_pend_due, 1, (sqlite3_int64)t);
	sqlite3_bind_int(N.s_pend_due, 2, POST_MAX);
	po = calloc(1, sizeof(*po));
	po->v = calloc(POST_MAX, sizeof(*po->v));
	while ((rc = sqlite3_step(N.s_pend_due)) == SQLITE_ROW) {
		typeof(po->v[0]) *x = &po->v[po->n];
		const char *id = (const char *)sqlite3_column_text(N.s_pend_due,
								   0);

		if (!id || strlen(id) != 32)
			continue;
		memcpy(x->id, id, 33);
		x->ws = strdup((const char *)sqlite3_column_text(N.s_pend_due,
								 1));
		x->user = strdup((const char *)sqlite3_column_text(
			N.s_pend_due, 2));
		x->first_ms = (uint64_t)sqlite3_column_int64(N.s_pend_due, 4);
		x->attempts = (uint32_t)sqlite3_column_int(N.s_pend_due, 5);
		x->json = strdup((const char *)sqlite3_column_text(
			N.s_pend_due, 6));
		if (!x->first_ms)
			observe_delay(t - (uint64_t)sqlite3_column_int64(
						  N.s_pend_due, 3));
		cap += strlen(x->json) + 1;
		po->n++;
	}
	sqlite3_reset(N.s_pend_due);
	if (!po->n) {
		free(po->v);
		free(po);
		return false;
	}
	exec("BEGIN");
	for (uint32_t i = 0; i < po->n; i++) {
		if (!po->v[i].first_ms)
			po->v[i].first_ms = t;
		sqlite3_bind_int64(N.s_pend_busy, 1,
				   (sqlite3_int64)po->v[i].first_ms);
		sqlite3_bind_text(N.s_pend_busy, 2, po->v[i].id, 32,
				  SQLITE_STATIC);
		sqlite3_step(N.s_pend_busy);
		sqlite3_reset(N.s_pend_busy);
		smap_put(&N.busy, po->v[i].id, 32, po);
	}
	exec("COMMIT");
	po->body = malloc(cap);
	len = (size_t)sprintf(po->body, "{\"notifications\":[");
	for (uint32_t i = 0; i < po->n; i++) {
		size_t l = strlen(po->v[i].json);

		if (i)
			po->body[len++] = ',';
		memcpy(po->body + len, po->v[i].json, l);
		len += l;
	}
	len += (size_t)sprintf(po->body + len, "]}");
	po->blen = len;
	po->h = curl_easy_init();
	po->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	po->hdrs = curl_slist_append(po->hdrs, "Expect:");
	if (N.has_secret) {
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int mdlen = 0;
		int k = snprintf(sig, sizeof(sig), "X-Parley-Signature: sha256=");

		HMAC(EVP_sha256(), N.secret, (int)N.secret_len,
		     (const unsigned char *)po->body, po->blen, md, &mdlen);
		for (unsigned i = 0; i < mdlen; i++)
			k += sprintf(sig + k, "%02x", md[i]);
		po->hdrs = curl_slist_append(po->hdrs, sig);
	}
	curl_easy_setopt(po->h, CURLOPT_URL, N.url);
	curl_easy_setopt(po->h, CURLOPT_POST, 1L);
	curl_easy_setopt(po->h, CURLOPT_POSTFIELDS, po->body);
	curl_easy_setopt(po->h, CURLOPT_POSTFIELDSIZE_LARGE,
			 (curl_off_t)po->blen);
	curl_easy_setopt(po->h, CURLOPT_HTTPHEADER, po->hdrs);
	curl_easy_setopt(po->h, CURLOPT_TIMEOUT_MS, (long)N.cfg.timeout_ms);
	curl_easy_setopt(po->h, CURLOPT_CONNECTTIMEOUT_MS,
			 (long)N.cfg.timeout_ms);
	curl_easy_setopt(po->h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(po->h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(po->h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(po->h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(po->h, CURLOPT_WRITEDATA, po);
	curl_easy_setopt(po->h, CURLOPT_PRIVATE, po);
	curl_easy_setopt(po->h, CURLOPT_USERAGENT, "parleyd");
	curl_multi_add_handle(N.multi, po->h);
	N.posts[N.nposts++] = po;
	return true;
}

static uint64_t backoff(uint32_t attempts)
{
	uint64_t base = N.cfg.backoff_ms, r = 0;

	for (uint32_t i = 1; i < attempts && base < BACKOFF_MAX_MS; i++)
		base *= 2;
	if (base > BACKOFF_MAX_MS)
		base = BACKOFF_MAX_MS;
	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = now_ms();
	/* full jitter in the upper half: [base/2, base] */
	return base / 2 + r % (base / 2 + 1);
}

/* The gateway's rejected pushkeys: remove those pushers of the users
 * they were sent for. */
static void reject_keys(struct post *po, json_t *rej)
{
	for (uint32_t i = 0; i < po->n; i++) {
		json_t *n = json_loads(po->v[i].json, 0, NULL), *devs, *d;
		const char *keys[16];
		uint32_t nk = 0;
		size_t di, ri;
		json_t *r;

		if (!n)
			continue;
		devs = json_object_get(n, "devices");
		json_array_foreach(devs, di, d) {
			const char *pk = json_string_value(
				json_object_get(d, "pushkey"));

			json_array_foreach(rej, ri, r) {
				if (pk && json_is_string(r) && nk < 16 &&
				    !strcmp(pk, json_string_value(r)))
					keys[nk++] = pk;
			}
		}
		if (nk) {
			pushers_reject(po->v[i].ws, po->v[i].user, keys, nk);
			stat_add(&N.rejected, nk);
			plog(PL_INFO, "push", "the gateway rejected %u pushkeys "
			     "of %s: their pushers are removed", (unsigned)nk,
			     po->v[i].user);
		}
		json_decref(n);
	}
}

static void post_done(struct post *po, CURLcode res)
{
	long code = 0;
	uint64_t t = now_ms();
	bool ok;

	curl_easy_getinfo(po->h, CURLINFO_RESPONSE_CODE, &code);
	ok = res == CURLE_OK && code == 200;
	exec("BEGIN");
	if (ok) {
		json_t *a = po->resp ? json_loads(po->resp, 0, NULL) : NULL;
		json_t *rej = a ? json_object_get(a, "rejected") : NULL;

		if (json_is_array(rej) && json_array_size(rej))
			reject_keys(po, rej);
		if (a)
			json_decref(a);
		for (uint32_t i = 0; i < po->n; i++) {
			sqlite3_bind_text(N.s_pend_del, 1, po->v[i].id, 32,
					  SQLITE_STATIC);
			sqlite3_step(N.s_pend_del);
			sqlite3_reset(N.s_pend_del);
		}
		stat_add(&N.sent, po->n);
		__atomic_fetch_sub(&N.pending, po->n, __ATOMIC_RELAXED);
		stat_add(&N.posts_ok, 1);
	} else {
		stat_add(res == CURLE_OPERATION_TIMEDOUT ? &N.posts_timeout
							 : &N.posts_error,
			 1);
		if (res != CURLE_OK)
			plog(PL_WARN, "push", "POST %s (%u notifications): %s; "
			     "retried later", N.url, po->n,
			     curl_easy_strerror(res));
		else
			plog(PL_WARN, "push", "POST %s (%u notifications): "
			     "HTTP %ld; retried later", N.url, po->n, code);
		for (uint32_t i = 0; i < po->n; i++) {
			uint32_t att = po->v[i].attempts + 1;

			if (t - po->v[i].first_ms >= N.cfg.give_up_ms) {
				sqlite3_bind_text(N.s_pend_del, 1, po->v[i].id,
						  32, SQLITE_STATIC);
				sqlite3_step(N.s_pend_del);
				sqlite3_reset(N.s_pend_del);
				stat_add(&N.dropped, 1);
				plog(PL_WARN, "push", "notification %.32s for "
				     "%s dropped after %u attempts in %llu s",
				     po->v[i].id, po->v[i].user, att,
				     (unsigned long long)(t - po->v[i].first_ms)
					     / 1000);
				__atomic_fetch_sub(&N.pending, 1,
						   __ATOMIC_RELAXED);
				continue;
			}
			sqlite3_bind_int(N.s_pend_retry, 1, (int)att);
			sqlite3_bind_int64(N.s_pend_retry, 2,
					   (sqlite3_int64)(t + backoff(att)));
			sqlite3_bind_text(N.s_pend_retry, 3, po->v[i].id, 32,
					  SQLITE_STATIC);
			sqlite3_step(N.s_pend_retry);
			sqlite3_reset(N.s_pend_retry);
			stat_add(&N.retried, 1);
		}
	}
	exec("COMMIT");
	curl_multi_remove_handle(N.multi, po->h);
	post_free(po);
}

static void pump_http(void)
{
	CURLMsg *msg;
	int running, left;

	while (N.nposts < N.cfg.inflight && post_start())
		;
	curl_multi_perform(N.multi, &running);
	while ((msg = curl_multi_info_read(N.multi, &left))) {
		struct post *po = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE,
				  (char **)&po);
		for (unsigned i = 0; i < N.nposts; i++) {
			if (N.posts[i] == po) {
				N.posts[i] = N.posts[--N.nposts];
				break;
			}
		}
		post_done(po, msg->data.result);
	}
}

/* ---- the thread ------------------------------------------------------------ */

static void *run(void *arg)
{
	(void)arg;
	if (nice(19) == -1) {
		/* the shards and the sync threads first, as the index */
	}
	uint64_t next_flush = 0;

	catch_up();
	while (!__atomic_load_n(&N.stop, __ATOMIC_ACQUIRE)) {
		int timeout = 20;

		if (now_ms() >= next_flush) {
			pos_flush();
			next_flush = now_ms() + 1000;
		}
		take_feed();
		if (notify_feed_lost() &&
		    N.ndue < DUE_MAX / 2 && !N.job)
			catch_up();
		if (N.job && !__atomic_load_n(&N.job->outstanding,
					      __ATOMIC_ACQUIRE)) {
			job_finish(N.job);
			N.job = NULL;
		}
		if (!N.job)
			job_start();
		pump_http();
		if (N.job || (N.dhead && N.dhead->due_ms <= now_ms()))
			timeout = 1;
		curl_multi_poll(N.multi, NULL, 0, timeout, NULL);
	}
	/* a job still out: the shards answer it soon (they run until the
	 * drain is over); then it is decided and kept */
	for (int i = 0; N.job && i < 2000; i++) {
		if (!__atomic_load_n(&N.job->outstanding, __ATOMIC_ACQUIRE)) {
			job_finish(N.job);
			N.job = NULL;
			break;
		}
		usleep(1000);
	}
	return NULL;
}

int notify_start(const struct notify_cfg *cfg, char **err)
{
	*err = NULL;
	if (!cfg->url)
		return 0;
	N.cfg = *cfg;
	if (!N.cfg.inflight)
		N.cfg.inflight = 16;
	if (!N.cfg.backoff_ms)
		N.cfg.backoff_ms = 1000;
	N.url = strdup(cfg->url);
	if (cfg->secret_file) {
		if (auth_load_secret(cfg->secret_file, N.secret,
				     sizeof(N.secret), &N.secret_len, false) ||
		    !N.secret_len) {
			if (asprintf(err, "cannot read push secret %s: %s",
				     cfg->secret_file,
				     N.secret_len ? strerror(errno)
						  : "empty") < 0)
				*err = NULL;
			return -1;
		}
		N.has_secret = true;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		*err = strdup("libcurl: cannot initialise");
		return -1;
	}
	if (db_open(cfg->data_dir, err))
		return -1;
	N.initialized = meta_flag("init");
	N.pending = db_count_pending();
	N.multi = curl_multi_init();
	curl_multi_setopt(N.multi, CURLMOPT_MAX_HOST_CONNECTIONS,
			  (long)N.cfg.inflight);
	N.posts = calloc(N.cfg.inflight, sizeof(*N.posts));
	N.enabled = true;
	notify_feed_enable();
	return 0;
}

/* After rt_start: the notifier may now post to the shards. */
int notify_run(void)
{
	if (!N.enabled)
		return 0;
	if (pthread_create(&N.th, NULL, run, NULL))
		return -1;
	N.started = true;
	return 0;
}

bool notify_running(void) { return N.started; }

void notify_stop(void)
{
	if (!N.started)
		return;
	__atomic_store_n(&N.stop, 1, __ATOMIC_RELEASE);
	curl_multi_wakeup(N.multi);
	pthread_join(N.th, NULL);
	N.started = false;
	for (unsigned i = 0; i < N.nposts; i++) {
		curl_multi_remove_handle(N.multi, N.posts[i]->h);
		post_free(N.posts[i]);
	}
	N.nposts = 0;
	curl_multi_cleanup(N.multi);
	N.multi = NULL;
	while (N.dhead) {
		struct due *d = N.dhead;

		N.dhead = d->next;
		free(d);
	}
	N.dtail = NULL;
	smap_foreach(&N.qpos, it) free(it->val);
	smap_free(&N.qpos);
	smap_free(&N.busy);
	sqlite3_finalize(N.s_pos_get);
	sqlite3_finalize(N.s_pos_put);
	sqlite3_finalize(N.s_pend_ins);
	sqlite3_finalize(N.s_pend_due);
	sqlite3_finalize(N.s_pend_busy);
	sqlite3_finalize(N.s_pend_del);
	sqlite3_finalize(N.s_pend_retry);
	sqlite3_close(N.db);
	N.db = NULL;
	curl_global_cleanup();
	free(N.url);
	free(N.posts);
}

void notify_get_stats(struct notify_stats *o)
{
	memset(o, 0, sizeof(*o));
	o->sent = stat_get(&N.sent);
	o->retried = stat_get(&N.retried);
	o->dropped = stat_get(&N.dropped);
	o->rejected = stat_get(&N.rejected);
	o->pending = stat_get(&N.pending);
	o->waiting = __atomic_load_n(&N.ndue, __ATOMIC_RELAXED);
	o->posts_ok = stat_get(&N.posts_ok);
	o->posts_error = stat_get(&N.posts_error);
	o->posts_timeout = stat_get(&N.posts_timeout);
	for (unsigned i = 0; i <= NOTIFY_DELAY_NB; i++)
		o->delay_hist[i] = stat_get(&N.delay_hist[i]);
	o->delay_count = stat_get(&N.delay_count);
	o->delay_sum_s = (double)stat_get(&N.delay_sum_ms) / 1000.0;
}
