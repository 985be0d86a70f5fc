/*
 * chatload - load generator for chatd (and for plain broadcast WebSocket
 * servers in --raw mode). Shared declarations.
 *
 * Process model: the parent parses options, forks W workers (each an epoll
 * loop over its share of the connections) and talks to each over two pipes:
 * parent -> worker: GO(start time), QUIT; worker -> parent: READY, RESULT.
 * CLOCK_MONOTONIC is machine-wide, so the parent hands absolute start times
 * and every process timestamps in the same clock.
 */
#ifndef CHATLOAD_H
#define CHATLOAD_H

#include <stddef.h>
#include <stdint.h>

#define CL_VERSION "0.1.0"

enum cl_mode { MODE_IDLE, MODE_FANOUT, MODE_SLOW, MODE_CHURN };

struct cl_opts {
	enum cl_mode mode;
	int raw;                   /* any text frame is a delivery; no chat.v1 */
	int tls;                   /* wss:// */
	char tls_ca[256];          /* --tls-verify CAFILE; "" = no verification */
	uint32_t dst_addr;         /* host order, 127.x.y.z */
	uint16_t dst_port;
	uint16_t extra_ports[3];   /* --url given again: clients alternate over the ports */
	int nextra;
	char host[80];             /* Host: header */
	char path[256];            /* request path */
	uint32_t clients;
	uint32_t rooms;
	uint32_t senders;
	double rate;               /* total messages/s over all senders */
	uint32_t payload;          /* body bytes (>= 17) */
	double duration;           /* seconds of measurement (send window / hold) */
	double drain;              /* seconds to wait for in-flight deliveries */
	double setup_timeout;      /* seconds allowed to connect everything */
	uint32_t workers;
	uint32_t src_ips;          /* spread source addresses over 127.0.0.2.. */
	uint32_t connect_conc;     /* connects in flight per worker */
	uint32_t concurrency;      /* churn: cycles in flight (total) */
	uint64_t cycles;           /* churn: cycles to run (total) */
	uint32_t slow_clients;     /* slow: clients that never read */
	int slow_rcvbuf;           /* slow: SO_RCVBUF of the non-reading client (0 = default) */
	uint32_t max_out;          /* per-connection output backlog bound (bytes) */
	int server_pid;
	char label[64];
	char run_id[16];           /* makes chat.v1 names unique per run */
	char room_prefix[24];      /* churn: room names (default: unique per run) */
	int verbose;
};

/* ---- histogram: log buckets, 32 per octave (~3% resolution), in us ---- */
#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS 1344
struct hist {
	uint64_t n[HIST_BUCKETS];
	uint64_t count;
	uint64_t max_us;
	uint64_t sum_us;
};
void hist_add(struct hist *h, uint64_t us);
void hist_merge(struct hist *dst, const struct hist *src);
double hist_pct_ms(const struct hist *h, double pct);  /* pct in 0..100 */
void hist_reset(struct hist *h);

/* ---- RFC 6455 bits: SHA-1, base64, frames ---- */
void sha1(const void *data, size_t len, uint8_t out[20]);
size_t base64_encode(const uint8_t *in, size_t len, char *out); /* out: 4*ceil(len/3)+1 */
/* Sec-WebSocket-Accept for a key: 28 chars + NUL */
void ws_accept_for(const char *key, char out[29]);
/* A masked client frame (FIN set) into dst; returns its size. dst must hold len + 14. */
size_t ws_frame_put(uint8_t *dst, int opcode, const void *payload, size_t len, uint32_t mask);
struct ws_frame {
	int fin, opcode;
	uint8_t *payload;
	uint64_t len;
	size_t size;               /* header + payload */
};
/* Parse one server frame at p (n bytes). Returns 1 and fills f when whole,
 * 0 when more bytes are needed (f->size = bytes needed if known, else 0),
 * -1 on a protocol error. Unmasks in place if the server masked. */
int ws_frame_parse(uint8_t *p, size_t n, struct ws_frame *f);
int cl_self_test(void);

/* ---- parent <-> worker messages ---- */
enum { MSG_READY = 1, MSG_RESULT = 2, MSG_GO = 3, MSG_QUIT = 4 };
struct msg_hdr {
	uint32_t type;
	uint32_t len;
};
struct msg_ready {
	uint64_t connected, failed;
	uint32_t slow_addr;        /* host order; 0 = none in this worker */
	uint16_t slow_port;
};
struct msg_go {
	uint64_t start_ns;
	uint64_t end_ns;           /* sending stops */
	uint64_t stop_ns;          /* drain ends, report */
};

#define SERIES_MAX 600
struct wresult {
	uint64_t connected, connect_failed, handshake_failed, disconnected;
	uint64_t closed_by_server, close_1001, close_1008, close_other;
	uint64_t errors, rate_limited, other_errors;
	uint64_t sent, acked, expected, delivered, delivered_late;
	uint64_t send_behind;      /* messages due but not sent (backlog) */
	uint64_t frames_in, bytes_in, bytes_out, pings;
	uint64_t cycles, cycle_failures, cycle_timeouts;
	uint64_t slow_closed_ns;   /* when a slow client saw its connection end (0 = never) */
	uint64_t done_ns;          /* when this worker stopped (churn: last cycle) */
	uint64_t cpu_ns;           /* CPU this worker used from start to end of sending */
	struct hist lat;           /* delivery latency (fanout/slow) or cycle time (churn) */
	uint32_t series_n;
	float series_p99_ms[SERIES_MAX];
	float series_max_ms[SERIES_MAX];
	uint32_t series_count[SERIES_MAX];
	char first_error[160];
};

/* tls.c: a TLS client context for wss:// (one per worker); NULL and err on
 * failure. The caller owns it (SSL_CTX_free). */
struct ssl_ctx_st;
struct ssl_ctx_st *cl_tls_ctx_new(const struct cl_opts *o, char *err, size_t errlen);
/* Text for the last failed TLS call (a static buffer); clears the error queue. */
const char *cl_tls_error(int ssl_err);

/* worker.c */
void worker_main(const struct cl_opts *o, uint32_t wid, int rfd, int wfd) __attribute__((noreturn));

/* util */
uint64_t now_ns(void);
int pipe_send(int fd, uint32_t type, const void *p, uint32_t len);
int pipe_recv(int fd, uint32_t *type, void *p, uint32_t cap, uint32_t *len);

#endif
