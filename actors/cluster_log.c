/*
 * cluster_log: the partitions' log (see cluster_log.h, docs/cluster.md).
 *
 * A message on parley.ev.p<N> (Parley-Seq: its first turn's number):
 *
 *   u32 magic "PLG2", u8 type (1 turns, 2 fence), u8 partitions,
 *   u16 history families, str writer (host id / incarnation),
 *   type 1: u32 turns, then each turn: u64 its number (the owner's own
 *   count), bytes: the batch's records (storage's encoding), bytes: the
 *   effects, each u8 kind and its fields:
 *     RELOAD  str ch                         (first, before the rest)
 *     EVENT   str ch, u64 seq, bytes frame
 *     BCAST   str ch, str skip, bytes frame
 *     DROP    str ch, str user
 *     UCHAN   str ws, str user, str ch, u8 action, u64 after,
 *             str except host, u64 except conn, bytes frame (may be empty)
 *   str: u16 n + n bytes; bytes: u32 n + n bytes; integers little-endian.
 *
 * Threads: clog_begin..clog_submit and the appliers' effects on shard
 * threads; appends and takeovers on cluster/work's workers (one key per
 * partition: a partition's appends and takeovers never overlap and keep
 * their order); each partition's follower on a NATS library thread; the
 * applier's store commits complete on storage's sync thread.
 */
#include "actors/cluster_log.h"

#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actors/chan.h"
#include "actors/cluster_core.h"
#include "actors/cluster_wire.h"
#include "cluster/work.h"
#include "runtime/log.h"
#include "storage/search.h"

#define LOG_MAGIC 0x32474c50u /* "PLG2" */
#define CATCHUP_MS 30000      /* a takeover waits this long for its applier */
#define FOLLOW_STALL_MS 3000  /* behind the log this long: follow again */
/* An owner's turn is acknowledged once every live host has stored it; a
 * host that has not within this long is left out (and its clients read
 * what it has) until it catches up. */
#define AWAIT_MS 1000
#define REPORT_HOSTS 64

enum { T_TURNS = 1, T_FENCE = 2 };
enum { X_RELOAD = 1, X_EVENT, X_BCAST, X_DROP, X_UCHAN };

/* ---- state ---------------------------------------------------------------- */

/* A turn of ours in flight: its Parley-Seq and its commit. */
struct reg {
	uint64_t pseq;
	void *commit;
	uint64_t t_sub, t_acked; /* mono us: submitted, appended */
	struct reg *next;
};

struct part {
	/* owner: the subject's last message, our expectation (its worker) */
	uint64_t log_sseq;
	/* owner: next Parley-Seq (the shard's thread; set by takeover
	 * before the shard owns) */
	uint64_t next_pseq;
	uint64_t queued;          /* the follower's last (its thread) */
	_Atomic uint32_t inflight; /* handed to storage, effects not run */
	_Atomic uint32_t storing;  /* handed to storage, not stored yet */
	_Atomic bool taking;      /* a takeover is queued or running */
	bool halted;              /* draining: the follower stopped here */
	/* the shard's thread: our stored turns waiting for the other hosts */
	struct await *aw, **awtail;
	uint64_t watch_at, watch_since; /* clog_watch: applied, since when */
	pthread_mutex_t mu;       /* regs, q, appending */
	struct reg *regs;
	struct clog *q, **qtail;  /* turns waiting for the partition's worker */
	bool appending;           /* its append job is queued or running */
	bus_sub *follow;
	/* the shard's thread only */
	bool eff_owned;
};

static struct {
	bus *b;
	work *w;
	struct clog_hooks hk;
	unsigned n;
	char writer[BUS_HOST_MAX + 40];
	struct part p[RT_MAX_SHARDS];
	_Atomic bool stop, draining;
	_Atomic uint64_t applied, takeovers, log_bytes, fenced_turns, appends,
		turns, refollows, local_refused, wait_us, append_us, timed_turns, apply_us,
		applied_turns;
} L;

/* An owner's turn stored here, waiting until the other live hosts have
 * stored it too. */
struct await {
	struct await *next;
	uint64_t sseq;
	void *commit;
	uint64_t t_ms;
};

/* How far each other host reported it has stored each partition's log. */
static struct {
	pthread_mutex_t mu;
	struct {
		char host[BUS_HOST_MAX + 1];
		uint64_t applied[RT_MAX_SHARDS];
		bool left_out[RT_MAX_SHARDS]; /* too slow: not waited for */
		uint64_t joined_ms; /* its last join (clog_host_joined) */
	} h[REPORT_HOSTS];
	unsigned n;
} R = { .mu = PTHREAD_MUTEX_INITIALIZER };

/* One owned shard's turn, on its way to the log. */
struct clog {
	struct shard_state *ss;
	struct clog *next;
	uint64_t tseq;     /* the turn's number: its commit's registration */
	struct wbuf recs;  /* the batch's records */
	struct wbuf fx;    /* the effects other hosts repeat */
};

