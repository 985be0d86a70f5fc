/*
 * cluster.c - the Redis cluster engine (see cluster.h).
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

/* ---- scripts ------------------------------------------------------------ */

/* KEYS seq epoch hist dedup dedupq; ARGV room from id body ts histmax
 * dedupmax channel epoch-candidate. -> {stored?, seq, epoch} */
static const char cl_lua_send[] =
	"local epoch = redis.call('GET', KEYS[2])\n"
	"if not epoch then epoch = ARGV[9]; redis.call('SET', KEYS[2], epoch) end\n"
	"local dk = ARGV[2] .. '\\31' .. ARGV[3]\n"
	"local d = redis.call('HGET', KEYS[4], dk)\n"
	"if d then return {0, tonumber(d), epoch} end\n"
	"local seq = redis.call('INCR', KEYS[1])\n"
	"local m = cjson.encode({t='m', room=ARGV[1], seq=seq, from=ARGV[2], id=ARGV[3],"
	" body=ARGV[4], ts=tonumber(ARGV[5]), epoch=epoch})\n"
	"local hmax = tonumber(ARGV[6])\n"
	"if hmax > 0 then redis.call('RPUSH', KEYS[3], m); redis.call('LTRIM', KEYS[3], -hmax, -1) end\n"
	"local dmax = tonumber(ARGV[7])\n"
	"if dmax > 0 then\n"
	"  redis.call('HSET', KEYS[4], dk, seq); redis.call('RPUSH', KEYS[5], dk)\n"
	"  while redis.call('LLEN', KEYS[5]) > dmax do redis.call('HDEL', KEYS[4], redis.call('LPOP', KEYS[5])) end\n"
	"end\n"
	"redis.call('PUBLISH', ARGV[8], m)\n"
	"return {1, seq, epoch}\n";

/* KEYS seq epoch hist members; ARGV epoch-candidate -> {seq, epoch, hist, members} */
static const char cl_lua_load[] =
	"local epoch = redis.call('GET', KEYS[2])\n"
	"if not epoch then epoch = ARGV[1]; redis.call('SET', KEYS[2], epoch) end\n"
	"return {tonumber(redis.call('GET', KEYS[1]) or '0'), epoch,"
	" redis.call('LRANGE', KEYS[3], 0, -1), redis.call('HGETALL', KEYS[4])}\n";

/* KEYS hash [set-or-online]; ARGV field delta member channel event kind
 * kind "p": KEYS[2] is the node's room set (member = room);
 * kind "u": KEYS[2] is the online hash (name -> sessions on all nodes). */
static const char cl_lua_delta[] =
	"local d = tonumber(ARGV[2])\n"
	"local n = redis.call('HINCRBY', KEYS[1], ARGV[1], d)\n"
	"if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end\n"
	"if ARGV[6] == 'p' then\n"
	"  if d > 0 then redis.call('SADD', KEYS[2], ARGV[3]) end\n"
	"else\n"
	"  local t = redis.call('HINCRBY', KEYS[2], ARGV[3], d)\n"
	"  if t <= 0 then redis.call('HDEL', KEYS[2], ARGV[3]) end\n"
	"end\n"
	"redis.call('PUBLISH', ARGV[4], ARGV[5])\n"
	"return n\n";

/* KEYS online; ARGV name channel event -> 1 published, 0 nobody online */
static const char cl_lua_dm[] =
	"if tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') > 0 then\n"
	"  redis.call('PUBLISH', ARGV[2], ARGV[3]); return 1\n"
	"end\n"
	"return 0\n";

/* KEYS node-rooms users node-key online; ARGV node prefix channel event */
static const char cl_lua_cleanup[] =
	"local pre = ARGV[1] .. '\\31'\n"
	"for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
	"  local key = ARGV[2] .. 'room:' .. room .. ':members'\n"
	"  for _, f in ipairs(redis.call('HKEYS', key)) do\n"
	"    if string.sub(f, 1, #pre) == pre then redis.call('HDEL', key, f) end\n"
	"  end\n"
	"end\n"
	"redis.call('DEL', KEYS[1])\n"
	"for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do\n"
	"  if string.sub(f, 1, #pre) == pre then\n"
	"    local name = string.sub(f, #pre + 1)\n"
	"    local n = tonumber(redis.call('HGET', KEYS[2], f) or '0')\n"
	"    if redis.call('HINCRBY', KEYS[4], name, -n) <= 0 then redis.call('HDEL', KEYS[4], name) end\n"
	"    redis.call('HDEL', KEYS[2], f)\n"
	"  end\n"
	"end\n"
	"redis.call('DEL', KEYS[3])\n"
	"redis.call('PUBLISH', ARGV[3], ARGV[4])\n"
	"return 1\n";

/* ---- replicas ----------------------------------------------------------- */

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
	struct hub_pending *refused, *refused_tail;  /* sends that cannot go to Redis */
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

static uint64_t cl_random(struct cluster *c)
{
	return rng_next(&c->rng);
}

static struct cl_count *cl_count_find(struct cl_count *h, const char *key)
{
	struct cl_count *e = NULL;

	HASH_FIND_STR(h, key, e);
	return e;
}

/* Add delta to key; returns the new count (0 removes the entry). */
static uint32_t cl_count_add(struct cl_count **h, const char *key, int delta)
{
	struct cl_count *e = cl_count_find(*h, key);
	long n;

	if (!e) {
		if (delta <= 0)
			return 0;
		e = calloc(1, sizeof(*e) + strlen(key) + 1);
		if (!e)
			return 0;
		strcpy(e->key, key);
		HASH_ADD_STR(*h, key, e);
	}
	n = (long)e->n + delta;
	if (n <= 0) {
		HASH_DEL(*h, e);
		free(e);
		return 0;
	}
	e->n = (uint32_t)n;
	return e->n;
}

static void cl_count_clear(struct cl_count **h)
{
	struct cl_count *e, *tmp;

	HASH_ITER(hh, *h, e, tmp) {
		HASH_DEL(*h, e);
		free(e);
	}
}

static struct cl_room *cl_room_get(struct cluster *c, const char *room, int create)
{
	struct cl_room *r = NULL;

	HASH_FIND_STR(c->rooms, room, r);
	if (!r && create && (r = calloc(1, sizeof(*r)))) {
		snprintf(r->name, sizeof(r->name), "%s", room);
		HASH_ADD_STR(c->rooms, name, r);
	}
	return r;
}

/* Remote presence of name in room changes by delta on node; local members
 * hear about it when the name appears or disappears cluster-wide. */
