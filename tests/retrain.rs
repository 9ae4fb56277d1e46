//! Retraining again and again under a stream of inserts and deletes: every
//! generation's answers are exact, and the blocks of retired generations are
//! reused, so the index stays within a small factor of a fresh REINDEX.

mod common;

use common::{
    assert_index_matches_table, assert_verified, retrain_path, run_each, Cluster, RANDOM_KEY,
};

fn size(c: &mut postgres::Client, index: &str) -> i64 {
    c.query_one("SELECT pg_relation_size($1::text::regclass)", &[&index])
        .unwrap()
        .get(0)
}

#[test]
fn repeated_retrains_reuse_space_and_stay_exact() {
    let cluster = Cluster::start("retrain", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (id bigserial, k int8);
         INSERT INTO t (k) SELECT hashint8(g) & 1048575 FROM generate_series(1, 100000) g;
         CREATE INDEX t_k ON t USING learned (k);",
    );
    let mut sizes = Vec::new();
    for round in 0..12i64 {
        c.execute(
            "INSERT INTO t (k) SELECT hashint8(g + $1::int8) & 1048575 FROM generate_series(1, 8000) g",
            &[&(round * 1_000_000)],
        )
        .unwrap();
        c.execute("DELETE FROM t WHERE id % 97 = $1", &[&round])
            .unwrap();
        run_each(&mut c, "VACUUM t; SELECT learned_retrain('t_k')");
        sizes.push(size(&mut c, "t_k"));
    }
    assert_verified(&mut c, "t_k");
    let generation: i64 = c
        .query_one("SELECT generation FROM learned_index_stats('t_k')", &[])
        .unwrap()
        .get(0);
    assert_eq!(generation, 13);
    let q = "SELECT string_agg(k::text, ',' ORDER BY k, id) FROM t WHERE k BETWEEN 1000 AND 90000";
    assert_index_matches_table(&mut c, "t_k", q, "after the retrains");
    let retrained = size(&mut c, "t_k");
    // The merges took scattered inserts, so they left room in every page
    // (fillfactor 80 unless set): the REINDEX compared with does the same.
    c.batch_execute("ALTER INDEX t_k SET (fillfactor = 80); REINDEX INDEX t_k")
        .unwrap();
    let fresh = size(&mut c, "t_k");
    eprintln!("sizes after each retrain: {sizes:?}; after REINDEX: {fresh}");
    // A full rewrite needs the current generation and the one before it;
    // without reuse, twelve retrains would leave twelve generations.
    assert!(
        retrained <= fresh * 5 / 2,
        "{retrained} bytes after 12 retrains against {fresh} after REINDEX"
    );
    // And the size has settled: the last retrains reused what the earlier
    // ones freed.
    assert!(
        sizes[11] <= sizes[6] * 5 / 4,
        "the index still grows: {sizes:?}"
    );
}

