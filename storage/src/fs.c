/*
 * file:///path — objects as files under a root directory, the embedded default store.
 *
 * Durability: a PUT writes a temporary file in the target's directory, fdatasyncs it, renames it
 * into place, and fsyncs the directory, so a key either has its old bytes or all its new bytes
 * after a crash. A create-only PUT writes an unnamed O_TMPFILE instead and linkat()s it in once
 * synced (fails atomically if the key exists; no name to create and remove), falling back to a
 * named temporary file and link() where O_TMPFILE or /proc is missing.
 * Keys map to paths (their '/' separated segments become directories). Temporary files start
 * with ".rnltmp." and are never listed; keys with such a segment are refused.
 *
 * Reads: objects are written once and then only read or deleted, so the backend keeps a small
 * LRU cache of open descriptors (`fd_cache`, default 64). A key not in it is opened on the loop
 * thread with openat2(RESOLVE_CACHED), which succeeds only when every path component is in the
 * kernel's lookup cache and fails with EAGAIN where it would have to read the disk
 * (`cached_open`, default true); otherwise a read on the thread pool opens it. A GET
 * or HEAD of a cached key is answered on the loop thread when it can be without waiting for the
 * disk: fstat() of the open descriptor (an st_nlink of 0 means the key was deleted or replaced,
 * by us or anyone, and the entry is dropped), then preadv2(RWF_NOWAIT), which copies from the
 * page cache or fails with EAGAIN instead of starting disk I/O. Whatever is not in the page cache
 * is read by a thread pool worker from a dup() of the same descriptor. Bodies above `inline_max`
 * (default 8 MiB, one object; a copy of ~0.5 ms here) always go to the pool so that larger
 * copies do not hold the loop. A GET of unknown size (whole object, tail) of an uncached key
 * is opened and stat'ed on the pool and then read like a cached one, so its body, too, comes
 * from the loop thread's heap. Everything else (writes, directory work, opening files, closing
 * descriptors of deleted files, whose last close frees their blocks) runs on the thread pool.
 * Results are delivered by store.c, never from inside the caller's store_xxx() call.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "store_int.h"

#include "runnel/protocol/mem.h"

#define STORE__TMP_PREFIX ".rnltmp."

/* One open, read-only descriptor of an object, owned by the loop thread. */
struct store__fs_fd {
    char *key;     /* the key (malloc); NULL for a free slot */
    uint64_t hash; /* FNV-1a of key */
    int fd;        /* O_RDONLY descriptor */
    uint64_t used; /* LRU clock value of the last use */
};

struct store__fs {
    char *root;                /* absolute directory, no trailing '/' */
    uint64_t max_get_bytes;    /* largest GET body */
    bool nosync;               /* skip fsync (tests and benchmarks only) */
    uint64_t seq;              /* temp file counter */
    uint64_t inline_max;       /* largest GET body read on the loop thread */
    bool nowait_unsupported;   /* the kernel refused RWF_NOWAIT: no more inline reads */
    bool cached_open;          /* open on the loop with RESOLVE_CACHED (cached_open=) */
    struct store__fs_fd *fds;  /* descriptor cache (nfds slots) */
    size_t nfds;               /* slots; 0 disables the cache and inline reads */
    uint64_t clock;            /* LRU clock */
    struct store__fs_stats st; /* counters for tests and benchmarks */
    bool tmpfile_ok;           /* O_TMPFILE + linkat via /proc/self/fd usable (tmpfile=) */
    bool tmpfile_unsupported;  /* the file system refused O_TMPFILE (atomic: workers set it) */
};

struct store__fs_work {
    uv_work_t work;       /* thread pool request */
    struct store__op *op; /* the operation */
    struct store__fs *fs; /* the backend */
    uint64_t seq;         /* temp file number */
    int fd;               /* GET continuing an inline read: a dup() the worker reads and closes */
    uint64_t off;         /* ... first byte of the range */
    uint64_t len;         /* ... bytes in the range */
    uint64_t done;        /* ... bytes already in res.body */
    int keep_fd;          /* GET/HEAD from the pool: descriptor handed to the cache, or -1 */
    bool defer_read;      /* GET of unknown size: only open and stat, the loop reads */
    bool deferred;        /* ... and the worker did so */
    /* The attempt's result, written by the worker and moved into op->res on the loop thread:
     * a request stopped while its work runs is delivered at once, and must not share memory
     * with the worker. */
    struct store__result res;
};

