//! The background worker: with `shared_preload_libraries = 'learneddb'`, a
//! launcher visits every database, new ones too, and retrains the learned
//! indexes whose delta passed their threshold, except those that opted out.

mod common;

use common::{assert_verified, run_each, wait_for, Cluster};

fn generation(c: &mut postgres::Client, index: &str) -> i64 {
    c.query_one(
        "SELECT generation FROM learned_index_stats($1::text::regclass)",
        &[&index],
    )
    .unwrap()
    .get(0)
}

#[test]
fn the_worker_retrains_indexes_past_their_threshold() {
    let cluster = Cluster::start(
        "worker",
        &[
            "shared_preload_libraries = 'learneddb'",
            "learneddb.retrain_naptime = 1",
            "learneddb.retrain_threshold = 0.05",
        ],
    );
    let mut c = cluster.connect();
    let shown: String = c
        .query_one("SHOW learneddb.retrain_threshold", &[])
        .unwrap()
        .get(0);
    assert_eq!(shown, "0.05");
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g FROM generate_series(1, 20000) g;
         CREATE INDEX t_k ON t USING learned (k);
         CREATE INDEX t_k_manual ON t USING learned (k) WITH (retrain = off);
         CREATE INDEX t_k_high ON t USING learned (k) WITH (retrain_threshold = 10);",
    );
    // 5% of the run is 1000 entries: 500 stay below the threshold.
    c.batch_execute("INSERT INTO t SELECT 20000 + g FROM generate_series(1, 500) g")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        generation(&mut c, "t_k"),
        1,
        "retrained below the threshold"
    );
    c.batch_execute("INSERT INTO t SELECT 30000 + g FROM generate_series(1, 3000) g")
        .unwrap();
    wait_for("the worker to retrain t_k", 60, || {
        generation(&mut c, "t_k") > 1
    });
    assert_eq!(
        generation(&mut c, "t_k_manual"),
        1,
        "retrain = off was retrained"
    );
    assert_eq!(
        generation(&mut c, "t_k_high"),
        1,
        "its own threshold was ignored"
    );
    assert_verified(&mut c, "t_k");

    // A database created after the server started is visited too.
    c.batch_execute("CREATE DATABASE later").unwrap();
    let mut l = cluster.connect_to("later");
    run_each(
        &mut l,
        "CREATE EXTENSION learneddb;
         CREATE TABLE u (k int8);
         INSERT INTO u SELECT g FROM generate_series(1, 5000) g;
         CREATE INDEX u_k ON u USING learned (k);
         INSERT INTO u SELECT 10000 + g FROM generate_series(1, 1000) g;",
    );
    wait_for("the worker to retrain u_k", 60, || {
        generation(&mut l, "u_k") > 1
    });
    assert_verified(&mut l, "u_k");
    drop(l);
    // Dropping what the worker visits is fine.
    c.batch_execute("DROP DATABASE later").unwrap();
    c.batch_execute("DROP INDEX t_k_high").unwrap();
    c.batch_execute("INSERT INTO t SELECT 40000 + g FROM generate_series(1, 3000) g")
        .unwrap();
    wait_for("the worker to retrain t_k again", 60, || {
        generation(&mut c, "t_k") > 2
    });
    let log = cluster.log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("learneddb: retrained index \"t_k\""))
        .expect("the worker logs what it retrained");
    // "..., P pages written, B blocks (F free), S s": the index's size after
    // the switch, which it cannot have shrunk from since.
    let field = |before: &str| -> u64 {
        let head = line.split(before).next().unwrap();
        let word = head.rsplit(' ').next().unwrap().trim_start_matches('(');
        word.parse().unwrap_or_else(|_| panic!("{line}"))
    };
    let (written, blocks, free) = (field(" pages written"), field(" blocks ("), field(" free)"));
    let size: i64 = c
        .query_one("SELECT pg_relation_size('t_k') / 8192", &[])
        .unwrap()
        .get(0);
    assert!(
        written > 0 && written < blocks && free < blocks && blocks <= size as u64,
        "{line}: the index has {size} blocks"
    );

    // The statistics say why a due index is left alone, and stop saying it
    // once it is retrained: first its table is locked, then a transaction
    // older than its last retrain runs.
    let skipped = |c: &mut postgres::Client| -> Option<String> {
        c.query_one(
            "SELECT retrain_skipped FROM pg_stat_learned_indexes WHERE index_name = 't_k'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(skipped(&mut c), None);
    let mut locker = cluster.connect();
    locker
        .batch_execute("BEGIN; LOCK TABLE t IN SHARE UPDATE EXCLUSIVE MODE")
        .unwrap();
    c.batch_execute("INSERT INTO t SELECT 50000 + g FROM generate_series(1, 3000) g")
        .unwrap();
    wait_for("a skip for the lock", 60, || {
        skipped(&mut c).is_some_and(|s| s.starts_with("table locked"))
    });
    let before = generation(&mut c, "t_k");
    let mut old = cluster.connect();
    old.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM t")
        .unwrap();
    locker.batch_execute("COMMIT").unwrap();
    // The first retrain goes ahead (the generation before it is long
    // unread); the second must wait for the old transaction.
    wait_for("the retrain after the lock", 60, || {
        generation(&mut c, "t_k") > before
    });
    c.batch_execute("INSERT INTO t SELECT 60000 + g FROM generate_series(1, 3000) g")
        .unwrap();
    wait_for("a skip for the old transaction", 60, || {
        skipped(&mut c).is_some_and(|s| s.starts_with("transactions older"))
    });
    let at_skip = generation(&mut c, "t_k");
    old.batch_execute("COMMIT").unwrap();
    wait_for("the retrain after the old transaction", 60, || {
        generation(&mut c, "t_k") > at_skip
    });
    wait_for("the skip to clear", 60, || skipped(&mut c).is_none());
}

/// Time-ordered rows: the delta's entries stay far below the threshold
/// (packed, the run takes about a byte a row, a delta row 16), but its pages
/// pass the threshold of the run's pages, and the worker appends them.
#[test]
fn the_worker_retrains_when_the_delta_outgrows_the_run_in_pages() {
    let cluster = Cluster::start(
        "worker_pages",
        &[
            "shared_preload_libraries = 'learneddb'",
            "learneddb.retrain_naptime = 1",
            "learneddb.retrain_threshold = 0.05",
        ],
    );
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g FROM generate_series(1, 1000000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);",
    );
    // Opted out until the delta is measured: the insert itself may call the
    // worker, which would otherwise retrain before the check below reads it.
    c.batch_execute("INSERT INTO t SELECT 1000000 + g FROM generate_series(1, 6000) g")
        .unwrap();
    let (entries, pages, run_pages): (f64, i64, i64) = {
        let r = c
            .query_one(
                "SELECT delta_fraction, delta_pages, run_pages FROM learned_index_stats('t_k')",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert!(
        entries < 0.05 && pages * 20 >= run_pages && pages >= 8,
        "delta {entries} of the run's entries, {pages} pages against {run_pages}"
    );
    c.batch_execute("ALTER INDEX t_k SET (retrain = on)")
        .unwrap();
    wait_for("the worker to retrain t_k", 60, || {
        generation(&mut c, "t_k") > 1
    });
    assert!(
        cluster
            .log()
            .contains("learneddb: retrained index \"t_k\" (append)"),
        "no append in the log"
    );
    assert_verified(&mut c, "t_k");
}

/// An insert that finds its index due calls the launcher to its database
/// instead of leaving it for a naptime (an hour here): rows that spill from a
/// run (random keys, pages without room) cost every lookup until a retrain,
/// and a fast stream of appended rows grows the delta at 16 bytes a row. The
/// worker merges the spilled rows of two databases that spill one right after
/// the other and appends the rows of a third within seconds, while a due index
/// whose inserts did not call (it had opted out until after them) is left to
/// the naptime.
#[test]
fn inserts_call_the_worker_when_their_index_is_due() {
    let cluster = Cluster::start(
        "worker_called",
        &[
            "shared_preload_libraries = 'learneddb'",
            "learneddb.retrain_naptime = 3600",
        ],
    );
    let mut c = cluster.connect();
    let connect = |c: &mut postgres::Client, db: &str, options: &str| {
        c.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
        let mut s = cluster.connect_to(db);
        run_each(
            &mut s,
            &format!(
                "CREATE EXTENSION learneddb; CREATE TABLE t (k int8);
                 INSERT INTO t SELECT g * 4 FROM generate_series(1, 100000) g ORDER BY hashint8(g);
                 CREATE INDEX t_k ON t USING learned (k) {options};"
            ),
        );
        s
    };
    let mut spilling = [
        connect(&mut c, "spills", ""),
        connect(&mut c, "spills_too", ""),
    ];
    let mut appending = connect(&mut c, "appends", "");
    let mut quiet = connect(&mut c, "quiet", "WITH (retrain = off)");
    // Appended rows past the threshold (a tenth of the run): the opted-out
    // index's inserts do not call, then it opts in.
    let append = "INSERT INTO t SELECT 400000 + g FROM generate_series(1, 20000) g";
    quiet.batch_execute(append).unwrap();
    quiet
        .batch_execute("ALTER INDEX t_k SET (retrain = on)")
        .unwrap();
    appending.batch_execute(append).unwrap();
    // Keys between the run's, into full pages: they spill, in one database
    // and right after in the other. (The heap is in random order: a run of
    // a key-ordered one packs to a few bits a row, its pages stop at 16,384
    // rows, and their insert areas would take these rows packed.)
    for s in spilling.iter_mut() {
        s.batch_execute("INSERT INTO t SELECT g * 4 + 1 FROM generate_series(1, 3000) g")
            .unwrap();
    }
    for s in spilling.iter_mut().chain([&mut appending]) {
        wait_for("the worker to retrain a due index", 30, || {
            generation(s, "t_k") > 1
        });
        assert_verified(s, "t_k");
        let found: i64 = s
            .query_one("SELECT count(*) FROM t WHERE k % 4 = 1 OR k > 400000", &[])
            .unwrap()
            .get(0);
        assert!(found == 3000 || found == 20000, "{found} rows");
    }
    let log = cluster.log();
    assert!(
        log.contains("learneddb: retrained index \"t_k\" (merge)")
            && log.contains("learneddb: retrained index \"t_k\" (append)"),
        "no merge and append in the log"
    );
    assert_eq!(
        generation(&mut quiet, "t_k"),
        1,
        "the index whose inserts did not call was retrained before the naptime"
    );
}

fn retained_and_size(c: &mut postgres::Client, index: &str) -> (i64, i64) {
    let r = c
        .query_one(
            "SELECT retained_pages, pg_relation_size($1::text::regclass)
               FROM learned_index_stats($1::text::regclass)",
            &[&index],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// After a retrain the worker frees the generation it replaced as soon as no
/// snapshot can read it, not at the next retrain: the delta that follows
/// reuses the merged delta pages instead of extending the index. A
/// REPEATABLE READ transaction that began before the retrain keeps it until
/// it ends, and its cursor paused in the old generation reads it exactly.
/// (Autovacuum, which retires too, is off.)
#[test]
fn the_worker_retires_a_replaced_generation_once_no_snapshot_reads_it() {
    let cluster = Cluster::start(
        "worker_retire",
        &[
            "shared_preload_libraries = 'learneddb'",
            "learneddb.retrain_naptime = 1",
            "learneddb.retrain_threshold = 0.05",
        ],
    );
    let mut c = cluster.connect();
    let mut old = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8) WITH (autovacuum_enabled = off);
         INSERT INTO t SELECT g FROM generate_series(1, 20000) g;
         CREATE INDEX t_k ON t USING learned (k);",
    );
    run_each(
        &mut old,
        "SET enable_seqscan = off; SET enable_bitmapscan = off;
         BEGIN ISOLATION LEVEL REPEATABLE READ;
         SELECT count(*) FROM t;",
    );
    let count_above = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT count(*) FROM t WHERE k > 19000", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(count_above(&mut old), 1000);
    // A scan of the generation the worker will replace, paused after its
    // first rows.
    let keys = |rows: Vec<postgres::Row>| -> Vec<i64> { rows.iter().map(|r| r.get(0)).collect() };
    old.batch_execute("DECLARE c CURSOR FOR SELECT k, ctid FROM t WHERE k > 19000 ORDER BY k")
        .unwrap();
    let mut read = keys(old.query("FETCH 100 FROM c", &[]).unwrap());

    // Past the threshold (1000 entries): the worker retrains, but the open
    // snapshot keeps the previous generation.
    c.batch_execute("INSERT INTO t SELECT 20000 + g FROM generate_series(1, 3000) g")
        .unwrap();
    wait_for("the worker to retrain t_k", 60, || {
        generation(&mut c, "t_k") == 2
    });
    // Longer than the worker waits for old snapshots to end, and than its
    // naptime.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (retained, _) = retained_and_size(&mut c, "t_k");
    assert!(retained > 0, "retired under a snapshot that can read it");
    read.extend(keys(old.query("FETCH ALL FROM c", &[]).unwrap()));
    assert!(
        read == (19001..=20000).collect::<Vec<i64>>(),
        "the paused scan of the previous generation"
    );
    assert_eq!(count_above(&mut old), 1000, "the old snapshot's answer");
    old.batch_execute("COMMIT").unwrap();

    // The next visit (a second later) retires it without retraining.
    wait_for("the worker to retire the previous generation", 60, || {
        retained_and_size(&mut c, "t_k").0 == 0
    });
    assert_eq!(generation(&mut c, "t_k"), 2, "retrained instead");
    let free: i64 = c
        .query_one("SELECT free_pages FROM learned_index_stats('t_k')", &[])
        .unwrap()
        .get(0);
    assert!(
        free >= retained,
        "{free} free pages, {retained} were retained"
    );

    // The merged delta pages take the next rows: the index does not grow.
    let (_, size) = retained_and_size(&mut c, "t_k");
    c.batch_execute("INSERT INTO t SELECT 23000 + g FROM generate_series(1, 1000) g")
        .unwrap();
    assert_eq!(retained_and_size(&mut c, "t_k").1, size, "the index grew");

    // With no old snapshot, the worker retires right after it retrains, not
    // at its next visit: an hour from now (set by a restart, so that no
    // visit at the old naptime can come). One insert calls it (its index's
    // cache was reset), once: the rows before it did not call (the index
    // had opted out), so no second visit comes either.
    c.batch_execute("ALTER SYSTEM SET learneddb.retrain_naptime = 3600")
        .unwrap();
    drop(c);
    cluster.stop("fast");
    cluster.restart();
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "ALTER INDEX t_k SET (retrain = off);
         INSERT INTO t SELECT 24000 + g FROM generate_series(1, 2000) g;
         ALTER INDEX t_k SET (retrain = on);
         INSERT INTO t VALUES (26001);",
    );
    wait_for("the worker to retrain t_k again", 60, || {
        generation(&mut c, "t_k") == 3
    });
    wait_for("the worker to retire generation 2", 10, || {
        retained_and_size(&mut c, "t_k").0 == 0
    });
    assert_eq!(count_above(&mut c), 7001);
    assert_verified(&mut c, "t_k");
}

/// An ERROR in one index (here a damaged metapage) is logged, and the worker
/// goes on to the indexes after it, visit after visit: it does not end the
/// database's worker before them each time, as it did.
#[test]
fn an_index_that_fails_does_not_keep_the_worker_from_the_others() {
    // Without data checksums, so that our own check meets the damage (with
    // them, the server's page check fails first: an ERROR all the same).
    let cluster = Cluster::start_major(
        "worker_error",
        common::PG_MAJOR,
        &[
            "shared_preload_libraries = 'learneddb'",
            "learneddb.retrain_naptime = 1",
            "learneddb.retrain = off",
        ],
        "",
        common::NO_CHECKSUMS,
    );
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE EXTENSION learneddb;
         CREATE TABLE ta (k int8);
         CREATE TABLE tb (k int8);
         INSERT INTO ta SELECT g FROM generate_series(1, 100000) g;
         INSERT INTO tb SELECT g FROM generate_series(1, 100000) g;
         CREATE INDEX a_k ON ta USING learned (k);
         CREATE INDEX b_k ON tb USING learned (k);
         INSERT INTO ta SELECT 100000 + g FROM generate_series(1, 20000) g;
         INSERT INTO tb SELECT 100000 + g FROM generate_series(1, 20000) g;
         ALTER SYSTEM SET learneddb.retrain = on;",
    );
    // The worker visits indexes in OID order: the damaged one first.
    let first: bool = c
        .query_one("SELECT 'a_k'::regclass::oid < 'b_k'::regclass::oid", &[])
        .unwrap()
        .get(0);
    assert!(first, "a_k was not created with the lower OID");
    let path: String = c
        .query_one("SELECT pg_relation_filepath('a_k')", &[])
        .unwrap()
        .get(0);
    c.batch_execute("CHECKPOINT").unwrap();
    drop(c);
    cluster.stop("fast");
    // The metapage's magic, the first bytes after the page header.
    common::overwrite(
        &cluster.dir.join("data").join(&path),
        24,
        &[0xde, 0xad, 0xbe, 0xef],
    );
    cluster.restart();
    let mut c = cluster.connect();
    wait_for(
        "the worker to retrain b_k after the damaged a_k",
        60,
        || generation(&mut c, "b_k") > 1,
    );
    let log = cluster.log();
    assert!(
        log.contains("learneddb: the retrain worker skipped index \"a_k\"")
            && log.contains("magic"),
        "the failure of a_k is not logged:\n{log}"
    );
    // The next visits go on past a_k too.
    c.batch_execute("INSERT INTO tb SELECT 120000 + g FROM generate_series(1, 20000) g")
        .unwrap();
    wait_for("the worker to retrain b_k again", 60, || {
        generation(&mut c, "b_k") > 2
    });
    assert_verified(&mut c, "b_k");
    let damaged = c
        .query("SELECT learned_verify('a_k')", &[])
        .expect_err("learned_verify passed on a damaged metapage");
    assert!(common::db_message(&damaged).contains("magic"), "{damaged}");
}

