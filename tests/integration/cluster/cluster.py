"""Many agents on loopback for the cluster tests (issue 6): RGW (tests/integration/lib/rgw.sh),
one `runnel metadata`, N `runnel agent` processes and, in load-balancer mode, Debian's HAProxy
in TCP mode in front of them.

  ManyAgents(runnel, mode="lb")      every agent advertises HAProxy's address; HAProxy knows one
                                     more server slot than agents started, so a fourth agent can
                                     join under load (add_agent())
  ManyAgents(runnel, mode="direct")  every agent advertises its own address and registers with
                                     the metadata service (short heartbeat and expiry)
  ManyAgents(runnel, mode="solo")    load-balancer mode without a balancer: each agent is a
                                     one-broker cluster at its own address (benchmarks)

Every agent serves /metrics and /readyz on its own HTTP port; HAProxy health-checks agents with
GET /readyz and is driven through its runtime API (a unix socket): `only(i)` puts every other server in
maintenance so new connections go to agent i while established ones carry on, `sessions()`
reads each server's current and total session counts. Every wait is bounded.
"""

import os
import signal
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "clients"))

from common import SplitCluster, free_port, stop_process, wait_port  # noqa: E402

HEARTBEAT_MS = 300   # direct mode: heartbeat interval of the test agents
SESSION_MS = 2000    # direct mode: the metadata service forgets an agent this long after its last


class Agent:
    def __init__(self, idx, port, zone):
        self.idx = idx      # 1-based slot, also the HAProxy server name a<idx>
        self.port = port
        self.http = free_port()  # /metrics, /healthz, /readyz
        self.zone = zone
        self.proc = None
        self.started = False

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port


