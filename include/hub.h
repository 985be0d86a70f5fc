/*
 * hub.h - the chat hub: sessions, names, rooms, and every state change of
 * the chat. Plain C with no libwebsockets inside: the transport (server.c)
 * turns frames into hub_session_input() calls and drains session queues;
 * unit tests drive the hub directly with a fake transport.
 *
 * Threading: one loop thread owns the hub; nothing here locks.
 *
 * Life of a session: hub_session_register() when a WebSocket is established
 * -> hub_session_input() per text frame -> output lands in the session's
 * queue and the hub calls transport->wake() -> the transport writes with
 * hub_session_frames()/hub_session_consumed() -> hub_session_unregister()
 * from the transport's one release path, whatever ended the connection.
 *
 * Accepting a message is split in two steps, submit and completion
 * (hub_append_done), so that an engine (storage with group commit, or a
 * cluster) can complete it later; the sender may be gone by then, so a
 * pending message names its sender by session number, never by pointer.
 */
#ifndef CHATD_HUB_H
#define CHATD_HUB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "config.h"
#include "metrics.h"
#include "msgbuf.h"
#include "proto.h"

struct hub;
/* A client as the hub sees it: opaque outside the hub (src/hub/session.h);
 * the transport holds a pointer from hub_session_register() until it calls
 * hub_session_unregister(), and asks the accessors below for what it needs. */
struct session;

struct hub_transport {
	/* s has output queued: arrange for hub_session_frames/consumed to be called. */
	void (*wake)(void *ctx, void *conn);
	/* Close the connection with a WebSocket close code; with flush, what is
	 * queued is written first. The transport must NOT call
	 * hub_session_unregister from inside this call: it does so later, from
	 * its release path. */
	void (*close)(void *ctx, void *conn, int code, const char *reason, int flush);
	/* Wall clock, seconds since the epoch (the loop's cached time). */
	double (*now)(void *ctx);
	void *ctx;
};

/* The limits the hub applies; copied from the config at start and reload. */
struct hub_limits {
	size_t max_message_bytes;
	uint32_t send_queue_messages;
	size_t send_queue_bytes;
	uint64_t total_queue_bytes;
	enum config_slow_policy slow_consumer;
	double rate, burst;
	uint32_t sessions_per_name;
	uint32_t max_rooms;
	uint32_t messages_per_room;
	uint32_t dedup_window;
	double heartbeat_interval;
	double edit_window;              /* s; 0 = no limit */
	uint32_t max_edits, max_reactions;
	double typing_interval, typing_ttl;
	int read_receipts;
};

/*
 * What a sequenced event of a room is (the protocol's enum proto_kind).
 * Edits, deletions and reactions take their own seq like messages and point
 * at an earlier message (target), so that order, storage, dedup, resume and
 * cluster ordering treat them alike. Engines store kind and target with the
 * message and hand them back.
 */
enum hub_kind {
	HUB_KIND_MESSAGE = PROTO_KIND_MESSAGE,
	HUB_KIND_EDIT = PROTO_KIND_EDIT,
	HUB_KIND_DELETE = PROTO_KIND_DELETE,
	HUB_KIND_REACT = PROTO_KIND_REACT,
	HUB_KIND_UNREACT = PROTO_KIND_UNREACT,
	HUB_KIND_COUNT = PROTO_KIND_COUNT
};

/* A message on its way from submit to completion. The engine owns it from
 * submit until it calls hub_pending_free(). */
struct hub_pending {
	struct hub_pending *next;        /* free for the engine's own lists */
	char to[PROTO_NAME_MAX + 1];     /* dm only: the recipient */
	uint64_t sender;                 /* session number; may be gone at commit */
	char from[PROTO_NAME_MAX + 1];
	char room[PROTO_ROOM_MAX + 1];
	char epoch[17];                  /* the room's epoch */
	char id[PROTO_ID_MAX + 1];
	char ref[PROTO_REF_MAX + 1];
	int has_ref;
	uint64_t seq;                    /* proposed by the hub; an engine that sequences may replace it */
	uint64_t ts;                     /* server ms since the epoch (likewise) */
	int duplicate;                   /* set by the engine: (from, id) was stored before, as seq */
	size_t body_len;
	char *body;                      /* NUL-terminated */
	int kind;                        /* enum hub_kind */
	uint64_t target;                 /* the message an edit/delete/react is about */
};

/* A stored message, as an engine hands it back (strings borrowed). Engines
 * zero-initialize it: kind 0 is a message, and every field is read. */
