/*
 * Payload buffers: one encoded frame, shared by every connection that sends
 * it. Made by whoever encodes (a channel actor encodes an event once), freed
 * by whichever thread drops the last reference.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/rt.h"

rt_buf *rt_buf_new(const void *data, size_t len)
{
	rt_buf *b = malloc(sizeof(*b) + len);

	if (!b)
		abort(); /* out of memory is not a network input */
	b->refs = 1;
	b->len = (uint32_t)len;
	b->kind = 0;
	b->t_req_us = b->t_post_us = 0;
	if (data)
		memcpy(b->data, data, len);
	return b;
}

void rt_buf_unref(rt_buf *b)
{
	/* acq_rel: our writes to the buffer happen before the free on
	 * whichever thread drops the last reference. */
	if (__atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(b);
}
