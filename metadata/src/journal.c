/*
 * The journal and snapshots of journal.h: op encoding and replay, the on-disk record format,
 * start-up recovery (newest snapshot, replay of the journal files after it, torn-tail cut,
 * corruption report), the writer thread that turns many appends into one write + fdatasync
 * (group commit), and journal rotation: a snapshot switches appends to a new journal file and,
 * once it is durable, the files it covers are deleted (nothing is copied).
 */
#include "runnel/metadata/journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

#include "groups_int.h"
#include "internal.h"
#include "meta_obs.h"
#include "runnel/protocol/crc32c.h"
#include "runnel/protocol/mem.h"

#define META_SNAPSHOT_MAGIC "RNLSNAP3"    /* zstd-compressed body, u64 stored and raw lengths */
#define META_SNAPSHOT_MAGIC_V2 "RNLSNAP2" /* uncompressed body with a u64 length */
#define META_SNAPSHOT_MAGIC_V1 "RNLSNAPF" /* the oldest header, a u32 length */
#define META_SNAPSHOT_HEADER 40
#define META_SNAPSHOT_HEADER_V2 32
#define META_SNAPSHOT_ZSTD_LEVEL 1 /* fast: the snapshot thread's CPU is the loop's neighbour */
#define META_SNAPSHOT_RAW_MAX ((uint64_t)1 << 40) /* a larger raw length is corruption */
#define META_SNAPSHOT_SLICE ((size_t)1 << 20)     /* snapshot bytes written back at a time */
#define META_DELETE_STEP ((size_t)8 << 20)        /* obsolete files shrink by this much at a time */
#define META_DELETE_PAUSE_NS 10000000u            /* between two steps */
#define META_FREE_STEP ((size_t)8 << 20)          /* large buffers release pages by this much */
#define META_RECORD_HEADER 8                      /* u32 len + u32 crc */
#define META_RECORD_MAX (256u << 20)              /* a body larger than this is corruption */

/* ---- op encoding ---- */

static struct meta__buf meta__ob_open(struct meta_op_buf *b, enum meta_op op, int64_t now_ms)
{
    struct meta__buf m = {b->p, 0, b->cap};
    meta__put_u8(&m, (uint8_t)op);
    meta__put_u64(&m, (uint64_t)now_ms);
    return m;
}

static void meta__ob_close(struct meta_op_buf *b, struct meta__buf *m)
{
    b->p = m->p;
    b->len = m->len;
    b->cap = m->cap;
}

static void meta__put_cfg(struct meta__buf *m, const struct meta_config_kv *cfg, size_t n)
{
    meta__put_u32(m, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        meta__put_str(m, cfg[i].name, cfg[i].name_len);
        meta__put_str(m, cfg[i].value, cfg[i].value_len);
    }
}

void meta_op_create_topic(struct meta_op_buf *b, int64_t now_ms, const char *name, size_t name_len,
                          int32_t partitions, const struct meta_config_kv *cfg, size_t n_cfg)
{
    struct meta__buf m = meta__ob_open(b, META_OP_CREATE_TOPIC, now_ms);
    meta__put_str(&m, name, name_len);
    meta__put_u32(&m, (uint32_t)partitions);
    meta__put_cfg(&m, cfg, n_cfg);
    meta__ob_close(b, &m);
}

void meta_op_delete_topic(struct meta_op_buf *b, int64_t now_ms, const char *name, size_t name_len,
                          const struct kp_uuid *id)
{
    static const struct kp_uuid zero;
    struct meta__buf m = meta__ob_open(b, META_OP_DELETE_TOPIC, now_ms);
    meta__put_str(&m, name, name_len);
    meta__put_raw(&m, (id != NULL ? id : &zero)->b, 16);
    meta__ob_close(b, &m);
}

void meta_op_create_partitions(struct meta_op_buf *b, int64_t now_ms, const char *name,
                               size_t name_len, int32_t count)
{
    struct meta__buf m = meta__ob_open(b, META_OP_CREATE_PARTITIONS, now_ms);
    meta__put_str(&m, name, name_len);
    meta__put_u32(&m, (uint32_t)count);
    meta__ob_close(b, &m);
}

void meta_op_alter_configs(struct meta_op_buf *b, int64_t now_ms, const char *name, size_t name_len,
                           const struct meta_config_kv *cfg, size_t n_cfg)
{
    struct meta__buf m = meta__ob_open(b, META_OP_ALTER_CONFIGS, now_ms);
    meta__put_str(&m, name, name_len);
    meta__put_cfg(&m, cfg, n_cfg);
    meta__ob_close(b, &m);
}

void meta_op_commit(struct meta_op_buf *b, int64_t now_ms, const struct meta_commit *c)
{
    struct meta__buf m = meta__ob_open(b, META_OP_COMMIT, now_ms);
    meta__put_str(&m, c->object_key, c->object_key_len);
    meta__put_u64(&m, (uint64_t)c->object_size);
    meta__put_u64(&m, (uint64_t)c->object_created_ms);
    meta__put_u16(&m, (uint16_t)c->fenced_error);
    meta__put_u32(&m, c->n_parts);
    for (uint32_t i = 0; i < c->n_parts; i++) {
        const struct meta_commit_part *p = &c->parts[i];
        meta__put_raw(&m, p->topic_id.b, 16);
        meta__put_str(&m, p->topic_name, p->topic_name_len);
        meta__put_u32(&m, (uint32_t)p->partition);
        meta__put_u64(&m, (uint64_t)p->chunk_off);
        meta__put_u32(&m, (uint32_t)p->chunk_len);
        meta__put_u32(&m, p->n_ranges);
        meta__buf_reserve(&m, (size_t)p->n_ranges * 34);
        for (uint32_t j = 0; j < p->n_ranges; j++) {
            const struct meta_commit_range *r = &p->ranges[j];
            meta__put_u64(&m, (uint64_t)r->producer_id);
            meta__put_u16(&m, (uint16_t)r->epoch);
            meta__put_u32(&m, (uint32_t)r->base_seq);
            meta__put_u32(&m, (uint32_t)r->record_count);
            meta__put_u64(&m, (uint64_t)r->max_ts);
            meta__put_u32(&m, r->raw_off);
            meta__put_u32(&m, r->raw_len);
        }
    }
    meta__ob_close(b, &m);
}

void meta_op_init_producer(struct meta_op_buf *b, int64_t now_ms, const char *txn_id,
                           size_t txn_len, int64_t producer_id, int16_t epoch)
{
    struct meta__buf m = meta__ob_open(b, META_OP_INIT_PRODUCER, now_ms);
    meta__put_str(&m, txn_id, txn_len);
    meta__put_u64(&m, (uint64_t)producer_id);
    meta__put_u16(&m, (uint16_t)epoch);
    meta__ob_close(b, &m);
}

void meta_op_register_agent(struct meta_op_buf *b, int64_t now_ms, int32_t id, const char *host,
                            size_t host_len, int32_t port, const char *zone, size_t zone_len,
                            int32_t session_timeout_ms)
{
    struct meta__buf m = meta__ob_open(b, META_OP_REGISTER_AGENT, now_ms);
    meta__put_u32(&m, (uint32_t)id);
    meta__put_str(&m, host, host_len);
    meta__put_u32(&m, (uint32_t)port);
    meta__put_str(&m, zone, zone_len);
    meta__put_u32(&m, (uint32_t)session_timeout_ms);
    meta__ob_close(b, &m);
}

void meta_op_heartbeat(struct meta_op_buf *b, int64_t now_ms, int32_t id, int64_t epoch)
{
    struct meta__buf m = meta__ob_open(b, META_OP_HEARTBEAT, now_ms);
    meta__put_u32(&m, (uint32_t)id);
    meta__put_u64(&m, (uint64_t)epoch);
    meta__ob_close(b, &m);
}

