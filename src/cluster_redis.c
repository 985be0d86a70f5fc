/*
 * cluster_redis.c - the two Redis connections: commands and scripts, keys,
 * presence and user deltas, (re)connecting with backoff, and announcing this
 * node after a (re)connect.
 */
#include "cluster_impl.h"

static void cl_on_users(redisAsyncContext *ac, void *reply, void *priv);

int cl_cmdv(struct cluster *c, redisCallbackFn *fn, void *priv, int argc, const char **argv,
	    const size_t *lens)
{
	if (!c->cmd || !c->cmd_ready)
		return -1;
	return redisAsyncCommandArgv(c->cmd, fn, priv, argc, argv, lens) == REDIS_OK ? 0 : -1;
}

/* EVAL script with keys and args given as C strings (lens for binary-safe
 * ones may be NULL entries -> strlen). */
int cl_eval(struct cluster *c, redisCallbackFn *fn, void *priv, const char *script,
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

/* prefix "room:" room ":" what, cut at cap like snprintf (the static
 * asserts in cluster_impl.h keep every real key below it). Built by hand:
 * a send builds five of these, and snprintf was a visible share of it. */
void cl_room_key(const struct cluster *c, char *out, size_t cap, const char *room, const char *what)
{
	const char *part[5] = { c->prefix, "room:", room, ":", what };
	size_t n = 0, i, len;

	if (!cap)
		return;
	for (i = 0; i < 5; i++) {
		len = strlen(part[i]);
		if (len > cap - 1 - n)
			len = cap - 1 - n;
		memcpy(out + n, part[i], len);
		n += len;
	}
	out[n] = '\0';
}

/* prefix "user:" name ":" what (name: len bytes), cut at cap. */
void cl_user_key(const struct cluster *c, char *out, size_t cap, const char *name, size_t len,
		 const char *what)
{
	char n[PROTO_NAME_MAX + 1];

	if (len > PROTO_NAME_MAX)
		len = PROTO_NAME_MAX;
	memcpy(n, name, len);
	n[len] = '\0';
	snprintf(out, cap, "%suser:%s:%s", c->prefix, n, what);
}

/* v in decimal into out (at least 21 bytes); returns out. */
char *cl_fmt_u64(char *out, uint64_t v)
{
	char tmp[20];
	size_t n = 0, i;

	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10));
	for (i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	out[n] = '\0';
	return out;
}

/* v as 16 lowercase hex digits into out (at least 17 bytes); returns out. */
char *cl_fmt_hex64(char *out, uint64_t v)
{
	int i;

	for (i = 15; i >= 0; i--, v >>= 4)
		out[i] = "0123456789abcdef"[v & 15];
	out[16] = '\0';
	return out;
}

/* An event JSON: {"t":t,"node":N, ...}; the caller adds fields. */
void cl_ev_begin(struct cluster *c, struct jsonw *w, const char *t)
{
	jsonw_init(w, 256);
	jsonw_obj_open(w);
	jsonw_kv_cstr(w, "t", t);
	jsonw_kv_cstr(w, "node", c->node);
}

/* Publish a presence or user delta and keep the Redis hash in step. */
void cl_send_delta(struct cluster *c, const char *room, const char *name, int delta)
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
int cl_cleanup(struct cluster *c, const char *node, int restart, redisCallbackFn *cb, void *arg)
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

void cl_announce(struct cluster *c)
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

void cl_check_up(struct cluster *c)
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

void cl_connect(struct cluster *c)
{
	c->cmd = cl_open(c, 0);
	c->sub = c->cmd ? cl_open(c, 1) : NULL;
	if (!c->cmd || !c->sub)
		cl_lost(c);
}

void cl_on_reconnect(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct cluster *c = w->data;

	c->m->redis_reconnects++;
	cl_connect(c);
}
