/*
 * hub_api.h - what an application backend does to the chat through the
 * server API (api.c): publish into a room, send a direct message, disconnect
 * a user, and read members, who is online, history and gauges. Like the
 * rest of the hub: plain state and logic, no libwebsockets, driven directly
 * by the unit tests.
 *
 * A publish takes the path of a client's send (seq, engine, dedup by
 * (from, id), cluster order) and completes the way a send's ack does: once
 * the engine committed it, never inside the call for a real engine. The
 * caller names each request with a number from hub_api_request(); the
 * answer comes to the sink with that number. Requests whose caller went
 * away are answered into the void: the sink ignores numbers it no longer
 * knows.
 */
#ifndef CHATD_HUB_API_H
#define CHATD_HUB_API_H

#include <stddef.h>
#include <stdint.h>

#include "jsonw.h"
#include "proto.h"

struct hub;
struct hub_msg;

/* The sender of system messages: not a valid client name ('$' is outside
 * [A-Za-z0-9_.-]), so no client can send as it. */
#define HUB_API_SYSTEM "$system"

/* May a stored or streamed message name this sender? A client name or
 * the system sender. */
int hub_api_valid_sender(const char *name);

/* Close codes an API disconnect may use (what clients see). */
#define HUB_API_CLOSE_DEFAULT 4000
/* A WebSocket close reason may be 123 bytes; the transport keeps one per
 * connection, so it is held to what a reason needs (every connection pays
 * for the buffer, kicked or not). */
#define HUB_API_REASON_MAX 63

struct hub_api_sink {
	/* Request req completed: status PROTO_OK (room, seq for a publish;
	 * room NULL for a dm), else an error code and why. Strings borrowed. */
	void (*done)(void *ctx, uint64_t req, enum proto_err status, const char *why,
		     const char *room, uint64_t seq);
	void *ctx;
};

/*
 * What the hub tells observers (webhooks) about the chat; each hook is
 * optional. user: a name's first session said hello here / its last one
 * ended (per user, not per connection). presence: a local session joined
 * or left a room. message: a message was accepted (on the node that
 * accepted it). direct: a direct message was sent from this node.
 */
struct hub_events {
	void (*user)(void *ctx, const char *name, int online);
	void (*presence)(void *ctx, const char *room, const char *name, int join);
	void (*message)(void *ctx, const char *room, const struct hub_msg *m);
	void (*direct)(void *ctx, const char *to, const struct hub_msg *m);
	void *ctx;
};

void hub_api_set_sink(struct hub *hub, const struct hub_api_sink *sink);
void hub_set_events(struct hub *hub, const struct hub_events *ev);

/* A fresh request number (never a session's). */
uint64_t hub_api_request(struct hub *hub);
/* Is num a request number (not a session)? */
int hub_api_is_request(uint64_t num);

/*
 * Publish body into room as from (a client name, or HUB_API_SYSTEM) with
 * the idempotency key id: a retry with the same (from, id) gets the first
 * one's seq. Exactly one sink->done(req) follows, possibly inside this call
 * (bad input, a known id, memory-only rooms).
 */
void hub_api_publish(struct hub *hub, uint64_t req, const char *room, const char *from,
		     const char *id, const char *body, size_t body_len);
/* A direct message to every session of to (cluster-wide); one done(req). */
void hub_api_dm(struct hub *hub, uint64_t req, const char *to, const char *from,
		const char *id, const char *body, size_t body_len);
/* Close every session of name here with code and reason, and with peers
 * on every node. *closed: the sessions closed on this node. Returns
 * PROTO_OK, or PROTO_ERR_UNAVAILABLE when the other nodes could not be
 * told (the local sessions are closed all the same). */
enum proto_err hub_api_kick(struct hub *hub, const char *name, int code, const char *reason,
			    uint32_t *closed);
/* The local part of a kick (the cluster calls it for a remote kick). */
uint32_t hub_api_kick_local(struct hub *hub, const char *name, int code, const char *reason);

/* Write the member names of room (every node) as a JSON array. */
void hub_api_members(struct hub *hub, const char *room, struct jsonw *w);
/* Write the names online (every node) as a JSON array; returns how many. */
uint64_t hub_api_online(struct hub *hub, struct jsonw *w);

/*
 * History of room with the paging of the protocol's history command:
 * has_after: the oldest messages after `after`; else the newest before
 * `before` (has_before) or the newest of all; at most limit (1..500).
 * Writes a JSON array of message events into w. Returns PROTO_OK, or
 * PROTO_ERR_UNAVAILABLE (why set) when the room cannot be read now.
 */
enum proto_err hub_history_range(struct hub *hub, const char *room, int has_after,
				 uint64_t after, int has_before, uint64_t before,
				 unsigned limit, struct jsonw *w, const char **why);

#endif
