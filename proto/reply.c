/*
 * reply: the typed encoders of reply.h.
 *
 * Each answer is the res header ({"t":"res","rid","ok":true}) and its own
 * pairs; res_ok() takes the number of those pairs from the function that
 * packs them, which counts its optional ones from the same conditions that
 * pack them. Key orders are the ones the actors used before these
 * encoders existed (tests/proto compares bytes with hand-packed maps).
 */
#include <string.h>

#include "proto/kv.h"
#include "proto/reply.h"

static void res_ok(proto_out *o, uint64_t rid, unsigned npairs)
{
	proto_enc_res_ok(o, rid, npairs);
}

static void kv_true(msgpack_packer *pk, const char *k)
{
	kv_bool(pk, k, true);
}

/* ---- errors ------------------------------------------------------------- */

void proto_enc_fail(proto_out *o, bool has_rid, uint64_t rid, const char *op,
		    size_t op_len, const char *code, const char *msg,
		    uint64_t retry_ms)
{
	if (has_rid)
		proto_enc_res_err(o, rid, code, msg, retry_ms);
	else
		proto_enc_err(o, code, msg, op, op_len, retry_ms);
}

void proto_enc_req_fail(proto_out *o, const struct proto_req *r,
			const char *code, const char *msg, uint64_t retry_ms)
{
	proto_enc_fail(o, r->has_rid, r->rid, r->opname.s, r->opname.n, code,
		       msg, retry_ms);
}

/* ---- answers ------------------------------------------------------------ */

void proto_enc_ok(proto_out *o, uint64_t rid)
{
	res_ok(o, rid, 0);
}

void proto_enc_send_ok(proto_out *o, uint64_t rid, uint64_t seq, uint64_t ts,
		       bool dup)
{
	res_ok(o, rid, 2 + dup);
	kv_uint(&o->pk, "seq", seq);
	kv_uint(&o->pk, "ts", ts);
	if (dup)
		kv_true(&o->pk, "dup");
}

void proto_enc_seq_ok(proto_out *o, uint64_t rid, uint64_t seq)
{
	res_ok(o, rid, 1);
	kv_uint(&o->pk, "seq", seq);
}

void proto_enc_react_ok(proto_out *o, uint64_t rid, uint64_t seq)
{
	if (seq) {
		proto_enc_seq_ok(o, rid, seq);
		return;
	}
	res_ok(o, rid, 1);
	kv_true(&o->pk, "noop");
}

static void pack_chref(msgpack_packer *pk, const proto_chref *c)
{
	msgpack_pack_map(pk, 3);
	kv_cstr(pk, "id", c->id);
	kv_cstr(pk, "name", c->name);
	kv_cstr(pk, "kind", proto_kind_names[c->kind]);
}

void proto_enc_chan_ok(proto_out *o, uint64_t rid, const proto_chref *ch)
{
	res_ok(o, rid, 1);
	proto_pk_cstr(&o->pk, "ch");
	pack_chref(&o->pk, ch);
}

void proto_enc_join_ok(proto_out *o, uint64_t rid, const proto_chref *ch,
		       uint64_t last_seq)
{
	res_ok(o, rid, 2);
	proto_pk_cstr(&o->pk, "ch");
	pack_chref(&o->pk, ch);
	kv_uint(&o->pk, "last_seq", last_seq);
}

void proto_enc_chinfo(proto_out *o, const proto_chinfo *c)
{
	msgpack_packer *pk = &o->pk;

	msgpack_pack_map(pk, 7 + c->has_member);
	kv_cstr(pk, "id", c->id);
	kv_cstr(pk, "name", c->name);
	kv_cstr(pk, "kind", proto_kind_names[c->kind]);
	kv_uint(pk, "last_seq", c->last_seq);
	kv_uint(pk, "read_seq", c->read_seq);
	kv_uint(pk, "unread", c->unread);
	kv_uint(pk, "mentions", c->mentions);
	if (c->has_member)
		kv_bool(pk, "member", c->member);
}

static void chinfo_list(proto_out *o, const proto_chinfo *v, uint32_t n)
{
	proto_pk_cstr(&o->pk, "channels");
	msgpack_pack_array(&o->pk, n);
	for (uint32_t i = 0; i < n; i++)
		proto_enc_chinfo(o, &v[i]);
}

void proto_enc_ch_list_ok(proto_out *o, uint64_t rid, const proto_chinfo *v,
			  uint32_t n)
{
	res_ok(o, rid, 1);
	chinfo_list(o, v, n);
}

