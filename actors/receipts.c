/*
 * receipts: the delivered and read positions of a DM's members, a part of
 * the channel actor (chan.h). channel.c dispatches `delivered` and
 * `receipts` here and calls chan_receipt_read() when a member's read
 * marker moves (read, send). Calls base.c, chan_load.c and commit.c.
 *
 * Positions, per member of a DM:
 *   read       the read marker (struct member's m.read_seq, 'M' record),
 *              moved by read and send as in every channel;
 *   delivered  the highest seq any device of the user reported with
 *              `delivered` (dlv_seq, 'R' record), clamped like the read
 *              marker to the durable seq; forward only.
 * What clients see as delivered is max(delivered, read): a message read
 * was received. So a `delivered` at or below that is no move: nothing is
 * written and nobody is told; when fire-and-forget (no rid) it costs
 * nothing at all, so a busy client's reports cost a synced write only when
 * they move the position (and all the moves of one loop turn share the
 * shard's one write).
 *
 * Moves are told, once durable, to the devices of the OTHER members that
 * listen to the DM ({"t":"receipt"}; fx_bcast skips the user's own), so a
 * read marker that moves sends a receipt there and the existing "read"
 * frame to the user's other devices (channel.c). In other channels
 * `delivered` is answered ok and does nothing, and `receipts` is refused.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "actors/chan.h"
#include "actors/commit.h"

/* mb's delivered position as stored (the state of memory is never ahead
 * of disk except by batches in flight, which set dlv_known). False if
 * storage cannot tell. */
static bool dlv_load(struct chan *c, struct member *mb)
{
	uint64_t seq = 0;
	int rc;

	if (mb->dlv_known)
		return true;
	rc = store_get_delivered(srv.st, c->id, mb->user, &seq);
	if (rc && rc != -ENOENT)
		return false;
	mb->dlv_seq = rc ? 0 : seq;
	mb->dlv_known = true;
	return true;
}

/* What clients see: reading implies having received. */
static uint64_t dlv_seen(const struct member *mb)
{
	return mb->dlv_seq > mb->m.read_seq ? mb->dlv_seq : mb->m.read_seq;
}

/* {"t":"receipt"} about user to the devices of everyone else online in
 * c, once this turn's batch is durable. */
static void fx_receipt(struct shard_state *ss, struct chan *c,
		       const char *user, bool read, uint64_t seq)
{
	proto_out_reset(&ss->out);
	proto_enc_receipt(&ss->out, c->id, user, read, seq);
	fx_bcast(ss, c, rt_buf_new(ss->out.data, ss->out.len), user);
}

void chan_receipt_read(struct shard_state *ss, struct chan *c,
		       const struct member *mb)
{
	if (c->rec.kind != STORE_DM)
		return;
	fx_receipt(ss, c, mb->user, true, mb->m.read_seq);
}

void chan_op_delivered(struct shard_state *ss, struct m_req *r)
{
	struct chan *c = chan_visible(ss, r);
	struct member *me;
	uint64_t seq = r->q.a.seq.seq;

	if (!c)
		return;
	proto_out_reset(&ss->out);
	proto_enc_ok(&ss->out, r->rid);
	if (c->rec.kind != STORE_DM) {
		reply_now(ss, r); /* accepted and ignored */
		return;
	}
	/* a DM the user may see is one the user is in */
	me = member_of(c, r->user);
	assert(me);
	if (!dlv_load(c, me)) {
		chan_fail(r, "UNAVAILABLE", "storage unavailable");
		return;
	}
	/* No further than what is durable, as read markers (op_read). */
	if (seq > c->durable_seq)
		seq = c->durable_seq;
	if (seq <= dlv_seen(me)) {
		/* never backwards; a report without rid wants no answer,
		 * and must not hold a commit's effects up for nothing */
		if (r->has_rid)
			reply_state(ss, c, r);
		return;
	}
	me->dlv_seq = seq;
	store_put_delivered(ss->batch, c->id, me->user, seq);
	fx_reply(ss, c, r);
	fx_receipt(ss, c, me->user, false, seq);
}

void chan_op_receipts(struct shard_state *ss, struct m_req *r)
{
	struct chan *c = chan_visible(ss, r);
	proto_receipt *v;
	uint32_t n = 0;

	if (!c)
		return;
	if (c->rec.kind != STORE_DM) {
		chan_fail(r, "BAD_REQUEST", "receipts are kept in DMs only");
		return;
	}
	v = calloc(c->members.n ? c->members.n : 1, sizeof(*v));
	smap_foreach(&c->members, it) {
		struct member *mb = it->val;

		if (!dlv_load(c, mb)) {
			free(v);
			chan_fail(r, "UNAVAILABLE", "storage unavailable");
			return;
		}
		v[n++] = (proto_receipt){ mb->user, dlv_seen(mb),
					  mb->m.read_seq };
	}
	proto_out_reset(&ss->out);
	proto_enc_receipts_ok(&ss->out, r->rid, v, n);
	free(v);
	/* positions still on their way to disk: the answer waits for them */
	reply_state(ss, c, r);
}
