/*
 * cluster_impl.h - what the files of the cluster engine share (not a public
 * header: the daemon uses cluster.h). The engine's state is one struct
 * cluster; each cluster_*.c file does one job on it.
 *
 * Two connections: `cmd` runs scripts and commands, `sub` is subscribed to
 * the event channel. Both are hiredis async contexts on the loop. Redis
 * keys (P = key_prefix):
 *   P room:R:seq, :epoch, :hist (capped list), :dedup (hash), :dedupq,
 *   :members (hash "node\x1fname" -> sessions)
 *   P users (hash "node\x1fname" -> sessions), P node:N (heartbeat, PX ttl),
 *   P node:N:rooms (set), channel P events.
 * Events on the channel (JSON, field t): m message (published by the send
 * script, so in seq order), p presence delta, u user delta, d direct
 * message, x node gone.
 */
#ifndef CHATD_CLUSTER_IMPL_H
#define CHATD_CLUSTER_IMPL_H

#include "cluster.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <uthash.h>
#include <utlist.h>

#include "jsonw.h"
#include "log.h"
#include "proto.h"
#include "rng.h"

#define CL_BACKOFF_MIN 0.1
#define CL_BACKOFF_MAX 5.0

/* Every Redis key fits its buffer whole: the prefix is bounded by the
 * config, room names and node ids by the protocol. A truncated key would
 * silently name another room's data. */
#define CL_KEY_MAX 256
_Static_assert(CONFIG_KEY_PREFIX_MAX + sizeof("room:") + PROTO_ROOM_MAX + sizeof(":members") <= CL_KEY_MAX,
	       "room keys fit");
_Static_assert(CONFIG_KEY_PREFIX_MAX + sizeof("node:") + 64 + sizeof(":rooms") <= CL_KEY_MAX,
	       "node keys fit");
_Static_assert(CONFIG_KEY_PREFIX_MAX + sizeof("user:") + PROTO_NAME_MAX + sizeof(":convs") <= CL_KEY_MAX,
	       "user keys fit");

/* Seqs and timestamps are JSON numbers in the stream: exact integers up
 * to 2^53. Anything else (0, negative, fractional, huge, NaN) is refused
 * rather than cast: one bad seq would move a room's seq where no real
 * message follows, and the room would ignore every later one. */
#define CL_INT_MAX 9007199254740992.0

/* The server-side Lua scripts (cluster_lua.c). */
extern const char cl_lua_send[];
extern const char cl_lua_load[];
extern const char cl_lua_erase[];
extern const char cl_lua_delta[];
extern const char cl_lua_dm[];
extern const char cl_lua_cleanup[];
extern const char cl_lua_convs[];

/* Conversations indexed per user in Redis (the hub lists at most 500). */
#define CL_CONVS_MAX 500
#define CL_CONVS_MAX_STR "500"

/* A counted string key: "node\x1froom\x1fname", "room\x1fname", ... */
struct cl_count {
	UT_hash_handle hh;
	uint32_t n;
	char key[];
};

/* A remote name in a room (total over nodes). */
struct cl_rname {
	UT_hash_handle hh;
	uint32_t n;
	char name[PROTO_NAME_MAX + 1];
};

struct cl_room {
	UT_hash_handle hh;
	struct cl_rname *names;
	char name[PROTO_ROOM_MAX + 1];
};

/* A room being (re)read from Redis; stream events for it wait here. */
struct cl_ev {
	struct cl_ev *next;
	char json[];
};

struct cl_sync {
	UT_hash_handle hh;
	struct cluster *c;
	int initial;                    /* the hub's first load of the room waits on it */
	struct cl_ev *head, *tail;
	int sent;                       /* a LOAD is in flight */
	char room[PROTO_ROOM_MAX + 1];
};

struct cl_node {
	UT_hash_handle hh;
	int checking;
	char id[65];
};

