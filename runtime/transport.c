/*
 * Transport: the sockets of a shard. Accepts on the shard's own listener
 * and reads each new connection's request head itself (on the shard's
 * libuv loop). A WebSocket upgrade of /ws is answered here, and the
 * connection then speaks RFC 6455 through this file's own framing: frames
 * are checked (masking, reserved bits, opcodes, control frames, close
 * codes, UTF-8), messages are reassembled (up to max_frame; beyond: close
 * 1009) and handed to the actors' on_frame hook; output is queued per
 * connection and written at the end of the loop turn. Any other request is
 * handed, unread (the head is only peeked at), to libwebsockets, which runs the
 * plain HTTP side (REST, /metrics, /healthz) through callback() below.
 * libwebsockets' own WebSocket parser is not used: Debian's 4.1 accepts
 * unmasked frames, answers some closes with 1005, sends 1009 twice.
 *
 * Reading: a readable connection is read until the kernel has no more or
 * its share of the turn (READ_TURN_MAX) is used up, so that a pipelining
 * client's backlog becomes one batch (one commit, one fan-out turn) and a
 * flooding one cannot hold the shard.
 *
 * Writing: frames queued on a connection during a loop turn are written at
 * the end of that turn, with their WebSocket headers back to back, in ONE
 * send() straight to the socket: one syscall per connection per turn, not
 * one per frame. What the kernel does not take is kept (wpend) and written
 * when the socket is writable; nothing is written around it, so frames
 * never interleave.
 *
 * Slow consumers (see docs/protocol.md, Limits): while more than max_outbuf
 * bytes wait, no further request is read from the connection (the rest of
 * what was read waits in `stash`), so what a client's own requests queue
 * stays near max_outbuf. The layer above may hold reading too
 * (rt_conn_pause: the session's requests in flight), by the same means;
 * reading resumes once neither holds it. A connection is closed with 4008
 * when the kernel has refused bytes (its buffers toward the client are
 * full) and takes none for RT_OUTBUF_STALL_MS, or when what waits passes
 * RT_OUTBUF_MAX_FACTOR * max_outbuf while the kernel refuses more (output
 * the client did not ask for, fan-out, arriving faster than it reads). A
 * client that keeps reading is not closed for pipelining large answers.
 *
 * Closing (ours or the peer's): what is queued, then the close frame, then
 * shutdown(SHUT_WR); the socket is then read and discarded until the peer
 * closes or LINGER_MS pass, and only then closed. close() with unread input
 * sends a reset, and a reset makes the peer's kernel drop what it has not
 * yet delivered: the close code and the last answers.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#include "runtime/shard.h"
#include "runtime/log.h"

#include <liburing.h>
#include <uv.h>

#define WBUF_CAP (256 * 1024)
#define RBUF_CAP (64 * 1024)
/* One connection's share of a loop turn's reading: what it sent beyond
 * that is read on the next turn, so a client that floods cannot hold the
 * shard in its read loop (see conn_poll_cb). 256 KiB, like a turn's
 * write, is about a thousand typical requests: a backlog that size
 * becomes one batch; a few milliseconds of parsing at most. READ_TURN_READS
 * bounds the reads themselves (TLS: one record each). */
#define READ_TURN_MAX (256 * 1024)
#define READ_TURN_READS 64
#define HTTP_BODY_MAX (1024 * 1024)
#define HEAD_MAX (16 * 1024)   /* request head: beyond, 431 */
#define HEAD_MS 10000          /* a head not complete by then: 408 */
#define LINGER_MS 2000         /* reading after our close, at most */
#define CLOSE_FLUSH_MS 10000   /* closing, no write progress: drop it */

#define BR_CAP (16 * 1024)     /* TLS HTTP bridge: bytes in flight each way */

enum { ST_HEAD, ST_OPEN, ST_CLOSING, ST_LINGER, ST_BRIDGE };

struct bridge;

/* A connection. WebSocket ones (ws) are ours: calloc'd on accept, freed
 * after their poll handle closed. HTTP ones live in libwebsockets'
 * per-session memory (allocated with the wsi, freed after
 * LWS_CALLBACK_CLOSED_HTTP) and use only the fields marked HTTP, which
 * share their memory with the WebSocket ones (ws says which are live).
 * Only the owning shard's thread touches either. */
struct rt_conn {
	struct rt_shard *shard;
	rt_conn_id id;          /* 0 until it has a slot */
	void *user;
	bool ws;
	union {
	struct { /* ---- ours: request head, then WebSocket ---- */
	uint8_t state;          /* ST_* */
	uint8_t ev;             /* poll events asked for */
	bool dirty;             /* on the shard's list of connections to write */
	bool paused;            /* not reading: too much output waits, or held */
	bool held;              /* the layer above paused reading (rt_conn_pause) */
	bool watched;           /* on the shard's watch list (tick checks) */
	bool close_sent;        /* our close frame is in wpend or on the wire */
	bool finished;          /* on_close ran, the slot is free */
	uint16_t close_code;
	int fd;
	uv_poll_t poll;         /* poll.data = this connection */
	struct rt_conn *wprev, *wnext; /* watch list */
	uint64_t deadline_ms;   /* ST_HEAD, ST_LINGER */
	uint64_t progress_ms;   /* last time the kernel took bytes from us */
	rt_buf **q;             /* output ring */
	uint32_t qhead, qlen, qcap;
	size_t qbytes;
	uint8_t *wpend;         /* what the kernel did not take (malloc'd) */
	size_t wpend_len, wpend_off;
	uint8_t *pong;          /* [len, payload...] of a pong to send */
	uint8_t *stash;         /* read but not parsed (paused), malloc'd */
	size_t stash_len;
	uint8_t *rx;            /* message reassembly */
	size_t rxlen, rxcap;
	/* frame parser */
	uint64_t plen;          /* payload bytes left in the current frame */
	uint8_t hdr[14], hdrlen, hdrneed;
	uint8_t op;             /* current frame's opcode */
	uint8_t msg_op;         /* 1/2 while a fragmented message is open */
	uint8_t mpos;           /* payload offset mod 4, for the mask */
	bool fin;
	uint8_t ctllen;
	uint8_t ctl[125];       /* a control frame's payload */
	/* TLS (a certificate is configured): all of the above goes
	 * through ssl; the head is read (not peeked) into head */
	SSL *ssl;
	bool tls_ww;            /* the handshake waits to write */
	bool tls_dead;          /* a fatal TLS error: no close_notify */
	uint8_t *head;          /* TLS: the request head read so far */
	size_t head_len;
	struct bridge *br;      /* ST_BRIDGE: an HTTP request, to lws */
	};
	struct { /* ---- HTTP (lws) ---- */
	struct lws *wsi;
	bool close_now;
	char *http_uri;
	uint8_t *http_body;
	size_t http_body_len;
	bool http_body_wait;  /* a body follows the headers: answer after it */
	bool http_dispatched; /* on_http has seen this request */
	bool http_close;      /* close once the answer is written */
	bool http_pending;  /* has an id; its answer has not been written */
	bool http_dispatching; /* inside on_http: it writes the answer */
	bool http_streaming;  /* a streamed body is being read (begin..end) */
	const char *http_method;
	uint64_t http_t0_ms;
	uint64_t http_clen;   /* streamed: Content-Length */
	uint64_t http_got;    /* streamed: body bytes handed over so far */
	uint64_t file_sent;   /* a file answer: bytes written so far */
	rt_http_resp resp;
	};
	};
};

static void conn_poll_cb(uv_poll_t *h, int status, int events);

static uint64_t mono_ms(void) { return rt_mono_us() / 1000; }

/* ---- TLS or not: recv() and send() of our connections ------------------ */

/* What SSL_read/SSL_write's failure means, as recv/send would say it:
 * -1 with EAGAIN (try again when poll says so), 0 (the peer closed), or
 * -1 with another errno (broken; no close_notify any more). */
static ssize_t tls_result(rt_conn *c, int r, bool write)
{
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		if (!write)
			return 0;
		errno = EPIPE;
		return -1;
	default:
		c->tls_dead = true;
		ERR_clear_error();
		errno = ECONNRESET;
		return -1;
	}
}

