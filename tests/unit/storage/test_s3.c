/*
 * Pure parts of the S3 backend, without a server: the SigV4 signer against the signature
 * examples AWS publishes for S3 (GET with a range, PUT with extra headers, sub-resource and
 * list queries), URI encoding, S3 XML extraction (entities, truncation), error classification,
 * and s3:// URL validation. The backend itself is exercised against Ceph RGW by
 * tests/integration/storage.
 */
#include "test_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "s3_int.h"
#include "store_test_util.h"

#define EX_KEY "AKIAIOSFODNN7EXAMPLE"
#define EX_SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static void check_sig(const char *method, const char *path, const char *query,
                      const struct store__hdr *hdrs, size_t n, const char *payload,
                      const char *want_signed, const char *want_sig)
{
    struct store__sigv4 r = {
        .method = method,
        .path = path,
        .query = query,
        .hdrs = hdrs,
        .nhdrs = n,
        .payload_hash = payload,
        .amz_date = "20130524T000000Z",
        .region = "us-east-1",
        .service = "s3",
        .access_key = EX_KEY,
        .secret_key = EX_SECRET,
    };
    char auth[512];
    assert_int_equal(store__sigv4_sign(&r, auth, sizeof(auth)), 0);
    char want[512];
    snprintf(want, sizeof(want),
             "AWS4-HMAC-SHA256 Credential=" EX_KEY "/20130524/us-east-1/s3/aws4_request,"
             "SignedHeaders=%s,Signature=%s",
             want_signed, want_sig);
    assert_string_equal(auth, want);
}

