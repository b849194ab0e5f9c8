/*
 * parley-bench: drives parleyd, nats-server (its WebSocket listener) or
 * redis-server (pub/sub; acks: XADD, --server redis-aof: one that says
 * appendonly yes and appendfsync always) and prints one JSON object per
 * run; perf/run-bench collects them. Scenarios: fanout (paced | burst),
 * small, acks, idle, hb, presence, search; see usage() and perf/README.md.
 *
 * This process sets up (parley: channels and invitations over blocking
 * setup connections), forks the client processes (child.c) that hold the
 * measured connections, publishes (fanout) and measures the server: CPU
 * from /proc/PID/stat and RSS from /proc/PID/status around the measured
 * window, per-stage histograms from parleyd's /metrics. The children report
 * through pipes: ready, "all my members have message i, the last at T",
 * a connection lost, and at the end their counts and histograms.
 *
 * presence: this process holds the subject's connection and changes its
 * status; the children hold the watchers. search: the children fill the
 * channels; this process then waits for the index and runs the queries
 * over connections of its own.
 *
 * Exit status: 0 ok, 2 usage, 3 errors counted, 1 failure (timeout, a
 * stall, a lost connection, a failed handshake); the JSON object is printed
 * in every case but usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "actors/actors.h"
#include "perf/bench/bench.h"

#define PER_PROC 9000        /* connections per client process */
#define STALL_NS 30000000000ull

brun run;

static struct {
	const char *server, *scenario, *mode, *secret, *json, *ws, *prefix,
		*host, *variant, *clients, *data;
	long port, pid, members, online, messages, size, channels, rate,
		senders, inflight, conns, hb_ms, duration, procs, timeout,
		watchers, changes, gap_ms, msgs, member_of, queries, vocab,
		limit, gateway;
	bool quiet;
	bool tls;          /* --tls: wss:// and https:// */
	bool aof;          /* --server redis-aof */
	/* Redis acks: what CONFIG GET says ("" if it did not) */
	char appendonly[16], appendfsync[16];
} opt = {
	.host = "127.0.0.1", .ws = "bench", .mode = "paced", .members = 25000,
	.online = -1, .messages = -1, .size = 200, .channels = -1,
	.rate = 1000, .senders = -1, .inflight = -1, .conns = 1000,
	.hb_ms = 5000, .duration = 10, .timeout = 300, .watchers = 1000,
	.changes = 50, .gap_ms = 300, .msgs = 1000000, .member_of = 50,
	.queries = 300, .clients = "1,4", .vocab = 4000, .limit = 20,
};

/* --pid P1,P2,..: the server's processes (a cluster's hosts, in the order
 * of --port); CPU and RSS are their sums. npids is 1 with one pid. */
static int pids[16], npids;

static uint8_t key[512];
static char prefix_buf[32];
static uint64_t deadline_ns;

static void usage(void) __attribute__((noreturn));
static void usage(void)
{
	fprintf(stderr,
"usage: parley-bench --server parley|nats|redis|redis-aof\n"
"                    --scenario fanout|small|acks|idle|hb|presence|search|push\n"
"                    --port N --pid N [options]\n"
"  --host H (127.0.0.1)  --port N  --pid N (server PID: CPU, RSS; required)\n"
"  --port N1,N2,.. --pid P1,P2,.. (parley fanout and acks: a cluster's hosts,\n"
"          as many pids as ports): connections round robin over the ports by\n"
"          user index (the fanout publisher and /metrics' stages: the first);\n"
"          CPU and RSS summed over the pids; \"hosts\" in the result: each\n"
"          host's CPU and its parley_cluster_*/parley_bus_* counters over the\n"
"          measured window\n"
"  --secret FILE (parley: JWT secret)  --ws ID (bench)  --prefix P (r<random>)\n"
"  fanout: --mode paced|burst (paced)  --members M (25000)\n"
"          --online N (min(M,19000); nats/redis: M = N)\n"
"          --messages K (paced 200, burst 2000)  --size B (200)\n"
"  small:  --channels C (100) of 10 members  --rate R (1000 sends/s in all)\n"
"  acks:   --senders S (64)  --inflight W (1); parley: sends, each in a\n"
"          channel of its own; redis: XADD <subject>.<sender> * f <body>;\n"
"          redis-aof: the same, and the server must say appendonly yes,\n"
"          appendfsync always (CONFIG GET)\n"
"  idle:   --conns N (1000)  --hb-ms MS (5000; 0: none)\n"
"  hb (parley): idle, also counting heartbeats and RSS at the end\n"
"  presence (parley): --watchers W (1000) watch one subject, which changes\n"
"          its status --changes K (50) times, --gap-ms MS (300) apart\n"
"  search (parley): --msgs N (1000000) of made-up text from --vocab V (4000)\n"
"          words into --channels C (1000) by --senders S (100) with\n"
"          --inflight W (8) sends each; the searcher is in --member-of M\n"
"          (50) of them; then --queries Q (300) of each kind (word, prefix,\n"
"          phrase), limit --limit L (20), over --clients LIST (1,4)\n"
"          connections at a time; --data DIR (parleyd's): its size\n"
"  push (parley): a channel of --members M (100000, the owner included),\n"
"          --online N (19000) of them connected and heartbeating (--hb-ms),\n"
"          every other one registered a pusher and left; the owner sends\n"
"          --messages K (3) messages with mentions [\"@channel\"], one at a\n"
"          time, each once the gateway has all of the last one's\n"
"          notifications: M - N - 1 each. --gateway PORT: perf/push-gateway\n"
"          on 127.0.0.1 (parleyd runs with --push-url pointing there); one\n"
"          JSON object per message\n"
"  --duration SEC (10: small, acks, idle, hb)  --procs P (ceil(conns/9000);\n"
"          presence at least 2)  --variant TEXT (copied into the result)\n"
"  --timeout SEC (300)  --json FILE  --quiet\n"
"  --tls (parley: wss:// and https://, the certificate not checked)\n");
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

/* ---- the server's processes ------------------------------------------------- */

/* utime + stime of every --pid, summed; -1 if one is unreadable */
static double srv_cpu(void)
{
	double sum = 0;

	for (int i = 0; i < npids; i++) {
		double c = proc_cpu_s(pids[i]);

		if (c < 0)
			return -1;
		sum += c;
	}
	return sum;
}

static uint64_t srv_rss(void)
{
	uint64_t sum = 0;

	for (int i = 0; i < npids; i++)
		sum += proc_rss(pids[i]);
	return sum;
}

/* A cluster (more than one --port): each host's CPU and its cluster and
 * bus samples from /metrics, before and after the measured window. */
#define HOST_SAMPLES 64

typedef struct hostsnap {
	double cpu;
	unsigned n;
	char name[HOST_SAMPLES][96];
	double v[HOST_SAMPLES];
} hostsnap;

static hostsnap *hosts_read(void)
{
	hostsnap *h;

	if (bo.nports < 2)
		return NULL;
	h = calloc((size_t)bo.nports, sizeof(*h));
	for (int i = 0; h && i < bo.nports; i++) {
		char *t = http_get(opt.host, bo.ports[i], "/metrics"), *l, *save;

		h[i].cpu = i < npids ? proc_cpu_s(pids[i]) : -1;
		for (l = t ? strtok_r(t, "\n", &save) : NULL; l;
		     l = strtok_r(NULL, "\n", &save)) {
			char *sp = strrchr(l, ' ');
			size_t nl;

			if ((strncmp(l, "parley_cluster_", 15) &&
			     strncmp(l, "parley_bus_", 11)) || !sp ||
			    h[i].n == HOST_SAMPLES)
				continue;
			nl = (size_t)(sp - l);
			if (nl >= sizeof(h[i].name[0]))
				continue;
			memcpy(h[i].name[h[i].n], l, nl);
			h[i].name[h[i].n][nl] = 0;
			h[i].v[h[i].n++] = strtod(sp + 1, NULL);
		}
		free(t);
	}
	return h;
}

/* ,"hosts":[{"port":P,"pid":X,"cpu_s":..,"metrics":{..}},..]: counters
 * (names ending in _total) as the difference over the window, the other
 * samples (gauges) as they were at its end; malloc'd, NULL without */
static char *hosts_json(const hostsnap *a, const hostsnap *b)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	if (!a || !b || !(f = open_memstream(&text, &len)))
		return NULL;
	fputs(",\"hosts\":[", f);
	for (int i = 0; i < bo.nports; i++) {
		fprintf(f, "%s{\"port\":%d,\"pid\":%d,\"cpu_s\":%.3f,\"metrics\":{",
			i ? "," : "", bo.ports[i], i < npids ? pids[i] : 0,
			a[i].cpu >= 0 && b[i].cpu >= 0 ? b[i].cpu - a[i].cpu : -1);
		for (unsigned k = 0; k < b[i].n; k++) {
			const char *nm = b[i].name[k], *br = strchr(nm, '{');
			size_t base = br ? (size_t)(br - nm) : strlen(nm);
			double v = b[i].v[k];

			if (base > 6 && !strncmp(nm + base - 6, "_total", 6))
				for (unsigned j = 0; j < a[i].n; j++)
					if (!strcmp(a[i].name[j], nm)) {
						v -= a[i].v[j];
						break;
					}
			fputc(k ? ',' : '"', f);
			if (k)
				fputc('"', f);
			for (const char *c = nm; *c; c++)
				if (*c != '"' && *c != '\\')
					fputc(*c, f);
			fprintf(f, "\":%.17g", v);
		}
		fputs("}}", f);
	}
	fputc(']', f);
	fclose(f);
	return text;
}

/* ---- the result -------------------------------------------------------------- */

static struct result {
	double duration_s, server_cpu_s, rss_per_conn, handshakes_per_s,
		cpu_per_s, rss_end_per_conn;
	double rss_at_per_conn[2]; /* idle: 3 s and 8 s after the last hello */
	bool has_rss_at[2];
	uint64_t deliveries, acks, rss_bytes, errors, hbs;
	bool has_deliveries, has_acks, has_rss, has_idle, has_acks_rate,
		has_hb;
	hist *lat, *p2l, *ack;
	char *stages;
	char *hosts;  /* more than one --port: hosts_json() */
	char *search; /* the search fields, ready to print (",...") */
	double load; /* push: loadavg_1m when the round ended (0: read it) */
} res;

/* the 1-minute load average, -1 if unreadable */
static double loadavg(void)
{
	double l1 = -1;
	FILE *la = fopen("/proc/loadavg", "r");

	if (la) {
		if (fscanf(la, "%lf", &l1) != 1)
			l1 = -1;
		fclose(la);
	}
	return l1;
}

static void put_pcts(FILE *f, const char *name, const hist *h)
{
	if (!h)
		return;
	fprintf(f, ",\"%s\":{\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,"
		   "\"p999\":%.4f,\"max\":%.4f}",
		name, hist_pct_ms(h, 0.5), hist_pct_ms(h, 0.9),
		hist_pct_ms(h, 0.99), hist_pct_ms(h, 0.999), hist_pct_ms(h, 1));
}

static double per(double n, double d)
{
	return d > 0 ? n / d : 0;
}

