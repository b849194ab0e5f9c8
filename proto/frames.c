/*
 * frames: the frames of PROTOCOL.md, encoded into a proto_out and decoded
 * from a proto_doc.
 *
 * The sessions and channel actors encode responses, events and history
 * messages here; the bytes go on to the transport (which writes the
 * WebSocket header into the headroom in front of them) or to storage. The C
 * client (client.c) and the tests encode requests here and decode what comes
 * back. Keys are spelled only in this file and in the callers' extra pairs.
 *
 * Encoders never fail: running out of memory in the middle of a frame would
 * leave a half-written map that must never reach a socket or the disk, so it
 * aborts instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/kv.h"
#include "proto/proto.h"

/* ---- output buffer ------------------------------------------------------ */

static void out_grow(proto_out *o, size_t need)
{
	size_t cap = o->cap ? o->cap : 64;
	uint8_t *base;

	while (cap - o->len < need) {
		if (cap > SIZE_MAX / 2 - o->headroom)
			goto oom;
		cap *= 2;
	}
	base = realloc(o->base, o->headroom + cap);
	if (!base)
		goto oom;
	o->base = base;
	o->data = base + o->headroom;
	o->cap = cap;
	return;
oom:
	fprintf(stderr, "proto: out of memory growing an output buffer\n");
	abort();
}

/* msgpack_packer callback: pk->data is the proto_out itself, so a proto_out
 * must not be moved (copied by value) after proto_out_init(). */
static int out_write(void *data, const char *buf, size_t len)
{
	proto_out *o = data;

	if (len == 0)
		return 0;
	if (o->cap - o->len < len)
		out_grow(o, len);
	memcpy(o->data + o->len, buf, len);
	o->len += len;
	return 0;
}

void proto_out_init(proto_out *o, size_t headroom, size_t cap)
{
	memset(o, 0, sizeof(*o));
	o->headroom = headroom;
	out_grow(o, cap ? cap : 64);
	msgpack_packer_init(&o->pk, o, out_write);
}

void proto_out_reset(proto_out *o)
{
	o->len = 0;
}

void proto_out_free(proto_out *o)
{
	free(o->base);
	o->base = o->data = NULL;
	o->len = o->cap = 0;
}

