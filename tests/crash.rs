//! Crash safety: concurrent inserters (and a deleter with VACUUM and retrains) write to a
//! table with a learned index while the server crashes, once by SIGKILL to a
//! backend (the postmaster then resets and runs crash recovery) and once by
//! `pg_ctl stop -m immediate`. After recovery `learned_verify` passes and every
//! committed row is found through the index.

mod common;

use common::{assert_index_matches_table, assert_verified, Cluster, Rng};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const WRITERS: u64 = 4;

/// Inserts unique values until told to stop; records what committed.
fn writer(
    cluster: &Cluster,
    id: u64,
    first: i64,
    stop: &AtomicBool,
    committed: &Mutex<BTreeSet<i64>>,
) {
    let mut r = Rng(id * 7919 + first as u64 + 1);
    let mut n: i64 = first;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut c) = cluster.try_connect() else {
            thread::sleep(Duration::from_millis(50));
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            let batch = 1 + r.below(20) as i64;
            // Values interleave across writers, so every writer hits every part
            // of the key space and the delta pages' ranges overlap.
            let vals: Vec<i64> = (0..batch)
                .map(|k| (n + k) * WRITERS as i64 + id as i64)
                .collect();
            let res = c.execute("INSERT INTO t (v) SELECT unnest($1::int8[])", &[&vals]);
            match res {
                Ok(_) => {
                    committed.lock().unwrap().extend(vals.iter().copied());
                    n += batch;
                }
                Err(_) => {
                    // The server went away; the batch may or may not have
                    // committed, so its values are never reused.
                    n += batch;
                    break;
                }
            }
        }
    }
}

