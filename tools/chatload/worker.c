/*
 * worker.c - one chatload worker: an epoll loop over its share of the
 * connections, with a minimal RFC 6455 client (handshake with the
 * Sec-WebSocket-Accept check, masked frames out, fragmented and extended
 * length frames in, pings answered with pongs) that speaks chat.v1 or, with
 * --raw, only sends bodies and counts every text frame as a delivery.
 *
 * Client i (global index) belongs to worker i % W, to room i % K; clients
 * 0..S-1 are the senders, the last slow_clients ones (slow mode) never read
 * after their join.
 *
 * wss:// targets: one SSL_CTX per worker, one SSL* per connection on the same
 * non-blocking socket. The TLS handshake runs in C_CONNECTING; afterwards
 * every read and write goes through SSL_read/SSL_write, whose WANT_READ /
 * WANT_WRITE become epoll interest. Plain ws:// connections have c->ssl ==
 * NULL and take the plain recv()/send() branch.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "chatload.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum cstate { C_FREE, C_CONNECTING, C_HANDSHAKE, C_JOINING, C_READY, C_WAIT_MSG, C_CLOSING };
enum phase { PH_SETUP, PH_WAIT_GO, PH_RUN, PH_DRAIN, PH_REPORTED };

#define RBUF_SIZE (256 * 1024)
#define HS_MAX 8192
#define CYCLE_TIMEOUT_NS 5000000000ull
#define CLOSE_TIMEOUT_NS 1000000000ull

struct conn {
	int fd;
	uint8_t state;
	uint8_t is_sender, is_slow, muted, in_frag, in_setup;
	uint8_t tls_wr_wants_rd;   /* SSL_write said WANT_READ: retry it when readable */
	uint8_t tls_rd_wants_wr;   /* SSL_read said WANT_WRITE: retry it when writable */
	uint8_t tls_dead;          /* a fatal TLS error: no close_notify */
	SSL *ssl;                  /* wss:// only; owned, freed in conn_close_fd */
	uint32_t ev;               /* epoll events registered */
	uint32_t idx;              /* global client index, or churn slot */
	uint32_t room;
	double phase;              /* sender pacing phase, 0..1 */
	uint8_t *out;
	uint32_t out_len, out_off, out_cap;
	uint8_t *in;
	uint32_t in_len, in_cap;
	uint8_t *frag;
	uint32_t frag_len, frag_cap;
	uint64_t sent;             /* messages sent (sender) */
	uint64_t msg_id;
	uint64_t t0;               /* churn: cycle start */
	uint64_t t_close;          /* churn: close frame sent */
	char accept[29];
	char name[40];
	char roomname[48];
};

static struct {
	const struct cl_opts *o;
	uint32_t wid;
	int epfd, rfd, wfd;
	SSL_CTX *ssl_ctx;          /* wss:// only */
	struct conn *conns;
	uint32_t nconns;
	struct conn **senders;
	uint32_t nsenders;
	double rate_per_sender;
	uint8_t *rbuf;
	uint8_t *scratch;          /* building frames */
	size_t scratch_cap;
	char pad[4096 + 1];        /* body padding */
	enum phase ph;
	uint64_t start_ns, end_ns, stop_ns;
	uint64_t now;              /* taken after each epoll_wait / recv */
	uint64_t setup_deadline;
	uint32_t next_open, inflight, ready, failed;
	uint32_t src_next;
	uint64_t rng;
	uint64_t cycles_quota, cycles_started, name_seq;
	uint32_t slow_addr;
	uint16_t slow_port;
	uint64_t cpu_start;
	int cpu_marked;
	/* slow-mode per-second series */
	struct hist sec;
	uint32_t sec_no;
	struct wresult res;
} W;

/* ---- small helpers ---- */

static uint64_t rnd(void)
{
	uint64_t x = W.rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return W.rng = x;
}

static void note_error(const char *fmt, const char *a, size_t alen)
{
	if (W.res.first_error[0])
		return;
	snprintf(W.res.first_error, sizeof(W.res.first_error), fmt, (int)alen, a);
	for (char *p = W.res.first_error; *p; p++)
		if (*p == '"' || *p == '\\' || (unsigned char)*p < 32)
			*p = ' ';
}

static uint32_t room_size(uint32_t r)
{
	const struct cl_opts *o = W.o;
	uint32_t n = o->clients / o->rooms + (r < o->clients % o->rooms ? 1 : 0);
	uint32_t i;

	if (o->mode == MODE_SLOW)
		for (i = o->clients - o->slow_clients; i < o->clients; i++)
			if (i % o->rooms == r)
				n--;
	return n;
}

static int ensure(uint8_t **buf, uint32_t *cap, size_t need)
{
	size_t c = *cap ? *cap : 256;
	uint8_t *p;

	if (need <= *cap)
		return 0;
	while (c < need)
		c *= 2;
	if (c > UINT32_MAX)
		return -1;
	p = realloc(*buf, c);
	if (!p)
		return -1;
	*buf = p;
	*cap = (uint32_t)c;
	return 0;
}

static void set_events(struct conn *c, uint32_t ev)
{
	struct epoll_event e;

	if (c->fd < 0 || ev == c->ev)
		return;
	e.events = ev;
	e.data.ptr = c;
	epoll_ctl(W.epfd, EPOLL_CTL_MOD, c->fd, &e);
	c->ev = ev;
}

static uint32_t base_events(struct conn *c)
{
	return (c->muted ? 0 : EPOLLIN) | (c->tls_rd_wants_wr ? EPOLLOUT : 0);
}

/* ---- connection teardown ---- */

