/*
 * parley-bench: drives parleyd, nats-server (WebSocket) or redis-server
 * (pub/sub) from epoll loops, in several processes when one may not open
 * enough sockets, and prints one JSON object per run (perf/run-bench
 * collects them). Scenarios: fanout (paced | burst), small, acks, idle. See
 * usage() and perf/README.md.
 *
 * Processes: the parent sets up, publishes and measures the server (CPU
 * from /proc/PID/stat, RSS from /proc/PID/status, stage histograms from
 * parleyd's /metrics); children hold the subscriber connections and report
 * through pipes: "all my members have message i, the last at T", and at the
 * end their latency histogram and error count.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "actors/actors.h"
#include "perf/bench/bench.h"

static struct {
	const char *server, *scenario, *mode, *secret, *json, *ws, *prefix,
		*host;
	int port, pid, members, online, messages, size, channels, rate,
		senders, inflight, conns, hb_ms, duration, procs, timeout;
	bool quiet;
} opt = {
	.host = "127.0.0.1", .ws = "bench", .mode = "paced", .members = 25000,
	.online = -1, .messages = -1, .size = 200, .channels = 100,
	.rate = 1000, .senders = 64, .inflight = 1, .conns = 1000,
	.hb_ms = 5000, .duration = 10, .timeout = 300,
};

static bopts bo;
static uint8_t key[512];
static char prefix_buf[32];
static uint64_t deadline_ns;

static void usage(void)
{
	fprintf(stderr,
"usage: parley-bench --server parley|nats|redis --scenario fanout|small|acks|idle\n"
"                    --port N --pid N [options]\n"
"  --host H (127.0.0.1)   --secret FILE (parley)   --ws ID (bench)  --prefix P\n"
"  fanout: --mode paced|burst --members M (25000) --online N (min(M,19000))\n"
"          --messages K (paced 200, burst 2000) --size B (200)\n"
"  small:  --channels C (100) --rate R (1000 sends/s in all) --duration S\n"
"  acks:   --senders S (64) --inflight W (1) --duration S (10)\n"
"  idle:   --conns N (1000) --hb-ms MS (5000) --duration S (10)\n"
"  --procs P  --timeout S (300)  --json FILE  --quiet\n");
	exit(2);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	if (opt.quiet)
		return;
	va_start(ap, fmt);
	fputs("parley-bench: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("parley-bench: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void check_deadline(void)
{
	if (now_ns() > deadline_ns)
		die("timed out after %d s", opt.timeout);
}

/* ---- the result object ---------------------------------------------------- */

struct result {
	double duration_s, deliveries, deliveries_per_s, server_cpu_s, acks,
		acks_per_s, rss_bytes, rss_per_conn, handshakes_per_s,
		cpu_per_s;
	hist *lat, *p2l, *ack;
	uint64_t errors;
	char *stages; /* JSON object text or NULL */
};

static void put_pcts(FILE *f, const char *name, const hist *h)
{
	if (!h || !h->n)
		return;
	fprintf(f, ",\"%s\":{\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,"
		   "\"p999\":%.4f,\"max\":%.4f}",
		name, hist_pct_ms(h, 0.5), hist_pct_ms(h, 0.9),
		hist_pct_ms(h, 0.99), hist_pct_ms(h, 0.999), hist_pct_ms(h, 1));
}

static void emit(const struct result *r)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	bool fan = !strcmp(opt.scenario, "fanout");

	fprintf(f, "{\"scenario\":\"%s\",\"mode\":", opt.scenario);
	if (fan)
		fprintf(f, "\"%s\"", opt.mode);
	else
		fprintf(f, "null");
	fprintf(f, ",\"server\":\"%s\",\"procs\":%d,\"size\":%d", opt.server,
		opt.procs, opt.size);
	if (fan)
		fprintf(f, ",\"members\":%d,\"online\":%d,\"messages\":%d",
			opt.members, opt.online, opt.messages);
	if (!strcmp(opt.scenario, "small"))
		fprintf(f, ",\"channels\":%d,\"rate\":%d,\"members\":%d,\"online\":%d",
			opt.channels, opt.rate, opt.channels * 10,
			opt.channels * 10);
	if (!strcmp(opt.scenario, "acks"))
		fprintf(f, ",\"senders\":%d,\"inflight\":%d", opt.senders,
			opt.inflight);
	if (!strcmp(opt.scenario, "idle"))
		fprintf(f, ",\"conns\":%d,\"hb_ms\":%d", opt.conns, opt.hb_ms);
	fprintf(f, ",\"duration_s\":%.3f,\"server_cpu_s\":%.3f",
		r->duration_s, r->server_cpu_s);
	if (r->deliveries > 0)
		fprintf(f, ",\"deliveries\":%.0f,\"deliveries_per_s\":%.1f,"
			   "\"deliveries_per_server_cpu_s\":%.1f",
			r->deliveries, r->deliveries_per_s,
			r->server_cpu_s > 0 ? r->deliveries / r->server_cpu_s : 0);
	put_pcts(f, "latency_ms", r->lat);
	put_pcts(f, "publish_to_last_ms", r->p2l);
	if (r->acks > 0)
		fprintf(f, ",\"acks\":%.0f,\"acks_per_s\":%.1f", r->acks,
			r->acks_per_s);
	put_pcts(f, "ack_ms", r->ack);
	if (r->rss_bytes > 0)
		fprintf(f, ",\"rss_bytes\":%.0f", r->rss_bytes);
	if (r->rss_per_conn > 0)
		fprintf(f, ",\"rss_bytes_per_conn\":%.1f", r->rss_per_conn);
	if (r->handshakes_per_s > 0)
		fprintf(f, ",\"handshakes_per_s\":%.1f,\"server_cpu_per_s\":%.4f",
			r->handshakes_per_s, r->cpu_per_s);
	fprintf(f, ",\"stages\":%s,\"errors\":%llu}", r->stages ? r->stages : "{}",
		(unsigned long long)r->errors);
	fclose(f);
	printf("%s\n", text);
	fflush(stdout);
	if (opt.json) {
		FILE *j = fopen(opt.json, "w");

		if (!j)
			die("cannot write %s: %s", opt.json, strerror(errno));
		fprintf(j, "%s\n", text);
		fclose(j);
	}
	free(text);
}