static ssize_t io_recv(rt_conn *c, void *p, size_t n)
{
	int r;

	if (!c->ssl)
		return recv(c->fd, p, n, MSG_DONTWAIT);
	if (c->tls_dead) {
		errno = ECONNRESET;
		return -1;
	}
	ERR_clear_error();
	r = SSL_read(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
	return r > 0 ? r : tls_result(c, r, false);
}

/* A TLS write refused with EAGAIN must be retried with the same bytes
 * (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets them move): callers keep what
 * was not taken and write exactly that next. */
static ssize_t io_send(rt_conn *c, const void *p, size_t n)
{
	int r;

	if (!c->ssl)
		return send(c->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (c->tls_dead) {
		errno = ECONNRESET;
		return -1;
	}
	if (!n)
		return 0;
	ERR_clear_error();
	r = SSL_write(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
	return r > 0 ? r : tls_result(c, r, true);
}

rt_conn_id rt_conn_get_id(const rt_conn *c) { return c->id; }
void *rt_conn_user(rt_conn *c) { return c->user; }
void rt_conn_set_user(rt_conn *c, void *u) { c->user = u; }
size_t rt_conn_queued(const rt_conn *c)
{
	if (!c->ws)
		return 0;
	return c->qbytes + (c->wpend ? c->wpend_len - c->wpend_off : 0);
}

const char *rt_conn_peer(rt_conn *c)
{
	static __thread char buf[64];
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	char ip[INET_ADDRSTRLEN] = "?";
	int fd = c->ws ? c->fd : lws_get_socket_fd(c->wsi);

	memset(&sa, 0, sizeof(sa));
	if (getpeername(fd, (struct sockaddr *)&sa, &sl) == 0)
		inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof(ip));
	snprintf(buf, sizeof(buf), "%s:%u", ip, ntohs(sa.sin_port));
	return buf;
}

rt_conn *rt_conn_find(rt_shard *s, rt_conn_id id)
{
	uint32_t slot = (uint32_t)id;

	if (rt_conn_shard(id) != s->id || slot >= s->nslots)
		return NULL;
	rt_conn *c = s->slots[slot];
	return c && c->id == id ? c : NULL;
}

uint32_t rt__transport_count(struct rt_shard *s)
{
	return s->nslots - s->nfree;
}

static void slot_add(struct rt_shard *s, rt_conn *c)
{
	uint32_t slot;

	if (s->nfree) {
		slot = s->free_slots[--s->nfree];
	} else {
		if (s->nslots == s->cap_slots) {
			s->cap_slots = s->cap_slots ? s->cap_slots * 2 : 1024;
			s->slots = realloc(s->slots,
					   s->cap_slots * sizeof(*s->slots));
			s->free_slots = realloc(s->free_slots,
						s->cap_slots * sizeof(uint32_t));
		}
		slot = s->nslots++;
	}
	s->gen = (s->gen + 1) & 0xffffff;
	c->id = ((uint64_t)s->id << 56) | ((uint64_t)s->gen << 32) | slot;
	s->slots[slot] = c;
}

static void slot_del(struct rt_shard *s, rt_conn *c)
{
	uint32_t slot = (uint32_t)c->id;

	if (slot < s->nslots && s->slots[slot] == c) {
		s->slots[slot] = NULL;
		s->free_slots[s->nfree++] = slot;
	}
}

static void q_clear(rt_conn *c)
{
	while (c->qlen) {
		rt_buf_unref(c->q[c->qhead]);
		c->qhead = (c->qhead + 1) & (c->qcap - 1);
		c->qlen--;
	}
	c->qbytes = 0;
}

/* ---- the watch list: what the tick looks at ---------------------------- */

/* Connections with a deadline or a stall to check: a head being read, a
 * linger, output the kernel refused, reading paused, a close in progress.
 * Idle connections are not on it, so the tick costs nothing for them. */
static void watch(rt_conn *c, bool on)
{
	struct rt_shard *s = c->shard;

	if (on == c->watched)
		return;
	c->watched = on;
	if (on) {
		c->wprev = NULL;
		c->wnext = s->watch;
		if (s->watch)
			s->watch->wprev = c;
		s->watch = c;
	} else {
		if (c->wprev)
			c->wprev->wnext = c->wnext;
		else
			s->watch = c->wnext;
		if (c->wnext)
			c->wnext->wprev = c->wprev;
		c->wprev = c->wnext = NULL;
	}
}

static void watch_update(rt_conn *c)
{
	/* (a bridge stays on it: the end frees it) */
	watch(c, c->state != ST_OPEN || c->wpend || c->paused);
}

/* Ask libuv for what the connection waits for now: input unless paused or
 * lingering is done, output while the kernel refused some (or to resume a
 * paused reader on the next turn). */
static void set_events(rt_conn *c)
{
	uint8_t ev = 0;
	size_t max = c->shard->cfg->max_outbuf;

	if (!c->paused)
		ev |= UV_READABLE;
	if (c->wpend || c->tls_ww ||
	    (c->paused && !c->held && rt_conn_queued(c) <= max / 2 &&
	     c->state == ST_OPEN))
		ev |= UV_WRITABLE;
	if (ev != c->ev) {
		c->ev = ev;
		if (ev)
			uv_poll_start(&c->poll, ev, conn_poll_cb);
		else
			uv_poll_stop(&c->poll);
	}
	watch_update(c);
}

void rt_conn_pause(rt_conn *c)
{
	if (!c->ws || c->held)
		return;
	c->held = true;
	if (c->state != ST_OPEN)
		return;
	/* mid-parse (from on_frame), ws_parse stops after this message and
	 * its caller keeps the rest in the stash */
	c->paused = true;
	set_events(c);
}

void rt_conn_resume(rt_conn *c)
{
	if (!c->ws || !c->held)
		return;
	c->held = false;
	/* the next writable turn parses the stash and reads again, unless
	 * output still holds it (see conn_poll_cb) */
	if (c->state == ST_OPEN && c->paused)
		set_events(c);
}

static void free_conn_cb(uv_handle_t *h)
{
	free(h->data);
}

static void bridge_free(rt_conn *c);

/* The end of one of our connections: the socket is closed, the memory
 * goes once libuv let go of the handle. */
static void conn_destroy(rt_conn *c)
{
	watch(c, false);
	q_clear(c);
	free(c->q);
	free(c->rx);
	free(c->wpend);
	free(c->pong);
	free(c->stash);
	c->q = NULL;
	c->rx = c->wpend = c->pong = c->stash = NULL;
	if (c->br)
		bridge_free(c);
	free(c->head);
	c->head = NULL;
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	/* uv_close stops the watcher at once (before the fd is closed and
	 * its number reused); only the callback waits for the next turn. */
	uv_close((uv_handle_t *)&c->poll, free_conn_cb);
	close(c->fd);
}

/* The WebSocket is over for the layer above: on_close, the slot is free.
 * The socket may still linger. */
static void ws_finish(rt_conn *c)
{
	struct rt_shard *s = c->shard;

	if (c->finished || !c->id)
		return;
	c->finished = true;
	s->cfg->hooks->on_close(s, c);
	slot_del(s, c);
	c->id = 0;
	RT_STAT_ADD(s->conns_open, (uint64_t)-1);
}

/* Broken, or out of time: no close handshake, closed now. */
static void conn_abort(rt_conn *c)
{
	char sink[4096];

	ws_finish(c);
	/* Unread input would turn the close into a reset. */
	for (int i = 0; i < 16; i++)
		if (recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT) <= 0)
			break;
	conn_destroy(c);
}

/* Everything is written (the close frame or an HTTP refusal last): send
 * FIN and read until the peer closes. */
static void conn_linger(rt_conn *c)
{
	ws_finish(c);
	q_clear(c);
	free(c->rx);
	free(c->stash);
	free(c->pong);
	c->rx = c->stash = c->pong = NULL;
	c->rxlen = c->rxcap = c->stash_len = 0;
	free(c->head);
	c->head = NULL;
	if (c->br)
		bridge_free(c);
	if (c->ssl && !c->tls_dead && SSL_is_init_finished(c->ssl)) {
		ERR_clear_error();
		SSL_shutdown(c->ssl); /* close_notify, if the kernel takes it */
		ERR_clear_error();
	}
	c->tls_ww = false;
	shutdown(c->fd, SHUT_WR);
	c->state = ST_LINGER;
	c->paused = false;
	c->deadline_ms = mono_ms() + LINGER_MS;
	set_events(c);
}

/* ---- output --------------------------------------------------------------- */

static void http_reply(struct lws *wsi, rt_conn *c);

/* A frame for an HTTP connection: the layer above turns it into the
 * response (the first one that does wins; later ones are dropped). */
static int http_answer(rt_conn *c, const uint8_t *data, size_t len)
{
	struct rt_shard *s = c->shard;

	if (!c->http_pending || c->resp.status || !s->cfg->hooks->on_http_answer)
		return -1;
	s->cfg->hooks->on_http_answer(s, c, data, len, &c->resp);
	if (c->resp.status && !c->http_dispatching)
		http_reply(c->wsi, c);
	return 0;
}

static void mark_dirty(rt_conn *c)
{
	struct rt_shard *s = c->shard;

	if (c->dirty || c->wpend || !c->id)
		return; /* a blocked connection is written when writable */
	if (s->ndirty == s->cap_dirty) {
		s->cap_dirty = s->cap_dirty ? 2 * s->cap_dirty : 256;
		s->dirty = realloc(s->dirty, s->cap_dirty * sizeof(*s->dirty));
	}
	s->dirty[s->ndirty++] = c->id;
	c->dirty = true;
}

static void slow_close(rt_conn *c)
{
	RT_STAT_ADD(c->shard->closed_slow, 1);
	q_clear(c); /* not taken: dropped; the client resumes */
	rt_conn_close(c, 4008, "slow consumer");
}

int rt_conn_send(rt_conn *c, rt_buf *b)
{
	if (!c->ws)
		return http_answer(c, b->data, b->len);
	if (c->state != ST_OPEN)
		return -1;
	/* Only while the kernel refuses bytes (wpend) does the bound apply:
	 * what one turn queues for a connection that took everything last
	 * time is written at turn end. */
	if (c->wpend) {
		size_t max = c->shard->cfg->max_outbuf;
		size_t q = rt_conn_queued(c) + b->len;

		if (q > RT_OUTBUF_MAX_FACTOR * max ||
		    mono_ms() - c->progress_ms >= RT_OUTBUF_STALL_MS) {
			slow_close(c);
			return -1;
		}
	}
	if (c->qlen == c->qcap) {
		uint32_t ncap = c->qcap ? c->qcap * 2 : 8;
		rt_buf **nq = malloc(ncap * sizeof(*nq));

		for (uint32_t i = 0; i < c->qlen; i++)
			nq[i] = c->q[(c->qhead + i) & (c->qcap - 1)];
		free(c->q);
		c->q = nq;
		c->qhead = 0;
		c->qcap = ncap;
	}
	rt_buf_ref(b, 1);
	c->q[(c->qhead + c->qlen) & (c->qcap - 1)] = b;
	c->qlen++;
	c->qbytes += b->len;
	mark_dirty(c);
	return 0;
}

int rt_conn_send_bytes(rt_conn *c, const void *data, size_t len)
{
	rt_buf *b = rt_buf_new(data, len);
	int rc = rt_conn_send(c, b);

	rt_buf_unref(b);
	return rc;
}

/* The operator hears of the closes that say something about a client or
 * about the server: a flood or a slow reader (1008, 4008), too big a
 * message (1009), our own failure (1011) as warnings; broken framing
 * (1002, 1007) as info; the rest (going away, hello timeouts...) at
 * debug. One call site per level: a flood of one kind does not use up
 * the rate limit of another. */
static void log_close(rt_conn *c, uint16_t code, const char *reason)
{
	if (!reason)
		reason = code == 1002 ? "protocol error" :
			 code == 1007 ? "invalid UTF-8" :
			 code == 1009 ? "message too big" :
			 code == 1011 ? "internal error" : "-";
	if (code == 1008 || code == 1009 || code == 1011 || code == 4008)
		plog(PL_WARN, "net", "closed %s with %u: %s", rt_conn_peer(c),
		     code, reason);
	else if (code == 1002 || code == 1007)
		plog(PL_INFO, "net", "closed %s with %u (bad frame): %s",
		     rt_conn_peer(c), code, reason);
	else if (log_enabled(PL_DEBUG))
		plog(PL_DEBUG, "net", "closing %s with %u: %s",
		     rt_conn_peer(c), code, reason);
}

void rt_conn_close(rt_conn *c, uint16_t code, const char *reason)
{
	if (!c->ws)
		return; /* an HTTP answer ends its own exchange */
	if (c->state != ST_OPEN)
		return;
	log_close(c, code, reason);
	c->state = ST_CLOSING;
	c->close_code = code;
	c->paused = false;
	free(c->stash);
	c->stash = NULL;
	c->stash_len = 0;
	c->progress_ms = mono_ms(); /* CLOSE_FLUSH_MS counts from here */
	mark_dirty(c);
	if (c->wpend)
		watch_update(c);
}

static size_t ws_header(uint8_t *p, uint8_t b0, size_t len)
{
	p[0] = b0;
	if (len < 126) {
		p[1] = (uint8_t)len;
		return 2;
	}
	if (len <= 0xffff) {
		p[1] = 126;
		p[2] = (uint8_t)(len >> 8);
		p[3] = (uint8_t)len;
		return 4;
	}
	p[1] = 127;
	for (int i = 0; i < 8; i++)
		p[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
	return 10;
}

/* Copies a pending pong and as many queued frames as fit in cap bytes at
 * start, with their headers; returns the length. */
static size_t fill_frames(struct rt_shard *s, rt_conn *c, uint8_t *start,
			  size_t cap)
{
	uint8_t *p = start;
	unsigned nframes = 0;
	uint64_t now = 0;

	if (c->pong) {
		p += ws_header(p, 0x8a, c->pong[0]);
		memcpy(p, c->pong + 1, c->pong[0]);
		p += c->pong[0];
		free(c->pong);
		c->pong = NULL;
	}
	while (c->qlen) {
		rt_buf *b = c->q[c->qhead];

		if ((size_t)(p - start) + 10 + (size_t)b->len > cap)
			break;
		p += ws_header(p, 0x82, b->len);
		memcpy(p, b->data, b->len);
		p += b->len;
		c->qbytes -= b->len;
		c->qhead = (c->qhead + 1) & (c->qcap - 1);
		c->qlen--;
		nframes++;
		if (b->kind && s->cfg->hooks->on_sent) {
			if (!now)
				now = rt_mono_us();
			s->cfg->hooks->on_sent(s, b, now);
		}
		rt_buf_unref(b);
	}
	RT_STAT_ADD(s->frames_out, nframes);
	RT_STAT_ADD(s->bytes_out, (uint64_t)(p - start));
	return (size_t)(p - start);
}

/* What fill_frames would write of c: all of it. */
static size_t frames_bytes(const rt_conn *c)
{
	return (c->pong ? 2 + (size_t)c->pong[0] : 0) + c->qbytes +
	       10 * (size_t)c->qlen;
}

/* fill_frames into the shard's write buffer, grown first when the pong
 * and the first frame alone would not fit. */
static size_t fill_write(struct rt_shard *s, rt_conn *c)
{
	size_t need = (c->pong ? 2 + (size_t)c->pong[0] : 0) +
		      (c->qlen ? 10 + (size_t)c->q[c->qhead]->len : 0);

	if (need > s->wbuf_cap) {
		s->wbuf_cap = need;
		s->wbuf = realloc(s->wbuf, need);
	}
	return fill_frames(s, c, s->wbuf, s->wbuf_cap);
}

/* The kernel took n of len bytes at p (n < 0: it failed with err); what it
 * did not take becomes wpend. 0, or -1 when the connection is broken. */
static int send_took(rt_conn *c, const uint8_t *p, size_t len, ssize_t n,
		     int err)
{
	RT_STAT_ADD(c->shard->writes, 1);
	if (n < 0) {
		if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR)
			return -1;
		n = 0;
	}
	if (n > 0)
		c->progress_ms = mono_ms();
	if ((size_t)n < len) {
		RT_STAT_ADD(c->shard->writes_short, 1);
		c->wpend_len = len - (size_t)n;
		c->wpend_off = 0;
		c->wpend = malloc(c->wpend_len);
		if (!c->wpend)
			return -1;
		memcpy(c->wpend, p + n, c->wpend_len);
	}
	return 0;
}

/* One send() of p; see send_took. */
static int send_some(rt_conn *c, const uint8_t *p, size_t len)
{
	ssize_t n = io_send(c, p, len);

	return send_took(c, p, len, n, n < 0 ? errno : 0);
}

/* The close frame: never 1005/1006/1015 (they say "no code" and must not
 * be sent); an empty payload instead. */
static size_t close_frame(uint8_t *f, uint16_t code)
{
	bool none = code < 1000 || code == 1005 || code == 1006 ||
		    code == 1015 || code >= 5000;

	f[0] = 0x88;
	if (none) {
		f[1] = 0;
		return 2;
	}
	f[1] = 2;
	f[2] = (uint8_t)(code >> 8);
	f[3] = (uint8_t)code;
	return 4;
}

/* Write what waits, in order: the kernel's leftover, then the pong and the
 * queue, then (closing) the close frame; then, all written and closing,
 * linger. 0, or -1 when broken (the caller aborts). */
static int conn_write(rt_conn *c)
{
	struct rt_shard *s = c->shard;

	if (c->wpend) {
		ssize_t n = io_send(c, c->wpend + c->wpend_off,
				    c->wpend_len - c->wpend_off);

		RT_STAT_ADD(s->writes, 1);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR)
				return -1;
			n = 0;
		}
		if (n > 0)
			c->progress_ms = mono_ms();
		c->wpend_off += (size_t)n;
		if (c->wpend_off < c->wpend_len)
			return 0;
		free(c->wpend);
		c->wpend = NULL;
	}
	while (c->pong || c->qlen) {
		size_t len = fill_write(s, c);

		if (send_some(c, s->wbuf, len))
			return -1;
		if (c->wpend)
			return 0;
	}
	if (c->state == ST_CLOSING) {
		if (!c->close_sent) {
			uint8_t f[4];

			c->close_sent = true;
			if (send_some(c, f, close_frame(f, c->close_code)))
				return -1;
			if (c->wpend)
				return 0;
		}
		conn_linger(c);
	}
	return 0;
}

