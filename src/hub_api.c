/*
 * hub_api.c - the hub's entry points for the server API (hub_api.h): a
 * publish and a dm enter the path of a client's send and dm (hub_submit,
 * hub_direct, the peers), and are answered through the sink by request
 * number instead of a session; kick, members, online.
 */
#include "hub_impl.h"

/* Request numbers live above every session number (sessions count up from
 * 1 and never get near 2^63), so one uint64_t names either. */
#define HUB_API_REQ_BIT (1ULL << 63)

void hub_api_set_sink(struct hub *h, const struct hub_api_sink *sink)
{
	if (sink)
		h->api = *sink;
	else
		memset(&h->api, 0, sizeof(h->api));
}

void hub_set_events(struct hub *h, const struct hub_events *ev)
{
	if (ev)
		h->ev = *ev;
	else
		memset(&h->ev, 0, sizeof(h->ev));
}

uint64_t hub_api_request(struct hub *h)
{
	return HUB_API_REQ_BIT | ++h->next_req;
}

int hub_api_is_request(uint64_t num)
{
	return (num & HUB_API_REQ_BIT) != 0;
}

/* Answer request num if it is one (1), else do nothing (0). */
int hub_api_answer(struct hub *h, uint64_t num, enum proto_err status, const char *why,
		   const char *room, uint64_t seq)
{
	if (!hub_api_is_request(num))
		return 0;
	if (status != PROTO_OK)
		h->m->errors[status < PROTO_ERR_COUNT ? status : PROTO_ERR_INTERNAL]++;
	if (h->api.done)
		h->api.done(h->api.ctx, num, status, status == PROTO_OK ? NULL : why, room, seq);
	return 1;
}

/* A pending message for an API request; NULL on ENOMEM. */
static struct hub_pending *hub_api_pending(struct hub *h, uint64_t req, const char *from,
					   const char *id, const char *body, size_t len)
{
	struct hub_pending *p = calloc(1, sizeof(*p));

	if (p)
		p->body = malloc(len + 1);
	if (!p || !p->body) {
		hub_pending_free(p);
		return NULL;
	}
	p->sender = req;
	snprintf(p->from, sizeof(p->from), "%s", from);
	snprintf(p->id, sizeof(p->id), "%s", id);
	memcpy(p->body, body, len);
	p->body[len] = '\0';
	p->body_len = len;
	p->ts = (uint64_t)llround(hub_now(h) * 1000.0);
	return p;
}

int hub_api_valid_sender(const char *name)
{
	return strcmp(name, HUB_API_SYSTEM) == 0 || proto_valid_name(name, strlen(name));
}

/* The checks a client's frame gets from proto_decode and hello. */
static const char *hub_api_check(struct hub *h, const char *from, const char *id, size_t body_len)
{
	if (!hub_api_valid_sender(from))
		return "from must be 1..32 bytes of [A-Za-z0-9_.-] (or omitted: the system sender)";
	if (!id[0] || strlen(id) > PROTO_ID_MAX)
		return "id must be a string of 1..64 bytes";
	if (body_len > h->lim.max_message_bytes)
		return "body is larger than limits.max_message_bytes";
	return NULL;
}

void hub_api_publish(struct hub *h, uint64_t req, const char *room, const char *from,
		     const char *id, const char *body, size_t body_len)
{
	struct proto_str ids = { id, strlen(id) };
	struct hub_retry *t;
	struct hub_pending *p;
	struct room *r;
	const char *why;
	uint64_t seq;

	if (!proto_valid_room(room, strlen(room))) {
		hub_api_answer(h, req, PROTO_ERR_BAD_REQUEST, "room must be 1..64 bytes of [A-Za-z0-9_.:-]", room, 0);
		return;
	}
	if ((why = hub_api_check(h, from, id, body_len))) {
		hub_api_answer(h, req, PROTO_ERR_BAD_REQUEST, why, room, 0);
		return;
	}
	if (!(r = hub_room_get(h, room, strlen(room), &why))) {
		hub_api_answer(h, req, PROTO_ERR_UNAVAILABLE, why, room, 0);
		return;
	}
	/* A room still loading (only an engine shared by nodes loads
	 * asynchronously: the cluster) is not needed: that engine sequences
	 * and de-duplicates the message itself, and the stream brings it here
	 * (hub_append_done leaves what it cannot apply in order to it). */
	seq = r->loading ? 0 : room_dedup_find(r, from, strlen(from), id, strlen(id));
	if (seq) {
		hub_api_answer(h, req, PROTO_OK, NULL, r->name, seq);
		hub_room_release(h, r);
		return;
	}
	if ((t = hub_retry_find(r, from, &ids))) {
		if (hub_retry_wait(t, req, NULL) < 0) {
			hub_api_answer(h, req, PROTO_ERR_INTERNAL, "out of memory", room, 0);
			hub_room_release(h, r);
		}
		return;
	}
	if (!(p = hub_api_pending(h, req, from, id, body, body_len))) {
		hub_api_answer(h, req, PROTO_ERR_INTERNAL, "out of memory", room, 0);
		hub_room_release(h, r);
		return;
	}
	hub_submit(h, r, p);
}

