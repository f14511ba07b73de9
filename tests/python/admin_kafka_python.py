#!/usr/bin/env python3
"""Topic administration through kafka-python's KafkaAdminClient.

The same story as admin_confluent.py, through an independent protocol
implementation: CreateTopics (configs, broker defaults, per-topic errors,
validate_only), list_topics / describe_topics, DescribeConfigs with synonyms
for the topic and broker 1, CreatePartitions, DescribeCluster, DeleteTopics.

usage: admin_kafka_python.py TOPIC_PREFIX [--broker-roll-ms MS]
  --broker-roll-ms: the broker was started with --set log.roll.ms=MS; the
  topic's segment.ms must then come from STATIC_BROKER_CONFIG.
"""

import logging
import sys
import time

import strata_common as sc

TIMEOUT_MS = 10000

# Kafka error codes.
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC_EXCEPTION = 17
TOPIC_ALREADY_EXISTS = 36
INVALID_PARTITIONS = 37
INVALID_REPLICATION_FACTOR = 38
INVALID_REPLICA_ASSIGNMENT = 39
INVALID_CONFIG = 40


def code_name(code):
    import kafka.errors as Errors

    return f"{Errors.for_code(code).__name__} ({code})"


def create(admin, spec, validate_only=False):
    """CreateTopics without raising; returns {name: (error_code, result dict)}."""
    try:
        r = admin.create_topics(spec, timeout_ms=TIMEOUT_MS, validate_only=validate_only,
                                raise_errors=False)
    except Exception as e:  # noqa: BLE001
        sc.die(f"create_topics {list(spec)}: {type(e).__name__}: {e}")
    out = {t["name"]: (t["error_code"], t) for t in r["topics"]}
    sc.check(set(out) == set(spec), f"create_topics answered for {sorted(out)}, asked for {sorted(spec)}")
    return out


def expect_code(what, got, want):
    sc.check(got == want, f"{what}: got {code_name(got)}, expected {code_name(want)}")


def describe_topic(admin, topic):
    ts = admin.describe_topics([topic])
    sc.check(len(ts) == 1 and ts[0]["name"] == topic, f"describe_topics([{topic!r}]) returned {ts}")
    return ts[0]


def wait_for_partitions(admin, topic, count, deadline):
    while True:
        if topic in admin.list_topics():
            t = describe_topic(admin, topic)
            if t["error_code"] == 0 and len(t["partitions"]) == count:
                return t
        deadline.check(f"topic {topic!r} with {count} partitions not in metadata")
        time.sleep(0.2)


def check_topic(t, topic, count):
    sc.check(t["error_code"] == 0, f"describe_topics {topic}: {code_name(t['error_code'])}")
    sc.check(not t["is_internal"], f"describe_topics {topic}: is_internal")
    parts = sorted(t["partitions"], key=lambda p: p["partition_index"])
    sc.check([p["partition_index"] for p in parts] == list(range(count)),
             f"describe_topics {topic}: partitions {[p['partition_index'] for p in parts]}, "
             f"expected 0..{count - 1}")
    for p in parts:
        i = p["partition_index"]
        sc.check(p["error_code"] == 0, f"{topic} p{i}: {code_name(p['error_code'])}")
        sc.check(p["leader_id"] == 1, f"{topic} p{i}: leader {p['leader_id']}, expected 1")
        sc.check(p["replica_nodes"] == [1] and p["isr_nodes"] == [1],
                 f"{topic} p{i}: replicas {p['replica_nodes']} isr {p['isr_nodes']}, expected [1] and [1]")


def describe_configs(admin, restype, name):
    from kafka.admin import ConfigResource

    r = admin.describe_configs([ConfigResource(restype, name)], include_synonyms=True, config_filter="all")
    key = "topic" if restype.name == "TOPIC" else "broker"
    sc.check(key in r and name in r[key], f"describe_configs {key} {name}: answer {str(r)[:500]}")
    return r[key][name]


