/*
 * A client process: connections [from, to) in one epoll loop. main.c forks
 * it with a pipe each way. It opens its connections with at most
 * HANDSHAKES handshakes in flight, says R_READY, then does its scenario's
 * part until CMD_STOP, when it sends R_FINAL with its counts and
 * histograms and exits:
 *
 *   fanout  every delivery is checked (message index exactly once and in
 *           order, parley seq increasing) and timed; when all of this
 *           process' members have message i: R_DONE(i, last arrival)
 *   small   members send at this process' share of --rate, round robin
 *           across channels; deliveries to the other members and acks are
 *           timed between CMD_MEASURE and CMD_END
 *   acks    each sender keeps --inflight sends outstanding (closed loop);
 *           Redis: XADD to a stream of its own, pipelined; replies come
 *           in order, so each connection keeps its send times in a ring
 *   idle    parley heartbeats every --hb-ms (jittered); a closed
 *   hb      connection is an error; hb counts the heartbeats it sent
 *           between CMD_MEASURE and CMD_END
 *   presence every connection, once its hello is answered, watches the
 *           subject (presence.watch, which must show it online); ready
 *           when all are watching. Each {"t":"presence"} must be the
 *           subject's next change (dnd, online, dnd, ...), exactly once;
 *           it is timed against the send time the parent gave with
 *           CMD_CHANGE (kept aside if the frame came first); when all of
 *           this process' watchers have change i: R_DONE(i, last arrival).
 *           Watchers heartbeat like idle's connections.
 *   search  the fill: each sender keeps --inflight sends of made-up text
 *           outstanding, round robin over its channels, until it has sent
 *           its share of --msgs; R_DONE(0, last answer) when every sender
 *           here has all its answers
 *   push    every connection, once its hello is answered, registers a
 *           pusher (push.register, app "parley-bench", pushkey "pk-" and
 *           its user); PUSH_REGISTER processes then close it and open the
 *           next (at most REG_INFLIGHT at a time), PUSH_ONLINE ones keep
 *           it and heartbeat like idle's; R_READY when all are registered.
 *           PUSH_ONLINE counts the tagged messages its members get.
 *
 * Nothing on the delivery path allocates or prints.
 */
#define _GNU_SOURCE
#include "perf/bench/bench.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <unistd.h>

#define HANDSHAKES 64
#define REG_INFLIGHT 128 /* push: registering connections open at once */
#define CMD_KEY UINT32_MAX

static struct {
	bconn *c;
	uint32_t from, n;
	int ep, out;
	/* handshakes */
	uint32_t next_start, ready;
	/* fanout: per message, members here that have it and the latest */
	uint32_t *have;
	uint64_t *last;
	/* small/acks */
	bool sending, measuring;
	uint64_t last_rid, t_go, sent;
	char *body;
	uint8_t *frame;
	uint64_t *ring; /* acks on Redis: send times, inflight per sender */
	size_t frame_cap;
	/* presence: watchers watching; when each change was sent (0 = not
	 * told yet); arrivals that came before their send time */
	uint32_t watched;
	uint64_t *sent_ns;
	uint32_t npend, cappend;
	struct change *pend; /* sent_ns holds the arrival here */
	/* search: senders done; the text's random state */
	uint32_t senders_done;
	uint64_t rng;
	/* push: pushers registered; connections closed after it */
	uint32_t registered, closed;
	bool said_refusal;
	struct final fin;
} C;

#define WATCH_RID 2 /* hello is 1; the bench's other rids are clock readings */
#define REG_RID 3   /* push.register */
#define TEXT_CAP 1024

static void write_all(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			_exit(1);
		p = (const char *)p + w;
		n -= (size_t)w;
	}
}

static void report(uint32_t kind, uint32_t idx, uint64_t a)
{
	struct report r = { kind, idx, a };

	write_all(C.out, &r, sizeof(r));
}

