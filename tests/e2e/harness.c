/*
 * harness: see harness.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "actors/actors.h"
#include "tests/e2e/harness.h"

#ifndef PARLEYD_PATH
#error "PARLEYD_PATH must name the parleyd binary"
#endif

static void die(const char *what)
{
	fprintf(stderr, "harness: %s\n", what);
	abort();
}

/* Servers still running when the test binary exits (a failed assertion
 * longjmps out of a test before its cleanup) are killed here. */
static pid_t live[64];

static void kill_live(void)
{
	for (int i = 0; i < 64; i++)
		if (live[i] > 0)
			kill(live[i], SIGKILL);
}

static void track(pid_t pid, bool add)
{
	static bool registered;

	if (!registered) {
		atexit(kill_live);
		registered = true;
	}
	for (int i = 0; i < 64; i++) {
		if (add && live[i] <= 0) {
			live[i] = pid;
			return;
		}
		if (!add && live[i] == pid) {
			live[i] = 0;
			return;
		}
	}
}

/* Starts one parleyd on data dir, listening on 127.0.0.1:port (0: the
 * kernel picks), with the secret file, the cluster flags cflags (NULL:
 * none) and the extra flags; its pid and port into *pid and *port_out.
 * 0 when it is up. With may_fail, a parleyd that does not come up is
 * reaped and its end returned (-1, or 128 + the signal that killed it)
 * instead of aborting the test run. */
static int spawn_one(const char *dir, int port, const char *secret,
		     const char *cflags, const char *extra_flags, pid_t *pid,
		     int *port_out, bool may_fail)
{
	int pfd[2];
	char *argv[64];
	int argc = 0;
	char listen[] = "127.0.0.1:0";
	char extra[1024], cl[1024];
	char line[512];
	size_t n = 0;
	uint64_t deadline;

	if (pipe2(pfd, O_CLOEXEC))
		die("pipe");
	argv[argc++] = PARLEYD_PATH;
	argv[argc++] = "--listen";
	argv[argc++] = port ? line : listen;
	if (port)
		snprintf(line, sizeof(line), "127.0.0.1:%d", port);
	argv[argc++] = "--data";
	argv[argc++] = (char *)dir;
	argv[argc++] = "--jwt-secret-file";
	argv[argc++] = (char *)secret;
	argv[argc++] = "--no-pin";
	snprintf(cl, sizeof(cl), "%s", cflags ? cflags : "");
	for (char *t = strtok(cl, " "); t && argc < 62; t = strtok(NULL, " "))
		argv[argc++] = t;
	snprintf(extra, sizeof(extra), "%s", extra_flags);
	for (char *t = strtok(extra, " "); t && argc < 62; t = strtok(NULL, " "))
		argv[argc++] = t;
	argv[argc] = NULL;

	*pid = fork();
	if (*pid < 0)
		die("fork");
	if (*pid == 0) {
		dup2(pfd[1], 1);
		execv(argv[0], argv);
		_exit(127);
	}
	close(pfd[1]);
	track(*pid, true);
	/* Wait for "parleyd listening on ws://127.0.0.1:PORT/ws" */
	deadline = (uint64_t)time(NULL) + 30;
	memset(line, 0, sizeof(line));
	while (n < sizeof(line) - 1 && (uint64_t)time(NULL) < deadline) {
		struct pollfd p = { pfd[0], POLLIN, 0 };

		if (poll(&p, 1, 1000) <= 0)
			continue;
		if (read(pfd[0], line + n, 1) != 1)
			break;
		if (line[n++] == '\n')
			break;
	}
	close(pfd[0]);
	char *colon = strstr(line, "127.0.0.1:");
	if (!colon) {
		int st = 0;

		if (!may_fail)
			die("parleyd did not start");
		kill(*pid, SIGKILL);
		waitpid(*pid, &st, 0);
		track(*pid, false);
		*pid = 0;
		if (WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL)
			return 128 + WTERMSIG(st);
		return WIFEXITED(st) && WEXITSTATUS(st) ? WEXITSTATUS(st) : -1;
	}
	*port_out = atoi(colon + strlen("127.0.0.1:"));
	return 0;
}

static int spawn_try(hsrv *s, bool may_fail)
{
	return spawn_one(s->dir, s->port, s->secret, NULL, s->extra, &s->pid,
			 &s->port, may_fail);
}

/* ---- cluster mode (harness.h) ------------------------------------------- */

#ifndef NATS_CLUSTER_SH
#error "NATS_CLUSTER_SH must name scripts/nats-cluster.sh"
#endif

#define CL_LEASE_MS 3000
#define CL_READY_S 60 /* the hosts see each other within (ASan, loaded CI) */

