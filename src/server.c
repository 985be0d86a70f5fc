/*
 * server.c - libwebsockets on chatd's libev loop.
 *
 * One lws protocol ("chat.v1") serves both HTTP and WebSocket, so a client
 * that offers no subprotocol still gets v1. Per-connection state lives in
 * lws' per-session data (struct conn); lws allocates and frees that memory,
 * chatd owns what hangs off it and releases it in conn_release() only.
 */
#include "server.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libwebsockets.h>
#include <malloc.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <uthash.h>
#include <utlist.h>

#include "api.h"
#include "cidr.h"
#include "hub_api.h"
#include "log.h"
#include "proto.h"
#include "tlsctx.h"
#include "webassets.h"

static_assert(LWS_PRE <= MSGBUF_HEADROOM, "msgbuf headroom must hold LWS_PRE");

/* Frames handed to the kernel per sendmsg(). */
#define SERVER_IOV 128
/* TLS: queued frames are gathered into writes of at most one TLS record. */
#define SERVER_TLS_CHUNK 16384
/* lws' own sends (the rest of a partly written frame, HTTP bodies) go out
 * in pieces of at most this size. */
#define SERVER_TX_PACKET 65536
/* A requested close that cannot be written (peer not reading) is forced
 * after this many seconds. */
#define SERVER_CLOSE_GRACE 1
/* A close that discards the queue (slow consumer, out of memory): the peer
 * has its whole socket backlog to read before it could see the close frame,
 * so after this many seconds the socket is aborted (conn_linger_cb) instead
 * of holding its kernel buffers for lws' 5 s flush. A peer that reads at
 * once still gets the close frame. (lws 4.1 as built by Debian exports no
 * sub-second lws_set_timeout_us: chatd's own timer.) */
#define SERVER_CLOSE_GRACE_BLOCKED 0.2
/* lws reads at most this many bytes from a socket per service call; it is
 * also the size of its per-connection receive buffer (rx_buffer_size). */
#define SERVER_RX_CHUNK 256
/* A connection that got close to a full chunk in one loop iteration is read
 * again in the same iteration, up to this many more chunks (64 KiB). */
#define SERVER_REREAD_ROUNDS 256
/* Reassembly buffers above this size are freed after each message. */
#define SERVER_RX_KEEP 16384
/* fds kept free for the listener, logs and later engines. */
#define SERVER_FD_RESERVE 64
/* A refused flood from one address logs one line per this many seconds. */
#define SERVER_REFUSAL_LOG_EVERY 10.0
/* lws' header pool never smaller than this (a tiny max_connections). */
#define SERVER_HEADER_POOL_MIN 32

/* Per peer address: its WebSocket connections (max_connections_per_ip) and
 * its connections that are not a WebSocket yet (max_pending_per_ip). Freed
 * when both are 0. */
struct server_ip {
	char ip[48];
	uint32_t count;                /* established WebSocket connections */
	uint32_t pending;              /* accepted, still in TLS/HTTP: see server_accept */
	double refusal_logged;         /* last log line about a pending refusal */
	UT_hash_handle hh;
};

struct conn {
	struct lws *wsi;
	struct server *srv;
	struct session *sess;          /* owned by the hub; NULL after release */
	struct server_ip *ip;          /* per-IP count entry */
	struct conn *prev, *next;      /* srv->conns */
	struct conn *rel_prev, *rel_next;  /* srv->releasing */
	struct conn *out_prev, *out_next;  /* srv->out: frames to flush this iteration */
	int fd;
	uint32_t rx_iter, rx_round;    /* loop iteration, payload bytes received in it */
	uint32_t rx_msgs;              /* messages handed to the hub in that iteration */
	ev_timer timer;                /* handshake deadline and heartbeat */
	double opened, last_rx, last_ping;
	char *rx;                      /* reassembly of a fragmented message */
	size_t rx_len, rx_cap;
	struct msgbuf *http_body;      /* HTTP response waiting for HTTP_WRITEABLE */
	uint16_t close_code;           /* != 0: close requested */
	char close_reason[HUB_API_REASON_MAX + 1];   /* what the client sees */
	void *api;                     /* server API request state (api.c owns it) */
	unsigned ping_due : 1;
	unsigned close_flush : 1;      /* write the queue out before closing */
	unsigned rx_paused : 1;        /* input held back until the queue drains */
	unsigned rel_queued : 1;       /* on srv->releasing */
	unsigned out_queued : 1;       /* on srv->out */
	unsigned rx_more : 1;          /* on srv->rx_more: read again this iteration */
	unsigned out_blocked : 1;      /* the socket is full: resume in the writable callback */
	unsigned tls : 1;              /* writes go through lws (OpenSSL) */
	unsigned lingering : 1;        /* released, socket still closing in lws */
	unsigned close_fast : 1;       /* queue discarded: abort the socket soon */
	unsigned established : 1;
};

struct server {
	struct ev_loop *loop;
	const struct config *cfg;
	struct metrics *m;
	struct hub *hub;
	struct lws_context *ctx;
	struct lws_vhost *vh;
	struct lws_vhost *api_vh;      /* [api] listener, NULL: /metrics and /healthz on vh */
	struct api *api;               /* the server API on api_vh; NULL: off (no api.keys_file) */
	int api_port;
	struct cidr allow[CONFIG_API_ALLOW_MAX];   /* api.allow, parsed */
	size_t nallow;
	void *foreign_loops[1];
	struct conn *conns;
	size_t nconns;
	struct conn *releasing;        /* close decided inside hub code: release soon */
	struct conn *out;              /* got frames this iteration: flush before sleeping */
	double write_now;              /* clock for the delivery histogram: read once per flush pass */
	struct conn **rx_more;         /* to read again this iteration (NULL: released) */
	size_t rx_more_len, rx_more_cap;
	uint32_t iter;                 /* loop iterations, for conn.rx_iter */
	ev_check reread_watcher;
	size_t released_since_trim;    /* connections freed since the last malloc_trim */
	ev_timer trim_timer;
	ev_timer kick_timer;
	ev_timer token_timer;          /* the hub's next token deadline (one for every session) */
	double token_at;               /* what it is armed for (wall clock), 0: stopped */
	size_t lingering;              /* released conns whose socket lws still closes */
	ev_prepare flush_watcher;      /* before the loop sleeps: releases, then writes */
	long max_conns;                /* min(max_connections, what fits in fds) */
	long fd_limit;
	struct server_ip *ips;
	size_t npending;               /* sum of every server_ip.pending */
	struct server_ip *accepting;   /* counted at accept, not yet bound to its wsi */
	int accepting_fd;              /* its socket */
	int port;
	int draining;
	void (*on_drained)(void *);
	void *drained_arg;
	double started;
	unsigned char wbuf[LWS_PRE + SERVER_TLS_CHUNK];   /* TLS write gathering */
};

/* ---- transport callbacks for the hub ----------------------------------- */

/*
 * s got its first frame since its queue was last empty. Nothing is written
 * now: the connection goes on the list of those to flush once every event
 * of this loop iteration has been handled (server_on_prepare), so that all
 * the frames a client got in one iteration leave in one write.
 */
static void server_tp_wake(void *ctx, void *conn)
{
	struct server *srv = ctx;
	struct conn *c = conn;

	if (c->out_queued)
		return;
	c->out_queued = 1;
	DL_APPEND2(srv->out, c, out_prev, out_next);
}

static void conn_request_close(struct conn *c, int code, const char *reason, int flush, int grace)
{
	if (c->close_code)
		return;
	c->close_code = (uint16_t)code;
	c->close_flush = flush ? 1 : 0;
	snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason);
	lws_callback_on_writable(c->wsi);
	/* If the peer never lets us write the close frame, lws drops it. */
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, grace);
}

