/*
 * Settings from defaults, a config file, RUNNEL_* environment variables and flags, in that
 * order of precedence (see runnel/common/config.h). Each source overwrites what the previous
 * ones set, so the precedence is simply the order in which the sources are applied.
 */
#include "runnel/common/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Settings every command has, handled here rather than in each table. */
#define RN__ENV_PREFIX "RUNNEL_"

static void rn__env_name(const char *name, char *out, size_t len)
{
    size_t n = strlen(RN__ENV_PREFIX);
    memcpy(out, RN__ENV_PREFIX, n);
    for (const char *p = name; *p != '\0' && n + 1 < len; p++) {
        out[n++] = (*p == '.' || *p == '-') ? '_' : (char)toupper((unsigned char)*p);
    }
    out[n] = '\0';
}

/* Flag names match with '-' and '.' treated alike: --flush-interval-ms == --flush.interval.ms */
static bool rn__name_eq(const char *setting, const char *flag, size_t flag_len)
{
    size_t i = 0;
    for (; i < flag_len && setting[i] != '\0'; i++) {
        char a = setting[i] == '-' ? '.' : setting[i];
        char b = flag[i] == '-' ? '.' : flag[i];
        if (a != b) {
            return false;
        }
    }
    return i == flag_len && setting[i] == '\0';
}

static const struct rn_setting *rn__find(const struct rn_command_spec *spec, const char *name,
                                         size_t len)
{
    for (const struct rn_setting *s = spec->settings; s->name != NULL; s++) {
        if (rn__name_eq(s->name, name, len)) {
            return s;
        }
    }
    return NULL;
}

static int rn__parse_int(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno != 0 || end == v) {
        return -EINVAL;
    }
    int64_t mult = 1;
    if (*end == 'k' || *end == 'K') {
        mult = 1024;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        mult = 1024 * 1024;
        end++;
    } else if (*end == 'g' || *end == 'G') {
        mult = 1024 * 1024 * 1024;
        end++;
    }
    if (*end != '\0') {
        return -EINVAL;
    }
    if (x > INT64_MAX / mult || x < INT64_MIN / mult) {
        return -EINVAL;
    }
    *out = (int64_t)x * mult;
    return 0;
}

static int rn__parse_bool(const char *v, bool *out)
{
    static const char *yes[] = {"true", "1", "yes", "on"};
    static const char *no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

/* Stores `value` (NULL: unset string) into the setting; `source` names where it came from. */
static int rn__set(const struct rn_setting *s, const char *value, const char *source)
{
    switch (s->type) {
    case RN_SETTING_STRING: {
        char **dest = s->dest;
        free(*dest);
        *dest = value != NULL ? strdup(value) : NULL;
        return 0;
    }
    case RN_SETTING_INT: {
        int64_t v;
        if (value == NULL || rn__parse_int(value, &v) != 0) {
            fprintf(stderr, "runnel: %s: %s expects a whole number, got '%s'\n", source, s->name,
                    value ? value : "");
            return -EINVAL;
        }
        if (v < s->min || v > s->max) {
            fprintf(stderr, "runnel: %s: %s must be between %lld and %lld, got %lld\n", source,
                    s->name, (long long)s->min, (long long)s->max, (long long)v);
            return -EINVAL;
        }
        *(int64_t *)s->dest = v;
        return 0;
    }
    case RN_SETTING_BOOL:
        if (value == NULL || rn__parse_bool(value, s->dest) != 0) {
            fprintf(stderr, "runnel: %s: %s expects true or false, got '%s'\n", source, s->name,
                    value ? value : "");
            return -EINVAL;
        }
        return 0;
    }
    return -EINVAL;
}

static char *rn__trim(char *s)
{
    while (isspace((unsigned char)*s)) {
        s++;
    }
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) {
        *--e = '\0';
    }
    return s;
}

static int rn__load_file(const struct rn_command_spec *spec, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "runnel: config file %s: %s\n", path, strerror(errno));
        return -EINVAL;
    }
    char line[4096];
    int lineno = 0;
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash != NULL) {
            *hash = '\0';
        }
        char *l = rn__trim(line);
        if (*l == '\0') {
            continue;
        }
        char *eq = strchr(l, '=');
        char source[512];
        snprintf(source, sizeof(source), "%s:%d", path, lineno);
        if (eq == NULL) {
            fprintf(stderr, "runnel: %s: expected 'name = value'\n", source);
            rc = -EINVAL;
            break;
        }
        *eq = '\0';
        char *name = rn__trim(l);
        char *value = rn__trim(eq + 1);
        const struct rn_setting *s = rn__find(spec, name, strlen(name));
        if (s == NULL) {
            fprintf(stderr, "runnel: %s: unknown setting '%s' for '%s'\n", source, name,
                    spec->name);
            rc = -EINVAL;
            break;
        }
        rc = rn__set(s, value, source);
    }
    fclose(f);
    return rc;
}

