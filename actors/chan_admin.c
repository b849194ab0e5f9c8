/*
 * chan_admin: names, roles and moderation (issue 13). Called by user.c
 * (a ch.create's first hop: names_create), channel.c (ch.create's name,
 * ch.info, ch.set, ch.role, ch.kick, the posting rules of send), chan_msg.c
 * (edit, react: archived; delete: moderators) and server.c (names_migrate,
 * before the shards start); hands on to the channel actor (M_REQ stage 2)
 * and to the commit pipeline.
 *
 * The name registry. Names of public and private channels are unique in a
 * workspace, compared ASCII-case-insensitively. Each (workspace,
 * lowercased name) has one owner: the name actor on shard
 * hash(ws \0 lower(name)). A ch.create (and a ch.set that renames) passes
 * it on its way to the channel actor:
 *
 *   user actor --M_CALL(on_reserve)--> name shard: taken (storage 'L' key,
 *     or a reservation in flight) -> CONFLICT, with the holder's ch when it
 *     is public; free -> reserved in memory, the request goes on to the
 *     channel actor (stage 2: "name reserved")
 *   channel actor: writes the channel ('C') and the registry entry
 *     ('L' ws \0 lower(name) -> ch) in ONE batch; once durable, answers
 *     and tells the name shard (on_done), which forgets the reservation
 *     (storage has the name now). Refused there (id taken, rights gone):
 *     the reservation is given back at once.
 *
 * So two creates of one name, from any shards, meet in one actor and one
 * loses; after a restart the 'L' key answers. A commit that fails leaves
 * its reservation in memory, which is harmless: after a failed commit the
 * server refuses every write until it restarts (storage_failed).
 *
 * Data made before the registry: names_migrate() runs at every start and
 * gives each name without an 'L' key to the first channel found holding
 * it, in channel id order; other channels that share it keep their name
 * (hello, ch.list show both), but a new create or rename to it is CONFLICT.
 * A public or private channel without a 'G' record (every new one gets
 * one) was made before roles: the same pass writes its 'G' record and
 * makes its creator, if still a member, its owner.
 *
 * Roles: 'O' ch \0 user marks an owner (struct member.owner in memory);
 * settings (topic, archived, post) are the 'G' record (struct chan.cfg).
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/cluster.h"
#include "actors/cluster_log.h"
#include "actors/chan.h"
#include "actors/commit.h"
#include "runtime/hash.h"
#include "runtime/log.h"

#define LNAME_CAP 81 /* names are 1-80 bytes */

static void lower(char *dst, const char *src, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char ch = src[i];

		dst[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
	}
	dst[n] = 0;
}

static unsigned name_shard(const char *ws, const char *lname)
{
	uint64_t h = rt_fnv1a_str(RT_FNV_OFFSET, ws);

	h = rt_fnv1a_step(h, "", 1);
	h = rt_fnv1a_str(h, lname);
	return (unsigned)((h ^ (h >> 29)) % rt_nshards());
}

/* ---- the name actor ------------------------------------------------------ */

/* A reservation in flight, on its name's shard. */
struct pname {
	char ch[ID_CAP];
	char name[LNAME_CAP];
	uint8_t kind;
	uint32_t klen;
	char key[ID_CAP + LNAME_CAP]; /* ws \0 lname */
};

struct m_name {
	struct m_call c; /* first: the mailbox sees an M_CALL */
	struct m_req *r; /* on_reserve: the request to carry on */
	char ws[ID_CAP], lname[LNAME_CAP], ch[ID_CAP], name[LNAME_CAP];
	uint8_t kind;
};


static uint8_t wire_kind(uint8_t store_kind)
{
	return store_kind == STORE_PUBLIC ? PROTO_KIND_PUBLIC
	       : store_kind == STORE_PRIVATE ? PROTO_KIND_PRIVATE
					     : PROTO_KIND_DM;
}

