/*
 * cluster_presence: a user's presence across the hosts of a cluster
 * (docs/cluster.md, "Presence").
 *
 * Each host's presence actor knows the devices of its own host. What it
 * says about them to the other hosts is one level per user: 0 no device
 * here, 1 devices here but all silent (away), 2 a device that beat within
 * away_ms. A host tells every host when a user's level here changes, and
 * again every PRESENCE_EVERY_MS for every user it has a device of (so a
 * host that starts late learns, and a host that died is forgotten: its
 * levels expire after PRESENCE_TTL_MS). Every host's presence actor then
 * derives what its own watchers see from its own level and the others'
 * (presence.c: derived), so every watcher, on any host, sees one state.
 *
 * The status a user chose (presence.set) is stored by the owner of the
 * user's partition, which also tells every host (PCHOSEN).
 *
 * Threads: cluster_presence_local, cluster_presence_remote and
 * cluster_presence_chosen from shards; the rest from cluster.c's NATS
 * callbacks and ownership thread. One mutex guards both tables.
 */
#include <endian.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "actors/actors.h"
#include "actors/cluster.h"
#include "actors/cluster_core.h"
#include "actors/cluster_log.h"
#include "actors/cluster_wire.h"
#include "actors/smap.h"
#include "runtime/log.h"

#define PRESENCE_EVERY_MS 2000
#define PRESENCE_TTL_MS (3 * PRESENCE_EVERY_MS + 1000)
#define RP_HOSTS 16

/* This host's level of a user (0 entries are removed once told). */
struct lp {
	uint8_t level;
	uint32_t klen;
	char key[]; /* ws \0 user */
};

