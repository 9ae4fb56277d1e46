#!/usr/bin/env python3
"""The indexes as the table grows, side by side: a table of ROWS int8 keys with
a learned index and, in the same run, a copy with a btree, each given a stream
of STREAM inserts (time-ordered, then random keys) while point selects run
against it. The background worker retrains the learned index on its own.

The stream is pgbench with two clients, each transaction either inserting 20
rows or selecting one key (weights 1:1), logged per transaction (--log), run
in chunks of STEP inserted rows. After each chunk, on the quiet table: probe
time and index pages per probe (a nested loop of 20,000 keys of the table
before the stream, JIT off), index pages per probe of 20,000 keys the stream
inserted, index size, WAL bytes per inserted row since the
stream began (pg_stat_wal, retrains and autovacuum included), and the
learned index's retrains. After each stream, the index's size against a
fresh build (CREATE INDEX) on the same rows. At the end: insert and select latency percentiles
of transactions that overlapped a retrain against all the others, with the
retrain intervals taken from the worker's LOG lines.

Usage: benches/retrain.sh [rows] [stream] [fillfactor]
       (default 10000000 2000000, and the learned index built without a
       fillfactor, which packs its pages full; the fresh build compared with
       after the stream has the same one, as a REINDEX would)
Environment: STREAM_RATE=<rows a second> paces the inserts (pgbench --rate;
       unset: as fast as the two clients go, about 50,000 rows a second here);
       STREAM_ORDERS=random (or time-ordered) runs that stream alone.
"""
import glob, os, re, subprocess, sys, time
from datetime import datetime, timezone
from benchlib import connect, probe, psql, timed

HOST, PORT, LOGFILE, WORK = sys.argv[1:5]
connect(HOST, PORT)
ROWS = int(sys.argv[5]) if len(sys.argv) > 5 else 10_000_000
STREAM = int(sys.argv[6]) if len(sys.argv) > 6 else 2_000_000
FILLFACTOR = int(sys.argv[7]) if len(sys.argv) > 7 else None
WITH = f" WITH (fillfactor = {FILLFACTOR})" if FILLFACTOR else ""
RATE = int(os.environ["STREAM_RATE"]) if os.environ.get("STREAM_RATE") else None
ORDERS = os.environ.get("STREAM_ORDERS", "time-ordered random").split()
# Rows inserted a second while pgbench ran, per stream.
RATES = {}


def create_index(name, table, kind):
    using, options = ("USING learned", WITH) if kind == "learned" else ("", "")
    psql(f"CREATE INDEX {name} ON {table} {using} (k){options}")
STEP = STREAM // 10
BATCH = 20
PROBES = 20_000


def build(table, kind):
    psql(f"DROP TABLE IF EXISTS {table} CASCADE")
    psql(f"CREATE TABLE {table} AS SELECT k FROM base ORDER BY k")
    create_index(f"{table}_k", table, kind)
    psql(f"VACUUM ANALYZE {table}")


def retrains(table):
    """Retrains so far, the last one's seconds, and the worker's last skip."""
    if not table.endswith("learned"):
        return 0, 0.0, None
    count, seconds, skipped = psql(
        f"SELECT retrain_count, coalesce(last_retrain_seconds, 0), coalesce(retrain_skipped, '') "
        f"FROM learned_index_stats('{table}_k')").split("|")
    return int(count), float(seconds), skipped or None


def inserted_rows(table):
    """Rows inserted into `table` so far, from the cumulative statistics."""
    return int(psql(f"SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = '{table}'"))


