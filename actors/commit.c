/*
 * commit: the shard's commit pipeline (see commit.h): effects, turn end,
 * commit completion.
 *
 * Invariants (asserted where cheap):
 *   - effects run in the order they were made, on the shard that made
 *     them, once their batch is durable (or failed);
 *   - a channel's events become durable one by one: each FX_EVENT that
 *     runs ok has seq == durable_seq + 1 (unless a failed commit broke the
 *     channel: it reloads once nothing of it is pending).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "actors/chan.h"
#include "actors/cluster.h"
#include "actors/cluster_log.h"
#include "actors/commit.h"
#include "actors/notify.h"
#include "storage/search.h"

enum fx_kind { FX_REPLY, FX_EVENT, FX_POST, FX_BCAST, FX_CMID, FX_OV };

/* One thing to do once a batch is durable. kind says which member of u
 * holds its payload. */
struct effect {
	uint8_t kind;
	struct chan *ch; /* the channel it belongs to; NULL: none */
	union {
		struct {           /* FX_REPLY */
			rt_buf *buf;   /* the encoded answer; NULL: no rid */
			rt_conn_id conn;
			uint64_t rid;
			uint64_t t0_us;  /* posted by the session (latency) */
			uint64_t t_chan; /* taken by the channel actor (stages);
					  * 0: not a channel's request */
			bool has_rid;
			uint8_t op;
		} reply;
		struct {           /* FX_EVENT */
			rt_buf *buf;
			uint64_t seq;
		} event;
		struct {           /* FX_POST */
			rt_msg *msg;
			rt_msg *fail; /* instead, if the commit fails */
			unsigned shard;
		} post;
		struct {           /* FX_BCAST */
			rt_buf *buf;
			char skip[ID_CAP];
		} bcast;
		struct pcmid *cmid; /* FX_CMID */
		struct ov *ov;      /* FX_OV */
	} u;
};

struct commit {
	unsigned shard;
	uint64_t t_handed, t_synced; /* stage stamps */
	struct effect *fx;
	size_t n;
};

static struct effect *fx_add(struct shard_state *ss, uint8_t kind,
			     struct chan *c)
{
	struct effect *e;

	ASSERT_ON_SHARD(ss);
	assert(!c || chan_shard(c->id) == ss->id);
	if (ss->nfx == ss->capfx) {
		ss->capfx = ss->capfx ? ss->capfx * 2 : 64;
		ss->fx = realloc(ss->fx, ss->capfx * sizeof(*ss->fx));
	}
	if (!ss->nfx)
		ss->batch_t0 = rt_mono_us();
	e = &ss->fx[ss->nfx++];
	e->kind = kind;
	e->ch = c;
	if (c)
		c->pending++;
	return e;
}

void fx_reply(struct shard_state *ss, struct chan *c, const struct m_req *r)
{
	struct effect *e = fx_add(ss, FX_REPLY, c);

	e->u.reply.conn = r->conn;
	e->u.reply.rid = r->rid;
	e->u.reply.has_rid = r->has_rid;
	e->u.reply.op = r->op;
	e->u.reply.t0_us = r->t0_us;
	e->u.reply.t_chan = r->t_chan_us;
	e->u.reply.buf = r->has_rid ? rt_buf_new(ss->out.data, ss->out.len)
				    : NULL;
	if (e->u.reply.buf) {
		e->u.reply.buf->kind = BUF_ACK;
		e->u.reply.buf->t_req_us = r->t_rx_us;
	}
}

void fx_event(struct shard_state *ss, struct chan *c, uint64_t seq,
	      rt_buf *buf)
{
	struct effect *e = fx_add(ss, FX_EVENT, c);

	/* seqs strictly +1: this event is the one after the durable ones
	 * and those still on their way (a failed commit breaks the chain
	 * until the channel reloads) */
	assert(seq + 1 == c->next_seq);
	assert(c->broken || seq == c->durable_seq + c->pending_events + 1);
	c->pending_events++;
	e->u.event.seq = seq;
	e->u.event.buf = buf;
}

