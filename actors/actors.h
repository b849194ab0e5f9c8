/*
 * actors: what a chat is. Sessions (one per connection), channel actors (one
 * per channel, on the shard its id hashes to) and user actors (one per
 * connected user, on the shard its id hashes to: device count, send rate,
 * the way to reach all of a user's devices).
 *
 * Everything here runs on shard threads and talks across shards only with
 * the mailbox messages below. A message is owned by its receiver once
 * posted; rt_buf payloads inside carry one reference for the receiver.
 *
 * The path of one message (a send):
 *   session (conn's shard)  --M_REQ-->  user actor (rate limit)
 *     --M_REQ-->  channel actor (member? dup? seq, encode event once,
 *                 batch: event + state + cmid + counters)
 *   turn end: batch -> storage sync thread (group commit, WAL synced)
 *     --M_COMMIT-->  channel actor: ack (M_DELIVER to the conn's shard),
 *                    fan-out (one M_FANOUT per shard with members online)
 *     --> each shard: the same rt_buf queued on each local member conn.
 */
#ifndef PARLEY_ACTORS_H
#define PARLEY_ACTORS_H

#include "actors/cluster.h"

#include "actors/base.h"
#include "actors/notify.h"

/* ---- the actors' entry points -------------------------------------------- */

/* the session (session.h): session.c */
void sess_open(struct shard_state *ss, rt_conn *c);
void sess_frame(struct shard_state *ss, rt_conn *c, const uint8_t *d,
		size_t n, bool binary);
void sess_close(struct shard_state *ss, rt_conn *c);
void sess_tick(struct shard_state *ss, uint64_t now);
void sess_shard_stop(struct shard_state *ss);
void sess_goaway_all(struct shard_state *ss);
void sess_on_attach_res(struct shard_state *ss, struct m_attach *m);
/* sess_sub.c */
void sess_on_deliver(struct shard_state *ss, struct m_deliver *m);
void sess_on_fanout(struct shard_state *ss, struct m_fanout *m);
void sess_on_suback(struct shard_state *ss, struct m_suback *m);
void sess_on_conn_chan(struct shard_state *ss, struct m_user_chan *m);

/* user.c */
void user_on_req(struct shard_state *ss, struct m_req *m);
void user_on_attach(struct shard_state *ss, struct m_attach *m);
void user_on_detach(struct shard_state *ss, struct m_attach *m);
void user_on_chan(struct shard_state *ss, struct m_user_chan *m);
void user_tick(struct shard_state *ss, uint64_t now);

/* the channel actor: channel.c (M_REQ), chan_sub.c (M_SUB, M_UNSUB),
 * chan_load.c (eviction tick); its M_COMMIT is commit.c's (commit.h) */
void chan_on_req(struct shard_state *ss, struct m_req *m);
void chan_on_sub(struct shard_state *ss, struct m_sub *m);
void chan_on_unsub(struct shard_state *ss, struct m_unsub *m);
void chan_tick(struct shard_state *ss, uint64_t now);

/* presence.c: one presence actor per user, on the user's shard (beside its
 * user actor): devices and their heartbeats, the status the user chose,
 * the connections watching it. */
/* (its messages, M_WATCH, M_WATCH_RES, M_PRESENCE: base.h) */
void presence_on_device(struct shard_state *ss, const char *ws,
			const char *user, rt_conn_id conn, bool attach);
void presence_on_hb(struct shard_state *ss, struct m_attach *m);
void presence_on_set(struct shard_state *ss, struct m_req *m);
void presence_on_watch(struct shard_state *ss, struct m_watch *m);
void presence_tick(struct shard_state *ss, uint64_t now);
/* the other hosts' levels of (ws, user) changed, or the status it chose
 * (chosen >= 0): what watchers here see may change (cluster_presence.c) */
void presence_on_remote(struct shard_state *ss, const char *ws,
			const char *user, int chosen);
/* The raw state the notifier asks for: true when a device of the user
 * sent a heartbeat (or said hello) within away_ms; *connected: it has a
 * device at all. */
bool presence_probe(struct shard_state *ss, const char *ws, const char *user,
		    uint64_t now, bool *connected);
/* the shard's timer: tell the changes that fell due */
void presence_on_timer(struct shard_state *ss, uint64_t now);
/* sess_watch.c: the other ends */
void sess_on_watch_res(struct shard_state *ss, struct m_watch *m);
void sess_on_presence(struct shard_state *ss, struct m_presence *m);

/* session.c: a request from an authenticated source that is not a
 * WebSocket session (REST): decoded and run like a frame of a session
 * that said hello as user@ws (admin: with the admin role); answers go to
 * c with rt_conn_send_bytes. */
void sess_request(struct shard_state *ss, rt_conn *c, const char *ws,
		  const char *user, bool admin, const uint8_t *frame,
		  size_t len);

/* search_op.c: the `search` op, answered later through c's shard. A
 * WebSocket session passes its count of searches in flight (NULL over
 * HTTP): past SEARCH_PER_CONN the next one is RATE_LIMITED, so one
 * connection cannot fill the shared query queue; each answer, once on
 * c's shard, gives its slot back with sess_search_done() (sess_watch.c). */
#define SEARCH_PER_CONN 8
void search_op(struct shard_state *ss, rt_conn *c, const char *ws,
	       const char *user, bool has_rid, uint64_t rid,
	       const struct proto_a_search *a, uint16_t *inflight);
void sess_search_done(rt_conn_id conn);

/* chan_admin.c: the name registry (names of channels, per workspace) */
void names_create(struct shard_state *ss, struct m_req *m); /* user actor */
int names_migrate(void); /* at start, before the shards: 0 or -errno */

/* auth.c */
struct auth_claims {
	char sub[ID_CAP], ws[ID_CAP], name[129];
	int64_t exp, nbf;
	bool admin; /* claim "role": "admin" (a workspace admin) */
};
int auth_verify(const uint8_t *key, size_t keylen, const char *token,
		size_t toklen, int64_t now_s, struct auth_claims *out,
		const char **why);
char *auth_mint(const uint8_t *key, size_t keylen, const char *sub,
		const char *ws, int64_t exp, const char *name,
		const char *role);
int auth_load_secret(const char *path, uint8_t *key, size_t cap, size_t *len,
		     bool create);

/* http.c */
void http_handle(rt_shard *s, const rt_http_req *req, rt_http_resp *resp);

/* server.c: start everything (parleyd's main calls this) */
/* server_run's exit status when the database is corrupt (a restart will
 * not help; restore a backup): systemd's unit does not restart on it. */
#define SERVER_EXIT_CORRUPT 3

struct server_opts {
	const char *version; /* git describe of the build */
	const char *host;
	int port;
	const char *data_dir;
	const char *secret_file;
	const char *dm_key_file; /* NULL: DATA/dm.key */
	unsigned shards;
	unsigned ranges;
	bool pin;
	bool no_search;
	bool io_uring;     /* writes through io_uring where it works */
	struct cluster_opts cluster; /* urls NULL: a single host */
	unsigned drain_ms;
	struct notify_cfg push; /* url NULL: no notifier */
	const char *tls_cert, *tls_key; /* both or neither: wss://, https:// */
};
int server_run(const struct server_opts *o);

#endif
