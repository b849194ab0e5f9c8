/*
 * notify: notifications for users who are not there (PROTOCOL.md), and the
 * user's records they depend on (pushers.c).
 *
 * The notifier is a thread of its own, fed from the commit path the way
 * the search index is: a shard copies each durable event of a channel with
 * other members into its own list and hands the list over at the end of
 * its loop turn (no lock, no syscall, nothing on the ack path waits). The
 * thread waits --push-delay-ms per event, decides who gets a notification
 * (asking the users' shards which of them have an active device), keeps
 * what it decided in DATA/push/queue.db and POSTs it to --push-url with
 * libcurl until the gateway takes it. See docs/architecture.md,
 * "Notifications".
 */
#ifndef PARLEY_NOTIFY_H
#define PARLEY_NOTIFY_H

#include "actors/base.h"

struct notify_cfg {
	const char *url;         /* NULL: no notifier */
	const char *secret_file; /* NULL: no signature */
	const char *data_dir;
	uint64_t delay_ms, timeout_ms, give_up_ms, backoff_ms;
	unsigned inflight;       /* POSTs at once */
	bool id_only;            /* --push-content id-only */
};

/* Main thread, after storage is open and before the shards run. 0, or -1
 * with *err (malloc'd). Without cfg->url it does nothing. */
int notify_start(const struct notify_cfg *cfg, char **err);
/* Main thread, once the shards run: the thread starts. 0 or -1. */
int notify_run(void);
/* Main thread, when SIGTERM came (the shards still run, so a decision in
 * flight is finished): what is decided stays on disk. */
void notify_stop(void);
bool notify_running(void);

/* Shard thread: event seq of ch (its frame, as sent) is durable; members:
 * the channel's member count (an event with nobody else to tell is not
 * handed over). */
void notify_feed(unsigned shard, const char *ch, uint64_t seq,
		 uint64_t members, const void *ev, size_t len);
/* Shard thread, end of its loop turn: hand the turn's events over. */
void notify_feed_flush(unsigned shard);

/* ---- notify_feed.c: what the notifier takes (notifier thread) ---------- */

struct fitem { /* one event */
	struct fitem *next;
	uint64_t seq;
	uint32_t len;      /* 0: nobody else to tell, only the position */
	char ch[ID_CAP];
	uint8_t ev[];
};
struct fchunk { /* one shard's turn */
	struct fchunk *next;
	struct fitem *head;
	size_t bytes;
};
void notify_feed_enable(void); /* before the shards run */
/* Everything handed over so far, oldest turn first; each chunk goes back
 * with notify_feed_done once its items are freed. */
struct fchunk *notify_feed_take(void);
void notify_feed_done(struct fchunk *c);
/* Events were dropped (a cap was reached): catch up from the log. */
void notify_feed_lost_set(void);
bool notify_feed_lost(void);
void notify_feed_lost_take(void);

/* /metrics (any thread). */
struct notify_stats {
	uint64_t sent, retried, dropped, rejected, pending, waiting;
	uint64_t posts_ok, posts_error, posts_timeout;
	uint64_t delay_hist[12]; /* le: NOTIFY_DELAY_BOUNDS, then +Inf */
	double delay_sum_s;
	uint64_t delay_count;
};
#define NOTIFY_DELAY_NB 11
extern const double notify_delay_bounds[NOTIFY_DELAY_NB];
void notify_get_stats(struct notify_stats *out);

/* ---- pushers.c: the user's records, on the user's shard ------------------ */

bool pushers_is_op(int op); /* push.*, notify.* */
void pushers_on_req(struct shard_state *ss, struct m_req *m);
/* Any thread: the gateway rejected these pushkeys of (ws, user): remove
 * the user's pushers that have them. */
void pushers_reject(const char *ws, const char *user, const char *const *keys,
		    uint32_t n);

#endif
