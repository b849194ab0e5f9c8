/*
 * parleyd: the server binary. Parses flags and hands over to server_run();
 * `parleyd token` mints a token with the server's secret for a quick start.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ini.h>

#include "actors/actors.h"
#include "actors/backup.h"
#include "actors/files.h"
#include "actors/web.h"
#include "runtime/log.h"

static void usage(FILE *f)
{
	fprintf(f,
"usage: parleyd [options]\n"
"       parleyd token --user USER --workspace WS [--ttl SECONDS] [--name NAME] [--admin]\n"
"                     [--data DIR] [--jwt-secret-file FILE]\n"
"                     [--url [--listen HOST:PORT] [--https]]\n"
"       parleyd backup --data DIR DEST\n"
"       parleyd restore BACKUP --data DIR\n"
"       parleyd verify --data DIR [--files-sha]\n"
"\n"
"parley: a real-time team-messaging server (msgpack over WebSocket on /ws,\n"
"the browser client on http://HOST:PORT/; wss:// and https:// with\n"
"--tls-cert).\n"
"\n"
"  --listen HOST:PORT      address to listen on (default 127.0.0.1:8080)\n"
"  --data DIR              data directory (default ./parley-data)\n"
"  --jwt-secret-file FILE  HS256 secret (default DIR/jwt.secret, created\n"
"                          with a random secret on first start)\n"
"  --shards N              shards = threads (default: one per core)\n"
"  --ranges N              history column families for a new database (16)\n"
"  --max-frame BYTES       largest incoming message (65536; beyond: 1009)\n"
"  --max-body BYTES        largest message body (16384)\n"
"  --max-outbuf BYTES      unsent bytes per connection before 4008 (8 MiB)\n"
"  --max-devices N         connections per user (16; beyond: 4029)\n"
"  --max-members N         channel size (100000)\n"
"  --send-rate N           sends per second per user (50)\n"
"  --send-burst N          send burst per user (100)\n"
"  --hello-timeout-ms MS   time to send hello (10000; then 4001)\n"
"  --resume-max N          most events replayed on resume (500; then gap)\n"
"  --drain-ms MS           on SIGTERM, time clients get before close (2000)\n"
"  --channel-idle-ms MS    unload a channel nobody listens to after (60000)\n"
"  --hb-ms MS              heartbeat interval told to clients (5000)\n"
"  --away-ms MS            a device silent this long is away (10000)\n"
"  --presence-grace-ms MS  offline is told this late, so a reconnect\n"
"                          within it does not flap (1800)\n"
"  --presence-coalesce-ms MS  other presence changes are told within (100)\n"
"  --no-search             do not keep the full-text index\n"
"  --push-url URL          POST notifications for users who are not there\n"
"                          to this gateway (http or https; default: none)\n"
"  --push-secret-file F    sign each POST: X-Parley-Signature, HMAC-SHA256\n"
"                          with F's bytes (trailing whitespace removed)\n"
"  --push-delay-ms MS      wait this long after a message (10000)\n"
"  --push-content full|id-only  id-only leaves the text out (full)\n"
"  --push-timeout-ms MS    a POST not answered within it is retried (10000)\n"
"  --push-backoff-ms MS    first retry after this, doubling to 10 min (1000)\n"
"  --push-give-up-ms MS    retried this long, then dropped (86400000)\n"
"  --push-inflight N       POSTs in flight at once (16)\n"
"  --max-file-mb N         largest upload, MiB (100)\n"
"  --file-quota-mb N       bytes one user may upload in all, MiB (1024)\n"
"  --no-pin                do not pin shard threads to cores\n"
"  --no-io-uring           write with send() even where io_uring works\n"
"  --cluster URLS          join a cluster: NATS servers, comma-separated\n"
"                          (nats://h1:4222,...; docs/cluster.md); every\n"
"                          host needs the same --shards, --ranges, JWT\n"
"                          secret and DM key\n"
"  --host-id ID            this host's name in the cluster (default: the\n"
"                          host name; [A-Za-z0-9_-])\n"
"  --lease-ms MS           a dead host's leases expire after (10000)\n"
"  --cluster-new-log       the cluster's log is new and empty (after NATS\n"
"                          lost it): this store starts it again\n"
"                          (docs/cluster.md)\n"
"  --dm-key-file FILE      the key DM ids are derived with (default\n"
"                          DIR/dm.key, made on first start)\n"
"  --log-level LEVEL       error, warn, info (default) or debug; lines go to\n"
"                          stderr (with journald's priorities under systemd)\n"
"  --tls-cert FILE         PEM certificate (chain): the port then speaks\n"
"                          only TLS (wss://, https://); needs --tls-key\n"
"  --tls-key FILE          PEM private key of --tls-cert; SIGHUP reads both\n"
"                          again (new connections get the new ones)\n"
"  --web-dir DIR           serve the browser client from DIR (read on each\n"
"                          request: edit web/ and reload, no rebuild)\n"
"                          instead of the copy compiled in\n"
"  --config FILE           read settings from FILE first: one `key = value`\n"
"                          per line, a key for every flag above (its name\n"
"                          without --; true/false for the flags that take\n"
"                          no value), # or ; comments; a flag given too\n"
"                          wins; an unknown key is an error\n"
"  --version               print the version (git describe of the build)\n"
"  --help                  this text\n"
"\n"
"token: prints a token signed with the server's secret (created, as the\n"
"server does, when DIR/jwt.secret does not exist yet). With --url it\n"
"prints a link to the browser client that signs in with it,\n"
"http://HOST:PORT/#token=TOKEN (HOST:PORT from --listen, the server's;\n"
"default 127.0.0.1:8080; 0.0.0.0 and :: become loopback); --https for\n"
"an https:// link: when the server runs with --tls-cert, or a TLS proxy\n"
"in front answers on HOST:PORT.\n"
"--name sets the display name claim; --admin the claim role=admin (a\n"
"workspace admin: may moderate every channel of the workspace).\n"
"\n"
"backup: a consistent copy of DIR into DEST while the server runs (or\n"
"not); restore: a backup into a new DIR; verify: checks a stopped DIR or\n"
"a backup (see `parleyd backup --help` and the others' --help).\n"
"\n"
"Stop with SIGTERM: clients get a goaway frame, in-flight commits finish,\n"
"exit status 0. SIGHUP reloads the TLS certificate and key. Under systemd\n"
"(Type=notify; the package's parleyd.service) it reports READY=1,\n"
"RELOADING=1 and STOPPING=1 and, with WatchdogSec=, pings the watchdog\n"
"while every shard turns its loop.\n");
}

static void defaults(void)
{
	struct limits *l = &srv.lim;

	l->max_frame = PROTO_MAX_FRAME;
	l->max_body = PROTO_MAX_BODY;
	l->max_name = PROTO_MAX_NAME;
	l->max_members = 100000;
	l->max_dm = 250;
	l->max_devices = 16;
	l->rate_per_s = 50;
	l->rate_burst = 100;
	l->hello_ms = 10000;
	l->resume_max = 500;
	l->max_mentions = 50;
	l->hb_ms = 5000;
	l->bad_frames = 20;
	l->bad_window_ms = 10000;
	l->max_outbuf = 8u << 20;
	l->chan_idle_ms = 60000;
	l->away_ms = 10000;
	l->grace_ms = 1800;
	l->coalesce_ms = 100;
	l->max_watch = 500;
}

static unsigned long num(const char *flag, const char *v, unsigned long min,
			 unsigned long max)
{
	char *end;
	unsigned long n;

	errno = 0;
	n = strtoul(v, &end, 10);
	if (errno || *end || n < min || n > max) {
		fprintf(stderr, "parleyd: %s: expected a number %lu..%lu\n",
			flag, min, max);
		exit(2);
	}
	return n;
}

/* "http://HOST:PORT" for a browser, from the server's --listen value:
 * an address bound to all interfaces is reached on loopback. */
