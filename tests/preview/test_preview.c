/*
 * actors/preview.c against real files: thumbnails of every enabled type,
 * snippets cut at a character boundary, hostile input (truncated, lying
 * headers, random bytes, a decompression bomb), dedup, the bounded queue,
 * stop, and a seeded mutation fuzz of the whole path.
 *
 * preview.c is compiled into this binary with a fake of the three runtime
 * calls it makes (rt_self, rt_post, msg_new): rt_post queues the M_CALL, and
 * the test thread plays the shard that runs it, so each test sees which
 * shard an answer was posted to and on which thread done ran.
 *
 * usage: test_preview basic | limits | fuzz SEED SECONDS ITERS
 * Each mode is its own process: preview_init runs once per process (libvips
 * starts once) with the limits that mode tests.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <vips/vips.h>

#include "actors/base.h"
#include "actors/preview.h"
#include "tests/preview/fixtures.h"

void preview_snippet_of(const void *s, size_t n, char *out);

#define SHARD 3 /* where the tests ask answers to go */

/* ---- the fake runtime ------------------------------------------------------ */

struct posted {
	struct posted *next;
	unsigned dst;
	rt_msg *m;
};

static pthread_mutex_t post_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t post_cv = PTHREAD_COND_INITIALIZER;
static struct posted *post_head, **post_tail = &post_head;
static unsigned cur_shard = 999; /* the shard "running" an M_CALL now */
static pthread_t test_thread;

rt_shard *rt_self(void) { return NULL; }
unsigned rt_shard_id(const rt_shard *s) { (void)s; return 0; }

void *msg_new(size_t size, uint16_t type)
{
	rt_msg *m = calloc(1, size);

	if (!m)
		abort();
	m->type = type;
	return m;
}

void rt_post(unsigned dst, rt_msg *m)
{
	struct posted *p = malloc(sizeof(*p));

	if (!p)
		abort();
	p->next = NULL;
	p->dst = dst;
	p->m = m;
	pthread_mutex_lock(&post_mu);
	*post_tail = p;
	post_tail = &p->next;
	pthread_cond_broadcast(&post_cv);
	pthread_mutex_unlock(&post_mu);
}

static uint64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* Be the shard: run the posted M_CALLs until *count reaches want or ms
 * pass. Returns whether it did. */
static bool pump(const int *count, int want, unsigned ms)
{
	uint64_t end = now_ms() + ms;

	while (*count < want) {
		struct posted *p;
		struct timespec ts;

		pthread_mutex_lock(&post_mu);
		while (!post_head && now_ms() < end) {
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 50 * 1000000;
			if (ts.tv_nsec >= 1000000000)
				ts.tv_sec++, ts.tv_nsec -= 1000000000;
			pthread_cond_timedwait(&post_cv, &post_mu, &ts);
		}
		p = post_head;
		if (p) {
			post_head = p->next;
			if (!post_head)
				post_tail = &post_head;
		}
		pthread_mutex_unlock(&post_mu);
		if (!p)
			return false;
		assert_int_equal(p->m->type, M_CALL);
		cur_shard = p->dst;
		((struct m_call *)p->m)->fn(NULL, (struct m_call *)p->m);
		cur_shard = 999;
		free(p);
	}
	return true;
}

/* ---- helpers ------------------------------------------------------------------ */

struct got {
	int calls;
	struct preview_result r;
	unsigned shard;
	bool on_test_thread;
};

static int total_done; /* every done, all jobs */

static void on_done(void *arg, const struct preview_result *r)
{
	struct got *g = arg;

	g->calls++;
	g->r = *r;
	g->shard = cur_shard;
	g->on_test_thread = pthread_equal(pthread_self(), test_thread);
	total_done++;
}

static char dir[256]; /* the data dir, and the fixtures under it */

static const char *fpath(const char *name)
{
	static char b[4][512];
	static int i;

	i = (i + 1) % 4;
	snprintf(b[i], sizeof(b[i]), "%s/%s", dir, name);
	return b[i];
}

