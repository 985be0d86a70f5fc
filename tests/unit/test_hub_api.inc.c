/*
 * test_hub_api.inc.c - the hub's server API entry points (hub_api.h) and
 * its event hooks, driven directly. Included by test_hub.c (it uses that
 * file's fake transport, fixture and helpers; a file of its own keeps the
 * API's tests apart from the chat's). HUB_API_TESTS lists them for main().
 */
#include "hub_api.h"

/* What the sink heard. */
static struct {
	int n;
	uint64_t req[16];
	enum proto_err status[16];
	char why[16][160];
	char room[16][PROTO_ROOM_MAX + 1];
	uint64_t seq[16];
} sink;

static void sink_done(void *ctx, uint64_t req, enum proto_err status, const char *why,
		      const char *room, uint64_t seq)
{
	(void)ctx;
	assert_true(sink.n < 16);
	sink.req[sink.n] = req;
	sink.status[sink.n] = status;
	snprintf(sink.why[sink.n], sizeof sink.why[0], "%s", why ? why : "");
	snprintf(sink.room[sink.n], sizeof sink.room[0], "%s", room ? room : "");
	sink.seq[sink.n] = seq;
	sink.n++;
}

static void api_start(int deferred)
{
	struct hub_api_sink s = { sink_done, NULL };

	memset(&sink, 0, sizeof sink);
	if (deferred)
		start_with_deferred_engine();
	else
		start();
	hub_api_set_sink(hub, &s);
}

static void publish(uint64_t req, const char *room, const char *from, const char *id, const char *body)
{
	hub_api_publish(hub, req, room, from, id, body, strlen(body));
}

static void test_api_publish_as_system_in_memory(void **state)
{
	struct session *a;
	uint64_t r1, r2;
	cJSON *o;

	api_start(0);
	a = login("alice");
	join(a, "lobby");
	r1 = hub_api_request(hub);
	assert_true(hub_api_is_request(r1));
	assert_false(hub_api_is_request(a->num));
	publish(r1, "lobby", HUB_API_SYSTEM, "k1", "hello all");
	assert_int_equal(sink.n, 1);       /* memory only: answered at once */
	assert_int_equal(sink.req[0], r1);
	assert_int_equal(sink.status[0], PROTO_OK);
	assert_string_equal(sink.room[0], "lobby");
	assert_int_equal(sink.seq[0], 1);
	o = expect(a, "message");
	assert_string_equal(str(o, "from"), "$system");
	assert_string_equal(str(o, "body"), "hello all");
	assert_true(num(o, "seq") == 1);
	/* The same (from, id): the same seq, no second message. */
	r2 = hub_api_request(hub);
	assert_true(r2 != r1);
	publish(r2, "lobby", HUB_API_SYSTEM, "k1", "hello all");
	assert_int_equal(sink.n, 2);
	assert_int_equal(sink.seq[1], 1);
	expect_none(a);
	assert_int_equal(metrics.messages_in, 1);
	/* A room with no member takes it too (it keeps its history). */
	publish(hub_api_request(hub), "empty", "bob", "x", "y");
	assert_int_equal(sink.status[2], PROTO_OK);
	assert_int_equal(sink.seq[2], 1);
	assert_int_equal(hub_room_count(hub), 2);
}

static void test_api_publish_bad_input(void **state)
{
	char big[5000];

	api_start(0);
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	publish(hub_api_request(hub), "bad room", HUB_API_SYSTEM, "i", "b");
	publish(hub_api_request(hub), "r", "$other", "i", "b");
	publish(hub_api_request(hub), "r", "alice", "", "b");
	publish(hub_api_request(hub), "r", "alice", "i", big);
	assert_int_equal(sink.n, 4);
	for (int i = 0; i < 4; i++)
		assert_int_equal(sink.status[i], PROTO_ERR_BAD_REQUEST);
	assert_non_null(strstr(sink.why[0], "room"));
	assert_non_null(strstr(sink.why[1], "from"));
	assert_non_null(strstr(sink.why[2], "id"));
	assert_non_null(strstr(sink.why[3], "max_message_bytes"));
	assert_int_equal(hub_room_count(hub), 0);   /* nothing was opened */
}

