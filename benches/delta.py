#!/usr/bin/env python3
"""Lookups before a retrain: a table of ROWS int8 keys (gaps 1..8) with a
learned index (retrain = off, built with full pages, the default) and a copy
with a btree, both given the same inserted rows, in steps up to a tenth of the
table: random keys (which find no room in the run's full pages and spill to
delta pages) and, separately, time-ordered keys above the run (appended delta
pages). After each step, on the quiet tables: a nested loop of PROBES
existing keys (time and index pages per probe, as benches/run.sh measures
them), and single point selects, one statement each (pgbench -M prepared,
one client, SECS seconds), whose per-statement cost includes what a scan
reads once before its first probe (for the learned index: the metapage and
the delta directory).

Usage: benches/delta.sh [rows]     (default 10000000)
"""
import subprocess, sys
from benchlib import connect, probe, psql

HOST, PORT = sys.argv[1:3]
connect(HOST, PORT)
ROWS = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000_000
STEPS = [0, ROWS // 1000, ROWS // 100, ROWS // 20, ROWS // 10]
PROBES = 20_000
SECS = 5


def select_ms(table, maxkey):
    script = f"/tmp/learneddb-delta-{table}.sql"
    with open(script, "w") as f:
        f.write(f"\\set k random(1, {maxkey})\nSELECT k FROM {table} WHERE k = :k;\n")
    out = subprocess.run(["pgbench", "-h", HOST, "-p", PORT, "-U", "postgres", "-n", "-c", "1",
                          "-M", "prepared", "-T", str(SECS), "-f", script, "postgres"],
                         check=True, capture_output=True, text=True).stdout
    return float(next(l for l in out.splitlines() if l.startswith("latency average")).split()[3])


def main():
    psql("CREATE EXTENSION IF NOT EXISTS learneddb")
    rows = []
    for order, expr in [("random", "(hashint8(g # 4242) & 1073741823) % {maxkey}"),
                        ("time-ordered", "{maxkey} + 4 * g")]:
        psql("DROP TABLE IF EXISTS t_l, t_b, probes")
        psql(f"CREATE TABLE t_l AS SELECT sum((hashint8(g) & 7) + 1) OVER (ORDER BY g) AS k "
             f"FROM generate_series(1, {ROWS}) g")
        psql("CREATE TABLE t_b AS SELECT k FROM t_l")
        maxkey = int(psql("SELECT max(k) FROM t_l"))
        psql("CREATE INDEX t_l_k ON t_l USING learned (k) WITH (retrain = off)")
        psql("CREATE INDEX t_b_k ON t_b (k)")
        psql(f"CREATE TABLE probes AS SELECT k FROM t_l ORDER BY hashint8(k # 777) LIMIT {PROBES}")
        psql("ANALYZE probes")
        done = 0
        for step in STEPS:
            if step > done:
                keys = expr.format(maxkey=maxkey)
                for t in ["t_l", "t_b"]:
                    psql(f"INSERT INTO {t} SELECT {keys} FROM generate_series({done + 1}, {step}) g")
                done = step
            for t in ["t_l", "t_b"]:
                psql(f"VACUUM ANALYZE {t}")
            delta_pages = int(psql("SELECT delta_pages FROM learned_index_stats('t_l_k')"))
            lus, _, lpages = probe("t_l", "t_l_k", PROBES, runs=2)
            bus, _, bpages = probe("t_b", "t_b_k", PROBES, runs=2)
            lms, bms = select_ms("t_l", maxkey), select_ms("t_b", maxkey)
            rows.append((order, step, delta_pages, bus, lus, bpages, lpages, bms, lms))
            print(f"{order} +{step}: {delta_pages} delta pages, probe {lus:.2f} us ({lpages:.2f} pages) "
                  f"vs btree {bus:.2f} us ({bpages:.2f}), select {lms:.3f} ms vs {bms:.3f} ms",
                  file=sys.stderr)
    print(f"{ROWS:,} rows; the learned index with retrain = off.\n")
    print("| inserted keys | rows inserted | learned delta pages | probe btree | learned | ratio "
          "| index pages/probe btree | learned | point select btree | learned | ratio |")
    print("|" + "---|" * 11)
    for order, step, dp, bus, lus, bp, lp, bms, lms in rows:
        print(f"| {order} | {step:,} | {dp:,} | {bus:.2f} us | {lus:.2f} us | {lus / bus:.2f} "
              f"| {bp:.2f} | {lp:.2f} | {bms:.3f} ms | {lms:.3f} ms | {lms / bms:.2f} |")


main()
