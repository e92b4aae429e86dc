#!/usr/bin/python3
"""Validates deploy/ where no container engine or cluster exists (issue 6):

  haproxy       `haproxy -c -f deploy/haproxy.cfg` accepts the file, and it balances TCP
  yaml          every .yml/.yaml under deploy/ parses (python3-yaml)
  compose       docker-compose.yml: MinIO, a bucket job, one metadata service, three agents and
                HAProxy; the agents are in load-balancer mode advertising HAProxy's published port
  k8s           agents as a Deployment with /readyz readiness probes, a Service and an
                HorizontalPodAutoscaler aimed at it; metadata as a one-replica StatefulSet with a
                volume claim mounted where --data-dir points; Service selectors match pod labels;
                kustomization lists every manifest
  settings      every RUNNEL_* variable and --flag the files give `runnel agent` and
                `runnel metadata` is a setting the built binary knows (from --help-markdown)
  systemd       `systemd-analyze verify` on the units (ExecStart pointed at the built binary),
                with no warning at all
  dockerfile    multi-stage, runtime stage debian:12-slim, and every shared library the built
                binary needs (readelf NEEDED -> dpkg -S) installed by the runtime stage or in
                the base image

  check_deploy.py --runnel build/x/agent/runnel
"""

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
sys.path.insert(0, os.path.join(HERE, "..", "clients"))

from common import CheckFailed, Reporter, expect, expect_eq  # noqa: E402

PENDING = set()  # settings of work not merged yet (none now)
BASE_PKGS = {"libc6", "libgcc-s1", "libstdc++6"}  # in debian:12-slim already


def load_yaml(path):
    import yaml
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def check_haproxy(_):
    cfg = os.path.join(DEPLOY, "haproxy.cfg")
    r = subprocess.run(["haproxy", "-c", "-f", cfg], capture_output=True, text=True, timeout=30)
    expect_eq(r.returncode, 0, "haproxy -c exit status (%s)" % (r.stdout + r.stderr)[-500:])
    expect("ALERT" not in r.stdout + r.stderr, "haproxy -c alerts: %s" % r.stderr[-500:])
    text = open(cfg).read()
    expect(re.search(r"^\s*mode tcp", text, re.M), "haproxy.cfg is not in TCP mode")
    servers = re.findall(r"^\s*server (\S+) (\S+)", text, re.M)
    expect_eq(len(servers), 3, "agents in haproxy.cfg")
    expect(re.search(r"^\s*option httpchk GET /readyz", text, re.M),
           "haproxy.cfg does not health-check /readyz")


def check_yaml(_):
    files = glob.glob(os.path.join(DEPLOY, "**", "*.y*ml"), recursive=True)
    expect(len(files) >= 5, "YAML files under deploy/: %s" % files)
    for f in files:
        try:
            load_yaml(f)
        except Exception as e:
            raise CheckFailed("%s: %s" % (os.path.relpath(f, ROOT), e))


def check_compose(ctx):
    (c,) = load_yaml(os.path.join(DEPLOY, "docker-compose.yml"))
    s = c["services"]
    for name in ("minio", "bucket", "metadata", "agent1", "agent2", "agent3", "haproxy"):
        expect(name in s, "service %s missing" % name)
    hp_ports = [p.split(":")[0] for p in s["haproxy"]["ports"]]
    for a in ("agent1", "agent2", "agent3"):
        env = s[a]["environment"]
        expect_eq(env.get("RUNNEL_CLUSTER_MODE"), "lb", "%s cluster mode" % a)
        adv = env.get("RUNNEL_ADVERTISE", "")
        expect(adv.rsplit(":", 1)[-1] in hp_ports, "%s advertises %s, not HAProxy's published "
               "port %s" % (a, adv, hp_ports))
        ctx["agent_env"].update(k for k in env if k.startswith("RUNNEL_"))
    ctx["metadata_flags"].update(f for f in s["metadata"]["command"] if f.startswith("--"))
    hcfg = open(os.path.join(DEPLOY, "haproxy.cfg")).read()
    for a in ("agent1", "agent2", "agent3"):
        expect(re.search(r"server \S+ %s:9092" % a, hcfg), "haproxy.cfg does not point at %s" % a)


