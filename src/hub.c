/*
 * hub.c - registry of sessions, names and rooms; command dispatch; bounded
 * fan-out with the slow-consumer policy.
 */
#include "hub.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "jsonw.h"
#include "log.h"
#include "proto.h"
#include "rng.h"
#include "room.h"

#include <utlist.h>

/* Sessions that share a name (limits.sessions_per_name). */
struct hub_user {
	char name[PROTO_NAME_MAX + 1];
	struct session *sessions;
	uint32_t count;
	uint64_t mark;               /* de-duplicates names in member lists */
	UT_hash_handle hh;
};

/* Sessions bucketed by floor(log2(queued bytes)), to find the largest
 * queues in O(1) when the global cap is reached. */
#define HUB_QB_BUCKETS 64

struct hub {
	struct hub_limits lim;
	char node_id[65];
	struct hub_transport tp;
	struct hub_engine engine;
	struct hub_peers peers;      /* all NULL: no other nodes */
	const struct auth *auth;     /* NULL: names are taken on trust */
	struct metrics *m;
	struct session *sessions;    /* every registered session, by num */
	struct hub_user *users;      /* authenticated names */
	struct room *rooms;
	struct room *idle;           /* rooms not in use, least recently used first */
	uint64_t next_num, salt, rng, mark;
	uint64_t authed;
	int draining;
	int in_submit;               /* inside engine.submit: completing now breaks the contract */
	uint64_t queue_bytes, queue_msgs;
	struct session *qb[HUB_QB_BUCKETS];
};

/* ---- small helpers ------------------------------------------------------ */

static uint64_t hub_random(struct hub *h)
{
	return rng_next(&h->rng);
}

static double hub_now(struct hub *h)
{
	return h->tp.now(h->tp.ctx);
}

static struct room *hub_room_find(struct hub *h, const char *name, size_t len)
{
	struct room *r = NULL;

	HASH_FIND(hh, h->rooms, name, len, r);
	return r;
}

static struct hub_user *hub_user_find(struct hub *h, const char *name, size_t len)
{
	struct hub_user *u = NULL;

	HASH_FIND(hh, h->users, name, len, u);
	return u;
}

static void hub_copy(char *dst, const struct proto_str *src)
{
	memcpy(dst, src->p, src->len);
	dst[src->len] = '\0';
}

/* ---- queue accounting --------------------------------------------------- */

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

