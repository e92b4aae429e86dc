/*
 * The journal and snapshots of journal.h: op encoding and replay, the on-disk record format,
 * start-up recovery (snapshot, replay, torn-tail cut, corruption report), and the writer thread
 * that turns many appends into one write + fdatasync (group commit).
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
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "groups_int.h"
#include "internal.h"
#include "runnel/protocol/crc32c.h"
#include "runnel/protocol/mem.h"

#define META_SNAPSHOT_MAGIC "RNLSNAPF"
#define META_RECORD_HEADER 8         /* u32 len + u32 crc */
#define META_RECORD_MAX (256u << 20) /* a body larger than this is corruption */

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

struct meta_snapreq {
    uint8_t *data;   /* serialised state, malloc'd */
    size_t len;      /* bytes */
    uint64_t seq;    /* last sequence the state reflects */
    size_t boundary; /* bytes of `pending` that precede the snapshot */
};

struct meta_journal {
    char *dir;                     /* data directory */
    char *journal_path;            /* dir/journal */
    char *snapshot_path;           /* dir/snapshot */
    int fd;                        /* journal file, positioned at its end */
    uint64_t last_seq;             /* last appended sequence (loop thread) */
    uint64_t file_bytes;           /* bytes written since the last snapshot (approx.) */
    pthread_t thread;              /* the writer */
    pthread_mutex_t mu;            /* guards the fields below */
    pthread_cond_t cond;           /* wakes the writer */
    struct meta__buf pending;      /* records not yet handed to the writer */
    uint64_t pending_last_seq;     /* seq of the last record in pending */
    struct meta_snapreq *snap;     /* a snapshot to write, or NULL */
    uint64_t wfile_off;            /* writer: bytes in the journal file */
    bool mark_req;                 /* a forked snapshot marked its boundary in pending */
    size_t mark_boundary;          /* bytes of pending before that boundary */
    uint64_t mark_file_off;        /* writer: file offset where records after it begin */
    bool install_req;              /* the forked snapshot is written: install it */
    char *install_tmp;             /* its temporary file name */
    uint64_t fork_seq;             /* sequence the forked snapshot covers */
    bool stop;                     /* writer should exit once pending is written */
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
        return -EIO;
    }
    if (j != NULL) {
        atomic_fetch_add(&j->syncs, 1);
    }
    return fdatasync(fd) == 0 ? 0 : -errno;
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

static int meta__load_snapshot(struct meta_journal *j, struct meta_state *s, uint64_t *seq,
                               char *err, size_t err_len)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = meta__read_file(j->snapshot_path, &buf, &len);
    if (rc == -ENOENT) {
        *seq = 0;
        return 0;
    }
    if (rc != 0) {
        meta__errf(err, err_len, "%s: cannot read: %s", j->snapshot_path, strerror(-rc));
        return rc;
    }
    rc = -EINVAL;
    if (len < 24 || memcmp(buf, META_SNAPSHOT_MAGIC, 8) != 0) {
        meta__errf(err, err_len, "%s: byte 0: not a Runnel metadata snapshot", j->snapshot_path);
        goto out;
    }
    struct kp_reader r;
    kp_reader_init(&r, buf + 8, len - 8);
    *seq = (uint64_t)kp_read_i64(&r);
    uint32_t body = kp_read_u32(&r);
    uint32_t crc = kp_read_u32(&r);
    if (body != len - 24 || kp_crc32c(0, buf + 24, body) != crc) {
        meta__errf(err, err_len, "%s: byte 24: snapshot body length or CRC mismatch (corrupted)",
                   j->snapshot_path);
        goto out;
    }
    const char *why = NULL;
    if (meta_state_deserialize(s, buf + 24, body, &why) != 0) {
        meta__errf(err, err_len, "%s: byte 24: bad snapshot contents: %s", j->snapshot_path, why);
        goto out;
    }
    rc = 0;
out:
    free(buf);
    return rc;
}

