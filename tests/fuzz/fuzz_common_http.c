/*
 * Fuzzes the HTTP request-head parser (common/src/http.c) with arbitrary bytes: it must never read
 * outside the input, must say "incomplete" only below the size limit, and on success must return
 * a length within the input and a NUL-terminated path starting with '/'. The first input byte
 * picks the head-size limit (16..4096) so the 431 path is reached often.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runnel/common/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    size_t max = 16 + (size_t)data[0] * 16;
    /* An exact-size copy so reads past the end are caught. */
    char *buf = malloc(size - 1 ? size - 1 : 1);
    memcpy(buf, data + 1, size - 1);
    struct rn_http_request req;
    const char *why = NULL;
    ssize_t n = rn_http_parse(buf, size - 1, max, &req, &why);
    if (n > 0) {
        if ((size_t)n > size - 1 || (size_t)n > max || req.path[0] != '/' ||
            memchr(req.path, '\0', sizeof(req.path)) == NULL ||
            (req.minor != 0 && req.minor != 1)) {
            abort();
        }
    } else if (n == 0) {
        if (size - 1 >= max) {
            abort();
        }
    } else if (n != -EPROTO || why == NULL || req.error_status < 400 || req.error_status > 505) {
        abort();
    }
    free(buf);
    return 0;
}
