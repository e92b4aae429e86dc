/*
 * One configuration story for every Runnel process. A command declares its settings in a table
 * (name, type, default, help, where to store the value); rn_config_load() fills them from, in
 * increasing precedence:
 *
 *   1. the default in the table,
 *   2. a config file given with `--config FILE` or RUNNEL_CONFIG (lines `name = value`, `#`
 *      comments; unknown names are an error so typos do not pass silently),
 *   3. environment variables: `flush.interval.ms` is read from RUNNEL_FLUSH_INTERVAL_MS,
 *   4. flags: `--flush.interval.ms 250`, `--flush.interval.ms=250` or `--flush-interval-ms 250`.
 *
 * `--help` prints every setting with its default and environment variable. The same tables
 * produce docs/configuration.md (`runnel COMMAND --help-markdown`).
 */
#ifndef RUNNEL_COMMON_CONFIG_H
#define RUNNEL_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum rn_setting_type {
    RN_SETTING_STRING, /* dest: char ** (owned, freed by rn_config_free) */
    RN_SETTING_INT,    /* dest: int64_t *; accepts an optional k/m/g (x1024) suffix */
    RN_SETTING_BOOL,   /* dest: bool *; true/false/1/0/yes/no/on/off; a bare flag means true */
};

struct rn_setting {
    const char *name;          /* dotted name, e.g. "flush.interval.ms" */
    enum rn_setting_type type; /* how the value is parsed */
    const char *def;           /* default as text; NULL means unset (strings only) */
    const char *help;          /* one line */
    void *dest;                /* where the parsed value goes */
    int64_t min;               /* RN_SETTING_INT: smallest accepted value */
    int64_t max;               /* RN_SETTING_INT: largest accepted value */
};

struct rn_command_spec {
    const char *name;                  /* e.g. "agent"; used in --help */
    const char *summary;               /* one paragraph for --help */
    const struct rn_setting *settings; /* terminated by an entry with name == NULL */
};

/*
 * Fills every setting of `spec` from defaults, file, environment and argv (argv[0] is the
 * command name; positional arguments are not accepted unless `positional` is non-NULL, in which
 * case they are collected there, up to `max_positional`, and their count stored in
 * `*n_positional`). Returns 0; 1 when --help or --help-markdown was handled (the caller exits 0);
 * or -EINVAL with a message on stderr naming the setting and its source.
 */
int rn_config_load(const struct rn_command_spec *spec, int argc, char **argv,
                   const char **positional, int max_positional, int *n_positional);

/* Frees the strings rn_config_load() stored. */
void rn_config_free(const struct rn_command_spec *spec);

/* Writes the settings table as Markdown (name, env variable, default, description). */
void rn_config_markdown(const struct rn_command_spec *spec, FILE *out);

/* Parses "host:port" / "[v6]:port" / ":port" (host empty means all addresses). 0 or -EINVAL. */
int rn_parse_hostport(const char *s, char *host, size_t host_len, int *port);

/* Whether a host from rn_parse_hostport() listens everywhere ("", "0.0.0.0" or "::"): no address
 * another process could connect to. */
bool rn_host_is_wildcard(const char *host);

#endif