/* Write c now; abort it when broken. */
static void conn_flush(rt_conn *c)
{
	if (conn_write(c)) {
		conn_abort(c);
		return;
	}
	if (c->state == ST_OPEN || c->state == ST_CLOSING)
		set_events(c);
}

/* ---- output through io_uring ------------------------------------------- *
 *
 * With a ring, the end of a turn copies each plain connection's frames into
 * one arena and hands the kernel all those sends in one io_uring_enter
 * instead of one send() each. The sends are MSG_DONTWAIT: each completes
 * inline, with what the kernel took or EAGAIN, exactly as send() would say;
 * nothing is in flight once the call returns, and the results go through
 * the same path (send_took) as a send()'s. TLS connections, closing ones
 * and any whose queue does not fit the arena's free space are written
 * after the batch by the send() path. Why: a send() to a loopback socket
 * cost ~6.0 us of kernel CPU and a ring entry ~5.2 (docs/architecture.md,
 * "Writing through io_uring"). */

#define RING_ENTRIES 1024
#define RING_ARENA (1024 * 1024)

struct ring_send {
	rt_conn_id id;
	int fd;
	uint32_t off, len;
	int res;                  /* bytes the kernel took, or -errno */
};

struct rt_ring {
	struct io_uring uring;
	uint8_t *arena;
	struct ring_send out[RING_ENTRIES];
	rt_conn_id *later;        /* dirty connections for the send() path */
	uint32_t nlater, cap_later;
	int broken;               /* errno of a failed io_uring_enter */
};

static void ring_free(struct rt_ring *r)
{
	io_uring_queue_exit(&r->uring);
	free(r->arena);
	free(r->later);
	free(r);
}

/* A ring for shard s, or NULL (the kernel or a seccomp filter refuses
 * io_uring, or no memory): then every write is a send(). */
static struct rt_ring *ring_new(struct rt_shard *s)
{
	struct rt_ring *r = calloc(1, sizeof(*r));
	int rc;

	if (!r)
		return NULL;
	r->arena = malloc(RING_ARENA);
	/* (IORING_SETUP_SINGLE_ISSUER, COOP_TASKRUN, DEFER_TASKRUN: no
	 * measurable difference to these inline sends) */
	rc = r->arena ? io_uring_queue_init(RING_ENTRIES, &r->uring, 0)
		      : -ENOMEM;
	if (rc) {
		if (s->id == 0)
			plog(PL_INFO, "io_uring", "not available (%s): "
			     "writing with send()", strerror(-rc));
		free(r->arena);
		free(r);
		return NULL;
	}
	return r;
}

/* Gives up the ring for good (an io_uring_enter failed): entries it did
 * not take go with it. */
static void ring_drop(struct rt_shard *s)
{
	plog(PL_WARN, "io_uring", "shard %u: io_uring_enter: %s; writing with "
	     "send() from now on", s->id, strerror(s->ring->broken));
	ring_free(s->ring);
	__atomic_store_n(&s->ring, NULL, __ATOMIC_RELAXED);
}

#define RES_NONE INT_MIN

/* Makes the k sends prepared in r->out, in one io_uring_enter, and puts
 * each one's result (bytes taken or -errno) in its res. Should the ring
 * fail, what it did not take is sent with send() and r->broken is set. */
static void ring_submit(struct rt_shard *s, unsigned k)
{
	struct rt_ring *r = s->ring;
	unsigned sub = 0, got = 0;
	int n = 0;

	for (unsigned j = 0; j < k; j++) {
		struct io_uring_sqe *q = io_uring_get_sqe(&r->uring);

		io_uring_prep_send(q, r->out[j].fd, r->arena + r->out[j].off,
				   r->out[j].len, MSG_DONTWAIT | MSG_NOSIGNAL);
		q->user_data = j;
		r->out[j].res = RES_NONE;
	}
	while (sub < k) {
		n = io_uring_submit_and_wait(&r->uring, k - sub);
		if (n == -EINTR)
			continue;
		if (n <= 0)
			break;
		sub += (unsigned)n;
	}
	RT_STAT_ADD(s->ring_submits, 1);
	while (got < sub) {
		struct io_uring_cqe *cqe;
		int rc = io_uring_wait_cqe(&r->uring, &cqe);

		if (rc == -EINTR)
			continue;
		if (rc) {
			n = rc;
			break;
		}
		r->out[cqe->user_data].res = cqe->res;
		io_uring_cqe_seen(&r->uring, cqe);
		got++;
	}
	RT_STAT_ADD(s->ring_sends, got);
	if (got == k)
		return;
	r->broken = n < 0 ? -n : EIO;
	for (unsigned j = 0; j < k; j++) {
		ssize_t m;

		if (r->out[j].res != RES_NONE)
			continue;
		if (j < sub) { /* taken, result lost: the connection goes */
			r->out[j].res = -EIO;
			continue;
		}
		m = send(r->out[j].fd, r->arena + r->out[j].off, r->out[j].len,
			 MSG_DONTWAIT | MSG_NOSIGNAL);
		r->out[j].res = m < 0 ? -errno : (int)m;
	}
}

/* The results of ring_submit, as conn_write would take a send()'s: the
 * rest becomes wpend, what was queued meanwhile or a close frame is
 * written by conn_flush. */
static void ring_results(struct rt_shard *s, unsigned k)
{
	struct rt_ring *r = s->ring;

	for (unsigned j = 0; j < k; j++) {
		struct ring_send *o = &r->out[j];
		rt_conn *c = rt_conn_find(s, o->id);

		if (!c)
			continue;
		if (o->res < 0 ? o->res == -EAGAIN : (uint32_t)o->res < o->len)
			RT_STAT_ADD(s->ring_short, 1);
		if (send_took(c, r->arena + o->off, o->len, o->res < 0 ? -1 : o->res,
			      o->res < 0 ? -o->res : 0)) {
			conn_abort(c);
			continue;
		}
		if (!c->wpend && (c->pong || c->qlen || c->state != ST_OPEN))
			conn_flush(c);
		else if (c->state == ST_OPEN || c->state == ST_CLOSING)
			set_events(c);
	}
}

/* rt__transport_flush with a ring. Connections listed while it runs (an
 * abort's hooks queue frames elsewhere) are taken in a further round. */
static void ring_flush(struct rt_shard *s)
{
	struct rt_ring *r = s->ring;
	uint32_t i = 0;

	while (i < s->ndirty && s->ring) {
		uint32_t end = s->ndirty;
		unsigned k = 0;
		size_t used = 0;

		r->nlater = 0;
		for (; i < end; i++) {
			rt_conn *c = rt_conn_find(s, s->dirty[i]);
			size_t need;

			if (!c)
				continue;
			c->dirty = false;
			if (c->wpend)
				continue; /* written when the socket is writable */
			need = frames_bytes(c);
			if (k && (k == RING_ENTRIES || need > RING_ARENA - used)) {
				ring_submit(s, k);
				ring_results(s, k);
				k = 0;
				used = 0;
				if (r->broken)
					break;
			}
			if (c->ssl || c->state != ST_OPEN || !need ||
			    need > RING_ARENA) {
				if (r->nlater == r->cap_later) {
					r->cap_later = r->cap_later ?
						2 * r->cap_later : 256;
					r->later = realloc(r->later,
						r->cap_later * sizeof(*r->later));
				}
				r->later[r->nlater++] = c->id;
				continue;
			}
			r->out[k].id = c->id;
			r->out[k].fd = c->fd;
			r->out[k].off = (uint32_t)used;
			r->out[k].len = (uint32_t)fill_frames(s, c,
				r->arena + used, RING_ARENA - used);
			used += r->out[k].len;
			k++;
		}
		if (k) {
			ring_submit(s, k);
			ring_results(s, k);
		}
		/* the send() path: after the batch, which it cannot disturb */
		for (uint32_t j = 0; j < r->nlater; j++) {
			rt_conn *c = rt_conn_find(s, r->later[j]);

			if (c && !c->wpend)
				conn_flush(c);
		}
		if (r->broken) {
			ring_drop(s);
			break;
		}
	}
	/* what is left (the ring failed): the send() path */
	for (; i < s->ndirty; i++) {
		rt_conn *c = rt_conn_find(s, s->dirty[i]);

		if (!c)
			continue;
		c->dirty = false;
		if (!c->wpend)
			conn_flush(c);
	}
	s->ndirty = 0;
}

