/*
 * client: the C client of client.h, over plain TCP with its own RFC 6455
 * client side (handshake, masked frames, reassembly, ping/pong, close).
 *
 * The end-to-end tests call the blocking half (pc_connect, pc_request,
 * pc_recv); parley-bench drives thousands of connections per thread through
 * the non-blocking half (pc_on_readable, pc_next, pc_queue, pc_flush). Both
 * hand on whole binary messages: decoded by codec.c into a proto_doc, or as
 * raw payload bytes.
 *
 * The socket is always O_NONBLOCK; the blocking calls wait with poll(). A
 * connection holds no buffer while idle beyond PC_KEEP_BUF bytes each for
 * input and output: the bench keeps ~20k of them per process. Nothing here
 * is shared between connections, so one thread per connection set is safe.
 *
 * What client.h leaves open: a server frame that breaks RFC 6455 (masked,
 * reserved bits, unknown opcode, stray continuation) ends the connection
 * with 1002 as its close code, a message over 16 MiB with 1009, as if we
 * had closed it; text messages are dropped (the server sends none); a
 * blocking send gives up after PC_STALL_MS without progress.
 */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "proto/client.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define PC_MAX_MSG    (16u << 20) /* larger received messages are an error */
#define PC_KEEP_BUF   1024        /* an emptied buffer up to this is kept */
#define PC_MAX_HEADER 8192        /* the server's handshake response */
#define PC_STALL_MS   30000       /* a blocking send gives up after this */
#define PC_HELLO_RID  0x7ffffffffff1ull /* apart from any test's own rids */

enum {
	OP_CONT = 0x0, OP_TEXT = 0x1, OP_BIN = 0x2,
	OP_CLOSE = 0x8, OP_PING = 0x9, OP_PONG = 0xa,
};

struct buf {
	uint8_t *p;
	size_t len, cap;
};

/* A message that arrived while pc_request() waited for its response. */
struct kept {
	struct kept *next;
	size_t len;
	uint8_t data[];
};

struct pc_conn {
	int fd;
	SSL *ssl;         /* pc_tls(): everything goes through it */
	bool tls_ww;      /* the TLS handshake waits to write */
	int close_code;   /* 0 while open */
	bool eof;         /* the TCP stream ended or failed */
	bool closed;      /* close frame seen, or a protocol error: no more */
	bool close_sent;
	bool frag;        /* inside a fragmented message */
	bool frag_text;   /* ... which is text, and will be dropped */
	bool take_text;   /* pc_take_text(): hand text messages out too */
	bool msg_out;     /* msg was handed out; reset on the next call */
	uint64_t rng;     /* masking keys */
	size_t need;      /* whole size of the frame at in_off, once known */
	struct buf in;    /* bytes read, parsed up to in_off */
	size_t in_off;
	struct buf msg;   /* fragments being reassembled */
	struct buf out;   /* frames queued, written up to out_off */
	size_t out_off;
	struct kept *kept_head, *kept_tail;
	struct kept *kept_out; /* handed out by pc_next(); freed next call */
	/* pc_start(): a handshake under way without blocking */
	uint8_t hs;            /* HS_* */
	char hs_accept[32];    /* the Sec-WebSocket-Accept we expect */
	char hs_sub[40];       /* the subprotocol offered, "" for none */
};

enum { HS_DONE, HS_CONNECTING, HS_RESPONSE };

/* ---- TLS (pc_tls) -------------------------------------------------------- */

static SSL_CTX *tls_ctx;