static void rearm(bconn *b, uint32_t k)
{
	uint32_t want = bconn_events(b);
	bool out = want & EPOLLOUT;

	if (out != b->want_out) {
		struct epoll_event ev = { .events = want, .data.u32 = k };

		b->want_out = out;
		epoll_ctl(C.ep, EPOLL_CTL_MOD, b->fd, &ev);
	}
}

static bool may_start(void)
{
	if (run.scen == SC_PUSH && run.phase == PUSH_REGISTER)
		return C.next_start - C.closed < REG_INFLIGHT;
	return C.next_start - C.ready < HANDSHAKES;
}

static void start_next(void)
{
	while (C.next_start < C.n && may_start()) {
		uint32_t k = C.next_start++;
		bconn *b = &C.c[k];
		struct epoll_event ev;

		/* fanout subscribes (NATS, Redis; parley members are in the
		 * channel already); idle: Redis SUBSCRIBEs, NATS only does
		 * CONNECT and PING */
		if (bconn_start(b, C.from + k,
				run.scen == SC_FANOUT ||
				(run.scen == SC_IDLE && bo.srv == SRV_REDIS))) {
			report(R_FAIL, C.from + k, 0);
			continue;
		}
		b->chan = run.scen == SC_SMALL ? b->id / 10 : b->id;
		ev.events = bconn_events(b);
		ev.data.u32 = k;
		b->want_out = ev.events & EPOLLOUT;
		epoll_ctl(C.ep, EPOLL_CTL_ADD, b->fd, &ev);
	}
}

/* A unique, increasing rid per process that is also the send time. */
static uint64_t next_rid(void)
{
	uint64_t t = now_ns();

	if (t <= C.last_rid)
		t = C.last_rid + 1;
	return C.last_rid = t;
}

static void send_msg(bconn *b, uint32_t idx)
{
	uint64_t rid = next_rid();
	btag t = { rid, idx, b->id };
	size_t n;

	tag_body(C.body, run.size, &t);
	if (b->srv == SRV_REDIS) {
		if (b->inflight >= run.inflight) {
			C.fin.errors++; /* more in flight than the ring holds */
			return;
		}
		n = enc_redis_xadd(C.frame, C.frame_cap, b->id, C.body, run.size);
		if (!n || bconn_send(b, C.frame, n)) {
			C.fin.errors++;
			return;
		}
		C.ring[(size_t)(b->id - C.from) * run.inflight +
		       b->nsent++ % run.inflight] = rid;
	} else {
		n = enc_parley_send(C.frame, C.frame_cap, run.chans[b->chan],
				    rid, C.body, run.size);
		if (!n || bconn_send(b, C.frame, n)) {
			C.fin.errors++;
			return;
		}
	}
	b->inflight++;
	C.sent++;
	rearm(b, b->id - C.from);
}

/* search: sender i's share of the messages, and its channels
 * (i, i + senders, i + 2 senders, ... below nchan) */
static uint32_t quota(uint32_t i)
{
	return (uint32_t)(run.msgs / run.senders +
			  (i < run.msgs % run.senders ? 1 : 0));
}

static void send_text(bconn *b)
{
	uint32_t own = (run.nchan - b->id + run.senders - 1) / run.senders;
	uint32_t j = b->id + run.senders * (b->nsent % own);
	uint64_t rid = next_rid();
	size_t len = vocab_text(&run.words, &C.rng, C.body, TEXT_CAP);
	size_t n = enc_parley_send(C.frame, C.frame_cap, run.chans[j], rid,
				   C.body, len);

	if (!n || bconn_send(b, C.frame, n)) {
		C.fin.errors++;
		return;
	}
	b->nsent++;
	b->inflight++;
	rearm(b, b->id - C.from);
}

static void sender_done(void)
{
	if (++C.senders_done == C.n)
		report(R_DONE, 0, now_ns());
}

