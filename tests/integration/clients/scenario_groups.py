"""Consumer groups with real clients (issue 7) against `runnel metadata` + three `runnel agent`s
on a shared file:// bucket. Each group member is its own process (group_worker.py for
confluent-kafka-python and kafka-python, node/group_worker.mjs for kafkajs and
@platformatic/kafka, kcat -G), so members can be killed with SIGKILL. Checks, per client:

  share      three members, each bootstrapped from a different agent, share the six partitions
             with none owned twice; every produced record is consumed once, by its owner
  resume     after the members stop, the committed offsets are the end offsets; records produced
             afterwards are consumed by a new member starting exactly there
  kill       a member killed with SIGKILL has its partitions reassigned to the survivor within
             session timeout (6 s) + 10 s; then a new member triggers a rebalance and the two
             share the partitions
  static     (confluent, @platformatic, kcat: group.instance.id) a static member restarted inside its session
             timeout gets its old assignment back and the other member sees no rebalance
  cooperative (confluent) with cooperative-sticky, a third member takes partitions only from
             the others, who keep the rest
  autocommit members with auto-commit only: the committed offsets reach the end offsets
  admin      the client's admin API lists the group once through each agent, describes it (state, members),
             refuses to delete it while it has members (NON_EMPTY_GROUP) and deletes it after
  restart    the metadata service is restarted: committed offsets are intact
At the end every runnel process must exit 0 on SIGTERM and no log may hold a sanitizer report.

usage: scenario_groups.py --runnel build/x/agent/runnel [--client NAME|all] [--only CHECK]
Every wait is bounded; the whole run for one client takes about a minute.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from common import (HERE, NODE_DIR, CheckFailed, Reporter, Skip, expect, expect_eq, free_port,
                    stop_process, unique, wait_port)

SESSION_MS = 6000
PARTS = 6
CLIENTS = ["confluent", "kafka-python", "kafkajs", "platformatic", "kcat"]


class Cluster:
    """`runnel metadata` and three agents (node ids 1-3) sharing one file:// bucket."""

    def __init__(self, runnel):
        self.runnel = runnel
        self.tmp = tempfile.mkdtemp(prefix="runnel-groups-")
        self.mport = free_port()
        self.aports = [free_port() for _ in range(3)]
        self.bootstraps = ["127.0.0.1:%d" % p for p in self.aports]
        self.meta = None
        self.agents = []
        self.n_logs = 0
        self.keep = False

    def _log(self, name):
        self.n_logs += 1
        return open(os.path.join(self.tmp, "%s-%d.log" % (name, self.n_logs)), "w")

    def start_metadata(self):
        self.meta = subprocess.Popen(
            [self.runnel, "metadata", "--listen", "127.0.0.1:%d" % self.mport, "--data-dir",
             os.path.join(self.tmp, "metadata")],
            stdin=subprocess.DEVNULL, stdout=self._log("metadata"), stderr=subprocess.STDOUT)
        wait_port("127.0.0.1", self.mport, 30, self.meta)

    def restart_metadata(self):
        rc = stop_process(self.meta)
        self.start_metadata()
        return rc

    def __enter__(self):
        os.makedirs(os.path.join(self.tmp, "bucket"))
        self.start_metadata()
        for i, port in enumerate(self.aports):
            p = subprocess.Popen(
                [self.runnel, "agent", "--listen", self.bootstraps[i], "--advertise",
                 self.bootstraps[i], "--node.id", str(i + 1), "--metadata",
                 "127.0.0.1:%d" % self.mport, "--bucket",
                 "file://" + os.path.join(self.tmp, "bucket")],
                stdin=subprocess.DEVNULL, stdout=self._log("agent%d" % (i + 1)),
                stderr=subprocess.STDOUT)
            self.agents.append(p)
            wait_port("127.0.0.1", port, 30, p)
        return self

    def stop_all(self):
        """SIGTERM to every process; returns the problems: a non-zero exit status, or a sanitizer
        report in a log (the ASan+UBSan build prints UBSan findings without failing)."""
        problems = []
        for name, p in [("agent%d" % (i + 1), a) for i, a in enumerate(self.agents)] + [
                ("metadata", self.meta)]:
            if p is not None:
                rc = stop_process(p)
                if rc != 0:
                    problems.append("%s exited %s on SIGTERM" % (name, rc))
        self.agents, self.meta = [], None
        for f in sorted(os.listdir(self.tmp)):
            if f.endswith(".log"):
                with open(os.path.join(self.tmp, f), errors="replace") as fh:
                    text = fh.read()
                for marker in ("runtime error:", "AddressSanitizer", "LeakSanitizer"):
                    if marker in text:
                        problems.append("%s: %s" % (f, marker))
        return problems

    def __exit__(self, *exc):
        for p in self.agents + [self.meta]:
            if p is not None:
                stop_process(p)
        if exc[0] is None and not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print("runnel logs kept in %s" % self.tmp)
        return False


