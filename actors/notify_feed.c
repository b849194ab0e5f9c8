/*
 * notify_feed: the shards' side of the notifier (notify.c), kept apart so
 * that the commit path (commit.c) depends on nothing above it. Each shard
 * copies every durable event of a channel into its own list while it runs
 * the effects of a commit, and hands the list over at the end of its loop
 * turn with one compare-and-swap onto a stack the notifier thread takes
 * whole: no lock, no syscall, nothing on the ack path waits. Calls no
 * other actor file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/notify.h"

#define FEED_MAX_BYTES (64u << 20) /* handed over, not yet taken */

struct fshard { /* one shard's list for this turn, its own */
	struct fitem *head, *tail;
	size_t bytes;
	char pad[64];
};

static struct {
	bool enabled;
	struct fshard shards[RT_MAX_SHARDS];
	struct fchunk *stack; /* atomic */
	uint64_t bytes;       /* atomic: handed over, not yet taken */
	int lost;             /* atomic: events dropped, catch up */
} F;

void notify_feed_enable(void) { F.enabled = true; }

void notify_feed(unsigned shard, const char *ch, uint64_t seq,
		 uint64_t members, const void *ev, size_t len)
{
	struct fshard *f = &F.shards[shard];
	struct fitem *it;

	if (!F.enabled)
		return;
	if (members < 2)
		len = 0; /* nobody else: only the position moves */
	it = malloc(sizeof(*it) + len);
	it->next = NULL;
	it->seq = seq;
	it->len = (uint32_t)len;
	snprintf(it->ch, sizeof(it->ch), "%s", ch);
	memcpy(it->ev, ev, len);
	if (f->tail)
		f->tail->next = it;
	else
		f->head = it;
	f->tail = it;
	f->bytes += sizeof(*it) + len;
}

void notify_feed_flush(unsigned shard)
{
	struct fshard *f = &F.shards[shard];
	struct fchunk *c;

	if (!F.enabled || !f->head)
		return;
	if (__atomic_load_n(&F.bytes, __ATOMIC_RELAXED) > FEED_MAX_BYTES) {
		/* the notifier is far behind: drop, it catches up from the
		 * log (positions never moved past these events) */
		for (struct fitem *it = f->head, *nx; it; it = nx) {
			nx = it->next;
			free(it);
		}
		notify_feed_lost_set();
	} else {
		c = malloc(sizeof(*c));
		c->head = f->head;
		c->bytes = f->bytes;
		__atomic_fetch_add(&F.bytes, f->bytes, __ATOMIC_RELAXED);
		c->next = __atomic_load_n(&F.stack, __ATOMIC_RELAXED);
		while (!__atomic_compare_exchange_n(&F.stack, &c->next, c, true,
						    __ATOMIC_RELEASE,
						    __ATOMIC_RELAXED))
			;
	}
	f->head = f->tail = NULL;
	f->bytes = 0;
}

struct fchunk *notify_feed_take(void)
{
	struct fchunk *c = __atomic_exchange_n(&F.stack, NULL,
					       __ATOMIC_ACQUIRE);
	struct fchunk *rev = NULL;

	while (c) { /* the stack is newest first */
		struct fchunk *nx = c->next;

		c->next = rev;
		rev = c;
		c = nx;
	}
	return rev;
}

void notify_feed_done(struct fchunk *c)
{
	__atomic_fetch_sub(&F.bytes, c->bytes, __ATOMIC_RELAXED);
	free(c);
}

void notify_feed_lost_set(void)
{
	__atomic_store_n(&F.lost, 1, __ATOMIC_RELAXED);
}

bool notify_feed_lost(void)
{
	return __atomic_load_n(&F.lost, __ATOMIC_RELAXED);
}

void notify_feed_lost_take(void)
{
	__atomic_store_n(&F.lost, 0, __ATOMIC_RELAXED);
}