/* A 64-hex id for a name (the tests' stand-in for the sha256). */
static const char *sha_of(const char *name)
{
	static char b[4][65];
	static int i;
	uint64_t h = 1469598103934665603ull;

	i = (i + 1) % 4;
	for (const char *s = name; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	for (int k = 0; k < 4; k++) {
		h = h * 6364136223846793005ull + 1442695040888963407ull;
		snprintf(b[i] + 16 * k, 17, "%016llx", (unsigned long long)h);
	}
	return b[i];
}

static const char *thumb_path(const char *sha)
{
	static char b[512];

	snprintf(b, sizeof(b), "%s/files/thumbs/%s.jpg", dir, sha);
	return b;
}

/* Submit, be the shard until done ran, check where it ran. */
static struct preview_result run(const char *name, const char *mime)
{
	struct got g = { 0 };

	preview_submit(sha_of(name), fpath(name), mime, on_done, &g, SHARD);
	assert_true(pump(&g.calls, 1, 120000));
	assert_int_equal(g.calls, 1);
	assert_int_equal(g.shard, SHARD);
	assert_true(g.on_test_thread);
	return g.r;
}

static void sniff_file(const char *name, char *mime, size_t cap)
{
	size_t n;
	uint8_t *b = fx_read(fpath(name), &n);

	assert_non_null(b);
	assert_int_equal(preview_sniff(b, n, mime, cap), 0);
	free(b);
}

static void thumb_size(const char *sha, int *w, int *h)
{
	VipsImage *im = vips_image_new_from_file(thumb_path(sha), NULL);
	char mime[64];
	size_t n;
	uint8_t *b = fx_read(thumb_path(sha), &n);

	assert_non_null(b);
	assert_int_equal(preview_sniff(b, n, mime, sizeof(mime)), 0);
	assert_string_equal(mime, "image/jpeg");
	free(b);
	assert_non_null(im);
	*w = im->Xsize;
	*h = im->Ysize;
	g_object_unref(im);
}

/* ---- basic: init(50 MP, 20 s) --------------------------------------------------- */

static void images(void **st)
{
	static const struct {
		const char *name, *mime;
		int w, h, bands, tw, th;
	} c[] = {
		{ "a.png", "image/png", 800, 600, 3, 360, 270 },
		{ "alpha.png", "image/png", 640, 640, 4, 360, 360 },
		{ "grey.png", "image/png", 100, 50, 1, 100, 50 }, /* no upscale */
		{ "a.jpg", "image/jpeg", 1200, 900, 3, 360, 270 },
		{ "tall.jpg", "image/jpeg", 300, 1000, 3, 108, 360 },
		{ "a.gif", "image/gif", 500, 250, 3, 360, 180 },
		{ "a.webp", "image/webp", 720, 360, 3, 360, 180 },
		{ "a.tif", "image/tiff", 400, 400, 3, 360, 360 },
	};

	(void)st;
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		char mime[64];
		struct preview_result r;
		int tw, th;

		assert_int_equal(fx_image(fpath(c[i].name), c[i].w, c[i].h,
					  c[i].bands, 0), 0);
		sniff_file(c[i].name, mime, sizeof(mime));
		assert_string_equal(mime, c[i].mime);
		r = run(c[i].name, mime);
		assert_int_equal(r.error, 0);
		assert_true(r.thumb);
		assert_int_equal(r.w, c[i].w);
		assert_int_equal(r.h, c[i].h);
		assert_string_equal(r.snippet, "");
		thumb_size(sha_of(c[i].name), &tw, &th);
		/* the shrink may round by one pixel */
		assert_in_range(tw, c[i].tw - 1, c[i].tw);
		assert_in_range(th, c[i].th - 1, c[i].th);
	}
}

static void pdf_first_page(void **st)
{
	char mime[64];
	struct preview_result r;
	int tw, th;

	(void)st;
	assert_int_equal(fx_pdf(fpath("doc.pdf"), 3, 595, 842), 0);
	sniff_file("doc.pdf", mime, sizeof(mime));
	assert_string_equal(mime, "application/pdf");
	r = run("doc.pdf", mime);
	assert_int_equal(r.error, 0);
	assert_true(r.thumb);
	assert_int_equal(r.w, 595);
	assert_int_equal(r.h, 842);
	thumb_size(sha_of("doc.pdf"), &tw, &th);
	assert_in_range(th, 359, 360);
	assert_in_range(tw, 253, 255);
}

/* The text's snippet as the worker makes it, from a file. */
static struct preview_result text(const char *name, const void *d, size_t n,
				  const char *want_mime)
{
	char mime[64];

	assert_int_equal(fx_write(fpath(name), d, n), 0);
	sniff_file(name, mime, sizeof(mime));
	if (want_mime)
		assert_string_equal(mime, want_mime);
	assert_true(preview_is_text(mime));
	return run(name, mime);
}