/*
 * The hub decided to close (slow consumer, eviction...). It calls this from
 * inside its own loops, so the session cannot be unregistered here; it is
 * released in the next prepare phase, right after the current event. The
 * socket lingers only for the close frame, held by lws, not the session.
 */
static void server_tp_close(void *ctx, void *conn, int code, const char *reason, int flush)
{
	struct server *srv = ctx;
	struct conn *c = conn;

	conn_request_close(c, code, reason, flush, SERVER_CLOSE_GRACE);
	c->close_fast = !flush;
	/* A flushing close is released by conn_write once the queue is out. */
	if (flush || c->rel_queued || !c->established)
		return;
	c->rel_queued = 1;
	c->rel_prev = NULL;
	c->rel_next = srv->releasing;
	if (c->rel_next)
		c->rel_next->rel_prev = c;
	srv->releasing = c;
}

static double server_tp_now(void *ctx)
{
	struct server *srv = ctx;

	return ev_now(srv->loop);
}

/* ---- per-connection timer ---------------------------------------------- */

/*
 * One libev timer per connection, re-armed for its next deadline (handshake,
 * next ping, heartbeat timeout). libev keeps timers in a heap, so the cost
 * is O(log n) per re-arm and nothing runs per tick for idle connections.
 * Incoming frames only store a timestamp; the timer checks it lazily.
 */
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;
	struct server *srv = c->srv;
	const struct config *cfg = srv->cfg;
	double now = ev_now(loop), next;
	int authed = hub_session_authenticated(c->sess);

	if (c->close_code)
		return;
	if (!authed && now - c->opened >= cfg->handshake_timeout) {
		srv->m->handshake_timeouts++;
		log_info(hub_session_id(c->sess), "no hello within %.3gs; closing", cfg->handshake_timeout);
		hub_session_close(srv->hub, c->sess, 1008, "handshake timeout", 0);
		return;
	}
	if (now - c->last_rx >= cfg->heartbeat_timeout) {
		srv->m->heartbeat_evictions++;
		log_info(hub_session_id(c->sess), "nothing received for %.3gs; evicting", now - c->last_rx);
		hub_session_close(srv->hub, c->sess, 1001, "heartbeat timeout", 0);
		return;
	}
	if (now - c->last_ping >= cfg->heartbeat_interval) {
		c->ping_due = 1;
		c->last_ping = now;
		lws_callback_on_writable(c->wsi);
	}
	next = fmin(c->last_ping + cfg->heartbeat_interval, c->last_rx + cfg->heartbeat_timeout);
	if (!authed)
		next = fmin(next, c->opened + cfg->handshake_timeout);
	next -= now;
	ev_timer_set(w, next > 0.001 ? next : 0.001, 0.);
	ev_timer_start(loop, w);
}

/*
 * A connection released with its queue discarded (slow consumer) and its
 * socket still open SERVER_CLOSE_GRACE_BLOCKED later: abort it. lws would
 * wait up to 5 s flushing a frame tail it holds, and the kernel keeps the
 * unread megabytes as long as the socket lives. An abortive close (RST,
 * SO_LINGER 0) frees them; shutdown() makes lws see the hang-up on its next
 * poll and close the wsi through its own path, which releases c.
 */
static void conn_linger_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	int fd = lws_get_socket_fd(c->wsi);

	(void)loop;
	(void)revents;
	if (fd < 0)
		return;
	log_debug(NULL, "aborting a discarded connection's socket");
	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	(void)shutdown(fd, SHUT_RDWR);
}

/* ---- connection lifecycle ---------------------------------------------- */

static struct server_ip *server_ip_get(struct server *srv, const char *ip)
{
	struct server_ip *e = NULL;

	HASH_FIND_STR(srv->ips, ip, e);
	return e;
}

/*
 * The peer address of socket fd as text, IPv4-mapped IPv6 shown as IPv4, so
 * that the per-address counts agree whichever way a peer came in. -1 when
 * the peer is already gone.
 */
static int server_peer_ip(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
	const void *a;
	int af = AF_INET;

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
		return -1;
	if (ss.ss_family == AF_INET) {
		a = &((const struct sockaddr_in *)&ss)->sin_addr;
	} else if (ss.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		a = &s6->sin6_addr.s6_addr[12];
	} else if (ss.ss_family == AF_INET6) {
		af = AF_INET6;
		a = &s6->sin6_addr;
	} else {
		snprintf(buf, len, "local");
		return 0;
	}
	return inet_ntop(af, a, buf, (socklen_t)len) ? 0 : -1;
}

/* The entry for ip, created at 0/0 if there is none; NULL out of memory. */
static struct server_ip *server_ip_ref(struct server *srv, const char *ip)
{
	struct server_ip *e = server_ip_get(srv, ip);

	if (e)
		return e;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	snprintf(e->ip, sizeof(e->ip), "%s", ip);
	HASH_ADD_STR(srv->ips, ip, e);
	return e;
}

/* Frees e once nothing counts on it any more. */
static void server_ip_unref(struct server *srv, struct server_ip *e)
{
	if (e->count == 0 && e->pending == 0) {
		HASH_DEL(srv->ips, e);
		free(e);
	}
}

static void conn_http_reset(struct conn *c)
{
	if (c && c->http_body) {
		msgbuf_unref(c->http_body);
		c->http_body = NULL;
	}
}

static int conn_open(struct server *srv, struct lws *wsi, struct conn *c)
{
	char ip[48];
	double now = ev_now(srv->loop);

	conn_http_reset(c);
	memset(c, 0, sizeof(*c));
	c->wsi = wsi;
	c->srv = srv;
	if (server_peer_ip(lws_get_socket_fd(wsi), ip, sizeof(ip)) < 0)
		return -1;   /* the peer left during the upgrade */
	c->ip = server_ip_ref(srv, ip);
	if (!c->ip)
		return -1;
	c->ip->count++;
	c->sess = hub_session_register(srv->hub, c);
	if (!c->sess) {
		log_error(NULL, "out of memory registering a session from %s", ip);
		c->ip->count--;
		server_ip_unref(srv, c->ip);
		return -1;
	}
	c->next = srv->conns;
	if (c->next)
		c->next->prev = c;
	srv->conns = c;
	srv->nconns++;
	srv->m->connections_total++;
	c->opened = c->last_rx = c->last_ping = now;
	c->established = 1;
	c->fd = lws_get_socket_fd(wsi);
	c->tls = lws_is_ssl(wsi) ? 1 : 0;
	if (!srv->cfg->tcp_nodelay) {
		/* lws turns Nagle off on every socket; server.tcp_nodelay = false
		 * turns it back on: bursts of small frames share packets. */
		int off = 0;
		if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &off, sizeof(off)))
			log_debug(hub_session_id(c->sess), "TCP_NODELAY off: %s", strerror(errno));
	}
	if (srv->cfg->socket_send_buffer > 0) {
		/* Bounds the kernel's memory for a slow client (autotuning may
		 * grow it to net.ipv4.tcp_wmem's maximum otherwise). */
		int sz = (int)srv->cfg->socket_send_buffer;
		if (setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)))
			log_debug(hub_session_id(c->sess), "SO_SNDBUF: %s", strerror(errno));
	}
	ev_timer_init(&c->timer, conn_timer_cb, 0., 0.);
	c->timer.data = c;
	ev_timer_set(&c->timer, fmin(srv->cfg->handshake_timeout, srv->cfg->heartbeat_interval), 0.);
	ev_timer_start(srv->loop, &c->timer);
	log_debug(hub_session_id(c->sess), "connected from %s", ip);
	return 0;
}

