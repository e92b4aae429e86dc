/*
 * SigV4 request signing, S3 XML extraction and S3 error classification for the s3:// backend.
 * Our own signer (OpenSSL HMAC/SHA-256) rather than libcurl's CURLOPT_AWS_SIGV4: we control the
 * canonical query string and the signed header set (session tokens, conditional headers), and the
 * unit tests check it against the signature examples AWS publishes for S3.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "s3_int.h"

#include "runnel/protocol/mem.h"

static void store__hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void store__sha256_hex(const void *buf, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL);
    store__hex(md, 32, out);
}

static void store__hmac(const void *key, size_t keylen, const char *data, unsigned char out[32])
{
    unsigned int n = 32;
    HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)data, strlen(data), out, &n);
}

/* A growable string for building canonical requests. */
struct store__sb {
    char *p;    /* bytes */
    size_t n;   /* used */
    size_t cap; /* allocated */
};

static void store__sb_add(struct store__sb *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = kp_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void store__sb_str(struct store__sb *b, const char *s)
{
    store__sb_add(b, s, strlen(s));
}

int store__sigv4_sign(const struct store__sigv4 *r, char *out, size_t outlen)
{
    if (r->amz_date == NULL || strlen(r->amz_date) != 16) {
        return -EINVAL;
    }
    struct store__sb c = {0};
    struct store__sb signed_hdrs = {0};
    store__sb_str(&c, r->method);
    store__sb_str(&c, "\n");
    store__sb_str(&c, r->path);
    store__sb_str(&c, "\n");
    store__sb_str(&c, r->query);
    store__sb_str(&c, "\n");
    for (size_t i = 0; i < r->nhdrs; i++) {
        store__sb_str(&c, r->hdrs[i].name);
        store__sb_str(&c, ":");
        /* Trim and collapse runs of spaces, as SigV4 requires. */
        const char *v = r->hdrs[i].value;
        while (*v == ' ' || *v == '\t') {
            v++;
        }
        size_t vl = strlen(v);
        while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) {
            vl--;
        }
        for (size_t k = 0; k < vl; k++) {
            if (v[k] == ' ' && k > 0 && v[k - 1] == ' ') {
                continue;
            }
            store__sb_add(&c, &v[k], 1);
        }
        store__sb_str(&c, "\n");
        if (i > 0) {
            store__sb_str(&signed_hdrs, ";");
        }
        store__sb_str(&signed_hdrs, r->hdrs[i].name);
    }
    store__sb_str(&c, "\n");
    store__sb_str(&c, signed_hdrs.p != NULL ? signed_hdrs.p : "");
    store__sb_str(&c, "\n");
    store__sb_str(&c, r->payload_hash);

    char creq_hash[65];
    store__sha256_hex(c.p, c.n, creq_hash);
    char date[9];
    memcpy(date, r->amz_date, 8);
    date[8] = '\0';
    char scope[160];
    snprintf(scope, sizeof(scope), "%s/%s/%s/aws4_request", date, r->region, r->service);
    char sts[400];
    snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s\n%s", r->amz_date, scope, creq_hash);

    size_t sklen = strlen(r->secret_key) + 5;
    char *sk = kp_xmalloc(sklen);
    snprintf(sk, sklen, "AWS4%s", r->secret_key);
    unsigned char k1[32];
    unsigned char k2[32];
    unsigned char k3[32];
    unsigned char k4[32];
    unsigned char sig[32];
    store__hmac(sk, sklen - 1, date, k1);
    store__hmac(k1, 32, r->region, k2);
    store__hmac(k2, 32, r->service, k3);
    store__hmac(k3, 32, "aws4_request", k4);
    store__hmac(k4, 32, sts, sig);
    char sighex[65];
    store__hex(sig, 32, sighex);
    free(sk);

    int n = snprintf(out, outlen, "AWS4-HMAC-SHA256 Credential=%s/%s,SignedHeaders=%s,Signature=%s",
                     r->access_key, scope, signed_hdrs.p != NULL ? signed_hdrs.p : "", sighex);
    free(c.p);
    free(signed_hdrs.p);
    return n < 0 || (size_t)n >= outlen ? -ENOSPC : 0;
}

char *store__uri_encode(const char *in, bool keep_slash)
{
    static const char digits[] = "0123456789ABCDEF";
    size_t n = strlen(in);
    char *out = kp_xmalloc(3 * n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)in[i];
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~' || (keep_slash && ch == '/')) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = digits[ch >> 4];
            out[o++] = digits[ch & 15];
        }
    }
    out[o] = '\0';
    return out;
}

