/*
 * cluster_api.c - what the server API needs from the other nodes (the
 * optional kick and online hooks of struct hub_peers): a disconnect
 * published on the event channel (t "k") for every node to apply to its
 * own sessions, and the names online elsewhere from the replica of the
 * user counts (cluster_replica.c).
 */
#include "cluster_impl.h"

#include "hub_api.h"

int cl_kick(void *ctx, const char *name, int code, const char *reason)
{
	struct cluster *c = ctx;
	const char *argv[3];
	size_t lens[3];
	struct msgbuf *mb;
	struct jsonw w;
	int rc;

	if (!c->up)
		return -1;
	cl_ev_begin(c, &w, "k");
	jsonw_kv_cstr(&w, "name", name);
	jsonw_kv_u64(&w, "code", (uint64_t)code);
	jsonw_kv_cstr(&w, "reason", reason);
	jsonw_obj_close(&w);
	if (!(mb = jsonw_finish(&w)))
		return -1;
	argv[0] = "PUBLISH";
	argv[1] = c->channel;
	argv[2] = (const char *)mb->data;
	lens[0] = 7;
	lens[1] = strlen(c->channel);
	lens[2] = mb->len;
	rc = cl_cmdv(c, NULL, NULL, 3, argv, lens);
	msgbuf_unref(mb);
	return rc ? -1 : 0;
}

/* A kick from another node: close name's sessions here. */
void cl_ev_kick(struct cluster *c, const cJSON *j)
{
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
	const cJSON *code = cJSON_GetObjectItemCaseSensitive(j, "code");
	const cJSON *reason = cJSON_GetObjectItemCaseSensitive(j, "reason");

	if (!cJSON_IsString(name) || !proto_valid_name(name->valuestring, strlen(name->valuestring)) ||
	    !cJSON_IsNumber(code) || code->valuedouble < 1000 || code->valuedouble > 4999 ||
	    !cJSON_IsString(reason) || strlen(reason->valuestring) > HUB_API_REASON_MAX)
		return;
	hub_api_kick_local(c->hub, name->valuestring, (int)code->valuedouble, reason->valuestring);
}

void cl_online(void *ctx, void (*emit)(void *arg, const char *name), void *arg)
{
	struct cluster *c = ctx;
	struct cl_count *e, *tmp;

	HASH_ITER(hh, c->users, e, tmp)
		emit(arg, e->key);
}
