"""Shared pieces of Runnel's client integration tests: the check reporter, deterministic payloads,
free loopback ports, and the clusters the tests run against.

Clusters (each a context manager giving `.bootstrap`):
  MockCluster     librdkafka's mock cluster (runnel_mock_kafka), to validate the driver itself
  CaptureCluster  tests/golden/capture/capture_broker.py (needs the Kafka JSON specs), to validate
                  the checks the mock cannot serve (admin APIs, @platformatic, newer versions)
  DevCluster      `runnel dev` on a free port with a temporary data directory
  SplitCluster    RGW (tests/integration/lib/rgw.sh) + `runnel metadata` + `runnel agent`
  AddressCluster  an address given by hand
Everything listens on 127.0.0.1 and every wait is bounded.
"""

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
NODE_DIR = os.path.join(ROOT, "tests", "node")


class CheckFailed(Exception):
    """A check's assertion failed; the message says what was expected and what came back."""


class Skip(Exception):
    """The check does not apply to this client or cluster; the message says why."""


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def expect_eq(got, want, what):
    if got != want:
        raise CheckFailed("%s: expected %s, got %s" % (what, short(want), short(got)))


def short(v, limit=160):
    s = repr(v)
    return s if len(s) <= limit else s[:limit] + "...(%d chars)" % len(s)


class Reporter:
    """Runs named checks, prints one PASS/FAIL/SKIP line each and a closing count line."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.failures = []

    def line(self, status, name, msg=""):
        text = "%s %s/%s" % (status, self.prefix, name)
        if msg:
            text += ": " + msg
        print(text, flush=True)

    def run(self, name, fn, *args):
        t0 = time.monotonic()
        try:
            fn(*args)
        except Skip as e:
            self.skipped += 1
            self.line("SKIP", name, str(e))
            return None
        except CheckFailed as e:
            self.failed += 1
            self.failures.append(name)
            self.line("FAIL", name, str(e))
            return False
        except Exception as e:  # a client error is a failure of that check, with its trace
            self.failed += 1
            self.failures.append(name)
            self.line("FAIL", name, "%s: %s" % (type(e).__name__, e))
            traceback.print_exc(file=sys.stdout)
            return False
        self.passed += 1
        self.line("PASS", name, "%.1f s" % (time.monotonic() - t0))
        return True

    def record(self, status, name, msg=""):
        """Counts a result produced elsewhere (the node drivers)."""
        if status == "PASS":
            self.passed += 1
        elif status == "SKIP":
            self.skipped += 1
        else:
            self.failed += 1
            self.failures.append(name)
        self.line(status, name, msg)

    def keep_on_failure(self, cluster):
        """Asks the cluster to keep its data and logs if any check failed."""
        if self.failed:
            cluster.keep = True

    def summary(self):
        print("%d passed, %d failed, %d skipped" % (self.passed, self.failed, self.skipped),
              flush=True)
        return 0 if self.failed == 0 and self.passed > 0 else 1


# ---- deterministic payloads ----------------------------------------------------------------
# value(seed, size): SHAKE-256 of the seed string, `size` bytes: incompressible.
# cvalue(seed, size): SHAKE-256 of the seed, 64 bytes, repeated to `size`: compressible, so a
# codec really compresses (librdkafka and kafka-python send a batch uncompressed when that is
# not smaller). The node drivers compute the same bytes (payload.mjs).

def value(seed, size):
    return hashlib.shake_256(seed.encode()).digest(size)


def cvalue(seed, size):
    block = hashlib.shake_256(seed.encode()).digest(64)
    return (block * (size // 64 + 1))[:size]


def hexvalue(seed, size):
    """Printable variant for kcat's line-based input: hex of value(), `size` characters."""
    return hashlib.shake_256(seed.encode()).hexdigest((size + 1) // 2)[:size].encode()


def unique(prefix):
    return "%s-%d-%d" % (prefix, os.getpid(), int(time.time() * 1000) % 100000000)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(host, port, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %s:%d"
                               % (proc.returncode, host, port))
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("nothing listening on %s:%d after %.0f s" % (host, port, timeout))


def stop_process(proc, sig=signal.SIGTERM, timeout=30):
    """Sends `sig` and waits; SIGKILL after `timeout`. Returns the exit status."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return None


# ---- clusters ----------------------------------------------------------------------------------

class AddressCluster:
    kind = "address"

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def find_mock_binary():
    build = os.path.join(ROOT, "build")
    dirs = sorted(os.listdir(build)) if os.path.isdir(build) else []
    for cand in [os.environ.get("RUNNEL_MOCK_KAFKA", "")] + [
            os.path.join(build, d, "tests", "integration", "clients", "runnel_mock_kafka")
            for d in dirs]:
        if cand and os.access(cand, os.X_OK):
            return cand
    raise RuntimeError("runnel_mock_kafka not found: build it "
                       "(cmake --build BUILD --target runnel_mock_kafka) or set RUNNEL_MOCK_KAFKA")


class MockCluster:
    """librdkafka's mock cluster (2.0.2: Produce <= 7, Fetch <= 11, ListOffsets <= 5,
    Metadata <= 2, InitProducerId, groups; no admin APIs)."""
    kind = "mock"

    def __init__(self, binary=None, brokers=1, topics=()):
        self.binary = binary or find_mock_binary()
        self.args = ["--brokers", str(brokers)]
        for t in topics:
            self.args += ["--topic", t]

    def __enter__(self):
        self.proc = subprocess.Popen([self.binary] + self.args, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("BOOTSTRAP "):
            self.proc.kill()
            raise RuntimeError("mock cluster did not start: %r" % line)
        self.bootstrap = line.split()[1]
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        stop_process(self.proc)
        return False


class CaptureCluster:
    """The golden helper's recording broker, used here only as a second known peer."""
    kind = "capture"

    def __init__(self, spec=None):
        self.spec = spec or os.environ.get(
            "SPEC_DIR", os.path.join(ROOT, "..", "shared", "kafka-protocol", "messages"))

    def __enter__(self):
        self.tmp = tempfile.mkdtemp(prefix="runnel-capture-")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "golden", "capture", "capture_broker.py"),
             "--spec", self.spec, "--out", self.tmp], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("LISTEN "):
            self.proc.kill()
            raise RuntimeError("capture broker did not start: %r" % line)
        self.bootstrap = "127.0.0.1:%s" % line.split()[1]
        return self

    def __exit__(self, *exc):
        stop_process(self.proc)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False