int pc_tls(bool on)
{
	if (!on) {
		SSL_CTX_free(tls_ctx);
		tls_ctx = NULL;
		return 0;
	}
	if (tls_ctx)
		return 0;
	tls_ctx = SSL_CTX_new(TLS_client_method());
	if (!tls_ctx)
		return -1;
	SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION);
	/* the bench's and tests' servers use self-signed certificates */
	SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_mode(tls_ctx, SSL_MODE_RELEASE_BUFFERS |
				  SSL_MODE_ENABLE_PARTIAL_WRITE |
				  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_options(tls_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	return 0;
}

/* A new connection's SSL, when pc_tls is on. 0 or -1. */
static int tls_attach(pc_conn *c)
{
	if (!tls_ctx)
		return 0;
	c->ssl = SSL_new(tls_ctx);
	if (!c->ssl || !SSL_set_fd(c->ssl, c->fd))
		return -1;
	SSL_set_connect_state(c->ssl);
	c->tls_ww = true;
	return 0;
}

/* recv() and send() through SSL when there is one; failures as errno. */
static ssize_t c_io(pc_conn *c, void *rp, const void *wp, size_t n)
{
	int r;

	if (!c->ssl)
		return rp ? recv(c->fd, rp, n, MSG_DONTWAIT)
			  : send(c->fd, wp, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (!n)
		return 0;
	ERR_clear_error();
	r = rp ? SSL_read(c->ssl, rp, n > INT_MAX ? INT_MAX : (int)n)
	       : SSL_write(c->ssl, wp, n > INT_MAX ? INT_MAX : (int)n);
	if (r > 0)
		return r;
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		if (rp)
			return 0;
		errno = EPIPE; /* a write: the peer closed */
		return -1;
	default:
		ERR_clear_error();
		errno = ECONNRESET;
		return -1;
	}
}

#define c_recv(c, p, n) c_io(c, p, NULL, n)
#define c_send(c, p, n) c_io(c, NULL, p, n)

/* One step of the TLS handshake: 1 done, 0 waiting (tls_ww says for
 * what), -1 failed. */
static int tls_step(pc_conn *c)
{
	int r, e;

	if (!c->ssl || SSL_is_init_finished(c->ssl))
		return 1;
	ERR_clear_error();
	r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->tls_ww = false;
		return 1;
	}
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		c->tls_ww = e == SSL_ERROR_WANT_WRITE;
		return 0;
	}
	ERR_clear_error();
	return -1;
}

/* ---- small pieces ------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* -1: no deadline */
static int64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

static int left_ms(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - now_ms();
	if (left <= 0)
		return 0;
	return left > 1000000 ? 1000000 : (int)left;
}

static int buf_reserve(struct buf *b, size_t extra)
{
	size_t cap = b->cap ? b->cap : 256;
	uint8_t *p;

	if (b->cap - b->len >= extra)
		return 0;
	while (cap - b->len < extra) {
		if (cap > SIZE_MAX / 2)
			return -1;
		cap *= 2;
	}
	p = realloc(b->p, cap);
	if (!p)
		return -1;
	b->p = p;
	b->cap = cap;
	return 0;
}

static int buf_append(struct buf *b, const void *v, size_t n)
{
	if (buf_reserve(b, n))
		return -1;
	if (n)
		memcpy(b->p + b->len, v, n);
	b->len += n;
	return 0;
}

static void buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

static int read_urandom(void *p, size_t n)
{
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	uint8_t *b = p;

	if (fd < 0)
		return -1;
	while (n) {
		ssize_t r = read(fd, b, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			close(fd);
			return -1;
		}
		b += r;
		n -= (size_t)r;
	}
	close(fd);
	return 0;
}

