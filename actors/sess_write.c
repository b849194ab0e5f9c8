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
#include "actors/session.h"

/* ---- writes: validated here, carried out by the channel actor ------------- */

static bool arg_users(struct req *r, unsigned max)
{
	const msgpack_object_array *a;

	if (proto_get_array(r->map, "users", &a) || a->size < 1 ||
	    a->size > max) {
		sess_fail(r, "BAD_REQUEST", "users must be a list of user ids");
		return false;
	}
	for (uint32_t i = 0; i < a->size; i++) {
		if (a->ptr[i].type != MSGPACK_OBJECT_STR ||
		    !proto_id_valid(a->ptr[i].via.str.ptr,
				    a->ptr[i].via.str.size)) {
			sess_fail(r, "BAD_REQUEST", "users must be a list of user ids");
			return false;
		}
	}
	return true;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The members of a dm.open: the caller and the users it names, sorted,
 * each once. Returns their count; ids holds the strings, m points at them. */
static uint32_t dm_members(struct req *r, char (**ids)[ID_CAP], char ***m)
{
	const msgpack_object_array *a;
	uint32_t n = 0, k = 0;

	proto_get_array(r->map, "users", &a);
	*ids = calloc(a->size + 1, ID_CAP);
	*m = calloc(a->size + 1, sizeof(**m));
	strcpy((*ids)[n++], r->user);
	for (uint32_t i = 0; i < a->size; i++) {
		memcpy((*ids)[n], a->ptr[i].via.str.ptr, a->ptr[i].via.str.size);
		n++;
	}
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

static bool validate_write(struct req *r, char *ch)
{
	const char *s;
	uint32_t n;
	uint64_t u;

	switch (r->op) {
	case OP_CH_CREATE: {
		uint64_t rnd;

		if (proto_get_str(r->map, "name", &s, &n) || n < 1 ||
		    n > srv.lim.max_name) {
			sess_fail(r, "BAD_REQUEST", "name must be 1-80 bytes");
			return false;
		}
		if (proto_get_str(r->map, "kind", &s, &n) ||
		    !((n == 6 && !memcmp(s, "public", 6)) ||
		      (n == 7 && !memcmp(s, "private", 7)))) {
			sess_fail(r, "BAD_REQUEST", "kind must be public or private");
			return false;
		}
		if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
			rnd = rt_mono_us() ^ r->id;
		snprintf(ch, ID_CAP, "C%016llx", (unsigned long long)rnd);
		return true;
	}
	case OP_DM_OPEN:
		return arg_users(r, srv.lim.max_dm - 1) && dm_id(r, ch);
	case OP_CH_INVITE:
		return sess_arg_ch(r, ch) && arg_users(r, 1000);
	case OP_SEND: {
		const msgpack_object_array *a;
		int rc;

		if (!sess_arg_ch(r, ch))
			return false;
		if (proto_get_str(r->map, "body", &s, &n)) {
			sess_fail(r, "BAD_REQUEST", "body must be a string");
			return false;
		}
		if (n > srv.lim.max_body) {
			sess_fail(r, "TOO_LARGE", "body too large");
			return false;
		}
		if (proto_get_str(r->map, "cmid", &s, &n) || n < 1 ||
		    n > PROTO_MAX_CMID) {
			sess_fail(r, "BAD_REQUEST", "cmid must be 1-64 bytes");
			return false;
		}
		rc = proto_get_uint(r->map, "thread", &u);
		if (rc == PROTO_F_TYPE || (rc == 0 && u == 0)) {
			sess_fail(r, "BAD_REQUEST", "thread must be a seq");
			return false;
		}
		rc = proto_get_array(r->map, "mentions", &a);
		if (rc == PROTO_F_TYPE ||
		    (rc == 0 && a->size > srv.lim.max_mentions)) {
			sess_fail(r, "BAD_REQUEST", "mentions must be a list of user ids");
			return false;
		}
		for (uint32_t i = 0; rc == 0 && i < a->size; i++) {
			if (a->ptr[i].type != MSGPACK_OBJECT_STR ||
			    !proto_id_valid(a->ptr[i].via.str.ptr,
					    a->ptr[i].via.str.size)) {
				sess_fail(r, "BAD_REQUEST",
				     "mentions must be a list of user ids");
				return false;
			}
		}
		return true;
	}
	case OP_READ:
		if (!sess_arg_ch(r, ch))
			return false;
		if (proto_get_uint(r->map, "seq", &u)) {
			sess_fail(r, "BAD_REQUEST", "seq must be an unsigned integer");
			return false;
		}
		return true;
	case OP_CH_JOIN:
	case OP_CH_LEAVE:
	case OP_TYPING:
		return sess_arg_ch(r, ch);
	case OP_EDIT:
		if (!sess_arg_ch(r, ch) || !sess_arg_target(r, &u))
			return false;
		if (proto_get_str(r->map, "body", &s, &n)) {
			sess_fail(r, "BAD_REQUEST", "body must be a string");
			return false;
		}
		if (n > srv.lim.max_body) {
			sess_fail(r, "TOO_LARGE", "body too large");
			return false;
		}
		return true;
	case OP_DELETE:
		return sess_arg_ch(r, ch) && sess_arg_target(r, &u);
	case OP_REACT: {
		bool on;

		if (!sess_arg_ch(r, ch) || !sess_arg_target(r, &u))
			return false;
		if (proto_get_str(r->map, "emoji", &s, &n) || n < 1 ||
		    n > PROTO_MAX_EMOJI) {
			sess_fail(r, "BAD_REQUEST", "emoji must be 1-64 bytes");
			return false;
		}
		if (proto_get_bool(r->map, "on", &on)) {
			sess_fail(r, "BAD_REQUEST", "on must be a boolean");
			return false;
		}
		return true;
	}
	case OP_PRESENCE_SET:
		if (proto_get_str(r->map, "status", &s, &n) ||
		    presence_status_parse(s, n) < 0) {
			sess_fail(r, "BAD_REQUEST",
			     "status must be online, away, dnd or invisible");
			return false;
		}
		return true;
	default:
		return false;
	}
}

void sess_forward(struct req *r)
{
	char ch[ID_CAP] = "";
	struct m_req *m;

	if (!validate_write(r, ch))
		return;
	m = msg_new(sizeof(*m) + r->len, M_REQ);
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
	m->len = (uint32_t)r->len;
	memcpy(m->frame, r->frame, r->len);
	rt_post(user_shard(m->ws, m->user), &m->h);
}