bool h_cluster(void)
{
	const char *e = getenv("PARLEY_E2E_CLUSTER");

	return e && *e && strcmp(e, "0") != 0;
}

/* Cluster mode without nats-server (or curl, which nats-cluster.sh needs):
 * the whole binary is skipped (ctest: SKIP_RETURN_CODE 77). */
__attribute__((constructor)) static void cl_check_tools(void)
{
	if (!h_cluster())
		return;
	if (system("command -v nats-server >/dev/null 2>&1 && "
		   "command -v curl >/dev/null 2>&1")) {
		fprintf(stderr, "harness: PARLEY_E2E_CLUSTER is set but "
			"nats-server or curl is missing: skipped\n");
		exit(77);
	}
}

/*
 * What must be undone for a running cluster, kept here and not in the hsrv:
 * a test that fails longjmps out before its cleanup, and its hsrv (on its
 * stack) is overwritten after. A cluster is found again by the address of
 * its hsrv: a new h_start on the same address (the next test's hsrv, most
 * often) tears the old one down first, so failed tests do not pile up
 * clusters.
 *
 * The guardian is a shell (its own session, so a kill of the test's
 * process group spares it) that reads "b BASE", "+ PID", "- PID" lines
 * from a pipe; at EOF (h_cleanup closes it, or the test binary died) it
 * kills the hosts still listed, stops the NATS nodes and removes root.
 */
struct cluster {
	hsrv *owner; /* NULL: a free slot */
	pid_t hpid[H_HOSTS];
	pid_t guard;
	int guard_fd;
	int base;    /* NATS base port (nats-cluster.sh), 0: none running */
	char root[256];
};

static struct cluster clusters[16];

static const char guardian_sh[] =
	"pids=; base=\n"
	"while read -r op arg; do\n"
	"  case $op in\n"
	"    b) base=$arg ;;\n"
	"    +) pids=\"$pids $arg\" ;;\n"
	"    -) n=; for p in $pids; do [ \"$p\" = \"$arg\" ] || n=\"$n $p\"; "
	"done; pids=$n ;;\n"
	"  esac\n"
	"done\n"
	"for p in $pids; do kill -KILL \"$p\" 2>/dev/null; done\n"
	"[ -n \"$base\" ] && bash \"$0\" stop \"$1/nats\" \"$base\"\n"
	"rm -rf \"$1\" \"$1.secret\" \"$1.dmkey\"\n";

static struct cluster *cl_find(const hsrv *s)
{
	for (unsigned i = 0; i < sizeof(clusters) / sizeof(*clusters); i++)
		if (clusters[i].owner == s)
			return &clusters[i];
	return NULL;
}

static void cl_tell(struct cluster *c, char op, long v)
{
	char buf[64];
	int n = snprintf(buf, sizeof(buf), "%c %ld\n", op, v);

	if (c->guard_fd >= 0 && write(c->guard_fd, buf, (size_t)n) != n)
		fprintf(stderr, "harness: guardian: %s\n", strerror(errno));
}

static void cl_guardian(struct cluster *c)
{
	int pfd[2];

	if (pipe2(pfd, O_CLOEXEC))
		die("pipe");
	c->guard = fork();
	if (c->guard < 0)
		die("fork");
	if (c->guard == 0) {
		int null = open("/dev/null", O_RDWR);

		setsid();
		dup2(pfd[0], 0);
		/* not the test's stdout/stderr: ctest waits for those */
		dup2(null, 1);
		dup2(null, 2);
		execl("/bin/sh", "sh", "-c", guardian_sh, NATS_CLUSTER_SH,
		      c->root, (char *)NULL);
		_exit(127);
	}
	close(pfd[0]);
	c->guard_fd = pfd[1];
}