fn deleter(cluster: &Cluster, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut c) = cluster.try_connect() else {
            thread::sleep(Duration::from_millis(50));
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            // Only the preloaded rows (negative keys) are deleted. Retrains
            // run between VACUUMs, so crashes also hit them (a refusal while
            // an old snapshot may read the generation before is fine).
            if c.batch_execute("DELETE FROM t WHERE v < 0 AND v % 97 = (random() * 96)::int")
                .is_err()
                || c.batch_execute("VACUUM t").is_err()
            {
                break;
            }
            if let Err(e) = c.batch_execute("SELECT learned_retrain('t_v')") {
                if e.code().is_none_or(|c| c.code() != "55006") {
                    break;
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn check(cluster: &Cluster, committed: &BTreeSet<i64>) {
    let mut c = cluster.connect();
    assert_verified(&mut c, "t_v");
    c.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        .unwrap();
    let plan: Vec<String> = c
        .query(
            "EXPLAIN (COSTS OFF) SELECT v FROM t WHERE v >= 0 ORDER BY v",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.join("\n").contains("t_v"), "{plan:?}");
    let through_index: Vec<i64> = c
        .query("SELECT v FROM t WHERE v >= 0 ORDER BY v", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let found: BTreeSet<i64> = through_index.iter().copied().collect();
    assert_eq!(found.len(), through_index.len(), "a row came back twice");
    let missing: Vec<&i64> = committed.difference(&found).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} committed rows not found through the index, e.g. {missing:?}",
        committed.difference(&found).count()
    );
    c.batch_execute("RESET enable_seqscan; RESET enable_bitmapscan; SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off").unwrap();
    let heap: BTreeSet<i64> = c
        .query("SELECT v FROM t WHERE v >= 0", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        heap, found,
        "the index and the table disagree after recovery"
    );
    let n: i64 = c
        .query_one("SELECT count(*) FROM t WHERE v < 0", &[])
        .unwrap()
        .get(0);
    c.batch_execute("RESET ALL; SET enable_seqscan = off")
        .unwrap();
    let n_index: i64 = c
        .query_one("SELECT count(*) FROM t WHERE v < 0", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, n_index);
}

/// Runs writers (whose values start at `first`) and the deleter, crashing the
/// server in the middle.
fn run_writers(
    cluster: &Arc<Cluster>,
    first: i64,
    committed: &Arc<Mutex<BTreeSet<i64>>>,
    crash: impl FnOnce(&Cluster),
) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for id in 0..WRITERS {
        let (cl, st, cm) = (cluster.clone(), stop.clone(), committed.clone());
        handles.push(thread::spawn(move || writer(&cl, id, first, &st, &cm)));
    }
    let (cl, st) = (cluster.clone(), stop.clone());
    handles.push(thread::spawn(move || deleter(&cl, &st)));
    thread::sleep(Duration::from_millis(1500));
    crash(cluster);
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn committed_rows_survive_crashes() {
    let cluster = Arc::new(Cluster::start(
        "crash",
        // Recovery compares every page a Generic WAL record touches with the
        // image the record carries.
        &[
            "restart_after_crash = on",
            "checkpoint_timeout = 30s",
            "wal_consistency_checking = 'generic'",
        ],
    ));
    {
        let mut c = cluster.connect();
        c.batch_execute(
            "CREATE TABLE t (id bigserial, v int8);
             INSERT INTO t (v) SELECT -g FROM generate_series(1, 20000) g;
             CREATE INDEX t_v ON t USING learned (v);",
        )
        .unwrap();
    }
    let committed = Arc::new(Mutex::new(BTreeSet::new()));

    // 1. A backend is killed: the postmaster resets and replays WAL.
    run_writers(&cluster, 0, &committed, |cl| {
        let mut c = cl.connect();
        let pid: i32 = c
            .query_one("SELECT pid FROM pg_stat_activity WHERE query LIKE 'INSERT INTO t%' AND pid <> pg_backend_pid() LIMIT 1", &[])
            .map(|r| r.get(0))
            .unwrap_or(0);
        assert!(pid > 0, "no inserting backend to kill");
        sigkill(pid);
    });
    check(&cluster, &committed.lock().unwrap());

    // 2. The whole server stops without a checkpoint.
    run_writers(&cluster, 1 << 40, &committed, |cl| {
        cl.stop("immediate");
        cl.restart();
    });
    let n = committed.lock().unwrap().len();
    assert!(n > 1000, "only {n} rows committed; the writers did not run");
    check(&cluster, &committed.lock().unwrap());

    // 3. A crash right after a build: the build's pages come back from WAL.
    // An unlogged table's index is reset from its init fork, which must be a
    // valid empty index.
    {
        let mut c = cluster.connect();
        c.batch_execute(
            "CHECKPOINT; CREATE INDEX t_v2 ON t USING learned (v); INSERT INTO t (v) VALUES (-1), (-2);
             CREATE UNLOGGED TABLE u (v int8); INSERT INTO u SELECT g FROM generate_series(1, 5000) g;
             CREATE INDEX u_v ON u USING learned (v); INSERT INTO u VALUES (6000);",
        )
        .unwrap();
    }
    cluster.stop("immediate");
    cluster.restart();
    let mut c = cluster.connect();
    for index in ["t_v2", "u_v"] {
        assert_verified(&mut c, index);
    }
    c.batch_execute("INSERT INTO u VALUES (7), (8), (NULL); SET enable_seqscan = off")
        .unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM u WHERE v < 10 OR v IS NULL", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        n, 3,
        "the unlogged table was not reset to empty with a working index"
    );
    assert_verified(&mut c, "u_v");
}

/// SIGKILL during a retrain, at each of its stages, for a retrain that
/// merges (random keys), one that appends (increasing keys) and one that
/// merges a segment of a run long enough to cut (random keys over the whole
/// `int8` range, about 270 run pages; it alone is also stopped while it
/// closes the bounded pages it merges and while it carries the others over
/// open, a crash that leaves some of them retagged). The retrain
/// is stopped at the stage by `learneddb.debug_pause`, which makes it
/// wait for an advisory lock this test holds; rows committed while it waits
/// must survive too. After recovery `learned_verify` passes, the index and
/// the table agree, and the next retrain completes.
#[test]
fn retrains_survive_a_crash_at_each_stage() {
    let cluster = Cluster::start(
        "retrain_crash",
        &["restart_after_crash = on", "autovacuum = off"],
    );
    let stages = [
        "freeze",
        "freeze_bounded",
        "carry",
        "write",
        "switch",
        "switched",
        "recycle",
    ];
    for (n, stage) in stages.iter().enumerate() {
        for path in ["merge", "append", "partial"] {
            // Between two bounded pages the partial merge closes, or two it
            // carries over still open: its run has a page of spilled rows in
            // every slice.
            if matches!(*stage, "freeze_bounded" | "carry") && path != "partial" {
                continue;
            }
            let table = format!("s{n}{}", &path[..1]);
            // The partial merge's table starts with more rows.
            let rows = if path == "partial" { 250_000 } else { 20_000 };
            let key = |from: i64, to: i64| {
                let (from, to) = (from - 20_000 + rows, to - 20_000 + rows);
                match path {
                    "append" => format!("SELECT g FROM generate_series({from}, {to}) g"),
                    "merge" => {
                        format!("SELECT hashint8(g) % 1000000 FROM generate_series({from}, {to}) g")
                    }
                    _ => format!(
                        "SELECT {} FROM generate_series({from}, {to}) g",
                        common::RANDOM_KEY
                    ),
                }
            };
            let mut c = cluster.connect();
            common::run_each(
                &mut c,
                &format!(
                    "CREATE TABLE {table} (v int8);
                 INSERT INTO {table} {};
                 CREATE INDEX {table}_v ON {table} USING learned (v);
                 INSERT INTO {table} {};
                 DELETE FROM {table} WHERE v % 50 = 0;
                 VACUUM {table};",
                    key(20_001 - rows, 20000),
                    key(20001, 23000)
                ),
            );
            if *stage == "recycle" {
                // A previous generation for the retrain to recycle.
                common::run_each(
                    &mut c,
                    &format!(
                        "SELECT learned_retrain('{table}_v'); INSERT INTO {table} {};",
                        key(23001, 25000)
                    ),
                );
            }
            common::pause_lock(&mut c, 0, "lock");
            let mut r = cluster.connect();
            let pid = common::backend_pid(&mut r);
            r.batch_execute(&format!("SET learneddb.debug_pause = '{stage}'"))
                .unwrap();
            let index = format!("{table}_v");
            let retrainer = thread::spawn(move || {
                r.batch_execute(&format!("SELECT learned_retrain('{index}')"))
                    .is_err()
            });
            common::wait_for_pause(&mut c, pid, &format!("the retrain to pause at {stage}"));
            // Rows committed while the retrain is stopped.
            c.batch_execute(&format!("INSERT INTO {table} {}", key(30001, 30500)))
                .unwrap();
            let mut c = kill_and_recover(&cluster, c, pid, retrainer);
            check_table(&mut c, &table, &format!("{stage}, {path}"));
            if *stage == "recycle" {
                // The crash left the merged delta pages closed: VACUUM
                // frees them, though no retrain is due.
                c.batch_execute(&format!("VACUUM {table}")).unwrap();
                let retained: i64 = c
                    .query_one(
                        &format!("SELECT retained_pages FROM learned_index_stats('{table}_v')"),
                        &[],
                    )
                    .unwrap()
                    .get(0);
                assert_eq!(retained, 0, "{path}: VACUUM left merged pages");
                check_table(&mut c, &table, "VACUUM after recycle");
            }
            let took: String = c
                .query_one(
                    &format!("SELECT path FROM learned_retrain('{table}_v')"),
                    &[],
                )
                .unwrap()
                .get(0);
            // The spilled rows of the segments not merged before the crash
            // call for another partial merge. (The others may find nothing
            // left below the run, or rows in the room a merge left, and
            // append.)
            if path == "partial" {
                assert_eq!(took, path, "the retrain after {stage}");
            }
            check_table(&mut c, &table, &format!("retrain after {stage}"));
        }
    }
}

/// Sends SIGKILL to backend `pid`: the postmaster then resets the server
/// and runs crash recovery.
fn sigkill(pid: i32) {
    let status = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// SIGKILLs backend `pid`, whose statement `killed` runs (and must end in
/// an error), and connects again once the server has recovered; `c` is a
/// session of the server from before.
fn kill_and_recover(
    cluster: &Cluster,
    mut c: postgres::Client,
    pid: i32,
    killed: thread::JoinHandle<bool>,
) -> postgres::Client {
    sigkill(pid);
    assert!(killed.join().unwrap(), "the killed statement returned");
    // The postmaster ends every backend, this session's too, before it
    // recovers: until then a new connection could still reach the server
    // from before the crash.
    common::wait_for("the crash restart to begin", 60, || {
        c.batch_execute("SELECT 1").is_err()
    });
    drop(c);
    reconnect(cluster)
}

/// Connects once the server has finished crash recovery.
fn reconnect(cluster: &Cluster) -> postgres::Client {
    let mut client = None;
    common::wait_for("crash recovery", 60, || {
        client = cluster
            .try_connect()
            .ok()
            .filter(|c| !c.is_closed())
            .and_then(|mut c| c.batch_execute("SELECT 1").ok().map(|_| c));
        client.is_some()
    });
    client.unwrap()
}

/// `learned_verify` passes and the index returns exactly the table's rows.
fn check_table(c: &mut postgres::Client, table: &str, what: &str) {
    assert_verified(c, &format!("{table}_v"));
    let q = format!(
        "SELECT coalesce(string_agg(v::text, ',' ORDER BY v), '') FROM {table} WHERE v >= 0"
    );
    let rows = assert_index_matches_table(c, &format!("{table}_v"), &q, what);
    assert!(
        rows.iter().any(|r| !r.is_empty()),
        "{what}: the table is empty"
    );
}

/// SIGKILL between a split's two records: the halves are written, with the
/// full page's entries copied, but listed nowhere; the full page is closed.
/// After recovery the committed rows are found once (in the closed page),
/// rows go on spilling into the slice, and the next retrain frees the
/// halves.
#[test]
fn a_crash_between_a_split_s_records_keeps_the_split_page_s_rows() {
    let cluster = Cluster::start(
        "split_crash",
        &["restart_after_crash = on", "autovacuum = off"],
    );
    let mut c = cluster.connect();
    // Full run pages: rows inside the run spill into a bounded page of
    // their slice.
    common::run_each(
        &mut c,
        "CREATE TABLE sc (v int8);
         INSERT INTO sc SELECT g * 1000 + (hashint8(g) & 511) FROM generate_series(1, 150000) g;
         CREATE INDEX sc_v ON sc USING learned (v) WITH (retrain = off);
         INSERT INTO sc SELECT 1500998 FROM generate_series(1, 300);",
    );
    assert_eq!(common::delta_stats(&mut c, "sc_v"), (300, 1));
    common::pause_lock(&mut c, 0, "lock");
    let mut b = cluster.connect();
    let pid = common::backend_pid(&mut b);
    b.batch_execute("SET learneddb.debug_pause = 'split'")
        .unwrap();
    let filler = thread::spawn(move || {
        b.batch_execute("INSERT INTO sc SELECT 30000997 FROM generate_series(1, 1000)")
            .is_err()
    });
    common::wait_for_pause(&mut c, pid, "the split to pause between its records");
    let mut c = kill_and_recover(&cluster, c, pid, filler);
    check_table(&mut c, "sc", "after the crash");
    let spilled = "SELECT count(*) FROM sc WHERE v = 1500998";
    assert_eq!(common::texts(&mut c, spilled), ["300"]);
    // The slice takes rows again (a new page: the closed one takes none).
    common::run_each(
        &mut c,
        "INSERT INTO sc SELECT 1500998 FROM generate_series(1, 200);
         INSERT INTO sc SELECT 30000997 FROM generate_series(1, 600);",
    );
    check_table(&mut c, "sc", "rows spilled after the crash");
    assert_eq!(common::texts(&mut c, spilled), ["500"]);
    c.query_one("SELECT learned_retrain('sc_v')", &[]).unwrap();
    check_table(&mut c, "sc", "the retrain after the crash");
    assert_eq!(common::delta_stats(&mut c, "sc_v").0, 0);
}

/// A page a retrain wrote and nothing WAL-logged yet (it failed first) can
/// be torn by an operating system crash. Its block goes to the free list,
/// and the next retrain writes over it without reading it: a read refuses
/// the page, and every retrain would then fail on it.
#[test]
fn a_retrain_writes_over_a_torn_block_a_failed_retrain_left() {
    let cluster = Cluster::start("torn_free", &["autovacuum = off"]);
    let mut c = cluster.connect();
    common::run_each(
        &mut c,
        "CREATE TABLE tf (v int8);
         INSERT INTO tf SELECT hashint8(g) % 1000000 FROM generate_series(1, 20000) g;
         CREATE INDEX tf_v ON tf USING learned (v) WITH (retrain = off);
         INSERT INTO tf SELECT hashint8(g) % 1000000 FROM generate_series(20001, 22000) g;",
    );
    let blocks = |c: &mut postgres::Client| -> u64 {
        common::texts(c, "SELECT pg_relation_size('tf_v') / 8192")[0]
            .parse()
            .unwrap()
    };
    let before = blocks(&mut c);
    c.batch_execute("SET learneddb.debug_pause = 'write!'")
        .unwrap();
    let failed = c
        .query_one("SELECT learned_retrain('tf_v')", &[])
        .unwrap_err();
    assert!(
        common::db_message(&failed).contains("failing at write"),
        "{failed}"
    );
    common::run_each(&mut c, "RESET learneddb.debug_pause; CHECKPOINT");
    let after = blocks(&mut c);
    assert!(after > before + 1, "the failed retrain added no blocks");
    let path = common::texts(&mut c, "SELECT pg_relation_filepath('tf_v')").remove(0);
    drop(c);
    cluster.stop("fast");
    // The first block the failed retrain wrote, torn: no valid page header.
    common::overwrite(
        &cluster.dir.join("data").join(path),
        before * 8192,
        &[0x5a; 8192],
    );
    cluster.restart();
    let mut c = cluster.connect();
    assert_eq!(common::retrain_path(&mut c, "tf_v"), "merge");
    check_table(&mut c, "tf", "the retrain over the torn block");
    // It wrote where the failed one had, the torn block among them.
    assert_eq!(blocks(&mut c), after, "the retrain added blocks");
}

/// A retrain's pages carry no LSN until it logs them whole, so the buffer
/// manager may write one out at any time: before the retrain writes into
/// blocks it took from the free list, the records that freed and took them
/// are flushed, or a crash could replay a generation that still owns a block
/// already overwritten on disk.
#[test]
fn a_retrain_flushes_the_wal_before_it_writes_into_blocks_it_took() {
    let cluster = Cluster::start("flush_taken", &["autovacuum = off"]);
    let mut c = cluster.connect();
    let key = common::RANDOM_KEY;
    common::run_each(
        &mut c,
        &format!(
            "CREATE EXTENSION pageinspect;
             CREATE TABLE tw (v int8);
             INSERT INTO tw SELECT {key} FROM generate_series(1, 20000) g;
             CREATE INDEX tw_v ON tw USING learned (v) WITH (retrain = off);
             INSERT INTO tw SELECT {key} FROM generate_series(20001, 24000) g;
             SELECT learned_retrain('tw_v');
             INSERT INTO tw SELECT {key} FROM generate_series(24001, 28000) g;"
        ),
    );
    let pages = |c: &mut postgres::Client, column: &str| -> i64 {
        common::texts(
            c,
            &format!("SELECT {column}::text FROM learned_index_stats('tw_v')"),
        )[0]
        .parse()
        .unwrap()
    };
    let retained = pages(&mut c, "retained_pages");
    common::pause_lock(&mut c, 0, "lock");
    // It retires the first generation, takes some of its blocks and writes
    // there.
    let retrainer = common::start_paused_retrain(&mut c, cluster.connect(), "write", "tw_v");
    assert!(pages(&mut c, "free_pages") < retained, "no block was taken");
    // The metapage's last record (the blocks taken, noted pending) is flushed.
    let flushed = "SELECT (pg_current_wal_flush_lsn() >= lsn)::text
                     FROM page_header(get_raw_page('tw_v', 0))";
    assert_eq!(common::texts(&mut c, flushed), ["true"]);
    common::pause_lock(&mut c, 0, "unlock");
    retrainer.join().unwrap();
    check_table(&mut c, "tw", "after the retrain");
}