/// A time-ordered table: each round appends newer rows (some repeating the
/// largest key, some NULL), deletes a few, and retrains. Appends keep the
/// run's full pages, so twenty retrains leave the index within 1.5x a fresh
/// REINDEX. Then a retention DELETE kills a third of the run and the next
/// retrain merges, dropping the tombstones. Every answer stays exact.
#[test]
fn appended_rows_extend_the_run() {
    let cluster = Cluster::start("retrain_append", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (id bigserial, k int8);
         INSERT INTO t (k) SELECT g * 10 FROM generate_series(1, 100000) g;
         CREATE INDEX t_k ON t USING learned (k);",
    );
    let retrain = |c: &mut postgres::Client| -> String {
        c.query_one("SELECT path FROM learned_retrain('t_k')", &[])
            .unwrap()
            .get(0)
    };
    let mut paths = Vec::new();
    for round in 0..20i64 {
        c.execute(
            "INSERT INTO t (k) SELECT (SELECT max(k) FROM t) FROM generate_series(1, 3)",
            &[],
        )
        .unwrap();
        c.execute(
            "INSERT INTO t (k) SELECT CASE WHEN g % 1000 = 0 THEN NULL ELSE $1::int8 + g * 10 END
             FROM generate_series(1, 5000) g",
            &[&(1_000_000 + round * 50_000)],
        )
        .unwrap();
        c.execute("DELETE FROM t WHERE id % 200 = $1", &[&round])
            .unwrap();
        c.batch_execute("VACUUM t").unwrap();
        paths.push(retrain(&mut c));
    }
    assert!(
        paths.iter().all(|p| p == "append"),
        "time-ordered rows took another path: {paths:?}"
    );
    assert_verified(&mut c, "t_k");
    let q = "SELECT coalesce(string_agg(id::text, ',' ORDER BY k, id), '') FROM t
             WHERE k BETWEEN 990000 AND 1800000 OR k IS NULL";
    let compare = |c: &mut postgres::Client| assert_index_matches_table(c, "t_k", q, "appended");
    compare(&mut c);
    let retrained = size(&mut c, "t_k");
    run_each(&mut c, "CREATE INDEX t_k_fresh ON t USING learned (k)");
    let fresh = size(&mut c, "t_k_fresh");
    c.batch_execute("DROP INDEX t_k_fresh").unwrap();
    eprintln!("after 20 append retrains: {retrained} bytes; a fresh build: {fresh}");
    assert!(
        retrained * 2 <= fresh * 3,
        "{retrained} bytes after 20 retrains against {fresh} for a fresh build"
    );

    // Retention: the oldest third goes; the next retrain merges.
    run_each(
        &mut c,
        "DELETE FROM t WHERE k < 700000;
         INSERT INTO t (k) SELECT 3000000 + g FROM generate_series(1, 1000) g;
         VACUUM t",
    );
    assert_eq!(retrain(&mut c), "merge");
    let dead: i64 = c
        .query_one("SELECT count(*) FROM t WHERE k < 700000", &[])
        .unwrap()
        .get(0);
    assert_eq!(dead, 0);
    c.batch_execute("INSERT INTO t (k) SELECT 3100000 + g FROM generate_series(1, 1000) g")
        .unwrap();
    assert_eq!(retrain(&mut c), "append");
    assert_verified(&mut c, "t_k");
    compare(&mut c);
}

/// Rows that spill below the run's last key while rows are appended above
/// it (stragglers of concurrent appenders, late timestamps) do not turn the
/// next retrain into a merge of the whole run: an append takes the appended
/// rows and carries the spilled ones over as delta pages of the new
/// generation, still open, so the rows that spill after it join them rather
/// than start new pages; until they are many enough (a tenth of the
/// threshold, at least 1024) or lie on enough pages for a merge to give the
/// run room. Every row stays found.
#[test]
fn a_few_spilled_rows_ride_along_with_an_append() {
    let cluster = Cluster::start("retrain_carry", &["autovacuum = off"]);
    let mut c = cluster.connect();
    // Gaps of 489..1511 pack about 2 bytes an entry: the run pages fill up,
    // so rows inside the run find no room in them and spill.
    run_each(
        &mut c,
        "CREATE TABLE t (id bigserial, k int8);
         INSERT INTO t (k) SELECT g * 1000 + (hashint8(g) & 511) FROM generate_series(1, 100000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);",
    );
    let retrain = |c: &mut postgres::Client| retrain_path(c, "t_k");
    let delta = |c: &mut postgres::Client| common::delta_stats(c, "t_k");
    // Every row with its key: the stragglers lie among the run's keys.
    let q = "SELECT count(*)::text || ' ' || coalesce(sum(id # k), 0)::text FROM t WHERE k >= 0";
    let spill = |c: &mut postgres::Client, round: i64, n: i64| {
        c.execute(
            "INSERT INTO t (k) SELECT (hashint8(g + $1::int8 * 100000) & 65535) * 1000 + 999
             FROM generate_series(1, $2::int8) g",
            &[&round, &n],
        )
        .unwrap();
    };
    let mut paths = Vec::new();
    let mut pages = Vec::new();
    let mut carried = 0;
    for round in 0..7i64 {
        // 5,000 rows above every key, and 20 inside the run.
        c.execute(
            "INSERT INTO t (k) SELECT $1::int8 + g * 1000 FROM generate_series(1, 5000) g",
            &[&(200_000_000 + round * 5_000_000)],
        )
        .unwrap();
        spill(&mut c, round, 20);
        let spilled = delta(&mut c).0 - carried - 5000;
        paths.push(retrain(&mut c));
        carried += spilled;
        let (entries, delta_pages) = delta(&mut c);
        assert_eq!(
            entries, carried,
            "after round {round} the delta should hold the spilled rows carried over"
        );
        pages.push(delta_pages);
        assert_index_matches_table(&mut c, "t_k", q, "carried over");
    }
    eprintln!("{carried} spilled rows carried over 7 appends on {pages:?} pages: {paths:?}");
    assert!(carried >= 80, "too few rows spilled to tell: {carried}");
    assert!(
        paths.iter().all(|p| p == "append"),
        "a few spilled rows turned retrains into merges: {paths:?}"
    );
    // The pages the first round's rows opened take the later rounds' rows.
    assert!(
        pages[0] >= 1 && pages.iter().all(|&n| n == pages[0]),
        "the spilled rows of each round went to new pages: {pages:?}"
    );
    // Enough rows call for a merge, which leaves nothing in the delta.
    spill(&mut c, 7, 1100);
    assert_eq!(retrain(&mut c), "merge");
    assert_eq!(delta(&mut c).0, 0, "the merge left rows in the delta");
    assert_index_matches_table(&mut c, "t_k", q, "merged");
    assert_verified(&mut c, "t_k");
    // (Rows on many pages call for a merge too: `worker.rs`'s unit test of
    // `merges_spilled`.)
}

