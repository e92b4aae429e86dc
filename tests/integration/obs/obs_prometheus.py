#!/usr/bin/python3
"""A real Prometheus server scrapes Runnel (docs/observability.md).

Starts `runnel dev --http.listen` and Debian's `prometheus` (loopback only, a temporary data
directory, a 1 s scrape interval), produces with kcat, then asks Prometheus' HTTP API until it
reports the target up, runnel_agent_produce_bytes_total at least what was produced, a histogram
quantile over the agent's request latency and runnel_ready 1; also loads deploy/prometheus/
runnel-alerts.yml (checked with `promtool check rules` first) and sees its rules healthy. Everything is bounded in time and
stopped at the end.

Usage: obs_prometheus.py --runnel PATH [--prometheus PATH]
Prints PASS/FAIL per check; exits 1 when any check failed, 77 when prometheus is missing.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

failures = []


def check(name, cond, detail=""):
    print("%s prometheus/%s%s" % ("PASS" if cond else "FAIL", name,
                                   "" if cond else ": " + str(detail)))
    sys.stdout.flush()
    if not cond:
        failures.append(name)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, timeout=30):
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


def query(pport, expr):
    """The result vector of an instant query, or None on an API error."""
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (pport, urllib.parse.urlencode({"query": expr}))
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            doc = json.loads(r.read().decode())
    except OSError:
        return None
    if doc.get("status") != "success":
        return None
    return doc["data"]["result"]


def poll(pport, expr, ok, timeout=60):
    """Queries until ok(result) holds or the time is up; returns the last result."""
    end = time.time() + timeout
    res = None
    while time.time() < end:
        res = query(pport, expr)
        if res is not None and ok(res):
            return res
        time.sleep(0.5)
    return res


def stop(proc):
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runnel", required=True)
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "")
    args = ap.parse_args()
    if not args.prometheus or not os.path.exists(args.prometheus):
        print("SKIP prometheus not installed (deploy/install-deps.sh installs it)")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="runnel-prom-")
    kport, hport, pport = free_port(), free_port(), free_port()
    rlog = open(os.path.join(tmp, "runnel.log"), "w")
    plog = open(os.path.join(tmp, "prometheus.log"), "w")
    runnel = prom = None
    try:
        runnel = subprocess.Popen([args.runnel, "dev", "--listen", "127.0.0.1:%d" % kport,
                                   "--http.listen", "127.0.0.1:%d" % hport,
                                   "--data.dir", os.path.join(tmp, "dev")],
                                  stdout=rlog, stderr=rlog)
        wait_port(hport, runnel)
        rules = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                             "deploy", "prometheus", "runnel-alerts.yml")
        p = subprocess.run(["promtool", "check", "rules", rules], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        check("alert_rules_valid", p.returncode == 0, p.stdout.decode()[-1000:])
        cfg = os.path.join(tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "  evaluation_interval: 1s\n"
                    "rule_files: ['%s']\n"
                    "scrape_configs:\n  - job_name: runnel\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % (os.path.abspath(rules), hport))
        prom = subprocess.Popen([args.prometheus, "--config.file=" + cfg,
                                 "--storage.tsdb.path=" + os.path.join(tmp, "tsdb"),
                                 "--web.listen-address=127.0.0.1:%d" % pport,
                                 "--storage.tsdb.retention.time=1h"],
                                stdout=plog, stderr=plog)
        wait_port(pport, prom)
        payload = b"".join(b"message %d\n" % i for i in range(100))
        p = subprocess.run(["kcat", "-b", "127.0.0.1:%d" % kport, "-P", "-t", "prom"],
                           input=payload, timeout=60)
        check("produced", p.returncode == 0, p.returncode)
        up = poll(pport, 'up{job="runnel"}', lambda r: len(r) == 1 and r[0]["value"][1] == "1")
        check("target_up", up is not None and len(up) == 1 and up[0]["value"][1] == "1", up)
        # kcat sends the 100 lines as 100 records; their values alone are len(payload) - 100.
        need = len(payload) - 100
        res = poll(pport, "runnel_agent_produce_bytes_total",
                   lambda r: len(r) == 1 and float(r[0]["value"][1]) >= need)
        check("produce_bytes_series", res is not None and len(res) == 1 and
              float(res[0]["value"][1]) >= need, res)
        if res:
            check("series_labels", res[0]["metric"].get("job") == "runnel" and
                  res[0]["metric"].get("instance") == "127.0.0.1:%d" % hport, res[0]["metric"])
        q = ('histogram_quantile(0.99, sum by (le) '
             '(runnel_agent_request_duration_seconds_bucket{api="Produce"}))')
        res = poll(pport, q, lambda r: len(r) == 1 and r[0]["value"][1] not in ("NaN",))
        check("latency_quantile", res is not None and len(res) == 1 and
              float(res[0]["value"][1]) > 0, res)
        res = poll(pport, "runnel_ready", lambda r: len(r) == 1 and r[0]["value"][1] == "1")
        check("ready_series", res is not None and len(res) == 1 and res[0]["value"][1] == "1", res)
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/rules" % pport,
                                        timeout=5) as r:
                groups = json.loads(r.read().decode())["data"]["groups"]
        except (OSError, ValueError, KeyError) as e:
            groups = repr(e)
        names = [g.get("name") for g in groups] if isinstance(groups, list) else groups
        check("alert_rules_loaded", isinstance(groups, list) and "runnel" in names and
              all(r.get("health") != "err" for g in groups for r in g.get("rules", [])), names)
        res = poll(pport, 'ALERTS{alertname="RunnelNotReady"}', lambda r: True, timeout=3)
        check("no_not_ready_alert", res == [], res)
        res = poll(pport, "runnel_meta_journal_fsync_duration_seconds_count",
                   lambda r: len(r) == 1 and float(r[0]["value"][1]) >= 1)
        check("meta_series", res is not None and len(res) == 1, res)
    except Exception as e:
        check("harness", False, repr(e))
    finally:
        stop(prom)
        stop(runnel)
        rlog.close()
        plog.close()
    if failures:
        for name in ("runnel.log", "prometheus.log"):
            print("---- %s (tail)" % name)
            print(open(os.path.join(tmp, name)).read()[-3000:])
    shutil.rmtree(tmp, ignore_errors=True)
    print("%d failure(s)" % len(failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
