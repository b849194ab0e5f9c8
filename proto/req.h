/*
 * req: a client request, decoded once into a typed struct.
 *
 * The session calls proto_req_decode() on the map proto_decode() accepted:
 * it reads "rid" and "op", then checks every argument of that op exactly as
 * PROTOCOL.md and the server's limits say, and fills the op's argument
 * struct. Code past the session trusts the struct: strings are valid ids or
 * within their limits, lists hold only str elements, and so on. Strings and
 * lists point into the decoded doc; proto_req_copy() deep-copies a request
 * into one flat block (a mailbox message's tail), so that the actors that
 * carry a request out never see a frame.
 *
 * Pure: no I/O, no allocation (tests/proto fuzzes it with the codec).
 */
#ifndef PARLEY_PROTO_REQ_H
#define PARLEY_PROTO_REQ_H

#include "proto/proto.h"

/* ---- error codes of PROTOCOL.md --------------------------------------- */

enum proto_code {
	PROTO_C_OK = 0,
	PROTO_C_BAD_FRAME,
	PROTO_C_BAD_REQUEST,
	PROTO_C_UNAUTHORIZED,
	PROTO_C_FORBIDDEN,
	PROTO_C_NOT_FOUND,
	PROTO_C_TOO_LARGE,
	PROTO_C_RATE_LIMITED,
	PROTO_C_CONFLICT,
	PROTO_C_UNAVAILABLE,
	PROTO_C_INTERNAL,
	PROTO_C__COUNT
};
/* "BAD_REQUEST" etc.; NULL for PROTO_C_OK or out of range */
const char *proto_code_name(int code);

/* ---- operations --------------------------------------------------------- */

/* The order of the first 21 is the actors' enum op (actors.h), so that the
 * switch-over can cast. */
enum proto_op {
	PROTO_OP_NONE = -1, /* no op yet: "rid" or "op" bad, or unknown op */
	PROTO_OP_HELLO = 0,
	PROTO_OP_HB,
	PROTO_OP_CH_CREATE,
	PROTO_OP_DM_OPEN,
	PROTO_OP_CH_JOIN,
	PROTO_OP_CH_LEAVE,
	PROTO_OP_CH_INVITE,
	PROTO_OP_CH_LIST,
	PROTO_OP_CH_MEMBERS,
	PROTO_OP_SEND,
	PROTO_OP_HISTORY,
	PROTO_OP_EVENTS,
	PROTO_OP_TYPING,
	PROTO_OP_READ,
	PROTO_OP_EDIT,
	PROTO_OP_EDITS,
	PROTO_OP_DELETE,
	PROTO_OP_REACT,
	PROTO_OP_PRESENCE_SET,
	PROTO_OP_PRESENCE_WATCH,
	PROTO_OP_SEARCH,
	/* in the contract, not carried out by the server yet */
	PROTO_OP_USERS_SEARCH,
	PROTO_OP_USERS_GET,
	PROTO_OP_CH_INFO,
	PROTO_OP_CH_SET,
	PROTO_OP_CH_ROLE,
	PROTO_OP_CH_KICK,
	PROTO_OP_DELIVERED,
	PROTO_OP_RECEIPTS,
	PROTO_OP_PUSH_REGISTER,
	PROTO_OP_PUSH_UNREGISTER,
	PROTO_OP_PUSH_LIST,
	PROTO_OP_NOTIFY_SET,
	PROTO_OP_NOTIFY_GET,
	PROTO_OP__COUNT
};

#define PROTO_OP_BIT(op) (1ull << (op))
/* the ops the server carries out today: hello .. search, then the newer
 * ones it serves */
#define PROTO_OPS_SERVED ((PROTO_OP_BIT(PROTO_OP_USERS_SEARCH) - 1) \
			  | PROTO_OPS_RECEIPTS | PROTO_OPS_ROLES | PROTO_OPS_PEOPLE \
			  | PROTO_OPS_PUSH)
