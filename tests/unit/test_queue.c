/*
 * test_queue.c - the per-session send queue: FIFO order, count/byte
 * accounting, reference counting of shared msgbufs, drop_oldest, clear.
 *
 * Every test ends with msgbuf_live() == 0 (no buffer leaked); the ring pool
 * is drained after each test so ASan's leak check sees nothing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "msgbuf.h"
#include "queue.h"

static struct msgbuf *mk(const char *s)
{
	struct msgbuf *mb = msgbuf_from(s, strlen(s));
	assert_non_null(mb);
	return mb;
}

/* Push a fresh buffer and drop the caller's reference: the queue owns it. */
static void push_new(struct queue *q, const char *s, int droppable)
{
	struct msgbuf *mb = mk(s);
	assert_int_equal(queue_push(q, mb, droppable), 0);
	assert_int_equal(mb->refs, 2);
	msgbuf_unref(mb);
}

/* Pop every entry into out as "a,b,c", checking count and bytes at each step. */
static void drain(struct queue *q, char *out, size_t outlen)
{
	out[0] = '\0';
	while (q->count) {
		struct msgbuf *mb = queue_peek(q);
		uint32_t c = q->count;
		size_t b = q->bytes, len;

		assert_non_null(mb);
		len = mb->len;
		if (out[0])
			strncat(out, ",", outlen - strlen(out) - 1);
		strncat(out, (const char *)mb->data, outlen - strlen(out) - 1);
		queue_pop(q);
		assert_int_equal(q->count, c - 1);
		assert_int_equal(q->bytes, b - len);
	}
	assert_null(queue_peek(q));
	assert_int_equal(q->bytes, 0);
}

static int teardown(void **state)
{
	(void)state;
	queue_pool_drain();
	return 0;
}

static void test_empty_queue_peeks_null_and_pop_is_noop(void **state)
{
	struct queue q;

	queue_init(&q);
	assert_null(queue_peek(&q));
	queue_pop(&q);
	assert_int_equal(q.count, 0);
	assert_int_equal(q.bytes, 0);
	assert_null(queue_peek(&q));
	assert_int_equal(msgbuf_live(), 0);
}

static void test_push_peek_pop_is_fifo(void **state)
{
	struct queue q;
	char out[64];

	queue_init(&q);
	push_new(&q, "one", 1);
	push_new(&q, "two", 0);
	push_new(&q, "three", 1);
	assert_string_equal((const char *)queue_peek(&q)->data, "one");
	/* peek does not remove */
	assert_string_equal((const char *)queue_peek(&q)->data, "one");
	assert_int_equal(q.count, 3);
	drain(&q, out, sizeof out);
	assert_string_equal(out, "one,two,three");
	assert_int_equal(msgbuf_live(), 0);
}

static void test_count_and_bytes_track_push_and_pop(void **state)
{
	struct queue q;

	queue_init(&q);
	push_new(&q, "ab", 1);
	assert_int_equal(q.count, 1);
	assert_int_equal(q.bytes, 2);
	push_new(&q, "cdef", 1);
	assert_int_equal(q.count, 2);
	assert_int_equal(q.bytes, 6);
	push_new(&q, "", 0);
	assert_int_equal(q.count, 3);
	assert_int_equal(q.bytes, 6);
	queue_pop(&q);
	assert_int_equal(q.count, 2);
	assert_int_equal(q.bytes, 4);
	queue_pop(&q);
	queue_pop(&q);
	assert_int_equal(q.count, 0);
	assert_int_equal(q.bytes, 0);
	/* reusable after emptying (tail reset) */
	push_new(&q, "x", 1);
	push_new(&q, "y", 1);
	assert_string_equal((const char *)queue_peek(&q)->data, "x");
	queue_clear(&q);
	assert_int_equal(msgbuf_live(), 0);
}

static void test_queue_takes_its_own_reference(void **state)
{
	struct queue q;
	struct msgbuf *mb = mk("hello");

	queue_init(&q);
	assert_int_equal(mb->refs, 1);
	assert_int_equal(queue_push(&q, mb, 1), 0);
	assert_int_equal(mb->refs, 2);
	assert_ptr_equal(queue_peek(&q), mb);
	assert_int_equal(mb->refs, 2);      /* peek takes no reference */
	queue_pop(&q);
	assert_int_equal(mb->refs, 1);      /* the caller's is still there */
	assert_int_equal(msgbuf_live(), 1);
	msgbuf_unref(mb);
	assert_int_equal(msgbuf_live(), 0);
}

