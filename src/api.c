/*
 * api.c - the server HTTP API (api.h, docs/api.md).
 *
 * One request per connection at a time (HTTP/1.1 keep-alive: one after
 * the other). Its state, struct api_req, hangs off the connection and is
 * freed in api_release only. A request that waits for the hub (publish,
 * dm) sits in a table by request number; the hub's answer finds it there,
 * or finds nothing if the client went away meanwhile. The answer is
 * written from the writable callback: headers first, the body on the next
 * one, as server.c writes its own HTTP answers.
 */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <libwebsockets.h>
#include <uthash.h>

#include "hub_api.h"
#include "jsonw.h"
#include "log.h"
#include "proto.h"
#include "rng.h"
#include "server.h"

/* A request waiting for the hub is given up after this long (seconds). */
#define API_TIMEOUT 30

enum api_stage { API_READING, API_WAITING, API_HEADERS, API_BODY };

struct api_req {
	struct api *a;
	struct lws *wsi;
	uint64_t num;                  /* != 0: in a->waiting */
	enum metrics_api_ep ep;
	enum api_stage stage;
	char *body;                    /* the request body, NUL-terminated */
	size_t len, cap;
	int too_large;
	unsigned status;
	struct msgbuf *resp;
	int close_after;               /* the rest of the request was not read */
	UT_hash_handle hh;
};

struct api {
	struct server *srv;
	struct hub *hub;
	struct metrics *m;
	const struct config *cfg;
	const struct apikeys *keys;
	struct api_req *waiting;       /* by num */
	uint64_t rng;
};

static const struct {
	const char *path;
	enum metrics_api_ep ep;
	int post;
} api_routes[] = {
	{ "/api/publish", METRICS_API_PUBLISH, 1 },
	{ "/api/dm", METRICS_API_DM, 1 },
	{ "/api/disconnect", METRICS_API_DISCONNECT, 1 },
	{ "/api/members", METRICS_API_MEMBERS, 0 },
	{ "/api/online", METRICS_API_ONLINE, 0 },
	{ "/api/history", METRICS_API_HISTORY, 0 },
	{ "/api/stats", METRICS_API_STATS, 0 },
};

int api_path(const char *uri)
{
	return strncmp(uri, "/api/", 5) == 0 || strcmp(uri, "/api") == 0;
}

/* ---- answers ------------------------------------------------------------ */

static unsigned api_http_status(enum proto_err e)
{
	switch (e) {
	case PROTO_OK: return 200;
	case PROTO_ERR_BAD_REQUEST: return 400;
	case PROTO_ERR_NOT_AUTHENTICATED: return 401;
	case PROTO_ERR_FORBIDDEN: return 403;
	case PROTO_ERR_NOT_FOUND: return 404;
	case PROTO_ERR_CONFLICT: return 409;
	case PROTO_ERR_RATE_LIMITED: return 429;
	case PROTO_ERR_TOO_LARGE: return 413;
	case PROTO_ERR_UNAVAILABLE: return 503;
	default: return 500;
	}
}

/* Queue the answer (body: owned from here on; NULL = out of memory). */
static void api_respond(struct api_req *q, unsigned status, struct msgbuf *body)
{
	if (q->num) {
		HASH_DEL(q->a->waiting, q);
		q->num = 0;
	}
	if (!body) {
		status = 500;
		body = msgbuf_from("{\"error\":\"internal\",\"message\":\"out of memory\"}\n", 48);
	}
	q->status = status;
	msgbuf_unref(q->resp);
	q->resp = body;
	q->stage = API_HEADERS;
	q->a->m->api_requests[q->ep][metrics_api_status_index(status)]++;
	lws_callback_on_writable(q->wsi);
}

static void api_error(struct api_req *q, unsigned status, const char *code, const char *message)
{
	struct jsonw w;

	jsonw_init(&w, 96 + strlen(message));
	jsonw_obj_open(&w);
	jsonw_kv_cstr(&w, "error", code);
	jsonw_kv_cstr(&w, "message", message);
	jsonw_obj_close(&w);
	jsonw_append(&w, "\n", 1);
	api_respond(q, status, jsonw_finish(&w));
}

static void api_error_code(struct api_req *q, enum proto_err e, const char *message)
{
	api_error(q, api_http_status(e), proto_err_name(e), message);
}

