/*
 * tests/cluster/test_bus: cluster/bus against a real 3-node nats-server
 * cluster with JetStream (scripts/nats-cluster.sh), fresh for every test,
 * in a temp dir, on ports derived from the pid. One ctest per case: the
 * case name is the first argument.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster/bus.h"

#ifndef NATS_CLUSTER_SH
#error NATS_CLUSTER_SH must name scripts/nats-cluster.sh
#endif

#define WAIT_MS 60000 /* generous: a loaded 2-core box, ASan */

typedef struct env {
	char dir[256];
	int base;
	char urls[256];
} env;

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int cluster(env *e, const char *cmd, char *out, size_t cap)
{
	char line[1024];
	snprintf(line, sizeof line, "%s %s '%s' %d", NATS_CLUSTER_SH, cmd, e->dir,
	         e->base);
	FILE *p = popen(line, "r");
	if (!p)
		return -1;
	if (out && cap) {
		out[0] = '\0';
		if (fgets(out, (int)cap, p))
			out[strcspn(out, "\n")] = '\0';
	}
	char sink[256];
	while (fgets(sink, sizeof sink, p))
		;
	return pclose(p);
}

static int setup(void **state)
{
	env *e = calloc(1, sizeof *e);
	snprintf(e->dir, sizeof e->dir, "/tmp/parley-bus-XXXXXX");
	if (!mkdtemp(e->dir)) {
		free(e);
		return -1;
	}
	/* below Linux's ephemeral ports (32768-60999), where a busy machine's
	 * own connections would collide; another base if one is taken */
	for (int try = 0;; try++) {
		e->base = 10000 + (int)((getpid() + try * 211) % 700) * 30;
		if (cluster(e, "start", e->urls, sizeof e->urls) == 0 && e->urls[0])
			break;
		cluster(e, "stop", NULL, 0);
		if (try == 4) {
			fprintf(stderr, "nats cluster did not start in %s\n", e->dir);
			free(e);
			return -1;
		}
		char cmd[300];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'/n*", e->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not clean %s\n", e->dir);
	}
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	env *e = *state;
	cluster(e, "stop", NULL, 0);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", e->dir);
	free(e);
	return 0;
}

static bus *open_bus_with(env *e, const char *host, int64_t lease_ms,
                          int attempt_ms)
{
	bus_cfg cfg = {.urls = e->urls, .host_id = host, .replicas = 3,
	               .lease_ms = lease_ms, .attempt_ms = attempt_ms,
	               .deadline_ms = 10000};
	char err[256] = "";
	bus *b = NULL;
	bus_status st = bus_open(&b, &cfg, err, sizeof err);
	if (st != BUS_OK)
		fprintf(stderr, "bus_open %s: %s %s\n", host, bus_status_str(st), err);
	assert_int_equal(st, BUS_OK);
	return b;
}

static bus *open_bus(env *e, const char *host)
{
	return open_bus_with(e, host, 2000, 1000);
}

/* ---- replay collection ---------------------------------------------------- */

typedef struct ev {
	uint64_t sseq, last, pseq;
	char data[64];
} ev;

typedef struct evlist {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	ev v[20000];
	int n;
} evlist;

static void evlist_init(evlist *l)
{
	memset(l, 0, sizeof *l);
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, NULL);
}

static void on_replay(void *arg, uint64_t sseq, uint64_t pseq, const void *data,
                      size_t len)
{
	evlist *l = arg;
	if (l->n < 20000) {
		ev *x = &l->v[l->n++];
		x->sseq = sseq;
		x->pseq = pseq;
		snprintf(x->data, sizeof x->data, "%.*s", (int)len, (const char *)data);
	}
}

static void on_fan(void *arg, uint64_t sseq, uint64_t last, uint64_t pseq,
                   const void *data, size_t len)
{
	evlist *l = arg;
	pthread_mutex_lock(&l->mu);
	if (l->n < 20000) {
		ev *x = &l->v[l->n++];
		x->sseq = sseq;
		x->last = last;
		x->pseq = pseq;
		snprintf(x->data, sizeof x->data, "%.*s", (int)len, (const char *)data);
	}
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
}

/* waits until l has n events (or WAIT_MS); returns how many it has */
static int evlist_wait(evlist *l, int n)
{
	int64_t end = now_ms() + WAIT_MS;
	pthread_mutex_lock(&l->mu);
	while (l->n < n && now_ms() < end) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&l->cv, &l->mu, &ts);
	}
	int got = l->n;
	pthread_mutex_unlock(&l->mu);
	return got;
}

static bus_status append_str(bus *b, const char *key, uint64_t pseq,
                             const char *s, uint64_t expect, uint64_t *out)
{
	return bus_append(b, key, pseq, s, strlen(s), expect, out);
}

/* ---- (a) one writer: contiguous pseqs, replayed in order with data -------- */

