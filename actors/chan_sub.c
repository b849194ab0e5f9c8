/*
 * chan_sub: a channel actor's subscriptions. M_SUB: a connection wants the
 * events after some seq; it gets them up to the durable seq (or a gap
 * notice) in one M_SUBACK, and counts in online[] for fan-out. M_UNSUB:
 * it no longer listens.
 */
#include <stdlib.h>
#include <string.h>

#include "actors/chan.h"

/* ---- subscriptions ---------------------------------------------------------- */

/* One M_FANOUT of b (a reference each) to every shard with c's
 * subscribers online; seq 0 for a frame that is not an event. */
void fanout(struct chan *c, uint64_t seq, rt_buf *b, const char *skip)
{
	for (unsigned s = 0; s < rt_nshards(); s++) {
		struct m_fanout *f;

		if (!c->online[s])
			continue;
		f = msg_new(sizeof(*f), M_FANOUT);
		strcpy(f->ch, c->id);
		f->seq = seq;
		rt_buf_ref(b, 1);
		f->buf = b;
		if (skip)
			strcpy(f->skip_user, skip);
		rt_post(s, &f->h);
	}
}


struct catchup {
	rt_buf **v;
	uint32_t n;
};

static int collect_event(void *arg, uint64_t seq, const void *v, size_t len)
{
	struct catchup *cu = arg;

	(void)seq;
	cu->v[cu->n++] = rt_buf_new(v, len);
	return 0;
}

void chan_on_sub(struct shard_state *ss, struct m_sub *m)
{
	struct chan *c = chan_get(ss, m->ch);
	unsigned from = rt_conn_shard(m->conn);
	struct catchup cu = { 0 };
	struct m_suback *a;
	uint64_t L, missing = 0;
	bool denied;

	denied = !c || strcmp(c->rec.ws, m->ws) || !member_of(c, m->user);
	if (c)
		c->online[from]++; /* counted even when denied: see M_UNSUB */
	L = c ? c->durable_seq : 0;
	if (!denied && m->after < L)
		missing = L - m->after;
	if (missing > srv.lim.resume_max) {
		proto_out_reset(&ss->out);
		proto_enc_gap(&ss->out, m->ch, m->after, L);
		cu.v = calloc(1, sizeof(*cu.v));
		cu.v[cu.n++] = rt_buf_new(ss->out.data, ss->out.len);
	} else if (missing) {
		cu.v = calloc(missing, sizeof(*cu.v));
		store_scan_events(srv.st, m->ch, m->after, (unsigned)missing,
				  collect_event, &cu, NULL);
	}
	a = msg_new(sizeof(*a) + cu.n * sizeof(rt_buf *), M_SUBACK);
	strcpy(a->ch, m->ch);
	a->conn = m->conn;
	a->denied = denied;
	/* A position past the channel's end (a confused client) is clamped:
	 * otherwise the next events up to it would be skipped silently. */
	a->last_seq = L;
	a->n = cu.n;
	if (cu.n)
		memcpy(a->frames, cu.v, cu.n * sizeof(rt_buf *));
	free(cu.v);
	rt_post(from, &a->h);
}

void chan_on_unsub(struct shard_state *ss, struct m_unsub *m)
{
	struct chan *c;

	ASSERT_CHAN_HERE(ss, m->ch);
	c = smap_get(&ss->chans, m->ch, strlen(m->ch));

	if (c && c->online[m->h.from])
		c->online[m->h.from]--;
}

