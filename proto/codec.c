/*
 * codec: bytes -> a decoded frame, and typed access to it.
 *
 * The session calls proto_decode() on every WebSocket message a client sends,
 * the channel actor on every stored event and message it reads back, and the
 * C client (client.c) on every server frame. What it hands on is a proto_doc:
 * a msgpack_object tree in a zone that owns a private copy of the bytes, so
 * the caller may reuse its input buffer at once.
 *
 * msgpack-c trusts its input: a header that claims 2^32 elements makes it
 * allocate for 2^32 elements. So walk() checks the raw bytes first, without
 * allocating, and msgpack_unpack() only ever sees a frame that is known to be
 * one well-formed map within every limit. The walk also totals what the
 * unpack will take from the zone, so a decode is normally a single malloc.
 *
 * Which error a bad frame gets (the first problem in byte order wins):
 *   - 0 bytes: EMPTY; over PROTO_MAX_FRAME: TOO_LARGE, before looking inside.
 *   - the first byte decides the top level: anything but a map header is
 *     NOT_MAP, even 0xc1 or an ext.
 *   - a str/bin length or container count that needs more bytes than any
 *     frame can hold (a map of n pairs needs at least 2n bytes, an array of n
 *     at least n) is TOO_LARGE; one that would fit in a frame but needs more
 *     bytes than are left in this one is TRUNCATED. So cutting a valid frame
 *     short always gives TRUNCATED, and neither case allocates anything.
 *   - a container nested deeper than PROTO_MAX_DEPTH (the top-level map is
 *     depth 1) is DEPTH; a map key that is not a str (bin included) is KEY;
 *     ext types and 0xc1 are TYPE; a str that is not UTF-8 is UTF8.
 *   - bytes after the top-level map: TRAILING.
 */
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

struct walk {
	const uint8_t *p, *end;
	size_t zone; /* bytes msgpack_unpack() will take from the zone */
	size_t max;  /* the frame limit this decode enforces */
};

static uint64_t be(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	while (n--)
		v = v << 8 | *p++;
	return v;
}

/* Read an n-byte big-endian length that follows the type byte. */
static int take_len(struct walk *w, unsigned n, uint64_t *v)
{
	if ((size_t)(w->end - w->p) < n)
		return PROTO_E_TRUNCATED;
	*v = be(w->p, n);
	w->p += n;
	return PROTO_OK;
}

/* need: the fewest bytes the rest of the value can take. */
static int fits(const struct walk *w, uint64_t need)
{
	if (need > w->max)
		return PROTO_E_TOO_LARGE;
	if (need > (uint64_t)(w->end - w->p))
		return PROTO_E_TRUNCATED;
	return PROTO_OK;
}

static int skip(struct walk *w, uint64_t n)
{
	int rc = fits(w, n);

	if (rc == PROTO_OK)
		w->p += n;
	return rc;
}

static int str_body(struct walk *w, uint64_t n)
{
	int rc = fits(w, n);

	if (rc != PROTO_OK)
		return rc;
	if (!proto_utf8_valid(w->p, (size_t)n))
		return PROTO_E_UTF8;
	w->p += n;
	return PROTO_OK;
}

static bool is_str_byte(uint8_t b)
{
	return (b >= 0xa0 && b <= 0xbf) || (b >= 0xd9 && b <= 0xdb);
}

static int walk(struct walk *w, unsigned depth);

static int walk_container(struct walk *w, unsigned depth, uint64_t n,
			  bool map)
{
	uint64_t i;
	int rc;

	if (depth > PROTO_MAX_DEPTH)
		return PROTO_E_DEPTH;
	rc = fits(w, map ? 2 * n : n);
	if (rc != PROTO_OK)
		return rc;
	/* Mirrors msgpack-c's one allocation per container, plus alignment. */
	w->zone += n * (map ? sizeof(msgpack_object_kv) :
			sizeof(msgpack_object)) + sizeof(void *);
	for (i = 0; i < n; i++) {
		if (map) {
			if (w->p == w->end)
				return PROTO_E_TRUNCATED;
			if (!is_str_byte(*w->p))
				return PROTO_E_KEY;
			rc = walk(w, depth + 1);
			if (rc != PROTO_OK)
				return rc;
		}
		rc = walk(w, depth + 1);
		if (rc != PROTO_OK)
			return rc;
	}
	return PROTO_OK;
}

/* One value at w->p; depth is the depth it has if it is a container.
 * Recursion is bounded by PROTO_MAX_DEPTH. */
