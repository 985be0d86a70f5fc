/*
 * fuzz_hub - libFuzzer target for the hub: sessions, names, rooms, queues,
 * the slow-consumer policy, deferred commits and token authentication,
 * driven through a fake transport like tests/unit/test_hub.c does.
 *
 * Input: an 8-byte header of limits and switches, then a program of ops:
 *
 *   op byte: kind = op % 13, slot = (op >> 4) & 7   (8 connections)
 *   0  CONNECT   register a session on the slot (if free)
 *   1  INPUT     u16le len, then len bytes: one text frame
 *   2  DRAIN     write out everything the slot has queued
 *   3  POP       write out one frame
 *   4  RELEASE   the peer vanished: unregister the slot
 *   5  TICK      u8: the clock moves by u8 * 50 ms
 *   6  COMMIT    u8 n: n < 128: the engine commits that many pending messages,
 *                oldest first; n >= 128: it commits the oldest pending message
 *                of room r(n % 8) only (rooms complete out of order); n >= 192:
 *                it also finishes its oldest room load (ok unless n & 1).
 *                A sequencing engine, for 128 <= n < 192 with n & 8, instead
 *                stores a message of another node in room r(n % 8).
 *   7  FAIL      the engine fails its oldest pending message (and,
 *                per the engine contract, every later one of the same room)
 *   8  TOKEN     u8 alg, u16le len, len bytes of claims JSON: hello {token}
 *                with a token signed by the harness (auth on)
 *   9  RECONF    u8: hub_reconfigure() with new queue limits
 *   10 DRAINING  hub_set_draining()
 *   11 TEMPLATE  u8 which, u8 arg: a well-formed frame of any command type
 *   12 CLOSE     u8: the hub closes the slot (hub_session_close), flush = u8 & 1
 *
 * Header byte 0: bit 1 drop_oldest, bit 2 an engine, bit 4 auth on, bit 8
 * the engine is slow and unreliable: room loads wait for COMMIT >= 192, and
 * reads fail while bit 16 is set; bit 32: the engine sequences, as the
 * cluster does (its seq replaces the hub's proposal, a stored (from, id) is
 * answered as a duplicate, a failed append may have been stored, and after
 * each commit its stream brings the room's stored messages to the hub,
 * stopping at a gap). The engine keeps what it committed (the last
 * FZ_STORE messages), so reloads and reads give it back. Byte 7's high
 * nibble, if not 0, sets limits.max_rooms (1..15): rooms are evicted,
 * reloaded, and new ones refused.
 *
 * Like the real transport (server.c), a frame that is not valid UTF-8 ends
 * the connection (1007) instead of reaching the hub, a close without flush
 * is released at once and a close with flush once its queue is written.
 *
 * Checks, on top of ASan/UBSan/LSan:
 *  - every frame the hub writes is one JSON object with a string "type", in
 *    valid UTF-8 without a raw NUL;
 *  - the hub's queue gauges equal the sum of the sessions' queues, and a
 *    session closed without flush has nothing queued;
 *  - with auth on, only a harness-signed HS256 token authenticates a
 *    session, and a session is only ever a member of rooms its token allows;
 *  - at the end (everything committed and unregistered) no msgbuf is alive.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <jwt.h>

#include "auth.h"
#include "config.h"
#include "hub.h"
#include "log.h"
#include "metrics.h"
#include "msgbuf.h"
#include "proto.h"
#include "room.h"
#include "session.h"

#include "../fake_store.h"

#define CHECK(cond) do { if (!(cond)) { \
	fprintf(stderr, "fuzz_hub: check failed at line %d: %s\n", __LINE__, #cond); \
	__builtin_trap(); } } while (0)

#define NSLOTS 8
#define SECRET "fuzz-secret-0123456789abcdef0123"

struct slot {
	struct session *s;
	int close_req, flush;
};

static struct slot slots[NSLOTS];
static struct hub *hub;
static struct metrics metrics;
static double clock_now;
static struct auth *auth;
static int auth_on;

/* The deferred engine: one FIFO of submitted messages (global submit order
 * is per-room seq order, as the contract wants). */
static struct hub_pending *pend_head, *pend_tail;

