/*
 * harness: what every end-to-end test needs. Starts a real parleyd (the
 * binary the build made) on a fresh data directory and a kernel-chosen
 * port, mints tokens with its secret, connects clients through proto/'s C
 * client and says hello. Kills (SIGKILL) and restarts it on the same data.
 */
#ifndef PARLEY_HARNESS_H
#define PARLEY_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/client.h"
#include "proto/proto.h"

#define H_TIMEOUT 5000 /* ms to wait for any one expected frame */

/*
 * Cluster mode (PARLEY_E2E_CLUSTER=1 in the environment; docs/cluster.md,
 * "The e2e suite against a cluster"): h_start starts a 3-node NATS cluster
 * (scripts/nats-cluster.sh) and 3 parleyd hosts h1..h3 on it (--cluster,
 * --host-id, --lease-ms 3000, the same secret and extra flags, each its
 * own data directory and port), and waits until they see each other. dir,
 * pid and port are host 1's (REST, /metrics, the store on disk); the
 * connections h_connect* open go round-robin to h1, h2, h3, h1, ... so two
 * clients of a test are on different hosts. h_stop stops the hosts and the
 * NATS nodes; h_cleanup removes everything. h_kill9, h_restart and
 * h_restart_try tear the cluster down and skip the rest of the test (cmocka
 * reports it SKIPPED): restarts are not for this mode. A guardian process
 * stops the NATS nodes and kills the hosts if the test binary dies first.
 */
#define H_HOSTS 3 /* parleyd hosts in cluster mode */

typedef struct hsrv {
	char dir[256];      /* data directory (removed by h_stop) */
	char secret[512];   /* secret file */
	pid_t pid;
	int port;
	char extra[1024];   /* extra flags, space separated */
	/* cluster mode only (nhosts == H_HOSTS; 0 for one parleyd) */
	int nhosts;
	int hport[H_HOSTS];     /* host i+1's port */
	char hdir[H_HOSTS][256]; /* host i+1's data directory */
	unsigned rr;            /* the next connection goes to rr % nhosts */
} hsrv;

/* true when PARLEY_E2E_CLUSTER asks for cluster mode */
bool h_cluster(void);

/* Start parleyd with extra flags (may be ""), e.g. "--shards 2". Aborts the
 * test run if it does not come up. */
void h_start(hsrv *s, const char *extra);
/* The same with the data directory (and secret) under parent, not /tmp */
void h_start_in(hsrv *s, const char *parent, const char *extra);
/* SIGTERM and wait; returns the exit status (-1 if it had to be killed). */
int h_stop(hsrv *s);
void h_kill9(hsrv *s);
void h_restart(hsrv *s); /* after h_kill9 or h_stop(keep): same data */
/* The same, for a start that may fail: 0 up, else how parleyd ended
 * (128 + signal when a signal killed it, its exit status when it
 * exited non-zero, -1 otherwise). */
int h_restart_try(hsrv *s);
void h_cleanup(hsrv *s); /* rm -rf the data dir */

char *h_token(hsrv *s, const char *user, const char *ws); /* free() it */
char *h_token_exp(hsrv *s, const char *user, const char *ws, int64_t exp);

/* Connect and hello as user@ws; NULL on failure. hello_res (optional)
 * gets the hello response (caller frees). */
pc_conn *h_connect(hsrv *s, const char *user, const char *ws,
		   proto_doc *hello_res);
pc_conn *h_connect_raw(hsrv *s); /* no hello */

/* Requests. h_req sends {"op":op,"rid":auto, ...} where the variadic part
 * is npairs of (const char *key, char type, value): type 's' = const char
 * *, 'u' = uint64_t, 'b' = int (bool), 'S' = NULL-terminated const char **
 * (array of str). Returns 1 with the response in res (caller frees),
 * 0 timeout, -1 closed. */
int h_req(pc_conn *c, proto_doc *res, const char *op, unsigned npairs, ...);
/* The same in two steps, to put several requests on the wire before any
 * answer: h_post sends (returns the rid, 0 if it could not), h_await waits
 * for that rid's answer (other frames are kept for h_next). */
