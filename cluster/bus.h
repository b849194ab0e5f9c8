/*
 * cluster/bus: parley's link to the cluster bus, NATS with JetStream
 * (libnats 3.4.1, nats-server 2.9). One bus per host (process).
 *
 * What lives on the bus
 *   stream PARLEY_EV   subjects parley.ev.<k>, file storage, cfg->replicas,
 *                      no MaxAge (the permanent log of every channel),
 *                      Duplicates window 2 min, RePublish of every *stored*
 *                      message to parley.fan.<k> (fan-out).
 *   bucket parley_own  KV, History 1, TTL = cfg->lease_ms: leases, key
 *                      own.<k>, value = the owner's host id.
 *   bucket parley_keys KV, History 1, no TTL: ownership records, key
 *                      key.<k>, value = the owning host's id.
 *   parley.rpc.<host>  requests between hosts (core NATS, no JetStream).
 * <k> is the caller's key (a channel id) with every byte outside
 * [A-Za-z0-9_-] written as =XX (upper-case hex), so '.', '*' and '>' never
 * reach a subject. Keys are 1-BUS_KEY_MAX bytes.
 *
 * Fencing is the stream's, not the lease's: every append names the stream
 * sequence of the subject's last message it believes in (expect_sseq; 0 =
 * the subject must be empty), and the server rejects it when another writer
 * appended since. The lease only decides who tries to write.
 *
 * Sequences: sseq is JetStream's stream sequence (global, with gaps per
 * key; only good for expectations and replay positions); pseq is parley's
 * own per-key sequence, carried in the header Parley-Seq.
 *
 * Threads
 *   - Functions marked BLOCKING wait for a server round trip (bounded by the
 *     deadlines in bus_cfg). Call them from a worker thread, never from a
 *     shard loop, and never from a bus callback (a callback that blocks holds
 *     up the deliveries of its subscription).
 *   - Callbacks (bus_subscribe, bus_serve, bus_request) run on libnats'
 *     threads, one thread per subscription or request; calls for one
 *     subscription are serialized and in order. Hand the data to your loop
 *     (a mailbox, rt_post) and return quickly.
 *   - Every other function may be called from any thread.
 *
 * Disconnects: the connection knows all server URLs and reconnects forever
 * (every 100 ms). While it is down, publishes are buffered by libnats and
 * BLOCKING calls time out per attempt and retry until their deadline, then
 * return BUS_UNAVAILABLE. Losing the leader of the stream or of the bucket
 * (a node crash) makes the server answer "no responders" for 3-6 s until a
 * new one is elected: the same retry applies.
 */
#ifndef PARLEY_CLUSTER_BUS_H
#define PARLEY_CLUSTER_BUS_H

#include <stddef.h>
#include <stdint.h>

#define BUS_KEY_MAX 64  /* bytes of a key (channel id) */
#define BUS_HOST_MAX 64 /* bytes of a host id: [A-Za-z0-9_-] */

typedef struct bus bus;
typedef struct bus_sub bus_sub;
typedef struct bus_reply_token bus_reply_token;

typedef enum bus_status {
	BUS_OK = 0,
	BUS_FENCED,         /* append: the subject's last message is not ours */
	BUS_EMPTY,          /* bus_last, bus_lease_owner, bus_key_get:
	                       nothing there */
	BUS_TAKEN,          /* bus_lease_acquire: another host holds it;
	                       bus_key_claim: the record moved first */
	BUS_LOST,           /* bus_lease_renew/release: the lease is not ours */
	BUS_UNAVAILABLE,    /* no leader, no connection: deadline passed */
	BUS_TIMEOUT,        /* bus_request: no reply within the timeout */
	BUS_NO_RESPONDERS,  /* bus_request: nobody serves that host id */
	BUS_INVALID,        /* bad argument (key too long, empty, ...) */
	BUS_ERROR,          /* anything else (details in err / the log) */
} bus_status;

/* A short constant name of a status, e.g. "fenced". */
const char *bus_status_str(bus_status s);

typedef struct bus_cfg {
	const char *urls;     /* "nats://h1:4222,nats://h2:4222,..." */
	const char *host_id;  /* this host: lease value, rpc subject */
	int replicas;         /* of the stream and the bucket (1 or 3) */
	int64_t lease_ms;     /* bucket TTL: a lease not renewed is gone then */
	int attempt_ms;       /* one try's reply wait; 0: 1000 */
	int deadline_ms;      /* retries of one call end then; 0: 10000 */
} bus_cfg;

