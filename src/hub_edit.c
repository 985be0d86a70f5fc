/*
 * hub_edit.c - edits, deletions and reactions: the edit, delete and react
 * commands, their events, and what they do to a room's recent messages.
 *
 * Each is a sequenced event of the room (its own seq, a target seq), and
 * takes the path of a message (hub_submit -> engine -> hub_append_done
 * or the cluster stream -> hub_room_record), so order, storage, dedup,
 * resume and cluster ordering are the same as for messages. The commands
 * check the rules against the room's state (room_msgs.c); every node then
 * applies each recorded event the same way (hub_edit_apply), in seq order,
 * so that all of them, and every client, converge on the same state.
 */
#include "hub_impl.h"

#include <cjson/cJSON.h>

/* How many recent messages of a room can be edited, deleted or reacted to. */
static uint32_t hub_edit_keep(const struct hub *h)
{
	uint32_t keep = h->lim.messages_per_room > h->lim.dedup_window ? h->lim.messages_per_room
								      : h->lim.dedup_window;
	return keep ? keep : 1;
}

/* The current state of a recent message, as history {state: true} serves
 * it (text: what its frame says, for a message never edited): the current
 * text or the tombstone, edit time and count, and the
 * reactions with who gave them (each reaction once, in the order it was
 * first given). NULL on ENOMEM. */
struct msgbuf *hub_encode_state(const char *room, const struct room_msg *t, const char *text,
				 size_t len)
{
	struct proto_msg m = { t->seq, t->ts, t->from, t->id, t->body ? t->body : text,
			       t->body ? t->body_len : len, PROTO_KIND_MESSAGE, 0, t->deleted };
	struct room_reaction *x, *y;
	size_t hint = 0;
	struct jsonw w;

	LL_FOREACH(t->reactions, x)
		hint += 48 + PROTO_NAME_MAX + PROTO_REACTION_MAX;
	proto_w_state(&w, room, &m, t->edited_ts, t->edits, hint);
	LL_FOREACH(t->reactions, x) {
		for (y = t->reactions; y != x && strcmp(y->reaction, x->reaction); y = y->next)
			;
		if (y != x)
			continue;       /* listed already */
		proto_w_reaction(&w, x->reaction, room_msg_reaction_count(t, x->reaction));
		for (y = x; y; y = y->next)
			if (!strcmp(y->reaction, x->reaction))
				proto_w_name(&w, y->name);
		proto_w_reaction_end(&w);
	}
	return proto_encode_state_end(&w);
}

/*
 * history {state: true}: of the frames v[0..n) (references, seq order),
 * keep the messages, each as its current state when the room tracks it
 * (hub_encode_state), and drop the events (edit, delete, react), whose
 * effect that state shows. Returns the new count; the dropped frames'
 * references are released. Older messages, no longer tracked, come as
 * stored (a deleted one as its tombstone).
 */
uint32_t hub_edit_state_frames(struct hub *h, struct room *r, struct msgbuf **v, uint32_t n)
{
	uint32_t i, k = 0;

	(void)h;
	for (i = 0; i < n; i++) {
		cJSON *j = cJSON_ParseWithLength((const char *)v[i]->data, v[i]->len);
		const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
		const cJSON *seq = cJSON_GetObjectItemCaseSensitive(j, "seq");
		const cJSON *body = cJSON_GetObjectItemCaseSensitive(j, "body");
		const char *text = cJSON_IsString(body) ? body->valuestring : "";
		const struct room_msg *t;
		struct msgbuf *mb;

		if (!cJSON_IsString(type) || strcmp(type->valuestring, "message") || !cJSON_IsNumber(seq)) {
			msgbuf_unref(v[i]);
		} else if ((t = room_msg_find(r, (uint64_t)seq->valuedouble)) &&
			   (t->edits || t->deleted || t->reactions) && (mb = hub_encode_state(r->name, t, text, strlen(text)))) {
			msgbuf_unref(v[i]);
			v[k++] = mb;
		} else {
			v[k++] = v[i];
		}
		cJSON_Delete(j);
	}
	return k;
}

/* A deleted message's text leaves memory too: its frame and those of its
 * edits in the ring become tombstones. */