void proto_enc_hello_ok(proto_out *o, uint64_t rid, const char *user,
			const char *ws, const char *name, uint32_t hb_ms,
			const proto_hello_limits *l, const proto_chinfo *v,
			uint32_t n)
{
	msgpack_packer *pk = &o->pk;

	res_ok(o, rid, 5 + (name != NULL));
	kv_cstr(pk, "user", user);
	kv_cstr(pk, "ws", ws);
	if (name)
		kv_cstr(pk, "name", name);
	kv_uint(pk, "hb_ms", hb_ms);
	proto_pk_cstr(pk, "limits");
	msgpack_pack_map(pk, 11);
	kv_uint(pk, "frame", l->frame);
	kv_uint(pk, "body", l->body);
	kv_uint(pk, "name", l->name);
	kv_uint(pk, "members", l->members);
	kv_uint(pk, "dm", l->dm);
	kv_uint(pk, "devices", l->devices);
	kv_uint(pk, "send_per_s", l->send_per_s);
	kv_uint(pk, "send_burst", l->send_burst);
	kv_uint(pk, "outbuf", l->outbuf);
	kv_uint(pk, "outbuf_max", l->outbuf_max);
	kv_uint(pk, "outbuf_stall_ms", l->outbuf_stall_ms);
	chinfo_list(o, v, n);
}

void proto_enc_members_ok(proto_out *o, uint64_t rid, const char *ids,
			  size_t stride, uint32_t n, bool more)
{
	res_ok(o, rid, 2);
	proto_pk_cstr(&o->pk, "members");
	msgpack_pack_array(&o->pk, n);
	for (uint32_t i = 0; i < n; i++)
		proto_pk_cstr(&o->pk, ids + i * stride);
	kv_bool(&o->pk, "more", more);
}

static void raw_list_ok(proto_out *o, uint64_t rid, const char *key,
			const proto_raw *v, uint32_t n, bool reverse, bool more)
{
	res_ok(o, rid, 2);
	proto_pk_cstr(&o->pk, key);
	msgpack_pack_array(&o->pk, n);
	for (uint32_t i = 0; i < n; i++) {
		const proto_raw *r = &v[reverse ? n - 1 - i : i];

		proto_pk_raw(&o->pk, r->p, r->n);
	}
	kv_bool(&o->pk, "more", more);
}

void proto_enc_history_ok(proto_out *o, uint64_t rid, const proto_raw *msgs,
			  uint32_t n, bool newest_first, bool more)
{
	raw_list_ok(o, rid, "msgs", msgs, n, newest_first, more);
}

void proto_enc_events_ok(proto_out *o, uint64_t rid, const proto_raw *evs,
			 uint32_t n, bool more)
{
	raw_list_ok(o, rid, "evs", evs, n, false, more);
}

void proto_enc_version(proto_out *o, proto_str body, uint64_t ts)
{
	msgpack_pack_map(&o->pk, 2);
	kv_pstr(&o->pk, "body", body);
	kv_uint(&o->pk, "ts", ts);
}

void proto_enc_edits_ok(proto_out *o, uint64_t rid, proto_str body,
			uint64_t ts, const proto_raw *versions, uint32_t n)
{
	res_ok(o, rid, 1);
	proto_pk_cstr(&o->pk, "versions");
	msgpack_pack_array(&o->pk, n + 1);
	proto_enc_version(o, body, ts);
	for (uint32_t i = 0; i < n; i++)
		proto_pk_raw(&o->pk, versions[i].p, versions[i].n);
}

void proto_enc_presence_watch_ok(proto_out *o, uint64_t rid,
				 const proto_pstate *v, uint32_t n)
{
	msgpack_packer *pk = &o->pk;

	res_ok(o, rid, 1);
	proto_pk_cstr(pk, "presence");
	msgpack_pack_map(pk, n);
	for (uint32_t i = 0; i < n; i++) {
		proto_pk_cstr(pk, v[i].user);
		msgpack_pack_map(pk, 2);
		kv_cstr(pk, "status", proto_pstatus_names[v[i].status]);
		kv_uint(pk, "since", v[i].since);
	}
}