void meta_op_acquire_lease(struct meta_op_buf *b, int64_t now_ms, const char *name, size_t name_len,
                           int32_t holder, int32_t duration_ms)
{
    struct meta__buf m = meta__ob_open(b, META_OP_ACQUIRE_LEASE, now_ms);
    meta__put_str(&m, name, name_len);
    meta__put_u32(&m, (uint32_t)holder);
    meta__put_u32(&m, (uint32_t)duration_ms);
    meta__ob_close(b, &m);
}

void meta_op_release_lease(struct meta_op_buf *b, int64_t now_ms, const char *name, size_t name_len,
                           int32_t holder, int64_t epoch)
{
    struct meta__buf m = meta__ob_open(b, META_OP_RELEASE_LEASE, now_ms);
    meta__put_str(&m, name, name_len);
    meta__put_u32(&m, (uint32_t)holder);
    meta__put_u64(&m, (uint64_t)epoch);
    meta__ob_close(b, &m);
}

void meta_op_buf_free(struct meta_op_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- op replay ---- */

static struct meta_config_kv *meta__get_cfg(struct kp_reader *r, size_t *n_out)
{
    uint32_t n = kp_read_u32(r);
    *n_out = 0;
    if (r->err || (uint64_t)n * 8 > kp_reader_remaining(r)) {
        kp_reader_fail(r, KP_ERR_SHORT, "config count larger than the record");
        return NULL;
    }
    struct meta_config_kv *kv = kp_xcalloc(n ? n : 1, sizeof(*kv));
    for (uint32_t i = 0; i < n; i++) {
        meta__get_str(r, &kv[i].name, &kv[i].name_len);
        meta__get_str(r, &kv[i].value, &kv[i].value_len);
        if (kv[i].name == NULL) {
            kp_reader_fail(r, KP_ERR_INVALID, "null config name");
        }
    }
    *n_out = n;
    return kv;
}

static int meta__apply_commit(struct meta_state *s, int64_t now, struct kp_reader *r)
{
    struct meta_commit c = {0};
    meta__get_str(r, &c.object_key, &c.object_key_len);
    c.object_size = kp_read_i64(r);
    c.object_created_ms = kp_read_i64(r);
    c.fenced_error = kp_read_i16(r);
    c.n_parts = kp_read_u32(r);
    if (r->err || (uint64_t)c.n_parts * 40 > kp_reader_remaining(r)) {
        return kp_reader_fail(r, KP_ERR_SHORT, "commit partition count larger than the record");
    }
    c.parts = kp_xcalloc(c.n_parts ? c.n_parts : 1, sizeof(*c.parts));
    size_t total = 0;
    for (uint32_t i = 0; i < c.n_parts && !r->err; i++) {
        struct meta_commit_part *p = &c.parts[i];
        kp_read_uuid(r, &p->topic_id);
        meta__get_str(r, &p->topic_name, &p->topic_name_len);
        p->partition = kp_read_i32(r);
        p->chunk_off = kp_read_i64(r);
        p->chunk_len = kp_read_i32(r);
        p->n_ranges = kp_read_u32(r);
        if (r->err || (uint64_t)p->n_ranges * 34 > kp_reader_remaining(r)) {
            kp_reader_fail(r, KP_ERR_SHORT, "range count larger than the record");
            break;
        }
        p->ranges = kp_xcalloc(p->n_ranges ? p->n_ranges : 1, sizeof(*p->ranges));
        for (uint32_t j = 0; j < p->n_ranges; j++) {
            struct meta_commit_range *x = &p->ranges[j];
            x->producer_id = kp_read_i64(r);
            x->epoch = kp_read_i16(r);
            x->base_seq = kp_read_i32(r);
            x->record_count = kp_read_i32(r);
            x->max_ts = kp_read_i64(r);
            x->raw_off = kp_read_u32(r);
            x->raw_len = kp_read_u32(r);
        }
        total += p->n_ranges;
    }
    if (!r->err) {
        struct meta_part_result *pr = kp_xmalloc(sizeof(*pr) * (c.n_parts ? c.n_parts : 1));
        struct meta_range_result *rr = kp_xmalloc(sizeof(*rr) * (total ? total : 1));
        meta_state_commit(s, now, &c, pr, rr);
        free(pr);
        free(rr);
    }
    for (uint32_t i = 0; i < c.n_parts; i++) {
        free(c.parts[i].ranges);
    }
    free(c.parts);
    return r->err;
}

int meta_op_apply(struct meta_state *s, const uint8_t *op, size_t len, const char **why)
{
    struct kp_reader r;
    kp_reader_init(&r, op, len);
    uint8_t type = (uint8_t)kp_read_i8(&r);
    int64_t now = kp_read_i64(&r);
    const char *name = NULL;
    size_t name_len = 0;
    const char *s2 = NULL;
    size_t s2_len = 0;
    struct meta_config_kv *kv = NULL;
    size_t n_kv = 0;
    if (r.err) {
        *why = "record shorter than an op header";
        return -EINVAL;
    }
    switch (type) {
    case META_OP_CREATE_TOPIC: {
        meta__get_str(&r, &name, &name_len);
        int32_t parts = kp_read_i32(&r);
        kv = meta__get_cfg(&r, &n_kv);
        if (!r.err) {
            meta_state_create_topic(s, name, name_len, parts, kv, n_kv, false, NULL);
        }
        break;
    }
    case META_OP_DELETE_TOPIC: {
        struct kp_uuid id;
        meta__get_str(&r, &name, &name_len);
        kp_read_uuid(&r, &id);
        if (!r.err) {
            meta_state_delete_topic(s, name, name_len, &id);
        }
        break;
    }
    case META_OP_CREATE_PARTITIONS: {
        meta__get_str(&r, &name, &name_len);
        int32_t count = kp_read_i32(&r);
        if (!r.err) {
            meta_state_create_partitions(s, name, name_len, count, false);
        }
        break;
    }
    case META_OP_ALTER_CONFIGS:
        meta__get_str(&r, &name, &name_len);
        kv = meta__get_cfg(&r, &n_kv);
        if (!r.err) {
            meta_state_alter_configs(s, name, name_len, kv, n_kv, false);
        }
        break;
    case META_OP_COMMIT:
        meta__apply_commit(s, now, &r);
        break;
    case META_OP_INIT_PRODUCER: {
        meta__get_str(&r, &name, &name_len);
        int64_t pid = kp_read_i64(&r);
        int16_t epoch = kp_read_i16(&r);
        int64_t out_id;
        int16_t out_epoch;
        if (!r.err) {
            meta_state_init_producer(s, now, name, name_len, pid, epoch, &out_id, &out_epoch);
        }
        break;
    }
    case META_OP_REGISTER_AGENT: {
        int32_t id = kp_read_i32(&r);
        meta__get_str(&r, &name, &name_len);
        int32_t port = kp_read_i32(&r);
        meta__get_str(&r, &s2, &s2_len);
        int32_t timeout = kp_read_i32(&r);
        int32_t out_id;
        int64_t out_epoch;
        if (!r.err) {
            meta_state_register_agent(s, now, id, name, name_len, port, s2, s2_len, timeout,
                                      &out_id, &out_epoch);
        }
        break;
    }
    case META_OP_HEARTBEAT: {
        int32_t id = kp_read_i32(&r);
        int64_t epoch = kp_read_i64(&r);
        if (!r.err) {
            meta_state_heartbeat(s, now, id, epoch);
        }
        break;
    }
    case META_OP_ACQUIRE_LEASE: {
        meta__get_str(&r, &name, &name_len);
        int32_t holder = kp_read_i32(&r);
        int32_t dur = kp_read_i32(&r);
        int32_t oh;
        int64_t oe;
        int64_t ox;
        if (!r.err) {
            meta_state_acquire_lease(s, now, name, name_len, holder, dur, &oh, &oe, &ox);
        }
        break;
    }
    case META_OP_RELEASE_LEASE: {
        meta__get_str(&r, &name, &name_len);
        int32_t holder = kp_read_i32(&r);
        int64_t epoch = kp_read_i64(&r);
        if (!r.err) {
            meta_state_release_lease(s, name, name_len, holder, epoch);
        }
        break;
    }
    case META_OP_GROUP:
        meta__groups_apply_op(s, now, &r);
        break;
    default:
        *why = "unknown op type";
        return -EINVAL;
    }
    free(kv);
    if (!r.err && kp_reader_remaining(&r) != 0) {
        kp_reader_fail(&r, KP_ERR_INVALID, "trailing bytes after the op");
    }
    if (r.err) {
        *why = r.why != NULL ? r.why : "op truncated";
        return -EINVAL;
    }
    return 0;
}

/* ---- the journal ---- */

/* A snapshot serialised on the loop thread, written by the writer thread. */
struct meta_snapreq {
    uint8_t *data; /* serialised state, malloc'd */
    size_t len;    /* bytes */
    uint64_t seq;  /* last sequence the state reflects */
};

struct meta_journal {
    char *dir;                     /* data directory */
    int fd;                        /* writer: the newest journal file, positioned at its end */
    uint64_t gen;                  /* loop: generation of the newest journal file asked for */
    uint64_t wgen;                 /* writer: generation of the file fd writes */
    uint64_t last_seq;             /* last appended sequence (loop thread) */
    uint64_t file_bytes;           /* bytes appended since the last rotation */
    uint64_t snap_rate;            /* loop: bytes/s a snapshot file is written at most; 0: any */
    uint64_t bg_gen;               /* loop: generation of the background snapshot, or 0 */
    uint64_t bg_seq;               /* last sequence it covers (read-only while it runs) */
    uint64_t bg_rate;              /* its snap_rate (read-only while it runs) */
    pthread_t bg_thread;           /* the background snapshot's thread */
    _Atomic int bg_result;         /* 0 while it runs, 1 written, or -errno */
    _Atomic bool bg_quit;          /* close: stop at the next check */
    char bg_err[512];              /* why it failed; written before bg_result */
    uint64_t install_asked;        /* loop: newest snapshot generation handed to the writer */
    _Atomic uint64_t install_seen; /* writer: newest generation whose install was attempted */
    char crash_at[32];             /* test hook RUNNEL_META_CRASH_AT, "" when unset */
    pthread_t thread;              /* the writer */
    pthread_mutex_t mu;            /* guards the fields below */
    pthread_cond_t cond;           /* wakes the writer */
    struct meta__buf pending;      /* records not yet handed to the writer */
    uint64_t pending_last_seq;     /* seq of the last record in pending */
    bool rot_req;                  /* switch to journal file rot_gen after rot_boundary bytes */
    size_t rot_boundary;           /* bytes of pending that go to the old file */
    uint64_t rot_gen;              /* generation of the new file */
    struct meta_snapreq *rot_snap; /* a snapshot to write as snapshot.<rot_gen>, or NULL */
    bool install_req;              /* the background snapshot.<install_gen>.tmp is complete */
    uint64_t install_gen;          /* its generation */
    bool stop;                     /* writer should exit once pending is written */
    pthread_t deleter;             /* writer: deletes the files an install made obsolete */
    bool deleting;                 /* writer: deleter was started and not joined */
    _Atomic bool deleter_quit;     /* close: the deleter should stop shrinking and just unlink */
    _Atomic uint64_t durable_seq;  /* last sequence confirmed by fdatasync */
    _Atomic int failed;            /* 0 or -errno of the failed write/sync */
    _Atomic uint64_t syncs;        /* fdatasync calls */
    meta_journal_notify_fn notify; /* called after every group commit */
    void *notify_arg;              /* its argument */
};

static void meta__errf(char *err, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void meta__errf(char *err, size_t len, const char *fmt, ...)
{
    if (err == NULL || len == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

static char *meta__path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = kp_xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* DIR/<kind>.<gen as 20 digits><suffix>, malloc'd. Fixed width: names sort like generations. */
static char *meta__gen_path(const char *dir, const char *kind, uint64_t gen, const char *suffix)
{
    char name[64];
    snprintf(name, sizeof(name), "%s.%020" PRIu64 "%s", kind, gen, suffix);
    return meta__path(dir, name);
}

/* Parses "<kind>.<20 digits>" exactly; false for any other name. */
static bool meta__parse_gen(const char *name, const char *kind, uint64_t *gen)
{
    size_t k = strlen(kind);
    if (strncmp(name, kind, k) != 0 || name[k] != '.' || strlen(name + k + 1) != 20) {
        return false;
    }
    uint64_t v = 0;
    for (const char *p = name + k + 1; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *gen = v;
    return true;
}

/*
 * Test hook: when RUNNEL_META_CRASH_AT names `point`, the process SIGKILLs itself there, which
 * is what a crash at that instant leaves on disk. The crash test uses it to reach every step of
 * snapshot installation and journal rotation.
 */
static void meta__crash_point(const struct meta_journal *j, const char *point)
{
    if (j->crash_at[0] != '\0' && strcmp(j->crash_at, point) == 0) {
        kill(getpid(), SIGKILL);
        for (;;) {
            pause(); /* the signal may be taken by another thread: do nothing more here */
        }
    }
}

/*
 * Frees a malloc'd buffer of `len` bytes. The pages of a large one are released 8 MiB at a time
 * first: MADV_DONTNEED holds the process's address-space lock only for reading, while one munmap
 * of hundreds of MB held it for writing for ~60 ms on this VM, and the loop thread's page faults
 * and extent-array growth waited behind it whenever the snapshot thread freed what it had read.
 */
static void meta__free_big(void *p, size_t len)
{
    if (p != NULL && len >= 8 * META_FREE_STEP) {
        uintptr_t a = ((uintptr_t)p + 4095) & ~(uintptr_t)4095;
        uintptr_t end = ((uintptr_t)p + len) & ~(uintptr_t)4095;
        while (a < end) {
            size_t n = end - a < META_FREE_STEP ? end - a : META_FREE_STEP;
            (void)madvise((void *)a, n, MADV_DONTNEED);
            a += n;
        }
    }
    free(p);
}

static int meta__read_file(const char *path, uint8_t **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = kp_xmalloc(n ? n : 1);
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            int e = r < 0 ? -errno : -EIO;
            free(buf);
            close(fd);
            return e;
        }
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *len = n;
    return 0;
}

static int meta__write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0) {
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int meta__sync(struct meta_journal *j, int fd)
{
    const char *hook = getenv("RUNNEL_META_FAIL_FSYNC_FILE");
    if (hook != NULL && hook[0] != '\0' && access(hook, F_OK) == 0) {
        if (j != NULL) {
            meta__obs_fsync(0, -EIO);
        }
        return -EIO;
    }
    if (j == NULL) {
        return fdatasync(fd) == 0 ? 0 : -errno;
    }
    atomic_fetch_add(&j->syncs, 1);
    uint64_t t0 = meta__obs_now_ns();
    int rc = fdatasync(fd) == 0 ? 0 : -errno;
    meta__obs_fsync(meta__obs_now_ns() - t0, rc);
    return rc;
}

static int meta__fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

static bool meta__all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    return true;
}

static uint64_t meta__be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

static uint32_t meta__be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * The snapshot file header: magic | u64 last_seq | u64 stored length | u64 raw length |
 * u32 crc32c of the stored body | u32 crc32c of bytes 8-35 (the header's fields), so a damaged
 * length or sequence is caught like a damaged body. "RNLSNAP3" means the body is one zstd frame.
 */
static void meta__snapshot_header(uint8_t head[META_SNAPSHOT_HEADER], uint64_t seq, uint64_t stored,
                                  uint64_t raw, uint32_t crc_body)
{
    memcpy(head, META_SNAPSHOT_MAGIC, 8);
    for (int i = 0; i < 8; i++) {
        head[8 + i] = (uint8_t)(seq >> (56 - 8 * i));
        head[16 + i] = (uint8_t)(stored >> (56 - 8 * i));
        head[24 + i] = (uint8_t)(raw >> (56 - 8 * i));
    }
    for (int i = 0; i < 4; i++) {
        head[32 + i] = (uint8_t)(crc_body >> (24 - 8 * i));
    }
    uint32_t crc_head = kp_crc32c(0, head + 8, 28);
    for (int i = 0; i < 4; i++) {
        head[36 + i] = (uint8_t)(crc_head >> (24 - 8 * i));
    }
}

/* Sleeps until CLOCK_MONOTONIC reaches `until_ns`. */
static void meta__sleep_until(uint64_t until_ns)
{
    struct timespec ts = {(time_t)(until_ns / 1000000000u), (long)(until_ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static uint64_t meta__mono_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Writes `data` to `path` (created or truncated) as a zstd-compressed snapshot and fdatasyncs
 * it, at most `rate` stored bytes per second (0: as fast as the disk takes it). The state
 * compresses well (offsets, timestamps and object numbers that follow each other), and every
 * byte not written is a byte that does not queue in front of the journal's fdatasync. The
 * compressed bytes go out in META_SNAPSHOT_SLICE pieces; each is written back (sync_file_range,
 * waited for) before the next is written, so no more than one slice of snapshot data is ever
 * dirty or in flight ahead of the journal's own writes and flushes; the pacing leaves the disk
 * idle between slices for the journal. The header, which holds the lengths and the CRC, is
 * written last, before the fdatasync.
 */
static int meta__write_snapshot_file(struct meta_journal *j, const char *path, const uint8_t *data,
                                     size_t len, uint64_t seq, uint64_t rate,
                                     const _Atomic bool *quit)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -errno;
    }
    const size_t slice = META_SNAPSHOT_SLICE;
    size_t out_cap = slice + ZSTD_CStreamOutSize();
    uint8_t *out = malloc(out_cap);
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    int rc = 0;
    if (out == NULL || cc == NULL ||
        ZSTD_isError(
            ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, META_SNAPSHOT_ZSTD_LEVEL)) ||
        ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(cc, len))) {
        rc = -ENOMEM;
    }
    uint8_t head[META_SNAPSHOT_HEADER] = {0};
    if (rc == 0) {
        rc = meta__write_all(fd, head, sizeof(head)); /* rewritten below */
    }
    uint64_t t0 = meta__mono_now_ns();
    uint64_t stored = 0;
    uint32_t crc = 0;
    ZSTD_inBuffer in = {data, len, 0};
    bool done = false;
    while (rc == 0 && !done) {
        if (quit != NULL && atomic_load(quit)) {
            rc = -ECANCELED;
            break;
        }
        ZSTD_outBuffer ob = {out, out_cap, 0};
        /* Fill one slice of output (or finish the frame). */
        while (ob.pos < slice && !done) {
            size_t feed = len - in.pos < slice ? len - in.pos : slice;
            ZSTD_inBuffer part = {(const uint8_t *)in.src + in.pos, feed, 0};
            bool last = in.pos + feed == len;
            size_t left = ZSTD_compressStream2(cc, &ob, &part, last ? ZSTD_e_end : ZSTD_e_continue);
            if (ZSTD_isError(left)) {
                rc = -EIO;
                break;
            }
            in.pos += part.pos;
            done = last && left == 0;
            if (ob.pos == ob.size) {
                break; /* out of room: write this much, then go on */
            }
        }
        if (rc != 0 || ob.pos == 0) {
            continue;
        }
        rc = meta__write_all(fd, out, ob.pos);
        crc = kp_crc32c(crc, out, ob.pos);
        stored += ob.pos;
        off_t end = (off_t)(sizeof(head) + stored);
        /* Best effort: a failure here only loses the pacing; fdatasync below decides. */
        (void)sync_file_range(fd, end - (off_t)ob.pos, (off_t)ob.pos,
                              SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                  SYNC_FILE_RANGE_WAIT_AFTER);
        if (rate > 0) {
            meta__sleep_until(t0 + (uint64_t)((double)stored * 1e9 / (double)rate));
        }
    }
    if (rc == 0) {
        meta__snapshot_header(head, seq, stored, len, crc);
        rc = pwrite(fd, head, sizeof(head), 0) == (ssize_t)sizeof(head) ? 0 : -EIO;
    }
    if (rc == 0) {
        rc = meta__sync(j, fd);
    }
    ZSTD_freeCCtx(cc);
    free(out);
    close(fd);
    return rc;
}

static int meta__load_snapshot(struct meta_state *s, const char *path, uint64_t *seq, char *err,
                               size_t err_len)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = meta__read_file(path, &buf, &len);
    if (rc != 0) {
        meta__errf(err, err_len, "%s: cannot read: %s", path, strerror(-rc));
        return rc;
    }
    rc = -EUCLEAN;
    size_t head = 0;
    uint64_t body = 0;
    uint64_t raw = 0;
    uint32_t crc = 0;
    bool zstd = false;
    if (len >= META_SNAPSHOT_HEADER && memcmp(buf, META_SNAPSHOT_MAGIC, 8) == 0) {
        head = META_SNAPSHOT_HEADER;
        body = meta__be64(buf + 16);
        raw = meta__be64(buf + 24);
        crc = meta__be32(buf + 32);
        zstd = true;
        if (kp_crc32c(0, buf + 8, 28) != meta__be32(buf + 36)) {
            meta__errf(err, err_len, "%s: byte 8: snapshot header CRC mismatch (corrupted)", path);
            goto out;
        }
    } else if (len >= META_SNAPSHOT_HEADER_V2 && memcmp(buf, META_SNAPSHOT_MAGIC_V2, 8) == 0) {
        head = META_SNAPSHOT_HEADER_V2; /* before compression */
        body = meta__be64(buf + 16);
        crc = meta__be32(buf + 24);
    } else if (len >= 24 && memcmp(buf, META_SNAPSHOT_MAGIC_V1, 8) == 0) {
        head = 24; /* the layout before journal rotation: a u32 length */
        body = meta__be32(buf + 16);
        crc = meta__be32(buf + 20);
    } else {
        meta__errf(err, err_len, "%s: byte 0: not a Runnel metadata snapshot", path);
        goto out;
    }
    *seq = meta__be64(buf + 8);
    if (body != len - head || kp_crc32c(0, buf + head, (size_t)body) != crc) {
        meta__errf(err, err_len, "%s: byte %zu: snapshot body length or CRC mismatch (corrupted)",
                   path, head);
        goto out;
    }
    size_t at = head; /* where the body starts in the file, for messages */
    if (zstd) {
        /* The CRC matched, so these bytes are the ones written: a failure here is a bug or a
         * file written by something else, and is reported as corruption all the same. */
        unsigned long long fcs = ZSTD_getFrameContentSize(buf + head, (size_t)body);
        uint8_t *plain = NULL;
        size_t got = 0;
        if (raw <= META_SNAPSHOT_RAW_MAX && fcs == raw &&
            (plain = malloc(raw ? (size_t)raw : 1)) != NULL) {
            got = ZSTD_decompress(plain, (size_t)raw, buf + head, (size_t)body);
        }
        if (plain == NULL || ZSTD_isError(got) || got != raw) {
            meta__errf(err, err_len,
                       "%s: byte %zu: snapshot body does not decompress to %llu "
                       "bytes (corrupted)",
                       path, head, (unsigned long long)raw);
            meta__free_big(plain, (size_t)raw);
            goto out;
        }
        meta__free_big(buf, len);
        buf = plain;
        len = (size_t)raw;
        head = 0;
        body = raw;
    }
    const char *why = NULL;
    if (meta_state_deserialize(s, buf + head, (size_t)body, &why) != 0) {
        meta__errf(err, err_len, "%s: byte %zu: bad snapshot contents: %s", path, at, why);
        goto out;
    }
    rc = 0;
out:
    meta__free_big(buf, len);
    return rc;
}

/* Where replay is: carried from one journal file to the next. */
struct meta__replay_pos {
    uint64_t snap_seq; /* records up to this one are in the snapshot */
    uint64_t expect;   /* sequence the next record must have, 0 before the first */
    uint64_t last;     /* last sequence applied (or covered by the snapshot) */
};

/*
 * Replays one journal file. A torn tail (the last record cut short, or a bad record with only
 * zeros after it) is what a crash mid-write leaves; it is accepted only in the last file
 * (`is_last`) and then cut there. Anything else stops start-up with the file and byte position.
 */
static int meta__replay_file(struct meta_state *s, const char *path, bool is_last,
                             struct meta__replay_pos *rp, const _Atomic bool *quit, char *err,
                             size_t err_len)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = meta__read_file(path, &buf, &len);
    if (rc != 0) {
        meta__errf(err, err_len, "%s: cannot read: %s", path, strerror(-rc));
        return rc;
    }
    size_t pos = 0;
    size_t cut = len;
    while (pos < len) {
        size_t left = len - pos;
        bool torn = false;
        uint32_t body = 0;
        if (left < META_RECORD_HEADER) {
            torn = true;
        } else {
            body = meta__be32(buf + pos);
            uint32_t crc = meta__be32(buf + pos + 4);
            if (body < 17 || body > META_RECORD_MAX || body > left - META_RECORD_HEADER ||
                kp_crc32c(0, buf + pos + META_RECORD_HEADER, body) != crc) {
                /* Torn if nothing meaningful follows: the record runs past the end, or all the
                 * bytes after this header are zeros (a file extended but never filled). */
                torn = body > left - META_RECORD_HEADER ||
                       (size_t)body + META_RECORD_HEADER == left ||
                       meta__all_zero(buf + pos, left) ||
                       meta__all_zero(buf + pos + META_RECORD_HEADER, left - META_RECORD_HEADER);
                if (!torn) {
                    meta__errf(err, err_len,
                               "%s: byte %zu: corrupted journal record (bad length or CRC) "
                               "followed by %zu more bytes; refusing to start",
                               path, pos, left);
                    rc = -EUCLEAN;
                    goto out;
                }
            }
        }
        if (torn && !is_last) {
            meta__errf(err, err_len,
                       "%s: byte %zu: torn or corrupted journal record at the end of a file that "
                       "is not the newest one (a newer journal file follows); refusing to start",
                       path, pos);
            rc = -EUCLEAN;
            goto out;
        }
        if (torn) {
            cut = pos;
            break;
        }
        const uint8_t *b = buf + pos + META_RECORD_HEADER;
        uint64_t seq = meta__be64(b);
        if (rp->expect != 0 && seq != rp->expect) {
            meta__errf(err, err_len,
                       "%s: byte %zu: sequence %" PRIu64 " where %" PRIu64 " was expected", path,
                       pos, seq, rp->expect);
            rc = -EUCLEAN;
            goto out;
        }
        if (seq > rp->snap_seq) {
            if (seq != rp->last + 1) {
                meta__errf(err, err_len,
                           "%s: byte %zu: sequence %" PRIu64 " does not follow %" PRIu64
                           " (missing records)",
                           path, pos, seq, rp->last);
                rc = -EUCLEAN;
                goto out;
            }
            if (quit != NULL && (seq & 4095) == 0 && atomic_load(quit)) {
                meta__errf(err, err_len, "stopped");
                rc = -ECANCELED;
                goto out;
            }
            const char *why = NULL;
            if (meta_op_apply(s, b + 8, body - 8, &why) != 0) {
                meta__errf(err, err_len, "%s: byte %zu: undecodable op: %s", path, pos, why);
                rc = -EUCLEAN;
                goto out;
            }
            rp->last = seq;
        }
        rp->expect = seq + 1;
        pos += META_RECORD_HEADER + body;
    }
    if (cut < len) {
        fprintf(stderr, "runnel metadata: %s: cutting a torn tail of %zu bytes at byte %zu\n", path,
                len - cut, cut);
        if (truncate(path, (off_t)cut) != 0) {
            rc = -errno;
            meta__errf(err, err_len, "%s: cannot cut torn tail: %s", path, strerror(errno));
            goto out;
        }
    }
    rc = 0;
out:
    meta__free_big(buf, len);
    return rc;
}

/*
 * Deleter thread: shrinks the obsolete file `path` to nothing in META_DELETE_STEP steps, one
 * every META_DELETE_PAUSE_NS, before it is unlinked. Freeing a whole snapshot or journal file
 * (hundreds of MB) at once puts all of it into one ext4 transaction, and on a file system
 * mounted with `discard` its commit also discards all of it: the journal's next fdatasync
 * waited 60-110 ms behind that. Steps keep each transaction small. Best effort: any failure,
 * or meta_journal_close asking the deleter to finish, just leaves the rest to the unlink.
 */
static void meta__shrink_gently(struct meta_journal *j, const char *path)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        return;
    }
    struct stat st;
    if (fstat(fd, &st) == 0) {
        off_t size = st.st_size;
        while (size > (off_t)META_DELETE_STEP && !atomic_load(&j->deleter_quit)) {
            size -= (off_t)META_DELETE_STEP;
            if (ftruncate(fd, size) != 0) {
                break;
            }
            meta__sleep_until(meta__mono_now_ns() + META_DELETE_PAUSE_NS);
        }
    }
    close(fd);
}