uint64_t h_post(pc_conn *c, const char *op, unsigned npairs, ...);
int h_await(pc_conn *c, uint64_t rid, proto_doc *res);
bool h_ok(const proto_doc *res);              /* ok:true */
const char *h_code(const proto_doc *res);     /* "code" as a static copy */
uint64_t h_u(const msgpack_object *map, const char *key); /* 0 if absent */
const char *h_s(const msgpack_object *map, const char *key); /* static copy */

/* Convenience */
int h_create(pc_conn *c, const char *name, const char *kind, char *ch_out);
int64_t h_send(pc_conn *c, const char *ch, const char *body, const char *cmid);
/* Wait for the next frame whose "t" is t (others are dropped); 1/0/-1 */
int h_expect(pc_conn *c, const char *t, proto_doc *out, int timeout_ms);
/* Next frame of any kind */
int h_next(pc_conn *c, proto_doc *out, int timeout_ms);
/* Drain frames for ms milliseconds; returns how many were dropped */
int h_drain(pc_conn *c, int ms);

/* ---- for cmocka tests: helpers that fail the running test ---------------
 *
 * These call cmocka's fail on a problem, so they are for use inside a
 * cmocka test only. The macros pass the caller's file and line, so a
 * failure points at the line of the test, not at this harness. */

/* Connect and hello as user@ws (fails the test if that does not work). */
pc_conn *h_connect_ok(hsrv *s, const char *user, const char *ws);
/* SIGTERM, require exit status 0, remove the data directory. */
void h_finish(hsrv *s);
/* ch.create: ok, the answer's ch has this name and kind; id into out
 * (65 bytes). */
void h_create_ok(pc_conn *c, const char *name, const char *kind, char *out);
/* ch.join: ok. */
void h_join_ok(pc_conn *c, const char *ch);

/* h_req() that must be answered ok:true; the answer is left in res (the
 * caller frees it). */
#define h_req_ok(c, res, ...) \
	h_req_ok_at(__FILE__, __LINE__, (c), (res), __VA_ARGS__)
/* h_req() that must be refused with code (a string); nothing to free. */
#define h_req_fail(code, c, ...) \
	h_req_fail_at(__FILE__, __LINE__, (code), (c), __VA_ARGS__)
void h_req_ok_at(const char *file, int line, pc_conn *c, proto_doc *res,
		 const char *op, unsigned npairs, ...);
void h_req_fail_at(const char *file, int line, const char *code, pc_conn *c,
		   const char *op, unsigned npairs, ...);