void proto_enc_search_ok(proto_out *o, uint64_t rid, const proto_hit *hits,
			 uint32_t n, bool partial)
{
	msgpack_packer *pk = &o->pk;

	res_ok(o, rid, 1 + partial);
	proto_pk_cstr(pk, "hits");
	msgpack_pack_array(pk, n);
	for (uint32_t i = 0; i < n; i++) {
		bool files = hits[i].files && hits[i].files_len;

		msgpack_pack_map(pk, 5 + files);
		kv_cstr(pk, "ch", hits[i].ch);
		kv_uint(pk, "seq", hits[i].seq);
		kv_cstr(pk, "from", hits[i].from);
		kv_uint(pk, "ts", hits[i].ts);
		proto_pk_cstr(pk, "body");
		proto_pk_str(pk, hits[i].body, hits[i].body_len);
		if (files) {
			proto_pk_cstr(pk, "files");
			proto_pk_raw(pk, hits[i].files, hits[i].files_len);
		}
	}
	if (partial)
		kv_true(pk, "partial");
}

/* ---- the ops not carried out yet ---------------------------------------- */

static void users_ok(proto_out *o, uint64_t rid, const proto_user *v,
		     uint32_t n, bool last_seen)
{
	msgpack_packer *pk = &o->pk;

	res_ok(o, rid, 1);
	proto_pk_cstr(pk, "users");
	msgpack_pack_array(pk, n);
	for (uint32_t i = 0; i < n; i++) {
		msgpack_pack_map(pk, 3 + last_seen);
		kv_cstr(pk, "id", v[i].id);
		kv_cstr(pk, "name", v[i].name);
		kv_cstr(pk, "status", proto_pstatus_names[v[i].status]);
		if (last_seen)
			kv_uint(pk, "last_seen", v[i].last_seen);
	}
}

void proto_enc_users_search_ok(proto_out *o, uint64_t rid,
			       const proto_user *v, uint32_t n)
{
	users_ok(o, rid, v, n, false);
}

void proto_enc_users_get_ok(proto_out *o, uint64_t rid, const proto_user *v,
			    uint32_t n)
{
	users_ok(o, rid, v, n, true);
}

static const char *const post_names[] = { "all", "owners" };
static const char *const level_names[] = { "all", "mentions", "none" };

void proto_enc_ch_info_ok(proto_out *o, uint64_t rid, const proto_chfull *c)
{
	msgpack_packer *pk = &o->pk;

	res_ok(o, rid, 1);
	proto_pk_cstr(pk, "ch");
	msgpack_pack_map(pk, 9);
	kv_cstr(pk, "id", c->id);
	kv_cstr(pk, "name", c->name);
	kv_cstr(pk, "kind", proto_kind_names[c->kind]);
	kv_cstr(pk, "topic", c->topic ? c->topic : "");
	kv_bool(pk, "archived", c->archived);
	kv_cstr(pk, "post", post_names[c->post]);
	proto_pk_cstr(pk, "owners");
	msgpack_pack_array(pk, c->nowners);
	for (uint32_t i = 0; i < c->nowners; i++)
		proto_pk_cstr(pk, c->owners[i]);
	kv_uint(pk, "members", c->members);
	kv_uint(pk, "last_seq", c->last_seq);
}

void proto_enc_chan(proto_out *o, const char *ch,
		    const struct proto_a_ch_set *s)
{
	msgpack_packer *pk = &o->pk;

	msgpack_pack_map(pk, 2 + s->has_name + s->has_topic +
			 s->has_archived + s->has_post);
	kv_cstr(pk, "t", "chan");
	kv_cstr(pk, "ch", ch);
	if (s->has_name)
		kv_pstr(pk, "name", s->name);
	if (s->has_topic)
		kv_pstr(pk, "topic", s->topic);
	if (s->has_archived)
		kv_bool(pk, "archived", s->archived);
	if (s->has_post)
		kv_cstr(pk, "post", post_names[s->post]);
}

void proto_enc_receipts_ok(proto_out *o, uint64_t rid,
			   const proto_receipt *v, uint32_t n)
{
	msgpack_packer *pk = &o->pk;

	res_ok(o, rid, 1);
	proto_pk_cstr(pk, "receipts");
	msgpack_pack_map(pk, n);
	for (uint32_t i = 0; i < n; i++) {
		proto_pk_cstr(pk, v[i].user);
		msgpack_pack_map(pk, 2);
		kv_uint(pk, "delivered", v[i].delivered);
		kv_uint(pk, "read", v[i].read);
	}
}

void proto_enc_receipt(proto_out *o, const char *ch, const char *user,
		       bool read, uint64_t seq)
{
	msgpack_pack_map(&o->pk, 4);
	kv_cstr(&o->pk, "t", "receipt");
	kv_cstr(&o->pk, "ch", ch);
	kv_cstr(&o->pk, "user", user);
	kv_uint(&o->pk, read ? "read" : "delivered", seq);
}