/*
 * Deletes the snapshots and journal files of generations below `gen` (everything snapshot.<gen>
 * covers). Failures are ignored: start-up deletes what is left. `hook`: honour the mid-delete
 * crash point (not during start-up's own clean-up). `gentle`: shrink each file in steps first
 * (meta__shrink_gently; only on the deleter thread, never where it would hold up commits).
 */
static void meta__remove_older(struct meta_journal *j, uint64_t gen, bool hook, bool gentle)
{
    DIR *d = opendir(j->dir);
    if (d == NULL) {
        return;
    }
    bool first = true;
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        uint64_t g;
        if ((meta__parse_gen(e->d_name, "journal", &g) ||
             meta__parse_gen(e->d_name, "snapshot", &g)) &&
            g < gen) {
            char *path = meta__path(j->dir, e->d_name);
            if (gentle) {
                meta__shrink_gently(j, path);
            }
            unlink(path);
            free(path);
            if (first && hook) {
                meta__crash_point(j, "mid-delete");
                first = false;
            }
        }
    }
    closedir(d);
}

struct meta__deletion {
    struct meta_journal *j; /* whose directory */
    uint64_t gen;           /* delete generations below this */
    bool gentle;            /* shrink files in steps first (on the deleter thread) */
};

static void *meta__deleter_main(void *arg)
{
    struct meta__deletion *d = arg;
    meta__remove_older(d->j, d->gen, true, d->gentle);
    free(d);
    return NULL;
}

