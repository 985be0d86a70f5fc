/*
 * proto.h - the chat.v1 wire protocol in one place: decoding client frames
 * into commands (proto.c), encoding every event the server sends
 * (proto_encode.c), and the names both share.
 *
 * Both halves are pure (no hub state): bytes in, a validated command or an
 * error code with a message out; values in, a finished frame out. So they
 * can be unit-tested and fuzzed alone.
 */
#ifndef CHATD_PROTO_H
#define CHATD_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_SUBPROTOCOL "chat.v1"
#define PROTO_NAME_MAX 32
/* A room name: 1..64 bytes of [A-Za-z0-9_.:-], or a DM conversation
 * "@a:b" (two user names, sorted), which is up to 66. */
#define PROTO_ROOM_MAX 66
#define PROTO_ROOM_NAME_MAX 64
/* A reaction: one emoji or a short token (bytes of UTF-8). */
#define PROTO_REACTION_MAX 32
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
	PROTO_EDIT,
	PROTO_DELETE,       /* own message: a sequenced delete; another's: moderation */
	PROTO_REACT,
	PROTO_TYPING,
	PROTO_READ,
	PROTO_CONVERSATIONS,
	PROTO_REFRESH,      /* a new token for the same sub */
	PROTO_KICK,         /* moderation (moderator or owner) */
	PROTO_BAN,
	PROTO_UNBAN,
	PROTO_MUTE,
	PROTO_UNMUTE,
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
	struct proto_str body;      /* send dm edit */
	struct proto_str reaction;  /* react */
	int on;                     /* react typing: add (1) or remove (0) */
	int state;                  /* history: current state of messages, no events */
	int has_since, has_before, has_after;
	uint64_t since, before, after;
	unsigned limit;             /* history: 1..PROTO_HISTORY_MAX */
	struct proto_str user;      /* moderation: the target */
	struct proto_str reason;    /* kick ban mute: optional, <= PROTO_REASON_MAX */
	struct proto_str role;      /* grant */
	int has_duration;           /* ban mute: seconds; none = permanent */
	uint64_t duration;
	int has_seq;                /* delete (also edit react read: seq, the message) */
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
/* The conversation of users a and b: "@" min ":" max (out: PROTO_ROOM_MAX + 1). */
void proto_dm_room(char *out, const char *a, const char *b);
/* room is a DM conversation: 1, and the other party of me in *peer (NULL
 * if me is not a party); 0 if room is an ordinary room. */
int proto_dm_peer(const char *room, size_t len, const char *me, const char **peer, size_t *peer_len);

/*
 * Encoding. Each proto_encode_* returns the event's JSON text in a new
 * msgbuf (one reference, the caller's), or NULL on ENOMEM. Strings are
 * NUL-terminated valid UTF-8 (they came in through proto_decode or from
 * the server itself); ref NULL or ref->p NULL: the event carries no ref.
 * Events with a list of names are written in three steps: proto_w_joined or
 * proto_w_members opens the event and its list, proto_w_name adds a name,
 * and the matching proto_encode_*_end closes the list and finishes it.
 */
struct jsonw;
struct msgbuf;

/*
 * What a sequenced event of a room is. Edits, deletions and reactions take
 * their own seq like messages and name an earlier message (target). body:
 * the new text (edit), the reaction (react, unreact), "" (delete).
 */
enum proto_kind {
	PROTO_KIND_MESSAGE = 0,
	PROTO_KIND_EDIT = 1,
	PROTO_KIND_DELETE = 2,
	PROTO_KIND_REACT = 3,
	PROTO_KIND_UNREACT = 4,
	PROTO_KIND_COUNT
};

/* A chat message as message and direct events carry it (strings borrowed),
 * or another sequenced event (kind, target). deleted: its text was removed
 * (a deleted message, or an edit of one). */
struct proto_msg {
	uint64_t seq, ts;
	const char *from, *id, *body;
	size_t body_len;
	int kind;                   /* enum proto_kind */
	uint64_t target;
	int deleted;
};

struct msgbuf *proto_encode_error(enum proto_err code, const char *message,
				  const struct proto_str *ref);
/* room NULL: the ack of a dm (no room, no seq). */
struct msgbuf *proto_encode_ack(const char *id, const char *room, uint64_t seq, const char *ref);
/* exp: the token's exp claim (0: none, not written). */
struct msgbuf *proto_encode_welcome(const char *session, const char *name, double heartbeat,
				    const char *node, double exp, const struct proto_str *ref);
