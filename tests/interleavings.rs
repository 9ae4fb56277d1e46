//! Deterministic interleavings of scans, inserts and VACUUM (DESIGN.md
//! section 3a). Each test orders its sessions explicitly: a cursor paused
//! between fetches, VACUUM observed waiting for a buffer pin or held in its
//! index phase by `vacuum_cost_delay`, a transaction left open, so that the
//! bad interleaving happens on every run.

mod common;

use common::{assert_verified, backend_pid, run_each, texts, wait_event, wait_for, Cluster};
use std::sync::Arc;
use std::thread;

fn cluster(name: &str) -> Arc<Cluster> {
    Arc::new(Cluster::start(name, &["autovacuum = off"]))
}

/// Whether VACUUM (backend `pid`) waits for a buffer pin in its index phase.
fn vacuum_waits_in_index_phase(admin: &mut postgres::Client, pid: i32) -> bool {
    admin
        .query_opt(
            "SELECT 1 FROM pg_stat_activity a JOIN pg_stat_progress_vacuum v USING (pid)
              WHERE pid = $1 AND wait_event = 'BufferPin' AND phase = 'vacuuming indexes'",
            &[&pid],
        )
        .unwrap()
        .is_some()
}

/// Runs `VACUUM t` in its own session and thread; returns its pid and handle.
/// INDEX_CLEANUP ON: with few dead rows VACUUM would otherwise skip the index.
fn start_vacuum(
    cluster: &Arc<Cluster>,
    settings: &str,
) -> (i32, thread::JoinHandle<Result<(), postgres::Error>>) {
    let mut v = cluster.connect();
    v.batch_execute(settings).unwrap();
    let pid = backend_pid(&mut v);
    (
        pid,
        thread::spawn(move || v.batch_execute("VACUUM (INDEX_CLEANUP ON) t")),
    )
}

/// One case of the index-only scan / VACUUM race: `setup` builds table `t`
/// (all-visible) and deletes one row; the cursor reads `query`, which must
/// return `expect` rows and never `deleted`. The first row the cursor fetches
/// lies on another, all-visible heap page, so the cursor pins no heap page
/// VACUUM must prune (about 185 rows fit a heap page).
struct Case {
    name: &'static str,
    setup: &'static str,
    query: &'static str,
    /// The deleted row's key; `None` when it cannot be told apart (NULL).
    deleted: Option<&'static str>,
    expect: usize,
}

const CASES: &[Case] = &[
    Case {
        name: "run page",
        setup: "CREATE TABLE t (id int, k int8) WITH (autovacuum_enabled = off);
                INSERT INTO t SELECT g, g FROM generate_series(1, 10000) g;
                CREATE INDEX t_k ON t USING learned (k);
                VACUUM (FREEZE, ANALYZE) t;
                DELETE FROM t WHERE k = 500;",
        query: "SELECT k FROM t WHERE k BETWEEN 300 AND 700",
        deleted: Some("500"),
        expect: 400,
    },
    Case {
        name: "delta page",
        setup: "CREATE TABLE t (id int, k int8) WITH (autovacuum_enabled = off);
                INSERT INTO t SELECT g, g FROM generate_series(1, 10000) g;
                CREATE INDEX t_k ON t USING learned (k);
                INSERT INTO t SELECT g, g FROM generate_series(20001, 21000) g;
                VACUUM (FREEZE, ANALYZE) t;
                DELETE FROM t WHERE k = 20800;",
        query: "SELECT k FROM t WHERE k BETWEEN 20100 AND 20900",
        deleted: Some("20800"),
        expect: 800,
    },
    Case {
        name: "NULL page",
        setup: "CREATE TABLE t (id int, k int8) WITH (autovacuum_enabled = off);
                INSERT INTO t SELECT g, CASE WHEN g % 100 = 0 THEN NULL ELSE g END FROM generate_series(1, 10000) g;
                CREATE INDEX t_k ON t USING learned (k);
                VACUUM (FREEZE, ANALYZE) t;
                DELETE FROM t WHERE id = 5000;",
        query: "SELECT k FROM t WHERE k IS NULL",
        deleted: None,
        expect: 99,
    },
];