/* presence: a watcher got change idx, at arrival */
static void change_seen(uint32_t idx, uint64_t arrival)
{
	if (C.sent_ns[idx]) {
		hist_add(&C.fin.lat, arrival - C.sent_ns[idx]);
		return;
	}
	if (C.npend == C.cappend) {
		uint32_t cap = C.cappend ? 2 * C.cappend : 1024;
		struct change *p = realloc(C.pend, cap * sizeof(*p));

		if (!p) {
			C.fin.errors++;
			return;
		}
		C.pend = p;
		C.cappend = cap;
	}
	C.pend[C.npend++] = (struct change){ idx, arrival };
}

/* ---- hooks ------------------------------------------------------------------------ */

/* push: {"op":"push.register","rid":3,"app":"parley-bench",
 * "pushkey":"pk-<user>","platform":"bench"} */
static int send_register(bconn *b)
{
	char user[96], key[112];
	proto_out o;
	int rc;

	user_name(b->id, user, sizeof(user));
	snprintf(key, sizeof(key), "pk-%s", user);
	proto_out_init(&o, 0, 256);
	proto_enc_req(&o, "push.register", REG_RID, 3);
	proto_pk_cstr(&o.pk, "app");
	proto_pk_cstr(&o.pk, "parley-bench");
	proto_pk_cstr(&o.pk, "pushkey");
	proto_pk_cstr(&o.pk, key);
	proto_pk_cstr(&o.pk, "platform");
	proto_pk_cstr(&o.pk, "bench");
	rc = bconn_send(b, o.data, o.len);
	proto_out_free(&o);
	return rc;
}

static void on_ready(bconn *b)
{
	C.ready++;
	if ((run.scen == SC_IDLE || run.scen == SC_HB ||
	     run.scen == SC_PRESENCE || run.scen == SC_PUSH) && run.hb_ms)
		b->hb_at = now_ns() + (uint64_t)(rand() % (int)run.hb_ms) * 1000000u;
	if (run.scen == SC_PUSH) {
		if (send_register(b))
			C.fin.errors++;
		rearm(b, b->id - C.from);
		return;
	}
	if (run.scen == SC_PRESENCE) {
		size_t n = enc_parley_watch(C.frame, C.frame_cap, WATCH_RID,
					    run.subject);

		if (!n || bconn_send(b, C.frame, n))
			C.fin.errors++;
		rearm(b, b->id - C.from);
		return;
	}
	if (C.ready == C.n)
		report(R_READY, 0, now_ns());
}

/* push: the answer to push.register; a refusal is said once (an
 * "unknown op" from a server without push, say) */
static void on_push_res(bconn *b, uint64_t rid, bool ok, const uint8_t *d,
			size_t len)
{
	proto_doc doc;

	if (rid != REG_RID || b->nacked) {
		C.fin.errors++;
		return;
	}
	if (!ok) {
		C.fin.errors++;
		if (!C.said_refusal &&
		    proto_decode_max(&doc, d, len, 1u << 20) == PROTO_OK) {
			const char *c = "?", *m = "";
			uint32_t cn = 1, mn = 0;

			proto_get_str(&doc.root, "code", &c, &cn);
			proto_get_str(&doc.root, "msg", &m, &mn);
			fprintf(stderr, "parley-bench: push.register refused: %.*s "
				"(%.*s)\n", (int)cn, c, (int)(mn > 200 ? 200 : mn), m);
			proto_doc_free(&doc);
		}
		C.said_refusal = true;
	}
	b->nacked = 1; /* PUSH_REGISTER: closed by conn_event */
	if (++C.registered == C.n)
		report(R_READY, 0, now_ns());
}

/* presence: the answer to presence.watch must show the subject online */
static void on_resframe(bconn *b, uint64_t rid, bool ok, const uint8_t *d,
			size_t len)
{
	const msgpack_object *m, *e;
	const char *st = NULL;
	uint32_t sn = 0;
	proto_doc doc;

	if (rid != WATCH_RID) {
		C.fin.errors++;
		return;
	}
	if (!ok || proto_decode_max(&doc, d, len, 1u << 24) != PROTO_OK) {
		C.fin.errors++;
	} else {
		m = proto_get(&doc.root, "presence");
		e = m && m->type == MSGPACK_OBJECT_MAP ?
			    proto_get(m, run.subject) : NULL;
		if (!e || e->type != MSGPACK_OBJECT_MAP ||
		    proto_get_str(e, "status", &st, &sn) || sn != 6 ||
		    memcmp(st, "online", 6))
			C.fin.errors++;
		proto_doc_free(&doc);
	}
	if (++C.watched == C.n)
		report(R_READY, 0, now_ns());
}