void hub_api_dm(struct hub *h, uint64_t req, const char *to, const char *from,
		const char *id, const char *body, size_t body_len)
{
	struct hub_pending *p;
	struct hub_msg m;
	const char *why;
	enum proto_err rc;

	if (!proto_valid_name(to, strlen(to))) {
		hub_api_answer(h, req, PROTO_ERR_BAD_REQUEST, "to must be 1..32 bytes of [A-Za-z0-9_.-]", NULL, 0);
		return;
	}
	if ((why = hub_api_check(h, from, id, body_len))) {
		hub_api_answer(h, req, PROTO_ERR_BAD_REQUEST, why, NULL, 0);
		return;
	}
	if (h->peers.dm) {
		if (!(p = hub_api_pending(h, req, from, id, body, body_len))) {
			hub_api_answer(h, req, PROTO_ERR_INTERNAL, "out of memory", NULL, 0);
			return;
		}
		snprintf(p->to, sizeof(p->to), "%s", to);
		if ((rc = h->peers.dm(h->peers.ctx, h, p)) != PROTO_OK) {
			hub_dm_done(h, p, rc);
			hub_pending_free(p);
		}
		return;
	}
	if (!hub_user_find(h, to, strlen(to))) {
		hub_api_answer(h, req, PROTO_ERR_NOT_FOUND, "no such user online", NULL, 0);
		return;
	}
	m.seq = 0;
	m.ts = (uint64_t)llround(hub_now(h) * 1000.0);
	m.from = from;
	m.id = id;
	m.body = body;
	m.body_len = body_len;
	h->m->messages_in++;
	if (h->ev.direct)
		h->ev.direct(h->ev.ctx, to, &m);
	hub_direct(h, to, &m);
	hub_api_answer(h, req, PROTO_OK, NULL, NULL, 0);
}

uint32_t hub_api_kick_local(struct hub *h, const char *name, int code, const char *reason)
{
	struct hub_user *u = hub_user_find(h, name, strlen(name));
	struct session *s;
	uint32_t n = 0;

	if (!u)
		return 0;
	/* Closing does not unlink: the transport unregisters later. */
	for (s = u->sessions; s; s = s->user_next) {
		if (s->closing)
			continue;
		log_info(s->id, "disconnected by the server API (%d %s)", code, reason);
		/* The queue goes: the close frame is what the client must see. */
		hub_session_close(h, s, code, reason, 0);
		n++;
	}
	return n;
}

enum proto_err hub_api_kick(struct hub *h, const char *name, int code, const char *reason,
			    uint32_t *closed)
{
	int told = h->peers.kick ? h->peers.kick(h->peers.ctx, name, code, reason) : 0;

	*closed = hub_api_kick_local(h, name, code, reason);
	return told < 0 ? PROTO_ERR_UNAVAILABLE : PROTO_OK;
}

struct hub_api_names {
	struct hub *h;
	struct jsonw *w;
	uint64_t n;
};

static void hub_api_remote_name(void *arg, const char *name)
{
	struct hub_api_names *an = arg;

	if (hub_user_find(an->h, name, strlen(name)))
		return;            /* listed with the local names */
	jsonw_cstr(an->w, name);
	an->n++;
}

void hub_api_members(struct hub *h, const char *room, struct jsonw *w)
{
	struct room *r = hub_room_find(h, room, strlen(room));
	struct hub_api_names an = { h, w, 0 };

	jsonw_arr_open(w);
	if (r && !r->loading)
		hub_names(h, w, r);
	else if (h->peers.names)     /* not held here: only other nodes can have members */
		h->peers.names(h->peers.ctx, room, hub_api_remote_name, &an);
	jsonw_arr_close(w);
}

uint64_t hub_api_online(struct hub *h, struct jsonw *w)
{
	struct hub_api_names an = { h, w, 0 };
	struct hub_user *u, *tmp;

	jsonw_arr_open(w);
	HASH_ITER(hh, h->users, u, tmp) {
		jsonw_cstr(w, u->name);
		an.n++;
	}
	if (h->peers.online)
		h->peers.online(h->peers.ctx, hub_api_remote_name, &an);
	jsonw_arr_close(w);
	return an.n;
}
