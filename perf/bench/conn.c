/*
 * One bench connection to parleyd, nats-server or redis-server, driven by
 * epoll without ever blocking (child.c, main.c's publisher):
 *
 *   parley  pc_start() (TCP, WebSocket upgrade on /ws, parley.v1), then
 *           hello with a token minted here; ready at hello's response.
 *           Frames are read with a small msgpack walker, not decoded into
 *           a document: a delivery costs no allocation.
 *   NATS    pc_start() on nats-server's WebSocket listener; the NATS text
 *           protocol is one byte stream across WebSocket messages (an op
 *           may span messages, a message may hold several). INFO, then
 *           CONNECT (+ SUB) + PING; ready at the PONG. PINGs get PONGs.
 *   Redis   TCP; SUBSCRIBE, ready at its confirmation (a publisher is
 *           ready once connected). RESP push messages, PUBLISH replies
 *           (integers) and XADD replies (bulk strings; acks), each
 *           handed to hooks->res with rid 0: replies come in the order of
 *           the commands, the caller keeps the send times.
 *
 * What a connection finds it hands to the hooks of whoever drives it.
 */
#define _GNU_SOURCE
#include "perf/bench/bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "actors/actors.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define HELLO_RID 1     /* the bench's other rids are clock readings */
#define ACC_KEEP 4096   /* an emptied stream buffer up to this is kept */

bopts bo;
const bhooks *hooks;

void user_name(uint32_t i, char *out, size_t cap)
{
	snprintf(out, cap, "%su%u", bo.prefix, i);
}

char *mint(const char *user)
{
	return auth_mint(bo.key, bo.keylen, user, bo.ws,
			 (int64_t)time(NULL) + 24 * 3600, NULL, NULL);
}

int bo_port(uint32_t id)
{
	return bo.nports > 1 ? bo.ports[id % (uint32_t)bo.nports] : bo.port;
}

const char *src_ip(uint32_t i, char *buf)
{
	sprintf(buf, "127.0.0.%u", 2 + i % 253);
	return buf;
}

/* ---- plain TCP (Redis) ------------------------------------------------------ */

static int tcp_start(const char *src)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)bo.port) };
	struct sockaddr_in la = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;

	if (fd < 0)
		return -1;
	if (inet_pton(AF_INET, bo.host, &sa.sin_addr) != 1 ||
	    inet_pton(AF_INET, src, &la.sin_addr) != 1)
		goto fail;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&la, sizeof(la)))
		goto fail;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) &&
	    errno != EINPROGRESS)
		goto fail;
	return fd;
fail:
	close(fd);
	return -1;
}

