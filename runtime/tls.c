/*
 * TLS: the server's certificate and key, as an OpenSSL SSL_CTX that the
 * transport's shards take each new connection's SSL from (transport.c does
 * the handshakes and the encryption on the shard loops).
 *
 * One current context, behind a mutex: a shard takes a reference to it
 * when it accepts (rt__tls_ctx), a reload (SIGHUP) builds a new one from
 * the same files and swaps it in. The old one lives on in the SSL objects
 * made from it (SSL_new holds a reference), so connections that exist keep
 * their session untouched; it is freed with the last of them.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "runtime/log.h"
#include "runtime/rt.h"
#include "runtime/shard.h"

static pthread_mutex_t tls_mu = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX *tls_cur;
static char *tls_cert, *tls_key;

/* ALPN: http/1.1 only (WebSocket runs over HTTP/1.1; no h2 here). */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		   const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char ours[] = "\x08http/1.1";
	unsigned char *sel;

	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in,
				  inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

/* OpenSSL's reason for the last failure, or errno's. */
static void why(char *err, size_t cap, const char *what, const char *file)
{
	unsigned long e = ERR_peek_last_error();
	char es[256];

	if (e)
		ERR_error_string_n(e, es, sizeof(es));
	else
		snprintf(es, sizeof(es), "%s", strerror(errno ? errno : EINVAL));
	snprintf(err, cap, "%s %s: %s", what, file, es);
	ERR_clear_error();
}

/* 0, or -1 with "what FILE: why" when the file cannot be opened. */
static int readable(const char *file, const char *what, char *err, size_t cap)
{
	FILE *f = fopen(file, "r");

	if (!f) {
		snprintf(err, cap, "%s %s: %s", what, file, strerror(errno));
		return -1;
	}
	fclose(f);
	return 0;
}

static SSL_CTX *ctx_build(const char *cert, const char *key, char *err,
			  size_t cap)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	ERR_clear_error();
	errno = 0;
	if (!ctx) {
		why(err, cap, "TLS", "context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
				 SSL_OP_CIPHER_SERVER_PREFERENCE |
				 SSL_OP_NO_RENEGOTIATION |
				 SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* Idle connections hold no read or write buffer (about 34 KiB each
	 * otherwise); partial writes and a moving retry buffer fit the
	 * transport's way of writing (what the kernel refuses is kept and
	 * retried from a copy). */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS |
			      SSL_MODE_ENABLE_PARTIAL_WRITE |
			      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
	if (readable(cert, "certificate", err, cap) ||
	    readable(key, "key", err, cap))
		goto fail;
	errno = 0;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		why(err, cap, "certificate", cert);
		goto fail;
	}
	errno = 0;
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		if (ERR_GET_REASON(ERR_peek_last_error()) ==
		    X509_R_KEY_VALUES_MISMATCH)
			why(err, cap, "key does not match the certificate", key);
		else
			why(err, cap, "key", key);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		why(err, cap, "key does not match the certificate", key);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

int rt_tls_load(const char *cert, const char *key, char *err, size_t cap)
{
	SSL_CTX *ctx = ctx_build(cert, key, err, cap);

	if (!ctx)
		return -1;
	pthread_mutex_lock(&tls_mu);
	if (tls_cur)
		SSL_CTX_free(tls_cur);
	tls_cur = ctx;
	free(tls_cert);
	free(tls_key);
	tls_cert = strdup(cert);
	tls_key = strdup(key);
	pthread_mutex_unlock(&tls_mu);
	return 0;
}

bool rt_tls_on(void)
{
	bool on;

	pthread_mutex_lock(&tls_mu);
	on = tls_cur != NULL;
	pthread_mutex_unlock(&tls_mu);
	return on;
}

int rt_tls_reload(void)
{
	char err[512];
	SSL_CTX *ctx, *old;
	char *cert, *key;

	pthread_mutex_lock(&tls_mu);
	cert = tls_cert ? strdup(tls_cert) : NULL;
	key = tls_key ? strdup(tls_key) : NULL;
	pthread_mutex_unlock(&tls_mu);
	if (!cert || !key) {
		free(cert);
		free(key);
		plog(PL_INFO, "tls", "SIGHUP: no certificate configured, "
		     "nothing to reload");
		return 1;
	}
	ctx = ctx_build(cert, key, err, sizeof(err));
	if (!ctx) {
		plog(PL_ERROR, "tls", "reload failed, still serving the "
		     "previous certificate: %s", err);
		free(cert);
		free(key);
		return -1;
	}
	pthread_mutex_lock(&tls_mu);
	old = tls_cur;
	tls_cur = ctx;
	pthread_mutex_unlock(&tls_mu);
	SSL_CTX_free(old); /* open connections still hold it */
	plog(PL_INFO, "tls", "reloaded certificate %s and key %s: new "
	     "connections use them", cert, key);
	free(cert);
	free(key);
	return 0;
}

SSL_CTX *rt__tls_ctx(void)
{
	SSL_CTX *ctx;

	pthread_mutex_lock(&tls_mu);
	ctx = tls_cur;
	if (ctx)
		SSL_CTX_up_ref(ctx);
	pthread_mutex_unlock(&tls_mu);
	return ctx;
}

void rt_tls_free(void)
{
	pthread_mutex_lock(&tls_mu);
	SSL_CTX_free(tls_cur);
	tls_cur = NULL;
	free(tls_cert);
	free(tls_key);
	tls_cert = tls_key = NULL;
	pthread_mutex_unlock(&tls_mu);
}
