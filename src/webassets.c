#include "webassets.h"

#include <string.h>

const struct webasset *webasset_find(const char *path)
{
	const struct webasset *a;

	if (strcmp(path, "/") == 0)
		path = "/index.html";
	for (a = webassets; a->path; a++)
		if (strcmp(a->path, path) == 0)
			return a;
	return NULL;
}
