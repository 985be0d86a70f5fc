/*
 * test_proto.c - the chat.v1 frame decoder: every command with its fields,
 * ref extraction, and every rejection rule of the wire contract.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "jsonw.h"
#include "msgbuf.h"
#include "proto.h"

#define MAX_BODY 16

static struct proto_cmd cmd;
static struct proto_error err;

static int decode_n(const char *json, size_t len, size_t max_body)
{
	return proto_decode(json, len, max_body, &cmd, &err);
}

static int decode(const char *json)
{
	return decode_n(json, strlen(json), MAX_BODY);
}

static int teardown(void **state)
{
	(void)state;
	proto_cmd_free(&cmd);
	assert_int_equal(msgbuf_live(), 0);
	return 0;
}

#define assert_str(ps, lit)                                       \
	do {                                                      \
		assert_non_null((ps).p);                          \
		assert_int_equal((ps).len, strlen(lit));          \
		assert_memory_equal((ps).p, (lit), strlen(lit));  \
	} while (0)

#define assert_ok(json)                                                   \
	do {                                                              \
		int rc_ = decode(json);                                   \
		if (rc_ != 0)                                             \
			print_error("decode(%s) failed: %s\n", (json), err.message); \
		assert_int_equal(rc_, 0);                                 \
		assert_int_equal(err.code, PROTO_OK);                     \
	} while (0)

/* Decode json, expect failure with code; frees cmd for the next call. */
#define assert_rejected(json, ecode)                                      \
	do {                                                              \
		proto_cmd_free(&cmd);                                     \
		assert_int_equal(decode(json), -1);                       \
		assert_int_equal(err.code, (ecode));                      \
		assert_true(err.message[0] != '\0');                      \
		proto_cmd_free(&cmd);                                     \
	} while (0)

#define assert_accepted(json)                                             \
	do {                                                              \
		proto_cmd_free(&cmd);                                     \
		assert_ok(json);                                          \
		proto_cmd_free(&cmd);                                     \
	} while (0)

/* ---- every command ------------------------------------------------------ */

static void test_hello_decodes_name(void **state)
{
	assert_ok("{\"type\":\"hello\",\"name\":\"alice\"}");
	assert_int_equal(cmd.type, PROTO_HELLO);
	assert_str(cmd.name, "alice");
	assert_null(cmd.ref.p);
	assert_null(cmd.token.p);
}

static void test_join_decodes_room_since_epoch(void **state)
{
	assert_ok("{\"type\":\"join\",\"room\":\"lobby\"}");
	assert_int_equal(cmd.type, PROTO_JOIN);
	assert_str(cmd.room, "lobby");
	assert_false(cmd.has_since);
	assert_null(cmd.epoch.p);
	proto_cmd_free(&cmd);

	assert_ok("{\"type\":\"join\",\"room\":\"a:b\",\"since\":42,\"epoch\":\"00ff\"}");
	assert_str(cmd.room, "a:b");
	assert_true(cmd.has_since);
	assert_int_equal(cmd.since, 42);
	assert_str(cmd.epoch, "00ff");
	proto_cmd_free(&cmd);

	assert_ok("{\"type\":\"join\",\"room\":\"r\",\"since\":0}");
	assert_true(cmd.has_since);
	assert_int_equal(cmd.since, 0);
}

static void test_leave_decodes_room(void **state)
{
	assert_ok("{\"type\":\"leave\",\"room\":\"lobby\"}");
	assert_int_equal(cmd.type, PROTO_LEAVE);
	assert_str(cmd.room, "lobby");
}

static void test_send_decodes_room_id_body(void **state)
{
	assert_ok("{\"type\":\"send\",\"room\":\"lobby\",\"id\":\"m-1\",\"body\":\"hi \\\"you\\\"\"}");
	assert_int_equal(cmd.type, PROTO_SEND);
	assert_str(cmd.room, "lobby");
	assert_str(cmd.id, "m-1");
	assert_str(cmd.body, "hi \"you\"");
}

static void test_send_accepts_empty_body(void **state)
{
	assert_ok("{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"\"}");
	assert_int_equal(cmd.body.len, 0);
	assert_non_null(cmd.body.p);
}

static void test_dm_decodes_to_id_body(void **state)
{
	assert_ok("{\"type\":\"dm\",\"to\":\"bob\",\"id\":\"d1\",\"body\":\"psst\"}");
	assert_int_equal(cmd.type, PROTO_DM);
	assert_str(cmd.to, "bob");
	assert_str(cmd.id, "d1");
	assert_str(cmd.body, "psst");
}

static void test_history_decodes_with_defaults(void **state)
{
	assert_ok("{\"type\":\"history\",\"room\":\"lobby\"}");
	assert_int_equal(cmd.type, PROTO_HISTORY);
	assert_str(cmd.room, "lobby");
	assert_false(cmd.has_before);
	assert_false(cmd.has_after);
	assert_int_equal(cmd.limit, PROTO_HISTORY_DEFAULT);
	assert_int_equal(cmd.limit, 50);
}

static void test_history_decodes_before_after_limit(void **state)
{
	assert_ok("{\"type\":\"history\",\"room\":\"r\",\"before\":10,\"limit\":3}");
	assert_true(cmd.has_before);
	assert_int_equal(cmd.before, 10);
	assert_int_equal(cmd.limit, 3);
	proto_cmd_free(&cmd);

	assert_ok("{\"type\":\"history\",\"room\":\"r\",\"after\":7}");
	assert_true(cmd.has_after);
	assert_int_equal(cmd.after, 7);
	assert_false(cmd.has_before);
}

