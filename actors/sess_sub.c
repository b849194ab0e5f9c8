/*
 * sess_sub: a connection's subscriptions to its user's channels, and the
 * deliveries that reach it: M_FANOUT, M_SUBACK, M_CONN_CHAN, M_DELIVER.
 * See session.c's header for how a subscription goes live.
 */
#include <stdlib.h>
#include <string.h>

#include "actors/session.h"

/* ---- subscriptions -------------------------------------------------------- */

struct sub *sess_sub_find(struct session *se, const char *ch)
{
	for (uint32_t i = 0; i < se->nsubs; i++)
		if (!strcmp(se->subs[i]->ch, ch))
			return se->subs[i];
	return NULL;
}

void sess_sub_add(struct shard_state *ss, struct session *se, const char *ch,
		    uint64_t after, bool resume)
{
	struct sublist *l = smap_get(&ss->subs, ch, strlen(ch));
	struct sub *sb;
	struct m_sub *m;

	if (sess_sub_find(se, ch))
		return;
	if (!l) {
		l = calloc(1, sizeof(*l));
		strcpy(l->ch, ch);
		smap_put(&ss->subs, l->ch, strlen(l->ch), l);
	}
	sb = calloc(1, sizeof(*sb));
	sb->sess = se;
	strcpy(sb->ch, ch);
	sb->last_seq = after;
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 4;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
	}
	sb->li = l->n;
	l->v[l->n++] = sb;
	if (se->nsubs == se->capsubs) {
		se->capsubs = se->capsubs ? se->capsubs * 2 : 8;
		se->subs = realloc(se->subs, se->capsubs * sizeof(*se->subs));
	}
	se->subs[se->nsubs++] = sb;

	m = msg_new(sizeof(*m), M_SUB);
	strcpy(m->ch, ch);
	strcpy(m->ws, se->ws);
	strcpy(m->user, se->user);
	m->conn = se->id;
	m->after = after;
	m->resume = resume;
	rt_post(chan_shard(ch), &m->h);
}

void sess_sub_remove(struct shard_state *ss, struct session *se,
		       struct sub *sb)
{
	struct sublist *l = smap_get(&ss->subs, sb->ch, strlen(sb->ch));
	struct m_unsub *m = msg_new(sizeof(*m), M_UNSUB);

	strcpy(m->ch, sb->ch);
	rt_post(chan_shard(sb->ch), &m->h);
	if (l) {
		/* swap-remove from the channel's list */
		l->v[sb->li] = l->v[--l->n];
		l->v[sb->li]->li = sb->li;
		if (!l->n) {
			smap_del(&ss->subs, l->ch, strlen(l->ch));
			free(l->v);
			free(l);
		}
	}
	for (uint32_t i = 0; i < se->nsubs; i++) {
		if (se->subs[i] == sb) {
			se->subs[i] = se->subs[--se->nsubs];
			break;
		}
	}
	free(sb);
}

void sess_on_fanout(struct shard_state *ss, struct m_fanout *m)
{
	struct sublist *l = smap_get(&ss->subs, m->ch, strlen(m->ch));

	if (m->drop) {
		/* sess_sub_remove may free l: look again after each */
		while (l) {
			struct sub *sb = NULL;

			for (uint32_t i = 0; i < l->n && !sb; i++)
				if (!strcmp(l->v[i]->sess->user, m->skip_user))
					sb = l->v[i];
			if (!sb)
				return;
			sess_sub_remove(ss, sb->sess, sb);
			l = smap_get(&ss->subs, m->ch, strlen(m->ch));
		}
		return;
	}
	if (!l)
		return;
	for (uint32_t i = 0; i < l->n; i++) {
		struct sub *sb = l->v[i];

		if (!sb->active)
			continue;
		if (m->skip_user[0] && !strcmp(sb->sess->user, m->skip_user))
			continue;
		if (m->seq) {
			if (m->seq <= sb->last_seq)
				continue; /* already had it from its catch-up */
			sb->last_seq = m->seq;
		}
		rt_conn_send(sb->sess->conn, m->buf);
		RT_STAT_ADD(ss->deliveries, 1);
	}
}

void sess_on_suback(struct shard_state *ss, struct m_suback *m)
{
	struct session *se = find_sess(rt_self(), m->conn);
	struct sub *sb = se ? sess_sub_find(se, m->ch) : NULL;

	if (!sb)
		return;
	if (m->denied) {
		sess_sub_remove(ss, se, sb);
		return;
	}
	for (uint32_t i = 0; i < m->n; i++) {
		rt_conn_send(se->conn, m->frames[i]);
		RT_STAT_ADD(ss->deliveries, 1);
	}
	if (m->last_seq > sb->last_seq)
		sb->last_seq = m->last_seq;
	sb->active = true;
}

void sess_on_conn_chan(struct shard_state *ss, struct m_user_chan *m)
{
	struct session *se = find_sess(rt_self(), m->conn);
	struct sub *sb;

	if (!se || se->state != S_READY)
		return;
	if (m->action == ACT_FRAME) {
		if (m->conn != m->except && m->frame)
			rt_conn_send(se->conn, m->frame);
		return;
	}
	if (m->frame)
		rt_conn_send(se->conn, m->frame);
	sb = sess_sub_find(se, m->ch);
	if (m->action == ACT_LEAVE) {
		if (sb)
			sess_sub_remove(ss, se, sb);
	} else if (!sb) {
		sess_sub_add(ss, se, m->ch, m->after, false);
	}
}

void sess_on_deliver(struct shard_state *ss, struct m_deliver *m)
{
	rt_conn *c;

	(void)ss;
	ASSERT_CONN_HERE(m->conn);
	c = rt_conn_find(rt_self(), m->conn);
	if (!c)
		return;
	if (m->buf)
		rt_conn_send(c, m->buf);
	if (m->close_code)
		rt_conn_close(c, m->close_code, NULL);
}

