/*
 * pushers: what a user keeps for notifications, on the user's shard (the
 * shard of its user and presence actors): the devices to push to
 * (push.register, push.unregister, push.list) and the notification levels
 * (notify.set, notify.get). Each is one record per user in storage ('K'
 * and 'Z', store.h), rewritten whole by the request that changes it, in
 * the shard's batch: the answer waits for the sync like every change.
 *
 * A record changed by a batch still in flight is read from memory, not
 * from storage: two requests of one loop turn (or of two turns whose
 * batches are not durable yet) build on each other. Memory holds a record
 * only while a batch that wrote it is in flight (`struct urec`, released
 * by an M_CALL the commit posts back), so nothing is cached that could
 * disagree with storage.
 *
 * The notifier (notify.c) reads these records from storage itself; here it
 * only asks, on this shard, which of a list of users have a device now
 * (pushers_on_check).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "actors/commit.h"
#include "actors/notify.h"

#define MAX_PUSHERS 10
#define MAX_LEVELS 4096 /* channels with a level of their own, per user */

/* A record written by a batch in flight: tag, ws \0 user -> bytes. */
struct urec {
	uint32_t inflight; /* batches that wrote it, not durable yet */
	uint32_t klen;
	size_t n;
	uint8_t *v;        /* NULL: deleted */
	char key[];        /* tag ws \0 user */
};

static size_t urec_key(char *k, char tag, const char *ws, const char *user)
{
	k[0] = tag;
	return 1 + pair_key(k + 1, ws, user);
}

/* The current bytes of a record: memory first, then storage. 0 with *v
 * malloc'd, -ENOENT, or another -errno. */
static int urec_get(struct shard_state *ss, char tag, const char *ws,
		    const char *user, void **v, size_t *n)
{
	char k[1 + 2 * ID_CAP];
	size_t kl = urec_key(k, tag, ws, user);
	struct urec *u = smap_get(&ss->urecs, k, kl);

	if (!u)
		return store_get_urec(srv.st, tag, ws, user, v, n);
	if (!u->v)
		return -ENOENT;
	*v = malloc(u->n ? u->n : 1);
	memcpy(*v, u->v, u->n);
	*n = u->n;
	return 0;
}

struct urec_done {
	struct m_call c; /* first: the mailbox sees an M_CALL */
	char key[1 + 2 * ID_CAP];
	uint32_t klen;
};

static void urec_released(struct shard_state *ss, struct m_call *c)
{
	struct urec_done *d = (struct urec_done *)c;
	struct urec *u = smap_get(&ss->urecs, d->key, d->klen);

	if (u && !--u->inflight) {
		smap_del(&ss->urecs, u->key, u->klen);
		free(u->v);
		free(u);
	}
	free(d);
}

/* Write (v) or delete (v NULL) a record in this turn's batch, remember it
 * until that batch is durable. */
static void urec_put(struct shard_state *ss, char tag, const char *ws,
		     const char *user, const void *v, size_t n)
{
	char k[1 + 2 * ID_CAP];
	size_t kl = urec_key(k, tag, ws, user);
	struct urec *u = smap_get(&ss->urecs, k, kl);
	struct urec_done *d;

	if (!u) {
		u = calloc(1, sizeof(*u) + kl);
		memcpy(u->key, k, kl);
		u->klen = (uint32_t)kl;
		smap_put(&ss->urecs, u->key, u->klen, u);
	}
	free(u->v);
	u->v = NULL;
	u->n = 0;
	if (v) {
		u->v = malloc(n ? n : 1);
		memcpy(u->v, v, n);
		u->n = n;
		store_put_urec(ss->batch, tag, ws, user, v, n);
	} else {
		store_del_urec(ss->batch, tag, ws, user);
	}
	u->inflight++;
	d = msg_new(sizeof(*d), M_CALL);
	d->c.fn = urec_released;
	memcpy(d->key, k, kl);
	d->klen = (uint32_t)kl;
	fx_post(ss, NULL, ss->id, &d->c.h);
}

/* ---- pushers ------------------------------------------------------------ */

struct plist {
	proto_doc doc;
	bool has_doc;
	void *raw;
	proto_pusher v[MAX_PUSHERS + 1];
	uint32_t n;
};

static int plist_load(struct shard_state *ss, const char *ws,
		      const char *user, struct plist *l)
{
	size_t n;
	int rc, k;

	memset(l, 0, sizeof(*l));
	rc = urec_get(ss, 'K', ws, user, &l->raw, &n);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	k = proto_dec_pushers(&l->doc, l->raw, n, l->v, MAX_PUSHERS);
	if (k < 0)
		return 0; /* unreadable: as if none (it is rewritten) */
	l->has_doc = true;
	l->n = (uint32_t)k;
	return 0;
}

