#!/usr/bin/python3
"""Observability end to end (docs/observability.md).

`dev` scenario: starts `runnel dev --http.listen`, checks /healthz and /readyz, produces and
consumes with confluent-kafka-python, scrapes /metrics before and after and checks that the
agent's, the store's and the metadata service's series moved by what was done; validates every
scrape with `promtool check metrics`; checks the listener's answers to bad requests.

`fail` scenario: the metadata service's fdatasync fails (its test hook): it turns not ready,
its failure gauge and fsync error counter say so, and the agent counts the refused produce; and
an object store that fails everything for its first 3 s keeps a new agent not ready until its
store probe gets an answer; and a slow store with a 1 MiB buffer makes the agent pause reading,
which shows in the backpressure series.

`split` scenario: `runnel metadata` and `runnel agent` as separate processes, each with its own
listener: both expose their own series, the agent is ready, and becomes not ready (503) once the
metadata service is gone; a listener that cannot start is a start-up error, not a hang.

Usage: obs_metrics.py --runnel PATH [--scenario dev|split|fail|all]
Prints PASS/FAIL per check; exits 1 when any check failed.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

failures = []


def check(name, cond, detail=""):
    print("%s obs/%s%s" % ("PASS" if cond else "FAIL", name, "" if cond else ": " + str(detail)))
    sys.stdout.flush()
    if not cond:
        failures.append(name)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError("process exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("nothing listens on %d" % port)


def http_get(port, path, timeout=5):
    """Returns (status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def raw_request(port, data, timeout=5):
    """Sends raw bytes and returns everything the server answers until it closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout)
    s.sendall(data)
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        out += chunk
    s.close()
    return out.decode(errors="replace")


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def parse_metrics(text):
    """{'name{labels}': value} for every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if m is None:
            raise ValueError("unparsable sample line: %r" % line)
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def value(samples, key):
    return samples.get(key, 0.0)


def promtool_ok(text, name):
    p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    check(name, p.returncode == 0, p.stdout.decode()[-2000:])


def scrape(port, name):
    status, text = http_get(port, "/metrics")
    check(name + "_status", status == 200, status)
    promtool_ok(text, name + "_promtool")
    return parse_metrics(text)


def wait_ready(port, timeout=20):
    end = time.time() + timeout
    status, body = 0, ""
    while time.time() < end:
        status, body = http_get(port, "/readyz")
        if status == 200:
            break
        time.sleep(0.2)
    return status, body


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def scenario_dev(runnel, tmp):
    from confluent_kafka import Consumer, Producer, TopicPartition
    kport, hport = free_port(), free_port()
    log = open(os.path.join(tmp, "dev.log"), "w")
    proc = subprocess.Popen([runnel, "dev", "--listen", "127.0.0.1:%d" % kport,
                             "--http.listen", "127.0.0.1:%d" % hport,
                             "--data.dir", os.path.join(tmp, "dev"),
                             "--log.level", "debug", "--log.format", "json"],
                            stdout=log, stderr=log)
    try:
        wait_port(kport, proc)
        wait_port(hport, proc)
        status, body = http_get(hport, "/healthz")
        check("dev_healthz", status == 200 and body == "ok\n", (status, body))
        status, body = wait_ready(hport)
        check("dev_readyz", status == 200 and "store: ok" in body and "metadata: ok" in body
              and "metadata_journal: ok" in body, (status, body))
        before = scrape(hport, "dev_before")

        bs = "127.0.0.1:%d" % kport
        n, size = 200, 1000
        p = Producer({"bootstrap.servers": bs, "acks": "all", "linger.ms": 5,
                      "compression.type": "none", "client.id": 'obs "quoted" producer'})
        acked = []
        for i in range(n):
            p.produce("obs-topic", value=b"x" * size, key=b"k%d" % i,
                      on_delivery=lambda err, msg: acked.append(err))
        p.flush(30)
        check("dev_produced", len(acked) == n and all(e is None for e in acked), acked[:3])
        c = Consumer({"bootstrap.servers": bs, "group.id": "obs", "enable.auto.commit": False})
        c.assign([TopicPartition("obs-topic", 0, 0)])
        got = 0
        end = time.time() + 30
        while got < n and time.time() < end:
            m = c.poll(1.0)
            if m is not None and m.error() is None:
                got += 1
        c.close()
        check("dev_consumed", got == n, got)

        # A consumer group that read and committed 150 of the 200 records: lag 50.
        c = Consumer({"bootstrap.servers": bs, "group.id": "obs-lag",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        c.subscribe(["obs-topic"])
        got = 0
        end = time.time() + 60
        while got < 150 and time.time() < end:
            m = c.poll(1.0)
            if m is not None and m.error() is None:
                got += 1
                if got == 150:
                    c.commit(message=m, asynchronous=False)
        c.close()
        check("dev_group_consumed", got == 150, got)

        # A fetch beyond the end: the broker answers OFFSET_OUT_OF_RANGE, counted by error name.
        c = Consumer({"bootstrap.servers": bs, "group.id": "obs2", "enable.auto.commit": False,
                      "auto.offset.reset": "latest"})
        c.assign([TopicPartition("obs-topic", 0, 10 ** 9)])
        for _ in range(3):
            c.poll(0.5)
        c.close()

        after = scrape(hport, "dev_after")
        d = lambda k: value(after, k) - value(before, k)
        produce_reqs = sum(v for k, v in after.items()
                           if k.startswith('runnel_agent_requests_total{api="Produce"'))
        check("dev_produce_requests", produce_reqs >= 1, produce_reqs)
        check("dev_produce_bytes", d("runnel_agent_produce_bytes_total") >= n * size,
              d("runnel_agent_produce_bytes_total"))
        check("dev_fetch_bytes", d("runnel_agent_fetch_bytes_total") >= n * size,
              d("runnel_agent_fetch_bytes_total"))
        check("dev_objects", d("runnel_agent_objects_committed_total") >= 1,
              d("runnel_agent_objects_committed_total"))
        check("dev_flush_hist", d("runnel_agent_flush_bytes_count") >= 1 and
              d("runnel_agent_flush_bytes_sum") >= n * size, d("runnel_agent_flush_bytes_sum"))
        check("dev_commit_latency", d("runnel_agent_commit_duration_seconds_count") >= 1)
        check("dev_store_put", d('runnel_store_requests_total{op="put"}') >= 1 and
              d('runnel_store_bytes_total{op="put"}') > 0, d('runnel_store_bytes_total{op="put"}'))
        check("dev_store_latency", d('runnel_store_request_duration_seconds_count{op="put"}') >= 1)
        check("dev_meta_commit", d('runnel_meta_requests_total{api="MetaCommit"}') >= 1)
        check("dev_meta_commit_latency",
              d('runnel_meta_request_duration_seconds_count{api="MetaCommit"}') >= 1)
        check("dev_fsync", d("runnel_meta_journal_fsync_duration_seconds_count") >= 1)
        check("dev_meta_topics", value(after, "runnel_meta_topics") >= 1 and
              value(after, "runnel_meta_partitions") >= 1, value(after, "runnel_meta_topics"))
        check("dev_cache", value(after, "runnel_agent_cache_hits_total") +
              value(after, "runnel_agent_cache_misses_total") >= 1)
        check("dev_fetch_error_code",
              value(after, 'runnel_agent_response_errors_total{api="Fetch",'
                           'error="OFFSET_OUT_OF_RANGE"}') >= 1,
              [k for k in after if "response_errors" in k])
        lag_key = ('runnel_meta_consumer_group_lag{group="obs-lag",topic="obs-topic",'
                   'partition="0"}')
        check("dev_consumer_lag", lag_key in after and value(after, lag_key) == n - 150,
              [(k, v) for k, v in after.items() if "lag" in k])
        check("dev_consumer_groups", value(after, "runnel_meta_consumer_groups") >= 1,
              value(after, "runnel_meta_consumer_groups"))
        # A consumer at the end long-polls (fetch.wait.max.ms=10000): its Fetch is in flight.
        idle = Consumer({"bootstrap.servers": bs, "group.id": "obs-idle",
                         "fetch.wait.max.ms": 10000, "enable.auto.commit": False})
        idle.assign([TopicPartition("obs-topic", 0, n)])
        inflight = 0
        end = time.time() + 15
        while time.time() < end and inflight < 1:
            idle.poll(0.5)
            inflight = value(parse_metrics(http_get(hport, "/metrics")[1]),
                             "runnel_agent_requests_in_flight")
        idle.close()
        check("dev_in_flight", inflight >= 1, inflight)
        check("dev_conns_accepted", d("runnel_agent_connections_accepted_total") >= 2)
        check("dev_fetch_latency", any(k.startswith(
            'runnel_agent_request_duration_seconds_count{api="Fetch"') and v > 0
            for k, v in after.items()))
        check("dev_process", value(after, "process_resident_memory_bytes") > 1 << 20 and
              value(after, "process_cpu_seconds_total") > 0 and
              0 < value(after, "process_open_fds") <= value(after, "process_max_fds"),
              [(k, v) for k, v in after.items() if k.startswith("process_")])
        check("dev_scrapes_counted", value(after, 'runnel_http_requests_total{path="/metrics"}')
              >= 2)
        # A client that speaks garbage on the Kafka port is counted as an error.
        s = socket.create_connection(("127.0.0.1", kport), 5)
        s.sendall(b"\x00\x00\x00\x08\x7f\x7f\x00\x00\x00\x00\x00\x01")
        try:
            s.recv(10)
        except OSError:
            pass
        s.close()
        time.sleep(0.3)
        errs = scrape(hport, "dev_errors")
        check("dev_request_errors", sum(v for k, v in errs.items()
                                        if k.startswith("runnel_agent_request_errors_total"))
              >= 1, [k for k in errs if "errors_total" in k])

        # The listener's answers to bad requests.
        status, _ = http_get(hport, "/nope")
        check("http_404", status == 404, status)
        out = raw_request(hport, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
        check("http_405", out.startswith("HTTP/1.1 405 "), out[:80])
        out = raw_request(hport, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        check("http_400", out.startswith("HTTP/1.1 400 "), out[:80])
        out = raw_request(hport, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        check("http_431", out.startswith("HTTP/1.1 431 "), out[:80])
        out = raw_request(hport, b"HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        check("http_head", out.startswith("HTTP/1.1 200 ") and "Content-Length:" in out and
              "runnel_" not in out, out[:200])
        status, _ = http_get(hport, "/healthz")
        check("http_still_serving", status == 200, status)
    finally:
        stop(proc)
        log.close()
    check("dev_exit", proc.returncode == 0, proc.returncode)
    # The debug access log: JSON lines, one per request, with its id (peer, correlation_id) and
    # the client id made safe.
    reqs, bad = [], []
    for line in open(os.path.join(tmp, "dev.log")):
        try:
            ev = json.loads(line)
        except ValueError:
            if line.startswith("{"):
                bad.append(line)
            continue
        if ev.get("event") == "request":
            reqs.append(ev)
    check("log_json", not bad, bad[:2])
    banner = "Metrics: curl http://127.0.0.1:%d/metrics" % hport
    check("dev_banner", banner in open(os.path.join(tmp, "dev.log")).read(), banner)
    produce = [e for e in reqs if e.get("api") == "Produce"]
    check("log_request_lines", len(produce) >= 1 and all(
        e.get("peer") and e.get("correlation_id", "").isdigit() and
        e.get("client_id") == "obs _quoted_ producer" and int(e.get("duration_us", "-1")) >= 0
        for e in produce), produce[:2])


def scenario_split(runnel, tmp):
    mport, mhttp, kport, ahttp = free_port(), free_port(), free_port(), free_port()
    mlog = open(os.path.join(tmp, "meta.log"), "w")
    alog = open(os.path.join(tmp, "agent.log"), "w")
    objects = os.path.join(tmp, "objects")
    os.makedirs(objects)
    meta = subprocess.Popen([runnel, "metadata", "--data.dir", os.path.join(tmp, "meta"),
                             "--listen", "127.0.0.1:%d" % mport,
                             "--http.listen", "127.0.0.1:%d" % mhttp], stdout=mlog, stderr=mlog)
    agent = None
    try:
        wait_port(mhttp, meta)
        status, body = http_get(mhttp, "/readyz")
        check("meta_readyz", status == 200 and "metadata_journal: ok" in body, (status, body))
        ms = scrape(mhttp, "meta_scrape")
        check("meta_only_meta", "runnel_meta_topics" in ms and
              not any(k.startswith("runnel_agent_") for k in ms), sorted(ms)[:10])
        agent = subprocess.Popen([runnel, "agent", "--listen", "127.0.0.1:%d" % kport,
                                  "--metadata", "127.0.0.1:%d" % mport,
                                  "--bucket", "file://" + objects, "--cluster.mode", "direct",
                                  "--http.listen", "127.0.0.1:%d" % ahttp],
                                 stdout=alog, stderr=alog)
        wait_port(ahttp, agent)
        status, body = wait_ready(ahttp)
        check("agent_readyz", status == 200, (status, body))
        end = time.time() + 20
        live = 0
        while time.time() < end:
            live = value(parse_metrics(http_get(mhttp, "/metrics")[1]), "runnel_meta_agents")
            if live == 1:
                break
            time.sleep(0.2)
        check("meta_live_agents", live == 1, live)
        subprocess.run(["kcat", "-b", "127.0.0.1:%d" % kport, "-P", "-t", "split"],
                       input=b"one\ntwo\nthree\n", timeout=30, check=False)
        a = scrape(ahttp, "agent_scrape")
        check("agent_only_agent", value(a, "runnel_agent_produce_bytes_total") > 0 and
              not any(k.startswith("runnel_meta_") for k in a),
              value(a, "runnel_agent_produce_bytes_total"))
        m2 = scrape(mhttp, "meta_scrape2")
        check("meta_saw_commit", value(m2, 'runnel_meta_requests_total{api="MetaCommit"}') >= 1)
        # The metadata service hangs (SIGSTOP: its connection stays up, nothing answers): the
        # agent turns not ready once its probe has waited 10 s, and ready again after SIGCONT.
        os.kill(meta.pid, signal.SIGSTOP)
        try:
            end = time.time() + 30
            status, body = 200, ""
            while time.time() < end:
                status, body = http_get(ahttp, "/readyz")
                if status == 503:
                    break
                time.sleep(0.5)
            check("agent_not_ready_meta_hung", status == 503 and "not answered" in body,
                  (status, body))
        finally:
            os.kill(meta.pid, signal.SIGCONT)
        status, body = wait_ready(ahttp, timeout=30)
        check("agent_ready_meta_back", status == 200, (status, body))
        # The metadata service goes away: the agent is alive but no longer ready.
        stop(meta)
        end = time.time() + 20
        status, body = 200, ""
        while time.time() < end:
            status, body = http_get(ahttp, "/readyz")
            if status == 503:
                break
            time.sleep(0.2)
        check("agent_not_ready_without_meta", status == 503 and "metadata" in body, (status, body))
        status, _ = http_get(ahttp, "/healthz")
        check("agent_alive_without_meta", status == 200, status)
    finally:
        if agent is not None:
            stop(agent)
        stop(meta)
        mlog.close()
        alog.close()
    check("meta_exit", meta.returncode == 0, meta.returncode)
    check("agent_exit", agent is not None and agent.returncode == 0,
          agent.returncode if agent is not None else None)


def scenario_journal_failure(runnel, tmp):
    """The metadata service's fdatasync starts failing (the journal's test hook): the service
    acknowledges nothing, turns not ready and says so in its metrics; the agent's produce errors
    are counted by Kafka error."""
    mport, mhttp, kport, ahttp = free_port(), free_port(), free_port(), free_port()
    fail = os.path.join(tmp, "fail-fsync")
    env = dict(os.environ, RUNNEL_META_FAIL_FSYNC_FILE=fail)
    mlog = open(os.path.join(tmp, "meta-fail.log"), "w")
    alog = open(os.path.join(tmp, "agent-fail.log"), "w")
    objects = os.path.join(tmp, "objects-fail")
    os.makedirs(objects)
    meta = subprocess.Popen([runnel, "metadata", "--data.dir", os.path.join(tmp, "meta-fail"),
                             "--listen", "127.0.0.1:%d" % mport,
                             "--http.listen", "127.0.0.1:%d" % mhttp],
                            stdout=mlog, stderr=mlog, env=env)
    agent = None
    try:
        wait_port(mhttp, meta)
        agent = subprocess.Popen([runnel, "agent", "--listen", "127.0.0.1:%d" % kport,
                                  "--metadata", "127.0.0.1:%d" % mport,
                                  "--bucket", "file://" + objects,
                                  "--http.listen", "127.0.0.1:%d" % ahttp],
                                 stdout=alog, stderr=alog)
        wait_port(ahttp, agent)
        status, _ = wait_ready(ahttp)
        check("fail_agent_ready", status == 200, status)
        kcat = ["kcat", "-b", "127.0.0.1:%d" % kport, "-P", "-t", "jf",
                "-X", "message.timeout.ms=4000", "-X", "retries=0"]
        p = subprocess.run(kcat, input=b"before\n", timeout=60)
        check("fail_produce_before", p.returncode == 0, p.returncode)
        open(fail, "w").close()
        p = subprocess.run(kcat, input=b"after\n", timeout=60, stderr=subprocess.PIPE)
        check("fail_produce_refused", p.returncode != 0, p.returncode)
        status, body = http_get(mhttp, "/readyz")
        check("fail_meta_not_ready", status == 503 and "journal failed" in body, (status, body))
        m = scrape(mhttp, "fail_meta_scrape")
        check("fail_meta_gauge", value(m, "runnel_meta_journal_failed") == 1,
              value(m, "runnel_meta_journal_failed"))
        check("fail_meta_fsync_errors", value(m, "runnel_meta_journal_fsync_errors_total") >= 1,
              value(m, "runnel_meta_journal_fsync_errors_total"))
        a = scrape(ahttp, "fail_agent_scrape")
        failed = sum(v for k, v in a.items()
                     if k.startswith("runnel_agent_produce_failed_bytes_total"))
        errs = sum(v for k, v in a.items()
                   if k.startswith('runnel_agent_response_errors_total{api="Produce"'))
        check("fail_agent_counts", failed > 0 and errs >= 1,
              [k for k in a if "failed" in k or "response_errors" in k])
    finally:
        if agent is not None:
            stop(agent)
        stop(meta)
        mlog.close()
        alog.close()


def scenario_store_outage(runnel, tmp):
    """The object store fails everything for its first 3 s (faulty+ outage): the agent starts,
    is not ready while its store probe cannot get an answer, then becomes ready; the retries the
    probe needed are counted."""
    mport, kport, ahttp = free_port(), free_port(), free_port()
    mlog = open(os.path.join(tmp, "meta-outage.log"), "w")
    alog = open(os.path.join(tmp, "agent-outage.log"), "w")
    objects = os.path.join(tmp, "objects-outage")
    os.makedirs(objects)
    meta = subprocess.Popen([runnel, "metadata", "--data.dir", os.path.join(tmp, "meta-outage"),
                             "--listen", "127.0.0.1:%d" % mport], stdout=mlog, stderr=mlog)
    agent = None
    try:
        wait_port(mport, meta)
        agent = subprocess.Popen([runnel, "agent", "--listen", "127.0.0.1:%d" % kport,
                                  "--metadata", "127.0.0.1:%d" % mport,
                                  "--bucket", "faulty+file://%s?outage=0-3000" % objects,
                                  "--http.listen", "127.0.0.1:%d" % ahttp],
                                 stdout=alog, stderr=alog)
        wait_port(ahttp, agent)
        status, body = http_get(ahttp, "/readyz")
        check("outage_not_ready", status == 503 and "store:" in body and "store: ok" not in body,
              (status, body))
        status, body = wait_ready(ahttp, timeout=30)
        check("outage_ready_after", status == 200 and "store: ok" in body, (status, body))
        a = scrape(ahttp, "outage_scrape")
        check("outage_retries", value(a, 'runnel_store_retries_total{op="head"}') >= 1,
              value(a, 'runnel_store_retries_total{op="head"}'))
    finally:
        if agent is not None:
            stop(agent)
        stop(meta)
        mlog.close()
        alog.close()


def scenario_backpressure(runnel, tmp):
    """A slow store (every operation 400 ms late) and a 1 MiB buffer: producing 6 MiB must pause
    reading, and the pause shows in the backpressure series; nothing is lost."""
    from confluent_kafka import Producer
    mport, mhttp, kport, ahttp = free_port(), free_port(), free_port(), free_port()
    mlog = open(os.path.join(tmp, "meta-bp.log"), "w")
    alog = open(os.path.join(tmp, "agent-bp.log"), "w")
    objects = os.path.join(tmp, "objects-bp")
    os.makedirs(objects)
    meta = subprocess.Popen([runnel, "metadata", "--data.dir", os.path.join(tmp, "meta-bp"),
                             "--listen", "127.0.0.1:%d" % mport, "--snapshot.bytes", "1k",
                             "--snapshot.state.percent", "0",
                             "--http.listen", "127.0.0.1:%d" % mhttp], stdout=mlog, stderr=mlog)
    agent = None
    try:
        wait_port(mport, meta)
        agent = subprocess.Popen([runnel, "agent", "--listen", "127.0.0.1:%d" % kport,
                                  "--metadata", "127.0.0.1:%d" % mport,
                                  "--bucket", "faulty+file://%s?latency_ms=400" % objects,
                                  "--buffer.max.bytes", "1m", "--flush.bytes", "256k",
                                  "--flush.interval.ms", "50",
                                  "--http.listen", "127.0.0.1:%d" % ahttp],
                                 stdout=alog, stderr=alog)
        wait_port(kport, agent)
        p = Producer({"bootstrap.servers": "127.0.0.1:%d" % kport, "acks": "all",
                      "linger.ms": 5, "compression.type": "none"})
        acked = []
        n = 6 * 64
        for i in range(n):
            while True:
                try:
                    p.produce("bp", value=os.urandom(16 * 1024),
                              on_delivery=lambda err, msg: acked.append(err))
                    break
                except BufferError:
                    p.poll(0.1)
        p.flush(120)
        check("bp_all_acked", len(acked) == n and all(e is None for e in acked),
              (len(acked), [e for e in acked if e is not None][:3]))
        a = scrape(ahttp, "bp_scrape")
        check("bp_paused_time", value(a, "runnel_agent_backpressure_seconds_total") > 0,
              value(a, "runnel_agent_backpressure_seconds_total"))
        check("bp_released", value(a, "runnel_agent_backpressure_active") == 0 and
              value(a, "runnel_agent_buffered_bytes") == 0,
              (value(a, "runnel_agent_backpressure_active"),
               value(a, "runnel_agent_buffered_bytes")))
        check("bp_produce_bytes", value(a, "runnel_agent_produce_bytes_total") >= n * 16 * 1024,
              value(a, "runnel_agent_produce_bytes_total"))
        # The metadata service journaled dozens of commits with snapshot.bytes=1k: snapshots.
        end = time.time() + 20
        m = {}
        while time.time() < end:
            m = parse_metrics(http_get(mhttp, "/metrics")[1])
            if value(m, 'runnel_meta_snapshots_total{result="written"}') >= 1:
                break
            time.sleep(0.2)
        check("bp_meta_snapshots", value(m, 'runnel_meta_snapshots_total{result="written"}') >= 1
              and value(m, "runnel_meta_snapshot_duration_seconds_count") >= 1,
              [(k, v) for k, v in m.items() if "snapshot" in k and "bucket" not in k])
    finally:
        if agent is not None:
            stop(agent)
        stop(meta)
        mlog.close()
        alog.close()


def scenario_bad_listen(runnel, tmp):
    """A listener that cannot start is a clear start-up error (exit 1), never a hang."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        r = subprocess.run([runnel, "dev", "--listen", "127.0.0.1:0",
                            "--data.dir", os.path.join(tmp, "dev-busy"),
                            "--http.listen", "127.0.0.1:%d" % port],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        check("busy_port_dev", r.returncode == 1 and b"address already in use" in r.stderr,
              (r.returncode, r.stderr[-300:]))
        r = subprocess.run([runnel, "metadata", "--data.dir", os.path.join(tmp, "meta-busy"),
                            "--listen", "127.0.0.1:0", "--http.listen", "127.0.0.1:%d" % port],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        check("busy_port_meta", r.returncode == 1 and b"address already in use" in r.stderr,
              (r.returncode, r.stderr[-300:]))
        r = subprocess.run([runnel, "metadata", "--data.dir", os.path.join(tmp, "meta-bad"),
                            "--listen", "127.0.0.1:0", "--http.listen", "nonsense"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        check("bad_address_meta", r.returncode == 1 and b"bad listen address" in r.stderr,
              (r.returncode, r.stderr[-300:]))
    except subprocess.TimeoutExpired as e:
        check("bad_listen_no_hang", False, repr(e))
    finally:
        busy.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runnel", required=True)
    ap.add_argument("--scenario", default="all", choices=["dev", "split", "fail", "all"])
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="runnel-obs-")
    try:
        if args.scenario in ("dev", "all"):
            scenario_dev(args.runnel, tmp)
        if args.scenario in ("split", "all"):
            scenario_split(args.runnel, tmp)
            scenario_bad_listen(args.runnel, tmp)
        if args.scenario in ("fail", "all"):
            scenario_journal_failure(args.runnel, tmp)
            scenario_store_outage(args.runnel, tmp)
            scenario_backpressure(args.runnel, tmp)
    except Exception as e:  # a crash of the harness is a failure, with its logs
        check("harness", False, repr(e))
    if failures:
        for f in sorted(os.listdir(tmp)):
            path = os.path.join(tmp, f)
            if f.endswith(".log"):
                print("---- %s (tail)" % f)
                print(open(path).read()[-3000:])
    shutil.rmtree(tmp, ignore_errors=True)
    print("%d failure(s)" % len(failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
