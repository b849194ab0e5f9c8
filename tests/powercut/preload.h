/*
 * preload: put powercut.so into the environment of the parleyd that the
 * harness starts next (the tests' own process is not affected: the
 * variables matter only at a program's start).
 */
#ifndef PARLEY_POWERCUT_PRELOAD_H
#define PARLEY_POWERCUT_PRELOAD_H

#include <stdio.h>
#include <stdlib.h>

static inline void pc_preload(void)
{
	setenv("LD_PRELOAD", POWERCUT_LIB, 1);
#ifdef __SANITIZE_ADDRESS__
	/* The preloaded library comes before the ASan runtime. */
	{
		const char *a = getenv("ASAN_OPTIONS");
		char buf[1024];

		snprintf(buf, sizeof(buf), "%s%sverify_asan_link_order=0",
			 a ? a : "", a && *a ? ":" : "");
		setenv("ASAN_OPTIONS", buf, 1);
	}
#endif
}

#endif
