/*
 * storage: the RocksDB layout, the commit path and recovery behind store.h.
 *
 * Called by the channel actors, which build store_batch op logs on their
 * shard thread and hand them to store_commit(), and by the sessions, which
 * read with the store_get_* / store_scan_* calls from any shard thread. Hands
 * on every committed batch to RocksDB as part of one synced write per wakeup
 * of the shard's sync thread, then reports back through the batch's done()
 * callback on that thread.
 *
 * Encodings (everything that is not a key is little-endian):
 *   'S' value   24 bytes: last_seq, msgs, members (u64 LE each)
 *   'M' value   24 bytes: read_seq, joined_seq, joined_ms (u64 LE each)
 *   'C' value   u8 version (1), u8 kind, u64 LE created_ms, then id, ws,
 *               name, creator, each as u8 length + bytes (no NUL). Not
 *               msgpack: storage does not link the codec, and the record
 *               never leaves the process.
 *   'I' value   seq8 (big-endian, like the keys)
 *   'Y' value   u8 chosen status, u64 LE last seen (ms)
 *   'e' value   u64 LE msg events up to and including this one (0: the
 *               event is not a message; look further back), then the
 *               event frame exactly as sent
 *
 * Channel range: FNV-1a 64 over the id bytes, modulo the number of history
 * families. Both are fixed for the life of a database: changing either would
 * move channels between families and hide their history.
 */
#define _GNU_SOURCE /* vasprintf */
#include "runtime/hash.h"
#include "storage/store.h"
#include "runtime/log.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include <rocksdb/c.h>

#define MAX_RANGES 100
#define KEY_INLINE 256
#define CHAN_REC_VERSION 1
#define CACHE_BYTES (64u << 20)

/* Op log record kinds; the log is private to this file. */
enum { OP_PUT = 1, OP_DEL = 2, OP_DELRANGE = 3 };
#define CF_META 0xffffu

struct op_hdr {
	uint8_t op;
	uint8_t pad;
	uint16_t cf; /* CF_META or a history range */
	uint32_t klen;
	uint32_t vlen; /* OP_DELRANGE: the end key's length */
};

/*
 * A batch is a flat op log rather than a rocksdb_writebatch_t: the C API
 * cannot append one write batch to another, and group commit has to merge
 * several batches into one write. Replaying the log into the sync thread's
 * own write batch costs one memcpy per record, the same a writebatch would
 * have cost on the shard thread, and keeps RocksDB objects off that thread.
 */
struct store_batch {
	store_batch *next; /* handoff stack link */
	store *s;
	char *buf;
	size_t len, cap;
	size_t nrec;
	bool oom; /* a record was lost: the commit must fail, not half-apply */
	void (*done)(void *ctx, int status);
	void *ctx;
};

/*
 * One per shard. Producers push onto a lock-free stack (CAS on head); the
 * sync thread swaps the whole stack out at once, which is exactly the "take
 * everything waiting" that group commit wants, and reverses it into handoff
 * order. A push that finds the stack empty posts the semaphore: that is the
 * only moment the thread may be asleep (or about to be).
 *
 * GCC __atomic builtins rather than ck_pr: ck_pr is inline assembly that
 * ThreadSanitizer cannot see, and this is the one place storage needs
 * atomics besides the counters.
 */
struct sync_op {
	const char *p; /* an op_hdr in a batch's log */
	uint32_t i;    /* its place in the group */
};

struct syncer {
	store_batch *head __attribute__((aligned(64)));
	sem_t wake __attribute__((aligned(64)));
	int stop;
	pthread_t thread;
	store *s;
	rocksdb_writebatch_t *wb;
	struct sync_op *ops; /* the group's records, to sort */
	size_t capops;
	bool started;
};

struct store {
	rocksdb_t *db;
	rocksdb_options_t *dbopt, *metaopt, *histopt;
	rocksdb_cache_t *cache;
	rocksdb_column_family_handle_t *cf_default, *cf_meta;
	rocksdb_column_family_handle_t **cf_hist;
	unsigned nranges, nshards;
	rocksdb_readoptions_t *ro;
	rocksdb_writeoptions_t *wo_sync;
	struct syncer *sync;
	store_stats stats; /* updated with relaxed atomics */
	char *dir;         /* for the operator's log lines */
	bool corrupt;      /* RocksDB said Corruption at open */
};

/* ---- small helpers ------------------------------------------------------ */

static void put_le64(char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (char)(v >> (8 * i));
}

static uint64_t get_le64(const char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v |= (uint64_t)(unsigned char)p[i] << (8 * i);
	return v;
}

static void put_be64(char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (char)(v >> (56 - 8 * i));
}

static uint64_t get_be64(const char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | (unsigned char)p[i];
	return v;
}