static int raw_flush(bconn *b)
{
	while (b->outoff < b->outlen) {
		ssize_t w = send(b->fd, b->out + b->outoff, b->outlen - b->outoff,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w > 0) {
			b->outoff += (uint32_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		return -1;
	}
	b->outoff = b->outlen = 0;
	if (b->outcap > ACC_KEEP) {
		free(b->out);
		b->out = NULL;
		b->outcap = 0;
	}
	return 0;
}

static int grow(char **p, uint32_t *cap, size_t need)
{
	size_t c = *cap ? *cap : 256;
	char *n;

	if (need <= *cap)
		return 0;
	while (c < need)
		c *= 2;
	if (c > UINT32_MAX || !(n = realloc(*p, c)))
		return -1;
	*p = n;
	*cap = (uint32_t)c;
	return 0;
}

int bconn_send(bconn *b, const void *data, size_t len)
{
	if (b->state == BS_DEAD)
		return -1;
	if (b->srv != SRV_REDIS) {
		if (pc_queue(b->pc, 2, data, len) || pc_flush(b->pc))
			return -1;
		return 0;
	}
	if (b->outoff == b->outlen) {
		ssize_t w = b->state == BS_CONNECTING ? 0 :
			    send(b->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
		    errno != EINTR)
			return -1;
		if (w > 0) {
			data = (const char *)data + w;
			len -= (size_t)w;
		}
		b->outoff = b->outlen = 0;
		if (!len)
			return 0;
	}
	if (grow(&b->out, &b->outcap, (size_t)b->outlen + len))
		return -1;
	memcpy(b->out + b->outlen, data, len);
	b->outlen += (uint32_t)len;
	return 0;
}

bool bconn_pending(const bconn *b)
{
	if (b->srv == SRV_REDIS)
		return b->outlen > b->outoff;
	return b->pc && pc_pending(b->pc) > 0;
}

uint32_t bconn_events(const bconn *b)
{
	if (b->state == BS_CONNECTING)
		return EPOLLIN | (b->srv == SRV_REDIS || pc_start_wants_write(b->pc) ?
					  EPOLLOUT : 0);
	return EPOLLIN | (bconn_pending(b) ? EPOLLOUT : 0);
}

/* ---- msgpack, just enough to walk a server frame ----------------------------- */

struct mp {
	const uint8_t *p, *end;
};

static uint64_t be_n(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	while (n--)
		v = v << 8 | *p++;
	return v;
}

/* A string at m->p: its bytes, and m->p moves past it. -1 if not one. */
static int mp_str(struct mp *m, const char **s, uint32_t *n)
{
	const uint8_t *p = m->p;
	unsigned hl;
	uint64_t len;

	if (p >= m->end)
		return -1;
	if ((*p & 0xe0) == 0xa0) {
		hl = 1;
		len = *p & 0x1f;
	} else if (*p >= 0xd9 && *p <= 0xdb) {
		hl = 1 + (1u << (*p - 0xd9));
		if ((size_t)(m->end - p) < hl)
			return -1;
		len = be_n(p + 1, hl - 1);
	} else {
		return -1;
	}
	if ((uint64_t)(m->end - p) < hl + len)
		return -1;
	*s = (const char *)p + hl;
	*n = (uint32_t)len;
	m->p = p + hl + len;
	return 0;
}

static int mp_skip(struct mp *m, int depth);

static int mp_skipn(struct mp *m, uint64_t n, int depth)
{
	while (n--)
		if (mp_skip(m, depth))
			return -1;
	return 0;
}

static int mp_adv(struct mp *m, uint64_t n)
{
	if ((uint64_t)(m->end - m->p) < n)
		return -1;
	m->p += n;
	return 0;
}

static int mp_skip(struct mp *m, int depth)
{
	uint8_t c;
	unsigned w;

	if (m->p >= m->end || depth > 16)
		return -1;
	c = *m->p++;
	if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
		return 0;
	if ((c & 0xf0) == 0x80)
		return mp_skipn(m, 2u * (c & 0x0f), depth + 1);
	if ((c & 0xf0) == 0x90)
		return mp_skipn(m, c & 0x0f, depth + 1);
	if ((c & 0xe0) == 0xa0)
		return mp_adv(m, c & 0x1f);
	switch (c) {
	case 0xc4: case 0xc5: case 0xc6: /* bin */
	case 0xd9: case 0xda: case 0xdb: /* str */
		w = c <= 0xc6 ? 1u << (c - 0xc4) : 1u << (c - 0xd9);
		if ((size_t)(m->end - m->p) < w)
			return -1;
		m->p += w;
		return mp_adv(m, be_n(m->p - w, w));
	case 0xc7: case 0xc8: case 0xc9: /* ext */
		w = 1u << (c - 0xc7);
		if ((size_t)(m->end - m->p) < w)
			return -1;
		m->p += w;
		return mp_adv(m, be_n(m->p - w, w) + 1);
	case 0xca: return mp_adv(m, 4);
	case 0xcb: return mp_adv(m, 8);
	case 0xcc: case 0xd0: return mp_adv(m, 1);
	case 0xcd: case 0xd1: return mp_adv(m, 2);
	case 0xce: case 0xd2: return mp_adv(m, 4);
	case 0xcf: case 0xd3: return mp_adv(m, 8);
	case 0xd4: return mp_adv(m, 2);
	case 0xd5: return mp_adv(m, 3);
	case 0xd6: return mp_adv(m, 5);
	case 0xd7: return mp_adv(m, 9);
	case 0xd8: return mp_adv(m, 17);
	case 0xdc: case 0xdd: /* array 16/32 */
	case 0xde: case 0xdf: /* map 16/32 */
		w = c == 0xdc || c == 0xde ? 2 : 4;
		if ((size_t)(m->end - m->p) < w)
			return -1;
		m->p += w;
		return mp_skipn(m, be_n(m->p - w, w) * (c >= 0xde ? 2 : 1),
				depth + 1);
	}
	return -1;
}

/* an unsigned integer (a positive fixint or uint 8..64) */
static int mp_uint(struct mp *m, uint64_t *v)
{
	uint8_t c;
	unsigned w;

	if (m->p >= m->end)
		return -1;
	c = *m->p;
	if (c <= 0x7f) {
		*v = c;
		m->p++;
		return 0;
	}
	if (c < 0xcc || c > 0xcf)
		return mp_skip(m, 0) ? -1 : 1; /* not one: skipped */
	w = 1u << (c - 0xcc);
	if ((size_t)(m->end - m->p) < 1 + w)
		return -1;
	*v = be_n(m->p + 1, w);
	m->p += 1 + w;
	return 0;
}

static bool str_is(const char *s, uint32_t n, const char *lit)
{
	return strlen(lit) == n && !memcmp(s, lit, n);
}

struct pframe {
	const char *t, *k, *body, *code, *user, *status;
	uint32_t tn, kn, bodyn, coden, usern, statusn;
	uint64_t seq, rid;
	bool ok, has_rid;
};

/* The top-level fields a parley frame may carry that the bench reads. */
static int pframe_walk(const uint8_t *d, size_t len, struct pframe *f)
{
	struct mp m = { d, d + len };
	uint64_t n;

	memset(f, 0, sizeof(*f));
	if (!len)
		return -1;
	if ((*d & 0xf0) == 0x80) {
		n = *d & 0x0f;
		m.p++;
	} else if (*d == 0xde && len >= 3) {
		n = be_n(d + 1, 2);
		m.p += 3;
	} else if (*d == 0xdf && len >= 5) {
		n = be_n(d + 1, 4);
		m.p += 5;
	} else {
		return -1;
	}
	while (n--) {
		const char *key;
		uint32_t kn;

		if (mp_str(&m, &key, &kn))
			return -1;
		if (kn == 1 && key[0] == 't') {
			if (mp_str(&m, &f->t, &f->tn))
				return -1;
		} else if (kn == 1 && key[0] == 'k') {
			if (mp_str(&m, &f->k, &f->kn))
				return -1;
		} else if (str_is(key, kn, "body")) {
			if (mp_str(&m, &f->body, &f->bodyn))
				return -1;
		} else if (str_is(key, kn, "code")) {
			if (mp_str(&m, &f->code, &f->coden))
				return -1;
		} else if (str_is(key, kn, "user")) {
			if (mp_str(&m, &f->user, &f->usern))
				return -1;
		} else if (str_is(key, kn, "status")) {
			if (mp_str(&m, &f->status, &f->statusn))
				return -1;
		} else if (str_is(key, kn, "seq")) {
			if (mp_uint(&m, &f->seq) < 0)
				return -1;
		} else if (str_is(key, kn, "rid")) {
			int rc = mp_uint(&m, &f->rid);

			if (rc < 0)
				return -1;
			f->has_rid = rc == 0;
		} else if (str_is(key, kn, "ok")) {
			if (m.p >= m.end)
				return -1;
			f->ok = *m.p == 0xc3;
			m.p++;
		} else if (mp_skip(&m, 0)) {
			return -1;
		}
	}
	return 0;
}

static void set_dead(bconn *b)
{
	b->state = BS_DEAD;
}

static void become_ready(bconn *b)
{
	b->state = BS_READY;
	if (hooks->ready)
		hooks->ready(b);
}

static void parley_frame(bconn *b, const uint8_t *d, size_t len)
{
	struct pframe f;

	if (pframe_walk(d, len, &f) || !f.t) {
		hooks->error(b, "undecodable frame", 17);
		return;
	}
	if (str_is(f.t, f.tn, "ev")) {
		btag t;

		if (b->state == BS_READY && f.k && str_is(f.k, f.kn, "msg") &&
		    f.body && !tag_parse(f.body, f.bodyn, &t))
			hooks->deliver(b, &t, f.seq);
	} else if (str_is(f.t, f.tn, "res")) {
		if (b->state == BS_SETUP && f.has_rid && f.rid == HELLO_RID) {
			if (f.ok) {
				become_ready(b);
			} else {
				hooks->error(b, f.code ? f.code : "hello",
					     f.code ? f.coden : 5);
				set_dead(b);
			}
		} else if (f.has_rid && hooks->resframe) {
			hooks->resframe(b, f.rid, f.ok, d, len);
		} else if (f.has_rid && hooks->res) {
			hooks->res(b, f.rid, f.ok, 0);
		}
	} else if (str_is(f.t, f.tn, "presence")) {
		if (b->state == BS_READY && hooks->presence)
			hooks->presence(b, f.user ? f.user : "", f.user ? f.usern : 0,
					f.status ? f.status : "",
					f.status ? f.statusn : 0);
	} else if (str_is(f.t, f.tn, "err")) {
		hooks->error(b, f.code ? f.code : "err", f.code ? f.coden : 3);
	}
	/* member, typing, read, goaway...: not the bench's */
}

static int parley_hello(bconn *b)
{
	char user[96], *tok;
	proto_out o;
	int rc;

	user_name(b->id, user, sizeof(user));
	if (!(tok = mint(user)))
		return -1;
	proto_out_init(&o, 0, 512);
	proto_enc_hello(&o, HELLO_RID, tok, NULL, NULL, 0);
	rc = pc_queue(b->pc, 2, o.data, o.len) || pc_flush(b->pc) ? -1 : 0;
	proto_out_free(&o);
	free(tok);
	return rc;
}

/* ---- NATS ---------------------------------------------------------------------- */

static void nats_setup(bconn *b)
{
	char cmd[256];
	int n = snprintf(cmd, sizeof(cmd),
			 "CONNECT {\"verbose\":false,\"pedantic\":false,"
			 "\"tls_required\":false,\"name\":\"parley-bench\","
			 "\"lang\":\"c\",\"version\":\"1\",\"protocol\":1}\r\n"
			 "%s%s%sPING\r\n",
			 b->sub ? "SUB " : "", b->sub ? bo.subject : "",
			 b->sub ? " 1\r\n" : "");

	b->phase = 1;
	if (bconn_send(b, cmd, (size_t)n))
		set_dead(b);
}

static bool line_is(const char *l, size_t n, const char *op)
{
	size_t k = strlen(op);

	return n >= k && !strncasecmp(l, op, k);
}

/* Whole NATS ops in p[0..len); the bytes used. */
static size_t nats_parse(bconn *b, const char *p, size_t len)
{
	size_t pos = 0;

	while (pos < len && b->state != BS_DEAD) {
		const char *l = p + pos;
		const char *nl = memchr(l, '\n', len - pos);
		size_t ln, used;

		if (!nl)
			break;
		used = (size_t)(nl + 1 - l);
		ln = used - 1;
		if (ln && l[ln - 1] == '\r')
			ln--;
		if (line_is(l, ln, "MSG ")) {
			const char *sp = l + ln;
			size_t size;
			btag t;

			while (sp > l && sp[-1] != ' ')
				sp--;
			size = strtoul(sp, NULL, 10);
			if (len - pos - used < size + 2)
				break; /* the payload is still coming */
			if (b->state == BS_READY && !tag_parse(nl + 1, size, &t))
				hooks->deliver(b, &t, 0);
			used += size + 2;
		} else if (line_is(l, ln, "PING")) {
			if (bconn_send(b, "PONG\r\n", 6))
				set_dead(b);
		} else if (line_is(l, ln, "PONG")) {
			if (b->state == BS_SETUP && b->phase == 1)
				become_ready(b);
		} else if (line_is(l, ln, "INFO")) {
			if (b->state == BS_SETUP && b->phase == 0)
				nats_setup(b);
		} else if (line_is(l, ln, "-ERR")) {
			hooks->error(b, l, ln);
		}
		pos += used;
	}
	return pos;
}

/* ---- Redis ------------------------------------------------------------------------ */

struct relem {
	const char *s;
	size_t n;
	long long i;
};

/* One RESP line at p: its end ("\r\n" at *eol), or NULL if incomplete. */
static const char *resp_line(const char *p, const char *end)
{
	const char *cr = memchr(p, '\r', (size_t)(end - p));

	return cr && cr + 1 < end ? cr : NULL;
}

/* Whole RESP replies in p[0..len); the bytes used. */
static size_t redis_parse(bconn *b, const char *p, size_t len)
{
	const char *end = p + len, *at = p;

	while (at < end && b->state != BS_DEAD) {
		const char *q = at, *eol = resp_line(q, end);
		struct relem el[4];
		long long n;

		if (!eol)
			break;
		switch (*q) {
		case ':':
			if (hooks->res)
				hooks->res(b, 0, true, strtoull(q + 1, NULL, 10));
			at = eol + 2;
			continue;
		case '+':
			at = eol + 2;
			continue;
		case '$': {
			/* a bulk string reply (XADD: the entry's id) */
			long long bl = strtoll(q + 1, NULL, 10);

			if (bl >= 0 && end - (eol + 2) < bl + 2)
				return (size_t)(at - p);
			at = bl < 0 ? eol + 2 : eol + 2 + bl + 2;
			if (hooks->res)
				hooks->res(b, 0, true, 0);
			continue;
		}
		case '-':
			hooks->error(b, q, (size_t)(eol - q));
			at = eol + 2;
			continue;
		case '*':
			break;
		default:
			hooks->error(b, "bad RESP", 8);
			set_dead(b);
			return len;
		}
		n = strtoll(q + 1, NULL, 10);
		q = eol + 2;
		for (long long k = 0; k < n; k++) {
			struct relem e = { 0 };

			if (q >= end || !(eol = resp_line(q, end)))
				return (size_t)(at - p);
			if (*q == '$') {
				long long bl = strtoll(q + 1, NULL, 10);

				if (bl < 0 || end - (eol + 2) < bl + 2)
					return (size_t)(at - p);
				e.s = eol + 2;
				e.n = (size_t)bl;
				q = eol + 2 + bl + 2;
			} else {
				e.i = strtoll(q + 1, NULL, 10);
				q = eol + 2;
			}
			if (k < 4)
				el[k] = e;
		}
		if (n >= 3 && el[0].s && el[0].n == 7 &&
		    !memcmp(el[0].s, "message", 7)) {
			btag t;

			if (b->state == BS_READY && el[2].s &&
			    !tag_parse(el[2].s, el[2].n, &t))
				hooks->deliver(b, &t, 0);
		} else if (n >= 3 && el[0].s && el[0].n == 9 &&
			   !memcmp(el[0].s, "subscribe", 9)) {
			if (b->state == BS_SETUP)
				become_ready(b);
		}
		at = q;
	}
	return (size_t)(at - p);
}

/* ---- the stream buffer (NATS, Redis) --------------------------------------------- */

static void stream_feed(bconn *b, const char *d, size_t len)
{
	size_t used;

	if (!b->acclen) {
		/* the common case: whole ops, parsed where they lie */
		used = b->srv == SRV_NATS ? nats_parse(b, d, len) :
					    redis_parse(b, d, len);
		d += used;
		len -= used;
		if (!len)
			return;
		if (grow(&b->acc, &b->acccap, len)) {
			set_dead(b);
			return;
		}
		memcpy(b->acc, d, len);
		b->acclen = (uint32_t)len;
		return;
	}
	if (grow(&b->acc, &b->acccap, (size_t)b->acclen + len)) {
		set_dead(b);
		return;
	}
	memcpy(b->acc + b->acclen, d, len);
	b->acclen += (uint32_t)len;
	used = b->srv == SRV_NATS ? nats_parse(b, b->acc, b->acclen) :
				    redis_parse(b, b->acc, b->acclen);
	memmove(b->acc, b->acc + used, b->acclen - used);
	b->acclen -= (uint32_t)used;
	if (!b->acclen && b->acccap > ACC_KEEP) {
		free(b->acc);
		b->acc = NULL;
		b->acccap = 0;
	}
}

/* ---- the state machine -------------------------------------------------------------- */

int bconn_start(bconn *b, uint32_t id, bool sub)
{
	char src[32];

	memset(b, 0, sizeof(*b));
	b->srv = (uint8_t)bo.srv;
	b->id = id;
	b->sub = sub;
	b->fd = -1;
	src_ip(id, src);
	if (bo.srv == SRV_REDIS) {
		b->fd = tcp_start(src);
	} else {
		b->pc = pc_start(bo.host, bo_port(id), src,
				 bo.srv == SRV_PARLEY ? "parley.v1" : NULL);
		if (b->pc) {
			b->fd = pc_fd(b->pc);
			if (bo.srv == SRV_NATS)
				pc_take_text(b->pc);
		}
	}
	if (b->fd < 0) {
		set_dead(b);
		return -1;
	}
	b->state = BS_CONNECTING;
	return 0;
}

void bconn_adopt(bconn *b, pc_conn *pc, uint32_t id)
{
	memset(b, 0, sizeof(*b));
	b->srv = SRV_PARLEY;
	b->pc = pc;
	b->fd = pc_fd(pc);
	b->id = id;
	b->state = BS_READY;
	pc_set_nonblocking(pc);
}

static int redis_connected(bconn *b)
{
	int err = 0;
	socklen_t el = sizeof(err);
	char cmd[128];
	int n;

	if (getsockopt(b->fd, SOL_SOCKET, SO_ERROR, &err, &el) || err)
		return -1;
	b->state = BS_SETUP;
	if (!b->sub) {
		become_ready(b);
		return raw_flush(b);
	}
	n = bo.own_subject ?
		    snprintf(cmd, sizeof(cmd), "SUBSCRIBE %s.%u\r\n", bo.subject, b->id) :
		    snprintf(cmd, sizeof(cmd), "SUBSCRIBE %s\r\n", bo.subject);
	return bconn_send(b, cmd, (size_t)n);
}

int bconn_io(bconn *b, uint32_t ev)
{
	if (b->state == BS_DEAD)
		return -1;
	if (b->state == BS_CONNECTING) {
		if (b->srv == SRV_REDIS) {
			if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
				return 0;
			if (redis_connected(b))
				goto dead;
		} else {
			int rc = pc_start_step(b->pc);

			if (rc < 0)
				goto dead;
			if (rc == 0)
				return 0;
			b->state = BS_SETUP;
			if (b->srv == SRV_PARLEY && parley_hello(b))
				goto dead;
			ev |= EPOLLIN; /* frames may have come with the upgrade */
		}
	}
	if (b->srv == SRV_REDIS) {
		if ((ev & EPOLLOUT) && raw_flush(b))
			goto dead;
		if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
			char buf[65536];

			for (;;) {
				ssize_t r = recv(b->fd, buf, sizeof(buf), MSG_DONTWAIT);

				if (r > 0) {
					stream_feed(b, buf, (size_t)r);
					if (b->state == BS_DEAD)
						goto dead;
					if ((size_t)r < sizeof(buf))
						break;
					continue;
				}
				if (r < 0 && errno == EINTR)
					continue;
				if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
					break;
				goto dead;
			}
		}
		return 0;
	}
	if ((ev & EPOLLOUT) && pc_flush(b->pc))
		goto dead;
	if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
		int gone = pc_on_readable(b->pc), rc;
		const uint8_t *d;
		size_t len;

		while ((rc = pc_next(b->pc, &d, &len)) == 1) {
			if (b->srv == SRV_PARLEY)
				parley_frame(b, d, len);
			else
				stream_feed(b, (const char *)d, len);
			if (b->state == BS_DEAD)
				goto dead;
		}
		if (gone || rc < 0)
			goto dead;
	}
	return 0;
dead:
	set_dead(b);
	return -1;
}

