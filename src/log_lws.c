/*
 * log_lws.c - libwebsockets' log lines into chatd's log (log.h).
 *
 * Apart from log.c so that the hub library, which logs too, links no
 * libwebsockets: only the transport (server.c) sets this sink.
 */
#include "log.h"

#include <stdio.h>
#include <string.h>

#include <libwebsockets.h>

void log_lws_emit(int lws_level, const char *line)
{
	enum config_log_level level = CONFIG_LOG_DEBUG;
	char buf[512];
	size_t n;

	if (lws_level & LLL_ERR)
		level = CONFIG_LOG_ERROR;
	else if (lws_level & LLL_WARN)
		level = CONFIG_LOG_WARN;
	if (!log_enabled(level))
		return;
	/* lws lines end with a newline; ours add one. */
	snprintf(buf, sizeof(buf), "%s", line);
	n = strlen(buf);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	log_write(level, NULL, "lws: %s", buf);
}
