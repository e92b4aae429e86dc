#!/usr/bin/python3
"""Scenario: SIGKILL of the agent and of the metadata service during production loses nothing
that was acknowledged and duplicates nothing.

With RGW + `runnel metadata` + `runnel agent` (tests/integration/lib/rgw.sh), an idempotent
confluent-kafka producer sends numbered records (key s<seq>, header seq, deterministic 200-byte
value) to 3 partitions at a steady pace for --seconds. During that: SIGKILL the agent and start it
again; later SIGKILL the metadata service and start it again; later SIGKILL both. Delivery reports
say which records were acknowledged, at which partition and offset. Then every partition is read
from the beginning to its high watermark and checked:
  - every acknowledged record is there, at its acknowledged partition and offset, byte for byte;
  - no record appears twice (idempotence across the crashes);
  - within a partition, sequence numbers only grow (order kept), offsets have no holes;
  - anything present was really produced (its bytes match its sequence number).
Records whose delivery failed may be present or absent, but at most once.

  scenario_crash.py --runnel build/x/agent/runnel     (the real test)
  scenario_crash.py --cluster mock                    (driver validation: kills are no-ops)
"""

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (CheckFailed, MockCluster, Reporter, SplitCluster, expect, expect_eq,  # noqa
                    unique, value)

PARTS = 3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cluster", choices=["split", "mock"], default="split")
    ap.add_argument("--runnel")
    ap.add_argument("--mock-binary")
    ap.add_argument("--seconds", type=float, default=16)
    ap.add_argument("--rate", type=int, default=1000, help="records per second")
    args = ap.parse_args()
    if args.cluster == "split" and not args.runnel:
        ap.error("--runnel is required with --cluster split")
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient, NewTopic

    cluster = SplitCluster(args.runnel) if args.cluster == "split" else MockCluster(
        args.mock_binary, topics=[])
    rep = Reporter("crash-%s" % args.cluster)
    topic = unique("crash")
    acked = {}   # seq -> (partition, offset)
    failed = {}  # seq -> error
    events = []

    def kill(which):
        if args.cluster == "mock":
            events.append("%s (no-op on the mock)" % which)
            return
        procs = {"agent": [cluster.agent], "metadata": [cluster.meta],
                 "both": [cluster.agent, cluster.meta]}[which]
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)
        time.sleep(1.0)
        if which in ("metadata", "both"):
            cluster.start_metadata()
        if which in ("agent", "both"):
            cluster.start_agent()
        events.append("killed and restarted %s" % which)

    def rec_value(seq, p):
        return value("%s/%d/%d" % (topic, p, seq), 200)

    with cluster:
        def produce():
            if args.cluster != "mock":
                admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
                fs = admin.create_topics([NewTopic(topic, num_partitions=PARTS,
                                                   replication_factor=1)])
                for f in fs.values():
                    f.result(timeout=30)
            prod = ck.Producer({"bootstrap.servers": cluster.bootstrap,
                                "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                "message.timeout.ms": 90000, "retry.backoff.ms": 200})

            def on_delivery(err, msg):
                seq = int(msg.key()[1:])
                if err is not None:
                    failed[seq] = str(err)
                else:
                    acked[seq] = (msg.partition(), msg.offset())

            total = int(args.seconds * args.rate)
            schedule = {total // 4: "agent", total // 2: "metadata", 3 * total // 4: "both"}
            t0 = time.monotonic()
            for seq in range(total):
                while time.monotonic() < t0 + seq / args.rate:
                    prod.poll(0.001)
                p = seq % PARTS
                while True:
                    try:
                        prod.produce(topic, rec_value(seq, p), b"s%d" % seq, partition=p,
                                     headers=[("seq", str(seq).encode())],
                                     on_delivery=on_delivery)
                        break
                    except BufferError:
                        prod.poll(0.1)
                    except ck.KafkaException as e:  # refused locally: never acknowledged
                        failed[seq] = "produce(): %s" % e.args[0].str()
                        break
                if seq in schedule:
                    kill(schedule[seq])
            left = prod.flush(120)
            expect_eq(left, 0, "records still unacknowledged 120 s after the last produce")
            print("produced %d: %d acknowledged, %d failed (%s); %s"
                  % (total, len(acked), len(failed),
                     "; ".join(sorted(set(failed.values()))[:3]), "; ".join(events)), flush=True)
            expect(len(acked) > 0, "nothing was acknowledged")
            late = [s for s in acked if s >= 3 * total // 4]
            expect(late, "nothing produced after the last restart was acknowledged: the "
                   "cluster did not recover")

        def verify():
            c = ck.Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": unique("crash"),
                             "enable.auto.commit": False, "enable.partition.eof": True})
            seen = {}
            try:
                for p in range(PARTS):
                    lo, hi = c.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=30)
                    expect_eq(lo, 0, "log start of partition %d" % p)
                    c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING)])
                    want_off, last_seq = 0, -1
                    deadline = time.monotonic() + 120
                    while want_off < hi:
                        if time.monotonic() > deadline:
                            raise CheckFailed("partition %d: read %d of %d records in 120 s"
                                              % (p, want_off, hi))
                        m = c.poll(0.5)
                        if m is None or (m.error() and m.error().code() ==
                                         ck.KafkaError._PARTITION_EOF):
                            continue
                        if m.error():
                            raise CheckFailed("consume: %s" % m.error())
                        expect_eq(m.offset(), want_off, "next offset in partition %d" % p)
                        seq = int(m.key()[1:])
                        where = "partition %d offset %d (seq %d)" % (p, m.offset(), seq)
                        expect(seq not in seen, "%s duplicates seq %d first seen at %s"
                               % (where, seq, seen.get(seq)))
                        expect(seq > last_seq, "%s after seq %d: out of order" % (where, last_seq))
                        expect_eq(seq % PARTS, p, where + ": partition of the sequence")
                        expect(m.value() == rec_value(seq, p), where + ": value bytes differ")
                        expect_eq(m.headers(), [("seq", str(seq).encode())], where + ": headers")
                        if seq in acked:
                            expect_eq((p, m.offset()), acked[seq], "acknowledged position of "
                                      "seq %d" % seq)
                        seen[seq] = (p, m.offset())
                        last_seq = seq
                        want_off += 1
            finally:
                c.close()
            lost = sorted(s for s in acked if s not in seen)
            expect(not lost, "%d acknowledged records lost, first %s" % (len(lost), lost[:10]))
            print("verified: %d records present, %d acknowledged, %d unacknowledged present"
                  % (len(seen), len(acked), len([s for s in seen if s not in acked])), flush=True)

        if rep.run("produce-through-kills", produce) is not None:
            rep.run("nothing-lost-nothing-duplicated", verify)
        rep.keep_on_failure(cluster)
    return rep.summary()


if __name__ == "__main__":
    sys.exit(main())