/* CONFLICT: the name is taken; a public holder is named, a private one
 * never is. */
static void name_taken(struct shard_state *ss, const struct m_req *r,
		       const char *ch, const char *name, uint8_t kind)
{
	const char *op = proto_op_name(r->op);
	proto_chref ref = { ch, name, wire_kind(kind) };

	proto_out_reset(&ss->out);
	proto_enc_fail_ch(&ss->out, r->has_rid, r->rid, op, "CONFLICT",
			  "a channel of this name exists",
			  kind == STORE_PUBLIC ? &ref : NULL);
	send_to_conn(r->conn, &ss->out);
}

static void on_reserve(struct shard_state *ss, struct m_call *mc)
{
	struct m_name *m = (struct m_name *)mc;
	struct m_req *r = m->r;
	char key[ID_CAP + LNAME_CAP], id[ID_CAP];
	size_t kl = pair_key(key, m->ws, m->lname);
	struct pname *p = smap_get(&ss->names, key, kl);
	store_channel rec;
	int rc;

	ASSERT_ON_SHARD(ss);
	assert(name_shard(m->ws, m->lname) == ss->id);
	if (p) {
		name_taken(ss, r, p->ch, p->name, p->kind);
		goto done;
	}
	rc = store_get_name(srv.st, m->ws, m->lname, id);
	if (rc == 0) {
		char l[LNAME_CAP];

		rc = store_get_channel(srv.st, id, &rec);
		if (rc == 0) {
			lower(l, rec.name, strlen(rec.name));
			if (!strcmp(rec.ws, m->ws) && !strcmp(l, m->lname) &&
			    strcmp(id, r->ch)) {
				name_taken(ss, r, id, rec.name, rec.kind);
				goto done;
			}
		}
		/* an entry whose channel no longer holds the name: free */
	}
	if (rc && rc != -ENOENT) {
		reply_err_remote(r, "UNAVAILABLE", "storage unavailable", 0);
		goto done;
	}
	p = calloc(1, sizeof(*p));
	strcpy(p->ch, m->ch);
	strcpy(p->name, m->name);
	p->kind = m->kind;
	memcpy(p->key, key, kl);
	p->klen = (uint32_t)kl;
	smap_put(&ss->names, p->key, p->klen, p);
	r->stage = 2; /* to the channel actor, name reserved */
	rt_post(chan_shard(r->ch), &r->h);
	free(m);
	return;
done:
	free(r);
	free(m);
}

/* The reservation of (ws, lname) by ch is over: stored, or refused. */
static void on_done(struct shard_state *ss, struct m_call *mc)
{
	struct m_name *m = (struct m_name *)mc;
	char key[ID_CAP + LNAME_CAP];
	size_t kl = pair_key(key, m->ws, m->lname);
	struct pname *p = smap_get(&ss->names, key, kl);

	ASSERT_ON_SHARD(ss);
	assert(name_shard(m->ws, m->lname) == ss->id);
	if (p && !strcmp(p->ch, m->ch)) {
		smap_del(&ss->names, key, kl);
		free(p);
	}
	free(m);
}

static struct m_name *name_msg(void (*fn)(struct shard_state *, struct m_call *),
			       const char *ws, const char *name, size_t n,
			       const char *ch, uint8_t kind)
{
	struct m_name *m = msg_new(sizeof(*m), M_CALL);

	m->c.fn = fn;
	strcpy(m->ws, ws);
	if (n >= LNAME_CAP)
		n = LNAME_CAP - 1;
	memcpy(m->name, name, n);
	m->name[n] = 0;
	lower(m->lname, name, n);
	strcpy(m->ch, ch);
	m->kind = kind;
	return m;
}

/* The name a request reserves: ch.create's, or ch.set's new one. */
static void req_name(const struct m_req *r, const char **s, size_t *n)
{
	if (r->op == OP_CH_CREATE) {
		*s = r->q.a.create.name.s;
		*n = r->q.a.create.name.n;
	} else {
		*s = r->q.a.chset.name.s;
		*n = r->q.a.chset.name.n;
	}
}

