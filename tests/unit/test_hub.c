/*
 * test_hub.c - the hub driven through a fake transport.
 *
 * The fake transport records wake() and close() calls (close does NOT
 * unregister, as the real transport defers that to its release path) and
 * serves a clock the tests move by hand. Frames go in with
 * hub_session_input(); output is drained with hub_session_frames/consumed and
 * parsed with cJSON. Every parsed object is kept until teardown, so tests
 * need not free them; teardown frees the hub and checks that no msgbuf is
 * left alive.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth.h"
#include "cluster.h"
#include "config.h"
#include "hub.h"
#include "log.h"
#include "metrics.h"
#include "msgbuf.h"
#include "proto.h"
#include "session.h"

#include "../fake_store.h"

/* ---- fake transport ----------------------------------------------------- */

struct closed {
	void *conn;
	int code;
	char reason[64];
};

static struct {
	double now;
	void *woken[4096];
	int nwoken;
	struct closed closes[32];
	int nclosed;
} fk;

static void fk_wake(void *ctx, void *conn)
{
	(void)ctx;
	if (fk.nwoken < (int)(sizeof fk.woken / sizeof fk.woken[0]))
		fk.woken[fk.nwoken++] = conn;
}

static void fk_close(void *ctx, void *conn, int code, const char *reason, int flush)
{
	struct closed *c;

	(void)ctx;
	assert_true(fk.nclosed < (int)(sizeof fk.closes / sizeof fk.closes[0]));
	c = &fk.closes[fk.nclosed++];
	c->conn = conn;
	c->code = code;
	snprintf(c->reason, sizeof c->reason, "%s", reason);
}

static double fk_now(void *ctx)
{
	(void)ctx;
	return fk.now;
}

static const struct hub_transport fake_tp = { fk_wake, fk_close, fk_now, NULL };

/* ---- allocation failures ------------------------------------------------ */

/*
 * test_hub links with -Wl,--wrap=malloc,--wrap=calloc: every malloc and
 * calloc of the hub's own code (chatd_core is a static library) goes
 * through here, so a test can make the n-th next one fail. Allocations
 * inside shared libraries (cJSON, libc's strdup) are not counted.
 */
static long alloc_fail_in;      /* 0: off; n: the n-th next allocation fails */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);

static int alloc_fails(void)
{
	return alloc_fail_in > 0 && --alloc_fail_in == 0;
}

void *__wrap_malloc(size_t n)
{
	return alloc_fails() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
	return alloc_fails() ? NULL : __real_calloc(n, size);
}

/* ---- fixture ------------------------------------------------------------ */

static struct config cfg;
static struct metrics metrics;
static struct hub *hub;
static int conns[512];     /* distinct addresses used as connection handles */
static int nconns;
static cJSON *kept[8192];  /* parsed frames, freed at teardown */
static int nkept;

static int setup(void **state)
{
	(void)state;
	memset(&fk, 0, sizeof fk);
	memset(&metrics, 0, sizeof metrics);
	alloc_fail_in = 0;
	fk.now = 1000.5;
	hub = NULL;
	nconns = 0;
	nkept = 0;
	assert_int_equal(config_defaults(&cfg), 0);
	return 0;
}

static struct auth *tauth;  /* token tests: freed after the hub */

static int teardown(void **state)
{
	(void)state;
	hub_free(hub);     /* unregisters every session, drains the node pool */
	hub = NULL;
	auth_free(tauth);
	tauth = NULL;
	while (nkept)
		cJSON_Delete(kept[--nkept]);
	config_free(&cfg);
	assert_int_equal(msgbuf_live(), 0);
	return 0;
}

/* Create the hub from cfg (tests tweak cfg first). */
static void start(void)
{
	hub = hub_new(&cfg, &fake_tp, &metrics);
	assert_non_null(hub);
}

static struct session *connect_(void)
{
	struct session *s;

	assert_true(nconns < (int)(sizeof conns / sizeof conns[0]));
	s = hub_session_register(hub, &conns[nconns++]);
	assert_non_null(s);
	return s;
}

static void in(struct session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void in(struct session *s, const char *fmt, ...)
{
	char buf[8192];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	assert_true(n > 0 && n < (int)sizeof buf);
	hub_session_input(hub, s, buf, (size_t)n);
}

/* The next output frame of s, parsed, or NULL if its queue is empty. */
static cJSON *next(struct session *s)
{
	struct iovec iov;
	const unsigned char *f;
	size_t hdr, len;
	cJSON *o;

	if (hub_session_frames(hub, s, &iov, 1, 0) != 1)
		return NULL;
	/* A server text frame: FIN + text, unmasked, 7/16/64-bit length. */
	f = iov.iov_base;
	assert_int_equal(f[0], 0x81);
	len = f[1] & 0x7f;
	hdr = len == 126 ? 4 : len == 127 ? 10 : 2;
	if (len == 126)
		len = (size_t)f[2] << 8 | f[3];
	assert_true(len < 127 || hdr == 4);
	assert_int_equal(iov.iov_len, hdr + len);
	o = cJSON_ParseWithLength((const char *)f + hdr, len);
	if (!o)
		fail_msg("output is not JSON: %.*s", (int)len, f + hdr);
	assert_true(cJSON_IsObject(o));
	assert_true(nkept < (int)(sizeof kept / sizeof kept[0]));
	kept[nkept++] = o;
	hub_session_consumed(hub, s, 1, fk.now);
	return o;
}

static const char *str(const cJSON *o, const char *key)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!cJSON_IsString(it))
		fail_msg("field %s is not a string in %s", key, cJSON_PrintUnformatted(o));
	return it->valuestring;
}

static double num(const cJSON *o, const char *key)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!cJSON_IsNumber(it))
		fail_msg("field %s is not a number", key);
	return it->valuedouble;
}

static int has(const cJSON *o, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(o, key) != NULL;
}

/* The next frame of s, which must be of this type. */
static cJSON *expect(struct session *s, const char *type)
{
	cJSON *o = next(s);

	if (!o)
		fail_msg("expected a %s frame, the queue is empty", type);
	if (strcmp(str(o, "type"), type) != 0) {
		char *txt = cJSON_PrintUnformatted(o);
		print_error("got %s\n", txt);
		free(txt);
		fail_msg("expected a %s frame, got %s", type, str(o, "type"));
	}
	return o;
}

static cJSON *expect_error(struct session *s, const char *code)
{
	cJSON *o = expect(s, "error");

	assert_string_equal(str(o, "code"), code);
	assert_true(strlen(str(o, "message")) > 0);
	return o;
}

static void expect_none(struct session *s)
{
	cJSON *o = next(s);

	if (o) {
		char *txt = cJSON_PrintUnformatted(o);
		print_error("unexpected %s\n", txt);
		free(txt);
		fail_msg("expected no output");
	}
}

/* Pop everything s has queued; returns how many frames. */
static int drain(struct session *s)
{
	int n = 0;

	while (next(s))
		n++;
	return n;
}

static struct session *login(const char *name)
{
	struct session *s = connect_();
	cJSON *w;

	in(s, "{\"type\":\"hello\",\"name\":\"%s\"}", name);
	w = expect(s, "welcome");
	assert_string_equal(str(w, "name"), name);
	expect_none(s);
	return s;
}

/* Join room; returns the joined reply; drains every other member's presence. */
static cJSON *join(struct session *s, const char *room)
{
	cJSON *j;

	in(s, "{\"type\":\"join\",\"room\":\"%s\"}", room);
	j = expect(s, "joined");
	assert_string_equal(str(j, "room"), room);
	return j;
}

static void send_msg(struct session *s, const char *room, const char *id, const char *body)
{
	in(s, "{\"type\":\"send\",\"room\":\"%s\",\"id\":\"%s\",\"body\":\"%s\"}", room, id, body);
}

static int names_contain(const cJSON *arr, const char *name)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, arr)
		if (cJSON_IsString(it) && strcmp(it->valuestring, name) == 0)
			return 1;
	return 0;
}

static int closes_of(void *conn)
{
	int i, n = 0;

	for (i = 0; i < fk.nclosed; i++)
		n += fk.closes[i].conn == conn;
	return n;
}

/* ---- hello -------------------------------------------------------------- */

static void test_hello_gets_welcome(void **state)
{
	struct session *s;
	cJSON *w;

	start();
	s = connect_();
	assert_int_equal(hub_named_session_count(hub), 0);
	in(s, "{\"type\":\"hello\",\"name\":\"alice\",\"ref\":\"h1\"}");
	w = expect(s, "welcome");
	assert_string_equal(str(w, "name"), "alice");
	assert_string_equal(str(w, "ref"), "h1");
	assert_string_equal(str(w, "session"), s->id);
	assert_true(strlen(str(w, "session")) > 0);
	assert_true(num(w, "heartbeat") == cfg.heartbeat_interval);
	assert_string_equal(str(w, "node"), cfg.node_id);
	expect_none(s);
	assert_int_equal(hub_named_session_count(hub), 1);
	assert_int_equal(fk.nwoken, 1);
	assert_ptr_equal(fk.woken[0], s->conn);
}

static void test_commands_before_hello_are_not_authenticated(void **state)
{
	struct session *s;

	start();
	s = connect_();
	in(s, "{\"type\":\"ping\",\"ref\":\"p\"}");
	assert_string_equal(str(expect_error(s, "not_authenticated"), "ref"), "p");
	in(s, "{\"type\":\"join\",\"room\":\"r\"}");
	expect_error(s, "not_authenticated");
	send_msg(s, "r", "1", "x");
	expect_error(s, "not_authenticated");
	expect_none(s);
	assert_int_equal(fk.nclosed, 0);      /* the connection stays open */
	assert_int_equal(metrics.errors[PROTO_ERR_NOT_AUTHENTICATED], 3);
	in(s, "{\"type\":\"hello\",\"name\":\"alice\"}");
	expect(s, "welcome");
}

static void test_hello_twice_is_bad_request(void **state)
{
	struct session *s;

	start();
	s = login("alice");
	in(s, "{\"type\":\"hello\",\"name\":\"bob\"}");
	expect_error(s, "bad_request");
	assert_string_equal(s->name, "alice");
}

static void test_bad_frame_is_an_error_not_a_close(void **state)
{
	struct session *s;

	start();
	s = login("alice");
	in(s, "{not json");
	expect_error(s, "bad_request");
	in(s, "{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"%*s\",\"ref\":\"big\"}",
	   (int)cfg.max_message_bytes + 1, "x");
	assert_string_equal(str(expect_error(s, "too_large"), "ref"), "big");
	assert_int_equal(fk.nclosed, 0);
	in(s, "{\"type\":\"ping\"}");
	expect(s, "pong");
}

static void test_duplicate_name_is_conflict(void **state)
{
	struct session *a, *b;

	start();
	a = login("alice");
	b = connect_();
	in(b, "{\"type\":\"hello\",\"name\":\"alice\",\"ref\":\"x\"}");
	assert_string_equal(str(expect_error(b, "conflict"), "ref"), "x");
	assert_int_equal(hub_named_session_count(hub), 1);
	/* once the first is gone the name is free again */
	hub_session_unregister(hub, a);
	in(b, "{\"type\":\"hello\",\"name\":\"alice\"}");
	expect(b, "welcome");
}

static void test_sessions_per_name_2_allows_two_sessions(void **state)
{
	struct session *a1, *a2, *b;
	cJSON *m;

	cfg.sessions_per_name = 2;
	start();
	a1 = login("alice");
	a2 = login("alice");
	b = connect_();
	in(b, "{\"type\":\"hello\",\"name\":\"alice\"}");
	expect_error(b, "conflict");
	in(b, "{\"type\":\"hello\",\"name\":\"bob\"}");
	expect(b, "welcome");
	assert_int_equal(hub_named_session_count(hub), 3);

	/* members lists a shared name once */
	join(a1, "r");
	join(a2, "r");
	in(a2, "{\"type\":\"members\",\"room\":\"r\"}");
	m = expect(a2, "members");
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(m, "names")), 1);
	assert_true(names_contain(cJSON_GetObjectItem(m, "names"), "alice"));

	/* a dm reaches every session of the name */
	drain(a1);
	in(b, "{\"type\":\"dm\",\"to\":\"alice\",\"id\":\"d\",\"body\":\"hi\"}");
	expect(b, "ack");
	assert_string_equal(str(expect(a1, "direct"), "body"), "hi");
	assert_string_equal(str(expect(a2, "direct"), "body"), "hi");
}