/* receipts (DMs) */
#define PROTO_OPS_RECEIPTS (PROTO_OP_BIT(PROTO_OP_DELIVERED) | \
			    PROTO_OP_BIT(PROTO_OP_RECEIPTS))
/* names, roles and moderation */
#define PROTO_OPS_ROLES (PROTO_OP_BIT(PROTO_OP_CH_INFO) | \
			 PROTO_OP_BIT(PROTO_OP_CH_SET) | \
			 PROTO_OP_BIT(PROTO_OP_CH_ROLE) | \
			 PROTO_OP_BIT(PROTO_OP_CH_KICK))
/* the directory */
#define PROTO_OPS_PEOPLE (PROTO_OP_BIT(PROTO_OP_USERS_SEARCH) | \
			  PROTO_OP_BIT(PROTO_OP_USERS_GET))
/* notifications: pushers and preferences */
#define PROTO_OPS_PUSH (PROTO_OP_BIT(PROTO_OP_PUSH_REGISTER) | \
			PROTO_OP_BIT(PROTO_OP_PUSH_UNREGISTER) | \
			PROTO_OP_BIT(PROTO_OP_PUSH_LIST) | \
			PROTO_OP_BIT(PROTO_OP_NOTIFY_SET) | \
			PROTO_OP_BIT(PROTO_OP_NOTIFY_GET))
#define PROTO_OPS_ALL    (PROTO_OP_BIT(PROTO_OP__COUNT) - 1)

const char *proto_op_name(int op); /* "ch.create"; NULL if out of range */
/* PROTO_OP_NONE if s[0..n) names no op */
int proto_op_lookup(const char *s, uint32_t n);

/* Statuses, channel kinds and the small enums of the contract, with their
 * wire names. The numbers are the server's (actors.h enum pstatus,
 * store.h enum store_kind). */
enum proto_pstatus {
	PROTO_PS_OFFLINE, PROTO_PS_ONLINE, PROTO_PS_AWAY, PROTO_PS_DND,
	PROTO_PS_INVISIBLE, PROTO_PS__COUNT
};
extern const char *const proto_pstatus_names[PROTO_PS__COUNT];
/* online, away, dnd or invisible (offline is not a choice): -1 if none */
int proto_pstatus_parse(const char *s, uint32_t n);

enum proto_kind { PROTO_KIND_PUBLIC, PROTO_KIND_PRIVATE, PROTO_KIND_DM };
extern const char *const proto_kind_names[3];
enum proto_post { PROTO_POST_ALL, PROTO_POST_OWNERS };
enum proto_role { PROTO_ROLE_MEMBER, PROTO_ROLE_OWNER };
enum proto_level { PROTO_LEVEL_ALL, PROTO_LEVEL_MENTIONS, PROTO_LEVEL_NONE };

/* ---- limits the decoder checks ------------------------------------------ */

/* Fixed by the contract (the configurable ones are in proto_limits). */
#define PROTO_MAX_INVITE     1000 /* users of ch.invite, ch.kick */
#define PROTO_MAX_RESUME     100000
#define PROTO_MAX_Q          1024 /* search q */
#define PROTO_MAX_USERS_Q    64   /* users.search q */
#define PROTO_MAX_USERS_GET  500
#define PROTO_MAX_TOPIC      250
#define PROTO_MAX_FILES      10   /* files of one message */
#define PROTO_MAX_PUSHKEY    512  /* app and pushkey */
#define PROTO_MAX_PLATFORM   64
#define PROTO_MAX_PUSH_DATA  1024 /* encoded bytes of push.register data */

struct proto_limits {
	uint32_t max_body;     /* send, edit: over it is TOO_LARGE */
	uint32_t max_name;     /* ch.create, ch.set */
	uint32_t max_dm;       /* members of a DM, the caller included */
	uint32_t max_mentions; /* send */
	uint32_t max_watch;    /* presence.watch */
	/* PROTO_OP_BIT()s of the ops this server knows; any other op decodes
	 * as "unknown op" (the server sets PROTO_OPS_SERVED until it carries
	 * the newer ones out) */
	uint64_t ops;
};

