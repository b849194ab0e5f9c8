/*
 * proto: bytes <-> frames of PROTOCOL.md, as pure functions (no I/O).
 *
 * Used by the sessions (decode requests, encode responses and events), by the
 * channel actors (encode an event once for every recipient) and by the C
 * client in client.h (encode requests, decode what the server sends). One
 * implementation of the frames for all three.
 *
 * Decoding never trusts its input: proto_decode() first walks the raw bytes
 * and checks every limit below before msgpack-c allocates anything, so a
 * header that claims 2^32 elements costs nothing. It never crashes, whatever
 * the bytes (tests/proto fuzzes it).
 */
#ifndef PARLEY_PROTO_H
#define PARLEY_PROTO_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_MAX_FRAME  (64 * 1024) /* whole WebSocket message */
#define PROTO_MAX_DEPTH  8           /* nesting of maps and arrays */
#define PROTO_MAX_BODY   (16 * 1024) /* body of a message */
#define PROTO_MAX_ID     64          /* user, workspace, channel ids */
#define PROTO_MAX_NAME   80          /* channel name */
#define PROTO_MAX_CMID   64
#define PROTO_MAX_EMOJI  64
/* A message's stored state (history view) is the server's own, not a
 * client's frame: its reaction lists may grow past PROTO_MAX_FRAME when
 * thousands of members react, and refusing to decode it would freeze the
 * message. Decode stored states with proto_decode_max(.., PROTO_MAX_STATE). */
#define PROTO_MAX_STATE  (256u << 20)

/* ---- decoding ----------------------------------------------------------- */

enum proto_status {
	PROTO_OK = 0,
	PROTO_E_EMPTY,     /* zero bytes */
	PROTO_E_TRUNCATED, /* ends inside a value */
	PROTO_E_TRAILING,  /* bytes after the first complete value */
	PROTO_E_NOT_MAP,   /* top level is not a map */
	PROTO_E_DEPTH,     /* nested deeper than PROTO_MAX_DEPTH */
	PROTO_E_UTF8,      /* a str that is not valid UTF-8 */
	PROTO_E_KEY,       /* a map key that is not a str */
	PROTO_E_TYPE,      /* ext types, or a reserved byte (0xc1) */
	PROTO_E_TOO_LARGE, /* over PROTO_MAX_FRAME, or a count past the end */
	PROTO_E_NOMEM,
};

typedef struct proto_doc {
	msgpack_zone zone;
	msgpack_object root; /* a map when proto_decode() returned PROTO_OK */
} proto_doc;

/* Decode exactly one msgpack map from buf[0..len). On PROTO_OK the caller
 * owns doc and releases it with proto_doc_free(); on failure there is
 * nothing to free. */
int proto_decode(proto_doc *doc, const void *buf, size_t len);
/* The same with another frame limit: clients decode the server's frames,
 * which may be larger than what the server accepts (an `events` page). */
int proto_decode_max(proto_doc *doc, const void *buf, size_t len, size_t max);
void proto_doc_free(proto_doc *doc);
const char *proto_strerror(int status); /* short English text for "msg" */

/* Typed access to a decoded map. Return 0, PROTO_F_MISSING (no such key, or
 * nil), or PROTO_F_TYPE (present with another type). Strings point into the
 * doc and are NOT NUL-terminated. */
#define PROTO_F_MISSING (-1)
#define PROTO_F_TYPE    (-2)
const msgpack_object *proto_get(const msgpack_object *map, const char *key);
int proto_get_str(const msgpack_object *map, const char *key, const char **s,
		  uint32_t *n);
int proto_get_uint(const msgpack_object *map, const char *key, uint64_t *v);
int proto_get_bool(const msgpack_object *map, const char *key, bool *v);
int proto_get_array(const msgpack_object *map, const char *key,
		    const msgpack_object_array **a);
int proto_get_map(const msgpack_object *map, const char *key,
		  const msgpack_object_map **m);

bool proto_utf8_valid(const void *s, size_t n);
/* 1-64 bytes of [A-Za-z0-9._-] */
bool proto_id_valid(const char *s, size_t n);
/* Copy a str object into dst[cap] NUL-terminated; false if not a str or too
 * long. */
bool proto_str_copy(const msgpack_object *o, char *dst, size_t cap);

/* ---- encoding ----------------------------------------------------------- */

/* A growable output buffer with a msgpack packer writing into it. headroom
 * bytes are reserved before data[0] (the transport puts the WebSocket header
 * there). */
typedef struct proto_out {
	uint8_t *base;  /* malloc'd: headroom + cap */
	uint8_t *data;  /* base + headroom */
	size_t len, cap, headroom;
	msgpack_packer pk;
} proto_out;

void proto_out_init(proto_out *o, size_t headroom, size_t cap);
void proto_out_reset(proto_out *o); /* len = 0, keeps memory */
void proto_out_free(proto_out *o);

