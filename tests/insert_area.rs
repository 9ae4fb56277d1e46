//! Inserts among the run's keys go to the insert area of the run page that
//! owns them (src/storage/run.rs), so a lookup still reads one page; pages
//! without room spill to the delta, which a retrain merges with room again.

mod common;

use std::path::PathBuf;

use common::{
    assert_index_matches_table, assert_verified, index_blocks, retrain_path, run_each, texts,
    wait_for_pause, Cluster, RANDOM_KEY,
};

fn one(c: &mut postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

const PROBE_SETUP: &str = "SET enable_seqscan = off; SET enable_bitmapscan = off;
     SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_material = off";

/// Scattered inserts into an index built with room stay out of the delta,
/// and a probe of an inserted key reads one index page, as a probe of a
/// built one does. (The built keys, ten apart in heap order, pack to a few
/// bits each; the inserted ones, in two runs of the heap, take about two
/// bytes even packed, so room for a fifth more rows is most of each page.)
#[test]
fn scattered_inserts_land_in_the_page_a_lookup_reads() {
    let cluster = Cluster::start("insert_area", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g * 10 FROM generate_series(1, 50000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (fillfactor = 25);
         INSERT INTO t SELECT g * 10 + 1 + (hashint8(g) & 3) FROM generate_series(1, 50000, 7) g;
         INSERT INTO t SELECT g * 10 + 5 FROM generate_series(1, 50000, 13) g;
         VACUUM ANALYZE t;
         CREATE TABLE probes AS SELECT g * 10 + 5 AS k FROM generate_series(1, 50000, 13) g;
         ANALYZE probes",
    );
    // Every inserted key found a place inside the run.
    let delta = one(
        &mut c,
        "SELECT delta_entries FROM learned_index_stats('t_k')",
    );
    assert_eq!(delta, 0, "inserts went to the delta");
    run_each(&mut c, PROBE_SETUP);
    let probe = "SELECT count(*) FROM probes p JOIN t ON t.k = p.k";
    let plan = texts(&mut c, &format!("EXPLAIN (COSTS OFF) {probe}")).join("\n");
    assert!(
        plan.contains("Nested Loop") && plan.contains("t_k"),
        "{plan}"
    );
    assert_eq!(
        one(&mut c, probe),
        one(&mut c, "SELECT count(*) FROM probes")
    );
    let probes = one(&mut c, "SELECT count(*) FROM probes");
    let blocks = index_blocks(&mut c, "t_k", probe);
    assert!(
        (blocks as f64) < probes as f64 * 1.1,
        "{blocks} index blocks for {probes} probes of inserted keys"
    );
    c.batch_execute("RESET ALL").unwrap();
    for (sql, what) in [
        (
            "SELECT k FROM t WHERE k BETWEEN 70000 AND 90000 ORDER BY k",
            "range",
        ),
        (
            "SELECT k FROM t WHERE k BETWEEN 70000 AND 90000 ORDER BY k DESC",
            "range, backward",
        ),
        (
            "SELECT k FROM t WHERE k < 123457 ORDER BY k DESC LIMIT 50",
            "top-N, backward",
        ),
        (
            "SELECT k FROM t WHERE k = ANY('{15, 16, 20, 99995, 499995, 500005}') ORDER BY k",
            "= ANY",
        ),
    ] {
        assert_index_matches_table(&mut c, "t_k", sql, what);
    }
    assert_verified(&mut c, "t_k");
}

/// A backward scan that starts where a page begins reads that page too: an
/// inserted key between the last entry of one page and the first of the
/// next belongs to the second, below its first entry.
#[test]
fn backward_scans_find_inserted_keys_below_a_page() {
    let cluster = Cluster::start("insert_area_edges", &["autovacuum = off"]);
    let mut c = cluster.connect();
    // 4-byte keys, 90%: 721 entries a page, so page p begins at key 7210 * p.
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g * 10 FROM generate_series(0, 29999) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (fillfactor = 90);
         INSERT INTO t SELECT p * 7210 - 5 FROM generate_series(1, 40) p;
         INSERT INTO t VALUES (-3), (299995);
         ANALYZE t",
    );
    for p in [1i64, 2, 17, 39] {
        let below = p * 7210 - 1;
        let sql = format!("SELECT k FROM t WHERE k <= {below} ORDER BY k DESC LIMIT 3");
        let rows = assert_index_matches_table(&mut c, "t_k", &sql, "backward from a page start");
        assert_eq!(rows[0], (p * 7210 - 5).to_string());
        let sql = format!(
            "SELECT k FROM t WHERE k BETWEEN {} AND {below} ORDER BY k DESC",
            below - 30
        );
        assert_index_matches_table(&mut c, "t_k", &sql, "backward range ending at a page start");
    }
    for sql in [
        "SELECT k FROM t WHERE k < 0 ORDER BY k DESC",
        "SELECT k FROM t WHERE k <= 5 ORDER BY k DESC",
        "SELECT k FROM t ORDER BY k DESC LIMIT 5",
        "SELECT k FROM t ORDER BY k LIMIT 5",
    ] {
        assert_index_matches_table(&mut c, "t_k", sql, sql);
    }
    // A scroll cursor that turns around on those pages returns each row once.
    run_each(
        &mut c,
        "SET enable_seqscan = off; SET enable_bitmapscan = off",
    );
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(
        "DECLARE cur SCROLL CURSOR FOR SELECT k FROM t WHERE k BETWEEN 7100 AND 14500 ORDER BY k",
    )
    .unwrap();
    let fetch = |tx: &mut postgres::Transaction, what: &str| -> Vec<i64> {
        tx.query(&format!("FETCH {what} FROM cur"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let first = fetch(&mut tx, "FORWARD 15");
    let back = fetch(&mut tx, "BACKWARD 10");
    let again = fetch(&mut tx, "FORWARD 30");
    let mut expect_back: Vec<i64> = first[4..14].to_vec();
    expect_back.reverse();
    assert_eq!(back, expect_back, "turning back");
    assert_eq!(&again[..10], &first[5..15], "turning forward again");
    let rest = fetch(&mut tx, "FORWARD ALL");
    let all: Vec<i64> = first
        .iter()
        .chain(&again[10..])
        .chain(&rest)
        .copied()
        .collect();
    tx.commit().unwrap();
    c.batch_execute("RESET ALL").unwrap();
    let expected: Vec<i64> = c
        .query(
            "SELECT k FROM t WHERE k BETWEEN 7100 AND 14500 ORDER BY k",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(all, expected);
    assert_verified(&mut c, "t_k");
}

/// Full pages (the default for a build) have no room (but the last, and a
/// few bytes each): inserts inside the run spill to the delta, and every lookup then reads it. A retrain merges them
/// and leaves room in every page, so later inserts stay in the run pages,
/// and VACUUM removes dead inserted entries.
#[test]
fn full_pages_spill_and_a_merge_gives_them_room() {
    let cluster = Cluster::start("insert_area_spill", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g * 10 FROM generate_series(1, 40000) g ORDER BY hashint8(g);
         CREATE INDEX t_k ON t USING learned (k);
         INSERT INTO t SELECT g * 10 + 3 FROM generate_series(1, 40000, 11) g;
         ANALYZE t",
    );
    let delta = one(
        &mut c,
        "SELECT delta_entries FROM learned_index_stats('t_k')",
    );
    assert!(delta > 3000, "only {delta} entries spilled from full pages");
    assert_index_matches_table(
        &mut c,
        "t_k",
        "SELECT k FROM t WHERE k BETWEEN 1000 AND 3000 ORDER BY k",
        "spilled",
    );
    assert_verified(&mut c, "t_k");
    let path = retrain_path(&mut c, "t_k");
    assert_eq!(path, "merge");
    run_each(
        &mut c,
        "INSERT INTO t SELECT g * 10 + 7 FROM generate_series(1, 40000, 17) g;
         DELETE FROM t WHERE k % 10 = 7 AND k % 3 = 0;
         DELETE FROM t WHERE k % 10 = 0 AND k % 7 = 0;
         VACUUM t",
    );
    let delta = one(
        &mut c,
        "SELECT delta_entries FROM learned_index_stats('t_k')",
    );
    assert_eq!(delta, 0, "inserts after the merge went to the delta");
    for sql in [
        "SELECT k FROM t WHERE k BETWEEN 1000 AND 3000 ORDER BY k",
        "SELECT k FROM t WHERE k % 10 = 7 ORDER BY k DESC",
    ] {
        assert_index_matches_table(&mut c, "t_k", sql, sql);
    }
    assert_verified(&mut c, "t_k");
    // An append retrain keeps the pages and their inserted entries.
    run_each(
        &mut c,
        "INSERT INTO t SELECT 1000000 + g FROM generate_series(1, 3000) g",
    );
    let path = retrain_path(&mut c, "t_k");
    assert_eq!(path, "append");
    assert_index_matches_table(
        &mut c,
        "t_k",
        "SELECT k FROM t WHERE k > 390000 ORDER BY k",
        "after an append",
    );
    assert_verified(&mut c, "t_k");
}

/// Rows inserted while a merge retrain runs go to the delta; before the
/// switch the retrain moves them into the insert areas of the run it wrote,
/// so the new generation does not start out spilled.
#[test]
fn rows_inserted_during_a_merge_move_into_the_new_run() {
    let cluster = Cluster::start("insert_area_absorb", &["autovacuum = off"]);
    let mut c = cluster.connect();
    // Rows inserted into the pages' room, then a quarter of the run deleted:
    // the retrain merges (to drop the tombstones) a generation that never
    // spilled.
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g * 10 FROM generate_series(1, 40000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (fillfactor = 80);
         INSERT INTO t SELECT g * 10 + 3 FROM generate_series(1, 40000, 9) g;
         DELETE FROM t WHERE k % 40 = 0;
         VACUUM t",
    );
    let before = one(
        &mut c,
        "SELECT delta_entries FROM learned_index_stats('t_k')",
    );
    assert_eq!(before, 0, "rows went to the delta before the retrain");
    common::pause_lock(&mut c, 0, "lock");
    let mut r = cluster.connect();
    let pid = common::backend_pid(&mut r);
    r.batch_execute("SET learneddb.debug_pause = 'write'")
        .unwrap();
    let retrainer = std::thread::spawn(move || -> (String, i64) {
        let row = r
            .query_one("SELECT path, delta_merged FROM learned_retrain('t_k')", &[])
            .unwrap();
        (row.get(0), row.get(1))
    });
    wait_for_pause(&mut c, pid, "the retrain to pause after writing");
    // Scattered rows while the retrain waits.
    run_each(
        &mut c,
        "INSERT INTO t SELECT g * 10 + 6 FROM generate_series(1, 40000, 23) g",
    );
    let during = one(
        &mut c,
        "SELECT delta_entries FROM learned_index_stats('t_k')",
    );
    assert!(
        during > 1700,
        "only {during} rows in the delta during the retrain"
    );
    // They went to the delta although their keys lie inside the run (run
    // pages take no inserts while a retrain runs): the generation being
    // retrained is marked spilled, so its scans read the delta for them.
    assert_index_matches_table(
        &mut c,
        "t_k",
        "SELECT k FROM t WHERE k % 10 = 6 ORDER BY k",
        "while the retrain waits",
    );
    common::pause_lock(&mut c, 0, "unlock");
    let (path, merged) = retrainer.join().unwrap();
    assert_eq!(path, "merge");
    assert!(merged > 4444 + 1700, "{merged} entries merged");
    let after = one(
        &mut c,
        "SELECT delta_entries FROM learned_index_stats('t_k')",
    );
    assert_eq!(
        after, 0,
        "rows inserted during the retrain left in the delta"
    );
    for sql in [
        "SELECT k FROM t WHERE k % 10 = 6 ORDER BY k",
        "SELECT k FROM t WHERE k BETWEEN 100000 AND 120000 ORDER BY k DESC",
        "SELECT k FROM t WHERE k > 399000 ORDER BY k DESC",
    ] {
        assert_index_matches_table(&mut c, "t_k", sql, sql);
    }
    assert_verified(&mut c, "t_k");
}

/// A forward batch stops after about 512 run slots, mid-page; the next one
/// goes on from there. Inserted entries of the page and delta entries on
/// both sides of each cut, walked by a scroll cursor that turns around
/// across the cuts, come back once each and in order.
#[test]
fn batches_cut_mid_page_keep_inserted_and_delta_entries_once() {
    let cluster = Cluster::start("insert_area_cuts", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g * 10 FROM generate_series(0, 29999) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (fillfactor = 70);
         INSERT INTO t SELECT g * 10 + 5 FROM generate_series(0, 29999, 3) g;
         INSERT INTO t SELECT g * 10 + 5 FROM generate_series(1, 29999, 97) g;
         INSERT INTO t SELECT 150005 + g % 3 FROM generate_series(1, 3000) g;
         ANALYZE t",
    );
    // `entries` counts the run and the delta, not the insert areas (a
    // known gap of the statistics).
    let (entries, delta) = {
        let r = c
            .query_one(
                "SELECT entries, delta_entries FROM pg_stat_learned_indexes WHERE index_name = 't_k'",
                &[],
            )
            .unwrap();
        (r.get::<_, i64>(0), r.get::<_, i64>(1))
    };
    let rows = one(&mut c, "SELECT count(*) FROM t");
    assert_eq!(entries - delta, 30000);
    assert!(delta > 0, "some inserts spilled to the delta");
    assert!(rows > entries, "the run pages took inserted entries");
    let sql = "SELECT k FROM t WHERE k >= 1234 ORDER BY k";
    let expected: Vec<i64> = {
        c.batch_execute("SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off")
            .unwrap();
        let rows = c
            .query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        c.batch_execute("RESET ALL").unwrap();
        rows
    };
    run_each(
        &mut c,
        "SET enable_seqscan = off; SET enable_bitmapscan = off",
    );
    assert_index_matches_table(&mut c, "t_k", sql, "a long forward scan");
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("DECLARE cur SCROLL CURSOR FOR {sql}"))
        .unwrap();
    let n = expected.len() as i64;
    let mut pos = 0i64; // before the first row
    for (forward, k) in [
        (true, 600),
        (false, 100),
        (true, 700),
        (false, 650),
        (true, 1300),
        (false, 3),
        (true, 5000),
        (false, 2500),
        (true, 100_000),
    ] {
        let got: Vec<i64> = tx
            .query(
                &format!(
                    "FETCH {} {k} FROM cur",
                    if forward { "FORWARD" } else { "BACKWARD" }
                ),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let want: Vec<i64> = if forward {
            let rows = ((pos + 1)..=(pos + k).min(n))
                .map(|i| expected[i as usize - 1])
                .collect();
            pos = (pos + k).min(n + 1);
            rows
        } else {
            let rows = ((pos - k).max(1)..pos.min(n + 1))
                .rev()
                .map(|i| expected[i as usize - 1])
                .collect();
            pos = (pos - k).max(0);
            rows
        };
        assert_eq!(
            got,
            want,
            "FETCH {} {k}",
            if forward { "FORWARD" } else { "BACKWARD" }
        );
    }
    tx.commit().unwrap();
    assert_verified(&mut c, "t_k");
}

/// At a batch's cut, an inserted entry can equal the tombstoned run entry
/// the next batch starts at: VACUUM freed the heap TID and a new row with
/// the same key took it. The next batch returns it, once.
#[test]
fn an_inserted_pair_equal_to_a_tombstone_at_a_cut_is_returned_once() {
    let cluster = Cluster::start("insert_area_reused_tid", &["autovacuum = off"]);
    let mut c = cluster.connect();
    // 226 rows a heap page, every page full; keys g * 10 at run slot g. A
    // scan from 1234 starts at slot 124 and its first batch stops at 640,
    // the first group boundary 512 slots on: slot 640 holds key 6400.
    // INDEX_CLEANUP ON: VACUUM would otherwise skip the index for so few
    // dead rows and leave their heap TIDs unusable.
    run_each(
        &mut c,
        "CREATE TABLE t (k int8) WITH (autovacuum_enabled = off);
         INSERT INTO t SELECT g * 10 FROM generate_series(0, 226 * 133 - 1) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (fillfactor = 70);
         CREATE TEMP TABLE gone AS SELECT ctid AS tid FROM t WHERE k = 6400;
         DELETE FROM t WHERE k IN (6400, 6420, 6440, 6460, 6480, 6500, 6520, 6540);
         VACUUM (INDEX_CLEANUP ON) t;
         INSERT INTO t VALUES (6400);
         ANALYZE t",
    );
    let reused: bool = c
        .query_one(
            "SELECT (SELECT ctid FROM t WHERE k = 6400) = (SELECT tid FROM gone)",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(reused, "the new row took the deleted row's heap TID");
    run_each(
        &mut c,
        "SET enable_seqscan = off; SET enable_bitmapscan = off",
    );
    let rows = assert_index_matches_table(
        &mut c,
        "t_k",
        "SELECT k FROM t WHERE k >= 1234 ORDER BY k",
        "a scan across the cut",
    );
    assert_eq!(rows.iter().filter(|k| *k == "6400").count(), 1);
    assert_verified(&mut c, "t_k");
}

/// Run pages of `index` whose insert area holds packed entries: the
/// `packed_ins` field of the run page header (bytes 22-23 of the content)
/// is not zero. Block 0 is the metapage; the page kind is the third byte of
/// the special space.
fn packed_pages(c: &mut postgres::Client, index: &str) -> i64 {
    one(
        c,
        &format!(
            "SELECT count(*) FROM generate_series(1, pg_relation_size('{index}') / 8192 - 1) b,
               LATERAL get_raw_page('{index}', b::int) p
             WHERE get_byte(p, 8186) = 2 AND get_byte(p, 24 + 22) + get_byte(p, 24 + 23) > 0"
        ),
    )
}

/// Run pages with a fingerprint and raw inserted entries (`RunHeader::flags`
/// and `ins`): their blocks.
fn fingerprinted_pages(c: &mut postgres::Client, index: &str) -> Vec<i64> {
    c.query(
        &format!(
            "SELECT b FROM generate_series(1, pg_relation_size('{index}') / 8192 - 1) b,
               LATERAL get_raw_page('{index}', b::int) p
             WHERE get_byte(p, 8186) = 2 AND get_byte(p, 24 + 19) = 1
               AND get_byte(p, 24 + 20) + get_byte(p, 24 + 21) > 0 ORDER BY b"
        ),
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The keys of `t` in order, as `sql` returns them.
fn keys(c: &mut postgres::Client, sql: &str) -> Vec<i64> {
    c.query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Rows inserted beyond what a page's insert area holds raw are packed
/// there (`RunPage::compact`), so that a quarter more random keys than the
/// run held stay out of the delta. An index-only cursor paused inside a page
/// (it keeps its pin) reads on exactly across the packing; VACUUM tombstones
/// packed entries (an index-only scan would return the deleted rows
/// otherwise), and the next packing drops them.
#[test]
fn full_insert_areas_are_packed_and_stay_exact() {
    let cluster = Cluster::start("insert_area_packed", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        &format!(
            "CREATE EXTENSION pageinspect;
             CREATE TABLE t (id int8, k int8);
             INSERT INTO t SELECT g, {RANDOM_KEY} FROM generate_series(1, 60000) g;
             CREATE INDEX t_k ON t USING learned (k) WITH (fillfactor = 70);
             INSERT INTO t SELECT g, {RANDOM_KEY} FROM generate_series(100001, 103000) g;
             VACUUM ANALYZE t"
        ),
    );
    assert_eq!(packed_pages(&mut c, "t_k"), 0, "a few rows a page stay raw");
    c.batch_execute(
        "BEGIN ISOLATION LEVEL REPEATABLE READ;
         SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;
         DECLARE cur SCROLL CURSOR FOR SELECT k FROM t ORDER BY k",
    )
    .unwrap();
    let plan = texts(&mut c, "EXPLAIN (COSTS OFF) SELECT k FROM t ORDER BY k").join("\n");
    assert!(plan.contains("Index Only Scan using t_k"), "{plan}");
    let mut read = keys(&mut c, "FETCH 30000 FROM cur");
    // Another session fills the insert areas past their raw room.
    let mut other = cluster.connect();
    run_each(
        &mut other,
        &format!("INSERT INTO t SELECT g, {RANDOM_KEY} FROM generate_series(200001, 215000) g"),
    );
    assert!(
        packed_pages(&mut other, "t_k") > 20,
        "the inserts packed the insert areas"
    );
    read.extend(keys(&mut c, "FETCH ALL FROM cur"));
    let back = keys(&mut c, "FETCH BACKWARD 5000 FROM cur");
    c.batch_execute(
        "SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off; SET LOCAL enable_seqscan = on",
    )
    .unwrap();
    let expected = keys(&mut c, "SELECT k FROM t ORDER BY k");
    assert_eq!(expected.len(), 63000);
    assert!(read == expected, "the cursor read across the packing");
    let tail: Vec<i64> = expected.iter().rev().take(5000).copied().collect();
    assert!(back == tail, "the cursor read back across the packing");
    c.batch_execute("COMMIT").unwrap();

    let delta = one(
        &mut c,
        "SELECT delta_entries FROM learned_index_stats('t_k')",
    );
    assert_eq!(delta, 0, "rows went to the delta");
    let queries = [
        "SELECT k FROM t WHERE k BETWEEN -1000000000000000000 AND 1000000000000000000 ORDER BY k",
        "SELECT k FROM t WHERE k < 0 ORDER BY k DESC",
        "SELECT count(*) FROM t WHERE k > -9000000000000000000",
    ];
    let check = |c: &mut postgres::Client, when: &str| {
        c.batch_execute("VACUUM ANALYZE t").unwrap();
        for sql in queries {
            assert_index_matches_table(c, "t_k", sql, &format!("{when}: {sql}"));
        }
        let probes = format!(
            "SELECT count(*) FROM (SELECT {RANDOM_KEY} AS k FROM generate_series(200001, 215000, 7) g) p JOIN t USING (k)"
        );
        c.batch_execute(PROBE_SETUP).unwrap();
        let plan = texts(c, &format!("EXPLAIN (COSTS OFF) {probes}")).join("\n");
        assert!(plan.contains("t_k"), "{plan}");
        let found = one(c, &probes);
        c.batch_execute("RESET ALL; SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off")
            .unwrap();
        assert_eq!(found, one(c, &probes), "{when}: probes of packed keys");
        c.batch_execute("RESET ALL").unwrap();
        assert_verified(c, "t_k");
    };
    check(&mut c, "packed");

    // Among the deleted rows, many of the packed ones: VACUUM tombstones them.
    run_each(&mut c, "DELETE FROM t WHERE id % 3 = 0");
    c.batch_execute("VACUUM (INDEX_CLEANUP ON) t").unwrap();
    check(&mut c, "after VACUUM");
    // The next packing of each page drops them: without the deletes, about
    // 3,000 more rows fit before pages spill.
    run_each(
        &mut c,
        &format!("INSERT INTO t SELECT g, {RANDOM_KEY} FROM generate_series(300001, 306000) g"),
    );
    let delta = one(
        &mut c,
        "SELECT delta_entries FROM learned_index_stats('t_k')",
    );
    assert_eq!(delta, 0, "the tombstoned room was not reused");
    check(&mut c, "packed again");
}

/// A cluster without checksums (tests here write index files while it is
/// stopped) where `setup` made table `t` and its index `t_k`, whose metapage
/// then says format `version` (`Meta::version`, after the page header and
/// the magic number), as a build of that format would have written it.
/// Returns the cluster, running again, and the index's file.
fn index_of_format(name: &str, setup: &str, version: u8) -> (Cluster, PathBuf) {
    let cluster = Cluster::start_major(
        name,
        common::PG_MAJOR,
        &["autovacuum = off"],
        "",
        common::NO_CHECKSUMS,
    );
    let mut c = cluster.connect();
    run_each(
        &mut c,
        &format!(
            "CREATE EXTENSION IF NOT EXISTS learneddb; CREATE EXTENSION pageinspect;
             {setup}; CHECKPOINT"
        ),
    );
    let path: String = c
        .query_one("SELECT pg_relation_filepath('t_k')", &[])
        .unwrap()
        .get(0);
    let file = cluster.dir.join("data").join(path);
    drop(c);
    cluster.stop("fast");
    let old = common::overwrite(&file, 24 + 4, &[version, 0, 0, 0]);
    assert_eq!(old, [9, 0, 0, 0], "the index was not of the current format");
    cluster.restart();
    (cluster, file)
}

/// An index of format 5 (written before insert areas were packed) reads as
/// it is, and its pages are not packed, which that build could not read; a
/// retrain moves it to format 6, whose pages are.
#[test]
fn format_5_indexes_are_read_and_packed_after_a_retrain() {
    // A fresh build's metapage lists but one extent, so with the version set
    // to 5 it reads as one in the narrow layout of formats 5 and 6.
    let (cluster, _) = index_of_format(
        "insert_area_v5",
        &format!(
            "CREATE TABLE t (k int8);
             INSERT INTO t SELECT {RANDOM_KEY} FROM generate_series(1, 20000) g;
             CREATE INDEX t_k ON t USING learned (k) WITH (fillfactor = 70)"
        ),
        5,
    );
    let mut c = cluster.connect();
    let fill = |c: &mut postgres::Client, from: i64| {
        run_each(
            c,
            &format!(
                "INSERT INTO t SELECT {RANDOM_KEY} FROM generate_series({from}, {from} + 7999) g"
            ),
        );
    };
    fill(&mut c, 100_000);
    assert_eq!(
        packed_pages(&mut c, "t_k"),
        0,
        "a format 5 index was packed"
    );
    // The inserts wrote the metapage (opening delta pages) in its own format.
    let version = "SELECT get_byte(get_raw_page('t_k', 0), 28)::int8";
    assert_eq!(one(&mut c, version), 5, "the metapage's format changed");
    assert!(
        one(
            &mut c,
            "SELECT delta_entries FROM learned_index_stats('t_k')"
        ) > 0
    );
    let all = "SELECT k FROM t ORDER BY k";
    assert_index_matches_table(&mut c, "t_k", all, "format 5");
    assert_verified(&mut c, "t_k");
    let path = retrain_path(&mut c, "t_k");
    assert_eq!(path, "merge");
    fill(&mut c, 200_000);
    assert!(
        packed_pages(&mut c, "t_k") > 0,
        "format 9 after the retrain"
    );
    assert_eq!(one(&mut c, version), 9);
    assert_index_matches_table(&mut c, "t_k", all, "format 9");
    assert_verified(&mut c, "t_k");
}

/// VACUUM finds a run page's dead entries under a share lock and removes
/// them under a cleanup lock. An insert in between can pack the insert area,
/// moving the dead raw entries into its packed part: VACUUM finds them again
/// there by TID and tombstones them, or an index-only scan would return the
/// deleted rows. VACUUM is held between the two locks on the first run page.
#[test]
fn vacuum_finds_dead_entries_an_insert_packed_meanwhile() {
    let cluster = Cluster::start("insert_area_vacuum_pack", &["autovacuum = off"]);
    let mut c = cluster.connect();
    // Rows with keys just above the smallest go to run page 0; those deleted
    // are its only dead entries.
    run_each(
        &mut c,
        &format!(
            "CREATE TABLE t (id int8, k int8);
             INSERT INTO t SELECT g, {RANDOM_KEY} FROM generate_series(1, 60000) g;
             CREATE INDEX t_k ON t USING learned (k) WITH (fillfactor = 70);
             CREATE TABLE low AS SELECT min(k) AS m FROM t;
             INSERT INTO t SELECT -g, (SELECT m FROM low) + g FROM generate_series(1, 100) g;
             DELETE FROM t WHERE id < 0 AND id % 2 = 0"
        ),
    );
    let delta = one(
        &mut c,
        "SELECT delta_entries FROM learned_index_stats('t_k')",
    );
    assert_eq!(delta, 0, "the rows went to run page 0");
    common::pause_lock(&mut c, 0, "lock");
    let mut v = cluster.connect();
    let pid = common::backend_pid(&mut v);
    v.batch_execute("SET learneddb.debug_pause = 'vacuum_relock'")
        .unwrap();
    let vacuum = std::thread::spawn(move || {
        v.batch_execute("VACUUM (INDEX_CLEANUP ON) t").unwrap();
    });
    wait_for_pause(&mut c, pid, "VACUUM to pause before its cleanup lock");
    // Enough rows into page 0 that its raw room fills and it is packed.
    run_each(
        &mut c,
        "INSERT INTO t SELECT -1000 - g, (SELECT m FROM low) + 1000 + g FROM generate_series(1, 400) g",
    );
    common::pause_lock(&mut c, 0, "unlock");
    vacuum.join().unwrap();
    assert_eq!(
        one(
            &mut c,
            "SELECT delta_entries FROM learned_index_stats('t_k')"
        ),
        0
    );
    run_each(&mut c, "VACUUM ANALYZE t");
    let low = "SELECT count(*) FROM t WHERE k <= (SELECT m FROM low) + 2000";
    c.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        .unwrap();
    let plan = texts(&mut c, &format!("EXPLAIN (COSTS OFF) {low}")).join("\n");
    assert!(plan.contains("Index Only Scan using t_k"), "{plan}");
    c.batch_execute("RESET ALL").unwrap();
    assert_eq!(
        assert_index_matches_table(&mut c, "t_k", low, "page 0 after VACUUM"),
        ["451"]
    );
    assert_verified(&mut c, "t_k");
}

/// Run pages keep a fingerprint of their inserted keys (format 9), which
/// lets a lookup of one key skip the insert area. An index of format 8 gains
/// none until a retrain moves it to 9 (the build that wrote it could not
/// read them); lookups of every inserted key find it, raw or packed, before
/// and after VACUUM; and `learned_verify` reports an inserted key whose bit
/// is clear, which lookups would miss.
#[test]
fn fingerprints_cover_every_inserted_key() {
    let (cluster, file) = index_of_format(
        "insert_area_fingerprint",
        &format!(
            "CREATE TABLE t (id int8, k int8);
             INSERT INTO t SELECT g, {RANDOM_KEY} FROM generate_series(1, 20000) g;
             CREATE INDEX t_k ON t USING learned (k) WITH (fillfactor = 70, retrain = off)"
        ),
        8,
    );
    let mut c = cluster.connect();
    let fill = |c: &mut postgres::Client, from: i64| {
        run_each(
            c,
            &format!(
                "INSERT INTO t SELECT g, {RANDOM_KEY} FROM generate_series({from}, {from} + 2999) g"
            ),
        );
    };
    // Every key, one lookup each (an array of keys is probed key by key),
    // and a count of each inserted key.
    let lookups = [
        "SELECT count(*) FROM t WHERE k = ANY(ARRAY(SELECT k FROM t))",
        "SELECT k, count(*) FROM t WHERE k = ANY(ARRAY(SELECT k FROM t WHERE id > 20000)) GROUP BY k ORDER BY k",
    ];
    let check = |c: &mut postgres::Client, stage: &str| {
        for q in lookups {
            assert_index_matches_table(c, "t_k", q, stage);
        }
        assert_verified(c, "t_k");
    };
    fill(&mut c, 100_000);
    assert!(
        one(
            &mut c,
            "SELECT delta_entries FROM learned_index_stats('t_k')"
        ) < 300,
        "the rows went to the run pages' insert areas"
    );
    assert_eq!(
        fingerprinted_pages(&mut c, "t_k"),
        Vec::<i64>::new(),
        "a format 8 index gained fingerprints"
    );
    check(&mut c, "format 8");
    retrain_path(&mut c, "t_k");
    let version = "SELECT get_byte(get_raw_page('t_k', 0), 28)::int8";
    assert_eq!(one(&mut c, version), 9);
    fill(&mut c, 200_000);
    let pages = fingerprinted_pages(&mut c, "t_k");
    assert!(
        pages.len() > 5,
        "pages took inserts without fingerprints: {pages:?}"
    );
    check(&mut c, "fingerprints");
    // VACUUM removes dead raw entries and tombstones packed ones; the next
    // packings drop those.
    run_each(
        &mut c,
        "DELETE FROM t WHERE id > 200000 AND id % 2 = 0; VACUUM (INDEX_CLEANUP ON) t",
    );
    check(&mut c, "after VACUUM");
    fill(&mut c, 300_000);
    check(&mut c, "inserts after VACUUM");
    assert!(packed_pages(&mut c, "t_k") > 0, "no insert area was packed");
    // A fingerprint cleared on disk: every raw key of the page is missing
    // from it, which learned_verify reports.
    let blk = *fingerprinted_pages(&mut c, "t_k").first().unwrap() as u64;
    c.batch_execute("CHECKPOINT").unwrap();
    drop(c);
    cluster.stop("fast");
    // The fingerprint ends the page's content, before the 8-byte special space.
    let old = common::overwrite(&file, blk * 8192 + 8192 - 8 - 128, &[0; 128]);
    assert_ne!(old, [0; 128]);
    cluster.restart();
    let mut c = cluster.connect();
    let err = c
        .query("SELECT learned_verify('t_k')", &[])
        .expect_err("learned_verify passed a fingerprint missing its keys");
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "XX002", "{}", db.message());
    assert!(
        db.message().contains("fingerprint lacks") && db.message().contains("t_k"),
        "{}",
        db.message()
    );
}
