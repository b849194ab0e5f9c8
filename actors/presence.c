/*
 * presence: one actor per user, on the shard its (workspace, user) hashes
 * to, the same shard as its user actor. It knows the user's devices and
 * when each last sent a heartbeat, the status the user chose, and which
 * connections watch it; it tells only those ("lazy presence": a change is
 * never broadcast to the user's channels).
 *
 * Accepts:
 *   presence_on_device  the user actor admitted or lost a device
 *   M_HB                a device's heartbeat (via the session)
 *   M_REQ presence.set  the chosen status (kept in storage: a restart
 *                       must not show an invisible user online)
 *   M_WATCH             connections start or stop watching; answered with
 *                       the current states (M_WATCH_RES)
 *   tick                a device falls silent (away), a change falls due
 *
 * What watchers see is derived, as PROTOCOL.md says: no device -> offline;
 * invisible -> offline; a device that beat within away_ms -> the chosen
 * status (online, away, dnd); all devices silent -> away. A change is told
 * after a delay: grace_ms when it goes to offline (a reconnect within it
 * cancels the change, so watchers see no flap), coalesce_ms otherwise.
 * Changes that cancel out before they fall due are never told.
 *
 * The actor lives while the user has a device, a watcher, or a change
 * waiting to be told.
 */
#include <stdlib.h>
#include <string.h>

#include "actors/cluster.h"
#include "actors/cluster_log.h"
#include "actors/commit.h"
#include "actors/directory.h"

struct pdev {
	rt_conn_id conn;
	uint64_t beat_ms; /* last heartbeat (or attach) */
};

struct presence {
	struct pdev *dev;
	uint32_t ndev, capdev;
	rt_conn_id *w;      /* watching connections */
	uint32_t nw, capw;
	uint8_t chosen;     /* PS_ONLINE, PS_AWAY, PS_DND, PS_INVISIBLE */
	uint8_t shown;      /* what watchers were last told (or would be) */
	uint8_t next;       /* the change waiting, valid while waiting */
	uint64_t since;     /* when `shown` began */
	uint64_t next_since;
	uint64_t due_ms;    /* when `next` is to be told, if waiting */
	bool waiting;
	bool in_due;        /* on ss->pdue (then not freed) */
	uint64_t seen_ms;   /* last seen: latest hello or last device gone */
	uint8_t level_told; /* this host's level the cluster knows (0-2) */
	uint32_t klen;
	char key[];         /* ws \0 user */
};

static const char *user_of(const struct presence *p)
{
	return p->key + strlen(p->key) + 1;
}

static struct presence *p_get(struct shard_state *ss, const char *ws,
			      const char *user, bool create)
{
	char k[2 * ID_CAP];
	size_t kl = pair_key(k, ws, user);
	struct presence *p;
	store_presence sp = { .status = PS_ONLINE };

	ASSERT_USER_HERE(ss, ws, user);
	p = smap_get(&ss->presence, k, kl);
	if (p || !create)
		return p;
	p = calloc(1, sizeof(*p) + kl + 1);
	memcpy(p->key, k, kl);
	p->klen = (uint32_t)kl;
	if (store_get_presence(srv.st, ws, user, &sp) == 0 &&
	    sp.status >= PS_ONLINE && sp.status <= PS_INVISIBLE)
		p->chosen = sp.status;
	else
		p->chosen = PS_ONLINE;
	p->seen_ms = sp.seen_ms;
	p->shown = PS_OFFLINE;
	p->since = sp.seen_ms;
	smap_put(&ss->presence, p->key, p->klen, p);
	return p;
}

static void p_free_if_idle(struct shard_state *ss, struct presence *p)
{
	if (p->ndev || p->nw || p->waiting || p->in_due ||
	    cluster_presence_remote(p->key, user_of(p)))
		return;
	smap_del(&ss->presence, p->key, p->klen);
	free(p->dev);
	free(p->w);
	free(p);
}

