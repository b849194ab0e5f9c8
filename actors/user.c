/*
 * user: one actor per connected user (or REST sender), on the shard its (workspace, user)
 * hashes to. It is the one place that sees all of a user's devices.
 *
 * Accepts:
 *   M_ATTACH     a device authenticated: admit it (at most max_devices,
 *                else the session closes it with 4029)
 *   M_DETACH     a device went away (the actor goes when the last one does)
 *   M_REQ        every state-changing request of the user passes here on
 *                its way to the channel actor: one hop keeps a device's
 *                requests in order, and `send`, `edit`, `delete` and
 *                `react` are rate limited here, per user across all
 *                devices and REST (one token bucket); presence.set stops
 *                here, at the user's presence actor
 *   M_USER_CHAN  a channel changed this user's membership (or read
 *                marker): tell every device (M_CONN_CHAN)
 */
#include <stdlib.h>
#include <string.h>

#include "actors/actors.h"
#include "actors/notify.h"

/* One per connected user: kept small, since an idle server holds one for
 * every user online (the devices array grows with the devices). */
struct user {
	rt_conn_id *dev;
	uint32_t ndev, capdev;
	double tokens;      /* send rate bucket */
	uint64_t refill_ms;
	uint32_t klen;
	char key[];         /* ws \0 user */
};


static struct user *user_get(struct shard_state *ss, const char *ws,
			     const char *user, bool create)
{
	char k[2 * ID_CAP];
	size_t kl = pair_key(k, ws, user);
	struct user *u;

	ASSERT_USER_HERE(ss, ws, user);
	u = smap_get(&ss->users, k, kl);

	if (u || !create)
		return u;
	u = calloc(1, sizeof(*u) + kl);
	memcpy(u->key, k, kl);
	u->klen = (uint32_t)kl;
	u->tokens = srv.lim.rate_burst;
	u->refill_ms = rt_now_ms();
	smap_put(&ss->users, u->key, u->klen, u);
	return u;
}

static void user_free(struct shard_state *ss, struct user *u)
{
	smap_del(&ss->users, u->key, u->klen);
	free(u->dev);
	free(u);
}

static void refill(struct user *u, uint64_t now)
{
	if (now > u->refill_ms) {
		u->tokens += (double)(now - u->refill_ms) * srv.lim.rate_per_s /
			     1000.0;
		if (u->tokens > srv.lim.rate_burst)
			u->tokens = srv.lim.rate_burst;
		u->refill_ms = now;
	}
}

/* A user with no device stays only while its bucket is not full again
 * (so closing every connection, or using REST, cannot reset the rate). */
void user_tick(struct shard_state *ss, uint64_t now)
{
	struct user **gone = NULL;
	uint32_t n = 0, cap = 0;

	if (now < ss->user_next_sweep)
		return;
	ss->user_next_sweep = now + 1000;
	smap_foreach(&ss->users, it) {
		struct user *u = it->val;

		if (u->ndev)
			continue;
		refill(u, now);
		if (u->tokens < srv.lim.rate_burst)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			gone = realloc(gone, cap * sizeof(*gone));
		}
		gone[n++] = u;
	}
	for (uint32_t i = 0; i < n; i++)
		user_free(ss, gone[i]);
	free(gone);
}

void user_on_attach(struct shard_state *ss, struct m_attach *m)
{
	struct user *u = user_get(ss, m->ws, m->user, true);
	struct m_attach *r = msg_new(sizeof(*r), M_ATTACH_RES);

	*r = *m;
	r->h.type = M_ATTACH_RES;
	r->ok = u->ndev < srv.lim.max_devices;
	if (r->ok && u->ndev == u->capdev) {
		u->capdev = u->capdev ? 2 * u->capdev : 1;
		u->dev = realloc(u->dev, u->capdev * sizeof(*u->dev));
	}
	if (r->ok) {
		u->dev[u->ndev++] = m->conn;
		presence_on_device(ss, m->ws, m->user, m->conn, true);
	}
	rt_post(rt_conn_shard(m->conn), &r->h);
}

void user_on_detach(struct shard_state *ss, struct m_attach *m)
{
	struct user *u = user_get(ss, m->ws, m->user, false);

	if (!u)
		return;
	for (uint32_t i = 0; i < u->ndev; i++) {
		if (u->dev[i] == m->conn) {
			u->dev[i] = u->dev[--u->ndev];
			presence_on_device(ss, m->ws, m->user, m->conn, false);
			break;
		}
	}
	if (!u->ndev && u->tokens >= srv.lim.rate_burst)
		user_free(ss, u);
}

/* true when a send may go; else *retry_ms says when one may */
static bool rate_take(struct user *u, uint64_t *retry_ms)
{
	double rate = srv.lim.rate_per_s, wait;

	refill(u, rt_now_ms());
	/* within rounding of a whole token is one: a client that waited the
	 * retry_ms it was told is not refused again for a last ULP */
	if (u->tokens >= 1.0 - 1e-9) {
		u->tokens = u->tokens > 1.0 ? u->tokens - 1.0 : 0.0;
		return true;
	}
	wait = (1.0 - u->tokens) * 1000.0 / rate;
	*retry_ms = (uint64_t)wait; /* rounded up, and at least 1 */
	if ((double)*retry_ms < wait || !*retry_ms)
		(*retry_ms)++;
	return false;
}

void user_on_req(struct shard_state *ss, struct m_req *m)
{
	bool limited = m->op == OP_SEND || m->op == OP_EDIT ||
		       m->op == OP_DELETE || m->op == OP_REACT;
	struct user *u = user_get(ss, m->ws, m->user, limited);
	uint64_t retry_ms;

	if (m->op == OP_PRESENCE_SET) {
		presence_on_set(ss, m);
		free(m);
		return;
	}
	if (pushers_is_op(m->op)) { /* the user's own records */
		pushers_on_req(ss, m);
		free(m);
		return;
	}
	if (limited && !rate_take(u, &retry_ms)) {
		RT_STAT_ADD(ss->rate_limited, 1);
		reply_err_remote(m, "RATE_LIMITED", "send rate exceeded",
				 retry_ms);
		free(m);
		return;
	}
	if (m->op == OP_CH_CREATE) { /* its name first (chan_admin.c) */
		names_create(ss, m);
		return;
	}
	m->stage = 1;
	rt_post(chan_shard(m->ch), &m->h);
}

void user_on_chan(struct shard_state *ss, struct m_user_chan *m)
{
	struct user *u = user_get(ss, m->ws, m->user, false);

	if (!u)
		return; /* no device online: it learns at its next hello */
	for (uint32_t i = 0; i < u->ndev; i++) {
		struct m_user_chan *d = msg_new(sizeof(*d), M_CONN_CHAN);

		*d = *m;
		d->h.type = M_CONN_CHAN;
		d->conn = u->dev[i];
		if (d->frame)
			rt_buf_ref(d->frame, 1);
		rt_post(rt_conn_shard(d->conn), &d->h);
	}
}