static void plist_free(struct plist *l)
{
	if (l->has_doc)
		proto_doc_free(&l->doc);
	free(l->raw);
}

static bool same_str(proto_str a, proto_str b)
{
	return a.n == b.n && !memcmp(a.s, b.s, a.n);
}

static bool plist_drop(struct plist *l, bool (*match)(const proto_pusher *,
						      const void *),
		       const void *arg)
{
	uint32_t keep = 0;

	for (uint32_t i = 0; i < l->n; i++)
		if (!match(&l->v[i], arg))
			l->v[keep++] = l->v[i];
	if (keep == l->n)
		return false;
	l->n = keep;
	return true;
}

static bool match_app_key(const proto_pusher *p, const void *arg)
{
	const struct proto_a_push *a = arg;

	return same_str(p->app, a->app) && same_str(p->pushkey, a->pushkey);
}

static void plist_store(struct shard_state *ss, const char *ws,
			const char *user, const struct plist *l)
{
	proto_out o;

	if (!l->n) {
		urec_put(ss, 'K', ws, user, NULL, 0);
		return;
	}
	proto_out_init(&o, 0, 256);
	proto_enc_pushers(&o, l->v, l->n);
	urec_put(ss, 'K', ws, user, o.data, o.len);
	proto_out_free(&o);
}

static void storage_err(struct m_req *m)
{
	reply_err_remote(m, "UNAVAILABLE", "storage unavailable", 0);
}

static void op_register(struct shard_state *ss, struct m_req *m)
{
	const struct proto_a_push *a = &m->q.a.push;
	struct plist l;

	if (plist_load(ss, m->ws, m->user, &l)) {
		storage_err(m);
		return;
	}
	/* the same (app, pushkey) again replaces it: it becomes the newest */
	plist_drop(&l, match_app_key, a);
	l.v[l.n++] = (proto_pusher){ .app = a->app, .pushkey = a->pushkey,
				     .platform = a->platform,
				     .data = a->data, .ts = rt_now_ms() };
	if (l.n > MAX_PUSHERS) { /* the oldest goes */
		memmove(&l.v[0], &l.v[1], (l.n - 1) * sizeof(l.v[0]));
		l.n--;
	}
	plist_store(ss, m->ws, m->user, &l);
	plist_free(&l);
	proto_out_reset(&ss->out);
	proto_enc_ok(&ss->out, m->rid);
	fx_reply(ss, NULL, m);
}

static void op_unregister(struct shard_state *ss, struct m_req *m)
{
	struct plist l;

	if (plist_load(ss, m->ws, m->user, &l)) {
		storage_err(m);
		return;
	}
	proto_out_reset(&ss->out);
	proto_enc_ok(&ss->out, m->rid);
	if (plist_drop(&l, match_app_key, &m->q.a.push)) {
		plist_store(ss, m->ws, m->user, &l);
		fx_reply(ss, NULL, m);
	} else {
		reply_now(ss, m); /* nothing to remove: nothing to wait for */
	}
	plist_free(&l);
}

static void op_list(struct shard_state *ss, struct m_req *m)
{
	struct plist l;

	if (plist_load(ss, m->ws, m->user, &l)) {
		storage_err(m);
		return;
	}
	proto_out_reset(&ss->out);
	proto_enc_push_list_ok(&ss->out, m->rid, l.v, l.n);
	reply_now(ss, m);
	plist_free(&l);
}

struct rejected {
	struct m_call c; /* first: the mailbox sees an M_CALL */
	char ws[ID_CAP], user[ID_CAP];
	uint32_t n;
	char keys[]; /* n pushkeys, each NUL-terminated */
};

static bool match_key_list(const proto_pusher *p, const void *arg)
{
	const struct rejected *r = arg;
	const char *k = r->keys;

	for (uint32_t i = 0; i < r->n; i++, k += strlen(k) + 1)
		if (p->pushkey.n == strlen(k) && !memcmp(p->pushkey.s, k,
							 p->pushkey.n))
			return true;
	return false;
}

static void on_rejected(struct shard_state *ss, struct m_call *c)
{
	struct rejected *r = (struct rejected *)c;
	struct plist l;

	if (plist_load(ss, r->ws, r->user, &l) == 0) {
		if (plist_drop(&l, match_key_list, r))
			plist_store(ss, r->ws, r->user, &l);
		plist_free(&l);
	}
	free(r);
}

