/*
 * req: requests decoded once (see req.h).
 *
 * The checks and their order are the server's, moved here from the session
 * (validate_write, arg_ch, arg_users, the reads), presence and search: the
 * first argument in the order below that is wrong decides the answer, and
 * its message is word for word the one clients have always seen (some name
 * a default limit, "1-80 bytes", even when the server runs with another).
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/req.h"

static const char *const code_names[PROTO_C__COUNT] = {
	NULL, "BAD_FRAME", "BAD_REQUEST", "UNAUTHORIZED", "FORBIDDEN",
	"NOT_FOUND", "TOO_LARGE", "RATE_LIMITED", "CONFLICT", "UNAVAILABLE",
	"INTERNAL",
};

const char *proto_code_name(int code)
{
	return code > 0 && code < PROTO_C__COUNT ? code_names[code] : NULL;
}

static const char *const op_names[PROTO_OP__COUNT] = {
	"hello", "hb", "ch.create", "dm.open", "ch.join", "ch.leave",
	"ch.invite", "ch.list", "ch.members", "send", "history", "events",
	"typing", "read", "edit", "edits", "delete", "react", "presence.set",
	"presence.watch", "search", "users.search", "users.get", "ch.info",
	"ch.set", "ch.role", "ch.kick", "delivered", "receipts",
	"push.register", "push.unregister", "push.list", "notify.set",
	"notify.get",
};

const char *proto_op_name(int op)
{
	return op >= 0 && op < PROTO_OP__COUNT ? op_names[op] : NULL;
}

int proto_op_lookup(const char *s, uint32_t n)
{
	for (int i = 0; i < PROTO_OP__COUNT; i++)
		if (strlen(op_names[i]) == n && !memcmp(op_names[i], s, n))
			return i;
	return PROTO_OP_NONE;
}

const char *const proto_pstatus_names[PROTO_PS__COUNT] = {
	"offline", "online", "away", "dnd", "invisible",
};

const char *const proto_kind_names[3] = { "public", "private", "dm" };

static bool is(const char *s, uint32_t n, const char *lit)
{
	return strlen(lit) == n && !memcmp(s, lit, n);
}

int proto_pstatus_parse(const char *s, uint32_t n)
{
	for (int i = PROTO_PS_ONLINE; i <= PROTO_PS_INVISIBLE; i++)
		if (is(s, n, proto_pstatus_names[i]))
			return i;
	return -1;
}

struct proto_limits proto_limits_default(void)
{
	struct proto_limits l = {
		.max_body = PROTO_MAX_BODY, .max_name = PROTO_MAX_NAME,
		.max_dm = 250, .max_mentions = 50, .max_watch = 500,
		.ops = PROTO_OPS_ALL,
	};
	return l;
}

/* ---- argument helpers: 0, or the code with *why set --------------------- */

#define BAD(msg)                                                             \
	do {                                                                 \
		*why = (msg);                                                \
		return PROTO_C_BAD_REQUEST;                                  \
	} while (0)
#define TRY(call)                                                            \
	do {                                                                 \
		int rc_ = (call);                                            \
		if (rc_)                                                     \
			return rc_;                                          \
	} while (0)

static int arg_id(const msgpack_object *m, const char *key, proto_str *v,
		  const char *msg, const char **why)
{
	if (proto_get_str(m, key, &v->s, &v->n) || !proto_id_valid(v->s, v->n))
		BAD(msg);
	return 0;
}

static int arg_ch(const msgpack_object *m, proto_str *ch, const char **why)
{
	return arg_id(m, "ch", ch, "ch must be a channel id", why);
}

/* an optional channel id: absent (or nil) leaves s NULL */
static int opt_ch(const msgpack_object *m, proto_str *ch, const char **why)
{
	int rc = proto_get_str(m, "ch", &ch->s, &ch->n);

	if (rc == PROTO_F_MISSING) {
		ch->s = NULL;
		ch->n = 0;
		return 0;
	}
	if (rc || !proto_id_valid(ch->s, ch->n))
		BAD("ch must be a channel id");
	return 0;
}

