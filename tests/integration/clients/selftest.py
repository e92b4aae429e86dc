#!/usr/bin/python3
"""Shows that every client check can fail: runs each check of checks.py against an in-memory
fake adapter, first faithful (every check must pass), then with one fault at a time (a flipped
byte, a lost, duplicated or reordered record, a lost header, a null turned into an empty value,
wrong offsets or timestamps lookups, admin calls that do nothing). Each fault must make the
checks it concerns fail. No network; runs in a second.
"""

import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checks  # noqa: E402
from common import Reporter  # noqa: E402


class FakeAdapter:
    name = "fake"
    codecs = set(checks.CODECS)
    has_admin = True
    has_idempotence = True
    binary_safe = True
    per_record_headers = True
    per_record_ts = True
    dup_headers = True

    def __init__(self, fault=None):
        self.fault = fault
        self.topics = {}  # name -> {"parts": [[record...]], "configs": {}}

    def _t(self, name, create=True):
        if name not in self.topics and create:
            self.topics[name] = {"parts": [[] for _ in range(3)], "configs": {
                "cleanup.policy": "delete", "retention.ms": "604800000"}}
        return self.topics.get(name)

    def create_topic(self, name, partitions, configs):
        if name in self.topics:
            return "TOPIC_ALREADY_EXISTS"
        self.topics[name] = {"parts": [[] for _ in range(partitions)],
                             "configs": {"cleanup.policy": "delete",
                                         "retention.ms": "604800000"}}
        if self.fault != "configs-ignored":
            self.topics[name]["configs"].update(configs)
        return None

    def delete_topic(self, name):
        if name not in self.topics:
            return "UNKNOWN_TOPIC_OR_PARTITION"
        if self.fault != "delete-ignored":
            del self.topics[name]
        return None

    def create_partitions(self, name, total):
        t = self._t(name, False)
        if t is None:
            return "UNKNOWN_TOPIC_OR_PARTITION"
        if total <= len(t["parts"]):
            return "INVALID_PARTITIONS" if self.fault != "shrink-accepted" else None
        if self.fault != "partitions-ignored":
            t["parts"] += [[] for _ in range(total - len(t["parts"]))]
        return None

    def describe_configs(self, name):
        return dict(self._t(name, False)["configs"])

    def alter_configs(self, name, configs):
        if self.fault != "configs-ignored":
            self._t(name, False)["configs"].update(configs)
        return None

    def partitions(self, name):
        t = self._t(name, False)
        return None if t is None else len(t["parts"])

    def touch_topic(self, name):
        self._t(name)

    def probe_no_create(self, name):
        if self.fault == "auto-create-always":
            self._t(name)

    def produce(self, topic, records, codec=None, idempotent=False):
        t = self._t(topic)
        acks = []
        for r in records:
            part = t["parts"][r["p"]]
            rec = dict(copy.deepcopy(r), offset=len(part))
            if rec["ts"] is None or (t["configs"].get("message.timestamp.type") ==
                                     "LogAppendTime" and self.fault != "ignore-log-append"):
                rec["ts"] = int(time.time() * 1000)
            part.append(rec)
            if self.fault == "duplicate" and len(part) == 2:
                part.append(dict(copy.deepcopy(rec), offset=len(part)))
            acks.append((r["p"], rec["offset"]))
        if self.fault == "ack-gap" and acks:
            acks[-1] = (acks[-1][0], acks[-1][1] + 1)
        return acks

    def _out(self, recs):
        recs = copy.deepcopy(recs)
        f = self.fault
        if not recs:
            return recs
        if f == "flip-byte":
            for r in recs:
                if r["value"]:
                    v = bytearray(r["value"])
                    v[len(v) // 2] ^= 1
                    r["value"] = bytes(v)
                    break
        elif f == "lose-record":
            del recs[len(recs) // 2]
        elif f == "reorder" and len(recs) > 2:
            recs[0], recs[1] = recs[1], recs[0]
        elif f == "lose-header":
            for r in recs:
                if r["headers"]:
                    r["headers"] = r["headers"][:-1]
                    break
        elif f == "null-to-empty":
            for r in recs:
                if r["value"] is None:
                    r["value"] = b""
        elif f == "key-changed":
            recs[-1]["key"] = b"other"
        return recs

    def consume(self, topic, partition, start, count, timeout):
        part = self._t(topic)["parts"][partition]
        off = 0 if start == "beginning" else start
        return self._out([r for r in part if r["offset"] >= off][:count])

    def consume_from_end(self, topic, partition, count, then, timeout):
        end = len(self._t(topic)["parts"][partition])
        if self.fault == "end-is-beginning":
            end = 0
        then()
        return self.consume(topic, partition, end, count, timeout)

    def end_offset(self, topic, partition):
        n = len(self._t(topic)["parts"][partition])
        return n + 1 if self.fault == "hwm-off" else n

    def offset_for_time(self, topic, partition, ts):
        if self.fault == "time-lookup-wrong":
            return 0
        for r in self._t(topic)["parts"][partition]:
            if r["ts"] >= ts:
                return r["offset"]
        return -1


# fault -> checks that must fail with it (others may fail too)
FAULTS = {
    "flip-byte": ["produce-consume", "codec-gzip", "large-values", "idempotent", "from-end"],
    "lose-record": ["produce-consume", "codec-zstd", "idempotent", "from-timestamp"],
    "duplicate": ["produce-consume", "idempotent", "auto-create"],
    "reorder": ["produce-consume", "codec-lz4", "from-end"],
    "lose-header": ["produce-consume", "idempotent"],
    "null-to-empty": ["produce-consume"],
    "key-changed": ["produce-consume", "large-values", "from-timestamp"],
    "ack-gap": ["produce-consume", "codec-snappy"],
    "hwm-off": ["produce-consume", "auto-create"],
    "end-is-beginning": ["from-end"],
    "time-lookup-wrong": ["from-timestamp"],
    "configs-ignored": ["admin-describe-configs", "admin-alter-configs"],
    "partitions-ignored": ["admin-create-partitions"],
    "shrink-accepted": ["admin-create-partitions"],
    "delete-ignored": ["admin-delete"],
    "auto-create-always": ["no-auto-create"],
    "ignore-log-append": ["log-append-time"],
}


def run(fault):
    a = FakeAdapter(fault)
    ctx = checks.Ctx("fake", a, patience=0.3)
    results = {}
    for name, fn in checks.ALL:
        try:
            fn(ctx)
            results[name] = "pass"
        except checks.Skip:
            results[name] = "skip"
        except checks.CheckFailed as e:
            results[name] = "fail: %s" % e
    return results


def main():
    rep = Reporter("clients-selftest")
    clean = run(None)

    def faithful():
        bad = {k: v for k, v in clean.items() if v != "pass"}
        checks.expect(not bad, "checks fail against a faithful fake: %s" % bad)
    rep.run("faithful", faithful)
    for fault, must_fail in FAULTS.items():
        def one(fault=fault, must_fail=must_fail):
            res = run(fault)
            missed = [c for c in must_fail if not res[c].startswith("fail")]
            checks.expect(not missed, "fault %s went unnoticed by %s" % (fault, missed))
        rep.run("fault-" + fault, one)
    return rep.summary()


if __name__ == "__main__":
    sys.exit(main())