void bconn_close(bconn *b)
{
	if (b->pc)
		pc_close(b->pc);
	else if (b->fd >= 0)
		close(b->fd);
	free(b->acc);
	free(b->out);
	b->pc = NULL;
	b->acc = b->out = NULL;
	b->fd = -1;
	b->state = BS_DEAD;
}

int bconn_wait_ready(bconn *b, int timeout_ms)
{
	uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000u;

	while (b->state != BS_READY) {
		struct pollfd pf = { .fd = b->fd, .events = (short)bconn_events(b) };
		int n;

		if (b->state == BS_DEAD || now_ns() > end)
			return -1;
		n = poll(&pf, 1, 100);
		if (n < 0 && errno != EINTR)
			return -1;
		/* POLLIN/POLLOUT/POLLERR/POLLHUP have EPOLL's values */
		if (n > 0 && bconn_io(b, (uint32_t)pf.revents))
			return -1;
	}
	return 0;
}

/* ---- what the bench sends ---------------------------------------------------------- */

size_t enc_parley_send(uint8_t *out, size_t cap, const char *ch, uint64_t rid,
		       const char *body, size_t blen)
{
	static proto_out o; /* one per process, reused: no malloc per send */
	static bool init;
	char cmid[24];

	if (!init) {
		proto_out_init(&o, 0, 1024);
		init = true;
	}
	proto_out_reset(&o);
	snprintf(cmid, sizeof(cmid), "%llx", (unsigned long long)rid);
	proto_enc_send(&o, rid, ch, body, blen, cmid, 0, NULL, 0);
	if (o.len > cap)
		return 0;
	memcpy(out, o.data, o.len);
	return o.len;
}

