//! Memory: CREATE INDEX keeps within maintenance_work_mem (the sort spills to
//! temporary files), a rescan keeps nothing (a nested loop of a million
//! probes does not grow the backend), and an allocation the build cannot get
//! is an ERROR, not an abort that restarts the cluster. The backend's private
//! (anonymous) resident memory is sampled from /proc.

mod common;

use common::{assert_verified, backend_pid, Cluster};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const ROWS: i64 = 6_000_000;

fn rss_anon_kb(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `sql` in `c` (backend `pid`) and returns how many MB the backend's
/// anonymous memory grew above what it was before, at its peak.
fn peak_growth_mb(c: &mut postgres::Client, pid: i32, sql: &str) -> u64 {
    let baseline = rss_anon_kb(pid).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_anon_kb(pid).unwrap_or(0));
                thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    c.batch_execute(sql).unwrap();
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap().max(rss_anon_kb(pid).unwrap_or(0));
    peak.saturating_sub(baseline) / 1024
}

#[test]
fn unsorted_build_stays_within_maintenance_work_mem() {
    let cluster = Cluster::start("buildmem", &["shared_buffers = 128MB"]);
    let mut c = cluster.connect();
    c.batch_execute(&format!("CREATE TABLE t AS SELECT (hashint8(g) % 1000000000)::int8 AS k FROM generate_series(1, {ROWS}) g")).unwrap();
    // Half the rows NULL, in random order: keys and NULLs share one budget.
    c.batch_execute(&format!("CREATE TABLE n AS SELECT CASE WHEN g % 2 = 0 THEN NULL ELSE (hashint8(g) % 1000000000)::int8 END AS k FROM generate_series(1, {ROWS}) g")).unwrap();
    for (table, index) in [("t", "t_k"), ("n", "n_k")] {
        // A fresh backend for each: freed memory stays with the allocator.
        let mut c = cluster.connect();
        c.batch_execute(
            "SET maintenance_work_mem = '16MB'; SET max_parallel_maintenance_workers = 0",
        )
        .unwrap();
        let pid = backend_pid(&mut c);
        let grown = peak_growth_mb(
            &mut c,
            pid,
            &format!("CREATE INDEX {index} ON {table} USING learned (k)"),
        );
        // 6M entries are 96 MB as 16-byte sort items; the budget is 16 MB,
        // plus the merge's read buffers, one page of keys and the trainer.
        eprintln!("{index}: backend anonymous memory grew by {grown} MB during the build");
        assert!(
            grown <= 16 + 8,
            "building {index} grew the backend by {grown} MB with maintenance_work_mem = 16MB"
        );
        assert_verified(&mut c, index);
        let n: i64 = c
            .query_one(
                &format!("SELECT entries FROM learned_index_stats('{index}')"),
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, ROWS);
    }
}

/// A rescan keeps nothing: `= ANY(array)` probes of a nested loop (array
/// keys are deconstructed at every rescan) do not grow the backend.
#[test]
fn a_million_rescans_do_not_grow_the_backend() {
    let cluster = Cluster::start("rescanmem", &[]);
    let mut c = cluster.connect();
    common::run_each(
        &mut c,
        "CREATE TABLE t AS SELECT g::int8 * 3 AS k FROM generate_series(1, 200000) g;
         CREATE INDEX t_k ON t USING learned (k);
         CREATE TABLE p AS SELECT (hashint8(g) & 524287)::int8 AS k FROM generate_series(1, 1000000) g;
         VACUUM ANALYZE t, p;
         SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_seqscan = off;
         SET enable_bitmapscan = off; SET enable_material = off; SET jit = off;",
    );
    let q = "SELECT count(*) FROM p JOIN t ON t.k = ANY(ARRAY[p.k, p.k + 1, p.k + 2])";
    // Warm the caches (catalog, relcache, the model) with a smaller join.
    c.batch_execute(&q.replace("FROM p JOIN", "FROM (SELECT * FROM p LIMIT 1000) p JOIN"))
        .unwrap();
    let plan: Vec<String> = c
        .query(&format!("EXPLAIN (COSTS OFF) {q}"), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Nested Loop") && plan.contains("using t_k"),
        "{plan}"
    );
    let pid = backend_pid(&mut c);
    let grown = peak_growth_mb(&mut c, pid, q);
    eprintln!("1M rescans grew the backend by {grown} MB");
    assert!(
        grown < 4,
        "a million rescans grew the backend by {grown} MB"
    );
    let n: i64 = c.query_one(q, &[]).unwrap().get(0);
    // Every probe range k..k+2 holds one multiple of 3, which t holds if it is
    // not 0.
    let want: i64 = c
        .query_one("SELECT count(*) FROM p WHERE k > 0", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, want);
}

