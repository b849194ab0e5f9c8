/*
 * http: the plain-HTTP side of the port. Called by the transport for every
 * request that is not a WebSocket upgrade, on the shard that accepted it.
 *   GET /healthz  200 "ok" while storage writes succeed, else 503
 *   GET /metrics  Prometheus text: transport, actors, storage, mailboxes,
 *                 and parley_stage_seconds: where a request's time goes
 *   /api/v1/files...  uploads (streamed: see server.c) and downloads
 *                 (files.c)
 *   /api/...      REST (rest.c)
 *   GET|HEAD /, /PATH  the browser client's files (webfiles.c)
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/actors.h"
#include "actors/files.h"
#include "actors/rest.h"
#include "actors/web.h"
#include "runtime/log.h"

struct sbuf {
	char *p;
	size_t n, cap;
};

static void put(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int need;

	for (;;) {
		va_start(ap, fmt);
		need = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
		va_end(ap);
		if (need >= 0 && (size_t)need < b->cap - b->n)
			break;
		b->cap = b->cap * 2 + (size_t)need + 1;
		b->p = realloc(b->p, b->cap);
	}
	b->n += (size_t)need;
}

static void counter(struct sbuf *b, const char *name, const char *help,
		    uint64_t v)
{
	put(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name,
	    name, (unsigned long long)v);
}

static void gauge(struct sbuf *b, const char *name, const char *help,
		  uint64_t v)
{
	put(b, "# HELP %s %s\n# TYPE %s gauge\n%s %llu\n", name, help, name,
	    name, (unsigned long long)v);
}

/* A log2 histogram: bucket i counts values <= base << i (last: the
 * rest); sum is the total of the values, in the same unit as base. */