/* ---- join / leave / members / ping -------------------------------------- */

static void test_join_replies_joined_and_others_get_presence(void **state)
{
	struct session *a, *b;
	cJSON *j, *p;

	start();
	a = login("alice");
	in(a, "{\"type\":\"join\",\"room\":\"lobby\",\"ref\":\"j1\"}");
	j = expect(a, "joined");
	assert_string_equal(str(j, "room"), "lobby");
	assert_string_equal(str(j, "ref"), "j1");
	assert_true(num(j, "seq") == 0);
	assert_true(strlen(str(j, "epoch")) > 0);
	assert_false(has(j, "recovered"));
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "members")), 1);
	assert_int_equal(hub_room_count(hub), 1);

	b = login("bob");
	j = join(b, "lobby");
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "members")), 2);
	assert_true(names_contain(cJSON_GetObjectItem(j, "members"), "alice"));
	assert_true(names_contain(cJSON_GetObjectItem(j, "members"), "bob"));
	p = expect(a, "presence");
	assert_string_equal(str(p, "room"), "lobby");
	assert_string_equal(str(p, "name"), "bob");
	assert_string_equal(str(p, "state"), "join");
	expect_none(a);
	expect_none(b);

	/* joining again: joined again, no presence */
	join(b, "lobby");
	expect_none(a);
}

static void test_leave_replies_left_and_others_get_presence_leave(void **state)
{
	struct session *a, *b;
	cJSON *p;

	start();
	a = login("alice");
	b = login("bob");
	join(a, "lobby");
	join(b, "lobby");
	drain(a);
	in(b, "{\"type\":\"leave\",\"room\":\"lobby\",\"ref\":\"l\"}");
	assert_string_equal(str(expect(b, "left"), "ref"), "l");
	p = expect(a, "presence");
	assert_string_equal(str(p, "name"), "bob");
	assert_string_equal(str(p, "state"), "leave");
	/* leaving again: not a member */
	in(b, "{\"type\":\"leave\",\"room\":\"lobby\"}");
	expect_error(b, "not_found");
	in(b, "{\"type\":\"leave\",\"room\":\"nowhere\"}");
	expect_error(b, "not_found");
	/* the last member leaving a room that never had a message forgets it */
	in(a, "{\"type\":\"leave\",\"room\":\"lobby\"}");
	expect(a, "left");
	expect_none(b);
	assert_int_equal(hub_room_count(hub), 0);
}

static void test_members_and_ping(void **state)
{
	struct session *a, *b;
	cJSON *m;

	start();
	a = login("alice");
	b = login("bob");
	join(a, "r");
	join(b, "r");
	in(a, "{\"type\":\"ping\",\"ref\":\"p\"}");
	drain(a);
	in(a, "{\"type\":\"members\",\"room\":\"r\",\"ref\":\"m\"}");
	m = expect(a, "members");
	assert_string_equal(str(m, "room"), "r");
	assert_string_equal(str(m, "ref"), "m");
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(m, "names")), 2);
	in(a, "{\"type\":\"ping\",\"ref\":\"p2\"}");
	assert_string_equal(str(expect(a, "pong"), "ref"), "p2");
}

static void test_members_and_history_require_membership(void **state)
{
	struct session *a, *b;

	start();
	a = login("alice");
	b = login("bob");
	join(a, "r");
	in(b, "{\"type\":\"members\",\"room\":\"r\"}");
	expect_error(b, "forbidden");
	in(b, "{\"type\":\"history\",\"room\":\"r\",\"ref\":\"h\"}");
	assert_string_equal(str(expect_error(b, "forbidden"), "ref"), "h");
	in(b, "{\"type\":\"history\",\"room\":\"nowhere\"}");
	expect_error(b, "forbidden");
}

/* ---- send --------------------------------------------------------------- */

static void test_send_acks_and_every_member_gets_messages_in_order(void **state)
{
	struct session *s[3];
	const char *names[3] = { "alice", "bob", "carol" };
	cJSON *o;
	int i, k;

	start();
	for (i = 0; i < 3; i++) {
		s[i] = login(names[i]);
		join(s[i], "r");
	}
	for (i = 0; i < 3; i++)
		drain(s[i]);
	in(s[0], "{\"type\":\"send\",\"room\":\"r\",\"id\":\"m1\",\"body\":\"one\",\"ref\":\"x\"}");
	send_msg(s[1], "r", "m2", "two");
	send_msg(s[0], "r", "m3", "three \\\"q\\\"");

	o = expect(s[0], "ack");
	assert_string_equal(str(o, "id"), "m1");
	assert_string_equal(str(o, "room"), "r");
	assert_true(num(o, "seq") == 1);
	assert_string_equal(str(o, "ref"), "x");

	for (i = 0; i < 3; i++) {
		static const char *const ids[3] = { "m1", "m2", "m3" };
		static const char *const from[3] = { "alice", "bob", "alice" };
		static const char *const body[3] = { "one", "two", "three \"q\"" };
		for (k = 0; k < 3; k++) {
			/* the sender's ack comes right before its own copy */
			if ((i == 0 && k == 2) || (i == 1 && k == 1)) {
				o = expect(s[i], "ack");
				assert_true(num(o, "seq") == k + 1);
			}
			o = expect(s[i], "message");
			assert_string_equal(str(o, "room"), "r");
			assert_true(num(o, "seq") == k + 1);
			assert_string_equal(str(o, "from"), from[k]);
			assert_string_equal(str(o, "id"), ids[k]);
			assert_string_equal(str(o, "body"), body[k]);
			assert_true(num(o, "ts") == 1000500);
		}
		expect_none(s[i]);
	}
	assert_int_equal(metrics.messages_in, 3);
	assert_int_equal(metrics.messages_out, 9);
}

static uint64_t delivery_observations(void)
{
	uint64_t n = 0;
	int i;

	for (i = 0; i <= METRICS_BUCKETS; i++)
		n += metrics.delivery.count[i];
	return n;
}

/* The delivery histogram sees message events only, with the time they
 * waited from being queued (the loop's time then) to being consumed. */
static void test_delivery_histogram_measures_the_wait_of_message_events(void **state)
{
	struct session *a, *b;

	start();
	a = login("alice");
	b = login("bob");
	join(a, "r");
	join(b, "r");
	drain(a);
	drain(b);
	assert_int_equal(delivery_observations(), 0);   /* replies, presence: not measured */

	send_msg(a, "r", "m1", "hi");
	fk.now += 0.03;                                    /* written 30 ms later */
	expect(a, "ack");
	expect(a, "message");
	expect(b, "message");
	assert_int_equal(delivery_observations(), 2);      /* one per recipient */
	assert_int_equal(metrics.delivery.count[6], 2);    /* (0.025, 0.05] */
	assert_true(metrics.delivery.sum > 0.059 && metrics.delivery.sum < 0.061);

	in(b, "{\"type\":\"dm\",\"to\":\"alice\",\"id\":\"d1\",\"body\":\"psst\"}");
	fk.now += 2.0;
	expect(a, "direct");
	drain(b);
	assert_int_equal(delivery_observations(), 3);
	assert_int_equal(metrics.delivery.count[11], 1);   /* (1, 2.5] */
}

static void test_resend_of_an_accepted_id_gets_same_ack_and_no_broadcast(void **state)
{
	struct session *a, *b;
	cJSON *o;

	start();
	a = login("alice");
	b = login("bob");
	join(a, "r");
	join(b, "r");
	drain(a);
	send_msg(a, "r", "m1", "hello");
	send_msg(a, "r", "m2", "again");
	drain(a);
	drain(b);
	in(a, "{\"type\":\"send\",\"room\":\"r\",\"id\":\"m1\",\"body\":\"hello\",\"ref\":\"retry\"}");
	o = expect(a, "ack");
	assert_string_equal(str(o, "id"), "m1");
	assert_true(num(o, "seq") == 1);
	assert_string_equal(str(o, "ref"), "retry");
	expect_none(a);
	expect_none(b);
	assert_int_equal(metrics.messages_in, 2);
	/* the same id from another sender is a different message */
	send_msg(b, "r", "m1", "mine");
	assert_true(num(expect(b, "ack"), "seq") == 3);
	assert_true(num(expect(a, "message"), "seq") == 3);
}

static void test_dedup_survives_reconnect_under_the_same_name(void **state)
{
	struct session *a, *b, *a2;
	cJSON *o;

	start();
	a = login("alice");
	b = login("bob");
	join(a, "r");
	join(b, "r");
	send_msg(a, "r", "m1", "hello");
	hub_session_unregister(hub, a);
	drain(b);

	a2 = login("alice");
	join(a2, "r");
	drain(b);
	send_msg(a2, "r", "m1", "hello");
	o = expect(a2, "ack");
	assert_true(num(o, "seq") == 1);
	assert_string_equal(str(o, "room"), "r");
	expect_none(a2);
	expect_none(b);
}

static void test_send_when_not_a_member_is_forbidden(void **state)
{
	struct session *a, *b;

	start();
	a = login("alice");
	b = login("bob");
	join(a, "r");
	in(b, "{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"x\",\"ref\":\"f\"}");
	assert_string_equal(str(expect_error(b, "forbidden"), "ref"), "f");
	send_msg(b, "nowhere", "1", "x");
	expect_error(b, "forbidden");
	expect_none(a);
	assert_int_equal(metrics.messages_in, 0);
}

/* ---- dm ----------------------------------------------------------------- */

static void test_dm_acks_and_delivers_direct(void **state)
{
	struct session *a, *b;
	cJSON *o;

	start();
	a = login("alice");
	b = login("bob");
	in(a, "{\"type\":\"dm\",\"to\":\"bob\",\"id\":\"d1\",\"body\":\"psst\",\"ref\":\"r\"}");
	o = expect(a, "ack");
	assert_string_equal(str(o, "id"), "d1");
	assert_string_equal(str(o, "ref"), "r");
	/* The dm is message 1 of the conversation of alice and bob. */
	assert_string_equal(str(o, "room"), "@alice:bob");
	assert_true(num(o, "seq") == 1);
	expect_none(a);
	o = expect(b, "direct");
	assert_string_equal(str(o, "from"), "alice");
	assert_string_equal(str(o, "id"), "d1");
	assert_string_equal(str(o, "body"), "psst");
	assert_true(num(o, "ts") == 1000500);
	assert_string_equal(str(o, "room"), "@alice:bob");
	assert_true(num(o, "seq") == 1);
	expect_none(b);
}

static void test_dm_to_offline_name_is_not_found(void **state)
{
	struct session *a, *b;

	start();
	a = login("alice");
	b = connect_();     /* connected but never said hello: not a name */
	in(a, "{\"type\":\"dm\",\"to\":\"carol\",\"id\":\"d1\",\"body\":\"x\",\"ref\":\"n\"}");
	assert_string_equal(str(expect_error(a, "not_found"), "ref"), "n");
	expect_none(a);
	expect_none(b);
	assert_int_equal(metrics.messages_in, 0);
}


/* ---- history ------------------------------------------------------------ */

