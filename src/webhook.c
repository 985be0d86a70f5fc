/*
 * webhook.c - webhook delivery (webhook.h) with libcurl's multi-socket
 * interface on the libev loop.
 *
 * libcurl tells us which sockets to watch (wh_on_socket: one ev_io per
 * socket, kept in curl's socket data) and when to call it back
 * (wh_on_timer_set: one ev_timer); we tell it what happened with
 * curl_multi_socket_action and collect finished transfers with
 * curl_multi_info_read. Name resolution runs in libcurl's resolver thread
 * (AsynchDNS), so no step blocks the loop.
 *
 * Per URL (struct wh_target): a ring of queued events (each a JSON object,
 * malloc'ed, owned by the ring), at most one batch in flight (its body and
 * the events' times, owned by the batch), a timer that either lets a batch
 * fill (batch_interval) or waits out a retry's backoff.
 */
#include "webhook.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "hub_api.h"
#include "jsonw.h"
#include "log.h"

#define WH_SECRET_MIN 16
#define WH_SECRET_MAX 4096
#define WH_BACKOFF_MAX 60.0

enum wh_type { WH_USER_ONLINE, WH_USER_OFFLINE, WH_JOIN, WH_LEAVE, WH_MESSAGE, WH_DIRECT, WH_TYPES };

static const char *const wh_type_names[WH_TYPES] = {
	"user.online", "user.offline", "room.join", "room.leave", "message", "direct",
};

struct wh_event {
	double t;                      /* when it happened (loop time) */
	struct msgbuf *json;           /* one JSON object */
};

struct wh_batch {
	struct wh_target *tg;
	CURL *easy;
	struct curl_slist *headers;
	struct msgbuf *body;
	double *times;                 /* each event's time, for the latency */
	uint32_t n;
	uint32_t attempt;              /* POSTs made so far */
	char sig[96];                  /* "X-Chatd-Signature: sha256=<64 hex>" */
};

struct wh_target {
	struct webhook *w;
	char *url;
	char label[96];                /* the URL for logs: no user:password@, no query */
	struct wh_event *ring;
	uint32_t cap, head, len;       /* ring capacity grows up to queue_max */
	struct wh_batch *batch;        /* in flight or waiting for its retry */
	int posting;                   /* batch is in curl now */
	ev_timer timer;                /* batch_interval, or a retry's backoff */
};

struct webhook {
	struct ev_loop *loop;
	struct metrics *m;
	struct hub *hub;
	CURLM *multi;
	ev_timer curl_timer;
	char node[65];
	unsigned char secret[WH_SECRET_MAX];
	size_t secret_len;
	unsigned mask;                 /* bit per enum wh_type */
	uint32_t batch_max, queue_max, max_retries;
	double interval, timeout, backoff;
	struct wh_target *targets;
	size_t ntargets;
	void (*flushed)(void *);       /* webhook_flush: called once all is out */
	void *flushed_arg;
	ev_timer flush_timer;          /* calls it from the loop */
};

/* ---- the secret ------------------------------------------------------------ */

static int wh_read_secret(struct webhook *w, const char *path, char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "webhooks.secret_file %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode) || (st.st_mode & (S_IRWXG | S_IRWXO))) {
		snprintf(err, errlen, "webhooks.secret_file %s: %s (mode %04o); chmod 600 it", path,
			 S_ISREG(st.st_mode) ? "readable or writable by group or others" : "not a regular file",
			 (unsigned)(st.st_mode & 07777));
		close(fd);
		return -1;
	}
	n = read(fd, w->secret, sizeof(w->secret));
	close(fd);
	while (n > 0 && (w->secret[n - 1] == '\n' || w->secret[n - 1] == '\r'))
		n--;
	if (n < WH_SECRET_MIN || n >= (ssize_t)sizeof(w->secret)) {
		snprintf(err, errlen, "webhooks.secret_file %s: the secret must be %d..%d bytes", path,
			 WH_SECRET_MIN, WH_SECRET_MAX - 1);
		return -1;
	}
	w->secret_len = (size_t)n;
	return 0;
}

/* ---- batches ---------------------------------------------------------------- */