/* Finish w (an open object) and answer 200 with it. */
static void api_ok(struct api_req *q, struct jsonw *w)
{
	jsonw_obj_close(w);
	jsonw_append(w, "\n", 1);
	api_respond(q, 200, jsonw_finish(w));
}

/* The hub's answer to a publish or a dm. */
static void api_on_done(void *ctx, uint64_t num, enum proto_err status, const char *why,
			const char *room, uint64_t seq)
{
	struct api *a = ctx;
	struct api_req *q = NULL;
	struct jsonw w;

	HASH_FIND(hh, a->waiting, &num, sizeof(num), q);
	if (!q)
		return;            /* the client went away */
	if (status != PROTO_OK) {
		api_error_code(q, status, why ? why : "failed");
		return;
	}
	jsonw_init(&w, 128);
	jsonw_obj_open(&w);
	if (room) {
		jsonw_kv_cstr(&w, "room", room);
		jsonw_kv_u64(&w, "seq", seq);
	} else {
		jsonw_key(&w, "ok");
		jsonw_bool(&w, 1);
	}
	api_ok(q, &w);
}

/* ---- requests ----------------------------------------------------------- */

static int api_authorized(struct api *a, struct lws *wsi)
{
	char hdr[APIKEYS_MAX_LEN + 32];
	int n = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
	int ok;

	if (n <= 7 || n >= (int)sizeof(hdr) || !a->keys)
		return 0;
	if (lws_hdr_copy(wsi, hdr, sizeof(hdr), WSI_TOKEN_HTTP_AUTHORIZATION) != n ||
	    strncasecmp(hdr, "Bearer ", 7) != 0)
		return 0;
	ok = apikeys_check(a->keys, hdr + 7, (size_t)n - 7);
	memset(hdr, 0, sizeof(hdr));
	return ok;
}

/* A JSON object from the request body, or NULL (answered 400). */
static cJSON *api_json(struct api_req *q)
{
	const char *why;
	cJSON *j;

	if (!q->len) {
		api_error(q, 400, "bad_request", "the body must be a JSON object");
		return NULL;
	}
	if ((why = proto_json_strict(q->body, q->len))) {
		api_error(q, 400, "bad_request", why);
		return NULL;
	}
	j = cJSON_ParseWithLength(q->body, q->len);
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		api_error(q, 400, "bad_request", j ? "the body must be a JSON object" : "out of memory");
		return NULL;
	}
	return j;
}

/* A string member: its value, def when absent, or NULL (answered 400). */
static const char *api_str(struct api_req *q, const cJSON *j, const char *key, const char *def)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
	char msg[96];

	if (!v && def)
		return def;
	if (!cJSON_IsString(v) || !v->valuestring) {
		snprintf(msg, sizeof(msg), "%s must be a string", key);
		api_error(q, 400, "bad_request", msg);
		return NULL;
	}
	return v->valuestring;
}

/* Park q until the hub answers request num. */
static void api_wait(struct api_req *q, uint64_t num)
{
	q->num = num;
	q->stage = API_WAITING;
	HASH_ADD(hh, q->a->waiting, num, sizeof(q->num), q);
}

/* publish and dm: the hub answers later (or at once, into the table). */
static void api_send(struct api_req *q, int dm)
{
	struct api *a = q->a;
	const char *target, *from, *id, *body;
	char gen[PROTO_ID_MAX + 1];
	uint64_t num;
	cJSON *j = api_json(q);

	if (!j)
		return;
	snprintf(gen, sizeof(gen), "api-%016llx%016llx", (unsigned long long)rng_next(&a->rng),
		 (unsigned long long)rng_next(&a->rng));
	if (!(target = api_str(q, j, dm ? "to" : "room", NULL)) ||
	    !(from = api_str(q, j, "from", HUB_API_SYSTEM)) || !(id = api_str(q, j, "id", gen)) ||
	    !(body = api_str(q, j, "body", NULL))) {
		cJSON_Delete(j);
		return;
	}
	num = hub_api_request(a->hub);
	api_wait(q, num);
	if (dm)
		hub_api_dm(a->hub, num, target, from, id, body, strlen(body));
	else
		hub_api_publish(a->hub, num, target, from, id, body, strlen(body));
	cJSON_Delete(j);
}

static int api_close_code_ok(double code)
{
	return code == 1000 || code == 1001 || code == 1008 || (code >= 3000 && code <= 4999);
}