/* ---- parleyd's /metrics: parley_stage_seconds ----------------------------- */

#define MAX_STAGES 16
#define MAX_LE 64

struct stages {
	unsigned n;
	struct {
		char name[32];
		unsigned nle;
		double le[MAX_LE], cum[MAX_LE];
		double sum, count;
	} s[MAX_STAGES];
};

static char *http_get(const char *path)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)opt.port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	char req[256], *buf = NULL;
	size_t len = 0, cap = 0;
	ssize_t n;

	inet_pton(AF_INET, opt.host, &sa.sin_addr);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	n = snprintf(req, sizeof(req),
		     "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		     path);
	if (write(fd, req, (size_t)n) != n) {
		close(fd);
		return NULL;
	}
	for (;;) {
		if (len + 65536 > cap) {
			cap = cap * 2 + 65536;
			buf = realloc(buf, cap + 1);
		}
		n = read(fd, buf + len, cap - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (buf)
		buf[len] = 0;
	return buf;
}

static int stage_of(struct stages *st, const char *name, size_t n)
{
	for (unsigned i = 0; i < st->n; i++)
		if (strlen(st->s[i].name) == n && !memcmp(st->s[i].name, name, n))
			return (int)i;
	if (st->n == MAX_STAGES || n >= sizeof(st->s[0].name))
		return -1;
	memcpy(st->s[st->n].name, name, n);
	st->s[st->n].name[n] = 0;
	return (int)st->n++;
}

static void read_stages(struct stages *st)
{
	char *text = opt.port && !strcmp(opt.server, "parley") ?
			     http_get("/metrics") : NULL;

	memset(st, 0, sizeof(*st));
	for (char *l = text; l && *l;) {
		char *nl = strchr(l, '\n'), *q, *e;
		int i;

		if (nl)
			*nl = 0;
		if (!strncmp(l, "parley_stage_seconds", 20) &&
		    (q = strstr(l, "stage=\"")) && (e = strchr(q + 7, '"')) &&
		    (i = stage_of(st, q + 7, (size_t)(e - q - 7))) >= 0) {
			double v = strtod(strrchr(l, ' ') + 1, NULL);
			char *le = strstr(l, "le=\"");

			if (!strncmp(l + 20, "_bucket", 7) && le &&
			    st->s[i].nle < MAX_LE) {
				unsigned k = st->s[i].nle++;

				st->s[i].le[k] = strncmp(le + 4, "+Inf", 4) ?
							 strtod(le + 4, NULL) :
							 1e300;
				st->s[i].cum[k] = v;
			} else if (!strncmp(l + 20, "_sum", 4)) {
				st->s[i].sum = v;
			} else if (!strncmp(l + 20, "_count", 6)) {
				st->s[i].count = v;
			}
		}
		l = nl ? nl + 1 : NULL;
	}
	free(text);
}

/* after - before, as a JSON object; a table on stderr */
static char *stages_json(const struct stages *a, const struct stages *b)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	fputc('{', f);
	if (b->n)
		say("where the time goes (parleyd /metrics, this run):\n"
		    "  %-14s %10s %10s %10s %10s", "stage", "count", "mean_ms",
		    "p50_ms", "p99_ms");
	for (unsigned i = 0; i < b->n; i++) {
		const char *name = b->s[i].name;
		double count = b->s[i].count, sum = b->s[i].sum, pct[2];
		unsigned j = 0;

		for (; j < a->n && strcmp(a->s[j].name, name); j++)
			;
		if (j < a->n) {
			count -= a->s[j].count;
			sum -= a->s[j].sum;
		}
		for (int q = 0; q < 2; q++) {
			double want = (q ? 0.99 : 0.5) * count, prev_le = 0,
			       prev_c = 0;

			pct[q] = 0;
			for (unsigned k = 0; k < b->s[i].nle && count > 0; k++) {
				double c = b->s[i].cum[k] -
					   (j < a->n && k < a->s[j].nle ?
						    a->s[j].cum[k] : 0);
				double le = b->s[i].le[k];

				if (c >= want) {
					if (le > 1e299)
						le = prev_le;
					/* linear inside the bucket */
					pct[q] = c > prev_c ?
						prev_le + (le - prev_le) *
							(want - prev_c) / (c - prev_c) :
						le;
					break;
				}
				prev_le = le;
				prev_c = c;
			}
		}
		fprintf(f, "%s\"%s\":{\"count\":%.0f,\"mean_ms\":%.4f,"
			   "\"p50_ms\":%.4f,\"p99_ms\":%.4f}",
			i ? "," : "", name, count,
			count > 0 ? sum / count * 1e3 : 0, pct[0] * 1e3,
			pct[1] * 1e3);
		say("  %-14s %10.0f %10.3f %10.3f %10.3f", name, count,
		    count > 0 ? sum / count * 1e3 : 0, pct[0] * 1e3,
		    pct[1] * 1e3);
	}
	fputc('}', f);
	fclose(f);
	return text;
}

/* ---- parley requests (setup, and the publishers) ------------------------- */

static uint64_t next_rid = 1;

static void request_ok(pc_conn *c, proto_out *o, uint64_t rid, proto_doc *res)
{
	bool ok = false;

	if (pc_request(c, o, rid, res, 60000) != 1)
		die("request %llu: no answer", (unsigned long long)rid);
	proto_get_bool(&res->root, "ok", &ok);
	if (!ok) {
		const char *code = "?";
		uint32_t n = 1;

		proto_get_str(&res->root, "code", &code, &n);
		die("request refused: %.*s", (int)n, code);
	}
}

/* A blocking connection as user uid, after hello (setup requests). */
static pc_conn *parley_user(uint32_t uid, unsigned srcidx)
{
	char src[32], user[96], *tok;
	proto_doc res;
	pc_conn *c = pc_connect(bo.host, bo.port, src_ip(srcidx, src),
				"parley.v1", 30000);

	user_name(&bo, uid, user, sizeof(user));
	tok = mint(&bo, user);
	if (!c || pc_hello(c, tok, NULL, NULL, 0, &res, 60000) != 1)
		die("user %s: connect or hello failed", user);
	free(tok);
	proto_doc_free(&res);
	return c;
}

static void create_channel(pc_conn *c, char *ch)
{
	proto_out o;
	proto_doc res;
	const msgpack_object_map *m;
	const char *s;
	uint32_t n;
	uint64_t rid = next_rid++;

	proto_out_init(&o, 0, 256);
	proto_enc_req(&o, "ch.create", rid, 2);
	proto_pk_cstr(&o.pk, "name");
	proto_pk_cstr(&o.pk, "bench");
	proto_pk_cstr(&o.pk, "kind");
	proto_pk_cstr(&o.pk, "public");
	request_ok(c, &o, rid, &res);
	if (proto_get_map(&res.root, "ch", &m))
		die("ch.create: no ch");
	msgpack_object mo = { .type = MSGPACK_OBJECT_MAP, .via.map = *m };
	if (proto_get_str(&mo, "id", &s, &n) || n > PROTO_MAX_ID)
		die("ch.create: no id");
	memcpy(ch, s, n);
	ch[n] = 0;
	proto_doc_free(&res);
	proto_out_free(&o);
}

static void invite(pc_conn *c, const char *ch, uint32_t from, uint32_t to)
{
	proto_out o;
	proto_doc res;
	char u[96];
	uint64_t rid = next_rid++;

	proto_out_init(&o, 0, 64 * 1024);
	proto_enc_req(&o, "ch.invite", rid, 2);
	proto_pk_cstr(&o.pk, "ch");
	proto_pk_cstr(&o.pk, ch);
	proto_pk_cstr(&o.pk, "users");
	msgpack_pack_array(&o.pk, to - from);
	for (uint32_t i = from; i < to; i++) {
		user_name(&bo, i, u, sizeof(u));
		proto_pk_cstr(&o.pk, u);
	}
	request_ok(c, &o, rid, &res);
	proto_doc_free(&res);
	proto_out_free(&o);
}

static void parley_send(pc_conn *c, const char *ch, uint64_t rid,
			const char *body, size_t blen)
{
	char cmid[32];
	proto_out o;

	snprintf(cmid, sizeof(cmid), "b%llu", (unsigned long long)rid);
	proto_out_init(&o, 0, 512 + blen);
	proto_enc_send(&o, rid, ch, body, (uint32_t)blen, cmid, 0, NULL, 0);
	if (pc_queue(c, 2, o.data, o.len))
		die("send: connection closed");
	proto_out_free(&o);
}

/* A parley frame that is a response: its rid and ok; 0 if not one. */
static int parley_res(const uint8_t *d, size_t len, uint64_t *rid, bool *ok)
{
	proto_doc doc;
	const char *t;
	uint32_t tn;
	int is = 0;

	if (memmem(d, len, "PBT:", 4) || proto_decode(&doc, d, len) != PROTO_OK)
		return 0;
	if (!proto_get_str(&doc.root, "t", &t, &tn) && tn == 3 &&
	    !memcmp(t, "res", 3) && !proto_get_uint(&doc.root, "rid", rid)) {
		*ok = false;
		proto_get_bool(&doc.root, "ok", ok);
		is = 1;
	}
	proto_doc_free(&doc);
	return is;
}

/* Reads and drops whatever a publisher connection got; counts refusals. */
static uint64_t refused;
static void drain_pub(bconn *p)
{
	const uint8_t *d;
	size_t len;
	int rc;

	if (p->srv == SRV_REDIS) {
		char buf[65536];

		while (read(p->fd, buf, sizeof(buf)) > 0)
			;
		return;
	}
	if (pc_on_readable(p->pc) < 0)
		die("publisher connection closed");
	while ((rc = pc_next(p->pc, &d, &len)) == 1) {
		uint64_t rid;
		bool ok;

		if (p->srv == SRV_PARLEY && parley_res(d, len, &rid, &ok) && !ok)
			refused++;
	}
	if (rc < 0)
		die("publisher connection closed");
}

/* ---- children: subscriber connections -------------------------------------- */

struct report { /* child -> parent, fixed size records */
	uint32_t kind; /* 1 ready, 2 message complete, 3 done */
	uint32_t idx;
	uint64_t a, b; /* ready: setup ns; complete: last arrival ns */
};

struct child {
	pid_t pid;
	int rd, wr; /* reports from it; commands to it */
	uint32_t from, to;
};

struct sub_state {
	bconn *conns;
	uint32_t n;
	uint32_t *count;  /* per message: members of this child that have it */
	uint64_t *last;   /* per message: latest arrival */
	uint32_t nmsg;
	hist lat;
	uint64_t errors, deliveries;
	int out;
};

static void on_tag(void *arg, bconn *b, uint64_t sent, uint32_t idx)
{
	struct sub_state *st = arg;
	uint64_t now = now_ns();

	if (idx >= st->nmsg || idx != b->next_idx) {
		st->errors++; /* missing, duplicate or out of order */
		if (idx >= st->nmsg)
			return;
		if (idx < b->next_idx)
			return;
	}
	b->next_idx = idx + 1;
	st->deliveries++;
	hist_add(&st->lat, now - sent);
	if (now > st->last[idx])
		st->last[idx] = now;
	if (++st->count[idx] == st->n) {
		struct report r = { 2, idx, st->last[idx], 0 };

		if (write(st->out, &r, sizeof(r)) != sizeof(r))
			exit(1);
	}
}

static void write_all_fd(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w <= 0) {
			if (w < 0 && errno == EINTR)
				continue;
			exit(1);
		}
		p = (const char *)p + w;
		n -= (size_t)w;
	}
}