/*
 * Writer thread: deletes the files below `gen` on a short-lived thread, so that freeing hundreds
 * of MB of old journal and snapshot (ext4 frees extents under its journal) never delays a group
 * commit. The previous deleter is joined first (long finished in practice; if not, told to stop
 * shrinking); if no thread can be started, the deletes run here, without the shrinking.
 */
static void meta__start_deleter(struct meta_journal *j, uint64_t gen)
{
    if (j->deleting) {
        /* Still shrinking the previous files (an install came very soon): let it unlink the
         * rest at once rather than hold up this thread. */
        atomic_store(&j->deleter_quit, true);
        pthread_join(j->deleter, NULL);
        atomic_store(&j->deleter_quit, false);
        j->deleting = false;
    }
    struct meta__deletion *d = kp_xmalloc(sizeof(*d));
    d->j = j;
    d->gen = gen;
    d->gentle = true;
    if (pthread_create(&j->deleter, NULL, meta__deleter_main, d) == 0) {
        j->deleting = true;
    } else {
        d->gentle = false;
        meta__deleter_main(d);
    }
}

/*
 * Writer thread: makes journal.<gen> the file appends go to. The old file is fdatasynced first,
 * so only the newest file can ever end in a torn record; the new file's directory entry is
 * durable before any record in it can be acknowledged.
 */
