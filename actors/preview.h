/*
 * preview: what an uploaded file is, and its preview. actors/files.c calls
 * it on a shard thread once per upload:
 *
 *   preview_sniff()   the MIME type from the first bytes (libmagic), on
 *                     the calling shard, in microseconds;
 *   preview_submit()  queues a job for the preview thread, which makes
 *                     DATA/files/thumbs/<sha256>.jpg (images, the first page
 *                     of a PDF) with libvips, or a text snippet, and hands
 *                     the result back to reply_shard as an M_CALL that runs
 *                     done(arg, r) there.
 *
 * No decoding ever runs on a shard: the preview thread is the only one that
 * touches libvips. Hostile input is expected: images larger than
 * max_megapixels are refused from their header before any pixel is
 * decoded, a decode past timeout_ms is killed, only the loaders listed in
 * preview.c are enabled (no ImageMagick, no SVG), and a job that fails is an
 * error result, never a crash. preview_init() and preview_stop() run on the
 * main thread, before the shards start and after they stop.
 */
#ifndef PARLEY_PREVIEW_H
#define PARLEY_PREVIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PREVIEW_THUMB_PX 360     /* the thumbnail's longer side, at most */
#define PREVIEW_SNIPPET_MAX 300  /* bytes of text in a snippet, at most */
#define PREVIEW_QUEUE_MAX 64     /* jobs waiting; more answer -EAGAIN */
#define PREVIEW_SNIFF_BYTES 65536 /* what preview_sniff looks at, at most */

struct preview_result {
	bool thumb;      /* DATA/files/thumbs/<sha>.jpg exists */
	uint32_t w, h;   /* the original image's size (a PDF's first page at
			  * 72 dpi); 0 when not an image */
	char snippet[PREVIEW_SNIPPET_MAX + 1]; /* text: the first <= 300
			  * bytes, cut at a character boundary, valid UTF-8,
			  * NUL-terminated; "" otherwise */
	/* 0, or a positive errno: EAGAIN (queue full, or stopping), E2BIG
	 * (more than max_megapixels), ETIMEDOUT (decode past timeout_ms),
	 * EINVAL (not decodable: truncated, malformed, not what its type
	 * says), EIO (could not write the thumbnail). A file type that has
	 * no preview (a zip, an mp4) is not an error: 0, no thumb, no
	 * snippet. */
	int error;
};

/* The done callback of preview_submit: runs on reply_shard, once per
 * submit; r is valid only during the call. */
typedef void preview_done_fn(void *arg, const struct preview_result *r);

/* Main thread, once, before any other call: starts libvips (loaders
 * limited, one thread, no operation cache), the preview thread, and makes
 * DATA/files/thumbs/. max_megapixels 0 means 50, timeout_ms 0 means 10000.
 * 0, or a negative errno. */
int preview_init(const char *data_dir, unsigned max_megapixels,
		 unsigned timeout_ms);

/* Main thread, while the shards still run their mailboxes (before
 * rt_drain(), as notify_stop()): the job running is killed, every job still
 * waiting is answered with error ECANCELED (so each done runs, and frees
 * its arg), the preview thread ends and libvips shuts down. Later submits
 * are answered ECANCELED. preview_sniff keeps working (it needs no
 * init). */
void preview_stop(void);

/* Any thread (a shard's libmagic handle is its own, made on first use;
 * other threads share one under a mutex). The MIME type of the bytes head
 * (the first n, at most PREVIEW_SNIFF_BYTES are looked at) into mime
 * ("image/png", "text/plain", "application/octet-stream" when libmagic
 * cannot tell). 0, or a negative errno (mime is then
 * "application/octet-stream" when cap allows). Names are never consulted. */
int preview_sniff(const void *head, size_t n, char *mime, size_t cap);

/* Any thread. Queues the preview of the file at path (its bytes have the
 * sha256 sha256hex, 64 lowercase hex) of type mime (preview_sniff's answer).
 * done(arg, r) runs later on shard reply_shard, always exactly once: with
 * the result, or error EAGAIN when PREVIEW_QUEUE_MAX jobs already wait.
 * A sha whose thumbnail exists is answered without decoding again. The
 * strings are copied. reply_shard PREVIEW_ON_WORKER (tools, tests without
 * shards) runs done on the preview thread itself (on preview_stop's
 * thread for the jobs stop cancels). */
#define PREVIEW_ON_WORKER 0xffffffffu
void preview_submit(const char *sha256hex, const char *path,
		    const char *mime, preview_done_fn *done, void *arg,
		    unsigned reply_shard);

/* True for the types that get a thumbnail / a snippet (for tests and for
 * files.c's answers; the preview thread decides the same way). */
bool preview_is_image(const char *mime);
bool preview_is_text(const char *mime);

#endif
