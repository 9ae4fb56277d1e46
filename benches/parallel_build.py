#!/usr/bin/env python3
"""CREATE INDEX time, serial (max_parallel_maintenance_workers = 0) and with
two parallel workers (= 2, the table's parallel_workers = 2), for a learned
index and a btree on the same ROWS-row int8 column, in the same run. Two heap
orders: keys in random order, and keys in heap order (where a serial learned
build skips the sort). maintenance_work_mem = 512MB for every build. Each
build is run RUNS times (table checkpointed and in shared buffers before);
the table reports the median and the range.

Usage: benches/parallel_build.sh [rows] [runs]     (default 10000000 3)
"""
import statistics, sys, time
from benchlib import connect, psql

HOST, PORT = sys.argv[1:3]
connect(HOST, PORT)
ROWS = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000_000
RUNS = int(sys.argv[4]) if len(sys.argv) > 4 else 3
ORDERS = {"random heap": "hashint8(g)", "heap in key order": "g"}
INDEXES = {"btree": "", "learned": "USING learned"}
MODES = {"serial": 0, "2 workers": 2}

psql("CREATE EXTENSION IF NOT EXISTS learneddb")
psql("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
results = {}
for order, expr in ORDERS.items():
    psql(f"DROP TABLE IF EXISTS t; CREATE TABLE t (k int8) WITH (parallel_workers = 2);"
         f" INSERT INTO t SELECT {expr} FROM generate_series(1, {ROWS}) g")
    psql("VACUUM ANALYZE t")
    for run in range(RUNS):
        for name, using in INDEXES.items():
            for mode, workers in MODES.items():
                psql("CHECKPOINT")
                psql("SELECT pg_prewarm('t')")
                t = time.perf_counter()
                psql(f"SET maintenance_work_mem = '512MB'; SET max_parallel_maintenance_workers = {workers};"
                     f" CREATE INDEX t_k ON t {using} (k)")
                results.setdefault((order, name, mode), []).append(time.perf_counter() - t)
                psql("DROP INDEX t_k")
    psql("DROP TABLE t")

print(f"CREATE INDEX on {ROWS:,} int8 rows, PostgreSQL 18, maintenance_work_mem = 512MB; {RUNS} runs each.\n")
print("| heap | index | serial (median, range) | 2 workers (median, range) | parallel / serial | learned / btree, parallel |")
print("|---|---|---|---|---|---|")
for order in ORDERS:
    for name in INDEXES:
        cells = []
        for mode in MODES:
            r = results[(order, name, mode)]
            cells.append(f"{statistics.median(r):.2f} s ({min(r):.2f}-{max(r):.2f})")
        ser = statistics.median(results[(order, name, "serial")])
        par = statistics.median(results[(order, name, "2 workers")])
        vs = statistics.median(results[(order, name, "2 workers")]) / statistics.median(results[(order, "btree", "2 workers")])
        print(f"| {order} | {name} | {cells[0]} | {cells[1]} | {par / ser:.2f}x | {vs:.2f}x |")
