#!/usr/bin/python3
"""Direct mode end to end (issue 6, docs/cluster.md): RGW + `runnel metadata` + three
`runnel agent --cluster-mode direct` processes, each advertising its own address, in zones az1,
az2, az2 (a fourth, az1, joins later). Heartbeat 300 ms, expiry 2 s.

Checks:
  brokers-listed           Metadata (confluent), DescribeCluster (kafka-python, kafkajs) list the
                           three agents, each with its own id and address; a 48-partition topic's
                           leaders are the same whichever agent answers, and every agent leads some
  zone-hint                client.id runnel_az=az2 gets only agents 2 and 3 (confluent, kafka-python,
                           kafkajs), runnel_az=az1 only agent 1, leaders among them; an unknown
                           zone gets everyone
  via-one-via-another/<c>  client <c> bootstraps at agent 1 with runnel_az=az1 (so it talks only to
                           agent 1) and produces; confluent and kafka-python read it back through
                           agent 2 with runnel_az=az2: exact bytes, keys, headers, order, offsets
  kill-and-join            an idempotent confluent producer at a steady pace over 24 partitions
                           and a kafka-python consumer reading along (both refresh metadata every
                           second): SIGKILL agent 2; it leaves Metadata (bounded wait), the
                           partitions of the others keep their leaders; a fourth agent starts, is
                           listed, leads some partitions and gets connections
  nothing-lost-nothing-duplicated
                           every acknowledged record once at its acknowledged offset, order kept,
                           bytes exact, and the concurrent consumer read exactly the same log

  group-across-agents        a consumer group of confluent, kafka-python and confluent members, each
                             bootstrapped at a different agent (group_check.py)
  metadata-restart           SIGKILL the metadata service past the agents' expiry: DescribeCluster
                             (raw request) keeps the last list meanwhile; after the restart every agent registers
                             again under its id and the list is the same
  clean-exit                 every agent still running exits 0 on SIGTERM

  scenario_direct.py --runnel build/x/agent/runnel [--seconds 12]
"""

import argparse
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "clients"))
sys.path.insert(0, HERE)

import checks  # noqa: E402
import group_check  # noqa: E402
from adapters import ConfluentAdapter, KafkaPythonAdapter, NodeAdapter  # noqa: E402
from cluster import SESSION_MS, ManyAgents, describe_cluster  # noqa: E402
from common import (NODE_DIR, CheckFailed, Reporter, expect, expect_eq, unique,  # noqa: E402
                    value)
from scenario_lb import Stream, read_along, verify_log  # noqa: E402

ZONES = ["az1", "az2", "az2", "az1"]


def md(bootstrap, client_id=None, topic=None):
    """(sorted [(id, 'host:port')], {partition: leader}) from a confluent Metadata request."""
    import confluent_kafka.admin as cka
    conf = {"bootstrap.servers": bootstrap}
    if client_id:
        conf["client.id"] = client_id
    m = cka.AdminClient(conf).list_topics(timeout=15)
    brokers = sorted((b.id, "%s:%d" % (b.host, b.port)) for b in m.brokers.values())
    leaders = {}
    if topic is not None and topic in m.topics:
        leaders = {p: pm.leader for p, pm in m.topics[topic].partitions.items()}
    return brokers, leaders


def live(cl):
    return [a for a in cl.agents if a.proc is not None]


def wait_brokers(cl, want_addrs, timeout=None, client_id=None):
    """Waits (bounded) until Metadata from a live agent lists exactly want_addrs."""
    timeout = timeout or (SESSION_MS / 1000.0 + 10)
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = md(live(cl)[0].addr, client_id)[0]
        if sorted(a for _, a in got) == sorted(want_addrs):
            return got
        time.sleep(0.2)
    raise CheckFailed("Metadata lists %s, want %s (waited %.0f s)" % (got, sorted(want_addrs),
                                                                     timeout))


def check_brokers(cl, state):
    addrs = [a.addr for a in cl.agents[:3]]
    got = wait_brokers(cl, addrs)
    ids = [i for i, _ in got]
    expect_eq(len(set(ids)), 3, "distinct node ids")
    kp = KafkaPythonAdapter(cl.agents[1].addr)
    nodes = kp.admin().describe_cluster()["brokers"]
    kp.admin().close()
    expect_eq(sorted((b["node_id"], "%s:%d" % (b["host"], b["port"])) for b in nodes), got,
              "brokers in DescribeCluster (kafka-python)")
    topic = unique("direct-spread")
    err = ConfluentAdapter(cl.agents[0].addr).create_topic(topic, 48, {})
    expect(err is None, "create topic: %s" % err)
    views = [md(a.addr, topic=topic)[1] for a in cl.agents[:3]]
    expect_eq(len(views[0]), 48, "partitions in Metadata")
    expect(views[0] == views[1] == views[2], "agents disagree on leaders: %s" % views)
    share = {i: sum(1 for v in views[0].values() if v == i) for i in ids}
    expect(all(n > 0 for n in share.values()), "partitions per agent: %s" % share)
    print("leaders per agent over 48 partitions: %s" % share, flush=True)