static void test_history_limit_clamps_to_500(void **state)
{
	assert_ok("{\"type\":\"history\",\"room\":\"r\",\"limit\":500}");
	assert_int_equal(cmd.limit, 500);
	proto_cmd_free(&cmd);
	assert_ok("{\"type\":\"history\",\"room\":\"r\",\"limit\":501}");
	assert_int_equal(cmd.limit, PROTO_HISTORY_MAX);
	proto_cmd_free(&cmd);
	assert_ok("{\"type\":\"history\",\"room\":\"r\",\"limit\":1000000}");
	assert_int_equal(cmd.limit, 500);
	proto_cmd_free(&cmd);
	assert_ok("{\"type\":\"history\",\"room\":\"r\",\"limit\":1}");
	assert_int_equal(cmd.limit, 1);
}

static void test_history_limit_zero_rejected(void **state)
{
	assert_rejected("{\"type\":\"history\",\"room\":\"r\",\"limit\":0}", PROTO_ERR_BAD_REQUEST);
}

static void test_history_before_and_after_together_rejected(void **state)
{
	assert_rejected("{\"type\":\"history\",\"room\":\"r\",\"before\":5,\"after\":1}",
			PROTO_ERR_BAD_REQUEST);
}

static void test_members_decodes_room(void **state)
{
	assert_ok("{\"type\":\"members\",\"room\":\"lobby\"}");
	assert_int_equal(cmd.type, PROTO_MEMBERS);
	assert_str(cmd.room, "lobby");
}

static void test_ping_decodes(void **state)
{
	assert_ok("{\"type\":\"ping\"}");
	assert_int_equal(cmd.type, PROTO_PING);
}

static void test_type_names_round_trip(void **state)
{
	assert_string_equal(proto_type_name(PROTO_HELLO), "hello");
	assert_string_equal(proto_type_name(PROTO_PING), "ping");
	assert_string_equal(proto_err_name(PROTO_ERR_BAD_REQUEST), "bad_request");
	assert_string_equal(proto_err_name(PROTO_ERR_NOT_AUTHENTICATED), "not_authenticated");
	assert_string_equal(proto_err_name(PROTO_ERR_TOO_LARGE), "too_large");
	assert_string_equal(proto_err_name(PROTO_ERR_INTERNAL), "internal");
}

/* ---- ref ---------------------------------------------------------------- */

static void test_ref_is_extracted(void **state)
{
	assert_ok("{\"type\":\"ping\",\"ref\":\"r-17\"}");
	assert_str(cmd.ref, "r-17");
}

static void test_ref_is_kept_when_the_command_fails(void **state)
{
	assert_int_equal(decode("{\"type\":\"join\",\"ref\":\"x9\",\"room\":\"bad room\"}"), -1);
	assert_int_equal(err.code, PROTO_ERR_BAD_REQUEST);
	assert_str(cmd.ref, "x9");
	proto_cmd_free(&cmd);

	assert_int_equal(decode("{\"type\":\"nope\",\"ref\":\"x10\"}"), -1);
	assert_str(cmd.ref, "x10");
	proto_cmd_free(&cmd);

	assert_int_equal(decode("{\"ref\":\"x11\"}"), -1);
	assert_str(cmd.ref, "x11");
}

static void test_ref_of_64_bytes_ok_65_rejected(void **state)
{
	char json[256], ref[80];

	memset(ref, 'r', 64);
	ref[64] = '\0';
	snprintf(json, sizeof json, "{\"type\":\"ping\",\"ref\":\"%s\"}", ref);
	assert_ok(json);
	assert_int_equal(cmd.ref.len, 64);
	proto_cmd_free(&cmd);

	memset(ref, 'r', 65);
	ref[65] = '\0';
	snprintf(json, sizeof json, "{\"type\":\"ping\",\"ref\":\"%s\"}", ref);
	assert_int_equal(decode(json), -1);
	assert_int_equal(err.code, PROTO_ERR_BAD_REQUEST);
	assert_null(cmd.ref.p);   /* an invalid ref is not echoed */
}

static void test_ref_not_a_string_rejected(void **state)
{
	assert_rejected("{\"type\":\"ping\",\"ref\":5}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"ping\",\"ref\":null}", PROTO_ERR_BAD_REQUEST);
}

/* ---- frame shape -------------------------------------------------------- */

static void test_invalid_json_rejected(void **state)
{
	assert_rejected("", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"ping\",}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{type:\"ping\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("not json", PROTO_ERR_BAD_REQUEST);
}

static void test_decode_respects_len_not_nul(void **state)
{
	const char *json = "{\"type\":\"ping\"}GARBAGE";

	/* only the first 15 bytes are the frame */
	assert_int_equal(decode_n(json, 15, MAX_BODY), 0);
	assert_int_equal(cmd.type, PROTO_PING);
	proto_cmd_free(&cmd);
	/* a frame cut short is invalid */
	assert_int_equal(decode_n(json, 10, MAX_BODY), -1);
	assert_int_equal(err.code, PROTO_ERR_BAD_REQUEST);
}

static void test_non_object_rejected(void **state)
{
	assert_rejected("[]", PROTO_ERR_BAD_REQUEST);
	assert_rejected("[{\"type\":\"ping\"}]", PROTO_ERR_BAD_REQUEST);
	assert_rejected("\"ping\"", PROTO_ERR_BAD_REQUEST);
	assert_rejected("42", PROTO_ERR_BAD_REQUEST);
	assert_rejected("null", PROTO_ERR_BAD_REQUEST);
}

static void test_missing_or_unknown_type_rejected(void **state)
{
	assert_rejected("{}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"name\":\"alice\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":7}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":null}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"shout\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"PING\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"Type\":\"ping\"}", PROTO_ERR_BAD_REQUEST);
}

