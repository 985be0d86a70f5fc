/*
 * server.h - the libwebsockets glue: one lws context on chatd's libev loop,
 * HTTP endpoints (/healthz, /metrics, /), admission control, and per
 * connection state (timers, frame reassembly, the write path).
 *
 * It turns WebSocket frames into hub calls and hub output into frames; it
 * owns the hub. Every connection ends in conn_release(), which calls
 * hub_session_unregister() exactly once.
 */
#ifndef CHATD_SERVER_H
#define CHATD_SERVER_H

#include <ev.h>
#include <stddef.h>

#include "config.h"
#include "hub.h"
#include "metrics.h"

struct server;

/*
 * Create the lws context on loop, listen, and create the hub. cfg must stay
 * valid until server_reconfigure() replaces it or server_free(). fd_limit is
 * the process' open-files limit: connections that would not fit are refused.
 * On failure returns NULL with a one-line reason in err.
 */
struct server *server_new(struct ev_loop *loop, const struct config *cfg,
			  struct metrics *metrics, long fd_limit, char *err, size_t errlen);
/* Close every connection (shutdown paths run) and free everything. */
void server_free(struct server *srv);

/* Apply a reloaded config (live-changeable keys); cfg replaces the old pointer. */
void server_reconfigure(struct server *srv, const struct config *cfg);

/* Graceful shutdown: refuse new connections, flush every queue, close each
 * session with 1001. on_drained runs once no connection is left. */
void server_shutdown(struct server *srv, void (*on_drained)(void *), void *arg);

int server_port(const struct server *srv);
/* The port of the [api] listener (/metrics, /healthz), -1 when there is none. */
int server_api_port(const struct server *srv);
size_t server_connection_count(const struct server *srv);
struct hub *server_hub(struct server *srv);
/* The server API (api.h), NULL when api.keys_file is not set. */
struct api *server_api(struct server *srv);

#endif
