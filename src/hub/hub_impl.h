/*
 * hub_impl.h - what the files of the hub share. Private, like session.h
 * and room.h beside it: only the hub library (and its unit test and
 * fuzzer) has src/hub on its include path; the transport and the engines
 * use hub.h. The hub's state is one struct hub;
 * each hub_*.c file does one job on it (see the comment at its top).
 */
#ifndef CHATD_HUB_IMPL_H
#define CHATD_HUB_IMPL_H

#include "hub.h"
#include "hub_api.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

#include "auth.h"
#include "jsonw.h"
#include "log.h"
#include "proto.h"
#include "rng.h"
#include "room.h"
#include "session.h"

/* Sessions that share a name (limits.sessions_per_name). */
struct hub_user {
	char name[PROTO_NAME_MAX + 1];
	struct session *sessions;
	uint32_t count;
	uint64_t mark;               /* de-duplicates names in member lists */
	UT_hash_handle hh;
};

/* Sessions bucketed by floor(log2(queued bytes)), to find the largest
 * queues in O(1) when the global cap is reached. */
#define HUB_QB_BUCKETS 64

struct hub {
	struct hub_limits lim;
	char node_id[65];
	struct hub_transport tp;
	struct hub_engine engine;
	struct hub_peers peers;      /* all NULL: no other nodes */
	struct hub_api_sink api;     /* answers to server API requests (hub_api.c) */
	struct hub_events ev;        /* observers (webhooks); hooks may be NULL */
	uint64_t next_req;           /* server API request numbers */
	const struct auth *auth;     /* NULL: names are taken on trust */
	struct metrics *m;
	struct session *sessions;    /* every registered session, by num */
	struct hub_user *users;      /* authenticated names */
	struct room *rooms;
	struct room *idle;           /* rooms not in use, least recently used first */
	uint64_t next_num, salt, rng, mark;
	uint64_t authed;
	int draining;
	int in_submit;               /* inside engine.submit: completing now breaks the contract */
	uint64_t queue_bytes, queue_msgs;
	struct session *qb[HUB_QB_BUCKETS];
	struct hub_marker *markers;  /* read markers held in memory (hub_read.c) */
	struct hub_conv *convs;      /* each user's DM conversations seen here (hub_conv.c) */
	struct hub_conv_ask *conv_asks;  /* conversations commands waiting for the engine */
	/* Token deadlines: a binary min-heap on session.tok_due (hub_token.c). */
	struct session **theap;
	uint32_t theap_len, theap_cap;
	/* After a reload changed the keys: session numbers still to re-check
	 * (rot_next..rot_end), a bounded slice per hub_run_deadlines call. */
	uint64_t rot_next, rot_end;
	const struct config *cfg;    /* the config in force ([[rooms]] defaults) */
};

/* A join parked while its room loads (cluster). */
struct hub_waiter {
	struct hub_waiter *next;
	uint64_t sender;
	int has_since, has_epoch, has_ref;
	uint64_t since;
	char epoch[PROTO_EPOCH_MAX + 1];
	char ref[PROTO_REF_MAX + 1];
};

/*
 * A message whose completion is still pending (an engine), keyed by its
 * sender's name and id, with the retries of it that arrived meanwhile: they
 * get the same answer once it completes, never a second seq. Every message
 * in flight has an entry, and under load thousands are in flight per room,
 * so they are hashed (room.inflight), never searched in a list: a list walk
 * per send and per completion made a cluster node spend all its time in it
 * once Redis fell behind, and never catch up.
 */
struct hub_retry_wait {
	struct hub_retry_wait *next;
	uint64_t sender;                    /* session number, or API request */
	char ref[PROTO_REF_MAX + 1];
	int has_ref;
};

/* from '\0' id: names hold no NUL, so the pair is unambiguous; only the
 * bytes used are hashed (every send adds and removes one). */
#define HUB_RETRY_KEY_MAX (PROTO_NAME_MAX + 1 + PROTO_ID_MAX)

struct hub_retry {
	char key[HUB_RETRY_KEY_MAX];
	size_t keylen;
	struct hub_retry_wait *waiting;     /* owned */
	UT_hash_handle hh;                  /* room.inflight */
};

