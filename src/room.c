#include "room.h"

#include "session.h"

#include <stdlib.h>
#include <string.h>

#include <utlist.h>

struct room_dedup {
	UT_hash_handle hh;
	uint64_t seq;
	size_t keylen;
	char key[];                 /* from 0x1f id */
};

/* ---- room_ring: bounded circular array --------------------------------- */

static void *room_ring_at(const struct room_ring *g, uint32_t i)
{
	return g->v[(g->head + i) % g->cap];
}

static void *room_ring_pop_front(struct room_ring *g)
{
	void *e;

	if (!g->len)
		return NULL;
	e = g->v[g->head];
	g->head = (g->head + 1) % g->cap;
	g->len--;
	return e;
}

/* Make room for one more element under max; -1 on ENOMEM. */
static int room_ring_grow(struct room_ring *g, uint32_t max)
{
	uint32_t cap, i;
	void **v;

	if (g->len < g->cap)
		return 0;
	cap = g->cap ? g->cap * 2 : 8;
	if (cap > max)
		cap = max;
	v = malloc(sizeof(*v) * cap);
	if (!v)
		return -1;
	for (i = 0; i < g->len; i++)
		v[i] = room_ring_at(g, i);
	free(g->v);
	g->v = v;
	g->cap = cap;
	g->head = 0;
	return 0;
}

static int room_ring_push(struct room_ring *g, void *e, uint32_t max)
{
	if (room_ring_grow(g, max))
		return -1;
	g->v[(g->head + g->len) % g->cap] = e;
	g->len++;
	return 0;
}

static void room_ring_free(struct room_ring *g)
{
	free(g->v);
	memset(g, 0, sizeof(*g));
}

/* ---- rooms -------------------------------------------------------------- */

struct room *room_new(const char *name, size_t len, const char *epoch)
{
	struct room *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	memcpy(r->name, name, len);
	r->name[len] = '\0';
	strncpy(r->epoch, epoch, sizeof(r->epoch) - 1);
	r->ring_first_seq = 1;
	return r;
}

static void room_dedup_evict(struct room *r)
{
	struct room_dedup *d = room_ring_pop_front(&r->dedup_fifo);

	if (d) {
		HASH_DEL(r->dedup, d);
		free(d);
	}
}

void room_reset(struct room *r)
{
	while (r->ring.len)
		msgbuf_unref(room_ring_pop_front(&r->ring));
	room_ring_free(&r->ring);
	while (r->dedup_fifo.len)
		room_dedup_evict(r);
	room_ring_free(&r->dedup_fifo);
	room_msgs_clear(r);
	r->ring_first_seq = r->seq + 1;
}

void room_free(struct room *r)
{
	if (!r)
		return;
	room_reset(r);
	room_state_free(r->state);
	free(r);
}

struct membership *room_member_find(struct room *r, struct session *s)
{
	struct membership *m = NULL;

	HASH_FIND(hh_room, r->members, &s, sizeof(s), m);
	return m;
}

struct membership *room_member_add(struct room *r, struct session *s)
{
	struct membership *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->room = r;
	m->sess = s;
	HASH_ADD(hh_room, r->members, sess, sizeof(m->sess), m);
	LL_PREPEND2(s->rooms, m, sess_next);
	r->member_count++;
	return m;
}

void room_member_remove(struct membership *m)
{
	HASH_DELETE(hh_room, m->room->members, m);
	LL_DELETE2(m->sess->rooms, m, sess_next);
	m->room->member_count--;
	free(m);
}

static size_t room_dedup_key(char *key, const char *from, size_t from_len,
			     const char *id, size_t id_len)
{
	memcpy(key, from, from_len);
	key[from_len] = 0x1f;
	memcpy(key + from_len + 1, id, id_len);
	return from_len + 1 + id_len;
}

uint64_t room_dedup_find(struct room *r, const char *from, size_t from_len,
			 const char *id, size_t id_len)
{
	char key[PROTO_NAME_MAX + 1 + PROTO_ID_MAX];
	struct room_dedup *d = NULL;
	size_t n;

	if (from_len > PROTO_NAME_MAX || id_len > PROTO_ID_MAX)
		return 0;
	n = room_dedup_key(key, from, from_len, id, id_len);
	HASH_FIND(hh, r->dedup, key, n, d);
	return d ? d->seq : 0;
}

static int room_dedup_add(struct room *r, uint64_t seq, const char *from, size_t from_len,
			  const char *id, size_t id_len, uint32_t max_dedup)
{
	struct room_dedup *d;

	while (r->dedup_fifo.len && r->dedup_fifo.len >= max_dedup)
		room_dedup_evict(r);
	if (!max_dedup || from_len > PROTO_NAME_MAX || id_len > PROTO_ID_MAX)
		return 0;
	d = malloc(sizeof(*d) + from_len + 1 + id_len);
	if (!d)
		return -1;
	d->seq = seq;
	d->keylen = room_dedup_key(d->key, from, from_len, id, id_len);
	if (room_ring_push(&r->dedup_fifo, d, max_dedup)) {
		free(d);
		return -1;
	}
	HASH_ADD_KEYPTR(hh, r->dedup, d->key, d->keylen, d);
	return 0;
}

static void room_ring_drop_front(struct room *r)
{
	msgbuf_unref(room_ring_pop_front(&r->ring));
	r->ring_first_seq++;
}

int room_append(struct room *r, uint64_t seq, struct msgbuf *frame, const char *from,
		size_t from_len, const char *id, size_t id_len, uint32_t max_ring,
		uint32_t max_dedup)
{
	/* The dedup entry first: it must not depend on the ring's memory. */
	int rc = room_dedup_add(r, seq, from, from_len, id, id_len, max_dedup);

	if (!frame) {
		/* No frame for seq: the ring restarts after it. */
		while (r->ring.len)
			room_ring_drop_front(r);
		r->ring_first_seq = seq + 1;
		return rc;
	}
	/* Element i of the ring is seq ring_first_seq + i: keep it so. */
	if (r->ring.len && seq != r->ring_first_seq + r->ring.len)
		while (r->ring.len)
			room_ring_drop_front(r);
	/* A smaller limit after a reload takes effect here, oldest first. */
	while (r->ring.len && r->ring.len >= max_ring)
		room_ring_drop_front(r);
	if (!r->ring.len)
		r->ring_first_seq = seq;
	if (max_ring && room_ring_push(&r->ring, frame, max_ring) == 0) {
		msgbuf_ref(frame);
		return rc;
	}
	/* No ring, or no memory for it: the ring restarts after seq. */
	while (r->ring.len)
		room_ring_drop_front(r);
	r->ring_first_seq = seq + 1;
	return max_ring ? -1 : rc;
}

uint64_t room_oldest_seq(const struct room *r)
{
	return r->ring.len ? r->ring_first_seq : r->seq + 1;
}

struct msgbuf *room_frame(const struct room *r, uint64_t seq)
{
	if (!r->ring.len || seq < r->ring_first_seq || seq >= r->ring_first_seq + r->ring.len)
		return NULL;
	return room_ring_at(&r->ring, (uint32_t)(seq - r->ring_first_seq));
}

int room_frame_replace(struct room *r, uint64_t seq, struct msgbuf *frame)
{
	struct room_ring *g = &r->ring;
	uint32_t i;

	if (!g->len || seq < r->ring_first_seq || seq >= r->ring_first_seq + g->len)
		return -1;
	i = (g->head + (uint32_t)(seq - r->ring_first_seq)) % g->cap;
	msgbuf_unref(g->v[i]);
	g->v[i] = msgbuf_ref(frame);
	return 0;
}