/* a required str of lo..hi bytes */
static int arg_len(const msgpack_object *m, const char *key, proto_str *v,
		   uint32_t lo, uint32_t hi, const char *msg, const char **why)
{
	if (proto_get_str(m, key, &v->s, &v->n) || v->n < lo || v->n > hi)
		BAD(msg);
	return 0;
}

static int arg_target(const msgpack_object *m, uint64_t *seq, const char **why)
{
	if (proto_get_uint(m, "target", seq) || *seq == 0)
		BAD("target must be a message seq");
	return 0;
}

static int arg_body(const msgpack_object *m, const struct proto_limits *lim,
		    proto_str *body, const char **why)
{
	if (proto_get_str(m, "body", &body->s, &body->n))
		BAD("body must be a string");
	if (body->n > lim->max_body) {
		*why = "body too large";
		return PROTO_C_TOO_LARGE;
	}
	return 0;
}

/* every element a user id */
static bool all_ids(const msgpack_object_array *a)
{
	for (uint32_t i = 0; i < a->size; i++)
		if (a->ptr[i].type != MSGPACK_OBJECT_STR ||
		    !proto_id_valid(a->ptr[i].via.str.ptr,
				    a->ptr[i].via.str.size))
			return false;
	return true;
}

/* A send's mentions: user ids, "@channel" (every member) and "@here"
 * (the members online). */
bool proto_mention_all(const char *s, size_t n)
{
	return (n == 8 && !memcmp(s, "@channel", 8)) ||
	       (n == 5 && !memcmp(s, "@here", 5));
}

static bool all_mentions(const msgpack_object_array *a)
{
	for (uint32_t i = 0; i < a->size; i++) {
		const msgpack_object *o = &a->ptr[i];

		if (o->type != MSGPACK_OBJECT_STR ||
		    (!proto_id_valid(o->via.str.ptr, o->via.str.size) &&
		     !proto_mention_all(o->via.str.ptr, o->via.str.size)))
			return false;
	}
	return true;
}

/* users: lo..hi user ids */
static int arg_users(const msgpack_object *m, uint32_t lo, uint32_t hi,
		     proto_strs *users, const char **why)
{
	const msgpack_object_array *a;

	if (proto_get_array(m, "users", &a) || a->size < lo || a->size > hi ||
	    !all_ids(a))
		BAD("users must be a list of user ids");
	users->v = a->ptr;
	users->n = a->size;
	return 0;
}

/* users: at most hi user ids, a separate message for too many */
static int arg_users_max(const msgpack_object *m, uint32_t hi,
			 const char *too_many, proto_strs *users,
			 const char **why)
{
	const msgpack_object_array *a;

	if (proto_get_array(m, "users", &a) || a->size > hi)
		BAD(too_many);
	if (!all_ids(a))
		BAD("users must be a list of user ids");
	users->v = a->ptr;
	users->n = a->size;
	return 0;
}

/* an optional limit: def if absent, else 1..max */
static int opt_limit(const msgpack_object *m, uint32_t def, uint32_t max,
		     const char *msg, uint32_t *out, const char **why)
{
	uint64_t v;
	int rc = proto_get_uint(m, "limit", &v);

	if (rc == PROTO_F_MISSING) {
		*out = def;
		return 0;
	}
	if (rc || v < 1 || v > max)
		BAD(msg);
	*out = (uint32_t)v;
	return 0;
}

/* one of names[0..n): its index */
static int arg_enum(const msgpack_object *m, const char *key,
		    const char *const *names, unsigned n, uint8_t *out,
		    const char *msg, const char **why)
{
	const char *s;
	uint32_t len;

	if (proto_get_str(m, key, &s, &len) == 0)
		for (unsigned i = 0; i < n; i++)
			if (is(s, len, names[i])) {
				*out = (uint8_t)i;
				return 0;
			}
	BAD(msg);
}

