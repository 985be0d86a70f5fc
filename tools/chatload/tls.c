/*
 * tls.c - the TLS client context for wss:// targets (OpenSSL).
 *
 * One SSL_CTX per worker process, made after the fork (OpenSSL state is not
 * shared across processes); the parent makes one first only to report a bad
 * --tls-verify file before anything is started. Per connection the worker
 * owns one SSL* (see worker.c).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "chatload.h"

static void tls_err(char *err, size_t errlen, const char *what)
{
	char e[160];

	ERR_error_string_n(ERR_peek_last_error(), e, sizeof(e));
	snprintf(err, errlen, "%s: %s", what, e);
	ERR_clear_error();
}

SSL_CTX *cl_tls_ctx_new(const struct cl_opts *o, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char ip[16];
	FILE *f;

	if (!ctx) {
		tls_err(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* Partial writes: the output buffer is written as far as the socket
	 * takes it, like send(); moving buffer: it may be realloc'd (frames are
	 * appended) between a WANT_WRITE and the retry. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* A server that closes TCP after the WebSocket close handshake without a
	 * close_notify is ending normally here: read it as end of stream. */
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* Fewer read() calls: OpenSSL takes what the socket has, not one record
	 * header and body at a time; worker.c drains what is buffered. */
	SSL_CTX_set_read_ahead(ctx, 1);
	/* Sessions are not resumed: every connection does a full handshake. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (!o->tls_ca[0]) {
		/* loopback benchmarks against a self-signed certificate */
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return ctx;
	}
	f = fopen(o->tls_ca, "r");
	if (!f) {
		snprintf(err, errlen, "%s: cannot read: %s", o->tls_ca, strerror(errno));
		SSL_CTX_free(ctx);
		return NULL;
	}
	fclose(f);
	if (SSL_CTX_load_verify_locations(ctx, o->tls_ca, NULL) != 1) {
		tls_err(err, errlen, o->tls_ca);
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* The chain must lead to the CA file and the certificate must name the
	 * target address (subjectAltName IP). */
	snprintf(ip, sizeof(ip), "%u.%u.%u.%u", o->dst_addr >> 24, (o->dst_addr >> 16) & 255,
		 (o->dst_addr >> 8) & 255, o->dst_addr & 255);
	if (X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx), ip) != 1) {
		tls_err(err, errlen, "X509_VERIFY_PARAM_set1_ip_asc");
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
}

/* Why the last TLS call failed, for first_error; empties the error queue so
 * the next connection's SSL_get_error() is not misled. */
const char *cl_tls_error(int ssl_err)
{
	static char e[160];
	unsigned long code = ERR_peek_last_error();

	if (code)
		ERR_error_string_n(code, e, sizeof(e));
	else if (ssl_err == SSL_ERROR_SYSCALL)
		snprintf(e, sizeof(e), "TLS: connection reset or closed");
	else
		snprintf(e, sizeof(e), "TLS error %d", ssl_err);
	ERR_clear_error();
	return e;
}
