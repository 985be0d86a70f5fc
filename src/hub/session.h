/*
 * session.h - one client as the hub sees it: identity, send queue, rate
 * limit, room memberships.
 *
 * Ownership: the hub creates sessions (hub_session_register) and frees them
 * in exactly one place (hub_session_unregister). The transport keeps a
 * pointer to its session until it calls that function, and never after.
 * session->conn is the transport's handle, opaque to the hub. This header
 * is private to the hub (src/hub): outside it, struct session is opaque and
 * hub.h's accessors (hub_session_id, hub_session_backlog, ...) answer.
 */
#ifndef CHATD_SESSION_H
#define CHATD_SESSION_H

#include <stdint.h>

#include <uthash.h>

#include "proto.h"
#include "queue.h"

struct membership;
struct auth_identity;
struct hub_user;

struct session {
	uint64_t num;                    /* key in hub->sessions */
	char id[20];                     /* opaque id shown to clients and in logs */
	char name[PROTO_NAME_MAX + 1];   /* "" until hello */
	void *conn;                      /* transport handle */
	struct queue q;                  /* frames waiting for the socket */
	double tokens, tokens_at;        /* token bucket */
	double typing_at;                /* last typing signal let through (hub_typing.c) */
	const void *typing_room;         /* ... and its room (compared, never followed) */
	struct membership *rooms;        /* list, via membership.sess_next */
	struct hub_user *user;           /* name entry, NULL until hello */
	struct auth_identity *ident;     /* owned; what the token allowed (auth on) */
	struct session *user_prev, *user_next;  /* other sessions of the same name (utlist DL) */
	struct session *qb_prev, *qb_next;      /* hub queue-size bucket list (utlist DL) */
	int qb_idx;                      /* bucket index, -1 when the queue is empty */
	int tok_idx;                     /* place in the hub's token deadline heap, -1: not in it */
	double tok_due;                  /* when that heap entry fires (wall clock, s) */
	double tok_end;                  /* when the session is closed (4001) unless refreshed */
	unsigned tok_warned : 1;         /* token_expiring sent for tok_end */
	unsigned closing : 1;            /* close requested: no more output */
	unsigned failed_hellos : 2;      /* rejected tokens so far */
	UT_hash_handle hh;               /* hub->sessions */
};

/* A new session (not yet in any table), or NULL on ENOMEM. */
struct session *session_new(uint64_t num, uint64_t salt, double now, double burst);
/* Free the session and its queue. It must be out of every table already. */
void session_free(struct session *s);
/* Token bucket: 1 if a command may run now (and take a token), 0 if limited. */
int session_take_token(struct session *s, double now, double rate, double burst);
static inline int session_authenticated(const struct session *s)
{
	return s->name[0] != '\0';
}

#endif