static void wh_batch_free(struct wh_batch *b)
{
	if (!b)
		return;
	if (b->easy) {
		curl_multi_remove_handle(b->tg->w->multi, b->easy);
		curl_easy_cleanup(b->easy);
	}
	curl_slist_free_all(b->headers);
	msgbuf_unref(b->body);
	free(b->times);
	free(b);
}

/* The signature header of body. */
static void wh_sign(struct webhook *w, struct wh_batch *b)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int len = 0, i;
	char *p;

	HMAC(EVP_sha256(), w->secret, (int)w->secret_len, b->body->data, b->body->len, mac, &len);
	p = b->sig + snprintf(b->sig, sizeof(b->sig), "X-Chatd-Signature: sha256=");
	for (i = 0; i < len && p + 3 <= b->sig + sizeof(b->sig); i++)
		p += snprintf(p, 3, "%02x", mac[i]);
}

/* Take up to batch_max of tg's oldest events into a new batch; NULL on ENOMEM. */
static struct wh_batch *wh_batch_take(struct wh_target *tg)
{
	struct webhook *w = tg->w;
	uint32_t n = tg->len < w->batch_max ? tg->len : w->batch_max, i;
	struct wh_batch *b = calloc(1, sizeof(*b));
	struct jsonw jw;
	size_t size = 64;

	if (!b || !(b->times = malloc(sizeof(double) * n))) {
		free(b);
		return NULL;
	}
	for (i = 0; i < n; i++)
		size += tg->ring[(tg->head + i) % tg->cap].json->len + 1;
	jsonw_init(&jw, size);
	jsonw_obj_open(&jw);
	jsonw_kv_cstr(&jw, "node", w->node);
	jsonw_key(&jw, "events");
	jsonw_arr_open(&jw);
	for (i = 0; i < n; i++) {
		struct wh_event *e = &tg->ring[(tg->head + i) % tg->cap];
		jsonw_raw(&jw, (const char *)e->json->data, e->json->len);
	}
	jsonw_arr_close(&jw);
	jsonw_obj_close(&jw);
	if (!(b->body = jsonw_finish(&jw))) {
		free(b->times);
		free(b);
		return NULL;
	}
	for (i = 0; i < n; i++) {
		struct wh_event *e = &tg->ring[tg->head];
		b->times[i] = e->t;
		msgbuf_unref(e->json);
		tg->head = (tg->head + 1) % tg->cap;
	}
	tg->len -= n;
	w->m->webhook_queued -= n;
	b->n = n;
	b->tg = tg;
	wh_sign(w, b);
	return b;
}

static size_t wh_discard(char *p, size_t size, size_t n, void *arg)
{
	return size * n;             /* the receiver's answer body is not used */
}

