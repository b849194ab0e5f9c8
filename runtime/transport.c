/*
 * Transport: the libwebsockets side of a shard. Accepts on the shard's own
 * listener, runs the HTTP and WebSocket protocol callbacks, reassembles
 * incoming messages (up to max_frame; beyond: close 1009) and hands each one
 * to the actors' on_frame hook; queues outgoing payload buffers per
 * connection and writes them out.
 *
 * Writing: frames queued on a connection during a loop turn are written at
 * the end of that turn, with their WebSocket headers back to back, in ONE
 * send() straight to the socket: one syscall per connection per turn, not
 * one per frame, and no round trip through poll() for POLLOUT. Only what
 * the kernel does not take is handed to libwebsockets (lws_write), which
 * keeps it and finishes it when the socket is writable; until its
 * WRITEABLE callback says so, nothing else is written around it, so the
 * bytes stay in order with anything lws sends itself (pongs, close).
 * Bytes queued while the kernel refuses more are bounded (max_outbuf):
 * past it the connection is a slow consumer and is closed with 4008 (the
 * client resumes, nothing is lost). What a single turn queues for a
 * connection the kernel still takes from does not count: a healthy reader
 * is not cut for a burst or for one large answer.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runtime/shard.h"

#include <uv.h>

#define WBUF_CAP (256 * 1024)
#define HTTP_BODY_MAX (1024 * 1024)

/* Lives in libwebsockets' per-session memory (allocated with the wsi, freed
 * after LWS_CALLBACK_CLOSED). Only the owning shard's thread touches it. */
struct rt_conn {
	struct lws *wsi;
	struct rt_shard *shard;
	rt_conn_id id;
	void *user;
	rt_buf **q;        /* output ring */
	uint32_t qhead, qlen, qcap;
	size_t qbytes;
	uint8_t *rx;       /* reassembly of a fragmented message */
	size_t rxlen, rxcap;
	uint16_t close_code;
	bool ws, closing, close_now, rx_binary, rx_too_large;
	bool dirty;        /* on the shard's list of connections to write */
	bool lws_owns;     /* lws holds unsent bytes: wait for WRITEABLE */
	bool close_sent;   /* our close frame is on the wire */
	/* HTTP request in progress */
	char *http_uri;
	uint8_t *http_body;
	size_t http_body_len;
	bool http_body_wait;  /* a body follows the headers: answer after it */
	bool http_dispatched; /* on_http has seen this request */
	bool http_close;      /* close once the answer is written */
	bool http_pending;  /* has an id; its answer has not been written */
	bool http_dispatching; /* inside on_http: it writes the answer */
	const char *http_method;
	uint64_t http_t0_ms;
	rt_http_resp resp;
};

rt_conn_id rt_conn_get_id(const rt_conn *c) { return c->id; }
void *rt_conn_user(rt_conn *c) { return c->user; }
void rt_conn_set_user(rt_conn *c, void *u) { c->user = u; }
size_t rt_conn_queued(const rt_conn *c) { return c->qbytes; }