static void t_append_replay(void **state)
{
	env *e = *state;
	bus *a = open_bus(e, "hostA");
	uint64_t expect = 0, seqs[20], other = 0;
	char buf[32];
	for (int i = 1; i <= 20; i++) {
		snprintf(buf, sizeof buf, "msg %d", i);
		assert_int_equal(append_str(a, "ch.1", (uint64_t)i, buf, expect, &seqs[i - 1]), BUS_OK);
		/* another key in between: stream seqs of ch.1 get gaps */
		if (i % 3 == 0)
			assert_int_equal(append_str(a, "other", (uint64_t)i / 3, "x",
			                            other, &other), BUS_OK);
		expect = seqs[i - 1];
	}
	uint64_t ls = 0, lp = 0;
	assert_int_equal(bus_last(a, "ch.1", &ls, &lp), BUS_OK);
	assert_int_equal(ls, seqs[19]);
	assert_int_equal(lp, 20);
	assert_int_equal(bus_last(a, "never", &ls, &lp), BUS_EMPTY);

	evlist *l = malloc(sizeof *l);
	evlist_init(l);
	assert_int_equal(bus_replay(a, "ch.1", 0, on_replay, l), BUS_OK);
	assert_int_equal(l->n, 20);
	for (int i = 0; i < 20; i++) {
		snprintf(buf, sizeof buf, "msg %d", i + 1);
		assert_int_equal(l->v[i].pseq, i + 1);
		assert_int_equal(l->v[i].sseq, seqs[i]);
		assert_string_equal(l->v[i].data, buf);
	}
	/* from the middle: only the tail */
	l->n = 0;
	assert_int_equal(bus_replay(a, "ch.1", seqs[14], on_replay, l), BUS_OK);
	assert_int_equal(l->n, 6); /* from_sseq itself included */
	assert_int_equal(l->v[0].pseq, 15);
	l->n = 0;
	assert_int_equal(bus_replay(a, "never", 0, on_replay, l), BUS_OK);
	assert_int_equal(l->n, 0);
	free(l);
	bus_metrics m;
	bus_get_metrics(a, &m);
	assert_int_equal(m.appends, 26);
	assert_int_equal(m.fenced, 0);
	bus_close(a);
}

/* ---- (b) fencing ---------------------------------------------------------- */

static void t_fencing(void **state)
{
	env *e = *state;
	bus *a = open_bus(e, "hostA"), *b = open_bus(e, "hostB");
	uint64_t s1, s2, s3, s4, ls, lp;
	assert_int_equal(append_str(a, "ch", 1, "a1", 0, &s1), BUS_OK);
	assert_int_equal(append_str(a, "ch", 2, "a2", s1, &s2), BUS_OK);
	/* B takes over: reads the last, appends after it */
	assert_int_equal(bus_last(b, "ch", &ls, &lp), BUS_OK);
	assert_int_equal(ls, s2);
	assert_int_equal(lp, 2);
	assert_int_equal(append_str(b, "ch", lp + 1, "b3", ls, &s3), BUS_OK);
	/* A's stale expectation is refused, with its own next pseq or B's */
	assert_int_equal(append_str(a, "ch", 3, "a3", s2, &s4), BUS_FENCED);
	assert_int_equal(append_str(a, "ch", 4, "a4", s2, &s4), BUS_FENCED);
	/* so is a second "new subject" */
	assert_int_equal(append_str(a, "ch", 5, "again", 0, &s4), BUS_FENCED);
	/* and B re-sending A's stored pseq 1 as "new subject" (the server
	 * answers that one from its dedup window) */
	assert_int_equal(append_str(b, "ch", 1, "b1", 0, &s4), BUS_FENCED);
	evlist *l = malloc(sizeof *l);
	evlist_init(l);
	assert_int_equal(bus_replay(b, "ch", 0, on_replay, l), BUS_OK);
	assert_int_equal(l->n, 3);
	assert_string_equal(l->v[0].data, "a1");
	assert_string_equal(l->v[1].data, "a2");
	assert_string_equal(l->v[2].data, "b3");
	free(l);
	bus_metrics m;
	bus_get_metrics(a, &m);
	assert_int_equal(m.fenced, 3);
	bus_close(a);
	bus_close(b);
}

/* ---- (c) the retry after a lost reply ---------------------------------- */

static void t_lost_reply(void **state)
{
	env *e = *state;
	bus *a = open_bus(e, "hostA");
	uint64_t s1, s1b, s2, s2b;
	assert_int_equal(append_str(a, "ch", 1, "one", 0, &s1), BUS_OK);
	/* the same append again, as after a timeout: same key, pseq, expect */
	assert_int_equal(append_str(a, "ch", 1, "one", 0, &s1b), BUS_OK);
	assert_int_equal(s1b, s1);
	assert_int_equal(append_str(a, "ch", 2, "two", s1, &s2), BUS_OK);
	assert_int_equal(append_str(a, "ch", 2, "two", s1, &s2b), BUS_OK);
	assert_int_equal(s2b, s2);
	/* but not another writer's retry of the same pseq */
	bus *b = open_bus(e, "hostB");
	assert_int_equal(append_str(b, "ch", 2, "two", s1, &s2b), BUS_FENCED);
	evlist *l = malloc(sizeof *l);
	evlist_init(l);
	assert_int_equal(bus_replay(a, "ch", 0, on_replay, l), BUS_OK);
	assert_int_equal(l->n, 2);
	assert_int_equal(l->v[0].pseq, 1);
	assert_int_equal(l->v[1].pseq, 2);
	free(l);
	bus_close(b);
	bus_close(a);
}

