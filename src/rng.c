#include "rng.h"

#include <sys/random.h>
#include <time.h>
#include <unistd.h>

void rng_seed(uint64_t *state)
{
	if (getrandom(state, sizeof(*state), GRND_NONBLOCK) != sizeof(*state)) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		*state = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
		*state ^= (uint64_t)getpid() << 32;
	}
	*state |= 1;  /* xorshift must not start at 0 */
}

uint64_t rng_next(uint64_t *state)
{
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return *state * 0x2545F4914F6CDD1DULL;
}
