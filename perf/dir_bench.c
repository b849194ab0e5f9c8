/*
 * dir_bench: users.search over the wire in a workspace of many users.
 *
 *   dir_bench --parleyd PATH [--users N] [--queries Q] [--rounds R]
 *             [--shards S] [--port P] [--dir DIR] [--q Q] [--keep]
 *
 * Writes N users (default 100,000) of one workspace straight into a fresh
 * data directory, as the directory keeps them ('W': display name), in
 * synced batches of 10,000 through storage/ (the same records a hello
 * writes; making them by 100,000 hellos would measure hello, not search),
 * then starts parleyd (PATH) on it, connects one client and says hello.
 * Ids look like "kim.alice.4821", names like "Alice Kim Ortega" (first
 * names, last names and a second last name drawn from small made-up
 * lists with a fixed seed, so many users share a word, as real names do).
 *
 * The hello loads the workspace's directory from storage; the time to
 * the first users.search's answer is reported apart. Then R rounds (default 3) of Q queries (default
 * 2,000), one at a time (send, wait for the answer), limit 20, timed at
 * the client: a prefix of 1-3 bytes of an id, 2-6 bytes of a first name,
 * 2-6 bytes of a last name (any word), or two random letters, in random
 * case (--q Q: every query is Q, for the worst cases). Each round prints p50, p99 and max; the summary gives the median
 * and the min-max of the rounds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "actors/actors.h"
#include "proto/client.h"
#include "storage/store.h"

static const char *const firsts[] = {
	"Alice", "Bruno", "Chiara", "Dmitri", "Elena", "Farah", "Goran",
	"Hana", "Ivan", "Jun", "Kofi", "Lena", "Mateo", "Nadia", "Omar",
	"Priya", "Quentin", "Rosa", "Sven", "Tamar", "Umar", "Vera", "Wei",
	"Ximena", "Yusuf", "Zara", "Anton", "Beatriz", "Carlos", "Dana",
	"Emil", "Fatima", "Gustav", "Helga", "Ines", "Jonas", "Kaito",
	"Leila", "Marek", "Nora", "Oskar", "Paula", "Rafael", "Sara", "Tomas",
	"Ulla", "Viktor", "Wanda", "Yara", "Zoltan",
};
static const char *const lasts[] = {
	"Kim", "Ortega", "Novak", "Silva", "Tanaka", "Weber", "Haddad",
	"Kowalski", "Rossi", "Nguyen", "Okafor", "Larsen", "Petrov", "Moreau",
	"Singh", "Cohen", "Horvat", "Jensen", "Murphy", "Fischer", "Dubois",
	"Ivanova", "Lopez", "Sato", "Yilmaz", "Berg", "Costa", "Eriksen",
	"Garcia", "Hoffmann", "Ito", "Kaya", "Lindqvist", "Mendes", "Nakamura",
	"Olsen", "Popescu", "Quinn", "Reyes", "Schmidt", "Torres", "Varga",
	"Wagner", "Xu", "Young", "Zhang", "Abara", "Brandt", "Chen", "Diaz",
};
#define NF (sizeof(firsts) / sizeof(firsts[0]))
#define NL (sizeof(lasts) / sizeof(lasts[0]))

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void lower(char *d, const char *s)
{
	for (; *s; s++)
		*d++ = (*s >= 'A' && *s <= 'Z') ? (char)(*s + 32) : *s;
	*d = 0;
}

static sem_t done_sem;
static int done_status;

static void on_done(void *ctx, int status)
{
	(void)ctx;
	done_status = status;
	sem_post(&done_sem);
}

static int seed(const char *dir, unsigned users)
{
	store *st;
	char *err = NULL, id[128], name[129], f[32], l[32], db[300];

	snprintf(db, sizeof(db), "%s/db", dir); /* where parleyd keeps it */
	if (store_open(&st, db, 8, 1, &err)) {
		fprintf(stderr, "dir_bench: %s\n", err);
		return -1;
	}
	sem_init(&done_sem, 0, 0);
	for (unsigned i = 0; i < users;) {
		store_batch *b = store_batch_new(st);

		for (unsigned k = 0; k < 10000 && i < users; k++, i++) {
			const char *fi = firsts[rnd() % NF], *la = lasts[rnd() % NL],
				   *l2 = lasts[rnd() % NL];

			lower(f, fi);
			lower(l, la);
			snprintf(id, sizeof(id), "%s.%s.%u", l, f, i);
			snprintf(name, sizeof(name), "%s %s %s", fi, la, l2);
			store_put_dir_name(b, "bench", id, name, strlen(name));
		}
		store_commit(st, 0, b, on_done, NULL);
		sem_wait(&done_sem);
		if (done_status) {
			fprintf(stderr, "dir_bench: commit failed\n");
			store_close(st);
			return -1;
		}
	}
	store_close(st);
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static void make_query(char *q)
{
	char w[64];
	unsigned n;

	switch (rnd() % 4) {
	case 0: /* an id's prefix: a last name's first letters */
		lower(w, lasts[rnd() % NL]);
		n = 1 + (unsigned)(rnd() % 3);
		break;
	case 1:
		snprintf(w, sizeof(w), "%s", firsts[rnd() % NF]);
		n = 2 + (unsigned)(rnd() % 5);
		break;
	case 2:
		snprintf(w, sizeof(w), "%s", lasts[rnd() % NL]);
		n = 2 + (unsigned)(rnd() % 5);
		break;
	default:
		w[0] = (char)('a' + rnd() % 26);
		w[1] = (char)('a' + rnd() % 26);
		w[2] = 0;
		n = 2;
	}
	if (n > strlen(w))
		n = (unsigned)strlen(w);
	memcpy(q, w, n);
	q[n] = 0;
	for (unsigned i = 0; i < n; i++)
		if (rnd() % 2 && q[i] >= 'a' && q[i] <= 'z')
			q[i] = (char)(q[i] - 32);
}