/* Hand tg's batch to curl. -1 if it could not be (the batch is dropped). */
static int wh_post(struct wh_target *tg)
{
	struct webhook *w = tg->w;
	struct wh_batch *b = tg->batch;
	struct curl_slist *h;

	if (!b->easy) {
		if (!(b->easy = curl_easy_init()))
			return -1;
		h = curl_slist_append(NULL, "Content-Type: application/json");
		if (h)
			b->headers = h;
		if (h && (h = curl_slist_append(b->headers, b->sig)))
			b->headers = h;
		if (h && (h = curl_slist_append(b->headers, "Expect:")))   /* no 100-continue round trip */
			b->headers = h;
		if (!h)
			return -1;
		curl_easy_setopt(b->easy, CURLOPT_URL, tg->url);
		curl_easy_setopt(b->easy, CURLOPT_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(b->easy, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(b->easy, CURLOPT_HTTPHEADER, b->headers);
		curl_easy_setopt(b->easy, CURLOPT_POSTFIELDS, (const char *)b->body->data);
		curl_easy_setopt(b->easy, CURLOPT_POSTFIELDSIZE, (long)b->body->len);
		curl_easy_setopt(b->easy, CURLOPT_TIMEOUT_MS, (long)(w->timeout * 1000));
		curl_easy_setopt(b->easy, CURLOPT_WRITEFUNCTION, wh_discard);
		curl_easy_setopt(b->easy, CURLOPT_USERAGENT, "chatd/" CHATD_VERSION);
		curl_easy_setopt(b->easy, CURLOPT_PRIVATE, b);
	} else {
		curl_multi_remove_handle(w->multi, b->easy);
	}
	if (b->attempt++)
		w->m->webhook_retries++;
	if (curl_multi_add_handle(w->multi, b->easy) != CURLM_OK)
		return -1;
	tg->posting = 1;
	return 0;
}

static void wh_drop_batch(struct wh_target *tg, const char *why)
{
	struct webhook *w = tg->w;

	log_warn(NULL, "webhook %s: dropping %u events (%s)", tg->label, tg->batch->n, why);
	w->m->webhook_dropped += tg->batch->n;
	wh_batch_free(tg->batch);
	tg->batch = NULL;
	tg->posting = 0;
}

static void wh_schedule(struct wh_target *tg);
static void wh_kick(struct wh_target *tg);

/* While flushing: is everything out? Then tell the caller, from the loop. */
static void wh_check_flushed(struct webhook *w)
{
	size_t i;

	if (!w->flushed)
		return;
	for (i = 0; i < w->ntargets; i++)
		if (w->targets[i].len || w->targets[i].batch)
			return;
	ev_timer_set(&w->flush_timer, 0., 0.);
	ev_timer_start(w->loop, &w->flush_timer);
}

static void wh_on_flushed(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct webhook *w = t->data;
	void (*done)(void *) = w->flushed;

	w->flushed = NULL;
	if (done)
		done(w->flushed_arg);
}

void webhook_flush(struct webhook *w, void (*done)(void *arg), void *arg)
{
	size_t i;

	w->flushed = done;
	w->flushed_arg = arg;
	w->interval = 0;
	log_info(NULL, "webhooks: delivering %llu queued events before stopping",
		 (unsigned long long)w->m->webhook_queued);
	for (i = 0; i < w->ntargets; i++) {
		ev_timer_stop(w->loop, &w->targets[i].timer);
		if (!w->targets[i].batch)
			wh_kick(&w->targets[i]);
		else if (!w->targets[i].posting)
			ev_feed_event(w->loop, &w->targets[i].timer, EV_TIMER);   /* retry now */
	}
	wh_check_flushed(w);
}

/* Start the next POST of tg if it has none and has events. */
static void wh_kick(struct wh_target *tg)
{
	if (tg->batch || !tg->len)
		return;
	if (!(tg->batch = wh_batch_take(tg))) {
		log_error(NULL, "webhook %s: out of memory making a batch", tg->label);
		return;
	}
	if (wh_post(tg) < 0) {
		wh_drop_batch(tg, "cannot start a request");
		wh_check_flushed(tg->w);
	}
}

/* A batch is due now if full or once batch_interval has passed (the timer). */
static void wh_schedule(struct wh_target *tg)
{
	if (tg->batch || !tg->len)
		return;
	if (tg->len >= tg->w->batch_max || tg->w->interval <= 0) {
		ev_timer_stop(tg->w->loop, &tg->timer);
		wh_kick(tg);
	} else if (!ev_is_active(&tg->timer)) {
		ev_timer_set(&tg->timer, tg->w->interval, 0.);
		ev_timer_start(tg->w->loop, &tg->timer);
	}
}

static void wh_on_target_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct wh_target *tg = t->data;

	if (tg->batch && !tg->posting) {
		if (wh_post(tg) < 0)       /* a retry's backoff is over */
			wh_drop_batch(tg, "cannot start a request");
		return;
	}
	wh_kick(tg);
}

/* A POST of tg finished with result rc and HTTP status code. */
static void wh_done(struct wh_target *tg, CURLcode rc, long code)
{
	struct webhook *w = tg->w;
	struct wh_batch *b = tg->batch;
	double now = ev_now(w->loop), delay;
	uint32_t i;

	tg->posting = 0;
	if (rc == CURLE_OK && code >= 200 && code < 300) {
		w->m->webhook_posts++;
		w->m->webhook_sent += b->n;
		for (i = 0; i < b->n; i++)
			metrics_observe(&w->m->webhook_latency, now - b->times[i]);
		wh_batch_free(b);
		tg->batch = NULL;
		wh_schedule(tg);
		wh_check_flushed(w);
		return;
	}
	w->m->webhook_failures++;
	if (b->attempt > w->max_retries) {
		char why[96];
		snprintf(why, sizeof(why), "%u attempts failed, the last: %s %ld", b->attempt,
			 rc == CURLE_OK ? "HTTP" : curl_easy_strerror(rc), rc == CURLE_OK ? code : 0L);
		wh_drop_batch(tg, why);
		wh_schedule(tg);
		wh_check_flushed(w);
		return;
	}
	/* Doubling backoff with up to 25% jitter, so that many nodes do not
	 * retry against a recovering receiver in step. */
	delay = w->backoff * (double)(1u << (b->attempt - 1 < 16 ? b->attempt - 1 : 16));
	if (delay > WH_BACKOFF_MAX)
		delay = WH_BACKOFF_MAX;
	delay *= 1.0 + 0.25 * ((double)(rand() & 1023) / 1024.0);
	log_debug(NULL, "webhook %s: POST failed (%s %ld); retry %u in %.2fs", tg->label,
		  rc == CURLE_OK ? "HTTP" : curl_easy_strerror(rc), code, b->attempt, delay);
	ev_timer_stop(w->loop, &tg->timer);
	ev_timer_set(&tg->timer, delay, 0.);
	ev_timer_start(w->loop, &tg->timer);
}

static void wh_check_done(struct webhook *w)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(w->multi, &left))) {
		struct wh_batch *b = NULL;
		long code = 0;
		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&b);
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
		if (b)
			wh_done(b->tg, msg->data.result, code);
	}
}

