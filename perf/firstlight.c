/*
 * firstlight: the first measurements of parleyd (issue 2's closing note),
 * driven through proto/'s client from one epoll-free poll loop. Not the
 * full harness (that is parley-bench): two scenarios, against a running
 * server whose secret file it is given.
 *
 *   firstlight acks   PORT SECRET SENDERS SECONDS
 *       SENDERS users, all members of one public channel (so each ack
 *       also fans out to every sender), each with one send in flight;
 *       prints acks/s and ack latency p50/p99 (send written -> response
 *       read).
 *   firstlight acks-own PORT SECRET SENDERS SECONDS
 *       the same, but each sender in a channel of its own: the channel
 *       actors spread over the shards and nothing fans out.
 *   firstlight fanout PORT SECRET MEMBERS MESSAGES
 *       MEMBERS connected members of one channel (invited before they
 *       connect, so hello subscribes them) and a publisher; publishes one
 *       200-byte message at a time and waits until every member has it;
 *       prints publish-to-last-recipient p50/p99/max.
 *
 * Connections use source addresses 127.0.0.2..127.0.0.250. The process
 * raises its open-file limit to the hard limit.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <time.h>

#include "actors/actors.h"
#include "proto/client.h"

static uint8_t key[512];
static size_t keylen;
static int port;

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct(uint64_t *v, size_t n, double p)
{
	if (!n)
		return 0;
	return (double)v[(size_t)(p * (double)(n - 1))] / 1000.0;
}

static pc_conn *connect_as(const char *user, int i, proto_doc *hello)
{
	char src[32];
	char *tok = auth_mint(key, keylen, user, "bench",
			      (int64_t)time(NULL) + 3600, NULL, NULL);
	pc_conn *c;
	proto_doc res;

	snprintf(src, sizeof(src), "127.0.0.%d", 2 + i % 249);
	c = pc_connect("127.0.0.1", port, src, "parley.v1", 10000);
	if (!c || pc_hello(c, tok, NULL, NULL, 0, &res, 30000) != 1) {
		fprintf(stderr, "firstlight: connect/hello %s failed\n", user);
		exit(1);
	}
	free(tok);
	if (hello)
		*hello = res;
	else
		proto_doc_free(&res);
	return c;
}

static uint64_t rid = 1;

static void call(pc_conn *c, proto_out *o, proto_doc *res)
{
	if (pc_request(c, o, rid - 1, res, 30000) != 1) {
		fprintf(stderr, "firstlight: request failed\n");
		exit(1);
	}
	bool ok = false;
	proto_get_bool(&res->root, "ok", &ok);
	if (!ok) {
		fprintf(stderr, "firstlight: request refused\n");
		exit(1);
	}
}

/* Names are unique in a workspace: each run and channel its own. */
static void make_channel(pc_conn *c, char *ch)
{
	static unsigned made;
	proto_out o;
	proto_doc res;
	const msgpack_object_map *m;
	char name[64];

	snprintf(name, sizeof(name), "bench-%ld-%ld-%u", (long)getpid(),
		 (long)time(NULL), made++);
	proto_out_init(&o, 0, 256);
	proto_enc_req(&o, "ch.create", rid++, 2);
	proto_pk_cstr(&o.pk, "name");
	proto_pk_cstr(&o.pk, name);
	proto_pk_cstr(&o.pk, "kind");
	proto_pk_cstr(&o.pk, "public");
	call(c, &o, &res);
	proto_get_map(&res.root, "ch", &m);
	msgpack_object mo = { .type = MSGPACK_OBJECT_MAP, .via.map = *m };
	const char *s;
	uint32_t n;
	proto_get_str(&mo, "id", &s, &n);
	memcpy(ch, s, n);
	ch[n] = 0;
	proto_doc_free(&res);
	proto_out_free(&o);
}

static void invite(pc_conn *c, const char *ch, int from, int to)
{
	proto_out o;
	proto_doc res;
	char u[32];

	proto_out_init(&o, 0, 16384);
	proto_enc_req(&o, "ch.invite", rid++, 2);
	proto_pk_cstr(&o.pk, "ch");
	proto_pk_cstr(&o.pk, ch);
	proto_pk_cstr(&o.pk, "users");
	msgpack_pack_array(&o.pk, (uint32_t)(to - from));
	for (int i = from; i < to; i++) {
		snprintf(u, sizeof(u), "u%d", i);
		proto_pk_cstr(&o.pk, u);
	}
	call(c, &o, &res);
	proto_doc_free(&res);
	proto_out_free(&o);
}

static void send_msg(pc_conn *c, const char *ch, uint64_t r, int n)
{
	char body[201], cmid[32];
	proto_out o;

	memset(body, 'x', 200);
	body[200] = 0;
	snprintf(cmid, sizeof(cmid), "m%d", n);
	proto_out_init(&o, 0, 512);
	proto_enc_send(&o, r, ch, body, 200, cmid, 0, NULL, 0);
	pc_queue(c, 2, o.data, o.len);
	pc_flush(c);
	proto_out_free(&o);
}

