/*
 * cluster_stream.c - the event channel: decoding and checking events (what
 * Redis hands over is range-checked before the hub sees it), and handling
 * each kind.
 */
#include "cluster_impl.h"

#include "hub_api.h"

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
int cl_parse_msg(const cJSON *j, struct hub_msg *m, const char **room, const char **epoch)
{
	const cJSON *seq = cJSON_GetObjectItemCaseSensitive(j, "seq");
	const cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "ts");
	const cJSON *rm = cJSON_GetObjectItemCaseSensitive(j, "room");
	const cJSON *from = cJSON_GetObjectItemCaseSensitive(j, "from");
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
	const cJSON *body = cJSON_GetObjectItemCaseSensitive(j, "body");
	const cJSON *ep = cJSON_GetObjectItemCaseSensitive(j, "epoch");
	const cJSON *kind = cJSON_GetObjectItemCaseSensitive(j, "kind");
	const cJSON *target = cJSON_GetObjectItemCaseSensitive(j, "target");
	uint64_t k = 0;

	if (cl_int(seq, 1, &m->seq) || cl_int(ts, 0, &m->ts) || !cJSON_IsString(rm) ||
	    !cJSON_IsString(from) || !cJSON_IsString(id) || !cJSON_IsString(body) ||
	    !proto_valid_room(rm->valuestring, strlen(rm->valuestring)) ||
	    !(hub_api_valid_sender(from->valuestring) ||
	      strcmp(from->valuestring, PROTO_MOD_SENDER) == 0) ||
	    !id->valuestring[0] || strlen(id->valuestring) > PROTO_ID_MAX ||
	    (cJSON_IsString(ep) && (!ep->valuestring[0] || strlen(ep->valuestring) > 16)))
		return -1;
	/* An edit, delete or react names its kind and an earlier target. */
	m->kind = HUB_KIND_MESSAGE;
	m->target = 0;
	if (kind && (cl_int(kind, 1, &k) || k >= HUB_KIND_COUNT || cl_int(target, 1, &m->target) ||
		     m->target >= m->seq))
		return -1;
	m->kind = (int)k;
	m->deleted = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "deleted"));
	m->from = from->valuestring;
	m->id = id->valuestring;
	m->body = body->valuestring;
	m->body_len = strlen(body->valuestring);
	*room = rm->valuestring;
	*epoch = cJSON_IsString(ep) ? ep->valuestring : NULL;
	return 0;
}

/* "m": a room message, in seq order. A room being (re)read keeps it for
 * after the load; a gap starts a re-read (which brings this one too). */
static void cl_ev_message(struct cluster *c, const cJSON *j, const char *json, size_t len)
{
	struct cl_sync *sy = NULL;
	const char *room, *epoch;
	struct hub_msg m = { 0 };
	struct cl_ev *e;

	if (cl_parse_msg(j, &m, &room, &epoch))
		return;
	HASH_FIND_STR(c->syncs, room, sy);
	if (!sy) {
		if (hub_stream_message(c->hub, room, epoch, &m) < 0) {
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
	struct hub_msg m = { 0 };

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
void cl_event(struct cluster *c, const char *json, size_t len)
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
	} else if (!strcmp(t->valuestring, "t") || !strcmp(t->valuestring, "r")) {
		cl_ev_conv(c, j, t->valuestring[0] == 't');
		/* our own presence/user events (and kicks, applied when made) */
	} else if (!strcmp(t->valuestring, "k")) {
		cl_ev_kick(c, j);
	} else if (!strcmp(t->valuestring, "p") || !strcmp(t->valuestring, "u")) {
		cl_ev_delta(c, j, nd, t->valuestring[0] == 'u');
	} else if (!strcmp(t->valuestring, "x")) {
		log_info(NULL, "cluster: node %s %s", nd, restart ? "(re)connected" : "left");
		cl_node_drop(c, nd);
	}
	cJSON_Delete(j);
}

void cl_on_message(redisAsyncContext *ac, void *reply, void *priv)
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