struct hub_msg {
	uint64_t seq, ts;
	const char *from, *id, *body;
	size_t body_len;
	int kind;                        /* enum hub_kind; 0: a message */
	uint64_t target;                 /* kind != 0: the message it is about */
	int deleted;                     /* body removed (a deleted message or its edits) */
};

/*
 * An engine persists (and, in a cluster, sequences) accepted messages. One
 * contract for every engine, with no modes:
 * submit: the engine owns p until hub_pending_free(p). The hub has set
 *   p->epoch, p->seq (the room's next seq here) and p->ts. The engine
 *   completes p with hub_append_done() exactly once, after submit has
 *   returned, never inside it (the hub is in the middle of a command; it
 *   logs "engine contract broken" if that happens). Per room, completions
 *   come in submit order; a failed append must fail every later pending
 *   message of the same room too, so that seq stays gap-free. An engine
 *   that sequences (the cluster's Lua script) may replace p->seq, p->ts
 *   and p->epoch with its own before completing, and sets p->duplicate when
 *   it found (from, id) already stored (p->seq then is the original's).
 * room_load (optional): room is first used on this node (or again, after
 *   it was evicted): hand over its state as data - hub_load_state() with
 *   its epoch and seq, then hub_load_message() for each recent message in
 *   seq order - and return 0; or return 1 and do the same later, ending
 *   with hub_room_loaded(); or return -1. Engines never see struct room.
 * read (optional): call emit for each stored message of room with
 *   lo <= seq <= hi, in seq order, at most max; returns the count or -1.
 * oldest (optional): the lowest seq stored for room, 0 if none.
 * state_put (optional): keep one record of a room's moderation state and
 *   settings (key such as "ban:bob" or "set:topic"; value NULL removes it),
 *   shared by every node that loads the room; room_load hands the records
 *   back with hub_load_room_state before it finishes. Fire and forget: the
 *   sequenced moderation event that goes with it is what every node applies.
 * erase (optional): a moderator deleted message seq of room: store it with
 *   an empty body from now on (the body must not stay on disk). Called
 *   before the delete event is submitted.
 * The default (no engine) keeps everything in memory only.
 */
struct hub_engine {
	void (*submit)(void *ctx, struct hub *hub, struct hub_pending *p);
	int (*room_load)(void *ctx, struct hub *hub, const char *room);
	int (*read)(void *ctx, const char *room, uint64_t lo, uint64_t hi, uint32_t max,
		    void (*emit)(void *arg, const struct hub_msg *m), void *arg);
	uint64_t (*oldest)(void *ctx, const char *room);
	/* Read markers (optional; without them they live in memory only).
	 * marker_get: name's marker in room, 0 if none; synchronous and
	 * bounded (one row). marker_set: keep it; the engine may write it
	 * later (with its next commit). */
	uint64_t (*marker_get)(void *ctx, const char *room, const char *name);
	void (*marker_set)(void *ctx, const char *room, const char *name, uint64_t seq);
	/* DM conversations (optional): emit each conversation room of name
	 * ("@a:b") the engine holds, with its latest seq; at most max. */
	void (*conversations)(void *ctx, const char *name, uint32_t max,
			      void (*emit)(void *arg, const char *room, uint64_t seq), void *arg);
	/* The same, for an engine that must ask elsewhere (a cluster's
	 * Redis; optional): start listing name's conversations, at most max,
	 * with their latest seq and name's read marker, and answer later with
	 * hub_conversations_listed (never inside this call). -1: cannot start
	 * now; the hub then answers from what it has seen itself. */
	int (*conversations_list)(void *ctx, const char *name, uint32_t max);
	void (*state_put)(void *ctx, const char *room, const char *key, const char *value);
	void (*erase)(void *ctx, const char *room, uint64_t seq);
	void *ctx;
};

/* One conversation of a hub_conversations_listed answer. */
struct hub_conv_entry {
	const char *room;                /* "@a:b" */
	uint64_t seq;                    /* its latest seq */
	uint64_t read;                   /* the user's read marker in it, 0: none */
};

/* An engine's answer to conversations_list(name): the user's
 * conversations, most recent first (borrowed for the call), or ok = 0 when
 * they could not be read (the waiting commands are answered from memory). */
void hub_conversations_listed(struct hub *h, const char *name, const struct hub_conv_entry *e,
			      size_t n, int ok);