static int fill_random(void *p, size_t n)
{
	uint8_t *b = p;

	while (n) {
		ssize_t r = getrandom(b, n, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return read_urandom(b, n);
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

/* splitmix64. Masking keys only have to be unpredictable to the network
 * path (RFC 6455 10.3), and a syscall per frame would cost the bench more
 * than the frame: a per-connection generator seeded from getrandom(). */
static uint32_t next_mask(pc_conn *c)
{
	uint64_t z = (c->rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return (uint32_t)(z ^ (z >> 31));
}

/* ---- SHA-1 and base64, for Sec-WebSocket-Accept only ------------------- */

static uint32_t rol(uint32_t x, unsigned n)
{
	return x << n | x >> (32 - n);
}

static void sha1_block(uint32_t h[5], const uint8_t *p)
{
	uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
	unsigned i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (; i < 80; i++)
		w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
	for (i = 0; i < 80; i++) {
		uint32_t f, k, t;

		if (i < 20) {
			f = (b & c) | (~b & d);
			k = 0x5a827999;
		} else if (i < 40) {
			f = b ^ c ^ d;
			k = 0x6ed9eba1;
		} else if (i < 60) {
			f = (b & c) | (b & d) | (c & d);
			k = 0x8f1bbcdc;
		} else {
			f = b ^ c ^ d;
			k = 0xca62c1d6;
		}
		t = rol(a, 5) + f + e + k + w[i];
		e = d;
		d = c;
		c = rol(b, 30);
		b = a;
		a = t;
	}
	h[0] += a;
	h[1] += b;
	h[2] += c;
	h[3] += d;
	h[4] += e;
}

static void sha1(const void *data, size_t n, uint8_t out[20])
{
	uint32_t h[5] = { 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476,
			  0xc3d2e1f0 };
	const uint8_t *p = data;
	uint8_t last[128] = { 0 };
	uint64_t bits = (uint64_t)n * 8;
	size_t rest, tail, i;

	for (; n >= 64; n -= 64, p += 64)
		sha1_block(h, p);
	rest = n;
	memcpy(last, p, rest);
	last[rest] = 0x80;
	tail = rest + 1 + 8 <= 64 ? 64 : 128;
	for (i = 0; i < 8; i++)
		last[tail - 1 - i] = (uint8_t)(bits >> (8 * i));
	sha1_block(h, last);
	if (tail == 128)
		sha1_block(h, last + 64);
	for (i = 0; i < 20; i++)
		out[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

/* out gets 4 * ceil(n / 3) characters and a NUL. */
static void base64(const uint8_t *in, size_t n, char *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				  "abcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i;

	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
			     in[i + 2];

		*out++ = tab[v >> 18];
		*out++ = tab[(v >> 12) & 63];
		*out++ = tab[(v >> 6) & 63];
		*out++ = tab[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)in[i] << 16;

		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		*out++ = tab[v >> 18];
		*out++ = tab[(v >> 12) & 63];
		*out++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
		*out++ = '=';
	}
	*out = '\0';
}

/* ---- socket I/O --------------------------------------------------------- */

static void set_eof(pc_conn *c)
{
	c->eof = true;
	if (!c->close_code)
		c->close_code = 1006;
}

/* A protocol error on the server's side: stop reading, say why with the
 * code we would have closed with. */
static int fail(pc_conn *c, int code)
{
	c->closed = true;
	if (!c->close_code)
		c->close_code = code;
	return -1;
}

/* Wait until fd is ready for events (POLLOUT is added while output waits,
 * and written whenever possible). 1 ready, 0 deadline passed, -1 error. */
static int wait_fd(pc_conn *c, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd pfd = { .fd = c->fd, .events = events };
		int rc;

		if (c->out.len > c->out_off)
			pfd.events |= POLLOUT;
		rc = poll(&pfd, 1, left_ms(deadline));
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0)
			return -1;
		if (rc == 0)
			return 0;
		if ((pfd.revents & POLLOUT) && !(events & POLLOUT) &&
		    pc_flush(c) < 0)
			return -1;
		if (pfd.revents & (events | POLLERR | POLLHUP | POLLNVAL))
			return 1;
	}
}

/* Drop what the input buffer has parsed, so reads append after the rest. */
static void in_compact(pc_conn *c)
{
	if (c->in_off) {
		memmove(c->in.p, c->in.p + c->in_off, c->in.len - c->in_off);
		c->in.len -= c->in_off;
		c->in_off = 0;
	}
	if (c->in.len == 0 && c->in.cap > PC_KEEP_BUF)
		buf_free(&c->in);
}

/* Read everything the socket has now (until EAGAIN, so edge-triggered epoll
 * works). Small reads land on the stack first so that an idle connection's
 * buffer stays the size of what it holds. Returns the bytes read; EOF and
 * errors set eof, leaving what was read before them to parse. */
static size_t fill(pc_conn *c)
{
	uint8_t tmp[16384];
	size_t total = 0;

	if (c->eof || c->closed)
		return 0;
	in_compact(c);
	for (;;) {
		uint8_t *dst = tmp;
		size_t room = sizeof(tmp);
		ssize_t r;

		if (c->need > c->in.len &&
		    buf_reserve(&c->in, c->need - c->in.len)) {
			fail(c, 1009);
			break;
		}
		if (c->in.cap - c->in.len >= sizeof(tmp)) {
			dst = c->in.p + c->in.len;
			room = c->in.cap - c->in.len;
		}
		r = c_recv(c, dst, room);
		if (r > 0) {
			if (dst == tmp) {
				if (buf_append(&c->in, tmp, (size_t)r)) {
					fail(c, 1009);
					break;
				}
			} else {
				c->in.len += (size_t)r;
			}
			total += (size_t)r;
			/* (TLS: a record at a time; read on until EAGAIN) */
			if ((size_t)r < room && !c->ssl)
				break;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		set_eof(c);
		break;
	}
	return total;
}

/* Send all of p before deadline; used only by the handshake, before any
 * frame can be queued. */
static int write_all(pc_conn *c, const void *p, size_t n, int64_t deadline)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t r = c_send(c, b, n);

		if (r > 0) {
			b += r;
			n -= (size_t)r;
		} else if (r < 0 && errno == EINTR) {
			continue;
		} else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (wait_fd(c, POLLOUT, deadline) != 1)
				return -1;
		} else {
			return -1;
		}
	}
	return 0;
}

/* ---- handshake ---------------------------------------------------------- */

static bool name_is(const char *s, size_t n, const char *name)
{
	return strlen(name) == n && strncasecmp(s, name, n) == 0;
}

/* Is tok one of the comma-separated tokens of v[0..n)? */
static bool has_token(const char *v, size_t n, const char *tok)
{
	size_t i = 0, tl = strlen(tok);

	while (i < n) {
		size_t s, e;

		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		s = i;
		while (i < n && v[i] != ',')
			i++;
		e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
			return true;
	}
	return false;
}

/* Check the server's response head (hdr[0..n), the blank line excluded). */
static int check_response(const char *hdr, size_t n, const char *accept,
			  const char *sub)
{
	const char *p = hdr, *end = hdr + n;
	bool upgrade = false, connection = false, accepted = false;

	if (n < 12 || memcmp(hdr, "HTTP/1.1 101", 12) != 0 ||
	    (n > 12 && hdr[12] != ' ' && hdr[12] != '\r'))
		return -1;
	for (;;) {
		const char *eol = memchr(p, '\r', (size_t)(end - p));
		const char *colon, *v, *ve;

		if (!eol)
			break;
		p = eol + 2; /* the line after \r\n */
		if (p >= end)
			break;
		eol = memchr(p, '\r', (size_t)(end - p));
		if (!eol)
			eol = end;
		colon = memchr(p, ':', (size_t)(eol - p));
		if (!colon) {
			p = eol;
			continue;
		}
		v = colon + 1;
		while (v < eol && (*v == ' ' || *v == '\t'))
			v++;
		ve = eol;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		if (name_is(p, (size_t)(colon - p), "upgrade"))
			upgrade = name_is(v, (size_t)(ve - v), "websocket");
		else if (name_is(p, (size_t)(colon - p), "connection"))
			connection = has_token(v, (size_t)(ve - v), "upgrade");
		else if (name_is(p, (size_t)(colon - p),
				 "sec-websocket-accept"))
			accepted = (size_t)(ve - v) == strlen(accept) &&
				   memcmp(v, accept, strlen(accept)) == 0;
		else if (name_is(p, (size_t)(colon - p),
				 "sec-websocket-protocol")) {
			/* RFC 6455 4.1: only a subprotocol we offered; none
			 * at all is fine (the server may take none). */
			if (!sub || (size_t)(ve - v) != strlen(sub) ||
			    memcmp(v, sub, strlen(sub)) != 0)
				return -1;
		}
		p = eol;
	}
	return upgrade && connection && accepted ? 0 : -1;
}

/* The upgrade request into req (cap 512) and the accept value it asks
 * for into accept (32); its length, or -1. */
static int upgrade_request(const char *host, int port, const char *sub,
			   char *req, char *accept)
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	char key[32], cat[64];
	uint8_t nonce[16], digest[20];
	int n;

	if (fill_random(nonce, sizeof(nonce)))
		return -1;
	base64(nonce, sizeof(nonce), key);
	n = snprintf(cat, sizeof(cat), "%s%s", key, guid);
	sha1(cat, (size_t)n, digest);
	base64(digest, sizeof(digest), accept);

	n = snprintf(req, 512,
		     "GET /ws HTTP/1.1\r\n"
		     "Host: %s:%d\r\n"
		     "Upgrade: websocket\r\n"
		     "Connection: Upgrade\r\n"
		     "Sec-WebSocket-Key: %s\r\n"
		     "Sec-WebSocket-Version: 13\r\n"
		     "%s%s%s"
		     "\r\n",
		     host, port, key, sub ? "Sec-WebSocket-Protocol: " : "",
		     sub ? sub : "", sub ? "\r\n" : "");
	return n < 0 || n >= 512 ? -1 : n;
}

