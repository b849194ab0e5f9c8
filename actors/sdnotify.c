/*
 * sd_notify for parleyd (see sdnotify.h). libsystemd does the protocol:
 * sd_notify() sends a datagram to $NOTIFY_SOCKET and does nothing without
 * it; sd_watchdog_enabled() reads $WATCHDOG_USEC (and $WATCHDOG_PID, which
 * must be ours when set).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "actors/sdnotify.h"
#include "runtime/log.h"
#include "runtime/rt.h"

void sdn_ready(const char *scheme, const char *host, int port,
	       unsigned shards)
{
	sd_notifyf(0, "READY=1\nSTATUS=listening on %s://%s:%d/ws (%u shards)\n"
		   "MAINPID=%lu", scheme, host, port, shards,
		   (unsigned long)getpid());
}

void sdn_stopping(int sig)
{
	sd_notifyf(0, "STOPPING=1\nSTATUS=%s: draining", strsignal(sig));
}

void sdn_reloading(void)
{
	struct timespec ts;

	/* systemd >= 253 wants MONOTONIC_USEC= with RELOADING=1 (for
	 * Type=notify-reload); older ones ignore it */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
		   (unsigned long long)ts.tv_sec * 1000000ull +
			   (unsigned long long)ts.tv_nsec / 1000);
}

void sdn_reloaded(void) { sd_notify(0, "READY=1"); }

/* Whether every shard began a loop turn within the last max_us; says which
 * one did not. */
static bool shards_alive(uint64_t max_us)
{
	uint64_t now = rt_mono_us();
	bool ok = true;

	for (unsigned i = 0; i < rt_nshards(); i++) {
		uint64_t t = rt_shard_last_turn_us(i);

		if (t && now > t && now - t > max_us) {
			plog(PL_WARN, "watchdog", "shard %u has not turned its "
			     "loop for %llu ms: no watchdog ping", i,
			     (unsigned long long)(now - t) / 1000);
			ok = false;
		}
	}
	return ok;
}

int sdn_wait(const sigset_t *set)
{
	uint64_t usec = 0, every, next;
	int sig;

	if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) {
		while (sigwait(set, &sig)) /* only fails on a bad set */
			;
		return sig;
	}
	/* A ping every quarter of the interval; a shard counts as wedged
	 * when its loop has not turned for half of it (its tick comes every
	 * 100 ms). */
	every = usec / 4;
	plog(PL_INFO, "watchdog", "systemd watchdog every %llu ms: pinging "
	     "every %llu ms while the shards turn",
	     (unsigned long long)usec / 1000, (unsigned long long)every / 1000);
	next = rt_mono_us();
	for (;;) {
		uint64_t now = rt_mono_us();
		struct timespec ts;

		if (now >= next) {
			if (shards_alive(usec / 2))
				sd_notify(0, "WATCHDOG=1");
			next = now + every;
		}
		ts.tv_sec = (time_t)((next - now) / 1000000);
		ts.tv_nsec = (long)((next - now) % 1000000) * 1000;
		sig = sigtimedwait(set, NULL, &ts);
		if (sig > 0)
			return sig;
		/* EAGAIN: time to ping; EINTR: a handled signal, go on */
	}
}
