#include "proto.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

static const char *const proto_err_names[PROTO_ERR_COUNT] = {
	"ok", "bad_request", "not_authenticated", "forbidden", "not_found",
	"conflict", "rate_limited", "too_large", "unavailable", "internal",
};

static const struct {
	const char *name;
	enum proto_type type;
} proto_types[] = {
	{ "hello", PROTO_HELLO },     { "join", PROTO_JOIN },
	{ "leave", PROTO_LEAVE },     { "send", PROTO_SEND },
	{ "dm", PROTO_DM },           { "history", PROTO_HISTORY },
	{ "members", PROTO_MEMBERS }, { "ping", PROTO_PING },
	{ "edit", PROTO_EDIT },       { "delete", PROTO_DELETE },
	{ "react", PROTO_REACT },     { "typing", PROTO_TYPING },
	{ "read", PROTO_READ },       { "conversations", PROTO_CONVERSATIONS },
	{ "refresh", PROTO_REFRESH }, { "kick", PROTO_KICK },
	{ "ban", PROTO_BAN },         { "unban", PROTO_UNBAN },
	{ "mute", PROTO_MUTE },       { "unmute", PROTO_UNMUTE },
	{ "invite", PROTO_INVITE },
	{ "grant", PROTO_GRANT },     { "settings", PROTO_SETTINGS },
};

const char *proto_err_name(enum proto_err code)
{
	return code < PROTO_ERR_COUNT ? proto_err_names[code] : "internal";
}

const char *proto_type_name(enum proto_type type)
{
	size_t i;

	for (i = 0; i < sizeof(proto_types) / sizeof(proto_types[0]); i++)
		if (proto_types[i].type == type)
			return proto_types[i].name;
	return "?";
}

static int proto_charset(const char *p, size_t len, size_t max, const char *extra)
{
	size_t i;

	if (len < 1 || len > max)
		return 0;
	for (i = 0; i < len; i++) {
		char c = p[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || (c && strchr(extra, c))))
			return 0;
	}
	return 1;
}

int proto_utf8_valid(const unsigned char *p, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = p[i];
		size_t n, k;
		unsigned cp;

		if (c < 0x80) {
			/* Most frames are ASCII: skip 8 bytes at a time while no
			 * byte has its top bit set (memcpy: no alignment assumed). */
			uint64_t w;
			for (i++; i + 8 <= len; i += 8) {
				memcpy(&w, p + i, 8);
				if (w & 0x8080808080808080ULL)
					break;
			}
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return 0;      /* continuation byte, overlong lead, or > U+10FFFF */
		}
		if (i + n >= len)      /* truncated sequence */
			return 0;
		for (k = 1; k <= n; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += n + 1;
	}
	return 1;
}

int proto_valid_name(const char *p, size_t len)
{
	return proto_charset(p, len, PROTO_NAME_MAX, "_.-");
}

int proto_valid_room(const char *p, size_t len)
{
	const char *colon;

	if (len < 1 || p[0] != '@')
		return proto_charset(p, len, PROTO_ROOM_NAME_MAX, "_.:-");
	/* "@a:b": two valid names in order (one name per pair of users). */
	colon = memchr(p, ':', len);
	if (!colon || !proto_valid_name(p + 1, (size_t)(colon - p - 1)) ||
	    !proto_valid_name(colon + 1, len - (size_t)(colon - p) - 1))
		return 0;
	{
		size_t la = (size_t)(colon - p - 1), lb = len - la - 2;
		int c = memcmp(p + 1, colon + 1, la < lb ? la : lb);
		return c < 0 || (c == 0 && la <= lb);
	}
}

void proto_dm_room(char *out, const char *a, const char *b)
{
	if (strcmp(a, b) > 0) {
		const char *t = a;
		a = b;
		b = t;
	}
	snprintf(out, PROTO_ROOM_MAX + 1, "@%s:%s", a, b);
}

int proto_dm_peer(const char *room, size_t len, const char *me, const char **peer, size_t *peer_len)
{
	const char *colon;
	size_t la, lm = strlen(me);

	*peer = NULL;
	*peer_len = 0;
	if (len < 1 || room[0] != '@' || !(colon = memchr(room, ':', len)))
		return 0;
	la = (size_t)(colon - room - 1);
	if (la == lm && !memcmp(room + 1, me, lm)) {
		*peer = colon + 1;
		*peer_len = len - la - 2;
	} else if (len - la - 2 == lm && !memcmp(colon + 1, me, lm)) {
		*peer = room + 1;
		*peer_len = la;
	}
	return 1;
}

