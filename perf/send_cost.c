/*
 * send_cost: what one loopback TCP write costs the writer, one send() per
 * socket against one io_uring_enter per 4,096 sends (issue 17: the case for
 * runtime/transport.c's ring). A child process holds N client sockets and
 * reads them with epoll; the parent holds the N accepted ones and writes
 * BYTES to each, ROUNDS times, each round once the child has read the last.
 * Prints the writer's CPU per write and the reader's CPU in all.
 *
 * usage: send_cost N ROUNDS BYTES send|uring   (N under the fd limit)
 */
#include <liburing.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double cpu_s(int who)
{
	struct rusage ru;
	getrusage(who, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static double sys_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	int n = atoi(argv[1]), rounds = atoi(argv[2]), bytes = atoi(argv[3]);
	int uring = !strcmp(argv[4], "uring");
	int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	int *srv = calloc(n, sizeof(int)), ctl[2];
	char *buf = malloc(bytes);

	memset(buf, 'x', bytes);
	a.sin_addr.s_addr = htonl(0x7f000001);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	bind(ls, (void *)&a, sizeof(a));
	listen(ls, 4096);
	getsockname(ls, (void *)&a, &al);
	socketpair(AF_UNIX, SOCK_STREAM, 0, ctl);
	if (fork() == 0) {
		int ep = epoll_create1(0);
		long want = (long)n * bytes, got = 0;
		char rb[65536];
		struct epoll_event evs[256];
		close(ls);
		for (int i = 0; i < n; i++) {
			int c = socket(AF_INET, SOCK_STREAM, 0);
			struct epoll_event e = { .events = EPOLLIN, .data.fd = c };
			if (connect(c, (void *)&a, sizeof(a))) { perror("connect"); exit(1); }
			epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
		}
		for (int r = 0; r < rounds; r++) {
			got = 0;
			while (got < want) {
				int k = epoll_wait(ep, evs, 256, -1);
				for (int i = 0; i < k; i++) {
					ssize_t m = read(evs[i].data.fd, rb, sizeof(rb));
					if (m > 0) got += m;
				}
			}
			write(ctl[1], "r", 1);
		}
		printf("child cpu %.3f s\n", cpu_s(RUSAGE_SELF));
		exit(0);
	}
	for (int i = 0; i < n; i++) {
		srv[i] = accept(ls, NULL, NULL);
		setsockopt(srv[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	struct io_uring ring;
	if (uring && io_uring_queue_init(4096, &ring, 0)) { perror("uring"); return 1; }
	double c0 = cpu_s(RUSAGE_SELF), s0 = sys_s(), t0 = now_s(), tw = 0;
	for (int r = 0; r < rounds; r++) {
		double tr = now_s();
		if (!uring) {
			for (int i = 0; i < n; i++)
				if (send(srv[i], buf, bytes, MSG_DONTWAIT) != bytes) { perror("send"); return 1; }
		} else {
			int i = 0;
			while (i < n) {
				int k = 0;
				for (; i < n && k < 4096; i++, k++) {
					struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
					io_uring_prep_send(sqe, srv[i], buf, bytes, MSG_DONTWAIT);
				}
				io_uring_submit_and_wait(&ring, k);
				struct io_uring_cqe *cqe;
				unsigned head, seen = 0;
				io_uring_for_each_cqe(&ring, head, cqe) {
					if (cqe->res != bytes) { fprintf(stderr, "res %d\n", cqe->res); return 1; }
					seen++;
				}
				io_uring_cq_advance(&ring, seen);
			}
		}
		tw += now_s() - tr;
		char x;
		read(ctl[0], &x, 1);
	}
	double c1 = cpu_s(RUSAGE_SELF), s1 = sys_s();
	wait(NULL);
	printf("%s n=%d rounds=%d bytes=%d: sender %.3f us cpu/send (sys %.3f), write phase %.2f ms/round, total %.2f s\n",
	       uring ? "uring" : "send", n, rounds, bytes,
	       (c1 - c0) / ((double)n * rounds) * 1e6,
	       (s1 - s0) / ((double)n * rounds) * 1e6, tw / rounds * 1e3,
	       now_s() - t0);
	return 0;
}