/* user actor: a ch.create goes to its name's actor first. */
void names_create(struct shard_state *ss, struct m_req *r)
{
	const char *s;
	size_t n;
	struct m_name *m;

	(void)ss;
	req_name(r, &s, &n);
	m = name_msg(on_reserve, r->ws, s, n, r->ch,
		     r->q.a.create.kind == PROTO_KIND_PUBLIC ? STORE_PUBLIC
							     : STORE_PRIVATE);
	m->r = r;
	rt_post(name_shard(m->ws, m->lname), &m->c.h);
}

void names_release_req(const struct m_req *r)
{
	const char *s;
	size_t n;
	struct m_name *m;

	if (r->stage != 2)
		return;
	req_name(r, &s, &n);
	m = name_msg(on_done, r->ws, s, n, r->ch, 0);
	rt_post(name_shard(m->ws, m->lname), &m->c.h);
}

/* once durable: the reservation is stored, the name actor forgets it */
static void names_done_fx(struct shard_state *ss, struct chan *c,
			  const struct m_req *r)
{
	const char *s;
	size_t n;
	struct m_name *m;

	req_name(r, &s, &n);
	m = name_msg(on_done, r->ws, s, n, r->ch, 0);
	fx_post(ss, c, name_shard(m->ws, m->lname), &m->c.h);
}

/* ---- names that existed before the registry ------------------------------ */

struct migrate {
	store_batch *b;
	smap seen; /* ws \0 lname put in this run */
	char **keys;
	uint32_t nkeys;
	uint64_t added, owned;
	int rc;
};

static int migrate_one(void *arg, const char *id, size_t len)
{
	struct migrate *mg = arg;
	store_channel rec;
	store_chcfg cfg;
	store_member mbr;
	char lname[LNAME_CAP], key[ID_CAP + LNAME_CAP], got[ID_CAP];
	size_t kl;
	int rc;

	(void)len;
	if (store_get_channel(srv.st, id, &rec))
		return 0;
	if (rec.kind == STORE_DM || !rec.name[0])
		return 0;
	/* no settings record: made before roles; its creator, if still a
	 * member, becomes its owner (once: the record is written now) */
	rc = store_get_chcfg(srv.st, rec.id, &cfg);
	if (rc == -ENOENT) {
		memset(&cfg, 0, sizeof(cfg));
		store_put_chcfg(mg->b, rec.id, &cfg);
		if (store_get_member(srv.st, rec.id, rec.creator, &mbr) == 0)
			store_put_owner(mg->b, rec.id, rec.creator);
		mg->owned++;
	} else if (rc) {
		mg->rc = rc;
		return 1;
	}
	lower(lname, rec.name, strlen(rec.name));
	kl = pair_key(key, rec.ws, lname);
	if (smap_get(&mg->seen, key, kl))
		return 0;
	rc = store_get_name(srv.st, rec.ws, lname, got);
	if (rc == 0)
		return 0;
	if (rc != -ENOENT) {
		mg->rc = rc;
		return 1;
	}
	store_put_name(mg->b, rec.ws, lname, rec.id);
	mg->keys = realloc(mg->keys, (mg->nkeys + 1) * sizeof(*mg->keys));
	mg->keys[mg->nkeys] = malloc(kl);
	memcpy(mg->keys[mg->nkeys], key, kl);
	smap_put(&mg->seen, mg->keys[mg->nkeys], kl, mg);
	mg->nkeys++;
	mg->added++;
	return 0;
}

struct sync_wait {
	sem_t sem;
	int status;
};

static void migrate_done(void *ctx, int status)
{
	struct sync_wait *w = ctx;

	w->status = status;
	sem_post(&w->sem);
}