static void on_presence(bconn *b, const char *user, uint32_t ulen,
			const char *status, uint32_t slen)
{
	uint64_t now = now_ns();
	uint32_t idx = b->next_idx;
	const char *want = idx % 2 ? "online" : "dnd";

	if (ulen != strlen(run.subject) || memcmp(user, run.subject, ulen) ||
	    idx >= run.nchange || slen != strlen(want) ||
	    memcmp(status, want, slen)) {
		C.fin.errors++; /* not the subject's next change: a duplicate,
				 * one missed, or one never made */
		return;
	}
	b->next_idx = idx + 1;
	C.fin.deliveries++;
	change_seen(idx, now);
	if (now > C.last[idx])
		C.last[idx] = now;
	if (++C.have[idx] == C.n)
		report(R_DONE, idx, C.last[idx]);
}

static void on_deliver(bconn *b, const btag *t, uint64_t seq)
{
	uint64_t now = now_ns();

	if (run.scen == SC_SMALL) {
		if (t->from == b->id || !C.measuring)
			return; /* the sender's own copy */
		C.fin.deliveries++;
		hist_add(&C.fin.lat, now - t->sent_ns);
		return;
	}
	if (run.scen == SC_PUSH) {
		C.fin.deliveries++; /* an online member got the @channel msg */
		return;
	}
	if (run.scen != SC_FANOUT)
		return; /* acks: the sender's own copy */
	if (t->idx >= run.nmsg || t->idx < b->next_idx) {
		C.fin.errors++; /* a duplicate, or not ours */
		return;
	}
	if (t->idx != b->next_idx)
		C.fin.errors += t->idx - b->next_idx; /* skipped some */
	if (b->srv == SRV_PARLEY) {
		if (seq <= b->last_seq)
			C.fin.errors++;
		b->last_seq = seq;
	}
	b->next_idx = t->idx + 1;
	C.fin.deliveries++;
	hist_add(&C.fin.lat, now - t->sent_ns);
	if (now > C.last[t->idx])
		C.last[t->idx] = now;
	if (++C.have[t->idx] == C.n)
		report(R_DONE, t->idx, C.last[t->idx]);
}

static void on_res(bconn *b, uint64_t rid, bool ok, uint64_t n)
{
	uint64_t now = now_ns();

	if (run.scen == SC_ACKS && b->srv == SRV_REDIS) {
		/* the oldest XADD in flight on this connection */
		if (!b->inflight) {
			C.fin.errors++; /* a reply to nothing */
			return;
		}
		rid = C.ring[(size_t)(b->id - C.from) * run.inflight +
			     b->nacked++ % run.inflight];
	}
	if (!ok)
		C.fin.errors++; /* a refused send */
	if (b->inflight)
		b->inflight--;
	if (C.measuring && rid <= now) {
		C.fin.acks++;
		hist_add(&C.fin.ack, now - rid);
	}
	if (run.scen == SC_ACKS && C.sending)
		send_msg(b, 0);
	if (run.scen == SC_SEARCH) {
		uint32_t q = quota(b->id);

		if (++b->nacked > q) {
			C.fin.errors++; /* an answer to nothing */
			return;
		}
		if (b->nsent < q)
			send_text(b);
		if (b->nacked == q)
			sender_done();
	}
}

static void on_error(bconn *b, const char *what, size_t len)
{
	if (run.scen == SC_ACKS && b->srv == SRV_REDIS) {
		/* an XADD refused: answered all the same (counted there) */
		on_res(b, 0, false, 0);
		return;
	}
	C.fin.errors++;
}

static const bhooks child_hooks = { on_ready, on_deliver, on_res, on_error,
				    on_presence, NULL };
