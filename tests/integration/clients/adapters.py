"""Client adapters for checks.py: confluent-kafka-python 1.7 (librdkafka 2.0.2), kafka-python
2.0.2 and kcat 1.7.1 (through subprocess), plus NodeAdapter, which drives node/adapter.mjs
(kafkajs 2.2.4 or @platformatic/kafka 1.35.0) over a JSON-lines pipe. The interface is described
at the top of checks.py; timeouts are in seconds and bound every wait.
"""

import base64
import json
import os
import select
import subprocess
import tempfile
import time

from common import NODE_DIR, CheckFailed, HERE

BIG = 8 * 1024 * 1024  # client-side message/fetch size limits, above the 1 MiB values


def _hdrs(h):
    return [(k, bytes(v) if v is not None else None) for k, v in (h or [])]


# ---- confluent-kafka-python --------------------------------------------------------------------

class ConfluentAdapter:
    name = "confluent-kafka-python"
    codecs = {"gzip", "snappy", "lz4", "zstd"}
    has_admin = True
    has_idempotence = True
    binary_safe = True
    per_record_headers = True
    per_record_ts = True

    def __init__(self, bootstrap, client_id=None):
        import confluent_kafka
        from confluent_kafka import admin
        self.ck = confluent_kafka
        self.admin_mod = admin
        self.bootstrap = bootstrap
        self.extra = {"client.id": client_id} if client_id else {}
        self._admin = None
        self.groups = 0

    def admin(self):
        if self._admin is None:
            self._admin = self.admin_mod.AdminClient(dict(self.extra,
                                                          **{"bootstrap.servers": self.bootstrap}))
        return self._admin

    def _result(self, futures, timeout=30):
        for _, f in futures.items():
            try:
                f.result(timeout=timeout)
            except self.ck.KafkaException as e:
                return e.args[0].name()
        return None

    def create_topic(self, name, partitions, configs):
        nt = self.admin_mod.NewTopic(name, num_partitions=partitions, replication_factor=1,
                                     config=dict(configs))
        return self._result(self.admin().create_topics([nt], operation_timeout=20))

    def delete_topic(self, name):
        return self._result(self.admin().delete_topics([name], operation_timeout=20))

    def create_partitions(self, name, total):
        return self._result(self.admin().create_partitions(
            [self.admin_mod.NewPartitions(name, total)], operation_timeout=20))

    def describe_configs(self, name):
        res = self.admin_mod.ConfigResource(self.admin_mod.RESOURCE_TOPIC, name)
        for _, f in self.admin().describe_configs([res]).items():
            entries = f.result(timeout=30)
            return {k: v.value for k, v in entries.items()}
        return {}

    def alter_configs(self, name, configs):
        res = self.admin_mod.ConfigResource(self.admin_mod.RESOURCE_TOPIC, name,
                                            set_config=dict(configs))
        return self._result(self.admin().alter_configs([res]))

    def touch_topic(self, name):
        self.admin().list_topics(topic=name, timeout=15)

    def probe_no_create(self, name):
        c = self._consumer(**{"allow.auto.create.topics": False})
        try:
            c.list_topics(topic=name, timeout=15)
        finally:
            c.close()

    def partitions(self, name):
        md = self.admin().list_topics(timeout=15)  # all topics: asking for one could create it
        t = md.topics.get(name)
        if t is None or t.error is not None:
            return None
        return len(t.partitions)

    def produce(self, topic, records, codec=None, idempotent=False):
        conf = {"bootstrap.servers": self.bootstrap, "linger.ms": 5, "acks": "all",
                "message.max.bytes": BIG, "compression.codec": codec or "none",
                "enable.idempotence": idempotent}
        conf.update(self.extra)
        p = self.ck.Producer(conf)
        acks = [None] * len(records)
        errors = []

        def cb(i):
            def on_delivery(err, msg):
                if err is not None:
                    errors.append("record %d: %s" % (i, err))
                else:
                    acks[i] = (msg.partition(), msg.offset())
            return on_delivery

        for i, r in enumerate(records):
            kw = {"partition": r["p"], "on_delivery": cb(i)}
            if r["headers"]:
                kw["headers"] = r["headers"]
            if r.get("ts") is not None:
                kw["timestamp"] = r["ts"]
            while True:
                try:
                    p.produce(topic, r["value"], r["key"], **kw)
                    break
                except BufferError:
                    p.poll(0.1)
            p.poll(0)
        left = p.flush(60)
        if left:
            raise CheckFailed("%d records not acknowledged within 60 s" % left)
        if errors:
            raise CheckFailed("delivery failed: " + "; ".join(errors[:3]))
        return acks

    def _consumer(self, **extra):
        self.groups += 1
        conf = {"bootstrap.servers": self.bootstrap, "group.id": "clients-%d-%d" % (
            os.getpid(), self.groups), "enable.auto.commit": False,
            "fetch.message.max.bytes": BIG, "enable.partition.eof": False}
        conf.update(self.extra)
        conf.update(extra)
        return self.ck.Consumer(conf)

    @staticmethod
    def _rec(m):
        return {"p": m.partition(), "offset": m.offset(), "key": m.key(), "value": m.value(),
                "headers": _hdrs(m.headers()), "ts": m.timestamp()[1]}

    def _poll(self, c, count, timeout, out):
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error() is not None:
                if m.error().code() == self.ck.KafkaError._PARTITION_EOF:
                    continue
                raise CheckFailed("consume error: %s" % m.error())
            out.append(self._rec(m))
        return out

    def consume(self, topic, partition, start, count, timeout):
        c = self._consumer()
        off = self.ck.OFFSET_BEGINNING if start == "beginning" else start
        try:
            c.assign([self.ck.TopicPartition(topic, partition, off)])
            return self._poll(c, count, timeout, [])
        finally:
            c.close()

    def consume_from_end(self, topic, partition, count, then, timeout):
        c = self._consumer(**{"enable.partition.eof": True})
        out = []
        try:
            c.assign([self.ck.TopicPartition(topic, partition, self.ck.OFFSET_END)])
            deadline = time.monotonic() + timeout
            while True:  # positioned once the first fetch at the end reports EOF
                if time.monotonic() > deadline:
                    raise CheckFailed("consumer at end never reported end of partition")
                m = c.poll(0.5)
                if m is None:
                    continue
                if m.error() is not None and m.error().code() == \
                        self.ck.KafkaError._PARTITION_EOF:
                    break
                if m.error() is not None:
                    raise CheckFailed("consume error: %s" % m.error())
                out.append(self._rec(m))  # should not happen: reported by the caller
            then()
            return self._poll(c, count, timeout, out)
        finally:
            c.close()

    def end_offset(self, topic, partition):
        c = self._consumer()
        try:
            return c.get_watermark_offsets(self.ck.TopicPartition(topic, partition), timeout=15)[1]
        finally:
            c.close()

    def offset_for_time(self, topic, partition, ts):
        c = self._consumer()
        try:
            r = c.offsets_for_times([self.ck.TopicPartition(topic, partition, ts)], timeout=15)
            if r[0].error is not None:
                raise CheckFailed("offsets_for_times: %s" % r[0].error)
            return r[0].offset
        finally:
            c.close()


