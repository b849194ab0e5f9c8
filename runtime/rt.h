/*
 * runtime: shards, mailboxes, payload buffers, timers and the WebSocket
 * transport. Nothing here knows what a chat is.
 *
 * One shard per core: a pinned thread with its own libwebsockets context, its
 * own SO_REUSEPORT listening socket and its own mailbox. Shards share no
 * state; they talk by posting rt_msg into each other's mailboxes. The layer
 * above (actors/) plugs in through rt_hooks and runs entirely on shard
 * threads, except storage's sync threads, which only ever call rt_post().
 */
#ifndef PARLEY_RT_H
#define PARLEY_RT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RT_MAX_SHARDS 64

typedef struct rt_shard rt_shard;
typedef struct rt_conn rt_conn;

/* ---- mailbox messages -------------------------------------------------- */

/* Header at the start of every mailbox message. Once posted, the message
 * belongs to the receiving shard, which frees it after on_msg. */
typedef struct rt_msg {
	struct rt_msg *next; /* the producer's overflow chain; then unused */
	uint16_t type;
	uint16_t from; /* posting shard, RT_EXTERNAL for other threads */
} rt_msg;

#define RT_EXTERNAL 0xffff

/* Post m to shard dst's mailbox. Callable from any thread. Never fails and
 * never drops: from a shard thread a full mailbox parks the message on the
 * poster's own overflow list (flushed every loop turn, order kept); other
 * threads wait for room. The receiver is woken only when its mailbox goes
 * from empty to non-empty while it sleeps. */
void rt_post(unsigned dst, rt_msg *m);

/* ---- shards ------------------------------------------------------------ */

/* A counter only its shard writes: a plain load, add and store (no locked
 * instruction on the hot path), as atomics so /metrics' relaxed reads
 * from another thread are not a data race. */
#define RT_STAT_ADD(field, n) \
	__atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) + \
				   (n), __ATOMIC_RELAXED)


unsigned rt_nshards(void);
rt_shard *rt_self(void);            /* NULL off shard threads */
unsigned rt_shard_id(const rt_shard *s);
void *rt_shard_user(rt_shard *s);   /* the actors' per-shard state */
void rt_shard_set_user(rt_shard *s, void *u);
uint64_t rt_now_ms(void);           /* wall clock, unix ms */
uint64_t rt_mono_us(void);          /* monotonic, microseconds */
uint64_t rt_mailbox_depth(unsigned shard); /* approximate, for metrics */
/* On a shard thread: have on_timer called on this shard in delay_ms (or
 * sooner, if it is due sooner already). One deadline per shard; the layer
 * above keeps its own list of what falls due and sets the earliest. For
 * what must happen at a time finer than tick_ms. */
void rt_timer_in(rt_shard *s, uint64_t delay_ms);

/* ---- payload buffers ---------------------------------------------------- */

/* An immutable, reference-counted frame payload (one msgpack map). Encoded
 * once, queued on any number of connections on any shards; the last unref
 * frees it (mimalloc makes a free from another thread cheap). */
typedef struct rt_buf {
	uint32_t refs; /* atomic */
	uint32_t len;
	/* Latency stamps for the layer above, set before the buffer is
	 * shared: when kind is non-zero the transport calls on_sent once per
	 * connection that writes this buffer to its socket. */
	uint8_t kind;
	uint64_t t_req_us, t_post_us;
	uint8_t data[];
} rt_buf;

rt_buf *rt_buf_new(const void *data, size_t len); /* refs = 1 */
static inline void rt_buf_ref(rt_buf *b, uint32_t n)
{
	/* Relaxed is enough: the caller already holds a reference, so the
	 * buffer cannot be freed under us; publication happens through the
	 * mailbox, whose enqueue is a release. */
	__atomic_fetch_add(&b->refs, n, __ATOMIC_RELAXED);
}
void rt_buf_unref(rt_buf *b);