/* ---- output ------------------------------------------------------------- */

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
static int hub_enqueue(struct hub *h, struct session *s, struct msgbuf *mb, int droppable)
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
static int hub_fits(struct hub *h, struct session *s, size_t len, uint32_t reserve_n,
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

/* ---- encoding ----------------------------------------------------------- */

static void hub_w_begin(struct jsonw *w, const char *type, size_t hint)
{
	jsonw_init(w, hint);
	jsonw_obj_open(w);
	jsonw_kv_cstr(w, "type", type);
}

static void hub_w_ref(struct jsonw *w, const struct proto_str *ref)
{
	if (ref->p)
		jsonw_kv_str(w, "ref", ref->p, ref->len);
}

/* Finish w and queue it to s as a reply (never dropped by drop_oldest). */
static void hub_w_reply(struct hub *h, struct session *s, struct jsonw *w)
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

static void hub_error(struct hub *h, struct session *s, const struct proto_str *ref,
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

/* Send a finished frame to every member of r but except (NULL for all). */
static void hub_room_broadcast(struct hub *h, struct room *r, struct msgbuf *mb,
			       struct session *except, int droppable)
{
	struct membership *m, *tmp;

	HASH_ITER(hh_room, r->members, m, tmp) {
		if (m->sess == except)
			continue;
		if (hub_enqueue(h, m->sess, mb, droppable) == 0 && droppable)
			h->m->messages_out++;
	}
}

/* The presence event, for a local or a remote member; NULL on ENOMEM. */
static struct msgbuf *hub_encode_presence(const char *room, const char *name, int join)
{
	struct jsonw w;

	hub_w_begin(&w, "presence", 128);
	jsonw_kv_cstr(&w, "room", room);
	jsonw_kv_cstr(&w, "name", name);
	jsonw_kv_cstr(&w, "state", join ? "join" : "leave");
	jsonw_obj_close(&w);
	return jsonw_finish(&w);
}

static void hub_presence(struct hub *h, struct room *r, struct session *s, int join)
{
	struct msgbuf *mb;

	if (h->draining || !r->member_count || (r->member_count == 1 && room_member_find(r, s)))
		return;
	if (!(mb = hub_encode_presence(r->name, s->name, join)))
		return;
	hub_room_broadcast(h, r, mb, s, 0);
	msgbuf_unref(mb);
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
static void hub_w_names(struct hub *h, struct jsonw *w, struct room *r)
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

/* ---- rooms -------------------------------------------------------------- */

/* ---- room memory: at most limits.max_rooms, idle ones evicted LRU ------ */

/* In use: a member, a message or a join on its way, or a load. */
static int hub_room_busy(const struct room *r)
{
	return r->member_count || r->pending || r->loading || r->waiters || r->inflight;
}

static void hub_idle_unlink(struct hub *h, struct room *r)
{
	if (!r->idle)
		return;
	DL_DELETE2(h->idle, r, idle_prev, idle_next);
	r->idle = 0;
	r->idle_prev = r->idle_next = NULL;
	h->m->rooms_idle--;
}

/* Drop idle rooms, least recently used first, until at most max are held.
 * With an engine, an evicted room is loaded again on its next use; in
 * memory only, its history is gone (a new epoch tells resuming clients). */
static void hub_rooms_trim(struct hub *h, uint64_t max)
{
	while (HASH_COUNT(h->rooms) > max && h->idle) {
		struct room *r = h->idle;

		log_debug(NULL, "room %s evicted from memory (seq %llu)", r->name,
			  (unsigned long long)r->seq);
		hub_idle_unlink(h, r);
		HASH_DEL(h->rooms, r);
		room_free(r);
		h->m->rooms_evicted++;
	}
}

/* r may have become idle. A room that never carried a message is forgotten
 * at once; one with history waits on the idle list, so that seq and epoch
 * stay meaningful while memory allows. */
static void hub_room_release(struct hub *h, struct room *r)
{
	if (hub_room_busy(r) || r->idle)
		return;
	if (!r->seq) {
		HASH_DEL(h->rooms, r);
		room_free(r);
		return;
	}
	DL_APPEND2(h->idle, r, idle_prev, idle_next);
	r->idle = 1;
	h->m->rooms_idle++;
	hub_rooms_trim(h, h->lim.max_rooms);
}

/* The room named name, held or loaded now (and no longer idle), or NULL
 * with *why saying why: the engine could not load it, or max_rooms rooms
 * are held and all in use. */
static struct room *hub_room_get(struct hub *h, const char *name, size_t len, const char **why)
{
	struct room *r = hub_room_find(h, name, len);
	char epoch[17];

	*why = "the room could not be loaded";
	if (r) {
		hub_idle_unlink(h, r);
		return r;
	}
	hub_rooms_trim(h, h->lim.max_rooms - 1);
	if (HASH_COUNT(h->rooms) >= h->lim.max_rooms) {
		h->m->rooms_refused++;
		*why = "this server holds as many rooms as limits.max_rooms allows, all in use; try later";
		return NULL;
	}
	/* A new epoch whenever a room's seq history starts from nothing, so
	 * that a (seq, epoch) pair never names two different messages. An
	 * engine with storage replaces it with the stored one. */
	snprintf(epoch, sizeof(epoch), "%016llx", (unsigned long long)hub_random(h));
	r = room_new(name, len, epoch);
	if (!r)
		return NULL;
	HASH_ADD(hh, h->rooms, name[0], len, r);
	if (h->engine.room_load) {
		int rc;

		/* Loading while the engine hands over its state, now or later. */
		r->loading = 1;
		rc = h->engine.room_load(h->engine.ctx, h, r->name);
		if (rc < 0) {
			HASH_DEL(h->rooms, r);
			room_free(r);
			return NULL;
		}
		r->loading = rc > 0;
	}
	r->seq_assigned = r->seq;
	log_debug(NULL, "room %s opened, epoch %s, seq %llu", r->name, r->epoch,
		  (unsigned long long)r->seq);
	return r;
}

static void hub_member_leave(struct hub *h, struct membership *m)
{
	struct room *r = m->room;
	struct session *s = m->sess;

	room_member_remove(m);
	hub_presence(h, r, s, 0);
	if (h->peers.presence && session_authenticated(s))
		h->peers.presence(h->peers.ctx, r->name, s->name, 0);
	hub_room_release(h, r);
}

/* ---- commands ----------------------------------------------------------- */

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
	struct jsonw w;
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
	if (h->peers.user)
		h->peers.user(h->peers.ctx, s->name, 1);
	log_info(s->id, "hello name=%s", s->name);

	hub_w_begin(&w, "welcome", 160);
	jsonw_kv_cstr(&w, "session", s->id);
	jsonw_kv_cstr(&w, "name", s->name);
	jsonw_key(&w, "heartbeat");
	jsonw_num(&w, h->lim.heartbeat_interval);
	jsonw_kv_cstr(&w, "node", h->node_id);
	hub_w_ref(&w, &c->ref);
	hub_w_reply(h, s, &w);
}

/* Encode a stored message as the "message" event every member receives. */
static struct msgbuf *hub_encode_message(const char *room, const struct hub_msg *m)
{
	struct jsonw w;

	hub_w_begin(&w, "message", 160 + m->body_len + m->body_len / 8);
	jsonw_kv_cstr(&w, "room", room);
	jsonw_kv_u64(&w, "seq", m->seq);
	jsonw_kv_cstr(&w, "from", m->from);
	jsonw_kv_cstr(&w, "id", m->id);
	jsonw_kv_str(&w, "body", m->body, m->body_len);
	jsonw_kv_u64(&w, "ts", m->ts);
	jsonw_obj_close(&w);
	return jsonw_finish(&w);
}

/* The room of that name if it is loading, else NULL. */
static struct room *hub_loading_room(struct hub *h, const char *room)
{
	struct room *r = hub_room_find(h, room, strlen(room));

	return r && r->loading ? r : NULL;
}

void hub_load_state(struct hub *h, const char *room, const char *epoch, uint64_t seq)
{
	struct room *r = hub_loading_room(h, room);

	if (!r)
		return;
	if (epoch && epoch[0] && strlen(epoch) < sizeof(r->epoch))
		strcpy(r->epoch, epoch);
	r->seq = r->seq_assigned = seq;
}

int hub_load_message(struct hub *h, const char *room, const struct hub_msg *m)
{
	struct room *r = hub_loading_room(h, room);
	struct msgbuf *mb;
	int rc;

	if (!r || !m->seq || m->seq > r->seq)
		return 0;           /* nothing past the room's seq exists */
	if (!(mb = hub_encode_message(r->name, m)))
		return -1;
	rc = room_append(r, m->seq, mb, m->from, strlen(m->from), m->id, strlen(m->id),
			 h->lim.messages_per_room, h->lim.dedup_window);
	msgbuf_unref(mb);
	return rc;
}

/*
 * The one path of an accepted message, whatever the engine: the hub makes
 * its frame (hub_encode_message), records it in the room (hub_room_record:
 * seq, ring, dedup), answers the sender if the engine asks it to (hub_ack),
 * and hands the same frame to every member (hub_room_fanout). Memory only:
 * hub_cmd_send -> hub_commit at once; storage: hub_cmd_send -> engine
 * submit -> hub_commit at its group commit; cluster: hub_cmd_send ->
 * engine submit -> Redis -> hub_send_done (the sender's ack) and, on every
 * node, hub_apply from the stream (the fan-out).
 */
static void hub_room_record(struct hub *h, struct room *r, const struct hub_msg *m,
			    struct msgbuf *mb)
{
	r->seq = m->seq;
	if (r->seq_assigned < r->seq)
		r->seq_assigned = r->seq;
	if (room_append(r, m->seq, mb, m->from, strlen(m->from), m->id, strlen(m->id),
			h->lim.messages_per_room, h->lim.dedup_window) || !mb)
		log_error(NULL, "out of memory keeping message %s/%llu in memory%s", r->name,
			  (unsigned long long)m->seq, mb ? "" : "; its members miss it");
}

static void hub_room_fanout(struct hub *h, struct room *r, struct msgbuf *mb)
{
	if (mb)
		hub_room_broadcast(h, r, mb, NULL, 1);
}

/* The lowest seq of r still held in memory or by the engine. */
static uint64_t hub_oldest_held(struct hub *h, struct room *r)
{
	uint64_t oldest = room_oldest_seq(r), stored;

	if (h->engine.oldest && (stored = h->engine.oldest(h->engine.ctx, r->name)) && stored < oldest)
		oldest = stored;
	return oldest;
}

static void hub_frames_unref(struct msgbuf **v, uint32_t n)
{
	while (n)
		msgbuf_unref(v[--n]);
}

struct hub_collect {
	struct room *room;
	struct msgbuf **v;
	uint32_t n, max;
	int failed;                  /* a message could not be encoded */
};

static void hub_collect_emit(void *arg, const struct hub_msg *m)
{
	struct hub_collect *hc = arg;
	struct msgbuf *mb;

	if (hc->n >= hc->max)
		return;
	if (!(mb = hub_encode_message(hc->room->name, m))) {
		hc->failed = 1;
		return;
	}
	hc->v[hc->n++] = mb;
}

/* Frames of r's messages lo..hi (seq order, at most max) from the ring,
 * and from the engine for what the ring no longer holds. Each frame in
 * v[] carries a reference for the caller. Returns how many, or -1 (and no
 * references) when the engine could not read what it holds: an answer
 * with messages silently missing would look complete. */
static int hub_collect(struct hub *h, struct room *r, uint64_t lo, uint64_t hi,
		       struct msgbuf **v, uint32_t max)
{
	struct hub_collect hc = { r, v, 0, max, 0 };
	uint64_t ring_lo = room_oldest_seq(r), seq;

	if (lo < ring_lo && h->engine.read && lo <= hi &&
	    (h->engine.read(h->engine.ctx, r->name, lo, hi < ring_lo ? hi : ring_lo - 1, max,
			    hub_collect_emit, &hc) < 0 || hc.failed)) {
		hub_frames_unref(v, hc.n);
		return -1;
	}
	for (seq = lo > ring_lo ? lo : ring_lo; seq <= hi && hc.n < max; seq++) {
		struct msgbuf *mb = room_frame(r, seq);
		if (mb)
			v[hc.n++] = msgbuf_ref(mb);
	}
	return (int)hc.n;
}

/* Replay r's messages after since to s, oldest first, as far as s's queue
 * takes them without tripping the slow-consumer policy. Returns 1 if all
 * were queued, 0 if it stopped early, -1 (nothing queued) if they could not
 * be read. */
static int hub_replay(struct hub *h, struct session *s, struct room *r, uint64_t since)
{
	uint32_t max = h->lim.send_queue_messages, n, i, queued = 0;
	struct msgbuf **v;
	int got;

	if (since >= r->seq)
		return 1;
	if (max > PROTO_HISTORY_MAX * 2)
		max = PROTO_HISTORY_MAX * 2;
	v = malloc(sizeof(*v) * max);
	if (!v)
		return -1;
	if ((got = hub_collect(h, r, since + 1, r->seq, v, max)) < 0) {
		free(v);
		return -1;
	}
	n = (uint32_t)got;
	/* Keep one frame and some bytes free for the joined reply. */
	for (i = 0; i < n && hub_fits(h, s, v[i]->len, 1, 4096); i++)
		if (hub_enqueue(h, s, v[i], 1) == 0)
			queued++;
	hub_frames_unref(v, n);
	free(v);
	return queued == n && (n < max || since + n >= r->seq);
}

/* A join parked while its room loads (cluster). */
struct hub_waiter {
	struct hub_waiter *next;
	uint64_t sender;
	int has_since, has_epoch, has_ref;
	uint64_t since;
	char epoch[PROTO_EPOCH_MAX + 1];
	char ref[PROTO_REF_MAX + 1];
};

/* Join s to the loaded room r and answer, replaying since when asked.
 * Never frees r: on failure (answered with an error, -1) the caller lets
 * go of r with hub_room_release once it no longer uses it. */
static int hub_join(struct hub *h, struct session *s, struct room *r, int has_since,
		    uint64_t since, const char *epoch, const struct proto_str *ref)
{
	int recovered = 0, complete = 1;
	struct jsonw w;

	if (has_since && (!epoch || strcmp(epoch, r->epoch) == 0) && since <= r->seq) {
		recovered = hub_oldest_held(h, r) <= since + 1;
		complete = hub_replay(h, s, r, since);
		if (complete < 0) {
			hub_error(h, s, ref, PROTO_ERR_UNAVAILABLE,
				  "the room's history could not be read; join again");
			return -1;
		}
	}
	if (!room_member_find(r, s)) {
		if (!room_member_add(r, s)) {
			hub_error(h, s, ref, PROTO_ERR_INTERNAL, "out of memory");
			return -1;
		}
		log_debug(s->id, "joined %s", r->name);
		hub_presence(h, r, s, 1);
		if (h->peers.presence)
			h->peers.presence(h->peers.ctx, r->name, s->name, 1);
	}
	hub_w_begin(&w, "joined", 256 + 40 * r->member_count);
	jsonw_kv_cstr(&w, "room", r->name);
	jsonw_kv_u64(&w, "seq", r->seq);
	jsonw_kv_cstr(&w, "epoch", r->epoch);
	jsonw_key(&w, "members");
	hub_w_names(h, &w, r);
	if (has_since) {
		jsonw_key(&w, "recovered");
		jsonw_bool(&w, recovered);
		if (!complete) {
			jsonw_key(&w, "truncated");
			jsonw_bool(&w, 1);
		}
	}
	hub_w_ref(&w, ref);
	hub_w_reply(h, s, &w);
	return 0;
}

static void hub_park_join(struct hub *h, struct session *s, struct room *r, const struct proto_cmd *c)
{
	struct hub_waiter *wt = calloc(1, sizeof(*wt));

	if (!wt) {
		hub_error(h, s, &c->ref, PROTO_ERR_INTERNAL, "out of memory");
		return;
	}
	wt->sender = s->num;
	wt->has_since = c->has_since;
	wt->since = c->since;
	if (c->epoch.p) {
		wt->has_epoch = 1;
		hub_copy(wt->epoch, &c->epoch);
	}
	if (c->ref.p) {
		wt->has_ref = 1;
		hub_copy(wt->ref, &c->ref);
	}
	LL_APPEND(r->waiters, wt);
}

void hub_room_loaded(struct hub *h, const char *room, int ok)
{
	struct room *r = hub_loading_room(h, room);
	struct hub_waiter *wt, *next;

	if (!r)
		return;
	wt = r->waiters;
	r->loading = 0;
	if (!ok) {
		/* What a failed load handed over is not the room's state. */
		room_reset(r);
		r->seq = 0;
	}
	r->waiters = NULL;
	r->seq_assigned = r->seq;
	/* Parked joins, answered in the order they came. */
	for (; wt; wt = next) {
		struct session *s = NULL;
		struct proto_str ref = { wt->has_ref ? wt->ref : NULL, strlen(wt->ref) };
		next = wt->next;
		HASH_FIND(hh, h->sessions, &wt->sender, sizeof(wt->sender), s);
		if (s && !s->closing) {
			if (ok)
				hub_join(h, s, r, wt->has_since, wt->since, wt->has_epoch ? wt->epoch : NULL, &ref);
			else
				hub_error(h, s, &ref, PROTO_ERR_UNAVAILABLE, "the room could not be loaded");
		}
		free(wt);
	}
	hub_room_release(h, r);
}

static void hub_cmd_join(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r;
	const char *why;
	char epoch[PROTO_EPOCH_MAX + 1];

	if (!auth_room_allowed(s->ident, c->room.p, c->room.len)) {
		hub_error(h, s, &c->ref, PROTO_ERR_FORBIDDEN, "your token does not allow this room");
		return;
	}
	r = hub_room_get(h, c->room.p, c->room.len, &why);
	if (!r) {
		hub_error(h, s, &c->ref, PROTO_ERR_UNAVAILABLE, why);
		return;
	}
	if (r->loading) {
		hub_park_join(h, s, r, c);
		return;
	}
	if (c->epoch.p)
		hub_copy(epoch, &c->epoch);
	if (hub_join(h, s, r, c->has_since, c->since, c->epoch.p ? epoch : NULL, &c->ref))
		hub_room_release(h, r);
}

/* The room named in c if s is a member of it, else NULL (error sent). */
static struct room *hub_member_room(struct hub *h, struct session *s,
				    const struct proto_cmd *c, enum proto_err code)
{
	struct room *r = hub_room_find(h, c->room.p, c->room.len);

	if (r && room_member_find(r, s))
		return r;
	hub_error(h, s, &c->ref, code, "not a member of this room; join it first");
	return NULL;
}

static void hub_cmd_leave(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r = hub_member_room(h, s, c, PROTO_ERR_NOT_FOUND);
	struct jsonw w;

	if (!r)
		return;
	hub_w_begin(&w, "left", 128);
	jsonw_kv_cstr(&w, "room", r->name);
	hub_w_ref(&w, &c->ref);
	hub_member_leave(h, room_member_find(r, s));   /* may free r */
	hub_w_reply(h, s, &w);
}

static void hub_ack(struct hub *h, struct session *s, const char *id, const char *room,
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

static void hub_mem_submit(struct hub *h, struct hub_pending *p)
{
	hub_commit(h, p, PROTO_OK);
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
static struct hub_pending *hub_pending_from(struct hub *h, struct session *s,
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

/*
 * A retry of a message whose commit is still pending (storage batch mode):
 * it must get the same ack once the first one commits, not a second seq.
 * Such retries wait here, per room, keyed by the pending message's seq.
 */
struct hub_retry {
	struct hub_retry *next;
	uint64_t seq;                       /* the pending original's seq */
	uint64_t sender;
	char from[PROTO_NAME_MAX + 1];
	char id[PROTO_ID_MAX + 1];
	char ref[PROTO_REF_MAX + 1];
	int has_ref;
	int original;                       /* the entry of the pending message itself */
};

static struct hub_retry *hub_retry_find(struct room *r, const char *from, const struct proto_str *id)
{
	struct hub_retry *t;

	for (t = r->inflight; t; t = t->next)
		if (t->original && !strcmp(t->from, from) && strlen(t->id) == id->len &&
		    !memcmp(t->id, id->p, id->len))
			return t;
	return NULL;
}

static void hub_retry_add(struct room *r, uint64_t seq, uint64_t sender, const char *from,
			  const char *id, const struct proto_str *ref, int original)
{
	struct hub_retry *t = calloc(1, sizeof(*t));

	if (!t)
		return;            /* a retry then gets its own seq: no worse than before */
	t->seq = seq;
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

static void hub_ack(struct hub *h, struct session *s, const char *id, const char *room,
		    uint64_t seq, const char *ref);

/* The pending message seq of r completed: answer the retries waiting on it. */
static void hub_retry_done(struct hub *h, struct room *r, uint64_t seq, enum proto_err status)
{
	struct hub_retry *t, *tmp;

	LL_FOREACH_SAFE(r->inflight, t, tmp) {
		struct session *s = NULL;
		if (t->seq != seq)
			continue;
		LL_DELETE(r->inflight, t);
		HASH_FIND(hh, h->sessions, &t->sender, sizeof(t->sender), s);
		if (!t->original && s && !s->closing) {
			struct proto_str ref = { t->has_ref ? t->ref : NULL, strlen(t->ref) };
			if (status == PROTO_OK)
				hub_ack(h, s, t->id, r->name, seq, t->has_ref ? t->ref : NULL);
			else
				hub_error(h, s, &ref, status, "the message was not stored");
		}
		free(t);
	}
}

static void hub_retry_free_all(struct room *r)
{
	struct hub_retry *t = r->inflight, *next;

	for (; t; t = next) {
		next = t->next;
		free(t);
	}
	r->inflight = NULL;
}

static void hub_cmd_send(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r = hub_member_room(h, s, c, PROTO_ERR_FORBIDDEN);
	struct hub_pending *p;
	uint64_t seq;
	char id[PROTO_ID_MAX + 1], ref[PROTO_REF_MAX + 1];

	if (!r)
		return;
	seq = room_dedup_find(r, s->name, strlen(s->name), c->id.p, c->id.len);
	if (!seq && r->inflight) {
		struct hub_retry *orig = hub_retry_find(r, s->name, &c->id);
		if (orig) {
			hub_copy(id, &c->id);
			hub_retry_add(r, orig->seq, s->num, s->name, id, &c->ref, 0);
			return;
		}
	}
	if (seq) {
		/* A retry of a message already accepted: same ack, no broadcast. */
		hub_copy(id, &c->id);
		if (c->ref.p)
			hub_copy(ref, &c->ref);
		hub_ack(h, s, id, r->name, seq, c->ref.p ? ref : NULL);
		return;
	}
	if (!(p = hub_pending_from(h, s, c)))
		return;
	strcpy(p->room, r->name);
	strcpy(p->epoch, r->epoch);
	/* seq is handed out here, in arrival order; the engine may commit
	 * later, but commits come back in this order. A cluster engine
	 * hands out seqs itself. */
	if (!h->engine.sequences)
		p->seq = ++r->seq_assigned;
	r->pending++;
	/* A local engine may commit later: remember it so that a retry in
	 * between waits for this commit (a cluster engine dedups in Redis). */
	if (h->engine.submit && !h->engine.sequences)
		hub_retry_add(r, p->seq, p->sender, p->from, p->id, NULL, 1);
	if (h->engine.submit) {
		h->in_submit = 1;
		h->engine.submit(h->engine.ctx, h, p);
		h->in_submit = 0;
	} else {
		hub_mem_submit(h, p);
	}
}

/* The engine contract: a submitted message completes later, never inside
 * submit (the hub is in the middle of a command then). */
static void hub_check_not_in_submit(struct hub *h, const struct hub_pending *p)
{
	if (h->in_submit)
		log_error(NULL, "engine contract broken: message %s/%llu completed inside submit",
			  p->room, (unsigned long long)p->seq);
}

void hub_commit(struct hub *h, struct hub_pending *p, enum proto_err status)
{
	struct session *sender = NULL;
	struct proto_str ref = { p->has_ref ? p->ref : NULL, strlen(p->ref) };
	struct hub_msg m = { p->seq, p->ts, p->from, p->id, p->body, p->body_len };
	struct msgbuf *mb = NULL;
	struct room *r;
	const char *why;
	uint64_t num = p->sender;

	hub_check_not_in_submit(h, p);
	HASH_FIND(hh, h->sessions, &num, sizeof(num), sender);
	if (sender && sender->closing)
		sender = NULL;
	r = hub_room_get(h, p->room, strlen(p->room), &why);
	if (r && r->pending)
		r->pending--;
	/* The frame first, before anything moves: in memory only, a message
	 * that cannot be kept was never accepted (its seq goes back, no gap). */
	if (r && status == PROTO_OK && !(mb = hub_encode_message(r->name, &m)) && !h->engine.submit)
		status = PROTO_ERR_INTERNAL;
	if (r && r->inflight)
		hub_retry_done(h, r, p->seq, status != PROTO_OK || !r ? PROTO_ERR_UNAVAILABLE : PROTO_OK);
	if (status != PROTO_OK || !r) {
		/* Nothing was stored: the seq goes back, so seq stays gap-free
		 * (the engine fails every later pending message of the room). */
		if (r && !r->pending)
			r->seq_assigned = r->seq;
		if (sender)
			hub_error(h, sender, &ref, r ? status : PROTO_ERR_INTERNAL,
				  status == PROTO_ERR_UNAVAILABLE ? "storage unavailable; the message was not stored"
				  : status == PROTO_ERR_INTERNAL ? "out of memory; the message was not accepted"
								  : "the message could not be accepted");
		if (r)
			hub_room_release(h, r);
		return;
	}
	/* Stored: seq moves on, and the (from, id) pair is remembered even
	 * without a frame, so that a retry gets this ack, never a second seq.
	 * Members who got no frame see a gap in seq and page history. */
	hub_room_record(h, r, &m, mb);
	h->m->messages_in++;
	if (sender)
		hub_ack(h, sender, p->id, r->name, p->seq, p->has_ref ? p->ref : NULL);
	hub_room_fanout(h, r, mb);
	msgbuf_unref(mb);
	hub_room_release(h, r);     /* its members may all have left meanwhile */
}

static struct session *hub_sender(struct hub *h, uint64_t num)
{
	struct session *s = NULL;

	HASH_FIND(hh, h->sessions, &num, sizeof(num), s);
	return s && !s->closing ? s : NULL;
}

void hub_send_done(struct hub *h, struct hub_pending *p, enum proto_err status)
{
	struct session *sender = hub_sender(h, p->sender);
	struct proto_str ref = { p->has_ref ? p->ref : NULL, strlen(p->ref) };
	struct room *r = hub_room_find(h, p->room, strlen(p->room));

	hub_check_not_in_submit(h, p);
	if (r && r->pending) {
		r->pending--;
		hub_room_release(h, r);
	}
	if (!sender)
		return;
	if (status == PROTO_OK) {
		h->m->messages_in++;
		hub_ack(h, sender, p->id, p->room, p->seq, p->has_ref ? p->ref : NULL);
	} else {
		hub_error(h, sender, &ref, status, status == PROTO_ERR_UNAVAILABLE
			  ? "the cluster is unavailable; the message may not have been stored (retry with the same id)"
			  : "the message was not accepted");
	}
}

int hub_apply(struct hub *h, const char *room, const char *epoch, const struct hub_msg *m)
{
	struct room *r = hub_room_find(h, room, strlen(room));
	struct msgbuf *mb;

	if (!r || r->loading)
		return 0;          /* the load will bring it */
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
	return 0;
}

void hub_room_rebase(struct hub *h, const char *room, const char *epoch, uint64_t seq)
{
	struct room *r = hub_room_find(h, room, strlen(room));
	struct msgbuf *mb;
	struct jsonw w;

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
	hub_w_begin(&w, "reset", 128);
	jsonw_kv_cstr(&w, "room", r->name);
	jsonw_kv_cstr(&w, "epoch", r->epoch);
	jsonw_kv_u64(&w, "seq", r->seq);
	jsonw_obj_close(&w);
	if ((mb = jsonw_finish(&w))) {
		hub_room_broadcast(h, r, mb, NULL, 0);
		msgbuf_unref(mb);
	}
}

long long hub_room_seq(struct hub *h, const char *room)
{
	struct room *r = hub_room_find(h, room, strlen(room));

	return r ? (long long)r->seq : -1;
}

static struct msgbuf *hub_encode_direct(const struct hub_msg *m)
{
	struct jsonw w;

	hub_w_begin(&w, "direct", 160 + m->body_len + m->body_len / 8);
	jsonw_kv_cstr(&w, "from", m->from);
	jsonw_kv_cstr(&w, "id", m->id);
	jsonw_kv_str(&w, "body", m->body, m->body_len);
	jsonw_kv_u64(&w, "ts", m->ts);
	jsonw_obj_close(&w);
	return jsonw_finish(&w);
}

void hub_direct(struct hub *h, const char *to, const struct hub_msg *m)
{
	struct hub_user *u = hub_user_find(h, to, strlen(to));
	struct msgbuf *mb;
	struct session *t;

	if (!u || !(mb = hub_encode_direct(m)))
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

	if (!sender)
		return;
	if (status == PROTO_OK) {
		h->m->messages_in++;
		hub_ack(h, sender, p->id, NULL, 0, p->has_ref ? p->ref : NULL);
	} else {
		hub_error(h, sender, &ref, status, status == PROTO_ERR_NOT_FOUND ? "no such user online"
			  : "the cluster is unavailable; the message was not sent");
	}
}

void hub_remote_presence(struct hub *h, const char *room, const char *name, int join)
{
	struct room *r = hub_room_find(h, room, strlen(room));
	struct msgbuf *mb;

	if (!r || r->loading || !r->member_count || !(mb = hub_encode_presence(r->name, name, join)))
		return;
	hub_room_broadcast(h, r, mb, NULL, 0);
	msgbuf_unref(mb);
}

void hub_rooms_foreach(struct hub *h, void (*fn)(void *arg, const char *room), void *arg)
{
	struct room *r, *tmp;

	HASH_ITER(hh, h->rooms, r, tmp)
		if (!r->loading)
			fn(arg, r->name);
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

static void hub_cmd_dm(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct hub_user *u = hub_user_find(h, c->to.p, c->to.len);
	struct hub_msg m;
	char to[PROTO_NAME_MAX + 1], ref[PROTO_REF_MAX + 1];

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
	hub_direct(h, to, &m);
}

static void hub_cmd_history(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r = hub_member_room(h, s, c, PROTO_ERR_FORBIDDEN);
	struct msgbuf *v[PROTO_HISTORY_MAX];
	uint64_t lo, hi, oldest;
	uint32_t n, first = 0, last, i;
	size_t total = 0, budget;
	int got;
	struct jsonw w;

	if (!r)
		return;
	oldest = hub_oldest_held(h, r);
	if (c->has_after) {
		lo = c->after + 1 > oldest ? c->after + 1 : oldest;
		hi = r->seq;
	} else {
		hi = c->has_before ? (c->before ? c->before - 1 : 0) : r->seq;
		if (hi > r->seq)
			hi = r->seq;
		lo = hi >= c->limit ? hi - c->limit + 1 : 1;
		if (lo < oldest)
			lo = oldest;
	}
	got = lo <= hi ? hub_collect(h, r, lo, hi, v, c->limit) : 0;
	if (got < 0) {
		hub_error(h, s, &c->ref, PROTO_ERR_UNAVAILABLE, "the room's history could not be read");
		return;
	}
	n = (uint32_t)got;
	/* One reply frame must fit in the session's queue: cut it to the
	 * budget, keeping the messages nearest to the requested bound. */
	budget = h->lim.send_queue_bytes > s->q.bytes + 512 ? h->lim.send_queue_bytes - s->q.bytes - 512 : 0;
	for (i = 0; i < n; i++)
		total += v[i]->len + 1;
	last = n;
	while (first < last && total > budget) {
		if (c->has_after)
			total -= v[--last]->len + 1;
		else
			total -= v[first++]->len + 1;
	}
	hub_w_begin(&w, "history", 128 + total);
	jsonw_kv_cstr(&w, "room", r->name);
	jsonw_key(&w, "messages");
	jsonw_arr_open(&w);
	for (i = first; i < last; i++)
		jsonw_raw(&w, (const char *)v[i]->data, v[i]->len);
	jsonw_arr_close(&w);
	hub_w_ref(&w, &c->ref);
	hub_frames_unref(v, n);
	hub_w_reply(h, s, &w);
}

static void hub_cmd_members(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r = hub_member_room(h, s, c, PROTO_ERR_FORBIDDEN);
	struct jsonw w;

	if (!r)
		return;
	hub_w_begin(&w, "members", 128 + 40 * r->member_count);
	jsonw_kv_cstr(&w, "room", r->name);
	jsonw_key(&w, "names");
	hub_w_names(h, &w, r);
	hub_w_ref(&w, &c->ref);
	hub_w_reply(h, s, &w);
}

static void hub_cmd_ping(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct jsonw w;

	hub_w_begin(&w, "pong", 64);
	hub_w_ref(&w, &c->ref);
	hub_w_reply(h, s, &w);
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
	}
out:
	proto_cmd_free(&c);
}

/* ---- registry ----------------------------------------------------------- */

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
			HASH_DEL(h->users, u);
			free(u);
		}
		h->authed--;
	}
	hub_q_clear(h, s);
	HASH_DEL(h->sessions, s);
	session_free(s);
}

/* ---- lifecycle ---------------------------------------------------------- */

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
}

struct hub *hub_new(const struct config *cfg, const struct hub_transport *tp,
		    struct metrics *metrics)
{
	struct hub *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	hub_limits_from_config(&h->lim, cfg);
	snprintf(h->node_id, sizeof(h->node_id), "%s", cfg->node_id);
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
	h->auth = auth;
}

void hub_reconfigure(struct hub *h, const struct config *cfg)
{
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
	free(h);
	queue_pool_drain();
}

uint64_t hub_session_count(const struct hub *h) { return h->authed; }
uint64_t hub_room_count(const struct hub *h) { return HASH_COUNT(h->rooms); }
uint64_t hub_queue_bytes(const struct hub *h) { return h->queue_bytes; }
uint64_t hub_queue_messages(const struct hub *h) { return h->queue_msgs; }
const struct hub_limits *hub_limits(const struct hub *h) { return &h->lim; }
