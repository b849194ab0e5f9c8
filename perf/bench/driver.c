/*
 * The bench's connections to the three servers, and the small things every
 * scenario needs: the clock, the histogram, /proc, the body tag.
 *
 *   parley  WebSocket /ws, subprotocol parley.v1, msgpack frames (proto/)
 *   NATS    nats-server's WebSocket listener; the NATS text protocol runs
 *           inside the WebSocket messages as one byte stream
 *   Redis   plain TCP, RESP
 */
#define _GNU_SOURCE
#include "perf/bench/bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "actors/actors.h"

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double proc_cpu_s(int pid)
{
	char path[64], buf[2048], *p;
	unsigned long ut, st;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (!(f = fopen(path, "r")))
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	/* fields after the command name, which may hold spaces: 3 is state,
	 * 14 and 15 are utime and stime */
	if (!(p = strrchr(buf, ')')))
		return -1;
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
		   &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

uint64_t proc_rss(int pid)
{
	char path[64], line[256];
	uint64_t kb = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if (!(f = fopen(path, "r")))
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %lu kB", &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

/* ---- histogram ---------------------------------------------------------- */

/* Values below HIST_SUB ns are exact; above, bucket (e, m) holds values
 * whose top bit is e and next six bits are m: under 1.6% relative error. */
static unsigned hist_idx(uint64_t v)
{
	unsigned e;

	if (v < HIST_SUB)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v); /* >= 6 */
	return (e - 5) * HIST_SUB + (unsigned)((v >> (e - 6)) & (HIST_SUB - 1));
}

static uint64_t hist_val(unsigned i)
{
	unsigned e, m;

	if (i < HIST_SUB)
		return i;
	e = i / HIST_SUB + 5;
	m = i % HIST_SUB;
	/* the middle of the bucket */
	return ((uint64_t)(HIST_SUB + m) << (e - 6)) + ((1ull << (e - 6)) >> 1);
}

void hist_add(hist *h, uint64_t ns)
{
	unsigned i = hist_idx(ns);

	h->c[i < HIST_N ? i : HIST_N - 1]++;
	h->n++;
	if (ns > h->max)
		h->max = ns;
}

void hist_merge(hist *into, const hist *h)
{
	for (unsigned i = 0; i < HIST_N; i++)
		into->c[i] += h->c[i];
	into->n += h->n;
	if (h->max > into->max)
		into->max = h->max;
}

double hist_pct_ms(const hist *h, double p)
{
	uint64_t want, cum = 0;

	if (!h->n)
		return 0;
	if (p >= 1)
		return (double)h->max / 1e6;
	want = (uint64_t)(p * (double)h->n) + 1;
	if (want > h->n)
		want = h->n;
	for (unsigned i = 0; i < HIST_N; i++) {
		cum += h->c[i];
		if (cum >= want) {
			uint64_t v = hist_val(i);

			return (double)(v < h->max ? v : h->max) / 1e6;
		}
	}
	return (double)h->max / 1e6;
}

/* ---- tags ---------------------------------------------------------------- */

void tag_body(char *out, size_t size, uint64_t sent_ns, uint32_t idx)
{
	char t[TAG_LEN + 1];

	snprintf(t, sizeof(t), "PBT:%016llx%08x", (unsigned long long)sent_ns,
		 idx);
	memcpy(out, t, TAG_LEN);
	memset(out + TAG_LEN, 'x', size - TAG_LEN);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int tag_parse(const char *p, uint64_t *sent_ns, uint32_t *idx)
{
	uint64_t v = 0;

	if (memcmp(p, "PBT:", 4))
		return -1;
	for (int i = 4; i < TAG_LEN; i++) {
		int d = hexval(p[i]);

		if (d < 0)
			return -1;
		v = v << 4 | (uint64_t)d;
		if (i == 19) {
			*sent_ns = v;
			v = 0;
		}
	}
	*idx = (uint32_t)v;
	return 0;
}

/* ---- connections ---------------------------------------------------------- */

const char *src_ip(unsigned i, char *buf)
{
	sprintf(buf, "127.0.0.%u", 2 + i % 253);
	return buf;
}

void user_name(const bopts *o, uint32_t i, char *out, size_t cap)
{
	snprintf(out, cap, "%su%u", o->prefix, i);
}

char *mint(const bopts *o, const char *user)
{
	return auth_mint(o->key, o->keylen, user, o->ws,
			 (int64_t)time(NULL) + 24 * 3600, NULL);
}

static int tcp_connect(const char *host, int port, const char *src,
		       int timeout_ms)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)port) };
	struct sockaddr_in la = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };

	if (fd < 0)
		return -1;
	inet_pton(AF_INET, host, &sa.sin_addr);
	inet_pton(AF_INET, src, &la.sin_addr);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (bind(fd, (struct sockaddr *)&la, sizeof(la)) ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -1;
	}
	return fd;
}