static void test_caller_may_drop_its_reference_after_push(void **state)
{
	struct queue q;
	struct msgbuf *mb = mk("kept alive by the queue");

	queue_init(&q);
	assert_int_equal(queue_push(&q, mb, 0), 0);
	msgbuf_unref(mb);
	assert_int_equal(msgbuf_live(), 1);
	assert_string_equal((const char *)queue_peek(&q)->data, "kept alive by the queue");
	queue_pop(&q);
	assert_int_equal(msgbuf_live(), 0);
}

static void test_shared_buffer_freed_only_when_last_queue_pops(void **state)
{
	struct queue q[3];
	struct msgbuf *mb = mk("broadcast");
	int i;

	for (i = 0; i < 3; i++) {
		queue_init(&q[i]);
		assert_int_equal(queue_push(&q[i], mb, 1), 0);
	}
	assert_int_equal(mb->refs, 4);
	msgbuf_unref(mb);                   /* the broadcaster is done with it */
	assert_int_equal(mb->refs, 3);
	for (i = 0; i < 3; i++)
		assert_ptr_equal(queue_peek(&q[i]), mb);

	queue_pop(&q[1]);
	assert_int_equal(mb->refs, 2);
	assert_int_equal(msgbuf_live(), 1);
	queue_pop(&q[0]);
	assert_int_equal(mb->refs, 1);
	assert_int_equal(msgbuf_live(), 1);
	assert_string_equal((const char *)queue_peek(&q[2])->data, "broadcast");
	queue_pop(&q[2]);
	assert_int_equal(msgbuf_live(), 0);
}

static void test_same_buffer_twice_in_one_queue(void **state)
{
	struct queue q;
	struct msgbuf *mb = mk("dup");

	queue_init(&q);
	assert_int_equal(queue_push(&q, mb, 1), 0);
	assert_int_equal(queue_push(&q, mb, 1), 0);
	msgbuf_unref(mb);
	assert_int_equal(q.count, 2);
	assert_int_equal(q.bytes, 6);
	queue_pop(&q);
	assert_int_equal(msgbuf_live(), 1);
	queue_pop(&q);
	assert_int_equal(msgbuf_live(), 0);
}

static void test_drop_oldest_drops_droppable_oldest_first(void **state)
{
	struct queue q;
	char out[64];

	queue_init(&q);
	push_new(&q, "m1", 1);
	push_new(&q, "m2", 1);
	push_new(&q, "m3", 1);
	push_new(&q, "m4", 1);
	assert_int_equal(queue_drop_oldest(&q, 2, 1000), 2);
	assert_int_equal(q.count, 2);
	assert_int_equal(q.bytes, 4);
	drain(&q, out, sizeof out);
	assert_string_equal(out, "m3,m4");
	assert_int_equal(msgbuf_live(), 0);
}

static void test_drop_oldest_skips_entries_that_are_not_droppable(void **state)
{
	struct queue q;
	char out[64];

	queue_init(&q);
	push_new(&q, "reply", 0);
	push_new(&q, "m1", 1);
	push_new(&q, "presence", 0);
	push_new(&q, "m2", 1);
	push_new(&q, "m3", 1);
	assert_int_equal(queue_drop_oldest(&q, 3, 1000), 2);
	assert_int_equal(q.count, 3);
	drain(&q, out, sizeof out);
	assert_string_equal(out, "reply,presence,m3");
	assert_int_equal(msgbuf_live(), 0);
}

static void test_drop_oldest_stops_at_the_count_bound(void **state)
{
	struct queue q;
	char out[64];

	queue_init(&q);
	push_new(&q, "m1", 1);
	push_new(&q, "m2", 1);
	push_new(&q, "m3", 1);
	/* already within bounds: nothing dropped */
	assert_int_equal(queue_drop_oldest(&q, 3, 6), 0);
	assert_int_equal(q.count, 3);
	assert_int_equal(queue_drop_oldest(&q, 2, 1000), 1);
	drain(&q, out, sizeof out);
	assert_string_equal(out, "m2,m3");
	assert_int_equal(msgbuf_live(), 0);
}

static void test_drop_oldest_stops_at_the_byte_bound(void **state)
{
	struct queue q;
	char out[64];

	queue_init(&q);
	push_new(&q, "aaaa", 1);   /* 4 */
	push_new(&q, "bb", 1);     /* 2 */
	push_new(&q, "ccc", 1);    /* 3 */
	push_new(&q, "d", 1);      /* 1  -> 10 bytes */
	/* <= 5 bytes: dropping aaaa (6 left) is not enough, bb too (4 left) */
	assert_int_equal(queue_drop_oldest(&q, 100, 5), 2);
	assert_int_equal(q.bytes, 4);
	assert_int_equal(q.count, 2);
	drain(&q, out, sizeof out);
	assert_string_equal(out, "ccc,d");
	assert_int_equal(msgbuf_live(), 0);
}

