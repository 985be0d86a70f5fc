/*
 * hub_settings.c - what a room knows about its people and itself: granted
 * roles, bans, mutes and invites per name, and the owner's settings
 * (private, read_only, topic, history), over the [[rooms]] defaults of the
 * config. The state is kept as records "kind:name" -> value, the form the
 * engines store (state_put) and hand back on load (hub_load_room_state);
 * the moderation events of hub_mod.c change it on every node alike.
 */
#include "hub_impl.h"

/* What a room holds for one name. */
struct room_user {
	char name[PROTO_NAME_MAX + 1];
	int role;                 /* granted role, -1: none */
	unsigned invited : 1;
	unsigned banned : 1;
	unsigned muted : 1;
	uint64_t ban_until;       /* ms since the epoch, 0: permanent */
	uint64_t mute_until;
	UT_hash_handle hh;
};

struct room_state {
	struct room_user *users;
	int private_room, read_only;   /* -1: not set here, the config's default applies */
	long history;                  /* -1: not set */
	char *topic;                   /* NULL: none */
};

void room_state_free(struct room_state *st)
{
	struct room_user *u, *tmp;

	if (!st)
		return;
	HASH_ITER(hh, st->users, u, tmp) {
		HASH_DEL(st->users, u);
		free(u);
	}
	free(st->topic);
	free(st);
}

static struct room_state *hub_state(struct room *r)
{
	if (!r->state && (r->state = calloc(1, sizeof(*r->state)))) {
		r->state->private_room = r->state->read_only = -1;
		r->state->history = -1;
	}
	return r->state;
}

static struct room_user *hub_state_user(struct room *r, const char *name, int create)
{
	struct room_user *u = NULL;

	if (r->state)
		HASH_FIND_STR(r->state->users, name, u);
	if (u || !create || !hub_state(r) || strlen(name) > PROTO_NAME_MAX)
		return u;
	if ((u = calloc(1, sizeof(*u)))) {
		strcpy(u->name, name);
		u->role = -1;
		HASH_ADD_STR(r->state->users, name, u);
	}
	return u;
}

static uint64_t hub_parse_u64(const char *v)
{
	return v ? strtoull(v, NULL, 10) : 0;
}

int hub_state_apply(struct room *r, const char *key, const char *value)
{
	const char *name = strchr(key, ':');
	struct room_state *st;
	struct room_user *u;
	enum auth_role role;

	if (!name++)
		return 0;           /* not a record chatd writes: ignored */
	if (!(st = hub_state(r)))
		return -1;
	if (strncmp(key, "set:", 4) == 0) {
		if (strcmp(name, "private") == 0)
			st->private_room = value ? atoi(value) != 0 : -1;
		else if (strcmp(name, "read_only") == 0)
			st->read_only = value ? atoi(value) != 0 : -1;
		else if (strcmp(name, "history") == 0)
			st->history = value ? (long)hub_parse_u64(value) : -1;
		else if (strcmp(name, "topic") == 0) {
			free(st->topic);
			st->topic = value && value[0] ? strdup(value) : NULL;
		}
		return 0;
	}
	if (!proto_valid_name(name, strlen(name)) || !(u = hub_state_user(r, name, value != NULL)))
		return value ? -1 : 0;
	if (strncmp(key, "role:", 5) == 0)
		u->role = value && !auth_role_parse(value, strlen(value), &role) ? (int)role : -1;
	else if (strncmp(key, "ban:", 4) == 0) {
		u->banned = value != NULL;
		u->ban_until = hub_parse_u64(value);
	} else if (strncmp(key, "mute:", 5) == 0) {
		u->muted = value != NULL;
		u->mute_until = hub_parse_u64(value);
	} else if (strncmp(key, "invite:", 7) == 0)
		u->invited = value != NULL;
	return 0;
}

void hub_load_room_state(struct hub *h, const char *room, const char *key, const char *value)
{
	struct room *r = hub_room_find(h, room, strlen(room));

	if (r && r->loading && key && hub_state_apply(r, key, value))
		log_error(NULL, "room %s: out of memory loading its state", room);
}

/* A ban or mute in force at now_ms? */
static int hub_until_active(unsigned flag, uint64_t until, uint64_t now_ms)
{
	return flag && (until == 0 || until > now_ms);
}

static uint64_t hub_now_ms(struct hub *h)
{
	return (uint64_t)llround(hub_now(h) * 1000.0);
}

enum auth_role hub_role_of_name(struct hub *h, struct room *r, const char *name)
{
	struct room_user *u = hub_state_user(r, name, 0);
	struct hub_user *hu = hub_user_find(h, name, strlen(name));
	enum auth_role best = u && u->role > 0 ? (enum auth_role)u->role : AUTH_ROLE_MEMBER;
	struct session *s;

	/* What the tokens of its sessions here say, too. */
	if (hu)
		DL_FOREACH2(hu->sessions, s, user_next) {
			enum auth_role t = auth_token_role(s->ident, r->name, strlen(r->name));
			if (t > best)
				best = t;
		}
	return best;
}

enum auth_role hub_role(struct hub *h, struct room *r, struct session *s)
{
	struct room_user *u = hub_state_user(r, s->name, 0);
	enum auth_role t = auth_token_role(s->ident, r->name, strlen(r->name));

	return u && u->role > (int)t ? (enum auth_role)u->role : t;
}

