/*
 * hub.c - the hub's registry and lifecycle: sessions and names, their send
 * queues with the slow-consumer policy, the commands that need no room
 * (hello, members, ping) and the dispatch of every frame.
 */
#include "hub_impl.h"

uint64_t hub_random(struct hub *h)
{
	return rng_next(&h->rng);
}

double hub_now(struct hub *h)
{
	return h->tp.now(h->tp.ctx);
}

struct hub_user *hub_user_find(struct hub *h, const char *name, size_t len)
{
	struct hub_user *u = NULL;

	HASH_FIND(hh, h->users, name, len, u);
	return u;
}

void hub_copy(char *dst, const struct proto_str *src)
{
	memcpy(dst, src->p, src->len);
	dst[src->len] = '\0';
}

static int hub_qb_index(size_t bytes)
{
	return bytes ? 63 - __builtin_clzll((unsigned long long)bytes) : -1;
}

/* Bring the global totals and s's size bucket up to date after s->q changed
 * from (bytes0, count0). Every queue mutation goes through here. */
static void hub_q_account(struct hub *h, struct session *s, size_t bytes0, uint32_t count0)
{
	int idx = hub_qb_index(s->q.bytes);

	h->queue_bytes = h->queue_bytes - bytes0 + s->q.bytes;
	h->queue_msgs = h->queue_msgs - count0 + s->q.count;
	if (idx == s->qb_idx)
		return;
	if (s->qb_idx >= 0)
		DL_DELETE2(h->qb[s->qb_idx], s, qb_prev, qb_next);
	if (idx >= 0)
		DL_PREPEND2(h->qb[idx], s, qb_prev, qb_next);
	s->qb_idx = idx;
}

static void hub_q_clear(struct hub *h, struct session *s)
{
	size_t b = s->q.bytes;
	uint32_t c = s->q.count;

	queue_clear(&s->q);
	hub_q_account(h, s, b, c);
}

/* Drop s's oldest message events down to the given bounds; returns how many. */
static size_t hub_q_drop(struct hub *h, struct session *s, uint32_t max_count, size_t max_bytes)
{
	size_t b = s->q.bytes, n;
	uint32_t c = s->q.count;

	n = queue_drop_oldest(&s->q, max_count, max_bytes);
	hub_q_account(h, s, b, c);
	h->m->slow_consumer_drops += n;
	if (n)
		log_debug(s->id, "slow consumer: dropped %zu queued messages", n);
	return n;
}

/* A session among those with the most bytes queued (within a factor 2). */
static struct session *hub_qb_largest(struct hub *h)
{
	int i;

	for (i = HUB_QB_BUCKETS - 1; i >= 0; i--)
		if (h->qb[i])
			return h->qb[i];
	return NULL;
}

void hub_session_close(struct hub *h, struct session *s, int code, const char *reason,
		       int flush)
{
	if (s->closing)
		return;
	s->closing = 1;
	/* A queue that will not be written: give the memory back now. */
	if (!flush)
		hub_q_clear(h, s);
	h->tp.close(h->tp.ctx, s->conn, code, reason, flush);
}

static void hub_slow_close(struct hub *h, struct session *s, const char *why)
{
	log_warn(s->id, "slow consumer (%s): %u frames, %zu bytes queued; closing",
		 why, s->q.count, s->q.bytes);
	h->m->slow_consumer_closes++;
	hub_session_close(h, s, 1008, "slow consumer", 0);
}

/* Make room for one frame of len bytes in s's own queue; -1 if s was closed. */
static int hub_q_make_space(struct hub *h, struct session *s, size_t len)
{
	const struct hub_limits *l = &h->lim;

	if (s->q.count < l->send_queue_messages && s->q.bytes + len <= l->send_queue_bytes)
		return 0;
	if (l->slow_consumer == CONFIG_SLOW_DROP_OLDEST && len <= l->send_queue_bytes) {
		hub_q_drop(h, s, l->send_queue_messages - 1, l->send_queue_bytes - len);
		if (s->q.count < l->send_queue_messages && s->q.bytes + len <= l->send_queue_bytes)
			return 0;
	}
	hub_slow_close(h, s, "session queue full");
	return -1;
}

/* Keep all queues together under total_queue_bytes by applying the policy
 * to the largest queues first; -1 if that closed s itself. */