/* Closes a descriptor off the loop thread (the last close of a deleted file frees its blocks). */
struct store__fs_close_work {
    uv_work_t work; /* thread pool request */
    int fd;         /* to close */
};

ssize_t (*store__fs_preadv2)(int fd, const struct iovec *iov, int iovcnt, off_t off,
                             int flags) = preadv2;

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

/*
 * Opens the file a PUT writes: for a create-only PUT an unnamed O_TMPFILE in the target's
 * directory (linked in only once complete, so no temporary name is created and removed, and a
 * crash leaves nothing behind), else or where O_TMPFILE is not supported `tmp`. Creates missing
 * directories. Sets *anon for an unnamed file. Returns the descriptor or -errno.
 */
static int store__fs_open_tmp(struct store__fs *fs, struct store__op *op, char *path,
                              const char *tmp, bool *anon)
{
    char *slash = strrchr(path, '/');
    *anon = false;
    for (int tries = 0; tries < 2; tries++) {
        if ((op->flags & STORE_IF_NONE_MATCH) && fs->tmpfile_ok &&
            !__atomic_load_n(&fs->tmpfile_unsupported, __ATOMIC_RELAXED)) {
            *slash = '\0';
            int fd = open(path, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
            int e = errno;
            *slash = '/';
            if (fd >= 0) {
                *anon = true;
                return fd;
            }
            if (e == EOPNOTSUPP || e == EISDIR || e == EINVAL) {
                __atomic_store_n(&fs->tmpfile_unsupported, true, __ATOMIC_RELAXED);
            } else if (e != ENOENT) {
                return -e;
            }
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd >= 0) {
            return fd;
        }
        if (errno != ENOENT || tries > 0) {
            return -errno;
        }
        int rc = store__fs_mkdirs(fs, path);
        if (rc < 0) {
            return rc;
        }
    }
    return -ENOENT;
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
    bool anon = false;
    int fd = store__fs_open_tmp(fs, op, path, tmp, &anon);
    if (fd < 0) {
        store__fs_errno(&w->res, -fd, "create", tmp);
        goto out;
    }
    /* One write from the caller's buffer (no copy on our side); the kernel splits it. */
    size_t done = 0;
    while (done < op->len) {
        ssize_t n = write(fd, op->buf + done, op->len - done);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            store__fs_errno(&w->res, errno, "write", tmp);
            goto out_unlink;
        }
        done += (size_t)n;
    }
    /* fdatasync: the data and what is needed to read it back (size, block map), not mtime. */
    if (!fs->nosync && fdatasync(fd) < 0) {
        store__fs_errno(&w->res, errno, "fsync", tmp);
        goto out_unlink;
    }
    if (anon) {
        /* Link the complete, synced file in; fails atomically with EEXIST. */
        char self[64];
        snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, self, AT_FDCWD, path, AT_SYMLINK_FOLLOW) < 0) {
            if (errno == EEXIST) {
                store__fail(&w->res, -EEXIST, "key %s already exists", op->key);
            } else {
                store__fs_errno(&w->res, errno, "link", path);
            }
            goto out_unlink;
        }
        close(fd);
        fd = -1;
    } else {
        if (close(fd) < 0) {
            fd = -1;
            store__fs_errno(&w->res, errno, "close", tmp);
            goto out_unlink;
        }
        fd = -1;
        if (op->flags & STORE_IF_NONE_MATCH) {
            if (link(tmp, path) < 0) {
                if (errno == EEXIST) {
                    store__fail(&w->res, -EEXIST, "key %s already exists", op->key);
                } else {
                    store__fs_errno(&w->res, errno, "link", path);
                }
                goto out_unlink;
            }
            unlink(tmp);
        } else if (rename(tmp, path) < 0) {
            store__fs_errno(&w->res, errno, "rename to", path);
            goto out_unlink;
        }
    }
    *slash = '\0';
    if (!fs->nosync && store__fs_fsync_dir(path) < 0) {
        store__fs_errno(&w->res, errno, "fsync directory", path);
    }
    w->res.size = op->len;
    goto out;
