/*
 * chatload - load generator for chatd and for one-room broadcast WebSocket
 * servers (--raw). See tools/chatload/README.md and docs/performance.md.
 *
 * The parent forks the workers, starts them all at one CLOCK_MONOTONIC
 * instant, watches the server (VmRSS and CPU from /proc/PID, the slow
 * client's sockets from /proc/net/tcp), merges the workers' counters and
 * histograms, prints one JSON line on stdout and a summary on stderr.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <openssl/ssl.h>

#include "chatload.h"

#define MAX_WORKERS 64
#define CONNS_PER_WORKER 15000
#define SLOW_SAMPLES 20000

struct worker {
	pid_t pid;
	int to, from;              /* pipes: parent writes to, reads from */
	int ready, done;
	struct msg_ready r;
	struct wresult res;
};

static struct worker workers[MAX_WORKERS];
static uint32_t nworkers;

struct slow_sample {
	double t;
	long rss_kib;
	int srv_state;             /* TCP state of the server's socket, 0 = gone */
	int srv_orphan;            /* the server process closed it (inode 0) */
	unsigned long srv_txq, cli_rxq;
};
static struct slow_sample *slow_s;
static uint32_t slow_n;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: chatload --mode idle|fanout|slow|churn --url ws[s]://127.0.0.1:PORT/ws [options]\n"
		"  --raw                 peers: send bare bodies, count any text frame as a delivery\n"
		"  --clients N           connections (idle, fanout, slow)\n"
		"  --rooms K             rooms; client i joins room i%%K (raw: ?room=rI on the path when K>1)\n"
		"  --senders S           clients 0..S-1 send (fanout, slow)\n"
		"  --rate R              total messages/s over all senders (paced)\n"
		"  --payload P           body bytes (>= 17; the first 16 are the send time in hex)\n"
		"  --duration D          seconds of sending (fanout, slow), holding (idle), at most (churn)\n"
		"  --drain T             seconds to wait for in-flight deliveries after sending (default 2)\n"
		"  --concurrency Q       churn: cycles in flight\n"
		"  --cycles N            churn: cycles to run\n"
		"  --room-prefix P       churn: room names P<worker>s<slot> (default: unique per run)\n"
		"  --slow-clients N      slow: clients that stop reading after their join (default 1)\n"
		"  --slow-rcvbuf BYTES   slow: SO_RCVBUF of those clients (default: kernel default)\n"
		"  --workers W           processes (default: one per %d connections)\n"
		"  --src-ips N           spread source addresses over 127.0.0.2..(N+1) (default 16; 0 = no bind)\n"
		"  --connect-concurrency N  connects in flight per worker (default 256)\n"
		"  --setup-timeout T     seconds to connect everything (default 120)\n"
		"  --settle T            seconds before sampling server RSS after the run (default 2)\n"
		"  --max-out BYTES       per-sender unsent backlog bound (default 1 MiB)\n"
		"  --server-pid PID      read the server's VmRSS and CPU from /proc/PID\n"
		"  --url URL (again)     up to 4 nodes of one cluster: client i goes to URL i%%N\n"
		"  --tls-verify CAFILE   wss://: verify the server's certificate against CAFILE and the\n"
		"                        target address (default: no verification, for loopback benchmarks)\n"
		"  --label TEXT          copied into the JSON line\n"
		"  --self-test           check SHA-1, the accept key, frames and the histogram\n"
		"  -v                    more output on stderr\n"
		"Targets must be in 127.0.0.0/8. Every run is bounded by --duration and its counts.\n",
		CONNS_PER_WORKER);
}

static int parse_url(struct cl_opts *o, const char *url)
{
	char host[64];
	const char *p, *h, *colon, *slash;
	struct in_addr a;
	long port;

	if (strncmp(url, "ws://", 5) == 0) {
		o->tls = 0;
		h = url + 5;
	} else if (strncmp(url, "wss://", 6) == 0) {
		o->tls = 1;
		h = url + 6;
	} else {
		fprintf(stderr, "chatload: only ws:// and wss:// URLs are supported: %s\n", url);
		return -1;
	}
	slash = strchr(h, '/');
	colon = memchr(h, ':', slash ? (size_t)(slash - h) : strlen(h));
	if (!colon) {
		fprintf(stderr, "chatload: the URL needs an explicit port: %s\n", url);
		return -1;
	}
	if ((size_t)(colon - h) >= sizeof(host))
		return -1;
	memcpy(host, h, (size_t)(colon - h));
	host[colon - h] = '\0';
	port = strtol(colon + 1, NULL, 10);
	if (port <= 0 || port > 65535) {
		fprintf(stderr, "chatload: bad port in %s\n", url);
		return -1;
	}
	if (strcmp(host, "localhost") == 0)
		strcpy(host, "127.0.0.1");
	if (inet_pton(AF_INET, host, &a) != 1) {
		fprintf(stderr, "chatload: the host must be an IPv4 loopback address (127.x.y.z) or localhost: %s\n", host);
		return -1;
	}
	o->dst_addr = ntohl(a.s_addr);
	if ((o->dst_addr >> 24) != 127) {
		fprintf(stderr, "chatload: refusing %s: only 127.0.0.0/8 targets are allowed\n", host);
		return -1;
	}
	o->dst_port = (uint16_t)port;
	snprintf(o->host, sizeof(o->host), "%s:%ld", host, port);
	p = slash ? slash : "/";
	if (strlen(p) >= sizeof(o->path))
		return -1;
	strcpy(o->path, p);
	return 0;
}