def check_zone(cl, state):
    a1, a2, a3 = (a.addr for a in cl.agents[:3])
    topic = unique("direct-zone")
    ConfluentAdapter(a1).create_topic(topic, 12, {})
    b, leaders = md(a1, "app,runnel_az=az2", topic)
    expect_eq(sorted(x for _, x in b), sorted([a2, a3]), "confluent runnel_az=az2 brokers")
    zone_ids = {i for i, _ in b}
    expect(set(leaders.values()) <= zone_ids, "leaders %s outside zone az2" % leaders)
    b, leaders = md(a3, "runnel_az=az1", topic)
    expect_eq([x for _, x in b], [a1], "confluent runnel_az=az1 brokers")
    expect_eq(set(leaders.values()), {b[0][0]}, "leaders for runnel_az=az1")
    b, _ = md(a1, "runnel_az=nowhere")
    expect_eq(len(b), 3, "brokers for a zone with no agent")
    kp = KafkaPythonAdapter(a1, client_id="runnel_az=az2")
    nodes = kp.admin().describe_cluster()["brokers"]
    kp.admin().close()
    expect_eq(sorted("%s:%d" % (n["host"], n["port"]) for n in nodes), sorted([a2, a3]),
              "kafka-python runnel_az=az2 brokers")
    if state.get("kafkajs"):
        js = NodeAdapter("kafkajs", a1, client_id="runnel_az=az2")
        try:
            got = sorted("%s:%d" % (h, p) for _, h, p in js.brokers())
        finally:
            js.close()
        expect_eq(got, sorted([a2, a3]), "kafkajs runnel_az=az2 brokers")


def make(client, bootstrap, client_id):
    if client == "kafkajs":
        return NodeAdapter("kafkajs", bootstrap, client_id=client_id)
    return {"confluent": ConfluentAdapter,
            "kafka-python": KafkaPythonAdapter}[client](bootstrap, client_id=client_id)


def via_one_via_another(cl, client):
    a1, a2 = cl.agents[0].addr, cl.agents[1].addr
    a = make(client, a1, "runnel_az=az1")
    try:
        topic = unique("direct-" + client)
        err = a.create_topic(topic, 3, {})
        expect(err is None, "create topic: %s" % err)
        checks.wait_partitions(a, topic, 3)
        recs = checks.gen_records(a, topic, 3, 40)
        acks = a.produce(topic, recs)
        checks.verify_acks(recs, acks, base={p: 0 for p in range(3)})
    finally:
        if hasattr(a, "close"):
            a.close()
    want = checks.by_partition(recs)
    for reader in (ConfluentAdapter, KafkaPythonAdapter):
        r = reader(a2, client_id="runnel_az=az2")
        for p in range(3):
            got = r.consume(topic, p, "beginning", len(want[p]), 30)
            checks.compare(got, want[p], "%s via zone az2, partition %d" % (r.name, p),
                           first_offset=0)


def connections_to(port):
    out = subprocess.run(["ss", "-Htn", "state", "established", "( sport = :%d )" % port],
                         capture_output=True, text=True, timeout=10).stdout
    return len([x for x in out.splitlines() if x.strip()])


PARTS = 24


def kill_and_join(cl, args, state):
    import scenario_lb
    scenario_lb.PARTS = PARTS  # Stream, read_along and verify_log use it
    a1 = cl.agents[0].addr
    topic = unique("direct-kill")
    ConfluentAdapter(a1).create_topic(topic, PARTS, {})
    st = Stream(cl, topic, args.rate, {"topic.metadata.refresh.interval.ms": 1000})
    state["stream"] = st
    stop = threading.Event()
    along, errors = {}, []
    th = threading.Thread(target=read_along, args=(a1, topic, stop, along, errors),
                          kwargs={"extra": {"metadata_max_age_ms": 1000}}, daemon=True)
    th.start()
    state["along"] = (th, along, errors)
    events = []
    try:
        st.run_for(args.seconds / 4)
        before_b, before = md(a1, topic=topic)
        dead_id = [i for i, x in before_b if x == cl.agents[1].addr][0]
        cl.kill(1)
        events.append("SIGKILL agent 2 (id %d)" % dead_id)
        t0 = time.monotonic()
        while True:
            st.run_for(0.2)
            b, after = md(a1, topic=topic)
            if cl.agents[1].addr not in [x for _, x in b]:
                break
            expect(time.monotonic() - t0 < SESSION_MS / 1000.0 + 10,
                   "killed agent still in Metadata: %s" % b)
        events.append("gone from Metadata after %.1f s" % (time.monotonic() - t0))
        for p, lead in before.items():
            if lead != dead_id:
                expect_eq(after[p], lead, "leader of partition %d after agent 2 left" % p)
        expect(dead_id not in after.values(), "dead agent still leads")
        st.run_for(args.seconds / 4)
        cl.add_agent()
        a4 = cl.agents[3]
        b = wait_brokers(cl, [cl.agents[i].addr for i in (0, 2, 3)])
        new_id = [i for i, x in b if x == a4.addr][0]
        events.append("agent 4 (id %d) joined" % new_id)
        _, led = md(a1, topic=topic)
        expect(new_id in led.values(), "agent 4 leads no partition: %s" % led)
        deadline = time.monotonic() + 15
        while connections_to(a4.port) == 0:
            expect(time.monotonic() < deadline, "no client connected to agent 4 within 15 s")
            st.run_for(0.2)
        st.run_for(args.seconds / 4)
        st.flush()
    finally:
        stop.set()
    print("produced %d: %d acknowledged, %d failed; %s" % (st.seq, len(st.acked), len(st.failed),
                                                          "; ".join(events)), flush=True)


