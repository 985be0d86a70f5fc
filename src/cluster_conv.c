/*
 * cluster_conv.c - what conversations need from the cluster besides
 * sequenced events (those take the send script: cluster.c): typing signals,
 * a plain PUBLISH that never touches the sequencing script or any key; and
 * read markers, kept per room in a Redis hash (name -> seq, only ever
 * raised) and published to the other nodes.
 */
#include "cluster_impl.h"

#include <errno.h>

/* KEYS reads; ARGV name seq channel event -> 1 moved, 0 not higher */
static const char cl_lua_marker[] =
	"local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')\n"
	"if tonumber(ARGV[2]) <= cur then return 0 end\n"
	"redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
	"redis.call('PUBLISH', ARGV[3], ARGV[4])\n"
	"return 1\n";

void cl_typing(void *ctx, const char *room, const char *name, int on)
{
	struct cluster *c = ctx;
	struct msgbuf *mb;
	struct jsonw w;

	if (!c->up)
		return;            /* ephemeral: not worth a retry */
	cl_ev_begin(c, &w, "t");
	jsonw_kv_cstr(&w, "room", room);
	jsonw_kv_cstr(&w, "name", name);
	jsonw_key(&w, "on");
	jsonw_bool(&w, on);
	jsonw_obj_close(&w);
	if (!(mb = jsonw_finish(&w)))
		return;
	{
		const char *argv[3] = { "PUBLISH", c->channel, (const char *)mb->data };
		size_t lens[3] = { 7, strlen(c->channel), mb->len };
		cl_cmdv(c, NULL, NULL, 3, argv, lens);
	}
	msgbuf_unref(mb);
}

void cl_marker(void *ctx, const char *room, const char *name, uint64_t seq)
{
	struct cluster *c = ctx;
	char key[CL_KEY_MAX], s[24];
	struct msgbuf *mb;
	struct jsonw w;

	if (!c->up) {
		log_warn(NULL, "cluster: Redis unavailable; read marker of %s in %s kept on this node only",
			 name, room);
		return;
	}
	cl_ev_begin(c, &w, "r");
	jsonw_kv_cstr(&w, "room", room);
	jsonw_kv_cstr(&w, "name", name);
	jsonw_kv_u64(&w, "seq", seq);
	jsonw_obj_close(&w);
	if (!(mb = jsonw_finish(&w)))
		return;
	cl_room_key(c, key, sizeof(key), room, "reads");
	snprintf(s, sizeof(s), "%llu", (unsigned long long)seq);
	{
		const char *keys[1] = { key };
		const char *args[4] = { name, s, c->channel, (const char *)mb->data };
		size_t lens[4] = { 0, 0, 0, mb->len };
		if (cl_eval(c, NULL, NULL, cl_lua_marker, 1, keys, 4, args, lens))
			log_warn(NULL, "cluster: read marker of %s in %s not stored in Redis", name, room);
	}
	msgbuf_unref(mb);
}

/* "t" and "r" events of other nodes: checked, then to the hub. */
void cl_ev_conv(struct cluster *c, const cJSON *j, int typing)
{
	const cJSON *room = cJSON_GetObjectItemCaseSensitive(j, "room");
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
	const cJSON *seq = cJSON_GetObjectItemCaseSensitive(j, "seq");
	double v;

	if (!cJSON_IsString(room) || !proto_valid_room(room->valuestring, strlen(room->valuestring)) ||
	    !cJSON_IsString(name) || !proto_valid_name(name->valuestring, strlen(name->valuestring)))
		return;
	if (typing) {
		hub_remote_typing(c->hub, room->valuestring, name->valuestring,
				  !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "on")));
		return;
	}
	if (!cJSON_IsNumber(seq) || !((v = seq->valuedouble) >= 1 && v <= CL_INT_MAX) || floor(v) != v)
		return;
	hub_remote_marker(c->hub, room->valuestring, name->valuestring, (uint64_t)v);
}

/* The room's read markers from a load (its "reads" hash): into the hub's
 * memory, quietly (nobody needs telling what they already knew). */
