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
 *   acks    each sender keeps --inflight sends outstanding (closed loop)
 *   idle    parley heartbeats every --hb-ms (jittered); a closed
 *           connection is an error
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
	size_t frame_cap;
	struct final fin;
} C;

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

static void start_next(void)
{
	while (C.next_start < C.n &&
	       C.next_start - C.ready < HANDSHAKES) {
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
	n = enc_parley_send(C.frame, C.frame_cap, run.chans[b->chan], rid,
			    C.body, run.size);
	if (!n || bconn_send(b, C.frame, n)) {
		C.fin.errors++;
		return;
	}
	b->inflight++;
	C.sent++;
	rearm(b, b->id - C.from);
}

/* ---- hooks ------------------------------------------------------------------------ */

static void on_ready(bconn *b)
{
	C.ready++;
	if (run.scen == SC_IDLE)
		b->hb_at = now_ns() + (uint64_t)(rand() % (int)run.hb_ms) * 1000000u;
	if (C.ready == C.n)
		report(R_READY, 0, now_ns());
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
}

static void on_error(bconn *b, const char *what, size_t len)
{
	C.fin.errors++;
}

static const bhooks child_hooks = { on_ready, on_deliver, on_res, on_error };

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
	/* {"op":"hb"} without rid: no answer */
	static const uint8_t hb[] = { 0x81, 0xa2, 'o', 'p', 0xa2, 'h', 'b' };
	uint64_t now = now_ns();

	for (uint32_t k = 0; k < C.n; k++) {
		bconn *b = &C.c[k];

		if (b->state != BS_READY || now < b->hb_at)
			continue;
		/* 0.9 to 1.1 times hb_ms */
		b->hb_at = now + (uint64_t)run.hb_ms * 1000000u / 10 * 9 +
			   (uint64_t)(rand() % (int)(run.hb_ms / 5 + 1)) * 1000000u;
		if (bconn_send(b, hb, sizeof(hb)))
			conn_event(k, EPOLLIN); /* finds it closed */
		else
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
		break;
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
	hooks = &child_hooks;
	C.from = from;
	C.n = to - from;
	C.out = out;
	C.c = calloc(C.n ? C.n : 1, sizeof(*C.c));
	C.have = calloc(run.nmsg + 1, sizeof(*C.have));
	C.last = calloc(run.nmsg + 1, sizeof(*C.last));
	C.body = malloc(run.size);
	C.frame_cap = run.size + 512;
	C.frame = malloc(C.frame_cap);
	C.ep = epoll_create1(EPOLL_CLOEXEC);
	if (!C.c || !C.have || !C.last || !C.body || !C.frame || C.ep < 0)
		_exit(1);
	ev.events = EPOLLIN;
	ev.data.u32 = CMD_KEY;
	epoll_ctl(C.ep, EPOLL_CTL_ADD, in, &ev);
	if (!C.n)
		report(R_READY, 0, now_ns());
	start_next();
	for (;;) {
		int timeout = C.sending && run.scen == SC_SMALL ? 1 :
			      run.scen == SC_IDLE && C.ready ? 20 : 1000;
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
		if (run.scen == SC_IDLE && bo.srv == SRV_PARLEY &&
		    now_ns() >= next_hb) {
			heartbeats();
			next_hb = now_ns() + 20000000u;
		}
	}
}