/* ---- connections (shard-local) ----------------------------------------- */

/* A connection id names a connection from any shard: shard in the top 8
 * bits, a generation to catch reuse, the slot in the low 32. */
typedef uint64_t rt_conn_id;
static inline unsigned rt_conn_shard(rt_conn_id id) { return (unsigned)(id >> 56); }

rt_conn_id rt_conn_get_id(const rt_conn *c);
rt_conn *rt_conn_find(rt_shard *s, rt_conn_id id); /* NULL when gone */
void *rt_conn_user(rt_conn *c);
void rt_conn_set_user(rt_conn *c, void *u);
const char *rt_conn_peer(rt_conn *c); /* "ip:port" */

/* Queue b (takes one new reference; the caller keeps its own) as one binary
 * WebSocket message. Frames queued back to back go out in as few writes as
 * possible. Returns 0, or -1 when the connection is closing (or just became
 * a slow consumer and is now being closed with 4008). */
int rt_conn_send(rt_conn *c, rt_buf *b);
int rt_conn_send_bytes(rt_conn *c, const void *data, size_t len); /* copies */
/* Close with a WebSocket close code after what is queued so far. */
void rt_conn_close(rt_conn *c, uint16_t code, const char *reason);
size_t rt_conn_queued(const rt_conn *c);
/* Hold reading a WebSocket connection for the layer above (the session's
 * requests in flight): no further message is parsed from it (rt_conn_pause
 * from on_frame takes effect after that message) until rt_conn_resume.
 * What was read waits, nothing is dropped: the client sees TCP
 * back-pressure. Independent of the slow-consumer bound, which may hold
 * reading too; reading resumes once neither does. No-ops on HTTP ones. */
void rt_conn_pause(rt_conn *c);
void rt_conn_resume(rt_conn *c);

/* ---- HTTP on the same port --------------------------------------------- */

typedef struct rt_http_req {
	rt_conn *conn;      /* the HTTP connection: answers may come later */
	const char *method; /* "GET", "POST", "PUT", "DELETE", "PATCH", ... */
	const char *path;   /* without the query */
	const char *query;  /* after '?', or "" */
	const char *authorization; /* header value or "" */
	const char *if_none_match; /* header value (repeats joined) or "" */
	const char *range;         /* Range header value or "" */
	const uint8_t *body;       /* NULL for a streamed body (see below) */
	size_t body_len;
	uint64_t content_length;   /* a streamed body: what the head says */
} rt_http_req;

/* status 0 after on_http: the answer comes later. Whatever the layer
 * above then sends on the connection (rt_conn_send and friends) goes to
 * on_http_answer, which fills the response; the transport writes it. */
typedef struct rt_http_resp {
	int status;
	const char *content_type; /* static string */
	char *body;               /* malloc'd; the transport frees it */
	size_t body_len;
	/* An answer to HEAD: Content-Length says body_len, no body is
	 * written (body may be NULL). The transport also drops the body of
	 * any answer to a HEAD request. 204 and 304 never carry a body or a
	 * Content-Length, whatever body_len says. */
	bool head;
	char hname[32], hvalue[96]; /* one extra header, if hname[0] */
	/* More headers, added with rt_http_add_header: "name: value\r\n"
	 * lines, malloc'd, freed by the transport with the body. */
	char *xhdrs;
	size_t xhdrs_len;
	/* A file answer (file set, body NULL): after the head the transport
	 * writes file_len bytes of file_fd from file_off, pread in chunks as
	 * the socket takes them, then closes file_fd (it owns it from here,
	 * whatever happens; a HEAD, 304 or 204 closes it unread).
	 * Content-Length is file_len. */
	bool file;
	int file_fd;
	uint64_t file_off, file_len;
} rt_http_resp;

/* All extra header lines of one answer together stay below this. */
#define RT_HTTP_XHDRS_MAX 2048

