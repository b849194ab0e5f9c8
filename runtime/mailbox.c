/*
 * Mailboxes: how shards (and storage's sync threads) hand messages to a
 * shard. Called by rt_post() from any thread; drained by the owning shard's
 * loop once per turn in batches.
 *
 * Every destination shard has one single-producer/single-consumer ring per
 * source shard (ck_ring SPSC, as Seastar pairs its cores), plus one
 * multi-producer ring for threads that are not shards (storage's sync
 * threads: one per shard, posting only to their own shard). SPSC enqueue is
 * wait-free: a producer never waits for another producer, which matters on
 * a machine with fewer cores than threads: ck_ring's MPSC enqueue makes a
 * producer wait for every earlier one to finish, and a preempted producer
 * then stalls all the others for a time slice.
 *
 * A full ring never drops and never blocks a shard: the producing shard
 * keeps the message on its own overflow list for that destination and
 * retries every turn. Later messages queue behind an overflowing one, so
 * one producer's messages stay in order, which the actors rely on (a
 * channel's catch-up for a subscriber never overtaken by the live events
 * that follow it).
 *
 * Waking: a consumer about to sleep "arms" its mailbox. The first producer
 * to find it armed disarms it (fetch-and-store) and pays for the wake-up
 * (lws_cancel_service: one pipe write); every later producer sees it
 * disarmed and pays nothing, so a burst of posts costs one wake-up. A
 * message parked on overflow wakes nobody: its ring is full, and the post
 * that filled it woke the consumer if it slept (a consumer never sleeps on
 * a non-empty ring); the parked message moves once the consumer has made
 * room, from the producer's next turn (a shard with overflow does not
 * sleep), and that enqueue wakes the consumer again if it is armed by then.
 */
#include <ck_pr.h>
#include <ck_ring.h>
#include <sched.h>
#include <stdlib.h>

#include "runtime/shard.h"

/*
 * ThreadSanitizer cannot see Concurrency Kit's atomics (inline assembly), so
 * in TSan builds the hand-off of each message is declared to it: the
 * producer releases the message before publishing it, the consumer acquires
 * it after taking it out. The ring's own slot copies are suppressed in
 * tests/tsan.supp.
 */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define HANDOFF_RELEASE(m) __tsan_release(m)
#define HANDOFF_ACQUIRE(m) __tsan_acquire(m)
#else
#define HANDOFF_RELEASE(m) ((void)(m))
#define HANDOFF_ACQUIRE(m) ((void)(m))
#endif

#define PAIR_RING (1u << 12)  /* entries per source shard; overflow beyond */
#define EXT_RING  (1u << 14)  /* entries for non-shard producers */

struct ring {
	ck_ring_t r;
	ck_ring_buffer_t *buf;
};

struct mailbox {
	struct ring *from;    /* [nshards] SPSC: from[s] written only by shard s */
	struct ring ext;      /* MPSC: other threads */
	unsigned next;        /* consumer's round-robin start */
	/* written by the consumer (arm) and by producers (disarm, and the
	 * count of wake-ups they paid for: it lives here, on the line they
	 * write anyway, and not among the shard's owner-only fields, where
	 * producers' writes falsely shared the line the owner works on) */
	unsigned armed CK_CC_CACHELINE;
	uint64_t wakeups;
} CK_CC_CACHELINE; /* so the next mailbox starts on a line of its own */

static struct mailbox *boxes;
static unsigned nboxes;

static void ring_init(struct ring *r, unsigned size)
{
	ck_ring_init(&r->r, size);
	r->buf = calloc(size, sizeof(ck_ring_buffer_t));
}

void rt__mailbox_init(unsigned n)
{
	nboxes = n;
	boxes = aligned_alloc(64, sizeof(*boxes) * n);
	for (unsigned i = 0; i < n; i++) {
		boxes[i].from = calloc(n, sizeof(struct ring));
		for (unsigned s = 0; s < n; s++)
			ring_init(&boxes[i].from[s], PAIR_RING);
		ring_init(&boxes[i].ext, EXT_RING);
		boxes[i].next = 0;
		boxes[i].armed = 0;
		boxes[i].wakeups = 0;
	}
}

void rt__mailbox_fini(void)
{
	for (unsigned i = 0; i < nboxes; i++) {
		for (unsigned s = 0; s < nboxes; s++)
			free(boxes[i].from[s].buf);
		free(boxes[i].from);
		free(boxes[i].ext.buf);
	}
	free(boxes);
	boxes = NULL;
	nboxes = 0;
}

static void wake(unsigned dst)
{
	__atomic_fetch_add(&boxes[dst].wakeups, 1, __ATOMIC_RELAXED);
	rt__shard_wake(dst);
}

uint64_t rt__mailbox_wakeups(unsigned shard)
{
	return boxes && shard < nboxes
		       ? __atomic_load_n(&boxes[shard].wakeups, __ATOMIC_RELAXED)
		       : 0;
}

