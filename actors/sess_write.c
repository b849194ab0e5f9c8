/*
 * sess_write: the requests that change state, validated here, then posted
 * (M_REQ) to the user actor, which passes them to the channel actor (or
 * the presence actor). Also the DM ids.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "runtime/hash.h"
#include "actors/cluster.h"
#include "actors/directory.h"
#include "actors/session.h"

/* ---- writes: validated here, carried out by the channel actor ------------- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The members of a dm.open: the caller and the users it names, sorted,
 * each once. Returns their count; ids holds the strings, m points at them. */
static uint32_t dm_members(struct req *r, char (**ids)[ID_CAP], char ***m)
{
	const proto_strs *a = &r->q->a.users.users;
	uint32_t n = 0, k = 0;

	*ids = calloc(a->n + 1, ID_CAP);
	*m = calloc(a->n + 1, sizeof(**m));
	strcpy((*ids)[n++], r->user);
	for (uint32_t i = 0; i < a->n; i++)
		sess_id_copy((*ids)[n++], proto_strs_at(a, i));
	for (uint32_t i = 0; i < n; i++)
		(*m)[i] = (*ids)[i];
	qsort(*m, n, sizeof(**m), cmp_str);
	for (uint32_t i = 0; i < n; i++)
		if (!k || strcmp((*m)[i], (*m)[k - 1]))
			(*m)[k++] = (*m)[i]; /* a set: duplicates count once */
	return k;
}

/* FORMAT: the id DMs had before ids were keyed: "D" + 16 hex of an FNV-1a
 * hash of the workspace and the member set ('\0' before each member),
 * which anyone could compute. Only ever looked up now, so that a DM made
 * by an older server keeps its channel: never change it. */
static void dm_id_v1(const char *ws, char *const *m, uint32_t n, char *out)
{
	uint64_t h = rt_fnv1a_str(RT_FNV_OFFSET, ws);

	for (uint32_t i = 0; i < n; i++) {
		h = rt_fnv1a_step(h, "", 1);
		h = rt_fnv1a_str(h, m[i]);
	}
	snprintf(out, ID_CAP, "D%016llx", (unsigned long long)h);
}

/* DM id: "D2-" + 32 hex of HMAC-SHA256 over the workspace and the member
 * set ('\0' after each: ids never hold one), keyed by a key derived from
 * the server's DM key (DATA/dm.key, random, made on first start; not the
 * JWT secret, which operators rotate). The same set always names the same
 * channel, and without the key nobody can tell which id two users' DM
 * has. */
static bool dm_id_v2(const char *ws, char *const *m, uint32_t n, char *out)
{
	static const char label[] = "parley dm id v2";
	uint8_t k[EVP_MAX_MD_SIZE], mac[EVP_MAX_MD_SIZE];
	unsigned kl = 0, ml = 0;
	size_t len = strlen(ws) + 1, o = len;
	uint8_t *buf;
	bool ok;

	for (uint32_t i = 0; i < n; i++)
		len += strlen(m[i]) + 1;
	buf = malloc(len);
	memcpy(buf, ws, o);
	for (uint32_t i = 0; i < n; i++) {
		memcpy(buf + o, m[i], strlen(m[i]) + 1);
		o += strlen(m[i]) + 1;
	}
	ok = HMAC(EVP_sha256(), srv.dm_key, (int)srv.dm_key_len,
		  (const uint8_t *)label, sizeof(label) - 1, k, &kl) &&
	     HMAC(EVP_sha256(), k, (int)kl, buf, len, mac, &ml) && ml >= 16;
	free(buf);
	if (!ok)
		return false;
	memcpy(out, "D2-", 3);
	for (int i = 0; i < 16; i++)
		sprintf(out + 3 + 2 * i, "%02x", mac[i]);
	return true;
}

/* Is id a DM of ws whose members are exactly m? 0 yes, -ENOENT no, -EIO. */
static int dm_is(const char *id, const char *ws, char *const *m, uint32_t n)
{
	struct idvec iv = { 0 };
	store_channel rec;
	int rc = store_get_channel(srv.st, id, &rec);

	if (rc)
		return rc;
	if (rec.kind != STORE_DM || strcmp(rec.ws, ws))
		return -ENOENT;
	if (store_scan_members(srv.st, id, "", n + 1, sess_collect_id, &iv, NULL)) {
		free(iv.v);
		return -EIO;
	}
	rc = iv.n == n ? 0 : -ENOENT;
	for (uint32_t i = 0; rc == 0 && i < n; i++)
		if (strcmp(iv.v[i], m[i])) /* both in byte order */
			rc = -ENOENT;
	free(iv.v);
	return rc;
}

/* The channel of a dm.open: the DM an older server made for this member
 * set if there is one, else the keyed id. False (and answered) if storage
 * cannot tell. */
static bool dm_id(struct req *r, char *out)
{
	char (*ids)[ID_CAP];
	char **m;
	uint32_t n = dm_members(r, &ids, &m);
	bool keyed = true;
	int rc;

	dm_id_v1(r->ws, m, n, out);
	rc = dm_is(out, r->ws, m, n);
	if (rc == -ENOENT)
		keyed = dm_id_v2(r->ws, m, n, out);
	free(ids);
	free(m);
	if (rc && rc != -ENOENT) {
		sess_fail(r, "UNAVAILABLE", "storage unavailable");
		return false;
	}
	if (!keyed) {
		sess_fail(r, "INTERNAL", "cannot make the DM id");
		return false;
	}
	return true;
}

/* The channel a write goes to (the arguments were checked when the
 * request was decoded): a new id for ch.create, the DM's for dm.open, ""
 * for presence.set. False (and answered) if it cannot be had. */
