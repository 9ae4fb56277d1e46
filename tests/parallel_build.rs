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
    // Keys in random heap order, duplicates and NULLs.
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

    // Workers alone (parallel_leader_participation = off): the index is the
    // same, and an ERROR raised in a worker (where the expression divides by
    // zero) reaches the leader, fails the build and leaves no index.
    c.batch_execute(
        "SET max_parallel_maintenance_workers = 0; CREATE INDEX serial ON t USING learned (k); \
         SET parallel_leader_participation = off",
    )
    .unwrap();
    build(
        &mut c,
        &cluster,
        "CREATE INDEX workers_only ON t USING learned (k)",
        2,
    );
    let held = texts(&mut c, &HOLDINGS.replace("%s$$", "workers_only$$"));
    assert_eq!(
        texts(&mut c, &HOLDINGS.replace("%s$$", "serial$$"))[0].replacen(
            "serial",
            "workers_only",
            1
        ),
        held[0]
    );
    assert_verified(&mut c, "workers_only");
    c.batch_execute(
        "DROP INDEX workers_only; DROP INDEX serial; SET parallel_leader_participation = off",
    )
    .unwrap();
    let err = c
        .batch_execute(
            "SET max_parallel_maintenance_workers = 2; SET maintenance_work_mem = '128MB'; \
             CREATE INDEX bad ON t USING learned ((k / (id - 150001)))",
        )
        .expect_err("division by zero");
    let db = err.as_db_error().expect("a database error");
    assert!(db.message().contains("division by zero"), "{err}");
    // The worker that raised it logged it and exited with status 1 (the
    // postmaster says so once it has reaped the worker).
    common::wait_for("a parallel worker to exit with status 1", 30, || {
        cluster.log().lines().any(|l| {
            l.contains("background worker \"parallel worker\"") && l.contains("exit code 1")
        })
    });
    let left: i64 = c
        .query_one("SELECT count(*) FROM pg_class WHERE relname = 'bad'", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// A HOT chain whose key changed while an older snapshot can still see its
/// first version ("broken"): a worker that meets it must tell the leader, so
/// that `pg_index.indcheckxmin` keeps older snapshots off the new index, as
/// after a serial build.
#[test]
fn a_worker_reports_broken_hot_chains() {
    let cluster = Cluster::start("parallel-hot", &["autovacuum = off"]);
    let mut c = cluster.connect();
    let mut old = cluster.connect();
    c.batch_execute(
        "CREATE TABLE h (id int, k int8) WITH (fillfactor = 50, parallel_workers = 2); \
         INSERT INTO h SELECT g, g FROM generate_series(1, 100000) g",
    )
    .unwrap();
    old.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM h")
        .unwrap();
    // No index on k yet, and room on every page: HOT updates.
    c.batch_execute("UPDATE h SET k = k + 1 WHERE id % 3 = 0")
        .unwrap();
    let check_xmin = |c: &mut postgres::Client, index: &str| -> bool {
        c.query_one(
            "SELECT indcheckxmin FROM pg_index WHERE indexrelid = $1::text::regclass",
            &[&index],
        )
        .unwrap()
        .get(0)
    };
    c.batch_execute(
        "SET max_parallel_maintenance_workers = 0; CREATE INDEX h_serial ON h USING learned (k)",
    )
    .unwrap();
    assert!(check_xmin(&mut c, "h_serial"), "the chains are not broken");
    // (DROP INDEX would wait for the old snapshot's transaction.)
    c.batch_execute("SET parallel_leader_participation = off")
        .unwrap();
    build(
        &mut c,
        &cluster,
        "CREATE INDEX h_par ON h USING learned (k)",
        2,
    );
    assert!(check_xmin(&mut c, "h_par"));
    old.batch_execute("COMMIT").unwrap();
    assert_verified(&mut c, "h_par");
}
