/*
 * Storage failing, as a client sees it: parleyd's data directory on a
 * small tmpfs that fills up. Sends acknowledged before the disk filled are
 * kept; the first one that cannot be made durable, and every state change
 * after it, is refused with UNAVAILABLE and never acknowledged; reads,
 * typing and the connection keep working; /healthz says 503; SIGTERM
 * still drains and exits 0. Once there is room again, a restart has every
 * acknowledged message, the numbering goes on without a gap, and a cmid
 * that was refused is a new message, not a duplicate.
 *
 * Mounting the tmpfs needs root (CI runs as root); elsewhere the test is
 * skipped, and says so.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/e2e/harness.h"

#define MOUNT_MB 48
#define ROOM_KB 1024 /* left free once the server runs */

static char mnt[64];

static bool mount_small(void)
{
	char opt[32];

	if (geteuid() != 0)
		return false;
	snprintf(mnt, sizeof(mnt), "/tmp/parley-full-XXXXXX");
	if (!mkdtemp(mnt))
		return false;
	snprintf(opt, sizeof(opt), "size=%um", MOUNT_MB);
	if (mount("tmpfs", mnt, "tmpfs", 0, opt)) {
		rmdir(mnt);
		return false;
	}
	return true;
}

/* Fill the mount with one file until ROOM_KB are left. */
static void fill(const char *file)
{
	struct statvfs v;
	char *buf = calloc(1, 1 << 20);
	int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	unsigned long long left;

	assert_non_null(buf);
	assert_true(fd >= 0);
	assert_int_equal(statvfs(mnt, &v), 0);
	left = (unsigned long long)v.f_bavail * v.f_frsize;
	assert_true(left > ROOM_KB * 1024ull);
	left -= ROOM_KB * 1024ull;
	while (left) {
		size_t n = left < (1u << 20) ? (size_t)left : (1u << 20);
		ssize_t w = write(fd, buf, n);

		assert_true(w > 0);
		left -= (unsigned long long)w;
	}
	close(fd);
	free(buf);
}

