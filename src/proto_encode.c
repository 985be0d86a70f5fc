/*
 * proto_encode.c - every chat.v1 event the server sends, written with
 * jsonw: the encoding half of the protocol (proto.c decodes). Pure: values
 * in, a finished frame out (a msgbuf with one reference, the caller's), or
 * NULL on ENOMEM; no hub state. Events that carry a list of names are
 * written in steps (proto_w_*), so that the hub can add the names it holds
 * without building a list first.
 */
#include <string.h>

#include "jsonw.h"
#include "proto.h"

static void proto_w_begin(struct jsonw *w, const char *type, size_t hint)
{
	jsonw_init(w, hint);
	jsonw_obj_open(w);
	jsonw_kv_cstr(w, "type", type);
}

static void proto_w_ref(struct jsonw *w, const struct proto_str *ref)
{
	if (ref && ref->p)
		jsonw_kv_str(w, "ref", ref->p, ref->len);
}

/* Close the event object (after its ref, if any) and hand over the frame. */
static struct msgbuf *proto_w_finish(struct jsonw *w, const struct proto_str *ref)
{
	proto_w_ref(w, ref);
	jsonw_obj_close(w);
	return jsonw_finish(w);
}

struct msgbuf *proto_encode_error(enum proto_err code, const char *message,
				  const struct proto_str *ref)
{
	struct jsonw w;

	proto_w_begin(&w, "error", 128 + strlen(message));
	jsonw_kv_cstr(&w, "code", proto_err_name(code));
	jsonw_kv_cstr(&w, "message", message);
	return proto_w_finish(&w, ref);
}

struct msgbuf *proto_encode_ack(const char *id, const char *room, uint64_t seq, const char *ref)
{
	struct proto_str r = { ref, ref ? strlen(ref) : 0 };
	struct jsonw w;

	proto_w_begin(&w, "ack", 160);
	jsonw_kv_cstr(&w, "id", id);
	if (room) {
		jsonw_kv_cstr(&w, "room", room);
		jsonw_kv_u64(&w, "seq", seq);
	}
	return proto_w_finish(&w, &r);
}

struct msgbuf *proto_encode_welcome(const char *session, const char *name, double heartbeat,
				    const char *node, double exp, const struct proto_str *ref)
{
	struct jsonw w;

	proto_w_begin(&w, "welcome", 160);
	jsonw_kv_cstr(&w, "session", session);
	jsonw_kv_cstr(&w, "name", name);
	jsonw_key(&w, "heartbeat");
	jsonw_num(&w, heartbeat);
	jsonw_kv_cstr(&w, "node", node);
	if (exp > 0) {
		jsonw_key(&w, "exp");
		jsonw_num(&w, exp);
	}
	return proto_w_finish(&w, ref);
}

struct msgbuf *proto_encode_pong(const struct proto_str *ref)
{
	struct jsonw w;

	proto_w_begin(&w, "pong", 64);
	return proto_w_finish(&w, ref);
}

struct msgbuf *proto_encode_left(const char *room, const char *reason, const struct proto_str *ref)
{
	struct jsonw w;

	proto_w_begin(&w, "left", 128);
	jsonw_kv_cstr(&w, "room", room);
	if (reason)
		jsonw_kv_cstr(&w, "reason", reason);
	return proto_w_finish(&w, ref);
}

struct msgbuf *proto_encode_presence(const char *room, const char *name, int join)
{
	struct jsonw w;

	proto_w_begin(&w, "presence", 128);
	jsonw_kv_cstr(&w, "room", room);
	jsonw_kv_cstr(&w, "name", name);
	jsonw_kv_cstr(&w, "state", join ? "join" : "leave");
	return proto_w_finish(&w, NULL);
}

struct msgbuf *proto_encode_reset(const char *room, const char *epoch, uint64_t seq)
{
	struct jsonw w;

	proto_w_begin(&w, "reset", 128);
	jsonw_kv_cstr(&w, "room", room);
	jsonw_kv_cstr(&w, "epoch", epoch);
	jsonw_kv_u64(&w, "seq", seq);
	return proto_w_finish(&w, NULL);
}

/* The fields message and direct share (from, id, body, ts), then the end
 * of the event. */
static struct msgbuf *proto_w_msg_finish(struct jsonw *w, const struct proto_msg *m)
{
	jsonw_kv_cstr(w, "from", m->from);
	jsonw_kv_cstr(w, "id", m->id);
	jsonw_kv_str(w, "body", m->body, m->body_len);
	jsonw_kv_u64(w, "ts", m->ts);
	return proto_w_finish(w, NULL);
}

static struct msgbuf *proto_encode_event(const char *room, const struct proto_msg *m);

struct msgbuf *proto_encode_message(const char *room, const struct proto_msg *m)
{
	struct jsonw w;