static void read_all_fd(int fd, void *p, size_t n)
{
	while (n) {
		ssize_t r = read(fd, p, n);

		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			die("a client process went away");
		}
		p = (char *)p + r;
		n -= (size_t)r;
	}
}

static const char *subject(void)
{
	return bo.srv == SRV_PARLEY ? NULL : "bench.fanout";
}

/* idle: parley heartbeats */
static void send_hb(bconn *b)
{
	static const uint8_t hb[] = { 0x81, 0xa2, 'o', 'p', 0xa2, 'h', 'b' };

	if (b->srv == SRV_PARLEY && pc_queue(b->pc, 2, hb, sizeof(hb)) == 0)
		pc_flush(b->pc);
}

static void child_main(struct child *me, int out, int in, uint32_t nmsg,
		       bool idle)
{
	struct sub_state st = { 0 };
	struct epoll_event ev, evs[256];
	int ep = epoll_create1(EPOLL_CLOEXEC);
	uint64_t t0 = now_ns(), *hb_at = NULL;
	struct report r;
	char cmd;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	st.n = me->to - me->from;
	st.conns = calloc(st.n ? st.n : 1, sizeof(*st.conns));
	st.nmsg = nmsg;
	st.count = calloc(nmsg ? nmsg : 1, sizeof(*st.count));
	st.last = calloc(nmsg ? nmsg : 1, sizeof(*st.last));
	st.out = out;
	for (uint32_t i = 0; i < st.n; i++) {
		bconn *b = &st.conns[i];

		if (bconn_open_sub(b, &bo, me->from + i, me->from + i, subject()))
			die("member %u: connect/subscribe failed", me->from + i);
		ev.events = EPOLLIN;
		ev.data.u32 = i;
		epoll_ctl(ep, EPOLL_CTL_ADD, b->fd, &ev);
	}
	r = (struct report){ 1, 0, now_ns() - t0, 0 };
	write_all_fd(out, &r, sizeof(r));
	if (idle) {
		hb_at = malloc((st.n ? st.n : 1) * sizeof(*hb_at));
		for (uint32_t i = 0; i < st.n; i++)
			hb_at[i] = now_ns() + (uint64_t)(rand() % opt.hb_ms) * 1000000u;
	}
	ev.events = EPOLLIN;
	ev.data.u32 = UINT32_MAX;
	epoll_ctl(ep, EPOLL_CTL_ADD, in, &ev);
	for (;;) {
		int n = epoll_wait(ep, evs, 256, idle ? 50 : 1000);

		for (int i = 0; i < n; i++) {
			uint32_t k = evs[i].data.u32;

			if (k == UINT32_MAX) {
				if (read(in, &cmd, 1) != 1 || cmd == 'S')
					goto done;
				continue;
			}
			if (st.conns[k].dead)
				continue;
			if (bconn_on_readable(&st.conns[k], on_tag, &st)) {
				st.conns[k].dead = true;
				st.errors++;
				epoll_ctl(ep, EPOLL_CTL_DEL, st.conns[k].fd, NULL);
			}
		}
		if (idle) {
			uint64_t now = now_ns();

			for (uint32_t i = 0; i < st.n; i++)
				if (!st.conns[i].dead && now >= hb_at[i]) {
					send_hb(&st.conns[i]);
					hb_at[i] = now + (uint64_t)opt.hb_ms * 1000000u;
				}
		}
	}
done:
	r = (struct report){ 3, 0, st.errors, st.deliveries };
	write_all_fd(out, &r, sizeof(r));
	write_all_fd(out, &st.lat, sizeof(st.lat));
	_exit(0);
}