static int meta__rotate(struct meta_journal *j, uint64_t gen)
{
    int rc = meta__sync(j, j->fd);
    if (rc != 0) {
        return rc;
    }
    char *path = meta__gen_path(j->dir, "journal", gen, "");
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    free(path);
    if (fd < 0) {
        return -errno;
    }
    rc = meta__fsync_dir(j->dir);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    close(j->fd);
    j->fd = fd;
    j->wgen = gen;
    meta__crash_point(j, "rotated");
    return 0;
}

/*
 * Writer thread: puts a complete snapshot.<gen>.tmp in place as snapshot.<gen> and deletes what
 * it covers. journal.<gen> already exists (the rotation was handled first). A crash before the
 * rename leaves the older snapshot and every journal file (the temporary is deleted at start-up);
 * after it, the older files are ignored and deleted at start-up.
 */
static int meta__install(struct meta_journal *j, uint64_t gen)
{
    meta__crash_point(j, "before-rename");
    char *tmp = meta__gen_path(j->dir, "snapshot", gen, ".tmp");
    char *path = meta__gen_path(j->dir, "snapshot", gen, "");
    int rc = rename(tmp, path) == 0 ? 0 : -errno;
    free(tmp);
    free(path);
    if (rc == 0) {
        rc = meta__fsync_dir(j->dir);
    }
    if (rc == 0) {
        meta__crash_point(j, "renamed");
        meta__start_deleter(j, gen);
    }
    atomic_store(&j->install_seen, gen);
    return rc;
}