static void cl_presence_apply(struct cluster *c, const char *node, const char *room,
			      const char *name, int delta, int notify)
{
	char key[65 + PROTO_ROOM_MAX + PROTO_NAME_MAX + 4];
	struct cl_room *r = cl_room_get(c, room, delta > 0);
	struct cl_rname *rn = NULL;

	if (!r)
		return;
	snprintf(key, sizeof(key), "%s\x1f%s\x1f%s", node, room, name);
	if (delta < 0 && !cl_count_find(c->pres, key))
		return;            /* never seen: nothing to undo */
	cl_count_add(&c->pres, key, delta);
	HASH_FIND_STR(r->names, name, rn);
	if (!rn && delta > 0 && (rn = calloc(1, sizeof(*rn)))) {
		snprintf(rn->name, sizeof(rn->name), "%s", name);
		HASH_ADD_STR(r->names, name, rn);
	}
	if (!rn)
		return;
	if (delta > 0) {
		if (rn->n++ == 0 && notify)
			hub_remote_presence(c->hub, room, name, 1);
		return;
	}
	if (rn->n > 0 && --rn->n == 0) {
		HASH_DEL(r->names, rn);
		free(rn);
		if (notify)
			hub_remote_presence(c->hub, room, name, 0);
	}
}

static void cl_user_apply(struct cluster *c, const char *node, const char *name, int delta)
{
	char key[65 + PROTO_NAME_MAX + 2];

	snprintf(key, sizeof(key), "%s\x1f%s", node, name);
	if (delta < 0 && !cl_count_find(c->users_by_node, key))
		return;
	cl_count_add(&c->users_by_node, key, delta);
	cl_count_add(&c->users, name, delta);
}

static void cl_node_seen(struct cluster *c, const char *node)
{
	struct cl_node *n = NULL;

	if (!strcmp(node, c->node))
		return;
	HASH_FIND_STR(c->nodes, node, n);
	if (!n && (n = calloc(1, sizeof(*n)))) {
		snprintf(n->id, sizeof(n->id), "%s", node);
		HASH_ADD_STR(c->nodes, id, n);
	}
}

/* Forget everything another node had: its users and its presence. */
static void cl_node_drop(struct cluster *c, const char *node)
{
	size_t len = strlen(node);
	struct cl_count *e, *tmp;
	struct cl_node *n = NULL;

	HASH_ITER(hh, c->pres, e, tmp) {
		if (!strncmp(e->key, node, len) && e->key[len] == 0x1f) {
			char room[PROTO_ROOM_MAX + 1], name[PROTO_NAME_MAX + 1];
			const char *p = e->key + len + 1, *q = strchr(p, 0x1f);
			uint32_t k = e->n;
			if (!q || (size_t)(q - p) > PROTO_ROOM_MAX)
				continue;
			memcpy(room, p, (size_t)(q - p));
			room[q - p] = '\0';
			snprintf(name, sizeof(name), "%s", q + 1);
			while (k--)
				cl_presence_apply(c, node, room, name, -1, 1);
		}
	}
	HASH_ITER(hh, c->users_by_node, e, tmp) {
		if (!strncmp(e->key, node, len) && e->key[len] == 0x1f) {
			uint32_t k = e->n;
			char name[PROTO_NAME_MAX + 1];
			snprintf(name, sizeof(name), "%s", e->key + len + 1);
			while (k--)
				cl_user_apply(c, node, name, -1);
		}
	}
	HASH_FIND_STR(c->nodes, node, n);
	if (n) {
		HASH_DEL(c->nodes, n);
		free(n);
	}
}

/* ---- commands ----------------------------------------------------------- */

static int cl_cmdv(struct cluster *c, redisCallbackFn *fn, void *priv, int argc, const char **argv,
		   const size_t *lens)
{
	if (!c->cmd || !c->cmd_ready)
		return -1;
	return redisAsyncCommandArgv(c->cmd, fn, priv, argc, argv, lens) == REDIS_OK ? 0 : -1;
}

/* EVAL script with keys and args given as C strings (lens for binary-safe
 * ones may be NULL entries -> strlen). */
static int cl_eval(struct cluster *c, redisCallbackFn *fn, void *priv, const char *script,
		   int nkeys, const char **keys, int nargs, const char **args, const size_t *arglens)
{
	const char *argv[24];
	size_t lens[24];
	char nk[16];
	int i, argc = 0;

	if (3 + nkeys + nargs > 24)
		return -1;
	snprintf(nk, sizeof(nk), "%d", nkeys);
	argv[argc] = "EVAL"; lens[argc++] = 4;
	argv[argc] = script; lens[argc++] = strlen(script);
	argv[argc] = nk; lens[argc++] = strlen(nk);
	for (i = 0; i < nkeys; i++) {
		argv[argc] = keys[i];
		lens[argc++] = strlen(keys[i]);
	}
	for (i = 0; i < nargs; i++) {
		argv[argc] = args[i];
		lens[argc++] = arglens && arglens[i] ? arglens[i] : strlen(args[i]);
	}
	return cl_cmdv(c, fn, priv, argc, argv, lens);
}

static void cl_room_key(const struct cluster *c, char *out, size_t cap, const char *room, const char *what)
{
	snprintf(out, cap, "%sroom:%s:%s", c->prefix, room, what);
}

/* An event JSON: {"t":t,"node":N, ...}; the caller adds fields. */
static void cl_ev_begin(struct cluster *c, struct jsonw *w, const char *t)
{
	jsonw_init(w, 256);
	jsonw_obj_open(w);
	jsonw_kv_cstr(w, "t", t);
	jsonw_kv_cstr(w, "node", c->node);
}

/* Publish a presence or user delta and keep the Redis hash in step. */
static void cl_send_delta(struct cluster *c, const char *room, const char *name, int delta)
{
	char hash[CL_KEY_MAX], set[CL_KEY_MAX], field[128], d[8];
	struct jsonw w;
	struct msgbuf *mb;

	cl_ev_begin(c, &w, room ? "p" : "u");
	if (room)
		jsonw_kv_cstr(&w, "room", room);
	jsonw_kv_cstr(&w, "name", name);
	jsonw_key(&w, "d");
	jsonw_raw(&w, delta > 0 ? "1" : "-1", delta > 0 ? 1 : 2);
	jsonw_obj_close(&w);
	if (!(mb = jsonw_finish(&w)))
		return;
	snprintf(field, sizeof(field), "%s\x1f%s", c->node, name);
	snprintf(d, sizeof(d), "%d", delta);
	if (room) {
		const char *keys[2] = { hash, set };
		const char *args[6] = { field, d, room, c->channel, (const char *)mb->data, "p" };
		cl_room_key(c, hash, sizeof(hash), room, "members");
		snprintf(set, sizeof(set), "%snode:%s:rooms", c->prefix, c->node);
		cl_eval(c, NULL, NULL, cl_lua_delta, 2, keys, 6, args, NULL);
	} else {
		const char *keys[2] = { hash, set };
		const char *args[6] = { field, d, name, c->channel, (const char *)mb->data, "u" };
		snprintf(hash, sizeof(hash), "%susers", c->prefix);
		snprintf(set, sizeof(set), "%sonline", c->prefix);
		cl_eval(c, NULL, NULL, cl_lua_delta, 2, keys, 6, args, NULL);
	}
	msgbuf_unref(mb);
}