static struct child *spawn(uint32_t total, uint32_t nmsg, bool idle)
{
	struct child *ch = calloc((size_t)opt.procs, sizeof(*ch));

	for (int i = 0; i < opt.procs; i++) {
		int up[2], down[2];

		if (pipe2(up, O_CLOEXEC) || pipe2(down, O_CLOEXEC))
			die("pipe: %s", strerror(errno));
		ch[i].from = (uint32_t)((uint64_t)total * (uint64_t)i / (uint64_t)opt.procs);
		ch[i].to = (uint32_t)((uint64_t)total * (uint64_t)(i + 1) / (uint64_t)opt.procs);
		fflush(NULL);
		ch[i].pid = fork();
		if (ch[i].pid < 0)
			die("fork: %s", strerror(errno));
		if (!ch[i].pid) {
			close(up[0]);
			close(down[1]);
			srand((unsigned)getpid());
			child_main(&ch[i], up[1], down[0], nmsg, idle);
		}
		close(up[1]);
		close(down[0]);
		ch[i].rd = up[0];
		ch[i].wr = down[1];
	}
	return ch;
}

/* Waits for every child's "ready"; returns the slowest child's setup time. */
static uint64_t wait_ready(struct child *ch)
{
	uint64_t slowest = 0;

	for (int i = 0; i < opt.procs; i++) {
		struct report r;

		read_all_fd(ch[i].rd, &r, sizeof(r));
		if (r.kind != 1)
			die("client process %d: unexpected report", i);
		if (r.a > slowest)
			slowest = r.a;
	}
	return slowest;
}

