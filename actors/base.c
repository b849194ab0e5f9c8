/*
 * base: the helpers every actor calls (see base.h). Calls no other file of
 * actors/.
 */
#include <stdlib.h>
#include <string.h>

#include "actors/base.h"
#include "actors/cluster_core.h"
#include "runtime/hash.h"

struct server srv;
static struct shard_state *states[RT_MAX_SHARDS];

const char *const action_names[] = { "join", "leave", "invite", "read" };

static unsigned hash_mod(const char *a, const char *b)
{
	uint64_t h = rt_fnv1a_str(RT_FNV_OFFSET, a);

	if (b) {
		h = rt_fnv1a_step(h, "", 1); /* the NUL between the two */
		h = rt_fnv1a_str(h, b);
	}
	return (unsigned)((h ^ (h >> 29)) % rt_nshards());
}

unsigned chan_shard(const char *ch) { return hash_mod(ch, NULL); }
unsigned user_shard(const char *ws, const char *user) { return hash_mod(ws, user); }

struct shard_state *shard_state(void) { return rt_shard_user(rt_self()); }
struct shard_state *shard_state_of(unsigned i) { return states[i]; }

void *msg_new(size_t size, uint16_t type)
{
	rt_msg *m = calloc(1, size);

	if (!m)
		abort();
	m->type = type;
	return m;
}

void msg_free(rt_msg *m)
{
	switch (m->type) {
	case M_DELIVER:
		if (((struct m_deliver *)m)->buf)
			rt_buf_unref(((struct m_deliver *)m)->buf);
		break;
	case M_FANOUT:
		if (((struct m_fanout *)m)->buf)
			rt_buf_unref(((struct m_fanout *)m)->buf);
		break;
	case M_SUBACK: {
		struct m_suback *a = (struct m_suback *)m;

		for (uint32_t i = 0; i < a->n; i++)
			if (a->frames[i])
				rt_buf_unref(a->frames[i]);
		break;
	}
	case M_PRESENCE:
		rt_buf_unref(((struct m_presence *)m)->buf);
		break;
	case M_USER_CHAN:
	case M_CONN_CHAN:
		if (((struct m_user_chan *)m)->frame)
			rt_buf_unref(((struct m_user_chan *)m)->frame);
		break;
	default:
		break;
	}
	free(m);
}

void (*base_proxy_send)(rt_conn_id conn, rt_buf *b);

void send_buf_to_conn(rt_conn_id conn, rt_buf *b)
{
	rt_shard *self = rt_self();

	if (cluster_is_proxy(conn)) { /* a connection on another host */
		if (base_proxy_send)
			base_proxy_send(conn, b);
		else
			rt_buf_unref(b);
		return;
	}

	if (self && rt_conn_shard(conn) == rt_shard_id(self)) {
		rt_conn *c = rt_conn_find(self, conn);

		if (c)
			rt_conn_send(c, b);
		rt_buf_unref(b);
		return;
	}
	struct m_deliver *d = msg_new(sizeof(*d), M_DELIVER);
	d->conn = conn;
	d->buf = b;
	rt_post(rt_conn_shard(conn), &d->h);
}

void send_to_conn(rt_conn_id conn, const proto_out *o)
{
	send_buf_to_conn(conn, rt_buf_new(o->data, o->len));
}

void reply_err(rt_conn *c, bool has_rid, uint64_t rid, const char *op,
	       const char *code, const char *msg, uint64_t retry_ms)
{
	struct shard_state *ss = shard_state();

	ASSERT_CONN_HERE(rt_conn_get_id(c));
	proto_out_reset(&ss->out);
	proto_enc_fail(&ss->out, has_rid, rid, op, op ? strlen(op) : 0, code,
		       msg, retry_ms);
	rt_conn_send_bytes(c, ss->out.data, ss->out.len);
}

void reply_err_remote(const struct m_req *r, const char *code, const char *msg,
		      uint64_t retry_ms)
{
	struct shard_state *ss = shard_state();
	const char *op = proto_op_name(r->op);

	proto_out_reset(&ss->out);
	proto_enc_fail(&ss->out, r->has_rid, r->rid, op, strlen(op), code, msg,
		       retry_ms);
	send_to_conn(r->conn, &ss->out);
}

/* The state of shard s, made on its thread when it starts; it stays until
 * exit (other shards' /metrics readers may still look). */
struct shard_state *shard_state_new(rt_shard *s)
{
	struct shard_state *ss = calloc(1, sizeof(*ss));

	ss->id = rt_shard_id(s);
	ss->batch = store_batch_new(srv.st);
	proto_out_init(&ss->out, 0, 4096);
	rt_shard_set_user(s, ss);
	__atomic_store_n(&states[ss->id], ss, __ATOMIC_RELEASE);
	return ss;
}

/* ---- per-stage latency ------------------------------------------------------ */

const char *const stage_names[ST__COUNT] = {
	[ST_DECODE] = "decode",
	[ST_TO_CHANNEL] = "to_channel",
	[ST_TO_COMMIT] = "to_commit",
	[ST_WAL_SYNC] = "wal_sync",
	[ST_AFTER_SYNC] = "after_sync",
	[ST_ACK_WRITE] = "ack_write",
	[ST_FANOUT_WRITE] = "fanout_write",
	[ST_ACK_TOTAL] = "ack_total",
	[ST_DELIVER_TOTAL] = "deliver_total",
};

/* A double: the odd bounds are not whole microseconds (1.5 us), and
 * truncating them printed le="1e-06" twice. */
double stage_bound_us(unsigned i)
{
	double p = (double)(1ull << (i / 2));

	return i & 1 ? 1.5 * p : p;
}

/* The smallest i with us <= stage_bound_us(i): two buckets per power of
 * two, found from the top bit and the one below it. */
static unsigned stage_bucket(uint64_t us)
{
	unsigned e, i;

	if (us <= 1)
		return 0;
	e = 63u - (unsigned)__builtin_clzll(us);
	if (us == 1ull << e)
		i = 2 * e;
	else if (us <= 3ull << e >> 1)
		i = 2 * e + 1;
	else
		i = 2 * e + 2;
	return i < ST_NB ? i : ST_NB;
}

void stage_add(struct shard_state *ss, unsigned st, uint64_t us)
{
	uint64_t *h = &ss->st_hist[st][stage_bucket(us)];

	/* Only this shard writes: a relaxed store, no locked add; /metrics
	 * reads from another shard with relaxed loads. */
	__atomic_store_n(h, *h + 1, __ATOMIC_RELAXED);
	__atomic_store_n(&ss->st_sum_us[st], ss->st_sum_us[st] + us,
			 __ATOMIC_RELAXED);
}
