/*
 * directory: the workspace's people. One directory actor per workspace, on
 * shard dir_shard(ws); it answers users.search and users.get from memory.
 *
 * Who tells it what (each an M_CALL to the directory's shard):
 *   session.c   hello: the display name of the token (dir_on_hello)
 *   channel.c   ch.invite, dm.open: the users named, once durable
 *               (dir_fx_named writes 'w' into the channel's batch)
 *   presence.c  the status watchers are told, when it changes
 *               (dir_note_status), and the user's last seen, once durable
 *               (dir_fx_seen: hello time, last disconnect)
 *   session.c   users.search, users.get (dir_request): answered here,
 *               straight to the connection
 *
 * Durable state: 'W' (names, written here), 'w' (named users, written by
 * the channel actor), 'Y' (presence: last seen). The actor is made on the
 * first message for its workspace and loads all three with three prefix
 * scans; it is never evicted (every status change since start reaches it,
 * so what it holds is complete).
 *
 * The index: one array of (lowercased key, user) sorted by key, holding
 * for each user its lowercased id and, for each word of its lowercased
 * display name, the name from that word to its end ("ann lee" gives
 * "ann lee" and "lee"). A prefix query is then one binary search and a
 * walk over the keys that start with it; a query with a space matches
 * across words ("ann l"). New keys go to a small unsorted side array,
 * merged into the sorted one when it holds 1/32 of its size (at least
 * DIR_PEND), so that growing by one user costs O(1) amortized copies and
 * a query scans few unsorted keys; loading sorts once at the end. The matches are
 * deduplicated (a mark per user per query) and the `limit` smallest ids
 * kept in a bounded max-heap, then sorted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/cluster.h"
#include "actors/commit.h"
#include "actors/directory.h"
#include "actors/session.h"
#include "runtime/hash.h"
#include "runtime/log.h"

#define DIR_PEND  512 /* unsorted keys before a merge */
#define DIR_WORDS 16  /* name words indexed per user */
#define NAME_CAP  129 /* auth_claims.name */

struct duser {
	char *name;      /* display name as given, NULL if none */
	char *lname;     /* the same, ASCII-lowercased (index keys point in) */
	uint64_t seen_ms;
	uint32_t mark;   /* the last query that took it */
	uint8_t status;  /* enum pstatus, as watchers see it */
	uint8_t idlen;
	char id[];       /* id \0 lowercased id \0 */
};

struct ient {
	const char *key; /* into its user's id or lname */
	struct duser *u;
	uint32_t klen;
	uint32_t id4;    /* the user id's first 4 bytes, big-endian: a query
			  * rejects most keys without touching their user */
};

struct dir {
	smap users;          /* id -> struct duser */
	struct ient *v;      /* sorted by key */
	uint32_t n, cap;
	struct ient *pend;   /* not sorted yet */
	uint32_t npend, cappend;
	bool loading;        /* no merges until the load is done */
	uint32_t gen;        /* query counter, for duser.mark */
	uint32_t klen;
	char ws[];
};

/* What travels to the directory's shard. */
enum { DM_HELLO, DM_NAMED, DM_STATUS, DM_SEEN, DM_SEARCH, DM_GET };

struct dir_msg {
	struct m_call c;
	uint8_t kind;
	char ws[ID_CAP], user[ID_CAP];
	char name[NAME_CAP]; /* DM_HELLO ("" = none); DM_SEARCH: q */
	uint8_t status;      /* DM_STATUS */
	uint64_t seen_ms;    /* DM_SEEN */
	rt_conn_id conn;     /* DM_SEARCH, DM_GET: where the answer goes */
	uint64_t rid;
	bool has_rid;
	uint32_t limit;      /* DM_SEARCH, and q's length */
	uint32_t qlen;
	uint32_t n;          /* DM_NAMED, DM_GET */
	char users[][ID_CAP];
};

unsigned dir_shard(const char *ws)
{
	uint64_t h = rt_fnv1a_str(rt_fnv1a_str(RT_FNV_OFFSET, "dir:"), ws);

	return (unsigned)(h % rt_nshards());
}

/* ---- the index ----------------------------------------------------------- */

static int key_cmp(const char *a, uint32_t an, const char *b, uint32_t bn)
{
	int c = memcmp(a, b, an < bn ? an : bn);

	return c ? c : (an > bn) - (an < bn);
}