/* The contract's default limits, every op known. */
struct proto_limits proto_limits_default(void);

/* ---- arguments ---------------------------------------------------------- */

/* A list of strings: every v[i] is a MSGPACK_OBJECT_STR (checked). */
typedef struct proto_strs {
	const msgpack_object *v;
	uint32_t n;
} proto_strs;

static inline proto_str proto_strs_at(const proto_strs *l, uint32_t i)
{
	proto_str s = { l->v[i].via.str.ptr, l->v[i].via.str.size };

	return s;
}

/* hello's resume map: keys are str; a value is a positive integer unless
 * the hello's resume_bad is set. */
typedef struct proto_resume {
	const msgpack_object_kv *v;
	uint32_t n;
} proto_resume;

static inline proto_str proto_resume_ch(const proto_resume *r, uint32_t i)
{
	proto_str s = { r->v[i].key.via.str.ptr, r->v[i].key.via.str.size };

	return s;
}

static inline uint64_t proto_resume_seq(const proto_resume *r, uint32_t i)
{
	return r->v[i].val.via.u64;
}

/* One msgpack value as its encoded bytes. */
typedef struct proto_raw {
	const void *p;
	size_t n;
} proto_raw;

/* An optional string that is absent has s == NULL (present and empty: s
 * non-NULL, n == 0). */

struct proto_a_hello {
	proto_str token; /* absent or not a str: s == NULL (UNAUTHORIZED) */
	proto_resume resume;
	/* resume holds an entry that is not channel id -> seq. Answered
	 * BAD_REQUEST PROTO_MSG_RESUME, but only once the token checked out
	 * (a bad token wins, as the server always did). */
	bool resume_bad;
};
#define PROTO_MSG_RESUME "resume must be a map of channel -> seq"

struct proto_a_ch { /* ch.join, ch.leave, typing, ch.info, receipts */
	proto_str ch;
};

struct proto_a_ch_create {
	proto_str name;
	uint8_t kind;    /* PROTO_KIND_PUBLIC or PROTO_KIND_PRIVATE */
	proto_str topic; /* optional; taken if a str of at most 250 bytes,
			  * never refused (the server ignores it today) */
};

/* dm.open (no ch), ch.invite, ch.kick, presence.watch and users.get (no
 * ch): user ids, in the order sent, duplicates included */
struct proto_a_users {
	proto_str ch;
	proto_strs users;
};

struct proto_a_ch_members {
	proto_str ch;
	proto_str after; /* optional; "" or absent: from the start */
	uint32_t limit;  /* 1-1000, default 1000 */
};

struct proto_a_send {
	proto_str ch, body, cmid;
	uint64_t thread;    /* 0: top-level */
	proto_strs mentions; /* absent: n == 0 */
	proto_strs files;    /* ids of uploaded files; absent: n == 0 */
};

struct proto_a_history {
	proto_str ch;
	uint32_t limit; /* 1-200, default 50 */
	bool has_before, has_after; /* never both */
	uint64_t before, after;
	uint64_t thread; /* 0: top-level messages */
};

struct proto_a_events {
	proto_str ch;
	uint64_t after;
	uint32_t limit; /* 1-1000, default 100 */
};

struct proto_a_target { /* edits, delete */
	proto_str ch;
	uint64_t target; /* > 0 */
};

struct proto_a_edit {
	proto_str ch;
	uint64_t target;
	proto_str body;
};

struct proto_a_react {
	proto_str ch;
	uint64_t target;
	proto_str emoji;
	bool on;
};

struct proto_a_seq { /* read, delivered */
	proto_str ch;
	uint64_t seq;
};

struct proto_a_presence_set {
	uint8_t status; /* enum proto_pstatus, never OFFLINE */
};

struct proto_a_search {
	proto_str q;
	proto_str ch;   /* optional */
	uint32_t limit; /* 1-100, default 20 */
};