static void test_api_publish_waits_for_the_commit(void **state)
{
	struct session *a;
	uint64_t r1, r2;

	api_start(1);
	a = login("alice");
	join(a, "r");
	r1 = hub_api_request(hub);
	publish(r1, "r", "ops", "k", "later");
	assert_int_equal(eng.n, 1);
	assert_int_equal(eng.held[0]->sender, r1);
	assert_int_equal(sink.n, 0);       /* not before the commit */
	expect_none(a);
	/* A retry while the first is pending waits for it. */
	r2 = hub_api_request(hub);
	publish(r2, "r", "ops", "k", "later");
	assert_int_equal(eng.n, 1);
	assert_int_equal(sink.n, 0);
	hub_append_done(hub, eng.held[0], PROTO_OK);
	hub_pending_free(eng.held[0]);
	assert_int_equal(sink.n, 2);
	assert_int_equal(sink.seq[0], 1);
	assert_int_equal(sink.seq[1], 1);
	assert_int_equal(sink.status[0], PROTO_OK);
	assert_int_equal(sink.status[1], PROTO_OK);
	assert_string_equal(str(expect(a, "message"), "from"), "ops");
	expect_none(a);
	/* A failed commit: unavailable, and the seq goes back. */
	publish(hub_api_request(hub), "r", "ops", "k2", "lost");
	hub_append_done(hub, eng.held[1], PROTO_ERR_UNAVAILABLE);
	hub_pending_free(eng.held[1]);
	assert_int_equal(sink.status[2], PROTO_ERR_UNAVAILABLE);
	assert_true(strlen(sink.why[2]) > 0);
	expect_none(a);
	assert_int_equal(hub_room_seq(hub, "r"), 1);
}

static void test_api_dm(void **state)
{
	struct session *a;
	cJSON *o;

	api_start(0);
	a = login("alice");
	hub_api_dm(hub, hub_api_request(hub), "alice", HUB_API_SYSTEM, "d1", "psst", 4);
	assert_int_equal(sink.status[0], PROTO_OK);
	o = expect(a, "direct");
	assert_string_equal(str(o, "from"), "$system");
	assert_string_equal(str(o, "body"), "psst");
	hub_api_dm(hub, hub_api_request(hub), "nobody", HUB_API_SYSTEM, "d2", "x", 1);
	assert_int_equal(sink.status[1], PROTO_ERR_NOT_FOUND);
	hub_api_dm(hub, hub_api_request(hub), "bad name!", HUB_API_SYSTEM, "d3", "x", 1);
	assert_int_equal(sink.status[2], PROTO_ERR_BAD_REQUEST);
}

static void test_api_kick_closes_every_session_of_the_name(void **state)
{
	struct session *a1, *a2, *b;
	uint32_t closed = 99;

	cfg.sessions_per_name = 2;
	api_start(0);
	a1 = login("alice");
	a2 = login("alice");
	b = login("bob");
	assert_int_equal(hub_api_kick(hub, "alice", 4001, "bye", &closed), PROTO_OK);
	assert_int_equal(closed, 2);
	assert_int_equal(closes_of(a1->conn), 1);
	assert_int_equal(closes_of(a2->conn), 1);
	assert_int_equal(closes_of(b->conn), 0);
	assert_int_equal(fk.closes[0].code, 4001);
	assert_string_equal(fk.closes[0].reason, "bye");
	/* Closing, not yet unregistered: a second kick closes nothing more. */
	assert_int_equal(hub_api_kick(hub, "alice", 4001, "bye", &closed), PROTO_OK);
	assert_int_equal(closed, 0);
	assert_int_equal(fk.nclosed, 2);
}

/* The JSON array w holds, parsed (kept for teardown). */
static cJSON *finish_array(struct jsonw *w)
{
	struct msgbuf *mb = jsonw_finish(w);
	cJSON *o;

	assert_non_null(mb);
	o = cJSON_ParseWithLength((const char *)mb->data, mb->len);
	msgbuf_unref(mb);
	assert_true(cJSON_IsArray(o));
	kept[nkept++] = o;
	return o;
}

