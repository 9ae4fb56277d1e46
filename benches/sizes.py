"""Index size by column shape, learned vs btree (deduplication on, the
default) vs BRIN, on the same table in the same run; with build time and
nested-loop probes through each index (100,000 distinct keys; a probe of a
key with 100 rows returns all of them, through an index-only scan).

    python3 benches/sizes.py SOCKDIR PORT [rows]

Prints a Markdown table for benches/README.md."""
import sys
from benchlib import connect, psql, timed, probe, size

# (name, SQL for the key of row g, heap in key order, BRIN meaningful)
COLUMNS = [
    ("unique int8, gaps 1..8, heap in key order",
     "g * 4 + (hashint8(g) & 3)", True),
    ("unique int8, gaps 1..8, heap in random order",
     "g * 4 + (hashint8(g) & 3)", False),
    ("100 rows per key, heap in key order",
     "g / 100", True),
    ("100 rows per key, heap in random order",
     "g / 100", False),
    ("uniform random int8, random heap",
     "hashint8(g)", False),
    ("timestamps with up to 2 s jitter (the demo's data)",
     "(extract(epoch from TIMESTAMPTZ '2025-01-01 00:00+00') + g + (hashint8(g) & 2047) / 1024.0)"
     " * 1000000", True),
]


def load(rows, key_sql, ordered):
    psql("DROP TABLE IF EXISTS t")
    order = "g" if ordered else "hashint8(g * 31 + 7)"
    # The timestamps stay int8 microseconds: the same ordinals as timestamptz.
    psql(f"CREATE TABLE t AS SELECT ({key_sql})::int8 AS k FROM generate_series(1, {rows}) g ORDER BY {order}")
    psql("VACUUM ANALYZE t")
    psql("DROP TABLE IF EXISTS probes")
    # Distinct keys: a probe of a key with 100 rows returns all of them.
    psql("CREATE TABLE probes AS SELECT k FROM (SELECT DISTINCT k FROM t) d ORDER BY hashint8(k) LIMIT 100000")
    psql("ANALYZE probes")


def main():
    sock, port = sys.argv[1], sys.argv[2]
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000_000
    connect(sock, port)
    psql("CREATE EXTENSION IF NOT EXISTS learneddb")
    psql("SET maintenance_work_mem = '1GB'")
    out = []
    for name, key_sql, ordered in COLUMNS:
        load(rows, key_sql, ordered)
        tb = timed("SET max_parallel_maintenance_workers = 0; CREATE INDEX t_btree ON t (k)")
        tl = timed("SET max_parallel_maintenance_workers = 0; CREATE INDEX t_learned ON t USING learned (k)")
        sb, sl = size("t_btree"), size("t_learned")
        brin = "-"
        if ordered:
            psql("CREATE INDEX t_brin ON t USING brin (k)")
            brin = f"{size('t_brin') / 1e6:.2f} MB"
            psql("DROP INDEX t_brin")
        psql("VACUUM ANALYZE t")
        psql("SELECT count(*) FROM t")  # warm the heap
        n = int(psql("SELECT count(*) FROM probes"))
        probe("t", "t_btree", n, drop="t_learned", runs=1)  # warm both indexes
        probe("t", "t_learned", n, drop="t_btree", runs=1)
        pb = probe("t", "t_btree", n, drop="t_learned")
        pl = probe("t", "t_learned", n, drop="t_btree")
        out.append((name, sb, sl, brin, tb, tl, pb, pl))
        print(f"{name}: btree {sb / 1e6:.1f} MB learned {sl / 1e6:.1f} MB ({sl / sb:.3f}x)"
              f" probe {pb[0]:.2f} vs {pl[0]:.2f} us, {pl[2]:.2f} pages", file=sys.stderr, flush=True)
        psql("DROP INDEX t_btree; DROP INDEX t_learned")
    print(f"| {rows:,} rows | btree | learned | ratio | BRIN | build btree | build learned | probe btree | probe learned | ratio | index pages/probe learned |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, sb, sl, brin, tb, tl, pb, pl in out:
        print(f"| {name} | {sb / 1e6:.1f} MB | {sl / 1e6:.2f} MB | {sl / sb:.3f} | {brin} | {tb:.2f} s | {tl:.2f} s"
              f" | {pb[0]:.2f} us | {pl[0]:.2f} us | {pl[0] / pb[0]:.2f} | {pl[2]:.2f} |")


if __name__ == "__main__":
    main()
