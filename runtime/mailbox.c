/*
 * Mailboxes: how shards (and storage's sync threads) hand messages to a
 * shard. Called by rt_post() from any thread; drained by the owning shard's
 * loop once per turn in batches.
 *
 * One bounded multi-producer, single-consumer ring per shard (ck_ring MPSC:
 * producers claim slots with one CAS, the consumer reads without atomics on
 * the fast path). A full ring never drops and never blocks a shard: a shard
 * that cannot post keeps the message on its own overflow list for that
 * destination and retries every turn. Keeping later messages behind an
 * overflowing one preserves per-producer FIFO order, which the layer above
 * relies on (an event's fan-out never overtakes the catch-up sent before it).
 *
 * Waking: a consumer about to sleep "arms" its mailbox. The first producer
 * to see it armed disarms it (fetch-and-store) and pays for the wake-up
 * (lws_cancel_service, one pipe write); every later producer sees it
 * disarmed and pays nothing, so a burst of N messages costs one wake-up.
 */
#include <ck_pr.h>
#include <ck_ring.h>
#include <sched.h>
#include <stdlib.h>

#include "runtime/shard.h"

#define RING_SIZE (1u << 16) /* entries; power of two */

struct mailbox {
	/* producers and consumer: the ring indexes live inside ck_ring,
	 * which already pads producer and consumer counters apart */
	ck_ring_t ring;
	ck_ring_buffer_t *buf;
	/* written by the consumer (arm) and producers (disarm) */
	unsigned armed CK_CC_CACHELINE;
	char pad[64 - sizeof(unsigned)];
} CK_CC_CACHELINE;

static struct mailbox *boxes;

void rt__mailbox_init(unsigned n)
{
	boxes = aligned_alloc(64, sizeof(*boxes) * n);
	for (unsigned i = 0; i < n; i++) {
		ck_ring_init(&boxes[i].ring, RING_SIZE);
		boxes[i].buf = calloc(RING_SIZE, sizeof(ck_ring_buffer_t));
		boxes[i].armed = 0;
	}
}

static bool try_enqueue(unsigned dst, rt_msg *m)
{
	struct mailbox *b = &boxes[dst];

	if (!ck_ring_enqueue_mpsc(&b->ring, b->buf, m))
		return false;
	/* The enqueue above is a release (ck_ring publishes the slot with a
	 * store fence); the fetch-and-store is a full barrier, so a consumer
	 * that armed before our enqueue became visible is seen here, and one
	 * that arms after will see the entry in its re-check. */
	if (ck_pr_fas_uint(&b->armed, 0) == 1)
		rt__shard_wake(dst);
	return true;
}

void rt_post(unsigned dst, rt_msg *m)
{
	rt_shard *self = rt_self();

	m->next = NULL;
	if (self) {
		m->from = (uint16_t)self->id;
		self->mailbox_msgs++;
		if (self->ovf_head[dst] == NULL && try_enqueue(dst, m))
			return;
		/* Full (or already overflowing): park it behind the others. */
		if (self->ovf_tail[dst])
			self->ovf_tail[dst]->next = m;
		else
			self->ovf_head[dst] = m;
		self->ovf_tail[dst] = m;
		self->has_overflow = true;
		rt__shard_wake(dst);
		return;
	}
	/* A sync thread: nothing else for it to do but wait for room. The
	 * consumer is a shard, which never waits on a sync thread, so this
	 * always ends. */
	m->from = RT_EXTERNAL;
	while (!try_enqueue(dst, m)) {
		rt__shard_wake(dst);
		sched_yield();
	}
}

void rt__mailbox_flush_overflow(rt_shard *s)
{
	if (!s->has_overflow)
		return;
	s->has_overflow = false;
	for (unsigned d = 0; d < rt__nshards; d++) {
		while (s->ovf_head[d]) {
			rt_msg *m = s->ovf_head[d], *next = m->next;

			if (!try_enqueue(d, m)) {
				s->has_overflow = true;
				break;
			}
			s->ovf_head[d] = next;
			if (!next)
				s->ovf_tail[d] = NULL;
		}
	}
}

int rt__mailbox_drain(rt_shard *s, unsigned max)
{
	struct mailbox *b = &boxes[s->id];
	rt_msg *m;
	int n = 0;

	while ((unsigned)n < max &&
	       ck_ring_dequeue_mpsc(&b->ring, b->buf, &m)) {
		s->cfg->hooks->on_msg(s, m);
		n++;
	}
	return n;
}

bool rt__mailbox_arm(rt_shard *s)
{
	struct mailbox *b = &boxes[s->id];

	/* Arm, then look again: the fetch-and-store orders our arm before the
	 * re-read of the ring, pairing with the producers' disarm. */
	ck_pr_fas_uint(&b->armed, 1);
	if (ck_ring_size(&b->ring) == 0 && !s->has_overflow)
		return true;
	ck_pr_store_uint(&b->armed, 0);
	return false;
}

uint64_t rt_mailbox_depth(unsigned shard)
{
	if (!boxes || shard >= rt__nshards)
		return 0;
	return ck_ring_size(&boxes[shard].ring);
}
