/*
 * cluster/bus.c: see bus.h. The facts this leans on (error codes, the order
 * of JetStream's checks, KV TTL in nanoseconds) were measured against
 * nats-server 2.9.10 and libnats 3.4.1.
 */
#include "cluster/bus.h"

#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/log.h"

#define STREAM "PARLEY_EV"
#define BUCKET "parley_own"
#define KEYS_BUCKET "parley_keys"
#define EV_PREFIX "parley.ev."
#define FAN_PREFIX "parley.fan."
#define RPC_PREFIX "parley.rpc."
#define MSG_PREFIX "parley.msg."
#define KV_PREFIX "$KV." BUCKET "."
#define ENC_MAX (3 * BUS_KEY_MAX + 1)
#define SUBJ_MAX (ENC_MAX + 64)
#define WRONG_LAST_SEQ 10071 /* JSStreamWrongLastSequenceErr */
#define DUP_WINDOW_NS (120LL * 1000 * 1000 * 1000)

/* Something a libnats thread will say once (a connection closed, a
 * subscription completed), waited for by another thread. */
typedef struct latch {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
} latch;

static void latch_init(latch *l)
{
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, NULL);
	l->done = false;
}

static void latch_fini(latch *l)
{
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mu);
}

/* A libnats callback (closure: the latch): it happened. */
static void latch_open(void *closure)
{
	latch *l = closure;
	pthread_mutex_lock(&l->mu);
	l->done = true;
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
}

static void latch_wait(latch *l)
{
	pthread_mutex_lock(&l->mu);
	while (!l->done)
		pthread_cond_wait(&l->cv, &l->mu);
	pthread_mutex_unlock(&l->mu);
}

struct bus {
	natsConnection *nc;
	jsCtx *js;
	kvStore *kv;   /* parley_own: leases */
	kvStore *keys; /* parley_keys: ownership records */
	char host[BUS_HOST_MAX + 1];
	int attempt_ms;
	int deadline_ms;
	natsSubscription *serve_sub;
	bus_serve_cb serve_cb;
	void *serve_arg;
	_Atomic uint64_t appends, fenced, retries, reconnects, disconnects;
	/* the connection's callbacks use b: bus_close waits for the last */
	latch closed;
};

struct bus_sub {
	natsSubscription *ns;
	bus_fan_cb cb;
	bus_msg_cb mcb;
	void *arg;
};

struct bus_reply_token {
	char *reply;
};

typedef struct req {
	bus_request_cb cb;
	void *arg;
	natsSubscription *ns;
	atomic_bool done;
} req;

const char *bus_status_str(bus_status s)
{
	switch (s) {
	case BUS_OK: return "ok";
	case BUS_FENCED: return "fenced";
	case BUS_EMPTY: return "empty";
	case BUS_TAKEN: return "taken";
	case BUS_LOST: return "lost";
	case BUS_UNAVAILABLE: return "unavailable";
	case BUS_TIMEOUT: return "timeout";
	case BUS_NO_RESPONDERS: return "no_responders";
	case BUS_INVALID: return "invalid";
	case BUS_ERROR: return "error";
	}
	return "?";
}

/* ---- helpers ------------------------------------------------------------ */

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Errors worth another try: nobody answered (no leader, no connection). */
static bool transient(natsStatus s)
{
	return s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS ||
	       s == NATS_CONNECTION_DISCONNECTED || s == NATS_NO_SERVER ||
	       s == NATS_NOT_YET_CONNECTED;
}

/* Sleeps before the next try: short, growing, within the deadline. */
static void backoff(bus *b, int try, int64_t deadline)
{
	int64_t ms = 25LL << (try < 3 ? try : 3); /* 25, 50, 100, 200 */
	int64_t left = deadline - now_ms();
	if (ms > left)
		ms = left;
	if (ms > 0)
		nats_Sleep(ms);
	atomic_fetch_add(&b->retries, 1);
}

/* key -> subject token: [A-Za-z0-9_-] as is, any other byte =XX. */
static bool enc_key(const char *key, char out[ENC_MAX])
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = key ? strlen(key) : 0, o = 0;
	if (n == 0 || n > BUS_KEY_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)key[i];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '_' || c == '-') {
			out[o++] = (char)c;
		} else {
			out[o++] = '=';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return true;
}

