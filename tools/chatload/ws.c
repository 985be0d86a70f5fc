/*
 * ws.c - the small pieces of RFC 6455 a client needs (SHA-1 and base64 for
 * the Sec-WebSocket-Accept check, masked frame writer, frame parser), the
 * latency histogram, pipe messages and a self test.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chatload.h"

/* ---- SHA-1 (FIPS 180-4), only for the handshake ---- */

static uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const uint8_t *p)
{
	uint32_t w[80], a, b, c, d, e, f, k, t;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (i = 16; i < 80; i++)
		w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
	a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4];
	for (i = 0; i < 80; i++) {
		if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
		else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
		else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
		else { f = b ^ c ^ d; k = 0xCA62C1D6; }
		t = rol32(a, 5) + f + e + k + w[i];
		e = d; d = c; c = rol32(b, 30); b = a; a = t;
	}
	h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

void sha1(const void *data, size_t len, uint8_t out[20])
{
	uint32_t h[5] = { 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0 };
	const uint8_t *p = data;
	uint8_t blk[64];
	uint64_t bits = (uint64_t)len * 8;
	size_t i, rem;

	for (; len >= 64; p += 64, len -= 64)
		sha1_block(h, p);
	rem = len;
	memset(blk, 0, sizeof(blk));
	memcpy(blk, p, rem);
	blk[rem] = 0x80;
	if (rem >= 56) {
		sha1_block(h, blk);
		memset(blk, 0, sizeof(blk));
	}
	for (i = 0; i < 8; i++)
		blk[63 - i] = (uint8_t)(bits >> (8 * i));
	sha1_block(h, blk);
	for (i = 0; i < 5; i++) {
		out[4 * i] = (uint8_t)(h[i] >> 24);
		out[4 * i + 1] = (uint8_t)(h[i] >> 16);
		out[4 * i + 2] = (uint8_t)(h[i] >> 8);
		out[4 * i + 3] = (uint8_t)h[i];
	}
}