struct msgbuf *proto_encode_pong(const struct proto_str *ref);
/* reason NULL: the answer to leave; else why the server took s out ("token"). */
struct msgbuf *proto_encode_left(const char *room, const char *reason, const struct proto_str *ref);
struct msgbuf *proto_encode_presence(const char *room, const char *name, int join);
struct msgbuf *proto_encode_reset(const char *room, const char *epoch, uint64_t seq);
struct msgbuf *proto_encode_message(const char *room, const struct proto_msg *m);
struct msgbuf *proto_encode_direct(const struct proto_msg *m);
/* frames: n message events (their text), oldest first. */
struct msgbuf *proto_encode_history(const char *room, struct msgbuf *const *frames, uint32_t n,
				    const struct proto_str *ref);
/* What joined tells a member about the room: its role and the settings. */
struct proto_room_info {
	const char *role;          /* "owner", "moderator", "member" */
	int private_room, read_only;
	uint32_t history;
	const char *topic;         /* NULL: none */
};

/* read: the user's read marker in room. members: a size hint. info NULL:
 * no role and settings. recovered and truncated are written with has_since
 * only. */
void proto_w_joined(struct jsonw *w, const char *room, uint64_t seq, const char *epoch,
		    uint64_t read, uint32_t members, const struct proto_room_info *info);
struct msgbuf *proto_encode_joined_end(struct jsonw *w, int has_since, int recovered,
				       int truncated, const struct proto_str *ref);
void proto_w_members(struct jsonw *w, const char *room, uint32_t members);
struct msgbuf *proto_encode_members_end(struct jsonw *w, const struct proto_str *ref);
void proto_w_name(struct jsonw *w, const char *name);

/* Conversations (issue 14). proto_encode_message writes an edit, delete or
 * react event when m->kind says so, and a tombstone when m->deleted. */
/* "direct" of a conversation message: the old fields, and room and seq. */
struct msgbuf *proto_encode_direct_in(const char *room, const struct proto_msg *m);
struct msgbuf *proto_encode_typing(const char *room, const char *from, int on, uint64_t ttl_ms);
struct msgbuf *proto_encode_read(const char *room, uint64_t seq, const struct proto_str *ref);
struct msgbuf *proto_encode_receipt(const char *room, const char *from, uint64_t seq);
/* A message's current state (history {state}), in steps: proto_w_state
 * (m: the current text, or deleted; edited/edits written when edits > 0),
 * then for each reaction proto_w_reaction, proto_w_name per user and
 * proto_w_reaction_end, then proto_encode_state_end. */
void proto_w_state(struct jsonw *w, const char *room, const struct proto_msg *m,
		   uint64_t edited, uint32_t edits, size_t hint);
void proto_w_reaction(struct jsonw *w, const char *reaction, uint32_t count);
void proto_w_reaction_end(struct jsonw *w);
struct msgbuf *proto_encode_state_end(struct jsonw *w);
/* The conversations list: proto_w_conversations, proto_w_conversation each,
 * proto_encode_conversations_end. */
void proto_w_conversations(struct jsonw *w);
void proto_w_conversation(struct jsonw *w, const char *room, const char *with, size_t with_len,
			  uint64_t seq, uint64_t read);
struct msgbuf *proto_encode_conversations_end(struct jsonw *w, const struct proto_str *ref);
/* Tokens and moderation (proto_encode_mod.c). */
/* end: when the session is closed (unix s); in: seconds left; reason "exp"
 * or "key_rotated". */
struct msgbuf *proto_encode_token_expiring(double end, double in, const char *reason);
/* exp 0: the new token has none. */
struct msgbuf *proto_encode_refreshed(double exp, const struct proto_str *ref);
/* A moderation event as its fields; NULL/0 members are left out. */
struct proto_mod_event {
	const char *action;        /* kick ban unban mute unmute invite grant delete settings */
	const char *user, *by, *role;
	struct proto_str reason;   /* p NULL: none */
	int has_until;             /* ban, mute: ms since the epoch, 0 = permanent */
	uint64_t until;
	int has_seq;               /* delete */
	uint64_t seq;
	int has_private, private_room, has_read_only, read_only, has_history;   /* settings */
	uint64_t history;
	struct proto_str topic;    /* settings; p NULL: not changed */
};
/* The JSON object text that is the body of a moderation event. */
struct msgbuf *proto_encode_mod_body(const struct proto_mod_event *e);
/* kind "kicked" or "banned": to the removed user's sessions. by, reason may
 * be NULL; until is written with has_until. */
struct msgbuf *proto_encode_removed(const char *kind, const char *room, const char *by,
				   const char *reason, int has_until, uint64_t until);
/* presence leave that says why: cause "kicked" or "banned". */
struct msgbuf *proto_encode_presence_cause(const char *room, const char *name, const char *cause,
					   const char *by, const char *reason);

#endif
