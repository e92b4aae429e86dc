#!/usr/bin/python3
"""Scenario: malformed frames get the right error or a closed connection, and the server keeps
serving everyone else.

Raw sockets on 127.0.0.1, each case on its own connection, while a "bystander" connection opened
first stays idle and must still answer ApiVersions at the end:
  negative-size       frame size 0xFFFFFFFF                       -> connection closed
  huge-size           frame size 0x7FFFFFFF (above any max frame)  -> connection closed, promptly
  garbage-header      valid size, random bytes as header (api key 0x7a7a) -> connection closed
  short-header        a 3-byte frame (not even api key + version)  -> connection closed
  truncated-body      ApiVersions v0 promising 100 bytes, 20 sent, then write side shut -> closed
  bad-crc             Produce v3 with two partitions: partition 0 carries a record batch whose
                      CRC is wrong, partition 1 a correct one -> partition 0 CORRUPT_MESSAGE (2),
                      partition 1 no error, and partition 1's record reads back
  partition-errors    one Produce: an 8 KiB batch to a topic with max.message.bytes=2048 ->
                      MESSAGE_TOO_LARGE (10); partition 99 -> UNKNOWN_TOPIC_OR_PARTITION (3); a
                      good batch beside them is stored
  acks0-no-response   Produce acks=0 then ApiVersions on one connection: the first response is
                      ApiVersions's (acks=0 gets none), and the acks=0 record is stored
  api-versions-v99    ApiVersions v99 -> v0 body, UNSUPPORTED_VERSION (35) and the API list
  still-serving       with another connection stuck halfway through a frame: ApiVersions v0 on
                      a new connection and on the bystander both answer, and a confluent-kafka
                      produce + consume round trip works.

  scenario_malformed.py --cluster dev --runnel build/x/agent/runnel
  scenario_malformed.py --cluster mock          (driver validation; see README for what the mock
                                                 does with each case)
"""

import argparse
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checks  # noqa: E402
from adapters import ConfluentAdapter  # noqa: E402
from common import (CheckFailed, Reporter, Skip, add_cluster_args, expect, expect_eq,  # noqa
                    make_cluster, unique, value)

CLOSE_TIMEOUT = 10.0


# ---- CRC-32C and record batch v2 ------------------------------------------------------------

def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_T = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def varint(n):
    n = (n << 1) ^ (n >> 63)  # zigzag
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def record_batch(key, val, ts, corrupt=False):
    body = b"\x00" + varint(0) + varint(0) + varint(len(key)) + key + varint(len(val)) + val + \
        varint(0)
    rec = varint(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", 0, 0, ts, ts, -1, -1, -1, 1) + rec
    crc = crc32c(after_crc)
    if corrupt:
        crc ^= 0xDEADBEEF
    after_len = struct.pack(">ibI", -1, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_len)) + after_len