static void api_disconnect(struct api_req *q)
{
	const char *name, *reason;
	const cJSON *code;
	double c = HUB_API_CLOSE_DEFAULT;
	uint32_t n;
	struct jsonw w;
	cJSON *j = api_json(q);

	if (!j)
		return;
	if (!(name = api_str(q, j, "name", NULL)) ||
	    !(reason = api_str(q, j, "reason", "disconnected by the server")))
		goto out;
	code = cJSON_GetObjectItemCaseSensitive(j, "code");
	if (code && (!cJSON_IsNumber(code) || !api_close_code_ok(code->valuedouble) ||
		     code->valuedouble != (double)(int)code->valuedouble)) {
		api_error(q, 400, "bad_request", "code must be 1000, 1001, 1008 or 3000..4999");
		goto out;
	}
	if (code)
		c = code->valuedouble;
	if (!proto_valid_name(name, strlen(name))) {
		api_error(q, 400, "bad_request", "name must be 1..32 bytes of [A-Za-z0-9_.-]");
		goto out;
	}
	if (strlen(reason) > HUB_API_REASON_MAX) {
		api_error(q, 400, "bad_request", "reason must be at most 63 bytes");
		goto out;
	}
	if (hub_api_kick(q->a->hub, name, (int)c, reason, &n) != PROTO_OK) {
		char msg[128];
		snprintf(msg, sizeof(msg), "closed %u sessions on this node; the other nodes could not be "
			 "told (cluster unavailable)", n);
		api_error(q, 503, "unavailable", msg);
		goto out;
	}
	log_info(NULL, "api: disconnect %s (%d): %u sessions here", name, (int)c, n);
	jsonw_init(&w, 96);
	jsonw_obj_open(&w);
	jsonw_kv_cstr(&w, "name", name);
	jsonw_kv_u64(&w, "closed", n);
	api_ok(q, &w);
out:
	cJSON_Delete(j);
}

/* A query argument into buf (NUL-terminated, urldecoded by lws); NULL if absent. */
static const char *api_arg(struct lws *wsi, const char *name, char *buf, int len)
{
	return lws_get_urlarg_by_name(wsi, name, buf, len);
}

/* A numeric query argument: 0 absent, 1 set, -1 bad (answered 400). */
static int api_arg_u64(struct api_req *q, const char *name, uint64_t *v)
{
	char buf[64], msg[96], *end;
	const char *s = api_arg(q->wsi, name, buf, sizeof(buf));

	if (!s)
		return 0;
	if (*s < '0' || *s > '9' || (*v = strtoull(s, &end, 10), *end)) {
		snprintf(msg, sizeof(msg), "%.*s must be a non-negative integer", (int)strlen(name) - 1, name);
		api_error(q, 400, "bad_request", msg);
		return -1;
	}
	return 1;
}

/* The room= argument, checked; NULL if missing or bad (answered 400). */
static const char *api_room_arg(struct api_req *q, char *buf, int len)
{
	const char *room = api_arg(q->wsi, "room=", buf, len);

	if (!room || !proto_valid_room(room, strlen(room))) {
		api_error(q, 400, "bad_request", "room= must be 1..64 bytes of [A-Za-z0-9_.:-]");
		return NULL;
	}
	return room;
}

static void api_members(struct api_req *q)
{
	char buf[PROTO_ROOM_MAX + 16];
	const char *room = api_room_arg(q, buf, sizeof(buf));
	struct jsonw w;

	if (!room)
		return;
	jsonw_init(&w, 1024);
	jsonw_obj_open(&w);
	jsonw_kv_cstr(&w, "room", room);
	jsonw_key(&w, "names");
	hub_api_members(q->a->hub, room, &w);
	api_ok(q, &w);
}

static void api_online(struct api_req *q)
{
	struct jsonw w;
	uint64_t n;

	jsonw_init(&w, 4096);
	jsonw_obj_open(&w);
	jsonw_key(&w, "names");
	n = hub_api_online(q->a->hub, &w);
	jsonw_kv_u64(&w, "count", n);
	api_ok(q, &w);
}