static const char *const post_names[] = { "all", "owners" };
static const char *const role_names[] = { "member", "owner" };
static const char *const level_names[] = { "all", "mentions", "none" };

/* ---- per op ------------------------------------------------------------- */

static int dec_hello(const msgpack_object *m, struct proto_a_hello *a,
		     const char **why)
{
	const msgpack_object_map *res = NULL;
	int rc = proto_get_map(m, "resume", &res);

	if (rc == PROTO_F_TYPE || (res && res->size > PROTO_MAX_RESUME))
		BAD(PROTO_MSG_RESUME);
	if (proto_get_str(m, "token", &a->token.s, &a->token.n)) {
		a->token.s = NULL;
		a->token.n = 0;
	}
	if (res) {
		a->resume.v = res->ptr;
		a->resume.n = res->size;
		for (uint32_t i = 0; i < res->size; i++) {
			const msgpack_object *k = &res->ptr[i].key,
					     *v = &res->ptr[i].val;

			if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
			    !proto_id_valid(k->via.str.ptr, k->via.str.size))
				a->resume_bad = true;
		}
	}
	return 0;
}

static bool present(const msgpack_object *m, const char *key);

static int dec_create(const msgpack_object *m, const struct proto_limits *lim,
		      struct proto_a_ch_create *a, const char **why)
{
	TRY(arg_len(m, "name", &a->name, 1, lim->max_name,
		    "name must be 1-80 bytes", why));
	TRY(arg_enum(m, "kind", proto_kind_names, 2, &a->kind,
		     "kind must be public or private", why));
	/* optional; when given, as ch.set takes it (not silently dropped) */
	if (present(m, "topic"))
		TRY(arg_len(m, "topic", &a->topic, 0, PROTO_MAX_TOPIC,
			    "topic must be at most 250 bytes", why));
	return 0;
}

static int dec_send(const msgpack_object *m, const struct proto_limits *lim,
		    struct proto_a_send *a, const char **why)
{
	const msgpack_object_array *men;
	int rc;

	TRY(arg_ch(m, &a->ch, why));
	TRY(arg_body(m, lim, &a->body, why));
	TRY(arg_len(m, "cmid", &a->cmid, 1, PROTO_MAX_CMID,
		    "cmid must be 1-64 bytes", why));
	rc = proto_get_uint(m, "thread", &a->thread);
	if (rc == PROTO_F_TYPE || (rc == 0 && a->thread == 0))
		BAD("thread must be a seq");
	if (rc)
		a->thread = 0;
	rc = proto_get_array(m, "mentions", &men);
	if (rc == PROTO_F_TYPE ||
	    (rc == 0 && (men->size > lim->max_mentions || !all_mentions(men))))
		BAD("mentions must be a list of user ids, \"@channel\" or \"@here\"");
	if (rc == 0) {
		a->mentions.v = men->ptr;
		a->mentions.n = men->size;
	}
	rc = proto_get_array(m, "files", &men);
	if (rc == PROTO_F_TYPE ||
	    (rc == 0 && (men->size < 1 || men->size > PROTO_MAX_FILES ||
			 !all_ids(men))))
		BAD("files must be a list of 1-10 file ids");
	if (rc == 0) {
		a->files.v = men->ptr;
		a->files.n = men->size;
	}
	return 0;
}

static int dec_members(const msgpack_object *m, struct proto_a_ch_members *a,
		       const char **why)
{
	int rc;

	TRY(arg_ch(m, &a->ch, why));
	TRY(opt_limit(m, 1000, 1000, "limit must be 1-1000", &a->limit, why));
	rc = proto_get_str(m, "after", &a->after.s, &a->after.n);
	if (rc == PROTO_F_TYPE ||
	    (rc == 0 && a->after.n && !proto_id_valid(a->after.s, a->after.n)))
		BAD("after must be a user id");
	if (rc) {
		a->after.s = NULL;
		a->after.n = 0;
	}
	return 0;
}