/* Stops the children and merges their histograms and counts. */
static void collect(struct child *ch, hist *lat, uint64_t *errors,
		    uint64_t *deliveries)
{
	hist *h = malloc(sizeof(*h));

	for (int i = 0; i < opt.procs; i++)
		if (write(ch[i].wr, "S", 1) != 1)
			die("client process %d went away", i);
	for (int i = 0; i < opt.procs; i++) {
		struct report r;

		do
			read_all_fd(ch[i].rd, &r, sizeof(r));
		while (r.kind == 2);
		read_all_fd(ch[i].rd, h, sizeof(*h));
		hist_merge(lat, h);
		*errors += r.a;
		*deliveries += r.b;
		waitpid(ch[i].pid, NULL, 0);
	}
	free(h);
}

/* ---- fanout ------------------------------------------------------------------ */

/* Returns the time written into the tag. */
static uint64_t publish(bconn *p, const char *ch, uint32_t idx, char *body)
{
	uint64_t now = now_ns();

	tag_body(body, (size_t)opt.size, now, idx);
	switch (p->srv) {
	case SRV_PARLEY:
		parley_send(p->pc, ch, idx + 1, body, (size_t)opt.size);
		break;
	case SRV_NATS: {
		char *m = malloc((size_t)opt.size + 64);
		int n = sprintf(m, "PUB bench.fanout %d\r\n", opt.size);

		memcpy(m + n, body, (size_t)opt.size);
		memcpy(m + n + opt.size, "\r\n", 2);
		if (pc_queue(p->pc, 2, m, (size_t)n + (size_t)opt.size + 2))
			die("publish: connection closed");
		free(m);
		break;
	}
	case SRV_REDIS: {
		char *m = malloc((size_t)opt.size + 64);
		int n = sprintf(m, "PUBLISH bench.fanout ");

		memcpy(m + n, body, (size_t)opt.size);
		memcpy(m + n + opt.size, "\r\n", 2);
		write_all_fd(p->fd, m, (size_t)n + (size_t)opt.size + 2);
		free(m);
		break;
	}
	}
	return now;
}

static void flush_pub(bconn *p)
{
	if (p->srv != SRV_REDIS && pc_pending(p->pc))
		pc_flush(p->pc);
}

static void run_fanout(struct result *res)
{
	bool paced = !strcmp(opt.mode, "paced");
	uint32_t K = (uint32_t)opt.messages, done_msgs = 0;
	uint32_t *have = calloc(K, sizeof(*have));
	uint64_t *sent = calloc(K, sizeof(*sent)), *last = calloc(K, sizeof(*last));
	char ch[PROTO_MAX_ID + 1] = "", *body = malloc((size_t)opt.size);
	struct stages s0, s1;
	struct child *kids;
	bconn pub;
	double cpu0, cpu1;
	uint64_t t_first, t_last = 0;
	uint32_t next = 0;

	if (bo.srv == SRV_PARLEY) {
		pc_conn *owner;

		/* the owner is user index members (after the members) */
		owner = parley_user((uint32_t)opt.members, 0);
		create_channel(owner, ch);
		for (uint32_t i = 0; i < (uint32_t)opt.members; i += 1000)
			invite(owner, ch, i,
			       i + 1000 < (uint32_t)opt.members ? i + 1000 :
								  (uint32_t)opt.members);
		say("channel %s: %d members invited", ch, opt.members);
		memset(&pub, 0, sizeof(pub));
		pub.srv = SRV_PARLEY;
		pub.pc = owner;
		pub.fd = pc_fd(owner);
		pc_set_nonblocking(owner);
	} else if (bconn_open_sub(&pub, &bo, 0, 1, NULL)) {
		die("publisher: connect failed");
	}
	kids = spawn((uint32_t)opt.online, K, false);
	wait_ready(kids);
	say("%d members online in %d processes; publishing %u (%s)",
	    opt.online, opt.procs, K, opt.mode);

	struct pollfd *pf = calloc((size_t)opt.procs + 1, sizeof(*pf));

	for (int i = 0; i < opt.procs; i++)
		pf[i] = (struct pollfd){ .fd = kids[i].rd, .events = POLLIN };
	pf[opt.procs] = (struct pollfd){ .fd = pub.fd, .events = POLLIN };

	read_stages(&s0);
	cpu0 = proc_cpu_s(opt.pid);
	t_first = now_ns();
	while (done_msgs < K) {
		check_deadline();
		if (next < K && (!paced || next == done_msgs)) {
			/* burst: everything at once; paced: one at a time */
			do {
				sent[next] = publish(&pub, ch, next, body);
				next++;
			} while (!paced && next < K && (next % 64));
			flush_pub(&pub);
		}
		pf[opt.procs].events = POLLIN |
			(pub.srv != SRV_REDIS && pc_pending(pub.pc) ? POLLOUT : 0);
		if (poll(pf, (nfds_t)opt.procs + 1,
			 !paced && next < K ? 0 : 1000) < 0 && errno != EINTR)
			die("poll: %s", strerror(errno));
		if (pf[opt.procs].revents & POLLIN)
			drain_pub(&pub);
		if (pf[opt.procs].revents & POLLOUT)
			flush_pub(&pub);
		for (int i = 0; i < opt.procs; i++) {
			struct report r;

			if (!(pf[i].revents & POLLIN))
				continue;
			read_all_fd(kids[i].rd, &r, sizeof(r));
			if (r.kind != 2 || r.idx >= K)
				die("client process %d: unexpected report", i);
			if (r.a > last[r.idx])
				last[r.idx] = r.a;
			if (++have[r.idx] == (uint32_t)opt.procs) {
				done_msgs++;
				if (last[r.idx] > t_last)
					t_last = last[r.idx];
			}
		}
	}
	cpu1 = proc_cpu_s(opt.pid);
	read_stages(&s1);
	res->rss_bytes = (double)proc_rss(opt.pid);

	res->lat = calloc(1, sizeof(hist));
	res->p2l = calloc(1, sizeof(hist));
	for (uint32_t i = 0; i < K; i++)
		hist_add(res->p2l, last[i] - sent[i]);
	uint64_t errors = 0, deliveries = 0;

	collect(kids, res->lat, &errors, &deliveries);
	res->errors = errors + refused;
	if (deliveries != (uint64_t)K * (uint64_t)opt.online)
		res->errors++;
	res->deliveries = (double)deliveries;
	res->duration_s = (double)(t_last - t_first) / 1e9;
	res->deliveries_per_s = res->deliveries / res->duration_s;
	res->server_cpu_s = cpu1 - cpu0;
	res->stages = stages_json(&s0, &s1);
	bconn_close(&pub);
}