static void emit(void)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	enum scen s = run.scen;

	fprintf(f, "{\"scenario\":\"%s\",\"mode\":", opt.scenario);
	if (s == SC_FANOUT)
		fprintf(f, "\"%s\"", opt.mode);
	else
		fputs("null", f);
	fprintf(f, ",\"server\":\"%s\"", opt.server);
	if (opt.variant) {
		fputs(",\"variant\":\"", f);
		for (const char *c = opt.variant; *c; c++)
			if (*c != '"' && *c != '\\' && (unsigned char)*c >= 32)
				fputc(*c, f);
		fputc('"', f);
	}
	if (s == SC_FANOUT)
		fprintf(f, ",\"members\":%ld,\"online\":%ld,\"messages\":%ld",
			opt.members, opt.online, opt.messages);
	if (s == SC_PUSH)
		fprintf(f, ",\"members\":%ld,\"online\":%ld", opt.members,
			opt.online);
	if (s == SC_SMALL)
		fprintf(f, ",\"members\":%ld,\"online\":%ld,\"channels\":%ld",
			opt.channels * 10, opt.channels * 10, opt.channels);
	if (s == SC_FANOUT || s == SC_SMALL || s == SC_ACKS)
		fprintf(f, ",\"size\":%ld", opt.size);
	if (s == SC_ACKS)
		fprintf(f, ",\"senders\":%ld,\"inflight\":%ld", opt.senders,
			opt.inflight);
	if (s == SC_ACKS && bo.srv == SRV_REDIS)
		fprintf(f, ",\"appendonly\":\"%s\",\"appendfsync\":\"%s\"",
			opt.appendonly, opt.appendfsync);
	if (s == SC_IDLE || s == SC_HB)
		fprintf(f, ",\"conns\":%ld", opt.conns);
	if (s == SC_HB)
		fprintf(f, ",\"hb_ms\":%ld", opt.hb_ms);
	if (s == SC_PRESENCE)
		fprintf(f, ",\"watchers\":%ld,\"changes\":%ld,\"gap_ms\":%ld",
			opt.watchers, opt.changes, opt.gap_ms);
	if (s == SC_SEARCH)
		fprintf(f, ",\"msgs\":%ld,\"channels\":%ld,\"senders\":%ld,"
			   "\"inflight\":%ld,\"member_of\":%ld,\"vocab\":%ld,"
			   "\"queries\":%ld,\"limit\":%ld,\"clients\":\"%s\"",
			opt.msgs, opt.channels, opt.senders, opt.inflight,
			opt.member_of, opt.vocab, opt.queries, opt.limit,
			opt.clients);
	fprintf(f, ",\"procs\":%ld,\"duration_s\":%.3f,\"server_cpu_s\":%.3f",
		opt.procs, res.duration_s, res.server_cpu_s);
	if (res.has_deliveries)
		fprintf(f, ",\"deliveries\":%llu,\"deliveries_per_s\":%.1f,"
			   "\"deliveries_per_server_cpu_s\":%.1f",
			(unsigned long long)res.deliveries,
			per((double)res.deliveries, res.duration_s),
			per((double)res.deliveries, res.server_cpu_s));
	put_pcts(f, "latency_ms", res.lat);
	put_pcts(f, "publish_to_last_ms", res.p2l);
	if (res.has_acks)
		fprintf(f, ",\"acks\":%llu", (unsigned long long)res.acks);
	if (res.has_acks_rate)
		fprintf(f, ",\"acks_per_s\":%.1f",
			per((double)res.acks, res.duration_s));
	/* the server's CPU per ack: less sensitive than acks/s to what else
	 * runs on the machine */
	if (res.has_acks_rate && res.acks)
		fprintf(f, ",\"server_cpu_us_per_ack\":%.2f",
			res.server_cpu_s * 1e6 / (double)res.acks);
	put_pcts(f, "ack_ms", res.ack);
	if (res.has_rss)
		fprintf(f, ",\"rss_bytes\":%llu", (unsigned long long)res.rss_bytes);
	if (res.has_idle)
		fprintf(f, ",\"rss_bytes_per_conn\":%.1f,\"handshakes_per_s\":%.1f,"
			   "\"server_cpu_per_s\":%.4f",
			res.rss_per_conn, res.handshakes_per_s, res.cpu_per_s);
	if (res.has_idle)
		for (int k = 0; k < 2; k++) {
			fprintf(f, ",\"rss_%ds_bytes_per_conn\":", k ? 8 : 3);
			if (res.has_rss_at[k])
				fprintf(f, "%.1f", res.rss_at_per_conn[k]);
			else
				fputs("null", f);
		}
	if (res.has_hb)
		fprintf(f, ",\"heartbeats\":%llu,\"heartbeats_per_s\":%.1f,"
			   "\"rss_end_bytes_per_conn\":%.1f",
			(unsigned long long)res.hbs,
			per((double)res.hbs, res.duration_s), res.rss_end_per_conn);
	if (res.search)
		fputs(res.search, f);
	{
		/* the machine's load at the end of the run (push: of the
		 * round): the server and the bench, and anything else that ran
		 * beside them */
		double l1 = res.load ? res.load : loadavg();

		if (l1 >= 0)
			fprintf(f, ",\"loadavg_1m\":%.2f", l1);
	}
	if (!strcmp(opt.server, "parley"))
		fprintf(f, ",\"stages\":%s", res.stages ? res.stages : "{}");
	if (res.hosts)
		fputs(res.hosts, f);
	fprintf(f, ",\"errors\":%llu}", (unsigned long long)res.errors);
	fclose(f);
	printf("%s\n", text);
	fflush(stdout);
	if (opt.json) {
		/* push writes one object per message: the first truncates */
		static bool started;
		FILE *j = fopen(opt.json, started ? "a" : "w");

		started = true;
		if (!j || fprintf(j, "%s\n", text) < 0 || fclose(j))
			fprintf(stderr, "parley-bench: cannot write %s: %s\n",
				opt.json, strerror(errno));
	}
	free(text);
}

/* ---- client processes -------------------------------------------------------------- */

static struct kid {
	pid_t pid;
	int rd, wr;        /* reports from it; commands to it */
	uint32_t from, to;
	bool ready, final;
	uint64_t t_ready;
	struct final fin;
} *kids;

/* fanout bookkeeping, fed by R_DONE */
static uint32_t *have;
static uint64_t *sent_at, *last_at;
static uint32_t done_msgs;
static uint64_t last_progress;

static void kill_kids(void)
{
	for (long i = 0; kids && i < opt.procs; i++)
		if (kids[i].pid > 0) {
			kill(kids[i].pid, SIGKILL);
			waitpid(kids[i].pid, NULL, 0);
			kids[i].pid = 0;
		}
}