/*
 * What only a cluster has: other nodes. A separate, optional interface
 * (hub_set_peers), all hooks required when set:
 * presence, user: a local session joined/left a room, a name came
 *   online/went offline here; tell the other nodes.
 * names: emit the names present in room on other nodes.
 * dm: route a direct message (p->to, p->from, p->id, p->body, p->ts set)
 *   to the recipient's sessions on every node, this one included (through
 *   hub_direct); returns PROTO_OK and later calls hub_dm_done(), or an
 *   error code (p stays the caller's then).
 */
struct hub_peers {
	void (*presence)(void *ctx, const char *room, const char *name, int join);
	void (*user)(void *ctx, const char *name, int online);
	void (*names)(void *ctx, const char *room, void (*emit)(void *arg, const char *name), void *arg);
	enum proto_err (*dm)(void *ctx, struct hub *hub, struct hub_pending *p);
	/* Optional (NULL: local only). typing: an ephemeral typing signal of
	 * name in room, for the other nodes' members (hub_remote_typing);
	 * never sequenced or stored. marker: name's read marker in room moved
	 * to seq; store it for the cluster and tell the other nodes
	 * (hub_remote_marker). */
	void (*typing)(void *ctx, const char *room, const char *name, int on);
	void (*marker)(void *ctx, const char *room, const char *name, uint64_t seq);
	/* Optional (the server API, hub_api.h): kick closes name's sessions on
	 * the other nodes (each calls hub_api_kick_local), -1 if they cannot be
	 * told; online emits the names online on the other nodes. */
	int (*kick)(void *ctx, const char *name, int code, const char *reason);
	void (*online)(void *ctx, void (*emit)(void *arg, const char *name), void *arg);
	void *ctx;
};

struct hub *hub_new(const struct config *cfg, const struct hub_transport *tp,
		    struct metrics *metrics);
/* Free the hub. Every session must have been unregistered first. */
void hub_free(struct hub *hub);
void hub_set_engine(struct hub *hub, const struct hub_engine *engine);
/* Other nodes (a cluster); NULL: this node is alone. */
void hub_set_peers(struct hub *hub, const struct hub_peers *peers);
/* Token authentication: hello must carry a token auth verifies. NULL turns
 * it off (hello {name}). auth stays the caller's; replace it on reload. */
struct auth;
void hub_set_auth(struct hub *hub, const struct auth *auth);
/* Shutdown: sessions leave without presence events (everyone is leaving;
 * a room of n members would otherwise get n^2 of them). */
void hub_set_draining(struct hub *hub);
/* Apply the live-changeable parts of a new config. */
void hub_reconfigure(struct hub *hub, const struct config *cfg);
void hub_limits_from_config(struct hub_limits *l, const struct config *cfg);

/* A new, not yet authenticated session bound to conn; NULL on ENOMEM. */
struct session *hub_session_register(struct hub *hub, void *conn);
/* The one release path: leave every room (presence leave to the others),
 * drop the name, free the queue and the session. s is invalid afterwards. */
void hub_session_unregister(struct hub *hub, struct session *s);
/* One complete text frame from the client. */
void hub_session_input(struct hub *hub, struct session *s, const char *data, size_t len);

/*
 * Output for the transport. hub_session_frames() fills iov with up to max of
 * s's oldest queued frames, complete WebSocket text frames ready for the
 * socket, at most max_bytes together but always at least one (0 when the
 * queue is empty). The bytes stay the hub's until hub_session_consumed()
 * says that the n oldest frames have left the queue: written, or copied by
 * the transport.
 */
int hub_session_frames(struct hub *hub, struct session *s, struct iovec *iov, int max,
		       size_t max_bytes);
/* now: when they were written (the transport's clock, as tp.now), for the
 * delivery histogram. */
void hub_session_consumed(struct hub *hub, struct session *s, int n, double now);
/* What s has queued: frames and payload bytes (for input back-pressure). */
void hub_session_backlog(const struct session *s, uint32_t *frames, size_t *bytes);
/* s's opaque id (for logs), its name ("" before hello), whether hello was
 * accepted, and the transport handle it was registered with. */
const char *hub_session_id(const struct session *s);
const char *hub_session_name(const struct session *s);
int hub_session_authenticated(const struct session *s);
void *hub_session_conn(const struct session *s);

/* Ask the transport to close s (code, reason) and stop queueing to it.
 * The queue is dropped (its memory freed now) unless flush is set. */
void hub_session_close(struct hub *hub, struct session *s, int code, const char *reason,
		       int flush);