/* What the engine stored (the last FZ_STORE messages: retention). */
#define FZ_STORE 64
static struct fake_store store;
static char loads[16][PROTO_ROOM_MAX + 1];
static int nloads, slow_engine, sequencing;

/* ---- fake transport ----------------------------------------------------- */

static void tp_wake(void *ctx, void *conn)
{
	(void)ctx;
	CHECK(conn >= (void *)&slots[0] && conn < (void *)&slots[NSLOTS]);
}

static void tp_close(void *ctx, void *conn, int code, const char *reason, int flush)
{
	struct slot *sl = conn;

	(void)ctx;
	CHECK(sl >= &slots[0] && sl < &slots[NSLOTS] && sl->s);
	CHECK(code >= 1000 && code < 5000 && reason);
	if (!sl->close_req) {
		sl->close_req = 1;
		sl->flush = flush;
	}
}

static double tp_now(void *ctx)
{
	(void)ctx;
	return clock_now;
}

static const struct hub_transport fake_tp = { tp_wake, tp_close, tp_now, NULL };

/* ---- deferred engine ---------------------------------------------------- */

static void eng_submit(void *ctx, struct hub *h, struct hub_pending *p)
{
	(void)ctx;
	(void)h;
	p->next = NULL;
	if (pend_tail)
		pend_tail->next = p;
	else
		pend_head = p;
	pend_tail = p;
}

static int eng_room_load(void *ctx, struct hub *h, const char *room)
{
	(void)ctx;
	(void)h;
	if (!slow_engine) {
		fake_store_load(&store, hub, room);
		return 0;
	}
	if (nloads == (int)(sizeof loads / sizeof loads[0]))
		return -1;
	snprintf(loads[nloads++], sizeof loads[0], "%s", room);
	return 1;
}

static void eng_finish_load(int ok)
{
	char room[PROTO_ROOM_MAX + 1];

	if (!nloads)
		return;
	memcpy(room, loads[0], sizeof room);
	memmove(&loads[0], &loads[1], sizeof(loads[0]) * (size_t)--nloads);
	if (ok)
		fake_store_load(&store, hub, room);
	hub_room_loaded(hub, room, ok);
}

static int eng_read(void *ctx, const char *room, uint64_t lo, uint64_t hi, uint32_t max,
		    void (*emit)(void *arg, const struct hub_msg *m), void *arg)
{
	(void)ctx;
	return fake_store_read(&store, room, lo, hi, max, emit, arg);
}

static uint64_t eng_oldest(void *ctx, const char *room)
{
	(void)ctx;
	return fake_store_oldest(&store, room);
}

static const struct hub_engine deferred_engine = {
	.submit = eng_submit, .room_load = eng_room_load, .read = eng_read, .oldest = eng_oldest,
};

/* A sequencing engine's stream: the stored messages of room, in order, up
 * to the first one the hub reports as a gap (the next catch-up, like the
 * cluster's resync, starts over; what the hub has seen, it ignores). */
static void stream_catch_up(const char *room)
{
	int i;

	for (i = 0; i < store.n; i++) {
		struct hub_msg m;
		if (strcmp(store.m[i].room, room) != 0)
			continue;
		fake_store_msg(&store.m[i], &m);
		if (hub_stream_message(hub, room, store.m[i].epoch, &m) < 0)
			break;
	}
	/* The hub never holds a seq the engine did not hand out. */
	CHECK(hub_room_seq(hub, room) <= (long long)*fake_store_counter(&store, room));
}

static void complete(struct hub_pending *p, enum proto_err status)
{
	char room[sizeof p->room];

	memcpy(room, p->room, sizeof room);
	if (sequencing) {
		if (status == PROTO_OK || store.n % 2)
			fake_store_sequence(&store, p);   /* a failure may have stored it */
	} else if (status == PROTO_OK) {
		fake_store_add(&store, p);
	}
	hub_append_done(hub, p, status);
	hub_pending_free(p);
	if (sequencing)
		stream_catch_up(room);
}

static void commit_one(struct hub_pending *p)
{
	complete(p, PROTO_OK);
}

