/*
 * Shards: one pinned thread per core, each running its own libwebsockets
 * context. Started by parleyd through rt_start(); each turn of a shard's
 * loop services its sockets, drains its mailbox, retries its overflow and
 * then tells the actors the turn ended (where storage batches are handed to
 * the sync thread: one group commit per turn).
 *
 * libwebsockets in Debian 12 is built without multi-thread service, so each
 * shard has a context of its own and binds its own SO_REUSEPORT listener;
 * the kernel spreads new connections over the shards. The port is claimed
 * for this process first (claim_port): no other process may join it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "runtime/shard.h"
#include "runtime/log.h"

#include <uv.h>

struct rt_shard *rt__shards;
unsigned rt__nshards;
volatile int rt__drain_requested;

static __thread struct rt_shard *self;
static rt_config config;
static int bound_port;
static int port_lock = -1; /* see claim_port() */

unsigned rt_nshards(void) { return rt__nshards; }
void rt__set_self(struct rt_shard *s) { self = s; }
rt_shard *rt_self(void) { return self; }
unsigned rt_shard_id(const rt_shard *s) { return s->id; }
void *rt_shard_user(rt_shard *s) { return s->user; }
void rt_shard_set_user(rt_shard *s, void *u) { s->user = u; }
int rt_bound_port(void) { return bound_port; }

uint64_t rt_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t rt_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void rt__shard_wake(unsigned dst)
{
	struct rt_shard *s = &rt__shards[dst];

	/* ctx is published before the shard first arms its mailbox, and a
	 * producer only wakes an armed mailbox. */
	struct lws_context *ctx = __atomic_load_n(&s->ctx, __ATOMIC_ACQUIRE);

	if (ctx)
		lws_cancel_service(ctx);
}

static int parse_host(const char *host, struct sockaddr_in *sa,
		      const char **err)
{
	if (!strcmp(host, "localhost"))
		host = "127.0.0.1";
	if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
		*err = "--listen: host must be an IPv4 address";
		return -1;
	}
	return 0;
}

/* One shard's listener. SO_REUSEPORT lets the shards share the port (the
 * kernel spreads connections over them); claim_port() has made sure before
 * that nobody else is on it. */
static int open_listener(const struct sockaddr_in *sa, const char **err)
{
	int fd, one = 1;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)))
		goto fail_close;
	if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)))
		goto fail_close;
	if (listen(fd, 4096))
		goto fail_close;
	return fd;
fail_close:
	close(fd);
fail:
	*err = strerror(errno);
	return -1;
}

/*
 * The port must be ours alone. SO_REUSEPORT, which the shards need to
 * share it, also lets a second process of the same user join the group:
 * the kernel would then split new connections between two servers (two
 * data directories: users land in either at random). Two checks close
 * that:
 *  - a probe bound WITHOUT SO_REUSEPORT fails on a port that anyone
 *    listens on, SO_REUSEPORT or not (SO_REUSEADDR only lets it past
 *    TIME_WAIT leftovers of our own previous run);
 *  - the probe is closed before the shards bind, so two parleyds started
 *    at the same instant could both pass it: each first takes a lock, an
 *    abstract Unix socket named after the address (per network namespace,
 *    like the port; the kernel drops it when the process dies, kill -9
 *    included), and the second one fails there.
 * Port 0 asks the probe for a free port, which the shards then share.
 * Returns the lock's fd (kept open for the process's life) or -1.
 */
static int claim_port(struct sockaddr_in *sa, const char **err)
{
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	struct sockaddr_in got;
	socklen_t gl = sizeof(got);
	char ip[INET_ADDRSTRLEN];
	int lock, probe, one = 1, n;

	probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe < 0)
		goto fail;
	setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(probe, (const struct sockaddr *)sa, sizeof(*sa)) ||
	    getsockname(probe, (struct sockaddr *)&got, &gl)) {
		close(probe);
		goto fail;
	}
	sa->sin_port = got.sin_port;
	inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof(ip));
	/* sun_path[0] == '\0': the abstract namespace, no file left behind */
	n = snprintf(un.sun_path + 1, sizeof(un.sun_path) - 1,
		     "parleyd-listen/%s:%u", ip, ntohs(sa->sin_port));
	lock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lock < 0) {
		close(probe);
		goto fail;
	}
	if (bind(lock, (const struct sockaddr *)&un,
		 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n))) {
		close(lock);
		close(probe);
		goto fail;
	}
	close(probe);
	return lock;