static int hub_q_global_space(struct hub *h, struct session *s, size_t len)
{
	uint64_t cap = h->lim.total_queue_bytes;

	while (h->queue_bytes + len > cap) {
		struct session *big = hub_qb_largest(h);
		uint64_t excess = h->queue_bytes + len - cap;

		if (!big) {
			/* Nothing queued anywhere and still too big: refuse s. */
			hub_slow_close(h, s, "frame larger than the global queue cap");
			return -1;
		}
		if (big->closing) {
			/* Cannot happen (closing sessions hold no queue), but a
			 * session that frees nothing must never be picked twice. */
			hub_q_clear(h, big);
			continue;
		}
		if (h->lim.slow_consumer != CONFIG_SLOW_DROP_OLDEST ||
		    !hub_q_drop(h, big, UINT32_MAX, big->q.bytes > excess ? big->q.bytes - excess : 0))
			hub_slow_close(h, big, "global queue cap reached");
		if (s->closing)
			return -1;
	}
	return 0;
}

/*
 * Queue mb (the caller keeps its reference) for s, applying the per-session
 * and global bounds first, so they are never overshot. droppable marks a
 * message event. Returns 0 if queued, -1 if not (s closing or closed).
 */
int hub_enqueue(struct hub *h, struct session *s, struct msgbuf *mb, int droppable)
{
	size_t b, len = mb->len;
	uint32_t c;

	if (s->closing)
		return -1;
	if (hub_q_make_space(h, s, len) || hub_q_global_space(h, s, len))
		return -1;
	b = s->q.bytes;
	c = s->q.count;
	/* Message events are stamped with the loop's time (the start of the
	 * iteration that made them), so their wait is measured when written. */
	if (queue_push_at(&s->q, mb, droppable, droppable ? hub_now(h) : 0)) {
		log_error(s->id, "out of memory queueing a frame; closing");
		hub_session_close(h, s, 1011, "out of memory", 0);
		return -1;
	}
	hub_q_account(h, s, b, c);
	if (c == 0)
		h->tp.wake(h->tp.ctx, s->conn);
	return 0;
}

/* Would a frame of len bytes fit without invoking the policy, keeping
 * reserve frames and bytes free for what must follow? */
int hub_fits(struct hub *h, struct session *s, size_t len, uint32_t reserve_n,
	     size_t reserve_b)
{
	const struct hub_limits *l = &h->lim;

	return s->q.count + 1 + reserve_n <= l->send_queue_messages &&
	       s->q.bytes + len + reserve_b <= l->send_queue_bytes &&
	       h->queue_bytes + len + reserve_b <= l->total_queue_bytes;
}

int hub_session_frames(struct hub *h, struct session *s, struct iovec *iov, int max,
		       size_t max_bytes)
{
	return queue_frames(&s->q, iov, max, max_bytes);
}

void hub_session_consumed(struct hub *h, struct session *s, int n, double now)
{
	size_t b = s->q.bytes;
	uint32_t c = s->q.count;
	double t;
	int i;

	for (i = 0; i < n; i++)
		if ((t = queue_pop(&s->q)) > 0)
			metrics_observe(&h->m->delivery, now - t);
	hub_q_account(h, s, b, c);
	h->m->frames_out += (uint64_t)n;
}

void hub_session_backlog(const struct session *s, uint32_t *frames, size_t *bytes)
{
	*frames = s->q.count;
	*bytes = s->q.bytes;
}

const char *hub_session_id(const struct session *s) { return s->id; }
const char *hub_session_name(const struct session *s) { return s->name; }
int hub_session_authenticated(const struct session *s) { return session_authenticated(s); }
void *hub_session_conn(const struct session *s) { return s->conn; }

/* The name hello asks for: c->name, or the token's subject when auth is
 * on. NULL after answering with an error. */
static const char *hub_hello_name(struct hub *h, struct session *s, const struct proto_cmd *c,
				  size_t *len)
{
	struct auth_identity *id;
	char why[128];

	if (!h->auth) {
		if (!c->name.p) {
			hub_error(h, s, &c->ref, PROTO_ERR_BAD_REQUEST,
				  "token authentication is not enabled; give a name");
			return NULL;
		}
		*len = c->name.len;
		return c->name.p;
	}
	if (!c->token.p) {
		snprintf(why, sizeof(why), "a token is required");
		id = NULL;
	} else {
		id = auth_verify(h->auth, c->token.p, c->token.len, hub_now(h), why, sizeof(why));
	}
	if (!id) {
		hub_error(h, s, &c->ref, PROTO_ERR_NOT_AUTHENTICATED, why);
		log_info(s->id, "hello refused: %s", why);
		if (++s->failed_hellos >= 3)
			hub_session_close(h, s, 1008, "authentication failed", 1);
		return NULL;
	}
	auth_identity_free(s->ident);
	s->ident = id;
	*len = strlen(id->name);
	return id->name;
}

