/*
 * log: one line per event worth an operator's attention.
 *
 *   plog(PL_WARN, "auth", "refused %s: %s", peer, why);
 *
 * A line carries the time (UTC, milliseconds), the level, the area and the
 * message. When stderr is journald's stream (systemd sets JOURNAL_STREAM to
 * its device:inode), the time is left to the journal and the line starts
 * with the sd-daemon priority prefix ("<4>") instead, so `journalctl -p
 * warning` filters by it.
 *
 * Rate limit, per call site (its format string): at most LOG_BURST lines
 * per LOG_WINDOW_MS; what is held back is counted and said on the site's
 * next line ("(1234 more like this not logged)"), so a flood of bad frames
 * from the network cannot fill the disk nor hide that it happened.
 *
 * Callable from any thread. A line is one write(2) of at most LOG_LINE_MAX
 * bytes, so lines from different threads never interleave.
 */
#ifndef PARLEY_LOG_H
#define PARLEY_LOG_H

#include <stdbool.h>

enum pl_level { PL_ERROR, PL_WARN, PL_INFO, PL_DEBUG };

#define LOG_BURST 20
#define LOG_WINDOW_MS 10000
#define LOG_LINE_MAX 1024

/* The level from "error", "warn", "info" or "debug"; -1 for anything else. */
int log_level_parse(const char *name);
/* Lines above `level` are dropped. Default PL_INFO. Call before threads. */
void log_set_level(int level);
bool log_enabled(int level);

void plog(int level, const char *area, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Lines written and lines held back by the rate limit, for /metrics. */
void log_counts(unsigned long long *written, unsigned long long *suppressed);

#endif