class ManyAgents(SplitCluster):
    def __init__(self, runnel, mode="lb", agents=3, spare=1, zones=None, extra=()):
        super().__init__(runnel)
        self.mode = mode
        self.extra = list(extra)
        zones = zones or [""] * (agents + spare)
        self.agents = [Agent(i + 1, free_port(), zones[i]) for i in range(agents + spare)]
        self.n_start = agents
        self.hport = free_port()
        self.meta_http = free_port()  # the metadata service's /metrics
        self.haproxy = None
        self.sock = os.path.join(self.tmp, "haproxy.sock")
        if mode == "lb":
            self.bootstrap = "127.0.0.1:%d" % self.hport
        else:
            self.bootstrap = self.agents[0].addr

    # ---- processes ----

    def start_metadata(self):
        os.makedirs(self.meta_dir, exist_ok=True)
        self.meta = subprocess.Popen(
            [self.runnel, "metadata", "--listen", "127.0.0.1:%d" % self.mport,
             "--data-dir", self.meta_dir, "--http-listen", "127.0.0.1:%d" % self.meta_http],
            env=self.env, stdin=subprocess.DEVNULL, stdout=self.log("metadata"),
            stderr=subprocess.STDOUT)
        wait_port("127.0.0.1", self.mport, 30, self.meta)

    def start_agent_idx(self, i):
        ag = self.agents[i]
        ag.started = True
        args = [self.runnel, "agent", "--listen", ag.addr,
                "--metadata", "127.0.0.1:%d" % self.mport, "--bucket", self.bucket_url,
                "--flush-interval-ms", "100", "--http-listen", "127.0.0.1:%d" % ag.http]
        if self.mode == "lb":
            args += ["--advertise", self.bootstrap, "--cluster-mode", "lb"]
        elif self.mode == "solo":
            args += ["--advertise", ag.addr, "--cluster-mode", "lb"]
        else:
            args += ["--advertise", ag.addr, "--cluster-mode", "direct",
                     "--heartbeat-interval-ms", str(HEARTBEAT_MS),
                     "--session-timeout-ms", str(SESSION_MS)]
            if ag.zone:
                args += ["--zone", ag.zone]
        ag.proc = subprocess.Popen(args + self.extra, env=self.env, stdin=subprocess.DEVNULL,
                                   stdout=self.log("agent%d" % ag.idx), stderr=subprocess.STDOUT)
        wait_port("127.0.0.1", ag.port, 30, ag.proc)

    def add_agent(self):
        """Starts the next never-started agent slot; returns its index (0-based)."""
        for i, ag in enumerate(self.agents):
            if not ag.started:
                self.start_agent_idx(i)
                return i
        raise RuntimeError("no spare agent slot")

    def kill(self, i):
        ag = self.agents[i]
        ag.proc.send_signal(signal.SIGKILL)
        ag.proc.wait(timeout=10)
        ag.proc = None

    def start_haproxy(self):
        cfg = os.path.join(self.tmp, "haproxy.cfg")
        lines = [
            "global",
            "    stats socket %s mode 600 level admin" % self.sock,
            "    maxconn 2000",
            "defaults",
            "    mode tcp",
            "    timeout connect 2s",
            "    timeout client 10m",
            "    timeout server 10m",
            "    retries 3",
            "    option redispatch",
            "frontend kafka",
            "    bind 127.0.0.1:%d" % self.hport,
            "    default_backend agents",
            "backend agents",
            "    balance roundrobin",
            "    option httpchk GET /readyz",  # ready: the store and the metadata service answer
            "    default-server check inter 200ms fall 1 rise 1",
        ]
        for ag in self.agents:
            lines.append("    server a%d %s port %d" % (ag.idx, ag.addr, ag.http))
        with open(cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdin=subprocess.DEVNULL,
                                        stdout=self.log("haproxy"), stderr=subprocess.STDOUT)
        wait_port("127.0.0.1", self.hport, 30, self.haproxy)
        self.wait_up([i for i, ag in enumerate(self.agents) if ag.proc is not None])

    def __enter__(self):
        try:
            self.start_rgw()
            self.start_metadata()
            for i in range(self.n_start):
                self.start_agent_idx(i)
            if self.mode == "lb":
                self.start_haproxy()
        except BaseException:
            self.keep = True
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.haproxy is not None:
            stop_process(self.haproxy)
        for ag in self.agents:
            if ag.proc is not None:
                stop_process(ag.proc)
                ag.proc = None
        self.agent = None
        return super().__exit__(*exc)

    def stop_agents(self):
        """SIGTERM to every running agent; {slot (1-based): exit status}. A clean stop is 0
        (under ASan a leak or an error at exit makes it non-zero)."""
        out = {}
        for ag in self.agents:
            if ag.proc is not None:
                out[ag.idx] = stop_process(ag.proc)
                ag.proc = None
        return out

    def metrics(self, i):
        """Agent i's /metrics (i = "metadata": the metadata service's) as {'name{labels}': value}
        (unlabelled names have no braces)."""
        import urllib.request
        port = self.meta_http if i == "metadata" else self.agents[i].http
        url = "http://127.0.0.1:%d/metrics" % port
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out

    # ---- HAProxy runtime API ----

    def hap(self, cmd):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(self.sock)
        s.sendall(cmd.encode() + b"\n")
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
        s.close()
        return out.decode()

    def stats(self):
        """{server index (0-based): {'status': 'UP', 'scur': int, 'stot': int}}."""
        text = self.hap("show stat")
        head = None
        out = {}
        for line in text.splitlines():
            if line.startswith("# "):
                head = line[2:].split(",")
                continue
            f = line.split(",")
            if head is None or len(f) < len(head):
                continue
            row = dict(zip(head, f))
            if row["pxname"] == "agents" and row["svname"].startswith("a"):
                i = int(row["svname"][1:]) - 1
                out[i] = {"status": row["status"], "scur": int(row["scur"] or 0),
                          "stot": int(row["stot"] or 0), "check": row.get("check_status", "")}
        return out

    def only(self, *idx):
        """New connections go only to the given agents (others in maintenance: their established
        sessions carry on)."""
        for i, ag in enumerate(self.agents):
            state = "ready" if i in idx else "maint"
            self.hap("set server agents/a%d state %s" % (ag.idx, state))

    def all_ready(self):
        self.only(*range(len(self.agents)))

    def wait_up(self, idx, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.stats()
            if all(st.get(i, {}).get("status", "").startswith("UP") and
                   st[i]["check"].startswith("L7OK") for i in idx):
                return
            time.sleep(0.1)
        raise RuntimeError("HAProxy does not see agents %s up: %s" % (idx, self.stats()))


def describe_cluster(addr, client_id="runnel-tests", timeout=10):
    """A raw DescribeCluster v0 (no Metadata round first, unlike every client library): returns
    sorted [(broker id, 'host:port')]."""
    cid = client_id.encode()
    body = struct.pack(">hhih", 60, 0, 7, len(cid)) + cid + b"\x00"  # header v2, no tags
    body += b"\x00\x00"  # include_cluster_authorized_operations=false, no tags
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("DescribeCluster: connection closed")
            buf += chunk
    r = Reader(buf[4:])
    if r.i32() != 7:
        raise RuntimeError("DescribeCluster: wrong correlation id")
    r.uvarint()  # header tags (none)
    r.i32()  # throttle
    err = r.i16()
    r.cstr()  # error message
    if err:
        raise RuntimeError("DescribeCluster: error %d" % err)
    r.cstr()  # cluster id
    r.i32()  # controller
    out = []
    for _ in range(r.uvarint() - 1):
        bid = r.i32()
        h = r.cstr()
        p = r.i32()
        r.cstr()  # rack
        r.uvarint()  # tags
        out.append((bid, "%s:%d" % (h, p)))
    return sorted(out)


class Reader:
    def __init__(self, b):
        self.b = b
        self.o = 0

    def take(self, n):
        v = self.b[self.o:self.o + n]
        if len(v) != n:
            raise RuntimeError("DescribeCluster: short response")
        self.o += n
        return v

    def i16(self):
        return struct.unpack(">h", self.take(2))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def uvarint(self):
        v, shift = 0, 0
        while True:
            c = self.take(1)[0]
            v |= (c & 0x7F) << shift
            if c < 0x80:
                return v
            shift += 7

    def cstr(self):
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()
