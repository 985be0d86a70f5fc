#include "session.h"

#include "auth.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

struct session *session_new(uint64_t num, uint64_t salt, double now, double burst)
{
	struct session *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->num = num;
	/* Opaque but unique within the process: the counter mixed with a
	 * per-process random salt, so ids do not reveal the session count. */
	snprintf(s->id, sizeof(s->id), "%016" PRIx64, (uint64_t)((num * 0x9E3779B97F4A7C15ULL) ^ salt));
	queue_init(&s->q);
	s->tokens = burst;
	s->tokens_at = now;
	s->qb_idx = -1;
	s->tok_idx = -1;
	return s;
}

void session_free(struct session *s)
{
	if (!s)
		return;
	queue_clear(&s->q);
	auth_identity_free(s->ident);
	free(s);
}

int session_take_token(struct session *s, double now, double rate, double burst)
{
	if (now > s->tokens_at) {
		s->tokens += (now - s->tokens_at) * rate;
		if (s->tokens > burst)
			s->tokens = burst;
		s->tokens_at = now;
	}
	if (s->tokens < 1.0)
		return 0;
	s->tokens -= 1.0;
	return 1;
}