size_t base64_encode(const uint8_t *in, size_t len, char *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i, o = 0;

	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = tab[(v >> 6) & 63];
		out[o++] = tab[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

void ws_accept_for(const char *key, char out[29])
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	char buf[128];
	uint8_t dig[20];
	size_t kl = strlen(key);

	if (kl > sizeof(buf) - sizeof(guid))
		kl = sizeof(buf) - sizeof(guid);
	memcpy(buf, key, kl);
	memcpy(buf + kl, guid, sizeof(guid) - 1);
	sha1(buf, kl + sizeof(guid) - 1, dig);
	base64_encode(dig, 20, out);
}

/* ---- frames ---- */

size_t ws_frame_put(uint8_t *dst, int opcode, const void *payload, size_t len, uint32_t mask)
{
	const uint8_t *src = payload;
	uint8_t m[4] = { (uint8_t)(mask >> 24), (uint8_t)(mask >> 16), (uint8_t)(mask >> 8), (uint8_t)mask };
	size_t h = 0, i;

	dst[h++] = (uint8_t)(0x80 | (opcode & 15));
	if (len < 126) {
		dst[h++] = (uint8_t)(0x80 | len);
	} else if (len < 65536) {
		dst[h++] = 0x80 | 126;
		dst[h++] = (uint8_t)(len >> 8);
		dst[h++] = (uint8_t)len;
	} else {
		dst[h++] = 0x80 | 127;
		for (i = 0; i < 8; i++)
			dst[h++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
	}
	memcpy(dst + h, m, 4);
	h += 4;
	for (i = 0; i < len; i++)
		dst[h + i] = src[i] ^ m[i & 3];
	return h + len;
}

#define WS_MAX_FRAME (64u << 20)

int ws_frame_parse(uint8_t *p, size_t n, struct ws_frame *f)
{
	size_t h = 2;
	uint64_t len;
	uint8_t *mask = NULL;

	f->size = 0;
	if (n < 2)
		return 0;
	if (p[0] & 0x70)
		return -1;                         /* no extensions negotiated */
	f->fin = (p[0] & 0x80) != 0;
	f->opcode = p[0] & 15;
	len = p[1] & 127;
	if (len == 126) {
		if (n < 4)
			return 0;
		len = (uint64_t)p[2] << 8 | p[3];
		h = 4;
	} else if (len == 127) {
		int i;
		if (n < 10)
			return 0;
		len = 0;
		for (i = 0; i < 8; i++)
			len = len << 8 | p[2 + i];
		h = 10;
	}
	if (p[1] & 0x80) {
		mask = p + h;
		h += 4;
	}
	if (len > WS_MAX_FRAME)
		return -1;
	if ((f->opcode & 8) && (len > 125 || !f->fin))
		return -1;                         /* control frames: short, unfragmented */
	f->size = h + (size_t)len;
	if (n < f->size)
		return 0;
	f->payload = p + h;
	f->len = len;
	if (mask) {
		uint64_t i;
		for (i = 0; i < len; i++)
			f->payload[i] ^= mask[i & 3];
	}
	return 1;
}

/* ---- histogram ---- */

static unsigned hist_index(uint64_t v)
{
	unsigned e, idx;

	if (v < HIST_SUB)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v);            /* >= HIST_SUB_BITS */
	idx = (e - HIST_SUB_BITS + 1) * HIST_SUB + (unsigned)((v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
	return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* The middle of bucket i, in us. */
static double hist_value(unsigned i)
{
	unsigned oct, sub, e;
	double lo, w;

	if (i < HIST_SUB)
		return i;
	oct = i / HIST_SUB;
	sub = i % HIST_SUB;
	e = oct + HIST_SUB_BITS - 1;
	w = ldexp(1.0, (int)e - HIST_SUB_BITS);
	lo = ldexp(1.0, (int)e) + sub * w;
	return lo + w / 2;
}

void hist_add(struct hist *h, uint64_t us)
{
	h->n[hist_index(us)]++;
	h->count++;
	h->sum_us += us;
	if (us > h->max_us)
		h->max_us = us;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	unsigned i;

	for (i = 0; i < HIST_BUCKETS; i++)
		dst->n[i] += src->n[i];
	dst->count += src->count;
	dst->sum_us += src->sum_us;
	if (src->max_us > dst->max_us)
		dst->max_us = src->max_us;
}

void hist_reset(struct hist *h) { memset(h, 0, sizeof(*h)); }

double hist_pct_ms(const struct hist *h, double pct)
{
	uint64_t want, seen = 0;
	unsigned i;
	double v;

	if (!h->count)
		return 0;
	want = (uint64_t)ceil(h->count * pct / 100.0);
	if (want < 1)
		want = 1;
	for (i = 0; i < HIST_BUCKETS; i++) {
		seen += h->n[i];
		if (seen >= want) {
			v = hist_value(i);
			if (v > (double)h->max_us)
				v = (double)h->max_us;
			return v / 1000.0;
		}
	}
	return (double)h->max_us / 1000.0;
}

/* ---- util ---- */

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int write_full(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t w = write(fd, c, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static int read_full(int fd, void *p, size_t n)
{
	char *c = p;

	while (n) {
		ssize_t r = read(fd, c, n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0)
			return -1;
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

int pipe_send(int fd, uint32_t type, const void *p, uint32_t len)
{
	struct msg_hdr h = { type, len };

	if (write_full(fd, &h, sizeof(h)))
		return -1;
	return len ? write_full(fd, p, len) : 0;
}

int pipe_recv(int fd, uint32_t *type, void *p, uint32_t cap, uint32_t *len)
{
	struct msg_hdr h;
	char skip[256];

	if (read_full(fd, &h, sizeof(h)))
		return -1;
	*type = h.type;
	*len = h.len;
	if (h.len <= cap)
		return h.len ? read_full(fd, p, h.len) : 0;
	if (read_full(fd, p, cap))
		return -1;
	for (uint32_t left = h.len - cap; left;) {
		uint32_t k = left < sizeof(skip) ? left : (uint32_t)sizeof(skip);
		if (read_full(fd, skip, k))
			return -1;
		left -= k;
	}
	*len = cap;
	return 0;
}

/* ---- self test ---- */

int cl_self_test(void)
{
	uint8_t d[20], fr[200], payload[130];
	char hex[41], acc[29];
	struct ws_frame f;
	static struct hist h;
	int i, fails = 0;

	sha1("abc", 3, d);
	for (i = 0; i < 20; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	if (strcmp(hex, "a9993e364706816aba3e25717850c26c9cd0d89d")) {
		fprintf(stderr, "self-test: sha1(abc) = %s\n", hex);
		fails++;
	}
	sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, d);
	for (i = 0; i < 20; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	if (strcmp(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1")) {
		fprintf(stderr, "self-test: sha1(56 bytes) = %s\n", hex);
		fails++;
	}
	ws_accept_for("dGhlIHNhbXBsZSBub25jZQ==", acc);
	if (strcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")) {
		fprintf(stderr, "self-test: accept = %s\n", acc);
		fails++;
	}
	/* a masked frame of 130 bytes (16-bit length) must parse back */
	for (i = 0; i < 130; i++)
		payload[i] = (uint8_t)('a' + i % 26);
	size_t n = ws_frame_put(fr, 1, payload, 130, 0x12345678);
	if (n != 130 + 8 || ws_frame_parse(fr, n - 1, &f) != 0 || f.size != n ||
	    ws_frame_parse(fr, n, &f) != 1 || f.len != 130 || memcmp(f.payload, payload, 130)) {
		fprintf(stderr, "self-test: frame round trip failed\n");
		fails++;
	}
	hist_reset(&h);
	for (i = 1; i <= 1000; i++)
		hist_add(&h, (uint64_t)i * 1000);          /* 1..1000 ms */
	if (fabs(hist_pct_ms(&h, 50) - 500) > 20 || fabs(hist_pct_ms(&h, 99) - 990) > 35 ||
	    hist_pct_ms(&h, 100) != 1000) {
		fprintf(stderr, "self-test: histogram p50 %.1f p99 %.1f max %.1f\n",
			hist_pct_ms(&h, 50), hist_pct_ms(&h, 99), hist_pct_ms(&h, 100));
		fails++;
	}
	if (!fails)
		fprintf(stderr, "self-test: ok\n");
	return fails ? 1 : 0;
}
