/*
 * hub_send.c - the path of a room message: the send command, submit to the
 * engine, and its one completion (hub_append_done), whatever the engine.
 */
#include "hub_impl.h"

static void hub_mem_submit(struct hub *h, struct hub_pending *p)
{
	hub_append_done(h, p, PROTO_OK);
	hub_pending_free(p);
}

void hub_pending_free(struct hub_pending *p)
{
	if (p) {
		free(p->body);
		free(p);
	}
}

/* A pending message from a send or dm command: sender, id, ref, body, ts
 * filled in. NULL (error answered) on ENOMEM. */
struct hub_pending *hub_pending_from(struct hub *h, struct session *s,
				     const struct proto_cmd *c)
{
	struct hub_pending *p = calloc(1, sizeof(*p));

	if (p)
		p->body = malloc(c->body.len + 1);
	if (!p || !p->body) {
		hub_pending_free(p);
		hub_error(h, s, &c->ref, PROTO_ERR_INTERNAL, "out of memory");
		return NULL;
	}
	p->sender = s->num;
	strcpy(p->from, s->name);
	hub_copy(p->id, &c->id);
	if (c->ref.p) {
		hub_copy(p->ref, &c->ref);
		p->has_ref = 1;
	}
	memcpy(p->body, c->body.p, c->body.len);
	p->body[c->body.len] = '\0';
	p->body_len = c->body.len;
	p->ts = (uint64_t)llround(hub_now(h) * 1000.0);
	return p;
}

/* A pending event of session s (an edit, a reaction, a moderation record)
 * answering command c: its sender, ref, a copy of body and the time; the
 * caller sets from, id and what the event is. NULL when out of memory, and
 * s is told. */
struct hub_pending *hub_pending_event(struct hub *h, struct session *s, const struct proto_cmd *c,
				      const char *body, size_t len)
{
	struct hub_pending *p = calloc(1, sizeof(*p));

	if (p)
		p->body = malloc(len + 1);
	if (!p || !p->body) {
		hub_pending_free(p);
		hub_error(h, s, &c->ref, PROTO_ERR_INTERNAL, "out of memory");
		return NULL;
	}
	p->sender = s->num;
	if (c->ref.p) {
		hub_copy(p->ref, &c->ref);
		p->has_ref = 1;
	}
	memcpy(p->body, body, len);
	p->body[len] = '\0';
	p->body_len = len;
	p->ts = (uint64_t)llround(hub_now(h) * 1000.0);
	return p;
}

void hub_cmd_send(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r = hub_member_room(h, s, c, PROTO_ERR_FORBIDDEN);
	struct hub_pending *p;
	struct hub_retry *t;
	uint64_t seq;
	char id[PROTO_ID_MAX + 1], ref[PROTO_REF_MAX + 1];

	if (!r)
		return;
	seq = room_dedup_find(r, s->name, strlen(s->name), c->id.p, c->id.len);
	if (!seq && (t = hub_retry_find(r, s->name, &c->id))) {
		if (hub_retry_wait(t, s->num, &c->ref) < 0)
			hub_error(h, s, &c->ref, PROTO_ERR_INTERNAL, "out of memory");
		return;
	}
	if (seq) {
		/* A retry of a message already accepted: same ack, no broadcast. */
		hub_copy(id, &c->id);
		if (c->ref.p)
			hub_copy(ref, &c->ref);
		hub_ack(h, s, id, r->name, seq, c->ref.p ? ref : NULL);
		return;
	}
	if (hub_send_check(h, s, r, &c->ref))
		return;
	if (!(p = hub_pending_from(h, s, c)))
		return;
	hub_submit(h, r, p);
}

/* Hand p (for room r, sender, from, id, body, ts set) to the engine: the
 * one way in of a message or another sequenced event of r (an edit,
 * delete or react; a moderation event), a client's or an API publish. */
void hub_submit(struct hub *h, struct room *r, struct hub_pending *p)
{
	strcpy(p->room, r->name);
	strcpy(p->epoch, r->epoch);
	/* The seq is proposed here, in arrival order; an engine completes in
	 * this order per room. One that sequences (the cluster) may replace it. */
	p->seq = ++r->seq_assigned;
	r->pending++;
	if (!h->engine.submit) {
		hub_mem_submit(h, p);
		return;
	}
	/* The engine completes later: a retry in between waits for this
	 * message's answer instead of taking a second seq. */
	hub_retry_add(r, p->from, p->id);
	h->in_submit = 1;
	h->engine.submit(h->engine.ctx, h, p);
	h->in_submit = 0;
}

/* The engine contract: a submitted message completes later, never inside
 * submit (the hub is in the middle of a command then). */
static void hub_check_not_in_submit(struct hub *h, const struct hub_pending *p)
{
	if (h->in_submit)
		log_error(NULL, "engine contract broken: message %s/%llu completed inside submit",
			  p->room, (unsigned long long)p->seq);
}

struct session *hub_sender(struct hub *h, uint64_t num)
{
	struct session *s = NULL;

	HASH_FIND(hh, h->sessions, &num, sizeof(num), s);
	return s && !s->closing ? s : NULL;
}

/* Can p be recorded and fanned out here now? Storage completes in the
 * order the hub proposed, so its messages always can. The answer of an
 * engine that sequences (the cluster) may come before this node's stream
 * brought seq - 1, or after it brought p itself, or in another epoch: the
 * stream applies those. */