static int proto_fail(struct proto_error *err, enum proto_err code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int proto_fail(struct proto_error *err, enum proto_err code, const char *fmt, ...)
{
	va_list ap;

	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -1;
}

/* ---- strict RFC 8259 ---------------------------------------------------- */

/*
 * cJSON is lenient where the wire contract is not: it takes "+1", "01" and
 * "1.", raw control characters inside strings, and it decodes a \u escape
 * with bad hex digits as U+0000, which cuts the string short. Every frame
 * passes this check before cJSON sees it, so a string is either delivered
 * byte for byte as sent or refused with bad_request. Iterative, one pass,
 * nesting bounded by PROTO_JSON_DEPTH.
 */
#define PROTO_JSON_DEPTH 32

static size_t pj_ws(const unsigned char *p, size_t i, size_t n)
{
	while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
		i++;
	return i;
}

static int pj_digit(const unsigned char *p, size_t i, size_t n)
{
	return i < n && p[i] >= '0' && p[i] <= '9';
}

static int pj_hex4(const unsigned char *p, size_t i, size_t n, unsigned *out)
{
	size_t k;

	*out = 0;
	if (i > n || n - i < 4)
		return -1;
	for (k = i; k < i + 4; k++) {
		unsigned c = p[k], v;
		if (c >= '0' && c <= '9')
			v = c - '0';
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			v = (c | 0x20) - 'a' + 10;
		else
			return -1;
		*out = *out << 4 | v;
	}
	return 0;
}

/* The string at p[i] == '"': the index after its closing quote, or 0. */
static size_t pj_string(const unsigned char *p, size_t i, size_t n, const char **why)
{
	unsigned u, lo;

	for (i++; i < n; i++) {
		if (p[i] == '"')
			return i + 1;
		if (p[i] < 0x20) {
			*why = "invalid JSON: control character in a string";
			return 0;
		}
		if (p[i] != '\\')
			continue;
		if (++i >= n)
			break;
		if (p[i] && strchr("\"\\/bfnrt", p[i]))
			continue;
		if (p[i] != 'u' || pj_hex4(p, i + 1, n, &u)) {
			*why = "invalid JSON: bad escape in a string";
			return 0;
		}
		i += 4;
		if (u == 0) {
			/* Strings are C strings inside chatd. */
			*why = "strings must not contain \\u0000";
			return 0;
		}
		if (u >= 0xdc00 && u <= 0xdfff)
			goto lone;
		if (u >= 0xd800 && u <= 0xdbff) {
			if (i + 2 >= n || p[i + 1] != '\\' || p[i + 2] != 'u' ||
			    pj_hex4(p, i + 3, n, &lo) || lo < 0xdc00 || lo > 0xdfff)
				goto lone;
			i += 6;
		}
	}
	*why = "invalid JSON: unterminated string";
	return 0;
lone:
	*why = "invalid JSON: unpaired UTF-16 surrogate";
	return 0;
}

/* The number at p[i]: the index after it, or 0. */
static size_t pj_number(const unsigned char *p, size_t i, size_t n)
{
	if (i < n && p[i] == '-')
		i++;
	if (i < n && p[i] == '0')
		i++;
	else if (pj_digit(p, i, n) && p[i] != '0')
		while (pj_digit(p, i, n))
			i++;
	else
		return 0;
	if (i < n && p[i] == '.') {
		if (!pj_digit(p, ++i, n))
			return 0;
		while (pj_digit(p, i, n))
			i++;
	}
	if (i < n && (p[i] == 'e' || p[i] == 'E')) {
		i++;
		if (i < n && (p[i] == '+' || p[i] == '-'))
			i++;
		if (!pj_digit(p, i, n))
			return 0;
		while (pj_digit(p, i, n))
			i++;
	}
	return i;
}

/* A scalar at p[i] (not '{' or '['): the index after it, or 0. */
static size_t pj_scalar(const unsigned char *p, size_t i, size_t n, const char **why)
{
	static const char *const lits[] = { "true", "false", "null" };
	size_t k, end;

	if (p[i] == '"')
		return pj_string(p, i, n, why);
	for (k = 0; k < 3; k++) {
		size_t l = strlen(lits[k]);
		if (n - i >= l && !memcmp(p + i, lits[k], l))
			return i + l;
	}
	if (!(end = pj_number(p, i, n)))
		*why = "invalid JSON";
	return end;
}

/* An object key and its colon at p[i]: the index after the colon, or 0. */
static size_t pj_key(const unsigned char *p, size_t i, size_t n, const char **why)
{
	i = pj_ws(p, i, n);
	if (i >= n || p[i] != '"') {
		*why = "invalid JSON: expected a string key";
		return 0;
	}
	if (!(i = pj_string(p, i, n, why)))
		return 0;
	i = pj_ws(p, i, n);
	if (i >= n || p[i] != ':') {
		*why = "invalid JSON: expected ':'";
		return 0;
	}
	return i + 1;
}

/* Is data[0..len) exactly one RFC 8259 JSON text (UTF-8, as the WebSocket
 * layer already checked)? NULL if so, else why not. */
const char *proto_json_strict(const char *data, size_t len)
{
	const unsigned char *p = (const unsigned char *)data;
	char stack[PROTO_JSON_DEPTH];
	const char *why = "invalid JSON";
	size_t i = 0;
	int depth = 0;

	if (!proto_utf8_valid(p, len))
		return "invalid JSON: not UTF-8";
	for (;;) {
		/* A value starts at i. */
		i = pj_ws(p, i, len);
		if (i >= len)
			return "invalid JSON: unexpected end";
		if (p[i] == '{' || p[i] == '[') {
			char close = p[i] == '{' ? '}' : ']';
			if (depth == PROTO_JSON_DEPTH)
				return "invalid JSON: nested too deep";
			stack[depth++] = close;
			i = pj_ws(p, i + 1, len);
			if (i < len && p[i] == close) {
				depth--;
				i++;
			} else if (close == '}' && !(i = pj_key(p, i, len, &why))) {
				return why;
			} else {
				continue;
			}
		} else if (!(i = pj_scalar(p, i, len, &why))) {
			return why;
		}
		/* After a value: close containers, or a comma for the next. */
		for (;;) {
			i = pj_ws(p, i, len);
			if (!depth)
				return i == len ? NULL : "invalid JSON: data after the object";
			if (i >= len)
				return "invalid JSON: unexpected end";
			if (p[i] == stack[depth - 1]) {
				depth--;
				i++;
				continue;
			}
			if (p[i] != ',')
				return "invalid JSON: expected ',' or a closing bracket";
			i++;
			if (stack[depth - 1] == '}' && !(i = pj_key(p, i, len, &why)))
				return why;
			break;
		}
	}
}

/* Optional string field; -1 if present but not a string or too long/short. */
static int proto_get_str(const cJSON *obj, const char *key, size_t min, size_t max,
			 struct proto_str *out)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);

	out->p = NULL;
	out->len = 0;
	if (!it)
		return 0;
	if (!cJSON_IsString(it) || !it->valuestring)
		return -1;
	out->p = it->valuestring;
	out->len = strlen(it->valuestring);
	if (out->len < min || out->len > max)
		return -1;
	return 1;
}