/* ---- acks and small: one process, parley only ------------------------------- */

struct sender {
	bconn b;
	char ch[PROTO_MAX_ID + 1];
	uint64_t rid, *t; /* send time per rid % 64 */
	uint32_t out;     /* in flight */
};

static void run_acks(struct result *res)
{
	uint32_t S = (uint32_t)opt.senders, W = (uint32_t)opt.inflight;
	struct sender *s = calloc(S, sizeof(*s));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev, evs[256];
	char *body = malloc((size_t)opt.size);
	struct stages s0, s1;
	uint64_t t_warm, t_end, acks = 0;
	double cpu0 = 0;
	bool measuring = false;

	res->ack = calloc(1, sizeof(hist));
	for (uint32_t i = 0; i < S; i++) {
		s[i].b.pc = parley_user(i, i);
		s[i].b.srv = SRV_PARLEY;
		s[i].b.fd = pc_fd(s[i].b.pc);
		create_channel(s[i].b.pc, s[i].ch);
		pc_set_nonblocking(s[i].b.pc);
		s[i].t = calloc(64, sizeof(uint64_t));
		ev.events = EPOLLIN;
		ev.data.u32 = i;
		epoll_ctl(ep, EPOLL_CTL_ADD, s[i].b.fd, &ev);
	}
	say("%u senders, %u in flight each, %d s", S, W, opt.duration);
	for (uint32_t i = 0; i < S; i++) {
		for (uint32_t w = 0; w < W; w++) {
			uint64_t rid = ++s[i].rid;

			tag_body(body, (size_t)opt.size, now_ns(), 0);
			s[i].t[rid % 64] = now_ns();
			parley_send(s[i].b.pc, s[i].ch, next_rid + rid, body,
				    (size_t)opt.size);
			s[i].out++;
		}
		pc_flush(s[i].b.pc);
	}
	t_warm = now_ns() + 1000000000u;
	t_end = t_warm + (uint64_t)opt.duration * 1000000000u;
	for (;;) {
		uint64_t now = now_ns();
		int n;

		if (!measuring && now >= t_warm) {
			measuring = true;
			read_stages(&s0);
			cpu0 = proc_cpu_s(opt.pid);
		}
		if (now >= t_end)
			break;
		check_deadline();
		n = epoll_wait(ep, evs, 256, 100);
		for (int e = 0; e < n; e++) {
			struct sender *x = &s[evs[e].data.u32];
			const uint8_t *d;
			size_t len;
			int rc;

			if (pc_on_readable(x->b.pc) < 0)
				die("sender %u: connection closed", evs[e].data.u32);
			while ((rc = pc_next(x->b.pc, &d, &len)) == 1) {
				uint64_t rid;
				bool ok;

				if (!parley_res(d, len, &rid, &ok))
					continue;
				rid -= next_rid;
				if (!ok)
					res->errors++;
				now = now_ns();
				if (measuring) {
					hist_add(res->ack, now - x->t[rid % 64]);
					acks++;
				}
				rid = ++x->rid;
				tag_body(body, (size_t)opt.size, now, 0);
				x->t[rid % 64] = now;
				parley_send(x->b.pc, x->ch, next_rid + rid, body,
					    (size_t)opt.size);
			}
			if (rc < 0)
				die("sender: connection closed");
			pc_flush(x->b.pc);
		}
	}
	res->server_cpu_s = proc_cpu_s(opt.pid) - cpu0;
	read_stages(&s1);
	res->stages = stages_json(&s0, &s1);
	res->duration_s = opt.duration;
	res->acks = (double)acks;
	res->acks_per_s = (double)acks / opt.duration;
	res->rss_bytes = (double)proc_rss(opt.pid);
	for (uint32_t i = 0; i < S; i++)
		bconn_close(&s[i].b);
}

/* small: channels of 10 members, all online, a steady total rate */
struct small_state {
	uint32_t *sender; /* message index -> sender uid */
	uint64_t *t_send;
	uint32_t nmsg;
	hist *lat, *ack;
	uint64_t deliveries, acks, errors;
	bool measuring;
};

static void small_tag(void *arg, bconn *b, uint64_t sent, uint32_t idx)
{
	struct small_state *st = arg;

	if (idx >= st->nmsg)
		return;
	if (st->measuring) {
		st->deliveries++;
		if (b->uid != st->sender[idx])
			hist_add(st->lat, now_ns() - sent);
	}
}