static void snippets(void **st)
{
	char b[1024];
	struct preview_result r;

	(void)st;
	/* plain ASCII: the first 300 bytes */
	for (int i = 0; i < 1000; i++)
		b[i] = (char)('a' + i % 26);
	b[999] = '\n';
	r = text("ascii.txt", b, 1000, "text/plain");
	assert_int_equal(r.error, 0);
	assert_false(r.thumb);
	assert_int_equal(strlen(r.snippet), 300);
	assert_memory_equal(r.snippet, b, 300);

	/* a 2-byte character on bytes 299-300: cut before it (299) */
	memset(b, 'x', 299);
	memcpy(b + 299, "\xc3\xa9 and more text after it\n", 26);
	r = text("cut2.txt", b, 325, "text/plain");
	assert_int_equal(r.error, 0);
	assert_int_equal(strlen(r.snippet), 299);
	assert_memory_equal(r.snippet, b, 299);

	/* a 4-byte emoji on bytes 298-301: cut before it (298) */
	memset(b, 'y', 298);
	memcpy(b + 298, "\xf0\x9f\x98\x80 tail\n", 10);
	r = text("cut4.txt", b, 308, NULL);
	assert_int_equal(strlen(r.snippet), 298);

	/* ... and one that ends exactly at 300 is kept whole */
	memset(b, 'z', 298);
	memcpy(b + 298, "\xc3\xa9\xc3\xa9 tail\n", 10);
	r = text("fit.txt", b, 308, NULL);
	assert_int_equal(strlen(r.snippet), 300);
	assert_memory_equal(r.snippet + 298, "\xc3\xa9", 2);

	/* short UTF-8 text: all of it */
	r = text("short.txt", "h\xc3\xa9llo, w\xc3\xb6rld\n", 15, NULL);
	assert_string_equal(r.snippet, "h\xc3\xa9llo, w\xc3\xb6rld\n");

	/* JSON is text */
	r = text("a.json", "{\"a\": [1, 2, 3], \"b\": \"caf\xc3\xa9\"}\n", 31,
		 "application/json");
	assert_string_equal(r.snippet, "{\"a\": [1, 2, 3], \"b\": \"caf\xc3\xa9\"}\n");

	/* Latin-1 text is not UTF-8: no snippet, no error */
	snprintf(b, sizeof(b), "Le caf\xe9 est cr\xe8me, tr\xe8s bien.\n"
			       "Encore du caf\xe9 ici.\n");
	r = text("latin1.txt", b, strlen(b), NULL);
	assert_int_equal(r.error, 0);
	assert_string_equal(r.snippet, "");
}

static void snippet_rules(void **st)
{
	char out[PREVIEW_SNIPPET_MAX + 1];

	(void)st;
	preview_snippet_of("ok \xc0\xaf", 5, out); /* overlong '/' */
	assert_string_equal(out, "");
	preview_snippet_of("ok \xed\xa0\x80", 6, out); /* a surrogate */
	assert_string_equal(out, "");
	preview_snippet_of("ok \xf4\x90\x80\x80", 7, out); /* > U+10FFFF */
	assert_string_equal(out, "");
	preview_snippet_of("ok\0no", 5, out);
	assert_string_equal(out, "");
	preview_snippet_of("ends in \xe2\x82", 10, out); /* file cut mid-char */
	assert_string_equal(out, "ends in ");
}