static int dec_history(const msgpack_object *m, struct proto_a_history *a,
		       const char **why)
{
	int rb, ra, rt;

	TRY(arg_ch(m, &a->ch, why));
	TRY(opt_limit(m, 50, 200, "limit must be 1-200", &a->limit, why));
	rb = proto_get_uint(m, "before", &a->before);
	ra = proto_get_uint(m, "after", &a->after);
	rt = proto_get_uint(m, "thread", &a->thread);
	if (rb == PROTO_F_TYPE || ra == PROTO_F_TYPE || rt == PROTO_F_TYPE ||
	    (rb == 0 && ra == 0) || (rt == 0 && a->thread == 0))
		BAD("before/after/thread must be seqs, not both before and after");
	a->has_before = rb == 0;
	a->has_after = ra == 0;
	if (rb)
		a->before = 0;
	if (ra)
		a->after = 0;
	if (rt)
		a->thread = 0;
	return 0;
}

static int dec_events(const msgpack_object *m, struct proto_a_events *a,
		      const char **why)
{
	TRY(arg_ch(m, &a->ch, why));
	TRY(opt_limit(m, 100, 1000, "limit must be 1-1000", &a->limit, why));
	if (proto_get_uint(m, "after", &a->after))
		BAD("after must be a seq");
	return 0;
}

static int dec_react(const msgpack_object *m, struct proto_a_react *a,
		     const char **why)
{
	TRY(arg_ch(m, &a->ch, why));
	TRY(arg_target(m, &a->target, why));
	TRY(arg_len(m, "emoji", &a->emoji, 1, PROTO_MAX_EMOJI,
		    "emoji must be 1-64 bytes", why));
	if (proto_get_bool(m, "on", &a->on))
		BAD("on must be a boolean");
	return 0;
}

static int dec_seq(const msgpack_object *m, struct proto_a_seq *a,
		   const char **why)
{
	TRY(arg_ch(m, &a->ch, why));
	if (proto_get_uint(m, "seq", &a->seq))
		BAD("seq must be an unsigned integer");
	return 0;
}

static int dec_search(const msgpack_object *m, struct proto_a_search *a,
		      const char **why)
{
	if (proto_get_str(m, "q", &a->q.s, &a->q.n) || a->q.n == 0)
		BAD("q must be a non-empty string");
	if (a->q.n > PROTO_MAX_Q)
		BAD("q is too long (at most 1024 bytes)");
	TRY(opt_limit(m, 20, 100, "limit must be 1-100", &a->limit, why));
	return opt_ch(m, &a->ch, why);
}

/* present and not nil */
static bool present(const msgpack_object *m, const char *key)
{
	const msgpack_object *v = proto_get(m, key);

	return v && v->type != MSGPACK_OBJECT_NIL;
}

static int dec_ch_set(const msgpack_object *m, const struct proto_limits *lim,
		      struct proto_a_ch_set *a, const char **why)
{
	int rc;

	TRY(arg_ch(m, &a->ch, why));
	if (present(m, "name")) {
		TRY(arg_len(m, "name", &a->name, 1, lim->max_name,
			    "name must be 1-80 bytes", why));
		a->has_name = true;
	}
	if (present(m, "topic")) {
		TRY(arg_len(m, "topic", &a->topic, 0, PROTO_MAX_TOPIC,
			    "topic must be at most 250 bytes", why));
		a->has_topic = true;
	}
	rc = proto_get_bool(m, "archived", &a->archived);
	if (rc == PROTO_F_TYPE)
		BAD("archived must be a boolean");
	a->has_archived = rc == 0;
	if (present(m, "post")) {
		TRY(arg_enum(m, "post", post_names, 2, &a->post,
			     "post must be all or owners", why));
		a->has_post = true;
	}
	if (!a->has_name && !a->has_topic && !a->has_archived && !a->has_post)
		BAD("nothing to set: name, topic, archived or post");
	return 0;
}

