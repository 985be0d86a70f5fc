/*
 * hub_history.c - a room's past: collecting messages from the ring and from
 * the engine, for join {since} (replay) and the history command.
 */
#include "hub_impl.h"

/* The lowest seq of r still held in memory or by the engine. */
uint64_t hub_oldest_held(struct hub *h, struct room *r)
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
int hub_replay(struct hub *h, struct session *s, struct room *r, uint64_t since)
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

/* The seqs lo..hi a history request covers (lo > hi: none): the oldest
 * after `after`, else the newest before `before` or of all, at most limit. */
static void hub_history_bounds(struct hub *h, struct room *r, int has_after, uint64_t after,
			       int has_before, uint64_t before, unsigned limit,
			       uint64_t *lo, uint64_t *hi)
{
	uint64_t oldest = hub_oldest_held(h, r);

	if (has_after) {
		*lo = after + 1 > oldest ? after + 1 : oldest;
		*hi = r->seq;
	} else {
		*hi = has_before ? (before ? before - 1 : 0) : r->seq;
		if (*hi > r->seq)
			*hi = r->seq;
		*lo = *hi >= limit ? *hi - limit + 1 : 1;
		if (*lo < oldest)
			*lo = oldest;
	}
}

void hub_cmd_history(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct room *r = hub_member_room(h, s, c, PROTO_ERR_FORBIDDEN);
	struct msgbuf *v[PROTO_HISTORY_MAX];
	uint64_t lo, hi;
	uint32_t n, first = 0, last, i;
	size_t total = 0, budget;
	int got;
	struct msgbuf *mb;

	if (!r)
		return;
	hub_history_bounds(h, r, c->has_after, c->after, c->has_before, c->before, c->limit, &lo, &hi);
	got = lo <= hi ? hub_collect(h, r, lo, hi, v, c->limit) : 0;
	if (got < 0) {
		hub_error(h, s, &c->ref, PROTO_ERR_UNAVAILABLE, "the room's history could not be read");
		return;
	}
	n = (uint32_t)got;
	if (c->state)
		n = hub_edit_state_frames(h, r, v, n);
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
	mb = proto_encode_history(r->name, v + first, last - first, &c->ref);
	hub_frames_unref(v, n);
	hub_reply(h, s, mb);
}

enum proto_err hub_history_range(struct hub *h, const char *room, int has_after,
				 uint64_t after, int has_before, uint64_t before,
				 unsigned limit, struct jsonw *w, const char **why)
{
	struct msgbuf **v;
	struct room *r;
	uint64_t lo, hi;
	int got, i;

	if (!proto_valid_room(room, strlen(room))) {
		*why = "room must be 1..64 bytes of [A-Za-z0-9_.:-]";
		return PROTO_ERR_BAD_REQUEST;
	}
	if (limit < 1 || limit > PROTO_HISTORY_MAX) {
		*why = "limit must be 1..500";
		return PROTO_ERR_BAD_REQUEST;
	}
	if (!(r = hub_room_get(h, room, strlen(room), why)))
		return PROTO_ERR_UNAVAILABLE;
	if (r->loading) {
		/* An engine loads it from elsewhere (cluster): ask again soon. */
		*why = "the room is loading; retry";
		return PROTO_ERR_UNAVAILABLE;
	}
	if (!(v = malloc(sizeof(*v) * limit))) {
		hub_room_release(h, r);
		*why = "out of memory";
		return PROTO_ERR_INTERNAL;
	}
	hub_history_bounds(h, r, has_after, after, has_before, before, limit, &lo, &hi);
	got = lo <= hi ? hub_collect(h, r, lo, hi, v, limit) : 0;
	if (got >= 0) {
		jsonw_arr_open(w);
		for (i = 0; i < got; i++)
			jsonw_raw(w, (const char *)v[i]->data, v[i]->len);
		jsonw_arr_close(w);
		hub_frames_unref(v, (uint32_t)got);
	}
	free(v);
	hub_room_release(h, r);
	if (got < 0) {
		*why = "the room's history could not be read";
		return PROTO_ERR_UNAVAILABLE;
	}
	return PROTO_OK;
}