/* Remove node's presence and users from Redis and tell every node (an "x"
 * event; restart = the node itself is re-announcing). cb may be NULL. */
static int cl_cleanup(struct cluster *c, const char *node, int restart, redisCallbackFn *cb, void *arg)
{
	char set[CL_KEY_MAX], users[CL_KEY_MAX], nodekey[CL_KEY_MAX], online[CL_KEY_MAX], ev[160];
	const char *keys[4] = { set, users, nodekey, online };
	const char *args[4] = { node, c->prefix, c->channel, ev };

	snprintf(set, sizeof(set), "%snode:%s:rooms", c->prefix, node);
	snprintf(users, sizeof(users), "%susers", c->prefix);
	snprintf(nodekey, sizeof(nodekey), "%snode:%s", c->prefix, node);
	snprintf(online, sizeof(online), "%sonline", c->prefix);
	snprintf(ev, sizeof(ev), "{\"t\":\"x\",\"node\":\"%s\"%s}", node, restart ? ",\"restart\":true" : "");
	return cl_eval(c, cb, arg, cl_lua_cleanup, 4, keys, 4, args, NULL);
}

/* ---- room sync (first load, gap, reconnect) ----------------------------- */

static void cl_event(struct cluster *c, const char *json, size_t len);

static void cl_sync_free(struct cluster *c, struct cl_sync *sy)
{
	struct cl_ev *e, *next;

	for (e = sy->head; e; e = next) {
		next = e->next;
		free(e);
	}
	HASH_DEL(c->syncs, sy);
	free(sy);
}

/* A Redis hash field "node\x1fname" into its parts (node[65], name[33]). */
static int cl_split_field(const redisReply *f, char *node, char *name)
{
	const char *sep;
	size_t nlen;

	if (f->type != REDIS_REPLY_STRING || !(sep = memchr(f->str, 0x1f, f->len)))
		return -1;
	nlen = (size_t)(sep - f->str);
	if (nlen >= 65 || f->len - nlen - 1 > PROTO_NAME_MAX)
		return -1;
	memcpy(node, f->str, nlen);
	node[nlen] = '\0';
	memcpy(name, sep + 1, f->len - nlen - 1);
	name[f->len - nlen - 1] = '\0';
	return 0;
}

static int cl_reply_str(const redisReply *r, const char **s, size_t *len)
{
	if (!r || r->type != REDIS_REPLY_STRING)
		return -1;
	*s = r->str;
	*len = r->len;
	return 0;
}

/* Seqs and timestamps are JSON numbers in the stream: exact integers up
 * to 2^53. Anything else (0, negative, fractional, huge, NaN) is refused
 * rather than cast: one bad seq would move a room's seq where no real
 * message follows, and the room would ignore every later one. */
#define CL_INT_MAX 9007199254740992.0

static int cl_int(const cJSON *it, double min, uint64_t *out)
{
	double v;

	if (!cJSON_IsNumber(it))
		return -1;
	v = it->valuedouble;
	if (!(v >= min && v <= CL_INT_MAX) || floor(v) != v)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

/* A "m" event, parsed and checked: fills m (strings borrowed from j). */
static int cl_parse_msg(const cJSON *j, struct hub_msg *m, const char **room, const char **epoch)
{
	const cJSON *seq = cJSON_GetObjectItemCaseSensitive(j, "seq");
	const cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "ts");
	const cJSON *rm = cJSON_GetObjectItemCaseSensitive(j, "room");
	const cJSON *from = cJSON_GetObjectItemCaseSensitive(j, "from");
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
	const cJSON *body = cJSON_GetObjectItemCaseSensitive(j, "body");
	const cJSON *ep = cJSON_GetObjectItemCaseSensitive(j, "epoch");

	if (cl_int(seq, 1, &m->seq) || cl_int(ts, 0, &m->ts) || !cJSON_IsString(rm) ||
	    !cJSON_IsString(from) || !cJSON_IsString(id) || !cJSON_IsString(body) ||
	    !proto_valid_room(rm->valuestring, strlen(rm->valuestring)) ||
	    !proto_valid_name(from->valuestring, strlen(from->valuestring)) ||
	    !id->valuestring[0] || strlen(id->valuestring) > PROTO_ID_MAX ||
	    (cJSON_IsString(ep) && (!ep->valuestring[0] || strlen(ep->valuestring) > 16)))
		return -1;
	m->from = from->valuestring;
	m->id = id->valuestring;
	m->body = body->valuestring;
	m->body_len = strlen(body->valuestring);
	*room = rm->valuestring;
	*epoch = cJSON_IsString(ep) ? ep->valuestring : NULL;
	return 0;
}

static int cl_sync_start(struct cluster *c, const char *room, int initial);
static void cl_check_up(struct cluster *c);
static void cl_announce(struct cluster *c);

/* The LOAD script's answer {seq, epoch, hist, members}, checked; NULL if
 * it is not one (Redis gone, an error, or data out of range). */
static const redisReply *cl_load_reply(const redisReply *r, const char **epoch, size_t *len)
{
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 4 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER || r->element[0]->integer < 0 ||
	    (double)r->element[0]->integer > CL_INT_MAX ||
	    cl_reply_str(r->element[1], epoch, len) || *len < 1 || *len > 16 ||
	    r->element[2]->type != REDIS_REPLY_ARRAY || r->element[3]->type != REDIS_REPLY_ARRAY)
		return NULL;
	return r;
}

/* Call fn for each well-formed message of a history list. */
static void cl_hist_each(const redisReply *hist, void (*fn)(void *arg, const struct hub_msg *m),
			 void *arg)
{
	size_t i;

	for (i = 0; i < hist->elements; i++) {
		const redisReply *x = hist->element[i];
		cJSON *j = x->type == REDIS_REPLY_STRING ? cJSON_ParseWithLength(x->str, x->len) : NULL;
		const char *rm, *ep;
		struct hub_msg m;

		if (j && !cl_parse_msg(j, &m, &rm, &ep))
			fn(arg, &m);
		cJSON_Delete(j);
	}
}

struct cl_load_ctx {
	struct cluster *c;
	const char *room;
	const char *epoch;
	uint64_t shared_seq;
};

static void cl_load_first_msg(void *arg, const struct hub_msg *m)
{
	struct cl_load_ctx *lc = arg;

	hub_load_message(lc->c->hub, lc->room, m);
}

/* First load: the room takes the shared epoch, seq and history (the hub
 * drops entries past that seq). */