static void setup_done(struct conn *c, int ok)
{
	if (!c->in_setup)
		return;
	c->in_setup = 0;
	W.inflight--;
	if (ok)
		W.ready++;
	else
		W.failed++;
}

static void conn_free_bufs(struct conn *c)
{
	free(c->out);
	free(c->in);
	free(c->frag);
	c->out = c->in = c->frag = NULL;
	c->out_len = c->out_off = c->out_cap = 0;
	c->in_len = c->in_cap = 0;
	c->frag_len = c->frag_cap = 0;
	c->in_frag = 0;
}

/* The one release path of a connection's TLS state. A best-effort
 * close_notify (one non-blocking try) when the session is healthy. */
static void conn_free_tls(struct conn *c)
{
	if (!c->ssl)
		return;
	if (!c->tls_dead && SSL_is_init_finished(c->ssl))
		SSL_shutdown(c->ssl);
	SSL_free(c->ssl);
	ERR_clear_error();
	c->ssl = NULL;
	c->tls_wr_wants_rd = c->tls_rd_wants_wr = c->tls_dead = 0;
}

static void conn_close_fd(struct conn *c)
{
	conn_free_tls(c);
	if (c->fd >= 0) {
		epoll_ctl(W.epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->ev = 0;
	conn_free_bufs(c);
}

static void churn_next(struct conn *c);

/* The connection ended in a way we did not ask for. */
static void conn_fail(struct conn *c, const char *why)
{
	uint8_t st = c->state;

	if (c->fd < 0)
		return;
	/* a failed TLS handshake is a handshake failure, not a connect failure */
	if (st == C_CONNECTING && c->ssl)
		st = C_HANDSHAKE;
	if (W.o->verbose > 1)
		fprintf(stderr, "chatload[%u]: conn %u (%s): %s\n", W.wid, c->idx, c->name, why);
	conn_close_fd(c);
	c->state = C_FREE;
	if (W.o->mode == MODE_CHURN) {
		if (st == C_CONNECTING)
			W.res.connect_failed++;
		else if (st == C_HANDSHAKE)
			W.res.handshake_failed++;
		W.res.cycle_failures++;
		note_error("churn: %.*s", why, strlen(why));
		churn_next(c);
		return;
	}
	if (st == C_CONNECTING)
		W.res.connect_failed++;
	else if (st == C_HANDSHAKE || st == C_JOINING)
		W.res.handshake_failed++;
	else
		W.res.disconnected++;
	if (c->in_setup)
		note_error("setup: %.*s", why, strlen(why));
	setup_done(c, 0);
	if (c->is_slow && !W.res.slow_closed_ns)
		W.res.slow_closed_ns = W.now;
}

/* ---- output ---- */

/* One SSL_write of the unsent output: bytes taken (> 0), 0 when TLS must
 * wait (epoll interest set), -1 when c failed. */
static ssize_t tls_write(struct conn *c)
{
	uint32_t len = c->out_len - c->out_off;
	int n = SSL_write(c->ssl, c->out + c->out_off, len > INT32_MAX ? INT32_MAX : (int)len);
	int e;

	if (n > 0) {
		c->tls_wr_wants_rd = 0;
		return n;
	}
	e = SSL_get_error(c->ssl, n);
	if (e == SSL_ERROR_WANT_WRITE) {
		set_events(c, base_events(c) | EPOLLOUT);
		return 0;
	}
	if (e == SSL_ERROR_WANT_READ) {
		c->tls_wr_wants_rd = 1;
		set_events(c, base_events(c) | EPOLLIN);
		return 0;
	}
	c->tls_dead = 1;
	conn_fail(c, cl_tls_error(e));
	return -1;
}

static int conn_flush(struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n;

		if (c->ssl) {
			n = tls_write(c);
			if (n <= 0)
				return (int)n;
			W.res.bytes_out += (uint64_t)n;
			c->out_off += (uint32_t)n;
			continue;
		}
		n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				set_events(c, base_events(c) | EPOLLOUT);
				return 0;
			}
			conn_fail(c, strerror(errno));
			return -1;
		}
		W.res.bytes_out += (uint64_t)n;
		c->out_off += (uint32_t)n;
	}
	c->out_off = c->out_len = 0;
	if (c->out_cap > 65536 || !c->is_sender) {
		free(c->out);
		c->out = NULL;
		c->out_cap = 0;
	}
	set_events(c, base_events(c));
	return 0;
}