static void expect_history(struct session *s, const char *req, int first, int count)
{
	cJSON *h, *msgs, *it;
	int seq = first;

	in(s, "%s", req);
	h = expect(s, "history");
	assert_string_equal(str(h, "room"), "r");
	msgs = cJSON_GetObjectItem(h, "messages");
	assert_true(cJSON_IsArray(msgs));
	if (cJSON_GetArraySize(msgs) != count)
		fail_msg("%s: %d messages, want %d", req, cJSON_GetArraySize(msgs), count);
	cJSON_ArrayForEach(it, msgs) {
		char body[16];
		snprintf(body, sizeof body, "b%d", seq);
		assert_string_equal(str(it, "type"), "message");
		assert_true(num(it, "seq") == seq);
		assert_string_equal(str(it, "body"), body);
		assert_string_equal(str(it, "from"), "alice");
		seq++;
	}
}

static void test_history_before_after_limit(void **state)
{
	struct session *a;
	char id[16], body[16];
	int i;

	start();
	a = login("alice");
	join(a, "r");
	for (i = 1; i <= 10; i++) {
		snprintf(id, sizeof id, "m%d", i);
		snprintf(body, sizeof body, "b%d", i);
		send_msg(a, "r", id, body);
	}
	drain(a);
	expect_history(a, "{\"type\":\"history\",\"room\":\"r\"}", 1, 10);
	expect_history(a, "{\"type\":\"history\",\"room\":\"r\",\"limit\":3}", 8, 3);
	expect_history(a, "{\"type\":\"history\",\"room\":\"r\",\"before\":5,\"limit\":2}", 3, 2);
	expect_history(a, "{\"type\":\"history\",\"room\":\"r\",\"before\":5}", 1, 4);
	expect_history(a, "{\"type\":\"history\",\"room\":\"r\",\"before\":1}", 1, 0);
	expect_history(a, "{\"type\":\"history\",\"room\":\"r\",\"before\":100,\"limit\":2}", 9, 2);
	expect_history(a, "{\"type\":\"history\",\"room\":\"r\",\"after\":5,\"limit\":2}", 6, 2);
	expect_history(a, "{\"type\":\"history\",\"room\":\"r\",\"after\":8}", 9, 2);
	expect_history(a, "{\"type\":\"history\",\"room\":\"r\",\"after\":0,\"limit\":1}", 1, 1);
	expect_history(a, "{\"type\":\"history\",\"room\":\"r\",\"after\":10}", 11, 0);
	expect_none(a);
}

static void test_history_only_returns_what_the_ring_holds(void **state)
{
	struct session *a;
	char id[16], body[16];
	int i;

	cfg.messages_per_room = 4;
	start();
	a = login("alice");
	join(a, "r");
	for (i = 1; i <= 10; i++) {
		snprintf(id, sizeof id, "m%d", i);
		snprintf(body, sizeof body, "b%d", i);
		send_msg(a, "r", id, body);
	}
	drain(a);
	expect_history(a, "{\"type\":\"history\",\"room\":\"r\"}", 7, 4);
	expect_history(a, "{\"type\":\"history\",\"room\":\"r\",\"after\":2,\"limit\":2}", 7, 2);
	expect_history(a, "{\"type\":\"history\",\"room\":\"r\",\"before\":6}", 1, 0);
}

/* ---- join with since ---------------------------------------------------- */

/* alice joins r and sends n messages b1..bn; returns the room's epoch. */
static const char *room_with_messages(struct session **alice, int n)
{
	const char *epoch;
	char id[16], body[16];
	int i;

	*alice = login("alice");
	epoch = str(join(*alice, "r"), "epoch");
	for (i = 1; i <= n; i++) {
		snprintf(id, sizeof id, "m%d", i);
		snprintf(body, sizeof body, "b%d", i);
		send_msg(*alice, "r", id, body);
	}
	drain(*alice);
	return epoch;
}

static void test_join_since_replays_missed_messages_then_recovered(void **state)
{
	struct session *a, *b;
	const char *epoch;
	cJSON *j;
	int seq;

	start();
	epoch = room_with_messages(&a, 5);
	b = login("bob");
	in(b, "{\"type\":\"join\",\"room\":\"r\",\"since\":2,\"epoch\":\"%s\",\"ref\":\"s\"}", epoch);
	for (seq = 3; seq <= 5; seq++)
		assert_true(num(expect(b, "message"), "seq") == seq);
	j = expect(b, "joined");
	assert_true(num(j, "seq") == 5);
	assert_string_equal(str(j, "epoch"), epoch);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "recovered")));
	assert_false(has(j, "truncated"));
	assert_string_equal(str(j, "ref"), "s");
	expect_none(b);
	assert_string_equal(str(expect(a, "presence"), "name"), "bob");
}

static void test_join_since_latest_seq_replays_nothing_and_recovers(void **state)
{
	struct session *a, *b;
	const char *epoch;
	cJSON *j;

	start();
	epoch = room_with_messages(&a, 3);
	b = login("bob");
	in(b, "{\"type\":\"join\",\"room\":\"r\",\"since\":3,\"epoch\":\"%s\"}", epoch);
	j = expect(b, "joined");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "recovered")));
	expect_none(b);
}

static void test_join_since_with_another_epoch_is_not_recovered(void **state)
{
	struct session *a, *b;
	cJSON *j;

	start();
	room_with_messages(&a, 5);
	b = login("bob");
	in(b, "{\"type\":\"join\",\"room\":\"r\",\"since\":2,\"epoch\":\"0000000000000000\"}");
	j = expect(b, "joined");     /* nothing replayed */
	assert_true(num(j, "seq") == 5);
	assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "recovered")));
	expect_none(b);
}

static void test_join_since_a_gap_older_than_the_ring_is_not_recovered(void **state)
{
	struct session *a, *b;
	const char *epoch;
	cJSON *j;
	int seq;

	cfg.messages_per_room = 3;
	start();
	epoch = room_with_messages(&a, 6);
	b = login("bob");
	in(b, "{\"type\":\"join\",\"room\":\"r\",\"since\":1,\"epoch\":\"%s\"}", epoch);
	for (seq = 4; seq <= 6; seq++)      /* what is still held */
		assert_true(num(expect(b, "message"), "seq") == seq);
	j = expect(b, "joined");
	assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "recovered")));
	expect_none(b);
}

static void test_join_since_of_a_new_room_with_an_old_epoch_is_not_recovered(void **state)
{
	struct session *b;
	cJSON *j;

	start();
	b = login("bob");
	in(b, "{\"type\":\"join\",\"room\":\"fresh\",\"since\":7,\"epoch\":\"deadbeefdeadbeef\"}");
	j = expect(b, "joined");
	assert_true(num(j, "seq") == 0);
	assert_string_not_equal(str(j, "epoch"), "deadbeefdeadbeef");
	assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "recovered")));
}

/* ---- rate limit --------------------------------------------------------- */

static void test_rate_limit_burst_then_limited_then_refill(void **state)
{
	struct session *a;
	int i;

	cfg.rate = 1;
	cfg.burst = 3;
	start();
	a = login("alice");                 /* hello takes a token */
	in(a, "{\"type\":\"ping\"}");
	in(a, "{\"type\":\"ping\"}");
	expect(a, "pong");
	expect(a, "pong");
	in(a, "{\"type\":\"ping\",\"ref\":\"rl\"}");
	assert_string_equal(str(expect_error(a, "rate_limited"), "ref"), "rl");
	assert_int_equal(metrics.rate_limited, 1);
	assert_int_equal(fk.nclosed, 0);

	fk.now += 1.0;                      /* one token back */
	in(a, "{\"type\":\"ping\"}");
	expect(a, "pong");
	in(a, "{\"type\":\"ping\"}");
	expect_error(a, "rate_limited");

	fk.now += 100.0;                    /* refills up to burst, not beyond */
	for (i = 0; i < 3; i++) {
		in(a, "{\"type\":\"ping\"}");
		expect(a, "pong");
	}
	in(a, "{\"type\":\"ping\"}");
	expect_error(a, "rate_limited");
	assert_int_equal(metrics.rate_limited, 3);
}

/* ---- slow consumers ----------------------------------------------------- */

static void test_slow_consumer_is_closed_while_others_get_every_message(void **state)
{
	struct session *slow, *b;
	char id[16];
	int i;

	cfg.send_queue_messages = 5;
	start();
	slow = login("slow");
	b = login("bob");
	join(slow, "r");
	join(b, "r");
	/* slow never drains from here on (bob's presence join is queued);
	 * bob drains after every send and gets every ack and message */
	for (i = 1; i <= 10; i++) {
		snprintf(id, sizeof id, "m%d", i);
		send_msg(b, "r", id, "x");
		assert_true(num(expect(b, "ack"), "seq") == i);
		assert_true(num(expect(b, "message"), "seq") == i);
		expect_none(b);
		assert_true(slow->q.count <= 5);        /* never overshot */
	}
	assert_int_equal(fk.nclosed, 1);
	assert_ptr_equal(fk.closes[0].conn, slow->conn);
	assert_int_equal(fk.closes[0].code, 1008);
	assert_string_equal(fk.closes[0].reason, "slow consumer");
	assert_int_equal(metrics.slow_consumer_closes, 1);
	/* nothing more is queued to a closing session, its queue is released */
	expect_none(slow);
	assert_int_equal(hub_queue_bytes(hub), 0);
	/* the closed session's input is ignored too */
	in(slow, "{\"type\":\"ping\"}");
	expect_none(slow);
}

static void test_slow_consumer_byte_bound_closes(void **state)
{
	struct session *slow, *b;
	char id[16], body[200];
	int i;

	cfg.send_queue_bytes = 1024;
	start();
	slow = login("slow");
	b = login("bob");
	join(slow, "r");
	join(b, "r");
	memset(body, 'z', 150);
	body[150] = '\0';
	for (i = 1; i <= 10; i++) {
		snprintf(id, sizeof id, "m%d", i);
		send_msg(b, "r", id, body);
		assert_int_equal(drain(b), 2);          /* ack + message */
		assert_true(slow->q.bytes <= 1024);     /* never overshot */
	}
	assert_int_equal(fk.nclosed, 1);
	assert_int_equal(closes_of(slow->conn), 1);
	assert_int_equal(fk.closes[0].code, 1008);
	assert_int_equal(metrics.slow_consumer_closes, 1);
}

static void test_drop_oldest_keeps_the_newest_messages_and_counts_drops(void **state)
{
	struct session *slow, *b;
	char id[16];
	int i;

	cfg.send_queue_messages = 4;
	cfg.slow_consumer = CONFIG_SLOW_DROP_OLDEST;
	start();
	slow = login("slow");
	b = login("bob");
	join(slow, "r");
	join(b, "r");
	drain(slow);
	for (i = 1; i <= 10; i++) {
		snprintf(id, sizeof id, "m%d", i);
		send_msg(b, "r", id, "x");
		drain(b);
	}
	assert_int_equal(fk.nclosed, 0);
	assert_int_equal(metrics.slow_consumer_closes, 0);
	assert_int_equal(metrics.slow_consumer_drops, 6);
	for (i = 7; i <= 10; i++)
		assert_true(num(expect(slow, "message"), "seq") == i);
	expect_none(slow);
}

static void test_drop_oldest_never_drops_replies(void **state)
{
	struct session *slow, *b;
	int i;

	cfg.send_queue_messages = 4;
	cfg.slow_consumer = CONFIG_SLOW_DROP_OLDEST;
	start();
	slow = login("slow");
	b = login("bob");
	join(slow, "r");
	join(b, "r");
	drain(slow);
	for (i = 0; i < 4; i++)             /* four pongs fill the queue */
		in(slow, "{\"type\":\"ping\"}");
	send_msg(b, "r", "m1", "x");
	/* no message event to drop: the policy has to close */
	assert_int_equal(closes_of(slow->conn), 1);
	assert_int_equal(metrics.slow_consumer_closes, 1);
	assert_int_equal(metrics.slow_consumer_drops, 0);
}

