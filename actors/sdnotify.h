/*
 * systemd's notification protocol (Type=notify, see parleyd.service):
 * readiness, stopping, reloading and the watchdog. Everything here is a
 * no-op when parleyd was not started by systemd (no NOTIFY_SOCKET).
 * Called from server_run()'s main thread only.
 */
#ifndef PARLEY_SDNOTIFY_H
#define PARLEY_SDNOTIFY_H

#include <signal.h>

/* READY=1 with STATUS= (where it listens) and MAINPID=: the listeners are
 * bound and the shards started. */
void sdn_ready(const char *scheme, const char *host, int port,
	       unsigned shards);
/* Waits for one of the signals in set (blocked in every thread) and
 * returns it. Meanwhile, when systemd asked for a watchdog
 * (WatchdogSec=), sends WATCHDOG=1 every quarter of its interval, but
 * only while every shard keeps turning its loop: a wedged shard stops
 * the pings and systemd restarts the service. */
int sdn_wait(const sigset_t *set);
/* STOPPING=1: the drain begins (sig: the signal that asked for it). */
void sdn_stopping(int sig);
/* RELOADING=1 before a reload (SIGHUP), READY=1 after it. */
void sdn_reloading(void);
void sdn_reloaded(void);

#endif