class Worker:
    """One group member in its own process; its JSON-line events are collected by a thread."""

    def __init__(self, client, bootstrap, topic, group, instance=None, assignor=None,
                 auto_commit=False, commit=True):
        self.client = client
        self.events = []
        self.lock = threading.Lock()
        if client in ("confluent", "kafka-python"):
            cmd = [sys.executable, os.path.join(HERE, "group_worker.py"), client, bootstrap,
                   topic, group, "--session-ms", str(SESSION_MS)]
            cwd = None
        elif client in ("kafkajs", "platformatic"):
            cmd = ["node", os.path.join(HERE, "node", "group_worker.mjs"), client, bootstrap,
                   topic, group, "--session-ms", str(SESSION_MS)]
            cwd = NODE_DIR
        else:  # kcat -G: librdkafka's group consumer with auto-commit
            cmd = ["kcat", "-b", bootstrap, "-G", group, "-f", "%p %o\\n", "-u",
                   "-X", "session.timeout.ms=%d" % SESSION_MS, "-X", "heartbeat.interval.ms=500",
                   "-X", "auto.offset.reset=earliest", "-X", "auto.commit.interval.ms=300",
                   "-X", "topic.metadata.refresh.interval.ms=2000"]
            cmd += ["-X", "group.instance.id=" + instance] if instance else []
            cmd += [topic]
            cwd = None
            auto_commit, commit = True, False
        if client != "kcat":
            if instance:
                cmd += ["--instance", instance]
            if assignor:
                cmd += ["--assignor", assignor]
            if auto_commit:
                cmd += ["--auto-commit"]
            if commit:
                cmd += ["--commit"]
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     bufsize=1)
        self.threads = [threading.Thread(target=self._read, args=(self.proc.stdout, False)),
                        threading.Thread(target=self._read, args=(self.proc.stderr, True))]
        for t in self.threads:
            t.daemon = True
            t.start()

    def _add(self, ev):
        with self.lock:
            ev["t"] = time.monotonic()
            self.events.append(ev)

    def _read(self, stream, is_err):
        for line in stream:
            line = line.strip()
            if self.client == "kcat":
                if is_err:
                    if "assigned:" in line:
                        self._add({"ev": "assigned", "parts": sorted(
                            int(x) for x in re.findall(r"\[(\d+)\]", line.split("assigned:")[1]))})
                    elif "revoked:" in line:
                        self._add({"ev": "assigned", "parts": []})
                    continue
                m = re.fullmatch(r"(\d+) (\d+)", line)
                if m:
                    self._add({"ev": "rec", "p": int(m.group(1)), "o": int(m.group(2))})
                continue
            if is_err:
                continue
            try:
                self._add(json.loads(line))
            except ValueError:
                pass

    def assigned(self):
        with self.lock:
            a = [e for e in self.events if e["ev"] == "assigned"]
        return a[-1]["parts"] if a else None

    def n_assignments(self):
        with self.lock:
            return sum(1 for e in self.events if e["ev"] == "assigned")

    def recs(self):
        with self.lock:
            return [(e["p"], e["o"]) for e in self.events if e["ev"] == "rec"]

    def errors(self):
        with self.lock:
            return [e for e in self.events if e["ev"] == "error"]

    def term(self):
        stop_process(self.proc, signal.SIGTERM, timeout=30)

    def kill(self):
        stop_process(self.proc, signal.SIGKILL, timeout=10)