struct proto_a_users_search {
	proto_str q;
	uint32_t limit; /* 1-50, default 20 */
};

struct proto_a_ch_set {
	proto_str ch;
	bool has_name, has_topic, has_archived, has_post; /* at least one */
	proto_str name, topic;
	bool archived;
	uint8_t post; /* enum proto_post */
};

struct proto_a_ch_role {
	proto_str ch, user;
	uint8_t role; /* enum proto_role */
};

struct proto_a_push { /* push.register; push.unregister: app, pushkey */
	proto_str app, pushkey;
	proto_str platform; /* register only */
	proto_raw data;     /* register, optional: an encoded map */
};

struct proto_a_notify_set {
	proto_str ch;  /* optional: absent sets the user's default */
	uint8_t level; /* enum proto_level */
};

struct proto_req {
	int op;          /* enum proto_op; PROTO_OP_NONE if not known */
	bool has_rid;
	uint64_t rid;
	/* What fire-and-forget errors name as "op": the op's name, or the
	 * string an unknown op was (s == NULL: "op" was no string). */
	proto_str opname;
	union {
		struct proto_a_hello hello;
		struct proto_a_ch ch;
		struct proto_a_ch_create create;
		struct proto_a_users users;
		struct proto_a_ch_members members;
		struct proto_a_send send;
		struct proto_a_history history;
		struct proto_a_events events;
		struct proto_a_target target;
		struct proto_a_edit edit;
		struct proto_a_react react;
		struct proto_a_seq seq;
		struct proto_a_presence_set pset;
		struct proto_a_search search;
		struct proto_a_users_search usearch;
		struct proto_a_ch_set chset;
		struct proto_a_ch_role role;
		struct proto_a_push push;
		struct proto_a_notify_set notify;
	} a;
};

/* Which member of a holds the arguments of each op:
 *   hello: hello              ch.create: create     dm.open: users
 *   ch.join, ch.leave, typing, ch.info, receipts: ch
 *   ch.invite, ch.kick, presence.watch, users.get: users
 *   ch.members: members       send: send            history: history
 *   events: events            edit: edit            edits, delete: target
 *   react: react              read, delivered: seq  presence.set: pset
 *   search: search            users.search: usearch ch.set: chset
 *   ch.role: role             push.register, push.unregister: push
 *   notify.set: notify        hb, ch.list, push.list, notify.get: none */

/* Decode and check the request in map (a map proto_decode() accepted; the
 * result points into it). Returns PROTO_C_OK, or the code to answer with
 * (PROTO_C_BAD_REQUEST, PROTO_C_TOO_LARGE) and *why, a static string: the
 * answer's "msg", word for word what the server always said.
 *
 * Whatever it returns, out->has_rid, out->rid, out->op and out->opname hold
 * what was read before the failure, so the caller answers
 *   - out->op == PROTO_OP_NONE: at once ("rid must be an unsigned integer"
 *     then has_rid is false; "op must be a string"; "unknown op");
 *   - otherwise after its own checks that come first ("hello first", "only
 *     over a WebSocket", "already authenticated"), with (code, *why).
 * A hello with a missing or bad token returns OK: the token is the
 * caller's to verify. */
/* "@channel" or "@here": a send's mention of every member (online) */
bool proto_mention_all(const char *s, size_t n);

int proto_req_decode(const msgpack_object *map, const struct proto_limits *lim,
		     struct proto_req *out, const char **why);

/* Deep-copy in into out, with every string and list in tail[0..cap):
 * strings NUL-terminated there (n does not count the NUL). tail must be
 * 8-byte aligned. Returns the bytes the copy needs; copies only if that is
 * at most cap (so proto_req_copy(in, NULL, 0, NULL) sizes a copy). out may
 * then outlive the doc in points into. */
size_t proto_req_copy(const struct proto_req *in, void *tail, size_t cap,
		      struct proto_req *out);

#endif