static void cl_load_first(struct cluster *c, struct cl_sync *sy, const redisReply *r, const char *ep)
{
	struct cl_load_ctx lc = { c, sy->room, ep, 0 };

	hub_load_state(c->hub, sy->room, ep, (uint64_t)r->element[0]->integer);
	cl_hist_each(r->element[2], cl_load_first_msg, &lc);
	hub_room_loaded(c->hub, sy->room, 1);
}

static void cl_load_resync_msg(void *arg, const struct hub_msg *m)
{
	struct cl_load_ctx *lc = arg;

	/* Nothing past the shared seq exists: such an entry would move the
	 * room where no real message follows. */
	if (m->seq > lc->shared_seq)
		return;
	if (hub_apply(lc->c->hub, lc->room, lc->epoch, m) < 0) {
		hub_room_rebase(lc->c->hub, lc->room, lc->epoch, m->seq - 1);
		hub_apply(lc->c->hub, lc->room, lc->epoch, m);
	}
}

/* Resync: apply what this node missed, in order. A new epoch (Redis lost
 * its data) restarts the room; a gap older than the capped history is
 * skipped, said in the log. */
static void cl_load_resync(struct cluster *c, struct cl_sync *sy, const redisReply *r, const char *ep)
{
	struct cl_load_ctx lc = { c, sy->room, ep, (uint64_t)r->element[0]->integer };
	long long held;

	hub_room_rebase(c->hub, sy->room, ep, 0);
	cl_hist_each(r->element[2], cl_load_resync_msg, &lc);
	held = hub_room_seq(c->hub, sy->room);
	if (held >= 0 && (uint64_t)held < lc.shared_seq)
		hub_room_rebase(c->hub, sy->room, ep, lc.shared_seq);
}

/* The room's presence on other nodes, as Redis has it now: drop what this
 * node held for the room, then take Redis' view. */
static void cl_load_presence(struct cluster *c, const char *room, const redisReply *members)
{
	struct cl_room *cr = cl_room_get(c, room, 0);
	struct cl_count *pc, *ptmp;
	char pre[PROTO_ROOM_MAX + 2];
	size_t i;

	snprintf(pre, sizeof(pre), "%s\x1f", room);
	HASH_ITER(hh, c->pres, pc, ptmp) {
		const char *p = strchr(pc->key, 0x1f);
		if (p && !strncmp(p + 1, pre, strlen(pre))) {
			HASH_DEL(c->pres, pc);
			free(pc);
		}
	}
	if (cr) {
		struct cl_rname *rn, *rtmp;
		HASH_ITER(hh, cr->names, rn, rtmp) {
			HASH_DEL(cr->names, rn);
			free(rn);
		}
	}
	for (i = 0; i + 1 < members->elements; i += 2) {
		const redisReply *v = members->element[i + 1];
		char node[65], name[PROTO_NAME_MAX + 1];
		long n;
		if (cl_split_field(members->element[i], node, name))
			continue;
		n = v->type == REDIS_REPLY_STRING ? strtol(v->str, NULL, 10) : 0;
		if (!strcmp(node, c->node))
			continue;
		cl_node_seen(c, node);
		while (n-- > 0)
			cl_presence_apply(c, node, room, name, 1, 0);
	}
}

/* The sync is over: free it, then replay the events that arrived
 * meanwhile, in order (duplicates are ignored). */
static void cl_sync_finish(struct cluster *c, struct cl_sync *sy)
{
	struct cl_ev *e = sy->head, *next;

	sy->head = sy->tail = NULL;
	cl_sync_free(c, sy);
	for (; e; e = next) {
		next = e->next;
		cl_event(c, e->json, strlen(e->json));
		free(e);
	}
}

static void cl_on_load(redisAsyncContext *ac, void *reply, void *priv)
{
	struct cl_sync *sy = priv;
	struct cluster *c = sy->c;
	const redisReply *r;
	const char *epoch;
	char ep[17];
	size_t len;

	sy->sent = 0;
	if (c->closing)
		return;            /* cluster_free frees the syncs */
	if (!(r = cl_load_reply(reply, &epoch, &len))) {
		c->m->redis_failures++;
		log_warn(NULL, "cluster: loading room %s failed: %s", sy->room,
			 reply && ((redisReply *)reply)->type == REDIS_REPLY_ERROR
			 ? ((redisReply *)reply)->str : "no answer");
		if (sy->initial)
			hub_room_loaded(c->hub, sy->room, 0);
		cl_sync_free(c, sy);
		return;
	}
	snprintf(ep, sizeof(ep), "%.*s", (int)len, epoch);
	if (sy->initial)
		cl_load_first(c, sy, r, ep);
	else
		cl_load_resync(c, sy, r, ep);
	cl_load_presence(c, sy->room, r->element[3]);
	cl_sync_finish(c, sy);
}

static void cl_sync_send(struct cluster *c, struct cl_sync *sy)
{
	char k1[CL_KEY_MAX], k2[CL_KEY_MAX], k3[CL_KEY_MAX], k4[CL_KEY_MAX], cand[17];
	const char *keys[4] = { k1, k2, k3, k4 };
	const char *args[1] = { cand };

	cl_room_key(c, k1, sizeof(k1), sy->room, "seq");
	cl_room_key(c, k2, sizeof(k2), sy->room, "epoch");
	cl_room_key(c, k3, sizeof(k3), sy->room, "hist");
	cl_room_key(c, k4, sizeof(k4), sy->room, "members");
	snprintf(cand, sizeof(cand), "%016llx", (unsigned long long)cl_random(c));
	if (cl_eval(c, cl_on_load, sy, cl_lua_load, 4, keys, 1, args, NULL) == 0)
		sy->sent = 1;
}

static int cl_sync_start(struct cluster *c, const char *room, int initial)
{
	struct cl_sync *sy = NULL;

	HASH_FIND_STR(c->syncs, room, sy);
	if (sy) {
		/* A resync of this room is in flight (it was freed and is used
		 * again meanwhile): its answer is a whole snapshot, and every
		 * event since is queued on it, so it serves as the first load. */
		if (initial && !sy->initial)
			sy->initial = initial;
		return 0;
	}
	if (!(sy = calloc(1, sizeof(*sy))))
		return -1;
	sy->c = c;
	sy->initial = initial;
	snprintf(sy->room, sizeof(sy->room), "%s", room);
	HASH_ADD_STR(c->syncs, room, sy);
	if (!initial)
		c->m->redis_resyncs++;
	cl_sync_send(c, sy);
	return 0;
}

/* ---- the event stream --------------------------------------------------- */

/* "m": a room message, in seq order. A room being (re)read keeps it for
 * after the load; a gap starts a re-read (which brings this one too). */
