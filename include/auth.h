/*
 * auth.h - who a client is: JWT verification (libjwt) with the algorithm
 * the configuration pins (HS256 with a secret; RS256/ES256 with public keys
 * from a PEM or JWKS file), and the rooms and roles a token gives.
 *
 * An auth holds the keys; an auth_identity is what a verified token says
 * (name = claim "sub", optional claims "rooms" and "roles", exp). A session
 * owns its identity and frees it in hub_session_unregister (or on refresh).
 */
#ifndef CHATD_AUTH_H
#define CHATD_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "proto.h"

struct auth;

/* Roles in a room, ordered: each one can do what the lower ones can. */
enum auth_role {
	AUTH_ROLE_MEMBER = 0,
	AUTH_ROLE_MODERATOR = 1,
	AUTH_ROLE_OWNER = 2
};

struct auth_identity {
	char name[PROTO_NAME_MAX + 1];
	char **rooms;          /* NULL: every room; else exact names or "prefix*" */
	size_t nrooms;
	char **owner;          /* claim roles.owner: room names or "prefix*" */
	size_t nowner;
	char **moderator;      /* claim roles.moderator */
	size_t nmoderator;
	double exp;            /* claim exp (unix seconds), 0 = none */
	uint64_t key_fp;       /* fingerprint of the key that verified it */
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
/* Does the token name room in its "rooms" claim (no claim: no)? A private
 * room lets such a token in. */
int auth_room_listed(const struct auth_identity *id, const char *room, size_t len);
/* The role the token's "roles" claim gives in room (member without one). */
enum auth_role auth_token_role(const struct auth_identity *id, const char *room, size_t len);
const char *auth_role_name(enum auth_role role);
/* 0 and *role set for "owner", "moderator" or "member"; -1 otherwise. */
int auth_role_parse(const char *s, size_t len, enum auth_role *role);

/* Does a holds the key with fingerprint fp (the one that verified a live
 * session's token)? After a reload, a session whose key is gone must refresh. */
int auth_key_accepted(const struct auth *a, uint64_t fp);
/* auth.leeway: a token's exp is honoured until exp + leeway. */
double auth_leeway(const struct auth *a);
/* auth.refresh_window: how long before exp token_expiring is sent. */
double auth_refresh_window(const struct auth *a);

#endif
