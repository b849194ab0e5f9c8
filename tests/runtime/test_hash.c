/*
 * The one hash function (runtime/hash.h) is a format: storage picks a
 * channel's history column family with it, and older servers' DM ids were
 * made with it. Pinned here to the published FNV-1a 64 vectors and to the
 * column families of fixed channel ids, so a change to it fails before it
 * scatters a database's history.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "runtime/hash.h"
#include "storage/store.h"

static void test_fnv1a_vectors(void **st)
{
	(void)st;
	/* FNV-1a 64 reference values (Fowler, Noll, Vo) */
	assert_int_equal(rt_fnv1a("", 0), 0xcbf29ce484222325ull);
	assert_int_equal(rt_fnv1a("a", 1), 0xaf63dc4c8601ec8cull);
	assert_int_equal(rt_fnv1a("foobar", 6), 0x85944171f73967e8ull);
	assert_int_equal(rt_fnv1a_str(RT_FNV_OFFSET, "foobar"),
			 0x85944171f73967e8ull);
	/* continuing is hashing the concatenation, a NUL included */
	assert_int_equal(rt_fnv1a_str(rt_fnv1a_str(RT_FNV_OFFSET, "foo"), "bar"),
			 rt_fnv1a("foobar", 6));
	assert_int_equal(rt_fnv1a_str(rt_fnv1a_step(rt_fnv1a_str(RT_FNV_OFFSET,
								  "ws"), "", 1),
				      "u"),
			 rt_fnv1a("ws\0u", 4));
}

/* Where fixed channels' histories live, for 16 ranges (the default) and
 * 7: values taken once, to stay. */
static void test_channel_ranges(void **st)
{
	(void)st;
	assert_int_equal(store_range_of("C0123456789abcdef", 16), 2);
	assert_int_equal(store_range_of("general", 16), 11);
	assert_int_equal(store_range_of("a", 16), 12);
	assert_int_equal(store_range_of("foobar", 16), 8);
	assert_int_equal(store_range_of("general", 7),
			 (unsigned)(0x9e275796a0d9a90bull % 7));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fnv1a_vectors),
		cmocka_unit_test(test_channel_ranges),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