static void run_small(struct result *res)
{
	uint32_t C = (uint32_t)opt.channels, N = C * 10;
	bconn *m = calloc(N, sizeof(*m));
	char (*chs)[PROTO_MAX_ID + 1] = calloc(C, sizeof(*chs));
	struct small_state st = { 0 };
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev, evs[256];
	char *body = malloc((size_t)opt.size);
	struct stages s0, s1;
	uint64_t t0, t_warm, t_end;
	double cpu0 = 0;
	uint32_t sent = 0, rr = 0;

	st.nmsg = (uint32_t)((uint64_t)opt.rate * (uint64_t)(opt.duration + 2) + 16);
	st.sender = calloc(st.nmsg, sizeof(*st.sender));
	st.t_send = calloc(st.nmsg, sizeof(*st.t_send));
	st.lat = res->lat = calloc(1, sizeof(hist));
	st.ack = res->ack = calloc(1, sizeof(hist));
	/* member 10j creates channel j and invites 10j+1..10j+9 */
	for (uint32_t j = 0; j < C; j++) {
		pc_conn *c = parley_user(10 * j, 10 * j);

		create_channel(c, chs[j]);
		invite(c, chs[j], 10 * j + 1, 10 * j + 10);
		pc_close(c);
	}
	for (uint32_t i = 0; i < N; i++) {
		if (bconn_open_sub(&m[i], &bo, i, i, NULL))
			die("member %u: connect failed", i);
		ev.events = EPOLLIN;
		ev.data.u32 = i;
		epoll_ctl(ep, EPOLL_CTL_ADD, m[i].fd, &ev);
	}
	say("%u channels of 10, %d sends/s for %d s", C, opt.rate, opt.duration);
	t0 = now_ns();
	t_warm = t0 + 1000000000u;
	t_end = t_warm + (uint64_t)opt.duration * 1000000000u;
	for (;;) {
		uint64_t now = now_ns();
		uint64_t due = (now - t0) * (uint64_t)opt.rate / 1000000000u;
		int n;

		if (!st.measuring && now >= t_warm) {
			st.measuring = true;
			read_stages(&s0);
			cpu0 = proc_cpu_s(opt.pid);
		}
		if (now >= t_end)
			break;
		check_deadline();
		while (sent < due && sent < st.nmsg) {
			/* round robin over members, spreading channels */
			uint32_t u = (rr % C) * 10 + (rr / C) % 10;

			rr++;
			st.sender[sent] = u;
			st.t_send[sent] = now_ns();
			tag_body(body, (size_t)opt.size, st.t_send[sent], sent);
			parley_send(m[u].pc, chs[u / 10], sent + 1, body,
				    (size_t)opt.size);
			pc_flush(m[u].pc);
			sent++;
		}
		n = epoll_wait(ep, evs, 256, 1);
		for (int e = 0; e < n; e++) {
			bconn *b = &m[evs[e].data.u32];
			const uint8_t *d;
			size_t len;
			int rc;

			if (pc_on_readable(b->pc) < 0)
				die("member %u: connection closed", b->uid);
			while ((rc = pc_next(b->pc, &d, &len)) == 1) {
				const char *t = memmem(d, len, "PBT:", 4);
				uint64_t ns, rid;
				uint32_t idx;
				bool ok;

				if (t && (size_t)(t - (const char *)d) + TAG_LEN <= len &&
				    !tag_parse(t, &ns, &idx)) {
					small_tag(&st, b, ns, idx);
				} else if (parley_res(d, len, &rid, &ok)) {
					if (!ok)
						st.errors++;
					if (st.measuring && rid >= 1 && rid <= sent) {
						hist_add(st.ack, now_ns() - st.t_send[rid - 1]);
						st.acks++;
					}
				}
			}
			if (rc < 0)
				die("member: connection closed");
			if (pc_pending(b->pc))
				pc_flush(b->pc);
		}
	}
	res->server_cpu_s = proc_cpu_s(opt.pid) - cpu0;
	read_stages(&s1);
	res->stages = stages_json(&s0, &s1);
	res->duration_s = opt.duration;
	res->deliveries = (double)st.deliveries;
	res->deliveries_per_s = (double)st.deliveries / opt.duration;
	res->acks = (double)st.acks;
	res->acks_per_s = (double)st.acks / opt.duration;
	res->errors = st.errors;
	res->rss_bytes = (double)proc_rss(opt.pid);
	for (uint32_t i = 0; i < N; i++)
		bconn_close(&m[i]);
}

/* ---- idle ------------------------------------------------------------------------ */

static void run_idle(struct result *res)
{
	uint64_t rss0 = proc_rss(opt.pid), t0 = now_ns(), setup, deliveries = 0;
	struct child *kids;
	double cpu0, cpu1;

	kids = spawn((uint32_t)opt.conns, 0, true);
	setup = wait_ready(kids);
	(void)t0;
	res->handshakes_per_s = (double)opt.conns / ((double)setup / 1e9);
	say("%d connections ready (%.0f handshakes/s); idle for %d s",
	    opt.conns, res->handshakes_per_s, opt.duration);
	sleep(1);
	cpu0 = proc_cpu_s(opt.pid);
	for (int i = 0; i < opt.duration; i++) {
		sleep(1);
		check_deadline();
	}
	cpu1 = proc_cpu_s(opt.pid);
	res->rss_bytes = (double)proc_rss(opt.pid);
	res->rss_per_conn = (res->rss_bytes - (double)rss0) / opt.conns;
	res->server_cpu_s = cpu1 - cpu0;
	res->cpu_per_s = res->server_cpu_s / opt.duration;
	res->duration_s = opt.duration;
	hist h = { 0 };

	collect(kids, &h, &res->errors, &deliveries);
}

