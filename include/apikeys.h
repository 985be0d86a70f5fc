/*
 * apikeys.h - the server API's keys: read from the file named by
 * api.keys_file, one key per line. The file must be private to chatd's
 * user (no group or other permission bits): chatd refuses to start
 * otherwise. Keys are compared in constant time and never logged.
 */
#ifndef CHATD_APIKEYS_H
#define CHATD_APIKEYS_H

#include <stddef.h>

/* Keys shorter than this are refused: a key is a secret, not a password. */
#define APIKEYS_MIN_LEN 16
#define APIKEYS_MAX_LEN 256
#define APIKEYS_MAX 64

struct apikeys;

/* Load path: blank lines and lines starting with # are ignored; every
 * other line (surrounding spaces stripped) is a key. NULL with a one-line
 * reason in err (never the keys themselves). Owned by the caller. */
struct apikeys *apikeys_load(const char *path, char *err, size_t errlen);
void apikeys_free(struct apikeys *k);
size_t apikeys_count(const struct apikeys *k);
/* 1 if key[0..len) is one of the keys. Takes the same time whichever key
 * matches, or none, for a given number of keys. */
int apikeys_check(const struct apikeys *k, const char *key, size_t len);

#endif