static void hub_edit_blank(struct room *r, const struct room_msg *t)
{
	struct hub_msg m = { t->seq, t->ts, t->from, t->id, "", 0, HUB_KIND_MESSAGE, 0, 1 };
	struct msgbuf *mb;
	uint32_t i;

	if ((mb = hub_encode_message(r->name, &m))) {
		room_frame_replace(r, t->seq, mb);
		msgbuf_unref(mb);
	}
	for (i = 0; i < t->edits_kept; i++) {
		const struct room_edit *e = &t->edit_list[i];
		struct hub_msg em = { e->seq, e->ts, t->from, e->id, "", 0, HUB_KIND_EDIT, t->seq, 1 };
		if ((mb = hub_encode_message(r->name, &em))) {
			room_frame_replace(r, e->seq, mb);
			msgbuf_unref(mb);
		}
	}
}

/*
 * What a recorded event does to the room's state; every node applies the
 * same events in the same order. The commands checked the rules; here only
 * what keeps the state consistent is checked again (two nodes may accept
 * changes to one message at once): a deleted message stays deleted, and
 * only its sender edits it. Events about messages no longer tracked here
 * change nothing.
 */
void hub_edit_apply(struct hub *h, struct room *r, const struct hub_msg *m)
{
	struct room_msg *t;

	if (m->kind == HUB_KIND_MESSAGE) {
		t = room_msg_add(r, m->seq, m->ts, m->from, m->id, hub_edit_keep(h));
		if (t && m->deleted)
			room_msg_delete(t);
		return;
	}
	if (!(t = room_msg_find(r, m->target)))
		return;
	switch (m->kind) {
	case HUB_KIND_EDIT:
		if (t->deleted || strcmp(t->from, m->from) || m->deleted)
			break;
		if (room_msg_set_body(t, m->body, m->body_len) ||
		    room_msg_add_edit(t, m->seq, m->ts, m->id, h->lim.max_edits))
			log_error(NULL, "out of memory applying edit %s/%llu", r->name,
				  (unsigned long long)m->seq);
		break;
	case HUB_KIND_DELETE:
		if (t->deleted)
			break;
		room_msg_delete(t);
		hub_edit_blank(r, t);
		break;
	case HUB_KIND_REACT:
		if (!t->deleted && room_msg_react(t, m->from, m->body))
			log_error(NULL, "out of memory applying reaction %s/%llu", r->name,
				  (unsigned long long)m->seq);
		break;
	case HUB_KIND_UNREACT:
		room_msg_unreact(t, m->from, m->body);
		break;
	default:
		break;
	}
}

/* Does s delete t as its sender (a sequenced delete event)? Anyone else's
 * delete is a moderator's (hub_cmd_mod checks the role). */
int hub_may_delete(struct hub *h, struct session *s, struct room *r, const struct room_msg *t)
{
	(void)h;
	(void)r;
	return !strcmp(t->from, s->name);
}

/* A moderator erased message seq of r (hub_mod.c): its state says so, and
 * its edits' frames lose their text too. */
void hub_edit_erased(struct hub *h, struct room *r, uint64_t seq)
{
	struct room_msg *t = room_msg_find(r, seq);

	(void)h;
	if (!t || t->deleted)
		return;
	room_msg_delete(t);
	hub_edit_blank(r, t);
}

/* The recent message c->seq of r, not deleted, or NULL (error sent). */
static struct room_msg *hub_edit_target(struct hub *h, struct session *s, struct room *r,
					const struct proto_cmd *c)
{
	struct room_msg *t = room_msg_find(r, c->seq);

	if (t && !t->deleted)
		return t;
	hub_error(h, s, &c->ref, PROTO_ERR_NOT_FOUND,
		  t ? "that message was deleted"
		  : c->seq > r->seq ? "no message with that seq"
		  : "no such message among the room's recent messages (events and old messages cannot be changed)");
	return NULL;
}

/* A retry of an edit, delete or react already accepted (same id): its ack. */
static int hub_edit_retry(struct hub *h, struct session *s, struct room *r,
			  const struct proto_cmd *c)
{
	char id[PROTO_ID_MAX + 1], ref[PROTO_REF_MAX + 1];
	uint64_t seq;

	if (!c->id.p)
		return 0;
	if (!(seq = room_dedup_find(r, s->name, strlen(s->name), c->id.p, c->id.len))) {
		if (hub_retry_find(r, s->name, &c->id)) {
			hub_error(h, s, &c->ref, PROTO_ERR_CONFLICT,
				  "the first request with this id is still being stored; retry later");
			return 1;
		}
		return 0;
	}
	hub_copy(id, &c->id);
	if (c->ref.p)
		hub_copy(ref, &c->ref);
	hub_ack(h, s, id, r->name, seq, c->ref.p ? ref : NULL);
	return 1;
}

