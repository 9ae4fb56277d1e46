#!/usr/bin/env python3
"""How much of an index-only scan an index access method can change at all.

Two scans where the learned index has targets against btree: the zipf probe
(1M rows, 1,778 keys, half the rows on one, heap in random order: a nested
loop of index-only scans returning every row of a key) and the 1,000-key
range count (1M serial ids, heap in key order: count(*) over a random
1,000-key range). For each, the same query runs RUNS times against a btree
copy and a learned copy of the table under `perf record -a`; the samples of
the server's processes are split by library: `postgres` (the executor, the
buffer manager, and for btree its access method) and `learneddb.so` (all of
the learned index's own work).

The learned run's `postgres` samples are what the scan costs with an access
method that costs nothing (they include the few buffer-manager calls the
learned index makes, so the bound is slightly generous): divided by btree's
total, the lowest time ratio any access method could reach on that scan. For
the range count the pgbench latency adds what each transaction costs around
the scan (client, protocol, planning of a prepared statement's execution).

Usage: benches/bounds.sh [runs]     (default 100)
"""
import os, re, subprocess, sys, tempfile
from benchlib import connect, psql

HOST, PORT = sys.argv[1:3]
connect(HOST, PORT)
RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else 100
NESTED_LOOP = ("SET jit = off; SET enable_hashjoin = off; SET enable_mergejoin = off;"
               " SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_memoize = off;"
               " SET max_parallel_workers_per_gather = 0; ")
U = "((hashint8(g::int8 * 7919 + 3) & 4294967295) + 0.5) / 4294967296.0"
ZIPF = f"CASE WHEN g % 2 = 0 THEN 1000 ELSE floor(exp({U} * ln(1778)))::int8 * 1000 END"


def setup():
    psql("CREATE EXTENSION IF NOT EXISTS learneddb")
    psql("DROP TABLE IF EXISTS zb, zl, probes, rb, rl")
    psql(f"CREATE TABLE zb AS SELECT ({ZIPF})::int8 AS k FROM generate_series(1, 1000000) g"
         " ORDER BY hashint8(g::int8 * 31 + 7)")
    psql("CREATE TABLE zl AS SELECT * FROM zb")
    psql("CREATE TABLE probes AS SELECT DISTINCT k FROM zb")
    psql("CREATE TABLE rb AS SELECT g::int8 AS k, g::int4 AS v FROM generate_series(1, 1000000) g")
    psql("CREATE TABLE rl AS SELECT * FROM rb")
    for t, using in [("zb", "btree"), ("zl", "learned"), ("rb", "btree"), ("rl", "learned")]:
        psql(f"CREATE INDEX {t}_k ON {t} USING {using} (k)")
        psql(f"VACUUM ANALYZE {t}")
    psql("VACUUM ANALYZE probes")


def query(workload, table):
    if workload == "zipf probe":
        return f"SELECT count(*) FROM probes p JOIN {table} t ON t.k = p.k"
    return (f"SELECT sum(c) FROM generate_series(1, 2000) s, LATERAL (SELECT count(*) c FROM {table}"
            f" WHERE k BETWEEN s * 450 AND s * 450 + 999) x")


def execution_ms(workload, table):
    """Execution time of one run, in ms, and whether the scan was index-only."""
    out = psql(NESTED_LOOP + f"EXPLAIN (ANALYZE, TIMING OFF, COSTS OFF) {query(workload, table)}")
    assert f"Index Only Scan using {table}_k" in out, out
    return float(re.search(r"Execution Time: ([0-9.]+)", out).group(1))


def samples(workload, table):
    """perf samples of the server's processes over RUNS runs, by library."""
    with tempfile.TemporaryDirectory() as d:
        sql = os.path.join(d, "q.sql")
        with open(sql, "w") as f:
            f.write(NESTED_LOOP + "\n" + (query(workload, table) + ";\n") * RUNS)
        data = os.path.join(d, "perf.data")
        subprocess.run(["perf", "record", "-q", "-a", "-F", "2000", "-o", data, "--",
                        "psql", "-h", HOST, "-p", PORT, "-U", "postgres", "-X", "-q", "-o", "/dev/null",
                        "-f", sql], check=True, capture_output=True)
        out = subprocess.run(["perf", "report", "-i", data, "--comm", "postgres", "--no-children",
                              "--sort", "dso", "-n", "--stdio"], check=True, capture_output=True,
                             text=True).stdout
    by_dso = {}
    for line in out.splitlines():
        m = re.match(r"\s*[0-9.]+%\s+([0-9]+)\s+(\S+)", line)
        if m:
            by_dso[m.group(2)] = int(m.group(1))
    return by_dso


def pgbench_us(table):
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(f"\\set k random(1, 999000)\nSELECT count(*) FROM {table} WHERE k BETWEEN :k AND :k + 999;\n")
    os.chmod(f.name, 0o644)
    out = subprocess.run(["pgbench", "-h", HOST, "-p", PORT, "-U", "postgres", "-n", "-c", "1", "-M", "prepared",
                          "-T", "5", "-f", f.name, "postgres"], check=True, capture_output=True, text=True).stdout
    os.unlink(f.name)
    return 1000 * float(next(l for l in out.splitlines() if l.startswith("latency average")).split()[3])


def main():
    setup()
    print("| scan | btree ms | learned ms | learned/btree | samples btree | learned: executor"
          " | learned: learneddb.so | lowest ratio any AM could reach |")
    print("|---|---|---|---|---|---|---|---|")
    for workload, (b, l) in [("zipf probe", ("zb", "zl")), ("1,000-key range count", ("rb", "rl"))]:
        for t in (b, l):
            execution_ms(workload, t)  # warm
        ms = {t: min(execution_ms(workload, t) for _ in range(5)) for t in (b, l)}
        sb, sl = samples(workload, b), samples(workload, l)
        btree_total = sb.get("postgres", 0)
        executor = sl.get("postgres", 0)
        print(f"| {workload} | {ms[b]:.1f} | {ms[l]:.1f} | **{ms[l] / ms[b]:.2f}** | {btree_total:,}"
              f" | {executor:,} | {sl.get('learneddb.so', 0):,} | **{executor / btree_total:.2f}** |")
        if workload.startswith("1,000"):
            scan_b, scan_l = ms[b] / 2000 * 1000, ms[l] / 2000 * 1000
            lat = {t: min(pgbench_us(t) for _ in range(3)) for t in (b, l)}
            around = lat[b] - scan_b
            best = lat[b] / (around + scan_b * executor / btree_total)
            print(f"\npgbench (prepared, 1 client, best of 3 x 5 s): btree {lat[b]:.0f} us a transaction,"
                  f" learned {lat[l]:.0f} us ({lat[b] / lat[l]:.2f}x btree's TPS). A scan takes btree"
                  f" {scan_b:.1f} us and learned {scan_l:.1f} us, so about {around:.0f} us of btree's transaction"
                  f" is around the scan; an access method costing nothing would reach at most {best:.2f}x"
                  f" btree's TPS.\n")


if __name__ == "__main__":
    main()