/* ---- (d) leases ------------------------------------------------------------ */

static void t_lease(void **state)
{
	env *e = *state;
	bus *a = open_bus(e, "hostA"), *b = open_bus(e, "hostB");
	uint64_t ra = 0, rb = 0, r2 = 0;
	char owner[BUS_HOST_MAX + 1];
	assert_int_equal(bus_lease_owner(a, "ch.x", owner, sizeof owner), BUS_EMPTY);
	assert_int_equal(bus_lease_acquire(a, "ch.x", &ra, owner, sizeof owner), BUS_OK);
	assert_int_equal(bus_lease_acquire(b, "ch.x", &rb, owner, sizeof owner), BUS_TAKEN);
	assert_string_equal(owner, "hostA");
	/* A renews once, then stops */
	assert_int_equal(bus_lease_renew(a, "ch.x", ra, &r2), BUS_OK);
	assert_true(r2 > ra);
	assert_int_equal(bus_lease_renew(a, "ch.x", ra, &rb), BUS_LOST); /* stale rev */
	ra = r2;
	bus_status st = BUS_TAKEN;
	int64_t end = now_ms() + 2000 + WAIT_MS;
	while (st == BUS_TAKEN && now_ms() < end) {
		st = bus_lease_acquire(b, "ch.x", &rb, owner, sizeof owner);
		if (st == BUS_TAKEN) {
			assert_string_equal(owner, "hostA");
			usleep(100 * 1000);
		}
	}
	assert_int_equal(st, BUS_OK);
	assert_int_equal(bus_lease_owner(a, "ch.x", owner, sizeof owner), BUS_OK);
	assert_string_equal(owner, "hostB");
	assert_int_equal(bus_lease_renew(a, "ch.x", ra, &r2), BUS_LOST);
	assert_int_equal(bus_lease_release(a, "ch.x", ra), BUS_LOST);
	assert_int_equal(bus_lease_owner(a, "ch.x", owner, sizeof owner), BUS_OK);
	assert_string_equal(owner, "hostB");
	/* B renews and releases; then A can take it at once */
	assert_int_equal(bus_lease_renew(b, "ch.x", rb, &r2), BUS_OK);
	assert_int_equal(bus_lease_release(b, "ch.x", r2), BUS_OK);
	assert_int_equal(bus_lease_owner(a, "ch.x", owner, sizeof owner), BUS_EMPTY);
	assert_int_equal(bus_lease_acquire(a, "ch.x", &ra, owner, sizeof owner), BUS_OK);
	bus_close(a);
	bus_close(b);
}

/* ---- (e) fan-out ------------------------------------------------------------ */

static void t_fanout(void **state)
{
	env *e = *state;
	bus *a = open_bus(e, "hostA"), *b = open_bus(e, "hostB"), *c = open_bus(e, "hostC");
	evlist *l = malloc(sizeof *l);
	evlist_init(l);
	bus_sub *sub = NULL;
	assert_int_equal(bus_subscribe(b, "ch.f", on_fan, l, &sub), BUS_OK);
	uint64_t bl, bp;
	/* the subscription is registered once b answered anything after it */
	assert_int_equal(bus_last(b, "ch.f", &bl, &bp), BUS_EMPTY);
	uint64_t seq[8], expect = 0, junk;
	char buf[16];
	for (int i = 1; i <= 5; i++) {
		snprintf(buf, sizeof buf, "e%d", i);
		assert_int_equal(append_str(a, "ch.f", (uint64_t)i, buf, expect, &seq[i]), BUS_OK);
		expect = seq[i];
		assert_int_equal(append_str(c, "noise", (uint64_t)i, "n", i == 1 ? 0 : junk, &junk), BUS_OK);
	}
	/* a stale writer: refused, so nobody may see it */
	assert_int_equal(append_str(c, "ch.f", 6, "stale", seq[4], &junk), BUS_FENCED);
	assert_int_equal(append_str(a, "ch.f", 6, "e6", expect, &seq[6]), BUS_OK);
	/* e6 comes after anything published before it */
	assert_int_equal(evlist_wait(l, 6), 6);
	pthread_mutex_lock(&l->mu);
	assert_int_equal(l->n, 6);
	for (int i = 0; i < 6; i++) {
		snprintf(buf, sizeof buf, "e%d", i + 1);
		assert_string_equal(l->v[i].data, buf);
		assert_int_equal(l->v[i].pseq, i + 1);
		assert_int_equal(l->v[i].sseq, seq[i + 1]);
		assert_int_equal(l->v[i].last, i == 0 ? 0 : l->v[i - 1].sseq);
	}
	pthread_mutex_unlock(&l->mu);
	bus_unsubscribe(sub);
	assert_int_equal(append_str(a, "ch.f", 7, "e7", seq[6], &junk), BUS_OK);
	uint64_t ls, lp;
	assert_int_equal(bus_last(b, "ch.f", &ls, &lp), BUS_OK); /* round trip */
	assert_int_equal(l->n, 6); /* unsubscribed: nothing more */
	free(l);
	bus_close(a);
	bus_close(b);
	bus_close(c);
}

