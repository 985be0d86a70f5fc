/*
 * cidr.h - address ranges ("10.0.0.0/8", "::1/128", "192.0.2.7") and
 * matching a peer address against them. Plain data, no allocation.
 */
#ifndef CHATD_CIDR_H
#define CHATD_CIDR_H

#include <stdint.h>

#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cidr {
	int family;           /* AF_INET or AF_INET6 */
	uint8_t addr[16];     /* network address, host bits cleared; 4 bytes for AF_INET */
	unsigned prefix;      /* 0..32 or 0..128 */
};

/* Parse "ADDR" or "ADDR/PREFIX" (IPv4 dotted quad or IPv6). Returns 0, or
 * -1 when s is not one of those (bad address, prefix out of range, junk).
 * Host bits set below the prefix are cleared, not refused. */
int cidr_parse(const char *s, struct cidr *out);

/* 1 if the address in sa (AF_INET or AF_INET6; IPv4-mapped IPv6 counts as
 * IPv4) is inside c, else 0. */
int cidr_match(const struct cidr *c, const struct sockaddr *sa);

#ifdef __cplusplus
}
#endif

#endif /* CHATD_CIDR_H */
