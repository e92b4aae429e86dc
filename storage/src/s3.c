/*
 * s3:// — S3 over HTTP(S) with libcurl's multi interface driven by the libuv loop (socket and
 * timer callbacks; nothing blocks the loop), keep-alive connections shared by all requests of a
 * store, TCP_NODELAY, SigV4 signing (s3sign.c), multipart upload above a size threshold, and S3
 * error XML turned into classified errors. One attempt of an operation is a "call" made of one
 * or more HTTP exchanges ("xfers"); retries, deadlines and cancellation live in store.c.
 *
 * URL: s3://BUCKET[/PREFIX]?endpoint=http://host:port&region=us-east-1&path_style=true
 * Parameters: endpoint, region (default us-east-1), path_style (default true when an endpoint is
 * given, else virtual-hosted on AWS), access_key, secret_key, session_token, ca_file,
 * payload_hash=unsigned|sha256 (default unsigned: chunks carry their own CRC32C),
 * multipart_threshold (bytes, default 16 MiB), part_size (default 8 MiB, at least 5 MiB on real
 * S3), part_concurrency (default 4), max_get_bytes (default 1 GiB), connect_timeout_ms,
 * stall_timeout_ms (default 10000: an attempt that moves no byte for this long is abandoned and
 * retried within the operation's deadline, instead of hanging until the deadline; 0: never).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "s3_int.h"
#include "store_int.h"

#include "runnel/protocol/mem.h"

#define STORE__S3_ERRBODY_MAX (64 * 1024)
#define STORE__S3_MAX_PARTS 10000
#define STORE__S3_DELETE_BATCH 1000

struct store__s3;
struct store__s3_call;
struct store__s3_xfer;

typedef void (*store__s3_done_fn)(struct store__s3_xfer *x, CURLcode rc);

struct store__s3 {
    struct store *store;          /* owner */
    CURLM *multi;                 /* all transfers; holds the connection cache */
    uv_timer_t timer;             /* curl's timeout */
    int handles;                  /* uv handles open (timer + polls) */
    char *bucket;                 /* bucket name */
    char *prefix;                 /* key prefix including trailing '/', or "" */
    char *scheme;                 /* "http" or "https" */
    char *host;                   /* host[:port] as sent in Host */
    bool path_style;              /* /bucket/key instead of bucket.host/key */
    char *region;                 /* signing region */
    char *access_key;             /* credentials */
    char *secret_key;             /* credentials */
    char *session_token;          /* or NULL */
    char *ca_file;                /* or NULL */
    bool sign_payload;            /* SHA-256 of bodies instead of UNSIGNED-PAYLOAD */
    uint64_t multipart_threshold; /* bytes; PUTs at least this big use multipart */
    uint64_t part_size;           /* bytes per part */
    int part_concurrency;         /* parts in flight */
    uint64_t max_get_bytes;       /* GET body cap */
    long connect_timeout_ms;      /* per connection attempt */
    long stall_s;                 /* abandon an attempt that moved no byte this long; 0: never */
    CURL *pool[16];               /* idle easy handles */
    int npool;                    /* count */
    struct store__s3_xfer *xfers; /* every transfer in flight */
    bool closing;                 /* close started */
    uint64_t connects;            /* new connections opened so far (keep-alive check) */
};

struct store__s3_sock {
    uv_poll_t poll;       /* watches fd */
    curl_socket_t fd;     /* the socket */
    struct store__s3 *s3; /* backend */
};

struct store__s3_xfer {
    struct store__s3 *s3;         /* backend */
    struct store__s3_call *call;  /* owner, NULL for fire-and-forget (abort multipart) */
    CURL *easy;                   /* handle */
    struct curl_slist *headers;   /* request headers */
    store__s3_done_fn done;       /* completion */
    char errbuf[CURL_ERROR_SIZE]; /* curl's message */
    const uint8_t *up;            /* request body (borrowed) */
    size_t up_len;                /* bytes */
    char *up_owned;               /* request body we built (XML), or NULL */
    uint8_t *body;                /* response body */
    size_t len;                   /* bytes in body */
    size_t cap;                   /* allocated */
    size_t limit;                 /* cap on body bytes */
    bool too_big;                 /* limit hit */
    char etag[72];                /* ETag header, unquoted */
    uint64_t total;               /* from Content-Range, else Content-Length */
    bool have_range;              /* Content-Range seen */
    int part;                     /* multipart part number (1-based) */
    struct store__s3_xfer *next;  /* s3->xfers list */
    struct store__s3_xfer *prev;  /* s3->xfers list */
};

struct store__s3_call {
    struct store__s3 *s3;        /* backend */
    struct store__op *op;        /* the operation */
    struct store__s3_xfer *x[8]; /* active transfers */
    char *upload_id;             /* multipart */
    char **etags;                /* multipart: per part */
    size_t nparts;               /* multipart: total parts */
    size_t next_part;            /* multipart: next to send (0-based) */
    size_t parts_done;           /* multipart: finished parts */
    size_t del_next;             /* delete many: next key index */
};

static void store__s3_call_finish(struct store__s3_call *c);

/* ---- libuv <-> curl plumbing ---- */

static void store__s3_check_done(struct store__s3 *s3);

static void store__s3_handle_closed(uv_handle_t *h)
{
    struct store__s3 *s3 = NULL;
    if (h->type == UV_POLL) {
        struct store__s3_sock *sk = h->data;
        s3 = sk->s3;
        free(sk);
    } else {
        s3 = h->data;
    }
    if (--s3->handles == 0 && s3->closing) {
        struct store *s = s3->store;
        free(s3->bucket);
        free(s3->prefix);
        free(s3->scheme);
        free(s3->host);
        free(s3->region);
        free(s3->access_key);
        free(s3->secret_key);
        free(s3->session_token);
        free(s3->ca_file);
        free(s3);
        store__backend_closed(s);
    }
}

static void store__s3_poll_cb(uv_poll_t *h, int status, int events)
{
    struct store__s3_sock *sk = h->data;
    int flags = 0;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    }
    if (events & UV_READABLE) {
        flags |= CURL_CSELECT_IN;
    }
    if (events & UV_WRITABLE) {
        flags |= CURL_CSELECT_OUT;
    }
    int running = 0;
    curl_multi_socket_action(sk->s3->multi, sk->fd, flags, &running);
    store__s3_check_done(sk->s3);
}

