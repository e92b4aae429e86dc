/*
 * file:///path — objects as files under a root directory, the embedded default store.
 *
 * Durability: a PUT writes a temporary file in the target's directory, fsyncs it, renames it
 * into place (or link()s it for create-only PUTs, which fails atomically if the key exists), and
 * fsyncs the directory, so a key either has its old bytes or all its new bytes after a crash.
 * Keys map to paths (their '/' separated segments become directories). Temporary files start
 * with ".rnltmp." and are never listed; keys with such a segment are refused.
 *
 * All file I/O runs on libuv's thread pool; the loop thread only schedules and delivers.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_int.h"

#include "runnel/protocol/mem.h"

#define STORE__TMP_PREFIX ".rnltmp."

struct store__fs {
    char *root;             /* absolute directory, no trailing '/' */
    uint64_t max_get_bytes; /* largest GET body */
    bool nosync;            /* skip fsync (tests and benchmarks only) */
    uint64_t seq;           /* temp file counter */
};

struct store__fs_work {
    uv_work_t work;       /* thread pool request */
    struct store__op *op; /* the operation */
    struct store__fs *fs; /* the backend */
    uint64_t seq;         /* temp file number */
};

static int store__fs_errno(struct store__result *r, int e, const char *what, const char *path)
{
    int cls;
    switch (e) {
    case ENOENT:
    case ENOTDIR:
    case EISDIR:
        cls = -ENOENT;
        break;
    case EACCES:
    case EPERM:
    case EROFS:
        cls = -EACCES;
        break;
    case EINTR:
    case EAGAIN:
    case EMFILE:
    case ENFILE:
    case ENOMEM:
        cls = -EAGAIN;
        break;
    default:
        cls = -EIO;
        break;
    }
    return store__fail(r, cls, "%s %s: %s", what, path, strerror(e));
}

static char *store__fs_path(struct store__fs *fs, const char *key)
{
    size_t n = strlen(fs->root) + strlen(key) + 2;
    char *p = kp_xmalloc(n);
    snprintf(p, n, "%s/%s", fs->root, key);
    return p;
}

static int store__fs_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* mkdir -p of path's parent; fsyncs the parent of every directory it creates. */
static int store__fs_mkdirs(struct store__fs *fs, char *path)
{
    size_t rootlen = strlen(fs->root);
    for (char *p = path + rootlen + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        int rc = mkdir(path, 0755);
        int e = errno;
        if (rc == 0 && !fs->nosync) {
            char *slash = strrchr(path, '/');
            *slash = '\0';
            store__fs_fsync_dir(path);
            *slash = '/';
        }
        *p = '/';
        if (rc < 0 && e != EEXIST) {
            return -e;
        }
    }
    return 0;
}

static void store__fs_put(struct store__fs_work *w)
{
    struct store__op *op = w->op;
    struct store__fs *fs = w->fs;
    char *path = store__fs_path(fs, op->key);
    char *slash = strrchr(path, '/');
    size_t dirlen = (size_t)(slash - path);
    size_t tn = strlen(path) + 64;
    char *tmp = kp_xmalloc(tn);
    snprintf(tmp, tn, "%.*s/" STORE__TMP_PREFIX "%ld.%llu", (int)dirlen, path, (long)getpid(),
             (unsigned long long)w->seq);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == ENOENT) {
        int rc = store__fs_mkdirs(fs, path);
        if (rc < 0) {
            store__fs_errno(&op->res, -rc, "mkdir for", path);
            goto out;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    }
    if (fd < 0) {
        store__fs_errno(&op->res, errno, "create", tmp);
        goto out;
    }
    size_t done = 0;
    while (done < op->len) {
        ssize_t n = write(fd, op->buf + done, op->len - done);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            store__fs_errno(&op->res, errno, "write", tmp);
            goto out_unlink;
        }
        done += (size_t)n;
    }
    if (!fs->nosync && fdatasync(fd) < 0) {
        store__fs_errno(&op->res, errno, "fsync", tmp);
        goto out_unlink;
    }
    if (close(fd) < 0) {
        fd = -1;
        store__fs_errno(&op->res, errno, "close", tmp);
        goto out_unlink;
    }
    fd = -1;
    if (op->flags & STORE_IF_NONE_MATCH) {
        if (link(tmp, path) < 0) {
            if (errno == EEXIST) {
                store__fail(&op->res, -EEXIST, "key %s already exists", op->key);
            } else {
                store__fs_errno(&op->res, errno, "link", path);
            }
            goto out_unlink;
        }
        unlink(tmp);
    } else if (rename(tmp, path) < 0) {
        store__fs_errno(&op->res, errno, "rename to", path);
        goto out_unlink;
    }
    *slash = '\0';
    if (!fs->nosync && store__fs_fsync_dir(path) < 0) {
        store__fs_errno(&op->res, errno, "fsync directory", path);
    }
    op->res.size = op->len;
    goto out;