static int conn_queue_frame(struct conn *c, int opcode, const void *p, size_t len)
{
	if (c->out_off && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (ensure(&c->out, &c->out_cap, (size_t)c->out_len + len + 14)) {
		conn_fail(c, "out of memory");
		return -1;
	}
	c->out_len += (uint32_t)ws_frame_put(c->out + c->out_len, opcode, p, len, (uint32_t)rnd());
	return 0;
}

static int conn_queue_text(struct conn *c, const char *s)
{
	return conn_queue_frame(c, 1, s, strlen(s));
}

/* The body: 16 hex digits of the send time (CLOCK_MONOTONIC ns), '-', padding. */
static size_t body_put(char *dst, uint64_t ts)
{
	uint32_t p = W.o->payload;

	snprintf(dst, 18, "%016llx-", (unsigned long long)ts);
	memcpy(dst + 17, W.pad, p - 17);
	dst[p] = '\0';
	return p;
}

static int conn_send_message(struct conn *c, uint64_t ts)
{
	char *b = (char *)W.scratch;
	size_t n;

	if (W.o->raw) {
		n = body_put(b, ts);
	} else {
		n = (size_t)snprintf(b, 256, "{\"type\":\"send\",\"room\":\"%s\",\"id\":\"%s.%llu\",\"body\":\"",
				     c->roomname, W.o->run_id, (unsigned long long)++c->msg_id);
		n += body_put(b + n, ts);
		memcpy(b + n, "\"}", 3);
		n += 2;
	}
	return conn_queue_frame(c, 1, b, n);
}

/* ---- connect and handshake ---- */

static void conn_open(struct conn *c)
{
	const struct cl_opts *o = W.o;
	struct sockaddr_in dst, src;
	struct epoll_event e;
	int fd, one = 1;

	c->state = C_CONNECTING;
	c->in_frag = 0;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		c->fd = -1;
		W.res.connect_failed++;
		note_error("socket: %.*s", strerror(errno), strlen(strerror(errno)));
		c->state = C_FREE;
		if (o->mode == MODE_CHURN) {
			W.res.cycle_failures++;
		} else {
			setup_done(c, 0);
		}
		return;
	}
	c->fd = fd;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c->is_slow && o->slow_rcvbuf > 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o->slow_rcvbuf, sizeof(o->slow_rcvbuf));
	if (o->src_ips) {
		memset(&src, 0, sizeof(src));
		src.sin_family = AF_INET;
		src.sin_addr.s_addr = htonl(0x7f000002u + (W.src_next++ % o->src_ips));
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
			conn_fail(c, "bind failed");
			return;
		}
	}
	memset(&dst, 0, sizeof(dst));
	dst.sin_family = AF_INET;
	dst.sin_port = htons(o->dst_port);
	if (o->nextra && c->idx % (uint32_t)(o->nextra + 1))
		dst.sin_port = htons(o->extra_ports[c->idx % (uint32_t)(o->nextra + 1) - 1]);
	dst.sin_addr.s_addr = htonl(o->dst_addr);
	e.events = EPOLLOUT;
	e.data.ptr = c;
	c->ev = EPOLLOUT;
	if (epoll_ctl(W.epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
		close(fd);
		c->fd = -1;
		c->state = C_FREE;
		W.res.connect_failed++;
		if (o->mode == MODE_CHURN)
			W.res.cycle_failures++;
		else
			setup_done(c, 0);
		return;
	}
	if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
		conn_fail(c, strerror(errno));
		return;
	}
}

/* The HTTP upgrade request, once the connection (TCP, or TLS over it) is up. */
static void conn_send_upgrade(struct conn *c)
{
	const struct cl_opts *o = W.o;
	uint8_t keyraw[16];
	char key[32], req[1024], path[400];
	int n;

	for (int i = 0; i < 16; i += 8) {
		uint64_t r = rnd();
		memcpy(keyraw + i, &r, 8);
	}
	base64_encode(keyraw, 16, key);
	ws_accept_for(key, c->accept);
	if (o->raw && c->roomname[0])
		snprintf(path, sizeof(path), "%s%croom=%s", o->path, strchr(o->path, '?') ? '&' : '?', c->roomname);
	else
		snprintf(path, sizeof(path), "%s", o->path);
	n = snprintf(req, sizeof(req),
		     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
		     path, o->host, key, o->raw ? "" : "Sec-WebSocket-Protocol: chat.v1\r\n");
	c->state = C_HANDSHAKE;
	if (ensure(&c->out, &c->out_cap, (size_t)n)) {
		conn_fail(c, "out of memory");
		return;
	}
	memcpy(c->out, req, (size_t)n);
	c->out_len = (uint32_t)n;
	c->out_off = 0;
	c->ev = 0;                 /* force the MOD in conn_flush */
	conn_flush(c);
}

/* One step of the TLS handshake; the connection stays in C_CONNECTING
 * until it is done, then sends the upgrade request. */
static void conn_tls_handshake(struct conn *c)
{
	int r = SSL_connect(c->ssl), e;

	if (r == 1) {
		conn_send_upgrade(c);
		return;
	}
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		set_events(c, EPOLLIN);
	} else if (e == SSL_ERROR_WANT_WRITE) {
		set_events(c, EPOLLOUT);
	} else {
		c->tls_dead = 1;
		conn_fail(c, cl_tls_error(e));
	}
}

static void conn_connected(struct conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
		conn_fail(c, strerror(err ? err : errno));
		return;
	}
	if (c->is_slow) {
		struct sockaddr_in me;
		socklen_t ml = sizeof(me);
		if (getsockname(c->fd, (struct sockaddr *)&me, &ml) == 0 && !W.slow_port) {
			W.slow_addr = ntohl(me.sin_addr.s_addr);
			W.slow_port = ntohs(me.sin_port);
		}
	}
	if (!W.ssl_ctx) {
		conn_send_upgrade(c);
		return;
	}
	c->ssl = SSL_new(W.ssl_ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
		c->tls_dead = 1;
		conn_fail(c, cl_tls_error(SSL_ERROR_SSL));
		return;
	}
	SSL_set_connect_state(c->ssl);
	conn_tls_handshake(c);
}

/* After the 101: chat.v1 sends hello + join (+ send in churn) at once. */
static void conn_open_ws(struct conn *c)
{
	const struct cl_opts *o = W.o;
	char buf[256];

	if (o->raw) {
		if (o->mode == MODE_CHURN) {
			c->state = C_WAIT_MSG;
			if (conn_send_message(c, now_ns()) == 0)
				conn_flush(c);
			return;
		}
		c->state = C_READY;
		setup_done(c, 1);
		if (c->is_slow)
			c->muted = 1, set_events(c, 0);
		return;
	}
	snprintf(buf, sizeof(buf), "{\"type\":\"hello\",\"name\":\"%s\"}", c->name);
	if (conn_queue_text(c, buf))
		return;
	snprintf(buf, sizeof(buf), "{\"type\":\"join\",\"room\":\"%s\"}", c->roomname);
	if (conn_queue_text(c, buf))
		return;
	if (o->mode == MODE_CHURN) {
		c->state = C_WAIT_MSG;
		if (conn_send_message(c, now_ns()))
			return;
	} else {
		c->state = C_JOINING;
	}
	conn_flush(c);
}

