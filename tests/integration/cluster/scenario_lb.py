#!/usr/bin/python3
"""Load-balancer mode end to end (issue 6): RGW + `runnel metadata` + three `runnel agent`
processes, each advertising HAProxy's address, and Debian's HAProxy (TCP mode) in front.

Checks:
  one-broker                 every client sees exactly one broker, at HAProxy's address
  via-one-via-another/<c>    client <c> (confluent-kafka-python, kafka-python, kafkajs) creates a
                             topic and produces with HAProxy sending new connections only to
                             agent 1; confluent and kafka-python then read it back (assign(),
                             no group) with new connections sent only to agent 2, and to agent 3:
                             exact bytes, keys, headers, order and offsets; HAProxy's session
                             counters show which agent served each side
  object-blocks-shared       the agents (registered at their listen addresses) know each other;
                             20 objects written through agent 1 and read back exactly through
                             agents 2 and 3: blocks were asked of their owners, agent 1 served
                             the ones it owns from its flush without a store GET, no request to
                             a peer failed over (docs/cluster.md, "Object blocks")
  kill-and-join              an idempotent confluent producer at a steady pace through HAProxy
                             (on agent 1) while a kafka-python consumer reads along (on agent
                             2): SIGKILL agent 1, the producer moves to agent 3; start a fourth
                             agent, send new connections only to it and SIGKILL agent 2, the
                             consumer moves to agent 4 (HAProxy's session counts show each move)
  nothing-lost-nothing-duplicated
                             every acknowledged record present once at its acknowledged offset,
                             order kept, bytes exact, and the concurrent consumer read exactly
                             the same log
  kafkajs-through-kill       kafkajs produces through HAProxy after the kills (on the agents left)

  group-across-agents        a consumer group of confluent, kafka-python and confluent members, each
                             started through a different agent: every partition held, every
                             record consumed (group_check.py)
  readyz-drives-haproxy      HAProxy health-checks GET /readyz: SIGKILL the metadata service and
                             every agent leaves rotation; restart it and they return and serve
  clean-exit                 every agent still running exits 0 on SIGTERM

  scenario_lb.py --runnel build/x/agent/runnel [--seconds 12]
"""

import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "clients"))
sys.path.insert(0, HERE)

import checks  # noqa: E402
import group_check  # noqa: E402
from adapters import ConfluentAdapter, KafkaPythonAdapter, NodeAdapter  # noqa: E402
from cluster import ManyAgents  # noqa: E402
from common import (NODE_DIR, CheckFailed, Reporter, expect, expect_eq, unique,  # noqa: E402
                    value)

PARTS = 3


def make(client, bootstrap):
    if client == "kafkajs":
        return NodeAdapter("kafkajs", bootstrap)
    return {"confluent": ConfluentAdapter, "kafka-python": KafkaPythonAdapter}[client](bootstrap)


def served(cl, before, after):
    """Agents (0-based) whose HAProxy total session count grew."""
    return sorted(i for i in after if after[i]["stot"] > before.get(i, {}).get("stot", 0))


def check_one_broker(cl):
    import confluent_kafka.admin as cka
    md = cka.AdminClient({"bootstrap.servers": cl.bootstrap}).list_topics(timeout=15)
    addrs = sorted("%s:%d" % (b.host, b.port) for b in md.brokers.values())
    expect_eq(addrs, [cl.bootstrap], "brokers in Metadata (confluent)")
    kp = KafkaPythonAdapter(cl.bootstrap)
    adm = kp.admin()
    nodes = adm.describe_cluster()["brokers"]
    expect_eq(sorted("%s:%d" % (b["host"], b["port"]) for b in nodes), [cl.bootstrap],
              "brokers in DescribeCluster (kafka-python)")
    adm.close()


