/*
 * web: the browser client (web/) served over HTTP on the WebSocket port.
 * The files are compiled in (cmake/embed_web.cmake generates web_files[]);
 * --web-dir serves them from a directory instead.
 */
#ifndef PARLEY_WEB_H
#define PARLEY_WEB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/rt.h"

struct web_file {
	const char *path;  /* relative to web/, '/'-separated */
	const uint8_t *data;
	size_t len;
	const char *etag;  /* 16 hex digits of the content's SHA-256 */
};

/* Generated at build time; sorted by path, web_nfiles entries. */
extern const struct web_file web_files[];
extern const size_t web_nfiles;

/* Serve from dir (read on each request) instead of the compiled-in copy.
 * Call before the server starts. */
void web_set_dir(const char *dir);

/* The Content-Type for a file name, from its extension. */
const char *web_content_type(const char *path);

/* Does the If-None-Match value inm name etag (16 hex digits, unquoted)?
 * Lists, W/ prefixes and "*" included. */
bool web_etag_matches(const char *inm, const char *etag);

/* Answer req when its path names a file of the client: true when resp was
 * filled (200, 304 or 405), false to let the caller go on (404). */
bool web_handle(const rt_http_req *req, rt_http_resp *resp);

#endif
