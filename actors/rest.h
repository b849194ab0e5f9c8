/*
 * rest: POST and GET /api/v1/channels/{ch}/messages, JSON over HTTP on the
 * WebSocket port (see rest.c and docs/rest.md).
 */
#ifndef PARLEY_REST_H
#define PARLEY_REST_H

#include "runtime/rt.h"

/* From http_handle, on the connection's shard, for paths under /api/. */
void rest_handle(rt_shard *s, const rt_http_req *req, rt_http_resp *resp);
/* The transport's on_http_answer: the msgpack answer becomes JSON. */
void rest_answer(rt_shard *s, rt_conn *c, const uint8_t *data, size_t len,
		 rt_http_resp *resp);

#endif