/// A page of spilled rows that VACUUM emptied is freed when a retrain would
/// carry it over open, not carried: it would take a page a lookup reads for
/// nothing.
#[test]
fn an_emptied_page_of_spilled_rows_is_freed_not_carried_over() {
    let cluster = Cluster::start("retrain_emptied", &["autovacuum = off"]);
    let mut c = cluster.connect();
    // The run's pages fill up (gaps of 489..1511), so rows inside it spill.
    run_each(
        &mut c,
        "CREATE TABLE t (id bigserial, k int8);
         INSERT INTO t (k) SELECT g * 1000 + (hashint8(g) & 511) FROM generate_series(1, 100000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         INSERT INTO t (k) SELECT g * 1000 + 999 FROM generate_series(1000, 1019) g;
         DELETE FROM t WHERE k % 1000 = 999;
         VACUUM (INDEX_CLEANUP ON) t;
         INSERT INTO t (k) SELECT 200000000 + g FROM generate_series(1, 5000) g;",
    );
    assert_eq!(common::delta_stats(&mut c, "t_k").0, 5000);
    assert_eq!(retrain_path(&mut c, "t_k"), "append");
    assert_eq!(
        common::delta_stats(&mut c, "t_k"),
        (0, 0),
        "the emptied page was carried over"
    );
    let q = "SELECT count(*)::text || ' ' || sum(id # k)::text FROM t WHERE k >= 0";
    assert_index_matches_table(&mut c, "t_k", q, "after the retrain");
    assert_verified(&mut c, "t_k");
}

/// Each append retrain adds an extent to the generation's list, which holds
/// 32. Seventy appends in a row stay appends: once the kept pages lie on
/// many extents, an append copies the last few into its own (each taken in
/// at most as long as what is written after it), and the index stays exact
/// and within a small factor of a fresh build.
#[test]
fn appends_consolidate_their_extents() {
    let cluster = Cluster::start("retrain_extents", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (id bigserial, k int8);
         INSERT INTO t (k) SELECT g FROM generate_series(1, 1000000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);",
    );
    let paths: Vec<String> = (0..70).map(|round| append_round(&mut c, round)).collect();
    assert!(
        paths.iter().all(|p| p == "append"),
        "appends fell back to merges: {paths:?}"
    );
    assert_verified(&mut c, "t_k");
    for q in [
        "SELECT string_agg(id::text, ',' ORDER BY k, id) FROM t WHERE k BETWEEN 990000 AND 1300000",
        "SELECT count(*)::text FROM t WHERE k BETWEEN 1000 AND 9000000",
        "SELECT string_agg(k::text, ',' ORDER BY k DESC) FROM t WHERE k BETWEEN 7000000 AND 7130000",
    ] {
        assert_index_matches_table(&mut c, "t_k", q, q);
    }
    let retrained = size(&mut c, "t_k");
    run_each(&mut c, "CREATE INDEX t_k_fresh ON t USING learned (k)");
    let fresh = size(&mut c, "t_k_fresh");
    eprintln!("after 70 append retrains: {retrained} bytes; a fresh build: {fresh}");
    // About 2x here: the last round's 45,000 rows went through about 90
    // delta pages (16 bytes a row, against about one packed), which stay
    // allocated for the next rows; the rest is the run, its copies' freed
    // extents and the model. Without consolidation the appends turned into
    // merges from the 31st on.
    assert!(
        retrained * 2 <= fresh * 5,
        "{retrained} bytes after 70 retrains against {fresh} for a fresh build"
    );

    // A retention DELETE makes the next retrain merge, into the free
    // fragments the copies left; it takes at most half the extent list, so
    // the appends after it go on as appends.
    run_each(
        &mut c,
        "DROP INDEX t_k_fresh; DELETE FROM t WHERE k < 1000000; VACUUM t",
    );
    assert_eq!(append_round(&mut c, 70), "merge");
    let after: Vec<String> = (71..106).map(|round| append_round(&mut c, round)).collect();
    assert!(
        after.iter().all(|p| p == "append"),
        "appends after a merge fell back to merges: {after:?}"
    );
    assert_verified(&mut c, "t_k");
    assert_index_matches_table(
        &mut c,
        "t_k",
        "SELECT string_agg(id::text, ',' ORDER BY k, id) FROM t WHERE k BETWEEN 7990000 AND 8300000",
        "after the merge and more appends",
    );
}

/// Appends 20,000-50,000 rows above every key and retrains; the path taken.
fn append_round(c: &mut postgres::Client, round: i64) -> String {
    c.execute(
        "INSERT INTO t (k) SELECT $1::int8 + g FROM generate_series(1, 20000 + ($2::int8 % 7) * 5000) g",
        &[&(1_100_000 + round * 100_000), &round],
    )
    .unwrap();
    c.query_one("SELECT path FROM learned_retrain('t_k')", &[])
        .unwrap()
        .get(0)
}

fn retained_free(c: &mut postgres::Client, index: &str) -> (i64, i64) {
    let r = c
        .query_one(
            "SELECT retained_pages, free_pages FROM learned_index_stats($1::text::regclass)",
            &[&index],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// VACUUM frees the generation a retrain replaced once no snapshot can read
/// it (where no worker runs, it would otherwise wait for the next retrain),
/// and not while a transaction that began before the retrain is open: a
/// cursor of that transaction paused in the old generation goes on reading
/// it exactly. The merged delta pages then take the
/// next rows without extending the index.
#[test]
fn vacuum_retires_a_replaced_generation_once_no_snapshot_reads_it() {
    let cluster = Cluster::start("retrain_vacuum", &["autovacuum = off"]);
    let mut c = cluster.connect();
    let mut old = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g FROM generate_series(1, 20000) g;
         CREATE INDEX t_k ON t USING learned (k);
         INSERT INTO t SELECT 20000 + g FROM generate_series(1, 3000) g;
         DELETE FROM t WHERE k % 100 = 0;",
    );
    run_each(
        &mut old,
        "SET enable_seqscan = off; SET enable_bitmapscan = off;
         BEGIN ISOLATION LEVEL REPEATABLE READ;
         SELECT count(*) FROM t;",
    );
    let count = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT count(*) FROM t WHERE k > 15000", &[])
            .unwrap()
            .get(0)
    };
    let before = count(&mut old);
    assert_eq!(before, 8000 - 80);
    // A scan of the generation the retrain replaces, paused: its first rows
    // read, the rest read after the retrain and a VACUUM.
    let keys = |rows: Vec<postgres::Row>| -> Vec<i64> { rows.iter().map(|r| r.get(0)).collect() };
    old.batch_execute("DECLARE c CURSOR FOR SELECT k, ctid FROM t WHERE k > 15000 ORDER BY k")
        .unwrap();
    let mut read = keys(old.query("FETCH 100 FROM c", &[]).unwrap());
    assert_eq!(retained_free(&mut c, "t_k").0, 0, "nothing to retain yet");
    run_each(&mut c, "SELECT learned_retrain('t_k'); VACUUM t;");
    let (retained, free_before) = retained_free(&mut c, "t_k");
    assert!(retained > 0, "retired under a snapshot that can read it");
    read.extend(keys(old.query("FETCH ALL FROM c", &[]).unwrap()));
    let want: Vec<i64> = (15001..=23000).filter(|k| k % 100 != 0).collect();
    assert!(read == want, "the paused scan of the previous generation");
    assert_eq!(count(&mut old), before, "the old snapshot's answer");
    old.batch_execute("COMMIT").unwrap();

    run_each(&mut c, "VACUUM t");
    let (left, free) = retained_free(&mut c, "t_k");
    assert_eq!(left, 0, "VACUUM did not retire the previous generation");
    assert!(
        free >= free_before + retained,
        "{free} free pages, {free_before} before and {retained} retained"
    );
    let before_rows = size(&mut c, "t_k");
    c.batch_execute("INSERT INTO t SELECT 23000 + g FROM generate_series(1, 1000) g")
        .unwrap();
    assert_eq!(size(&mut c, "t_k"), before_rows, "the index grew");
    assert_index_matches_table(
        &mut c,
        "t_k",
        "SELECT k FROM t WHERE k > 15000 ORDER BY k",
        "after retiring",
    );
    assert_verified(&mut c, "t_k");
}

/// A retrain that ends without its switch (here cancelled after writing the
/// new generation) leaves the blocks it took noted as pending in the
/// metapage: VACUUM frees them, and the next retrain writes into them
/// instead of growing the index by as much again. Before, they were lost
/// until a REINDEX.
#[test]
fn blocks_of_a_cancelled_retrain_are_reused() {
    let cluster = Cluster::start("retrain_cancel", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT hashint8(g) % 1000000 FROM generate_series(1, 50000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         INSERT INTO t SELECT hashint8(g) % 1000000 FROM generate_series(50001, 60000) g",
    );
    let before = size(&mut c, "t_k");
    common::pause_lock(&mut c, 0, "lock");
    let mut r = cluster.connect();
    let pid = common::backend_pid(&mut r);
    r.batch_execute("SET learneddb.debug_pause = 'write'")
        .unwrap();
    let retrainer = std::thread::spawn(move || r.batch_execute("SELECT learned_retrain('t_k')"));
    common::wait_for_pause(&mut c, pid, "the retrain to pause after writing");
    let taken = size(&mut c, "t_k");
    assert!(taken > before, "the retrain took no blocks");
    c.query_one("SELECT pg_cancel_backend($1)", &[&pid])
        .unwrap();
    let err = retrainer
        .join()
        .unwrap()
        .expect_err("the cancelled retrain returned");
    assert_eq!(
        err.code().map(|s| s.code()),
        Some("57014"),
        "not a cancel: {err}"
    );
    common::pause_lock(&mut c, 0, "unlock");
    assert_verified(&mut c, "t_k");
    c.batch_execute("VACUUM t").unwrap();
    let free: i64 = c
        .query_one("SELECT free_pages FROM learned_index_stats('t_k')", &[])
        .unwrap()
        .get(0);
    let blocks = (taken - before) / 8192;
    assert!(
        free >= blocks,
        "{free} free pages after VACUUM; the cancelled retrain took {blocks}"
    );
    let path = common::retrain_path(&mut c, "t_k");
    assert_eq!(path, "merge");
    assert_eq!(
        size(&mut c, "t_k"),
        taken,
        "the retrain grew the index instead of reusing the blocks taken"
    );
    assert_verified(&mut c, "t_k");
    assert_index_matches_table(
        &mut c,
        "t_k",
        "SELECT coalesce(string_agg(k::text, ',' ORDER BY k), '') FROM t WHERE k >= -1000000",
        "after the retrain",
    );
}

/// Scattered inserts into a run long enough to cut are merged a segment at
/// a time: each retrain rewrites the segment (or two neighbouring ones)
/// owning most of the spilled rows
/// and keeps the rest of the run, so the index holds a second copy of one
/// segment, not of the whole run, until the old one is retired. After twenty
/// retrains under inserts and deletes it is within 1.5x a REINDEX at the
/// same fill, and every answer is exact.
#[test]
fn scattered_inserts_merge_a_segment_at_a_time() {
    let cluster = Cluster::start("retrain_partial", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        &format!(
            "CREATE TABLE t (id bigserial, k int8);
             INSERT INTO t (k) SELECT {RANDOM_KEY} FROM generate_series(1, 250000) g;
             INSERT INTO t (k) SELECT NULL FROM generate_series(1, 100);
             CREATE INDEX t_k ON t USING learned (k);"
        ),
    );
    let q = "SELECT string_agg(k::text, ',' ORDER BY k, id) FROM t WHERE k BETWEEN -3000000000000000000 AND 5000000000000000000";
    let mut paths = Vec::new();
    for round in 0..20i64 {
        c.execute(
            &format!(
                "INSERT INTO t (k) SELECT CASE WHEN g % 500 = 0 THEN NULL ELSE {RANDOM_KEY} END
                   FROM generate_series($1::int8, $1::int8 + 5000) g"
            ),
            &[&(1_000_000 + round * 10_000)],
        )
        .unwrap();
        c.execute("DELETE FROM t WHERE id % 97 = $1", &[&round])
            .unwrap();
        c.batch_execute("VACUUM t").unwrap();
        paths.push(retrain_path(&mut c, "t_k"));
        if round % 5 == 4 {
            assert_index_matches_table(&mut c, "t_k", q, &format!("round {round}"));
        }
    }
    eprintln!("paths: {paths:?}");
    assert!(
        !paths.iter().any(|p| p == "merge"),
        "a retrain merged the whole run: {paths:?}"
    );
    let partial = paths.iter().filter(|p| *p == "partial").count();
    assert!(partial >= 4, "{partial} partial merges: {paths:?}");
    assert_verified(&mut c, "t_k");
    assert_index_matches_table(&mut c, "t_k", q, "after the retrains");
    let nulls = "SELECT count(*)::text FROM t WHERE k IS NULL";
    assert_index_matches_table(&mut c, "t_k", nulls, "NULLs after the retrains");
    let retrained = size(&mut c, "t_k");
    // Merges of scattered inserts leave room in their pages (fillfactor 80
    // unless set): the REINDEX compared with does the same.
    c.batch_execute("ALTER INDEX t_k SET (fillfactor = 80); REINDEX INDEX t_k")
        .unwrap();
    let fresh = size(&mut c, "t_k");
    assert!(
        retrained * 2 <= fresh * 3,
        "{retrained} bytes after 20 retrains against {fresh} after REINDEX"
    );
}

/// The last entry of a segment is the fence of the kept page after it, so a
/// partial merge keeps it, tombstoned, when VACUUM has removed its row: the
/// run stays in order and every kept page's fence names the entry before it.
/// Here the row of the fence between the first two segments (the last entry
/// of run page 63, read off page 64 with pageinspect) is deleted and vacuumed
/// before rows spill into the first segment.
#[test]
fn a_partial_merge_keeps_a_tombstoned_fence() {
    let cluster = Cluster::start("retrain_fence", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        &format!(
            "CREATE EXTENSION pageinspect;
             CREATE TABLE t (id bigserial, k int8);
             INSERT INTO t (k) SELECT {RANDOM_KEY} FROM generate_series(1, 250000) g;
             CREATE INDEX t_k ON t USING learned (k);"
        ),
    );
    // A build writes its run from block 1 on: run page 64 is block 65. Its
    // header, after the 24-byte page header: the fence's key (the value
    // with its sign bit flipped) and TID (block << 16 | line pointer).
    let raw: Vec<u8> = c
        .query_one("SELECT substr(get_raw_page('t_k', 65), 25, 16)", &[])
        .unwrap()
        .get(0);
    let word = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().unwrap());
    let key = (word(0) ^ (1 << 63)) as i64;
    let tid = word(8);
    let ctid = format!("({},{})", tid >> 16, tid & 0xffff);
    let deleted = c
        .execute(
            "DELETE FROM t WHERE ctid = $1::text::tid AND k = $2",
            &[&ctid, &key],
        )
        .unwrap();
    assert_eq!(deleted, 1, "no row at the fence ({key}, {ctid})");
    // INDEX_CLEANUP ON: for one dead row VACUUM would skip the index.
    c.batch_execute("VACUUM (INDEX_CLEANUP ON) t").unwrap();
    // Copies of keys below the fence: they spill into the first segment's
    // slices (the built pages are full).
    c.execute(
        "INSERT INTO t (k) SELECT k FROM t WHERE k < $1 AND id % 3 = 0",
        &[&key],
    )
    .unwrap();
    assert_eq!(retrain_path(&mut c, "t_k"), "partial");
    assert_verified(&mut c, "t_k");
    let q = format!(
        "SELECT string_agg(k::text, ',' ORDER BY k, id) FROM t WHERE k < {key} + 1000000000000000"
    );
    assert_index_matches_table(&mut c, "t_k", &q, "after the partial merge");
    // The next retrain merges what is left, around the kept fence.
    c.batch_execute("VACUUM t").unwrap();
    retrain_path(&mut c, "t_k");
    assert_verified(&mut c, "t_k");
    assert_index_matches_table(&mut c, "t_k", &q, "after the next retrain");
}

/// Rows that spilled all over a run built full (random keys) are merged two
/// neighbouring segments at a time, a quarter of a run cut in eight: the
/// merge writes about a quarter of the run's pages, keeps the rest, and
/// answers stay exact with the model's leaves after the stretch moved, not
/// trained again.
#[test]
fn spread_spills_merge_a_quarter_of_the_run() {
    let cluster = Cluster::start("retrain_quarter", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        &format!(
            "CREATE TABLE t (id bigserial, k int8);
             INSERT INTO t (k) SELECT {RANDOM_KEY} FROM generate_series(1, 500000) g;
             CREATE INDEX t_k ON t USING learned (k);
             INSERT INTO t (k) SELECT {RANDOM_KEY} FROM generate_series(1000000, 1030000) g"
        ),
    );
    let run_pages = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT run_pages FROM learned_index_stats('t_k')", &[])
            .unwrap()
            .get(0)
    };
    let before = run_pages(&mut c);
    assert!(
        before >= 512,
        "{before} run pages: too few for eight segments"
    );
    let q = "SELECT string_agg(k::text, ',' ORDER BY k, id) FROM t
             WHERE k BETWEEN -9000000000000000000 AND 9000000000000000000";
    // The first two merges each take a quarter of the run: the rows spilled
    // all over it. (A third takes what is left where it lies.)
    for round in 0..3 {
        let row = c
            .query_one(
                "SELECT path, pages_written FROM learned_retrain('t_k')",
                &[],
            )
            .unwrap();
        let (path, written): (String, i64) = (row.get(0), row.get(1));
        assert_eq!(path, "partial", "round {round}");
        let pages = run_pages(&mut c);
        // Two segments of eight, written with room (one writes about a
        // sixth): more than a quarter of the run, less than half of it.
        assert!(
            round == 2 || (written * 4 > pages && written * 2 < pages),
            "round {round}: {written} pages written of {pages}"
        );
        assert_index_matches_table(&mut c, "t_k", q, &format!("round {round}"));
        assert_verified(&mut c, "t_k");
        c.batch_execute("VACUUM t").unwrap();
    }
}