int names_migrate(void)
{
	struct migrate mg = { .b = store_batch_new(srv.st) };
	struct sync_wait w = { .status = 0 };
	int rc;

	rc = store_scan_channels(srv.st, migrate_one, &mg);
	if (!rc)
		rc = mg.rc;
	for (uint32_t i = 0; i < mg.nkeys; i++)
		free(mg.keys[i]);
	free(mg.keys);
	smap_free(&mg.seen);
	if (rc || !store_batch_count(mg.b)) {
		store_batch_free(mg.b);
		return rc;
	}
	sem_init(&w.sem, 0, 0);
	if (store_commit(srv.st, 0, mg.b, migrate_done, &w)) {
		sem_destroy(&w.sem);
		return -EIO;
	}
	while (sem_wait(&w.sem) && errno == EINTR)
		;
	sem_destroy(&w.sem);
	if (!w.status)
		plog(PL_INFO, "storage", "%llu channel names registered, %llu "
			"channels given roles", (unsigned long long)mg.added,
			(unsigned long long)mg.owned);
	return w.status;
}

/* ---- roles and settings -------------------------------------------------- */

static void set_owner(struct shard_state *ss, struct chan *c,
		      struct member *mb, bool on)
{
	if (mb->owner == on)
		return;
	mb->owner = on;
	if (on) {
		c->nowners++;
		store_put_owner(ss->batch, c->id, mb->user);
		cluster_chan_changed(ss, c->id);
	} else {
		c->nowners--;
		store_del_owner(ss->batch, c->id, mb->user);
		cluster_chan_changed(ss, c->id);
	}
}

void chan_roles_on_create(struct shard_state *ss, struct chan *c,
			  const struct m_req *r)
{
	const struct proto_a_ch_create *a = &r->q.a.create;
	struct member *mb = member_of(c, r->user);
	char lname[LNAME_CAP];

	if (mb)
		set_owner(ss, c, mb, true);
	if (a->topic.s && a->topic.n) {
		memcpy(c->cfg.topic, a->topic.s, a->topic.n);
		c->cfg.topic[a->topic.n] = 0;
	}
	/* always: a channel without it is one from before roles */
	store_put_chcfg(ss->batch, c->id, &c->cfg);
	cluster_chan_changed(ss, c->id);
	lower(lname, c->rec.name, strlen(c->rec.name));
	store_put_name(ss->batch, c->rec.ws, lname, c->id);
	names_done_fx(ss, c, r);
}

bool chan_is_moderator(struct chan *c, const struct m_req *r)
{
	struct member *mb = member_of(c, r->user);

	return r->admin || (mb && mb->owner);
}

bool chan_may_post(struct chan *c, const struct m_req *r, bool top_level)
{
	if (c->cfg.archived) {
		chan_fail(r, "FORBIDDEN", "the channel is archived");
		return false;
	}
	if (top_level && c->cfg.post == PROTO_POST_OWNERS &&
	    !chan_is_moderator(c, r)) {
		chan_fail(r, "FORBIDDEN", "only owners post in this channel");
		return false;
	}
	return true;
}