static bool url_base(const char *listen, bool https, char *out, size_t cap)
{
	const char *colon = strrchr(listen, ':');
	char host[256], *e;
	unsigned long port;
	int n;

	if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof(host))
		return false;
	memcpy(host, listen, (size_t)(colon - listen));
	host[colon - listen] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &e, 10);
	if (errno || e == colon + 1 || *e || port == 0 || port > 65535)
		return false;
	if (!strcmp(host, "0.0.0.0") || !strcmp(host, "*"))
		snprintf(host, sizeof(host), "127.0.0.1");
	else if (!strcmp(host, "::") || !strcmp(host, "[::]"))
		snprintf(host, sizeof(host), "[::1]");
	n = snprintf(out, cap, strchr(host, ':') && host[0] != '[' ?
			       "%s://[%s]:%lu" : "%s://%s:%lu",
		     https ? "https" : "http", host, port);
	return n > 0 && (size_t)n < cap;
}

static int cmd_token(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "user", required_argument, 0, 'u' },
		{ "workspace", required_argument, 0, 'w' },
		{ "ttl", required_argument, 0, 't' },
		{ "name", required_argument, 0, 'n' },
		{ "data", required_argument, 0, 'd' },
		{ "jwt-secret-file", required_argument, 0, 's' },
		{ "url", no_argument, 0, 'U' },
		{ "listen", required_argument, 0, 'l' },
		{ "https", no_argument, 0, 'H' },
		{ "admin", no_argument, 0, 'A' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 }
	};
	const char *user = NULL, *ws = NULL, *name = NULL, *data = "./parley-data",
		   *secret = NULL, *listen = "127.0.0.1:8080";
	bool url = false, https = false, admin = false;
	unsigned long ttl = 86400;
	char path[4096], base[300];
	char *tok;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'u': user = optarg; break;
		case 'w': ws = optarg; break;
		case 't': ttl = num("--ttl", optarg, 1, 10ul * 365 * 86400); break;
		case 'n': name = optarg; break;
		case 'd': data = optarg; break;
		case 's': secret = optarg; break;
		case 'U': url = true; break;
		case 'l': listen = optarg; break;
		case 'H': https = true; break;
		case 'A': admin = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "parleyd token: unexpected argument %s\n",
			argv[optind]);
		return 2;
	}
	if (url && !url_base(listen, https, base, sizeof(base))) {
		fprintf(stderr, "parleyd token: --listen HOST:PORT\n");
		return 2;
	}
	if (!user || !ws || !proto_id_valid(user, strlen(user)) ||
	    !proto_id_valid(ws, strlen(ws))) {
		fprintf(stderr, "parleyd token: --user and --workspace are ids "
				"of 1-64 [A-Za-z0-9._-]\n");
		return 2;
	}
	if (!secret) {
		mkdir(data, 0700);
		snprintf(path, sizeof(path), "%s/jwt.secret", data);
	} else {
		snprintf(path, sizeof(path), "%s", secret);
	}
	if (auth_load_secret(path, srv.key, sizeof(srv.key), &srv.key_len,
			     secret == NULL)) {
		fprintf(stderr, "parleyd token: cannot read %s: %s\n", path,
			strerror(errno));
		return 1;
	}
	tok = auth_mint(srv.key, srv.key_len, user, ws,
			(int64_t)time(NULL) + (int64_t)ttl, name,
			admin ? "admin" : NULL);
	if (!tok)
		return 1;
	if (url)
		printf("%s/#token=%s\n", base, tok); /* base64url: no escaping */
	else
		printf("%s\n", tok);
	free(tok);
	return 0;
}