static int store__s3_socket_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct store__s3 *s3 = userp;
    struct store__s3_sock *sk = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (sk != NULL) {
            uv_poll_stop(&sk->poll);
            uv_close((uv_handle_t *)&sk->poll, store__s3_handle_closed);
            curl_multi_assign(s3->multi, fd, NULL);
        }
        return 0;
    }
    if (sk == NULL) {
        sk = kp_xcalloc(1, sizeof(*sk));
        sk->fd = fd;
        sk->s3 = s3;
        if (uv_poll_init_socket(s3->store->loop, &sk->poll, fd) < 0) {
            free(sk);
            return -1;
        }
        sk->poll.data = sk;
        s3->handles++;
        curl_multi_assign(s3->multi, fd, sk);
    }
    int events = 0;
    if (what & CURL_POLL_IN) {
        events |= UV_READABLE;
    }
    if (what & CURL_POLL_OUT) {
        events |= UV_WRITABLE;
    }
    uv_poll_start(&sk->poll, events, store__s3_poll_cb);
    return 0;
}

static void store__s3_timeout_cb(uv_timer_t *t)
{
    struct store__s3 *s3 = t->data;
    int running = 0;
    curl_multi_socket_action(s3->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    store__s3_check_done(s3);
}

static int store__s3_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct store__s3 *s3 = userp;
    if (timeout_ms < 0) {
        uv_timer_stop(&s3->timer);
    } else {
        uv_timer_start(&s3->timer, store__s3_timeout_cb, (uint64_t)timeout_ms, 0);
    }
    return 0;
}

/* ---- transfers ---- */

static size_t store__s3_write_cb(char *ptr, size_t size, size_t nmemb, void *userp)
{
    struct store__s3_xfer *x = userp;
    size_t n = size * nmemb;
    if (x->len + n > x->limit) {
        x->too_big = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (x->len + n > x->cap) {
        size_t cap = x->cap == 0 ? 16384 : x->cap;
        while (cap < x->len + n) {
            cap *= 2;
        }
        if (cap > x->limit) {
            cap = x->limit;
        }
        x->body = kp_xrealloc(x->body, cap);
        x->cap = cap;
    }
    memcpy(x->body + x->len, ptr, n);
    x->len += n;
    return n;
}

static size_t store__s3_header_cb(char *buf, size_t size, size_t nitems, void *userp)
{
    struct store__s3_xfer *x = userp;
    size_t n = size * nitems;
    if (n >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        x->etag[0] = '\0';
        x->have_range = false;
        return n;
    }
    const char *colon = memchr(buf, ':', n);
    if (colon == NULL) {
        return n;
    }
    size_t nl = (size_t)(colon - buf);
    const char *v = colon + 1;
    const char *end = buf + n;
    while (v < end && (*v == ' ' || *v == '\t')) {
        v++;
    }
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) {
        end--;
    }
    size_t vl = (size_t)(end - v);
    if (nl == 4 && strncasecmp(buf, "etag", 4) == 0) {
        if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
            v++;
            vl -= 2;
        }
        if (vl >= sizeof(x->etag)) {
            vl = sizeof(x->etag) - 1;
        }
        memcpy(x->etag, v, vl);
        x->etag[vl] = '\0';
    } else if (nl == 13 && strncasecmp(buf, "content-range", 13) == 0) {
        const char *slash = memchr(v, '/', vl);
        if (slash != NULL && slash + 1 < end && slash[1] != '*') {
            x->total = strtoull(slash + 1, NULL, 10);
            x->have_range = true;
        }
    } else if (nl == 14 && strncasecmp(buf, "content-length", 14) == 0) {
        uint64_t cl = strtoull(v, NULL, 10);
        if (!x->have_range) {
            x->total = cl;
        }
        /* Pre-size the body buffer for what the server announced (within the cap). */
        if (cl > x->cap && cl <= x->limit && cl > 0) {
            x->body = kp_xrealloc(x->body, (size_t)cl);
            x->cap = (size_t)cl;
        }
    }
    return n;
}

static void store__s3_xfer_free(struct store__s3_xfer *x)
{
    struct store__s3 *s3 = x->s3;
    if (x->prev != NULL) {
        x->prev->next = x->next;
    } else {
        s3->xfers = x->next;
    }
    if (x->next != NULL) {
        x->next->prev = x->prev;
    }
    if (x->easy != NULL) {
        curl_multi_remove_handle(s3->multi, x->easy);
        if (s3->npool < (int)(sizeof(s3->pool) / sizeof(s3->pool[0])) && !s3->closing) {
            curl_easy_reset(x->easy);
            s3->pool[s3->npool++] = x->easy;
        } else {
            curl_easy_cleanup(x->easy);
        }
    }
    curl_slist_free_all(x->headers);
    free(x->up_owned);
    free(x->body);
    free(x);
}

