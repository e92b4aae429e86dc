#!/usr/bin/python3
"""Golden capture driver for kafka-python 2.0.2.

Produces 5 records (key k<i>, value v<i>-<codec>:PAD) with every codec the installed modules allow
(gzip always; snappy, lz4, zstd with python3-snappy, python3-lz4, python3-zstandard), runs a
group consumer with commits, and the admin client calls. Usage: kafka_python.py HOST:PORT
"""
import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic

B = sys.argv[1]
N = 5
PAD = "0123456789abcdef" * 8  # compressible, so every codec really compresses

for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
    try:
        p = KafkaProducer(bootstrap_servers=B, linger_ms=200,
                          compression_type=None if codec == "none" else codec)
    except Exception as e:
        print("producer %s: %s" % (codec, e), file=sys.stderr)
        continue
    for i in range(N):
        p.send("golden-" + codec, key=b"k%d" % i, value=("v%d-%s:%s" % (i, codec, PAD)).encode())
    p.flush(15)
    p.close(5)

c = KafkaConsumer("golden-zstd", bootstrap_servers=B, group_id="golden-kafka-python-group",
                  auto_offset_reset="earliest", enable_auto_commit=False,
                  consumer_timeout_ms=3000)
got = 0
for m in c:
    got += 1
    if got == N:
        break
c.commit()
c.committed(TopicPartition("golden-zstd", 0))
c.close()

a = KafkaAdminClient(bootstrap_servers=B)
for name, call in (
        ("create_topics", lambda: a.create_topics([NewTopic("golden-admin", 2, 1)])),
        ("create_partitions", lambda: a.create_partitions(
            {"golden-admin": NewPartitions(total_count=3)})),
        ("describe_configs", lambda: a.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, "golden-admin")])),
        ("alter_configs", lambda: a.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, "golden-admin",
                            configs={"retention.ms": "120000"})])),
        ("list_consumer_groups", lambda: a.list_consumer_groups()),
        ("describe_consumer_groups", lambda: a.describe_consumer_groups(
            ["golden-kafka-python-group"])),
        ("list_consumer_group_offsets", lambda: a.list_consumer_group_offsets(
            "golden-kafka-python-group")),
        ("delete_consumer_groups", lambda: a.delete_consumer_groups(
            ["golden-kafka-python-group"])),
        ("delete_topics", lambda: a.delete_topics(["golden-admin"]))):
    try:
        call()
    except Exception as e:  # the capture only needs the requests
        print("admin %s: %r" % (name, e), file=sys.stderr)
a.close()