const uint8_t enc_hb[7] = { 0x81, 0xa2, 'o', 'p', 0xa2, 'h', 'b' };

static size_t enc_done(proto_out *o, uint8_t *out, size_t cap)
{
	size_t n = o->len <= cap ? o->len : 0;

	if (n)
		memcpy(out, o->data, n);
	proto_out_free(o);
	return n;
}

size_t enc_parley_watch(uint8_t *out, size_t cap, uint64_t rid,
			const char *user)
{
	proto_out o;

	proto_out_init(&o, 0, 256);
	proto_enc_req(&o, "presence.watch", rid, 1);
	proto_pk_cstr(&o.pk, "users");
	msgpack_pack_array(&o.pk, user ? 1 : 0);
	if (user)
		proto_pk_cstr(&o.pk, user);
	return enc_done(&o, out, cap);
}

size_t enc_parley_set(uint8_t *out, size_t cap, uint64_t rid,
		      const char *status)
{
	proto_out o;

	proto_out_init(&o, 0, 128);
	proto_enc_req(&o, "presence.set", rid, 1);
	proto_pk_cstr(&o.pk, "status");
	proto_pk_cstr(&o.pk, status);
	return enc_done(&o, out, cap);
}

size_t enc_nats_pub(uint8_t *out, size_t cap, const char *body, size_t blen)
{
	int n = snprintf((char *)out, cap, "PUB %s %zu\r\n", bo.subject, blen);

	if (n < 0 || (size_t)n + blen + 2 > cap)
		return 0;
	memcpy(out + n, body, blen);
	memcpy(out + n + blen, "\r\n", 2);
	return (size_t)n + blen + 2;
}

