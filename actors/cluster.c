/*
 * cluster: see cluster.h.
 */
#include "actors/cluster.h"

#include <nats/nats.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cluster/bus.h"
#include "cluster/hosts.h"
#include "runtime/log.h"

static bus *cl_bus;
static hosts *cl_hosts;

int cluster_start(const struct cluster_opts *o)
{
	char id[BUS_HOST_MAX + 1], err[256];
	bus_cfg cfg = { 0 };

	if (!o->urls)
		return 0;
	if (o->host_id) {
		snprintf(id, sizeof(id), "%s", o->host_id);
	} else if (gethostname(id, sizeof(id))) {
		plog(PL_ERROR, "cluster", "no --host-id and no host name");
		return -1;
	}
	cfg.urls = o->urls;
	cfg.host_id = id;
	cfg.replicas = 3;
	cfg.lease_ms = o->lease_ms;
	if (bus_open(&cl_bus, &cfg, err, sizeof(err)) != BUS_OK) {
		plog(PL_ERROR, "cluster", "%s: %s", o->urls, err);
		return -1;
	}
	if (hosts_start(&cl_hosts, cl_bus, id, o->lease_ms, err,
			sizeof(err))) {
		plog(PL_ERROR, "cluster", "%s", err);
		bus_close(cl_bus);
		cl_bus = NULL;
		return -1;
	}
	plog(PL_INFO, "cluster", "joined as %s (%s); channels are not shared "
	     "between hosts yet (docs/cluster.md)", id, o->urls);
	return 0;
}

void cluster_stop(void)
{
	if (!cl_bus)
		return;
	hosts_stop(cl_hosts);
	bus_close(cl_bus);
	cl_hosts = NULL;
	cl_bus = NULL;
	nats_CloseAndWait(10000);
}

void cluster_get_stats(struct cluster_stats *st)
{
	bus_metrics m;

	memset(st, 0, sizeof(*st));
	if (!cl_bus)
		return;
	st->on = true;
	st->hosts_live = hosts_live(cl_hosts, NULL, 0);
	st->lease_ok = hosts_lease_ok(cl_hosts);
	bus_get_metrics(cl_bus, &m);
	st->appends = m.appends;
	st->fenced = m.fenced;
	st->retries = m.retries;
	st->reconnects = m.reconnects;
	st->disconnects = m.disconnects;
	hosts_counters(cl_hosts, &st->renew_failed, &st->lease_lost);
}