static void hub_cmd_hello(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct hub_user *u;
	const char *name;
	size_t len;
	char msg[96];

	if (session_authenticated(s)) {
		hub_error(h, s, &c->ref, PROTO_ERR_BAD_REQUEST, "hello was already accepted");
		return;
	}
	if (!(name = hub_hello_name(h, s, c, &len)))
		return;
	u = hub_user_find(h, name, len);
	if (u && u->count >= h->lim.sessions_per_name) {
		snprintf(msg, sizeof(msg), "name %.*s is already online", (int)len, name);
		hub_error(h, s, &c->ref, PROTO_ERR_CONFLICT, msg);
		return;
	}
	if (!u) {
		u = calloc(1, sizeof(*u));
		if (!u) {
			hub_error(h, s, &c->ref, PROTO_ERR_INTERNAL, "out of memory");
			return;
		}
		memcpy(u->name, name, len);
		HASH_ADD(hh, h->users, name[0], len, u);
	}
	memcpy(s->name, name, len);
	s->name[len] = '\0';
	s->user = u;
	DL_PREPEND2(u->sessions, s, user_prev, user_next);
	u->count++;
	h->authed++;
	if (u->count == 1 && h->ev.user)
		h->ev.user(h->ev.ctx, s->name, 1);
	if (h->peers.user)
		h->peers.user(h->peers.ctx, s->name, 1);
	log_info(s->id, "hello name=%s", s->name);
	hub_token_track(h, s);

	hub_reply(h, s, proto_encode_welcome(s->id, s->name, h->lim.heartbeat_interval, h->node_id,
					      s->ident ? s->ident->exp : 0, &c->ref));
}

static void hub_cmd_members(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r = hub_member_room(h, s, c, PROTO_ERR_FORBIDDEN);
	struct jsonw w;

	if (!r)
		return;
	proto_w_members(&w, r->name, r->member_count);
	hub_names(h, &w, r);
	hub_reply(h, s, proto_encode_members_end(&w, &c->ref));
}

static void hub_cmd_ping(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	hub_reply(h, s, proto_encode_pong(&c->ref));
}

void hub_session_input(struct hub *h, struct session *s, const char *data, size_t len)
{
	struct proto_error err;
	struct proto_cmd c;
	int rc;

	if (s->closing)
		return;
	h->m->frames_in++;
	rc = proto_decode(data, len, h->lim.max_message_bytes, &c, &err);
	if (!session_take_token(s, hub_now(h), h->lim.rate, h->lim.burst)) {
		h->m->rate_limited++;
		hub_error(h, s, &c.ref, PROTO_ERR_RATE_LIMITED, "too many commands; slow down");
		goto out;
	}
	if (rc) {
		hub_error(h, s, &c.ref, err.code, err.message);
		goto out;
	}
	if (!session_authenticated(s) && c.type != PROTO_HELLO) {
		hub_error(h, s, &c.ref, PROTO_ERR_NOT_AUTHENTICATED, "say hello first");
		goto out;
	}
	switch (c.type) {
	case PROTO_HELLO: hub_cmd_hello(h, s, &c); break;
	case PROTO_JOIN: hub_cmd_join(h, s, &c); break;
	case PROTO_LEAVE: hub_cmd_leave(h, s, &c); break;
	case PROTO_SEND: hub_cmd_send(h, s, &c); break;
	case PROTO_DM: hub_cmd_dm(h, s, &c); break;
	case PROTO_HISTORY: hub_cmd_history(h, s, &c); break;
	case PROTO_MEMBERS: hub_cmd_members(h, s, &c); break;
	case PROTO_PING: hub_cmd_ping(h, s, &c); break;
	case PROTO_EDIT: hub_cmd_edit(h, s, &c); break;
	case PROTO_DELETE: hub_cmd_delete(h, s, &c); break;
	case PROTO_REACT: hub_cmd_react(h, s, &c); break;
	case PROTO_TYPING: hub_cmd_typing(h, s, &c); break;
	case PROTO_READ: hub_cmd_read(h, s, &c); break;
	case PROTO_CONVERSATIONS: hub_cmd_conversations(h, s, &c); break;
	case PROTO_REFRESH: hub_cmd_refresh(h, s, &c); break;
	case PROTO_SETTINGS: hub_cmd_settings(h, s, &c); break;
	case PROTO_KICK: case PROTO_BAN: case PROTO_UNBAN: case PROTO_MUTE: case PROTO_UNMUTE:
	case PROTO_INVITE: case PROTO_GRANT:
		hub_cmd_mod(h, s, &c);
		break;
	}
out:
	proto_cmd_free(&c);
}

struct session *hub_session_register(struct hub *h, void *conn)
{
	struct session *s = session_new(++h->next_num, h->salt, hub_now(h), h->lim.burst);

	if (!s)
		return NULL;
	s->conn = conn;
	HASH_ADD(hh, h->sessions, num, sizeof(s->num), s);
	return s;
}