void pushers_reject(const char *ws, const char *user, const char *const *keys,
		    uint32_t n)
{
	size_t len = 0;
	struct rejected *r;
	char *p;

	for (uint32_t i = 0; i < n; i++)
		len += strlen(keys[i]) + 1;
	r = msg_new(sizeof(*r) + len, M_CALL);
	r->c.fn = on_rejected;
	snprintf(r->ws, sizeof(r->ws), "%s", ws);
	snprintf(r->user, sizeof(r->user), "%s", user);
	r->n = n;
	p = r->keys;
	for (uint32_t i = 0; i < n; i++) {
		strcpy(p, keys[i]);
		p += strlen(p) + 1;
	}
	rt_post(user_shard(ws, user), &r->c.h);
}

/* ---- levels ------------------------------------------------------------- */

struct levels {
	proto_doc doc;
	bool has_doc;
	void *raw;
	uint8_t def;
	proto_chlevel *v;
	uint32_t n;
};

static int levels_load(struct shard_state *ss, const char *ws,
		       const char *user, struct levels *l)
{
	size_t n;
	int rc, k;

	memset(l, 0, sizeof(*l));
	l->def = PROTO_LEVEL_MENTIONS;
	l->v = calloc(MAX_LEVELS + 1, sizeof(*l->v));
	rc = urec_get(ss, 'Z', ws, user, &l->raw, &n);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	k = proto_dec_prefs(&l->doc, l->raw, n, &l->def, l->v, MAX_LEVELS);
	if (k < 0)
		return 0;
	l->has_doc = true;
	l->n = (uint32_t)k;
	return 0;
}

static void levels_free(struct levels *l)
{
	if (l->has_doc)
		proto_doc_free(&l->doc);
	free(l->raw);
	free(l->v);
}

static void op_notify_set(struct shard_state *ss, struct m_req *m)
{
	const struct proto_a_notify_set *a = &m->q.a.notify;
	struct levels l;
	store_channel rec;
	store_member mem;
	uint32_t i;
	proto_out o;
	int rc;

	if (a->ch.n) {
		/* a channel of the user's workspace that it is in (durably):
		 * any other does not exist for it, as everywhere (member
		 * keys have no workspace: the channel's record says it) */
		rc = store_get_channel(srv.st, m->ch, &rec);
		if (rc == 0 && strcmp(rec.ws, m->ws))
			rc = -ENOENT;
		if (rc == 0)
			rc = store_get_member(srv.st, m->ch, m->user, &mem);
		if (rc == -ENOENT) {
			reply_err_remote(m, "NOT_FOUND", "no such channel", 0);
			return;
		}
		if (rc) {
			storage_err(m);
			return;
		}
	}
	if (levels_load(ss, m->ws, m->user, &l)) {
		levels_free(&l);
		storage_err(m);
		return;
	}
	if (!a->ch.n) {
		l.def = a->level;
	} else {
		for (i = 0; i < l.n && !same_str(l.v[i].ch, a->ch); i++)
			;
		if (i == l.n && l.n == MAX_LEVELS) {
			levels_free(&l);
			reply_err_remote(m, "TOO_LARGE",
					 "too many channels with a level", 0);
			return;
		}
		if (i == l.n)
			l.n++;
		l.v[i].ch = a->ch;
		l.v[i].level = a->level;
	}
	proto_out_init(&o, 0, 256);
	proto_enc_prefs(&o, l.def, l.v, l.n);
	urec_put(ss, 'Z', m->ws, m->user, o.data, o.len);
	proto_out_free(&o);
	levels_free(&l);
	proto_out_reset(&ss->out);
	proto_enc_ok(&ss->out, m->rid);
	fx_reply(ss, NULL, m);
}

static void op_notify_get(struct shard_state *ss, struct m_req *m)
{
	struct levels l;

	if (levels_load(ss, m->ws, m->user, &l)) {
		levels_free(&l);
		storage_err(m);
		return;
	}
	proto_out_reset(&ss->out);
	proto_enc_notify_get_ok(&ss->out, m->rid, l.def, l.v, l.n);
	reply_now(ss, m);
	levels_free(&l);
}

void pushers_on_req(struct shard_state *ss, struct m_req *m)
{
	ASSERT_USER_HERE(ss, m->ws, m->user);
	switch (m->q.op) {
	case PROTO_OP_PUSH_REGISTER: op_register(ss, m); break;
	case PROTO_OP_PUSH_UNREGISTER: op_unregister(ss, m); break;
	case PROTO_OP_PUSH_LIST: op_list(ss, m); break;
	case PROTO_OP_NOTIFY_SET: op_notify_set(ss, m); break;
	case PROTO_OP_NOTIFY_GET: op_notify_get(ss, m); break;
	default: break;
	}
}

bool pushers_is_op(int op)
{
	return op == PROTO_OP_PUSH_REGISTER || op == PROTO_OP_PUSH_UNREGISTER ||
	       op == PROTO_OP_PUSH_LIST || op == PROTO_OP_NOTIFY_SET ||
	       op == PROTO_OP_NOTIFY_GET;
}