static void test_unknown_fields_ignored(void **state)
{
	assert_ok("{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"b\","
		  "\"extra\":{\"nested\":[1,2,{\"x\":null}]},\"since\":\"junk\",\"to\":5}");
	assert_int_equal(cmd.type, PROTO_SEND);
	assert_str(cmd.body, "b");
	proto_cmd_free(&cmd);
	assert_accepted("{\"x\":1,\"type\":\"ping\",\"y\":[true,false]}");
}

static void test_deep_nesting_rejected_without_crashing(void **state)
{
	size_t n = 10000, i;
	char *buf = malloc(2 * n + 64);
	int rc;

	assert_non_null(buf);
	for (i = 0; i < n; i++)
		buf[i] = '[';
	rc = decode_n(buf, n, MAX_BODY);
	assert_int_equal(rc, -1);
	assert_int_equal(err.code, PROTO_ERR_BAD_REQUEST);
	proto_cmd_free(&cmd);

	/* balanced and deep, inside an otherwise valid frame */
	i = (size_t)sprintf(buf, "{\"type\":\"ping\",\"x\":");
	memset(buf + i, '[', n);
	memset(buf + i + n, ']', n);
	buf[i + 2 * n] = '}';
	rc = decode_n(buf, i + 2 * n + 1, MAX_BODY);
	free(buf);
	assert_int_equal(rc, -1);
	assert_int_equal(err.code, PROTO_ERR_BAD_REQUEST);
}

/* ---- names and rooms ---------------------------------------------------- */

static void test_name_charset_and_length(void **state)
{
	char json[128], name[64];

	assert_accepted("{\"type\":\"hello\",\"name\":\"A-z_0.9\"}");
	assert_accepted("{\"type\":\"hello\",\"name\":\"a\"}");
	memset(name, 'n', 32);
	name[32] = '\0';
	snprintf(json, sizeof json, "{\"type\":\"hello\",\"name\":\"%s\"}", name);
	assert_accepted(json);
	memset(name, 'n', 33);
	name[33] = '\0';
	snprintf(json, sizeof json, "{\"type\":\"hello\",\"name\":\"%s\"}", name);
	assert_rejected(json, PROTO_ERR_BAD_REQUEST);

	assert_rejected("{\"type\":\"hello\",\"name\":\"\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"hello\",\"name\":\"al ice\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"hello\",\"name\":\"a:b\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"hello\",\"name\":\"a/b\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"hello\",\"name\":\"\xc3\xa9t\xc3\xa9\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"hello\",\"name\":\"\\u00e9\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"hello\",\"name\":7}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"hello\"}", PROTO_ERR_BAD_REQUEST);
}

static void test_dm_to_uses_name_rules(void **state)
{
	assert_rejected("{\"type\":\"dm\",\"to\":\"b b\",\"id\":\"1\",\"body\":\"x\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"dm\",\"to\":\"\",\"id\":\"1\",\"body\":\"x\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"dm\",\"id\":\"1\",\"body\":\"x\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"dm\",\"to\":\"a:b\",\"id\":\"1\",\"body\":\"x\"}", PROTO_ERR_BAD_REQUEST);
}

static void test_room_charset_and_length(void **state)
{
	char json[160], room[80];

	assert_accepted("{\"type\":\"join\",\"room\":\"A-z_0.9:x\"}");
	memset(room, 'r', 64);
	room[64] = '\0';
	snprintf(json, sizeof json, "{\"type\":\"join\",\"room\":\"%s\"}", room);
	assert_accepted(json);
	memset(room, 'r', 65);
	room[65] = '\0';
	snprintf(json, sizeof json, "{\"type\":\"join\",\"room\":\"%s\"}", room);
	assert_rejected(json, PROTO_ERR_BAD_REQUEST);

	assert_rejected("{\"type\":\"join\",\"room\":\"\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"join\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"join\",\"room\":\"a b\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"join\",\"room\":\"a#b\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"join\",\"room\":[\"r\"]}", PROTO_ERR_BAD_REQUEST);
	/* every command that names a room checks it */
	assert_rejected("{\"type\":\"leave\",\"room\":\"a b\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"members\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"history\",\"room\":\"\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"send\",\"room\":\"a b\",\"id\":\"1\",\"body\":\"x\"}", PROTO_ERR_BAD_REQUEST);
}

static void test_validators(void **state)
{
	assert_true(proto_valid_name("bob", 3));
	assert_false(proto_valid_name("bob", 0));
	assert_false(proto_valid_name("b:b", 3));
	assert_false(proto_valid_name("b\0b", 3));
	assert_true(proto_valid_room("b:b", 3));
	assert_false(proto_valid_room("b\0b", 3));
	assert_false(proto_valid_room("x", 65));
}

/* ---- id and body -------------------------------------------------------- */

static void test_id_length_1_to_64(void **state)
{
	char json[200], id[80];

	memset(id, 'i', 64);
	id[64] = '\0';
	snprintf(json, sizeof json, "{\"type\":\"send\",\"room\":\"r\",\"id\":\"%s\",\"body\":\"x\"}", id);
	assert_accepted(json);
	memset(id, 'i', 65);
	id[65] = '\0';
	snprintf(json, sizeof json, "{\"type\":\"send\",\"room\":\"r\",\"id\":\"%s\",\"body\":\"x\"}", id);
	assert_rejected(json, PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"send\",\"room\":\"r\",\"id\":\"\",\"body\":\"x\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"send\",\"room\":\"r\",\"body\":\"x\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"send\",\"room\":\"r\",\"id\":1,\"body\":\"x\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"dm\",\"to\":\"b\",\"id\":\"\",\"body\":\"x\"}", PROTO_ERR_BAD_REQUEST);
}