/* a port nobody listens on (nor binds) on 127.0.0.1 now */
static bool port_free(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false;
	ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

/* nats-cluster.sh CMD root/nats BASE; with out, its stdout's first line */
static int cl_nats(struct cluster *c, const char *cmd, int base, char *out,
		   size_t outsz)
{
	char line[1024];
	FILE *f;

	snprintf(line, sizeof(line), "bash '%s' %s '%s/nats' %d",
		 NATS_CLUSTER_SH, cmd, c->root, base);
	f = popen(line, "re");
	if (!f)
		return -1;
	if (out) {
		out[0] = 0;
		if (fgets(out, (int)outsz, f))
			out[strcspn(out, "\n")] = 0;
	}
	while (fgets(line, sizeof(line), f))
		;
	return pclose(f);
}

/* Starts the NATS nodes on free ports; their URLs into urls. */
static void cl_start_nats(struct cluster *c, char *urls, size_t n)
{
	static bool seeded;

	if (!seeded) {
		srand((unsigned)(getpid() ^ now_ms()));
		seeded = true;
	}
	for (int attempt = 0; attempt < 8; attempt++) {
		/* ports base..+2 (clients), +10..+12 (routes), +20..+22 (http) */
		int base = 20000 + (rand() % 4000) * 10;
		bool ok = true;

		for (int i = 0; i < 3 && ok; i++)
			ok = port_free(base + i) && port_free(base + 10 + i) &&
			     port_free(base + 20 + i);
		if (!ok)
			continue;
		cl_tell(c, 'b', base);
		if (cl_nats(c, "start", base, urls, n) == 0 &&
		    !strncmp(urls, "nats://", 7)) {
			c->base = base;
			return;
		}
		/* someone took a port meanwhile, or a node failed: again */
		fprintf(stderr, "harness: NATS cluster on %d did not start; "
			"trying other ports\n", base);
		cl_nats(c, "stop", base, NULL, 0);
	}
	die("could not start the NATS cluster (scripts/nats-cluster.sh)");
}

/* GET path on 127.0.0.1:port into buf (the whole answer, headers too);
 * false if it could not be read. */
static bool http_get_local(int port, const char *path, char *buf, size_t n)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_sec = 5 };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	char req[256];
	size_t got = 0;
	int len;

	if (fd < 0)
		return false;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	len = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: "
		       "127.0.0.1\r\nConnection: close\r\n\r\n", path);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    write(fd, req, (size_t)len) != len) {
		close(fd);
		return false;
	}
	for (;;) {
		ssize_t r = read(fd, buf + got, n - 1 - got);

		if (r <= 0)
			break;
		got += (size_t)r;
		if (got == n - 1)
			break;
	}
	close(fd);
	buf[got] = 0;
	return got > 0;
}

/* the line after p's, NULL after the last */
static const char *next_line(const char *p)
{
	const char *nl = strchr(p, '\n');

	return nl ? nl + 1 : NULL;
}

/* the value of the unlabelled metric name in text, -1 if absent */
static long metric(const char *text, const char *name)
{
	size_t len = strlen(name);

	for (const char *p = text; p && *p; p = next_line(p))
		if (!strncmp(p, name, len) && p[len] == ' ')
			return strtol(p + len + 1, NULL, 10);
	return -1;
}

static unsigned count_lines(const char *text, const char *prefix)
{
	size_t len = strlen(prefix);
	unsigned k = 0;

	for (const char *p = text; p && *p; p = next_line(p))
		k += !strncmp(p, prefix, len);
	return k;
}

/*
 * Waits until every host holds its lease and counts all H_HOSTS, and, once
 * the hosts report partition ownership, until the partitions are all
 * owned (one owner: the others forward to it). Fails the test with what
 * the hosts said if that does not come within CL_READY_S.
 */
static void cl_wait_ready(hsrv *s)
{
	static char text[1 << 16];
	char why[1024] = "";
	uint64_t end = now_ms() + CL_READY_S * 1000;

	for (;;) {
		bool ready = true, owned_known = true;
		long owned = 0;
		unsigned parts = 0;
		size_t w = 0;

		why[0] = 0;
		for (int i = 0; i < s->nhosts; i++) {
			long hosts = -1, lease = -1, own = -1;

			if (http_get_local(s->hport[i], "/metrics", text,
					   sizeof(text))) {
				hosts = metric(text, "parley_cluster_hosts");
				lease = metric(text, "parley_cluster_lease_ok");
				own = metric(text,
					     "parley_cluster_partitions_owned");
				if (i == 0) {
					long np = metric(text,
						"parley_cluster_partitions");

					parts = np >= 0 ? (unsigned)np :
						count_lines(text,
						"parley_cluster_partition_owned{");
				}
			}
			w += (size_t)snprintf(why + w, sizeof(why) - w,
				"h%d: hosts %ld lease_ok %ld owned %ld; ",
				i + 1, hosts, lease, own);
			if (hosts != s->nhosts || lease != 1)
				ready = false;
			if (own < 0)
				owned_known = false;
			else
				owned += own;
		}
		if (ready && owned_known && (parts == 0 || owned != parts))
			ready = false;
		if (ready)
			return;
		if (now_ms() >= end)
			fail_msg("cluster not ready within %d s (%u partitions):"
				 " %s", CL_READY_S, parts, why);
		usleep(100000);
	}
}

