/*
 * hub_retry.c - messages whose commit is still pending, and the retries of
 * them that arrive meanwhile: those get the original's answer when it
 * completes, never a second seq.
 */
#include "hub_impl.h"

/* The key of (from, id) into k: its length, or 0 if either does not fit
 * (then nothing can be waiting under it). */
static size_t hub_retry_key(char *k, const char *from, const char *id, size_t id_len)
{
	size_t from_len = strlen(from);

	if (from_len > PROTO_NAME_MAX || id_len > PROTO_ID_MAX)
		return 0;
	memcpy(k, from, from_len);
	k[from_len] = '\0';
	memcpy(k + from_len + 1, id, id_len);
	return from_len + 1 + id_len;
}

struct hub_retry *hub_retry_find(struct room *r, const char *from, const struct proto_str *id)
{
	char k[HUB_RETRY_KEY_MAX];
	struct hub_retry *t = NULL;
	size_t n;

	if (r->inflight && (n = hub_retry_key(k, from, id->p, id->len)))
		HASH_FIND(hh, r->inflight, k, n, t);
	return t;
}

void hub_retry_add(struct room *r, const char *from, const char *id)
{
	struct proto_str ids = { id, strlen(id) };
	struct hub_retry *t;

	if (hub_retry_find(r, from, &ids))
		return;            /* one entry answers every message of that key */
	if (!(t = calloc(1, sizeof(*t))))
		return;            /* a retry then gets its own seq: no worse than before */
	if (!(t->keylen = hub_retry_key(t->key, from, id, ids.len))) {
		free(t);
		return;
	}
	HASH_ADD(hh, r->inflight, key, t->keylen, t);
}

struct hub_retry_wait *hub_waiter_add(struct hub_retry_wait **list, uint64_t sender,
				     const struct proto_str *ref)
{
	struct hub_retry_wait *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->sender = sender;
	if (ref && ref->p) {
		memcpy(w->ref, ref->p, ref->len);
		w->ref[ref->len] = '\0';
		w->has_ref = 1;
	}
	LL_APPEND(*list, w);        /* answered in the order asked */
	return w;
}

void hub_waiters_free(struct hub_retry_wait *list)
{
	struct hub_retry_wait *w, *next;

	for (w = list; w; w = next) {
		next = w->next;
		free(w);
	}
}

int hub_retry_wait(struct hub_retry *t, uint64_t sender, const struct proto_str *ref)
{
	return hub_waiter_add(&t->waiting, sender, ref) ? 0 : -1;
}

static void hub_retry_answer(struct hub *h, struct room *r, const struct hub_pending *p,
			     enum proto_err status, const struct hub_retry_wait *w)
{
	struct session *s = NULL;

	HASH_FIND(hh, h->sessions, &w->sender, sizeof(w->sender), s);
	if (s && !s->closing) {
		struct proto_str ref = { w->has_ref ? w->ref : NULL, strlen(w->ref) };
		if (status == PROTO_OK)
			hub_ack(h, s, p->id, r->name, p->seq, w->has_ref ? w->ref : NULL);
		else
			hub_error(h, s, &ref, status, "the message was not stored");
	} else if (!s) {
		hub_api_answer(h, w->sender, status, "the message was not stored", r->name, p->seq);
	}
}

/* The pending message p of r completed: answer the retries waiting on it
 * (same sender name and id), with p's final seq. */
static void hub_retry_free(struct hub_retry *t)
{
	hub_waiters_free(t->waiting);
	free(t);
}

void hub_retry_done(struct hub *h, struct room *r, const struct hub_pending *p,
		    enum proto_err status)
{
	struct proto_str ids = { p->id, strlen(p->id) };
	struct hub_retry *t = hub_retry_find(r, p->from, &ids);
	struct hub_retry_wait *w;

	if (!t)
		return;
	HASH_DEL(r->inflight, t);
	for (w = t->waiting; w; w = w->next)
		hub_retry_answer(h, r, p, status, w);
	hub_retry_free(t);
}

void hub_retry_free_all(struct room *r)
{
	struct hub_retry *t, *tmp;

	HASH_ITER(hh, r->inflight, t, tmp) {
		HASH_DEL(r->inflight, t);
		hub_retry_free(t);
	}
}
