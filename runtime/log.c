/*
 * log: levelled, rate-limited lines on stderr (see log.h).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "runtime/log.h"

#define SITES 256 /* call sites tracked; past that, sites share slots */

struct site {
	const char *fmt;
	uint64_t window_start; /* ms, monotonic */
	unsigned lines;        /* written in this window */
	unsigned long long held; /* held back since the last written line */
};

static int level = PL_INFO;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static bool to_journal;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct site sites[SITES];
static unsigned long long n_written, n_held;

static const char *const names[] = { "error", "warn", "info", "debug" };
static const char prio[] = { '3', '4', '6', '7' }; /* sd-daemon.h */

int log_level_parse(const char *name)
{
	for (int i = 0; i <= PL_DEBUG; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	if (strcmp(name, "warning") == 0)
		return PL_WARN;
	return -1;
}

void log_set_level(int l) { level = l; }

bool log_enabled(int l) { return l <= level; }

/* stderr is the journal's when JOURNAL_STREAM names its device and inode. */
static void detect_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	if (js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
	    fstat(STDERR_FILENO, &st) == 0 &&
	    (unsigned long long)st.st_dev == dev &&
	    (unsigned long long)st.st_ino == ino)
		to_journal = true;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Whether this line may go out; *held_before is how many lines of the
 * same site were held back since its last one. */
static bool admit(const char *fmt, unsigned long long *held_before)
{
	uintptr_t h = (uintptr_t)fmt;
	h ^= h >> 17;
	h *= 0x9e3779b97f4a7c15ull;
	struct site *s = &sites[(h >> 56) % SITES];
	uint64_t now = mono_ms();
	bool ok;
	pthread_mutex_lock(&lock);
	if (s->fmt != fmt || now - s->window_start >= LOG_WINDOW_MS) {
		if (s->fmt != fmt) {
			s->fmt = fmt;
			s->held = 0;
		}
		s->window_start = now;
		s->lines = 0;
	}
	ok = s->lines < LOG_BURST;
	if (ok) {
		s->lines++;
		*held_before = s->held;
		s->held = 0;
		n_written++;
	} else {
		s->held++;
		n_held++;
	}
	pthread_mutex_unlock(&lock);
	return ok;
}

void plog(int l, const char *area, const char *fmt, ...)
{
	if (l > level)
		return;
	pthread_once(&once, detect_journal);
	unsigned long long held;
	if (!admit(fmt, &held))
		return;

	char line[LOG_LINE_MAX];
	size_t n;
	if (to_journal) {
		n = (size_t)snprintf(line, sizeof line, "<%c>%s: ", prio[l], area);
	} else {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
		n += (size_t)snprintf(line + n, sizeof line - n,
				      ".%03ldZ %-5s %s: ",
				      ts.tv_nsec / 1000000, names[l], area);
	}
	va_list ap;
	va_start(ap, fmt);
	if (n < sizeof line)
		n += (size_t)vsnprintf(line + n, sizeof line - n, fmt, ap);
	va_end(ap);
	if (held && n < sizeof line)
		n += (size_t)snprintf(line + n, sizeof line - n,
				      " (%llu more like this not logged)",
				      held);
	if (n >= sizeof line - 1) { /* cut: say so, keep the newline */
		n = sizeof line - 1;
		memcpy(line + n - 3, "...", 3);
	}
	/* A message with a newline in it (from a peer) would forge lines. */
	for (size_t i = 0; i < n; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

void log_counts(unsigned long long *written, unsigned long long *suppressed)
{
	pthread_mutex_lock(&lock);
	*written = n_written;
	*suppressed = n_held;
	pthread_mutex_unlock(&lock);
}
