/*
 * hub_mod.c - moderation: kick, ban, unban, mute, unmute, invite, grant and
 * delete. A command is checked against the actor's role, its state records
 * are handed to the engine (state_put), and it becomes a sequenced event of
 * the room from PROTO_MOD_SENDER, a name no client can hold, through the
 * same submit path as every message (hub_submit). Wherever that event
 * lands in the room's history - this node at commit, every node of a
 * cluster from the stream - hub_mod_apply() applies it: the state changes
 * and the target's local sessions leave. So every node and every client
 * converges on one ordered record of who did what.
 */
#include "hub_impl.h"

#include <cjson/cJSON.h>

void hub_mod_event(struct hub *h, struct session *s, struct room *r, const struct proto_cmd *c,
		   const char *body, size_t len)
{
	/* The actor gets the ack (id, seq): the answer to its command. */
	struct hub_pending *p = hub_pending_event(h, s, c, body, len);

	if (!p)
		return;
	strcpy(p->from, PROTO_MOD_SENDER);
	snprintf(p->id, sizeof(p->id), "mod-%016llx", (unsigned long long)hub_random(h));
	hub_submit(h, r, p);
}

static const char *hub_mod_verb(enum proto_type t)
{
	switch (t) {
	case PROTO_KICK: return "kick";
	case PROTO_BAN: return "ban";
	case PROTO_UNBAN: return "unban";
	case PROTO_MUTE: return "mute";
	case PROTO_UNMUTE: return "unmute";
	case PROTO_INVITE: return "invite";
	case PROTO_GRANT: return "grant";
	case PROTO_DELETE: return "delete";
	default: return "?";
	}
}

/* Is seq a moderation event of r, as far as memory tells? (The engines
 * refuse to erase one too, whatever memory holds.) */
static int hub_mod_is_event(struct room *r, uint64_t seq)
{
	struct msgbuf *mb = room_frame(r, seq);
	cJSON *j = mb ? cJSON_ParseWithLength((const char *)mb->data, mb->len) : NULL;
	const cJSON *from = cJSON_GetObjectItemCaseSensitive(j, "from");
	int yes = cJSON_IsString(from) && strcmp(from->valuestring, PROTO_MOD_SENDER) == 0;

	cJSON_Delete(j);
	return yes;
}

/* Is s allowed to run c in r? Answers forbidden when not. */
static int hub_mod_allowed(struct hub *h, struct session *s, struct room *r, const struct proto_cmd *c,
			   const char *target)
{
	enum auth_role mine = hub_role(h, r, s);
	enum auth_role need = c->type == PROTO_GRANT ? AUTH_ROLE_OWNER : AUTH_ROLE_MODERATOR;

	if (mine < need) {
		hub_error(h, s, &c->ref, PROTO_ERR_FORBIDDEN, need == AUTH_ROLE_OWNER
			  ? "only an owner of the room grants roles"
			  : "only a moderator or owner of the room does that");
		return 0;
	}
	/* Nobody silences or removes an equal or a superior. */
	if (target && c->type != PROTO_GRANT && c->type != PROTO_INVITE &&
	    hub_role_of_name(h, r, target) >= mine) {
		hub_error(h, s, &c->ref, PROTO_ERR_FORBIDDEN, "that user's role is not below yours");
		return 0;
	}
	return 1;
}

/* The state record a command keeps: key into key, value (NULL: removed). */
static const char *hub_mod_record(struct hub *h, const struct proto_cmd *c, const char *target,
				  uint64_t until, enum auth_role role, char *key, size_t keylen,
				  char *val, size_t vallen)
{
	(void)h;
	snprintf(val, vallen, "%llu", (unsigned long long)until);
	switch (c->type) {
	case PROTO_BAN:
	case PROTO_UNBAN:
		snprintf(key, keylen, "ban:%s", target);
		return c->type == PROTO_BAN ? val : NULL;
	case PROTO_MUTE:
	case PROTO_UNMUTE:
		snprintf(key, keylen, "mute:%s", target);
		return c->type == PROTO_MUTE ? val : NULL;
	case PROTO_INVITE:
		snprintf(key, keylen, "invite:%s", target);
		return "1";
	case PROTO_GRANT:
		snprintf(key, keylen, "role:%s", target);
		return role == AUTH_ROLE_MEMBER ? NULL : auth_role_name(role);
	default:
		key[0] = '\0';
		return NULL;
	}
}