static int walk(struct walk *w, unsigned depth)
{
	uint64_t n;
	uint8_t b;
	int rc;

	if (w->p == w->end)
		return PROTO_E_TRUNCATED;
	b = *w->p++;
	if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
		return PROTO_OK;
	if (b <= 0x8f)
		return walk_container(w, depth, b & 0x0f, true);
	if (b <= 0x9f)
		return walk_container(w, depth, b & 0x0f, false);
	if (b <= 0xbf)
		return str_body(w, b & 0x1f);
	switch (b) {
	case 0xc4: case 0xc5: case 0xc6: /* bin 8/16/32 */
		rc = take_len(w, 1u << (b - 0xc4), &n);
		return rc != PROTO_OK ? rc : skip(w, n);
	case 0xca:
		return skip(w, 4);
	case 0xcb:
		return skip(w, 8);
	case 0xcc: case 0xcd: case 0xce: case 0xcf: /* uint 8..64 */
		return skip(w, 1u << (b - 0xcc));
	case 0xd0: case 0xd1: case 0xd2: case 0xd3: /* int 8..64 */
		return skip(w, 1u << (b - 0xd0));
	case 0xd9: case 0xda: case 0xdb: /* str 8/16/32 */
		rc = take_len(w, 1u << (b - 0xd9), &n);
		return rc != PROTO_OK ? rc : str_body(w, n);
	case 0xdc: case 0xdd: /* array 16/32 */
		rc = take_len(w, 2u << (b - 0xdc), &n);
		return rc != PROTO_OK ? rc : walk_container(w, depth, n, false);
	case 0xde: case 0xdf: /* map 16/32 */
		rc = take_len(w, 2u << (b - 0xde), &n);
		return rc != PROTO_OK ? rc : walk_container(w, depth, n, true);
	default: /* 0xc1, ext 8/16/32 (0xc7-0xc9), fixext (0xd4-0xd8) */
		return PROTO_E_TYPE;
	}
}

static bool is_map_byte(uint8_t b)
{
	return (b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf;
}

size_t proto__value_len(const void *p, size_t max)
{
	struct walk w = { .p = p, .end = (const uint8_t *)p + max, .max = max };

	if (walk(&w, 1) != PROTO_OK)
		return 0;
	return (size_t)(w.p - (const uint8_t *)p);
}

int proto_decode(proto_doc *doc, const void *buf, size_t len)
{
	return proto_decode_max(doc, buf, len, PROTO_MAX_FRAME);
}

int proto_decode_max(proto_doc *doc, const void *buf, size_t len, size_t max)
{
	struct walk w = { .p = buf, .end = (const uint8_t *)buf + len,
			  .max = max };
	msgpack_unpack_return ur;
	size_t off = 0;
	char *copy;
	int rc;

	memset(doc, 0, sizeof(*doc));
	if (len == 0 || !buf)
		return PROTO_E_EMPTY;
	if (len > max)
		return PROTO_E_TOO_LARGE;
	if (!is_map_byte(*w.p))
		return PROTO_E_NOT_MAP;
	rc = walk(&w, 1);
	if (rc != PROTO_OK)
		return rc;
	if (w.p != w.end)
		return PROTO_E_TRAILING;

	/* The objects' strings point into the bytes they were unpacked from;
	 * unpacking a copy in the zone makes the doc independent of buf. */
	if (!msgpack_zone_init(&doc->zone, len + w.zone + 64))
		goto nomem;
	copy = msgpack_zone_malloc_no_align(&doc->zone, len);
	if (!copy) {
		msgpack_zone_destroy(&doc->zone);
		goto nomem;
	}
	memcpy(copy, buf, len);
	ur = msgpack_unpack(copy, len, &off, &doc->zone, &doc->root);
	if (ur == MSGPACK_UNPACK_SUCCESS &&
	    doc->root.type == MSGPACK_OBJECT_MAP)
		return PROTO_OK;

	/* Only reachable if the walk and msgpack-c disagree. */
	msgpack_zone_destroy(&doc->zone);
	memset(doc, 0, sizeof(*doc));
	switch (ur) {
	case MSGPACK_UNPACK_NOMEM_ERROR:
		return PROTO_E_NOMEM;
	case MSGPACK_UNPACK_CONTINUE:
		return PROTO_E_TRUNCATED;
	case MSGPACK_UNPACK_EXTRA_BYTES:
		return PROTO_E_TRAILING;
	default:
		return PROTO_E_TYPE;
	}
nomem:
	memset(doc, 0, sizeof(*doc));
	return PROTO_E_NOMEM;
}

/* Safe on a doc that failed to decode or was freed already: both are left
 * zeroed, and a zeroed zone has no chunk list. */
void proto_doc_free(proto_doc *doc)
{
	if (doc->zone.chunk_list.head)
		msgpack_zone_destroy(&doc->zone);
	memset(doc, 0, sizeof(*doc));
}

const char *proto_strerror(int status)
{
	switch (status) {
	case PROTO_OK:          return "ok";
	case PROTO_E_EMPTY:     return "empty frame";
	case PROTO_E_TRUNCATED: return "frame ends inside a value";
	case PROTO_E_TRAILING:  return "bytes after the map";
	case PROTO_E_NOT_MAP:   return "frame is not a msgpack map";
	case PROTO_E_DEPTH:     return "nested too deeply";
	case PROTO_E_UTF8:      return "string is not valid UTF-8";
	case PROTO_E_KEY:       return "map key is not a string";
	case PROTO_E_TYPE:      return "ext type or reserved byte";
	case PROTO_E_TOO_LARGE: return "frame or element too large";
	case PROTO_E_NOMEM:     return "out of memory";
	default:                return "unknown error";
	}
}

/* ---- access ------------------------------------------------------------- */

/* Duplicate keys: the first one wins, as everywhere else that reads a map
 * with proto_get(). */
const msgpack_object *proto_get(const msgpack_object *map, const char *key)
{
	size_t klen = strlen(key);
	uint32_t i;

	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;

		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
		    memcmp(k->via.str.ptr, key, klen) == 0)
			return &map->via.map.ptr[i].val;
	}
	return NULL;
}