def wait_for(pred, timeout, what, workers=()):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        for w in workers:
            if w.errors():
                raise CheckFailed("%s member failed: %s" % (w.client, w.errors()[0]))
        time.sleep(0.1)
    raise CheckFailed("timed out after %ds waiting for %s" % (timeout, what))


def shared(workers):
    """Assignments disjoint, covering every partition, nobody empty."""
    parts = [w.assigned() for w in workers]
    if any(not p for p in parts):
        return False
    flat = [x for p in parts for x in p]
    return sorted(flat) == list(range(PARTS))


def settle(workers, timeout=60):
    """Waits until the members share the partitions and no assignment changed for 1.5 s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        wait_for(lambda: shared(workers), max(1, end - time.monotonic()),
                 "the members to share the partitions", workers)
        before = [w.n_assignments() for w in workers]
        time.sleep(1.5)
        if shared(workers) and [w.n_assignments() for w in workers] == before:
            return
    raise CheckFailed("assignments never settled: %s" % [w.assigned() for w in workers])


# ---- fixtures through confluent-kafka (librdkafka) ---------------------------------------------

def admin(bootstrap):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap, name):
    from confluent_kafka.admin import NewTopic
    a = admin(bootstrap)  # kept alive until the futures resolve
    for f in a.create_topics([NewTopic(name, PARTS, 1)]).values():
        f.result(30)


def produce(bootstrap, topic, per_partition, tag):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    errors = []
    for i in range(per_partition * PARTS):
        p.produce(topic, value=("%s-%d" % (tag, i)).encode(), partition=i % PARTS,
                  on_delivery=lambda e, m: errors.append(e) if e else None)
    p.flush(30)
    expect(not errors, "produce failed: %s" % errors[:3])


def end_offsets(bootstrap, topic):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe-" + topic})
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(PARTS)]
    finally:
        c.close()


def committed(bootstrap, group, topic):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(PARTS)], timeout=10)
        return [tp.offset for tp in got]
    finally:
        c.close()


def all_consumed(workers, want):
    got = [r for w in workers for r in w.recs()]
    return set(got) >= want


# ---- checks -----------------------------------------------------------------------------------

def check_share_resume(cl, client):
    topic, group = unique("gs"), unique("g")
    create_topic(cl.bootstraps[0], topic)
    ws = [Worker(client, cl.bootstraps[i], topic, group) for i in range(3)]
    try:
        settle(ws)
        owner = {p: i for i, w in enumerate(ws) for p in w.assigned()}
        produce(cl.bootstraps[0], topic, 10, "a")
        want = {(p, o) for p in range(PARTS) for o in range(10)}
        wait_for(lambda: all_consumed(ws, want), 60, "every record consumed", ws)
        for i, w in enumerate(ws):
            for p, o in w.recs():
                expect(owner[p] == i, "record %d/%d consumed by member %d, owner is %d"
                       % (p, o, i, owner[p]))
        every = [r for w in ws for r in w.recs()]
        expect_eq(len(every), len(set(every)), "records consumed (duplicates?)")
    finally:
        for w in ws:
            w.term()
    ends = end_offsets(cl.bootstraps[0], topic)
    wait_for(lambda: committed(cl.bootstraps[1], group, topic) == ends, 20,
             "committed offsets == end offsets %s" % ends)
    produce(cl.bootstraps[0], topic, 5, "b")
    w = Worker(client, cl.bootstraps[2], topic, group)
    try:
        want = {(p, o) for p in range(PARTS) for o in range(10, 15)}
        wait_for(lambda: set(w.recs()) >= want, 60, "the new records after a restart", [w])
        early = [r for r in w.recs() if r[1] < 10]
        expect(not early, "records before the committed offsets consumed again: %s" % early[:5])
    finally:
        w.term()


def check_kill(cl, client):
    topic, group = unique("gk"), unique("g")
    create_topic(cl.bootstraps[0], topic)
    ws = [Worker(client, cl.bootstraps[i], topic, group) for i in range(2)]
    try:
        settle(ws)
        ws[1].kill()
        t0 = time.monotonic()
        limit = SESSION_MS / 1000 + 10
        wait_for(lambda: ws[0].assigned() == list(range(PARTS)), limit + 5,
                 "the survivor to own every partition", ws[:1])
        took = time.monotonic() - t0
        expect(took <= limit, "reassignment took %.1f s, more than session timeout + 10 s" % took)
        # A new member triggers a rebalance: the survivor gives up part of its partitions.
        ws[1] = Worker(client, cl.bootstraps[2], topic, group)
        settle(ws)
    finally:
        for w in ws:
            w.term()


def check_static(cl, client):
    if client not in ("confluent", "platformatic", "kcat"):
        raise Skip("the client has no group.instance.id")
    topic, group = unique("gst"), unique("g")
    create_topic(cl.bootstraps[0], topic)
    ws = [Worker(client, cl.bootstraps[i], topic, group, instance="inst-%d" % i)
          for i in range(2)]
    try:
        settle(ws)
        before = [w.assigned() for w in ws]
        n0 = ws[0].n_assignments()
        ws[1].kill()
        ws[1] = Worker(client, cl.bootstraps[2], topic, group, instance="inst-1")
        wait_for(lambda: ws[1].assigned(), 30, "the restarted static member's assignment", ws)
        time.sleep(2)
        expect_eq(ws[1].assigned(), before[1], "restarted static member's assignment")
        expect_eq(ws[0].n_assignments(), n0, "assignment changes seen by the other member")
    finally:
        for w in ws:
            w.term()


def check_cooperative(cl, client):
    if client != "confluent":
        raise Skip("cooperative-sticky is exercised with librdkafka")
    topic, group = unique("gc"), unique("g")
    create_topic(cl.bootstraps[0], topic)
    ws = [Worker(client, cl.bootstraps[i], topic, group, assignor="cooperative-sticky")
          for i in range(2)]
    try:
        settle(ws)
        before = [set(w.assigned()) for w in ws]
        ws.append(Worker(client, cl.bootstraps[2], topic, group, assignor="cooperative-sticky"))
        settle(ws)
        after = [set(w.assigned()) for w in ws]
        for i in range(2):
            expect(after[i] <= before[i], "member %d gained %s (had %s)"
                   % (i, sorted(after[i] - before[i]), sorted(before[i])))
        moved = sum(len(before[i] - after[i]) for i in range(2))
        expect_eq(moved, len(after[2]), "partitions moved")
        expect_eq(len(after[2]), PARTS // 3, "partitions of the new member")
    finally:
        for w in ws:
            w.term()


def check_autocommit(cl, client):
    topic, group = unique("ga"), unique("g")
    create_topic(cl.bootstraps[0], topic)
    produce(cl.bootstraps[0], topic, 5, "a")
    w = Worker(client, cl.bootstraps[1], topic, group, auto_commit=True, commit=False)
    try:
        want = {(p, o) for p in range(PARTS) for o in range(5)}
        wait_for(lambda: set(w.recs()) >= want, 60, "every record consumed", [w])
        ends = end_offsets(cl.bootstraps[0], topic)
        wait_for(lambda: committed(cl.bootstraps[0], group, topic) == ends, 20,
                 "auto-committed offsets == end offsets %s" % ends)
    finally:
        w.term()


def admin_ops(client, bootstrap):
    """list(group) -> [ids], describe(group) -> (state, n_members), delete(group) -> error name
    or None, for the client's admin API."""
    if client == "confluent":
        a = admin(bootstrap)

        def lst():
            return [g.id for g in a.list_groups(timeout=10)]

        def desc(g):
            got = a.list_groups(g, timeout=10)
            return (got[0].state, len(got[0].members)) if got else (None, 0)

        return lst, desc, None  # confluent-kafka 1.7 has no DeleteGroups
    if client == "kafka-python":
        from kafka import KafkaAdminClient
        a = KafkaAdminClient(bootstrap_servers=bootstrap)

        def lst():
            return [g[0] for g in a.list_consumer_groups()]

        def desc(g):
            d = a.describe_consumer_groups([g])[0]
            return d.state, len(d.members)

        def delete(g):
            res = dict(a.delete_consumer_groups([g]))
            err = res.get(g)  # an error class (kafka.errors), NoError when it worked
            if err is None or err.errno == 0:
                return None
            return err.__name__ if isinstance(err, type) else type(err).__name__
        return lst, desc, delete
    if client in ("kafkajs", "platformatic"):
        def node(*op):
            out = subprocess.run(["node", os.path.join(HERE, "node", "group_worker.mjs"), client,
                                  bootstrap, "admin"] + list(op), cwd=NODE_DIR,
                                 capture_output=True, text=True, timeout=60)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            expect(lines, "node admin %s printed nothing: %s" % (op, out.stderr[-500:]))
            res = json.loads(lines[-1])
            expect("error" not in res, "node admin %s failed: %s" % (op, res.get("error")))
            return res["result"]

        def desc(g):
            d = node("describe", g)
            return d["state"], d["members"]
        return (lambda: node("list", "-")), desc, (lambda g: node("delete", g))
    return None, None, None


