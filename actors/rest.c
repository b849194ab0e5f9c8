/*
 * rest: the HTTP fallback for sending and reading, an adapter and nothing
 * more. A request under /api/v1/ is checked (path, method, Bearer token,
 * JSON), turned into the msgpack request a WebSocket client would send
 * ({"op":"send",...} or {"op":"history",...}) and run by sess_request() as
 * if an authenticated session had sent it: the same validation, rate
 * limit, idempotency and durability, by the same code. The msgpack answer
 * comes back on the HTTP connection (at once for reads, after the commit
 * for sends, through the transport's on_http_answer) and is turned into
 * JSON with the status its code names.
 *
 *   POST /api/v1/channels/{ch}/messages  {"body","cmid","thread"?,
 *                                         "mentions"?}  -> 201 {seq, ts}
 *                                         (200 with dup:true on a repeat)
 *   GET  /api/v1/channels/{ch}/messages?before=&after=&limit=&thread=
 *                                         -> 200 {msgs, more}
 *   GET  /api/v1/channels                 -> 200 {channels} (as ch.list)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "actors/actors.h"
#include "actors/rest.h"

#define PREFIX "/api/v1/channels/"
#define SUFFIX "/messages"

/* What the pending exchange waits for (kept in the connection's user
 * pointer, which HTTP connections do not otherwise use). */
enum { WAIT_SEND = 1, WAIT_HISTORY = 2, WAIT_LIST = 3 };

static const struct {
	const char *code;
	int status;
} statuses[] = {
	{ "BAD_FRAME", 400 },    { "BAD_REQUEST", 400 }, { "UNAUTHORIZED", 401 },
	{ "FORBIDDEN", 403 },    { "NOT_FOUND", 404 },   { "CONFLICT", 409 },
	{ "TOO_LARGE", 413 },    { "RATE_LIMITED", 429 }, { "INTERNAL", 500 },
	{ "UNAVAILABLE", 503 },
};

static int status_of(const char *code)
{
	for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
		if (!strcmp(statuses[i].code, code))
			return statuses[i].status;
	return 500;
}

static void set_json(rt_http_resp *resp, int status, json_t *j)
{
	resp->status = status;
	resp->content_type = "application/json";
	resp->body = json_dumps(j, JSON_COMPACT);
	resp->body_len = resp->body ? strlen(resp->body) : 0;
	json_decref(j);
}

static void error(rt_http_resp *resp, const char *code, const char *msg,
		  uint64_t retry_ms)
{
	json_t *j = json_pack("{s:s, s:s}", "code", code, "msg", msg);
	int status = status_of(code);

	if (retry_ms) {
		json_object_set_new(j, "retry_ms", json_integer((json_int_t)retry_ms));
		snprintf(resp->hname, sizeof(resp->hname), "retry-after:");
		snprintf(resp->hvalue, sizeof(resp->hvalue), "%llu",
			 (unsigned long long)((retry_ms + 999) / 1000));
	}
	if (status == 401) {
		snprintf(resp->hname, sizeof(resp->hname), "www-authenticate:");
		snprintf(resp->hvalue, sizeof(resp->hvalue), "Bearer");
	}
	set_json(resp, status, j);
}

/* ---- msgpack -> JSON ------------------------------------------------------ */

static json_t *to_json(const msgpack_object *o)
{
	json_t *j;

	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		return json_null();
	case MSGPACK_OBJECT_BOOLEAN:
		return json_boolean(o->via.boolean);
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		return json_integer(o->via.u64 > (uint64_t)INT64_MAX
					    ? INT64_MAX
					    : (json_int_t)o->via.u64);
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		return json_integer((json_int_t)o->via.i64);
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		return json_real(o->via.f64);
	case MSGPACK_OBJECT_STR:
		return json_stringn(o->via.str.ptr, o->via.str.size);
	case MSGPACK_OBJECT_ARRAY:
		j = json_array();
		for (uint32_t i = 0; i < o->via.array.size; i++)
			json_array_append_new(j, to_json(&o->via.array.ptr[i]));
		return j;
	case MSGPACK_OBJECT_MAP:
		j = json_object();
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			const msgpack_object_kv *kv = &o->via.map.ptr[i];
			char key[256];

			if (kv->key.type != MSGPACK_OBJECT_STR ||
			    kv->key.via.str.size >= sizeof(key))
				continue;
			memcpy(key, kv->key.via.str.ptr, kv->key.via.str.size);
			key[kv->key.via.str.size] = 0;
			json_object_set_new(j, key, to_json(&kv->val));
		}
		return j;
	default:
		return json_null();
	}
}