static int handshake(pc_conn *c, const char *host, int port, const char *sub,
		     int64_t deadline)
{
	char req[512], accept[32], resp[PC_MAX_HEADER];
	size_t got = 0;
	int n = upgrade_request(host, port, sub, req, accept);

	if (n < 0)
		return -1;
	if (write_all(c, req, (size_t)n, deadline))
		return -1;

	for (;;) {
		char *end;
		ssize_t r;

		if (got == sizeof(resp))
			return -1;
		r = c_recv(c, resp + got, sizeof(resp) - got);
		if (r == 0)
			return -1;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -1;
			if (wait_fd(c, POLLIN, deadline) != 1)
				return -1;
			continue;
		}
		got += (size_t)r;
		end = memmem(resp, got, "\r\n\r\n", 4);
		if (!end)
			continue;
		if (check_response(resp, (size_t)(end - resp), accept, sub))
			return -1;
		/* Frames the server sent right after its response. */
		end += 4;
		return buf_append(&c->in, end, got - (size_t)(end - resp));
	}
}

pc_conn *pc_connect(const char *host, int port, const char *src_ip,
		    const char *subprotocol, int timeout_ms)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int64_t deadline = deadline_of(timeout_ms);
	int one = 1, err = 0;
	socklen_t elen = sizeof(err);
	pc_conn *c;

	if (!host || port <= 0 || port > 65535)
		return NULL;
	sa.sin_port = htons((uint16_t)port);
	if (strcmp(host, "localhost") == 0)
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return NULL;

	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	if (fill_random(&c->rng, sizeof(c->rng)))
		goto fail_free;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		goto fail_free;
	/* Requests are small and answered at once: Nagle plus delayed ACKs
	 * would add 40 ms to every round trip. */
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (src_ip) {
		struct sockaddr_in src = { .sin_family = AF_INET };

		if (inet_pton(AF_INET, src_ip, &src.sin_addr) != 1)
			goto fail_close;
		/* Pick the port at connect() time, per destination: the bench
		 * opens more connections per source address than bind()
		 * alone could number. */
		setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
			   sizeof(one));
		if (bind(c->fd, (struct sockaddr *)&src, sizeof(src)))
			goto fail_close;
	}
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		if (errno != EINPROGRESS)
			goto fail_close;
		if (wait_fd(c, POLLOUT, deadline) != 1)
			goto fail_close;
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) ||
		    err)
			goto fail_close;
	}
	if (tls_attach(c))
		goto fail_close;
	for (int rc; (rc = tls_step(c)) != 1;)
		if (rc < 0 || wait_fd(c, c->tls_ww ? POLLOUT : POLLIN,
				      deadline) != 1)
			goto fail_close;
	if (handshake(c, host, port, subprotocol, deadline))
		goto fail_close;
	return c;