/* stored: data as a bin "db" holding its bytes, so that it comes back
 * as those bytes; on the wire: the map itself, as "data" */
static void pack_pushers(msgpack_packer *pk, const proto_pusher *v,
			 uint32_t n, bool stored)
{
	msgpack_pack_array(pk, n);
	for (uint32_t i = 0; i < n; i++) {
		bool data = v[i].data.p && v[i].data.n;

		msgpack_pack_map(pk, 4 + data);
		kv_pstr(pk, "app", v[i].app);
		kv_pstr(pk, "pushkey", v[i].pushkey);
		kv_pstr(pk, "platform", v[i].platform);
		if (data && stored) {
			proto_pk_cstr(pk, "db");
			msgpack_pack_bin(pk, v[i].data.n);
			msgpack_pack_bin_body(pk, v[i].data.p, v[i].data.n);
		} else if (data) {
			proto_pk_cstr(pk, "data");
			proto_pk_raw(pk, v[i].data.p, v[i].data.n);
		}
		kv_uint(pk, "ts", v[i].ts);
	}
}

void proto_enc_push_list_ok(proto_out *o, uint64_t rid,
			    const proto_pusher *v, uint32_t n)
{
	res_ok(o, rid, 1);
	proto_pk_cstr(&o->pk, "pushers");
	pack_pushers(&o->pk, v, n, false);
}

void proto_enc_pushers(proto_out *o, const proto_pusher *v, uint32_t n)
{
	msgpack_pack_map(&o->pk, 1);
	proto_pk_cstr(&o->pk, "p");
	pack_pushers(&o->pk, v, n, true);
}

static bool obj_str(const msgpack_object *map, const char *k, proto_str *out)
{
	const char *s;
	uint32_t n;

	if (proto_get_str(map, k, &s, &n))
		return false;
	out->s = s;
	out->n = n;
	return true;
}

int proto_dec_pushers(proto_doc *d, const void *p, size_t n, proto_pusher *v,
		      uint32_t cap)
{
	const msgpack_object_array *a;
	uint32_t k = 0;

	if (proto_decode_max(d, p, n, PROTO_MAX_STATE) != PROTO_OK)
		return -1;
	if (proto_get_array(&d->root, "p", &a)) {
		proto_doc_free(d);
		return -1;
	}
	for (uint32_t i = 0; i < a->size && k < cap; i++) {
		const msgpack_object *m = &a->ptr[i];
		proto_pusher *x = &v[k];
		const msgpack_object *db;

		if (m->type != MSGPACK_OBJECT_MAP || !obj_str(m, "app", &x->app) ||
		    !obj_str(m, "pushkey", &x->pushkey) ||
		    !obj_str(m, "platform", &x->platform))
			continue;
		x->ts = 0;
		proto_get_uint(m, "ts", &x->ts);
		x->data.p = NULL;
		x->data.n = 0;
		db = proto_get(m, "db");
		if (db && db->type == MSGPACK_OBJECT_BIN) {
			x->data.p = (const uint8_t *)db->via.bin.ptr;
			x->data.n = db->via.bin.size;
		}
		k++;
	}
	return (int)k;
}

void proto_enc_notify_get_ok(proto_out *o, uint64_t rid, uint8_t def,
			     const proto_chlevel *v, uint32_t n)
{
	msgpack_packer *pk = &o->pk;

	res_ok(o, rid, 2);
	kv_cstr(pk, "default", level_names[def]);
	proto_pk_cstr(pk, "channels");
	msgpack_pack_map(pk, n);
	for (uint32_t i = 0; i < n; i++) {
		proto_pk_str(pk, v[i].ch.s, v[i].ch.n);
		proto_pk_cstr(pk, level_names[v[i].level]);
	}
}

void proto_enc_prefs(proto_out *o, uint8_t def, const proto_chlevel *v,
		     uint32_t n)
{
	msgpack_packer *pk = &o->pk;

	msgpack_pack_map(pk, 2);
	kv_uint(pk, "d", def);
	proto_pk_cstr(pk, "c");
	msgpack_pack_map(pk, n);
	for (uint32_t i = 0; i < n; i++) {
		proto_pk_str(pk, v[i].ch.s, v[i].ch.n);
		msgpack_pack_uint8(pk, v[i].level);
	}
}

