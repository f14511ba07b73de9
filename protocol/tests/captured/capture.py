#!/usr/bin/env python3
"""Captures the request frames real Kafka clients send, for protocol/tests/captured.rs.

usage: capture.py --strata target/release/strata [--out DIR]
       capture.py --broker HOST:PORT --proxy-port P [--out DIR]

A TCP proxy on 127.0.0.1 forwards every connection to a Strata broker and saves each
client->broker request frame, its 4-byte size prefix stripped, as
`<client>-<apikey>-v<version>-<n>.bin` (the first 2 of each API key and version per client,
only frames under 64 KiB). Broker->client bytes are forwarded untouched.

Clients learn broker addresses from Metadata responses, so the broker must advertise the
proxy's address or the clients would bypass it after bootstrap. With --strata (the default way)
the script starts the broker itself on a free port with `--advertise` set to the proxy, in a
temp data dir; with --broker the running broker must have been started with
`--advertise 127.0.0.1:P` and P passed as --proxy-port.

Then it runs, one after the other, each labelled with its client name:
- kcat (librdkafka): `kcat -L`, `kcat -P -z zstd` of keyed records with headers,
  `kcat -C -o beginning -e`;
- confluent-kafka (librdkafka): AdminClient create_topics + describe_configs, a gzip Producer,
  a Consumer with assign();
- kafka-python: KafkaAdminClient create_topics, an lz4 KafkaProducer, a KafkaConsumer with
  assign().

Each client also produces idempotently (InitProducerId) and runs a consumer-group member that
commits (FindCoordinator, JoinGroup, SyncGroup, OffsetFetch, OffsetCommit, Heartbeat,
LeaveGroup); kafka-python's admin lists and describes groups. Frames of APIs Strata does not
implement are kept too: the test checks that they are refused the right way. Nothing at test time needs Python or a broker.
"""

import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KEEP_PER_VERSION = 2
FRAME_BYTES_MAX = 64 * 1024
RUN_SECONDS = 60


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class Proxy:
    """Accepts on `port`, forwards to `upstream`; a connection is labelled with the client name
    current when it was accepted."""

    def __init__(self, port, upstream, out_dir):
        self.upstream = upstream
        self.out_dir = out_dir
        self.label = "unlabelled"
        self.lock = threading.Lock()
        self.counts = {}  # (client, key, version) -> frames seen
        self.saved = []
        self.skipped_large = 0
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            client, _ = self.listener.accept()
            try:
                broker = socket.create_connection(self.upstream)
            except OSError as e:
                log(f"proxy: cannot reach the broker: {e}")
                client.close()
                continue
            label = self.label
            threading.Thread(target=self._requests, args=(client, broker, label), daemon=True).start()
            threading.Thread(target=self._responses, args=(broker, client), daemon=True).start()

    def _requests(self, client, broker, label):
        try:
            while True:
                prefix = recv_exact(client, 4)
                if prefix is None:
                    break
                (size,) = struct.unpack(">i", prefix)
                frame = recv_exact(client, size)
                if frame is None:
                    break
                self._record(label, frame)
                broker.sendall(prefix + frame)
        except OSError:
            pass
        finally:
            for s in (client, broker):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _responses(self, broker, client):
        try:
            while True:
                data = broker.recv(65536)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _record(self, label, frame):
        if len(frame) < 4:
            return
        key, version = struct.unpack(">hh", frame[:4])
        with self.lock:
            n = self.counts.get((label, key, version), 0)
            if n >= KEEP_PER_VERSION:
                return
            if len(frame) >= FRAME_BYTES_MAX:
                self.skipped_large += 1
                return
            self.counts[(label, key, version)] = n + 1
            name = f"{label}-{key}-v{version}-{n + 1}.bin"
            with open(os.path.join(self.out_dir, name), "wb") as f:
                f.write(frame)
            self.saved.append(name)