fail:
	*err = errno == EADDRINUSE ? "address already in use" : strerror(errno);
	return -1;
}

static void timer_fired(uv_timer_t *t)
{
	struct rt_shard *s = t->data;

	s->timer_at_us = 0;
	if (config.hooks->on_timer)
		config.hooks->on_timer(s, rt_now_ms());
}

/* A libuv timer on the shard's own loop, not an lws sul: lws re-arms its
 * loop timer for a sul scheduled sooner only from its own callbacks, and
 * rt_timer_in is called from mailbox handlers too. uv_timer_start moves a
 * running timer. */
void rt_timer_in(rt_shard *s, uint64_t delay_ms)
{
	uint64_t at = rt_mono_us() + delay_ms * 1000;

	if (s->timer_at_us && s->timer_at_us <= at)
		return; /* due sooner already */
	if (!s->timer) {
		s->timer = malloc(sizeof(uv_timer_t));
		if (!s->timer || uv_timer_init(s->loop, s->timer)) {
			free(s->timer);
			s->timer = NULL;
			return; /* the tick still comes */
		}
		((uv_timer_t *)s->timer)->data = s;
	}
	s->timer_at_us = at;
	uv_update_time(s->loop); /* the loop's cached now may be a turn old */
	uv_timer_start(s->timer, timer_fired, delay_ms, 0);
}

static void tick(lws_sorted_usec_list_t *sul)
{
	struct rt_shard *s = lws_container_of(sul, struct rt_shard, tick_sul);
	uint64_t now = rt_now_ms();

	/* The loop turned (the watchdog asks): relaxed, a lone stamp that
	 * publishes nothing. Here, not at every turn: off the hot path. */
	__atomic_store_n(&s->turn_us, rt_mono_us(), __ATOMIC_RELAXED);
	if (config.hooks->on_tick)
		config.hooks->on_tick(s, now);
	rt__transport_tick(s);
	if (__atomic_load_n(&rt__drain_requested, __ATOMIC_ACQUIRE) && !s->draining) {
		s->draining = true;
		s->drain_first = true;
		s->drain_deadline_ms = now + config.drain_ms;
	}
	if (s->draining) {
		bool quiet = config.hooks->on_drain(s, s->drain_first);
		bool late = now >= s->drain_deadline_ms;

		if (s->drain_first)
			rt__transport_drain(s, false);
		s->drain_first = false;
		if (late)
			rt__transport_drain(s, true);
		if (quiet && (late || rt__transport_count(s) == 0))
			s->stopping = true;
	}
	lws_sul_schedule(s->ctx, 0, &s->tick_sul, tick,
			 (lws_usec_t)config.tick_ms * LWS_US_PER_MS);
}