int proto_dec_prefs(proto_doc *d, const void *p, size_t n, uint8_t *def,
		    proto_chlevel *v, uint32_t cap)
{
	const msgpack_object_map *c;
	uint64_t x;
	uint32_t k = 0;

	*def = PROTO_LEVEL_MENTIONS;
	if (proto_decode_max(d, p, n, PROTO_MAX_STATE) != PROTO_OK)
		return -1;
	if (proto_get_uint(&d->root, "d", &x) == 0 && x <= PROTO_LEVEL_NONE)
		*def = (uint8_t)x;
	if (proto_get_map(&d->root, "c", &c) == 0) {
		for (uint32_t i = 0; i < c->size && k < cap; i++) {
			const msgpack_object_kv *kv = &c->ptr[i];

			if (kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
			    kv->val.via.u64 > PROTO_LEVEL_NONE)
				continue;
			/* keys are str (proto_decode checks it); ids are
			 * NUL-free, and the caller copies what it keeps */
			v[k].ch.s = kv->key.via.str.ptr;
			v[k].ch.n = kv->key.via.str.size;
			v[k].level = (uint8_t)kv->val.via.u64;
			k++;
		}
	}
	return (int)k;
}

/* ---- files (issue 15) ------------------------------------------------------ */

void proto_enc_file_rec(proto_out *o, const proto_file *f)
{
	msgpack_packer *pk = &o->pk;

	msgpack_pack_map(pk, 12);
	kv_pstr(pk, "id", f->id);
	kv_pstr(pk, "ws", f->ws);
	kv_pstr(pk, "user", f->user);
	kv_pstr(pk, "name", f->name);
	kv_pstr(pk, "type", f->type);
	kv_pstr(pk, "sha256", f->sha256);
	kv_pstr(pk, "snippet", f->snippet);
	kv_uint(pk, "size", f->size);
	kv_uint(pk, "ts", f->ts);
	kv_uint(pk, "w", f->w);
	kv_uint(pk, "h", f->h);
	kv_bool(pk, "thumb", f->thumb);
}

void proto_enc_files(proto_out *o, const proto_file *v, uint32_t n)
{
	msgpack_packer *pk = &o->pk;

	msgpack_pack_array(pk, n);
	for (uint32_t i = 0; i < n; i++) {
		const proto_file *f = &v[i];
		bool wh = f->w && f->h;

		msgpack_pack_map(pk, 4 + 2 * wh + f->thumb + (f->snippet.n > 0));
		kv_pstr(pk, "id", f->id);
		kv_pstr(pk, "name", f->name);
		kv_uint(pk, "size", f->size);
		kv_pstr(pk, "type", f->type);
		if (wh) {
			kv_uint(pk, "w", f->w);
			kv_uint(pk, "h", f->h);
		}
		if (f->thumb)
			kv_bool(pk, "thumb", true);
		if (f->snippet.n)
			kv_pstr(pk, "snippet", f->snippet);
	}
}

int proto_dec_file_rec(proto_doc *d, const void *p, size_t n, proto_file *f)
{
	uint64_t x;

	memset(f, 0, sizeof(*f));
	if (proto_decode_max(d, p, n, PROTO_MAX_STATE) != PROTO_OK)
		return -1;
	if (!obj_str(&d->root, "id", &f->id) || !obj_str(&d->root, "ws", &f->ws) ||
	    !obj_str(&d->root, "user", &f->user) ||
	    !obj_str(&d->root, "name", &f->name) ||
	    !obj_str(&d->root, "type", &f->type) ||
	    !obj_str(&d->root, "sha256", &f->sha256)) {
		proto_doc_free(d);
		return -1;
	}
	obj_str(&d->root, "snippet", &f->snippet);
	proto_get_uint(&d->root, "size", &f->size);
	proto_get_uint(&d->root, "ts", &f->ts);
	if (proto_get_uint(&d->root, "w", &x) == 0)
		f->w = (uint32_t)x;
	if (proto_get_uint(&d->root, "h", &x) == 0)
		f->h = (uint32_t)x;
	proto_get_bool(&d->root, "thumb", &f->thumb);
	return 0;
}

/* ---- stored state ------------------------------------------------------- */

