/*
 * hash: FNV-1a (64 bits), the one hash function of the tree. Header-only:
 * storage/ (which column family holds a channel's history), actors/ (which
 * shard owns a channel or a user; DM ids of older servers), the string maps
 * and the search cache all use it.
 *
 * FORMAT: storage keeps every channel's history in column family
 * rt_fnv1a_str(RT_FNV_OFFSET, channel id) % ranges, and servers before
 * keyed DM ids named a DM by this hash of its members. Both are on disk:
 * these functions must never change. tests/runtime/test_hash.c pins them
 * to the published FNV-1a vectors and to fixed channel ranges.
 */
#ifndef PARLEY_HASH_H
#define PARLEY_HASH_H

#include <stddef.h>
#include <stdint.h>

#define RT_FNV_OFFSET 0xcbf29ce484222325ull
#define RT_FNV_PRIME  0x100000001b3ull

/* Continue hash h over n bytes. */
static inline uint64_t rt_fnv1a_step(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * RT_FNV_PRIME;
	return h;
}

/* Continue hash h over a NUL-terminated string (without its NUL). */
static inline uint64_t rt_fnv1a_str(uint64_t h, const char *s)
{
	for (const uint8_t *b = (const uint8_t *)s; *b; b++)
		h = (h ^ *b) * RT_FNV_PRIME;
	return h;
}

/* FNV-1a of n bytes. */
static inline uint64_t rt_fnv1a(const void *p, size_t n)
{
	return rt_fnv1a_step(RT_FNV_OFFSET, p, n);
}

#endif