/* A sequencing engine: another node stores a message in room r<k>. */
static void other_node(unsigned k)
{
	struct hub_pending p;
	int i;

	memset(&p, 0, sizeof p);
	snprintf(p.room, sizeof p.room, "r%u", k);
	for (i = store.n - 1; i >= 0 && strcmp(store.m[i].room, p.room) != 0; i--)
		;
	if (i < 0)
		return;      /* nothing stored: the room's epoch is the hub's to pick */
	memcpy(p.epoch, store.m[i].epoch, sizeof p.epoch);
	snprintf(p.from, sizeof p.from, "other");
	snprintf(p.id, sizeof p.id, "o%llu", (unsigned long long)*fake_store_counter(&store, p.room));
	p.ts = 1;
	fake_store_sequence(&store, &p);
}

/* Commit the oldest pending message of room r<k> (per room in seq order,
 * across rooms in any order). */
static void eng_commit_room(unsigned k)
{
	struct hub_pending *p, *q, **pp;
	char room[16];

	snprintf(room, sizeof room, "r%u", k);
	for (pp = &pend_head; (p = *pp); pp = &p->next) {
		if (strcmp(p->room, room) != 0)
			continue;
		*pp = p->next;
		p->next = NULL;
		pend_tail = NULL;
		for (q = pend_head; q; q = q->next)
			pend_tail = q;
		commit_one(p);
		return;
	}
}

static struct hub_pending *pend_pop(void)
{
	struct hub_pending *p = pend_head;

	if (p) {
		pend_head = p->next;
		if (!pend_head)
			pend_tail = NULL;
		p->next = NULL;
	}
	return p;
}

static void eng_commit(int n)
{
	struct hub_pending *p;

	while (n-- > 0 && (p = pend_pop()))
		commit_one(p);
}

static void eng_fail(void)
{
	struct hub_pending *p = pend_pop(), **pp;
	char room[sizeof p->room];

	if (!p)
		return;
	memcpy(room, p->room, sizeof room);
	complete(p, PROTO_ERR_UNAVAILABLE);
	/* A failed commit fails every later pending message of the room. */
	for (pp = &pend_head; *pp;) {
		p = *pp;
		if (strcmp(p->room, room) != 0) {
			pp = &p->next;
			continue;
		}
		*pp = p->next;
		p->next = NULL;
		complete(p, PROTO_ERR_UNAVAILABLE);
	}
	pend_tail = NULL;
	for (p = pend_head; p; p = p->next)
		pend_tail = p;
}

/* ---- the transport's side ----------------------------------------------- */

/* A queued frame: an unmasked, final text frame whose header gives the
 * exact payload length, and a payload that is one JSON object. */
static void check_frame(const struct iovec *iov)
{
	const unsigned char *f = iov->iov_base, *data;
	const cJSON *type;
	size_t hdr = 2, len;
	cJSON *o;
	int i;

	CHECK(iov->iov_len >= 2 && f[0] == 0x81 && !(f[1] & 0x80));
	len = f[1] & 0x7f;
	if (len == 126) {
		hdr = 4;
		len = (size_t)f[2] << 8 | f[3];
		CHECK(len >= 126);
	} else if (len == 127) {
		hdr = 10;
		for (len = 0, i = 2; i < 10; i++)
			len = len << 8 | f[i];
		CHECK(len > 0xffff);
	}
	CHECK(iov->iov_len == hdr + len);
	data = f + hdr;
	CHECK(memchr(data, '\0', len) == NULL);
	CHECK(data[len] == '\0');
	CHECK(proto_utf8_valid(data, len));
	o = cJSON_ParseWithLength((const char *)data, len);
	CHECK(cJSON_IsObject(o));
	type = cJSON_GetObjectItemCaseSensitive(o, "type");
	CHECK(cJSON_IsString(type));
	cJSON_Delete(o);
}

static int write_one(struct slot *sl)
{
	struct iovec iov[4];
	int n, i;

	if (!sl->s || (sl->close_req && !sl->flush))
		return 0;
	n = hub_session_frames(hub, sl->s, iov, 4, 4096);
	for (i = 0; i < n; i++)
		check_frame(&iov[i]);
	hub_session_consumed(hub, sl->s, n, clock_now);
	return n > 0;
}