static void cl_ev_message(struct cluster *c, const cJSON *j, const char *json, size_t len)
{
	struct cl_sync *sy = NULL;
	const char *room, *epoch;
	struct hub_msg m;
	struct cl_ev *e;

	if (cl_parse_msg(j, &m, &room, &epoch))
		return;
	HASH_FIND_STR(c->syncs, room, sy);
	if (!sy) {
		if (hub_apply(c->hub, room, epoch, &m) < 0) {
			log_info(NULL, "cluster: gap in room %s before seq %llu; re-reading it", room,
				 (unsigned long long)m.seq);
			cl_sync_start(c, room, 0);
		}
		return;
	}
	if (!(e = malloc(sizeof(*e) + len + 1)))
		return;
	memcpy(e->json, json, len);
	e->json[len] = '\0';
	e->next = NULL;
	if (sy->tail)
		sy->tail->next = e;
	else
		sy->head = e;
	sy->tail = e;
}

/* "d": a direct message for the local sessions of its recipient. */
static void cl_ev_direct(struct cluster *c, const cJSON *j)
{
	const cJSON *to = cJSON_GetObjectItemCaseSensitive(j, "to");
	const cJSON *from = cJSON_GetObjectItemCaseSensitive(j, "from");
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
	const cJSON *body = cJSON_GetObjectItemCaseSensitive(j, "body");
	const cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "ts");
	struct hub_msg m;

	if (!cJSON_IsString(to) || !cJSON_IsString(from) || !cJSON_IsString(id) ||
	    !cJSON_IsString(body) || cl_int(ts, 0, &m.ts))
		return;
	m.seq = 0;
	m.from = from->valuestring;
	m.id = id->valuestring;
	m.body = body->valuestring;
	m.body_len = strlen(body->valuestring);
	hub_direct(c->hub, to->valuestring, &m);
}

/* "p" / "u": another node's presence or user delta. */
static void cl_ev_delta(struct cluster *c, const cJSON *j, const char *node, int user)
{
	const cJSON *room = cJSON_GetObjectItemCaseSensitive(j, "room");
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "d");
	struct cl_sync *sy = NULL;

	if (!cJSON_IsString(name) || !cJSON_IsNumber(d) ||
	    !proto_valid_name(name->valuestring, strlen(name->valuestring)))
		return;
	cl_node_seen(c, node);
	if (user) {
		cl_user_apply(c, node, name->valuestring, d->valueint > 0 ? 1 : -1);
		return;
	}
	if (!cJSON_IsString(room) || !proto_valid_room(room->valuestring, strlen(room->valuestring)))
		return;
	HASH_FIND_STR(c->syncs, room->valuestring, sy);
	/* During a load, the load's snapshot wins. */
	if (!sy)
		cl_presence_apply(c, node, room->valuestring, name->valuestring,
				  d->valueint > 0 ? 1 : -1, 1);
}

/* One event from the channel: dispatch on its type "t". */
static void cl_event(struct cluster *c, const char *json, size_t len)
{
	cJSON *j = cJSON_ParseWithLength(json, len);
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "t");
	const cJSON *node = cJSON_GetObjectItemCaseSensitive(j, "node");
	const char *nd = cJSON_IsString(node) ? node->valuestring : "";
	int restart = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "restart"));

	if (!cJSON_IsString(t)) {
		/* not an event */
	} else if (!strcmp(t->valuestring, "m")) {
		cl_ev_message(c, j, json, len);
	} else if (!strcmp(t->valuestring, "d")) {
		cl_ev_direct(c, j);
	} else if (!strcmp(nd, c->node) && !strcmp(t->valuestring, "x") && !restart && !c->leave_done) {
		/* Another node took this one for dead (a stall longer than
		 * node_ttl) and removed its sessions: announce them again. */
		log_warn(NULL, "cluster: the other nodes took this node for dead; announcing its sessions again");
		cl_announce(c);
	} else if (!strcmp(nd, c->node) || !nd[0]) {
		/* our own presence/user events */
	} else if (!strcmp(t->valuestring, "p") || !strcmp(t->valuestring, "u")) {
		cl_ev_delta(c, j, nd, t->valuestring[0] == 'u');
	} else if (!strcmp(t->valuestring, "x")) {
		log_info(NULL, "cluster: node %s %s", nd, restart ? "(re)connected" : "left");
		cl_node_drop(c, nd);
	}
	cJSON_Delete(j);
}

static void cl_on_message(redisAsyncContext *ac, void *reply, void *priv)
{
	struct cluster *c = ac->data;
	redisReply *r = reply;

	if (!c || c->closing || !r || r->type != REDIS_REPLY_ARRAY || r->elements != 3)
		return;
	if (r->element[0]->type == REDIS_REPLY_STRING && !strcmp(r->element[0]->str, "subscribe")) {
		c->sub_ready = 1;
		cl_check_up(c);
		return;
	}
	if (r->element[0]->type == REDIS_REPLY_STRING && !strcmp(r->element[0]->str, "message") &&
	    r->element[2]->type == REDIS_REPLY_STRING)
		cl_event(c, r->element[2]->str, r->element[2]->len);
}

/* ---- engine callbacks --------------------------------------------------- */

struct cl_call {
	struct cluster *c;
	struct hub_pending *p;
	double t0;
};

static void cl_on_send(redisAsyncContext *ac, void *reply, void *priv)
{
	struct cl_call *call = priv;
	struct cluster *c = call->c;
	redisReply *r = reply;
	enum proto_err st = PROTO_ERR_UNAVAILABLE;

	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
	    r->element[1]->type == REDIS_REPLY_INTEGER) {
		double dt = ev_time() - call->t0;
		call->p->seq = (uint64_t)r->element[1]->integer;
		st = PROTO_OK;
		c->m->redis_sends++;
		c->m->redis_send_seconds += dt;
		if (dt > c->m->redis_send_max)
			c->m->redis_send_max = dt;
	} else {
		c->m->redis_failures++;
		if (r && r->type == REDIS_REPLY_ERROR)
			log_warn(NULL, "cluster: send script failed: %s", r->str);
	}
	/* The sender hears unavailable when the outcome is unknown (Redis
	 * gone mid-call); a retry with the same id is de-duplicated. */
	if (!c->closing)
		hub_send_done(c->hub, call->p, st);
	hub_pending_free(call->p);
	free(call);
}

/* A send that cannot reach Redis is answered unavailable later in this
 * loop iteration, never inside cl_submit (the engine contract). */
static void cl_refuse(struct cluster *c, struct hub_pending *p)
{
	c->m->redis_failures++;
	p->next = NULL;
	if (c->refused_tail)
		c->refused_tail->next = p;
	else
		c->refused = p;
	c->refused_tail = p;
	ev_prepare_start(c->loop, &c->refuse);
}

static void cl_on_refuse(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct cluster *c = w->data;
	struct hub_pending *p;

	ev_prepare_stop(loop, w);
	while ((p = c->refused)) {
		c->refused = p->next;
		if (!c->refused)
			c->refused_tail = NULL;
		hub_send_done(c->hub, p, PROTO_ERR_UNAVAILABLE);
		hub_pending_free(p);
	}
}

