#!/usr/bin/env python3
"""The indexes as the table grows, side by side: a table of ROWS int8 keys with
a learned index and, in the same run, a copy with a btree, each given a stream
of STREAM inserts (time-ordered, then random keys) while point selects run
against it. The background worker retrains the learned index on its own.

The stream is pgbench with two clients, each transaction either inserting 20
rows or selecting one key (weights 1:1), logged per transaction (--log), run
in chunks of STEP inserted rows. After each chunk, on the quiet table: index
pages per probe (a nested loop of 20,000 keys of the table before the
stream), index pages per probe of 20,000 keys the stream inserted, index
size, WAL bytes per inserted row since the stream began (pg_stat_wal,
retrains and autovacuum included), and the learned index's retrains. Each
index has the cluster to itself for its stream, so that the WAL is its own.
After each stream, the index's size against a fresh build (CREATE INDEX) on
the same rows. At the end: insert and select latency percentiles of
transactions that overlapped a retrain against all the others, with the
retrain intervals taken from the worker's LOG lines.

Probe time is measured side by side, in a second pass of each stream: both
tables stream together, chunk by chunk in turn (the btree's chunk, then the
learned index's), and after each pair of chunks the two nested loops (JIT
off) run in turn, five times each, best of each: the two times of a sample
are taken in the same few seconds. (Timed minutes apart, on this shared
machine, the same btree probe took 4.3 to 8.5 us.)

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
from benchlib import connect, probe, probe_once, psql, timed

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
    ins, sel = stream_files(order, table, maxkey)
    psql(f"SELECT count(*) FROM {table}")  # warm the cache
    # Rows inserted by the stream lie after the table's pages at its start.
    first_new_page = int(psql(f"SELECT pg_relation_size('{table}') / 8192"))
    wal0 = int(psql("SELECT wal_bytes FROM pg_stat_wal"))
    rows0 = inserted_rows(table)
    log_from = os.path.getsize(LOGFILE)
    # pgbench in chunks of STEP inserted rows, two clients, each transaction
    # an insert or a select; after each chunk, a sample of the quiet table.
    samples = []
    streamed = 0.0
    for step in range(STREAM // STEP):
        began = time.perf_counter()
        pgbench(ins, sel, ["--log", f"--log-prefix={WORK}/{order[:4]}-{kind}-{step}"])
        streamed += time.perf_counter() - began
        inserted = inserted_rows(table) - rows0
        wal = int(psql("SELECT wal_bytes FROM pg_stat_wal")) - wal0
        # A retrain running meanwhile reads the index too, and its reads
        # count in the index pages per probe (pg_statio): such samples are
        # marked.
        busy = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'learneddb retrain'"
        overlap = int(psql(busy)) > 0
        count0 = retrains(table)[0]
        _, hits, pages = probe(table, f"{table}_k", PROBES, runs=1)
        # Keys the stream inserted (in the delta until a retrain), sampled
        # from the heap pages it added.
        psql(f"DROP TABLE IF EXISTS recent; CREATE TABLE recent AS SELECT k FROM {table} "
             f"WHERE ctid >= '({first_new_page},0)' ORDER BY random() LIMIT {PROBES}; ANALYZE recent")
        _, _, recent_pages = probe(table, f"{table}_k", PROBES, runs=1, keys="recent")
        size = int(psql(f"SELECT pg_relation_size('{table}_k')"))
        count, seconds, skipped = retrains(table)
        overlap = overlap or count != count0 or int(psql(busy)) > 0
        samples.append((inserted, None, pages, size, wal / max(inserted, 1), count, seconds, hits,
                        recent_pages, overlap))
        print(f"{order} {kind} {inserted}: {pages:.2f} index pages, "
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
        # Each retrain of the stream: its path, pages written, and the
        # index's size and free blocks after it, from the worker's LOG.
        with open(LOGFILE, errors="replace") as log:
            log.seek(log_from)
            for line in log:
                if f'retrained index "{table}_k"' in line:
                    print(f"{order} {kind} {line.strip()}", file=sys.stderr)
    print(f"{order} {kind}: {inserted / streamed:,.0f} rows inserted a second", file=sys.stderr)
    RATES[(order, kind)] = inserted / streamed
    psql(f"DROP TABLE {table} CASCADE")
    return samples, fresh


def stream_files(order, table, maxkey):
    """The pgbench scripts of a stream into `table`: inserts and selects."""
    if order == "time-ordered":
        psql(f"DROP SEQUENCE IF EXISTS {table}_seq; CREATE SEQUENCE {table}_seq START {maxkey + 1} INCREMENT 4")
        keys = f"nextval('{table}_seq')"
    else:
        keys = f"(random() * {maxkey})::int8"
    ins, sel = f"{WORK}/{table}-ins.sql", f"{WORK}/{table}-sel.sql"
    with open(ins, "w") as f:
        f.write(f"INSERT INTO {table} (k) SELECT {keys} FROM generate_series(1, {BATCH});\n")
    with open(sel, "w") as f:
        f.write(f"\\set k random(1, {maxkey})\nSELECT k FROM {table} WHERE k = :k;\n")
    return ins, sel


def pgbench(ins, sel, extra=()):
    """One chunk of the stream: STEP rows inserted by two clients."""
    out = subprocess.run(
        ["pgbench", "-h", HOST, "-p", PORT, "-U", "postgres", "-n", "-c", "2", "-j", "2",
         "-t", str(STEP // BATCH), "-f", f"{ins}@1", "-f", f"{sel}@1",
         # Half the transactions insert BATCH rows each.
         *(["--rate", str(2 * RATE // BATCH)] if RATE else []), *extra, "postgres"],
        capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"pgbench failed: {out.stderr}")


def side_by_side(order, maxkey):
    """Probe time of both indexes at each step of streams run in turn."""
    tables = {kind: f"p_{kind}" for kind in ["btree", "learned"]}
    for kind, table in tables.items():
        build(table, kind)
    psql(f"DROP TABLE IF EXISTS probes; CREATE TABLE probes AS SELECT k FROM base "
         f"ORDER BY hashint8(k # 12345) LIMIT {PROBES}; ANALYZE probes")
    files = {kind: stream_files(order, table, maxkey) for kind, table in tables.items()}
    for table in tables.values():
        psql(f"SELECT count(*) FROM {table}")  # warm the cache
    busy = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'learneddb retrain'"
    rows0 = inserted_rows(tables["learned"])
    samples = []
    for _ in range(STREAM // STEP):
        for kind in tables:
            pgbench(*files[kind])
        count0 = retrains(tables["learned"])[0]
        best = {kind: None for kind in tables}
        for _ in range(5):
            for kind, table in tables.items():
                r = probe_once(table, f"{table}_k", PROBES)
                if best[kind] is None or r["us"] < best[kind]["us"]:
                    best[kind] = r
        count = retrains(tables["learned"])[0]
        overlap = count != count0 or int(psql(busy)) > 0
        inserted = inserted_rows(tables["learned"]) - rows0
        b, l = best["btree"], best["learned"]
        samples.append((inserted, b["us"], l["us"], b["pages"], l["pages"], count, overlap))
        print(f"{order} side by side {inserted}: btree {b['us']:.2f} us ({b['pages']:.2f} pages), "
              f"learned {l['us']:.2f} us ({l['pages']:.2f} pages), {count} retrains"
              f"{', a retrain ran during the probes' if overlap else ''}", file=sys.stderr)
    for table in tables.values():
        psql(f"DROP TABLE {table} CASCADE")
    return samples


def append_cost(maxkey):
    """learned_retrain after 1% appended rows against a REINDEX of the same index."""
    build("a_learned", "learned")
    reindex = min(timed("REINDEX INDEX a_learned_k") for _ in range(2))
    # The worker would retrain the index as the rows arrive (their delta
    # pages pass the threshold), and leave learned_retrain part of them.
    psql("ALTER INDEX a_learned_k SET (retrain = off)")
    n = ROWS // 100
    psql(f"INSERT INTO a_learned SELECT {maxkey} + 4 * g FROM generate_series(1, {n}) g")
    out = psql("SELECT seconds, path, pages_written, delta_merged "
               "FROM learned_retrain('a_learned_k')").split("|")
    psql("DROP TABLE a_learned")
    if int(out[3]) != n:
        sys.exit(f"learned_retrain merged {out[3]} of the {n} appended rows")
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
    paired = {}
    for order in ORDERS:
        for kind in ["btree", "learned"]:
            results[(order, kind)], fresh[(order, kind)] = stream(order, kind, maxkey)
        paired[order] = side_by_side(order, maxkey)
    intervals = retrain_intervals()
    mb = lambda b: f"{b / 1048576:.1f} MB"
    print(f"Retrain after {appended:,} appended rows on {ROWS:,}: {retrain:.3f} s ({path}, "
          f"{pages} pages written); REINDEX: {reindex:.3f} s; ratio {retrain / reindex:.3f}.\n")
    print(f"{ROWS:,} rows, {STREAM:,} inserted in transactions of {BATCH} rows; "
          f"samples every {STEP:,} inserted rows; learned index fillfactor "
          f"{FILLFACTOR or 'unset (pages packed full)'}; inserts "
          f"{f'paced at {RATE:,} rows a second' if RATE else 'as fast as they go'} ("
          + ", ".join(f"{o} {k} {r:,.0f}" for (o, k), r in RATES.items()) + " rows a second).\n")
    print("Probe time, side by side (the second pass of each stream, both indexes timed in "
          "the same few seconds):\n")
    print("| keys | inserted | probe btree | learned | ratio | index pages/probe btree | learned "
          "| retrains | retrain during probes |")
    print("|" + "---|" * 9)
    for order in ORDERS:
        for n, b_us, l_us, b_pages, l_pages, count, overlap in paired[order]:
            print(f"| {order} | {n:,} | {b_us:.2f} us | {l_us:.2f} us | {l_us / b_us:.2f} "
                  f"| {b_pages:.2f} | {l_pages:.2f} | {count} | {'yes' if overlap else 'no'} |")
    print()
    print("Each index alone (the first pass of each stream):\n")
    print("| keys | inserted | index pages/probe btree | learned "
          "| pages/probe of inserted keys btree | learned "
          "| buffer hits/probe btree | learned | size btree | learned | ratio "
          "| WAL/row btree | learned | ratio | retrains | last retrain | retrain during probes |")
    print("|" + "---|" * 17)
    for order in ORDERS:
        for b, l in zip(results[(order, "btree")], results[(order, "learned")]):
            print(f"| {order} | {l[0]:,} "
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
