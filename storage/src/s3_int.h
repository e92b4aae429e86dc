/*
 * Pure pieces of the S3 backend, separated so unit tests can check them without a server: SigV4
 * signing, URI/query encoding, S3 XML field extraction, and error classification.
 */
#ifndef RUNNEL_STORAGE_S3_INT_H
#define RUNNEL_STORAGE_S3_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runnel/storage/store.h"

/* One header to sign: lowercase name and value (trimmed). */
struct store__hdr {
    const char *name;  /* lowercase */
    const char *value; /* as sent */
};

/* Everything SigV4 signs. Headers must be sorted by name and include host and x-amz-date. */
struct store__sigv4 {
    const char *method;            /* "GET", "PUT", ... */
    const char *path;              /* canonical URI, already percent-encoded */
    const char *query;             /* canonical query string (sorted, encoded), "" if none */
    const struct store__hdr *hdrs; /* signed headers, sorted by name */
    size_t nhdrs;                  /* count */
    const char *payload_hash;      /* hex SHA-256 or "UNSIGNED-PAYLOAD" */
    const char *amz_date;          /* YYYYMMDDTHHMMSSZ */
    const char *region;            /* e.g. us-east-1 */
    const char *service;           /* "s3" */
    const char *access_key;        /* key id */
    const char *secret_key;        /* secret */
};

/*
 * Writes the Authorization header value ("AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
 * Signature=...") into out[outlen]. Returns 0, or -ENOSPC if it does not fit / -EINVAL.
 */
int store__sigv4_sign(const struct store__sigv4 *req, char *out, size_t outlen);

/* Hex SHA-256 of buf into out[65]. */
void store__sha256_hex(const void *buf, size_t len, char out[65]);

/*
 * Percent-encodes `in` per SigV4 (unreserved A-Z a-z 0-9 - _ . ~ kept; '/' kept when keep_slash)
 * into a malloc'd string.
 */
char *store__uri_encode(const char *in, bool keep_slash);

/*
 * Finds the first <tag>...</tag> at or after `from` in xml[len]. Returns a malloc'd, entity-decoded
 * copy of its text (NULL if absent) and stores the position after the closing tag in *next.
 */
char *store__xml_get(const char *xml, size_t len, size_t from, const char *tag, size_t *next);

/*
 * Maps an HTTP status and S3 error code ("" if none) to a store error class for an operation of
 * `kind` (if_none_match: a create-only PUT). Returns 0 for success statuses.
 */
int store__s3_classify(long status, const char *code, enum store_op_kind kind, bool if_none_match);

/* New TCP connections an s3:// store has opened so far (0 for other backends); lets tests check
 * that requests reuse keep-alive connections. */
uint64_t store__s3_connections(const struct store *s);

#endif