static int hub_append_in_order(const struct room *r, const struct hub_pending *p)
{
	return !p->duplicate && !r->loading && p->seq == r->seq + 1 && !strcmp(p->epoch, r->epoch);
}

/* Nothing was stored: the seq goes back, so seq stays gap-free (the engine
 * fails every later pending message of the room too). */
static void hub_append_failed(struct hub *h, struct room *r, struct session *sender,
			      const struct hub_pending *p, enum proto_err status)
{
	struct proto_str ref = { p->has_ref ? p->ref : NULL, strlen(p->ref) };

	const char *why = status == PROTO_ERR_UNAVAILABLE
			  ? "storage unavailable; the message may not have been stored (retry with the same id)"
			  : status == PROTO_ERR_INTERNAL ? "out of memory; the message was not accepted"
			  : "the message could not be accepted";

	if (!r->pending)
		r->seq_assigned = r->seq;
	if (sender)
		hub_error(h, sender, &ref, status, why);
	else
		hub_api_answer(h, p->sender, status, why, p->room, 0);
	hub_room_release(h, r);
}

void hub_append_done(struct hub *h, struct hub_pending *p, enum proto_err status)
{
	struct session *sender = hub_sender(h, p->sender);
	struct hub_msg m = { p->seq, p->ts, p->from, p->id, p->body, p->body_len, p->kind, p->target, 0 };
	struct room *r = hub_room_find(h, p->room, strlen(p->room));
	struct msgbuf *mb = NULL;
	int apply;

	hub_check_not_in_submit(h, p);
	if (!r) {
		/* Not possible: a pending message keeps its room. */
		log_error(NULL, "message %s/%llu completed for a room not held", p->room,
			  (unsigned long long)p->seq);
		return;
	}
	if (r->pending)
		r->pending--;
	apply = status == PROTO_OK && hub_append_in_order(r, p);
	/* The frame first, before anything moves: in memory only, a message
	 * that cannot be kept was never accepted (its seq goes back, no gap). */
	if (apply && !(mb = hub_encode_message(r->name, &m)) && !h->engine.submit)
		status = PROTO_ERR_INTERNAL;
	if (r->inflight)
		hub_retry_done(h, r, p, status);
	if (status != PROTO_OK) {
		hub_append_failed(h, r, sender, p, status);
		return;
	}
	/* Stored: seq moves on, and the (from, id) pair is remembered even
	 * without a frame, so that a retry gets this ack, never a second seq.
	 * Members who got no frame see a gap in seq and page history. */
	if (apply)
		hub_room_record(h, r, &m, mb);
	if (!p->duplicate)
		h->m->messages_in++;
	if (sender)
		hub_ack(h, sender, p->id, r->name, p->seq, p->has_ref ? p->ref : NULL);
	else
		hub_api_answer(h, p->sender, PROTO_OK, NULL, r->name, p->seq);
	if (!p->duplicate)
		hub_conv_event(h, r, &m);
	hub_room_fanout(h, r, mb);
	msgbuf_unref(mb);
	hub_room_release(h, r);     /* its members may all have left meanwhile */
}

int hub_stream_message(struct hub *h, const char *room, const char *epoch, const struct hub_msg *m)
{
	struct room *r = hub_room_find(h, room, strlen(room));
	struct msgbuf *mb;

	if (!r || r->loading) {
		if (!r)
			hub_conv_stream(h, room, m);
		return 0;          /* the load will bring it */
	}
	if (epoch && epoch[0] && strcmp(epoch, r->epoch) != 0)
		/* The shared history was lost (e.g. Redis restarted empty):
		 * a new epoch, and seq counts from the stream again. */
		hub_room_rebase(h, room, epoch, m->seq - 1);
	if (m->seq <= r->seq)
		return 0;          /* seen already (resync overlap) */
	if (m->seq != r->seq + 1)
		return -1;         /* a gap: the engine re-reads the room */
	/* No frame (ENOMEM): not applied, so the engine re-reads it later. */
	if (!(mb = hub_encode_message(r->name, m)))
		return -1;
	hub_room_record(h, r, m, mb);
	hub_room_fanout(h, r, mb);
	msgbuf_unref(mb);
	hub_room_release(h, r);     /* a kick may have emptied it */
	return 0;
}

void hub_room_rebase(struct hub *h, const char *room, const char *epoch, uint64_t seq)
{
	struct room *r = hub_room_find(h, room, strlen(room));
	struct msgbuf *mb;

	if (!r || r->loading)
		return;
	if (!epoch || !epoch[0] || strcmp(epoch, r->epoch) == 0) {
		if (seq > r->seq) {
			log_warn(NULL, "room %s: messages %llu..%llu are no longer available here", r->name,
				 (unsigned long long)r->seq + 1, (unsigned long long)seq);
			r->seq = r->seq_assigned = seq;
		}
		return;
	}
	log_warn(NULL, "room %s: history restarted (epoch %s -> %s)", r->name, r->epoch, epoch);
	snprintf(r->epoch, sizeof(r->epoch), "%s", epoch);
	room_reset(r);
	r->seq = r->seq_assigned = seq;
	/* Clients hold (seq, epoch) pairs of the old history: tell them. */
	if ((mb = proto_encode_reset(r->name, r->epoch, r->seq))) {
		hub_room_broadcast(h, r, mb, NULL, 0);
		msgbuf_unref(mb);
	}
}
