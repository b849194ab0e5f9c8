/*
 * reply: one typed encoder per answer and per server frame of PROTOCOL.md.
 *
 * The sessions, channel, presence and search code hand these the data of an
 * answer; the encoder writes the whole map (appending to o), counting its
 * optional fields itself, so no caller counts pairs. Key order is the
 * server's as it always was, so the bytes on the wire stay the same.
 * Strings given as const char * are NUL-terminated. Never fails (see
 * frames.c: out of memory aborts).
 *
 * The frames of proto.h stay where they are: proto_enc_res_err,
 * proto_enc_err, proto_enc_member, proto_enc_gap, proto_enc_goaway,
 * proto_enc_read, proto_enc_typing, proto_enc_presence, proto_enc_event,
 * proto_enc_msg.
 */
#ifndef PARLEY_PROTO_REPLY_H
#define PARLEY_PROTO_REPLY_H

#include "proto/req.h"

/* ---- errors ------------------------------------------------------------- */

/* A failed request: {"t":"res",..,"ok":false,..} when it had a rid, else
 * {"t":"err",..,"op":op}. op may be NULL (no "op": the request named none);
 * retry_ms 0 = absent. */
void proto_enc_fail(proto_out *o, bool has_rid, uint64_t rid, const char *op,
		    size_t op_len, const char *code, const char *msg,
		    uint64_t retry_ms);
/* The same for a decoded request: its rid, and its op (or the unknown op
 * it named) as fire-and-forget errors name it. */
void proto_enc_req_fail(proto_out *o, const struct proto_req *r,
			const char *code, const char *msg, uint64_t retry_ms);

/* ---- answers ------------------------------------------------------------ */

/* {"t":"res","rid","ok":true}: hb, ch.leave, ch.invite, read, typing,
 * presence.set (and ch.role, ch.kick, delivered, push.*, notify.set) */
void proto_enc_ok(proto_out *o, uint64_t rid);

/* send: {seq, ts[, dup:true]} */
void proto_enc_send_ok(proto_out *o, uint64_t rid, uint64_t seq, uint64_t ts,
		       bool dup);
/* edit, delete, react: {seq} */
void proto_enc_seq_ok(proto_out *o, uint64_t rid, uint64_t seq);
/* react: {seq}, or {noop:true} when seq is 0 */
void proto_enc_react_ok(proto_out *o, uint64_t rid, uint64_t seq);

/* A channel as ch.create, dm.open and ch.join answer it: {id, name, kind} */
typedef struct proto_chref {
	const char *id, *name;
	uint8_t kind; /* enum proto_kind */
} proto_chref;

/* ch.create, dm.open: {ch:{id,name,kind}} */
void proto_enc_chan_ok(proto_out *o, uint64_t rid, const proto_chref *ch);
/* ch.join: {ch:{id,name,kind}, last_seq} */
void proto_enc_join_ok(proto_out *o, uint64_t rid, const proto_chref *ch,
		       uint64_t last_seq);

/* A channel in hello's and ch.list's channels. */
typedef struct proto_chinfo {
	const char *id, *name;
	uint8_t kind;
	uint64_t last_seq, read_seq, unread, mentions;
	bool has_member; /* ch.list: "member" is there */
	bool member;
} proto_chinfo;

/* {id, name, kind, last_seq, read_seq, unread, mentions[, member]} */
void proto_enc_chinfo(proto_out *o, const proto_chinfo *c);
/* ch.list: {channels:[chinfo...]} */
void proto_enc_ch_list_ok(proto_out *o, uint64_t rid, const proto_chinfo *v,
			  uint32_t n);

/* hello's limits map, in this order */
typedef struct proto_hello_limits {
	uint32_t frame, body, name, members, dm, devices, send_per_s,
		send_burst;
	uint64_t outbuf, outbuf_max;
	uint32_t outbuf_stall_ms;
} proto_hello_limits;

/* hello: {user, ws[, name], hb_ms, limits, channels:[chinfo...]}; name
 * NULL = absent (the display name, next round) */
void proto_enc_hello_ok(proto_out *o, uint64_t rid, const char *user,
			const char *ws, const char *name, uint32_t hb_ms,
			const proto_hello_limits *lim, const proto_chinfo *v,
			uint32_t n);

/* ch.members: {members:[id...], more}. ids[i * stride] is the i-th id
 * (an array of char[ID_CAP]: stride ID_CAP). */
void proto_enc_members_ok(proto_out *o, uint64_t rid, const char *ids,
			  size_t stride, uint32_t n, bool more);

