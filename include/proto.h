/*
 * proto.h - the chat.v1 wire protocol: decoding client frames into commands,
 * and the names shared by encoder and decoder.
 *
 * Decoding is pure (no hub state): bytes in, a validated command or an error
 * code with a message out, so it can be unit-tested and fuzzed alone.
 */
#ifndef CHATD_PROTO_H
#define CHATD_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_SUBPROTOCOL "chat.v1"
#define PROTO_NAME_MAX 32
#define PROTO_ROOM_MAX 64
#define PROTO_ID_MAX 64
#define PROTO_REF_MAX 64
#define PROTO_EPOCH_MAX 64
#define PROTO_HISTORY_DEFAULT 50
#define PROTO_HISTORY_MAX 500

enum proto_type {
	PROTO_HELLO,
	PROTO_JOIN,
	PROTO_LEAVE,
	PROTO_SEND,
	PROTO_DM,
	PROTO_HISTORY,
	PROTO_MEMBERS,
	PROTO_PING,
	PROTO_REFRESH,      /* a new token for the same sub */
	PROTO_KICK,         /* moderation (moderator or owner) */
	PROTO_BAN,
	PROTO_UNBAN,
	PROTO_MUTE,
	PROTO_UNMUTE,
	PROTO_DELETE,
	PROTO_INVITE,
	PROTO_GRANT,        /* owner */
	PROTO_SETTINGS,     /* owner */
};

#define PROTO_REASON_MAX 256
#define PROTO_TOPIC_MAX 256
/* A name no client can have ([A-Za-z0-9_.-] only): the sender of the
 * sequenced moderation events in a room's history. */
#define PROTO_MOD_SENDER "!mod"

/* Error codes of the contract, in the order of proto_err_name(). */
enum proto_err {
	PROTO_OK = 0,
	PROTO_ERR_BAD_REQUEST,
	PROTO_ERR_NOT_AUTHENTICATED,
	PROTO_ERR_FORBIDDEN,
	PROTO_ERR_NOT_FOUND,
	PROTO_ERR_CONFLICT,
	PROTO_ERR_RATE_LIMITED,
	PROTO_ERR_TOO_LARGE,
	PROTO_ERR_UNAVAILABLE,
	PROTO_ERR_INTERNAL,
	PROTO_ERR_COUNT
};

/* A string inside the decoded frame (not NUL-terminated-safe: use len). */
struct proto_str {
	const char *p;
	size_t len;
};

struct proto_cmd {
	enum proto_type type;
	struct proto_str ref;       /* p == NULL: no ref */
	struct proto_str name;      /* hello */
	struct proto_str token;     /* hello (auth issue) */
	struct proto_str room;      /* join leave send history members */
	struct proto_str epoch;     /* join */
	struct proto_str id;        /* send dm */
	struct proto_str to;        /* dm */
	struct proto_str body;      /* send dm */
	int has_since, has_before, has_after;
	uint64_t since, before, after;
	unsigned limit;             /* history: 1..PROTO_HISTORY_MAX */
	struct proto_str user;      /* moderation: the target */
	struct proto_str reason;    /* kick ban mute: optional, <= PROTO_REASON_MAX */
	struct proto_str role;      /* grant */
	int has_duration;           /* ban mute: seconds; none = permanent */
	uint64_t duration;
	int has_seq;                /* delete */
	uint64_t seq;
	int has_private, has_read_only, has_history;   /* settings */
	int private_room, read_only;
	uint64_t history;
	struct proto_str topic;     /* settings: p != NULL when given */
	void *json;                 /* the parsed document; owned, see proto_cmd_free */
};

struct proto_error {
	enum proto_err code;
	char message[128];
};

/*
 * Decode one text frame. Returns 0 and fills *cmd, or -1 and fills *err;
 * in both cases cmd->ref is set when the frame carried a valid ref (so an
 * error can echo it), and proto_cmd_free(cmd) must be called afterwards.
 * max_body is limits.max_message_bytes.
 */
int proto_decode(const char *data, size_t len, size_t max_body,
		 struct proto_cmd *cmd, struct proto_error *err);
void proto_cmd_free(struct proto_cmd *cmd);

const char *proto_err_name(enum proto_err code);
const char *proto_type_name(enum proto_type type);

/* NULL if data[0..len) is exactly one JSON text per RFC 8259 (valid UTF-8,
 * strict numbers and escapes, no \u0000, no unpaired surrogate, nesting at
 * most 32 deep), else a message for bad_request saying why not. */
const char *proto_json_strict(const char *data, size_t len);

/* RFC 3629 UTF-8 (no overlongs, no surrogates, nothing past U+10FFFF). */
int proto_utf8_valid(const unsigned char *p, size_t len);

/* Validators shared with other modules. */
int proto_valid_name(const char *p, size_t len);
int proto_valid_room(const char *p, size_t len);

#endif
