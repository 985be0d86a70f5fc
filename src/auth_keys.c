/*
 * auth_keys.c - public keys for RS256/ES256 tokens, from a PEM file or a
 * JWKS file (RFC 7517), read with OpenSSL and cJSON. Every key is handed
 * to libjwt as PEM, so a JWK (n/e, or crv/x/y) is rebuilt as an EVP_PKEY
 * and written out again. Files are read at start and on SIGHUP only: no
 * network fetch, nothing on the loop per token.
 */
#include "auth_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "log.h"

/* A key file larger than this is not a key file. */
#define AUTH_KEYFILE_MAX (1 << 20)

uint64_t auth_fingerprint(const void *data, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	uint64_t fp = 0;
	int i;

	if (!EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) || n < 8)
		return 0;
	for (i = 0; i < 8; i++)
		fp = fp << 8 | md[i];
	return fp;
}

void auth_keys_free(struct auth_key *keys, size_t n)
{
	size_t i;

	for (i = 0; keys && i < n; i++)
		free(keys[i].pem);
	free(keys);
}

static char *auth_read_file(const char *path, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t n;

	if (!f) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		return NULL;
	}
	buf = malloc(AUTH_KEYFILE_MAX + 1);
	n = buf ? fread(buf, 1, AUTH_KEYFILE_MAX + 1, f) : 0;
	if (!buf || ferror(f) || n > AUTH_KEYFILE_MAX) {
		snprintf(err, errlen, "%s: %s", path, !buf ? "out of memory"
			 : n > AUTH_KEYFILE_MAX ? "larger than 1 MiB" : "cannot read");
		free(buf);
		fclose(f);
		return NULL;
	}
	fclose(f);
	buf[n] = '\0';
	*len = n;
	return buf;
}

/* Is pkey of the type alg verifies? RS256: RSA of at least 2048 bits
 * (RFC 7518 3.3); ES256: EC on P-256. */
static const char *auth_key_mismatch(EVP_PKEY *pkey, enum config_jwt_alg alg)
{
	char group[64] = "";
	size_t glen = 0;

	if (alg == CONFIG_ALG_RS256) {
		if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA)
			return "not an RSA key (auth.algorithm is RS256)";
		if (EVP_PKEY_get_bits(pkey) < 2048)
			return "RSA key shorter than 2048 bits";
		return NULL;
	}
	if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC)
		return "not an EC key (auth.algorithm is ES256)";
	if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &glen) ||
	    strcmp(group, "prime256v1") != 0)
		return "EC key not on curve P-256 (ES256)";
	return NULL;
}

/* Fill k from pkey: canonical PEM (SubjectPublicKeyInfo) and fingerprint. */
static int auth_key_set(struct auth_key *k, EVP_PKEY *pkey)
{
	unsigned char *der = NULL;
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long n;
	int dlen;

	if (!bio || !PEM_write_bio_PUBKEY(bio, pkey) || (n = BIO_get_mem_data(bio, &data)) <= 0 ||
	    !(k->pem = malloc((size_t)n + 1))) {
		BIO_free(bio);
		return -1;
	}
	memcpy(k->pem, data, (size_t)n);
	k->pem[n] = '\0';
	k->pem_len = (size_t)n;
	BIO_free(bio);
	if ((dlen = i2d_PUBKEY(pkey, &der)) <= 0)
		return -1;
	k->fp = auth_fingerprint(der, (size_t)dlen);
	OPENSSL_free(der);
	return 0;
}

int auth_keys_load_pem(const char *path, enum config_jwt_alg alg, struct auth_key **out,
		       char *err, size_t errlen)
{
	size_t len;
	char *text = auth_read_file(path, &len, err, errlen);
	EVP_PKEY *pkey = NULL;
	const char *why;
	BIO *bio;
	int rc = -1;

	if (!text)
		return -1;
	bio = BIO_new_mem_buf(text, (int)len);
	if (bio)
		pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	free(text);
	if (!pkey) {
		snprintf(err, errlen, "auth.public_key_file %s: no PEM public key (BEGIN PUBLIC KEY) in it", path);
		return -1;
	}
	if ((why = auth_key_mismatch(pkey, alg))) {
		snprintf(err, errlen, "auth.public_key_file %s: %s", path, why);
	} else if (!(*out = calloc(1, sizeof(**out))) || auth_key_set(*out, pkey)) {
		auth_keys_free(*out, 1);
		*out = NULL;
		snprintf(err, errlen, "auth.public_key_file %s: out of memory", path);
	} else {
		rc = 1;
	}
	EVP_PKEY_free(pkey);
	return rc;
}

/* A base64url member of a JWK, decoded; NULL if absent or not base64url. */
static unsigned char *auth_b64url(const cJSON *jwk, const char *name, size_t *outlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(jwk, name);
	unsigned char *in, *out;
	size_t len, padded, i;
	int n;

	if (!cJSON_IsString(v) || !(len = strlen(v->valuestring)) || len > 4096 || len % 4 == 1)
		return NULL;
	padded = (len + 3) / 4 * 4;
	in = malloc(padded);
	out = malloc(padded);
	if (!in || !out)
		goto fail;
	for (i = 0; i < padded; i++) {
		char c = i < len ? v->valuestring[i] : '=';
		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		else if (c == '+' || c == '/' || (c == '=' && i < len))
			goto fail;
		in[i] = (unsigned char)c;
	}
	n = EVP_DecodeBlock(out, in, (int)padded);
	if (n < 0 || (n -= (int)(padded - len)) <= 0)
		goto fail;
	free(in);
	*outlen = (size_t)n;
	return out;
fail:
	free(in);
	free(out);
	return NULL;
}