/* A setting: the owner's, else the longest [[rooms]] prefix's, else off. */
static int hub_setting(struct hub *h, struct room *r, int own, int (*pick)(const struct config_room_defaults *))
{
	const struct config_room_defaults *d;

	if (own >= 0)
		return own;
	d = h->cfg ? config_room_defaults_for(h->cfg, r->name) : NULL;
	return d && pick(d) >= 0 ? pick(d) : 0;
}

static int hub_pick_private(const struct config_room_defaults *d) { return d->private_room; }
static int hub_pick_read_only(const struct config_room_defaults *d) { return d->read_only; }

static int hub_private(struct hub *h, struct room *r)
{
	return hub_setting(h, r, r->state ? r->state->private_room : -1, hub_pick_private);
}

static int hub_read_only(struct hub *h, struct room *r)
{
	return hub_setting(h, r, r->state ? r->state->read_only : -1, hub_pick_read_only);
}

uint32_t hub_room_history(struct hub *h, struct room *r)
{
	const struct config_room_defaults *d;
	long v = r->state ? r->state->history : -1;

	if (v < 0 && h->cfg && (d = config_room_defaults_for(h->cfg, r->name)))
		v = d->history;
	/* Never more than the operator's limit: history.messages_per_room
	 * bounds memory per room. */
	return v >= 0 && (uint64_t)v < h->lim.messages_per_room ? (uint32_t)v : h->lim.messages_per_room;
}

int hub_join_check(struct hub *h, struct session *s, struct room *r, const struct proto_str *ref)
{
	struct room_user *u = hub_state_user(r, s->name, 0);
	char msg[160];

	if (u && hub_until_active(u->banned, u->ban_until, hub_now_ms(h)) &&
	    hub_role(h, r, s) < AUTH_ROLE_OWNER) {
		if (u->ban_until)
			snprintf(msg, sizeof(msg), "you are banned from this room until %llu (ms since the epoch)",
				 (unsigned long long)u->ban_until);
		else
			snprintf(msg, sizeof(msg), "you are banned from this room");
		hub_error(h, s, ref, PROTO_ERR_FORBIDDEN, msg);
		return -1;
	}
	if (hub_private(h, r) && !(u && u->invited) && hub_role(h, r, s) < AUTH_ROLE_MODERATOR &&
	    !auth_room_listed(s->ident, r->name, strlen(r->name))) {
		hub_error(h, s, ref, PROTO_ERR_FORBIDDEN, "this room is private: invitation only");
		return -1;
	}
	return 0;
}

int hub_send_check(struct hub *h, struct session *s, struct room *r, const struct proto_str *ref)
{
	struct room_user *u = hub_state_user(r, s->name, 0);

	if (u && hub_until_active(u->muted, u->mute_until, hub_now_ms(h))) {
		hub_error(h, s, ref, PROTO_ERR_FORBIDDEN, "you are muted in this room");
		return -1;
	}
	if (hub_read_only(h, r) && hub_role(h, r, s) < AUTH_ROLE_MODERATOR) {
		hub_error(h, s, ref, PROTO_ERR_FORBIDDEN, "this room is read-only: only moderators send");
		return -1;
	}
	return 0;
}

void hub_room_info(struct hub *h, struct room *r, struct session *s, struct proto_room_info *out)
{
	out->role = auth_role_name(hub_role(h, r, s));
	out->private_room = hub_private(h, r);
	out->read_only = hub_read_only(h, r);
	out->history = hub_room_history(h, r);
	out->topic = r->state ? r->state->topic : NULL;
}

/* settings {room, private?, read_only?, topic?, history?}: owner only. The
 * records are stored, and the change goes out as a moderation event. */
void hub_cmd_settings(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r = hub_member_room(h, s, c, PROTO_ERR_FORBIDDEN);
	char num[24], topic[PROTO_TOPIC_MAX + 1];
	struct proto_mod_event e = { .action = "settings", .by = s->name };
	struct msgbuf *mb;

	if (!r)
		return;
	if (hub_role(h, r, s) < AUTH_ROLE_OWNER) {
		hub_error(h, s, &c->ref, PROTO_ERR_FORBIDDEN, "only an owner of the room changes its settings");
		return;
	}
	e.has_private = c->has_private;
	e.private_room = c->private_room;
	e.has_read_only = c->has_read_only;
	e.read_only = c->read_only;
	e.has_history = c->has_history;
	e.history = c->history;
	e.topic = c->topic;
	if (!(mb = proto_encode_mod_body(&e))) {
		hub_error(h, s, &c->ref, PROTO_ERR_INTERNAL, "out of memory");
		return;
	}
	if (h->engine.state_put) {
		if (c->has_private)
			h->engine.state_put(h->engine.ctx, r->name, "set:private", c->private_room ? "1" : "0");
		if (c->has_read_only)
			h->engine.state_put(h->engine.ctx, r->name, "set:read_only", c->read_only ? "1" : "0");
		if (c->has_history) {
			snprintf(num, sizeof(num), "%llu", (unsigned long long)c->history);
			h->engine.state_put(h->engine.ctx, r->name, "set:history", num);
		}
		if (c->topic.p) {
			hub_copy(topic, &c->topic);
			h->engine.state_put(h->engine.ctx, r->name, "set:topic", topic[0] ? topic : NULL);
		}
	}
	log_info(s->id, "room %s: settings changed by %s", r->name, s->name);
	h->m->moderation_actions++;
	hub_mod_event(h, s, r, c, (const char *)mb->data, mb->len);
	msgbuf_unref(mb);
}
