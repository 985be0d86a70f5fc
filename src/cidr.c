/*
 * cidr.c - address ranges for allowlists (api.allow).
 */
#include "cidr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

int cidr_parse(const char *s, struct cidr *out)
{
	char buf[64], *slash, *end;
	unsigned max, i;
	long prefix;
	size_t n = strlen(s);

	if (n == 0 || n >= sizeof(buf))
		return -1;
	memcpy(buf, s, n + 1);
	slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, buf, out->addr) == 1) {
		out->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
		out->family = AF_INET6;
		max = 128;
	} else {
		return -1;
	}
	prefix = max;
	if (slash) {
		if (slash[1] < '0' || slash[1] > '9')
			return -1;
		prefix = strtol(slash + 1, &end, 10);
		if (*end || prefix < 0 || prefix > (long)max)
			return -1;
	}
	out->prefix = (unsigned)prefix;
	for (i = out->prefix; i < max; i++)
		out->addr[i / 8] &= (uint8_t)~(0x80u >> (i % 8));
	return 0;
}

static int cidr_prefix_equal(const uint8_t *a, const uint8_t *net, unsigned prefix)
{
	unsigned full = prefix / 8, rest = prefix % 8;

	if (memcmp(a, net, full) != 0)
		return 0;
	if (!rest)
		return 1;
	return ((a[full] ^ net[full]) & (uint8_t)(0xff00u >> rest)) == 0;
}

int cidr_match(const struct cidr *c, const struct sockaddr *sa)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

	if (sa->sa_family == AF_INET)
		return c->family == AF_INET &&
		       cidr_prefix_equal((const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr,
					 c->addr, c->prefix);
	if (sa->sa_family != AF_INET6)
		return 0;
	if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
		return c->family == AF_INET &&
		       cidr_prefix_equal(&s6->sin6_addr.s6_addr[12], c->addr, c->prefix);
	return c->family == AF_INET6 && cidr_prefix_equal(s6->sin6_addr.s6_addr, c->addr, c->prefix);
}