/// A partial merge whose stretch ends the run and holds nothing live any
/// more (every row of the run's last eighth deleted, and the page its
/// spilled rows went to emptied by VACUUM, but still open) writes no entry:
/// the run keeps its head, and its last entry must still be one of them.
/// (It was left unset, read as the key 0, so that every scan above that
/// key read no run page.)
#[test]
fn a_merge_of_an_emptied_last_stretch_keeps_the_run_s_last_entry() {
    let cluster = Cluster::start("retrain_emptied_tail", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        &format!(
            "CREATE TABLE t (id bigserial, k int8);
             INSERT INTO t (k) SELECT {RANDOM_KEY} FROM generate_series(1, 500000) g;
             CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
             INSERT INTO t (k) SELECT percentile_disc(0.95) WITHIN GROUP (ORDER BY k) + 1 FROM t;"
        ),
    );
    assert_eq!(common::delta_stats(&mut c, "t_k"), (1, 1), "a spilled row");
    // More than the last segment (at most about a seventh of the run), less
    // than a fifth of it (past which the whole run is merged).
    run_each(
        &mut c,
        "DELETE FROM t WHERE k >= (SELECT percentile_disc(0.84) WITHIN GROUP (ORDER BY k) FROM t);
         VACUUM (INDEX_CLEANUP ON) t;",
    );
    assert_eq!(common::delta_stats(&mut c, "t_k").0, 0, "VACUUM emptied it");
    retrain_path(&mut c, "t_k");
    let queries = [
        "SELECT count(*)::text || ' ' || sum(id # k)::text FROM t WHERE k > -9000000000000000000",
        "SELECT string_agg(k::text, ',' ORDER BY k, id) FROM t WHERE k > 5000000000000000000",
    ];
    for q in queries {
        assert_index_matches_table(&mut c, "t_k", q, "after the retrain");
    }
    assert_verified(&mut c, "t_k");
    // The rows that come next, inside the run and above it, are found too.
    run_each(
        &mut c,
        &format!("INSERT INTO t (k) SELECT {RANDOM_KEY} FROM generate_series(600000, 620000) g"),
    );
    retrain_path(&mut c, "t_k");
    for q in queries {
        assert_index_matches_table(&mut c, "t_k", q, "after the next retrain");
    }
    assert_verified(&mut c, "t_k");
}