static int meta__replay(struct meta_journal *j, struct meta_state *s, uint64_t snap_seq, char *err,
                        size_t err_len)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = meta__read_file(j->journal_path, &buf, &len);
    if (rc == -ENOENT) {
        j->last_seq = snap_seq;
        return 0;
    }
    if (rc != 0) {
        meta__errf(err, err_len, "%s: cannot read: %s", j->journal_path, strerror(-rc));
        return rc;
    }
    size_t pos = 0;
    uint64_t expect = 0; /* 0: not yet known */
    uint64_t last = snap_seq;
    size_t cut = len;
    while (pos < len) {
        size_t left = len - pos;
        bool torn = false;
        uint32_t body = 0;
        if (left < META_RECORD_HEADER) {
            torn = true;
        } else {
            body = (uint32_t)buf[pos] << 24 | (uint32_t)buf[pos + 1] << 16 |
                   (uint32_t)buf[pos + 2] << 8 | buf[pos + 3];
            uint32_t crc = (uint32_t)buf[pos + 4] << 24 | (uint32_t)buf[pos + 5] << 16 |
                           (uint32_t)buf[pos + 6] << 8 | buf[pos + 7];
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
                               j->journal_path, pos, left);
                    rc = -EUCLEAN;
                    goto out;
                }
            }
        }
        if (torn) {
            cut = pos;
            break;
        }
        const uint8_t *b = buf + pos + META_RECORD_HEADER;
        uint64_t seq = 0;
        for (int i = 0; i < 8; i++) {
            seq = seq << 8 | b[i];
        }
        if (expect != 0 && seq != expect) {
            meta__errf(err, err_len,
                       "%s: byte %zu: sequence %" PRIu64 " where %" PRIu64 " was expected",
                       j->journal_path, pos, seq, expect);
            rc = -EUCLEAN;
            goto out;
        }
        if (seq > snap_seq) {
            if (seq != last + 1) {
                meta__errf(err, err_len,
                           "%s: byte %zu: sequence %" PRIu64 " does not follow %" PRIu64
                           " (missing records)",
                           j->journal_path, pos, seq, last);
                rc = -EUCLEAN;
                goto out;
            }
            const char *why = NULL;
            if (meta_op_apply(s, b + 8, body - 8, &why) != 0) {
                meta__errf(err, err_len, "%s: byte %zu: undecodable op: %s", j->journal_path, pos,
                           why);
                rc = -EUCLEAN;
                goto out;
            }
            last = seq;
        }
        expect = seq + 1;
        pos += META_RECORD_HEADER + body;
    }
    if (cut < len) {
        fprintf(stderr, "runnel metadata: %s: cutting a torn tail of %zu bytes at byte %zu\n",
                j->journal_path, len - cut, cut);
        if (truncate(j->journal_path, (off_t)cut) != 0) {
            rc = -errno;
            meta__errf(err, err_len, "%s: cannot cut torn tail: %s", j->journal_path,
                       strerror(errno));
            goto out;
        }
    }
    j->last_seq = last;
    j->file_bytes = cut;
    rc = 0;
out:
    free(buf);
    return rc;
}

