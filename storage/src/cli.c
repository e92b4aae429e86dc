/*
 * `runnel object inspect URL KEY`: opens the store, reads the object's footer, prints it, then
 * fetches every chunk with its own ranged GET and verifies CRC32C and decompression. Exit 0 when
 * every chunk is intact, 1 otherwise.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runnel/storage/cli.h"
#include "runnel/storage/object.h"
#include "runnel/storage/store.h"

struct store__inspect {
    struct store *store;        /* the store */
    const char *key;            /* object key */
    struct store_obj_read read; /* current read */
    struct store_footer footer; /* parsed footer */
    uint32_t next;              /* next chunk to verify */
    uint32_t bad;               /* chunks that failed */
    int status;                 /* exit status */
};

static void store__inspect_next(struct store__inspect *in);

static void store__print_uuid(const uint8_t id[16])
{
    for (int i = 0; i < 16; i++) {
        printf("%02x%s", id[i], (i == 3 || i == 5 || i == 7 || i == 9) ? "-" : "");
    }
}

static void store__inspect_chunk_cb(struct store_obj_read *r)
{
    struct store__inspect *in = r->data;
    const struct store_chunk *c = &in->footer.chunks[in->next];
    if (r->err != 0) {
        printf("  chunk %u: FAILED: %s (%s)\n", in->next, r->msg, store_strerror(r->err));
        in->bad++;
    } else {
        printf("  chunk %u: ok (%zu raw bytes, CRC32C %08x verified)\n", in->next, r->raw_len,
               c->crc);
    }
    store_obj_read_cleanup(r);
    in->next++;
    store__inspect_next(in);
}

static void store__inspect_next(struct store__inspect *in)
{
    if (in->next >= in->footer.nchunks) {
        printf("verified %u chunk(s): %u bad\n", in->footer.nchunks, in->bad);
        in->status = in->bad == 0 ? 0 : 1;
        store_close(in->store);
        return;
    }
    in->read.data = in;
    int rc = store_obj_read_chunk(in->store, &in->read, in->key, &in->footer.chunks[in->next],
                                  STORE_OBJ_MAX_CHUNK_RAW, store__inspect_chunk_cb);
    if (rc < 0) {
        printf("  chunk %u: cannot read: %s\n", in->next, store_strerror(rc));
        in->bad++;
        in->next++;
        store__inspect_next(in);
    }
}

static void store__inspect_footer_cb(struct store_obj_read *r)
{
    struct store__inspect *in = r->data;
    if (r->err != 0) {
        fprintf(stderr, "runnel object inspect: %s: %s (%s)\n", in->key, r->msg,
                store_strerror(r->err));
        in->status = 1;
        store_close(in->store);
        return;
    }
    in->footer = r->footer;
    memset(&r->footer, 0, sizeof(r->footer));
    struct store_footer *f = &in->footer;
    printf("object %s\n  format version %u, %" PRIu64 " bytes, footer at %" PRIu64 "\n  id ",
           in->key, f->version, f->object_size, f->footer_offset);
    store__print_uuid(f->object_id);
    printf("\n  created at %" PRId64 " ms\n  %u chunk(s)\n", f->created_at_ms, f->nchunks);
    for (uint32_t i = 0; i < f->nchunks; i++) {
        const struct store_chunk *c = &f->chunks[i];
        printf("  chunk %u: topic ", i);
        store__print_uuid(c->topic_id);
        printf(" partition %d offset %" PRIu64 " stored %u raw %u codec %s records %u batches %u "
               "ts %" PRId64 "..%" PRId64 " crc32c %08x\n",
               c->partition, c->offset, c->stored_len, c->raw_len,
               c->codec == STORE_CODEC_ZSTD ? "zstd" : "none", c->record_count, c->batch_count,
               c->first_ts, c->last_ts, c->crc);
    }
    store__inspect_next(in);
}

static int store__usage(void)
{
    fprintf(stderr, "usage: runnel object inspect URL KEY\n"
                    "  URL: s3://bucket/prefix?endpoint=...  file:///dir  (credentials from\n"
                    "       AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)\n");
    return 2;
}

int store_cmd_object(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        store__usage();
        return 0;
    }
    if (argc != 4 || strcmp(argv[1], "inspect") != 0) {
        return store__usage();
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct store__inspect in = {0};
    in.key = argv[3];
    in.status = 1;
    char err[256];
    int rc = store_open(&loop, argv[2], NULL, &in.store, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "runnel object inspect: %s\n", err);
        uv_loop_close(&loop);
        return 1;
    }
    in.read.data = &in;
    rc = store_obj_read_footer(in.store, &in.read, in.key, store__inspect_footer_cb);
    if (rc < 0) {
        fprintf(stderr, "runnel object inspect: invalid key '%s'\n", in.key);
        store_close(in.store);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    store_footer_free(&in.footer);
    uv_loop_close(&loop);
    return in.status;
}