/* hub.c */
uint64_t hub_random(struct hub *h);
double hub_now(struct hub *h);
struct hub_user *hub_user_find(struct hub *h, const char *name, size_t len);
void hub_copy(char *dst, const struct proto_str *src);
int hub_enqueue(struct hub *h, struct session *s, struct msgbuf *mb, int droppable);
int hub_fits(struct hub *h, struct session *s, size_t len, uint32_t reserve_n,
	     size_t reserve_b);

/* hub_reply.c (the events themselves: proto_encode.c, proto.h) */
void hub_reply(struct hub *h, struct session *s, struct msgbuf *mb);
void hub_error(struct hub *h, struct session *s, const struct proto_str *ref,
	       enum proto_err code, const char *message);
void hub_ack(struct hub *h, struct session *s, const char *id, const char *room,
	     uint64_t seq, const char *ref);
void hub_names(struct hub *h, struct jsonw *w, struct room *r);

/* A stored message as the protocol encodes it (hub_msg is the engines'
 * name for the same fields). */
static inline struct proto_msg hub_proto_msg(const struct hub_msg *m)
{
	struct proto_msg pm = { m->seq, m->ts, m->from, m->id, m->body, m->body_len, m->kind,
				m->target, m->deleted };
	return pm;
}

static inline struct msgbuf *hub_encode_message(const char *room, const struct hub_msg *m)
{
	struct proto_msg pm = hub_proto_msg(m);
	return proto_encode_message(room, &pm);
}

/* hub_room.c */
struct room *hub_room_find(struct hub *h, const char *name, size_t len);
void hub_room_broadcast(struct hub *h, struct room *r, struct msgbuf *mb,
			struct session *except, int droppable);
void hub_presence(struct hub *h, struct room *r, struct session *s, int join);
void hub_idle_unlink(struct hub *h, struct room *r);
void hub_rooms_trim(struct hub *h, uint64_t max);
void hub_room_release(struct hub *h, struct room *r);
struct room *hub_room_get(struct hub *h, const char *name, size_t len, const char **why);
void hub_member_leave(struct hub *h, struct membership *m);
void hub_room_record(struct hub *h, struct room *r, const struct hub_msg *m,
		     struct msgbuf *mb);
void hub_room_fanout(struct hub *h, struct room *r, struct msgbuf *mb);
struct room *hub_member_room(struct hub *h, struct session *s,
			     const struct proto_cmd *c, enum proto_err code);

/* hub_join.c */
void hub_cmd_join(struct hub *h, struct session *s, const struct proto_cmd *c);
void hub_cmd_leave(struct hub *h, struct session *s, const struct proto_cmd *c);

/* hub_history.c */
uint64_t hub_oldest_held(struct hub *h, struct room *r);
int hub_replay(struct hub *h, struct session *s, struct room *r, uint64_t since);
void hub_cmd_history(struct hub *h, struct session *s, const struct proto_cmd *c);

/* hub_retry.c */
struct hub_retry *hub_retry_find(struct room *r, const char *from, const struct proto_str *id);
void hub_retry_add(struct room *r, const char *from, const char *id);
int hub_retry_wait(struct hub_retry *t, uint64_t sender, const struct proto_str *ref);
/* A list of sessions (or API requests) waiting for an answer: a retry's,
 * or a conversations command's (hub_conv.c). Appended in the order asked. */
struct hub_retry_wait *hub_waiter_add(struct hub_retry_wait **list, uint64_t sender,
				     const struct proto_str *ref);
void hub_waiters_free(struct hub_retry_wait *list);
void hub_retry_done(struct hub *h, struct room *r, const struct hub_pending *p,
		    enum proto_err status);
void hub_retry_free_all(struct room *r);

/* hub_send.c */
struct hub_pending *hub_pending_from(struct hub *h, struct session *s,
				     const struct proto_cmd *c);
struct hub_pending *hub_pending_event(struct hub *h, struct session *s, const struct proto_cmd *c,
				      const char *body, size_t len);
void hub_cmd_send(struct hub *h, struct session *s, const struct proto_cmd *c);
struct session *hub_sender(struct hub *h, uint64_t num);