static void store__s3_check_done(struct store__s3 *s3)
{
    CURLMsg *m;
    int left = 0;
    while ((m = curl_multi_info_read(s3->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE) {
            continue;
        }
        struct store__s3_xfer *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        CURLcode rc = m->data.result;
        long nconn = 0;
        if (curl_easy_getinfo(m->easy_handle, CURLINFO_NUM_CONNECTS, &nconn) == CURLE_OK) {
            s3->connects += (uint64_t)nconn;
        }
        if (x != NULL) {
            x->done(x, rc);
        }
    }
}

static int store__s3_hdr_cmp(const void *a, const void *b)
{
    return strcmp(((const struct store__hdr *)a)->name, ((const struct store__hdr *)b)->name);
}

/*
 * Builds, signs and starts one HTTP exchange. `key` is the full object key (with the store
 * prefix) or NULL for bucket-level requests; `query` is canonical. Extra headers come as
 * lowercase name/value pairs and are signed.
 */
static struct store__s3_xfer *store__s3_xfer_start(struct store__s3 *s3,
                                                   struct store__s3_call *call, const char *method,
                                                   const char *key, const char *query,
                                                   const void *body, size_t body_len,
                                                   const struct store__hdr *extra, size_t nextra,
                                                   size_t limit, store__s3_done_fn done)
{
    struct store__s3_xfer *x = kp_xcalloc(1, sizeof(*x));
    x->s3 = s3;
    x->call = call;
    x->done = done;
    x->up = body;
    x->up_len = body_len;
    x->limit = limit;
    x->easy = s3->npool > 0 ? s3->pool[--s3->npool] : curl_easy_init();
    x->next = s3->xfers;
    if (s3->xfers != NULL) {
        s3->xfers->prev = x;
    }
    s3->xfers = x;

    char *ekey = store__uri_encode(key != NULL ? key : "", true);
    size_t pn = strlen(ekey) + strlen(s3->bucket) + 4;
    char *path = kp_xmalloc(pn);
    if (s3->path_style) {
        snprintf(path, pn, "/%s/%s", s3->bucket, ekey);
        if (key == NULL) {
            path[strlen(s3->bucket) + 1] = '\0'; /* "/bucket" */
        }
    } else {
        snprintf(path, pn, "/%s", ekey);
    }
    free(ekey);
    char host[512];
    if (s3->path_style) {
        snprintf(host, sizeof(host), "%s", s3->host);
    } else {
        snprintf(host, sizeof(host), "%s.%s", s3->bucket, s3->host);
    }
    size_t un = strlen(s3->scheme) + strlen(host) + strlen(path) + strlen(query) + 8;
    char *url = kp_xmalloc(un);
    snprintf(url, un, "%s://%s%s%s%s", s3->scheme, host, path, query[0] ? "?" : "", query);

    char payload[65];
    if (s3->sign_payload || body_len == 0) {
        store__sha256_hex(body_len > 0 ? body : "", body_len, payload);
    } else {
        snprintf(payload, sizeof(payload), "UNSIGNED-PAYLOAD");
    }
    char amz_date[17];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", &tm);

    struct store__hdr hdrs[16];
    size_t nh = 0;
    hdrs[nh++] = (struct store__hdr){"host", host};
    hdrs[nh++] = (struct store__hdr){"x-amz-content-sha256", payload};
    hdrs[nh++] = (struct store__hdr){"x-amz-date", amz_date};
    if (s3->session_token != NULL) {
        hdrs[nh++] = (struct store__hdr){"x-amz-security-token", s3->session_token};
    }
    for (size_t i = 0; i < nextra && nh < 16; i++) {
        hdrs[nh++] = extra[i];
    }
    qsort(hdrs, nh, sizeof(hdrs[0]), store__s3_hdr_cmp);
    struct store__sigv4 sv = {
        .method = method,
        .path = path,
        .query = query,
        .hdrs = hdrs,
        .nhdrs = nh,
        .payload_hash = payload,
        .amz_date = amz_date,
        .region = s3->region,
        .service = "s3",
        .access_key = s3->access_key,
        .secret_key = s3->secret_key,
    };
    char auth[1024];
    store__sigv4_sign(&sv, auth, sizeof(auth));
    char line[1200];
    for (size_t i = 0; i < nh; i++) {
        snprintf(line, sizeof(line), "%s: %s", hdrs[i].name, hdrs[i].value);
        x->headers = curl_slist_append(x->headers, line);
    }
    snprintf(line, sizeof(line), "Authorization: %s", auth);
    x->headers = curl_slist_append(x->headers, line);
    x->headers = curl_slist_append(x->headers, "Expect:");
    x->headers = curl_slist_append(x->headers, "Accept:");
    if (strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0) {
        x->headers = curl_slist_append(x->headers, "Content-Type:");
    }

    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, store__s3_write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, store__s3_header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 512L * 1024L);
    curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, s3->connect_timeout_ms);
    if (s3->stall_s > 0) {
        /* Less than a byte a second for stall_s seconds: a stalled server or connection. */
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, s3->stall_s);
    }
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (s3->ca_file != NULL) {
        curl_easy_setopt(e, CURLOPT_CAINFO, s3->ca_file);
    }
    if (call != NULL && call->op != NULL) {
        uint64_t now_ms = uv_now(s3->store->loop);
        uint64_t left = call->op->deadline > now_ms ? call->op->deadline - now_ms : 1;
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)left + 50);
    } else {
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
    }
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        if (body_len > 0 || strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, body_len > 0 ? (const char *)body : "");
        }
    }
    free(url);
    free(path);
    CURLMcode mrc = curl_multi_add_handle(s3->multi, e);
    if (mrc != CURLM_OK) {
        snprintf(x->errbuf, sizeof(x->errbuf), "curl_multi_add_handle: %s",
                 curl_multi_strerror(mrc));
        /* Report through the normal path on the next timer tick. */
        curl_easy_cleanup(x->easy);
        x->easy = NULL;
    }
    return x;
}

/* Records x in the call's active set. */
static void store__s3_call_track(struct store__s3_call *c, struct store__s3_xfer *x)
{
    for (size_t i = 0; i < sizeof(c->x) / sizeof(c->x[0]); i++) {
        if (c->x[i] == NULL) {
            c->x[i] = x;
            return;
        }
    }
}

static void store__s3_call_untrack(struct store__s3_call *c, struct store__s3_xfer *x)
{
    for (size_t i = 0; i < sizeof(c->x) / sizeof(c->x[0]); i++) {
        if (c->x[i] == x) {
            c->x[i] = NULL;
        }
    }
}

static bool store__s3_call_busy(const struct store__s3_call *c)
{
    for (size_t i = 0; i < sizeof(c->x) / sizeof(c->x[0]); i++) {
        if (c->x[i] != NULL) {
            return true;
        }
    }
    return false;
}

static char *store__s3_full_key(struct store__s3 *s3, const char *key)
{
    size_t n = strlen(s3->prefix) + strlen(key) + 1;
    char *k = kp_xmalloc(n);
    snprintf(k, n, "%s%s", s3->prefix, key);
    return k;
}

/*
 * Turns a finished exchange into op->res: classified error with message, or 0. Returns the class.
 */