/// The pid of the running process of `backend_type`, if one runs.
fn pid_of(c: &mut postgres::Client, backend_type: &str) -> Option<i32> {
    c.query_opt(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = $1",
        &[&backend_type],
    )
    .unwrap()
    .map(|r| r.get(0))
}

/// A cluster whose worker's retrain of `t_k` (its table `t`) is paused at
/// `write`, on the pause lock held by the session returned; and the
/// worker's pid. `ALTER DATABASE postgres RESET learneddb.debug_pause` lets
/// the worker's next visits go on.
fn paused_worker_retrain(name: &str) -> (Cluster, postgres::Client, i32) {
    let cluster = Cluster::start(
        name,
        &[
            "shared_preload_libraries = 'learneddb'",
            "learneddb.retrain_naptime = 1",
            "learneddb.retrain_threshold = 0.05",
        ],
    );
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g FROM generate_series(1, 20000) g;
         CREATE INDEX t_k ON t USING learned (k);
         ALTER DATABASE postgres SET learneddb.debug_pause = 'write';",
    );
    common::pause_lock(&mut c, 0, "lock");
    c.batch_execute("INSERT INTO t SELECT 30000 + g FROM generate_series(1, 3000) g")
        .unwrap();
    let mut worker = None;
    wait_for("the worker's retrain to pause", 60, || {
        worker = pid_of(&mut c, "learneddb retrain");
        worker.is_some_and(|pid| common::wait_event(&mut c, pid) == "Lock:advisory")
    });
    (cluster, c, worker.unwrap())
}