static void test_sigv4_get_object(void **state)
{
    (void)state;
    const struct store__hdr h[] = {
        {"host", "examplebucket.s3.amazonaws.com"},
        {"range", "bytes=0-9"},
        {"x-amz-content-sha256", EMPTY_SHA},
        {"x-amz-date", "20130524T000000Z"},
    };
    check_sig("GET", "/test.txt", "", h, 4, EMPTY_SHA, "host;range;x-amz-content-sha256;x-amz-date",
              "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

static void test_sigv4_put_object(void **state)
{
    (void)state;
    char body_sha[65];
    store__sha256_hex("Welcome to Amazon S3.", 21, body_sha);
    assert_string_equal(body_sha,
                        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    char *path = store__uri_encode("test$file.text", true);
    char full[64];
    snprintf(full, sizeof(full), "/%s", path);
    assert_string_equal(full, "/test%24file.text");
    const struct store__hdr h[] = {
        {"date", "Fri, 24 May 2013 00:00:00 GMT"},
        {"host", "examplebucket.s3.amazonaws.com"},
        {"x-amz-content-sha256", body_sha},
        {"x-amz-date", "20130524T000000Z"},
        {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
    };
    check_sig("PUT", full, "", h, 5, body_sha,
              "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
              "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    free(path);
}

static void test_sigv4_queries(void **state)
{
    (void)state;
    const struct store__hdr h[] = {
        {"host", "examplebucket.s3.amazonaws.com"},
        {"x-amz-content-sha256", EMPTY_SHA},
        {"x-amz-date", "20130524T000000Z"},
    };
    check_sig("GET", "/", "lifecycle=", h, 3, EMPTY_SHA, "host;x-amz-content-sha256;x-amz-date",
              "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
    check_sig("GET", "/", "max-keys=2&prefix=J", h, 3, EMPTY_SHA,
              "host;x-amz-content-sha256;x-amz-date",
              "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

static void test_sigv4_rejects_bad_date(void **state)
{
    (void)state;
    struct store__sigv4 r = {.method = "GET", .path = "/", .query = "", .amz_date = "2013"};
    char auth[64];
    assert_int_equal(store__sigv4_sign(&r, auth, sizeof(auth)), -EINVAL);
}

static void test_uri_encode(void **state)
{
    (void)state;
    char *s = store__uri_encode("a b/c~d_e-f.g+h=i&j%k\xc3\xa9", true);
    assert_string_equal(s, "a%20b/c~d_e-f.g%2Bh%3Di%26j%25k%C3%A9");
    free(s);
    s = store__uri_encode("x/y", false);
    assert_string_equal(s, "x%2Fy");
    free(s);
}

static void test_xml(void **state)
{
    (void)state;
    const char *xml = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code>"
                      "<Message>The key &lt;a&amp;b&gt; &quot;x&quot; &#65;&#x42;</Message>"
                      "<Key>k</Key></Error>";
    size_t next = 0;
    char *code = store__xml_get(xml, strlen(xml), 0, "Code", &next);
    assert_string_equal(code, "NoSuchKey");
    free(code);
    char *msg = store__xml_get(xml, strlen(xml), next, "Message", NULL);
    assert_string_equal(msg, "The key <a&b> \"x\" AB");
    free(msg);
    assert_null(store__xml_get(xml, strlen(xml), 0, "Missing", NULL));
    /* Truncated documents never read past the end. */
    for (size_t n = 0; n < strlen(xml); n++) {
        char *cut = malloc(n + 1);
        memcpy(cut, xml, n);
        char *v = store__xml_get(cut, n, 0, "Message", NULL);
        if (v != NULL) {
            assert_true(n >= strlen(xml) - 20);
            free(v);
        }
        free(cut);
    }
    /* Repeated elements are found in order. */
    const char *list = "<R><Key>a</Key><Key>b</Key></R>";
    size_t pos = 0;
    char *k1 = store__xml_get(list, strlen(list), pos, "Key", &pos);
    char *k2 = store__xml_get(list, strlen(list), pos, "Key", &pos);
    assert_string_equal(k1, "a");
    assert_string_equal(k2, "b");
    assert_null(store__xml_get(list, strlen(list), pos, "Key", &pos));
    free(k1);
    free(k2);
}

static void test_classify(void **state)
{
    (void)state;
    assert_int_equal(store__s3_classify(200, "", STORE_GET, false), 0);
    assert_int_equal(store__s3_classify(206, NULL, STORE_GET, false), 0);
    assert_int_equal(store__s3_classify(204, "", STORE_DELETE, false), 0);
    assert_int_equal(store__s3_classify(404, "NoSuchKey", STORE_GET, false), -ENOENT);
    assert_int_equal(store__s3_classify(404, "", STORE_HEAD, false), -ENOENT);
    assert_int_equal(store__s3_classify(404, "NoSuchBucket", STORE_GET, false), -EIO);
    assert_int_equal(store__s3_classify(412, "PreconditionFailed", STORE_PUT, true), -EEXIST);
    assert_int_equal(store__s3_classify(412, "PreconditionFailed", STORE_GET, false), -EIO);
    assert_int_equal(store__s3_classify(403, "SignatureDoesNotMatch", STORE_PUT, false), -EACCES);
    assert_int_equal(store__s3_classify(403, "InvalidAccessKeyId", STORE_GET, false), -EACCES);
    assert_int_equal(store__s3_classify(403, "RequestTimeTooSkewed", STORE_GET, false), -EACCES);
    assert_int_equal(store__s3_classify(400, "ExpiredToken", STORE_GET, false), -EACCES);
    assert_int_equal(store__s3_classify(503, "SlowDown", STORE_PUT, false), -EAGAIN);
    assert_int_equal(store__s3_classify(500, "InternalError", STORE_PUT, false), -EAGAIN);
    assert_int_equal(store__s3_classify(502, "", STORE_PUT, false), -EAGAIN);
    assert_int_equal(store__s3_classify(400, "RequestTimeout", STORE_PUT, false), -EAGAIN);
    assert_int_equal(store__s3_classify(429, "", STORE_LIST, false), -EAGAIN);
    assert_int_equal(store__s3_classify(409, "ConditionalRequestConflict", STORE_PUT, true),
                     -EAGAIN);
    assert_int_equal(store__s3_classify(416, "InvalidRange", STORE_GET, false), -ERANGE);
    assert_int_equal(store__s3_classify(400, "InvalidArgument", STORE_PUT, false), -EIO);
    /* A 200 that carries an error document (CompleteMultipartUpload) is not success. */
    assert_int_equal(store__s3_classify(200, "InternalError", STORE_PUT, false), -EAGAIN);
    assert_int_equal(store__s3_classify(200, "InvalidPart", STORE_PUT, false), -EIO);
}

static void test_s3_url_errors(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct store *s = NULL;
    char err[256];
    struct store_config cfg = {.access_key = "k", .secret_key = "s", .retries = -1};
    assert_int_equal(
        store_open(&loop, "s3://ab?endpoint=http://127.0.0.1:1", &cfg, &s, err, sizeof(err)),
        -EINVAL);
    assert_non_null(strstr(err, "bucket"));
    assert_int_equal(store_open(&loop, "s3://Bad_Bucket", &cfg, &s, err, sizeof(err)), -EINVAL);
    assert_int_equal(store_open(&loop, "s3://bucket?endpoint=ftp://x", &cfg, &s, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "http"));
    assert_int_equal(
        store_open(&loop, "s3://bucket?endpoint=http://x&frobnicate=1", &cfg, &s, err, sizeof(err)),
        -EINVAL);
    assert_non_null(strstr(err, "frobnicate"));
    assert_int_equal(store_open(&loop, "s3://bucket?endpoint=http://x&payload_hash=md5", &cfg, &s,
                                err, sizeof(err)),
                     -EINVAL);
    /* No credentials anywhere. */
    char *saved_key = getenv("AWS_ACCESS_KEY_ID") ? strdup(getenv("AWS_ACCESS_KEY_ID")) : NULL;
    unsetenv("AWS_ACCESS_KEY_ID");
    assert_int_equal(store_open(&loop, "s3://bucket?endpoint=http://x", NULL, &s, err, sizeof(err)),
                     -EACCES);
    assert_non_null(strstr(err, "AWS_ACCESS_KEY_ID"));
    if (saved_key != NULL) {
        setenv("AWS_ACCESS_KEY_ID", saved_key, 1);
        free(saved_key);
    }
    assert_int_equal(store_open(&loop,
                                "s3://bucket/some/prefix/?endpoint=http://127.0.0.1:1"
                                "&path_style=false&region=eu-west-1",
                                &cfg, &s, err, sizeof(err)),
                     0);
    assert_string_equal(store_backend(s), "s3");
    assert_int_equal(tstore_close_loop(&loop, s), 0);
}

/* Nothing listens on the port: a clear transient error, retried until the deadline. */
static void test_s3_refused(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct store *s = NULL;
    char err[256];
    struct store_config cfg = {.access_key = "k", .secret_key = "s", .retries = -1};
    assert_int_equal(store_open(&loop, "s3://bucket?endpoint=http://127.0.0.1:9&retry_base_ms=10",
                                &cfg, &s, err, sizeof(err)),
                     0);
    struct store_req r = {0};
    struct tstore_wait w = {0};
    r.data = &w;
    r.timeout_ms = 400;
    assert_int_equal(store_get(s, &r, "k", 0, 0, tstore_cb), 0);
    int rc = tstore_wait(&loop, &r);
    assert_true(rc == -ETIMEDOUT || rc == -EAGAIN);
    assert_true(r.attempts >= 2);
    /* The connect error, alone or, when the deadline falls while a new attempt is still
     * connecting, after the deadline and attempt count (kept from the attempt before). */
    assert_non_null(strstr(r.msg, "onnect"));
    if (rc == -ETIMEDOUT) {
        assert_non_null(strstr(r.msg, "deadline of 400 ms exceeded"));
    }
    assert_int_equal(tstore_close_loop(&loop, s), 0);
}

/* A server that takes connections and never answers: each attempt is abandoned after the stall
 * timeout and retried, and the deadline's message names the stall. */
static void test_s3_stalled(void **state)
{
    (void)state;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t salen = sizeof(sa);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 16), 0); /* connections complete in the backlog, never read */
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &salen), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct store *s = NULL;
    char err[256];
    char url[200];
    snprintf(url, sizeof(url),
             "s3://bucket?endpoint=http://127.0.0.1:%d&retry_base_ms=10&stall_timeout_ms=1000",
             ntohs(sa.sin_port));
    struct store_config cfg = {.access_key = "k", .secret_key = "s", .retries = -1};
    assert_int_equal(store_open(&loop, url, &cfg, &s, err, sizeof(err)), 0);
    struct store_req r = {0};
    struct tstore_wait w = {0};
    r.data = &w;
    r.timeout_ms = 3500;
    assert_int_equal(store_get(s, &r, "k", 0, 0, tstore_cb), 0);
    assert_int_equal(tstore_wait(&loop, &r), -ETIMEDOUT);
    assert_true(r.attempts >= 2);
    assert_non_null(strstr(r.msg, "deadline of 3500 ms exceeded"));
    assert_non_null(strstr(r.msg, "too slow"));
    assert_int_equal(tstore_close_loop(&loop, s), 0);
    close(lfd);
}

int run_test_s3(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigv4_get_object), cmocka_unit_test(test_sigv4_put_object),
        cmocka_unit_test(test_sigv4_queries),    cmocka_unit_test(test_sigv4_rejects_bad_date),
        cmocka_unit_test(test_uri_encode),       cmocka_unit_test(test_xml),
        cmocka_unit_test(test_classify),         cmocka_unit_test(test_s3_url_errors),
        cmocka_unit_test(test_s3_refused),       cmocka_unit_test(test_s3_stalled),
    };
    return cmocka_run_group_tests_name("s3", tests, NULL, NULL);
}