static void hostile(void **st)
{
	static const char *const types[] = { "image/png", "image/jpeg",
		"image/gif", "image/webp", "image/tiff", "application/pdf" };
	struct preview_result r;
	uint8_t rnd[4096];
	uint8_t *b;
	size_t n;
	char mime[64];

	(void)st;
	/* truncated PNG and JPEG: an error, no thumbnail */
	assert_int_equal(fx_image(fpath("full.png"), 600, 400, 3, 1), 0);
	assert_int_equal(fx_image(fpath("full.jpg"), 600, 400, 3, 1), 0);
	b = fx_read(fpath("full.png"), &n);
	assert_int_equal(fx_write(fpath("trunc.png"), b, n / 2), 0);
	free(b);
	b = fx_read(fpath("full.jpg"), &n);
	assert_int_equal(fx_write(fpath("trunc.jpg"), b, n / 2), 0);
	free(b);
	r = run("trunc.png", "image/png");
	assert_int_equal(r.error, EINVAL);
	assert_false(r.thumb);
	assert_int_not_equal(access(thumb_path(sha_of("trunc.png")), F_OK), 0);
	r = run("trunc.jpg", "image/jpeg");
	assert_int_equal(r.error, EINVAL);
	assert_false(r.thumb);

	/* a header claiming 100000 x 100000: refused before decoding */
	assert_int_equal(fx_png_header(fpath("huge.png"), 100000, 100000), 0);
	sniff_file("huge.png", mime, sizeof(mime));
	assert_string_equal(mime, "image/png");
	r = run("huge.png", mime);
	assert_int_equal(r.error, E2BIG);
	assert_false(r.thumb);
	assert_int_equal(r.w, 100000);

	/* the bomb, 40000 x 40000 from a few hundred KB: over 50 MP too */
	assert_int_equal(fx_png_bomb(fpath("bomb.png"), 40000, 40000), 0);
	r = run("bomb.png", "image/png");
	assert_int_equal(r.error, E2BIG);

	/* random bytes: no type, no preview; sent in as any type: EINVAL */
	srand(15);
	for (size_t i = 0; i < sizeof(rnd); i++)
		rnd[i] = (uint8_t)(rand() >> 7);
	assert_int_equal(preview_sniff(rnd, sizeof(rnd), mime, sizeof(mime)), 0);
	assert_string_equal(mime, "application/octet-stream");
	assert_int_equal(fx_write(fpath("random.bin"), rnd, sizeof(rnd)), 0);
	r = run("random.bin", mime);
	assert_int_equal(r.error, 0);
	assert_false(r.thumb);
	assert_string_equal(r.snippet, "");
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		struct got g = { 0 };
		char name[32];

		snprintf(name, sizeof(name), "random-%zu", i);
		preview_submit(sha_of(name), fpath("random.bin"), types[i],
			       on_done, &g, SHARD);
		assert_true(pump(&g.calls, 1, 120000));
		assert_int_equal(g.r.error, EINVAL);
		assert_false(g.r.thumb);
	}

	/* a missing file, a bad sha: errors, not crashes */
	r = run("no-such-file.png", "image/png");
	assert_int_equal(r.error, EINVAL);
	{
		struct got g = { 0 };

		preview_submit("../../etc/passwd", fpath("a.png"), "image/png",
			       on_done, &g, SHARD);
		assert_true(pump(&g.calls, 1, 120000));
		assert_int_equal(g.r.error, EINVAL);
	}
	/* what sniff cannot fit in cap */
	assert_int_not_equal(preview_sniff(rnd, sizeof(rnd), mime, 4), 0);
}

static void dedup(void **st)
{
	struct preview_result r;
	struct stat a, b;

	(void)st;
	assert_int_equal(fx_image(fpath("same.png"), 900, 300, 3, 0), 0);
	r = run("same.png", "image/png");
	assert_true(r.thumb);
	assert_int_equal(stat(thumb_path(sha_of("same.png")), &a), 0);
	/* the same bytes again: answered from the thumbnail there, which is
	 * not made again (a new one would be a new file: rename) */
	r = run("same.png", "image/png");
	assert_int_equal(r.error, 0);
	assert_true(r.thumb);
	assert_int_equal(r.w, 900);
	assert_int_equal(r.h, 300);
	assert_int_equal(stat(thumb_path(sha_of("same.png")), &b), 0);
	assert_int_equal(a.st_ino, b.st_ino);
	assert_int_equal(a.st_mtim.tv_nsec, b.st_mtim.tv_nsec);
	assert_int_equal(a.st_mtim.tv_sec, b.st_mtim.tv_sec);
}

/* ---- limits: init(4000 MP, 500 ms) --------------------------------------------- */

static void bomb_killed(void **st)
{
	struct preview_result r;
	struct rusage ru;

	(void)st;
	/* 1,600 MP from ~200 KB: under this process's 4,000 MP limit, so
	 * only the deadline stops it */
	assert_int_equal(fx_png_bomb(fpath("bomb.png"), 40000, 40000), 0);
	r = run("bomb.png", "image/png");
	assert_int_equal(r.error, ETIMEDOUT);
	assert_false(r.thumb);
	assert_int_not_equal(access(thumb_path(sha_of("bomb.png")), F_OK), 0);
	/* it streamed: never near its 1.6 GB of pixels */
	assert_int_equal(getrusage(RUSAGE_SELF, &ru), 0);
	assert_true(ru.ru_maxrss < 1024 * 1024); /* KiB */
	/* the same bytes again: the failure is remembered */
	r = run("bomb.png", "image/png");
	assert_int_equal(r.error, ETIMEDOUT);
}

