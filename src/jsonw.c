#include "jsonw.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void jsonw_init(struct jsonw *w, size_t hint)
{
	if (hint < 64)
		hint = 64;
	w->mb = msgbuf_new(hint);
	w->cap = hint;
	w->depth = 0;
	w->first[0] = 1;
	w->failed = w->mb == NULL;
}

static int jsonw_grow(struct jsonw *w, size_t more)
{
	size_t need = w->mb->len + more, cap = w->cap;
	struct msgbuf *mb;

	if (need <= cap)
		return 0;
	while (cap < need)
		cap *= 2;
	mb = msgbuf_reserve(w->mb, cap);
	if (!mb) {
		w->failed = 1;
		return -1;
	}
	w->mb = mb;
	w->cap = cap;
	return 0;
}

static void jsonw_put(struct jsonw *w, const char *p, size_t n)
{
	if (w->failed || jsonw_grow(w, n))
		return;
	memcpy(w->mb->data + w->mb->len, p, n);
	w->mb->len += (uint32_t)n;
}

/* A comma before every value in a container but the first. */
static void jsonw_value_sep(struct jsonw *w)
{
	if (!w->first[w->depth])
		jsonw_put(w, ",", 1);
	w->first[w->depth] = 0;
}

static void jsonw_open(struct jsonw *w, char c)
{
	jsonw_value_sep(w);
	jsonw_put(w, &c, 1);
	if (w->depth + 1 >= JSONW_MAX_DEPTH) {
		w->failed = 1;
		return;
	}
	w->first[++w->depth] = 1;
}

static void jsonw_close(struct jsonw *w, char c)
{
	jsonw_put(w, &c, 1);
	if (w->depth > 0)
		w->depth--;
}

void jsonw_obj_open(struct jsonw *w) { jsonw_open(w, '{'); }
void jsonw_obj_close(struct jsonw *w) { jsonw_close(w, '}'); }
void jsonw_arr_open(struct jsonw *w) { jsonw_open(w, '['); }
void jsonw_arr_close(struct jsonw *w) { jsonw_close(w, ']'); }

void jsonw_key(struct jsonw *w, const char *key)
{
	jsonw_value_sep(w);
	jsonw_put(w, "\"", 1);
	jsonw_put(w, key, strlen(key));
	jsonw_put(w, "\":", 2);
	/* The value that follows must not get a comma of its own. */
	w->first[w->depth] = 1;
}

void jsonw_str(struct jsonw *w, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, run = 0;

	jsonw_value_sep(w);
	if (w->failed || jsonw_grow(w, len + 2))
		return;
	jsonw_put(w, "\"", 1);
	/* Copy runs of plain bytes at once; escape the rest. */
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[6];
		size_t n = 2;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		jsonw_put(w, s + run, i - run);
		run = i + 1;
		esc[0] = '\\';
		switch (c) {
		case '"': esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		default:
			esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
			esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
			n = 6;
		}
		jsonw_put(w, esc, n);
	}
	jsonw_put(w, s + run, len - run);
	jsonw_put(w, "\"", 1);
	/* A value after a key closes that key's pair. */
	w->first[w->depth] = 0;
}

void jsonw_cstr(struct jsonw *w, const char *s)
{
	jsonw_str(w, s, strlen(s));
}

void jsonw_u64(struct jsonw *w, uint64_t v)
{
	char buf[24];
	int n = snprintf(buf, sizeof(buf), "%" PRIu64, v);

	jsonw_raw(w, buf, (size_t)n);
}

void jsonw_num(struct jsonw *w, double v)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%.15g", v);

	jsonw_raw(w, buf, (size_t)n);
}

void jsonw_bool(struct jsonw *w, int v)
{
	jsonw_raw(w, v ? "true" : "false", v ? 4 : 5);
}

void jsonw_raw(struct jsonw *w, const char *json, size_t len)
{
	jsonw_value_sep(w);
	jsonw_put(w, json, len);
	w->first[w->depth] = 0;
}

void jsonw_append(struct jsonw *w, const char *p, size_t len)
{
	jsonw_put(w, p, len);
}

void jsonw_kv_str(struct jsonw *w, const char *key, const char *s, size_t len)
{
	jsonw_key(w, key);
	jsonw_str(w, s, len);
}

void jsonw_kv_cstr(struct jsonw *w, const char *key, const char *s)
{
	jsonw_key(w, key);
	jsonw_cstr(w, s);
}

void jsonw_kv_u64(struct jsonw *w, const char *key, uint64_t v)
{
	jsonw_key(w, key);
	jsonw_u64(w, v);
}

struct msgbuf *jsonw_finish(struct jsonw *w)
{
	struct msgbuf *mb = w->mb;

	w->mb = NULL;
	if (w->failed) {
		msgbuf_unref(mb);
		return NULL;
	}
	mb->data[mb->len] = '\0';
	return mb;
}

void jsonw_discard(struct jsonw *w)
{
	msgbuf_unref(w->mb);
	w->mb = NULL;
}