void hub_cmd_mod(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r = hub_member_room(h, s, c, PROTO_ERR_FORBIDDEN);
	char target[PROTO_NAME_MAX + 1] = "", key[PROTO_NAME_MAX + 16], val[24];
	enum auth_role role = AUTH_ROLE_MEMBER;
	struct proto_mod_event e = { .action = hub_mod_verb(c->type), .by = s->name };
	const char *value;
	uint64_t until = 0;
	struct msgbuf *mb;

	if (!r)
		return;
	if (c->user.p)
		hub_copy(target, &c->user);
	if (c->type == PROTO_GRANT && auth_role_parse(c->role.p, c->role.len, &role)) {
		hub_error(h, s, &c->ref, PROTO_ERR_BAD_REQUEST, "role must be owner, moderator or member");
		return;
	}
	if (!hub_mod_allowed(h, s, r, c, c->type == PROTO_DELETE ? NULL : target))
		return;
	if (c->type == PROTO_DELETE && c->seq > r->seq) {
		hub_error(h, s, &c->ref, PROTO_ERR_NOT_FOUND, "no message with that seq in this room");
		return;
	}
	if (c->type == PROTO_DELETE && hub_mod_is_event(r, c->seq)) {
		hub_error(h, s, &c->ref, PROTO_ERR_FORBIDDEN, "moderation events stay in the history");
		return;
	}
	if (c->has_duration)
		until = (uint64_t)llround(hub_now(h) * 1000.0) + c->duration * 1000;
	e.user = target[0] ? target : NULL;
	e.reason = c->reason;
	e.has_until = c->type == PROTO_BAN || c->type == PROTO_MUTE;
	e.until = until;
	e.role = c->type == PROTO_GRANT ? auth_role_name(role) : NULL;
	e.has_seq = c->type == PROTO_DELETE;
	e.seq = c->seq;
	if (!(mb = proto_encode_mod_body(&e))) {
		hub_error(h, s, &c->ref, PROTO_ERR_INTERNAL, "out of memory");
		return;
	}
	value = hub_mod_record(h, c, target, until, role, key, sizeof(key), val, sizeof(val));
	if (key[0] && h->engine.state_put)
		h->engine.state_put(h->engine.ctx, r->name, key, value);
	if (c->type == PROTO_DELETE && h->engine.erase)
		h->engine.erase(h->engine.ctx, r->name, c->seq);
	log_info(s->id, "room %s: %s %s by %s%s%.*s", r->name, hub_mod_verb(c->type),
		 target[0] ? target : "-", s->name, c->reason.p ? ": " : "",
		 (int)c->reason.len, c->reason.p ? c->reason.p : "");
	h->m->moderation_actions++;
	hub_mod_event(h, s, r, c, (const char *)mb->data, mb->len);
	msgbuf_unref(mb);
}

/* The presence leave that says why (kicked or banned), to r's members. */
static void hub_mod_presence(struct hub *h, struct room *r, const char *name, const char *why,
			     const cJSON *ev)
{
	const cJSON *reason = cJSON_GetObjectItemCaseSensitive(ev, "reason");
	const cJSON *by = cJSON_GetObjectItemCaseSensitive(ev, "by");
	struct msgbuf *mb = proto_encode_presence_cause(r->name, name, why,
							cJSON_IsString(by) ? by->valuestring : NULL,
							cJSON_IsString(reason) ? reason->valuestring : NULL);

	if (mb) {
		hub_room_broadcast(h, r, mb, NULL, 0);
		msgbuf_unref(mb);
	}
}

/* Every local session of name leaves r, told why; the room is told once.
 * r is not released here: the caller holds it (a commit or the stream). */
static void hub_mod_remove(struct hub *h, struct room *r, const char *name, const char *why,
			   const cJSON *ev)
{
	struct hub_user *u = hub_user_find(h, name, strlen(name));
	const cJSON *reason = cJSON_GetObjectItemCaseSensitive(ev, "reason");
	const cJSON *by = cJSON_GetObjectItemCaseSensitive(ev, "by");
	const cJSON *until = cJSON_GetObjectItemCaseSensitive(ev, "until");
	struct session *s, *tmp;
	struct membership *m;

	if (u)
		DL_FOREACH_SAFE2(u->sessions, s, tmp, user_next) {
			if (s->closing || !(m = room_member_find(r, s)))
				continue;
			room_member_remove(m);
			/* As hub_member_leave tells them, without its presence
			 * event (the room gets the one with the cause below) and
			 * without releasing r (its caller holds it). */
			if (h->ev.presence && !h->draining)
				h->ev.presence(h->ev.ctx, r->name, s->name, 0);
			if (h->peers.presence)
				h->peers.presence(h->peers.ctx, r->name, s->name, 0);
			hub_reply(h, s, proto_encode_removed(why, r->name,
							     cJSON_IsString(by) ? by->valuestring : NULL,
							     cJSON_IsString(reason) ? reason->valuestring : NULL,
							     cJSON_IsNumber(until), cJSON_IsNumber(until)
							     ? (uint64_t)until->valuedouble : 0));
		}
	if (!h->draining)
		hub_mod_presence(h, r, name, why, ev);
}

