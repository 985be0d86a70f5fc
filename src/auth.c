/*
 * auth.c - JWTs. The algorithm is the configuration's (auth.algorithm),
 * never the token's: the header is read first, with cJSON, and must name
 * exactly that algorithm before libjwt sees the token with the one key
 * that algorithm uses (an HS256 token "signed" with an RSA public key as
 * its secret, or alg "none", never reaches a verifier that would take it).
 * libjwt then checks the signature. Everything else chatd reads from the
 * signed bytes itself: libjwt (jansson) folds duplicate keys, matches "alg"
 * without case, and turns a time claim of the wrong JSON type into 0. So no
 * member may appear twice, no "crit", and exp/nbf/iat must be JSON numbers
 * (fractions allowed, RFC 7519 NumericDate).
 */
#include "auth.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <jwt.h>
#include <openssl/evp.h>

#include "auth_impl.h"
#include "log.h"

struct auth {
	enum config_jwt_alg alg;
	unsigned char *secret;        /* HS256 */
	size_t len;
	uint64_t secret_fp;
	struct auth_key *keys;        /* RS256/ES256 */
	size_t nkeys;
	int jwks;                     /* keys came from a JWKS: kid selects */
	double leeway, refresh_window;
};

static struct auth *auth_new_keys(const struct config *cfg, char *err, size_t errlen)
{
	struct auth *a = calloc(1, sizeof(*a));
	int n;

	if (!a) {
		snprintf(err, errlen, "auth: out of memory");
		return NULL;
	}
	a->alg = cfg->jwt_algorithm;
	a->jwks = cfg->jwt_jwks_file[0] != '\0';
	n = a->jwks ? auth_keys_load_jwks(cfg->jwt_jwks_file, a->alg, &a->keys, err, errlen)
		    : auth_keys_load_pem(cfg->jwt_public_key_file, a->alg, &a->keys, err, errlen);
	if (n < 0) {
		free(a);
		return NULL;
	}
	a->nkeys = (size_t)n;
	a->leeway = cfg->jwt_leeway;
	a->refresh_window = cfg->refresh_window;
	return a;
}

struct auth *auth_new(const struct config *cfg, char *err, size_t errlen)
{
	struct auth *a;
	char *secret, warn[512];
	size_t len = 0;

	if (cfg->auth_mode != CONFIG_AUTH_JWT)
		return NULL;
	if (cfg->jwt_algorithm != CONFIG_ALG_HS256)
		return auth_new_keys(cfg, err, errlen);
	secret = config_jwt_secret(cfg, &len, warn, sizeof(warn), err, errlen);
	if (!secret)
		return NULL;
	if (warn[0])
		log_warn(NULL, "%s", warn);
	a = calloc(1, sizeof(*a));
	if (!a) {
		memset(secret, 0, len);
		free(secret);
		snprintf(err, errlen, "auth: out of memory");
		return NULL;
	}
	a->secret = (unsigned char *)secret;
	a->len = len;
	a->secret_fp = auth_fingerprint(secret, len);
	a->leeway = cfg->jwt_leeway;
	a->refresh_window = cfg->refresh_window;
	return a;
}

void auth_free(struct auth *a)
{
	if (!a)
		return;
	if (a->secret)
		memset(a->secret, 0, a->len);
	free(a->secret);
	auth_keys_free(a->keys, a->nkeys);
	free(a);
}

static void auth_patterns_free(char **v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void auth_identity_free(struct auth_identity *id)
{
	if (!id)
		return;
	auth_patterns_free(id->rooms, id->nrooms);
	auth_patterns_free(id->owner, id->nowner);
	auth_patterns_free(id->moderator, id->nmoderator);
	free(id);
}

/* An array of room names or "prefix*" patterns (claim rooms, roles.*). */
static int auth_patterns(const cJSON *arr, const char *claim, char ***out, size_t *count,
			 char *why, size_t whylen)
{
	const cJSON *e;
	size_t n = 0;

	if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) > 1024) {
		snprintf(why, whylen, "claim %s must be an array of strings", claim);
		return -1;
	}
	*out = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof(char *));
	if (!*out) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	cJSON_ArrayForEach(e, arr) {
		if (!cJSON_IsString(e) || !e->valuestring[0] || strlen(e->valuestring) > PROTO_ROOM_MAX + 1 ||
		    !((*out)[n] = strdup(e->valuestring))) {
			*count = n;
			snprintf(why, whylen, "claim %s must be an array of room names", claim);
			return -1;
		}
		n++;
	}
	*count = n;
	return 0;
}