/// `t_k` passes `learned_verify` and answers as its table does.
fn assert_t_k_matches(c: &mut postgres::Client) {
    assert_verified(c, "t_k");
    let q = "SELECT count(*)::text FROM t WHERE k >= 0";
    common::assert_index_matches_table(c, "t_k", q, "after the retrain");
}

/// SIGTERM stops a worker in the middle of a retrain (here one waiting at a
/// pause point), as it stops an autovacuum worker: `pg_terminate_backend`,
/// and a fast shutdown, do not wait for the retrain to end. The launcher,
/// terminated, is started again, and retrains the index. (pgrx's handler
/// only set a flag, which nothing read inside a retrain, and which the
/// launcher cleared by reading it: terminated, it exited for good.)
#[test]
fn sigterm_stops_a_retrain_under_way_and_the_launcher_comes_back() {
    let (cluster, mut c, worker) = paused_worker_retrain("worker_sigterm");
    c.query_one("SELECT pg_terminate_backend($1)", &[&worker])
        .unwrap();
    wait_for("the terminated worker to exit", 30, || {
        pid_of(&mut c, "learneddb retrain") != Some(worker)
    });
    assert!(
        cluster.log().contains(
            "terminating background worker \"learneddb retrain\" due to administrator command"
        ) || cluster
            .log()
            .contains("terminating connection due to administrator command"),
        "no FATAL for the terminated worker"
    );
    common::pause_lock(&mut c, 0, "unlock");
    c.batch_execute("ALTER DATABASE postgres RESET learneddb.debug_pause")
        .unwrap();
    let launcher = pid_of(&mut c, "learneddb launcher").expect("a launcher");
    c.query_one("SELECT pg_terminate_backend($1)", &[&launcher])
        .unwrap();
    wait_for("a new launcher", 60, || {
        pid_of(&mut c, "learneddb launcher").is_some_and(|pid| pid != launcher)
    });
    wait_for("the new launcher to retrain t_k", 60, || {
        generation(&mut c, "t_k") > 1
    });
    assert_t_k_matches(&mut c);
}

