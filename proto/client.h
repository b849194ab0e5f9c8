/*
 * pc: a small parley client in C, over plain TCP with its own WebSocket
 * framing (RFC 6455, client side: masked frames). Used by the end-to-end
 * tests (blocking calls with timeouts) and by parley-bench (non-blocking:
 * feed it readable bytes, take whole frames out).
 *
 * Frames that arrive while pc_request() waits for its response are kept, in
 * order, and handed out later by pc_recv(): a test never loses an event
 * because it was waiting for an ack.
 */
#ifndef PARLEY_CLIENT_H
#define PARLEY_CLIENT_H

#include "proto.h"

typedef struct pc_conn pc_conn;

/* Connections made from now on speak TLS (wss://) when on; the server's
 * certificate is NOT verified (tests and benchmarks against self-signed
 * ones). 0 or -1. */
int pc_tls(bool on);

/* Connect to host:port (IPv4 literal or "localhost"), optionally binding the
 * source address src_ip (e.g. "127.0.0.7"; NULL = any), and do the
 * WebSocket handshake on /ws offering subprotocol "parley.v1" (NULL
 * subprotocol: offer none). Blocking; NULL on failure or after timeout_ms. */
pc_conn *pc_connect(const char *host, int port, const char *src_ip,
		    const char *subprotocol, int timeout_ms);
void pc_close(pc_conn *c); /* sends a close frame, closes the socket, frees */
int pc_fd(pc_conn *c);

/* Send one WebSocket message. opcode 2 = binary, 1 = text, 8 = close, 9 =
 * ping. Blocking until written. 0 or -1. */
int pc_send_raw(pc_conn *c, int opcode, const void *data, size_t len);
int pc_send(pc_conn *c, const proto_out *o); /* binary */

/* Receive the next binary message (kept ones first) and decode it into doc.
 * Returns 1 (doc filled; free with proto_doc_free), 0 on timeout, -1 when
 * the connection closed (pc_close_code() then says the code the server sent,
 * or 1006 when it just went away) or the frame did not decode. */
int pc_recv(pc_conn *c, proto_doc *doc, int timeout_ms);
int pc_close_code(const pc_conn *c);

/* Send o (a request carrying rid) and wait for {"t":"res","rid":rid}; other
 * frames are kept for pc_recv(). Returns 1 with the response in res, 0 on
 * timeout, -1 on close. */
int pc_request(pc_conn *c, const proto_out *o, uint64_t rid, proto_doc *res,
	       int timeout_ms);

/* Wait for the response to a request sent before (with pc_send()): lets a
 * caller put several requests on the wire at once and collect their answers
 * in any order. Same results as pc_request(). */
int pc_await(pc_conn *c, uint64_t rid, proto_doc *res, int timeout_ms);

/* Convenience: hello with token (and optional resume); 1 when the server
 * answered ok:true (res filled), 0/-1 as above, -2 when it answered
 * ok:false (res filled). */
int pc_hello(pc_conn *c, const char *token, const char *const *chs,
	     const uint64_t *seqs, unsigned nresume, proto_doc *res,
	     int timeout_ms);

/* Non-blocking use (the bench): put the socket in non-blocking mode, call
 * pc_on_readable() when epoll says so (reads what is there), then take
 * complete messages with pc_next() until it returns 0. pc_next returns 1 and
 * points *data and *len at the payload of the next binary message (valid
 * until the next call into c), 0 when none is complete, -1 when closed. */
/* From now on pc_next() hands out text messages as well as binary ones
 * (the bench speaks NATS' text protocol over WebSocket). */
void pc_take_text(pc_conn *c);
int pc_set_nonblocking(pc_conn *c);
int pc_on_readable(pc_conn *c);
int pc_next(pc_conn *c, const uint8_t **data, size_t *len);
/* Queue bytes to write without blocking; pc_flush() writes what it can.
 * pc_pending() says how many bytes still wait. */
int pc_queue(pc_conn *c, int opcode, const void *data, size_t len);
int pc_flush(pc_conn *c);
size_t pc_pending(const pc_conn *c);

/* The handshake of pc_connect() without blocking, for many connections at
 * once: pc_start() opens the socket (binding src_ip), starts connect() and
 * queues the upgrade request; call pc_start_step() whenever pc_fd() is
 * readable or writable: 1 when the handshake is done (from then on the
 * non-blocking calls above apply, and frames that came with the response
 * wait for pc_next()), 0 while under way, -1 when it failed (pc_close()
 * then). pc_start_wants_write(): whether to wait for writability too. */
pc_conn *pc_start(const char *host, int port, const char *src_ip,
		  const char *subprotocol);
int pc_start_step(pc_conn *c);
bool pc_start_wants_write(const pc_conn *c);

#endif
