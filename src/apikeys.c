/*
 * apikeys.c - the server API's keys (apikeys.h). Each key is kept as its
 * SHA-256 digest: a presented key is hashed once and compared with every
 * digest with CRYPTO_memcmp, all of them, so that neither where a match
 * is nor the length of a key shows in the time taken.
 */
#include "apikeys.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

struct apikeys {
	size_t n;
	unsigned char digest[APIKEYS_MAX][SHA256_DIGEST_LENGTH];
};

/* The file's mode and owner, checked on the open descriptor (no race
 * between the check and the read). */
static int apikeys_check_file(int fd, const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (fstat(fd, &st) < 0) {
		snprintf(err, errlen, "api.keys_file %s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "api.keys_file %s: not a regular file", path);
		return -1;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		snprintf(err, errlen, "api.keys_file %s: readable or writable by %s (mode %04o); "
			 "the API keys are secrets: chmod 600 it", path,
			 (st.st_mode & S_IRWXO) ? "others" : "its group", (unsigned)(st.st_mode & 07777));
		return -1;
	}
	return 0;
}

/* One line: a key, or nothing (blank, comment). -1 with err if bad. */
static int apikeys_line(struct apikeys *k, char *line, const char *path, int lineno,
			char *err, size_t errlen)
{
	char *end;
	size_t len;

	while (*line == ' ' || *line == '\t')
		line++;
	end = line + strlen(line);
	while (end > line && isspace((unsigned char)end[-1]))
		*--end = '\0';
	if (!*line || *line == '#')
		return 0;
	len = (size_t)(end - line);
	if (len < APIKEYS_MIN_LEN || len > APIKEYS_MAX_LEN || strpbrk(line, " \t")) {
		snprintf(err, errlen, "api.keys_file %s line %d: a key is %d..%d bytes with no spaces",
			 path, lineno, APIKEYS_MIN_LEN, APIKEYS_MAX_LEN);
		return -1;
	}
	if (k->n >= APIKEYS_MAX) {
		snprintf(err, errlen, "api.keys_file %s: more than %d keys", path, APIKEYS_MAX);
		return -1;
	}
	SHA256((const unsigned char *)line, len, k->digest[k->n++]);
	return 0;
}

struct apikeys *apikeys_load(const char *path, char *err, size_t errlen)
{
	struct apikeys *k;
	char line[APIKEYS_MAX_LEN + 64];
	int fd, lineno = 0, bad = 0;
	FILE *f;

	err[0] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		snprintf(err, errlen, "api.keys_file %s: %s", path, strerror(errno));
		return NULL;
	}
	if (apikeys_check_file(fd, path, err, errlen) || !(f = fdopen(fd, "r"))) {
		if (!err[0])
			snprintf(err, errlen, "api.keys_file %s: %s", path, strerror(errno));
		close(fd);
		return NULL;
	}
	if (!(k = calloc(1, sizeof(*k)))) {
		snprintf(err, errlen, "out of memory");
		fclose(f);
		return NULL;
	}
	while (!bad && fgets(line, sizeof(line), f)) {
		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			snprintf(err, errlen, "api.keys_file %s line %d: too long", path, lineno);
			bad = 1;
		} else {
			bad = apikeys_line(k, line, path, lineno, err, errlen) < 0;
		}
	}
	if (!bad && ferror(f)) {
		snprintf(err, errlen, "api.keys_file %s: read error", path);
		bad = 1;
	}
	if (!bad && !k->n) {
		snprintf(err, errlen, "api.keys_file %s: no keys", path);
		bad = 1;
	}
	fclose(f);
	OPENSSL_cleanse(line, sizeof(line));
	if (bad) {
		apikeys_free(k);
		return NULL;
	}
	return k;
}

void apikeys_free(struct apikeys *k)
{
	if (!k)
		return;
	OPENSSL_cleanse(k, sizeof(*k));
	free(k);
}

size_t apikeys_count(const struct apikeys *k)
{
	return k ? k->n : 0;
}

int apikeys_check(const struct apikeys *k, const char *key, size_t len)
{
	unsigned char d[SHA256_DIGEST_LENGTH];
	int found = 0;
	size_t i;

	if (!k)
		return 0;
	SHA256((const unsigned char *)key, len, d);
	for (i = 0; i < k->n; i++)
		found |= CRYPTO_memcmp(d, k->digest[i], sizeof(d)) == 0;
	return found;
}
