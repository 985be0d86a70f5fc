/*
 * fuzz_proto - libFuzzer target for the chat.v1 frame decoder.
 *
 * Input: one text frame, as the transport hands it to the hub. Checks, on
 * top of ASan/UBSan/LSan:
 *  - proto_decode returns 0 or -1 and fills exactly one of cmd / err;
 *  - an error has a known code and a NUL-terminated, non-empty message;
 *  - a decoded command obeys the contract of proto.h (lengths, charsets,
 *    history limit range, strings that point into the parsed document).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
		break;
	default:
		CHECK(0);
	}
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
