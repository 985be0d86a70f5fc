/*
 * proto_encode_mod.c - the chat.v1 events of token lifetimes and moderation
 * (docs/protocol.md#token-lifetime-token_expiring--refresh and
 * #roles-and-moderation), and the JSON body of a moderation event. Pure,
 * like proto_encode.c: values in, a finished frame out, NULL on ENOMEM.
 */
#include <math.h>
#include <string.h>

#include "jsonw.h"
#include "proto.h"

static void pm_begin(struct jsonw *w, const char *type, size_t hint)
{
	jsonw_init(w, hint);
	jsonw_obj_open(w);
	jsonw_kv_cstr(w, "type", type);
}

static struct msgbuf *pm_finish(struct jsonw *w, const struct proto_str *ref)
{
	if (ref && ref->p)
		jsonw_kv_str(w, "ref", ref->p, ref->len);
	jsonw_obj_close(w);
	return jsonw_finish(w);
}

struct msgbuf *proto_encode_token_expiring(double end, double in, const char *reason)
{
	struct jsonw w;

	pm_begin(&w, "token_expiring", 128);
	jsonw_key(&w, "exp");
	jsonw_num(&w, end);
	jsonw_key(&w, "in");
	jsonw_num(&w, floor(in + 0.5));
	jsonw_kv_cstr(&w, "reason", reason);
	return pm_finish(&w, NULL);
}

struct msgbuf *proto_encode_refreshed(double exp, const struct proto_str *ref)
{
	struct jsonw w;

	pm_begin(&w, "refreshed", 96);
	if (exp > 0) {
		jsonw_key(&w, "exp");
		jsonw_num(&w, exp);
	}
	return pm_finish(&w, ref);
}

static void pm_settings(struct jsonw *w, const struct proto_mod_event *e)
{
	if (e->has_private) {
		jsonw_key(w, "private");
		jsonw_bool(w, e->private_room);
	}
	if (e->has_read_only) {
		jsonw_key(w, "read_only");
		jsonw_bool(w, e->read_only);
	}
	if (e->has_history)
		jsonw_kv_u64(w, "history", e->history);
	if (e->topic.p)
		jsonw_kv_str(w, "topic", e->topic.p, e->topic.len);
}

struct msgbuf *proto_encode_mod_body(const struct proto_mod_event *e)
{
	struct jsonw w;

	jsonw_init(&w, 512);
	jsonw_obj_open(&w);
	jsonw_kv_cstr(&w, "action", e->action);
	if (e->user)
		jsonw_kv_cstr(&w, "user", e->user);
	if (e->by)
		jsonw_kv_cstr(&w, "by", e->by);
	if (e->reason.p)
		jsonw_kv_str(&w, "reason", e->reason.p, e->reason.len);
	if (e->has_until)
		jsonw_kv_u64(&w, "until", e->until);
	if (e->role)
		jsonw_kv_cstr(&w, "role", e->role);
	if (e->has_seq)
		jsonw_kv_u64(&w, "seq", e->seq);
	pm_settings(&w, e);
	jsonw_obj_close(&w);
	return jsonw_finish(&w);
}

struct msgbuf *proto_encode_removed(const char *kind, const char *room, const char *by,
				   const char *reason, int has_until, uint64_t until)
{
	struct jsonw w;

	pm_begin(&w, kind, 256);
	jsonw_kv_cstr(&w, "room", room);
	if (by)
		jsonw_kv_cstr(&w, "by", by);
	if (reason)
		jsonw_kv_cstr(&w, "reason", reason);
	if (has_until)
		jsonw_kv_u64(&w, "until", until);
	return pm_finish(&w, NULL);
}

struct msgbuf *proto_encode_presence_cause(const char *room, const char *name, const char *cause,
					   const char *by, const char *reason)
{
	struct jsonw w;

	pm_begin(&w, "presence", 256);
	jsonw_kv_cstr(&w, "room", room);
	jsonw_kv_cstr(&w, "name", name);
	jsonw_kv_cstr(&w, "state", "leave");
	jsonw_kv_cstr(&w, "cause", cause);
	if (by)
		jsonw_kv_cstr(&w, "by", by);
	if (reason)
		jsonw_kv_cstr(&w, "reason", reason);
	return pm_finish(&w, NULL);
}