/* An EVP_PKEY from a JWK of type RSA (n, e) or EC (crv P-256, x, y). */
static EVP_PKEY *auth_jwk_pkey(const cJSON *jwk, enum config_jwt_alg alg)
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	unsigned char *a = NULL, *b = NULL, pub[65];
	BIGNUM *n = NULL, *e = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	size_t alen = 0, blen = 0;
	const cJSON *crv = cJSON_GetObjectItemCaseSensitive(jwk, "crv");
	int ok = 0;

	if (!bld)
		return NULL;
	if (alg == CONFIG_ALG_RS256) {
		if (!(a = auth_b64url(jwk, "n", &alen)) || !(b = auth_b64url(jwk, "e", &blen)) ||
		    !(n = BN_bin2bn(a, (int)alen, NULL)) || !(e = BN_bin2bn(b, (int)blen, NULL)))
			goto out;
		ok = OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
		     OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e);
		ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	} else {
		if (!cJSON_IsString(crv) || strcmp(crv->valuestring, "P-256") != 0 ||
		    !(a = auth_b64url(jwk, "x", &alen)) || !(b = auth_b64url(jwk, "y", &blen)) ||
		    alen != 32 || blen != 32)
			goto out;
		pub[0] = 4;   /* uncompressed point */
		memcpy(pub + 1, a, 32);
		memcpy(pub + 33, b, 32);
		ok = OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) &&
		     OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub));
		ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	}
	if (!ok || !ctx || !(params = OSSL_PARAM_BLD_to_param(bld)) || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		pkey = NULL;
out:
	OSSL_PARAM_free(params);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	free(a);
	free(b);
	return pkey;
}

/* One JWK into k: 1 taken, 0 skipped (another type or use), -1 broken. */
static int auth_jwk(const cJSON *jwk, enum config_jwt_alg alg, struct auth_key *k, const char *path)
{
	const cJSON *kty = cJSON_GetObjectItemCaseSensitive(jwk, "kty");
	const cJSON *kalg = cJSON_GetObjectItemCaseSensitive(jwk, "alg");
	const cJSON *use = cJSON_GetObjectItemCaseSensitive(jwk, "use");
	const cJSON *kid = cJSON_GetObjectItemCaseSensitive(jwk, "kid");
	const char *want = alg == CONFIG_ALG_RS256 ? "RSA" : "EC";
	EVP_PKEY *pkey;
	const char *why;
	int rc;

	if (!cJSON_IsObject(jwk) || !cJSON_IsString(kty))
		return -1;
	if (strcmp(kty->valuestring, want) != 0 ||
	    (cJSON_IsString(kalg) && strcmp(kalg->valuestring, config_jwt_alg_name(alg)) != 0) ||
	    (cJSON_IsString(use) && strcmp(use->valuestring, "sig") != 0)) {
		log_warn(NULL, "auth.jwks_file %s: skipping a key that is not for %s signatures", path,
			 config_jwt_alg_name(alg));
		return 0;
	}
	if (kid && (!cJSON_IsString(kid) || strlen(kid->valuestring) >= sizeof(k->kid)))
		return -1;
	if (!(pkey = auth_jwk_pkey(jwk, alg)))
		return -1;
	why = auth_key_mismatch(pkey, alg);
	rc = why || auth_key_set(k, pkey) ? -1 : 1;
	EVP_PKEY_free(pkey);
	if (rc == 1 && kid)
		strcpy(k->kid, kid->valuestring);
	return rc;
}

int auth_keys_load_jwks(const char *path, enum config_jwt_alg alg, struct auth_key **out,
			char *err, size_t errlen)
{
	size_t len, n = 0;
	char *text = auth_read_file(path, &len, err, errlen);
	const cJSON *keys, *jwk;
	struct auth_key *v = NULL;
	cJSON *doc;
	int i = 0, r;

	if (!text)
		return -1;
	doc = cJSON_ParseWithLength(text, len);
	free(text);
	keys = cJSON_GetObjectItemCaseSensitive(doc, "keys");
	if (!cJSON_IsArray(keys)) {
		snprintf(err, errlen, "auth.jwks_file %s: not a JWKS ({\"keys\": [...]})", path);
		goto fail;
	}
	if (!(v = calloc(AUTH_KEYS_MAX, sizeof(*v)))) {
		snprintf(err, errlen, "auth.jwks_file %s: out of memory", path);
		goto fail;
	}
	cJSON_ArrayForEach(jwk, keys) {
		i++;
		if (n == AUTH_KEYS_MAX) {
			snprintf(err, errlen, "auth.jwks_file %s: more than %d keys", path, AUTH_KEYS_MAX);
			goto fail;
		}
		if ((r = auth_jwk(jwk, alg, &v[n], path)) < 0) {
			snprintf(err, errlen, "auth.jwks_file %s: key %d is not a valid %s public key", path, i,
				 config_jwt_alg_name(alg));
			goto fail;
		}
		n += (size_t)r;
	}
	if (!n) {
		snprintf(err, errlen, "auth.jwks_file %s: no %s key in it", path, config_jwt_alg_name(alg));
		goto fail;
	}
	cJSON_Delete(doc);
	*out = v;
	return (int)n;
fail:
	auth_keys_free(v, AUTH_KEYS_MAX);
	cJSON_Delete(doc);
	return -1;
}