static void test_body_missing_or_not_string_rejected(void **state)
{
	assert_rejected("{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\"}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":3}", PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"dm\",\"to\":\"b\",\"id\":\"1\",\"body\":null}", PROTO_ERR_BAD_REQUEST);
}

static void test_body_at_the_limit_ok_one_over_too_large(void **state)
{
	/* MAX_BODY = 16 bytes */
	assert_ok("{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"0123456789abcdef\"}");
	assert_int_equal(cmd.body.len, MAX_BODY);
	proto_cmd_free(&cmd);
	assert_rejected("{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"0123456789abcdefg\"}",
			PROTO_ERR_TOO_LARGE);
	assert_rejected("{\"type\":\"dm\",\"to\":\"b\",\"id\":\"1\",\"body\":\"0123456789abcdefg\"}",
			PROTO_ERR_TOO_LARGE);
}

static void test_body_limit_counts_decoded_bytes(void **state)
{
	/* 16 escaped quotes = 16 bytes decoded, 32 in the source: fits */
	assert_ok("{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":"
		  "\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\"}");
	assert_int_equal(cmd.body.len, 16);
	proto_cmd_free(&cmd);
	/* 8 x U+00E9 = 16 UTF-8 bytes: fits; 9 = 18: too large */
	assert_accepted("{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":"
			"\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\"}");
	assert_rejected("{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":"
			"\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\"}",
			PROTO_ERR_TOO_LARGE);
}

/* ---- integers ----------------------------------------------------------- */

static void test_integers_must_be_non_negative_integers(void **state)
{
	static const char *const bad[] = { "1.5", "-1", "\"3\"", "true", "null", "[1]", "1e300", "-0.5" };
	static const char *const fmt[] = {
		"{\"type\":\"join\",\"room\":\"r\",\"since\":%s}",
		"{\"type\":\"history\",\"room\":\"r\",\"before\":%s}",
		"{\"type\":\"history\",\"room\":\"r\",\"after\":%s}",
		"{\"type\":\"history\",\"room\":\"r\",\"limit\":%s}",
	};
	char json[128];
	size_t i, j;

	for (i = 0; i < sizeof fmt / sizeof fmt[0]; i++) {
		for (j = 0; j < sizeof bad / sizeof bad[0]; j++) {
			snprintf(json, sizeof json, fmt[i], bad[j]);
			proto_cmd_free(&cmd);
			if (decode(json) != -1 || err.code != PROTO_ERR_BAD_REQUEST)
				fail_msg("accepted: %s", json);
		}
		snprintf(json, sizeof json, fmt[i], "3");
		assert_accepted(json);
	}
}

static void test_integer_forms_that_are_exact_integers_accepted(void **state)
{
	assert_ok("{\"type\":\"join\",\"room\":\"r\",\"since\":3.0}");
	assert_int_equal(cmd.since, 3);
	proto_cmd_free(&cmd);
	assert_ok("{\"type\":\"join\",\"room\":\"r\",\"since\":9007199254740992}");
	assert_int_equal(cmd.since, 9007199254740992ULL);
	proto_cmd_free(&cmd);
	assert_ok("{\"type\":\"history\",\"room\":\"r\",\"before\":0}");
	assert_true(cmd.has_before);
	assert_int_equal(cmd.before, 0);
}

/* ---- strict RFC 8259 ---------------------------------------------------- */

/* What cJSON alone accepts (and sometimes alters): each must be refused. */
static void test_json_that_rfc8259_forbids_rejected(void **state)
{
	static const char *const bad[] = {
		/* \u escapes with bad hex: cJSON decoded them as U+0000 and cut the body short */
		"{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"ab\\uZZZZcd\"}",
		"{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"ab\\u00g1cd\"}",
		"{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"ab\\u12\"}",
		/* escapes RFC 8259 does not have */
		"{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"a\\x41\"}",
		"{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"a\\'\"}",
		/* raw control characters inside a string */
		"{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"a\tb\"}",
		"{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"a\nb\"}",
		/* unpaired surrogates */
		"{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"\\ud800\"}",
		"{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"\\udc00x\"}",
		"{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"\\ud800\\u0041\"}",
		/* numbers outside the grammar */
		"{\"type\":\"join\",\"room\":\"r\",\"since\":+1}",
		"{\"type\":\"join\",\"room\":\"r\",\"since\":01}",
		"{\"type\":\"join\",\"room\":\"r\",\"since\":1.}",
		"{\"type\":\"join\",\"room\":\"r\",\"since\":.5}",
		"{\"type\":\"join\",\"room\":\"r\",\"since\":1e}",
		"{\"type\":\"join\",\"room\":\"r\",\"since\":-}",
		"{\"type\":\"ping\",\"x\":[1,]}",
		"{\"type\":\"ping\",\"x\":tru}",
		"{\"type\":\"ping\",\"x\":nul}",
		"{\"type\":\"ping\" \"x\":1}",
		"{\"type\":\"ping\",\"x\":\"unterminated}",
		"\xef\xbb\xbf{\"type\":\"ping\"}",
	};
	size_t i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		proto_cmd_free(&cmd);
		if (decode(bad[i]) != -1 || err.code != PROTO_ERR_BAD_REQUEST)
			fail_msg("accepted: %s", bad[i]);
		assert_non_null(strstr(err.message, "JSON") ? err.message : NULL);
	}
	/* a \u0000 keeps its own message */
	proto_cmd_free(&cmd);
	assert_int_equal(decode("{\"type\":\"ping\",\"x\":\"\\u0000\"}"), -1);
	assert_string_equal(err.message, "strings must not contain \\u0000");
}

