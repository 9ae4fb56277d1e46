//! Index scans are counted where PostgreSQL users look for them: in
//! `pg_stat_user_indexes.idx_scan` (both majors; PostgreSQL 16 renamed the
//! counter we bump) and, on PostgreSQL 18, in the "Index Searches" line of
//! `EXPLAIN ANALYZE`, one per descent as btree counts them.

mod common;

use common::{texts, Cluster};

#[test]
fn scans_are_counted_in_statistics_and_explain() {
    let cluster = Cluster::start("scan-counts", &["autovacuum = off"]);
    let mut c = cluster.connect();
    c.batch_execute(
        "CREATE TABLE t (k int8); INSERT INTO t SELECT g FROM generate_series(1, 10000) g; \
         CREATE INDEX t_k ON t USING learned (k); ANALYZE t; \
         CREATE TABLE probes AS SELECT g * 10 AS k FROM generate_series(1, 25) g; ANALYZE probes; \
         SET enable_seqscan = off; SET enable_bitmapscan = off; \
         SET enable_hashjoin = off; SET enable_mergejoin = off",
    )
    .unwrap();
    // Bounds inside the histogram: at its ends PostgreSQL 18's planner reads
    // the actual extreme through the index (get_actual_variable_range, only
    // for btree on 15), and those probes count as scans too, as btree's do.
    for _ in 0..3 {
        let n: i64 = c
            .query_one("SELECT count(*) FROM t WHERE k BETWEEN 5000 AND 5010", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 11);
    }
    c.batch_execute("SELECT pg_stat_force_next_flush()")
        .unwrap();
    let scans: i64 = c
        .query_one(
            "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 't_k'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(scans, 3);

    // A nested loop probes the index once per outer row.
    let plan = texts(
        &mut c,
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) \
         SELECT count(*) FROM probes p JOIN t ON t.k = p.k",
    )
    .join("\n");
    assert!(plan.contains("using t_k"), "{plan}");
    #[cfg(feature = "pg18")]
    assert!(plan.contains("Index Searches: 25"), "{plan}");
    #[cfg(not(feature = "pg18"))]
    assert!(!plan.contains("Index Searches"), "{plan}");
}