static int run_acks(int senders, int seconds, bool own)
{
	pc_conn **c = calloc((size_t)senders, sizeof(*c));
	uint64_t *sent = calloc((size_t)senders, sizeof(*sent));
	struct pollfd *pf = calloc((size_t)senders, sizeof(*pf));
	size_t cap = 1 << 20, n = 0;
	uint64_t *lat = malloc(cap * sizeof(*lat));
	char ch[65], u[32];
	int next = 0;

	char (*chs)[65] = calloc((size_t)senders, 65);

	c[0] = connect_as("u0", 0, NULL);
	make_channel(c[0], ch);
	if (senders > 1 && !own)
		invite(c[0], ch, 1, senders);
	for (int i = 1; i < senders; i++) {
		snprintf(u, sizeof(u), "u%d", i);
		c[i] = connect_as(u, i, NULL);
	}
	for (int i = 0; i < senders; i++) {
		if (own && i)
			make_channel(c[i], chs[i]);
		else
			strcpy(chs[i], ch);
	}
	for (int i = 0; i < senders; i++) {
		pc_set_nonblocking(c[i]);
		pf[i].fd = pc_fd(c[i]);
		pf[i].events = POLLIN;
		sent[i] = now_us();
		send_msg(c[i], chs[i], 1, next++);
	}
	uint64_t t0 = now_us(), end = t0 + (uint64_t)seconds * 1000000,
		 warm = t0 + 1000000, acks = 0;
	while (now_us() < end) {
		if (poll(pf, (nfds_t)senders, 100) <= 0)
			continue;
		for (int i = 0; i < senders; i++) {
			const uint8_t *d;
			size_t len;

			if (!(pf[i].revents & POLLIN))
				continue;
			pc_on_readable(c[i]);
			while (pc_next(c[i], &d, &len) == 1) {
				/* a response ("res") starts with the map
				 * header then "t":"res"; events are "ev" */
				if (len > 6 && !memcmp(d + 4, "res", 3)) {
					uint64_t t = now_us();

					if (t > warm) {
						acks++;
						if (n < cap)
							lat[n++] = t - sent[i];
					}
					sent[i] = t;
					send_msg(c[i], chs[i], 1, next++);
				}
			}
			pc_flush(c[i]);
		}
	}
	double secs = (double)(now_us() - warm) / 1e6;
	qsort(lat, n, sizeof(*lat), cmp_u64);
	printf("acks channels=%s senders=%d acks_per_s=%.0f ack_ms_p50=%.3f p99=%.3f max=%.3f\n",
	       own ? "own" : "one", senders, (double)acks / secs, pct(lat, n, 0.5),
	       pct(lat, n, 0.99), pct(lat, n, 1.0));
	return 0;
}

static int run_fanout(int members, int messages)
{
	pc_conn *pub, **c = calloc((size_t)members, sizeof(*c));
	struct pollfd *pf = calloc((size_t)members, sizeof(*pf));
	uint64_t *p2l = calloc((size_t)messages, sizeof(*p2l));
	char ch[65], u[32];

	pub = connect_as("pub", 0, NULL);
	make_channel(pub, ch);
	for (int i = 0; i < members; i += 1000)
		invite(pub, ch, i, i + 1000 < members ? i + 1000 : members);
	for (int i = 0; i < members; i++) {
		snprintf(u, sizeof(u), "u%d", i);
		c[i] = connect_as(u, i + 1, NULL);
		pc_set_nonblocking(c[i]);
		pf[i].fd = pc_fd(c[i]);
		pf[i].events = POLLIN;
	}
	pc_set_nonblocking(pub);
	/* let the subscriptions settle */
	poll(NULL, 0, 1000);
	for (int i = 0; i < members; i++) {
		const uint8_t *d;
		size_t len;

		pc_on_readable(c[i]);
		while (pc_next(c[i], &d, &len) == 1)
			;
	}
	for (int m = 0; m < messages; m++) {
		int got = 0;
		uint64_t t0 = now_us(), last = t0;

		send_msg(pub, ch, 0, m);
		while (got < members && now_us() - t0 < 10000000) {
			if (poll(pf, (nfds_t)members, 100) <= 0)
				continue;
			for (int i = 0; i < members; i++) {
				const uint8_t *d;
				size_t len;

				if (!(pf[i].revents & POLLIN))
					continue;
				pc_on_readable(c[i]);
				while (pc_next(c[i], &d, &len) == 1) {
					if (len > 6 && !memcmp(d + 4, "ev", 2)) {
						got++;
						last = now_us();
					}
				}
			}
		}
		if (got < members) {
			fprintf(stderr, "firstlight: only %d of %d got message %d\n",
				got, members, m);
			return 1;
		}
		p2l[m] = last - t0;
		/* drain the publisher's own event */
		pc_on_readable(pub);
		const uint8_t *d;
		size_t len;
		while (pc_next(pub, &d, &len) == 1)
			;
	}
	qsort(p2l, (size_t)messages, sizeof(*p2l), cmp_u64);
	printf("fanout members=%d messages=%d publish_to_last_ms_p50=%.2f p99=%.2f max=%.2f\n",
	       members, messages, pct(p2l, (size_t)messages, 0.5),
	       pct(p2l, (size_t)messages, 0.99),
	       pct(p2l, (size_t)messages, 1.0));
	return 0;
}

int main(int argc, char **argv)
{
	struct rlimit rl;

	if (argc != 6) {
		fprintf(stderr, "usage: firstlight acks|acks-own|fanout PORT SECRET N M\n");
		return 2;
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	port = atoi(argv[2]);
	if (auth_load_secret(argv[3], key, sizeof(key), &keylen, false)) {
		fprintf(stderr, "firstlight: cannot read %s\n", argv[3]);
		return 1;
	}
	if (!strcmp(argv[1], "acks"))
		return run_acks(atoi(argv[4]), atoi(argv[5]), false);
	if (!strcmp(argv[1], "acks-own"))
		return run_acks(atoi(argv[4]), atoi(argv[5]), true);
	return run_fanout(atoi(argv[4]), atoi(argv[5]));
}
