/*
 * control: the server's DATA/control.sock (see control.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "actors/control.h"
#include "runtime/log.h"

#define REQ_MAX 4200

static struct {
	int lfd;      /* listening socket */
	int stop[2];  /* pipe: a byte on stop[1] ends the thread */
	int dirfd;    /* DATA, for paths too long for sun_path */
	pthread_t thread;
	bool running;
	store *st;
	char path[4096];
} C = { .lfd = -1, .stop = { -1, -1 }, .dirfd = -1 };

/* DATA/control.sock as a sockaddr. sun_path holds 107 bytes: a longer
 * DATA goes through /proc/self/fd/N, N an O_PATH descriptor of DATA
 * (*dirfd, the caller closes it). */
static int sock_addr(const char *data_dir, struct sockaddr_un *a, int *dirfd)
{
	int n;

	*dirfd = -1;
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	n = snprintf(a->sun_path, sizeof(a->sun_path), "%s/control.sock",
		     data_dir);
	if (n > 0 && (size_t)n < sizeof(a->sun_path))
		return 0;
	*dirfd = open(data_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (*dirfd < 0)
		return -1;
	snprintf(a->sun_path, sizeof(a->sun_path),
		 "/proc/self/fd/%d/control.sock", *dirfd);
	return 0;
}

int control_connect(const char *data_dir)
{
	struct sockaddr_un a;
	int fd, dfd, e;

	if (sock_addr(data_dir, &a, &dfd))
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		e = errno;
		close(fd);
		fd = -1;
		errno = e;
	}
	if (dfd >= 0) {
		e = errno;
		close(dfd);
		errno = e;
	}
	return fd;
}

static void answer(int fd, const char *s)
{
	size_t n = strlen(s), off = 0;

	while (off < n) {
		ssize_t w = send(fd, s + off, n - off, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		off += (size_t)w;
	}
}

/* One connection: its request line, then the answer. */
static void serve(int fd)
{
	char req[REQ_MAX + 1], msg[REQ_MAX + 256], *err = NULL, *nl;
	struct ucred cr;
	socklen_t crl = sizeof(cr);
	size_t len = 0;
	struct timeval tv = { .tv_sec = 10 };

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crl) ||
	    (cr.uid != 0 && cr.uid != getuid())) {
		plog(PL_WARN, "control", "refused a request from uid %u",
		     (unsigned)cr.uid);
		answer(fd, "error not the server's user\n");
		return;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (len < REQ_MAX) {
		ssize_t r = recv(fd, req + len, REQ_MAX - len, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
		if (memchr(req, '\n', len))
			break;
	}
	req[len] = 0;
	nl = strchr(req, '\n');
	if (!nl) {
		answer(fd, "error a request is one line\n");
		return;
	}
	*nl = 0;
	if (strncmp(req, "checkpoint /", 12)) {
		answer(fd, "error unknown request (checkpoint /ABS/DIR)\n");
		return;
	}
	plog(PL_INFO, "control", "checkpoint into %s", req + 11);
	if (store_checkpoint(C.st, req + 11, &err)) {
		plog(PL_ERROR, "control", "%s", err ? err : "checkpoint failed");
		snprintf(msg, sizeof(msg), "error %s\n",
			 err ? err : "checkpoint failed");
		free(err);
		answer(fd, msg);
		return;
	}
	answer(fd, "ok\n");
}

static void *control_main(void *arg)
{
	struct pollfd p[2] = { { .fd = C.lfd, .events = POLLIN },
			       { .fd = C.stop[0], .events = POLLIN } };

	(void)arg;
	for (;;) {
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		fd = accept4(C.lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		serve(fd);
		close(fd);
	}
	return NULL;
}

int control_start(const char *data_dir, store *st)
{
	struct sockaddr_un a;
	int e;

	C.st = st;
	snprintf(C.path, sizeof(C.path), "%s/control.sock", data_dir);
	if (sock_addr(data_dir, &a, &C.dirfd))
		goto fail;
	/* a socket left by a crash: ours now (DATA/db's lock is held) */
	unlink(a.sun_path);
	C.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (C.lfd < 0 || bind(C.lfd, (struct sockaddr *)&a, sizeof(a)) ||
	    chmod(a.sun_path, 0600) || listen(C.lfd, 4) ||
	    pipe2(C.stop, O_CLOEXEC))
		goto fail;
	e = pthread_create(&C.thread, NULL, control_main, NULL);
	if (e) {
		errno = e;
		goto fail;
	}
	C.running = true;
	return 0;
fail:
	e = errno;
	plog(PL_ERROR, "control", "%s: %s (online backups will not work)",
	     C.path, strerror(e));
	control_stop();
	return -1;
}

void control_stop(void)
{
	if (C.running) {
		char b = 1;

		if (write(C.stop[1], &b, 1) < 0)
			plog(PL_ERROR, "control", "stop: %s", strerror(errno));
		pthread_join(C.thread, NULL);
		C.running = false;
	}
	if (C.lfd >= 0) {
		struct sockaddr_un a;

		close(C.lfd);
		C.lfd = -1;
		/* by the path: /proc/self/fd/N of the O_PATH fd still works */
		if (C.dirfd >= 0) {
			snprintf(a.sun_path, sizeof(a.sun_path),
				 "/proc/self/fd/%d/control.sock", C.dirfd);
			unlink(a.sun_path);
		} else {
			unlink(C.path);
		}
	}
	for (int i = 0; i < 2; i++) {
		if (C.stop[i] >= 0)
			close(C.stop[i]);
		C.stop[i] = -1;
	}
	if (C.dirfd >= 0)
		close(C.dirfd);
	C.dirfd = -1;
}