/* This host's devices: 0 none, 1 all silent, 2 one beat within away_ms. */
static uint8_t local_level(const struct presence *p, uint64_t now)
{
	if (!p->ndev)
		return 0;
	for (uint32_t i = 0; i < p->ndev; i++)
		if (now - p->dev[i].beat_ms < srv.lim.away_ms)
			return 2;
	return 1;
}

/* The status watchers should see now: of the devices on every host of a
 * cluster (cluster_presence.c), this one's first. */
static uint8_t derived(const struct presence *p, uint64_t now)
{
	uint8_t lvl = local_level(p, now), r;

	if (lvl < 2 && (r = cluster_presence_remote(p->key, user_of(p))) > lvl)
		lvl = r;
	if (!lvl || p->chosen == PS_INVISIBLE)
		return PS_OFFLINE;
	return lvl == 2 ? p->chosen : PS_AWAY;
}

/* Tell every watcher: one frame, one message per shard with watchers. */
static void publish(struct shard_state *ss, struct presence *p)
{
	uint32_t per[RT_MAX_SHARDS] = { 0 };
	struct m_presence *m[RT_MAX_SHARDS] = { 0 };
	const char *user = user_of(p);
	rt_buf *b;

	if (!p->nw)
		return;
	proto_out_reset(&ss->out);
	proto_enc_presence(&ss->out, user, proto_pstatus_names[p->shown], p->since);
	b = rt_buf_new(ss->out.data, ss->out.len);
	for (uint32_t i = 0; i < p->nw; i++)
		per[rt_conn_shard(p->w[i])]++;
	for (uint32_t i = 0; i < p->nw; i++) {
		unsigned s = rt_conn_shard(p->w[i]);

		if (!m[s]) {
			m[s] = msg_new(sizeof(*m[s]) +
					       per[s] * sizeof(rt_conn_id),
				       M_PRESENCE);
			rt_buf_ref(b, 1);
			m[s]->buf = b;
			strcpy(m[s]->user, user);
			m[s]->status = p->shown;
			m[s]->since = p->since;
		}
		m[s]->conns[m[s]->n++] = p->w[i];
	}
	for (unsigned s = 0; s < rt_nshards(); s++)
		if (m[s])
			rt_post(s, &m[s]->h);
	rt_buf_unref(b);
}

/* The timer is set on a 10 ms grid: a change is told 0-10 ms after it
 * falls due, and a shard's timer fires at most 100 times a second however
 * many changes wait (each firing walks the list of those waiting). */
#define DUE_GRID_MS 10

static void timer_for(uint64_t due_ms, uint64_t now)
{
	uint64_t at = (due_ms + DUE_GRID_MS - 1) / DUE_GRID_MS * DUE_GRID_MS;

	rt_timer_in(rt_self(), at > now ? at - now : 0);
}

/* Something changed: schedule (or cancel) telling the watchers. The
 * shard's timer tells it when it falls due, not the next tick after, so a
 * change reaches watchers coalesce_ms (grace_ms) after it happened. */
static void reevaluate(struct shard_state *ss, struct presence *p,
		       uint64_t now)
{
	uint8_t st, lvl = local_level(p, now);

	if (lvl != p->level_told) { /* the other hosts' watchers too */
		cluster_presence_local(p->key, user_of(p), lvl);
		p->level_told = lvl;
	}
	st = derived(p, now);

	if (st == p->shown) {
		p->waiting = false; /* it came back before anyone was told */
		return;
	}
	if (p->waiting && p->next == st)
		return;
	p->waiting = true;
	p->next = st;
	p->next_since = now;
	p->due_ms = now + (st == PS_OFFLINE ? srv.lim.grace_ms
					    : srv.lim.coalesce_ms);
	if (!p->in_due) {
		if (ss->npdue == ss->cappdue) {
			ss->cappdue = ss->cappdue ? 2 * ss->cappdue : 64;
			ss->pdue = realloc(ss->pdue,
					   ss->cappdue * sizeof(*ss->pdue));
		}
		ss->pdue[ss->npdue++] = p;
		p->in_due = true;
	}
	timer_for(p->due_ms, now);
}

