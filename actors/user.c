/*
 * user: one actor per connected user, on the shard its (workspace, user)
 * hashes to. It is the one place that sees all of a user's devices.
 *
 * Accepts:
 *   M_ATTACH     a device authenticated: admit it (at most max_devices,
 *                else the session closes it with 4029)
 *   M_DETACH     a device went away (the actor goes when the last one does)
 *   M_REQ        every state-changing request of the user passes here on
 *                its way to the channel actor: one hop keeps a device's
 *                requests in order, and `send` is rate limited here, per
 *                user across all devices (token bucket)
 *   M_USER_CHAN  a channel changed this user's membership (or read
 *                marker): tell every device (M_CONN_CHAN)
 */
#include <stdlib.h>
#include <string.h>

#include "actors/actors.h"

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

static size_t make_key(char *k, const char *ws, const char *user)
{
	size_t a = strlen(ws), b = strlen(user);

	memcpy(k, ws, a);
	k[a] = 0;
	memcpy(k + a + 1, user, b);
	return a + 1 + b;
}

static struct user *user_get(struct shard_state *ss, const char *ws,
			     const char *user, bool create)
{
	char k[2 * ID_CAP];
	size_t kl = make_key(k, ws, user);
	struct user *u = smap_get(&ss->users, k, kl);

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
	if (r->ok)
		u->dev[u->ndev++] = m->conn;
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
			break;
		}
	}
	if (!u->ndev) {
		smap_del(&ss->users, u->key, u->klen);
		free(u->dev);
		free(u);
	}
}

/* true when a send may go; else *retry_ms says when one may */
static bool rate_take(struct user *u, uint64_t *retry_ms)
{
	uint64_t now = rt_now_ms();
	double rate = srv.lim.rate_per_s;

	if (now > u->refill_ms) {
		u->tokens += (double)(now - u->refill_ms) * rate / 1000.0;
		if (u->tokens > srv.lim.rate_burst)
			u->tokens = srv.lim.rate_burst;
		u->refill_ms = now;
	}
	if (u->tokens >= 1.0) {
		u->tokens -= 1.0;
		return true;
	}
	*retry_ms = (uint64_t)((1.0 - u->tokens) * 1000.0 / rate) + 1;
	return false;
}

void user_on_req(struct shard_state *ss, struct m_req *m)
{
	struct user *u = user_get(ss, m->ws, m->user, false);
	uint64_t retry_ms;

	if (m->op == OP_SEND && u && !rate_take(u, &retry_ms)) {
		ss->rate_limited++;
		reply_err_remote(m, "RATE_LIMITED", "send rate exceeded",
				 retry_ms);
		free(m);
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