void rest_answer(rt_shard *s, rt_conn *c, const uint8_t *data, size_t len,
		 rt_http_resp *resp)
{
	uintptr_t wait = (uintptr_t)rt_conn_user(c);
	proto_doc d;
	bool ok = false;
	json_t *j;

	(void)s;
	if (proto_decode_max(&d, data, len, len + 1) != PROTO_OK) {
		error(resp, "INTERNAL", "answer did not decode", 0);
		return;
	}
	proto_get_bool(&d.root, "ok", &ok);
	if (!ok) {
		/* {"t":"res","ok":false,...} or {"t":"err",...} */
		char code[32] = "INTERNAL", msg[256] = "";
		uint64_t retry = 0;
		const char *p;
		uint32_t n;

		if (proto_get_str(&d.root, "code", &p, &n) == 0 &&
		    n < sizeof(code)) {
			memcpy(code, p, n);
			code[n] = 0;
		}
		if (proto_get_str(&d.root, "msg", &p, &n) == 0) {
			n = n < sizeof(msg) - 1 ? n : (uint32_t)sizeof(msg) - 1;
			memcpy(msg, p, n);
			msg[n] = 0;
		}
		proto_get_uint(&d.root, "retry_ms", &retry);
		error(resp, code, msg, retry);
		proto_doc_free(&d);
		return;
	}
	j = to_json(&d.root);
	json_object_del(j, "t");
	json_object_del(j, "rid");
	json_object_del(j, "ok");
	if (wait == WAIT_SEND)
		set_json(resp, json_object_get(j, "dup") ? 200 : 201, j);
	else
		set_json(resp, 200, j);
	proto_doc_free(&d);
}

/* ---- requests ---------------------------------------------------------------- */

/* The {ch} of /api/v1/channels/{ch}/messages, or false. */
static bool channel_of(const char *path, char *ch)
{
	size_t pl = strlen(PREFIX), sl = strlen(SUFFIX), n = strlen(path);

	if (n <= pl + sl || strncmp(path, PREFIX, pl) ||
	    strcmp(path + n - sl, SUFFIX))
		return false;
	n -= pl + sl;
	if (!proto_id_valid(path + pl, n))
		return false;
	memcpy(ch, path + pl, n);
	ch[n] = 0;
	return true;
}

/* One unsigned query parameter: 0 absent, 1 found, -1 malformed. */
static int query_uint(const char *q, const char *name, uint64_t *v)
{
	size_t nl = strlen(name);

	for (const char *p = q; p && *p; p = strchr(p, '&'), p = p ? p + 1 : p) {
		const char *e;
		char *end;

		if (strncmp(p, name, nl) || p[nl] != '=')
			continue;
		e = p + nl + 1;
		if (*e < '0' || *e > '9')
			return -1;
		*v = strtoull(e, &end, 10);
		if (*end && *end != '&')
			return -1;
		return 1;
	}
	return 0;
}

static const char *const query_names[] = { "before", "after", "limit",
					   "thread" };

/* Every parameter is one of query_names, each at most once: 0; else a
 * message for the 400. */
static const char *query_check(const char *q)
{
	unsigned seen[4] = { 0 };

	for (const char *p = q; p && *p; p = strchr(p, '&'), p = p ? p + 1 : p) {
		size_t i = 0;

		while (i < 4 && !(!strncmp(p, query_names[i],
					   strlen(query_names[i])) &&
				  p[strlen(query_names[i])] == '='))
			i++;
		if (i == 4)
			return "the parameters are before, after, limit and thread";
		if (seen[i]++)
			return "each parameter may be given once";
	}
	return NULL;
}

static void run(struct shard_state *ss, const rt_http_req *req,
		const struct auth_claims *cl, uintptr_t wait, proto_out *o)
{
	rt_conn_set_user(req->conn, (void *)wait);
	sess_request(ss, req->conn, cl->ws, cl->sub, cl->admin, o->data,
		     o->len);
}

static void post_message(struct shard_state *ss, const rt_http_req *req,
			 rt_http_resp *resp, const struct auth_claims *cl,
			 const char *ch)
{
	json_error_t jerr;
	json_t *j, *body, *cmid, *thread, *mentions;
	proto_out o;
	proto_str *men = NULL;
	uint32_t nmen = 0;

	j = json_loadb((const char *)req->body, req->body_len,
		       JSON_REJECT_DUPLICATES, &jerr);
	if (!j || !json_is_object(j)) {
		json_decref(j);
		error(resp, "BAD_REQUEST", "the body must be a JSON object", 0);
		return;
	}
	body = json_object_get(j, "body");
	cmid = json_object_get(j, "cmid");
	thread = json_object_get(j, "thread");
	mentions = json_object_get(j, "mentions");
	/* JSON clients often write null for "not given" */
	if (json_is_null(thread))
		thread = NULL;
	if (json_is_null(mentions))
		mentions = NULL;
	if (!json_is_string(body) ||
	    strlen(json_string_value(body)) != json_string_length(body)) {
		error(resp, "BAD_REQUEST", "body must be a string", 0);
		goto out;
	}
	if (json_string_length(body) > srv.lim.max_body) {
		error(resp, "TOO_LARGE", "body too large", 0);
		goto out;
	}
	if (!json_is_string(cmid) || json_string_length(cmid) < 1 ||
	    json_string_length(cmid) > PROTO_MAX_CMID ||
	    strlen(json_string_value(cmid)) != json_string_length(cmid)) {
		error(resp, "BAD_REQUEST", "cmid must be 1-64 bytes", 0);
		goto out;
	}
	if (thread && (!json_is_integer(thread) ||
		       json_integer_value(thread) < 1)) {
		error(resp, "BAD_REQUEST", "thread must be a seq", 0);
		goto out;
	}
	if (mentions && !json_is_array(mentions)) {
		error(resp, "BAD_REQUEST", "mentions must be a list of user ids",
		      0);
		goto out;
	}
	for (size_t i = 0; mentions && i < json_array_size(mentions); i++) {
		json_t *u = json_array_get(mentions, i);

		if (!json_is_string(u) ||
		    !proto_id_valid(json_string_value(u), json_string_length(u))) {
			error(resp, "BAD_REQUEST",
			      "mentions must be a list of user ids", 0);
			goto out;
		}
	}
	if (mentions) {
		nmen = (uint32_t)json_array_size(mentions);
		men = calloc(nmen + 1, sizeof(*men));
		for (uint32_t i = 0; i < nmen; i++) {
			json_t *u = json_array_get(mentions, i);

			men[i] = (proto_str){ json_string_value(u),
					      (uint32_t)json_string_length(u) };
		}
	}
	proto_out_init(&o, 0, json_string_length(body) + 256);
	proto_enc_send_req(&o, 1, ch,
			   (proto_str){ json_string_value(body),
					(uint32_t)json_string_length(body) },
			   (proto_str){ json_string_value(cmid),
					(uint32_t)json_string_length(cmid) },
			   thread != NULL,
			   thread ? (uint64_t)json_integer_value(thread) : 0,
			   mentions != NULL, men, nmen);
	free(men);
	resp->status = 0; /* the answer comes once it is durable */
	run(ss, req, cl, WAIT_SEND, &o);
	proto_out_free(&o);
out:
	json_decref(j);
}