/* The run cannot go on: say why, report what is known, exit 1. */
static void fail_run(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail_run(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("parley-bench: FAILED: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	kill_kids();
	if (!res.errors)
		res.errors = 1;
	emit();
	exit(1);
}

static void check_deadline(void)
{
	if (now_ns() > deadline_ns)
		fail_run("timed out after %ld s", opt.timeout);
}

static void read_all(struct kid *k, void *p, size_t n)
{
	while (n) {
		ssize_t r = read(k->rd, p, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			fail_run("client process %d went away", (int)k->pid);
		p = (char *)p + r;
		n -= (size_t)r;
	}
}

static void command_all(char cmd)
{
	for (long i = 0; i < opt.procs; i++)
		if (write(kids[i].wr, &cmd, 1) != 1)
			fail_run("client process %d went away", (int)kids[i].pid);
}

static void on_report(struct kid *k)
{
	struct report r;

	read_all(k, &r, sizeof(r));
	switch (r.kind) {
	case R_READY:
		k->ready = true;
		k->t_ready = r.a;
		break;
	case R_DONE:
		if (!have || r.idx >= run.nmsg)
			fail_run("a client process reported message %u", r.idx);
		if (r.a > last_at[r.idx])
			last_at[r.idx] = r.a;
		if (++have[r.idx] == (uint32_t)opt.procs)
			done_msgs++;
		last_progress = now_ns();
		break;
	case R_DEAD:
		if (run.scen != SC_IDLE && run.scen != SC_HB)
			fail_run("connection %u closed by the server", r.idx);
		break; /* idle: counted in the end */
	case R_FAIL:
		fail_run("connection %u: connect/handshake failed", r.idx);
	case R_FINAL:
		read_all(k, &k->fin, sizeof(k->fin));
		k->final = true;
		break;
	default:
		fail_run("client process %d: bad report", (int)k->pid);
	}
}

/* Reads what the children report for up to ms, or until a report came
 * when ms < 0; extra (a publisher) is polled too and handed its events. */
static void pump(int ms, bconn *extra)
{
	struct pollfd pf[64];
	uint64_t end = now_ns() + (uint64_t)(ms < 0 ? 0 : ms) * 1000000u;
	long np = opt.procs;

	do {
		uint64_t now = now_ns();
		/* now may be past end already: 0, not a wrapped huge wait */
		int wait = ms < 0 ? 100 : now >= end ? 0 :
			   (int)((end - now) / 1000000u);
		int n;

		check_deadline();
		for (long i = 0; i < np; i++)
			pf[i] = (struct pollfd){ .fd = kids[i].rd, .events = POLLIN };
		if (extra)
			pf[np] = (struct pollfd){ .fd = extra->fd,
						  .events = (short)bconn_events(extra) };
		n = poll(pf, (nfds_t)(np + (extra ? 1 : 0)), wait > 100 ? 100 : wait);
		if (n < 0 && errno != EINTR)
			fail_run("poll: %s", strerror(errno));
		if (n <= 0)
			continue;
		for (long i = 0; i < np; i++)
			if (pf[i].revents)
				on_report(&kids[i]);
		if (extra && pf[np].revents && bconn_io(extra, (uint32_t)pf[np].revents))
			fail_run("the publisher's connection closed");
		if (ms < 0)
			return;
	} while (now_ns() < end);
}

static uint32_t spawn_base; /* push: the first process' first user */

static void spawn(uint32_t total, uint32_t align)
{
	pid_t me = getpid();

	run.total = total;
	kids = calloc((size_t)opt.procs, sizeof(*kids));
	for (long i = 0; i < opt.procs; i++) {
		int up[2], down[2];
		uint64_t a = (uint64_t)total * (uint64_t)i / (uint64_t)opt.procs;
		uint64_t b = (uint64_t)total * (uint64_t)(i + 1) / (uint64_t)opt.procs;

		kids[i].from = spawn_base + (uint32_t)(a / align * align);
		kids[i].to = spawn_base +
			     (i + 1 == opt.procs ? total : (uint32_t)(b / align * align));
		if (pipe2(up, O_CLOEXEC) || pipe2(down, O_CLOEXEC))
			fail_run("pipe: %s", strerror(errno));
		fflush(NULL);
		kids[i].pid = fork();
		if (kids[i].pid < 0)
			fail_run("fork: %s", strerror(errno));
		if (!kids[i].pid) {
			close(up[0]);
			close(down[1]);
			child_main(kids[i].from, kids[i].to, up[1], down[0], me);
		}
		close(up[1]);
		close(down[0]);
		kids[i].rd = up[0];
		kids[i].wr = down[1];
	}
}

/* All children ready; the time the last one got there. */
static uint64_t wait_ready(bconn *extra)
{
	uint64_t last = 0;

	for (;;) {
		long n = 0;

		for (long i = 0; i < opt.procs; i++)
			if (kids[i].ready) {
				n++;
				if (kids[i].t_ready > last)
					last = kids[i].t_ready;
			}
		if (n == opt.procs)
			return last;
		pump(-1, extra);
	}
}

/* Stops the children; their counts into res, histograms merged. */
static void collect(hist *lat, hist *ack)
{
	command_all(CMD_STOP);
	for (long i = 0; i < opt.procs; i++) {
		while (!kids[i].final)
			on_report(&kids[i]);
		res.errors += kids[i].fin.errors;
		res.deliveries += kids[i].fin.deliveries;
		res.acks += kids[i].fin.acks;
		res.hbs += kids[i].fin.hbs;
		if (lat)
			hist_merge(lat, &kids[i].fin.lat);
		if (ack)
			hist_merge(ack, &kids[i].fin.ack);
		waitpid(kids[i].pid, NULL, 0);
		kids[i].pid = 0;
	}
}

/* ---- parley setup (blocking) ------------------------------------------------------- */

static pc_conn *parley_login_at(const char *user, uint32_t srcidx, int port)
{
	char src[32], *tok = mint(user);
	proto_doc d;
	pc_conn *c = pc_connect(bo.host, port, src_ip(srcidx, src),
				"parley.v1", 30000);

	if (!c || !tok || pc_hello(c, tok, NULL, NULL, 0, &d, 60000) != 1)
		fail_run("user %s: connect or hello failed", user);
	free(tok);
	proto_doc_free(&d);
	return c;
}

static pc_conn *parley_login(const char *user, uint32_t srcidx)
{
	return parley_login_at(user, srcidx, bo.port);
}

static uint64_t setup_rid = 100;

static void request_ok(pc_conn *c, proto_out *o, uint64_t rid, proto_doc *d,
		       const char *what)
{
	bool ok = false;

	if (pc_request(c, o, rid, d, 60000) != 1)
		fail_run("%s: no answer", what);
	proto_get_bool(&d->root, "ok", &ok);
	if (!ok) {
		const char *code = "?";
		uint32_t n = 1;

		proto_get_str(&d->root, "code", &code, &n);
		fail_run("%s refused: %.*s", what, (int)n, code);
	}
}

static void create_channel(pc_conn *c, const char *name, char *id)
{
	proto_out o;
	proto_doc d;
	const msgpack_object *ch;
	uint64_t rid = setup_rid++;

	proto_out_init(&o, 0, 256);
	proto_enc_req(&o, "ch.create", rid, 2);
	proto_pk_cstr(&o.pk, "name");
	proto_pk_cstr(&o.pk, name);
	proto_pk_cstr(&o.pk, "kind");
	proto_pk_cstr(&o.pk, "public");
	request_ok(c, &o, rid, &d, "ch.create");
	ch = proto_get(&d.root, "ch");
	if (!ch || !proto_str_copy(proto_get(ch, "id"), id, PROTO_MAX_ID + 1))
		fail_run("ch.create: no ch.id in the response");
	proto_doc_free(&d);
	proto_out_free(&o);
}

/* invites users "<prefix>u<from..to)" in chunks of 1000 */
static void invite(pc_conn *c, const char *ch, uint32_t from, uint32_t to)
{
	for (uint32_t at = from; at < to; at += 1000) {
		uint32_t end = to - at > 1000 ? at + 1000 : to;
		uint64_t rid = setup_rid++;
		proto_out o;
		proto_doc d;
		char u[96];

		proto_out_init(&o, 0, 32 * 1024);
		proto_enc_req(&o, "ch.invite", rid, 2);
		proto_pk_cstr(&o.pk, "ch");
		proto_pk_cstr(&o.pk, ch);
		proto_pk_cstr(&o.pk, "users");
		msgpack_pack_array(&o.pk, end - at);
		for (uint32_t i = at; i < end; i++) {
			user_name(i, u, sizeof(u));
			proto_pk_cstr(&o.pk, u);
		}
		request_ok(c, &o, rid, &d, "ch.invite");
		proto_doc_free(&d);
		proto_out_free(&o);
	}
}

/* ---- the publisher (fanout), in this process ------------------------------------------- */

static uint64_t pub_acks, pub_refused, pub_errors;
/* burst: rounds of publishing, and how many ended with the socket full */
static uint64_t pub_rounds, pub_blocked;

static void pub_res(bconn *b, uint64_t rid, bool ok, uint64_t n)
{
	if (b->srv == SRV_REDIS) {
		if (n != (uint64_t)opt.online)
			pub_errors++; /* PUBLISH reached another count */
		return;
	}
	pub_acks++;
	if (!ok)
		pub_refused++;
}

static void pub_deliver(bconn *b, const btag *t, uint64_t seq)
{
	/* the owner's own copies */
}

static void pub_error(bconn *b, const char *what, size_t len)
{
	pub_errors++;
	say("publisher got an error: %.*s", (int)(len > 200 ? 200 : len), what);
}

static const bhooks pub_hooks = { NULL, pub_deliver, pub_res, pub_error,
				  NULL, NULL };

static void publish(bconn *p, const char *ch, uint32_t idx, char *body,
		    uint8_t *frame, size_t cap)
{
	btag t = { now_ns(), idx, UINT32_MAX };
	size_t n;

	sent_at[idx] = t.sent_ns;
	last_progress = t.sent_ns;
	tag_body(body, (size_t)opt.size, &t);
	n = p->srv == SRV_PARLEY ?
		    enc_parley_send(frame, cap, ch, idx + 1, body, (size_t)opt.size) :
	    p->srv == SRV_NATS ? enc_nats_pub(frame, cap, body, (size_t)opt.size) :
				 enc_redis_pub(frame, cap, body, (size_t)opt.size);
	if (!n || bconn_send(p, frame, n))
		fail_run("publish: the connection closed");
}

/* PARLEY_BENCH_PERF_CTL=CTL,ACK: the two FIFOs of a `perf stat
 * --control=fifo:CTL,ACK --delay=-1` attached to the server; the measured
 * window (fanout: the publishing) is bracketed with "enable" and
 * "disable", so that perf counts the server's syscalls of that window
 * only, not those of the setup. Each command waits for perf's ack. */
static void perf_ctl(const char *cmd)
{
	const char *env = getenv("PARLEY_BENCH_PERF_CTL");
	char ctl[512], ack[8];
	const char *comma;
	int fd;

	if (!env || !(comma = strchr(env, ',')) ||
	    (size_t)(comma - env) >= sizeof(ctl))
		return;
	memcpy(ctl, env, (size_t)(comma - env));
	ctl[comma - env] = 0;
	fd = open(ctl, O_WRONLY);
	if (fd < 0)
		return;
	if (write(fd, cmd, strlen(cmd)) < 0)
		say("perf control: %s", strerror(errno));
	close(fd);
	fd = open(comma + 1, O_RDONLY);
	if (fd < 0)
		return;
	if (read(fd, ack, sizeof(ack)) < 0)
		say("perf ack: %s", strerror(errno));
	close(fd);
}

static void run_fanout(void)
{
	bool paced = !strcmp(opt.mode, "paced");
	uint32_t K = run.nmsg, next = 0;
	char ch[PROTO_MAX_ID + 1] = "", *body = malloc((size_t)opt.size);
	size_t cap = (size_t)opt.size + 512;
	uint8_t *frame = malloc(cap);
	stages *s0, *s1;
	hostsnap *h0, *h1;
	double cpu0, cpu1;
	uint64_t t_first, t_last = 0;
	bconn pub;

	have = calloc(K, sizeof(*have));
	sent_at = calloc(K, sizeof(*sent_at));
	last_at = calloc(K, sizeof(*last_at));
	hooks = &pub_hooks;
	if (bo.srv == SRV_PARLEY) {
		char owner[96], name[96];
		pc_conn *c;

		snprintf(owner, sizeof(owner), "%sowner", bo.prefix);
		snprintf(name, sizeof(name), "%sbench-fanout", bo.prefix);
		c = parley_login(owner, (uint32_t)opt.members);
		create_channel(c, name, ch);
		invite(c, ch, 0, (uint32_t)opt.members);
		say("channel %s: %ld members invited; %ld go online in %ld processes",
		    ch, opt.members, opt.online, opt.procs);
		bconn_adopt(&pub, c, (uint32_t)opt.members);
	} else if (bconn_start(&pub, (uint32_t)opt.online, false) ||
		   bconn_wait_ready(&pub, 30000)) {
		fail_run("publisher: connect failed");
	}
	spawn((uint32_t)opt.online, 1);
	wait_ready(&pub);
	say("%ld members online; publishing %u (%s)", opt.online, K, opt.mode);

	s0 = stages_read(opt.host, (int)opt.port);
	h0 = hosts_read();
	perf_ctl("enable\n");
	cpu0 = srv_cpu();
	t_first = last_progress = now_ns();
	while (done_msgs < K) {
		if (now_ns() - last_progress > STALL_NS)
			fail_run("stalled: no progress for 30 s (%u of %u messages "
				 "reached everyone)", done_msgs, K);
		if (paced) {
			if (next < K && next == done_msgs)
				publish(&pub, ch, next++, body, frame, cap);
		} else {
			uint32_t first = next;

			while (next < K && !bconn_pending(&pub))
				publish(&pub, ch, next++, body, frame, cap);
			if (next > first)
				pub_rounds++;
			if (next < K && bconn_pending(&pub))
				pub_blocked++;
		}
		pump(-1, &pub);
	}
	for (uint32_t i = 0; i < K; i++)
		if (last_at[i] > t_last)
			t_last = last_at[i];
	cpu1 = srv_cpu();
	perf_ctl("disable\n");
	if (getenv("PARLEY_BENCH_PERF_CTL") && !paced)
		fprintf(stderr, "publisher: %llu rounds, %llu ended with its "
			"socket full\n", (unsigned long long)pub_rounds,
			(unsigned long long)pub_blocked);
	s1 = stages_read(opt.host, (int)opt.port);
	res.rss_bytes = srv_rss();
	res.has_rss = true;
	/* every send answered */
	if (bo.srv == SRV_PARLEY) {
		uint64_t end = now_ns() + 10000000000ull;

		while (pub_acks < K && now_ns() < end)
			pump(100, &pub);
		res.has_acks = true;
	}
	h1 = hosts_read();
	res.hosts = hosts_json(h0, h1);
	free(h0);
	free(h1);

	res.lat = calloc(1, sizeof(hist));
	res.p2l = calloc(1, sizeof(hist));
	for (uint32_t i = 0; i < K; i++)
		hist_add(res.p2l, last_at[i] - sent_at[i]);
	collect(res.lat, NULL);
	res.acks = pub_acks;
	if (bo.srv == SRV_PARLEY && pub_acks != K) {
		say("%llu of %u sends answered", (unsigned long long)pub_acks, K);
		res.errors += K - pub_acks;
	}
	res.errors += pub_refused + pub_errors;
	if (res.deliveries != (uint64_t)K * (uint64_t)opt.online) {
		uint64_t want = (uint64_t)K * (uint64_t)opt.online;

		say("%llu deliveries, %llu expected", (unsigned long long)res.deliveries,
		    (unsigned long long)want);
		res.errors += res.deliveries > want ? res.deliveries - want :
						      want - res.deliveries;
	}
	res.has_deliveries = true;
	res.duration_s = (double)(t_last - t_first) / 1e9;
	res.server_cpu_s = cpu1 - cpu0;
	res.stages = stages_json(s0, s1, opt.quiet);
	stages_free(s0);
	stages_free(s1);
	bconn_close(&pub);
}

/* ---- small and acks: a warm-up, then a measured window ----------------------------------- */

static void run_timed(void)
{
	uint32_t n = run.scen == SC_SMALL ? (uint32_t)opt.channels * 10 :
					    (uint32_t)opt.senders;
	uint32_t nch = run.scen == SC_SMALL ? (uint32_t)opt.channels : n;
	hostsnap *h0, *h1;
	stages *s0, *s1;
	double cpu0, cpu1;
	uint64_t t0, t1;

	run.chans = calloc(nch, sizeof(*run.chans));
	/* Redis acks: the streams need no setup (XADD makes them) */
	for (uint32_t j = 0; bo.srv == SRV_PARLEY && j < nch; j++) {
		/* small: member 10j creates channel j and invites the other
		 * nine; acks: sender j creates its own */
		uint32_t owner = run.scen == SC_SMALL ? 10 * j : j;
		char user[96], name[96];
		pc_conn *c;

		user_name(owner, user, sizeof(user));
		/* names are unique in a workspace: this run's prefix */
		snprintf(name, sizeof(name), "%sbench-%u", bo.prefix, j);
		/* on the host its sender will talk to (bo_port) */
		c = parley_login_at(user, owner, bo_port(owner));
		create_channel(c, name, run.chans[j]);
		if (run.scen == SC_SMALL)
			invite(c, run.chans[j], owner + 1, owner + 10);
		pc_close(c);
		check_deadline();
	}
	say("%u channels set up; %u connections in %ld processes", nch, n,
	    opt.procs);
	spawn(n, run.scen == SC_SMALL ? 10 : 1);
	wait_ready(NULL);
	if (run.scen == SC_SMALL)
		say("%ld sends/s over %u members; 1 s warm-up, %ld s measured",
		    opt.rate, n, opt.duration);
	else
		say("%u senders, %ld in flight each; 1 s warm-up, %ld s measured",
		    n, opt.inflight, opt.duration);
	command_all(CMD_GO);
	pump(1000, NULL);
	/* /metrics is parleyd's (Redis would take GET for a command) */
	s0 = bo.srv == SRV_PARLEY ? stages_read(opt.host, (int)opt.port) : NULL;
	h0 = hosts_read();
	cpu0 = srv_cpu();
	t0 = now_ns();
	command_all(CMD_MEASURE);
	pump((int)opt.duration * 1000, NULL);
	command_all(CMD_END);
	t1 = now_ns();
	cpu1 = srv_cpu();
	h1 = hosts_read();
	s1 = bo.srv == SRV_PARLEY ? stages_read(opt.host, (int)opt.port) : NULL;
	res.rss_bytes = srv_rss();
	res.hosts = hosts_json(h0, h1);
	free(h0);
	free(h1);
	res.has_rss = true;
	res.ack = calloc(1, sizeof(hist));
	if (run.scen == SC_SMALL)
		res.lat = calloc(1, sizeof(hist));
	collect(res.lat, res.ack);
	res.duration_s = (double)(t1 - t0) / 1e9;
	res.server_cpu_s = cpu1 - cpu0;
	res.has_acks = res.has_acks_rate = true;
	res.has_deliveries = run.scen == SC_SMALL;
	res.stages = stages_json(s0, s1, opt.quiet);
	stages_free(s0);
	stages_free(s1);
}

/* Redis: CONFIG GET name over a connection of its own (blocking, 5 s);
 * the value into val, "" if there is none. */
static void config_error(bconn *b, const char *what, size_t len)
{
	(void)b;
	say("redis: %.*s", (int)(len > 200 ? 200 : len), what);
}

static void redis_config(const char *name, char *val, size_t cap)
{
	char cmd[128], buf[512];
	size_t got = 0;
	uint64_t end = now_ns() + 5000000000ull;
	bconn b = { 0 };
	int n;

	/* nothing is handed on here; an error (protected mode's DENIED)
	 * is said */
	static const bhooks quiet_hooks = { .error = config_error };

	val[0] = 0;
	hooks = &quiet_hooks;
	if (bconn_start(&b, 0, false) || bconn_wait_ready(&b, 5000)) {
		bconn_close(&b);
		fail_run("redis: cannot connect for CONFIG GET");
	}
	n = snprintf(cmd, sizeof(cmd), "CONFIG GET %s\r\n", name);
	if (send(b.fd, cmd, (size_t)n, MSG_NOSIGNAL) != n)
		fail_run("redis: CONFIG GET: %s", strerror(errno));
	/* *2 $len name $len value: the value is the fifth line */
	for (;;) {
		struct pollfd pf = { .fd = b.fd, .events = POLLIN };
		char *l[6] = { buf };
		int k = 1;
		ssize_t r;

		for (char *c = buf;
		     k < 6 && (c = memmem(c, (size_t)(buf + got - c), "\r\n", 2));
		     c += 2)
			l[k++] = c + 2;
		if (k == 6 || (got && buf[0] != '*')) {
			if (buf[0] == '-' && k > 1)
				say("redis: CONFIG GET %s: %.*s", name,
				    (int)(l[1] - 2 - buf), buf);
			if (k == 6 && buf[0] == '*' && buf[1] == '2') {
				size_t vn = (size_t)(l[5] - 2 - l[4]);

				if (vn >= cap)
					vn = cap - 1;
				memcpy(val, l[4], vn);
				val[vn] = 0;
			}
			break;
		}
		if (got + 1 >= sizeof(buf) || now_ns() > end ||
		    poll(&pf, 1, 100) < 0)
			break;
		r = recv(b.fd, buf + got, sizeof(buf) - 1 - got, MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
			break;
		if (r > 0)
			got += (size_t)r;
	}
	bconn_close(&b);
}

/* ---- idle ------------------------------------------------------------------------------ */

static void run_idle(void)
{
	uint64_t rss0 = proc_rss((int)opt.pid), rss1, t0, t_ready, ta, tb, tend;
	double cpu0, cpu1;
	stages *s0, *s1;

	t0 = now_ns();
	spawn((uint32_t)opt.conns, 1);
	t_ready = wait_ready(NULL);
	res.handshakes_per_s = per((double)opt.conns, (double)(t_ready - t0) / 1e9);
	rss1 = proc_rss((int)opt.pid);
	say("%ld connections ready in %ld processes (%.0f handshakes/s); idle for %ld s",
	    opt.conns, opt.procs, res.handshakes_per_s, opt.duration);
	s0 = stages_read(opt.host, (int)opt.port);
	cpu0 = proc_cpu_s((int)opt.pid);
	ta = now_ns();
	command_all(CMD_MEASURE); /* hb: heartbeats counted from here */
	/* The server's RSS 3 s and 8 s after the last handshake, the
	 * connections idling (the pump runs up to each sample): what a
	 * connection costs once the handshakes' buffers are gone. A sample
	 * past the window is not taken (null). */
	tend = ta + (uint64_t)opt.duration * 1000000000u;
	for (int k = 0; k < 2; k++) {
		uint64_t at = t_ready + (k ? 8 : 3) * 1000000000ull, now = now_ns();

		if (at > tend) {
			say("--duration %ld s ends before %d s after the last "
			    "handshake: no RSS sample there", opt.duration, k ? 8 : 3);
			break;
		}
		if (at > now)
			pump((int)((at - now) / 1000000u), NULL);
		res.rss_at_per_conn[k] = ((double)proc_rss((int)opt.pid) -
					  (double)rss0) / (double)opt.conns;
		res.has_rss_at[k] = true;
	}
	{
		uint64_t now = now_ns();

		if (now < tend)
			pump((int)((tend - now) / 1000000u), NULL);
	}
	cpu1 = proc_cpu_s((int)opt.pid);
	tb = now_ns();
	command_all(CMD_END);
	s1 = stages_read(opt.host, (int)opt.port);
	res.rss_bytes = proc_rss((int)opt.pid);
	res.has_rss = res.has_idle = true;
	res.has_hb = run.scen == SC_HB;
	res.rss_per_conn = ((double)rss1 - (double)rss0) / (double)opt.conns;
	res.rss_end_per_conn = ((double)res.rss_bytes - (double)rss0) /
			       (double)opt.conns;
	res.duration_s = (double)(tb - ta) / 1e9;
	res.server_cpu_s = cpu1 - cpu0;
	res.cpu_per_s = per(res.server_cpu_s, res.duration_s);
	collect(NULL, NULL); /* a connection not open now is an error */
	res.stages = stages_json(s0, s1, opt.quiet);
	stages_free(s0);
	stages_free(s1);
}

/* ---- presence --------------------------------------------------------------------- */

/* Sends presence.watch [user] (or [] when user is NULL) on c and waits for
 * the answer; the user's status is copied into st. */
static void watch_blocking(pc_conn *c, const char *user, char *st, size_t cap)
{
	uint64_t rid = setup_rid++;
	const msgpack_object *m, *e;
	proto_out o;
	proto_doc d;

	proto_out_init(&o, 0, 256);
	proto_enc_req(&o, "presence.watch", rid, 1);
	proto_pk_cstr(&o.pk, "users");
	msgpack_pack_array(&o.pk, user ? 1 : 0);
	if (user)
		proto_pk_cstr(&o.pk, user);
	request_ok(c, &o, rid, &d, "presence.watch");
	proto_out_free(&o);
	if (user) {
		m = proto_get(&d.root, "presence");
		e = m && m->type == MSGPACK_OBJECT_MAP ? proto_get(m, user) : NULL;
		if (!e || e->type != MSGPACK_OBJECT_MAP ||
		    !proto_str_copy(proto_get(e, "status"), st, cap))
			fail_run("presence.watch: no status for %s in the answer",
				 user);
	}
	proto_doc_free(&d);
}

static void command_change(uint32_t idx, uint64_t t)
{
	struct change ch = { idx, t };
	char buf[1 + sizeof(ch)];

	buf[0] = CMD_CHANGE;
	memcpy(buf + 1, &ch, sizeof(ch));
	for (long i = 0; i < opt.procs; i++)
		if (write(kids[i].wr, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
			fail_run("client process %d went away", (int)kids[i].pid);
}

/* The subject heartbeats every 2 s: silent for away_ms it would turn away,
 * a change of its own that nobody asked for. */
static void subject_hb(bconn *p, uint64_t *next)
{
	if (now_ns() < *next)
		return;
	*next = now_ns() + 2000000000ull;
	if (bconn_send(p, enc_hb, sizeof(enc_hb)))
		fail_run("the subject's connection closed");
}

static void run_presence(void)
{
	uint32_t K = run.nchange, W = (uint32_t)opt.watchers;
	uint64_t t_first, t_end, next_hb = 0, prev = 0;
	uint8_t frame[256];
	stages *s0, *s1;
	double cpu0, cpu1;
	char st[32] = "";
	pc_conn *c;
	bconn pub;

	have = calloc(K, sizeof(*have));
	sent_at = calloc(K, sizeof(*sent_at));
	last_at = calloc(K, sizeof(*last_at));
	hooks = &pub_hooks;
	snprintf(run.subject, sizeof(run.subject), "%ssubject", bo.prefix);
	c = parley_login(run.subject, W);
	/* the subject's own arrival is told after coalesce_ms too: wait
	 * until a watcher would see it online, so that the watchers start
	 * from "online" and see only the changes made here */
	for (uint64_t until = now_ns() + 10000000000ull;;) {
		watch_blocking(c, run.subject, st, sizeof(st));
		if (!strcmp(st, "online"))
			break;
		if (now_ns() > until)
			fail_run("the subject shows as %s, not online, 10 s after "
				 "its hello", st);
		usleep(50000);
	}
	watch_blocking(c, NULL, NULL, 0);
	bconn_adopt(&pub, c, W);
	spawn(W, 1);
	wait_ready(&pub);
	say("%u watchers watching %s in %ld processes; %u changes %ld ms apart",
	    W, run.subject, opt.procs, K, opt.gap_ms);

	s0 = stages_read(opt.host, (int)opt.port);
	cpu0 = proc_cpu_s((int)opt.pid);
	t_first = now_ns();
	for (uint32_t i = 0; i < K; i++) {
		/* gap_ms plus up to a third more at random: parleyd tells
		 * changes on its 100 ms tick, and a fixed gap would keep every
		 * change at the same phase of it */
		uint64_t t, gap = (uint64_t)opt.gap_ms * 1000000u +
				  (uint64_t)rand() % ((uint64_t)opt.gap_ms * 1000000u / 3 + 1);
		size_t n;

		while (prev && now_ns() < prev + gap) {
			subject_hb(&pub, &next_hb);
			pump((int)((prev + gap - now_ns()) / 1000000u) + 1, &pub);
		}
		subject_hb(&pub, &next_hb);
		t = now_ns();
		command_change(i, t);
		sent_at[i] = prev = last_progress = t;
		n = enc_parley_set(frame, sizeof(frame), 1000 + i,
				   i % 2 ? "online" : "dnd");
		if (!n || bconn_send(&pub, frame, n))
			fail_run("presence.set: the subject's connection closed");
		while (done_msgs < i + 1) {
			if (now_ns() - last_progress > STALL_NS)
				fail_run("stalled: change %u (%s) reached %u of %ld "
					 "processes' watchers in 30 s", i,
					 i % 2 ? "online" : "dnd", have[i],
					 opt.procs);
			subject_hb(&pub, &next_hb);
			pump(-1, &pub);
		}
	}
	t_end = now_ns();
	cpu1 = proc_cpu_s((int)opt.pid);
	s1 = stages_read(opt.host, (int)opt.port);
	res.rss_bytes = proc_rss((int)opt.pid);
	res.has_rss = true;
	for (uint64_t end = now_ns() + 10000000000ull;
	     pub_acks < K && now_ns() < end;)
		pump(100, &pub);
	/* a change told twice, or one more than made, shows up late: give
	 * it a moment to arrive */
	pump(300, &pub);

	res.lat = calloc(1, sizeof(hist));
	res.p2l = calloc(1, sizeof(hist));
	for (uint32_t i = 0; i < K; i++)
		hist_add(res.p2l, last_at[i] - sent_at[i]);
	collect(res.lat, NULL);
	res.acks = pub_acks;
	res.has_acks = true;
	if (pub_acks != K) {
		say("%llu of %u presence.set answered",
		    (unsigned long long)pub_acks, K);
		res.errors += K - pub_acks;
	}
	res.errors += pub_refused + pub_errors;
	if (res.deliveries != (uint64_t)K * W) {
		uint64_t want = (uint64_t)K * W;

		say("%llu presence frames, %llu expected",
		    (unsigned long long)res.deliveries, (unsigned long long)want);
		res.errors += res.deliveries > want ? res.deliveries - want :
						      want - res.deliveries;
	}
	res.has_deliveries = true;
	res.duration_s = (double)(t_end - t_first) / 1e9;
	res.server_cpu_s = cpu1 - cpu0;
	res.stages = stages_json(s0, s1, opt.quiet);
	stages_free(s0);
	stages_free(s1);
	bconn_close(&pub);
}

/* ---- search --------------------------------------------------------------------------- */

static uint64_t du_sum;

static int du_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	(void)path;
	(void)ftw;
	if (flag == FTW_F)
		du_sum += (uint64_t)st->st_blocks * 512u;
	return 0;
}

/* bytes on disk under dir (0 if none) */
static uint64_t du(const char *dir)
{
	du_sum = 0;
	if (nftw(dir, du_one, 16, FTW_PHYS))
		return 0;
	return du_sum;
}

static void join_channel(pc_conn *c, const char *ch)
{
	uint64_t rid = setup_rid++;
	proto_out o;
	proto_doc d;

	proto_out_init(&o, 0, 256);
	proto_enc_req(&o, "ch.join", rid, 1);
	proto_pk_cstr(&o.pk, "ch");
	proto_pk_cstr(&o.pk, ch);
	request_ok(c, &o, rid, &d, "ch.join");
	proto_doc_free(&d);
	proto_out_free(&o);
}

/* The searcher's channels: every (C/M)th */
static uint32_t *mine;
static uint32_t nmine;

static bool is_mine(const msgpack_object *ch)
{
	for (uint32_t k = 0; ch && ch->type == MSGPACK_OBJECT_STR && k < nmine; k++) {
		const char *id = run.chans[mine[k]];

		if (strlen(id) == ch->via.str.size &&
		    !memcmp(id, ch->via.str.ptr, ch->via.str.size))
			return true;
	}
	return false;
}

static void enc_search(proto_out *o, uint64_t rid, const char *q, long limit)
{
	proto_out_reset(o);
	proto_enc_req(o, "search", rid, 2);
	proto_pk_cstr(&o->pk, "q");
	proto_pk_cstr(&o->pk, q);
	proto_pk_cstr(&o->pk, "limit");
	msgpack_pack_int64(&o->pk, limit);
}

/* An answer to search: its hits (-1 when refused: code copied). Every hit
 * must be in one of the searcher's channels. */
static long search_hits(const proto_doc *d, char *code, size_t cap)
{
	const msgpack_object_array *hits;
	bool ok = false;

	proto_get_bool(&d->root, "ok", &ok);
	if (!ok) {
		const char *c = "?", *m = "";
		uint32_t cn = 1, mn = 0;

		proto_get_str(&d->root, "code", &c, &cn);
		proto_get_str(&d->root, "msg", &m, &mn);
		snprintf(code, cap, "%.*s (%.*s)", (int)cn, c, (int)mn, m);
		return -1;
	}
	if (proto_get_array(&d->root, "hits", &hits)) {
		snprintf(code, cap, "an answer without hits");
		return -1;
	}
	for (uint32_t i = 0; i < hits->size; i++) {
		const msgpack_object *h = &hits->ptr[i];

		if (h->type != MSGPACK_OBJECT_MAP || !is_mine(proto_get(h, "ch"))) {
			snprintf(code, cap, "a hit outside the searcher's channels");
			return -1;
		}
	}
	return (long)hits->size;
}

enum { Q_WORD, Q_PREFIX, Q_PHRASE, Q_KINDS };
static const char *const qkind[Q_KINDS] = { "word", "prefix", "phrase" };

/* The queries of one kind, the same in every run (a fixed seed): a word of
 * the vocabulary (any rank alike); its first two letters and '*'; two
 * Zipf-drawn words as a phrase, as adjacent words of a message are. */
static char **make_queries(int kind, uint32_t n)
{
	uint64_t seed = 0x5eed0000u + (uint64_t)kind;
	char **q = calloc(n, sizeof(*q));
	const vocab *v = &run.words;

	for (uint32_t i = 0; i < n; i++) {
		char buf[160];
		const char *a = v->w[rnd(&seed) % v->n];

		if (kind == Q_WORD)
			snprintf(buf, sizeof(buf), "%s", a);
		else if (kind == Q_PREFIX)
			snprintf(buf, sizeof(buf), "%.2s*", a);
		else
			snprintf(buf, sizeof(buf), "\"%s %s\"",
				 v->w[vocab_zipf(v, &seed)],
				 v->w[vocab_zipf(v, &seed)]);
		q[i] = strdup(buf);
	}
	return q;
}

struct qconn {
	pc_conn *pc;
	uint64_t rid, t_sent; /* rid 0: idle */
};

/* The queries qs[0..n) over nc connections, each with one in flight;
 * latencies into h; hits counted. The elapsed seconds. */
static double run_queries(struct qconn *qc, uint32_t nc, char **qs,
			  uint32_t n, hist *h, uint64_t *hits,
			  uint64_t *zero)
{
	struct pollfd pf[16];
	uint32_t next = 0, done = 0;
	uint64_t t0 = now_ns(), rid = 1u << 20;
	proto_out o;
	char why[200];

	proto_out_init(&o, 0, 512);
	while (done < n) {
		for (uint32_t k = 0; k < nc; k++) {
			if (!qc[k].rid && next < n) {
				enc_search(&o, ++rid, qs[next++], opt.limit);
				qc[k].rid = rid;
				qc[k].t_sent = now_ns();
				if (pc_queue(qc[k].pc, 2, o.data, o.len) ||
				    pc_flush(qc[k].pc))
					fail_run("search: the searcher's connection closed");
			}
			pf[k] = (struct pollfd){ .fd = pc_fd(qc[k].pc),
						 .events = (short)(POLLIN |
						   (pc_pending(qc[k].pc) ? POLLOUT : 0)) };
		}
		check_deadline();
		if (poll(pf, nc, 100) < 0 && errno != EINTR)
			fail_run("poll: %s", strerror(errno));
		for (uint32_t k = 0; k < nc; k++) {
			const uint8_t *d;
			size_t len;
			int rc;

			if (!pf[k].revents)
				continue;
			if ((pf[k].revents & POLLOUT) && pc_flush(qc[k].pc))
				fail_run("search: the searcher's connection closed");
			if (!(pf[k].revents & (POLLIN | POLLERR | POLLHUP)))
				continue;
			if (pc_on_readable(qc[k].pc))
				fail_run("search: the searcher's connection closed");
			while ((rc = pc_next(qc[k].pc, &d, &len)) == 1) {
				uint64_t now = now_ns(), r = 0;
				const char *t;
				uint32_t tn;
				proto_doc doc;
				long nh;

				if (proto_decode_max(&doc, d, len, 1u << 24) != PROTO_OK)
					fail_run("search: an undecodable frame");
				if (proto_get_str(&doc.root, "t", &t, &tn) || tn != 3 ||
				    memcmp(t, "res", 3) ||
				    proto_get_uint(&doc.root, "rid", &r) ||
				    r != qc[k].rid) {
					proto_doc_free(&doc); /* an event, say */
					continue;
				}
				nh = search_hits(&doc, why, sizeof(why));
				proto_doc_free(&doc);
				if (nh < 0)
					fail_run("search: %s", why);
				hist_add(h, now - qc[k].t_sent);
				*hits += (uint64_t)nh;
				*zero += nh == 0;
				qc[k].rid = 0;
				done++;
			}
			if (rc < 0)
				fail_run("search: the searcher's connection closed");
		}
	}
	proto_out_free(&o);
	return (double)(now_ns() - t0) / 1e9;
}

static void run_search(void)
{
	uint32_t S = (uint32_t)opt.senders, C = (uint32_t)opt.channels;
	uint32_t M = (uint32_t)opt.member_of, maxc = 0;
	uint32_t ncl = 0, cl[16];
	char searcher[96], token[64], why[200];
	uint64_t t_go, t_fill, t_marks, t_found, polls = 0;
	double cpu0, cpu1;
	stages *s0, *s1;
	struct qconn qc[16];
	hist fill_ack = { 0 };
	char *text = NULL;
	size_t tlen = 0;
	FILE *f;

	for (const char *p = opt.clients; *p;) {
		char *e;
		long v = strtol(p, &e, 10);

		if (e == p || v < 1 || v > 16 || ncl == 16 ||
		    (*e && *e != ','))
			fail_run("--clients wants numbers 1-16, comma-separated");
		cl[ncl++] = (uint32_t)v;
		if ((uint32_t)v > maxc)
			maxc = (uint32_t)v;
		p = *e ? e + 1 : e;
	}
	have = calloc(1, sizeof(*have));
	sent_at = calloc(1, sizeof(*sent_at));
	last_at = calloc(1, sizeof(*last_at));
	run.chans = calloc(C, sizeof(*run.chans));
	/* channel j is made by sender j % S, who sends into it */
	for (uint32_t i = 0; i < S; i++) {
		char user[96], name[96];
		pc_conn *c;

		user_name(i, user, sizeof(user));
		c = parley_login(user, i);
		for (uint32_t j = i; j < C; j += S) {
			snprintf(name, sizeof(name), "%ssearch-%u", bo.prefix,
				 j);
			create_channel(c, name, run.chans[j]);
		}
		pc_close(c);
		check_deadline();
	}
	snprintf(searcher, sizeof(searcher), "%ssearcher", bo.prefix);
	{
		pc_conn *c = parley_login(searcher, S);

		mine = calloc(M, sizeof(*mine));
		for (uint32_t k = 0; k < M; k++) {
			mine[nmine++] = (uint32_t)((uint64_t)k * C / M);
			join_channel(c, run.chans[mine[k]]);
		}
		pc_close(c);
	}
	say("%u channels, the searcher in %u; %u senders fill %ld messages, "
	    "%ld in flight each", C, M, S, opt.msgs, opt.inflight);

	spawn(S, 1);
	wait_ready(NULL);
	s0 = stages_read(opt.host, (int)opt.port);
	cpu0 = proc_cpu_s((int)opt.pid);
	t_go = now_ns();
	command_all(CMD_GO);
	while (done_msgs < 1)
		pump(-1, NULL);
	t_fill = last_at[0];
	cpu1 = proc_cpu_s((int)opt.pid);
	s1 = stages_read(opt.host, (int)opt.port);
	collect(NULL, &fill_ack);
	if (res.acks != (uint64_t)opt.msgs) {
		say("%llu of %ld sends answered", (unsigned long long)res.acks,
		    opt.msgs);
		res.errors += 1;
	}
	say("filled in %.1f s; waiting for the index", (double)(t_fill - t_go) / 1e9);

	/* The index has caught up when a token sent after the last fill ack,
	 * in every one of the searcher's channels (both shards), is found
	 * in all of them. */
	for (uint32_t k = 0; k < maxc; k++) {
		qc[k].pc = parley_login(searcher, S + 1 + k);
		qc[k].rid = 0;
	}
	{
		/* "zzmark" and the prefix's letters and digits: one token,
		 * in no other message */
		size_t tl = (size_t)snprintf(token, sizeof(token), "zzmark");

		for (const char *p = bo.prefix; *p && tl < 40; p++)
			if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
			    (*p >= 'A' && *p <= 'Z'))
				token[tl++] = *p;
		token[tl] = 0;
	}
	{
		proto_out o;
		proto_doc d;
		uint32_t acked = 0;

		proto_out_init(&o, 0, 512);
		for (uint32_t k = 0; k < M; k++) {
			char body[160], cmid[32];

			snprintf(body, sizeof(body), "the last words %s %u", token, k);
			snprintf(cmid, sizeof(cmid), "mark%u", k);
			proto_out_reset(&o);
			proto_enc_send(&o, (1ull << 40) + k, run.chans[mine[k]], body,
				       strlen(body), cmid, 0, NULL, 0);
			if (pc_send(qc[0].pc, &o))
				fail_run("marker: the searcher's connection closed");
		}
		while (acked < M) {
			const char *t;
			uint32_t tn;
			bool ok = false;
			int rc = pc_recv(qc[0].pc, &d, 30000);

			if (rc != 1)
				fail_run("marker sends: no answer");
			if (!proto_get_str(&d.root, "t", &t, &tn) && tn == 3 &&
			    !memcmp(t, "res", 3)) {
				proto_get_bool(&d.root, "ok", &ok);
				if (!ok)
					fail_run("a marker send was refused");
				acked++;
			}
			proto_doc_free(&d);
		}
		t_marks = now_ns();
		for (;;) {
			uint64_t rid = setup_rid++;
			long nh;

			enc_search(&o, rid, token, 100);
			if (pc_request(qc[0].pc, &o, rid, &d, 30000) != 1)
				fail_run("search: no answer");
			nh = search_hits(&d, why, sizeof(why));
			proto_doc_free(&d);
			polls++;
			if (nh < 0)
				fail_run("search {q: %s}: %s", token, why);
			if ((uint32_t)nh >= M)
				break;
			check_deadline();
			usleep(20000);
		}
		t_found = now_ns();
		proto_out_free(&o);
	}
	say("index caught up %.2f s after the last fill ack",
	    (double)(t_found - t_fill) / 1e9);

	f = open_memstream(&text, &tlen);
	fprintf(f, ",\"fill_s\":%.3f,\"fill_msgs_per_s\":%.1f,"
		   "\"fill_server_cpu_s\":%.3f,\"index_catchup_s\":%.3f,"
		   "\"marker_visible_s\":%.3f,\"catchup_polls\":%llu",
		(double)(t_fill - t_go) / 1e9,
		per((double)opt.msgs, (double)(t_fill - t_go) / 1e9), cpu1 - cpu0,
		(double)(t_found - t_fill) / 1e9, (double)(t_found - t_marks) / 1e9,
		(unsigned long long)polls);
	if (opt.data) {
		char path[4096];

		snprintf(path, sizeof(path), "%s/search", opt.data);
		fprintf(f, ",\"search_bytes\":%llu", (unsigned long long)du(path));
		snprintf(path, sizeof(path), "%s/db", opt.data);
		fprintf(f, ",\"store_bytes\":%llu", (unsigned long long)du(path));
	}
	/* the queries: per number of clients, per kind */
	for (uint32_t k = 0; k < maxc; k++)
		if (pc_set_nonblocking(qc[k].pc))
			fail_run("search: fcntl: %s", strerror(errno));
	/* one unmeasured pass over every query first: the first pass over a
	 * fresh index reads it from disk, and would make whichever client
	 * count goes first look slower */
	for (int kind = 0; kind < Q_KINDS; kind++) {
		char **qs = make_queries(kind, (uint32_t)opt.queries);
		hist h = { 0 };
		uint64_t hits = 0, zero = 0;

		run_queries(qc, maxc, qs, (uint32_t)opt.queries, &h, &hits, &zero);
		for (long i = 0; i < opt.queries; i++)
			free(qs[i]);
		free(qs);
	}
	fputs(",\"query\":{", f);
	for (uint32_t a = 0; a < ncl; a++) {
		fprintf(f, "%s\"c%u\":{", a ? "," : "", cl[a]);
		for (int kind = 0; kind < Q_KINDS; kind++) {
			char **qs = make_queries(kind, (uint32_t)opt.queries);
			hist h = { 0 };
			uint64_t hits = 0, zero = 0;
			double el = run_queries(qc, cl[a], qs, (uint32_t)opt.queries,
						&h, &hits, &zero);

			fprintf(f, "%s\"%s\":{\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,"
				   "\"p999\":%.4f,\"max\":%.4f,\"per_s\":%.1f,"
				   "\"hits_mean\":%.2f,\"zero_hit_share\":%.4f}",
				kind ? "," : "", qkind[kind], hist_pct_ms(&h, 0.5),
				hist_pct_ms(&h, 0.9), hist_pct_ms(&h, 0.99),
				hist_pct_ms(&h, 0.999), hist_pct_ms(&h, 1),
				per((double)opt.queries, el),
				(double)hits / (double)opt.queries,
				(double)zero / (double)opt.queries);
			say("%u client(s), %s: p50 %.2f ms, p99 %.2f ms, %.0f/s, "
			    "%.1f hits on average", cl[a], qkind[kind],
			    hist_pct_ms(&h, 0.5), hist_pct_ms(&h, 0.99),
			    per((double)opt.queries, el),
			    (double)hits / (double)opt.queries);
			for (long i = 0; i < opt.queries; i++)
				free(qs[i]);
			free(qs);
		}
		fputc('}', f);
	}
	fputc('}', f);
	fclose(f);
	res.search = text;
	for (uint32_t k = 0; k < maxc; k++)
		pc_close(qc[k].pc);
	res.ack = malloc(sizeof(hist));
	*res.ack = fill_ack;
	res.has_acks = true;
	res.duration_s = (double)(t_fill - t_go) / 1e9;
	res.server_cpu_s = cpu1 - cpu0;
	res.rss_bytes = proc_rss((int)opt.pid);
	res.has_rss = true;
	res.stages = stages_json(s0, s1, opt.quiet);
	stages_free(s0);
	stages_free(s1);
}

/* ---- push ------------------------------------------------------------------------------ */

/* perf/push-gateway's /_stats */
struct gwstat {
	double n, users, ids, posts, first, last, cpu, bad;
};

static bool gw_stats(struct gwstat *g)
{
	char *t = http_get(opt.host, (int)opt.gateway, "/_stats");

	if (!t)
		return false;
	g->n = json_num(t, "round_notifications");
	g->users = json_num(t, "round_unique_users");
	g->ids = json_num(t, "round_unique_ids");
	g->posts = json_num(t, "round_posts");
	g->first = json_num(t, "round_first_ns");
	g->last = json_num(t, "round_last_ns");
	g->cpu = json_num(t, "cpu_s");
	g->bad = json_num(t, "bad_posts");
	free(t);
	return g->n >= 0 && g->last >= 0 && g->cpu >= 0;
}

/* parleyd's parley_push_* counters (-1: not there) */
enum { PM_SENT, PM_RETRIED, PM_DROPPED, PM_OK, PM_ERROR, PM_TIMEOUT, PM_N };
static const char *const pm_name[PM_N] = {
	"parley_push_sent_total", "parley_push_retried_total",
	"parley_push_dropped_total", "parley_push_posts_total{result=\"ok\"}",
	"parley_push_posts_total{result=\"error\"}",
	"parley_push_posts_total{result=\"timeout\"}",
};
static const char *const pm_key[PM_N] = {
	"push_sent", "push_retried", "push_dropped", "push_posts_ok",
	"push_posts_error", "push_posts_timeout",
};

static void push_metrics(double *v)
{
	char *t = http_get(opt.host, (int)opt.port, "/metrics");

	for (int i = 0; i < PM_N; i++)
		v[i] = t ? prom_num(t, pm_name[i]) : -1;
	free(t);
}

/* One message with mentions ["@channel"] from the owner; the time the ack
 * came (0: refused or none, why in code). */
static uint64_t push_send(pc_conn *c, const char *ch, uint32_t r,
			  uint64_t *t_sent, char *code, size_t cap)
{
	static const char *const at_channel[] = { "@channel" };
	char body[BODY_MIN + 64], cmid[32];
	uint64_t rid = setup_rid++, t_ack;
	btag tag = { 0, r, UINT32_MAX };
	bool ok = false;
	proto_out o;
	proto_doc d;
	int rc;

	snprintf(cmid, sizeof(cmid), "push%u", r);
	proto_out_init(&o, 0, 512);
	*t_sent = tag.sent_ns = now_ns();
	tag_body(body, BODY_MIN, &tag);
	proto_enc_send(&o, rid, ch, body, BODY_MIN, cmid, 0, at_channel, 1);
	rc = pc_request(c, &o, rid, &d, 60000);
	t_ack = now_ns();
	proto_out_free(&o);
	if (rc != 1) {
		snprintf(code, cap, "no answer in 60 s");
		return 0;
	}
	proto_get_bool(&d.root, "ok", &ok);
	if (!ok) {
		const char *cd = "?", *m = "";
		uint32_t cn = 1, mn = 0;

		proto_get_str(&d.root, "code", &cd, &cn);
		proto_get_str(&d.root, "msg", &m, &mn);
		snprintf(code, cap, "%.*s (%.*s)", (int)cn, cd, (int)mn, m);
	}
	proto_doc_free(&d);
	return ok ? t_ack : 0;
}

/* The channel: the owner and users 0..M-2. Users N..M-2 register a pusher
 * and leave (PUSH_REGISTER processes); users 0..N-1 register one and stay,
 * heartbeating (PUSH_ONLINE). Then K rounds: one message with "@channel";
 * wait until the gateway has M - N - 1 notifications (every offline member
 * once, no online one, not the sender), then a second more for stragglers
 * (a duplicate or an online member notified would show there). One JSON
 * object per round; the exit status. */
static int run_push(void)
{
	uint32_t M = (uint32_t)opt.members, N = (uint32_t)opt.online;
	uint32_t users = M - 1, off = users - N, K = (uint32_t)opt.messages;
	uint32_t want = off;
	long procs = opt.procs, rprocs = off < 4 ? (long)off : 4;
	char owner[96], name[96], ch[PROTO_MAX_ID + 1] = "";
	struct pround {
		char *text;
		uint64_t errors, rss;
		double dur, cpu, load;
	} *rounds = calloc(K, sizeof(*rounds));
	uint64_t t0, t_inv, t_reg, t_on, setup_errors;
	struct gwstat g;
	pc_conn *c;
	uint32_t done = 0;

	if (!gw_stats(&g))
		fail_run("no push gateway answers GET /_stats on %s:%ld",
			 opt.host, opt.gateway);
	snprintf(owner, sizeof(owner), "%sowner", bo.prefix);
	snprintf(name, sizeof(name), "%sbench-push", bo.prefix);
	t0 = now_ns();
	c = parley_login(owner, M);
	create_channel(c, name, ch);
	invite(c, ch, 0, users);
	t_inv = now_ns();
	say("channel %s: %u members; %u register a pusher and leave (%ld "
	    "processes)", ch, M, off, rprocs);

	run.phase = PUSH_REGISTER;
	opt.procs = rprocs;
	spawn_base = N;
	spawn(off, 1);
	wait_ready(NULL);
	t_reg = now_ns();
	collect(NULL, NULL);
	free(kids);
	kids = NULL;
	say("%u pushers registered in %.1f s (%.0f/s); %u go online in %ld "
	    "processes", off, (double)(t_reg - t_inv) / 1e9,
	    per(off, (double)(t_reg - t_inv) / 1e9), N, procs);

	run.phase = PUSH_ONLINE;
	opt.procs = procs;
	spawn_base = 0;
	spawn(N, 1);
	wait_ready(NULL);
	t_on = now_ns();
	setup_errors = res.errors;
	res.errors = 0;
	say("%u online and registered in %.1f s; %u messages with @channel, %u "
	    "notifications expected each", N, (double)(t_on - t_reg) / 1e9, K,
	    want);

	for (uint32_t r = 0; r < K; r++) {
		double pm0[PM_N], pm1[PM_N], cpu0, cpu1, gcpu0, bad0;
		uint64_t t_sent, t_ack, t_seen = 0, t_prog, last_n = 0;
		uint64_t round_end;
		struct gwstat at = { 0 }, fin = { 0 };
		char code[256] = "", *text = NULL;
		size_t tlen = 0;
		uint64_t errors = r ? 0 : setup_errors;
		FILE *f;

		free(http_get(opt.host, (int)opt.gateway, "/_reset"));
		if (!gw_stats(&g) || g.n != 0)
			fail_run("the push gateway did not start a new round");
		gcpu0 = g.cpu;
		bad0 = g.bad; /* a total: this round's are the difference */
		push_metrics(pm0);
		cpu0 = proc_cpu_s((int)opt.pid);
		t_ack = push_send(c, ch, r, &t_sent, code, sizeof(code));
		if (!t_ack)
			fail_run("send with @channel: %s", code);
		/* until all came, or no progress for 30 s, or 120 s */
		t_prog = t_ack;
		round_end = t_ack + 120000000000ull;
		for (;;) {
			if (!gw_stats(&at))
				fail_run("the push gateway stopped answering");
			if (at.n >= want) {
				t_seen = now_ns();
				break;
			}
			if ((uint64_t)at.n != last_n) {
				last_n = (uint64_t)at.n;
				t_prog = now_ns();
			}
			if (now_ns() - t_prog > STALL_NS || now_ns() > round_end)
				break;
			pump(10, NULL);
		}
		cpu1 = proc_cpu_s((int)opt.pid);
		pump(1000, NULL); /* stragglers: duplicates, extras */
		if (!gw_stats(&fin))
			fail_run("the push gateway stopped answering");
		push_metrics(pm1);
		if (!t_seen) {
			say("round %u: %.0f of %u notifications, then none for "
			    "%.0f s", r + 1, at.n, want,
			    (double)(now_ns() - t_prog) / 1e9);
		}
		if (fin.n != want || fin.users != want || fin.ids != want) {
			say("round %u: %.0f notifications, %.0f users, %.0f ids; "
			    "%u expected", r + 1, fin.n, fin.users, fin.ids, want);
			errors += (uint64_t)(fin.n > want ? fin.n - want : want - fin.n);
			if (fin.users != want || fin.ids != want)
				errors++;
		}
		if (fin.bad > bad0) {
			say("round %u: %.0f POSTs the gateway could not read",
			    r + 1, fin.bad - bad0);
			errors += (uint64_t)(fin.bad - bad0);
		}

		f = open_memstream(&text, &tlen);
		fprintf(f, ",\"round\":%u,\"expected\":%u,\"notifications\":%.0f,"
			   "\"unique_users\":%.0f,\"unique_ids\":%.0f,\"posts\":%.0f,"
			   "\"send_ack_ms\":%.3f",
			r + 1, want, fin.n, fin.users, fin.ids, fin.posts,
			(double)(t_ack - t_sent) / 1e6);
		if (t_seen && at.first > 0)
			fprintf(f, ",\"ack_to_first_ms\":%.1f,\"ack_to_last_ms\":%.1f,"
				   "\"first_to_last_ms\":%.1f,"
				   "\"notifications_per_s\":%.0f",
				(at.first - (double)t_ack) / 1e6,
				(at.last - (double)t_ack) / 1e6,
				(at.last - at.first) / 1e6,
				per(want, (at.last - (double)t_ack) / 1e9));
		fprintf(f, ",\"gateway_cpu_s\":%.3f", at.cpu - gcpu0);
		/* the notifier's work, whatever CPU it was given: the server's
		 * CPU from the send until the last notification arrived */
		if (t_seen)
			fprintf(f, ",\"server_cpu_us_per_notification\":%.2f",
				(cpu1 - cpu0) * 1e6 / want);
		for (int i = 0; i < PM_N; i++)
			if (pm0[i] >= 0 && pm1[i] >= 0)
				fprintf(f, ",\"%s\":%.0f", pm_key[i], pm1[i] - pm0[i]);
		fprintf(f, ",\"invite_s\":%.2f,\"register_s\":%.2f,"
			   "\"registers_per_s\":%.0f,\"online_s\":%.2f",
			(double)(t_inv - t0) / 1e9, (double)(t_reg - t_inv) / 1e9,
			per(off, (double)(t_reg - t_inv) / 1e9),
			(double)(t_on - t_reg) / 1e9);
		fclose(f);
		rounds[r] = (struct pround){
			text, errors, proc_rss((int)opt.pid),
			t_seen ? (at.last - (double)t_ack) / 1e9 : 0, cpu1 - cpu0,
			loadavg() };
		done++;
		say("round %u: ack %.1f ms; ack to first notification %.0f ms, "
		    "to last %.0f ms (%.0f of %u)", r + 1,
		    (double)(t_ack - t_sent) / 1e6,
		    at.first > 0 ? (at.first - (double)t_ack) / 1e6 : -1,
		    at.last > 0 ? (at.last - (double)t_ack) / 1e6 : -1, fin.n, want);
		if (!t_seen)
			break; /* the notifier is stuck: no more rounds */
	}
	/* every online member got every message, and stayed */
	res.errors = 0;
	res.deliveries = 0;
	collect(NULL, NULL);
	pc_close(c);
	if (res.deliveries != (uint64_t)done * N) {
		say("online members got %llu messages, %llu expected",
		    (unsigned long long)res.deliveries,
		    (unsigned long long)done * N);
		res.errors++;
	}
	/* one JSON object per round; what went wrong at the end counts in
	 * the last one */
	if (done)
		rounds[done - 1].errors += res.errors + (done < K);
	else
		fail_run("no round completed");
	for (uint32_t r = 0; r < done; r++) {
		res.search = rounds[r].text;
		res.errors = rounds[r].errors;
		res.duration_s = rounds[r].dur;
		res.server_cpu_s = rounds[r].cpu;
		res.rss_bytes = rounds[r].rss;
		res.load = rounds[r].load;
		res.has_rss = true;
		res.stages = NULL;
		emit();
		if (res.errors)
			done = 0;
		free(rounds[r].text);
	}
	free(rounds);
	return done ? 0 : 3;
}

/* ---- main -------------------------------------------------------------------------------- */

static long num(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0 || v > INT_MAX)
		usage();
	return v;
}

/* "N" or "N1,N2,..": up to 16 numbers into out; how many */
static int nums(const char *s, int *out)
{
	char buf[256], *save, *t;
	int n = 0;

	if (strlen(s) >= sizeof(buf))
		usage();
	strcpy(buf, s);
	for (t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (n == 16)
			usage();
		out[n++] = (int)num(t);
	}
	if (!n)
		usage();
	return n;
}

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
		{ "help", 0, 0, 25 }, { "variant", 1, 0, 26 },
		{ "watchers", 1, 0, 27 }, { "changes", 1, 0, 28 },
		{ "gap-ms", 1, 0, 29 }, { "msgs", 1, 0, 30 },
		{ "member-of", 1, 0, 31 }, { "queries", 1, 0, 32 },
		{ "clients", 1, 0, 33 }, { "vocab", 1, 0, 34 },
		{ "limit", 1, 0, 35 }, { "data", 1, 0, 36 },
		{ "gateway", 1, 0, 37 }, { "tls", 0, 0, 38 },
		{ 0, 0, 0, 0 }
	};
	struct rlimit rl;
	long need;
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 1: opt.server = optarg; break;
		case 2: opt.scenario = optarg; break;
		case 3: opt.host = optarg; break;
		case 4: bo.nports = nums(optarg, bo.ports); opt.port = bo.ports[0]; break;
		case 5: npids = nums(optarg, pids); opt.pid = pids[0]; break;
		case 6: opt.secret = optarg; break;
		case 7: opt.ws = optarg; break;
		case 8: opt.prefix = optarg; break;
		case 9: opt.mode = optarg; break;
		case 10: opt.members = num(optarg); break;
		case 11: opt.online = num(optarg); break;
		case 12: opt.messages = num(optarg); break;
		case 13: opt.size = num(optarg); break;
		case 14: opt.channels = num(optarg); break;
		case 15: opt.rate = num(optarg); break;
		case 16: opt.senders = num(optarg); break;
		case 17: opt.inflight = num(optarg); break;
		case 18: opt.conns = num(optarg); break;
		case 19: opt.hb_ms = num(optarg); break;
		case 20: opt.duration = num(optarg); break;
		case 21: opt.procs = num(optarg); break;
		case 22: opt.timeout = num(optarg); break;
		case 23: opt.json = optarg; break;
		case 24: opt.quiet = true; break;
		case 26: opt.variant = optarg; break;
		case 27: opt.watchers = num(optarg); break;
		case 28: opt.changes = num(optarg); break;
		case 29: opt.gap_ms = num(optarg); break;
		case 30: opt.msgs = num(optarg); break;
		case 31: opt.member_of = num(optarg); break;
		case 32: opt.queries = num(optarg); break;
		case 33: opt.clients = optarg; break;
		case 34: opt.vocab = num(optarg); break;
		case 35: opt.limit = num(optarg); break;
		case 36: opt.data = optarg; break;
		case 37: opt.gateway = num(optarg); break;
		case 38: opt.tls = true; break;
		default: usage();
		}
	}
	if (!opt.scenario)
		usage();
	for (int i = 0; i < bo.nports; i++)
		if (bo.ports[i] < 1 || bo.ports[i] > 65535)
			usage();
	if ((bo.nports > 1 || npids > 1) &&
	    (!opt.server || strcmp(opt.server, "parley") || opt.tls ||
	     (strcmp(opt.scenario, "fanout") && strcmp(opt.scenario, "acks")) ||
	     npids != bo.nports)) {
		fprintf(stderr, "parley-bench: more than one --port is for parley's "
				"fanout and acks, with as many --pid (no --tls)\n");
		usage();
	}
	if (opt.tls) {
		/* parley over wss:// (no certificate check: the bench's own
		 * self-signed one); /metrics over https */
		if (strcmp(opt.server, "parley") || pc_tls(true)) {
			fprintf(stderr, "parley-bench: --tls is for parley\n");
			exit(2);
		}
		bench_tls_port = (int)opt.port;
	}
	/* defaults that depend on the scenario */
	if (!strcmp(opt.scenario, "search")) {
		if (opt.channels < 0)
			opt.channels = 1000;
		if (opt.senders < 0)
			opt.senders = 100;
		if (opt.inflight < 0)
			opt.inflight = 8;
	}
	if (!strcmp(opt.scenario, "push")) {
		if (opt.members == 25000)
			opt.members = 100000; /* the default of push */
		if (opt.messages < 0)
			opt.messages = 3;
	}
	if (opt.channels < 0)
		opt.channels = 100;
	if (opt.senders < 0)
		opt.senders = 64;
	if (opt.inflight < 0)
		opt.inflight = 1;
	if (optind != argc || !opt.server || opt.port < 1 ||
	    opt.port > 65535 || opt.pid < 1 || opt.size < BODY_MIN ||
	    opt.size > 16384 || opt.members < 1 || opt.channels < 1 ||
	    opt.rate < 1 || opt.senders < 1 || opt.inflight < 1 ||
	    opt.inflight > 4096 || opt.conns < 1 ||
	    (opt.hb_ms && opt.hb_ms < 100) ||
	    opt.duration < 1 || opt.timeout < 1 || opt.procs > 63 ||
	    opt.watchers < 1 || opt.changes < 1 || opt.changes > 1000000 ||
	    opt.msgs < 1 || opt.member_of < 1 ||
	    (!strcmp(opt.scenario, "search") && opt.member_of > opt.channels) ||
	    opt.queries < 1 ||
	    opt.vocab < 100 || opt.vocab > 100000 || opt.limit < 1 ||
	    opt.limit > 100 || !*opt.ws || (opt.prefix && !*opt.prefix) ||
	    !opt.host[0] || (opt.variant && strlen(opt.variant) > 64))
		usage();
	if (!strcmp(opt.server, "parley"))
		bo.srv = SRV_PARLEY;
	else if (!strcmp(opt.server, "nats"))
		bo.srv = SRV_NATS;
	else if (!strcmp(opt.server, "redis"))
		bo.srv = SRV_REDIS;
	else if (!strcmp(opt.server, "redis-aof"))
		bo.srv = SRV_REDIS, opt.aof = true;
	else
		usage();
	if (!strcmp(opt.scenario, "fanout"))
		run.scen = SC_FANOUT;
	else if (!strcmp(opt.scenario, "small"))
		run.scen = SC_SMALL;
	else if (!strcmp(opt.scenario, "acks"))
		run.scen = SC_ACKS;
	else if (!strcmp(opt.scenario, "idle"))
		run.scen = SC_IDLE;
	else if (!strcmp(opt.scenario, "hb"))
		run.scen = SC_HB;
	else if (!strcmp(opt.scenario, "presence"))
		run.scen = SC_PRESENCE;
	else if (!strcmp(opt.scenario, "search"))
		run.scen = SC_SEARCH;
	else if (!strcmp(opt.scenario, "push"))
		run.scen = SC_PUSH;
	else
		usage();
	if (run.scen == SC_PUSH && (opt.gateway < 1 || opt.gateway > 65535)) {
		fprintf(stderr, "parley-bench: push wants --gateway PORT\n");
		usage();
	}
	if (strcmp(opt.mode, "paced") && strcmp(opt.mode, "burst"))
		usage();
	if (run.scen == SC_SEARCH && opt.senders > opt.channels) {
		fprintf(stderr, "parley-bench: search wants --senders <= --channels\n");
		usage();
	}
	if ((run.scen == SC_SMALL || run.scen == SC_HB ||
	     run.scen == SC_PRESENCE || run.scen == SC_SEARCH ||
	     run.scen == SC_PUSH || (run.scen == SC_ACKS && bo.srv == SRV_NATS) ||
	     (opt.aof && run.scen != SC_ACKS)) && bo.srv != SRV_PARLEY) {
		fprintf(stderr, "parley-bench: %s is a parley scenario\n",
			opt.scenario);
		usage();
	}
	if (bo.srv == SRV_PARLEY) {
		if (!opt.secret) {
			fprintf(stderr, "parley-bench: parley needs --secret FILE\n");
			usage();
		}
		if (auth_load_secret(opt.secret, key, sizeof(key), &bo.keylen, false)) {
			fprintf(stderr, "parley-bench: cannot read the secret %s\n",
				opt.secret);
			return 1;
		}
		bo.key = key;
	}
	if (!opt.prefix) {
		snprintf(prefix_buf, sizeof(prefix_buf), "r%06x",
			 (unsigned)(now_ns() ^ (uint64_t)getpid() << 20) & 0xffffff);
		opt.prefix = prefix_buf;
	}
	if (strlen(opt.prefix) > 40 || !proto_id_valid(opt.prefix, strlen(opt.prefix)) ||
	    !proto_id_valid(opt.ws, strlen(opt.ws)))
		usage();
	bo.host = opt.host;
	bo.port = (int)opt.port;
	bo.ws = opt.ws;
	bo.prefix = opt.prefix;
	snprintf(bo.subject, sizeof(bo.subject), "pb.%s", opt.prefix);
	bo.own_subject = run.scen == SC_IDLE;

	if (opt.online < 0)
		opt.online = opt.members < 19000 ? opt.members : 19000;
	if (bo.srv != SRV_PARLEY)
		opt.members = opt.online; /* no offline members there */
	if (opt.online < 1 || opt.online > opt.members)
		usage();
	/* push: the owner, the online ones, and at least one to notify */
	if (run.scen == SC_PUSH && opt.online + 2 > opt.members)
		usage();
	if (opt.messages < 0)
		opt.messages = strcmp(opt.mode, "burst") ? 200 : 2000;
	if (opt.messages < 1)
		usage();
	need = run.scen == SC_FANOUT || run.scen == SC_PUSH ? opt.online :
	       run.scen == SC_IDLE || run.scen == SC_HB ? opt.conns :
	       run.scen == SC_PRESENCE ? opt.watchers :
	       run.scen == SC_SMALL ? opt.channels * 10 : opt.senders;
	if (!opt.procs) {
		opt.procs = (need + PER_PROC - 1) / PER_PROC;
		/* the watchers over both cores' worth of processes */
		if (run.scen == SC_PRESENCE && opt.procs < 2)
			opt.procs = 2;
	}
	if (opt.procs > need)
		opt.procs = need;
	if (run.scen == SC_SMALL && opt.procs > opt.channels)
		opt.procs = opt.channels;

	run.nmsg = run.scen == SC_FANOUT ? (uint32_t)opt.messages :
		   run.scen == SC_PRESENCE ? (uint32_t)opt.changes :
		   run.scen == SC_SEARCH ? 1 : 0;
	run.nchange = run.scen == SC_PRESENCE ? (uint32_t)opt.changes : 0;
	run.msgs = (uint64_t)opt.msgs;
	run.senders = (uint32_t)opt.senders;
	run.nchan = (uint32_t)opt.channels;
	if (run.scen == SC_SEARCH && vocab_init(&run.words, (uint32_t)opt.vocab)) {
		fprintf(stderr, "parley-bench: cannot make %ld words\n", opt.vocab);
		return 1;
	}
	run.size = (uint32_t)opt.size;
	run.inflight = (uint32_t)opt.inflight;
	run.rate = (double)opt.rate;
	run.hb_ms = (uint32_t)opt.hb_ms;

	if (!getrlimit(RLIMIT_NOFILE, &rl)) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
		    rl.rlim_cur < (rlim_t)(need / opt.procs + 1 + 64))
			say("warning: %llu open files per process for %ld connections "
			    "per process; use --procs",
			    (unsigned long long)rl.rlim_cur, need / opt.procs + 1);
	}
	signal(SIGPIPE, SIG_IGN);
	srand((unsigned)(now_ns() ^ (uint64_t)getpid()));
	deadline_ns = now_ns() + (uint64_t)opt.timeout * 1000000000u;
	if (run.scen == SC_ACKS && bo.srv == SRV_REDIS) {
		/* what the server says it does with a write; redis-aof is
		 * only a name when it fsyncs before every reply */
		redis_config("appendonly", opt.appendonly, sizeof(opt.appendonly));
		redis_config("appendfsync", opt.appendfsync,
			     sizeof(opt.appendfsync));
		if (opt.aof && (strcmp(opt.appendonly, "yes") ||
				strcmp(opt.appendfsync, "always")))
			fail_run("redis-aof: the server says appendonly '%s', "
				 "appendfsync '%s' (want yes, always)",
				 opt.appendonly, opt.appendfsync);
	}

	switch (run.scen) {
	case SC_FANOUT: run_fanout(); break;
	case SC_SMALL:
	case SC_ACKS: run_timed(); break;
	case SC_IDLE:
	case SC_HB: run_idle(); break;
	case SC_PRESENCE: run_presence(); break;
	case SC_SEARCH: run_search(); break;
	case SC_PUSH: return run_push();
	}
	emit();
	return res.errors ? 3 : 0;
}