/* The value under key when it has type t; else why not. */
static int get_typed(const msgpack_object *map, const char *key,
		     msgpack_object_type t, const msgpack_object **o)
{
	*o = proto_get(map, key);
	if (!*o || (*o)->type == MSGPACK_OBJECT_NIL)
		return PROTO_F_MISSING;
	return (*o)->type == t ? 0 : PROTO_F_TYPE;
}

int proto_get_str(const msgpack_object *map, const char *key, const char **s,
		  uint32_t *n)
{
	const msgpack_object *o;
	int rc = get_typed(map, key, MSGPACK_OBJECT_STR, &o);

	if (rc == 0) {
		*s = o->via.str.ptr;
		*n = o->via.str.size;
	}
	return rc;
}

/* Only POSITIVE_INTEGER: msgpack-c files every non-negative integer there,
 * whatever its encoding, so NEGATIVE_INTEGER really is below zero. */
int proto_get_uint(const msgpack_object *map, const char *key, uint64_t *v)
{
	const msgpack_object *o;
	int rc = get_typed(map, key, MSGPACK_OBJECT_POSITIVE_INTEGER, &o);

	if (rc == 0)
		*v = o->via.u64;
	return rc;
}

int proto_get_bool(const msgpack_object *map, const char *key, bool *v)
{
	const msgpack_object *o;
	int rc = get_typed(map, key, MSGPACK_OBJECT_BOOLEAN, &o);

	if (rc == 0)
		*v = o->via.boolean;
	return rc;
}

int proto_get_array(const msgpack_object *map, const char *key,
		    const msgpack_object_array **a)
{
	const msgpack_object *o;
	int rc = get_typed(map, key, MSGPACK_OBJECT_ARRAY, &o);

	if (rc == 0)
		*a = &o->via.array;
	return rc;
}

int proto_get_map(const msgpack_object *map, const char *key,
		  const msgpack_object_map **m)
{
	const msgpack_object *o;
	int rc = get_typed(map, key, MSGPACK_OBJECT_MAP, &o);

	if (rc == 0)
		*m = &o->via.map;
	return rc;
}

/* ---- strings ------------------------------------------------------------ */

/* RFC 3629: no overlong forms, no surrogates (U+D800-DFFF), nothing above
 * U+10FFFF. U+0000 is valid UTF-8 and allowed here; ids exclude it through
 * proto_id_valid(). */
bool proto_utf8_valid(const void *s, size_t n)
{
	const uint8_t *p = s, *end = p + n;

	while (p < end) {
		uint8_t c = *p, lo = 0x80, hi = 0xbf;
		size_t more, i;

		/* Bodies are mostly ASCII: take 8 bytes a step while we can. */
		if (c < 0x80) {
			uint64_t x;

			while ((size_t)(end - p) >= 8) {
				memcpy(&x, p, 8);
				if (x & 0x8080808080808080ull)
					break;
				p += 8;
			}
			while (p < end && *p < 0x80)
				p++;
			continue;
		}
		if (c < 0xc2) {
			return false; /* continuation byte, or overlong C0/C1 */
		} else if (c < 0xe0) {
			more = 1;
		} else if (c < 0xf0) {
			more = 2;
			if (c == 0xe0)
				lo = 0xa0; /* overlong */
			else if (c == 0xed)
				hi = 0x9f; /* surrogates */
		} else if (c < 0xf5) {
			more = 3;
			if (c == 0xf0)
				lo = 0x90; /* overlong */
			else if (c == 0xf4)
				hi = 0x8f; /* above U+10FFFF */
		} else {
			return false;
		}
		if ((size_t)(end - p) <= more)
			return false;
		if (p[1] < lo || p[1] > hi)
			return false;
		for (i = 2; i <= more; i++)
			if ((p[i] & 0xc0) != 0x80)
				return false;
		p += more + 1;
	}
	return true;
}

bool proto_id_valid(const char *s, size_t n)
{
	size_t i;

	if (!s || n < 1 || n > PROTO_MAX_ID)
		return false;
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-'))
			return false;
	}
	return true;
}

bool proto_str_copy(const msgpack_object *o, char *dst, size_t cap)
{
	if (!o || o->type != MSGPACK_OBJECT_STR || !dst ||
	    (size_t)o->via.str.size >= cap)
		return false;
	if (o->via.str.size)
		memcpy(dst, o->via.str.ptr, o->via.str.size);
	dst[o->via.str.size] = '\0';
	return true;
}
