/*
 * chan_load: a channel actor's life in memory: loaded from storage on first
 * touch, reloaded after a failed commit, evicted when idle; and the checks
 * every request makes (is the channel visible to the user, is the user a
 * member), with the membership and read-marker writes they lead to.
 * Calls only base.c (and storage).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "actors/cluster.h"
#include "actors/cluster_log.h"
#include "actors/chan.h"

/* ---- loading ---------------------------------------------------------------- */

static int collect_member(void *arg, const char *id, size_t len)
{
	struct chan *c = arg;
	struct member *m = calloc(1, sizeof(*m));

	memcpy(m->user, id, len < ID_CAP ? len : ID_CAP - 1);
	store_get_member(srv.st, c->id, m->user, &m->m);
	m->mention_cum = MENTION_UNKNOWN;
	smap_put(&c->members, m->user, strlen(m->user), m);
	return 0;
}

/* roles and settings (issue 13: chan_admin.c changes them) */
static int collect_owner(void *arg, const char *id, size_t len)
{
	struct chan *c = arg;
	struct member *mb = smap_get(&c->members, id, len);

	if (mb && !mb->owner) {
		mb->owner = true;
		c->nowners++;
	}
	return 0;
}

int chan_roles_load(struct chan *c)
{
	int rc = store_get_chcfg(srv.st, c->id, &c->cfg);

	if (rc == -ENOENT)
		memset(&c->cfg, 0, sizeof(c->cfg));
	else if (rc)
		return rc;
	c->nowners = 0;
	return store_scan_owners(srv.st, c->id, collect_owner, c);
}

int chan_reload(struct chan *c)
{
	store_chstat st = { 0 };
	int rc = store_get_chstat(srv.st, c->id, &st);

	/* reloaded only with nothing in flight (invariant 4) */
	assert(!c->pending && !c->pending_events);
	if (rc && rc != -ENOENT)
		return rc;
	c->next_seq = st.last_seq + 1;
	c->durable_seq = st.last_seq;
	c->msgs = st.msgs;
	smap_foreach(&c->members, it) free(it->val);
	smap_free(&c->members);
	if (store_scan_members(srv.st, c->id, "", 0xffffffffu, collect_member,
			       c, NULL))
		return -EIO;
	c->nmembers = c->members.n;
	if (chan_roles_load(c)) /* owners, settings */
		return -EIO;
	c->broken = false;
	return 0;
}

static void loaded_changed(struct shard_state *ss)
{
	__atomic_store_n(&ss->chans_loaded, (uint64_t)ss->chans.n,
			 __ATOMIC_RELAXED);
}

struct chan *chan_get(struct shard_state *ss, const char *id)
{
	struct chan *c;

	ASSERT_CHAN_HERE(ss, id);
	c = smap_get(&ss->chans, id, strlen(id));
	if (c) {
		c->touched_ms = rt_now_ms();
		return c;
	}
	c = calloc(1, sizeof(*c));
	strcpy(c->id, id);
	if (store_get_channel(srv.st, id, &c->rec) || chan_reload(c)) {
		free(c);
		return NULL;
	}
	c->touched_ms = rt_now_ms();
	smap_put(&ss->chans, c->id, strlen(c->id), c);
	loaded_changed(ss);
	return c;
}

struct chan *chan_new(struct shard_state *ss, const store_channel *rec)
{
	struct chan *c = calloc(1, sizeof(*c));

	ASSERT_CHAN_HERE(ss, rec->id);
	strcpy(c->id, rec->id);
	c->rec = *rec;
	c->next_seq = 1;
	c->touched_ms = rt_now_ms();
	smap_put(&ss->chans, c->id, strlen(c->id), c);
	loaded_changed(ss);
	return c;
}

/* A channel actor may leave memory when nothing of it is in flight and
 * nobody listens: everything it knows is in storage (invariant 1 of
 * storage) and comes back on the next touch. Its subscriber counts are the
 * one thing storage does not have, hence "nobody listens". */
static bool evictable(const struct chan *c, uint64_t now)
{
	if (c->pending || c->cmids.n || c->ov.n || c->stat_dirty ||
	    now - c->touched_ms < srv.lim.chan_idle_ms)
		return false;
	for (unsigned s = 0; s < rt_nshards(); s++)
		if (c->online[s])
			return false;
	return true;
}

static void chan_free(struct chan *c)
{
	smap_foreach(&c->members, it) free(it->val);
	smap_free(&c->members);
	smap_free(&c->cmids);
	smap_free(&c->ov);
	smap_free(&c->typing);
	free(c);
}

void chan_tick(struct shard_state *ss, uint64_t now)
{
	uint64_t every = srv.lim.chan_idle_ms / 2;
	struct chan **gone;
	uint32_t n = 0;

	if (now < ss->chan_next_scan || !ss->chans.n)
		return;
	ss->chan_next_scan = now + (every < 100 ? 100 : every > 5000 ? 5000 : every);
	gone = malloc(ss->chans.n * sizeof(*gone));
	smap_foreach(&ss->chans, it) {
		if (evictable(it->val, now))
			gone[n++] = it->val;
	}
	for (uint32_t i = 0; i < n; i++) {
		smap_del(&ss->chans, gone[i]->id, strlen(gone[i]->id));
		chan_free(gone[i]);
	}
	free(gone);
	if (n)
		loaded_changed(ss);
}


void chan_fail(const struct m_req *r, const char *code, const char *msg)
{
	reply_err_remote(r, code, msg, 0);
}

/* The channel as the user may see it, or NULL (answered). A private
 * channel or DM the user is not a member of does not exist for them: the
 * answer is word for word the one for an id never made, so nobody learns
 * which private channels and DMs exist. Public channels are visible to the
 * whole workspace (and answer FORBIDDEN where membership is needed). */
struct chan *chan_visible(struct shard_state *ss, struct m_req *r)
{
	struct chan *c = chan_get(ss, r->ch);

	if (!c || strcmp(c->rec.ws, r->ws) ||
	    (c->rec.kind != STORE_PUBLIC && !member_of(c, r->user))) {
		chan_fail(r, "NOT_FOUND", "no such channel");
		return NULL;
	}
	return c;
}

bool chan_member_or_fail(struct chan *c, const struct m_req *r)
{
	if (member_of(c, r->user))
		return true;
	chan_fail(r, "FORBIDDEN", "not a member of this channel");
	return false;
}

struct member *chan_add_member(struct shard_state *ss, struct chan *c,
				 const char *user)
{
	struct member *mb = calloc(1, sizeof(*mb));

	strcpy(mb->user, user);
	mb->mention_cum = 0; /* a (re)joined member starts with none */
	mb->m.read_seq = c->next_seq - 1;
	mb->m.joined_seq = c->next_seq - 1;
	mb->m.joined_ms = rt_now_ms();
	smap_put(&c->members, mb->user, strlen(mb->user), mb);
	c->nmembers++;
	store_put_member(ss->batch, c->rec.ws, c->id, user, &mb->m);
	cluster_chan_changed(ss, c->id);
	return mb;
}

/* The read marker of mb moves to seq. Mention keys stay: unread mentions
 * are the newest key's count minus the count at the marker. */
void chan_move_marker(struct shard_state *ss, struct chan *c,
			struct member *mb, uint64_t seq)
{
	mb->m.read_seq = seq;
	store_put_marker(ss->batch, c->id, mb->user, &mb->m);
}