static int queued(struct session *s)
{
	uint32_t frames;
	size_t bytes;

	hub_session_backlog(s, &frames, &bytes);
	return frames > 0;
}

static void release(struct slot *sl)
{
	if (!sl->s)
		return;
	hub_session_unregister(hub, sl->s);
	sl->s = NULL;
	sl->close_req = sl->flush = 0;
}

/* server.c's release path: closes without flush at once, flushing closes
 * once their queue is written. Releasing one session may close others
 * (presence fan-out into full queues), hence the loop. */
static void reap(void)
{
	int again = 1, i;

	while (again) {
		again = 0;
		for (i = 0; i < NSLOTS; i++) {
			struct slot *sl = &slots[i];
			if (sl->s && sl->close_req && (!sl->flush || !queued(sl->s))) {
				release(sl);
				again = 1;
			}
		}
	}
}

static void check_invariants(void)
{
	uint64_t bytes = 0, msgs = 0, authed = 0;
	int i;

	for (i = 0; i < NSLOTS; i++) {
		struct session *s = slots[i].s;
		struct membership *m;

		if (!s)
			continue;
		bytes += s->q.bytes;
		msgs += s->q.count;
		authed += session_authenticated(s);
		if (slots[i].close_req && !slots[i].flush)
			CHECK(s->q.count == 0 && s->q.bytes == 0);
		if (slots[i].close_req)
			CHECK(s->closing);
		if (auth_on && session_authenticated(s))
			CHECK(s->ident != NULL);
		for (m = s->rooms; m; m = m->sess_next) {
			CHECK(m->sess == s);
			CHECK(session_authenticated(s));
			if (auth_on)
				CHECK(auth_room_allowed(s->ident, m->room->name, strlen(m->room->name)));
		}
	}
	CHECK(hub_queue_bytes(hub) == bytes);
	CHECK(hub_queue_messages(hub) == msgs);
	CHECK(hub_named_session_count(hub) == authed);
}

static void input(struct slot *sl, const char *data, size_t len, int signed_token)
{
	int was_authed;

	if (!sl->s || sl->close_req)
		return;     /* server.c drops frames once a close is under way */
	if (!proto_utf8_valid((const unsigned char *)data, len)) {
		release(sl);    /* 1007, released at once */
		return;
	}
	was_authed = session_authenticated(sl->s);
	hub_session_input(hub, sl->s, data, len);
	/* With auth on, a frame the fuzzer wrote cannot carry a valid token. */
	if (auth_on && !signed_token && !was_authed && sl->s)
		CHECK(!session_authenticated(sl->s));
}

/* hello {token}: claims signed with the server's secret under alg. */
static void token_hello(struct slot *sl, uint8_t algsel, const uint8_t *claims, size_t len)
{
	static const jwt_alg_t algs[] = { JWT_ALG_HS256, JWT_ALG_HS256, JWT_ALG_HS256,
					  JWT_ALG_HS384, JWT_ALG_HS512, JWT_ALG_NONE };
	jwt_alg_t alg = algs[algsel % (sizeof algs / sizeof algs[0])];
	char *json, *tok = NULL, *frame;
	jwt_t *jwt = NULL;
	int was_authed;
	size_t n;

	if (!sl->s || sl->close_req)
		return;
	json = malloc(len + 1);
	if (!json)
		return;
	memcpy(json, claims, len);
	json[len] = '\0';
	if (jwt_new(&jwt) == 0 && jwt_add_grants_json(jwt, json) == 0 &&
	    jwt_set_alg(jwt, alg, alg == JWT_ALG_NONE ? NULL : (const unsigned char *)SECRET,
			alg == JWT_ALG_NONE ? 0 : (int)strlen(SECRET)) == 0)
		tok = jwt_encode_str(jwt);
	jwt_free(jwt);
	free(json);
	if (!tok)
		return;
	n = strlen(tok) + 64;
	frame = malloc(n);
	if (frame) {
		/* A JWT is base64url and dots: nothing to escape. */
		snprintf(frame, n, "{\"type\":\"hello\",\"token\":\"%s\",\"ref\":\"t\"}", tok);
		was_authed = session_authenticated(sl->s);
		input(sl, frame, strlen(frame), 1);
		if (alg != JWT_ALG_HS256 && !was_authed && sl->s)
			CHECK(!session_authenticated(sl->s));
		free(frame);
	}
	free(tok);
}