def check_entry(entries, what, key, value, source, synonyms=None):
    sc.check(key in entries, f"{what}: no entry {key!r}; entries: {sorted(entries)}")
    e = entries[key]
    sc.check(e["value"] == value, f"{what} {key}: value {e['value']!r}, expected {value!r}")
    sc.check(e["config_source"] == source, f"{what} {key}: source {e['config_source']}, expected {source}")
    sc.check(not e["is_sensitive"], f"{what} {key}: is_sensitive")
    if synonyms is not None:
        got = [(s["name"], s["value"], s["source"]) for s in e.get("synonyms", [])]
        sc.check(got == synonyms, f"{what} {key}: synonyms {got}, expected {synonyms}")


def create_partitions(admin, spec, validate_only=False):
    r = admin.create_partitions(spec, timeout_ms=TIMEOUT_MS, validate_only=validate_only, raise_errors=False)
    return {x.name: x.error_code for x in r.results}


def delete(admin, topics):
    r = admin.delete_topics(topics, timeout_ms=TIMEOUT_MS, raise_errors=False)
    rows = r.get("topics") or r.get("responses") or []
    out = {t["name"]: t["error_code"] for t in rows}
    sc.check(set(out) == set(topics), f"delete_topics answered {r}, asked for {topics}")
    return out