static const struct option server_flags[] = {
	{ "listen", required_argument, 0, 'l' },
	{ "data", required_argument, 0, 'd' },
	{ "jwt-secret-file", required_argument, 0, 's' },
	{ "shards", required_argument, 0, 'S' },
	{ "ranges", required_argument, 0, 'R' },
	{ "max-frame", required_argument, 0, 1 },
	{ "max-body", required_argument, 0, 2 },
	{ "max-outbuf", required_argument, 0, 3 },
	{ "max-devices", required_argument, 0, 4 },
	{ "max-members", required_argument, 0, 5 },
	{ "send-rate", required_argument, 0, 6 },
	{ "send-burst", required_argument, 0, 7 },
	{ "hello-timeout-ms", required_argument, 0, 8 },
	{ "resume-max", required_argument, 0, 9 },
	{ "drain-ms", required_argument, 0, 10 },
	{ "no-pin", no_argument, 0, 11 },
	{ "channel-idle-ms", required_argument, 0, 12 },
	{ "hb-ms", required_argument, 0, 13 },
	{ "away-ms", required_argument, 0, 14 },
	{ "presence-grace-ms", required_argument, 0, 15 },
	{ "presence-coalesce-ms", required_argument, 0, 16 },
	{ "no-search", no_argument, 0, 17 },
	{ "web-dir", required_argument, 0, 18 },
	{ "push-url", required_argument, 0, 19 },
	{ "push-secret-file", required_argument, 0, 20 },
	{ "push-delay-ms", required_argument, 0, 21 },
	{ "push-content", required_argument, 0, 22 },
	{ "push-timeout-ms", required_argument, 0, 23 },
	{ "push-backoff-ms", required_argument, 0, 24 },
	{ "push-give-up-ms", required_argument, 0, 25 },
	{ "push-inflight", required_argument, 0, 26 },
	{ "max-file-mb", required_argument, 0, 27 },
	{ "file-quota-mb", required_argument, 0, 28 },
	{ "config", required_argument, 0, 29 },
	{ "version", no_argument, 0, 30 },
	{ "log-level", required_argument, 0, 31 },
	{ "tls-cert", required_argument, 0, 32 },
	{ "tls-key", required_argument, 0, 33 },
	{ "no-io-uring", no_argument, 0, 34 },
	{ "cluster", required_argument, 0, 35 },
	{ "host-id", required_argument, 0, 36 },
	{ "lease-ms", required_argument, 0, 37 },
	{ "dm-key-file", required_argument, 0, 38 },
	{ "cluster-new-log", no_argument, 0, 39 },
	{ "help", no_argument, 0, 'h' },
	{ 0, 0, 0, 0 }
};