static bool write_ch(struct req *r, char *ch)
{
	const struct proto_req *q = r->q;

	switch (r->op) {
	case OP_CH_CREATE: {
		uint64_t rnd;

		if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
			rnd = rt_mono_us() ^ r->id;
		snprintf(ch, ID_CAP, "C%016llx", (unsigned long long)rnd);
		return true;
	}
	case OP_DM_OPEN:
		return dm_id(r, ch);
	case OP_CH_INVITE:
		sess_id_copy(ch, q->a.users.ch);
		return true;
	case OP_SEND:
		sess_id_copy(ch, q->a.send.ch);
		return true;
	case OP_READ:
	case PROTO_OP_DELIVERED:
		sess_id_copy(ch, q->a.seq.ch);
		return true;
	case PROTO_OP_RECEIPTS:
		sess_id_copy(ch, q->a.ch.ch);
		return true;
	case OP_CH_JOIN:
	case OP_CH_LEAVE:
	case OP_TYPING:
		sess_id_copy(ch, q->a.ch.ch);
		return true;
	case OP_EDIT:
		sess_id_copy(ch, q->a.edit.ch);
		return true;
	case OP_DELETE:
		sess_id_copy(ch, q->a.target.ch);
		return true;
	case OP_REACT:
		sess_id_copy(ch, q->a.react.ch);
		return true;
	case OP_PRESENCE_SET:
	case PROTO_OP_PUSH_REGISTER:
	case PROTO_OP_PUSH_UNREGISTER:
	case PROTO_OP_PUSH_LIST:
	case PROTO_OP_NOTIFY_GET:
		return true;
	case PROTO_OP_NOTIFY_SET:
		if (q->a.notify.ch.n) /* else the user's default */
			sess_id_copy(ch, q->a.notify.ch);
		return true;
	case PROTO_OP_CH_INFO:
		sess_id_copy(ch, q->a.ch.ch);
		return true;
	case PROTO_OP_CH_SET:
		sess_id_copy(ch, q->a.chset.ch);
		return true;
	case PROTO_OP_CH_ROLE:
		sess_id_copy(ch, q->a.role.ch);
		return true;
	case PROTO_OP_CH_KICK:
		sess_id_copy(ch, q->a.users.ch);
		return true;
	default:
		return false;
	}
}

void sess_forward(struct req *r)
{
	char ch[ID_CAP] = "";
	struct m_req *m;
	size_t need;

	if (!write_ch(r, ch))
		return;
	if (!cluster_owns(user_shard(r->ws, r->user))) {
		/* another host owns it: the frame goes there, as it came */
		cluster_forward(user_shard(r->ws, r->user), r->id, r->has_rid,
				r->rid, (uint8_t)r->op, r->ws, r->user,
				r->admin, ch, r->frame, r->len);
		return;
	}
	/* the decoded request, deep-copied into the message's tail: one
	 * allocation, as the frame's copy was */
	need = proto_req_copy(r->q, NULL, 0, NULL);
	m = msg_new(sizeof(*m) + need, M_REQ);
	proto_req_copy(r->q, m->tail, need, &m->q);
	m->conn = r->id;
	m->rid = r->rid;
	m->has_rid = r->has_rid;
	m->op = (uint8_t)r->op;
	m->stage = 0;
	m->t_rx_us = r->t_rx_us;
	m->t0_us = rt_mono_us();
	stage_add(r->ss, ST_DECODE, m->t0_us - r->t_rx_us);
	strcpy(m->ws, r->ws);
	strcpy(m->user, r->user);
	strcpy(m->ch, ch);
	m->admin = r->admin;
	rt_post(user_shard(m->ws, m->user), &m->h);
}

void sess_forward_remote(rt_conn_id proxy, const char *ws, const char *user,
			 bool admin, const char *ch, const uint8_t *frame,
			 size_t len)
{
	struct proto_limits lim = sess_req_limits();
	struct proto_req q;
	proto_doc doc;
	const char *why = NULL;
	struct m_req *m;
	size_t need;

	/* the origin host decoded and checked it already: the same code
	 * says the same here, so a failure is not expected (dropped) */
	if (proto_decode_max(&doc, frame, len, srv.lim.max_frame) != PROTO_OK)
		return;
	if (proto_req_decode(&doc.root, &lim, &q, &why) != PROTO_C_OK) {
		proto_doc_free(&doc);
		return;
	}
	if (q.op == PROTO_OP_USERS_SEARCH || q.op == PROTO_OP_USERS_GET) {
		/* a read of the directory, which this host keeps */
		struct req r = { .id = proxy, .ws = ws, .user = user,
				 .admin = admin, .frame = frame, .len = len,
				 .q = &q, .rid = q.rid, .has_rid = q.has_rid,
				 .op = q.op, .t_rx_us = rt_mono_us() };

		dir_request(&r);
		proto_doc_free(&doc);
		return;
	}
	need = proto_req_copy(&q, NULL, 0, NULL);
	m = msg_new(sizeof(*m) + need, M_REQ);
	proto_req_copy(&q, m->tail, need, &m->q);
	m->conn = proxy;
	m->rid = q.rid;
	m->has_rid = q.has_rid;
	m->op = (uint8_t)q.op;
	m->stage = 0;
	m->t_rx_us = m->t0_us = rt_mono_us();
	snprintf(m->ws, ID_CAP, "%s", ws);
	snprintf(m->user, ID_CAP, "%s", user);
	snprintf(m->ch, ID_CAP, "%s", ch);
	m->admin = admin;
	proto_doc_free(&doc);
	rt_post(user_shard(m->ws, m->user), &m->h);
}
