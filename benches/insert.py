#!/usr/bin/env python3
"""Index maintenance per inserted row: ROWS keys inserted in one statement into
a ROWS-row table with no index, with a btree and with a learned index, for
random keys and for time-ordered keys (each above every key before it). The
index's share per row is the statement's time less the no-index table's, over
ROWS. Each order is run RUNS times, tables rebuilt and checkpointed before
each statement; the table reports the median and the spread of the runs, and
the WAL each statement wrote (pg_current_wal_lsn before and after).

Usage: benches/insert.sh [rows] [runs]     (default 1000000 3)
"""
import statistics, sys, time
from benchlib import connect, psql

HOST, PORT = sys.argv[1:3]
connect(HOST, PORT)
ROWS = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
RUNS = int(sys.argv[4]) if len(sys.argv) > 4 else 3
ORDERS = {
    "random": "hashint8(g)",
    "time-ordered": f"{ROWS} + g",
}
INDEXES = {"none": None, "btree": "", "learned": "USING learned"}

psql("CREATE EXTENSION IF NOT EXISTS learneddb")
results = {}  # (order, index) -> [(seconds, wal bytes)]
for order, expr in ORDERS.items():
    for run in range(RUNS):
        for name, using in INDEXES.items():
            psql(f"DROP TABLE IF EXISTS t_{name}; CREATE TABLE t_{name} (k int8);"
                 f" INSERT INTO t_{name} SELECT g FROM generate_series(1, {ROWS}) g")
            if using is not None:
                psql(f"CREATE INDEX t_{name}_k ON t_{name} {using} (k)")
            psql(f"VACUUM ANALYZE t_{name}")
            psql("CHECKPOINT")
            lsn = psql("SELECT pg_current_wal_lsn()")
            t = time.perf_counter()
            psql(f"INSERT INTO t_{name} SELECT {expr} FROM generate_series(1, {ROWS}) g")
            seconds = time.perf_counter() - t
            wal = int(psql(f"SELECT pg_current_wal_lsn() - '{lsn}'::pg_lsn"))
            results.setdefault((order, name), []).append((seconds, wal))
            psql(f"DROP TABLE t_{name}")

print(f"{ROWS:,} rows inserted in one statement into a {ROWS:,}-row table; {RUNS} runs each.\n")
print("| keys | index | statement (median) | index share per row (median, range) | ratio to btree | WAL per row |")
print("|---|---|---|---|---|---|")
for order in ORDERS:
    base = [s for s, _ in results[(order, "none")]]
    shares = {}
    for name in ("btree", "learned"):
        runs = results[(order, name)]
        # Each run against the no-index statement of the same run.
        shares[name] = [(s - b) / ROWS * 1e6 for (s, _), b in zip(runs, base)]
    for name in INDEXES:
        runs = results[(order, name)]
        stmt = statistics.median(s for s, _ in runs)
        wal = statistics.median(w for _, w in runs) / ROWS
        if name == "none":
            print(f"| {order} | none | {stmt:.2f} s | | | {wal:.0f} B |")
            continue
        sh = shares[name]
        ratio = statistics.median(sh) / statistics.median(shares["btree"])
        print(f"| {order} | {name} | {stmt:.2f} s | {statistics.median(sh):.2f} us "
              f"({min(sh):.2f}-{max(sh):.2f}) | {ratio:.2f} | {wal:.0f} B |")