/// A retrain that failed after its freeze leaves every row inside the run
/// going to the delta until the next one: the worker retrains such an index
/// at its next visit, far below the threshold.
#[test]
fn the_worker_retrains_an_index_a_failed_retrain_left_frozen() {
    let cluster = Cluster::start(
        "worker_failed",
        &[
            "shared_preload_libraries = 'learneddb'",
            "learneddb.retrain_naptime = 1",
        ],
    );
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g * 10 FROM generate_series(1, 20000) g;
         CREATE INDEX t_k ON t USING learned (k);
         INSERT INTO t SELECT g * 10 + 5 FROM generate_series(1, 100) g;
         SET learneddb.debug_pause = 'write!';",
    );
    let failed = c
        .query_one("SELECT path FROM learned_retrain('t_k')", &[])
        .unwrap_err();
    assert!(
        common::db_message(&failed).contains("failing at write"),
        "{failed}"
    );
    c.batch_execute("RESET learneddb.debug_pause").unwrap();
    wait_for("the worker to retrain t_k", 60, || {
        generation(&mut c, "t_k") > 1
    });
    assert_verified(&mut c, "t_k");
}

/// A retrain under way gives way, as autovacuum does, to a session that
/// waits for a lock on its table: DDL queued behind a long retrain would
/// queue every query on the table behind it. The worker retrains the index
/// at a later visit.
#[test]
fn a_worker_retrain_gives_way_to_ddl_waiting_for_its_table() {
    let (cluster, mut c, _worker) = paused_worker_retrain("worker_give_way");
    let mut d = cluster.connect();
    let ddl_pid = common::backend_pid(&mut d);
    let ddl = std::thread::spawn(move || d.batch_execute("CREATE INDEX t_b ON t (k)"));
    wait_for("the CREATE INDEX to wait for the table", 30, || {
        common::wait_event(&mut c, ddl_pid) == "Lock:relation"
    });
    c.batch_execute("ALTER DATABASE postgres RESET learneddb.debug_pause")
        .unwrap();
    common::pause_lock(&mut c, 0, "unlock");
    ddl.join().unwrap().unwrap();
    // (Logged once the worker's transaction has ended and let the DDL go.)
    wait_for("the worker to log that it gave way", 30, || {
        cluster
            .log()
            .contains("the retrain of index \"t_k\" gave way to a session waiting for a lock")
    });
    wait_for("the worker to retrain t_k after the DDL", 60, || {
        generation(&mut c, "t_k") > 1
    });
    assert_t_k_matches(&mut c);
}