class DevCluster:
    """`runnel dev` on a free loopback port. restart() stops it with SIGTERM (which must exit 0)
    and starts it again on the same port and data directory."""
    kind = "dev"

    def __init__(self, runnel, data_dir=None, extra_args=(), log_dir=None):
        self.runnel = runnel
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="runnel-dev-")
        self.port = free_port()
        self.bootstrap = "127.0.0.1:%d" % self.port
        self.extra = list(extra_args)
        self.log_dir = log_dir or self.data_dir + ".logs"
        os.makedirs(self.log_dir, exist_ok=True)
        self.starts = 0
        self.proc = None
        self.keep = False  # set when a check failed: keep data and logs

    def start(self):
        self.starts += 1
        log = open(os.path.join(self.log_dir, "dev-%d.log" % self.starts), "w")
        self.proc = subprocess.Popen(
            [self.runnel, "dev", "--listen", self.bootstrap, "--data-dir", self.data_dir]
            + self.extra, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_port("127.0.0.1", self.port, 30, self.proc)

    def stop(self, sig=signal.SIGTERM):
        rc = stop_process(self.proc, sig)
        self.proc = None
        return rc

    def restart(self):
        """SIGTERM, then start again on the same port and data directory (even when the exit
        status was wrong, so later checks still see what survived); raises if it was not 0."""
        rc = self.stop()
        self.start()
        if rc != 0:
            raise CheckFailed("runnel dev exited %s on SIGTERM (want 0); log in %s"
                              % (rc, self.log_dir))

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.stop()
        if self.own_dir and exc[0] is None and not self.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            shutil.rmtree(self.log_dir, ignore_errors=True)
        else:
            print("runnel data in %s, logs in %s (kept)" % (self.data_dir, self.log_dir))
        return False


class SplitCluster:
    """RGW + `runnel metadata` + `runnel agent`, each its own process, so a scenario can kill
    the agent and the metadata service separately."""
    kind = "split"

    def __init__(self, runnel):
        self.runnel = runnel
        self.tmp = tempfile.mkdtemp(prefix="runnel-split-")
        self.rgw_dir = os.path.join(self.tmp, "rgw")
        self.meta_dir = os.path.join(self.tmp, "metadata")
        self.mport = free_port()
        self.aport = free_port()
        self.bootstrap = "127.0.0.1:%d" % self.aport
        self.env = dict(os.environ)
        self.meta = None
        self.agent = None
        self.starts = 0
        self.keep = False  # set when a check failed: keep logs

    def start_rgw(self):
        rgw = os.path.join(ROOT, "tests", "integration", "lib", "rgw.sh")
        out = subprocess.run(["bash", rgw, "start", self.rgw_dir], capture_output=True, text=True,
                             timeout=120)
        if out.returncode != 0:
            raise RuntimeError("rgw.sh start exited %d: %s %s" % (
                out.returncode, out.stdout[-500:], out.stderr[-2000:]))
        for line in out.stdout.splitlines():
            if line.startswith("export "):
                k, _, v = line[len("export "):].partition("=")
                self.env[k] = v.strip("'\"")
        bucket = self.env.get("RUNNEL_S3_BUCKET", "runnel")
        endpoint = self.env["RUNNEL_S3_ENDPOINT"]
        self.bucket_url = ("s3://%s/clients?endpoint=%s&region=us-east-1&path_style=true"
                           % (bucket, endpoint))

    def log(self, name):
        self.starts += 1
        return open(os.path.join(self.tmp, "%s-%d.log" % (name, self.starts)), "w")

    def start_metadata(self):
        os.makedirs(self.meta_dir, exist_ok=True)
        self.meta = subprocess.Popen(
            [self.runnel, "metadata", "--listen", "127.0.0.1:%d" % self.mport,
             "--data-dir", self.meta_dir],
            env=self.env, stdin=subprocess.DEVNULL, stdout=self.log("metadata"),
            stderr=subprocess.STDOUT)
        wait_port("127.0.0.1", self.mport, 30, self.meta)

    def start_agent(self):
        self.agent = subprocess.Popen(
            [self.runnel, "agent", "--listen", self.bootstrap, "--advertise", self.bootstrap,
             "--metadata", "127.0.0.1:%d" % self.mport, "--bucket", self.bucket_url],
            env=self.env, stdin=subprocess.DEVNULL, stdout=self.log("agent"),
            stderr=subprocess.STDOUT)
        wait_port("127.0.0.1", self.aport, 30, self.agent)

    def __enter__(self):
        try:
            self.start_rgw()
            self.start_metadata()
            self.start_agent()
        except BaseException:
            self.keep = True
            self.__exit__(None, None, None)  # stop whatever started, RGW included
            raise
        return self

    def __exit__(self, *exc):
        for p in (self.agent, self.meta):
            if p is not None:
                stop_process(p)
        rgw = os.path.join(ROOT, "tests", "integration", "lib", "rgw.sh")
        subprocess.run(["bash", rgw, "stop", self.rgw_dir], capture_output=True, timeout=120)
        if exc[0] is None and not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print("runnel logs kept in %s" % self.tmp)
        return False


def make_cluster(args):
    """Builds the cluster named by --cluster (see add_cluster_args)."""
    if args.bootstrap:
        return AddressCluster(args.bootstrap)
    if args.cluster == "mock":
        return MockCluster(args.mock_binary)
    if args.cluster == "capture":
        return CaptureCluster()
    if not args.runnel:
        raise SystemExit("--cluster %s needs --runnel PATH" % args.cluster)
    if args.cluster == "dev":
        return DevCluster(args.runnel)
    return SplitCluster(args.runnel)


def add_cluster_args(ap):
    ap.add_argument("--cluster", choices=["mock", "capture", "dev", "split"], default="mock")
    ap.add_argument("--bootstrap", help="use this address instead of starting a cluster")
    ap.add_argument("--runnel", help="path of the runnel binary (dev and split clusters)")
    ap.add_argument("--mock-binary", help="path of runnel_mock_kafka (default: found in build/)")
