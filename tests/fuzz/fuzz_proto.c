/*
 * fuzz_proto - libFuzzer target for the chat.v1 frame decoder.
 *
 * Input: one text frame, as the transport hands it to the hub. Checks, on
 * top of ASan/UBSan/LSan:
 *  - proto_decode returns 0 or -1 and fills exactly one of cmd / err;
 *  - an error has a known code and a NUL-terminated, non-empty message;
 *  - a decoded command obeys the contract of proto.h (lengths, charsets,
 *    history limit range, strings that point into the parsed document);
 *  - strictness: a frame is either refused, or every string the decoder
 *    yields equals what an independent RFC 8259 string decoder reads in the
 *    frame for that key, and re-encodes (jsonw) to the same JSON value. The
 *    reference decoder traps on anything RFC 8259 forbids, so an accepted
 *    frame that is not strict JSON is a crash too.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jsonw.h"
#include "msgbuf.h"
#include "proto.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

static void check_str(const struct proto_str *s, size_t min, size_t max)
{
	if (!s->p)
		return;
	CHECK(s->len >= min && s->len <= max);
	CHECK(strlen(s->p) == s->len);  /* no embedded NUL: \u0000 is refused */
}

static void check_cmd(const struct proto_cmd *c, size_t max_body)
{
	check_str(&c->ref, 0, PROTO_REF_MAX);
	switch (c->type) {
	case PROTO_HELLO:
		CHECK(c->name.p || c->token.p);
		if (c->name.p)
			CHECK(proto_valid_name(c->name.p, c->name.len));
		check_str(&c->token, 1, 8192);
		break;
	case PROTO_JOIN:
		check_str(&c->epoch, 0, PROTO_EPOCH_MAX);
		/* fall through */
	case PROTO_LEAVE:
	case PROTO_MEMBERS:
		CHECK(c->room.p && proto_valid_room(c->room.p, c->room.len));
		break;
	case PROTO_SEND:
		CHECK(c->room.p && proto_valid_room(c->room.p, c->room.len));
		/* fall through */
	case PROTO_DM:
		if (c->type == PROTO_DM)
			CHECK(c->to.p && proto_valid_name(c->to.p, c->to.len));
		CHECK(c->id.p);
		check_str(&c->id, 1, PROTO_ID_MAX);
		CHECK(c->body.p && c->body.len <= max_body);
		break;
	case PROTO_HISTORY:
		CHECK(c->room.p && proto_valid_room(c->room.p, c->room.len));
		CHECK(!(c->has_before && c->has_after));
		CHECK(c->limit >= 1 && c->limit <= PROTO_HISTORY_MAX);
		break;
	case PROTO_PING:
	case PROTO_CONVERSATIONS:
		break;
	case PROTO_EDIT:
		CHECK(c->body.p && c->body.len <= max_body);
		/* fall through */
	case PROTO_DELETE:
	case PROTO_REACT:
		CHECK(c->has_seq && c->seq >= 1);
		check_str(&c->id, 1, PROTO_ID_MAX);
		if (c->type == PROTO_REACT) {
			CHECK(c->reaction.p);
			check_str(&c->reaction, 1, PROTO_REACTION_MAX);
			for (size_t i = 0; i < c->reaction.len; i++)
				CHECK((unsigned char)c->reaction.p[i] > 0x20 && c->reaction.p[i] != 0x7f);
		}
		/* fall through */
	case PROTO_TYPING:
	case PROTO_READ:
		CHECK(c->room.p && proto_valid_room(c->room.p, c->room.len));
		CHECK(c->on == 0 || c->on == 1);
		if (c->type == PROTO_READ)
			CHECK(c->has_seq);
		break;
	case PROTO_REFRESH:
		CHECK(c->token.p);
		check_str(&c->token, 1, 8192);
		break;
	case PROTO_KICK:
	case PROTO_BAN:
	case PROTO_UNBAN:
	case PROTO_MUTE:
	case PROTO_UNMUTE:
	case PROTO_INVITE:
	case PROTO_GRANT:
		CHECK(c->room.p && proto_valid_room(c->room.p, c->room.len));
		CHECK(c->user.p && proto_valid_name(c->user.p, c->user.len));
		check_str(&c->reason, 0, PROTO_REASON_MAX);
		CHECK(!c->has_duration || (c->duration >= 1 && c->duration <= 315360000));
		if (c->type == PROTO_GRANT) {
			CHECK(c->role.p);
			check_str(&c->role, 1, 16);
		}
		break;
	case PROTO_SETTINGS:
		CHECK(c->room.p && proto_valid_room(c->room.p, c->room.len));
		CHECK(c->has_private || c->has_read_only || c->has_history || c->topic.p);
		CHECK(!c->has_history || c->history <= 1000000);
		check_str(&c->topic, 0, PROTO_TOPIC_MAX);
		break;
	default:
		CHECK(0);
	}
}

