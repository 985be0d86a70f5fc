/*
 * hub_typing.c - "alice is typing": an ephemeral signal. No seq, never
 * stored or replayed; at most one per session and room per
 * conversations.typing_interval (extra ones are dropped without a reply); each carries a ttl after which
 * clients stop showing it unless it is refreshed. Under queue pressure it
 * is the first thing dropped: a member whose queue is half full does not
 * get it. In a cluster it crosses nodes through peers.typing (a plain
 * PUBLISH), not the sequencing script.
 */
#include "hub_impl.h"

/* To every member of r but name's own sessions, while their queue is at
 * most half full: a signal is worth less than any message behind it. */
static void hub_typing_fanout(struct hub *h, struct room *r, const char *name, int on)
{
	const struct hub_limits *l = &h->lim;
	struct membership *m, *tmp;
	struct msgbuf *mb;

	if (!r->member_count)
		return;
	if (!(mb = proto_encode_typing(r->name, name, on, (uint64_t)llround(l->typing_ttl * 1000.0))))
		return;
	HASH_ITER(hh_room, r->members, m, tmp) {
		struct session *t = m->sess;
		if (!strcmp(t->name, name))
			continue;
		if (!hub_fits(h, t, mb->len, l->send_queue_messages / 2, l->send_queue_bytes / 2)) {
			h->m->typing_dropped++;
			continue;
		}
		hub_enqueue(h, t, mb, 1);
	}
	msgbuf_unref(mb);
}

void hub_cmd_typing(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r = hub_member_room(h, s, c, PROTO_ERR_FORBIDDEN);
	double now = hub_now(h);

	if (!r)
		return;
	/* "Stopped" always goes through: it ends what the others show. */
	if (c->on && s->typing_at > 0 && s->typing_room == r && now - s->typing_at < h->lim.typing_interval) {
		h->m->typing_dropped++;
		return;
	}
	s->typing_at = c->on ? now : 0;
	s->typing_room = r;
	h->m->typing_in++;
	hub_typing_fanout(h, r, s->name, c->on);
	if (h->peers.typing)
		h->peers.typing(h->peers.ctx, r->name, s->name, c->on);
}

void hub_remote_typing(struct hub *h, const char *room, const char *name, int on)
{
	struct room *r = hub_room_find(h, room, strlen(room));

	if (r && !r->loading)
		hub_typing_fanout(h, r, name, on);
}