void fx_post_or(struct shard_state *ss, struct chan *c, unsigned shard,
		rt_msg *msg, rt_msg *fail)
{
	struct effect *e = fx_add(ss, FX_POST, c);

	e->u.post.shard = shard;
	e->u.post.msg = msg;
	e->u.post.fail = fail;
}

void fx_post(struct shard_state *ss, struct chan *c, unsigned shard,
	     rt_msg *msg)
{
	fx_post_or(ss, c, shard, msg, NULL);
}

void fx_bcast(struct shard_state *ss, struct chan *c, rt_buf *buf,
	      const char *skip)
{
	struct effect *e = fx_add(ss, FX_BCAST, c);

	e->u.bcast.buf = buf;
	strcpy(e->u.bcast.skip, skip);
}

void fx_cmid(struct shard_state *ss, struct chan *c, struct pcmid *p)
{
	fx_add(ss, FX_CMID, c)->u.cmid = p;
}

void fx_ov(struct shard_state *ss, struct chan *c, struct ov *o)
{
	fx_add(ss, FX_OV, c)->u.ov = o;
}

void fx_drop_subs(struct shard_state *ss, struct chan *c, const char *user)
{
	for (unsigned s = 0; s < rt_nshards(); s++) {
		struct m_fanout *f = msg_new(sizeof(*f), M_FANOUT);

		strcpy(f->ch, c->id);
		strcpy(f->skip_user, user);
		f->drop = true;
		fx_post(ss, c, s, &f->h);
	}
}

void reply_now(struct shard_state *ss, const struct m_req *r)
{
	if (r->has_rid)
		send_to_conn(r->conn, &ss->out);
}

/* The answer to a request that changes nothing ("already a member", the
 * DM that exists). It reports state; if some of that state is still in a
 * batch on its way to disk, the answer waits behind it (an effect of the
 * next commit), so nothing is acknowledged before it is durable. */
void reply_state(struct shard_state *ss, struct chan *c,
		 const struct m_req *r)
{
	if (c->pending)
		fx_reply(ss, c, r);
	else
		reply_now(ss, r);
}

/* The channel's 'S' record changed: it is written once, at the end of the
 * turn, with the counters as they are then (everything this turn did is in
 * this turn's batch), however many sends and joins the turn held. */
void put_stat(struct shard_state *ss, struct chan *c)
{
	if (c->stat_dirty)
		return;
	c->stat_dirty = true;
	c->dirty_next = ss->chan_dirty;
	ss->chan_dirty = c;
}

static void flush_stats(struct shard_state *ss)
{
	struct chan *c = ss->chan_dirty;

	ss->chan_dirty = NULL;
	for (; c; c = c->dirty_next) {
		store_chstat st = { .last_seq = c->next_seq - 1,
				    .msgs = c->msgs, .members = c->nmembers };

		store_put_chstat(ss->batch, c->id, &st);
		c->stat_dirty = false;
	}
}

static void record_latency(struct shard_state *ss, uint64_t t0)
{
	uint64_t us = rt_mono_us() - t0;
	unsigned b = 0;

	while (b < 15 && us > (64ull << b))
		b++;
	__atomic_fetch_add(&ss->lat_commit[b], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&ss->lat_commit_sum_us, us, __ATOMIC_RELAXED);
}

/* What a failed commit's requests are told: the cluster's log refused
 * the turn (another host owns the channel now: try again), or storage
 * failed. Set by commit_run for the effects it runs. */
static __thread const char *fail_why = "storage failed; not stored";
static __thread uint64_t fail_retry;