static void test_api_online_members_history(void **state)
{
	struct session *a, *b;
	struct jsonw w;
	const char *why = NULL;
	cJSON *arr;
	char id[8];

	api_start(0);
	a = login("alice");
	b = login("bob");
	join(a, "r");
	jsonw_init(&w, 64);
	assert_int_equal(hub_api_online(hub, &w), 2);
	arr = finish_array(&w);
	assert_true(names_contain(arr, "alice") && names_contain(arr, "bob"));
	jsonw_init(&w, 64);
	hub_api_members(hub, "r", &w);
	arr = finish_array(&w);
	assert_int_equal(cJSON_GetArraySize(arr), 1);
	assert_true(names_contain(arr, "alice"));
	jsonw_init(&w, 64);
	hub_api_members(hub, "nowhere", &w);
	assert_int_equal(cJSON_GetArraySize(finish_array(&w)), 0);

	for (int i = 0; i < 6; i++) {
		snprintf(id, sizeof id, "m%d", i);
		publish(hub_api_request(hub), "r", HUB_API_SYSTEM, id, "b");
	}
	drain(a);
	jsonw_init(&w, 64);
	assert_int_equal(hub_history_range(hub, "r", 0, 0, 1, 5, 2, &w, &why), PROTO_OK);
	arr = finish_array(&w);
	assert_int_equal(cJSON_GetArraySize(arr), 2);
	assert_true(num(cJSON_GetArrayItem(arr, 0), "seq") == 3);
	assert_true(num(cJSON_GetArrayItem(arr, 1), "seq") == 4);
	jsonw_init(&w, 64);
	assert_int_equal(hub_history_range(hub, "r", 1, 4, 0, 0, 50, &w, &why), PROTO_OK);
	arr = finish_array(&w);
	assert_int_equal(cJSON_GetArraySize(arr), 2);
	assert_true(num(cJSON_GetArrayItem(arr, 0), "seq") == 5);
	jsonw_init(&w, 64);
	assert_int_equal(hub_history_range(hub, "r", 0, 0, 0, 0, 0, &w, &why), PROTO_ERR_BAD_REQUEST);
	jsonw_discard(&w);
	/* A room nobody used: empty, and not kept open. */
	jsonw_init(&w, 64);
	assert_int_equal(hub_history_range(hub, "unused", 0, 0, 0, 0, 10, &w, &why), PROTO_OK);
	assert_int_equal(cJSON_GetArraySize(finish_array(&w)), 0);
	assert_int_equal(hub_room_count(hub), 1);
	(void)b;
}

/* What the event hooks reported, one line each. */
static char evlog[32][96];
static int nev;

static void ev_user(void *ctx, const char *name, int online)
{
	snprintf(evlog[nev++], sizeof evlog[0], "user %s %d", name, online);
}

static void ev_presence(void *ctx, const char *room, const char *name, int join_)
{
	snprintf(evlog[nev++], sizeof evlog[0], "presence %s %s %d", room, name, join_);
}

static void ev_message(void *ctx, const char *room, const struct hub_msg *m)
{
	snprintf(evlog[nev++], sizeof evlog[0], "message %s %llu %s %s", room,
		 (unsigned long long)m->seq, m->from, m->body);
}

static void ev_direct(void *ctx, const char *to, const struct hub_msg *m)
{
	snprintf(evlog[nev++], sizeof evlog[0], "direct %s %s %s", to, m->from, m->body);
}

static void test_api_events_per_user_not_per_connection(void **state)
{
	struct hub_events ev = { ev_user, ev_presence, ev_message, ev_direct, NULL };
	struct session *a1, *a2;
	const char *want[] = {
		"user alice 1", "presence r alice 1", "message r 1 alice hi", "direct alice alice me",
		"message r 2 $system sys", "presence r alice 0", "user alice 0",
	};

	cfg.sessions_per_name = 2;
	api_start(0);
	nev = 0;
	hub_set_events(hub, &ev);
	a1 = login("alice");
	a2 = login("alice");               /* no second "online" */
	join(a1, "r");
	send_msg(a1, "r", "m1", "hi");
	in(a2, "{\"type\":\"dm\",\"to\":\"alice\",\"id\":\"d\",\"body\":\"me\"}");
	publish(hub_api_request(hub), "r", HUB_API_SYSTEM, "s", "sys");
	hub_session_unregister(hub, a1);
	hub_session_unregister(hub, a2);   /* the last one: offline */
	assert_int_equal(nev, 7);
	for (int i = 0; i < 7; i++)
		assert_string_equal(evlog[i], want[i]);
	hub_set_events(hub, NULL);
}

#define HUB_API_TESTS \
	T(test_api_publish_as_system_in_memory), \
	T(test_api_publish_bad_input), \
	T(test_api_publish_waits_for_the_commit), \
	T(test_api_dm), \
	T(test_api_kick_closes_every_session_of_the_name), \
	T(test_api_online_members_history), \
	T(test_api_events_per_user_not_per_connection)
