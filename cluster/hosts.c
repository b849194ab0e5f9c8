/*
 * cluster/hosts.c: see hosts.h.
 */
#include "cluster/hosts.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/hash.h"
#include "runtime/log.h"

#define LEASE_PREFIX "host:"

struct hosts {
	bus *b;
	char id[BUS_HOST_MAX + 1];
	char key[BUS_KEY_MAX + 1];
	int64_t lease_ms;
	uint64_t rev;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stopping;
	/* under mu */
	char live[HOSTS_MAX][BUS_HOST_MAX + 1];
	unsigned nlive;
	/* hosts_add's, kept one lease whatever a listing says (one begun
	 * before their lease was written may finish after) */
	struct added {
		char id[BUS_HOST_MAX + 1];
		int64_t at_ms;
	} added[HOSTS_MAX];
	unsigned nadded;
	int64_t renewed_ms; /* monotonic, start of the last good renewal */
	uint64_t renew_failed, lost;
};

static int64_t mono_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int cmp_id(const void *a, const void *b)
{
	return strcmp(a, b);
}

struct listing {
	char ids[HOSTS_MAX][BUS_HOST_MAX + 1];
	unsigned n;
};

static void on_host(void *arg, const char *key, const char *owner)
{
	struct listing *l = arg;

	/* the key names the host; its value is who holds it: the same */
	if (strcmp(key + strlen(LEASE_PREFIX), owner) || l->n == HOSTS_MAX)
		return;
	snprintf(l->ids[l->n++], BUS_HOST_MAX + 1, "%s", owner);
}

static bool listed(char ids[][BUS_HOST_MAX + 1], unsigned n, const char *id)
{
	for (unsigned i = 0; i < n; i++)
		if (!strcmp(ids[i], id))
			return true;
	return false;
}

/* Lists the live hosts into h (unchanged when the bus is unavailable). */
static void relist(hosts *h)
{
	struct listing *l = calloc(1, sizeof(*l));
	int64_t now = mono_ms();

	if (!l)
		return;
	if (bus_lease_list(h->b, LEASE_PREFIX, on_host, l) == BUS_OK) {
		pthread_mutex_lock(&h->mu);
		for (unsigned i = 0; i < h->nadded; i++) {
			struct added *a = &h->added[i];

			if (now - a->at_ms >= h->lease_ms) {
				*a-- = h->added[--h->nadded];
				continue;
			}
			if (l->n < HOSTS_MAX && !listed(l->ids, l->n, a->id))
				memcpy(l->ids[l->n++], a->id, BUS_HOST_MAX + 1);
		}
		qsort(l->ids, l->n, sizeof(l->ids[0]), cmp_id);
		memcpy(h->live, l->ids, sizeof(l->ids));
		h->nlive = l->n;
		pthread_mutex_unlock(&h->mu);
	}
	free(l);
}

/* Renews every lease_ms / 3; a lost lease is taken again (this host is
 * alive: it only missed renewals, e.g. while NATS elected a leader). */