void rt__transport_flush(struct rt_shard *s)
{
	if (s->ring) {
		ring_flush(s);
		return;
	}
	/* A connection may have closed since it was listed: look it up. */
	for (uint32_t i = 0; i < s->ndirty; i++) {
		rt_conn *c = rt_conn_find(s, s->dirty[i]);

		if (!c)
			continue;
		c->dirty = false;
		if (c->wpend)
			continue; /* written when the socket is writable */
		conn_flush(c);
	}
	s->ndirty = 0;
}

/* ---- input: frames ------------------------------------------------------ */

/* RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF. */
static bool utf8_valid(const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t b = p[i];
		size_t k;
		uint32_t cp;

		if (b < 0x80) {
			i++;
			continue;
		}
		if (b >= 0xc2 && b <= 0xdf) {
			k = 1;
			cp = b & 0x1f;
		} else if (b >= 0xe0 && b <= 0xef) {
			k = 2;
			cp = b & 0x0f;
		} else if (b >= 0xf0 && b <= 0xf4) {
			k = 3;
			cp = b & 0x07;
		} else {
			return false;
		}
		if (n - i <= k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((p[i + j] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + j] & 0x3f);
		}
		if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += k + 1;
	}
	return true;
}

/* Fail the connection (RFC 6455 7.1.7): close with code, read nothing
 * more. What is queued still goes first. */
static void ws_fail(rt_conn *c, uint16_t code)
{
	if (code == 1009)
		RT_STAT_ADD(c->shard->closed_too_large, 1);
	rt_conn_close(c, code, NULL);
}

/* A close code a peer may send (RFC 6455 7.4, IANA registry): 1000-1003,
 * 1007-1014, 3000-4999. 1004-1006 and 1015 are reserved or "no code"
 * markers that never appear on the wire. */
static bool close_code_ok(unsigned code)
{
	return (code >= 1000 && code <= 1003) ||
	       (code >= 1007 && code <= 1014) ||
	       (code >= 3000 && code <= 4999);
}

static void on_control(rt_conn *c)
{
	switch (c->op) {
	case 0x9: /* ping: pong with the same payload (the latest ping) */
		if (!c->pong)
			c->pong = malloc(1 + 125);
		if (!c->pong)
			return;
		c->pong[0] = c->ctllen;
		memcpy(c->pong + 1, c->ctl, c->ctllen);
		mark_dirty(c);
		return;
	case 0xa: /* pong: nothing to do */
		return;
	case 0x8: {
		unsigned code;

		if (c->ctllen == 0) {
			rt_conn_close(c, 1000, NULL);
			return;
		}
		if (c->ctllen == 1) {
			ws_fail(c, 1002);
			return;
		}
		code = (unsigned)c->ctl[0] << 8 | c->ctl[1];
		if (!close_code_ok(code)) {
			ws_fail(c, 1002);
			return;
		}
		if (!utf8_valid(c->ctl + 2, c->ctllen - 2u)) {
			ws_fail(c, 1007);
			return;
		}
		rt_conn_close(c, (uint16_t)code, NULL); /* echo it */
		return;
	}
	}
}

/* A whole message: to the layer above, which answers text with BAD_FRAME
 * (binary = false) and keeps the connection open. Text is not checked for
 * UTF-8 here: the contract (PROTOCOL.md) gives every text frame BAD_FRAME
 * and an open connection, and the server never reads text as UTF-8, where
 * RFC 6455 would have it fail invalid text with 1007 (a known deviation,
 * see docs/protocol.md). */
static void on_message(rt_conn *c, const uint8_t *p, size_t len, bool binary)
{
	struct rt_shard *s = c->shard;

	RT_STAT_ADD(s->frames_in, 1);
	s->cfg->hooks->on_frame(s, c, p, len, binary);
}

static void unmask(rt_conn *c, uint8_t *p, size_t n)
{
	const uint8_t *m = c->hdr + c->hdrneed - 4;

	for (size_t i = 0; i < n; i++)
		p[i] ^= m[(c->mpos + i) & 3];
	c->mpos = (uint8_t)((c->mpos + n) & 3);
}

/* The header is complete: check it. 0, or -1 when the connection failed. */
static int frame_start(rt_conn *c)
{
	struct rt_shard *s = c->shard;
	uint8_t b0 = c->hdr[0], b1 = c->hdr[1];
	uint64_t len = b1 & 0x7f;

	if (len == 126) {
		len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
	} else if (len == 127) {
		len = 0;
		for (int i = 0; i < 8; i++)
			len = len << 8 | c->hdr[2 + i];
		if (len >> 63) {
			ws_fail(c, 1002);
			return -1;
		}
	}
	c->fin = b0 & 0x80;
	c->op = b0 & 0x0f;
	c->plen = len;
	c->mpos = 0;
	if (c->op >= 8) {
		c->ctllen = 0;
		return 0; /* checked on its first byte */
	}
	if (c->op == 0 ? !c->msg_op : c->msg_op) {
		/* a continuation of nothing, or a new message inside one */
		ws_fail(c, 1002);
		return -1;
	}
	if (c->op)
		c->msg_op = c->op;
	if (c->rxlen + len > s->cfg->max_frame) {
		ws_fail(c, 1009);
		return -1;
	}
	return 0;
}

/* The first two bytes say how long the header is; check what can be
 * checked on them. */
static int header_first(rt_conn *c)
{
	uint8_t b0 = c->hdr[0], b1 = c->hdr[1], op = b0 & 0x0f;

	if (b0 & 0x70 || !(b1 & 0x80) || (op > 2 && op < 8) || op > 10 ||
	    (op >= 8 && (!(b0 & 0x80) || (b1 & 0x7f) > 125))) {
		/* reserved bits, unmasked, unknown opcode, a control frame
		 * fragmented or over 125 bytes */
		ws_fail(c, 1002);
		return -1;
	}
	c->hdrneed = 2 + ((b1 & 0x7f) == 126 ? 2 : (b1 & 0x7f) == 127 ? 8 : 0) + 4;
	return 0;
}

/* Parses p[0..n) (the shard's read buffer or a stash: unmasked in place).
 * Returns how many bytes it used: fewer than n when it paused (too much
 * output waits) or the connection stopped reading frames. */
static size_t ws_parse(rt_conn *c, uint8_t *p, size_t n)
{
	struct rt_shard *s = c->shard;
	size_t i = 0;

	while (i < n && c->state == ST_OPEN) {
		if (c->hdrlen < 2 || c->hdrlen < c->hdrneed) {
			c->hdr[c->hdrlen++] = p[i++];
			if (c->hdrlen == 2 && header_first(c))
				break;
			if (c->hdrlen < 2 || c->hdrlen < c->hdrneed)
				continue;
			if (frame_start(c))
				break;
		}
		/* payload */
		size_t take = c->plen < n - i ? (size_t)c->plen : n - i;

		if (c->op >= 8) {
			unmask(c, p + i, take);
			memcpy(c->ctl + c->ctllen, p + i, take);
			c->ctllen = (uint8_t)(c->ctllen + take);
		} else if (c->fin && c->op && c->rxlen == 0 && take == c->plen) {
			/* a whole message in this buffer: no copy */
			unmask(c, p + i, take);
			c->msg_op = 0;
			c->hdrlen = c->hdrneed = 0;
			c->plen = 0;
			i += take;
			on_message(c, p + i - take, take, c->op == 2);
			goto next;
		} else if (take) {
			if (c->rxlen + c->plen > c->rxcap) {
				/* reassembly, sized for this frame */
				size_t ncap = c->rxlen + (size_t)c->plen;
				uint8_t *nb = realloc(c->rx, ncap);

				if (!nb) {
					ws_fail(c, 1011);
					break;
				}
				c->rx = nb;
				c->rxcap = ncap;
			}
			unmask(c, p + i, take);
			memcpy(c->rx + c->rxlen, p + i, take);
			c->rxlen += take;
		}
		i += take;
		c->plen -= take;
		if (c->plen)
			continue;
		/* the frame is complete */
		c->hdrlen = c->hdrneed = 0;
		if (c->op >= 8) {
			on_control(c);
			continue;
		}
		if (!c->fin)
			continue;
		{
			bool binary = c->msg_op == 2;
			uint8_t *m = c->rx;
			size_t len = c->rxlen;

			c->msg_op = 0;
			c->rx = NULL;
			c->rxlen = c->rxcap = 0;
			on_message(c, m, len, binary);
			free(m);
		}
next:
		/* Backpressure: while more than max_outbuf waits, or the
		 * layer above holds the connection, read no further
		 * request. */
		if (c->state == ST_OPEN &&
		    (c->held || rt_conn_queued(c) > s->cfg->max_outbuf)) {
			c->paused = true;
			break;
		}
	}
	return i;
}

/* Parse what the paused reader kept, then read the socket again. */
static void ws_resume(rt_conn *c)
{
	uint8_t *st = c->stash;
	size_t n = c->stash_len, used;

	c->paused = false;
	c->stash = NULL;
	c->stash_len = 0;
	if (st) {
		used = ws_parse(c, st, n);
		if (c->paused && used < n) {
			c->stash = malloc(n - used);
			if (c->stash) {
				memcpy(c->stash, st + used, n - used);
				c->stash_len = n - used;
			}
		}
		free(st);
	}
}

/* ---- the request head and the handshake --------------------------------- */

/* An answer to a request head we will not take further: written, then
 * FIN, then the linger reads what else the client sends. */
static int head_refuse(rt_conn *c, int status, const char *text,
		       const char *extra)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf),
			 "HTTP/1.1 %d %s\r\n"
			 "Content-Type: text/plain\r\n"
			 "Content-Length: %zu\r\n"
			 "Connection: close\r\n"
			 "%s\r\n%s\n",
			 status, text, strlen(text) + 1, extra ? extra : "",
			 text);

	c->state = ST_CLOSING;
	c->close_sent = true; /* no close frame: this is HTTP */
	c->progress_ms = mono_ms();
	if (send_some(c, (const uint8_t *)buf, (size_t)n)) {
		conn_abort(c);
		return -1;
	}
	if (c->wpend)
		set_events(c); /* finished when writable */
	else
		conn_linger(c);
	return 0;
}

/* Is tok one of the comma-separated tokens of v[0..n)? */
static bool has_token(const char *v, size_t n, const char *tok)
{
	size_t tl = strlen(tok), i = 0;

	while (i < n) {
		size_t b, e;

		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		b = i;
		while (i < n && v[i] != ',')
			i++;
		e = i;
		while (e > b && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - b == tl && !strncasecmp(v + b, tok, tl))
			return true;
	}
	return false;
}

struct head {
	const char *path;        /* not NUL-terminated */
	size_t path_len;
	bool get, http11;
	bool upgrade_ws, conn_upgrade;
	const char *key, *version;
	size_t key_len, version_len;
	int nkeys;
	bool proto_offered, proto_ours;
};

/* Reads the request line and the headers the handshake needs. h points
 * into p, which holds the head up to its empty line. */