/* The one release path of a connection, whatever ended it: called when
 * chatd decides to close (so the session leaves at once, without waiting
 * for the peer's close handshake) and again from lws' CLOSED/WSI_DESTROY.
 * Idempotent. */
static void server_check_drained(struct server *srv)
{
	/* Drained once every session is gone and every close frame is out. */
	if (srv->draining && srv->nconns == 0 && srv->lingering == 0 && srv->on_drained) {
		void (*cb)(void *) = srv->on_drained;
		srv->on_drained = NULL;
		cb(srv->drained_arg);
	}
}

static void conn_release(struct server *srv, struct conn *c, int socket_gone)
{
	conn_http_reset(c);
	if (c->rel_queued) {
		if (c->rel_prev)
			c->rel_prev->rel_next = c->rel_next;
		else
			srv->releasing = c->rel_next;
		if (c->rel_next)
			c->rel_next->rel_prev = c->rel_prev;
		c->rel_queued = 0;
	}
	if (c->out_queued) {
		DL_DELETE2(srv->out, c, out_prev, out_next);
		c->out_queued = 0;
	}
	if (c->rx_more) {
		size_t i;
		for (i = 0; i < srv->rx_more_len; i++)
			if (srv->rx_more[i] == c)
				srv->rx_more[i] = NULL;
		c->rx_more = 0;
	}
	if (socket_gone && c->lingering) {
		ev_timer_stop(srv->loop, &c->timer);   /* conn_linger_cb's */
		c->lingering = 0;
		srv->lingering--;
		server_check_drained(srv);
	}
	if (!c->established)
		return;
	c->established = 0;
	if (!socket_gone) {
		c->lingering = 1;
		srv->lingering++;
	}
	ev_timer_stop(srv->loop, &c->timer);
	if (c->lingering && c->close_fast) {
		ev_timer_init(&c->timer, conn_linger_cb, SERVER_CLOSE_GRACE_BLOCKED, 0.);
		ev_timer_start(srv->loop, &c->timer);
	}
	free(c->rx);
	c->rx = NULL;
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nconns--;
	srv->released_since_trim++;
	c->ip->count--;
	server_ip_unref(srv, c->ip);
	c->ip = NULL;
	log_debug(hub_session_id(c->sess), "released");
	hub_session_unregister(srv->hub, c->sess);
	c->sess = NULL;
	server_check_drained(srv);
}

/*
 * Back-pressure on input: a client that pipelines commands faster than it
 * reads the replies would fill its own queue and be closed as a slow
 * consumer. Stop reading from it while its queue is over half full, and
 * resume below a quarter; kernel buffers then push back on the client.
 */
static void conn_rx_check(struct conn *c)
{
	const struct hub_limits *l = hub_limits(c->srv->hub);
	uint32_t n;
	size_t b;

	hub_session_backlog(c->sess, &n, &b);

	/* Pause at half full, resume at a quarter (at empty for tiny queues). */
	if (!c->rx_paused && (2 * n >= l->send_queue_messages || 2 * b >= l->send_queue_bytes)) {
		c->rx_paused = 1;
		lws_rx_flow_control(c->wsi, 0);
	} else if (c->rx_paused && 4 * n <= l->send_queue_messages && 4 * b <= l->send_queue_bytes) {
		c->rx_paused = 0;
		lws_rx_flow_control(c->wsi, 1);
	}
}

/* Close from an lws callback (never from inside hub code): the close frame
 * goes out, lws finishes the handshake, the session is released now. */
static int conn_close_now(struct conn *c, enum lws_close_status code, const char *reason)
{
	lws_close_reason(c->wsi, code, (unsigned char *)reason, strlen(reason));
	conn_release(c->srv, c, 0);
	return -1;
}

/*
 * After a wave of disconnects the allocator keeps the freed memory; give it
 * back to the kernel (glibc madvises free pages) so RSS follows the load.
 * At most every few seconds, and only after many releases.
 */
#define SERVER_TRIM_EVERY 5.0
#define SERVER_TRIM_AFTER 256

static void server_on_trim(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = w->data;

	if (srv->released_since_trim < SERVER_TRIM_AFTER)
		return;
	srv->released_since_trim = 0;
	malloc_trim(0);
}

/*
 * lws 4.1 on a foreign libev loop runs its own timeouts (a connection that
 * never sends its HTTP headers, a close handshake that never completes)
 * only when something wakes it; a silent socket alone does not. Wake it
 * every second so those timeouts hold.
 */
static void server_on_kick(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = w->data;

	lws_cancel_service(srv->ctx);
}

static void conn_flush(struct server *srv, struct conn *c);

static void server_on_token(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = w->data;

	(void)loop;
	(void)revents;
	srv->token_at = 0;
	hub_run_deadlines(srv->hub);
}

/* One timer for every token deadline: re-armed for the hub's earliest
 * (hellos, refreshes and closes of the iteration may have moved it). */
static void server_arm_tokens(struct server *srv)
{
	double at = hub_next_deadline(srv->hub);

	if (at == srv->token_at)
		return;
	ev_timer_stop(srv->loop, &srv->token_timer);
	srv->token_at = at;
	if (at <= 0)
		return;
	ev_timer_set(&srv->token_timer, at > ev_now(srv->loop) ? at - ev_now(srv->loop) : 0., 0.);
	ev_timer_start(srv->loop, &srv->token_timer);
}

/*
 * The last thing of every loop iteration, just before the loop waits for
 * I/O again (lowest priority, so after the storage engine's group commit):
 * release the sessions whose close was decided inside hub code, then write
 * what every woken connection got during the iteration. A release can
 * queue presence events for others and a failed write can decide a close,
 * so both lists are worked until empty.
 */
static void server_on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct server *srv = w->data;
	struct conn *c;

	if (srv->out)
		srv->write_now = ev_time();
	do {
		while (srv->releasing)
			conn_release(srv, srv->releasing, 0);
		while ((c = srv->out)) {
			DL_DELETE2(srv->out, c, out_prev, out_next);
			c->out_queued = 0;
			conn_flush(srv, c);
		}
	} while (srv->releasing);
	server_arm_tokens(srv);
}

/*
 * The read side. lws reads at most SERVER_RX_CHUNK bytes per service call
 * into its one receive buffer for the loop (the per-connection buffer stays
 * that small, for idle memory), and a socket is serviced once per loop
 * iteration: a burst of 64 KiB would take 256 iterations, each with its own
 * flush. So a connection that received close to a full chunk in this
 * iteration is serviced again at the end of it (server_on_check), while the
 * kernel holds more for it, up to SERVER_REREAD_ROUNDS chunks.
 *
 * Only plain TCP connections are read again. lws' own io callback starts
 * its idle watcher after servicing a socket, and that is what later
 * services data OpenSSL has already decrypted but lws has not delivered
 * (its "TLS pending" list); a direct lws_service_fd() from here does not,
 * so a ping could sit in OpenSSL's buffer unanswered, and under a heavy
 * upload lws 4.1 spun in that loop without returning. The kernel's FIONREAD
 * does not see OpenSSL's buffer anyway.
 *
 * A reader is not read again once it has sent a quarter of its queue bound
 * in messages this iteration: replies that wait for the storage commit are
 * not in its queue yet, so conn_rx_check cannot see them, and every message
 * may put a frame in each room member's queue before the next flush.
 */