static void cl_submit(void *ctx, struct hub *hub, struct hub_pending *p)
{
	struct cluster *c = ctx;
	char k[5][CL_KEY_MAX], ts[24], hmax[16], dmax[16], cand[17];
	const char *keys[5] = { k[0], k[1], k[2], k[3], k[4] };
	const char *args[9] = { p->room, p->from, p->id, p->body, ts, hmax, dmax, c->channel, cand };
	size_t lens[9] = { 0, 0, 0, p->body_len ? p->body_len : 0, 0, 0, 0, 0, 0 };
	struct cl_call *call;

	if (!c->up || !(call = calloc(1, sizeof(*call)))) {
		cl_refuse(c, p);
		return;
	}
	cl_room_key(c, k[0], sizeof(k[0]), p->room, "seq");
	cl_room_key(c, k[1], sizeof(k[1]), p->room, "epoch");
	cl_room_key(c, k[2], sizeof(k[2]), p->room, "hist");
	cl_room_key(c, k[3], sizeof(k[3]), p->room, "dedup");
	cl_room_key(c, k[4], sizeof(k[4]), p->room, "dedupq");
	snprintf(ts, sizeof(ts), "%llu", (unsigned long long)p->ts);
	snprintf(hmax, sizeof(hmax), "%u", c->hist_max);
	snprintf(dmax, sizeof(dmax), "%u", c->dedup_max);
	snprintf(cand, sizeof(cand), "%016llx", (unsigned long long)cl_random(c));
	call->c = c;
	call->p = p;
	call->t0 = ev_time();
	if (p->body_len == 0)
		args[3] = "";
	if (cl_eval(c, cl_on_send, call, cl_lua_send, 5, keys, 9, args, lens)) {
		free(call);
		cl_refuse(c, p);
	}
}

static int cl_room_load(void *ctx, struct hub *hub, const char *room)
{
	struct cluster *c = ctx;

	if (!c->up || cl_sync_start(c, room, 1))
		return -1;
	return 1;
}

static void cl_presence(void *ctx, const char *room, const char *name, int join)
{
	struct cluster *c = ctx;
	char key[PROTO_ROOM_MAX + PROTO_NAME_MAX + 4];

	snprintf(key, sizeof(key), "r\x1f%s\x1f%s", room, name);
	cl_count_add(&c->mine, key, join ? 1 : -1);
	if (c->up)
		cl_send_delta(c, room, name, join ? 1 : -1);
}

static void cl_user(void *ctx, const char *name, int online)
{
	struct cluster *c = ctx;
	char key[PROTO_NAME_MAX + 3];

	snprintf(key, sizeof(key), "u\x1f%s", name);
	cl_count_add(&c->mine, key, online ? 1 : -1);
	if (c->up)
		cl_send_delta(c, NULL, name, online ? 1 : -1);
}

static void cl_names(void *ctx, const char *room, void (*emit)(void *, const char *), void *arg)
{
	struct cluster *c = ctx;
	struct cl_room *r = cl_room_get(c, room, 0);
	struct cl_rname *rn, *tmp;

	if (!r)
		return;
	HASH_ITER(hh, r->names, rn, tmp)
		emit(arg, rn->name);
}

static void cl_on_dm(redisAsyncContext *ac, void *reply, void *priv)
{
	struct cl_call *call = priv;
	redisReply *r = reply;

	if (!call->c->closing)
		hub_dm_done(call->c->hub, call->p,
			    !r || r->type != REDIS_REPLY_INTEGER ? PROTO_ERR_UNAVAILABLE
			    : r->integer ? PROTO_OK : PROTO_ERR_NOT_FOUND);
	hub_pending_free(call->p);
	free(call);
}

static enum proto_err cl_dm(void *ctx, struct hub *hub, struct hub_pending *p)
{
	struct cluster *c = ctx;
	struct cl_call *call;
	struct msgbuf *mb;
	struct jsonw w;
	int rc;

	if (!c->up)
		return PROTO_ERR_UNAVAILABLE;
	cl_ev_begin(c, &w, "d");
	jsonw_kv_cstr(&w, "to", p->to);
	jsonw_kv_cstr(&w, "from", p->from);
	jsonw_kv_cstr(&w, "id", p->id);
	jsonw_kv_str(&w, "body", p->body, p->body_len);
	jsonw_kv_u64(&w, "ts", p->ts);
	jsonw_obj_close(&w);
	if (!(mb = jsonw_finish(&w)) || !(call = calloc(1, sizeof(*call)))) {
		msgbuf_unref(mb);
		return PROTO_ERR_INTERNAL;
	}
	call->c = c;
	call->p = p;
	{
		char online[CL_KEY_MAX];
		const char *keys[1] = { online };
		const char *args[3] = { p->to, c->channel, (const char *)mb->data };
		size_t lens[3] = { 0, 0, mb->len };
		snprintf(online, sizeof(online), "%sonline", c->prefix);
		rc = cl_eval(c, cl_on_dm, call, cl_lua_dm, 1, keys, 3, args, lens);
	}
	msgbuf_unref(mb);
	if (rc) {
		free(call);
		return PROTO_ERR_UNAVAILABLE;
	}
	return PROTO_OK;
}

/* ---- connections -------------------------------------------------------- */

static void cl_connect(struct cluster *c);

static void cl_set_up(struct cluster *c, int up)
{
	if (c->up == up)
		return;
	c->up = up;
	c->m->redis_up = up;
	if (up)
		log_info(NULL, "cluster: connected to Redis %s:%d as node %s", c->host, c->port, c->node);
	else
		log_warn(NULL, "cluster: Redis %s:%d unavailable; sends get unavailable until it returns",
			 c->host, c->port);
}

/* Re-announce this node after (re)connecting: clear what an earlier life
 * of this node left, then publish our sessions and presence again. */
static void cl_on_users(redisAsyncContext *ac, void *reply, void *priv);

static void cl_announce(struct cluster *c)
{
	char users[CL_KEY_MAX];
	const char *hg[2] = { "HGETALL", users };
	struct cl_count *e, *tmp;

	snprintf(users, sizeof(users), "%susers", c->prefix);
	cl_cleanup(c, c->node, 1, NULL, NULL);
	HASH_ITER(hh, c->mine, e, tmp) {
		uint32_t k;
		for (k = 0; k < e->n; k++) {
			if (e->key[0] == 'u') {
				cl_send_delta(c, NULL, e->key + 2, 1);
			} else {
				char room[PROTO_ROOM_MAX + 1];
				const char *p = e->key + 2, *q = strchr(p, 0x1f);
				if (!q || (size_t)(q - p) > PROTO_ROOM_MAX)
					break;
				memcpy(room, p, (size_t)(q - p));
				room[q - p] = '\0';
				cl_send_delta(c, room, q + 1, 1);
			}
		}
	}
	/* Who is online on the other nodes. */
	cl_cmdv(c, cl_on_users, c, 2, hg, NULL);
}

