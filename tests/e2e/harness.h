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

typedef struct hsrv {
	char dir[256];      /* data directory (removed by h_stop) */
	char secret[512];   /* secret file */
	pid_t pid;
	int port;
	char extra[1024];   /* extra flags, space separated */
} hsrv;

/* Start parleyd with extra flags (may be ""), e.g. "--shards 2". Aborts the
 * test run if it does not come up. */
void h_start(hsrv *s, const char *extra);
/* The same with the data directory (and secret) under parent, not /tmp */
void h_start_in(hsrv *s, const char *parent, const char *extra);
/* SIGTERM and wait; returns the exit status (-1 if it had to be killed). */
int h_stop(hsrv *s);
void h_kill9(hsrv *s);
void h_restart(hsrv *s); /* after h_kill9 or h_stop(keep): same data */
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

/* CLOCK_MONOTONIC in ms */
uint64_t now_ms(void);
void sleep_until(uint64_t t); /* until now_ms() >= t */

#endif
