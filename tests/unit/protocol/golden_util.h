/*
 * Loads the golden request frames captured from real Kafka clients (tests/golden/frames/, listed
 * in MANIFEST.tsv; see tests/golden/capture/README.md) for test_golden.c and
 * test_golden_batches.c. Each frame is read into its own malloc'd buffer of exactly its size, so
 * that the address sanitizer catches any read past its end.
 */
#ifndef RUNNEL_TEST_GOLDEN_UTIL_H
#define RUNNEL_TEST_GOLDEN_UTIL_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN_DIR RUNNEL_SOURCE_DIR "/tests/golden/frames"

struct golden_frame {
    char client[32]; /* capturing client: kcat, confluent, kafka-python, kafkajs, platformatic */
    char file[128];  /* path relative to GOLDEN_DIR */
    int16_t api_key; /* from the manifest */
    int16_t api_version; /* from the manifest */
    char note[512];      /* variant description; Produce: "topic=T codec=C records=N [flags]" */
    uint8_t *data;       /* the whole frame, including the 4-byte size */
    size_t len;          /* bytes */
};

struct golden_set {
    struct golden_frame *frames;
    size_t count;
};

static int golden_read_file(const char *path, uint8_t **out, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return -errno;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = -EIO;
    if (fseek(f, 0, SEEK_END) != 0) {
        goto out;
    }
    long size = ftell(f);
    if (size <= 0 || size > (64L << 20) || fseek(f, 0, SEEK_SET) != 0) {
        goto out;
    }
    len = (size_t)size;
    buf = malloc(len);
    if (buf == NULL || fread(buf, 1, len, f) != len) {
        free(buf);
        buf = NULL;
        goto out;
    }
    *out = buf;
    *out_len = len;
    rc = 0;
out:
    fclose(f);
    return rc;
}

static void golden_free(struct golden_set *set)
{
    for (size_t i = 0; i < set->count; i++) {
        free(set->frames[i].data);
    }
    free(set->frames);
    set->frames = NULL;
    set->count = 0;
}

/* Copies the tab-separated field at *p into dst (truncating) and advances past the tab. */
static void golden_field(char **p, char *dst, size_t cap)
{
    char *end = strchr(*p, '\t');
    size_t n = end != NULL ? (size_t)(end - *p) : strlen(*p);
    size_t c = n < cap - 1 ? n : cap - 1;
    memcpy(dst, *p, c);
    dst[c] = '\0';
    *p += n + (end != NULL ? 1 : 0);
}

/* Reads MANIFEST.tsv and every frame it lists. Returns 0 or a negative errno. */
static int golden_load(struct golden_set *set)
{
    set->frames = NULL;
    set->count = 0;
    FILE *f = fopen(GOLDEN_DIR "/MANIFEST.tsv", "r");
    if (f == NULL) {
        return -errno;
    }
    char line[1024];
    size_t cap = 0;
    int rc = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0') {
            continue;
        }
        if (set->count == cap) {
            cap = cap == 0 ? 64 : cap * 2;
            struct golden_frame *n = realloc(set->frames, cap * sizeof(*n));
            if (n == NULL) {
                rc = -ENOMEM;
                break;
            }
            set->frames = n;
        }
        struct golden_frame *g = &set->frames[set->count];
        memset(g, 0, sizeof(*g));
        char num[16];
        char *p = line;
        golden_field(&p, g->client, sizeof(g->client));
        golden_field(&p, g->file, sizeof(g->file));
        golden_field(&p, num, sizeof(num));
        g->api_key = (int16_t)atoi(num);
        golden_field(&p, num, sizeof(num));
        g->api_version = (int16_t)atoi(num);
        golden_field(&p, g->note, sizeof(g->note));
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", GOLDEN_DIR, g->file);
        rc = golden_read_file(path, &g->data, &g->len);
        if (rc != 0) {
            fprintf(stderr, "golden: cannot read %s\n", path);
            break;
        }
        set->count++;
    }
    fclose(f);
    if (rc != 0) {
        golden_free(set);
    }
    return rc;
}

#endif
