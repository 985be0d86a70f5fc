/*
 * room_msgs.c - the state of a room's recent messages that edits, deletions
 * and reactions change: current text, edit count and time, tombstone, and
 * who reacted with what. Plain data; the rules are the hub's (hub_edit.c).
 *
 * Bounded: at most max entries per room (the hub passes the larger of
 * history.messages_per_room and history.dedup_window); uthash keeps
 * insertion order, and seqs are added in order, so the head is the oldest.
 */
#include "room.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

static void room_msg_free(struct room_msg *m)
{
	struct room_reaction *x, *tmp;

	LL_FOREACH_SAFE(m->reactions, x, tmp)
		free(x);
	free(m->body);
	free(m->edit_list);
	free(m);
}

static void room_msg_drop(struct room *r, struct room_msg *m)
{
	HASH_DEL(r->msgs, m);
	room_msg_free(m);
}

void room_msgs_clear(struct room *r)
{
	struct room_msg *m, *tmp;

	HASH_ITER(hh, r->msgs, m, tmp)
		room_msg_drop(r, m);
}

struct room_msg *room_msg_find(const struct room *r, uint64_t seq)
{
	struct room_msg *m = NULL;

	HASH_FIND(hh, r->msgs, &seq, sizeof(seq), m);
	return m;
}

int room_msg_set_body(struct room_msg *m, const char *body, size_t len)
{
	char *b = malloc(len + 1);

	if (!b)
		return -1;
	memcpy(b, body, len);
	b[len] = '\0';
	free(m->body);
	m->body = b;
	m->body_len = len;
	return 0;
}

struct room_msg *room_msg_add(struct room *r, uint64_t seq, uint64_t ts, const char *from,
			      const char *id, uint32_t max)
{
	struct room_msg *m;

	if (!max || room_msg_find(r, seq))
		return NULL;
	while (HASH_COUNT(r->msgs) >= max)
		room_msg_drop(r, r->msgs);
	if (!(m = calloc(1, sizeof(*m))))
		return NULL;
	m->seq = seq;
	m->ts = ts;
	snprintf(m->from, sizeof(m->from), "%s", from);
	snprintf(m->id, sizeof(m->id), "%s", id);
	HASH_ADD(hh, r->msgs, seq, sizeof(m->seq), m);
	return m;
}

int room_msg_add_edit(struct room_msg *m, uint64_t seq, uint64_t ts, const char *id,
		      uint32_t max)
{
	struct room_edit *v;

	m->edited_ts = ts;
	m->edits++;
	if (m->edits_kept >= max)
		return 0;           /* past the limit (a race between nodes): counted, not kept */
	if (!(v = realloc(m->edit_list, sizeof(*v) * (m->edits_kept + 1))))
		return -1;
	m->edit_list = v;
	v += m->edits_kept++;
	v->seq = seq;
	v->ts = ts;
	snprintf(v->id, sizeof(v->id), "%s", id);
	return 0;
}

void room_msg_delete(struct room_msg *m)
{
	struct room_reaction *x, *tmp;

	LL_FOREACH_SAFE(m->reactions, x, tmp)
		free(x);
	m->reactions = NULL;
	m->distinct = 0;
	free(m->body);
	m->body = NULL;
	m->body_len = 0;
	m->deleted = 1;
}

struct room_reaction *room_msg_reaction(const struct room_msg *m, const char *name,
					const char *reaction)
{
	struct room_reaction *x;

	LL_FOREACH(m->reactions, x)
		if (!strcmp(x->name, name) && !strcmp(x->reaction, reaction))
			return x;
	return NULL;
}

uint32_t room_msg_reaction_count(const struct room_msg *m, const char *reaction)
{
	struct room_reaction *x;
	uint32_t n = 0;

	LL_FOREACH(m->reactions, x)
		n += !strcmp(x->reaction, reaction);
	return n;
}

int room_msg_react(struct room_msg *m, const char *name, const char *reaction)
{
	struct room_reaction *x;
	int fresh;

	if (room_msg_reaction(m, name, reaction))
		return 0;
	fresh = room_msg_reaction_count(m, reaction) == 0;
	if (!(x = calloc(1, sizeof(*x))))
		return -1;
	snprintf(x->name, sizeof(x->name), "%s", name);
	snprintf(x->reaction, sizeof(x->reaction), "%s", reaction);
	LL_APPEND(m->reactions, x);
	m->distinct += fresh;
	return 0;
}

void room_msg_unreact(struct room_msg *m, const char *name, const char *reaction)
{
	struct room_reaction *x = room_msg_reaction(m, name, reaction);

	if (!x)
		return;
	LL_DELETE(m->reactions, x);
	free(x);
	if (!room_msg_reaction_count(m, reaction))
		m->distinct--;
}
