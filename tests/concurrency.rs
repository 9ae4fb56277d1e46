//! Stress: four writers insert (in batches, appending and scattered, NULLs
//! too), update and delete; a fifth session VACUUMs in a loop, a sixth
//! retrains; readers compare,
//! inside one REPEATABLE READ snapshot, what an index-only scan, a plain index
//! scan (forward and backward) and a bitmap scan of the learned index return
//! with what a sequential scan returns; a checker runs `learned_verify` and
//! `learned_index_stats` throughout. Zero mismatches and zero errors are
//! allowed. `LEARNEDDB_STRESS_SECS` sets the duration (default 120).

mod common;

use common::{assert_verified, Rng};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::Cluster;

fn writer(cluster: &Cluster, id: u64, stop: &AtomicBool, inserted: &AtomicUsize) {
    let mut c = cluster.connect();
    let mut r = Rng(id * 31 + 7);
    let mut append: i64 = 2_000_000 + id as i64 * 100_000_000;
    while !stop.load(Ordering::Relaxed) {
        match r.below(20) {
            0..=7 => {
                let n = 1 + r.below(400) as i64;
                let base = r.below(1_000_000) as i64;
                c.execute("INSERT INTO t (v) SELECT $1::int8 + (hashint8(g) & 1023) FROM generate_series(1, $2::int8) g", &[&base, &n]).unwrap();
                inserted.fetch_add(n as usize, Ordering::Relaxed);
            }
            8..=11 => {
                // Time-ordered appends, as a serial id or a timestamp grows.
                let n = 1 + r.below(400) as i64;
                c.execute(
                    "INSERT INTO t (v) SELECT $1::int8 + g FROM generate_series(1, $2::int8) g",
                    &[&append, &n],
                )
                .unwrap();
                append += n;
                inserted.fetch_add(n as usize, Ordering::Relaxed);
            }
            12 => {
                c.execute(
                    "INSERT INTO t (v) SELECT NULL FROM generate_series(1, 5)",
                    &[],
                )
                .unwrap();
            }
            13..=15 => {
                let lo = r.below(1_000_000) as i64;
                c.execute(
                    "UPDATE t SET v = v + 7 WHERE v BETWEEN $1 AND $1 + 300",
                    &[&lo],
                )
                .unwrap();
            }
            _ => {
                let lo = r.below(1_000_000) as i64;
                c.execute("DELETE FROM t WHERE v BETWEEN $1 AND $1 + 3000", &[&lo])
                    .unwrap();
            }
        }
    }
}

fn vacuumer(cluster: &Cluster, stop: &AtomicBool, runs: &AtomicUsize) {
    let mut c = cluster.connect();
    while !stop.load(Ordering::Relaxed) {
        c.batch_execute("VACUUM t").unwrap();
        runs.fetch_add(1, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(200));
    }
}