/* Kills what still runs of c, stops its NATS nodes, removes its files. */
static void cl_teardown(struct cluster *c)
{
	for (int i = 0; i < H_HOSTS; i++) {
		if (c->hpid[i] > 0) {
			kill(c->hpid[i], SIGKILL);
			waitpid(c->hpid[i], NULL, 0);
			track(c->hpid[i], false);
			cl_tell(c, '-', c->hpid[i]);
			c->hpid[i] = 0;
		}
	}
	if (c->guard_fd >= 0)
		close(c->guard_fd); /* the guardian stops NATS, removes root */
	c->guard_fd = -1;
	if (c->guard > 0)
		waitpid(c->guard, NULL, 0);
	c->guard = 0;
	c->owner = NULL;
}

static void cl_start(hsrv *s, const char *parent, const char *extra)
{
	struct cluster *c = cl_find(s);
	char urls[512], cflags[1024], secret[300], dmkey[300];
	int fd;

	if (c) /* a test that failed before its cleanup left it */
		cl_teardown(c);
	c = cl_find(NULL);
	if (!c)
		die("too many clusters at once");
	memset(c, 0, sizeof(*c));
	c->guard_fd = -1;
	memset(s, 0, sizeof(*s));
	snprintf(c->root, sizeof(c->root), "%.200s/parley-e2e-XXXXXX", parent);
	if (!mkdtemp(c->root))
		die("mkdtemp");
	c->owner = s;
	cl_guardian(c);
	snprintf(secret, sizeof(secret), "%s.secret", c->root);
	snprintf(s->secret, sizeof(s->secret), "%s", secret);
	fd = open(s->secret, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, "e2e-test-secret-0123456789abcdef", 32) != 32)
		die("secret");
	close(fd);
	/* the DM key: every host of a cluster needs the same (32 random
	 * bytes, as parleyd makes its own) */
	{
		uint8_t key[32];
		int rnd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

		snprintf(dmkey, sizeof(dmkey), "%s.dmkey", c->root);
		fd = open(dmkey, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			  0600);
		if (rnd < 0 || fd < 0 ||
		    read(rnd, key, sizeof(key)) != (ssize_t)sizeof(key) ||
		    write(fd, key, sizeof(key)) != (ssize_t)sizeof(key))
			die("dm key");
		close(rnd);
		close(fd);
	}
	snprintf(s->extra, sizeof(s->extra), "%s", extra ? extra : "");
	s->nhosts = H_HOSTS;
	cl_start_nats(c, urls, sizeof(urls));
	for (int i = 0; i < H_HOSTS; i++) {
		snprintf(s->hdir[i], sizeof(s->hdir[i]), "%.200s/h%d",
			 c->root, i + 1);
		if (mkdir(s->hdir[i], 0700))
			die("mkdir");
	}
	/* host 1 first: the preferred host, the owner */
	for (int i = 0; i < H_HOSTS; i++) {
		snprintf(cflags, sizeof(cflags), "--cluster %s --host-id h%d "
			 "--lease-ms %d --dm-key-file %s", urls, i + 1,
			 CL_LEASE_MS, dmkey);
		spawn_one(s->hdir[i], 0, s->secret, cflags, s->extra,
			  &c->hpid[i], &s->hport[i], false);
		cl_tell(c, '+', c->hpid[i]);
	}
	snprintf(s->dir, sizeof(s->dir), "%s", s->hdir[0]);
	s->pid = c->hpid[0];
	s->port = s->hport[0];
	cl_wait_ready(s);
}

/* SIGTERM to every host, then the NATS nodes stop; 0 if every host
 * exited 0, else the first other end (-1: had to be killed). A host that
 * refused a write outside the log (parley_cluster_local_refused_total: a
 * write its actors made for a partition it does not own) fails it too
 * (-2): its users' requests got UNAVAILABLE for nothing, and before the
 * refusal existed such writes made the hosts' stores differ. */
static int cl_stop(hsrv *s)
{
	static char text[1 << 16];
	struct cluster *c = cl_find(s);
	int ret = 0;

	if (!c)
		return -1;
	for (int i = 0; i < H_HOSTS; i++) {
		long n;

		if (c->hpid[i] <= 0 ||
		    !http_get_local(s->hport[i], "/metrics", text, sizeof(text)))
			continue;
		n = metric(text, "parley_cluster_local_refused_total");
		if (n > 0) {
			fprintf(stderr, "harness: host h%d refused %ld writes "
				"outside the log\n", i + 1, n);
			ret = -2;
		}
	}
	for (int i = 0; i < H_HOSTS; i++)
		if (c->hpid[i] > 0)
			kill(c->hpid[i], SIGTERM);
	for (int i = 0; i < H_HOSTS; i++) {
		int st = 0, end = -1;
		bool gone = false;

		if (c->hpid[i] <= 0)
			continue;
		for (int k = 0; k < 200 && !gone; k++) {
			gone = waitpid(c->hpid[i], &st, WNOHANG) == c->hpid[i];
			if (!gone)
				usleep(50000);
		}
		if (gone) {
			end = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		} else {
			kill(c->hpid[i], SIGKILL);
			waitpid(c->hpid[i], &st, 0);
		}
		if (end != 0) {
			fprintf(stderr, "harness: host h%d ended with %d on "
				"SIGTERM\n", i + 1, end);
			if (ret == 0)
				ret = end;
		}
		track(c->hpid[i], false);
		cl_tell(c, '-', c->hpid[i]);
		c->hpid[i] = 0;
	}
	s->pid = 0;
	if (c->base) {
		cl_nats(c, "stop", c->base, NULL, 0);
		c->base = 0;
	}
	return ret;
}

