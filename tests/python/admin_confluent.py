#!/usr/bin/env python3
"""Topic administration through confluent_kafka.admin.AdminClient (librdkafka).

Creates topics (with configs, with broker defaults, several per request with
independent results), checks them in list_topics and describe_topics, checks
every refusal Kafka defines for CreateTopics (duplicate, invalid names,
replication factor, unknown/invalid configs, zero partitions, bad replica
assignment) and that validate_only creates nothing; DescribeConfigs of the
topic and of broker 1 (values, sources, synonyms); CreatePartitions (grow,
refuse to shrink or keep, unknown topic, validate_only); DescribeCluster;
DeleteTopics (then gone from metadata, unknown topic refused, name reusable
with fresh configs).

usage: admin_confluent.py TOPIC_PREFIX [--broker-roll-ms MS]
  --broker-roll-ms: the broker was started with --set log.roll.ms=MS; the
  topic's segment.ms must then come from STATIC_BROKER_CONFIG.
"""

import sys
import time

import strata_common as sc

OP_TIMEOUT = 15  # seconds, for every admin request


def err_of(fut):
    """The KafkaError of a failed admin future, None on success."""
    from confluent_kafka import KafkaException

    try:
        fut.result(timeout=OP_TIMEOUT + 5)
        return None
    except KafkaException as e:
        return e.args[0]
    except Exception as e:  # noqa: BLE001 - a timeout is a test failure too
        sc.die(f"admin future failed with {type(e).__name__}: {e!r}")


def expect_ok(futs, what):
    for name, fut in futs.items():
        e = err_of(fut)
        sc.check(e is None, f"{what} {name!r}: expected success, got {e.name() if e else ''} ({e})")


def expect_err(fut, code, what):
    from confluent_kafka import KafkaError

    e = err_of(fut)
    sc.check(e is not None, f"{what}: succeeded, expected error {KafkaError(code).name()} ({code})")
    sc.check(e.code() == code,
             f"{what}: got error {e.name()} ({e.code()}): {e.str()}; expected {KafkaError(code).name()} ({code})")
    sc.log(f"  {what}: refused as expected: {e.name()}: {e.str()}")


def topics_now(admin):
    """All topic names from a Metadata request for all topics (this never
    auto-creates anything)."""
    md = admin.list_topics(timeout=OP_TIMEOUT)
    return {name: t for name, t in md.topics.items()}


def wait_for_partitions(admin, topic, count, deadline):
    while True:
        t = topics_now(admin).get(topic)
        if t is not None and t.error is None and len(t.partitions) == count:
            return t
        deadline.check(f"topic {topic!r} with {count} partitions not in metadata: "
                       f"{'missing' if t is None else (t.error, len(t.partitions))}")
        time.sleep(0.2)


def check_metadata_topic(t, topic, count):
    sc.check(sorted(t.partitions) == list(range(count)),
             f"list_topics {topic}: partitions {sorted(t.partitions)}, expected 0..{count - 1}")
    for pid, p in t.partitions.items():
        sc.check(p.error is None, f"list_topics {topic} p{pid}: error {p.error}")
        sc.check(p.leader == 1, f"list_topics {topic} p{pid}: leader {p.leader}, expected 1")
        sc.check(list(p.replicas) == [1] and list(p.isrs) == [1],
                 f"list_topics {topic} p{pid}: replicas {p.replicas} isr {p.isrs}, expected [1] and [1]")


def describe_topic(admin, topic):
    from confluent_kafka import TopicCollection

    futs = admin.describe_topics(TopicCollection([topic]), request_timeout=OP_TIMEOUT)
    return futs[topic]


def check_described(admin, topic, count):
    d = describe_topic(admin, topic).result(timeout=OP_TIMEOUT + 5)
    sc.check(d.name == topic, f"describe_topics: name {d.name!r}, expected {topic!r}")
    sc.check(not d.is_internal, f"describe_topics {topic}: is_internal")
    sc.check(d.topic_id is not None and str(d.topic_id) not in ("", "AAAAAAAAAAAAAAAAAAAAAA"),
             f"describe_topics {topic}: topic id {d.topic_id!r} is empty")
    parts = sorted(d.partitions, key=lambda p: p.id)
    sc.check([p.id for p in parts] == list(range(count)),
             f"describe_topics {topic}: partitions {[p.id for p in parts]}, expected 0..{count - 1}")
    for p in parts:
        sc.check(p.leader is not None and p.leader.id == 1,
                 f"describe_topics {topic} p{p.id}: leader {p.leader}")
        sc.check([r.id for r in p.replicas] == [1] and [r.id for r in p.isr] == [1],
                 f"describe_topics {topic} p{p.id}: replicas {[r.id for r in p.replicas]} "
                 f"isr {[r.id for r in p.isr]}, expected [1] and [1]")
    return str(d.topic_id)