def main():
    args = sys.argv[1:]
    roll_ms = None
    if len(args) == 3 and args[1] == "--broker-roll-ms":
        roll_ms = args[2]
        args = args[:1]
    if len(args) != 1:
        sc.die("usage: admin_kafka_python.py TOPIC_PREFIX [--broker-roll-ms MS]")
    prefix = args[0]
    sc.start_watchdog(150)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, ConfigResourceType

    deadline = sc.Deadline(120, "admin_kafka_python")
    admin = KafkaAdminClient(bootstrap_servers=sc.bootstrap(), request_timeout_ms=15000,
                             client_id="strata-tests-admin")
    topic = f"{prefix}-main"
    plain = f"{prefix}-defaults"
    never = f"{prefix}-validate-only"
    try:
        # --- CreateTopics -------------------------------------------------
        res = create(admin, {
            topic: {"num_partitions": 3, "replication_factor": 1,
                    "configs": {"retention.ms": "3600000", "segment.bytes": "1048576"}},
            plain: {"num_partitions": -1, "replication_factor": -1},
        })
        for name, (code, r) in res.items():
            expect_code(f"create_topics {name}", code, 0)
        _, r = res[topic]
        sc.check(r["num_partitions"] == 3 and r["replication_factor"] == 1,
                 f"create_topics {topic}: answer says {r['num_partitions']} partitions, "
                 f"replication factor {r['replication_factor']}")
        # CreateTopics v5+ answers with the effective configs.
        cfg = r.get("configs") or {}
        sc.check(cfg.get("retention.ms", {}).get("value") == "3600000"
                 and cfg["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG",
                 f"create_topics {topic}: configs in the answer: {cfg.get('retention.ms')}")
        sc.check(res[plain][1]["num_partitions"] == 1,
                 f"create_topics {plain} with -1 partitions: answer says {res[plain][1]['num_partitions']} "
                 f"(broker num.partitions is 1)")
        check_topic(wait_for_partitions(admin, topic, 3, deadline), topic, 3)
        check_topic(wait_for_partitions(admin, plain, 1, deadline), plain, 1)
        old_id = describe_topic(admin, topic)["topic_id"]
        print(f"OK created {topic} (3 partitions, configs) and {plain} (broker defaults)", flush=True)

        refused = {
            topic: ({"num_partitions": 3, "replication_factor": 1}, TOPIC_ALREADY_EXISTS),
            "bad name!": ({"num_partitions": 1, "replication_factor": 1}, INVALID_TOPIC_EXCEPTION),
            ".": ({"num_partitions": 1, "replication_factor": 1}, INVALID_TOPIC_EXCEPTION),
            f"{prefix}-rf3": ({"num_partitions": 1, "replication_factor": 3}, INVALID_REPLICATION_FACTOR),
            f"{prefix}-p0": ({"num_partitions": 0, "replication_factor": 1}, INVALID_PARTITIONS),
            f"{prefix}-unknown-cfg": ({"num_partitions": 1, "replication_factor": 1,
                                       "configs": {"no.such.config": "1"}}, INVALID_CONFIG),
            f"{prefix}-bad-ts": ({"num_partitions": 1, "replication_factor": 1,
                                  "configs": {"message.timestamp.type": "LogAppendTime"}}, INVALID_CONFIG),
            f"{prefix}-broker7": ({"assignments": {0: [7]}}, INVALID_REPLICA_ASSIGNMENT),
        }
        ok_too = f"{prefix}-mixed-ok"
        spec = {name: s for name, (s, _) in refused.items()}
        spec[ok_too] = {"num_partitions": 2, "replication_factor": 1}
        res = create(admin, spec)
        for name, (_, want) in refused.items():
            code, r = res[name]
            expect_code(f"create_topics {name[:40]!r}", code, want)
            sc.log(f"  create_topics {name[:40]!r}: refused as expected: {code_name(code)}: {r['error_message']}")
        expect_code(f"create_topics {ok_too} (next to refused ones)", res[ok_too][0], 0)
        existing = set(admin.list_topics())
        leaked = [n for n, (_, c) in refused.items() if c != TOPIC_ALREADY_EXISTS and n in existing]
        sc.check(not leaked, f"refused topics exist after all: {leaked}")
        print(f"OK {len(refused)} invalid CreateTopics refused with the Kafka error codes", flush=True)

        res = create(admin, {never: {"num_partitions": 2, "replication_factor": 1,
                                     "configs": {"retention.ms": "1000"}}}, validate_only=True)
        expect_code("create_topics validate_only", res[never][0], 0)
        res = create(admin, {topic: {"num_partitions": 2, "replication_factor": 1}}, validate_only=True)
        expect_code("create_topics validate_only of an existing topic", res[topic][0], TOPIC_ALREADY_EXISTS)
        time.sleep(0.5)
        sc.check(never not in admin.list_topics(), f"validate_only created {never}")
        print("OK validate_only creates nothing", flush=True)

        # --- DescribeConfigs ----------------------------------------------
        entries = describe_configs(admin, ConfigResourceType.TOPIC, topic)
        what = f"describe_configs topic {topic}"
        check_entry(entries, what, "retention.ms", "3600000", "DYNAMIC_TOPIC_CONFIG",
                    [("retention.ms", "3600000", "DYNAMIC_TOPIC_CONFIG"),
                     ("log.retention.ms", "604800000", "DEFAULT_CONFIG")])
        check_entry(entries, what, "segment.bytes", "1048576", "DYNAMIC_TOPIC_CONFIG",
                    [("segment.bytes", "1048576", "DYNAMIC_TOPIC_CONFIG"),
                     ("log.segment.bytes", "1073741824", "DEFAULT_CONFIG")])
        check_entry(entries, what, "retention.bytes", "-1", "DEFAULT_CONFIG",
                    [("log.retention.bytes", "-1", "DEFAULT_CONFIG")])
        check_entry(entries, what, "min.insync.replicas", "1", "DEFAULT_CONFIG")
        if roll_ms is not None:
            check_entry(entries, what, "segment.ms", roll_ms, "STATIC_BROKER_CONFIG",
                        [("log.roll.ms", roll_ms, "STATIC_BROKER_CONFIG")])
        types = {k: e.get("config_type") for k, e in entries.items()}
        sc.check(types.get("retention.ms") == "LONG" and types.get("segment.bytes") == "INT"
                 and types.get("cleanup.policy") == "STRING",
                 f"{what}: config types retention.ms {types.get('retention.ms')}, segment.bytes "
                 f"{types.get('segment.bytes')}, cleanup.policy {types.get('cleanup.policy')}; "
                 f"expected LONG, INT, STRING")
        # kafka-python's default filter ('modified') keeps only dynamically set configs: the
        # topic's own overrides.
        from kafka.admin import ConfigResource
        modified = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])["topic"][topic]
        want_modified = {"retention.ms", "segment.bytes"}
        sc.check(set(modified) == want_modified,
                 f"describe_configs {topic} (modified only): {sorted(modified)}, expected {sorted(want_modified)}")

        entries = describe_configs(admin, ConfigResourceType.BROKER, "1")
        what = "describe_configs broker 1"
        check_entry(entries, what, "log.retention.ms", "604800000", "DEFAULT_CONFIG")
        check_entry(entries, what, "num.partitions", "1", "DEFAULT_CONFIG")
        if roll_ms is not None:
            check_entry(entries, what, "log.roll.ms", roll_ms, "STATIC_BROKER_CONFIG")
        sc.check(entries.get("node.id", {}).get("value") == "1", f"{what}: node.id {entries.get('node.id')}")
        print("OK describe_configs: topic overrides, defaults, synonyms, types, broker 1", flush=True)

        # --- CreatePartitions ---------------------------------------------
        expect_code("create_partitions 3 -> 5", create_partitions(admin, {topic: 5})[topic], 0)
        check_topic(wait_for_partitions(admin, topic, 5, deadline), topic, 5)
        expect_code("create_partitions 5 -> 4", create_partitions(admin, {topic: 4})[topic], INVALID_PARTITIONS)
        expect_code("create_partitions 5 -> 5", create_partitions(admin, {topic: 5})[topic], INVALID_PARTITIONS)
        unknown = f"{prefix}-no-such-topic"
        expect_code("create_partitions of an unknown topic", create_partitions(admin, {unknown: 2})[unknown],
                    UNKNOWN_TOPIC_OR_PARTITION)
        expect_code("create_partitions validate_only 5 -> 9",
                    create_partitions(admin, {topic: 9}, validate_only=True)[topic], 0)
        time.sleep(0.5)
        n = len(describe_topic(admin, topic)["partitions"])
        sc.check(n == 5, f"create_partitions validate_only changed the partition count to {n}")
        p = KafkaProducer(bootstrap_servers=sc.bootstrap(), acks="all", enable_idempotence=False,
                          request_timeout_ms=15000, max_block_ms=20000, metadata_max_age_ms=1000)
        try:
            for part in range(5):
                md = p.send(topic, value=f"to p{part}".encode(), partition=part).get(timeout=20)
                sc.check(md.partition == part and md.offset == 0,
                         f"record to partition {part}: landed at p{md.partition}@{md.offset}")
        finally:
            p.close(timeout=5)
        print("OK create_partitions: 3 -> 5, shrink/same/unknown refused, validate_only, new partitions writable",
              flush=True)

        # --- DescribeCluster ----------------------------------------------
        cl = admin.describe_cluster()
        host, port = sc.bootstrap().rsplit(":", 1)
        sc.check(cl.get("cluster_id"), f"describe_cluster: no cluster id: {cl}")
        sc.check(cl.get("controller_id") == 1, f"describe_cluster: controller {cl.get('controller_id')}, expected 1")
        brokers = [(b["broker_id"], b["host"], b["port"]) for b in cl.get("brokers", [])]
        sc.check(brokers == [(1, host, int(port))], f"describe_cluster: brokers {brokers}, expected [(1, {host}, {port})]")
        print(f"OK describe_cluster: id {cl['cluster_id']}, broker 1 at {host}:{port}, controller 1", flush=True)

        # --- DeleteTopics -------------------------------------------------
        res = delete(admin, [topic, plain, ok_too])
        for name, code in res.items():
            expect_code(f"delete_topics {name}", code, 0)
        res = delete(admin, [unknown])
        expect_code("delete_topics of an unknown topic", res[unknown], UNKNOWN_TOPIC_OR_PARTITION)
        while True:
            left = [t for t in (topic, plain, ok_too) if t in admin.list_topics()]
            if not left:
                break
            deadline.check(f"deleted topics still listed: {left}")
            time.sleep(0.2)
        res = create(admin, {topic: {"num_partitions": 1, "replication_factor": 1}})
        expect_code("create_topics after delete", res[topic][0], 0)
        t = wait_for_partitions(admin, topic, 1, deadline)
        sc.check(t["topic_id"] != old_id, f"re-created {topic} kept the old topic id {old_id}")
        check_entry(describe_configs(admin, ConfigResourceType.TOPIC, topic),
                    f"describe_configs re-created {topic}", "retention.ms", "604800000", "DEFAULT_CONFIG")
        print("OK delete_topics: gone from list_topics, unknown refused, name reusable with fresh configs",
              flush=True)
    finally:
        admin.close()
    print("OK admin_kafka_python", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
