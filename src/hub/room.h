/*
 * room.h - a room: its members, its sequence counter and epoch, a bounded
 * ring of recent messages (already encoded frames), and the dedup window of
 * client message ids.
 *
 * Rooms are owned by the hub's room table. A membership links one session
 * and one room; it sits in the room's member hash and the session's room
 * list, is created by room_member_add and freed by room_member_remove only.
 * Private to the hub (src/hub): engines name rooms, they never see one.
 */
#ifndef CHATD_ROOM_H
#define CHATD_ROOM_H

#include <stddef.h>
#include <stdint.h>

#include <uthash.h>

#include "msgbuf.h"
#include "proto.h"

struct session;

struct membership {
	struct room *room;
	struct session *sess;
	struct membership *sess_next;  /* sess->rooms: a session joins few rooms,
					* so a list beats a hash table per session */
	UT_hash_handle hh_room;        /* room->members, keyed by sess */
};

/* A growable circular array of pointers, bounded by a maximum length. */
struct room_ring {
	void **v;
	uint32_t cap, head, len;
};

struct room_dedup;
struct room_msg;
struct room_state;                      /* moderation and settings (hub_settings.c) */
struct hub_waiter;                      /* defined and owned by the hub */
struct hub_retry;

struct room {
	char name[PROTO_ROOM_MAX + 1];
	char epoch[17];
	uint64_t seq;                   /* latest committed seq; 0 = none yet */
	uint64_t seq_assigned;          /* latest seq handed to the engine (>= seq) */
	uint32_t pending;               /* messages between submit and commit */
	unsigned loading : 1;           /* an engine is fetching its state (cluster) */
	struct hub_waiter *waiters;     /* joins parked while loading, oldest first (hub-owned) */
	struct hub_retry *inflight;     /* retries of messages not yet committed (hub-owned) */
	unsigned idle : 1;              /* on the hub's idle list (hub-owned) */
	struct room *idle_prev, *idle_next;  /* that list, least recently used first */
	struct membership *members;
	uint32_t member_count;
	struct room_ring ring;          /* msgbuf refs of the last messages, seq order */
	uint64_t ring_first_seq;        /* seq of ring element 0 */
	struct room_ring dedup_fifo;    /* struct room_dedup *, oldest first */
	struct room_dedup *dedup;       /* hash of (from, id) -> seq */
	struct room_msg *msgs;          /* state of recent messages, oldest first (room_msgs.c) */
	struct room_state *state;       /* NULL: no role, ban, mute or setting yet */
	UT_hash_handle hh;              /* hub->rooms */
};

struct room *room_new(const char *name, size_t len, const char *epoch);
/* Free a room with no members: its ring references and dedup entries. */
void room_free(struct room *r);

/* Free a room's state (defined with it in hub_settings.c). */
void room_state_free(struct room_state *st);

/* Forget the ring and the dedup window (the history they came from is gone). */
void room_reset(struct room *r);

struct membership *room_member_find(struct room *r, struct session *s);
/* Link s into r. NULL on ENOMEM. */
struct membership *room_member_add(struct room *r, struct session *s);
/* Unlink and free m. */
void room_member_remove(struct membership *m);

/* Record message seq (its encoded frame, and its (from, id) for dedup); the
 * ring takes its own reference to frame. frame NULL (it could not be made):
 * only the dedup entry, and the ring restarts after seq. Keeps at most max_ring frames and
 * max_dedup ids (smaller limits after a reload apply here). The ring holds
 * consecutive seqs only: a seq that does not follow the ring's last one
 * starts a new ring. Does not touch r->seq. Returns -1 on ENOMEM. */
int room_append(struct room *r, uint64_t seq, struct msgbuf *frame, const char *from,
		size_t from_len, const char *id, size_t id_len, uint32_t max_ring,
		uint32_t max_dedup);

/* The seq a (from, id) pair was accepted with, or 0 if not in the window. */
uint64_t room_dedup_find(struct room *r, const char *from, size_t from_len,
			 const char *id, size_t id_len);

/* Oldest seq still held in the ring (r->seq + 1 when the ring is empty). */
uint64_t room_oldest_seq(const struct room *r);
/* The frame for seq, or NULL if not held. */
struct msgbuf *room_frame(const struct room *r, uint64_t seq);
/* Put frame (a new reference is taken) in place of seq's; -1 if not held. */
int room_frame_replace(struct room *r, uint64_t seq, struct msgbuf *frame);

/* ---- room_msgs.c: what edits, deletions and reactions did to the room's
 * recent messages, so that they can be checked and served. Owned by the
 * room; room_reset and room_free drop it. */
struct room_reaction {
	struct room_reaction *next;
	char name[PROTO_NAME_MAX + 1];          /* who */
	char reaction[PROTO_REACTION_MAX + 1];  /* what */
};

struct room_edit {
	uint64_t seq, ts;
	char id[PROTO_ID_MAX + 1];
};

struct room_msg {
	uint64_t seq, ts;
	uint64_t edited_ts;             /* ts of the latest edit, 0 = never edited */
	uint32_t edits;
	unsigned deleted : 1;
	char from[PROTO_NAME_MAX + 1];
	char id[PROTO_ID_MAX + 1];
	char *body;                     /* the edited text (heap); NULL: not edited (the
					 * ring's frame has the text) or deleted */
	size_t body_len;
	struct room_edit *edit_list;    /* its edit events (at most max_edits kept) */
	uint32_t edits_kept;            /* entries in edit_list */
	struct room_reaction *reactions;
	uint32_t distinct;              /* distinct reactions */
	UT_hash_handle hh;              /* room->msgs, by seq */
};

/* Remember message seq (copies from and id, not the text, which the ring's
 * frame holds); keeps at most max entries, dropping the oldest. NULL on
 * ENOMEM (or max == 0). */
struct room_msg *room_msg_add(struct room *r, uint64_t seq, uint64_t ts, const char *from,
			      const char *id, uint32_t max);
struct room_msg *room_msg_find(const struct room *r, uint64_t seq);
/* Replace the current text (copied); -1 on ENOMEM (unchanged then). */
int room_msg_set_body(struct room_msg *m, const char *body, size_t len);
/* Count one more edit event of m, and remember it (at most max); -1 on ENOMEM. */
int room_msg_add_edit(struct room_msg *m, uint64_t seq, uint64_t ts, const char *id,
		      uint32_t max);
/* Deleted: the text, edits' seqs stay (their frames are blanked), reactions go. */
void room_msg_delete(struct room_msg *m);
/* The reaction of name on m, or NULL. */
struct room_reaction *room_msg_reaction(const struct room_msg *m, const char *name,
					const char *reaction);
/* How many users reacted with reaction on m. */
uint32_t room_msg_reaction_count(const struct room_msg *m, const char *reaction);
int room_msg_react(struct room_msg *m, const char *name, const char *reaction);
void room_msg_unreact(struct room_msg *m, const char *name, const char *reaction);
void room_msgs_clear(struct room *r);


#endif