static void api_history(struct api_req *q)
{
	char buf[PROTO_ROOM_MAX + 16];
	const char *room = api_room_arg(q, buf, sizeof(buf)), *why = "";
	uint64_t after = 0, before = 0, limit = PROTO_HISTORY_DEFAULT;
	int has_after, has_before, has_limit;
	enum proto_err rc;
	struct jsonw w;

	if (!room || (has_after = api_arg_u64(q, "after=", &after)) < 0 ||
	    (has_before = api_arg_u64(q, "before=", &before)) < 0 ||
	    (has_limit = api_arg_u64(q, "limit=", &limit)) < 0)
		return;
	if (has_after && has_before) {
		api_error(q, 400, "bad_request", "give after= or before=, not both");
		return;
	}
	if (limit < 1 || limit > PROTO_HISTORY_MAX) {
		api_error(q, 400, "bad_request", "limit= must be 1..500");
		return;
	}
	jsonw_init(&w, 4096);
	jsonw_obj_open(&w);
	jsonw_kv_cstr(&w, "room", room);
	jsonw_key(&w, "messages");
	rc = hub_history_range(q->a->hub, room, has_after, after, has_before, before,
			       (unsigned)limit, &w, &why);
	if (rc != PROTO_OK) {
		jsonw_discard(&w);
		api_error_code(q, rc, why);
		return;
	}
	api_ok(q, &w);
}

static void api_stats(struct api_req *q)
{
	struct hub *h = q->a->hub;
	struct jsonw w;

	jsonw_init(&w, 256);
	jsonw_obj_open(&w);
	jsonw_kv_cstr(&w, "node", q->a->cfg->node_id);
	jsonw_kv_u64(&w, "connections", server_connection_count(q->a->srv));
	jsonw_kv_u64(&w, "sessions", hub_named_session_count(h));
	jsonw_kv_u64(&w, "rooms", hub_room_count(h));
	jsonw_kv_u64(&w, "queue_bytes", hub_queue_bytes(h));
	jsonw_kv_u64(&w, "queued_messages", hub_queue_messages(h));
	api_ok(q, &w);
}

/* The request is complete (body read, or none): do it. */
static void api_dispatch(struct api_req *q)
{
	switch (q->ep) {
	case METRICS_API_PUBLISH: api_send(q, 0); break;
	case METRICS_API_DM: api_send(q, 1); break;
	case METRICS_API_DISCONNECT: api_disconnect(q); break;
	case METRICS_API_MEMBERS: api_members(q); break;
	case METRICS_API_ONLINE: api_online(q); break;
	case METRICS_API_HISTORY: api_history(q); break;
	case METRICS_API_STATS: api_stats(q); break;
	default: api_error(q, 404, "not_found", "no such endpoint"); break;
	}
}

static struct api_req *api_req_new(struct api *a, struct lws *wsi, void **state)
{
	struct api_req *q = *state;

	if (!q) {
		if (!(q = calloc(1, sizeof(*q))))
			return NULL;
		*state = q;
	}
	/* A new request on a kept-alive connection starts clean. */
	if (q->num)
		HASH_DEL(a->waiting, q);
	msgbuf_unref(q->resp);
	free(q->body);
	memset(q, 0, sizeof(*q));
	q->a = a;
	q->wsi = wsi;
	q->ep = METRICS_API_OTHER;
	return q;
}

int api_http(struct api *a, struct lws *wsi, void **state, const char *uri)
{
	struct api_req *q = api_req_new(a, wsi, state);
	int post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
	int get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;
	int clen = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH);
	long long length = 0;
	char buf[32];
	size_t i;

	if (!q)
		return -1;
	lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, API_TIMEOUT);
	if (clen > 0 && clen < (int)sizeof(buf) && lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0)
		length = atoll(buf);
	/* lws delivers a body when there is one; answering before it was
	 * read means the connection cannot carry another request. A POST
	 * without Content-Length (chunked) is never read. */
	q->close_after = length > 0 || clen >= (int)sizeof(buf) || (post && clen <= 0);
	for (i = 0; i < sizeof(api_routes) / sizeof(api_routes[0]); i++)
		if (strcmp(uri, api_routes[i].path) == 0)
			break;
	if (i == sizeof(api_routes) / sizeof(api_routes[0])) {
		api_error(q, 404, "not_found", "no such endpoint; see docs/api.md");
		return 0;
	}
	q->ep = api_routes[i].ep;
	if (!api_authorized(a, wsi)) {
		api_error(q, 401, "not_authenticated", "a valid Authorization: Bearer <key> header is required");
		return 0;
	}
	if (api_routes[i].post ? !post : !get) {
		api_error(q, 405, "method_not_allowed", api_routes[i].post ? "use POST" : "use GET");
		return 0;
	}
	if (post && clen <= 0) {
		api_error(q, 400, "bad_request", "a Content-Length header is required");
		return 0;
	}
	if (length > a->cfg->api_max_body_bytes || clen >= (int)sizeof(buf)) {
		api_error(q, 413, "too_large", "the request body is larger than api.max_body_bytes");
		return 0;
	}
	if (!post || length == 0) {
		api_dispatch(q);
		return 0;
	}
	q->stage = API_READING;
	return 0;
}