# ---- kafka-python ------------------------------------------------------------------------------

class KafkaPythonAdapter:
    name = "kafka-python"
    codecs = {"gzip", "snappy", "lz4", "zstd"}
    has_admin = True
    has_idempotence = False
    binary_safe = True
    per_record_headers = True
    per_record_ts = True

    def __init__(self, bootstrap, client_id=None):
        import kafka
        import kafka.admin
        import kafka.errors
        self.kafka = kafka
        self.kadmin = kafka.admin
        self.errors = kafka.errors
        self.bootstrap = bootstrap
        self.extra = {"client_id": client_id} if client_id else {}
        self._admin = None

    def admin(self):
        if self._admin is None:
            self._admin = self.kadmin.KafkaAdminClient(bootstrap_servers=self.bootstrap,
                                                       request_timeout_ms=30000, **self.extra)
        return self._admin

    def _err(self, code):
        if code == 0:
            return None
        return self.errors.for_code(code).__name__

    def _call(self, fn):
        try:
            return fn()
        except self.errors.KafkaError as e:
            return type(e).__name__

    def create_topic(self, name, partitions, configs):
        def go():
            r = self.admin().create_topics([self.kadmin.NewTopic(
                name, partitions, 1, topic_configs=dict(configs))], timeout_ms=20000)
            for t in r.topic_errors:
                if t[1]:
                    return self._err(t[1])
            return None
        return self._call(go)

    def delete_topic(self, name):
        def go():
            r = self.admin().delete_topics([name], timeout_ms=20000)
            for t in r.topic_error_codes:
                if t[1]:
                    return self._err(t[1])
            return None
        return self._call(go)

    def create_partitions(self, name, total):
        def go():
            r = self.admin().create_partitions({name: self.kadmin.NewPartitions(total)},
                                               timeout_ms=20000)
            for t in r.topic_errors:
                if t[1]:
                    return self._err(t[1])
            return None
        return self._call(go)

    def describe_configs(self, name):
        res = self.kadmin.ConfigResource(self.kadmin.ConfigResourceType.TOPIC, name)
        out = {}
        for resp in self.admin().describe_configs([res]):
            for r in resp.resources:
                if r[0]:
                    raise CheckFailed("DescribeConfigs: %s" % self._err(r[0]))
                for e in r[4]:
                    out[e[0]] = e[1]
        return out

    def alter_configs(self, name, configs):
        def go():
            res = self.kadmin.ConfigResource(self.kadmin.ConfigResourceType.TOPIC, name,
                                             configs=dict(configs))
            r = self.admin().alter_configs([res])
            for x in r.resources:
                if x[0]:
                    return self._err(x[0])
            return None
        return self._call(go)

    def partitions(self, name):
        for t in self.admin().describe_topics():  # all topics: asking for one could create it
            if t["topic"] == name:
                return None if t["error_code"] else len(t["partitions"])
        return None

    def produce(self, topic, records, codec=None, idempotent=False):
        p = self.kafka.KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                     compression_type=codec, max_request_size=BIG,
                                     request_timeout_ms=30000, **self.extra)
        try:
            futs = [p.send(topic, value=r["value"], key=r["key"], partition=r["p"],
                           headers=r["headers"] or None, timestamp_ms=r.get("ts"))
                    for r in records]
            p.flush(60)
            acks = []
            for i, f in enumerate(futs):
                try:
                    md = f.get(timeout=60)
                except self.errors.KafkaError as e:
                    raise CheckFailed("record %d: %s" % (i, e))
                acks.append((md.partition, md.offset))
            return acks
        finally:
            p.close(10)

    def _consumer(self):
        return self.kafka.KafkaConsumer(bootstrap_servers=self.bootstrap,
                                        enable_auto_commit=False, group_id=None,
                                        max_partition_fetch_bytes=BIG, fetch_max_bytes=BIG,
                                        request_timeout_ms=40000, **self.extra)

    @staticmethod
    def _rec(m):
        return {"p": m.partition, "offset": m.offset, "key": m.key, "value": m.value,
                "headers": _hdrs(m.headers), "ts": m.timestamp}

    def _poll(self, c, count, timeout, out):
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for _, ms in c.poll(timeout_ms=500).items():
                out.extend(self._rec(m) for m in ms)
        return out

    def consume(self, topic, partition, start, count, timeout):
        c = self._consumer()
        tp = self.kafka.TopicPartition(topic, partition)
        try:
            c.assign([tp])
            if start == "beginning":
                c.seek_to_beginning(tp)
            else:
                c.seek(tp, start)
            return self._poll(c, count, timeout, [])
        finally:
            c.close()

    def consume_from_end(self, topic, partition, count, then, timeout):
        c = self._consumer()
        tp = self.kafka.TopicPartition(topic, partition)
        try:
            c.assign([tp])
            c.seek_to_end(tp)
            c.position(tp)  # resolves the end offset now (ListOffsets)
            then()
            return self._poll(c, count, timeout, [])
        finally:
            c.close()

    def end_offset(self, topic, partition):
        c = self._consumer()
        tp = self.kafka.TopicPartition(topic, partition)
        try:
            return c.end_offsets([tp])[tp]
        finally:
            c.close()

    def offset_for_time(self, topic, partition, ts):
        c = self._consumer()
        tp = self.kafka.TopicPartition(topic, partition)
        try:
            r = c.offsets_for_times({tp: ts})[tp]
            return -1 if r is None else r.offset
        finally:
            c.close()