size_t enc_redis_pub(uint8_t *out, size_t cap, const char *body, size_t blen)
{
	int n = snprintf((char *)out, cap, "*3\r\n$7\r\nPUBLISH\r\n$%zu\r\n%s\r\n$%zu\r\n",
			 strlen(bo.subject), bo.subject, blen);

	if (n < 0 || (size_t)n + blen + 2 > cap)
		return 0;
	memcpy(out + n, body, blen);
	memcpy(out + n + blen, "\r\n", 2);
	return (size_t)n + blen + 2;
}

size_t enc_redis_xadd(uint8_t *out, size_t cap, uint32_t id, const char *body,
		      size_t blen)
{
	char key[96];
	int kl = snprintf(key, sizeof(key), "%s.%u", bo.subject, id);
	int n = snprintf((char *)out, cap,
			 "*5\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n"
			 "$1\r\nf\r\n$%zu\r\n", kl, key, blen);

	if (n < 0 || (size_t)n + blen + 2 > cap)
		return 0;
	memcpy(out + n, body, blen);
	memcpy(out + n + blen, "\r\n", 2);
	return (size_t)n + blen + 2;
}

/* ---- text for search ------------------------------------------------------------ */

uint64_t rnd(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

static uint32_t fnv(const char *w)
{
	uint32_t h = 2166136261u;

	while (*w)
		h = (h ^ (uint8_t)*w++) * 16777619u;
	return h;
}

/* shorter first; among equal lengths an order that has nothing to do with
 * the alphabet (a hash), so that frequent words start with any letter */
static int by_len(const void *a, const void *b)
{
	const char *x = *(char *const *)a, *y = *(char *const *)b;
	size_t xl = strlen(x), yl = strlen(y);
	uint32_t hx = fnv(x), hy = fnv(y);

	if (xl != yl)
		return xl < yl ? -1 : 1;
	if (hx != hy)
		return hx < hy ? -1 : 1;
	return strcmp(x, y);
}

static int by_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Words of one to three syllables (onset, vowel, coda): pronounceable,
 * made up, in no dictionary, so that nothing else in a message matches. */
int vocab_init(vocab *v, uint32_t n)
{
	static const char *const on[] = {
		"b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p",
		"r", "s", "t", "v", "w", "z", "br", "ch", "cl", "cr", "dr",
		"fl", "gr", "pl", "pr", "sh", "sl", "st", "th", "tr", "",
	};
	static const char *const vw[] = { "a", "e", "i", "o", "u", "ai",
					   "ea", "ou", "ie", "oo" };
	static const char *const co[] = { "", "", "", "n", "r", "s", "t",
					   "l", "m", "nd", "st", "ck" };
	uint32_t cap = n * 2 + 64, got = 0, u = 0;
	char **cand = calloc(cap, sizeof(*cand));
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	double sum = 0;

	memset(v, 0, sizeof(*v));
	if (!cand || n < 2)
		goto fail;
	/* candidates, more than needed: duplicates go */
	while (got < cap) {
		char w[64] = "";
		unsigned syl = 1 + (unsigned)(rnd(&seed) % 3);

		for (unsigned k = 0; k < syl; k++) {
			strcat(w, on[rnd(&seed) % (sizeof(on) / sizeof(*on))]);
			strcat(w, vw[rnd(&seed) % (sizeof(vw) / sizeof(*vw))]);
			if (k + 1 == syl || rnd(&seed) % 3 == 0)
				strcat(w, co[rnd(&seed) % (sizeof(co) / sizeof(*co))]);
		}
		if (strlen(w) < 2)
			continue;
		if (!(cand[got++] = strdup(w)))
			goto fail;
	}
	qsort(cand, cap, sizeof(*cand), by_str);
	for (uint32_t i = 0; i < cap; i++) {
		if (u && !strcmp(cand[u - 1], cand[i])) {
			free(cand[i]);
			continue;
		}
		cand[u++] = cand[i];
	}
	if (u < n) {
		for (uint32_t i = 0; i < u; i++)
			free(cand[i]);
		goto fail;
	}
	/* n of them at random (a fixed shuffle), then shortest first: the
	 * frequent words are short, as in a language */
	for (uint32_t i = u - 1; i > 0; i--) {
		uint32_t j = (uint32_t)(rnd(&seed) % (i + 1));
		char *t = cand[i];

		cand[i] = cand[j];
		cand[j] = t;
	}
	for (uint32_t i = n; i < u; i++)
		free(cand[i]);
	qsort(cand, n, sizeof(*cand), by_len);
	v->n = n;
	v->w = cand;
	v->cdf = malloc(n * sizeof(double));
	if (!v->cdf)
		return -1;
	for (uint32_t r = 0; r < n; r++)
		v->cdf[r] = (sum += 1.0 / (double)(r + 1));
	for (uint32_t r = 0; r < n; r++)
		v->cdf[r] /= sum;
	return 0;
fail:
	free(cand);
	return -1;
}

uint32_t vocab_zipf(const vocab *v, uint64_t *s)
{
	double x = (double)(rnd(s) >> 11) / 9007199254740992.0;
	uint32_t lo = 0, hi = v->n - 1;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (v->cdf[mid] < x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

size_t vocab_text(const vocab *v, uint64_t *s, char *out, size_t cap)
{
	unsigned words = 4 + (unsigned)(rnd(s) % 21);
	size_t len = 0;

	out[0] = 0;
	for (unsigned k = 0; k < words; k++) {
		const char *w = v->w[vocab_zipf(v, s)];
		size_t wl = strlen(w);

		if (len + wl + 2 > cap)
			break;
		if (len)
			out[len++] = ' ';
		memcpy(out + len, w, wl);
		len += wl;
		out[len] = 0;
	}
	return len;
}
