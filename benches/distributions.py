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
from benchlib import connect, psql, timed, probe_once, size

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


def measure(rows, rounds=4, log=sys.stderr):
    """Builds each distribution at `rows` rows and measures it; returns one
    dict per distribution. The first of `rounds` interleaved rounds only
    warms; the probe figures are the fastest of the others, with the slowest
    as the spread."""
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
        sizes = {i: size(f"t_{i}") for i in ("btree", "learned", "hash")}
        max_err, mean_err, leaves = psql(
            "SELECT max_error || ' ' || round(mean_error::numeric, 1) || ' ' || model_leaves"
            " FROM pg_stat_learned_indexes WHERE index_name = 't_learned'").split()
        distinct = int(psql("SELECT count(*) FROM probes"))
        psql("SELECT count(*) FROM t")  # warm the heap
        others = {"btree": "t_learned, t_hash", "learned": "t_btree, t_hash", "hash": "t_btree, t_learned"}
        runs = {i: [] for i in others}
        for run in range(rounds):
            for index, drop in others.items():
                r = probe_once("t", f"t_{index}", distinct, drop=drop)
                if run > 0:
                    runs[index].append(r)
        probes = {i: {"us": min(r["us"] for r in rs), "us_max": max(r["us"] for r in rs),
                      "pages": min(r["pages"] for r in rs)} for i, rs in runs.items()}
        out.append({"name": name, "rows": rows, "distinct": distinct, "size": sizes,
                    "max_error": int(max_err), "mean_error": float(mean_err), "model_leaves": int(leaves),
                    "probe": probes})
        b, ln, h = probes["btree"], probes["learned"], probes["hash"]
        print(f"{name}: probe btree {b['us']:.2f} learned {ln['us']:.2f} ({ln['us'] / b['us']:.2f}x) hash {h['us']:.2f} us;"
              f" pages {b['pages']:.2f} / {ln['pages']:.2f}; error max {max_err} mean {mean_err}", file=log, flush=True)
        psql("DROP TABLE t, probes")
    return out


def table(out):
    """The Markdown table of benches/README.md."""
    rows = out[0]["rows"]
    lines = [f"| {rows:,} rows | distinct keys | size btree | learned | hash | probe btree | learned | ratio | hash"
             " | index pages/probe btree | learned | max error | mean error | model leaves |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in out:
        s, p = d["size"], d["probe"]
        b, ln, h = p["btree"], p["learned"], p["hash"]
        lines.append(f"| {d['name']} | {d['distinct']:,} | {s['btree'] / 1e6:.1f} MB | {s['learned'] / 1e6:.2f} MB"
                     f" | {s['hash'] / 1e6:.1f} MB | {b['us']:.2f} us | {ln['us']:.2f} us | **{ln['us'] / b['us']:.2f}**"
                     f" | {h['us']:.2f} us | {b['pages']:.2f} | {ln['pages']:.2f} | {d['max_error']} | {d['mean_error']}"
                     f" | {d['model_leaves']} |")
    return "\n".join(lines)


def main():
    sock, port = sys.argv[1], sys.argv[2]
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
    connect(sock, port)
    print(table(measure(rows)))


if __name__ == "__main__":
    main()