static void head_parse(const char *p, size_t n, struct head *h)
{
	const char *end = p + n, *eol = memchr(p, '\n', n), *sp, *q;

	memset(h, 0, sizeof(*h));
	if (!eol)
		return;
	/* METHOD SP target SP HTTP/1.1 */
	sp = memchr(p, ' ', (size_t)(eol - p));
	if (!sp)
		return;
	h->get = sp - p == 3 && !memcmp(p, "GET", 3);
	h->path = sp + 1;
	q = memchr(h->path, ' ', (size_t)(eol - h->path));
	if (!q)
		return;
	h->http11 = eol - q >= 9 && !memcmp(q + 1, "HTTP/1.1", 8);
	for (h->path_len = 0; h->path + h->path_len < q &&
	     h->path[h->path_len] != '?'; h->path_len++)
		;
	for (p = eol + 1; p < end; p = eol + 1) {
		const char *colon, *v, *ve;
		size_t nl;

		eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol)
			eol = end;
		colon = memchr(p, ':', (size_t)(eol - p));
		if (!colon)
			continue;
		nl = (size_t)(colon - p);
		v = colon + 1;
		ve = eol;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' ||
				  ve[-1] == '\t'))
			ve--;
#define IS(name) (nl == sizeof(name) - 1 && !strncasecmp(p, name, nl))
		if (IS("upgrade")) {
			h->upgrade_ws |= has_token(v, (size_t)(ve - v), "websocket");
		} else if (IS("connection")) {
			h->conn_upgrade |= has_token(v, (size_t)(ve - v), "upgrade");
		} else if (IS("sec-websocket-key")) {
			h->key = v;
			h->key_len = (size_t)(ve - v);
			h->nkeys++;
		} else if (IS("sec-websocket-version")) {
			h->version = v;
			h->version_len = (size_t)(ve - v);
		} else if (IS("sec-websocket-protocol")) {
			h->proto_offered = true;
			h->proto_ours |= has_token(v, (size_t)(ve - v), "parley.v1");
		}
#undef IS
	}
}

/* The key is the base64 of 16 bytes: 22 characters and "==". */
static bool key_ok(const struct head *h)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

	if (h->nkeys != 1 || h->key_len != 24 || h->key[22] != '=' ||
	    h->key[23] != '=')
		return false;
	for (int i = 0; i < 22; i++)
		if (!h->key[i] || !strchr(b64, h->key[i]))
			return false;
	return true;
}

/* ---- TLS: HTTP requests through a bridge to libwebsockets -------------- */

/* On a TLS connection the head had to be decrypted (and so taken out of
 * the socket) before we knew it was not ours; lws cannot take over our
 * SSL. It gets one end of a socketpair instead, adopted as a plain
 * connection is, and the bytes are pumped between the SSL and the other
 * end on the shard loop, at most BR_CAP waiting each way: a side that
 * does not read stops the other from being read (the kernels' buffers
 * and the peers' windows do the rest). */
struct bridge {
	uv_poll_t poll;        /* on fd; poll.data = this */
	rt_conn *c;
	int fd;                /* our end of the socketpair */
	uint8_t ev;
	bool in_eof;           /* the client is done (or broken) */
	bool out_eof;          /* lws closed its end */
	bool shut;             /* told lws (SHUT_WR) */
	bool tls_wr;           /* SSL_write waits for the socket */
	size_t in_off, in_len; /* client -> lws, decrypted */
	size_t out_off, out_len; /* lws -> client, to encrypt */
	uint8_t in[BR_CAP], out[BR_CAP];
};

static void bridge_free_cb(uv_handle_t *h)
{
	free(h->data);
}

static void bridge_free(rt_conn *c)
{
	struct bridge *b = c->br;

	c->br = NULL;
	uv_close((uv_handle_t *)&b->poll, bridge_free_cb);
	close(b->fd);
}

static void bridge_poll_cb(uv_poll_t *h, int status, int events);

static void bridge_events(rt_conn *c)
{
	struct bridge *b = c->br;
	uint8_t ev = 0, bev = 0;

	if (b->in_off == b->in_len && !b->in_eof)
		ev |= UV_READABLE;
	if (b->out_off < b->out_len && b->tls_wr)
		ev |= UV_WRITABLE;
	if (ev != c->ev) {
		c->ev = ev;
		if (ev)
			uv_poll_start(&c->poll, ev, conn_poll_cb);
		else
			uv_poll_stop(&c->poll);
	}
	if (b->out_off == b->out_len && !b->out_eof)
		bev |= UV_READABLE;
	if (b->in_off < b->in_len)
		bev |= UV_WRITABLE;
	if (bev != b->ev) {
		b->ev = bev;
		if (bev)
			uv_poll_start(&b->poll, bev, bridge_poll_cb);
		else
			uv_poll_stop(&b->poll);
	}
}

/* Moves what can be moved, both ways, until nothing moves. */
static void bridge_pump(rt_conn *c)
{
	struct bridge *b = c->br;
	ssize_t n;

	for (int round = 0; round < 64; round++) {
		bool moved = false;

		/* client -> lws */
		if (b->in_off == b->in_len && !b->in_eof) {
			b->in_off = b->in_len = 0;
			n = io_recv(c, b->in, sizeof(b->in));
			if (n > 0) {
				b->in_len = (size_t)n;
				moved = true;
			} else if (n == 0 || (errno != EAGAIN &&
					      errno != EWOULDBLOCK)) {
				b->in_eof = true;
				moved = true;
			}
		}
		if (b->in_off < b->in_len) {
			n = send(b->fd, b->in + b->in_off, b->in_len - b->in_off,
				 MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n > 0) {
				b->in_off += (size_t)n;
				moved = true;
			} else if (n < 0 && errno != EAGAIN &&
				   errno != EWOULDBLOCK && errno != EINTR) {
				/* lws is gone: what the client sends is not
				 * wanted any more */
				b->in_off = b->in_len = 0;
				b->in_eof = b->out_eof = true;
			}
		}
		if (b->in_eof && b->in_off == b->in_len && !b->shut) {
			shutdown(b->fd, SHUT_WR);
			b->shut = true;
		}
		/* lws -> client */
		if (b->out_off == b->out_len && !b->out_eof) {
			b->out_off = b->out_len = 0;
			n = recv(b->fd, b->out, sizeof(b->out), MSG_DONTWAIT);
			if (n > 0) {
				b->out_len = (size_t)n;
				moved = true;
			} else if (n == 0 || (errno != EAGAIN &&
					      errno != EWOULDBLOCK &&
					      errno != EINTR)) {
				b->out_eof = true;
				moved = true;
			}
		}
		if (b->out_off < b->out_len) {
			n = io_send(c, b->out + b->out_off,
				    b->out_len - b->out_off);
			b->tls_wr = false;
			if (n > 0) {
				b->out_off += (size_t)n;
				c->progress_ms = mono_ms();
				moved = true;
			} else if (n < 0 && errno == EAGAIN) {
				b->tls_wr = true;
			} else {
				conn_abort(c); /* the client is gone */
				return;
			}
		}
		if (!moved)
			break;
	}
	if (b->out_eof && b->out_off == b->out_len) {
		/* lws is done with it (answered, kept alive until its
		 * timeout, or refused): so are we */
		conn_linger(c);
		return;
	}
	bridge_events(c);
}

static void bridge_poll_cb(uv_poll_t *h, int status, int events)
{
	struct bridge *b = h->data;

	(void)status;
	(void)events;
	bridge_pump(b->c);
}

/* A TLS connection's request is for lws: c->head holds all that was
 * decrypted so far (the head, maybe some body). */
static void head_to_bridge(rt_conn *c)
{
	struct rt_shard *s = c->shard;
	struct bridge *b = calloc(1, sizeof(*b));
	int sp[2];

	if (!b || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
			     SOCK_CLOEXEC, 0, sp)) {
		free(b);
		conn_abort(c);
		return;
	}
	if (uv_poll_init(s->loop, &b->poll, sp[0])) {
		close(sp[0]);
		close(sp[1]);
		free(b);
		conn_abort(c);
		return;
	}
	b->poll.data = b;
	b->c = c;
	b->fd = sp[0];
	memcpy(b->in, c->head, c->head_len); /* head_len <= HEAD_MAX < BR_CAP */
	b->in_len = c->head_len;
	free(c->head);
	c->head = NULL;
	c->head_len = 0;
	c->br = b;
	c->state = ST_BRIDGE;
	watch(c, true); /* the transport's end finds it there */
	if (!lws_adopt_socket_vhost(s->vh, sp[1])) {
		close(sp[1]);
		conn_abort(c);
		return;
	}
	bridge_pump(c);
}

/* Hands a connection that is not a WebSocket upgrade of ours to
 * libwebsockets: the head was only peeked at, so lws reads it from the
 * socket itself, as if it had accepted the connection. */
static void head_to_lws(rt_conn *c)
{
	struct rt_shard *s = c->shard;
	int fd = c->fd;

	if (c->ssl) {
		head_to_bridge(c);
		return;
	}
	watch(c, false);
	/* Stops watching fd at once (lws watches it next), closes nothing. */
	uv_close((uv_handle_t *)&c->poll, free_conn_cb);
	if (!lws_adopt_socket_vhost(s->vh, fd))
		close(fd);
}

/* The head is complete: p[0..hl), peeked, still in the socket. */
static int head_done(rt_conn *c, const uint8_t *p, size_t hl)
{
	struct rt_shard *s = c->shard;
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	struct head h;
	char cat[24 + sizeof(guid)], acc[32], resp[256];
	uint8_t digest[SHA_DIGEST_LENGTH];
	int n, one = 1;

	if (!c->ssl)
		setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
	head_parse((const char *)p, hl, &h);
	if (!h.upgrade_ws) {
		head_to_lws(c);
		return -1; /* not ours any more */
	}
	if (h.path_len != 3 || memcmp(h.path, "/ws", 3))
		return head_refuse(c, 404, "Not Found", NULL);
	if (!h.get || !h.http11)
		return head_refuse(c, 400, "Bad Request", NULL);
	if (s->draining)
		return head_refuse(c, 503, "Service Unavailable", NULL);
	if (h.version_len != 2 || memcmp(h.version, "13", 2))
		return head_refuse(c, 426, "Upgrade Required",
				   "Sec-WebSocket-Version: 13\r\n");
	if (!h.conn_upgrade || !key_ok(&h))
		return head_refuse(c, 400, "Bad Request", NULL);
	if (h.proto_offered && !h.proto_ours)
		return head_refuse(c, 400, "Bad Request", NULL);

	memcpy(cat, h.key, 24);
	memcpy(cat + 24, guid, sizeof(guid) - 1);
	SHA1((const unsigned char *)cat, 24 + sizeof(guid) - 1, digest);
	EVP_EncodeBlock((unsigned char *)acc, digest, sizeof(digest));
	n = snprintf(resp, sizeof(resp),
		     "HTTP/1.1 101 Switching Protocols\r\n"
		     "Upgrade: websocket\r\n"
		     "Connection: Upgrade\r\n"
		     "Sec-WebSocket-Accept: %s\r\n"
		     "%s\r\n",
		     acc,
		     h.proto_ours ? "Sec-WebSocket-Protocol: parley.v1\r\n" : "");
	/* Take the head out of the socket; frames behind it stay there and
	 * are read as such. (TLS: it is out already, in c->head.) */
	if ((!c->ssl && recv(c->fd, s->rbuf, hl, MSG_DONTWAIT) != (ssize_t)hl) ||
	    send_some(c, (const uint8_t *)resp, (size_t)n)) {
		conn_abort(c);
		return -1;
	}
	c->state = ST_OPEN;
	c->progress_ms = mono_ms();
	slot_add(s, c);
	RT_STAT_ADD(s->conns_open, 1);
	RT_STAT_ADD(s->conns_total, 1);
	s->cfg->hooks->on_open(s, c);
	if (c->head) {
		/* TLS: frames that came with the head */
		uint8_t *head = c->head;
		size_t rest = c->head_len - hl, used;

		c->head = NULL;
		c->head_len = 0;
		if (rest && c->state == ST_OPEN) {
			used = ws_parse(c, head + hl, rest);
			if (c->paused && used < rest) {
				c->stash = malloc(rest - used);
				if (c->stash) {
					memcpy(c->stash, head + hl + used,
					       rest - used);
					c->stash_len = rest - used;
				}
			}
		}
		free(head);
	}
	set_events(c);
	return 0;
}

