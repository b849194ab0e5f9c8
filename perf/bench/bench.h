/*
 * parley-bench: the load generator of perf/. main.c reads the command line,
 * sets up (channels, invitations, the publisher) and measures the server;
 * child.c is one client process holding thousands of connections in one
 * epoll loop; conn.c is one connection to parleyd, nats-server (WebSocket)
 * or redis-server, from its non-blocking handshake to the parsed frames;
 * stats.c has the clock, the histogram, the body tag, /proc and /metrics.
 *
 * Every published message carries a tag at the start of its body, the same
 * bytes for the three servers:
 *     "PB" 16 hex digits (CLOCK_MONOTONIC ns when published; the clock is
 *          system-wide, so processes compare their readings)
 *          8 hex digits  (message index)
 *          8 hex digits  (the sender's user index, small: its own copy
 *                         does not count)
 * padded with 'x' to the body size.
 *
 * Presence changes and search queries carry no tag: the parent tells the
 * client processes when it sent each change (CMD_CHANGE), and times
 * queries itself.
 */
#ifndef PARLEY_BENCH_H
#define PARLEY_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/client.h"

/* ---- stats.c: clock, histogram, tag, server numbers ---------------------- */

uint64_t now_ns(void);
double proc_cpu_s(int pid);   /* utime + stime in seconds; -1 if unreadable */
uint64_t proc_rss(int pid);   /* VmRSS in bytes; 0 if unreadable */

/* 64 sub-buckets per power of two of nanoseconds (< 1.6% error); merged
 * between processes by adding counts. */
#define HIST_SUB 64
#define HIST_N (64 * HIST_SUB)

typedef struct hist {
	uint64_t n, max;
	uint64_t c[HIST_N];
} hist;

void hist_add(hist *h, uint64_t ns);
void hist_merge(hist *into, const hist *h);
double hist_pct_ms(const hist *h, double p); /* p in [0,1]; 1 = max */

#define TAG_LEN 34
#define BODY_MIN 40

typedef struct btag {
	uint64_t sent_ns;
	uint32_t idx, from;
} btag;

void tag_body(char *out, size_t size, const btag *t); /* size >= TAG_LEN */
int tag_parse(const void *p, size_t len, btag *t);    /* 0 or -1 */

/* parleyd's /metrics, family parley_stage_seconds: taken before and after
 * the measured window; stages_json() gives the deltas per stage as a JSON
 * object (malloc'd) and prints a table on stderr unless quiet. */
typedef struct stages stages;
stages *stages_read(const char *host, int port); /* NULL: none there */
char *stages_json(const stages *before, const stages *after, bool quiet);
void stages_free(stages *s);
/* GET path from host:port (HTTP/1.1, Connection: close): the body,
 * malloc'd and NUL-terminated, or NULL (no answer, not 200) */
char *http_get(const char *host, int port, const char *path);
/* --tls: http_get to this port speaks https (0: none) */
extern int bench_tls_port;
/* The number after "key": in a flat JSON object, or the value of the
 * Prometheus sample whose name (with its labels) is key; -1 if absent. */
double json_num(const char *text, const char *key);
double prom_num(const char *text, const char *key);

/* ---- conn.c: one connection ---------------------------------------------- */

enum bsrv { SRV_PARLEY, SRV_NATS, SRV_REDIS };

enum bstate {
	BS_NONE,       /* not started */
	BS_CONNECTING, /* TCP connect, WebSocket upgrade */
	BS_SETUP,      /* parley: hello sent; NATS: INFO, CONNECT..PONG;
			* Redis: SUBSCRIBE sent (publisher: connect only) */
	BS_READY,
	BS_DEAD,
};

typedef struct bconn {
	pc_conn *pc;   /* parley and NATS */
	int fd;
	uint8_t srv, state;
	uint8_t phase; /* NATS setup: 0 waiting for INFO, 1 for PONG */
	bool sub;      /* NATS/Redis: subscribe to the run's subject */
	bool want_out; /* EPOLLOUT is in the interest set */
	uint32_t id;   /* index in its process; user index for parley */
	/* fanout: the next index this member should get, its last seq */
	uint32_t next_idx;
	uint64_t last_seq;
	/* small/acks: the sender's channel, sends in flight, next rid */
	uint32_t chan, inflight;
	uint64_t last_rid;
	uint64_t hb_at; /* idle, hb, presence: next heartbeat */
	/* search fill: sends made and answered by this sender */
	uint32_t nsent, nacked;
	/* NATS/Redis: bytes of the stream not parsed yet */
	char *acc;
	uint32_t acclen, acccap;
	/* Redis: bytes the socket did not take yet */
	char *out;
	uint32_t outlen, outoff, outcap;
} bconn;

