/*
 * Levelled logging in logfmt or JSON (see runnel/common/log.h). The caller's fields are
 * formatted once as logfmt; JSON output re-reads those pairs, so callers write one form.
 */
#include "runnel/common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum rn_log_level rn__threshold = RN_LOG_INFO;
static bool rn__json = false;
static int rn__fd = 2;

static const char *const rn__level_names[] = {"error", "warn", "info", "debug"};

int rn_log_configure(const char *level, const char *format)
{
    int found = -1;
    for (int i = 0; i < 4; i++) {
        if (level != NULL && strcmp(level, rn__level_names[i]) == 0) {
            found = i;
        }
    }
    if (level != NULL && found < 0) {
        return -EINVAL;
    }
    if (format != NULL && strcmp(format, "logfmt") != 0 && strcmp(format, "json") != 0) {
        return -EINVAL;
    }
    if (found >= 0) {
        rn__threshold = (enum rn_log_level)found;
    }
    if (format != NULL) {
        rn__json = strcmp(format, "json") == 0;
    }
    return 0;
}

bool rn_log_enabled(enum rn_log_level level)
{
    return level <= rn__threshold;
}

void rn_log_set_fd(int fd)
{
    rn__fd = fd < 0 ? 2 : fd;
}

/*
 * Appends `s` (n bytes) as a JSON string body, escaping as needed. With `logfmt_quoted`, the
 * logfmt escapes \" and \\ inside a quoted value are undone first.
 */
static size_t rn__json_escape(char *out, size_t cap, size_t pos, const char *s, size_t n,
                              bool logfmt_quoted)
{
    for (size_t i = 0; i < n && pos + 7 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (logfmt_quoted && c == '\\' && i + 1 < n && (s[i + 1] == '"' || s[i + 1] == '\\')) {
            c = (unsigned char)s[++i];
        }
        if (c == '"' || c == '\\') {
            out[pos++] = '\\';
            out[pos++] = (char)c;
        } else if (c < 0x20) {
            pos += (size_t)snprintf(out + pos, cap - pos, "\\u%04x", c);
        } else {
            out[pos++] = (char)c;
        }
    }
    return pos;
}

/* Converts logfmt pairs to JSON members appended at `pos`. Quoted values lose their quotes. */
static size_t rn__fields_to_json(char *out, size_t cap, size_t pos, const char *f)
{
    while (*f != '\0' && pos + 16 < cap) {
        while (*f == ' ') {
            f++;
        }
        if (*f == '\0') {
            break;
        }
        const char *key = f;
        while (*f != '\0' && *f != '=' && *f != ' ') {
            f++;
        }
        size_t klen = (size_t)(f - key);
        const char *val = "";
        size_t vlen = 0;
        bool quoted = false;
        if (*f == '=') {
            f++;
            if (*f == '"') {
                quoted = true;
                val = ++f;
                while (*f != '\0' && !(*f == '"' && f[-1] != '\\')) {
                    f++;
                }
                vlen = (size_t)(f - val);
                if (*f == '"') {
                    f++;
                }
            } else {
                val = f;
                while (*f != '\0' && *f != ' ') {
                    f++;
                }
                vlen = (size_t)(f - val);
            }
        }
        out[pos++] = ',';
        out[pos++] = '"';
        pos = rn__json_escape(out, cap, pos, key, klen, false);
        if (pos + 4 >= cap) {
            break;
        }
        out[pos++] = '"';
        out[pos++] = ':';
        out[pos++] = '"';
        pos = rn__json_escape(out, cap, pos, val, vlen, quoted);
        if (pos + 2 >= cap) {
            break;
        }
        out[pos++] = '"';
    }
    return pos;
}

void rn_log(enum rn_log_level level, const char *event, const char *fields, ...)
{
    if (!rn_log_enabled(level)) {
        return;
    }
    char kv[2048] = "";
    if (fields != NULL) {
        va_list ap;
        va_start(ap, fields);
        vsnprintf(kv, sizeof(kv), fields, ap);
        va_end(ap);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[96];
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(ts.tv_nsec / 1000000) % 1000);

    char line[4096];
    size_t pos;
    if (rn__json) {
        pos = (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"",
                               when, rn__level_names[level]);
        pos = rn__json_escape(line, sizeof(line), pos, event, strlen(event), false);
        line[pos++] = '"';
        pos = rn__fields_to_json(line, sizeof(line) - 3, pos, kv);
        line[pos++] = '}';
    } else {
        pos = (size_t)snprintf(line, sizeof(line), "ts=%s level=%s event=%s%s%s", when,
                               rn__level_names[level], event, kv[0] ? " " : "", kv);
        if (pos > sizeof(line) - 2) {
            pos = sizeof(line) - 2;
        }
    }
    line[pos++] = '\n';
    ssize_t w = write(rn__fd, line, pos);
    (void)w;
}