static void conn_rx_account(struct server *srv, struct conn *c, size_t len)
{
	struct conn **a;

	if (c->rx_iter != srv->iter) {
		c->rx_iter = srv->iter;
		c->rx_round = 0;
		c->rx_msgs = 0;
	}
	c->rx_round += (uint32_t)len;
	if (c->rx_more || c->rx_round < SERVER_RX_CHUNK / 2)
		return;
	if (srv->rx_more_len == srv->rx_more_cap) {
		size_t cap = srv->rx_more_cap ? 2 * srv->rx_more_cap : 64;
		a = realloc(srv->rx_more, cap * sizeof(*a));
		if (!a)
			return;   /* read in the next iteration instead */
		srv->rx_more = a;
		srv->rx_more_cap = cap;
	}
	srv->rx_more[srv->rx_more_len++] = c;
	c->rx_more = 1;
}

/* After every event of the iteration (lowest priority): service again the
 * sockets that may hold more input; their commands run before the prepare
 * phase, so the storage group commit and the flush include them. */
static void server_on_check(struct ev_loop *loop, ev_check *w, int revents)
{
	struct server *srv = w->data;
	const struct hub_limits *l = hub_limits(srv->hub);
	struct lws_pollfd pfd;
	size_t i, n;
	int round, avail;

	for (round = 0; round < SERVER_REREAD_ROUNDS && srv->rx_more_len; round++) {
		n = srv->rx_more_len;
		for (i = 0; i < n; i++) {
			struct conn *c = srv->rx_more[i];
			if (!c)
				continue;
			srv->rx_more[i] = NULL;
			c->rx_more = 0;
			c->rx_round = 0;
			if (!c->established || c->close_code || c->rx_paused || c->tls ||
			    4 * c->rx_msgs >= l->send_queue_messages ||
			    ioctl(c->fd, FIONREAD, &avail) || avail <= 0)
				continue;
			pfd.fd = c->fd;
			pfd.events = pfd.revents = LWS_POLLIN;
			lws_service_fd(srv->ctx, &pfd);   /* may release c */
		}
		/* What the round added goes to the front for the next one. */
		memmove(srv->rx_more, srv->rx_more + n, (srv->rx_more_len - n) * sizeof(*srv->rx_more));
		srv->rx_more_len -= n;
	}
	/* Past the bound: the rest waits for the next iteration. */
	for (i = 0; i < srv->rx_more_len; i++)
		if (srv->rx_more[i])
			srv->rx_more[i]->rx_more = 0;
	srv->rx_more_len = 0;
	srv->iter++;
}

static int conn_receive(struct server *srv, struct conn *c, const char *in, size_t len)
{
	size_t max = (size_t)srv->cfg->max_frame_bytes;
	size_t remaining;

	c->last_rx = ev_now(srv->loop);
	if (!c->established || c->close_code)
		return 0;
	conn_rx_account(srv, c, len);
	if (lws_frame_is_binary(c->wsi))
		return conn_close_now(c, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE,
				      "binary frames are not supported");
	remaining = lws_remaining_packet_payload(c->wsi);
	if (c->rx_len + len + remaining > max)
		return conn_close_now(c, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "message too big");
	if (c->rx_len == 0 && lws_is_final_fragment(c->wsi)) {
		/* The common case: a whole message in one piece, no copy. */
		if (!proto_utf8_valid((const unsigned char *)in, len))
			return conn_close_now(c, LWS_CLOSE_STATUS_INVALID_PAYLOAD, "invalid UTF-8");
		c->rx_msgs++;
		hub_session_input(srv->hub, c->sess, in, len);
		conn_rx_check(c);
		return 0;
	}
	if (c->rx_len + len > c->rx_cap) {
		size_t cap = c->rx_cap ? c->rx_cap : 1024;
		char *p;
		while (cap < c->rx_len + len)
			cap *= 2;
		if (cap > max)
			cap = max;
		p = realloc(c->rx, cap);
		if (!p)
			return conn_close_now(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
		c->rx = p;
		c->rx_cap = cap;
	}
	memcpy(c->rx + c->rx_len, in, len);
	c->rx_len += len;
	if (!lws_is_final_fragment(c->wsi))
		return 0;
	/* Checked on the whole message: a fragment may end mid-character. */
	if (!proto_utf8_valid((const unsigned char *)c->rx, c->rx_len))
		return conn_close_now(c, LWS_CLOSE_STATUS_INVALID_PAYLOAD, "invalid UTF-8");
	c->rx_msgs++;
	hub_session_input(srv->hub, c->sess, c->rx, c->rx_len);
	c->rx_len = 0;
	conn_rx_check(c);
	if (c->rx_cap > SERVER_RX_KEEP) {
		free(c->rx);
		c->rx = NULL;
		c->rx_cap = 0;
	}
	return 0;
}

/* ---- the write path ------------------------------------------------------
 *
 * chatd writes its own frames. Each queued frame is a complete server frame
 * (header in the msgbuf's headroom, made once per message), so a plain TCP
 * connection gets all of them in one sendmsg() straight from the msgbufs,
 * without a copy, in the prepare phase (server_on_prepare). lws' writable
 * callback is asked for only when the kernel takes less than everything.
 *
 * One byte stream: lws still writes on the same socket by itself (pings we
 * ask for, the pongs and close frames it answers, the rest of its own
 * partial sends), and none of that may land inside a frame. So:
 *   1. chatd writes directly only whole frames, and only while lws holds
 *      nothing unsent (lws_partial_buffered() is 0);
 *   2. when the kernel takes part of a frame, the rest of that frame is
 *      handed to lws at once (lws_write, raw), before anything else can
 *      run: lws appends whatever it writes later after it, and calls the
 *      writable callback once it is all out, where chatd resumes.
 * So every byte lws writes starts at a frame boundary. TLS connections
 * write through lws (OpenSSL), gathered into record-sized writes.
 */

/* The socket is full: resume from the writable callback. */
static int conn_block(struct conn *c)
{
	c->out_blocked = 1;
	lws_callback_on_writable(c->wsi);
	return 1;
}

/* Plain TCP: returns 0 when the queue is empty, 1 when the socket is full,
 * -1 on a socket error. */
static int conn_send_plain(struct server *srv, struct conn *c)
{
	struct iovec iov[SERVER_IOV];
	struct msghdr mh;
	ssize_t w;
	int n, k;

	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	for (;;) {
		n = hub_session_frames(srv->hub, c->sess, iov, SERVER_IOV, SIZE_MAX);
		if (n == 0)
			return 0;
		mh.msg_iovlen = (size_t)n;
		w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return conn_block(c);
			log_debug(hub_session_id(c->sess), "write failed: %s", strerror(errno));
			return -1;
		}
		srv->m->socket_writes++;
		for (k = 0; k < n && (size_t)w >= iov[k].iov_len; k++)
			w -= (ssize_t)iov[k].iov_len;
		if (k < n)
			srv->m->partial_writes++;
		if (k < n && w > 0) {
			/* Part of frame k went out: lws takes the rest (rule 2). */
			if (lws_write(c->wsi, (unsigned char *)iov[k].iov_base + w,
				      iov[k].iov_len - (size_t)w, LWS_WRITE_RAW) < 0)
				return -1;
			hub_session_consumed(srv->hub, c->sess, k + 1, srv->write_now);
			/* lws tries to send it at once: if the kernel took it all,
			 * lws holds nothing and will not call back, so go on. */
			if (!lws_partial_buffered(c->wsi))
				continue;
			c->out_blocked = 1;   /* lws calls back once it is out */
			return 1;
		}
		hub_session_consumed(srv->hub, c->sess, k, srv->write_now);
		if (k < n)
			return conn_block(c);
	}
}

/* TLS: queued frames gathered into record-sized lws writes (OpenSSL needs
 * one buffer); lws keeps what the socket does not take. */