out_unlink:
    if (fd >= 0) {
        close(fd);
    }
    unlink(tmp);
out:
    free(tmp);
    free(path);
}

static void store__fs_get(struct store__fs_work *w, bool head)
{
    struct store__op *op = w->op;
    char *path = store__fs_path(w->fs, op->key);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        store__fs_errno(&op->res, errno, "open", path);
        if (op->res.err == -ENOENT) {
            store__fail(&op->res, -ENOENT, "key %s not found", op->key);
        }
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        store__fs_errno(&op->res, errno, "stat", path);
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        store__fail(&op->res, -ENOENT, "key %s not found (not a regular file)", op->key);
        goto out_close;
    }
    uint64_t size = (uint64_t)st.st_size;
    op->res.size = size;
    snprintf(op->res.etag, sizeof(op->res.etag), "%llx-%llx", (unsigned long long)size,
             (unsigned long long)st.st_mtim.tv_sec * 1000000000ull +
                 (unsigned long long)st.st_mtim.tv_nsec);
    if (head) {
        goto out_close;
    }
    uint64_t off = op->off;
    uint64_t len = op->rlen;
    if (op->tail) {
        off = len >= size ? 0 : size - len;
        len = size - off;
    } else if (off > 0 && off >= size) {
        store__fail(&op->res, -ERANGE, "range starts at %llu beyond the end (%llu bytes) of %s",
                    (unsigned long long)off, (unsigned long long)size, op->key);
        goto out_close;
    } else if (len == 0 || len > size - off) {
        len = size - off;
    }
    if (len > w->fs->max_get_bytes) {
        store__fail(&op->res, -EFBIG, "GET of %llu bytes exceeds the cap of %llu bytes",
                    (unsigned long long)len, (unsigned long long)w->fs->max_get_bytes);
        goto out_close;
    }
    if (op->res.body == NULL) {
        op->res.body = kp_xmalloc(len == 0 ? 1 : (size_t)len);
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, op->res.body + done, (size_t)len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            store__fs_errno(&op->res, errno, "read", path);
            goto out_close;
        }
        if (n == 0) {
            break; /* the file shrank: return what is there */
        }
        done += (size_t)n;
    }
    op->res.body_len = done;
out_close:
    close(fd);
out:
    if (op->res.err != 0) {
        free(op->res.body);
        op->res.body = NULL;
        op->res.body_len = 0;
    }
    free(path);
}

static int store__fs_delete_key(struct store__fs *fs, struct store__result *r, const char *key)
{
    char *path = store__fs_path(fs, key);
    int rc = 0;
    if (unlink(path) < 0 && errno != ENOENT && errno != ENOTDIR) {
        rc = store__fs_errno(r, errno, "unlink", path);
    }
    free(path);
    return rc;
}

static int store__fs_keycmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

struct store__fs_keys {
    char **v;   /* keys (malloc) */
    size_t n;   /* used */
    size_t cap; /* allocated */
};