def nothing_lost(cl, state):
    import confluent_kafka as ck
    st = state["stream"]
    th, along, errors = state["along"]
    a1 = cl.agents[0].addr
    c = ck.Consumer({"bootstrap.servers": a1, "group.id": unique("hw")})
    along["target"] = {p: c.get_watermark_offsets(ck.TopicPartition(st.topic, p), timeout=30)[1]
                       for p in range(PARTS)}
    c.close()
    th.join(90)
    expect(not th.is_alive(), "concurrent consumer still running")
    expect(not errors, "concurrent consumer: %s" % "; ".join(errors))

    class At:
        bootstrap = a1
    n = verify_log(At, st, along)
    print("verified %d records, %d acknowledged" % (n, len(st.acked)), flush=True)


def metadata_restart(cl):
    """SIGKILL the metadata service for longer than the agents' expiry: agents keep answering
    with their last list meanwhile; after the restart they register again under the same ids."""
    want = [a.addr for a in cl.agents if a.proc is not None]
    before = wait_brokers(cl, want)
    cl.meta.kill()
    cl.meta.wait(timeout=10)
    time.sleep(SESSION_MS / 1000.0 + 1)
    # DescribeCluster needs no topic lookup, so it is answered during the outage (a raw request:
    # client libraries first send Metadata for every topic, which waits for the service, see
    # agent-read-path.md).
    for a in want:
        expect_eq(describe_cluster(a), before, "DescribeCluster from %s while the metadata "
                  "service is down (the last list)" % a)
    cl.start_metadata()
    deadline = time.monotonic() + SESSION_MS / 1000.0 + 15
    while True:  # the replayed registrations expire, then the agents register again
        time.sleep(0.3)
        got = md(want[-1])[0]
        if got == before and all(md(a)[0] == before for a in want):
            break
        expect(time.monotonic() < deadline, "after the restart Metadata lists %s, want %s"
               % (got, before))
    logs = " ".join(open(os.path.join(cl.tmp, f)).read() for f in os.listdir(cl.tmp)
                    if f.startswith("agent") and f.endswith(".log"))
    expect("agent_registration_lost" in logs, "no agent re-registered: the expiry path was not "
           "exercised")


def group_direct(cl):
    """A consumer group whose three members (confluent, kafka-python, confluent) bootstrap at three
    different agents, sharing one topic (group_check.py)."""
    live = [a.addr for a in cl.agents if a.proc is not None]
    group_check.group_across_agents([live[i % len(live)] for i in range(3)], cl.tmp)


def clean_exit(cl):
    codes = cl.stop_agents()
    expect(codes and all(c == 0 for c in codes.values()),
           "agents' exit statuses on SIGTERM (want 0): %s" % codes)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runnel", required=True)
    ap.add_argument("--seconds", type=float, default=12)
    ap.add_argument("--rate", type=int, default=400, help="records per second")
    args = ap.parse_args()
    clients = ["confluent", "kafka-python", "kafkajs"]
    rep = Reporter("cluster-direct")
    state = {"kafkajs": os.path.isdir(os.path.join(NODE_DIR, "node_modules", "kafkajs"))}
    if not state["kafkajs"]:
        clients.remove("kafkajs")
        rep.record("SKIP", "kafkajs", "tests/node/node_modules missing: run deploy/install-deps.sh")
    with ManyAgents(args.runnel, mode="direct", zones=ZONES) as cl:
        print("agents %s" % [a.addr for a in cl.agents[:3]], flush=True)
        if rep.run("brokers-listed", check_brokers, cl, state):
            rep.run("zone-hint", check_zone, cl, state)
            for c in clients:
                rep.run("via-one-via-another/%s" % c, via_one_via_another, cl, c)
            if rep.run("kill-and-join", kill_and_join, cl, args, state):
                rep.run("nothing-lost-nothing-duplicated", nothing_lost, cl, state)
            rep.run("group-across-agents", group_direct, cl)
            rep.run("metadata-restart", metadata_restart, cl)
        rep.run("clean-exit", clean_exit, cl)
        rep.keep_on_failure(cl)
    return rep.summary()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as e:
        print("FAIL %s" % e)
        sys.exit(1)