static int conn_send_tls(struct server *srv, struct conn *c)
{
	unsigned char *out = srv->wbuf + LWS_PRE;
	struct iovec iov[SERVER_IOV];
	size_t used;
	int n, i;

	while ((n = hub_session_frames(srv->hub, c->sess, iov, SERVER_IOV, SERVER_TLS_CHUNK))) {
		if (n == 1 && iov[0].iov_len > SERVER_TLS_CHUNK) {
			/* Too big to gather: straight from the msgbuf. */
			if (lws_write(c->wsi, iov[0].iov_base, iov[0].iov_len, LWS_WRITE_RAW) < 0)
				return -1;
		} else {
			for (used = 0, i = 0; i < n; i++) {
				memcpy(out + used, iov[i].iov_base, iov[i].iov_len);
				used += iov[i].iov_len;
			}
			if (lws_write(c->wsi, out, used, LWS_WRITE_RAW) < 0)
				return -1;
		}
		hub_session_consumed(srv->hub, c->sess, n, srv->write_now);
		srv->m->socket_writes++;
		if (lws_partial_buffered(c->wsi)) {
			srv->m->partial_writes++;
			c->out_blocked = 1;   /* lws calls back once it is out */
			return 1;
		}
	}
	return 0;
}

/* Write what c has queued; 0 queue empty, 1 to be resumed from the
 * writable callback, -1 socket error. */
static int conn_send(struct server *srv, struct conn *c)
{
	int r;

	if (lws_partial_buffered(c->wsi)) {
		/* lws is still writing something of its own (rule 1); it has
		 * asked for POLLOUT and calls back when that is out. */
		c->out_blocked = 1;
		return 1;
	}
	r = c->tls ? conn_send_tls(srv, c) : conn_send_plain(srv, c);
	if (c->rx_paused)
		conn_rx_check(c);
	return r;
}

/* From the prepare phase: flush c unless it waits for the writable
 * callback or is closing. A socket error closes the session; lws sees the
 * dead socket on its own. */
static void conn_flush(struct server *srv, struct conn *c)
{
	if (!c->established || c->out_blocked || (c->close_code && !c->close_flush))
		return;
	if (conn_send(srv, c) < 0)
		hub_session_close(srv->hub, c->sess, 1001, "write failed", 0);
}

/* SERVER_WRITEABLE: the socket took everything lws held. A pending ping
 * first, then the queued frames, then a requested close once the queue is
 * out (or at once when the close does not flush). */
static int conn_write(struct server *srv, struct conn *c)
{
	unsigned char ping[LWS_PRE + 4] = { [LWS_PRE] = 'c', 'h', 'a', 't' };
	int r;

	if (!c->established) {
		/* Released already: all that is left is the close frame. */
		if (c->close_code)
			lws_close_reason(c->wsi, c->close_code, (unsigned char *)c->close_reason,
					 strlen(c->close_reason));
		return -1;
	}
	c->out_blocked = 0;
	if (c->ping_due) {
		c->ping_due = 0;
		/* A non-empty payload: lws 4.1 does not report empty pongs. */
		if (lws_write(c->wsi, ping + LWS_PRE, 4, LWS_WRITE_PING) < 0)
			return -1;
	}
	if (c->close_code && !c->close_flush)
		return conn_close_now(c, c->close_code, c->close_reason);
	srv->write_now = ev_time();
	r = conn_send(srv, c);
	if (r < 0)
		return -1;
	if (r == 0 && c->close_code)
		return conn_close_now(c, c->close_code, c->close_reason);
	return 0;
}

/* ---- admission ---------------------------------------------------------- */

static int server_refuse(struct server *srv, struct lws *wsi, unsigned status,
			 enum metrics_refusal why, const char *what)
{
	char ip[48];

	srv->m->refused[why]++;
	lws_get_peer_simple(wsi, ip, sizeof(ip));
	log_info(NULL, "refused WebSocket upgrade from %s: %s", ip, what);
	if (lws_return_http_status(wsi, status, what))
		return -1;
	return 1;
}

static int server_origin_allowed(const struct config *cfg, struct lws *wsi)
{
	char origin[256];
	size_t i;

	if (!cfg->allowed_origins_count)
		return 1;
	if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) >= (int)sizeof(origin) ||
	    lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) <= 0)
		return 0;
	for (i = 0; i < cfg->allowed_origins_count; i++)
		if (strcmp(origin, cfg->allowed_origins[i]) == 0)
			return 1;
	return 0;
}

/* HTTP_CONFIRM_UPGRADE: >0 refused with a response, <0 hang up, 0 go on. */
static int server_admit(struct server *srv, struct lws *wsi)
{
	const struct config *cfg = srv->cfg;
	struct server_ip *e;
	char uri[64], ip[48];

	if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 || strcmp(uri, "/ws") != 0) {
		if (lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, "WebSocket endpoint is /ws"))
			return -1;
		return 1;
	}
	if (srv->draining)
		return server_refuse(srv, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE,
				     METRICS_REFUSED_SHUTTING_DOWN, "server is shutting down");
	if (!server_origin_allowed(cfg, wsi))
		return server_refuse(srv, wsi, HTTP_STATUS_FORBIDDEN, METRICS_REFUSED_ORIGIN,
				     "origin not allowed");
	if ((long)srv->nconns >= srv->max_conns)
		return server_refuse(srv, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE,
				     METRICS_REFUSED_MAX_CONNECTIONS, "too many connections");
	if (cfg->max_connections_per_ip > 0 &&
	    server_peer_ip(lws_get_socket_fd(wsi), ip, sizeof(ip)) == 0) {
		e = server_ip_get(srv, ip);
		if (e && (long)e->count >= cfg->max_connections_per_ip)
			return server_refuse(srv, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE,
					     METRICS_REFUSED_MAX_PER_IP, "too many connections from this address");
	}
	return 0;
}

/* ---- connections that are not a WebSocket yet --------------------------- */

/*
 * Slowloris: a peer holds connections in the TLS or HTTP header phase by
 * trickling bytes, and each holds one of lws' header buffers, which are
 * shared by everyone. Such connections are counted per address from
 * accept(), before lws allocates anything for them, and refused beyond
 * server.max_pending_per_ip. The count is bound to the new wsi (as its
 * opaque user data) in SERVER_NEW_CLIENT_INSTANTIATED, which lws issues for
 * that very socket right after FILTER_NETWORK_CONNECTION (WSI_CREATE comes
 * too early: lws clears the opaque pointer after it), and released once, by
 * server_pending_done(): when the connection becomes a WebSocket
 * (ESTABLISHED) or when lws destroys the wsi, whichever comes first.
 */
static void server_pending_release(struct server *srv, struct server_ip *e)
{
	e->pending--;
	srv->npending--;
	server_ip_unref(srv, e);
}

/* lws gave up on the last accepted socket before it had a wsi for it (out
 * of memory, no room in its fd table): the socket is closed and no callback
 * will release its count. */
static void server_pending_drop_stray(struct server *srv)
{
	if (srv->accepting) {
		server_pending_release(srv, srv->accepting);
		srv->accepting = NULL;
	}
}

/* FILTER_NETWORK_CONNECTION for a socket just accepted: 0 keep it, 1 lws
 * closes it. */