/* ch.set, ch.role, ch.kick: owners and admins, never in a DM */
static bool may_manage(struct chan *c, const struct m_req *r)
{
	if (c->rec.kind == STORE_DM) {
		chan_fail(r, "FORBIDDEN", "a DM has no owners");
		return false;
	}
	if (!chan_is_moderator(c, r)) {
		chan_fail(r, "FORBIDDEN", "owners and admins only");
		return false;
	}
	return true;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* {ch:{id, name, kind, topic, archived, post, owners, members, last_seq}}
 * in ss->out; last_seq: what is durable or on its way */
static void enc_info(struct shard_state *ss, const struct m_req *r,
		     struct chan *c)
{
	const char **owners = malloc((c->nowners + 1) * sizeof(*owners));
	uint32_t n = 0;

	smap_foreach(&c->members, it) {
		struct member *mb = it->val;

		if (mb->owner && n < c->nowners)
			owners[n++] = mb->user;
	}
	qsort(owners, n, sizeof(*owners), cmp_str);
	proto_chfull f = {
		.id = c->id,
		.name = c->rec.name,
		.topic = c->cfg.topic,
		.kind = wire_kind(c->rec.kind),
		.archived = c->cfg.archived,
		.post = c->cfg.post,
		.owners = owners,
		.nowners = n,
		.members = c->nmembers,
		.last_seq = c->next_seq - 1,
	};
	proto_out_reset(&ss->out);
	proto_enc_ch_info_ok(&ss->out, r->rid, &f);
	free(owners);
}

void chan_op_info(struct shard_state *ss, struct m_req *r)
{
	struct chan *c = chan_visible(ss, r);

	if (!c)
		return;
	enc_info(ss, r, c);
	reply_state(ss, c, r);
}

/* A copy of r (its tail too) that outlives chan_on_req's free. */
static struct m_req *req_clone(const struct m_req *r)
{
	size_t need = proto_req_copy(&r->q, NULL, 0, NULL);
	struct m_req *m = msg_new(sizeof(*m) + need, M_REQ);

	rt_msg h = m->h;

	memcpy(m, r, sizeof(*m));
	m->h = h;
	proto_req_copy(&r->q, m->tail, need, &m->q);
	return m;
}

bool chan_op_set(struct shard_state *ss, struct m_req *r)
{
	const struct proto_a_ch_set *a = &r->q.a.chset;
	struct chan *c = chan_visible(ss, r);
	char lold[LNAME_CAP], lnew[LNAME_CAP], id[ID_CAP];
	bool reserved = r->stage == 2;
	rt_buf *b;

	if (!c || !may_manage(c, r)) {
		names_release_req(r);
		return false;
	}
	if (a->has_name) {
		lower(lold, c->rec.name, strlen(c->rec.name));
		lower(lnew, a->name.s, a->name.n);
		if (!reserved && strcmp(lold, lnew)) {
			/* the new name must be had first: to its name actor,
			 * which sends the request back here (stage 2) */
			struct m_req *m = req_clone(r);
			struct m_name *nm =
				name_msg(on_reserve, r->ws, a->name.s,
					 a->name.n, c->id, c->rec.kind);

			nm->r = m;
			rt_post(name_shard(nm->ws, nm->lname), &nm->c.h);
			return false;
		}
		memset(c->rec.name, 0, sizeof(c->rec.name));
		memcpy(c->rec.name, a->name.s, a->name.n);
		store_put_channel(ss->batch, &c->rec);
		if (reserved) {
			store_put_name(ss->batch, c->rec.ws, lnew, c->id);
			/* the old name goes, if it was this channel's (data
			 * from before the registry may have it elsewhere) */
			if (strcmp(lold, lnew) &&
			    store_get_name(srv.st, c->rec.ws, lold, id) == 0 &&
			    !strcmp(id, c->id))
				store_del_name(ss->batch, c->rec.ws, lold);
			names_done_fx(ss, c, r);
		}
	}
	if (a->has_topic) {
		memcpy(c->cfg.topic, a->topic.s, a->topic.n);
		c->cfg.topic[a->topic.n] = 0;
	}
	if (a->has_archived)
		c->cfg.archived = a->archived;
	if (a->has_post)
		c->cfg.post = a->post;
	if (a->has_topic || a->has_archived || a->has_post) {
		store_put_chcfg(ss->batch, c->id, &c->cfg);
		cluster_chan_changed(ss, c->id);
	}

	enc_info(ss, r, c);
	fx_reply(ss, c, r);
	proto_out_reset(&ss->out);
	proto_enc_chan(&ss->out, c->id, a);
	b = rt_buf_new(ss->out.data, ss->out.len);
	fx_bcast(ss, c, b, "");
	return false;
}

void chan_op_role(struct shard_state *ss, struct m_req *r)
{
	const struct proto_a_ch_role *a = &r->q.a.role;
	struct chan *c = chan_visible(ss, r);
	char user[ID_CAP];
	struct member *mb;
	bool on = a->role == PROTO_ROLE_OWNER;

	if (!c || !may_manage(c, r))
		return;
	memcpy(user, a->user.s, a->user.n < ID_CAP ? a->user.n : ID_CAP - 1);
	user[a->user.n < ID_CAP ? a->user.n : ID_CAP - 1] = 0;
	mb = member_of(c, user);
	if (!mb) {
		chan_fail(r, "NOT_FOUND", "not a member of this channel");
		return;
	}
	proto_out_reset(&ss->out);
	proto_enc_ok(&ss->out, r->rid);
	if (mb->owner == on) {
		reply_state(ss, c, r);
		return;
	}
	if (!on && c->nowners <= 1) {
		chan_fail(r, "CONFLICT", "a channel keeps at least one owner");
		return;
	}
	set_owner(ss, c, mb, on);
	fx_reply(ss, c, r);
}

/* what a kicked member's devices and the members online are told */
static void kick_fx(struct shard_state *ss, struct chan *c, const char *user)
{
	struct m_user_chan *m = msg_new(sizeof(*m), M_USER_CHAN);

	proto_out_reset(&ss->out);
	proto_enc_member(&ss->out, c->id, user, "kick");
	if (c->nmembers <= 1000)
		fx_bcast(ss, c, rt_buf_new(ss->out.data, ss->out.len), user);
	strcpy(m->ws, c->rec.ws);
	strcpy(m->user, user);
	strcpy(m->ch, c->id);
	/* as a leave for the devices: they stop listening to the channel */
	m->action = ACT_LEAVE;
	m->frame = rt_buf_new(ss->out.data, ss->out.len);
	fx_post(ss, c, user_shard(c->rec.ws, user), &m->h);
	fx_drop_subs(ss, c, user);
}

void chan_op_kick(struct shard_state *ss, struct m_req *r)
{
	const proto_strs *a = &r->q.a.users.users;
	struct chan *c = chan_visible(ss, r);
	uint32_t owners_out = 0, kicked = 0;

	if (!c || !may_manage(c, r))
		return;
	/* the users may repeat: count each owner once */
	for (uint32_t i = 0; i < a->n; i++) {
		const msgpack_object_str *u = &a->v[i].via.str;
		struct member *mb = smap_get(&c->members, u->ptr, u->size);
		bool twice = false;

		for (uint32_t j = 0; j < i && !twice; j++)
			twice = a->v[j].via.str.size == u->size &&
				!memcmp(a->v[j].via.str.ptr, u->ptr, u->size);
		owners_out += mb && mb->owner && !twice;
	}
	if (c->nowners && owners_out >= c->nowners) {
		chan_fail(r, "CONFLICT", "a channel keeps at least one owner");
		return;
	}
	for (uint32_t i = 0; i < a->n; i++) {
		const char *u = a->v[i].via.str.ptr; /* copied: NUL-ended */
		struct member *mb = member_of(c, u);

		if (!mb)
			continue;
		kick_fx(ss, c, mb->user);
		if (mb->owner)
			set_owner(ss, c, mb, false);
		smap_del(&c->typing, mb->user, strlen(mb->user));
		smap_del(&c->members, mb->user, strlen(mb->user));
		c->nmembers--;
		store_del_member(ss->batch, c->rec.ws, c->id, mb->user);
		cluster_chan_changed(ss, c->id);
		free(mb);
		kicked++;
	}
	proto_out_reset(&ss->out);
	proto_enc_ok(&ss->out, r->rid);
	if (!kicked) {
		reply_state(ss, c, r);
		return;
	}
	put_stat(ss, c);
	fx_reply(ss, c, r);
}