/*
 * The completion of a submitted message, whatever the engine (after submit
 * returned, never inside): status PROTO_OK, it is stored: the room records
 * it (ring, dedup), the sender, if still here, gets its ack {id, room,
 * p->seq}, and the members get it (the one fan-out path). A duplicate
 * (p->duplicate) gets the ack only. A message this node cannot apply in
 * order yet (a cluster's stream has not brought seq - 1 here) is acked
 * and left to the stream (hub_stream_message). Any other status: nothing
 * was stored (as far as the engine knows); the sender gets that error.
 * p stays the engine's.
 */
void hub_append_done(struct hub *hub, struct hub_pending *p, enum proto_err status);
void hub_pending_free(struct hub_pending *p);

/* Entry points of an engine shared by several nodes (the cluster). */
/* A message from the cluster stream (any node's, in seq order per room):
 * ring, dedup, fan-out to local members. epoch is the room's epoch in the
 * stream; a different one means the shared history was lost and restarts.
 * Returns 0 (applied or already seen, or the room is not loaded here) or
 * -1 for a gap: the engine must re-read the room from hub_room_seq()+1. */
int hub_stream_message(struct hub *hub, const char *room, const char *epoch, const struct hub_msg *m);
/* The room's shared history restarted (a new epoch: tell the local members
 * with a "reset" event) or this node can no longer recover what it missed
 * before seq (same epoch: it moves on). No-op for rooms not loaded. */
void hub_room_rebase(struct hub *hub, const char *room, const char *epoch, uint64_t seq);
/* The latest seq a loaded room holds here, or -1 if the room is not loaded. */
long long hub_room_seq(struct hub *hub, const char *room);
/* room_load's answer, while room is loading (ignored otherwise): its epoch
 * (at most 16 bytes) and latest seq, then its recent messages, seq order
 * (-1 on ENOMEM). Strings are copied. */
void hub_load_state(struct hub *hub, const char *room, const char *epoch, uint64_t seq);
int hub_load_message(struct hub *hub, const char *room, const struct hub_msg *m);
/* room_load's answer, while room is loading: one stored state record (see
 * state_put). Strings are copied; unknown or broken records are ignored. */
void hub_load_room_state(struct hub *hub, const char *room, const char *key, const char *value);
/* Finish an asynchronous room_load: ok = 0 fails the parked joins with
 * unavailable and forgets the room. */
void hub_room_loaded(struct hub *hub, const char *room, int ok);
/* A direct message from the stream for the local sessions of to. */
void hub_direct(struct hub *hub, const char *to, const struct hub_msg *m);
/* The answer to a dm routed by the engine. p stays the engine's. */
void hub_dm_done(struct hub *hub, struct hub_pending *p, enum proto_err status);
/* Someone on another node joined or left room: tell the local members. */
void hub_remote_presence(struct hub *hub, const char *room, const char *name, int join);
/* name's read marker in room is seq (another node moved it, or a room
 * load brought it): kept if higher; name's local sessions and, with
 * read_receipts, room's local members are told. */
void hub_remote_marker(struct hub *hub, const char *room, const char *name, uint64_t seq);
/* A read marker an engine loaded with room: kept in memory if higher,
 * nobody told. */
void hub_load_marker(struct hub *hub, const char *room, const char *name, uint64_t seq);
/* Another node's typing signal (peers.typing): to the local members of room. */
void hub_remote_typing(struct hub *hub, const char *room, const char *name, int on);
/* Visit every room held and loaded here (for an engine's resync after a
 * reconnect); fn must not make the hub open or free rooms. */
void hub_rooms_foreach(struct hub *hub, void (*fn)(void *arg, const char *room), void *arg);

/*
 * Token lifetimes. A session whose token has an exp gets token_expiring
 * auth.refresh_window seconds before it and is closed with
 * HUB_CLOSE_TOKEN_EXPIRED at exp + auth.leeway unless it refreshes; after a
 * reload that drops the key a session was verified with, the same happens
 * within one refresh window. The hub keeps the deadlines in one heap; the
 * transport runs one timer: hub_next_deadline() says when (wall clock,
 * seconds; 0: nothing to do), and hub_run_deadlines() does what is due,
 * a bounded amount per call (the next deadline is then "now" again).
 */
#define HUB_CLOSE_TOKEN_EXPIRED 4001
double hub_next_deadline(struct hub *hub);
void hub_run_deadlines(struct hub *hub);

/* Gauges. */
uint64_t hub_named_session_count(const struct hub *hub);   /* sessions with a name: after hello */
uint64_t hub_room_count(const struct hub *hub);
uint64_t hub_queue_bytes(const struct hub *hub);
uint64_t hub_queue_messages(const struct hub *hub);
const struct hub_limits *hub_limits(const struct hub *hub);

#endif