static int store__s3_result(struct store__s3_xfer *x, CURLcode rc, struct store__result *r,
                            const char *what)
{
    struct store__s3_call *c = x->call;
    struct store__op *op = c->op;
    long status = 0;
    if (x->easy != NULL) {
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    }
    r->http_status = (int)status;
    if (x->easy == NULL) {
        return store__fail(r, -EIO, "%s: %s", what, x->errbuf);
    }
    if (rc != CURLE_OK) {
        if (x->too_big) {
            return store__fail(r, -EFBIG, "%s: response larger than the cap of %zu bytes", what,
                               x->limit);
        }
        const char *m = x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);
        switch (rc) {
        case CURLE_OPERATION_TIMEDOUT:
            return store__fail(r, -ETIMEDOUT, "%s: %s", what, m);
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_AGAIN:
            return store__fail(r, -EAGAIN, "%s: %s", what, m);
        default:
            return store__fail(r, -EIO, "%s: %s", what, m);
        }
    }
    char *code = NULL;
    char *msg = NULL;
    if (status >= 300 || (x->len > 0 && x->len < 4096 && strcmp(what, "GET") != 0)) {
        code = store__xml_get((const char *)x->body, x->len, 0, "Code", NULL);
        msg = store__xml_get((const char *)x->body, x->len, 0, "Message", NULL);
        if (status < 300 && (x->len < 7 || memmem(x->body, x->len, "<Error>", 7) == NULL ||
                             memmem(x->body, x->len, "<DeleteResult", 13) != NULL)) {
            free(code);
            free(msg);
            code = NULL;
            msg = NULL;
        }
    }
    int cls = store__s3_classify(status, code, op->kind, (op->flags & STORE_IF_NONE_MATCH) != 0);
    if (cls != 0) {
        const char *hint = "";
        if (cls == -EACCES) {
            hint = " (check the access key and secret)";
        } else if (cls == -EEXIST) {
            hint = " (create-only PUT: the key already exists)";
        }
        store__fail(r, cls, "%s %s: HTTP %ld %s%s%s%s", what, op->key != NULL ? op->key : "",
                    status, code != NULL ? code : "", msg != NULL && msg[0] ? ": " : "",
                    msg != NULL ? msg : "", hint);
    }
    free(code);
    free(msg);
    return cls;
}

/* ---- simple operations ---- */

static void store__s3_simple_done(struct store__s3_xfer *x, CURLcode rc)
{
    struct store__s3_call *c = x->call;
    if (c == NULL) {
        store__s3_xfer_free(x);
        return;
    }
    struct store__op *op = c->op;
    struct store__result *r = &op->res;
    static const char *const names[] = {"PUT", "GET", "HEAD", "DELETE", "DELETE", "LIST"};
    store__s3_call_untrack(c, x);
    int cls = store__s3_result(x, rc, r, names[op->kind]);
    if (cls == 0) {
        memcpy(r->etag, x->etag, sizeof(r->etag));
        switch (op->kind) {
        case STORE_GET: {
            long status = r->http_status;
            r->size = x->total;
            if (status == 200 && (op->off > 0 || op->rlen > 0)) {
                /* The server ignored the range: cut it out ourselves. */
                uint64_t off = op->off;
                uint64_t len = op->rlen;
                if (op->tail) {
                    off = len >= x->len ? 0 : x->len - len;
                    len = x->len - off;
                } else if (off >= x->len && x->len > 0) {
                    store__fail(r, -ERANGE, "GET %s: range beyond the end", op->key);
                    break;
                } else if (len == 0 || len > x->len - off) {
                    len = x->len - off;
                }
                memmove(x->body, x->body + off, (size_t)len);
                x->len = (size_t)len;
                r->size = x->total;
            }
            r->body = x->body != NULL ? x->body : kp_xmalloc(1);
            r->body_len = x->len;
            x->body = NULL;
            break;
        }
        case STORE_HEAD:
            r->size = x->total;
            break;
        case STORE_PUT:
            r->size = op->len;
            break;
        default:
            break;
        }
    } else if (op->kind == STORE_DELETE && cls == -ENOENT) {
        store__result_free(r); /* deleting a missing key is success */
    }
    store__s3_xfer_free(x);
    store__s3_call_finish(c);
}

static void store__s3_list_done(struct store__s3_xfer *x, CURLcode rc)
{
    struct store__s3_call *c = x->call;
    struct store__op *op = c->op;
    struct store__result *r = &op->res;
    struct store__s3 *s3 = c->s3;
    store__s3_call_untrack(c, x);
    if (store__s3_result(x, rc, r, "LIST") == 0) {
        const char *xml = (const char *)x->body;
        size_t pos = 0;
        size_t plen = strlen(s3->prefix);
        for (;;) {
            const char *open = memmem(xml + pos, x->len - pos, "<Contents>", 10);
            if (open == NULL) {
                break;
            }
            const char *close = memmem(open, (size_t)(xml + x->len - open), "</Contents>", 11);
            if (close == NULL) {
                break;
            }
            size_t from = (size_t)(open - xml);
            size_t span = (size_t)(close - xml);
            pos = span + 11;
            char *key = store__xml_get(xml, span, from, "Key", NULL);
            char *size = store__xml_get(xml, span, from, "Size", NULL);
            char *etag = store__xml_get(xml, span, from, "ETag", NULL);
            if (key != NULL && strncmp(key, s3->prefix, plen) == 0) {
                char *et = etag;
                if (et != NULL && et[0] == '"') {
                    et++;
                    size_t el = strlen(et);
                    if (el > 0 && et[el - 1] == '"') {
                        et[el - 1] = '\0';
                    }
                }
                store__result_add_entry(r, key + plen, strlen(key) - plen,
                                        size != NULL ? strtoull(size, NULL, 10) : 0, et);
            }
            free(key);
            free(size);
            free(etag);
        }
        char *trunc = store__xml_get(xml, x->len, 0, "IsTruncated", NULL);
        if (trunc != NULL && strcmp(trunc, "true") == 0) {
            r->next_token = store__xml_get(xml, x->len, 0, "NextContinuationToken", NULL);
            if (r->next_token == NULL) {
                store__fail(r, -EIO, "LIST: truncated listing without NextContinuationToken");
            }
        }
        free(trunc);
    }
    store__s3_xfer_free(x);
    store__s3_call_finish(c);
}

/* ---- batch delete ---- */

static void store__s3_delete_batch(struct store__s3_call *c);

static char *store__xml_escape(const char *s)
{
    size_t n = strlen(s);
    char *out = kp_xmalloc(6 * n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        switch (s[i]) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&apos;";
            break;
        default:
            out[o++] = s[i];
            continue;
        }
        memcpy(out + o, rep, strlen(rep));
        o += strlen(rep);
    }
    out[o] = '\0';
    return out;
}