static int dec_push(const msgpack_object *m, bool reg, struct proto_a_push *a,
		    const char **why)
{
	TRY(arg_len(m, "app", &a->app, 1, PROTO_MAX_PUSHKEY,
		    "app must be 1-512 bytes", why));
	TRY(arg_len(m, "pushkey", &a->pushkey, 1, PROTO_MAX_PUSHKEY,
		    "pushkey must be 1-512 bytes", why));
	if (!reg)
		return 0;
	TRY(arg_len(m, "platform", &a->platform, 1, PROTO_MAX_PLATFORM,
		    "platform must be 1-64 bytes", why));
	/* data is handed on as the bytes it came as (see proto_dec_msg's
	 * reactions): the value starts right after its key's bytes */
	for (uint32_t i = 0; i < m->via.map.size; i++) {
		const msgpack_object_kv *kv = &m->via.map.ptr[i];
		const uint8_t *p;

		if (kv->key.via.str.size != 4 ||
		    memcmp(kv->key.via.str.ptr, "data", 4))
			continue;
		/* the first "data" counts, as in proto_get() */
		if (kv->val.type == MSGPACK_OBJECT_NIL)
			return 0;
		p = (const uint8_t *)kv->key.via.str.ptr + 4;
		if (kv->val.type != MSGPACK_OBJECT_MAP ||
		    !((*p >= 0x80 && *p <= 0x8f) || *p == 0xde || *p == 0xdf))
			BAD("data must be a map");
		a->data.n = proto__value_len(p, PROTO_MAX_FRAME);
		if (a->data.n == 0)
			BAD("data must be a map");
		if (a->data.n > PROTO_MAX_PUSH_DATA) {
			*why = "data too large (at most 1 KiB)";
			return PROTO_C_TOO_LARGE;
		}
		a->data.p = p;
		return 0;
	}
	return 0;
}

static int dec_args(const msgpack_object *m, const struct proto_limits *lim,
		    struct proto_req *r, const char **why)
{
	switch (r->op) {
	case PROTO_OP_HELLO:
		return dec_hello(m, &r->a.hello, why);
	case PROTO_OP_HB:
	case PROTO_OP_CH_LIST:
	case PROTO_OP_PUSH_LIST:
	case PROTO_OP_NOTIFY_GET:
		return 0;
	case PROTO_OP_CH_CREATE:
		return dec_create(m, lim, &r->a.create, why);
	case PROTO_OP_DM_OPEN:
		return arg_users(m, 1, lim->max_dm ? lim->max_dm - 1 : 0,
				 &r->a.users.users, why);
	case PROTO_OP_CH_JOIN:
	case PROTO_OP_CH_LEAVE:
	case PROTO_OP_TYPING:
	case PROTO_OP_CH_INFO:
	case PROTO_OP_RECEIPTS:
		return arg_ch(m, &r->a.ch.ch, why);
	case PROTO_OP_CH_INVITE:
	case PROTO_OP_CH_KICK:
		TRY(arg_ch(m, &r->a.users.ch, why));
		return arg_users(m, 1, PROTO_MAX_INVITE, &r->a.users.users,
				 why);
	case PROTO_OP_CH_MEMBERS:
		return dec_members(m, &r->a.members, why);
	case PROTO_OP_SEND:
		return dec_send(m, lim, &r->a.send, why);
	case PROTO_OP_HISTORY:
		return dec_history(m, &r->a.history, why);
	case PROTO_OP_EVENTS:
		return dec_events(m, &r->a.events, why);
	case PROTO_OP_READ:
	case PROTO_OP_DELIVERED:
		return dec_seq(m, &r->a.seq, why);
	case PROTO_OP_EDIT:
		TRY(arg_ch(m, &r->a.edit.ch, why));
		TRY(arg_target(m, &r->a.edit.target, why));
		return arg_body(m, lim, &r->a.edit.body, why);
	case PROTO_OP_EDITS:
	case PROTO_OP_DELETE:
		TRY(arg_ch(m, &r->a.target.ch, why));
		return arg_target(m, &r->a.target.target, why);
	case PROTO_OP_REACT:
		return dec_react(m, &r->a.react, why);
	case PROTO_OP_PRESENCE_SET: {
		const char *s;
		uint32_t n;
		int st;

		if (proto_get_str(m, "status", &s, &n) ||
		    (st = proto_pstatus_parse(s, n)) < 0)
			BAD("status must be online, away, dnd or invisible");
		r->a.pset.status = (uint8_t)st;
		return 0;
	}
	case PROTO_OP_PRESENCE_WATCH:
		return arg_users_max(m, lim->max_watch,
				     "users must be a list of at most 500 "
				     "user ids",
				     &r->a.users.users, why);
	case PROTO_OP_SEARCH:
		return dec_search(m, &r->a.search, why);
	case PROTO_OP_USERS_SEARCH:
		TRY(arg_len(m, "q", &r->a.usearch.q, 1, PROTO_MAX_USERS_Q,
			    "q must be 1-64 bytes", why));
		return opt_limit(m, 20, 50, "limit must be 1-50",
				 &r->a.usearch.limit, why);
	case PROTO_OP_USERS_GET:
		return arg_users_max(m, PROTO_MAX_USERS_GET,
				     "users must be a list of at most 500 "
				     "user ids",
				     &r->a.users.users, why);
	case PROTO_OP_CH_SET:
		return dec_ch_set(m, lim, &r->a.chset, why);
	case PROTO_OP_CH_ROLE:
		TRY(arg_ch(m, &r->a.role.ch, why));
		TRY(arg_id(m, "user", &r->a.role.user,
			   "user must be a user id", why));
		return arg_enum(m, "role", role_names, 2, &r->a.role.role,
				"role must be owner or member", why);
	case PROTO_OP_PUSH_REGISTER:
		return dec_push(m, true, &r->a.push, why);
	case PROTO_OP_PUSH_UNREGISTER:
		return dec_push(m, false, &r->a.push, why);
	case PROTO_OP_NOTIFY_SET:
		TRY(arg_enum(m, "level", level_names, 3, &r->a.notify.level,
			     "level must be all, mentions or none", why));
		return opt_ch(m, &r->a.notify.ch, why);
	}
	BAD("unknown op"); /* not reached: op was looked up */
}

