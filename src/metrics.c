#include "metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "jsonw.h"

static const char *const metrics_refusal_names[METRICS_REFUSED_COUNT] = {
	"max_connections", "max_connections_per_ip", "origin", "shutting_down",
	"max_pending_per_ip",
};

static const double metrics_bounds[METRICS_BUCKETS] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 7.5, 10,
};

void metrics_observe(struct metrics_histogram *h, double seconds)
{
	int i = 0;

	if (seconds < 0)   /* the wall clock stepped back */
		seconds = 0;
	while (i < METRICS_BUCKETS && seconds > metrics_bounds[i])
		i++;
	h->count[i]++;
	h->sum += seconds;
}

int64_t metrics_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int64_t n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;   /* not the one opendir holds */
}

/* printf into the writer's buffer as plain text (the writer only grows it). */
static void metrics_printf(struct jsonw *w, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void metrics_printf(struct jsonw *w, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	jsonw_append(w, line, (size_t)n);
}

static void metrics_one(struct jsonw *w, const char *name, const char *type,
			const char *help, uint64_t v)
{
	metrics_printf(w, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n",
		       name, help, name, type, name, v);
}

static void metrics_histogram(struct jsonw *w, const char *name, const char *help,
			      const struct metrics_histogram *h)
{
	uint64_t cum = 0;
	int i;

	metrics_printf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (i = 0; i < METRICS_BUCKETS; i++) {
		cum += h->count[i];
		metrics_printf(w, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, metrics_bounds[i], cum);
	}
	cum += h->count[METRICS_BUCKETS];
	metrics_printf(w, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n%s_sum %.6f\n%s_count %" PRIu64 "\n",
		       name, cum, name, h->sum, name, cum);
}

/* A gauge that may be unknown (-1): left out then, as Prometheus expects. */
static void metrics_known(struct jsonw *w, const char *name, const char *help, int64_t v)
{
	if (v >= 0)
		metrics_one(w, name, "gauge", help, (uint64_t)v);
}

const char *const metrics_api_ep_names[METRICS_API_EP_COUNT] = {
	"publish", "dm", "disconnect", "members", "online", "history", "stats", "other",
};
/* 0: any other status. */
const unsigned metrics_api_statuses[METRICS_API_STATUSES] = {
	200, 400, 401, 403, 404, 405, 409, 413, 500, 503, 0,
};

int metrics_api_status_index(unsigned status)
{
	int i;

	for (i = 0; i < METRICS_API_STATUSES - 1; i++)
		if (metrics_api_statuses[i] == status)
			return i;
	return METRICS_API_STATUSES - 1;
}

/* Only the (endpoint, status) pairs seen so far: 88 zero lines help nobody. */
static void metrics_api(struct jsonw *w, const struct metrics *m)
{
	int e, s;

	metrics_printf(w, "# HELP chatd_api_requests_total Server API requests, by endpoint and HTTP status.\n"
		       "# TYPE chatd_api_requests_total counter\n");
	for (e = 0; e < METRICS_API_EP_COUNT; e++)
		for (s = 0; s < METRICS_API_STATUSES; s++) {
			char status[16] = "other";
			if (!m->api_requests[e][s])
				continue;
			if (metrics_api_statuses[s])
				snprintf(status, sizeof(status), "%u", metrics_api_statuses[s]);
			metrics_printf(w, "chatd_api_requests_total{endpoint=\"%s\",status=\"%s\"} %" PRIu64 "\n",
				       metrics_api_ep_names[e], status, m->api_requests[e][s]);
		}
}

static void metrics_webhooks(struct jsonw *w, const struct metrics *m)
{
	metrics_one(w, "chatd_webhook_events_total", "counter", "Webhook events queued for delivery (per URL).", m->webhook_events);
	metrics_one(w, "chatd_webhook_sent_total", "counter", "Webhook events delivered (answered 2xx).", m->webhook_sent);
	metrics_one(w, "chatd_webhook_posts_total", "counter", "Webhook POSTs answered 2xx.", m->webhook_posts);
	metrics_one(w, "chatd_webhook_failures_total", "counter", "Webhook POSTs that failed (error, timeout, non-2xx).", m->webhook_failures);
	metrics_one(w, "chatd_webhook_retries_total", "counter", "Webhook POSTs that were retries of a failed one.", m->webhook_retries);
	metrics_one(w, "chatd_webhook_dropped_total", "counter", "Webhook events dropped: queue full or retries exhausted.", m->webhook_dropped);
	metrics_one(w, "chatd_webhook_queued_events", "gauge", "Webhook events waiting for delivery.", m->webhook_queued);
	metrics_histogram(w, "chatd_webhook_delivery_seconds", "From a webhook event to the 2xx that delivered it.", &m->webhook_latency);
}

struct msgbuf *metrics_render(const struct metrics *m, const struct metrics_gauges *g,
			      const char *node_id)
{
	struct jsonw w;
	int i;

	jsonw_init(&w, 4096);
	metrics_printf(&w, "# HELP chatd_info Build and node information.\n# TYPE chatd_info gauge\n"
		       "chatd_info{version=\"%s\",node=\"%s\"} 1\n", CHATD_VERSION, node_id);
	metrics_printf(&w, "# HELP chatd_start_time_seconds Unix time the process started.\n"
		       "# TYPE chatd_start_time_seconds gauge\nchatd_start_time_seconds %.3f\n",
		       g->start_time);
	metrics_one(&w, "chatd_connections", "gauge", "Open WebSocket connections.", g->connections);
	metrics_one(&w, "chatd_connections_pending", "gauge",
		    "Connections in their TLS handshake, request head or plain HTTP.", g->pending);
	metrics_one(&w, "chatd_sessions", "gauge", "Sessions that completed hello.", g->sessions);
	metrics_one(&w, "chatd_rooms", "gauge", "Rooms held in memory.", g->rooms);
	metrics_one(&w, "chatd_rooms_idle", "gauge", "Rooms held in memory with no member and nothing pending: evicted first.", m->rooms_idle);
	metrics_one(&w, "chatd_rooms_evicted_total", "counter", "Idle rooms dropped from memory to stay within limits.max_rooms.", m->rooms_evicted);
	metrics_one(&w, "chatd_rooms_refused_total", "counter", "Joins of a new room refused: limits.max_rooms rooms were all in use.", m->rooms_refused);
	metrics_one(&w, "chatd_queue_bytes", "gauge", "Bytes held in all send queues.", g->queue_bytes);
	metrics_one(&w, "chatd_queue_messages", "gauge", "Frames held in all send queues.", g->queued_messages);
	metrics_one(&w, "chatd_queue_bytes_limit", "gauge", "limits.total_queue_bytes: the cap on chatd_queue_bytes.", g->queue_bytes_limit);
	metrics_one(&w, "chatd_connections_limit", "gauge", "WebSocket connections accepted at most (max_connections, as far as the open-files limit allows).", g->connections_limit);
	metrics_known(&w, "process_open_fds", "Open file descriptors.", g->open_fds);
	metrics_known(&w, "process_max_fds", "The open-files limit (RLIMIT_NOFILE).", g->max_fds);
	metrics_histogram(&w, "chatd_delivery_seconds", "Time message and direct events waited in a recipient's send queue, until written to its socket.", &m->delivery);
	metrics_one(&w, "chatd_connections_total", "counter", "WebSocket connections accepted.", m->connections_total);
	metrics_one(&w, "chatd_frames_in_total", "counter", "Text frames received.", m->frames_in);
	metrics_one(&w, "chatd_frames_out_total", "counter", "Frames written to clients.", m->frames_out);
	metrics_one(&w, "chatd_socket_writes_total", "counter", "Writes of queued frames to client sockets (frames_out / this = frames per write).", m->socket_writes);
	metrics_one(&w, "chatd_partial_writes_total", "counter", "Writes the kernel took only in part: a client or its network is slower than chatd.", m->partial_writes);
	metrics_one(&w, "chatd_messages_in_total", "counter", "Messages accepted (send and dm).", m->messages_in);
	metrics_one(&w, "chatd_messages_out_total", "counter", "Message and direct events queued to recipients.", m->messages_out);
	metrics_one(&w, "chatd_slow_consumer_closes_total", "counter", "Sessions closed because their send queue was full.", m->slow_consumer_closes);
	metrics_one(&w, "chatd_slow_consumer_drops_total", "counter", "Queued message events dropped by the drop_oldest policy.", m->slow_consumer_drops);
	metrics_one(&w, "chatd_typing_total", "counter", "Typing signals let through.", m->typing_in);
	metrics_one(&w, "chatd_typing_dropped_total", "counter", "Typing signals not sent to someone: over the session's rate or a half-full queue.", m->typing_dropped);
	metrics_one(&w, "chatd_read_markers_total", "counter", "Read markers moved forward.", m->markers_in);
	metrics_one(&w, "chatd_heartbeat_evictions_total", "counter", "Connections closed for missing heartbeats.", m->heartbeat_evictions);
	metrics_one(&w, "chatd_handshake_timeouts_total", "counter", "Connections closed for not sending hello in time.", m->handshake_timeouts);
	metrics_one(&w, "chatd_rate_limited_total", "counter", "Commands refused by the rate limit.", m->rate_limited);
	metrics_one(&w, "chatd_tokens_expired_total", "counter", "Sessions closed (4001) because their token ended without a refresh.", m->tokens_expired);
	metrics_one(&w, "chatd_tokens_refreshed_total", "counter", "Token refreshes accepted.", m->tokens_refreshed);
	metrics_one(&w, "chatd_moderation_actions_total", "counter", "Moderation commands and room settings accepted.", m->moderation_actions);
	metrics_one(&w, "chatd_reloads_total", "counter", "Successful configuration reloads.", m->reloads);
	metrics_one(&w, "chatd_reload_failures_total", "counter", "Configuration reloads refused (old config kept).", m->reload_failures);
	if (m->storage_enabled) {
		metrics_one(&w, "chatd_storage_commits_total", "counter", "Storage transactions committed.", m->storage_commits);
		metrics_one(&w, "chatd_storage_messages_total", "counter", "Messages written to storage.", m->storage_committed);
		metrics_one(&w, "chatd_storage_failures_total", "counter", "Storage transactions that failed (their sends got unavailable).", m->storage_failures);
		metrics_one(&w, "chatd_storage_pruned_total", "counter", "Messages removed by retention.", m->storage_pruned);
		metrics_printf(&w, "# HELP chatd_storage_commit_seconds_total Time spent in storage transactions.\n"
			       "# TYPE chatd_storage_commit_seconds_total counter\nchatd_storage_commit_seconds_total %.6f\n"
			       "# HELP chatd_storage_commit_seconds_max Longest storage transaction so far.\n"
			       "# TYPE chatd_storage_commit_seconds_max gauge\nchatd_storage_commit_seconds_max %.6f\n",
			       m->storage_commit_seconds, m->storage_commit_max);
		metrics_histogram(&w, "chatd_storage_commit_duration_seconds", "Storage transactions by duration (the event loop is stalled meanwhile).", &m->storage_commit);
	}
	if (m->cluster_enabled) {
		metrics_one(&w, "chatd_redis_up", "gauge", "1 when both Redis connections are ready.", (uint64_t)m->redis_up);
		metrics_one(&w, "chatd_redis_reconnects_total", "counter", "Redis reconnection attempts after a loss.", m->redis_reconnects);
		metrics_one(&w, "chatd_redis_failures_total", "counter", "Redis commands that failed (sends answered unavailable).", m->redis_failures);
		metrics_one(&w, "chatd_redis_resyncs_total", "counter", "Rooms re-read from Redis after a gap or a reconnect.", m->redis_resyncs);
		metrics_one(&w, "chatd_cluster_node_losses_total", "counter", "Other nodes found dead (heartbeat key expired).", m->cluster_node_losses);
		metrics_printf(&w, "# HELP chatd_redis_publish_seconds Latency of the send script (store + publish).\n"
			       "# TYPE chatd_redis_publish_seconds summary\n"
			       "chatd_redis_publish_seconds_sum %.6f\nchatd_redis_publish_seconds_count %" PRIu64 "\n"
			       "# HELP chatd_redis_publish_seconds_max Slowest send script so far.\n"
			       "# TYPE chatd_redis_publish_seconds_max gauge\nchatd_redis_publish_seconds_max %.6f\n",
			       m->redis_send_seconds, m->redis_sends, m->redis_send_max);
	}
	metrics_printf(&w, "# HELP chatd_connections_refused_total Connections refused at accept or upgrade, by reason.\n"
		       "# TYPE chatd_connections_refused_total counter\n");
	for (i = 0; i < METRICS_REFUSED_COUNT; i++)
		metrics_printf(&w, "chatd_connections_refused_total{reason=\"%s\"} %" PRIu64 "\n",
			       metrics_refusal_names[i], m->refused[i]);
	metrics_printf(&w, "# HELP chatd_errors_total Error replies sent, by code.\n"
		       "# TYPE chatd_errors_total counter\n");
	for (i = 1; i < PROTO_ERR_COUNT; i++)
		metrics_printf(&w, "chatd_errors_total{code=\"%s\"} %" PRIu64 "\n",
			       proto_err_name((enum proto_err)i), m->errors[i]);
	metrics_api(&w, m);
	if (m->webhooks_enabled)
		metrics_webhooks(&w, m);
	return jsonw_finish(&w);
}