static void run_reply(struct shard_state *ss, struct effect *e, bool ok)
{
	if (ok && e->u.reply.buf) {
		e->u.reply.buf->t_post_us = rt_mono_us();
		send_buf_to_conn(e->u.reply.conn, e->u.reply.buf);
		e->u.reply.buf = NULL;
		RT_STAT_ADD(ss->acks, 1);
		record_latency(ss, e->u.reply.t0_us);
	} else if (!ok) {
		struct m_req r = { .conn = e->u.reply.conn,
				   .rid = e->u.reply.rid,
				   .has_rid = e->u.reply.has_rid,
				   .op = e->u.reply.op };

		reply_err_remote(&r, "UNAVAILABLE", fail_why, fail_retry);
	}
	if (e->u.reply.buf)
		rt_buf_unref(e->u.reply.buf);
}

static void run_cmid(struct shard_state *ss, struct chan *c, struct pcmid *p,
		     bool ok)
{
	for (uint32_t i = 0; i < p->nw; i++) {
		struct m_req r = { .conn = p->w[i].conn, .rid = p->w[i].rid,
				   .has_rid = p->w[i].has_rid, .op = OP_SEND };

		if (!ok) {
			reply_err_remote(&r, "UNAVAILABLE", fail_why,
					 fail_retry);
			continue;
		}
		proto_out_reset(&ss->out);
		proto_enc_send_ok(&ss->out, r.rid, p->seq, p->ts, true);
		reply_now(ss, &r);
	}
	smap_del(&c->cmids, p->key, p->klen);
	free(p->w);
	free(p);
}

static void run_effect(struct shard_state *ss, struct effect *e, bool ok)
{
	struct chan *c = e->ch;

	switch (e->kind) {
	case FX_REPLY:
		run_reply(ss, e, ok);
		break;
	case FX_EVENT:
		assert(c->pending_events > 0);
		c->pending_events--;
		if (ok) {
			/* durable one by one, in order */
			assert(c->broken || e->u.event.seq == c->durable_seq + 1);
			assert(e->u.event.seq < c->next_seq);
			c->durable_seq = e->u.event.seq;
			RT_STAT_ADD(ss->events, 1);
			e->u.event.buf->t_post_us = rt_mono_us();
			fanout(c, e->u.event.seq, e->u.event.buf, NULL);
			if (srv.sx)
				search_feed(srv.sx, ss->id, e->u.event.buf->data,
					    e->u.event.buf->len);
			notify_feed(ss->id, c->id, e->u.event.seq,
				    c->nmembers, e->u.event.buf->data,
				    e->u.event.buf->len);
		}
		rt_buf_unref(e->u.event.buf);
		break;
	case FX_POST: {
		rt_msg *go = ok ? e->u.post.msg : e->u.post.fail;
		rt_msg *drop = ok ? e->u.post.fail : e->u.post.msg;

		if (drop)
			msg_free(drop);
		if (go)
			rt_post(e->u.post.shard, go);
		break;
	}
	case FX_BCAST:
		if (ok)
			fanout(c, 0, e->u.bcast.buf, e->u.bcast.skip);
		rt_buf_unref(e->u.bcast.buf);
		break;
	case FX_CMID:
		run_cmid(ss, c, e->u.cmid, ok);
		break;
	case FX_OV: {
		struct ov *o = e->u.ov;

		if (--o->pending == 0) {
			smap_del(&c->ov, o->key, 8);
			ov_free(o);
		}
		break;
	}
	}
	if (c)
		c->pending--;
}

static void commit_done(void *ctx, int status)
{
	struct commit *c = ctx;
	struct m_commit *m = msg_new(sizeof(*m), M_COMMIT);

	/* On storage's sync thread: just hand it back to the shard. */
	c->t_synced = rt_mono_us();
	m->c = c;
	m->status = status;
	rt_post(c->shard, &m->h);
}

/* A cluster's owner: the turn goes to the partition's log, records and
 * what other hosts must repeat; it comes back through the applier
 * (commit_logged) once this host's store has it. */
