/*
 * parley-bench: the load generator of perf/. Shared pieces: clocks, the
 * latency histogram, the server's /proc numbers, the message tag, and the
 * three servers' wire protocols (driver.c).
 *
 * Every published message carries a tag in its body, the same bytes for
 * parley, NATS and Redis:
 *     "PBT:" 16 hex digits (CLOCK_MONOTONIC ns when published)
 *            8 hex digits  (message index)
 * padded with 'x' to the body size. Receivers find tags with memmem in
 * whatever the server sent (a msgpack event, a NATS MSG, a RESP array), so
 * the three are measured by the same code.
 */
#ifndef PARLEY_BENCH_H
#define PARLEY_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/client.h"

/* ---- clocks and /proc --------------------------------------------------- */

uint64_t now_ns(void);
/* utime + stime of pid in seconds; -1 if unreadable */
double proc_cpu_s(int pid);
/* VmRSS of pid in bytes; 0 if unreadable */
uint64_t proc_rss(int pid);

/* ---- histogram: 64 sub-buckets per power of two of nanoseconds ---------- */

#define HIST_SUB 64
#define HIST_N (64 * HIST_SUB)

typedef struct hist {
	uint64_t n, max;
	uint64_t c[HIST_N];
} hist;

void hist_add(hist *h, uint64_t ns);
void hist_merge(hist *into, const hist *h);
double hist_pct_ms(const hist *h, double p); /* p in [0,1] */

/* ---- tags ------------------------------------------------------------------ */

#define TAG_LEN 28 /* "PBT:" + 16 + 8 */

/* Writes a body of size bytes (>= TAG_LEN) into out. */
void tag_body(char *out, size_t size, uint64_t sent_ns, uint32_t idx);
/* Parses a tag at p (TAG_LEN bytes). 0 or -1. */
int tag_parse(const char *p, uint64_t *sent_ns, uint32_t *idx);

/* ---- drivers: one subscriber or publisher connection --------------------- */

enum bsrv { SRV_PARLEY, SRV_NATS, SRV_REDIS };

typedef struct bconn {
	enum bsrv srv;
	int fd;
	pc_conn *pc;      /* parley and NATS (WebSocket) */
	char *acc;        /* NATS / Redis: unparsed stream bytes */
	size_t acclen, acccap;
	uint32_t next_idx; /* the next message index this member should get */
	uint32_t uid;      /* user index (parley) */
	bool dead;
} bconn;

typedef struct bopts {
	enum bsrv srv;
	const char *host;
	int port;
	const uint8_t *key;  /* parley: the JWT secret */
	size_t keylen;
	const char *ws, *prefix;
} bopts;

/* Source address for connection i: 127.0.0.2 .. 127.0.0.254. */
const char *src_ip(unsigned i, char *buf);

/* Blocking setup of a subscriber (parley: hello as user uid; NATS: CONNECT,
 * SUB, PING/PONG; Redis: SUBSCRIBE and its confirmation). On success the
 * socket is non-blocking and ready for the epoll loop. 0 or -1. */
int bconn_open_sub(bconn *b, const bopts *o, uint32_t uid, unsigned srcidx,
		   const char *subject);
/* Read what is there; call fn for every tag found (and answer NATS PINGs).
 * Returns -1 when the connection closed. */
typedef void (*tag_fn)(void *arg, bconn *b, uint64_t sent_ns, uint32_t idx);
int bconn_on_readable(bconn *b, tag_fn fn, void *arg);
void bconn_close(bconn *b);

/* parley: a user's token */
char *mint(const bopts *o, const char *user);
/* parley: "<prefix>u<i>" */
void user_name(const bopts *o, uint32_t i, char *out, size_t cap);

#endif