static void get_messages(struct shard_state *ss, const rt_http_req *req,
			 rt_http_resp *resp, const struct auth_claims *cl,
			 const char *ch)
{
	const char *why;
	uint64_t v[4];
	int found[4];
	struct proto_history_q q;
	proto_out o;

	for (int i = 0; i < 4; i++) {
		found[i] = query_uint(req->query, query_names[i], &v[i]);
		if (found[i] < 0) {
			error(resp, "BAD_REQUEST",
			      "before, after, limit and thread are numbers", 0);
			return;
		}
	}
	if ((why = query_check(req->query))) {
		error(resp, "BAD_REQUEST", why, 0);
		return;
	}
	/* in query_names' order */
	q = (struct proto_history_q){
		.has_before = found[0] > 0, .before = v[0],
		.has_after = found[1] > 0, .after = v[1],
		.has_limit = found[2] > 0, .limit = v[2],
		.has_thread = found[3] > 0, .thread = v[3],
	};
	proto_out_init(&o, 0, 256);
	proto_enc_history_req(&o, 1, ch, &q);
	resp->status = 0;
	run(ss, req, cl, WAIT_HISTORY, &o);
	proto_out_free(&o);
}

/* GET /api/v1/channels: ch.list, as the token's user */
static void get_channels(struct shard_state *ss, const rt_http_req *req,
			 rt_http_resp *resp, const struct auth_claims *cl)
{
	proto_out o;

	if (req->query && *req->query) {
		error(resp, "BAD_REQUEST", "no parameters are taken", 0);
		return;
	}
	proto_out_init(&o, 0, 64);
	proto_enc_req(&o, "ch.list", 1, 0);
	resp->status = 0;
	run(ss, req, cl, WAIT_LIST, &o);
	proto_out_free(&o);
}

void rest_handle(rt_shard *s, const rt_http_req *req, rt_http_resp *resp)
{
	struct shard_state *ss = rt_shard_user(s);
	struct auth_claims cl;
	const char *a = req->authorization, *why = "bad token";
	char ch[ID_CAP];
	bool list = !strcmp(req->path, "/api/v1/channels");

	if (!list && !channel_of(req->path, ch)) {
		error(resp, "NOT_FOUND", "no such resource", 0);
		return;
	}
	if (list ? strcmp(req->method, "GET")
		 : strcmp(req->method, "GET") && strcmp(req->method, "POST")) {
		error(resp, "BAD_REQUEST",
		      list ? "only GET" : "only GET and POST", 0);
		resp->status = 405;
		snprintf(resp->hname, sizeof(resp->hname), "allow:");
		snprintf(resp->hvalue, sizeof(resp->hvalue), "%s",
			 list ? "GET" : "GET, POST");
		return;
	}
	if (strncasecmp(a, "Bearer ", 7)) {
		error(resp, "UNAUTHORIZED", "Authorization: Bearer JWT needed",
		      0);
		return;
	}
	a += 7;
	if (auth_verify(srv.key, srv.key_len, a, strlen(a),
			(int64_t)(rt_now_ms() / 1000), &cl, &why)) {
		RT_STAT_ADD(ss->auth_failures, 1);
		error(resp, "UNAUTHORIZED", why, 0);
		return;
	}
	if (list)
		get_channels(ss, req, resp, &cl);
	else if (!strcmp(req->method, "POST"))
		post_message(ss, req, resp, &cl, ch);
	else
		get_messages(ss, req, resp, &cl, ch);
}