static void part_key(unsigned p, char *out, size_t cap)
{
	snprintf(out, cap, "p%u", p);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void post_call(unsigned p, void (*fn)(struct shard_state *,
					     struct m_call *), void *arg)
{
	struct m_call *m = msg_new(sizeof(*m), M_CALL);

	m->fn = fn;
	m->arg = arg;
	rt_post(p, &m->h);
}

/* ---- the owner: a turn to the log ------------------------------------------ */

bool clog_owned(const struct shard_state *ss)
{
	return cluster_on && L.p[ss->id].eff_owned;
}

bool clog_refuse_local(const struct shard_state *ss, size_t nrec)
{
	static _Atomic uint64_t told_ms;
	uint64_t now, t;

	if (!cluster_on || !nrec)
		return false;
	atomic_fetch_add(&L.local_refused, 1);
	now = rt_now_ms();
	t = atomic_load(&told_ms);
	if (now - t >= 10000 && atomic_compare_exchange_strong(&told_ms, &t, now))
		plog(PL_WARN, "cluster", "p%u: a write that is not in the log "
		     "was refused (%zu records): this host does not own the "
		     "partition (parley_cluster_local_refused_total)", ss->id,
		     nrec);
	return true;
}

static void header(struct wbuf *w, uint8_t type)
{
	w_u32(w, LOG_MAGIC);
	w_u8(w, type);
	w_u8(w, (uint8_t)L.n);
	w_u16(w, (uint16_t)store_nranges(srv.st));
	w_str(w, L.writer);
}

struct clog *clog_begin(struct shard_state *ss, const store_batch *b)
{
	struct clog *l = calloc(1, sizeof(*l));
	const char (*changed)[ID_CAP];
	uint32_t nchanged = core_changed(ss->id, &changed);
	size_t n;
	const void *d = store_batch_bytes(b, &n);

	if (!l)
		abort();
	l->ss = ss;
	w_raw(&l->recs, d, n);
	for (uint32_t i = 0; i < nchanged; i++) {
		w_u8(&l->fx, X_RELOAD);
		w_str(&l->fx, changed[i]);
	}
	return l;
}

void clog_event(struct clog *l, const char *ch, uint64_t seq, const rt_buf *b)
{
	w_u8(&l->fx, X_EVENT);
	w_str(&l->fx, ch);
	w_u64(&l->fx, seq);
	w_bytes(&l->fx, b->data, b->len);
}

void clog_bcast(struct clog *l, const char *ch, const char *skip,
		const rt_buf *b)
{
	w_u8(&l->fx, X_BCAST);
	w_str(&l->fx, ch);
	w_str(&l->fx, skip ? skip : "");
	w_bytes(&l->fx, b->data, b->len);
}

void clog_post(struct clog *l, const rt_msg *m)
{
	if (m->type == M_FANOUT) {
		const struct m_fanout *f = (const struct m_fanout *)m;

		if (!f->drop)
			return;
		w_u8(&l->fx, X_DROP);
		w_str(&l->fx, f->ch);
		w_str(&l->fx, f->skip_user);
	} else if (m->type == M_USER_CHAN) {
		const struct m_user_chan *u = (const struct m_user_chan *)m;
		char host[BUS_HOST_MAX + 1] = "";
		rt_conn_id ex = u->except;

		if (ex && cluster_is_proxy(ex))
			ex = cluster_proxy_origin(ex, host);
		else if (ex)
			cluster_self(host);
		w_u8(&l->fx, X_UCHAN);
		w_str(&l->fx, u->ws);
		w_str(&l->fx, u->user);
		w_str(&l->fx, u->ch);
		w_u8(&l->fx, u->action);
		w_u64(&l->fx, u->after);
		w_str(&l->fx, host);
		w_u64(&l->fx, ex);
		if (u->frame)
			w_bytes(&l->fx, u->frame->data, u->frame->len);
		else
			w_bytes(&l->fx, NULL, 0);
	}
}

/* Takes turn pseq's registration: its commit (NULL: none), and when it
 * was appended (0: not yet, or unknown). */
static void *reg_take_at(struct part *pt, uint64_t pseq, uint64_t *t_acked)
{
	void *c = NULL;

	*t_acked = 0;
	pthread_mutex_lock(&pt->mu);
	for (struct reg **r = &pt->regs; *r; r = &(*r)->next) {
		if ((*r)->pseq == pseq) {
			struct reg *g = *r;

			*r = g->next;
			c = g->commit;
			*t_acked = g->t_acked;
			free(g);
			break;
		}
	}
	pthread_mutex_unlock(&pt->mu);
	return c;
}

static void *reg_take(struct part *pt, uint64_t pseq)
{
	uint64_t t;

	return reg_take_at(pt, pseq, &t);
}

/* The log's stages of our turns, for /metrics: waiting for the
 * partition's append in flight, the append itself (JetStream's replicated
 * acknowledgement), and from there until this host's applier stored it
 * (the consumer's delivery and the synced write). */
static void turns_appended(struct part *pt, struct clog *turns,
			   uint64_t t_start)
{
	uint64_t now = rt_mono_us();

	pthread_mutex_lock(&pt->mu);
	for (struct clog *l = turns; l; l = l->next)
		for (struct reg *g = pt->regs; g; g = g->next)
			if (g->pseq == l->tseq) {
				g->t_acked = now;
				atomic_fetch_add(&L.wait_us, t_start - g->t_sub);
				atomic_fetch_add(&L.append_us, now - t_start);
				atomic_fetch_add(&L.timed_turns, 1);
				break;
			}
	pthread_mutex_unlock(&pt->mu);
}

struct failed {
	void *commit;
};

static void fail_on_shard(struct shard_state *ss, struct m_call *m)
{
	L.hk.logged(ss, m->arg, -ESTALE);
	free(m);
}

static void lost_on_shard(struct shard_state *ss, struct m_call *m);

#define MSG_MAX (6u << 20) /* a log message, of the 8 MB NATS allows */

static void free_turn(struct clog *l)
{
	free(l->recs.p);
	free(l->fx.p);
	free(l);
}

/* The turns waiting for partition p's worker, as one message (as many
 * as fit). NULL when none wait: the job ends. */
static struct clog *take_turns(struct part *pt, struct wbuf *w)
{
	struct clog *first, *l, **tail;
	uint32_t n = 0;
	size_t at;

	pthread_mutex_lock(&pt->mu);
	first = pt->q;
	if (!first) {
		pt->appending = false;
		pthread_mutex_unlock(&pt->mu);
		return NULL;
	}
	header(w, T_TURNS);
	at = w->n;
	w_u32(w, 0);
	for (l = first, tail = &first; l; tail = &l->next, l = l->next) {
		if (n && w->n + l->recs.n + l->fx.n + 32 > MSG_MAX)
			break;
		w_u64(w, l->tseq);
		w_bytes(w, l->recs.p, l->recs.n);
		w_bytes(w, l->fx.p, l->fx.n);
		n++;
	}
	pt->q = l;
	if (!l)
		pt->qtail = &pt->q;
	*tail = NULL;
	pthread_mutex_unlock(&pt->mu);
	n = htole32(n);
	memcpy(w->p + at, &n, 4);
	return first;
}

/* A partition's worker: its waiting turns go to the log, as many per
 * message as wait (one append in flight per partition: each states the
 * last one's sequence), until none wait. */
static void append_job(void *arg)
{
	unsigned p = (unsigned)(uintptr_t)arg;
	struct part *pt = &L.p[p];
	char key[16];

	part_key(p, key, sizeof(key));
	for (;;) {
		struct wbuf w = { 0 };
		struct clog *turns = take_turns(pt, &w), *l;
		uint64_t sseq = 0, t_start = rt_mono_us();
		bus_status st;
		int tries = 0;

		if (!turns)
			return;
		for (;;) {
			st = bus_append(L.b, key, turns->tseq, w.p, w.n,
					pt->log_sseq, &sseq);
			if (st != BUS_UNAVAILABLE || atomic_load(&L.stop))
				break;
			/* it may have been stored: only the same append,
			 * again, tells (ok, or fenced by a new owner) */
			if (++tries % 6 == 1)
				plog(PL_WARN, "cluster", "p%u: the log does not "
				     "answer; retrying", p);
		}
		if (st == BUS_OK) {
			pt->log_sseq = sseq;
			core_set_logpos(p, sseq);
			turns_appended(pt, turns, t_start);
			atomic_fetch_add(&L.log_bytes, w.n);
			atomic_fetch_add(&L.appends, 1);
		} else if (st == BUS_FENCED) {
			plog(PL_WARN, "cluster", "p%u: fenced: another host "
			     "owns it now", p);
			core_set_owned(p, false);
			post_call(p, lost_on_shard, NULL);
		} else {
			plog(PL_WARN, "cluster", "p%u: append: %s", p,
			     bus_status_str(st));
		}
		while ((l = turns)) {
			turns = l->next;
			if (st != BUS_OK) {
				/* not stored (or, if it was after all, the
				 * applier stores it as anyone's turn) */
				void *c = reg_take(pt, l->tseq);

				atomic_fetch_add(&L.fenced_turns, 1);
				if (c)
					post_call(p, fail_on_shard, c);
			}
			free_turn(l);
		}
		free(w.p);
	}
}

void clog_submit(struct clog *l, void *commit)
{
	unsigned p = l->ss->id;
	struct part *pt = &L.p[p];
	struct reg *g = calloc(1, sizeof(*g));
	bool start;

	if (!g)
		abort();
	l->tseq = pt->next_pseq++;
	atomic_fetch_add(&L.turns, 1);
	g->pseq = l->tseq;
	g->commit = commit;
	g->t_sub = rt_mono_us();
	pthread_mutex_lock(&pt->mu);
	g->next = pt->regs;
	pt->regs = g;
	*pt->qtail = l;
	pt->qtail = &l->next;
	start = !pt->appending;
	pt->appending = true;
	pthread_mutex_unlock(&pt->mu);
	if (start && work_submit_key(L.w, p, append_job, (void *)(uintptr_t)p)) {
		/* the pool is gone (stopping): fail what waits */
		for (;;) {
			struct wbuf w = { 0 };
			struct clog *t = take_turns(pt, &w);

			free(w.p);
			if (!t)
				break;
			while (t) {
				struct clog *n = t->next;
				void *c = reg_take(pt, t->tseq);

				if (c)
					post_call(p, fail_on_shard, c);
				free_turn(t);
				t = n;
			}
		}
	}
}

/* ---- every host: the applier ---------------------------------------------- */

/* A log message on its way through this host's store. */
struct apply {
	unsigned p;
	uint64_t sseq;
	bool mine;
	int status;
	size_t len;
	uint8_t turns[]; /* u32 n, then the turns, as in the message */
};

static struct chan *loaded(struct shard_state *ss, const char *ch)
{
	struct chan *c = smap_get(&ss->chans, ch, strlen(ch));

	/* a channel with effects of its own in flight is this host's
	 * (it was the owner): a failed commit reloads it */
	return c && !c->pending ? c : NULL;
}

/* Another host's turn is stored here: deliver it to our own clients. */
static void replay_effects(struct shard_state *ss, unsigned p, uint64_t sseq,
			   const void *fx, size_t len)
{
	struct rbuf r = { fx, (const uint8_t *)fx + len, false };
	char self[BUS_HOST_MAX + 1];

	cluster_self(self);
	while (!r.bad && r.p < r.end) {
		char ch[ID_CAP], who[ID_CAP], ws[ID_CAP], host[BUS_HOST_MAX + 1];
		uint8_t kind = r_u8(&r);
		const void *d;
		size_t n;
		uint64_t seq;
		struct chan *c;

		switch (kind) {
		case X_RELOAD:
			r_str(&r, ch, sizeof(ch));
			if (!r.bad && (c = loaded(ss, ch)))
				chan_reload(c);
			break;
		case X_EVENT:
			r_str(&r, ch, sizeof(ch));
			seq = r_u64(&r);
			d = r_bytes(&r, &n);
			if (r.bad)
				break;
			if (srv.sx)
				search_feed(srv.sx, ss->id, d, n);
			if ((c = loaded(ss, ch))) {
				rt_buf *b = rt_buf_new(d, n);

				if (seq >= c->next_seq) {
					c->next_seq = seq + 1;
					c->durable_seq = seq;
					c->msgs++;
				}
				b->t_post_us = rt_mono_us();
				fanout(c, seq, b, NULL);
				rt_buf_unref(b);
			}
			break;
		case X_BCAST:
			r_str(&r, ch, sizeof(ch));
			r_str(&r, who, sizeof(who));
			d = r_bytes(&r, &n);
			if (!r.bad && (c = loaded(ss, ch))) {
				rt_buf *b = rt_buf_new(d, n);

				b->t_post_us = rt_mono_us();
				fanout(c, 0, b, who[0] ? who : NULL);
				rt_buf_unref(b);
			}
			break;
		case X_DROP:
			r_str(&r, ch, sizeof(ch));
			r_str(&r, who, sizeof(who));
			if (r.bad)
				break;
			for (unsigned s = 0; s < rt_nshards(); s++) {
				struct m_fanout *f = msg_new(sizeof(*f),
							     M_FANOUT);

				strcpy(f->ch, ch);
				strcpy(f->skip_user, who);
				f->drop = true;
				rt_post(s, &f->h);
			}
			break;
		case X_UCHAN: {
			struct m_user_chan *u;
			uint8_t act;
			uint64_t after, ex;

			r_str(&r, ws, sizeof(ws));
			r_str(&r, who, sizeof(who));
			r_str(&r, ch, sizeof(ch));
			act = r_u8(&r);
			after = r_u64(&r);
			r_str(&r, host, sizeof(host));
			ex = r_u64(&r);
			d = r_bytes(&r, &n);
			if (r.bad)
				break;
			u = msg_new(sizeof(*u), M_USER_CHAN);
			strcpy(u->ws, ws);
			strcpy(u->user, who);
			strcpy(u->ch, ch);
			u->action = act;
			u->after = after;
			u->except = strcmp(host, self) ? 0 : ex;
			u->frame = n ? rt_buf_new(d, n) : NULL;
			rt_post(user_shard(ws, who), &u->h);
			break;
		}
		default:
			r.bad = true;
			break;
		}
	}
	if (r.bad)
		plog(PL_ERROR, "cluster", "p%u: log message %llu: bad effects",
		     p, (unsigned long long)sseq);
}

static int report_slot(const char *host) /* under R.mu */
{
	for (unsigned i = 0; i < R.n; i++)
		if (!strcmp(R.h[i].host, host))
			return (int)i;
	if (R.n == REPORT_HOSTS)
		return -1;
	memset(&R.h[R.n], 0, sizeof(R.h[0]));
	snprintf(R.h[R.n].host, sizeof(R.h[0].host), "%s", host);
	return (int)R.n++;
}

/* Have the other live hosts stored partition p's log up to sseq? A host
 * that has not, AWAIT_MS after it was stored here (t_ms), is left out of
 * the wait for p until it catches up. */
static bool others_have(unsigned p, uint64_t sseq, uint64_t t_ms, uint64_t now)
{
	char live[64][BUS_HOST_MAX + 1], self[BUS_HOST_MAX + 1];
	unsigned n = core_live(live, 64);
	bool all = true;

	cluster_self(self);
	pthread_mutex_lock(&R.mu);
	for (unsigned i = 0; i < n; i++) {
		int k;

		if (!strcmp(live[i], self) || (k = report_slot(live[i])) < 0 ||
		    R.h[k].left_out[p] || R.h[k].applied[p] >= sseq)
			continue;
		/* a host that joined after the write was stored has its
		 * AWAIT_MS from its join */
		if (now - (t_ms > R.h[k].joined_ms ? t_ms : R.h[k].joined_ms) <
		    AWAIT_MS) {
			all = false;
			continue;
		}
		R.h[k].left_out[p] = true;
		plog(PL_WARN, "cluster", "p%u: %s has not stored %llu after "
		     "%u ms: acknowledging without it until it catches up", p,
		     live[i], (unsigned long long)sseq, AWAIT_MS);
	}
	pthread_mutex_unlock(&R.mu);
	return all;
}

/* Our turns that every live host has stored now run their effects (the
 * acknowledgements, fan-out here): in order, so that a write is
 * acknowledged only once any host's clients can read it. */
static void await_release(struct shard_state *ss, bool all)
{
	struct part *pt = &L.p[ss->id];
	uint64_t now = rt_now_ms();

	while (pt->aw && (all || others_have(ss->id, pt->aw->sseq,
					     pt->aw->t_ms, now))) {
		struct await *w = pt->aw;

		pt->aw = w->next;
		if (!pt->aw)
			pt->awtail = &pt->aw;
		L.hk.logged(ss, w->commit, 0);
		free(w);
	}
}

static void await_push(struct part *pt, uint64_t sseq, void *commit)
{
	struct await *w = calloc(1, sizeof(*w));

	if (!w)
		abort();
	w->sseq = sseq;
	w->commit = commit;
	w->t_ms = rt_now_ms();
	if (!pt->awtail)
		pt->awtail = &pt->aw;
	*pt->awtail = w;
	pt->awtail = &w->next;
}

static void await_on_shard(struct shard_state *ss, struct m_call *m)
{
	await_release(ss, false);
	free(m);
}

void clog_on_report(const char *host, unsigned p, uint64_t sseq)
{
	int k;

	if (p >= L.n)
		return;
	pthread_mutex_lock(&R.mu);
	k = report_slot(host);
	if (k >= 0) {
		if (sseq > R.h[k].applied[p])
			R.h[k].applied[p] = sseq;
		if (R.h[k].left_out[p] && sseq >= core_applied(p)) {
			R.h[k].left_out[p] = false; /* caught up */
			plog(PL_INFO, "cluster", "p%u: %s caught up", p, host);
		}
	}
	pthread_mutex_unlock(&R.mu);
	if (cluster_owns(p))
		post_call(p, await_on_shard, NULL);
}

void clog_host_joined(const char *host)
{
	int k;

	pthread_mutex_lock(&R.mu);
	k = report_slot(host);
	if (k >= 0) {
		/* waited for again (its earlier life may have been left out),
		 * with AWAIT_MS from now to catch up */
		memset(R.h[k].left_out, 0, sizeof(R.h[k].left_out));
		R.h[k].joined_ms = rt_now_ms();
	}
	pthread_mutex_unlock(&R.mu);
}

void clog_host_left(const char *host)
{
	int k;

	pthread_mutex_lock(&R.mu);
	k = report_slot(host);
	if (k >= 0)
		memset(R.h[k].left_out, 1, sizeof(R.h[k].left_out));
	pthread_mutex_unlock(&R.mu);
}

/* Tell partition p's owner how far this host has stored its log. */
static void report(unsigned p, uint64_t sseq)
{
	char owner[BUS_HOST_MAX + 1], self[BUS_HOST_MAX + 1];
	struct wbuf w = { 0 };

	core_owner_get(p, owner);
	cluster_self(self);
	if (!owner[0] || !strcmp(owner, self))
		return;
	w_u8(&w, CLUSTER_MSG_APPLIED);
	w_str(&w, self);
	w_u8(&w, (uint8_t)p);
	w_u64(&w, sseq);
	bus_send(L.b, owner, w.p, w.n);
	free(w.p);
}

void clog_tick(struct shard_state *ss)
{
	if (cluster_on && L.p[ss->id].aw)
		await_release(ss, false);
}

static void apply_on_shard(struct shard_state *ss, struct m_call *m)
{
	struct apply *a = m->arg;
	struct part *pt = &L.p[a->p];
	struct rbuf r = { a->turns, a->turns + a->len, false };
	uint32_t n = a->len ? r_u32(&r) : 0;

	/* turn by turn, in order: our own come back to their commits (the
	 * answers, local fan-out); anyone else's are delivered here */
	for (uint32_t i = 0; i < n && !r.bad; i++) {
		uint64_t tseq = r_u64(&r), t_acked;
		size_t nrec, nfx;
		const void *fx;
		void *c;

		r_bytes(&r, &nrec);
		fx = r_bytes(&r, &nfx);
		if (r.bad)
			break;
		c = a->mine ? reg_take_at(pt, tseq, &t_acked) : NULL;
		if (c && t_acked) {
			atomic_fetch_add(&L.apply_us, rt_mono_us() - t_acked);
			atomic_fetch_add(&L.applied_turns, 1);
		}
		if (c && a->status == 0)
			await_push(pt, a->sseq, c);
		else if (c)
			L.hk.logged(ss, c, a->status);
		else if (a->status == 0)
			replay_effects(ss, a->p, a->sseq, fx, nfx);
	}
	if (a->status)
		__atomic_store_n(&srv.storage_failed, 1, __ATOMIC_RELAXED);
	core_set_applied(a->p, a->sseq);
	if (!a->mine)
		report(a->p, a->sseq);
	else
		await_release(ss, false);
	atomic_fetch_sub(&pt->inflight, 1);
	atomic_fetch_add(&L.applied, 1);
	free(a);
	free(m);
	cluster_release_held();
}

static void apply_done(void *ctx, int status)
{
	struct apply *a = ctx;

	/* storage's sync thread: hand it to the partition's shard */
	a->status = status;
	atomic_fetch_sub(&L.p[a->p].storing, 1);
	post_call(a->p, apply_on_shard, a);
}

static void on_log(void *arg, uint64_t sseq, uint64_t last, uint64_t pseq,
		   const void *data, size_t len)
{
	struct part *pt = arg;
	unsigned p = (unsigned)(pt - L.p);
	struct rbuf r = { data, (const uint8_t *)data + len, false };
	char writer[sizeof(L.writer)];
	const uint8_t *turns;
	struct wbuf recs = { 0 };
	size_t nturns;
	uint8_t type;
	store_batch *b;
	struct apply *a;
	uint64_t le = htole64(sseq);
	char key[2] = { 'p', (char)p };

	(void)last;
	(void)pseq;
	if (sseq <= pt->queued || atomic_load(&L.stop) || pt->halted)
		return;
	if (r_u32(&r) != LOG_MAGIC)
		r.bad = true;
	type = r_u8(&r);
	if (r_u8(&r) != L.n || r_u16(&r) != store_nranges(srv.st)) {
		plog(PL_ERROR, "cluster", "p%u: log message %llu is from a host "
		     "with other --shards or --ranges: every host of a "
		     "cluster must have the same", p, (unsigned long long)sseq);
		r.bad = true;
	}
	r_str(&r, writer, sizeof(writer));
	if (atomic_load(&L.draining) && strcmp(writer, L.writer)) {
		/* the shards are stopping: only our own turns still come
		 * back to them; the rest is read again at the next start */
		pt->halted = true;
		return;
	}
	turns = r.p;
	if (!r.bad && type == T_TURNS) {
		/* every turn's records, in order, as one write */
		uint32_t n = r_u32(&r);

		for (uint32_t i = 0; i < n && !r.bad; i++) {
			const void *d;
			size_t nd, nfx;

			r_u64(&r);
			d = r_bytes(&r, &nd);
			r_bytes(&r, &nfx);
			if (!r.bad)
				w_raw(&recs, d, nd);
		}
		if (r.p != r.end)
			r.bad = true;
	}
	nturns = type == T_TURNS && !r.bad ? (size_t)(r.end - turns) : 0;
	if (r.bad || (type != T_TURNS && type != T_FENCE)) {
		plog(PL_ERROR, "cluster", "p%u: log message %llu is not one "
		     "parleyd wrote; skipped", p, (unsigned long long)sseq);
		recs.n = 0;
		nturns = 0;
	}
	b = store_batch_load(srv.st, recs.p, recs.n);
	free(recs.p);
	if (!b) {
		plog(PL_ERROR, "cluster", "p%u: log message %llu: its records "
		     "are not whole; skipped", p, (unsigned long long)sseq);
		b = store_batch_new(srv.st);
		nturns = 0;
	}
	/* the store says how far it has the log, in the same write */
	store_put_meta(b, 'X', key, sizeof(key), &le, sizeof(le));
	a = malloc(sizeof(*a) + nturns);
	if (!a)
		abort();
	a->p = p;
	a->sseq = sseq;
	a->mine = !strcmp(writer, L.writer);
	a->status = 0;
	a->len = nturns;
	if (nturns)
		memcpy(a->turns, turns, nturns);
	pt->queued = sseq;
	atomic_fetch_add(&pt->inflight, 1);
	atomic_fetch_add(&pt->storing, 1);
	store_commit(srv.st, p, b, apply_done, a);
}

/* ---- ownership changes ------------------------------------------------------ */

/* On the shard: what this turn did so far goes as the old owner's (or
 * not-owner's) turn, then the switch. */
static void own_on_shard(struct shard_state *ss, struct m_call *m)
{
	struct part *pt = &L.p[ss->id];

	L.hk.turn_end(ss);
	/* the store has the whole log up to our fence: start from it */
	smap_foreach(&ss->chans, it) {
		struct chan *c = it->val;

		if (!c->pending && !c->pending_events)
			chan_reload(c);
	}
	pt->eff_owned = true;
	core_set_owned(ss->id, true);
	atomic_store(&pt->taking, false);
	atomic_fetch_add(&L.takeovers, 1);
	plog(PL_INFO, "cluster", "p%u: this host owns it now (log at %llu)",
	     ss->id, (unsigned long long)pt->log_sseq);
	free(m);
}

static void lost_on_shard(struct shard_state *ss, struct m_call *m)
{
	struct part *pt = &L.p[ss->id];

	if (pt->eff_owned) {
		await_release(ss, true); /* stored: another host owns it now */
		L.hk.turn_end(ss);
		pt->eff_owned = false;
		plog(PL_INFO, "cluster", "p%u: not this host's any more",
		     ss->id);
	}
	free(m);
}

void clog_lost(unsigned p)
{
	if (core_set_owned(p, false))
		post_call(p, lost_on_shard, NULL);
}

struct takeover {
	unsigned p;
	int rc;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
};

static void fence_payload(struct wbuf *w)
{
	header(w, T_FENCE);
}

static void takeover_job(void *arg)
{
	struct takeover *t = arg;
	struct part *pt = &L.p[t->p];
	char key[16];
	uint64_t last = 0, lpseq = 0, f = 0, until;
	struct wbuf w = { 0 };
	bus_status st;

	t->rc = -1;
	part_key(t->p, key, sizeof(key));
	st = bus_last(L.b, key, &last, &lpseq);
	if (st == BUS_EMPTY) {
		last = 0;
		lpseq = 0;
	} else if (st != BUS_OK) {
		goto out;
	}
	/* everything logged before the fence is stored here first */
	until = mono_ms() + CATCHUP_MS;
	while (core_applied(t->p) < last ||
	       atomic_load(&pt->inflight)) {
		struct timespec ts = { 0, 5 * 1000 * 1000 };

		if (mono_ms() > until || atomic_load(&L.stop)) {
			plog(PL_WARN, "cluster", "p%u: the applier is at %llu, "
			     "the log at %llu: not taking it yet", t->p,
			     (unsigned long long)core_applied(t->p),
			     (unsigned long long)last);
			goto out;
		}
		nanosleep(&ts, NULL);
	}
	fence_payload(&w);
	st = bus_append(L.b, key, lpseq + 1, w.p, w.n, last, &f);
	free(w.p);
	if (st != BUS_OK) {
		plog(PL_WARN, "cluster", "p%u: fence: %s", t->p,
		     bus_status_str(st));
		goto out;
	}
	pt->log_sseq = f;
	core_set_logpos(t->p, f);
	pt->next_pseq = lpseq + 2;
	t->rc = 0;
out:
	pthread_mutex_lock(&t->mu);
	t->done = true;
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

int clog_takeover(unsigned p)
{
	struct part *pt = &L.p[p];
	struct takeover t = { .p = p };
	int rc;

	if (cluster_owns(p) || atomic_exchange(&pt->taking, true))
		return 0;
	pthread_mutex_init(&t.mu, NULL);
	pthread_cond_init(&t.cv, NULL);
	/* on the partition's worker: after any append of an earlier
	 * ownership, before any of this one */
	if (work_submit_key(L.w, p, takeover_job, &t)) {
		atomic_store(&pt->taking, false);
		return -1;
	}
	pthread_mutex_lock(&t.mu);
	while (!t.done)
		pthread_cond_wait(&t.cv, &t.mu);
	pthread_mutex_unlock(&t.mu);
	rc = t.rc;
	pthread_mutex_destroy(&t.mu);
	pthread_cond_destroy(&t.cv);
	if (rc) {
		atomic_store(&pt->taking, false);
		return -1;
	}
	post_call(p, own_on_shard, NULL);
	return 0;
}

/* ---- start and stop ---------------------------------------------------------- */

static int check_positions(bool new_log);

int clog_start(bus *b, unsigned nshards, const char *writer,
	       const struct clog_hooks *hk, bool new_log)
{
	L.b = b;
	L.hk = *hk;
	L.n = nshards;
	snprintf(L.writer, sizeof(L.writer), "%s", writer);
	if (work_start(&L.w, nshards < 4 ? nshards : 4))
		return -1;
	for (unsigned p = 0; p < nshards; p++) {
		struct part *pt = &L.p[p];
		char key[2] = { 'p', (char)p };
		void *v = NULL;
		size_t n = 0;
		uint64_t le;

		pthread_mutex_init(&pt->mu, NULL);
		pt->qtail = &pt->q;
		if (store_get_meta(srv.st, 'X', key, sizeof(key), &v, &n) == 0 &&
		    n == sizeof(le)) {
			memcpy(&le, v, sizeof(le));
			core_set_applied(p, le64toh(le));
		}
		free(v);
		pt->queued = core_applied(p);
	}
	return check_positions(new_log);
}

struct waitc {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	int status;
};

static void waitc_done(void *ctx, int status)
{
	struct waitc *w = ctx;

	pthread_mutex_lock(&w->mu);
	w->status = status;
	w->done = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

/* Partition p's position in this store is 0 again (a new log). */
static int forget_position(unsigned p)
{
	struct waitc w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
			   false, 0 };
	store_batch *b = store_batch_new(srv.st);
	char key[2] = { 'p', (char)p };
	uint64_t zero = 0;

	store_put_meta(b, 'X', key, sizeof(key), &zero, sizeof(zero));
	if (store_commit(srv.st, p, b, waitc_done, &w))
		return -1;
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	return w.status;
}

/* Does the log still hold everything this store took from it? A power cut
 * of the NATS nodes can lose the stream's tail (nats-server 2.9 does not
 * fsync), and a log that has moved on without those messages would number
 * new ones with the same stream seqs: this host would skip them. So a
 * store ahead of the log refuses to start (docs/cluster.md, "After a
 * power cut of NATS"), unless told the log is new and empty. */
static int check_positions(bool new_log)
{
	for (unsigned p = 0; p < L.n; p++) {
		char key[16];
		uint64_t last = 0, pseq = 0, have = core_applied(p);
		bus_status st;

		part_key(p, key, sizeof(key));
		st = bus_last(L.b, key, &last, &pseq);
		if (st == BUS_EMPTY)
			last = 0;
		else if (st != BUS_OK) {
			plog(PL_ERROR, "cluster", "p%u: cannot read the log's "
			     "end: %s", p, bus_status_str(st));
			return -1;
		}
		if (have <= last)
			continue;
		if (new_log && last == 0) {
			plog(PL_WARN, "cluster", "p%u: a new log: this store "
			     "(at %llu of the old one) starts it again", p,
			     (unsigned long long)have);
			if (forget_position(p))
				return -1;
			core_set_applied(p, 0);
			L.p[p].queued = 0;
			continue;
		}
		plog(PL_ERROR, "cluster", "p%u: this store has the log up to "
		     "%llu, the log ends at %llu: it lost messages (a power "
		     "cut of the NATS nodes?); see docs/cluster.md, \"After "
		     "a power cut of NATS\"", p, (unsigned long long)have,
		     (unsigned long long)last);
		return -1;
	}
	return 0;
}

int clog_follow(void)
{
	for (unsigned p = 0; p < L.n; p++) {
		struct part *pt = &L.p[p];
		char key[16];

		part_key(p, key, sizeof(key));
		if (bus_follow(L.b, key, pt->queued + 1, on_log, pt,
			       &pt->follow) != BUS_OK) {
			plog(PL_ERROR, "cluster", "p%u: cannot follow the log",
			     p);
			return -1;
		}
	}
	return 0;
}

/* The follower of partition p stopped (a consumer the library could not
 * recreate: it happens around a NATS node's death): a new one from what
 * the store has queued. The ownership thread. */
static void refollow(unsigned p)
{
	struct part *pt = &L.p[p];
	char key[16];

	plog(PL_WARN, "cluster", "p%u: the log's follower is stuck at %llu; "
	     "following again", p, (unsigned long long)pt->queued);
	bus_unsubscribe(pt->follow); /* its callback has returned */
	pt->follow = NULL;
	part_key(p, key, sizeof(key));
	if (bus_follow(L.b, key, pt->queued + 1, on_log, pt, &pt->follow) !=
	    BUS_OK)
		plog(PL_ERROR, "cluster", "p%u: cannot follow the log", p);
	atomic_fetch_add(&L.refollows, 1);
}

void clog_watch(uint64_t now_ms)
{
	for (unsigned p = 0; p < L.n && !atomic_load(&L.stop); p++) {
		struct part *pt = &L.p[p];
		uint64_t have = core_applied(p), last = 0, pseq = 0;
		char key[16];

		if (have != pt->watch_at || !pt->follow || !pt->watch_since) {
			pt->watch_at = have;
			pt->watch_since = now_ms;
			continue;
		}
		if (now_ms - pt->watch_since < FOLLOW_STALL_MS)
			continue;
		part_key(p, key, sizeof(key));
		if (bus_last(L.b, key, &last, &pseq) == BUS_OK && last > have)
			refollow(p);
		pt->watch_since = now_ms;
	}
}

void clog_drain(void)
{
	atomic_store(&L.draining, true);
}

bool clog_idle(unsigned p)
{
	return !cluster_on || !atomic_load(&L.p[p].inflight);
}

void clog_stop_follow(void)
{
	uint64_t until = mono_ms() + 10000;

	atomic_store(&L.stop, true);
	for (unsigned p = 0; p < L.n; p++) {
		bus_unsubscribe(L.p[p].follow);
		L.p[p].follow = NULL;
	}
	/* what storage has been given of the log is stored before the
	 * store closes. (Not its effects: the shards have stopped, and a
	 * message that came after they drained would keep inflight up, and
	 * the stop waiting, for nothing.) */
	for (unsigned p = 0; p < L.n; p++)
		while (atomic_load(&L.p[p].storing) && mono_ms() < until) {
			struct timespec ts = { 0, 2 * 1000 * 1000 };

			nanosleep(&ts, NULL);
		}
}

void clog_stop(void)
{
	work_stop(L.w);
	L.w = NULL;
	for (unsigned p = 0; p < L.n; p++) {
		struct part *pt = &L.p[p];

		while (pt->regs) {
			struct reg *g = pt->regs;

			pt->regs = g->next;
			free(g);
		}
		pthread_mutex_destroy(&pt->mu);
	}
}

void clog_get_stats(struct clog_stats *st)
{
	st->applied = atomic_load(&L.applied);
	st->takeovers = atomic_load(&L.takeovers);
	st->log_bytes = atomic_load(&L.log_bytes);
	st->fenced_turns = atomic_load(&L.fenced_turns);
	st->turns = atomic_load(&L.turns);
	st->refollows = atomic_load(&L.refollows);
	st->local_refused = atomic_load(&L.local_refused);
	st->wait_us = atomic_load(&L.wait_us);
	st->append_us = atomic_load(&L.append_us);
	st->timed_turns = atomic_load(&L.timed_turns);
	st->apply_us = atomic_load(&L.apply_us);
	st->applied_turns = atomic_load(&L.applied_turns);
}