static void rn__help(const struct rn_command_spec *spec)
{
    printf("usage: runnel %s [--SETTING VALUE]...\n\n%s\n\nsettings (flag / environment, "
           "default):\n",
           spec->name, spec->summary);
    printf("  --config FILE  (RUNNEL_CONFIG)\n      read settings from FILE (name = value "
           "lines)\n");
    for (const struct rn_setting *s = spec->settings; s->name != NULL; s++) {
        char env[128];
        rn__env_name(s->name, env, sizeof(env));
        printf("  --%s  (%s, default %s)\n      %s\n", s->name, env, s->def ? s->def : "unset",
               s->help);
    }
    printf("\nPrecedence: flags > environment > config file > defaults.\n");
}

void rn_config_markdown(const struct rn_command_spec *spec, FILE *out)
{
    fprintf(out, "### `runnel %s`\n\n%s\n\n", spec->name, spec->summary);
    fprintf(out, "| setting (flag `--NAME`) | environment | default | meaning |\n");
    fprintf(out, "|---|---|---|---|\n");
    for (const struct rn_setting *s = spec->settings; s->name != NULL; s++) {
        char env[128];
        rn__env_name(s->name, env, sizeof(env));
        bool shown = s->def != NULL && s->def[0] != '\0';
        fprintf(out, "| `%s` | `%s` | %s%s%s | %s |\n", s->name, env, shown ? "`" : "",
                shown ? s->def : (s->def ? "empty" : "unset"), shown ? "`" : "", s->help);
    }
    fprintf(out, "\n");
}

int rn_config_load(const struct rn_command_spec *spec, int argc, char **argv,
                   const char **positional, int max_positional, int *n_positional)
{
    const char *config_file = getenv("RUNNEL_CONFIG");
    int npos = 0;

    /* Defaults first. */
    for (const struct rn_setting *s = spec->settings; s->name != NULL; s++) {
        if (rn__set(s, s->def, "default") != 0) {
            return -EINVAL;
        }
    }
    /* Help, and where the config file is, before anything else is read. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            rn__help(spec);
            return 1;
        }
        if (strcmp(argv[i], "--help-markdown") == 0) {
            rn_config_markdown(spec, stdout);
            return 1;
        }
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_file = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config_file = argv[i] + 9;
        }
    }
    if (config_file != NULL && config_file[0] != '\0' && rn__load_file(spec, config_file) != 0) {
        return -EINVAL;
    }
    for (const struct rn_setting *s = spec->settings; s->name != NULL; s++) {
        char env[128];
        rn__env_name(s->name, env, sizeof(env));
        const char *v = getenv(env);
        if (v != NULL && rn__set(s, v, env) != 0) {
            return -EINVAL;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            if (positional == NULL || npos >= max_positional) {
                fprintf(stderr, "runnel %s: unexpected argument '%s' (see --help)\n", spec->name,
                        a);
                return -EINVAL;
            }
            positional[npos++] = a;
            continue;
        }
        a += 2;
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        if (rn__name_eq("config", a, len)) {
            if (eq == NULL) {
                i++;
            }
            continue;
        }
        const struct rn_setting *s = rn__find(spec, a, len);
        if (s == NULL) {
            fprintf(stderr, "runnel %s: unknown flag '%s' (see --help)\n", spec->name, argv[i]);
            return -EINVAL;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (value == NULL) {
            if (s->type == RN_SETTING_BOOL &&
                (i + 1 >= argc || rn__parse_bool(argv[i + 1], &(bool){false}) != 0)) {
                value = "true";
            } else if (i + 1 < argc) {
                value = argv[++i];
            } else {
                fprintf(stderr, "runnel %s: flag '%s' needs a value\n", spec->name, argv[i]);
                return -EINVAL;
            }
        }
        if (rn__set(s, value, "flag") != 0) {
            return -EINVAL;
        }
    }
    if (n_positional != NULL) {
        *n_positional = npos;
    }
    return 0;
}

void rn_config_free(const struct rn_command_spec *spec)
{
    for (const struct rn_setting *s = spec->settings; s->name != NULL; s++) {
        if (s->type == RN_SETTING_STRING) {
            char **dest = s->dest;
            free(*dest);
            *dest = NULL;
        }
    }
}

bool rn_host_is_wildcard(const char *host)
{
    return host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
}

int rn_parse_hostport(const char *s, char *host, size_t host_len, int *port)
{
    const char *colon;
    const char *h = s;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':') {
            return -EINVAL;
        }
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) {
            return -EINVAL;
        }
        hlen = (size_t)(colon - s);
    }
    if (hlen >= host_len) {
        return -EINVAL;
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || end == colon + 1 || p < 0 || p > 65535) {
        return -EINVAL;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)p;
    return 0;
}