static void test_strict_json_still_accepts_every_valid_form(void **state)
{
	assert_ok("{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"\\ud83d\\ude00\\/\\\"\"}");
	assert_str(cmd.body, "\xf0\x9f\x98\x80/\"");
	proto_cmd_free(&cmd);
	assert_ok(" \r\n\t{ \"type\" : \"ping\" , \"x\" : [ 1 , -0.5e+3 , 2E-2, 0, true, false, null, {}, [] , {\"a\":{}} ] } \n");
	proto_cmd_free(&cmd);
	assert_ok("{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"\\u00E9\\u20ac\"}");
	assert_str(cmd.body, "\xc3\xa9\xe2\x82\xac");
}

static int decode_nested(int depth)
{
	char buf[256];
	int i, n = sprintf(buf, "{\"type\":\"ping\",\"x\":");

	for (i = 0; i < depth; i++)
		buf[n++] = '[';
	for (i = 0; i < depth; i++)
		buf[n++] = ']';
	buf[n++] = '}';
	proto_cmd_free(&cmd);
	return decode_n(buf, (size_t)n, MAX_BODY);
}

static void test_strict_json_nesting_bound(void **state)
{
	/* the frame object itself is level 1 */
	assert_int_equal(decode_nested(31), 0);
	assert_int_equal(decode_nested(32), -1);
	assert_string_equal(err.message, "invalid JSON: nested too deep");
}

/* ---- NUL escapes -------------------------------------------------------- */

static void test_nul_escape_in_a_string_rejected(void **state)
{
	assert_rejected("{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"a\\u0000b\"}",
			PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"hello\",\"name\":\"al\\u0000ice\"}", PROTO_ERR_BAD_REQUEST);
	/* three backslashes: an escaped backslash, then \u0000 */
	assert_rejected("{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"\\\\\\u0000\"}",
			PROTO_ERR_BAD_REQUEST);
	/* in an ignored field too: the document holds a NUL */
	assert_rejected("{\"type\":\"ping\",\"x\":\"\\u0000\"}", PROTO_ERR_BAD_REQUEST);
}

static void test_escaped_backslash_before_u0000_text_accepted(void **state)
{
	/* JSON source "\\u0000" = a backslash followed by the text u0000 */
	assert_ok("{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"\\\\u0000\"}");
	assert_str(cmd.body, "\\u0000");
	proto_cmd_free(&cmd);
	/* and plain text u0000 */
	assert_ok("{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"u0000\"}");
	assert_str(cmd.body, "u0000");
}

static void test_other_control_escapes_accepted(void **state)
{
	assert_ok("{\"type\":\"send\",\"room\":\"r\",\"id\":\"1\",\"body\":\"\\u0001\\n\\t\"}");
	assert_int_equal(cmd.body.len, 3);
	assert_memory_equal(cmd.body.p, "\x01\n\t", 3);
}

/* Regression tests for bugs these tests found. */
/* A frame is one JSON object: trailing bytes after it make it invalid.
 * cJSON_ParseWithLength() stops after the first value and ignores the rest. */
static void test_trailing_data_after_the_object_rejected(void **state)
{
	assert_rejected("{\"type\":\"ping\"}{\"type\":\"hello\",\"name\":\"x\"}",
			PROTO_ERR_BAD_REQUEST);
	assert_rejected("{\"type\":\"ping\"} trailing", PROTO_ERR_BAD_REQUEST);
	/* trailing whitespace is still fine */
	assert_accepted("{\"type\":\"ping\"} \n");
}

static void test_utf8_validator(void **state)
{
	static const struct { const char *s; size_t n; int ok; } cases[] = {
		{ "", 0, 1 },
		{ "plain ascii", 11, 1 },
		{ "\xc3\xa9", 2, 1 },                       /* U+00E9 */
		{ "\xe2\x82\xac", 3, 1 },                   /* U+20AC */
		{ "\xf0\x9f\x98\x80", 4, 1 },               /* U+1F600 */
		{ "\xf4\x8f\xbf\xbf", 4, 1 },               /* U+10FFFF */
		{ "\xc3", 1, 0 },                           /* truncated */
		{ "\xe2\x82", 2, 0 },                       /* truncated */
		{ "\x80", 1, 0 },                           /* lone continuation */
		{ "\xc0\xaf", 2, 0 },                       /* overlong */
		{ "\xe0\x80\xaf", 3, 0 },                   /* overlong */
		{ "\xf0\x80\x80\xaf", 4, 0 },               /* overlong */
		{ "\xed\xa0\x80", 3, 0 },                   /* surrogate U+D800 */
		{ "\xf4\x90\x80\x80", 4, 0 },               /* > U+10FFFF */
		{ "\xff", 1, 0 },
		{ "a\xc3\xa9\xc3", 4, 0 },                  /* valid then truncated */
		{ "\xc3\x28", 2, 0 },                       /* bad continuation */
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(proto_utf8_valid((const unsigned char *)cases[i].s, cases[i].n), cases[i].ok);
}

/* ASCII is skipped 8 bytes at a time: a bad or good sequence at every
 * offset of a longer ASCII run, and at its very end, is still judged. */
static void test_utf8_every_offset(void **state)
{
	unsigned char b[48];
	size_t at, len;

	(void)state;
	for (len = 1; len <= sizeof(b); len++) {
		for (at = 0; at < len; at++) {
			memset(b, 'a', sizeof(b));
			b[at] = 0xff;
			assert_int_equal(proto_utf8_valid(b, len), 0);
			b[at] = 0xc3;                   /* truncated if at is last */
			assert_int_equal(proto_utf8_valid(b, len), 0);
			if (at + 1 < len) {
				b[at + 1] = 0xa9;       /* U+00E9, then ASCII again */
				assert_int_equal(proto_utf8_valid(b, len), 1);
				b[at + 1] = 0x28;       /* bad continuation */
				assert_int_equal(proto_utf8_valid(b, len), 0);
			}
		}
		memset(b, 'a', sizeof(b));
		assert_int_equal(proto_utf8_valid(b, len), 1);
	}
}

#define T(f) cmocka_unit_test_teardown(f, teardown)

/* ---- encoding: every event the server sends ----------------------------- */

/* Parse an encoded event (and drop the frame): a JSON object of that type. */
static cJSON *event(struct msgbuf *mb, const char *type)
{
	cJSON *o, *t;

	assert_non_null(mb);
	assert_null(proto_json_strict((const char *)mb->data, mb->len));
	o = cJSON_ParseWithLength((const char *)mb->data, mb->len);
	msgbuf_unref(mb);
	assert_true(cJSON_IsObject(o));
	t = cJSON_GetObjectItemCaseSensitive(o, "type");
	assert_true(cJSON_IsString(t));
	assert_string_equal(t->valuestring, type);
	return o;
}

static const char *field_str(const cJSON *o, const char *k)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);

	assert_true(cJSON_IsString(it));
	return it->valuestring;
}