/* ---- main ---------------------------------------------------------------------- */

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "server", 1, 0, 1 }, { "scenario", 1, 0, 2 },
		{ "host", 1, 0, 3 }, { "port", 1, 0, 4 }, { "pid", 1, 0, 5 },
		{ "secret", 1, 0, 6 }, { "ws", 1, 0, 7 }, { "prefix", 1, 0, 8 },
		{ "mode", 1, 0, 9 }, { "members", 1, 0, 10 },
		{ "online", 1, 0, 11 }, { "messages", 1, 0, 12 },
		{ "size", 1, 0, 13 }, { "channels", 1, 0, 14 },
		{ "rate", 1, 0, 15 }, { "senders", 1, 0, 16 },
		{ "inflight", 1, 0, 17 }, { "conns", 1, 0, 18 },
		{ "hb-ms", 1, 0, 19 }, { "duration", 1, 0, 20 },
		{ "procs", 1, 0, 21 }, { "timeout", 1, 0, 22 },
		{ "json", 1, 0, 23 }, { "quiet", 0, 0, 24 },
		{ "help", 0, 0, 25 }, { 0, 0, 0, 0 }
	};
	struct result res = { 0 };
	struct rlimit rl;
	int c, need;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 1: opt.server = optarg; break;
		case 2: opt.scenario = optarg; break;
		case 3: opt.host = optarg; break;
		case 4: opt.port = atoi(optarg); break;
		case 5: opt.pid = atoi(optarg); break;
		case 6: opt.secret = optarg; break;
		case 7: opt.ws = optarg; break;
		case 8: opt.prefix = optarg; break;
		case 9: opt.mode = optarg; break;
		case 10: opt.members = atoi(optarg); break;
		case 11: opt.online = atoi(optarg); break;
		case 12: opt.messages = atoi(optarg); break;
		case 13: opt.size = atoi(optarg); break;
		case 14: opt.channels = atoi(optarg); break;
		case 15: opt.rate = atoi(optarg); break;
		case 16: opt.senders = atoi(optarg); break;
		case 17: opt.inflight = atoi(optarg); break;
		case 18: opt.conns = atoi(optarg); break;
		case 19: opt.hb_ms = atoi(optarg); break;
		case 20: opt.duration = atoi(optarg); break;
		case 21: opt.procs = atoi(optarg); break;
		case 22: opt.timeout = atoi(optarg); break;
		case 23: opt.json = optarg; break;
		case 24: opt.quiet = true; break;
		default: usage();
		}
	}
	if (optind != argc || !opt.server || !opt.scenario || opt.port <= 0 ||
	    opt.pid <= 0 || opt.size < TAG_LEN || opt.size > 16384 ||
	    opt.members < 1 || opt.channels < 1 || opt.rate < 1 ||
	    opt.senders < 1 || opt.inflight < 1 || opt.inflight > 64 ||
	    opt.conns < 1 || opt.hb_ms < 100 || opt.duration < 1 ||
	    opt.timeout < 1)
		usage();
	if (!strcmp(opt.server, "parley"))
		bo.srv = SRV_PARLEY;
	else if (!strcmp(opt.server, "nats"))
		bo.srv = SRV_NATS;
	else if (!strcmp(opt.server, "redis"))
		bo.srv = SRV_REDIS;
	else
		usage();
	if (strcmp(opt.scenario, "fanout") && strcmp(opt.scenario, "small") &&
	    strcmp(opt.scenario, "acks") && strcmp(opt.scenario, "idle"))
		usage();
	if (strcmp(opt.mode, "paced") && strcmp(opt.mode, "burst"))
		usage();
	if ((!strcmp(opt.scenario, "small") || !strcmp(opt.scenario, "acks")) &&
	    bo.srv != SRV_PARLEY) {
		fprintf(stderr, "parley-bench: %s is a parley scenario\n",
			opt.scenario);
		return 2;
	}
	if (bo.srv == SRV_PARLEY) {
		if (!opt.secret || auth_load_secret(opt.secret, key, sizeof(key),
						    &bo.keylen, false))
			die("parley needs --secret FILE (readable)");
		bo.key = key;
	}
	if (!opt.prefix) {
		snprintf(prefix_buf, sizeof(prefix_buf), "r%x",
			 (unsigned)(now_ns() ^ (uint64_t)getpid()) & 0xffffff);
		opt.prefix = prefix_buf;
	}
	bo.host = opt.host;
	bo.port = opt.port;
	bo.ws = opt.ws;
	bo.prefix = opt.prefix;
	if (bo.srv != SRV_PARLEY)
		opt.members = opt.online = opt.online > 0 ? opt.online :
					    (opt.members < 19000 ? opt.members : 19000);
	if (opt.online < 0)
		opt.online = opt.members < 19000 ? opt.members : 19000;
	if (opt.online > opt.members)
		usage();
	if (opt.messages < 0)
		opt.messages = strcmp(opt.mode, "burst") ? 200 : 2000;
	need = !strcmp(opt.scenario, "fanout") ? opt.online :
	       !strcmp(opt.scenario, "idle") ? opt.conns : 0;
	if (!opt.procs)
		opt.procs = need ? (need + 8999) / 9000 : 1;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	signal(SIGPIPE, SIG_IGN);
	deadline_ns = now_ns() + (uint64_t)opt.timeout * 1000000000u;

	if (!strcmp(opt.scenario, "fanout"))
		run_fanout(&res);
	else if (!strcmp(opt.scenario, "acks"))
		run_acks(&res);
	else if (!strcmp(opt.scenario, "small"))
		run_small(&res);
	else
		run_idle(&res);
	emit(&res);
	return res.errors ? 3 : 0;
}
