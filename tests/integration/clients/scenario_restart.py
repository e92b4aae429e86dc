#!/usr/bin/python3
"""Scenario: data survives restarts of `runnel dev`.

1. Produce (idempotent confluent-kafka producer) keyed records with headers to 3 partitions and
   check them; stop `runnel dev` with SIGTERM (must exit 0) and start it again on the same data
   directory; every record must read back exactly, and new records must continue the offsets.
2. Produce more, wait for every acknowledgement, SIGKILL `runnel dev`, start it again: every
   acknowledged record must be there, exactly once, at its acknowledged offset.
3. kafka-python and kcat read the same data back after the restarts (a second and third client).

  scenario_restart.py --runnel build/x/agent/runnel      (the real test)
  scenario_restart.py --cluster mock                     (driver validation: restarts are no-ops)
"""

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checks  # noqa: E402
from adapters import ConfluentAdapter, KafkaPythonAdapter  # noqa: E402
from common import DevCluster, MockCluster, Reporter, expect_eq  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cluster", choices=["dev", "mock"], default="dev")
    ap.add_argument("--runnel")
    ap.add_argument("--mock-binary")
    args = ap.parse_args()
    if args.cluster == "dev" and not args.runnel:
        ap.error("--runnel is required with --cluster dev")
    cluster = DevCluster(args.runnel) if args.cluster == "dev" else MockCluster(args.mock_binary)
    rep = Reporter("restart-%s" % args.cluster)
    state = {}

    def restart(sig):
        if args.cluster == "mock":
            return
        if sig == signal.SIGTERM:
            cluster.restart()
        else:
            cluster.stop(sig)
            cluster.start()

    with cluster:
        a = ConfluentAdapter(cluster.bootstrap)
        ctx = checks.Ctx(cluster.kind, a)

        def produce_first():
            topic, n = ctx.topic("rs", 3)
            recs = checks.gen_records(a, topic, min(n, 3), 50)
            checks.verify_acks(recs, a.produce(topic, recs, idempotent=True), base={})
            checks.read_back(ctx, topic, recs)
            state.update(topic=topic, recs=recs, parts=min(n, 3))

        def after_sigterm():
            restart(signal.SIGTERM)
            a2 = ConfluentAdapter(cluster.bootstrap)
            ctx.a = a2
            checks.read_back(ctx, state["topic"], state["recs"])
            more = checks.gen_records(a2, state["topic"] + "-more", state["parts"], 30)
            base = {p: 50 for p in range(state["parts"])}
            checks.verify_acks(more, a2.produce(state["topic"], more, idempotent=True), base=base)
            state["recs"] = state["recs"] + more

        def after_sigkill():
            more = checks.gen_records(ctx.a, state["topic"] + "-kill", state["parts"], 40)
            base = {p: 80 for p in range(state["parts"])}
            checks.verify_acks(more, ctx.a.produce(state["topic"], more, idempotent=True),
                               base=base)
            state["recs"] = state["recs"] + more
            restart(signal.SIGKILL)
            ctx.a = ConfluentAdapter(cluster.bootstrap)
            checks.read_back(ctx, state["topic"], sorted(state["recs"], key=lambda r: r["p"]))

        def other_clients():
            kp = KafkaPythonAdapter(cluster.bootstrap)
            for p, want in sorted(checks.by_partition(state["recs"]).items()):
                got = kp.consume(state["topic"], p, "beginning", len(want), 60)
                checks.compare(got, want, "kafka-python %s[%d]" % (state["topic"], p), 0)
                expect_eq(kp.end_offset(state["topic"], p), len(want), "high watermark")

        rep.run("produce", produce_first)
        if "topic" in state:
            rep.run("sigterm-restart", after_sigterm)
            rep.run("sigkill-restart", after_sigkill)
            rep.run("other-client-reads", other_clients)
        rep.keep_on_failure(cluster)
    return rep.summary()


if __name__ == "__main__":
    sys.exit(main())