/*
 * Barriers: checking that a frame does NOT come.
 *
 * Waiting for silence proves little: on a slow machine the frame may come
 * after the wait. A barrier is a request whose answer the server puts on
 * the connection after any frame that was already on its way to it; once
 * the answer is in, a frame that did not come before it was never sent.
 *
 * The barrier is {"op":"read","ch":ch,"seq":0}. It never changes anything
 * (a marker never moves back, and 0 is never ahead of one) and it is always
 * answered by the channel actor of ch: ok for a member, FORBIDDEN for a
 * non-member of a public channel, NOT_FOUND for one the user may not see
 * (the session only checks that ch is an id: BAD_REQUEST is refused here).
 * Why that answer comes after the frames a test asks about
 * (actors/channel.c, actors/session.c, runtime/mailbox.c):
 *
 * - Frames the channel actor fans out ("ev", the "member" frames to the
 *   channel's other members, "typing"): the actor posts one M_FANOUT per
 *   shard with subscribers, and answers the barrier with M_DELIVER to the
 *   connection's shard, from the same thread through the same FIFO ring
 *   (one SPSC ring per pair of shards; overflow keeps the order). An event
 *   is fanned out when its commit comes back, in the same run of effects
 *   as the writer's ack, and typing in the request itself, right after its
 *   answer: a test that has the triggering request's answer knows that
 *   whatever it fanned out is in the ring before the barrier reaches the
 *   channel actor. A no-op (a second join, a repeated reaction, a marker
 *   that would move back) answers with reply_state(): while a commit of the
 *   channel is in flight, that answer is itself an effect of the next
 *   commit, so it still comes after anything that commit sends.
 * - Where a single answer is not enough, and why the barrier runs twice:
 *   (1) when the connection lives on the channel's own shard, the answer is
 *   queued on it at once, while M_FANOUT goes through the shard's own ring;
 *   (2) frames that pass the user actor ("member" frames to the user's own
 *   devices, "read" frames to the user's other devices: channel actor ->
 *   user actor -> each device's shard) come on another ring than the
 *   answer (channel actor -> connection's shard), and the user actor may
 *   take the barrier (connection's ring) before the notice (channel's
 *   ring). Both need the two messages to wait in one mailbox drain of the
 *   same shard. The second barrier is sent once the first answer is in,
 *   i.e. after the drain that delivered it has visited every ring (both
 *   passes of rt__mailbox_drain visit all of them; up to 4,096 messages a
 *   turn), so (1) is then ordered, and (2) is unless a shard's thread stops
 *   for a whole client round trip with work waiting in its mailbox.
 *   The tests that check such frames run two shards on a loaded machine;
 *   no request through the user actor can do better (nothing answers from
 *   the user actor's ring to the connection without a side effect).
 * - NOT a barrier: history, ch.list, ch.members, events, hb (the session
 *   answers them itself, from storage, ordered with nothing), and a read
 *   with a bad ch (the session refuses it).
 *
 * Frames other than the barrier's answers that come before it are passed
 * to seen (if not NULL; the frame is freed after) and otherwise dropped,
 * as h_drain() would. Returns 1 when both answers came, 0 on timeout, -1
 * when the connection closed; fails the test on an answer the channel
 * actor does not give.
 */
int h_barrier(pc_conn *c, const char *ch,
	      void (*seen)(const proto_doc *d, void *arg), void *arg);

/* No frame of kind t (NULL: any kind) about channel ch reaches c before a
 * barrier on ch. Frames of other kinds or channels before it are dropped. */
#define h_expect_none(c, t, ch) \
	h_expect_none_at(__FILE__, __LINE__, (c), (t), (ch), (ch))
/* No frame of kind t (NULL: any kind) about any channel (or none) reaches
 * c before a barrier on channel via. */
#define h_expect_none_any(c, t, via) \
	h_expect_none_at(__FILE__, __LINE__, (c), (t), NULL, (via))
void h_expect_none_at(const char *file, int line, pc_conn *c, const char *t,
		      const char *ch, const char *via);
/* Only where no barrier exists (say why at the call): no frame of kind t
 * about ch (NULL: any) reaches c within ms (> 0) milliseconds. This can
 * miss a frame that comes later than ms. */
#define h_expect_none_for(c, t, ch, ms) \
	h_expect_none_for_at(__FILE__, __LINE__, (c), (t), (ch), (ms))
void h_expect_none_for_at(const char *file, int line, pc_conn *c,
			  const char *t, const char *ch, int ms);

/* CLOCK_MONOTONIC in ms */
uint64_t now_ms(void);
void sleep_until(uint64_t t); /* until now_ms() >= t */

/* Connect and hello as user@ws with a token that has the claims name and
 * role (either NULL: none); the hello answer into *hello_res if not NULL
 * (the caller frees it). NULL on failure. */
pc_conn *h_connect_claims(hsrv *s, const char *user, const char *ws,
			  const char *name, const char *role,
			  proto_doc *hello_res);
/* Connect and hello as user@ws with the token claim role (e.g. "admin");
 * NULL on failure. */
pc_conn *h_connect_role(hsrv *s, const char *user, const char *ws,
			const char *role);

/* h_connect with a token that has the name claim (NULL: none). */
pc_conn *h_connect_named(hsrv *s, const char *user, const char *ws,
			 const char *name, proto_doc *hello_res);

#endif