/* Collects regular files under root/rel whose key starts with prefix; depth-bounded. */
static int store__fs_walk(struct store__fs *fs, const char *rel, const char *prefix,
                          struct store__fs_keys *out, int depth)
{
    if (depth > 64) {
        return 0;
    }
    size_t n = strlen(fs->root) + strlen(rel) + 2;
    char *dir = kp_xmalloc(n);
    snprintf(dir, n, "%s%s%s", fs->root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(dir);
    free(dir);
    if (d == NULL) {
        return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
    }
    size_t plen = strlen(prefix);
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            strncmp(de->d_name, STORE__TMP_PREFIX, strlen(STORE__TMP_PREFIX)) == 0) {
            continue;
        }
        size_t kn = strlen(rel) + strlen(de->d_name) + 2;
        char *key = kp_xmalloc(kn);
        snprintf(key, kn, "%s%s%s", rel, rel[0] ? "/" : "", de->d_name);
        size_t klen = strlen(key);
        /* Descend only where keys may still match the prefix. */
        bool may_match = strncmp(key, prefix, klen < plen ? klen : plen) == 0;
        if (!may_match) {
            free(key);
            continue;
        }
        unsigned char type = de->d_type;
        if (type == DT_UNKNOWN) {
            struct stat st;
            char *full = store__fs_path(fs, key);
            type = lstat(full, &st) == 0 ? (S_ISDIR(st.st_mode) ? DT_DIR : DT_REG) : DT_UNKNOWN;
            free(full);
        }
        if (type == DT_DIR) {
            rc = store__fs_walk(fs, key, prefix, out, depth + 1);
            free(key);
            if (rc < 0) {
                break;
            }
        } else if (type == DT_REG && klen >= plen) {
            if (out->n == out->cap) {
                out->cap = out->cap == 0 ? 64 : out->cap * 2;
                out->v = kp_xrealloc(out->v, out->cap * sizeof(char *));
            }
            out->v[out->n++] = key;
        } else {
            free(key);
        }
    }
    closedir(d);
    return rc;
}

static void store__fs_list(struct store__fs_work *w)
{
    struct store__op *op = w->op;
    struct store__fs_keys keys = {0};
    const char *prefix = op->prefix != NULL ? op->prefix : "";
    int rc = store__fs_walk(w->fs, "", prefix, &keys, 0);
    if (rc < 0) {
        store__fs_errno(&op->res, -rc, "list", w->fs->root);
        goto out;
    }
    if (keys.n > 1) {
        qsort(keys.v, keys.n, sizeof(char *), store__fs_keycmp);
    }
    for (size_t i = 0; i < keys.n; i++) {
        if (op->token != NULL && strcmp(keys.v[i], op->token) <= 0) {
            continue;
        }
        if (op->res.nentries == op->max_keys) {
            op->res.next_token = kp_xstrdup(op->res.entries[op->res.nentries - 1].key);
            break;
        }
        struct stat st;
        char *full = store__fs_path(w->fs, keys.v[i]);
        uint64_t size = stat(full, &st) == 0 ? (uint64_t)st.st_size : 0;
        free(full);
        store__result_add_entry(&op->res, keys.v[i], strlen(keys.v[i]), size, NULL);
    }
out:
    for (size_t i = 0; i < keys.n; i++) {
        free(keys.v[i]);
    }
    free(keys.v);
}

static void store__fs_work_cb(uv_work_t *req)
{
    struct store__fs_work *w = req->data;
    struct store__op *op = w->op;
    switch (op->kind) {
    case STORE_PUT:
        store__fs_put(w);
        break;
    case STORE_GET:
        store__fs_get(w, false);
        break;
    case STORE_HEAD:
        store__fs_get(w, true);
        break;
    case STORE_DELETE:
        store__fs_delete_key(w->fs, &op->res, op->key);
        break;
    case STORE_DELETE_MANY:
        for (size_t i = 0; i < op->nkeys; i++) {
            struct store__result r = {0};
            if (store__fs_delete_key(w->fs, &r, op->keys[i]) < 0) {
                if (op->res.nfailed++ == 0) {
                    store__fail(&op->res, r.err, "%s", r.msg);
                }
            }
        }
        break;
    case STORE_LIST:
        store__fs_list(w);
        break;
    }
}

