/*
 * The measuring pieces every scenario shares: the clock, the latency
 * histogram (merged across processes), the tag at the start of every body,
 * the server's CPU and RSS from /proc, and parleyd's per-stage histograms
 * from GET /metrics. main.c calls the /proc and /metrics half around the
 * measured window; child.c calls hist_add once per delivery or ack.
 */
#define _GNU_SOURCE
#include "perf/bench/bench.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double proc_cpu_s(int pid)
{
	char path[64], buf[2048], *p;
	unsigned long ut, st;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (!(f = fopen(path, "r")))
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	/* the command name may hold spaces and parentheses: fields count
	 * from the last ')'; 3 is the state, 14 and 15 utime and stime */
	if (!(p = strrchr(buf, ')')))
		return -1;
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
		   &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

uint64_t proc_rss(int pid)
{
	char path[64], line[256];
	unsigned long kb = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if (!(f = fopen(path, "r")))
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %lu kB", &kb) == 1)
			break;
	fclose(f);
	return (uint64_t)kb * 1024;
}

/* ---- histogram ------------------------------------------------------------ */

/* Values below HIST_SUB ns are exact; above, bucket (e, m) holds the values
 * whose top bit is e and whose next six bits are m. */
static unsigned hist_idx(uint64_t v)
{
	unsigned e;

	if (v < HIST_SUB)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v); /* >= 6 */
	return (e - 5) * HIST_SUB + (unsigned)((v >> (e - 6)) & (HIST_SUB - 1));
}

static uint64_t hist_mid(unsigned i)
{
	unsigned e, m;

	if (i < HIST_SUB)
		return i;
	e = i / HIST_SUB + 5;
	m = i % HIST_SUB;
	return ((uint64_t)(HIST_SUB + m) << (e - 6)) + ((1ull << (e - 6)) >> 1);
}

void hist_add(hist *h, uint64_t ns)
{
	unsigned i = hist_idx(ns);

	h->c[i < HIST_N ? i : HIST_N - 1]++;
	h->n++;
	if (ns > h->max)
		h->max = ns;
}

void hist_merge(hist *into, const hist *h)
{
	for (unsigned i = 0; i < HIST_N; i++)
		into->c[i] += h->c[i];
	into->n += h->n;
	if (h->max > into->max)
		into->max = h->max;
}

double hist_pct_ms(const hist *h, double p)
{
	uint64_t want, cum = 0;

	if (!h->n)
		return 0;
	if (p >= 1)
		return (double)h->max / 1e6;
	want = (uint64_t)(p * (double)h->n) + 1;
	if (want > h->n)
		want = h->n;
	for (unsigned i = 0; i < HIST_N; i++) {
		cum += h->c[i];
		if (cum >= want) {
			uint64_t v = hist_mid(i);

			return (double)(v < h->max ? v : h->max) / 1e6;
		}
	}
	return (double)h->max / 1e6;
}

/* ---- the tag ------------------------------------------------------------------ */

static void put_hex(char *out, uint64_t v, int digits)
{
	static const char hx[] = "0123456789abcdef";

	for (int i = digits - 1; i >= 0; i--, v >>= 4)
		out[i] = hx[v & 15];
}

void tag_body(char *out, size_t size, const btag *t)
{
	out[0] = 'P';
	out[1] = 'B';
	put_hex(out + 2, t->sent_ns, 16);
	put_hex(out + 18, t->idx, 8);
	put_hex(out + 26, t->from, 8);
	memset(out + TAG_LEN, 'x', size - TAG_LEN);
}