int api_body(struct api *a, struct lws *wsi, void **state, const void *in, size_t len)
{
	struct api_req *q = *state;
	char *nb;

	if (!q || q->stage != API_READING || q->too_large)
		return 0;
	if (q->len + len > (size_t)a->cfg->api_max_body_bytes) {
		/* More than Content-Length said (or none): still capped. */
		q->too_large = 1;
		q->close_after = 1;
		api_error(q, 413, "too_large", "the request body is larger than api.max_body_bytes");
		return 0;
	}
	if (q->len + len + 1 > q->cap) {
		size_t cap = (q->len + len + 1) * 2;
		if (cap > (size_t)a->cfg->api_max_body_bytes + 1)
			cap = (size_t)a->cfg->api_max_body_bytes + 1;
		if (!(nb = realloc(q->body, cap)))
			return -1;
		q->body = nb;
		q->cap = cap;
	}
	memcpy(q->body + q->len, in, len);
	q->len += len;
	q->body[q->len] = '\0';
	return 0;
}

int api_body_done(struct api *a, struct lws *wsi, void **state)
{
	struct api_req *q = *state;

	if (!q || q->stage != API_READING)
		return 0;
	q->close_after = 0;            /* the whole request was read */
	api_dispatch(q);
	return 0;
}

int api_writeable(struct api *a, struct lws *wsi, void **state)
{
	unsigned char hdr[LWS_PRE + 512], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
	struct api_req *q = *state;
	int n;

	if (!q || !q->resp)
		return 1;
	if (q->stage == API_HEADERS) {
		if (lws_add_http_common_headers(wsi, q->status, "application/json", q->resp->len, &p, end) ||
		    lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
						(const unsigned char *)"no-store", 8, &p, end) ||
		    (q->status == 405 &&
		     lws_add_http_header_by_name(wsi, (const unsigned char *)"allow:",
						 (const unsigned char *)(api_routes[q->ep].post ? "POST" : "GET"),
						 api_routes[q->ep].post ? 4 : 3, &p, end)) ||
		    (q->status == 401 &&
		     lws_add_http_header_by_name(wsi, (const unsigned char *)"www-authenticate:",
						 (const unsigned char *)"Bearer", 6, &p, end)) ||
		    (q->close_after &&
		     lws_add_http_header_by_name(wsi, (const unsigned char *)"connection:",
						 (const unsigned char *)"close", 5, &p, end)) ||
		    lws_finalize_write_http_header(wsi, start, &p, end))
			return -1;
		q->stage = API_BODY;
		lws_callback_on_writable(wsi);
		return 0;
	}
	n = lws_write(wsi, q->resp->data, q->resp->len, LWS_WRITE_HTTP_FINAL);
	msgbuf_unref(q->resp);
	q->resp = NULL;
	if (n < 0 || q->close_after)
		return -1;
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

void api_release(struct api *a, void **state)
{
	struct api_req *q = *state;

	if (!q)
		return;
	if (q->num)
		HASH_DEL(a->waiting, q);
	msgbuf_unref(q->resp);
	free(q->body);
	free(q);
	*state = NULL;
}

/* ---- life --------------------------------------------------------------- */

struct api *api_new(struct server *srv, struct hub *hub, const struct config *cfg,
		    struct metrics *m)
{
	struct api *a = calloc(1, sizeof(*a));
	struct hub_api_sink sink;

	if (!a)
		return NULL;
	a->srv = srv;
	a->hub = hub;
	a->cfg = cfg;
	a->m = m;
	rng_seed(&a->rng);
	sink.done = api_on_done;
	sink.ctx = a;
	hub_api_set_sink(hub, &sink);
	return a;
}

void api_reconfigure(struct api *a, const struct config *cfg)
{
	a->cfg = cfg;
}

void api_set_keys(struct api *a, const struct apikeys *keys)
{
	a->keys = keys;
}

void api_free(struct api *a)
{
	if (!a)
		return;
	/* Connections (and their requests) are gone by now: server_free
	 * destroys the lws context first. */
	hub_api_set_sink(a->hub, NULL);
	free(a);
}