int proto_req_decode(const msgpack_object *map, const struct proto_limits *lim,
		     struct proto_req *out, const char **why)
{
	const char *op;
	uint32_t opn;
	int rc;

	memset(out, 0, sizeof(*out));
	out->op = PROTO_OP_NONE;
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		BAD("a request is a map");
	rc = proto_get_uint(map, "rid", &out->rid);
	if (rc == PROTO_F_TYPE) {
		out->rid = 0;
		BAD("rid must be an unsigned integer");
	}
	out->has_rid = rc == 0;
	if (!out->has_rid)
		out->rid = 0;
	if (proto_get_str(map, "op", &op, &opn))
		BAD("op must be a string");
	out->opname.s = op;
	out->opname.n = opn;
	rc = proto_op_lookup(op, opn);
	if (rc == PROTO_OP_NONE || !(lim->ops & PROTO_OP_BIT(rc)))
		BAD("unknown op");
	out->op = rc;
	out->opname.s = op_names[rc];
	return dec_args(map, lim, out, why);
}

/* ---- deep copy ---------------------------------------------------------- */

/* Where each op keeps its strings and lists, so that one loop copies any
 * request. */
enum { F_END, F_STR, F_STRS, F_RESUME, F_RAW };

struct field {
	uint8_t kind;
	uint16_t off; /* in struct proto_req */
};