/* kill -9 and restarts are not for cluster mode: the rest of the test is
 * skipped (and the cluster torn down, as the test will not clean up). */
static void cl_skip(hsrv *s, const char *what)
{
	struct cluster *c = cl_find(s);

	if (c)
		cl_teardown(c);
	s->pid = 0;
	fprintf(stderr, "harness: cluster mode: %s is not for a cluster; "
		"the rest of this test is skipped\n", what);
	skip();
}

static void spawn(hsrv *s)
{
	spawn_try(s, false);
}

int h_restart_try(hsrv *s)
{
	if (s->nhosts)
		cl_skip(s, "h_restart_try");
	return spawn_try(s, true);
}

void h_start(hsrv *s, const char *extra)
{
	h_start_in(s, "/tmp", extra);
}

void h_start_in(hsrv *s, const char *parent, const char *extra)
{
	int fd;

	if (h_cluster()) {
		cl_start(s, parent, extra);
		return;
	}
	memset(s, 0, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "%.200s/parley-e2e-XXXXXX", parent);
	if (!mkdtemp(s->dir))
		die("mkdtemp");
	snprintf(s->secret, sizeof(s->secret), "%.200s.secret", s->dir);
	fd = open(s->secret, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, "e2e-test-secret-0123456789abcdef", 32) != 32)
		die("secret");
	close(fd);
	snprintf(s->extra, sizeof(s->extra), "%s", extra ? extra : "");
	spawn(s);
}

int h_stop(hsrv *s)
{
	int st = 0;

	if (s->nhosts)
		return cl_stop(s);
	if (s->pid <= 0)
		return -1;
	kill(s->pid, SIGTERM);
	for (int i = 0; i < 200; i++) {
		if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
			track(s->pid, false);
			s->pid = 0;
			return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		}
		usleep(50000);
	}
	kill(s->pid, SIGKILL);
	waitpid(s->pid, &st, 0);
	track(s->pid, false);
	s->pid = 0;
	return -1;
}

void h_kill9(hsrv *s)
{
	if (s->nhosts)
		cl_skip(s, "h_kill9");
	if (s->pid > 0) {
		kill(s->pid, SIGKILL);
		waitpid(s->pid, NULL, 0);
		track(s->pid, false);
		s->pid = 0;
	}
}

void h_restart(hsrv *s)
{
	if (s->nhosts)
		cl_skip(s, "h_restart");
	spawn(s); /* same port, same data */
}

void h_cleanup(hsrv *s)
{
	char cmd[1024];

	if (s->nhosts) {
		struct cluster *c = cl_find(s);

		if (c)
			cl_teardown(c);
		s->pid = 0;
		return;
	}
	if (s->pid > 0)
		h_kill9(s);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", s->dir, s->secret);
	if (system(cmd))
		fprintf(stderr, "harness: cleanup failed\n");
}

/* a token signed with the server's secret; name and role: claims or NULL */
static char *mint(hsrv *s, const char *user, const char *ws, int64_t exp,
		  const char *name, const char *role)
{
	uint8_t key[512];
	size_t len;

	if (auth_load_secret(s->secret, key, sizeof(key), &len, false))
		die("read secret");
	return auth_mint(key, len, user, ws, exp, name, role);
}

char *h_token_exp(hsrv *s, const char *user, const char *ws, int64_t exp)
{
	return mint(s, user, ws, exp, NULL, NULL);
}

char *h_token(hsrv *s, const char *user, const char *ws)
{
	return h_token_exp(s, user, ws, (int64_t)time(NULL) + 3600);
}

pc_conn *h_connect_raw(hsrv *s)
{
	int port = s->nhosts ? s->hport[s->rr++ % (unsigned)s->nhosts]
			     : s->port;

	return pc_connect("127.0.0.1", port, NULL, "parley.v1", H_TIMEOUT);
}

