/*
 * fake_store.h - what a fake engine "stored", shared by the hub's unit
 * tests (tests/unit/test_hub.c) and the hub fuzzer (tests/fuzz/fuzz_hub.c):
 * committed messages, oldest first, the oldest dropped when full (like
 * retention); given back to the hub as data on a room load, and by reads,
 * which can be made to fail half way. It can also sequence appends, as the
 * cluster's send script does (fake_store_sequence). Header-only: each
 * harness has one.
 */
#ifndef CHATD_TESTS_FAKE_STORE_H
#define CHATD_TESTS_FAKE_STORE_H

#include <stdio.h>
#include <string.h>

#include "hub.h"

#define FAKE_STORE_MAX 256

struct fake_msg {
	char room[PROTO_ROOM_MAX + 1], epoch[17];
	char from[PROTO_NAME_MAX + 1], id[PROTO_ID_MAX + 1], body[64];
	uint64_t seq, ts;
};

#define FAKE_STORE_ROOMS 16

struct fake_store {
	struct fake_msg m[FAKE_STORE_MAX];
	int n, cap;          /* cap 0: FAKE_STORE_MAX */
	int fail_reads;      /* a read emits its first message, then fails */
	struct {             /* a sequencing store's counters, as Redis' INCR keys: */
		char room[PROTO_ROOM_MAX + 1];   /* they outlive retention */
		uint64_t seq;
	} last[FAKE_STORE_ROOMS];
	int nlast;
};

/* The latest seq a sequencing store handed out in room (0: none). */
static inline uint64_t *fake_store_counter(struct fake_store *fs, const char *room)
{
	static uint64_t spare;
	int i;

	for (i = 0; i < fs->nlast; i++)
		if (!strcmp(fs->last[i].room, room))
			return &fs->last[i].seq;
	if (fs->nlast == FAKE_STORE_ROOMS) {
		spare = 0;
		return &spare;
	}
	snprintf(fs->last[fs->nlast].room, sizeof fs->last[0].room, "%s", room);
	fs->last[fs->nlast].seq = 0;
	return &fs->last[fs->nlast++].seq;
}

static inline void fake_store_add(struct fake_store *fs, const struct hub_pending *p)
{
	int cap = fs->cap > 0 && fs->cap < FAKE_STORE_MAX ? fs->cap : FAKE_STORE_MAX;
	struct fake_msg *m;

	if (fs->n == cap)
		memmove(&fs->m[0], &fs->m[1], sizeof(fs->m[0]) * (size_t)--fs->n);
	m = &fs->m[fs->n++];
	snprintf(m->room, sizeof m->room, "%s", p->room);
	snprintf(m->epoch, sizeof m->epoch, "%s", p->epoch);
	snprintf(m->from, sizeof m->from, "%s", p->from);
	snprintf(m->id, sizeof m->id, "%s", p->id);
	snprintf(m->body, sizeof m->body, "%s", p->body);
	m->seq = p->seq;
	m->ts = p->ts;
}

/* What an engine that sequences does with an append (the cluster's send
 * script): (from, id) still stored in the room makes p a duplicate with the
 * original's seq; else the room's next seq replaces the hub's proposal and
 * p is stored. */
static inline void fake_store_sequence(struct fake_store *fs, struct hub_pending *p)
{
	int i;

	for (i = 0; i < fs->n; i++) {
		const struct fake_msg *m = &fs->m[i];
		if (!strcmp(m->room, p->room) && !strcmp(m->from, p->from) && !strcmp(m->id, p->id)) {
			p->seq = m->seq;
			p->duplicate = 1;
			return;
		}
	}
	p->seq = ++*fake_store_counter(fs, p->room);
	fake_store_add(fs, p);
}

static inline void fake_store_msg(const struct fake_msg *f, struct hub_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->seq = f->seq;
	m->ts = f->ts;
	m->from = f->from;
	m->id = f->id;
	m->body = f->body;
	m->body_len = strlen(f->body);
}

/* Hand room's state to the hub as data, as a storage engine does: the
 * epoch and seq of its newest message, then its messages. Returns how many
 * the hub could not keep (ENOMEM). */
static inline int fake_store_load(const struct fake_store *fs, struct hub *hub, const char *room)
{
	int i, last = -1, failed = 0;

	for (i = 0; i < fs->n; i++)
		if (!strcmp(fs->m[i].room, room))
			last = i;
	if (last < 0)
		return 0;
	hub_load_state(hub, room, fs->m[last].epoch, fs->m[last].seq);
	for (i = 0; i < fs->n; i++) {
		struct hub_msg m;
		if (strcmp(fs->m[i].room, room) != 0)
			continue;
		fake_store_msg(&fs->m[i], &m);
		failed += hub_load_message(hub, room, &m) != 0;
	}
	return failed;
}

/* The engine's read hook, over fs. */
static inline int fake_store_read(const struct fake_store *fs, const char *room, uint64_t lo,
				  uint64_t hi, uint32_t max,
				  void (*emit)(void *arg, const struct hub_msg *m), void *arg)
{
	int i, n = 0;

	for (i = 0; i < fs->n && (uint32_t)n < max; i++) {
		struct hub_msg m;
		if (strcmp(fs->m[i].room, room) != 0 || fs->m[i].seq < lo || fs->m[i].seq > hi)
			continue;
		if (fs->fail_reads && n == 1)
			return -1;    /* e.g. SQLITE_IOERR half way */
		fake_store_msg(&fs->m[i], &m);
		emit(arg, &m);
		n++;
	}
	return fs->fail_reads ? -1 : n;
}

/* The engine's oldest hook: the lowest seq held for room, 0 if none. */
static inline uint64_t fake_store_oldest(const struct fake_store *fs, const char *room)
{
	int i;

	for (i = 0; i < fs->n; i++)
		if (!strcmp(fs->m[i].room, room))
			return fs->m[i].seq;
	return 0;
}

#endif
