/*
 * webhook.h - chat events POSTed to applications (docs/api.md#webhooks).
 *
 * The hub reports events (hub_events in hub_api.h: a user online/offline,
 * join/leave, a message accepted, a direct message); each configured URL
 * gets those of the configured types, batched (a JSON object with an
 * "events" array) and signed: X-Chatd-Signature: sha256=<hex HMAC-SHA256
 * of the body with the webhooks.secret_file key>.
 *
 * Delivery is libcurl's multi-socket interface on chatd's libev loop:
 * nothing waits for a receiver. Per URL one POST at a time; a failed POST
 * (error, timeout, not 2xx) is retried with doubling backoff up to
 * webhooks.max_retries, then dropped. Each URL queues at most
 * webhooks.queue_max events; beyond that the oldest are dropped. Both
 * drops are counted (chatd_webhook_dropped_total).
 */
#ifndef CHATD_WEBHOOK_H
#define CHATD_WEBHOOK_H

#include <ev.h>
#include <stddef.h>

#include "config.h"
#include "hub.h"
#include "metrics.h"

struct webhook;

/* NULL with a one-line reason in err (or with err empty when cfg has no
 * webhooks.urls: nothing to do). Reads webhooks.secret_file, which must be
 * private (no group/other bits). */
struct webhook *webhook_new(const struct config *cfg, struct ev_loop *loop, struct metrics *m,
			    char *err, size_t errlen);
/* The checks webhook_new makes of the files cfg names (the secret), for
 * --check-config and before anything starts: 0, or -1 with err set. */
int webhook_check(const struct config *cfg, char *err, size_t errlen);
/* Report hub's events to w from now on (hub_set_events). */
void webhook_attach(struct webhook *w, struct hub *hub);
/* Shutdown: send what is queued at once (no batch_interval wait) and call
 * done once nothing is queued or in flight any more (retries still apply;
 * the caller bounds the wait). done runs from the loop, never inside. */
void webhook_flush(struct webhook *w, void (*done)(void *arg), void *arg);
/* Detach from the hub, abort what is in flight, drop what is queued. */
void webhook_free(struct webhook *w);

#endif