static void acc_add(bconn *b, const void *p, size_t n)
{
	if (b->acclen + n > b->acccap) {
		b->acccap = (b->acclen + n) * 2 + 256;
		b->acc = realloc(b->acc, b->acccap);
	}
	memcpy(b->acc + b->acclen, p, n);
	b->acclen += n;
}

/* Tags in the stream: handle every complete one, keep the tail that may
 * hold the start of the next. NATS: a PING anywhere gets a PONG. */
static void acc_scan(bconn *b, tag_fn fn, void *arg)
{
	size_t pos = 0;
	char *t;

	if (b->srv == SRV_NATS &&
	    memmem(b->acc, b->acclen, "PING\r\n", 6) != NULL)
		pc_send_raw(b->pc, 1, "PONG\r\n", 6);
	while ((t = memmem(b->acc + pos, b->acclen - pos, "PBT:", 4))) {
		size_t at = (size_t)(t - b->acc);
		uint64_t ns;
		uint32_t idx;

		if (at + TAG_LEN > b->acclen)
			break;
		if (!tag_parse(t, &ns, &idx))
			fn(arg, b, ns, idx);
		pos = at + TAG_LEN;
	}
	/* keep at most the last 5 bytes unless a partial tag is pending */
	t = memmem(b->acc + pos, b->acclen - pos, "PBT:", 4);
	if (t)
		pos = (size_t)(t - b->acc);
	else if (b->acclen - pos > 5)
		pos = b->acclen - 5;
	memmove(b->acc, b->acc + pos, b->acclen - pos);
	b->acclen -= pos;
}

/* Blocking read until needle shows up in the stream (setup only). */
static int wait_for(bconn *b, const char *needle, int timeout_ms)
{
	uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000u;

	for (;;) {
		if (b->srv == SRV_NATS) {
			const uint8_t *data;
			size_t len;
			int rc;

			/* what pc already holds (it may have come with the
			 * handshake's response) */
			while ((rc = pc_next(b->pc, &data, &len)) == 1)
				acc_add(b, data, len);
			if (rc < 0)
				return -1;
		}
		if (b->acclen && memmem(b->acc, b->acclen, needle,
					strlen(needle))) {
			b->acclen = 0;
			return 0;
		}
		if (now_ns() > end)
			return -1;
		if (b->srv == SRV_NATS) {
			struct pollfd pf = { .fd = b->fd, .events = POLLIN };

			if (poll(&pf, 1, 100) < 0)
				return -1;
			if ((pf.revents & POLLIN) && pc_on_readable(b->pc) < 0)
				return -1;
		} else {
			char buf[4096];
			ssize_t n = read(b->fd, buf, sizeof(buf));

			if (n <= 0)
				return -1;
			acc_add(b, buf, (size_t)n);
		}
	}
}