static void test_global_cap_handles_the_largest_queue_first(void **state)
{
	struct session *big, *small, *sender;
	char id[16], body[128];
	int i, seq, first_unread;
	cJSON *o;

	cfg.total_queue_bytes = 4000;
	start();
	big = login("big");
	small = login("small");
	sender = login("sender");
	join(big, "r");
	join(small, "r");
	join(sender, "r");
	drain(small);
	memset(body, 'b', 100);
	body[100] = '\0';
	/* phase 1: only big lags */
	for (i = 1; i <= 8; i++) {
		snprintf(id, sizeof id, "m%d", i);
		send_msg(sender, "r", id, body);
		drain(sender);
		drain(small);
	}
	assert_int_equal(fk.nclosed, 0);
	first_unread = i;
	/* phase 2: small lags too, until the global cap bites */
	for (; i <= 30 && fk.nclosed == 0; i++) {
		snprintf(id, sizeof id, "m%d", i);
		send_msg(sender, "r", id, body);
		drain(sender);
		assert_true(hub_queue_bytes(hub) <= 4000);
	}
	assert_int_equal(fk.nclosed, 1);
	assert_ptr_equal(fk.closes[0].conn, big->conn);
	assert_int_equal(fk.closes[0].code, 1008);
	assert_string_equal(fk.closes[0].reason, "slow consumer");
	assert_int_equal(metrics.slow_consumer_closes, 1);
	assert_true(small->q.count > 1);
	/* the smaller queue kept every message */
	for (seq = first_unread; seq < i; seq++) {
		o = expect(small, "message");
		assert_true(num(o, "seq") == seq);
	}
	expect_none(small);
}

static void test_global_cap_with_drop_oldest_drops_from_the_largest(void **state)
{
	struct session *big, *small, *sender;
	char id[16], body[128];
	int i;

	cfg.total_queue_bytes = 4000;
	cfg.slow_consumer = CONFIG_SLOW_DROP_OLDEST;
	start();
	big = login("big");
	small = login("small");
	sender = login("sender");
	join(big, "r");
	join(small, "r");
	join(sender, "r");
	drain(small);
	memset(body, 'b', 100);
	body[100] = '\0';
	for (i = 1; i <= 30; i++) {
		snprintf(id, sizeof id, "m%d", i);
		send_msg(sender, "r", id, body);
		drain(sender);
		drain(small);
		assert_true(hub_queue_bytes(hub) <= 4000);
	}
	assert_int_equal(fk.nclosed, 0);
	assert_true(metrics.slow_consumer_drops > 0);
	/* big keeps a suffix of the stream ending with the newest message */
	{
		cJSON *o, *last = NULL;
		int prev = 0;
		while ((o = next(big))) {
			if (strcmp(str(o, "type"), "message") != 0)
				continue;
			if (prev)
				assert_true(num(o, "seq") == prev + 1);
			prev = (int)num(o, "seq");
			last = o;
		}
		assert_non_null(last);
		assert_true(num(last, "seq") == 30);
	}
}

/* ---- unregister --------------------------------------------------------- */

static void test_unregister_sends_presence_leave_and_frees_everything(void **state)
{
	struct session *a, *b, *c;
	cJSON *p;

	start();
	a = login("alice");
	b = login("bob");
	c = login("carol");
	join(a, "r");
	join(a, "quiet");
	join(b, "r");
	join(c, "r");
	send_msg(b, "r", "m1", "for everyone");
	drain(b);
	drain(c);
	assert_true(hub_queue_bytes(hub) > 0);       /* alice never drained */
	assert_int_equal(hub_room_count(hub), 2);

	hub_session_unregister(hub, a);
	assert_int_equal(hub_named_session_count(hub), 2);
	assert_int_equal(hub_room_count(hub), 1);    /* "quiet" had no message */
	p = expect(b, "presence");
	assert_string_equal(str(p, "name"), "alice");
	assert_string_equal(str(p, "state"), "leave");
	p = expect(c, "presence");
	assert_string_equal(str(p, "state"), "leave");
	expect_none(b);
	assert_int_equal(hub_queue_bytes(hub), 0);

	in(b, "{\"type\":\"members\",\"room\":\"r\"}");
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(expect(b, "members"), "names")), 2);

	hub_session_unregister(hub, b);
	hub_session_unregister(hub, c);
	assert_int_equal(hub_named_session_count(hub), 0);
	assert_int_equal(hub_queue_bytes(hub), 0);
	assert_int_equal(hub_queue_messages(hub), 0);
	assert_int_equal(hub_room_count(hub), 1);    /* rooms with history stay */
	assert_int_equal(fk.nclosed, 0);
	hub_free(hub);
	hub = NULL;
	assert_int_equal(msgbuf_live(), 0);
}

static void test_hub_free_releases_sessions_still_registered(void **state)
{
	struct session *a, *b;

	start();
	a = login("alice");
	b = connect_();
	join(a, "r");
	send_msg(a, "r", "m1", "x");
	in(b, "{\"type\":\"ping\"}");
	assert_true(msgbuf_live() > 0);
	hub_free(hub);
	hub = NULL;
	assert_int_equal(msgbuf_live(), 0);
}

/* ---- deferred engine ---------------------------------------------------- */

static struct {
	struct hub_pending *held[16];
	int n;
	uint64_t seq;
} eng;

static void eng_submit(void *ctx, struct hub *h, struct hub_pending *p)
{
	(void)ctx;
	(void)h;
	assert_true(eng.n < 16);
	assert_int_equal(p->seq, ++eng.seq);  /* the hub hands out seqs in order */
	p->ts = 777;
	eng.held[eng.n++] = p;
}

static void start_with_deferred_engine(void)
{
	struct hub_engine e = { .submit = eng_submit };

	memset(&eng, 0, sizeof eng);
	start();
	hub_set_engine(hub, &e);
}

static void test_deferred_engine_acks_and_broadcasts_at_commit(void **state)
{
	struct session *a, *b;
	struct hub_pending *p;
	cJSON *o;

	start_with_deferred_engine();
	a = login("alice");
	b = login("bob");
	join(a, "r");
	join(b, "r");
	drain(a);
	in(a, "{\"type\":\"send\",\"room\":\"r\",\"id\":\"m1\",\"body\":\"later\",\"ref\":\"q\"}");
	assert_int_equal(eng.n, 1);
	p = eng.held[0];
	assert_int_equal(p->sender, a->num);
	assert_string_equal(p->from, "alice");
	assert_string_equal(p->room, "r");
	assert_string_equal(p->id, "m1");
	assert_string_equal(p->body, "later");
	assert_int_equal(p->body_len, 5);
	assert_true(p->has_ref);
	expect_none(a);                     /* nothing until the commit */
	expect_none(b);

	hub_append_done(hub, p, PROTO_OK);
	hub_pending_free(p);
	o = expect(a, "ack");
	assert_true(num(o, "seq") == 1);
	assert_string_equal(str(o, "ref"), "q");
	assert_true(num(expect(a, "message"), "ts") == 777);
	o = expect(b, "message");
	assert_string_equal(str(o, "body"), "later");
	assert_true(num(o, "seq") == 1);
}

static void test_deferred_commit_after_the_sender_is_gone_still_broadcasts(void **state)
{
	struct session *a, *b;
	cJSON *o;

	start_with_deferred_engine();
	a = login("alice");
	b = login("bob");
	join(a, "r");
	join(b, "r");
	send_msg(a, "r", "m1", "orphan");
	assert_int_equal(eng.n, 1);
	hub_session_unregister(hub, a);
	assert_string_equal(str(expect(b, "presence"), "state"), "leave");

	hub_append_done(hub, eng.held[0], PROTO_OK);
	hub_pending_free(eng.held[0]);
	o = expect(b, "message");
	assert_string_equal(str(o, "from"), "alice");
	assert_string_equal(str(o, "id"), "m1");
	assert_string_equal(str(o, "body"), "orphan");
	assert_true(num(o, "seq") == 1);
	expect_none(b);
	assert_int_equal(metrics.messages_in, 1);
	/* the room moved on: a rejoin sees seq 1 */
	assert_true(num(join(b, "r"), "seq") == 1);
}

static void test_deferred_commit_does_not_ack_a_new_session_with_the_same_name(void **state)
{
	struct session *a, *a2, *b;

	start_with_deferred_engine();
	a = login("alice");
	b = login("bob");
	join(a, "r");
	join(b, "r");
	send_msg(a, "r", "m1", "x");
	hub_session_unregister(hub, a);
	a2 = login("alice");
	join(a2, "r");
	drain(b);
	hub_append_done(hub, eng.held[0], PROTO_OK);
	hub_pending_free(eng.held[0]);
	/* a2 is a member so it gets the message, but no ack: it did not send */
	assert_true(num(expect(a2, "message"), "seq") == 1);
	expect_none(a2);
	assert_true(num(expect(b, "message"), "seq") == 1);
}

static void test_deferred_commit_failure_answers_the_sender_only(void **state)
{
	struct session *a, *b;

	start_with_deferred_engine();
	a = login("alice");
	b = login("bob");
	join(a, "r");
	join(b, "r");
	drain(a);
	in(a, "{\"type\":\"send\",\"room\":\"r\",\"id\":\"m1\",\"body\":\"x\",\"ref\":\"e\"}");
	hub_append_done(hub, eng.held[0], PROTO_ERR_UNAVAILABLE);
	hub_pending_free(eng.held[0]);
	assert_string_equal(str(expect_error(a, "unavailable"), "ref"), "e");
	expect_none(a);
	expect_none(b);
	assert_int_equal(metrics.messages_in, 0);
}

static void test_failed_commit_gives_its_seq_back(void **state)
{
	struct session *a, *b;

	start_with_deferred_engine();
	a = login("alice");
	b = login("bob");
	join(a, "r");
	join(b, "r");
	drain(a);
	drain(b);
	send_msg(a, "r", "m1", "lost");
	send_msg(a, "r", "m2", "lost too");
	hub_append_done(hub, eng.held[0], PROTO_ERR_UNAVAILABLE);
	hub_pending_free(eng.held[0]);
	hub_append_done(hub, eng.held[1], PROTO_ERR_UNAVAILABLE);
	hub_pending_free(eng.held[1]);
	expect_error(a, "unavailable");
	expect_error(a, "unavailable");
	expect_none(b);
	/* nothing was stored, so the next message takes seq 1: no gap */
	eng.n = 0;
	eng.seq = 0;
	send_msg(a, "r", "m3", "kept");
	hub_append_done(hub, eng.held[0], PROTO_OK);
	hub_pending_free(eng.held[0]);
	assert_true(num(expect(a, "ack"), "seq") == 1);
	assert_true(num(expect(b, "message"), "seq") == 1);
}

static void test_deferred_commit_failure_after_the_sender_is_gone(void **state)
{
	struct session *a, *b;

	start_with_deferred_engine();
	a = login("alice");
	b = login("bob");
	join(a, "r");
	join(b, "r");
	drain(b);
	send_msg(a, "r", "m1", "x");
	hub_session_unregister(hub, a);
	drain(b);
	hub_append_done(hub, eng.held[0], PROTO_ERR_INTERNAL);
	hub_pending_free(eng.held[0]);
	expect_none(b);
}

/* ---- a fake asynchronous engine ---------------------------------------- */

/*
 * An engine that keeps the hub's seqs and does nothing inside the hub's calls: appends wait
 * until the test completes them (per room in order, across rooms in any
 * order), room loads wait until the test finishes them, and reads and
 * appends can be made to fail. What it stored, it keeps, so that loads and
 * reads return it; `oldest` says what it still holds.
 */
#define FE_MAX 256

static struct {
	struct hub_pending *held[FE_MAX];
	int nheld;
	struct fake_store store;
	char loading[8][PROTO_ROOM_MAX + 1];
	int nloading;
	int slow_load;      /* room_load answers later, through fe_finish_load */
	int reads, loads;
} fe;

static void fe_submit(void *ctx, struct hub *h, struct hub_pending *p)
{
	(void)ctx;
	(void)h;
	assert_true(fe.nheld < FE_MAX);
	fe.held[fe.nheld++] = p;
}