void proto_pk_str(msgpack_packer *pk, const char *s, size_t n);
void proto_pk_cstr(msgpack_packer *pk, const char *s); /* NUL-terminated */
/* Append bytes that already are one encoded msgpack value. */
void proto_pk_raw(msgpack_packer *pk, const void *v, size_t n);

/* Server frames. Each writes exactly one complete map into o (appending). */

/* {"t":"res","rid":rid,"ok":true, ...}: writes the map header for 3+nextra
 * pairs and the three fixed pairs; the caller then packs nextra pairs. */
void proto_enc_res_ok(proto_out *o, uint64_t rid, unsigned nextra);
/* {"t":"res","rid":rid,"ok":false,"code":..,"msg":..[,"retry_ms":..]}
 * retry_ms 0 = absent. */
void proto_enc_res_err(proto_out *o, uint64_t rid, const char *code,
		       const char *msg, uint64_t retry_ms);
/* {"t":"err","code":..,"msg":..[,"op":..][,"retry_ms":..]}; op may be NULL */
void proto_enc_err(proto_out *o, const char *code, const char *msg,
		   const char *op, size_t op_len, uint64_t retry_ms);
void proto_enc_member(proto_out *o, const char *ch, const char *user,
		      const char *action);
void proto_enc_gap(proto_out *o, const char *ch, uint64_t after,
		   uint64_t last_seq);
void proto_enc_goaway(proto_out *o, uint64_t retry_ms);
void proto_enc_read(proto_out *o, const char *ch, uint64_t seq);
void proto_enc_typing(proto_out *o, const char *ch, const char *user);
void proto_enc_presence(proto_out *o, const char *user, const char *status,
			uint64_t since);

/* A channel event, as sent ({"t":"ev",...}) and as stored. Fields that do not
 * apply to kind k are 0/NULL and are not encoded. */
typedef struct proto_str {
	const char *s;
	uint32_t n;
} proto_str;

typedef struct proto_event {
	proto_str ch;
	uint64_t seq;
	proto_str k;       /* "msg", "edit", "delete", "react" */
	uint64_t ts;
	proto_str from;
	proto_str body;    /* msg, edit */
	proto_str cmid;    /* msg */
	uint64_t thread;   /* msg: root seq, 0 = top-level */
	uint64_t target;   /* edit, delete, react */
	proto_str emoji;   /* react */
	bool on;           /* react */
	const proto_str *mentions; /* msg */
	unsigned nmentions;
	const void *files; /* msg: a pre-encoded msgpack array (proto_enc_files) */
	size_t files_len;
} proto_event;

void proto_enc_event(proto_out *o, const proto_event *ev);
/* Parse an event map (strings point into the doc; mentions are written into
 * the caller's array of cap entries, the rest ignored). 0 or -1. */
int proto_dec_event(const msgpack_object *map, proto_event *ev,
		    proto_str *mentions, unsigned cap);

/* A message as the history view shows it (the stored 'm'/'r' state). */
typedef struct proto_msg {
	uint64_t seq;
	proto_str from;
	uint64_t ts;
	proto_str body;
	proto_str cmid;
	uint64_t thread;      /* 0 = top-level */
	uint64_t replies;     /* thread root: reply count, 0 = not encoded */
	uint64_t last_reply;  /* thread root: seq of newest reply */
	uint64_t edited;      /* ts of latest edit, 0 = never */
	bool deleted;
	const proto_str *mentions;
	unsigned nmentions;
	const void *reactions; /* pre-encoded msgpack map, or NULL */
	size_t reactions_len;
	const void *files;     /* pre-encoded msgpack array, or NULL */
	size_t files_len;
} proto_msg;

void proto_enc_msg(proto_out *o, const proto_msg *m);
int proto_dec_msg(const msgpack_object *map, proto_msg *m, proto_str *mentions,
		  unsigned cap);

/* Client requests: {"op":op,"rid":rid, ...}. rid 0 = no rid
 * (fire-and-forget). Writes the header for 1 (+1 with rid) + nargs pairs;
 * the caller packs nargs pairs. */
void proto_enc_req(proto_out *o, const char *op, uint64_t rid, unsigned nargs);
/* hello with optional resume: nresume pairs (chs[i], seqs[i]) */
void proto_enc_hello(proto_out *o, uint64_t rid, const char *token,
		     const char *const *chs, const uint64_t *seqs,
		     unsigned nresume);
void proto_enc_send(proto_out *o, uint64_t rid, const char *ch,
		    const char *body, size_t body_len, const char *cmid,
		    uint64_t thread, const char *const *mentions,
		    unsigned nmentions);

/* ---- internal: shared by codec.c and frames.c --------------------------- */

/* Bytes taken by the one msgpack value at p, which must lie inside a frame
 * that proto_decode() accepted (proto_dec_msg() uses it to hand on the
 * reactions map as encoded bytes); 0 if it is not valid within max. */
size_t proto__value_len(const void *p, size_t max);

#endif