static void test_drop_oldest_with_nothing_droppable_leaves_queue_over_bound(void **state)
{
	struct queue q;
	char out[64];

	queue_init(&q);
	push_new(&q, "r1", 0);
	push_new(&q, "m1", 1);
	push_new(&q, "r2", 0);
	assert_int_equal(queue_drop_oldest(&q, 0, 0), 1);
	assert_int_equal(q.count, 2);
	assert_int_equal(q.bytes, 4);
	/* the tail must still be right after dropping from the middle */
	push_new(&q, "r3", 0);
	drain(&q, out, sizeof out);
	assert_string_equal(out, "r1,r2,r3");
	assert_int_equal(msgbuf_live(), 0);
}

static void test_drop_oldest_of_the_tail_keeps_the_queue_appendable(void **state)
{
	struct queue q;
	char out[64];

	queue_init(&q);
	push_new(&q, "r1", 0);
	push_new(&q, "m1", 1);
	assert_int_equal(queue_drop_oldest(&q, 1, 1000), 1);
	push_new(&q, "r2", 0);
	drain(&q, out, sizeof out);
	assert_string_equal(out, "r1,r2");
	assert_int_equal(msgbuf_live(), 0);
}

static void test_drop_oldest_releases_shared_references(void **state)
{
	struct queue a, b;
	struct msgbuf *mb = mk("shared");

	queue_init(&a);
	queue_init(&b);
	assert_int_equal(queue_push(&a, mb, 1), 0);
	assert_int_equal(queue_push(&b, mb, 1), 0);
	msgbuf_unref(mb);
	assert_int_equal(queue_drop_oldest(&a, 0, 0), 1);
	assert_int_equal(mb->refs, 1);
	assert_int_equal(msgbuf_live(), 1);
	assert_ptr_equal(queue_peek(&b), mb);
	queue_clear(&b);
	assert_int_equal(msgbuf_live(), 0);
}

static void test_clear_empties_and_releases_everything(void **state)
{
	struct queue q, other;
	struct msgbuf *shared = mk("shared");

	queue_init(&q);
	queue_init(&other);
	push_new(&q, "a", 1);
	push_new(&q, "b", 0);
	assert_int_equal(queue_push(&q, shared, 1), 0);
	assert_int_equal(queue_push(&other, shared, 1), 0);
	msgbuf_unref(shared);
	assert_int_equal(msgbuf_live(), 3);
	queue_clear(&q);
	assert_int_equal(q.count, 0);
	assert_int_equal(q.bytes, 0);
	assert_null(queue_peek(&q));
	assert_int_equal(msgbuf_live(), 1);   /* still held by the other queue */
	assert_int_equal(shared->refs, 1);
	queue_clear(&q);                       /* clearing twice is harmless */
	push_new(&q, "again", 1);              /* and the queue is reusable */
	assert_string_equal((const char *)queue_peek(&q)->data, "again");
	queue_clear(&q);
	queue_clear(&other);
	assert_int_equal(msgbuf_live(), 0);
}

static void test_many_entries_reuse_pooled_rings(void **state)
{
	struct queue q;
	int round, i;

	queue_init(&q);
	for (round = 0; round < 3; round++) {
		for (i = 0; i < 1000; i++)
			push_new(&q, "x", i & 1);
		assert_int_equal(q.count, 1000);
		assert_int_equal(q.bytes, 1000);
		assert_int_equal(queue_drop_oldest(&q, 600, 1000), 400);
		assert_int_equal(q.count, 600);
		queue_clear(&q);
	}
	assert_int_equal(msgbuf_live(), 0);
	queue_pool_drain();
	queue_pool_drain();   /* idempotent */
}

/* Push "0".."n-1" style names (as decimal strings) from start. */
static void push_seq(struct queue *q, int start, int n, int droppable_every)
{
	char b[16];
	int i;

	for (i = start; i < start + n; i++) {
		snprintf(b, sizeof b, "%d", i);
		push_new(q, b, droppable_every ? (i % droppable_every) == 0 : 0);
	}
}

/* Pop every entry, checking it is start, start+1, ... */
static void expect_seq(struct queue *q, int start, int n)
{
	char b[16];
	int i;

	assert_int_equal(q->count, n);
	for (i = start; i < start + n; i++) {
		snprintf(b, sizeof b, "%d", i);
		assert_string_equal((const char *)queue_peek(q)->data, b);
		queue_pop(q);
	}
	assert_int_equal(q->count, 0);
}

/* The head is moved past the start of the array before the ring must
 * grow: the grown ring keeps FIFO order across the old wrap point. */