static int get_hex(const char *p, int digits, uint64_t *v)
{
	uint64_t x = 0;

	for (int i = 0; i < digits; i++) {
		char c = p[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return -1;
		x = x << 4 | d;
	}
	*v = x;
	return 0;
}

int tag_parse(const void *p, size_t len, btag *t)
{
	const char *s = p;
	uint64_t idx, from;

	if (len < TAG_LEN || s[0] != 'P' || s[1] != 'B' ||
	    get_hex(s + 2, 16, &t->sent_ns) || get_hex(s + 18, 8, &idx) ||
	    get_hex(s + 26, 8, &from))
		return -1;
	t->idx = (uint32_t)idx;
	t->from = (uint32_t)from;
	return 0;
}

/* ---- /metrics: parley_stage_seconds ----------------------------------------- */

#define FAMILY "parley_stage_seconds"

struct stage {
	char name[48];
	unsigned nle, cap;
	double *le, *cum; /* in the order the lines came; sorted when used */
	double sum, count;
};

struct stages {
	unsigned n, cap;
	struct stage *s;
};

int bench_tls_port;

/* Blocking reads and writes, through ssl when there is one. */
static ssize_t hio(int fd, SSL *ssl, void *rp, const void *wp, size_t n)
{
	int r;

	if (!ssl)
		return rp ? read(fd, rp, n) : write(fd, wp, n);
	r = rp ? SSL_read(ssl, rp, (int)n) : SSL_write(ssl, wp, (int)n);
	ERR_clear_error();
	return r > 0 ? r : -1;
}

char *http_get(const char *host, int port, const char *path)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)port) };
	struct timeval tv = { 5, 0 };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	char req[256], *buf = NULL, *body;
	SSL *ssl = NULL;
	size_t len = 0, cap = 0;
	bool chunked;
	ssize_t n;

	if (fd < 0)
		return NULL;
	inet_pton(AF_INET, host, &sa.sin_addr);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		goto fail;
	if (bench_tls_port && port == bench_tls_port) {
		static SSL_CTX *ctx;

		if (!ctx)
			ctx = SSL_CTX_new(TLS_client_method());
		if (!ctx || !(ssl = SSL_new(ctx)) || !SSL_set_fd(ssl, fd) ||
		    SSL_connect(ssl) != 1) {
			ERR_clear_error();
			goto fail;
		}
	}
	n = snprintf(req, sizeof(req),
		     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n",
		     path, host, port);
	if (hio(fd, ssl, NULL, req, (size_t)n) != n)
		goto fail;
	for (;;) {
		if (len + 65536 > cap) {
			char *nb = realloc(buf, cap * 2 + 65536 + 1);

			if (!nb)
				goto fail;
			buf = nb;
			cap = cap * 2 + 65536;
		}
		n = hio(fd, ssl, buf + len, NULL, cap - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	SSL_free(ssl);
	ssl = NULL;
	close(fd);
	if (!buf)
		return NULL;
	buf[len] = 0;
	/* status 200 only; the body after the blank line, read to the end
	 * of the stream (Connection: close), de-chunked if it came chunked */
	if (strncmp(buf, "HTTP/1.", 7) || strncmp(buf + 8, " 200", 4) ||
	    !(body = strstr(buf, "\r\n\r\n"))) {
		free(buf);
		return NULL;
	}
	*body = 0;
	chunked = strcasestr(buf, "\ntransfer-encoding: chunked") != NULL;
	body += 4;
	len -= (size_t)(body - buf);
	if (!chunked) {
		memmove(buf, body, len + 1);
		return buf;
	}
	for (char *in = body, *end = body + len, *out = buf; in < end;) {
		char *e;
		unsigned long cn = strtoul(in, &e, 16);

		if (e == in || !(e = strstr(e, "\r\n")) || cn == 0 ||
		    cn > (size_t)(end - e - 2)) {
			*out = 0;
			break;
		}
		memmove(out, e + 2, cn);
		out += cn;
		*out = 0;
		in = e + 2 + cn + 2;
	}
	return buf;
fail:
	SSL_free(ssl);
	close(fd);
	free(buf);
	return NULL;
}

double json_num(const char *text, const char *key)
{
	size_t kn = strlen(key);

	for (const char *p = text; p && (p = strstr(p, key)); p += kn) {
		char *e;
		double v;

		if (p == text || p[-1] != '"' || p[kn] != '"')
			continue;
		p += kn + 1;
		while (*p == ' ')
			p++;
		if (*p++ != ':')
			continue;
		v = strtod(p, &e);
		if (e != p)
			return v;
	}
	return -1;
}

double prom_num(const char *text, const char *key)
{
	size_t kn = strlen(key);

	for (const char *p = text; p && (p = strstr(p, key)); p += kn) {
		char *e;
		double v;

		if ((p != text && p[-1] != '\n') || p[kn] != ' ')
			continue;
		v = strtod(p + kn + 1, &e);
		if (e != p + kn + 1)
			return v;
	}
	return -1;
}

static struct stage *stage_of(stages *st, const char *name, size_t n)
{
	struct stage *s;

	if (n >= sizeof(st->s[0].name))
		return NULL;
	for (unsigned i = 0; i < st->n; i++)
		if (strlen(st->s[i].name) == n && !memcmp(st->s[i].name, name, n))
			return &st->s[i];
	if (st->n == st->cap) {
		unsigned cap = st->cap ? st->cap * 2 : 8;
		struct stage *ns = realloc(st->s, cap * sizeof(*ns));

		if (!ns)
			return NULL;
		st->s = ns;
		st->cap = cap;
	}
	s = &st->s[st->n++];
	memset(s, 0, sizeof(*s));
	memcpy(s->name, name, n);
	return s;
}

/* the value of label key="..." in the braces of line l */
static bool label(const char *l, const char *end, const char *key,
		  const char **v, size_t *vn)
{
	size_t kn = strlen(key);

	for (const char *p = l; p + kn + 2 < end; p++) {
		if ((p[-1] == '{' || p[-1] == ',') && !memcmp(p, key, kn) &&
		    p[kn] == '=' && p[kn + 1] == '"') {
			const char *q = memchr(p + kn + 2, '"',
					       (size_t)(end - p - kn - 2));

			if (!q)
				return false;
			*v = p + kn + 2;
			*vn = (size_t)(q - *v);
			return true;
		}
	}
	return false;
}

stages *stages_read(const char *host, int port)
{
	char *text = http_get(host, port, "/metrics");
	stages *st;

	if (!text)
		return NULL;
	st = calloc(1, sizeof(*st));
	for (char *l = text; l && *l;) {
		char *nl = strchr(l, '\n'), *brace, *close, *val;
		const char *nm, *lev;
		size_t nn, levn;
		struct stage *s;
		double v;

		if (nl)
			*nl = 0;
		if (strncmp(l, FAMILY, sizeof(FAMILY) - 1) ||
		    !(brace = strchr(l, '{')) || !(close = strrchr(l, '}')) ||
		    !label(brace + 1, close, "stage", &nm, &nn) ||
		    !(s = stage_of(st, nm, nn)))
			goto next;
		val = close + 1;
		v = strtod(val, NULL);
		if (!strncmp(l + sizeof(FAMILY) - 1, "_bucket{", 8) &&
		    label(brace + 1, close, "le", &lev, &levn)) {
			if (s->nle == s->cap) {
				s->cap = s->cap ? s->cap * 2 : 16;
				s->le = realloc(s->le, s->cap * sizeof(double));
				s->cum = realloc(s->cum, s->cap * sizeof(double));
			}
			s->le[s->nle] = levn >= 4 && !memcmp(lev, "+Inf", 4) ?
						1e300 : strtod(lev, NULL);
			s->cum[s->nle++] = v;
		} else if (!strncmp(l + sizeof(FAMILY) - 1, "_sum{", 5)) {
			s->sum = v;
		} else if (!strncmp(l + sizeof(FAMILY) - 1, "_count{", 7)) {
			s->count = v;
		}
next:
		l = nl ? nl + 1 : NULL;
	}
	free(text);
	/* buckets by le, whatever order they came in */
	for (unsigned i = 0; i < st->n; i++) {
		struct stage *s = &st->s[i];

		for (unsigned a = 1; a < s->nle; a++)
			for (unsigned b = a; b > 0 && s->le[b - 1] > s->le[b]; b--) {
				double t = s->le[b];

				s->le[b] = s->le[b - 1];
				s->le[b - 1] = t;
				t = s->cum[b];
				s->cum[b] = s->cum[b - 1];
				s->cum[b - 1] = t;
			}
	}
	return st;
}

void stages_free(stages *st)
{
	if (!st)
		return;
	for (unsigned i = 0; i < st->n; i++) {
		free(st->s[i].le);
		free(st->s[i].cum);
	}
	free(st->s);
	free(st);
}

static double cum_before(const struct stage *s, double le)
{
	if (!s)
		return 0;
	for (unsigned k = 0; k < s->nle; k++)
		if (s->le[k] == le)
			return s->cum[k];
	return 0;
}

/* the q-quantile of after - before, linear inside a bucket (seconds) */
static double quantile(const struct stage *a, const struct stage *b,
		       double count, double q)
{
	double want = q * count, prev_le = 0, prev_c = 0;

	if (count <= 0)
		return 0;
	for (unsigned k = 0; k < a->nle; k++) {
		double c = a->cum[k] - cum_before(b, a->le[k]), le = a->le[k];

		if (c >= want) {
			if (le > 1e299) /* in +Inf: the last finite bound */
				return prev_le;
			if (c <= prev_c)
				return le;
			return prev_le + (le - prev_le) * (want - prev_c) /
						 (c - prev_c);
		}
		prev_le = le;
		prev_c = c;
	}
	return prev_le;
}

char *stages_json(const stages *before, const stages *after, bool quiet)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	fputc('{', f);
	if (after && after->n && !quiet)
		fprintf(stderr, "parley-bench: where the time goes (parleyd /metrics, this window)\n"
				"  %-16s %10s %10s %10s %10s\n",
			"stage", "count", "mean_ms", "p50_ms", "p99_ms");
	for (unsigned i = 0; after && i < after->n; i++) {
		const struct stage *a = &after->s[i], *b = NULL;
		double count, sum, p50, p99;

		for (unsigned j = 0; before && j < before->n; j++)
			if (!strcmp(before->s[j].name, a->name))
				b = &before->s[j];
		count = a->count - (b ? b->count : 0);
		sum = a->sum - (b ? b->sum : 0);
		p50 = quantile(a, b, count, 0.5) * 1e3;
		p99 = quantile(a, b, count, 0.99) * 1e3;
		fprintf(f, "%s\"", i ? "," : "");
		for (const char *c = a->name; *c; c++) /* names are plain, but */
			if (*c != '"' && *c != '\\' && (unsigned char)*c >= 32)
				fputc(*c, f);
		fprintf(f, "\":{\"count\":%.0f,\"mean_ms\":%.6f,\"p50_ms\":%.6f,"
			   "\"p99_ms\":%.6f}",
			count, count > 0 ? sum / count * 1e3 : 0, p50, p99);
		if (!quiet)
			fprintf(stderr, "  %-16s %10.0f %10.4f %10.4f %10.4f\n",
				a->name, count,
				count > 0 ? sum / count * 1e3 : 0, p50, p99);
	}
	fputc('}', f);
	fclose(f);
	return text;
}