fail_close:
	SSL_free(c->ssl);
	close(c->fd);
fail_free:
	buf_free(&c->in);
	free(c);
	return NULL;
}

/* ---- the same handshake, without blocking (the bench) ---------------- */

pc_conn *pc_start(const char *host, int port, const char *src_ip,
		  const char *subprotocol)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char req[512];
	int one = 1, n;
	pc_conn *c;

	if (!host || port <= 0 || port > 65535 ||
	    (subprotocol && strlen(subprotocol) >= sizeof(c->hs_sub)))
		return NULL;
	sa.sin_port = htons((uint16_t)port);
	if (strcmp(host, "localhost") == 0)
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return NULL;

	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	if (fill_random(&c->rng, sizeof(c->rng)))
		goto fail_free;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		goto fail_free;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (src_ip) {
		struct sockaddr_in src = { .sin_family = AF_INET };

		if (inet_pton(AF_INET, src_ip, &src.sin_addr) != 1)
			goto fail_close;
		setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
			   sizeof(one));
		if (bind(c->fd, (struct sockaddr *)&src, sizeof(src)))
			goto fail_close;
	}
	/* The request waits in the output buffer until the socket is
	 * connected; pc_start_step() writes it. */
	n = upgrade_request(host, port, subprotocol, req, c->hs_accept);
	if (n < 0 || buf_append(&c->out, req, (size_t)n))
		goto fail_close;
	snprintf(c->hs_sub, sizeof(c->hs_sub), "%s",
		 subprotocol ? subprotocol : "");
	c->hs = HS_CONNECTING;
	if (tls_attach(c))
		goto fail_close;
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) &&
	    errno != EINPROGRESS)
		goto fail_close;
	return c;

fail_close:
	SSL_free(c->ssl);
	close(c->fd);
fail_free:
	buf_free(&c->out);
	free(c);
	return NULL;
}

int pc_start_step(pc_conn *c)
{
	char *end;

	if (c->hs == HS_DONE)
		return 1;
	if (c->hs == HS_CONNECTING) {
		int err = 0;
		socklen_t elen = sizeof(err);

		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) || err)
			return -1;
		if ((err = tls_step(c)) != 1)
			return err;
		if (pc_flush(c) < 0)
			return -1;
		if (pc_pending(c))
			return 0; /* not connected yet, or the buffer is full */
		c->hs = HS_RESPONSE;
	}
	fill(c);
	end = c->in.len ? memmem(c->in.p, c->in.len, "\r\n\r\n", 4) : NULL;
	if (!end) {
		if (c->eof || c->closed || c->in.len >= PC_MAX_HEADER)
			return -1;
		return 0;
	}
	if (check_response((const char *)c->in.p,
			   (size_t)(end - (char *)c->in.p), c->hs_accept,
			   c->hs_sub[0] ? c->hs_sub : NULL))
		return -1;
	/* frames that came with the response stay for pc_next() */
	c->in_off = (size_t)(end + 4 - (char *)c->in.p);
	c->hs = HS_DONE;
	return 1;
}