/// What a backend caches per index (the model, the run's page directory,
/// the open pages for spilled rows) is one chunk, which PostgreSQL frees
/// whenever it resets the relcache entry of an index in use (here an open
/// cursor's): 600 resets (an ANALYZE that changes the index's statistics),
/// each followed by a lookup and spilled inserts that cache it all again,
/// leave the index's memory as it was.
#[test]
fn relcache_resets_do_not_grow_the_index_cache() {
    let cluster = Cluster::start("amcachemem", &["autovacuum = off"]);
    let mut c = cluster.connect();
    common::run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         SELECT setseed(0.75);
         INSERT INTO t SELECT (random() * 1e15)::int8 FROM generate_series(1, 1000000);
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         SET enable_seqscan = off; SET enable_bitmapscan = off;
         BEGIN;
         DECLARE cur CURSOR FOR SELECT k FROM t WHERE k > 0;
         FETCH 1 FROM cur",
    );
    let cycle = |c: &mut postgres::Client, n: i32| {
        c.batch_execute(&format!(
            "DO $$ BEGIN FOR i IN 1..{n} LOOP
               INSERT INTO t SELECT (random() * 1e15)::int8 FROM generate_series(1, 20);
               ANALYZE t;
               PERFORM count(*) FROM t WHERE k = i::int8 * 1999999999;
             END LOOP; END $$"
        ))
        .unwrap();
    };
    let index_memory = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT coalesce(sum(total_bytes), 0)::int8 FROM pg_backend_memory_contexts
             WHERE ident = 't_k'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    cycle(&mut c, 50);
    let before = index_memory(&mut c);
    cycle(&mut c, 600);
    let after = index_memory(&mut c);
    c.batch_execute("COMMIT").unwrap();
    let run_pages: i64 = c
        .query_one("SELECT run_pages FROM learned_index_stats('t_k')", &[])
        .unwrap()
        .get(0);
    eprintln!("index memory {before} -> {after} bytes over 600 resets, {run_pages} run pages");
    assert!(before > 0, "no memory context for the index");
    // A reset that left the page directory behind (8 bytes a run page)
    // would grow it by that every time.
    assert!(
        after - before < 8 * run_pages * 10,
        "600 relcache resets grew the index's memory from {before} to {after} bytes"
    );
    common::assert_verified(&mut c, "t_k");
}

/// An allocation the build cannot get raises `ERROR: out of memory`: the
/// backend's address space is capped below what the sort would take with a
/// large maintenance_work_mem. The backend lives on and the cluster does not
/// restart. And the largest maintenance_work_mem on a small table just works:
/// memory is taken as entries arrive, not the whole budget up front.
#[test]
fn a_build_out_of_memory_is_an_error() {
    let cluster = Cluster::start("oom", &["shared_buffers = 128MB"]);
    let mut c = cluster.connect();
    c.batch_execute(
        "CREATE TABLE small AS SELECT (hashint8(g) % 1000)::int8 AS k FROM generate_series(1, 100000) g;
         CREATE TABLE big AS SELECT hashint8(g) AS k FROM generate_series(1, 12000000) g;
         SET max_parallel_maintenance_workers = 0;
         SET maintenance_work_mem = '2147483647kB';
         CREATE INDEX small_k ON small USING learned (k);",
    )
    .unwrap();
    assert_verified(&mut c, "small_k");
    let started: String = c
        .query_one("SELECT pg_postmaster_start_time()::text", &[])
        .unwrap()
        .get(0);
    let pid = backend_pid(&mut c);
    let vm_kb: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmSize:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    // 12M entries would take 192 MB in memory; allow the backend 96 MB more.
    let limit = (vm_kb + 96 * 1024) * 1024;
    // As the server's user: lowering a limit of one's own process needs no
    // privilege.
    let status = std::process::Command::new("sudo")
        .args(["-u", "postgres", "prlimit"])
        .arg(format!("--pid={pid}"))
        .arg(format!("--as={limit}"))
        .status()
        .unwrap();
    assert!(status.success());
    let err = c
        .batch_execute("CREATE INDEX big_k ON big USING learned (k)")
        .unwrap_err();
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(db.code().code(), "53200", "{err}");
    assert_eq!(db.message(), "out of memory");
    // Same backend, same postmaster.
    assert_eq!(backend_pid(&mut c), pid);
    let now: String = c
        .query_one("SELECT pg_postmaster_start_time()::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(started, now, "the cluster restarted");
}

/// CREATE INDEX shows its phases and tuple counts in
/// pg_stat_progress_create_index, polled from a second session.
#[test]
fn build_reports_progress() {
    let cluster = Cluster::start("progress", &[]);
    let mut c = cluster.connect();
    c.batch_execute("CREATE TABLE t AS SELECT (hashint8(g) % 1000000000)::int8 AS k FROM generate_series(1, 3000000) g")
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let done = done.clone();
        let mut watch = cluster.connect();
        thread::spawn(move || {
            let mut seen: Vec<(String, i64, i64)> = Vec::new();
            while !done.load(Ordering::Relaxed) {
                for row in watch
                    .query("SELECT phase, tuples_total, tuples_done FROM pg_stat_progress_create_index", &[])
                    .unwrap()
                {
                    seen.push((row.get(0), row.get(1), row.get(2)));
                }
                thread::sleep(Duration::from_millis(10));
            }
            seen
        })
    };
    c.batch_execute("SET maintenance_work_mem = '8MB'; CREATE INDEX t_k ON t USING learned (k)")
        .unwrap();
    done.store(true, Ordering::Relaxed);
    let seen = poller.join().unwrap();
    let phases: std::collections::BTreeSet<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    eprintln!("phases seen: {phases:?}");
    assert!(
        phases.contains("building index: scanning table"),
        "{phases:?}"
    );
    assert!(
        phases.contains("building index: writing run and training model")
            || phases.contains("building index: sorting"),
        "{phases:?}"
    );
    assert!(
        seen.iter()
            .any(|(p, total, done)| p.ends_with("training model")
                && *total == 3_000_000
                && *done > 0),
        "tuple counts were not reported: {seen:?}"
    );
}