out_unlink:
    if (fd >= 0) {
        close(fd);
    }
    if (!anon) {
        unlink(tmp);
    }
out:
    free(tmp);
    free(path);
}

/* Fills size and ETag (size and mtime in hex) from a stat of the object. */
static void store__fs_stat_result(struct store__result *r, const struct stat *st)
{
    r->size = (uint64_t)st->st_size;
    snprintf(r->etag, sizeof(r->etag), "%llx-%llx", (unsigned long long)st->st_size,
             (unsigned long long)st->st_mtim.tv_sec * 1000000000ull +
                 (unsigned long long)st->st_mtim.tv_nsec);
}

/* The byte range [*off, *off + *len) a GET reads from an object of `size` bytes, or an error. */
static int store__fs_range(struct store__fs *fs, const struct store__op *op,
                           struct store__result *r, uint64_t size, uint64_t *off_out,
                           uint64_t *len_out)
{
    uint64_t off = op->off;
    uint64_t len = op->rlen;
    if (op->tail) {
        off = len >= size ? 0 : size - len;
        len = size - off;
    } else if (off > 0 && off >= size) {
        return store__fail(r, -ERANGE, "range starts at %llu beyond the end (%llu bytes) of %s",
                           (unsigned long long)off, (unsigned long long)size, op->key);
    } else if (len == 0 || len > size - off) {
        len = size - off;
    }
    if (len > fs->max_get_bytes) {
        return store__fail(r, -EFBIG, "GET of %llu bytes exceeds the cap of %llu bytes",
                           (unsigned long long)len, (unsigned long long)fs->max_get_bytes);
    }
    *off_out = off;
    *len_out = len;
    return 0;
}

/* Blocking read of [off + done, off + len) into w->res.body; sets body_len. Worker only. */
static int store__fs_read_range(struct store__result *r, int fd, const char *what, uint64_t off,
                                uint64_t len, uint64_t done)
{
    while (done < len) {
        ssize_t n = pread(fd, r->body + done, (size_t)(len - done), (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return store__fs_errno(r, errno, "read", what);
        }
        if (n == 0) {
            break; /* the file shrank: return what is there */
        }
        done += (uint64_t)n;
    }
    r->body_len = (size_t)done;
    return 0;
}

static void store__fs_get(struct store__fs_work *w, bool head)
{
    struct store__op *op = w->op;
    char *path = store__fs_path(w->fs, op->key);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        store__fs_errno(&w->res, errno, "open", path);
        if (w->res.err == -ENOENT) {
            store__fail(&w->res, -ENOENT, "key %s not found", op->key);
        }
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        store__fs_errno(&w->res, errno, "stat", path);
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        store__fail(&w->res, -ENOENT, "key %s not found (not a regular file)", op->key);
        goto out_close;
    }
    store__fs_stat_result(&w->res, &st);
    if (head) {
        goto out_keep;
    }
    uint64_t off;
    uint64_t len;
    if (store__fs_range(w->fs, op, &w->res, w->res.size, &off, &len) < 0) {
        goto out_close;
    }
    if (w->res.body == NULL && w->defer_read) {
        /* The loop thread allocates the body (a worker's fresh arena pages would fault in on
         * every first use) and reads it from the cached descriptor. */
        w->deferred = true;
        goto out_keep;
    }
    if (w->res.body == NULL) {
        w->res.body = kp_xmalloc(len == 0 ? 1 : (size_t)len);
    }
    if (store__fs_read_range(&w->res, fd, path, off, len, 0) < 0) {
        goto out_close;
    }
out_keep:
    if (w->fs->nfds > 0) {
        w->keep_fd = fd; /* the loop thread puts it in the descriptor cache */
        fd = -1;
    }
out_close:
    if (fd >= 0) {
        close(fd);
    }
out:
    if (w->res.err != 0) {
        free(w->res.body);
        w->res.body = NULL;
        w->res.body_len = 0;
    }
    free(path);
}