#define A(m) offsetof(struct proto_req, a.m)
static const struct field f_none[] = { { F_END, 0 } };
static const struct field f_hello[] = {
	{ F_STR, A(hello.token) }, { F_RESUME, A(hello.resume) }, { F_END, 0 }
};
static const struct field f_ch[] = { { F_STR, A(ch.ch) }, { F_END, 0 } };
static const struct field f_create[] = {
	{ F_STR, A(create.name) }, { F_STR, A(create.topic) }, { F_END, 0 }
};
static const struct field f_users[] = {
	{ F_STR, A(users.ch) }, { F_STRS, A(users.users) }, { F_END, 0 }
};
static const struct field f_members[] = {
	{ F_STR, A(members.ch) }, { F_STR, A(members.after) }, { F_END, 0 }
};
static const struct field f_send[] = {
	{ F_STR, A(send.ch) },	  { F_STR, A(send.body) },
	{ F_STR, A(send.cmid) },  { F_STRS, A(send.mentions) },
	{ F_STRS, A(send.files) },
	{ F_END, 0 }
};
static const struct field f_history[] = {
	{ F_STR, A(history.ch) }, { F_END, 0 }
};
static const struct field f_events[] = {
	{ F_STR, A(events.ch) }, { F_END, 0 }
};
static const struct field f_target[] = {
	{ F_STR, A(target.ch) }, { F_END, 0 }
};
static const struct field f_edit[] = {
	{ F_STR, A(edit.ch) }, { F_STR, A(edit.body) }, { F_END, 0 }
};
static const struct field f_react[] = {
	{ F_STR, A(react.ch) }, { F_STR, A(react.emoji) }, { F_END, 0 }
};
static const struct field f_seq[] = { { F_STR, A(seq.ch) }, { F_END, 0 } };
static const struct field f_search[] = {
	{ F_STR, A(search.q) }, { F_STR, A(search.ch) }, { F_END, 0 }
};
static const struct field f_usearch[] = {
	{ F_STR, A(usearch.q) }, { F_END, 0 }
};
static const struct field f_chset[] = {
	{ F_STR, A(chset.ch) }, { F_STR, A(chset.name) },
	{ F_STR, A(chset.topic) }, { F_END, 0 }
};
static const struct field f_role[] = {
	{ F_STR, A(role.ch) }, { F_STR, A(role.user) }, { F_END, 0 }
};
static const struct field f_push[] = {
	{ F_STR, A(push.app) }, { F_STR, A(push.pushkey) },
	{ F_STR, A(push.platform) }, { F_RAW, A(push.data) }, { F_END, 0 }
};
static const struct field f_notify[] = {
	{ F_STR, A(notify.ch) }, { F_END, 0 }
};
#undef A

static const struct field *const fields_of[PROTO_OP__COUNT] = {
	[PROTO_OP_HELLO] = f_hello,
	[PROTO_OP_HB] = f_none,
	[PROTO_OP_CH_CREATE] = f_create,
	[PROTO_OP_DM_OPEN] = f_users,
	[PROTO_OP_CH_JOIN] = f_ch,
	[PROTO_OP_CH_LEAVE] = f_ch,
	[PROTO_OP_CH_INVITE] = f_users,
	[PROTO_OP_CH_LIST] = f_none,
	[PROTO_OP_CH_MEMBERS] = f_members,
	[PROTO_OP_SEND] = f_send,
	[PROTO_OP_HISTORY] = f_history,
	[PROTO_OP_EVENTS] = f_events,
	[PROTO_OP_TYPING] = f_ch,
	[PROTO_OP_READ] = f_seq,
	[PROTO_OP_EDIT] = f_edit,
	[PROTO_OP_EDITS] = f_target,
	[PROTO_OP_DELETE] = f_target,
	[PROTO_OP_REACT] = f_react,
	[PROTO_OP_PRESENCE_SET] = f_none,
	[PROTO_OP_PRESENCE_WATCH] = f_users,
	[PROTO_OP_SEARCH] = f_search,
	[PROTO_OP_USERS_SEARCH] = f_usearch,
	[PROTO_OP_USERS_GET] = f_users,
	[PROTO_OP_CH_INFO] = f_ch,
	[PROTO_OP_CH_SET] = f_chset,
	[PROTO_OP_CH_ROLE] = f_role,
	[PROTO_OP_CH_KICK] = f_users,
	[PROTO_OP_DELIVERED] = f_seq,
	[PROTO_OP_RECEIPTS] = f_ch,
	[PROTO_OP_PUSH_REGISTER] = f_push,
	[PROTO_OP_PUSH_UNREGISTER] = f_push,
	[PROTO_OP_PUSH_LIST] = f_none,
	[PROTO_OP_NOTIFY_SET] = f_notify,
	[PROTO_OP_NOTIFY_GET] = f_none,
};

