/*
 * server: the dispatcher, the top of actors/. parleyd's main() calls
 * server_run(), which opens storage, starts the shards with the hooks below
 * and waits for SIGTERM; each hook dispatches to the session, user,
 * channel or presence actor that the event belongs to. Nothing in actors/
 * calls back into this file: the helpers the actors share are in base.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actors/cluster.h"
#include "actors/cluster_log.h"
#include "actors/actors.h"
#include "actors/commit.h"
#include "actors/control.h"
#include "actors/directory.h"
#include "actors/files.h"
#include "actors/rest.h"
#include "actors/sdnotify.h"
#include "storage/search.h"
#include "runtime/log.h"

/* ---- hooks ----------------------------------------------------------------- */

static void on_start(rt_shard *s) { shard_state_new(s); }

static void on_stop(rt_shard *s)
{
	/* The shard state itself stays (other shards' /metrics readers may
	 * still look; it is reachable from states[] until exit). */
	sess_shard_stop(rt_shard_user(s));
	dir_shard_stop(rt_shard_user(s));
}

#ifndef NDEBUG
/* Is this shard the home of what m is for? A mailbox is drained by its
 * owner: each message goes to the shard of the actor or connection it
 * names (M_FANOUT: any shard with subscribers; M_CALL: any; M_COMMIT:
 * commit.c checks its own). */
static bool msg_home(unsigned id, const rt_msg *m)
{
	switch (m->type) {
	case M_REQ: {
		const struct m_req *r = (const struct m_req *)m;

		return r->stage == 0 ? user_shard(r->ws, r->user) == id
				     : chan_shard(r->ch) == id;
	}
	case M_DELIVER:
		return rt_conn_shard(((const struct m_deliver *)m)->conn) == id;
	case M_SUB:
		return chan_shard(((const struct m_sub *)m)->ch) == id;
	case M_UNSUB:
		return chan_shard(((const struct m_unsub *)m)->ch) == id;
	case M_SUBACK:
		return rt_conn_shard(((const struct m_suback *)m)->conn) == id;
	case M_ATTACH:
	case M_DETACH:
	case M_HB: {
		const struct m_attach *a = (const struct m_attach *)m;

		return user_shard(a->ws, a->user) == id;
	}
	case M_ATTACH_RES:
		return rt_conn_shard(((const struct m_attach *)m)->conn) == id;
	case M_USER_CHAN: {
		const struct m_user_chan *u = (const struct m_user_chan *)m;

		return user_shard(u->ws, u->user) == id;
	}
	case M_CONN_CHAN:
		return rt_conn_shard(((const struct m_user_chan *)m)->conn) == id;
	case M_WATCH: {
		const struct m_watch *w = (const struct m_watch *)m;

		for (uint32_t i = 0; i < w->n; i++)
			if (user_shard(w->ws, w->e[i].user) != id)
				return false;
		return true;
	}
	case M_WATCH_RES:
		return rt_conn_shard(((const struct m_watch *)m)->conn) == id;
	case M_PRESENCE: {
		const struct m_presence *p = (const struct m_presence *)m;

		for (uint32_t i = 0; i < p->n; i++)
			if (rt_conn_shard(p->conns[i]) != id)
				return false;
		return true;
	}
	default:
		return true;
	}
}
#endif