/* The rest of an inline GET whose data was not all in the page cache, from w->fd. */
static void store__fs_get_rest(struct store__fs_work *w)
{
    struct store__op *op = w->op;
    if (store__fs_read_range(&w->res, w->fd, op->key, w->off, w->len, w->done) < 0) {
        free(w->res.body);
        w->res.body = NULL;
        w->res.body_len = 0;
    }
    close(w->fd);
    w->fd = -1;
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
        store__fs_errno(&w->res, -rc, "list", w->fs->root);
        goto out;
    }
    if (keys.n > 1) {
        qsort(keys.v, keys.n, sizeof(char *), store__fs_keycmp);
    }
    for (size_t i = 0; i < keys.n; i++) {
        if (op->token != NULL && strcmp(keys.v[i], op->token) <= 0) {
            continue;
        }
        if (w->res.nentries == op->max_keys) {
            w->res.next_token = kp_xstrdup(w->res.entries[w->res.nentries - 1].key);
            break;
        }
        struct stat st;
        char *full = store__fs_path(w->fs, keys.v[i]);
        uint64_t size = stat(full, &st) == 0 ? (uint64_t)st.st_size : 0;
        free(full);
        store__result_add_entry(&w->res, keys.v[i], strlen(keys.v[i]), size, NULL);
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
        if (w->fd >= 0) {
            store__fs_get_rest(w);
            break;
        }
        store__fs_get(w, false);
        break;
    case STORE_HEAD:
        store__fs_get(w, true);
        break;
    case STORE_DELETE:
        store__fs_delete_key(w->fs, &w->res, op->key);
        break;
    case STORE_DELETE_MANY:
        for (size_t i = 0; i < op->nkeys; i++) {
            struct store__result r = {0};
            if (store__fs_delete_key(w->fs, &r, op->keys[i]) < 0) {
                if (w->res.nfailed++ == 0) {
                    store__fail(&w->res, r.err, "%s", r.msg);
                }
            }
        }
        break;
    case STORE_LIST:
        store__fs_list(w);
        break;
    }
}

/* ---- descriptor cache (loop thread only) ---- */

static uint64_t store__fs_hash(const char *key)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++) {
        h = (h ^ *p) * 0x100000001b3ull;
    }
    return h;
}

static void store__fs_close_work_cb(uv_work_t *req)
{
    struct store__fs_close_work *c = req->data;
    close(c->fd);
}

static void store__fs_close_after_cb(uv_work_t *req, int status)
{
    struct store__fs_close_work *c = req->data;
    if (status == UV_ECANCELED) {
        close(c->fd);
    }
    free(c);
}

/*
 * Closes a descriptor the loop thread owns. A file that is still linked closes at once (no
 * I/O); the last descriptor of a deleted file is closed on the pool, as freeing its blocks may
 * wait on the disk.
 */
static void store__fs_fd_release(uv_loop_t *loop, int fd)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_nlink > 0) {
        close(fd);
        return;
    }
    struct store__fs_close_work *c = kp_xcalloc(1, sizeof(*c));
    c->fd = fd;
    c->work.data = c;
    if (uv_queue_work(loop, &c->work, store__fs_close_work_cb, store__fs_close_after_cb) < 0) {
        close(fd);
        free(c);
    }
}

static struct store__fs_fd *store__fs_fd_find(struct store__fs *fs, const char *key)
{
    uint64_t h = store__fs_hash(key);
    for (size_t i = 0; i < fs->nfds; i++) {
        struct store__fs_fd *e = &fs->fds[i];
        if (e->key != NULL && e->hash == h && strcmp(e->key, key) == 0) {
            return e;
        }
    }
    return NULL;
}

static void store__fs_fd_drop(struct store *s, struct store__fs *fs, struct store__fs_fd *e)
{
    store__fs_fd_release(s->loop, e->fd);
    free(e->key);
    e->key = NULL;
    e->fd = -1;
    fs->st.cached--;
    fs->st.evictions++;
}

