/*
 * log.h - one line per event on stderr, text or JSON.
 *
 * Every line carries a level and, when the event concerns a session, its id,
 * so that one session's life can be followed with grep.
 */
#ifndef CHATD_LOG_H
#define CHATD_LOG_H

#include "config.h"

void log_setup(enum config_log_level level, enum config_log_format format);
int log_enabled(enum config_log_level level);

/* session may be NULL. */
void log_write(enum config_log_level level, const char *session, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Sink for libwebsockets' own log lines (lws_set_log_level emit callback);
 * in log_lws.c, part of the transport, not of the hub library. */
void log_lws_emit(int lws_level, const char *line);

#define log_error(sess, ...) log_write(CONFIG_LOG_ERROR, (sess), __VA_ARGS__)
#define log_warn(sess, ...)  log_write(CONFIG_LOG_WARN, (sess), __VA_ARGS__)
#define log_info(sess, ...)  log_write(CONFIG_LOG_INFO, (sess), __VA_ARGS__)
#define log_debug(sess, ...) \
	do { if (log_enabled(CONFIG_LOG_DEBUG)) log_write(CONFIG_LOG_DEBUG, (sess), __VA_ARGS__); } while (0)

#endif
