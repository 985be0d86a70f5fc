/*
 * msgbuf.h - reference-counted output buffers.
 *
 * A broadcast encodes its JSON once into one msgbuf and every recipient's
 * queue holds a reference to it: no copy per recipient. The payload does
 * not change once the buffer is shared; the WebSocket frame header does not
 * exist yet then: it is written lazily, once, into the MSGBUF_HEADROOM bytes
 * in front of the payload (msgbuf_frame_text), and is the same for every
 * recipient. Only the loop thread touches a msgbuf, so the count is a plain
 * integer.
 */
#ifndef CHATD_MSGBUF_H
#define CHATD_MSGBUF_H

#include <stddef.h>
#include <stdint.h>

#define MSGBUF_HEADROOM 16

struct msgbuf {
	uint32_t refs;
	uint32_t len;                          /* payload bytes */
	uint8_t hdr;                           /* WebSocket header bytes in pre, 0 = none yet */
	unsigned char pre[MSGBUF_HEADROOM];    /* frame header space */
	unsigned char data[];                  /* payload, then a NUL */
};

/* A new buffer with room for cap payload bytes, refs = 1, len = 0. NULL on ENOMEM. */
struct msgbuf *msgbuf_new(size_t cap);
/* A new buffer holding a copy of p[0..len). */
struct msgbuf *msgbuf_from(const void *p, size_t len);
/* Grow an unshared buffer (refs == 1) to cap payload bytes; may move it. */
struct msgbuf *msgbuf_reserve(struct msgbuf *mb, size_t cap);

static inline struct msgbuf *msgbuf_ref(struct msgbuf *mb)
{
	mb->refs++;
	return mb;
}

/* Drop one reference; the last one frees the buffer. NULL is ignored. */
void msgbuf_unref(struct msgbuf *mb);

/*
 * Make mb a complete unmasked server-to-client text frame: the header goes
 * into the headroom just before the payload, once; every recipient then
 * writes the same bytes (server frames are not masked). Idempotent.
 */
void msgbuf_frame_text(struct msgbuf *mb);
static inline const unsigned char *msgbuf_frame(const struct msgbuf *mb)
{
	return mb->data - mb->hdr;
}
static inline size_t msgbuf_frame_len(const struct msgbuf *mb)
{
	return (size_t)mb->len + mb->hdr;
}

/* Buffers alive now (leak checks in the unit tests). */
long msgbuf_live(void);

#endif