const char *rt_conn_peer(rt_conn *c)
{
	static __thread char buf[64];
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	char ip[INET_ADDRSTRLEN] = "?";

	if (getpeername(lws_get_socket_fd(c->wsi), (struct sockaddr *)&sa,
			&sl) == 0)
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

int rt_conn_send(rt_conn *c, rt_buf *b)
{
	if (!c->ws)
		return http_answer(c, b->data, b->len);
	if (c->closing)
		return -1;
	/* Only bytes queued while the kernel refuses more count against a
	 * consumer: what one turn queues (a burst of fan-outs drained from
	 * the mailbox together, one large answer) is written at turn end,
	 * and a reader that keeps up takes it. */
	if (c->lws_owns && c->qbytes + b->len > c->shard->cfg->max_outbuf) {
		/* Slow consumer: drop what it has not taken and close. */
		c->shard->closed_slow++;
		q_clear(c);
		rt_conn_close(c, 4008, "slow consumer");
		c->close_now = true;
		return -1;
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
	if (!c->dirty && !c->lws_owns) {
		struct rt_shard *s = c->shard;

		if (s->ndirty == s->cap_dirty) {
			s->cap_dirty = s->cap_dirty ? 2 * s->cap_dirty : 256;
			s->dirty = realloc(s->dirty,
					   s->cap_dirty * sizeof(*s->dirty));
		}
		s->dirty[s->ndirty++] = c->id;
		c->dirty = true;
	}
	return 0;
}

int rt_conn_send_bytes(rt_conn *c, const void *data, size_t len)
{
	rt_buf *b = rt_buf_new(data, len);
	int rc = rt_conn_send(c, b);

	rt_buf_unref(b);
	return rc;
}

void rt_conn_close(rt_conn *c, uint16_t code, const char *reason)
{
	if (!c->ws)
		return; /* an HTTP answer ends its own exchange */
	if (c->closing)
		return;
	c->closing = true;
	c->close_code = code;
	(void)reason;
	lws_callback_on_writable(c->wsi);
}

static size_t ws_header(uint8_t *p, size_t len)
{
	p[0] = 0x82; /* FIN, binary */
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

/* Copies as many queued frames as fit into the shard's write buffer, with
 * their headers; returns the length (the bytes start at *start). */
static size_t fill_write(struct rt_shard *s, rt_conn *c, uint8_t **out)
{
	uint8_t *start = s->wbuf + LWS_PRE, *p = start;
	unsigned nframes = 0;
	uint64_t now = 0;

	while (c->qlen) {
		rt_buf *b = c->q[c->qhead];
		size_t need = 10 + (size_t)b->len;

		if ((size_t)(p - start) + need > s->wbuf_cap) {
			if (p != start)
				break;
			/* One frame larger than the buffer: grow it. */
			s->wbuf_cap = need;
			s->wbuf = realloc(s->wbuf, LWS_PRE + need);
			start = p = s->wbuf + LWS_PRE;
		}
		p += ws_header(p, b->len);
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
	s->frames_out += nframes;
	s->bytes_out += (uint64_t)(p - start);
	*out = start;
	return (size_t)(p - start);
}

/* Write the queue: as much as fits in one buffer per send(), straight to
 * the socket, until it is empty or the kernel takes less than offered;
 * then lws keeps the rest and we wait for WRITEABLE. 0, or -1 when the
 * connection is broken. */
static int flush_queue(struct rt_shard *s, rt_conn *c)
{
	while (c->qlen && !c->lws_owns) {
		uint8_t *start;
		size_t len;
		ssize_t n;
		int rc = 0;

		len = fill_write(s, c, &start);
		if (!len)
			return 0;
		n = send(lws_get_socket_fd(c->wsi), start, len,
			 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR)
				return -1;
			n = 0;
		}
		s->writes++;
		if ((size_t)n < len) {
			/* lws keeps the rest (start + n has LWS_PRE bytes of
			 * our buffer before it) and asks for POLLOUT. */
			rc = lws_write(c->wsi, start + n, len - (size_t)n,
				       LWS_WRITE_RAW);
			c->lws_owns = true;
			lws_callback_on_writable(c->wsi);
		}
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* The close frame, written by us: on its libuv loop lws shuts the socket
 * without sending the one lws_close_reason() asked for. Not when lws
 * still holds part of a frame: the close must not land inside it. */
static void send_close(rt_conn *c, uint16_t code)
{
	uint8_t f[4] = { 0x88, 2, (uint8_t)(code >> 8), (uint8_t)code };

	if (c->lws_owns || !code || c->close_sent)
		return;
	c->close_sent = true;
	(void)!send(lws_get_socket_fd(c->wsi), f, sizeof(f),
		    MSG_DONTWAIT | MSG_NOSIGNAL);
}

void rt__transport_flush(struct rt_shard *s)
{
	/* A connection may have closed since it was listed: look it up. */
	for (uint32_t i = 0; i < s->ndirty; i++) {
		rt_conn *c = rt_conn_find(s, s->dirty[i]);

		if (!c)
			continue;
		c->dirty = false;
		if (c->closing || c->lws_owns)
			continue; /* the WRITEABLE callback handles these */
		if (flush_queue(s, c)) {
			/* broken: let lws find out and close it */
			q_clear(c);
			c->close_now = true;
			c->closing = true;
			lws_callback_on_writable(c->wsi);
		}
	}
	s->ndirty = 0;
}

static void on_accept(struct rt_shard *s)
{
	for (;;) {
		int one = 1;
		int fd = accept4(s->listen_fd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				fprintf(stderr, "parleyd: accept: %s\n",
					strerror(errno));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (!lws_adopt_socket_vhost(s->vh, fd))
			close(fd);
	}
}

static void http_reply(struct lws *wsi, rt_conn *c)
{
	uint8_t hbuf[LWS_PRE + 1024], *start = hbuf + LWS_PRE, *p = start,
		*end = hbuf + sizeof(hbuf) - 1;

	if (lws_add_http_common_headers(wsi, (unsigned)c->resp.status,
					c->resp.content_type,
					c->resp.body_len, &p, end) ||
	    (c->resp.hname[0] &&
	     lws_add_http_header_by_name(wsi, (const uint8_t *)c->resp.hname,
					 (const uint8_t *)c->resp.hvalue,
					 (int)strlen(c->resp.hvalue), &p, end)) ||
	    lws_finalize_write_http_header(wsi, start, &p, end)) {
		c->close_now = true;
	}
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

void rt__http_tick(struct rt_shard *s)
{
	uint64_t now_ms = rt_mono_us() / 1000;

	if (!s->http_pending)
		return;
	for (uint32_t i = 0; i < s->nslots; i++) {
		rt_conn *c = s->slots[i];

		if (!c || c->ws || !c->http_pending || c->resp.status ||
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

	free(c->resp.body);
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

static void http_dispatch(struct rt_shard *s, struct lws *wsi, rt_conn *c)
{
	char auth[1024] = "", query[1024];
	const char *path = c->http_uri ? c->http_uri : "/";
	rt_http_req req = { .conn = c,
			    .method = c->http_method ? c->http_method : "GET",
			    .path = path,
			    .query = query,
			    .authorization = auth,
			    .body = c->http_body,
			    .body_len = c->http_body_len };

	if (c->http_dispatched)
		return; /* lws may report a body's end after an answer */
	if (http_query(wsi, query, sizeof(query))) {
		http_refuse(wsi, c, 400, "BAD_REQUEST", "query string too long",
			    false);
		return;
	}
	if (lws_hdr_copy(wsi, auth, sizeof(auth),
			 WSI_TOKEN_HTTP_AUTHORIZATION) < 0) {
		http_refuse(wsi, c, 401, "UNAUTHORIZED",
			    "authorization header too long", false);
		return;
	}
	c->http_dispatched = true;
	memset(&c->resp, 0, sizeof(c->resp));
	c->resp.status = 404;
	c->resp.content_type = "text/plain";
	/* an id, so an answer can find this exchange later */
	slot_add(s, c);
	c->http_pending = true;
	s->http_pending++;
	c->http_t0_ms = rt_mono_us() / 1000;
	c->http_dispatching = true;
	s->cfg->hooks->on_http(s, &req, &c->resp);
	c->http_dispatching = false;
	if (c->resp.status)
		http_reply(wsi, c);
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

	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
		char uri[64];

		if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 ||
		    strcmp(uri, "/ws"))
			return 1; /* only /ws upgrades */
		if (s->draining)
			return 1;
		return 0;
	}

	case LWS_CALLBACK_ESTABLISHED:
		memset(c, 0, sizeof(*c));
		c->wsi = wsi;
		c->shard = s;
		c->ws = true;
		slot_add(s, c);
		s->conns_open++;
		s->conns_total++;
		s->cfg->hooks->on_open(s, c);
		return 0;

	case LWS_CALLBACK_RECEIVE: {
		bool first = lws_is_first_fragment(wsi);
		bool last = lws_is_final_fragment(wsi) &&
			    lws_remaining_packet_payload(wsi) == 0;

		if (c->closing)
			return 0;
		if (first)
			c->rx_binary = lws_frame_is_binary(wsi);
		if (first && last && c->rxlen == 0 && len <= s->cfg->max_frame) {
			s->frames_in++;
			s->cfg->hooks->on_frame(s, c, in, len, c->rx_binary);
			break;
		}
		if (c->rxlen + len + lws_remaining_packet_payload(wsi) >
		    s->cfg->max_frame) {
			s->closed_too_large++;
			free(c->rx);
			c->rx = NULL;
			c->rxlen = c->rxcap = 0;
			send_close(c, 1009);
			lws_close_reason(wsi, 1009,
					 (unsigned char *)"frame too large", 15);
			return -1;
		}
		if (c->rxlen + len > c->rxcap) {
			c->rxcap = c->rxlen + len + lws_remaining_packet_payload(wsi);
			c->rx = realloc(c->rx, c->rxcap);
		}
		memcpy(c->rx + c->rxlen, in, len);
		c->rxlen += len;
		if (last) {
			s->frames_in++;
			s->cfg->hooks->on_frame(s, c, c->rx, c->rxlen,
						c->rx_binary);
			free(c->rx);
			c->rx = NULL;
			c->rxlen = c->rxcap = 0;
		}
		break;
	}

	case LWS_CALLBACK_SERVER_WRITEABLE:
		/* lws calls this only once what it kept is written */
		c->lws_owns = false;
		if (c->close_now || (c->closing && !c->qlen)) {
			q_clear(c);
			send_close(c, c->close_code);
			lws_close_reason(wsi, c->close_code, NULL, 0);
			return -1;
		}
		if (flush_queue(s, c))
			return -1;
		if (c->closing && !c->qlen)
			lws_callback_on_writable(wsi);
		break;

	case LWS_CALLBACK_CLOSED:
		if (!c || !c->ws)
			break;
		s->cfg->hooks->on_close(s, c);
		slot_del(s, c);
		q_clear(c);
		free(c->q);
		free(c->rx);
		c->q = NULL;
		c->rx = NULL;
		s->conns_open--;
		break;

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
		if (c->http_body_wait)
			http_dispatch(s, wsi, c);
		return 0;
	case LWS_CALLBACK_HTTP_WRITEABLE: {
		size_t n = c->resp.body_len;
		uint8_t *buf;
		int rc;

		if (c->close_now)
			return -1;
		buf = malloc(LWS_PRE + n + 1);
		if (n)
			memcpy(buf + LWS_PRE, c->resp.body, n);
		rc = lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_HTTP_FINAL);
		free(buf);
		http_done(c);
		free(c->resp.body);
		c->resp.body = NULL;
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
			http_done(c);
			free(c->resp.body);
			free(c->http_uri);
			free(c->http_body);
			c->resp.body = NULL;
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
 * rx_buffer_size 512: libwebsockets keeps a receive buffer of this size for
 * every WebSocket connection for its whole life, so it is most of what an
 * idle connection costs (4096 made an idle connection 7.2 KB of RSS, 512
 * makes it 3.3 KB). Larger messages arrive in pieces and are reassembled
 * in rt_conn.rx. Smaller still (128) put every send through reassembly and
 * cost acks/s. tx_packet_size must be set: at 0, lws caps each send() at
 * rx_buffer_size, which split every coalesced write into small pieces.
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
	s->ctx = lws_create_context(&info);
	if (!s->ctx)
		goto fail;
	s->vh = lws_get_vhost_by_name(s->ctx, "default");
	if (!s->vh)
		goto fail_ctx;
	s->wbuf_cap = WBUF_CAP;
	s->wbuf = malloc(LWS_PRE + s->wbuf_cap);
	fd.filefd = s->listen_fd;
	s->listen_wsi = lws_adopt_descriptor_vhost(s->vh, LWS_ADOPT_RAW_FILE_DESC,
						   fd, "parley-listen", NULL);
	if (!s->listen_wsi)
		goto fail_buf;
	/* Publish ctx for producers' wake-ups only now that it is usable. */
	__atomic_store_n(&s->ctx, s->ctx, __ATOMIC_RELEASE);
	return 0;
fail_buf:
	free(s->wbuf);
fail_ctx:
	lws_context_destroy(s->ctx);
	s->ctx = NULL;
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
	 * close frame now rather than in a WRITEABLE callback that may not
	 * come. */
	for (uint32_t i = 0; i < s->nslots; i++) {
		rt_conn *c = s->slots[i];

		if (!c)
			continue;
		if (!c->closing && c->ws) {
			if (flush_queue(s, c) == 0)
				send_close(c, 1001);
			c->close_code = 1001;
		}
		rt_conn_close(c, 1001, "going away");
	}
}

void rt__transport_fini(struct rt_shard *s)
{
	struct lws_context *ctx = s->ctx;

	__atomic_store_n(&s->ctx, NULL, __ATOMIC_RELEASE);
	lws_context_destroy(ctx);
	loop_close(s);
	free(s->wbuf);
	free(s->slots);
	free(s->free_slots);
}