/* Optional non-negative integer field (JSON numbers are doubles: exact up to 2^53). */
static int proto_get_u64(const cJSON *obj, const char *key, uint64_t *out)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
	double v;

	if (!it)
		return 0;
	if (!cJSON_IsNumber(it))
		return -1;
	v = it->valuedouble;
	if (!(v >= 0) || v > 9007199254740992.0 || floor(v) != v)
		return -1;
	*out = (uint64_t)v;
	return 1;
}

static int proto_need_room(const cJSON *o, struct proto_cmd *cmd, struct proto_error *err)
{
	int r = proto_get_str(o, "room", 1, PROTO_ROOM_MAX, &cmd->room);

	if (r <= 0 || !proto_valid_room(cmd->room.p, cmd->room.len))
		return proto_fail(err, PROTO_ERR_BAD_REQUEST,
				  "room must be 1..64 bytes of [A-Za-z0-9_.:-], or a conversation @a:b");
	return 0;
}

/* Required string "body", at most max_body bytes. */
static int proto_need_body(const cJSON *o, size_t max_body, struct proto_cmd *cmd,
			   struct proto_error *err)
{
	const cJSON *body = cJSON_GetObjectItemCaseSensitive(o, "body");

	if (!cJSON_IsString(body) || !body->valuestring)
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "body must be a string");
	cmd->body.p = body->valuestring;
	cmd->body.len = strlen(body->valuestring);
	if (cmd->body.len > max_body)
		return proto_fail(err, PROTO_ERR_TOO_LARGE, "body is %zu bytes, the limit is %zu",
				  cmd->body.len, max_body);
	return 0;
}

