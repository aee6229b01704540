#!/usr/bin/env python3
"""Runs SQL statements against chDB (an embedded, current ClickHouse engine) and checks results.

Reads a JSON list from stdin: [{"sql": "...", "expect": "<TSV text>" | null}, ...].
Every statement must succeed; where "expect" is given, the TSV output must equal it.
Prints the engine version and one line per statement; exits 1 on the first failure.
"""
import json
import sys

try:
    from chdb import session
except ImportError:  # the test command installs chdb; a missing one is an error, not a skip
    print("chdb is not installed (pip install chdb)", file=sys.stderr)
    sys.exit(2)


def main() -> int:
    statements = json.load(sys.stdin)
    s = session.Session()
    print("chdb engine", s.query("SELECT version()", "TSV").bytes().decode().strip())
    for n, item in enumerate(statements, 1):
        sql = item["sql"]
        try:
            out = s.query(sql, "TSV").bytes().decode()
        except Exception as e:  # noqa: BLE001 - report any engine error with the statement
            print(f"statement {n} failed: {e}\n{sql}", file=sys.stderr)
            return 1
        expect = item.get("expect")
        if expect is not None and out != expect:
            print(f"statement {n}: expected {expect!r}, got {out!r}\n{sql}", file=sys.stderr)
            return 1
        print(f"ok {n}: {sql[:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