def by_kind(docs):
    out = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def check_k8s(ctx):
    k = os.path.join(DEPLOY, "k8s")
    (kust,) = load_yaml(os.path.join(k, "kustomization.yaml"))
    manifests = sorted(os.path.basename(f) for f in glob.glob(os.path.join(k, "*.yaml"))
                       if not f.endswith("kustomization.yaml"))
    expect_eq(sorted(kust["resources"]), manifests, "kustomization resources")
    docs = []
    for f in manifests:
        docs += load_yaml(os.path.join(k, f))
    kinds = by_kind(docs)
    (dep,) = kinds["Deployment"]
    (hpa,) = kinds["HorizontalPodAutoscaler"]
    (sts,) = kinds["StatefulSet"]
    expect_eq(hpa["apiVersion"], "autoscaling/v2", "HPA api version")
    expect_eq((hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"]),
              ("Deployment", dep["metadata"]["name"]), "HPA target")
    agent = dep["spec"]["template"]["spec"]["containers"][0]
    expect_eq(agent["readinessProbe"]["httpGet"]["path"], "/readyz", "agent readiness probe")
    expect("cpu" in agent["resources"]["requests"], "HPA on CPU needs a CPU request")
    ports = {p["name"]: p["containerPort"] for p in agent["ports"]}
    expect(agent["readinessProbe"]["httpGet"]["port"] in ports, "readiness probe port unnamed")
    env = {e["name"]: e.get("value") for e in agent["env"]}
    expect_eq(env.get("RUNNEL_CLUSTER_MODE"), "lb", "agent cluster mode")
    ctx["agent_env"].update(n for n in env if n.startswith("RUNNEL_"))
    expect_eq(sts["spec"]["replicas"], 1, "metadata replicas")
    claims = [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]]
    meta = sts["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in meta["volumeMounts"]}
    expect(claims and claims[0] in mounts, "metadata volume claim not mounted")
    args = meta["args"]
    data_dir = args[args.index("--data-dir") + 1]
    expect(data_dir.startswith(mounts[claims[0]]), "metadata --data-dir %s outside the volume %s"
           % (data_dir, mounts[claims[0]]))
    expect_eq(meta["readinessProbe"]["httpGet"]["path"], "/readyz", "metadata readiness probe")
    ctx["metadata_flags"].update(a for a in args if a.startswith("--"))
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in kinds["Deployment"] + kinds["StatefulSet"]}
    for svc in kinds["Service"]:
        sel = svc["spec"]["selector"]
        expect(any(all(lbl.get(k) == v for k, v in sel.items()) for lbl in pods.values()),
               "Service %s selects no pod" % svc["metadata"]["name"])
    meta_addr = env["RUNNEL_METADATA"]
    expect(meta_addr.startswith("%s-0.%s." % (sts["metadata"]["name"],
                                               sts["spec"]["serviceName"])),
           "agents' RUNNEL_METADATA %s is not the StatefulSet's pod" % meta_addr)


def settings_of(runnel, cmd):
    r = subprocess.run([runnel, cmd, "--help-markdown"], capture_output=True, text=True,
                       timeout=30)
    expect_eq(r.returncode, 0, "runnel %s --help-markdown exit status" % cmd)
    return set(re.findall(r"^\| `([a-z0-9.]+)` \|", r.stdout, re.M))