/* Complete the oldest held append of room with status. */
static void fe_complete(const char *room, enum proto_err status)
{
	int i;

	for (i = 0; i < fe.nheld; i++) {
		struct hub_pending *p = fe.held[i];
		if (strcmp(p->room, room) != 0)
			continue;
		memmove(&fe.held[i], &fe.held[i + 1], sizeof(fe.held[0]) * (size_t)(fe.nheld - i - 1));
		fe.nheld--;
		if (status == PROTO_OK)
			fake_store_add(&fe.store, p);
		hub_append_done(hub, p, status);
		hub_pending_free(p);
		return;
	}
	fail_msg("no append of room %s is held", room);
}

static int fe_room_load(void *ctx, struct hub *h, const char *room)
{
	(void)ctx;
	(void)h;
	fe.loads++;
	if (fe.slow_load) {
		assert_true(fe.nloading < 8);
		snprintf(fe.loading[fe.nloading++], sizeof fe.loading[0], "%s", room);
		return 1;
	}
	assert_int_equal(fake_store_load(&fe.store, hub, room), 0);
	return 0;
}

static void fe_finish_load(int ok)
{
	char room[PROTO_ROOM_MAX + 1];

	assert_true(fe.nloading > 0);
	memcpy(room, fe.loading[0], sizeof room);
	memmove(&fe.loading[0], &fe.loading[1], sizeof(fe.loading[0]) * (size_t)--fe.nloading);
	if (ok)
		assert_int_equal(fake_store_load(&fe.store, hub, room), 0);
	hub_room_loaded(hub, room, ok);
}

static int fe_read(void *ctx, const char *room, uint64_t lo, uint64_t hi, uint32_t max,
		   void (*emit)(void *arg, const struct hub_msg *m), void *arg)
{
	(void)ctx;
	fe.reads++;
	return fake_store_read(&fe.store, room, lo, hi, max, emit, arg);
}

static uint64_t fe_oldest(void *ctx, const char *room)
{
	(void)ctx;
	return fake_store_oldest(&fe.store, room);
}

static void start_with_fake_engine(void)
{
	struct hub_engine e = { .submit = fe_submit, .room_load = fe_room_load, .read = fe_read,
				.oldest = fe_oldest };

	memset(&fe, 0, sizeof fe);
	start();
	hub_set_engine(hub, &e);
}

static void test_fake_engine_completes_rooms_out_of_order(void **state)
{
	struct session *a, *b;

	start_with_fake_engine();
	a = login("alice");
	b = login("bob");
	join(a, "r1");
	join(a, "r2");
	join(b, "r1");
	join(b, "r2");
	drain(a);
	send_msg(a, "r1", "x1", "one");
	send_msg(a, "r2", "y1", "two");
	send_msg(a, "r1", "x2", "three");
	expect_none(a);
	expect_none(b);
	fe_complete("r2", PROTO_OK);
	assert_string_equal(str(expect(b, "message"), "id"), "y1");
	fe_complete("r1", PROTO_OK);
	fe_complete("r1", PROTO_OK);
	assert_string_equal(str(expect(b, "message"), "id"), "x1");
	assert_true(num(expect(b, "message"), "seq") == 2);
	assert_string_equal(str(expect(a, "ack"), "id"), "y1");
	assert_string_equal(str(expect(a, "message"), "id"), "y1");
	assert_string_equal(str(expect(a, "ack"), "id"), "x1");
}

/* conversations_list: an engine that must ask elsewhere. The asks are
 * recorded; the test answers them with hub_conversations_listed. */
static char fe_asked[4][PROTO_NAME_MAX + 1];
static int fe_nasked;
static int fe_list_refuse;

static int fe_conversations_list(void *ctx, const char *name, uint32_t max)
{
	(void)ctx;
	assert_int_equal(max, 500);
	if (fe_list_refuse)
		return -1;
	assert_true(fe_nasked < 4);
	snprintf(fe_asked[fe_nasked++], sizeof fe_asked[0], "%s", name);
	return 0;
}

static void test_conversations_wait_for_the_engines_list(void **state)
{
	struct hub_engine e = { .submit = fe_submit, .room_load = fe_room_load, .read = fe_read,
				.oldest = fe_oldest, .conversations_list = fe_conversations_list };
	const struct hub_conv_entry list[] = {
		{ "@alice:carol", 7, 2 },
		{ "@alice:bob", 3, 0 },
		{ "@bob:carol", 9, 0 },     /* not alice's: left out */
	};
	struct session *a, *a2, *a3;
	const cJSON *c, *x;

	(void)state;
	memset(&fe, 0, sizeof fe);
	fe_nasked = fe_list_refuse = 0;
	cfg.sessions_per_name = 3;
	start();
	hub_set_engine(hub, &e);
	a = login("alice");
	a2 = login("alice");
	a3 = login("alice");
	in(a, "{\"type\":\"conversations\",\"ref\":\"1\"}");
	in(a2, "{\"type\":\"conversations\",\"ref\":\"2\"}");
	in(a, "{\"type\":\"conversations\",\"ref\":\"3\"}");
	in(a3, "{\"type\":\"conversations\",\"ref\":\"4\"}");
	/* One ask for the name, nothing answered inside the command. */
	assert_int_equal(fe_nasked, 1);
	assert_string_equal(fe_asked[0], "alice");
	expect_none(a);
	expect_none(a2);
	hub_session_unregister(hub, a3);      /* gone while waiting: skipped */
	hub_conversations_listed(hub, "nobody", list, 3, 1);   /* no one waits: ignored */
	expect_none(a);
	hub_conversations_listed(hub, "alice", list, 3, 1);
	c = expect(a, "conversations");
	assert_string_equal(str(c, "ref"), "1");
	x = cJSON_GetObjectItem(c, "conversations");
	assert_int_equal(cJSON_GetArraySize(x), 2);
	assert_string_equal(str(cJSON_GetArrayItem(x, 0), "room"), "@alice:carol");
	assert_string_equal(str(cJSON_GetArrayItem(x, 0), "with"), "carol");
	assert_true(num(cJSON_GetArrayItem(x, 0), "seq") == 7);
	assert_true(num(cJSON_GetArrayItem(x, 0), "read") == 2);
	assert_true(num(cJSON_GetArrayItem(x, 0), "unread") == 5);
	assert_string_equal(str(cJSON_GetArrayItem(x, 1), "room"), "@alice:bob");
	assert_string_equal(str(expect(a, "conversations"), "ref"), "3");
	assert_string_equal(str(expect(a2, "conversations"), "ref"), "2");
	expect_none(a);
	/* Answered: the next command asks again. A failed list is answered
	 * from what this hub has seen (nothing here). */
	in(a, "{\"type\":\"conversations\",\"ref\":\"5\"}");
	assert_int_equal(fe_nasked, 2);
	hub_conversations_listed(hub, "alice", NULL, 0, 0);
	c = expect(a, "conversations");
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(c, "conversations")), 0);
	/* An engine that cannot ask now: answered at once, from memory. */
	fe_list_refuse = 1;
	in(a, "{\"type\":\"conversations\",\"ref\":\"6\"}");
	assert_string_equal(str(expect(a, "conversations"), "ref"), "6");
	/* A wait still open at hub_free is released (ASan: no leak). */
	fe_list_refuse = 0;
	in(a2, "{\"type\":\"conversations\",\"ref\":\"7\"}");
	assert_int_equal(fe_nasked, 3);
}

/* A failed append fails its room only: the other room's append completes,
 * the failed seq is given back, and nobody gets the failed message. */
static void test_fake_engine_fails_an_append_in_one_room_only(void **state)
{
	struct session *a, *b;

	start_with_fake_engine();
	a = login("alice");
	b = login("bob");
	join(a, "r1");
	join(a, "r2");
	join(b, "r1");
	join(b, "r2");
	drain(a);
	send_msg(a, "r1", "x1", "lost");
	send_msg(a, "r2", "y1", "kept");
	fe_complete("r1", PROTO_ERR_UNAVAILABLE);
	fe_complete("r2", PROTO_OK);
	expect_error(a, "unavailable");
	assert_string_equal(str(expect(a, "ack"), "id"), "y1");
	assert_string_equal(str(expect(b, "message"), "id"), "y1");
	expect_none(b);
	send_msg(a, "r1", "x2", "again");
	fe_complete("r1", PROTO_OK);
	assert_true(num(expect(b, "message"), "seq") == 1);
}

/* An engine that sequences (the cluster's contract, through the same
 * hub_append_done): its seq replaces the hub's proposal. An answer in order
 * is applied and fanned out at once, and the stream's copy is then ignored;
 * an answer ahead of the stream is acked only, the stream brings the
 * message; the stream reports a gap (-1) instead of delivering out of
 * order, and the engine re-reads. A message whose frame cannot be made is
 * reported as a gap too, and applied on the re-read. */
static struct hub_pending *seq_held[8];
static int seq_nheld;
static struct fake_store seq_store;

static void seq_submit(void *ctx, struct hub *h, struct hub_pending *p)
{
	(void)ctx;
	(void)h;
	assert_true(seq_nheld < 8);
	seq_held[seq_nheld++] = p;
}

/* The hub with that engine, alice (*a) and bob (*b) in room r, whose
 * epoch it returns. */
static const char *start_with_sequencing_engine(struct session **a, struct session **b)
{
	struct hub_engine e = { .submit = seq_submit };
	const char *epoch;

	seq_nheld = 0;
	memset(&seq_store, 0, sizeof seq_store);
	start();
	hub_set_engine(hub, &e);
	*a = login("alice");
	*b = login("bob");
	epoch = str(join(*a, "r"), "epoch");
	join(*b, "r");
	drain(*a);
	return epoch;
}

/* The engine sequences and answers the oldest held append. */
static void seq_complete(enum proto_err status)
{
	struct hub_pending *p = seq_held[0];

	assert_true(seq_nheld > 0);
	memmove(&seq_held[0], &seq_held[1], sizeof(seq_held[0]) * (size_t)--seq_nheld);
	if (status == PROTO_OK || status == PROTO_ERR_UNAVAILABLE)
		fake_store_sequence(&seq_store, p);   /* unavailable: stored, answer lost */
	hub_append_done(hub, p, status);
	hub_pending_free(p);
}

/* A message another node stored in room (the engine's own stream input). */
static void seq_other_node(const char *room, const char *epoch, const char *from, const char *id)
{
	struct hub_pending p;

	memset(&p, 0, sizeof p);
	snprintf(p.room, sizeof p.room, "%s", room);
	snprintf(p.epoch, sizeof p.epoch, "%s", epoch);
	snprintf(p.from, sizeof p.from, "%s", from);
	snprintf(p.id, sizeof p.id, "%s", id);
	p.ts = 5;
	fake_store_sequence(&seq_store, &p);
	assert_false(p.duplicate);
}

/* The stream brings stored message i (0-based) to the hub. */
static int seq_stream(int i)
{
	struct hub_msg m;

	fake_store_msg(&seq_store.m[i], &m);
	return hub_stream_message(hub, seq_store.m[i].room, seq_store.m[i].epoch, &m);
}

static void test_sequencing_engine_in_order_answer_fans_out_once(void **state)
{
	struct session *a, *b;

	start_with_sequencing_engine(&a, &b);
	send_msg(a, "r", "a1", "one");
	assert_int_equal(seq_nheld, 1);
	assert_int_equal(seq_held[0]->seq, 1);        /* the hub's proposal */
	expect_none(a);
	seq_complete(PROTO_OK);
	assert_true(num(expect(a, "ack"), "seq") == 1);
	assert_true(num(expect(a, "message"), "seq") == 1);
	assert_string_equal(str(expect(b, "message"), "body"), "one");
	assert_int_equal(seq_stream(0), 0);             /* the stream's copy: seen */
	expect_none(a);
	expect_none(b);
	assert_int_equal(metrics.messages_in, 1);
}