/* The other hosts' levels of a user. */
struct rp {
	struct {
		char host[BUS_HOST_MAX + 1];
		uint8_t level;
		uint64_t exp_ms;
	} h[RP_HOSTS];
	uint32_t n;
	uint32_t klen;
	char key[];
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static smap local_tab, remote_tab;
static void (*on_remote)(struct shard_state *ss, const char *ws,
			 const char *user, int chosen);

void cluster_presence_hook(void (*fn)(struct shard_state *ss, const char *ws,
				      const char *user, int chosen))
{
	on_remote = fn;
}

/* ---- messages ---------------------------------------------------------------- */

/* PRESENCE: u8 5, str host, u32 n, n x (str ws, str user, u8 level) */
static void start_msg(struct wbuf *w)
{
	char self[BUS_HOST_MAX + 1];
	uint8_t t = CLUSTER_MSG_PRESENCE;
	uint32_t zero = 0;

	cluster_self(self);
	w->n = 0;
	w_raw(w, &t, 1);
	w_strn(w, self, strlen(self));
	w_raw(w, &zero, 4); /* the count, patched by send_msg */
}

static void add_entry(struct wbuf *w, const char *key, size_t klen,
		      uint8_t level)
{
	size_t wl = strlen(key);

	w_strn(w, key, wl);
	w_strn(w, key + wl + 1, klen - wl - 1);
	w_raw(w, &level, 1);
}

static void send_msg(struct wbuf *w, uint32_t n)
{
	char self[BUS_HOST_MAX + 1];
	size_t at;

	cluster_self(self);
	at = 1 + 2 + strlen(self);
	n = htole32(n);
	memcpy(w->p + at, &n, 4);
	cluster_broadcast(w->p, w->n);
}

/* ---- this host's levels ------------------------------------------------------ */

void cluster_presence_local(const char *ws, const char *user, uint8_t level)
{
	char k[2 * ID_CAP];
	size_t kl;
	struct lp *e;
	struct wbuf w = { 0 };

	if (!cluster_on)
		return;
	kl = pair_key(k, ws, user);
	pthread_mutex_lock(&mu);
	e = smap_get(&local_tab, k, kl);
	if (e && e->level == level) {
		pthread_mutex_unlock(&mu);
		return;
	}
	if (!e && !level) {
		pthread_mutex_unlock(&mu);
		return;
	}
	if (!e) {
		e = calloc(1, sizeof(*e) + kl);
		if (!e)
			abort();
		memcpy(e->key, k, kl);
		e->klen = (uint32_t)kl;
		smap_put(&local_tab, e->key, e->klen, e);
	}
	e->level = level;
	if (!level) {
		smap_del(&local_tab, e->key, e->klen);
		free(e);
	}
	pthread_mutex_unlock(&mu);
	start_msg(&w);
	add_entry(&w, k, kl, level);
	send_msg(&w, 1);
	free(w.p);
}

/* Every PRESENCE_EVERY_MS (the ownership thread): every user with a
 * device here, again, in messages of up to 2000 users. */
void cluster_presence_refresh(void)
{
	struct wbuf w = { 0 };
	uint32_t n = 0;

	start_msg(&w);
	pthread_mutex_lock(&mu);
	smap_foreach(&local_tab, it) {
		struct lp *e = it->val;

		add_entry(&w, e->key, e->klen, e->level);
		if (++n == 2000) {
			send_msg(&w, n);
			start_msg(&w);
			n = 0;
		}
	}
	pthread_mutex_unlock(&mu);
	if (n)
		send_msg(&w, n);
	free(w.p);
}

/* ---- the other hosts' levels --------------------------------------------------- */

uint8_t cluster_presence_remote(const char *ws, const char *user)
{
	char k[2 * ID_CAP];
	size_t kl;
	struct rp *e;
	uint8_t lvl = 0;
	uint64_t now = rt_now_ms();

	if (!cluster_on)
		return 0;
	kl = pair_key(k, ws, user);
	pthread_mutex_lock(&mu);
	e = smap_get(&remote_tab, k, kl);
	for (uint32_t i = 0; e && i < e->n; i++)
		if (e->h[i].exp_ms > now && e->h[i].level > lvl)
			lvl = e->h[i].level;
	pthread_mutex_unlock(&mu);
	return lvl;
}

struct reeval {
	char ws[ID_CAP], user[ID_CAP];
	int chosen;
};

static void reeval_on_shard(struct shard_state *ss, struct m_call *m)
{
	struct reeval *r = m->arg;

	if (on_remote)
		on_remote(ss, r->ws, r->user, r->chosen);
	free(r);
	free(m);
}

static void post_reeval(const char *ws, size_t wl, const char *user,
			size_t ul, int chosen)
{
	struct reeval *r = calloc(1, sizeof(*r));
	struct m_call *m;

	if (!r)
		abort();
	memcpy(r->ws, ws, wl);
	memcpy(r->user, user, ul);
	r->chosen = chosen;
	m = msg_new(sizeof(*m), M_CALL);
	m->fn = reeval_on_shard;
	m->arg = r;
	rt_post(user_shard(r->ws, r->user), &m->h);
}

/* A PRESENCE message from another host (its body after the type). */
void cluster_presence_on_msg(const uint8_t *p, const uint8_t *end)
{
	char host[BUS_HOST_MAX + 1], self[BUS_HOST_MAX + 1];
	uint16_t l;
	uint32_t n;
	uint64_t exp = rt_now_ms() + PRESENCE_TTL_MS;

#define NEED(x) do { if ((size_t)(end - p) < (size_t)(x)) return; } while (0)
	NEED(2);
	memcpy(&l, p, 2);
	l = le16toh(l);
	p += 2;
	NEED(l);
	if (l > BUS_HOST_MAX)
		return;
	memcpy(host, p, l);
	host[l] = 0;
	p += l;
	cluster_self(self);
	if (!strcmp(host, self))
		return; /* our own broadcast */
	NEED(4);
	memcpy(&n, p, 4);
	n = le32toh(n);
	p += 4;
	for (uint32_t i = 0; i < n; i++) {
		const char *ws, *user;
		uint16_t wl, ul;
		uint8_t level;
		char k[2 * ID_CAP];
		size_t kl;
		struct rp *e;
		bool changed = false;
		uint32_t j;

		NEED(2);
		memcpy(&wl, p, 2);
		wl = le16toh(wl);
		p += 2;
		NEED(wl);
		ws = (const char *)p;
		p += wl;
		NEED(2);
		memcpy(&ul, p, 2);
		ul = le16toh(ul);
		p += 2;
		NEED(ul + 1);
		user = (const char *)p;
		p += ul;
		level = *p++;
		if (!wl || !ul || wl >= ID_CAP || ul >= ID_CAP || level > 2)
			return;
		memcpy(k, ws, wl);
		k[wl] = 0;
		memcpy(k + wl + 1, user, ul);
		kl = wl + 1 + ul;
		pthread_mutex_lock(&mu);
		e = smap_get(&remote_tab, k, kl);
		if (!e && level) {
			e = calloc(1, sizeof(*e) + kl);
			if (!e)
				abort();
			memcpy(e->key, k, kl);
			e->klen = (uint32_t)kl;
			smap_put(&remote_tab, e->key, e->klen, e);
		}
		for (j = 0; e && j < e->n; j++)
			if (!strcmp(e->h[j].host, host))
				break;
		if (e && j == e->n && level && e->n < RP_HOSTS) {
			snprintf(e->h[e->n].host, sizeof(e->h[0].host), "%s",
				 host);
			e->h[e->n++].level = 0;
		}
		if (e && j < e->n) {
			changed = e->h[j].level != level ||
				  e->h[j].exp_ms <= rt_now_ms();
			e->h[j].level = level;
			e->h[j].exp_ms = exp;
		}
		pthread_mutex_unlock(&mu);
		if (changed)
			post_reeval(ws, wl, user, ul, -1);
	}
#undef NEED
}

/* Levels not refreshed in time (their host died): gone, and the users'
 * actors told (the ownership thread, every round). */
void cluster_presence_sweep(void)
{
	uint64_t now = rt_now_ms();
	struct gone {
		char key[2 * ID_CAP];
		size_t klen;
		struct rp *dead; /* out of the table: free it */
	} *gone = NULL;
	uint32_t ngone = 0, cap = 0;

	pthread_mutex_lock(&mu);
	smap_foreach(&remote_tab, it) {
		struct rp *e = it->val;
		bool live = false, expired = false;

		for (uint32_t j = 0; j < e->n; j++) {
			if (e->h[j].level && e->h[j].exp_ms <= now) {
				e->h[j].level = 0;
				expired = true;
			}
			live |= e->h[j].level != 0;
		}
		if (!expired && live)
			continue;
		if (ngone == cap) {
			cap = cap ? 2 * cap : 16;
			gone = realloc(gone, cap * sizeof(*gone));
			if (!gone)
				abort();
		}
		memcpy(gone[ngone].key, e->key, e->klen);
		gone[ngone].klen = e->klen;
		gone[ngone].dead = live ? NULL : e;
		ngone++;
	}
	for (uint32_t i = 0; i < ngone; i++)
		if (gone[i].dead)
			smap_del(&remote_tab, gone[i].dead->key,
				 gone[i].dead->klen);
	pthread_mutex_unlock(&mu);
	for (uint32_t i = 0; i < ngone; i++) {
		size_t wl = strlen(gone[i].key);

		post_reeval(gone[i].key, wl, gone[i].key + wl + 1,
			    gone[i].klen - wl - 1, -1);
		free(gone[i].dead);
	}
	free(gone);
}

/* ---- the chosen status ------------------------------------------------------------- */

/* PCHOSEN: u8 6, str ws, str user, u8 status */
void cluster_presence_chosen(const char *ws, const char *user, uint8_t chosen)
{
	struct wbuf w = { 0 };
	uint8_t t = CLUSTER_MSG_PCHOSEN;

	if (!cluster_on)
		return;
	w_raw(&w, &t, 1);
	w_strn(&w, ws, strlen(ws));
	w_strn(&w, user, strlen(user));
	w_raw(&w, &chosen, 1);
	cluster_broadcast(w.p, w.n);
	free(w.p);
}

void cluster_presence_on_chosen(const uint8_t *p, const uint8_t *end)
{
	uint16_t wl, ul;
	const char *ws, *user;

	if (end - p < 2)
		return;
	memcpy(&wl, p, 2);
	wl = le16toh(wl);
	p += 2;
	if (end - p < wl + 2 || !wl || wl >= ID_CAP)
		return;
	ws = (const char *)p;
	p += wl;
	memcpy(&ul, p, 2);
	ul = le16toh(ul);
	p += 2;
	if (end - p < ul + 1 || !ul || ul >= ID_CAP || *(p + ul) > PS_INVISIBLE)
		return;
	user = (const char *)p;
	post_reeval(ws, wl, user, ul, p[ul]);
}

void cluster_presence_free(void)
{
	pthread_mutex_lock(&mu);
	smap_foreach(&local_tab, it) free(it->val);
	smap_free(&local_tab);
	smap_foreach(&remote_tab, it) free(it->val);
	smap_free(&remote_tab);
	pthread_mutex_unlock(&mu);
}
