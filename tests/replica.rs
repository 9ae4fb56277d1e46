//! Physical replication: a hot standby replays the Generic WAL of a build,
//! inserts, VACUUM, a retrain and a REINDEX, and its copy of the index passes
//! `learned_verify` and answers like the primary.

mod common;

use common::{assert_verified, Cluster};
use std::process::Command;
use std::time::{Duration, Instant};

/// A primary ready for standbys, with `extra` settings.
fn start_primary(name: &str, extra: &[&str]) -> Cluster {
    let conf = [&["wal_level = replica", "max_wal_senders = 4"], extra].concat();
    Cluster::start(name, &conf)
}

/// A standby of `primary`, made with pg_basebackup.
struct Standby {
    dir: std::path::PathBuf,
    port: u16,
}

impl Standby {
    fn start(primary: &Cluster) -> Standby {
        let dir = primary.dir.with_file_name(format!(
            "{}-standby",
            primary.dir.file_name().unwrap().to_string_lossy()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sock")).unwrap();
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        let data = dir.join("data");
        let sock = primary.dir.join("sock");
        let basebackup = common::pg_bin_for(common::PG_MAJOR).join("pg_basebackup");
        common::as_postgres(
            &dir,
            &[
                basebackup.to_str().unwrap(),
                "-D",
                data.to_str().unwrap(),
                "-h",
                sock.to_str().unwrap(),
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        );
        let port = primary.port + 1;
        let conf = format!(
            "port = {port}\nunix_socket_directories = '{}'\nhot_standby = on\n",
            dir.join("sock").display()
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut f, conf.as_bytes()).unwrap();
        let ok = common::cluster_script()
            .arg("start")
            .arg(&dir)
            .arg(port.to_string())
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "{}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        Standby { dir, port }
    }

    fn connect(&self) -> postgres::Client {
        postgres::Config::new()
            .host_path(self.dir.join("sock"))
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect(postgres::NoTls)
            .unwrap()
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = common::cluster_script().arg("stop").arg(&self.dir).status();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn wait_for_replay(primary: &mut postgres::Client, standby: &mut postgres::Client) {
    // The insert position: the end of everything written, flushed or not
    // (VACUUM commits without flushing its last records).
    let lsn: String = primary
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .unwrap()
        .get(0);
    let start = Instant::now();
    loop {
        let caught_up: bool = standby
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .unwrap()
            .get(0);
        if caught_up {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "standby did not catch up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn standby_replays_the_index() {
    // With wal_consistency_checking the standby compares every page a Generic
    // WAL record touches with the primary's image of it: the records an
    // insert builds itself must replay to the same bytes.
    let primary = start_primary("replica", &["wal_consistency_checking = 'generic'"]);
    let mut p = primary.connect();
    p.batch_execute(
        "CREATE TABLE t (id serial, v timestamptz);
         INSERT INTO t (v) SELECT TIMESTAMPTZ '2025-01-01 00:00+00' + g * INTERVAL '1 second' FROM generate_series(1, 20000) g;",
    )
    .unwrap();
    let standby = Standby::start(&primary);
    let mut s = standby.connect();
    // Rows inside the run's range spill to bounded delta pages once the run
    // pages are full, enough of them to fill and halve some.
    p.batch_execute(
        "CREATE INDEX t_v ON t USING learned (v);
         INSERT INTO t (v) SELECT TIMESTAMPTZ '2025-01-01 00:00+00' + (hashint4(g) & 16383) * INTERVAL '1 second' FROM generate_series(1, 8000) g;
         INSERT INTO t (v) VALUES (NULL), ('infinity');
         DELETE FROM t WHERE id % 5 = 0;",
    )
    .unwrap();
    p.batch_execute("VACUUM t").unwrap();
    p.batch_execute("INSERT INTO t (v) SELECT TIMESTAMPTZ '2026-01-01 00:00+00' + g * INTERVAL '1 minute' FROM generate_series(1, 1000) g").unwrap();
    wait_for_replay(&mut p, &mut s);

    let check = |c: &mut postgres::Client| -> (i64, i64, Vec<String>) {
        c.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
            .unwrap();
        let range: i64 = c
            .query_one("SELECT count(*) FROM t WHERE v BETWEEN '2025-01-01 01:00+00' AND '2025-01-01 05:00+00'", &[])
            .unwrap()
            .get(0);
        let nulls: i64 = c
            .query_one("SELECT count(*) FROM t WHERE v IS NULL", &[])
            .unwrap()
            .get(0);
        let last: Vec<String> = c
            .query(
                "SELECT v::text FROM t WHERE v IS NOT NULL ORDER BY v DESC LIMIT 3",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_verified(c, "t_v");
        (range, nulls, last)
    };
    let on_primary = check(&mut p);
    let on_standby = check(&mut s);
    assert_eq!(on_primary, on_standby);
    assert!(on_primary.0 > 10_000, "{on_primary:?}");

    // A retrain (a new generation and the switch to it) is replayed, and so
    // is VACUUM of both generations afterwards.
    p.batch_execute("SELECT learned_retrain('t_v')").unwrap();
    p.batch_execute("DELETE FROM t WHERE id % 7 = 0").unwrap();
    p.batch_execute("VACUUM t").unwrap();
    wait_for_replay(&mut p, &mut s);
    let retrained = check(&mut p);
    assert_eq!(check(&mut s), retrained);
    let generation = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT generation FROM learned_index_stats('t_v')", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(generation(&mut s), 2);

    // A REINDEX is replayed too.
    p.batch_execute("REINDEX INDEX t_v").unwrap();
    wait_for_replay(&mut p, &mut s);
    assert_eq!(check(&mut s), retrained);
}

/// Partial merges are replayed: the standby's copy of each generation, which
/// shares the run pages before and after the rewritten segment with the one
/// before it, answers as the primary's does and verifies, and so does its
/// copy after VACUUM retired the segments replaced. With
/// wal_consistency_checking every Generic WAL page replays to the primary's
/// bytes.
#[test]
fn standby_replays_partial_merges() {
    let primary = start_primary("replica_partial", &["wal_consistency_checking = 'generic'"]);
    let mut p = primary.connect();
    let key = common::RANDOM_KEY;
    p.batch_execute(&format!(
        "CREATE TABLE t (id serial, k int8);
         INSERT INTO t (k) SELECT {key} FROM generate_series(1, 250000) g;
         CREATE INDEX t_k ON t USING learned (k);"
    ))
    .unwrap();
    let standby = Standby::start(&primary);
    let mut s = standby.connect();
    let check = |c: &mut postgres::Client| -> Vec<String> {
        c.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
            .unwrap();
        // Eighteen slices of the key range, each a rescan of the index.
        let mut answers = rows(
            c,
            "SELECT string_agg(x, ' ' ORDER BY g) FROM generate_series(0, 17) g,
               LATERAL (SELECT count(*) || ':' || coalesce(sum(k % 1000003), 0) AS x FROM t
                         WHERE k BETWEEN (g - 9) * 1000000000000000000
                                     AND (g - 9) * 1000000000000000000 + 999999999999999999) s",
        );
        answers.extend(rows(c, "SELECT count(*)::text FROM t WHERE k IS NULL"));
        assert_verified(c, "t_k");
        answers
    };
    for round in 0..3 {
        p.batch_execute(&format!(
            "INSERT INTO t (k) SELECT CASE WHEN g % 100 = 0 THEN NULL ELSE {key} END
               FROM generate_series({from}, {from} + 6000) g;
             DELETE FROM t WHERE id % 31 = {round};",
            from = 1_000_000 + round * 10_000
        ))
        .unwrap();
        p.batch_execute("VACUUM t").unwrap();
        let path = common::retrain_path(&mut p, "t_k");
        assert_eq!(path, "partial", "round {round}");
        wait_for_replay(&mut p, &mut s);
        let on_primary = check(&mut p);
        assert_eq!(check(&mut s), on_primary, "round {round}");
    }
    p.batch_execute("VACUUM t").unwrap();
    wait_for_replay(&mut p, &mut s);
    assert_eq!(check(&mut s), check(&mut p), "after retiring");
}

/// Rows of a one-column query, as text.
fn rows(c: &mut postgres::Client, sql: &str) -> Vec<String> {
    common::texts(c, sql)
}

/// The restart rule (DESIGN.md section 3): a standby query gets no recovery
/// conflict from a retrain, so its scan can outlive two retrains and meet
/// blocks of its generation that a newer one reused. It starts over from the
/// metapage after the entry it returned last and stays exact: a scrollable
/// plain index scan (forward, then backward, then forward again), a backward
/// scan, and a scan of NULLs spread over several NULL pages, each paused in a REPEATABLE READ transaction on the standby while
/// the primary retrains three times.
#[test]
fn standby_scans_start_over_after_recycling() {
    let primary = start_primary("replica_restart", &["autovacuum = off"]);
    let mut p = primary.connect();
    common::run_each(
        &mut p,
        "CREATE TABLE t (id serial, k int8);
         INSERT INTO t (k) SELECT 3 * g FROM generate_series(1, 60000) g;
         INSERT INTO t (k) SELECT NULL FROM generate_series(1, 4000);
         -- Full pages, after merges too: the keys inserted among the run's
         -- spill to the delta, so that every retrain below is a merge.
         CREATE INDEX t_k ON t USING learned (k) WITH (fillfactor = 100);
         INSERT INTO t (k) SELECT 3 * g + 1 FROM generate_series(1, 60000, 11) g;
         INSERT INTO t (k) SELECT NULL FROM generate_series(1, 300);
         VACUUM t",
    );
    let standby = Standby::start(&primary);
    let mut s = standby.connect();
    wait_for_replay(&mut p, &mut s);

    s.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    let plain = "SELECT k || ':' || id AS v FROM t WHERE k >= 0 ORDER BY k";
    let only = "SELECT k::text AS v FROM t WHERE k BETWEEN 30000 AND 150000 ORDER BY k DESC";
    let nulls = "SELECT id::text FROM t WHERE k IS NULL";
    s.batch_execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off; SET LOCAL enable_bitmapscan = off")
        .unwrap();
    let expect_plain = rows(&mut s, plain);
    let expect_only = rows(&mut s, only);
    let mut expect_nulls = rows(&mut s, nulls);
    expect_nulls.sort();
    s.batch_execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = on; SET LOCAL enable_indexonlyscan = on")
        .unwrap();
    for (q, node) in [
        (plain, "Index Scan using t_k"),
        // No index-only scans on a standby (amcanreturn): a backward scan.
        (only, "Index Scan Backward using t_k"),
        (nulls, "Index Scan using t_k"),
    ] {
        let plan = rows(&mut s, &format!("EXPLAIN (COSTS OFF) {q}")).join("\n");
        assert!(plan.contains(node), "{plan}");
    }
    s.batch_execute(&format!(
        "DECLARE c_plain SCROLL CURSOR FOR {plain};
         DECLARE c_only CURSOR FOR {only};
         DECLARE c_nulls CURSOR FOR {nulls}"
    ))
    .unwrap();
    let mut got_plain = rows(&mut s, "FETCH 1000 FROM c_plain");
    let mut got_only = rows(&mut s, "FETCH 500 FROM c_only");
    let mut got_nulls = rows(&mut s, "FETCH 1500 FROM c_nulls");

    // Three retrains: the third is written into the blocks of the
    // generation the standby's scans are reading.
    for round in 0..3 {
        p.execute(
            "INSERT INTO t (k) SELECT 3 * g + 2 FROM generate_series($1::int, 60000, 7) g",
            &[&round],
        )
        .unwrap();
        p.batch_execute("INSERT INTO t (k) SELECT NULL FROM generate_series(1, 100)")
            .unwrap();
        let path = common::retrain_path(&mut p, "t_k");
        assert_eq!(path, "merge");
    }
    wait_for_replay(&mut p, &mut s);

    let back = rows(&mut s, "FETCH BACKWARD 10 FROM c_plain");
    let want_back: Vec<String> = expect_plain[989..999].iter().rev().cloned().collect();
    assert_eq!(back, want_back, "stepping back after the restart");
    got_plain.truncate(990);
    got_plain.extend(rows(&mut s, "FETCH ALL FROM c_plain"));
    got_only.extend(rows(&mut s, "FETCH ALL FROM c_only"));
    got_nulls.extend(rows(&mut s, "FETCH ALL FROM c_nulls"));
    s.batch_execute("COMMIT").unwrap();
    got_nulls.sort();
    assert!(
        got_plain == expect_plain,
        "the plain scan is not exact across the restart"
    );
    assert!(
        got_only == expect_only,
        "the backward scan is not exact across the restart"
    );
    assert!(
        got_nulls == expect_nulls,
        "the NULL scan is not exact across the restart"
    );
    let generation: i64 = s
        .query_one("SELECT generation FROM learned_index_stats('t_k')", &[])
        .unwrap()
        .get(0);
    assert_eq!(generation, 4);
    assert_verified(&mut s, "t_k");
}

/// On a standby, replay of VACUUM does not wait for a scan's pin (Generic WAL
/// redo takes no cleanup lock). A cursor reads a batch of entries with replay
/// paused; replay then removes some of those rows' entries, frees their heap
/// slots and marks the pages all-visible; the cursor must still not return
/// them. An index-only scan would (it trusts the visibility map), so a
/// standby plans a plain index scan, which checks each row in the heap.
#[test]
fn standby_cursors_do_not_return_rows_vacuum_removed_under_them() {
    let primary = start_primary("replica_vacuum", &["autovacuum = off"]);
    let mut p = primary.connect();
    common::run_each(
        &mut p,
        "CREATE TABLE t (id int, k int8);
         INSERT INTO t SELECT g, g FROM generate_series(1, 20000) g;
         CREATE INDEX t_k ON t USING learned (k);
         VACUUM t",
    );
    let standby = Standby::start(&primary);
    let mut s = standby.connect();
    // Rows the cursor's first batch (one run page, from k = 1) holds, on heap
    // pages other than the one its first row is on.
    p.batch_execute("DELETE FROM t WHERE k BETWEEN 400 AND 800 AND k % 2 = 0")
        .unwrap();
    wait_for_replay(&mut p, &mut s);
    s.batch_execute("SELECT pg_wal_replay_pause()").unwrap();
    common::wait_for("replay to pause", 30, || {
        let state: String = s
            .query_one("SELECT pg_get_wal_replay_pause_state()", &[])
            .unwrap()
            .get(0);
        state == "paused"
    });
    // Removes the deleted rows' entries, frees their slots, sets the map.
    p.batch_execute("VACUUM t").unwrap();

    let query = "SELECT k FROM t WHERE k BETWEEN 1 AND 6000 ORDER BY k";
    s.batch_execute(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SET LOCAL enable_seqscan = off; \
         SET LOCAL enable_bitmapscan = off",
    )
    .unwrap();
    let plan = common::texts(&mut s, &format!("EXPLAIN (COSTS OFF) {query}")).join("\n");
    assert!(plan.contains("Index Scan using t_k"), "{plan}");
    s.batch_execute(&format!("DECLARE c CURSOR FOR {query}"))
        .unwrap();
    let mut got = common::texts(&mut s, "FETCH 1 FROM c");
    s.batch_execute("SELECT pg_wal_replay_resume()").unwrap();
    // Replay goes on while the cursor holds its page.
    let mut other = standby.connect();
    wait_for_replay(&mut p, &mut other);
    got.extend(common::texts(&mut s, "FETCH ALL FROM c"));
    s.batch_execute("COMMIT").unwrap();
    let want: Vec<String> = (1..=6000i64)
        .filter(|k| !((400..=800).contains(k) && k % 2 == 0))
        .map(|k| k.to_string())
        .collect();
    assert!(
        got == want,
        "the cursor returned {} rows, {} expected",
        got.len(),
        want.len()
    );
    assert_verified(&mut s, "t_k");
}

/// Retiring a generation frees the delta pages merged into the next one's
/// run, and nothing holds that back for a standby's snapshot: the primary
/// retires as soon as its own transactions allow (here VACUUM, right after
/// the retrain). Two nested loops on the standby, paused in a REPEATABLE
/// READ transaction, read the generation being retired: one had read the
/// delta directory before (the delta pages it goes on reading are freed
/// under it), one reads it only after (the metapage no longer lists its
/// generation). Both start over from the current generation and find every
/// row; without the checks they found none of the merged rows.
#[test]
fn standby_scans_start_over_when_their_generation_is_retired() {
    scans_across_a_replayed_retirement("replica_retire", false);
}

/// As above, but the standby is promoted after replaying the retirement and
/// before the scans go on: their sessions survive the promotion, and the
/// scans, which read the metapage during recovery, still start over (they
/// stopped checking once recovery had ended, and missed the merged rows).
#[test]
fn standby_scans_go_on_checking_after_a_promotion() {
    scans_across_a_replayed_retirement("replica_promote", true);
}

fn scans_across_a_replayed_retirement(name: &str, promote: bool) {
    let primary = start_primary(name, &["autovacuum = off"]);
    let mut p = primary.connect();
    common::run_each(
        &mut p,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT 3 * g FROM generate_series(1, 60000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         -- Above the run: delta pages, merged by the append below.
         INSERT INTO t SELECT 180000 + g FROM generate_series(1, 6000) g;
         -- Probes 1-200 look up run keys and delta keys in turn, 201-400
         -- only run keys, then 401-600 only delta keys.
         CREATE TABLE probes AS
           SELECT i, CASE WHEN i <= 200 AND i % 2 = 0 THEN 180000 + i * 29
                          WHEN i > 400 THEN 180000 + i * 9
                          ELSE i * 297 END AS k
           FROM generate_series(1, 600) i;
         VACUUM ANALYZE t; ANALYZE probes",
    );
    let standby = Standby::start(&primary);
    let mut s = standby.connect();
    wait_for_replay(&mut p, &mut s);
    let nested = |from: i32, to: i32| {
        format!(
            "SELECT p.i, (SELECT count(*) FROM t WHERE t.k = p.k) AS n FROM probes p
              WHERE p.i BETWEEN {from} AND {to} ORDER BY p.i"
        )
    };
    common::run_each(
        &mut s,
        "BEGIN ISOLATION LEVEL REPEATABLE READ;
         SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off",
    );
    let plan = rows(&mut s, &format!("EXPLAIN (COSTS OFF) {}", nested(1, 200))).join("\n");
    assert!(plan.contains("Index Scan using t_k"), "{plan}");
    s.batch_execute(&format!(
        "DECLARE read_before CURSOR FOR {};
         DECLARE read_after CURSOR FOR {}",
        nested(1, 200),
        nested(201, 600)
    ))
    .unwrap();
    let count = |rows: Vec<postgres::Row>| -> Vec<i64> { rows.iter().map(|r| r.get(1)).collect() };
    let mut before = count(s.query("FETCH 20 FROM read_before", &[]).unwrap());
    let mut after = count(s.query("FETCH 20 FROM read_after", &[]).unwrap());

    let path = common::retrain_path(&mut p, "t_k");
    assert_eq!(path, "append");
    p.batch_execute("VACUUM t").unwrap();
    let retained: i64 = p
        .query_one("SELECT retained_pages FROM learned_index_stats('t_k')", &[])
        .unwrap()
        .get(0);
    assert_eq!(retained, 0, "the primary did not retire");
    wait_for_replay(&mut p, &mut s);
    if promote {
        let mut other = standby.connect();
        let promoted: bool = other
            .query_one("SELECT pg_promote(true, 60)", &[])
            .unwrap()
            .get(0);
        assert!(promoted, "the standby was not promoted");
        let recovering: bool = s
            .query_one("SELECT pg_is_in_recovery()", &[])
            .unwrap()
            .get(0);
        assert!(!recovering, "the paused session is still in recovery");
    }

    before.extend(count(s.query("FETCH ALL FROM read_before", &[]).unwrap()));
    after.extend(count(s.query("FETCH ALL FROM read_after", &[]).unwrap()));
    s.batch_execute("COMMIT").unwrap();
    let missing = |n: &[i64]| n.iter().filter(|&&c| c != 1).count();
    assert_eq!(before.len(), 200);
    assert_eq!(after.len(), 400);
    assert_eq!(
        missing(&before),
        0,
        "rows missed after reading the directory"
    );
    assert_eq!(
        missing(&after),
        0,
        "rows missed reading the directory after"
    );
    assert_verified(&mut s, "t_k");
}

/// A retrain adds blocks at the end of the index and notes them in the
/// metapage; if it fails before it logs the pages it wrote there, VACUUM
/// puts those blocks on the free list. The standby's index must reach over
/// them too: promoted without them, it listed blocks past its end as free,
/// added its next delta page at the first of them, and its next retrain
/// wrote a run page over that one.
#[test]
fn a_promoted_standby_keeps_the_blocks_a_failed_retrain_left() {
    let primary = start_primary("replica_failed_retrain", &["autovacuum = off"]);
    let mut p = primary.connect();
    common::run_each(
        &mut p,
        "CREATE TABLE t (id bigserial, k int8);
         INSERT INTO t (k) SELECT g * 10 FROM generate_series(1, 100000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         INSERT INTO t (k) SELECT 1000000 + g FROM generate_series(1, 20000) g;",
    );
    let standby = Standby::start(&primary);
    let mut s = standby.connect();
    // The retrain writes its generation, then fails before logging it.
    p.batch_execute("SET learneddb.debug_pause = 'write!'")
        .unwrap();
    let failed = p
        .query_one("SELECT path FROM learned_retrain('t_k')", &[])
        .unwrap_err();
    assert!(
        common::db_message(&failed).contains("failing at write"),
        "{failed}"
    );
    common::run_each(&mut p, "RESET learneddb.debug_pause; VACUUM t;");
    let free = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT free_pages FROM learned_index_stats('t_k')", &[])
            .unwrap()
            .get(0)
    };
    assert!(free(&mut p) > 0, "VACUUM freed the blocks the retrain took");
    wait_for_replay(&mut p, &mut s);
    assert_eq!(free(&mut s), free(&mut p));
    assert_verified(&mut s, "t_k");

    let promoted: bool = s
        .query_one("SELECT pg_promote(true, 60)", &[])
        .unwrap()
        .get(0);
    assert!(promoted, "the standby was not promoted");
    // Rows above the run open delta pages; the retrain takes the free
    // blocks for its generation.
    common::run_each(
        &mut s,
        "INSERT INTO t (k) SELECT 2000000 + g FROM generate_series(1, 20000) g",
    );
    let q = "SELECT count(*)::text || ' ' || sum(id # k)::text FROM t WHERE k >= 0";
    common::assert_index_matches_table(&mut s, "t_k", q, "before the retrain");
    s.query_one("SELECT path FROM learned_retrain('t_k')", &[])
        .unwrap();
    common::assert_index_matches_table(&mut s, "t_k", q, "after the retrain");
    assert_verified(&mut s, "t_k");
}

/// Starts `learned_verify('t_k')` in standby session `s`, paused after it
/// read the directory, before the delta pages, on the pause lock `hold`
/// takes; the thread yields its result, or the error's SQLSTATE and
/// message, once `hold` lets go.
fn paused_verify(
    hold: &mut postgres::Client,
    mut s: postgres::Client,
) -> std::thread::JoinHandle<Result<bool, (String, String)>> {
    common::pause_lock(hold, 0, "lock");
    let pid = common::backend_pid(&mut s);
    s.batch_execute("SET learneddb.debug_pause = 'verify_delta'")
        .unwrap();
    let verify = std::thread::spawn(move || {
        s.query_one("SELECT learned_verify('t_k')", &[])
            .map(|r| r.get::<_, bool>(0))
            .map_err(|e| (common::sqlstate(&e), common::db_message(&e)))
    });
    common::wait_for_pause(hold, pid, "verify to pause before the delta");
    verify
}

/// `learned_verify` on a standby, whose snapshot nothing on the primary
/// waits for: the delta pages it listed are freed (their generation
/// retired, replayed) before it reads them. That is a serialization failure
/// to retry, as for a scan that cannot start over, not corruption: the rows
/// it found missing are in the next generation's run.
#[test]
fn verify_on_a_standby_reports_a_retired_generation_as_a_conflict() {
    let primary = start_primary("replica_verify_retired", &["autovacuum = off"]);
    let mut p = primary.connect();
    common::run_each(
        &mut p,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g * 10 FROM generate_series(1, 50000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         INSERT INTO t SELECT 1000000 + g FROM generate_series(1, 5000) g;",
    );
    let standby = Standby::start(&primary);
    let (mut s, mut hold) = (standby.connect(), standby.connect());
    wait_for_replay(&mut p, &mut s);
    let verify = paused_verify(&mut hold, s);
    // The primary merges the delta, then retires that generation (the next
    // retrain's first step): the delta pages verify listed are freed.
    common::run_each(
        &mut p,
        "SELECT learned_retrain('t_k');
         INSERT INTO t SELECT 2000000 + g FROM generate_series(1, 5000) g;
         SELECT learned_retrain('t_k');",
    );
    let retained: i64 = p
        .query_one("SELECT retained_pages FROM learned_index_stats('t_k')", &[])
        .unwrap()
        .get(0);
    wait_for_replay(&mut p, &mut hold);
    common::pause_lock(&mut hold, 0, "unlock");
    let (code, message) = verify.join().unwrap().expect_err("verify read freed pages");
    assert_eq!(code, "40001", "{message} (retained: {retained})");
    assert_verified(&mut hold, "t_k");
}

/// A delta page a standby's cursor or `learned_verify` listed is freed and
/// reused under the tag it was listed with: opened while a retrain was
/// paused after its freeze, it is tagged with the next generation; the
/// retrain moves its rows into that generation's run and lowers its tag;
/// VACUUM retires the generation before and frees the page; the next page
/// an append opens is that one, tagged with the next generation again. The
/// tag cannot tell; the metapage, read after the pages, says the
/// generation was retired. The cursor starts over (and finds the rows), and
/// verify reports a conflict, not "row ... is not in the index".
#[test]
fn a_standby_notices_a_delta_page_reused_under_the_tag_it_was_listed_with() {
    let primary = start_primary("replica_reused_tag", &["autovacuum = off"]);
    let mut p = primary.connect();
    common::run_each(
        &mut p,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g * 10 FROM generate_series(1, 50000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         DELETE FROM t WHERE k > 350000;
         VACUUM t;",
    );
    let standby = Standby::start(&primary);
    // With 30% of the run dead, the retrain merges: it rewrites every run
    // page, so it moves rows of pages opened since its freeze into them.
    common::pause_lock(&mut p, 0, "lock");
    let retrainer = common::start_paused_retrain(&mut p, primary.connect(), "write", "t_k");
    // Inside the run, during the retrain: a bounded delta page, tagged with
    // the next generation.
    common::run_each(
        &mut p,
        "INSERT INTO t SELECT g * 10 + 5 FROM generate_series(1000, 1019) g",
    );
    let (mut cur, s, mut hold) = (standby.connect(), standby.connect(), standby.connect());
    wait_for_replay(&mut p, &mut hold);
    let fetch = |c: &mut postgres::Client, sql: &str| c.query(sql, &[]).unwrap().len();
    common::run_each(
        &mut cur,
        "SET enable_seqscan = off; SET enable_bitmapscan = off;
         BEGIN ISOLATION LEVEL REPEATABLE READ;
         DECLARE c SCROLL CURSOR FOR SELECT k FROM t WHERE k BETWEEN 10000 AND 11000;",
    );
    assert_eq!(fetch(&mut cur, "FETCH ALL FROM c"), 121);
    let verify = paused_verify(&mut hold, s);
    common::pause_lock(&mut p, 0, "unlock");
    assert_eq!(retrainer.join().unwrap(), "merge");
    let blocks = "SELECT (pg_relation_size('t_k') / 8192)::text";
    common::run_each(&mut p, "VACUUM t");
    let before = common::texts(&mut p, blocks);
    common::run_each(&mut p, "INSERT INTO t VALUES (100000000)");
    assert_eq!(
        common::texts(&mut p, blocks),
        before,
        "the append added a page rather than reuse the freed one"
    );
    wait_for_replay(&mut p, &mut hold);
    // A rewind rescans with the delta pages the cursor listed.
    assert_eq!(fetch(&mut cur, "FETCH ABSOLUTE 0 FROM c"), 0);
    assert_eq!(fetch(&mut cur, "FETCH ALL FROM c"), 121);
    common::pause_lock(&mut hold, 0, "unlock");
    let (code, message) = verify
        .join()
        .unwrap()
        .expect_err("verify read a reused page");
    assert_eq!(code, "40001", "{message}");
    assert_verified(&mut hold, "t_k");
}

/// A retrain carries delta pages over to the next generation (raising their
/// tag) and absorbs others (lowering it); the generation before still reads
/// them as they are. A standby `learned_verify` that listed them before
/// goes on and passes: the tags changed, but nothing was freed.
#[test]
fn verify_on_a_standby_reads_on_across_retagged_delta_pages() {
    let primary = start_primary("replica_retagged", &["autovacuum = off"]);
    let mut p = primary.connect();
    let key = common::RANDOM_KEY;
    common::run_each(
        &mut p,
        &format!(
            "CREATE TABLE t (k int8);
             INSERT INTO t SELECT {key} FROM generate_series(1, 250000) g;
             CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
             INSERT INTO t SELECT {key} FROM generate_series(250001, 253000) g;"
        ),
    );
    let standby = Standby::start(&primary);
    let (s, mut hold) = (standby.connect(), standby.connect());
    wait_for_replay(&mut p, &mut hold);
    let verify = paused_verify(&mut hold, s);
    // One segment merged, the bounded pages of the others carried over.
    assert_eq!(common::retrain_path(&mut p, "t_k"), "partial");
    wait_for_replay(&mut p, &mut hold);
    common::pause_lock(&mut hold, 0, "unlock");
    assert_eq!(verify.join().unwrap(), Ok(true));
}