/* ---- (f) kill -9 of a NATS node while appending --------------------------- */

typedef struct killer {
	env *e;
	int node;
	_Atomic int acked;
	_Atomic bool killed;
} killer;

static void *killer_main(void *arg)
{
	killer *k = arg;
	int64_t end = now_ms() + WAIT_MS;
	while (atomic_load(&k->acked) < 10 && now_ms() < end)
		usleep(5000);
	char cmd[32];
	snprintf(cmd, sizeof cmd, "kill %d", k->node);
	if (cluster(k->e, cmd, NULL, 0) == 0)
		atomic_store(&k->killed, true);
	return NULL;
}

/* 1..3: the node (n1..n3) that leads PARLEY_EV */
static int stream_leader(env *e)
{
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	jsStreamInfo *si = NULL;
	int node = 0;
	char url[256];
	snprintf(url, sizeof url, "%s", e->urls);
	url[strcspn(url, ",")] = '\0'; /* n1: alive, the kill comes later */
	if (natsConnection_ConnectTo(&nc, url) != NATS_OK)
		return 0;
	if (natsConnection_JetStream(&js, nc, NULL) == NATS_OK &&
	    js_GetStreamInfo(&si, js, "PARLEY_EV", NULL, NULL) == NATS_OK) {
		if (si->Cluster && si->Cluster->Leader && si->Cluster->Leader[0] == 'n')
			node = atoi(si->Cluster->Leader + 1);
		jsStreamInfo_Destroy(si);
	}
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	return node;
}

static void kill_while_appending(env *e, bool leader)
{
	bus *a = open_bus(e, "hostA");
	uint64_t expect = 0, s;
	/* the stream exists now: find its leader */
	killer k = {.e = e, .node = leader ? stream_leader(e) : 1};
	assert_true(k.node >= 1 && k.node <= 3);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, killer_main, &k), 0);
	char buf[32];
	int acked_after_kill = 0, unavailable = 0;
	uint64_t pseq = 1;
	int64_t end = now_ms() + 3 * WAIT_MS;
	while (acked_after_kill < 20 && now_ms() < end) {
		bool killed = atomic_load(&k.killed);
		snprintf(buf, sizeof buf, "p%" PRIu64, pseq);
		bus_status st = append_str(a, "ch.k", pseq, buf, expect, &s);
		if (st == BUS_UNAVAILABLE) { /* retry the same append */
			unavailable++;
			continue;
		}
		assert_int_equal(st, BUS_OK);
		expect = s;
		pseq++;
		atomic_fetch_add(&k.acked, 1);
		usleep(5000); /* a steady trickle, not a flood */
		if (killed)
			acked_after_kill++;
	}
	pthread_join(t, NULL);
	assert_true(atomic_load(&k.killed));
	assert_int_equal(acked_after_kill, 20); /* appends resumed */
	/* bring the node back; the log holds every acked append, in order */
	char urls[256];
	assert_int_equal(cluster(e, "start", urls, sizeof urls), 0);
	evlist *l = malloc(sizeof *l);
	evlist_init(l);
	assert_int_equal(bus_replay(a, "ch.k", 0, on_replay, l), BUS_OK);
	assert_int_equal(l->n, (int)pseq - 1);
	for (int i = 0; i < l->n; i++) {
		snprintf(buf, sizeof buf, "p%d", i + 1);
		assert_int_equal(l->v[i].pseq, i + 1);
		assert_string_equal(l->v[i].data, buf);
	}
	free(l);
	bus_metrics m;
	bus_get_metrics(a, &m);
	fprintf(stderr, "killed n%d: %" PRIu64 " appends, %d unavailable, %" PRIu64
	        " retries, %" PRIu64 " reconnects\n", k.node, m.appends, unavailable,
	        m.retries, m.reconnects);
	bus_close(a);
}

static void t_kill_n1(void **state) { kill_while_appending(*state, false); }
static void t_kill_leader(void **state) { kill_while_appending(*state, true); }

/* ---- (g) requests between hosts ------------------------------------------ */

typedef struct answer {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool got;
	bus_status st;
	char data[64];
} answer;

static void on_answer(void *arg, bus_status st, const void *data, size_t len)
{
	answer *a = arg;
	pthread_mutex_lock(&a->mu);
	a->got = true;
	a->st = st;
	snprintf(a->data, sizeof a->data, "%.*s", (int)len, data ? (const char *)data : "");
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

static bool answer_wait(answer *a)
{
	int64_t end = now_ms() + WAIT_MS;
	pthread_mutex_lock(&a->mu);
	while (!a->got && now_ms() < end) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec++;
		pthread_cond_timedwait(&a->cv, &a->mu, &ts);
	}
	bool got = a->got;
	pthread_mutex_unlock(&a->mu);
	return got;
}

static bus *served; /* the bus of the serving host */

static void on_request(void *arg, const void *data, size_t len, bus_reply_token *tok)
{
	char out[80];
	int n = snprintf(out, sizeof out, "%s:%.*s", (const char *)arg, (int)len,
	                 (const char *)data);
	bus_reply(served, tok, out, (size_t)n);
}

