#!/usr/bin/python3
"""Many-agents benchmark (issue 6; not a test, not in CI; figures in docs/benchmarks.md, "Many
agents"). One RGW (tests/integration/lib/rgw.sh), one `runnel metadata`, three `runnel agent`.

1. Aggregate throughput with 1, 2 and 3 agents. Three producer processes (confluent-kafka-python,
   16 KiB values, linger.ms=5, batch.size=1 MiB, acks=all), each with its own 4-partition topic,
   send to agent (i mod N); then three consumer processes (assign(), no group) read each topic
   back through agent ((i + 1) mod N) with the agents restarted first, so reads come from the
   store. Aggregate MB/s = all bytes / (last end - first start). The client load is the same for
   every N; agents are in load-balancer mode, each advertising itself (no balancer). Rounds
   interleave N = 1, 2, 3 so that load from elsewhere on the machine hits every N alike; the
   median per N is reported, with the busiest agent's CPU (share of one core during the produce
   phase, from /proc), the metadata service's CPU and the mean commit latency as the agents time the RPC and as the metadata
   service times handling it (both /metrics), which show whether one agent or the metadata
   service is what limits.
2. Three consumers reading the same topic through three different agents (cold caches, the
   topic written through agent 1 beforehand, agents restarted): once with each consumer held to
   its own agent (load-balancer mode: every agent reads every object) and once in direct mode
   (consumers fetch from each partition's rendezvous leader). RGW's own counters (admin socket
   `perf dump`: get) count GETs; reported per MiB the three consumers received, per MiB of topic
   data (stored once), per object holding the topic (RGW bucket stats before and after writing
   it), and as a cache hit ratio: 1 - GETs / chunk-level reads, where the reads are what three
   cold readers need (every object's footer and each of its 4 partition chunks, three times).
   "agent hits" is the agents' own view (/metrics: cache hits + lookups that joined a load in
   flight, over all lookups), which also counts the repeated lookups of one consumer's fetches.
   Objects are read in 4 MiB blocks, each owned by one agent (docs/cluster.md, "Object blocks"):
   "peer" is how many blocks agents asked of the owner and how many of those failed over to the
   store. Before each read the agents are restarted and the script waits until every agent knows
   three (runnel_agent_peers) plus two heartbeats, so that no agent still lists the id an agent
   had before its restart (a view that differs briefly costs a duplicate block read).

   cluster_bench.py --runnel build/rel/agent/runnel [--mib 64] [--read-mib 96] [--rounds 3]
                    [--incompressible]
MB = 10^6 bytes of values; MiB = 2^20.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration", "cluster"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration", "clients"))

VALUE = 16 * 1024
PARTS = 4


# ---- workers (run as subprocesses) ----

def worker_produce(bootstrap, topic, mib, fresh=False):
    import confluent_kafka as ck
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1048576,
                     "acks": "all", "queue.buffering.max.kbytes": 262144,
                     "message.max.bytes": 2000000})
    val = os.urandom(VALUE)
    n = mib * 1024 * 1024 // VALUE
    failed = []

    def dr(err, _msg):
        if err is not None:
            failed.append(str(err))

    t0 = time.monotonic()
    for i in range(n):
        while True:
            try:
                p.produce(topic, os.urandom(VALUE) if fresh else val, partition=i % PARTS,
                          on_delivery=dr)
                break
            except BufferError:
                p.poll(0.01)
        if i % 256 == 0:
            p.poll(0)
    left = p.flush(300)
    t1 = time.monotonic()
    return {"t0": t0, "t1": t1, "bytes": n * VALUE, "failed": len(failed) + left}


def worker_consume(bootstrap, topic, parts, client_id=None):
    import confluent_kafka as ck
    conf = {"bootstrap.servers": bootstrap, "group.id": "bench-%d" % os.getpid(),
            "enable.auto.commit": False, "fetch.max.bytes": 52428800,
            "max.partition.fetch.bytes": 8388608, "enable.partition.eof": True}
    if client_id:
        conf["client.id"] = client_id
    c = ck.Consumer(conf)
    hi = {p: c.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=30)[1]
          for p in range(parts)}
    c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(parts)])
    left = {p for p in range(parts) if hi[p] > 0}
    got = 0
    t0 = time.monotonic()
    deadline = t0 + 600
    while left and time.monotonic() < deadline:
        for m in c.consume(1000, 0.5):
            if m.error():
                continue
            got += len(m.value())
            if m.offset() + 1 >= hi[m.partition()]:
                left.discard(m.partition())
    t1 = time.monotonic()
    c.close()
    return {"t0": t0, "t1": t1, "bytes": got, "incomplete": len(left)}


def run_workers(specs):
    """specs: [[arg, ...]] for this script's worker mode; returns their JSON results."""
    procs = [subprocess.Popen([sys.executable, "-B", os.path.abspath(__file__), "--worker"] +
                              [str(a) for a in s], stdout=subprocess.PIPE, text=True)
             for s in specs]
    out = []
    for p in procs:
        o, _ = p.communicate(timeout=900)
        if p.returncode != 0:
            raise RuntimeError("worker exited %d: %s" % (p.returncode, o[-500:]))
        out.append(json.loads(o.strip().splitlines()[-1]))
    return out


