/*
 * cluster/hosts: which parleyd hosts are alive, and which of them a key
 * belongs to by preference.
 *
 * Each host holds the lease "host:<id>" on the bus (cluster/bus.h) and
 * renews it every third of the lease from a thread of its own; the live
 * hosts are the holders of such leases, listed again at every renewal. A
 * host that dies stops renewing and drops out of every list once its
 * lease expires (lease_ms after its last renewal, on the NATS server's
 * clock); one that stops cleanly releases it at once.
 *
 * The preferred host of a key is the live host with the highest
 * rendezvous (highest random weight) hash of (key, host id): every host
 * that sees the same live set picks the same one, keys spread evenly, and
 * the death of a host moves only the keys it was preferred for.
 *
 * Threads: hosts_start and hosts_stop from the thread that owns the
 * hosts; everything else from any thread (a mutex guards the list).
 */
#ifndef PARLEY_CLUSTER_HOSTS_H
#define PARLEY_CLUSTER_HOSTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/bus.h"

#define HOSTS_MAX 64

typedef struct hosts hosts;

/* Takes this host's lease (BLOCKING, up to the bus deadline) and starts the
 * renewing thread. 0, or -1 with err (the bus is unavailable). Host ids
 * must be unique: a second live process under the same id is taken for
 * this host's earlier life (a restart) and gets the lease too. */
int hosts_start(hosts **out, bus *b, const char *id, int64_t lease_ms,
		char *err, size_t cap);

/* Stops renewing and releases the lease (BLOCKING, up to the bus
 * deadline). NULL is a no-op. */
void hosts_stop(hosts *h);

/* The live hosts as of the last listing, sorted, ids copied into ids
 * (max of them); returns how many there are (may exceed max). */
unsigned hosts_live(hosts *h, char ids[][BUS_HOST_MAX + 1], unsigned max);

/* Counts id live from now (it says it has just taken its lease), for a
 * lease at least, whatever a listing says meanwhile. */
void hosts_add(hosts *h, const char *id);

/* Whether this host's own lease was renewed (or taken) less than
 * lease_ms - lease_ms / 4 ago by its monotonic clock: while it is not, the
 * host must not act as an owner. */
bool hosts_lease_ok(hosts *h);

/* The preferred live host of key into out (BUS_HOST_MAX + 1 bytes);
 * false when no host is live (not even this one). */
bool hosts_preferred(hosts *h, const char *key, char *out);

/* Renewals that failed (unavailable) and leases lost, for /metrics. */
void hosts_counters(hosts *h, uint64_t *renew_failed, uint64_t *lost);

#endif