/* Add the header "name: value" to resp (any thread that owns resp).
 * 0, or -1 (nothing added) when the name is not a token, the value holds
 * a control character, or the headers would pass RT_HTTP_XHDRS_MAX. */
int rt_http_add_header(rt_http_resp *resp, const char *name,
		       const char *value);

/* Answer the pending exchange of HTTP connection c now (on c's shard):
 * r's body, headers and file move into the connection, r is zeroed. 0,
 * or -1 when c is not waiting for an answer (the client went away, or it
 * was answered): r's resources are released all the same. */
int rt_http_reply(rt_conn *c, rt_http_resp *r);

/* Streamed request bodies. A request with a body (POST, PUT, PATCH, or
 * any Content-Length) whose path starts with rt_config's
 * http_stream_prefix is not buffered: on_http_begin gets the head
 * (req->body NULL, req->content_length from the head, which is required:
 * 411 without), then on_http_data each piece as it is read, then
 * on_http_end when content_length bytes arrived; or on_http_abort, when
 * the client goes away (or times out) before the end. A
 * Content-Length over http_stream_max is refused (413) before begin.
 * begin or data may refuse by filling resp (status != 0): the answer is
 * written, the rest of the body is not read and the connection closes;
 * neither end nor abort follow (the layer above has cleaned up). end
 * fills resp, or leaves status 0 and answers later with rt_http_reply
 * (or a frame through on_http_answer). The exchange has its id (for
 * rt_conn_find) from begin on; the HTTP answer deadline starts at end.
 * Every other request keeps the buffered path (HTTP_BODY_MAX, on_http). */

/* ---- hooks: how actors/ plugs in --------------------------------------- */

typedef struct rt_hooks {
	/* shard thread start and end (before any connection / after all) */
	void (*on_start)(rt_shard *s);
	void (*on_stop)(rt_shard *s);
	/* a mailbox message for this shard; the handler owns m */
	void (*on_msg)(rt_shard *s, rt_msg *m);
	/* end of each loop turn: everything read this turn has been handled */
	void (*on_turn_end)(rt_shard *s);
	/* every tick_ms */
	void (*on_tick)(rt_shard *s, uint64_t now_ms);
	/* the deadline of rt_timer_in came */
	void (*on_timer)(rt_shard *s, uint64_t now_ms);
	/* WebSocket connection established / message / closed */
	void (*on_open)(rt_shard *s, rt_conn *c);
	void (*on_frame)(rt_shard *s, rt_conn *c, const uint8_t *data,
			 size_t len, bool binary);
	void (*on_close)(rt_shard *s, rt_conn *c);
	/* a buffer with a non-zero kind went into a socket write (once per
	 * connection; now_us is rt_mono_us() at that write) */
	void (*on_sent)(rt_shard *s, const rt_buf *b, uint64_t now_us);
	/* an HTTP request (not an upgrade); fill resp, or leave status 0 */
	void (*on_http)(rt_shard *s, const rt_http_req *req, rt_http_resp *resp);
	/* a frame sent on an HTTP connection whose answer is pending (see
	 * rt_http_resp); fill resp (status 0: keep waiting) */
	void (*on_http_answer)(rt_shard *s, rt_conn *c, const uint8_t *data,
			       size_t len, rt_http_resp *resp);
	/* streamed request bodies: see rt_http_reply's comment above */
	void (*on_http_begin)(rt_shard *s, const rt_http_req *req,
			      rt_http_resp *resp);
	void (*on_http_data)(rt_shard *s, rt_conn *c, const uint8_t *data,
			     size_t len, rt_http_resp *resp);
	void (*on_http_end)(rt_shard *s, rt_conn *c, rt_http_resp *resp);
	void (*on_http_abort)(rt_shard *s, rt_conn *c);
	/* drain started: say goodbye to connections; return true once nothing
	 * is left in flight (polled every tick until true) */
	bool (*on_drain)(rt_shard *s, bool first);
} rt_hooks;