/// Retrains every second or so; a retrain is refused (55006) while a snapshot
/// older than the last one may still read the generation before.
fn retrainer(cluster: &Cluster, stop: &AtomicBool, runs: &AtomicUsize) {
    let mut c = cluster.connect();
    while !stop.load(Ordering::Relaxed) {
        match c.batch_execute("SELECT learned_retrain('t_v')") {
            Ok(()) => {
                runs.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => assert_eq!(common::db_message(&e).get(..5), Some("55006"), "{e}"),
        }
        thread::sleep(Duration::from_millis(1000));
    }
}

fn checker(cluster: &Cluster, stop: &AtomicBool, runs: &AtomicUsize) {
    let mut c = cluster.connect();
    while !stop.load(Ordering::Relaxed) {
        common::assert_verified(&mut c, "t_v");
        let (entries, pages): (i64, i64) = c
            .query_one(
                "SELECT entries, delta_pages FROM learned_index_stats('t_v')",
                &[],
            )
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert!(entries > 0 && pages >= 0);
        runs.fetch_add(1, Ordering::Relaxed);
    }
}

const NO_INDEX: &str = "SET LOCAL enable_seqscan = on; SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off; SET LOCAL enable_bitmapscan = off";

/// Each way into the learned index: settings and the plan node it must use.
const WAYS: &[(&str, &str)] = &[
    ("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = on; SET LOCAL enable_indexonlyscan = on; SET LOCAL enable_bitmapscan = off", "Index Only Scan using t_v"),
    ("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = on; SET LOCAL enable_indexonlyscan = off; SET LOCAL enable_bitmapscan = off", "Index Scan using t_v"),
    ("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off; SET LOCAL enable_bitmapscan = on", "Bitmap Index Scan on t_v"),
];

fn rows(tx: &mut postgres::Transaction, settings: &str, q: &str, lo: i64, hi: i64) -> Vec<String> {
    tx.batch_execute(settings).unwrap();
    tx.query(q, &[&lo, &hi])
        .unwrap()
        .iter()
        .map(|row| {
            row.get::<_, Option<String>>(0)
                .unwrap_or_else(|| "NULL".into())
        })
        .collect()
}

fn reader(cluster: &Cluster, id: u64, stop: &AtomicBool, checks: &AtomicUsize) {
    let mut c = cluster.connect();
    let mut r = Rng(id * 131 + 3);
    // Only v: an index-only scan where the settings allow one. Sorted in SQL
    // so that every way compares equal.
    let ranges = "SELECT v::text AS val FROM t WHERE v BETWEEN $1 AND $2 ORDER BY v";
    let nulls = "SELECT coalesce(v::text, 'NULL') FROM t WHERE v IS NULL AND $1::int8 <= $2::int8";
    while !stop.load(Ordering::Relaxed) {
        let lo = r.below(1_000_000) as i64;
        let hi = lo + r.below(30_000) as i64;
        let mut tx = c
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .start()
            .unwrap();
        for q in [ranges, nulls] {
            let by_heap = rows(&mut tx, NO_INDEX, q, lo, hi);
            for (settings, _) in WAYS {
                let by_index = rows(&mut tx, settings, q, lo, hi);
                assert!(
                    by_index == by_heap,
                    "{settings}: index and table disagree on {q} for [{lo}, {hi}]: {} vs {} rows",
                    by_index.len(),
                    by_heap.len()
                );
            }
        }
        // Ordered through the index in both directions, in the same snapshot.
        for order in ["ASC", "DESC"] {
            let q = format!(
                "SELECT v::text FROM t WHERE v >= $1 AND v <= $2 ORDER BY v {order} LIMIT 300"
            );
            let sorted = rows(&mut tx, NO_INDEX, &q, lo, hi + 500_000);
            let ordered = rows(&mut tx, WAYS[1].0, &q, lo, hi + 500_000);
            assert_eq!(ordered, sorted, "ORDER BY v {order} from {lo}");
        }
        tx.commit().unwrap();
        checks.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn scans_vacuum_and_verify_stay_exact_under_load() {
    let secs: u64 = std::env::var("LEARNEDDB_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let cluster = Arc::new(Cluster::start("concurrency", &["autovacuum = off"]));
    {
        let mut c = cluster.connect();
        c.batch_execute(
            "CREATE TABLE t (id bigserial, v int8);
             INSERT INTO t (v) SELECT (hashint8(g) & 1048575) FROM generate_series(1, 100000) g;
             CREATE INDEX t_v ON t USING learned (v);
             ANALYZE t;",
        )
        .unwrap();
        // Every way really goes through the learned index.
        for q in [
            "EXPLAIN SELECT v::text AS val FROM t WHERE v BETWEEN 5 AND 50 ORDER BY v",
            "EXPLAIN SELECT coalesce(v::text, 'NULL') FROM t WHERE v IS NULL AND 5 <= 50",
        ] {
            for (settings, node) in WAYS {
                let mut tx = c.transaction().unwrap();
                tx.batch_execute(settings).unwrap();
                let plan: Vec<String> =
                    tx.query(q, &[]).unwrap().iter().map(|r| r.get(0)).collect();
                let plan = plan.join("\n");
                assert!(plan.contains(node), "{settings}: {plan}");
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicUsize::new(0));
    let vacuums = Arc::new(AtomicUsize::new(0));
    let verifies = Arc::new(AtomicUsize::new(0));
    let inserted = Arc::new(AtomicUsize::new(0));
    let retrains = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for id in 0..4 {
        let (cl, st, ins) = (cluster.clone(), stop.clone(), inserted.clone());
        handles.push(thread::spawn(move || writer(&cl, id, &st, &ins)));
    }
    {
        let (cl, st, n) = (cluster.clone(), stop.clone(), vacuums.clone());
        handles.push(thread::spawn(move || vacuumer(&cl, &st, &n)));
        let (cl, st, n) = (cluster.clone(), stop.clone(), verifies.clone());
        handles.push(thread::spawn(move || checker(&cl, &st, &n)));
        let (cl, st, n) = (cluster.clone(), stop.clone(), retrains.clone());
        handles.push(thread::spawn(move || retrainer(&cl, &st, &n)));
    }
    for id in 0..2 {
        let (cl, st, ch) = (cluster.clone(), stop.clone(), checks.clone());
        handles.push(thread::spawn(move || reader(&cl, id, &st, &ch)));
    }
    thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let (n, v, f, i, r) = (
        checks.load(Ordering::Relaxed),
        vacuums.load(Ordering::Relaxed),
        verifies.load(Ordering::Relaxed),
        inserted.load(Ordering::Relaxed),
        retrains.load(Ordering::Relaxed),
    );
    eprintln!("{n} snapshot comparisons, {v} VACUUMs, {f} learned_verify runs, {r} retrains, {i} rows inserted");
    assert!(
        n > 20 && v > 5 && f > 2 && r > 2,
        "too little ran: {n} comparisons, {v} VACUUMs, {f} verifies, {r} retrains"
    );
    let mut c = cluster.connect();
    assert_verified(&mut c, "t_v");
}
