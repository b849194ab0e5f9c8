/*
 * cluster: parleyd's side of a cluster of hosts (docs/cluster.md). With
 * --cluster, the host opens the bus (cluster/bus.h), holds its host lease
 * (cluster/hosts.h) and takes part in three things:
 *
 *   - ownership: each shard index is a partition of the keys (channels,
 *     users, names, directories hash to it as to a shard), owned by one
 *     host at a time (a record in the bucket parley_keys). The owner's
 *     actors check, number and log every write of the partition; the other
 *     hosts forward their clients' writes to it (cluster_forward) and get
 *     the answers back through proxy connection ids (cluster_deliver).
 *   - the log (cluster_log.c): an owned shard's turn (its batch's records
 *     and the effects other hosts must repeat) is one message on the
 *     partition's subject, appended fenced; no host writes it to RocksDB
 *     directly: every host's applier, the owner's included, stores the
 *     log's messages in order, and then runs the owner's effects (on the
 *     owner) or delivers the events to its own clients (elsewhere).
 *   - takeover: a partition whose owner's host lease expired is claimed
 *     by the preferred live host, which lets its applier reach the log's
 *     end, fences the log, reloads the partition's actors from its store
 *     and goes on numbering after the log's last event.
 *
 * Without --cluster none of it runs: cluster_on is false and every
 * function below is a no-op or says "owned".
 *
 * Threads: cluster_start/cluster_run/cluster_quiesce/cluster_stop from
 * main; the rest from shards unless said otherwise.
 */
#ifndef PARLEY_CLUSTER_GLUE_H
#define PARLEY_CLUSTER_GLUE_H

#include <stdbool.h>
#include <stdint.h>

#include "actors/cluster_core.h"
#include "runtime/rt.h"

struct cluster_opts {
	const char *urls;    /* NULL: a single host */
	const char *host_id; /* default: the host name */
	int64_t lease_ms;    /* host lease: a dead host's keys move after it */
	bool new_log;        /* --cluster-new-log: an empty log starts again */
};

struct cluster_stats {
	bool on;             /* --cluster given */
	unsigned hosts_live; /* hosts holding a lease, this one included */
	bool lease_ok;       /* this host's lease renewed in time */
	unsigned nparts, owned; /* partitions (shards), of them this host's */
	uint8_t owned_map[RT_MAX_SHARDS];
	uint64_t appends, fenced, retries, reconnects, disconnects;
	uint64_t renew_failed, lease_lost;
	uint64_t forwarded;  /* writes sent on to their owner */
	uint64_t served;     /* writes taken from other hosts */
	uint64_t applied;    /* log messages stored by this host's applier */
	uint64_t held;       /* answers held until their write was applied */
	uint64_t takeovers;  /* partitions this host claimed and fenced */
	uint64_t unavailable; /* writes answered UNAVAILABLE: no owner */
	uint64_t log_bytes;  /* bytes appended to the log */
	uint64_t turns;      /* owned shards' turns logged (several a message) */
	uint64_t failed_turns; /* turns the log refused (fenced, too big) */
	uint64_t refollows;  /* followers of the log made again (stuck) */
	uint64_t local_refused; /* writes outside the log refused */
	uint64_t wait_us, append_us, timed_turns; /* our turns' log stages */
	uint64_t apply_us, applied_turns;
};

/* Joins the cluster (BLOCKING: up to the bus deadline), before the shards
 * start. nshards: this host's shards = the cluster's partitions. 0 (also
 * with no urls: nothing to do), or -1 with a message logged. */
int cluster_start(const struct cluster_opts *o, unsigned nshards);
/* Once the shards run: the appliers, the inbox, the ownership thread. */
int cluster_run(void);
/* Before the shards drain: no new work from other hosts or the log. */
void cluster_quiesce(void);
/* After the shards are joined: releases the host lease, closes the bus. */
void cluster_stop(void);
void cluster_get_stats(struct cluster_stats *st);

/* Presence across hosts (cluster_presence.c): this host's level of a user
 * (0 no device here, 1 devices all silent, 2 one active) changed; the
 * highest level the other hosts report now; the status a user chose. */
void cluster_presence_local(const char *ws, const char *user, uint8_t level);
uint8_t cluster_presence_remote(const char *ws, const char *user);
void cluster_presence_chosen(const char *ws, const char *user, uint8_t chosen);

#endif