static void fire_if_due(struct shard_state *ss, struct presence *p,
			uint64_t now)
{
	if (!p->waiting || now < p->due_ms)
		return;
	p->waiting = false;
	p->shown = p->next;
	p->since = p->next_since;
	publish(ss, p);
	dir_note_status(p->key, user_of(p), p->shown);
}

/* A connected or departed user's last seen, in this host's store. In a
 * cluster only the partition's owner writes its store (the others' writes
 * would be outside the log); another host's last seen reaches the
 * directory's owner (dir_fx_seen), which keeps it. */
static void put_seen(struct shard_state *ss, const char *ws, const char *user,
		     const store_presence *sp)
{
	/* the commit's own test (the shard's view, which follows the
	 * partition's owner a moment later during a takeover) */
	if (!cluster_on || clog_owned(ss))
		store_put_presence(ss->batch, ws, user, sp);
}

void presence_on_device(struct shard_state *ss, const char *ws,
			const char *user, rt_conn_id conn, bool attach)
{
	struct presence *p = p_get(ss, ws, user, attach);
	uint64_t now = rt_now_ms();

	if (!p)
		return;
	if (attach) {
		if (p->ndev == p->capdev) {
			p->capdev = p->capdev ? 2 * p->capdev : 1;
			p->dev = realloc(p->dev, p->capdev * sizeof(*p->dev));
		}
		p->dev[p->ndev++] = (struct pdev){ conn, now };
		/* last seen of a connected user: its latest hello, written
		 * now so that a kill -9 while it is connected keeps it */
		store_presence sp = { .status = p->chosen, .seen_ms = now };

		p->seen_ms = now;
		put_seen(ss, ws, user, &sp);
		dir_fx_seen(ss, ws, user, now);
	} else {
		for (uint32_t i = 0; i < p->ndev; i++) {
			if (p->dev[i].conn == conn) {
				p->dev[i] = p->dev[--p->ndev];
				break;
			}
		}
		if (!p->ndev) {
			/* last seen: kept for watchers after a restart */
			store_presence sp = { .status = p->chosen,
					      .seen_ms = now };

			p->seen_ms = now;
			put_seen(ss, ws, user, &sp);
			dir_fx_seen(ss, ws, user, now);
		}
	}
	reevaluate(ss, p, now);
	fire_if_due(ss, p, now);
	p_free_if_idle(ss, p);
}

bool presence_probe(struct shard_state *ss, const char *ws, const char *user,
		    uint64_t now, bool *connected)
{
	struct presence *p = p_get(ss, ws, user, false);

	/* a device on another host of the cluster counts too */
	uint8_t r = cluster_presence_remote(ws, user);

	*connected = (p && p->ndev) || r > 0;
	if (r == 2)
		return true;
	if (!p)
		return false;
	for (uint32_t i = 0; i < p->ndev; i++)
		if (now - p->dev[i].beat_ms < srv.lim.away_ms)
			return true;
	return false;
}

void presence_on_hb(struct shard_state *ss, struct m_attach *m)
{
	struct presence *p = p_get(ss, m->ws, m->user, false);
	uint64_t now = rt_now_ms();

	if (!p)
		return;
	for (uint32_t i = 0; i < p->ndev; i++)
		if (p->dev[i].conn == m->conn)
			p->dev[i].beat_ms = now;
	reevaluate(ss, p, now);
	fire_if_due(ss, p, now);
}

void presence_on_set(struct shard_state *ss, struct m_req *m)
{
	struct presence *p = p_get(ss, m->ws, m->user, true);
	uint64_t now = rt_now_ms();
	store_presence sp = { .seen_ms = p->seen_ms };

	/* decoded and checked by the session: never offline */
	p->chosen = m->q.a.pset.status;
	cluster_presence_chosen(m->ws, m->user, p->chosen);
	sp.status = p->chosen;
	store_put_presence(ss->batch, m->ws, m->user, &sp);
	proto_out_reset(&ss->out);
	proto_enc_ok(&ss->out, m->rid);
	fx_reply(ss, NULL, m);
	reevaluate(ss, p, now);
	fire_if_due(ss, p, now);
	p_free_if_idle(ss, p);
}