/// An index-only scan holds the pin on the page whose entries it is
/// returning: VACUUM waits for it (as for a btree leaf) instead of removing
/// the entry, the heap tuple and then marking the heap page all-visible,
/// after which the scan's copy of the entry would return a deleted row.
#[test]
fn index_only_scans_keep_vacuum_off_their_pages() {
    let cluster = cluster("ios_pins");
    for case in CASES {
        let mut admin = cluster.connect();
        admin.batch_execute("DROP TABLE IF EXISTS t").unwrap();
        run_each(&mut admin, case.setup);

        let mut b = cluster.connect();
        b.batch_execute("BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            .unwrap();
        let plan = texts(&mut b, &format!("EXPLAIN (COSTS OFF) {}", case.query)).join("\n");
        assert!(
            plan.contains("Index Only Scan using t_k"),
            "{}: {plan}",
            case.name
        );
        b.batch_execute(&format!("DECLARE c CURSOR FOR {}", case.query))
            .unwrap();
        let mut got = texts(&mut b, "FETCH 1 FROM c");

        let (vpid, vacuum) = start_vacuum(&cluster, "SET vacuum_cost_delay = 0");
        // VACUUM either finishes (nothing protects the page) or waits for
        // the cursor's pin; either way it has done all it can before the
        // cursor reads on.
        wait_for("VACUUM to finish or wait for the pin", 60, || {
            vacuum.is_finished() || vacuum_waits_in_index_phase(&mut admin, vpid)
        });
        let waited = !vacuum.is_finished();
        got.extend(texts(&mut b, "FETCH ALL FROM c"));
        b.batch_execute("COMMIT").unwrap();
        vacuum.join().unwrap().unwrap();
        if let Some(deleted) = case.deleted {
            assert!(
                !got.iter().any(|k| k == deleted),
                "{}: the index-only scan returned deleted row {deleted}: {got:?}",
                case.name
            );
        }
        assert_eq!(got.len(), case.expect, "{}: {got:?}", case.name);
        assert!(
            waited,
            "{}: VACUUM did not wait for the index-only scan's pin",
            case.name
        );
        assert_verified(&mut admin, "t_k");
    }
}

/// A scrollable index-only cursor that steps back reads the page again, under
/// a pin: after VACUUM removed an entry from a run page the cursor had left,
/// the way back does not return it.
#[test]
fn backward_steps_read_the_page_again() {
    let cluster = cluster("ios_back");
    let mut admin = cluster.connect();
    // Run keys are even, 804 to a run page (the testing GUC caps what would
    // pack into one page): 2..1608 on the first, 1610.. on the next. 1000
    // (heap page 2) is deleted. Odd keys arrive later, into the delta (the
    // insert areas take a few) and onto new heap pages that are not
    // all-visible, so the cursor's heap fetches, and its heap pin, end up
    // there rather than on page 2.
    run_each(
        &mut admin,
        "CREATE TABLE t (id int, k int8) WITH (autovacuum_enabled = off);
         INSERT INTO t SELECT g, 2 * g FROM generate_series(1, 5000) g;
         SET learneddb.debug_page_entries = 804;
         CREATE INDEX t_k ON t USING learned (k) WITH (fillfactor = 100);
         VACUUM (FREEZE, ANALYZE) t;
         DELETE FROM t WHERE k = 1000;
         INSERT INTO t SELECT g, g FROM generate_series(1001, 2001, 2) g;",
    );
    let mut b = cluster.connect();
    b.batch_execute("BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
        .unwrap();
    let q = "SELECT k FROM t WHERE k BETWEEN 900 AND 2100";
    let plan = texts(
        &mut b,
        &format!("EXPLAIN (COSTS OFF) DECLARE c SCROLL CURSOR FOR {q}"),
    );
    assert!(
        plan[0].starts_with("Index Only Scan using t_k"),
        "a scrollable cursor needs no Material node: {plan:?}"
    );
    b.batch_execute(&format!("DECLARE c SCROLL CURSOR FOR {q}"))
        .unwrap();
    // Up to 1800, on the second run page: 451 even keys and 400 odd ones,
    // less the deleted 1000.
    let forward = texts(&mut b, "FETCH 850 FROM c");
    assert_eq!(forward.last().map(String::as_str), Some("1800"));
    let (vpid, vacuum) = start_vacuum(&cluster, "SET vacuum_cost_delay = 0");
    wait_for("VACUUM", 60, || {
        vacuum.is_finished() || vacuum_waits_in_index_phase(&mut admin, vpid)
    });
    // The cursor pins the second run page and the delta pages, neither of
    // which has anything to remove.
    assert!(
        vacuum.is_finished(),
        "VACUUM waited on a page the cursor had left"
    );
    vacuum.join().unwrap().unwrap();
    let removed: i64 = admin
        .query_one(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 't'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(removed, 0, "VACUUM did not remove row 1000");
    let back = texts(&mut b, "FETCH BACKWARD ALL FROM c");
    assert!(!back.iter().any(|k| k == "1000"), "{back:?}");
    assert_eq!(back.len(), 849, "{back:?}");
    assert_eq!(back.last().map(String::as_str), Some("900"));
    let again = texts(&mut b, "FETCH ALL FROM c");
    assert_eq!(again.len(), 1101);
    b.batch_execute("COMMIT").unwrap();
    assert_verified(&mut admin, "t_k");
}

/// A plain MVCC index scan copies its batch and drops the pin: a paused
/// cursor does not hold VACUUM up, and still returns exactly its rows.
#[test]
fn plain_index_scans_do_not_hold_vacuum() {
    let cluster = cluster("plain_pins");
    let mut admin = cluster.connect();
    run_each(&mut admin, CASES[0].setup);
    let mut b = cluster.connect();
    b.batch_execute("BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_indexonlyscan = off")
        .unwrap();
    let q = CASES[0].query;
    let plan = texts(&mut b, &format!("EXPLAIN (COSTS OFF) {q}")).join("\n");
    assert!(plan.contains("Index Scan using t_k"), "{plan}");
    b.batch_execute(&format!("DECLARE c CURSOR FOR {q}"))
        .unwrap();
    let mut got = texts(&mut b, "FETCH 1 FROM c");
    let (vpid, vacuum) = start_vacuum(&cluster, "SET vacuum_cost_delay = 0");
    wait_for("VACUUM", 60, || {
        vacuum.is_finished() || vacuum_waits_in_index_phase(&mut admin, vpid)
    });
    assert!(vacuum.is_finished(), "VACUUM waited for a plain index scan");
    vacuum.join().unwrap().unwrap();
    got.extend(texts(&mut b, "FETCH ALL FROM c"));
    b.batch_execute("COMMIT").unwrap();
    assert_eq!(got.len(), 400, "{got:?}");
    assert!(!got.contains(&"500".to_string()));
}

/// VACUUM reads the metapage when its index phase starts; inserts that add a
/// delta directory page while it works are not damage. VACUUM is held in its
/// index phase by `vacuum_cost_delay` (it sleeps at every page) while another
/// session inserts enough rows to open a second directory page.
#[test]
fn vacuum_accepts_a_directory_that_grew() {
    let cluster = cluster("vacuum_dir");
    let mut admin = cluster.connect();
    // 508 entries per delta page and 254 pages per directory page: 250 delta
    // pages fit one directory page; the 100 more inserted below need a second
    // (and would with the 339 entries per directory page of format 1 too).
    // The keys lie above the run, so that none goes to a run page's insert
    // area.
    run_each(
        &mut admin,
        "CREATE TABLE t (k int8) WITH (autovacuum_enabled = off);
         INSERT INTO t SELECT g * 10 FROM generate_series(1, 240000) g;
         CREATE INDEX t_k ON t USING learned (k);
         INSERT INTO t SELECT 2400001 + (hashint8(g) & 4194303) FROM generate_series(1, 250 * 508) g;
         VACUUM (FREEZE) t;
         DELETE FROM t WHERE k < 100;",
    );
    let pages: i64 = admin
        .query_one("SELECT delta_pages FROM learned_index_stats('t_k')", &[])
        .unwrap()
        .get(0);
    assert!((250..=251).contains(&pages), "{pages} delta pages");
    let (vpid, vacuum) = start_vacuum(
        &cluster,
        "SET vacuum_cost_delay = '20ms'; SET vacuum_cost_limit = 1",
    );
    wait_for("VACUUM's index phase", 120, || {
        let phase: Option<String> = admin
            .query_opt(
                "SELECT phase FROM pg_stat_progress_vacuum WHERE pid = $1",
                &[&vpid],
            )
            .unwrap()
            .map(|r| r.get(0));
        if vacuum.is_finished() {
            panic!("VACUUM ended before its index phase");
        }
        phase.as_deref() == Some("vacuuming indexes")
    });
    admin
        .batch_execute("INSERT INTO t SELECT 5 + 10 * g FROM generate_series(1, 100 * 508) g")
        .unwrap();
    let still: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_progress_vacuum WHERE pid = $1 AND phase = 'vacuuming indexes'",
            &[&vpid],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        still, 1,
        "VACUUM left its index phase before the inserts ended"
    );
    vacuum
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("VACUUM failed: {e}"));
    assert_verified(&mut admin, "t_k");
}

/// `EXCLUDE USING learned (k WITH =)` works: its checks scan with a dirty
/// snapshot, see entries of transactions still in progress, and wait for them.
#[test]
fn exclusion_constraints_hold_under_concurrent_inserts() {
    let cluster = Arc::new(Cluster::start(
        "exclude",
        &["autovacuum = off", "deadlock_timeout = '20ms'"],
    ));
    let mut admin = cluster.connect();
    admin
        .batch_execute(
            "CREATE TABLE t (k int8, who int);
             INSERT INTO t SELECT g * 2, 0 FROM generate_series(1, 2000) g;
             ALTER TABLE t ADD CONSTRAINT t_k_excl EXCLUDE USING learned (k WITH =);",
        )
        .unwrap();
    // The run is checked too: an existing even key is refused at once.
    let err = admin
        .batch_execute("INSERT INTO t VALUES (10, 0)")
        .unwrap_err();
    assert_eq!(common::sqlstate(&err), "23P01", "{err}");

    // A waits with an uncommitted insert; B inserts the same key and waits for
    // A; A's commit makes B fail, A's rollback lets B in.
    for (end, b_ok) in [("COMMIT", false), ("ROLLBACK", true)] {
        let key: i64 = if b_ok { 100_001 } else { 100_003 };
        let mut a = cluster.connect();
        a.batch_execute(&format!("BEGIN; INSERT INTO t VALUES ({key}, 1)"))
            .unwrap();
        let mut b = cluster.connect();
        let bpid = backend_pid(&mut b);
        let inserter =
            thread::spawn(move || b.batch_execute(&format!("INSERT INTO t VALUES ({key}, 2)")));
        wait_for("B to wait for A", 60, || {
            wait_event(&mut admin, bpid).starts_with("Lock:transactionid")
        });
        a.batch_execute(end).unwrap();
        let res = inserter.join().unwrap();
        assert_eq!(res.is_ok(), b_ok, "after {end}: {res:?}");
        if let Err(e) = res {
            assert_eq!(common::sqlstate(&e), "23P01", "{e}");
        }
    }

    // Four sessions insert overlapping odd keys as fast as they can.
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let cl = cluster.clone();
            thread::spawn(move || {
                let mut c = cl.connect();
                let mut rng = common::Rng(w + 1);
                let mut won = Vec::new();
                for _ in 0..1500 {
                    let k = 2 * rng.below(1500) as i64 + 1;
                    match c.execute("INSERT INTO t VALUES ($1, $2)", &[&k, &(w as i32)]) {
                        Ok(_) => won.push(k),
                        // Two sessions inserting one key can each wait for
                        // the other: PostgreSQL then cancels one, as with any
                        // exclusion constraint.
                        Err(e) => {
                            assert!(
                                ["23P01", "40P01"].contains(&common::sqlstate(&e).as_str()),
                                "{e}"
                            )
                        }
                    }
                }
                won
            })
        })
        .collect();
    let mut won: Vec<i64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    won.sort_unstable();
    let before = won.len();
    won.dedup();
    assert_eq!(before, won.len(), "two sessions inserted the same key");
    let dup: i64 = admin
        .query_one("SELECT count(*) - count(DISTINCT k) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(dup, 0);
    assert!(won.len() > 1000, "only {} odd keys went in", won.len());
    assert_verified(&mut admin, "t_k_excl");
}

