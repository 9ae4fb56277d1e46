"""Key distributions that hurt learned indexes, modelled on the SOSD data
sets, learned vs btree vs hash on the same table in the same run: size,
nested-loop probe time and index pages per probe, and the model's error
windows (from pg_stat_learned_indexes).

Every column is int8 in random heap order. Probes are up to 100,000 distinct
existing keys; a probe returns every row of its key (index-only scans for
learned and btree; hash cannot return keys, so it is an index scan).

    python3 benches/distributions.py SOCKDIR PORT [rows]

Prints a Markdown table for benches/README.md."""
import sys
from benchlib import connect, psql, timed, probe, size

# Uniform in [0, 1) from row g and a salt, by hashing (deterministic).
U = "((hashint8(g::int8 * 7919 + {s}) & 4294967295) + 0.5) / 4294967296.0"

# (name, SQL for the key of row g; may use a window over g)
DISTRIBUTIONS = [
    ("lognormal (sigma 2)",
     f"(exp(2 * sqrt(-2 * ln({U.format(s=1)})) * cos(2 * pi() * {U.format(s=2)})) * 1e6)::int8"),
    ("clustered, huge gaps (like osm_cellids)",
     "((hashint8extended((g % 1000)::int8, 0) >> 3) & 2305843009213693951) + (g / 1000) * 16 + (hashint8(g) & 15)"),
    ("a few extreme outliers (like fb)",
     "CASE WHEN g % 100000 = 0 THEN 4611686018427387904 - g ELSE g * 4 + (hashint8(g) & 3) END"),
    ("piecewise uniform, 20 densities (like books)",
     "sum(1 + (hashint8(g / ({rows} / 20 + 1)) & 255) + (hashint8(g) & 1)) OVER (ORDER BY g)"),
    ("zipf: 1,778 keys, half the rows on one",
     f"CASE WHEN g % 2 = 0 THEN 1000 ELSE floor(exp({U.format(s=3)} * ln(1778)))::int8 * 1000 END"),
    ("adversarial steps: runs of 64, jumps of 2^0..2^31",
     "sum(CASE WHEN g % 64 = 0 THEN 1::int8 << (hashint8(g) & 31)::int ELSE 1 END) OVER (ORDER BY g)"),
]


def main():
    sock, port = sys.argv[1], sys.argv[2]
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
    connect(sock, port)
    psql("CREATE EXTENSION IF NOT EXISTS learneddb")
    out = []
    for name, key_sql in DISTRIBUTIONS:
        key_sql = key_sql.format(rows=rows)
        psql("DROP TABLE IF EXISTS t, probes")
        psql(f"CREATE TABLE t AS SELECT k FROM (SELECT g, ({key_sql})::int8 AS k"
             f" FROM generate_series(1, {rows}) g) s ORDER BY hashint8(g::int8 * 31 + 7)")
        psql("VACUUM ANALYZE t")
        psql("CREATE TABLE probes AS SELECT k FROM (SELECT DISTINCT k FROM t) d ORDER BY hashint8(k) LIMIT 100000")
        psql("ANALYZE probes")
        setup = "SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 0; "
        timed(setup + "CREATE INDEX t_btree ON t (k)")
        timed(setup + "CREATE INDEX t_learned ON t USING learned (k)")
        timed(setup + "CREATE INDEX t_hash ON t USING hash (k)")
        psql("VACUUM ANALYZE t")
        sizes = [size(i) for i in ("t_btree", "t_learned", "t_hash")]
        err = psql("SELECT max_error || ' ' || round(mean_error::numeric, 1) || ' ' || model_leaves"
                   " FROM pg_stat_learned_indexes WHERE index_name = 't_learned'").split()
        distinct = int(psql("SELECT count(*) FROM probes"))
        psql("SELECT count(*) FROM t")  # warm the heap
        others = {"t_btree": "t_learned, t_hash", "t_learned": "t_btree, t_hash", "t_hash": "t_btree, t_learned"}
        best = {}
        for run in range(4):  # interleaved; the first round only warms
            for index, drop in others.items():
                r = probe("t", index, distinct, drop=drop, runs=1)
                if run > 0 and (index not in best or r[0] < best[index][0]):
                    best[index] = r
        out.append((name, distinct, sizes, err, best))
        b, ln, h = best["t_btree"], best["t_learned"], best["t_hash"]
        print(f"{name}: probe btree {b[0]:.2f} learned {ln[0]:.2f} ({ln[0] / b[0]:.2f}x) hash {h[0]:.2f} us;"
              f" pages {b[2]:.2f} / {ln[2]:.2f}; error max {err[0]} mean {err[1]}", file=sys.stderr, flush=True)
        psql("DROP TABLE t, probes")
    print(f"| {rows:,} rows | distinct keys | size btree | learned | hash | probe btree | learned | ratio | hash"
          " | index pages/probe btree | learned | max error | mean error | model leaves |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, distinct, (sb, sl, sh), err, best in out:
        b, ln, h = best["t_btree"], best["t_learned"], best["t_hash"]
        print(f"| {name} | {distinct:,} | {sb / 1e6:.1f} MB | {sl / 1e6:.2f} MB | {sh / 1e6:.1f} MB"
              f" | {b[0]:.2f} us | {ln[0]:.2f} us | **{ln[0] / b[0]:.2f}** | {h[0]:.2f} us"
              f" | {b[2]:.2f} | {ln[2]:.2f} | {err[0]} | {err[1]} | {err[2]} |")


if __name__ == "__main__":
    main()