static void store__s3_delete_done(struct store__s3_xfer *x, CURLcode rc)
{
    struct store__s3_call *c = x->call;
    struct store__op *op = c->op;
    struct store__result *r = &op->res;
    store__s3_call_untrack(c, x);
    struct store__result tmp = {0};
    if (store__s3_result(x, rc, &tmp, "DELETE (batch)") != 0) {
        r->err = tmp.err;
        memcpy(r->msg, tmp.msg, sizeof(r->msg));
        r->http_status = tmp.http_status;
        store__s3_xfer_free(x);
        store__s3_call_finish(c);
        return;
    }
    const char *xml = (const char *)x->body;
    size_t pos = 0;
    char *err;
    while ((err = store__xml_get(xml, x->len, pos, "Error", &pos)) != NULL) {
        char *key = store__xml_get(err, strlen(err), 0, "Key", NULL);
        char *code = store__xml_get(err, strlen(err), 0, "Code", NULL);
        if (code != NULL && strcmp(code, "NoSuchKey") != 0) {
            if (r->nfailed++ == 0) {
                int cls = store__s3_classify(500, code, STORE_DELETE, false);
                store__fail(r, cls == -EAGAIN ? -EAGAIN : (cls == -EACCES ? -EACCES : -EIO),
                            "DELETE (batch) %s: %s", key != NULL ? key : "?", code);
            }
        }
        free(key);
        free(code);
        free(err);
    }
    store__s3_xfer_free(x);
    if (c->del_next < op->nkeys) {
        store__s3_delete_batch(c);
    } else {
        store__s3_call_finish(c);
    }
}

static void store__s3_delete_batch(struct store__s3_call *c)
{
    struct store__op *op = c->op;
    struct store__s3 *s3 = c->s3;
    size_t end = c->del_next + STORE__S3_DELETE_BATCH;
    if (end > op->nkeys) {
        end = op->nkeys;
    }
    size_t cap = 64;
    for (size_t i = c->del_next; i < end; i++) {
        cap += 6 * (strlen(s3->prefix) + strlen(op->keys[i])) + 32;
    }
    char *xml = kp_xmalloc(cap);
    size_t n = (size_t)snprintf(xml, cap, "<Delete><Quiet>true</Quiet>");
    for (size_t i = c->del_next; i < end; i++) {
        char *full = store__s3_full_key(s3, op->keys[i]);
        char *esc = store__xml_escape(full);
        n += (size_t)snprintf(xml + n, cap - n, "<Object><Key>%s</Key></Object>", esc);
        free(esc);
        free(full);
    }
    n += (size_t)snprintf(xml + n, cap - n, "</Delete>");
    c->del_next = end;
    unsigned char md5[16];
    unsigned int mdlen = 0;
    EVP_Digest(xml, n, md5, &mdlen, EVP_md5(), NULL);
    char b64[32];
    EVP_EncodeBlock((unsigned char *)b64, md5, 16);
    struct store__hdr extra[] = {{"content-md5", b64}};
    struct store__s3_xfer *x = store__s3_xfer_start(s3, c, "POST", NULL, "delete=", xml, n, extra,
                                                    1, 1 << 20, store__s3_delete_done);
    x->up_owned = xml;
    store__s3_call_track(c, x);
}

/* ---- multipart upload ---- */

static void store__s3_mp_next(struct store__s3_call *c);

static void store__s3_mp_abort_done(struct store__s3_xfer *x, CURLcode rc)
{
    store__s3_xfer_free(x);
}

/* Fire-and-forget AbortMultipartUpload so parts do not linger. */
static void store__s3_mp_abort(struct store__s3_call *c)
{
    if (c->upload_id == NULL || c->s3->closing) {
        return;
    }
    char *full = store__s3_full_key(c->s3, c->op->key);
    char *eid = store__uri_encode(c->upload_id, false);
    size_t qn = strlen(eid) + 16;
    char *q = kp_xmalloc(qn);
    snprintf(q, qn, "uploadId=%s", eid);
    store__s3_xfer_start(c->s3, NULL, "DELETE", full, q, NULL, 0, NULL, 0, 1 << 16,
                         store__s3_mp_abort_done);
    free(q);
    free(eid);
    free(full);
}

static void store__s3_mp_fail(struct store__s3_call *c)
{
    for (size_t i = 0; i < sizeof(c->x) / sizeof(c->x[0]); i++) {
        if (c->x[i] != NULL) {
            store__s3_xfer_free(c->x[i]);
            c->x[i] = NULL;
        }
    }
    store__s3_mp_abort(c);
    store__s3_call_finish(c);
}

static void store__s3_mp_complete_done(struct store__s3_xfer *x, CURLcode rc)
{
    struct store__s3_call *c = x->call;
    struct store__result *r = &c->op->res;
    store__s3_call_untrack(c, x);
    if (store__s3_result(x, rc, r, "PUT (complete multipart)") == 0) {
        char *etag = store__xml_get((const char *)x->body, x->len, 0, "ETag", NULL);
        if (etag != NULL) {
            const char *e = etag;
            size_t el = strlen(e);
            if (el >= 2 && e[0] == '"') {
                e++;
                el -= 2;
            }
            snprintf(r->etag, sizeof(r->etag), "%.*s", (int)el, e);
        }
        free(etag);
        r->size = c->op->len;
        store__s3_xfer_free(x);
        store__s3_call_finish(c);
        return;
    }
    store__s3_xfer_free(x);
    store__s3_mp_fail(c);
}

static void store__s3_mp_complete(struct store__s3_call *c)
{
    size_t cap = 128 + c->nparts * 160;
    char *xml = kp_xmalloc(cap);
    size_t n = (size_t)snprintf(xml, cap, "<CompleteMultipartUpload>");
    for (size_t i = 0; i < c->nparts; i++) {
        n += (size_t)snprintf(xml + n, cap - n,
                              "<Part><PartNumber>%zu</PartNumber><ETag>\"%s\"</ETag></Part>", i + 1,
                              c->etags[i]);
    }
    n += (size_t)snprintf(xml + n, cap - n, "</CompleteMultipartUpload>");
    char *full = store__s3_full_key(c->s3, c->op->key);
    char *eid = store__uri_encode(c->upload_id, false);
    size_t qn = strlen(eid) + 16;
    char *q = kp_xmalloc(qn);
    snprintf(q, qn, "uploadId=%s", eid);
    struct store__hdr extra[1] = {{"if-none-match", "*"}};
    size_t nextra = (c->op->flags & STORE_IF_NONE_MATCH) ? 1 : 0;
    struct store__s3_xfer *x = store__s3_xfer_start(c->s3, c, "POST", full, q, xml, n, extra,
                                                    nextra, 1 << 20, store__s3_mp_complete_done);
    x->up_owned = xml;
    store__s3_call_track(c, x);
    free(q);
    free(eid);
    free(full);
}

