/*
 * sess_watch: presence.watch, the users a connection watches: the watched
 * set, told to the users' presence actors (M_WATCH), their answers
 * gathered (M_WATCH_RES) and the changes after (M_PRESENCE). Also the
 * connection's count of searches in flight.
 */
#include <stdlib.h>
#include <string.h>

#include "actors/session.h"

/* ---- presence: what this connection watches ------------------------------ */

static int cmp_id(const void *a, const void *b)
{
	return strcmp(a, b);
}

static bool watching(const struct session *se, const char *user)
{
	return se->nwatch &&
	       bsearch(user, se->watch, se->nwatch, ID_CAP, cmp_id) != NULL;
}

/* Replace the watched set with users[n] (sorted, no duplicates; taken
 * over). Tells the presence shards what changed; with gen != 0 each shard
 * that holds one of the users also reports their states (M_WATCH_RES).
 * Returns how many shards will answer. */
uint32_t sess_watch_set(struct session *se, char (*users)[ID_CAP],
			  uint32_t n, uint64_t gen)
{
	uint32_t per[RT_MAX_SHARDS] = { 0 }, answering = 0;
	struct m_watch *m[RT_MAX_SHARDS] = { 0 };
	unsigned *home_new = calloc(n + 1, sizeof(unsigned));
	unsigned *home_old = calloc(se->nwatch + 1, sizeof(unsigned));
	uint32_t i = 0, j = 0;

	for (i = 0; i < n; i++)
		per[home_new[i] = user_shard(se->ws, users[i])]++;
	for (j = 0; j < se->nwatch; j++)
		per[home_old[j] = user_shard(se->ws, se->watch[j])]++;
	for (unsigned s = 0; s < rt_nshards(); s++) {
		if (!per[s])
			continue;
		m[s] = msg_new(sizeof(*m[s]) + per[s] * sizeof(m[s]->e[0]),
			       M_WATCH);
		m[s]->conn = se->id;
		m[s]->gen = gen;
		strcpy(m[s]->ws, se->ws);
	}
	/* merge the two sorted sets */
	i = j = 0;
	while (i < n || j < se->nwatch) {
		int c = i == n ? 1 : j == se->nwatch ? -1
			: strcmp(users[i], se->watch[j]);
		struct pw_ent *e;

		if (c <= 0) {
			e = &m[home_new[i]]->e[m[home_new[i]]->n++];
			strcpy(e->user, users[i]);
			e->flags = (c < 0 ? PW_ADD : 0) | (gen ? PW_REPORT : 0);
			i++;
			j += c == 0;
		} else {
			e = &m[home_old[j]]->e[m[home_old[j]]->n++];
			strcpy(e->user, se->watch[j]);
			e->flags = PW_DEL;
			j++;
		}
	}
	for (unsigned s = 0; s < rt_nshards(); s++) {
		bool reports = false;

		if (!m[s])
			continue;
		for (uint32_t k = 0; k < m[s]->n && !reports; k++)
			reports = (m[s]->e[k].flags & PW_REPORT) != 0;
		answering += reports;
		if (m[s]->n)
			rt_post(s, &m[s]->h);
		else
			free(m[s]);
	}
	free(home_new);
	free(home_old);
	free(se->watch);
	se->watch = users;
	se->nwatch = n;
	return answering;
}

static void gather_answer(struct shard_state *ss, struct session *se,
			  struct gather *g)
{
	proto_pstate *v;

	if (!g->has_rid)
		return;
	v = malloc((g->n + 1) * sizeof(*v));
	for (uint32_t i = 0; i < g->n; i++)
		v[i] = (proto_pstate){ g->e[i].user, g->e[i].status,
				       g->e[i].since };
	proto_out_reset(&ss->out);
	proto_enc_presence_watch_ok(&ss->out, g->rid, v, g->n);
	rt_conn_send_bytes(se->conn, ss->out.data, ss->out.len);
	free(v);
}

void sess_on_watch_res(struct shard_state *ss, struct m_watch *m)
{
	struct session *se = find_sess(rt_self(), m->conn);
	struct gather *g, **pg;

	if (!se)
		return;
	for (pg = &se->gathers; (g = *pg) && g->gen != m->gen; pg = &g->next)
		;
	if (!g)
		return;
	for (uint32_t i = 0; i < m->n; i++) {
		struct pw_ent *e = bsearch(m->e[i].user, g->e, g->n,
					   sizeof(*g->e), cmp_id);

		if (e) {
			e->status = m->e[i].status;
			e->since = m->e[i].since;
			e->flags = 1; /* answered */
		}
	}
	if (--g->shards_left)
		return;
	*pg = g->next;
	gather_answer(ss, se, g);
	free(g->e);
	free(g);
}

void sess_search_done(rt_conn_id conn)
{
	struct session *se = find_sess(rt_self(), conn);

	if (se && se->searching)
		se->searching--;
}

void sess_on_presence(struct shard_state *ss, struct m_presence *m)
{
	for (uint32_t i = 0; i < m->n; i++) {
		struct session *se = find_sess(rt_self(), m->conns[i]);
		bool held = false;

		if (!se || !watching(se, m->user))
			continue;
		/* A watch still gathering already has this user's state:
		 * its answer carries the change (a frame now would come
		 * before an answer that is older). */
		for (struct gather *g = se->gathers; g; g = g->next) {
			struct pw_ent *e = bsearch(m->user, g->e, g->n,
						   sizeof(*g->e), cmp_id);

			if (e && e->flags) {
				e->status = m->status;
				e->since = m->since;
				held = true;
			}
		}
		if (!held) {
			rt_conn_send(se->conn, m->buf);
			RT_STAT_ADD(ss->deliveries, 1);
		}
	}
}

void sess_op_presence_watch(struct req *r)
{
	struct session *se = r->se;
	const proto_strs *a = &r->q->a.users.users;
	char (*users)[ID_CAP];
	struct gather *g;
	uint32_t n = 0;

	users = calloc(a->n + 1, ID_CAP);
	for (uint32_t i = 0; i < a->n; i++)
		sess_id_copy(users[i], proto_strs_at(a, i));
	qsort(users, a->n, ID_CAP, cmp_id);
	for (uint32_t i = 0; i < a->n; i++)
		if (!n || strcmp(users[i], users[n - 1]))
			memmove(users[n++], users[i], ID_CAP);

	g = calloc(1, sizeof(*g));
	g->gen = ++se->watch_gen;
	g->rid = r->rid;
	g->has_rid = r->has_rid;
	g->n = n;
	g->e = calloc(n + 1, sizeof(*g->e));
	for (uint32_t i = 0; i < n; i++)
		strcpy(g->e[i].user, users[i]);
	g->shards_left = sess_watch_set(se, users, n, g->gen);
	if (!g->shards_left) {
		gather_answer(r->ss, se, g);
		free(g->e);
		free(g);
		return;
	}
	g->next = se->gathers;
	se->gathers = g;
}