def describe_configs(admin, restype, name):
    from confluent_kafka.admin import ConfigResource

    res = ConfigResource(restype, name)
    futs = admin.describe_configs([res], request_timeout=OP_TIMEOUT)
    (fut,) = futs.values()
    return fut


def check_entry(entries, what, key, value, source, is_default, synonyms=None):
    from confluent_kafka.admin import ConfigSource

    sc.check(key in entries, f"{what}: no entry {key!r}; entries: {sorted(entries)}")
    e = entries[key]
    sc.check(e.value == value, f"{what} {key}: value {e.value!r}, expected {value!r}")
    sc.check(ConfigSource(e.source) == source,
             f"{what} {key}: source {ConfigSource(e.source).name}, expected {source.name}")
    sc.check(bool(e.is_default) == is_default,
             f"{what} {key}: is_default {e.is_default}, expected {is_default}")
    sc.check(not e.is_sensitive, f"{what} {key}: is_sensitive")
    if synonyms is not None:
        got = [(s.name, s.value, ConfigSource(s.source)) for s in e.synonyms.values()]
        sc.check(got == synonyms,
                 f"{what} {key}: synonyms {[(n, v, s.name) for n, v, s in got]}, "
                 f"expected {[(n, v, s.name) for n, v, s in synonyms]}")


