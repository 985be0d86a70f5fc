/*
 * hub_encode.c - the chat.v1 events the hub sends, written with jsonw:
 * replies (ack, error, and the reply envelope), message, presence, direct,
 * member lists.
 */
#include "hub_impl.h"

void hub_w_begin(struct jsonw *w, const char *type, size_t hint)
{
	jsonw_init(w, hint);
	jsonw_obj_open(w);
	jsonw_kv_cstr(w, "type", type);
}

void hub_w_ref(struct jsonw *w, const struct proto_str *ref)
{
	if (ref->p)
		jsonw_kv_str(w, "ref", ref->p, ref->len);
}

/* Finish w and queue it to s as a reply (never dropped by drop_oldest). */
void hub_w_reply(struct hub *h, struct session *s, struct jsonw *w)
{
	struct msgbuf *mb;

	jsonw_obj_close(w);
	mb = jsonw_finish(w);
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
	struct jsonw w;

	h->m->errors[code < PROTO_ERR_COUNT ? code : PROTO_ERR_INTERNAL]++;
	log_debug(s->id, "error %s: %s", proto_err_name(code), message);
	hub_w_begin(&w, "error", 128 + strlen(message));
	jsonw_kv_cstr(&w, "code", proto_err_name(code));
	jsonw_kv_cstr(&w, "message", message);
	hub_w_ref(&w, ref);
	hub_w_reply(h, s, &w);
}

/* The presence event, for a local or a remote member; NULL on ENOMEM. */
struct msgbuf *hub_encode_presence(const char *room, const char *name, int join)
{
	struct jsonw w;

	hub_w_begin(&w, "presence", 128);
	jsonw_kv_cstr(&w, "room", room);
	jsonw_kv_cstr(&w, "name", name);
	jsonw_kv_cstr(&w, "state", join ? "join" : "leave");
	jsonw_obj_close(&w);
	return jsonw_finish(&w);
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
	jsonw_cstr(nc->w, name);
}

/* Member names of r (on every node), each once. */
void hub_w_names(struct hub *h, struct jsonw *w, struct room *r)
{
	struct membership *m, *tmp;

	struct hub_names_ctx nc = { h, w };

	h->mark++;
	jsonw_arr_open(w);
	HASH_ITER(hh_room, r->members, m, tmp) {
		struct hub_user *u = m->sess->user;
		if (!u || u->mark == h->mark)
			continue;
		u->mark = h->mark;
		jsonw_cstr(w, u->name);
	}
	if (h->peers.names)
		h->peers.names(h->peers.ctx, r->name, hub_names_remote, &nc);
	jsonw_arr_close(w);
}

/* The fields message and direct share (from, id, body, ts), then the end
 * of the event: the finished buffer, or NULL on ENOMEM. */
static struct msgbuf *hub_w_msg_finish(struct jsonw *w, const struct hub_msg *m)
{
	jsonw_kv_cstr(w, "from", m->from);
	jsonw_kv_cstr(w, "id", m->id);
	jsonw_kv_str(w, "body", m->body, m->body_len);
	jsonw_kv_u64(w, "ts", m->ts);
	jsonw_obj_close(w);
	return jsonw_finish(w);
}

/* Encode a stored message as the "message" event every member receives. */
struct msgbuf *hub_encode_message(const char *room, const struct hub_msg *m)
{
	struct jsonw w;

	if (m->kind || m->deleted)
		return hub_encode_event(room, m);
	hub_w_begin(&w, "message", 160 + m->body_len + m->body_len / 8);
	jsonw_kv_cstr(&w, "room", room);
	jsonw_kv_u64(&w, "seq", m->seq);
	return hub_w_msg_finish(&w, m);
}

void hub_ack(struct hub *h, struct session *s, const char *id, const char *room,
	     uint64_t seq, const char *ref)
{
	struct jsonw w;

	hub_w_begin(&w, "ack", 160);
	jsonw_kv_cstr(&w, "id", id);
	if (room) {
		jsonw_kv_cstr(&w, "room", room);
		jsonw_kv_u64(&w, "seq", seq);
	}
	if (ref)
		jsonw_kv_cstr(&w, "ref", ref);
	hub_w_reply(h, s, &w);
}

struct msgbuf *hub_encode_direct(const struct hub_msg *m)
{
	struct jsonw w;

	hub_w_begin(&w, "direct", 160 + m->body_len + m->body_len / 8);
	return hub_w_msg_finish(&w, m);
}