/* Claim "rooms": absent means every room. */
static int auth_rooms(const cJSON *arr, struct auth_identity *id, char *why, size_t whylen)
{
	return arr ? auth_patterns(arr, "rooms", &id->rooms, &id->nrooms, why, whylen) : 0;
}

/* Claim "roles": {"owner": [patterns], "moderator": [patterns]}. */
static int auth_roles(const cJSON *obj, struct auth_identity *id, char *why, size_t whylen)
{
	const cJSON *e;

	if (!obj)
		return 0;
	if (!cJSON_IsObject(obj)) {
		snprintf(why, whylen, "claim roles must be an object {\"owner\": [...], \"moderator\": [...]}");
		return -1;
	}
	cJSON_ArrayForEach(e, obj) {
		int rc;
		if (strcmp(e->string, "owner") == 0 && !id->owner)
			rc = auth_patterns(e, "roles.owner", &id->owner, &id->nowner, why, whylen);
		else if (strcmp(e->string, "moderator") == 0 && !id->moderator)
			rc = auth_patterns(e, "roles.moderator", &id->moderator, &id->nmoderator, why, whylen);
		else if (strcmp(e->string, "member") == 0)
			rc = 0;     /* everyone is a member: nothing to record */
		else {
			snprintf(why, whylen, "claim roles: unknown role (owner, moderator, member)");
			rc = -1;
		}
		if (rc)
			return -1;
	}
	return 0;
}

/* One base64url segment of a token (no padding, as RFC 7515 writes it)
 * parsed as a JSON object; NULL if it is anything else. */
static cJSON *auth_segment(const char *seg, size_t len)
{
	unsigned char *buf;
	cJSON *obj = NULL;
	size_t i, padded = (len + 3) / 4 * 4;
	int n;

	if (len == 0 || len % 4 == 1 || len > 65536 || !(buf = malloc(padded * 2 + 1)))
		return NULL;
	for (i = 0; i < padded; i++) {
		char ch = i < len ? seg[i] : '=';
		if (ch == '-')
			ch = '+';
		else if (ch == '_')
			ch = '/';
		else if (ch == '+' || ch == '/' || (ch == '=' && i < len))
			goto out;  /* not base64url */
		buf[i] = (unsigned char)ch;
	}
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	n = EVP_DecodeBlock(buf + padded, buf, (int)padded);
	if (n >= 0 && (n -= (int)(padded - len)) >= 0) {
		obj = cJSON_ParseWithLength((const char *)buf + padded, (size_t)n);
		if (obj && !cJSON_IsObject(obj)) {
			cJSON_Delete(obj);
			obj = NULL;
		}
	}
out:
	free(buf);
	return obj;
}

static int auth_cmp_names(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* A member that appears twice: NULL if none (*oom set on failure). JSON
 * parsers disagree on which one wins, so a signed token must not leave it
 * open. Sorted, not pairwise: a hello frame can hold thousands of keys. */
static const char *auth_duplicate(const cJSON *obj, int *oom)
{
	const char *dup = NULL, **names;
	const cJSON *e;
	size_t n = 0, i;

	*oom = 0;
	if (!(names = malloc(((size_t)cJSON_GetArraySize(obj) + 1) * sizeof(*names)))) {
		*oom = 1;
		return NULL;
	}
	for (e = obj->child; e; e = e->next)
		names[n++] = e->string;
	qsort(names, n, sizeof(*names), auth_cmp_names);
	for (i = 1; i < n && !dup; i++)
		if (strcmp(names[i - 1], names[i]) == 0)
			dup = names[i];
	free(names);
	return dup;
}

/* "header parameter"/"claim" what: -1 with why set if a member repeats. */
static int auth_unique(const cJSON *obj, const char *what, char *why, size_t whylen)
{
	int oom;
	const char *dup = auth_duplicate(obj, &oom);

	if (oom)
		snprintf(why, whylen, "out of memory");
	else if (dup)   /* the name is the sender's: echoed only when plain */
		snprintf(why, whylen, "invalid token: %s %s appears twice", what,
			 proto_valid_name(dup, strlen(dup)) ? dup : "(a name)");
	return oom || dup ? -1 : 0;
}

/* A NumericDate claim: 0 if absent, 1 with *out set if a finite number,
 * -1 with why set for any other JSON type. */
static int auth_time_claim(const cJSON *payload, const char *claim, double *out,
			   char *why, size_t whylen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(payload, claim);

	if (!v)
		return 0;
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
		snprintf(why, whylen, "invalid token: claim %s must be a number (NumericDate)", claim);
		return -1;
	}
	*out = v->valuedouble;
	return 1;
}