bool pc_start_wants_write(const pc_conn *c)
{
	return (c->hs == HS_CONNECTING &&
		(!c->ssl || c->tls_ww || SSL_is_init_finished(c->ssl))) ||
	       c->out.len > c->out_off;
}

/* ---- frames ------------------------------------------------------------- */

static void release(pc_conn *c)
{
	free(c->kept_out);
	c->kept_out = NULL;
	if (c->msg_out) {
		c->msg_out = false;
		c->msg.len = 0;
		if (c->msg.cap > PC_KEEP_BUF)
			buf_free(&c->msg);
	}
}

static uint64_t be(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	while (n--)
		v = v << 8 | *p++;
	return v;
}

int pc_queue(pc_conn *c, int opcode, const void *data, size_t len)
{
	const uint8_t *src = data;
	uint8_t *dst, mask[4];
	uint32_t m = next_mask(c);
	size_t hl = 2, i;

	if (c->eof || c->close_sent || (c->closed && opcode != OP_CLOSE))
		return -1;
	if (c->out_off == c->out.len) {
		c->out_off = c->out.len = 0;
	} else if (c->out_off && c->out.cap - c->out.len < len + 14) {
		memmove(c->out.p, c->out.p + c->out_off,
			c->out.len - c->out_off);
		c->out.len -= c->out_off;
		c->out_off = 0;
	}
	if (len > SIZE_MAX - 14 || buf_reserve(&c->out, len + 14))
		return -1;
	dst = c->out.p + c->out.len;
	dst[0] = 0x80 | (opcode & 0x0f);
	if (len < 126) {
		dst[1] = 0x80 | (uint8_t)len;
	} else if (len <= 0xffff) {
		dst[1] = 0x80 | 126;
		dst[2] = (uint8_t)(len >> 8);
		dst[3] = (uint8_t)len;
		hl = 4;
	} else {
		dst[1] = 0x80 | 127;
		for (i = 0; i < 8; i++)
			dst[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
		hl = 10;
	}
	memcpy(mask, &m, 4);
	memcpy(dst + hl, mask, 4);
	hl += 4;
	for (i = 0; i < len; i++)
		dst[hl + i] = src[i] ^ mask[i & 3];
	c->out.len += hl + len;
	if (opcode == OP_CLOSE)
		c->close_sent = true;
	return 0;
}

int pc_flush(pc_conn *c)
{
	while (c->out_off < c->out.len) {
		ssize_t r = c_send(c, c->out.p + c->out_off,
				   c->out.len - c->out_off);

		if (r >= 0) {
			c->out_off += (size_t)r;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		set_eof(c);
		return -1;
	}
	c->out_off = c->out.len = 0;
	if (c->out.cap > PC_KEEP_BUF)
		buf_free(&c->out);
	return 0;
}

size_t pc_pending(const pc_conn *c)
{
	return c->out.len - c->out_off;
}

int pc_send_raw(pc_conn *c, int opcode, const void *data, size_t len)
{
	if (pc_queue(c, opcode, data, len))
		return -1;
	for (;;) {
		if (pc_flush(c))
			return -1;
		if (!pc_pending(c))
			return 0;
		if (wait_fd(c, POLLOUT, deadline_of(PC_STALL_MS)) != 1)
			return -1;
	}
}

int pc_send(pc_conn *c, const proto_out *o)
{
	return pc_send_raw(c, OP_BIN, o->data, o->len);
}

static int on_close(pc_conn *c, const uint8_t *p, size_t n)
{
	int code = n >= 2 ? (int)be(p, 2) : n == 1 ? 1002 : 1005;

	c->closed = true;
	c->close_code = code;
	/* Answer in kind (best effort): echo the code, or nothing. */
	if (!c->close_sent && !c->eof) {
		pc_queue(c, OP_CLOSE, p, n >= 2 ? 2 : 0);
		pc_flush(c);
	}
	return -1;
}

/* Take the next complete binary message out of the input buffer: 1 (data
 * points into c->in or c->msg until the next call into c), 0 none complete
 * yet, -1 closed. Control frames are answered here, text messages dropped
 * (the server sends none). */
static int parse(pc_conn *c, const uint8_t **data, size_t *len)
{
	for (;;) {
		const uint8_t *p = c->in.p + c->in_off;
		size_t avail = c->in.len - c->in_off, hl = 2;
		uint64_t n;
		bool fin;
		int op;

		if (c->closed)
			return -1;
		if (avail < 2)
			return 0;
		fin = p[0] & 0x80;
		op = p[0] & 0x0f;
		if (p[0] & 0x70)
			return fail(c, 1002); /* no extension was agreed */
		if (p[1] & 0x80)
			return fail(c, 1002); /* servers never mask */
		n = p[1] & 0x7f;
		if (n == 126) {
			if (avail < 4)
				return 0;
			n = be(p + 2, 2);
			hl = 4;
		} else if (n == 127) {
			if (avail < 10)
				return 0;
			n = be(p + 2, 8);
			hl = 10;
		}
		if (op >= 8) {
			if (!fin || n > 125)
				return fail(c, 1002);
		} else if (n > PC_MAX_MSG ||
			   (op == OP_CONT && c->msg.len + n > PC_MAX_MSG)) {
			return fail(c, 1009);
		}
		if (avail - hl < n) {
			c->need = hl + (size_t)n;
			return 0;
		}
		c->need = 0;
		p += hl;
		c->in_off += hl + (size_t)n;
		switch (op) {
		case OP_CLOSE:
			return on_close(c, p, (size_t)n);
		case OP_PING:
			/* If the socket is full, the pong goes out later. */
			if (pc_queue(c, OP_PONG, p, (size_t)n) == 0)
				pc_flush(c);
			continue;
		case OP_PONG:
			continue;
		case OP_TEXT:
		case OP_BIN:
			if (c->frag)
				return fail(c, 1002);
			if (fin) {
				if (op == OP_TEXT && !c->take_text)
					continue;
				*data = p;
				*len = (size_t)n;
				return 1;
			}
			c->frag = true;
			c->frag_text = op == OP_TEXT;
			c->msg.len = 0;
			if (buf_append(&c->msg, p, (size_t)n))
				return fail(c, 1009);
			continue;
		case OP_CONT:
			if (!c->frag)
				return fail(c, 1002);
			if (buf_append(&c->msg, p, (size_t)n))
				return fail(c, 1009);
			if (!fin)
				continue;
			c->frag = false;
			if (c->frag_text && !c->take_text) {
				c->msg.len = 0;
				continue;
			}
			c->msg_out = true;
			*data = c->msg.p;
			*len = c->msg.len;
			return 1;
		default:
			return fail(c, 1002);
		}
	}
}

/* parse(), reading and waiting as needed: 1, 0 at the deadline, -1. */
static int wait_msg(pc_conn *c, const uint8_t **data, size_t *len,
		    int64_t deadline)
{
	for (;;) {
		int rc = parse(c, data, len);

		if (rc)
			return rc;
		if (c->eof)
			return -1;
		rc = wait_fd(c, POLLIN, deadline);
		if (rc < 0) {
			set_eof(c);
			return -1;
		}
		if (rc == 0)
			return 0;
		fill(c);
	}
}

static int keep(pc_conn *c, const uint8_t *data, size_t len)
{
	struct kept *k = malloc(sizeof(*k) + len);

	if (!k)
		return -1;
	k->next = NULL;
	k->len = len;
	memcpy(k->data, data, len);
	if (c->kept_tail)
		c->kept_tail->next = k;
	else
		c->kept_head = k;
	c->kept_tail = k;
	return 0;
}

static struct kept *unkeep(pc_conn *c)
{
	struct kept *k = c->kept_head;

	if (k) {
		c->kept_head = k->next;
		if (!c->kept_head)
			c->kept_tail = NULL;
	}
	return k;
}

int pc_recv(pc_conn *c, proto_doc *doc, int timeout_ms)
{
	const uint8_t *data;
	struct kept *k;
	size_t len;
	int rc;

	release(c);
	k = unkeep(c);
	if (k) {
		rc = proto_decode_max(doc, k->data, k->len, PC_MAX_MSG);
		free(k);
		return rc == PROTO_OK ? 1 : -1;
	}
	rc = wait_msg(c, &data, &len, deadline_of(timeout_ms));
	if (rc != 1)
		return rc;
	return proto_decode_max(doc, data, len, PC_MAX_MSG) == PROTO_OK ? 1 : -1;
}

int pc_close_code(const pc_conn *c)
{
	return c->close_code;
}

static bool is_response(const proto_doc *d, uint64_t rid)
{
	const char *t;
	uint32_t tn;
	uint64_t r;

	return proto_get_str(&d->root, "t", &t, &tn) == 0 && tn == 3 &&
	       memcmp(t, "res", 3) == 0 &&
	       proto_get_uint(&d->root, "rid", &r) == 0 && r == rid;
}

/* Takes the response to rid out of the kept frames, if one arrived while
 * another request waited. */
static int take_kept(pc_conn *c, uint64_t rid, proto_doc *res)
{
	for (struct kept **pk = &c->kept_head, *prev = NULL; *pk;
	     prev = *pk, pk = &(*pk)->next) {
		struct kept *k = *pk;

		if (proto_decode_max(res, k->data, k->len, PC_MAX_MSG) != PROTO_OK)
			continue;
		if (!is_response(res, rid)) {
			proto_doc_free(res);
			continue;
		}
		*pk = k->next;
		if (c->kept_tail == k)
			c->kept_tail = prev;
		free(k);
		return 1;
	}
	return 0;
}

int pc_await(pc_conn *c, uint64_t rid, proto_doc *res, int timeout_ms)
{
	int64_t deadline = deadline_of(timeout_ms);

	release(c);
	if (take_kept(c, rid, res))
		return 1;
	for (;;) {
		const uint8_t *data;
		size_t len;
		int rc = wait_msg(c, &data, &len, deadline);

		if (rc != 1)
			return rc;
		if (proto_decode_max(res, data, len, PC_MAX_MSG) == PROTO_OK) {
			if (is_response(res, rid))
				return 1;
			proto_doc_free(res);
		}
		if (keep(c, data, len))
			return -1;
	}
}

int pc_request(pc_conn *c, const proto_out *o, uint64_t rid, proto_doc *res,
	       int timeout_ms)
{
	release(c);
	if (pc_send(c, o))
		return -1;
	return pc_await(c, rid, res, timeout_ms);
}

int pc_hello(pc_conn *c, const char *token, const char *const *chs,
	     const uint64_t *seqs, unsigned nresume, proto_doc *res,
	     int timeout_ms)
{
	proto_out o;
	bool ok = false;
	int rc;

	proto_out_init(&o, 0, 256);
	proto_enc_hello(&o, PC_HELLO_RID, token, chs, seqs, nresume);
	rc = pc_request(c, &o, PC_HELLO_RID, res, timeout_ms);
	proto_out_free(&o);
	if (rc != 1)
		return rc;
	return proto_get_bool(&res->root, "ok", &ok) == 0 && ok ? 1 : -2;
}

/* ---- non-blocking use --------------------------------------------------- */

/* The socket already is non-blocking (the blocking calls poll); this only
 * makes sure, for a caller that changed the flags through pc_fd(). */
int pc_set_nonblocking(pc_conn *c)
{
	int fl = fcntl(c->fd, F_GETFL);

	if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -1;
	return 0;
}

/* 0, or -1 once the connection is gone; messages that arrived before the
 * end are still handed out by pc_next(). */
int pc_on_readable(pc_conn *c)
{
	release(c);
	fill(c);
	return c->eof || c->closed ? -1 : 0;
}

int pc_next(pc_conn *c, const uint8_t **data, size_t *len)
{
	int rc;

	release(c);
	c->kept_out = unkeep(c);
	if (c->kept_out) {
		*data = c->kept_out->data;
		*len = c->kept_out->len;
		return 1;
	}
	rc = parse(c, data, len);
	if (rc == 0 && c->eof)
		return -1;
	return rc;
}

void pc_take_text(pc_conn *c)
{
	c->take_text = true;
}

int pc_fd(pc_conn *c)
{
	return c->fd;
}

void pc_close(pc_conn *c)
{
	struct kept *k;

	if (!c)
		return;
	if (!c->close_sent && !c->eof) {
		static const uint8_t normal[2] = { 1000 >> 8, 1000 & 0xff };

		/* Best effort, never blocking: the server will see the TCP
		 * close either way. */
		if (pc_queue(c, OP_CLOSE, normal, 2) == 0)
			pc_flush(c);
	}
	SSL_free(c->ssl);
	close(c->fd);
	release(c);
	while ((k = unkeep(c)))
		free(k);
	buf_free(&c->in);
	buf_free(&c->msg);
	buf_free(&c->out);
	free(c);
}