static size_t store__xml_unescape(const char *in, size_t n, char *out)
{
    static const struct {
        const char *ent;
        char ch;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '&') {
            bool done = false;
            for (size_t e = 0; e < sizeof(ents) / sizeof(ents[0]); e++) {
                size_t el = strlen(ents[e].ent);
                if (i + el <= n && memcmp(in + i, ents[e].ent, el) == 0) {
                    out[o++] = ents[e].ch;
                    i += el - 1;
                    done = true;
                    break;
                }
            }
            if (!done && i + 3 < n && in[i + 1] == '#') {
                const char *semi = memchr(in + i, ';', n - i);
                if (semi != NULL && semi - (in + i) <= 10) {
                    unsigned long cp = in[i + 2] == 'x' ? strtoul(in + i + 3, NULL, 16)
                                                        : strtoul(in + i + 2, NULL, 10);
                    if (cp > 0 && cp < 0x80) {
                        out[o++] = (char)cp;
                        i = (size_t)(semi - in);
                        done = true;
                    }
                }
            }
            if (done) {
                continue;
            }
        }
        out[o++] = in[i];
    }
    return o;
}

char *store__xml_get(const char *xml, size_t len, size_t from, const char *tag, size_t *next)
{
    char open[80];
    char close[80];
    int on = snprintf(open, sizeof(open), "<%s>", tag);
    int cn = snprintf(close, sizeof(close), "</%s>", tag);
    if (xml == NULL || from >= len || on <= 0 || cn <= 0) {
        return NULL;
    }
    const char *p = xml + from;
    const char *end = xml + len;
    const char *a = NULL;
    while (p + on <= end) {
        const char *hit = memchr(p, '<', (size_t)(end - p));
        if (hit == NULL || hit + on > end) {
            return NULL;
        }
        if (memcmp(hit, open, (size_t)on) == 0) {
            a = hit + on;
            break;
        }
        p = hit + 1;
    }
    if (a == NULL) {
        return NULL;
    }
    const char *b = a;
    while (b + cn <= end && memcmp(b, close, (size_t)cn) != 0) {
        b++;
    }
    if (b + cn > end) {
        return NULL;
    }
    char *out = kp_xmalloc((size_t)(b - a) + 1);
    size_t n = store__xml_unescape(a, (size_t)(b - a), out);
    out[n] = '\0';
    if (next != NULL) {
        *next = (size_t)(b + cn - xml);
    }
    return out;
}

int store__s3_classify(long status, const char *code, enum store_op_kind kind, bool if_none_match)
{
    if (code == NULL) {
        code = "";
    }
    if (strcmp(code, "SlowDown") == 0 || strcmp(code, "Throttling") == 0 ||
        strcmp(code, "ThrottlingException") == 0 || strcmp(code, "RequestLimitExceeded") == 0 ||
        strcmp(code, "RequestTimeout") == 0 || strcmp(code, "InternalError") == 0 ||
        strcmp(code, "ServiceUnavailable") == 0 || strcmp(code, "OperationAborted") == 0 ||
        strcmp(code, "ConditionalRequestConflict") == 0) {
        return -EAGAIN;
    }
    if (status >= 200 && status < 300) {
        return code[0] != '\0' ? -EIO : 0;
    }
    if (strcmp(code, "SignatureDoesNotMatch") == 0 || strcmp(code, "InvalidAccessKeyId") == 0 ||
        strcmp(code, "AccessDenied") == 0 || strcmp(code, "ExpiredToken") == 0 ||
        strcmp(code, "InvalidToken") == 0 || strcmp(code, "RequestTimeTooSkewed") == 0 ||
        strcmp(code, "AuthorizationHeaderMalformed") == 0) {
        return -EACCES;
    }
    switch (status) {
    case 304:
    case 412:
        return kind == STORE_PUT && if_none_match ? -EEXIST : -EIO;
    case 401:
    case 403:
        return -EACCES;
    case 404:
        if (strcmp(code, "NoSuchBucket") == 0 || strcmp(code, "NoSuchUpload") == 0) {
            return -EIO;
        }
        return -ENOENT;
    case 408:
    case 429:
        return -EAGAIN;
    case 416:
        return -ERANGE;
    default:
        break;
    }
    if (status >= 500 && status < 600) {
        return -EAGAIN;
    }
    return -EIO;
}
