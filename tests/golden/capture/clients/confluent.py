#!/usr/bin/python3
"""Golden capture driver for confluent-kafka-python 1.7.0 (librdkafka 2.0.2).

Produces 5 records (key k<i>, value v<i>-<codec>:PAD) with every codec, runs an idempotent and a
transactional producer (with offsets sent to the transaction), a group consumer with manual
commits, and the admin calls 1.7.0 offers. Usage: confluent.py HOST:PORT
"""
import sys

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

B = sys.argv[1]
N = 5
PAD = "0123456789abcdef" * 8  # compressible, so every codec really compresses


def produce(topic, codec, extra=None):
    conf = {"bootstrap.servers": B, "compression.type": codec, "linger.ms": 200}
    conf.update(extra or {})
    p = Producer(conf)
    for i in range(N):
        p.produce(topic, key=b"k%d" % i, value=("v%d-%s:%s" % (i, codec, PAD)).encode())
    p.flush(15)


for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
    produce("golden-" + codec, codec)
produce("golden-idem", "none", {"enable.idempotence": True})

# Transactional producer: InitProducerId(txn id), AddPartitionsToTxn, Produce, AddOffsetsToTxn,
# TxnOffsetCommit, EndTxn.
tp = Producer({"bootstrap.servers": B, "transactional.id": "golden-txn-confluent",
               "linger.ms": 200, "compression.type": "none"})
tp.init_transactions(15)
tp.begin_transaction()
for i in range(N):
    tp.produce("golden-txn", key=b"k%d" % i, value=("v%d-none:%s" % (i, PAD)).encode())
tp.flush(15)
c0 = Consumer({"bootstrap.servers": B, "group.id": "golden-txn-group"})
tp.send_offsets_to_transaction([TopicPartition("golden-txn", 0, 5)],
                               c0.consumer_group_metadata(), 15)
tp.commit_transaction(15)
c0.close()

c = Consumer({"bootstrap.servers": B, "group.id": "golden-confluent-group",
              "auto.offset.reset": "earliest", "enable.auto.commit": False,
              "isolation.level": "read_committed"})
c.subscribe(["golden-snappy"])
got = 0
for _ in range(60):
    m = c.poll(0.5)
    if m is not None and m.error() is None:
        got += 1
        if got == N:
            break
c.commit(asynchronous=False)
c.committed([TopicPartition("golden-snappy", 0)], 10)
c.close()

a = AdminClient({"bootstrap.servers": B})


def wait(futs):
    for f in futs.values():
        try:
            f.result(15)
        except Exception as e:  # the capture only needs the requests
            print("admin:", e, file=sys.stderr)


wait(a.create_topics([NewTopic("golden-admin", 2, 1, config={"retention.ms": "60000"})]))
wait(a.create_partitions([NewPartitions("golden-admin", 3)]))
wait(a.describe_configs([ConfigResource("topic", "golden-admin")]))
wait(a.alter_configs([ConfigResource("topic", "golden-admin",
                                     set_config={"retention.ms": "120000"})]))
a.list_topics(timeout=10)
try:
    a.list_groups(timeout=10)
except Exception as e:
    print("admin:", e, file=sys.stderr)
wait(a.delete_topics(["golden-admin"]))