void proto_pk_str(msgpack_packer *pk, const char *s, size_t n)
{
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

void proto_pk_cstr(msgpack_packer *pk, const char *s)
{
	proto_pk_str(pk, s, s ? strlen(s) : 0);
}

void proto_pk_raw(msgpack_packer *pk, const void *v, size_t n)
{
	pk->callback(pk->data, v, n);
}

/* ---- server frames ------------------------------------------------------ */

void proto_enc_res_ok(proto_out *o, uint64_t rid, unsigned nextra)
{
	msgpack_pack_map(&o->pk, 3 + nextra);
	kv_cstr(&o->pk, "t", "res");
	kv_uint(&o->pk, "rid", rid);
	kv_bool(&o->pk, "ok", true);
}

void proto_enc_res_err(proto_out *o, uint64_t rid, const char *code,
		       const char *msg, uint64_t retry_ms)
{
	msgpack_pack_map(&o->pk, 5 + (retry_ms != 0));
	kv_cstr(&o->pk, "t", "res");
	kv_uint(&o->pk, "rid", rid);
	kv_bool(&o->pk, "ok", false);
	kv_cstr(&o->pk, "code", code);
	kv_cstr(&o->pk, "msg", msg);
	if (retry_ms)
		kv_uint(&o->pk, "retry_ms", retry_ms);
}

void proto_enc_err(proto_out *o, const char *code, const char *msg,
		   const char *op, size_t op_len, uint64_t retry_ms)
{
	msgpack_pack_map(&o->pk, 3 + (op != NULL) + (retry_ms != 0));
	kv_cstr(&o->pk, "t", "err");
	kv_cstr(&o->pk, "code", code);
	kv_cstr(&o->pk, "msg", msg);
	if (op) {
		proto_pk_cstr(&o->pk, "op");
		proto_pk_str(&o->pk, op, op_len);
	}
	if (retry_ms)
		kv_uint(&o->pk, "retry_ms", retry_ms);
}

void proto_enc_member(proto_out *o, const char *ch, const char *user,
		      const char *action)
{
	msgpack_pack_map(&o->pk, 4);
	kv_cstr(&o->pk, "t", "member");
	kv_cstr(&o->pk, "ch", ch);
	kv_cstr(&o->pk, "user", user);
	kv_cstr(&o->pk, "action", action);
}

void proto_enc_gap(proto_out *o, const char *ch, uint64_t after,
		   uint64_t last_seq)
{
	msgpack_pack_map(&o->pk, 4);
	kv_cstr(&o->pk, "t", "gap");
	kv_cstr(&o->pk, "ch", ch);
	kv_uint(&o->pk, "after", after);
	kv_uint(&o->pk, "last_seq", last_seq);
}

void proto_enc_goaway(proto_out *o, uint64_t retry_ms)
{
	msgpack_pack_map(&o->pk, 2);
	kv_cstr(&o->pk, "t", "goaway");
	kv_uint(&o->pk, "retry_ms", retry_ms);
}

void proto_enc_read(proto_out *o, const char *ch, uint64_t seq)
{
	msgpack_pack_map(&o->pk, 3);
	kv_cstr(&o->pk, "t", "read");
	kv_cstr(&o->pk, "ch", ch);
	kv_uint(&o->pk, "seq", seq);
}

void proto_enc_presence(proto_out *o, const char *user, const char *status,
			uint64_t since)
{
	msgpack_pack_map(&o->pk, 4);
	kv_cstr(&o->pk, "t", "presence");
	kv_cstr(&o->pk, "user", user);
	kv_cstr(&o->pk, "status", status);
	kv_uint(&o->pk, "since", since);
}

void proto_enc_typing(proto_out *o, const char *ch, const char *user)
{
	msgpack_pack_map(&o->pk, 3);
	kv_cstr(&o->pk, "t", "typing");
	kv_cstr(&o->pk, "ch", ch);
	kv_cstr(&o->pk, "user", user);
}

/* ---- events ------------------------------------------------------------- */

enum kind { K_MSG, K_EDIT, K_DELETE, K_REACT, K_OTHER };

static bool str_is(proto_str s, const char *lit)
{
	size_t n = strlen(lit);

	return s.n == n && (n == 0 || memcmp(s.s, lit, n) == 0);
}

static enum kind kind_of(proto_str k)
{
	if (str_is(k, "msg"))
		return K_MSG;
	if (str_is(k, "edit"))
		return K_EDIT;
	if (str_is(k, "delete"))
		return K_DELETE;
	if (str_is(k, "react"))
		return K_REACT;
	return K_OTHER;
}

/* Which optional fields an event carries. The four kinds of PROTOCOL.md
 * carry exactly their own; a kind this code does not know carries whatever
 * is set, so a newer kind still round-trips. */
struct ev_fields {
	bool body, cmid, thread, target, emoji, on, mentions, files;
};

static struct ev_fields ev_fields(const proto_event *ev)
{
	struct ev_fields f = { 0 };

	switch (kind_of(ev->k)) {
	case K_MSG:
		f.body = f.cmid = true;
		f.thread = ev->thread != 0;
		f.mentions = ev->nmentions > 0;
		f.files = ev->files && ev->files_len;
		break;
	case K_EDIT:
		f.target = f.body = true;
		break;
	case K_DELETE:
		f.target = true;
		break;
	case K_REACT:
		f.target = f.emoji = f.on = true;
		break;
	case K_OTHER:
		f.body = ev->body.s != NULL;
		f.cmid = ev->cmid.s != NULL;
		f.thread = ev->thread != 0;
		f.target = ev->target != 0;
		f.emoji = f.on = ev->emoji.s != NULL;
		f.mentions = ev->nmentions > 0;
		f.files = ev->files && ev->files_len;
		break;
	}
	return f;
}

void proto_enc_event(proto_out *o, const proto_event *ev)
{
	struct ev_fields f = ev_fields(ev);
	msgpack_packer *pk = &o->pk;

	msgpack_pack_map(pk, 6 + f.body + f.cmid + f.thread + f.target +
			 f.emoji + f.on + f.mentions + f.files);
	kv_cstr(pk, "t", "ev");
	kv_pstr(pk, "ch", ev->ch);
	kv_uint(pk, "seq", ev->seq);
	kv_pstr(pk, "k", ev->k);
	kv_uint(pk, "ts", ev->ts);
	kv_pstr(pk, "from", ev->from);
	if (f.body)
		kv_pstr(pk, "body", ev->body);
	if (f.cmid)
		kv_pstr(pk, "cmid", ev->cmid);
	if (f.thread)
		kv_uint(pk, "thread", ev->thread);
	if (f.target)
		kv_uint(pk, "target", ev->target);
	if (f.emoji)
		kv_pstr(pk, "emoji", ev->emoji);
	if (f.on)
		kv_bool(pk, "on", ev->on);
	if (f.mentions)
		kv_mentions(pk, ev->mentions, ev->nmentions);
	if (f.files) {
		proto_pk_cstr(pk, "files");
		proto_pk_raw(pk, ev->files, ev->files_len);
	}
}

/* Decoding helpers: 0 when the key holds the right type, or is absent (or
 * nil) and optional; -1 otherwise. Absent leaves zero in *v. */
static int dec_str(const msgpack_object *m, const char *key, proto_str *v,
		   bool required)
{
	const char *s;
	uint32_t n;
	int rc = proto_get_str(m, key, &s, &n);

	v->s = NULL;
	v->n = 0;
	if (rc == 0) {
		v->s = s;
		v->n = n;
		return 0;
	}
	return rc == PROTO_F_MISSING && !required ? 0 : -1;
}

static int dec_uint(const msgpack_object *m, const char *key, uint64_t *v,
		    bool required)
{
	int rc = proto_get_uint(m, key, v);

	if (rc != 0)
		*v = 0;
	return rc == 0 || (rc == PROTO_F_MISSING && !required) ? 0 : -1;
}

static int dec_bool(const msgpack_object *m, const char *key, bool *v,
		    bool required)
{
	int rc = proto_get_bool(m, key, v);

	if (rc != 0)
		*v = false;
	return rc == 0 || (rc == PROTO_F_MISSING && !required) ? 0 : -1;
}

/* A value handed on as the encoded bytes it arrived as (reactions, files),
 * so that a decode, change, encode of a stored message keeps it without
 * the caller knowing its shape. msgpack-c leaves every str pointing into
 * the bytes it unpacked (the doc's own copy, see proto_decode()), so the
 * value starts right after its key's bytes. */
static int dec_raw(const msgpack_object *map, const char *key,
		   msgpack_object_type type, const void **out, size_t *len)
{
	size_t kl = strlen(key);
	uint32_t i;

	*out = NULL;
	*len = 0;
	for (i = 0; i < map->via.map.size; i++) {
		const msgpack_object_kv *kv = &map->via.map.ptr[i];
		const uint8_t *p;
		size_t n;

		if (kv->key.type != MSGPACK_OBJECT_STR ||
		    kv->key.via.str.size != kl ||
		    memcmp(kv->key.via.str.ptr, key, kl) != 0)
			continue;
		if (kv->val.type == MSGPACK_OBJECT_NIL)
			return 0;
		if (kv->val.type != type)
			return -1;
		p = (const uint8_t *)kv->key.via.str.ptr + kl;
		if (type == MSGPACK_OBJECT_MAP &&
		    !((*p >= 0x80 && *p <= 0x8f) || *p == 0xde || *p == 0xdf))
			return -1;
		if (type == MSGPACK_OBJECT_ARRAY &&
		    !((*p >= 0x90 && *p <= 0x9f) || *p == 0xdc || *p == 0xdd))
			return -1;
		/* within a doc already decoded: its own bound is the limit */
		n = proto__value_len(p, PROTO_MAX_STATE);
		if (n == 0)
			return -1;
		*out = p;
		*len = n;
		return 0;
	}
	return 0;
}

/* Every element must be a str; the first cap go into out. */
static int dec_mentions(const msgpack_object *m, proto_str *out, unsigned cap,
			const proto_str **mentions, unsigned *n)
{
	const msgpack_object_array *a;
	int rc = proto_get_array(m, "mentions", &a);
	uint32_t i;

	*mentions = out;
	*n = 0;
	if (rc == PROTO_F_MISSING)
		return 0;
	if (rc != 0)
		return -1;
	for (i = 0; i < a->size; i++) {
		const msgpack_object *e = &a->ptr[i];

		if (e->type != MSGPACK_OBJECT_STR)
			return -1;
		if (out && *n < cap) {
			out[*n].s = e->via.str.ptr;
			out[*n].n = e->via.str.size;
			(*n)++;
		}
	}
	return 0;
}

int proto_dec_event(const msgpack_object *map, proto_event *ev,
		    proto_str *mentions, unsigned cap)
{
	proto_str t;
	struct ev_fields need = { 0 };

	memset(ev, 0, sizeof(*ev));
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return -1;
	/* "t" may be left out (a stored event need not say it), but an event
	 * is never some other frame. */
	if (dec_str(map, "t", &t, false) || (t.s && !str_is(t, "ev")))
		return -1;
	if (dec_str(map, "ch", &ev->ch, true) ||
	    dec_uint(map, "seq", &ev->seq, true) ||
	    dec_str(map, "k", &ev->k, true) ||
	    dec_uint(map, "ts", &ev->ts, true) ||
	    dec_str(map, "from", &ev->from, true))
		return -1;
	switch (kind_of(ev->k)) {
	case K_MSG:
		need.body = need.cmid = true;
		break;
	case K_EDIT:
		need.target = need.body = true;
		break;
	case K_DELETE:
		need.target = true;
		break;
	case K_REACT:
		need.target = need.emoji = need.on = true;
		break;
	case K_OTHER:
		break;
	}
	if (dec_str(map, "body", &ev->body, need.body) ||
	    dec_str(map, "cmid", &ev->cmid, need.cmid) ||
	    dec_uint(map, "thread", &ev->thread, false) ||
	    dec_uint(map, "target", &ev->target, need.target) ||
	    dec_str(map, "emoji", &ev->emoji, need.emoji) ||
	    dec_bool(map, "on", &ev->on, need.on) ||
	    dec_mentions(map, mentions, cap, &ev->mentions, &ev->nmentions) ||
	    dec_raw(map, "files", MSGPACK_OBJECT_ARRAY, &ev->files,
		    &ev->files_len))
		return -1;
	return 0;
}

/* ---- history messages --------------------------------------------------- */

void proto_enc_msg(proto_out *o, const proto_msg *m)
{
	msgpack_packer *pk = &o->pk;
	bool reactions = m->reactions && m->reactions_len;

	bool files = m->files && m->files_len;

	msgpack_pack_map(pk, 5 + (m->thread != 0) + (m->replies != 0) +
			 (m->last_reply != 0) + (m->edited != 0) + m->deleted +
			 reactions + (m->nmentions > 0) + files);
	kv_uint(pk, "seq", m->seq);
	kv_pstr(pk, "from", m->from);
	kv_uint(pk, "ts", m->ts);
	kv_pstr(pk, "body", m->body);
	kv_pstr(pk, "cmid", m->cmid);
	if (m->thread)
		kv_uint(pk, "thread", m->thread);
	if (m->replies)
		kv_uint(pk, "replies", m->replies);
	if (m->last_reply)
		kv_uint(pk, "last_reply", m->last_reply);
	if (m->edited)
		kv_uint(pk, "edited", m->edited);
	if (m->deleted)
		kv_bool(pk, "deleted", true);
	if (reactions) {
		proto_pk_cstr(pk, "reactions");
		proto_pk_raw(pk, m->reactions, m->reactions_len);
	}
	if (m->nmentions)
		kv_mentions(pk, m->mentions, m->nmentions);
	if (files) {
		proto_pk_cstr(pk, "files");
		proto_pk_raw(pk, m->files, m->files_len);
	}
}

/* reactions: see dec_raw (a thread root getting a new reply keeps them) */
static int dec_reactions(const msgpack_object *map, proto_msg *m)
{
	return dec_raw(map, "reactions", MSGPACK_OBJECT_MAP, &m->reactions,
		       &m->reactions_len);
}

int proto_dec_msg(const msgpack_object *map, proto_msg *m, proto_str *mentions,
		  unsigned cap)
{
	memset(m, 0, sizeof(*m));
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return -1;
	if (dec_uint(map, "seq", &m->seq, true) ||
	    dec_str(map, "from", &m->from, true) ||
	    dec_uint(map, "ts", &m->ts, true) ||
	    dec_str(map, "body", &m->body, true) ||
	    dec_str(map, "cmid", &m->cmid, false) ||
	    dec_uint(map, "thread", &m->thread, false) ||
	    dec_uint(map, "replies", &m->replies, false) ||
	    dec_uint(map, "last_reply", &m->last_reply, false) ||
	    dec_uint(map, "edited", &m->edited, false) ||
	    dec_bool(map, "deleted", &m->deleted, false) ||
	    dec_reactions(map, m) ||
	    dec_raw(map, "files", MSGPACK_OBJECT_ARRAY, &m->files,
		    &m->files_len) ||
	    dec_mentions(map, mentions, cap, &m->mentions, &m->nmentions))
		return -1;
	return 0;
}

/* ---- client requests ---------------------------------------------------- */

void proto_enc_req(proto_out *o, const char *op, uint64_t rid, unsigned nargs)
{
	msgpack_pack_map(&o->pk, 1 + (rid != 0) + nargs);
	kv_cstr(&o->pk, "op", op);
	if (rid)
		kv_uint(&o->pk, "rid", rid);
}

void proto_enc_hello(proto_out *o, uint64_t rid, const char *token,
		     const char *const *chs, const uint64_t *seqs,
		     unsigned nresume)
{
	unsigned i;

	proto_enc_req(o, "hello", rid, 1 + (nresume > 0));
	kv_cstr(&o->pk, "token", token);
	if (nresume == 0)
		return;
	proto_pk_cstr(&o->pk, "resume");
	msgpack_pack_map(&o->pk, nresume);
	for (i = 0; i < nresume; i++) {
		proto_pk_cstr(&o->pk, chs[i]);
		msgpack_pack_uint64(&o->pk, seqs[i]);
	}
}

void proto_enc_send(proto_out *o, uint64_t rid, const char *ch,
		    const char *body, size_t body_len, const char *cmid,
		    uint64_t thread, const char *const *mentions,
		    unsigned nmentions)
{
	unsigned i;

	proto_enc_req(o, "send", rid, 3 + (thread != 0) + (nmentions > 0));
	kv_cstr(&o->pk, "ch", ch);
	proto_pk_cstr(&o->pk, "body");
	proto_pk_str(&o->pk, body, body_len);
	kv_cstr(&o->pk, "cmid", cmid);
	if (thread)
		kv_uint(&o->pk, "thread", thread);
	if (nmentions) {
		proto_pk_cstr(&o->pk, "mentions");
		msgpack_pack_array(&o->pk, nmentions);
		for (i = 0; i < nmentions; i++)
			proto_pk_cstr(&o->pk, mentions[i]);
	}
}