/* Hand the event to the engine like a message (hub_submit). */
static void hub_edit_submit(struct hub *h, struct session *s, struct room *r,
			    const struct proto_cmd *c, int kind, const char *body, size_t len)
{
	struct hub_pending *p = hub_pending_event(h, s, c, body, len);

	if (!p)
		return;
	strcpy(p->from, s->name);
	if (c->id.p)
		hub_copy(p->id, &c->id);
	else    /* no id: no retries to recognise, but events carry one */
		snprintf(p->id, sizeof(p->id), "s%016llx", (unsigned long long)hub_random(h));
	p->kind = kind;
	p->target = c->seq;
	hub_submit(h, r, p);
}

void hub_cmd_edit(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r = hub_member_room(h, s, c, PROTO_ERR_FORBIDDEN);
	struct room_msg *t;
	char msg[128];

	if (!r || hub_edit_retry(h, s, r, c) || !(t = hub_edit_target(h, s, r, c)))
		return;
	if (strcmp(t->from, s->name)) {
		hub_error(h, s, &c->ref, PROTO_ERR_FORBIDDEN, "only its sender can edit a message");
		return;
	}
	if (h->lim.edit_window > 0 && hub_now(h) * 1000.0 - (double)t->ts > h->lim.edit_window * 1000.0) {
		snprintf(msg, sizeof(msg), "messages can be edited for %g s after they were sent",
			 h->lim.edit_window);
		hub_error(h, s, &c->ref, PROTO_ERR_FORBIDDEN, msg);
		return;
	}
	if (t->edits >= h->lim.max_edits) {
		snprintf(msg, sizeof(msg), "a message can be edited %u times", h->lim.max_edits);
		hub_error(h, s, &c->ref, PROTO_ERR_CONFLICT, msg);
		return;
	}
	hub_edit_submit(h, s, r, c, HUB_KIND_EDIT, c->body.p, c->body.len);
}

void hub_cmd_delete(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r = hub_member_room(h, s, c, PROTO_ERR_FORBIDDEN);
	struct room_msg *t;

	if (!r || hub_edit_retry(h, s, r, c))
		return;
	t = room_msg_find(r, c->seq);
	if (t && t->deleted) {
		hub_error(h, s, &c->ref, PROTO_ERR_NOT_FOUND, "that message was deleted");
		return;
	}
	if (!t || !hub_may_delete(h, s, r, t)) {
		/* Not one's own recent message: a moderator's delete, or an
		 * error from the moderation path (role, unknown seq). */
		hub_cmd_mod(h, s, c);
		return;
	}
	hub_edit_submit(h, s, r, c, HUB_KIND_DELETE, "", 0);
}

void hub_cmd_react(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r = hub_member_room(h, s, c, PROTO_ERR_FORBIDDEN);
	char reaction[PROTO_REACTION_MAX + 1], msg[128];
	struct room_msg *t;

	if (!r || hub_edit_retry(h, s, r, c) || !(t = hub_edit_target(h, s, r, c)))
		return;
	hub_copy(reaction, &c->reaction);
	if (!c->on == !room_msg_reaction(t, s->name, reaction)) {
		hub_error(h, s, &c->ref, c->on ? PROTO_ERR_CONFLICT : PROTO_ERR_NOT_FOUND,
			  c->on ? "you reacted with that already" : "you did not react with that");
		return;
	}
	if (c->on && !room_msg_reaction_count(t, reaction) && t->distinct >= h->lim.max_reactions) {
		snprintf(msg, sizeof(msg), "a message can have %u different reactions", h->lim.max_reactions);
		hub_error(h, s, &c->ref, PROTO_ERR_CONFLICT, msg);
		return;
	}
	hub_edit_submit(h, s, r, c, c->on ? HUB_KIND_REACT : HUB_KIND_UNREACT, reaction,
			c->reaction.len);
}
