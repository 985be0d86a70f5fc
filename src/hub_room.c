/*
 * hub_room.c - the room registry: finding and opening rooms, their memory
 * bound (idle rooms evicted least recently used first, limits.max_rooms),
 * membership, and the one fan-out path of every accepted message.
 */
#include "hub_impl.h"

struct room *hub_room_find(struct hub *h, const char *name, size_t len)
{
	struct room *r = NULL;

	HASH_FIND(hh, h->rooms, name, len, r);
	return r;
}

/* Send a finished frame to every member of r but except (NULL for all). */
void hub_room_broadcast(struct hub *h, struct room *r, struct msgbuf *mb,
			struct session *except, int droppable)
{
	struct membership *m, *tmp;

	HASH_ITER(hh_room, r->members, m, tmp) {
		if (m->sess == except)
			continue;
		if (hub_enqueue(h, m->sess, mb, droppable) == 0 && droppable)
			h->m->messages_out++;
	}
}

void hub_presence(struct hub *h, struct room *r, struct session *s, int join)
{
	struct msgbuf *mb;

	if (h->draining || !r->member_count || (r->member_count == 1 && room_member_find(r, s)))
		return;
	if (!(mb = proto_encode_presence(r->name, s->name, join)))
		return;
	hub_room_broadcast(h, r, mb, s, 0);
	msgbuf_unref(mb);
}

/* In use: a member, a message or a join on its way, or a load. */
static int hub_room_busy(const struct room *r)
{
	return r->member_count || r->pending || r->loading || r->waiters || r->inflight;
}

void hub_idle_unlink(struct hub *h, struct room *r)
{
	if (!r->idle)
		return;
	DL_DELETE2(h->idle, r, idle_prev, idle_next);
	r->idle = 0;
	r->idle_prev = r->idle_next = NULL;
	h->m->rooms_idle--;
}

/* Drop idle rooms, least recently used first, until at most max are held.
 * With an engine, an evicted room is loaded again on its next use; in
 * memory only, its history is gone (a new epoch tells resuming clients). */
void hub_rooms_trim(struct hub *h, uint64_t max)
{
	while (HASH_COUNT(h->rooms) > max && h->idle) {
		struct room *r = h->idle;

		log_debug(NULL, "room %s evicted from memory (seq %llu)", r->name,
			  (unsigned long long)r->seq);
		hub_idle_unlink(h, r);
		HASH_DEL(h->rooms, r);
		room_free(r);
		h->m->rooms_evicted++;
	}
}

/* r may have become idle. A room that never carried a message is forgotten
 * at once; one with history waits on the idle list, so that seq and epoch
 * stay meaningful while memory allows. */
void hub_room_release(struct hub *h, struct room *r)
{
	if (hub_room_busy(r) || r->idle)
		return;
	if (!r->seq) {
		HASH_DEL(h->rooms, r);
		room_free(r);
		return;
	}
	DL_APPEND2(h->idle, r, idle_prev, idle_next);
	r->idle = 1;
	h->m->rooms_idle++;
	hub_rooms_trim(h, h->lim.max_rooms);
}

/* The room named name, held or loaded now (and no longer idle), or NULL
 * with *why saying why: the engine could not load it, or max_rooms rooms
 * are held and all in use. */
struct room *hub_room_get(struct hub *h, const char *name, size_t len, const char **why)
{
	struct room *r = hub_room_find(h, name, len);
	char epoch[17];

	*why = "the room could not be loaded";
	if (r) {
		hub_idle_unlink(h, r);
		return r;
	}
	hub_rooms_trim(h, h->lim.max_rooms - 1);
	if (HASH_COUNT(h->rooms) >= h->lim.max_rooms) {
		h->m->rooms_refused++;
		*why = "this server holds as many rooms as limits.max_rooms allows, all in use; try later";
		return NULL;
	}
	/* A new epoch whenever a room's seq history starts from nothing, so
	 * that a (seq, epoch) pair never names two different messages. An
	 * engine with storage replaces it with the stored one. */
	snprintf(epoch, sizeof(epoch), "%016llx", (unsigned long long)hub_random(h));
	r = room_new(name, len, epoch);
	if (!r)
		return NULL;
	HASH_ADD(hh, h->rooms, name[0], len, r);
	if (h->engine.room_load) {
		int rc;

		/* Loading while the engine hands over its state, now or later. */
		r->loading = 1;
		rc = h->engine.room_load(h->engine.ctx, h, r->name);
		if (rc < 0) {
			HASH_DEL(h->rooms, r);
			room_free(r);
			return NULL;
		}
		r->loading = rc > 0;
	}
	r->seq_assigned = r->seq;
	log_debug(NULL, "room %s opened, epoch %s, seq %llu", r->name, r->epoch,
		  (unsigned long long)r->seq);
	return r;
}

