/*
 * hub_token.c - tokens that stay true for a connection's life: one min-heap
 * of session deadlines (the transport runs one timer for all of it), the
 * token_expiring warning, the close at expiry, the refresh command, and the
 * re-check of live sessions after a reload changed the keys, spread over
 * loop iterations.
 *
 * A session is in the heap while its token has an end (exp, or a rotation
 * deadline). Its tok_due is the warning time until token_expiring went out,
 * then tok_end, the close.
 */
#include "hub_impl.h"

/* Deadlines and re-checks handled per hub_run_deadlines call: a burst of
 * expiries, or a reload with many sessions, never stalls one iteration. */
#define HUB_TOKEN_SLICE 256

static int hub_theap_less(struct hub *h, uint32_t a, uint32_t b)
{
	return h->theap[a]->tok_due < h->theap[b]->tok_due;
}

static void hub_theap_swap(struct hub *h, uint32_t a, uint32_t b)
{
	struct session *t = h->theap[a];

	h->theap[a] = h->theap[b];
	h->theap[b] = t;
	h->theap[a]->tok_idx = (int)a;
	h->theap[b]->tok_idx = (int)b;
}

static void hub_theap_up(struct hub *h, uint32_t i)
{
	while (i > 0 && hub_theap_less(h, i, (i - 1) / 2)) {
		hub_theap_swap(h, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void hub_theap_down(struct hub *h, uint32_t i)
{
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < h->theap_len && hub_theap_less(h, l, m))
			m = l;
		if (r < h->theap_len && hub_theap_less(h, r, m))
			m = r;
		if (m == i)
			return;
		hub_theap_swap(h, i, m);
		i = m;
	}
}

void hub_token_untrack(struct hub *h, struct session *s)
{
	uint32_t i;

	if (s->tok_idx < 0)
		return;
	i = (uint32_t)s->tok_idx;
	s->tok_idx = -1;
	if (i != --h->theap_len) {
		/* The last entry fills the hole and moves whichever way it must. */
		struct session *moved = h->theap[h->theap_len];
		h->theap[i] = moved;
		moved->tok_idx = (int)i;
		hub_theap_up(h, i);
		hub_theap_down(h, (uint32_t)moved->tok_idx);
	}
}

/* Put s in the heap (or move it) for its current tok_due. -1 on ENOMEM. */
static int hub_theap_set(struct hub *h, struct session *s)
{
	if (s->tok_idx < 0) {
		if (h->theap_len == h->theap_cap) {
			uint32_t cap = h->theap_cap ? h->theap_cap * 2 : 64;
			struct session **v = realloc(h->theap, cap * sizeof(*v));
			if (!v)
				return -1;
			h->theap = v;
			h->theap_cap = cap;
		}
		s->tok_idx = (int)h->theap_len;
		h->theap[h->theap_len++] = s;
	}
	hub_theap_up(h, (uint32_t)s->tok_idx);
	hub_theap_down(h, (uint32_t)s->tok_idx);
	return 0;
}

/* (Re)arm s for its token: after hello and after each refresh. */
void hub_token_track(struct hub *h, struct session *s)
{
	double window = auth_refresh_window(h->auth);

	s->tok_warned = 0;
	if (!s->ident || s->ident->exp <= 0) {
		hub_token_untrack(h, s);
		return;
	}
	s->tok_end = s->ident->exp + auth_leeway(h->auth);
	s->tok_due = s->tok_end - window;
	if (hub_theap_set(h, s)) {
		/* Without a deadline the token would outlive its exp: refuse. */
		log_error(s->id, "out of memory tracking the token's expiry; closing");
		hub_session_close(h, s, 1011, "out of memory", 0);
	}
}

static void hub_token_warn(struct hub *h, struct session *s, const char *reason)
{
	hub_reply(h, s, proto_encode_token_expiring(s->tok_end, s->tok_end - hub_now(h), reason));
	s->tok_warned = 1;
}

/* The heap's top is due: warn it, or close it. */
static void hub_token_due(struct hub *h, struct session *s, double now)
{
	if (s->closing) {           /* closed for another reason; unregistered soon */
		hub_token_untrack(h, s);
		return;
	}
	if (!s->tok_warned && now < s->tok_end) {
		hub_token_warn(h, s, "exp");
		s->tok_due = s->tok_end;
		hub_theap_down(h, (uint32_t)s->tok_idx);
		return;
	}
	hub_token_untrack(h, s);
	log_info(s->id, "token of %s expired without a refresh; closing", s->name);
	h->m->tokens_expired++;
	hub_session_close(h, s, HUB_CLOSE_TOKEN_EXPIRED, "token expired", 1);
}

/* A reload changed the keys: the session numbered num (if still here) was
 * verified with a key that is gone? Then it must refresh within one window. */
static void hub_token_recheck(struct hub *h, uint64_t num, double now)
{
	struct session *s = NULL;
	double end = now + auth_refresh_window(h->auth);

	HASH_FIND(hh, h->sessions, &num, sizeof(num), s);
	if (!s || s->closing || !s->ident || auth_key_accepted(h->auth, s->ident->key_fp))
		return;
	if (s->tok_idx >= 0 && s->tok_end <= end)
		return;     /* ends sooner anyway */
	s->tok_end = end;
	s->tok_due = end;
	if (hub_theap_set(h, s)) {
		hub_session_close(h, s, 1011, "out of memory", 0);
		return;
	}
	hub_token_warn(h, s, "key_rotated");
}

void hub_token_rotated(struct hub *h)
{
	if (!h->auth || !h->next_num)
		return;
	/* Sessions after next_num say hello with the new keys. */
	h->rot_next = 1;
	h->rot_end = h->next_num;
}

double hub_next_deadline(struct hub *h)
{
	if (h->rot_next && h->rot_next <= h->rot_end)
		return hub_now(h);
	return h->theap_len ? h->theap[0]->tok_due : 0;
}

void hub_run_deadlines(struct hub *h)
{
	double now = hub_now(h);
	int n = 0;

	while (h->theap_len && h->theap[0]->tok_due <= now && n++ < HUB_TOKEN_SLICE)
		hub_token_due(h, h->theap[0], now);
	for (n = 0; h->rot_next && h->rot_next <= h->rot_end && n < HUB_TOKEN_SLICE; n++)
		hub_token_recheck(h, h->rot_next++, now);
	if (h->rot_next > h->rot_end)
		h->rot_next = h->rot_end = 0;
}

/* The rooms s is in that its new token no longer allows: leave them. */
static void hub_token_narrow(struct hub *h, struct session *s)
{
	struct membership *m, *tmp;
	struct msgbuf *mb;

	for (m = s->rooms; m; m = tmp) {
		tmp = m->sess_next;
		if (auth_room_allowed(s->ident, m->room->name, strlen(m->room->name)))
			continue;
		mb = proto_encode_left(m->room->name, "token", NULL);
		hub_member_leave(h, m);      /* may free the room: mb holds a copy of its name */
		hub_reply(h, s, mb);
	}
}

void hub_cmd_refresh(struct hub *h, struct session *s, const struct proto_cmd *c)
{
	struct auth_identity *id;
	char why[128];

	if (!h->auth) {
		hub_error(h, s, &c->ref, PROTO_ERR_BAD_REQUEST, "token authentication is not enabled");
		return;
	}
	id = auth_verify(h->auth, c->token.p, c->token.len, hub_now(h), why, sizeof(why));
	if (!id) {
		/* The session keeps its current token until that one ends. */
		hub_error(h, s, &c->ref, PROTO_ERR_NOT_AUTHENTICATED, why);
		log_info(s->id, "refresh refused: %s", why);
		return;
	}
	if (strcmp(id->name, s->name) != 0) {
		hub_error(h, s, &c->ref, PROTO_ERR_FORBIDDEN, "a refresh token must have the same sub");
		log_warn(s->id, "refresh refused: sub %s is not %s", id->name, s->name);
		auth_identity_free(id);
		return;
	}
	auth_identity_free(s->ident);
	s->ident = id;
	hub_token_track(h, s);
	h->m->tokens_refreshed++;
	log_info(s->id, "token refreshed");
	hub_token_narrow(h, s);
	hub_reply(h, s, proto_encode_refreshed(id->exp, &c->ref));
}

void hub_token_free(struct hub *h)
{
	free(h->theap);
	h->theap = NULL;
	h->theap_len = h->theap_cap = 0;
}