/* Counters since bus_open; each read atomically (not as a set). */
typedef struct bus_metrics {
	uint64_t appends;    /* bus_append calls that returned BUS_OK */
	uint64_t fenced;     /* ... that returned BUS_FENCED */
	uint64_t retries;    /* extra tries of any BLOCKING call */
	uint64_t reconnects; /* the connection came back after a loss */
	uint64_t disconnects;
} bus_metrics;

/* BLOCKING. Connects to cfg->urls and creates the stream and the buckets, or
 * binds to them when they exist (another host made them first, or at the
 * same time). The existing config wins: a stream made with other replicas
 * is used as it is. Retries until cfg->deadline_ms while the cluster has no
 * meta leader. On failure returns BUS_UNAVAILABLE/BUS_INVALID/BUS_ERROR,
 * *out = NULL and a message in err (cap bytes, NUL-terminated). */
bus_status bus_open(bus **out, const bus_cfg *cfg, char *err, size_t cap);

/* Closes the connection. Subscriptions and served subjects must be gone
 * (bus_unsubscribe; bus_close ends bus_serve itself), and no call may be
 * running. Requests still waiting get no callback. NULL is a no-op.
 * libnats keeps process-wide threads: after the last bus_close, and before
 * exit, call nats_CloseAndWait(ms) once, or exit may abort in them. */
void bus_close(bus *b);

/* Counters (see bus_metrics). */
void bus_get_metrics(bus *b, bus_metrics *m);

/* ---- the log ----------------------------------------------------------- */

/* BLOCKING. Appends data to key's subject with Parley-Seq: pseq and
 * Nats-Msg-Id: <key>/<pseq>, if and only if the subject's last message is
 * still the one at stream seq expect_sseq (0: the subject must be empty).
 *   BUS_OK          stored; *out_sseq = its stream seq (the next
 *                   expectation). Also when an earlier try of this very
 *                   append (same key, pseq, writer) was stored but its reply
 *                   was lost: *out_sseq is then that try's seq.
 *   BUS_FENCED      another writer appended since expect_sseq (or the
 *                   subject is not empty for 0). Nothing was stored;
 *                   subscribers saw nothing. Read bus_last and give up the
 *                   key (or re-read and retry if you still own it).
 *   BUS_UNAVAILABLE no answer by cfg->deadline_ms (no leader, connection
 *                   down): each try waited cfg->attempt_ms and was repeated
 *                   with the same Msg-Id and expectation. The append MAY
 *                   have been stored: retrying it later with the same
 *                   arguments tells (BUS_OK) or fences.
 *   BUS_INVALID / BUS_ERROR. */
bus_status bus_append(bus *b, const char *key, uint64_t pseq,
                      const void *data, size_t len, uint64_t expect_sseq,
                      uint64_t *out_sseq);

/* BLOCKING. The subject's last message: *sseq (stream seq) and *pseq (its
 * Parley-Seq, 0 if it has none). BUS_OK, BUS_EMPTY (never written), or
 * BUS_UNAVAILABLE after the deadline. */
bus_status bus_last(bus *b, const char *key, uint64_t *sseq, uint64_t *pseq);

typedef void (*bus_replay_cb)(void *arg, uint64_t sseq, uint64_t pseq,
                              const void *data, size_t len);

/* BLOCKING. Calls cb, on the calling thread, for every stored message of
 * key with stream seq >= from_sseq, in order, up to the subject's last
 * message when the call began (later appends are not waited for). Uses a
 * JetStream ordered consumer, which the library recreates across
 * reconnects. BUS_OK when all were delivered (or there were none),
 * BUS_UNAVAILABLE if the deadline (cfg->deadline_ms, restarted by every
 * message received) passed first: cb may then have seen a prefix. */
bus_status bus_replay(bus *b, const char *key, uint64_t from_sseq,
                      bus_replay_cb cb, void *arg);

/* ---- leases ------------------------------------------------------------ */

/* BLOCKING. Takes key's lease for this host unless a live one exists.
 *   BUS_OK     ours; *rev = its revision (for renew and release). Also when
 *              the lease already carries our host id (a lost reply, or we
 *              held it already).
 *   BUS_TAKEN  owner_out (cap bytes) = the holder's host id.
 *   BUS_UNAVAILABLE after the deadline (bucket leader gone, no connection).
 * A lease expires cfg->lease_ms after its last write, on the server clock.
 * The owner must stop acting as owner when its own monotonic clock says
 * lease_ms passed since the start of its last successful renew. */