static void histogram(struct sbuf *b, const char *name, const char *help,
		      const uint64_t *h, unsigned n, double base, double scale,
		      uint64_t sum)
{
	uint64_t cum = 0;

	put(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (unsigned i = 0; i < n; i++) {
		cum += h[i];
		if (i + 1 < n)
			put(b, "%s_bucket{le=\"%.9g\"} %llu\n", name,
			    base * (double)(1u << i) * scale,
			    (unsigned long long)cum);
	}
	put(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n",
	    name, (unsigned long long)cum, name, (double)sum * scale, name,
	    (unsigned long long)cum);
}

/* parley_stage_seconds{stage=...}: the shards' stage histograms summed. */
static void stages(struct sbuf *b)
{
	put(b, "# HELP parley_stage_seconds Time between the hand-overs of a "
	       "request that commits (see docs/architecture.md)\n"
	       "# TYPE parley_stage_seconds histogram\n");
	for (unsigned st = 0; st < ST__COUNT; st++) {
		uint64_t h[ST_NB + 1] = { 0 }, sum = 0, cum = 0;

		for (unsigned i = 0; i < rt_nshards(); i++) {
			struct shard_state *s = shard_state_of(i);

			if (!s)
				continue;
			for (unsigned j = 0; j <= ST_NB; j++)
				h[j] += __atomic_load_n(&s->st_hist[st][j],
							__ATOMIC_RELAXED);
			sum += __atomic_load_n(&s->st_sum_us[st],
					       __ATOMIC_RELAXED);
		}
		for (unsigned j = 0; j < ST_NB; j++) {
			cum += h[j];
			put(b, "parley_stage_seconds_bucket{stage=\"%s\",le=\"%.9g\"} %llu\n",
			    stage_names[st], stage_bound_us(j) * 1e-6,
			    (unsigned long long)cum);
		}
		cum += h[ST_NB];
		put(b, "parley_stage_seconds_bucket{stage=\"%s\",le=\"+Inf\"} %llu\n"
		       "parley_stage_seconds_sum{stage=\"%s\"} %.6f\n"
		       "parley_stage_seconds_count{stage=\"%s\"} %llu\n",
		    stage_names[st], (unsigned long long)cum, stage_names[st],
		    (double)sum * 1e-6, stage_names[st], (unsigned long long)cum);
	}
}

/* The notifier's (zero without --push-url). */
static void push_metrics(struct sbuf *b)
{
	struct notify_stats n;
	uint64_t cum = 0;

	notify_get_stats(&n);
	counter(b, "parley_push_sent_total", "Notifications the gateway accepted", n.sent);
	counter(b, "parley_push_retried_total", "Notifications put back for a retry after a failed POST", n.retried);
	counter(b, "parley_push_dropped_total", "Notifications given up after --push-give-up-ms", n.dropped);
	counter(b, "parley_push_rejected_total", "Pushers removed because the gateway rejected their pushkey", n.rejected);
	gauge(b, "parley_push_pending", "Notifications decided, not yet accepted by the gateway", n.pending);
	gauge(b, "parley_push_waiting", "Messages waiting for --push-delay-ms before the decision", n.waiting);
	put(b, "# HELP parley_push_posts_total POSTs to the gateway by outcome\n"
	       "# TYPE parley_push_posts_total counter\n"
	       "parley_push_posts_total{result=\"ok\"} %llu\n"
	       "parley_push_posts_total{result=\"error\"} %llu\n"
	       "parley_push_posts_total{result=\"timeout\"} %llu\n",
	    (unsigned long long)n.posts_ok, (unsigned long long)n.posts_error,
	    (unsigned long long)n.posts_timeout);
	put(b, "# HELP parley_push_delay_seconds From a message's commit to the first POST of its notification\n"
	       "# TYPE parley_push_delay_seconds histogram\n");
	for (unsigned i = 0; i < NOTIFY_DELAY_NB; i++) {
		cum += n.delay_hist[i];
		put(b, "parley_push_delay_seconds_bucket{le=\"%g\"} %llu\n",
		    notify_delay_bounds[i], (unsigned long long)cum);
	}
	cum += n.delay_hist[NOTIFY_DELAY_NB];
	put(b, "parley_push_delay_seconds_bucket{le=\"+Inf\"} %llu\n"
	       "parley_push_delay_seconds_sum %.3f\n"
	       "parley_push_delay_seconds_count %llu\n",
	    (unsigned long long)cum, n.delay_sum_s,
	    (unsigned long long)n.delay_count);
}

static char *metrics(size_t *len)
{
	struct sbuf b = { malloc(8192), 0, 8192 };
	uint64_t ev = 0, del = 0, acks = 0, req = 0, bad = 0, rl = 0, af = 0,
		 chans = 0, lat_sum = 0;
	unsigned long long lw, lh;
	uint64_t lat[16] = { 0 };
	rt_stats rs;
	store_stats st;

	rt_get_stats(&rs);
	store_get_stats(srv.st, &st);
	for (unsigned i = 0; i < rt_nshards(); i++) {
		struct shard_state *s = shard_state_of(i);

		if (!s)
			continue;
#define LD(f) __atomic_load_n(&s->f, __ATOMIC_RELAXED)
		ev += LD(events);
		del += LD(deliveries);
		acks += LD(acks);
		req += LD(requests);
		bad += LD(bad_frames);
		rl += LD(rate_limited);
		af += LD(auth_failures);
		chans += LD(chans_loaded);
		for (int j = 0; j < 16; j++)
			lat[j] += LD(lat_commit[j]);
		lat_sum += LD(lat_commit_sum_us);
#undef LD
	}
	gauge(&b, "parley_connections", "Open WebSocket connections", rs.conns_open);
	counter(&b, "parley_connections_total", "WebSocket connections accepted", rs.conns_total);
	counter(&b, "parley_frames_in_total", "WebSocket messages received", rs.frames_in);
	counter(&b, "parley_frames_out_total", "WebSocket messages sent", rs.frames_out);
	counter(&b, "parley_bytes_out_total", "Bytes written to sockets", rs.bytes_out);
	counter(&b, "parley_socket_writes_total", "Socket writes (frames_out/writes = coalescing)", rs.writes);
	counter(&b, "parley_socket_writes_short_total", "Of those, writes the kernel took only part of (its buffers toward the client were full)", rs.writes_short);
	counter(&b, "parley_ring_sends_total", "Of socket writes, those made through io_uring", rs.ring_sends);
	counter(&b, "parley_ring_sends_short_total", "Of those, sends the kernel took only part of", rs.ring_short);
	counter(&b, "parley_ring_submits_total", "Batches of them handed to io_uring_enter", rs.ring_submits);
	gauge(&b, "parley_ring_shards", "Shards writing through io_uring (0: send())", rs.ring_shards);
	{
		struct cluster_stats cs;

		cluster_get_stats(&cs);
		if (cs.on) {
			gauge(&b, "parley_cluster_hosts", "Hosts of the cluster holding a live host lease, this one included", cs.hosts_live);
			gauge(&b, "parley_cluster_lease_ok", "1 while this host's lease is renewed in time", cs.lease_ok);
			counter(&b, "parley_cluster_lease_renew_failed_total", "Host lease renewals that found the bus unavailable", cs.renew_failed);
			counter(&b, "parley_cluster_lease_lost_total", "Times this host found its lease expired and took it again", cs.lease_lost);
			counter(&b, "parley_bus_appends_total", "Appends to the cluster's log", cs.appends);
			counter(&b, "parley_bus_fenced_total", "Appends refused: another host wrote since", cs.fenced);
			counter(&b, "parley_bus_retries_total", "Extra tries of bus calls (no leader, no connection)", cs.retries);
			counter(&b, "parley_bus_reconnects_total", "Reconnections to NATS", cs.reconnects);
			gauge(&b, "parley_cluster_partitions", "Partitions of the cluster (its hosts' shards)", cs.nparts);
			gauge(&b, "parley_cluster_partitions_owned", "Partitions this host owns (writes)", cs.owned);
			put(&b, "# HELP parley_cluster_partition_owned 1 if this host owns the partition\n"
			    "# TYPE parley_cluster_partition_owned gauge\n");
			for (unsigned i = 0; i < cs.nparts; i++)
				put(&b, "parley_cluster_partition_owned{partition=\"%u\"} %u\n", i, cs.owned_map[i]);
			counter(&b, "parley_cluster_forwarded_total", "Writes sent on to the host that owns them", cs.forwarded);
			counter(&b, "parley_cluster_served_total", "Writes taken from other hosts", cs.served);
			counter(&b, "parley_cluster_applied_total", "Log messages stored by this host's applier", cs.applied);
			counter(&b, "parley_cluster_held_total", "Answers held until this host stored their write", cs.held);
			counter(&b, "parley_cluster_takeovers_total", "Partitions this host took over", cs.takeovers);
			counter(&b, "parley_cluster_unavailable_total", "Writes answered UNAVAILABLE: no owner reachable", cs.unavailable);
			counter(&b, "parley_cluster_log_bytes_total", "Bytes this host appended to the log", cs.log_bytes);
			counter(&b, "parley_cluster_turns_total", "Owned shards' loop turns sent to the log (several per append when they wait)", cs.turns);
			put(&b, "# HELP parley_cluster_turn_stage_seconds This host's turns in the log: waiting for the partition's append in flight, the append (JetStream's replicated acknowledgement), and from there to this host's synced write\n"
			    "# TYPE parley_cluster_turn_stage_seconds summary\n"
			    "parley_cluster_turn_stage_seconds_sum{stage=\"wait\"} %.6f\n"
			    "parley_cluster_turn_stage_seconds_count{stage=\"wait\"} %llu\n"
			    "parley_cluster_turn_stage_seconds_sum{stage=\"append\"} %.6f\n"
			    "parley_cluster_turn_stage_seconds_count{stage=\"append\"} %llu\n"
			    "parley_cluster_turn_stage_seconds_sum{stage=\"apply\"} %.6f\n"
			    "parley_cluster_turn_stage_seconds_count{stage=\"apply\"} %llu\n",
			    cs.wait_us / 1e6, (unsigned long long)cs.timed_turns,
			    cs.append_us / 1e6, (unsigned long long)cs.timed_turns,
			    cs.apply_us / 1e6, (unsigned long long)cs.applied_turns);
			counter(&b, "parley_cluster_refollows_total", "Followers of the log made again after they stopped behind its end", cs.refollows);
			counter(&b, "parley_cluster_local_refused_total", "Turns with writes for a partition this host does not own, refused (they are not in the log)", cs.local_refused);
			counter(&b, "parley_cluster_turns_failed_total", "Turns the log refused (fenced: another host owns it; too big); their requests answered UNAVAILABLE", cs.failed_turns);
		}
	}
	counter(&b, "parley_closed_slow_consumer_total", "Connections closed with 4008", rs.closed_slow);
	counter(&b, "parley_closed_too_large_total", "Connections closed with 1009", rs.closed_too_large);
	counter(&b, "parley_tls_handshakes_total", "TLS handshakes completed", rs.tls_handshakes);
	counter(&b, "parley_tls_handshake_failures_total", "TLS handshakes failed or timed out", rs.tls_handshake_failures);
	counter(&b, "parley_requests_total", "Requests decoded", req);
	counter(&b, "parley_bad_frames_total", "Frames answered with BAD_FRAME", bad);
	counter(&b, "parley_rate_limited_total", "Sends refused with RATE_LIMITED", rl);
	counter(&b, "parley_auth_failures_total", "hello refused (4001)", af);
	log_counts(&lw, &lh);
	counter(&b, "parley_log_lines_total", "Lines written to the log", lw);
	counter(&b, "parley_log_suppressed_total", "Log lines held back by the rate limit", lh);
	gauge(&b, "parley_channels_loaded", "Channel actors in memory", chans);
	counter(&b, "parley_events_committed_total", "Channel events made durable", ev);
	counter(&b, "parley_fanout_deliveries_total", "Frames queued to subscribers", del);
	counter(&b, "parley_acks_total", "Responses sent after a durable commit", acks);
	counter(&b, "parley_mailbox_messages_total", "Mailbox messages posted", rs.mailbox_msgs);
	counter(&b, "parley_mailbox_wakeups_total", "Sleeping shards woken by a post", rs.wakeups);
	put(&b, "# HELP parley_mailbox_depth Messages waiting in a shard's mailbox\n"
		"# TYPE parley_mailbox_depth gauge\n");
	for (unsigned i = 0; i < rt_nshards(); i++)
		put(&b, "parley_mailbox_depth{shard=\"%u\"} %llu\n", i,
		    (unsigned long long)rt_mailbox_depth(i));
	counter(&b, "parley_store_commits_total", "Synced RocksDB writes", st.commits);
	counter(&b, "parley_store_batches_total", "Shard batches in those writes", st.batches);
	counter(&b, "parley_store_records_total", "Records in those writes", st.records);
	counter(&b, "parley_store_records_merged_total",
		"Records not written: a later record of the same key in the same write",
		st.records_merged);
	counter(&b, "parley_store_failures_total", "Shard batches whose write failed", st.failures);
	histogram(&b, "parley_commit_seconds", "Time in one synced RocksDB write",
		  st.hist_us, 16, 16, 1e-6, st.commit_us_sum);
	histogram(&b, "parley_commit_batches", "Shard batches per synced write",
		  st.hist_batch, 16, 1, 1, st.batches);
	histogram(&b, "parley_request_durable_seconds",
		  "From request decoded to its response (after the WAL sync)",
		  lat, 16, 64, 1e-6, lat_sum);
	stages(&b);
	push_metrics(&b);
	gauge(&b, "parley_storage_failed", "1 after a failed commit",
	      (uint64_t)__atomic_load_n(&srv.storage_failed, __ATOMIC_RELAXED));
	gauge(&b, "parley_uptime_seconds", "Seconds since start",
	      (rt_now_ms() - srv.started_ms) / 1000);
	*len = b.n;
	return b.p;
}

void http_handle(rt_shard *s, const rt_http_req *req, rt_http_resp *resp)
{
	if (!strncmp(req->path, FILES_PREFIX, strlen(FILES_PREFIX)) &&
	    (!req->path[strlen(FILES_PREFIX)] ||
	     req->path[strlen(FILES_PREFIX)] == '/')) {
		files_handle(s, req, resp);
		return;
	}
	if (!strncmp(req->path, "/api/", 5)) {
		rest_handle(s, req, resp);
		return;
	}
	if (!strcmp(req->path, "/healthz")) {
		bool ok = !__atomic_load_n(&srv.storage_failed, __ATOMIC_RELAXED);

		resp->status = ok ? 200 : 503;
		resp->content_type = "text/plain";
		resp->body = strdup(ok ? "ok\n" : "storage failing\n");
		resp->body_len = strlen(resp->body);
		return;
	}
	if (!strcmp(req->path, "/metrics")) {
		resp->status = 200;
		resp->content_type = "text/plain; version=0.0.4";
		resp->body = metrics(&resp->body_len);
		return;
	}
	if (web_handle(req, resp))
		return;
	resp->status = 404;
	resp->content_type = "text/plain";
	resp->body = strdup("not found\n");
	resp->body_len = strlen(resp->body);
}
