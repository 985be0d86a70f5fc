/*
 * hub_read.c - read markers: per user (not per connection) and per room,
 * the highest seq the user has read. Monotonic. The user's other sessions
 * are told when it moves, so unread counts agree across devices; `joined`
 * carries it; with conversations.read_receipts the room's other members
 * see it too. Kept in memory (at most HUB_MARKERS_MAX, the least recently
 * set dropped first), and by the engine when it keeps them (storage,
 * cluster), which is then where a marker not in memory is read from.
 */
#include "hub_impl.h"

#define HUB_MARKERS_MAX 65536

struct hub_marker {
	UT_hash_handle hh;
	uint64_t seq;
	size_t keylen;
	char key[];                 /* room 0x1f name */
};

static size_t hub_marker_key(char *key, const char *room, const char *name)
{
	size_t a = strlen(room), b = strlen(name);

	memcpy(key, room, a);
	key[a] = 0x1f;
	memcpy(key + a + 1, name, b);
	return a + 1 + b;
}

static struct hub_marker *hub_marker_find(struct hub *h, const char *room, const char *name)
{
	char key[PROTO_ROOM_MAX + 1 + PROTO_NAME_MAX];
	struct hub_marker *k = NULL;
	size_t n = hub_marker_key(key, room, name);

	HASH_FIND(hh, h->markers, key, n, k);
	return k;
}

/* Set (room, name) to seq in memory; the most recently set entry moves to
 * the end, so the head is the one to drop first. */
static void hub_marker_put(struct hub *h, const char *room, const char *name, uint64_t seq)
{
	struct hub_marker *k = hub_marker_find(h, room, name);

	if (k) {
		HASH_DEL(h->markers, k);
	} else {
		while (HASH_COUNT(h->markers) >= HUB_MARKERS_MAX) {
			struct hub_marker *old = h->markers;
			HASH_DEL(h->markers, old);
			free(old);
		}
		if (!(k = malloc(sizeof(*k) + PROTO_ROOM_MAX + 1 + PROTO_NAME_MAX)))
			return;     /* ENOMEM: the engine still has it, if it keeps markers */
		k->keylen = hub_marker_key(k->key, room, name);
	}
	k->seq = seq;
	HASH_ADD_KEYPTR(hh, h->markers, k->key, k->keylen, k);
}

void hub_markers_free(struct hub *h)
{
	struct hub_marker *k, *tmp;

	HASH_ITER(hh, h->markers, k, tmp) {
		HASH_DEL(h->markers, k);
		free(k);
	}
}

uint64_t hub_marker_get(struct hub *h, const char *room, const char *name)
{
	struct hub_marker *k = hub_marker_find(h, room, name);
	uint64_t seq;

	if (k)
		return k->seq;
	if (!h->engine.marker_get || !(seq = h->engine.marker_get(h->engine.ctx, room, name)))
		return 0;
	hub_marker_put(h, room, name, seq);
	return seq;
}

/* The marker moved: name's sessions here (the one that moved it gets its
 * ref back), and with read_receipts the room's other local members. */
static void hub_marker_moved(struct hub *h, const char *room, const char *name, uint64_t seq,
			     struct session *by, const struct proto_str *ref)
{
	struct hub_user *u = hub_user_find(h, name, strlen(name));
	struct room *r = hub_room_find(h, room, strlen(room));
	struct msgbuf *mb;
	struct session *t;

	if (u && (mb = proto_encode_read(room, seq, NULL))) {
		for (t = u->sessions; t; t = t->user_next)
			if (t != by)
				hub_enqueue(h, t, mb, 0);
		msgbuf_unref(mb);
	}
	if (by && (mb = proto_encode_read(room, seq, ref))) {
		hub_enqueue(h, by, mb, 0);
		msgbuf_unref(mb);
	}
	if (!h->lim.read_receipts || !r || r->loading || !r->member_count)
		return;
	if ((mb = proto_encode_receipt(room, name, seq))) {
		struct membership *m, *tmp;
		HASH_ITER(hh_room, r->members, m, tmp)
			if (strcmp(m->sess->name, name))
				hub_enqueue(h, m->sess, mb, 1);
		msgbuf_unref(mb);
	}
}

void hub_cmd_read(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r = hub_member_room(h, s, c, PROTO_ERR_FORBIDDEN);
	uint64_t seq, cur;
	struct msgbuf *mb;

	if (!r)
		return;
	/* Nothing past the room's latest message can have been read. */
	seq = c->seq < r->seq ? c->seq : r->seq;
	cur = hub_marker_get(h, r->name, s->name);
	if (seq <= cur) {
		/* Monotonic: an older marker (another device was ahead) changes
		 * nothing; the answer says where it is. */
		if ((mb = proto_encode_read(r->name, cur, &c->ref))) {
			hub_enqueue(h, s, mb, 0);
			msgbuf_unref(mb);
		}
		return;
	}
	hub_marker_put(h, r->name, s->name, seq);
	h->m->markers_in++;
	if (h->engine.marker_set)
		h->engine.marker_set(h->engine.ctx, r->name, s->name, seq);
	if (h->peers.marker)
		h->peers.marker(h->peers.ctx, r->name, s->name, seq);
	hub_marker_moved(h, r->name, s->name, seq, s, &c->ref);
}

void hub_load_marker(struct hub *h, const char *room, const char *name, uint64_t seq)
{
	struct hub_marker *k = hub_marker_find(h, room, name);

	if (!k || k->seq < seq)
		hub_marker_put(h, room, name, seq);
}

void hub_remote_marker(struct hub *h, const char *room, const char *name, uint64_t seq)
{
	struct hub_marker *k = hub_marker_find(h, room, name);

	if (k && k->seq >= seq)
		return;
	hub_marker_put(h, room, name, seq);
	hub_marker_moved(h, room, name, seq, NULL, NULL);
}