int proto_reactions_apply(const proto_msg *m, proto_str user, proto_str emoji,
			  bool on, unsigned max_kinds, proto_out *out,
			  bool *changed)
{
	proto_doc d;
	const msgpack_object_kv *kv = NULL;
	uint32_t n = 0, keep = 0;
	int found = -1, has = 0;
	msgpack_packer *pk = &out->pk;
	bool decoded = m->reactions && m->reactions_len;

	*changed = false;
	if (decoded) {
		/* the map alone is one document (a map at the top) */
		if (proto_decode_max(&d, m->reactions, m->reactions_len,
				     PROTO_MAX_STATE) != PROTO_OK)
			return -2;
		kv = d.root.via.map.ptr;
		n = d.root.via.map.size;
		for (uint32_t i = 0; i < n; i++) {
			if (kv[i].val.type != MSGPACK_OBJECT_ARRAY)
				goto bad;
			for (uint32_t j = 0; j < kv[i].val.via.array.size; j++)
				if (kv[i].val.via.array.ptr[j].type !=
				    MSGPACK_OBJECT_STR)
					goto bad;
		}
	}
	for (uint32_t i = 0; i < n; i++) {
		if (kv[i].key.via.str.size == emoji.n &&
		    !memcmp(kv[i].key.via.str.ptr, emoji.s, emoji.n))
			found = (int)i;
	}
	if (found >= 0) {
		const msgpack_object_array *a = &kv[found].val.via.array;

		for (uint32_t j = 0; j < a->size; j++)
			has |= a->ptr[j].via.str.size == user.n &&
			       !memcmp(a->ptr[j].via.str.ptr, user.s, user.n);
	}
	if ((on && has) || (!on && !has))
		goto out;
	if (on && found < 0 && n >= max_kinds) {
		if (decoded)
			proto_doc_free(&d);
		return -1;
	}
	*changed = true;
	for (uint32_t i = 0; i < n; i++)
		keep += !(i == (uint32_t)found && !on &&
			  kv[i].val.via.array.size == 1);
	msgpack_pack_map(pk, keep + (found < 0));
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object_array *a = &kv[i].val.via.array;
		bool mine = i == (uint32_t)found;

		if (mine && !on && a->size == 1)
			continue;
		proto_pk_str(pk, kv[i].key.via.str.ptr, kv[i].key.via.str.size);
		msgpack_pack_array(pk, a->size + (mine ? (on ? 1 : -1) : 0));
		for (uint32_t j = 0; j < a->size; j++) {
			if (mine && !on && a->ptr[j].via.str.size == user.n &&
			    !memcmp(a->ptr[j].via.str.ptr, user.s, user.n))
				continue;
			proto_pk_str(pk, a->ptr[j].via.str.ptr,
				     a->ptr[j].via.str.size);
		}
		if (mine && on)
			proto_pk_str(pk, user.s, user.n);
	}
	if (found < 0) {
		proto_pk_str(pk, emoji.s, emoji.n);
		msgpack_pack_array(pk, 1);
		proto_pk_str(pk, user.s, user.n);
	}
out:
	if (decoded)
		proto_doc_free(&d);
	return 0;
bad:
	proto_doc_free(&d);
	return -2;
}

/* ---- requests ------------------------------------------------------------ */

void proto_enc_send_req(proto_out *o, uint64_t rid, const char *ch,
			proto_str body, proto_str cmid, bool has_thread,
			uint64_t thread, bool has_mentions,
			const proto_str *mentions, uint32_t nmentions)
{
	msgpack_packer *pk = &o->pk;

	proto_enc_req(o, "send", rid, 3 + has_thread + has_mentions);
	kv_cstr(pk, "ch", ch);
	kv_pstr(pk, "body", body);
	kv_pstr(pk, "cmid", cmid);
	if (has_thread)
		kv_uint(pk, "thread", thread);
	if (has_mentions) {
		proto_pk_cstr(pk, "mentions");
		msgpack_pack_array(pk, nmentions);
		for (uint32_t i = 0; i < nmentions; i++)
			proto_pk_str(pk, mentions[i].s, mentions[i].n);
	}
}

void proto_enc_history_req(proto_out *o, uint64_t rid, const char *ch,
			   const struct proto_history_q *q)
{
	msgpack_packer *pk = &o->pk;

	proto_enc_req(o, "history", rid,
		      1 + q->has_before + q->has_after + q->has_limit +
			      q->has_thread);
	kv_cstr(pk, "ch", ch);
	if (q->has_before)
		kv_uint(pk, "before", q->before);
	if (q->has_after)
		kv_uint(pk, "after", q->after);
	if (q->has_limit)
		kv_uint(pk, "limit", q->limit);
	if (q->has_thread)
		kv_uint(pk, "thread", q->thread);
}