static double field_num(const cJSON *o, const char *k)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);

	assert_true(cJSON_IsNumber(it));
	return it->valuedouble;
}

static void test_encode_message_keeps_the_body_byte_for_byte(void **state)
{
	static const char body[] = "q\"uo\\te\n\t\x01 \xc3\xa9 \xf0\x9f\x98\x80 </script>";
	struct proto_msg m = { 42, 1700000000123ULL, "alice", "m-1", body, sizeof body - 1, 0, 0, 0 };
	cJSON *o = event(proto_encode_message("lobby", &m), "message");

	assert_string_equal(field_str(o, "room"), "lobby");
	assert_true(field_num(o, "seq") == 42);
	assert_string_equal(field_str(o, "from"), "alice");
	assert_string_equal(field_str(o, "id"), "m-1");
	assert_string_equal(field_str(o, "body"), body);
	assert_true(field_num(o, "ts") == 1700000000123.0);
	cJSON_Delete(o);
	o = event(proto_encode_direct(&m), "direct");
	assert_string_equal(field_str(o, "body"), body);
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "room"));
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "seq"));
	cJSON_Delete(o);
}

static void test_encode_replies_echo_ref_only_when_given(void **state)
{
	struct proto_str ref = { "r\"1", 3 }, none = { NULL, 0 };
	cJSON *o;

	o = event(proto_encode_error(PROTO_ERR_FORBIDDEN, "not \"yours\"", &ref), "error");
	assert_string_equal(field_str(o, "code"), "forbidden");
	assert_string_equal(field_str(o, "message"), "not \"yours\"");
	assert_string_equal(field_str(o, "ref"), "r\"1");
	cJSON_Delete(o);
	o = event(proto_encode_pong(&none), "pong");
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "ref"));
	cJSON_Delete(o);
	o = event(proto_encode_ack("d1", NULL, 0, NULL), "ack");     /* a dm's ack */
	assert_string_equal(field_str(o, "id"), "d1");
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "room"));
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "seq"));
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "ref"));
	cJSON_Delete(o);
	o = event(proto_encode_ack("m1", "r", 7, "x"), "ack");
	assert_true(field_num(o, "seq") == 7);
	assert_string_equal(field_str(o, "ref"), "x");
	cJSON_Delete(o);
	o = event(proto_encode_welcome("s1", "bob", 25.5, "node-a", 0, &ref), "welcome");
	assert_true(field_num(o, "heartbeat") == 25.5);
	assert_string_equal(field_str(o, "node"), "node-a");
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "exp"));
	cJSON_Delete(o);
	o = event(proto_encode_welcome("s1", "bob", 25, "n", 1764860400.5, NULL), "welcome");
	assert_true(field_num(o, "exp") == 1764860400.5);
	cJSON_Delete(o);
	o = event(proto_encode_left("r", NULL, &ref), "left");
	assert_string_equal(field_str(o, "room"), "r");
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "reason"));
	cJSON_Delete(o);
	o = event(proto_encode_left("r", "token", NULL), "left");
	assert_string_equal(field_str(o, "reason"), "token");
	cJSON_Delete(o);
	o = event(proto_encode_presence("r", "bob", 0), "presence");
	assert_string_equal(field_str(o, "state"), "leave");
	cJSON_Delete(o);
	o = event(proto_encode_reset("r", "00ff", 9), "reset");
	assert_string_equal(field_str(o, "epoch"), "00ff");
	assert_true(field_num(o, "seq") == 9);
	cJSON_Delete(o);
}

static void test_encode_joined_and_members_list_names(void **state)
{
	struct proto_str ref = { "j", 1 };
	struct jsonw w;
	cJSON *o, *names;

	proto_w_joined(&w, "r", 3, "abcd", 2, 2, NULL);
	proto_w_name(&w, "alice");
	proto_w_name(&w, "b\"ob");
	o = event(proto_encode_joined_end(&w, 1, 0, 1, &ref), "joined");
	names = cJSON_GetObjectItemCaseSensitive(o, "members");
	assert_int_equal(cJSON_GetArraySize(names), 2);
	assert_string_equal(cJSON_GetArrayItem(names, 1)->valuestring, "b\"ob");
	assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(o, "recovered")));
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "truncated")));
	assert_string_equal(field_str(o, "ref"), "j");
	assert_true(field_num(o, "read") == 2);
	cJSON_Delete(o);
	proto_w_joined(&w, "r", 0, "abcd", 0, 0, &(struct proto_room_info){ "moderator", 1, 0, 50, "t\"x" });
	o = event(proto_encode_joined_end(&w, 0, 1, 1, NULL), "joined");
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "members")), 0);
	assert_string_equal(field_str(o, "role"), "moderator");
	names = cJSON_GetObjectItemCaseSensitive(o, "settings");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(names, "private")));
	assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(names, "read_only")));
	assert_true(field_num(names, "history") == 50);
	assert_string_equal(field_str(names, "topic"), "t\"x");
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "recovered"));
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "truncated"));
	cJSON_Delete(o);
	proto_w_members(&w, "r", 1);
	proto_w_name(&w, "carol");
	o = event(proto_encode_members_end(&w, NULL), "members");
	assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "names"), 0)->valuestring,
			    "carol");
	cJSON_Delete(o);
}