/// A REPEATABLE READ cursor opened before a retrain keeps reading its
/// snapshot's rows exactly across the switch: it goes on reading the previous
/// generation and the frozen delta, which the retrain leaves as they are and
/// VACUUM keeps clean. A second retrain waits for it to end: until then the
/// previous generation must stay readable.
#[test]
fn a_cursor_reads_across_a_merge_retrain() {
    cursor_across_retrain("retrain_cursor", SMALL, ["3 * g + 1", "3 * g + 2"], "merge");
}

/// The same across an append retrain, whose generation shares the run's full
/// pages with the one the cursor reads: VACUUM tombstones entries there for
/// both, and retiring the cursor's generation frees only what it did not
/// share.
#[test]
fn a_cursor_reads_across_an_append_retrain() {
    cursor_across_retrain(
        "append_cursor",
        SMALL,
        ["60000 + 3 * g", "120000 + 3 * g"],
        "append",
    );
}

/// The same across a partial merge, whose generation shares the run's pages
/// before and after the segment it rewrote with the one the cursor reads.
/// Random keys over the whole `int8` range fill about 270 run pages, four
/// segments; the rows inserted spill (the built pages are full), and the
/// merge takes the segment that owns most of them.
#[test]
fn a_cursor_reads_across_a_partial_merge() {
    cursor_across_retrain(
        "partial_cursor",
        Table {
            rows: "SELECT g, (hashint8(g)::int8 << 32) # hashint8(-g)::int8 FROM generate_series(1, 250000) g",
            range: "-4000000000000000000 AND 4000000000000000000",
        },
        [
            "(hashint8(g + 500000)::int8 << 32) # hashint8(-g - 500000)::int8",
            "(hashint8(g + 900000)::int8 << 32) # hashint8(-g - 900000)::int8",
        ],
        "partial",
    );
}

/// The table a cursor test starts from, and the range of keys it reads.
struct Table {
    rows: &'static str,
    range: &'static str,
}

const SMALL: Table = Table {
    rows: "SELECT g, 3 * g FROM generate_series(1, 20000) g",
    range: "3000 AND 150000",
};

