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
import json, subprocess, sys, time

HOST, PORT = sys.argv[1], sys.argv[2]
SIZES = [int(s) for s in sys.argv[3:]] or [1_000_000, 10_000_000]
PROBES = 1_000_000
RANGES = 1_000


def psql(sql, fetch=True):
    out = subprocess.run(
        ["psql", "-h", HOST, "-p", PORT, "-U", "postgres", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True, capture_output=True, text=True)
    return out.stdout.strip()


def timed(sql):
    t = time.perf_counter()
    psql(sql)
    return time.perf_counter() - t


def explain(sql, drop):
    """Runs sql with index `drop` dropped (rolled back); returns the JSON plan."""
    out = psql(f"BEGIN; DROP INDEX {drop}; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;"
               f" SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"
               f" SET LOCAL max_parallel_workers_per_gather = 0;"
               f" EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) {sql}; ROLLBACK;")
    return json.loads(out)[0]


def find(node, pred):
    if pred(node):
        return node
    for child in node.get("Plans", []):
        hit = find(child, pred)
        if hit:
            return hit
    return None


def index_blocks(index):
    """Buffer accesses to the index itself (not the heap or its visibility map)."""
    return int(psql(f"SELECT idx_blks_hit + idx_blks_read FROM pg_statio_user_indexes WHERE indexrelname = '{index}'"))


def measure(table, index, other):
    probe_sql = f"SELECT count(*) FROM probes p JOIN {table} t ON t.k = p.k"
    best = None
    for _ in range(3):
        before = index_blocks(index)
        plan = explain(probe_sql, other)
        index_pages = (index_blocks(index) - before) / PROBES
        inner = find(plan["Plan"], lambda n: n.get("Index Name") == index)
        assert inner, f"{index} not used: {json.dumps(plan)[:500]}"
        loops = inner["Actual Loops"]
        hits = (inner["Shared Hit Blocks"] + inner["Shared Read Blocks"]) / loops
        us = plan["Execution Time"] * 1000 / loops
        if best is None or us < best[0]:
            best = (us, hits, index_pages)
    range_sql = (f"SELECT count(*) FROM range_starts r CROSS JOIN LATERAL "
                 f"(SELECT k FROM {table} t WHERE t.k >= r.lo ORDER BY t.k LIMIT 1000) x")
    range_us = min(explain(range_sql, other)["Execution Time"] * 1000 / RANGES for _ in range(3))
    return best[0], best[1], best[2], range_us


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
