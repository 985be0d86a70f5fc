/*
 * hub_conv.c - direct messages as conversations. The DM of users a and b
 * lives in the room "@a:b" (names sorted): its own seq, history, dedup and
 * resume like any room, but only a and b can join it. A dm command is a
 * send into it (stored by the engine, so an offline recipient finds it on
 * return); recipient sessions that have not joined the conversation get
 * the old "direct" event (with room and seq added), so clients that know
 * nothing of conversations keep working. The conversations command lists
 * a user's conversations with their latest seq, read marker and unread
 * count: those seen here (at most HUB_CONV_MAX per user, the most recent
 * first, for at most HUB_CONV_USERS_MAX users) and those the engine holds.
 */
#include "hub_impl.h"

#define HUB_CONV_MAX 500
/* Users whose conversations are remembered here; the least recently active
 * are forgotten first (with storage the engine still lists theirs). */
#define HUB_CONV_USERS_MAX 65536

struct hub_conv_room {
	struct hub_conv_room *next;
	char room[PROTO_ROOM_MAX + 1];
};

struct hub_conv {
	UT_hash_handle hh;
	char name[PROTO_NAME_MAX + 1];
	struct hub_conv_room *rooms;   /* most recent first */
	uint32_t n;
};

/* join: 1 for a conversation s is a party to, 0 for an ordinary room, -1
 * (error sent) for someone else's conversation. */
int hub_conv_join_allowed(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	const char *peer;
	size_t len;

	if (!proto_dm_peer(c->room.p, c->room.len, s->name, &peer, &len))
		return 0;
	if (peer)
		return 1;
	hub_error(h, s, &c->ref, PROTO_ERR_FORBIDDEN, "only its two users can join a conversation");
	return -1;
}

static void hub_conv_drop(struct hub *h, struct hub_conv *u);

static void hub_conv_note(struct hub *h, const char *name, size_t len, const char *room)
{
	struct hub_conv *u = NULL;
	struct hub_conv_room *x, *prev = NULL;

	HASH_FIND(hh, h->convs, name, len, u);
	if (u) {
		HASH_DEL(h->convs, u);      /* to the end: the most recently active */
	} else {
		while (HASH_COUNT(h->convs) >= HUB_CONV_USERS_MAX)
			hub_conv_drop(h, h->convs);
		if (!(u = calloc(1, sizeof(*u))))
			return;
		memcpy(u->name, name, len);
	}
	HASH_ADD(hh, h->convs, name[0], len, u);
	for (x = u->rooms; x; prev = x, x = x->next)
		if (!strcmp(x->room, room))
			break;
	if (x && prev) {             /* to the front */
		prev->next = x->next;
		x->next = u->rooms;
		u->rooms = x;
	}
	if (x)
		return;
	if (!(x = calloc(1, sizeof(*x))))
		return;
	snprintf(x->room, sizeof(x->room), "%s", room);
	x->next = u->rooms;
	u->rooms = x;
	if (++u->n > HUB_CONV_MAX) {  /* drop the least recent */
		for (prev = u->rooms; prev->next->next; prev = prev->next)
			;
		free(prev->next);
		prev->next = NULL;
		u->n--;
	}
}

static void hub_conv_drop(struct hub *h, struct hub_conv *u)
{
	struct hub_conv_room *x, *next;

	for (x = u->rooms; x; x = next) {
		next = x->next;
		free(x);
	}
	HASH_DEL(h->convs, u);
	free(u);
}

void hub_convs_free(struct hub *h)
{
	struct hub_conv *u, *tmp;

	HASH_ITER(hh, h->convs, u, tmp)
		hub_conv_drop(h, u);
}

static void hub_conv_direct(struct hub *h, const char *room, const struct hub_msg *m,
			    struct room *r)
{
	struct proto_msg pm;
	const char *peer;
	size_t len;
	struct hub_user *u;
	struct msgbuf *mb;
	struct session *t;

	if (!proto_dm_peer(room, strlen(room), m->from, &peer, &len) || !peer)
		return;
	hub_conv_note(h, m->from, strlen(m->from), room);
	hub_conv_note(h, peer, len, room);
	if (m->kind != HUB_KIND_MESSAGE || !(u = hub_user_find(h, peer, len)))
		return;
	pm = hub_proto_msg(m);
	if (!(mb = proto_encode_direct_in(room, &pm)))
		return;
	for (t = u->sessions; t; t = t->user_next)
		if ((!r || !room_member_find(r, t)) && hub_enqueue(h, t, mb, 1) == 0)
			h->m->messages_out++;
	msgbuf_unref(mb);
}

