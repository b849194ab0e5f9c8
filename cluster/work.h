/*
 * cluster/work: a small pool of worker threads for the bus's BLOCKING calls
 * (cluster/bus.h), so that no shard ever waits for NATS. A shard submits a
 * job (a function and its argument) and goes on; the job runs on a worker
 * thread, and hands its result back to the shard by itself (rt_post), as
 * the sync threads' commits do.
 *
 * Two kinds of jobs:
 *   - work_submit: runs on any worker, in parallel with anything else;
 *   - work_submit_key: jobs with the same key_hash run one at a time, in the
 *     order they were submitted (the order their work_submit_key calls took
 *     the pool's lock: for one submitting thread, its program order), while
 *     jobs of other keys run in parallel. One channel's appends stay in
 *     order and never overlap; different channels' appends go side by side.
 *
 * How: each worker has a FIFO queue of its own, and a keyed job goes to the
 * queue of worker mix(key_hash) % nthreads. One thread runs one queue in
 * order, so a key's jobs are serialized and ordered; that is all the
 * promise needs, with no per-key state to create, look up or free. The
 * price: two keys on the same worker wait for each other (a job stuck on a
 * bus deadline holds up the other keys of its worker, never the other
 * workers). Unkeyed jobs sit in one shared queue that every worker takes
 * from, alternating with its own queue so neither starves. key_hash is
 * mixed first, so a hash that also picks the shard (hash % nshards) still
 * spreads one shard's keys over all workers.
 *
 * Queues are unbounded linked lists under one mutex: submitting never
 * waits for a job, only for the lock (held for a few instructions).
 *
 * Threads: work_submit and work_submit_key may be called from any thread,
 * jobs included. work_start and work_stop from one owning thread, never
 * from a job.
 */
#ifndef PARLEY_CLUSTER_WORK_H
#define PARLEY_CLUSTER_WORK_H

#include <stdint.h>

#define WORK_MAX_THREADS 256

typedef struct work work;
typedef void (*work_fn)(void *arg);

/* Starts nthreads (1..WORK_MAX_THREADS) workers. 0 and *out, or -EINVAL,
 * -ENOMEM, or pthread_create's error negated (nothing left running). */
int work_start(work **out, unsigned nthreads);

/* Queues fn(arg) for any worker. 0: it will run, exactly once, before
 * work_stop returns. -ENOMEM, or -ESHUTDOWN when work_stop has drained the
 * pool already: fn will not run and arg is still the caller's. */
int work_submit(work *w, work_fn fn, void *arg);

/* Queues fn(arg) behind every job already submitted with the same
 * key_hash: it starts only after they all returned. Returns as
 * work_submit. */
int work_submit_key(work *w, uint64_t key_hash, work_fn fn, void *arg);

/* Finishes everything, then stops: every job submitted before, and every
 * job submitted (by jobs or other threads) while queued or running jobs
 * remain, runs to its end; then the workers exit and are joined, and w is
 * freed. Once no job is queued or running, submissions get -ESHUTDOWN; a
 * job that resubmits itself forever keeps work_stop waiting. Waits as long
 * as the jobs take (bus calls are bounded by their deadlines). Not from a
 * job. NULL is a no-op. No call on w may follow (or race with its end). */
void work_stop(work *w);

#endif