/* ---- libcurl on libev ------------------------------------------------------- */

static void wh_on_io(struct ev_loop *loop, ev_io *io, int revents)
{
	struct webhook *w = io->data;
	int running, flags = (revents & EV_READ ? CURL_CSELECT_IN : 0) |
			     (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);

	/* io may be freed inside (curl closes the socket): not used after. */
	curl_multi_socket_action(w->multi, io->fd, flags, &running);
	wh_check_done(w);
}

static void wh_on_curl_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct webhook *w = t->data;
	int running;

	curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	wh_check_done(w);
}

/* CURLMOPT_SOCKETFUNCTION: watch s for what curl asks, or stop (REMOVE). */
static int wh_on_socket(CURL *easy, curl_socket_t s, int what, void *arg, void *sockp)
{
	struct webhook *w = arg;
	ev_io *io = sockp;
	int events = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);

	if (what == CURL_POLL_REMOVE) {
		if (io) {
			ev_io_stop(w->loop, io);
			free(io);
			curl_multi_assign(w->multi, s, NULL);
		}
		return 0;
	}
	if (!io) {
		if (!(io = calloc(1, sizeof(*io))))
			return -1;
		ev_io_init(io, wh_on_io, s, events);
		io->data = w;
		curl_multi_assign(w->multi, s, io);
	} else {
		ev_io_stop(w->loop, io);
		ev_io_set(io, s, events);
	}
	ev_io_start(w->loop, io);
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: call back after ms (-1: no timer). */
static int wh_on_timer_set(CURLM *multi, long ms, void *arg)
{
	struct webhook *w = arg;

	ev_timer_stop(w->loop, &w->curl_timer);
	if (ms >= 0) {
		/* 0: "now", which must not be inside this callback. */
		ev_timer_set(&w->curl_timer, (double)ms / 1000.0, 0.);
		ev_timer_start(w->loop, &w->curl_timer);
	}
	return 0;
}

/* ---- events from the hub ---------------------------------------------------- */

/* Queue json (owned from here) for every URL, dropping the oldest of a full queue. */
static void wh_enqueue(struct webhook *w, struct msgbuf *json)
{
	double now = ev_now(w->loop);
	size_t i;

	for (i = 0; i < w->ntargets; i++) {
		struct wh_target *tg = &w->targets[i];
		struct wh_event *e;
		if (tg->len == w->queue_max) {
			e = &tg->ring[tg->head];
			msgbuf_unref(e->json);
			tg->head = (tg->head + 1) % tg->cap;
			tg->len--;
			w->m->webhook_queued--;
			w->m->webhook_dropped++;
		}
		if (tg->len == tg->cap) {
			/* Grow (unwrapping the ring) up to queue_max. */
			uint32_t cap = tg->cap ? tg->cap * 2 : 64, j;
			struct wh_event *nr;
			if (cap > w->queue_max)
				cap = w->queue_max;
			if (!(nr = malloc(sizeof(*nr) * cap))) {
				w->m->webhook_dropped++;
				continue;
			}
			for (j = 0; j < tg->len; j++)
				nr[j] = tg->ring[(tg->head + j) % tg->cap];
			free(tg->ring);
			tg->ring = nr;
			tg->cap = cap;
			tg->head = 0;
		}
		e = &tg->ring[(tg->head + tg->len) % tg->cap];
		e->t = now;
		e->json = msgbuf_ref(json);
		tg->len++;
		w->m->webhook_queued++;
		w->m->webhook_events++;
		wh_schedule(tg);
	}
	msgbuf_unref(json);
}

