/*
 * webfiles: GET/HEAD of the browser client's files (docs/protocol.md,
 * section 9). "/" is index.html; "/PATH" is web/PATH. A path is looked up
 * only when every segment is a plain name: no empty segment ("//"), none
 * starting with '.' ("..", ".", dotfiles), no byte outside
 * [A-Za-z0-9._~@+-] (so no '%', '\\' or control bytes, whatever lws
 * decoded). Anything else, or a name that is not there, is not ours: the
 * caller answers 404.
 *
 * Every answer revalidates (Cache-Control: no-cache) against a strong
 * ETag, the content's SHA-256: the files are small and a stale module
 * after an upgrade would break the client. HTML also gets the CSP.
 *
 * With --web-dir the file is read from disk on each request, on the shard
 * thread: a tool for working on the client, not for serving many users.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "actors/web.h"

#define WEB_PATH_MAX 256
#define WEB_DISK_MAX (64u << 20) /* --web-dir: larger files are not served */

static const char *web_dir;

#define CSP "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; " \
	    "style-src 'self'; script-src 'self'; object-src 'none'; " \
	    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

void web_set_dir(const char *dir)
{
	web_dir = dir;
}

const char *web_content_type(const char *path)
{
	static const struct { const char *ext, *type; } types[] = {
		{ "html", "text/html; charset=utf-8" },
		{ "htm", "text/html; charset=utf-8" },
		{ "js", "text/javascript; charset=utf-8" },
		{ "mjs", "text/javascript; charset=utf-8" },
		{ "css", "text/css; charset=utf-8" },
		{ "svg", "image/svg+xml" },
		{ "json", "application/json" },
		{ "map", "application/json" },
		{ "webmanifest", "application/manifest+json" },
		{ "png", "image/png" },
		{ "ico", "image/x-icon" },
		{ "txt", "text/plain; charset=utf-8" },
		{ "md", "text/plain; charset=utf-8" },
		{ "woff2", "font/woff2" },
	};
	const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');

	if (dot && (!slash || dot > slash))
		for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
			if (!strcasecmp(dot + 1, types[i].ext))
				return types[i].type;
	return "application/octet-stream";
}

static bool name_byte(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
	       ch == '~' || ch == '@' || ch == '+' || ch == '-';
}

/* The request path as a file name relative to web/, or false when it
 * cannot name one (see the top of this file). */
static bool web_path(const char *path, char *rel, size_t cap)
{
	size_t n;

	if (path[0] != '/')
		return false;
	path++;
	if (!*path)
		path = "index.html";
	n = strlen(path);
	if (n >= cap)
		return false;
	for (size_t i = 0; i < n; i++) {
		bool seg_start = i == 0 || path[i - 1] == '/';

		if (path[i] == '/') {
			if (seg_start || i + 1 == n)
				return false; /* empty segment */
		} else if (!name_byte(path[i]) || (seg_start && path[i] == '.')) {
			return false;
		}
	}
	memcpy(rel, path, n + 1);
	return true;
}

bool web_etag_matches(const char *inm, const char *etag)
{
	size_t el = strlen(etag);
	const char *p = inm;

	while (*p) {
		const char *q;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			break;
		if (*p == '*')
			return true;
		if (!strncmp(p, "W/", 2))
			p += 2; /* If-None-Match compares weakly (RFC 9110) */
		if (*p == '"') {
			q = strchr(p + 1, '"');
			if (!q)
				return false;
			if ((size_t)(q - p - 1) == el && !memcmp(p + 1, etag, el))
				return true;
			p = q + 1;
		}
		/* skip to the next entry (and over anything malformed) */
		while (*p && *p != ',')
			p++;
	}
	return false;
}

static void hex16(const uint8_t *data, size_t len, char out[17])
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;

	if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL))
		memset(md, 0, sizeof(md));
	for (int i = 0; i < 8; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

/* --web-dir: the file's bytes (malloc'd), or NULL when it is not a
 * regular file there (or cannot be read). */
static uint8_t *disk_read(const char *rel, size_t *len)
{
	char path[4096];
	struct stat st;
	uint8_t *data = NULL;
	size_t got = 0;
	int fd;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", web_dir, rel) >=
	    sizeof(path))
		return NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size > WEB_DISK_MAX)
		goto fail;
	data = malloc((size_t)st.st_size + 1);
	if (!data)
		goto fail;
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, data + got, (size_t)st.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break; /* shorter now: serve what is there */
		got += (size_t)r;
	}
	close(fd);
	*len = got;
	return data;
fail:
	free(data);
	close(fd);
	return NULL;
}

static const struct web_file *embedded(const char *rel)
{
	for (size_t i = 0; i < web_nfiles; i++)
		if (!strcmp(web_files[i].path, rel))
			return &web_files[i];
	return NULL;
}

bool web_handle(const rt_http_req *req, rt_http_resp *resp)
{
	char rel[WEB_PATH_MAX], etag[17], quoted[20];
	bool get = !strcmp(req->method, "GET"),
	     head = !strcmp(req->method, "HEAD");
	const char *type;
	const uint8_t *data;
	uint8_t *owned = NULL;
	size_t len;

	if (!web_path(req->path, rel, sizeof(rel)))
		return false;
	if (web_dir) {
		owned = disk_read(rel, &len);
		if (!owned)
			return false;
		data = owned;
		hex16(data, len, etag);
	} else {
		const struct web_file *f = embedded(rel);

		if (!f)
			return false;
		data = f->data;
		len = f->len;
		memcpy(etag, f->etag, sizeof(etag));
	}
	if (!get && !head) {
		free(owned);
		resp->status = 405;
		resp->content_type = "text/plain; charset=utf-8";
		resp->body = strdup("method not allowed\n");
		resp->body_len = strlen(resp->body);
		rt_http_add_header(resp, "Allow", "GET, HEAD");
		return true;
	}
	type = web_content_type(rel);
	snprintf(quoted, sizeof(quoted), "\"%s\"", etag);
	rt_http_add_header(resp, "ETag", quoted);
	rt_http_add_header(resp, "Cache-Control", "no-cache");
	rt_http_add_header(resp, "X-Content-Type-Options", "nosniff");
	rt_http_add_header(resp, "Referrer-Policy", "no-referrer");
	if (!strncmp(type, "text/html", 9)) {
		rt_http_add_header(resp, "Content-Security-Policy", CSP);
		rt_http_add_header(resp, "X-Frame-Options", "DENY");
	}
	resp->content_type = type;
	resp->head = head;
	if (web_etag_matches(req->if_none_match, etag)) {
		free(owned);
		resp->status = 304;
		return true;
	}
	resp->status = 200;
	resp->body_len = len;
	if (head) {
		free(owned);
		return true;
	}
	if (owned) {
		resp->body = (char *)owned;
		return true;
	}
	resp->body = malloc(len ? len : 1);
	if (!resp->body) {
		resp->status = 503;
		resp->body_len = 0;
		return true;
	}
	memcpy(resp->body, data, len);
	return true;
}
