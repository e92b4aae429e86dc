#!/usr/bin/python3
"""Admin APIs end to end: starts `runnel dev` on 127.0.0.1 and drives CreateTopics, DeleteTopics,
CreatePartitions, DescribeConfigs, AlterConfigs and IncrementalAlterConfigs with real clients
(confluent-kafka-python's AdminClient, kafka-python's KafkaAdminClient, kcat -L, and
@platformatic/kafka for IncrementalAlterConfigs when node is there), checking error codes, the
messages, validate_only and what Metadata shows afterwards (see docs/agent-admin.md).

Usage: admin_clients.py --runnel PATH [--node-dir tests/node]
Prints PASS/FAIL per check; exits 1 when any check failed.
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

failures = []


def check(name, cond, detail=""):
    print("%s admin/%s%s" % ("PASS" if cond else "FAIL", name, "" if cond else ": " + detail))
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
            raise RuntimeError("runnel dev exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("runnel dev did not listen on %d" % port)


def confluent_checks(bs):
    from confluent_kafka import admin as A
    from confluent_kafka import KafkaException
    a = A.AdminClient({"bootstrap.servers": bs})

    def one(fs):
        (f,) = fs.values()
        try:
            f.result(timeout=20)
            return None, None
        except KafkaException as e:
            return e.args[0].name(), e.args[0].str()

    err, _ = one(a.create_topics([A.NewTopic("ad-ck", 3, 3, config={"retention.ms": "1000"})]))
    check("confluent/create-rf3", err is None, str(err))
    err, msg = one(a.create_topics([A.NewTopic("ad-ck", 3, 1)]))
    check("confluent/create-exists", err == "TOPIC_ALREADY_EXISTS" and
          msg == "Topic 'ad-ck' already exists.", "%s %s" % (err, msg))
    err, _ = one(a.create_topics([A.NewTopic("ad-ck-v", 2, 1)], validate_only=True))
    check("confluent/create-validate-only", err is None, str(err))
    err, msg = one(a.create_topics([A.NewTopic("ad-ck-b", 1, 1, config={"retention.ms": "x"})]))
    check("confluent/create-bad-config", err == "INVALID_CONFIG" and
          msg == "Invalid value x for configuration retention.ms", "%s %s" % (err, msg))
    err, _ = one(a.create_topics([A.NewTopic("ad-ck-r", 1, 0)]))
    check("confluent/create-rf0", err == "INVALID_REPLICATION_FACTOR", str(err))
    err, _ = one(a.create_topics([A.NewTopic("bad name", 1, 1)]))
    check("confluent/create-bad-name", err == "TOPIC_EXCEPTION", str(err))
    md = a.list_topics(timeout=15)
    check("confluent/metadata-after-create",
          "ad-ck" in md.topics and len(md.topics["ad-ck"].partitions) == 3 and
          "ad-ck-v" not in md.topics and "ad-ck-b" not in md.topics, str(sorted(md.topics)))

    (f,) = a.describe_configs([A.ConfigResource(A.RESOURCE_TOPIC, "ad-ck")]).values()
    cfg = f.result(timeout=20)
    r = cfg["retention.ms"]
    syn = [(s.name, s.value) for s in r.synonyms.values()]
    check("confluent/describe-topic", r.value == "1000" and not r.is_default and
          cfg["cleanup.policy"].value == "delete" and cfg["cleanup.policy"].is_default and
          ("log.retention.ms", "604800000") in syn, "%s %s" % (r, syn))
    (f,) = a.describe_configs([A.ConfigResource(A.RESOURCE_BROKER, "0")]).values()
    cfg = f.result(timeout=20)
    check("confluent/describe-broker", "num.partitions" in cfg and
          cfg["num.partitions"].is_read_only and "flush.interval.ms" in cfg, str(sorted(cfg)))

    err, _ = one(a.alter_configs([A.ConfigResource(A.RESOURCE_TOPIC, "ad-ck",
                                                   set_config={"segment.ms": "60000"})]))
    (f,) = a.describe_configs([A.ConfigResource(A.RESOURCE_TOPIC, "ad-ck")]).values()
    cfg = f.result(timeout=20)
    check("confluent/alter-replaces-all", err is None and cfg["segment.ms"].value == "60000" and
          cfg["retention.ms"].value == "604800000", "%s %s" % (err, cfg["retention.ms"]))
    err, msg = one(a.alter_configs([A.ConfigResource(A.RESOURCE_TOPIC, "ad-ck",
                                                     set_config={"no.such": "1"})]))
    check("confluent/alter-unknown-key", err == "INVALID_CONFIG" and "no.such" in (msg or ""),
          "%s %s" % (err, msg))

    err, _ = one(a.create_partitions([A.NewPartitions("ad-ck", 5)]))
    check("confluent/create-partitions", err is None and
          len(a.list_topics(timeout=15).topics["ad-ck"].partitions) == 5, str(err))
    err, msg = one(a.create_partitions([A.NewPartitions("ad-ck", 4)]))
    check("confluent/create-partitions-shrink", err == "INVALID_PARTITIONS" and
          "currently has 5" in (msg or ""), "%s %s" % (err, msg))
    err, _ = one(a.create_partitions([A.NewPartitions("ad-ck", 9)], validate_only=True))
    check("confluent/create-partitions-validate-only", err is None and
          len(a.list_topics(timeout=15).topics["ad-ck"].partitions) == 5, str(err))


def kafka_python_checks(bs):
    from kafka.admin import (KafkaAdminClient, NewTopic, NewPartitions, ConfigResource,
                             ConfigResourceType)
    from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError
    a = KafkaAdminClient(bootstrap_servers=bs, request_timeout_ms=20000)
    try:
        a.create_topics([NewTopic("ad-kp", 2, 1, topic_configs={"cleanup.policy": "compact"})])
        ok = True
    except KafkaError as e:
        ok = False
        print(e)
    check("kafka-python/create", ok)
    try:
        a.create_topics([NewTopic("ad-kp", 2, 1)])
        got = None
    except TopicAlreadyExistsError as e:
        got = e
    check("kafka-python/create-exists", got is not None)
    res = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "ad-kp")])[0]
    entries = {e[0]: e[1] for e in res.resources[0][4]}
    check("kafka-python/describe", entries.get("cleanup.policy") == "compact" and
          entries.get("retention.ms") == "604800000", str(entries))
    a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "ad-kp",
                                    configs={"retention.ms": "7200000"})])
    res = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "ad-kp")])[0]
    entries = {e[0]: e[1] for e in res.resources[0][4]}
    check("kafka-python/alter", entries.get("retention.ms") == "7200000" and
          entries.get("cleanup.policy") == "delete", str(entries))
    a.create_partitions({"ad-kp": NewPartitions(4)})
    check("kafka-python/create-partitions",
          len(a.describe_topics(["ad-kp"])[0]["partitions"]) == 4)
    a.delete_topics(["ad-kp"])
    try:
        a.delete_topics(["ad-kp"])
        got = None
    except UnknownTopicOrPartitionError as e:
        got = e
    check("kafka-python/delete-twice", got is not None and "ad-kp" not in a.list_topics())
    a.close()


def kcat_checks(bs):
    out = subprocess.run(["kcat", "-b", bs, "-L", "-J", "-t", "ad-ck"], capture_output=True,
                         text=True, timeout=30)
    try:
        md = json.loads(out.stdout)
        parts = [t for t in md["topics"] if t["topic"] == "ad-ck"][0]["partitions"]
        n = len(parts)
    except (ValueError, KeyError, IndexError):
        n = None
    check("kcat/metadata", n == 5, out.stdout[:300] + out.stderr[:300])


PLATFORMATIC = r"""
import { Admin } from '@platformatic/kafka'
const admin = new Admin({ clientId: 'admin-test', bootstrapBrokers: [process.argv[2]] })
const out = {}
const policy = async () => {
  const r = await admin.describeConfigs({ resources: [{ resourceType: 2, resourceName: 'ad-ck',
    configurationKeys: ['cleanup.policy'] }], includeSynonyms: true, includeDocumentation: true })
  return r[0].configs[0]
}
try {
  await admin.incrementalAlterConfigs({ resources: [{ resourceType: 2, resourceName: 'ad-ck',
    configs: [{ name: 'cleanup.policy', configOperation: 2, value: 'compact' }] }] })
  let c = await policy()
  out.append = [c.value, c.configSource, c.configType, (c.documentation || '').length > 0]
  await admin.incrementalAlterConfigs({ resources: [{ resourceType: 2, resourceName: 'ad-ck',
    configs: [{ name: 'cleanup.policy', configOperation: 3, value: 'delete' }] }] })
  out.subtract = (await policy()).value
  await admin.incrementalAlterConfigs({ resources: [{ resourceType: 2, resourceName: 'ad-ck',
    configs: [{ name: 'cleanup.policy', configOperation: 1 }] }] })
  c = await policy()
  out.delete = [c.value, c.configSource]
  try {
    await admin.incrementalAlterConfigs({ resources: [{ resourceType: 2, resourceName: 'ad-ck',
      configs: [{ name: 'retention.ms', configOperation: 2, value: '5' }] }] })
    out.appendNonList = 'accepted'
  } catch (e) {
    out.appendNonList = JSON.stringify(e.errors?.map(x => x.response?.responses?.[0]?.errorCode))
  }
} catch (e) { out.error = String(e) + JSON.stringify(e.errors?.map(x => x.message)) }
await admin.close()
console.log(JSON.stringify(out))
"""


def platformatic_checks(bs, node_dir):
    if not shutil.which("node") or not os.path.isdir(os.path.join(node_dir, "node_modules",
                                                                  "@platformatic")):
        print("SKIP admin/platformatic: node or @platformatic/kafka not installed")
        return
    fd, path = tempfile.mkstemp(suffix=".mjs", dir=node_dir, prefix=".admin-test-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(PLATFORMATIC)
        out = subprocess.run(["node", path, bs], capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(path)
    try:
        r = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        r = {"error": out.stdout + out.stderr}
    check("platformatic/incremental-append", r.get("append") == ["delete,compact", 1, 7, True],
          str(r))
    check("platformatic/incremental-subtract", r.get("subtract") == "compact", str(r))
    check("platformatic/incremental-delete", r.get("delete") == ["delete", 5], str(r))
    check("platformatic/incremental-append-non-list", r.get("appendNonList") == "[40]", str(r))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runnel", required=True)
    p.add_argument("--node-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "..", "..", "node"))
    args = p.parse_args()
    args.runnel = os.path.abspath(args.runnel)
    work = tempfile.mkdtemp(prefix="runnel-admin-")
    port = free_port()
    log = open(os.path.join(work, "runnel.log"), "w")
    proc = subprocess.Popen([args.runnel, "dev", "--listen", "127.0.0.1:%d" % port,
                             "--data-dir", os.path.join(work, "data")], cwd=work, stdout=log,
                            stderr=subprocess.STDOUT)
    bs = "127.0.0.1:%d" % port
    try:
        wait_port(port, proc)
        for fn in (confluent_checks, kafka_python_checks, kcat_checks):
            try:
                fn(bs)
            except Exception as e:  # a client exception fails its checks, not the others
                check(fn.__name__, False, repr(e))
        platformatic_checks(bs, args.node_dir)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        log.close()
        check("sigterm-exit", rc == 0, "exit status %s" % rc)
        if failures:
            print("runnel log kept in %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("%d failed" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