/* A cluster's stream brought a message of a room not loaded here: if it
 * is a conversation, its recipient's sessions here still get "direct". */
void hub_conv_stream(struct hub *h, const char *room, const struct hub_msg *m)
{
	if (room[0] == '@')
		hub_conv_direct(h, room, m, NULL);
}

/* A message was recorded in r (every node records it from the stream): if
 * r is a conversation, note it for both users, and hand it as "direct" to
 * the recipient's local sessions that have not joined r. */
void hub_conv_record(struct hub *h, struct room *r, const struct hub_msg *m)
{
	if (r->name[0] == '@')
		hub_conv_direct(h, r->name, m, r);
}

/* The event hooks (webhooks) of an accepted message: a room's message, or
 * a conversation's as "direct" to its recipient, as before conversations.
 * Edits, deletions and reactions are not reported. */
void hub_conv_event(struct hub *h, struct room *r, const struct hub_msg *m)
{
	char to[PROTO_NAME_MAX + 1];
	const char *peer;
	size_t len;

	if (m->kind != HUB_KIND_MESSAGE)
		return;
	if (r->name[0] != '@') {
		if (h->ev.message)
			h->ev.message(h->ev.ctx, r->name, m);
		return;
	}
	if (!h->ev.direct || !proto_dm_peer(r->name, strlen(r->name), m->from, &peer, &len) || !peer)
		return;
	memcpy(to, peer, len);
	to[len] = '\0';
	h->ev.direct(h->ev.ctx, to, m);
}

/* dm {to, id, body}: a send into the conversation of s and to. */
void hub_conv_dm(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	char name[PROTO_ROOM_MAX + 1], to[PROTO_NAME_MAX + 1], id[PROTO_ID_MAX + 1], ref[PROTO_REF_MAX + 1];
	struct hub_retry *orig;
	struct hub_pending *p;
	const char *why;
	struct room *r;
	uint64_t seq;

	hub_copy(to, &c->to);
	proto_dm_room(name, s->name, to);
	if (!(r = hub_room_get(h, name, strlen(name), &why))) {
		hub_error(h, s, &c->ref, PROTO_ERR_UNAVAILABLE, why);
		return;
	}
	/* (A cluster may still be loading r: it sequences and dedups in
	 * Redis, and the load brings the message here.) */
	seq = room_dedup_find(r, s->name, strlen(s->name), c->id.p, c->id.len);
	orig = !seq ? hub_retry_find(r, s->name, &c->id) : NULL;
	if (seq || orig) {
		/* A retry: the first one's ack, now or when it is stored. */
		hub_copy(id, &c->id);
		if (orig) {
			if (hub_retry_wait(orig, s->num, &c->ref) < 0)
				hub_error(h, s, &c->ref, PROTO_ERR_INTERNAL, "out of memory");
		} else {
			if (c->ref.p)
				hub_copy(ref, &c->ref);
			hub_ack(h, s, id, r->name, seq, c->ref.p ? ref : NULL);
		}
		hub_room_release(h, r);
		return;
	}
	if (!(p = hub_pending_from(h, s, c))) {
		hub_room_release(h, r);
		return;
	}
	strcpy(p->to, to);
	strcpy(p->room, r->name);
	strcpy(p->epoch, r->epoch);
	hub_submit(h, r, p);
}

struct hub_conv_list {
	struct hub *h;
	const char *name;
	struct jsonw *w;
	char seen[HUB_CONV_MAX][PROTO_ROOM_MAX + 1];
	uint32_t n;
};

/* One line of the list, once per room: its seq is the newest of what the
 * room here and the engine know, and likewise the user's marker. */
static void hub_conv_put(struct hub_conv_list *l, const char *room, uint64_t stored,
			 uint64_t stored_read)
{
	struct room *r = hub_room_find(l->h, room, strlen(room));
	uint64_t seq = r && !r->loading && r->seq > stored ? r->seq : stored, read;
	const char *peer;
	size_t len;
	uint32_t i;

	if (l->n >= HUB_CONV_MAX || !proto_dm_peer(room, strlen(room), l->name, &peer, &len) || !peer)
		return;
	for (i = 0; i < l->n; i++)
		if (!strcmp(l->seen[i], room))
			return;
	snprintf(l->seen[l->n++], sizeof(l->seen[0]), "%s", room);
	read = hub_marker_get(l->h, room, l->name);
	if (stored_read > read)
		read = stored_read;
	proto_w_conversation(l->w, room, peer, len, seq, read);
}