typedef struct bopts {
	enum bsrv srv;
	const char *host;
	int port;
	/* --port P1,P2,..: parley's fanout and acks spread their connections
	 * over these (bo_port); nports is 1 otherwise, ports[0] == port */
	int ports[16], nports;
	const uint8_t *key; /* parley: the JWT secret */
	size_t keylen;
	const char *ws, *prefix;
	char subject[64];   /* NATS/Redis: "pb.<prefix>" */
	bool own_subject;   /* Redis idle: each connection its own channel
			     * "<subject>.<id>" */
} bopts;

extern bopts bo;

/* What a connection hands on; set by whoever drives the connections. */
typedef struct bhooks {
	void (*ready)(bconn *b);
	/* a tagged message (parley: a msg event; seq 0 for NATS/Redis) */
	void (*deliver)(bconn *b, const btag *t, uint64_t seq);
	/* parley: a response; Redis publisher: a PUBLISH reply (rid 0, the
	 * receiver count in n) */
	void (*res)(bconn *b, uint64_t rid, bool ok, uint64_t n);
	/* an error frame, a NATS -ERR, a Redis error */
	void (*error)(bconn *b, const char *what, size_t len);
	/* parley: {"t":"presence"} (strings not NUL-terminated) */
	void (*presence)(bconn *b, const char *user, uint32_t ulen,
			 const char *status, uint32_t slen);
	/* parley: when set, a response is handed over whole (the bench
	 * decodes the few it needs to read) instead of to res */
	void (*resframe)(bconn *b, uint64_t rid, bool ok, const uint8_t *d,
			 size_t len);
} bhooks;

extern const bhooks *hooks;

/* The port connection id talks to: ports[id % nports]. */
int bo_port(uint32_t id);

/* "<prefix>u<i>"; the owner of fanout's channel is "<prefix>owner" */
void user_name(uint32_t i, char *out, size_t cap);
char *mint(const char *user);              /* malloc'd JWT */
const char *src_ip(uint32_t i, char *buf); /* 127.0.0.2 .. 127.0.0.254 */

/* Starts the handshake of connection id (parley: as user id, with a token
 * minted when the upgrade is done; source address src_ip(id)):
 * b->state becomes BS_CONNECTING (0) or the start failed (-1). The caller puts b->fd into its epoll set with bconn_events. */
int bconn_start(bconn *b, uint32_t id, bool sub);
/* Adopt a parley connection that finished hello (the owner, the setup
 * connections). */
void bconn_adopt(bconn *b, pc_conn *pc, uint32_t id);
/* epoll said ev (EPOLLIN/EPOLLOUT/...): handshake steps, reads, hooks.
 * 0, or -1 when the connection is gone (state BS_DEAD). */
int bconn_io(bconn *b, uint32_t ev);
/* The epoll events b waits for now. */
uint32_t bconn_events(const bconn *b);
/* Queue bytes (a WebSocket binary message for parley/NATS, raw for Redis)
 * and write what the socket takes. 0 or -1. */
int bconn_send(bconn *b, const void *data, size_t len);
bool bconn_pending(const bconn *b);
void bconn_close(bconn *b);
/* Blocking: steps b until ready or timeout (parent's publisher). 0/-1. */
int bconn_wait_ready(bconn *b, int timeout_ms);

/* Encoders of what the bench sends; out gets the bytes, returns the
 * length. parley send: cmid "<hex rid>". */
size_t enc_parley_send(uint8_t *out, size_t cap, const char *ch,
		       uint64_t rid, const char *body, size_t blen);
size_t enc_nats_pub(uint8_t *out, size_t cap, const char *body, size_t blen);
size_t enc_redis_pub(uint8_t *out, size_t cap, const char *body, size_t blen);
/* XADD <subject>.<id> * f <body>: acks against Redis, one stream per
 * sender (as parley's acks give each sender a channel of its own) */