def run(cmd, stdin=None):
    log("$ " + " ".join(cmd))
    p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=RUN_SECONDS)
    if p.returncode != 0:
        log(p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace"))
        raise SystemExit(f"{cmd[0]} exited with {p.returncode}")
    return p.stdout


def run_kcat(bootstrap):
    topic = "captured-kcat"
    run(["kcat", "-L", "-b", bootstrap])
    records = b"k1:first value\nk2:second value\nk3:third value\n"
    run(["kcat", "-P", "-b", bootstrap, "-t", topic, "-K:", "-H", "trace=abc", "-H", "source=kcat",
         "-z", "zstd", "-X", "acks=all", "-X", "enable.idempotence=false"], stdin=records)
    out = run(["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
               "-f", "%k:%s\n"])
    assert out.count(b"\n") == 3, out
    # Idempotent produce (InitProducerId) and a group member (FindCoordinator, JoinGroup, SyncGroup,
    # OffsetFetch, OffsetCommit, Heartbeat, LeaveGroup) that exits at the end of the partition.
    run(["kcat", "-P", "-b", bootstrap, "-t", topic, "-z", "zstd", "-X", "enable.idempotence=true"],
        stdin=b"idempotent value " * 20 + b"\n")
    out = run(["kcat", "-b", bootstrap, "-G", "captured-kcat-group", "-X", "auto.offset.reset=earliest",
               "-e", "-q", "-f", "%s\n", topic])
    assert out.count(b"\n") == 4, out


def run_confluent(bootstrap):
    from confluent_kafka import Consumer, KafkaError, OFFSET_BEGINNING, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

    topic = "captured-confluent"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        f.result(timeout=30)
    res = ConfigResource(ResourceType.TOPIC, topic)
    for f in admin.describe_configs([res]).values():
        f.result(timeout=30)

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False,
                  "compression.type": "gzip", "linger.ms": 5})
    for i in range(3):
        p.produce(topic, key=f"k{i}", value=f"confluent value {i}" * 4,
                  headers=[("trace", b"abc"), ("n", str(i).encode())])
    assert p.flush(30) == 0

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "captured-unused",
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "enable.partition.eof": True})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got, deadline = 0, time.monotonic() + 30
    while time.monotonic() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF and got >= 3:
                break
            continue
        got += 1
    c.close()
    assert got == 3, got

    # Idempotent producer, then a group member that commits and leaves.
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                  "compression.type": "gzip"})
    p.produce(topic, value=b"idempotent value " * 20)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "captured-confluent-group",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got, deadline = 0, time.monotonic() + 30
    while got < 4 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got += 1
    c.commit(asynchronous=False)
    c.close()
    assert got == 4, got


def run_kafka_python(bootstrap):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = "captured-kafka-python"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()

    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False,
                      compression_type="lz4", linger_ms=5)
    for i in range(3):
        p.send(topic, key=f"k{i}".encode(), value=(f"kafka-python value {i}" * 4).encode(),
               headers=[("trace", b"abc")]).get(timeout=30)
    p.close()

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=3000)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got = sum(1 for _ in c)
    c.close()
    assert got == 3, got

    # A group member (kafka-python's own group protocol code), committing and leaving; the admin
    # API for groups.
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="captured-kafka-python-group",
                      enable_auto_commit=False, auto_offset_reset="earliest",
                      consumer_timeout_ms=3000)
    got = sum(1 for _ in c)
    c.commit()
    c.close()
    assert got == 3, got
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    # kafka-python 3 names these list_groups/...; 2.x list_consumer_groups/...
    for new, old, args in [("list_groups", "list_consumer_groups", ()),
                           ("describe_groups", "describe_consumer_groups",
                            (["captured-kafka-python-group"],)),
                           ("list_group_offsets", "list_consumer_group_offsets",
                            ("captured-kafka-python-group",))]:
        (getattr(admin, new, None) or getattr(admin, old))(*args)
    admin.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strata", help="path of the strata binary to start")
    ap.add_argument("--broker", help="HOST:PORT of a running broker advertising the proxy")
    ap.add_argument("--proxy-port", type=int, default=0)
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--clients", default="kcat,confluent_kafka,kafka_python")
    a = ap.parse_args()
    if bool(a.strata) == bool(a.broker):
        ap.error("give exactly one of --strata and --broker")
    proxy_port = a.proxy_port or free_port()
    broker_proc, data_dir = None, None
    if a.strata:
        broker_port = free_port()
        data_dir = tempfile.mkdtemp(prefix="strata-capture-")
        broker_proc = subprocess.Popen(
            [a.strata, "serve", "--listen", f"127.0.0.1:{broker_port}",
             "--advertise", f"127.0.0.1:{proxy_port}", "--data-dir", data_dir],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(data_dir, "broker.log"), "wb"))
        upstream = ("127.0.0.1", broker_port)
        for _ in range(100):
            try:
                socket.create_connection(upstream, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
    else:
        host, port = a.broker.rsplit(":", 1)
        upstream = (host, int(port))
    os.makedirs(a.out, exist_ok=True)
    proxy = Proxy(proxy_port, upstream, a.out)
    bootstrap = f"127.0.0.1:{proxy_port}"
    scenarios = {"kcat": run_kcat, "confluent_kafka": run_confluent,
                 "kafka_python": run_kafka_python}
    try:
        for name in a.clients.split(","):
            proxy.label = name
            log(f"== {name}")
            scenarios[name](bootstrap)
            time.sleep(0.5)  # let the last frames of closing connections through
    finally:
        if broker_proc:
            broker_proc.terminate()
            broker_proc.wait(timeout=30)
            shutil.rmtree(data_dir, ignore_errors=True)
    for name in sorted(proxy.saved):
        print(name)
    log(f"saved {len(proxy.saved)} frames to {a.out}; skipped {proxy.skipped_large} of 64 KiB or more")
    return 0


if __name__ == "__main__":
    sys.exit(main())