/* Forgets key's descriptor, if cached (before and after a PUT or DELETE of the key). */
static void store__fs_fd_forget(struct store *s, struct store__fs *fs, const char *key)
{
    struct store__fs_fd *e = fs->nfds > 0 ? store__fs_fd_find(fs, key) : NULL;
    if (e != NULL) {
        store__fs_fd_drop(s, fs, e);
    }
}

/* Takes ownership of fd as key's descriptor, replacing the least recently used entry if full.
 * Returns the entry. */
static struct store__fs_fd *store__fs_fd_insert(struct store *s, struct store__fs *fs,
                                                const char *key, int fd)
{
    struct store__fs_fd *e = store__fs_fd_find(fs, key);
    if (e != NULL) {
        /* A concurrent read got there first; keep the newer descriptor (the key may have been
         * replaced in between). */
        store__fs_fd_release(s->loop, e->fd);
        e->fd = fd;
        e->used = ++fs->clock;
        return e;
    }
    struct store__fs_fd *victim = &fs->fds[0];
    for (size_t i = 0; i < fs->nfds; i++) {
        if (fs->fds[i].key == NULL) {
            victim = &fs->fds[i];
            break;
        }
        if (fs->fds[i].used < victim->used) {
            victim = &fs->fds[i];
        }
    }
    if (victim->key != NULL) {
        store__fs_fd_drop(s, fs, victim);
    }
    victim->key = kp_xstrdup(key);
    victim->hash = store__fs_hash(key);
    victim->fd = fd;
    victim->used = ++fs->clock;
    fs->st.cached++;
    return victim;
}

static bool store__fs_try_inline(struct store *s, struct store__fs *fs, struct store__op *op);
static struct store__fs_work *store__fs_work_new(struct store__fs *fs, struct store__op *op);
static void store__fs_queue(struct store *s, struct store__fs_work *w);

static void store__fs_after_cb(uv_work_t *req, int status)
{
    struct store__fs_work *w = req->data;
    struct store__op *op = w->op;
    struct store *s = op->store;
    struct store__fs *fs = w->fs;
    if (status == UV_ECANCELED) {
        store__fail(&w->res, -ECANCELED, "cancelled before it started");
        if (w->fd >= 0) {
            store__fs_fd_release(s->loop, w->fd);
        }
    }
    store__result_free(&op->res);
    op->res = w->res;
    if (w->keep_fd >= 0) {
        if (op->res.err == 0) {
            store__fs_fd_insert(s, fs, op->key, w->keep_fd);
        } else {
            store__fs_fd_release(s->loop, w->keep_fd);
        }
    }
    if (op->kind == STORE_PUT || op->kind == STORE_DELETE) {
        /* A read that overlapped may have cached the replaced or deleted file. */
        store__fs_fd_forget(s, fs, op->key);
    } else if (op->kind == STORE_DELETE_MANY) {
        for (size_t i = 0; i < op->nkeys; i++) {
            store__fs_fd_forget(s, fs, op->keys[i]);
        }
    }
    bool deferred = w->deferred && op->res.err == 0 && !op->stopping && !op->finished;
    free(w);
    if (deferred && !store__fs_try_inline(s, fs, op)) {
        /* Deleted or replaced since the worker opened it: read it the ordinary way. */
        store__fs_queue(s, store__fs_work_new(fs, op));
        return;
    }
    if (!deferred) {
        store__attempt_done(op);
    }
}

static struct store__fs_work *store__fs_work_new(struct store__fs *fs, struct store__op *op)
{
    struct store__fs_work *w = kp_xcalloc(1, sizeof(*w));
    w->op = op;
    w->fs = fs;
    w->seq = ++fs->seq;
    w->fd = -1;
    w->keep_fd = -1;
    w->work.data = w;
    return w;
}