static int server_accept(struct server *srv, int fd)
{
	static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
				   "Content-Length: 0\r\nConnection: close\r\n\r\n";
	long cap = srv->cfg->max_pending_per_ip;
	double now = ev_now(srv->loop);
	struct server_ip *e;
	char ip[48];

	server_pending_drop_stray(srv);
	if (server_peer_ip(fd, ip, sizeof(ip)) < 0 || !(e = server_ip_ref(srv, ip)))
		return 1;
	if (cap > 0 && e->pending >= (uint32_t)cap) {
		srv->m->refused[METRICS_REFUSED_MAX_PENDING_PER_IP]++;
		if (now - e->refusal_logged >= SERVER_REFUSAL_LOG_EVERY) {
			e->refusal_logged = now;
			log_info(NULL, "refusing connections from %s: %ld already in their handshake "
				 "(server.max_pending_per_ip)", ip, cap);
		}
		/* A plain HTTP client learns why; best effort, never blocks.
		 * A TLS client could not read it: it just sees the close. */
		if (!srv->cfg->tls_cert[0])
			(void)!send(fd, busy, sizeof(busy) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
		server_ip_unref(srv, e);
		return 1;
	}
	e->pending++;
	srv->npending++;
	srv->accepting = e;
	srv->accepting_fd = fd;
	return 0;
}

/* SERVER_NEW_CLIENT_INSTANTIATED: the wsi of the socket server_accept()
 * just counted. */
static void server_pending_bind(struct server *srv, struct lws *wsi)
{
	if (!srv->accepting || lws_get_socket_fd(wsi) != srv->accepting_fd ||
	    lws_get_opaque_user_data(wsi))
		return;   /* not that socket's wsi (an h2 stream, say) */
	lws_set_opaque_user_data(wsi, srv->accepting);
	srv->accepting = NULL;
}

/* The connection upgraded or is gone: its pending count is released. */
static void server_pending_done(struct server *srv, struct lws *wsi)
{
	struct server_ip *e = lws_get_opaque_user_data(wsi);

	if (!e)
		return;
	lws_set_opaque_user_data(wsi, NULL);
	server_pending_release(srv, e);
}

/* ---- HTTP --------------------------------------------------------------- */

static struct msgbuf *server_healthz(struct server *srv)
{
	char body[256];
	int n = snprintf(body, sizeof(body),
			 "{\"status\":\"%s\",\"node\":\"%s\",\"connections\":%zu,\"sessions\":%llu%s}\n",
			 srv->draining ? "shutting_down"
			 : srv->m->cluster_enabled && !srv->m->redis_up ? "degraded" : "ok",
			 srv->cfg->node_id, srv->nconns,
			 (unsigned long long)hub_named_session_count(srv->hub),
			 !srv->m->cluster_enabled ? "" : srv->m->redis_up ? ",\"redis\":\"up\"" : ",\"redis\":\"down\"");

	return msgbuf_from(body, (size_t)n);
}

static struct msgbuf *server_metrics(struct server *srv)
{
	struct metrics_gauges g = {
		.connections = srv->nconns,
		.pending = srv->npending,
		.sessions = hub_named_session_count(srv->hub),
		.rooms = hub_room_count(srv->hub),
		.queue_bytes = hub_queue_bytes(srv->hub),
		.queued_messages = hub_queue_messages(srv->hub),
		.start_time = srv->started,
		.connections_limit = srv->max_conns > 0 ? (uint64_t)srv->max_conns : 0,
		.queue_bytes_limit = (uint64_t)srv->cfg->total_queue_bytes,
		.open_fds = metrics_open_fds(),
		.max_fds = srv->fd_limit > 0 ? srv->fd_limit : -1,
	};

	return metrics_render(srv->m, &g, srv->cfg->node_id);
}

/* Headers for the web client's files: they run in the browser, so they get
 * a strict Content-Security-Policy (no inline script, no other origins). */
static int server_add_page_headers(struct lws *wsi, const char *type, unsigned char **p,
				   unsigned char *end)
{
	static const char csp[] = "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
				  "style-src 'self'; script-src 'self'; base-uri 'none'; "
				  "form-action 'none'; frame-ancestors 'none'";

	if (strncmp(type, "text/html", 9) != 0)
		return 0;
	return lws_add_http_header_by_name(wsi, (const unsigned char *)"content-security-policy:",
					   (const unsigned char *)csp, (int)strlen(csp), p, end) ||
	       lws_add_http_header_by_name(wsi, (const unsigned char *)"referrer-policy:",
					   (const unsigned char *)"no-referrer", 11, p, end);
}

/* api.allow, parsed once per (re)load; the config loader has checked every
 * entry, so none fails here. */
static void server_load_allow(struct server *srv, const struct config *cfg)
{
	size_t i;

	srv->nallow = 0;
	for (i = 0; i < cfg->api_allow_count && i < CONFIG_API_ALLOW_MAX; i++)
		if (cidr_parse(cfg->api_allow[i], &srv->allow[srv->nallow]) == 0)
			srv->nallow++;
}

/* May this peer read /metrics and /healthz? Any peer when api.allow is []. */
static int server_api_allowed(struct server *srv, struct lws *wsi)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	size_t i;

	if (!srv->nallow)
		return 1;
	if (getpeername(lws_get_socket_fd(wsi), (struct sockaddr *)&ss, &sl) < 0)
		return 0;
	for (i = 0; i < srv->nallow; i++)
		if (cidr_match(&srv->allow[i], (struct sockaddr *)&ss))
			return 1;
	return 0;
}

static int server_http_status(struct lws *wsi, unsigned status, const char *what)
{
	if (lws_return_http_status(wsi, status, what))
		return -1;
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/*
 * One HTTP GET. /metrics and /healthz are served on the [api] listener when
 * there is one (on_api) and then nowhere else: the chat port answers 404
 * for them as for any unknown path. Wherever they are served, api.allow
 * decides who may read them. The API listener serves nothing else.
 */
static int server_http(struct server *srv, struct lws *wsi, struct conn *c, const char *uri, int on_api)
{
	unsigned char hdr[LWS_PRE + 1536], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
	unsigned status = HTTP_STATUS_OK;
	const struct webasset *asset;
	const char *type;
	struct msgbuf *body;
	int api_path = strcmp(uri, "/healthz") == 0 || strcmp(uri, "/metrics") == 0;

	if (!c)
		return -1;
	if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0)
		return server_http_status(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, "only GET is served");
	if (api_path ? !on_api && srv->api_vh : on_api)
		return server_http_status(wsi, HTTP_STATUS_NOT_FOUND, "not found");
	if (api_path && !server_api_allowed(srv, wsi))
		return server_http_status(wsi, HTTP_STATUS_FORBIDDEN, "forbidden");
	if (strcmp(uri, "/healthz") == 0) {
		body = server_healthz(srv);
		type = "application/json";
		if (srv->draining || (srv->m->cluster_enabled && !srv->m->redis_up))
			status = HTTP_STATUS_SERVICE_UNAVAILABLE;
	} else if (strcmp(uri, "/metrics") == 0) {
		body = server_metrics(srv);
		type = "text/plain; version=0.0.4; charset=utf-8";
	} else if ((asset = webasset_find(uri))) {
		body = msgbuf_from(asset->data, asset->len);
		type = asset->type;
	} else {
		return server_http_status(wsi, HTTP_STATUS_NOT_FOUND, "not found");
	}
	if (!body)
		return -1;
	if (lws_add_http_common_headers(wsi, status, type, body->len, &p, end) ||
	    lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
					(const unsigned char *)"no-store", 8, &p, end) ||
	    lws_add_http_header_by_name(wsi, (const unsigned char *)"x-content-type-options:",
					(const unsigned char *)"nosniff", 7, &p, end) ||
	    server_add_page_headers(wsi, type, &p, end) ||
	    lws_finalize_write_http_header(wsi, start, &p, end)) {
		msgbuf_unref(body);
		return -1;
	}
	conn_http_reset(c);
	c->http_body = body;
	lws_callback_on_writable(wsi);
	return 0;
}

