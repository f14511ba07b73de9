#!/usr/bin/env python3
"""Checks, with confluent-kafka, what `strata produce` wrote to a one-partition topic.

usage: produce_verify_confluent.py TOPIC INPUT_FILE SEP [KEY=VALUE ...]

INPUT_FILE holds the lines fed to `strata produce`; SEP is its --key-separator ("" for none);
the KEY=VALUE arguments are its --header flags. Every line must come back, in order, as one
record: key = the part before the first SEP (None when the line has no SEP), value = the rest,
headers = exactly the given ones, in order. Exits 0, or non-zero with a FAIL line.
"""

import sys

import strata_common as sc


def expected_records(path, sep):
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for line in lines:
        if sep and sep in line:
            k, v = line.split(sep, 1)
            out.append((k, v))
        else:
            out.append((None, line))
    return out


def main():
    if len(sys.argv) < 4:
        sc.die("usage: produce_verify_confluent.py TOPIC INPUT_FILE SEP [KEY=VALUE ...]")
    topic, path, sep = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    headers = []
    for h in sys.argv[4:]:
        k, v = h.split("=", 1)
        headers.append((k, v.encode()))
    sc.start_watchdog(90)
    expected = expected_records(path, sep)
    deadline = sc.Deadline(60, f"read {len(expected)} records of {topic}")
    got = sc.confluent_consume_all(topic, deadline, expected_total=len(expected))
    sc.check(len(got) == len(expected),
             f"{topic}: expected {len(expected)} records, read {len(got)}")
    for i, (rec, (key, value)) in enumerate(zip(got, expected)):
        sc.check(rec.partition == 0, f"record {i}: partition {rec.partition}, expected 0")
        sc.check(rec.offset == i, f"record {i}: offset {rec.offset}, expected {i}")
        sc.check(rec.key == key, f"record {i}: key {rec.key!r}, expected {key!r}")
        sc.check(rec.value == value, f"record {i}: value {rec.value!r}, expected {value!r}")
        got_headers = sc._norm_headers(rec.headers)
        sc.check(got_headers == headers,
                 f"record {i}: headers {got_headers!r}, expected {headers!r}")
        sc.check(rec.ts_type == "create", f"record {i}: timestamp type {rec.ts_type}")
    print(f"OK {len(got)} records of {topic} intact", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
