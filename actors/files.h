/*
 * files: uploads and downloads over HTTP (issue 15; docs/rest.md, Files).
 *
 *   POST /api/v1/files?name=NAME      the body streamed to DATA/files/tmp,
 *                                     hashed, stored once by content;
 *                                     201 {id,name,size,type,sha256} once
 *                                     the bytes and the records are durable
 *   GET|HEAD /api/v1/files/{id}       the bytes (Range, ETag)
 *   GET|HEAD /api/v1/files/{id}/thumb the preview image
 *
 * The body of an upload is read on the shard that accepted the
 * connection; every 'F', 'H' and 'Q' record is written by one shard, the
 * files shard (shard 0), so counts never race; fsync and rename run on a
 * worker thread of this file, never on a shard. http.c routes GET/HEAD
 * here; server.c wires the streaming hooks, the tick and start/stop.
 */
#ifndef PARLEY_FILES_H
#define PARLEY_FILES_H

#include <stdbool.h>
#include <stdint.h>

#include "cluster/bus.h"
#include "runtime/rt.h"

struct shard_state;

#define FILES_PREFIX "/api/v1/files"

/* parleyd's flags (before files_start): MiB. */
void files_configure(uint64_t max_file_mb, uint64_t quota_mb);
/* The largest upload, in bytes (the transport's stream limit). */
uint64_t files_max_bytes(void);
/* Main thread, before the shards start: DATA/files/{tmp,thumbs}, the
 * sweep of DATA/files/tmp, the worker thread, previews. 0 or -1 (*err
 * static text, errno set). */
int files_start(const char *data_dir, const char **err);
/* Main thread, before rt_drain (previews answer through the shards). */
void files_drain(void);
/* Main thread, after the shards stopped. */
void files_stop(void);

/* GET/HEAD under FILES_PREFIX (http.c). */
void files_handle(rt_shard *s, const rt_http_req *req, rt_http_resp *resp);
/* The transport's streaming hooks for FILES_PREFIX (server.c). */
void files_begin(rt_shard *s, const rt_http_req *req, rt_http_resp *resp);
void files_data(rt_shard *s, rt_conn *c, const uint8_t *data, size_t len,
		rt_http_resp *resp);
void files_end(rt_shard *s, rt_conn *c, rt_http_resp *resp);
void files_abort(rt_shard *s, rt_conn *c);
/* Every tick: the janitor, on the files shard; on a cluster's other
 * hosts, the pass that pulls the bytes they have records of. */
void files_tick(struct shard_state *ss, uint64_t now_ms);

/* A cluster (cluster.c calls these on a library thread; docs/cluster.md,
 * "Files"). The owner of the files: store host holder's upload, pulling
 * its bytes from there, and answer tok with the upload's answer. */
struct cluster_file;
void files_remote_store(const struct cluster_file *f, const char *holder,
			bus_reply_token *tok);
/* Up to cap bytes of sha's bytes (thumb: preview) from off: how many (0:
 * the end), -ENOENT (not here), -EIO. */
long files_read_part(const char *sha, bool thumb, uint64_t off, void *buf,
		     size_t cap);
/* The owner removed the last record of sha's bytes: ours go too once the
 * log brought that here. */
void files_gone(const char *sha);

#endif