	if (m->kind || m->deleted)
		return proto_encode_event(room, m);
	proto_w_begin(&w, "message", 160 + m->body_len + m->body_len / 8);
	jsonw_kv_cstr(&w, "room", room);
	jsonw_kv_u64(&w, "seq", m->seq);
	return proto_w_msg_finish(&w, m);
}

struct msgbuf *proto_encode_direct(const struct proto_msg *m)
{
	struct jsonw w;

	proto_w_begin(&w, "direct", 160 + m->body_len + m->body_len / 8);
	return proto_w_msg_finish(&w, m);
}

struct msgbuf *proto_encode_history(const char *room, struct msgbuf *const *frames, uint32_t n,
				    const struct proto_str *ref)
{
	size_t total = 0;
	struct jsonw w;
	uint32_t i;

	for (i = 0; i < n; i++)
		total += frames[i]->len + 1;
	proto_w_begin(&w, "history", 128 + total);
	jsonw_kv_cstr(&w, "room", room);
	jsonw_key(&w, "messages");
	jsonw_arr_open(&w);
	for (i = 0; i < n; i++)
		jsonw_raw(&w, (const char *)frames[i]->data, frames[i]->len);
	jsonw_arr_close(&w);
	return proto_w_finish(&w, ref);
}

void proto_w_joined(struct jsonw *w, const char *room, uint64_t seq, const char *epoch,
		    uint64_t read, uint32_t members, const struct proto_room_info *info)
{
	proto_w_begin(w, "joined", 512 + 40 * (size_t)members);
	jsonw_kv_cstr(w, "room", room);
	jsonw_kv_u64(w, "seq", seq);
	jsonw_kv_cstr(w, "epoch", epoch);
	jsonw_kv_u64(w, "read", read);
	if (info) {
		jsonw_kv_cstr(w, "role", info->role);
		jsonw_key(w, "settings");
		jsonw_obj_open(w);
		jsonw_key(w, "private");
		jsonw_bool(w, info->private_room);
		jsonw_key(w, "read_only");
		jsonw_bool(w, info->read_only);
		jsonw_kv_u64(w, "history", info->history);
		if (info->topic)
			jsonw_kv_cstr(w, "topic", info->topic);
		jsonw_obj_close(w);
	}
	jsonw_key(w, "members");
	jsonw_arr_open(w);
}

struct msgbuf *proto_encode_joined_end(struct jsonw *w, int has_since, int recovered,
				       int truncated, const struct proto_str *ref)
{
	jsonw_arr_close(w);
	if (has_since) {
		jsonw_key(w, "recovered");
		jsonw_bool(w, recovered);
		if (truncated) {
			jsonw_key(w, "truncated");
			jsonw_bool(w, 1);
		}
	}
	return proto_w_finish(w, ref);
}

void proto_w_members(struct jsonw *w, const char *room, uint32_t members)
{
	proto_w_begin(w, "members", 128 + 40 * (size_t)members);
	jsonw_kv_cstr(w, "room", room);
	jsonw_key(w, "names");
	jsonw_arr_open(w);
}

struct msgbuf *proto_encode_members_end(struct jsonw *w, const struct proto_str *ref)
{
	jsonw_arr_close(w);
	return proto_w_finish(w, ref);
}

void proto_w_name(struct jsonw *w, const char *name)
{
	jsonw_cstr(w, name);
}

/* ---- conversations ------------------------------------------------------ */

static const char *const proto_kind_type[PROTO_KIND_COUNT] = {
	"message", "edit", "delete", "react", "react",
};

/* A message, edit, delete or react event. A deleted message or edit keeps
 * "body": "" (clients that predate deletion expect a string) and says
 * "deleted": true. */
static struct msgbuf *proto_encode_event(const char *room, const struct proto_msg *m)
{
	int kind = m->kind >= 0 && m->kind < PROTO_KIND_COUNT ? m->kind : PROTO_KIND_MESSAGE;
	struct jsonw w;

	proto_w_begin(&w, proto_kind_type[kind], 192 + m->body_len + m->body_len / 8);
	jsonw_kv_cstr(&w, "room", room);
	jsonw_kv_u64(&w, "seq", m->seq);
	if (kind != PROTO_KIND_MESSAGE)
		jsonw_kv_u64(&w, "target", m->target);
	jsonw_kv_cstr(&w, "from", m->from);
	jsonw_kv_cstr(&w, "id", m->id);
	switch (kind) {
	case PROTO_KIND_MESSAGE:
	case PROTO_KIND_EDIT:
		jsonw_kv_str(&w, "body", m->deleted ? "" : m->body, m->deleted ? 0 : m->body_len);
		if (m->deleted) {
			jsonw_key(&w, "deleted");
			jsonw_bool(&w, 1);
		}
		break;
	case PROTO_KIND_REACT:
	case PROTO_KIND_UNREACT:
		jsonw_kv_str(&w, "reaction", m->body, m->body_len);
		jsonw_key(&w, "on");
		jsonw_bool(&w, kind == PROTO_KIND_REACT);
		break;
	default:
		break;
	}
	jsonw_kv_u64(&w, "ts", m->ts);
	return proto_w_finish(&w, NULL);
}

