/*
 * hub_dm.c - direct messages: delivered here, or routed by the peers
 * (another node's sessions) and answered with hub_dm_done.
 */
#include "hub_impl.h"

void hub_direct(struct hub *h, const char *to, const struct hub_msg *m)
{
	struct hub_user *u = hub_user_find(h, to, strlen(to));
	struct proto_msg pm = hub_proto_msg(m);
	struct msgbuf *mb;
	struct session *t;

	if (!u || !(mb = proto_encode_direct(&pm)))
		return;
	for (t = u->sessions; t; t = t->user_next)
		if (hub_enqueue(h, t, mb, 1) == 0)
			h->m->messages_out++;
	msgbuf_unref(mb);
}

void hub_dm_done(struct hub *h, struct hub_pending *p, enum proto_err status)
{
	struct session *sender = hub_sender(h, p->sender);
	struct proto_str ref = { p->has_ref ? p->ref : NULL, strlen(p->ref) };

	if (status == PROTO_OK && h->ev.direct) {
		struct hub_msg m = { 0, p->ts, p->from, p->id, p->body, p->body_len, 0, 0, 0 };
		h->ev.direct(h->ev.ctx, p->to, &m);
	}
	if (!sender) {
		if (status == PROTO_OK)
			h->m->messages_in++;
		hub_api_answer(h, p->sender, status, status == PROTO_ERR_NOT_FOUND ? "no such user online"
			       : "the cluster is unavailable; the message was not sent", NULL, 0);
		return;
	}
	if (status == PROTO_OK) {
		h->m->messages_in++;
		hub_ack(h, sender, p->id, NULL, 0, p->has_ref ? p->ref : NULL);
	} else {
		hub_error(h, sender, &ref, status, status == PROTO_ERR_NOT_FOUND ? "no such user online"
			  : "the cluster is unavailable; the message was not sent");
	}
}

/* dm through a cluster engine: it reaches the recipient's sessions on
 * every node, this one included, through hub_direct(). */
static void hub_cmd_dm_peers(struct hub *h, struct session *s, const struct proto_cmd *c,
			      struct hub_user *u)
{
	struct hub_pending *p;
	enum proto_err rc;
	char to[PROTO_NAME_MAX + 1];

	/* The engine knows who is online cluster-wide; it answers not_found. */
	(void)u;
	hub_copy(to, &c->to);
	if (!(p = hub_pending_from(h, s, c)))
		return;
	strcpy(p->to, to);
	rc = h->peers.dm(h->peers.ctx, h, p);
	if (rc != PROTO_OK) {
		hub_dm_done(h, p, rc);
		hub_pending_free(p);
	}
}

void hub_cmd_dm(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct hub_user *u = hub_user_find(h, c->to.p, c->to.len);
	struct hub_msg m = { 0 };
	char to[PROTO_NAME_MAX + 1], ref[PROTO_REF_MAX + 1];

	/* With an engine (storage, cluster) every dm is a message of the
	 * two users' conversation: stored, and delivered when the recipient
	 * comes back. In memory only, it still joins the conversation while
	 * the recipient is online; to an offline one it is not deliverable. */
	if (h->engine.submit || u) {
		hub_conv_dm(h, s, c);
		return;
	}
	if (h->peers.dm) {
		hub_cmd_dm_peers(h, s, c, u);
		return;
	}
	if (!u) {
		hub_error(h, s, &c->ref, PROTO_ERR_NOT_FOUND, "no such user online");
		return;
	}
	/* Strings from the decoded frame are NUL-terminated (cJSON's). */
	m.seq = 0;
	m.ts = (uint64_t)llround(hub_now(h) * 1000.0);
	m.from = s->name;
	m.id = c->id.p;
	m.body = c->body.p;
	m.body_len = c->body.len;
	h->m->messages_in++;
	if (c->ref.p)
		hub_copy(ref, &c->ref);
	hub_ack(h, s, c->id.p, NULL, 0, c->ref.p ? ref : NULL);
	hub_copy(to, &c->to);
	if (h->ev.direct)
		h->ev.direct(h->ev.ctx, to, &m);
	hub_direct(h, to, &m);
}
