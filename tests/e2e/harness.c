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

/* Starts parleyd; 0 when it is up. With may_fail, a parleyd that does
 * not come up is reaped and its end returned (-1, or 128 + the signal
 * that killed it) instead of aborting the test run. */
static int spawn_try(hsrv *s, bool may_fail)
{
	int pfd[2];
	char *argv[64];
	int argc = 0;
	char listen[] = "127.0.0.1:0";
	char extra[1024];
	char line[512];
	size_t n = 0;
	uint64_t deadline;

	if (pipe2(pfd, O_CLOEXEC))
		die("pipe");
	argv[argc++] = PARLEYD_PATH;
	argv[argc++] = "--listen";
	argv[argc++] = s->port ? line : listen;
	if (s->port)
		snprintf(line, sizeof(line), "127.0.0.1:%d", s->port);
	argv[argc++] = "--data";
	argv[argc++] = s->dir;
	argv[argc++] = "--jwt-secret-file";
	argv[argc++] = s->secret;
	argv[argc++] = "--no-pin";
	snprintf(extra, sizeof(extra), "%s", s->extra);
	for (char *t = strtok(extra, " "); t && argc < 62; t = strtok(NULL, " "))
		argv[argc++] = t;
	argv[argc] = NULL;

	s->pid = fork();
	if (s->pid < 0)
		die("fork");
	if (s->pid == 0) {
		dup2(pfd[1], 1);
		execv(argv[0], argv);
		_exit(127);
	}
	close(pfd[1]);
	track(s->pid, true);
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
		kill(s->pid, SIGKILL);
		waitpid(s->pid, &st, 0);
		track(s->pid, false);
		s->pid = 0;
		if (WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL)
			return 128 + WTERMSIG(st);
		return WIFEXITED(st) && WEXITSTATUS(st) ? WEXITSTATUS(st) : -1;
	}
	s->port = atoi(colon + strlen("127.0.0.1:"));
	return 0;
}

static void spawn(hsrv *s)
{
	spawn_try(s, false);
}

int h_restart_try(hsrv *s)
{
	return spawn_try(s, true);
}

void h_start(hsrv *s, const char *extra)
{
	h_start_in(s, "/tmp", extra);
}

void h_start_in(hsrv *s, const char *parent, const char *extra)
{
	int fd;

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
	if (s->pid > 0) {
		kill(s->pid, SIGKILL);
		waitpid(s->pid, NULL, 0);
		track(s->pid, false);
		s->pid = 0;
	}
}

void h_restart(hsrv *s)
{
	spawn(s); /* same port, same data */
}

void h_cleanup(hsrv *s)
{
	char cmd[1024];

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
	return pc_connect("127.0.0.1", s->port, NULL, "parley.v1", H_TIMEOUT);
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
