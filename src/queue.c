#include "queue.h"

#include <stdlib.h>
#include <string.h>

/*
 * One entry: the msgbuf with the droppable flag in its low bit (msgbufs come
 * from malloc, so the bit is free), and the time it was queued.
 */
struct queue_ent {
	uintptr_t mbf;
	double t;                 /* when queued, for the delivery histogram; 0 = not measured */
};

#define QUEUE_DROPPABLE ((uintptr_t)1)

static inline struct msgbuf *queue_ent_mb(const struct queue_ent *e)
{
	return (struct msgbuf *)(e->mbf & ~QUEUE_DROPPABLE);
}

/*
 * The smallest ring, and a free list of them: a queue that empties and
 * fills again every loop iteration (one frame per recipient per broadcast)
 * takes back the ring it just gave, still in cache. The list is capped so
 * that rings taken during a burst of many recipients are given back.
 */
#define QUEUE_RING_MIN 8
#define QUEUE_POOL_MAX 4096

static struct queue_ent *queue_pool[QUEUE_POOL_MAX];
static size_t queue_pool_len;

static struct queue_ent *queue_ring_get(void)
{
	if (queue_pool_len)
		return queue_pool[--queue_pool_len];
	return malloc(QUEUE_RING_MIN * sizeof(struct queue_ent));
}

/* Give back q's ring (q is empty). */
static void queue_ring_put(struct queue *q)
{
	if (q->cap == QUEUE_RING_MIN && queue_pool_len < QUEUE_POOL_MAX)
		queue_pool[queue_pool_len++] = q->ring;
	else
		free(q->ring);
	q->ring = NULL;
	q->cap = 0;
	q->head = 0;
}

void queue_pool_drain(void)
{
	while (queue_pool_len)
		free(queue_pool[--queue_pool_len]);
}

void queue_init(struct queue *q)
{
	q->ring = NULL;
	q->head = q->count = q->cap = 0;
	q->bytes = 0;
}

static inline struct queue_ent *queue_at(const struct queue *q, uint32_t i)
{
	return &q->ring[(q->head + i) & (q->cap - 1)];
}

/* Room for one more entry: a first ring, or twice the old one (in order). */
static int queue_grow(struct queue *q)
{
	struct queue_ent *r;
	uint32_t cap, i;

	if (!q->ring) {
		if (!(q->ring = queue_ring_get()))
			return -1;
		q->cap = QUEUE_RING_MIN;
		q->head = 0;
		return 0;
	}
	if (q->cap > UINT32_MAX / 2)
		return -1;
	cap = q->cap * 2;
	if (!(r = malloc((size_t)cap * sizeof(*r))))
		return -1;
	for (i = 0; i < q->count; i++)
		r[i] = *queue_at(q, i);
	queue_ring_put(q);
	q->ring = r;
	q->cap = cap;
	return 0;
}

int queue_push(struct queue *q, struct msgbuf *mb, int droppable)
{
	return queue_push_at(q, mb, droppable, 0);
}

int queue_push_at(struct queue *q, struct msgbuf *mb, int droppable, double t)
{
	struct queue_ent *e;

	if (q->count == q->cap && queue_grow(q))
		return -1;
	e = queue_at(q, q->count);
	e->mbf = (uintptr_t)msgbuf_ref(mb) | (droppable ? QUEUE_DROPPABLE : 0);
	e->t = t;
	q->count++;
	q->bytes += mb->len;
	return 0;
}

struct msgbuf *queue_peek(const struct queue *q)
{
	return q->count ? queue_ent_mb(queue_at(q, 0)) : NULL;
}

double queue_pop(struct queue *q)
{
	struct queue_ent *e;
	struct msgbuf *mb;
	double t;

	if (!q->count)
		return 0;
	e = queue_at(q, 0);
	mb = queue_ent_mb(e);
	t = e->t;
	q->head = (q->head + 1) & (q->cap - 1);
	q->count--;
	q->bytes -= mb->len;
	msgbuf_unref(mb);
	if (!q->count)
		queue_ring_put(q);
	return t;
}

int queue_frames(struct queue *q, struct iovec *iov, int max, size_t max_bytes)
{
	size_t total = 0;
	int i, n = q->count < (uint32_t)max ? (int)q->count : max;

	for (i = 0; i < n; i++) {
		struct msgbuf *mb = queue_ent_mb(queue_at(q, (uint32_t)i));

		if (!mb->hdr)
			msgbuf_frame_text(mb);
		if (i > 0 && total + msgbuf_frame_len(mb) > max_bytes)
			break;
		iov[i].iov_base = (void *)msgbuf_frame(mb);
		iov[i].iov_len = msgbuf_frame_len(mb);
		total += iov[i].iov_len;
	}
	return i;
}

/*
 * Drop the oldest droppable entries while over a bound; the kept entries
 * slide down over the dropped ones in one pass, keeping their order.
 */
size_t queue_drop_oldest(struct queue *q, uint32_t max_count, size_t max_bytes)
{
	uint32_t r, w = 0, n = q->count;
	size_t dropped = 0;

	for (r = 0; r < n; r++) {
		struct queue_ent *e = queue_at(q, r);

		if ((e->mbf & QUEUE_DROPPABLE) &&
		    (q->count > max_count || q->bytes > max_bytes)) {
			struct msgbuf *mb = queue_ent_mb(e);
			q->count--;
			q->bytes -= mb->len;
			msgbuf_unref(mb);
			dropped++;
			continue;
		}
		if (w != r)
			*queue_at(q, w) = *e;
		w++;
	}
	if (!q->count && q->ring)
		queue_ring_put(q);
	return dropped;
}

void queue_clear(struct queue *q)
{
	uint32_t i;

	for (i = 0; i < q->count; i++)
		msgbuf_unref(queue_ent_mb(queue_at(q, i)));
	q->count = 0;
	q->bytes = 0;
	if (q->ring)
		queue_ring_put(q);
}
