#include "queue.h"

#include <stdlib.h>

struct queue_node {
	struct queue_node *next;
	struct msgbuf *mb;
	int droppable;
	double t;                 /* when queued, for the delivery histogram; 0 = not measured */
};

/*
 * Free list of nodes. It is capped so that memory taken during a burst is
 * given back afterwards instead of being held forever.
 */
#define QUEUE_POOL_MAX 8192

static struct queue_node *queue_pool;
static size_t queue_pool_len;

static struct queue_node *queue_node_get(void)
{
	struct queue_node *n = queue_pool;

	if (n) {
		queue_pool = n->next;
		queue_pool_len--;
		return n;
	}
	return malloc(sizeof(*n));
}

static void queue_node_put(struct queue_node *n)
{
	if (queue_pool_len >= QUEUE_POOL_MAX) {
		free(n);
		return;
	}
	n->next = queue_pool;
	queue_pool = n;
	queue_pool_len++;
}

void queue_pool_drain(void)
{
	while (queue_pool) {
		struct queue_node *n = queue_pool;
		queue_pool = n->next;
		free(n);
	}
	queue_pool_len = 0;
}

void queue_init(struct queue *q)
{
	q->head = q->tail = NULL;
	q->count = 0;
	q->bytes = 0;
}

int queue_push(struct queue *q, struct msgbuf *mb, int droppable)
{
	return queue_push_at(q, mb, droppable, 0);
}

int queue_push_at(struct queue *q, struct msgbuf *mb, int droppable, double t)
{
	struct queue_node *n = queue_node_get();

	if (!n)
		return -1;
	n->next = NULL;
	n->mb = msgbuf_ref(mb);
	n->droppable = droppable;
	n->t = t;
	if (q->tail)
		q->tail->next = n;
	else
		q->head = n;
	q->tail = n;
	q->count++;
	q->bytes += mb->len;
	return 0;
}

struct msgbuf *queue_peek(const struct queue *q)
{
	return q->head ? q->head->mb : NULL;
}

/* Unlink n, whose predecessor is prev (NULL for the head). */
static void queue_unlink(struct queue *q, struct queue_node *prev, struct queue_node *n)
{
	if (prev)
		prev->next = n->next;
	else
		q->head = n->next;
	if (q->tail == n)
		q->tail = prev;
	q->count--;
	q->bytes -= n->mb->len;
	msgbuf_unref(n->mb);
	queue_node_put(n);
}

double queue_pop(struct queue *q)
{
	double t;

	if (!q->head)
		return 0;
	t = q->head->t;
	queue_unlink(q, NULL, q->head);
	return t;
}

int queue_frames(struct queue *q, struct iovec *iov, int max, size_t max_bytes)
{
	struct queue_node *n;
	size_t total = 0;
	int i = 0;

	for (n = q->head; n && i < max; n = n->next, i++) {
		msgbuf_frame_text(n->mb);
		if (i > 0 && total + msgbuf_frame_len(n->mb) > max_bytes)
			break;
		iov[i].iov_base = (void *)msgbuf_frame(n->mb);
		iov[i].iov_len = msgbuf_frame_len(n->mb);
		total += iov[i].iov_len;
	}
	return i;
}

size_t queue_drop_oldest(struct queue *q, uint32_t max_count, size_t max_bytes)
{
	struct queue_node *prev = NULL, *n = q->head;
	size_t dropped = 0;

	while (n && (q->count > max_count || q->bytes > max_bytes)) {
		struct queue_node *next = n->next;
		if (n->droppable) {
			queue_unlink(q, prev, n);
			dropped++;
		} else {
			prev = n;
		}
		n = next;
	}
	return dropped;
}

void queue_clear(struct queue *q)
{
	while (q->head)
		queue_unlink(q, NULL, q->head);
}
