/*
 * test_apikeys.c - the server API's keys file (apikeys.h): what is a key,
 * what is refused and why, and the comparison.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apikeys.h"

static char path[64];

static void write_file(const char *text, mode_t mode)
{
	FILE *f;

	snprintf(path, sizeof path, "/tmp/chatd-apikeys-%d", (int)getpid());
	unlink(path);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(path, mode), 0);
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	return 0;
}

static int check(const struct apikeys *k, const char *key)
{
	return apikeys_check(k, key, strlen(key));
}

static void test_keys_comments_and_blank_lines(void **state)
{
	struct apikeys *k;
	char err[256];

	(void)state;
	write_file("# the API keys\n\n  first-key-0123456789  \nsecond-key-0123456789\r\n", 0600);
	k = apikeys_load(path, err, sizeof err);
	assert_non_null(k);
	assert_int_equal(apikeys_count(k), 2);
	assert_true(check(k, "first-key-0123456789"));
	assert_true(check(k, "second-key-0123456789"));
	assert_false(check(k, "first-key-012345678"));        /* a prefix */
	assert_false(check(k, "first-key-0123456789x"));      /* longer */
	assert_false(check(k, " first-key-0123456789"));
	assert_false(check(k, ""));
	assert_false(check(k, "# the API keys"));
	assert_false(apikeys_check(NULL, "first-key-0123456789", 20));
	apikeys_free(k);
}

static void test_last_line_without_newline(void **state)
{
	struct apikeys *k;
	char err[256];

	(void)state;
	write_file("only-key-0123456789abc", 0400);
	k = apikeys_load(path, err, sizeof err);
	assert_non_null(k);
	assert_true(check(k, "only-key-0123456789abc"));
	apikeys_free(k);
}

static void expect_refused(const char *text, mode_t mode, const char *why)
{
	char err[256] = "";

	write_file(text, mode);
	assert_null(apikeys_load(path, err, sizeof err));
	if (!strstr(err, why))
		fail_msg("expected \"%s\" in \"%s\"", why, err);
	assert_null(strstr(err, "0123456789abcdef"));        /* never the key itself */
}

static void test_refused_files(void **state)
{
	char err[256];

	(void)state;
	expect_refused("key-0123456789abcdef\n", 0640, "by its group");
	expect_refused("key-0123456789abcdef\n", 0604, "by others");
	expect_refused("key-0123456789abcdef\n", 0620, "chmod 600");
	expect_refused("short\n", 0600, "line 1: a key is 16..256 bytes");
	expect_refused("good-key-0123456789\nkey with-0123456789abcdef spaces\n", 0600, "line 2");
	expect_refused("# nothing\n\n", 0600, "no keys");
	assert_null(apikeys_load("/nonexistent/keys", err, sizeof err));
	assert_non_null(strstr(err, "No such file"));
	assert_null(apikeys_load("/tmp", err, sizeof err));
}

static void test_too_many_keys(void **state)
{
	char text[APIKEYS_MAX * 32 + 64] = "";
	int i;

	(void)state;
	for (i = 0; i <= APIKEYS_MAX; i++)
		snprintf(text + strlen(text), sizeof text - strlen(text), "key-number-%04d-abcdef\n", i);
	expect_refused(text, 0600, "more than 64 keys");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_keys_comments_and_blank_lines, teardown),
		cmocka_unit_test_teardown(test_last_line_without_newline, teardown),
		cmocka_unit_test_teardown(test_refused_files, teardown),
		cmocka_unit_test_teardown(test_too_many_keys, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