static void on_msg(rt_shard *s, rt_msg *m)
{
	struct shard_state *ss = rt_shard_user(s);

	/* drained by its owner, on the owner's thread */
	assert(rt_self() == s && ss->id == rt_shard_id(s));
	assert(msg_home(ss->id, m));

	switch (m->type) {
	case M_REQ: {
		struct m_req *r = (struct m_req *)m;

		/* In a cluster, only the owner's actors write: a request that
		 * finds this shard's partition gone meanwhile is told so. */
		if (!cluster_owns(ss->id)) {
			reply_err_remote(r, "UNAVAILABLE", "another host owns "
					 "this now; try again", 1000);
			msg_free(m);
			return;
		}
		/* A request visits its user actor first, then its channel. */
		if (r->stage == 0)
			user_on_req(ss, r);
		else
			chan_on_req(ss, r);
		return;
	}
	case M_DELIVER: sess_on_deliver(ss, (struct m_deliver *)m); break;
	case M_FANOUT: sess_on_fanout(ss, (struct m_fanout *)m); break;
	case M_SUB: chan_on_sub(ss, (struct m_sub *)m); break;
	case M_SUBACK: sess_on_suback(ss, (struct m_suback *)m); break;
	case M_UNSUB: chan_on_unsub(ss, (struct m_unsub *)m); break;
	case M_ATTACH: user_on_attach(ss, (struct m_attach *)m); break;
	case M_ATTACH_RES: sess_on_attach_res(ss, (struct m_attach *)m); break;
	case M_DETACH: user_on_detach(ss, (struct m_attach *)m); break;
	case M_USER_CHAN: user_on_chan(ss, (struct m_user_chan *)m); break;
	case M_CONN_CHAN: sess_on_conn_chan(ss, (struct m_user_chan *)m); break;
	case M_COMMIT: commit_on_commit(ss, (struct m_commit *)m); break;
	case M_HB: presence_on_hb(ss, (struct m_attach *)m); break;
	case M_WATCH: presence_on_watch(ss, (struct m_watch *)m); break;
	case M_WATCH_RES: sess_on_watch_res(ss, (struct m_watch *)m); break;
	case M_PRESENCE: sess_on_presence(ss, (struct m_presence *)m); break;
	case M_CALL: {
		struct m_call *c = (struct m_call *)m;

		c->fn(ss, c);
		return;
	}
	default: break;
	}
	msg_free(m);
}

static void on_turn_end(rt_shard *s) { commit_turn_end(rt_shard_user(s)); }
static void on_tick(rt_shard *s, uint64_t now)
{
	sess_tick(rt_shard_user(s), now);
	chan_tick(rt_shard_user(s), now);
	presence_tick(rt_shard_user(s), now);
	user_tick(rt_shard_user(s), now);
	files_tick(rt_shard_user(s), now);
	clog_tick(rt_shard_user(s));
}
static void on_timer(rt_shard *s, uint64_t now)
{
	presence_on_timer(rt_shard_user(s), now);
}
static void on_open(rt_shard *s, rt_conn *c) { sess_open(rt_shard_user(s), c); }
static void on_close(rt_shard *s, rt_conn *c) { sess_close(rt_shard_user(s), c); }

static void on_frame(rt_shard *s, rt_conn *c, const uint8_t *d, size_t n,
		     bool binary)
{
	sess_frame(rt_shard_user(s), c, d, n, binary);
}

static void on_sent(rt_shard *s, const rt_buf *b, uint64_t now)
{
	struct shard_state *ss = rt_shard_user(s);
	bool ack = b->kind == BUF_ACK;

	stage_add(ss, ack ? ST_ACK_WRITE : ST_FANOUT_WRITE, now - b->t_post_us);
	if (b->t_req_us)
		stage_add(ss, ack ? ST_ACK_TOTAL : ST_DELIVER_TOTAL,
			  now - b->t_req_us);
}

static bool on_drain(rt_shard *s, bool first)
{
	struct shard_state *ss = rt_shard_user(s);

	if (first)
		sess_goaway_all(ss);
	return commit_idle(ss) && clog_idle(ss->id);
}

static const rt_hooks hooks = {
	.on_start = on_start,
	.on_stop = on_stop,
	.on_msg = on_msg,
	.on_turn_end = on_turn_end,
	.on_tick = on_tick,
	.on_timer = on_timer,
	.on_open = on_open,
	.on_frame = on_frame,
	.on_close = on_close,
	.on_sent = on_sent,
	.on_http = http_handle,
	.on_http_answer = rest_answer,
	.on_http_begin = files_begin,
	.on_http_data = files_data,
	.on_http_end = files_end,
	.on_http_abort = files_abort,
	.on_drain = on_drain,
};


