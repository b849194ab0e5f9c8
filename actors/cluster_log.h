/*
 * cluster_log: a partition's log (docs/cluster.md, "The write path").
 * Internal to actors/: commit.c hands an owned shard's turn to it, and the
 * channel actors say which channels changed more than their events show.
 *
 * A log message is one owned shard's turn: the records of its batch, as
 * storage encodes them, and what every other host must do once they are
 * stored (deliver events and member frames to its own clients, drop
 * subscriptions, tell a user's devices of a membership, reload a
 * channel's members). Every host stores every message through its
 * applier, the owner too; on the owner the turn's own effects (answers,
 * fan-out, notifications) then run as a local commit's would.
 */
#ifndef PARLEY_CLUSTER_LOG_H
#define PARLEY_CLUSTER_LOG_H

#include "actors/actors.h"
#include "cluster/bus.h"

struct clog;

/* Does shard ss's turn go to the log (a cluster, and this host owns the
 * partition)? On the shard's thread. */
bool clog_owned(const struct shard_state *ss);
/* A cluster, and ss's partition is not ours (another host's, or nobody's
 * yet): its turn's nrec records must not be stored here outside the log,
 * or this store would differ from every other. true: refused (counted,
 * logged now and then); its requests are answered UNAVAILABLE. */
bool clog_refuse_local(const struct shard_state *ss, size_t nrec);
/* This turn's log message, with b's records (copied). */
struct clog *clog_begin(struct shard_state *ss, const store_batch *b);
void clog_event(struct clog *l, const char *ch, uint64_t seq, const rt_buf *b);
void clog_bcast(struct clog *l, const char *ch, const char *skip,
		const rt_buf *b);
/* An effect that posts m: kept if other hosts must do it too (a dropped
 * subscription, a user's membership news); ignored otherwise. */
void clog_post(struct clog *l, const rt_msg *m);
/* Appends it (on a worker, in order with the partition's other appends).
 * Once the applier has stored it, commit_logged(ss, commit, 0) runs on
 * this shard; if it cannot be appended, commit_logged(ss, commit,
 * -ESTALE). Takes l. */
void clog_submit(struct clog *l, void *commit);
/* cluster.c's side. What the log calls back above it (so that nothing
 * here calls commit.c, which calls this): a turn's end (before a shard
 * becomes owner or stops being one), and a logged commit's return. */
struct clog_hooks {
	void (*turn_end)(struct shard_state *ss);
	void (*logged)(struct shard_state *ss, void *commit, int status);
};
/* BLOCKING. -1 if this store is ahead of the log (it lost messages),
 * unless new_log and the log is empty: positions start again from 0. */
int clog_start(bus *b, unsigned nshards, const char *writer,
	       const struct clog_hooks *hk, bool new_log);
/* the followers, from where this store has the log (once shards run) */
int clog_follow(void);
/* Another host has stored partition p's log up to sseq (its report). */
void clog_on_report(const char *host, unsigned p, uint64_t sseq);
/* host has just joined (its JOIN): waited for from now, AWAIT_MS from now
 * before it may be left out again. */
void clog_host_joined(const char *host);
/* host is draining (its LEAVE): it stores no more of our turns; they do
 * not wait for it until it joins again. */
void clog_host_left(const char *host);
/* Shard ss's tick: our turns waiting for slow hosts (AWAIT_MS). */
void clog_tick(struct shard_state *ss);
/* The ownership thread, every round: a follower behind the log's end
 * without moving for FOLLOW_STALL_MS is made again. */
void clog_watch(uint64_t now_ms);
/* draining: other hosts' messages wait for the next start */
void clog_drain(void);
/* may shard p stop? (no message of the log half-applied) */
bool clog_idle(unsigned p);
/* after the shards stopped */
void clog_stop_follow(void);
void clog_stop(void);
/* BLOCKING, on the ownership thread: takes over partition p (the record
 * is ours already): reach the log's end, fence it, reload the shard. 0,
 * or -1 (try again later). */
int clog_takeover(unsigned p);
/* Partition p is not ours any more (the record names another host). */
void clog_lost(unsigned p);

struct clog_stats {
	uint64_t applied, takeovers, log_bytes, fenced_turns, turns, refollows;
	uint64_t local_refused;
	/* our turns: waiting for the append in flight, the append, and from
	 * its acknowledgement to this host's synced write (us sums) */
	uint64_t wait_us, append_us, timed_turns, apply_us, applied_turns;
};
void clog_get_stats(struct clog_stats *st);

/* cluster_presence.c's side */
void cluster_presence_on_msg(const uint8_t *p, const uint8_t *end);
void cluster_presence_on_chosen(const uint8_t *p, const uint8_t *end);
void cluster_presence_refresh(void);
void cluster_presence_sweep(void);
void cluster_presence_free(void);
/* presence.c's presence_on_remote, given by cluster.c (the presence
 * module calls this one) */
void cluster_presence_hook(void (*fn)(struct shard_state *ss, const char *ws,
				      const char *user, int chosen));

/* commit.c: a logged commit came back (stored by the applier, or not) */
void commit_logged(struct shard_state *ss, void *commit, int status);

#endif