static void test_ring_grows_across_the_wrap_in_order(void **state)
{
	struct queue q;
	int i;

	queue_init(&q);
	push_seq(&q, 0, 6, 0);
	for (i = 0; i < 5; i++)
		queue_pop(&q);             /* head now near the end of the array */
	push_seq(&q, 6, 40, 0);        /* wraps, then grows twice */
	assert_true(q.cap >= 41);
	assert_int_equal(q.bytes, 1 + 4 * 1 + 36 * 2);   /* "5".."9", "10".."45" */
	expect_seq(&q, 5, 41);
	assert_int_equal(msgbuf_live(), 0);
}

/* queue_frames hands out the entries in order when they wrap around the
 * end of the array, each a complete frame (header + payload). */
static void test_frames_follow_the_wrap(void **state)
{
	struct queue q;
	struct iovec iov[16];
	char b[16];
	int i, n;

	queue_init(&q);
	push_seq(&q, 0, 7, 0);
	for (i = 0; i < 6; i++)
		queue_pop(&q);
	push_seq(&q, 7, 5, 0);         /* entries 6..11, wrapping */
	n = queue_frames(&q, iov, 16, SIZE_MAX);
	assert_int_equal(n, 6);
	for (i = 0; i < n; i++) {
		const unsigned char *f = iov[i].iov_base;
		snprintf(b, sizeof b, "%d", 6 + i);
		assert_int_equal(f[0], 0x81);
		assert_int_equal(f[1], strlen(b));
		assert_int_equal(iov[i].iov_len, 2 + strlen(b));
		assert_memory_equal(f + 2, b, strlen(b));
	}
	/* bounded by max and by bytes (but always one frame) */
	assert_int_equal(queue_frames(&q, iov, 2, SIZE_MAX), 2);
	assert_int_equal(queue_frames(&q, iov, 16, 1), 1);
	assert_int_equal(queue_frames(&q, iov, 16, 3 + 3), 2);
	queue_clear(&q);
	assert_int_equal(msgbuf_live(), 0);
}

/* Dropping from a wrapped ring keeps the survivors in order and the
 * queue appendable. */
static void test_drop_oldest_across_the_wrap_keeps_order(void **state)
{
	struct queue q;
	char out[256];

	queue_init(&q);
	push_seq(&q, 0, 6, 0);
	for (int i = 0; i < 6; i++)
		queue_pop(&q);
	push_new(&q, "r1", 0);
	push_new(&q, "m1", 1);
	push_new(&q, "m2", 1);
	push_new(&q, "r2", 0);         /* these four wrap around the end */
	push_new(&q, "m3", 1);
	assert_int_equal(queue_drop_oldest(&q, 3, 1000), 2);
	push_new(&q, "r3", 0);
	drain(&q, out, sizeof out);
	assert_string_equal(out, "r1,r2,m3,r3");
	assert_int_equal(msgbuf_live(), 0);
}

/* An idle session holds no ring: popping, dropping or clearing the last
 * entry gives the array back. */
static void test_empty_queue_holds_no_ring(void **state)
{
	struct queue q;

	queue_init(&q);
	assert_null(q.ring);
	push_new(&q, "a", 1);
	assert_non_null(q.ring);
	queue_pop(&q);
	assert_null(q.ring);
	push_seq(&q, 0, 100, 1);
	assert_int_equal(queue_drop_oldest(&q, 0, 0), 100);
	assert_null(q.ring);
	push_seq(&q, 0, 3, 0);
	queue_clear(&q);
	assert_null(q.ring);
	assert_int_equal(q.cap, 0);
	assert_int_equal(msgbuf_live(), 0);
}

#define T(f) cmocka_unit_test_teardown(f, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_empty_queue_peeks_null_and_pop_is_noop),
		T(test_push_peek_pop_is_fifo),
		T(test_count_and_bytes_track_push_and_pop),
		T(test_queue_takes_its_own_reference),
		T(test_caller_may_drop_its_reference_after_push),
		T(test_shared_buffer_freed_only_when_last_queue_pops),
		T(test_same_buffer_twice_in_one_queue),
		T(test_drop_oldest_drops_droppable_oldest_first),
		T(test_drop_oldest_skips_entries_that_are_not_droppable),
		T(test_drop_oldest_stops_at_the_count_bound),
		T(test_drop_oldest_stops_at_the_byte_bound),
		T(test_drop_oldest_with_nothing_droppable_leaves_queue_over_bound),
		T(test_drop_oldest_of_the_tail_keeps_the_queue_appendable),
		T(test_drop_oldest_releases_shared_references),
		T(test_clear_empties_and_releases_everything),
		T(test_many_entries_reuse_pooled_rings),
		T(test_ring_grows_across_the_wrap_in_order),
		T(test_frames_follow_the_wrap),
		T(test_drop_oldest_across_the_wrap_keeps_order),
		T(test_empty_queue_holds_no_ring),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);

	queue_pool_drain();
	return rc;
}