/* Returns bytes consumed from the handshake response, or -1 (conn failed), 0 (need more). */
static int conn_handshake_input(struct conn *c, const uint8_t *p, size_t n)
{
	const char *s = (const char *)p, *end, *line, *v;
	size_t hl;
	int ok = 0;

	end = memmem(s, n, "\r\n\r\n", 4);
	if (!end) {
		if (n > HS_MAX) {
			conn_fail(c, "handshake response too long");
			return -1;
		}
		return 0;
	}
	hl = (size_t)(end - s) + 4;
	if (n < 12 || memcmp(s, "HTTP/1.1 101", 12) != 0) {
		const char *eol = memchr(s, '\r', hl);
		note_error("handshake refused: %.*s", s, eol ? (size_t)(eol - s) : 12);
		conn_fail(c, "handshake refused");
		return -1;
	}
	for (line = s; line < end;) {
		const char *eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
		if (!eol)
			break;
		if ((size_t)(eol - line) > 21 && strncasecmp(line, "sec-websocket-accept:", 21) == 0) {
			v = line + 21;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			if ((size_t)(eol - v) >= 28 && memcmp(v, c->accept, 28) == 0)
				ok = 1;
		}
		line = eol + 2;
	}
	if (!ok) {
		note_error("%.*s", "bad or missing Sec-WebSocket-Accept", 35);
		conn_fail(c, "bad Sec-WebSocket-Accept");
		return -1;
	}
	conn_open_ws(c);
	if (c->fd < 0)
		return -1;
	return (int)hl;
}

/* ---- churn ---- */

static void churn_start(struct conn *c)
{
	W.cycles_started++;
	c->t0 = now_ns();
	c->in_frag = 0;
	snprintf(c->name, sizeof(c->name), "L%sw%un%llu", W.o->run_id, W.wid,
		 (unsigned long long)W.name_seq++);
	conn_open(c);
}

/* After a failure the slot is restarted from check_phase (no recursion). */
static void churn_next(struct conn *c)
{
	c->state = C_FREE;
}

static void churn_complete(struct conn *c, int timed_out)
{
	uint64_t t = now_ns();

	if (timed_out)
		W.res.cycle_timeouts++;
	conn_close_fd(c);
	W.res.cycles++;
	hist_add(&W.res.lat, (t - c->t0) / 1000);
	c->state = C_FREE;
	W.now = t;
	if (W.ph == PH_RUN && W.cycles_started < W.cycles_quota && W.now < W.end_ns)
		churn_start(c);
}

static void conn_begin_close(struct conn *c)
{
	static const uint8_t normal[2] = { 0x03, 0xe8 };

	c->state = C_CLOSING;
	c->t_close = W.now;
	if (conn_queue_frame(c, 8, normal, 2) == 0)
		conn_flush(c);
}

/* ---- input ---- */

static uint64_t parse_hex16(const uint8_t *p, size_t n, int *ok)
{
	uint64_t v = 0;
	size_t i;

	*ok = 0;
	if (n < 16)
		return 0;
	for (i = 0; i < 16; i++) {
		uint8_t ch = p[i];
		v <<= 4;
		if (ch >= '0' && ch <= '9')
			v |= (uint64_t)(ch - '0');
		else if (ch >= 'a' && ch <= 'f')
			v |= (uint64_t)(ch - 'a' + 10);
		else
			return 0;
	}
	*ok = 1;
	return v;
}

static void delivery(struct conn *c, const uint8_t *body, size_t n)
{
	int ok;
	uint64_t ts;

	(void)c;
	if (W.ph != PH_RUN && W.ph != PH_DRAIN)
		return;
	ts = parse_hex16(body, n, &ok);
	if (!ok || ts < W.start_ns)
		return;                    /* not one of this run's messages */
	W.res.delivered++;
	if (W.now > ts) {
		uint64_t us = (W.now - ts) / 1000;
		hist_add(&W.res.lat, us);
		if (W.o->mode == MODE_SLOW)
			hist_add(&W.sec, us);
	} else {
		hist_add(&W.res.lat, 0);
	}
}

/*
 * Where the body of a chat.v1 message event starts. chatd ends the event
 * with "body":"<body>","ts":N}, and every body of this run is exactly
 * --payload unescaped bytes, so the body key is found from the end in a few
 * bytes; anything else falls back to a search from the start. The pattern
 * "body":" can only be a key: inside a JSON string each quote is escaped.
 * (The forward memmem alone was a fifth of chatload's CPU at 3 M
 * deliveries/s, where the tool, not the server, saturated first.)
 */
static const uint8_t *chat_body(const uint8_t *p, size_t n)
{
	static const char key[] = "\"body\":\"";
	const uint8_t *q = memrchr(p, '"', n);
	size_t want = (size_t)W.o->payload + 8;
	int i;

	for (i = 0; q && i < 2; i++)
		q = memrchr(p, '"', (size_t)(q - p));
	if (q && (size_t)(q - p) >= want && memcmp(q - want, key, 8) == 0)
		return q - want + 8;
	q = memmem(p, n, key, 8);
	return q ? q + 8 : NULL;
}