/// A database an interrupted DROP DATABASE left invalid refuses
/// connections: the launcher passes it by rather than start a worker there
/// that fails every round.
#[test]
fn the_launcher_passes_by_a_database_a_failed_drop_left_invalid() {
    let cluster = Cluster::start(
        "worker_invalid_db",
        &[
            "shared_preload_libraries = 'learneddb'",
            "learneddb.retrain_naptime = 1",
        ],
    );
    let mut c = cluster.connect();
    // What DROP DATABASE leaves when it is interrupted (PostgreSQL's own
    // tests mark a database invalid so).
    run_each(
        &mut c,
        "CREATE DATABASE broken;
         UPDATE pg_database SET datconnlimit = -2 WHERE datname = 'broken';
         CREATE DATABASE later;",
    );
    // The launcher visits the databases in the catalog's order, one after
    // the other: once it has visited `later`, it has passed `broken`.
    let order = "SELECT string_agg(datname::text, ',' ORDER BY ctid) FROM pg_database
                  WHERE datname IN ('broken', 'later')";
    assert_eq!(common::texts(&mut c, order), ["broken,later"]);
    let mut l = cluster.connect_to("later");
    // A retrain that failed after its freeze makes the index due at once,
    // with no insert to call the launcher to `later` alone.
    run_each(
        &mut l,
        "CREATE EXTENSION learneddb;
         CREATE TABLE u (k int8);
         INSERT INTO u SELECT g FROM generate_series(1, 5000) g;
         CREATE INDEX u_k ON u USING learned (k);
         SET learneddb.debug_pause = 'write!';",
    );
    assert!(l.query_one("SELECT learned_retrain('u_k')", &[]).is_err());
    wait_for("the worker to retrain u_k", 60, || {
        generation(&mut l, "u_k") > 1
    });
    assert!(
        !cluster.log().contains("invalid database"),
        "a worker tried the invalid database:\n{}",
        cluster.log()
    );
    run_each(&mut c, "DROP DATABASE broken");
}