/* A TLS handshake that failed or did not finish in time. */
static void tls_failed(rt_conn *c, const char *why)
{
	RT_STAT_ADD(c->shard->tls_failed, 1);
	c->tls_dead = true;
	plog(PL_INFO, "tls", "handshake with %s failed: %s", rt_conn_peer(c),
	     why);
	conn_abort(c);
}

/* TLS: the handshake, then the head, read (not peeked) into c->head. */
static int tls_head_input(rt_conn *c)
{
	struct rt_shard *s = c->shard;

	if (!SSL_is_init_finished(c->ssl)) {
		int r, e;

		ERR_clear_error();
		r = SSL_do_handshake(c->ssl);
		if (r != 1) {
			e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
				c->tls_ww = e == SSL_ERROR_WANT_WRITE;
				set_events(c);
				return 0;
			}
			{
				unsigned long le = ERR_peek_last_error();
				char es[160];

				if (le)
					ERR_error_string_n(le, es, sizeof(es));
				else
					snprintf(es, sizeof(es), "%s",
						 e == SSL_ERROR_SYSCALL && errno
							 ? strerror(errno)
							 : "connection closed");
				ERR_clear_error();
				tls_failed(c, es);
			}
			return -1;
		}
		c->tls_ww = false;
		RT_STAT_ADD(s->tls_ok, 1);
	}
	if (!c->head) {
		c->head = malloc(HEAD_MAX);
		if (!c->head) {
			conn_abort(c);
			return -1;
		}
	}
	for (;;) {
		size_t from = c->head_len >= 3 ? c->head_len - 3 : 0;
		ssize_t n;

		if (c->head_len >= HEAD_MAX)
			return head_refuse(c, 431,
					   "Request Header Fields Too Large",
					   NULL);
		n = io_recv(c, c->head + c->head_len, HEAD_MAX - c->head_len);
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			conn_abort(c);
			return -1;
		}
		c->head_len += (size_t)n;
		for (size_t i = from; i + 4 <= c->head_len; i++)
			if (!memcmp(c->head + i, "\r\n\r\n", 4))
				return head_done(c, c->head, i + 4);
	}
	set_events(c);
	return 0;
}

/* Looks at the request head without taking it out of the socket, so that
 * an HTTP request goes to lws untouched. SO_RCVLOWAT keeps epoll quiet
 * until more than what was seen has arrived. -1 when c is gone (or
 * handed to lws). */
static int head_input(rt_conn *c)
{
	if (c->ssl)
		return tls_head_input(c);
	uint8_t *p = c->shard->rbuf;
	ssize_t n = recv(c->fd, p, HEAD_MAX, MSG_PEEK | MSG_DONTWAIT);
	int low;

	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
		      errno == EINTR))
		return 0;
	if (n <= 0) {
		conn_abort(c);
		return -1;
	}
	for (size_t i = 0; i + 4 <= (size_t)n; i++)
		if (!memcmp(p + i, "\r\n\r\n", 4))
			return head_done(c, p, i + 4);
	if (n >= HEAD_MAX) {
		low = 1;
		setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &low, sizeof(low));
		return head_refuse(c, 431, "Request Header Fields Too Large",
				   NULL);
	}
	low = (int)n + 1;
	setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &low, sizeof(low));
	return 0;
}

/* After our close: read and drop until the peer closes. */
static void linger_input(rt_conn *c)
{
	char *sink = (char *)c->shard->rbuf;

	for (int i = 0; i < 4; i++) {
		ssize_t n = recv(c->fd, sink, RBUF_CAP, MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
			      errno == EINTR))
			return;
		if (n <= 0) {
			conn_destroy(c); /* the peer closed: so do we */
			return;
		}
	}
}

static void conn_poll_cb(uv_poll_t *hd, int status, int events)
{
	rt_conn *c = hd->data;
	size_t max = c->shard->cfg->max_outbuf;

	if (status < 0)
		events = UV_READABLE | UV_WRITABLE; /* recv/send will say */
	if (c->state == ST_BRIDGE) {
		bridge_pump(c);
		return;
	}
	if (c->state == ST_HEAD) {
		if ((events & UV_READABLE) || c->ssl)
			head_input(c);
		return;
	}
	if (c->state == ST_LINGER) {
		if (c->wpend && (events & UV_WRITABLE)) {
			if (conn_write(c)) {
				conn_abort(c);
				return;
			}
			set_events(c);
		}
		if (events & UV_READABLE)
			linger_input(c);
		return;
	}
	if (events & UV_WRITABLE) {
		if (conn_write(c)) {
			conn_abort(c);
			return;
		}
		if (c->state == ST_LINGER) {
			if (events & UV_READABLE)
				linger_input(c);
			return;
		}
		if (c->state == ST_OPEN && c->paused && !c->held &&
		    !c->wpend && rt_conn_queued(c) <= max / 2) {
			ws_resume(c);
			/* what SSL holds decrypted, poll does not see */
			if (c->ssl && !c->paused && SSL_pending(c->ssl))
				events |= UV_READABLE;
		}
		if (c->state == ST_CLOSING && !c->wpend) {
			/* a close decided while resuming: write it now */
			if (conn_write(c)) {
				conn_abort(c);
				return;
			}
			if (c->state == ST_LINGER)
				return;
		}
	}
	/* Read until the kernel has nothing more or this turn's share is
	 * used up (READ_TURN_MAX): a pipelining client's backlog goes into
	 * this turn's batch whole, not a read's worth per turn (each turn's
	 * batch is a commit of its own, and each commit a fan-out turn to
	 * every subscriber). A short plain read means the socket was empty;
	 * SSL_read returns one record at a time, so TLS reads on until it
	 * wants more. Past the share the socket stays readable and the next
	 * turn reads on, after every other connection had its turn. (SSL
	 * holds nothing back between reads: no read-ahead, and a record,
	 * 16 KiB at most, fits in one read. With read-ahead, stopping at
	 * the share would have to come back for what SSL holds: epoll
	 * cannot see it.) */
	for (size_t got = 0, rd = 0; (events & UV_READABLE) && !c->paused;
	     rd++) {
		struct rt_shard *s = c->shard;
		ssize_t n = io_recv(c, s->rbuf, RBUF_CAP);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
			      errno == EINTR)) {
			break;
		} else if (n <= 0) {
			if (c->state == ST_CLOSING && n == 0 && !c->close_sent) {
				/* half-closed: it may still read our close */
				c->paused = true;
				break;
			}
			conn_abort(c);
			return;
		} else if (c->state == ST_OPEN) {
			size_t used = ws_parse(c, s->rbuf, (size_t)n);

			if (c->paused && used < (size_t)n) {
				c->stash = malloc((size_t)n - used);
				if (!c->stash) {
					conn_abort(c);
					return;
				}
				memcpy(c->stash, s->rbuf + used,
				       (size_t)n - used);
				c->stash_len = (size_t)n - used;
			}
		}
		got += (size_t)n;
		if (c->state != ST_OPEN || got >= READ_TURN_MAX ||
		    rd + 1 >= READ_TURN_READS ||
		    (!c->ssl && (size_t)n < RBUF_CAP))
			break;
	}
	set_events(c);
}

static void on_accept(struct rt_shard *s)
{
	for (;;) {
		int one = 1;
		int fd = accept4(s->listen_fd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		rt_conn *c;
		SSL_CTX *tls;

		if (fd < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				plog(PL_ERROR, "net", "accept: %s",
					strerror(errno));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = calloc(1, sizeof(*c));
		if (!c || uv_poll_init(s->loop, &c->poll, fd)) {
			free(c);
			close(fd);
			continue;
		}
		c->poll.data = c;
		c->shard = s;
		c->ws = true;
		c->fd = fd;
		c->state = ST_HEAD;
		if ((tls = rt__tls_ctx())) {
			c->ssl = SSL_new(tls);
			SSL_CTX_free(tls); /* the SSL holds its own reference */
			if (!c->ssl || !SSL_set_fd(c->ssl, fd)) {
				c->tls_dead = true;
				conn_abort(c);
				continue;
			}
			SSL_set_accept_state(c->ssl);
		}
		c->deadline_ms = mono_ms() + HEAD_MS;
		set_events(c);
	}
}

/* ---- HTTP: libwebsockets ---------------------------------------------- */

int rt_http_add_header(rt_http_resp *r, const char *name, const char *value)
{
	size_t nl = strlen(name), vl = strlen(value), need = nl + vl + 4;
	char *x;

	if (!nl)
		return -1;
	for (size_t i = 0; i < nl; i++)
		if (name[i] <= ' ' || name[i] >= 0x7f || name[i] == ':')
			return -1;
	for (size_t i = 0; i < vl; i++)
		if ((unsigned char)value[i] < ' ' || value[i] == 0x7f)
			return -1;
	if (r->xhdrs_len + need >= RT_HTTP_XHDRS_MAX)
		return -1;
	x = realloc(r->xhdrs, r->xhdrs_len + need + 1);
	if (!x)
		return -1;
	sprintf(x + r->xhdrs_len, "%s: %s\r\n", name, value);
	r->xhdrs = x;
	r->xhdrs_len += need;
	return 0;
}

/* The answer's body and extra headers are no longer needed. */
static void resp_free(rt_http_resp *r)
{
	if (r->file && r->file_fd >= 0)
		close(r->file_fd);
	r->file = false;
	r->file_fd = -1;
	free(r->body);
	r->body = NULL;
	free(r->xhdrs);
	r->xhdrs = NULL;
	r->xhdrs_len = 0;
}

/* The "name: value\r\n" lines of rt_http_add_header, into lws' head. */
static int put_xhdrs(struct lws *wsi, const rt_http_resp *r, uint8_t **p,
		     uint8_t *end)
{
	const char *s = r->xhdrs, *e = s ? s + r->xhdrs_len : NULL;

	while (s && s < e) {
		const char *colon = memchr(s, ':', (size_t)(e - s));
		const char *eol = colon ? memchr(colon, '\r', (size_t)(e - colon))
					: NULL;
		char name[RT_HTTP_XHDRS_MAX];

		if (!eol || colon + 2 > eol)
			return -1;
		memcpy(name, s, (size_t)(colon + 1 - s));
		name[colon + 1 - s] = '\0';
		if (lws_add_http_header_by_name(wsi, (const uint8_t *)name,
						(const uint8_t *)colon + 2,
						(int)(eol - colon - 2), p, end))
			return -1;
		s = eol + 2;
	}
	return 0;
}

static void http_reply(struct lws *wsi, rt_conn *c)
{
	uint8_t hbuf[LWS_PRE + 1024 + RT_HTTP_XHDRS_MAX],
		*start = hbuf + LWS_PRE, *p = start,
		*end = hbuf + sizeof(hbuf) - 1;
	rt_http_resp *r = &c->resp;
	/* no body, and no length: it has none by definition (RFC 9110) */
	bool bodiless = r->status == 204 || r->status == 304;
	/* whoever answered, a HEAD gets the head only: a body would be
	 * read as the start of the next answer on the connection */
	bool head = r->head ||
		    (c->http_method && !strcmp(c->http_method, "HEAD"));

	if (lws_add_http_header_status(wsi, (unsigned)r->status, &p, end) ||
	    (r->content_type && !bodiless &&
	     lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
					  (const uint8_t *)r->content_type,
					  (int)strlen(r->content_type), &p,
					  end)) ||
	    (!bodiless &&
	     lws_add_http_header_content_length(
		     wsi, r->file ? r->file_len : r->body_len, &p, end)) ||
	    (r->hname[0] &&
	     lws_add_http_header_by_name(wsi, (const uint8_t *)r->hname,
					 (const uint8_t *)r->hvalue,
					 (int)strlen(r->hvalue), &p, end)) ||
	    put_xhdrs(wsi, r, &p, end) ||
	    lws_finalize_write_http_header(wsi, start, &p, end)) {
		c->close_now = true;
	}
	if (bodiless || head) {
		r->body_len = 0; /* the head is all that goes out */
		if (r->file && r->file_fd >= 0)
			close(r->file_fd);
		r->file = false;
		r->file_fd = -1;
	}
	c->file_sent = 0;
	lws_callback_on_writable(wsi);
}

/* The exchange is over: late answers find no connection. */
static void http_done(rt_conn *c)
{
	if (c->http_pending) {
		c->shard->http_pending--;
		slot_del(c->shard, c);
		c->id = 0;
		c->http_pending = false;
	}
}

static const char *http_method(struct lws *wsi)
{
	static const struct { enum lws_token_indexes t; const char *m; } ms[] = {
		{ WSI_TOKEN_POST_URI, "POST" }, { WSI_TOKEN_PUT_URI, "PUT" },
		{ WSI_TOKEN_DELETE_URI, "DELETE" },
		{ WSI_TOKEN_PATCH_URI, "PATCH" },
		{ WSI_TOKEN_OPTIONS_URI, "OPTIONS" },
		{ WSI_TOKEN_HEAD_URI, "HEAD" },
	};

	for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++)
		if (lws_hdr_total_length(wsi, ms[i].t) > 0)
			return ms[i].m;
	return "GET";
}