/* The state record an applied event stands for, as hub_state_apply takes it. */
static void hub_mod_state(struct hub *h, struct room *r, const char *action, const char *user,
			  const cJSON *ev)
{
	const cJSON *until = cJSON_GetObjectItemCaseSensitive(ev, "until");
	const cJSON *role = cJSON_GetObjectItemCaseSensitive(ev, "role");
	char key[PROTO_NAME_MAX + 16], val[24];
	const char *v = val;
	int rc = 0;

	snprintf(val, sizeof(val), "%llu", cJSON_IsNumber(until) ? (unsigned long long)until->valuedouble : 0ULL);
	if (strcmp(action, "ban") == 0 || strcmp(action, "unban") == 0) {
		snprintf(key, sizeof(key), "ban:%s", user);
		rc = hub_state_apply(r, key, action[0] == 'b' ? v : NULL);
	} else if (strcmp(action, "mute") == 0 || strcmp(action, "unmute") == 0) {
		snprintf(key, sizeof(key), "mute:%s", user);
		rc = hub_state_apply(r, key, action[0] == 'm' ? v : NULL);
	} else if (strcmp(action, "invite") == 0) {
		snprintf(key, sizeof(key), "invite:%s", user);
		rc = hub_state_apply(r, key, "1");
	} else if (strcmp(action, "grant") == 0 && cJSON_IsString(role)) {
		snprintf(key, sizeof(key), "role:%s", user);
		rc = hub_state_apply(r, key, strcmp(role->valuestring, "member") ? role->valuestring : NULL);
	}
	if (rc)
		log_error(NULL, "room %s: out of memory applying a %s", r->name, action);
	(void)h;
}

static void hub_mod_settings(struct room *r, const cJSON *ev)
{
	static const char *const keys[] = { "private", "read_only", "history", "topic" };
	char key[32], val[PROTO_TOPIC_MAX + 24];
	size_t i;

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev, keys[i]);
		if (!v)
			continue;
		snprintf(key, sizeof(key), "set:%s", keys[i]);
		if (cJSON_IsBool(v))
			snprintf(val, sizeof(val), "%d", cJSON_IsTrue(v) ? 1 : 0);
		else if (cJSON_IsNumber(v))
			snprintf(val, sizeof(val), "%llu", (unsigned long long)v->valuedouble);
		else if (cJSON_IsString(v))
			snprintf(val, sizeof(val), "%s", v->valuestring);
		else
			continue;
		if (hub_state_apply(r, key, cJSON_IsString(v) && !val[0] ? NULL : val))
			log_error(NULL, "room %s: out of memory applying settings", r->name);
	}
}

/* delete {seq}: the copy of that message this node keeps in memory loses
 * its body too (the engine erased the stored one). */
static void hub_mod_erase(struct hub *h, struct room *r, const cJSON *ev)
{
	const cJSON *seq = cJSON_GetObjectItemCaseSensitive(ev, "seq");
	struct msgbuf *old, *mb;
	cJSON *j, *from, *id, *ts;
	struct hub_msg m;

	if (!cJSON_IsNumber(seq) || seq->valuedouble < 1 ||
	    !(old = room_frame(r, (uint64_t)seq->valuedouble)))
		return;
	if (!(j = cJSON_ParseWithLength((const char *)old->data, old->len)))
		return;
	from = cJSON_GetObjectItemCaseSensitive(j, "from");
	id = cJSON_GetObjectItemCaseSensitive(j, "id");
	ts = cJSON_GetObjectItemCaseSensitive(j, "ts");
	if (cJSON_IsString(from) && strcmp(from->valuestring, PROTO_MOD_SENDER) != 0 &&
	    cJSON_IsString(id) && cJSON_IsNumber(ts)) {
		m = (struct hub_msg){ (uint64_t)seq->valuedouble, (uint64_t)ts->valuedouble,
				      from->valuestring, id->valuestring, "", 0, HUB_KIND_MESSAGE, 0, 1 };
		if ((mb = hub_encode_message(r->name, &m))) {
			room_frame_replace(r, m.seq, mb);
			msgbuf_unref(mb);
		}
	}
	cJSON_Delete(j);
	/* The message's state (edits, reactions) goes too (hub_edit.c). */
	hub_edit_erased(h, r, (uint64_t)seq->valuedouble);
}

void hub_mod_apply(struct hub *h, struct room *r, const struct hub_msg *m)
{
	cJSON *ev = cJSON_ParseWithLength(m->body, m->body_len);
	const cJSON *action = cJSON_GetObjectItemCaseSensitive(ev, "action");
	const cJSON *user = cJSON_GetObjectItemCaseSensitive(ev, "user");
	const char *a, *name;

	if (!cJSON_IsString(action)) {
		log_warn(NULL, "room %s: moderation event %llu unreadable; ignored", r->name,
			 (unsigned long long)m->seq);
		cJSON_Delete(ev);
		return;
	}
	a = action->valuestring;
	name = cJSON_IsString(user) && proto_valid_name(user->valuestring, strlen(user->valuestring))
	       ? user->valuestring : NULL;
	if (strcmp(a, "settings") == 0)
		hub_mod_settings(r, ev);
	else if (strcmp(a, "delete") == 0)
		hub_mod_erase(h, r, ev);
	else if (name)
		hub_mod_state(h, r, a, name, ev);
	if (name && strcmp(a, "kick") == 0)
		hub_mod_remove(h, r, name, "kicked", ev);
	else if (name && strcmp(a, "ban") == 0)
		hub_mod_remove(h, r, name, "banned", ev);
	cJSON_Delete(ev);
}
