/*
 * test_config.c - config loading: defaults, every key, and every kind of error.
 *
 * Each test writes its TOML into a temp file (mkstemp in $TMPDIR or /tmp),
 * loads it and removes it. Error messages are compared whole, since their
 * exact form ("FILE:LINE: KEY: message") is part of the contract.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char path[PATH_MAX]; /* the temp file of the current test */

static void write_temp(const char *text)
{
	const char *dir = getenv("TMPDIR");
	snprintf(path, sizeof path, "%s/chatd-test-config-XXXXXX", dir && *dir ? dir : "/tmp");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	size_t len = strlen(text);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

/* Writes text to a temp file, loads it into *c, removes the file. */
static int load(const char *text, struct config *c, char *err, size_t errlen)
{
	write_temp(text);
	int rc = config_load(path, c, err, errlen);
	unlink(path);
	return rc;
}

static void assert_zeroed(const struct config *c)
{
	assert_null(c->listen);
	assert_int_equal(c->port, 0);
	assert_null(c->node_id);
	assert_true(c->handshake_timeout == 0 && c->shutdown_timeout == 0);
	assert_int_equal(c->max_connections, 0);
	assert_int_equal(c->max_connections_per_ip, 0);
	assert_null(c->allowed_origins);
	assert_int_equal(c->allowed_origins_count, 0);
	assert_null(c->api_listen);
	assert_null(c->api_allow);
	assert_int_equal(c->api_allow_count, 0);
	assert_true(c->heartbeat_interval == 0 && c->heartbeat_timeout == 0);
	assert_int_equal(c->max_message_bytes, 0);
	assert_int_equal(c->max_frame_bytes, 0);
	assert_int_equal(c->send_queue_messages, 0);
	assert_int_equal(c->send_queue_bytes, 0);
	assert_int_equal(c->total_queue_bytes, 0);
	assert_int_equal(c->slow_consumer, 0);
	assert_true(c->rate == 0 && c->burst == 0);
	assert_int_equal(c->sessions_per_name, 0);
	assert_int_equal(c->max_rooms, 0);
	assert_int_equal(c->messages_per_room, 0);
	assert_int_equal(c->dedup_window, 0);
	assert_int_equal(c->log_level, 0);
	assert_int_equal(c->log_format, 0);
}

/* Every value except node_id (the hostname) as documented in config.h. */
static void assert_defaults(const struct config *c)
{
	assert_string_equal(c->listen, "127.0.0.1");
	assert_int_equal(c->port, 8080);
	assert_non_null(c->node_id);
	size_t n = strlen(c->node_id);
	assert_true(n >= 1 && n <= 64);
	assert_int_equal(strspn(c->node_id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"), n);
	assert_true(c->handshake_timeout == 10);
	assert_true(c->shutdown_timeout == 5);
	assert_int_equal(c->max_connections, 10000);
	assert_int_equal(c->max_connections_per_ip, 0);
	assert_int_equal(c->max_pending_per_ip, 32);
	assert_true(c->header_timeout == 5);
	assert_null(c->allowed_origins);
	assert_int_equal(c->allowed_origins_count, 0);
	assert_true(c->heartbeat_interval == 25);
	assert_true(c->heartbeat_timeout == 60);
	assert_int_equal(c->max_message_bytes, 4096);
	assert_int_equal(c->max_frame_bytes, 65536);
	assert_int_equal(c->send_queue_messages, 256);
	assert_int_equal(c->send_queue_bytes, 1048576);
	assert_true(c->total_queue_bytes == 268435456LL);
	assert_int_equal(c->slow_consumer, CONFIG_SLOW_CLOSE);
	assert_true(c->rate == 20);
	assert_true(c->burst == 40);
	assert_int_equal(c->sessions_per_name, 1);
	assert_int_equal(c->max_rooms, 10000);
	assert_int_equal(c->messages_per_room, 1000);
	assert_int_equal(c->dedup_window, 1000);
	assert_int_equal(c->log_level, CONFIG_LOG_INFO);
	assert_int_equal(c->log_format, CONFIG_LOG_TEXT);
	assert_string_equal(c->tls_ciphers, CONFIG_TLS_CIPHERS);
	assert_string_equal(c->tls_ciphersuites, CONFIG_TLS_CIPHERSUITES);
}

/* Loading text must fail with exactly "<path>:<suffix>" and leave *c zeroed. */
static void expect_error(const char *text, const char *suffix)
{
	struct config c;
	char err[512], want[PATH_MAX + 512];
	memset(&c, 0xa5, sizeof c); /* garbage in: must come back zeroed */
	assert_int_equal(load(text, &c, err, sizeof err), -1);
	assert_zeroed(&c);
	snprintf(want, sizeof want, "%s:%s", path, suffix);
	assert_string_equal(err, want);
	assert_null(strchr(err, '\n'));
}

static void test_defaults_function(void **state)
{
	struct config c;
	assert_int_equal(config_defaults(&c), 0);
	assert_defaults(&c);
	char host[256] = "";
	if (gethostname(host, sizeof host - 1) == 0 && host[0] && strlen(host) <= 64 &&
	    strspn(host, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-") == strlen(host))
		assert_string_equal(c.node_id, host);
	config_free(&c);
	assert_zeroed(&c);
}

static void test_empty_file_gives_defaults(void **state)
{
	struct config c;
	char err[256] = "untouched";
	assert_int_equal(load("", &c, err, sizeof err), 0);
	assert_string_equal(err, "");
	assert_defaults(&c);
	config_free(&c);

	/* Comments and empty known tables change nothing either. */
	assert_int_equal(load("# nothing\n[server]\n[heartbeat]\n[limits]\n[history]\n[log]\n", &c, err, sizeof err), 0);
	assert_defaults(&c);
	config_free(&c);
}

static void test_every_key(void **state)
{
	const char *text =
		"[server]\n"
		"listen = \"0.0.0.0\"\n"
		"port = 0\n"
		"node_id = \"node-1.eu:a_b\"\n"
		"handshake_timeout = 2.5\n"
		"shutdown_timeout = 0\n"
		"max_connections = 500\n"
		"max_connections_per_ip = 7\n"
		"max_pending_per_ip = 3\n"
		"header_timeout = 1.5\n"
		"allowed_origins = [\"https://chat.example.com\", \"http://localhost:8080\"]\n"
		"[api]\n"
		"listen = \"127.0.0.1\"\n"
		"port = 9100\n"
		"allow = [\"10.0.0.0/8\", \"::1\"]\n"
		"[heartbeat]\n"
		"interval = 0.5\n"
		"timeout = 1.25\n"
		"[limits]\n"
		"max_message_bytes = 100\n"
		"max_frame_bytes = 356\n"
		"send_queue_messages = 3\n"
		"send_queue_bytes = 2048\n"
		"total_queue_bytes = 8589934592\n"
		"slow_consumer = \"drop_oldest\"\n"
		"rate = 5\n"
		"burst = 7.5\n"
		"sessions_per_name = 2\n"
		"max_rooms = 7\n"
		"[history]\n"
		"messages_per_room = 0\n"
		"dedup_window = 10\n"
		"[log]\n"
		"level = \"debug\"\n"
		"format = \"json\"\n";
	struct config c;
	char err[256];
	assert_int_equal(load(text, &c, err, sizeof err), 0);
	assert_string_equal(c.listen, "0.0.0.0");
	assert_int_equal(c.port, 0);
	assert_string_equal(c.node_id, "node-1.eu:a_b");
	assert_true(c.handshake_timeout == 2.5);
	assert_true(c.shutdown_timeout == 0);
	assert_int_equal(c.max_connections, 500);
	assert_int_equal(c.max_connections_per_ip, 7);
	assert_int_equal(c.max_pending_per_ip, 3);
	assert_true(c.header_timeout == 1.5);
	assert_int_equal(c.allowed_origins_count, 2);
	assert_string_equal(c.allowed_origins[0], "https://chat.example.com");
	assert_string_equal(c.allowed_origins[1], "http://localhost:8080");
	assert_string_equal(c.api_listen, "127.0.0.1");
	assert_int_equal(c.api_port, 9100);
	assert_int_equal(c.api_allow_count, 2);
	assert_string_equal(c.api_allow[1], "::1");
	assert_true(c.heartbeat_interval == 0.5);
	assert_true(c.heartbeat_timeout == 1.25);
	assert_int_equal(c.max_message_bytes, 100);
	assert_int_equal(c.max_frame_bytes, 356);
	assert_int_equal(c.send_queue_messages, 3);
	assert_int_equal(c.send_queue_bytes, 2048);
	assert_true(c.total_queue_bytes == 8589934592LL);
	assert_int_equal(c.slow_consumer, CONFIG_SLOW_DROP_OLDEST);
	assert_true(c.rate == 5);
	assert_true(c.burst == 7.5);
	assert_int_equal(c.sessions_per_name, 2);
	assert_int_equal(c.max_rooms, 7);
	assert_int_equal(c.messages_per_room, 0);
	assert_int_equal(c.dedup_window, 10);
	assert_int_equal(c.log_level, CONFIG_LOG_DEBUG);
	assert_int_equal(c.log_format, CONFIG_LOG_JSON);
	config_free(&c);
	assert_zeroed(&c);
}

static void test_other_toml_spellings(void **state)
{
	/* Dotted keys and inline tables are the same tables. */
	struct config c;
	char err[256];
	assert_int_equal(load("server.port = 9000\n"
			      "log = { level = \"warn\" }\n"
			      "[limits]\n"
			      "rate = 1e1\n",
			      &c, err, sizeof err), 0);
	assert_int_equal(c.port, 9000);
	assert_int_equal(c.log_level, CONFIG_LOG_WARN);
	assert_true(c.rate == 10);
	assert_int_equal(c.max_connections, 10000);
	config_free(&c);

	/* An explicitly empty origin list is the default "any". */
	assert_int_equal(load("[server]\nallowed_origins = []\n", &c, err, sizeof err), 0);
	assert_null(c.allowed_origins);
	assert_int_equal(c.allowed_origins_count, 0);
	config_free(&c);
}

static void test_unknown_key(void **state)
{
	expect_error("[server]\nport = 1\nprot = 2\n", "3: server.prot: unknown key");
	expect_error("# top\nverbose = true\n", "2: verbose: unknown key");
	expect_error("[limits]\nrate = 1\n\n\n\nmax_msg_bytes = 10\n", "6: limits.max_msg_bytes: unknown key");
	/* A sub-table of a known table is an unknown key of that table. */
	expect_error("[server]\n[server.tls]\ncert = \"x\"\n", "2: server.tls: unknown key");
	/* Several errors: the one nearest the top wins, whatever the key order. */
	expect_error("[server]\nzzz = 1\n[limits]\naaa = 2\nrate = 0\n", "2: server.zzz: unknown key");
}

static void test_unknown_table(void **state)
{
	expect_error("[server]\nport = 1\n\n[storag]\npath = \"x\"\n", "4: storag: unknown table");
	expect_error("[[clusters]]\nnode = 1\n", "1: clusters: unknown table");
	expect_error("[[cluster]]\nnode = 1\n", "1: cluster: expected a table");
	expect_error("auth.token = \"x\"\n", "1: auth.token: unknown key");
	expect_error("authz.token = \"x\"\n", "1: authz: unknown table");
}

static void test_wrong_type(void **state)
{
	expect_error("[server]\nport = \"8080\"\n", "2: server.port: expected an integer in 0..65535");
	expect_error("[server]\nport = 1.5\n", "2: server.port: expected an integer in 0..65535");
	expect_error("[server]\nport = 8080.0\n", "2: server.port: expected an integer in 0..65535");
	expect_error("[limits]\nmax_message_bytes = 1e3\n", "2: limits.max_message_bytes: expected an integer >= 1");
	expect_error("[server]\nlisten = 127\n", "2: server.listen: expected a non-empty string");
	expect_error("[server]\nhandshake_timeout = \"10s\"\n", "2: server.handshake_timeout: expected a number > 0");
	expect_error("[limits]\nrate = true\n", "2: limits.rate: expected a number > 0");
	expect_error("[server]\nallowed_origins = \"https://a\"\n",
		     "2: server.allowed_origins: expected an array of non-empty strings");
	expect_error("[server]\nallowed_origins = [\n  \"https://a\",\n  42,\n]\n",
		     "4: server.allowed_origins: expected an array of non-empty strings");
	expect_error("server = 5\n", "1: server: expected a table");
	expect_error("[[log]]\nlevel = \"info\"\n", "1: log: expected a table");
	expect_error("[log]\nlevel = 3\n", "2: log.level: expected one of \"error\", \"warn\", \"info\", \"debug\"");
}

static void test_out_of_range(void **state)
{
	expect_error("[server]\nport = 65536\n", "2: server.port: expected an integer in 0..65535");
	expect_error("[server]\nport = -1\n", "2: server.port: expected an integer in 0..65535");
	expect_error("[server]\nlisten = \"\"\n", "2: server.listen: expected a non-empty string");
	expect_error("[server]\nlisten = \"a\\u0000b\"\n", "2: server.listen: expected a non-empty string");
	expect_error("[server]\nnode_id = \"\"\n", "2: server.node_id: expected 1..64 bytes of [A-Za-z0-9_.:-]");
	expect_error("[server]\nnode_id = \"a b\"\n", "2: server.node_id: expected 1..64 bytes of [A-Za-z0-9_.:-]");
	expect_error("[server]\nnode_id = \"x1234567890123456789012345678901234567890123456789012345678901234\"\n",
		     "2: server.node_id: expected 1..64 bytes of [A-Za-z0-9_.:-]");
	expect_error("[server]\nhandshake_timeout = 0\n", "2: server.handshake_timeout: expected a number > 0");
	expect_error("[server]\nshutdown_timeout = -0.5\n", "2: server.shutdown_timeout: expected a number >= 0");
	expect_error("[server]\nmax_connections = 0\n", "2: server.max_connections: expected an integer >= 1");
	expect_error("[server]\nmax_connections_per_ip = -1\n", "2: server.max_connections_per_ip: expected an integer >= 0");
	expect_error("[server]\nmax_pending_per_ip = -1\n",
		     "2: server.max_pending_per_ip: expected an integer in 0..2147483647");
	expect_error("[server]\nheader_timeout = 0\n", "2: server.header_timeout: expected a number > 0");
	expect_error("[api]\nallow = [\"10.0.0.0/33\"]\n",
		     "2: api.allow: expected an array of addresses or ranges such as \"10.0.0.0/8\" or \"::1\"");
	{
		char text[4096] = "[api]\nallow = [";
		for (int i = 0; i < CONFIG_API_ALLOW_MAX + 1; i++)
			snprintf(text + strlen(text), sizeof text - strlen(text), "%s\"10.0.0.%d\"", i ? ", " : "", i);
		strcat(text, "]\n");
		expect_error(text, "2: api.allow: at most 64 ranges");
	}
	expect_error("[server]\nallowed_origins = [\"\"]\n",
		     "2: server.allowed_origins: expected an array of non-empty strings");
	expect_error("[heartbeat]\ninterval = -1\n", "2: heartbeat.interval: expected a number > 0");
	expect_error("[limits]\nrate = 0\n", "2: limits.rate: expected a number > 0");
	expect_error("[limits]\nrate = inf\n", "2: limits.rate: expected a number > 0");
	expect_error("[limits]\nrate = nan\n", "2: limits.rate: expected a number > 0");
	expect_error("[limits]\nburst = 0.5\n", "2: limits.burst: expected a number >= 1");
	expect_error("[limits]\nmax_frame_bytes = 63\n", "2: limits.max_frame_bytes: expected an integer >= 64");
	expect_error("[limits]\nsend_queue_messages = 0\n", "2: limits.send_queue_messages: expected an integer in 1..2147483647");
	expect_error("[limits]\nsend_queue_bytes = 0\n", "2: limits.send_queue_bytes: expected an integer >= 1");
	expect_error("[limits]\ntotal_queue_bytes = -5\n", "2: limits.total_queue_bytes: expected an integer >= 1");
	expect_error("[limits]\nsessions_per_name = 0\n", "2: limits.sessions_per_name: expected an integer in 1..2147483647");
	expect_error("[limits]\nmax_rooms = 0\n", "2: limits.max_rooms: expected an integer in 1..2147483647");
	expect_error("[history]\nmessages_per_room = -1\n", "2: history.messages_per_room: expected an integer in 0..2147483647");
	expect_error("[history]\ndedup_window = -1\n", "2: history.dedup_window: expected an integer in 0..2147483647");
}

static void test_bad_enum(void **state)
{
	expect_error("[limits]\nslow_consumer = \"drop\"\n",
		     "2: limits.slow_consumer: expected one of \"close\", \"drop_oldest\"");
	expect_error("[log]\nlevel = \"verbose\"\n",
		     "2: log.level: expected one of \"error\", \"warn\", \"info\", \"debug\"");
	expect_error("[log]\nformat = \"XML\"\n", "2: log.format: expected one of \"text\", \"json\"");
	expect_error("[log]\nlevel = \"INFO\"\n",
		     "2: log.level: expected one of \"error\", \"warn\", \"info\", \"debug\"");
}

static void test_syntax_error(void **state)
{
	const char *bad[][2] = {
		{"[server]\nport = \n", ":2: syntax error: "},
		{"[server]\nport = 1\nport = 2\n", ":3: syntax error: "},
		{"\n\n[server\n", ":3: syntax error: "},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct config c;
		char err[512], want[PATH_MAX + 64];
		memset(&c, 0xa5, sizeof c);
		assert_int_equal(load(bad[i][0], &c, err, sizeof err), -1);
		assert_zeroed(&c);
		snprintf(want, sizeof want, "%s%s", path, bad[i][1]);
		assert_memory_equal(err, want, strlen(want));
		assert_true(strlen(err) > strlen(want)); /* toml++'s description follows */
		assert_null(strchr(err, '\n'));
	}
}

static void test_missing_file(void **state)
{
	struct config c;
	char err[512], want[PATH_MAX + 64];
	memset(&c, 0xa5, sizeof c);
	assert_int_equal(config_load("/nonexistent/chatd-test/chatd.toml", &c, err, sizeof err), -1);
	assert_zeroed(&c);
	assert_string_equal(err, "/nonexistent/chatd-test/chatd.toml: cannot read: No such file or directory");

	/* A directory opens but cannot be read. */
	const char *dir = getenv("TMPDIR");
	snprintf(path, sizeof path, "%s", dir && *dir ? dir : "/tmp");
	memset(&c, 0xa5, sizeof c);
	assert_int_equal(config_load(path, &c, err, sizeof err), -1);
	assert_zeroed(&c);
	snprintf(want, sizeof want, "%s: cannot read: Is a directory", path);
	assert_string_equal(err, want);
}

static void test_heartbeat_timeout_not_above_interval(void **state)
{
	expect_error("[heartbeat]\ninterval = 30\ntimeout = 30\n",
		     "3: heartbeat.timeout: must be greater than heartbeat.interval (30)");
	expect_error("[heartbeat]\ntimeout = 20\n",
		     "2: heartbeat.timeout: must be greater than heartbeat.interval (25)");
	expect_error("[heartbeat]\ninterval = 61.5\n",
		     "2: heartbeat.interval: must be less than heartbeat.timeout (60)");

	struct config c;
	char err[256];
	assert_int_equal(load("[heartbeat]\ninterval = 30\ntimeout = 30.5\n", &c, err, sizeof err), 0);
	config_free(&c);
}

static void test_frame_must_fit_message(void **state)
{
	expect_error("[limits]\nmax_message_bytes = 65281\n",
		     "2: limits.max_message_bytes: must be <= limits.max_frame_bytes - 256 (65280)");
	expect_error("[limits]\nmax_frame_bytes = 1000\n",
		     "2: limits.max_frame_bytes: must be >= limits.max_message_bytes + 256 (4352)");

	struct config c;
	char err[256];
	assert_int_equal(load("[limits]\nmax_message_bytes = 65280\n", &c, err, sizeof err), 0);
	assert_int_equal(c.max_message_bytes, 65280);
	config_free(&c);
}

static void test_free_zeroed_struct(void **state)
{
	struct config c;
	memset(&c, 0, sizeof c);
	config_free(&c);
	assert_zeroed(&c);
	config_free(&c); /* and again */
	assert_zeroed(&c);
}

static void test_error_buffer(void **state)
{
	struct config c;
	char err[8];
	memset(err, 'x', sizeof err);
	assert_int_equal(load("[server]\nprot = 1\n", &c, err, sizeof err), -1);
	assert_int_equal(strlen(err), sizeof err - 1); /* truncated, terminated */
	assert_memory_equal(err, path, sizeof err - 1);
	assert_int_equal(load("[server]\nprot = 1\n", &c, NULL, 0), -1);
	assert_zeroed(&c);

	/* A quoted key with a newline still gives one line. */
	char big[512];
	assert_int_equal(load("[server]\n\"a\\nb\" = 1\n", &c, big, sizeof big), -1);
	assert_null(strchr(big, '\n'));
	assert_non_null(strstr(big, ":2: server.a?b: unknown key"));
}

/* [tls] cipher lists: taken as written (OpenSSL judges them at start);
 * an empty TLS 1.2 list is refused here, an empty 1.3 list turns 1.3 off. */
static void test_tls_cipher_keys(void **state)
{
	struct config c;
	char err[512];

	assert_int_equal(load("[tls]\nciphers = \"ECDHE-RSA-AES256-GCM-SHA384\"\nciphersuites = \"\"\n",
			      &c, err, sizeof err), 0);
	assert_string_equal(c.tls_ciphers, "ECDHE-RSA-AES256-GCM-SHA384");
	assert_string_equal(c.tls_ciphersuites, "");
	config_free(&c);
	expect_error("[tls]\nciphers = \"\"\n", "2: tls.ciphers: expected an OpenSSL cipher list");
}

static void test_names(void **state)
{
	assert_string_equal(config_log_level_name(CONFIG_LOG_ERROR), "error");
	assert_string_equal(config_log_level_name(CONFIG_LOG_WARN), "warn");
	assert_string_equal(config_log_level_name(CONFIG_LOG_INFO), "info");
	assert_string_equal(config_log_level_name(CONFIG_LOG_DEBUG), "debug");
	assert_string_equal(config_slow_policy_name(CONFIG_SLOW_CLOSE), "close");
	assert_string_equal(config_slow_policy_name(CONFIG_SLOW_DROP_OLDEST), "drop_oldest");
}

/* conf/chatd.toml loads and documents exactly the defaults. Found through
 * CHATD_TEST_DATA (SRC/tests/data, set by ctest); skipped without it. */
static void test_sample_config(void **state)
{
	const char *data = getenv("CHATD_TEST_DATA");
	if (!data || !*data)
		skip();
	/* tests/data -> the source root, textually: tests/data need not exist. */
	char root[PATH_MAX], sample[PATH_MAX + 32], err[512];
	snprintf(root, sizeof root, "%s", data);
	for (int up = 0; up < 2; up++) {
		char *slash = strrchr(root, '/');
		while (slash && slash != root && slash[1] == '\0') { /* trailing '/' */
			*slash = '\0';
			slash = strrchr(root, '/');
		}
		assert_non_null(slash);
		*slash = '\0';
	}
	snprintf(sample, sizeof sample, "%s/conf/chatd.toml", root);
	struct config c, d;
	int rc = config_load(sample, &c, err, sizeof err);
	if (rc != 0)
		fail_msg("%s", err);
	assert_defaults(&c);
	/* ...and shows a namespace of rooms (issue 15). */
	assert_int_equal(c.room_defaults_count, 1);
	assert_string_equal(c.room_defaults[0].prefix, "announce-");
	assert_int_equal(c.room_defaults[0].read_only, 1);
	assert_int_equal(c.room_defaults[0].private_room, -1);
	assert_int_equal(config_defaults(&d), 0);
	assert_string_equal(c.node_id, d.node_id); /* node_id left to the hostname */
	config_free(&d);
	config_free(&c);
}

/* [[rooms]]: defaults per prefix, the longest matching prefix wins, unset
 * keys stay -1 so that they fall through to the hub's own default. */
static void test_rooms_prefix_defaults(void **state)
{
	struct config c;
	char err[256];

	(void)state;
	assert_int_equal(load("[[rooms]]\nprefix = \"a-\"\nread_only = true\n\n"
			      "[[rooms]]\nprefix = \"a-vip-\"\nprivate = true\nhistory = 5\n\n"
			      "[[rooms]]\nprefix = \"\"\nhistory = 9\n", &c, err, sizeof err), 0);
	assert_int_equal(c.room_defaults_count, 3);
	assert_string_equal(config_room_defaults_for(&c, "a-news")->prefix, "a-");
	assert_int_equal(config_room_defaults_for(&c, "a-news")->history, -1);
	assert_string_equal(config_room_defaults_for(&c, "a-vip-x")->prefix, "a-vip-");
	assert_int_equal(config_room_defaults_for(&c, "a-vip-x")->read_only, -1);
	assert_int_equal(config_room_defaults_for(&c, "lobby")->history, 9);
	config_free(&c);
	assert_int_equal(load("[[rooms]]\nprefix = \"x\"\n", &c, err, sizeof err), 0);
	assert_null(config_room_defaults_for(&c, "lobby"));
	config_free(&c);
	assert_int_equal(load("[[rooms]]\nread_only = true\n", &c, err, sizeof err), -1);
	assert_non_null(strstr(err, "needs a prefix"));
	assert_zeroed(&c);
	assert_int_equal(load("[auth]\nalgorithm = \"none\"\n", &c, err, sizeof err), -1);
	assert_non_null(strstr(err, "auth.algorithm"));
}

/* Redis keys are built in fixed buffers: a longer prefix truncated them and
 * made keys of different rooms collide. */
static void test_key_prefix_is_bounded(void **state)
{
	char text[256], prefix[80];
	struct config c;
	char err[512];

	memset(prefix, 'p', 64);
	prefix[64] = '\0';
	snprintf(text, sizeof text, "[cluster]\nkey_prefix = \"%s\"\n", prefix);
	assert_int_equal(load(text, &c, err, sizeof err), 0);
	assert_int_equal(strlen(c.key_prefix), 64);
	config_free(&c);
	strcat(prefix, "q");
	snprintf(text, sizeof text, "[cluster]\nkey_prefix = \"%s\"\n", prefix);
	expect_error(text, "2: cluster.key_prefix: expected a string of at most 64 bytes");
}

/* The one parser of cluster.redis: what the config accepts, the cluster
 * connects with (it was parsed twice, two ways). */
static void test_redis_url_parts(void **state)
{
	struct config_redis u;

	assert_int_equal(config_redis_parse("redis://127.0.0.1", &u), 0);
	assert_int_equal(u.host_len, 9);
	assert_memory_equal(u.host, "127.0.0.1", 9);
	assert_int_equal(u.port, 6379);
	assert_int_equal(u.db, -1);
	assert_null(u.password);
	assert_int_equal(config_redis_parse("redis://user:s3:cr@t@h.example:6380/12", &u), 0);
	assert_int_equal(u.password_len, 7);
	assert_memory_equal(u.password, "s3:cr@t", 7);
	assert_int_equal(u.host_len, 9);
	assert_memory_equal(u.host, "h.example", 9);
	assert_int_equal(u.port, 6380);
	assert_int_equal(u.db, 12);
	assert_int_equal(config_redis_parse("redis://:pw@h/", &u), 0);
	assert_int_equal(u.password_len, 2);
	assert_int_equal(u.db, -1);
	assert_int_equal(config_redis_parse("http://h:1", &u), -1);
	assert_int_equal(config_redis_parse("redis://:1", &u), -1);
	assert_int_equal(config_redis_parse("redis://h:", &u), -1);
	assert_int_equal(config_redis_parse("redis://h:65536", &u), -1);
	assert_int_equal(config_redis_parse("redis://h:0", &u), -1);
	assert_int_equal(config_redis_parse("redis://h:12x", &u), -1);
	assert_int_equal(config_redis_parse("redis://h/1234567", &u), -1);
	assert_int_equal(config_redis_parse("redis://h/x", &u), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_function),
		cmocka_unit_test(test_empty_file_gives_defaults),
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_other_toml_spellings),
		cmocka_unit_test(test_unknown_key),
		cmocka_unit_test(test_unknown_table),
		cmocka_unit_test(test_wrong_type),
		cmocka_unit_test(test_out_of_range),
		cmocka_unit_test(test_bad_enum),
		cmocka_unit_test(test_syntax_error),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_heartbeat_timeout_not_above_interval),
		cmocka_unit_test(test_frame_must_fit_message),
		cmocka_unit_test(test_free_zeroed_struct),
		cmocka_unit_test(test_error_buffer),
		cmocka_unit_test(test_tls_cipher_keys),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_sample_config),
		cmocka_unit_test(test_key_prefix_is_bounded),
		cmocka_unit_test(test_rooms_prefix_defaults),
		cmocka_unit_test(test_redis_url_parts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