/* ---- an independent RFC 8259 reader for accepted frames ----------------- */

static size_t ref_ws(const uint8_t *p, size_t i, size_t n)
{
	while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
		i++;
	return i;
}

static unsigned ref_hex4(const uint8_t *p, size_t i, size_t n)
{
	unsigned v = 0, k;

	CHECK(i + 4 <= n);
	for (k = 0; k < 4; k++) {
		uint8_t c = p[i + k];
		CHECK((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'));
		v = v * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
	}
	return v;
}

static size_t ref_put(char *out, size_t o, unsigned cp)
{
	if (cp < 0x80) {
		out[o++] = (char)cp;
	} else if (cp < 0x800) {
		out[o++] = (char)(0xc0 | cp >> 6);
		out[o++] = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		out[o++] = (char)(0xe0 | cp >> 12);
		out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[o++] = (char)(0x80 | (cp & 0x3f));
	} else {
		out[o++] = (char)(0xf0 | cp >> 18);
		out[o++] = (char)(0x80 | ((cp >> 12) & 0x3f));
		out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[o++] = (char)(0x80 | (cp & 0x3f));
	}
	return o;
}

/* Decode the string at p[*i] == '"' into out (at least n bytes), set *i
 * past it; returns the decoded length. Traps on what RFC 8259 forbids. */
static size_t ref_string(const uint8_t *p, size_t n, size_t *i, char *out)
{
	size_t k = *i, o = 0;

	CHECK(k < n && p[k] == '"');
	for (k++;; k++) {
		CHECK(k < n);
		if (p[k] == '"')
			break;
		CHECK(p[k] >= 0x20);
		if (p[k] != '\\') {
			out[o++] = (char)p[k];
			continue;
		}
		CHECK(++k < n);
		switch (p[k]) {
		case '"': out[o++] = '"'; break;
		case '\\': out[o++] = '\\'; break;
		case '/': out[o++] = '/'; break;
		case 'b': out[o++] = '\b'; break;
		case 'f': out[o++] = '\f'; break;
		case 'n': out[o++] = '\n'; break;
		case 'r': out[o++] = '\r'; break;
		case 't': out[o++] = '\t'; break;
		case 'u': {
			unsigned cp = ref_hex4(p, k + 1, n);
			k += 4;
			CHECK(cp < 0xdc00 || cp > 0xdfff);
			if (cp >= 0xd800 && cp <= 0xdbff) {
				unsigned lo;
				CHECK(k + 2 < n && p[k + 1] == '\\' && p[k + 2] == 'u');
				lo = ref_hex4(p, k + 3, n);
				CHECK(lo >= 0xdc00 && lo <= 0xdfff);
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				k += 6;
			}
			o = ref_put(out, o, cp);
			break;
		}
		default:
			CHECK(0);
		}
	}
	*i = k + 1;
	return o;
}

/* Skip the member value at p[*i] (the frame is known to be JSON): up to
 * the ',' or '}' of the frame object. */
static void ref_skip(const uint8_t *p, size_t n, size_t *i, char *scratch)
{
	int depth = 0;

	for (;;) {
		CHECK(*i < n);
		if (p[*i] == '"') {
			ref_string(p, n, i, scratch);
			continue;
		}
		if (depth == 0 && (p[*i] == ',' || p[*i] == '}'))
			return;
		if (p[*i] == '{' || p[*i] == '[')
			depth++;
		else if (p[*i] == '}' || p[*i] == ']')
			depth--;
		(*i)++;
	}
}

/* The first top-level member named key that holds a string: its decoded
 * value in out (length in *len); 0 if there is none. */
static int ref_member(const uint8_t *p, size_t n, const char *key, char *out, size_t *len,
		      char *scratch)
{
	size_t i = ref_ws(p, 0, n), klen;

	CHECK(i < n && p[i] == '{');
	i = ref_ws(p, i + 1, n);
	while (i < n && p[i] != '}') {
		klen = ref_string(p, n, &i, scratch);
		i = ref_ws(p, i, n);
		CHECK(i < n && p[i] == ':');
		i = ref_ws(p, i + 1, n);
		CHECK(i < n);
		if (klen == strlen(key) && !memcmp(scratch, key, klen)) {
			/* cJSON takes the first member of a name: so does this */
			if (p[i] != '"')
				return 0;
			*len = ref_string(p, n, &i, out);
			return 1;
		}
		ref_skip(p, n, &i, scratch);
		i = ref_ws(p, i, n);
		if (i < n && p[i] == ',')
			i = ref_ws(p, i + 1, n);
	}
	return 0;
}

/* A string the decoder yielded for key: it is what the frame says, and it
 * re-encodes to the same JSON value. */
static void check_roundtrip(const uint8_t *frame, size_t n, const char *key,
			    const struct proto_str *s, char *out, char *scratch)
{
	struct msgbuf *mb;
	struct jsonw w;
	size_t len = 0, i = 0;

	if (!s->p)
		return;
	CHECK(ref_member(frame, n, key, out, &len, scratch));
	CHECK(len == s->len && !memcmp(out, s->p, len));
	jsonw_init(&w, s->len * 6 + 16);
	jsonw_str(&w, s->p, s->len);
	mb = jsonw_finish(&w);
	if (!mb)
		return;
	len = ref_string(mb->data, mb->len, &i, out);
	CHECK(i == mb->len);
	CHECK(len == s->len && !memcmp(out, s->p, len));
	msgbuf_unref(mb);
}

static void check_strings(const uint8_t *frame, size_t n, const struct proto_cmd *c)
{
	/* Decoded strings are never longer than their source. */
	char *out = malloc(n + 1), *scratch = malloc(n + 1);

	if (out && scratch) {
		check_roundtrip(frame, n, "ref", &c->ref, out, scratch);
		check_roundtrip(frame, n, "name", &c->name, out, scratch);
		check_roundtrip(frame, n, "token", &c->token, out, scratch);
		check_roundtrip(frame, n, "room", &c->room, out, scratch);
		check_roundtrip(frame, n, "epoch", &c->epoch, out, scratch);
		check_roundtrip(frame, n, "id", &c->id, out, scratch);
		check_roundtrip(frame, n, "to", &c->to, out, scratch);
		check_roundtrip(frame, n, "body", &c->body, out, scratch);
		check_roundtrip(frame, n, "reaction", &c->reaction, out, scratch);
		check_roundtrip(frame, n, "user", &c->user, out, scratch);
		check_roundtrip(frame, n, "reason", &c->reason, out, scratch);
		check_roundtrip(frame, n, "role", &c->role, out, scratch);
		check_roundtrip(frame, n, "topic", &c->topic, out, scratch);
	}
	free(out);
	free(scratch);
}

/* RFC 3629, section 4, byte ranges: an independent oracle for proto_utf8_valid. */
static int utf8_ref(const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = p[i];
		uint8_t lo = 0x80, hi = 0xbf;
		size_t k, more;

		if (c <= 0x7f) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			more = 1;
		else if (c >= 0xe0 && c <= 0xef)
			more = 2;
		else if (c >= 0xf0 && c <= 0xf4)
			more = 3;
		else
			return 0;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
		else if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
		if (n - i <= more)
			return 0;
		for (k = 1; k <= more; k++) {
			uint8_t b = p[i + k];
			if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xbf))
				return 0;
		}
		i += more + 1;
	}
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The decoder never sees invalid UTF-8 in the server (1007 first), but
	 * it must not care: feed everything, both ways. */
	int utf8 = proto_utf8_valid(data, size);
	static const size_t max_bodies[] = { 4096, 0, 1, 64 };
	struct proto_error err;
	struct proto_cmd cmd;
	char *copy;
	int rc;

	CHECK(utf8 == utf8_ref(data, size));
	/* An exact-size heap copy, so ASan sees any read past the frame (the
	 * server's frames are not NUL-terminated either). */
	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	if (size)
		memcpy(copy, data, size);

	rc = proto_decode(copy, size, max_bodies[size % 4], &cmd, &err);
	CHECK(rc == 0 || rc == -1);
	if (rc == 0) {
		CHECK(err.code == PROTO_OK);
		check_cmd(&cmd, max_bodies[size % 4]);
		check_strings(data, size, &cmd);
		CHECK(strcmp(proto_type_name(cmd.type), "?") != 0);
	} else {
		/* The decoder only ever says bad_request or too_large. */
		CHECK(err.code == PROTO_ERR_BAD_REQUEST || err.code == PROTO_ERR_TOO_LARGE);
		CHECK(memchr(err.message, '\0', sizeof err.message) != NULL);
		CHECK(err.message[0] != '\0');
		check_str(&cmd.ref, 0, PROTO_REF_MAX);
	}
	proto_cmd_free(&cmd);
	free(copy);
	return 0;
}
