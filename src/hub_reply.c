/*
 * hub_reply.c - answering a session: queue a finished reply (never dropped
 * by drop_oldest), the error and ack replies, and the member names the
 * joined and members replies list. The events themselves are encoded by
 * proto_encode.c.
 */
#include "hub_impl.h"

/* Queue mb to s as a reply, taking over the caller's reference. NULL (the
 * reply could not be encoded): s cannot be answered, so it is closed. */
void hub_reply(struct hub *h, struct session *s, struct msgbuf *mb)
{
	if (!mb) {
		log_error(s->id, "out of memory encoding a reply; closing");
		hub_session_close(h, s, 1011, "out of memory", 0);
		return;
	}
	hub_enqueue(h, s, mb, 0);
	msgbuf_unref(mb);
}

void hub_error(struct hub *h, struct session *s, const struct proto_str *ref,
	       enum proto_err code, const char *message)
{
	h->m->errors[code < PROTO_ERR_COUNT ? code : PROTO_ERR_INTERNAL]++;
	log_debug(s->id, "error %s: %s", proto_err_name(code), message);
	hub_reply(h, s, proto_encode_error(code, message, ref));
}

void hub_ack(struct hub *h, struct session *s, const char *id, const char *room,
	     uint64_t seq, const char *ref)
{
	hub_reply(h, s, proto_encode_ack(id, room, seq, ref));
}

struct hub_names_ctx {
	struct hub *h;
	struct jsonw *w;
};

/* A name present on another node: listed unless a local member has it. */
static void hub_names_remote(void *arg, const char *name)
{
	struct hub_names_ctx *nc = arg;
	struct hub_user *u = hub_user_find(nc->h, name, strlen(name));

	if (u && u->mark == nc->h->mark)
		return;
	if (u)
		u->mark = nc->h->mark;
	proto_w_name(nc->w, name);
}

/* Add the member names of r (on every node), each once, to the list w has
 * open (proto_w_joined, proto_w_members). */
void hub_names(struct hub *h, struct jsonw *w, struct room *r)
{
	struct membership *m, *tmp;
	struct hub_names_ctx nc = { h, w };

	h->mark++;
	HASH_ITER(hh_room, r->members, m, tmp) {
		struct hub_user *u = m->sess->user;
		if (!u || u->mark == h->mark)
			continue;
		u->mark = h->mark;
		proto_w_name(w, u->name);
	}
	if (h->peers.names)
		h->peers.names(h->peers.ctx, r->name, hub_names_remote, &nc);
}