/* A bump allocator over the tail: objects first (aligned), then bytes.
 * With room == false it only counts. */
struct bump {
	uint8_t *objs, *bytes;
	size_t nobj, nbytes; /* used so far */
	bool room;
};

static const char *put_bytes(struct bump *b, const void *p, size_t n,
			     bool nul)
{
	char *d = b->room ? (char *)b->bytes + b->nbytes : NULL;

	if (d) {
		if (n)
			memcpy(d, p, n);
		if (nul)
			d[n] = 0;
	}
	b->nbytes += n + nul;
	return d;
}

static void copy_str(struct bump *b, proto_str *s)
{
	if (!s->s)
		return;
	s->s = put_bytes(b, s->s, s->n, true);
}

static void *put_objs(struct bump *b, size_t size)
{
	void *d = b->room ? b->objs + b->nobj : NULL;

	b->nobj += (size + 7) & ~(size_t)7;
	return d;
}

static void copy_strobj(struct bump *b, msgpack_object *d,
			const msgpack_object *s)
{
	const char *p;

	if (s->type != MSGPACK_OBJECT_STR) {
		if (d)
			d->type = MSGPACK_OBJECT_NIL;
		return;
	}
	p = put_bytes(b, s->via.str.ptr, s->via.str.size, true);
	if (d) {
		d->type = MSGPACK_OBJECT_STR;
		d->via.str.ptr = p;
		d->via.str.size = s->via.str.size;
	}
}

static void copy_fields(struct bump *b, struct proto_req *r)
{
	const struct field *f;

	copy_str(b, &r->opname);
	if (r->op < 0 || r->op >= PROTO_OP__COUNT)
		return;
	for (f = fields_of[r->op]; f->kind != F_END; f++) {
		void *at = (uint8_t *)r + f->off;

		switch (f->kind) {
		case F_STR:
			copy_str(b, at);
			break;
		case F_STRS: {
			proto_strs *l = at;
			msgpack_object *d =
				put_objs(b, l->n * sizeof(msgpack_object));

			for (uint32_t i = 0; i < l->n; i++)
				copy_strobj(b, d ? &d[i] : NULL, &l->v[i]);
			l->v = d;
			break;
		}
		case F_RESUME: {
			proto_resume *l = at;
			msgpack_object_kv *d =
				put_objs(b, l->n * sizeof(msgpack_object_kv));

			for (uint32_t i = 0; i < l->n; i++) {
				const msgpack_object_kv *s = &l->v[i];

				copy_strobj(b, d ? &d[i].key : NULL, &s->key);
				if (!d)
					continue;
				/* a value is a seq, or nothing that could
				 * point into the doc */
				if (s->val.type ==
				    MSGPACK_OBJECT_POSITIVE_INTEGER)
					d[i].val = s->val;
				else
					d[i].val.type = MSGPACK_OBJECT_NIL;
			}
			l->v = d;
			break;
		}
		case F_RAW: {
			proto_raw *raw = at;

			if (raw->p)
				raw->p = put_bytes(b, raw->p, raw->n, false);
			break;
		}
		}
	}
}

size_t proto_req_copy(const struct proto_req *in, void *tail, size_t cap,
		      struct proto_req *out)
{
	struct bump b = { 0 };
	struct proto_req tmp = *in;
	size_t need;

	copy_fields(&b, &tmp); /* count only */
	need = b.nobj + b.nbytes;
	if (need > cap || !out)
		return need;
	assert(((uintptr_t)tail & 7) == 0);
	b = (struct bump){ .objs = tail, .bytes = (uint8_t *)tail + b.nobj,
			   .room = true };
	*out = *in;
	copy_fields(&b, out);
	return need;
}