static const bhooks watch_hooks = { on_ready, on_deliver, on_res, on_error,
				    on_presence, on_resframe };
static const bhooks push_hooks = { on_ready, on_deliver, on_res, on_error,
				   on_presence, on_push_res };

/* ---- the loop ---------------------------------------------------------------------- */

static void conn_event(uint32_t k, uint32_t ev)
{
	bconn *b = &C.c[k];
	bool was_ready = b->state == BS_READY;

	if (b->state == BS_DEAD)
		return;
	if (bconn_io(b, ev)) {
		epoll_ctl(C.ep, EPOLL_CTL_DEL, b->fd, NULL);
		if (was_ready || b->state == BS_READY) {
			C.fin.dead++;
			report(R_DEAD, b->id, 0);
		} else {
			report(R_FAIL, b->id, 0);
		}
		bconn_close(b);
		b->state = BS_DEAD;
		return;
	}
	if (run.scen == SC_PUSH && run.phase == PUSH_REGISTER && b->nacked) {
		/* registered: gone again (the user is offline from here) */
		epoll_ctl(C.ep, EPOLL_CTL_DEL, b->fd, NULL);
		bconn_close(b);
		C.closed++;
		start_next();
		return;
	}
	if (!was_ready && b->state == BS_READY)
		start_next();
	rearm(b, k);
}

/* small: this process sends its share of the rate, round robin over its
 * members so that consecutive sends go to different channels */
static void small_sends(void)
{
	uint32_t nch = C.n / 10;
	double share = run.rate * (double)C.n / (double)run.total;
	uint64_t due = (uint64_t)((double)(now_ns() - C.t_go) * share / 1e9);

	while (C.sent < due && nch) {
		uint64_t r = C.sent;
		uint32_t k = (uint32_t)(r % nch) * 10 + (uint32_t)(r / nch) % 10;

		send_msg(&C.c[k], (uint32_t)r);
	}
}

static void heartbeats(void)
{
	uint64_t now = now_ns();

	for (uint32_t k = 0; k < C.n; k++) {
		bconn *b = &C.c[k];

		if (b->state != BS_READY || now < b->hb_at)
			continue;
		/* 0.9 to 1.1 times hb_ms */
		b->hb_at = now + (uint64_t)run.hb_ms * 1000000u / 10 * 9 +
			   (uint64_t)(rand() % (int)(run.hb_ms / 5 + 1)) * 1000000u;
		/* {"op":"hb"} without rid: no answer */
		if (bconn_send(b, enc_hb, sizeof(enc_hb))) {
			conn_event(k, EPOLLIN); /* finds it closed */
			continue;
		}
		if (C.measuring)
			C.fin.hbs++;
		rearm(b, k);
	}
}

static void command(int in)
{
	char cmd;
	ssize_t r = read(in, &cmd, 1);

	if (r <= 0)
		_exit(1); /* the parent is gone */
	switch (cmd) {
	case CMD_GO:
		C.sending = true;
		C.t_go = now_ns();
		if (run.scen == SC_ACKS)
			for (uint32_t k = 0; k < C.n; k++)
				for (uint32_t w = 0; w < run.inflight; w++)
					send_msg(&C.c[k], 0);
		if (run.scen == SC_SEARCH) {
			C.measuring = true; /* the whole fill */
			if (!C.n)
				report(R_DONE, 0, now_ns());
			for (uint32_t k = 0; k < C.n; k++) {
				uint32_t q = quota(C.c[k].id);

				for (uint32_t w = 0; w < run.inflight && w < q; w++)
					send_text(&C.c[k]);
				if (!q)
					sender_done();
			}
		}
		break;
	case CMD_CHANGE: {
		struct change ch;
		size_t got = 0;

		while (got < sizeof(ch)) {
			ssize_t rn = read(in, (char *)&ch + got, sizeof(ch) - got);

			if (rn < 0 && errno == EINTR)
				continue;
			if (rn <= 0)
				_exit(1);
			got += (size_t)rn;
		}
		if (ch.idx >= run.nchange || !ch.sent_ns) {
			C.fin.errors++;
			break;
		}
		C.sent_ns[ch.idx] = ch.sent_ns;
		/* arrivals that beat the news of their send time */
		for (uint32_t i = 0; i < C.npend;) {
			if (C.pend[i].idx == ch.idx) {
				hist_add(&C.fin.lat, C.pend[i].sent_ns - ch.sent_ns);
				C.pend[i] = C.pend[--C.npend];
			} else {
				i++;
			}
		}
		break;
	}
	case CMD_MEASURE:
		C.measuring = true;
		break;
	case CMD_END:
		C.measuring = false;
		C.sending = false;
		break;
	case CMD_STOP:
		for (uint32_t k = 0; k < C.n; k++)
			if (C.c[k].state != BS_READY && C.c[k].state != BS_DEAD)
				C.fin.errors++; /* never got ready */
		C.fin.errors += C.fin.dead;
		C.fin.errors += C.npend; /* a change never announced */
		report(R_FINAL, 0, 0);
		write_all(C.out, &C.fin, sizeof(C.fin));
		_exit(0);
	}
}