bus_status bus_lease_acquire(bus *b, const char *key, uint64_t *rev,
                             char *owner_out, size_t cap);

/* BLOCKING. Renews the lease held at rev: BUS_OK and *newrev, BUS_LOST
 * (expired and maybe taken: stop acting as owner), BUS_UNAVAILABLE (unknown;
 * keep trying while your clock allows). */
bus_status bus_lease_renew(bus *b, const char *key, uint64_t rev,
                           uint64_t *newrev);

/* BLOCKING. Gives the lease up if it is still the one at rev (a delete
 * that is compare-and-set on rev): BUS_OK, BUS_LOST (not ours: nothing
 * done), BUS_UNAVAILABLE (it will expire by itself). */
bus_status bus_lease_release(bus *b, const char *key, uint64_t rev);

/* BLOCKING. The current holder: BUS_OK and owner_out, BUS_EMPTY (none),
 * BUS_UNAVAILABLE. */
bus_status bus_lease_owner(bus *b, const char *key, char *owner_out,
                           size_t cap);

/* BLOCKING. Every live lease whose key starts with prefix: cb(arg, key,
 * owner) for each (key decoded as the caller gave it), in no particular
 * order. BUS_OK, BUS_UNAVAILABLE. */
typedef void (*bus_lease_cb)(void *arg, const char *key, const char *owner);
bus_status bus_lease_list(bus *b, const char *prefix, bus_lease_cb cb,
                          void *arg);

/* ---- ownership records ---------------------------------------------------- */

/* Who owns a key now (docs/cluster.md, "Ownership"): a record per key in
 * parley_keys, without TTL, moved only by compare-and-set on its revision.
 * The record alone does not make an owner: its host's lease must live too
 * (bus_lease_owner("host:<id>")); a record naming a dead host is taken over
 * with bus_key_claim at the revision read. Revisions are the bucket's
 * stream seqs: unique, growing, never 0. */

/* BLOCKING. The key's record: BUS_OK with owner_out (cap bytes) and *rev,
 * BUS_EMPTY (never claimed), BUS_UNAVAILABLE after the deadline. */
bus_status bus_key_get(bus *b, const char *key, char *owner_out, size_t cap,
                       uint64_t *rev);

/* BLOCKING. Sets the key's record to this host's id if its revision is
 * still expect_rev (0: the record must not exist yet).
 *   BUS_OK          ours; *new_rev = the record's revision now (the next
 *                   expectation). Also when an earlier try of this very
 *                   call landed but its reply was lost (the record then
 *                   names us).
 *   BUS_TAKEN       the record moved first (or exists, for 0): owner_out
 *                   = its owner now, *new_rev = its revision now, to claim
 *                   from if that owner's host lease is gone. A record that
 *                   names this host but was not written by this call is
 *                   TAKEN as well, so two claims from one revision never
 *                   both succeed. (owner_out "" and *new_rev 0: deleted.)
 *   BUS_UNAVAILABLE no answer by the deadline: the claim MAY have landed;
 *                   bus_key_get tells.
 *   BUS_INVALID / BUS_ERROR. */
bus_status bus_key_claim(bus *b, const char *key, uint64_t expect_rev,
                         uint64_t *new_rev, char *owner_out, size_t cap);

/* BLOCKING. The record key says want unless it says something already
 * (the first host to settle it wins, for good): got (cap bytes) = what it
 * says now. Values up to BUS_HOST_MAX bytes. BUS_OK, BUS_INVALID,
 * BUS_UNAVAILABLE, BUS_ERROR. */
bus_status bus_key_settle(bus *b, const char *key, const char *want,
                          char *got, size_t cap);

/* ---- fan-out ----------------------------------------------------------- */

/* Called for every message stored on key, once, in stream order, as the
 * stream republishes it: sseq its stream seq, last_sseq the stream seq of
 * the subject's previous message (0 for the first), pseq its Parley-Seq.
 * Fenced (rejected) appends never arrive.
 * Gaps: delivery is at most once (core NATS): a message published while
 * this host was disconnected, or before the subscription was registered, is
 * not delivered. When last_sseq is not the sseq the caller saw last, it
 * missed messages in between and must fetch them with bus_replay from its
 * last seen sseq + 1 (on a worker thread). After a reconnect, the caller
 * should check with bus_last as well: a lost tail shows no gap until the
 * next message comes. */