def check_admin(cl, client):
    lst, desc, delete = admin_ops(client, cl.bootstraps[0])
    if lst is None:
        raise Skip("the client has no admin API for groups")
    topic, group = unique("gad"), unique("g")
    create_topic(cl.bootstraps[0], topic)
    ws = [Worker("confluent", cl.bootstraps[i], topic, group) for i in range(2)]
    try:
        settle(ws)
        # Listed once, whichever agent is asked (clients broadcast ListGroups to every broker).
        for b in cl.bootstraps:
            ids = admin_ops(client, b)[0]()
            expect_eq(ids.count(group), 1, "times the group is listed by agent %s" % b)
        state, members = desc(group)
        # @platformatic/kafka reports states upper-cased ("STABLE").
        expect_eq((state.lower(), members), ("stable", 2), "described state and member count")
        if delete is not None:
            expect_eq(delete(group), "NON_EMPTY_GROUP" if client != "kafka-python"
                      else "NonEmptyGroupError", "deleting a group with members")
    finally:
        for w in ws:
            w.term()
    wait_for(lambda: desc(group)[0].lower() == "empty", 20, "the group to be Empty after its members left")
    if delete is not None:
        expect_eq(delete(group), None, "deleting the empty group")
        expect(group not in lst(), "group still listed after deletion")


