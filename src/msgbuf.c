#include "msgbuf.h"

#include <stdlib.h>
#include <string.h>

static long msgbuf_count;

struct msgbuf *msgbuf_new(size_t cap)
{
	struct msgbuf *mb;

	if (cap > UINT32_MAX - 1)
		return NULL;
	mb = malloc(sizeof(*mb) + cap + 1);
	if (!mb)
		return NULL;
	mb->refs = 1;
	mb->len = 0;
	mb->hdr = 0;
	mb->data[0] = '\0';
	msgbuf_count++;
	return mb;
}

struct msgbuf *msgbuf_from(const void *p, size_t len)
{
	struct msgbuf *mb = msgbuf_new(len);

	if (!mb)
		return NULL;
	memcpy(mb->data, p, len);
	mb->data[len] = '\0';
	mb->len = (uint32_t)len;
	return mb;
}

struct msgbuf *msgbuf_reserve(struct msgbuf *mb, size_t cap)
{
	if (cap > UINT32_MAX - 1)
		return NULL;
	return realloc(mb, sizeof(*mb) + cap + 1);
}

void msgbuf_frame_text(struct msgbuf *mb)
{
	unsigned char h[10];
	uint64_t len = mb->len;
	size_t n = 2, i;

	if (mb->hdr)
		return;
	h[0] = 0x81;                      /* FIN, text */
	if (len < 126) {
		h[1] = (unsigned char)len;
	} else if (len <= 0xffff) {
		h[1] = 126;
		h[2] = (unsigned char)(len >> 8);
		h[3] = (unsigned char)len;
		n = 4;
	} else {
		h[1] = 127;
		for (i = 0; i < 8; i++)
			h[2 + i] = (unsigned char)(len >> (56 - 8 * i));
		n = 10;
	}
	memcpy(mb->data - n, h, n);
	mb->hdr = (uint8_t)n;
}

void msgbuf_unref(struct msgbuf *mb)
{
	if (mb && --mb->refs == 0) {
		msgbuf_count--;
		free(mb);
	}
}

long msgbuf_live(void)
{
	return msgbuf_count;
}