/* one users.search; its latency in us, 0 on failure; *hits */
static uint64_t one(pc_conn *c, const char *q, uint64_t rid, unsigned *hits)
{
	proto_out o;
	proto_doc res;
	uint64_t t0 = now_us(), dt;
	const msgpack_object *u;
	bool ok = false;

	proto_out_init(&o, 0, 128);
	proto_enc_req(&o, "users.search", rid, 2);
	proto_pk_cstr(&o.pk, "q");
	proto_pk_cstr(&o.pk, q);
	proto_pk_cstr(&o.pk, "limit");
	msgpack_pack_uint64(&o.pk, 20);
	if (pc_request(c, &o, rid, &res, 10000) != 1) {
		proto_out_free(&o);
		return 0;
	}
	dt = now_us() - t0;
	proto_out_free(&o);
	proto_get_bool(&res.root, "ok", &ok);
	u = proto_get(&res.root, "users");
	*hits = u && u->type == MSGPACK_OBJECT_ARRAY ? u->via.array.size : 0;
	proto_doc_free(&res);
	return ok ? dt : 0;
}

int main(int argc, char **argv)
{
	const char *parleyd = NULL;
	unsigned users = 100000, queries = 2000, rounds = 3, shards = 2;
	int port = 20000 + getpid() % 20000;
	char dir[256] = "", path[512], listen[64], shards_s[16], *tok;
	bool keep = false;
	const char *fixed_q = NULL;
	uint8_t key[32];
	pid_t pid;
	pc_conn *c = NULL;
	uint64_t rid = 1, p50[16], p99[16], mx[16];
	unsigned hits;
	int fd;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--parleyd") && i + 1 < argc)
			parleyd = argv[++i];
		else if (!strcmp(argv[i], "--users") && i + 1 < argc)
			users = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--queries") && i + 1 < argc)
			queries = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--shards") && i + 1 < argc)
			shards = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--port") && i + 1 < argc)
			port = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			snprintf(dir, sizeof(dir), "%s", argv[++i]);
		else if (!strcmp(argv[i], "--q") && i + 1 < argc)
			fixed_q = argv[++i];
		else if (!strcmp(argv[i], "--keep"))
			keep = true;
		else {
			fprintf(stderr, "usage: dir_bench --parleyd PATH "
					"[--users N] [--queries Q] [--rounds R] "
					"[--shards S] [--port P] [--dir DIR] "
					"[--q Q] [--keep]\n");
			return 2;
		}
	}
	if (!parleyd || !queries || !rounds || rounds > 16) {
		fprintf(stderr, "dir_bench: --parleyd PATH needed; rounds "
				"1-16\n");
		return 2;
	}
	if (!dir[0])
		snprintf(dir, sizeof(dir), "/tmp/dir_bench.%d", (int)getpid());
	mkdir(dir, 0700);

	uint64_t t0 = now_us();
	if (seed(dir, users))
		return 1;
	printf("seeded %u users in %.1f s\n", users,
	       (double)(now_us() - t0) / 1e6);

	/* a secret of our own, so that we can mint the token */
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)('a' + rnd() % 26);
	snprintf(path, sizeof(path), "%s/bench.secret", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, key, sizeof(key)) != (ssize_t)sizeof(key))
		return 1;
	close(fd);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(shards_s, sizeof(shards_s), "%u", shards);
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		execl(parleyd, parleyd, "--listen", listen, "--data", dir,
		      "--jwt-secret-file", path, "--shards", shards_s,
		      "--no-search", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 300 && !c; i++) {
		c = pc_connect("127.0.0.1", port, NULL, "parley.v1", 2000);
		if (!c)
			usleep(50 * 1000);
	}
	if (!c) {
		fprintf(stderr, "dir_bench: parleyd did not come up\n");
		kill(pid, SIGKILL);
		return 1;
	}
	t0 = now_us();
	tok = auth_mint(key, sizeof(key), "bench.user", "bench",
			(int64_t)time(NULL) + 3600, "Bench User", NULL);
	{
		proto_doc res;

		if (pc_hello(c, tok, NULL, NULL, 0, &res, 10000) != 1) {
			fprintf(stderr, "dir_bench: hello failed\n");
			kill(pid, SIGKILL);
			return 1;
		}
		proto_doc_free(&res);
	}
	free(tok);

	/* hello makes the directory load; the first query waits for it */
	if (!one(c, "a", rid++, &hits))
		return 1;
	printf("hello + first query (the directory loads): %.1f ms\n",
	       (double)(now_us() - t0) / 1000);

	uint64_t *lat = malloc(queries * sizeof(*lat));
	uint64_t tot_hits = 0;
	for (unsigned r = 0; r < rounds; r++) {
		for (unsigned i = 0; i < queries; i++) {
			char q[16];

			if (fixed_q)
				snprintf(q, sizeof(q), "%s", fixed_q);
			else
				make_query(q);
			lat[i] = one(c, q, rid++, &hits);
			tot_hits += hits;
			if (!lat[i]) {
				fprintf(stderr, "dir_bench: %s failed\n", q);
				kill(pid, SIGKILL);
				return 1;
			}
		}
		qsort(lat, queries, sizeof(*lat), cmp_u64);
		p50[r] = lat[queries / 2];
		p99[r] = lat[(size_t)queries * 99 / 100];
		mx[r] = lat[queries - 1];
		printf("round %u: %u queries  p50 %.3f ms  p99 %.3f ms  max "
		       "%.3f ms\n", r + 1, queries, (double)p50[r] / 1000,
		       (double)p99[r] / 1000, (double)mx[r] / 1000);
	}
	printf("mean hits per query: %.1f (limit 20)\n",
	       (double)tot_hits / ((double)queries * rounds));
	{
		uint64_t a[16], b[16], m[16];

		memcpy(a, p50, rounds * sizeof(*a));
		memcpy(b, p99, rounds * sizeof(*b));
		memcpy(m, mx, rounds * sizeof(*m));
		qsort(a, rounds, sizeof(*a), cmp_u64);
		qsort(b, rounds, sizeof(*b), cmp_u64);
		qsort(m, rounds, sizeof(*m), cmp_u64);
		printf("users.search at %u users, %u rounds: p50 %.3f ms "
		       "(%.3f-%.3f)  p99 %.3f ms (%.3f-%.3f)  max %.3f ms "
		       "(%.3f-%.3f)\n", users, rounds,
		       (double)a[rounds / 2] / 1000, (double)a[0] / 1000,
		       (double)a[rounds - 1] / 1000,
		       (double)b[rounds / 2] / 1000, (double)b[0] / 1000,
		       (double)b[rounds - 1] / 1000,
		       (double)m[rounds / 2] / 1000, (double)m[0] / 1000,
		       (double)m[rounds - 1] / 1000);
	}
	{
		char st[256], line[256];
		FILE *f;

		snprintf(st, sizeof(st), "/proc/%d/status", (int)pid);
		f = fopen(st, "r");
		while (f && fgets(line, sizeof(line), f))
			if (!strncmp(line, "VmRSS:", 6))
				printf("parleyd %s", line);
		if (f)
			fclose(f);
	}
	free(lat);
	pc_close(c);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	if (!keep) {
		char cmd[512];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd))
			fprintf(stderr, "dir_bench: could not remove %s\n",
				dir);
	}
	return 0;
}