static void cl_on_users(redisAsyncContext *ac, void *reply, void *priv)
{
	struct cluster *c = priv;
	redisReply *r = reply;
	size_t i;

	if (c->closing || !r || r->type != REDIS_REPLY_ARRAY)
		return;
	cl_count_clear(&c->users_by_node);
	cl_count_clear(&c->users);
	for (i = 0; i + 1 < r->elements; i += 2) {
		const redisReply *v = r->element[i + 1];
		char node[65], name[PROTO_NAME_MAX + 1];
		long n;
		if (cl_split_field(r->element[i], node, name))
			continue;
		if (!strcmp(node, c->node))
			continue;
		cl_node_seen(c, node);
		n = v->type == REDIS_REPLY_STRING ? strtol(v->str, NULL, 10) : 0;
		while (n-- > 0)
			cl_user_apply(c, node, name, 1);
	}
}

static void cl_resync_room(void *arg, const char *room)
{
	cl_sync_start(arg, room, 0);
}

static void cl_check_up(struct cluster *c)
{
	if (c->up || !c->cmd_ready || !c->sub_ready)
		return;
	c->backoff = CL_BACKOFF_MIN;
	cl_set_up(c, 1);
	cl_announce(c);
	/* Whatever was published while we were away: re-read every room. */
	hub_rooms_foreach(c->hub, cl_resync_room, c);
	ev_timer_again(c->loop, &c->heartbeat);
	ev_invoke(c->loop, &c->heartbeat, 0);
}

static void cl_schedule_reconnect(struct cluster *c)
{
	if (c->closing || ev_is_active(&c->reconnect))
		return;
	ev_timer_set(&c->reconnect, c->backoff, 0.);
	ev_timer_start(c->loop, &c->reconnect);
	c->backoff = fmin(c->backoff * 2, CL_BACKOFF_MAX);
}

/* One connection is gone: the other is closed too and both come back
 * together, so the subscription and the commands never disagree. */
static void cl_lost(struct cluster *c)
{
	struct cl_sync *sy, *tmp;

	cl_set_up(c, 0);
	c->cmd_ready = c->sub_ready = 0;
	if (c->cmd) {
		redisAsyncContext *a = c->cmd;
		c->cmd = NULL;
		a->data = NULL;
		redisAsyncFree(a);          /* pending callbacks run with NULL replies */
	}
	if (c->sub) {
		redisAsyncContext *a = c->sub;
		c->sub = NULL;
		a->data = NULL;
		redisAsyncFree(a);
	}
	/* Rooms still loading cannot be answered now. */
	HASH_ITER(hh, c->syncs, sy, tmp) {
		if (sy->sent)
			continue;       /* its callback frees it */
		if (sy->initial)
			hub_room_loaded(c->hub, sy->room, 0);
		cl_sync_free(c, sy);
	}
	cl_schedule_reconnect(c);
}

static void cl_on_disconnect(const redisAsyncContext *ac, int status)
{
	struct cluster *c = ac->data;

	if (!c)
		return;
	/* hiredis frees ac after this returns. */
	if (ac == c->cmd)
		c->cmd = NULL;
	if (ac == c->sub)
		c->sub = NULL;
	if (!c->closing) {
		log_warn(NULL, "cluster: Redis connection lost: %s", ac->errstr[0] ? ac->errstr : "closed");
		cl_lost(c);
	}
}

static void cl_on_connect(const redisAsyncContext *ac, int status)
{
	struct cluster *c = ac->data;

	if (!c)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees ac after this returns. */
		if (ac == c->cmd)
			c->cmd = NULL;
		if (ac == c->sub)
			c->sub = NULL;
		log_warn(NULL, "cluster: cannot connect to Redis %s:%d: %s; retrying in %.1fs", c->host,
			 c->port, ac->errstr, c->backoff);
		cl_lost(c);
	}
}

static void cl_on_ready(redisAsyncContext *ac, void *reply, void *priv)
{
	struct cluster *c = ac->data;
	redisReply *r = reply;

	if (!c || c->closing)
		return;
	if (!r || r->type == REDIS_REPLY_ERROR) {
		log_error(NULL, "cluster: Redis refused the connection setup: %s",
			  r ? r->str : "no answer");
		cl_lost(c);
		return;
	}
	if (priv == (void *)1) {
		c->cmd_ready = 1;
		cl_check_up(c);
	}
}

static redisAsyncContext *cl_open(struct cluster *c, int is_sub)
{
	redisAsyncContext *ac = redisAsyncConnect(c->host, c->port);
	char db[16];

	if (!ac)
		return NULL;
	if (ac->err) {
		log_warn(NULL, "cluster: Redis %s:%d: %s", c->host, c->port, ac->errstr);
		redisAsyncFree(ac);
		return NULL;
	}
	ac->data = c;
	/* A silent network partition shows up as a dead TCP keepalive. */
	redisEnableKeepAlive(&ac->c);
	redisLibevAttach(c->loop, ac);
	redisAsyncSetConnectCallback(ac, cl_on_connect);
	redisAsyncSetDisconnectCallback(ac, cl_on_disconnect);
	if (c->password[0])
		redisAsyncCommand(ac, cl_on_ready, NULL, "AUTH %s", c->password);
	if (is_sub) {
		redisAsyncCommand(ac, cl_on_message, NULL, "SUBSCRIBE %s", c->channel);
	} else {
		snprintf(db, sizeof(db), "%ld", c->db);
		redisAsyncCommand(ac, cl_on_ready, (void *)1, "SELECT %s", db);
	}
	return ac;
}

static void cl_connect(struct cluster *c)
{
	c->cmd = cl_open(c, 0);
	c->sub = c->cmd ? cl_open(c, 1) : NULL;
	if (!c->cmd || !c->sub)
		cl_lost(c);
}

static void cl_on_reconnect(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct cluster *c = w->data;

	c->m->redis_reconnects++;
	cl_connect(c);
}

/* ---- node liveness ------------------------------------------------------ */

struct cl_check {
	struct cluster *c;
	char node[65];
};

static void cl_on_exists(redisAsyncContext *ac, void *reply, void *priv)
{
	struct cl_check *ck = priv;
	struct cluster *c = ck->c;
	redisReply *r = reply;
	struct cl_node *n = NULL;

	if (!c->closing) {
		HASH_FIND_STR(c->nodes, ck->node, n);
		if (n)
			n->checking = 0;
		if (n && r && r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
			/* Its heartbeat expired: it died without saying goodbye. */
			log_warn(NULL, "cluster: node %s stopped answering; removing its sessions", ck->node);
			c->m->cluster_node_losses++;
			cl_cleanup(c, ck->node, 0, NULL, NULL);
			cl_node_drop(c, ck->node);
		}
	}
	free(ck);
}