static void log_turn(struct shard_state *ss, struct commit *c)
{
	struct clog *l = clog_begin(ss, ss->batch);

	for (size_t i = 0; i < c->n; i++) {
		struct effect *e = &c->fx[i];

		switch (e->kind) {
		case FX_EVENT:
			clog_event(l, e->ch->id, e->u.event.seq, e->u.event.buf);
			break;
		case FX_BCAST:
			clog_bcast(l, e->ch->id, e->u.bcast.skip,
				   e->u.bcast.buf);
			break;
		case FX_POST:
			clog_post(l, e->u.post.msg);
			break;
		default:
			break;
		}
	}
	clog_submit(l, c);
}

void commit_turn_end(struct shard_state *ss)
{
	struct commit *c;

	flush_stats(ss);
	if (srv.sx)
		search_feed_flush(srv.sx, ss->id);
	notify_feed_flush(ss->id);
	if (!ss->nfx && !store_batch_count(ss->batch))
		return;
	c = malloc(sizeof(*c));
	c->shard = ss->id;
	c->fx = ss->fx;
	c->n = ss->nfx;
	c->t_handed = rt_mono_us();
	for (size_t i = 0; i < c->n; i++)
		if (c->fx[i].kind == FX_REPLY && c->fx[i].u.reply.t_chan)
			stage_add(ss, ST_TO_COMMIT,
				  c->t_handed - c->fx[i].u.reply.t_chan);
	ss->fx = NULL;
	ss->nfx = ss->capfx = 0;
	ss->commits_inflight++;
	if (clog_owned(ss)) {
		log_turn(ss, c);
		store_batch_free(ss->batch);
	} else if (clog_refuse_local(ss, store_batch_count(ss->batch))) {
		store_batch_free(ss->batch);
		commit_done(c, -ESTALE);
	} else {
		store_commit(srv.st, ss->id, ss->batch, commit_done, c);
	}
	ss->batch = store_batch_new(srv.st);
}

static void commit_run(struct shard_state *ss, struct commit *c, int status)
{
	bool ok = status == 0;
	uint64_t now = rt_mono_us();

	/* M_COMMIT comes back to the shard that made the batch */
	ASSERT_ON_SHARD(ss);
	assert(c->shard == ss->id);
	if (!ok && status != -ESTALE)
		__atomic_store_n(&srv.storage_failed, 1, __ATOMIC_RELAXED);
	if (status == -ESTALE) {
		fail_why = "another host owns this now; not stored";
		fail_retry = 1000;
	}
	for (size_t i = 0; i < c->n; i++) {
		struct chan *ch = c->fx[i].ch;

		if (c->fx[i].kind == FX_REPLY && c->fx[i].u.reply.t_chan) {
			stage_add(ss, ST_WAL_SYNC, c->t_synced - c->t_handed);
			stage_add(ss, ST_AFTER_SYNC, now - c->t_synced);
		}

		/* Whatever a failed batch held (an event, a read marker, a
		 * membership), memory may be ahead of disk for its channel. */
		if (!ok && ch)
			ch->broken = true;
		run_effect(ss, &c->fx[i], ok);
		/* Invariant 4: once nothing of a failed batch is pending,
		 * start again from what storage has. */
		if (ch && ch->broken && !ch->pending)
			chan_reload(ch);
	}
	ss->commits_inflight--;
	fail_why = "storage failed; not stored";
	fail_retry = 0;
	free(c->fx);
	free(c);
}

void commit_on_commit(struct shard_state *ss, struct m_commit *m)
{
	commit_run(ss, m->c, m->status);
}

void commit_logged(struct shard_state *ss, void *commit, int status)
{
	struct commit *c = commit;

	c->t_synced = rt_mono_us();
	commit_run(ss, c, status);
}

bool commit_idle(struct shard_state *ss)
{
	return !ss->commits_inflight && !ss->nfx &&
	       !store_batch_count(ss->batch);
}