static void store__s3_mp_part_done(struct store__s3_xfer *x, CURLcode rc)
{
    struct store__s3_call *c = x->call;
    struct store__result *r = &c->op->res;
    store__s3_call_untrack(c, x);
    if (store__s3_result(x, rc, r, "PUT (part)") != 0) {
        store__s3_xfer_free(x);
        store__s3_mp_fail(c);
        return;
    }
    if (x->etag[0] == '\0') {
        store__fail(r, -EIO, "PUT (part %d) of %s: no ETag in the response", x->part, c->op->key);
        store__s3_xfer_free(x);
        store__s3_mp_fail(c);
        return;
    }
    c->etags[x->part - 1] = kp_xstrdup(x->etag);
    c->parts_done++;
    store__s3_xfer_free(x);
    if (c->parts_done == c->nparts) {
        store__s3_mp_complete(c);
    } else {
        store__s3_mp_next(c);
    }
}

static void store__s3_mp_next(struct store__s3_call *c)
{
    struct store__s3 *s3 = c->s3;
    struct store__op *op = c->op;
    int inflight = 0;
    for (size_t i = 0; i < sizeof(c->x) / sizeof(c->x[0]); i++) {
        inflight += c->x[i] != NULL;
    }
    char *full = store__s3_full_key(s3, op->key);
    char *eid = store__uri_encode(c->upload_id, false);
    while (c->next_part < c->nparts && inflight < s3->part_concurrency) {
        size_t i = c->next_part++;
        uint64_t off = (uint64_t)i * s3->part_size;
        uint64_t len = op->len - off < s3->part_size ? op->len - off : s3->part_size;
        size_t qn = strlen(eid) + 48;
        char *q = kp_xmalloc(qn);
        snprintf(q, qn, "partNumber=%zu&uploadId=%s", i + 1, eid);
        struct store__s3_xfer *x =
            store__s3_xfer_start(s3, c, "PUT", full, q, op->buf + off, (size_t)len, NULL, 0,
                                 1 << 16, store__s3_mp_part_done);
        x->part = (int)(i + 1);
        store__s3_call_track(c, x);
        inflight++;
        free(q);
    }
    free(eid);
    free(full);
}

static void store__s3_mp_init_done(struct store__s3_xfer *x, CURLcode rc)
{
    struct store__s3_call *c = x->call;
    struct store__result *r = &c->op->res;
    store__s3_call_untrack(c, x);
    if (store__s3_result(x, rc, r, "PUT (start multipart)") != 0) {
        store__s3_xfer_free(x);
        store__s3_call_finish(c);
        return;
    }
    c->upload_id = store__xml_get((const char *)x->body, x->len, 0, "UploadId", NULL);
    store__s3_xfer_free(x);
    if (c->upload_id == NULL || c->upload_id[0] == '\0') {
        store__fail(r, -EIO, "PUT (start multipart) %s: no UploadId in the response", c->op->key);
        store__s3_call_finish(c);
        return;
    }
    store__s3_mp_next(c);
}

/*
 * Create-only multipart PUT, step 0: servers that ignore If-None-Match on
 * CompleteMultipartUpload (RGW 16) would overwrite, so look first. Racy against a concurrent
 * writer of the same key, which Runnel's never-reused keys rule out.
 */
static void store__s3_mp_check_done(struct store__s3_xfer *x, CURLcode rc)
{
    struct store__s3_call *c = x->call;
    struct store__op *op = c->op;
    struct store__result *r = &op->res;
    store__s3_call_untrack(c, x);
    struct store__result tmp = {0};
    int cls = store__s3_result(x, rc, &tmp, "HEAD (create-only check)");
    store__s3_xfer_free(x);
    if (cls == 0) {
        store__fail(r, -EEXIST, "PUT %s: key already exists (create-only multipart upload)",
                    op->key);
        r->http_status = 412;
        store__s3_call_finish(c);
        return;
    }
    if (cls != -ENOENT) {
        r->err = tmp.err;
        r->http_status = tmp.http_status;
        memcpy(r->msg, tmp.msg, sizeof(r->msg));
        store__s3_call_finish(c);
        return;
    }
    char *full = store__s3_full_key(c->s3, op->key);
    struct store__s3_xfer *nx = store__s3_xfer_start(c->s3, c, "POST", full, "uploads=", NULL, 0,
                                                     NULL, 0, 1 << 16, store__s3_mp_init_done);
    free(full);
    store__s3_call_track(c, nx);
}

/* ---- calls ---- */

static void store__s3_call_free(struct store__s3_call *c)
{
    for (size_t i = 0; i < c->nparts; i++) {
        free(c->etags != NULL ? c->etags[i] : NULL);
    }
    free(c->etags);
    free(c->upload_id);
    free(c);
}

static void store__s3_call_finish(struct store__s3_call *c)
{
    struct store__op *op = c->op;
    store__s3_call_free(c);
    store__attempt_done(op);
}