def via_one_via_another(cl, client):
    cl.all_ready()
    cl.only(0)
    a = make(client, cl.bootstrap)
    try:
        topic = unique("lb-" + client)
        s0 = cl.stats()
        err = a.create_topic(topic, PARTS, {})
        expect(err is None, "create topic: %s" % err)
        checks.wait_partitions(a, topic, PARTS)
        recs = checks.gen_records(a, topic, PARTS, 40)
        acks = a.produce(topic, recs)
        checks.verify_acks(recs, acks, base={p: 0 for p in range(PARTS)})
        s1 = cl.stats()
        expect_eq(served(cl, s0, s1), [0], "agents that served the producer")
    finally:
        if hasattr(a, "close"):
            a.close()
    want = checks.by_partition(recs)
    for agent_idx, reader in ((1, ConfluentAdapter), (2, KafkaPythonAdapter)):
        cl.only(agent_idx)
        r = reader(cl.bootstrap)
        s2 = cl.stats()
        for p in range(PARTS):
            got = r.consume(topic, p, "beginning", len(want[p]), 30)
            checks.compare(got, want[p], "%s via agent %d, partition %d"
                           % (r.name, agent_idx + 1, p), first_offset=0)
        s3 = cl.stats()
        expect_eq(served(cl, s2, s3), [agent_idx], "agents that served %s" % r.name)
    cl.all_ready()


def blocks_shared(cl):
    """Object blocks (docs/cluster.md): the agents register at their listen addresses and find
    each other; 20 objects written through agent 1 are read back through agents 2 and 3, which
    ask the blocks' owners; agent 1 kept the blocks it owns from the flush and read nothing from
    the store, and no request to a peer failed over."""
    cl.all_ready()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(cl.metrics(i).get("runnel_agent_peers", 0) == 3 for i in range(3)):
            break
        time.sleep(0.2)
    for i in range(3):
        expect_eq(cl.metrics(i).get("runnel_agent_peers", 0), 3, "agent %d's peers" % (i + 1))
    time.sleep(1.0)  # one more heartbeat everywhere: the same owners on every agent
    names = ("runnel_agent_cache_store_gets_total", "runnel_agent_peer_blocks_asked_total",
             "runnel_agent_peer_failovers_total", "runnel_agent_peer_blocks_served_total")
    before = [cl.metrics(i) for i in range(3)]
    cl.only(0)
    a = ConfluentAdapter(cl.bootstrap)
    topic = unique("lbblocks")
    err = a.create_topic(topic, PARTS, {})
    expect(err is None, "create topic: %s" % err)
    checks.wait_partitions(a, topic, PARTS)
    recs = []
    for n in range(20):  # one produce call per object: each waits for its flush and commit
        batch = checks.gen_records(a, "%s/%d" % (topic, n), PARTS, 3)
        acks = a.produce(topic, batch)
        expect(len(acks) == len(batch) and all(x is not None for x in acks),
               "every record of produce call %d acknowledged" % n)
        recs += batch
    want = checks.by_partition(recs)
    for agent_idx in (1, 2):
        cl.only(agent_idx)
        r = ConfluentAdapter(cl.bootstrap)
        for p in range(PARTS):
            got = r.consume(topic, p, "beginning", len(want[p]), 30)
            checks.compare(got, want[p], "blocks via agent %d, partition %d"
                           % (agent_idx + 1, p), first_offset=0)
    after = [cl.metrics(i) for i in range(3)]
    d = [{n: after[i].get(n, 0) - before[i].get(n, 0) for n in names} for i in range(3)]
    print("blocks: %s" % d, flush=True)
    expect_eq(d[0]["runnel_agent_cache_store_gets_total"], 0, "store GETs of the writing agent")
    expect(d[1]["runnel_agent_peer_blocks_asked_total"] +
           d[2]["runnel_agent_peer_blocks_asked_total"] > 0, "blocks asked of their owners")
    expect_eq(sum(x["runnel_agent_peer_failovers_total"] for x in d), 0, "peer failovers")
    expect_eq(sum(x["runnel_agent_peer_blocks_served_total"] for x in d),
              sum(x["runnel_agent_peer_blocks_asked_total"] for x in d), "blocks served")
    cl.all_ready()


