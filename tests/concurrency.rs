//! Concurrent readers and writers: while sessions insert (filling and opening
//! delta pages), delete and VACUUM (emptying and recycling delta pages), other
//! sessions compare, inside one REPEATABLE READ snapshot, what the learned
//! index returns with what a sequential scan returns. Under MVCC both must see
//! exactly the same rows, whatever the writers are doing.

mod common;

use common::{assert_verified, Cluster, Rng};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

fn writer(cluster: &Cluster, id: u64, stop: &AtomicBool) {
    let mut c = cluster.connect();
    let mut r = Rng(id * 31 + 7);
    while !stop.load(Ordering::Relaxed) {
        match r.below(10) {
            0..=5 => {
                let n = 1 + r.below(50) as i64;
                let base = r.below(1_000_000) as i64;
                c.execute("INSERT INTO t (v) SELECT $1::int8 + (hashint8(g) & 1023) FROM generate_series(1, $2::int8) g", &[&base, &n]).unwrap();
            }
            6 => {
                c.execute("INSERT INTO t (v) VALUES (NULL)", &[]).unwrap();
            }
            7 | 8 => {
                let lo = r.below(1_000_000) as i64;
                c.execute("DELETE FROM t WHERE v BETWEEN $1 AND $1 + 20000", &[&lo])
                    .unwrap();
            }
            _ => c.batch_execute("VACUUM t").unwrap(),
        }
    }
}

fn reader(cluster: &Cluster, id: u64, stop: &AtomicBool, checks: &AtomicUsize) {
    let mut c = cluster.connect();
    let mut r = Rng(id * 131 + 3);
    while !stop.load(Ordering::Relaxed) {
        let lo = r.below(1_000_000) as i64;
        let hi = lo + r.below(50_000) as i64;
        let mut tx = c
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .start()
            .unwrap();
        let rows = |tx: &mut postgres::Transaction, settings: &str| -> Vec<String> {
            tx.batch_execute(settings).unwrap();
            let q = "SELECT coalesce(v::text, 'NULL') || '/' || id FROM t WHERE v BETWEEN $1 AND $2 OR (v IS NULL AND $1 % 2 = 0) ORDER BY v, id";
            tx.query(q, &[&lo, &hi])
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect()
        };
        let by_index = rows(&mut tx, "SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = on; SET LOCAL enable_bitmapscan = on");
        let by_heap = rows(&mut tx, "SET LOCAL enable_seqscan = on; SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off; SET LOCAL enable_bitmapscan = off");
        assert_eq!(
            by_index.len(),
            by_heap.len(),
            "index and table disagree for [{lo}, {hi}]"
        );
        assert!(
            by_index == by_heap,
            "index and table disagree for [{lo}, {hi}]"
        );
        // Ordered through the index, in the same snapshot.
        tx.batch_execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_indexscan = on").unwrap();
        let ordered: Vec<i64> = tx
            .query("SELECT v FROM t WHERE v >= $1 ORDER BY v LIMIT 200", &[&lo])
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        tx.batch_execute("SET LOCAL enable_seqscan = on; SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off").unwrap();
        let sorted: Vec<i64> = tx
            .query("SELECT v FROM t WHERE v >= $1 ORDER BY v LIMIT 200", &[&lo])
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(ordered, sorted);
        tx.commit().unwrap();
        checks.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn readers_agree_with_the_table_while_writers_run() {
    let cluster = Arc::new(Cluster::start("concurrency", &[]));
    {
        let mut c = cluster.connect();
        c.batch_execute(
            "CREATE TABLE t (id bigserial, v int8);
             INSERT INTO t (v) SELECT (hashint8(g) & 1048575) FROM generate_series(1, 50000) g;
             CREATE INDEX t_v ON t USING learned (v);",
        )
        .unwrap();
    }
    {
        // The readers' "index" side really goes through the learned index.
        let mut c = cluster.connect();
        c.batch_execute("SET enable_seqscan = off").unwrap();
        for q in [
            "EXPLAIN SELECT id FROM t WHERE v BETWEEN 5 AND 50 OR (v IS NULL AND 6 % 2 = 0) ORDER BY v, id",
            "EXPLAIN SELECT v FROM t WHERE v >= 5 ORDER BY v LIMIT 200",
        ] {
            let plan: Vec<String> = c.query(q, &[]).unwrap().iter().map(|r| r.get(0)).collect();
            assert!(plan.join("\n").contains("t_v"), "{plan:?}");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for id in 0..3 {
        let (cl, st) = (cluster.clone(), stop.clone());
        handles.push(thread::spawn(move || writer(&cl, id, &st)));
    }
    for id in 0..2 {
        let (cl, st, ch) = (cluster.clone(), stop.clone(), checks.clone());
        handles.push(thread::spawn(move || reader(&cl, id, &st, &ch)));
    }
    thread::sleep(Duration::from_secs(12));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let n = checks.load(Ordering::Relaxed);
    assert!(n > 50, "only {n} snapshot comparisons ran");
    let mut c = cluster.connect();
    assert_verified(&mut c, "t_v");
    let pages: i64 = c
        .query_one("SELECT delta_pages FROM learned_index_stats('t_v')", &[])
        .unwrap()
        .get(0);
    assert!(pages > 1, "the writers did not fill delta pages");
}
