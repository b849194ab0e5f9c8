/*
 * A client that sends faster than the server can parse does not stall the
 * other clients of its shard: the transport reads a connection until the
 * kernel has nothing more, but at most a share per loop turn (256 KiB),
 * and then serves the others before it reads on. Without the share, the
 * shard would stay in the flooder's read loop for as long as the flood
 * lasts and nobody else would get an answer.
 *
 * The flood is pings (6 bytes each, answered by the transport itself with
 * one pong per turn), sent from a thread as fast as the kernel takes them.
 * Once the server has visibly been reading it (far more has been sent than
 * the kernel's buffers hold), a second client connects, says hello and
 * makes a request on the same shard (--shards 1), all while the flood goes
 * on; it must be answered, and before the server has taken 512 MiB more of
 * the flood (with the share it needed 0-2 MiB; without it, four tries
 * out of four failed: no answer within 30 s twice, answers after 1,018 and
 * 3,395 MiB). The deadlines are generous (30 s); nothing is timed.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/e2e/harness.h"

#define PING_LEN 6                        /* FIN|ping, masked, empty */
#define FLOOD_BUF (PING_LEN * 174762)     /* about 1 MiB of pings */
#define SEEN_READING (64ull << 20)        /* sent: past any socket buffer */
#define DEADLINE_MS 30000
#define SERVED_WITHIN (512ull << 20)      /* of flood, see below */

struct flood {
	int fd;
	int stop;            /* atomic: the test says stop */
	int err;             /* atomic: errno of a failed send, or -1: closed */
	uint64_t sent;       /* atomic: bytes the kernel took */
	uint8_t *buf;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Sends pings back to back, blocking (with a short timeout, to see the
 * stop flag), as fast as the kernel takes them; a partial send goes on
 * where it stopped, so frames stay whole. The pongs that come back are
 * left unread: a pong waits in the server for its turn end, at most one
 * per turn, a few bytes each. */
static void *flood_main(void *arg)
{
	struct flood *f = arg;
	struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };
	size_t off = 0;

	setsockopt(f->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
		ssize_t n = send(f->fd, f->buf + off, FLOOD_BUF - off,
				 MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == EINTR)
				continue;
			__atomic_store_n(&f->err, errno, __ATOMIC_RELEASE);
			break;
		}
		off = (off + (size_t)n) % FLOOD_BUF;
		__atomic_add_fetch(&f->sent, (uint64_t)n, __ATOMIC_RELEASE);
	}
	return NULL;
}

static void test_flooder_does_not_stall_others(void **state)
{
	hsrv s;
	struct flood f = { 0 };
	pthread_t th;
	pc_conn *a, *b = NULL;
	proto_doc d, res;
	uint64_t end, sent_before, sent_after, rid = 0;
	char *tok;
	int answered = 0, err;

	(void)state;
	h_start(&s, "--shards 1");
	a = h_connect_ok(&s, "flooder", "w1");
	f.fd = pc_fd(a);
	/* the thread's sends block (the client's own socket is not used
	 * until the flood stops) */
	fcntl(f.fd, F_SETFL, fcntl(f.fd, F_GETFL) & ~O_NONBLOCK);
	f.buf = malloc(FLOOD_BUF);
	assert_non_null(f.buf);
	for (size_t i = 0; i < FLOOD_BUF; i += PING_LEN) {
		f.buf[i] = 0x89;     /* FIN, ping */
		f.buf[i + 1] = 0x80; /* masked, no payload */
		memset(f.buf + i + 2, 0, 4);
	}
	assert_int_equal(pthread_create(&th, NULL, flood_main, &f), 0);

	/* The server is reading the flood: more has gone out than the
	 * socket buffers on both sides can hold. */
	end = mono_ms() + 120000;
	while (__atomic_load_n(&f.sent, __ATOMIC_ACQUIRE) < SEEN_READING &&
	       !__atomic_load_n(&f.err, __ATOMIC_ACQUIRE) && mono_ms() < end)
		usleep(10000);

	/* Another client, on the same shard, in the middle of the flood. */
	sent_before = __atomic_load_n(&f.sent, __ATOMIC_ACQUIRE);
	tok = h_token(&s, "other", "w1");
	b = pc_connect("127.0.0.1", s.port, NULL, "parley.v1", DEADLINE_MS);
	if (b && pc_hello(b, tok, NULL, NULL, 0, &d, DEADLINE_MS) == 1) {
		proto_doc_free(&d);
		rid = h_post(b, "ch.list", 0);
		if (rid && pc_await(b, rid, &res, DEADLINE_MS) == 1) {
			answered = h_ok(&res) ? 1 : -1;
			proto_doc_free(&res);
		}
	}
	free(tok);
	sent_after = __atomic_load_n(&f.sent, __ATOMIC_ACQUIRE);

	__atomic_store_n(&f.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	err = __atomic_load_n(&f.err, __ATOMIC_ACQUIRE);
	free(f.buf);

	if (sent_before < SEEN_READING)
		fail_msg("the flood did not get going: %llu bytes sent, "
			 "error %d", (unsigned long long)sent_before, err);
	if (!b)
		fail_msg("a second client could not connect during the flood");
	if (answered != 1)
		fail_msg("a second client got no answer during the flood "
			 "(hello or ch.list: %d)", answered);
	/* It was served while the flood went on, and soon, counted in flood
	 * rather than in time: with the share, the shard reads at most 256
	 * KiB of it per turn, and the second client needs a few turns (a
	 * few MiB); without it, the shard went on reading the flood until a
	 * read happened to come back short, and the second client was
	 * answered after gigabytes or not at all. */
	assert_int_equal(err, 0);
	if (sent_after - sent_before > SERVED_WITHIN)
		fail_msg("the second client was answered only after %llu MiB "
			 "more of the flood",
			 (unsigned long long)((sent_after - sent_before) >> 20));
	pc_close(b);
	pc_close(a);
	h_finish(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_flooder_does_not_stall_others),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
