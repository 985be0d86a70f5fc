/*
 * queue.h - a session's send queue: a FIFO of msgbuf references.
 *
 * The queue itself is unbounded plain data; the bounds (messages, bytes,
 * global bytes) and the slow-consumer policy are applied by the hub before
 * every push, so they are never overshot.
 *
 * Entries live in one array used as a ring (a pointer and a time each), so
 * a push is a store and the writer walks contiguous memory: no allocation
 * per recipient. An empty queue holds no array: the smallest rings go back
 * to a capped free list, bigger ones (grown by a backlog) are freed, so an
 * idle connection costs nothing here and a burst's memory is given back.
 */
#ifndef CHATD_QUEUE_H
#define CHATD_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "msgbuf.h"

struct queue_ent;

struct queue {
	struct queue_ent *ring;   /* cap entries, NULL while empty */
	uint32_t head;            /* index of the oldest entry */
	uint32_t count;           /* entries */
	uint32_t cap;             /* 0 or a power of two */
	size_t bytes;             /* sum of payload lengths */
};

void queue_init(struct queue *q);

/*
 * Append mb; the queue takes its own reference (the caller keeps its own).
 * droppable marks a message or direct event (live or replayed), which the
 * drop_oldest policy may discard; replies and presence are never dropped. Returns 0, -1 on ENOMEM.
 */
int queue_push(struct queue *q, struct msgbuf *mb, int droppable);
/* The same, stamped with the time t it was queued (seconds; 0 = unstamped),
 * which queue_pop hands back so the wait can be measured. */
int queue_push_at(struct queue *q, struct msgbuf *mb, int droppable, double t);

/* The oldest entry, or NULL. The reference stays the queue's. */
struct msgbuf *queue_peek(const struct queue *q);

/* Remove the oldest entry and drop its reference. No-op when empty.
 * Returns the entry's queue_push_at time (0 when unstamped or empty). */
double queue_pop(struct queue *q);

/*
 * The oldest entries as complete WebSocket text frames, for one gathered
 * write: fills iov with up to max frames (framing each msgbuf once, see
 * msgbuf_frame_text) while their total stays within max_bytes, but always
 * at least one frame. Returns the count. The bytes stay the queue's: valid
 * until those entries are popped.
 */
int queue_frames(struct queue *q, struct iovec *iov, int max, size_t max_bytes);

/*
 * Drop the oldest droppable entries until count <= max_count and
 * bytes <= max_bytes, or none is left. Returns the number dropped.
 */
size_t queue_drop_oldest(struct queue *q, uint32_t max_count, size_t max_bytes);

/* Drop every entry. */
void queue_clear(struct queue *q);

/* Release the ring free list (at exit, so leak checkers see nothing). */
void queue_pool_drain(void);

#endif