static void test_encode_token_and_moderation_events(void **state)
{
	struct proto_str ref = { "r", 1 };
	struct proto_mod_event e = { .action = "ban", .user = "bob", .by = "mo",
				     .reason = { "spam \"links\"", 12 }, .has_until = 1, .until = 0 };
	struct msgbuf *mb;
	cJSON *o;

	(void)state;
	o = event(proto_encode_token_expiring(1000.5, 29.6, "exp"), "token_expiring");
	assert_true(field_num(o, "exp") == 1000.5 && field_num(o, "in") == 30);
	assert_string_equal(field_str(o, "reason"), "exp");
	cJSON_Delete(o);
	o = event(proto_encode_refreshed(0, &ref), "refreshed");
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "exp"));
	assert_string_equal(field_str(o, "ref"), "r");
	cJSON_Delete(o);
	o = event(proto_encode_removed("banned", "lobby", "mo", NULL, 1, 0), "banned");
	assert_true(field_num(o, "until") == 0);
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "reason"));
	cJSON_Delete(o);
	o = event(proto_encode_presence_cause("lobby", "bob", "kicked", "mo", "x"), "presence");
	assert_string_equal(field_str(o, "cause"), "kicked");
	assert_string_equal(field_str(o, "state"), "leave");
	cJSON_Delete(o);
	/* A moderation body is a JSON object of its own (not an event). */
	mb = proto_encode_mod_body(&e);
	assert_non_null(mb);
	o = cJSON_ParseWithLength((const char *)mb->data, mb->len);
	msgbuf_unref(mb);
	assert_string_equal(field_str(o, "action"), "ban");
	assert_string_equal(field_str(o, "reason"), "spam \"links\"");
	assert_true(field_num(o, "until") == 0);
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "seq"));
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "type"));
	cJSON_Delete(o);
}

static void test_encode_history_embeds_message_events(void **state)
{
	struct proto_msg m1 = { 1, 5, "a", "x", "one", 3, 0, 0, 0 }, m2 = { 2, 6, "b", "y", "two", 3, 0, 0, 0 };
	struct msgbuf *v[2] = { proto_encode_message("r", &m1), proto_encode_message("r", &m2) };
	cJSON *o, *msgs;

	assert_non_null(v[0]);
	assert_non_null(v[1]);
	o = event(proto_encode_history("r", v, 2, NULL), "history");
	msgbuf_unref(v[0]);
	msgbuf_unref(v[1]);
	msgs = cJSON_GetObjectItemCaseSensitive(o, "messages");
	assert_int_equal(cJSON_GetArraySize(msgs), 2);
	assert_string_equal(field_str(cJSON_GetArrayItem(msgs, 1), "body"), "two");
	assert_true(field_num(cJSON_GetArrayItem(msgs, 0), "seq") == 1);
	cJSON_Delete(o);
	o = event(proto_encode_history("r", v, 0, NULL), "history");
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "messages")), 0);
	cJSON_Delete(o);
}

/* ---- conversations (issue 14) ------------------------------------------- */

static int dec(const char *json, size_t max_body)
{
	proto_cmd_free(&cmd);
	return decode_n(json, strlen(json), max_body);
}

static void test_decode_edit_delete_react_typing_read(void **state)
{
	assert_int_equal(dec("{\"type\":\"edit\",\"room\":\"r\",\"seq\":3,\"body\":\"x\"}", 100), 0);
	assert_int_equal(cmd.type, PROTO_EDIT);
	assert_true(cmd.seq == 3 && cmd.body.len == 1 && !cmd.id.p);
	assert_int_equal(dec("{\"type\":\"edit\",\"room\":\"r\",\"seq\":0,\"body\":\"x\"}", 100), -1);
	assert_int_equal(err.code, PROTO_ERR_BAD_REQUEST);
	assert_int_equal(dec("{\"type\":\"edit\",\"room\":\"r\",\"seq\":1,\"body\":\"xxxx\"}", 3), -1);
	assert_int_equal(err.code, PROTO_ERR_TOO_LARGE);
	assert_int_equal(dec("{\"type\":\"react\",\"room\":\"r\",\"seq\":1,\"reaction\":\"\xf0\x9f\x91\x8d\",\"on\":false}", 100), 0);
	assert_true(cmd.type == PROTO_REACT && cmd.reaction.len == 4 && cmd.on == 0);
	assert_int_equal(dec("{\"type\":\"react\",\"room\":\"r\",\"seq\":1,\"reaction\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}", 100), -1);
	assert_int_equal(err.code, PROTO_ERR_TOO_LARGE);
	assert_int_equal(dec("{\"type\":\"react\",\"room\":\"r\",\"seq\":1,\"reaction\":\"a\\tb\"}", 100), -1);
	assert_int_equal(err.code, PROTO_ERR_BAD_REQUEST);
	assert_int_equal(dec("{\"type\":\"typing\",\"room\":\"r\"}", 100), 0);
	assert_true(cmd.type == PROTO_TYPING && cmd.on == 1);
	assert_int_equal(dec("{\"type\":\"read\",\"room\":\"r\",\"seq\":0}", 100), 0);
	assert_true(cmd.type == PROTO_READ && cmd.seq == 0);
	assert_int_equal(dec("{\"type\":\"history\",\"room\":\"r\",\"state\":1}", 100), -1);
}

