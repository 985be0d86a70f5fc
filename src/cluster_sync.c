/*
 * cluster_sync.c - room sync: a room's first load, and the re-read after a
 * gap or a reconnect, from one LOAD script; events for the room wait on
 * the sync meanwhile.
 */
#include "cluster_impl.h"

void cl_sync_free(struct cluster *c, struct cl_sync *sy)
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
int cl_split_field(const redisReply *f, char *node, char *name)
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

/* The LOAD script's answer {seq, epoch, hist, members, state, reads}, checked; NULL if
 * it is not one (Redis gone, an error, or data out of range). */
static const redisReply *cl_load_reply(const redisReply *r, const char **epoch, size_t *len)
{
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 6 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER || r->element[0]->integer < 0 ||
	    (double)r->element[0]->integer > CL_INT_MAX ||
	    cl_reply_str(r->element[1], epoch, len) || *len < 1 || *len > 16 ||
	    r->element[2]->type != REDIS_REPLY_ARRAY || r->element[3]->type != REDIS_REPLY_ARRAY ||
	    r->element[4]->type != REDIS_REPLY_ARRAY || r->element[5]->type != REDIS_REPLY_ARRAY)
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
		struct hub_msg m = { 0 };

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

	const redisReply *st = r->element[4];
	size_t i;

	hub_load_state(c->hub, sy->room, ep, (uint64_t)r->element[0]->integer);
	for (i = 0; i + 1 < st->elements; i += 2)
		if (st->element[i]->type == REDIS_REPLY_STRING && st->element[i + 1]->type == REDIS_REPLY_STRING)
			hub_load_room_state(c->hub, sy->room, st->element[i]->str, st->element[i + 1]->str);
	cl_hist_each(r->element[2], cl_load_first_msg, &lc);
	cl_load_markers(c, sy->room, r->element[5]);
	hub_room_loaded(c->hub, sy->room, 1);
}

static void cl_load_resync_msg(void *arg, const struct hub_msg *m)
{
	struct cl_load_ctx *lc = arg;

	/* Nothing past the shared seq exists: such an entry would move the
	 * room where no real message follows. */
	if (m->seq > lc->shared_seq)
		return;
	if (hub_stream_message(lc->c->hub, lc->room, lc->epoch, m) < 0) {
		hub_room_rebase(lc->c->hub, lc->room, lc->epoch, m->seq - 1);
		hub_stream_message(lc->c->hub, lc->room, lc->epoch, m);
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
	cl_load_markers(c, sy->room, r->element[5]);
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
	char k1[CL_KEY_MAX], k2[CL_KEY_MAX], k3[CL_KEY_MAX], k4[CL_KEY_MAX], k5[CL_KEY_MAX], k6[CL_KEY_MAX];
	char cand[17];
	const char *keys[6] = { k1, k2, k3, k4, k5, k6 };
	const char *args[1] = { cand };

	cl_room_key(c, k1, sizeof(k1), sy->room, "seq");
	cl_room_key(c, k2, sizeof(k2), sy->room, "epoch");
	cl_room_key(c, k3, sizeof(k3), sy->room, "hist");
	cl_room_key(c, k4, sizeof(k4), sy->room, "members");
	cl_room_key(c, k5, sizeof(k5), sy->room, "state");
	cl_room_key(c, k6, sizeof(k6), sy->room, "reads");
	snprintf(cand, sizeof(cand), "%016llx", (unsigned long long)cl_random(c));
	if (cl_eval(c, cl_on_load, sy, cl_lua_load, 6, keys, 1, args, NULL) == 0)
		sy->sent = 1;
}

int cl_sync_start(struct cluster *c, const char *room, int initial)
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