static void *renewer(void *arg)
{
	hosts *h = arg;

	pthread_mutex_lock(&h->mu);
	while (!h->stopping) {
		struct timespec until;
		int64_t t0;
		uint64_t rev = h->rev, nrev = 0;
		bus_status st;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += h->lease_ms / 3 / 1000;
		until.tv_nsec += (h->lease_ms / 3 % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&h->cv, &h->mu, &until);
		if (h->stopping)
			break;
		pthread_mutex_unlock(&h->mu);
		t0 = mono_ms();
		st = bus_lease_renew(h->b, h->key, rev, &nrev);
		if (st == BUS_LOST) {
			char owner[BUS_HOST_MAX + 1];

			plog(PL_WARN, "cluster", "host lease %s lost; taking it "
			     "again", h->key);
			st = bus_lease_acquire(h->b, h->key, &nrev, owner,
					       sizeof(owner));
			if (st == BUS_TAKEN)
				plog(PL_ERROR, "cluster", "host lease %s taken "
				     "by another process: %s", h->key, owner);
			pthread_mutex_lock(&h->mu);
			h->lost++;
			pthread_mutex_unlock(&h->mu);
		}
		relist(h);
		pthread_mutex_lock(&h->mu);
		if (st == BUS_OK) {
			h->rev = nrev;
			h->renewed_ms = t0;
		} else {
			h->renew_failed++;
		}
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

int hosts_start(hosts **out, bus *b, const char *id, int64_t lease_ms,
		char *err, size_t cap)
{
	hosts *h = calloc(1, sizeof(*h));
	char owner[BUS_HOST_MAX + 1] = "";
	int64_t t0 = mono_ms();
	bus_status st;

	if (!h) {
		snprintf(err, cap, "out of memory");
		return -1;
	}
	h->b = b;
	h->lease_ms = lease_ms;
	snprintf(h->id, sizeof(h->id), "%s", id);
	snprintf(h->key, sizeof(h->key), LEASE_PREFIX "%s", id);
	st = bus_lease_acquire(b, h->key, &h->rev, owner, sizeof(owner));
	if (st != BUS_OK) {
		snprintf(err, cap, "host lease %s: %s%s%s", h->key,
			 bus_status_str(st), *owner ? " by " : "", owner);
		free(h);
		return -1;
	}
	h->renewed_ms = t0;
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	relist(h);
	if (pthread_create(&h->thread, NULL, renewer, h)) {
		snprintf(err, cap, "cannot start the lease thread");
		bus_lease_release(b, h->key, h->rev);
		free(h);
		return -1;
	}
	*out = h;
	return 0;
}

void hosts_stop(hosts *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->mu);
	h->stopping = true;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mu);
	pthread_join(h->thread, NULL);
	bus_lease_release(h->b, h->key, h->rev);
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
	free(h);
}

unsigned hosts_live(hosts *h, char ids[][BUS_HOST_MAX + 1], unsigned max)
{
	unsigned n;

	pthread_mutex_lock(&h->mu);
	n = h->nlive;
	for (unsigned i = 0; i < n && i < max; i++)
		memcpy(ids[i], h->live[i], BUS_HOST_MAX + 1);
	pthread_mutex_unlock(&h->mu);
	return n;
}

void hosts_add(hosts *h, const char *id)
{
	int64_t now = mono_ms();
	unsigned i;

	pthread_mutex_lock(&h->mu);
	for (i = 0; i < h->nadded && strcmp(h->added[i].id, id); i++)
		;
	if (i < HOSTS_MAX) {
		snprintf(h->added[i].id, BUS_HOST_MAX + 1, "%s", id);
		h->added[i].at_ms = now;
		if (i == h->nadded)
			h->nadded++;
	}
	if (h->nlive < HOSTS_MAX && !listed(h->live, h->nlive, id)) {
		snprintf(h->live[h->nlive++], BUS_HOST_MAX + 1, "%s", id);
		qsort(h->live, h->nlive, sizeof(h->live[0]), cmp_id);
	}
	pthread_mutex_unlock(&h->mu);
}

bool hosts_lease_ok(hosts *h)
{
	bool ok;

	pthread_mutex_lock(&h->mu);
	ok = mono_ms() - h->renewed_ms < h->lease_ms - h->lease_ms / 4;
	pthread_mutex_unlock(&h->mu);
	return ok;
}

bool hosts_preferred(hosts *h, const char *key, char *out)
{
	uint64_t best = 0;
	bool any = false;

	pthread_mutex_lock(&h->mu);
	for (unsigned i = 0; i < h->nlive; i++) {
		uint64_t w = rt_fnv1a_str(rt_fnv1a_str(RT_FNV_OFFSET, key),
					  h->live[i]);

		/* FNV's last steps mix poorly: finish with a multiply-shift */
		w ^= w >> 33;
		w *= 0xff51afd7ed558ccdull;
		w ^= w >> 33;
		if (!any || w > best) {
			best = w;
			memcpy(out, h->live[i], BUS_HOST_MAX + 1);
			any = true;
		}
	}
	pthread_mutex_unlock(&h->mu);
	return any;
}

void hosts_counters(hosts *h, uint64_t *renew_failed, uint64_t *lost)
{
	pthread_mutex_lock(&h->mu);
	*renew_failed = h->renew_failed;
	*lost = h->lost;
	pthread_mutex_unlock(&h->mu);
}
