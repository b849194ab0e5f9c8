/*
 * commit: the shard's commit pipeline. Everything a request changes goes
 * into the shard's batch for this loop turn (ss->batch); everything that
 * must wait until that is durable (an answer, an event's fan-out, a
 * message to another actor) is an effect, queued in order with the
 * constructors below. At turn end the batch and its effects go to
 * storage's sync thread as one commit; M_COMMIT brings them back to this
 * shard, which runs the effects in order (or, if the commit failed, answers
 * UNAVAILABLE and reloads the channels concerned).
 *
 * Used by the channel actor (chan_*.c, channel.c) and by presence.c; it
 * calls only base.c and chan_load.c (chan_reload). All of it runs on the
 * shard that owns ss.
 */
#ifndef PARLEY_COMMIT_H
#define PARLEY_COMMIT_H

#include "actors/actors.h"

struct chan;
struct pcmid;
struct ov;

/* The ok answer in ss->out for r, sent once this turn's batch is durable
 * (nothing if r has no rid). Encode it first, then call this. c: the
 * channel the request is for, NULL for a request outside any channel
 * (presence.set). The request's stage stamps come with r. */
void fx_reply(struct shard_state *ss, struct chan *c, const struct m_req *r);
/* Event seq of c, encoded in buf (the reference is taken): durable_seq
 * moves to seq and the event is fanned out, once durable. */
void fx_event(struct shard_state *ss, struct chan *c, uint64_t seq,
	      rt_buf *buf);
/* Post msg to shard once durable (freed if the commit fails). */
void fx_post(struct shard_state *ss, struct chan *c, unsigned shard,
	     rt_msg *msg);
/* The same, and fail (if not NULL) is posted instead when the commit
 * fails (an answer that must come either way); the other one is freed. */
void fx_post_or(struct shard_state *ss, struct chan *c, unsigned shard,
		rt_msg *msg, rt_msg *fail);
/* A frame (not an event: no seq) for everyone online in c except the
 * devices of skip, once durable. Takes buf's reference. */
void fx_bcast(struct shard_state *ss, struct chan *c, rt_buf *buf,
	      const char *skip);
/* The pending cmid p of c is durable: answer its waiters, forget it. */
void fx_cmid(struct shard_state *ss, struct chan *c, struct pcmid *p);
/* One batch that wrote overlay o is durable (o goes with the last). */
void fx_ov(struct shard_state *ss, struct chan *c, struct ov *o);

/* The answer in ss->out for r, now, from this shard to r's connection. */
void reply_now(struct shard_state *ss, const struct m_req *r);
/* The answer to a request that changes nothing: now, or after c's
 * effects still pending if it has some (it reports their state). */
void reply_state(struct shard_state *ss, struct chan *c,
		 const struct m_req *r);

/* After the commit: every shard drops user's subscriptions to c at once,
 * by the same road (and so ahead of) the channel's later events. A leave
 * or kick also tells the user's devices through its user actor (two hops);
 * without this an event committed just after it could overtake that. */
void fx_drop_subs(struct shard_state *ss, struct chan *c, const char *user);

/* c's 'S' record (counters) is written once at turn end. */
void put_stat(struct shard_state *ss, struct chan *c);

/* The dispatcher's ends: turn end (hand the batch over), M_COMMIT (run
 * the effects), and whether anything is still in flight (drain). */
void commit_turn_end(struct shard_state *ss);
void commit_on_commit(struct shard_state *ss, struct m_commit *m);
bool commit_idle(struct shard_state *ss);

#endif
