#!/usr/bin/python3
"""Runs the client checks (checks.py) with one or more real Kafka clients against a cluster.

  run_clients.py --client confluent [--client kcat ...] --cluster dev --runnel build/x/agent/runnel
  run_clients.py --client all --cluster mock          # validate the driver against the mock
  run_clients.py --client kafkajs --bootstrap 127.0.0.1:9092 --only produce-consume

Prints PASS/FAIL/SKIP per check and "N passed, N failed, N skipped"; exits 1 if any check failed
(or none passed). Only 127.0.0.1 addresses are used when it starts the cluster itself.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checks  # noqa: E402
from adapters import NODE_CLIENTS, PY_ADAPTERS, ConfluentAdapter, make_adapter  # noqa: E402
from common import Reporter, add_cluster_args, make_cluster  # noqa: E402

ALL_CLIENTS = ["kcat", "confluent", "kafka-python", "kafkajs", "platformatic"]


# Checks the mock cannot serve for one client, for reasons outside the driver; validated against
# the capture broker instead (see README.md).
MOCK_GAPS = {
    ("kafkajs", "idempotent"): "kafkajs sends InitProducerId to the controller, and the mock's "
                               "Metadata (v2) names no live controller",
}


def run_client(rep, client, cluster, only, kind):
    try:
        a = make_adapter(client, cluster.bootstrap)
    except Exception as e:
        rep.record("FAIL", "%s/start" % client, "%s: %s" % (type(e).__name__, e))
        return
    # Fixture topics: the client's own admin API; kcat has none, and on the mock topics are made
    # by a metadata request, which confluent-kafka-python can send for one topic.
    fixture = a if a.has_admin and kind != "mock" else ConfluentAdapter(cluster.bootstrap)
    ctx = checks.Ctx(kind, a, fixture)
    try:
        for name, fn in checks.ALL:
            if only and name not in only and not name.startswith("admin-"):
                continue
            if only and name.startswith("admin-") and not any(o.startswith("admin") for o in only):
                continue
            if kind == "mock" and (client, name) in MOCK_GAPS:
                rep.record("SKIP", "%s/%s" % (client, name), MOCK_GAPS[(client, name)])
                continue
            rep.run("%s/%s" % (client, name), fn, ctx)
    finally:
        if hasattr(a, "close"):
            a.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--client", action="append", required=True,
                    choices=ALL_CLIENTS + ["all"])
    ap.add_argument("--only", action="append", default=[],
                    help="run only these checks (admin-* run together)")
    add_cluster_args(ap)
    args = ap.parse_args()
    clients = ALL_CLIENTS if "all" in args.client else args.client
    cluster = make_cluster(args)
    kind = cluster.kind
    rep = Reporter("clients-%s" % kind)
    with cluster:
        print("cluster %s at %s" % (kind, cluster.bootstrap), flush=True)
        for c in clients:
            if kind == "mock" and c == "platformatic":
                rep.record("SKIP", "%s/all" % c, "@platformatic/kafka 1.35 needs Metadata >= 9; "
                           "the mock (librdkafka 2.0.2) has Metadata <= 2")
                continue
            assert c in PY_ADAPTERS or c in NODE_CLIENTS
            run_client(rep, c, cluster, set(args.only), kind)
        rep.keep_on_failure(cluster)
    return rep.summary()


if __name__ == "__main__":
    sys.exit(main())
