/*
 * auth.h - who a client is: HS256 JWT verification (libjwt) and the rooms
 * a token allows.
 *
 * An auth holds the secret; an auth_identity is what a verified token says
 * (name = claim "sub", optional claim "rooms"). A session owns its identity
 * and frees it in hub_session_unregister.
 */
#ifndef CHATD_AUTH_H
#define CHATD_AUTH_H

#include <stddef.h>

#include "config.h"
#include "proto.h"

struct auth;

struct auth_identity {
	char name[PROTO_NAME_MAX + 1];
	char **rooms;          /* NULL: every room; else exact names or "prefix*" */
	size_t nrooms;
};

/* From the config; NULL with err set (secret unreadable or empty). The
 * secret is never logged. Returns NULL without error for mode "none":
 * check cfg->auth_mode. */
struct auth *auth_new(const struct config *cfg, char *err, size_t errlen);
void auth_free(struct auth *a);

/* Verify token at time now (unix seconds). On success returns a new
 * identity (owned by the caller); on failure NULL and a reason for the
 * client in why (never the secret, never the token). */
struct auth_identity *auth_verify(const struct auth *a, const char *token, size_t len,
				  double now, char *why, size_t whylen);
void auth_identity_free(struct auth_identity *id);

/* May this identity join room? NULL identity (auth off): yes. */
int auth_room_allowed(const struct auth_identity *id, const char *room, size_t len);

#endif
