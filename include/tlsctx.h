/*
 * tlsctx.h - chatd's own settings on the OpenSSL context that lws creates:
 * the cipher lists, the purpose a client certificate must have, and the
 * verdict on a client certificate.
 *
 * lws 4.1 applies [tls] ciphers without checking the result and, when it
 * asks for client certificates, takes the protocol callback's answer for
 * OpenSSL's: these functions are that answer. The SSL_CTX and the
 * X509_STORE_CTX stay lws' and OpenSSL's; nothing here keeps a pointer.
 */
#ifndef CHATD_TLSCTX_H
#define CHATD_TLSCTX_H

#include <stddef.h>

#include "config.h"

/* Validate [tls] against OpenSSL without listening: the cipher lists must
 * each select something, and tls.ca must hold certificates. 0, or -1 with
 * a one-line reason naming the key in err. No-op without tls.cert. */
int tlsctx_check(const struct config *cfg, char *err, size_t errlen);

/* Apply [tls] to ssl_ctx (an SSL_CTX *): cipher lists, and with tls.ca the
 * "TLS client" purpose for client certificates. 0, or -1 with err set. */
int tlsctx_setup(void *ssl_ctx, const struct config *cfg, char *err, size_t errlen);

/* OpenSSL's verdict on one certificate of a client's chain (store_ctx is
 * the X509_STORE_CTX *, preverify_ok OpenSSL's result). Returns 0 to go
 * on, 1 to refuse the handshake, and then logs why, with the certificate's
 * subject and peer (the client's address, may be NULL). */
int tlsctx_verify_client(void *store_ctx, int preverify_ok, const char *peer);

/* An OpenSSL info event on a connection (SSL_CB_* where, ret): a fatal
 * alert chatd sends (no shared cipher, no or bad client certificate,
 * protocol version) is logged with its description and the peer. */
void tlsctx_log_event(int where, int ret, const char *peer);

/* The SSL_CB_* events tlsctx_log_event wants (vhost ssl_info_event_mask). */
int tlsctx_event_mask(void);

#endif
