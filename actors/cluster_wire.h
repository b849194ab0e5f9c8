/*
 * cluster_wire: the bytes of the messages between hosts and of the log
 * (cluster_core.c, cluster.c, cluster_log.c, cluster_presence.c):
 * integers little-endian, a str is u16 n + n bytes, a bytes is u32 n + n
 * bytes. A writer grows as needed (abort on no memory, as msg_new); a
 * reader that runs out, or meets a string too long for its buffer, is bad
 * from then on and reads zeros.
 */
#ifndef PARLEY_CLUSTER_WIRE_H
#define PARLEY_CLUSTER_WIRE_H

#include <endian.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct wbuf {
	uint8_t *p;
	size_t n, cap;
};

static inline void w_raw(struct wbuf *w, const void *d, size_t n)
{
	if (w->n + n > w->cap) {
		size_t cap = w->cap ? w->cap : 256;

		while (cap < w->n + n)
			cap *= 2;
		w->p = realloc(w->p, cap);
		if (!w->p)
			abort();
		w->cap = cap;
	}
	if (n)
		memcpy(w->p + w->n, d, n);
	w->n += n;
}

static inline void w_u8(struct wbuf *w, uint8_t v) { w_raw(w, &v, 1); }
static inline void w_u16(struct wbuf *w, uint16_t v) { v = htole16(v); w_raw(w, &v, 2); }
static inline void w_u32(struct wbuf *w, uint32_t v) { v = htole32(v); w_raw(w, &v, 4); }
static inline void w_u64(struct wbuf *w, uint64_t v) { v = htole64(v); w_raw(w, &v, 8); }

static inline void w_strn(struct wbuf *w, const char *s, size_t n)
{
	w_u16(w, (uint16_t)n);
	w_raw(w, s, n);
}

static inline void w_str(struct wbuf *w, const char *s)
{
	w_strn(w, s, strlen(s));
}

static inline void w_bytes(struct wbuf *w, const void *d, size_t n)
{
	w_u32(w, (uint32_t)n);
	w_raw(w, d, n);
}

struct rbuf {
	const uint8_t *p, *end;
	bool bad;
};

static inline const void *r_raw(struct rbuf *r, size_t n)
{
	const void *p = r->p;

	if (r->bad || (size_t)(r->end - r->p) < n) {
		r->bad = true;
		return NULL;
	}
	r->p += n;
	return p;
}

static inline uint8_t r_u8(struct rbuf *r)
{
	const uint8_t *p = r_raw(r, 1);

	return p ? *p : 0;
}

#define CLUSTER_R_INT(bits)                                               \
	static inline uint##bits##_t r_u##bits(struct rbuf *r)             \
	{                                                                  \
		uint##bits##_t v = 0;                                      \
		const void *p = r_raw(r, sizeof(v));                       \
                                                                           \
		if (p)                                                     \
			memcpy(&v, p, sizeof(v));                          \
		return le##bits##toh(v);                                   \
	}
CLUSTER_R_INT(16)
CLUSTER_R_INT(32)
CLUSTER_R_INT(64)
#undef CLUSTER_R_INT

/* a string into out (cap bytes with its NUL); too long is bad */
static inline void r_str(struct rbuf *r, char *out, size_t cap)
{
	uint16_t n = r_u16(r);
	const char *p = r_raw(r, n);

	if (!p || n >= cap) {
		r->bad = true;
		out[0] = 0;
		return;
	}
	memcpy(out, p, n);
	out[n] = 0;
}

static inline const void *r_bytes(struct rbuf *r, size_t *n)
{
	*n = r_u32(r);
	return r_raw(r, *n);
}

#endif
