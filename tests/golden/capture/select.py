#!/usr/bin/python3
"""Picks golden frames out of a capture run and writes tests/golden/frames/.

For each client (WORK/<client>/raw/log.tsv, written by capture_broker.py) it keeps, in capture
order, the first request of each (api key, version, variant); the variant separates requests of
the same version that exercise different shapes (Produce by codec and idempotent/transactional
batch, FindCoordinator by key type, JoinGroup with and without a member id, Metadata for all
topics or named ones). Frames go to FRAMES/<client>/<NNN>-<api>-v<ver>.bin and are listed in
FRAMES/MANIFEST.tsv (client, file, api_key, api_version, note). A Produce note reads
"topic=T codec=C records=N [idempotent] [transactional]"; tests/unit/protocol/test_golden_batches.c
relies on that and on the capture drivers' payloads: key k<i>, value v<i>-<codec>.
"""

import argparse
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kspec  # noqa: E402

CLIENTS = ["kcat", "confluent", "kafka-python", "kafkajs", "platformatic"]
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


def parse_request(spec, frame):
    r = kspec.Reader(frame, 4)
    key, ver, _corr = r.unpack(">h"), r.unpack(">h"), r.unpack(">i")
    n = r.unpack(">h")
    if n > 0:
        r.take(n)
    if spec.flexible(key, ver):
        for _ in range(r.uvarint()):
            r.uvarint()
            r.take(r.uvarint())
    body, end = kspec.decode(spec.requests[key], frame, ver, r.pos)
    if end != len(frame):
        raise ValueError("trailing bytes in frame")
    return key, ver, body


def batches(records):
    pos = 0
    while pos + 61 <= len(records):
        blen = struct.unpack(">i", records[pos + 8:pos + 12])[0]
        b = records[pos:pos + 12 + blen]
        attrs = struct.unpack(">h", b[21:23])[0]
        pid = struct.unpack(">q", b[43:51])[0]
        count = struct.unpack(">i", b[57:61])[0]
        yield attrs, pid, count
        pos += 12 + blen


def produce_variant(body):
    notes = []
    for td in body["TopicData"]:
        for pd in td["PartitionData"]:
            codecs = set()
            total = 0
            flags = []
            for attrs, pid, count in batches(pd["Records"] or b""):
                codecs.add(CODECS.get(attrs & 7, "codec%d" % (attrs & 7)))
                total += count
                if attrs & 0x10:
                    flags.append("transactional")
                elif pid >= 0:
                    flags.append("idempotent")
            notes.append("topic=%s codec=%s records=%d%s" % (
                td.get("Name") or "(id)", "+".join(sorted(codecs)), total,
                "".join(" " + f for f in sorted(set(flags)))))
    note = "; ".join(notes)
    if body.get("Acks", 1) == 0:
        note += " acks=0"
    return note


def variant(key, ver, body):
    if key == 0:
        return produce_variant(body)
    if key == 10:
        return "key_type=%d" % body.get("KeyType", 0)
    if key == 11:
        return "member_id=" + ("empty" if not body["MemberId"] else "set")
    if key == 3:
        t = body["Topics"]
        return "all topics" if t is None or (ver == 0 and not t) else "%d topic(s)" % len(t)
    if key == 1:
        return "isolation=%d" % body.get("IsolationLevel", 0)
    return ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--frames", required=True)
    args = ap.parse_args()
    spec = kspec.Spec(args.spec)
    names = kspec.api_names(spec)
    rows = []
    for client in CLIENTS:
        log = os.path.join(args.work, client, "raw", "log.tsv")
        if not os.path.exists(log):
            print("select: no capture for %s, keeping its old frames" % client)
            old = os.path.join(args.frames, "MANIFEST.tsv")
            if os.path.exists(old):
                with open(old) as f:
                    rows += [ln.rstrip("\n").split("\t") for ln in f
                             if ln.startswith(client + "\t")]
            continue
        outdir = os.path.join(args.frames, client)
        os.makedirs(outdir, exist_ok=True)
        for fn in os.listdir(outdir):
            if fn.endswith(".bin"):
                os.unlink(os.path.join(outdir, fn))
        seen = set()
        n = 0
        with open(log) as f:
            for line in f:
                raw = line.split("\t")[0]
                with open(os.path.join(args.work, client, "raw", raw), "rb") as g:
                    frame = g.read()
                key, ver, body = parse_request(spec, frame)
                v = variant(key, ver, body)
                if (key, ver, v) in seen:
                    continue
                seen.add((key, ver, v))
                n += 1
                name = "%03d-%s-v%d.bin" % (n, names[key], ver)
                with open(os.path.join(outdir, name), "wb") as g:
                    g.write(frame)
                rows.append([client, "%s/%s" % (client, name), str(key), str(ver), v])
        print("select: %s: %d frames" % (client, n))
    with open(os.path.join(args.frames, "MANIFEST.tsv"), "w") as f:
        f.write("# client\tfile\tapi_key\tapi_version\tnote\n")
        for r in rows:
            f.write("\t".join(r) + "\n")
    print("select: %d frames in total" % len(rows))


if __name__ == "__main__":
    main()
