/*
 * tests/cluster/test_work: the worker pool of cluster/work.c (no NATS).
 * Per-key order under many submitters, keys in parallel, work_stop runs
 * everything queued (and what jobs queue meanwhile), and stops when idle.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster/work.h"

#define WAIT_MS 60000 /* generous: a loaded 2-core box, ASan */

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- per-key order under 4 submitters ------------------------------------ */

#define SUBMITTERS 4
#define PER_SUBMITTER 2500 /* 10,000 jobs */
#define KEYS 50

typedef struct ojob {
	struct order *o;
	int key, submitter, seq;
} ojob;

typedef struct klist {
	pthread_mutex_t mu; /* only so that a broken pool is not a data race */
	atomic_int busy;    /* jobs of this key running now: must stay <= 1 */
	int n;
	int sub[SUBMITTERS * PER_SUBMITTER];
	int seq[SUBMITTERS * PER_SUBMITTER];
} klist;

typedef struct order {
	work *w;
	klist keys[KEYS];
	ojob jobs[SUBMITTERS][PER_SUBMITTER];
	atomic_int overlaps, ran, refused;
	pthread_barrier_t go;
} order;

typedef struct submitter {
	order *o;
	int id;
} submitter;

static void order_job(void *arg)
{
	ojob *j = arg;
	klist *k = &j->o->keys[j->key];
	if (atomic_fetch_add(&k->busy, 1) != 0)
		atomic_fetch_add(&j->o->overlaps, 1);
	/* now and then give another job of this key a chance to overlap */
	if (j->seq % 7 == 0)
		sched_yield();
	pthread_mutex_lock(&k->mu);
	k->sub[k->n] = j->submitter;
	k->seq[k->n] = j->seq;
	k->n++;
	pthread_mutex_unlock(&k->mu);
	atomic_fetch_sub(&k->busy, 1);
	atomic_fetch_add(&j->o->ran, 1);
}

static void *submitter_main(void *arg)
{
	submitter *s = arg;
	order *o = s->o;
	unsigned seed = (unsigned)s->id * 7919u + 1;
	pthread_barrier_wait(&o->go);
	for (int i = 0; i < PER_SUBMITTER; i++) {
		ojob *j = &o->jobs[s->id][i];
		j->o = o;
		j->key = (int)(rand_r(&seed) % KEYS);
		j->submitter = s->id;
		j->seq = i;
		/* keys' hashes as a caller might have them: small, dense */
		if (work_submit_key(o->w, (uint64_t)j->key, order_job, j) != 0)
			atomic_fetch_add(&o->refused, 1);
	}
	return NULL;
}

static void t_key_order(void **state)
{
	(void)state;
	order *o = calloc(1, sizeof *o);
	assert_non_null(o);
	for (int k = 0; k < KEYS; k++)
		pthread_mutex_init(&o->keys[k].mu, NULL);
	pthread_barrier_init(&o->go, NULL, SUBMITTERS);
	assert_int_equal(work_start(&o->w, 4), 0);
	pthread_t t[SUBMITTERS];
	submitter s[SUBMITTERS];
	for (int i = 0; i < SUBMITTERS; i++) {
		s[i] = (submitter){.o = o, .id = i};
		assert_int_equal(pthread_create(&t[i], NULL, submitter_main, &s[i]), 0);
	}
	for (int i = 0; i < SUBMITTERS; i++)
		pthread_join(t[i], NULL);
	work_stop(o->w);

	assert_int_equal(atomic_load(&o->refused), 0);
	assert_int_equal(atomic_load(&o->ran), SUBMITTERS * PER_SUBMITTER);
	/* one at a time per key */
	assert_int_equal(atomic_load(&o->overlaps), 0);
	/* each key's list holds exactly its jobs, each submitter's in the
	 * order it submitted them */
	int total = 0, expect[KEYS] = {0};
	for (int i = 0; i < SUBMITTERS; i++)
		for (int q = 0; q < PER_SUBMITTER; q++)
			expect[o->jobs[i][q].key]++;
	for (int k = 0; k < KEYS; k++) {
		klist *l = &o->keys[k];
		int last[SUBMITTERS];
		for (int i = 0; i < SUBMITTERS; i++)
			last[i] = -1;
		assert_int_equal(l->n, expect[k]);
		for (int x = 0; x < l->n; x++) {
			int sub = l->sub[x], seq = l->seq[x];
			assert_true(sub >= 0 && sub < SUBMITTERS);
			assert_int_equal(o->jobs[sub][seq].key, k);
			if (seq <= last[sub])
				fail_msg("key %d: submitter %d's job %d ran after its job %d",
				         k, sub, seq, last[sub]);
			last[sub] = seq;
		}
		total += l->n;
		pthread_mutex_destroy(&l->mu);
	}
	assert_int_equal(total, SUBMITTERS * PER_SUBMITTER);
	pthread_barrier_destroy(&o->go);
	free(o);
}