# ---- kcat ----------------------------------------------------------------------------------------

class KcatAdapter:
    """kcat reads values line by line, so payloads are printable (hex) and keys never null; its
    -H headers apply to every record of a run and it cannot set timestamps."""
    name = "kcat"
    codecs = {"gzip", "snappy", "lz4", "zstd"}
    has_admin = False
    has_idempotence = True
    binary_safe = False
    per_record_headers = False
    per_record_ts = False

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap

    def _run(self, args, timeout=60, stdin=None):
        r = subprocess.run(["kcat", "-b", self.bootstrap] + args, input=stdin,
                           capture_output=True, timeout=timeout)
        return r

    def partitions(self, name):
        r = self._run(["-L", "-J", "-m", "15"])
        if r.returncode != 0:
            raise CheckFailed("kcat -L failed: %s" % r.stderr.decode(errors="replace")[-500:])
        for t in json.loads(r.stdout).get("topics", []):
            if t["topic"] == name:
                return None if t.get("error") else len(t["partitions"])
        return None

    def produce(self, topic, records, codec=None, idempotent=False):
        groups = {}
        for r in records:
            groups.setdefault((r["p"], tuple(r["headers"])), []).append(r)
        for (p, headers), recs in groups.items():
            with tempfile.NamedTemporaryFile("wb", delete=False) as f:
                for r in recs:
                    f.write(r["key"] + b"\t" + (r["value"] or b"") + b"\n")
                path = f.name
            args = ["-P", "-t", topic, "-p", str(p), "-K", "\t", "-Z", "-l",
                    "-X", "message.max.bytes=%d" % BIG, "-X", "acks=all", "-X", "linger.ms=5",
                    "-X", "compression.codec=%s" % (codec or "none")]
            if idempotent:
                args += ["-X", "enable.idempotence=true"]
            for k, v in headers:
                args += ["-H", "%s=%s" % (k, v.decode())]
            try:
                r = self._run(args + [path], timeout=120)
            finally:
                os.unlink(path)
            err = r.stderr.decode(errors="replace")
            if r.returncode != 0 or "Delivery failed" in err or "ERROR" in err:
                raise CheckFailed("kcat -P exited %d: %s" % (r.returncode, err[-800:]))
        return [None] * len(records)

    @staticmethod
    def _parse(line):
        j = json.loads(line)
        h = j.get("headers") or []
        return {"p": j["partition"], "offset": j["offset"], "ts": j.get("ts"),
                "key": None if j.get("key") is None else j["key"].encode(),
                "value": None if j.get("payload") is None else j["payload"].encode(),
                "headers": [(h[i], h[i + 1].encode() if h[i + 1] is not None else None)
                            for i in range(0, len(h) - 1, 2)]}

    def consume(self, topic, partition, start, count, timeout):
        o = "beginning" if start == "beginning" else str(start)
        r = self._run(["-C", "-t", topic, "-p", str(partition), "-o", o, "-c", str(count),
                       "-e", "-J", "-q", "-X", "fetch.message.max.bytes=%d" % BIG],
                      timeout=timeout)
        if r.returncode != 0:
            raise CheckFailed("kcat -C exited %d: %s" % (r.returncode,
                                                         r.stderr.decode(errors="replace")[-800:]))
        return [self._parse(x) for x in r.stdout.decode().splitlines() if x.strip()]

    def consume_from_end(self, topic, partition, count, then, timeout):
        p = subprocess.Popen(["kcat", "-b", self.bootstrap, "-C", "-t", topic, "-p",
                              str(partition), "-o", "end", "-c", str(count), "-J", "-u"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + timeout
            seen = b""
            while b"Reached end" not in seen:  # kcat says so once it fetched at the end
                left = deadline - time.monotonic()
                if left <= 0 or p.poll() is not None:
                    raise CheckFailed("kcat -C -o end never reached the end: %r" % seen[-500:])
                ready, _, _ = select.select([p.stderr], [], [], min(left, 0.5))
                if ready:
                    seen += os.read(p.stderr.fileno(), 4096)
            then()
            out, _ = p.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        return [self._parse(x) for x in out.decode().splitlines() if x.strip()]

    def _query(self, topic, partition, ts):
        r = self._run(["-Q", "-t", "%s:%d:%d" % (topic, partition, ts)], timeout=30)
        text = r.stdout.decode()
        if r.returncode != 0 or "offset" not in text:
            raise CheckFailed("kcat -Q exited %d: %s %s" % (r.returncode, text,
                                                            r.stderr.decode(errors="replace")))
        return int(text.split("offset")[1].split()[0])

    def end_offset(self, topic, partition):
        return self._query(topic, partition, -1)

    def offset_for_time(self, topic, partition, ts):
        return self._query(topic, partition, ts)


# ---- node clients --------------------------------------------------------------------------------

def _b64(v):
    return None if v is None else base64.b64encode(v).decode()


def _unb64(v):
    return None if v is None else base64.b64decode(v)


class NodeAdapter:
    """Runs node/adapter.mjs CLIENT BOOTSTRAP and sends it one JSON request per line."""
    per_record_ts = True
    binary_safe = True
    per_record_headers = True

    def __init__(self, client, bootstrap, client_id=None):
        self.client = client
        env = dict(os.environ)
        if client_id:
            env["RUNNEL_CLIENT_ID"] = client_id
        self.proc = subprocess.Popen(
            ["node", os.path.join(HERE, "node", "adapter.mjs"), client, bootstrap],
            cwd=NODE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        info = self._call({"op": "info"}, 30)
        self.name = info["name"]
        self.codecs = set(info["codecs"])
        self.has_admin = info["has_admin"]
        self.has_idempotence = info["has_idempotence"]
        self.dup_headers = info["dup_headers"]
        if info.get("probe_no_create"):
            self.probe_no_create = lambda name: self._call({"op": "probe_no_create",
                                                            "name": name})

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _call(self, req, timeout=120):
        if self.proc.poll() is not None:
            raise CheckFailed("node adapter exited with %s" % self.proc.returncode)
        req["timeout"] = timeout
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout + 10)
        if not ready:
            self.proc.kill()
            raise CheckFailed("node adapter: no answer to %s within %d s" % (req["op"], timeout))
        line = self.proc.stdout.readline()
        if not line:
            raise CheckFailed("node adapter died during %s" % req["op"])
        resp = json.loads(line)
        if "fail" in resp:
            raise CheckFailed("%s: %s" % (req["op"], resp["fail"]))
        return resp["result"]

    def create_topic(self, name, partitions, configs):
        return self._call({"op": "create_topic", "name": name, "partitions": partitions,
                           "configs": configs})

    def delete_topic(self, name):
        return self._call({"op": "delete_topic", "name": name})

    def create_partitions(self, name, total):
        return self._call({"op": "create_partitions", "name": name, "total": total})

    def describe_configs(self, name):
        return self._call({"op": "describe_configs", "name": name})

    def alter_configs(self, name, configs):
        return self._call({"op": "alter_configs", "name": name, "configs": configs})

    def partitions(self, name):
        return self._call({"op": "partitions", "name": name})

    def brokers(self):
        """[(node id, host, port)] from DescribeCluster (kafkajs only)."""
        return [tuple(b) for b in self._call({"op": "brokers"})]

    def produce(self, topic, records, codec=None, idempotent=False):
        recs = [{"p": r["p"], "key": _b64(r["key"]), "value": _b64(r["value"]),
                 "headers": [[k, _b64(v)] for k, v in r["headers"]], "ts": r.get("ts")}
                for r in records]
        acks = self._call({"op": "produce", "topic": topic, "records": recs, "codec": codec,
                           "idempotent": idempotent})
        return [tuple(a) if a is not None else None for a in acks]

    @staticmethod
    def _recs(rs):
        return [{"p": r["p"], "offset": r["offset"], "key": _unb64(r["key"]),
                 "value": _unb64(r["value"]),
                 "headers": [(k, _unb64(v)) for k, v in r["headers"]], "ts": r["ts"]}
                for r in rs]

    def consume(self, topic, partition, start, count, timeout):
        return self._recs(self._call({"op": "consume", "topic": topic, "partition": partition,
                                      "start": start, "count": count}, timeout))

    def consume_from_end(self, topic, partition, count, then, timeout):
        # The node side resolves the end offset (ListOffsets latest) before returning it, so the
        # records produced by then() come after it.
        end = self._call({"op": "end_offset", "topic": topic, "partition": partition})
        then()
        return self.consume(topic, partition, end, count, timeout)

    def end_offset(self, topic, partition):
        return self._call({"op": "end_offset", "topic": topic, "partition": partition})

    def offset_for_time(self, topic, partition, ts):
        return self._call({"op": "offset_for_time", "topic": topic, "partition": partition,
                           "ts": ts})


PY_ADAPTERS = {"confluent": ConfluentAdapter, "kafka-python": KafkaPythonAdapter,
               "kcat": KcatAdapter}
NODE_CLIENTS = ("kafkajs", "platformatic")


def make_adapter(client, bootstrap):
    if client in PY_ADAPTERS:
        return PY_ADAPTERS[client](bootstrap)
    if client in NODE_CLIENTS:
        return NodeAdapter(client, bootstrap)
    raise SystemExit("unknown client %s" % client)