/* Pending answers older than this get 504 (checked every tick): below
 * lws' own timeout_secs (20), which would drop the socket without a word. */
#define HTTP_ANSWER_MS 15000

/* Every tick: deadlines of heads and lingers, stalled writers, closes
 * that do not finish; then pending HTTP answers that time out. */
void rt__transport_tick(struct rt_shard *s)
{
	uint64_t now_ms = mono_ms();

	for (rt_conn *c = s->watch, *next; c; c = next) {
		next = c->wnext; /* c may go; nothing else does */
		switch (c->state) {
		case ST_HEAD:
			if (now_ms >= c->deadline_ms && c->ssl &&
			    !SSL_is_init_finished(c->ssl)) {
				tls_failed(c, "no handshake in time");
			} else if (now_ms >= c->deadline_ms) {
				int one = 1;

				setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT,
					   &one, sizeof(one));
				head_refuse(c, 408, "Request Timeout", NULL);
			}
			break;
		case ST_LINGER:
			if (now_ms >= c->deadline_ms)
				conn_abort(c);
			break;
		case ST_OPEN:
			if (c->wpend &&
			    now_ms - c->progress_ms >= RT_OUTBUF_STALL_MS)
				slow_close(c);
			break;
		case ST_CLOSING:
			if (c->wpend &&
			    now_ms - c->progress_ms >= CLOSE_FLUSH_MS)
				conn_abort(c);
			break;
		}
	}
	if (!s->http_pending)
		return;
	for (uint32_t i = 0; i < s->nslots; i++) {
		rt_conn *c = s->slots[i];

		if (!c || c->ws || !c->http_pending || c->resp.status ||
		    c->http_streaming ||
		    now_ms - c->http_t0_ms < HTTP_ANSWER_MS)
			continue;
		c->resp.status = 504;
		c->resp.content_type = "application/json";
		c->resp.body = strdup("{\"code\":\"UNAVAILABLE\",\"msg\":"
				      "\"no answer in time\"}");
		c->resp.body_len = strlen(c->resp.body);
		http_reply(c->wsi, c);
	}
}

/* Before closing a connection whose request body was not read: read
 * what has arrived, since close() with unread bytes sends a reset, and a
 * reset can throw away the answer still in the send queue. Bounded: a
 * client that goes on sending gets the reset anyway. */
static void discard_input(int fd)
{
	char sink[4096];

	for (int i = 0; i < 64; i++)
		if (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) <= 0)
			return;
}

/* An answer the transport gives itself, before (or instead of) on_http:
 * JSON in the REST API's error shape. close: the rest of the request is
 * not read, so the connection cannot carry another one. */
static void http_refuse(struct lws *wsi, rt_conn *c, int status,
			const char *code, const char *msg, bool close)
{
	char body[256];
	int n = snprintf(body, sizeof(body), "{\"code\":\"%s\",\"msg\":\"%s\"}",
			 code, msg);

	resp_free(&c->resp);
	memset(&c->resp, 0, sizeof(c->resp));
	c->resp.status = status;
	c->resp.content_type = "application/json";
	c->resp.body = strdup(body);
	c->resp.body_len = c->resp.body ? (size_t)n : 0;
	c->http_dispatched = true;
	c->http_close = close;
	if (close) {
		strcpy(c->resp.hname, "connection:");
		strcpy(c->resp.hvalue, "close");
	}
	http_reply(wsi, c);
}

/* Joins lws' query fragments ("a=1", "b=2") with '&' into q. Returns -1
 * when a fragment or the whole does not fit: the caller refuses the
 * request rather than drop parameters silently. */
static int http_query(struct lws *wsi, char *q, size_t cap)
{
	size_t n = 0;

	q[0] = '\0';
	for (int i = 0;; i++) {
		int fl = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);

		if (fl <= 0)
			return 0;
		if (n + (i ? 1 : 0) + (size_t)fl + 1 > cap)
			return -1;
		if (i)
			q[n++] = '&';
		if (lws_hdr_copy_fragment(wsi, q + n, (int)(cap - n),
					  WSI_TOKEN_HTTP_URI_ARGS, i) != fl)
			return -1;
		n += (size_t)fl;
	}
}

/* The header strings of a request, copied out of lws. */
struct http_hdrs {
	char auth[1024], query[1024], inm[1024], range[256];
};

/* 0, or -1 after refusing the request (close: its body is not read). */
static int http_hdrs(struct lws *wsi, rt_conn *c, struct http_hdrs *h,
		     bool close)
{
	h->auth[0] = h->inm[0] = h->range[0] = '\0';
	if (http_query(wsi, h->query, sizeof(h->query))) {
		http_refuse(wsi, c, 400, "BAD_REQUEST", "query string too long",
			    close);
		return -1;
	}
	if (lws_hdr_copy(wsi, h->auth, sizeof(h->auth),
			 WSI_TOKEN_HTTP_AUTHORIZATION) < 0) {
		http_refuse(wsi, c, 401, "UNAUTHORIZED",
			    "authorization header too long", close);
		return -1;
	}
	/* Too long to hold: answered as if absent (a full 200, never a
	 * wrong 304 or 206). */
	if (lws_hdr_copy(wsi, h->inm, sizeof(h->inm),
			 WSI_TOKEN_HTTP_IF_NONE_MATCH) < 0)
		h->inm[0] = '\0';
	if (lws_hdr_copy(wsi, h->range, sizeof(h->range),
			 WSI_TOKEN_HTTP_RANGE) < 0)
		h->range[0] = '\0';
	return 0;
}

/* The exchange gets an id, so an answer can find it later. */
static void http_pend(struct rt_shard *s, rt_conn *c)
{
	c->http_dispatched = true;
	resp_free(&c->resp);
	memset(&c->resp, 0, sizeof(c->resp));
	c->resp.file_fd = -1;
	slot_add(s, c);
	c->http_pending = true;
	s->http_pending++;
	c->http_t0_ms = rt_mono_us() / 1000;
}

static void http_dispatch(struct rt_shard *s, struct lws *wsi, rt_conn *c)
{
	struct http_hdrs h;
	const char *path = c->http_uri ? c->http_uri : "/";
	rt_http_req req = { .conn = c,
			    .method = c->http_method ? c->http_method : "GET",
			    .path = path,
			    .query = h.query,
			    .authorization = h.auth,
			    .if_none_match = h.inm,
			    .range = h.range,
			    .body = c->http_body,
			    .body_len = c->http_body_len };

	if (c->http_dispatched)
		return; /* lws may report a body's end after an answer */
	if (http_hdrs(wsi, c, &h, false))
		return;
	http_pend(s, c);
	c->resp.status = 404;
	c->resp.content_type = "text/plain";
	c->http_dispatching = true;
	s->cfg->hooks->on_http(s, &req, &c->resp);
	c->http_dispatching = false;
	if (c->resp.status)
		http_reply(wsi, c);
}

/* The layer above refused a streamed body (begin or data filled the
 * answer): the rest is not read, the connection closes after it. */
static void stream_refused(struct lws *wsi, rt_conn *c)
{
	c->http_streaming = false;
	c->http_close = true;
	if (!c->resp.hname[0]) {
		strcpy(c->resp.hname, "connection:");
		strcpy(c->resp.hvalue, "close");
	}
	http_reply(wsi, c);
}

static void stream_end(struct rt_shard *s, struct lws *wsi, rt_conn *c)
{
	c->http_streaming = false;
	c->http_t0_ms = rt_mono_us() / 1000; /* the answer's deadline */
	c->http_dispatching = true;
	s->cfg->hooks->on_http_end(s, c, &c->resp);
	c->http_dispatching = false;
	if (c->resp.status)
		http_reply(wsi, c);
}

/* A request whose body the layer above takes as a stream. */
static void stream_begin(struct rt_shard *s, struct lws *wsi, rt_conn *c,
			 uint64_t clen)
{
	struct http_hdrs h;
	rt_http_req req = { .conn = c,
			    .method = c->http_method ? c->http_method : "POST",
			    .path = c->http_uri,
			    .query = h.query,
			    .authorization = h.auth,
			    .if_none_match = h.inm,
			    .range = h.range,
			    .content_length = clen };

	if (clen > s->cfg->http_stream_max) {
		http_refuse(wsi, c, 413, "TOO_LARGE", "body too large", true);
		return;
	}
	if (http_hdrs(wsi, c, &h, true))
		return;
	http_pend(s, c);
	c->http_clen = clen;
	c->http_got = 0;
	c->http_streaming = true;
	c->http_dispatching = true;
	s->cfg->hooks->on_http_begin(s, &req, &c->resp);
	c->http_dispatching = false;
	if (c->resp.status) {
		stream_refused(wsi, c);
		return;
	}
	/* lws reports the end of an empty body for POST only */
	if (!clen)
		stream_end(s, wsi, c);
}