struct msgbuf *proto_encode_direct_in(const char *room, const struct proto_msg *m)
{
	struct jsonw w;

	proto_w_begin(&w, "direct", 192 + m->body_len + m->body_len / 8);
	jsonw_kv_cstr(&w, "from", m->from);
	jsonw_kv_cstr(&w, "id", m->id);
	jsonw_kv_str(&w, "body", m->body, m->body_len);
	jsonw_kv_u64(&w, "ts", m->ts);
	jsonw_kv_cstr(&w, "room", room);
	jsonw_kv_u64(&w, "seq", m->seq);
	return proto_w_finish(&w, NULL);
}

struct msgbuf *proto_encode_typing(const char *room, const char *from, int on, uint64_t ttl_ms)
{
	struct jsonw w;

	proto_w_begin(&w, "typing", 160);
	jsonw_kv_cstr(&w, "room", room);
	jsonw_kv_cstr(&w, "from", from);
	jsonw_key(&w, "on");
	jsonw_bool(&w, on);
	jsonw_kv_u64(&w, "ttl", on ? ttl_ms : 0);
	return proto_w_finish(&w, NULL);
}

struct msgbuf *proto_encode_read(const char *room, uint64_t seq, const struct proto_str *ref)
{
	struct jsonw w;

	proto_w_begin(&w, "read", 160);
	jsonw_kv_cstr(&w, "room", room);
	jsonw_kv_u64(&w, "seq", seq);
	return proto_w_finish(&w, ref);
}

struct msgbuf *proto_encode_receipt(const char *room, const char *from, uint64_t seq)
{
	struct jsonw w;

	proto_w_begin(&w, "receipt", 160);
	jsonw_kv_cstr(&w, "room", room);
	jsonw_kv_cstr(&w, "from", from);
	jsonw_kv_u64(&w, "seq", seq);
	return proto_w_finish(&w, NULL);
}

void proto_w_state(struct jsonw *w, const char *room, const struct proto_msg *m,
		   uint64_t edited, uint32_t edits, size_t hint)
{
	proto_w_begin(w, "message", 256 + hint + m->body_len + m->body_len / 8);
	jsonw_kv_cstr(w, "room", room);
	jsonw_kv_u64(w, "seq", m->seq);
	jsonw_kv_cstr(w, "from", m->from);
	jsonw_kv_cstr(w, "id", m->id);
	jsonw_kv_str(w, "body", m->deleted ? "" : m->body, m->deleted ? 0 : m->body_len);
	jsonw_kv_u64(w, "ts", m->ts);
	if (m->deleted) {
		jsonw_key(w, "deleted");
		jsonw_bool(w, 1);
	}
	if (edits) {
		jsonw_kv_u64(w, "edited", edited);
		jsonw_kv_u64(w, "edits", edits);
	}
	jsonw_key(w, "reactions");
	jsonw_arr_open(w);
}

void proto_w_reaction(struct jsonw *w, const char *reaction, uint32_t count)
{
	jsonw_obj_open(w);
	jsonw_kv_cstr(w, "reaction", reaction);
	jsonw_kv_u64(w, "count", count);
	jsonw_key(w, "names");
	jsonw_arr_open(w);
}

void proto_w_reaction_end(struct jsonw *w)
{
	jsonw_arr_close(w);
	jsonw_obj_close(w);
}

struct msgbuf *proto_encode_state_end(struct jsonw *w)
{
	jsonw_arr_close(w);
	return proto_w_finish(w, NULL);
}

void proto_w_conversations(struct jsonw *w)
{
	proto_w_begin(w, "conversations", 256);
	jsonw_key(w, "conversations");
	jsonw_arr_open(w);
}

void proto_w_conversation(struct jsonw *w, const char *room, const char *with, size_t with_len,
			  uint64_t seq, uint64_t read)
{
	jsonw_obj_open(w);
	jsonw_kv_cstr(w, "room", room);
	jsonw_kv_str(w, "with", with, with_len);
	jsonw_kv_u64(w, "seq", seq);
	jsonw_kv_u64(w, "read", read);
	jsonw_kv_u64(w, "unread", seq > read ? seq - read : 0);
	jsonw_obj_close(w);
}

struct msgbuf *proto_encode_conversations_end(struct jsonw *w, const struct proto_str *ref)
{
	jsonw_arr_close(w);
	return proto_w_finish(w, ref);
}