/* A chat.v1 text message. Returns -1 if c was closed. */
static int chat_message(struct conn *c, const uint8_t *p, size_t n)
{
	const uint8_t *t, *b;
	size_t tl;

	if (n > 17 && memcmp(p, "{\"type\":\"message\"", 17) == 0) {
		if (c->state == C_WAIT_MSG) {
			conn_begin_close(c);
			return c->fd < 0 ? -1 : 0;
		}
		b = chat_body(p, n);
		if (b)
			delivery(c, b, n - (size_t)(b - p));
		return 0;
	}
	t = memmem(p, n, "\"type\":\"", 8);
	if (!t)
		return 0;
	t += 8;
	tl = n - (size_t)(t - p);
	if (tl >= 4 && memcmp(t, "ack\"", 4) == 0) {
		if (W.ph == PH_RUN || W.ph == PH_DRAIN) {
			W.res.acked++;
			W.res.expected += room_size(c->room);
		}
	} else if (tl >= 7 && memcmp(t, "joined\"", 7) == 0) {
		if (c->state == C_JOINING) {
			c->state = C_READY;
			setup_done(c, 1);
			if (c->is_slow) {
				c->muted = 1;
				set_events(c, c->out_len > c->out_off ? EPOLLOUT : 0);
			}
		}
	} else if (tl >= 6 && memcmp(t, "error\"", 6) == 0) {
		const uint8_t *code = memmem(p, n, "\"code\":\"", 8);
		W.res.errors++;
		if (code && (size_t)(p + n - code) > 8 + 13 && memcmp(code + 8, "rate_limited\"", 13) == 0) {
			W.res.rate_limited++;
		} else {
			W.res.other_errors++;
			note_error("server error: %.*s", (const char *)p, n > 120 ? 120 : n);
		}
		if (c->state == C_JOINING || c->state == C_WAIT_MSG) {
			conn_fail(c, "error reply during setup");
			return -1;
		}
	}
	return 0;
}

static int on_text(struct conn *c, const uint8_t *p, size_t n)
{
	W.res.frames_in++;
	if (W.o->raw) {
		if (c->state == C_WAIT_MSG) {
			conn_begin_close(c);
			return c->fd < 0 ? -1 : 0;
		}
		if (c->state == C_READY)
			delivery(c, p, n);
		return 0;
	}
	return chat_message(c, p, n);
}

/* The server closed: answer (if we did not start it) and drop the socket. */
static int on_close_frame(struct conn *c, const uint8_t *p, size_t n)
{
	unsigned code = n >= 2 ? (unsigned)p[0] << 8 | p[1] : 1005;

	if (c->state == C_CLOSING) {
		churn_complete(c, 0);
		return -1;
	}
	W.res.closed_by_server++;
	if (code == 1001)
		W.res.close_1001++;
	else if (code == 1008)
		W.res.close_1008++;
	else
		W.res.close_other++;
	if (n > 2)
		note_error("server closed: %.*s", (const char *)p + 2, n - 2);
	if (n >= 2 && conn_queue_frame(c, 8, p, 2) == 0)
		conn_flush(c);
	if (c->fd >= 0) {
		/* counted above as closed_by_server, not as a failure */
		uint8_t st = c->state;
		conn_close_fd(c);
		c->state = C_FREE;
		if (W.o->mode == MODE_CHURN) {
			W.res.cycle_failures++;
			churn_next(c);
		} else {
			if (st == C_JOINING || st == C_HANDSHAKE)
				W.res.handshake_failed++;
			setup_done(c, 0);
		}
	}
	return -1;
}

/* Frames in buf[0..n). Returns bytes consumed, or -1 if c was closed. */
static long conn_frames(struct conn *c, uint8_t *buf, size_t n, size_t *need)
{
	size_t off = 0;
	struct ws_frame f;

	*need = 0;
	while (off < n) {
		int r = ws_frame_parse(buf + off, n - off, &f);
		if (r < 0) {
			conn_fail(c, "protocol error in a server frame");
			return -1;
		}
		if (r == 0) {
			*need = f.size;
			break;
		}
		off += f.size;
		switch (f.opcode) {
		case 0:
			if (!c->in_frag) {
				conn_fail(c, "continuation without a start");
				return -1;
			}
			if (ensure(&c->frag, &c->frag_cap, (size_t)c->frag_len + f.len)) {
				conn_fail(c, "out of memory");
				return -1;
			}
			memcpy(c->frag + c->frag_len, f.payload, f.len);
			c->frag_len += (uint32_t)f.len;
			if (f.fin) {
				c->in_frag = 0;
				if (on_text(c, c->frag, c->frag_len) < 0)
					return -1;
				c->frag_len = 0;
				if (c->frag_cap > 65536) {
					free(c->frag);
					c->frag = NULL;
					c->frag_cap = 0;
				}
			}
			break;
		case 1:
		case 2:
			if (c->in_frag) {
				conn_fail(c, "new message inside a fragmented one");
				return -1;
			}
			if (!f.fin) {
				if (ensure(&c->frag, &c->frag_cap, f.len + 1)) {
					conn_fail(c, "out of memory");
					return -1;
				}
				memcpy(c->frag, f.payload, f.len);
				c->frag_len = (uint32_t)f.len;
				c->in_frag = 1;
				break;
			}
			if (on_text(c, f.payload, f.len) < 0)
				return -1;
			break;
		case 8:
			on_close_frame(c, f.payload, f.len);
			return -1;
		case 9:
			W.res.pings++;
			if (conn_queue_frame(c, 10, f.payload, f.len) || conn_flush(c))
				return -1;
			break;
		case 10:
			break;
		default:
			conn_fail(c, "unknown opcode");
			return -1;
		}
		if (c->fd < 0)
			return -1;
	}
	return (long)off;
}

