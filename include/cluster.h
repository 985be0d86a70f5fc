/*
 * cluster.h - many chatd nodes as one chat server, through Redis.
 *
 * The engine behind the hub when [cluster] redis is set. One server-side
 * Lua script per message increments the room's seq, appends to a capped
 * history list, remembers the client id for dedup and publishes the
 * message on one channel, atomically: publish order is seq order, on every
 * node. Each node applies the stream to its rooms (hub_stream_message) and keeps a
 * replica of who is online where (presence, users), fed by the same
 * channel and by per-node heartbeat keys that expire when a node dies.
 *
 * All Redis I/O is hiredis' async API on chatd's libev loop: nothing
 * blocks. Redis down: sends, joins of rooms not yet loaded and dms get
 * unavailable; sessions stay; the engine reconnects with backoff and
 * re-reads what it may have missed.
 *
 * Ownership: the cluster owns its two Redis connections, its replicas and
 * every pending message it was handed until it answers it.
 */
#ifndef CHATD_CLUSTER_H
#define CHATD_CLUSTER_H

#include <ev.h>
#include <stddef.h>

#include "config.h"
#include "hub.h"
#include "metrics.h"

struct cluster;

/* Attach to hub and start connecting (it returns at once; the connection
 * comes up later). NULL with err set only for a bad URL or no memory. */
struct cluster *cluster_new(const struct config *cfg, struct ev_loop *loop, struct hub *hub,
			    struct metrics *metrics, char *err, size_t errlen);
/* Graceful leave: remove this node's presence from Redis and tell the
 * others, then call done (also if Redis is down, at once). */
void cluster_leave(struct cluster *c, void (*done)(void *), void *arg);
/* Detach from the hub and close the connections. */
void cluster_free(struct cluster *c);

#endif