static void queue_bound(void **st)
{
	enum { N = 100 };
	static struct got g[N];
	struct got slow = { 0 };
	int again = 0, ok = 0, base = total_done;

	(void)st;
	assert_int_equal(fx_write(fpath("q.txt"), "queued text\n", 12), 0);
	/* a slow job first (a bomb under new bytes), then N quick ones */
	preview_submit(sha_of("bomb-q"), fpath("bomb.png"), "image/png",
		       on_done, &slow, SHARD);
	for (int i = 0; i < N; i++) {
		char name[32];

		snprintf(name, sizeof(name), "q-%d", i);
		preview_submit(sha_of(name), fpath("q.txt"), "text/plain",
			       on_done, &g[i], SHARD);
	}
	assert_true(pump(&total_done, base + N + 1, 120000));
	assert_int_equal(slow.calls, 1);
	for (int i = 0; i < N; i++) {
		assert_int_equal(g[i].calls, 1);
		if (g[i].r.error == EAGAIN) {
			again++;
			assert_string_equal(g[i].r.snippet, "");
		} else {
			assert_int_equal(g[i].r.error, 0);
			assert_string_equal(g[i].r.snippet, "queued text\n");
			ok++;
		}
	}
	/* at most PREVIEW_QUEUE_MAX wait behind the slow one */
	assert_true(ok <= PREVIEW_QUEUE_MAX + 1);
	assert_true(again >= N - PREVIEW_QUEUE_MAX - 1);
}

static void stop_answers(void **st)
{
	enum { N = 10 };
	struct got g[N] = { 0 }, slow = { 0 }, late = { 0 };
	int base = total_done;

	(void)st;
	preview_submit(sha_of("bomb-s"), fpath("bomb.png"), "image/png",
		       on_done, &slow, SHARD);
	for (int i = 0; i < N; i++) {
		char name[32];

		snprintf(name, sizeof(name), "s-%d", i);
		preview_submit(sha_of(name), fpath("q.txt"), "text/plain",
			       on_done, &g[i], SHARD);
	}
	preview_stop(); /* kills the bomb, cancels the rest */
	preview_submit(sha_of("late"), fpath("q.txt"), "text/plain", on_done,
		       &late, SHARD);
	assert_true(pump(&total_done, base + N + 2, 120000));
	assert_int_equal(slow.calls, 1);
	assert_int_not_equal(slow.r.error, 0);
	for (int i = 0; i < N; i++) {
		assert_int_equal(g[i].calls, 1);
		/* the worker may have taken none, or some before stop */
		assert_true(g[i].r.error == ECANCELED || g[i].r.error == 0);
	}
	assert_int_equal(late.r.error, ECANCELED);
}

/* ---- fuzz: init(50 MP, 2 s) ------------------------------------------------------ */

static unsigned long fz_seed, fz_seconds, fz_iters;

static uint64_t rng;
static uint32_t rnd32(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (uint32_t)(rng >> 11);
}