typedef struct rt_config {
	unsigned nshards;
	const char *host; /* listen address */
	int port;
	size_t max_frame;     /* larger incoming messages: close 1009 */
	size_t max_outbuf;    /* unsent bytes per connection: see below */
	unsigned tick_ms;
	unsigned drain_ms;    /* after this, connections are closed (1001) */
	bool pin;             /* pin shard i to cpu i % ncpu */
	bool io_uring;        /* write a turn's output in one io_uring_enter
				 where the kernel allows it (else send()) */
	const char *http_stream_prefix; /* streamed bodies (NULL: none) */
	uint64_t http_stream_max;       /* their longest Content-Length */
	const rt_hooks *hooks;
} rt_config;

/* The slow-consumer bound (docs/protocol.md, Limits): while more than
 * max_outbuf bytes wait on a connection, no further request is read from
 * it; it is closed with 4008 when the kernel refuses its bytes and takes
 * none for RT_OUTBUF_STALL_MS, or when what waits passes
 * RT_OUTBUF_MAX_FACTOR * max_outbuf while the kernel refuses more. */
#define RT_OUTBUF_STALL_MS 10000
#define RT_OUTBUF_MAX_FACTOR 8

/* Bind the listeners (so the caller can print the address and fail early),
 * then start the shard threads. 0, or -1 with *err (static text). */
int rt_start(const rt_config *cfg, const char **err);
/* Start draining (any thread, e.g. from the signal handler loop). */
void rt_drain(void);
/* Wait until every shard has stopped (after rt_drain). */
void rt_join(void);
/* The port actually bound (useful with port 0). */
int rt_bound_port(void);
/* rt_mono_us() when shard's loop last turned (any thread): its tick
 * stamps it every tick_ms, so a stamp much older than that means a shard
 * stuck in one turn. 0: no such shard. */
uint64_t rt_shard_last_turn_us(unsigned shard);

/* TLS on the port (runtime/tls.c). Before rt_start: load a PEM certificate
 * (chain) and its key; from then on every connection speaks TLS (wss://,
 * https://). 0, or -1 with the file and the reason in err. */
int rt_tls_load(const char *cert, const char *key, char *err, size_t cap);
bool rt_tls_on(void);
/* Any thread (SIGHUP): read the same files again into a new context for
 * new connections; existing ones keep theirs. 0 reloaded, 1 no TLS
 * configured, -1 failed (logged; the previous certificate stays). */
int rt_tls_reload(void);
void rt_tls_free(void); /* after rt_join */

/* Metrics of the transport (relaxed sums over shards). */
typedef struct rt_stats {
	uint64_t conns_open;
	uint64_t conns_total;
	uint64_t frames_in;
	uint64_t frames_out;
	uint64_t bytes_out;
	uint64_t writes; /* socket writes: frames_out / writes = coalescing */
	uint64_t writes_short; /* of which the kernel took only part (or none) */
	uint64_t closed_slow;
	uint64_t closed_too_large;
	uint64_t mailbox_msgs;
	uint64_t wakeups;
	uint64_t tls_handshakes;        /* TLS handshakes completed */
	uint64_t tls_handshake_failures; /* failed or timed out */
	uint64_t ring_sends;   /* of writes, those made through io_uring */
	uint64_t ring_submits; /* the io_uring_enter calls that made them */
	uint64_t ring_short;   /* ring sends the kernel took only part of */
	unsigned ring_shards;  /* shards writing through io_uring now */
} rt_stats;
void rt_get_stats(rt_stats *out);

/* internal, shared by the runtime's files */
void rt__mailbox_init(unsigned nshards);
void rt__mailbox_fini(void); /* tests: after every producer stopped */
int rt__mailbox_drain(rt_shard *s, unsigned max);
void rt__mailbox_flush_overflow(rt_shard *s);
bool rt__mailbox_arm(rt_shard *s); /* true: may sleep */
void rt__shard_wake(unsigned dst);

#endif
