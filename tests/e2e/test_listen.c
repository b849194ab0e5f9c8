/*
 * The listening address belongs to one server. A second parleyd started on
 * the port of a running one (its own data directory, as an operator's
 * mistake would have it) says the address is in use and exits non-zero,
 * and the first goes on serving every new connection; so does a parleyd
 * started on a port that another program listens on, with SO_REUSEPORT
 * (the way parleyd's own shards share a port) or without, or whose lock
 * another parleyd starting at the same instant holds. Two shards of
 * one parleyd still share their port, and a server killed with -9 comes
 * back on the same port at once.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/e2e/harness.h"

/* Runs parleyd --listen 127.0.0.1:port on a data directory of its own and
 * waits (at most 20 s) for it to exit. Returns its exit status, or -1
 * when it was still running (it is killed then); its stderr goes to err. */
static int run_second(int port, char *err, size_t cap)
{
	char dir[] = "/tmp/parley-listen-XXXXXX", listen[64], cmd[128];
	int pfd[2], st = 0;
	size_t n = 0;
	pid_t pid;
	uint64_t deadline = now_ms() + 20000;

	assert_non_null(mkdtemp(dir));
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pfd[1], 2);
		dup2(pfd[1], 1);
		execl(PARLEYD_PATH, PARLEYD_PATH, "--listen", listen, "--data",
		      dir, "--no-pin", "--shards", "2", (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	err[0] = '\0';
	for (;;) {
		struct pollfd p = { pfd[0], POLLIN, 0 };
		pid_t w = waitpid(pid, &st, WNOHANG);

		if (poll(&p, 1, 50) > 0 && n < cap - 1) {
			ssize_t r = read(pfd[0], err + n, cap - 1 - n);

			if (r > 0) {
				n += (size_t)r;
				err[n] = '\0';
			}
		}
		if (w == pid)
			break;
		if (now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			st = -1;
			break;
		}
	}
	close(pfd[0]);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	if (st == -1)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Every one of n fresh connections reaches the first server: its hello
 * answers with a channel that only the first server has. */
static void all_reach(hsrv *s, const char *ch, int n)
{
	for (int i = 0; i < n; i++) {
		proto_doc res;
		pc_conn *c = h_connect(s, "alice", "acme", &res);
		const msgpack_object *chans;
		bool found = false;

		assert_non_null(c);
		chans = proto_get(&res.root, "channels");
		assert_non_null(chans);
		for (uint32_t j = 0; j < chans->via.array.size; j++)
			if (!strcmp(h_s(&chans->via.array.ptr[j], "id"), ch))
				found = true;
		assert_true(found);
		proto_doc_free(&res);
		pc_close(c);
	}
}

static void test_second_parleyd_refused(void **state)
{
	hsrv s;
	char err[4096], ch[80];
	pc_conn *c;

	(void)state;
	h_start(&s, "--shards 2");
	c = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(c);
	assert_int_equal(h_create(c, "first-only", "public", ch), 0);
	pc_close(c);

	int rc = run_second(s.port, err, sizeof(err));
	if (rc == 0 || rc == -1)
		fprintf(stderr, "second parleyd: exit %d, said: %s\n", rc, err);
	assert_true(rc > 0);
	assert_non_null(strstr(err, "in use"));

	/* The first is alone on its port: 40 connections, spread over its
	 * two shards by the kernel, all land there. */
	all_reach(&s, ch, 40);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

static int listener(bool reuseport, int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (reuseport)
		assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one,
					    sizeof(one)), 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

static void test_other_program_on_port(void **state)
{
	char err[4096];

	(void)state;
	for (int reuse = 0; reuse < 2; reuse++) {
		int port, fd = listener(reuse, &port);
		int rc = run_second(port, err, sizeof(err));

		if (rc <= 0)
			fprintf(stderr, "parleyd on a taken port (reuseport %d): "
				"exit %d, said: %s\n", reuse, rc, err);
		assert_true(rc > 0);
		assert_non_null(strstr(err, "in use"));
		close(fd);
	}
}

/* Two parleyds started at the same instant could both find the port free;
 * the one that comes second to the port's lock (an abstract Unix socket
 * named after the address) gives up. Here the test holds the lock. */
static void test_port_lock(void **state)
{
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	char err[4096];
	int port, fd = listener(false, &port), lock, n;

	(void)state;
	close(fd); /* a free port */
	n = snprintf(un.sun_path + 1, sizeof(un.sun_path) - 1,
		     "parleyd-listen/127.0.0.1:%d", port);
	lock = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(lock, (struct sockaddr *)&un,
			      (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
					  1 + n)), 0);
	int rc = run_second(port, err, sizeof(err));
	assert_true(rc > 0);
	assert_non_null(strstr(err, "in use"));
	close(lock);
}

/* The lock dies with the process: kill -9, and the restart on the same
 * port (h_restart) comes up. */
static void test_restart_after_kill(void **state)
{
	hsrv s;
	pc_conn *c;

	(void)state;
	h_start(&s, "--shards 2");
	h_kill9(&s);
	h_restart(&s);
	c = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(c);
	pc_close(c);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_second_parleyd_refused),
		cmocka_unit_test(test_other_program_on_port),
		cmocka_unit_test(test_port_lock),
		cmocka_unit_test(test_restart_after_kill),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