static void watcher_del(struct presence *p, rt_conn_id conn)
{
	for (uint32_t i = 0; i < p->nw; i++) {
		if (p->w[i] == conn) {
			p->w[i] = p->w[--p->nw];
			return;
		}
	}
}

void presence_on_watch(struct shard_state *ss, struct m_watch *m)
{
	struct m_watch *res = NULL;
	uint32_t nrep = 0;

	for (uint32_t i = 0; i < m->n; i++)
		nrep += (m->e[i].flags & PW_REPORT) != 0;
	if (nrep) {
		res = msg_new(sizeof(*res) + nrep * sizeof(res->e[0]),
			      M_WATCH_RES);
		res->conn = m->conn;
		res->gen = m->gen;
		strcpy(res->ws, m->ws);
	}
	for (uint32_t i = 0; i < m->n; i++) {
		struct pw_ent *e = &m->e[i];
		struct presence *p = p_get(ss, m->ws, e->user,
					   (e->flags & PW_ADD) != 0);

		if (p && (e->flags & PW_DEL))
			watcher_del(p, m->conn);
		if (p && (e->flags & PW_ADD)) {
			watcher_del(p, m->conn); /* at most once */
			if (p->nw == p->capw) {
				p->capw = p->capw ? 2 * p->capw : 4;
				p->w = realloc(p->w, p->capw * sizeof(*p->w));
			}
			p->w[p->nw++] = m->conn;
		}
		if (e->flags & PW_REPORT) {
			struct pw_ent *r = &res->e[res->n++];

			strcpy(r->user, e->user);
			r->status = p ? p->shown : PS_OFFLINE;
			r->since = p ? p->since : 0;
		}
		if (p)
			p_free_if_idle(ss, p);
	}
	if (res)
		rt_post(rt_conn_shard(m->conn), &res->h);
}

void presence_on_timer(struct shard_state *ss, uint64_t now)
{
	uint64_t next = UINT64_MAX;
	uint32_t keep = 0, n = ss->npdue;

	for (uint32_t i = 0; i < n; i++) {
		struct presence *p = ss->pdue[i];

		fire_if_due(ss, p, now);
		if (p->waiting) {
			ss->pdue[keep++] = p;
			if (p->due_ms < next)
				next = p->due_ms;
			continue;
		}
		p->in_due = false;
		p_free_if_idle(ss, p);
	}
	ss->npdue = keep;
	if (keep)
		timer_for(next, now);
}

void presence_tick(struct shard_state *ss, uint64_t now)
{
	struct presence **idle = NULL;
	uint32_t nidle = 0, cap = 0;

	smap_foreach(&ss->presence, it) {
		struct presence *p = it->val;

		/* a device that fell silent turns the user away */
		if (p->ndev)
			reevaluate(ss, p, now);
		fire_if_due(ss, p, now);
		if (!p->ndev && !p->nw && !p->waiting) {
			if (nidle == cap) {
				cap = cap ? 2 * cap : 16;
				idle = realloc(idle, cap * sizeof(*idle));
			}
			idle[nidle++] = p;
		}
	}
	for (uint32_t i = 0; i < nidle; i++)
		p_free_if_idle(ss, idle[i]);
	free(idle);
}

void presence_on_remote(struct shard_state *ss, const char *ws,
			const char *user, int chosen)
{
	struct presence *p = p_get(ss, ws, user,
				   cluster_presence_remote(ws, user) > 0);
	uint64_t now = rt_now_ms();

	if (!p)
		return;
	if (chosen >= 0)
		p->chosen = (uint8_t)chosen;
	reevaluate(ss, p, now);
	fire_if_due(ss, p, now);
	p_free_if_idle(ss, p);
}