static int wh_begin(struct webhook *w, struct jsonw *jw, enum wh_type type, size_t hint)
{
	if (!(w->mask & (1u << type)))
		return 0;
	jsonw_init(jw, hint);
	jsonw_obj_open(jw);
	jsonw_kv_cstr(jw, "type", wh_type_names[type]);
	jsonw_kv_u64(jw, "ts", (uint64_t)(ev_now(w->loop) * 1000.0));
	return 1;
}

static void wh_finish(struct webhook *w, struct jsonw *jw)
{
	struct msgbuf *mb;

	jsonw_obj_close(jw);
	if ((mb = jsonw_finish(jw)))
		wh_enqueue(w, mb);
	else
		w->m->webhook_dropped++;
}

static void wh_ev_user(void *ctx, const char *name, int online)
{
	struct webhook *w = ctx;
	struct jsonw jw;

	if (!wh_begin(w, &jw, online ? WH_USER_ONLINE : WH_USER_OFFLINE, 96))
		return;
	jsonw_kv_cstr(&jw, "name", name);
	wh_finish(w, &jw);
}

static void wh_ev_presence(void *ctx, const char *room, const char *name, int join)
{
	struct webhook *w = ctx;
	struct jsonw jw;

	if (!wh_begin(w, &jw, join ? WH_JOIN : WH_LEAVE, 160))
		return;
	jsonw_kv_cstr(&jw, "room", room);
	jsonw_kv_cstr(&jw, "name", name);
	wh_finish(w, &jw);
}

static void wh_ev_message(void *ctx, const char *room, const struct hub_msg *m)
{
	struct webhook *w = ctx;
	struct jsonw jw;

	if (!wh_begin(w, &jw, WH_MESSAGE, 192 + m->body_len + m->body_len / 8))
		return;
	jsonw_kv_cstr(&jw, "room", room);
	jsonw_kv_u64(&jw, "seq", m->seq);
	jsonw_kv_cstr(&jw, "from", m->from);
	jsonw_kv_cstr(&jw, "id", m->id);
	jsonw_kv_str(&jw, "body", m->body, m->body_len);
	jsonw_kv_u64(&jw, "sent", m->ts);
	wh_finish(w, &jw);
}

static void wh_ev_direct(void *ctx, const char *to, const struct hub_msg *m)
{
	struct webhook *w = ctx;
	struct jsonw jw;

	if (!wh_begin(w, &jw, WH_DIRECT, 192 + m->body_len + m->body_len / 8))
		return;
	jsonw_kv_cstr(&jw, "to", to);
	jsonw_kv_cstr(&jw, "from", m->from);
	jsonw_kv_cstr(&jw, "id", m->id);
	jsonw_kv_str(&jw, "body", m->body, m->body_len);
	jsonw_kv_u64(&jw, "sent", m->ts);
	wh_finish(w, &jw);
}

/* ---- life --------------------------------------------------------------------- */

/* url without what may be secret (user:password@, ?query), for logs. */
static void wh_label(char *out, size_t cap, const char *url)
{
	const char *host = strstr(url, "://"), *at, *slash, *q;

	host = host ? host + 3 : url;
	slash = host + strcspn(host, "/?#");
	at = memchr(host, '@', (size_t)(slash - host));
	q = slash + strcspn(slash, "?#");
	snprintf(out, cap, "%.*s%.*s", (int)(host - url), url, (int)(q - (at ? at + 1 : host)),
		 at ? at + 1 : host);
}

static unsigned wh_mask(const struct config *cfg)
{
	unsigned mask = 0;
	size_t i;
	int t;

	if (!cfg->webhook_event_count)
		return (1u << WH_TYPES) - 1;
	for (i = 0; i < cfg->webhook_event_count; i++)
		for (t = 0; t < WH_TYPES; t++)
			if (strcmp(cfg->webhook_events[i], wh_type_names[t]) == 0)
				mask |= 1u << t;
	return mask;
}

