/*
 * cluster_conv.c - what conversations need from the cluster besides
 * sequenced events (those take the send script: cluster.c): typing signals,
 * a plain PUBLISH that never touches the sequencing script or any key; and
 * read markers, kept per room in a Redis hash (name -> seq, only ever
 * raised) and published to the other nodes.
 */
#include "cluster_impl.h"

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
void cl_load_markers(struct cluster *c, const char *room, const redisReply *reads)
{
	size_t i;

	for (i = 0; i + 1 < reads->elements; i += 2) {
		const redisReply *k = reads->element[i], *v = reads->element[i + 1];
		char name[PROTO_NAME_MAX + 1];
		unsigned long long seq;

		if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
		    k->len > PROTO_NAME_MAX)
			continue;
		memcpy(name, k->str, k->len);
		name[k->len] = '\0';
		seq = strtoull(v->str, NULL, 10);
		if (proto_valid_name(name, k->len) && seq >= 1 && seq <= CL_INT_MAX)
			hub_load_marker(c->hub, room, name, seq);
	}
}
