#!/usr/bin/env python3
"""The whole benchmark in one run: learned vs btree (and hash and BRIN where
they can answer the query), side by side on the same tables, written to
benches/results/results.json. benches/suite.sh runs it and then report.py,
which draws the plots and rewrites benches/README.md's tables.

Parts (each is saved to the results file as soon as it is done):
  scaling        point-lookup latency and index size, 1K..10M rows
  cold           the 10M-row indexes with shared_buffers = 32MB: from the OS
                 cache, and truly cold (the files evicted from the OS cache)
  distributions  SOSD-like key distributions (distributions.py)
  pgbench        TPS of point selects and ranges, prepared and simple, 1 and 2 clients
  tpch           TPC-H SF1 lineitem from tpchgen-cli: sizes, builds, queries

    python3 benches/suite.py CLUSTER_DIR PORT [--parts a,b] [--large] [--quick]
"""
import argparse, datetime, json, os, platform, re, subprocess, sys, tempfile, time
from benchlib import connect, find, probe_once, psql, size, timed
import distributions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benches", "results", "results.json")
PG_BIN = "/usr/lib/postgresql/15/bin"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Cluster:
    """The private cluster suite.sh started: restarted here to change
    shared_buffers and to start with empty buffers."""

    def __init__(self, dir, port):
        self.dir, self.port = dir, port

    def ctl(self, *args):
        subprocess.run([os.path.join(ROOT, "tools", "cluster.sh"), *args], check=True)

    def restart(self, **settings):
        for name, value in settings.items():
            psql(f"ALTER SYSTEM SET {name} = '{value}'")
        self.ctl("stop", self.dir)
        self.ctl("start", self.dir, self.port)

    def evict_os_cache(self, dboid):
        """With the server stopped: writes back and drops from the OS page cache
        every file of the database, so the next reads come from the disk.
        (/proc/sys/vm/drop_caches is not writable here; posix_fadvise on each
        file is, and needs no privilege.)"""
        base = os.path.join(self.dir, "data", "base", dboid)
        for name in os.listdir(base):
            fd = os.open(os.path.join(base, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def spread(values):
    """min, median, max of a list of numbers."""
    v = sorted(values)
    return {"min": v[0], "median": v[len(v) // 2], "max": v[-1], "runs": len(v)}


# ---------------------------------------------------------------- scaling

def key_table(table, rows, ordered):
    """int8 keys that grow by 1..8 (serial ids with gaps), the heap in key
    order (an append-only table) or shuffled."""
    order = "k" if ordered else "hashint8(k)"
    psql(f"DROP TABLE IF EXISTS {table}")
    psql(f"CREATE TABLE {table} AS SELECT k FROM (SELECT g * 4 + (hashint8(g) & 3) AS k"
         f" FROM generate_series(1, {rows}) g) s ORDER BY {order}")
    psql(f"VACUUM ANALYZE {table}")


def probe_rounds(table, indexes, nprobes, rounds):
    """Interleaved rounds of nested-loop probes through each index alone (the
    others dropped in a rolled-back transaction); the first round only warms."""
    runs = {i: [] for i in indexes}
    for r in range(rounds + 1):
        for i in indexes:
            drop = ", ".join(f"{table}_{o}" for o in indexes if o != i)
            res = probe_once(table, f"{table}_{i}", nprobes, drop=drop)
            if r > 0:
                runs[i].append(res)
    return {i: {"us": spread([x["us"] for x in rs]), "pages": min(x["pages"] for x in rs),
                "hits": min(x["hits"] for x in rs)} for i, rs in runs.items()}


def scaling(args, results):
    sizes = [1_000, 10_000, 100_000, 1_000_000, 10_000_000]
    if args.quick:
        sizes = [1_000, 10_000, 100_000]
    if args.large:
        sizes.append(100_000_000)
    out = []
    for rows in sizes:
        for ordered in (True, False):
            table = f"scale_{'ord' if ordered else 'rnd'}_{rows}"
            log(f"scaling: {rows:,} rows, heap {'in key order' if ordered else 'shuffled'}")
            key_table(table, rows, ordered)
            setup = "SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 0; "
            build = {"btree": timed(setup + f"CREATE INDEX {table}_btree ON {table} (k)"),
                     "learned": timed(setup + f"CREATE INDEX {table}_learned ON {table} USING learned (k)"),
                     "hash": timed(setup + f"CREATE INDEX {table}_hash ON {table} USING hash (k)")}
            sizes_ = {i: size(f"{table}_{i}") for i in build}
            if ordered:
                psql(f"CREATE INDEX {table}_brin ON {table} USING brin (k)")
                sizes_["brin"] = size(f"{table}_brin")
                psql(f"DROP INDEX {table}_brin")
            psql(f"VACUUM ANALYZE {table}")
            nprobes = min(rows, 100_000)
            psql(f"DROP TABLE IF EXISTS probes; CREATE TABLE probes AS SELECT k FROM {table}"
                 f" ORDER BY hashint8(k # 12345) LIMIT {nprobes}; ANALYZE probes")
            psql(f"SELECT count(*) FROM {table}")  # warm the heap
            probes = probe_rounds(table, list(build), nprobes, args.rounds)
            out.append({"rows": rows, "heap": "key order" if ordered else "shuffled", "probes": nprobes,
                        "size": sizes_, "build_s": build, "probe": probes})
            p = probes
            log(f"  probe us: btree {p['btree']['us']['median']:.2f} learned {p['learned']['us']['median']:.2f}"
                f" hash {p['hash']['us']['median']:.2f}; size learned/btree {sizes_['learned'] / sizes_['btree']:.3f}")
            # The shuffled table the cold-cache part probes stays.
            if ordered or rows != cold_rows(args):
                psql(f"DROP TABLE {table}")
    results["scaling"] = out


# ---------------------------------------------------------------- cold cache

def cold_rows(args):
    return 100_000 if args.quick else 10_000_000


def cold(args, results, cluster):
    rows = cold_rows(args)
    table = f"scale_rnd_{rows}"
    if psql(f"SELECT to_regclass('{table}') IS NOT NULL") != "t":
        # Run alone (--parts cold): build what the scaling part leaves.
        key_table(table, rows, False)
        psql(f"SET maintenance_work_mem = '1GB'; CREATE INDEX {table}_btree ON {table} (k)")
        psql(f"SET maintenance_work_mem = '1GB'; CREATE INDEX {table}_learned ON {table} USING learned (k)")
        psql(f"VACUUM ANALYZE {table}")
    psql(f"DROP INDEX IF EXISTS {table}_hash")
    indexes = ["btree", "learned"]
    dboid = psql("SELECT oid FROM pg_database WHERE datname = current_database()")
    nprobes = 10_000
    psql(f"DROP TABLE IF EXISTS probes; CREATE TABLE probes AS SELECT k FROM {table}"
         f" ORDER BY hashint8(k # 4242) LIMIT {nprobes}; ANALYZE probes")
    cluster.restart(shared_buffers="32MB", track_io_timing="on")
    out = {"rows": rows, "shared_buffers": "32MB", "probes": nprobes,
           "size": {i: size(f"{table}_{i}") for i in indexes}}
    # From the OS cache: indexes larger than shared_buffers, files in memory.
    log("cold: shared_buffers = 32MB, OS cache warm")
    other = {"btree": f"{table}_learned", "learned": f"{table}_btree"}
    runs = {i: [] for i in indexes}
    for r in range(args.rounds + 1):
        for i in indexes:
            res = probe_once(table, f"{table}_{i}", nprobes, drop=other[i])
            if r > 0:
                runs[i].append(res)
    out["os_cache"] = {i: {"us": spread([x["us"] for x in rs]), "reads": min(x["reads"] for x in rs),
                           "pages": min(x["pages"] for x in rs)} for i, rs in runs.items()}
    # Truly cold: the server restarted (empty buffers) and the database's files
    # evicted from the OS cache before each index's run.
    log("cold: files evicted from the OS cache")
    runs = {i: [] for i in indexes}
    for r in range(args.cold_rounds):
        for i in (indexes if r % 2 == 0 else indexes[::-1]):
            cluster.ctl("stop", cluster.dir)
            cluster.evict_os_cache(dboid)
            cluster.ctl("start", cluster.dir, cluster.port)
            runs[i].append(probe_once(table, f"{table}_{i}", nprobes, drop=other[i]))
    out["evicted"] = {i: {"us": spread([x["us"] for x in rs]), "reads": spread([x["reads"] for x in rs]),
                          "io_ms": spread([x["io_ms"] for x in rs]), "pages": min(x["pages"] for x in rs)}
                      for i, rs in runs.items()}
    for k in ("os_cache", "evicted"):
        b, ln = out[k]["btree"], out[k]["learned"]
        log(f"  {k}: btree {b['us']['median']:.1f} us learned {ln['us']['median']:.1f} us")
    cluster.restart(shared_buffers="3GB", track_io_timing="off")
    psql(f"DROP TABLE {table}")
    results["cold"] = out


# ---------------------------------------------------------------- distributions

def distributions_part(args, results):
    rows = 100_000 if args.quick else 1_000_000
    results["distributions"] = distributions.measure(rows, rounds=args.rounds + 1)


# ---------------------------------------------------------------- pgbench

PGBENCH_SCRIPTS = {
    # The shape of pgbench -S: one row by key, fetched from the heap.
    "point select": "\\set k random(1, {rows})\nSELECT v FROM {table} WHERE k = :k;\n",
    "100-row range": "\\set k random(1, {rows} - 99)\nSELECT sum(v) FROM {table} WHERE k BETWEEN :k AND :k + 99;\n",
    "1,000-key range count": "\\set k random(1, {rows} - 999)\nSELECT count(*) FROM {table} WHERE k BETWEEN :k AND :k + 999;\n",
}


def pgbench_once(args, script, mode, clients):
    out = subprocess.run(
        [os.path.join(PG_BIN, "pgbench"), "-h", args.host, "-p", args.port, "-U", "postgres", "-n", "-f", script,
         "-M", mode, "-c", str(clients), "-j", str(clients), "-T", str(args.pgbench_seconds), "postgres"],
        capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"pgbench failed: {out.stderr}")
    return float(re.search(r"tps = ([0-9.]+)", out.stdout).group(1))


def pgbench(args, results):
    rows = 100_000 if args.quick else 1_000_000
    indexes = {"btree": "", "learned": "USING learned"}
    for i, using in indexes.items():
        psql(f"DROP TABLE IF EXISTS pgb_{i}")
        # Serial ids, the heap in key order, a payload the point select returns.
        psql(f"CREATE TABLE pgb_{i} AS SELECT g::int8 AS k, (hashint8(g) & 1023)::int4 AS v"
             f" FROM generate_series(1, {rows}) g")
        psql(f"CREATE INDEX pgb_{i}_k ON pgb_{i} {using} (k)")
        psql(f"VACUUM ANALYZE pgb_{i}")
        psql(f"SELECT count(*) FROM pgb_{i}")
    plans = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        files = {}
        for name, text in PGBENCH_SCRIPTS.items():
            for i in indexes:
                path = os.path.join(tmp, f"{len(files)}.sql")
                with open(path, "w") as f:
                    f.write(text.format(rows=rows, table=f"pgb_{i}"))
                files[name, i] = path
                # The plan each index gets (no setting forces it).
                sql = text.format(rows=rows, table=f"pgb_{i}").splitlines()[1].replace(":k", str(rows // 2))
                plan = json.loads(psql(f"EXPLAIN (FORMAT JSON) {sql}"))[0]["Plan"]
                node = find(plan, lambda n: "Index Name" in n)
                plans[f"{name} / {i}"] = f"{node['Node Type']} on {node['Index Name']}" if node else plan["Node Type"]
        out = []
        for name in PGBENCH_SCRIPTS:
            for mode in ("prepared", "simple"):
                for clients in (1, 2):
                    tps = {i: [] for i in indexes}
                    for r in range(args.pgbench_runs):
                        # Alternate which index goes first, so drift over a
                        # run does not favour one of them.
                        for i in (list(indexes) if r % 2 == 0 else list(indexes)[::-1]):
                            tps[i].append(pgbench_once(args, files[name, i], mode, clients))
                    out.append({"script": name, "mode": mode, "clients": clients,
                                "tps": {i: spread(v) for i, v in tps.items()}})
                    log(f"pgbench {name}, {mode}, {clients} client(s): btree {sorted(tps['btree'])}"
                        f" learned {sorted(tps['learned'])}")
    results["pgbench"] = {"rows": rows, "seconds": args.pgbench_seconds, "plans": plans, "runs": out}
    for i in indexes:
        psql(f"DROP TABLE pgb_{i}")


# ---------------------------------------------------------------- TPC-H

LINEITEM = """CREATE TABLE lineitem (
  l_orderkey int8 NOT NULL, l_partkey int8 NOT NULL, l_suppkey int8 NOT NULL, l_linenumber int4 NOT NULL,
  l_quantity numeric(15,2) NOT NULL, l_extendedprice numeric(15,2) NOT NULL,
  l_discount numeric(15,2) NOT NULL, l_tax numeric(15,2) NOT NULL,
  l_returnflag char(1) NOT NULL, l_linestatus char(1) NOT NULL,
  l_shipdate date NOT NULL, l_commitdate date NOT NULL, l_receiptdate date NOT NULL,
  l_shipinstruct char(25) NOT NULL, l_shipmode char(10) NOT NULL, l_comment varchar(44) NOT NULL)"""

# (name, column, SQL). Every query's answer is deterministic, so the answers
# through each index can be compared.
TPCH_QUERIES = [
    ("Q6 (one year of l_shipdate)", "l_shipdate",
     "SELECT sum(l_extendedprice * l_discount) FROM lineitem WHERE l_shipdate >= date '1994-01-01'"
     " AND l_shipdate < date '1995-01-01' AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24"),
    ("one day of l_shipdate", "l_shipdate",
     "SELECT count(*), sum(l_quantity) FROM lineitem WHERE l_shipdate = date '1995-06-17'"),
    ("top-N: the last 100 ship dates", "l_shipdate",
     "SELECT array_agg(d) FROM (SELECT l_shipdate d FROM lineitem ORDER BY l_shipdate DESC LIMIT 100) s"),
    ("l_orderkey point lookups (1,000 in a nested loop)", "l_orderkey",
     "SELECT count(*), sum(l.l_quantity) FROM tpch_keys p JOIN lineitem l ON l.l_orderkey = p.k"),
    ("l_orderkey ranges (1,000 of 100 order keys)", "l_orderkey",
     "SELECT count(*), sum(x.q) FROM tpch_keys p CROSS JOIN LATERAL"
     " (SELECT l_quantity q FROM lineitem WHERE l_orderkey BETWEEN p.k AND p.k + 99) x"),
    ("top-N: 100 order keys after one", "l_orderkey",
     "SELECT array_agg(k) FROM (SELECT l_orderkey k FROM lineitem WHERE l_orderkey > 3000000"
     " ORDER BY l_orderkey LIMIT 100) s"),
]


def tpch(args, results):
    scale = "0.1" if args.quick else "1"
    gen = os.environ.get("TPCHGEN", "tpchgen-cli")
    with tempfile.TemporaryDirectory() as tmp:
        log(f"tpch: generating lineitem at scale factor {scale}")
        subprocess.run([gen, "csv", "-s", scale, "-T", "lineitem", "-o", tmp], check=True,
                       capture_output=True)
        csv = os.path.join(tmp, "lineitem.csv")
        with open(csv) as f:
            header = f.readline().startswith("l_orderkey")
        psql("DROP TABLE IF EXISTS lineitem, tpch_keys")
        psql(LINEITEM)
        t = time.perf_counter()
        psql(f"\\copy lineitem FROM '{csv}' WITH (FORMAT csv{', HEADER' if header else ''})")
        log(f"tpch: loaded in {time.perf_counter() - t:.0f} s")
    psql("VACUUM ANALYZE lineitem")
    rows = int(psql("SELECT count(*) FROM lineitem"))
    # Distinct order keys: every order has a line 1 (a DISTINCT over 6M rows
    # spills its hash table for minutes with the default work_mem).
    psql("CREATE TABLE tpch_keys AS SELECT l_orderkey AS k FROM lineitem WHERE l_linenumber = 1"
         " ORDER BY hashint8(l_orderkey) LIMIT 1000; ANALYZE tpch_keys")
    # (index, column, kind): BRIN only where the heap follows the column
    # (tpchgen writes lineitem in l_orderkey order).
    kinds = {"l_shipdate": ["btree", "learned"], "l_orderkey": ["btree", "learned", "brin"]}
    setup = "SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 0; "
    indexes, builds, sizes_ = [], {}, {}
    for col, ks in kinds.items():
        for k in ks:
            name = f"li_{col[2:]}_{k}"
            using = "" if k == "btree" else f"USING {k}"
            builds[name] = timed(setup + f"CREATE INDEX {name} ON lineitem {using} ({col})")
            sizes_[name] = size(name)
            indexes.append((name, col, k))
            log(f"tpch: {name} {sizes_[name] / 1e6:.1f} MB in {builds[name]:.1f} s")
    psql("VACUUM ANALYZE lineitem")
    # Into shared_buffers (a sequential scan of a large table uses a small
    # ring of buffers and would not).
    psql("CREATE EXTENSION IF NOT EXISTS pg_prewarm; SELECT pg_prewarm('lineitem')")

    def session(name, body):
        """Runs `body` in one connection with only index `name` (none: no
        index) on lineitem, the others dropped in a rolled-back transaction."""
        drop = ", ".join(n for n, _, _ in indexes if n != name)
        # Index scans of every kind allowed; the sequential scan only in
        # its own row, as the reference.
        seq = "on" if name is None else "off"
        return psql(f"BEGIN; DROP INDEX {drop}; SET LOCAL enable_seqscan = {seq};"
                    f" SET LOCAL max_parallel_workers_per_gather = 0; {body} ROLLBACK")

    out = []
    for qname, col, sql in TPCH_QUERIES:
        answers, times, plans, first = {}, {}, {}, {}
        # The sequential scan is the reference for the queries that scan
        # once (in a nested loop it would scan the table per outer row).
        seq_ref = [] if "p JOIN" in sql or "LATERAL" in sql else [(None, col, "seq scan")]
        kinds = [x for x in indexes if x[1] == col] + seq_ref
        for name, _, kind in kinds:
            answers[kind] = session(name, f"{sql};")
        # Rounds interleaved between the indexes, each in a new connection
        # that runs the query twice: its first run also reads what the index
        # keeps in the relcache (a learned index's model: about 30 pages at
        # 6M rows); the second is what a pooled connection sees. The first
        # round only warms.
        explain = f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {sql};"
        runs = {kind: [] for _, _, kind in kinds}
        for r in range(args.rounds + 1):
            for name, _, kind in (kinds if r % 2 == 0 else kinds[::-1]):
                text = session(name, explain * 2)
                one, at = json.JSONDecoder().raw_decode(text)
                two = json.loads(text[at:])
                if r > 0:
                    runs[kind].append((one[0], two[0]))
        for kind, rs in runs.items():
            first[kind] = spread([a["Execution Time"] for a, _ in rs])
            times[kind] = spread([b["Execution Time"] for _, b in rs])
            plan = rs[-1][1]
            node = find(plan["Plan"], lambda n: "Index Name" in n
                        or n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "lineitem")
            plans[kind] = f"{node['Node Type']}" if node else plan["Plan"]["Node Type"]
        same = len(set(answers.values())) == 1
        if not same:
            log(f"tpch: ANSWERS DIFFER for {qname}: {answers}")
        out.append({"query": qname, "column": col, "ms": times, "plans": plans, "same_answers": same,
                    "first_ms": first})
        log(f"tpch: {qname}: " + ", ".join(f"{k} {v['median']:.1f} ms" for k, v in times.items()))
    results["tpch"] = {"scale": scale, "rows": rows, "build_s": builds, "size": sizes_,
                       "indexes": [{"name": n, "column": c, "kind": k} for n, c, k in indexes], "queries": out}
    psql("DROP TABLE lineitem, tpch_keys")


# ---------------------------------------------------------------- main

PARTS = ["scaling", "cold", "distributions", "pgbench", "tpch"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("port")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--large", action="store_true", help="add 100M rows to the scaling part")
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds per probe figure")
    ap.add_argument("--cold-rounds", type=int, default=3)
    ap.add_argument("--pgbench-runs", type=int, default=3)
    ap.add_argument("--pgbench-seconds", type=int, default=5)
    ap.add_argument("--results", default=RESULTS)
    args = ap.parse_args()
    args.host = os.path.join(args.dir, "sock")
    connect(args.host, args.port)
    cluster = Cluster(args.dir, args.port)
    results = {}
    if os.path.exists(args.results):
        with open(args.results) as f:
            results = json.load(f)  # parts not run this time keep their last results
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    psql("CREATE EXTENSION IF NOT EXISTS learneddb")
    meta = {"date": datetime.date.today().isoformat(), "commit": commit, "quick": args.quick,
            "server": psql("SHOW server_version").split()[0], "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
            "settings": psql("SELECT string_agg(name || ' = ' || current_setting(name), ', ') FROM pg_settings"
                             " WHERE name IN ('shared_buffers', 'jit', 'work_mem')")}
    for part in args.parts.split(","):
        t = time.perf_counter()
        log(f"part {part}")
        if part == "scaling":
            scaling(args, results)
        elif part == "cold":
            cold(args, results, cluster)
        elif part == "distributions":
            distributions_part(args, results)
        elif part == "pgbench":
            pgbench(args, results)
        elif part == "tpch":
            tpch(args, results)
        else:
            sys.exit(f"unknown part {part}; parts are {', '.join(PARTS)}")
        if part in results:
            results[part + "_meta"] = dict(meta, minutes=round((time.perf_counter() - t) / 60, 1))
        os.makedirs(os.path.dirname(args.results), exist_ok=True)
        with open(args.results, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
        log(f"part {part} done in {(time.perf_counter() - t) / 60:.1f} min")


if __name__ == "__main__":
    main()