static int proto_need_id_body(const cJSON *o, size_t max_body, struct proto_cmd *cmd,
			      struct proto_error *err)
{
	if (proto_get_str(o, "id", 1, PROTO_ID_MAX, &cmd->id) <= 0)
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "id must be a string of 1..64 bytes");
	return proto_need_body(o, max_body, cmd, err);
}

/* Required "seq" of the message an edit, delete, react or read is about. */
static int proto_need_seq(const cJSON *o, uint64_t min, struct proto_cmd *cmd,
			  struct proto_error *err)
{
	if (proto_get_u64(o, "seq", &cmd->seq) <= 0 || cmd->seq < min)
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "seq must be an integer >= %llu",
				  (unsigned long long)min);
	cmd->has_seq = 1;
	return 0;
}

/* Optional boolean "on" (react, typing), true when absent. */
static int proto_get_on(const cJSON *o, struct proto_cmd *cmd, struct proto_error *err)
{
	const cJSON *on = cJSON_GetObjectItemCaseSensitive(o, "on");

	cmd->on = 1;
	if (!on)
		return 0;
	if (!cJSON_IsBool(on))
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "on must be true or false");
	cmd->on = cJSON_IsTrue(on);
	return 0;
}

/* A reaction is one emoji or a short token: 1..PROTO_REACTION_MAX bytes of
 * UTF-8 (checked with the frame) without spaces or control characters. */
static int proto_need_reaction(const cJSON *o, struct proto_cmd *cmd, struct proto_error *err)
{
	int r = proto_get_str(o, "reaction", 1, (size_t)-1 >> 1, &cmd->reaction);
	size_t i;

	if (r <= 0)
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "reaction must be a non-empty string");
	if (cmd->reaction.len > PROTO_REACTION_MAX)
		return proto_fail(err, PROTO_ERR_TOO_LARGE, "reaction is %zu bytes, the limit is %d",
				  cmd->reaction.len, PROTO_REACTION_MAX);
	for (i = 0; i < cmd->reaction.len; i++)
		if ((unsigned char)cmd->reaction.p[i] <= 0x20 || cmd->reaction.p[i] == 0x7f)
			return proto_fail(err, PROTO_ERR_BAD_REQUEST,
					  "reaction must not contain spaces or control characters");
	return 0;
}

/* Optional client id of an edit, delete or react (for retries). */
static int proto_get_id(const cJSON *o, struct proto_cmd *cmd, struct proto_error *err)
{
	if (proto_get_str(o, "id", 1, PROTO_ID_MAX, &cmd->id) < 0)
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "id must be a string of 1..64 bytes");
	return 0;
}

/* The commands of conversations (edit, delete, react, typing, read). */
static int proto_decode_conv(const cJSON *o, size_t max_body, struct proto_cmd *cmd,
			     struct proto_error *err)
{
	if (proto_need_room(o, cmd, err))
		return -1;
	switch (cmd->type) {
	case PROTO_EDIT:
		if (proto_need_seq(o, 1, cmd, err) || proto_get_id(o, cmd, err))
			return -1;
		return proto_need_body(o, max_body, cmd, err);
	case PROTO_DELETE:
		return proto_need_seq(o, 1, cmd, err) || proto_get_id(o, cmd, err) ? -1 : 0;
	case PROTO_REACT:
		return proto_need_seq(o, 1, cmd, err) || proto_get_id(o, cmd, err) ||
		       proto_need_reaction(o, cmd, err) || proto_get_on(o, cmd, err) ? -1 : 0;
	case PROTO_TYPING:
		return proto_get_on(o, cmd, err);
	case PROTO_READ:
		return proto_need_seq(o, 0, cmd, err);
	default:
		return proto_fail(err, PROTO_ERR_INTERNAL, "unhandled type");
	}
}

/* Optional boolean field: 0 absent, 1 with *out set, -1 not a boolean. */
static int proto_get_bool(const cJSON *obj, const char *key, int *out)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (!it)
		return 0;
	if (!cJSON_IsBool(it))
		return -1;
	*out = cJSON_IsTrue(it);
	return 1;
}

/* Moderation: room and user, and for kick/ban/mute an optional reason and
 * (ban/mute) an optional duration in seconds. */