static void *meta__writer(void *arg)
{
    struct meta_journal *j = arg;
    struct meta__buf work = {0};
    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (!j->stop && j->pending.len == 0 && !j->rot_req && !j->install_req) {
            pthread_cond_wait(&j->cond, &j->mu);
        }
        if (j->pending.len == 0 && !j->rot_req && !j->install_req) {
            break; /* stop requested and nothing left */
        }
        struct meta__buf tmp = work;
        work = j->pending;
        j->pending = tmp;
        j->pending.len = 0;
        uint64_t seq = j->pending_last_seq;
        bool rot = j->rot_req;
        size_t first = rot ? j->rot_boundary : work.len;
        uint64_t rot_gen = j->rot_gen;
        struct meta_snapreq *snap = j->rot_snap;
        bool install = j->install_req;
        uint64_t install_gen = j->install_gen;
        j->rot_req = false;
        j->rot_snap = NULL;
        j->install_req = false;
        pthread_mutex_unlock(&j->mu);

        int rc = atomic_load(&j->failed);
        if (rc == 0) {
            rc = meta__write_all(j->fd, work.p, first);
            if (rc == 0 && rot) {
                rc = meta__rotate(j, rot_gen);
            } else if (rc == 0 && first > 0) {
                rc = meta__sync(j, j->fd);
            }
            if (rc == 0 && work.len > first) {
                rc = meta__write_all(j->fd, work.p + first, work.len - first);
                if (rc == 0) {
                    rc = meta__sync(j, j->fd);
                }
            }
            if (rc != 0) {
                atomic_store(&j->failed, rc);
            } else {
                atomic_store(&j->durable_seq, seq);
            }
        }
        if (rc == 0 && snap != NULL) {
            char *stmp = meta__gen_path(j->dir, "snapshot", rot_gen, ".tmp");
            rc = meta__write_snapshot_file(j, stmp, snap->data, snap->len, snap->seq, 0, NULL);
            free(stmp);
            if (rc == 0) {
                rc = meta__install(j, rot_gen);
            }
            if (rc != 0) {
                atomic_store(&j->failed, rc);
            }
        }
        if (rc == 0 && install) {
            rc = meta__install(j, install_gen);
            if (rc != 0) {
                atomic_store(&j->failed, rc);
            }
        }
        if (snap != NULL) {
            free(snap->data);
            free(snap);
        }
        if (j->notify != NULL) {
            j->notify(j->notify_arg);
        }
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    meta__buf_free(&work);
    return NULL;
}

/* What start-up found in the data directory. */
struct meta__dirscan {
    uint64_t *jgens;  /* journal generations, ascending */
    size_t n_jgens;   /* entries */
    uint64_t snap;    /* newest snapshot generation */
    bool has_snap;    /* whether there is one */
    uint64_t max_gen; /* highest generation of any file */
};

static int meta__cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * Deletes temporaries (a snapshot written when the process died, the copy of the older design),
 * gives the files of the layout before rotation (`journal`, `snapshot`) generation 0, and lists
 * the generations present.
 */
static int meta__scan_dir(const char *dir, struct meta__dirscan *ds, char *err, size_t err_len)
{
    memset(ds, 0, sizeof(*ds));
    static const char *const legacy[] = {"journal", "snapshot"};
    for (int i = 0; i < 2; i++) {
        char *old = meta__path(dir, legacy[i]);
        if (access(old, F_OK) == 0) {
            char *neu = meta__gen_path(dir, legacy[i], 0, "");
            int rc = rename(old, neu) == 0 ? meta__fsync_dir(dir) : -errno;
            if (rc != 0) {
                meta__errf(err, err_len, "%s: cannot rename to %s: %s", old, neu, strerror(-rc));
            }
            free(neu);
            free(old);
            if (rc != 0) {
                return rc;
            }
            continue;
        }
        free(old);
    }
    DIR *d = opendir(dir);
    if (d == NULL) {
        int e = -errno;
        meta__errf(err, err_len, "%s: cannot list: %s", dir, strerror(errno));
        return e;
    }
    size_t cap = 0;
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        size_t n = strlen(e->d_name);
        uint64_t g;
        if ((n > 4 && strcmp(e->d_name + n - 4, ".tmp") == 0) ||
            strncmp(e->d_name, "snapshot.tmp", 12) == 0) {
            char *path = meta__path(dir, e->d_name);
            unlink(path);
            free(path);
        } else if (meta__parse_gen(e->d_name, "journal", &g)) {
            if (ds->n_jgens == cap) {
                cap = cap ? cap * 2 : 8;
                ds->jgens = kp_xrealloc(ds->jgens, cap * sizeof(*ds->jgens));
            }
            ds->jgens[ds->n_jgens++] = g;
            ds->max_gen = g > ds->max_gen ? g : ds->max_gen;
        } else if (meta__parse_gen(e->d_name, "snapshot", &g)) {
            if (!ds->has_snap || g > ds->snap) {
                ds->snap = g;
            }
            ds->has_snap = true;
            ds->max_gen = g > ds->max_gen ? g : ds->max_gen;
        }
    }
    closedir(d);
    if (ds->n_jgens > 0) {
        qsort(ds->jgens, ds->n_jgens, sizeof(*ds->jgens), meta__cmp_u64);
    }
    return 0;
}

/*
 * Start-up: the newest snapshot, then every journal file from its generation on, in order.
 * Files of older generations are what a crash during the deletes after an install left; they
 * are deleted once everything loaded. On success j->wgen names the (existing) file appends
 * continue in, and j->last_seq the last record replayed.
 */