def check_restart(cl, client):
    topic, group = unique("gr"), unique("g")
    create_topic(cl.bootstraps[0], topic)
    produce(cl.bootstraps[0], topic, 4, "a")
    w = Worker(client, cl.bootstraps[0], topic, group)
    try:
        want = {(p, o) for p in range(PARTS) for o in range(4)}
        wait_for(lambda: set(w.recs()) >= want, 60, "every record consumed", [w])
    finally:
        w.term()
    before = committed(cl.bootstraps[0], group, topic)
    expect_eq(before, [4] * PARTS, "committed offsets before the restart")
    rc = cl.restart_metadata()
    expect_eq(rc, 0, "metadata service exit status on SIGTERM")
    wait_for(lambda: committed(cl.bootstraps[1], group, topic) == before, 30,
             "the committed offsets after the metadata restart")


CHECKS = [("share-resume", check_share_resume), ("kill", check_kill), ("static", check_static),
          ("cooperative", check_cooperative), ("autocommit", check_autocommit),
          ("admin", check_admin), ("restart", check_restart)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runnel", required=True)
    ap.add_argument("--client", default="all", choices=CLIENTS + ["all"])
    ap.add_argument("--only", action="append")
    args = ap.parse_args()
    clients = CLIENTS if args.client == "all" else [args.client]
    failures = 0
    with Cluster(args.runnel) as cl:
        for client in clients:
            rep = Reporter("groups/%s" % client)
            for name, fn in CHECKS:
                if args.only and name not in args.only:
                    continue
                rep.run(name, fn, cl, client)
            failures += rep.failed
            rep.summary()
        for problem in cl.stop_all():
            print("FAIL groups/processes: %s" % problem, flush=True)
            failures += 1
        if failures:
            cl.keep = True
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
