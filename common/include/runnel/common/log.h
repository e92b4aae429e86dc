/*
 * Levelled, structured logs on stderr. A log line is an event name plus key=value fields written
 * logfmt-style by the caller; the output format is logfmt (default) or JSON, chosen once at
 * start-up (`log.format`). Example:
 *
 *   rn_log(RN_LOG_INFO, "listening", "addr=%s port=%d", host, port);
 *   -> ts=2026-11-25T10:00:00.123Z level=info event=listening addr=127.0.0.1 port=9092
 *   -> {"ts":"2026-11-25T10:00:00.123Z","level":"info","event":"listening","addr":"127.0.0.1",
 *       "port":"9092"}
 *
 * Values containing spaces must be double-quoted by the caller (`msg="%s"`). Thread-safe: each
 * line is written with a single write(2).
 */
#ifndef RUNNEL_COMMON_LOG_H
#define RUNNEL_COMMON_LOG_H

#include <stdbool.h>

enum rn_log_level {
    RN_LOG_ERROR = 0,
    RN_LOG_WARN = 1,
    RN_LOG_INFO = 2,
    RN_LOG_DEBUG = 3,
};

/* Sets the threshold and format from the strings of the log.level / log.format settings.
 * Returns 0 or -EINVAL for an unknown level or format. */
int rn_log_configure(const char *level, const char *format);

/* True when a message at `level` would be written (to skip expensive formatting). */
bool rn_log_enabled(enum rn_log_level level);

/* Writes one line. `fields` is a printf format producing space-separated key=value pairs,
 * or NULL. */
void rn_log(enum rn_log_level level, const char *event, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));

/* Redirects output to `fd` (tests); -1 restores stderr. */
void rn_log_set_fd(int fd);

#endif
