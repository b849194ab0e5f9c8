/*
 * smap: a small open-addressing hash map from byte-string keys to pointers,
 * used by the actors for their shard-local tables (channels, users,
 * subscriptions). Single-threaded: each shard has its own maps. The map does
 * not own keys: a key points into the value it maps to.
 */
#ifndef PARLEY_SMAP_H
#define PARLEY_SMAP_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/hash.h"

struct smap_slot {
	const char *key; /* NULL = empty; TOMB = deleted */
	uint32_t klen;
	uint32_t hash;
	void *val;
};

typedef struct smap {
	struct smap_slot *slots;
	uint32_t cap, n, used; /* used counts tombstones too */
} smap;

#define SMAP_TOMB ((const char *)1)

static inline uint32_t smap_hash(const void *k, size_t n)
{
	uint64_t h = rt_fnv1a(k, n);

	return (uint32_t)(h ^ (h >> 32));
}

static inline void *smap_get(const smap *m, const void *k, size_t n)
{
	if (!m->cap)
		return NULL;
	uint32_t h = smap_hash(k, n), i = h & (m->cap - 1);

	for (;;) {
		struct smap_slot *s = &m->slots[i];

		if (!s->key)
			return NULL;
		if (s->key != SMAP_TOMB && s->hash == h && s->klen == n &&
		    !memcmp(s->key, k, n))
			return s->val;
		i = (i + 1) & (m->cap - 1);
	}
}

static inline void smap_put(smap *m, const char *k, size_t n, void *val);

static inline void smap__grow(smap *m)
{
	struct smap_slot *old = m->slots;
	uint32_t ocap = m->cap;

	m->cap = m->cap ? (m->n * 4 >= m->cap ? m->cap * 2 : m->cap) : 16;
	m->slots = calloc(m->cap, sizeof(*m->slots));
	m->n = m->used = 0;
	for (uint32_t i = 0; i < ocap; i++)
		if (old[i].key && old[i].key != SMAP_TOMB)
			smap_put(m, old[i].key, old[i].klen, old[i].val);
	free(old);
}

/* Insert or replace. */
static inline void smap_put(smap *m, const char *k, size_t n, void *val)
{
	if ((m->used + 1) * 4 >= m->cap * 3)
		smap__grow(m);
	uint32_t h = smap_hash(k, n), i = h & (m->cap - 1);
	struct smap_slot *tomb = NULL;

	for (;;) {
		struct smap_slot *s = &m->slots[i];

		if (!s->key) {
			if (tomb)
				s = tomb;
			else
				m->used++;
			s->key = k;
			s->klen = (uint32_t)n;
			s->hash = h;
			s->val = val;
			m->n++;
			return;
		}
		if (s->key == SMAP_TOMB) {
			if (!tomb)
				tomb = s;
		} else if (s->hash == h && s->klen == n &&
			   !memcmp(s->key, k, n)) {
			s->key = k;
			s->val = val;
			return;
		}
		i = (i + 1) & (m->cap - 1);
	}
}

static inline void *smap_del(smap *m, const void *k, size_t n)
{
	if (!m->cap)
		return NULL;
	uint32_t h = smap_hash(k, n), i = h & (m->cap - 1);

	for (;;) {
		struct smap_slot *s = &m->slots[i];

		if (!s->key)
			return NULL;
		if (s->key != SMAP_TOMB && s->hash == h && s->klen == n &&
		    !memcmp(s->key, k, n)) {
			void *v = s->val;

			s->key = SMAP_TOMB;
			s->val = NULL;
			m->n--;
			return v;
		}
		i = (i + 1) & (m->cap - 1);
	}
}

#define smap_foreach(m, it)                                                   \
	for (struct smap_slot *it = (m)->slots; it && it < (m)->slots + (m)->cap; \
	     it++)                                                             \
		if (it->key && it->key != SMAP_TOMB)

static inline void smap_free(smap *m)
{
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

#endif