struct cluster {
	struct ev_loop *loop;
	struct hub *hub;
	struct metrics *m;
	char *host;
	int port;
	long db;
	char *password;
	char *prefix;
	char *channel;
	char node[65];
	double ttl;
	uint32_t hist_max, dedup_max;
	redisAsyncContext *cmd, *sub;
	int cmd_ready, sub_ready, up, closing;
	double backoff;
	ev_timer reconnect, heartbeat;
	ev_prepare refuse;              /* answers `refused` before the loop waits */
	struct hub_pending *refused;    /* sends that cannot go to Redis (utlist) */
	struct cl_count *pres;          /* "node\x1froom\x1fname" -> n (other nodes) */
	struct cl_room *rooms;          /* room -> remote names */
	struct cl_count *users_by_node; /* "node\x1fname" -> n (other nodes) */
	struct cl_count *users;         /* "name" -> n (other nodes) */
	struct cl_count *mine;          /* what this node published: "r\x1froom\x1fname", "u\x1fname" */
	struct cl_sync *syncs;
	struct cl_node *nodes;
	uint64_t rng;
	void (*leave_done)(void *);
	void *leave_arg;
};

/* cluster.c */
uint64_t cl_random(struct cluster *c);

/* cluster_replica.c */
uint32_t cl_count_add(struct cl_count **h, const char *key, int delta);
void cl_count_clear(struct cl_count **h);
struct cl_room *cl_room_get(struct cluster *c, const char *room, int create);
void cl_presence_apply(struct cluster *c, const char *node, const char *room,
		       const char *name, int delta, int notify);
void cl_user_apply(struct cluster *c, const char *node, const char *name, int delta);
void cl_node_seen(struct cluster *c, const char *node);
void cl_node_drop(struct cluster *c, const char *node);

/* cluster_redis.c */
int cl_cmdv(struct cluster *c, redisCallbackFn *fn, void *priv, int argc, const char **argv,
	    const size_t *lens);
int cl_eval(struct cluster *c, redisCallbackFn *fn, void *priv, const char *script,
	    int nkeys, const char **keys, int nargs, const char **args, const size_t *arglens);
void cl_room_key(const struct cluster *c, char *out, size_t cap, const char *room, const char *what);
void cl_user_key(const struct cluster *c, char *out, size_t cap, const char *name, size_t len,
		 const char *what);
char *cl_fmt_u64(char *out, uint64_t v);      /* out: 21 bytes; snprintf costs more per send */
char *cl_fmt_hex64(char *out, uint64_t v);    /* out: 17 bytes */
void cl_ev_begin(struct cluster *c, struct jsonw *w, const char *t);
void cl_send_delta(struct cluster *c, const char *room, const char *name, int delta);
int cl_cleanup(struct cluster *c, const char *node, int restart, redisCallbackFn *cb, void *arg);
void cl_announce(struct cluster *c);
void cl_check_up(struct cluster *c);
void cl_connect(struct cluster *c);
void cl_on_reconnect(struct ev_loop *loop, ev_timer *w, int revents);

/* cluster_sync.c */
void cl_sync_free(struct cluster *c, struct cl_sync *sy);
int cl_split_field(const redisReply *f, char *node, char *name);
int cl_sync_start(struct cluster *c, const char *room, int initial);

/* cluster_stream.c */
int cl_parse_msg(const cJSON *j, struct hub_msg *m, const char **room, const char **epoch);
void cl_event(struct cluster *c, const char *json, size_t len);
void cl_on_message(redisAsyncContext *ac, void *reply, void *priv);

/* cluster_conv.c */
void cl_typing(void *ctx, const char *room, const char *name, int on);
int cl_conversations_list(void *ctx, const char *name, uint32_t max);
void cl_marker(void *ctx, const char *room, const char *name, uint64_t seq);
void cl_ev_conv(struct cluster *c, const cJSON *j, int typing);
void cl_load_markers(struct cluster *c, const char *room, const redisReply *reads);
/* cluster_api.c */
int cl_kick(void *ctx, const char *name, int code, const char *reason);
void cl_ev_kick(struct cluster *c, const cJSON *j);
void cl_online(void *ctx, void (*emit)(void *arg, const char *name), void *arg);

/* cluster_liveness.c */
void cl_on_heartbeat(struct ev_loop *loop, ev_timer *w, int revents);

#endif