/* Queues w; on failure fails the attempt. */
static void store__fs_queue(struct store *s, struct store__fs_work *w)
{
    struct store__op *op = w->op;
    op->bctx = w;
    int rc = uv_queue_work(s->loop, &w->work, store__fs_work_cb, store__fs_after_cb);
    if (rc < 0) {
        if (w->fd >= 0) {
            close(w->fd);
        }
        store__result_free(&w->res);
        free(w);
        op->bctx = NULL;
        store__fail(&op->res, -EAGAIN, "uv_queue_work: %s", uv_strerror(rc));
        store__attempt_done(op);
    }
}

/*
 * Opens key read-only on the loop thread if that cannot wait on the disk: openat2() with
 * RESOLVE_CACHED fails with EAGAIN unless every path component is in the kernel's lookup cache.
 * Returns the descriptor, or -1 to leave the open to the pool (not cached, not found, or any
 * error, which the pool's open reports properly). A kernel or sandbox without openat2 turns
 * cached opens off.
 */
static int store__fs_open_cached(struct store__fs *fs, const char *key)
{
    char *path = store__fs_path(fs, key);
    struct open_how how = {.flags = O_RDONLY | O_CLOEXEC, .resolve = RESOLVE_CACHED};
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
    int e = errno;
    free(path);
    if (fd < 0 && (e == ENOSYS || e == E2BIG || e == EINVAL)) {
        fs->cached_open = false;
    }
    return fd;
}

/*
 * Tries to answer a GET or HEAD on the loop thread from a cached descriptor, without waiting on
 * the disk. Returns true if it took the attempt (answered it, or handed the part of the read
 * that is not in the page cache to the pool), false to run the attempt on the pool as usual.
 */