static int proto_decode_mod(const cJSON *o, struct proto_cmd *cmd, struct proto_error *err)
{
	int r;

	if (proto_need_room(o, cmd, err))
		return -1;
	r = proto_get_str(o, "user", 1, PROTO_NAME_MAX, &cmd->user);
	if (r <= 0 || !proto_valid_name(cmd->user.p, cmd->user.len))
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "user must be 1..32 bytes of [A-Za-z0-9_.-]");
	if (proto_get_str(o, "reason", 0, PROTO_REASON_MAX, &cmd->reason) < 0 ||
	    (cmd->reason.p && !proto_utf8_valid((const unsigned char *)cmd->reason.p, cmd->reason.len)))
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "reason must be a string of at most 256 bytes");
	if ((r = proto_get_u64(o, "duration", &cmd->duration)) < 0 || (r == 1 && cmd->duration == 0) ||
	    cmd->duration > 315360000)
		return proto_fail(err, PROTO_ERR_BAD_REQUEST,
				  "duration must be an integer of seconds in 1..315360000 (absent: permanent)");
	cmd->has_duration = r;
	if (cmd->type == PROTO_GRANT &&
	    proto_get_str(o, "role", 1, 16, &cmd->role) <= 0)
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "role must be owner, moderator or member");
	return 0;
}

static int proto_decode_settings(const cJSON *o, struct proto_cmd *cmd, struct proto_error *err)
{
	int r;

	if (proto_need_room(o, cmd, err))
		return -1;
	if ((cmd->has_private = proto_get_bool(o, "private", &cmd->private_room)) < 0)
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "private must be true or false");
	if ((cmd->has_read_only = proto_get_bool(o, "read_only", &cmd->read_only)) < 0)
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "read_only must be true or false");
	if ((r = proto_get_u64(o, "history", &cmd->history)) < 0 || cmd->history > 1000000)
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "history must be an integer in 0..1000000");
	cmd->has_history = r;
	if (proto_get_str(o, "topic", 0, PROTO_TOPIC_MAX, &cmd->topic) < 0)
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "topic must be a string of at most 256 bytes");
	if (!cmd->has_private && !cmd->has_read_only && !cmd->has_history && !cmd->topic.p)
		return proto_fail(err, PROTO_ERR_BAD_REQUEST,
				  "give at least one of private, read_only, topic, history");
	return 0;
}

static int proto_decode_fields(const cJSON *o, size_t max_body, struct proto_cmd *cmd,
			       struct proto_error *err)
{
	const cJSON *lim;
	uint64_t v;
	int r;

