/*
 * directory: the workspace's people (directory.c): who exists, display
 * names, status and last seen, users.search and users.get. One actor per
 * workspace, on shard dir_shard(ws); everything reaches it by M_CALL.
 */
#ifndef PARLEY_DIRECTORY_H
#define PARLEY_DIRECTORY_H

#include "actors/actors.h"

struct chan;
struct req;

unsigned dir_shard(const char *ws);

/* session.c, at an accepted hello: the token's name claim (NULL or "":
 * none); then (if not NULL) is posted to then_shard once the directory
 * has it in order (in a cluster, once the directory's owner host took
 * it: a client told "hello ok" is found by users.get anywhere). Any
 * shard; any thread. */
void dir_on_hello(const char *ws, const char *user, const char *name,
		  unsigned then_shard, rt_msg *then);
/* channel.c, ch.invite and dm.open: users[n] exist in ws. Writes their
 * 'w' keys into ss's batch; the directory hears of them once durable. */
void dir_fx_named(struct shard_state *ss, struct chan *c, const char *ws,
		  const char *const *users, uint32_t n);
/* presence.c: the status watchers are now told (any shard), and the
 * user's last seen, written to ss's batch by the caller: told once
 * durable, so what users.get reports survives a kill -9. */
void dir_note_status(const char *ws, const char *user, uint8_t status);
/* cluster.c: another host's device of user came or went at seen_ms */
void dir_note_seen(const char *ws, const char *user, uint64_t seen_ms);
void dir_fx_seen(struct shard_state *ss, const char *ws, const char *user,
		 uint64_t seen_ms);
/* session.c: users.search or users.get, answered by the directory's
 * shard straight to r's connection. */
void dir_request(struct req *r);
/* server.c: the shard is stopping: free its directories. */
void dir_shard_stop(struct shard_state *ss);

#endif
