"""A consumer group spread over agents, for scenario_lb.py and scenario_direct.py: three members
(confluent-kafka-python, kafka-python, confluent-kafka-python again:
tests/integration/clients/group_worker.py, committing every record) each started through a
different agent, reading a 6-partition topic written beforehand. kafkajs is not among them: its
assignor's protocol name (RoundRobinAssigner) matches none of the others', so Kafka semantics
refuse it in their group (INCONSISTENT_GROUP_PROTOCOL, which Runnel answers); node/group_worker.mjs
can still be given through `clients`. Checks that the group settles with every member holding
partitions (disjoint, covering all six) and that every record is consumed, at least once (a
record consumed but not committed before a rebalance may be read again by the next owner)."""

import json
import os
import select
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENTS = os.path.join(HERE, "..", "clients")
sys.path.insert(0, CLIENTS)

from adapters import ConfluentAdapter  # noqa: E402
from common import NODE_DIR, expect, expect_eq, unique, value  # noqa: E402

PARTS = 6
PER_PART = 50


def start_member(client, bootstrap, topic, group, log):
    if client == "kafkajs":
        cmd = ["node", os.path.join(CLIENTS, "node", "group_worker.mjs"), "kafkajs", bootstrap,
               topic, group, "--commit"]
        cwd = NODE_DIR
    else:
        cmd = [sys.executable, "-B", os.path.join(CLIENTS, "group_worker.py"), client, bootstrap,
               topic, group, "--commit"]
        cwd = None
    return subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=log)


def group_across_agents(bootstraps, log_dir, before_start=None,
                        clients=("confluent", "kafka-python", "confluent")):
    """bootstraps[i]: where member i starts; before_start(i) is called before starting it (the
    load-balancer test sends new connections to agent i there). Members' stderr goes to
    log_dir/member<N>-<client>.log."""
    topic = unique("grp")
    group = unique("g")
    a = ConfluentAdapter(bootstraps[0])
    expect(a.create_topic(topic, PARTS, {}) is None, "create topic")
    recs = [{"p": p, "key": b"k%d" % i, "value": value("%s/%d/%d" % (topic, p, i), 64),
             "headers": [], "ts": None} for p in range(PARTS) for i in range(PER_PART)]
    a.produce(topic, recs)
    members = []
    try:
        for i, c in enumerate(clients):
            if before_start:
                before_start(i)
            log = open(os.path.join(log_dir, "member%d-%s.log" % (i + 1, c)), "w")
            members.append(start_member(c, bootstraps[i], topic, group, log))
            log.close()
            time.sleep(1.5)  # its connections are made through its agent before the next starts
        if before_start:
            before_start(None)
        assigned = [None] * len(members)
        seen = {}
        want = {(p, o) for p in range(PARTS) for o in range(PER_PART)}
        deadline = time.monotonic() + 90
        settled_at = None
        bufs = [b""] * len(members)
        other = []  # events other than assignments and records (errors), for the failure text
        while time.monotonic() < deadline:
            fds = {m.stdout.fileno(): i for i, m in enumerate(members)}
            ready, _, _ = select.select(list(fds), [], [], 0.5)
            for fd in ready:
                i = fds[fd]
                chunk = os.read(fd, 65536)
                if not chunk:
                    continue
                bufs[i] += chunk
                *lines, bufs[i] = bufs[i].split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    if ev.get("ev") == "assigned":
                        assigned[i] = ev["parts"]
                    elif ev.get("ev") == "rec":
                        seen[(ev["p"], ev["o"])] = seen.get((ev["p"], ev["o"]), 0) + 1
                    else:
                        other.append("%s: %s" % (clients[i], line[:300].decode(errors="replace")))
            full = all(x for x in assigned) and sorted(
                p for x in assigned for p in x) == list(range(PARTS))
            if full and want <= set(seen):
                settled_at = settled_at or time.monotonic()
                if time.monotonic() - settled_at > 1.0:
                    break
            else:
                settled_at = None
        for i, m in enumerate(members):
            expect(m.poll() is None, "%s member exited with %s (stderr in %s); events: %s"
                   % (clients[i], m.returncode, log_dir, other[-5:]))
        missing = sorted(want - set(seen))
        expect(not missing, "%d records never consumed by the group, first %s; assignments %s"
               % (len(missing), missing[:5], assigned))
        names = ["%d:%s" % (i + 1, c) for i, c in enumerate(clients)]
        expect(all(assigned), "members without partitions: %s" % dict(zip(names, assigned)))
        expect_eq(sorted(p for x in assigned for p in x), list(range(PARTS)),
                  "partitions held by the members")
        again = sum(1 for n in seen.values() if n > 1)
        print("group %s: assignments %s; %d records, %d read twice across rebalances"
              % (group, dict(zip(names, assigned)), len(seen), again), flush=True)
    finally:
        for m in members:
            if m.poll() is None:
                m.terminate()
        for m in members:
            try:
                m.wait(timeout=15)
            except subprocess.TimeoutExpired:
                m.kill()
                m.wait()