static int server_http_write(struct lws *wsi, struct conn *c)
{
	int n;

	if (!c || !c->http_body)
		return 0;
	n = lws_write(wsi, c->http_body->data, c->http_body->len, LWS_WRITE_HTTP_FINAL);
	conn_http_reset(c);
	if (n < 0)
		return -1;
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* ---- the lws callback --------------------------------------------------- */

/* The vhost's SSL_CTX, once lws has set it up: chatd's cipher lists and
 * client-certificate purpose (lws 4.1 ignores a cipher list OpenSSL
 * rejects; tlsctx_setup does not). */
static int server_tls_setup(struct server *srv, void *ssl_ctx)
{
	char err[512];

	if (tlsctx_setup(ssl_ctx, srv->cfg, err, sizeof(err)) == 0)
		return 0;
	log_error(NULL, "%s", err);
	return -1;
}

/* With tls.ca set, lws hands OpenSSL's verdict on each certificate of the
 * client's chain to the protocol callback and believes the answer: without
 * this a failed verification would be accepted. */
static int server_tls_verify(struct lws *wsi, void *store_ctx, int preverify_ok)
{
	char peer[64] = "";

	if (!preverify_ok)
		lws_get_peer_simple(wsi, peer, sizeof(peer));
	return tlsctx_verify_client(store_ctx, preverify_ok, peer);
}

static void server_tls_event(struct lws *wsi, const struct lws_ssl_info *si)
{
	char peer[64] = "";

	lws_get_peer_simple(wsi, peer, sizeof(peer));
	tlsctx_log_event(si->where, si->ret, peer);
}

static int server_callback(struct lws *wsi, enum lws_callback_reasons reason,
			   void *user, void *in, size_t len)
{
	struct server *srv = lws_context_user(lws_get_context(wsi));
	struct conn *c = user;

	switch (reason) {
	case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
		return server_tls_setup(srv, user);        /* user: the SSL_CTX */
	case LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION:
		return server_tls_verify(wsi, user, (int)len);  /* user: X509_STORE_CTX */
	case LWS_CALLBACK_SSL_INFO:
		server_tls_event(wsi, in);
		return 0;
	case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
		/* user is lws' accept record here, not a struct conn. */
		return server_accept(srv, (int)(intptr_t)in);
	case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
		server_pending_bind(srv, wsi);
		break;
	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
		return server_admit(srv, wsi);
	case LWS_CALLBACK_HTTP:
		return server_http(srv, wsi, c, in, 0);
	case LWS_CALLBACK_HTTP_WRITEABLE:
		return server_http_write(wsi, c);
	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
		conn_http_reset(c);
		break;
	case LWS_CALLBACK_ESTABLISHED:
		server_pending_done(srv, wsi);
		return conn_open(srv, wsi, c);
	case LWS_CALLBACK_RECEIVE:
		return c ? conn_receive(srv, c, in, len) : -1;
	case LWS_CALLBACK_RECEIVE_PONG:
		if (c)
			c->last_rx = ev_now(srv->loop);
		break;
	case LWS_CALLBACK_SERVER_WRITEABLE:
		return c ? conn_write(srv, c) : -1;
	case LWS_CALLBACK_CLOSED:
		if (c)
			conn_release(srv, c, 1);
		break;
	case LWS_CALLBACK_WSI_DESTROY:
		server_pending_done(srv, wsi);
		if (c)
			conn_release(srv, c, 1);
		break;
	default:
		break;
	}
	return 0;
}

/* The [api] listener: plain HTTP, /metrics, /healthz and the server API
 * (/api/..., api.c) when api.keys_file is set. Its
 * connections count against max_pending_per_ip like those of the chat port
 * (they share the header pool). */
static int server_api_callback(struct lws *wsi, enum lws_callback_reasons reason,
			       void *user, void *in, size_t len)
{
	struct server *srv = lws_context_user(lws_get_context(wsi));
	struct conn *c = user;   /* only its http_body is used here */

	switch (reason) {
	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
		if (lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, "no WebSocket here"))
			return -1;
		return 1;
	case LWS_CALLBACK_HTTP:
		if (srv->api && c && api_path(in))
			return api_http(srv->api, wsi, &c->api, in);
		return server_http(srv, wsi, c, in, 1);
	case LWS_CALLBACK_HTTP_BODY:
		return srv->api && c ? api_body(srv->api, wsi, &c->api, in, len) : 0;
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		return srv->api && c ? api_body_done(srv->api, wsi, &c->api) : 0;
	case LWS_CALLBACK_HTTP_WRITEABLE: {
		int rc = srv->api && c ? api_writeable(srv->api, wsi, &c->api) : 1;
		if (rc != 1)
			return rc;
		return server_callback(wsi, reason, user, in, len);
	}
	case LWS_CALLBACK_WSI_DESTROY:
		server_pending_done(srv, wsi);
		conn_http_reset(c);
		if (srv->api && c)
			api_release(srv->api, &c->api);
		return 0;
	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
		if (srv->api && c)
			api_release(srv->api, &c->api);
		return server_callback(wsi, reason, user, in, len);
	case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
	case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
		/* Accept accounting and HTTP responses: as on the chat port. */
		return server_callback(wsi, reason, user, in, len);
	default:
		return 0;
	}
}

static const struct lws_protocols server_api_protocols[] = {
	{ "chatd-api", server_api_callback, sizeof(struct conn), 0, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 }
};

static const struct lws_protocols server_protocols[] = {
	/* rx_buffer_size: lws keeps a receive buffer of this size per
	 * connection (idle memory) and reads at most this much per service
	 * call; larger frames arrive in pieces and are reassembled, and
	 * server_on_check reads a busy socket again within the iteration.
	 * tx_packet_size: lws' own sends, see SERVER_TX_PACKET. */
	{ PROTO_SUBPROTOCOL, server_callback, sizeof(struct conn), SERVER_RX_CHUNK, 0, NULL,
	  SERVER_TX_PACKET },
	{ NULL, NULL, 0, 0, 0, NULL, 0 }
};

/* ---- lifecycle ---------------------------------------------------------- */

static void server_apply_limits(struct server *srv)
{
	long fit = srv->fd_limit - SERVER_FD_RESERVE;

	srv->max_conns = srv->cfg->max_connections;
	if (srv->fd_limit > 0 && fit < srv->max_conns) {
		log_warn(NULL, "server.max_connections = %ld does not fit in the open-files limit (%ld): "
			 "at most %ld connections will be accepted; raise LimitNOFILE / ulimit -n or "
			 "lower max_connections", srv->cfg->max_connections, srv->fd_limit,
			 fit > 0 ? fit : 0);
		srv->max_conns = fit > 0 ? fit : 0;
	}
}

/* The header phase in whole seconds (lws' unit): header_timeout, and never
 * longer than handshake_timeout, which bounds the whole way to hello. */
static unsigned server_header_secs(const struct config *cfg)
{
	return (unsigned)ceil(fmin(cfg->header_timeout, cfg->handshake_timeout));
}

