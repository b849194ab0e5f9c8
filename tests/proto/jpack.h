/*
 * jpack: a JSON-like text -> msgpack, so that the request tables of
 * test_req.c read like the frames they stand for. Test-only and trusting:
 * objects, arrays, "strings" (\" and \\ escapes), integers (negative ones
 * packed as msgpack ints), 1.5-style floats, true, false, null. Keys are
 * packed as str. Whitespace is skipped.
 */
#ifndef PARLEY_TESTS_JPACK_H
#define PARLEY_TESTS_JPACK_H

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

static void jp_ws(const char **p)
{
	while (isspace((unsigned char)**p))
		(*p)++;
}

static void jp_str(msgpack_packer *pk, const char **p)
{
	char *buf = malloc(strlen(*p) + 1);
	size_t n = 0;

	(*p)++; /* " */
	while (**p && **p != '"') {
		if (**p == '\\')
			(*p)++;
		buf[n++] = **p;
		(*p)++;
	}
	(*p)++;
	proto_pk_str(pk, buf, n);
	free(buf);
}

static void jp_value(msgpack_packer *pk, const char **p)
{
	jp_ws(p);
	if (**p == '{' || **p == '[') {
		bool obj = **p == '{';
		const char *q = *p + 1;
		unsigned n = 0, depth = 0;
		bool in_str = false;

		/* count the top-level elements first */
		jp_ws(&q);
		if (*q != (obj ? '}' : ']'))
			n = 1;
		for (; *q && !(depth == 0 && !in_str && *q == (obj ? '}' : ']'));
		     q++) {
			if (in_str) {
				if (*q == '\\')
					q++;
				else if (*q == '"')
					in_str = false;
			} else if (*q == '"') {
				in_str = true;
			} else if (*q == '{' || *q == '[') {
				depth++;
			} else if (*q == '}' || *q == ']') {
				depth--;
			} else if (*q == ',' && depth == 0) {
				n++;
			}
		}
		if (obj)
			msgpack_pack_map(pk, n);
		else
			msgpack_pack_array(pk, n);
		(*p)++;
		for (unsigned i = 0; i < n; i++) {
			jp_ws(p);
			if (obj) {
				jp_str(pk, p);
				jp_ws(p);
				(*p)++; /* : */
			}
			jp_value(pk, p);
			jp_ws(p);
			if (**p == ',')
				(*p)++;
		}
		jp_ws(p);
		(*p)++;
	} else if (**p == '"') {
		jp_str(pk, p);
	} else if (!strncmp(*p, "true", 4)) {
		msgpack_pack_true(pk);
		*p += 4;
	} else if (!strncmp(*p, "false", 5)) {
		msgpack_pack_false(pk);
		*p += 5;
	} else if (!strncmp(*p, "null", 4)) {
		msgpack_pack_nil(pk);
		*p += 4;
	} else {
		char *end;
		double d = strtod(*p, &end);
		const char *dot = memchr(*p, '.', (size_t)(end - *p));

		if (dot)
			msgpack_pack_double(pk, d);
		else if (**p == '-')
			msgpack_pack_int64(pk, strtoll(*p, NULL, 10));
		else
			msgpack_pack_uint64(pk, strtoull(*p, NULL, 10));
		*p = end;
	}
}

/* Append the msgpack of text to o. */
static void jpack(proto_out *o, const char *text)
{
	jp_value(&o->pk, &text);
}

#endif