pc_conn *h_connect(hsrv *s, const char *user, const char *ws,
		   proto_doc *hello_res)
{
	return h_connect_claims(s, user, ws, NULL, NULL, hello_res);
}

pc_conn *h_connect_claims(hsrv *s, const char *user, const char *ws,
			  const char *name, const char *role,
			  proto_doc *hello_res)
{
	pc_conn *c = h_connect_raw(s);
	char *tok = mint(s, user, ws, (int64_t)time(NULL) + 3600, name, role);
	proto_doc res;
	int rc;

	if (!c) {
		free(tok);
		return NULL;
	}
	rc = pc_hello(c, tok, NULL, NULL, 0, &res, H_TIMEOUT);
	free(tok);
	if (rc != 1) {
		if (rc == -2)
			proto_doc_free(&res);
		pc_close(c);
		return NULL;
	}
	if (hello_res)
		*hello_res = res;
	else
		proto_doc_free(&res);
	return c;
}

static uint64_t next_rid = 1;

/* Encodes op with npairs (key, type, value) from ap and sends it: the rid,
 * or 0 when it could not be sent. */
static uint64_t post_v(pc_conn *c, const char *op, unsigned npairs, va_list ap)
{
	proto_out o;
	uint64_t rid = __atomic_fetch_add(&next_rid, 1, __ATOMIC_RELAXED);
	int rc;

	proto_out_init(&o, 0, 256);
	proto_enc_req(&o, op, rid, npairs);
	for (unsigned i = 0; i < npairs; i++) {
		const char *key = va_arg(ap, const char *);
		int type = va_arg(ap, int);

		proto_pk_cstr(&o.pk, key);
		switch (type) {
		case 's':
			proto_pk_cstr(&o.pk, va_arg(ap, const char *));
			break;
		case 'u':
			msgpack_pack_uint64(&o.pk, va_arg(ap, uint64_t));
			break;
		case 'b':
			if (va_arg(ap, int))
				msgpack_pack_true(&o.pk);
			else
				msgpack_pack_false(&o.pk);
			break;
		case 'S': {
			const char **v = va_arg(ap, const char **);
			unsigned n = 0;

			while (v[n])
				n++;
			msgpack_pack_array(&o.pk, n);
			for (unsigned j = 0; j < n; j++)
				proto_pk_cstr(&o.pk, v[j]);
			break;
		}
		default:
			die("h_req: bad type");
		}
	}
	rc = pc_send(c, &o);
	proto_out_free(&o);
	return rc ? 0 : rid;
}

uint64_t h_post(pc_conn *c, const char *op, unsigned npairs, ...)
{
	va_list ap;
	uint64_t rid;

	va_start(ap, npairs);
	rid = post_v(c, op, npairs, ap);
	va_end(ap);
	return rid;
}

int h_await(pc_conn *c, uint64_t rid, proto_doc *res)
{
	return rid ? pc_await(c, rid, res, H_TIMEOUT) : -1;
}

int h_req(pc_conn *c, proto_doc *res, const char *op, unsigned npairs, ...)
{
	va_list ap;
	uint64_t rid;

	va_start(ap, npairs);
	rid = post_v(c, op, npairs, ap);
	va_end(ap);
	return h_await(c, rid, res);
}


bool h_ok(const proto_doc *res)
{
	bool ok = false;

	return proto_get_bool(&res->root, "ok", &ok) == 0 && ok;
}

const char *h_s(const msgpack_object *map, const char *key)
{
	static __thread char buf[PROTO_MAX_BODY + 1];
	const char *s;
	uint32_t n;

	if (proto_get_str(map, key, &s, &n))
		return "";
	if (n > PROTO_MAX_BODY)
		n = PROTO_MAX_BODY; /* a copy of the start (larger --max-body) */
	memcpy(buf, s, n);
	buf[n] = 0;
	return buf;
}

const char *h_code(const proto_doc *res) { return h_s(&res->root, "code"); }

uint64_t h_u(const msgpack_object *map, const char *key)
{
	uint64_t v = 0;

	proto_get_uint(map, key, &v);
	return v;
}

int h_create(pc_conn *c, const char *name, const char *kind, char *ch_out)
{
	proto_doc res;
	const msgpack_object_map *ch;

	if (h_req(c, &res, "ch.create", 2, "name", 's', name, "kind", 's',
		  kind) != 1)
		return -1;
	if (!h_ok(&res) || proto_get_map(&res.root, "ch", &ch)) {
		proto_doc_free(&res);
		return -1;
	}
	msgpack_object m = { .type = MSGPACK_OBJECT_MAP, .via.map = *ch };
	snprintf(ch_out, 65, "%.64s", h_s(&m, "id"));
	proto_doc_free(&res);
	return 0;
}

