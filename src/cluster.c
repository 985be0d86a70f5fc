/*
 * cluster.c - the Redis cluster engine (see cluster.h): its engine and
 * peers hooks for the hub, and its life (new, leave, free). The other
 * cluster_*.c files each do one job; src/cluster_impl.h holds what they share.
 */
#include "cluster_impl.h"

uint64_t cl_random(struct cluster *c)
{
	return rng_next(&c->rng);
}

struct cl_call {
	struct cluster *c;
	struct hub_pending *p;
	double t0;
};

/* The send script's answer {stored, seq, epoch} into p: the script
 * sequences, so its seq (and epoch) replace the hub's proposal; stored 0
 * is a dedup hit, seq the original's. 0, or -1 if the answer is not one. */
static int cl_send_reply(const redisReply *r, struct hub_pending *p)
{
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER ||
	    r->element[1]->integer <= 0 || (double)r->element[1]->integer > CL_INT_MAX ||
	    r->element[2]->type != REDIS_REPLY_STRING ||
	    r->element[2]->len == 0 || r->element[2]->len >= sizeof(p->epoch))
		return -1;
	p->seq = (uint64_t)r->element[1]->integer;
	p->duplicate = r->element[0]->integer == 0;
	memcpy(p->epoch, r->element[2]->str, r->element[2]->len);
	p->epoch[r->element[2]->len] = '\0';
	return 0;
}

static void cl_on_send(redisAsyncContext *ac, void *reply, void *priv)
{
	struct cl_call *call = priv;
	struct cluster *c = call->c;
	redisReply *r = reply;
	enum proto_err st = PROTO_ERR_UNAVAILABLE;

	if (cl_send_reply(r, call->p) == 0) {
		double dt = ev_time() - call->t0;
		st = PROTO_OK;
		c->m->redis_sends++;
		c->m->redis_send_seconds += dt;
		if (dt > c->m->redis_send_max)
			c->m->redis_send_max = dt;
	} else {
		c->m->redis_failures++;
		if (r && r->type == REDIS_REPLY_ERROR)
			log_warn(NULL, "cluster: send script failed: %s", r->str);
		else if (r)
			log_warn(NULL, "cluster: send script: unexpected answer");
	}
	/* The sender hears unavailable when the outcome is unknown (Redis
	 * gone mid-call); a retry with the same id is de-duplicated. */
	if (!c->closing)
		hub_append_done(c->hub, call->p, st);
	hub_pending_free(call->p);
	free(call);
}

/* A send that cannot reach Redis is answered unavailable later in this
 * loop iteration, never inside cl_submit (the engine contract). */
static void cl_refuse(struct cluster *c, struct hub_pending *p)
{
	c->m->redis_failures++;
	LL_APPEND(c->refused, p);       /* few: the sends of one iteration */
	ev_prepare_start(c->loop, &c->refuse);
}

static void cl_on_refuse(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct cluster *c = w->data;
	struct hub_pending *p;

	ev_prepare_stop(loop, w);
	while ((p = c->refused)) {
		LL_DELETE(c->refused, p);
		hub_append_done(c->hub, p, PROTO_ERR_UNAVAILABLE);
		hub_pending_free(p);
	}
}

static void cl_submit(void *ctx, struct hub *hub, struct hub_pending *p)
{
	struct cluster *c = ctx;
	char k[7][CL_KEY_MAX], ts[24], hmax[24], dmax[24], cand[17], kind[24], target[24];
	const char *keys[7] = { k[0], k[1], k[2], k[3], k[4], k[5], k[6] };
	const char *colon;
	int nkeys = 5;
	const char *args[11] = { p->room, p->from, p->id, p->body, ts, hmax, dmax, c->channel, cand,
				 kind, target };
	size_t lens[11] = { 0, 0, 0, p->body_len ? p->body_len : 0, 0, 0, 0, 0, 0, 0, 0 };
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
	if (p->room[0] == '@' && (colon = strchr(p->room, ':'))) {
		/* A conversation "@a:b": both users' indexes (cl_lua_send). */
		cl_user_key(c, k[5], sizeof(k[5]), p->room + 1, (size_t)(colon - p->room - 1), "convs");
		cl_user_key(c, k[6], sizeof(k[6]), colon + 1, strlen(colon + 1), "convs");
		nkeys = 7;
	}
	cl_fmt_u64(ts, p->ts);
	cl_fmt_u64(hmax, c->hist_max);
	cl_fmt_u64(dmax, c->dedup_max);
	cl_fmt_hex64(cand, cl_random(c));
	cl_fmt_u64(kind, (uint64_t)p->kind);
	cl_fmt_u64(target, p->target);
	call->c = c;
	call->p = p;
	call->t0 = ev_time();
	if (p->body_len == 0)
		args[3] = "";
	if (cl_eval(c, cl_on_send, call, cl_lua_send, nkeys, keys, 11, args, lens)) {
		free(call);
		cl_refuse(c, p);
	}
}

static void cl_on_state(redisAsyncContext *ac, void *reply, void *priv)
{
	const redisReply *r = reply;

	(void)ac;
	(void)priv;
	if (!r || r->type == REDIS_REPLY_ERROR)
		log_error(NULL, "cluster: storing a room state record failed: %s",
			  r ? r->str : "no answer");
}

/* A room's state record into its hash, on the command connection: before
 * the EVAL of the moderation event that follows it, so a node that loads
 * the room after seeing the event also sees the record. */
static void cl_state_put(void *ctx, const char *room, const char *key, const char *value)
{
	struct cluster *c = ctx;
	char hk[CL_KEY_MAX];
	const char *argv[4] = { value ? "HSET" : "HDEL", hk, key, value };

	cl_room_key(c, hk, sizeof(hk), room, "state");
	if (cl_cmdv(c, cl_on_state, NULL, value ? 4 : 3, argv, NULL))
		log_error(NULL, "cluster: Redis is down; %s of room %s not stored", key, room);
}

/* A moderator's delete: the copy in the shared history loses its body. */
static void cl_erase(void *ctx, const char *room, uint64_t seq)
{
	struct cluster *c = ctx;
	char hk[CL_KEY_MAX], num[24];
	const char *keys[1] = { hk }, *args[1] = { num };

	cl_room_key(c, hk, sizeof(hk), room, "hist");
	snprintf(num, sizeof(num), "%llu", (unsigned long long)seq);
	if (cl_eval(c, cl_on_state, NULL, cl_lua_erase, 1, keys, 1, args, NULL))
		log_error(NULL, "cluster: Redis is down; message %s/%s not erased", room, num);
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
	engine.state_put = cl_state_put;
	engine.conversations_list = cl_conversations_list;
	engine.erase = cl_erase;
	engine.ctx = c;
	hub_set_engine(hub, &engine);
	memset(&peers, 0, sizeof(peers));
	peers.presence = cl_presence;
	peers.user = cl_user;
	peers.names = cl_names;
	peers.dm = cl_dm;
	peers.typing = cl_typing;
	peers.marker = cl_marker;
	peers.kick = cl_kick;
	peers.online = cl_online;
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