int webhook_check(const struct config *cfg, char *err, size_t errlen)
{
	struct webhook *w;
	int rc;

	err[0] = '\0';
	if (!cfg->webhook_url_count)
		return 0;
	if (!(w = calloc(1, sizeof(*w)))) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	rc = wh_read_secret(w, cfg->webhook_secret_file, err, errlen);
	OPENSSL_cleanse(w->secret, sizeof(w->secret));
	free(w);
	return rc;
}

struct webhook *webhook_new(const struct config *cfg, struct ev_loop *loop, struct metrics *m,
			    char *err, size_t errlen)
{
	struct webhook *w;
	size_t i;

	err[0] = '\0';
	if (!cfg->webhook_url_count)
		return NULL;
	if (!(w = calloc(1, sizeof(*w))) ||
	    !(w->targets = calloc(cfg->webhook_url_count, sizeof(*w->targets)))) {
		free(w);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	w->loop = loop;
	w->m = m;
	if (wh_read_secret(w, cfg->webhook_secret_file, err, errlen) < 0) {
		webhook_free(w);
		return NULL;
	}
	snprintf(w->node, sizeof(w->node), "%s", cfg->node_id);
	w->mask = wh_mask(cfg);
	w->batch_max = (uint32_t)cfg->webhook_batch_max;
	w->queue_max = (uint32_t)cfg->webhook_queue_max;
	w->max_retries = (uint32_t)cfg->webhook_max_retries;
	w->interval = cfg->webhook_batch_interval;
	w->timeout = cfg->webhook_timeout;
	w->backoff = cfg->webhook_retry_backoff;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(w->multi = curl_multi_init())) {
		snprintf(err, errlen, "cannot initialise libcurl");
		webhook_free(w);
		return NULL;
	}
	curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, wh_on_socket);
	curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w);
	curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, wh_on_timer_set);
	curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w);
	ev_timer_init(&w->curl_timer, wh_on_curl_timer, 0., 0.);
	w->curl_timer.data = w;
	ev_timer_init(&w->flush_timer, wh_on_flushed, 0., 0.);
	w->flush_timer.data = w;
	for (i = 0; i < cfg->webhook_url_count; i++) {
		struct wh_target *tg = &w->targets[i];
		tg->w = w;
		ev_timer_init(&tg->timer, wh_on_target_timer, 0., 0.);
		tg->timer.data = tg;
		wh_label(tg->label, sizeof(tg->label), cfg->webhook_urls[i]);
		if (!(tg->url = strdup(cfg->webhook_urls[i]))) {
			snprintf(err, errlen, "out of memory");
			webhook_free(w);
			return NULL;
		}
		w->ntargets++;
	}
	m->webhooks_enabled = 1;
	log_info(NULL, "webhooks: %zu URLs, batches of up to %u events, queue %u events per URL",
		 w->ntargets, w->batch_max, w->queue_max);
	return w;
}

void webhook_attach(struct webhook *w, struct hub *hub)
{
	struct hub_events ev = { wh_ev_user, wh_ev_presence, wh_ev_message, wh_ev_direct, w };

	w->hub = hub;
	hub_set_events(hub, &ev);
}

void webhook_free(struct webhook *w)
{
	size_t i;
	uint32_t j;

	if (!w)
		return;
	if (w->hub)
		hub_set_events(w->hub, NULL);
	for (i = 0; i < w->ntargets; i++) {
		struct wh_target *tg = &w->targets[i];
		ev_timer_stop(w->loop, &tg->timer);
		wh_batch_free(tg->batch);
		for (j = 0; j < tg->len; j++)
			msgbuf_unref(tg->ring[(tg->head + j) % tg->cap].json);
		w->m->webhook_queued -= tg->len;
		free(tg->ring);
		free(tg->url);
	}
	if (w->multi) {
		/* Removing the handles above made curl close their sockets and
		 * free our watchers (CURL_POLL_REMOVE). */
		curl_multi_cleanup(w->multi);
		curl_global_cleanup();
	}
	ev_timer_stop(w->loop, &w->curl_timer);
	ev_timer_stop(w->loop, &w->flush_timer);
	OPENSSL_cleanse(w->secret, sizeof(w->secret));
	free(w->targets);
	free(w);
}