static void fuzz(void **st)
{
	static const struct {
		const char *name, *mime;
	} fx[] = {
		{ "f.png", "image/png" },  { "f4.png", "image/png" },
		{ "f.jpg", "image/jpeg" }, { "f.gif", "image/gif" },
		{ "f.webp", "image/webp" }, { "f.tif", "image/tiff" },
		{ "f.pdf", "application/pdf" }, { "f.txt", "text/plain" },
	};
	enum { NF = sizeof(fx) / sizeof(fx[0]) };
	uint8_t *orig[NF];
	size_t olen[NF];
	uint64_t t0 = now_ms(), worst = 0;
	unsigned long it;
	unsigned thumbs = 0, errors = 0;

	(void)st;
	rng = fz_seed * 2654435761u + 1;
	assert_int_equal(fx_image(fpath("f.png"), 96, 64, 3, 0), 0);
	assert_int_equal(fx_image(fpath("f4.png"), 48, 48, 4, 0), 0);
	assert_int_equal(fx_image(fpath("f.jpg"), 120, 80, 3, 1), 0);
	assert_int_equal(fx_image(fpath("f.gif"), 64, 64, 3, 0), 0);
	assert_int_equal(fx_image(fpath("f.webp"), 64, 48, 3, 0), 0);
	assert_int_equal(fx_image(fpath("f.tif"), 40, 40, 3, 0), 0);
	assert_int_equal(fx_pdf(fpath("f.pdf"), 2, 200, 100), 0);
	assert_int_equal(fx_write(fpath("f.txt"),
				  "fuzz \xc3\xa9t\xc3\xa9 \xe2\x82\xac text\n",
				  20), 0);
	for (int i = 0; i < NF; i++) {
		orig[i] = fx_read(fpath(fx[i].name), &olen[i]);
		assert_non_null(orig[i]);
	}
	for (it = 0; it < fz_iters && now_ms() - t0 < fz_seconds * 1000; it++) {
		unsigned f = rnd32() % NF, k = 1 + rnd32() % 16;
		size_t n = olen[f];
		uint8_t *b = malloc(n + 16);
		char name[64], mime[128], sha[65];
		struct got g = { 0 };
		uint64_t t;

		memcpy(b, orig[f], n);
		switch (rnd32() % 4) {
		case 0: /* truncate */
			n = rnd32() % n;
			break;
		case 1: /* flip bits, possibly in the header */
			for (unsigned j = 0; j < k; j++)
				b[rnd32() % (n < 64 ? n : 64)] ^=
					(uint8_t)(1u << (rnd32() % 8));
			/* fall through */
		default: /* random bytes anywhere */
			for (unsigned j = 0; j < k; j++)
				b[rnd32() % n] = (uint8_t)rnd32();
			break;
		}
		snprintf(name, sizeof(name), "m-%lu", it % 4);
		assert_int_equal(fx_write(fpath(name), b, n), 0);
		/* as an upload would: the type from the bytes; every other
		 * time forced to the original type, so the decoder sees it */
		if (preview_sniff(b, n, mime, sizeof(mime)) || (it & 1))
			snprintf(mime, sizeof(mime), "%s", fx[f].mime);
		free(b);
		snprintf(sha, sizeof(sha), "%064lx", fz_seed * 1000003 + it);
		t = now_ms();
		preview_submit(sha, fpath(name), mime, on_done, &g, SHARD);
		/* the deadline is 2 s; far more slack than that before
		 * calling it a hang (a loaded CI machine, ASan) */
		if (!pump(&g.calls, 1, 60000))
			fail_msg("iteration %lu (seed %lu, %s) hung", it,
				 fz_seed, fx[f].name);
		t = now_ms() - t;
		worst = t > worst ? t : worst;
		assert_int_equal(g.calls, 1);
		thumbs += g.r.thumb;
		errors += g.r.error != 0;
		if (g.r.thumb)
			unlink(thumb_path(sha));
	}
	printf("fuzz: seed %lu: %lu iterations in %llu ms, %u thumbnails, "
	       "%u errors, slowest job %llu ms\n", fz_seed, it,
	       (unsigned long long)(now_ms() - t0), thumbs, errors,
	       (unsigned long long)worst);
	for (int i = 0; i < NF; i++)
		free(orig[i]);
}

/* ---- main ------------------------------------------------------------------------ */

static int setup(unsigned mp, unsigned ms)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(dir, sizeof(dir), "%s/parley-preview-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir))
		return -1;
	test_thread = pthread_self();
	return preview_init(dir, mp, ms);
}

static void teardown(void)
{
	char cmd[600];

	preview_stop();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "basic";
	int rc;

	if (!strcmp(mode, "basic")) {
		const struct CMUnitTest t[] = {
			cmocka_unit_test(images),
			cmocka_unit_test(pdf_first_page),
			cmocka_unit_test(snippets),
			cmocka_unit_test(snippet_rules),
			cmocka_unit_test(hostile),
			cmocka_unit_test(dedup),
		};
		if (setup(50, 20000))
			return 2;
		rc = cmocka_run_group_tests_name("preview_basic", t, NULL, NULL);
	} else if (!strcmp(mode, "limits")) {
		const struct CMUnitTest t[] = {
			cmocka_unit_test(bomb_killed),
			cmocka_unit_test(queue_bound),
			cmocka_unit_test(stop_answers),
		};
		if (setup(4000, 500))
			return 2;
		rc = cmocka_run_group_tests_name("preview_limits", t, NULL, NULL);
	} else if (!strcmp(mode, "fuzz") && argc == 5) {
		const struct CMUnitTest t[] = { cmocka_unit_test(fuzz) };

		fz_seed = strtoul(argv[2], NULL, 10);
		fz_seconds = strtoul(argv[3], NULL, 10);
		fz_iters = strtoul(argv[4], NULL, 10);
		if (setup(50, 2000))
			return 2;
		rc = cmocka_run_group_tests_name("preview_fuzz", t, NULL, NULL);
	} else {
		fprintf(stderr, "usage: %s basic | limits | fuzz SEED SECONDS "
				"ITERS\n", argv[0]);
		return 2;
	}
	teardown();
	return rc;
}