static void after_enqueue(unsigned dst)
{
	/* The enqueue published the slot with a store fence; the
	 * fetch-and-store is a full barrier, so a consumer that armed before
	 * our entry became visible is seen here, and one that arms later
	 * sees the entry in its re-check. */
	if (ck_pr_fas_uint(&boxes[dst].armed, 0) == 1)
		wake(dst);
}

void rt_post(unsigned dst, rt_msg *m)
{
	rt_shard *self = rt_self();

	m->next = NULL;
	m->from = self ? (uint16_t)self->id : RT_EXTERNAL;
	HANDOFF_RELEASE(m);
	if (self) {
		struct ring *r = &boxes[dst].from[self->id];

		RT_STAT_ADD(self->mailbox_msgs, 1);
		if (self->ovf_head[dst] == NULL &&
		    ck_ring_enqueue_spsc(&r->r, r->buf, m)) {
			after_enqueue(dst);
			return;
		}
		/* Full (or already overflowing): park it behind the others.
		 * No wake-up (see the top of this file). */
		if (self->ovf_tail[dst])
			self->ovf_tail[dst]->next = m;
		else
			self->ovf_head[dst] = m;
		self->ovf_tail[dst] = m;
		self->has_overflow = true;
		return;
	}
	/* Not a shard (a sync thread): wait for room. The consumer is a
	 * shard, which never waits on a sync thread, so this always ends. */
	while (!ck_ring_enqueue_mpsc(&boxes[dst].ext.r, boxes[dst].ext.buf, m)) {
		wake(dst);
		sched_yield();
	}
	after_enqueue(dst);
}

void rt__mailbox_flush_overflow(rt_shard *s)
{
	if (!s->has_overflow)
		return;
	s->has_overflow = false;
	for (unsigned d = 0; d < nboxes; d++) {
		struct ring *r = &boxes[d].from[s->id];
		bool moved = false;

		while (s->ovf_head[d]) {
			rt_msg *m = s->ovf_head[d], *next = m->next;

			/* m->next was written after rt_post released m */
			HANDOFF_RELEASE(m);
			if (!ck_ring_enqueue_spsc(&r->r, r->buf, m)) {
				s->has_overflow = true;
				break;
			}
			moved = true;
			s->ovf_head[d] = next;
			if (!next)
				s->ovf_tail[d] = NULL;
		}
		if (moved)
			after_enqueue(d);
	}
}

static unsigned drain_ring(rt_shard *s, struct ring *r, bool mpsc,
			   unsigned max)
{
	rt_msg *m;
	unsigned n = 0;

	while (n < max && (mpsc ? ck_ring_dequeue_mpsc(&r->r, r->buf, &m)
				: ck_ring_dequeue_spsc(&r->r, r->buf, &m))) {
		HANDOFF_ACQUIRE(m);
		s->cfg->hooks->on_msg(s, m);
		n++;
	}
	return n;
}

int rt__mailbox_drain(rt_shard *s, unsigned max)
{
	struct mailbox *b = &boxes[s->id];
	unsigned n = 0, share = max / (nboxes + 1) + 1;

	/* First pass: round-robin over the sources, a share each, so one
	 * busy producer cannot starve the others. Second pass: the budget the
	 * quiet sources left goes to the busy ones, in the same order, so a
	 * burst from one shard is not spread over several turns while the
	 * budget would have taken it in one. */
	for (int pass = 0; pass < 2 && n < max; pass++) {
		unsigned take = pass ? max : share;

		n += drain_ring(s, &b->ext, true, take < max - n ? take : max - n);
		for (unsigned i = 0; i < nboxes && n < max; i++) {
			unsigned src = (b->next + i) % nboxes;

			n += drain_ring(s, &b->from[src], false,
					take < max - n ? take : max - n);
		}
	}
	b->next = (b->next + 1) % nboxes;
	return (int)n;
}

static bool empty(const struct mailbox *b)
{
	if (ck_ring_size(&b->ext.r))
		return false;
	for (unsigned s = 0; s < nboxes; s++)
		if (ck_ring_size(&b->from[s].r))
			return false;
	return true;
}

bool rt__mailbox_arm(rt_shard *s)
{
	struct mailbox *b = &boxes[s->id];

	/* Arm, then look again: the fetch-and-store orders our arm before the
	 * re-read of the rings, pairing with the producers' disarm. */
	ck_pr_fas_uint(&b->armed, 1);
	if (empty(b) && !s->has_overflow)
		return true;
	ck_pr_store_uint(&b->armed, 0);
	return false;
}

uint64_t rt_mailbox_depth(unsigned shard)
{
	uint64_t n;

	if (!boxes || shard >= nboxes)
		return 0;
	n = ck_ring_size(&boxes[shard].ext.r);
	for (unsigned s = 0; s < nboxes; s++)
		n += ck_ring_size(&boxes[shard].from[s].r);
	return n;
}
