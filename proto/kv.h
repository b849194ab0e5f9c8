/*
 * kv: one key and its value, packed; shared by the encoders of frames.c and
 * reply.c (internal to proto/). Keys are spelled only in those two files.
 */
#ifndef PARLEY_PROTO_KV_H
#define PARLEY_PROTO_KV_H

#include "proto/proto.h"

static inline void kv_cstr(msgpack_packer *pk, const char *k, const char *v)
{
	proto_pk_cstr(pk, k);
	proto_pk_cstr(pk, v);
}

static inline void kv_pstr(msgpack_packer *pk, const char *k, proto_str v)
{
	proto_pk_cstr(pk, k);
	proto_pk_str(pk, v.s, v.n);
}

static inline void kv_uint(msgpack_packer *pk, const char *k, uint64_t v)
{
	proto_pk_cstr(pk, k);
	msgpack_pack_uint64(pk, v);
}

static inline void kv_bool(msgpack_packer *pk, const char *k, bool v)
{
	proto_pk_cstr(pk, k);
	if (v)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
}

static inline void kv_mentions(msgpack_packer *pk, const proto_str *m, unsigned n)
{
	unsigned i;

	proto_pk_cstr(pk, "mentions");
	msgpack_pack_array(pk, n);
	for (i = 0; i < n; i++)
		proto_pk_str(pk, m[i].s, m[i].n);
}

#endif