/* hub_edit.c */
struct msgbuf *hub_encode_state(const char *room, const struct room_msg *t, const char *text,
				 size_t len);
uint32_t hub_edit_state_frames(struct hub *h, struct room *r, struct msgbuf **v, uint32_t n);
void hub_edit_apply(struct hub *h, struct room *r, const struct hub_msg *m);
int hub_may_delete(struct hub *h, struct session *s, struct room *r, const struct room_msg *t);
void hub_edit_erased(struct hub *h, struct room *r, uint64_t seq);
void hub_cmd_edit(struct hub *h, struct session *s, const struct proto_cmd *c);
void hub_cmd_delete(struct hub *h, struct session *s, const struct proto_cmd *c);
void hub_cmd_react(struct hub *h, struct session *s, const struct proto_cmd *c);

/* hub_typing.c */
void hub_cmd_typing(struct hub *h, struct session *s, const struct proto_cmd *c);

/* hub_read.c */
uint64_t hub_marker_get(struct hub *h, const char *room, const char *name);
void hub_markers_free(struct hub *h);
void hub_cmd_read(struct hub *h, struct session *s, const struct proto_cmd *c);

/* hub_conv.c */
int hub_conv_join_allowed(struct hub *h, struct session *s, const struct proto_cmd *c);
void hub_conv_record(struct hub *h, struct room *r, const struct hub_msg *m);
void hub_conv_stream(struct hub *h, const char *room, const struct hub_msg *m);
void hub_conv_event(struct hub *h, struct room *r, const struct hub_msg *m);
void hub_conv_dm(struct hub *h, struct session *s, const struct proto_cmd *c);
void hub_cmd_conversations(struct hub *h, struct session *s, const struct proto_cmd *c);
void hub_convs_free(struct hub *h);
void hub_conv_asks_free(struct hub *h);
void hub_submit(struct hub *h, struct room *r, struct hub_pending *p);
struct session *hub_sender(struct hub *h, uint64_t num);

/* hub_token.c */
void hub_token_track(struct hub *h, struct session *s);
void hub_token_untrack(struct hub *h, struct session *s);
void hub_token_rotated(struct hub *h);
void hub_cmd_refresh(struct hub *h, struct session *s, const struct proto_cmd *c);
void hub_token_free(struct hub *h);

/* hub_settings.c: a room's roles, bans, mutes, invites and settings. */
enum auth_role hub_role(struct hub *h, struct room *r, struct session *s);
enum auth_role hub_role_of_name(struct hub *h, struct room *r, const char *name);
/* 0 if s may join r, else the error answered. */
int hub_join_check(struct hub *h, struct session *s, struct room *r, const struct proto_str *ref);
/* 0 if s may send to r now, else the error answered. */
int hub_send_check(struct hub *h, struct session *s, struct room *r, const struct proto_str *ref);
/* Settings and the caller's role as fields of joined. */
void hub_room_info(struct hub *h, struct room *r, struct session *s, struct proto_room_info *out);
/* Apply one state record (key, value NULL: removed) to r. -1 on ENOMEM. */
int hub_state_apply(struct room *r, const char *key, const char *value);
uint32_t hub_room_history(struct hub *h, struct room *r);
void hub_cmd_settings(struct hub *h, struct session *s, const struct proto_cmd *c);

/* hub_mod.c: moderation commands and the events that carry them. */
void hub_cmd_mod(struct hub *h, struct session *s, const struct proto_cmd *c);
/* A moderation event (m->from == PROTO_MOD_SENDER) became part of r's
 * history here: apply it (state, and the kicks of local sessions). */
void hub_mod_apply(struct hub *h, struct room *r, const struct hub_msg *m);
/* Submit a moderation event with body (JSON text) for s's command c. */
void hub_mod_event(struct hub *h, struct session *s, struct room *r, const struct proto_cmd *c,
		   const char *body, size_t len);

/* hub_api.c */
int hub_api_answer(struct hub *h, uint64_t num, enum proto_err status, const char *why,
		   const char *room, uint64_t seq);

/* hub_dm.c */
void hub_cmd_dm(struct hub *h, struct session *s, const struct proto_cmd *c);

#endif
