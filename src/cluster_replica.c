/*
 * cluster_replica.c - what this node knows of the others: their presence in
 * rooms, their online names, the nodes seen (counted keys, uthash).
 */
#include "cluster_impl.h"

static struct cl_count *cl_count_find(struct cl_count *h, const char *key)
{
	struct cl_count *e = NULL;

	HASH_FIND_STR(h, key, e);
	return e;
}

/* Add delta to key; returns the new count (0 removes the entry). */
uint32_t cl_count_add(struct cl_count **h, const char *key, int delta)
{
	struct cl_count *e = cl_count_find(*h, key);
	long n;

	if (!e) {
		if (delta <= 0)
			return 0;
		e = calloc(1, sizeof(*e) + strlen(key) + 1);
		if (!e)
			return 0;
		strcpy(e->key, key);
		HASH_ADD_STR(*h, key, e);
	}
	n = (long)e->n + delta;
	if (n <= 0) {
		HASH_DEL(*h, e);
		free(e);
		return 0;
	}
	e->n = (uint32_t)n;
	return e->n;
}

void cl_count_clear(struct cl_count **h)
{
	struct cl_count *e, *tmp;

	HASH_ITER(hh, *h, e, tmp) {
		HASH_DEL(*h, e);
		free(e);
	}
}

struct cl_room *cl_room_get(struct cluster *c, const char *room, int create)
{
	struct cl_room *r = NULL;

	HASH_FIND_STR(c->rooms, room, r);
	if (!r && create && (r = calloc(1, sizeof(*r)))) {
		snprintf(r->name, sizeof(r->name), "%s", room);
		HASH_ADD_STR(c->rooms, name, r);
	}
	return r;
}

/* Remote presence of name in room changes by delta on node; local members
 * hear about it when the name appears or disappears cluster-wide. */
void cl_presence_apply(struct cluster *c, const char *node, const char *room,
		       const char *name, int delta, int notify)
{
	char key[65 + PROTO_ROOM_MAX + PROTO_NAME_MAX + 4];
	struct cl_room *r = cl_room_get(c, room, delta > 0);
	struct cl_rname *rn = NULL;

	if (!r)
		return;
	snprintf(key, sizeof(key), "%s\x1f%s\x1f%s", node, room, name);
	if (delta < 0 && !cl_count_find(c->pres, key))
		return;            /* never seen: nothing to undo */
	cl_count_add(&c->pres, key, delta);
	HASH_FIND_STR(r->names, name, rn);
	if (!rn && delta > 0 && (rn = calloc(1, sizeof(*rn)))) {
		snprintf(rn->name, sizeof(rn->name), "%s", name);
		HASH_ADD_STR(r->names, name, rn);
	}
	if (!rn)
		return;
	if (delta > 0) {
		if (rn->n++ == 0 && notify)
			hub_remote_presence(c->hub, room, name, 1);
		return;
	}
	if (rn->n > 0 && --rn->n == 0) {
		HASH_DEL(r->names, rn);
		free(rn);
		if (notify)
			hub_remote_presence(c->hub, room, name, 0);
	}
}

void cl_user_apply(struct cluster *c, const char *node, const char *name, int delta)
{
	char key[65 + PROTO_NAME_MAX + 2];

	snprintf(key, sizeof(key), "%s\x1f%s", node, name);
	if (delta < 0 && !cl_count_find(c->users_by_node, key))
		return;
	cl_count_add(&c->users_by_node, key, delta);
	cl_count_add(&c->users, name, delta);
}

void cl_node_seen(struct cluster *c, const char *node)
{
	struct cl_node *n = NULL;

	if (!strcmp(node, c->node))
		return;
	HASH_FIND_STR(c->nodes, node, n);
	if (!n && (n = calloc(1, sizeof(*n)))) {
		snprintf(n->id, sizeof(n->id), "%s", node);
		HASH_ADD_STR(c->nodes, id, n);
	}
}

/* Forget everything another node had: its users and its presence. */
void cl_node_drop(struct cluster *c, const char *node)
{
	size_t len = strlen(node);
	struct cl_count *e, *tmp;
	struct cl_node *n = NULL;

	HASH_ITER(hh, c->pres, e, tmp) {
		if (!strncmp(e->key, node, len) && e->key[len] == 0x1f) {
			char room[PROTO_ROOM_MAX + 1], name[PROTO_NAME_MAX + 1];
			const char *p = e->key + len + 1, *q = strchr(p, 0x1f);
			uint32_t k = e->n;
			if (!q || (size_t)(q - p) > PROTO_ROOM_MAX)
				continue;
			memcpy(room, p, (size_t)(q - p));
			room[q - p] = '\0';
			snprintf(name, sizeof(name), "%s", q + 1);
			while (k--)
				cl_presence_apply(c, node, room, name, -1, 1);
		}
	}
	HASH_ITER(hh, c->users_by_node, e, tmp) {
		if (!strncmp(e->key, node, len) && e->key[len] == 0x1f) {
			uint32_t k = e->n;
			char name[PROTO_NAME_MAX + 1];
			snprintf(name, sizeof(name), "%s", e->key + len + 1);
			while (k--)
				cl_user_apply(c, node, name, -1);
		}
	}
	HASH_FIND_STR(c->nodes, node, n);
	if (n) {
		HASH_DEL(c->nodes, n);
		free(n);
	}
}