def stream(order, kind, maxkey):
    table = f"s_{kind}"
    build(table, kind)
    psql(f"DROP TABLE IF EXISTS probes; CREATE TABLE probes AS SELECT k FROM {table} "
         f"ORDER BY hashint8(k # 12345) LIMIT {PROBES}; ANALYZE probes")
    if order == "time-ordered":
        psql(f"DROP SEQUENCE IF EXISTS {table}_seq; CREATE SEQUENCE {table}_seq START {maxkey + 1} INCREMENT 4")
        keys = f"nextval('{table}_seq')"
    else:
        keys = f"(random() * {maxkey})::int8"
    ins, sel = f"{WORK}/ins.sql", f"{WORK}/sel.sql"
    with open(ins, "w") as f:
        f.write(f"INSERT INTO {table} (k) SELECT {keys} FROM generate_series(1, {BATCH});\n")
    with open(sel, "w") as f:
        f.write(f"\\set k random(1, {maxkey})\nSELECT k FROM {table} WHERE k = :k;\n")
    psql(f"SELECT count(*) FROM {table}")  # warm the cache
    # Rows inserted by the stream lie after the table's pages at its start.
    first_new_page = int(psql(f"SELECT pg_relation_size('{table}') / 8192"))
    wal0 = int(psql("SELECT wal_bytes FROM pg_stat_wal"))
    rows0 = inserted_rows(table)
    # pgbench in chunks of STEP inserted rows, two clients, each transaction
    # an insert or a select; after each chunk, a sample of the quiet table.
    samples = []
    streamed = 0.0
    for step in range(STREAM // STEP):
        began = time.perf_counter()
        out = subprocess.run(
            ["pgbench", "-h", HOST, "-p", PORT, "-U", "postgres", "-n", "-c", "2", "-j", "2",
             "-t", str(STEP // BATCH), "-f", f"{ins}@1", "-f", f"{sel}@1", "--log",
             # Half the transactions insert BATCH rows each.
             *(["--rate", str(2 * RATE // BATCH)] if RATE else []),
             f"--log-prefix={WORK}/{order[:4]}-{kind}-{step}", "postgres"],
            capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"pgbench failed: {out.stderr}")
        streamed += time.perf_counter() - began
        inserted = inserted_rows(table) - rows0
        wal = int(psql("SELECT wal_bytes FROM pg_stat_wal")) - wal0
        # A retrain running meanwhile reads the index too, and its reads
        # count in the index pages per probe (pg_statio): such samples are
        # marked.
        busy = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'learneddb retrain'"
        overlap = int(psql(busy)) > 0
        count0 = retrains(table)[0]
        us, hits, pages = probe(table, f"{table}_k", PROBES, runs=2)
        # Keys the stream inserted (in the delta until a retrain), sampled
        # from the heap pages it added.
        psql(f"DROP TABLE IF EXISTS recent; CREATE TABLE recent AS SELECT k FROM {table} "
             f"WHERE ctid >= '({first_new_page},0)' ORDER BY random() LIMIT {PROBES}; ANALYZE recent")
        _, _, recent_pages = probe(table, f"{table}_k", PROBES, runs=1, keys="recent")
        size = int(psql(f"SELECT pg_relation_size('{table}_k')"))
        count, seconds, skipped = retrains(table)
        overlap = overlap or count != count0 or int(psql(busy)) > 0
        samples.append((inserted, us, pages, size, wal / max(inserted, 1), count, seconds, hits,
                        recent_pages, overlap))
        print(f"{order} {kind} {inserted}: {us:.2f} us, {pages:.2f} index pages, "
              f"{recent_pages:.2f} for inserted keys, {hits:.2f} buffer hits, "
              f"{size} bytes, {wal / max(inserted, 1):.0f} WAL bytes/row, {count} retrains, skipped: {skipped}"
              f"{', a retrain ran during the probes' if overlap else ''}",
              file=sys.stderr)
    # The index after the stream against a fresh build of the same rows.
    create_index(f"{table}_fresh", table, kind)
    fresh = int(psql(f"SELECT pg_relation_size('{table}_fresh')"))
    print(f"{order} {kind}: {samples[-1][3]} bytes after the stream, {fresh} for a fresh build",
          file=sys.stderr)
    if kind == "learned":
        # Where the difference lies: pages of the run and the delta, pages
        # kept for old snapshots, pages free to reuse, against the fresh
        # build's run.
        cols = "run_pages, delta_pages, retained_pages, free_pages, index_size / 8192"
        after = psql(f"SELECT {cols} FROM learned_index_stats('{table}_k')")
        fresh_run = psql(f"SELECT run_pages FROM learned_index_stats('{table}_fresh')")
        print(f"{order} {kind} pages after the stream ({cols.replace(' / 8192', '')}): "
              f"{after.replace('|', ', ')}; fresh build: {fresh_run} run pages", file=sys.stderr)
    print(f"{order} {kind}: {inserted / streamed:,.0f} rows inserted a second", file=sys.stderr)
    RATES[(order, kind)] = inserted / streamed
    psql(f"DROP TABLE {table} CASCADE")
    return samples, fresh


def append_cost(maxkey):
    """learned_retrain after 1% appended rows against a REINDEX of the same index."""
    build("a_learned", "learned")
    reindex = min(timed("REINDEX INDEX a_learned_k") for _ in range(2))
    n = ROWS // 100
    psql(f"INSERT INTO a_learned SELECT {maxkey} + 4 * g FROM generate_series(1, {n}) g")
    out = psql("SELECT seconds, path, pages_written FROM learned_retrain('a_learned_k')").split("|")
    psql("DROP TABLE a_learned")
    return n, reindex, float(out[0]), out[1], int(out[2])


def retrain_intervals():
    """(start, end) epoch seconds of every retrain the worker logged."""
    pat = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) UTC .*learneddb: retrained index .*, ([0-9.]+) s$")
    out = []
    for line in open(LOGFILE, errors="replace"):
        m = pat.match(line.strip())
        if m:
            end = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()
            out.append((end - float(m.group(2)), end))
    return out


def latencies(order, kind, intervals):
    """Insert and select latencies (ms), split by overlap with a retrain."""
    split = {("insert", True): [], ("insert", False): [], ("select", True): [], ("select", False): []}
    for path in glob.glob(f"{WORK}/{order[:4]}-{kind}-*"):
        for line in open(path):
            _client, _txn, lat_us, script, epoch, usec = line.split()[:6]
            end = int(epoch) + int(usec) / 1e6
            start = end - int(lat_us) / 1e6
            during = any(s < end and start < e for s, e in intervals)
            split[("insert" if script == "0" else "select", during)].append(int(lat_us) / 1000)
    return split


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main():
    psql("CREATE EXTENSION IF NOT EXISTS learneddb")
    # Keys that grow by 1..8, as in bench.py.
    psql("DROP TABLE IF EXISTS base")
    psql(f"CREATE UNLOGGED TABLE base AS SELECT sum((hashint8(g) & 7) + 1) OVER (ORDER BY g) AS k "
         f"FROM generate_series(1, {ROWS}) g")
    maxkey = int(psql("SELECT max(k) FROM base"))
    appended, reindex, retrain, path, pages = append_cost(maxkey)
    results, fresh = {}, {}
    for order in ORDERS:
        for kind in ["btree", "learned"]:
            results[(order, kind)], fresh[(order, kind)] = stream(order, kind, maxkey)
    intervals = retrain_intervals()
    mb = lambda b: f"{b / 1048576:.1f} MB"
    print(f"Retrain after {appended:,} appended rows on {ROWS:,}: {retrain:.3f} s ({path}, "
          f"{pages} pages written); REINDEX: {reindex:.3f} s; ratio {retrain / reindex:.3f}.\n")
    print(f"{ROWS:,} rows, {STREAM:,} inserted in transactions of {BATCH} rows; "
          f"samples every {STEP:,} inserted rows; learned index fillfactor "
          f"{FILLFACTOR or 'unset (pages packed full)'}; inserts "
          f"{f'paced at {RATE:,} rows a second' if RATE else 'as fast as they go'} ("
          + ", ".join(f"{o} {k} {r:,.0f}" for (o, k), r in RATES.items()) + " rows a second).\n")
    print("| keys | inserted | probe btree | learned | ratio | index pages/probe btree | learned "
          "| pages/probe of inserted keys btree | learned "
          "| buffer hits/probe btree | learned | size btree | learned | ratio "
          "| WAL/row btree | learned | ratio | retrains | last retrain | retrain during probes |")
    print("|" + "---|" * 20)
    for order in ORDERS:
        for b, l in zip(results[(order, "btree")], results[(order, "learned")]):
            print(f"| {order} | {l[0]:,} | {b[1]:.2f} us | {l[1]:.2f} us | {l[1] / b[1]:.2f} "
                  f"| {b[2]:.2f} | {l[2]:.2f} | {b[8]:.2f} | {l[8]:.2f} | {b[7]:.2f} | {l[7]:.2f} "
                  f"| {mb(b[3])} | {mb(l[3])} | {l[3] / b[3]:.2f} "
                  f"| {b[4]:.0f} B | {l[4]:.0f} B | {l[4] / b[4]:.2f} | {l[5]} | {l[6]:.2f} s "
                  f"| {'yes' if l[9] else 'no'} |")
    print()
    print("| keys | index | size after the stream | a fresh build of the same rows | ratio |")
    print("|" + "---|" * 5)
    for order in ORDERS:
        for kind in ["btree", "learned"]:
            after = results[(order, kind)][-1][3]
            print(f"| {order} | {kind} | {mb(after)} | {mb(fresh[(order, kind)])} "
                  f"| {after / fresh[(order, kind)]:.2f} |")
    print()
    print("| keys | index | transactions | during a retrain | p50 | p99 | p99.9 | max |")
    print("|" + "---|" * 8)
    for order in ORDERS:
        for kind in ["btree", "learned"]:
            split = latencies(order, kind, intervals if kind == "learned" else [])
            for what in ["insert", "select"]:
                for during in [False, True]:
                    v = split[(what, during)]
                    if not v:
                        continue
                    print(f"| {order} | {kind} | {len(v):,} {what}s | {'yes' if during else 'no'} "
                          f"| {pct(v, 50):.2f} ms | {pct(v, 99):.2f} ms | {pct(v, 99.9):.2f} ms | {max(v):.2f} ms |")


main()