static void t_request(void **state)
{
	env *e = *state;
	bus *a = open_bus(e, "hostA"), *b = open_bus(e, "hostB");
	served = b;
	assert_int_equal(bus_serve(b, "hostB", on_request, "B"), BUS_OK);
	for (int i = 0; i < 3; i++) {
		answer *ans = calloc(1, sizeof *ans);
		pthread_mutex_init(&ans->mu, NULL);
		pthread_cond_init(&ans->cv, NULL);
		assert_int_equal(bus_request(a, "hostB", "ping", 4, 20000, on_answer, ans), BUS_OK);
		assert_true(answer_wait(ans));
		assert_int_equal(ans->st, BUS_OK);
		assert_string_equal(ans->data, "B:ping");
		free(ans);
	}
	/* nobody serves hostZ: a status well before the 20 s timeout */
	answer *ans = calloc(1, sizeof *ans);
	pthread_mutex_init(&ans->mu, NULL);
	pthread_cond_init(&ans->cv, NULL);
	assert_int_equal(bus_request(a, "hostZ", "ping", 4, 20000, on_answer, ans), BUS_OK);
	assert_true(answer_wait(ans));
	assert_int_equal(ans->st, BUS_NO_RESPONDERS);
	free(ans);
	bus_close(a);
	bus_close(b);
}

/* ---- (h) ownership records: two hosts race for empty keys ---------------- */

#define RACE_KEYS 20

typedef struct racer {
	bus *b;
	pthread_barrier_t *go;
	bus_status st[RACE_KEYS];
	uint64_t rev[RACE_KEYS];
	char owner[RACE_KEYS][BUS_HOST_MAX + 1];
} racer;

static void *racer_main(void *arg)
{
	racer *r = arg;
	char key[32];
	for (int i = 0; i < RACE_KEYS; i++) {
		snprintf(key, sizeof key, "ch.race.%d", i);
		pthread_barrier_wait(r->go); /* both claim key i at once */
		r->st[i] = bus_key_claim(r->b, key, 0, &r->rev[i], r->owner[i],
		                         sizeof r->owner[i]);
	}
	return NULL;
}

static void t_keys_race(void **state)
{
	env *e = *state;
	bus *a = open_bus(e, "hostA"), *b = open_bus(e, "hostB");
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, 2);
	racer *ra = calloc(1, sizeof *ra), *rb = calloc(1, sizeof *rb);
	ra->b = a;
	rb->b = b;
	ra->go = rb->go = &go;
	pthread_t ta, tb;
	assert_int_equal(pthread_create(&ta, NULL, racer_main, ra), 0);
	assert_int_equal(pthread_create(&tb, NULL, racer_main, rb), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	int wins_a = 0;
	for (int i = 0; i < RACE_KEYS; i++) {
		char key[32], owner[BUS_HOST_MAX + 1];
		uint64_t rev = 0;
		snprintf(key, sizeof key, "ch.race.%d", i);
		/* exactly one winner; the loser is told who won */
		bool a_won = ra->st[i] == BUS_OK;
		racer *win = a_won ? ra : rb, *lose = a_won ? rb : ra;
		const char *wname = a_won ? "hostA" : "hostB";
		wins_a += a_won;
		assert_int_equal(win->st[i], BUS_OK);
		assert_int_equal(lose->st[i], BUS_TAKEN);
		assert_string_equal(lose->owner[i], wname);
		assert_int_equal(lose->rev[i], win->rev[i]);
		/* and the record says so, to either host */
		assert_int_equal(bus_key_get(b, key, owner, sizeof owner, &rev), BUS_OK);
		assert_string_equal(owner, wname);
		assert_int_equal(rev, win->rev[i]);
	}
	fprintf(stderr, "race: hostA won %d of %d\n", wins_a, RACE_KEYS);
	char owner[BUS_HOST_MAX + 1] = "x";
	uint64_t rev = 7;
	assert_int_equal(bus_key_get(a, "ch.never", owner, sizeof owner, &rev), BUS_EMPTY);
	free(ra);
	free(rb);
	pthread_barrier_destroy(&go);
	bus_close(a);
	bus_close(b);
}

/* ---- (i) ownership records: compare-and-set on the revision -------------- */