def aggregate(results):
    t0 = min(r["t0"] for r in results)
    t1 = max(r["t1"] for r in results)
    total = sum(r["bytes"] for r in results)
    return total / (t1 - t0) / 1e6, total, t1 - t0


# ---- driver ----

def rgw_counters(cl):
    asok = os.path.join(cl.rgw_dir, "run", "client.rgw.a.asok")
    out = subprocess.run(["ceph", "--admin-daemon", asok, "perf", "dump"], capture_output=True,
                         text=True, timeout=30).stdout
    r = json.loads(out)["rgw"]
    return {"get": r["get"], "put": r["put"]}


def agent_cpu(cl):
    """CPU seconds (user + system) of each running agent process, by slot."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for i, a in enumerate(cl.agents[:3]):
        if a.proc is not None:
            with open("/proc/%d/stat" % a.proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[i] = (int(fields[11]) + int(fields[12])) / tick
    with open("/proc/%d/stat" % cl.meta.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out["metadata"] = (int(fields[11]) + int(fields[12])) / tick
    return out


def commit_stats(cl, n):
    """(commits, seconds) summed over agents 0..n-1 as the agents time the commit RPC, and
    (commits, seconds) as the metadata service times handling them (both /metrics)."""
    cnt, tot = 0.0, 0.0
    for i in range(n):
        m = cl.metrics(i)
        cnt += m.get("runnel_agent_commit_duration_seconds_count", 0)
        tot += m.get("runnel_agent_commit_duration_seconds_sum", 0)
    m = cl.metrics("metadata")
    return (cnt, tot, m.get('runnel_meta_request_duration_seconds_count{api="MetaCommit"}', 0),
            m.get('runnel_meta_request_duration_seconds_sum{api="MetaCommit"}', 0))


def agent_cache(cl):
    """Summed over the three agents: chunk cache hits, misses, merged lookups, store GETs."""
    tot = {"hits": 0, "misses": 0, "merged": 0, "gets": 0, "asked": 0, "failovers": 0}
    names = {"hits": "runnel_agent_cache_hits_total", "misses": "runnel_agent_cache_misses_total",
             "merged": "runnel_agent_cache_merged_total",
             "gets": "runnel_agent_cache_store_gets_total",
             "asked": "runnel_agent_peer_blocks_asked_total",
             "failovers": "runnel_agent_peer_failovers_total"}
    for i in range(3):
        m = cl.metrics(i)
        for k, n in names.items():
            tot[k] += m.get(n, 0)
    return tot


def restart_agents(cl, mode):
    cl.stop_agents()
    cl.mode = mode
    for i in range(3):
        cl.start_agent_idx(i)
    if mode == "direct":
        from scenario_direct import wait_brokers
        wait_brokers(cl, [a.addr for a in cl.agents[:3]])
    deadline = time.monotonic() + 30  # every agent knows the other two: block owners settled
    while time.monotonic() < deadline:
        if all(cl.metrics(i).get("runnel_agent_peers", 0) == 3 for i in range(3)):
            time.sleep(2.5)  # two more heartbeats: no agent still lists a restarted one's old id
            break
        time.sleep(0.2)


def create(bootstrap, topic, parts):
    from adapters import ConfluentAdapter
    err = ConfluentAdapter(bootstrap).create_topic(topic, parts, {})
    if err:
        raise RuntimeError("create %s: %s" % (topic, err))


def objects_in_store(cl):
    """(objects, bytes) in the bucket (RGW admin: bucket stats)."""
    out = subprocess.run(["radosgw-admin", "-c", os.path.join(cl.rgw_dir, "ceph.conf"),
                          "bucket", "stats", "--bucket", cl.env.get("RUNNEL_S3_BUCKET", "runnel")],
                         capture_output=True, text=True, timeout=60, env=cl.env).stdout
    try:
        usage = json.loads(out)["usage"]
        return (sum(v.get("num_objects", 0) for v in usage.values()),
                sum(v.get("size", 0) for v in usage.values()))
    except (ValueError, KeyError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runnel")
    ap.add_argument("--mib", type=int, default=64, help="MiB per producer per run")
    ap.add_argument("--read-mib", type=int, default=96, help="MiB of the shared-read topic")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds (median reported)")
    ap.add_argument("--meta-on-shm", action="store_true",
                    help="metadata journal on /dev/shm (fsync free): takes the disk out of the "
                         "figures, not a durable setup")
    ap.add_argument("--incompressible", action="store_true",
                    help="the shared-read topic gets a fresh random value per record (objects "
                         "stay ~flush.bytes after zstd; by default every record repeats one "
                         "value and objects shrink to a fraction of a block)")
    ap.add_argument("--worker", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    if args.worker:
        w = args.worker
        if w[0] == "produce":
            r = worker_produce(w[1], w[2], int(w[3]), len(w) > 4 and w[4] == "fresh")
        else:
            r = worker_consume(w[1], w[2], int(w[3]), w[4] if len(w) > 4 else None)
        print(json.dumps(r))
        return 0
    if not args.runnel:
        ap.error("--runnel is required")
    os.environ.setdefault("RGW_MEMSTORE_MB", "4096")
    from cluster import ManyAgents
    tag = "%d" % (time.time() % 100000)
    print("cluster_bench: %s, 3 agents (flush.interval.ms=250, flush.bytes=8m, cache.bytes=256m), "
          "RGW memstore, %d KiB values, %d partitions per topic; load average %s"
          % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), VALUE // 1024, PARTS,
             open("/proc/loadavg").read().split()[:3]), flush=True)
    cl = ManyAgents(args.runnel, mode="solo",
                    extra=["--flush-interval-ms", "250", "--log-level", "warn"])
    shm = None
    if args.meta_on_shm:
        import shutil
        import tempfile
        shm = tempfile.mkdtemp(prefix="runnel-bench-meta-", dir="/dev/shm")
        cl.meta_dir = shm
        print("metadata journal on %s (tmpfs: fsync costs nothing)" % shm)
    try:
        return run(cl, args, tag)
    finally:
        if shm:
            shutil.rmtree(shm, ignore_errors=True)


def run(cl, args, tag):
    with cl:
        addrs = [a.addr for a in cl.agents[:3]]
        print("\n== aggregate throughput, 3 producers then 3 consumers (cold caches) ==")
        print("%-6s %-7s %12s %12s %6s %6s %16s %12s %26s" % (
            "round", "agents", "produce MB/s", "consume MB/s", "PUTs", "GETs",
            "busiest agent CPU", "metadata CPU", "commit ms mean agent/meta"))
        figs = {1: [], 2: [], 3: []}
        for rnd in range(args.rounds):  # --rounds 0: only the shared-read part  # interleaved, so load from elsewhere hits every N alike
            for n in (1, 2, 3):
                topics = ["bench-%s-r%d-n%d-%d" % (tag, rnd, n, i) for i in range(3)]
                for t in topics:
                    create(addrs[0], t, PARTS)
                c0 = rgw_counters(cl)
                u0 = agent_cpu(cl)
                k0 = commit_stats(cl, n)
                prod = run_workers([["produce", addrs[i % n], topics[i], args.mib]
                                    for i in range(3)])
                u1 = agent_cpu(cl)
                k1 = commit_stats(cl, n)
                c1 = rgw_counters(cl)
                restart_agents(cl, "solo")
                c2 = rgw_counters(cl)
                cons = run_workers([["consume", addrs[(i + 1) % n], topics[i], PARTS]
                                    for i in range(3)])
                c3 = rgw_counters(cl)
                pm, _, wall = aggregate(prod)
                cm, _, _ = aggregate(cons)
                figs[n].append((pm, cm))
                busiest = max(u1[i] - u0[i] for i in range(n)) / wall
                meta_cpu = (u1["metadata"] - u0["metadata"]) / wall
                commits = k1[0] - k0[0]
                cmean = 1000.0 * (k1[1] - k0[1]) / commits if commits else 0.0
                mcommits = k1[2] - k0[2]
                mmean = 1000.0 * (k1[3] - k0[3]) / mcommits if mcommits else 0.0
                bad = sum(r["failed"] for r in prod) + sum(r["incomplete"] for r in cons)
                print("%-6d %-7d %12.1f %12.1f %6d %6d %15.0f%% %11.0f%% %17.1f / %6.1f%s" % (
                    rnd + 1, n, pm, cm, c1["put"] - c0["put"], c3["get"] - c2["get"],
                    100.0 * busiest, 100.0 * meta_cpu, cmean, mmean,
                    "  ERRORS %d" % bad if bad else ""), flush=True)
        if args.rounds:
            print("median over %d rounds:" % args.rounds)
        for n in (1, 2, 3) if args.rounds else ():
            pm = sorted(f[0] for f in figs[n])[len(figs[n]) // 2]
            cm = sorted(f[1] for f in figs[n])[len(figs[n]) // 2]
            print("       %-7d %12.1f %12.1f   (%.2fx / %.2fx the 1-agent medians)" % (
                n, pm, cm, pm / sorted(f[0] for f in figs[1])[len(figs[1]) // 2],
                cm / sorted(f[1] for f in figs[1])[len(figs[1]) // 2]), flush=True)

        print("\n== three consumers, same topic, three different agents (cold caches) ==")
        topic = "bench-%s-shared" % tag
        create(addrs[0], topic, PARTS)
        o0 = objects_in_store(cl)
        run_workers([["produce", addrs[0], topic, args.read_mib] +
                     (["fresh"] if args.incompressible else [])])
        o1 = objects_in_store(cl)
        objs = (o1[0] - o0[0]) if o0 is not None and o1 is not None else None
        stored = (o1[1] - o0[1]) / 1048576 if objs else None
        print("topic %s: %d MiB over %d partitions in %s objects%s" % (
            topic, args.read_mib, PARTS, objs if objs is not None else "?",
            " (%.1f MiB stored, %.2f MiB per object%s)" % (
                stored, stored / objs, ", fresh random values" if args.incompressible else
                ", one value repeated: zstd shrinks it") if objs else ""))
        # Chunk-level reads the consumers ask of their agents: each consumer needs every object's
        # footer and its PARTS chunks once (every object holds all PARTS partitions: one producer
        # spreads records over them in turn). Hits are the reads no GET was needed for.
        reads = 3 * objs * (PARTS + 1) if objs else None
        print("%-8s %9s %8s %13s %13s %12s %10s %10s %8s %16s" % (
            "mode", "MiB read", "GETs", "GETs/MiB read", "GETs/MiB data", "GETs/object",
            "hit ratio", "agent hits", "MB/s", "peer asked/fail/agent GETs"))
        for mode in ("solo", "direct"):
            restart_agents(cl, mode)
            c0 = rgw_counters(cl)
            a0 = agent_cache(cl)
            cid = None if mode == "solo" else "bench"
            res = run_workers([["consume", addrs[i], topic, PARTS] + ([cid] if cid else [])
                               for i in range(3)])
            c1 = rgw_counters(cl)
            a1 = agent_cache(cl)
            d = {k: a1[k] - a0[k] for k in a1}
            lookups = d["hits"] + d["misses"] + d["merged"]
            agent_hits = "%.0f%%" % (100.0 * (d["hits"] + d["merged"]) / lookups) if lookups else "?"
            mbps, total, _ = aggregate(res)
            mib = total / 1048576
            gets = c1["get"] - c0["get"]
            print("%-8s %9.1f %8d %13.3f %13.3f %12s %10s %10s %8.1f %16s%s" % (
                "lb" if mode == "solo" else mode, mib, gets, gets / mib, gets / args.read_mib,
                "%.2f" % (gets / objs) if objs else "?",
                "%.0f%%" % (100.0 * (1 - gets / reads)) if reads else "?", agent_hits, mbps,
                "%d/%d/%d" % (d["asked"], d["failovers"], d["gets"]),
                "  INCOMPLETE" if any(r["incomplete"] for r in res) else ""), flush=True)
        cl.stop_agents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
