#!/usr/bin/env python3
"""Side-by-side benchmark of a learned index and a btree on the same int8 column.

For each table size and key order it builds both indexes on one table, then
measures, for each index with the other one dropped inside a rolled-back
transaction: size, build time, a nested-loop join probing the index with 1M
random existing keys (time and shared buffer hits per probe of the inner
index scan), and 1,000 range scans of 1,000 rows each. Prints a markdown table
with learned/btree ratios.

Usage: benches/run.sh [sizes...]      (default: 1000000 10000000)
"""
import sys
from benchlib import connect, explain, probe, psql, timed

connect(sys.argv[1], sys.argv[2])
SIZES = [int(s) for s in sys.argv[3:]] or [1_000_000, 10_000_000]
PROBES = 1_000_000
RANGES = 1_000


def measure(table, index, other):
    us, hits, pages = probe(table, index, PROBES, drop=other)
    range_sql = (f"SELECT count(*) FROM range_starts r CROSS JOIN LATERAL "
                 f"(SELECT k FROM {table} t WHERE t.k >= r.lo ORDER BY t.k LIMIT 1000) x")
    range_us = min(explain(range_sql, other)["Execution Time"] * 1000 / RANGES for _ in range(3))
    return us, hits, pages, range_us


def main():
    psql("CREATE EXTENSION IF NOT EXISTS learneddb")
    rows = []
    for n in SIZES:
        for order in ["sequential with gaps", "random order"]:
            table = f"bench_{n}_{'seq' if order.startswith('seq') else 'rnd'}"
            psql(f"DROP TABLE IF EXISTS {table}")
            # Keys increase by 1..10 (gaps); in random order the same keys are
            # stored in shuffled heap order.
            psql(f"CREATE UNLOGGED TABLE keys AS SELECT sum((hashint8(g) & 7) + 1) OVER (ORDER BY g) AS k FROM generate_series(1, {n}) g")
            shuffle = "ORDER BY hashint8(k)" if order.startswith("random") else "ORDER BY k"
            psql(f"CREATE TABLE {table} AS SELECT k FROM keys {shuffle}; DROP TABLE keys")
            psql(f"VACUUM ANALYZE {table}")
            bt, ln = f"{table}_btree", f"{table}_learned"
            bt_build = timed(f"SET maintenance_work_mem = '64MB'; CREATE INDEX {bt} ON {table} (k)")
            ln_build = timed(f"SET maintenance_work_mem = '64MB'; CREATE INDEX {ln} ON {table} USING learned (k)")
            psql(f"VACUUM ANALYZE {table}")
            psql(f"DROP TABLE IF EXISTS probes; CREATE TABLE probes AS SELECT k FROM {table} ORDER BY hashint8(k # 12345) LIMIT {PROBES}; ANALYZE probes")
            psql(f"DROP TABLE IF EXISTS range_starts; CREATE TABLE range_starts AS SELECT k AS lo FROM {table} ORDER BY hashint8(k # 777) LIMIT {RANGES}; ANALYZE range_starts")
            bt_size = int(psql(f"SELECT pg_relation_size('{bt}')"))
            ln_size = int(psql(f"SELECT pg_relation_size('{ln}')"))
            # Warm both indexes and the table into shared buffers first.
            psql(f"SELECT count(*) FROM {table}")
            measure(table, bt, ln)
            measure(table, ln, bt)
            bt_probe, bt_hits, bt_pages, bt_range = measure(table, bt, ln)
            ln_probe, ln_hits, ln_pages, ln_range = measure(table, ln, bt)
            rows.append((n, order, bt_size, ln_size, bt_build, ln_build, bt_probe, ln_probe, bt_hits, ln_hits, bt_pages, ln_pages, bt_range, ln_range))
            psql(f"DROP TABLE {table}")
    mb = lambda b: f"{b / 1048576:.1f} MB"
    print("| rows | key order | size btree | size learned | ratio | build btree | build learned | ratio |")
    print("|" + "---|" * 8)
    for r in rows:
        (n, order, bs, ls, bb, lb) = r[:6]
        print(f"| {n:,} | {order} | {mb(bs)} | {mb(ls)} | {ls / bs:.2f} | {bb:.2f} s | {lb:.2f} s | {lb / bb:.2f} |")
    print()
    print("| rows | key order | probe btree | probe learned | ratio | buffer hits/probe btree | learned "
          "| index pages/probe btree | learned | 1,000-row range btree | learned | ratio |")
    print("|" + "---|" * 12)
    for r in rows:
        (n, order, bp, lp, bh, lh, bpg, lpg, br, lr) = r[:2] + r[6:]
        print(f"| {n:,} | {order} | {bp:.2f} us | {lp:.2f} us | {lp / bp:.2f} | {bh:.2f} | {lh:.2f} "
              f"| {bpg:.2f} | {lpg:.2f} | {br:.1f} us | {lr:.1f} us | {lr / br:.2f} |")


main()