/* The stream ended (why == NULL: end of stream; else an error). */
static void conn_read_end(struct conn *c, const char *why)
{
	if (c->state == C_CLOSING) {
		churn_complete(c, 0);
		return;
	}
	conn_fail(c, why ? why : "connection closed by the server without a close frame");
}

enum { TLS_RD_OPEN, TLS_RD_EOF, TLS_RD_ERROR };

/* Fill buf[0..cap) with what the TLS connection has: SSL_read returns one
 * record at a time, so it loops until OpenSSL wants the socket (WANT_READ)
 * or the buffer is full. Returns the bytes read; *end says whether the
 * stream ended after them (*why then names an error), *full that the buffer
 * filled (OpenSSL may hold more, which no epoll event would announce). */
static size_t tls_read(struct conn *c, uint8_t *buf, size_t cap, int *end, const char **why, int *full)
{
	size_t got = 0;

	*end = TLS_RD_OPEN;
	*full = 0;
	while (got < cap) {
		size_t room = cap - got;
		int n = SSL_read(c->ssl, buf + got, room > INT32_MAX ? INT32_MAX : (int)room);
		int e;

		if (n > 0) {
			got += (size_t)n;
			continue;
		}
		e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_READ)
			break;
		if (e == SSL_ERROR_WANT_WRITE) {
			c->tls_rd_wants_wr = 1;
			set_events(c, base_events(c));
			return got;
		}
		if (e == SSL_ERROR_ZERO_RETURN) {
			*end = TLS_RD_EOF;        /* close_notify, or EOF (SSL_OP_IGNORE_UNEXPECTED_EOF) */
		} else {
			c->tls_dead = 1;
			*end = TLS_RD_ERROR;
			*why = cl_tls_error(e);
		}
		return got;
	}
	if (c->tls_rd_wants_wr) {
		c->tls_rd_wants_wr = 0;
		set_events(c, base_events(c) | (c->out_len > c->out_off ? EPOLLOUT : 0));
	}
	*full = got == cap;
	return got;
}

/* One read and what it brought. Returns 1 when a TLS read filled the buffer
 * and c is still open (read again), else 0. */
static int conn_read_once(struct conn *c)
{
	uint8_t *buf, *dst;
	size_t have, need, cap;
	ssize_t n;
	long used;
	int end = TLS_RD_OPEN, full = 0;
	const char *why = NULL;

	if (c->in_len) {
		size_t want = (size_t)c->in_len + 65536;
		if (ensure(&c->in, &c->in_cap, want)) {
			conn_fail(c, "out of memory");
			return 0;
		}
		buf = c->in;
		have = c->in_len;
		dst = c->in + c->in_len;
		cap = c->in_cap - c->in_len;
	} else {
		buf = dst = W.rbuf;
		have = 0;
		cap = RBUF_SIZE;
	}
	if (c->ssl) {
		n = (ssize_t)tls_read(c, dst, cap, &end, &why, &full);
		if (n == 0) {
			if (end != TLS_RD_OPEN)
				conn_read_end(c, why);
			return 0;
		}
	} else {
		n = recv(c->fd, dst, cap, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return 0;
			conn_read_end(c, strerror(errno));
			return 0;
		}
		if (n == 0) {
			conn_read_end(c, NULL);
			return 0;
		}
	}
	W.now = now_ns();
	W.res.bytes_in += (uint64_t)n;
	have += (size_t)n;
	used = 0;
	if (c->state == C_HANDSHAKE) {
		int h = conn_handshake_input(c, buf, have);
		if (h < 0)
			return 0;
		if (h == 0) {
			if (buf == W.rbuf) {
				if (ensure(&c->in, &c->in_cap, have + 1024)) {
					conn_fail(c, "out of memory");
					return 0;
				}
				memcpy(c->in, buf, have);
			}
			c->in_len = (uint32_t)have;
			if (end != TLS_RD_OPEN) {
				conn_read_end(c, why);
				return 0;
			}
			return full;
		}
		used = h;
	}
	if ((size_t)used < have) {
		long u = conn_frames(c, buf + used, have - (size_t)used, &need);
		if (u < 0)
			return 0;
		used += u;
	}
	have -= (size_t)used;
	if (have) {
		if (buf == W.rbuf) {
			if (ensure(&c->in, &c->in_cap, have > 4096 ? have : 4096)) {
				conn_fail(c, "out of memory");
				return 0;
			}
			memcpy(c->in, buf + used, have);
		} else {
			memmove(c->in, c->in + used, have);
		}
		c->in_len = (uint32_t)have;
	} else {
		c->in_len = 0;
		if (c->in && c->in_cap > 65536) {
			free(c->in);
			c->in = NULL;
			c->in_cap = 0;
		}
	}
	if (end != TLS_RD_OPEN) {
		conn_read_end(c, why);
		return 0;
	}
	return full;
}

static void conn_readable(struct conn *c)
{
	while (conn_read_once(c))
		;
}