static void test_sequencing_engine_reports_gaps_and_recovers(void **state)
{
	struct session *a, *b;
	const char *epoch = start_with_sequencing_engine(&a, &b);

	seq_other_node("r", epoch, "carol", "c1");       /* seq 1, not here yet */
	send_msg(a, "r", "a1", "one");
	assert_int_equal(seq_held[0]->seq, 1);          /* proposed; the engine says 2 */
	seq_complete(PROTO_OK);
	assert_true(num(expect(a, "ack"), "seq") == 2);
	expect_none(a);                                 /* ahead of the stream: not applied */
	expect_none(b);
	assert_int_equal(hub_room_seq(hub, "r"), 0);
	seq_other_node("r", epoch, "carol", "c2");       /* seq 3 */
	assert_int_equal(seq_stream(0), 0);
	assert_int_equal(seq_stream(2), -1);            /* 2 is missing: a gap */
	assert_true(num(expect(b, "message"), "seq") == 1);
	expect_none(b);
	alloc_fail_in = 1;                              /* 2's frame */
	assert_int_equal(seq_stream(1), -1);
	alloc_fail_in = 0;
	expect_none(b);
	/* the re-read */
	assert_int_equal(seq_stream(0), 0);             /* seen: ignored */
	assert_int_equal(seq_stream(1), 0);
	assert_int_equal(seq_stream(2), 0);
	assert_string_equal(str(expect(b, "message"), "id"), "a1");
	assert_true(num(expect(b, "message"), "seq") == 3);
	expect_none(b);
	assert_true(num(expect(a, "message"), "seq") == 1);
	assert_true(num(expect(a, "message"), "seq") == 2);
	assert_true(num(expect(a, "message"), "seq") == 3);
	expect_none(a);
	assert_int_equal(hub_room_seq(hub, "r"), 3);
}

/* The engine found (from, id) stored already (a retry after an answer that
 * was lost): the sender gets the original's ack and nobody a second copy. */
static void test_sequencing_engine_duplicate_gets_the_original_ack(void **state)
{
	struct session *a, *b;

	start_with_sequencing_engine(&a, &b);
	in(a, "{\"type\":\"send\",\"room\":\"r\",\"id\":\"a1\",\"body\":\"x\",\"ref\":\"first\"}");
	seq_complete(PROTO_ERR_UNAVAILABLE);          /* stored, but the answer was lost */
	assert_string_equal(str(expect_error(a, "unavailable"), "ref"), "first");
	expect_none(b);
	in(a, "{\"type\":\"send\",\"room\":\"r\",\"id\":\"a1\",\"body\":\"x\",\"ref\":\"again\"}");
	assert_int_equal(seq_held[0]->seq, 1);
	seq_complete(PROTO_OK);
	{
		cJSON *o = expect(a, "ack");
		assert_true(num(o, "seq") == 1);
		assert_string_equal(str(o, "ref"), "again");
	}
	expect_none(a);                                 /* the stream brings it, once */
	expect_none(b);
	assert_int_equal(metrics.messages_in, 0);
	assert_int_equal(seq_stream(0), 0);
	assert_true(num(expect(a, "message"), "seq") == 1);
	assert_true(num(expect(b, "message"), "seq") == 1);
	expect_none(a);
	expect_none(b);
}

/* A retry while the first send is still with the engine waits for its
 * answer, and gets the seq the engine chose, not the hub's proposal. */
static void test_sequencing_engine_retry_in_flight_gets_the_final_seq(void **state)
{
	struct session *a, *b;
	const char *epoch = start_with_sequencing_engine(&a, &b);

	seq_other_node("r", epoch, "carol", "c1");
	assert_int_equal(seq_stream(0), 0);
	assert_true(num(expect(a, "message"), "seq") == 1);
	seq_other_node("r", epoch, "carol", "c2");        /* seq 2, not here yet */
	in(a, "{\"type\":\"send\",\"room\":\"r\",\"id\":\"a1\",\"body\":\"x\",\"ref\":\"1\"}");
	in(a, "{\"type\":\"send\",\"room\":\"r\",\"id\":\"a1\",\"body\":\"x\",\"ref\":\"2\"}");
	assert_int_equal(seq_nheld, 1);                  /* the retry waits */
	seq_complete(PROTO_OK);                          /* seq 3 */
	assert_true(num(expect(a, "ack"), "seq") == 3);
	assert_true(num(expect(a, "ack"), "seq") == 3);
	expect_none(a);
}

/* Defect 2: a parked join whose member cannot be added must not free the
 * room under hub_room_loaded (it freed it there, then again at its end). */
static void test_failed_parked_join_does_not_free_the_room_twice(void **state)
{
	struct session *a, *b;

	start_with_fake_engine();
	fe.slow_load = 1;
	a = login("alice");
	b = login("bob");
	in(a, "{\"type\":\"join\",\"room\":\"r\",\"ref\":\"ja\"}");
	in(b, "{\"type\":\"join\",\"room\":\"r\",\"ref\":\"jb\"}");
	expect_none(a);
	expect_none(b);
	alloc_fail_in = 1;          /* alice's membership */
	fe_finish_load(1);
	alloc_fail_in = 0;
	assert_string_equal(str(expect_error(a, "internal"), "ref"), "ja");
	assert_string_equal(str(expect(b, "joined"), "ref"), "jb");
	/* the room is alive and usable */
	fe.slow_load = 0;
	assert_true(num(join(a, "r"), "seq") == 0);
	assert_int_equal(hub_room_count(hub), 1);
}

/* Defect 3: a storage read that fails must not be answered as complete. */
static void test_failed_read_is_not_reported_as_recovered(void **state)
{
	struct session *a, *b;
	char id[8];
	int i;

	cfg.messages_per_room = 2;
	cfg.dedup_window = 2;
	start_with_fake_engine();
	a = login("alice");
	join(a, "r");
	for (i = 1; i <= 6; i++) {
		snprintf(id, sizeof id, "m%d", i);
		send_msg(a, "r", id, "x");
		fe_complete("r", PROTO_OK);
	}
	drain(a);
	b = login("bob");
	/* the ring holds 5..6; 1..4 come from the engine, whose read fails */
	fe.store.fail_reads = 1;
	in(b, "{\"type\":\"join\",\"room\":\"r\",\"since\":0,\"ref\":\"j\"}");
	assert_string_equal(str(expect_error(b, "unavailable"), "ref"), "j");
	expect_none(b);
	drain(a);
	in(a, "{\"type\":\"history\",\"room\":\"r\",\"limit\":5,\"ref\":\"h\"}");
	assert_string_equal(str(expect_error(a, "unavailable"), "ref"), "h");
	/* and once the engine reads again, both are whole */
	fe.store.fail_reads = 0;
	in(b, "{\"type\":\"join\",\"room\":\"r\",\"since\":0}");
	for (i = 1; i <= 6; i++)
		assert_true(num(expect(b, "message"), "seq") == i);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(expect(b, "joined"), "recovered")));
	assert_true(fe.reads >= 3);
}

/* Defect 4: a stored message whose frame cannot be made still answers its
 * sender and keeps its dedup entry, so a retry is not stored twice. */
static void test_stored_message_without_a_frame_still_acks_and_dedups(void **state)
{
	struct session *a, *b;
	cJSON *o;

	start_with_fake_engine();
	a = login("alice");
	b = login("bob");
	join(a, "r");
	join(b, "r");
	drain(a);
	send_msg(a, "r", "m1", "x");
	alloc_fail_in = 1;          /* the message frame, at commit */
	fe_complete("r", PROTO_OK);
	alloc_fail_in = 0;
	assert_true(num(expect(a, "ack"), "seq") == 1);
	expect_none(b);
	/* the retry: the same ack, nothing new stored */
	send_msg(a, "r", "m1", "x");
	assert_true(num(expect(a, "ack"), "seq") == 1);
	assert_int_equal(fe.nheld, 0);
	/* the members see the gap: the next message is seq 2 */
	send_msg(a, "r", "m2", "y");
	fe_complete("r", PROTO_OK);
	o = expect(b, "message");
	assert_true(num(o, "seq") == 2);
	/* and history fills it from the engine */
	in(b, "{\"type\":\"history\",\"room\":\"r\"}");
	o = cJSON_GetObjectItem(expect(b, "history"), "messages");
	assert_int_equal(cJSON_GetArraySize(o), 2);
	assert_string_equal(str(cJSON_GetArrayItem(o, 0), "id"), "m1");
}

/* Defect 4, memory only: a message that cannot be kept is refused and its
 * seq given back: no silent hole, no duplicate on retry. */
static void test_memory_only_message_without_a_frame_is_refused(void **state)
{
	struct session *a, *b;

	start();
	a = login("alice");
	b = login("bob");
	join(a, "r");
	join(b, "r");
	drain(a);
	/* calloc pending, malloc body, malloc frame */
	alloc_fail_in = 3;
	send_msg(a, "r", "m1", "x");
	alloc_fail_in = 0;
	expect_error(a, "internal");
	expect_none(b);
	send_msg(a, "r", "m1", "x");
	assert_true(num(expect(a, "ack"), "seq") == 1);
	assert_true(num(expect(b, "message"), "seq") == 1);
}

/* Defect 6: cluster_new out of memory must say so, not hand back whatever
 * the caller's error buffer held. */
static void test_cluster_new_out_of_memory_says_so(void **state)
{
	struct cluster *c;
	char err[64];

	start();
	free(cfg.redis);
	cfg.redis = strdup("redis://127.0.0.1:1");
	assert_non_null(cfg.redis);
	memset(err, 'X', sizeof err - 1);
	err[sizeof err - 1] = '\0';
	alloc_fail_in = 2;          /* the cluster, then its channel name */
	c = cluster_new(&cfg, NULL, hub, &metrics, err, sizeof err);
	alloc_fail_in = 0;
	assert_null(c);
	assert_string_equal(err, "out of memory");
}

/* ---- room memory -------------------------------------------------------- */

/* alice joins room, sends one message there and leaves: the room is idle. */
static const char *room_used_once(struct session *a, const char *room)
{
	const char *epoch = str(join(a, room), "epoch");

	send_msg(a, room, "m", "x");
	expect(a, "ack");
	expect(a, "message");
	in(a, "{\"type\":\"leave\",\"room\":\"%s\"}", room);
	expect(a, "left");
	return epoch;
}

static void test_idle_rooms_past_max_rooms_are_evicted_least_recent_first(void **state)
{
	struct session *a;
	const char *e1;
	char name[8];
	cJSON *j;
	int i;

	cfg.max_rooms = 3;
	start();
	a = login("alice");
	e1 = room_used_once(a, "r1");
	for (i = 2; i <= 5; i++) {
		snprintf(name, sizeof name, "r%d", i);
		room_used_once(a, name);
		assert_true(hub_room_count(hub) <= 3);
	}
	assert_int_equal(hub_room_count(hub), 3);
	assert_int_equal(metrics.rooms_evicted, 2);
	assert_int_equal(metrics.rooms_idle, 3);
	/* r5 was used last: still held */
	assert_true(num(join(a, "r5"), "seq") == 1);
	assert_int_equal(metrics.rooms_idle, 2);
	/* r1 was the least recently used: memory only, its history is gone,
	 * and a new epoch tells a resuming client so */
	in(a, "{\"type\":\"join\",\"room\":\"r1\",\"since\":1,\"epoch\":\"%s\"}", e1);
	j = expect(a, "joined");
	assert_true(num(j, "seq") == 0);
	assert_string_not_equal(str(j, "epoch"), e1);
	assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "recovered")));
}

static void test_max_rooms_all_in_use_refuses_a_new_room(void **state)
{
	struct session *a;

	cfg.max_rooms = 2;
	start();
	a = login("alice");
	join(a, "r1");
	join(a, "r2");
	in(a, "{\"type\":\"join\",\"room\":\"r3\",\"ref\":\"full\"}");
	assert_non_null(strstr(str(expect_error(a, "unavailable"), "message"), "limits.max_rooms"));
	assert_int_equal(metrics.rooms_refused, 1);
	assert_int_equal(hub_room_count(hub), 2);
	in(a, "{\"type\":\"leave\",\"room\":\"r1\"}");
	expect(a, "left");
	assert_true(num(join(a, "r3"), "seq") == 0);
}

