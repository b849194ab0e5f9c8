/*
 * cluster_core: what the actors call of a cluster (docs/cluster.md), below
 * every other part of it. Without --cluster, cluster_on is false, every
 * partition is "owned" and nothing here is called.
 *
 * Threads: from shards unless said otherwise; the state is under a mutex
 * or atomic.
 */
#ifndef PARLEY_CLUSTER_CORE_H
#define PARLEY_CLUSTER_CORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "actors/base.h"
#include "cluster/bus.h"

struct rbuf;

/* one-way messages between hosts: their first byte */
enum { CLUSTER_MSG_REQ = 1, CLUSTER_MSG_DELIVER, CLUSTER_MSG_TYPING,
       CLUSTER_MSG_DIRNAME, CLUSTER_MSG_PRESENCE, CLUSTER_MSG_PCHOSEN,
       CLUSTER_MSG_APPLIED, CLUSTER_MSG_DIRSEEN, CLUSTER_MSG_JOIN,
       CLUSTER_MSG_LEAVE, CLUSTER_MSG_FOFFER, CLUSTER_MSG_FGET,
       CLUSTER_MSG_FGONE };

/* true once this host joined a cluster: set before the shards start */
extern bool cluster_on;

/* May this host write partition (shard) p now? true without a cluster. */
bool cluster_owns(unsigned p);

/* A write (the session's decoded request, its frame and the channel id
 * the session chose) for partition p, which this host does not own: sent
 * to the owner, or answered UNAVAILABLE. If the owner changes before it
 * answers, the request is answered UNAVAILABLE (core_pending_sweep). */
void cluster_forward(unsigned p, rt_conn_id conn, bool has_rid, uint64_t rid,
		     uint8_t op, const char *ws, const char *user, bool admin,
		     const char *ch, const uint8_t *frame, size_t len);

/* Connection ids whose shard byte no shard has stand for a connection on
 * another host (a forwarded request's). */
static inline bool cluster_is_proxy(rt_conn_id id)
{
	return rt_conn_shard(id) >= RT_MAX_SHARDS;
}

/* Sends b (its reference is taken) to a proxy id's connection on another
 * host (base.c's proxy hook). Any thread. */
void cluster_deliver(rt_conn_id proxy, rt_buf *b);

/* A hello's display name for the directory of ws, kept by the host that
 * owns the directory's partition p; then is posted to then_shard once
 * that host has it (or after DIR_WAIT_MS without an answer). Any
 * thread. */
void cluster_dir_hello(unsigned p, const char *ws, const char *user,
		       const char *name, unsigned then_shard, rt_msg *then);

/* A user's last seen (a device came or went here) for the directory of ws
 * on its owner host. Any thread. */
void cluster_dir_seen(unsigned p, const char *ws, const char *user,
		      uint64_t seen_ms);

/* A typing frame (not stored) for the subscribers of ch on other hosts. */
void cluster_ephemeral(const char *ch, const rt_buf *b, const char *skip);

/* Channel ch (of shard ss) changed members, owners or settings in this
 * turn: the other hosts reload it. Shard ss's thread. */
void cluster_chan_changed(struct shard_state *ss, const char *ch);

/* To every host, this one too. Any thread. */
void cluster_broadcast(const void *data, size_t len);

/* This host's id; a proxy id's host and connection there. Any thread. */
void cluster_self(char out[BUS_HOST_MAX + 1]);
rt_conn_id cluster_proxy_origin(rt_conn_id proxy, char host[BUS_HOST_MAX + 1]);

/* ---- files (cluster_files.c): their bytes between hosts ------------------- */

/* the most bytes in one FGET answer: under NATS's default max_payload of
 * 1 MiB, whatever the NATS cluster's settings */
#define FILE_CHUNK (512 * 1024)

struct cluster_file {
	const char *ws, *user, *name, *type, *sha;
	uint64_t size;
};

/* BLOCKING (a worker thread). Writes the whole of a file's bytes (thumb:
 * its preview image) from the host from, or (from NULL) from partition
 * p's owner, else from any live host, into fd (truncated first). The
 * bytes' SHA-256 is checked. Gives up (-EIO) between two chunks once
 * *cancel (if not NULL) is true. 0, -ENOENT (no host has them), -EIO. */
int cluster_file_pull(const char *from, unsigned p, const char *sha,
		      bool thumb, int fd, const _Atomic bool *cancel);
/* Not blocking. An upload whose bytes are stored here, for partition p's
 * owner to store and record (it pulls the bytes from this host). done is
 * called once, on a library thread, with the upload's HTTP answer: the
 * owner's, or 503 when it cannot be reached. */
void cluster_file_offer(unsigned p, const struct cluster_file *f,
			void (*done)(void *arg, int status, const char *body),
			void *arg);
/* The owner's answer to an offer (any thread; once per token). */
void cluster_file_answer(bus_reply_token *tok, int status, const char *body);
/* The owner removed the last record of these bytes: to every host. */
void cluster_file_gone(const char *sha);

/* ---- for cluster.c, cluster_log.c and cluster_presence.c ----------------- */

void core_init(bus *b, const char *self, unsigned nparts);
void core_fini(void);
bus *core_bus(void);
unsigned core_parts(void);
/* the proxy id for host's connection conn (0: no room for more hosts) */
rt_conn_id core_proxy(const char *host, rt_conn_id conn);
/* partition p: owned here (returns the old value), the log position of
 * its last append (owner), how far this host's store has its log */
bool core_set_owned(unsigned p, bool on);
void core_set_logpos(unsigned p, uint64_t sseq);
uint64_t core_applied(unsigned p);
void core_set_applied(unsigned p, uint64_t sseq);
/* who owns p, as the ownership thread last saw ("" none) */
void core_owner_set(unsigned p, const char *who);
void core_owner_get(unsigned p, char out[BUS_HOST_MAX + 1]);
/* the channels shard p's turn changed (cluster_chan_changed), and forget
 * them: the turn's log message takes them. Shard p's thread. */
uint32_t core_changed(unsigned p, const char (**v)[ID_CAP]);
/* a DELIVER message's body: held until its write is stored here */
void core_on_deliver(struct rbuf *r);
/* answers held until this host stored their writes, now allowed */
void cluster_release_held(void);
/* UNAVAILABLE (retry) to conn, a local or a proxy id. Any thread. */
void core_unavailable(rt_conn_id conn, bool has_rid, uint64_t rid,
		      uint8_t op, const char *why);
/* forwarded requests whose owner changed (all: every one, the bus
 * reconnected and may have lost them or their answers): UNAVAILABLE */
void core_pending_sweep(bool all);
void core_counters(uint64_t *forwarded, uint64_t *held, uint64_t *unavailable);
/* the live hosts as the ownership thread last listed them (this one
 * included): set, and copied out (returns how many; at most max) */
void core_set_live(char ids[][BUS_HOST_MAX + 1], unsigned n);
unsigned core_live(char ids[][BUS_HOST_MAX + 1], unsigned max);

#endif