static int meta__recover(struct meta_journal *j, struct meta_state *s, char *err, size_t err_len)
{
    struct meta__dirscan ds;
    int rc = meta__scan_dir(j->dir, &ds, err, err_len);
    if (rc != 0) {
        return rc;
    }
    struct meta__replay_pos rp = {0};
    if (ds.has_snap) {
        char *path = meta__gen_path(j->dir, "snapshot", ds.snap, "");
        rc = meta__load_snapshot(s, path, &rp.snap_seq, err, err_len);
        free(path);
        if (rc != 0) {
            goto out;
        }
        rp.last = rp.snap_seq;
    }
    /* The files to replay: generations from the snapshot's on, with no gaps. A snapshot of
     * generation G is installed only after journal.G exists, and without a snapshot the first
     * file is journal.1 (or journal.0 of the older layout). */
    size_t from = 0;
    while (ds.has_snap && from < ds.n_jgens && ds.jgens[from] < ds.snap) {
        from++;
    }
    uint64_t want = ds.has_snap ? ds.snap : (from < ds.n_jgens && ds.jgens[from] == 0 ? 0 : 1);
    if (from == ds.n_jgens && (!ds.has_snap || ds.snap == 0)) {
        /* A new directory (or a snapshot of the older layout without a journal). */
        char *path = meta__gen_path(j->dir, "journal", want, "");
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        rc = fd >= 0 ? 0 : -errno;
        if (fd >= 0) {
            close(fd);
        } else {
            meta__errf(err, err_len, "%s: cannot create: %s", path, strerror(-rc));
        }
        free(path);
        if (rc != 0) {
            goto out;
        }
        j->wgen = want;
    }
    for (size_t i = from; i < ds.n_jgens; i++, want++) {
        if (ds.jgens[i] != want) {
            char *missing = meta__gen_path(j->dir, "journal", want, "");
            meta__errf(err, err_len,
                       "%s is missing (journal files of generation %" PRIu64
                       " onward are present); refusing to start",
                       missing, ds.jgens[i]);
            free(missing);
            rc = -EUCLEAN;
            goto out;
        }
        char *path = meta__gen_path(j->dir, "journal", ds.jgens[i], "");
        rc = meta__replay_file(s, path, i + 1 == ds.n_jgens, &rp, NULL, err, err_len);
        free(path);
        if (rc != 0) {
            goto out;
        }
        j->wgen = ds.jgens[i];
    }
    if (from == ds.n_jgens && ds.has_snap && ds.snap > 0) {
        char *missing = meta__gen_path(j->dir, "journal", ds.snap, "");
        meta__errf(err, err_len,
                   "%s is missing (snapshot.%020" PRIu64 " is followed by it); refusing to start",
                   missing, ds.snap);
        free(missing);
        rc = -EUCLEAN;
        goto out;
    }
    j->last_seq = rp.last;
    j->gen = j->wgen > ds.max_gen ? j->wgen : ds.max_gen;
    if (ds.has_snap) {
        meta__remove_older(j, ds.snap, false, false);
    }
    rc = 0;
out:
    free(ds.jgens);
    return rc;
}

static void meta__journal_free(struct meta_journal *j)
{
    if (j->fd >= 0) {
        close(j->fd);
    }
    free(j->dir);
    free(j);
}

int meta_journal_open(struct meta_journal **out, const char *dir, struct meta_state *s,
                      meta_journal_notify_fn notify, void *arg, char *err, size_t err_len)
{
    *out = NULL;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        int e = -errno;
        meta__errf(err, err_len, "%s: cannot create data directory: %s", dir, strerror(errno));
        return e;
    }
    struct meta_journal *j = kp_xcalloc(1, sizeof(*j));
    j->dir = kp_xstrdup(dir);
    j->fd = -1;
    j->notify = notify;
    j->notify_arg = arg;
    const char *crash = getenv("RUNNEL_META_CRASH_AT");
    if (crash != NULL) {
        snprintf(j->crash_at, sizeof(j->crash_at), "%s", crash);
    }
    int rc = meta__recover(j, s, err, err_len);
    char *path = meta__gen_path(dir, "journal", j->wgen, "");
    if (rc == 0) {
        j->fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (j->fd < 0) {
            rc = -errno;
            meta__errf(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        }
    }
    if (rc == 0) {
        /* The cut tail and a new file must be durable before anything builds on them. */
        rc = meta__sync(NULL, j->fd);
        if (rc == 0) {
            rc = meta__fsync_dir(dir);
        }
        if (rc != 0) {
            meta__errf(err, err_len, "%s: fdatasync failed: %s", path, strerror(-rc));
        }
    }
    free(path);
    if (rc != 0) {
        meta__journal_free(j);
        return rc;
    }
    atomic_store(&j->durable_seq, j->last_seq);
    j->pending_last_seq = j->last_seq;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cond, NULL);
    if (pthread_create(&j->thread, NULL, meta__writer, j) != 0) {
        meta__errf(err, err_len, "cannot start the journal writer thread");
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->cond);
        meta__journal_free(j);
        return -EAGAIN;
    }
    *out = j;
    return 0;
}

uint64_t meta_journal_append(struct meta_journal *j, const struct meta_op_buf *op)
{
    if (atomic_load(&j->failed) != 0) {
        return 0;
    }
    uint64_t seq = ++j->last_seq;
    uint8_t head[16];
    uint32_t body = (uint32_t)(8 + op->len);
    for (int i = 0; i < 8; i++) {
        head[8 + i] = (uint8_t)(seq >> (56 - 8 * i));
    }
    uint32_t crc = kp_crc32c(0, head + 8, 8);
    crc = kp_crc32c(crc, op->p, op->len);
    for (int i = 0; i < 4; i++) {
        head[i] = (uint8_t)(body >> (24 - 8 * i));
        head[4 + i] = (uint8_t)(crc >> (24 - 8 * i));
    }
    pthread_mutex_lock(&j->mu);
    meta__put_raw(&j->pending, head, sizeof(head));
    meta__put_raw(&j->pending, op->p, op->len);
    j->pending_last_seq = seq;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->mu);
    j->file_bytes += sizeof(head) + op->len;
    return seq;
}

uint64_t meta_journal_durable_seq(struct meta_journal *j)
{
    return atomic_load(&j->durable_seq);
}

uint64_t meta_journal_last_seq(const struct meta_journal *j)
{
    return j->last_seq;
}

int meta_journal_failed(struct meta_journal *j)
{
    return atomic_load(&j->failed);
}

uint64_t meta_journal_bytes(const struct meta_journal *j)
{
    return j->file_bytes;
}

uint64_t meta_journal_syncs(struct meta_journal *j)
{
    return atomic_load(&j->syncs);
}

void meta_journal_set_snapshot_rate(struct meta_journal *j, uint64_t bytes_per_s)
{
    j->snap_rate = bytes_per_s;
}

uint64_t meta_journal_generation(const struct meta_journal *j)
{
    return j->gen;
}

/*
 * Asks the writer to switch to journal file `gen` after the records appended so far (the ones
 * a snapshot taken now reflects). Returns -EBUSY while an earlier switch is not taken yet.
 */
static int meta__request_rotation(struct meta_journal *j, uint64_t gen, struct meta_snapreq *snap)
{
    pthread_mutex_lock(&j->mu);
    if (j->rot_req) {
        pthread_mutex_unlock(&j->mu);
        return -EBUSY;
    }
    j->rot_req = true;
    j->rot_boundary = j->pending.len;
    j->rot_gen = gen;
    j->rot_snap = snap;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->mu);
    j->gen = gen;
    j->file_bytes = 0;
    return 0;
}

