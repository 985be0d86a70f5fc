/*
 * hub_retry.c - retries of a message whose commit is still pending: they get
 * the original's answer when it completes, never a second seq.
 */
#include "hub_impl.h"

struct hub_retry *hub_retry_find(struct room *r, const char *from, const struct proto_str *id)
{
	struct hub_retry *t;

	for (t = r->inflight; t; t = t->next)
		if (t->original && !strcmp(t->from, from) && strlen(t->id) == id->len &&
		    !memcmp(t->id, id->p, id->len))
			return t;
	return NULL;
}

void hub_retry_add(struct room *r, uint64_t sender, const char *from, const char *id,
		   const struct proto_str *ref, int original)
{
	struct hub_retry *t = calloc(1, sizeof(*t));

	if (!t)
		return;            /* a retry then gets its own seq: no worse than before */
	t->sender = sender;
	t->original = original;
	snprintf(t->from, sizeof(t->from), "%s", from);
	snprintf(t->id, sizeof(t->id), "%s", id);
	if (ref && ref->p) {
		memcpy(t->ref, ref->p, ref->len);
		t->ref[ref->len] = '\0';
		t->has_ref = 1;
	}
	LL_PREPEND(r->inflight, t);
}

/* The pending message p of r completed: answer the retries waiting on it
 * (same sender name and id), with p's final seq. */
void hub_retry_done(struct hub *h, struct room *r, const struct hub_pending *p,
		    enum proto_err status)
{
	struct hub_retry *t, *tmp;

	LL_FOREACH_SAFE(r->inflight, t, tmp) {
		struct session *s = NULL;
		if (strcmp(t->from, p->from) != 0 || strcmp(t->id, p->id) != 0)
			continue;
		LL_DELETE(r->inflight, t);
		HASH_FIND(hh, h->sessions, &t->sender, sizeof(t->sender), s);
		if (!t->original && s && !s->closing) {
			struct proto_str ref = { t->has_ref ? t->ref : NULL, strlen(t->ref) };
			if (status == PROTO_OK)
				hub_ack(h, s, t->id, r->name, p->seq, t->has_ref ? t->ref : NULL);
			else
				hub_error(h, s, &ref, status, "the message was not stored");
		} else if (!t->original) {
			hub_api_answer(h, t->sender, status, "the message was not stored", r->name, p->seq);
		}
		free(t);
	}
}

void hub_retry_free_all(struct room *r)
{
	struct hub_retry *t = r->inflight, *next;

	for (; t; t = next) {
		next = t->next;
		free(t);
	}
	r->inflight = NULL;
}