	switch (cmd->type) {
	case PROTO_HELLO:
		if (proto_get_str(o, "token", 1, 8192, &cmd->token) < 0)
			return proto_fail(err, PROTO_ERR_BAD_REQUEST, "token must be a string");
		r = proto_get_str(o, "name", 1, PROTO_NAME_MAX, &cmd->name);
		if (r < 0 || (r == 1 && !proto_valid_name(cmd->name.p, cmd->name.len)) ||
		    (r == 0 && !cmd->token.p))
			return proto_fail(err, PROTO_ERR_BAD_REQUEST,
					  "name must be 1..32 bytes of [A-Za-z0-9_.-]");
		return 0;
	case PROTO_JOIN:
		if (proto_need_room(o, cmd, err))
			return -1;
		if ((r = proto_get_u64(o, "since", &cmd->since)) < 0)
			return proto_fail(err, PROTO_ERR_BAD_REQUEST, "since must be an integer >= 0");
		cmd->has_since = r;
		if (proto_get_str(o, "epoch", 0, PROTO_EPOCH_MAX, &cmd->epoch) < 0)
			return proto_fail(err, PROTO_ERR_BAD_REQUEST, "epoch must be a string");
		return 0;
	case PROTO_LEAVE:
	case PROTO_MEMBERS:
		return proto_need_room(o, cmd, err);
	case PROTO_SEND:
		if (proto_need_room(o, cmd, err))
			return -1;
		return proto_need_id_body(o, max_body, cmd, err);
	case PROTO_DM:
		r = proto_get_str(o, "to", 1, PROTO_NAME_MAX, &cmd->to);
		if (r <= 0 || !proto_valid_name(cmd->to.p, cmd->to.len))
			return proto_fail(err, PROTO_ERR_BAD_REQUEST,
					  "to must be 1..32 bytes of [A-Za-z0-9_.-]");
		return proto_need_id_body(o, max_body, cmd, err);
	case PROTO_HISTORY:
		if (proto_need_room(o, cmd, err))
			return -1;
		if ((r = proto_get_u64(o, "before", &cmd->before)) < 0)
			return proto_fail(err, PROTO_ERR_BAD_REQUEST, "before must be an integer >= 0");
		cmd->has_before = r;
		if ((r = proto_get_u64(o, "after", &cmd->after)) < 0)
			return proto_fail(err, PROTO_ERR_BAD_REQUEST, "after must be an integer >= 0");
		cmd->has_after = r;
		if (cmd->has_before && cmd->has_after)
			return proto_fail(err, PROTO_ERR_BAD_REQUEST, "give before or after, not both");
		lim = cJSON_GetObjectItemCaseSensitive(o, "state");
		if (lim && !cJSON_IsBool(lim))
			return proto_fail(err, PROTO_ERR_BAD_REQUEST, "state must be true or false");
		cmd->state = cJSON_IsTrue(lim);
		cmd->limit = PROTO_HISTORY_DEFAULT;
		lim = cJSON_GetObjectItemCaseSensitive(o, "limit");
		if (lim) {
			if (proto_get_u64(o, "limit", &v) <= 0 || v < 1)
				return proto_fail(err, PROTO_ERR_BAD_REQUEST, "limit must be an integer >= 1");
			cmd->limit = v > PROTO_HISTORY_MAX ? PROTO_HISTORY_MAX : (unsigned)v;
		}
		return 0;
	case PROTO_PING:
	case PROTO_CONVERSATIONS:
		return 0;
	case PROTO_EDIT:
	case PROTO_DELETE:
	case PROTO_REACT:
	case PROTO_TYPING:
	case PROTO_READ:
		return proto_decode_conv(o, max_body, cmd, err);
	case PROTO_REFRESH:
		if (proto_get_str(o, "token", 1, 8192, &cmd->token) <= 0)
			return proto_fail(err, PROTO_ERR_BAD_REQUEST, "token must be a string of 1..8192 bytes");
		return 0;
	case PROTO_KICK:
	case PROTO_BAN:
	case PROTO_UNBAN:
	case PROTO_MUTE:
	case PROTO_UNMUTE:
	case PROTO_INVITE:
	case PROTO_GRANT:
		return proto_decode_mod(o, cmd, err);
	case PROTO_SETTINGS:
		return proto_decode_settings(o, cmd, err);
	}
	return proto_fail(err, PROTO_ERR_INTERNAL, "unhandled type");
}

int proto_decode(const char *data, size_t len, size_t max_body,
		 struct proto_cmd *cmd, struct proto_error *err)
{
	const cJSON *type, *ref;
	const char *end = NULL, *why;
	cJSON *root;
	size_t i;

	memset(cmd, 0, sizeof(*cmd));
	err->code = PROTO_OK;
	err->message[0] = '\0';

	/* Strict first: cJSON only ever sees RFC 8259 text it decodes as sent. */
	if ((why = proto_json_strict(data, len)))
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "%s", why);
	root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
	if (!root)
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "invalid JSON");
	cmd->json = root;
	if (!cJSON_IsObject(root))
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "a frame must be a JSON object");
	/* ref next, so that every later error can echo it. */
	ref = cJSON_GetObjectItemCaseSensitive(root, "ref");
	if (ref) {
		if (!cJSON_IsString(ref) || strlen(ref->valuestring) > PROTO_REF_MAX)
			return proto_fail(err, PROTO_ERR_BAD_REQUEST, "ref must be a string of at most 64 bytes");
		cmd->ref.p = ref->valuestring;
		cmd->ref.len = strlen(ref->valuestring);
	}

	type = cJSON_GetObjectItemCaseSensitive(root, "type");
	if (!cJSON_IsString(type))
		return proto_fail(err, PROTO_ERR_BAD_REQUEST, "missing string field \"type\"");
	for (i = 0; i < sizeof(proto_types) / sizeof(proto_types[0]); i++) {
		if (strcmp(type->valuestring, proto_types[i].name) == 0) {
			cmd->type = proto_types[i].type;
			return proto_decode_fields(root, max_body, cmd, err);
		}
	}
	return proto_fail(err, PROTO_ERR_BAD_REQUEST, "unknown type \"%.32s\"", type->valuestring);
}

void proto_cmd_free(struct proto_cmd *cmd)
{
	cJSON_Delete(cmd->json);
	cmd->json = NULL;
}