static int ient_cmp(const void *a, const void *b)
{
	const struct ient *x = a, *y = b;

	return key_cmp(x->key, x->klen, y->key, y->klen);
}

/* First index in v[0..n) whose key is >= k. */
static uint32_t lower_bound(const struct ient *v, uint32_t n, const char *k,
			    uint32_t kn)
{
	uint32_t lo = 0, hi = n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (key_cmp(v[mid].key, v[mid].klen, k, kn) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void merge_pending(struct dir *d)
{
	struct ient *m;
	uint32_t i = 0, j = 0, k = 0;

	if (!d->npend)
		return;
	qsort(d->pend, d->npend, sizeof(*d->pend), ient_cmp);
	if (d->n + d->npend > d->cap)
		d->cap = (d->n + d->npend) + (d->n + d->npend) / 4;
	m = malloc(d->cap * sizeof(*m));
	while (i < d->n || j < d->npend) {
		if (j == d->npend ||
		    (i < d->n && ient_cmp(&d->v[i], &d->pend[j]) <= 0))
			m[k++] = d->v[i++];
		else
			m[k++] = d->pend[j++];
	}
	free(d->v);
	d->v = m;
	d->n = k;
	d->npend = 0;
}

static uint32_t id4_of(const struct duser *u)
{
	uint32_t v = 0;

	for (unsigned i = 0; i < 4; i++)
		v = v << 8 | (i < u->idlen ? (uint8_t)u->id[i] : 0);
	return v;
}

static void ix_add(struct dir *d, const char *key, uint32_t klen,
		   struct duser *u)
{
	/* merge when the side array reaches 1/32 of the sorted one: each
	 * key is then copied ~32 times on average as the index grows, and a
	 * query scans at most n/32 unsorted keys */
	uint32_t lim = d->n / 32 > DIR_PEND ? d->n / 32 : DIR_PEND;

	if (d->npend == d->cappend) {
		d->cappend = d->cappend ? 2 * d->cappend : DIR_PEND;
		d->pend = realloc(d->pend, d->cappend * sizeof(*d->pend));
	}
	d->pend[d->npend++] = (struct ient){ key, u, klen, id4_of(u) };
	if (d->npend >= lim && !d->loading)
		merge_pending(d);
}

static void ix_del(struct dir *d, const char *key, uint32_t klen,
		   struct duser *u)
{
	uint32_t i;

	for (i = 0; i < d->npend; i++) {
		if (d->pend[i].u == u && d->pend[i].key == key) {
			d->pend[i] = d->pend[--d->npend];
			return;
		}
	}
	for (i = lower_bound(d->v, d->n, key, klen);
	     i < d->n && !key_cmp(d->v[i].key, d->v[i].klen, key, klen); i++) {
		/* the key itself, not an equal one: "alice" may be both the
		 * user's id and (a tail of) its name */
		if (d->v[i].u == u && d->v[i].key == key) {
			memmove(&d->v[i], &d->v[i + 1],
				(d->n - i - 1) * sizeof(*d->v));
			d->n--;
			return;
		}
	}
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Calls fn for each indexed word start of u's lowercased name. */
static void name_words(struct dir *d, struct duser *u,
		       void (*fn)(struct dir *, const char *, uint32_t,
				  struct duser *))
{
	uint32_t len, words = 0;

	if (!u->lname)
		return;
	len = (uint32_t)strlen(u->lname);
	for (uint32_t i = 0; i < len && words < DIR_WORDS; i++) {
		if (is_space(u->lname[i]) || (i && !is_space(u->lname[i - 1])))
			continue;
		fn(d, u->lname + i, len - i, u);
		words++;
	}
}

static char *lower_dup(const char *s, size_t n)
{
	char *l = malloc(n + 1);

	for (size_t i = 0; i < n; i++)
		l[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
	l[n] = 0;
	return l;
}

/* ---- users --------------------------------------------------------------- */

static struct duser *user_find(struct dir *d, const char *id, size_t n)
{
	return smap_get(&d->users, id, n);
}

static struct duser *user_make(struct dir *d, const char *id, size_t n)
{
	struct duser *u = user_find(d, id, n);
	char *lid;

	if (u)
		return u;
	u = calloc(1, sizeof(*u) + 2 * (n + 1));
	u->idlen = (uint8_t)n;
	memcpy(u->id, id, n);
	lid = u->id + n + 1;
	for (size_t i = 0; i < n; i++)
		lid[i] = (id[i] >= 'A' && id[i] <= 'Z') ? (char)(id[i] + 32)
							: id[i];
	smap_put(&d->users, u->id, n, u);
	ix_add(d, lid, (uint32_t)n, u);
	return u;
}

/* name[0..n) ("" = none); true if it changed */
static bool user_rename(struct dir *d, struct duser *u, const char *name,
			size_t n)
{
	if (u->name ? (strlen(u->name) == n && !memcmp(u->name, name, n))
		    : !n)
		return false;
	name_words(d, u, ix_del);
	free(u->name);
	free(u->lname);
	u->name = u->lname = NULL;
	if (n) {
		u->name = malloc(n + 1);
		memcpy(u->name, name, n);
		u->name[n] = 0;
		u->lname = lower_dup(name, n);
	}
	name_words(d, u, ix_add);
	return true;
}

/* ---- loading ------------------------------------------------------------- */

static int load_name(void *arg, const char *user, size_t ulen, const void *v,
		     size_t vlen)
{
	struct dir *d = arg;

	user_rename(d, user_make(d, user, ulen), v,
		    vlen < NAME_CAP ? vlen : NAME_CAP - 1);
	return 0;
}

static int load_named(void *arg, const char *user, size_t ulen,
		      const void *v, size_t vlen)
{
	(void)v;
	(void)vlen;
	user_make(arg, user, ulen);
	return 0;
}

static int load_seen(void *arg, const char *user, size_t ulen, const void *v,
		     size_t vlen)
{
	store_presence sp;

	if (store_presence_parse(v, vlen, &sp) == 0)
		user_make(arg, user, ulen)->seen_ms = sp.seen_ms;
	return 0;
}

static struct dir *dir_get(struct shard_state *ss, const char *ws)
{
	size_t n = strlen(ws);
	struct dir *d = smap_get(&ss->dirs, ws, n);

	assert(dir_shard(ws) == ss->id);
	if (d)
		return d;
	d = calloc(1, sizeof(*d) + n + 1);
	memcpy(d->ws, ws, n + 1);
	d->klen = (uint32_t)n;
	smap_put(&ss->dirs, d->ws, n, d);
	/* synced data only: whatever reaches us later is applied after */
	d->loading = true;
	if (store_scan_ws_users(srv.st, 'W', ws, load_name, d) ||
	    store_scan_ws_users(srv.st, 'w', ws, load_named, d) ||
	    store_scan_ws_users(srv.st, 'Y', ws, load_seen, d))
		plog(PL_ERROR, "directory", "directory of %s: storage error "
				"while loading", ws);
	d->loading = false;
	merge_pending(d); /* one sort of everything loaded */
	if (d->cappend > DIR_PEND) {
		free(d->pend);
		d->pend = NULL;
		d->cappend = 0;
	}
	return d;
}

void dir_shard_stop(struct shard_state *ss)
{
	smap_foreach(&ss->dirs, it) {
		struct dir *d = it->val;

		smap_foreach(&d->users, ut) {
			struct duser *u = ut->val;

			free(u->name);
			free(u->lname);
			free(u);
		}
		smap_free(&d->users);
		free(d->v);
		free(d->pend);
		free(d);
	}
	smap_free(&ss->dirs);
}

/* ---- queries ------------------------------------------------------------- */

static int id_cmp(const struct duser *a, const struct duser *b)
{
	return strcmp(a->id, b->id);
}

/* heap[0] is the largest id kept */
static void heap_down(struct duser **h, uint32_t n, uint32_t i)
{
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < n && id_cmp(h[l], h[m]) > 0)
			m = l;
		if (r < n && id_cmp(h[r], h[m]) > 0)
			m = r;
		if (m == i)
			return;
		struct duser *t = h[i];
		h[i] = h[m];
		h[m] = t;
		i = m;
	}
}

static void heap_offer(struct duser **h, uint32_t *n, uint32_t limit,
		       struct duser *u)
{
	if (*n < limit) {
		uint32_t i = (*n)++;

		h[i] = u;
		while (i) {
			uint32_t p = (i - 1) / 2;

			if (id_cmp(h[p], h[i]) >= 0)
				break;
			struct duser *t = h[p];
			h[p] = h[i];
			h[i] = t;
			i = p;
		}
		return;
	}
	if (id_cmp(u, h[0]) >= 0)
		return;
	h[0] = u;
	heap_down(h, *n, 0);
}

static int pid_cmp(const void *a, const void *b)
{
	return id_cmp(*(struct duser *const *)a, *(struct duser *const *)b);
}

/* A new query: a mark no user holds yet. */
static void next_gen(struct dir *d)
{
	if (++d->gen == 0) { /* wrapped: no old mark may look current */
		smap_foreach(&d->users, it)
			((struct duser *)it->val)->mark = 0;
		d->gen = 1;
	}
}

/* Offer e's user to the heap h of the limit smallest ids. *max4 is the
 * id4 of the largest kept once the heap is full: a key whose id4 is above
 * it cannot get in, whether its user was seen already or not, and is
 * dropped without a look at the user (most keys, once the heap fills). */
static void take(struct dir *d, struct duser **h, uint32_t *n, uint32_t limit,
		 const struct ient *e, uint32_t *max4)
{
	struct duser *u = e->u;

	if (*n == limit && e->id4 > *max4)
		return;
	if (u->mark == d->gen)
		return;
	u->mark = d->gen;
	heap_offer(h, n, limit, u);
	if (*n == limit)
		*max4 = id4_of(h[0]);
}

/* The users whose id or a name word starts with q (lowercased, qn bytes),
 * at most limit, ascending by id, into out; returns how many. */
static uint32_t dir_search(struct dir *d, const char *q, uint32_t qn,
			   uint32_t limit, struct duser **out)
{
	uint32_t n = 0, max4 = UINT32_MAX;

	next_gen(d);
	for (uint32_t i = lower_bound(d->v, d->n, q, qn);
	     i < d->n && d->v[i].klen >= qn && !memcmp(d->v[i].key, q, qn); i++)
		take(d, out, &n, limit, &d->v[i], &max4);
	for (uint32_t i = 0; i < d->npend; i++)
		if (d->pend[i].klen >= qn && !memcmp(d->pend[i].key, q, qn))
			take(d, out, &n, limit, &d->pend[i], &max4);
	qsort(out, n, sizeof(*out), pid_cmp);
	return n;
}

static proto_user pu(const struct duser *u)
{
	return (proto_user){ u->id, u->name ? u->name : u->id, u->status,
			     u->seen_ms };
}

static void answer_search(struct shard_state *ss, struct dir *d,
			  struct dir_msg *m)
{
	struct duser *found[PROTO_MAX_USERS_GET];
	proto_user v[PROTO_MAX_USERS_GET];
	uint32_t qn = m->qlen, n;
	char q[NAME_CAP];

	for (uint32_t i = 0; i < qn; i++)
		q[i] = (m->name[i] >= 'A' && m->name[i] <= 'Z')
			       ? (char)(m->name[i] + 32) : m->name[i];
	n = dir_search(d, q, qn, m->limit, found);
	if (!m->has_rid)
		return;
	for (uint32_t i = 0; i < n; i++)
		v[i] = pu(found[i]);
	proto_out_reset(&ss->out);
	proto_enc_users_search_ok(&ss->out, m->rid, v, n);
	send_to_conn(m->conn, &ss->out);
}

static void answer_get(struct shard_state *ss, struct dir *d,
		       struct dir_msg *m)
{
	proto_user v[PROTO_MAX_USERS_GET];
	uint32_t n = 0;

	if (!m->has_rid)
		return;
	next_gen(d);
	for (uint32_t i = 0; i < m->n; i++) {
		struct duser *u = user_find(d, m->users[i],
					    strlen(m->users[i]));

		if (!u || u->mark == d->gen)
			continue;
		u->mark = d->gen;
		v[n++] = pu(u);
	}
	proto_out_reset(&ss->out);
	proto_enc_users_get_ok(&ss->out, m->rid, v, n);
	send_to_conn(m->conn, &ss->out);
}

/* ---- the actor ----------------------------------------------------------- */

static void dir_on_msg(struct shard_state *ss, struct m_call *c)
{
	struct dir_msg *m = (struct dir_msg *)c;
	struct dir *d = dir_get(ss, m->ws);
	struct duser *u;
	size_t n;

	switch (m->kind) {
	case DM_HELLO:
		u = user_make(d, m->user, strlen(m->user));
		n = strlen(m->name);
		/* written only when it changes (a reconnect writes nothing) */
		if (user_rename(d, u, m->name, n))
			store_put_dir_name(ss->batch, m->ws, m->user, m->name, n);
		break;
	case DM_NAMED:
		for (uint32_t i = 0; i < m->n; i++)
			user_make(d, m->users[i], strlen(m->users[i]));
		break;
	case DM_STATUS:
		user_make(d, m->user, strlen(m->user))->status = m->status;
		break;
	case DM_SEEN:
		u = user_make(d, m->user, strlen(m->user));
		if (m->seen_ms > u->seen_ms)
			u->seen_ms = m->seen_ms;
		break;
	case DM_SEARCH:
		answer_search(ss, d, m);
		break;
	case DM_GET:
		answer_get(ss, d, m);
		break;
	}
	free(m);
}

static struct dir_msg *dmsg(uint8_t kind, const char *ws, const char *user,
			    uint32_t n)
{
	struct dir_msg *m = msg_new(sizeof(*m) + n * ID_CAP, M_CALL);

	m->c.fn = dir_on_msg;
	m->kind = kind;
	strcpy(m->ws, ws);
	if (user)
		strcpy(m->user, user);
	return m;
}

void dir_on_hello(const char *ws, const char *user, const char *name,
		  unsigned then_shard, rt_msg *then)
{
	struct dir_msg *m;

	if (!cluster_owns(dir_shard(ws))) { /* the directory's host keeps it */
		cluster_dir_hello(dir_shard(ws), ws, user, name ? name : "",
				  then_shard, then);
		return;
	}
	m = dmsg(DM_HELLO, ws, user, 0);

	snprintf(m->name, sizeof(m->name), "%s", name ? name : "");
	rt_post(dir_shard(ws), &m->c.h);
	/* after it: the same order for anything then's answer causes */
	if (then)
		rt_post(then_shard, then);
}

void dir_fx_named(struct shard_state *ss, struct chan *c, const char *ws,
		  const char *const *users, uint32_t n)
{
	struct dir_msg *m = dmsg(DM_NAMED, ws, NULL, n);

	for (uint32_t i = 0; i < n; i++) {
		store_put_dir_named(ss->batch, ws, users[i]);
		strcpy(m->users[i], users[i]);
	}
	m->n = n;
	fx_post(ss, c, dir_shard(ws), &m->c.h);
}

void dir_note_status(const char *ws, const char *user, uint8_t status)
{
	struct dir_msg *m = dmsg(DM_STATUS, ws, user, 0);

	m->status = status;
	rt_post(dir_shard(ws), &m->c.h);
}

void dir_note_seen(const char *ws, const char *user, uint64_t seen_ms)
{
	struct dir_msg *m = dmsg(DM_SEEN, ws, user, 0);

	m->seen_ms = seen_ms;
	rt_post(dir_shard(ws), &m->c.h);
}

void dir_fx_seen(struct shard_state *ss, const char *ws, const char *user,
		 uint64_t seen_ms)
{
	struct dir_msg *m;

	if (!cluster_owns(dir_shard(ws))) { /* the directory's host keeps it */
		cluster_dir_seen(dir_shard(ws), ws, user, seen_ms);
		return;
	}
	m = dmsg(DM_SEEN, ws, user, 0);

	m->seen_ms = seen_ms;
	fx_post(ss, NULL, dir_shard(ws), &m->c.h);
}

void dir_request(struct req *r)
{
	struct dir_msg *m;

	if (!cluster_owns(dir_shard(r->ws))) {
		/* read where the directory is kept: another host's hellos
		 * reach only its cache */
		cluster_forward(dir_shard(r->ws), r->id, r->has_rid, r->rid,
				(uint8_t)r->op, r->ws, r->user, r->admin, "",
				r->frame, r->len);
		return;
	}

	if (r->op == PROTO_OP_USERS_SEARCH) {
		const struct proto_a_users_search *a = &r->q->a.usearch;

		m = dmsg(DM_SEARCH, r->ws, NULL, 0);
		memcpy(m->name, a->q.s, a->q.n); /* 1-64 bytes: checked */
		m->qlen = a->q.n;
		m->limit = a->limit;
	} else {
		const proto_strs *u = &r->q->a.users.users;

		m = dmsg(DM_GET, r->ws, NULL, u->n);
		for (uint32_t i = 0; i < u->n; i++) /* ids: checked */
			sess_id_copy(m->users[i], (proto_str){
				.s = u->v[i].via.str.ptr,
				.n = u->v[i].via.str.size });
		m->n = u->n;
	}
	m->conn = r->id;
	m->rid = r->rid;
	m->has_rid = r->has_rid;
	rt_post(dir_shard(r->ws), &m->c.h);
}