def check_settings(ctx, runnel):
    known = {"agent": settings_of(runnel, "agent"), "metadata": settings_of(runnel, "metadata")}
    expect("cluster.mode" in known["agent"], "runnel agent has no cluster.mode setting")
    units = {"agent": set(ctx["agent_env"]), "metadata": set()}
    for name in ctx["metadata_flags"]:
        units["metadata"].add(name[2:].replace("-", "."))
    for f in glob.glob(os.path.join(DEPLOY, "systemd", "*.service")):
        text = open(f).read()
        cmd = "agent" if "runnel agent" in text else "metadata"
        units[cmd].update(m.replace("-", ".") for m in re.findall(r"--([a-z][a-z0-9.-]+)",
                                                                    text.split("ExecStart=")[1]
                                                                    .splitlines()[0]))
        units[cmd].update(re.findall(r"^#\s+(RUNNEL_[A-Z0-9_]+)=", text, re.M))
    pending = []
    for cmd, names in units.items():
        for n in sorted(names):
            s = n[len("RUNNEL_"):].lower().replace("_", ".") if n.startswith("RUNNEL_") else n
            if s in known[cmd]:
                continue
            if s in PENDING:
                pending.append("%s %s" % (cmd, s))
                continue
            raise CheckFailed("deploy/ gives runnel %s the unknown setting %s" % (cmd, n))
    if pending:
        print("NOTE pending settings: %s" % ", ".join(pending), flush=True)


def check_systemd(_, runnel):
    units = glob.glob(os.path.join(DEPLOY, "systemd", "*.service"))
    expect(len(units) >= 2, "systemd units: %s" % units)
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for u in units:
            text = open(u).read().replace("/usr/local/bin/runnel", os.path.abspath(runnel))
            p = os.path.join(d, os.path.basename(u))
            with open(p, "w") as f:
                f.write(text)
            paths.append(p)
        r = subprocess.run(["systemd-analyze", "verify"] + paths, capture_output=True, text=True,
                           timeout=60)
        out = (r.stdout + r.stderr).strip()
        expect(r.returncode == 0 and not out, "systemd-analyze verify: %s" % out[-800:])


def check_dockerfile(_, runnel):
    text = open(os.path.join(DEPLOY, "Dockerfile")).read()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    expect(len(stages) >= 2, "Dockerfile stages: %s" % stages)
    expect_eq(stages[-1], "debian:12-slim", "runtime base image")
    final = text[text.rindex("\nFROM "):]
    expect("COPY --from=" in final, "runtime stage copies nothing from the build stage")
    m = re.search(r"apt-get install[^&]*?--no-install-recommends(.*?)(&&|$)", final, re.S)
    expect(m, "runtime stage installs no packages")
    pkgs = set(re.findall(r"[a-z0-9][a-z0-9.+-]+", m.group(1).replace("\\", " ")))
    r = subprocess.run(["readelf", "-d", runnel], capture_output=True, text=True, timeout=30)
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(\S+)\]", r.stdout)
    expect(needed, "readelf found no NEEDED libraries")
    ldd = subprocess.run(["ldd", runnel], capture_output=True, text=True, timeout=30).stdout
    for lib in needed:
        m = re.search(r"^\s*%s => (\S+)" % re.escape(lib), ldd, re.M)
        expect(m, "ldd does not resolve %s" % lib)
        owner = subprocess.run(["dpkg", "-S", os.path.realpath(m.group(1))], capture_output=True,
                               text=True, timeout=30).stdout.split(":")[0]
        if not owner:  # merged /usr: dpkg knows the /lib path
            owner = subprocess.run(["dpkg", "-S", m.group(1).replace("/usr/lib/", "/lib/")],
                                   capture_output=True, text=True, timeout=30).stdout.split(":")[0]
        expect(owner, "no Debian package owns %s" % m.group(1))
        expect(owner in pkgs or owner in BASE_PKGS,
               "%s comes from %s, which the runtime stage does not install (%s)"
               % (lib, owner, sorted(pkgs)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runnel", required=True)
    args = ap.parse_args()
    rep = Reporter("deploy")
    ctx = {"agent_env": set(), "metadata_flags": set()}
    rep.run("haproxy", check_haproxy, ctx)
    rep.run("yaml", check_yaml, ctx)
    rep.run("compose", check_compose, ctx)
    rep.run("k8s", check_k8s, ctx)
    rep.run("settings", check_settings, ctx, args.runnel)
    rep.run("systemd", check_systemd, ctx, args.runnel)
    rep.run("dockerfile", check_dockerfile, ctx, args.runnel)
    return rep.summary()


if __name__ == "__main__":
    sys.exit(main())
