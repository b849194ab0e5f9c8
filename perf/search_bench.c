/*
 * search_bench: the full-text index alone (storage/search.c), no server.
 *
 *   search_bench [--msgs N] [--channels C] [--vocab V] [--rounds R]
 *                [--queries Q] [--set S] [--sets A,B,..] [--dir DIR]
 *                [--keep]
 *
 * Fills a fresh index with N messages (default 1,000,000) of 4-20 words
 * drawn from a vocabulary of V made-up words (default 5,000) with Zipf
 * frequencies (s = 1), spread evenly over C channels (default 1,000), one
 * millisecond apart. It feeds them as one shard does (search_feed, and
 * search_feed_flush every 256 events, a busy loop turn; the frames are
 * encoded beforehand, so only the feeding is timed) and reports:
 *
 *   - the feeding shard's cost per event (what the commit path pays),
 *   - how long until everything is indexed (search_sync) and the rate,
 *   - the index's size on disk.
 *
 * Then R rounds (default 5) of Q queries of each kind (default 400),
 * each restricted to S random channels (default 50), one at a time, timed
 * from search_query to its callback (hand-off to the query thread
 * included):
 *
 *   word      one word, ranks uniform over the vocabulary (mostly rare)
 *   common    one word of the 20 most frequent
 *   two       two words (ranks uniform), both must occur
 *   prefix    the first 3-4 letters of a word, then '*'
 *   phrase    two adjacent words taken from a message that was indexed
 *   1ch       a word (uniform rank) in ONE channel (the `ch` argument)
 *   all       a word (uniform rank) in every channel (C; filtered in C
 *             rather than in FTS5 past 64 channels)
 *
 * --sets 1,5,50 adds word, common and phrase queries in 1, 5 and 50
 * channels.
 *
 * Each line gives, per kind, the median over rounds of each round's p50
 * and p99 (and min-max over rounds), and the mean hits per query.
 * Deterministic: the same flags give the same messages and queries.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "proto/proto.h"
#include "storage/search.h"

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: deterministic, fast */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717ull;
}
static double rnd01(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

/* ---- vocabulary ------------------------------------------------------------ */

static char **vocab;
static double *cdf;
static unsigned nvocab;

static void make_vocab(unsigned n)
{
	static const char *syl[] = {
		"ka", "lo", "mi", "ne", "ru", "ta", "po", "si", "de", "ba",
		"ver", "sto", "pla", "gri", "tho", "an", "el", "or", "un",
		"ix", "qua", "zen", "fa", "mo", "li", "chu", "we", "ya", "go",
		"hu", "tr", "ps", "ion", "ment", "ing", "er", "al", "ic",
	};
	const unsigned ns = sizeof(syl) / sizeof(syl[0]);
	double sum = 0;

	nvocab = n;
	vocab = calloc(n, sizeof(*vocab));
	cdf = calloc(n, sizeof(*cdf));
	for (unsigned i = 0; i < n; i++) {
		char w[64];
		bool dup;

		do {
			unsigned k = 1 + (unsigned)(rnd() % 4), len = 0;

			for (unsigned j = 0; j < k; j++)
				len += (unsigned)snprintf(w + len, sizeof(w) - len,
							  "%s", syl[rnd() % ns]);
			dup = false;
			/* made-up words must be distinct (a small quadratic
			 * check is fine at a few thousand) */
			for (unsigned j = 0; j < i && !dup; j++)
				dup = !strcmp(vocab[j], w);
		} while (dup || strlen(w) < 2);
		vocab[i] = strdup(w);
	}
	for (unsigned i = 0; i < n; i++)
		sum += 1.0 / (i + 1);
	for (unsigned i = 0; i < n; i++)
		cdf[i] = (i ? cdf[i - 1] : 0) + 1.0 / (i + 1) / sum;
}

static unsigned zipf_rank(void)
{
	double u = rnd01();
	unsigned lo = 0, hi = nvocab - 1;

	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;

		if (cdf[mid] < u)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* phrases sampled while generating: "w1 w2" of real messages */
static char (*phrases)[80];
static unsigned nphrases;

/* ---- messages ------------------------------------------------------------ */

/* The next message, encoded as a stored event into o. */
static void gen(proto_out *o, char **chs, uint64_t *seqs, unsigned nch,
		uint64_t ts)
{
	unsigned c = (unsigned)(rnd() % nch), nw = 4 + (unsigned)(rnd() % 17);
	char body[512];
	size_t len = 0;
	proto_event ev;
	unsigned prev = 0;

	for (unsigned w = 0; w < nw; w++) {
		unsigned r = zipf_rank();

		len += (size_t)snprintf(body + len, sizeof(body) - len, "%s%s",
					w ? " " : "", vocab[r]);
		/* keep some adjacent pairs for phrase queries */
		if (w && nphrases < 4096 && rnd() % 2000 == 0)
			snprintf(phrases[nphrases++], 80, "%s %s", vocab[prev],
				 vocab[r]);
		prev = r;
	}
	memset(&ev, 0, sizeof(ev));
	ev.ch.s = chs[c];
	ev.ch.n = (uint32_t)strlen(chs[c]);
	ev.seq = ++seqs[c];
	ev.k.s = "msg";
	ev.k.n = 3;
	ev.ts = ts;
	ev.from.s = "someone";
	ev.from.n = 7;
	ev.body.s = body;
	ev.body.n = (uint32_t)len;
	ev.cmid.s = "cmid";
	ev.cmid.n = 4;
	proto_out_reset(o);
	proto_enc_event(o, &ev);
}

/* ---- queries ---------------------------------------------------------------- */

struct waiter {
	sem_t sem;
	int status;
	unsigned n;
};

static void done(void *arg, int status, const search_hit *h, unsigned n)
{
	struct waiter *w = arg;

	(void)h;
	w->status = status;
	w->n = n;
	sem_post(&w->sem);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

enum { K_WORD, K_COMMON, K_TWO, K_PREFIX, K_PHRASE, K_1CH, K_ALL, K__N };
static const char *const kname[K__N] = {
	"word", "common", "two", "prefix", "phrase", "1ch", "all",
};


static void make_query(int kind, char *q, size_t cap)
{
	switch (kind) {
	case K_WORD: case K_1CH: case K_ALL:
		snprintf(q, cap, "%s", vocab[rnd() % nvocab]);
		break;
	case K_COMMON:
		snprintf(q, cap, "%s", vocab[rnd() % 20]);
		break;
	case K_TWO:
		snprintf(q, cap, "%s %s", vocab[rnd() % nvocab],
			 vocab[rnd() % nvocab]);
		break;
	case K_PREFIX: {
		const char *w = vocab[rnd() % nvocab];
		int n = 3 + (int)(rnd() % 2);

		snprintf(q, cap, "%.*s*", n, w);
		break;
	}
	case K_PHRASE:
		snprintf(q, cap, "\"%s\"", phrases[rnd() % nphrases]);
		break;
	}
}

/* nq queries of kind k, each in n channels; p50 and p99 in us. */
static int run_kind(search *sx, int k, unsigned n, unsigned nq, char **chs,
		    unsigned nch, const char **qchs, double *p50, double *p99,
		    double *hits)
{
	uint64_t *lat = calloc(nq, sizeof(*lat));

	for (unsigned i = 0; i < nq; i++) {
		struct waiter w;
		char q[128];
		uint64_t s0;
		/* n distinct channels, spread */
		unsigned start = (unsigned)(rnd() % nch);
		unsigned step = 1 + (unsigned)(rnd() % (nch / n));

		for (unsigned j = 0; j < n; j++)
			qchs[j] = chs[n == nch ? j : (start + j * step) % nch];
		make_query(k, q, sizeof(q));
		sem_init(&w.sem, 0, 0);
		s0 = now_ns();
		if (search_query(sx, q, strlen(q), qchs, n, 20, done, &w)) {
			fprintf(stderr, "search_query failed\n");
			return -1;
		}
		while (sem_wait(&w.sem) && errno == EINTR)
			;
		lat[i] = now_ns() - s0;
		sem_destroy(&w.sem);
		if (w.status) {
			fprintf(stderr, "q %s: status %d\n", q, w.status);
			return -1;
		}
		*hits += w.n;
	}
	qsort(lat, nq, sizeof(*lat), cmp_u64);
	*p50 = (double)lat[nq / 2] / 1e3;
	*p99 = (double)lat[(size_t)(nq * 0.99)] / 1e3;
	free(lat);
	return 0;
}

/* "label  p50 (min-max)  p99 (min-max)  hits" over rounds */
static void print_row(const char *label, double r[2][64], unsigned rounds,
		      double hits)
{
	char c50[64], c99[64];

	qsort(r[0], rounds, sizeof(double), cmp_dbl);
	qsort(r[1], rounds, sizeof(double), cmp_dbl);
	snprintf(c50, sizeof(c50), "%.0f (%.0f-%.0f)", r[0][rounds / 2],
		 r[0][0], r[0][rounds - 1]);
	snprintf(c99, sizeof(c99), "%.0f (%.0f-%.0f)", r[1][rounds / 2],
		 r[1][0], r[1][rounds - 1]);
	printf("  %-12s %26s %26s %10.1f\n", label, c50, c99, hits);
}

static int rm_one(const char *p, const struct stat *st, int flag,
		  struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static uint64_t du(const char *dir)
{
	char p[600];
	const char *names[] = { "index.db", "index.db-wal", "index.db-shm" };
	uint64_t sum = 0;
	struct stat st;

	for (unsigned i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
		if (!stat(p, &st))
			sum += (uint64_t)st.st_size;
	}
	return sum;
}

int main(int argc, char **argv)
{
	unsigned nmsgs = 1000000, nch = 1000, nv = 5000, rounds = 5,
		 nq = 400, set = 50;
	const char *dirarg = NULL, *sets = NULL;
	bool keep = false;
	char dir[512], **chs, *err = NULL;
	search *sx;
	proto_out o;
	uint64_t t0, t_fed, t_idx, feed_ns = 0, *seqs, ts0 = 1700000000000ull;
	const char **qchs;
	double res[K__N][2][64], hitsum[K__N] = { 0 };
	enum { TURN = 256 };
	struct { size_t len; uint8_t b[600]; } *turn;
	unsigned nturn = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--keep")) {
			keep = true;
			continue;
		}
		if (!v) {
			fprintf(stderr, "%s needs a value\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "--msgs")) nmsgs = (unsigned)atoi(v);
		else if (!strcmp(a, "--channels")) nch = (unsigned)atoi(v);
		else if (!strcmp(a, "--vocab")) nv = (unsigned)atoi(v);
		else if (!strcmp(a, "--rounds")) rounds = (unsigned)atoi(v);
		else if (!strcmp(a, "--queries")) nq = (unsigned)atoi(v);
		else if (!strcmp(a, "--set")) set = (unsigned)atoi(v);
		else if (!strcmp(a, "--dir")) dirarg = v;
		else if (!strcmp(a, "--sets")) sets = v;
		else {
			fprintf(stderr, "unknown flag %s\n", a);
			return 2;
		}
	}
	if (rounds > 64 || !rounds || !nch || set > nch || nv < 100 || !nq) {
		fprintf(stderr, "bad flags\n");
		return 2;
	}
	if (dirarg) {
		snprintf(dir, sizeof(dir), "%s", dirarg);
	} else {
		const char *base = getenv("TMPDIR");

		snprintf(dir, sizeof(dir), "%s/search-bench-XXXXXX",
			 base && *base ? base : "/tmp");
		if (!mkdtemp(dir)) {
			perror("mkdtemp");
			return 1;
		}
	}
	make_vocab(nv);
	chs = calloc(nch, sizeof(*chs));
	seqs = calloc(nch, sizeof(*seqs));
	for (unsigned i = 0; i < nch; i++) {
		chs[i] = malloc(16);
		snprintf(chs[i], 16, "ch%05u", i);
	}
	phrases = calloc(4096, sizeof(*phrases));

	if (search_open(&sx, dir, NULL, 1, &err)) {
		fprintf(stderr, "search_open: %s\n", err);
		return 1;
	}
	proto_out_init(&o, 0, 1024);
	turn = malloc(TURN * sizeof(*turn));
	t0 = now_ns();
	for (unsigned i = 0; i < nmsgs; i++) {
		gen(&o, chs, seqs, nch, ts0 + i);
		turn[nturn].len = o.len;
		memcpy(turn[nturn++].b, o.data, o.len);
		if (nturn == TURN || i + 1 == nmsgs) {
			/* what a shard pays in a turn of TURN commits: the
			 * copies, and the push at its end */
			uint64_t f0 = now_ns();

			for (unsigned j = 0; j < nturn; j++)
				search_feed(sx, 0, turn[j].b, turn[j].len);
			search_feed_flush(sx, 0);
			feed_ns += now_ns() - f0;
			nturn = 0;
		}
	}
	t_fed = now_ns();
	search_sync(sx);
	t_idx = now_ns();
	printf("indexed %u messages in %u channels (vocabulary %u, Zipf s=1)\n",
	       nmsgs, nch, nv);
	printf("  feeding shard, all at once: %.0f ns per event (copy + push; "
	       "fresh memory, as the indexer holds every buffer)\n",
	       (double)feed_ns / nmsgs);
	printf("  fed in %.2f s; all indexed %.2f s after the first event "
	       "(%.0f msgs/s)\n", (double)(t_fed - t0) / 1e9,
	       (double)(t_idx - t0) / 1e9, nmsgs / ((double)(t_idx - t0) / 1e9));
	printf("  index on disk: %.1f MiB\n", (double)du(dir) / (1 << 20));

	/* Steady state: STEADY_TURNS turns of 20 events every 2 ms (10,000
	 * events/s), a rate the indexer keeps up with, so its buffers come
	 * back to the shard warm. */
	{
		enum { STEADY_TURNS = 2000, PER = 20 };
		uint64_t ns = 0, ts = ts0 + nmsgs, lag0;

		for (unsigned t = 0; t < STEADY_TURNS; t++) {
			struct timespec d = { 0, 2000000 };
			uint64_t f0;

			for (unsigned j = 0; j < PER; j++) {
				gen(&o, chs, seqs, nch, ts++);
				turn[j].len = o.len;
				memcpy(turn[j].b, o.data, o.len);
			}
			f0 = now_ns();
			for (unsigned j = 0; j < PER; j++)
				search_feed(sx, 0, turn[j].b, turn[j].len);
			search_feed_flush(sx, 0);
			ns += now_ns() - f0;
			nanosleep(&d, NULL);
		}
		lag0 = now_ns();
		search_sync(sx);
		printf("  steady 10,000 events/s for %.0f s: feeding shard %.0f ns "
		       "per event; the last turn indexed %.1f ms after its "
		       "push\n", STEADY_TURNS * 0.002,
		       (double)ns / (STEADY_TURNS * PER),
		       (double)(now_ns() - lag0) / 1e6);
	}
	proto_out_free(&o);
	free(turn);

	qchs = calloc(nch, sizeof(*qchs));
	for (unsigned r = 0; r < rounds; r++)
		for (int k = 0; k < K__N; k++)
			if (run_kind(sx, k, k == K_ALL ? nch : k == K_1CH ? 1 : set,
				     nq, chs, nch, qchs, &res[k][0][r],
				     &res[k][1][r], &hitsum[k]))
				return 1;
	printf("queries: %u rounds x %u per kind, limit 20, restricted to %u "
	       "channels unless said; latency in us, median of rounds "
	       "(min-max)\n", rounds, nq, set);
	printf("  %-12s %26s %26s %10s\n", "kind", "p50", "p99", "hits/q");
	for (int k = 0; k < K__N; k++)
		print_row(kname[k], res[k], rounds, hitsum[k] / ((double)rounds * nq));

	/* --sets: how the channel count shapes word/common/phrase queries */
	if (sets) {
		char *list = strdup(sets), *tok, *save = NULL;
		static const int ks[] = { K_WORD, K_COMMON, K_PHRASE };

		printf("by channel count (%u rounds x %u):\n", rounds, nq);
		printf("  %-7s %4s %26s %26s %10s\n", "kind", "chs", "p50",
		       "p99", "hits/q");
		for (tok = strtok_r(list, ",", &save); tok;
		     tok = strtok_r(NULL, ",", &save)) {
			unsigned n = (unsigned)atoi(tok);

			if (!n || n > nch)
				continue;
			for (unsigned x = 0; x < 3; x++) {
				double hs = 0, rr[2][64];
				char label[32];

				for (unsigned r = 0; r < rounds; r++)
					if (run_kind(sx, ks[x], n, nq, chs, nch, qchs,
						     &rr[0][r], &rr[1][r], &hs))
						return 1;
				snprintf(label, sizeof(label), "%-7s %4u",
					 kname[ks[x]], n);
				print_row(label, rr, rounds,
					  hs / ((double)rounds * nq));
			}
		}
		free(list);
	}
	search_close(sx);
	if (!keep && !dirarg)
		nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	for (unsigned i = 0; i < nch; i++)
		free(chs[i]);
	for (unsigned i = 0; i < nvocab; i++)
		free(vocab[i]);
	free(chs);
	free(seqs);
	free(qchs);
	free(vocab);
	free(cdf);
	free(phrases);
	return 0;
}