/* The flags in argv into o; -1 to go on, else the exit status. */
static int parse_flags(int argc, char **argv, struct server_opts *o,
		       uint64_t *file_mb, uint64_t *quota_mb)
{
	static char host[256];
	int c;

	optind = 0; /* GNU: scan from the start again (the config's turn) */
	while ((c = getopt_long(argc, argv, "h", server_flags, NULL)) != -1) {
		switch (c) {
		case 'l': {
			const char *colon = strrchr(optarg, ':');

			if (!colon || colon == optarg ||
			    (size_t)(colon - optarg) >= sizeof(host)) {
				fprintf(stderr, "parleyd: --listen HOST:PORT\n");
				return 2;
			}
			memcpy(host, optarg, (size_t)(colon - optarg));
			host[colon - optarg] = 0;
			o->host = host;
			o->port = (int)num("--listen port", colon + 1, 0, 65535);
			break;
		}
		case 'd': o->data_dir = optarg; break;
		case 's': o->secret_file = optarg; break;
		case 'S': o->shards = (unsigned)num("--shards", optarg, 1, RT_MAX_SHARDS); break;
		case 'R': o->ranges = (unsigned)num("--ranges", optarg, 1, 100); break;
		case 1: srv.lim.max_frame = (uint32_t)num("--max-frame", optarg, 1024, 16u << 20); break;
		case 2: srv.lim.max_body = (uint32_t)num("--max-body", optarg, 1, 1u << 20); break;
		case 3: srv.lim.max_outbuf = num("--max-outbuf", optarg, 4096, 1ul << 32); break;
		case 4: srv.lim.max_devices = (uint32_t)num("--max-devices", optarg, 1, 1024); break;
		case 5: srv.lim.max_members = (uint32_t)num("--max-members", optarg, 2, 10000000); break;
		case 6: srv.lim.rate_per_s = (uint32_t)num("--send-rate", optarg, 1, 10000000); break;
		case 7: srv.lim.rate_burst = (uint32_t)num("--send-burst", optarg, 1, 10000000); break;
		case 8: srv.lim.hello_ms = (uint32_t)num("--hello-timeout-ms", optarg, 100, 3600000); break;
		case 9: srv.lim.resume_max = (uint32_t)num("--resume-max", optarg, 1, 1000000); break;
		case 10: o->drain_ms = (unsigned)num("--drain-ms", optarg, 0, 600000); break;
		case 11: o->pin = false; break;
		case 12: srv.lim.chan_idle_ms = (uint32_t)num("--channel-idle-ms", optarg, 100, 86400000); break;
		case 13: srv.lim.hb_ms = (uint32_t)num("--hb-ms", optarg, 10, 3600000); break;
		case 14: srv.lim.away_ms = (uint32_t)num("--away-ms", optarg, 10, 86400000); break;
		case 15: srv.lim.grace_ms = (uint32_t)num("--presence-grace-ms", optarg, 0, 600000); break;
		case 16: srv.lim.coalesce_ms = (uint32_t)num("--presence-coalesce-ms", optarg, 0, 60000); break;
		case 17: o->no_search = true; break;
		case 18: {
			struct stat st;

			if (stat(optarg, &st) || !S_ISDIR(st.st_mode)) {
				fprintf(stderr, "parleyd: --web-dir %s: not a "
					"directory\n", optarg);
				return 2;
			}
			web_set_dir(optarg);
			break;
		}
		case 19:
			if (strncmp(optarg, "http://", 7) &&
			    strncmp(optarg, "https://", 8)) {
				fprintf(stderr, "parleyd: --push-url must be an "
					"http:// or https:// URL\n");
				return 2;
			}
			o->push.url = optarg;
			break;
		case 20: o->push.secret_file = optarg; break;
		case 21: o->push.delay_ms = num("--push-delay-ms", optarg, 0, 86400000); break;
		case 22:
			if (strcmp(optarg, "full") && strcmp(optarg, "id-only")) {
				fprintf(stderr, "parleyd: --push-content is full "
					"or id-only\n");
				return 2;
			}
			o->push.id_only = !strcmp(optarg, "id-only");
			break;
		case 23: o->push.timeout_ms = num("--push-timeout-ms", optarg, 100, 600000); break;
		case 24: o->push.backoff_ms = num("--push-backoff-ms", optarg, 10, 600000); break;
		case 25: o->push.give_up_ms = num("--push-give-up-ms", optarg, 0, 30ull * 86400000); break;
		case 26: o->push.inflight = (unsigned)num("--push-inflight", optarg, 1, 256); break;
		case 27: *file_mb = num("--max-file-mb", optarg, 0, 1ull << 20); break;
		case 28: *quota_mb = num("--file-quota-mb", optarg, 0, 1ull << 30); break;
		case 29: break; /* read before the flags (load_config) */
		case 30: printf("parleyd %s\n", PARLEY_VERSION); return 0;
		case 31: {
			int l = log_level_parse(optarg);

			if (l < 0) {
				fprintf(stderr, "parleyd: --log-level is error, "
					"warn, info or debug\n");
				return 2;
			}
			log_set_level(l);
			break;
		}
		case 32: o->tls_cert = optarg; break;
		case 33: o->tls_key = optarg; break;
		case 34: o->io_uring = false; break;
		case 35: o->cluster.urls = optarg; break;
		case 36: o->cluster.host_id = optarg; break;
		case 37: o->cluster.lease_ms = (int64_t)num("--lease-ms", optarg, 1000, 3600000); break;
		case 38: o->dm_key_file = optarg; break;
		case 39: o->cluster.new_log = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "parleyd: unexpected argument %s\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	return -1;
}

/* ---- --config FILE: key = value, a key for every flag ------------------- */

struct cfg {
	const char *file;
	char **argv;  /* "parleyd", then --key [value] pairs, malloc'd */
	int argc, cap;
	int err_line; /* a line was refused (its number: ini's answer) */
	char err[256];
};

static void cfg_push(struct cfg *c, const char *s)
{
	if (c->argc + 2 > c->cap) {
		c->cap = c->cap ? 2 * c->cap : 32;
		c->argv = realloc(c->argv, (size_t)c->cap * sizeof(*c->argv));
	}
	c->argv[c->argc++] = strdup(s);
	c->argv[c->argc] = NULL;
}

static int cfg_line(void *user, const char *section, const char *name,
		    const char *value, int lineno)
{
	struct cfg *c = user;
	const struct option *f;
	char flag[96];

	if (c->err_line)
		return 1;
	if (*section && strcmp(section, "parleyd")) {
		c->err_line = lineno;
		snprintf(c->err, sizeof(c->err), "unknown section [%s]",
			 section);
		return 0;
	}
	for (f = server_flags; f->name; f++)
		if (!strcmp(f->name, name) && strcmp(name, "config") &&
		    strcmp(name, "version") && strcmp(name, "help"))
			break;
	if (!f->name) {
		c->err_line = lineno;
		snprintf(c->err, sizeof(c->err), "unknown key %s", name);
		return 0;
	}
	snprintf(flag, sizeof(flag), "--%s", name);
	if (f->has_arg == no_argument) {
		if (!strcmp(value, "true") || !strcmp(value, "yes") ||
		    !strcmp(value, "1") || !strcmp(value, "on"))
			cfg_push(c, flag);
		else if (strcmp(value, "false") && strcmp(value, "no") &&
			 strcmp(value, "0") && strcmp(value, "off")) {
			c->err_line = lineno;
			snprintf(c->err, sizeof(c->err),
				 "%s: expected true or false", name);
			return 0;
		}
		return 1;
	}
	cfg_push(c, flag);
	cfg_push(c, value);
	return 1;
}

static int cfg_handler(void *user, const char *section, const char *name,
		       const char *value)
{
	/* the line: ini_parse_file returns the first one a handler refused */
	return cfg_line(user, section, name, value, -1);
}

/* The file named by --config in argv, as flags for parse_flags; NULL argv
 * when there is none. -1 (said why) on a bad file. */
static int load_config(int argc, char **argv, struct cfg *c)
{
	FILE *fp;
	int rc;

	memset(c, 0, sizeof(*c));
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--config") && i + 1 < argc)
			c->file = argv[i + 1];
		else if (!strncmp(argv[i], "--config=", 9))
			c->file = argv[i] + 9;
	}
	if (!c->file)
		return 0;
	fp = fopen(c->file, "r");
	if (!fp) {
		fprintf(stderr, "parleyd: --config %s: %s\n", c->file,
			strerror(errno));
		return -1;
	}
	cfg_push(c, "parleyd");
	rc = ini_parse_file(fp, cfg_handler, c);
	fclose(fp);
	if (rc) {
		fprintf(stderr, "parleyd: %s:%d: %s\n", c->file, rc,
			c->err_line ? c->err : "not key = value");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct server_opts o = {
		.version = PARLEY_VERSION, .host = "127.0.0.1", .port = 8080, .data_dir = "./parley-data",
		.ranges = 16, .pin = true, .io_uring = true,
		.cluster = { .lease_ms = 10000 }, .drain_ms = 2000,
		.push = { .delay_ms = 10000, .timeout_ms = 10000,
			  .backoff_ms = 1000, .give_up_ms = 86400000,
			  .inflight = 16 },
	};
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	/* static: what the flags point into lives as long as the process */
	static struct cfg cfg;
	int rc;
	uint64_t file_mb = 100, quota_mb = 1024;

	if (argc > 1 && !strcmp(argv[1], "token"))
		return cmd_token(argc - 1, argv + 1);
	if (argc > 1 && !strcmp(argv[1], "backup"))
		return cmd_backup(argc - 1, argv + 1);
	if (argc > 1 && !strcmp(argv[1], "restore"))
		return cmd_restore(argc - 1, argv + 1);
	if (argc > 1 && !strcmp(argv[1], "verify"))
		return cmd_verify(argc - 1, argv + 1);
	defaults();
	o.shards = ncpu > 0 ? (unsigned)ncpu : 1;
	if (load_config(argc, argv, &cfg))
		return 2;
	/* the file first, then the flags: a flag overrides its key */
	if (cfg.argv && (rc = parse_flags(cfg.argc, cfg.argv, &o, &file_mb,
					  &quota_mb)) >= 0)
		return rc;
	if ((rc = parse_flags(argc, argv, &o, &file_mb, &quota_mb)) >= 0)
		return rc;
	/* A body the frame cannot carry could never be sent. */
	if (srv.lim.max_body > srv.lim.max_frame) {
		fprintf(stderr, "parleyd: --max-body (%u) must not exceed "
			"--max-frame (%u)\n", srv.lim.max_body,
			srv.lim.max_frame);
		return 2;
	}
	if (!o.tls_cert != !o.tls_key) {
		fprintf(stderr, "parleyd: --tls-cert and --tls-key go together "
			"(TLS needs the certificate and its key)\n");
		return 2;
	}
	files_configure(file_mb, quota_mb);
	return server_run(&o);
}