static bool valid_host(const char *h)
{
	size_t n = h ? strlen(h) : 0;
	if (n == 0 || n > BUS_HOST_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = h[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static uint64_t hdr_u64(natsMsg *m, const char *name)
{
	const char *v = NULL;
	if (natsMsgHeader_Get(m, name, &v) != NATS_OK || !v)
		return 0;
	return strtoull(v, NULL, 10);
}

static void seterr(char *err, size_t cap, const char *fmt, ...)
{
	if (!err || cap == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, cap, fmt, ap);
	va_end(ap);
}

/* ---- connection --------------------------------------------------------- */

static void on_disconnected(natsConnection *nc, void *closure)
{
	bus *b = closure;
	atomic_fetch_add(&b->disconnects, 1);
	plog(PL_INFO, "bus", "disconnected from NATS");
}

static void on_reconnected(natsConnection *nc, void *closure)
{
	bus *b = closure;
	char url[256] = "";
	natsConnection_GetConnectedUrl(nc, url, sizeof url);
	atomic_fetch_add(&b->reconnects, 1);
	plog(PL_INFO, "bus", "reconnected to %s", url);
}

/* The last callback of a connection (libnats runs disconnected before it
 * on the same thread): b may be freed once this has run. */
static void on_closed(natsConnection *nc, void *closure)
{
	bus *b = closure;
	latch_open(&b->closed);
}

static bus_status make_stream(bus *b, int replicas, int64_t deadline,
                              char *err, size_t cap)
{
	const char *subjects[] = {EV_PREFIX ">"};
	jsRePublish rp = {.Source = EV_PREFIX ">", .Destination = FAN_PREFIX ">"};
	jsStreamConfig sc;
	jsStreamConfig_Init(&sc);
	sc.Name = STREAM;
	sc.Subjects = subjects;
	sc.SubjectsLen = 1;
	sc.Storage = js_FileStorage;
	sc.Replicas = replicas;
	sc.Duplicates = DUP_WINDOW_NS;
	sc.RePublish = &rp;
	for (int try = 0;; try++) {
		jsStreamInfo *si = NULL;
		jsErrCode ec = 0;
		natsStatus s = js_GetStreamInfo(&si, b->js, STREAM, NULL, &ec);
		if (s == NATS_OK) {
			jsStreamInfo_Destroy(si);
			return BUS_OK;
		}
		if (s == NATS_NOT_FOUND) {
			s = js_AddStream(&si, b->js, &sc, NULL, &ec);
			if (s == NATS_OK) {
				jsStreamInfo_Destroy(si);
				return BUS_OK;
			}
			/* lost a race with another host: bind on the next try */
			if (ec != JSStreamNameExistErr && !transient(s)) {
				seterr(err, cap, "create stream %s: %s (%d) %s", STREAM,
				       natsStatus_GetText(s), (int)ec,
				       nats_GetLastError(NULL));
				return BUS_ERROR;
			}
		} else if (!transient(s)) {
			seterr(err, cap, "stream %s: %s (%d)", STREAM,
			       natsStatus_GetText(s), (int)ec);
			return BUS_ERROR;
		}
		if (now_ms() >= deadline) {
			seterr(err, cap, "stream %s: %s", STREAM, natsStatus_GetText(s));
			return BUS_UNAVAILABLE;
		}
		backoff(b, try, deadline);
	}
}

/* Creates the bucket name, or binds to it when it exists (the existing
 * config wins). ttl_ms 0: no TTL. */
static bus_status make_bucket(bus *b, kvStore **kv, const char *name,
                              int replicas, int64_t ttl_ms, int64_t deadline,
                              char *err, size_t cap)
{
	kvConfig kc;
	kvConfig_Init(&kc);
	kc.Bucket = name;
	kc.History = 1;
	kc.Replicas = replicas;
	kc.TTL = ttl_ms * 1000000; /* nanoseconds; 0: none */
	kc.StorageType = js_FileStorage;
	for (int try = 0;; try++) {
		natsStatus s = js_KeyValue(kv, b->js, name);
		if (s == NATS_OK)
			return BUS_OK;
		if (s == NATS_NOT_FOUND) {
			s = js_CreateKeyValue(kv, b->js, &kc);
			if (s == NATS_OK)
				return BUS_OK;
			/* NATS_ERR: most likely another host made it: bind next */
			if (s != NATS_ERR && !transient(s)) {
				seterr(err, cap, "create bucket %s: %s %s", name,
				       natsStatus_GetText(s), nats_GetLastError(NULL));
				return BUS_ERROR;
			}
		} else if (!transient(s)) {
			seterr(err, cap, "bucket %s: %s", name, natsStatus_GetText(s));
			return BUS_ERROR;
		}
		*kv = NULL;
		if (now_ms() >= deadline) {
			seterr(err, cap, "bucket %s: %s", name, natsStatus_GetText(s));
			return BUS_UNAVAILABLE;
		}
		backoff(b, try, deadline);
	}
}

bus_status bus_open(bus **out, const bus_cfg *cfg, char *err, size_t cap)
{
	*out = NULL;
	if (!cfg || !cfg->urls || !valid_host(cfg->host_id) || cfg->replicas < 1 ||
	    cfg->lease_ms < 100) {
		seterr(err, cap, "bus_open: bad config (urls, host id, replicas, lease_ms >= 100)");
		return BUS_INVALID;
	}
	bus *b = calloc(1, sizeof *b);
	if (!b) {
		seterr(err, cap, "out of memory");
		return BUS_ERROR;
	}
	latch_init(&b->closed);
	snprintf(b->host, sizeof b->host, "%s", cfg->host_id);
	b->attempt_ms = cfg->attempt_ms > 0 ? cfg->attempt_ms : 1000;
	b->deadline_ms = cfg->deadline_ms > 0 ? cfg->deadline_ms : 10000;
	int64_t deadline = now_ms() + b->deadline_ms;

	/* libnats 3.4.1 parses a comma-separated URL but then fails to connect
	 * with "No server available": hand it the list split up. */
	char *urlbuf = strdup(cfg->urls), *save = NULL;
	const char *urls[16];
	int nurls = 0;
	for (char *u = urlbuf ? strtok_r(urlbuf, ", ", &save) : NULL; u && nurls < 16;
	     u = strtok_r(NULL, ", ", &save))
		urls[nurls++] = u;
	natsOptions *o = NULL;
	natsStatus s = nurls ? natsOptions_Create(&o) : NATS_INVALID_ARG;
	if (s == NATS_OK)
		s = natsOptions_SetServers(o, urls, nurls);
	free(urlbuf);
	if (s == NATS_OK)
		s = natsOptions_SetName(o, cfg->host_id);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(o, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(o, 100);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(o, b->attempt_ms);
	if (s == NATS_OK)
		s = natsOptions_SetDisconnectedCB(o, on_disconnected, b);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectedCB(o, on_reconnected, b);
	if (s == NATS_OK)
		s = natsOptions_SetClosedCB(o, on_closed, b);
	if (s != NATS_OK) {
		seterr(err, cap, "nats options: %s", natsStatus_GetText(s));
		natsOptions_Destroy(o);
		free(b);
		return BUS_INVALID;
	}
	for (int try = 0;; try++) {
		s = natsConnection_Connect(&b->nc, o);
		if (s == NATS_OK || now_ms() >= deadline)
			break;
		backoff(b, try, deadline);
	}
	natsOptions_Destroy(o);
	if (s != NATS_OK) {
		seterr(err, cap, "connect %s: %s", cfg->urls, natsStatus_GetText(s));
		b->nc = NULL;
		bus_close(b);
		return BUS_UNAVAILABLE;
	}
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = b->attempt_ms;
	s = natsConnection_JetStream(&b->js, b->nc, &jo);
	if (s != NATS_OK) {
		seterr(err, cap, "jetstream: %s", natsStatus_GetText(s));
		bus_close(b);
		return BUS_ERROR;
	}
	bus_status st = make_stream(b, cfg->replicas, deadline, err, cap);
	if (st == BUS_OK)
		st = make_bucket(b, &b->kv, BUCKET, cfg->replicas, cfg->lease_ms,
		                 deadline, err, cap);
	if (st == BUS_OK)
		st = make_bucket(b, &b->keys, KEYS_BUCKET, cfg->replicas, 0,
		                 deadline, err, cap);
	if (st != BUS_OK) {
		bus_close(b);
		return st;
	}
	*out = b;
	return BUS_OK;
}

void bus_close(bus *b)
{
	if (!b)
		return;
	if (b->serve_sub) {
		natsSubscription_Unsubscribe(b->serve_sub);
		natsSubscription_Destroy(b->serve_sub);
	}
	kvStore_Destroy(b->keys);
	kvStore_Destroy(b->kv);
	jsCtx_Destroy(b->js);
	if (b->nc) {
		natsConnection_Close(b->nc);
		latch_wait(&b->closed);
		natsConnection_Destroy(b->nc);
	}
	latch_fini(&b->closed);
	free(b);
}

void bus_get_metrics(bus *b, bus_metrics *m)
{
	m->appends = atomic_load(&b->appends);
	m->fenced = atomic_load(&b->fenced);
	m->retries = atomic_load(&b->retries);
	m->reconnects = atomic_load(&b->reconnects);
	m->disconnects = atomic_load(&b->disconnects);
}

/* ---- the log ------------------------------------------------------------ */

/* The subject's last message (transient errors are retried until
 * deadline). NATS_OK and *m, NATS_NOT_FOUND, or the last error. */
static natsStatus last_msg(bus *b, const char *subj, int64_t deadline,
                           natsMsg **m)
{
	for (int try = 0;; try++) {
		jsErrCode ec = 0;
		natsStatus s = js_GetLastMsg(m, b->js, STREAM, subj, NULL, &ec);
		if (s == NATS_OK || s == NATS_NOT_FOUND || !transient(s) ||
		    now_ms() >= deadline)
			return s;
		backoff(b, try, deadline);
	}
}

static bool hdr_is(natsMsg *m, const char *name, const char *want)
{
	const char *v = NULL;
	return natsMsgHeader_Get(m, name, &v) == NATS_OK && v && !strcmp(v, want);
}

bus_status bus_append(bus *b, const char *key, uint64_t pseq,
                      const void *data, size_t len, uint64_t expect_sseq,
                      uint64_t *out_sseq)
{
	char enc[ENC_MAX], subj[SUBJ_MAX], msgid[ENC_MAX + 32], pseq_s[24];
	if (!enc_key(key, enc) || len > INT32_MAX)
		return BUS_INVALID;
	snprintf(subj, sizeof subj, EV_PREFIX "%s", enc);
	snprintf(msgid, sizeof msgid, "%s/%" PRIu64, key, pseq);
	snprintf(pseq_s, sizeof pseq_s, "%" PRIu64, pseq);
	int64_t deadline = now_ms() + b->deadline_ms;

	for (int try = 0;; try++) {
		natsMsg *m = NULL;
		natsStatus s = natsMsg_Create(&m, subj, NULL, data, (int)len);
		if (s == NATS_OK)
			s = natsMsgHeader_Set(m, "Parley-Seq", pseq_s);
		if (s == NATS_OK)
			s = natsMsgHeader_Set(m, "Parley-Writer", b->host);
		if (s != NATS_OK) {
			natsMsg_Destroy(m);
			return BUS_ERROR;
		}
		jsPubOptions po;
		jsPubOptions_Init(&po);
		po.MaxWait = b->attempt_ms;
		po.MsgId = msgid;
		if (expect_sseq)
			po.ExpectLastSubjectSeq = expect_sseq;
		else
			po.ExpectNoMessage = true;
		jsPubAck *pa = NULL;
		jsErrCode ec = 0;
		s = js_PublishMsg(&pa, b->js, m, &po, &ec);
		natsMsg_Destroy(m);
		if (s == NATS_OK && pa->Duplicate) {
			/* The Msg-Id is in the dedup window (which, for
			 * ExpectNoMessage, the server checks first). It is
			 * <key>/<pseq> without the writer: make sure the stored
			 * message is ours, not another writer's same pseq. */
			uint64_t seq = pa->Sequence;
			jsPubAck_Destroy(pa);
			natsMsg *dm = NULL;
			for (int t2 = 0;; t2++) {
				s = js_GetMsg(&dm, b->js, STREAM, seq, NULL, &ec);
				if (s == NATS_OK || !transient(s) || now_ms() >= deadline)
					break;
				backoff(b, t2, deadline);
			}
			if (s != NATS_OK)
				return transient(s) ? BUS_UNAVAILABLE : BUS_ERROR;
			bool ours = hdr_is(dm, "Parley-Writer", b->host);
			natsMsg_Destroy(dm);
			if (!ours) {
				atomic_fetch_add(&b->fenced, 1);
				return BUS_FENCED;
			}
			*out_sseq = seq;
			atomic_fetch_add(&b->appends, 1);
			return BUS_OK;
		}
		if (s == NATS_OK) {
			*out_sseq = pa->Sequence;
			jsPubAck_Destroy(pa);
			atomic_fetch_add(&b->appends, 1);
			return BUS_OK;
		}
		if (ec == WRONG_LAST_SEQ) {
			/* Fenced, or an earlier try of ours landed and its reply
			 * was lost (the expectation is checked before the Msg-Id
			 * dedup): the subject's last message tells. */
			natsMsg *last = NULL;
			s = last_msg(b, subj, deadline, &last);
			if (s == NATS_OK) {
				bool ours = hdr_is(last, "Nats-Msg-Id", msgid) &&
				            hdr_is(last, "Parley-Writer", b->host);
				if (ours)
					*out_sseq = natsMsg_GetSequence(last);
				natsMsg_Destroy(last);
				if (ours) {
					atomic_fetch_add(&b->appends, 1);
					return BUS_OK;
				}
				atomic_fetch_add(&b->fenced, 1);
				return BUS_FENCED;
			}
			if (s == NATS_NOT_FOUND) { /* expected a message: none */
				atomic_fetch_add(&b->fenced, 1);
				return BUS_FENCED;
			}
		} else if (!transient(s)) {
			plog(PL_WARN, "bus", "append %s: %s (%d) %s", subj,
			     natsStatus_GetText(s), (int)ec, nats_GetLastError(NULL));
			return BUS_ERROR;
		}
		if (now_ms() >= deadline)
			return BUS_UNAVAILABLE;
		backoff(b, try, deadline);
	}
}

bus_status bus_last(bus *b, const char *key, uint64_t *sseq, uint64_t *pseq)
{
	char enc[ENC_MAX], subj[SUBJ_MAX];
	if (!enc_key(key, enc))
		return BUS_INVALID;
	snprintf(subj, sizeof subj, EV_PREFIX "%s", enc);
	natsMsg *m = NULL;
	natsStatus s = last_msg(b, subj, now_ms() + b->deadline_ms, &m);
	if (s == NATS_NOT_FOUND)
		return BUS_EMPTY;
	if (s != NATS_OK)
		return transient(s) ? BUS_UNAVAILABLE : BUS_ERROR;
	*sseq = natsMsg_GetSequence(m);
	*pseq = hdr_u64(m, "Parley-Seq");
	natsMsg_Destroy(m);
	return BUS_OK;
}

bus_status bus_replay(bus *b, const char *key, uint64_t from_sseq,
                      bus_replay_cb cb, void *arg)
{
	char enc[ENC_MAX], subj[SUBJ_MAX];
	if (!enc_key(key, enc))
		return BUS_INVALID;
	snprintf(subj, sizeof subj, EV_PREFIX "%s", enc);
	uint64_t last, pseq;
	bus_status st = bus_last(b, key, &last, &pseq);
	if (st == BUS_EMPTY)
		return BUS_OK;
	if (st != BUS_OK)
		return st;
	if (from_sseq > last)
		return BUS_OK;
	if (from_sseq == 0)
		from_sseq = 1;

	int64_t deadline = now_ms() + b->deadline_ms;
	natsSubscription *sub = NULL;
	for (int try = 0;; try++) {
		jsSubOptions so;
		jsSubOptions_Init(&so);
		so.Stream = STREAM;
		so.Ordered = true;
		so.Config.DeliverPolicy = js_DeliverByStartSequence;
		so.Config.OptStartSeq = from_sseq;
		jsErrCode ec = 0;
		natsStatus s = js_SubscribeSync(&sub, b->js, subj, NULL, &so, &ec);
		if (s == NATS_OK)
			break;
		if (!transient(s)) {
			plog(PL_WARN, "bus", "replay %s: %s (%d)", subj,
			     natsStatus_GetText(s), (int)ec);
			return BUS_ERROR;
		}
		if (now_ms() >= deadline)
			return BUS_UNAVAILABLE;
		backoff(b, try, deadline);
	}
	st = BUS_OK;
	for (;;) {
		natsMsg *m = NULL;
		int64_t wait = deadline - now_ms();
		if (wait <= 0) {
			st = BUS_UNAVAILABLE;
			break;
		}
		natsStatus s = natsSubscription_NextMsg(&m, sub, wait);
		if (s != NATS_OK) {
			st = transient(s) ? BUS_UNAVAILABLE : BUS_ERROR;
			break;
		}
		jsMsgMetaData *md = NULL;
		if (natsMsg_GetMetaData(&md, m) != NATS_OK) {
			natsMsg_Destroy(m);
			continue; /* not a stream message (flow control) */
		}
		uint64_t seq = md->Sequence.Stream;
		jsMsgMetaData_Destroy(md);
		cb(arg, seq, hdr_u64(m, "Parley-Seq"), natsMsg_GetData(m),
		   (size_t)natsMsg_GetDataLength(m));
		natsMsg_Destroy(m);
		if (seq >= last)
			break;
		deadline = now_ms() + b->deadline_ms;
	}
	natsSubscription_Unsubscribe(sub);
	natsSubscription_Destroy(sub);
	return st;
}

/* ---- leases ------------------------------------------------------------- */

static bool lease_key(const char *key, char out[ENC_MAX + 8])
{
	char enc[ENC_MAX];
	if (!enc_key(key, enc))
		return false;
	snprintf(out, ENC_MAX + 8, "own.%s", enc);
	return true;
}

/* A key's value and revision as its bucket's stream leader has them. */
typedef struct kv_val {
	char v[BUS_HOST_MAX + 1];
	uint64_t rev;
} kv_val;

/* Reads k of bucket with retries: NATS_OK (*e), NATS_NOT_FOUND (never
 * written, deleted, or expired), or the error. Not kvStore_Get: a KV stream
 * allows direct gets, which any replica may answer, and a follower that
 * has not applied the latest write answers with what was there before,
 * so a claim that had just succeeded could read as absent
 * (bus_keys_lost_reply caught it). The stream's message-get API is the
 * leader's. */
static natsStatus kv_get(bus *b, const char *bucket, const char *k,
                         int64_t deadline, kv_val *e)
{
	char stream[64], subj[SUBJ_MAX + 32];

	snprintf(stream, sizeof stream, "KV_%s", bucket);
	snprintf(subj, sizeof subj, "$KV.%s.%s", bucket, k);
	for (int try = 0;; try++) {
		natsMsg *m = NULL;
		jsErrCode ec = 0;
		natsStatus s = js_GetLastMsg(&m, b->js, stream, subj, NULL, &ec);
		if (s == NATS_OK) {
			const char *op = NULL;
			if (natsMsgHeader_Get(m, "KV-Operation", &op) == NATS_OK &&
			    op && (!strcmp(op, "DEL") || !strcmp(op, "PURGE"))) {
				s = NATS_NOT_FOUND;
			} else {
				snprintf(e->v, sizeof e->v, "%.*s",
				         natsMsg_GetDataLength(m),
				         natsMsg_GetData(m));
				e->rev = natsMsg_GetSequence(m);
			}
			natsMsg_Destroy(m);
			return s;
		}
		if (s == NATS_NOT_FOUND || !transient(s) || now_ms() >= deadline)
			return s;
		backoff(b, try, deadline);
	}
}

static void copy_owner(const kv_val *e, char *out, size_t cap)
{
	if (out && cap)
		snprintf(out, cap, "%s", e->v);
}

static bool entry_is_ours(bus *b, const kv_val *e)
{
	return !strcmp(e->v, b->host);
}

bus_status bus_lease_acquire(bus *b, const char *key, uint64_t *rev,
                             char *owner_out, size_t cap)
{
	char k[ENC_MAX + 8];
	if (!lease_key(key, k))
		return BUS_INVALID;
	if (owner_out && cap)
		owner_out[0] = '\0';
	int64_t deadline = now_ms() + b->deadline_ms;
	for (int try = 0;; try++) {
		natsStatus s = kvStore_CreateString(rev, b->kv, k, b->host);
		if (s == NATS_OK)
			return BUS_OK;
		if (s == NATS_ERR) { /* exists: whose? */
			kv_val ev, *e = &ev;
			s = kv_get(b, BUCKET, k, deadline, e);
			if (s == NATS_OK) {
				bus_status st = BUS_TAKEN;
				copy_owner(e, owner_out, cap);
				if (entry_is_ours(b, e)) {
					*rev = e->rev;
					st = BUS_OK;
				}
				return st;
			}
			/* NOT_FOUND: expired between the two calls: try again */
			if (s != NATS_NOT_FOUND && !transient(s))
				return BUS_ERROR;
		} else if (!transient(s)) {
			plog(PL_WARN, "bus", "lease %s: %s %s", k,
			     natsStatus_GetText(s), nats_GetLastError(NULL));
			return BUS_ERROR;
		}
		if (now_ms() >= deadline)
			return BUS_UNAVAILABLE;
		backoff(b, try, deadline);
	}
}

/* enc_key's inverse: =XX back to the byte. */
static bool dec_key(const char *enc, char out[BUS_KEY_MAX + 1])
{
	size_t o = 0;
	for (const char *p = enc; *p; p++) {
		unsigned v;
		if (o == BUS_KEY_MAX)
			return false;
		if (*p != '=') {
			out[o++] = *p;
			continue;
		}
		if (sscanf(p + 1, "%2X", &v) != 1 || !p[1] || !p[2])
			return false;
		out[o++] = (char)v;
		p += 2;
	}
	out[o] = '\0';
	return true;
}

bus_status bus_lease_list(bus *b, const char *prefix, bus_lease_cb cb,
                          void *arg)
{
	int64_t deadline = now_ms() + b->deadline_ms;
	size_t pl = prefix ? strlen(prefix) : 0;
	kvKeysList l = {0};
	natsStatus s;

	for (int try = 0;; try++) {
		s = kvStore_Keys(&l, b->kv, NULL);
		/* an empty bucket: no keys, which is not an error here */
		if (s == NATS_OK || s == NATS_NOT_FOUND || !transient(s) ||
		    now_ms() >= deadline)
			break;
		backoff(b, try, deadline);
	}
	if (s == NATS_NOT_FOUND)
		return BUS_OK;
	if (s != NATS_OK)
		return transient(s) ? BUS_UNAVAILABLE : BUS_ERROR;
	for (int i = 0; i < l.Count; i++) {
		char key[BUS_KEY_MAX + 1], owner[BUS_HOST_MAX + 1];
		kv_val ev, *e = &ev;

		if (strncmp(l.Keys[i], "own.", 4) || !dec_key(l.Keys[i] + 4, key) ||
		    strncmp(key, prefix ? prefix : "", pl))
			continue;
		/* gone since the list: skip it */
		if (kv_get(b, BUCKET, l.Keys[i], deadline, e) != NATS_OK)
			continue;
		copy_owner(e, owner, sizeof owner);
		cb(arg, key, owner);
	}
	kvKeysList_Destroy(&l);
	return BUS_OK;
}

bus_status bus_lease_renew(bus *b, const char *key, uint64_t rev,
                           uint64_t *newrev)
{
	char k[ENC_MAX + 8];
	if (!lease_key(key, k))
		return BUS_INVALID;
	int64_t deadline = now_ms() + b->deadline_ms;
	for (int try = 0;; try++) {
		natsStatus s = kvStore_UpdateString(newrev, b->kv, k, b->host, rev);
		if (s == NATS_OK)
			return BUS_OK;
		if (s == NATS_ERR) {
			/* Not at rev any more: lost, or an earlier try of this
			 * renew landed (reply lost) and the value is still ours. */
			if (try == 0)
				return BUS_LOST;
			kv_val ev, *e = &ev;
			s = kv_get(b, BUCKET, k, deadline, e);
			if (s == NATS_OK) {
				bool ours = entry_is_ours(b, e);
				if (ours)
					*newrev = e->rev;
				return ours ? BUS_OK : BUS_LOST;
			}
			if (s == NATS_NOT_FOUND)
				return BUS_LOST;
			if (!transient(s))
				return BUS_ERROR;
		} else if (!transient(s)) {
			return BUS_ERROR;
		}
		if (now_ms() >= deadline)
			return BUS_UNAVAILABLE;
		backoff(b, try, deadline);
	}
}

bus_status bus_lease_release(bus *b, const char *key, uint64_t rev)
{
	char k[ENC_MAX + 8], subj[SUBJ_MAX + 16];
	if (!lease_key(key, k))
		return BUS_INVALID;
	snprintf(subj, sizeof subj, KV_PREFIX "%s", k);
	int64_t deadline = now_ms() + b->deadline_ms;
	for (int try = 0;; try++) {
		/* a KV delete marker, but only if the key is still at rev */
		natsMsg *m = NULL;
		natsStatus s = natsMsg_Create(&m, subj, NULL, NULL, 0);
		if (s == NATS_OK)
			s = natsMsgHeader_Set(m, "KV-Operation", "DEL");
		if (s != NATS_OK) {
			natsMsg_Destroy(m);
			return BUS_ERROR;
		}
		jsPubOptions po;
		jsPubOptions_Init(&po);
		po.MaxWait = b->attempt_ms;
		po.ExpectLastSubjectSeq = rev;
		jsPubAck *pa = NULL;
		jsErrCode ec = 0;
		s = js_PublishMsg(&pa, b->js, m, &po, &ec);
		natsMsg_Destroy(m);
		if (s == NATS_OK) {
			jsPubAck_Destroy(pa);
			return BUS_OK;
		}
		if (ec == WRONG_LAST_SEQ) /* not ours, or our earlier try landed */
			return try == 0 ? BUS_LOST : BUS_OK;
		if (!transient(s))
			return BUS_ERROR;
		if (now_ms() >= deadline)
			return BUS_UNAVAILABLE;
		backoff(b, try, deadline);
	}
}

bus_status bus_lease_owner(bus *b, const char *key, char *owner_out,
                           size_t cap)
{
	char k[ENC_MAX + 8];
	if (!lease_key(key, k))
		return BUS_INVALID;
	kv_val ev, *e = &ev;
	natsStatus s = kv_get(b, BUCKET, k, now_ms() + b->deadline_ms, e);
	if (s == NATS_NOT_FOUND)
		return BUS_EMPTY;
	if (s != NATS_OK)
		return transient(s) ? BUS_UNAVAILABLE : BUS_ERROR;
	copy_owner(e, owner_out, cap);
	return BUS_OK;
}

/* ---- ownership records ------------------------------------------------ */

static bool record_key(const char *key, char out[ENC_MAX + 8])
{
	char enc[ENC_MAX];
	if (!enc_key(key, enc))
		return false;
	snprintf(out, ENC_MAX + 8, "key.%s", enc);
	return true;
}

bus_status bus_key_get(bus *b, const char *key, char *owner_out, size_t cap,
                       uint64_t *rev)
{
	char k[ENC_MAX + 8];
	if (!record_key(key, k))
		return BUS_INVALID;
	if (owner_out && cap)
		owner_out[0] = '\0';
	kv_val ev, *e = &ev;
	natsStatus s = kv_get(b, KEYS_BUCKET, k, now_ms() + b->deadline_ms, e);
	if (s == NATS_NOT_FOUND)
		return BUS_EMPTY;
	if (s != NATS_OK)
		return transient(s) ? BUS_UNAVAILABLE : BUS_ERROR;
	copy_owner(e, owner_out, cap);
	*rev = e->rev;
	return BUS_OK;
}

bus_status bus_key_claim(bus *b, const char *key, uint64_t expect_rev,
                         uint64_t *new_rev, char *owner_out, size_t cap)
{
	char k[ENC_MAX + 8];
	if (!record_key(key, k))
		return BUS_INVALID;
	if (owner_out && cap)
		owner_out[0] = '\0';
	int64_t deadline = now_ms() + b->deadline_ms;
	for (int try = 0;; try++) {
		uint64_t rev = 0;
		natsStatus s = expect_rev
		        ? kvStore_UpdateString(&rev, b->keys, k, b->host, expect_rev)
		        : kvStore_CreateString(&rev, b->keys, k, b->host);
		if (s == NATS_OK) {
			*new_rev = rev;
			return BUS_OK;
		}
		if (s == NATS_ERR) {
			/* The record is not at expect_rev: another host moved it,
			 * or (only on a retry) our own earlier try landed and its
			 * reply was lost. On the first try a record naming us is
			 * someone else's doing too (another thread of this host):
			 * TAKEN, so that two claims never both succeed. */
			kv_val ev, *e = &ev;
			s = kv_get(b, KEYS_BUCKET, k, deadline, e);
			if (s == NATS_OK) {
				bool ours = try > 0 && entry_is_ours(b, e);
				copy_owner(e, owner_out, cap);
				*new_rev = e->rev;
				return ours ? BUS_OK : BUS_TAKEN;
			}
			if (s == NATS_NOT_FOUND && expect_rev) {
				/* deleted since expect_rev: the expectation failed */
				*new_rev = 0;
				return BUS_TAKEN;
			}
			/* NOT_FOUND for a create: deleted in between, try again */
			if (s != NATS_NOT_FOUND && !transient(s))
				return BUS_ERROR;
		} else if (!transient(s)) {
			plog(PL_WARN, "bus", "claim %s: %s %s", k,
			     natsStatus_GetText(s), nats_GetLastError(NULL));
			return BUS_ERROR;
		}
		if (now_ms() >= deadline)
			return BUS_UNAVAILABLE;
		backoff(b, try, deadline);
	}
}

bus_status bus_key_settle(bus *b, const char *key, const char *want,
                          char *got, size_t cap)
{
	char k[ENC_MAX + 8];
	if (!record_key(key, k) || strlen(want) > BUS_HOST_MAX)
		return BUS_INVALID;
	int64_t deadline = now_ms() + b->deadline_ms;
	for (int try = 0;; try++) {
		uint64_t rev = 0;
		natsStatus s = kvStore_CreateString(&rev, b->keys, k, want);
		if (s == NATS_OK) {
			snprintf(got, cap, "%s", want);
			return BUS_OK;
		}
		if (s == NATS_ERR) { /* there already: whatever it says */
			kv_val e;
			s = kv_get(b, KEYS_BUCKET, k, deadline, &e);
			if (s == NATS_OK) {
				copy_owner(&e, got, cap);
				return BUS_OK;
			}
			if (s != NATS_NOT_FOUND && !transient(s))
				return BUS_ERROR;
		} else if (!transient(s)) {
			return BUS_ERROR;
		}
		if (now_ms() >= deadline)
			return BUS_UNAVAILABLE;
		backoff(b, try, deadline);
	}
}

/* ---- fan-out ------------------------------------------------------------ */

static void on_fan(natsConnection *nc, natsSubscription *ns, natsMsg *m,
                   void *closure)
{
	bus_sub *s = closure;
	s->cb(s->arg, hdr_u64(m, "Nats-Sequence"), hdr_u64(m, "Nats-Last-Sequence"),
	      hdr_u64(m, "Parley-Seq"), natsMsg_GetData(m),
	      (size_t)natsMsg_GetDataLength(m));
	natsMsg_Destroy(m);
}

bus_status bus_subscribe(bus *b, const char *key, bus_fan_cb cb, void *arg,
                         bus_sub **sub)
{
	char enc[ENC_MAX], subj[SUBJ_MAX];
	*sub = NULL;
	if (!enc_key(key, enc) || !cb)
		return BUS_INVALID;
	snprintf(subj, sizeof subj, FAN_PREFIX "%s", enc);
	bus_sub *s = calloc(1, sizeof *s);
	if (!s)
		return BUS_ERROR;
	s->cb = cb;
	s->arg = arg;
	natsStatus st = natsConnection_Subscribe(&s->ns, b->nc, subj, on_fan, s);
	if (st != NATS_OK) {
		free(s);
		return BUS_ERROR;
	}
	*sub = s;
	return BUS_OK;
}

void bus_unsubscribe(bus_sub *s)
{
	if (!s)
		return;
	/* wait until the handler has returned for the last time */
	latch w;
	latch_init(&w);
	if (natsSubscription_SetOnCompleteCB(s->ns, latch_open, &w) == NATS_OK &&
	    natsSubscription_Unsubscribe(s->ns) == NATS_OK)
		latch_wait(&w);
	natsSubscription_Destroy(s->ns);
	latch_fini(&w);
	free(s);
}

/* ---- requests ----------------------------------------------------------- */

static void on_serve(natsConnection *nc, natsSubscription *ns, natsMsg *m,
                     void *closure)
{
	bus *b = closure;
	const char *reply = natsMsg_GetReply(m);
	bus_reply_token *tok = calloc(1, sizeof *tok);
	if (!tok || !reply || !(tok->reply = strdup(reply))) {
		free(tok);
		natsMsg_Destroy(m); /* no way to answer: the requester times out */
		return;
	}
	b->serve_cb(b->serve_arg, natsMsg_GetData(m),
	            (size_t)natsMsg_GetDataLength(m), tok);
	natsMsg_Destroy(m);
}

bus_status bus_serve(bus *b, const char *host_id, bus_serve_cb handler,
                     void *arg)
{
	char subj[SUBJ_MAX];
	if (!valid_host(host_id) || !handler || b->serve_sub)
		return BUS_INVALID;
	snprintf(subj, sizeof subj, RPC_PREFIX "%s", host_id);
	b->serve_cb = handler;
	b->serve_arg = arg;
	natsStatus s = natsConnection_Subscribe(&b->serve_sub, b->nc, subj,
	                                        on_serve, b);
	if (s != NATS_OK) {
		b->serve_sub = NULL;
		return BUS_ERROR;
	}
	/* so that a request sent right after this returns finds us */
	natsConnection_FlushTimeout(b->nc, b->attempt_ms);
	return BUS_OK;
}

bus_status bus_reply(bus *b, bus_reply_token *tok, const void *data,
                     size_t len)
{
	natsStatus s = NATS_INVALID_ARG;
	if (len <= INT32_MAX)
		s = natsConnection_Publish(b->nc, tok->reply, data, (int)len);
	free(tok->reply);
	free(tok);
	return s == NATS_OK ? BUS_OK : BUS_ERROR;
}

static void on_req_reply(natsConnection *nc, natsSubscription *ns, natsMsg *m,
                         void *closure)
{
	req *r = closure;
	bool first = !atomic_exchange(&r->done, true);
	if (first) {
		if (!m)
			r->cb(r->arg, BUS_TIMEOUT, NULL, 0);
		else if (natsMsg_IsNoResponders(m))
			r->cb(r->arg, BUS_NO_RESPONDERS, NULL, 0);
		else
			r->cb(r->arg, BUS_OK, natsMsg_GetData(m),
			      (size_t)natsMsg_GetDataLength(m));
	}
	if (m)
		natsMsg_Destroy(m);
	else
		natsSubscription_Unsubscribe(ns); /* ends in on_req_complete */
}

static void on_req_complete(void *closure)
{
	req *r = closure;
	natsSubscription_Destroy(r->ns);
	free(r);
}

bus_status bus_request(bus *b, const char *host_id, const void *data,
                       size_t len, int timeout_ms, bus_request_cb cb,
                       void *arg)
{
	char subj[SUBJ_MAX];
	if (!valid_host(host_id) || !cb || timeout_ms <= 0 || len > INT32_MAX)
		return BUS_INVALID;
	snprintf(subj, sizeof subj, RPC_PREFIX "%s", host_id);
	req *r = calloc(1, sizeof *r);
	if (!r)
		return BUS_ERROR;
	r->cb = cb;
	r->arg = arg;
	atomic_init(&r->done, false);
	natsInbox *inbox = NULL;
	natsStatus s = natsInbox_Create(&inbox);
	if (s == NATS_OK)
		s = natsConnection_SubscribeTimeout(&r->ns, b->nc, inbox, timeout_ms,
		                                    on_req_reply, r);
	if (s != NATS_OK) {
		natsInbox_Destroy(inbox);
		free(r);
		return BUS_ERROR;
	}
	/* From here on r is freed by on_req_complete, after the last
	 * callback, once the subscription closes (one reply or a timeout). */
	s = natsSubscription_SetOnCompleteCB(r->ns, on_req_complete, r);
	if (s != NATS_OK) {
		natsInbox_Destroy(inbox);
		atomic_store(&r->done, true);
		natsSubscription_Unsubscribe(r->ns);
		natsSubscription_Destroy(r->ns);
		return BUS_ERROR; /* r leaks: a handler might still run */
	}
	s = natsSubscription_AutoUnsubscribe(r->ns, 1);
	if (s == NATS_OK)
		s = natsConnection_PublishRequest(b->nc, subj, inbox, data, (int)len);
	natsInbox_Destroy(inbox);
	if (s != NATS_OK) {
		atomic_store(&r->done, true); /* no callback */
		natsSubscription_Unsubscribe(r->ns);
		return BUS_ERROR;
	}
	return BUS_OK;
}

/* ---- the log, followed ---------------------------------------------------- */

static void on_follow(natsConnection *nc, natsSubscription *ns, natsMsg *m,
                      void *closure)
{
	bus_sub *s = closure;
	jsMsgMetaData *md = NULL;
	(void)nc;
	(void)ns;
	if (natsMsg_GetMetaData(&md, m) == NATS_OK) {
		uint64_t seq = md->Sequence.Stream;
		jsMsgMetaData_Destroy(md);
		s->cb(s->arg, seq, 0, hdr_u64(m, "Parley-Seq"),
		      natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
	}
	natsMsg_Destroy(m);
}

bus_status bus_follow(bus *b, const char *key, uint64_t from_sseq,
                      bus_fan_cb cb, void *arg, bus_sub **sub)
{
	char enc[ENC_MAX], subj[SUBJ_MAX];
	*sub = NULL;
	if (!enc_key(key, enc) || !cb)
		return BUS_INVALID;
	snprintf(subj, sizeof subj, EV_PREFIX "%s", enc);
	bus_sub *s = calloc(1, sizeof *s);
	if (!s)
		return BUS_ERROR;
	s->cb = cb;
	s->arg = arg;
	int64_t deadline = now_ms() + b->deadline_ms;
	for (int try = 0;; try++) {
		jsSubOptions so;
		jsErrCode ec = 0;
		jsSubOptions_Init(&so);
		so.Stream = STREAM;
		so.Ordered = true;
		so.Config.DeliverPolicy = js_DeliverByStartSequence;
		so.Config.OptStartSeq = from_sseq ? from_sseq : 1;
		/* a stream leader that moved (a NATS node died) stalls the
		 * push consumer: missed heartbeats make the library
		 * recreate it; 5 s (its default) is a long stall */
		so.Config.Heartbeat = (int64_t)500 * 1000 * 1000;
		natsStatus st = js_Subscribe(&s->ns, b->js, subj, on_follow, s,
		                             NULL, &so, &ec);
		if (st == NATS_OK)
			break;
		if (!transient(st)) {
			plog(PL_WARN, "bus", "follow %s: %s (%d)", subj,
			     natsStatus_GetText(st), (int)ec);
			free(s);
			return BUS_ERROR;
		}
		if (now_ms() >= deadline) {
			free(s);
			return BUS_UNAVAILABLE;
		}
		backoff(b, try, deadline);
	}
	*sub = s;
	return BUS_OK;
}

/* ---- one-way messages between hosts ------------------------------------- */

static void on_msg(natsConnection *nc, natsSubscription *ns, natsMsg *m,
                   void *closure)
{
	bus_sub *s = closure;
	(void)nc;
	(void)ns;
	s->mcb(s->arg, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
	natsMsg_Destroy(m);
}

static bool msg_subject(const char *host_id, char out[SUBJ_MAX])
{
	if (!host_id) {
		snprintf(out, SUBJ_MAX, MSG_PREFIX "_all");
		return true;
	}
	if (!valid_host(host_id))
		return false;
	snprintf(out, SUBJ_MAX, MSG_PREFIX "h.%s", host_id);
	return true;
}

bus_status bus_listen(bus *b, const char *host_id, bus_msg_cb cb, void *arg,
                      bus_sub **sub)
{
	char subj[SUBJ_MAX];
	*sub = NULL;
	if (!cb || !msg_subject(host_id, subj))
		return BUS_INVALID;
	bus_sub *s = calloc(1, sizeof *s);
	if (!s)
		return BUS_ERROR;
	s->mcb = cb;
	s->arg = arg;
	if (natsConnection_Subscribe(&s->ns, b->nc, subj, on_msg, s) !=
	    NATS_OK) {
		free(s);
		return BUS_ERROR;
	}
	natsConnection_FlushTimeout(b->nc, b->attempt_ms);
	*sub = s;
	return BUS_OK;
}

bus_status bus_send(bus *b, const char *host_id, const void *data, size_t len)
{
	char subj[SUBJ_MAX];
	if (!msg_subject(host_id, subj) || len > INT32_MAX)
		return BUS_INVALID;
	return natsConnection_Publish(b->nc, subj, data, (int)len) == NATS_OK
	               ? BUS_OK
	               : BUS_ERROR;
}
