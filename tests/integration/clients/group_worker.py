"""One consumer-group member for scenario_groups.py, driven by confluent-kafka-python (librdkafka)
or kafka-python. Prints JSON lines on stdout, flushed at once:
  {"ev": "assigned", "parts": [..]}   whenever its assignment changed (eager or cooperative)
  {"ev": "rec", "p": P, "o": O}        every record consumed (after its commit, when committing)
  {"ev": "closed"}                     after a clean close (SIGTERM)
usage: group_worker.py CLIENT BOOTSTRAP TOPIC GROUP [--instance ID] [--assignor NAME]
                       [--auto-commit] [--commit] [--session-ms N]
"""

import argparse
import json
import signal
import sys
import time

stop = False


def out(**kv):
    sys.stdout.write(json.dumps(kv) + "\n")
    sys.stdout.flush()


def on_term(*_):
    global stop
    stop = True


def run_confluent(a):
    from confluent_kafka import Consumer, TopicPartition
    conf = {"bootstrap.servers": a.bootstrap, "group.id": a.group, "client.id": "gw",
            "auto.offset.reset": "earliest", "enable.auto.commit": a.auto_commit,
            "auto.commit.interval.ms": 300, "session.timeout.ms": a.session_ms,
            "heartbeat.interval.ms": 500, "topic.metadata.refresh.interval.ms": 2000}
    if a.instance:
        conf["group.instance.id"] = a.instance
    if a.assignor:
        conf["partition.assignment.strategy"] = a.assignor
    c = Consumer(conf)
    c.subscribe([a.topic])
    last = None
    while not stop:
        m = c.poll(0.2)
        cur = sorted(tp.partition for tp in c.assignment())
        if cur != last:
            out(ev="assigned", parts=cur)
            last = cur
        if m is None or m.error():
            continue
        if a.commit:
            try:
                c.commit(offsets=[TopicPartition(a.topic, m.partition(), m.offset() + 1)],
                         asynchronous=False)
            except Exception as e:  # a commit refused during a rebalance is retried by reading again
                out(ev="commit_error", error=str(e))
                continue
        out(ev="rec", p=m.partition(), o=m.offset())
    c.close()
    out(ev="closed")


def run_kafka_python(a):
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata
    c = KafkaConsumer(bootstrap_servers=a.bootstrap, group_id=a.group, client_id="gw",
                      auto_offset_reset="earliest", enable_auto_commit=a.auto_commit,
                      auto_commit_interval_ms=300, session_timeout_ms=a.session_ms,
                      heartbeat_interval_ms=500, metadata_max_age_ms=2000,
                      api_version_auto_timeout_ms=10000)
    c.subscribe([a.topic])
    last = None
    while not stop:
        batch = c.poll(timeout_ms=200)
        cur = sorted(tp.partition for tp in c.assignment())
        if cur != last:
            out(ev="assigned", parts=cur)
            last = cur
        for tp, msgs in batch.items():
            for m in msgs:
                if a.commit:
                    try:
                        c.commit({TopicPartition(a.topic, m.partition):
                                  OffsetAndMetadata(m.offset + 1, "")})
                    except Exception as e:
                        out(ev="commit_error", error=str(e))
                        c.seek(tp, m.offset)
                        break
                out(ev="rec", p=m.partition, o=m.offset)
    c.close()
    out(ev="closed")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("client")
    p.add_argument("bootstrap")
    p.add_argument("topic")
    p.add_argument("group")
    p.add_argument("--instance")
    p.add_argument("--assignor")
    p.add_argument("--auto-commit", action="store_true")
    p.add_argument("--commit", action="store_true")
    p.add_argument("--session-ms", type=int, default=6000)
    a = p.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    {"confluent": run_confluent, "kafka-python": run_kafka_python}[a.client](a)


if __name__ == "__main__":
    main()