static void template_frame(struct slot *sl, uint8_t which, uint8_t arg)
{
	char buf[256];
	int n = 0;
	unsigned a = arg % 4, b = arg >> 2;

	switch (which % 12) {
	case 0: n = snprintf(buf, sizeof buf, "{\"type\":\"hello\",\"name\":\"n%u\"}", a); break;
	case 1: n = snprintf(buf, sizeof buf, "{\"type\":\"join\",\"room\":\"r%u\",\"ref\":\"j\"}", a); break;
	case 2: n = snprintf(buf, sizeof buf, "{\"type\":\"join\",\"room\":\"r%u\",\"since\":%u}", a, b % 8); break;
	case 3: n = snprintf(buf, sizeof buf, "{\"type\":\"leave\",\"room\":\"r%u\"}", a); break;
	case 4: n = snprintf(buf, sizeof buf,
			     "{\"type\":\"send\",\"room\":\"r%u\",\"id\":\"i%u\",\"body\":\"b\\u00e9\\n\",\"ref\":\"s\"}",
			     a, b); break;
	case 5: n = snprintf(buf, sizeof buf, "{\"type\":\"dm\",\"to\":\"n%u\",\"id\":\"d%u\",\"body\":\"hi\"}", a, b); break;
	case 6: n = snprintf(buf, sizeof buf, "{\"type\":\"history\",\"room\":\"r%u\",\"limit\":%u}", a, b + 1); break;
	case 7: n = snprintf(buf, sizeof buf, "{\"type\":\"history\",\"room\":\"r%u\",\"before\":%u}", a, b); break;
	case 8: n = snprintf(buf, sizeof buf, "{\"type\":\"history\",\"room\":\"r%u\",\"after\":%u}", a, b); break;
	case 9: n = snprintf(buf, sizeof buf, "{\"type\":\"members\",\"room\":\"r%u\"}", a); break;
	case 10: n = snprintf(buf, sizeof buf, "{\"type\":\"ping\",\"ref\":\"p%u\"}", arg); break;
	case 11: n = snprintf(buf, sizeof buf, "{\"type\":\"send\",\"room\":\"r%u\",\"id\":\"x\",\"body\":\"%.*s\"}",
			      a, (int)(b * 3), "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
			      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"); break;
	}
	if (n > 0 && n < (int)sizeof buf)
		input(sl, buf, (size_t)n, 0);
}

/* ---- the driver --------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct config cfg;
	char err[128];

	(void)argc;
	(void)argv;
	log_setup(CONFIG_LOG_ERROR, CONFIG_LOG_TEXT);
	if (config_defaults(&cfg))
		abort();
	cfg.auth_mode = CONFIG_AUTH_JWT;
	free(cfg.jwt_secret);
	cfg.jwt_secret = strdup(SECRET);
	auth = auth_new(&cfg, err, sizeof err);
	if (!auth) {
		fprintf(stderr, "fuzz_hub: auth_new: %s\n", err);
		abort();
	}
	config_free(&cfg);
	/* auth lives for the process: LSan must not count it. */
	return 0;
}

static void limits_from(struct config *cfg, const uint8_t h[8])
{
	cfg->slow_consumer = (h[0] & 1) ? CONFIG_SLOW_DROP_OLDEST : CONFIG_SLOW_CLOSE;
	cfg->send_queue_messages = 1 + h[1] % 16;
	cfg->send_queue_bytes = 64 + (long)h[2] * 32;
	cfg->total_queue_bytes = 256 + (long long)h[3] * 128;
	cfg->max_message_bytes = 1 + (long)h[4] * 8;
	cfg->burst = 1 + h[5] % 16;
	cfg->rate = 1 + (h[5] >> 4) * 10;
	cfg->sessions_per_name = 1 + h[6] % 3;
	cfg->messages_per_room = (h[6] >> 2) % 16;
	cfg->dedup_window = h[7] % 16;
	if (h[7] >> 4)
		cfg->max_rooms = h[7] >> 4;
}