static void test_a_lower_max_rooms_on_reload_evicts_idle_rooms_at_once(void **state)
{
	struct session *a;

	cfg.max_rooms = 10;
	start();
	a = login("alice");
	room_used_once(a, "r1");
	room_used_once(a, "r2");
	room_used_once(a, "r3");
	join(a, "busy");
	assert_int_equal(hub_room_count(hub), 4);
	cfg.max_rooms = 2;
	hub_reconfigure(hub, &cfg);
	/* the room in use stays; idle ones go, least recently used first */
	assert_int_equal(hub_room_count(hub), 2);
	assert_int_equal(metrics.rooms_evicted, 2);
	assert_true(num(join(a, "r3"), "seq") == 1);
}

/* With an engine, an evicted room is loaded again: resume and paging see
 * the whole history, dedup included. */
static void test_evicted_room_reloads_from_the_engine(void **state)
{
	struct session *a, *b;
	const char *epoch;
	char id[8];
	cJSON *o;
	int i;

	cfg.max_rooms = 1;
	cfg.messages_per_room = 2;
	start_with_fake_engine();
	a = login("alice");
	epoch = str(join(a, "r"), "epoch");
	for (i = 1; i <= 5; i++) {
		snprintf(id, sizeof id, "m%d", i);
		send_msg(a, "r", id, "x");
		fe_complete("r", PROTO_OK);
	}
	in(a, "{\"type\":\"leave\",\"room\":\"r\"}");
	drain(a);
	join(a, "other");                 /* evicts r */
	assert_int_equal(metrics.rooms_evicted, 1);
	assert_int_equal(fe.loads, 2);
	b = login("bob");
	in(a, "{\"type\":\"leave\",\"room\":\"other\"}");
	expect(a, "left");
	in(b, "{\"type\":\"join\",\"room\":\"r\",\"since\":1,\"epoch\":\"%s\"}", epoch);
	for (i = 2; i <= 5; i++)
		assert_true(num(expect(b, "message"), "seq") == i);
	o = expect(b, "joined");
	assert_int_equal(fe.loads, 3);
	assert_true(num(o, "seq") == 5);
	assert_string_equal(str(o, "epoch"), epoch);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(o, "recovered")));
	in(b, "{\"type\":\"history\",\"room\":\"r\",\"before\":4,\"limit\":2}");
	o = cJSON_GetObjectItem(expect(b, "history"), "messages");
	assert_int_equal(cJSON_GetArraySize(o), 2);
	assert_true(num(cJSON_GetArrayItem(o, 0), "seq") == 2);
	/* a retry of an old id is still recognised */
	in(a, "{\"type\":\"join\",\"room\":\"r\"}");
	expect(a, "joined");
	send_msg(a, "r", "m3", "x");
	assert_true(num(expect(a, "ack"), "seq") == 3);
	assert_int_equal(fe.nheld, 0);
}

/* Regression tests for bugs these tests found. */
#include <signal.h>

static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "hub_session_unregister did not return (infinite loop)\n";
	if (write(2, msg, sizeof msg - 1) < 0) {}
	_exit(3);
}

/* Unregistering the session that holds the largest queue, while the global
 * cap is nearly reached, must not hang: the presence leave to the others
 * makes hub_q_global_space() pick the departing (closing) session as the
 * largest; closing it again is a no-op that frees nothing, forever. */
static void test_unregister_of_the_largest_queue_under_global_cap_returns(void **state)
{
	struct session *big, *b;
	char id[16];
	int i;

	start();
	big = login("big");
	b = login("bob");
	join(big, "r");
	join(b, "r");
	for (i = 1; i <= 10; i++) {
		snprintf(id, sizeof id, "m%d", i);
		send_msg(b, "r", id, "0123456789012345678901234567890123456789");
		drain(b);
	}
	/* big holds almost everything; leave less room than a presence frame */
	cfg.total_queue_bytes = (long long)hub_queue_bytes(hub) + 10;
	hub_reconfigure(hub, &cfg);
	signal(SIGALRM, on_alarm);
	alarm(5);
	hub_session_unregister(hub, big);
	alarm(0);
	assert_string_equal(str(expect(b, "presence"), "state"), "leave");
	assert_int_equal(metrics.slow_consumer_closes, 0);
}


/* ---- tokens and moderation (issue 15) ----------------------------------- */

#define TSECRET "unit-test-secret-0123456789abcdef0123"

static void b64url(const unsigned char *in, size_t len, char *out)
{
	int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);

	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (char *p = out; *p; p++)
		*p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
}

/* An HS256 token for claims (a JSON object text). */
static const char *mint(const char *claims)
{
	static char tok[4096];
	char h[64], c[2048], sig[64];
	unsigned char mac[32];
	unsigned int maclen = 0;

	b64url((const unsigned char *)"{\"alg\":\"HS256\"}", 15, h);
	b64url((const unsigned char *)claims, strlen(claims), c);
	snprintf(tok, sizeof tok, "%s.%s", h, c);
	HMAC(EVP_sha256(), TSECRET, (int)strlen(TSECRET), (unsigned char *)tok, strlen(tok), mac, &maclen);
	b64url(mac, maclen, sig);
	snprintf(tok + strlen(tok), sizeof tok - strlen(tok), ".%s", sig);
	return tok;
}

static void start_auth(void)
{
	char err[256];

	cfg.auth_mode = CONFIG_AUTH_JWT;
	free(cfg.jwt_secret);
	cfg.jwt_secret = strdup(TSECRET);
	cfg.jwt_leeway = 0;
	cfg.refresh_window = 30;
	cfg.sessions_per_name = 4;
	tauth = auth_new(&cfg, err, sizeof err);
	assert_non_null(tauth);
	start();
	hub_set_auth(hub, tauth);
}

static struct session *login_token(const char *claims)
{
	struct session *s = connect_();

	in(s, "{\"type\":\"hello\",\"token\":\"%s\"}", mint(claims));
	expect(s, "welcome");
	return s;
}

static void test_token_deadline_warns_then_closes_4001(void **state)
{
	struct session *s, *forever;
	char claims[128];
	cJSON *e;

	(void)state;
	start_auth();
	assert_true(hub_next_deadline(hub) == 0);
	snprintf(claims, sizeof claims, "{\"sub\":\"alice\",\"exp\":%.0f}", fk.now + 100.5);
	s = login_token(claims);
	forever = login_token("{\"sub\":\"bob\"}");
	assert_true(fabs(hub_next_deadline(hub) - (fk.now + 70.5)) < 1e-6);
	fk.now += 70;
	hub_run_deadlines(hub);
	expect_none(s);                                 /* not due yet */
	fk.now += 1;
	hub_run_deadlines(hub);
	e = expect(s, "token_expiring");
	assert_string_equal(str(e, "reason"), "exp");
	assert_true(num(e, "in") == 30);
	assert_true(fabs(hub_next_deadline(hub) - (fk.now + 29.5)) < 1e-6);
	fk.now += 29.5;
	hub_run_deadlines(hub);
	assert_int_equal(closes_of(s->conn), 1);
	assert_int_equal(fk.closes[0].code, HUB_CLOSE_TOKEN_EXPIRED);
	assert_int_equal(metrics.tokens_expired, 1);
	assert_true(hub_next_deadline(hub) == 0);       /* bob has no exp: never in the heap */
	assert_int_equal(closes_of(forever->conn), 0);
}

/* Many sessions, unregistered and refreshed in between: every close comes
 * in exp order, each once, whatever the heap went through. */
static void test_token_heap_closes_in_exp_order(void **state)
{
	struct session *ss[24];
	double t0;
	char claims[128];
	int i, last = -1;

	(void)state;
	start_auth();
	t0 = fk.now = 1000;      /* whole seconds: every exp distinct */
	for (i = 0; i < 24; i++) {
		/* exps scattered: 7 is prime to 24, so every slot once */
		snprintf(claims, sizeof claims, "{\"sub\":\"u%d\",\"exp\":%.0f}", i, t0 + 100 + (i * 7 % 24));
		ss[i] = login_token(claims);
	}
	hub_session_unregister(hub, ss[5]);
	ss[5] = NULL;
	/* u7 refreshes to a later exp */
	snprintf(claims, sizeof claims, "{\"sub\":\"u7\",\"exp\":%.0f}", t0 + 500);
	in(ss[7], "{\"type\":\"refresh\",\"token\":\"%s\"}", mint(claims));
	expect(ss[7], "refreshed");
	for (double t = t0; t < t0 + 200; t += 0.5) {
		fk.now = t;
		hub_run_deadlines(hub);
	}
	assert_int_equal(fk.nclosed, 22);
	for (i = 0; i < fk.nclosed; i++) {
		int k = (int)((int *)fk.closes[i].conn - &conns[0]);
		int rank = k * 7 % 24;
		if (rank <= last)
			fail_msg("close %d: session %d (exp rank %d) after rank %d", i, k, rank, last);
		last = rank;
		assert_int_equal(fk.closes[i].code, 4001);
	}
	assert_int_equal(closes_of(ss[7]->conn), 0);
}

/* A reload that changes the secret: every live session is re-checked, but
 * at most 256 per hub_run_deadlines call (one loop iteration), never all. */
static void test_key_rotation_rechecks_a_slice_per_call(void **state)
{
	struct session *ss[300];
	struct auth *rotated;
	char claims[64], err[256];
	int i, warned = 0;

	(void)state;
	start_auth();
	for (i = 0; i < 300; i++) {
		snprintf(claims, sizeof claims, "{\"sub\":\"u%d\"}", i);
		ss[i] = login_token(claims);
	}
	free(cfg.jwt_secret);
	cfg.jwt_secret = strdup("another-secret-0123456789abcdef0123456");
	rotated = auth_new(&cfg, err, sizeof err);
	assert_non_null(rotated);
	hub_set_auth(hub, rotated);
	auth_free(tauth);
	tauth = rotated;
	assert_true(hub_next_deadline(hub) == fk.now);      /* the walk is due at once */
	hub_run_deadlines(hub);
	for (i = 0; i < 300; i++)
		if (next(ss[i]))
			warned++;
	assert_int_equal(warned, 256);
	assert_true(hub_next_deadline(hub) == fk.now);
	hub_run_deadlines(hub);
	for (i = 0; i < 300; i++) {
		cJSON *e = next(ss[i]);
		if (e) {
			assert_string_equal(str(e, "reason"), "key_rotated");
			warned++;
		}
	}
	assert_int_equal(warned, 300);
	/* Now only the refresh deadlines are left: refresh_window from now. */
	assert_true(fabs(hub_next_deadline(hub) - (fk.now + 30)) < 1e-6);
	assert_int_equal(fk.nclosed, 0);
}

static void test_refresh_needs_the_same_sub(void **state)
{
	struct session *s;

	(void)state;
	start_auth();
	s = login_token("{\"sub\":\"alice\",\"exp\":9999999999}");
	in(s, "{\"type\":\"refresh\",\"token\":\"%s\",\"ref\":\"r\"}", mint("{\"sub\":\"eve\"}"));
	expect_error(s, "forbidden");
	in(s, "{\"type\":\"refresh\",\"token\":\"x.y.z\"}");
	expect_error(s, "not_authenticated");
	assert_string_equal(s->name, "alice");
}

