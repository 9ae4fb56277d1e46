//! Parallel index build (PostgreSQL 17 and later; 15 builds learned indexes
//! serially). With workers allowed, `CREATE INDEX` (and `CONCURRENTLY`) scan
//! and sort in the leader and two workers, and the index is the one a serial
//! build makes: same statistics, same answers, `learned_verify` passing.
#![cfg(not(feature = "pg15"))]

mod common;

use common::{assert_index_matches_table, assert_verified, texts, Cluster};

/// What the index holds, without the build time.
const HOLDINGS: &str =
    "SELECT format('%s entries %s nulls %s run pages %s model bytes %s leaves %s \
     max error %s', index_name, entries, null_entries, run_pages, model_bytes, model_leaves, \
     max_error) FROM pg_stat_learned_indexes WHERE index_name = $$%s$$";

const QUERIES: &[&str] = &[
    "SELECT count(*) FROM t WHERE k BETWEEN 1000000 AND 9000000",
    "SELECT id FROM t WHERE k = (SELECT k FROM t WHERE id = 77777) ORDER BY id",
    "SELECT k FROM t WHERE k < 2000000 ORDER BY k",
    "SELECT k FROM t ORDER BY k DESC LIMIT 100",
    "SELECT count(*) FROM t WHERE k IS NULL",
];

/// Runs a build and checks the leader said it launched `workers` workers.
fn build(c: &mut postgres::Client, cluster: &Cluster, sql: &str, workers: usize) {
    let said = format!("{workers} of 2 parallel workers launched");
    let before = cluster.log().matches(&said).count();
    // (assert_index_matches_table resets the session's settings.)
    c.batch_execute(
        "SET maintenance_work_mem = '128MB'; SET max_parallel_maintenance_workers = 2; \
         SET log_min_messages = debug1",
    )
    .unwrap();
    c.batch_execute(sql).unwrap();
    let log = cluster.log();
    assert_eq!(
        log.matches(&said).count(),
        before + 1,
        "expected \"{said}\" once more in the log:\n{log}"
    );
}

#[test]
fn parallel_builds_make_the_serial_index() {
    let cluster = Cluster::start("parallel-build", &["autovacuum = off"]);
    let mut c = cluster.connect();
    // Keys in random heap order, duplicates and NULLs; then a second table in
    // key order (the serial build's no-sort path).
    c.batch_execute(
        "CREATE TABLE t (id int, k int8); \
         INSERT INTO t SELECT g, CASE WHEN g % 50 = 0 THEN NULL ELSE (hashint4(g) & 16777215) END \
         FROM generate_series(1, 300000) g; \
         ALTER TABLE t SET (parallel_workers = 2)",
    )
    .unwrap();
    c.batch_execute(
        "SET max_parallel_maintenance_workers = 0; CREATE INDEX serial ON t USING learned (k)",
    )
    .unwrap();
    build(
        &mut c,
        &cluster,
        "CREATE INDEX par ON t USING learned (k)",
        2,
    );
    let serial = texts(&mut c, &HOLDINGS.replace("%s$$", "serial$$"));
    let par = texts(&mut c, &HOLDINGS.replace("%s$$", "par$$"));
    assert_eq!(serial[0].replacen("serial", "par", 1), par[0]);
    assert_verified(&mut c, "par");
    c.batch_execute("DROP INDEX serial").unwrap();
    for q in QUERIES {
        assert_index_matches_table(&mut c, "par", q, q);
    }

    // CONCURRENTLY, with rows deleted and updated (dead tuples and HOT
    // chains the scan must handle as a serial build does).
    c.batch_execute(
        "DROP INDEX par; DELETE FROM t WHERE id % 7 = 0; UPDATE t SET id = -id WHERE id % 11 = 0",
    )
    .unwrap();
    build(
        &mut c,
        &cluster,
        "CREATE INDEX CONCURRENTLY par ON t USING learned (k)",
        2,
    );
    assert_verified(&mut c, "par");
    for q in QUERIES {
        assert_index_matches_table(&mut c, "par", q, q);
    }

    // REINDEX builds in parallel too, and the index keeps taking inserts.
    build(&mut c, &cluster, "REINDEX INDEX par", 2);
    c.batch_execute("INSERT INTO t SELECT -g, g FROM generate_series(1, 1000) g")
        .unwrap();
    assert_verified(&mut c, "par");
    for q in QUERIES {
        assert_index_matches_table(&mut c, "par", q, q);
    }

    // An ERROR in any participant (here, whichever scans the row where the
    // expression divides by zero) fails the build and leaves no index.
    let err = c
        .batch_execute(
            "SET max_parallel_maintenance_workers = 2; SET maintenance_work_mem = '128MB'; \
             CREATE INDEX bad ON t USING learned ((k / (id - 150001)))",
        )
        .expect_err("division by zero");
    assert!(
        common::db_message(&err).contains("division by zero"),
        "{err}"
    );
    let left: i64 = c
        .query_one("SELECT count(*) FROM pg_class WHERE relname = 'bad'", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}