static bool store__fs_try_inline(struct store *s, struct store__fs *fs, struct store__op *op)
{
    if ((op->kind != STORE_GET && op->kind != STORE_HEAD) || fs->nfds == 0) {
        return false;
    }
    struct store__fs_fd *e = store__fs_fd_find(fs, op->key);
    if (e == NULL && fs->cached_open) {
        int fd = store__fs_open_cached(fs, op->key);
        if (fd >= 0) {
            fs->st.cached_opens++;
            e = store__fs_fd_insert(s, fs, op->key, fd);
        }
    }
    if (e == NULL) {
        return false;
    }
    struct stat st;
    if (fstat(e->fd, &st) < 0 || st.st_nlink == 0 || !S_ISREG(st.st_mode)) {
        /* Deleted or replaced since it was opened (by anyone): look the key up again. */
        store__fs_fd_drop(s, fs, e);
        return false;
    }
    e->used = ++fs->clock;
    store__fs_stat_result(&op->res, &st);
    if (op->kind == STORE_HEAD) {
        fs->st.inline_reads++;
        store__attempt_done(op);
        return true;
    }
    uint64_t off;
    uint64_t len;
    if (store__fs_range(fs, op, &op->res, op->res.size, &off, &len) < 0) {
        fs->st.inline_reads++;
        store__attempt_done(op);
        return true;
    }
    if (op->res.body == NULL) {
        op->res.body = kp_xmalloc(len == 0 ? 1 : (size_t)len);
    }
    uint64_t done = 0;
    bool eof = false;
    if (len <= fs->inline_max && !fs->nowait_unsupported) {
        while (done < len) {
            struct iovec iov = {op->res.body + done, (size_t)(len - done)};
            ssize_t n = store__fs_preadv2(e->fd, &iov, 1, (off_t)(off + done), RWF_NOWAIT);
            if (n > 0) {
                done += (uint64_t)n;
                continue;
            }
            if (n == 0) {
                eof = true; /* the file shrank: return what is there */
                break;
            }
            if (errno == EINTR) {
                continue;
            }
            if (errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS) {
                fs->nowait_unsupported = true; /* old kernel or file system: pool only */
            } else if (errno != EAGAIN) {
                store__fs_errno(&op->res, errno, "read", op->key);
                free(op->res.body);
                op->res.body = NULL;
                store__attempt_done(op);
                return true;
            }
            break;
        }
        if (done == len || eof) {
            op->res.body_len = (size_t)done;
            fs->st.inline_reads++;
            store__attempt_done(op);
            return true;
        }
    }
    /* The rest comes from the disk (or is too big to copy on the loop): a worker reads it from
     * a duplicate of the same descriptor, so the bytes all come from one version of the key. */
    int fd = fcntl(e->fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        store__fs_errno(&op->res, errno, "dup descriptor of", op->key);
        free(op->res.body);
        op->res.body = NULL;
        store__attempt_done(op);
        return true;
    }
    fs->st.fallbacks++;
    struct store__fs_work *w = store__fs_work_new(fs, op);
    w->fd = fd;
    w->off = off;
    w->len = len;
    w->done = done;
    w->res = op->res; /* size, ETag and the body read so far */
    memset(&op->res, 0, sizeof(op->res));
    store__fs_queue(s, w);
    return true;
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
    if (fs->nfds > 0) {
        if (op->kind == STORE_PUT || op->kind == STORE_DELETE) {
            store__fs_fd_forget(s, fs, op->key);
        } else if (op->kind == STORE_DELETE_MANY) {
            for (size_t i = 0; i < op->nkeys; i++) {
                store__fs_fd_forget(s, fs, op->keys[i]);
            }
        }
    }
    if (store__fs_try_inline(s, fs, op)) {
        return;
    }
    if (op->kind == STORE_GET || op->kind == STORE_HEAD) {
        fs->st.pool_reads++;
    }
    struct store__fs_work *w = store__fs_work_new(fs, op);
    if (op->kind == STORE_GET && !op->tail && op->rlen > 0 && op->rlen <= fs->max_get_bytes) {
        /* Ranged reads know their size: allocate on the loop thread, whose heap keeps its pages,
         * instead of a worker's arena, which hands back fresh (page-faulting) memory. */
        w->res.body = kp_xmalloc((size_t)op->rlen);
    } else if (op->kind == STORE_GET && fs->nfds > 0) {
        /* Size unknown: the worker opens and stats, the loop allocates and reads (inline from
         * the page cache, or by a second trip to the pool for what is not cached). */
        w->defer_read = true;
    }
    store__fs_queue(s, w);
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
    for (size_t i = 0; i < fs->nfds; i++) {
        if (fs->fds[i].key != NULL) {
            store__fs_fd_drop(s, fs, &fs->fds[i]);
        }
    }
    free(fs->fds);
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

int store__fs_get_stats(struct store *s, struct store__fs_stats *out)
{
    if (s == NULL || s->ops != &store__fs_ops) {
        return -EINVAL;
    }
    *out = ((struct store__fs *)s->impl)->st;
    return 0;
}

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
    fs->inline_max = 8u << 20;
    uint64_t nfds = 64;
    int rc = store__param_u64(u, "max_get_bytes", &fs->max_get_bytes, err, errlen);
    if (rc == 0) {
        rc = store__param_bool(u, "nosync", &fs->nosync, err, errlen);
    }
    if (rc == 0) {
        rc = store__param_u64(u, "fd_cache", &nfds, err, errlen);
    }
    if (rc == 0) {
        rc = store__param_u64(u, "inline_max", &fs->inline_max, err, errlen);
    }
    fs->tmpfile_ok = true;
    if (rc == 0) {
        rc = store__param_bool(u, "tmpfile", &fs->tmpfile_ok, err, errlen);
    }
    fs->cached_open = true;
    if (rc == 0) {
        rc = store__param_bool(u, "cached_open", &fs->cached_open, err, errlen);
    }
    if (access("/proc/self/fd", X_OK) != 0) {
        fs->tmpfile_ok = false; /* linkat() of an O_TMPFILE needs /proc without privileges */
    }
    if (rc == 0 && nfds > 4096) {
        snprintf(err, errlen, "fd_cache=%llu: at most 4096 descriptors", (unsigned long long)nfds);
        rc = -EINVAL;
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
    fs->nfds = (size_t)nfds;
    if (fs->nfds > 0) {
        fs->fds = kp_xcalloc(fs->nfds, sizeof(*fs->fds));
    }
    s->ops = &store__fs_ops;
    s->impl = fs;
    return 0;
}