int meta_journal_snapshot(struct meta_journal *j, const struct meta_state *s)
{
    if (atomic_load(&j->failed) != 0) {
        return -EIO;
    }
    if (j->bg_gen != 0) {
        return -EBUSY;
    }
    struct meta_snapreq *sr = kp_xcalloc(1, sizeof(*sr));
    int rc = meta_state_serialize(s, &sr->data, &sr->len);
    if (rc == 0) {
        sr->seq = j->last_seq;
        rc = meta__request_rotation(j, j->gen + 1, sr);
        if (rc == 0) {
            j->install_asked = j->gen;
        }
    }
    if (rc != 0) {
        free(sr->data);
        free(sr);
    }
    return rc;
}

/*
 * Background snapshot thread: rebuilds the state as of sequence `seq` from the files of
 * generations below `gen` exactly as start-up would (the newest snapshot, then the journal files
 * from its generation on), without changing any file. The loop's own state is never read, so
 * nothing is forked or copied under its feet; the cost is this thread's CPU and a second copy
 * of the state while it runs.
 */
static int meta__bg_rebuild(struct meta_journal *j, uint64_t gen, uint64_t seq,
                            struct meta_state *s, char *err, size_t err_len)
{
    /* The records up to `seq` are in files below `gen` once they are durable (the writer
     * switches files right after them). */
    while (atomic_load(&j->durable_seq) < seq) {
        if (atomic_load(&j->failed) != 0 || atomic_load(&j->bg_quit)) {
            meta__errf(err, err_len, "the journal failed or closed before the switch");
            return -ECANCELED;
        }
        meta__sleep_until(meta__mono_now_ns() + 1000000);
    }
    struct meta__replay_pos rp = {0};
    uint64_t first = gen;
    bool has_snap = false;
    while (first > 0 && !has_snap) {
        char *path = meta__gen_path(j->dir, "snapshot", --first, "");
        has_snap = access(path, F_OK) == 0;
        if (has_snap) {
            int rc = meta__load_snapshot(s, path, &rp.snap_seq, err, err_len);
            free(path);
            if (rc != 0) {
                return rc;
            }
            rp.last = rp.snap_seq;
        } else {
            free(path);
        }
    }
    if (!has_snap) {
        char *zero = meta__gen_path(j->dir, "journal", 0, "");
        first = access(zero, F_OK) == 0 ? 0 : 1; /* as start-up: the older layout began at 0 */
        free(zero);
    }
    for (uint64_t g = first; g < gen; g++) {
        char *path = meta__gen_path(j->dir, "journal", g, "");
        int rc = meta__replay_file(s, path, false, &rp, &j->bg_quit, err, err_len);
        free(path);
        if (rc != 0) {
            return rc;
        }
    }
    if (rp.last != seq) {
        meta__errf(err, err_len,
                   "rebuilt the state up to sequence %" PRIu64 ", but the snapshot is of %" PRIu64,
                   rp.last, seq);
        return -EUCLEAN;
    }
    return 0;
}

static void *meta__bg_main(void *arg)
{
    struct meta_journal *j = arg;
    /* The lowest CPU priority (per thread on Linux): never take a core from the loop or the
     * writer. */
    (void)setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
    char err[sizeof(j->bg_err)] = "";
    struct meta_state st;
    meta_state_init(&st, NULL);
    int rc = meta__bg_rebuild(j, j->bg_gen, j->bg_seq, &st, err, sizeof(err));
    uint8_t *data = NULL;
    size_t len = 0;
    if (rc == 0 && meta_state_serialize(&st, &data, &len) != 0) {
        meta__errf(err, sizeof(err), "out of memory serialising the state");
        rc = -ENOMEM;
    }
    meta_state_free(&st);
    if (rc == 0) {
        char *tmp = meta__gen_path(j->dir, "snapshot", j->bg_gen, ".tmp");
        if (strcmp(j->crash_at, "snapshot-partial") == 0) {
            /* Test hook: the process dies while the temporary is half written. */
            (void)meta__write_snapshot_file(NULL, tmp, data, len / 2, j->bg_seq, 0, NULL);
            meta__crash_point(j, "snapshot-partial");
        }
        rc = meta__write_snapshot_file(NULL, tmp, data, len, j->bg_seq, j->bg_rate, &j->bg_quit);
        if (rc != 0) {
            meta__errf(err, sizeof(err), "%s: %s", tmp, strerror(-rc));
        }
        free(tmp);
    }
    meta__free_big(data, len);
    memcpy(j->bg_err, err, sizeof(err));
    atomic_store(&j->bg_result, rc == 0 ? 1 : rc);
    if (j->notify != NULL) {
        j->notify(j->notify_arg);
    }
    return NULL;
}

int meta_journal_snapshot_start(struct meta_journal *j)
{
    if (atomic_load(&j->failed) != 0) {
        return -EIO;
    }
    if (j->bg_gen != 0 || atomic_load(&j->install_seen) < j->install_asked) {
        return -EBUSY; /* one at a time, and only on top of an installed snapshot */
    }
    pthread_mutex_lock(&j->mu);
    bool busy = j->rot_req;
    pthread_mutex_unlock(&j->mu);
    if (busy) {
        return -EBUSY;
    }
    uint64_t gen = j->gen + 1;
    j->bg_gen = gen;
    j->bg_seq = j->last_seq;
    j->bg_rate = j->snap_rate;
    j->bg_err[0] = '\0';
    atomic_store(&j->bg_result, 0);
    atomic_store(&j->bg_quit, false);
    if (pthread_create(&j->bg_thread, NULL, meta__bg_main, j) != 0) {
        j->bg_gen = 0;
        return -EAGAIN;
    }
    /* Only this thread appends, so the records in pending now are exactly the ones the
     * snapshot covers: the switch goes right after them. */
    int rc = meta__request_rotation(j, gen, NULL);
    if (rc != 0) {
        /* Unreachable (checked above, and only this thread requests); never install it. */
        atomic_store(&j->bg_quit, true);
        pthread_join(j->bg_thread, NULL);
        j->bg_gen = 0;
        return rc;
    }
    return 0;
}

bool meta_journal_snapshot_running(struct meta_journal *j)
{
    return j->bg_gen != 0 && atomic_load(&j->bg_result) == 0;
}

int meta_journal_snapshot_poll(struct meta_journal *j, char *err, size_t err_len)
{
    if (j->bg_gen == 0) {
        return 0;
    }
    int r = atomic_load(&j->bg_result);
    if (r == 0) {
        return 0;
    }
    pthread_join(j->bg_thread, NULL);
    uint64_t gen = j->bg_gen;
    j->bg_gen = 0;
    if (r < 0) {
        /* The rotation stays: the next snapshot covers both files. */
        snprintf(err, err_len, "%s", j->bg_err);
        char *tmp = meta__gen_path(j->dir, "snapshot", gen, ".tmp");
        unlink(tmp);
        free(tmp);
        return r;
    }
    j->install_asked = gen;
    pthread_mutex_lock(&j->mu);
    j->install_req = true;
    j->install_gen = gen;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->mu);
    return 1;
}

void meta_journal_close(struct meta_journal *j)
{
    if (j == NULL) {
        return;
    }
    pthread_mutex_lock(&j->mu);
    j->stop = true;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->thread, NULL);
    if (j->bg_gen != 0) {
        /* Not installed: start-up deletes the temporary it may have left. */
        atomic_store(&j->bg_quit, true);
        pthread_join(j->bg_thread, NULL);
        j->bg_gen = 0;
    }
    atomic_store(&j->deleter_quit, true);
    if (j->deleting) {
        pthread_join(j->deleter, NULL);
    }
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cond);
    if (j->rot_snap != NULL) {
        free(j->rot_snap->data);
        free(j->rot_snap);
    }
    meta__buf_free(&j->pending);
    meta__journal_free(j);
}