/* The header: exactly the configured "alg" plus harmless members. chatd
 * knows no header extension, so any "crit" is refused (RFC 7515 4.1.11). */
static int auth_check_header(const struct auth *a, const cJSON *hdr, char *why, size_t whylen)
{
	const cJSON *alg = cJSON_GetObjectItemCaseSensitive(hdr, "alg");
	const char *want = config_jwt_alg_name(a->alg);

	if (auth_unique(hdr, "header parameter", why, whylen))
		return -1;
	if (!cJSON_IsString(alg) || strcmp(alg->valuestring, want) != 0) {
		snprintf(why, whylen, "invalid token: alg must be %s", want);
		return -1;
	}
	if (cJSON_GetObjectItemCaseSensitive(hdr, "crit")) {
		snprintf(why, whylen, "invalid token: unsupported critical header (crit)");
		return -1;
	}
	return 0;
}

static int auth_check_claims(const struct auth *a, const cJSON *payload, double now,
			     double *exp, char *why, size_t whylen)
{
	double t;
	int r;

	if (auth_unique(payload, "claim", why, whylen))
		return -1;
	if ((r = auth_time_claim(payload, "exp", &t, why, whylen)) < 0)
		return -1;
	if (r == 1 && now > t + a->leeway) {
		snprintf(why, whylen, "token expired");
		return -1;
	}
	*exp = r == 1 ? t : 0;
	if ((r = auth_time_claim(payload, "nbf", &t, why, whylen)) < 0)
		return -1;
	if (r == 1 && now + a->leeway < t) {
		snprintf(why, whylen, "token not valid yet");
		return -1;
	}
	/* iat is informational, but a wrong type is still a broken token. */
	return auth_time_claim(payload, "iat", &t, why, whylen) < 0 ? -1 : 0;
}

/* The identity a verified payload names. */
static struct auth_identity *auth_identity(const cJSON *payload, char *why, size_t whylen)
{
	const cJSON *sub = cJSON_GetObjectItemCaseSensitive(payload, "sub");
	struct auth_identity *id;

	if (!cJSON_IsString(sub) || !proto_valid_name(sub->valuestring, strlen(sub->valuestring))) {
		snprintf(why, whylen, "claim sub must be a name of 1..32 bytes of [A-Za-z0-9_.-]");
		return NULL;
	}
	id = calloc(1, sizeof(*id));
	if (!id) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	strcpy(id->name, sub->valuestring);
	if (auth_rooms(cJSON_GetObjectItemCaseSensitive(payload, "rooms"), id, why, whylen) ||
	    auth_roles(cJSON_GetObjectItemCaseSensitive(payload, "roles"), id, why, whylen)) {
		auth_identity_free(id);
		return NULL;
	}
	return id;
}

/* The key for a token whose header is hdr: the secret (HS256), the PEM
 * key, or the JWKS key its "kid" names (none needed with a single key).
 * NULL with why set when no key fits. */
static const void *auth_pick_key(const struct auth *a, const cJSON *hdr, int *keylen,
				 uint64_t *fp, char *why, size_t whylen)
{
	const cJSON *kid = cJSON_GetObjectItemCaseSensitive(hdr, "kid");
	size_t i;

	if (a->alg == CONFIG_ALG_HS256) {
		*keylen = (int)a->len;
		*fp = a->secret_fp;
		return a->secret;
	}
	if (kid && !cJSON_IsString(kid)) {
		snprintf(why, whylen, "invalid token: kid must be a string");
		return NULL;
	}
	for (i = 0; i < a->nkeys; i++) {
		if (kid && a->jwks ? strcmp(a->keys[i].kid, kid->valuestring) == 0 : a->nkeys == 1) {
			*keylen = (int)a->keys[i].pem_len;
			*fp = a->keys[i].fp;
			return a->keys[i].pem;
		}
	}
	snprintf(why, whylen, kid ? "invalid token: unknown kid" : "invalid token: kid required (several keys)");
	return NULL;
}