class Stream:
    """An idempotent confluent producer at a steady pace; acked[seq] = (partition, offset)."""

    def __init__(self, cl, topic, rate, extra=None):
        import confluent_kafka as ck
        self.ck = ck
        self.topic = topic
        self.rate = rate
        self.acked = {}
        self.failed = {}
        self.prod = ck.Producer({"bootstrap.servers": cl.bootstrap, "enable.idempotence": True,
                                 "acks": "all", "linger.ms": 5, "message.timeout.ms": 90000,
                                 "retry.backoff.ms": 100, "reconnect.backoff.max.ms": 500,
                                 **(extra or {})})
        self.seq = 0
        self.t0 = time.monotonic()

    def val(self, seq):
        return value("%s/%d" % (self.topic, seq), 200)

    def on_delivery(self, err, msg):
        seq = int(msg.key()[1:])
        if err is not None:
            self.failed[seq] = str(err)
        else:
            self.acked[seq] = (msg.partition(), msg.offset())

    def run_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            while time.monotonic() < self.t0 + self.seq / self.rate:
                self.prod.poll(0.001)
            seq = self.seq
            while True:
                try:
                    self.prod.produce(self.topic, self.val(seq), b"s%d" % seq,
                                      partition=seq % PARTS, headers=[("seq", str(seq).encode())],
                                      on_delivery=self.on_delivery)
                    break
                except BufferError:
                    self.prod.poll(0.1)
            self.seq += 1

    def flush(self):
        left = self.prod.flush(120)
        expect_eq(left, 0, "records unacknowledged 120 s after the last produce")