int64_t h_send(pc_conn *c, const char *ch, const char *body, const char *cmid)
{
	proto_doc res;
	int64_t seq = -1;

	if (h_req(c, &res, "send", 3, "ch", 's', ch, "body", 's', body,
		  "cmid", 's', cmid) != 1)
		return -1;
	if (h_ok(&res))
		seq = (int64_t)h_u(&res.root, "seq");
	proto_doc_free(&res);
	return seq;
}

int h_next(pc_conn *c, proto_doc *out, int timeout_ms)
{
	return pc_recv(c, out, timeout_ms);
}

int h_expect(pc_conn *c, const char *t, proto_doc *out, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		uint64_t now = now_ms();
		int rc;

		if (now >= end)
			return 0;
		rc = pc_recv(c, out, (int)(end - now));
		if (rc != 1)
			return rc;
		if (!strcmp(h_s(&out->root, "t"), t))
			return 1;
		proto_doc_free(out);
	}
}

uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void sleep_until(uint64_t t)
{
	uint64_t now;

	while ((now = now_ms()) < t)
		usleep((useconds_t)(t - now) * 1000);
}

int h_drain(pc_conn *c, int ms)
{
	proto_doc d;
	int n = 0;

	while (pc_recv(c, &d, ms) == 1) {
		proto_doc_free(&d);
		n++;
	}
	return n;
}

/* ---- for cmocka tests ------------------------------------------------------ */

/* Fail the running test at the caller's file and line. cmocka's _fail()
 * longjmps out of the test. */
#define FAIL_AT(file, line, ...)              \
	do {                                  \
		print_error(__VA_ARGS__);     \
		print_error("\n");            \
		_fail((file), (line));        \
	} while (0)

static const char *rc_what(int rc)
{
	return rc == 0 ? "timed out" : "connection closed";
}

pc_conn *h_connect_ok(hsrv *s, const char *user, const char *ws)
{
	pc_conn *c = h_connect(s, user, ws, NULL);

	if (!c)
		fail_msg("could not connect and hello as %s@%s", user, ws);
	return c;
}

void h_finish(hsrv *s)
{
	int st = h_stop(s);

	if (st != 0)
		fail_msg("parleyd exited with %d on SIGTERM", st);
	h_cleanup(s);
}

void h_req_ok_at(const char *file, int line, pc_conn *c, proto_doc *res,
		 const char *op, unsigned npairs, ...)
{
	va_list ap;
	uint64_t rid;
	int rc;

	va_start(ap, npairs);
	rid = post_v(c, op, npairs, ap);
	va_end(ap);
	rc = h_await(c, rid, res);
	if (rc != 1)
		FAIL_AT(file, line, "%s: no answer (%s)", op, rc_what(rc));
	if (!h_ok(res)) {
		char code[65];

		snprintf(code, sizeof(code), "%s", h_code(res));
		FAIL_AT(file, line, "%s: expected ok, got %s: %s", op, code,
			h_s(&res->root, "msg"));
	}
}

void h_req_fail_at(const char *file, int line, const char *code, pc_conn *c,
		   const char *op, unsigned npairs, ...)
{
	va_list ap;
	proto_doc res;
	uint64_t rid;
	int rc;

	va_start(ap, npairs);
	rid = post_v(c, op, npairs, ap);
	va_end(ap);
	rc = h_await(c, rid, &res);
	if (rc != 1)
		FAIL_AT(file, line, "%s: no answer (%s)", op, rc_what(rc));
	if (h_ok(&res)) {
		proto_doc_free(&res);
		FAIL_AT(file, line, "%s: expected %s, got ok", op, code);
	}
	if (strcmp(h_code(&res), code)) {
		char got[65];

		snprintf(got, sizeof(got), "%s", h_code(&res));
		proto_doc_free(&res);
		FAIL_AT(file, line, "%s: expected %s, got %s", op, code, got);
	}
	proto_doc_free(&res);
}

void h_create_ok(pc_conn *c, const char *name, const char *kind, char *out)
{
	proto_doc res;
	const msgpack_object_map *mp;
	msgpack_object ch = { .type = MSGPACK_OBJECT_MAP };

	h_req_ok(c, &res, "ch.create", 2, "name", 's', name, "kind", 's',
		 kind);
	if (proto_get_map(&res.root, "ch", &mp))
		fail_msg("ch.create %s: no ch in the answer", name);
	ch.via.map = *mp;
	snprintf(out, 65, "%.64s", h_s(&ch, "id"));
	assert_true(out[0] != 0);
	assert_string_equal(h_s(&ch, "name"), name);
	assert_string_equal(h_s(&ch, "kind"), kind);
	proto_doc_free(&res);
}

