/*
 * Timings of actors/preview.c for docs/architecture.md ("Previews"). Not a
 * test: nothing is asserted. Run under /usr/bin/time -v for the peak RSS:
 *
 *   preview_bench make DIR          DIR/big.jpg, DIR/big.png (4000x3000),
 *                                   DIR/doc.pdf (20 A4 pages)
 *   preview_bench thumb FILE MIME   its thumbnail, 7 runs: median, min, max
 *   preview_bench idle              init and stop only (the RSS baseline)
 *   preview_bench sniff          preview_sniff per type, ns per call; one
 *                                libmagic handle per thread vs one shared
 *                                under a mutex, 1 and 2 threads
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <magic.h>

#include "actors/base.h"
#include "actors/preview.h"
#include "tests/preview/fixtures.h"

/* preview.c's runtime calls: answers go to PREVIEW_ON_WORKER here */
rt_shard *rt_self(void) { return NULL; }
unsigned rt_shard_id(const rt_shard *s) { (void)s; return 0; }
void *msg_new(size_t size, uint16_t type) { (void)size, (void)type; abort(); }
void rt_post(unsigned dst, rt_msg *m) { (void)dst, (void)m; abort(); }

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int ndone;
static struct preview_result last;

static void on_done(void *arg, const struct preview_result *r)
{
	(void)arg;
	pthread_mutex_lock(&mu);
	last = *r;
	ndone++;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void thumbs(const char *dir, const char *file, const char *mime)
{
	enum { RUNS = 7 };
	double t[RUNS];

	for (int i = 0; i < RUNS; i++) {
		char sha[65], th[600];
		double t0 = now_s();

		snprintf(sha, sizeof(sha), "%064x", i + 1);
		preview_submit(sha, file, mime, on_done, NULL,
			       PREVIEW_ON_WORKER);
		pthread_mutex_lock(&mu);
		while (ndone < i + 1)
			pthread_cond_wait(&cv, &mu);
		pthread_mutex_unlock(&mu);
		t[i] = (now_s() - t0) * 1e3;
		if (last.error || !last.thumb)
			printf("run %d: error %d thumb %d\n", i, last.error,
			       last.thumb);
		snprintf(th, sizeof(th), "%s/files/thumbs/%s.jpg", dir, sha);
		unlink(th);
	}
	qsort(t, RUNS, sizeof(t[0]), cmp);
	printf("%s (%ux%u): thumbnail median %.1f ms, min %.1f, max %.1f "
	       "(%d runs)\n", mime, last.w, last.h, t[RUNS / 2], t[0],
	       t[RUNS - 1], RUNS);
}

/* ---- sniff ------------------------------------------------------------------- */

struct sniff_arg {
	const uint8_t *b;
	size_t n;
	long iters;
	magic_t own; /* NULL: the shared one under the mutex */
	double ns;
};

static magic_t shared;
static pthread_mutex_t smu = PTHREAD_MUTEX_INITIALIZER;

static void *sniff_loop(void *p)
{
	struct sniff_arg *a = p;
	double t0 = now_s();

	for (long i = 0; i < a->iters; i++) {
		if (a->own) {
			magic_buffer(a->own, a->b, a->n);
		} else {
			pthread_mutex_lock(&smu);
			magic_buffer(shared, a->b, a->n);
			pthread_mutex_unlock(&smu);
		}
	}
	a->ns = (now_s() - t0) * 1e9 / a->iters;
	return NULL;
}

static magic_t open_magic(void)
{
	magic_t m = magic_open(MAGIC_MIME_TYPE | MAGIC_NO_CHECK_COMPRESS);

	magic_load(m, NULL);
	return m;
}

/* ns per call with nt threads, own handles or one shared */
static double sniff_mt(const uint8_t *b, size_t n, long iters, int nt,
		       int own)
{
	pthread_t th[2];
	struct sniff_arg a[2];
	double sum = 0;

	for (int i = 0; i < nt; i++) {
		a[i] = (struct sniff_arg){ b, n, iters, own ? open_magic() : NULL,
					   0 };
		pthread_create(&th[i], NULL, sniff_loop, &a[i]);
	}
	for (int i = 0; i < nt; i++) {
		pthread_join(th[i], NULL);
		sum += a[i].ns;
		if (a[i].own)
			magic_close(a[i].own);
	}
	return sum / nt;
}

static void sniff(const char *dir)
{
	static const char *const names[] = { "s.png", "s.jpg", "s.pdf",
					     "s.txt", "s.json", "s.c",
					     "s.bin" };
	char p[600], mime[128];
	double t0;
	magic_t m;

	fx_image((snprintf(p, sizeof(p), "%s/s.png", dir), p), 800, 600, 3, 1);
	fx_image((snprintf(p, sizeof(p), "%s/s.jpg", dir), p), 800, 600, 3, 1);
	fx_pdf((snprintf(p, sizeof(p), "%s/s.pdf", dir), p), 20, 595, 842);
	{
		static char txt[70000], js[70000], c[70000];
		size_t n = 0;
		uint8_t rnd[65536];

		while (n + 80 < sizeof(txt))
			n += (size_t)snprintf(txt + n, sizeof(txt) - n,
					      "The quick brown fox jumps over "
					      "the lazy dog, line %zu.\n", n);
		fx_write((snprintf(p, sizeof(p), "%s/s.txt", dir), p), txt, n);
		n = (size_t)snprintf(js, sizeof(js), "{\"items\": [");
		while (n + 80 < sizeof(js))
			n += (size_t)snprintf(js + n, sizeof(js) - n,
					      "{\"id\": %zu, \"name\": \"x\"}, ",
					      n);
		n += (size_t)snprintf(js + n, sizeof(js) - n, "{}]}\n");
		fx_write((snprintf(p, sizeof(p), "%s/s.json", dir), p), js, n);
		n = (size_t)snprintf(c, sizeof(c), "#include <stdio.h>\n\n");
		while (n + 80 < sizeof(c))
			n += (size_t)snprintf(c + n, sizeof(c) - n,
					      "int f%zu(int x)\n{\n\treturn x + "
					      "1;\n}\n", n);
		fx_write((snprintf(p, sizeof(p), "%s/s.c", dir), p), c, n);
		srand(1);
		for (size_t i = 0; i < sizeof(rnd); i++)
			rnd[i] = (uint8_t)(rand() >> 5);
		fx_write((snprintf(p, sizeof(p), "%s/s.bin", dir), p), rnd,
			 sizeof(rnd));
	}
	t0 = now_s();
	m = open_magic();
	printf("magic_open + magic_load: %.2f ms (once per thread)\n",
	       (now_s() - t0) * 1e3);
	magic_close(m);
	shared = open_magic();
	printf("%-26s %8s %10s %10s %10s %10s\n", "type (first <= 64 KiB)",
	       "bytes", "own x1", "mutex x1", "own x2", "mutex x2");
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		size_t n;
		uint8_t *b;
		long it;
		double one;

		snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
		b = fx_read(p, &n);
		if (n > PREVIEW_SNIFF_BYTES)
			n = PREVIEW_SNIFF_BYTES;
		preview_sniff(b, n, mime, sizeof(mime));
		/* about 0.3 s per column */
		one = sniff_mt(b, n, 50, 1, 1);
		it = (long)(0.3e9 / one) + 10;
		printf("%-26s %8zu %8.0f ns %8.0f ns %8.0f ns %8.0f ns\n", mime,
		       n, sniff_mt(b, n, it, 1, 1), sniff_mt(b, n, it, 1, 0),
		       sniff_mt(b, n, it, 2, 1), sniff_mt(b, n, it, 2, 0));
		free(b);
	}
	magic_close(shared);
}

int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "";
	char dir[] = "/tmp/parley-pvbench-XXXXXX", p[600], cmd[700];

	if (!mkdtemp(dir) || preview_init(dir, 50, 60000))
		return 1;
	if (!strcmp(what, "make") && argc == 3) {
		/* the fixtures, in a process of their own: making them costs
		 * more memory than previewing them */
		snprintf(p, sizeof(p), "%s/big.jpg", argv[2]);
		fx_image(p, 4000, 3000, 3, 1);
		snprintf(p, sizeof(p), "%s/big.png", argv[2]);
		fx_image(p, 4000, 3000, 3, 1);
		snprintf(p, sizeof(p), "%s/doc.pdf", argv[2]);
		fx_pdf(p, 20, 595, 842);
	} else if (!strcmp(what, "thumb") && argc == 4) {
		thumbs(dir, argv[2], argv[3]);
	} else if (!strcmp(what, "sniff")) {
		sniff(dir);
	} else if (strcmp(what, "idle")) {
		fprintf(stderr, "usage: %s make DIR | thumb FILE MIME | sniff | "
				"idle\n", argv[0]);
	}
	preview_stop();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) ? 1 : 0;
}