static void cl_on_heartbeat(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct cluster *c = w->data;
	char key[CL_KEY_MAX], px[24];
	const char *argv[5] = { "SET", key, "1", "PX", px };
	struct cl_node *n, *tmp;

	if (!c->up)
		return;
	snprintf(key, sizeof(key), "%snode:%s", c->prefix, c->node);
	snprintf(px, sizeof(px), "%lld", (long long)(c->ttl * 1000));
	cl_cmdv(c, NULL, NULL, 5, argv, NULL);
	HASH_ITER(hh, c->nodes, n, tmp) {
		struct cl_check *ck;
		const char *ex[2] = { "EXISTS", key };
		if (n->checking || !(ck = calloc(1, sizeof(*ck))))
			continue;
		ck->c = c;
		snprintf(ck->node, sizeof(ck->node), "%s", n->id);
		snprintf(key, sizeof(key), "%snode:%s", c->prefix, n->id);
		if (cl_cmdv(c, cl_on_exists, ck, 2, ex, NULL) == 0)
			n->checking = 1;
		else
			free(ck);
	}
}

/* ---- lifecycle ---------------------------------------------------------- */

/* cluster.redis into host, port, db and password (config.h's parser, the
 * same one the config was checked with). */
static int cl_parse_url(struct cluster *c, const char *url, char *err, size_t errlen)
{
	struct config_redis u;

	if (config_redis_parse(url, &u)) {
		snprintf(err, errlen, "cluster.redis: expected redis://host:port");
		return -1;
	}
	if (u.password) {
		free(c->password);
		c->password = strndup(u.password, u.password_len);
	}
	c->host = strndup(u.host, u.host_len);
	c->port = u.port;
	if (u.db >= 0)
		c->db = u.db;
	if (!c->host || !c->password) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

struct cluster *cluster_new(const struct config *cfg, struct ev_loop *loop, struct hub *hub,
			    struct metrics *metrics, char *err, size_t errlen)
{
	struct cluster *c;
	struct hub_engine engine;
	struct hub_peers peers;
	size_t n;

	err[0] = '\0';
	if (strlen(cfg->key_prefix) > CONFIG_KEY_PREFIX_MAX) {
		snprintf(err, errlen, "cluster.key_prefix: at most %d bytes", CONFIG_KEY_PREFIX_MAX);
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->loop = loop;
	c->hub = hub;
	c->m = metrics;
	c->db = cfg->redis_db;
	c->ttl = cfg->node_ttl;
	c->backoff = CL_BACKOFF_MIN;
	c->hist_max = (uint32_t)cfg->messages_per_room;
	c->dedup_max = (uint32_t)cfg->dedup_window;
	snprintf(c->node, sizeof(c->node), "%s", cfg->node_id);
	c->password = strdup(cfg->redis_password);
	c->prefix = strdup(cfg->key_prefix);
	n = strlen(cfg->key_prefix) + 8;
	c->channel = malloc(n);
	if (!c->password || !c->prefix || !c->channel || cl_parse_url(c, cfg->redis, err, errlen)) {
		if (!err[0])
			snprintf(err, errlen, "out of memory");
		free(c->password);
		free(c->prefix);
		free(c->channel);
		free(c->host);
		free(c);
		return NULL;
	}
	snprintf(c->channel, n, "%sevents", cfg->key_prefix);
	rng_seed(&c->rng);
	ev_timer_init(&c->reconnect, cl_on_reconnect, 0., 0.);
	c->reconnect.data = c;
	ev_timer_init(&c->heartbeat, cl_on_heartbeat, 0., c->ttl / 3);
	c->heartbeat.data = c;
	ev_prepare_init(&c->refuse, cl_on_refuse);
	c->refuse.data = c;
	metrics->cluster_enabled = 1;

	memset(&engine, 0, sizeof(engine));
	engine.submit = cl_submit;
	engine.room_load = cl_room_load;
	engine.sequences = 1;
	engine.ctx = c;
	hub_set_engine(hub, &engine);
	peers.presence = cl_presence;
	peers.user = cl_user;
	peers.names = cl_names;
	peers.dm = cl_dm;
	peers.ctx = c;
	hub_set_peers(hub, &peers);
	log_info(NULL, "cluster: node %s, Redis %s:%d db %ld, prefix \"%s\", node ttl %.3gs", c->node,
		 c->host, c->port, c->db, c->prefix, c->ttl);
	cl_connect(c);
	return c;
}

static void cl_on_left(redisAsyncContext *ac, void *reply, void *priv)
{
	struct cluster *c = priv;
	void (*done)(void *) = c->leave_done;

	c->leave_done = NULL;
	if (done)
		done(c->leave_arg);
}

void cluster_leave(struct cluster *c, void (*done)(void *), void *arg)
{
	c->leave_done = done;
	c->leave_arg = arg;
	if (!c->up || cl_cleanup(c, c->node, 0, cl_on_left, c)) {
		c->leave_done = NULL;
		done(arg);
	}
}

void cluster_free(struct cluster *c)
{
	struct cl_sync *sy, *stmp;
	struct cl_room *r, *rtmp;
	struct cl_node *n, *ntmp;

	if (!c)
		return;
	/* Sends refused this iteration still get their answer. */
	cl_on_refuse(c->loop, &c->refuse, 0);
	c->closing = 1;
	hub_set_engine(c->hub, NULL);
	hub_set_peers(c->hub, NULL);
	ev_timer_stop(c->loop, &c->reconnect);
	ev_timer_stop(c->loop, &c->heartbeat);
	/* Pending callbacks run now with NULL replies and see closing. */
	if (c->cmd) {
		redisAsyncContext *a = c->cmd;
		c->cmd = NULL;
		redisAsyncFree(a);
	}
	if (c->sub) {
		redisAsyncContext *a = c->sub;
		c->sub = NULL;
		redisAsyncFree(a);
	}
	HASH_ITER(hh, c->syncs, sy, stmp)
		cl_sync_free(c, sy);
	HASH_ITER(hh, c->rooms, r, rtmp) {
		struct cl_rname *rn, *rntmp;
		HASH_ITER(hh, r->names, rn, rntmp) {
			HASH_DEL(r->names, rn);
			free(rn);
		}
		HASH_DEL(c->rooms, r);
		free(r);
	}
	HASH_ITER(hh, c->nodes, n, ntmp) {
		HASH_DEL(c->nodes, n);
		free(n);
	}
	cl_count_clear(&c->pres);
	cl_count_clear(&c->users_by_node);
	cl_count_clear(&c->users);
	cl_count_clear(&c->mine);
	if (c->password)
		memset(c->password, 0, strlen(c->password));
	free(c->password);
	free(c->prefix);
	free(c->channel);
	free(c->host);
	free(c);
}
