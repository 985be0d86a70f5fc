/*
 * hub_join.c - join and leave: the replay of join {since}, joins parked while
 * a room loads, and what an engine hands over when it loads a room.
 */
#include "hub_impl.h"

/* The room of that name if it is loading, else NULL. */
static struct room *hub_loading_room(struct hub *h, const char *room)
{
	struct room *r = hub_room_find(h, room, strlen(room));

	return r && r->loading ? r : NULL;
}

void hub_load_state(struct hub *h, const char *room, const char *epoch, uint64_t seq)
{
	struct room *r = hub_loading_room(h, room);

	if (!r)
		return;
	if (epoch && epoch[0] && strlen(epoch) < sizeof(r->epoch))
		strcpy(r->epoch, epoch);
	r->seq = r->seq_assigned = seq;
}

int hub_load_message(struct hub *h, const char *room, const struct hub_msg *m)
{
	struct room *r = hub_loading_room(h, room);
	struct msgbuf *mb;
	int rc;

	if (!r || !m->seq || m->seq > r->seq)
		return 0;           /* nothing past the room's seq exists */
	if (!(mb = hub_encode_message(r->name, m)))
		return -1;
	rc = room_append(r, m->seq, mb, m->from, strlen(m->from), m->id, strlen(m->id),
			 hub_room_history(h, r), h->lim.dedup_window);
	msgbuf_unref(mb);
	hub_edit_apply(h, r, m);
	return rc;
}

/* Join s to the loaded room r and answer, replaying since when asked.
 * Never frees r: on failure (answered with an error, -1) the caller lets
 * go of r with hub_room_release once it no longer uses it. */
static int hub_join(struct hub *h, struct session *s, struct room *r, int has_since,
		    uint64_t since, const char *epoch, const struct proto_str *ref)
{
	int recovered = 0, complete = 1;
	struct proto_room_info info;
	struct jsonw w;

	if (hub_join_check(h, s, r, ref))
		return -1;
	if (has_since && (!epoch || strcmp(epoch, r->epoch) == 0) && since <= r->seq) {
		recovered = hub_oldest_held(h, r) <= since + 1;
		complete = hub_replay(h, s, r, since);
		if (complete < 0) {
			hub_error(h, s, ref, PROTO_ERR_UNAVAILABLE,
				  "the room's history could not be read; join again");
			return -1;
		}
	}
	if (!room_member_find(r, s)) {
		if (!room_member_add(r, s)) {
			hub_error(h, s, ref, PROTO_ERR_INTERNAL, "out of memory");
			return -1;
		}
		log_debug(s->id, "joined %s", r->name);
		hub_presence(h, r, s, 1);
		if (h->ev.presence)
			h->ev.presence(h->ev.ctx, r->name, s->name, 1);
		if (h->peers.presence)
			h->peers.presence(h->peers.ctx, r->name, s->name, 1);
	}
	hub_room_info(h, r, s, &info);
	proto_w_joined(&w, r->name, r->seq, r->epoch, hub_marker_get(h, r->name, s->name),
		       r->member_count, &info);
	hub_names(h, &w, r);
	hub_reply(h, s, proto_encode_joined_end(&w, has_since, recovered, !complete, ref));
	return 0;
}

static void hub_park_join(struct hub *h, struct session *s, struct room *r, const struct proto_cmd *c)
{
	struct hub_waiter *wt = calloc(1, sizeof(*wt));

	if (!wt) {
		hub_error(h, s, &c->ref, PROTO_ERR_INTERNAL, "out of memory");
		return;
	}
	wt->sender = s->num;
	wt->has_since = c->has_since;
	wt->since = c->since;
	if (c->epoch.p) {
		wt->has_epoch = 1;
		hub_copy(wt->epoch, &c->epoch);
	}
	if (c->ref.p) {
		wt->has_ref = 1;
		hub_copy(wt->ref, &c->ref);
	}
	LL_APPEND(r->waiters, wt);
}

void hub_room_loaded(struct hub *h, const char *room, int ok)
{
	struct room *r = hub_loading_room(h, room);
	struct hub_waiter *wt, *next;

	if (!r)
		return;
	wt = r->waiters;
	r->loading = 0;
	if (!ok) {
		/* What a failed load handed over is not the room's state. */
		room_reset(r);
		room_state_free(r->state);
		r->state = NULL;
		r->seq = 0;
	}
	r->waiters = NULL;
	r->seq_assigned = r->seq;
	/* Parked joins, answered in the order they came. */
	for (; wt; wt = next) {
		struct session *s = NULL;
		struct proto_str ref = { wt->has_ref ? wt->ref : NULL, strlen(wt->ref) };
		next = wt->next;
		HASH_FIND(hh, h->sessions, &wt->sender, sizeof(wt->sender), s);
		if (s && !s->closing) {
			if (ok)
				hub_join(h, s, r, wt->has_since, wt->since, wt->has_epoch ? wt->epoch : NULL, &ref);
			else
				hub_error(h, s, &ref, PROTO_ERR_UNAVAILABLE, "the room could not be loaded");
		}
		free(wt);
	}
	hub_room_release(h, r);
}

void hub_cmd_join(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r;
	const char *why;
	char epoch[PROTO_EPOCH_MAX + 1];

	int dm = hub_conv_join_allowed(h, s, c);

	if (dm < 0)
		return;
	if (!dm && !auth_room_allowed(s->ident, c->room.p, c->room.len)) {
		hub_error(h, s, &c->ref, PROTO_ERR_FORBIDDEN, "your token does not allow this room");
		return;
	}
	r = hub_room_get(h, c->room.p, c->room.len, &why);
	if (!r) {
		hub_error(h, s, &c->ref, PROTO_ERR_UNAVAILABLE, why);
		return;
	}
	if (r->loading) {
		hub_park_join(h, s, r, c);
		return;
	}
	if (c->epoch.p)
		hub_copy(epoch, &c->epoch);
	if (hub_join(h, s, r, c->has_since, c->since, c->epoch.p ? epoch : NULL, &c->ref))
		hub_room_release(h, r);
}

void hub_cmd_leave(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r = hub_member_room(h, s, c, PROTO_ERR_NOT_FOUND);
	struct msgbuf *mb;

	if (!r)
		return;
	mb = proto_encode_left(r->name, NULL, &c->ref);
	hub_member_leave(h, room_member_find(r, s));   /* may free r */
	hub_reply(h, s, mb);
}