static void store__s3_start(struct store *s, struct store__op *op)
{
    struct store__s3 *s3 = s->impl;
    struct store__s3_call *c = kp_xcalloc(1, sizeof(*c));
    c->s3 = s3;
    c->op = op;
    op->bctx = c;
    char *full = op->key != NULL ? store__s3_full_key(s3, op->key) : NULL;
    struct store__s3_xfer *x = NULL;
    switch (op->kind) {
    case STORE_PUT:
        if (op->len >= s3->multipart_threshold && op->len > s3->part_size) {
            c->nparts = (size_t)((op->len + s3->part_size - 1) / s3->part_size);
            if (c->nparts > STORE__S3_MAX_PARTS) {
                store__fail(&op->res, -EINVAL, "PUT %s: %zu bytes need more than %d parts", op->key,
                            op->len, STORE__S3_MAX_PARTS);
                break;
            }
            c->etags = kp_xcalloc(c->nparts, sizeof(char *));
            if (op->flags & STORE_IF_NONE_MATCH) {
                x = store__s3_xfer_start(s3, c, "HEAD", full, "", NULL, 0, NULL, 0, 1 << 16,
                                         store__s3_mp_check_done);
            } else {
                x = store__s3_xfer_start(s3, c, "POST", full, "uploads=", NULL, 0, NULL, 0, 1 << 16,
                                         store__s3_mp_init_done);
            }
        } else {
            struct store__hdr extra[1] = {{"if-none-match", "*"}};
            x = store__s3_xfer_start(s3, c, "PUT", full, "", op->buf, op->len, extra,
                                     (op->flags & STORE_IF_NONE_MATCH) ? 1 : 0, 1 << 16,
                                     store__s3_simple_done);
        }
        break;
    case STORE_GET: {
        char range[64] = "";
        if (op->tail) {
            snprintf(range, sizeof(range), "bytes=-%llu", (unsigned long long)op->rlen);
        } else if (op->rlen > 0) {
            snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)op->off,
                     (unsigned long long)(op->off + op->rlen - 1));
        } else if (op->off > 0) {
            snprintf(range, sizeof(range), "bytes=%llu-", (unsigned long long)op->off);
        }
        struct store__hdr extra[1] = {{"range", range}};
        x = store__s3_xfer_start(s3, c, "GET", full, "", NULL, 0, extra, range[0] ? 1 : 0,
                                 (size_t)s3->max_get_bytes, store__s3_simple_done);
        break;
    }
    case STORE_HEAD:
        x = store__s3_xfer_start(s3, c, "HEAD", full, "", NULL, 0, NULL, 0, 1 << 16,
                                 store__s3_simple_done);
        break;
    case STORE_DELETE:
        x = store__s3_xfer_start(s3, c, "DELETE", full, "", NULL, 0, NULL, 0, 1 << 16,
                                 store__s3_simple_done);
        break;
    case STORE_DELETE_MANY:
        if (op->nkeys == 0) {
            break;
        }
        store__s3_delete_batch(c);
        break;
    case STORE_LIST: {
        char *p = store__s3_full_key(s3, op->prefix != NULL ? op->prefix : "");
        char *ep = store__uri_encode(p, false);
        char *et = op->token != NULL ? store__uri_encode(op->token, false) : NULL;
        size_t qn = strlen(ep) + (et != NULL ? strlen(et) : 0) + 96;
        char *q = kp_xmalloc(qn);
        snprintf(q, qn, "%s%s%slist-type=2&max-keys=%zu&prefix=%s",
                 et != NULL ? "continuation-token=" : "", et != NULL ? et : "",
                 et != NULL ? "&" : "", op->max_keys, ep);
        x = store__s3_xfer_start(s3, c, "GET", NULL, q, NULL, 0, NULL, 0, 64u << 20,
                                 store__s3_list_done);
        free(q);
        free(et);
        free(ep);
        free(p);
        break;
    }
    }
    free(full);
    if (x != NULL) {
        store__s3_call_track(c, x);
        if (x->easy == NULL) {
            /* Could not even start: report it. */
            store__s3_call_untrack(c, x);
            store__fail(&op->res, -EIO, "%s", x->errbuf);
            store__s3_xfer_free(x);
            store__s3_call_finish(c);
        }
        return;
    }
    if (!store__s3_call_busy(c)) {
        store__s3_call_finish(c);
    }
}

static bool store__s3_abort(struct store *s, struct store__op *op)
{
    struct store__s3_call *c = op->bctx;
    if (c == NULL) {
        return true;
    }
    for (size_t i = 0; i < sizeof(c->x) / sizeof(c->x[0]); i++) {
        if (c->x[i] != NULL) {
            store__s3_xfer_free(c->x[i]);
            c->x[i] = NULL;
        }
    }
    store__s3_mp_abort(c);
    store__s3_call_free(c);
    return true;
}

static void store__s3_close(struct store *s)
{
    struct store__s3 *s3 = s->impl;
    s3->closing = true;
    while (s3->xfers != NULL) {
        store__s3_xfer_free(s3->xfers);
    }
    for (int i = 0; i < s3->npool; i++) {
        curl_easy_cleanup(s3->pool[i]);
    }
    s3->npool = 0;
    curl_multi_cleanup(s3->multi);
    s3->multi = NULL;
    uv_timer_stop(&s3->timer);
    uv_close((uv_handle_t *)&s3->timer, store__s3_handle_closed);
}

uint64_t store__s3_connections(const struct store *s)
{
    if (strcmp(s->ops->name, "s3") != 0) {
        return 0;
    }
    return ((const struct store__s3 *)s->impl)->connects;
}

static const struct store__ops store__s3_ops = {
    .name = "s3",
    .start = store__s3_start,
    .abort = store__s3_abort,
    .close = store__s3_close,
};

static void store__s3_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static char *store__s3_cred(struct store__url *u, const char *param, const char *cfgval,
                            const char *env)
{
    const char *v = store__param(u, param);
    if (v == NULL) {
        v = cfgval;
    }
    if (v == NULL) {
        v = getenv(env);
    }
    return v != NULL && v[0] != '\0' ? kp_xstrdup(v) : NULL;
}

static void store__s3_free_partial(struct store__s3 *s3)
{
    free(s3->bucket);
    free(s3->prefix);
    free(s3->scheme);
    free(s3->host);
    free(s3->region);
    free(s3->access_key);
    free(s3->secret_key);
    free(s3->session_token);
    free(s3->ca_file);
    free(s3);
}