/// `keys`: those of the rows inserted before the cursor opens, then of
/// those inserted after.
fn cursor_across_retrain(name: &str, table: Table, [old_keys, new_keys]: [&str; 2], path: &str) {
    let cluster = cluster(name);
    let mut admin = cluster.connect();
    run_each(
        &mut admin,
        &format!(
            "CREATE TABLE t (id int, k int8);
             INSERT INTO t {};
             CREATE INDEX t_k ON t USING learned (k);
             INSERT INTO t SELECT g, {old_keys} FROM generate_series(1, 20000, 7) g;
             DELETE FROM t WHERE k % 11 = 0;
             VACUUM t;",
            table.rows
        ),
    );
    let mut a = cluster.connect();
    a.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_indexonlyscan = off")
        .unwrap();
    let q = &format!(
        "SELECT k::text FROM t WHERE k BETWEEN {} ORDER BY k",
        table.range
    );
    let plan = texts(&mut a, &format!("EXPLAIN (COSTS OFF) {q}")).join("\n");
    assert!(plan.contains("Index Scan using t_k"), "{plan}");
    a.batch_execute("SET LOCAL enable_seqscan = on; SET LOCAL enable_indexscan = off")
        .unwrap();
    let expected = texts(&mut a, q);
    a.batch_execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = on")
        .unwrap();
    a.batch_execute(&format!("DECLARE c CURSOR FOR {q}"))
        .unwrap();
    let mut got = texts(&mut a, "FETCH 1000 FROM c");

    // Meanwhile: more rows, a retrain, deletes and a VACUUM.
    run_each(
        &mut admin,
        &format!("INSERT INTO t SELECT g, {new_keys} FROM generate_series(1, 20000, 5) g"),
    );
    let took = common::retrain_path(&mut admin, "t_k");
    assert_eq!(took, path);
    run_each(
        &mut admin,
        &format!(
            "DELETE FROM t WHERE k % 13 = 0;
             INSERT INTO t SELECT g, {new_keys} FROM generate_series(2, 20000, 5) g;
             VACUUM (INDEX_CLEANUP ON) t;"
        ),
    );
    let generation: i64 = admin
        .query_one("SELECT generation FROM learned_index_stats('t_k')", &[])
        .unwrap()
        .get(0);
    assert_eq!(generation, 2);
    got.extend(texts(&mut a, "FETCH 3000 FROM c"));
    let err = admin
        .batch_execute("SELECT learned_retrain('t_k')")
        .unwrap_err();
    assert_eq!(common::db_message(&err).get(..5), Some("55006"), "{err}");
    got.extend(texts(&mut a, "FETCH ALL FROM c"));
    a.batch_execute("COMMIT").unwrap();
    assert!(
        got == expected,
        "{} rows through the cursor, {} expected",
        got.len(),
        expected.len()
    );

    // Once the cursor's transaction is over, the next retrain goes ahead.
    admin
        .batch_execute("SELECT learned_retrain('t_k')")
        .unwrap();
    assert_verified(&mut admin, "t_k");
    let stats: (i64, i64) = admin
        .query_one(
            "SELECT generation, delta_entries FROM learned_index_stats('t_k')",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    // A partial merge leaves the delta pages of the other segments.
    assert_eq!(stats.0, 3);
    if path != "partial" {
        assert_eq!(stats.1, 0);
    }
    admin
        .batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        .unwrap();
    let through_index = texts(&mut admin, "SELECT count(*)::text FROM t WHERE k >= 0");
    admin
        .batch_execute(
            "SET enable_seqscan = on; SET enable_indexscan = off; SET enable_indexonlyscan = off",
        )
        .unwrap();
    assert_eq!(
        through_index,
        texts(&mut admin, "SELECT count(*)::text FROM t WHERE k >= 0")
    );
}

/// An insert reads the metapage and routes its key, above the run, to the
/// delta; before it adds the entry there, a retrain appends the delta to the
/// run and switches. The key now lies inside the new generation's run but
/// sits in one of its delta pages; once that page is closed (filled here by
/// NULLs, which leave its key range alone), scans of a generation that never
/// spilled skip it, as they skip every closed page below the run's end. The
/// insert sees the switch and marks the new generation spilled, so the row
/// is found.
#[test]
fn an_insert_routed_before_a_switch_is_found_after_it() {
    let cluster = cluster("interleave_settle");
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g FROM generate_series(1, 10000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         INSERT INTO t SELECT 20000 + g FROM generate_series(1, 100) g",
    );
    common::pause_lock(&mut c, 0, "lock");
    let mut a = cluster.connect();
    let pid = backend_pid(&mut a);
    a.batch_execute("SET learneddb.debug_pause = 'insert_routed'")
        .unwrap();
    let inserter = thread::spawn(move || {
        a.batch_execute("INSERT INTO t VALUES (15000)").unwrap();
    });
    common::wait_for_pause(&mut c, pid, "the insert to pause after routing its key");
    let path = common::retrain_path(&mut c, "t_k");
    assert_eq!(path, "append");
    common::pause_lock(&mut c, 0, "unlock");
    inserter.join().unwrap();
    run_each(
        &mut c,
        "INSERT INTO t SELECT NULL FROM generate_series(1, 1000);
         SET enable_seqscan = off; SET enable_bitmapscan = off",
    );
    let closed: i64 = c
        .query_one("SELECT delta_pages FROM learned_index_stats('t_k')", &[])
        .unwrap()
        .get(0);
    assert!(closed >= 2, "the page holding 15000 was not filled");
    for (sql, want) in [
        ("SELECT count(*) FROM t WHERE k = 15000", "1"),
        ("SELECT count(*) FROM t WHERE k BETWEEN 9990 AND 20005", "17"),
        ("SELECT count(*) FROM t WHERE k IS NULL", "1000"),
        (
            "SELECT string_agg(k::text, ',') FROM (SELECT k FROM t WHERE k > 9998 ORDER BY k LIMIT 4) s",
            "9999,10000,15000,20001",
        ),
    ] {
        assert_eq!(texts(&mut c, sql)[0], want, "{sql}");
    }
    let plan = texts(
        &mut c,
        "EXPLAIN (COSTS OFF) SELECT count(*) FROM t WHERE k = 15000",
    )
    .join("\n");
    assert!(plan.contains("t_k"), "{plan}");
    assert_verified(&mut c, "t_k");
}

/// A partial merge closes the bounded delta pages of the spilled rows it
/// merges one at a time, releasing the metapage between them
/// (`freeze_bounded`). Stopped after the first, with the others still open
/// under the old generation, rows spill into every slice from a session
/// whose cached bounded pages date from before the freeze and from a new
/// one: some land in pages the retrain closes later (some of which fill and
/// are split), some in pages it carries over, some in pages of the next
/// generation. Every row is found while the retrain waits and after the
/// switch, a snapshot from before the retrain reads its own rows
/// throughout, and the index verifies.
#[test]
fn rows_spilled_between_the_freezes_closes_are_kept() {
    let cluster = cluster("interleave_freeze");
    let mut c = cluster.connect();
    let mut spiller = cluster.connect();
    let mut old = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         SELECT setseed(0.5);
         INSERT INTO t SELECT (random() * 1e12)::int8 FROM generate_series(1, 200000);
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);",
    );
    // Spilled rows (the run's pages are full) fill bounded pages in every
    // slice, cached by this session.
    spiller
        .batch_execute(
            "SELECT setseed(0.75);
             INSERT INTO t SELECT (random() * 1e12)::int8 FROM generate_series(1, 20000)",
        )
        .unwrap();
    run_each(
        &mut old,
        "SET enable_seqscan = off; SET enable_bitmapscan = off;
         BEGIN ISOLATION LEVEL REPEATABLE READ;
         SELECT count(*) FROM t;",
    );
    let range = "SELECT count(*), sum(k % 1000003) FROM t WHERE k BETWEEN 2e11 AND 7e11";
    let before = texts(&mut old, range);

    common::pause_lock(&mut c, 0, "lock");
    let mut r = cluster.connect();
    let pid = backend_pid(&mut r);
    r.batch_execute("SET learneddb.debug_pause = 'freeze_bounded'")
        .unwrap();
    let retrainer = thread::spawn(move || -> String {
        r.query_one("SELECT path FROM learned_retrain('t_k')", &[])
            .unwrap()
            .get(0)
    });
    common::wait_for_pause(&mut c, pid, "the freeze to pause between bounded pages");
    spiller
        .batch_execute(
            "INSERT INTO t SELECT (random() * 1e12)::int8 FROM generate_series(1, 10000)",
        )
        .unwrap();
    run_each(
        &mut c,
        "INSERT INTO t SELECT (random() * 1e12)::int8 FROM generate_series(1, 10000)",
    );
    let all = "SELECT k FROM t WHERE k BETWEEN 3e11 AND 3.2e11 ORDER BY k";
    common::assert_index_matches_table(&mut c, "t_k", all, "while the freeze waits");
    assert_eq!(texts(&mut old, range), before, "the old snapshot, during");

    common::pause_lock(&mut c, 0, "unlock");
    // The run is long enough to cut: the retrain merges one segment and
    // carries the other slices' pages over.
    assert_eq!(retrainer.join().unwrap(), "partial");
    spiller
        .batch_execute("INSERT INTO t SELECT (random() * 1e12)::int8 FROM generate_series(1, 2000)")
        .unwrap();
    assert_eq!(texts(&mut old, range), before, "the old snapshot, after");
    old.batch_execute("COMMIT").unwrap();
    for sql in [
        all,
        "SELECT count(*) FROM t WHERE k BETWEEN 1 AND 1e12",
        "SELECT k FROM t WHERE k > 9.99e11 ORDER BY k DESC",
    ] {
        common::assert_index_matches_table(&mut c, "t_k", sql, sql);
    }
    assert_eq!(texts(&mut c, "SELECT count(*) FROM t")[0], "242000");
    assert_verified(&mut c, "t_k");
}

