/*
 * rng.h - xorshift64*, for values that must be unique, not secret: room
 * epochs, session id salts, epoch candidates in the cluster.
 */
#ifndef CHATD_RNG_H
#define CHATD_RNG_H

#include <stdint.h>

/* Seed *state from getrandom() (the clock and pid if that fails); never 0. */
void rng_seed(uint64_t *state);
uint64_t rng_next(uint64_t *state);

#endif