/* The pairs of a request's arguments, counted (pk NULL) or packed. */
struct args {
	msgpack_packer *pk;
	unsigned n;
};

static void a_str(struct args *a, const char *k, proto_str v)
{
	if (!v.s)
		return;
	a->n++;
	if (a->pk)
		kv_pstr(a->pk, k, v);
}

static void a_uint(struct args *a, const char *k, uint64_t v)
{
	a->n++;
	if (a->pk)
		kv_uint(a->pk, k, v);
}

static void a_bool(struct args *a, const char *k, bool v)
{
	a->n++;
	if (a->pk)
		kv_bool(a->pk, k, v);
}

static void a_cstr(struct args *a, const char *k, const char *v)
{
	a->n++;
	if (a->pk)
		kv_cstr(a->pk, k, v);
}

static void a_strs(struct args *a, const char *k, proto_strs l, bool always)
{
	if (!l.n && !always)
		return;
	a->n++;
	if (!a->pk)
		return;
	proto_pk_cstr(a->pk, k);
	msgpack_pack_array(a->pk, l.n);
	for (uint32_t i = 0; i < l.n; i++)
		proto_pk_str(a->pk, l.v[i].via.str.ptr, l.v[i].via.str.size);
}

static const char *const role_names[] = { "member", "owner" };

static void req_args(struct args *a, const struct proto_req *r)
{
	switch (r->op) {
	case PROTO_OP_HELLO:
		a_str(a, "token", r->a.hello.token);
		if (r->a.hello.resume.n) {
			const proto_resume *res = &r->a.hello.resume;

			a->n++;
			if (!a->pk)
				break;
			proto_pk_cstr(a->pk, "resume");
			msgpack_pack_map(a->pk, res->n);
			for (uint32_t i = 0; i < res->n; i++) {
				proto_str ch = proto_resume_ch(res, i);

				proto_pk_str(a->pk, ch.s, ch.n);
				if (res->v[i].val.type ==
				    MSGPACK_OBJECT_POSITIVE_INTEGER)
					msgpack_pack_uint64(a->pk,
							    res->v[i].val.via.u64);
				else
					msgpack_pack_nil(a->pk);
			}
		}
		break;
	case PROTO_OP_CH_CREATE:
		a_str(a, "name", r->a.create.name);
		a_cstr(a, "kind", proto_kind_names[r->a.create.kind]);
		a_str(a, "topic", r->a.create.topic);
		break;
	case PROTO_OP_DM_OPEN:
	case PROTO_OP_PRESENCE_WATCH:
	case PROTO_OP_USERS_GET:
		a_strs(a, "users", r->a.users.users, true);
		break;
	case PROTO_OP_CH_INVITE:
	case PROTO_OP_CH_KICK:
		a_str(a, "ch", r->a.users.ch);
		a_strs(a, "users", r->a.users.users, true);
		break;
	case PROTO_OP_CH_JOIN:
	case PROTO_OP_CH_LEAVE:
	case PROTO_OP_TYPING:
	case PROTO_OP_CH_INFO:
	case PROTO_OP_RECEIPTS:
		a_str(a, "ch", r->a.ch.ch);
		break;
	case PROTO_OP_CH_MEMBERS:
		a_str(a, "ch", r->a.members.ch);
		a_str(a, "after", r->a.members.after);
		a_uint(a, "limit", r->a.members.limit);
		break;
	case PROTO_OP_SEND:
		a_str(a, "ch", r->a.send.ch);
		a_str(a, "body", r->a.send.body);
		a_str(a, "cmid", r->a.send.cmid);
		if (r->a.send.thread)
			a_uint(a, "thread", r->a.send.thread);
		a_strs(a, "mentions", r->a.send.mentions, false);
		break;
	case PROTO_OP_HISTORY:
		a_str(a, "ch", r->a.history.ch);
		if (r->a.history.has_before)
			a_uint(a, "before", r->a.history.before);
		if (r->a.history.has_after)
			a_uint(a, "after", r->a.history.after);
		a_uint(a, "limit", r->a.history.limit);
		if (r->a.history.thread)
			a_uint(a, "thread", r->a.history.thread);
		break;
	case PROTO_OP_EVENTS:
		a_str(a, "ch", r->a.events.ch);
		a_uint(a, "after", r->a.events.after);
		a_uint(a, "limit", r->a.events.limit);
		break;
	case PROTO_OP_READ:
	case PROTO_OP_DELIVERED:
		a_str(a, "ch", r->a.seq.ch);
		a_uint(a, "seq", r->a.seq.seq);
		break;
	case PROTO_OP_EDIT:
		a_str(a, "ch", r->a.edit.ch);
		a_uint(a, "target", r->a.edit.target);
		a_str(a, "body", r->a.edit.body);
		break;
	case PROTO_OP_EDITS:
	case PROTO_OP_DELETE:
		a_str(a, "ch", r->a.target.ch);
		a_uint(a, "target", r->a.target.target);
		break;
	case PROTO_OP_REACT:
		a_str(a, "ch", r->a.react.ch);
		a_uint(a, "target", r->a.react.target);
		a_str(a, "emoji", r->a.react.emoji);
		a_bool(a, "on", r->a.react.on);
		break;
	case PROTO_OP_PRESENCE_SET:
		a_cstr(a, "status", proto_pstatus_names[r->a.pset.status]);
		break;
	case PROTO_OP_SEARCH:
		a_str(a, "q", r->a.search.q);
		a_str(a, "ch", r->a.search.ch);
		a_uint(a, "limit", r->a.search.limit);
		break;
	case PROTO_OP_USERS_SEARCH:
		a_str(a, "q", r->a.usearch.q);
		a_uint(a, "limit", r->a.usearch.limit);
		break;
	case PROTO_OP_CH_SET:
		a_str(a, "ch", r->a.chset.ch);
		if (r->a.chset.has_name)
			a_str(a, "name", r->a.chset.name);
		if (r->a.chset.has_topic)
			a_str(a, "topic", r->a.chset.topic);
		if (r->a.chset.has_archived)
			a_bool(a, "archived", r->a.chset.archived);
		if (r->a.chset.has_post)
			a_cstr(a, "post", post_names[r->a.chset.post]);
		break;
	case PROTO_OP_CH_ROLE:
		a_str(a, "ch", r->a.role.ch);
		a_str(a, "user", r->a.role.user);
		a_cstr(a, "role", role_names[r->a.role.role]);
		break;
	case PROTO_OP_PUSH_REGISTER:
	case PROTO_OP_PUSH_UNREGISTER:
		a_str(a, "app", r->a.push.app);
		a_str(a, "pushkey", r->a.push.pushkey);
		if (r->op == PROTO_OP_PUSH_UNREGISTER)
			break;
		a_str(a, "platform", r->a.push.platform);
		if (r->a.push.data.p) {
			a->n++;
			if (a->pk) {
				proto_pk_cstr(a->pk, "data");
				proto_pk_raw(a->pk, r->a.push.data.p,
					     r->a.push.data.n);
			}
		}
		break;
	case PROTO_OP_NOTIFY_SET:
		a_cstr(a, "level", level_names[r->a.notify.level]);
		a_str(a, "ch", r->a.notify.ch);
		break;
	default: /* hb, ch.list, push.list, notify.get: none */
		break;
	}
}