/* The [api] listener: a second vhost on the same context and loop. */
static int server_api_listen(struct server *srv, const struct config *cfg, char *err, size_t errlen)
{
	struct lws_context_creation_info info;

	memset(&info, 0, sizeof(info));
	info.port = cfg->api_port;
	info.iface = cfg->api_listen;
	info.protocols = server_api_protocols;
	info.vhost_name = "api";
	info.timeout_secs = server_header_secs(cfg);
	info.timeout_secs_ah_idle = server_header_secs(cfg);
	if (!strchr(cfg->api_listen, ':'))
		info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
	srv->api_vh = lws_create_vhost(srv->ctx, &info);
	if (!srv->api_vh) {
		snprintf(err, errlen, "cannot listen on %s port %d for [api] (address in use or not available?)",
			 cfg->api_listen, cfg->api_port);
		return -1;
	}
	srv->api_port = lws_get_vhost_listen_port(srv->api_vh);
	if (cfg->api_keys_file[0] && !(srv->api = api_new(srv, srv->hub, cfg, srv->m))) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

struct server *server_new(struct ev_loop *loop, const struct config *cfg,
			  struct metrics *metrics, long fd_limit, char *err, size_t errlen)
{
	struct lws_context_creation_info info;
	struct hub_transport tp;
	struct server *srv = calloc(1, sizeof(*srv));
	int lws_levels = LLL_ERR | LLL_WARN;

	if (!srv) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	srv->loop = loop;
	srv->cfg = cfg;
	srv->m = metrics;
	srv->fd_limit = fd_limit;
	srv->started = ev_time();
	server_apply_limits(srv);
	tp.wake = server_tp_wake;
	tp.close = server_tp_close;
	tp.now = server_tp_now;
	tp.ctx = srv;
	srv->hub = hub_new(cfg, &tp, metrics);
	if (!srv->hub) {
		snprintf(err, errlen, "out of memory");
		free(srv);
		return NULL;
	}

	/* lws' notice level is chatty (a line per event at 4.1): only on
	 * request, for debugging lws itself. */
	if (getenv("CHATD_LWS_DEBUG"))
		lws_levels |= LLL_NOTICE | LLL_INFO;
	lws_set_log_level(lws_levels, log_lws_emit);

	memset(&info, 0, sizeof(info));
	srv->foreign_loops[0] = loop;
	/* UTF-8 is checked by chatd itself (proto_utf8_valid), so that a 1007
	 * close releases the session at once like every other close. */
	info.options = LWS_SERVER_OPTION_LIBEV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
	info.foreign_loops = srv->foreign_loops;
	info.user = srv;
	/* The header pool is sized to the connection limit, so that it is
	 * never what runs out first: the per-address cap on connections still
	 * in their handshake (server_accept) and header_timeout bound what a
	 * peer can hold. lws allocates a header buffer (~4.5 KiB) per
	 * connection in its header phase, not the whole pool. */
	info.max_http_header_pool = (unsigned short)fmin(fmax((double)srv->max_conns,
							      SERVER_HEADER_POOL_MIN), 65535);
	/* lws' own deadlines for the phase before the upgrade: the TLS
	 * handshake and the wait for a header buffer (timeout_secs), the
	 * request head once a buffer is held (timeout_secs_ah_idle; bytes
	 * trickling in do not extend it). */
	info.timeout_secs = server_header_secs(cfg);
	if (cfg->tls_cert[0])
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	info.timeout_secs_ah_idle = server_header_secs(cfg);
	srv->ctx = lws_create_context(&info);
	if (!srv->ctx) {
		snprintf(err, errlen, "cannot create the libwebsockets context (libev support missing?)");
		hub_free(srv->hub);
		free(srv);
		return NULL;
	}

	info.port = cfg->port;   /* 0: the kernel picks one; see server_port() */
	info.iface = cfg->listen;
	info.protocols = server_protocols;
	info.vhost_name = "chatd";
	info.timeout_secs = server_header_secs(cfg);
	if (!strchr(cfg->listen, ':'))
		info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
	if (cfg->tls_cert[0]) {
		/* wss:// and https:// on the same port. */
		info.ssl_cert_filepath = cfg->tls_cert;
		info.ssl_private_key_filepath = cfg->tls_key;
		info.ssl_info_event_mask = tlsctx_event_mask();
		if (cfg->tls_ca[0]) {
			info.ssl_ca_filepath = cfg->tls_ca;
			info.options |= LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT;
		}
	}
	srv->vh = lws_create_vhost(srv->ctx, &info);
	if (!srv->vh) {
		snprintf(err, errlen, "cannot listen on %s port %d (address in use or not available?%s)",
			 cfg->listen, cfg->port,
			 cfg->tls_cert[0] ? " or the TLS certificate/key is invalid" : "");
		lws_context_destroy(srv->ctx);
		hub_free(srv->hub);
		free(srv);
		return NULL;
	}
	srv->port = lws_get_vhost_listen_port(srv->vh);
	if (cfg->api_listen[0] && server_api_listen(srv, cfg, err, errlen) < 0) {
		lws_context_destroy(srv->ctx);
		api_free(srv->api);
		hub_free(srv->hub);
		free(srv);
		return NULL;
	}
	server_load_allow(srv, cfg);
	ev_prepare_init(&srv->flush_watcher, server_on_prepare);
	srv->flush_watcher.data = srv;
	ev_set_priority(&srv->flush_watcher, EV_MINPRI);
	ev_prepare_start(loop, &srv->flush_watcher);
	ev_check_init(&srv->reread_watcher, server_on_check);
	srv->reread_watcher.data = srv;
	ev_set_priority(&srv->reread_watcher, EV_MINPRI);
	ev_check_start(loop, &srv->reread_watcher);
	ev_timer_init(&srv->trim_timer, server_on_trim, SERVER_TRIM_EVERY, SERVER_TRIM_EVERY);
	srv->trim_timer.data = srv;
	ev_timer_start(loop, &srv->trim_timer);
	ev_timer_init(&srv->kick_timer, server_on_kick, 1., 1.);
	srv->kick_timer.data = srv;
	ev_timer_start(loop, &srv->kick_timer);
	ev_timer_init(&srv->token_timer, server_on_token, 0., 0.);
	srv->token_timer.data = srv;
	return srv;
}

void server_reconfigure(struct server *srv, const struct config *cfg)
{
	srv->cfg = cfg;
	server_apply_limits(srv);
	server_load_allow(srv, cfg);
	if (srv->api)
		api_reconfigure(srv->api, cfg);
	hub_reconfigure(srv->hub, cfg);
}

void server_shutdown(struct server *srv, void (*on_drained)(void *), void *arg)
{
	struct conn *c;
	int grace = (int)ceil(srv->cfg->shutdown_timeout);

	srv->draining = 1;
	hub_set_draining(srv->hub);
	srv->on_drained = on_drained;
	srv->drained_arg = arg;
	log_info(NULL, "shutting down: closing %zu connections", srv->nconns);
	for (c = srv->conns; c; c = c->next)
		conn_request_close(c, 1001, "server shutdown", 1, grace > 0 ? grace : 1);
	server_check_drained(srv);
}

void server_free(struct server *srv)
{
	if (!srv)
		return;
	/* Destroying the context closes every wsi; each goes through
	 * conn_release and so through hub_session_unregister. */
	srv->on_drained = NULL;
	ev_prepare_stop(srv->loop, &srv->flush_watcher);
	ev_check_stop(srv->loop, &srv->reread_watcher);
	ev_timer_stop(srv->loop, &srv->trim_timer);
	ev_timer_stop(srv->loop, &srv->kick_timer);
	ev_timer_stop(srv->loop, &srv->token_timer);
	lws_context_destroy(srv->ctx);
	server_pending_drop_stray(srv);
	api_free(srv->api);
	hub_free(srv->hub);
	free(srv->rx_more);
	free(srv);
}

int server_port(const struct server *srv) { return srv->port; }
int server_api_port(const struct server *srv) { return srv->api_vh ? srv->api_port : -1; }
size_t server_connection_count(const struct server *srv) { return srv->nconns; }
struct hub *server_hub(struct server *srv) { return srv->hub; }
struct api *server_api(struct server *srv) { return srv->api; }