/* ---- /proc ---- */

static long proc_rss_kib(int pid)
{
	char path[64], line[256];
	long v = -1;
	FILE *f;

	if (pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "VmRSS:", 6) == 0) {
			v = strtol(line + 6, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/* utime + stime in clock ticks, or -1 */
static long long proc_cpu_ticks(int pid)
{
	char path[64], buf[2048], *p;
	unsigned long long ut, st;
	FILE *f;
	size_t n;

	if (pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p)
		return -1;
	/* after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	return (long long)(ut + st);
}

/* busy and total ticks of each CPU (up to 8) from /proc/stat */
#define MAXCPU 8
struct cpu_ticks {
	unsigned long long busy[MAXCPU], total[MAXCPU];
	int n;
};

static void proc_stat_cpus(struct cpu_ticks *t)
{
	char line[512];
	FILE *f = fopen("/proc/stat", "r");

	memset(t, 0, sizeof(*t));
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long v[8] = { 0 };
		int id;
		if (strncmp(line, "cpu", 3) != 0 || line[3] < '0' || line[3] > '9')
			continue;
		if (sscanf(line + 3, "%d %llu %llu %llu %llu %llu %llu %llu %llu", &id, &v[0], &v[1], &v[2], &v[3],
			   &v[4], &v[5], &v[6], &v[7]) < 5 || id < 0 || id >= MAXCPU)
			continue;
		/* user nice system idle iowait irq softirq steal */
		t->busy[id] = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
		t->total[id] = t->busy[id] + v[3] + v[4];
		if (id + 1 > t->n)
			t->n = id + 1;
	}
	fclose(f);
}

static void tcp_key(char *out, uint32_t addr, uint16_t port)
{
	snprintf(out, 16, "%08X:%04X", (unsigned)htonl(addr), port);
}

static void sample_slow(const struct cl_opts *o, uint32_t saddr, uint16_t sport, double t)
{
	char srv[16], cli[16], line[512], la[64], ra[64];
	unsigned st;
	unsigned long txq, rxq, inode;
	struct slow_sample s = { t, proc_rss_kib(o->server_pid), 0, 0, 0, 0 };
	FILE *f;

	if (!slow_s || slow_n >= SLOW_SAMPLES)
		return;
	tcp_key(srv, o->dst_addr, o->dst_port);
	tcp_key(cli, saddr, sport);
	f = fopen("/proc/net/tcp", "r");
	if (f) {
		while (fgets(line, sizeof(line), f)) {
			if (sscanf(line, " %*d: %63s %63s %x %lx:%lx %*x:%*x %*x %*u %*d %lu",
				   la, ra, &st, &txq, &rxq, &inode) != 6)
				continue;
			if (strcmp(la, srv) == 0 && strcmp(ra, cli) == 0) {
				s.srv_state = (int)st;
				s.srv_orphan = inode == 0;
				s.srv_txq = txq;
			} else if (strcmp(la, cli) == 0 && strcmp(ra, srv) == 0) {
				s.cli_rxq = rxq;
			}
		}
		fclose(f);
	}
	slow_s[slow_n++] = s;
}

/* ---- workers ---- */

static void kill_workers(void)
{
	uint32_t i;

	for (i = 0; i < nworkers; i++)
		if (workers[i].pid > 0)
			kill(workers[i].pid, SIGKILL);
}

static void on_alarm(int sig)
{
	static const char m[] = "chatload: hard time limit reached; stopping\n";

	(void)sig;
	if (write(2, m, sizeof(m) - 1) < 0) {
	}
	kill_workers();
	_exit(3);
}

static int spawn(const struct cl_opts *o)
{
	uint32_t i;

	for (i = 0; i < o->workers; i++) {
		int a[2], b[2];
		pid_t pid;

		if (pipe(a) || pipe(b)) {
			perror("chatload: pipe");
			return -1;
		}
		fflush(NULL);
		pid = fork();
		if (pid < 0) {
			perror("chatload: fork");
			return -1;
		}
		if (pid == 0) {
			uint32_t j;
			signal(SIGALRM, SIG_DFL);
			for (j = 0; j < i; j++) {
				close(workers[j].to);
				close(workers[j].from);
			}
			close(a[1]);
			close(b[0]);
			worker_main(o, i, a[0], b[1]);
		}
		close(a[0]);
		close(b[1]);
		workers[i].pid = pid;
		workers[i].to = a[1];
		workers[i].from = b[0];
		nworkers++;
	}
	return 0;
}

/* Wait for messages from the workers until cond() or the deadline; calls tick every ~100 ms. */
static int pump(uint64_t deadline, int (*cond)(void), void (*tick)(void))
{
	struct pollfd pf[MAX_WORKERS];
	uint32_t i;

	while (!cond()) {
		uint64_t now = now_ns();
		int n;

		if (now >= deadline)
			return -1;
		for (i = 0; i < nworkers; i++) {
			pf[i].fd = workers[i].from;
			pf[i].events = POLLIN;
			pf[i].revents = 0;
		}
		n = poll(pf, nworkers, 100);
		if (n < 0 && errno != EINTR)
			return -1;
		for (i = 0; i < nworkers && n > 0; i++) {
			uint32_t type, len;
			struct worker *w = &workers[i];

			if (!pf[i].revents)
				continue;
			if (pf[i].revents & POLLIN) {
				if (pipe_recv(w->from, &type, &w->res, sizeof(w->res), &len) < 0) {
					fprintf(stderr, "chatload: worker %u died\n", i);
					return -1;
				}
				if (type == MSG_READY) {
					memcpy(&w->r, &w->res, sizeof(w->r));
					w->ready = 1;
				} else if (type == MSG_RESULT) {
					w->done = 1;
				}
			} else {
				fprintf(stderr, "chatload: worker %u died\n", i);
				return -1;
			}
		}
		if (tick)
			tick();
	}
	return 0;
}

static int all_ready(void)
{
	for (uint32_t i = 0; i < nworkers; i++)
		if (!workers[i].ready)
			return 0;
	return 1;
}

static int all_done(void)
{
	for (uint32_t i = 0; i < nworkers; i++)
		if (!workers[i].done)
			return 0;
	return 1;
}

/* ---- run state for tick() ---- */
static struct {
	const struct cl_opts *o;
	uint64_t start, end;
	long rss_peak;
	long long cpu_end;
	long rss_end;
	uint64_t last_sample;
	uint32_t slow_addr;
	uint16_t slow_port;
	int cpu_taken;
	struct cpu_ticks ct0, ct1;
} R;

static int never(void) { return 0; }

static void run_tick(void)
{
	uint64_t now = now_ns();
	long rss;

	if (now - R.last_sample < 90000000ull)
		return;
	R.last_sample = now;
	rss = proc_rss_kib(R.o->server_pid);
	if (rss > R.rss_peak)
		R.rss_peak = rss;
	if (R.o->mode == MODE_SLOW && R.slow_port && now >= R.start && now <= R.end + 1000000000ull)
		sample_slow(R.o, R.slow_addr, R.slow_port, (double)(now - R.start) / 1e9);
	if (!R.cpu_taken && now >= R.end) {
		proc_stat_cpus(&R.ct1);
		R.cpu_end = proc_cpu_ticks(R.o->server_pid);
		R.rss_end = rss;
		R.cpu_taken = 1;
	}
}

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - floor(s)) * 1e9) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
	}
}

