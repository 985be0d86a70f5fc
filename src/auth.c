/*
 * auth.c - HS256 JWTs through libjwt. libjwt checks the signature for the
 * algorithm the token names; chatd then insists that the algorithm is
 * HS256, so "none" and every other algorithm are refused whatever libjwt
 * would accept.
 */
#include "auth.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <jwt.h>

struct auth {
	unsigned char *secret;
	size_t len;
	double leeway;
};

struct auth *auth_new(const struct config *cfg, char *err, size_t errlen)
{
	struct auth *a;
	char *secret;
	size_t len = 0;

	if (cfg->auth_mode != CONFIG_AUTH_JWT)
		return NULL;
	secret = config_jwt_secret(cfg, &len, err, errlen);
	if (!secret)
		return NULL;
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
static int auth_rooms(jwt_t *jwt, struct auth_identity *id, char *why, size_t whylen)
{
	char *json = jwt_get_grants_json(jwt, "rooms");
	const cJSON *e;
	cJSON *arr;
	size_t n = 0;

	if (!json)
		return 0;          /* no claim: every room */
	arr = cJSON_Parse(json);
	free(json);
	if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) > 1024) {
		cJSON_Delete(arr);
		snprintf(why, whylen, "claim rooms must be an array of strings");
		return -1;
	}
	id->rooms = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof(char *));
	if (!id->rooms) {
		cJSON_Delete(arr);
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	cJSON_ArrayForEach(e, arr) {
		if (!cJSON_IsString(e) || !e->valuestring[0] || strlen(e->valuestring) > PROTO_ROOM_MAX + 1 ||
		    !(id->rooms[n] = strdup(e->valuestring))) {
			id->nrooms = n;
			cJSON_Delete(arr);
			snprintf(why, whylen, "claim rooms must be an array of room names");
			return -1;
		}
		n++;
	}
	id->nrooms = n;
	cJSON_Delete(arr);
	return 0;
}

/* A numeric time claim: 0 if absent, -1 if not a number, else 1. */
static int auth_time_claim(jwt_t *jwt, const char *claim, long *out)
{
	errno = 0;
	*out = jwt_get_grant_int(jwt, claim);
	if (errno == ENOENT)
		return 0;
	return errno ? -1 : 1;
}

struct auth_identity *auth_verify(const struct auth *a, const char *token, size_t len,
				  double now, char *why, size_t whylen)
{
	struct auth_identity *id = NULL;
	jwt_t *jwt = NULL;
	const char *sub;
	char *tok;
	long t;
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
	free(tok);
	if (r || !jwt) {
		snprintf(why, whylen, "invalid token (malformed or bad signature)");
		goto fail;
	}
	if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
		snprintf(why, whylen, "invalid token: alg must be HS256");
		goto fail;
	}
	if ((r = auth_time_claim(jwt, "exp", &t)) < 0 || (r == 1 && now > (double)t + a->leeway)) {
		snprintf(why, whylen, "token expired");
		goto fail;
	}
	if ((r = auth_time_claim(jwt, "nbf", &t)) < 0 || (r == 1 && now + a->leeway < (double)t)) {
		snprintf(why, whylen, "token not valid yet");
		goto fail;
	}
	sub = jwt_get_grant(jwt, "sub");
	if (!sub || !proto_valid_name(sub, strlen(sub))) {
		snprintf(why, whylen, "claim sub must be a name of 1..32 bytes of [A-Za-z0-9_.-]");
		goto fail;
	}
	id = calloc(1, sizeof(*id));
	if (!id) {
		snprintf(why, whylen, "out of memory");
		goto fail;
	}
	strcpy(id->name, sub);
	if (auth_rooms(jwt, id, why, whylen)) {
		auth_identity_free(id);
		id = NULL;
	}
fail:
	jwt_free(jwt);
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