static void conn_event(struct conn *c, uint32_t ev)
{
	if (c->state == C_CONNECTING) {
		if (c->ssl) {
			conn_tls_handshake(c);
			return;
		}
		if (ev & (EPOLLERR | EPOLLHUP)) {
			int err = 0;
			socklen_t l = sizeof(err);
			getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
			conn_fail(c, err ? strerror(err) : "connect failed");
			return;
		}
		if (ev & EPOLLOUT)
			conn_connected(c);
		return;
	}
	if (c->muted) {
		if (ev & (EPOLLERR | EPOLLHUP)) {
			if (!W.res.slow_closed_ns)
				W.res.slow_closed_ns = now_ns();
			conn_close_fd(c);
			c->state = C_FREE;
			W.res.disconnected++;
			return;
		}
		if ((ev & (EPOLLOUT | EPOLLIN)) && c->out_len > c->out_off)
			conn_flush(c);
		return;
	}
	if (c->out_len > c->out_off && ((ev & EPOLLOUT) || ((ev & EPOLLIN) && c->tls_wr_wants_rd))) {
		if (conn_flush(c) < 0)
			return;
	}
	if ((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) || ((ev & EPOLLOUT) && c->tls_rd_wants_wr))
		conn_readable(c);
}

/* ---- pacing ---- */

static void send_tick(void)
{
	const struct cl_opts *o = W.o;
	uint64_t t = W.now < W.end_ns ? W.now : W.end_ns;
	double el = (double)(t - W.start_ns) / 1e9;
	uint32_t i;

	for (i = 0; i < W.nsenders; i++) {
		struct conn *c = W.senders[i];
		uint64_t due = (uint64_t)(el * W.rate_per_sender + c->phase);
		uint64_t ts;
		int k = 0;

		if (c->fd < 0 || c->state != C_READY || due <= c->sent)
			continue;
		ts = now_ns();
		while (c->sent < due && c->out_len - c->out_off < o->max_out && k < 4096) {
			if (conn_send_message(c, ts))
				break;
			c->sent++;
			k++;
			W.res.sent++;
			if (o->raw)
				W.res.expected += room_size(c->room);
		}
		if (c->fd >= 0 && c->out_len > c->out_off && !(c->ev & EPOLLOUT))
			conn_flush(c);
	}
}

static void sec_series_tick(void)
{
	uint32_t s;

	if (W.o->mode != MODE_SLOW || W.ph != PH_RUN)
		return;
	s = (uint32_t)((W.now - W.start_ns) / 1000000000ull);
	while (W.sec_no < s && W.res.series_n < SERIES_MAX) {
		uint32_t k = W.res.series_n++;
		W.res.series_p99_ms[k] = (float)hist_pct_ms(&W.sec, 99);
		W.res.series_max_ms[k] = (float)W.sec.max_us / 1000.0f;
		W.res.series_count[k] = (uint32_t)W.sec.count;
		hist_reset(&W.sec);
		W.sec_no++;
	}
}

/* ---- phases ---- */

static uint64_t self_cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}

static void cpu_mark_end(void)
{
	if (!W.cpu_marked) {
		W.res.cpu_ns = self_cpu_ns() - W.cpu_start;
		W.cpu_marked = 1;
	}
}

static void report(void)
{
	uint32_t i;

	if (W.o->mode == MODE_FANOUT || W.o->mode == MODE_SLOW) {
		double el = (double)(W.end_ns - W.start_ns) / 1e9;
		for (i = 0; i < W.nsenders; i++) {
			uint64_t due = (uint64_t)(el * W.rate_per_sender + W.senders[i]->phase);
			if (due > W.senders[i]->sent)
				W.res.send_behind += due - W.senders[i]->sent;
		}
	}
	cpu_mark_end();
	W.res.connected = W.ready;
	W.res.done_ns = W.now;
	pipe_send(W.wfd, MSG_RESULT, &W.res, sizeof(W.res));
	W.ph = PH_REPORTED;
}

static void quit(void)
{
	uint32_t i;

	for (i = 0; i < W.nconns; i++)
		if (W.conns[i].fd >= 0)
			close(W.conns[i].fd);
	_exit(0);
}

static void pipe_input(void)
{
	uint32_t type, len;
	struct msg_go go;

	if (pipe_recv(W.rfd, &type, &go, sizeof(go), &len) < 0)
		quit();                     /* parent gone */
	if (type == MSG_QUIT)
		quit();
	if (type == MSG_GO && W.ph == PH_WAIT_GO) {
		W.start_ns = go.start_ns;
		W.end_ns = go.end_ns;
		W.stop_ns = go.stop_ns;
	}
}

static void check_phase(void)
{
	const struct cl_opts *o = W.o;
	uint32_t i;

	switch (W.ph) {
	case PH_SETUP:
		while (W.inflight < o->connect_conc && W.next_open < W.nconns) {
			struct conn *c = &W.conns[W.next_open++];
			c->in_setup = 1;
			W.inflight++;
			conn_open(c);
		}
		if ((W.ready + W.failed >= W.nconns) || W.now >= W.setup_deadline) {
			struct msg_ready r = { W.ready, W.failed + (W.nconns - W.next_open) + W.inflight,
					       W.slow_addr, W.slow_port };
			pipe_send(W.wfd, MSG_READY, &r, sizeof(r));
			W.ph = PH_WAIT_GO;
		}
		break;
	case PH_WAIT_GO:
		if (W.start_ns && W.now >= W.start_ns) {
			W.ph = PH_RUN;
			W.cpu_start = self_cpu_ns();
			if (o->mode == MODE_CHURN)
				for (i = 0; i < W.nconns && W.cycles_started < W.cycles_quota; i++)
					churn_start(&W.conns[i]);
		}
		break;
	case PH_RUN:
		if (o->mode == MODE_FANOUT || o->mode == MODE_SLOW)
			send_tick();
		sec_series_tick();
		if (o->mode == MODE_CHURN) {
			int busy = 0;
			for (i = 0; i < W.nconns; i++) {
				struct conn *c = &W.conns[i];
				if (c->fd < 0 && W.cycles_started < W.cycles_quota && W.now < W.end_ns)
					churn_start(c);
				if (c->fd < 0)
					continue;
				busy = 1;
				if (c->state == C_CLOSING && W.now - c->t_close > CLOSE_TIMEOUT_NS)
					churn_complete(c, 1);
				else if (c->state != C_CLOSING && W.now - c->t0 > CYCLE_TIMEOUT_NS) {
					W.res.cycle_timeouts++;
					conn_fail(c, "cycle timed out");
				}
			}
			if ((!busy && W.cycles_started >= W.cycles_quota) || W.now >= W.end_ns)
				report();
			break;
		}
		if (W.now >= W.end_ns) {
			cpu_mark_end();
			if (o->mode == MODE_IDLE)
				report();
			else
				W.ph = PH_DRAIN;
		}
		break;
	case PH_DRAIN:
		if (W.now >= W.stop_ns)
			report();
		break;
	case PH_REPORTED:
		break;
	}
}