void proto_req_encode(proto_out *o, const struct proto_req *r)
{
	struct args count = { NULL, 0 }, pack = { &o->pk, 0 };
	const char *op = proto_op_name(r->op);

	req_args(&count, r);
	/* not proto_enc_req(): a rid of 0 is a rid too */
	msgpack_pack_map(&o->pk, 1 + r->has_rid + count.n);
	kv_cstr(&o->pk, "op", op ? op : "");
	if (r->has_rid)
		kv_uint(&o->pk, "rid", r->rid);
	req_args(&pack, r);
}

/* ---- names, roles and moderation (issue 13, h-roles) -------------------- */

void proto_enc_fail_ch(proto_out *o, bool has_rid, uint64_t rid,
		       const char *op, const char *code, const char *msg,
		       const proto_chref *ch)
{
	msgpack_packer *pk = &o->pk;

	if (!ch) {
		proto_enc_fail(o, has_rid, rid, op, op ? strlen(op) : 0, code,
			       msg, 0);
		return;
	}
	if (has_rid) {
		msgpack_pack_map(pk, 6);
		kv_cstr(pk, "t", "res");
		kv_uint(pk, "rid", rid);
		kv_bool(pk, "ok", false);
	} else {
		msgpack_pack_map(pk, 4 + (op != NULL));
		kv_cstr(pk, "t", "err");
	}
	kv_cstr(pk, "code", code);
	kv_cstr(pk, "msg", msg);
	if (!has_rid && op)
		kv_cstr(pk, "op", op);
	proto_pk_cstr(pk, "ch");
	pack_chref(pk, ch);
}