size_t enc_redis_xadd(uint8_t *out, size_t cap, uint32_t id, const char *body,
		      size_t blen);
/* {"op":"hb"} without rid, and presence.watch / presence.set with one */
extern const uint8_t enc_hb[7];
size_t enc_parley_watch(uint8_t *out, size_t cap, uint64_t rid,
			const char *user);
size_t enc_parley_set(uint8_t *out, size_t cap, uint64_t rid,
		      const char *status);

/* ---- conn.c: text for search --------------------------------------------- */

/* A vocabulary of n made-up words (the same for a given n in every process:
 * a fixed seed), shorter words more frequent, drawn with Zipf-like
 * frequencies (the word of rank r with weight 1/(r+1)). */
typedef struct vocab {
	uint32_t n;
	char **w;
	double *cdf;
} vocab;

int vocab_init(vocab *v, uint32_t n);          /* 0 or -1 */
uint64_t rnd(uint64_t *s);                     /* xorshift64*; *s != 0 */
uint32_t vocab_zipf(const vocab *v, uint64_t *s); /* a rank, Zipf-drawn */
/* A message of 4 to 24 Zipf-drawn words, NUL-terminated; its length. */
size_t vocab_text(const vocab *v, uint64_t *s, char *out, size_t cap);

/* ---- child.c: one client process ------------------------------------------ */

enum scen { SC_FANOUT, SC_SMALL, SC_ACKS, SC_IDLE, SC_HB, SC_PRESENCE,
	    SC_SEARCH, SC_PUSH };

/* push: the two kinds of client process (brun.phase) */
enum { PUSH_REGISTER = 1, /* hello, push.register, close; the next user */
       PUSH_ONLINE };     /* hello, push.register, stay and heartbeat */

/* What the children need to know, set by main.c before fork(). */
typedef struct brun {
	enum scen scen;
	uint32_t nmsg;      /* fanout: messages */
	uint32_t size;      /* body bytes */
	uint32_t total;     /* connections over all children */
	uint32_t inflight;  /* acks */
	double rate;        /* small: sends per second, all children */
	uint32_t hb_ms;     /* idle, hb, presence: 0 = no heartbeats */
	char (*chans)[PROTO_MAX_ID + 1]; /* small: channel of uid i is i/10;
					  * acks: of sender i is i;
					  * search: channel j is sender
					  * j % senders' */
	/* presence: whom the watchers watch; changes, alternately "dnd"
	 * (even index) and "online" (odd) */
	char subject[96];
	uint32_t nchange;
	/* search fill: messages in all, senders, channels */
	uint64_t msgs;
	uint32_t senders, nchan;
	vocab words;
	/* push: which kind of process (PUSH_REGISTER, PUSH_ONLINE) */
	uint32_t phase;
} brun;

extern brun run;

/* child -> parent: fixed-size records on a pipe */
enum { R_READY = 1, R_DONE, R_DEAD, R_FAIL, R_FINAL };

struct report {
	uint32_t kind;
	uint32_t idx; /* R_DONE: message; R_DEAD/R_FAIL: connection id */
	uint64_t a;   /* R_READY: when the last got ready; R_DONE: when
		       * the last delivery of idx arrived (search: when the
		       * last of this process' sends was answered) */
};

/* after R_FINAL */
struct final {
	uint64_t errors, deliveries, acks, dead;
	uint64_t hbs; /* heartbeats sent in the measured window */
	hist lat, ack;
};

/* parent -> child: one byte each */
#define CMD_GO 'G'      /* small/acks: start sending */
#define CMD_MEASURE 'M' /* the measured window begins */
#define CMD_END 'E'     /* ... ends; small/acks stop sending */
#define CMD_STOP 'S'    /* report R_FINAL and exit */
/* presence: CMD_CHANGE, then struct change: the parent sends change idx
 * (presence.set) at sent_ns */
#define CMD_CHANGE 'C'

struct change {
	uint32_t idx;
	uint64_t sent_ns;
};

/* Connections [from, to) (user indexes); never returns. */
void child_main(uint32_t from, uint32_t to, int out, int in, pid_t parent)
	__attribute__((noreturn));

#endif