/* history: {msgs:[...], more}; msgs are stored messages as encoded
 * (proto_enc_msg). newest_first: msgs[] came from a backward scan and go
 * out reversed, so that the answer is ascending. */
void proto_enc_history_ok(proto_out *o, uint64_t rid, const proto_raw *msgs,
			  uint32_t n, bool newest_first, bool more);
/* events: {evs:[...], more}; evs are stored events as encoded */
void proto_enc_events_ok(proto_out *o, uint64_t rid, const proto_raw *evs,
			 uint32_t n, bool more);

/* One version of a message's text, {body, ts}: stored by edit, listed by
 * edits. */
void proto_enc_version(proto_out *o, proto_str body, uint64_t ts);
/* edits: {versions:[{body,ts} of the original, then versions as stored]} */
void proto_enc_edits_ok(proto_out *o, uint64_t rid, proto_str body,
			uint64_t ts, const proto_raw *versions, uint32_t n);

/* presence.watch: {presence:{user:{status, since}...}} */
typedef struct proto_pstate {
	const char *user;
	uint8_t status; /* enum proto_pstatus */
	uint64_t since;
} proto_pstate;
void proto_enc_presence_watch_ok(proto_out *o, uint64_t rid,
				 const proto_pstate *v, uint32_t n);

/* search: {hits:[{ch, seq, from, ts, body[, files]}...][, partial:true]}.
 * The fields are storage/search.h's search_hit, in its order; files is a
 * pre-encoded msgpack array (proto_enc_files), or NULL. */
typedef struct proto_hit {
	const char *ch;
	uint64_t seq;
	const char *from;
	uint64_t ts;
	const char *body;
	size_t body_len;
	const void *files;
	size_t files_len;
} proto_hit;
void proto_enc_search_ok(proto_out *o, uint64_t rid, const proto_hit *hits,
			 uint32_t n, bool partial);

/* ---- answers and frames of the ops not carried out yet ------------------ */

typedef struct proto_user {
	const char *id, *name;
	uint8_t status;     /* enum proto_pstatus */
	uint64_t last_seen; /* users.get only */
} proto_user;
/* users.search: {users:[{id, name, status}...]} */
void proto_enc_users_search_ok(proto_out *o, uint64_t rid,
			       const proto_user *v, uint32_t n);
/* users.get: {users:[{id, name, status, last_seen}...]} */
void proto_enc_users_get_ok(proto_out *o, uint64_t rid, const proto_user *v,
			    uint32_t n);

typedef struct proto_chfull {
	const char *id, *name, *topic;
	uint8_t kind;    /* enum proto_kind */
	bool archived;
	uint8_t post;    /* enum proto_post */
	const char *const *owners;
	uint32_t nowners;
	uint64_t members, last_seq;
} proto_chfull;
/* ch.info, ch.set: {ch:{id, name, kind, topic, archived, post, owners,
 * members, last_seq}} */
void proto_enc_ch_info_ok(proto_out *o, uint64_t rid, const proto_chfull *c);
/* {"t":"chan","ch":id, the fields ch.set changed} */
void proto_enc_chan(proto_out *o, const char *ch,
		    const struct proto_a_ch_set *set);

typedef struct proto_receipt {
	const char *user;
	uint64_t delivered, read;
} proto_receipt;
/* receipts: {receipts:{user:{delivered, read}...}} */
void proto_enc_receipts_ok(proto_out *o, uint64_t rid,
			   const proto_receipt *v, uint32_t n);
/* {"t":"receipt","ch","user","read":seq} or (read false) "delivered" */
void proto_enc_receipt(proto_out *o, const char *ch, const char *user,
		       bool read, uint64_t seq);

typedef struct proto_pusher {
	proto_str app, pushkey, platform;
	proto_raw data; /* an encoded map, or p NULL: absent */
	uint64_t ts;    /* registered, unix ms */
} proto_pusher;
/* push.list: {pushers:[{app, pushkey, platform[, data], ts}...]} */
void proto_enc_push_list_ok(proto_out *o, uint64_t rid,
			    const proto_pusher *v, uint32_t n);
/* A user's pushers as stored ('K' record): {"p": [the same maps]}.
 * proto_dec_pushers fills v (at most cap, oldest first) from the doc it
 * decodes into d (the strings point into it; free it after): the count,
 * or -1 when the bytes are not such a record (then d is not to be freed).
 * The stored maps carry data as a bin "db" (its encoded bytes). */