static void *shard_main(void *arg)
{
	struct rt_shard *s = arg;

	self = s;
	{ /* "shard N" in top -H, gdb, /proc/PID/task/TID/comm */
		char name[16];

		snprintf(name, sizeof(name), "shard %u", s->id);
		pthread_setname_np(pthread_self(), name);
	}
	if (config.pin) {
		cpu_set_t set;
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

		CPU_ZERO(&set);
		CPU_SET(s->id % (unsigned)(ncpu > 0 ? ncpu : 1), &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	if (rt__transport_init(s)) {
		plog(PL_ERROR, "shard", "shard %u: transport init failed",
			s->id);
		exit(1);
	}
	if (config.hooks->on_start)
		config.hooks->on_start(s);
	lws_sul_schedule(s->ctx, 0, &s->tick_sul, tick,
			 (lws_usec_t)config.tick_ms * LWS_US_PER_MS);

	while (!s->stopping) {
		/* Sleep in poll only when the mailbox is empty and armed;
		 * otherwise just service what is ready and come back. */
		bool sleep = rt__mailbox_arm(s);

		/* libuv's epoll: one pass over what is ready (waiting for
		 * something first when the mailbox is empty). lws' own poll()
		 * looked at every connection on every turn. */
		uv_run(s->loop, sleep ? UV_RUN_ONCE : UV_RUN_NOWAIT);
		rt__mailbox_flush_overflow(s);
		rt__mailbox_drain(s, 4096);
		if (config.hooks->on_turn_end)
			config.hooks->on_turn_end(s);
		rt__transport_flush(s);
	}
	if (config.hooks->on_stop)
		config.hooks->on_stop(s);
	rt__transport_fini(s); /* closes every handle of the loop, ours too */
	free(s->timer);
	return NULL;
}

int rt_start(const rt_config *cfg, const char **err)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	unsigned i;

	config = *cfg;
	if (config.nshards == 0 || config.nshards > RT_MAX_SHARDS) {
		*err = "--shards must be 1..64";
		return -1;
	}
	if (!config.tick_ms)
		config.tick_ms = 100;
	rt__nshards = config.nshards;
	rt__shards = calloc(rt__nshards, sizeof(*rt__shards));
	rt__mailbox_init(rt__nshards);
	lws_set_log_level(LLL_ERR, NULL);

	/* Claim the port, then bind every listener before any thread runs:
	 * a port in use fails here, synchronously. */
	if (parse_host(config.host, &sa, err))
		return -1;
	sa.sin_port = htons((uint16_t)config.port);
	port_lock = claim_port(&sa, err);
	if (port_lock < 0)
		return -1;
	bound_port = ntohs(sa.sin_port);
	for (i = 0; i < rt__nshards; i++) {
		rt__shards[i].id = i;
		rt__shards[i].cfg = &config;
		rt__shards[i].turn_us = rt_mono_us();
		rt__shards[i].listen_fd = open_listener(&sa, err);
		if (rt__shards[i].listen_fd < 0)
			goto fail;
	}
	for (i = 0; i < rt__nshards; i++)
		pthread_create(&rt__shards[i].thread, NULL, shard_main,
			       &rt__shards[i]);
	return 0;
fail:
	while (i--)
		close(rt__shards[i].listen_fd);
	close(port_lock);
	port_lock = -1;
	return -1;
}

void rt_drain(void)
{
	/* Seen by each shard's next tick; wake them so it comes soon. */
	__atomic_store_n(&rt__drain_requested, 1, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < rt__nshards; i++)
		rt__shard_wake(i);
}

void rt_join(void)
{
	for (unsigned i = 0; i < rt__nshards; i++)
		pthread_join(rt__shards[i].thread, NULL);
}

uint64_t rt_shard_last_turn_us(unsigned shard)
{
	if (shard >= rt__nshards)
		return 0;
	return __atomic_load_n(&rt__shards[shard].turn_us, __ATOMIC_RELAXED);
}

void rt_get_stats(rt_stats *o)
{
	memset(o, 0, sizeof(*o));
	for (unsigned i = 0; i < rt__nshards; i++) {
		struct rt_shard *s = &rt__shards[i];
#define SUM(f) o->f += __atomic_load_n(&s->f, __ATOMIC_RELAXED)
		SUM(conns_open); SUM(conns_total); SUM(frames_in);
		SUM(frames_out); SUM(bytes_out); SUM(writes);
		SUM(closed_slow); SUM(closed_too_large); SUM(mailbox_msgs);
		SUM(ring_sends); SUM(ring_submits); SUM(ring_short);
		SUM(writes_short);
#undef SUM
		o->ring_shards += __atomic_load_n(&s->ring, __ATOMIC_RELAXED) != NULL;
		o->tls_handshakes += __atomic_load_n(&s->tls_ok, __ATOMIC_RELAXED);
		o->tls_handshake_failures +=
			__atomic_load_n(&s->tls_failed, __ATOMIC_RELAXED);
		o->wakeups += rt__mailbox_wakeups(i);
	}
}
