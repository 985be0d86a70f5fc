/*
 * api.h - the server HTTP API on the [api] listener (docs/api.md): routing,
 * authentication (Bearer keys, apikeys.h), request bodies, JSON answers.
 * What a request does to the chat is the hub's (hub_api.h); this module is
 * the HTTP side, on libwebsockets.
 *
 * server.c hands the API's HTTP callbacks of each connection here with a
 * pointer to one void * of per-connection state, which this module owns
 * and frees in api_release() (the connection's one release path).
 */
#ifndef CHATD_API_H
#define CHATD_API_H

#include <stddef.h>

#include "apikeys.h"
#include "config.h"
#include "hub.h"
#include "metrics.h"

struct api;
struct lws;
struct server;

/* The API of srv's hub; NULL on ENOMEM. Answers requests through the hub's
 * API sink (hub_api_set_sink), so one api per hub. */
struct api *api_new(struct server *srv, struct hub *hub, const struct config *cfg,
		    struct metrics *m);
void api_free(struct api *a);
void api_reconfigure(struct api *a, const struct config *cfg);
/* The keys requests must present; borrowed (replace before freeing them).
 * NULL: every request gets 401. */
void api_set_keys(struct api *a, const struct apikeys *keys);

/* Is uri an API path (/api/...)? */
int api_path(const char *uri);
/* LWS_CALLBACK_HTTP for an API path; 0, or -1 to close. */
int api_http(struct api *a, struct lws *wsi, void **state, const char *uri);
/* LWS_CALLBACK_HTTP_BODY and _COMPLETION. */
int api_body(struct api *a, struct lws *wsi, void **state, const void *in, size_t len);
int api_body_done(struct api *a, struct lws *wsi, void **state);
/* LWS_CALLBACK_HTTP_WRITEABLE: 1 if the connection has no API answer
 * (not ours), else 0 or -1 to close. */
int api_writeable(struct api *a, struct lws *wsi, void **state);
/* The connection is going: forget its request (an answer still on its way
 * from an engine is dropped). */
void api_release(struct api *a, void **state);

#endif