/* GET path on the server: the HTTP status. */
static int http_status(hsrv *s, const char *path)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)s->port) };
	struct timeval tv = { .tv_sec = 5 };
	char buf[512];
	int fd = socket(AF_INET, SOCK_STREAM, 0), status = 0, n;

	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	n = snprintf(buf, sizeof(buf), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
	assert_int_equal(write(fd, buf, (size_t)n), n);
	n = (int)read(fd, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = 0;
	assert_int_equal(sscanf(buf, "HTTP/1.1 %d", &status), 1);
	close(fd);
	return status;
}

/* send: 1 with the seq, 0 refused with code (copied), fails otherwise */
static int try_send(pc_conn *c, const char *ch, const char *body,
		    const char *cmid, uint64_t *seq, char *code)
{
	proto_doc res;
	int ok;

	assert_int_equal(h_req(c, &res, "send", 3, "ch", 's', ch, "body", 's',
			       body, "cmid", 's', cmid), 1);
	ok = h_ok(&res);
	if (ok)
		*seq = h_u(&res.root, "seq");
	else
		snprintf(code, 32, "%s", h_code(&res));
	proto_doc_free(&res);
	return ok;
}

static void expect_code(pc_conn *c, const char *code, const char *op,
			unsigned npairs, const char *k1, char t1, const void *v1,
			const char *k2, char t2, uint64_t v2)
{
	proto_doc res;

	if (npairs == 1)
		assert_int_equal(h_req(c, &res, op, 1, k1, t1, v1), 1);
	else
		assert_int_equal(h_req(c, &res, op, 2, k1, t1, v1, k2, t2, v2),
				 1);
	if (h_ok(&res))
		fail_msg("%s: ok, want %s", op, code);
	if (strcmp(h_code(&res), code)) {
		char got[32];

		snprintf(got, sizeof(got), "%s", h_code(&res));
		fail_msg("%s: %s (%s), want %s", op, got,
			 h_s(&res.root, "msg"), code);
	}
	proto_doc_free(&res);
}

/* ch's entry in c's ch.list has read_seq and unread as given. */
static void check_counts(pc_conn *c, const char *ch, uint64_t read_seq,
			 uint64_t unread)
{
	proto_doc res;
	const msgpack_object_array *l = NULL;
	bool found = false;

	assert_int_equal(h_req(c, &res, "ch.list", 0), 1);
	assert_true(h_ok(&res));
	assert_int_equal(proto_get_array(&res.root, "channels", &l), 0);
	for (uint32_t i = 0; i < l->size; i++) {
		if (strcmp(h_s(&l->ptr[i], "id"), ch))
			continue;
		found = true;
		assert_int_equal(h_u(&l->ptr[i], "read_seq"), read_seq);
		assert_int_equal(h_u(&l->ptr[i], "unread"), unread);
	}
	assert_true(found);
	proto_doc_free(&res);
}

static void test_disk_full(void **state)
{
	hsrv s;
	pc_conn *a, *b;
	proto_doc res;
	char ch[65], body[16 * 1024 + 1], cmid[32], code[32] = "", filler[128],
	     refused_cmid[32] = "";
	uint64_t seq = 0, acked = 0;
	const msgpack_object_array *msgs;

	(void)state;
	if (!mount_small()) {
		printf("SKIPPED test_disk_full: mounting a tmpfs needs root\n");
		skip();
	}
	h_start_in(&s, mnt, "--shards 2 --no-search --send-rate 100000 "
			   "--send-burst 100000");
	a = h_connect(&s, "alice", "acme", NULL);
	b = h_connect(&s, "bob", "acme", NULL);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(h_create(a, "general", "public", ch), 0);
	assert_int_equal(h_req(b, &res, "ch.join", 1, "ch", 's', ch), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	assert_int_equal(http_status(&s, "/healthz"), 200);

	snprintf(filler, sizeof(filler), "%s/filler", mnt);
	fill(filler);
	memset(body, 'x', sizeof(body) - 1);
	body[sizeof(body) - 1] = 0;
	/* 16 KiB messages into the last MiB: each acked one is seq acked+1 */
	for (int i = 0; i < 2000; i++) {
		snprintf(cmid, sizeof(cmid), "m%d", i);
		if (!try_send(a, ch, body, cmid, &seq, code)) {
			snprintf(refused_cmid, sizeof(refused_cmid), "%s", cmid);
			break;
		}
		assert_int_equal(seq, acked + 1);
		acked = seq;
	}
	if (!refused_cmid[0])
		fail_msg("2000 sends of 16 KiB fit in %u KiB", ROOM_KB);
	assert_string_equal(code, "UNAVAILABLE");
	assert_true(acked >= 1);

	/* every change is refused now, a smaller one too */
	assert_int_equal(try_send(a, ch, "small", "after-1", &seq, code), 0);
	assert_string_equal(code, "UNAVAILABLE");
	expect_code(b, "UNAVAILABLE", "read", 2, "ch", 's', ch, "seq", 'u',
		    acked);
	expect_code(a, "UNAVAILABLE", "delete", 2, "ch", 's', ch, "target", 'u',
		    (uint64_t)1);
	/* reads and typing still work, on the same connections */
	assert_int_equal(h_req(b, &res, "history", 2, "ch", 's', ch, "limit",
			       'u', (uint64_t)200), 1);
	assert_true(h_ok(&res));
	msgs = NULL;
	assert_int_equal(proto_get_array(&res.root, "msgs", &msgs), 0);
	assert_int_equal(msgs->size, acked);
	proto_doc_free(&res);
	assert_int_equal(h_req(a, &res, "typing", 1, "ch", 's', ch), 1);
	assert_true(h_ok(&res));
	proto_doc_free(&res);
	assert_int_equal(http_status(&s, "/healthz"), 503);
	/* bob's refused read moved nothing: marker 0, all of them unread */
	check_counts(b, ch, 0, acked);

	/* SIGTERM still drains and exits 0 */
	pc_close(a);
	pc_close(b);
	assert_int_equal(h_stop(&s), 0);

	/* room again: everything acknowledged is there, nothing else */
	assert_int_equal(unlink(filler), 0);
	h_restart(&s);
	assert_int_equal(http_status(&s, "/healthz"), 200);
	a = h_connect(&s, "alice", "acme", NULL);
	assert_non_null(a);
	assert_int_equal(h_req(a, &res, "history", 2, "ch", 's', ch, "limit",
			       'u', (uint64_t)200), 1);
	assert_true(h_ok(&res));
	assert_int_equal(proto_get_array(&res.root, "msgs", &msgs), 0);
	assert_int_equal(msgs->size, acked);
	for (uint32_t i = 0; i < msgs->size; i++)
		assert_int_equal(h_u(&msgs->ptr[i], "seq"), i + 1);
	proto_doc_free(&res);
	b = h_connect(&s, "bob", "acme", NULL);
	assert_non_null(b);
	check_counts(b, ch, 0, acked);
	pc_close(b);
	/* the refused cmid is a new message, with the next seq */
	assert_int_equal(try_send(a, ch, "again", refused_cmid, &seq, code), 1);
	assert_int_equal(seq, acked + 1);
	assert_int_equal(try_send(a, ch, "again", refused_cmid, &seq, code), 1);
	assert_int_equal(seq, acked + 1);
	pc_close(a);
	assert_int_equal(h_stop(&s), 0);
	h_cleanup(&s);
}

static int unmount(void **state)
{
	(void)state;
	if (mnt[0]) {
		umount(mnt);
		rmdir(mnt);
	}
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_disk_full, unmount),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