static void test_kick_by_a_claimed_moderator(void **state)
{
	struct session *mod, *bob, *bob2, *carol;
	cJSON *k, *p, *m, *j;

	(void)state;
	start_auth();
	mod = login_token("{\"sub\":\"mo\",\"roles\":{\"moderator\":[\"team-*\"]}}");
	bob = login_token("{\"sub\":\"bob\"}");
	bob2 = login_token("{\"sub\":\"bob\"}");
	carol = login_token("{\"sub\":\"carol\"}");
	j = join(mod, "team-a");
	assert_string_equal(str(j, "role"), "moderator");
	assert_string_equal(str(join(bob, "team-a"), "role"), "member");
	join(bob2, "team-a");
	join(carol, "team-a");
	drain(mod);
	drain(bob);
	drain(bob2);
	drain(carol);
	in(carol, "{\"type\":\"kick\",\"room\":\"team-a\",\"user\":\"bob\"}");
	expect_error(carol, "forbidden");
	in(mod, "{\"type\":\"kick\",\"room\":\"team-a\",\"user\":\"bob\",\"reason\":\"spam\",\"ref\":\"k\"}");
	/* The event applies where it is recorded, before its ack goes out. */
	assert_string_equal(str(expect(mod, "presence"), "cause"), "kicked");
	assert_string_equal(str(expect(mod, "ack"), "ref"), "k");
	k = expect(bob, "kicked");
	assert_string_equal(str(k, "reason"), "spam");
	expect(bob2, "kicked");
	p = expect(carol, "presence");
	assert_string_equal(str(p, "cause"), "kicked");
	m = expect(carol, "message");
	assert_string_equal(str(m, "from"), PROTO_MOD_SENDER);
	expect_none(bob);                      /* out of the room: no message event */
	in(bob, "{\"type\":\"send\",\"room\":\"team-a\",\"id\":\"1\",\"body\":\"x\"}");
	expect_error(bob, "forbidden");
	assert_int_equal(metrics.moderation_actions, 1);
}

static void test_mute_and_read_only_refuse_send(void **state)
{
	struct session *owner, *bob;

	(void)state;
	start_auth();
	owner = login_token("{\"sub\":\"olga\",\"roles\":{\"owner\":[\"lobby\"]}}");
	bob = login_token("{\"sub\":\"bob\"}");
	join(owner, "lobby");
	join(bob, "lobby");
	drain(owner);
	in(owner, "{\"type\":\"mute\",\"room\":\"lobby\",\"user\":\"bob\",\"duration\":10}");
	expect(owner, "ack");
	drain(bob);
	send_msg(bob, "lobby", "1", "x");
	expect_error(bob, "forbidden");
	fk.now += 10.5;                          /* the mute ends by itself */
	send_msg(bob, "lobby", "2", "y");
	expect(bob, "ack");
	drain(bob);
	drain(owner);
	in(owner, "{\"type\":\"settings\",\"room\":\"lobby\",\"read_only\":true}");
	expect(owner, "ack");
	drain(bob);
	send_msg(bob, "lobby", "3", "z");
	expect_error(bob, "forbidden");
	drain(owner);
	send_msg(owner, "lobby", "4", "news");
	expect(owner, "ack");
}

#include "test_hub_api.inc.c"

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

/* ---- edit, delete, react, typing, read (issue 14) ------------------------ */

static void test_edit_window_and_owner_in_the_hub(void **state)
{
	struct session *a, *b;
	cJSON *o;

	cfg.edit_window = 10;
	start();
	a = login("alice");
	b = login("bob");
	join(a, "r");
	join(b, "r");
	drain(a);
	send_msg(a, "r", "1", "x");
	drain(a);
	drain(b);
	in(b, "{\"type\":\"edit\",\"room\":\"r\",\"seq\":1,\"body\":\"y\"}");
	expect_error(b, "forbidden");
	fk.now += 9;
	in(a, "{\"type\":\"edit\",\"room\":\"r\",\"seq\":1,\"body\":\"y\",\"id\":\"e\"}");
	o = expect(a, "ack");
	assert_true(num(o, "seq") == 2);
	o = expect(b, "edit");
	assert_true(num(o, "target") == 1);
	assert_string_equal(str(o, "body"), "y");
	drain(a);
	fk.now += 2;
	in(a, "{\"type\":\"edit\",\"room\":\"r\",\"seq\":1,\"body\":\"z\"}");
	expect_error(a, "forbidden");
	/* the window is not for deletions */
	in(a, "{\"type\":\"delete\",\"room\":\"r\",\"seq\":1}");
	o = expect(a, "ack");
	assert_true(num(o, "seq") == 3);
	expect(b, "delete");
}

/* What another node accepted is applied by the same rules here: an edit
 * by someone else than the sender changes nothing, a deletion blanks the
 * ring's frames (the message and its edits). */
static void test_stream_events_apply_deterministically(void **state)
{
	struct hub_msg m1 = { 1, 5, "alice", "a1", "one", 3, 0, 0, 0 };
	struct hub_msg e2 = { 2, 6, "bob", "b1", "hijack", 6, HUB_KIND_EDIT, 1, 0 };
	struct hub_msg e3 = { 3, 7, "alice", "a2", "uno", 3, HUB_KIND_EDIT, 1, 0 };
	struct hub_msg d4 = { 4, 8, "alice", "a3", "", 0, HUB_KIND_DELETE, 1, 0 };
	struct session *a, *b;
	cJSON *h, *msgs;
	const char *epoch = start_with_sequencing_engine(&a, &b);

	assert_int_equal(hub_stream_message(hub, "r", epoch, &m1), 0);
	assert_int_equal(hub_stream_message(hub, "r", epoch, &e2), 0);
	assert_int_equal(hub_stream_message(hub, "r", epoch, &e3), 0);
	drain(a);
	in(a, "{\"type\":\"history\",\"room\":\"r\",\"state\":true}");
	h = expect(a, "history");
	msgs = cJSON_GetObjectItem(h, "messages");
	assert_int_equal(cJSON_GetArraySize(msgs), 1);
	assert_string_equal(str(cJSON_GetArrayItem(msgs, 0), "body"), "uno");
	assert_true(num(cJSON_GetArrayItem(msgs, 0), "edits") == 1);
	assert_int_equal(hub_stream_message(hub, "r", epoch, &d4), 0);
	drain(a);
	in(a, "{\"type\":\"history\",\"room\":\"r\"}");
	h = expect(a, "history");
	msgs = cJSON_GetObjectItem(h, "messages");
	assert_int_equal(cJSON_GetArraySize(msgs), 4);
	assert_string_equal(str(cJSON_GetArrayItem(msgs, 0), "body"), "");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 0), "deleted")));
	assert_string_equal(str(cJSON_GetArrayItem(msgs, 1), "body"), "hijack");  /* void, not blanked */
	assert_string_equal(str(cJSON_GetArrayItem(msgs, 2), "body"), "");
}

static void test_typing_and_read_markers_in_the_hub(void **state)
{
	struct session *a, *a2, *b;
	cJSON *o;

	cfg.sessions_per_name = 2;
	start();
	a = login("alice");
	a2 = login("alice");
	b = login("bob");
	join(a, "r");
	join(b, "r");
	drain(a);
	in(a, "{\"type\":\"typing\",\"room\":\"r\"}");
	in(a, "{\"type\":\"typing\",\"room\":\"r\"}");
	o = expect(b, "typing");
	assert_string_equal(str(o, "from"), "alice");
	expect_none(b);               /* the second: within typing_interval */
	expect_none(a);
	assert_int_equal(metrics.typing_dropped, 1);
	send_msg(b, "r", "1", "x");
	drain(a);
	drain(b);
	in(a, "{\"type\":\"read\",\"room\":\"r\",\"seq\":5}");
	o = expect(a, "read");
	assert_true(num(o, "seq") == 1);   /* clamped to the room's seq */
	o = expect(a2, "read");            /* alice's other session, not in the room */
	assert_true(num(o, "seq") == 1);
	expect_none(b);
	o = join(a, "r");
	assert_true(num(o, "read") == 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_hello_gets_welcome),
		T(test_commands_before_hello_are_not_authenticated),
		T(test_hello_twice_is_bad_request),
		T(test_bad_frame_is_an_error_not_a_close),
		T(test_duplicate_name_is_conflict),
		T(test_sessions_per_name_2_allows_two_sessions),
		T(test_join_replies_joined_and_others_get_presence),
		T(test_leave_replies_left_and_others_get_presence_leave),
		T(test_members_and_ping),
		T(test_members_and_history_require_membership),
		T(test_send_acks_and_every_member_gets_messages_in_order),
		T(test_delivery_histogram_measures_the_wait_of_message_events),
		T(test_resend_of_an_accepted_id_gets_same_ack_and_no_broadcast),
		T(test_dedup_survives_reconnect_under_the_same_name),
		T(test_send_when_not_a_member_is_forbidden),
		T(test_dm_acks_and_delivers_direct),
		T(test_edit_window_and_owner_in_the_hub),
		T(test_stream_events_apply_deterministically),
		T(test_typing_and_read_markers_in_the_hub),
		T(test_dm_to_offline_name_is_not_found),
		T(test_history_before_after_limit),
		T(test_history_only_returns_what_the_ring_holds),
		T(test_join_since_replays_missed_messages_then_recovered),
		T(test_join_since_latest_seq_replays_nothing_and_recovers),
		T(test_join_since_with_another_epoch_is_not_recovered),
		T(test_join_since_a_gap_older_than_the_ring_is_not_recovered),
		T(test_join_since_of_a_new_room_with_an_old_epoch_is_not_recovered),
		T(test_rate_limit_burst_then_limited_then_refill),
		T(test_slow_consumer_is_closed_while_others_get_every_message),
		T(test_slow_consumer_byte_bound_closes),
		T(test_drop_oldest_keeps_the_newest_messages_and_counts_drops),
		T(test_drop_oldest_never_drops_replies),
		T(test_global_cap_handles_the_largest_queue_first),
		T(test_global_cap_with_drop_oldest_drops_from_the_largest),
		T(test_unregister_sends_presence_leave_and_frees_everything),
		T(test_hub_free_releases_sessions_still_registered),
		T(test_deferred_engine_acks_and_broadcasts_at_commit),
		T(test_deferred_commit_after_the_sender_is_gone_still_broadcasts),
		T(test_deferred_commit_does_not_ack_a_new_session_with_the_same_name),
		T(test_deferred_commit_failure_answers_the_sender_only),
		T(test_deferred_commit_failure_after_the_sender_is_gone),
		T(test_failed_commit_gives_its_seq_back),
		T(test_unregister_of_the_largest_queue_under_global_cap_returns),
		T(test_fake_engine_completes_rooms_out_of_order),
		T(test_conversations_wait_for_the_engines_list),
		T(test_fake_engine_fails_an_append_in_one_room_only),
		T(test_sequencing_engine_in_order_answer_fans_out_once),
		T(test_sequencing_engine_reports_gaps_and_recovers),
		T(test_sequencing_engine_duplicate_gets_the_original_ack),
		T(test_sequencing_engine_retry_in_flight_gets_the_final_seq),
		T(test_failed_parked_join_does_not_free_the_room_twice),
		T(test_failed_read_is_not_reported_as_recovered),
		T(test_stored_message_without_a_frame_still_acks_and_dedups),
		T(test_memory_only_message_without_a_frame_is_refused),
		T(test_cluster_new_out_of_memory_says_so),
		T(test_idle_rooms_past_max_rooms_are_evicted_least_recent_first),
		T(test_max_rooms_all_in_use_refuses_a_new_room),
		T(test_a_lower_max_rooms_on_reload_evicts_idle_rooms_at_once),
		T(test_evicted_room_reloads_from_the_engine),
		T(test_token_deadline_warns_then_closes_4001),
		T(test_token_heap_closes_in_exp_order),
		T(test_key_rotation_rechecks_a_slice_per_call),
		T(test_refresh_needs_the_same_sub),
		T(test_kick_by_a_claimed_moderator),
		T(test_mute_and_read_only_refuse_send),
		HUB_API_TESTS,
	};

	/* the hub logs every session event on stderr; keep test output readable */
	log_setup(CONFIG_LOG_ERROR, CONFIG_LOG_TEXT);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