/* ---- output ---- */

static void jnum(FILE *f, const char *k, double v)
{
	if (isfinite(v))
		fprintf(f, ",\"%s\":%.6g", k, v);
	else
		fprintf(f, ",\"%s\":null", k);
}

static void jint(FILE *f, const char *k, long long v) { fprintf(f, ",\"%s\":%lld", k, v); }

static void jopt(FILE *f, const char *k, long long v)
{
	if (v < 0)
		fprintf(f, ",\"%s\":null", k);
	else
		fprintf(f, ",\"%s\":%lld", k, v);
}

static const char *mode_name(enum cl_mode m)
{
	static const char *n[] = { "idle", "fanout", "slow", "churn" };
	return n[m];
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "mode", 1, 0, 'm' }, { "url", 1, 0, 'u' }, { "raw", 0, 0, 'r' },
		{ "clients", 1, 0, 'c' }, { "rooms", 1, 0, 'k' }, { "senders", 1, 0, 's' },
		{ "rate", 1, 0, 'R' }, { "payload", 1, 0, 'p' }, { "duration", 1, 0, 'd' },
		{ "drain", 1, 0, 'D' }, { "concurrency", 1, 0, 'q' }, { "cycles", 1, 0, 'n' },
		{ "slow-clients", 1, 0, 'S' }, { "slow-rcvbuf", 1, 0, 'B' }, { "workers", 1, 0, 'w' },
		{ "src-ips", 1, 0, 'i' }, { "connect-concurrency", 1, 0, 'C' },
		{ "setup-timeout", 1, 0, 'T' }, { "settle", 1, 0, 'Z' }, { "max-out", 1, 0, 'o' },
		{ "server-pid", 1, 0, 'P' }, { "label", 1, 0, 'l' }, { "self-test", 0, 0, 'X' },
		{ "room-prefix", 1, 0, 'x' }, { "tls-verify", 1, 0, 'V' }, { "help", 0, 0, 'h' },
		{ 0, 0, 0, 0 }
	};
	struct cl_opts o;
	int opt, have_url = 0;
	long long v_clients = -1, v_rooms = -1, v_senders = -1, v_workers = -1, v_duration_set = 0;
	double v_rate = -1, v_duration = -1, settle = 2;
	long long v_payload = -1;
	struct wresult tot;
	struct rlimit rl;
	long rss_before, rss_setup, rss_after;
	long long cpu0;
	uint64_t setup_t0, setup_t1, t_go;
	uint64_t connected = 0, cfailed = 0;
	uint32_t i;

	memset(&o, 0, sizeof(o));
	o.mode = (enum cl_mode)-1;
	o.drain = 2;
	o.setup_timeout = 120;
	o.src_ips = 16;
	o.connect_conc = 256;
	o.concurrency = 200;
	o.cycles = 20000;
	o.slow_clients = 1;
	o.max_out = 1 << 20;
	snprintf(o.label, sizeof(o.label), "server");

	while ((opt = getopt_long(argc, argv, "vh", lo, NULL)) != -1) {
		switch (opt) {
		case 'm':
			if (!strcmp(optarg, "idle")) o.mode = MODE_IDLE;
			else if (!strcmp(optarg, "fanout")) o.mode = MODE_FANOUT;
			else if (!strcmp(optarg, "slow")) o.mode = MODE_SLOW;
			else if (!strcmp(optarg, "churn")) o.mode = MODE_CHURN;
			else { fprintf(stderr, "chatload: unknown mode %s\n", optarg); return 2; }
			break;
		case 'u':
			if (have_url) {
				/* Another node of the same cluster: same host and path,
				 * clients alternate over the ports. */
				struct cl_opts more = o;
				if (o.nextra >= 3 || parse_url(&more, optarg) || more.dst_addr != o.dst_addr ||
				    more.tls != o.tls || strcmp(more.path, o.path)) {
					fprintf(stderr, "chatload: up to 4 --url, same scheme, host and path, other ports\n");
					return 2;
				}
				o.extra_ports[o.nextra++] = more.dst_port;
				break;
			}
			if (parse_url(&o, optarg))
				return 2;
			have_url = 1;
			break;
		case 'r': o.raw = 1; break;
		case 'c': v_clients = atoll(optarg); break;
		case 'k': v_rooms = atoll(optarg); break;
		case 's': v_senders = atoll(optarg); break;
		case 'R': v_rate = atof(optarg); break;
		case 'p': v_payload = atoll(optarg); break;
		case 'd': v_duration = atof(optarg); v_duration_set = 1; break;
		case 'D': o.drain = atof(optarg); break;
		case 'q': o.concurrency = (uint32_t)atol(optarg); break;
		case 'n': o.cycles = (uint64_t)atoll(optarg); break;
		case 'S': o.slow_clients = (uint32_t)atol(optarg); break;
		case 'B': o.slow_rcvbuf = atoi(optarg); break;
		case 'w': v_workers = atoll(optarg); break;
		case 'i': o.src_ips = (uint32_t)atol(optarg); break;
		case 'C': o.connect_conc = (uint32_t)atol(optarg); break;
		case 'T': o.setup_timeout = atof(optarg); break;
		case 'Z': settle = atof(optarg); break;
		case 'o': o.max_out = (uint32_t)atol(optarg); break;
		case 'P': o.server_pid = atoi(optarg); break;
		case 'l': snprintf(o.label, sizeof(o.label), "%s", optarg); break;
		case 'x':
			if (strspn(optarg, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != strlen(optarg) ||
			    strlen(optarg) >= sizeof(o.room_prefix)) {
				fprintf(stderr, "chatload: --room-prefix: up to 23 of [A-Za-z0-9_.-]\n");
				return 2;
			}
			strcpy(o.room_prefix, optarg);
			break;
		case 'V':
			if (strlen(optarg) >= sizeof(o.tls_ca)) {
				fprintf(stderr, "chatload: --tls-verify: path too long\n");
				return 2;
			}
			strcpy(o.tls_ca, optarg);
			break;
		case 'X': return cl_self_test();
		case 'v': o.verbose++; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if ((int)o.mode < 0 || !have_url) {
		usage(stderr);
		return 2;
	}
	if (o.tls_ca[0] && !o.tls) {
		fprintf(stderr, "chatload: --tls-verify needs a wss:// URL\n");
		return 2;
	}
	if (o.tls) {
		/* Each worker makes its own context after the fork; this one only
		 * reports a bad CA file before anything starts. */
		char err[256];
		struct ssl_ctx_st *ctx = cl_tls_ctx_new(&o, err, sizeof(err));
		if (!ctx) {
			fprintf(stderr, "chatload: TLS: %s\n", err);
			return 2;
		}
		SSL_CTX_free(ctx);
	}
	/* defaults per mode */
	switch (o.mode) {
	case MODE_IDLE:
		o.clients = v_clients > 0 ? (uint32_t)v_clients : 1000;
		o.rooms = v_rooms > 0 ? (uint32_t)v_rooms : (o.clients >= 10 ? o.clients / 10 : 1);
		o.duration = v_duration_set ? v_duration : 5;
		break;
	case MODE_FANOUT:
	case MODE_SLOW:
		o.clients = v_clients > 0 ? (uint32_t)v_clients : 100;
		o.rooms = v_rooms > 0 ? (uint32_t)v_rooms : 1;
		o.senders = v_senders > 0 ? (uint32_t)v_senders : (o.clients < 10 ? o.clients : 10);
		o.rate = v_rate > 0 ? v_rate : 1000;
		o.payload = v_payload > 0 ? (uint32_t)v_payload : (o.mode == MODE_SLOW ? 1024 : 64);
		o.duration = v_duration_set ? v_duration : (o.mode == MODE_SLOW ? 30 : 10);
		if (o.mode == MODE_SLOW) {
			if (o.slow_clients < 1)
				o.slow_clients = 1;
			if (o.senders + o.slow_clients > o.clients) {
				fprintf(stderr, "chatload: slow mode needs clients >= senders + slow-clients\n");
				return 2;
			}
		}
		break;
	case MODE_CHURN:
		o.clients = 0;
		o.rooms = 1;
		o.payload = v_payload > 0 ? (uint32_t)v_payload : 64;
		o.duration = v_duration_set ? v_duration : 60;
		o.drain = 0;
		if (o.concurrency < 1 || o.cycles < 1) {
			fprintf(stderr, "chatload: churn needs --concurrency and --cycles >= 1\n");
			return 2;
		}
		break;
	}
	if (o.payload && (o.payload < 17 || o.payload > 4096)) {
		fprintf(stderr, "chatload: --payload must be 17..4096\n");
		return 2;
	}
	if (o.mode != MODE_CHURN && o.senders > o.clients)
		o.senders = o.clients;
	if (o.duration <= 0 || o.duration > 3600 || o.drain < 0 || o.drain > 60) {
		fprintf(stderr, "chatload: --duration must be in (0, 3600] and --drain in [0, 60]\n");
		return 2;
	}
	if (o.src_ips > 250)
		o.src_ips = 250;
	if (!o.connect_conc)
		o.connect_conc = 1;
	if (v_workers > 0)
		o.workers = (uint32_t)v_workers;
	else if (o.mode == MODE_CHURN)
		o.workers = 1 + o.concurrency / CONNS_PER_WORKER;
	else
		o.workers = 1 + (o.clients - 1) / CONNS_PER_WORKER;
	if (o.mode == MODE_SLOW)
		o.workers = 1;    /* one process holds the per-second series */
	if (o.workers > MAX_WORKERS)
		o.workers = MAX_WORKERS;
	if (o.mode != MODE_CHURN && o.workers > o.clients)
		o.workers = o.clients;
	if (o.mode == MODE_CHURN && o.workers > o.concurrency)
		o.workers = o.concurrency;
	{
		uint32_t per = o.mode == MODE_CHURN ? o.concurrency / o.workers + 1 : o.clients / o.workers + 1;
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
			if (rl.rlim_cur < rl.rlim_max) {
				rl.rlim_cur = rl.rlim_max;
				setrlimit(RLIMIT_NOFILE, &rl);
			}
			if (per + 32 > rl.rlim_cur) {
				fprintf(stderr, "chatload: %u connections per worker do not fit in the open-files limit %llu; "
					"use more --workers\n", per, (unsigned long long)rl.rlim_cur);
				return 2;
			}
		}
	}
	/* Names and message ids carry it: chatd dedups on (room, name, id) and
	 * answers a repeated id with the original ack, so two runs against one
	 * server must never share them. 32 random bits per run. */
	{
		uint32_t r;
		if (getrandom(&r, sizeof(r), 0) != sizeof(r))
			r = (uint32_t)(getpid() ^ (unsigned)time(NULL) ^ (unsigned)now_ns());
		snprintf(o.run_id, sizeof(o.run_id), "%08x", r);
	}

	/* A hard bound on the whole run, whatever happens. */
	signal(SIGALRM, on_alarm);
	signal(SIGPIPE, SIG_IGN);
	alarm((unsigned)(o.setup_timeout + o.duration + o.drain + settle + 60));

	rss_before = proc_rss_kib(o.server_pid);
	setup_t0 = now_ns();
	if (spawn(&o)) {
		kill_workers();
		return 1;
	}
	if (pump(setup_t0 + (uint64_t)((o.setup_timeout + 10) * 1e9), all_ready, NULL)) {
		fprintf(stderr, "chatload: workers did not get ready\n");
		kill_workers();
		return 1;
	}
	setup_t1 = now_ns();
	for (i = 0; i < nworkers; i++) {
		connected += workers[i].r.connected;
		cfailed += workers[i].r.failed;
		if (workers[i].r.slow_port) {
			R.slow_addr = workers[i].r.slow_addr;
			R.slow_port = workers[i].r.slow_port;
		}
	}
	if (o.verbose || o.mode != MODE_CHURN)
		fprintf(stderr, "chatload: %s: %llu connected, %llu failed in %.2fs\n", o.label,
			(unsigned long long)connected, (unsigned long long)cfailed, (double)(setup_t1 - setup_t0) / 1e9);
	if (o.mode == MODE_IDLE) {
		/* let the server finish the joins' replies and presence */
		sleep_s(1);
	}
	rss_setup = proc_rss_kib(o.server_pid);

	/* GO */
	{
		struct msg_go go;
		t_go = now_ns() + 200000000ull;
		go.start_ns = t_go;
		go.end_ns = t_go + (uint64_t)(o.duration * 1e9);
		go.stop_ns = go.end_ns + (uint64_t)(o.drain * 1e9);
		R.o = &o;
		R.start = go.start_ns;
		R.end = go.end_ns;
		R.rss_peak = rss_setup;
		if (o.mode == MODE_SLOW) {
			slow_s = calloc(SLOW_SAMPLES, sizeof(*slow_s));
		}
		cpu0 = proc_cpu_ticks(o.server_pid);
		for (i = 0; i < nworkers; i++)
			pipe_send(workers[i].to, MSG_GO, &go, sizeof(go));
		while (now_ns() < go.start_ns)
			sleep_s(0.001);
		cpu0 = proc_cpu_ticks(o.server_pid);
		proc_stat_cpus(&R.ct0);
		if (pump(go.stop_ns + 30000000000ull, all_done, run_tick)) {
			fprintf(stderr, "chatload: workers did not report\n");
			kill_workers();
			return 1;
		}
		if (!R.cpu_taken) {
			proc_stat_cpus(&R.ct1);
			R.cpu_end = proc_cpu_ticks(o.server_pid);
			R.rss_end = proc_rss_kib(o.server_pid);
		}
	}
	for (i = 0; i < nworkers; i++)
		pipe_send(workers[i].to, MSG_QUIT, NULL, 0);
	for (i = 0; i < nworkers; i++) {
		waitpid(workers[i].pid, NULL, 0);
		workers[i].pid = 0;
	}
	(void)never;
	sleep_s(settle);
	rss_after = proc_rss_kib(o.server_pid);

	/* merge */
	memset(&tot, 0, sizeof(tot));
	{
		uint64_t done_max = 0;
		for (i = 0; i < nworkers; i++) {
			struct wresult *r = &workers[i].res;
#define ADD(f) tot.f += r->f
			ADD(connected); ADD(connect_failed); ADD(handshake_failed); ADD(disconnected);
			ADD(closed_by_server); ADD(close_1001); ADD(close_1008); ADD(close_other);
			ADD(errors); ADD(rate_limited); ADD(other_errors); ADD(sent); ADD(acked);
			ADD(expected); ADD(delivered); ADD(send_behind); ADD(frames_in); ADD(bytes_in);
			ADD(bytes_out); ADD(pings); ADD(cpu_ns); ADD(cycles); ADD(cycle_failures); ADD(cycle_timeouts);
#undef ADD
			hist_merge(&tot.lat, &r->lat);
			if (r->slow_closed_ns && (!tot.slow_closed_ns || r->slow_closed_ns < tot.slow_closed_ns))
				tot.slow_closed_ns = r->slow_closed_ns;
			if (r->done_ns > done_max)
				done_max = r->done_ns;
			if (!tot.first_error[0] && r->first_error[0])
				memcpy(tot.first_error, r->first_error, sizeof(tot.first_error));
			if (o.mode == MODE_SLOW && r->series_n) {
				tot.series_n = r->series_n;
				memcpy(tot.series_p99_ms, r->series_p99_ms, sizeof(tot.series_p99_ms));
				memcpy(tot.series_max_ms, r->series_max_ms, sizeof(tot.series_max_ms));
				memcpy(tot.series_count, r->series_count, sizeof(tot.series_count));
			}
		}
		tot.done_ns = done_max;
	}

	/* report */
	{
		FILE *f = stdout;
		double dur = o.duration;
		double el_churn = tot.done_ns > t_go ? (double)(tot.done_ns - t_go) / 1e9 : dur;
		long long lost = (long long)tot.expected - (long long)tot.delivered;
		double cpu_pct = -1;
		double loss_pct = tot.expected ? 100.0 * (double)(lost > 0 ? lost : 0) / (double)tot.expected : 0;
		int ok = 1;
		double full_at = NAN, closed_at = NAN, client_closed_at = NAN;

		if (cpu0 >= 0 && R.cpu_end >= 0) {
			double el = o.mode == MODE_CHURN ? el_churn : dur;
			cpu_pct = 100.0 * (double)(R.cpu_end - cpu0) / (double)sysconf(_SC_CLK_TCK) / el;
		}
		if (o.mode == MODE_SLOW) {
			for (i = 0; i < slow_n; i++)
				if (slow_s[i].srv_state != 1 || slow_s[i].srv_orphan)
					break;
			/* the last sample at which the kernel buffers still took more */
			{
				uint32_t lim = i, k;
				unsigned long best = 0;
				for (k = 0; k < lim; k++) {
					unsigned long b = slow_s[k].srv_txq + slow_s[k].cli_rxq;
					if (b > best) {
						best = b;
						full_at = slow_s[k].t;
					}
				}
				if (lim == slow_n && lim > 0 && full_at >= slow_s[lim - 1].t - 0.5)
					full_at = NAN;      /* still growing at the end */
			}
			for (i = 0; i < slow_n; i++)
				if (slow_s[i].srv_state != 1 || slow_s[i].srv_orphan) {
					closed_at = slow_s[i].t;
					break;
				}
			if (tot.slow_closed_ns)
				client_closed_at = (double)((int64_t)(tot.slow_closed_ns - t_go)) / 1e9;
		}
		if (o.mode == MODE_IDLE)
			ok = tot.connected == o.clients;
		else if (o.mode == MODE_CHURN)
			ok = tot.cycles > 0 && tot.cycle_failures == 0;
		else
			ok = tot.connected == o.clients && lost <= 0 && tot.delivered > 0;

		fprintf(f, "{\"tool\":\"chatload\",\"version\":\"%s\",\"mode\":\"%s\",\"label\":\"%s\",\"proto\":\"%s\","
			"\"target\":\"%s%s\",\"tls\":%s", CL_VERSION, mode_name(o.mode), o.label, o.raw ? "raw" : "chat.v1",
			o.host, o.path, o.tls ? "true" : "false");
		if (o.mode == MODE_CHURN) {
			jint(f, "concurrency", o.concurrency);
			jint(f, "cycles_target", (long long)o.cycles);
		} else {
			jint(f, "clients", o.clients);
			jint(f, "rooms", o.rooms);
		}
		if (o.mode == MODE_FANOUT || o.mode == MODE_SLOW) {
			jint(f, "senders", o.senders);
			jnum(f, "rate", o.rate);
		}
		if (o.mode != MODE_IDLE)
			jint(f, "payload", o.payload);
		if (o.mode == MODE_SLOW) {
			jint(f, "slow_clients", o.slow_clients);
			jint(f, "slow_rcvbuf", o.slow_rcvbuf);
		}
		jnum(f, "duration_s", dur);
		if (o.mode == MODE_FANOUT || o.mode == MODE_SLOW)
			jnum(f, "drain_s", o.drain);
		jint(f, "workers", o.workers);
		jint(f, "connected", (long long)(o.mode == MODE_CHURN ? 0 : tot.connected));
		jint(f, "connect_failed", (long long)tot.connect_failed);
		jint(f, "handshake_failed", (long long)tot.handshake_failed);
		jint(f, "disconnected", (long long)tot.disconnected);
		jint(f, "closed_by_server", (long long)tot.closed_by_server);
		fprintf(f, ",\"close_codes\":{\"1001\":%llu,\"1008\":%llu,\"other\":%llu}",
			(unsigned long long)tot.close_1001, (unsigned long long)tot.close_1008,
			(unsigned long long)tot.close_other);
		jint(f, "errors", (long long)tot.errors);
		jint(f, "rate_limited", (long long)tot.rate_limited);
		jnum(f, "setup_s", (double)(setup_t1 - setup_t0) / 1e9);
		if (o.mode == MODE_FANOUT || o.mode == MODE_SLOW) {
			jint(f, "sent", (long long)tot.sent);
			if (!o.raw)
				jint(f, "acked", (long long)tot.acked);
			jint(f, "send_behind", (long long)tot.send_behind);
			jint(f, "expected", (long long)tot.expected);
			jint(f, "delivered", (long long)tot.delivered);
			jint(f, "lost", lost > 0 ? lost : 0);
			jnum(f, "loss_pct", loss_pct);
			jnum(f, "sends_per_s", (double)tot.sent / dur);
			jnum(f, "deliveries_per_s", (double)tot.delivered / dur);
		}
		if (o.mode != MODE_IDLE) {
			fprintf(f, ",\"%s\":{", o.mode == MODE_CHURN ? "cycle_ms" : "latency_ms");
			fprintf(f, "\"p50\":%.4g,\"p90\":%.4g,\"p99\":%.4g,\"p999\":%.4g,\"max\":%.4g,\"mean\":%.4g,\"samples\":%llu}",
				hist_pct_ms(&tot.lat, 50), hist_pct_ms(&tot.lat, 90), hist_pct_ms(&tot.lat, 99),
				hist_pct_ms(&tot.lat, 99.9), (double)tot.lat.max_us / 1000.0,
				tot.lat.count ? (double)tot.lat.sum_us / (double)tot.lat.count / 1000.0 : 0.0,
				(unsigned long long)tot.lat.count);
		}
		if (o.mode == MODE_CHURN) {
			jint(f, "cycles", (long long)tot.cycles);
			jnum(f, "cycles_per_s", (double)tot.cycles / el_churn);
			jnum(f, "elapsed_s", el_churn);
			jint(f, "cycle_failures", (long long)tot.cycle_failures);
			jint(f, "cycle_timeouts", (long long)tot.cycle_timeouts);
		}
		jopt(f, "server_pid", o.server_pid > 0 ? o.server_pid : -1);
		jopt(f, "server_rss_kib_before", rss_before);
		jopt(f, "server_rss_kib_loaded", o.mode == MODE_IDLE ? R.rss_end : rss_setup);
		jopt(f, "server_rss_kib_peak", R.rss_peak);
		jopt(f, "server_rss_kib_after", rss_after);
		if (o.mode == MODE_IDLE && rss_before >= 0 && R.rss_end >= 0 && tot.connected)
			jnum(f, "rss_per_conn_kib", (double)(R.rss_end - rss_before) / (double)tot.connected);
		if (o.mode == MODE_CHURN && rss_before >= 0 && rss_after >= 0)
			jint(f, "rss_growth_kib", rss_after - rss_before);
		jnum(f, "server_cpu_pct", cpu_pct >= 0 ? cpu_pct : NAN);
		/* how busy each CPU was over the window, whoever used it: with the server's and
		 * chatload's own share this shows other work on the machine */
		fprintf(f, ",\"cpu_busy_pct\":[");
		for (int c = 0; c < R.ct1.n; c++) {
			unsigned long long tt = R.ct1.total[c] - R.ct0.total[c];
			fprintf(f, "%s%.1f", c ? "," : "", tt ? 100.0 * (double)(R.ct1.busy[c] - R.ct0.busy[c]) / (double)tt : 0.0);
		}
		fprintf(f, "]");
		jnum(f, "tool_cpu_pct", 100.0 * (double)tot.cpu_ns / 1e9 / (o.mode == MODE_CHURN ? el_churn : dur));
		if (o.mode == MODE_SLOW) {
			fprintf(f, ",\"slow\":{");
			fprintf(f, "\"kernel_full_at_s\":");
			isfinite(full_at) ? fprintf(f, "%.2f", full_at) : fprintf(f, "null");
			fprintf(f, ",\"server_closed_at_s\":");
			isfinite(closed_at) ? fprintf(f, "%.2f", closed_at) : fprintf(f, "null");
			fprintf(f, ",\"client_saw_close_at_s\":");
			isfinite(client_closed_at) ? fprintf(f, "%.2f", client_closed_at) : fprintf(f, "null");
			fprintf(f, ",\"closed_after_full_s\":");
			isfinite(full_at) && isfinite(closed_at) ? fprintf(f, "%.2f", closed_at - full_at) : fprintf(f, "null");
			fprintf(f, "}");
			/* per second: t, server RSS KiB, server socket unsent bytes, slow client unread bytes,
			 * server socket state (1 established, 0 gone, -1 closed by the server),
			 * others' deliveries and p99 ms in that second */
			fprintf(f, ",\"series_cols\":[\"t\",\"rss_kib\",\"srv_unsent\",\"cli_unread\",\"srv_sock\",\"deliveries\",\"p99_ms\"]");
			fprintf(f, ",\"series\":[");
			{
				uint32_t sec = 0, k = 0, first = 1;
				for (k = 0; k < slow_n; k++) {
					struct slow_sample *s = &slow_s[k];
					if (s->t + 1e-9 < sec + 1)
						continue;
					sec = (uint32_t)s->t;
					fprintf(f, "%s[%u,%ld,%lu,%lu,%d,%u,%.3g]", first ? "" : ",", sec, s->rss_kib,
						s->srv_txq, s->cli_rxq,
						s->srv_state == 0 ? 0 : (s->srv_orphan || s->srv_state != 1) ? -1 : 1,
						sec - 1 < tot.series_n ? tot.series_count[sec - 1] : 0,
						sec - 1 < tot.series_n ? tot.series_p99_ms[sec - 1] : 0.0);
					first = 0;
				}
			}
			fprintf(f, "]");
		}
		jint(f, "frames_in", (long long)tot.frames_in);
		jint(f, "bytes_in", (long long)tot.bytes_in);
		jint(f, "bytes_out", (long long)tot.bytes_out);
		jint(f, "pings", (long long)tot.pings);
		fprintf(f, ",\"first_error\":\"%s\"", tot.first_error);
		fprintf(f, ",\"ok\":%s}\n", ok ? "true" : "false");
		fflush(f);

		/* human summary */
		fprintf(stderr, "chatload %s %s (%s): ", mode_name(o.mode), o.label, o.raw ? "raw" : "chat.v1");
		if (o.mode == MODE_IDLE) {
			fprintf(stderr, "%llu/%u connected; server RSS %ld -> %ld KiB",
				(unsigned long long)tot.connected, o.clients, rss_before, R.rss_end);
			if (rss_before >= 0 && tot.connected)
				fprintf(stderr, " = %.2f KiB/conn", (double)(R.rss_end - rss_before) / (double)tot.connected);
			fprintf(stderr, "; after close %ld KiB\n", rss_after);
		} else if (o.mode == MODE_CHURN) {
			fprintf(stderr, "%llu cycles in %.2fs = %.0f/s, %llu failed, %llu close timeouts; cycle p50 %.2f p99 %.2f ms; "
				"server RSS before %ld after %ld KiB\n",
				(unsigned long long)tot.cycles, el_churn, (double)tot.cycles / el_churn,
				(unsigned long long)tot.cycle_failures, (unsigned long long)tot.cycle_timeouts,
				hist_pct_ms(&tot.lat, 50), hist_pct_ms(&tot.lat, 99), rss_before, rss_after);
		} else {
			fprintf(stderr, "%u clients/%u rooms, %u senders at %.0f/s, %u B: sent %llu, delivered %llu of %llu "
				"(%.0f/s, loss %.3f%%); latency ms p50 %.2f p90 %.2f p99 %.2f p99.9 %.2f max %.2f; "
				"server RSS peak %ld KiB, CPU %.0f%%; chatload CPU %.0f%%\n",
				o.clients, o.rooms, o.senders, o.rate, o.payload, (unsigned long long)tot.sent,
				(unsigned long long)tot.delivered, (unsigned long long)tot.expected,
				(double)tot.delivered / dur, loss_pct, hist_pct_ms(&tot.lat, 50), hist_pct_ms(&tot.lat, 90),
				hist_pct_ms(&tot.lat, 99), hist_pct_ms(&tot.lat, 99.9), (double)tot.lat.max_us / 1000.0,
				R.rss_peak, cpu_pct, 100.0 * (double)tot.cpu_ns / 1e9 / dur);
			if (o.mode == MODE_SLOW)
				fprintf(stderr, "  slow client: kernel buffers full at %.2fs, server closed it at %.2fs\n",
					full_at, closed_at);
		}
		if (tot.closed_by_server || tot.disconnected || tot.errors || tot.connect_failed || tot.handshake_failed)
			fprintf(stderr, "  closed by server %llu (1008: %llu), disconnected %llu, errors %llu (rate_limited %llu), "
				"connect failed %llu, handshake failed %llu%s%s\n",
				(unsigned long long)tot.closed_by_server, (unsigned long long)tot.close_1008,
				(unsigned long long)tot.disconnected, (unsigned long long)tot.errors,
				(unsigned long long)tot.rate_limited, (unsigned long long)tot.connect_failed,
				(unsigned long long)tot.handshake_failed, tot.first_error[0] ? "; first: " : "",
				tot.first_error);
		return ok ? 0 : 1;
	}
}
