/*
 * jsonw.h - a small JSON writer that builds straight into a msgbuf.
 *
 * chatd emits a dozen fixed event shapes; writing them directly is one pass
 * and one allocation, where building a cJSON tree and printing it would be a
 * tree of allocations per event. Input (client frames) is checked as strict
 * RFC 8259 (proto_json_strict), then parsed with cJSON.
 * Strings are escaped per RFC 8259; the caller passes valid UTF-8 (every
 * string chatd echoes came in a frame that libwebsockets checked as UTF-8).
 */
#ifndef CHATD_JSONW_H
#define CHATD_JSONW_H

#include <stddef.h>
#include <stdint.h>

#include "msgbuf.h"

#define JSONW_MAX_DEPTH 8

struct jsonw {
	struct msgbuf *mb;       /* owned until jsonw_finish */
	size_t cap;
	int depth;
	int first[JSONW_MAX_DEPTH];
	int failed;              /* ENOMEM: every later call is a no-op */
};

void jsonw_init(struct jsonw *w, size_t hint);
void jsonw_obj_open(struct jsonw *w);      /* { (as a value) */
void jsonw_obj_close(struct jsonw *w);     /* } */
void jsonw_arr_open(struct jsonw *w);      /* [ (as a value) */
void jsonw_arr_close(struct jsonw *w);     /* ] */
void jsonw_key(struct jsonw *w, const char *key);  /* "key": (key needs no escaping) */
void jsonw_str(struct jsonw *w, const char *s, size_t len);  /* a string value */
void jsonw_cstr(struct jsonw *w, const char *s);
void jsonw_u64(struct jsonw *w, uint64_t v);
void jsonw_num(struct jsonw *w, double v);
void jsonw_bool(struct jsonw *w, int v);
void jsonw_raw(struct jsonw *w, const char *json, size_t len);  /* a ready JSON value */
/* Bytes appended verbatim, outside the JSON structure (e.g. plain text). */
void jsonw_append(struct jsonw *w, const char *p, size_t len);

/* Convenience: "key":value pairs. */
void jsonw_kv_str(struct jsonw *w, const char *key, const char *s, size_t len);
void jsonw_kv_cstr(struct jsonw *w, const char *key, const char *s);
void jsonw_kv_u64(struct jsonw *w, const char *key, uint64_t v);

/* The finished buffer (refs = 1, owned by the caller), or NULL on ENOMEM. */
struct msgbuf *jsonw_finish(struct jsonw *w);
/* Abandon a writer without finishing it. */
void jsonw_discard(struct jsonw *w);

#endif
