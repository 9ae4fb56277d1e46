"""Helpers the benchmarks share: psql against the private cluster, EXPLAIN
ANALYZE with buffers, and the index's own buffer accesses."""
import json, subprocess, time

HOST, PORT = None, None


def connect(host, port):
    global HOST, PORT
    HOST, PORT = host, port


def psql(sql):
    out = subprocess.run(
        ["psql", "-h", HOST, "-p", PORT, "-U", "postgres", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True, capture_output=True, text=True)
    return out.stdout.strip()


def timed(sql):
    t = time.perf_counter()
    psql(sql)
    return time.perf_counter() - t


def size(index):
    """The relation size of `index`, in bytes."""
    return int(psql(f"SELECT pg_relation_size('{index}')"))


def explain(sql, drop=None):
    """Runs sql (with index `drop` dropped, rolled back) as a nested loop of
    index scans; returns the JSON plan. JIT is off: compiling the query takes
    tens of milliseconds, the same whichever index it uses, and would count
    in every probe's time."""
    dropping = f"DROP INDEX {drop};" if drop else ""
    out = psql(f"BEGIN; {dropping} SET LOCAL jit = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;"
               f" SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_memoize = off;"
               f" SET LOCAL max_parallel_workers_per_gather = 0;"
               f" EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) {sql}; ROLLBACK;"
               # The session's counters reach pg_statio before psql returns
               # (else at its exit, which the next query may not wait for).
               f" SELECT pg_stat_force_next_flush();")
    return json.JSONDecoder().raw_decode(out)[0][0]


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


def probe_once(table, index, probes, drop=None, keys="probes"):
    """One nested-loop join of the `probes` keys in table `keys` against
    `index`: microseconds, buffer accesses and buffer reads (misses of
    shared_buffers) per probe of the inner scan, index pages per probe, and
    the milliseconds the whole join spent reading (with track_io_timing)."""
    sql = f"SELECT count(*) FROM {keys} p JOIN {table} t ON t.k = p.k"
    before = index_blocks(index)
    plan = explain(sql, drop)
    pages = (index_blocks(index) - before) / probes
    inner = find(plan["Plan"], lambda n: n.get("Index Name") == index)
    assert inner, f"{index} not used: {json.dumps(plan)[:500]}"
    loops = inner["Actual Loops"]
    return {"us": plan["Execution Time"] * 1000 / loops,
            "hits": (inner["Shared Hit Blocks"] + inner["Shared Read Blocks"]) / loops,
            "reads": inner["Shared Read Blocks"] / loops,
            "pages": pages,
            "io_ms": plan["Plan"].get("I/O Read Time", plan["Plan"].get("Shared I/O Read Time", 0.0))}


def probe(table, index, probes, drop=None, runs=3, keys="probes"):
    """Best of `runs` nested-loop joins (see probe_once): (microseconds per
    probe, buffer hits per probe, index pages per probe)."""
    best = None
    for _ in range(runs):
        r = probe_once(table, index, probes, drop, keys)
        if best is None or r["us"] < best[0]:
            best = (r["us"], r["hits"], r["pages"])
    return best