int store__s3_open(struct store *s, struct store__url *u, const struct store_config *cfg, char *err,
                   size_t errlen)
{
    static uv_once_t once = UV_ONCE_INIT;
    uv_once(&once, store__s3_global_init);
    struct store__s3 *s3 = kp_xcalloc(1, sizeof(*s3));
    s3->store = s;
    int rc = 0;
    const char *slash = strchr(u->rest, '/');
    size_t blen = slash != NULL ? (size_t)(slash - u->rest) : strlen(u->rest);
    s3->bucket = kp_xmalloc(blen + 1);
    memcpy(s3->bucket, u->rest, blen);
    s3->bucket[blen] = '\0';
    if (blen < 3 || blen > 63 ||
        strspn(s3->bucket, "abcdefghijklmnopqrstuvwxyz0123456789.-") != blen) {
        snprintf(err, errlen, "s3:// bucket '%s' is not a valid bucket name", s3->bucket);
        rc = -EINVAL;
        goto out_free;
    }
    const char *pfx = slash != NULL ? slash + 1 : "";
    size_t pl = strlen(pfx);
    while (pl > 0 && pfx[pl - 1] == '/') {
        pl--;
    }
    s3->prefix = kp_xmalloc(pl + 2);
    memcpy(s3->prefix, pfx, pl);
    s3->prefix[pl] = pl > 0 ? '/' : '\0';
    s3->prefix[pl + 1] = '\0';

    const char *region = store__param(u, "region");
    if (region == NULL) {
        region = getenv("AWS_REGION");
    }
    if (region == NULL) {
        region = getenv("AWS_DEFAULT_REGION");
    }
    s3->region = kp_xstrdup(region != NULL && region[0] ? region : "us-east-1");
    const char *endpoint = store__param(u, "endpoint");
    s3->path_style = endpoint != NULL;
    char *ep = NULL;
    if (endpoint == NULL) {
        size_t n = strlen(s3->region) + 48;
        ep = kp_xmalloc(n);
        snprintf(ep, n, "https://s3.%s.amazonaws.com", s3->region);
        endpoint = ep;
    }
    const char *sep = strstr(endpoint, "://");
    if (sep == NULL ||
        (strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0)) {
        snprintf(err, errlen, "endpoint '%s' must start with http:// or https://", endpoint);
        free(ep);
        rc = -EINVAL;
        goto out_free;
    }
    s3->scheme = kp_xmalloc((size_t)(sep - endpoint) + 1);
    memcpy(s3->scheme, endpoint, (size_t)(sep - endpoint));
    s3->scheme[sep - endpoint] = '\0';
    const char *hs = sep + 3;
    size_t hl = strcspn(hs, "/");
    s3->host = kp_xmalloc(hl + 1);
    memcpy(s3->host, hs, hl);
    s3->host[hl] = '\0';
    /* Drop a default port so Host matches what curl would send and what servers expect. */
    size_t hlen = strlen(s3->host);
    if (strcmp(s3->scheme, "http") == 0 && hlen > 3 && strcmp(s3->host + hlen - 3, ":80") == 0) {
        s3->host[hlen - 3] = '\0';
    } else if (strcmp(s3->scheme, "https") == 0 && hlen > 4 &&
               strcmp(s3->host + hlen - 4, ":443") == 0) {
        s3->host[hlen - 4] = '\0';
    }
    free(ep);
    if (s3->host[0] == '\0') {
        snprintf(err, errlen, "endpoint has no host");
        rc = -EINVAL;
        goto out_free;
    }
    if ((rc = store__param_bool(u, "path_style", &s3->path_style, err, errlen)) < 0) {
        goto out_free;
    }
    s3->access_key =
        store__s3_cred(u, "access_key", cfg != NULL ? cfg->access_key : NULL, "AWS_ACCESS_KEY_ID");
    s3->secret_key = store__s3_cred(u, "secret_key", cfg != NULL ? cfg->secret_key : NULL,
                                    "AWS_SECRET_ACCESS_KEY");
    s3->session_token = store__s3_cred(u, "session_token", cfg != NULL ? cfg->session_token : NULL,
                                       "AWS_SESSION_TOKEN");
    if (s3->access_key == NULL || s3->secret_key == NULL) {
        snprintf(err, errlen,
                 "s3:// store needs credentials: set AWS_ACCESS_KEY_ID and "
                 "AWS_SECRET_ACCESS_KEY (or access_key/secret_key)");
        rc = -EACCES;
        goto out_free;
    }
    const char *ca = store__param(u, "ca_file");
    if (ca == NULL && cfg != NULL) {
        ca = cfg->ca_file;
    }
    s3->ca_file = ca != NULL ? kp_xstrdup(ca) : NULL;
    const char *ph = store__param(u, "payload_hash");
    if (ph != NULL && strcmp(ph, "sha256") != 0 && strcmp(ph, "unsigned") != 0) {
        snprintf(err, errlen, "payload_hash=%s: want sha256 or unsigned", ph);
        rc = -EINVAL;
        goto out_free;
    }
    s3->sign_payload = ph != NULL && strcmp(ph, "sha256") == 0;
    s3->multipart_threshold = 16u << 20;
    s3->part_size = 8u << 20;
    s3->max_get_bytes = 1u << 30;
    uint64_t conc = 4;
    uint64_t cto = 5000;
    uint64_t stall = 10000;
    if ((rc = store__param_u64(u, "multipart_threshold", &s3->multipart_threshold, err, errlen)) <
            0 ||
        (rc = store__param_u64(u, "part_size", &s3->part_size, err, errlen)) < 0 ||
        (rc = store__param_u64(u, "part_concurrency", &conc, err, errlen)) < 0 ||
        (rc = store__param_u64(u, "max_get_bytes", &s3->max_get_bytes, err, errlen)) < 0 ||
        (rc = store__param_u64(u, "connect_timeout_ms", &cto, err, errlen)) < 0 ||
        (rc = store__param_u64(u, "stall_timeout_ms", &stall, err, errlen)) < 0) {
        goto out_free;
    }
    if (s3->part_size < 1024 || conc < 1 || conc > 8 || s3->max_get_bytes > (1ull << 40)) {
        snprintf(err, errlen, "part_size must be at least 1024, part_concurrency 1..8");
        rc = -EINVAL;
        goto out_free;
    }
    s3->part_concurrency = (int)conc;
    s3->connect_timeout_ms = (long)cto;
    s3->stall_s = stall == 0 ? 0 : (long)((stall + 999) / 1000); /* libcurl counts seconds */
    if ((rc = store__params_check(u, err, errlen)) < 0) {
        goto out_free;
    }
    s3->multi = curl_multi_init();
    curl_multi_setopt(s3->multi, CURLMOPT_SOCKETFUNCTION, store__s3_socket_cb);
    curl_multi_setopt(s3->multi, CURLMOPT_SOCKETDATA, s3);
    curl_multi_setopt(s3->multi, CURLMOPT_TIMERFUNCTION, store__s3_timer_cb);
    curl_multi_setopt(s3->multi, CURLMOPT_TIMERDATA, s3);
    curl_multi_setopt(s3->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 16L);
    curl_multi_setopt(s3->multi, CURLMOPT_MAXCONNECTS, 32L);
    uv_timer_init(s->loop, &s3->timer);
    s3->timer.data = s3;
    s3->handles = 1;
    s->ops = &store__s3_ops;
    s->impl = s3;
    return 0;
out_free:
    store__s3_free_partial(s3);
    return rc;
}