/// A retrain carries pages of spilled rows over to the next generation
/// still open, one at a time. It is held after the first of two (`carry`):
/// the second, not yet carried, fills and is split (its halves are the next
/// generation's), and the first, already carried, takes more rows. The
/// retrain then finds the second split and leaves it alone. A snapshot from
/// before reads its own rows throughout; every row is found once after, and
/// the index verifies.
#[test]
fn a_page_split_before_the_retrain_carries_it_over_is_left_alone() {
    let cluster = cluster("interleave_carry");
    let mut c = cluster.connect();
    let mut old = cluster.connect();
    // Gaps of 489..1511 pack about 2 bytes an entry: the run pages fill up,
    // so rows inside the run find no room in them and spill.
    run_each(
        &mut c,
        "CREATE TABLE t (id bigserial, k int8);
         INSERT INTO t (k) SELECT g * 1000 + (hashint8(g) & 511) FROM generate_series(1, 100000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         INSERT INTO t (k) SELECT g * 1000 + 999 FROM generate_series(1000, 1299) g;
         INSERT INTO t (k) SELECT g * 1000 + 999 FROM generate_series(95000, 95299) g;
         INSERT INTO t (k) SELECT 200000000 + g FROM generate_series(1, 5000) g;",
    );
    let pages: i64 = c
        .query_one("SELECT delta_pages FROM learned_index_stats('t_k')", &[])
        .unwrap()
        .get(0);
    assert!(
        pages >= 3,
        "the spilled rows of two slices and the appended ones: {pages} pages"
    );
    let every = "SELECT count(*)::text || ' ' || sum(id # k)::text FROM t WHERE k >= 0";
    run_each(
        &mut old,
        "SET enable_seqscan = off; SET enable_bitmapscan = off;
         BEGIN ISOLATION LEVEL REPEATABLE READ;
         SELECT 1;",
    );
    let before = texts(&mut old, every);

    common::pause_lock(&mut c, 0, "lock");
    let mut r = cluster.connect();
    let pid = backend_pid(&mut r);
    r.batch_execute("SET learneddb.debug_pause = 'carry'")
        .unwrap();
    let retrainer = thread::spawn(move || -> Result<String, String> {
        r.query_one("SELECT path FROM learned_retrain('t_k')", &[])
            .map(|row| row.get(0))
            .map_err(|e| common::db_message(&e))
    });
    common::wait_for_pause(&mut c, pid, "the retrain to pause between pages it carries");
    run_each(
        &mut c,
        "INSERT INTO t (k) SELECT g * 1000 + 999 FROM generate_series(95300, 95999) g;
         INSERT INTO t (k) SELECT g * 1000 + 999 FROM generate_series(1300, 1399) g;",
    );
    common::assert_index_matches_table(&mut c, "t_k", every, "while the retrain waits");
    assert_eq!(texts(&mut old, every), before, "the old snapshot, during");
    common::pause_lock(&mut c, 0, "unlock");
    assert_eq!(retrainer.join().unwrap().as_deref(), Ok("append"));

    assert_eq!(texts(&mut old, every), before, "the old snapshot, after");
    old.batch_execute("COMMIT").unwrap();
    for sql in [
        every,
        "SELECT k FROM t WHERE k BETWEEN 95000000 AND 96000000 ORDER BY k",
        "SELECT k FROM t WHERE k BETWEEN 1000000 AND 1400000 ORDER BY k DESC",
    ] {
        common::assert_index_matches_table(&mut c, "t_k", sql, sql);
    }
    assert_eq!(texts(&mut c, "SELECT count(*) FROM t")[0], "106400");
    assert_verified(&mut c, "t_k");
}

/// Whether backend `pid` waits for a heavyweight lock.
fn waits_for_lock(admin: &mut postgres::Client, pid: i32) -> bool {
    admin
        .query_opt(
            "SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted",
            &[&pid],
        )
        .unwrap()
        .is_some()
}

/// `learned_retrain`, `learned_verify` and `learned_index_stats` lock the
/// table before the index, as DDL does. A session holds the table
/// exclusively, as DROP INDEX does, so the function waits for the table; the
/// same session then runs REINDEX INDEX, which needs the index exclusively.
/// Had the function held the index while it waited for the table (a
/// `PgRelation` argument kept open until the end), the two would deadlock
/// and one be cancelled; here REINDEX goes first, then the function.
#[test]
fn functions_lock_the_table_before_the_index() {
    let cluster = cluster("lock_order");
    let mut d = cluster.connect();
    run_each(
        &mut d,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g FROM generate_series(1, 20000) g;
         CREATE INDEX t_k ON t USING learned (k);
         INSERT INTO t SELECT 20000 + g FROM generate_series(1, 2000) g",
    );
    let mut admin = cluster.connect();
    for call in [
        "SELECT path FROM learned_retrain('t_k')",
        "SELECT learned_verify('t_k')::text",
        "SELECT entries::text FROM learned_index_stats('t_k')",
    ] {
        d.batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
            .unwrap();
        let mut f = cluster.connect();
        let pid = backend_pid(&mut f);
        let caller = thread::spawn(move || f.query_one(call, &[]).map(|r| r.get::<_, String>(0)));
        wait_for(&format!("{call} to wait for the table"), 30, || {
            assert!(!caller.is_finished(), "{call} returned without waiting");
            waits_for_lock(&mut admin, pid)
        });
        d.batch_execute("REINDEX INDEX t_k")
            .unwrap_or_else(|e| panic!("{call}: REINDEX failed: {e}"));
        d.batch_execute("COMMIT").unwrap();
        let got = caller
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{call} failed: {e}"));
        assert!(!got.is_empty(), "{call}");
    }
    assert_verified(&mut d, "t_k");
}

/// A scan keeps the delta directory it read at its first rescan (a nested
/// loop rescans it for every outer row). Pages split after that read keep
/// their entries and the pages they were copied to are not in the scan's
/// directory: the rest of the scan returns each row it sees once, none
/// missing, none twice.
#[test]
fn a_scan_rescanned_across_splits_returns_each_row_once() {
    let cluster = cluster("interleave_split_scan");
    let mut c = cluster.connect();
    let mut scan = cluster.connect();
    // A small run whose pages are full (the heap is not in key order, so
    // the TIDs fill them by bytes): every key below inserted spills into the
    // bounded pages of its slice (508 entries each).
    run_each(
        &mut c,
        "CREATE TABLE t (k int8) WITH (autovacuum_enabled = off);
         INSERT INTO t SELECT g * 3 FROM generate_series(1, 100000) g ORDER BY hashint8(g);
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         INSERT INTO t SELECT 1 + 3 * ((hashint8(g) & 65535) + 1) FROM generate_series(1, 1500) g;
         CREATE TABLE probes AS SELECT DISTINCT k FROM t WHERE k % 3 = 1;
         VACUUM ANALYZE t; VACUUM ANALYZE probes;",
    );
    // Some keys were inserted twice: the join returns their rows twice.
    let expected: Vec<i64> = c
        .query("SELECT k FROM t WHERE k % 3 = 1 ORDER BY k", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let split_before = texts(
        &mut c,
        "SELECT retained_pages FROM learned_index_stats('t_k')",
    );
    run_each(
        &mut scan,
        "SET enable_seqscan = off; SET enable_bitmapscan = off;
         SET enable_hashjoin = off; SET enable_mergejoin = off;
         BEGIN ISOLATION LEVEL REPEATABLE READ;",
    );
    // Force the probes table to be the outer side (it has no index).
    let plan = texts(
        &mut scan,
        "EXPLAIN (COSTS OFF) SELECT t.k FROM probes p JOIN t ON t.k = p.k",
    )
    .join("\n");
    assert!(
        plan.contains("Nested Loop") && plan.contains("t_k"),
        "not a nested loop over t_k: {plan}"
    );
    scan.batch_execute(
        "DECLARE cur NO SCROLL CURSOR FOR SELECT t.k FROM probes p JOIN t ON t.k = p.k",
    )
    .unwrap();
    let mut got: Vec<i64> = scan
        .query("FETCH 20 FROM cur", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(got.len(), 20);
    // Fill and split the bounded pages holding the keys still to come.
    c.batch_execute(
        "INSERT INTO t SELECT 2 + 3 * ((hashint8(g) & 65535) + 1) FROM generate_series(1, 6000) g",
    )
    .unwrap();
    let split_after = texts(
        &mut c,
        "SELECT retained_pages FROM learned_index_stats('t_k')",
    );
    assert!(
        split_after[0].parse::<i64>().unwrap() > split_before[0].parse::<i64>().unwrap() + 5,
        "the inserts split no pages: {split_before:?} split pages before, {split_after:?} after"
    );
    got.extend(
        scan.query("FETCH ALL FROM cur", &[])
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i64>(0)),
    );
    scan.batch_execute("COMMIT").unwrap();
    got.sort_unstable();
    assert!(
        got == expected,
        "the scan across the splits returned {} rows, {} expected",
        got.len(),
        expected.len()
    );
    for sql in [
        "SELECT k FROM t WHERE k BETWEEN 90000 AND 120000 ORDER BY k",
        "SELECT count(*) FROM t WHERE k BETWEEN 1 AND 300000",
        "SELECT count(*) FROM probes p JOIN t ON t.k = p.k",
    ] {
        common::assert_index_matches_table(&mut c, "t_k", sql, sql);
    }
    assert_verified(&mut c, "t_k");
}

/// VACUUM removes dead delta entries from the pages listed when it read the
/// directory. A bounded page that fills meanwhile must not be split: the
/// copies of its dead entries would go to pages VACUUM does not visit, and
/// once VACUUM marks their heap slots unused, rows inserted there would be
/// found under the dead rows' keys.
#[test]
fn a_page_filled_while_vacuum_runs_is_not_split() {
    let cluster = cluster("interleave_split_vacuum");
    let mut c = cluster.connect();
    // As above: the 500 rows spill into the bounded page of the run's
    // first slice.
    run_each(
        &mut c,
        "CREATE TABLE t (k int8) WITH (autovacuum_enabled = off);
         INSERT INTO t SELECT g * 3 FROM generate_series(1, 100000) g ORDER BY hashint8(g);
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         INSERT INTO t SELECT 1 + 3 * g FROM generate_series(1, 500) g;
         VACUUM (FREEZE) t;
         DELETE FROM t WHERE k % 3 = 1 AND k < 1000;",
    );
    common::pause_lock(&mut c, 0, "lock");
    let (vpid, vacuum) = start_vacuum(&cluster, "SET learneddb.debug_pause = 'vacuum_delta'");
    common::wait_for_pause(
        &mut c,
        vpid,
        "VACUUM to pause after reading the delta directory",
    );
    // The bounded page holding the 500 rows (333 of them dead) fills.
    run_each(
        &mut c,
        "INSERT INTO t SELECT 2 + 3 * g FROM generate_series(1, 100) g",
    );
    common::pause_lock(&mut c, 0, "unlock");
    vacuum
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("VACUUM failed: {e}"));
    // The dead rows' heap slots are free now: new rows with other keys take
    // them.
    run_each(
        &mut c,
        "INSERT INTO t SELECT 1000000 + g FROM generate_series(1, 600) g",
    );
    for sql in [
        "SELECT k FROM t WHERE k BETWEEN 1 AND 2000 ORDER BY k",
        "SELECT count(*) FROM t WHERE k BETWEEN 1 AND 300000",
    ] {
        common::assert_index_matches_table(&mut c, "t_k", sql, sql);
    }
    assert_verified(&mut c, "t_k");
}

/// A session's list of open bounded delta pages (`rd_amcache`) can outlive
/// them: listed while a retrain waits after its freeze, a page is merged,
/// freed when VACUUM retires its generation, and taken as a half of another
/// page's split. The split's first record writes the half open, with its
/// bounds, but only its last lists it; an entry added in between, from the
/// stale list, is lost with the half if the split fails there (an ERROR;
/// the halves are freed later). The stale insert must find the page's tag
/// changed and wait for the split, under the metapage lock, rather than
/// add to it.
#[test]
fn an_insert_from_a_stale_page_list_waits_for_the_split_of_a_reused_page() {
    stale_list_meets_a_failed_split(
        "interleave_stale_bounded",
        "freeze",
        &[(2000999, 1500999), (3000999, 30000999)],
    );
}

/// The same with a page opened after the freeze, which the retrain absorbs
/// (moves its entries into its new run) and so tags with the generation
/// before it: reused after the switch as a split's half, the page gets the
/// tag it was listed with back. The list was read before the switch, so it
/// no longer counts as current.
#[test]
fn an_insert_from_a_page_list_read_before_a_switch_waits_for_the_split_of_a_reused_page() {
    stale_list_meets_a_failed_split("interleave_stale_absorbed", "write", &[(2000999, 30000999)]);
}

/// Sessions list the open bounded pages by inserting `(listed, _)` while a
/// merge retrain waits at `stage`; the merge frees the pages they list (the
/// pages of its frozen delta at "freeze", pages it absorbs at "write"),
/// which a split in the first slice of its new run then takes as halves
/// and fails between its records. Each session's `(_, stale)` insert,
/// routed by its list, belongs in one of the halves.
fn stale_list_meets_a_failed_split(name: &str, stage: &str, sessions: &[(i64, i64)]) {
    let cluster = cluster(name);
    let mut c = cluster.connect();
    // About 37 full run pages: three slices, a spilled row in two.
    run_each(
        &mut c,
        "CREATE TABLE t (id bigserial, k int8);
         INSERT INTO t (k) SELECT g * 1000 + (hashint8(g) & 511) FROM generate_series(1, 150000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         INSERT INTO t (k) VALUES (1000999), (100000999);",
    );
    assert_eq!(common::delta_stats(&mut c, "t_k"), (2, 2), "a page a slice");

    common::pause_lock(&mut c, 0, "lock");
    let retrainer = common::start_paused_retrain(&mut c, cluster.connect(), stage, "t_k");
    let mut listing = vec![];
    for &(listed, stale) in sessions {
        let mut s = cluster.connect();
        s.batch_execute(&format!("INSERT INTO t (k) VALUES ({listed})"))
            .unwrap();
        listing.push((s, stale));
    }
    common::pause_lock(&mut c, 0, "unlock");
    assert_eq!(retrainer.join().unwrap(), "merge");

    // The run pages of keys 1500999 and 30000999 (one slice of the new run)
    // fill up until a row of each spills, into one page, which splits
    // below. The pages the merge freed are the first free ones in the
    // delta directory: at "write", the spilled rows' page takes the first
    // of them (a page of the frozen delta), the split the next two, the
    // other page of the frozen delta and the one the sessions list; at
    // "freeze", it opens before they are free, and the split takes the two
    // the sessions list.
    let mut b = cluster.connect();
    if stage == "write" {
        c.batch_execute("VACUUM t").unwrap();
    }
    for key in [1500998, 30000998] {
        let before = common::delta_stats(&mut c, "t_k").0;
        for round in 0.. {
            assert!(round < 200, "no row of {key} spilled");
            b.batch_execute(&format!(
                "INSERT INTO t (k) SELECT {key} FROM generate_series(1, 20)"
            ))
            .unwrap();
            if common::delta_stats(&mut c, "t_k").0 > before {
                break;
            }
        }
    }
    assert_eq!(
        common::delta_stats(&mut c, "t_k").1,
        1,
        "one page of spilled rows"
    );
    // Retires the merged generation: the pages it merged are free.
    c.batch_execute("VACUUM t").unwrap();

    // Each listing session routes its row to the delta and waits; then the
    // page that took the spilled rows fills and splits into two of the free
    // pages, and the split waits between its records. (Each waits for a
    // lock of its own: one let go holds it to its end.)
    for n in 0..=sessions.len() as i64 {
        common::pause_lock(&mut c, n, "lock");
    }
    let mut stale = vec![];
    for (n, (mut s, key)) in (1..).zip(listing) {
        let pid = backend_pid(&mut s);
        s.batch_execute(&format!("SET learneddb.debug_pause = 'insert_routed:{n}'"))
            .unwrap();
        let insert = thread::spawn(move || {
            s.execute("INSERT INTO t (k) VALUES ($1)", &[&key])
                .map_err(|e| common::db_message(&e))
        });
        common::wait_for_pause(&mut c, pid, "the insert to pause once routed");
        stale.push((pid, insert));
    }
    let bpid = backend_pid(&mut b);
    b.batch_execute("SET learneddb.debug_pause = 'split!'")
        .unwrap();
    // Mostly 30000997: the split's median, so 1500999 belongs in the lower
    // half and 30000999 in the upper.
    let filler = thread::spawn(move || {
        b.batch_execute(
            "INSERT INTO t (k) SELECT 1500997 FROM generate_series(1, 100)
             UNION ALL SELECT 30000997 FROM generate_series(1, 900)",
        )
        .map_err(|e| common::db_message(&e))
    });
    common::wait_for_pause(&mut c, bpid, "the split to pause between its records");

    // The halves carry blocks the sessions list; each row belongs in one of
    // them. The inserts wait for the metapage, then the split fails before
    // it lists its halves.
    for n in 1..=sessions.len() as i64 {
        common::pause_lock(&mut c, n, "unlock");
    }
    for (pid, _) in &stale {
        wait_for("the insert to wait for the split", 30, || {
            wait_event(&mut c, *pid) == "LWLock:BufferContent"
        });
    }
    common::pause_lock(&mut c, 0, "unlock");
    let failed = filler.join().unwrap().unwrap_err();
    assert!(failed.contains("failing at split"), "{failed}");
    for (_, insert) in stale {
        assert_eq!(insert.join().unwrap(), Ok(1));
    }
    for sql in [
        "SELECT count(*)::text || ' ' || sum(id # k)::text FROM t WHERE k >= 0",
        "SELECT k FROM t WHERE k BETWEEN 1000000 AND 31000000 ORDER BY k",
    ] {
        common::assert_index_matches_table(&mut c, "t_k", sql, sql);
    }
    assert_verified(&mut c, "t_k");
}

/// While a partial merge runs, rows of the run pages it carries over as
/// they are go on into those pages' insert areas: only rows of the stretch
/// it rewrites go to the delta. (Before, every row inserted while any
/// retrain ran spilled, into a delta page of its slice that every lookup in
/// the slice then read, so that each merge of a random stream started the
/// next.) A snapshot from before reads the same rows throughout, and the
/// index returns the table's rows after the switch.
#[test]
fn a_partial_merge_leaves_the_pages_it_keeps_taking_inserts() {
    let cluster = cluster("interleave_keeps_taking");
    let mut c = cluster.connect();
    let mut old = cluster.connect();
    // Room in every page, and rows enough in the lowest keys to overflow
    // theirs: a merge of the first segment (about a quarter of the keys),
    // whose later pages keep their room.
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         SELECT setseed(0.5);
         INSERT INTO t SELECT (random() * 1e12)::int8 FROM generate_series(1, 200000);
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off, fillfactor = 90);
         INSERT INTO t SELECT (random() * 2e10)::int8 FROM generate_series(1, 20000);",
    );
    let (spilled, _) = common::delta_stats(&mut c, "t_k");
    assert!(spilled > 1000, "{spilled} rows spilled");
    run_each(
        &mut old,
        "SET enable_seqscan = off; SET enable_bitmapscan = off;
         BEGIN ISOLATION LEVEL REPEATABLE READ;
         SELECT count(*) FROM t;",
    );
    let every = "SELECT count(*)::text || ' ' || sum(k % 1000003)::text FROM t WHERE k >= 0";
    let before = texts(&mut old, every);

    common::pause_lock(&mut c, 0, "lock");
    let retrainer = common::start_paused_retrain(&mut c, cluster.connect(), "write", "t_k");
    let (delta, _) = common::delta_stats(&mut c, "t_k");
    run_each(
        &mut c,
        "INSERT INTO t SELECT 6e11 + (random() * 3e11)::int8 FROM generate_series(1, 2000)",
    );
    assert_eq!(
        common::delta_stats(&mut c, "t_k").0,
        delta,
        "rows of pages the merge keeps went to the delta"
    );
    // Rows of the stretch it rewrites (which it has read) go to the delta,
    // though their pages have room.
    run_each(
        &mut c,
        "INSERT INTO t SELECT 1.5e11 + (random() * 5e10)::int8 FROM generate_series(1, 100)",
    );
    assert_eq!(
        common::delta_stats(&mut c, "t_k").0,
        delta + 100,
        "rows of the stretch the merge rewrites"
    );
    let all = "SELECT k FROM t WHERE k BETWEEN 0 AND 1e12 ORDER BY k";
    common::assert_index_matches_table(&mut c, "t_k", all, "while the retrain waits");
    assert_eq!(texts(&mut old, every), before, "the old snapshot, during");

    common::pause_lock(&mut c, 0, "unlock");
    assert_eq!(retrainer.join().unwrap(), "partial");
    assert_eq!(texts(&mut old, every), before, "the old snapshot, after");
    old.batch_execute("COMMIT").unwrap();
    // The next rows of kept pages go into them as before.
    let (delta, _) = common::delta_stats(&mut c, "t_k");
    run_each(
        &mut c,
        "INSERT INTO t SELECT 6e11 + (random() * 3e11)::int8 FROM generate_series(1, 500)",
    );
    assert_eq!(
        common::delta_stats(&mut c, "t_k").0,
        delta,
        "after the switch"
    );
    for sql in [
        all,
        every,
        "SELECT k FROM t WHERE k > 5e11 ORDER BY k DESC LIMIT 3000",
    ] {
        common::assert_index_matches_table(&mut c, "t_k", sql, sql);
    }
    assert_eq!(texts(&mut c, "SELECT count(*) FROM t")[0], "222600");
    assert_verified(&mut c, "t_k");
}