static void hub_conv_emit(void *arg, const char *room, uint64_t stored)
{
	hub_conv_put(arg, room, stored, 0);
}

/* The conversations reply for name: the engine's list first (e: NULL
 * without one), then the rooms seen here that it did not name. */
static struct msgbuf *hub_conv_reply(struct hub *h, const char *name, const struct hub_conv_entry *e,
				     size_t n, const struct proto_str *ref)
{
	struct hub_conv_list *l = calloc(1, sizeof(*l));
	struct hub_conv *u = NULL;
	struct hub_conv_room *x;
	struct msgbuf *mb;
	struct jsonw w;
	size_t i;

	if (!l)
		return NULL;
	l->h = h;
	l->name = name;
	l->w = &w;
	proto_w_conversations(&w);
	for (i = 0; i < n; i++)
		hub_conv_put(l, e[i].room, e[i].seq, e[i].read);
	HASH_FIND(hh, h->convs, name, strlen(name), u);
	for (x = u ? u->rooms : NULL; x; x = x->next)
		hub_conv_put(l, x->room, 0, 0);
	if (!e && h->engine.conversations)
		h->engine.conversations(h->engine.ctx, name, HUB_CONV_MAX, hub_conv_emit, l);
	mb = proto_encode_conversations_end(&w, ref);
	free(l);
	return mb;
}

/* Conversations commands waiting for the engine's list: one ask per
 * name, however many of its sessions wait. */
struct hub_conv_ask {
	UT_hash_handle hh;
	char name[PROTO_NAME_MAX + 1];
	struct hub_retry_wait *waiting;  /* by session number: it may close meanwhile */
};

static void hub_conv_ask_free(struct hub *h, struct hub_conv_ask *a)
{
	hub_waiters_free(a->waiting);
	HASH_DEL(h->conv_asks, a);
	free(a);
}

void hub_conv_asks_free(struct hub *h)
{
	struct hub_conv_ask *a, *tmp;

	HASH_ITER(hh, h->conv_asks, a, tmp)
		hub_conv_ask_free(h, a);
}

/* Park s's command until the engine answers; 0 if parked. */
static int hub_conv_park(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct hub_conv_ask *a = NULL;
	size_t len = strlen(s->name);

	HASH_FIND(hh, h->conv_asks, s->name, len, a);
	if (a)
		return hub_waiter_add(&a->waiting, s->num, &c->ref) ? 0 : -1;
	if (!(a = calloc(1, sizeof(*a))))
		return -1;
	memcpy(a->name, s->name, len);
	HASH_ADD(hh, h->conv_asks, name[0], len, a);
	if (!hub_waiter_add(&a->waiting, s->num, &c->ref) ||
	    h->engine.conversations_list(h->engine.ctx, a->name, HUB_CONV_MAX) < 0) {
		hub_conv_ask_free(h, a);
		return -1;
	}
	return 0;
}

void hub_conversations_listed(struct hub *h, const char *name, const struct hub_conv_entry *e,
			      size_t n, int ok)
{
	struct hub_conv_ask *a = NULL;
	struct hub_retry_wait *w;
	struct session *s;

	HASH_FIND(hh, h->conv_asks, name, strlen(name), a);
	if (!a)
		return;
	if (!ok)
		log_warn(NULL, "conversations of %s: the engine could not list them; answered from this node's", name);
	for (w = a->waiting; w; w = w->next) {
		struct proto_str ref = { w->has_ref ? w->ref : NULL, strlen(w->ref) };
		struct msgbuf *mb;

		s = NULL;
		HASH_FIND(hh, h->sessions, &w->sender, sizeof(w->sender), s);
		if (!s || s->closing)
			continue;
		if ((mb = hub_conv_reply(h, name, ok ? e : NULL, ok ? n : 0, &ref)))
			hub_reply(h, s, mb);
		else
			hub_error(h, s, &ref, PROTO_ERR_INTERNAL, "out of memory");
	}
	hub_conv_ask_free(h, a);
}

void hub_cmd_conversations(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct msgbuf *mb;

	if (h->engine.conversations_list && hub_conv_park(h, s, c) == 0)
		return;
	if (!(mb = hub_conv_reply(h, s->name, NULL, 0, &c->ref))) {
		hub_error(h, s, &c->ref, PROTO_ERR_INTERNAL, "out of memory");
		return;
	}
	hub_reply(h, s, mb);
}