static void test_dm_room_names(void **state)
{
	char room[PROTO_ROOM_MAX + 1];
	const char *peer;
	size_t len;
	char longa[PROTO_NAME_MAX + 1], longroom[2 * PROTO_NAME_MAX + 3];

	proto_dm_room(room, "bob", "alice");
	assert_string_equal(room, "@alice:bob");
	assert_true(proto_valid_room(room, strlen(room)));
	assert_false(proto_valid_room("@bob:alice", 10));
	assert_false(proto_valid_room("@alice", 6));
	assert_false(proto_valid_room("@a:b:c", 6));
	assert_false(proto_valid_room("@:b", 3));
	assert_true(proto_valid_room("@a:a", 4));
	assert_int_equal(proto_dm_peer(room, strlen(room), "bob", &peer, &len), 1);
	assert_true(len == 5 && !memcmp(peer, "alice", 5));
	assert_int_equal(proto_dm_peer(room, strlen(room), "carol", &peer, &len), 1);
	assert_null(peer);
	assert_int_equal(proto_dm_peer("lobby", 5, "bob", &peer, &len), 0);
	memset(longa, 'a', PROTO_NAME_MAX);
	longa[PROTO_NAME_MAX] = '\0';
	proto_dm_room(longroom, longa, "zz");
	assert_int_equal(strlen(longroom), PROTO_NAME_MAX + 4);
	assert_true(proto_valid_room(longroom, strlen(longroom)));
	assert_false(proto_valid_room("toolong-toolong-toolong-toolong-toolong-toolong-toolong-toolong-x", 65));
}

static void test_encode_conversation_events(void **state)
{
	struct proto_msg e = { 9, 7, "alice", "e1", "new", 3, PROTO_KIND_EDIT, 4, 0 };
	struct proto_msg d = { 4, 7, "alice", "m4", "secret", 6, PROTO_KIND_MESSAGE, 0, 1 };
	struct proto_msg x = { 10, 8, "bob", "r1", "+1", 2, PROTO_KIND_UNREACT, 4, 0 };
	cJSON *o;

	o = event(proto_encode_message("r", &e), "edit");
	assert_true(field_num(o, "target") == 4 && field_num(o, "seq") == 9);
	assert_string_equal(field_str(o, "body"), "new");
	cJSON_Delete(o);
	o = event(proto_encode_message("r", &d), "message");
	assert_string_equal(field_str(o, "body"), "");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "deleted")));
	cJSON_Delete(o);
	o = event(proto_encode_message("r", &x), "react");
	assert_string_equal(field_str(o, "reaction"), "+1");
	assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(o, "on")));
	assert_null(cJSON_GetObjectItemCaseSensitive(o, "body"));
	cJSON_Delete(o);
	o = event(proto_encode_typing("r", "alice", 1, 5000), "typing");
	assert_true(field_num(o, "ttl") == 5000);
	cJSON_Delete(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_hello_decodes_name),
		T(test_join_decodes_room_since_epoch),
		T(test_leave_decodes_room),
		T(test_send_decodes_room_id_body),
		T(test_send_accepts_empty_body),
		T(test_dm_decodes_to_id_body),
		T(test_history_decodes_with_defaults),
		T(test_history_decodes_before_after_limit),
		T(test_history_limit_clamps_to_500),
		T(test_history_limit_zero_rejected),
		T(test_history_before_and_after_together_rejected),
		T(test_members_decodes_room),
		T(test_ping_decodes),
		T(test_type_names_round_trip),
		T(test_ref_is_extracted),
		T(test_ref_is_kept_when_the_command_fails),
		T(test_ref_of_64_bytes_ok_65_rejected),
		T(test_ref_not_a_string_rejected),
		T(test_invalid_json_rejected),
		T(test_decode_respects_len_not_nul),
		T(test_non_object_rejected),
		T(test_missing_or_unknown_type_rejected),
		T(test_unknown_fields_ignored),
		T(test_deep_nesting_rejected_without_crashing),
		T(test_name_charset_and_length),
		T(test_dm_to_uses_name_rules),
		T(test_room_charset_and_length),
		T(test_validators),
		T(test_id_length_1_to_64),
		T(test_body_missing_or_not_string_rejected),
		T(test_body_at_the_limit_ok_one_over_too_large),
		T(test_body_limit_counts_decoded_bytes),
		T(test_integers_must_be_non_negative_integers),
		T(test_integer_forms_that_are_exact_integers_accepted),
		T(test_json_that_rfc8259_forbids_rejected),
		T(test_strict_json_still_accepts_every_valid_form),
		T(test_strict_json_nesting_bound),
		T(test_nul_escape_in_a_string_rejected),
		T(test_escaped_backslash_before_u0000_text_accepted),
		T(test_other_control_escapes_accepted),
		T(test_trailing_data_after_the_object_rejected),
		T(test_utf8_validator),
		T(test_utf8_every_offset),
		T(test_encode_message_keeps_the_body_byte_for_byte),
		T(test_encode_replies_echo_ref_only_when_given),
		T(test_encode_joined_and_members_list_names),
		T(test_encode_history_embeds_message_events),
		T(test_decode_edit_delete_react_typing_read),
		T(test_dm_room_names),
		T(test_encode_conversation_events),
		T(test_encode_token_and_moderation_events),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