void worker_main(const struct cl_opts *o, uint32_t wid, int rfd, int wfd)
{
	struct epoll_event evs[1024], e;
	uint32_t i, n, k;

	memset(&W, 0, sizeof(W));
	W.o = o;
	W.wid = wid;
	W.rfd = rfd;
	W.wfd = wfd;
	W.rng = now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ull;
	W.src_next = wid;
	signal(SIGPIPE, SIG_IGN);
	W.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (o->tls) {
		char err[256];
		W.ssl_ctx = cl_tls_ctx_new(o, err, sizeof(err));
		if (!W.ssl_ctx) {
			fprintf(stderr, "chatload[%u]: TLS: %s\n", wid, err);
			_exit(1);
		}
	}
	W.rbuf = malloc(RBUF_SIZE);
	W.scratch_cap = 512 + 2 * (size_t)o->payload;
	W.scratch = malloc(W.scratch_cap);
	memset(W.pad, 'x', sizeof(W.pad) - 1);
	if (W.epfd < 0 || !W.rbuf || !W.scratch) {
		fprintf(stderr, "chatload[%u]: out of memory\n", wid);
		_exit(1);
	}
	e.events = EPOLLIN;
	e.data.ptr = NULL;
	epoll_ctl(W.epfd, EPOLL_CTL_ADD, rfd, &e);

	if (o->mode == MODE_CHURN) {
		n = o->concurrency / o->workers + (wid < o->concurrency % o->workers ? 1 : 0);
		W.cycles_quota = o->cycles / o->workers + (wid < o->cycles % o->workers ? 1 : 0);
	} else {
		n = o->clients / o->workers + (wid < o->clients % o->workers ? 1 : 0);
	}
	W.conns = calloc(n ? n : 1, sizeof(struct conn));
	W.senders = calloc(n ? n : 1, sizeof(struct conn *));
	if (!W.conns || !W.senders)
		_exit(1);
	W.nconns = n;
	for (k = 0; k < n; k++) {
		struct conn *c = &W.conns[k];
		c->fd = -1;
		if (o->mode == MODE_CHURN) {
			c->idx = k;
			if (o->room_prefix[0])
				snprintf(c->roomname, sizeof(c->roomname), "%sw%us%u", o->room_prefix, wid, k);
			else
				snprintf(c->roomname, sizeof(c->roomname), "churn%uw%us%u", (unsigned)getppid() % 100000, wid, k);
			continue;
		}
		i = k * o->workers + wid;           /* global index */
		c->idx = i;
		c->room = i % o->rooms;
		snprintf(c->roomname, sizeof(c->roomname), "r%u", c->room);
		snprintf(c->name, sizeof(c->name), "L%sc%u", o->run_id, i);
		if (o->mode == MODE_SLOW && i >= o->clients - o->slow_clients)
			c->is_slow = 1;
		if ((o->mode == MODE_FANOUT || o->mode == MODE_SLOW) && i < o->senders) {
			c->is_sender = 1;
			c->phase = (double)i / o->senders;
			W.senders[W.nsenders++] = c;
		}
	}
	if (o->raw && o->rooms <= 1 && o->mode != MODE_CHURN)
		for (k = 0; k < n; k++)
			W.conns[k].roomname[0] = '\0';   /* one-room peers: plain path */
	W.rate_per_sender = o->senders ? o->rate / o->senders : 0;
	W.now = now_ns();
	W.setup_deadline = W.now + (uint64_t)(o->setup_timeout * 1e9);
	W.ph = PH_SETUP;
	if (o->mode == MODE_CHURN) {
		struct msg_ready r = { 0, 0, 0, 0 };
		pipe_send(W.wfd, MSG_READY, &r, sizeof(r));
		W.ph = PH_WAIT_GO;
	}

	for (;;) {
		int timeout = 50, m;

		if (W.ph == PH_RUN && (o->mode == MODE_FANOUT || o->mode == MODE_SLOW))
			timeout = 1;
		else if (W.ph == PH_RUN && o->mode == MODE_CHURN)
			timeout = 5;
		else if (W.ph == PH_WAIT_GO && W.start_ns) {
			uint64_t t = now_ns();
			timeout = W.start_ns > t ? (int)((W.start_ns - t) / 1000000) : 0;
			if (timeout > 50)
				timeout = 50;
		}
		m = epoll_wait(W.epfd, evs, 1024, timeout);
		W.now = now_ns();
		if (m < 0 && errno != EINTR) {
			perror("chatload: epoll_wait");
			_exit(1);
		}
		for (int j = 0; j < m; j++) {
			if (!evs[j].data.ptr) {
				pipe_input();
				continue;
			}
			conn_event(evs[j].data.ptr, evs[j].events);
		}
		W.now = now_ns();
		check_phase();
	}
}
