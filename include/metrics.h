/*
 * metrics.h - counters and gauges, rendered in the Prometheus text format.
 *
 * Counters are plain integers bumped by the module that sees the event (one
 * thread). Gauges are read at render time from their owners, so they can
 * never drift from the truth.
 */
#ifndef CHATD_METRICS_H
#define CHATD_METRICS_H

#include <stdint.h>

#include "msgbuf.h"
#include "proto.h"

enum metrics_refusal {
	METRICS_REFUSED_MAX_CONNECTIONS,
	METRICS_REFUSED_MAX_PER_IP,
	METRICS_REFUSED_ORIGIN,
	METRICS_REFUSED_SHUTTING_DOWN,
	METRICS_REFUSED_MAX_PENDING_PER_IP,   /* at accept, before any HTTP */
	METRICS_REFUSED_COUNT
};

/*
 * A Prometheus histogram with fixed buckets (metrics_bounds in metrics.c, in
 * seconds, from 0.5 ms to 10 s). count[i] holds the observations in bucket i
 * alone, the last one being +Inf; they are made cumulative when rendered, so
 * an observation costs a short scan and one increment.
 */
#define METRICS_BUCKETS 15
struct metrics_histogram {
	uint64_t count[METRICS_BUCKETS + 1];
	double sum;
};

void metrics_observe(struct metrics_histogram *h, double seconds);

/* Server API requests are counted by endpoint and HTTP status. */
enum metrics_api_ep {
	METRICS_API_PUBLISH, METRICS_API_DM, METRICS_API_DISCONNECT, METRICS_API_MEMBERS,
	METRICS_API_ONLINE, METRICS_API_HISTORY, METRICS_API_STATS, METRICS_API_OTHER,
	METRICS_API_EP_COUNT
};
#define METRICS_API_STATUSES 11   /* see metrics_api_statuses in metrics.c */
extern const char *const metrics_api_ep_names[METRICS_API_EP_COUNT];
extern const unsigned metrics_api_statuses[METRICS_API_STATUSES];
/* The index of an HTTP status among metrics_api_statuses (the last: other). */
int metrics_api_status_index(unsigned status);

struct metrics {
	uint64_t connections_total;       /* WebSocket connections accepted */
	uint64_t frames_in, frames_out;
	uint64_t socket_writes;           /* writes of queued frames to sockets */
	uint64_t partial_writes;          /* of those, taken only in part by the kernel */
	uint64_t messages_in;             /* accepted send + dm */
	uint64_t messages_out;            /* message + direct events queued */
	uint64_t slow_consumer_closes;
	uint64_t slow_consumer_drops;     /* message events dropped by drop_oldest */
	uint64_t typing_in;               /* typing signals let through */
	uint64_t typing_dropped;          /* typing signals not sent: rate or queue pressure */
	uint64_t markers_in;              /* read markers moved forward */
	uint64_t heartbeat_evictions;
	uint64_t handshake_timeouts;
	uint64_t rate_limited;
	uint64_t tokens_expired, tokens_refreshed;   /* sessions closed 4001; refresh accepted */
	uint64_t moderation_actions;                 /* kick ban unban mute unmute delete invite grant settings */
	uint64_t refused[METRICS_REFUSED_COUNT];
	uint64_t errors[PROTO_ERR_COUNT];
	uint64_t reloads, reload_failures;
	uint64_t rooms_idle;              /* gauge, kept by the hub: rooms with no use */
	uint64_t rooms_evicted;           /* idle rooms dropped from memory (limits.max_rooms) */
	uint64_t rooms_refused;           /* joins refused: max_rooms rooms all in use */
	/* Time message and direct events waited in a recipient's send queue:
	 * from the loop iteration that queued them to the write that took them. */
	struct metrics_histogram delivery;
	/* storage engine */
	uint64_t storage_commits;         /* transactions committed */
	uint64_t storage_committed;       /* messages written */
	uint64_t storage_failures;        /* transactions that failed (sends got unavailable) */
	uint64_t storage_pruned;          /* messages removed by retention */
	double storage_commit_seconds;    /* sum of commit durations */
	double storage_commit_max;        /* longest commit so far */
	struct metrics_histogram storage_commit;   /* the same durations, bucketed */
	int storage_enabled;
	/* cluster engine */
	int cluster_enabled;
	int redis_up;                     /* both Redis connections ready */
	uint64_t redis_reconnects;        /* connection attempts after a loss */
	uint64_t redis_sends;             /* send scripts answered */
	double redis_send_seconds;        /* their summed latency */
	double redis_send_max;
	uint64_t redis_resyncs;           /* rooms re-read after a gap or reconnect */
	uint64_t redis_failures;          /* commands that failed (answered unavailable) */
	uint64_t cluster_node_losses;     /* other nodes found dead */
	/* server API */
	uint64_t api_requests[METRICS_API_EP_COUNT][METRICS_API_STATUSES];
	/* webhooks */
	int webhooks_enabled;
	uint64_t webhook_events;          /* events queued for delivery (per URL) */
	uint64_t webhook_sent;            /* events delivered (2xx) */
	uint64_t webhook_posts;           /* POSTs answered 2xx */
	uint64_t webhook_failures;        /* POSTs that failed (error, timeout, non-2xx) */
	uint64_t webhook_retries;         /* POSTs that were retries */
	uint64_t webhook_dropped;         /* events dropped: queue full or retries exhausted */
	uint64_t webhook_queued;          /* gauge, kept by webhook.c: events waiting */
	/* From an event's creation to the 2xx that delivered it. */
	struct metrics_histogram webhook_latency;
};

struct metrics_gauges {
	uint64_t connections;
	uint64_t pending;                 /* accepted, not a WebSocket (yet) */
	uint64_t sessions;
	uint64_t rooms;
	uint64_t queue_bytes;
	uint64_t queued_messages;
	double start_time;                /* unix seconds */
	uint64_t connections_limit;       /* max_connections, as far as it fits in the fds */
	uint64_t queue_bytes_limit;       /* limits.total_queue_bytes */
	int64_t open_fds, max_fds;        /* -1 when unknown */
};

/* Open file descriptors of this process (a scan of /proc/self/fd, bounded by
 * the open-files limit), or -1 when that cannot be read. */
int64_t metrics_open_fds(void);

/* Render into a new msgbuf (owned by the caller); NULL on ENOMEM. */
struct msgbuf *metrics_render(const struct metrics *m, const struct metrics_gauges *g,
			      const char *node_id);

#endif