static int meta__write_snapshot(struct meta_journal *j, struct meta_snapreq *sr)
{
    char *tmp = meta__path(j->dir, "snapshot.tmp");
    uint8_t head[24];
    memcpy(head, META_SNAPSHOT_MAGIC, 8);
    for (int i = 0; i < 8; i++) {
        head[8 + i] = (uint8_t)(sr->seq >> (56 - 8 * i));
    }
    uint32_t len = (uint32_t)sr->len;
    uint32_t crc = kp_crc32c(0, sr->data, sr->len);
    for (int i = 0; i < 4; i++) {
        head[16 + i] = (uint8_t)(len >> (24 - 8 * i));
        head[20 + i] = (uint8_t)(crc >> (24 - 8 * i));
    }
    int rc;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    rc = meta__write_all(fd, head, sizeof(head));
    if (rc == 0) {
        rc = meta__write_all(fd, sr->data, sr->len);
    }
    if (rc == 0) {
        rc = meta__sync(j, fd);
    }
    close(fd);
    if (rc == 0 && rename(tmp, j->snapshot_path) != 0) {
        rc = -errno;
    }
    if (rc == 0) {
        rc = meta__fsync_dir(j->dir);
    }
    /* The snapshot covers every record written so far: drop them from the journal. */
    if (rc == 0 && ftruncate(j->fd, 0) != 0) {
        rc = -errno;
    }
    if (rc == 0 && lseek(j->fd, 0, SEEK_SET) < 0) {
        rc = -errno;
    }
    if (rc == 0) {
        rc = meta__sync(j, j->fd);
    }
out:
    free(tmp);
    return rc;
}

/*
 * Installs a snapshot written by a forked child: renames it into place, then rewrites the
 * journal keeping only the records after the snapshot's boundary. Runs on the writer thread
 * between group commits. A crash at any point leaves a state that start-up recovers: before the
 * rename the old snapshot and full journal; after it, records the snapshot covers are skipped.
 */