int bconn_open_sub(bconn *b, const bopts *o, uint32_t uid, unsigned srcidx,
		   const char *subject)
{
	char src[32], cmd[256];

	memset(b, 0, sizeof(*b));
	b->srv = o->srv;
	b->uid = uid;
	b->fd = -1;
	src_ip(srcidx, src);
	switch (o->srv) {
	case SRV_PARLEY: {
		char user[96], *tok;
		proto_doc res;
		int rc;

		b->pc = pc_connect(o->host, o->port, src, "parley.v1", 30000);
		if (!b->pc)
			return -1;
		user_name(o, uid, user, sizeof(user));
		tok = mint(o, user);
		rc = pc_hello(b->pc, tok, NULL, NULL, 0, &res, 60000);
		free(tok);
		if (rc != 1)
			return -1;
		proto_doc_free(&res);
		b->fd = pc_fd(b->pc);
		return pc_set_nonblocking(b->pc);
	}
	case SRV_NATS:
		b->pc = pc_connect(o->host, o->port, src, NULL, 30000);
		if (!b->pc)
			return -1;
		pc_take_text(b->pc);
		b->fd = pc_fd(b->pc);
		if (wait_for(b, "INFO", 30000))
			return -1;
		snprintf(cmd, sizeof(cmd),
			 "CONNECT {\"verbose\":false,\"pedantic\":false,"
			 "\"name\":\"parley-bench\"}\r\n%s%s%s"
			 "PING\r\n",
			 subject ? "SUB " : "", subject ? subject : "",
			 subject ? " 1\r\n" : "");
		if (pc_send_raw(b->pc, 2, cmd, strlen(cmd)) ||
		    wait_for(b, "PONG", 30000))
			return -1;
		return pc_set_nonblocking(b->pc);
	case SRV_REDIS:
		b->fd = tcp_connect(o->host, o->port, src, 30000);
		if (b->fd < 0)
			return -1;
		if (subject) {
			int n = snprintf(cmd, sizeof(cmd), "SUBSCRIBE %s\r\n",
					 subject);

			if (write(b->fd, cmd, (size_t)n) != n ||
			    wait_for(b, ":1\r\n", 30000))
				return -1;
		} else {
			if (write(b->fd, "PING\r\n", 6) != 6 ||
			    wait_for(b, "+PONG\r\n", 30000))
				return -1;
		}
		return fcntl(b->fd, F_SETFL,
			     fcntl(b->fd, F_GETFL) | O_NONBLOCK) ? -1 : 0;
	}
	return -1;
}

int bconn_on_readable(bconn *b, tag_fn fn, void *arg)
{
	const uint8_t *data;
	size_t len;
	int rc;

	if (b->srv == SRV_REDIS) {
		char buf[65536];

		for (;;) {
			ssize_t n = read(b->fd, buf, sizeof(buf));

			if (n > 0) {
				acc_add(b, buf, (size_t)n);
				acc_scan(b, fn, arg);
				continue;
			}
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				return 0;
			return -1;
		}
	}
	if (pc_on_readable(b->pc) < 0)
		return -1;
	while ((rc = pc_next(b->pc, &data, &len)) == 1) {
		if (b->srv == SRV_NATS) {
			acc_add(b, data, len);
			acc_scan(b, fn, arg);
			continue;
		}
		/* parley: one tag per event frame, inside its body */
		const char *t = memmem(data, len, "PBT:", 4);
		uint64_t ns;
		uint32_t idx;

		if (t && (size_t)(t - (const char *)data) + TAG_LEN <= len &&
		    !tag_parse(t, &ns, &idx))
			fn(arg, b, ns, idx);
	}
	return rc < 0 ? -1 : 0;
}

void bconn_close(bconn *b)
{
	if (b->pc)
		pc_close(b->pc);
	else if (b->fd >= 0)
		close(b->fd);
	free(b->acc);
	memset(b, 0, sizeof(*b));
	b->fd = -1;
}
