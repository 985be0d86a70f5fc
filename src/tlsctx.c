/*
 * tlsctx.c - chatd's TLS policy on top of lws' OpenSSL context.
 */
#include "tlsctx.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "log.h"

/* The most recent OpenSSL error as text, and the queue cleared. */
static const char *tlsctx_ssl_error(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();

	if (!e)
		snprintf(buf, len, "no detail from OpenSSL");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

int tlsctx_setup(void *ssl_ctx, const struct config *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx = ssl_ctx;
	char why[256];

	/* OpenSSL takes an unknown name in a list as long as one entry
	 * matches, and fails only when nothing at all is left. */
	if (!SSL_CTX_set_cipher_list(ctx, cfg->tls_ciphers)) {
		snprintf(err, errlen, "tls.ciphers \"%.200s\": OpenSSL selects no cipher from it (%s)",
			 cfg->tls_ciphers, tlsctx_ssl_error(why, sizeof(why)));
		return -1;
	}
	if (!SSL_CTX_set_ciphersuites(ctx, cfg->tls_ciphersuites)) {
		snprintf(err, errlen, "tls.ciphersuites \"%.200s\": OpenSSL rejects it (%s)",
			 cfg->tls_ciphersuites, tlsctx_ssl_error(why, sizeof(why)));
		return -1;
	}
	/* With no suite, OpenSSL would still pick TLS 1.3 and then fail
	 * every such handshake: offer TLS 1.2 at most instead. */
	if (!cfg->tls_ciphersuites[0] && !SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION)) {
		snprintf(err, errlen, "tls.ciphersuites \"\": cannot turn TLS 1.3 off (%s)",
			 tlsctx_ssl_error(why, sizeof(why)));
		return -1;
	}
	/* A server verifying a client already checks for the TLS client
	 * purpose by default (keyUsage, extendedKeyUsage); say so here so it
	 * does not rest on a default. */
	if (cfg->tls_ca[0] && !SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT)) {
		snprintf(err, errlen, "tls.ca: cannot require the TLS client purpose (%s)",
			 tlsctx_ssl_error(why, sizeof(why)));
		return -1;
	}
	return 0;
}

int tlsctx_check(const struct config *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx;
	char why[256];
	int rc = -1;

	if (!cfg->tls_cert[0])
		return 0;
	ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		snprintf(err, errlen, "tls: cannot create an OpenSSL context (%s)",
			 tlsctx_ssl_error(why, sizeof(why)));
		return -1;
	}
	if (tlsctx_setup(ctx, cfg, err, errlen))
		goto out;
	/* lws only logs a CA file it cannot load, and then refuses every
	 * client: say it at startup instead. */
	if (cfg->tls_ca[0] && !SSL_CTX_load_verify_file(ctx, cfg->tls_ca)) {
		snprintf(err, errlen, "tls.ca %s: no CA certificate could be loaded (%s)",
			 cfg->tls_ca, tlsctx_ssl_error(why, sizeof(why)));
		goto out;
	}
	rc = 0;
out:
	SSL_CTX_free(ctx);
	return rc;
}

int tlsctx_verify_client(void *store_ctx, int preverify_ok, const char *peer)
{
	X509_STORE_CTX *xs = store_ctx;
	X509 *cert;
	char subject[256] = "(none)";
	int e;

	if (preverify_ok)
		return 0;
	cert = X509_STORE_CTX_get_current_cert(xs);
	e = X509_STORE_CTX_get_error(xs);
	/* X509_NAME_oneline escapes what is not printable ASCII. */
	if (cert)
		X509_NAME_oneline(X509_get_subject_name(cert), subject, (int)sizeof(subject));
	log_warn(NULL, "tls: client certificate refused from %s: %s (error %d at depth %d, subject %s)",
		 peer && peer[0] ? peer : "?", X509_verify_cert_error_string(e), e,
		 X509_STORE_CTX_get_error_depth(xs), subject);
	return 1;
}

int tlsctx_event_mask(void)
{
	return SSL_CB_ALERT;
}

void tlsctx_log_event(int where, int ret, const char *peer)
{
	/* Only what chatd sends, only fatal: a close_notify is no news, and
	 * an alert from the client is the client's business. Info, not warn:
	 * scanners fail handshakes all day. */
	const char *desc = SSL_alert_desc_string_long(ret);
	int alert = ret & 0xff;

	if ((where & SSL_CB_WRITE_ALERT) != SSL_CB_WRITE_ALERT || (ret >> 8) != SSL3_AL_FATAL)
		return;
	/* OpenSSL 3.0 has no text for TLS 1.3's certificate_required. */
	if (alert == 116)
		desc = "certificate required (the client sent none)";
	log_info(NULL, "tls: handshake with %s refused: %s (alert %d)", peer && peer[0] ? peer : "?",
		 desc, alert);
}