def main():
    args = sys.argv[1:]
    roll_ms = None
    if len(args) == 3 and args[1] == "--broker-roll-ms":
        roll_ms = args[2]
        args = args[:1]
    if len(args) != 1:
        sc.die("usage: admin_confluent.py TOPIC_PREFIX [--broker-roll-ms MS]")
    prefix = args[0]
    sc.start_watchdog(150)

    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AdminClient, NewTopic, NewPartitions, ResourceType, ConfigSource

    deadline = sc.Deadline(120, "admin_confluent")
    admin = AdminClient({"bootstrap.servers": sc.bootstrap(),
                         "error_cb": lambda e: sc.log(f"admin error_cb: {e}")})
    kw = {"request_timeout": OP_TIMEOUT, "operation_timeout": 10}
    topic = f"{prefix}-main"
    plain = f"{prefix}-defaults"
    assigned = f"{prefix}-assigned"
    never = f"{prefix}-validate-only"

    # --- CreateTopics -----------------------------------------------------
    configs = {"retention.ms": "3600000", "segment.bytes": "1048576"}
    futs = admin.create_topics([
        NewTopic(topic, num_partitions=3, replication_factor=1, config=configs),
        NewTopic(plain, num_partitions=-1, replication_factor=-1),
        NewTopic(assigned, num_partitions=2, replica_assignment=[[1], [1]]),
    ], **kw)
    expect_ok(futs, "create_topics")
    t = wait_for_partitions(admin, topic, 3, deadline)
    check_metadata_topic(t, topic, 3)
    check_metadata_topic(wait_for_partitions(admin, plain, 1, deadline), plain, 1)
    check_metadata_topic(wait_for_partitions(admin, assigned, 2, deadline), assigned, 2)
    old_id = check_described(admin, topic, 3)
    check_described(admin, assigned, 2)
    print(f"OK created {topic} (3 partitions, configs), {plain} (broker defaults: 1 partition), "
          f"{assigned} (replica assignment)", flush=True)

    # Refusals, all in one request: each topic gets its own result, and the
    # valid one in the same request is created.
    mixed_ok = f"{prefix}-mixed-ok"
    refused = [
        (NewTopic(topic, 3, 1), KafkaError.TOPIC_ALREADY_EXISTS, "duplicate topic"),
        (NewTopic("bad name!", 1, 1), KafkaError.TOPIC_EXCEPTION, "name with ' ' and '!'"),
        (NewTopic("..", 1, 1), KafkaError.TOPIC_EXCEPTION, "name '..'"),
        (NewTopic("x" * 250, 1, 1), KafkaError.TOPIC_EXCEPTION, "250-character name"),
        (NewTopic(f"{prefix}-rf3", 1, 3), KafkaError.INVALID_REPLICATION_FACTOR, "replication factor 3"),
        (NewTopic(f"{prefix}-p0", 0, 1), KafkaError.INVALID_PARTITIONS, "0 partitions"),
        (NewTopic(f"{prefix}-unknown-cfg", 1, 1, config={"no.such.config": "1"}),
         KafkaError.INVALID_CONFIG, "unknown config key"),
        (NewTopic(f"{prefix}-bad-seg", 1, 1, config={"segment.bytes": "100"}),
         KafkaError.INVALID_CONFIG, "segment.bytes below its minimum"),
        (NewTopic(f"{prefix}-bad-ret", 1, 1, config={"retention.ms": "soon"}),
         KafkaError.INVALID_CONFIG, "retention.ms not a number"),
        (NewTopic(f"{prefix}-compact", 1, 1, config={"cleanup.policy": "compact"}),
         KafkaError.INVALID_CONFIG, "cleanup.policy=compact"),
        (NewTopic(f"{prefix}-broker2", 1, replica_assignment=[[2]]),
         KafkaError.INVALID_REPLICA_ASSIGNMENT, "replica on unknown broker 2"),
    ]
    futs = admin.create_topics([nt for nt, _, _ in refused] + [NewTopic(mixed_ok, 2, 1)], **kw)
    for nt, code, what in refused:
        expect_err(futs[nt.topic], code, f"create_topics {what}")
    expect_ok({mixed_ok: futs[mixed_ok]}, "create_topics (valid topic next to refused ones)")
    wait_for_partitions(admin, mixed_ok, 2, deadline)
    names = topics_now(admin)
    leaked = [nt.topic for nt, code, _ in refused
              if code != KafkaError.TOPIC_ALREADY_EXISTS and nt.topic in names]
    sc.check(not leaked, f"refused topics exist after all: {leaked}")
    print(f"OK {len(refused)} invalid CreateTopics refused with the Kafka error codes", flush=True)

    # validate_only: success reported, nothing created; errors still reported.
    futs = admin.create_topics([NewTopic(never, 4, 1, config={"retention.ms": "1000"})],
                               validate_only=True, **kw)
    expect_ok(futs, "create_topics validate_only")
    futs = admin.create_topics([NewTopic(topic, 4, 1)], validate_only=True, **kw)
    expect_err(futs[topic], KafkaError.TOPIC_ALREADY_EXISTS, "create_topics validate_only of an existing topic")
    futs = admin.create_topics([NewTopic(f"{never}-rf", 1, 3)], validate_only=True, **kw)
    expect_err(futs[f"{never}-rf"], KafkaError.INVALID_REPLICATION_FACTOR,
               "create_topics validate_only with replication factor 3")
    time.sleep(0.5)
    sc.check(never not in topics_now(admin), f"validate_only created topic {never}")
    print("OK validate_only creates nothing", flush=True)

    # --- DescribeConfigs --------------------------------------------------
    try:
        entries = describe_configs(admin, ResourceType.TOPIC, topic).result(timeout=OP_TIMEOUT + 5)
    except Exception as e:  # noqa: BLE001
        sc.die(f"describe_configs topic {topic}: {e}")
    what = f"describe_configs topic {topic}"
    check_entry(entries, what, "retention.ms", "3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG, False,
                [("retention.ms", "3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG),
                 ("log.retention.ms", "604800000", ConfigSource.DEFAULT_CONFIG)])
    check_entry(entries, what, "segment.bytes", "1048576", ConfigSource.DYNAMIC_TOPIC_CONFIG, False,
                [("segment.bytes", "1048576", ConfigSource.DYNAMIC_TOPIC_CONFIG),
                 ("log.segment.bytes", "1073741824", ConfigSource.DEFAULT_CONFIG)])
    check_entry(entries, what, "retention.bytes", "-1", ConfigSource.DEFAULT_CONFIG, True,
                [("log.retention.bytes", "-1", ConfigSource.DEFAULT_CONFIG)])
    check_entry(entries, what, "cleanup.policy", "delete", ConfigSource.DEFAULT_CONFIG, True)
    check_entry(entries, what, "max.message.bytes", "1048588", ConfigSource.DEFAULT_CONFIG, True,
                [("message.max.bytes", "1048588", ConfigSource.DEFAULT_CONFIG)])
    if roll_ms is not None:
        check_entry(entries, what, "segment.ms", roll_ms, ConfigSource.STATIC_BROKER_CONFIG, False,
                    [("log.roll.ms", roll_ms, ConfigSource.STATIC_BROKER_CONFIG)])
    expected_keys = {"cleanup.policy", "compression.type", "flush.messages", "flush.ms",
                     "index.interval.bytes", "max.message.bytes", "message.timestamp.type",
                     "min.insync.replicas", "retention.bytes", "retention.ms", "segment.bytes",
                     "segment.index.bytes", "segment.ms"}
    missing = expected_keys - set(entries)
    sc.check(not missing, f"{what}: keys missing: {sorted(missing)}")
    overridden = sorted(k for k, e in entries.items() if ConfigSource(e.source) == ConfigSource.DYNAMIC_TOPIC_CONFIG)
    sc.check(overridden == ["retention.ms", "segment.bytes"],
             f"{what}: DYNAMIC_TOPIC_CONFIG entries {overridden}, expected retention.ms and segment.bytes")

    entries = describe_configs(admin, ResourceType.TOPIC, plain).result(timeout=OP_TIMEOUT + 5)
    check_entry(entries, f"describe_configs topic {plain}", "retention.ms", "604800000",
                ConfigSource.DEFAULT_CONFIG, True)

    e = err_of(describe_configs(admin, ResourceType.TOPIC, f"{prefix}-no-such-topic"))
    sc.check(e is not None and e.code() == KafkaError.UNKNOWN_TOPIC_OR_PART,
             f"describe_configs of an unknown topic: {e.name() if e else 'success'}, "
             f"expected UNKNOWN_TOPIC_OR_PART")

    try:
        entries = describe_configs(admin, ResourceType.BROKER, "1").result(timeout=OP_TIMEOUT + 5)
    except Exception as e:  # noqa: BLE001
        sc.die(f"describe_configs broker 1: {e}")
    what = "describe_configs broker 1"
    check_entry(entries, what, "log.retention.ms", "604800000", ConfigSource.DEFAULT_CONFIG, True)
    check_entry(entries, what, "num.partitions", "1", ConfigSource.DEFAULT_CONFIG, True)
    check_entry(entries, what, "log.retention.bytes", "-1", ConfigSource.DEFAULT_CONFIG, True)
    sc.check(entries.get("node.id") is not None and entries["node.id"].value == "1",
             f"{what}: node.id {entries.get('node.id')}")
    if roll_ms is not None:
        check_entry(entries, what, "log.roll.ms", roll_ms, ConfigSource.STATIC_BROKER_CONFIG, False)
    print("OK describe_configs: topic overrides, defaults, synonyms, broker 1", flush=True)

    # --- CreatePartitions -------------------------------------------------
    futs = admin.create_partitions([NewPartitions(topic, 5)], **kw)
    expect_ok(futs, "create_partitions 3 -> 5")
    t = wait_for_partitions(admin, topic, 5, deadline)
    check_metadata_topic(t, topic, 5)
    check_described(admin, topic, 5)
    futs = admin.create_partitions([NewPartitions(topic, 4)], **kw)
    expect_err(futs[topic], KafkaError.INVALID_PARTITIONS, "create_partitions 5 -> 4")
    futs = admin.create_partitions([NewPartitions(topic, 5)], **kw)
    expect_err(futs[topic], KafkaError.INVALID_PARTITIONS, "create_partitions 5 -> 5")
    futs = admin.create_partitions([NewPartitions(f"{prefix}-no-such-topic", 2)], **kw)
    expect_err(futs[f"{prefix}-no-such-topic"], KafkaError.UNKNOWN_TOPIC_OR_PART,
               "create_partitions of an unknown topic")
    futs = admin.create_partitions([NewPartitions(topic, 8)], validate_only=True, **kw)
    expect_ok(futs, "create_partitions validate_only 5 -> 8")
    time.sleep(0.5)
    n = len(topics_now(admin)[topic].partitions)
    sc.check(n == 5, f"create_partitions validate_only changed the partition count to {n}")

    # The new partitions take records.
    p = Producer({"bootstrap.servers": sc.bootstrap(), "acks": "all", "enable.idempotence": False,
                  "message.timeout.ms": 20000, "topic.metadata.refresh.interval.ms": 1000})
    delivered = {}
    for part in range(5):
        p.produce(topic, value=f"to p{part}".encode(), partition=part,
                  on_delivery=lambda err, msg, part=part: delivered.__setitem__(part, (err, msg.offset())))
    p.flush(25)
    sc.check(sorted(delivered) == list(range(5)) and all(e is None and o == 0 for e, o in delivered.values()),
             f"producing one record to each of the 5 partitions: {delivered}")
    print("OK create_partitions: 3 -> 5, shrink/same/unknown refused, validate_only, new partitions writable",
          flush=True)

    # --- DescribeCluster --------------------------------------------------
    try:
        cl = admin.describe_cluster(request_timeout=OP_TIMEOUT).result(timeout=OP_TIMEOUT + 5)
    except Exception as e:  # noqa: BLE001
        sc.die(f"describe_cluster: {e}")
    sc.check(cl.cluster_id, f"describe_cluster: empty cluster id {cl.cluster_id!r}")
    sc.check(len(cl.nodes) == 1, f"describe_cluster: {len(cl.nodes)} nodes, expected 1")
    node = cl.nodes[0]
    host, port = sc.bootstrap().rsplit(":", 1)
    sc.check(node.id == 1 and node.host == host and node.port == int(port),
             f"describe_cluster: node {node.id} {node.host}:{node.port}, expected 1 {host}:{port}")
    sc.check(cl.controller is not None and cl.controller.id == 1,
             f"describe_cluster: controller {cl.controller}, expected node 1")
    md = admin.list_topics(timeout=OP_TIMEOUT)
    sc.check(md.cluster_id == cl.cluster_id and md.controller_id == 1,
             f"metadata cluster id {md.cluster_id!r} / controller {md.controller_id}; describe_cluster "
             f"said {cl.cluster_id!r} / 1")
    print(f"OK describe_cluster: id {cl.cluster_id}, node 1 at {node.host}:{node.port}, controller 1",
          flush=True)

    # --- DeleteTopics -----------------------------------------------------
    futs = admin.delete_topics([topic, plain, assigned, mixed_ok], **kw)
    expect_ok(futs, "delete_topics")
    futs = admin.delete_topics([f"{prefix}-no-such-topic"], **kw)
    expect_err(futs[f"{prefix}-no-such-topic"], KafkaError.UNKNOWN_TOPIC_OR_PART,
               "delete_topics of an unknown topic")
    while True:
        left = [x for x in (topic, plain, assigned, mixed_ok) if x in topics_now(admin)]
        if not left:
            break
        deadline.check(f"deleted topics still in metadata: {left}")
        time.sleep(0.2)
    e = err_of(describe_topic(admin, topic))
    sc.check(e is not None and e.code() == KafkaError.UNKNOWN_TOPIC_OR_PART,
             f"describe_topics of a deleted topic: {e.name() if e else 'success'}, expected UNKNOWN_TOPIC_OR_PART")
    futs = admin.delete_topics([topic], **kw)
    expect_err(futs[topic], KafkaError.UNKNOWN_TOPIC_OR_PART, "deleting the same topic again")

    # The name can be used again: a new topic (new id, no old overrides).
    futs = admin.create_topics([NewTopic(topic, 2, 1)], **kw)
    expect_ok(futs, "create_topics after delete")
    wait_for_partitions(admin, topic, 2, deadline)
    new_id = check_described(admin, topic, 2)
    sc.check(new_id != old_id, f"re-created topic kept the old topic id {old_id}")
    entries = describe_configs(admin, ResourceType.TOPIC, topic).result(timeout=OP_TIMEOUT + 5)
    check_entry(entries, f"describe_configs re-created {topic}", "retention.ms", "604800000",
                ConfigSource.DEFAULT_CONFIG, True)
    lo, hi = _watermarks(topic)
    sc.check((lo, hi) == (0, 0), f"re-created {topic} p0: watermarks ({lo}, {hi}), expected (0, 0): old records?")
    print("OK delete_topics: gone from metadata, unknown refused, name reusable with a new id and fresh configs",
          flush=True)
    print("OK admin_confluent", flush=True)
    return 0


def _watermarks(topic):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": sc.bootstrap(), "group.id": "strata-tests-unused-group",
                  "enable.auto.commit": False})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=OP_TIMEOUT, cached=False)
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())