int rt_http_reply(rt_conn *c, rt_http_resp *r)
{
	if (c->ws || !c->http_pending || c->resp.status || c->http_streaming) {
		resp_free(r);
		memset(r, 0, sizeof(*r));
		r->file_fd = -1;
		return -1;
	}
	resp_free(&c->resp);
	c->resp = *r;
	memset(r, 0, sizeof(*r));
	r->file_fd = -1;
	if (!c->resp.status)
		c->resp.status = 500;
	if (!c->http_dispatching)
		http_reply(c->wsi, c);
	return 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason,
		    void *user, void *in, size_t len)
{
	struct rt_shard *s = rt_self();
	rt_conn *c = user;

	switch (reason) {
	case LWS_CALLBACK_RAW_RX_FILE:
		on_accept(s);
		return 0;
	case LWS_CALLBACK_RAW_CLOSE_FILE:
		return 0;

	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		/* A mailbox wake-up: the loop drains after lws_service. */
		return 0;

	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		/* An upgrade on a keep-alive HTTP connection lws already
		 * owns: refused (WebSockets are ours, from the first byte). */
		return 1;

	case LWS_CALLBACK_HTTP: {
		char num[24];
		long long clen = -1;
		bool wants_body;

		if (!c)
			return 1;
		memset(c, 0, sizeof(*c));
		c->wsi = wsi;
		c->shard = s;
		c->http_uri = strdup(in ? (const char *)in : "/");
		c->http_method = http_method(wsi);
		/* lws decodes %00 into the path: the C string would end early
		 * and name another resource ("/x.html%00.js" as "/x.html") */
		if (in && strnlen(in, len) != len) {
			http_refuse(wsi, c, 400, "BAD_REQUEST",
				    "NUL byte in the path", true);
			return 0;
		}
		wants_body = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0 ||
			     lws_hdr_total_length(wsi, WSI_TOKEN_PUT_URI) > 0 ||
			     lws_hdr_total_length(wsi, WSI_TOKEN_PATCH_URI) > 0;
		if (lws_hdr_copy(wsi, num, sizeof(num),
				 WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0) {
			char *e;

			clen = strtoll(num, &e, 10);
			if (e == num || *e || clen < 0) {
				http_refuse(wsi, c, 400, "BAD_REQUEST",
					    "bad Content-Length", true);
				return 0;
			}
		}
		/* lws 4.1 does not decode chunked request bodies: it would
		 * hand over the chunk framing and wait for 100 MiB. */
		if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
			http_refuse(wsi, c, 411, "BAD_REQUEST",
				    "chunked bodies are not supported: send Content-Length",
				    true);
			return 0;
		}
		if (wants_body && clen < 0) {
			http_refuse(wsi, c, 411, "BAD_REQUEST",
				    "a body needs Content-Length", true);
			return 0;
		}
		if (s->cfg->http_stream_prefix && (wants_body || clen > 0) &&
		    !strncmp(c->http_uri, s->cfg->http_stream_prefix,
			     strlen(s->cfg->http_stream_prefix))) {
			stream_begin(s, wsi, c, (uint64_t)clen);
			return 0;
		}
		if (clen > HTTP_BODY_MAX) {
			http_refuse(wsi, c, 413, "TOO_LARGE", "body too large",
				    true);
			return 0;
		}
		/* Any method with a body (a GET too) is answered after the
		 * body is read, so that the answer comes once and the next
		 * request on the connection starts where this one ends. An
		 * empty body is answered now: lws reports the end of an empty
		 * body for POST only (PUT, PATCH would wait forever). */
		c->http_body_wait = clen > 0;
		if (!c->http_body_wait)
			http_dispatch(s, wsi, c);
		return 0;
	}
	case LWS_CALLBACK_HTTP_BODY: {
		uint8_t *nb;

		if (c->http_streaming) {
			if (!len)
				return 0;
			if (c->http_got + len > c->http_clen)
				len = (size_t)(c->http_clen - c->http_got);
			c->http_got += len;
			c->http_dispatching = true;
			s->cfg->hooks->on_http_data(s, c, in, len, &c->resp);
			c->http_dispatching = false;
			if (c->resp.status)
				stream_refused(wsi, c);
			return 0;
		}
		if (!len || c->http_dispatched)
			return 0; /* refused already: the body is not kept */
		if (c->http_body_len + len > HTTP_BODY_MAX) {
			http_refuse(wsi, c, 413, "TOO_LARGE", "body too large",
				    true);
			return 0;
		}
		nb = realloc(c->http_body, c->http_body_len + len);
		if (!nb) {
			http_refuse(wsi, c, 503, "UNAVAILABLE", "out of memory",
				    true);
			return 0;
		}
		c->http_body = nb;
		memcpy(c->http_body + c->http_body_len, in, len);
		c->http_body_len += len;
		return 0;
	}
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		if (c->http_streaming) {
			if (c->http_got != c->http_clen)
				return -1; /* cannot happen: lws counts */
			stream_end(s, wsi, c);
			return 0;
		}
		if (c->http_body_wait)
			http_dispatch(s, wsi, c);
		return 0;
	case LWS_CALLBACK_HTTP_WRITEABLE: {
		size_t n = c->resp.body_len;
		uint8_t *buf;
		int rc;

		if (c->close_now)
			return -1;
		if (c->resp.file) {
			/* a chunk of the file per writable: lws keeps what
			 * the kernel does not take and calls again only
			 * once it is out */
			uint64_t left = c->resp.file_len - c->file_sent;
			size_t cap = s->wbuf_cap - LWS_PRE;
			ssize_t got = 0;

			n = left < cap ? (size_t)left : cap;
			if (n) {
				got = pread(c->resp.file_fd, s->wbuf + LWS_PRE,
					    n, (off_t)(c->resp.file_off +
						       c->file_sent));
				if (got <= 0)
					return -1; /* short: the peer sees it */
			}
			c->file_sent += (uint64_t)got;
			rc = lws_write(wsi, s->wbuf + LWS_PRE, (size_t)got,
				       c->file_sent == c->resp.file_len
					       ? LWS_WRITE_HTTP_FINAL
					       : LWS_WRITE_HTTP);
			if (rc < 0)
				return -1;
			if (c->file_sent < c->resp.file_len) {
				lws_callback_on_writable(wsi);
				return 0;
			}
		} else {
			buf = malloc(LWS_PRE + n + 1);
			if (n)
				memcpy(buf + LWS_PRE, c->resp.body, n);
			rc = lws_write(wsi, buf + LWS_PRE, n,
				       LWS_WRITE_HTTP_FINAL);
			free(buf);
		}
		http_done(c);
		resp_free(&c->resp);
		free(c->http_uri);
		c->http_uri = NULL;
		free(c->http_body);
		c->http_body = NULL;
		c->http_body_len = 0;
		if (c->http_close) {
			discard_input(lws_get_socket_fd(wsi));
			return -1;
		}
		if (rc < 0 || lws_http_transaction_completed(wsi))
			return -1;
		return 0;
	}
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
	case LWS_CALLBACK_CLOSED_HTTP:
		if (c && !c->ws) {
			if (c->http_streaming) {
				/* gone before the end of its body */
				c->http_streaming = false;
				s->cfg->hooks->on_http_abort(s, c);
			}
			http_done(c);
			resp_free(&c->resp);
			free(c->http_uri);
			free(c->http_body);
			c->http_uri = NULL;
			c->http_body = NULL;
		}
		break;
	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/*
 * lws runs only plain HTTP now: its WebSocket buffers (rx_buffer_size)
 * are never allocated. tx_packet_size must be set: at 0, lws caps each
 * send() at rx_buffer_size.
 */
static struct lws_protocols protocols[] = {
	{ "parley.v1", callback, sizeof(struct rt_conn), 512, 0, NULL, WBUF_CAP },
	{ "parley-listen", callback, 0, 0, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 } /* no LWS_PROTOCOL_LIST_TERM in 4.1 */
};

static void close_handle(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* After lws let go of the loop: close what is left, let the closes run,
 * free it. */
static void loop_close(struct rt_shard *s)
{
	if (!s->loop)
		return;
	uv_run(s->loop, UV_RUN_NOWAIT);
	uv_walk(s->loop, close_handle, NULL);
	uv_run(s->loop, UV_RUN_DEFAULT);
	uv_loop_close(s->loop);
	free(s->loop);
	s->loop = NULL;
}

int rt__transport_init(struct rt_shard *s)
{
	struct lws_context_creation_info info;
	lws_sock_file_fd_type fd;
	struct lws_context *ctx;
	void *loops[1];

	/* lws on a libuv loop of ours (epoll underneath): lws' built-in
	 * poll() backend scans every connection on every loop turn, which
	 * with 10,000 idle connections per shard cost a whole core. */
	s->loop = malloc(sizeof(uv_loop_t));
	if (!s->loop || uv_loop_init(s->loop)) {
		free(s->loop);
		s->loop = NULL;
		return -1;
	}
	loops[0] = s->loop;
	memset(&info, 0, sizeof(info));
	info.foreign_loops = loops;
	info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
	info.protocols = protocols;
	info.gid = -1;
	info.uid = -1;
	info.user = s;
	info.options = LWS_SERVER_OPTION_DISABLE_IPV6 | LWS_SERVER_OPTION_LIBUV;
	info.pt_serv_buf_size = 64 * 1024;
	info.max_http_header_pool = 256;
	info.timeout_secs = 20;
	/* s->ctx stays NULL (no wake-ups: rt_drain wakes every shard) until
	 * the context is usable, below */
	ctx = lws_create_context(&info);
	if (!ctx)
		goto fail;
	s->vh = lws_get_vhost_by_name(ctx, "default");
	if (!s->vh)
		goto fail_ctx;
	s->wbuf_cap = WBUF_CAP;
	s->wbuf = malloc(s->wbuf_cap);
	s->rbuf = malloc(RBUF_CAP);
	if (!s->wbuf || !s->rbuf)
		goto fail_buf;
	if (s->cfg->io_uring)
		__atomic_store_n(&s->ring, ring_new(s), __ATOMIC_RELAXED);
	fd.filefd = s->listen_fd;
	s->listen_wsi = lws_adopt_descriptor_vhost(s->vh, LWS_ADOPT_RAW_FILE_DESC,
						   fd, "parley-listen", NULL);
	if (!s->listen_wsi)
		goto fail_buf;
	/* Publish ctx for producers' wake-ups only now that it is usable. */
	__atomic_store_n(&s->ctx, ctx, __ATOMIC_RELEASE);
	return 0;
fail_buf:
	if (s->ring) {
		ring_free(s->ring);
		__atomic_store_n(&s->ring, NULL, __ATOMIC_RELAXED);
	}
	free(s->wbuf);
	free(s->rbuf);
fail_ctx:
	lws_context_destroy(ctx);
fail:
	loop_close(s);
	return -1;
}

void rt__transport_drain(struct rt_shard *s, bool force)
{
	if (!force) {
		/* Stop accepting: the other shards' listeners stay, but
		 * they are draining too. */
		if (s->listen_wsi) {
			lws_set_timeout(s->listen_wsi, PENDING_TIMEOUT_USER_OK,
					LWS_TO_KILL_ASYNC);
			s->listen_wsi = NULL;
		}
		return;
	}
	/* The loop may stop right after this: write what is queued and the
	 * close frame now rather than at a turn end that may not come. */
	for (uint32_t i = 0; i < s->nslots; i++) {
		rt_conn *c = s->slots[i];

		if (!c || !c->ws || c->state != ST_OPEN)
			continue;
		rt_conn_close(c, 1001, "going away");
		if (!c->wpend)
			conn_flush(c);
	}
}

void rt__transport_fini(struct rt_shard *s)
{
	struct lws_context *ctx = s->ctx;

	__atomic_store_n(&s->ctx, NULL, __ATOMIC_RELEASE);
	/* Our connections: the open ones (on_close runs), then heads and
	 * lingers. Their memory goes when loop_close runs the closes. */
	for (uint32_t i = 0; i < s->nslots; i++) {
		rt_conn *c = s->slots[i];

		if (c && c->ws)
			conn_abort(c);
	}
	while (s->watch)
		conn_abort(s->watch);
	lws_context_destroy(ctx);
	loop_close(s);
	free(s->rbuf);
	free(s->wbuf);
	if (s->ring) {
		ring_free(s->ring);
		__atomic_store_n(&s->ring, NULL, __ATOMIC_RELAXED);
	}
	free(s->slots);
	free(s->free_slots);
}