static int meta__install_forked(struct meta_journal *j, const char *tmp)
{
    int rc = 0;
    if (rename(tmp, j->snapshot_path) != 0) {
        return -errno;
    }
    rc = meta__fsync_dir(j->dir);
    if (rc != 0) {
        return rc;
    }
    uint64_t from = j->mark_file_off;
    uint64_t len = j->wfile_off > from ? j->wfile_off - from : 0;
    char *jtmp = meta__path(j->dir, "journal.tmp");
    uint8_t *buf = kp_xmalloc(len ? len : 1);
    int in = open(j->journal_path, O_RDONLY | O_CLOEXEC);
    int out = -1;
    if (in < 0 || pread(in, buf, len, (off_t)from) != (ssize_t)len) {
        rc = in < 0 ? -errno : -EIO;
        goto done;
    }
    out = open(jtmp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (out < 0) {
        rc = -errno;
        goto done;
    }
    rc = meta__write_all(out, buf, len);
    if (rc == 0) {
        rc = meta__sync(j, out);
    }
    if (rc == 0 && rename(jtmp, j->journal_path) != 0) {
        rc = -errno;
    }
    if (rc == 0) {
        rc = meta__fsync_dir(j->dir);
    }
    if (rc == 0) {
        close(j->fd);
        j->fd = out;
        out = -1;
        j->wfile_off = len;
        j->mark_file_off = 0;
    }
done:
    if (in >= 0) {
        close(in);
    }
    if (out >= 0) {
        close(out);
    }
    free(buf);
    free(jtmp);
    return rc;
}

static void *meta__writer(void *arg)
{
    struct meta_journal *j = arg;
    struct meta__buf work = {0};
    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (!j->stop && j->pending.len == 0 && j->snap == NULL && !j->install_req &&
               !j->mark_req) {
            pthread_cond_wait(&j->cond, &j->mu);
        }
        if (j->pending.len == 0 && j->snap == NULL && !j->install_req && !j->mark_req) {
            break; /* stop requested and nothing left */
        }
        struct meta__buf tmp = work;
        work = j->pending;
        j->pending = tmp;
        j->pending.len = 0;
        uint64_t seq = j->pending_last_seq;
        struct meta_snapreq *snap = j->snap;
        j->snap = NULL;
        bool mark = j->mark_req;
        size_t mark_boundary = j->mark_boundary;
        j->mark_req = false;
        char *install = j->install_req ? j->install_tmp : NULL;
        j->install_req = false;
        j->install_tmp = NULL;
        pthread_mutex_unlock(&j->mu);
        if (mark) {
            j->mark_file_off = j->wfile_off + mark_boundary;
        }

        int rc = atomic_load(&j->failed);
        if (rc == 0) {
            size_t first = snap != NULL ? snap->boundary : work.len;
            rc = meta__write_all(j->fd, work.p, first);
            if (rc == 0 && snap != NULL) {
                rc = meta__sync(j, j->fd);
                if (rc == 0) {
                    rc = meta__write_snapshot(j, snap);
                }
            }
            if (rc == 0 && work.len > first) {
                rc = meta__write_all(j->fd, work.p + first, work.len - first);
            }
            if (rc == 0 && (work.len > first || snap == NULL)) {
                rc = meta__sync(j, j->fd);
            }
            if (rc == 0) {
                /* After an in-thread snapshot the file restarted at 0 with the later records. */
                j->wfile_off = snap != NULL ? work.len - first : j->wfile_off + work.len;
                if (snap != NULL) {
                    j->mark_file_off = 0;
                }
            }
            if (rc != 0) {
                atomic_store(&j->failed, rc);
            } else {
                atomic_store(&j->durable_seq, seq);
            }
            if (rc == 0 && install != NULL) {
                rc = meta__install_forked(j, install);
                if (rc != 0) {
                    atomic_store(&j->failed, rc);
                }
            }
        }
        free(install);
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

int meta_journal_open(struct meta_journal **out, const char *dir, struct meta_state *s,
                      meta_journal_notify_fn notify, void *arg, char *err, size_t err_len)
{
    *out = NULL;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        int e = -errno;
        meta__errf(err, err_len, "%s: cannot create data directory: %s", dir, strerror(errno));
        return e;
    }
    /* Snapshots a killed process's child never finished are garbage. */
    DIR *d = opendir(dir);
    for (struct dirent *e = d != NULL ? readdir(d) : NULL; e != NULL; e = readdir(d)) {
        if (strncmp(e->d_name, "snapshot.tmp", 12) == 0 || strcmp(e->d_name, "journal.tmp") == 0) {
            char *path = meta__path(dir, e->d_name);
            unlink(path);
            free(path);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    struct meta_journal *j = kp_xcalloc(1, sizeof(*j));
    j->dir = kp_xstrdup(dir);
    j->journal_path = meta__path(dir, "journal");
    j->snapshot_path = meta__path(dir, "snapshot");
    j->fd = -1;
    j->notify = notify;
    j->notify_arg = arg;
    uint64_t snap_seq = 0;
    int rc = meta__load_snapshot(j, s, &snap_seq, err, err_len);
    if (rc == 0) {
        rc = meta__replay(j, s, snap_seq, err, err_len);
    }
    if (rc == 0) {
        j->fd = open(j->journal_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (j->fd < 0) {
            rc = -errno;
            meta__errf(err, err_len, "%s: cannot open: %s", j->journal_path, strerror(errno));
        }
    }
    if (rc == 0) {
        /* The cut tail and a new file must be durable before anything builds on them. */
        rc = meta__sync(NULL, j->fd);
        if (rc == 0) {
            rc = meta__fsync_dir(dir);
        }
        if (rc != 0) {
            meta__errf(err, err_len, "%s: fdatasync failed: %s", j->journal_path, strerror(-rc));
        }
    }
    if (rc != 0) {
        if (j->fd >= 0) {
            close(j->fd);
        }
        free(j->dir);
        free(j->journal_path);
        free(j->snapshot_path);
        free(j);
        return rc;
    }
    atomic_store(&j->durable_seq, j->last_seq);
    j->pending_last_seq = j->last_seq;
    j->wfile_off = j->file_bytes;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cond, NULL);
    if (pthread_create(&j->thread, NULL, meta__writer, j) != 0) {
        meta__errf(err, err_len, "cannot start the journal writer thread");
        close(j->fd);
        free(j->dir);
        free(j->journal_path);
        free(j->snapshot_path);
        free(j);
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

int meta_journal_snapshot(struct meta_journal *j, const struct meta_state *s)
{
    struct meta_snapreq *sr = kp_xcalloc(1, sizeof(*sr));
    int rc = meta_state_serialize(s, &sr->data, &sr->len);
    if (rc != 0) {
        free(sr);
        return rc;
    }
    sr->seq = j->last_seq;
    pthread_mutex_lock(&j->mu);
    if (j->snap != NULL) {
        /* One is still queued: this newer one replaces it (it covers more). Its boundary moves
         * to the current end, which is where the old snapshot's records end too. */
        free(j->snap->data);
        free(j->snap);
    }
    sr->boundary = j->pending.len;
    j->snap = sr;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->mu);
    j->file_bytes = 0;
    return 0;
}

static int meta__child_write_snapshot(struct meta_journal *j, const struct meta_state *s,
                                      const char *tmp)
{
    struct meta_snapreq sr = {0};
    if (meta_state_serialize(s, &sr.data, &sr.len) != 0) {
        return -ENOMEM;
    }
    sr.seq = j->fork_seq;
    uint8_t head[24];
    memcpy(head, META_SNAPSHOT_MAGIC, 8);
    for (int i = 0; i < 8; i++) {
        head[8 + i] = (uint8_t)(sr.seq >> (56 - 8 * i));
    }
    uint32_t len = (uint32_t)sr.len;
    uint32_t crc = kp_crc32c(0, sr.data, sr.len);
    for (int i = 0; i < 4; i++) {
        head[16 + i] = (uint8_t)(len >> (24 - 8 * i));
        head[20 + i] = (uint8_t)(crc >> (24 - 8 * i));
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -errno;
    }
    int rc = meta__write_all(fd, head, sizeof(head));
    if (rc == 0) {
        rc = meta__write_all(fd, sr.data, sr.len);
    }
    if (rc == 0) {
        rc = meta__sync(NULL, fd);
    }
    close(fd);
    return rc;
}

pid_t meta_journal_snapshot_fork(struct meta_journal *j, const struct meta_state *s)
{
    if (atomic_load(&j->failed) != 0) {
        return -EIO;
    }
    char name[64];
    snprintf(name, sizeof(name), "snapshot.tmp.%d", (int)getpid());
    char *tmp = meta__path(j->dir, name);
    j->fork_seq = j->last_seq;
    pthread_mutex_lock(&j->mu);
    j->mark_req = true;
    j->mark_boundary = j->pending.len;
    pid_t pid = fork();
    if (pid == 0) {
        /* Child: a copy-on-write image of the state. Touch nothing shared; just write. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (close_range(3, ~0U, 0) != 0) {
            for (int fd = 3; fd < 65536; fd++) {
                close(fd);
            }
        }
        _exit(meta__child_write_snapshot(j, s, tmp) == 0 ? 0 : 1);
    }
    if (pid < 0) {
        j->mark_req = false;
    } else {
        pthread_cond_signal(&j->cond);
    }
    pthread_mutex_unlock(&j->mu);
    free(tmp);
    if (pid < 0) {
        return -errno;
    }
    j->file_bytes = 0;
    return pid;
}

void meta_journal_snapshot_forked_done(struct meta_journal *j, pid_t pid, bool ok)
{
    char name[64];
    snprintf(name, sizeof(name), "snapshot.tmp.%d", (int)getpid());
    char *tmp = meta__path(j->dir, name);
    (void)pid;
    if (!ok) {
        unlink(tmp);
        free(tmp);
        return;
    }
    pthread_mutex_lock(&j->mu);
    free(j->install_tmp);
    j->install_tmp = tmp;
    j->install_req = true;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->mu);
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
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cond);
    if (j->snap != NULL) {
        free(j->snap->data);
        free(j->snap);
    }
    meta__buf_free(&j->pending);
    free(j->install_tmp);
    close(j->fd);
    free(j->dir);
    free(j->journal_path);
    free(j->snapshot_path);
    free(j);
}