/* A decimal string reply within CL_INT_MAX, else -1. */
static int cl_reply_u64(const redisReply *e, uint64_t *out)
{
	char buf[24], *end;
	unsigned long long v;

	if (e->type == REDIS_REPLY_INTEGER && e->integer >= 0 && (double)e->integer <= CL_INT_MAX) {
		*out = (uint64_t)e->integer;
		return 0;
	}
	if (e->type != REDIS_REPLY_STRING || !e->len || e->len >= sizeof(buf))
		return -1;
	memcpy(buf, e->str, e->len);
	buf[e->len] = '\0';
	if (buf[0] < '0' || buf[0] > '9')
		return -1;
	errno = 0;
	v = strtoull(buf, &end, 10);
	if (errno || *end || (double)v > CL_INT_MAX)
		return -1;
	*out = v;
	return 0;
}

void cl_load_markers(struct cluster *c, const char *room, const redisReply *reads)
{
	size_t i;

	for (i = 0; i + 1 < reads->elements; i += 2) {
		const redisReply *k = reads->element[i], *v = reads->element[i + 1];
		char name[PROTO_NAME_MAX + 1];
		uint64_t seq;

		if (k->type != REDIS_REPLY_STRING || k->len > PROTO_NAME_MAX || cl_reply_u64(v, &seq))
			continue;
		memcpy(name, k->str, k->len);
		name[k->len] = '\0';
		if (proto_valid_name(name, k->len) && seq >= 1)
			hub_load_marker(c->hub, room, name, seq);
	}
}

/* A conversations listing in flight: the name it is for. */
struct cl_convs_call {
	struct cluster *c;
	char name[PROTO_NAME_MAX + 1];
};

static void cl_on_convs(redisAsyncContext *ac, void *reply, void *priv)
{
	struct cl_convs_call *call = priv;
	struct cluster *c = call->c;
	const redisReply *r = reply;
	struct hub_conv_entry e[CL_CONVS_MAX];
	char rooms[CL_CONVS_MAX][PROTO_ROOM_MAX + 1];
	size_t i, n = 0;
	int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements % 3 == 0;

	(void)ac;
	/* Whatever Redis holds is checked before the hub sees it: a room
	 * that is not a conversation of this user, or a bad number, is left
	 * out (and logged), never passed on. */
	for (i = 0; ok && i < r->elements && n < CL_CONVS_MAX; i += 3) {
		const redisReply *rm = r->element[i];
		const char *peer;
		size_t plen;

		if (rm->type != REDIS_REPLY_STRING || rm->len > PROTO_ROOM_MAX ||
		    !proto_dm_peer(rm->str, rm->len, call->name, &peer, &plen) || !peer ||
		    cl_reply_u64(r->element[i + 1], &e[n].seq) || cl_reply_u64(r->element[i + 2], &e[n].read)) {
			log_warn(NULL, "cluster: %s's conversations index holds a bad entry; skipped", call->name);
			continue;
		}
		memcpy(rooms[n], rm->str, rm->len);
		rooms[n][rm->len] = '\0';
		e[n].room = rooms[n];
		n++;
	}
	if (r && r->type == REDIS_REPLY_ERROR)
		log_warn(NULL, "cluster: listing conversations failed: %s", r->str);
	if (!c->closing)
		hub_conversations_listed(c->hub, call->name, e, n, ok);
	free(call);
}

int cl_conversations_list(void *ctx, const char *name, uint32_t max)
{
	struct cluster *c = ctx;
	struct cl_convs_call *call;
	char key[CL_KEY_MAX], mx[24];
	const char *keys[1] = { key };
	const char *args[3] = { c->prefix, name, mx };

	if (!c->up || strlen(name) > PROTO_NAME_MAX || !(call = calloc(1, sizeof(*call))))
		return -1;
	call->c = c;
	strcpy(call->name, name);
	cl_user_key(c, key, sizeof(key), name, strlen(name), "convs");
	cl_fmt_u64(mx, max < CL_CONVS_MAX ? max : CL_CONVS_MAX);
	if (cl_eval(c, cl_on_convs, call, cl_lua_convs, 1, keys, 3, args, NULL)) {
		free(call);
		return -1;
	}
	return 0;
}
