/*
 * auth_impl.h - what auth.c and auth_keys.c share (not a public header).
 */
#ifndef CHATD_AUTH_IMPL_H
#define CHATD_AUTH_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* One verification key: PEM text libjwt takes, the JWKS kid ("" for a PEM
 * file), and a fingerprint (SHA-256 of the DER, first 8 bytes) that lets a
 * reload tell whether the key that verified a live session is still there. */
struct auth_key {
	char kid[128];
	char *pem;            /* owned, NUL-terminated */
	size_t pem_len;
	uint64_t fp;
};

#define AUTH_KEYS_MAX 64

/* Load the public keys of a PEM file (one key) or a JWKS file (up to
 * AUTH_KEYS_MAX keys of the configured algorithm's type). Keys of another
 * type are refused (PEM) or skipped (JWKS, with a warning). Returns the
 * count (>= 1) with *out owned by the caller, or -1 with err set. */
int auth_keys_load_pem(const char *path, enum config_jwt_alg alg, struct auth_key **out,
		       char *err, size_t errlen);
int auth_keys_load_jwks(const char *path, enum config_jwt_alg alg, struct auth_key **out,
			char *err, size_t errlen);
void auth_keys_free(struct auth_key *keys, size_t n);
/* First 8 bytes of SHA-256 of data, as a number. */
uint64_t auth_fingerprint(const void *data, size_t len);

#endif
