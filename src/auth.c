/*
 * auth.c - HS256 JWTs. libjwt checks the signature for the algorithm the
 * token names. Everything else chatd reads from the signed bytes itself,
 * with cJSON: libjwt (jansson) folds duplicate keys, matches "alg" without
 * case, and turns a time claim of the wrong JSON type into 0. So the header
 * must say exactly "alg":"HS256" with no "crit", no member may appear
 * twice, and exp/nbf/iat must be JSON numbers (fractions allowed, RFC 7519
 * NumericDate).
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

#include "log.h"

struct auth {
	unsigned char *secret;
	size_t len;
	double leeway;
};

struct auth *auth_new(const struct config *cfg, char *err, size_t errlen)
{
	struct auth *a;
	char *secret, warn[512];
	size_t len = 0;

	if (cfg->auth_mode != CONFIG_AUTH_JWT)
		return NULL;
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
	a->leeway = cfg->jwt_leeway;
	return a;
}

void auth_free(struct auth *a)
{
	if (!a)
		return;
	memset(a->secret, 0, a->len);
	free(a->secret);
	free(a);
}

void auth_identity_free(struct auth_identity *id)
{
	size_t i;

	if (!id)
		return;
	for (i = 0; i < id->nrooms; i++)
		free(id->rooms[i]);
	free(id->rooms);
	free(id);
}

/* Claim "rooms": an array of room names or "prefix*" patterns. */
static int auth_rooms(const cJSON *arr, struct auth_identity *id, char *why, size_t whylen)
{
	const cJSON *e;
	size_t n = 0;

	if (!arr)
		return 0;          /* no claim: every room */
	if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) > 1024) {
		snprintf(why, whylen, "claim rooms must be an array of strings");
		return -1;
	}
	id->rooms = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof(char *));
	if (!id->rooms) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	cJSON_ArrayForEach(e, arr) {
		if (!cJSON_IsString(e) || !e->valuestring[0] || strlen(e->valuestring) > PROTO_ROOM_MAX + 1 ||
		    !(id->rooms[n] = strdup(e->valuestring))) {
			id->nrooms = n;
			snprintf(why, whylen, "claim rooms must be an array of room names");
			return -1;
		}
		n++;
	}
	id->nrooms = n;
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

/* The header: exactly {"alg":"HS256"} plus harmless members. chatd knows
 * no header extension, so any "crit" is refused (RFC 7515 4.1.11). */
static int auth_check_header(const cJSON *hdr, char *why, size_t whylen)
{
	const cJSON *alg = cJSON_GetObjectItemCaseSensitive(hdr, "alg");

	if (auth_unique(hdr, "header parameter", why, whylen))
		return -1;
	if (!cJSON_IsString(alg) || strcmp(alg->valuestring, "HS256") != 0) {
		snprintf(why, whylen, "invalid token: alg must be HS256");
		return -1;
	}
	if (cJSON_GetObjectItemCaseSensitive(hdr, "crit")) {
		snprintf(why, whylen, "invalid token: unsupported critical header (crit)");
		return -1;
	}
	return 0;
}

static int auth_check_claims(const struct auth *a, const cJSON *payload, double now,
			     char *why, size_t whylen)
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
	if (auth_rooms(cJSON_GetObjectItemCaseSensitive(payload, "rooms"), id, why, whylen)) {
		auth_identity_free(id);
		return NULL;
	}
	return id;
}

struct auth_identity *auth_verify(const struct auth *a, const char *token, size_t len,
				  double now, char *why, size_t whylen)
{
	struct auth_identity *id = NULL;
	cJSON *hdr = NULL, *payload = NULL;
	const char *dot1, *dot2;
	jwt_t *jwt = NULL;
	char *tok;
	int r;

	if (!a) {
		snprintf(why, whylen, "token authentication is not enabled");
		return NULL;
	}
	tok = strndup(token, len);
	if (!tok) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	r = jwt_decode(&jwt, tok, a->secret, (int)a->len);
	if (!r && jwt && jwt_get_alg(jwt) != JWT_ALG_HS256)
		r = -2;
	jwt_free(jwt);
	if (r || !jwt) {
		snprintf(why, whylen, r == -2 ? "invalid token: alg must be HS256"
					      : "invalid token (malformed or bad signature)");
		goto out;
	}
	/* The signature covers these bytes: read them, not libjwt's view. */
	dot1 = strchr(tok, '.');
	dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	if (!dot2 || !(hdr = auth_segment(tok, (size_t)(dot1 - tok))) ||
	    !(payload = auth_segment(dot1 + 1, (size_t)(dot2 - dot1 - 1)))) {
		snprintf(why, whylen, "invalid token (malformed)");
		goto out;
	}
	if (auth_check_header(hdr, why, whylen) || auth_check_claims(a, payload, now, why, whylen))
		goto out;
	id = auth_identity(payload, why, whylen);
out:
	cJSON_Delete(hdr);
	cJSON_Delete(payload);
	free(tok);
	return id;
}

int auth_room_allowed(const struct auth_identity *id, const char *room, size_t len)
{
	size_t i;

	if (!id || !id->rooms)
		return 1;
	for (i = 0; i < id->nrooms; i++) {
		const char *p = id->rooms[i];
		size_t n = strlen(p);
		if (n && p[n - 1] == '*') {
			if (len >= n - 1 && memcmp(room, p, n - 1) == 0)
				return 1;
		} else if (n == len && memcmp(room, p, len) == 0) {
			return 1;
		}
	}
	return 0;
}