static void t_keys_cas(void **state)
{
	env *e = *state;
	bus *a = open_bus(e, "hostA"), *b = open_bus(e, "hostB");
	char owner[BUS_HOST_MAX + 1];
	uint64_t r1 = 0, r2 = 0, r3 = 0, rev = 0;
	assert_int_equal(bus_key_claim(a, "ch.c", 0, &r1, owner, sizeof owner), BUS_OK);
	assert_true(r1 > 0);
	/* "must not exist": refused, even to the owner (a second claim from
	 * the same revision never succeeds) */
	assert_int_equal(bus_key_claim(a, "ch.c", 0, &rev, owner, sizeof owner), BUS_TAKEN);
	assert_string_equal(owner, "hostA");
	assert_int_equal(rev, r1);
	assert_int_equal(bus_key_claim(b, "ch.c", 0, &rev, owner, sizeof owner), BUS_TAKEN);
	assert_string_equal(owner, "hostA");
	assert_int_equal(rev, r1);
	/* B takes it from the revision it read */
	assert_int_equal(bus_key_claim(b, "ch.c", r1, &r2, owner, sizeof owner), BUS_OK);
	assert_true(r2 > r1);
	/* A's stale revision: TAKEN, naming B */
	assert_int_equal(bus_key_claim(a, "ch.c", r1, &rev, owner, sizeof owner), BUS_TAKEN);
	assert_string_equal(owner, "hostB");
	assert_int_equal(rev, r2);
	/* a revision of another key is stale too */
	uint64_t other = 0;
	assert_int_equal(bus_key_claim(a, "ch.other", 0, &other, owner, sizeof owner), BUS_OK);
	assert_int_equal(bus_key_claim(a, "ch.c", other, &rev, owner, sizeof owner), BUS_TAKEN);
	assert_string_equal(owner, "hostB");
	/* A takes it back from the current revision */
	assert_int_equal(bus_key_claim(a, "ch.c", r2, &r3, owner, sizeof owner), BUS_OK);
	assert_int_equal(bus_key_get(b, "ch.c", owner, sizeof owner, &rev), BUS_OK);
	assert_string_equal(owner, "hostA");
	assert_int_equal(rev, r3);
	/* keys are encoded: '.', '*', '>' and ' ' are kept apart */
	const char *odd[] = {"ch.*", "ch.>", "ch >", "ch=2E"};
	for (int i = 0; i < 4; i++)
		assert_int_equal(bus_key_claim(i % 2 ? a : b, odd[i], 0, &rev, owner, sizeof owner), BUS_OK);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(bus_key_get(a, odd[i], owner, sizeof owner, &rev), BUS_OK);
		assert_string_equal(owner, i % 2 ? "hostA" : "hostB");
	}
	assert_int_equal(bus_key_claim(a, "", 0, &rev, owner, sizeof owner), BUS_INVALID);
	bus_close(a);
	bus_close(b);
}

/* ---- (j) a record outlives its host's lease; a live host takes it -------- */

/* waits until the lease on key is gone (WAIT_MS); true if it went */
static bool lease_gone(bus *b, const char *key)
{
	char owner[BUS_HOST_MAX + 1];
	int64_t end = now_ms() + WAIT_MS;
	while (now_ms() < end) {
		if (bus_lease_owner(b, key, owner, sizeof owner) == BUS_EMPTY)
			return true;
		usleep(100 * 1000);
	}
	return false;
}

static void t_keys_outlive(void **state)
{
	env *e = *state;
	/* lease TTL 1 s; the record is claimed first, so it is older than
	 * either lease below */
	bus *a = open_bus_with(e, "hostA", 1000, 1000);
	bus *b = open_bus_with(e, "hostB", 1000, 1000);
	char owner[BUS_HOST_MAX + 1];
	uint64_t rk = 0, rl = 0, rev = 0, r2 = 0;
	assert_int_equal(bus_key_claim(a, "ch.o", 0, &rk, owner, sizeof owner), BUS_OK);
	/* A's host lease, not renewed: A "dies". Twice over, so the record is
	 * two TTLs old when it is read */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(bus_lease_acquire(a, "host:hostA", &rl, owner, sizeof owner), BUS_OK);
		assert_true(lease_gone(b, "host:hostA"));
	}
	/* the record is still there, unchanged */
	assert_int_equal(bus_key_get(b, "ch.o", owner, sizeof owner, &rev), BUS_OK);
	assert_string_equal(owner, "hostA");
	assert_int_equal(rev, rk);
	/* B sees hostA's lease gone and takes the key at the revision read */
	assert_int_equal(bus_lease_owner(b, "host:hostA", owner, sizeof owner), BUS_EMPTY);
	assert_int_equal(bus_key_claim(b, "ch.o", rev, &r2, owner, sizeof owner), BUS_OK);
	assert_int_equal(bus_key_get(a, "ch.o", owner, sizeof owner, &rev), BUS_OK);
	assert_string_equal(owner, "hostB");
	assert_int_equal(rev, r2);
	/* A comes back late with the revision it knew: refused */
	assert_int_equal(bus_key_claim(a, "ch.o", rk, &rev, owner, sizeof owner), BUS_TAKEN);
	assert_string_equal(owner, "hostB");
	bus_close(a);
	bus_close(b);
}

/* ---- (k) claims whose replies come too late: retried, still ours -------- */

