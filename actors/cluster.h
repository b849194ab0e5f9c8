/*
 * cluster: parleyd's side of a cluster of hosts (docs/cluster.md). With
 * --cluster, the host opens the bus (cluster/bus.h) and holds its host
 * lease (cluster/hosts.h) for as long as it runs. Steps 2-4 of
 * docs/cluster.md (ownership of channels, the log in the commit path,
 * fan-out between hosts) are not built: until they are, hosts in a cluster
 * do not share channels.
 */
#ifndef PARLEY_CLUSTER_GLUE_H
#define PARLEY_CLUSTER_GLUE_H

#include <stdbool.h>
#include <stdint.h>

struct cluster_opts {
	const char *urls;    /* NULL: a single host */
	const char *host_id; /* default: the host name */
	int64_t lease_ms;    /* host (and, later, ownership) lease */
};

struct cluster_stats {
	bool on;             /* --cluster given */
	unsigned hosts_live; /* hosts holding a lease, this one included */
	bool lease_ok;       /* this host's lease renewed in time */
	uint64_t appends, fenced, retries, reconnects, disconnects;
	uint64_t renew_failed, lease_lost;
};

/* Joins the cluster (BLOCKING: up to the bus deadline). 0 (also with no
 * urls: nothing to do), or -1 with a message logged. */
int cluster_start(const struct cluster_opts *o);
/* Leaves it: releases the host lease, closes the bus. */
void cluster_stop(void);
void cluster_get_stats(struct cluster_stats *st);

#endif