void hub_member_leave(struct hub *h, struct membership *m)
{
	struct room *r = m->room;
	struct session *s = m->sess;

	room_member_remove(m);
	hub_presence(h, r, s, 0);
	if (h->ev.presence && session_authenticated(s) && !h->draining)
		h->ev.presence(h->ev.ctx, r->name, s->name, 0);
	if (h->peers.presence && session_authenticated(s))
		h->peers.presence(h->peers.ctx, r->name, s->name, 0);
	hub_room_release(h, r);
}

/*
 * The one path of an accepted message, whatever the engine: hub_cmd_send
 * proposes its seq and submits it; the engine completes it with
 * hub_append_done, which makes its frame (hub_encode_message), records it
 * in the room (hub_room_record: seq, ring, dedup), acks the sender and
 * hands the same frame to every member (hub_room_fanout). Memory only:
 * completed at once; storage: at its group commit; cluster: when the Lua
 * send script answered (it sequences: its seq replaces the proposal). The
 * other nodes of a cluster, and this one when the answer came out of
 * order, take the message from the stream (hub_stream_message), which
 * records and fans out the same way.
 */
void hub_room_record(struct hub *h, struct room *r, const struct hub_msg *m,
		     struct msgbuf *mb)
{
	r->seq = m->seq;
	if (r->seq_assigned < r->seq)
		r->seq_assigned = r->seq;
	if (room_append(r, m->seq, mb, m->from, strlen(m->from), m->id, strlen(m->id),
			hub_room_history(h, r), h->lim.dedup_window) || !mb)
		log_error(NULL, "out of memory keeping message %s/%llu in memory%s", r->name,
			  (unsigned long long)m->seq, mb ? "" : "; its members miss it");
	hub_edit_apply(h, r, m);
	hub_conv_record(h, r, m);
	/* Moderation events act where they land, on every node, in seq order. */
	if (strcmp(m->from, PROTO_MOD_SENDER) == 0)
		hub_mod_apply(h, r, m);
}

void hub_room_fanout(struct hub *h, struct room *r, struct msgbuf *mb)
{
	if (mb)
		hub_room_broadcast(h, r, mb, NULL, 1);
}

/* The room named in c if s is a member of it, else NULL (error sent). */
struct room *hub_member_room(struct hub *h, struct session *s,
			     const struct proto_cmd *c, enum proto_err code)
{
	struct room *r = hub_room_find(h, c->room.p, c->room.len);

	if (r && room_member_find(r, s))
		return r;
	hub_error(h, s, &c->ref, code, "not a member of this room; join it first");
	return NULL;
}

long long hub_room_seq(struct hub *h, const char *room)
{
	struct room *r = hub_room_find(h, room, strlen(room));

	return r ? (long long)r->seq : -1;
}

void hub_remote_presence(struct hub *h, const char *room, const char *name, int join)
{
	struct room *r = hub_room_find(h, room, strlen(room));
	struct msgbuf *mb;

	if (!r || r->loading || !r->member_count || !(mb = proto_encode_presence(r->name, name, join)))
		return;
	hub_room_broadcast(h, r, mb, NULL, 0);
	msgbuf_unref(mb);
}

void hub_rooms_foreach(struct hub *h, void (*fn)(void *arg, const char *room), void *arg)
{
	struct room *r, *tmp;

	HASH_ITER(hh, h->rooms, r, tmp)
		if (!r->loading)
			fn(arg, r->name);
}

uint64_t hub_room_count(const struct hub *h) { return HASH_COUNT(h->rooms); }