def kstr(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def request(api_key, version, corr, body):
    hdr = struct.pack(">hhi", api_key, version, corr) + kstr("runnel-malformed")
    payload = hdr + body
    return struct.pack(">i", len(payload)) + payload


def recv_frame(sock, timeout):
    sock.settimeout(timeout)
    buf = b""
    while len(buf) < 4:
        got = sock.recv(4 - len(buf))
        if not got:
            raise CheckFailed("connection closed while waiting for a response")
        buf += got
    n = struct.unpack(">i", buf)[0]
    expect(0 <= n < 64 * 1024 * 1024, "response frame size %d" % n)
    data = b""
    while len(data) < n:
        got = sock.recv(n - len(data))
        if not got:
            raise CheckFailed("connection closed inside a response (%d of %d bytes)"
                              % (len(data), n))
        data += got
    return data


def api_versions(sock, corr=7):
    sock.sendall(request(18, 0, corr, b""))
    resp = recv_frame(sock, 10)
    got_corr, err, n = struct.unpack(">ihi", resp[:10])
    expect_eq(got_corr, corr, "ApiVersions correlation id")
    expect_eq(err, 0, "ApiVersions error code")
    expect(n > 0, "ApiVersions lists no APIs")


def expect_closed(sock, what):
    """The server must close the connection (EOF or reset) within CLOSE_TIMEOUT seconds; any
    response bytes before that are allowed (an error response then close)."""
    sock.settimeout(CLOSE_TIMEOUT)
    t0 = time.monotonic()
    try:
        while True:
            got = sock.recv(65536)
            if not got:
                return
            if time.monotonic() - t0 > CLOSE_TIMEOUT:
                break
    except ConnectionResetError:
        return
    except socket.timeout:
        pass
    raise CheckFailed("%s: connection still open %.0f s later" % (what, CLOSE_TIMEOUT))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_cluster_args(ap)
    args = ap.parse_args()
    cluster = make_cluster(args)
    rep = Reporter("malformed-%s" % cluster.kind)
    with cluster:
        host, port = cluster.bootstrap.rsplit(":", 1)
        addr = (host, int(port))

        def conn():
            return socket.create_connection(addr, timeout=10)

        bystander = conn()

        def case_bytes(data, what, shut=False):
            def run():
                s = conn()
                try:
                    s.sendall(data)
                    if shut:
                        s.shutdown(socket.SHUT_WR)
                    expect_closed(s, what)
                finally:
                    s.close()
            return run

        rep.run("negative-size", case_bytes(struct.pack(">I", 0xFFFFFFFF) + b"x" * 16,
                                            "negative frame size"))
        rep.run("huge-size", case_bytes(struct.pack(">I", 0x7FFFFFFF) + b"x" * 16,
                                        "2 GiB frame size"))
        garbage = bytes((i * 37 + 11) % 256 for i in range(40))
        rep.run("garbage-header", case_bytes(struct.pack(">i", len(b"zz" + garbage)) + b"zz"
                                             + garbage, "garbage header"))
        rep.run("short-header", case_bytes(struct.pack(">i", 3) + b"\x00\x12\x00",
                                           "3-byte frame"))
        trunc = request(18, 0, 1, b"\x00" * 80)
        rep.run("truncated-body", case_bytes(trunc[:24], "truncated frame", shut=True))

        def bad_crc():
            if cluster.kind == "mock":
                raise Skip("the mock (librdkafka 2.0.2) does not verify batch CRCs")
            topic = unique("malformed")
            a = ConfluentAdapter(cluster.bootstrap)
            err = a.create_topic(topic, 2, {})
            expect_eq(err, None, "CreateTopics")
            checks.wait_partitions(a, topic, 2)
            ts = int(time.time() * 1000)
            good_val = value(topic + "/good", 64)
            parts = [(0, record_batch(b"bad", value(topic + "/bad", 64), ts, corrupt=True)),
                     (1, record_batch(b"good", good_val, ts))]
            body = struct.pack(">hhi", -1, -1, 30000) + struct.pack(">i", 1) + kstr(topic) + \
                struct.pack(">i", len(parts))
            for idx, batch in parts:
                body += struct.pack(">ii", idx, len(batch)) + batch
            s = conn()
            try:
                s.sendall(request(0, 3, 42, body))
                resp = recv_frame(s, 30)
            finally:
                s.close()
            corr, ntopics = struct.unpack(">ii", resp[:8])
            expect_eq(corr, 42, "Produce correlation id")
            expect_eq(ntopics, 1, "topics in the Produce response")
            pos = 8
            (tlen,) = struct.unpack(">h", resp[pos:pos + 2])
            expect_eq(resp[pos + 2:pos + 2 + tlen].decode(), topic, "topic in the response")
            pos += 2 + tlen
            (nparts,) = struct.unpack(">i", resp[pos:pos + 4])
            pos += 4
            errs = {}
            for _ in range(nparts):
                idx, code, _base, _lat = struct.unpack(">ihqq", resp[pos:pos + 22])
                errs[idx] = code
                pos += 22
            expect_eq(errs.get(0), 2, "partition 0 (bad CRC) error code (CORRUPT_MESSAGE)")
            expect_eq(errs.get(1), 0, "partition 1 (good batch) error code")
            got = a.consume(topic, 1, "beginning", 1, 30)
            expect(len(got) == 1 and got[0]["value"] == good_val,
                   "partition 1's record did not read back: %s" % got)
            expect_eq(a.end_offset(topic, 0), 0, "high watermark of partition 0 after the bad "
                      "batch")

        rep.run("bad-crc", bad_crc)

        def produce_v3(topic, parts, acks=-1, corr=43):
            body = struct.pack(">hhi", -1, acks, 30000) + struct.pack(">i", 1) + kstr(topic) + \
                struct.pack(">i", len(parts))
            for idx, batch in parts:
                body += struct.pack(">ii", idx, len(batch)) + batch
            return request(0, 3, corr, body)

        def partition_errors(resp):
            pos = 8
            (tlen,) = struct.unpack(">h", resp[pos:pos + 2])
            pos += 2 + tlen
            (nparts,) = struct.unpack(">i", resp[pos:pos + 4])
            pos += 4
            errs = {}
            for _ in range(nparts):
                idx, code, _base, _lat = struct.unpack(">ihqq", resp[pos:pos + 22])
                errs[idx] = code
                pos += 22
            return errs

        def partition_errors_case():
            """Unknown partition -> UNKNOWN_TOPIC_OR_PARTITION (3); a batch above the topic's
            max.message.bytes -> MESSAGE_TOO_LARGE (10); a good batch beside them is stored."""
            if cluster.kind == "mock":
                raise Skip("the mock (librdkafka 2.0.2) has no admin API to set "
                           "max.message.bytes")
            topic = unique("malformed-limits")
            a = ConfluentAdapter(cluster.bootstrap)
            expect_eq(a.create_topic(topic, 2, {"max.message.bytes": "2048"}), None,
                      "CreateTopics")
            checks.wait_partitions(a, topic, 2)
            ts = int(time.time() * 1000)
            small = value(topic + "/small", 100)
            req = produce_v3(topic, [(0, record_batch(b"big", value(topic + "/big", 8192), ts)),
                                     (1, record_batch(b"small", small, ts)),
                                     (99, record_batch(b"nowhere", small, ts))])
            s = conn()
            try:
                s.sendall(req)
                errs = partition_errors(recv_frame(s, 30))
            finally:
                s.close()
            expect_eq(errs.get(0), 10, "partition 0 (8 KiB batch, max.message.bytes=2048) "
                      "error code (MESSAGE_TOO_LARGE)")
            expect_eq(errs.get(1), 0, "partition 1 (small batch) error code")
            expect_eq(errs.get(99), 3, "partition 99 (does not exist) error code "
                      "(UNKNOWN_TOPIC_OR_PARTITION)")
            got = a.consume(topic, 1, "beginning", 1, 30)
            expect(len(got) == 1 and got[0]["value"] == small,
                   "partition 1's record did not read back: %s" % got)
            expect_eq(a.end_offset(topic, 0), 0, "high watermark of partition 0")

        rep.run("partition-errors", partition_errors_case)

        def acks0_order():
            """Produce with acks=0 gets no response: the next response on the connection
            belongs to the request after it, and the record is stored."""
            a = ConfluentAdapter(cluster.bootstrap)
            ctx = checks.Ctx(cluster.kind, a)
            topic, _ = ctx.topic("malformed-acks0", 1)
            val = value(topic + "/acks0", 100)
            s = conn()
            try:
                s.sendall(produce_v3(topic, [(0, record_batch(b"a0", val,
                                                              int(time.time() * 1000)))],
                                     acks=0, corr=50) + request(18, 0, 51, b""))
                resp = recv_frame(s, 30)
            finally:
                s.close()
            expect_eq(struct.unpack(">i", resp[:4])[0], 51,
                      "correlation id of the first response after an acks=0 Produce")
            got = a.consume(topic, 0, "beginning", 1, 30)
            expect(len(got) == 1 and got[0]["value"] == val,
                   "the acks=0 record did not read back: %s" % got)

        rep.run("acks0-no-response", acks0_order)

        def unknown_api_versions_version():
            """ApiVersions at a version the server does not know: a v0 body with
            UNSUPPORTED_VERSION (35) and the API list, so the client can retry lower."""
            s = conn()
            try:
                s.sendall(request(18, 99, 9, b""))
                resp = recv_frame(s, 10)
            finally:
                s.close()
            corr, err, n = struct.unpack(">ihi", resp[:10])
            expect_eq(corr, 9, "correlation id")
            expect_eq(err, 35, "error code for ApiVersions v99 (UNSUPPORTED_VERSION)")
            expect(n > 0, "ApiVersions v99 answer lists no APIs")

        rep.run("api-versions-v99", unknown_api_versions_version)

        def still_serving():
            # A client stuck halfway through a frame must not hold anyone else up.
            stuck = conn()
            stuck.sendall(request(18, 0, 3, b"\x00" * 80)[:30])
            s = conn()
            try:
                api_versions(s)
            finally:
                s.close()
            api_versions(bystander, 8)
            a = ConfluentAdapter(cluster.bootstrap)
            ctx = checks.Ctx(cluster.kind, a)
            topic, _ = ctx.topic("malformed-after", 1)
            recs = checks.gen_records(a, topic, 1, 10)
            checks.verify_acks(recs, a.produce(topic, recs), base={})
            checks.read_back(ctx, topic, recs)
            stuck.close()

        rep.run("still-serving", still_serving)
        bystander.close()
        rep.keep_on_failure(cluster)
    return rep.summary()


if __name__ == "__main__":
    sys.exit(main())