static uint16_t u16(const uint8_t **p, const uint8_t *end)
{
	uint16_t v = 0;

	if (end - *p >= 2) {
		v = (uint16_t)((*p)[0] | (*p)[1] << 8);
		*p += 2;
	} else if (end - *p == 1) {
		v = (*p)[0];
		*p += 1;
	}
	return v;
}

static uint8_t u8(const uint8_t **p, const uint8_t *end)
{
	return *p < end ? *(*p)++ : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *end = data + size;
	uint8_t hdr[8] = { 0 };
	struct config cfg;
	int i;

	memcpy(hdr, data, size < 8 ? size : 8);
	p += size < 8 ? size : 8;

	memset(slots, 0, sizeof slots);
	memset(&metrics, 0, sizeof metrics);
	pend_head = pend_tail = NULL;
	memset(&store, 0, sizeof store);
	store.cap = FZ_STORE;
	store.fail_reads = (hdr[0] & 16) != 0;
	nloads = 0;
	slow_engine = (hdr[0] & 8) != 0;
	sequencing = (hdr[0] & 32) != 0;
	clock_now = 1700000000.0;
	if (config_defaults(&cfg))
		abort();
	limits_from(&cfg, hdr);
	hub = hub_new(&cfg, &fake_tp, &metrics);
	CHECK(hub);
	if (hdr[0] & 2)
		hub_set_engine(hub, &deferred_engine);
	auth_on = (hdr[0] & 4) != 0;
	if (auth_on)
		hub_set_auth(hub, auth);

	while (p < end) {
		uint8_t op = *p++;
		struct slot *sl = &slots[(op >> 4) & 7];
		size_t len;
		uint8_t a, b;

		switch (op % 13) {
		case 0:
			if (!sl->s) {
				sl->s = hub_session_register(hub, sl);
				CHECK(sl->s);
			}
			break;
		case 1:
			len = u16(&p, end);
			if (len > (size_t)(end - p))
				len = (size_t)(end - p);
			input(sl, (const char *)p, len, 0);
			p += len;
			break;
		case 2:
			while (write_one(sl))
				;
			break;
		case 3:
			write_one(sl);
			break;
		case 4:
			release(sl);
			break;
		case 5:
			clock_now += u8(&p, end) * 0.05;
			break;
		case 6:
			a = u8(&p, end);
			if (a < 128)
				eng_commit(a);
			else if (sequencing && a < 192 && (a & 8))
				other_node(a % 8);
			else
				eng_commit_room(a % 8);
			if (a >= 192)
				eng_finish_load(!(a & 1));
			break;
		case 7:
			eng_fail();
			break;
		case 8:
			a = u8(&p, end);
			len = u16(&p, end);
			if (len > (size_t)(end - p))
				len = (size_t)(end - p);
			if (auth_on)
				token_hello(sl, a, p, len);
			p += len;
			break;
		case 9:
			a = u8(&p, end);
			cfg.send_queue_messages = 1 + a % 16;
			cfg.send_queue_bytes = 64 + (long)(a >> 4) * 256;
			cfg.slow_consumer = (a & 0x80) ? CONFIG_SLOW_DROP_OLDEST : CONFIG_SLOW_CLOSE;
			hub_reconfigure(hub, &cfg);
			break;
		case 10:
			hub_set_draining(hub);
			break;
		case 11:
			a = u8(&p, end);
			b = u8(&p, end);
			template_frame(sl, a, b);
			break;
		case 12:
			a = u8(&p, end);
			if (sl->s)
				hub_session_close(hub, sl->s, 1008, "fuzz", a & 1);
			break;
		}
		reap();
		check_invariants();
	}

	/* Teardown: the engine completes everything, then every peer goes. */
	while (nloads)
		eng_finish_load(1);
	eng_commit(1 << 30);
	check_invariants();
	for (i = 0; i < NSLOTS; i++) {
		while (write_one(&slots[i]))
			;
		release(&slots[i]);
	}
	CHECK(hub_named_session_count(hub) == 0 && hub_queue_bytes(hub) == 0 && hub_queue_messages(hub) == 0);
	hub_free(hub);
	hub = NULL;
	config_free(&cfg);
	CHECK(msgbuf_live() == 0);
	return 0;
}
