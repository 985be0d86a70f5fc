/*
 * log.c - stderr logger. Writes are line-buffered stdio writes: one fprintf
 * per event, so lines from chatd never interleave (there is one thread).
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


static enum config_log_level log_level = CONFIG_LOG_INFO;
static enum config_log_format log_format = CONFIG_LOG_TEXT;
static int log_journal;  /* stderr is the journal: it stamps time itself */

void log_setup(enum config_log_level level, enum config_log_format format)
{
	log_level = level;
	log_format = format;
	log_journal = getenv("JOURNAL_STREAM") != NULL;
}

int log_enabled(enum config_log_level level)
{
	return level <= log_level;
}

/* Append s to out as JSON string content (no quotes), truncating at cap. */
static size_t log_json_escape(char *out, size_t cap, const char *s)
{
	size_t n = 0;

	for (; *s && n + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			out[n++] = '\\';
			out[n++] = (char)c;
		} else if (c < 0x20) {
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
		} else {
			out[n++] = (char)c;
		}
	}
	out[n] = '\0';
	return n;
}

static void log_timestamp(char *buf, size_t cap)
{
	struct timespec ts;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, cap - n, ".%03dZ", (int)(ts.tv_nsec / 1000000));
}

/* syslog priorities, so that journalctl -p works under systemd. */
static const int log_syslog_prio[] = { 3, 4, 6, 7 };

void log_write(enum config_log_level level, const char *session, const char *fmt, ...)
{
	char msg[1024], ts[40];
	va_list ap;

	if (!log_enabled(level))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_timestamp(ts, sizeof(ts));

	if (log_format == CONFIG_LOG_JSON) {
		char emsg[sizeof(msg) * 2], esess[80];
		log_json_escape(emsg, sizeof(emsg), msg);
		if (session) {
			log_json_escape(esess, sizeof(esess), session);
			fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"session\":\"%s\",\"msg\":\"%s\"}\n",
				ts, config_log_level_name(level), esess, emsg);
		} else {
			fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"}\n",
				ts, config_log_level_name(level), emsg);
		}
		return;
	}
	if (log_journal)
		fprintf(stderr, "<%d>%s%s%s%s\n", log_syslog_prio[level],
			session ? "session=" : "", session ? session : "",
			session ? " " : "", msg);
	else
		fprintf(stderr, "%s %-5s %s%s%s%s\n", ts, config_log_level_name(level),
			session ? "session=" : "", session ? session : "",
			session ? " " : "", msg);
}
