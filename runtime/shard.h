/*
 * The inside of a shard, shared by the runtime's own files (shard.c,
 * mailbox.c, transport.c) and nobody else.
 */
#ifndef PARLEY_SHARD_H
#define PARLEY_SHARD_H

#include <pthread.h>
#include <libwebsockets.h>

#include "runtime/rt.h"

struct rt_conn;

struct rt_shard {
	/* written once before the thread starts */
	unsigned id;
	int listen_fd;
	pthread_t thread;
	const rt_config *cfg;

	/* written only by this shard's thread */
	void *loop;                  /* the shard's libuv loop (uv_loop_t) */
	struct lws_context *ctx;
	struct lws_vhost *vh;
	struct lws *listen_wsi;
	void *user;
	rt_msg *ovf_head[RT_MAX_SHARDS]; /* messages this shard could not post */
	rt_msg *ovf_tail[RT_MAX_SHARDS];
	bool has_overflow;
	struct rt_conn **slots;      /* connection table, index = slot */
	uint32_t nslots, cap_slots;
	uint32_t *free_slots;        /* stack of free slot indexes */
	uint32_t nfree;
	uint32_t gen;
	uint8_t *wbuf;               /* coalescing write buffer (cap bytes) */
	struct rt_ring *ring;        /* io_uring for the turn's writes, or NULL */
	uint8_t *rbuf;               /* socket reads of WebSocket connections */
	struct rt_conn *watch;       /* connections the tick checks */
	size_t wbuf_cap;
	rt_conn_id *dirty;           /* connections with output queued this turn */
	uint32_t ndirty, cap_dirty;
	uint32_t http_pending; /* HTTP exchanges waiting for an answer */
	lws_sorted_usec_list_t tick_sul;
	void *timer;                      /* rt_timer_in's uv_timer_t */
	uint64_t timer_at_us;             /* its deadline (mono), 0: none */
	bool draining, drain_first, stopping;
	uint64_t drain_deadline_ms;

	/* rt_mono_us() at this shard's latest tick (every tick_ms while its
	 * loop turns): written relaxed by this thread, read by
	 * rt_shard_last_turn_us() (the watchdog) */
	uint64_t turn_us;

	/* counters, written by this thread (RT_STAT_ADD), read relaxed by
	 * /metrics */
	uint64_t conns_open, conns_total, frames_in, frames_out, bytes_out,
		writes, closed_slow, closed_too_large, mailbox_msgs,
		tls_ok, tls_failed, ring_sends, ring_submits, ring_short,
		writes_short;
};

extern struct rt_shard *rt__shards;
extern unsigned rt__nshards;
extern volatile int rt__drain_requested;

/* the current TLS context with a reference for the caller, or NULL */
struct ssl_ctx_st *rt__tls_ctx(void);

/* tests: make this thread act as shard s (mailbox tests) */
void rt__set_self(struct rt_shard *s);
int rt__transport_init(struct rt_shard *s);
void rt__transport_fini(struct rt_shard *s);
void rt__transport_drain(struct rt_shard *s, bool force);
uint32_t rt__transport_count(struct rt_shard *s);
/* every tick: handshake and close deadlines, stalled writers, pending
 * HTTP answers that time out */
void rt__transport_tick(struct rt_shard *s);
/* End of a loop turn: write what this turn queued, one write per connection. */
void rt__transport_flush(struct rt_shard *s);
/* Wake-ups producers paid for to shard's mailbox (counted there: the
 * producers write that line anyway). */
uint64_t rt__mailbox_wakeups(unsigned shard);

#endif
