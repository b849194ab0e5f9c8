/*
 * cluster/work.c: see work.h. One mutex guards every queue and counter; each
 * worker sleeps on a condvar of its own, so a keyed job wakes exactly the
 * worker that must run it and an unkeyed one wakes one idle worker (busy
 * workers look at the shared queue before they sleep).
 */
#include "cluster/work.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct job {
	struct job *next;
	work_fn fn;
	void *arg;
} job;

typedef struct jobq {
	job *head, *tail;
} jobq;

typedef struct worker {
	work *w;
	pthread_t tid;
	pthread_cond_t cv;
	/* under w->mu */
	jobq own;           /* keyed jobs of the keys that map here */
	bool idle;          /* waiting on cv, not yet woken */
	bool shared_first;  /* alternates: own queue first, then shared */
} worker;

struct work {
	pthread_mutex_t mu;
	/* under mu */
	jobq shared;        /* work_submit: any worker */
	size_t queued;      /* jobs in every queue */
	size_t running;     /* jobs being run */
	bool stopping;      /* work_stop was called */
	unsigned n;
	worker *ws;
};

static void q_push(jobq *q, job *j)
{
	j->next = NULL;
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
}

static job *q_pop(jobq *q)
{
	job *j = q->head;
	if (j) {
		q->head = j->next;
		if (!q->head)
			q->tail = NULL;
	}
	return j;
}

/* The pool is done once stopping and nothing is queued or running: only a
 * job can submit more while stopping, so from then on nothing ever runs. */
static bool drained(const work *w)
{
	return w->stopping && w->queued == 0 && w->running == 0;
}

static void wake_all(work *w)
{
	for (unsigned i = 0; i < w->n; i++) {
		w->ws[i].idle = false;
		pthread_cond_signal(&w->ws[i].cv);
	}
}

static void *worker_main(void *arg)
{
	worker *me = arg;
	work *w = me->w;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		job *j;
		if (me->shared_first) {
			j = q_pop(&w->shared);
			if (!j)
				j = q_pop(&me->own);
		} else {
			j = q_pop(&me->own);
			if (!j)
				j = q_pop(&w->shared);
		}
		me->shared_first = !me->shared_first;
		if (j) {
			work_fn fn = j->fn;
			void *jarg = j->arg;
			w->queued--;
			w->running++;
			pthread_mutex_unlock(&w->mu);
			free(j);
			fn(jarg);
			pthread_mutex_lock(&w->mu);
			w->running--;
			if (drained(w))
				wake_all(w); /* the others may be asleep: let them exit */
			continue;
		}
		if (drained(w))
			break;
		/* Nothing here; other workers' queues may still hold jobs (or
		 * running jobs may submit more): wait for a wake-up. */
		me->idle = true;
		pthread_cond_wait(&me->cv, &w->mu);
		me->idle = false;
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

int work_start(work **out, unsigned nthreads)
{
	*out = NULL;
	if (nthreads < 1 || nthreads > WORK_MAX_THREADS)
		return -EINVAL;
	work *w = calloc(1, sizeof *w);
	if (!w)
		return -ENOMEM;
	w->ws = calloc(nthreads, sizeof *w->ws);
	if (!w->ws) {
		free(w);
		return -ENOMEM;
	}
	pthread_mutex_init(&w->mu, NULL);
	for (unsigned i = 0; i < nthreads; i++) {
		w->ws[i].w = w;
		pthread_cond_init(&w->ws[i].cv, NULL);
	}
	unsigned started = 0;
	int rc = 0;
	/* n is read by workers under mu (wake_all): set it before they run */
	w->n = nthreads;
	for (; started < nthreads; started++) {
		rc = pthread_create(&w->ws[started].tid, NULL, worker_main,
		                    &w->ws[started]);
		if (rc)
			break;
	}
	if (rc) {
		/* nothing queued: the started workers exit at once */
		pthread_mutex_lock(&w->mu);
		w->stopping = true;
		w->n = started;
		wake_all(w);
		pthread_mutex_unlock(&w->mu);
		for (unsigned i = 0; i < started; i++)
			pthread_join(w->ws[i].tid, NULL);
		for (unsigned i = 0; i < nthreads; i++)
			pthread_cond_destroy(&w->ws[i].cv);
		pthread_mutex_destroy(&w->mu);
		free(w->ws);
		free(w);
		return -rc;
	}
	*out = w;
	return 0;
}

/* splitmix64's finalizer: every bit of h moves the result */
static uint64_t mix(uint64_t h)
{
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebULL;
	h ^= h >> 31;
	return h;
}

/* Queues j on own (a worker's queue) or, when own is NULL, on the shared
 * queue, and wakes a worker that will run it. */
static int submit(work *w, worker *own, work_fn fn, void *arg)
{
	job *j = malloc(sizeof *j);
	if (!j)
		return -ENOMEM;
	j->fn = fn;
	j->arg = arg;
	pthread_mutex_lock(&w->mu);
	if (drained(w)) {
		pthread_mutex_unlock(&w->mu);
		free(j);
		return -ESHUTDOWN;
	}
	w->queued++;
	if (own) {
		q_push(&own->own, j);
		own->idle = false;
		pthread_cond_signal(&own->cv);
	} else {
		q_push(&w->shared, j);
		/* one idle worker is enough; busy ones look before sleeping.
		 * Clearing idle makes the next submit wake another one. */
		for (unsigned i = 0; i < w->n; i++) {
			if (w->ws[i].idle) {
				w->ws[i].idle = false;
				pthread_cond_signal(&w->ws[i].cv);
				break;
			}
		}
	}
	pthread_mutex_unlock(&w->mu);
	return 0;
}

int work_submit(work *w, work_fn fn, void *arg)
{
	assert(fn);
	return submit(w, NULL, fn, arg);
}

int work_submit_key(work *w, uint64_t key_hash, work_fn fn, void *arg)
{
	assert(fn);
	return submit(w, &w->ws[mix(key_hash) % w->n], fn, arg);
}

void work_stop(work *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	for (unsigned i = 0; i < w->n; i++)
		assert(!pthread_equal(pthread_self(), w->ws[i].tid)); /* not from a job */
	w->stopping = true;
	wake_all(w); /* idle workers with nothing left must see drained() */
	pthread_mutex_unlock(&w->mu);
	for (unsigned i = 0; i < w->n; i++)
		pthread_join(w->ws[i].tid, NULL);
	assert(!w->shared.head && w->queued == 0);
	for (unsigned i = 0; i < w->n; i++)
		pthread_cond_destroy(&w->ws[i].cv);
	pthread_mutex_destroy(&w->mu);
	free(w->ws);
	free(w);
}