/* Split tok at its dots and parse header and payload; -1 if malformed. */
static int auth_split(const char *tok, cJSON **hdr, cJSON **payload)
{
	const char *dot1 = strchr(tok, '.'), *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;

	*hdr = *payload = NULL;
	if (!dot2 || strchr(dot2 + 1, '.') || !(*hdr = auth_segment(tok, (size_t)(dot1 - tok))) ||
	    !(*payload = auth_segment(dot1 + 1, (size_t)(dot2 - dot1 - 1))))
		return -1;
	return 0;
}

struct auth_identity *auth_verify(const struct auth *a, const char *token, size_t len,
				  double now, char *why, size_t whylen)
{
	struct auth_identity *id = NULL;
	cJSON *hdr = NULL, *payload = NULL;
	const void *key;
	jwt_t *jwt = NULL;
	uint64_t fp = 0;
	double exp = 0;
	char *tok;
	int r, keylen = 0;

	if (!a) {
		snprintf(why, whylen, "token authentication is not enabled");
		return NULL;
	}
	tok = strndup(token, len);
	if (!tok) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	/* The signed bytes first: the header decides nothing until its alg is
	 * the pinned one, and only then is a key picked for it. */
	if (auth_split(tok, &hdr, &payload)) {
		snprintf(why, whylen, "invalid token (malformed)");
		goto out;
	}
	if (auth_check_header(a, hdr, why, whylen) ||
	    !(key = auth_pick_key(a, hdr, &keylen, &fp, why, whylen)))
		goto out;
	r = jwt_decode(&jwt, tok, key, keylen);
	if (!r && jwt && jwt_get_alg(jwt) != (a->alg == CONFIG_ALG_HS256 ? JWT_ALG_HS256
					      : a->alg == CONFIG_ALG_RS256 ? JWT_ALG_RS256 : JWT_ALG_ES256))
		r = -2;
	jwt_free(jwt);
	if (r || !jwt) {
		snprintf(why, whylen, "invalid token (malformed or bad signature)");
		goto out;
	}
	if (auth_check_claims(a, payload, now, &exp, why, whylen))
		goto out;
	if ((id = auth_identity(payload, why, whylen))) {
		id->exp = exp;
		id->key_fp = fp;
	}
out:
	cJSON_Delete(hdr);
	cJSON_Delete(payload);
	free(tok);
	return id;
}

static int auth_match(char *const *v, size_t n, const char *room, size_t len)
{
	size_t i;

	for (i = 0; i < n; i++) {
		const char *p = v[i];
		size_t k = strlen(p);
		if (k && p[k - 1] == '*') {
			if (len >= k - 1 && memcmp(room, p, k - 1) == 0)
				return 1;
		} else if (k == len && memcmp(room, p, len) == 0) {
			return 1;
		}
	}
	return 0;
}

int auth_room_allowed(const struct auth_identity *id, const char *room, size_t len)
{
	return !id || !id->rooms || auth_match(id->rooms, id->nrooms, room, len);
}

int auth_room_listed(const struct auth_identity *id, const char *room, size_t len)
{
	return id && id->rooms && auth_match(id->rooms, id->nrooms, room, len);
}

enum auth_role auth_token_role(const struct auth_identity *id, const char *room, size_t len)
{
	if (!id)
		return AUTH_ROLE_MEMBER;
	if (auth_match(id->owner, id->nowner, room, len))
		return AUTH_ROLE_OWNER;
	if (auth_match(id->moderator, id->nmoderator, room, len))
		return AUTH_ROLE_MODERATOR;
	return AUTH_ROLE_MEMBER;
}

static const char *const auth_role_names[] = { "member", "moderator", "owner" };

const char *auth_role_name(enum auth_role role)
{
	return (unsigned)role < 3 ? auth_role_names[role] : "member";
}

int auth_role_parse(const char *s, size_t len, enum auth_role *role)
{
	int i;

	for (i = 0; i < 3; i++)
		if (strlen(auth_role_names[i]) == len && memcmp(s, auth_role_names[i], len) == 0) {
			*role = (enum auth_role)i;
			return 0;
		}
	return -1;
}

int auth_key_accepted(const struct auth *a, uint64_t fp)
{
	size_t i;

	if (!a)
		return 0;
	if (a->alg == CONFIG_ALG_HS256)
		return a->secret_fp == fp;
	for (i = 0; i < a->nkeys; i++)
		if (a->keys[i].fp == fp)
			return 1;
	return 0;
}

double auth_refresh_window(const struct auth *a)
{
	return a ? a->refresh_window : 0;
}

double auth_leeway(const struct auth *a)
{
	return a ? a->leeway : 0;
}