static void store__fs_after_cb(uv_work_t *req, int status)
{
    struct store__fs_work *w = req->data;
    struct store__op *op = w->op;
    free(w);
    if (status == UV_ECANCELED) {
        store__fail(&op->res, -ECANCELED, "cancelled before it started");
    }
    store__attempt_done(op);
}

static bool store__fs_key_ok(const char *key)
{
    for (const char *p = key; p != NULL; p = strchr(p, '/')) {
        if (*p == '/') {
            p++;
        }
        if (strncmp(p, STORE__TMP_PREFIX, strlen(STORE__TMP_PREFIX)) == 0) {
            return false;
        }
    }
    return true;
}

static void store__fs_start(struct store *s, struct store__op *op)
{
    struct store__fs *fs = s->impl;
    if (op->key != NULL && !store__fs_key_ok(op->key)) {
        store__fail(&op->res, -EINVAL, "key %s uses the reserved prefix " STORE__TMP_PREFIX,
                    op->key);
        store__attempt_done(op);
        return;
    }
    if (op->kind == STORE_GET && !op->tail && op->rlen > 0 && op->rlen <= fs->max_get_bytes) {
        /* Ranged reads know their size: allocate on the loop thread, whose heap keeps its pages,
         * instead of a worker's arena, which hands back fresh (page-faulting) memory. */
        op->res.body = kp_xmalloc((size_t)op->rlen);
    }
    struct store__fs_work *w = kp_xcalloc(1, sizeof(*w));
    w->op = op;
    w->fs = fs;
    w->seq = ++fs->seq;
    w->work.data = w;
    op->bctx = w;
    int rc = uv_queue_work(s->loop, &w->work, store__fs_work_cb, store__fs_after_cb);
    if (rc < 0) {
        free(w);
        free(op->res.body);
        op->res.body = NULL;
        store__fail(&op->res, -EIO, "uv_queue_work: %s", uv_strerror(rc));
        store__attempt_done(op);
    }
}

static bool store__fs_abort(struct store *s, struct store__op *op)
{
    struct store__fs_work *w = op->bctx;
    if (w != NULL) {
        uv_cancel((uv_req_t *)&w->work); /* after_cb still runs, with UV_ECANCELED if it worked */
    }
    return false;
}

static void store__fs_close(struct store *s)
{
    struct store__fs *fs = s->impl;
    free(fs->root);
    free(fs);
    store__backend_closed(s);
}

static const struct store__ops store__fs_ops = {
    .name = "file",
    .start = store__fs_start,
    .abort = store__fs_abort,
    .close = store__fs_close,
};

int store__fs_open(struct store *s, struct store__url *u, char *err, size_t errlen)
{
    const char *path = u->rest;
    if (strncmp(path, "localhost/", 10) == 0) {
        path += 9;
    }
    if (path[0] != '/') {
        snprintf(err, errlen, "file:// store needs an absolute path (file:///dir), got '%s'",
                 u->rest);
        return -EINVAL;
    }
    struct store__fs *fs = kp_xcalloc(1, sizeof(*fs));
    fs->max_get_bytes = 1ull << 30;
    int rc = store__param_u64(u, "max_get_bytes", &fs->max_get_bytes, err, errlen);
    if (rc == 0) {
        rc = store__param_bool(u, "nosync", &fs->nosync, err, errlen);
    }
    if (rc == 0) {
        rc = store__params_check(u, err, errlen);
    }
    if (rc < 0) {
        free(fs);
        return rc;
    }
    fs->root = kp_xstrdup(path);
    size_t n = strlen(fs->root);
    while (n > 1 && fs->root[n - 1] == '/') {
        fs->root[--n] = '\0';
    }
    if (mkdir(fs->root, 0755) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create store directory %s: %s", fs->root, strerror(errno));
        free(fs->root);
        free(fs);
        return -EIO;
    }
    struct stat st;
    if (stat(fs->root, &st) < 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "store path %s is not a directory", fs->root);
        free(fs->root);
        free(fs);
        return -EINVAL;
    }
    s->ops = &store__fs_ops;
    s->impl = fs;
    return 0;
}