static void stat_add(uint64_t *c, uint64_t v)
{
	__atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

static void set_err(char **err, const char *fmt, ...)
{
	va_list ap;
	char *m = NULL;

	if (!err)
		return;
	va_start(ap, fmt);
	if (vasprintf(&m, fmt, ap) < 0)
		m = NULL;
	va_end(ap);
	*err = m;
}

/* FORMAT: which history column family holds a channel. On disk: never
 * change it (runtime/hash.h; pinned by tests/runtime/test_hash.c). */
unsigned store_range_of(const char *ch, unsigned nranges)
{
	return (unsigned)(rt_fnv1a_str(RT_FNV_OFFSET, ch) % nranges);
}

static unsigned ch_range(const store *s, const char *ch)
{
	return store_range_of(ch, s->nranges);
}

/*
 * Key builder: ids are short, so keys live on the stack; only an unusually
 * long cmid spills to the heap.
 */
struct key {
	char *p;
	size_t len, cap;
	bool oom;
	char inl[KEY_INLINE];
};

static void key_init(struct key *k)
{
	k->p = k->inl;
	k->len = 0;
	k->cap = sizeof(k->inl);
	k->oom = false;
}

static void key_fini(struct key *k)
{
	if (k->p != k->inl)
		free(k->p);
}

static void key_add(struct key *k, const void *d, size_t n)
{
	if (k->oom)
		return;
	if (k->len + n > k->cap) {
		size_t cap = (k->len + n) * 2;
		char *p = malloc(cap);

		if (!p) {
			k->oom = true;
			return;
		}
		memcpy(p, k->p, k->len);
		if (k->p != k->inl)
			free(k->p);
		k->p = p;
		k->cap = cap;
	}
	memcpy(k->p + k->len, d, n);
	k->len += n;
}

static void key_byte(struct key *k, char c)
{
	key_add(k, &c, 1);
}

/* An id and its terminating separator. */
static void key_id0(struct key *k, const char *id)
{
	key_add(k, id, strlen(id) + 1);
}

static void key_seq(struct key *k, uint64_t seq)
{
	char b[8];

	put_be64(b, seq);
	key_add(k, b, 8);
}

/* Smallest key greater than every key starting with k: drop trailing 0xff
 * bytes and bump the last one. false if there is none (all 0xff). */
static bool key_prefix_end(struct key *k)
{
	while (k->len && (unsigned char)k->p[k->len - 1] == 0xff)
		k->len--;
	if (!k->len)
		return false;
	k->p[k->len - 1]++;
	return true;
}

static void key_copy(struct key *dst, const struct key *src)
{
	key_init(dst);
	key_add(dst, src->p, src->len);
	dst->oom |= src->oom;
}

/* ---- keys of the layout (store.h) -------------------------------------- */

static void k_meta1(struct key *k, char tag, const char *id)
{
	key_init(k);
	key_byte(k, tag);
	key_add(k, id, strlen(id));
}

/* ch \0 kind: the history prefix of one record kind of a channel */
static void k_hist(struct key *k, const char *ch, char kind)
{
	key_init(k);
	key_id0(k, ch);
	key_byte(k, kind);
}

static void k_msgs(struct key *k, const char *ch, uint64_t root)
{
	if (root) {
		k_hist(k, ch, 'r');
		key_seq(k, root);
	} else {
		k_hist(k, ch, 'm');
	}
}

static void k_member(struct key *k, const char *ch, const char *user)
{
	key_init(k);
	key_byte(k, 'M');
	key_id0(k, ch);
	key_add(k, user, strlen(user));
}

static void k_user_ch(struct key *k, const char *ws, const char *user,
		      const char *ch)
{
	key_init(k);
	key_byte(k, 'U');
	key_id0(k, ws);
	key_id0(k, user);
	key_add(k, ch, strlen(ch));
}

static void k_mention_pfx(struct key *k, const char *ch, const char *user)
{
	key_init(k);
	key_byte(k, 'N');
	key_id0(k, ch);
	key_id0(k, user);
}

static void k_cmid(struct key *k, const char *ch, const char *user,
		   const char *cmid, size_t cmid_len)
{
	key_init(k);
	key_byte(k, 'I');
	key_id0(k, ch);
	key_id0(k, user);
	key_add(k, cmid, cmid_len);
}

/* ---- prefix extractor -------------------------------------------------- */

/*
 * Prefix = everything up to and including the first NUL: "'M' ch \0",
 * "'U' ws \0", "ch \0" in history. Every scan this file makes stays inside
 * one such prefix, so prefix blooms can skip files and memtables that do not
 * hold the channel (or workspace) at all. 'C' and 'S' keys have no NUL and
 * are left out of the domain; point lookups use the whole-key bloom.
 */
static char *pfx_transform(void *st, const char *key, size_t len, size_t *out)
{
	const char *z = memchr(key, 0, len);

	(void)st;
	*out = z ? (size_t)(z - key) + 1 : len;
	return (char *)key;
}

static unsigned char pfx_in_domain(void *st, const char *key, size_t len)
{
	(void)st;
	return memchr(key, 0, len) != NULL;
}

static unsigned char pfx_in_range(void *st, const char *key, size_t len)
{
	(void)st;
	(void)key;
	(void)len;
	return 0;
}

static const char *pfx_name(void *st)
{
	(void)st;
	return "parley.id0.v1";
}

static void pfx_destroy(void *st)
{
	(void)st;
}

static rocksdb_slicetransform_t *pfx_new(void)
{
	return rocksdb_slicetransform_create(NULL, pfx_destroy, pfx_transform,
					     pfx_in_domain, pfx_in_range,
					     pfx_name);
}

/* ---- write side ---------------------------------------------------------- */

store_batch *store_batch_new(store *s)
{
	store_batch *b = calloc(1, sizeof(*b));

	if (b)
		b->s = s;
	return b;
}

void store_batch_free(store_batch *b)
{
	if (!b)
		return;
	free(b->buf);
	free(b);
}

size_t store_batch_count(const store_batch *b)
{
	return b->nrec;
}

const void *store_batch_bytes(const store_batch *b, size_t *len)
{
	*len = b->oom ? 0 : b->len;
	return b->oom ? NULL : b->buf;
}

bool store_batch_failed(const store_batch *b)
{
	return b->oom;
}

/* Another host's records, checked whole before anything is taken: every
 * record inside the bytes, a known op, a family this store has. */
store_batch *store_batch_load(store *s, const void *data, size_t len)
{
	const char *p = data, *end = p + len;
	store_batch *b;
	size_t n = 0;

	while (p < end) {
		struct op_hdr h;

		if ((size_t)(end - p) < sizeof(h))
			return NULL;
		memcpy(&h, p, sizeof(h));
		if ((h.op != OP_PUT && h.op != OP_DEL && h.op != OP_DELRANGE) ||
		    (h.cf != CF_META && h.cf >= s->nranges) ||
		    (size_t)(end - p) - sizeof(h) < (size_t)h.klen + h.vlen)
			return NULL;
		p += sizeof(h) + h.klen + h.vlen;
		n++;
	}
	b = store_batch_new(s);
	if (!b)
		return NULL;
	if (len) {
		b->buf = malloc(len);
		if (!b->buf) {
			free(b);
			return NULL;
		}
		memcpy(b->buf, data, len);
	}
	b->len = b->cap = len;
	b->nrec = n;
	return b;
}

unsigned store_nranges(const store *s)
{
	return s->nranges;
}

/* The value is pre (prelen bytes) followed by v: a header in front of a
 * caller's bytes without copying them twice. */
static void b_op(store_batch *b, uint8_t op, uint16_t cf, const struct key *k,
		 const void *pre, size_t prelen, const void *v, size_t vlen)
{
	struct op_hdr h = { .op = op, .cf = cf };
	size_t need;

	if (vlen > UINT32_MAX - prelen) {
		b->oom = true;
		return;
	}
	vlen += prelen;
	need = sizeof(h) + k->len + vlen;

	if (b->oom || k->oom || k->len > UINT32_MAX || vlen > UINT32_MAX) {
		b->oom = true;
		return;
	}
	if (b->len + need > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		char *p;

		while (cap < b->len + need)
			cap *= 2;
		p = realloc(b->buf, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->buf = p;
		b->cap = cap;
	}
	h.klen = (uint32_t)k->len;
	h.vlen = (uint32_t)vlen;
	memcpy(b->buf + b->len, &h, sizeof(h));
	memcpy(b->buf + b->len + sizeof(h), k->p, k->len);
	if (prelen)
		memcpy(b->buf + b->len + sizeof(h) + k->len, pre, prelen);
	if (vlen > prelen)
		memcpy(b->buf + b->len + sizeof(h) + k->len + prelen, v,
		       vlen - prelen);
	b->len += need;
	b->nrec++;
}

static void b_put(store_batch *b, uint16_t cf, struct key *k, const void *v,
		  size_t vlen)
{
	b_op(b, OP_PUT, cf, k, NULL, 0, v, vlen);
	key_fini(k);
}

static void b_del(store_batch *b, uint16_t cf, struct key *k)
{
	b_op(b, OP_DEL, cf, k, NULL, 0, NULL, 0);
	key_fini(k);
}

static void b_delrange(store_batch *b, uint16_t cf, struct key *lo,
		       struct key *hi)
{
	if (hi->oom)
		b->oom = true;
	b_op(b, OP_DELRANGE, cf, lo, NULL, 0, hi->p, hi->len);
	key_fini(lo);
	key_fini(hi);
}

void store_put_channel(store_batch *b, const store_channel *c)
{
	const char *f[4] = { c->id, c->ws, c->name, c->creator };
	char v[2 + 8 + 4 * (1 + 255)];
	size_t n = 0;
	struct key k;

	v[n++] = CHAN_REC_VERSION;
	v[n++] = (char)c->kind;
	put_le64(v + n, c->created_ms);
	n += 8;
	for (int i = 0; i < 4; i++) {
		size_t l = strnlen(f[i], 255);

		v[n++] = (char)l;
		memcpy(v + n, f[i], l);
		n += l;
	}
	k_meta1(&k, 'C', c->id);
	b_put(b, CF_META, &k, v, n);

	if (c->kind == STORE_PUBLIC) {
		key_init(&k);
		key_byte(&k, 'P');
		key_id0(&k, c->ws);
		key_add(&k, c->id, strlen(c->id));
		b_put(b, CF_META, &k, NULL, 0);
	}
}

void store_put_chstat(store_batch *b, const char *ch, const store_chstat *st)
{
	char v[24];
	struct key k;

	put_le64(v, st->last_seq);
	put_le64(v + 8, st->msgs);
	put_le64(v + 16, st->members);
	k_meta1(&k, 'S', ch);
	b_put(b, CF_META, &k, v, sizeof(v));
}

void store_put_marker(store_batch *b, const char *ch, const char *user,
		      const store_member *m)
{
	char v[24];
	struct key k;

	put_le64(v, m->read_seq);
	put_le64(v + 8, m->joined_seq);
	put_le64(v + 16, m->joined_ms);
	k_member(&k, ch, user);
	b_put(b, CF_META, &k, v, sizeof(v));
}

void store_put_member(store_batch *b, const char *ws, const char *ch,
		      const char *user, const store_member *m)
{
	struct key k;

	store_put_marker(b, ch, user, m);
	k_user_ch(&k, ws, user, ch);
	b_put(b, CF_META, &k, NULL, 0);
}

void store_del_member(store_batch *b, const char *ws, const char *ch,
		      const char *user)
{
	struct key k, hi;

	k_member(&k, ch, user);
	b_del(b, CF_META, &k);
	k_user_ch(&k, ws, user, ch);
	b_del(b, CF_META, &k);

	/* A user who rejoins starts with no mentions, so drop them all. */
	k_mention_pfx(&k, ch, user);
	key_copy(&hi, &k);
	key_prefix_end(&hi);
	b_delrange(b, CF_META, &k, &hi);
}

void store_put_cmid(store_batch *b, const char *ch, const char *user,
		    const char *cmid, size_t cmid_len, uint64_t seq)
{
	char v[8];
	struct key k;

	put_be64(v, seq);
	k_cmid(&k, ch, user, cmid, cmid_len);
	b_put(b, CF_META, &k, v, sizeof(v));
}

void store_put_mention(store_batch *b, const char *ch, const char *user,
		       uint64_t seq, uint64_t cum)
{
	char v[8];
	struct key k;

	put_le64(v, cum);
	k_mention_pfx(&k, ch, user);
	key_seq(&k, seq);
	b_put(b, CF_META, &k, v, sizeof(v));
}

void store_put_event(store_batch *b, const char *ch, uint64_t seq,
		     const void *ev, size_t len, uint64_t msgs_cum)
{
	uint16_t cf = (uint16_t)ch_range(b->s, ch);
	struct key k;

	char cum[8];

	/* One record: the count in front of the frame (an 'n' record of
	 * its own was a second memtable insert per send). */
	put_le64(cum, msgs_cum);
	k_hist(&k, ch, 'e');
	key_seq(&k, seq);
	b_op(b, OP_PUT, cf, &k, cum, sizeof(cum), ev, len);
	key_fini(&k);
}

void store_put_msg(store_batch *b, const char *ch, uint64_t thread_root,
		   uint64_t seq, const void *state, size_t len)
{
	struct key k;

	k_msgs(&k, ch, thread_root);
	key_seq(&k, seq);
	b_put(b, (uint16_t)ch_range(b->s, ch), &k, state, len);
}

static void k_versions(struct key *k, const char *ch, uint64_t target)
{
	k_hist(k, ch, 'v');
	key_seq(k, target);
}

void store_put_version(store_batch *b, const char *ch, uint64_t target,
		       uint64_t seq, const void *v, size_t len)
{
	struct key k;

	k_versions(&k, ch, target);
	key_seq(&k, seq);
	b_put(b, (uint16_t)ch_range(b->s, ch), &k, v, len);
}

void store_del_versions(store_batch *b, const char *ch, uint64_t target)
{
	struct key lo, hi;

	k_versions(&lo, ch, target);
	key_copy(&hi, &lo);
	key_prefix_end(&hi);
	b_delrange(b, (uint16_t)ch_range(b->s, ch), &lo, &hi);
}

/* ---- commit path ------------------------------------------------------- */

static rocksdb_column_family_handle_t *cf_of(store *s, uint16_t cf)
{
	return cf == CF_META ? s->cf_meta : s->cf_hist[cf];
}

/* The log was written by b_op() of this process: its records are whole and
 * its family indexes come from ch_range(), so they are in range. */
static void put_op(store *s, rocksdb_writebatch_t *wb, const char *p)
{
	struct op_hdr h;
	const char *k, *v;
	rocksdb_column_family_handle_t *cf;

	memcpy(&h, p, sizeof(h));
	k = p + sizeof(h);
	v = k + h.klen;
	cf = cf_of(s, h.cf);
	switch (h.op) {
	case OP_PUT:
		rocksdb_writebatch_put_cf(wb, cf, k, h.klen, v, h.vlen);
		break;
	case OP_DEL:
		rocksdb_writebatch_delete_cf(wb, cf, k, h.klen);
		break;
	case OP_DELRANGE:
		rocksdb_writebatch_delete_range_cf(wb, cf, k, h.klen, v, h.vlen);
		break;
	}
}

static size_t op_size(const char *p)
{
	struct op_hdr h;

	memcpy(&h, p, sizeof(h));
	return sizeof(h) + h.klen + h.vlen;
}

/* Puts in (family, key) order; equal keys keep their order (the index
 * breaks the tie), so the later put still wins. */
static int op_key_cmp(const char *a, const char *b)
{
	struct op_hdr ha, hb;
	int c;

	memcpy(&ha, a, sizeof(ha));
	memcpy(&hb, b, sizeof(hb));
	if (ha.cf != hb.cf)
		return ha.cf < hb.cf ? -1 : 1;
	c = memcmp(a + sizeof(ha), b + sizeof(hb),
		   ha.klen < hb.klen ? ha.klen : hb.klen);
	if (c)
		return c;
	return ha.klen == hb.klen ? 0 : ha.klen < hb.klen ? -1 : 1;
}

static int op_cmp(const void *a, const void *b)
{
	const struct sync_op *x = a, *y = b;
	int c = op_key_cmp(x->p, y->p);

	if (c)
		return c;
	return x->i < y->i ? -1 : 1;
}

/* A run of puts, sorted; of several puts of one key only the last is
 * written: no reader sees a write batch half applied, so the earlier
 * values could never be read (a read marker or a channel's counters put
 * by every turn of the group). Returns the puts left out. */
static size_t put_sorted(store *s, rocksdb_writebatch_t *wb,
			 struct sync_op *o, size_t n)
{
	size_t dropped = 0;

	if (n < 2) { /* also no array yet: qsort's is never NULL */
		if (n)
			put_op(s, wb, o[0].p);
		return 0;
	}
	qsort(o, n, sizeof(*o), op_cmp);
	for (size_t i = 0; i < n; i++) {
		if (i + 1 < n && !op_key_cmp(o[i].p, o[i + 1].p)) {
			dropped++;
			continue;
		}
		put_op(s, wb, o[i].p);
	}
	return dropped;
}

/*
 * The group's records, into one write batch. Puts go in key order within
 * each family: RocksDB's memtable is a skip list that remembers where the
 * last insert went, so ascending keys are found from there instead of
 * from the top, and a group interleaves five records of every send (event,
 * history state, cmid, marker, counters) of many channels. Measured with
 * perf on acks 64x8: the skip list's search was a fifth of parleyd's CPU.
 * A delete or range delete is a barrier that nothing crosses: a put after
 * it in the same group may fall in its range and must stay after it.
 */
static size_t replay_group(store *s, struct syncer *y, store_batch *list,
			   size_t nrec)
{
	size_t n = 0, seg = 0, dropped = 0;

	if (nrec > y->capops) {
		struct sync_op *o = realloc(y->ops, nrec * sizeof(*o));

		if (!o) { /* handoff order, unsorted: still whole */
			for (store_batch *b = list; b; b = b->next)
				for (const char *p = b->buf;
				     !b->oom && p < b->buf + b->len;
				     p += op_size(p))
					put_op(s, y->wb, p);
			return 0;
		}
		y->ops = o;
		y->capops = nrec;
	}
	for (store_batch *b = list; b; b = b->next) {
		for (const char *p = b->buf; !b->oom && p < b->buf + b->len;
		     p += op_size(p)) {
			struct op_hdr h;

			memcpy(&h, p, sizeof(h));
			if (h.op != OP_PUT) {
				dropped += put_sorted(s, y->wb, y->ops + seg,
						      n - seg);
				put_op(s, y->wb, p);
				seg = n;
				continue;
			}
			y->ops[n].p = p;
			y->ops[n].i = (uint32_t)n;
			n++;
		}
	}
	return dropped + put_sorted(s, y->wb, y->ops + seg, n - seg);
}

/*
 * RocksDB counts into a thread-local perf context on every operation
 * unless told not to (its default level is "counts"), and in a shared
 * library each of those touches goes through __tls_get_addr. perf on acks
 * 64x8: 3-4% of parleyd's CPU in those lookups, gone at level 1
 * (kDisable). The level is per thread: set on each thread's first use.
 */
static __thread bool tl_perf_off;

static void perf_off(void)
{
	if (tl_perf_off)
		return;
	rocksdb_set_perf_level(1);
	tl_perf_off = true;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static unsigned bucket_us(uint64_t us)
{
	unsigned i = 0;

	while (i < 15 && us > (16ull << i))
		i++;
	return i;
}

static unsigned bucket_n(uint64_t n)
{
	unsigned i = 0;

	while (i < 15 && n > (1ull << i))
		i++;
	return i;
}

/* list: handoff order. One synced write for all of it, then the callbacks. */
static void sync_group(struct syncer *y, store_batch *list)
{
	store *s = y->s;
	uint64_t nb = 0, nrec = 0, merged;
	int status = 0;

	rocksdb_writebatch_clear(y->wb);
	/* A batch that lost a record fails alone: writing the rest of it
	 * would break invariant 1, failing its neighbours would punish
	 * channels that did nothing wrong. */
	for (store_batch *b = list; b; b = b->next) {
		if (b->oom)
			continue;
		nb++;
		nrec += b->nrec;
	}
	merged = replay_group(s, y, list, nrec);

	/* Batches with no records have nothing to make durable: everything
	 * handed over before them was synced by an earlier write. */
	if (nrec) {
		char *err = NULL;
		uint64_t t0 = now_us(), us;

		rocksdb_write(s->db, s->wo_sync, y->wb, &err);
		us = now_us() - t0;
		if (err) {
			plog(PL_ERROR, "storage", "%s: synced write failed: %s",
			     s->dir, err);
			rocksdb_free(err);
			status = -EIO;
		} else {
			stat_add(&s->stats.commits, 1);
			stat_add(&s->stats.batches, nb);
			stat_add(&s->stats.records, nrec);
			stat_add(&s->stats.records_merged, merged);
			stat_add(&s->stats.commit_us_sum, us);
			stat_add(&s->stats.hist_us[bucket_us(us)], 1);
			stat_add(&s->stats.hist_batch[bucket_n(nb)], 1);
		}
	}

	while (list) {
		store_batch *next = list->next;
		int st = list->oom ? -EIO : status;

		if (st)
			stat_add(&s->stats.failures, 1);
		if (list->done)
			list->done(list->ctx, st);
		store_batch_free(list);
		list = next;
	}
}

static void *sync_main(void *arg)
{
	struct syncer *y = arg;

	perf_off();

	for (;;) {
		store_batch *b, *fifo = NULL;
		/* Read before the swap: whatever was handed over before
		 * close set the flag is then certain to be in this swap. */
		int stopping = __atomic_load_n(&y->stop, __ATOMIC_ACQUIRE);

		b = __atomic_exchange_n(&y->head, NULL, __ATOMIC_ACQUIRE);
		if (b) {
			while (b) {
				store_batch *next = b->next;

				b->next = fifo;
				fifo = b;
				b = next;
			}
			sync_group(y, fifo);
			continue;
		}
		/* Only stop once the stack was seen empty: close drains. */
		if (stopping)
			break;
		while (sem_wait(&y->wake) && errno == EINTR)
			;
	}
	return NULL;
}

/*
 * Lock-free and allocation-free: the link lives in the batch. Safe from any
 * number of threads, though the design has one per shard; the order of
 * completion is the order the pushes succeeded. -EINVAL (shard out of
 * range, no batch) leaves b with the caller. done may be NULL.
 */
int store_commit(store *s, unsigned shard, store_batch *b,
		 void (*done)(void *ctx, int status), void *ctx)
{
	struct syncer *y;
	store_batch *old;

	if (!b || shard >= s->nshards)
		return -EINVAL;
	y = &s->sync[shard];
	b->done = done;
	b->ctx = ctx;
	old = __atomic_load_n(&y->head, __ATOMIC_RELAXED);
	do {
		b->next = old;
	} while (!__atomic_compare_exchange_n(&y->head, &old, b, true,
					      __ATOMIC_RELEASE,
					      __ATOMIC_RELAXED));
	/* A non-empty stack means a wakeup is already owed for it. */
	if (!old)
		sem_post(&y->wake);
	return 0;
}

void store_get_stats(store *s, store_stats *out)
{
	const uint64_t *src = (const uint64_t *)&s->stats;
	uint64_t *dst = (uint64_t *)out;

	/* store_stats is all uint64_t, so copy it field by field atomically. */
	for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

/* ---- read side ----------------------------------------------------------- */

/* The pinned view of this thread (store_read_pin), or none: reads use
 * s->ro. Thread-local, since every shard thread reads on its own. */
static __thread const rocksdb_snapshot_t *tl_snap;
static __thread rocksdb_readoptions_t *tl_ro;

int store_read_pin(store *s)
{
	if (tl_snap)
		return -EBUSY; /* no nesting: the outer pin stays */
	tl_ro = rocksdb_readoptions_create();
	if (!tl_ro)
		return -ENOMEM;
	tl_snap = rocksdb_create_snapshot(s->db);
	rocksdb_readoptions_set_snapshot(tl_ro, tl_snap);
	return 0;
}

void store_read_unpin(store *s)
{
	if (!tl_ro)
		return;
	rocksdb_readoptions_destroy(tl_ro);
	rocksdb_release_snapshot(s->db, tl_snap);
	tl_ro = NULL;
	tl_snap = NULL;
}

static int get_pinned(store *s, rocksdb_column_family_handle_t *cf,
		      struct key *k, rocksdb_pinnableslice_t **out)
{
	char *err = NULL;

	*out = NULL;
	if (k->oom) {
		key_fini(k);
		return -ENOMEM;
	}
	perf_off();
	*out = rocksdb_get_pinned_cf(s->db, tl_ro ? tl_ro : s->ro, cf, k->p,
				     k->len, &err);
	key_fini(k);
	if (err) {
		rocksdb_free(err);
		if (*out)
			rocksdb_pinnableslice_destroy(*out);
		*out = NULL;
		return -EIO;
	}
	return *out ? 0 : -ENOENT;
}

static int get_fixed(store *s, rocksdb_column_family_handle_t *cf,
		     struct key *k, char *v, size_t n)
{
	rocksdb_pinnableslice_t *ps;
	const char *p;
	size_t len;
	int rc = get_pinned(s, cf, k, &ps);

	if (rc)
		return rc;
	p = rocksdb_pinnableslice_value(ps, &len);
	if (len == n)
		memcpy(v, p, n);
	else
		rc = -EIO;
	rocksdb_pinnableslice_destroy(ps);
	return rc;
}

static bool take_str(const char **p, const char *end, char *dst, size_t max)
{
	size_t l;

	if (*p >= end)
		return false;
	l = (unsigned char)**p;
	(*p)++;
	if (l > max || (size_t)(end - *p) < l)
		return false;
	memcpy(dst, *p, l);
	dst[l] = 0;
	*p += l;
	return true;
}

int store_get_channel(store *s, const char *ch, store_channel *out)
{
	rocksdb_pinnableslice_t *ps;
	const char *p, *end;
	size_t len;
	struct key k;
	int rc;

	k_meta1(&k, 'C', ch);
	rc = get_pinned(s, s->cf_meta, &k, &ps);
	if (rc)
		return rc;
	p = rocksdb_pinnableslice_value(ps, &len);
	end = p + len;
	memset(out, 0, sizeof(*out));
	rc = -EIO;
	if (len < 10 || p[0] != CHAN_REC_VERSION)
		goto out;
	out->kind = (uint8_t)p[1];
	out->created_ms = get_le64(p + 2);
	p += 10;
	if (take_str(&p, end, out->id, STORE_ID_MAX) &&
	    take_str(&p, end, out->ws, STORE_ID_MAX) &&
	    take_str(&p, end, out->name, sizeof(out->name) - 1) &&
	    take_str(&p, end, out->creator, STORE_ID_MAX))
		rc = 0;
out:
	rocksdb_pinnableslice_destroy(ps);
	return rc;
}

int store_get_chstat(store *s, const char *ch, store_chstat *out)
{
	char v[24];
	struct key k;
	int rc;

	k_meta1(&k, 'S', ch);
	rc = get_fixed(s, s->cf_meta, &k, v, sizeof(v));
	if (rc)
		return rc;
	out->last_seq = get_le64(v);
	out->msgs = get_le64(v + 8);
	out->members = get_le64(v + 16);
	return 0;
}

int store_get_member(store *s, const char *ch, const char *user,
		     store_member *out)
{
	char v[24];
	struct key k;
	int rc;

	k_member(&k, ch, user);
	rc = get_fixed(s, s->cf_meta, &k, v, sizeof(v));
	if (rc)
		return rc;
	out->read_seq = get_le64(v);
	out->joined_seq = get_le64(v + 8);
	out->joined_ms = get_le64(v + 16);
	return 0;
}

static void k_presence(struct key *k, const char *ws, const char *user)
{
	key_init(k);
	key_byte(k, 'Y');
	key_id0(k, ws);
	key_add(k, user, strlen(user));
}

void store_put_presence(store_batch *b, const char *ws, const char *user,
			const store_presence *p)
{
	char v[9];
	struct key k;

	v[0] = (char)p->status;
	put_le64(v + 1, p->seen_ms);
	k_presence(&k, ws, user);
	b_put(b, CF_META, &k, v, sizeof(v));
}

int store_get_presence(store *s, const char *ws, const char *user,
		       store_presence *out)
{
	char v[9];
	struct key k;
	int rc;

	k_presence(&k, ws, user);
	rc = get_fixed(s, s->cf_meta, &k, v, sizeof(v));
	if (rc)
		return rc;
	out->status = (uint8_t)v[0];
	out->seen_ms = get_le64(v + 1);
	return 0;
}

int store_get_cmid(store *s, const char *ch, const char *user, const char *cmid,
		   size_t cmid_len, uint64_t *seq)
{
	char v[8];
	struct key k;
	int rc;

	k_cmid(&k, ch, user, cmid, cmid_len);
	rc = get_fixed(s, s->cf_meta, &k, v, sizeof(v));
	if (!rc)
		*seq = get_be64(v);
	return rc;
}

int store_get_msg(store *s, const char *ch, uint64_t thread_root, uint64_t seq,
		  void **state, size_t *len)
{
	rocksdb_pinnableslice_t *ps;
	const char *p;
	struct key k;
	int rc;

	k_msgs(&k, ch, thread_root);
	key_seq(&k, seq);
	rc = get_pinned(s, s->cf_hist[ch_range(s, ch)], &k, &ps);
	if (rc)
		return rc;
	p = rocksdb_pinnableslice_value(ps, len);
	*state = malloc(*len ? *len : 1);
	if (*state)
		memcpy(*state, p, *len);
	else
		rc = -ENOMEM;
	rocksdb_pinnableslice_destroy(ps);
	return rc;
}

/*
 * An iterator confined to one key prefix by both bounds, so Next/Prev stop
 * at its ends by themselves and RocksDB never reads past them. The bounds
 * point into this struct: it must not move while the iterator lives.
 */
struct scan {
	rocksdb_readoptions_t *ro;
	rocksdb_iterator_t *it;
	struct key lo, hi;
};

static int scan_open(store *s, struct scan *sc,
		     rocksdb_column_family_handle_t *cf, const struct key *pfx,
		     bool total_order)
{
	key_copy(&sc->lo, pfx);
	key_copy(&sc->hi, pfx);
	sc->it = NULL;
	sc->ro = NULL;
	if (sc->lo.oom || sc->hi.oom)
		goto fail_key;
	sc->ro = rocksdb_readoptions_create();
	if (!sc->ro)
		goto fail_key;
	rocksdb_readoptions_set_iterate_lower_bound(sc->ro, sc->lo.p,
						    sc->lo.len);
	if (key_prefix_end(&sc->hi))
		rocksdb_readoptions_set_iterate_upper_bound(sc->ro, sc->hi.p,
							    sc->hi.len);
	if (total_order)
		rocksdb_readoptions_set_total_order_seek(sc->ro, 1);
	if (tl_snap)
		rocksdb_readoptions_set_snapshot(sc->ro, tl_snap);
	perf_off();
	sc->it = rocksdb_create_iterator_cf(s->db, sc->ro, cf);
	if (!sc->it)
		goto fail_iter;
	return 0;

fail_iter:
	rocksdb_readoptions_destroy(sc->ro);
	sc->ro = NULL;
fail_key:
	key_fini(&sc->lo);
	key_fini(&sc->hi);
	return -ENOMEM;
}

/* Closes the scan; -EIO if the iterator hit an error on the way. */
static int scan_close(struct scan *sc)
{
	char *err = NULL;
	int rc = 0;

	rocksdb_iter_get_error(sc->it, &err);
	if (err) {
		rocksdb_free(err);
		rc = -EIO;
	}
	rocksdb_iter_destroy(sc->it);
	rocksdb_readoptions_destroy(sc->ro);
	key_fini(&sc->lo);
	key_fini(&sc->hi);
	return rc;
}

static void scan_seek(struct scan *sc, const struct key *k)
{
	rocksdb_iter_seek(sc->it, k->p, k->len);
}

static void scan_seek_prev(struct scan *sc, const struct key *k)
{
	rocksdb_iter_seek_for_prev(sc->it, k->p, k->len);
}

/* Key of the current entry with the scan prefix stripped; NULL at the end. */
static const char *scan_rest(struct scan *sc, size_t *len)
{
	const char *k;
	size_t klen;

	if (!rocksdb_iter_valid(sc->it))
		return NULL;
	k = rocksdb_iter_key(sc->it, &klen);
	/* The bounds already confine the scan; this guards the contract. */
	if (klen < sc->lo.len || memcmp(k, sc->lo.p, sc->lo.len))
		return NULL;
	*len = klen - sc->lo.len;
	return k + sc->lo.len;
}

int store_msgs_at(store *s, const char *ch, uint64_t at, uint64_t *cum)
{
	struct scan sc;
	struct key pfx, k;
	const char *r;
	size_t rlen, vlen;
	int rc;

	*cum = 0;
	k_hist(&pfx, ch, 'e');
	rc = scan_open(s, &sc, s->cf_hist[ch_range(s, ch)], &pfx, false);
	if (rc) {
		key_fini(&pfx);
		return rc;
	}
	key_copy(&k, &pfx);
	key_seq(&k, at);
	scan_seek_prev(&sc, &k);
	/* The newest event at or before 'at' that carries a count (events
	 * that are not messages may carry 0: walk back over them). */
	while ((r = scan_rest(&sc, &rlen)) && rlen == 8) {
		const char *v = rocksdb_iter_value(sc.it, &vlen);

		if (vlen >= 8 && (*cum = get_le64(v)))
			break;
		rocksdb_iter_prev(sc.it);
	}
	key_fini(&k);
	key_fini(&pfx);
	return scan_close(&sc);
}

/* The cumulative count of the newest mention key of user in ch with seq <=
 * at (UINT64_MAX: the newest of all); 0 if none. */
static int mention_cum_at(store *s, const char *ch, const char *user,
			  uint64_t at, uint64_t *cum)
{
	struct scan sc;
	struct key pfx, k;
	const char *v;
	size_t rlen, vlen;
	int rc;

	*cum = 0;
	k_mention_pfx(&pfx, ch, user);
	rc = scan_open(s, &sc, s->cf_meta, &pfx, false);
	if (rc) {
		key_fini(&pfx);
		return rc;
	}
	key_copy(&k, &pfx);
	if (at == UINT64_MAX)
		key_prefix_end(&k);
	else
		key_seq(&k, at);
	scan_seek_prev(&sc, &k);
	if (scan_rest(&sc, &rlen)) {
		v = rocksdb_iter_value(sc.it, &vlen);
		if (rlen != 8 || vlen != 8)
			rc = -EIO;
		else
			*cum = get_le64(v);
	}
	key_fini(&k);
	key_fini(&pfx);
	return rc ? (scan_close(&sc), rc) : scan_close(&sc);
}

int store_mentions_total(store *s, const char *ch, const char *user,
			 uint64_t *cum)
{
	return mention_cum_at(s, ch, user, UINT64_MAX, cum);
}

int store_count_mentions(store *s, const char *ch, const char *user,
			 uint64_t after, uint64_t *n)
{
	uint64_t total, upto;
	int rc;

	*n = 0;
	if (after == UINT64_MAX)
		return 0;
	rc = mention_cum_at(s, ch, user, UINT64_MAX, &total);
	if (!rc && total)
		rc = mention_cum_at(s, ch, user, after, &upto);
	if (!rc && total)
		*n = total - upto;
	return rc;
}

int store_get_event(store *s, const char *ch, uint64_t seq, void **ev,
		    size_t *len, uint64_t *msgs_cum)
{
	rocksdb_pinnableslice_t *ps;
	const char *p;
	struct key k;
	size_t n;
	int rc;

	k_hist(&k, ch, 'e');
	key_seq(&k, seq);
	rc = get_pinned(s, s->cf_hist[ch_range(s, ch)], &k, &ps);
	if (rc)
		return rc;
	p = rocksdb_pinnableslice_value(ps, &n);
	if (n < 8) {
		rocksdb_pinnableslice_destroy(ps);
		return -EIO;
	}
	if (msgs_cum)
		*msgs_cum = get_le64(p);
	*len = n - 8;
	*ev = malloc(*len ? *len : 1);
	if (*ev)
		memcpy(*ev, p + 8, *len);
	else
		rc = -ENOMEM;
	rocksdb_pinnableslice_destroy(ps);
	return rc;
}

/*
 * Shared loop of the id scans: the rest of each key after pfx is the id.
 * Ids are handed over NUL-terminated as a courtesy; len is authoritative.
 * limit 0 means no limit.
 */
static int scan_ids(store *s, struct key *pfx, struct key *start,
		    unsigned limit, store_id_fn fn, void *arg, int *more)
{
	struct scan sc;
	char id[KEY_INLINE];
	const char *r;
	size_t rlen;
	unsigned given = 0;
	int rc, stop;

	if (more)
		*more = 0;
	rc = scan_open(s, &sc, s->cf_meta, pfx, false);
	if (rc)
		goto out;
	scan_seek(&sc, start ? start : pfx);
	while ((r = scan_rest(&sc, &rlen))) {
		if (limit && given == limit) {
			if (more)
				*more = 1;
			break;
		}
		if (rlen >= sizeof(id)) {
			scan_close(&sc);
			rc = -EIO;
			goto out;
		}
		memcpy(id, r, rlen);
		id[rlen] = 0;
		given++;
		stop = fn(arg, id, rlen);
		rocksdb_iter_next(sc.it);
		if (stop) {
			if (more)
				*more = scan_rest(&sc, &rlen) != NULL;
			break;
		}
	}
	rc = scan_close(&sc);
out:
	key_fini(pfx);
	if (start)
		key_fini(start);
	return rc;
}

int store_scan_user_channels(store *s, const char *ws, const char *user,
			     store_id_fn fn, void *arg)
{
	struct key pfx;

	key_init(&pfx);
	key_byte(&pfx, 'U');
	key_id0(&pfx, ws);
	key_id0(&pfx, user);
	return scan_ids(s, &pfx, NULL, 0, fn, arg, NULL);
}

int store_scan_channels(store *s, store_id_fn fn, void *arg)
{
	struct key pfx;

	key_init(&pfx);
	key_byte(&pfx, 'S');
	return scan_ids(s, &pfx, NULL, 0, fn, arg, NULL);
}

int store_scan_public(store *s, const char *ws, store_id_fn fn, void *arg)
{
	struct key pfx;

	key_init(&pfx);
	key_byte(&pfx, 'P');
	key_id0(&pfx, ws);
	return scan_ids(s, &pfx, NULL, 0, fn, arg, NULL);
}

int store_scan_members(store *s, const char *ch, const char *after,
		       unsigned limit, store_id_fn fn, void *arg, int *more)
{
	struct key pfx, start;

	key_init(&pfx);
	key_byte(&pfx, 'M');
	key_id0(&pfx, ch);
	if (!after || !*after)
		return scan_ids(s, &pfx, NULL, limit, fn, arg, more);
	/* after \0 sorts after "after" itself and before any longer id that
	 * extends it, since ids never contain a NUL. */
	key_copy(&start, &pfx);
	key_id0(&start, after);
	return scan_ids(s, &pfx, &start, limit, fn, arg, more);
}

/*
 * Shared loop of the seq-keyed history scans: the rest of each key after
 * pfx is seq8. dir > 0 starts at the first key >= start and goes up;
 * dir < 0 starts at the last key <= start and goes down. v is valid only
 * during the call. limit 0 means no limit.
 */
/* skip: bytes of header in front of each value that fn does not see. */
static int scan_recs(store *s, const char *ch, struct key *pfx,
		     struct key *start, int dir, unsigned limit, size_t skip,
		     store_rec_fn fn, void *arg, int *more)
{
	struct scan sc;
	const char *r, *v;
	size_t rlen, vlen;
	unsigned given = 0;
	int rc, stop;

	if (more)
		*more = 0;
	rc = scan_open(s, &sc, s->cf_hist[ch_range(s, ch)], pfx, false);
	if (rc)
		goto out;
	if (dir > 0)
		scan_seek(&sc, start);
	else
		scan_seek_prev(&sc, start);
	while ((r = scan_rest(&sc, &rlen))) {
		if (rlen != 8) {
			scan_close(&sc);
			rc = -EIO;
			goto out;
		}
		if (limit && given == limit) {
			if (more)
				*more = 1;
			break;
		}
		given++;
		v = rocksdb_iter_value(sc.it, &vlen);
		if (vlen < skip) {
			scan_close(&sc);
			rc = -EIO;
			goto out;
		}
		stop = fn(arg, get_be64(r), v + skip, vlen - skip);
		if (dir > 0)
			rocksdb_iter_next(sc.it);
		else
			rocksdb_iter_prev(sc.it);
		if (stop) {
			if (more)
				*more = scan_rest(&sc, &rlen) != NULL;
			break;
		}
	}
	rc = scan_close(&sc);
out:
	key_fini(pfx);
	key_fini(start);
	return rc;
}

int store_scan_events(store *s, const char *ch, uint64_t after, unsigned limit,
		      store_rec_fn fn, void *arg, int *more)
{
	struct key pfx, start;

	if (after == UINT64_MAX) {
		if (more)
			*more = 0;
		return 0;
	}
	k_hist(&pfx, ch, 'e');
	key_copy(&start, &pfx);
	key_seq(&start, after + 1);
	return scan_recs(s, ch, &pfx, &start, 1, limit, 8, fn, arg, more);
}

int store_scan_versions(store *s, const char *ch, uint64_t target,
			store_rec_fn fn, void *arg)
{
	struct key pfx, start;

	k_versions(&pfx, ch, target);
	key_copy(&start, &pfx);
	return scan_recs(s, ch, &pfx, &start, 1, 0, 0, fn, arg, NULL);
}

int store_scan_msgs(store *s, const char *ch, uint64_t thread_root,
		    uint64_t from, int dir, unsigned limit, store_rec_fn fn,
		    void *arg, int *more)
{
	struct key pfx, start;

	if ((dir > 0 && from == UINT64_MAX) || dir == 0) {
		if (more)
			*more = 0;
		return 0;
	}
	k_msgs(&pfx, ch, thread_root);
	key_copy(&start, &pfx);
	if (dir > 0)
		key_seq(&start, from + 1);
	else
		key_seq(&start, from ? from - 1 : UINT64_MAX);
	/* from 1 descending: nothing is below seq 1, and seq 0 never exists,
	 * so seeking to seq8(0) and finding nothing is the right answer. */
	return scan_recs(s, ch, &pfx, &start, dir, limit, 0, fn, arg, more);
}

/* ---- recovery ------------------------------------------------------------ */

/* Newest seq of kind in ch, 0 if none; *val gets its value if asked for
 * (8-byte values only). */
static int newest(store *s, const char *ch, char kind, uint64_t *seq,
		  uint64_t *val)
{
	struct scan sc;
	struct key pfx, k;
	const char *r;
	size_t rlen, vlen;
	int rc;

	*seq = 0;
	if (val)
		*val = 0;
	k_hist(&pfx, ch, kind);
	rc = scan_open(s, &sc, s->cf_hist[ch_range(s, ch)], &pfx, false);
	if (rc) {
		key_fini(&pfx);
		return rc;
	}
	key_copy(&k, &pfx);
	key_seq(&k, UINT64_MAX);
	scan_seek_prev(&sc, &k);
	r = scan_rest(&sc, &rlen);
	if (r && rlen == 8) {
		*seq = get_be64(r);
		if (val) {
			const char *v = rocksdb_iter_value(sc.it, &vlen);

			if (vlen == 8)
				*val = get_le64(v);
		}
	}
	key_fini(&k);
	key_fini(&pfx);
	return scan_close(&sc);
}

static int count_one(void *arg, const char *id, size_t len)
{
	(void)id;
	(void)len;
	(*(uint64_t *)arg)++;
	return 0;
}

/* Rebuilds ch's 'S' from its history and membership into wb. */
static int rebuild_chstat(store *s, rocksdb_writebatch_t *wb, const char *ch)
{
	uint64_t last, msgs, members = 0;
	char v[24];
	struct key k;
	int rc;

	rc = newest(s, ch, 'e', &last, NULL);
	if (!rc)
		rc = store_msgs_at(s, ch, UINT64_MAX, &msgs);
	if (!rc)
		rc = store_scan_members(s, ch, NULL, 0, count_one, &members,
					NULL);
	if (rc)
		return rc;
	put_le64(v, last);
	put_le64(v + 8, msgs);
	put_le64(v + 16, members);
	k_meta1(&k, 'S', ch);
	if (k.oom) {
		key_fini(&k);
		return -ENOMEM;
	}
	rocksdb_writebatch_put_cf(wb, s->cf_meta, k.p, k.len, v, sizeof(v));
	key_fini(&k);
	return 0;
}

/*
 * Walks every key of one tag ('S' or 'C') in meta and calls check with the
 * channel id. A tag's keys hold no NUL, so they are outside the prefix
 * extractor's domain: this scan needs total order.
 */
static int walk_tag(store *s, char tag,
		    int (*check)(store *s, void *arg, const char *ch,
				 const char *v, size_t vlen),
		    void *arg, uint64_t *channels)
{
	struct scan sc;
	struct key pfx;
	char ch[KEY_INLINE];
	const char *r, *v;
	size_t rlen, vlen;
	int rc;

	key_init(&pfx);
	key_byte(&pfx, tag);
	rc = scan_open(s, &sc, s->cf_meta, &pfx, true);
	if (rc) {
		key_fini(&pfx);
		return rc;
	}
	for (scan_seek(&sc, &pfx); (r = scan_rest(&sc, &rlen));
	     rocksdb_iter_next(sc.it)) {
		if (!rlen || rlen >= sizeof(ch) || memchr(r, 0, rlen))
			continue; /* not a channel key of this layout */
		memcpy(ch, r, rlen);
		ch[rlen] = 0;
		v = rocksdb_iter_value(sc.it, &vlen);
		rc = check(s, arg, ch, v, vlen);
		if (rc < 0)
			break;
		if (rc > 0)
			(*channels)++;
		rc = 0;
	}
	key_fini(&pfx);
	if (scan_close(&sc) && !rc)
		rc = -EIO;
	return rc;
}

/* What recovery's checks share: the repairs go into wb. */
struct recov {
	rocksdb_writebatch_t *wb;
	uint64_t repaired;
};

/* 'S' record against the channel's newest event. Returns 1 (counted). */
static int check_stat(store *s, void *arg, const char *ch, const char *v,
		      size_t vlen)
{
	struct recov *rv = arg;
	uint64_t last;
	int rc = newest(s, ch, 'e', &last, NULL);

	if (rc)
		return rc;
	if (vlen == 24 && get_le64(v) == last)
		return 1;
	plog(PL_WARN, "storage", "channel %s: 'S' last_seq %llu, "
		"newest event %llu; repairing",
		ch, vlen == 24 ? (unsigned long long)get_le64(v) : 0ull,
		(unsigned long long)last);
	rc = rebuild_chstat(s, rv->wb, ch);
	if (rc)
		return rc;
	rv->repaired++;
	return 1;
}

/* A 'C' record without its 'S': counted (1) only when it was missing, the
 * 'S' walk counted the others. */
static int check_created(store *s, void *arg, const char *ch, const char *v,
			 size_t vlen)
{
	struct recov *rv = arg;
	store_chstat st;
	int rc = store_get_chstat(s, ch, &st);

	(void)v;
	(void)vlen;
	if (rc != -ENOENT)
		return rc;
	plog(PL_WARN, "storage", "channel %s has no 'S' record; rebuilding",
		ch);
	rc = rebuild_chstat(s, rv->wb, ch);
	if (rc)
		return rc;
	rv->repaired++;
	return 1;
}

int store_recover(store *s, uint64_t *channels, uint64_t *repaired)
{
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	struct recov rv = { .wb = wb };
	uint64_t nch = 0, nrep = 0;
	char *err = NULL;
	int rc;

	if (!wb)
		return -ENOMEM;
	rc = walk_tag(s, 'S', check_stat, &rv, &nch);
	if (!rc)
		rc = walk_tag(s, 'C', check_created, &rv, &nch);
	nrep = rv.repaired;
	if (!rc && rocksdb_writebatch_count(wb)) {
		rocksdb_write(s->db, s->wo_sync, wb, &err);
		if (err) {
			rocksdb_free(err);
			rc = -EIO;
		}
	}
	rocksdb_writebatch_destroy(wb);
	if (channels)
		*channels = nch;
	if (repaired)
		*repaired = rc ? 0 : nrep;
	return rc;
}

/* ---- lifetime ------------------------------------------------------------ */

/*
 * Number of history families of the database in dir: 0 when there is no
 * database yet. Anything but "default", "meta" and a gapless h00..hNN is
 * refused rather than guessed at.
 */
static int existing_ranges(rocksdb_options_t *o, const char *dir,
			   unsigned *n, char **err)
{
	char path[4096], *rerr = NULL, **names;
	bool seen[MAX_RANGES] = { false };
	size_t count;
	unsigned nh = 0;
	int rc = 0;

	*n = 0;
	snprintf(path, sizeof(path), "%s/CURRENT", dir);
	if (access(path, F_OK))
		return 0;
	names = rocksdb_list_column_families(o, dir, &count, &rerr);
	if (rerr) {
		set_err(err, "storage: listing column families of %s: %s", dir,
			rerr);
		rc = strncmp(rerr, "Corruption", 10) ? -1 : STORE_OPEN_CORRUPT;
		rocksdb_free(rerr);
		free(names); /* RocksDB's C API mallocs an empty list anyway */
		return rc;
	}
	for (size_t i = 0; i < count && !rc; i++) {
		const char *f = names[i];

		if (!strcmp(f, "default") || !strcmp(f, "meta"))
			continue;
		if (f[0] == 'h' && f[1] >= '0' && f[1] <= '9' && f[2] >= '0' &&
		    f[2] <= '9' && !f[3]) {
			unsigned r = (unsigned)(f[1] - '0') * 10 + (f[2] - '0');

			if (!seen[r]) {
				seen[r] = true;
				nh++;
			}
			continue;
		}
		set_err(err, "storage: %s: unexpected column family \"%s\"",
			dir, f);
		rc = -1;
	}
	rocksdb_list_column_families_destroy(names, count);
	if (rc)
		return rc;
	for (unsigned r = 0; r < nh; r++) {
		if (!seen[r]) {
			set_err(err,
				"storage: %s: history families not h00..h%02u",
				dir, nh - 1);
			return -1;
		}
	}
	if (!nh) {
		set_err(err, "storage: %s: no history families", dir);
		return -1;
	}
	*n = nh;
	return 0;
}

static rocksdb_options_t *family_options(const rocksdb_options_t *base,
					 rocksdb_cache_t *cache, bool meta)
{
	rocksdb_options_t *o = rocksdb_options_create_copy(
		(rocksdb_options_t *)base);
	rocksdb_block_based_table_options_t *t;

	if (!o)
		return NULL;
	t = rocksdb_block_based_options_create();
	if (!t) {
		rocksdb_options_destroy(o);
		return NULL;
	}
	rocksdb_block_based_options_set_block_cache(t, cache);
	/* The table options take ownership of the policy. */
	rocksdb_block_based_options_set_filter_policy(
		t, rocksdb_filterpolicy_create_bloom_full(10));
	rocksdb_block_based_options_set_cache_index_and_filter_blocks(t, 1);
	rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(
		t, 1);
	/* Meta is mostly point lookups ('C', 'S', 'M', 'I'): whole-key
	 * filters pay. History is only ever scanned by prefix. */
	rocksdb_block_based_options_set_whole_key_filtering(t, meta);
	rocksdb_block_based_options_set_format_version(t, 5);
	rocksdb_options_set_block_based_table_factory(o, t);
	rocksdb_block_based_options_destroy(t);

	rocksdb_options_set_prefix_extractor(o, pfx_new());
	rocksdb_options_set_memtable_prefix_bloom_size_ratio(o, 0.05);
	rocksdb_options_set_memtable_whole_key_filtering(o, meta);
	rocksdb_options_set_level_compaction_dynamic_level_bytes(o, 1);
	/* Many history families share one WAL: small memtables keep the
	 * memory of idle ones low. */
	rocksdb_options_set_write_buffer_size(o, meta ? 64u << 20 : 16u << 20);
	return o;
}

static int open_db(store *s, const char *dir, bool ro, char **err)
{
	unsigned nf = 2 + s->nranges;
	const char **names;
	const rocksdb_options_t **opts;
	rocksdb_column_family_handle_t **h;
	char (*hn)[4];
	char *rerr = NULL;
	int rc = -1;

	names = calloc(nf, sizeof(*names));
	opts = calloc(nf, sizeof(*opts));
	h = calloc(nf, sizeof(*h));
	hn = calloc(s->nranges, sizeof(*hn));
	s->cf_hist = calloc(s->nranges, sizeof(*s->cf_hist));
	if (!names || !opts || !h || !hn || !s->cf_hist) {
		set_err(err, "storage: out of memory");
		goto out;
	}
	names[0] = "default";
	opts[0] = s->dbopt;
	names[1] = "meta";
	opts[1] = s->metaopt;
	for (unsigned r = 0; r < s->nranges; r++) {
		/* r < MAX_RANGES: always two digits */
		hn[r][0] = 'h';
		hn[r][1] = (char)('0' + r / 10);
		hn[r][2] = (char)('0' + r % 10);
		hn[r][3] = 0;
		names[2 + r] = hn[r];
		opts[2 + r] = s->histopt;
	}
	s->dir = strdup(dir);
	if (ro) /* no LOCK, no writes: a backup stays as it was */
		s->db = rocksdb_open_for_read_only_column_families(
			s->dbopt, dir, (int)nf, names, opts, h, 0, &rerr);
	else
		s->db = rocksdb_open_column_families(s->dbopt, dir, (int)nf,
						     names, opts, h, &rerr);
	if (rerr) {
		set_err(err, "storage: opening %s: %s", dir, rerr);
		s->corrupt = !strncmp(rerr, "Corruption", 10);
		rocksdb_free(rerr);
		s->db = NULL;
		goto out;
	}
	s->cf_default = h[0];
	s->cf_meta = h[1];
	for (unsigned r = 0; r < s->nranges; r++)
		s->cf_hist[r] = h[2 + r];
	rc = 0;
out:
	if (rc) {
		free(s->cf_hist);
		s->cf_hist = NULL;
	}
	free(names);
	free(opts);
	free(h);
	free(hn);
	return rc;
}

static void close_db(store *s)
{
	rocksdb_column_family_handle_destroy(s->cf_default);
	rocksdb_column_family_handle_destroy(s->cf_meta);
	for (unsigned r = 0; r < s->nranges; r++)
		rocksdb_column_family_handle_destroy(s->cf_hist[r]);
	free(s->cf_hist);
	rocksdb_close(s->db);
}

static int make_options(store *s)
{
	rocksdb_options_t *o = rocksdb_options_create();

	if (!o)
		goto fail_db;
	rocksdb_options_set_create_if_missing(o, 1);
	rocksdb_options_set_create_missing_column_families(o, 1);
	rocksdb_options_increase_parallelism(o, 2);
	rocksdb_options_set_max_background_jobs(o, 2);
	/* Two sync threads write at once: let the WAL and memtable stages
	 * of their writes overlap. */
	rocksdb_options_set_enable_pipelined_write(o, 1);
	rocksdb_options_set_max_total_wal_size(o, 256u << 20);
	rocksdb_options_set_db_write_buffer_size(o, 512u << 20);
	rocksdb_options_set_bytes_per_sync(o, 1u << 20);
	rocksdb_options_set_keep_log_file_num(o, 4);
	/* RocksDB's own LOG gets only its header (written at open). Debian's
	 * librocksdb 7.8 is built with assertions, and a second write to a
	 * LOG file after one failed (the disk is full) aborts the process
	 * (WritableFileWriter::AssertFalseAndGetStatusForPrevError): the
	 * error handler itself logs the failed write. parleyd reports
	 * storage errors on stderr instead (tests/e2e/test_storage_full.c). */
	rocksdb_options_set_info_log_level(o, 5 /* HEADER_LEVEL */);
	s->dbopt = o;

	s->cache = rocksdb_cache_create_lru(CACHE_BYTES);
	if (!s->cache)
		goto fail_cache;
	s->metaopt = family_options(o, s->cache, true);
	if (!s->metaopt)
		goto fail_meta;
	s->histopt = family_options(o, s->cache, false);
	if (!s->histopt)
		goto fail_hist;
	return 0;

fail_hist:
	rocksdb_options_destroy(s->metaopt);
fail_meta:
	rocksdb_cache_destroy(s->cache);
fail_cache:
	rocksdb_options_destroy(s->dbopt);
fail_db:
	return -ENOMEM;
}

static void free_options(store *s)
{
	rocksdb_options_destroy(s->histopt);
	rocksdb_options_destroy(s->metaopt);
	rocksdb_options_destroy(s->dbopt);
	rocksdb_cache_destroy(s->cache);
}

static void stop_syncers(store *s)
{
	for (unsigned i = 0; i < s->nshards; i++) {
		struct syncer *y = &s->sync[i];

		if (!y->started)
			continue;
		__atomic_store_n(&y->stop, 1, __ATOMIC_RELEASE);
		sem_post(&y->wake);
		pthread_join(y->thread, NULL);
		y->started = false;
	}
	for (unsigned i = 0; i < s->nshards; i++) {
		if (s->sync[i].wb) {
			rocksdb_writebatch_destroy(s->sync[i].wb);
			sem_destroy(&s->sync[i].wake);
		}
		free(s->sync[i].ops);
	}
	free(s->sync);
	s->sync = NULL;
}

static int start_syncers(store *s, char **err)
{
	size_t sz = sizeof(struct syncer) * (s->nshards ? s->nshards : 1);

	s->sync = aligned_alloc(64, (sz + 63) & ~(size_t)63);
	if (!s->sync) {
		set_err(err, "storage: out of memory");
		return -1;
	}
	memset(s->sync, 0, sz);
	for (unsigned i = 0; i < s->nshards; i++) {
		struct syncer *y = &s->sync[i];
		int e;

		y->s = s;
		y->wb = rocksdb_writebatch_create();
		if (!y->wb || sem_init(&y->wake, 0, 0)) {
			if (y->wb)
				rocksdb_writebatch_destroy(y->wb);
			y->wb = NULL;
			set_err(err, "storage: sync thread %u: setup failed",
				i);
			goto fail;
		}
		e = pthread_create(&y->thread, NULL, sync_main, y);
		if (e) {
			set_err(err, "storage: sync thread %u: %s", i,
				strerror(e));
			goto fail;
		}
		y->started = true;
	}
	return 0;

fail:
	stop_syncers(s);
	return -1;
}

static int open_any(store **out, const char *dir, unsigned nranges,
		    unsigned nshards, bool ro, char **err)
{
	uint64_t nch, nrep;
	unsigned have;
	store *s;
	int rc;
	bool corrupt = false;

	if (err)
		*err = NULL;
	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s) {
		set_err(err, "storage: out of memory");
		goto fail_alloc;
	}
	s->nshards = nshards;
	if (make_options(s)) {
		set_err(err, "storage: out of memory");
		goto fail_options;
	}
	if ((rc = existing_ranges(s->dbopt, dir, &have, err))) {
		s->corrupt = rc == STORE_OPEN_CORRUPT;
		goto fail_ranges;
	}
	if (ro && !have) {
		set_err(err, "storage: %s: no database there", dir);
		goto fail_ranges;
	}
	if (!have && (nranges < 1 || nranges > MAX_RANGES)) {
		set_err(err, "storage: %u history ranges (1..%u allowed)",
			nranges, MAX_RANGES);
		goto fail_ranges;
	}
	s->nranges = have ? have : nranges;
	if (open_db(s, dir, ro, err))
		goto fail_open;

	s->ro = rocksdb_readoptions_create();
	s->wo_sync = rocksdb_writeoptions_create();
	if (!s->ro || !s->wo_sync) {
		set_err(err, "storage: out of memory");
		goto fail_rwopts;
	}
	rocksdb_writeoptions_set_sync(s->wo_sync, 1);

	if (ro) {
		*out = s;
		return 0;
	}
	/* Before the sync threads exist, so nothing races the repairs. */
	rc = store_recover(s, &nch, &nrep);
	if (rc) {
		set_err(err, "storage: recovery of %s failed: %s", dir,
			strerror(-rc));
		goto fail_recover;
	}
	if (nrep)
		plog(PL_WARN, "storage", "%llu of %llu channels repaired",
			(unsigned long long)nrep, (unsigned long long)nch);

	if (start_syncers(s, err))
		goto fail_sync;
	*out = s;
	return 0;

fail_sync:
fail_recover:
fail_rwopts:
	if (s->wo_sync)
		rocksdb_writeoptions_destroy(s->wo_sync);
	if (s->ro)
		rocksdb_readoptions_destroy(s->ro);
	close_db(s);
fail_open:
fail_ranges:
	free_options(s);
fail_options:
	corrupt = s->corrupt;
	free(s->dir);
	free(s);
fail_alloc:
	if (err && !*err)
		set_err(err, "storage: open failed");
	return corrupt ? STORE_OPEN_CORRUPT : -1;
}

int store_open(store **out, const char *dir, unsigned nranges, unsigned nshards,
	       char **err)
{
	return open_any(out, dir, nranges, nshards, false, err);
}

int store_open_ro(store **out, const char *dir, char **err)
{
	return open_any(out, dir, 1, 0, true, err);
}

void store_close(store *s)
{
	if (!s)
		return;
	stop_syncers(s);
	rocksdb_writeoptions_destroy(s->wo_sync);
	rocksdb_readoptions_destroy(s->ro);
	close_db(s);
	free_options(s);
	free(s->dir);
	free(s);
}

/* ---- receipts: delivered positions in DMs ('R') --------------------------- */

static void k_delivered(struct key *k, const char *ch, const char *user)
{
	key_init(k);
	key_byte(k, 'R');
	key_id0(k, ch);
	key_add(k, user, strlen(user));
}

void store_put_delivered(store_batch *b, const char *ch, const char *user,
			 uint64_t seq)
{
	char v[8];
	struct key k;

	put_le64(v, seq);
	k_delivered(&k, ch, user);
	b_put(b, CF_META, &k, v, sizeof(v));
}

int store_get_delivered(store *s, const char *ch, const char *user,
			uint64_t *out)
{
	char v[8];
	struct key k;
	int rc;

	k_delivered(&k, ch, user);
	rc = get_fixed(s, s->cf_meta, &k, v, sizeof(v));
	if (rc)
		return rc;
	*out = get_le64(v);
	return 0;
}

/* ---- names, roles and moderation (issue 13, h-roles) -------------------- */

/*
 *   meta  'G' ch                  -> channel settings: u8 version (1),
 *                                    u8 archived, u8 post, u8 topic length,
 *                                    topic bytes (absent: the defaults)
 *   meta  'O' ch \0 user          -> "" (user is an owner of ch)
 *   meta  'L' ws \0 lower(name)   -> channel id (the name registry: the
 *                                    public or private channel that holds
 *                                    this name, ASCII-lowercased)
 */
#define CHCFG_VERSION 1

void store_put_chcfg(store_batch *b, const char *ch, const store_chcfg *c)
{
	char v[4 + 255];
	size_t l = strnlen(c->topic, sizeof(c->topic) - 1);
	struct key k;

	v[0] = CHCFG_VERSION;
	v[1] = (char)c->archived;
	v[2] = (char)c->post;
	v[3] = (char)l;
	memcpy(v + 4, c->topic, l);
	k_meta1(&k, 'G', ch);
	b_put(b, CF_META, &k, v, 4 + l);
}

int store_get_chcfg(store *s, const char *ch, store_chcfg *out)
{
	rocksdb_pinnableslice_t *ps;
	const char *p;
	size_t len;
	struct key k;
	int rc;

	memset(out, 0, sizeof(*out));
	k_meta1(&k, 'G', ch);
	rc = get_pinned(s, s->cf_meta, &k, &ps);
	if (rc)
		return rc;
	p = rocksdb_pinnableslice_value(ps, &len);
	rc = -EIO;
	if (len >= 4 && p[0] == CHCFG_VERSION &&
	    (size_t)(unsigned char)p[3] <= len - 4 &&
	    (unsigned char)p[3] < sizeof(out->topic)) {
		out->archived = p[1] != 0;
		out->post = (uint8_t)p[2];
		memcpy(out->topic, p + 4, (unsigned char)p[3]);
		out->topic[(unsigned char)p[3]] = 0;
		rc = 0;
	}
	rocksdb_pinnableslice_destroy(ps);
	return rc;
}

static void k_owner(struct key *k, const char *ch, const char *user)
{
	key_init(k);
	key_byte(k, 'O');
	key_id0(k, ch);
	key_add(k, user, strlen(user));
}

void store_put_owner(store_batch *b, const char *ch, const char *user)
{
	struct key k;

	k_owner(&k, ch, user);
	b_put(b, CF_META, &k, NULL, 0);
}

void store_del_owner(store_batch *b, const char *ch, const char *user)
{
	struct key k;

	k_owner(&k, ch, user);
	b_del(b, CF_META, &k);
}

int store_scan_owners(store *s, const char *ch, store_id_fn fn, void *arg)
{
	struct key pfx;

	key_init(&pfx);
	key_byte(&pfx, 'O');
	key_id0(&pfx, ch);
	return scan_ids(s, &pfx, NULL, 0, fn, arg, NULL);
}

static void k_name(struct key *k, const char *ws, const char *lname)
{
	key_init(k);
	key_byte(k, 'L');
	key_id0(k, ws);
	key_add(k, lname, strlen(lname));
}

void store_put_name(store_batch *b, const char *ws, const char *lname,
		    const char *ch)
{
	struct key k;

	k_name(&k, ws, lname);
	b_put(b, CF_META, &k, ch, strlen(ch));
}

void store_del_name(store_batch *b, const char *ws, const char *lname)
{
	struct key k;

	k_name(&k, ws, lname);
	b_del(b, CF_META, &k);
}

int store_get_name(store *s, const char *ws, const char *lname, char *ch)
{
	rocksdb_pinnableslice_t *ps;
	const char *p;
	size_t len;
	struct key k;
	int rc;

	k_name(&k, ws, lname);
	rc = get_pinned(s, s->cf_meta, &k, &ps);
	if (rc)
		return rc;
	p = rocksdb_pinnableslice_value(ps, &len);
	rc = -EIO;
	if (len >= 1 && len <= STORE_ID_MAX) {
		memcpy(ch, p, len);
		ch[len] = 0;
		rc = 0;
	}
	rocksdb_pinnableslice_destroy(ps);
	return rc;
}

/* ---- the user directory (issue 13, h-dir) ------------------------------- */

/* 'W' ws \0 user -> display name; 'w' ws \0 user -> "" */
static void k_dir(struct key *k, char tag, const char *ws, const char *user)
{
	key_init(k);
	key_byte(k, tag);
	key_id0(k, ws);
	key_add(k, user, strlen(user));
}

void store_put_dir_name(store_batch *b, const char *ws, const char *user,
			const char *name, size_t len)
{
	struct key k;

	k_dir(&k, 'W', ws, user);
	b_put(b, CF_META, &k, name, len);
}

void store_put_dir_named(store_batch *b, const char *ws, const char *user)
{
	struct key k;

	k_dir(&k, 'w', ws, user);
	b_put(b, CF_META, &k, "", 0);
}

int store_scan_ws_users(store *s, char tag, const char *ws,
			store_kv_fn fn, void *arg)
{
	struct scan sc;
	struct key pfx;
	const char *r, *v;
	size_t rlen, vlen;
	int rc;

	if (tag != 'W' && tag != 'w' && tag != 'Y')
		return -EINVAL;
	key_init(&pfx);
	key_byte(&pfx, tag);
	key_id0(&pfx, ws);
	rc = scan_open(s, &sc, s->cf_meta, &pfx, false);
	if (rc) {
		key_fini(&pfx);
		return rc;
	}
	scan_seek(&sc, &pfx);
	while ((r = scan_rest(&sc, &rlen))) {
		v = rocksdb_iter_value(sc.it, &vlen);
		if (rlen && rlen <= STORE_ID_MAX && fn(arg, r, rlen, v, vlen))
			break;
		rocksdb_iter_next(sc.it);
	}
	key_fini(&pfx);
	return scan_close(&sc);
}

int store_presence_parse(const void *v, size_t len, store_presence *out)
{
	if (len != 9)
		return -EIO;
	out->status = ((const uint8_t *)v)[0];
	out->seen_ms = get_le64((const char *)v + 1);
	return 0;
}

/* ---- per-user records of notifications (issue 14) ---------------------- */

/* ws \0 user as the key of a tagged record (store_*_meta) */
static size_t urec_key(char *k, const char *ws, const char *user)
{
	size_t lw = strlen(ws), lu = strlen(user);

	memcpy(k, ws, lw);
	k[lw] = 0;
	memcpy(k + lw + 1, user, lu);
	return lw + 1 + lu;
}

void store_put_urec(store_batch *b, char tag, const char *ws,
		    const char *user, const void *v, size_t n)
{
	char k[2 * STORE_ID_MAX + 2];

	store_put_meta(b, tag, k, urec_key(k, ws, user), v, n);
}

void store_del_urec(store_batch *b, char tag, const char *ws,
		    const char *user)
{
	char k[2 * STORE_ID_MAX + 2];

	store_del_meta(b, tag, k, urec_key(k, ws, user));
}

int store_get_urec(store *s, char tag, const char *ws, const char *user,
		   void **v, size_t *n)
{
	char k[2 * STORE_ID_MAX + 2];

	return store_get_meta(s, tag, k, urec_key(k, ws, user), v, n);
}

/* fsync a directory: what was created or renamed in it survives a power
 * cut only once its entry is synced. */
int store_sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc;

	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

int store_scan_member_marks(store *s, const char *ch, store_member_fn fn,
			    void *arg)
{
	struct scan sc;
	struct key pfx;
	store_member m;
	const char *r, *v;
	size_t rlen, vlen;
	int rc;

	key_init(&pfx);
	key_byte(&pfx, 'M');
	key_id0(&pfx, ch);
	rc = scan_open(s, &sc, s->cf_meta, &pfx, false);
	if (rc) {
		key_fini(&pfx);
		return rc;
	}
	scan_seek(&sc, &pfx);
	while ((r = scan_rest(&sc, &rlen))) {
		v = rocksdb_iter_value(sc.it, &vlen);
		if (rlen && rlen <= STORE_ID_MAX && vlen == 24) {
			m.read_seq = get_le64(v);
			m.joined_seq = get_le64(v + 8);
			m.joined_ms = get_le64(v + 16);
			if (fn(arg, r, rlen, &m))
				break;
		}
		rocksdb_iter_next(sc.it);
	}
	key_fini(&pfx);
	return scan_close(&sc);
}

/* ---- files (issue 15): opaque records under a tag ------------------------- */

static void k_meta_any(struct key *k, char tag, const void *key, size_t klen)
{
	key_init(k);
	key_byte(k, (uint8_t)tag);
	key_add(k, key, klen);
}

void store_put_meta(store_batch *b, char tag, const void *key, size_t klen,
		    const void *v, size_t n)
{
	struct key k;

	k_meta_any(&k, tag, key, klen);
	b_put(b, CF_META, &k, v, n);
}

void store_del_meta(store_batch *b, char tag, const void *key, size_t klen)
{
	struct key k;

	k_meta_any(&k, tag, key, klen);
	b_del(b, CF_META, &k);
}

int store_get_meta(store *s, char tag, const void *key, size_t klen,
		   void **v, size_t *n)
{
	rocksdb_pinnableslice_t *ps;
	const char *p;
	struct key k;
	int rc;

	k_meta_any(&k, tag, key, klen);
	rc = get_pinned(s, s->cf_meta, &k, &ps);
	if (rc)
		return rc;
	p = rocksdb_pinnableslice_value(ps, n);
	*v = malloc(*n ? *n : 1);
	if (*v)
		memcpy(*v, p, *n);
	else
		rc = -ENOMEM;
	rocksdb_pinnableslice_destroy(ps);
	return rc;
}

int store_scan_meta(store *s, char tag, const void *prefix, size_t plen,
		    store_meta_fn fn, void *arg)
{
	struct scan sc;
	struct key pfx;
	const char *r, *v;
	size_t rlen, vlen;
	int rc;

	k_meta_any(&pfx, tag, prefix, plen);
	rc = scan_open(s, &sc, s->cf_meta, &pfx, true);
	if (rc) {
		key_fini(&pfx);
		return rc;
	}
	scan_seek(&sc, &pfx);
	while ((r = scan_rest(&sc, &rlen))) {
		v = rocksdb_iter_value(sc.it, &vlen);
		if (fn(arg, r, rlen, v, vlen))
			break;
		rocksdb_iter_next(sc.it);
	}
	key_fini(&pfx);
	return scan_close(&sc);
}

/* ---- backups (issue 16): checkpoint, lock, verify ------------------------ */

int store_checkpoint(store *s, const char *dir, char **err)
{
	rocksdb_checkpoint_t *cp;
	char *rerr = NULL;

	if (err)
		*err = NULL;
	cp = rocksdb_checkpoint_object_create(s->db, &rerr);
	if (rerr) {
		set_err(err, "storage: checkpoint of %s: %s", s->dir, rerr);
		rocksdb_free(rerr);
		return -1;
	}
	/* log_size_for_flush 0: the memtables are flushed first, so the
	 * checkpoint is mostly hard-linked table files (and a short WAL) */
	rocksdb_checkpoint_create(cp, dir, 0, &rerr);
	rocksdb_checkpoint_object_destroy(cp);
	if (rerr) {
		set_err(err, "storage: checkpoint into %s: %s", dir, rerr);
		rocksdb_free(rerr);
		return -1;
	}
	return 0;
}

int store_locked(const char *dir)
{
	char path[4096];
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	int fd, rc;

	snprintf(path, sizeof(path), "%s/LOCK", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	/* RocksDB holds a write lock (fcntl) on LOCK while the db is open */
	rc = fcntl(fd, F_GETLK, &fl);
	close(fd);
	if (rc)
		return -1;
	return fl.l_type != F_UNLCK;
}

struct vctx {
	store *s;
	store_problem_fn fn;
	void *arg;
	store_verify_counts *n;
	uint64_t last; /* the channel's 'S' last_seq, for its members */
	uint64_t members;
	const char *ch;
};

static void problem(struct vctx *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void problem(struct vctx *c, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	c->n->problems++;
	if (c->fn)
		c->fn(c->arg, line);
}

static int verify_member(void *arg, const char *user, size_t ulen,
			 const store_member *m)
{
	struct vctx *c = arg;

	c->members++;
	if (m->read_seq > c->last || m->joined_seq > c->last)
		problem(c, "channel %s: member %.*s: read %llu / joined %llu "
			"past the last seq %llu", c->ch, (int)ulen, user,
			(unsigned long long)m->read_seq,
			(unsigned long long)m->joined_seq,
			(unsigned long long)c->last);
	return 0;
}

/* The event keys of ch: seqs 1..last without a gap, the message counts in
 * front of them never going down, never above the seq. */
static int verify_events(struct vctx *c, const char *ch, uint64_t *last,
			 uint64_t *msgs)
{
	store *s = c->s;
	struct scan sc;
	struct key pfx;
	const char *r, *v;
	size_t rlen, vlen;
	uint64_t expect = 1, prev_cum = 0;
	int rc;

	k_hist(&pfx, ch, 'e');
	rc = scan_open(s, &sc, s->cf_hist[ch_range(s, ch)], &pfx, false);
	if (rc) {
		key_fini(&pfx);
		return rc;
	}
	for (scan_seek(&sc, &pfx); (r = scan_rest(&sc, &rlen));
	     rocksdb_iter_next(sc.it)) {
		uint64_t seq, cum;

		if (rlen != 8) {
			problem(c, "channel %s: an event key of %zu bytes",
				ch, rlen);
			continue;
		}
		seq = get_be64(r);
		if (seq != expect)
			problem(c, "channel %s: events %llu..%llu missing", ch,
				(unsigned long long)expect,
				(unsigned long long)(seq - 1));
		expect = seq + 1;
		c->n->events++;
		v = rocksdb_iter_value(sc.it, &vlen);
		if (vlen < 8) {
			problem(c, "channel %s: event %llu: a record of %zu "
				"bytes", ch, (unsigned long long)seq, vlen);
			continue;
		}
		cum = get_le64(v);
		if (!cum)
			continue;
		if (cum < prev_cum || cum > seq)
			problem(c, "channel %s: event %llu: message count %llu "
				"(the one before: %llu)", ch,
				(unsigned long long)seq,
				(unsigned long long)cum,
				(unsigned long long)prev_cum);
		prev_cum = cum;
	}
	key_fini(&pfx);
	*last = expect - 1;
	*msgs = prev_cum;
	return scan_close(&sc);
}

/* Keys of kind ('m', 'r', 'v') in ch: every seq in them names an event
 * that exists (1..last), a reply or version comes after its target. */
static int verify_refs(struct vctx *c, const char *ch, char kind,
		       uint64_t last)
{
	store *s = c->s;
	struct scan sc;
	struct key pfx;
	const char *r;
	size_t rlen;
	int rc;

	k_hist(&pfx, ch, kind);
	rc = scan_open(s, &sc, s->cf_hist[ch_range(s, ch)], &pfx, false);
	if (rc) {
		key_fini(&pfx);
		return rc;
	}
	for (scan_seek(&sc, &pfx); (r = scan_rest(&sc, &rlen));
	     rocksdb_iter_next(sc.it)) {
		uint64_t a = 0, b;

		if (rlen != (kind == 'm' ? 8u : 16u)) {
			problem(c, "channel %s: a '%c' key of %zu bytes", ch,
				kind, rlen);
			continue;
		}
		if (kind == 'm') {
			b = get_be64(r);
		} else {
			a = get_be64(r);
			b = get_be64(r + 8);
		}
		if (b < 1 || b > last || (kind != 'm' && (a < 1 || a >= b)))
			problem(c, "channel %s: '%c' record %llu/%llu names "
				"no event (last seq %llu)", ch, kind,
				(unsigned long long)a, (unsigned long long)b,
				(unsigned long long)last);
	}
	key_fini(&pfx);
	return scan_close(&sc);
}

static int verify_channel(store *s, void *arg, const char *ch, const char *v,
			  size_t vlen)
{
	struct vctx *c = arg;
	store_channel cr;
	uint64_t last, msgs, st_last, st_msgs, st_members;
	int rc;

	if (vlen != 24) {
		problem(c, "channel %s: 'S' record of %zu bytes", ch, vlen);
		return 1;
	}
	st_last = get_le64(v);
	st_msgs = get_le64(v + 8);
	st_members = get_le64(v + 16);
	rc = store_get_channel(s, ch, &cr);
	if (rc == -ENOENT)
		problem(c, "channel %s: no 'C' record", ch);
	else if (rc)
		return rc;
	rc = verify_events(c, ch, &last, &msgs);
	if (rc)
		return rc;
	if (last != st_last)
		problem(c, "channel %s: 'S' last_seq %llu, newest event %llu",
			ch, (unsigned long long)st_last,
			(unsigned long long)last);
	if (msgs != st_msgs)
		problem(c, "channel %s: 'S' msgs %llu, the events count %llu",
			ch, (unsigned long long)st_msgs,
			(unsigned long long)msgs);
	c->n->msgs += msgs;
	for (const char *k = "mrv"; *k; k++) {
		rc = verify_refs(c, ch, *k, last);
		if (rc)
			return rc;
	}
	c->ch = ch;
	c->last = st_last;
	c->members = 0;
	rc = store_scan_member_marks(s, ch, verify_member, c);
	if (rc)
		return rc;
	c->n->members += c->members;
	if (c->members != st_members)
		problem(c, "channel %s: 'S' members %llu, %llu member records",
			ch, (unsigned long long)st_members,
			(unsigned long long)c->members);
	c->n->channels++;
	return 1;
}

static int verify_created(store *s, void *arg, const char *ch, const char *v,
			  size_t vlen)
{
	struct vctx *c = arg;
	store_chstat st;
	int rc = store_get_chstat(s, ch, &st);

	(void)v;
	(void)vlen;
	if (rc == -ENOENT)
		problem(c, "channel %s: 'C' record without its 'S'", ch);
	else if (rc)
		return rc;
	return 0;
}

int store_verify(store *s, store_problem_fn fn, void *arg,
		 store_verify_counts *out)
{
	struct vctx c = { .s = s, .fn = fn, .arg = arg, .n = out };
	uint64_t nch = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = walk_tag(s, 'S', verify_channel, &c, &nch);
	if (!rc)
		rc = walk_tag(s, 'C', verify_created, &c, &nch);
	return rc;
}