void child_main(uint32_t from, uint32_t to, int out, int in, pid_t parent)
{
	struct epoll_event ev, evs[512];
	uint64_t next_hb = 0;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	signal(SIGPIPE, SIG_IGN);
	srand((unsigned)getpid() ^ (unsigned)now_ns());
	memset(&C, 0, sizeof(C));
	hooks = run.scen == SC_PRESENCE ? &watch_hooks :
		run.scen == SC_PUSH ? &push_hooks : &child_hooks;
	C.from = from;
	C.n = to - from;
	C.out = out;
	C.rng = (now_ns() ^ (uint64_t)getpid() << 32) | 1;
	C.c = calloc(C.n ? C.n : 1, sizeof(*C.c));
	C.have = calloc(run.nmsg + 1, sizeof(*C.have));
	C.last = calloc(run.nmsg + 1, sizeof(*C.last));
	C.sent_ns = calloc(run.nchange + 1, sizeof(*C.sent_ns));
	C.body = malloc(run.size > TEXT_CAP ? run.size : TEXT_CAP);
	C.frame_cap = (run.size > TEXT_CAP ? run.size : TEXT_CAP) + 512;
	C.frame = malloc(C.frame_cap);
	if (run.scen == SC_ACKS && bo.srv == SRV_REDIS)
		C.ring = calloc((size_t)(C.n ? C.n : 1) * run.inflight,
				sizeof(*C.ring));
	C.ep = epoll_create1(EPOLL_CLOEXEC);
	if (!C.c || !C.have || !C.last || !C.sent_ns || !C.body || !C.frame ||
	    (run.scen == SC_ACKS && bo.srv == SRV_REDIS && !C.ring) ||
	    C.ep < 0)
		_exit(1);
	ev.events = EPOLLIN;
	ev.data.u32 = CMD_KEY;
	epoll_ctl(C.ep, EPOLL_CTL_ADD, in, &ev);
	if (!C.n)
		report(R_READY, 0, now_ns());
	start_next();
	for (;;) {
		bool beats = (run.scen == SC_IDLE || run.scen == SC_HB ||
			      run.scen == SC_PRESENCE ||
			      (run.scen == SC_PUSH && run.phase == PUSH_ONLINE)) &&
			     run.hb_ms;
		int timeout = C.sending && run.scen == SC_SMALL ? 1 :
			      beats && C.ready ? 20 : 1000;
		int n = epoll_wait(C.ep, evs, 512, timeout);

		if (n < 0 && errno != EINTR)
			_exit(1);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u32 == CMD_KEY)
				command(in);
			else
				conn_event(evs[i].data.u32, evs[i].events);
		}
		if (C.sending && run.scen == SC_SMALL)
			small_sends();
		if (beats && bo.srv == SRV_PARLEY && now_ns() >= next_hb) {
			heartbeats();
			next_hb = now_ns() + 20000000u;
		}
	}
}