void hub_session_unregister(struct hub *h, struct session *s)
{
	struct membership *m, *tmp;
	struct hub_user *u = s->user;

	/* Leave first so that the others see presence leave; s is closing so
	 * nothing is queued to it meanwhile. */
	s->closing = 1;
	hub_token_untrack(h, s);
	log_info(s->id, "session ended%s%s", u ? " name=" : "", u ? s->name : "");
	/* Empty the queue before the presence fan-out below: that fan-out may
	 * hit the global cap, which must not find s among the largest queues. */
	hub_q_clear(h, s);
	for (m = s->rooms; m; m = tmp) {
		tmp = m->sess_next;
		hub_member_leave(h, m);
	}
	if (u) {
		DL_DELETE2(u->sessions, s, user_prev, user_next);
		if (h->peers.user)
			h->peers.user(h->peers.ctx, s->name, 0);
		if (--u->count == 0) {
			if (h->ev.user)
				h->ev.user(h->ev.ctx, s->name, 0);
			HASH_DEL(h->users, u);
			free(u);
		}
		h->authed--;
	}
	hub_q_clear(h, s);
	HASH_DEL(h->sessions, s);
	session_free(s);
}

void hub_limits_from_config(struct hub_limits *l, const struct config *cfg)
{
	l->max_message_bytes = (size_t)cfg->max_message_bytes;
	l->send_queue_messages = (uint32_t)cfg->send_queue_messages;
	l->send_queue_bytes = (size_t)cfg->send_queue_bytes;
	l->total_queue_bytes = (uint64_t)cfg->total_queue_bytes;
	l->slow_consumer = cfg->slow_consumer;
	l->rate = cfg->rate;
	l->burst = cfg->burst;
	l->sessions_per_name = (uint32_t)cfg->sessions_per_name;
	l->max_rooms = (uint32_t)cfg->max_rooms;
	l->messages_per_room = (uint32_t)cfg->messages_per_room;
	l->dedup_window = (uint32_t)cfg->dedup_window;
	l->heartbeat_interval = cfg->heartbeat_interval;
	l->edit_window = cfg->edit_window;
	l->max_edits = (uint32_t)cfg->max_edits;
	l->max_reactions = (uint32_t)cfg->max_reactions;
	l->typing_interval = cfg->typing_interval;
	l->typing_ttl = cfg->typing_ttl;
	l->read_receipts = cfg->read_receipts;
}

struct hub *hub_new(const struct config *cfg, const struct hub_transport *tp,
		    struct metrics *metrics)
{
	struct hub *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	hub_limits_from_config(&h->lim, cfg);
	snprintf(h->node_id, sizeof(h->node_id), "%s", cfg->node_id);
	h->cfg = cfg;
	h->tp = *tp;
	h->m = metrics;
	rng_seed(&h->rng);
	h->salt = hub_random(h);
	return h;
}

void hub_set_engine(struct hub *h, const struct hub_engine *engine)
{
	if (engine)
		h->engine = *engine;
	else
		memset(&h->engine, 0, sizeof(h->engine));
}

void hub_set_peers(struct hub *h, const struct hub_peers *peers)
{
	if (peers)
		h->peers = *peers;
	else
		memset(&h->peers, 0, sizeof(h->peers));
}

void hub_set_draining(struct hub *h)
{
	h->draining = 1;
}

void hub_set_auth(struct hub *h, const struct auth *auth)
{
	int changed = h->auth && auth && h->auth != auth;

	h->auth = auth;
	/* A reload: the sessions verified with a key that is gone must
	 * refresh (hub_token.c), checked a slice at a time. */
	if (changed)
		hub_token_rotated(h);
}

void hub_reconfigure(struct hub *h, const struct config *cfg)
{
	h->cfg = cfg;
	hub_limits_from_config(&h->lim, cfg);
	hub_rooms_trim(h, h->lim.max_rooms);
}

void hub_free(struct hub *h)
{
	struct session *s, *stmp;
	struct room *r, *rtmp;

	if (!h)
		return;
	HASH_ITER(hh, h->sessions, s, stmp)
		hub_session_unregister(h, s);
	HASH_ITER(hh, h->rooms, r, rtmp) {
		struct hub_waiter *wt = r->waiters, *next;
		hub_idle_unlink(h, r);
		for (; wt; wt = next) {
			next = wt->next;
			free(wt);
		}
		hub_retry_free_all(r);
		HASH_DEL(h->rooms, r);
		room_free(r);
	}
	hub_markers_free(h);
	hub_convs_free(h);
	hub_conv_asks_free(h);
	hub_token_free(h);
	free(h);
	queue_pool_drain();
}

uint64_t hub_named_session_count(const struct hub *h) { return h->authed; }

uint64_t hub_queue_bytes(const struct hub *h) { return h->queue_bytes; }

uint64_t hub_queue_messages(const struct hub *h) { return h->queue_msgs; }

const struct hub_limits *hub_limits(const struct hub *h) { return &h->lim; }