void h_join_ok(pc_conn *c, const char *ch)
{
	proto_doc res;

	h_req_ok(c, &res, "ch.join", 1, "ch", 's', ch);
	proto_doc_free(&res);
}

/* One barrier round: read {ch, seq:0}, frames before its answer to seen. */
static int barrier_round(pc_conn *c, const char *ch,
			 void (*seen)(const proto_doc *d, void *arg), void *arg)
{
	uint64_t rid = h_post(c, "read", 2, "ch", 's', ch, "seq", 'u',
			      (uint64_t)0);
	uint64_t end = now_ms() + H_TIMEOUT;

	if (!rid)
		return -1;
	for (;;) {
		uint64_t now = now_ms();
		proto_doc d;
		int rc;

		if (now >= end)
			return 0;
		rc = pc_recv(c, &d, (int)(end - now));
		if (rc != 1)
			return rc;
		if (!strcmp(h_s(&d.root, "t"), "res") &&
		    h_u(&d.root, "rid") == rid) {
			/* ok, FORBIDDEN, NOT_FOUND: the channel actor's */
			bool from_chan = h_ok(&d) ||
					 !strcmp(h_code(&d), "FORBIDDEN") ||
					 !strcmp(h_code(&d), "NOT_FOUND");

			if (!from_chan) {
				char code[65];

				snprintf(code, sizeof(code), "%s", h_code(&d));
				proto_doc_free(&d);
				fail_msg("barrier on %s answered %s: not a "
					 "barrier", ch, code);
			}
			proto_doc_free(&d);
			return 1;
		}
		if (seen)
			seen(&d, arg);
		proto_doc_free(&d);
	}
}

int h_barrier(pc_conn *c, const char *ch,
	      void (*seen)(const proto_doc *d, void *arg), void *arg)
{
	int rc = barrier_round(c, ch, seen, arg);

	return rc == 1 ? barrier_round(c, ch, seen, arg) : rc;
}

struct none {
	const char *t, *ch;
	char bad[4096]; /* the first unwanted frame, printed */
};

static bool wanted_not(const struct none *n, const proto_doc *d)
{
	return (!n->t || !strcmp(h_s(&d->root, "t"), n->t)) &&
	       (!n->ch || !strcmp(h_s(&d->root, "ch"), n->ch));
}

static void none_seen(const proto_doc *d, void *arg)
{
	struct none *n = arg;

	if (!n->bad[0] && wanted_not(n, d))
		msgpack_object_print_buffer(n->bad, sizeof(n->bad), d->root);
}

void h_expect_none_at(const char *file, int line, pc_conn *c, const char *t,
		      const char *ch, const char *via)
{
	struct none n = { .t = t, .ch = ch };
	int rc = h_barrier(c, via, none_seen, &n);

	if (n.bad[0])
		FAIL_AT(file, line, "unexpected frame (before the barrier on "
			"%s): %s", via, n.bad);
	if (rc != 1)
		FAIL_AT(file, line, "barrier on %s: %s (close code %d)", via,
			rc_what(rc), rc ? pc_close_code(c) : 0);
}

void h_expect_none_for_at(const char *file, int line, pc_conn *c,
			  const char *t, const char *ch, int ms)
{
	struct none n = { .t = t, .ch = ch };
	uint64_t end = now_ms() + (uint64_t)ms;

	if (ms <= 0)
		FAIL_AT(file, line, "h_expect_none_for: %d ms watches nothing",
			ms);
	for (;;) {
		uint64_t now = now_ms();
		proto_doc d;
		int rc;

		if (now >= end)
			return;
		rc = pc_recv(c, &d, (int)(end - now));
		if (rc == -1)
			FAIL_AT(file, line, "connection closed (code %d)",
				pc_close_code(c));
		if (rc != 1)
			return;
		none_seen(&d, &n);
		proto_doc_free(&d);
		if (n.bad[0])
			FAIL_AT(file, line, "unexpected frame: %s", n.bad);
	}
}

/* ---- tokens with claims (issue 13: names, roles) ------------------------ */

pc_conn *h_connect_role(hsrv *s, const char *user, const char *ws,
			const char *role)
{
	return h_connect_claims(s, user, ws, NULL, role, NULL);
}

pc_conn *h_connect_named(hsrv *s, const char *user, const char *ws,
			 const char *name, proto_doc *hello_res)
{
	return h_connect_claims(s, user, ws, name, NULL, hello_res);
}