int server_run(const struct server_opts *o)
{
	char path[4096], *err = NULL;
	const char *rerr = NULL;
	sigset_t set;
	rt_config cfg;
	int sig, rc;
	bool created = false;

	/* Signals go to this thread only: block them before any thread
	 * exists (threads inherit the mask), then sigwait below. Before
	 * store_open too: RocksDB's (and the search index's) threads start
	 * there, and a SIGTERM that came before this thread reached sigwait
	 * went to one of them and killed the process (e2e_auth saw it under
	 * ASan: a stop right after the start exited by signal, not 0). */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP); /* TLS: reload the certificate */
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (o->tls_cert) { /* first: a bad certificate fails fast */
		char terr[512];

		if (rt_tls_load(o->tls_cert, o->tls_key, terr, sizeof(terr))) {
			plog(PL_ERROR, "start", "TLS: %s", terr);
			return 1;
		}
	}

	if (mkdir(o->data_dir, 0700) == 0)
		created = true;
	else if (errno != EEXIST) {
		plog(PL_ERROR, "start", "%s: %s", o->data_dir, strerror(errno));
		return 1;
	}
	if (o->secret_file)
		snprintf(path, sizeof(path), "%s", o->secret_file);
	else
		snprintf(path, sizeof(path), "%s/jwt.secret", o->data_dir);
	if (auth_load_secret(path, srv.key, sizeof(srv.key), &srv.key_len,
			     o->secret_file == NULL)) {
		plog(PL_ERROR, "start", "cannot read JWT secret %s: %s", path,
			strerror(errno));
		return 1;
	}
	if (o->dm_key_file)
		snprintf(path, sizeof(path), "%s", o->dm_key_file);
	else
		snprintf(path, sizeof(path), "%s/dm.key", o->data_dir);
	if (auth_load_secret(path, srv.dm_key, sizeof(srv.dm_key),
			     &srv.dm_key_len, o->dm_key_file == NULL)) {
		plog(PL_ERROR, "start", "cannot read %s: %s", path,
			strerror(errno));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/db", o->data_dir);
	if ((rc = store_open(&srv.st, path, o->ranges, o->shards, &err))) {
		plog(PL_ERROR, "start", "%s", err ? err : "storage: ?");
		free(err);
		if (rc != STORE_OPEN_CORRUPT)
			return 1;
		plog(PL_ERROR, "start", "the database in %s is corrupt: "
		     "restore a backup (parleyd restore); exit status %d",
		     path, SERVER_EXIT_CORRUPT);
		return SERVER_EXIT_CORRUPT;
	}
	if (names_migrate()) { /* names from before the registry */
		plog(PL_ERROR, "start", "storage: cannot register names");
		store_close(srv.st);
		return 1;
	}
	if (!o->no_search) {
		snprintf(path, sizeof(path), "%s/search", o->data_dir);
		if (search_open(&srv.sx, path, srv.st, o->shards, &err)) {
			plog(PL_ERROR, "start", "search index: %s",
				err ? err : "?");
			free(err);
			store_close(srv.st);
			return 1;
		}
	}
	/* RocksDB syncs the entries it makes inside db/, not db/ itself (nor
	 * search/, jwt.secret) in the data directory, nor a new data
	 * directory in its parent: a power cut soon after the first start
	 * could take every acknowledged write with them (the power-cut
	 * test's strict model showed it). Sync them before serving. */
	snprintf(path, sizeof(path), "%s/..", o->data_dir);
	if (store_sync_dir(o->data_dir) || (created && store_sync_dir(path))) {
		plog(PL_ERROR, "start", "%s: fsync: %s", o->data_dir,
			strerror(errno));
		if (srv.sx)
			search_close(srv.sx);
		store_close(srv.st);
		return 1;
	}
	if (o->push.url) {
		struct notify_cfg pc = o->push;

		pc.data_dir = o->data_dir;
		if (notify_start(&pc, &err)) {
			plog(PL_ERROR, "start", "push: %s", err ? err : "?");
			free(err);
			if (srv.sx)
				search_close(srv.sx);
			store_close(srv.st);
			return 1;
		}
	}
	/* DATA/files: made, and its tmp/ swept (uploads a crash cut off) */
	if (files_start(o->data_dir, &rerr)) {
		plog(PL_ERROR, "start", "files: %s: %s", rerr,
			strerror(errno));
		if (srv.sx)
			search_close(srv.sx);
		store_close(srv.st);
		return 1;
	}
	srv.started_ms = rt_now_ms();

	memset(&cfg, 0, sizeof(cfg));
	cfg.nshards = o->shards;
	cfg.host = o->host;
	cfg.port = o->port;
	cfg.max_frame = srv.lim.max_frame;
	cfg.max_outbuf = srv.lim.max_outbuf;
	cfg.tick_ms = 100;
	cfg.drain_ms = o->drain_ms;
	cfg.pin = o->pin;
	cfg.io_uring = o->io_uring;
	cfg.http_stream_prefix = FILES_PREFIX;
	cfg.http_stream_max = files_max_bytes();
	cfg.hooks = &hooks;
	if (cluster_start(&o->cluster, o->shards)) {
		if (srv.sx)
			search_close(srv.sx);
		store_close(srv.st);
		return 1;
	}
	if (rt_start(&cfg, &rerr)) {
		cluster_stop();
		plog(PL_ERROR, "start", "listen %s:%d: %s", o->host, o->port,
			rerr);
		if (srv.sx)
			search_close(srv.sx);
		store_close(srv.st);
		return 1;
	}
	if (cluster_run()) {
		plog(PL_ERROR, "start", "cluster: cannot start");
		return 1;
	}
	if (notify_run()) {
		plog(PL_ERROR, "start", "push: cannot start the notifier");
		return 1;
	}
	control_start(o->data_dir, srv.st); /* parleyd backup; logs failures */
	printf("parleyd listening on %s://%s:%d/ws (%u shards, data %s)\n",
	       o->tls_cert ? "wss" : "ws", o->host, rt_bound_port(),
	       o->shards, o->data_dir);
	fflush(stdout);
	/* (not the stdout line's words: scripts that read both streams
	 * look for "listening on" there) */
	plog(PL_INFO, "server", "parleyd %s started: port %d on %s, %s, %u "
	     "shards, data %s", o->version, rt_bound_port(), o->host,
	     o->tls_cert ? "TLS" : "plain", o->shards, o->data_dir);
	sdn_ready(o->tls_cert ? "wss" : "ws", o->host, rt_bound_port(),
		  o->shards);

	/* sigwait, pinging systemd's watchdog meanwhile; SIGHUP reloads */
	while ((sig = sdn_wait(&set)) == SIGHUP) {
		sdn_reloading();
		rt_tls_reload();
		sdn_reloaded();
	}
	sdn_stopping(sig);
	plog(PL_INFO, "server", "%s: draining", strsignal(sig));
	control_stop(); /* after a checkpoint in progress */
	/* first, while the shards still answer its questions: what it
	 * decided is on disk, the rest comes back from the log at start */
	notify_stop();
	files_drain();
	cluster_quiesce(); /* nothing new from other hosts */
	rt_drain();
	rt_join();
	files_stop(); /* before the bus goes: its puller asks other hosts */
	cluster_stop(); /* the host lease goes now, not at its expiry */
	if (srv.sx)
		search_close(srv.sx);
	store_close(srv.st);
	rt_tls_free();
	plog(PL_INFO, "server", "stopped");
	return 0;
}