static void t_keys_lost_reply(void **state)
{
	env *e = *state;
	/* the buckets exist first (made with normal waits) */
	bus *setup_bus = open_bus(e, "hostB");
	/* then a bus whose every try waits 1 ms for its reply: on this
	 * cluster (R3) most replies come later, the try is repeated, and a
	 * repeat finds the record already written by the try before */
	bus *a = open_bus_with(e, "hostA", 2000, 1);
	char owner[BUS_HOST_MAX + 1], key[32];
	int unavailable = 0;
	for (int i = 0; i < 30; i++) {
		uint64_t r1 = 0, r2 = 0, rev = 0;
		snprintf(key, sizeof key, "ch.slow.%d", i);
		bus_status st = bus_key_claim(a, key, 0, &r1, owner, sizeof owner);
		if (st == BUS_UNAVAILABLE) { /* 10 s of timeouts: allowed, rare */
			unavailable++;
			continue;
		}
		assert_int_equal(st, BUS_OK);
		assert_int_equal(bus_key_get(setup_bus, key, owner, sizeof owner, &rev), BUS_OK);
		assert_string_equal(owner, "hostA");
		assert_int_equal(rev, r1);
		st = bus_key_claim(a, key, r1, &r2, owner, sizeof owner);
		if (st == BUS_UNAVAILABLE) {
			unavailable++;
			continue;
		}
		assert_int_equal(st, BUS_OK);
		assert_int_equal(bus_key_get(setup_bus, key, owner, sizeof owner, &rev), BUS_OK);
		assert_int_equal(rev, r2);
	}
	bus_metrics m;
	bus_get_metrics(a, &m);
	fprintf(stderr, "slow claims: %" PRIu64 " retries, %d unavailable\n",
	        m.retries, unavailable);
	assert_true(unavailable < 30);
	bus_close(a);
	bus_close(setup_bus);
}

/* ---- (l) following the log: from a position, live, across a leader's death */

static void follow_check(evlist *l, int n, uint64_t first_pseq)
{
	char buf[32];

	assert_int_equal(evlist_wait(l, n), n);
	pthread_mutex_lock(&l->mu);
	for (int i = 0; i < n; i++) {
		snprintf(buf, sizeof buf, "f%" PRIu64, first_pseq + (uint64_t)i);
		assert_int_equal(l->v[i].pseq, first_pseq + (uint64_t)i);
		assert_string_equal(l->v[i].data, buf);
		if (i)
			assert_true(l->v[i].sseq > l->v[i - 1].sseq);
	}
	pthread_mutex_unlock(&l->mu);
}

/* Appends "f<pseq>" to key for each pseq from *pseq to last, each
 * stating the last stream sequence (*expect, moved on). */
static void append_upto(bus *a, const char *key, uint64_t *pseq,
                        uint64_t last, uint64_t *expect)
{
	char buf[32];
	uint64_t s;

	for (; *pseq <= last; (*pseq)++) {
		snprintf(buf, sizeof buf, "f%" PRIu64, *pseq);
		assert_int_equal(append_str(a, key, *pseq, buf, *expect, &s),
		                 BUS_OK);
		*expect = s;
	}
}

static void t_follow(void **state)
{
	env *e = *state;
	bus *a = open_bus(e, "hostA"), *b = open_bus(e, "hostB");
	uint64_t expect = 0, s, third;
	char buf[32];
	uint64_t pseq = 1;

	append_upto(a, "p0", &pseq, 3, &expect);
	third = expect;
	append_upto(a, "p0", &pseq, 5, &expect);
	/* from the start: what was stored, then what comes */
	evlist *all = malloc(sizeof *all), *tail = malloc(sizeof *tail);
	evlist_init(all);
	evlist_init(tail);
	bus_sub *fa = NULL, *ft = NULL;
	assert_int_equal(bus_follow(b, "p0", 0, on_fan, all, &fa), BUS_OK);
	assert_int_equal(bus_follow(b, "p0", third, on_fan, tail, &ft), BUS_OK);
	follow_check(all, 5, 1);
	follow_check(tail, 3, 3);
	/* live, and through the death of the stream's leader */
	int leader = stream_leader(e);
	assert_true(leader >= 1 && leader <= 3);
	append_upto(a, "p0", &pseq, 10, &expect);
	char cmd[32];
	snprintf(cmd, sizeof cmd, "kill %d", leader);
	assert_int_equal(cluster(e, cmd, NULL, 0), 0);
	for (; pseq <= 15;) {
		bus_status st;

		snprintf(buf, sizeof buf, "f%" PRIu64, pseq);
		st = append_str(a, "p0", pseq, buf, expect, &s);
		if (st == BUS_UNAVAILABLE)
			continue; /* the same append again */
		assert_int_equal(st, BUS_OK);
		expect = s;
		pseq++;
	}
	/* another key's messages are not this follower's */
	assert_int_equal(append_str(a, "p1", 1, "other", 0, &s), BUS_OK);
	follow_check(all, 15, 1);
	follow_check(tail, 13, 3);
	usleep(300 * 1000);
	assert_int_equal(evlist_wait(all, 15), 15); /* nothing more came */
	bus_unsubscribe(fa);
	bus_unsubscribe(ft);
	free(all);
	free(tail);
	bus_close(a);
	bus_close(b);
}

/* ---- (n) a follower stopped and made again from a position ------------- */

static void t_refollow(void **state)
{
	env *e = *state;
	bus *a = open_bus(e, "hostA"), *b = open_bus(e, "hostB");
	uint64_t expect = 0, second;
	uint64_t pseq = 1;

	append_upto(a, "p1", &pseq, 2, &expect);
	second = expect;
	evlist *l1 = malloc(sizeof *l1), *l2 = malloc(sizeof *l2);
	evlist_init(l1);
	evlist_init(l2);
	bus_sub *f = NULL;
	assert_int_equal(bus_follow(b, "p1", 0, on_fan, l1, &f), BUS_OK);
	follow_check(l1, 2, 1);
	/* stopped, and followed again from after what it had */
	bus_unsubscribe(f);
	assert_int_equal(bus_follow(b, "p1", second + 1, on_fan, l2, &f),
	                 BUS_OK);
	append_upto(a, "p1", &pseq, 6, &expect);
	follow_check(l2, 4, 3);
	bus_unsubscribe(f);
	free(l1);
	free(l2);
	bus_close(a);
	bus_close(b);
}