void proto_enc_pushers(proto_out *o, const proto_pusher *v, uint32_t n);
int proto_dec_pushers(proto_doc *d, const void *p, size_t n, proto_pusher *v,
		      uint32_t cap);

typedef struct proto_chlevel {
	proto_str ch;
	uint8_t level; /* enum proto_level */
} proto_chlevel;
/* notify.get: {default, channels:{ch: level...}} */
void proto_enc_notify_get_ok(proto_out *o, uint64_t rid, uint8_t def,
			     const proto_chlevel *v, uint32_t n);
/* A user's notification preferences as stored ('Z' record): {"d": level,
 * "c": {ch: level}}. proto_dec_prefs: the default in *def, the channels
 * in v (at most cap; ch points into d): their count, or -1 (then d is
 * not to be freed). */
void proto_enc_prefs(proto_out *o, uint8_t def, const proto_chlevel *v,
		     uint32_t n);
int proto_dec_prefs(proto_doc *d, const void *p, size_t n, uint8_t *def,
		    proto_chlevel *v, uint32_t cap);

/* ---- files (issue 15) ------------------------------------------------------ */

/* A file as parley keeps it ('F' record) and as events show it (id, name,
 * size, type, w, h, thumb, snippet; the rest is the server's). */
typedef struct proto_file {
	proto_str id, ws, user, name, type, sha256, snippet;
	uint64_t size, ts;
	uint32_t w, h;  /* images (and a PDF's first page): 0 = unknown */
	bool thumb;     /* a preview image exists */
} proto_file;
/* The stored record: every field. proto_dec_file_rec decodes into d (the
 * strings point into it; free it after): 0, or -1 (then d is not to be
 * freed). */
void proto_enc_file_rec(proto_out *o, const proto_file *f);
/* What events and history show: [{id, name, size, type, w?, h?, thumb?,
 * snippet?}...] (w/h when known, thumb only when true, snippet when any):
 * one msgpack array, for proto_event.files and proto_msg.files. */
void proto_enc_files(proto_out *o, const proto_file *v, uint32_t n);
int proto_dec_file_rec(proto_doc *d, const void *p, size_t n, proto_file *f);

/* ---- names, roles and moderation (issue 13) ------------------------------ */

/* A failure that names a channel (ch.create of a taken name: CONFLICT with
 * the public holder): proto_enc_fail plus "ch":{id,name,kind}; ch NULL:
 * exactly proto_enc_fail. */
void proto_enc_fail_ch(proto_out *o, bool has_rid, uint64_t rid,
		       const char *op, const char *code, const char *msg,
		       const proto_chref *ch);

/* ---- stored state ------------------------------------------------------- */

/* A message's reactions map (emoji -> [user...], as proto_msg carries it,
 * encoded) with user's emoji turned on or off, written into out (appending
 * one map). Kinds stay in the order they first appeared, users in the
 * order they reacted; a kind nobody has any more goes. *changed: whether
 * that changed anything (if not, out is untouched). Returns 0, -1 when the
 * change would make more than max_kinds kinds (out untouched), or -2 when
 * m->reactions does not decode as such a map. An empty result is the
 * one-byte empty map (0x80): the caller leaves "reactions" out then. */
int proto_reactions_apply(const proto_msg *m, proto_str user, proto_str emoji,
			  bool on, unsigned max_kinds, proto_out *out,
			  bool *changed);

/* ---- requests ------------------------------------------------------------ */

/* The REST front's requests (rest.c), from the JSON and query values it
 * took; the session decodes them like any frame. Key order: as below. */
void proto_enc_send_req(proto_out *o, uint64_t rid, const char *ch,
			proto_str body, proto_str cmid, bool has_thread,
			uint64_t thread, bool has_mentions,
			const proto_str *mentions, uint32_t nmentions);
struct proto_history_q {
	bool has_before, has_after, has_limit, has_thread;
	uint64_t before, after, limit, thread; /* as given, unchecked */
};
/* {"op":"history","rid","ch"[,before][,after][,limit][,thread]} */
void proto_enc_history_req(proto_out *o, uint64_t rid, const char *ch,
			   const struct proto_history_q *q);

/* Any decoded request, as a client (or the REST front) sends it: "op",
 * "rid" when has_rid, then the arguments in the contract's order, optional
 * ones only when present. proto_req_decode() of the bytes gives r back. */
void proto_req_encode(proto_out *o, const struct proto_req *r);

#endif