def read_along(bootstrap, topic, stop, out, errors, extra=None):
    """kafka-python consumer (assign, no group) reading every partition until `stop` is set and
    it has caught up with `out['target']`."""
    try:
        import kafka
        c = kafka.KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                group_id=None, request_timeout_ms=30000,
                                reconnect_backoff_max_ms=500, **(extra or {}))
        tps = [kafka.TopicPartition(topic, p) for p in range(PARTS)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        deadline = None
        while True:
            for tp, ms in c.poll(timeout_ms=300).items():
                for m in ms:
                    out.setdefault(tp.partition, []).append((m.offset, m.key, m.value))
            if stop.is_set():
                deadline = deadline or time.monotonic() + 60
                target = out.get("target")
                if target is not None and all(
                        len(out.get(p, [])) >= target[p] for p in range(PARTS)):
                    break
                if time.monotonic() > deadline:
                    errors.append("concurrent consumer did not catch up within 60 s: %s of %s"
                                  % ({p: len(out.get(p, [])) for p in range(PARTS)}, target))
                    break
        c.close()
    except Exception as e:  # reported by the check
        errors.append("%s: %s" % (type(e).__name__, e))


def verify_log(cl, st, along):
    """Reads every partition with confluent and checks it against the acknowledgements and the
    concurrent consumer's view."""
    ck = st.ck
    c = ck.Consumer({"bootstrap.servers": cl.bootstrap, "group.id": unique("v"),
                     "enable.auto.commit": False, "enable.partition.eof": True})
    seen = {}
    log = {}
    try:
        for p in range(PARTS):
            lo, hi = c.get_watermark_offsets(ck.TopicPartition(st.topic, p), timeout=30)
            expect_eq(lo, 0, "log start of partition %d" % p)
            c.assign([ck.TopicPartition(st.topic, p, ck.OFFSET_BEGINNING)])
            want_off, last = 0, -1
            log[p] = []
            deadline = time.monotonic() + 60
            while want_off < hi:
                expect(time.monotonic() < deadline, "partition %d: read %d of %d in 60 s"
                       % (p, want_off, hi))
                m = c.poll(0.5)
                if m is None or (m.error() and m.error().code() == ck.KafkaError._PARTITION_EOF):
                    continue
                expect(not m.error(), "consume: %s" % m.error())
                expect_eq(m.offset(), want_off, "next offset in partition %d" % p)
                seq = int(m.key()[1:])
                where = "partition %d offset %d (seq %d)" % (p, m.offset(), seq)
                expect(seq not in seen, "%s duplicates seq %d" % (where, seq))
                expect(seq > last, "%s after seq %d: out of order" % (where, last))
                expect_eq(seq % PARTS, p, where + ": partition")
                expect(m.value() == st.val(seq), where + ": value bytes differ")
                if seq in st.acked:
                    expect_eq((p, m.offset()), st.acked[seq], "acknowledged position of seq %d"
                              % seq)
                seen[seq] = (p, m.offset())
                log[p].append((m.offset(), m.key(), m.value()))
                last = seq
                want_off += 1
    finally:
        c.close()
    lost = sorted(s for s in st.acked if s not in seen)
    expect(not lost, "%d acknowledged records lost, first %s" % (len(lost), lost[:10]))
    for p in range(PARTS):
        got = along.get(p, [])
        expect_eq(len(got), len(log[p]), "records the concurrent consumer read in partition %d"
                  % p)
        expect(got == log[p], "concurrent consumer's partition %d differs from the log" % p)
    return len(seen)


def scur(cl, i):
    return cl.stats().get(i, {}).get("scur", 0)


def kill_and_join(cl, args, state):
    topic = unique("lb-kill")
    ConfluentAdapter(cl.bootstrap).create_topic(topic, PARTS, {})
    cl.only(0)
    st = Stream(cl, topic, args.rate)
    state["stream"] = st
    st.run_for(1.0)  # the producer's connections sit on agent 1
    expect(scur(cl, 0) > 0, "producer has no session on agent 1: %s" % cl.stats())
    cl.only(1)
    stop = threading.Event()
    along, errors = {}, []
    th = threading.Thread(target=read_along, args=(cl.bootstrap, topic, stop, along, errors),
                          daemon=True)
    th.start()
    state["along"] = (th, along, errors)
    events = []
    try:
        st.run_for(1.0)  # the consumer's connection sits on agent 2
        expect(scur(cl, 1) > 0, "consumer has no session on agent 2: %s" % cl.stats())
        cl.only(2)
        st.run_for(args.seconds / 4)
        cl.kill(0)
        events.append("SIGKILL agent 1 (producer's)")
        st.run_for(args.seconds / 4)
        expect(scur(cl, 2) > 0, "producer did not move to agent 3: %s" % cl.stats())
        cl.add_agent()  # the fourth agent joins under load
        cl.only(3)
        cl.wait_up([3])
        events.append("agent 4 joined")
        st.run_for(args.seconds / 8)
        cl.kill(1)
        events.append("SIGKILL agent 2 (consumer's)")
        st.run_for(args.seconds / 4)
        expect(scur(cl, 3) > 0, "consumer did not move to agent 4: %s" % cl.stats())
        cl.only(2, 3)
        st.run_for(args.seconds / 8)
        st.flush()
    finally:
        stop.set()
    late = [s for s in st.acked if s >= 3 * st.seq // 4]
    expect(late, "nothing acknowledged after the second kill")
    print("produced %d: %d acknowledged, %d failed; %s" % (st.seq, len(st.acked), len(st.failed),
                                                          "; ".join(events)), flush=True)


def nothing_lost(cl, state):
    st = state["stream"]
    th, along, errors = state["along"]
    hi = {}
    import confluent_kafka as ck
    c = ck.Consumer({"bootstrap.servers": cl.bootstrap, "group.id": unique("hw")})
    for p in range(PARTS):
        hi[p] = c.get_watermark_offsets(ck.TopicPartition(st.topic, p), timeout=30)[1]
    c.close()
    along["target"] = hi
    th.join(90)
    expect(not th.is_alive(), "concurrent consumer still running")
    expect(not errors, "concurrent consumer: %s" % "; ".join(errors))
    n = verify_log(cl, st, along)
    print("verified %d records, %d acknowledged" % (n, len(st.acked)), flush=True)


def kafkajs_after(cl):
    a = NodeAdapter("kafkajs", cl.bootstrap)
    try:
        topic = unique("lb-js")
        expect(a.create_topic(topic, PARTS, {}) is None, "kafkajs create topic")
        recs = checks.gen_records(a, topic, PARTS, 30)
        acks = a.produce(topic, recs, idempotent=True)
        checks.verify_acks(recs, acks, base={p: 0 for p in range(PARTS)})
    finally:
        a.close()
    r = ConfluentAdapter(cl.bootstrap)
    want = checks.by_partition(recs)
    for p in range(PARTS):
        checks.compare(r.consume(topic, p, "beginning", len(want[p]), 30), want[p],
                       "partition %d" % p, first_offset=0)


def readiness(cl):
    """HAProxy checks GET /readyz: without the metadata service every agent reports not ready and
    HAProxy takes it out; once the service is back they return and serve."""
    cl.all_ready()
    live = [i for i, a in enumerate(cl.agents) if a.proc is not None]
    cl.wait_up(live)
    cl.meta.kill()
    cl.meta.wait(timeout=10)
    deadline = time.monotonic() + 20
    while True:
        st = cl.stats()
        if all(st[i]["status"].startswith("DOWN") for i in live):
            break
        expect(time.monotonic() < deadline, "agents still in rotation without the metadata "
               "service: %s" % st)
        time.sleep(0.2)
    cl.start_metadata()
    cl.wait_up(live, timeout=30)
    a = ConfluentAdapter(cl.bootstrap)
    topic = unique("lb-ready")
    expect(a.create_topic(topic, 1, {}) is None, "create topic after the metadata restart")
    recs = checks.gen_records(a, topic, 1, 20)
    checks.verify_acks(recs, a.produce(topic, recs), base={0: 0})
    checks.compare(a.consume(topic, 0, "beginning", 20, 30), recs, "after readiness returned",
                   first_offset=0)


def group_lb(cl):
    """A consumer group whose three members (confluent, kafka-python, confluent) start through
    different live agents in turn (HAProxy's runtime API; after kill-and-join agents 3 and 4),
    sharing one topic (group_check.py)."""
    cl.all_ready()
    live = [i for i, a in enumerate(cl.agents) if a.proc is not None][:3]

    def only(i):
        if i is None:
            cl.all_ready()
        else:
            cl.only(live[i % len(live)])
    group_check.group_across_agents([cl.bootstrap] * 3, cl.tmp, before_start=only)


def clean_exit(cl):
    codes = cl.stop_agents()
    expect(codes and all(c == 0 for c in codes.values()),
           "agents' exit statuses on SIGTERM (want 0): %s" % codes)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runnel", required=True)
    ap.add_argument("--seconds", type=float, default=12)
    ap.add_argument("--rate", type=int, default=400, help="records per second")
    ap.add_argument("--client", action="append", default=[],
                    help="confluent, kafka-python, kafkajs (default: all three)")
    args = ap.parse_args()
    clients = args.client or ["confluent", "kafka-python", "kafkajs"]
    rep = Reporter("cluster-lb")
    if "kafkajs" in clients and not os.path.isdir(os.path.join(NODE_DIR, "node_modules",
                                                               "kafkajs")):
        clients.remove("kafkajs")
        rep.record("SKIP", "kafkajs", "tests/node/node_modules missing: run deploy/install-deps.sh")
    with ManyAgents(args.runnel, mode="lb") as cl:
        print("HAProxy at %s, agents %s" % (cl.bootstrap, [a.addr for a in cl.agents[:3]]),
              flush=True)
        rep.run("one-broker", check_one_broker, cl)
        for c in clients:
            rep.run("via-one-via-another/%s" % c, via_one_via_another, cl, c)
        rep.run("object-blocks-shared", blocks_shared, cl)
        state = {}
        if rep.run("kill-and-join", kill_and_join, cl, args, state):
            rep.run("nothing-lost-nothing-duplicated", nothing_lost, cl, state)
        if "kafkajs" in clients:
            cl.all_ready()
            rep.run("kafkajs-through-kill", kafkajs_after, cl)
        rep.run("group-across-agents", group_lb, cl)
        rep.run("readyz-drives-haproxy", readiness, cl)
        rep.run("clean-exit", clean_exit, cl)
        rep.keep_on_failure(cl)
    return rep.summary()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as e:
        print("FAIL %s" % e)
        sys.exit(1)