/* ---- (m) one-way messages: to one host in order, to all ------------------ */

static void on_note(void *arg, const void *data, size_t len)
{
	on_fan(arg, 0, 0, 0, data, len);
}

static void t_send(void **state)
{
	env *e = *state;
	bus *a = open_bus(e, "hostA"), *b = open_bus(e, "hostB");
	evlist *lb = malloc(sizeof *lb), *la_all = malloc(sizeof *la_all),
	       *lb_all = malloc(sizeof *lb_all);
	bus_sub *sb = NULL, *sa_all = NULL, *sb_all = NULL;
	char buf[32];

	evlist_init(lb);
	evlist_init(la_all);
	evlist_init(lb_all);
	assert_int_equal(bus_listen(b, "hostB", on_note, lb, &sb), BUS_OK);
	assert_int_equal(bus_listen(a, NULL, on_note, la_all, &sa_all), BUS_OK);
	assert_int_equal(bus_listen(b, NULL, on_note, lb_all, &sb_all), BUS_OK);
	bus_sub *none = NULL;
	assert_int_equal(bus_listen(b, "bad host", on_note, lb, &none),
	                 BUS_INVALID);
	assert_null(none);
	for (int i = 0; i < 200; i++) {
		snprintf(buf, sizeof buf, "m%d", i);
		assert_int_equal(bus_send(a, "hostB", buf, strlen(buf)), BUS_OK);
	}
	/* nobody listens as hostC: sent, and lost */
	assert_int_equal(bus_send(a, "hostC", "x", 1), BUS_OK);
	assert_int_equal(bus_send(a, NULL, "all", 3), BUS_OK);
	assert_int_equal(evlist_wait(lb, 200), 200);
	for (int i = 0; i < 200; i++) {
		snprintf(buf, sizeof buf, "m%d", i);
		assert_string_equal(lb->v[i].data, buf); /* in order */
	}
	assert_int_equal(evlist_wait(la_all, 1), 1); /* the sender's too */
	assert_int_equal(evlist_wait(lb_all, 1), 1);
	assert_string_equal(la_all->v[0].data, "all");
	assert_string_equal(lb_all->v[0].data, "all");
	usleep(200 * 1000);
	assert_int_equal(evlist_wait(lb, 200), 200); /* not the broadcast */
	bus_unsubscribe(sb);
	bus_unsubscribe(sa_all);
	bus_unsubscribe(sb_all);
	free(lb);
	free(la_all);
	free(lb_all);
	bus_close(a);
	bus_close(b);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest all[] = {
		cmocka_unit_test_setup_teardown(t_append_replay, setup, teardown),
		cmocka_unit_test_setup_teardown(t_fencing, setup, teardown),
		cmocka_unit_test_setup_teardown(t_lost_reply, setup, teardown),
		cmocka_unit_test_setup_teardown(t_lease, setup, teardown),
		cmocka_unit_test_setup_teardown(t_fanout, setup, teardown),
		cmocka_unit_test_setup_teardown(t_kill_n1, setup, teardown),
		cmocka_unit_test_setup_teardown(t_kill_leader, setup, teardown),
		cmocka_unit_test_setup_teardown(t_request, setup, teardown),
		cmocka_unit_test_setup_teardown(t_keys_race, setup, teardown),
		cmocka_unit_test_setup_teardown(t_keys_cas, setup, teardown),
		cmocka_unit_test_setup_teardown(t_keys_outlive, setup, teardown),
		cmocka_unit_test_setup_teardown(t_keys_lost_reply, setup, teardown),
		cmocka_unit_test_setup_teardown(t_follow, setup, teardown),
		cmocka_unit_test_setup_teardown(t_send, setup, teardown),
		cmocka_unit_test_setup_teardown(t_refollow, setup, teardown),
	};
	static const char *names[] = {"append_replay", "fencing", "lost_reply",
	                              "lease", "fanout", "kill_n1", "kill_leader",
	                              "request", "keys_race", "keys_cas",
	                              "keys_outlive", "keys_lost_reply",
	                              "follow", "send", "refollow"};
	size_t n = sizeof all / sizeof all[0];
	int rc = 2;
	if (argc > 1) {
		for (size_t i = 0; i < n; i++)
			if (!strcmp(argv[1], names[i]))
				rc = _cmocka_run_group_tests(names[i], &all[i], 1, NULL, NULL);
		if (rc == 2)
			fprintf(stderr, "unknown test %s\n", argv[1]);
	} else {
		rc = cmocka_run_group_tests(all, NULL, NULL);
	}
	/* libnats' threads must be gone before exit() tears the process down */
	nats_CloseAndWait(10000);
	return rc;
}
