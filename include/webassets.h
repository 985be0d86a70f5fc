/*
 * webassets.h - the web chat client, embedded in the binary at build time
 * (cmake/embed.cmake turns web/ into a C array), so chatd stays one file.
 */
#ifndef CHATD_WEBASSETS_H
#define CHATD_WEBASSETS_H

#include <stddef.h>

struct webasset {
	const char *path;          /* "/index.html" */
	const char *type;          /* Content-Type */
	const unsigned char *data;
	size_t len;
};

/* Terminated by an entry with path == NULL. */
extern const struct webasset webassets[];

/* The asset for a request path ("/" means "/index.html"), or NULL. */
const struct webasset *webasset_find(const char *path);

#endif