/* ---- keys in parallel; unkeyed jobs run beside a blocked key -------------- */

typedef struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool other_key_ran, unkeyed_ran, blocker_saw_both;
} gate;

static void gate_wait(gate *g, bool *a, bool *b)
{
	int64_t end = now_ms() + WAIT_MS;
	pthread_mutex_lock(&g->mu);
	while (!(*a && (!b || *b)) && now_ms() < end) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec++;
		pthread_cond_timedwait(&g->cv, &g->mu, &ts);
	}
	pthread_mutex_unlock(&g->mu);
}

static void set_flag(gate *g, bool *f)
{
	pthread_mutex_lock(&g->mu);
	*f = true;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

static void blocker_job(void *arg)
{
	gate *g = arg;
	/* holds key 0's worker until jobs elsewhere ran: they cannot have
	 * been waiting behind this one */
	gate_wait(g, &g->other_key_ran, &g->unkeyed_ran);
	pthread_mutex_lock(&g->mu);
	g->blocker_saw_both = g->other_key_ran && g->unkeyed_ran;
	pthread_mutex_unlock(&g->mu);
}

static void other_key_job(void *arg)
{
	gate *g = arg;
	set_flag(g, &g->other_key_ran);
}

static void unkeyed_job(void *arg)
{
	gate *g = arg;
	set_flag(g, &g->unkeyed_ran);
}

static void t_parallel(void **state)
{
	(void)state;
	gate g = {0};
	pthread_mutex_init(&g.mu, NULL);
	pthread_cond_init(&g.cv, NULL);
	work *w = NULL;
	assert_int_equal(work_start(&w, 2), 0);
	assert_int_equal(work_submit_key(w, 0, blocker_job, &g), 0);
	/* of keys 1..16, some share key 0's worker (they wait) and some do
	 * not (they run now) */
	for (uint64_t k = 1; k <= 16; k++)
		assert_int_equal(work_submit_key(w, k, other_key_job, &g), 0);
	assert_int_equal(work_submit(w, unkeyed_job, &g), 0);
	work_stop(w);
	assert_true(g.blocker_saw_both);
	pthread_cond_destroy(&g.cv);
	pthread_mutex_destroy(&g.mu);
}

/* ---- work_stop runs everything, including what jobs submit meanwhile ----- */

typedef struct drain {
	work *w;
	atomic_int parents, children, refused;
} drain;

static void child_job(void *arg)
{
	drain *d = arg;
	atomic_fetch_add(&d->children, 1);
}

static void parent_job(void *arg)
{
	drain *d = arg;
	int n = atomic_fetch_add(&d->parents, 1);
	if (n % 100 == 0)
		usleep(1000); /* some slow ones: work_stop is well under way */
	/* a follow-up, submitted while work_stop waits: it must run too */
	int rc = n % 2 ? work_submit(d->w, child_job, d)
	               : work_submit_key(d->w, (uint64_t)n, child_job, d);
	if (rc != 0)
		atomic_fetch_add(&d->refused, 1);
}

static void t_stop_drains(void **state)
{
	(void)state;
	drain *d = calloc(1, sizeof *d);
	assert_int_equal(work_start(&d->w, 3), 0);
	for (int i = 0; i < 5000; i++) {
		int rc = i % 3 ? work_submit_key(d->w, (uint64_t)(i % 10), parent_job, d)
		               : work_submit(d->w, parent_job, d);
		assert_int_equal(rc, 0);
	}
	work_stop(d->w); /* at once: most of them are still queued */
	assert_int_equal(atomic_load(&d->parents), 5000);
	assert_int_equal(atomic_load(&d->refused), 0);
	assert_int_equal(atomic_load(&d->children), 5000);
	free(d);
}

/* ---- work_stop with nothing queued returns --------------------------------- */

static void t_stop_empty(void **state)
{
	(void)state;
	work *w = NULL;
	/* never used */
	assert_int_equal(work_start(&w, 4), 0);
	work_stop(w);
	/* used, then idle: every worker asleep when work_stop comes */
	gate g = {0};
	pthread_mutex_init(&g.mu, NULL);
	pthread_cond_init(&g.cv, NULL);
	assert_int_equal(work_start(&w, 4), 0);
	assert_int_equal(work_submit(w, unkeyed_job, &g), 0);
	gate_wait(&g, &g.unkeyed_ran, NULL);
	assert_true(g.unkeyed_ran);
	work_stop(w);
	work_stop(NULL);
	assert_int_equal(work_start(&w, 0), -EINVAL);
	assert_null(w);
	pthread_cond_destroy(&g.cv);
	pthread_mutex_destroy(&g.mu);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_key_order),
		cmocka_unit_test(t_parallel),
		cmocka_unit_test(t_stop_drains),
		cmocka_unit_test(t_stop_empty),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