typedef void (*bus_fan_cb)(void *arg, uint64_t sseq, uint64_t last_sseq,
                           uint64_t pseq, const void *data, size_t len);

/* Not blocking (registers with the server in the background; use
 * bus_last/bus_replay after it for what was stored before). Calls cb on a
 * library thread of its own. BUS_OK and *sub, BUS_INVALID, BUS_ERROR. */
bus_status bus_subscribe(bus *b, const char *key, bus_fan_cb cb, void *arg,
                         bus_sub **sub);

/* Stops the subscription and frees it. When it returns, cb is not running
 * and will not be called again. Do not call it from cb. NULL is a no-op. */
void bus_unsubscribe(bus_sub *sub);

/* ---- requests between hosts -------------------------------------------- */

/* A request for this host. tok must be passed to bus_reply exactly once,
 * from any thread, now or later; until then it owns a little memory. A
 * requester that gave up already simply never sees the reply. */
typedef void (*bus_serve_cb)(void *arg, const void *data, size_t len,
                             bus_reply_token *tok);

/* Not blocking. Answers requests sent to host_id (normally cfg->host_id):
 * handler runs on a library thread, one request after the other. One
 * bus_serve per bus; it lasts until bus_close. BUS_OK, BUS_INVALID
 * (bad host id, or serving already), BUS_ERROR. */
bus_status bus_serve(bus *b, const char *host_id, bus_serve_cb handler,
                     void *arg);

/* Not blocking. Sends the reply and frees tok. BUS_OK, or BUS_ERROR if the
 * connection is closed (tok is freed all the same). */
bus_status bus_reply(bus *b, bus_reply_token *tok, const void *data,
                     size_t len);

/* st BUS_OK with the reply (data valid during the call only), BUS_TIMEOUT
 * (no reply within timeout_ms, also when the connection was down), or
 * BUS_NO_RESPONDERS (nobody serves that host: comes back at once). */
typedef void (*bus_request_cb)(void *arg, bus_status st, const void *data,
                               size_t len);

/* Not blocking. Sends data to host_id's bus_serve; cb is called exactly
 * once, on a library thread, unless this returns an error (then never) or
 * the bus is closed first. BUS_OK, BUS_INVALID, BUS_ERROR. */
bus_status bus_request(bus *b, const char *host_id, const void *data,
                       size_t len, int timeout_ms, bus_request_cb cb,
                       void *arg);


/* Not blocking (the consumer is made in the background). Calls cb, on a
 * library thread of its own, for every message stored on key from stream
 * seq from_sseq on (0: from the first), one after the other, in stream
 * order, and then for every message appended later, for as long as the
 * subscription lasts: an ordered consumer, which the library recreates from
 * where it was after a reconnect or a missed message, so nothing is skipped
 * and nothing comes twice. last_sseq is 0. Stop it with bus_unsubscribe.
 * BUS_OK and *sub, BUS_INVALID, BUS_UNAVAILABLE (the deadline passed while
 * creating it), BUS_ERROR. */
bus_status bus_follow(bus *b, const char *key, uint64_t from_sseq,
                      bus_fan_cb cb, void *arg, bus_sub **sub);

/* ---- one-way messages between hosts ------------------------------------ */

typedef void (*bus_msg_cb)(void *arg, const void *data, size_t len);

/* Not blocking. Calls cb, on a library thread of its own, one after the
 * other, for every bus_send to host_id (NULL: every bus_send to all hosts).
 * At most once: a message sent while either side is disconnected is lost.
 * Messages from one sender arrive in the order it sent them. Stop it with
 * bus_unsubscribe. BUS_OK and *sub, BUS_INVALID, BUS_ERROR. */
bus_status bus_listen(bus *b, const char *host_id, bus_msg_cb cb, void *arg,
                      bus_sub **sub);
/* Not blocking: queues data for host_id's bus_listen (NULL: every host's,
 * this one's too). BUS_OK (queued, not delivered: at most once),
 * BUS_INVALID, BUS_ERROR (the connection is closed). */
bus_status bus_send(bus *b, const char *host_id, const void *data, size_t len);

#endif
