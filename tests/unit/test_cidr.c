/* Unit tests for cidr.c: parsing ranges and matching peer addresses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>

#include "cidr.h"

static int match(const char *range, const char *addr)
{
	struct cidr c;
	struct sockaddr_in s4 = { .sin_family = AF_INET };
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6 };

	assert_int_equal(cidr_parse(range, &c), 0);
	if (inet_pton(AF_INET, addr, &s4.sin_addr) == 1)
		return cidr_match(&c, (struct sockaddr *)&s4);
	assert_int_equal(inet_pton(AF_INET6, addr, &s6.sin6_addr), 1);
	return cidr_match(&c, (struct sockaddr *)&s6);
}

static void test_parse_refuses_junk(void **state)
{
	struct cidr c;
	const char *bad[] = { "", "10.0.0.0/33", "::1/129", "10.0.0.0/", "10.0.0.0/8x", "10.0.0.0/-1",
			      "nonsense", "10.0.0", "10.0.0.0/ 8", "1.2.3.4/8/8", "::ffff::1" };
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(cidr_parse(bad[i], &c), -1);
	assert_int_equal(cidr_parse("10.1.2.3/8", &c), 0);   /* host bits are cleared */
	assert_int_equal(c.prefix, 8);
	assert_int_equal(c.addr[1], 0);
}

static void test_match(void **state)
{
	(void)state;
	assert_true(match("127.0.0.0/8", "127.0.0.2"));
	assert_false(match("127.0.0.0/8", "128.0.0.1"));
	assert_true(match("10.0.0.0/12", "10.15.255.255"));
	assert_false(match("10.0.0.0/12", "10.16.0.0"));
	assert_true(match("192.0.2.7", "192.0.2.7"));
	assert_false(match("192.0.2.7", "192.0.2.8"));
	assert_true(match("0.0.0.0/0", "203.0.113.9"));
	assert_true(match("::1", "::1"));
	assert_false(match("::1", "::2"));
	assert_true(match("fd00::/8", "fdab::1"));
	assert_false(match("fd00::/8", "fe80::1"));
	/* An IPv4-mapped IPv6 peer is matched as IPv4, never as IPv6. */
	assert_true(match("127.0.0.0/8", "::ffff:127.0.0.1"));
	assert_false(match("::/0", "127.0.0.1"));
	assert_false(match("0.0.0.0/0", "::1"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_refuses_junk),
		cmocka_unit_test(test_match),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
