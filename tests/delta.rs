//! The delta between retrains: what a probe reads while rows are inserted, and
//! that the per-backend hint of the open page survives what can make it stale.

mod common;

use common::{assert_index_matches_table, assert_verified, index_blocks, run_each, texts, Cluster};

fn count(c: &mut postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// Open delta pages carry a lower bound of their keys in the directory, so a
/// probe of a key below every open page's keys reads its run page and nothing
/// else: with rows appended above the run (time-ordered keys), old keys cost
/// what they cost before the inserts.
#[test]
fn probes_below_the_open_pages_read_only_the_run() {
    let cluster = Cluster::start("delta_probe", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g * 3 FROM generate_series(1, 100000) g;
         CREATE INDEX t_k ON t USING learned (k);
         CREATE TABLE probes AS SELECT k FROM t ORDER BY hashint8(k) LIMIT 2000;
         VACUUM ANALYZE t; ANALYZE probes;
         SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_hashjoin = off;
         SET enable_mergejoin = off; SET enable_material = off",
    );
    let probe = "SELECT count(*) FROM probes p JOIN t ON t.k = p.k";
    let plan = texts(&mut c, &format!("EXPLAIN (COSTS OFF) {probe}")).join("\n");
    assert!(
        plan.contains("Nested Loop") && plan.contains("t_k"),
        "{plan}"
    );
    let fresh = index_blocks(&mut c, "t_k", probe);

    // Appended keys: several closed delta pages above the run and open ones,
    // from two sessions so that two pages take inserts at once.
    let mut other = cluster.connect();
    for round in 0..6i64 {
        for (n, s) in [&mut c, &mut other].into_iter().enumerate() {
            s.execute(
                "INSERT INTO t SELECT 300000 + $1::int8 * 1000 + g FROM generate_series(1, 500) g",
                &[&(round * 2 + n as i64)],
            )
            .unwrap();
        }
    }
    let stats = common::delta_stats(&mut c, "t_k");
    assert!(stats.0 == 6000 && stats.1 >= 5, "{stats:?}");
    c.batch_execute("VACUUM t").unwrap();
    let appended = index_blocks(&mut c, "t_k", probe);
    eprintln!("index blocks for 2000 probes: fresh {fresh}, with {stats:?} delta {appended}");
    // Each probe reads its run page; the scan reads the metapage and the
    // directory once. No delta page is read.
    assert!(
        appended <= fresh + 2,
        "probes below the delta read delta pages: {fresh} blocks fresh, {appended} with the delta"
    );
    assert_eq!(count(&mut c, probe), 2000);

    // A cursor that read the directory (with the open pages' bounds above
    // its keys) before another session inserted below them: its snapshot
    // cannot see that row, and a scan begun afterwards reads the lowered
    // bound and finds it.
    c.batch_execute(
        "BEGIN; DECLARE cur CURSOR FOR SELECT k FROM t WHERE k BETWEEN 27 AND 36 ORDER BY k",
    )
    .unwrap();
    assert_eq!(texts(&mut c, "FETCH 1 FROM cur"), ["27"]);
    other.batch_execute("INSERT INTO t VALUES (32)").unwrap();
    assert_eq!(texts(&mut c, "FETCH ALL FROM cur"), ["30", "33", "36"]);
    assert_eq!(
        texts(
            &mut c,
            "SELECT k FROM t WHERE k BETWEEN 27 AND 36 ORDER BY k"
        ),
        ["27", "30", "32", "33", "36"]
    );
    c.batch_execute("COMMIT").unwrap();

    let selects = "DO $$ DECLARE r int8; BEGIN FOR i IN 1..100 LOOP
           EXECUTE 'SELECT count(*) FROM t WHERE k = $1' INTO STRICT r USING 1002 + i * 2400;
         END LOOP; END $$";
    let before = index_blocks(&mut c, "t_k", selects);

    // A key inserted below an open page's bound lowers it: the row is found,
    // by index and index-only scans, and the bound check in learned_verify
    // passes. (More rows of 31 than its run page's insert area holds even
    // packed, at most 16,384, so that some go to the delta.)
    c.batch_execute(
        "INSERT INTO t SELECT 31 FROM generate_series(1, 20000); INSERT INTO t VALUES (299999)",
    )
    .unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM t WHERE k = 31"), 20000);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM t WHERE k BETWEEN 29 AND 34"),
        20003
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM t WHERE k = 299999"), 1);
    // Every select of a key above 31, each a scan of its own, reads the
    // page (a nested loop reads it once and then keeps a filter of its keys),
    // and the directory, now that the generation spilled.
    let after = index_blocks(&mut c, "t_k", selects);
    assert!(
        after >= before + 2 * 100,
        "the open page holding 31 must be read by selects above it: {after} blocks, {before} before"
    );
    assert_verified(&mut c, "t_k");
}

/// A scan reads the delta directory only when its keys may lie in the delta:
/// with rows appended above the run (and none spilled), a point select of an
/// older key reads the metapage and its run page, not a directory that grows
/// a page per 125,000 appended rows; selects of appended keys, and ranges
/// that reach them, still read it and find them.
#[test]
fn selects_below_the_appended_rows_read_no_directory() {
    let cluster = Cluster::start("delta_lazy_dir", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g * 3 FROM generate_series(1, 100000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         INSERT INTO t SELECT 1000000 + g FROM generate_series(1, 400000) g;
         VACUUM ANALYZE t;
         SET enable_seqscan = off; SET enable_bitmapscan = off",
    );
    // A directory page lists 254 delta pages of 508 entries.
    let delta_pages = count(&mut c, "SELECT delta_pages FROM learned_index_stats('t_k')");
    let dir_pages = (delta_pages + 253) / 254;
    // 100 statements, each planned and scanned anew.
    let selects = |lo: i64, step: i64| {
        format!(
            "DO $$ DECLARE r int8; BEGIN FOR i IN 1..100 LOOP
               EXECUTE 'SELECT k FROM t WHERE k = $1' INTO STRICT r USING {lo} + i * {step};
             END LOOP; END $$"
        )
    };
    let below = index_blocks(&mut c, "t_k", &selects(0, 2997));
    let above = index_blocks(&mut c, "t_k", &selects(1000000, 3989));
    eprintln!(
        "index blocks for 100 selects with {dir_pages} directory pages: {below} below the \
         appended rows, {above} of appended keys"
    );
    assert!(
        dir_pages >= 3,
        "too few directory pages to tell: {dir_pages}"
    );
    // The planner's and the scan's metapage reads and the run page: three a
    // statement; with the directory, three more.
    assert!(
        below <= 100 * 3 + 10,
        "selects below the appended rows read the directory: {below} blocks"
    );
    assert!(
        above >= below + 100 * (dir_pages - 1),
        "selects of appended keys must read the directory: {above} blocks against {below}"
    );
    for q in [
        "SELECT string_agg(k::text, ',' ORDER BY k) FROM t WHERE k BETWEEN 299990 AND 1000020",
        "SELECT string_agg(k::text, ',' ORDER BY k DESC) FROM t WHERE k > 1399990",
        "SELECT count(*)::text FROM t WHERE k <= 300000",
        "SELECT count(*)::text FROM t WHERE k IN (3, 300000, 1000001, 1400000, 1400001)",
    ] {
        assert_index_matches_table(&mut c, "t_k", q, q);
    }
    assert_verified(&mut c, "t_k");
}

/// Rows that spill from full run pages go to delta pages bounded to the
/// slice of 16 run pages their key falls in, so a lookup reads the spilled
/// pages of its own slice, not every page the spilled rows of the whole key
/// range went to; ranges across slices, NULLs and appended keys still find
/// every row.
#[test]
fn spilled_rows_cost_a_lookup_only_its_slice() {
    let cluster = Cluster::start("delta_slices", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         SELECT setseed(0.25);
         INSERT INTO t SELECT (random() * 1e12)::int8 FROM generate_series(1, 400000);
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         INSERT INTO t SELECT (random() * 1e12)::int8 FROM generate_series(1, 60000);
         INSERT INTO t SELECT NULL FROM generate_series(1, 100);
         INSERT INTO t SELECT 1e12::int8 + g FROM generate_series(1, 1000) g;
         VACUUM ANALYZE t;
         SET enable_seqscan = off; SET enable_bitmapscan = off",
    );
    let run_pages = count(&mut c, "SELECT run_pages FROM learned_index_stats('t_k')");
    let delta_pages = count(&mut c, "SELECT delta_pages FROM learned_index_stats('t_k')");
    let slices = (run_pages + 15) / 16;
    // 100 statements, each planned and scanned anew, over the whole range.
    let blocks = index_blocks(
        &mut c,
        "t_k",
        "DO $$ DECLARE r int8; BEGIN FOR i IN 1..100 LOOP
           EXECUTE 'SELECT count(*) FROM t WHERE k = $1' INTO STRICT r USING i * 9999999937;
         END LOOP; END $$",
    );
    eprintln!(
        "{blocks} index blocks for 100 selects: {run_pages} run pages in {slices} slices, \
         {delta_pages} delta pages"
    );
    assert!(
        slices >= 12 && delta_pages >= 100,
        "too few slices or spilled pages to tell: {slices}, {delta_pages}"
    );
    // Two metapage reads, the directory, the run page, and the spilled pages
    // of one slice (some fill more than others): far below every page.
    let dir_pages = (delta_pages + 253) / 254;
    let per_select = 3 + dir_pages + 3 * delta_pages / slices;
    assert!(
        blocks <= 100 * per_select,
        "selects read more than their slice: {blocks} blocks, {per_select} a select allowed"
    );
    assert!(
        blocks * 3 < 100 * delta_pages,
        "selects read nearly every delta page: {blocks} blocks"
    );
    for q in [
        "SELECT count(*)::text FROM t WHERE k BETWEEN 1e11::int8 AND 4e11::int8",
        "SELECT string_agg(k::text, ',' ORDER BY k) FROM t WHERE k BETWEEN 5e11::int8 AND 5e11::int8 + 3e7::int8",
        "SELECT string_agg(k::text, ',' ORDER BY k DESC) FROM t WHERE k > 1e12::int8 - 1e8::int8",
        "SELECT count(*)::text FROM t WHERE k IS NULL",
        "SELECT count(*)::text FROM t WHERE k < 2e10::int8 OR k > 9.9e11::int8",
    ] {
        assert_index_matches_table(&mut c, "t_k", q, q);
    }
    assert_verified(&mut c, "t_k");
    // A retrain's freeze closes the bounded pages with the others; what
    // spills afterwards opens new ones.
    run_each(
        &mut c,
        "SELECT learned_retrain('t_k');
         INSERT INTO t SELECT (random() * 1e12)::int8 FROM generate_series(1, 30000)",
    );
    assert_index_matches_table(
        &mut c,
        "t_k",
        "SELECT count(*)::text FROM t WHERE k BETWEEN 3e11::int8 AND 6e11::int8",
        "SELECT count(*)::text FROM t WHERE k BETWEEN 3e11::int8 AND 6e11::int8",
    );
    assert_verified(&mut c, "t_k");
}

/// A bounded page that fills is split: two pages, each bounded to half its
/// keys (split at their median), take its entries, so the spilled pages of
/// one slice partition its keys and a lookup reads one of them however many
/// there are: here 100,000 rows spill into the one slice of a small run.
#[test]
fn a_bounded_page_that_fills_is_split() {
    let cluster = Cluster::start("delta_halves", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         SELECT setseed(0.5);
         INSERT INTO t SELECT g * 3 FROM generate_series(1, 100000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         INSERT INTO t SELECT (random() * 300000)::int8 FROM generate_series(1, 100000);
         VACUUM ANALYZE t;
         SET enable_seqscan = off; SET enable_bitmapscan = off",
    );
    let run_pages = count(&mut c, "SELECT run_pages FROM learned_index_stats('t_k')");
    let delta_pages = count(&mut c, "SELECT delta_pages FROM learned_index_stats('t_k')");
    let blocks = index_blocks(
        &mut c,
        "t_k",
        "DO $$ DECLARE r int8; BEGIN FOR i IN 1..100 LOOP
           EXECUTE 'SELECT count(*) FROM t WHERE k = $1' INTO STRICT r USING i * 2999;
         END LOOP; END $$",
    );
    eprintln!(
        "{blocks} index blocks for 100 selects: {run_pages} run pages, {delta_pages} delta pages"
    );
    assert!(
        run_pages <= 16 && delta_pages >= 150,
        "not one slice with many spilled pages: {run_pages} run pages, {delta_pages} delta pages"
    );
    // Two metapage reads (the scan's holds it while it reads the directory),
    // the directory (an entry per delta page: live,
    // split and not freed yet, or free; the index was never retrained, so
    // its free pages are all delta pages), the run page and one delta page.
    // Pages closed whole and replaced by empty halves made that a page per
    // halving (eight more for 256 pages).
    let listed = count(
        &mut c,
        "SELECT delta_pages + retained_pages + free_pages FROM learned_index_stats('t_k')",
    );
    let dir_pages = (listed + 253) / 254;
    let per_select = 2 + dir_pages + 2;
    // And the model's pages, read by the first select of the connection.
    assert!(
        blocks <= 100 * per_select + 10,
        "selects read more than one delta page: {blocks} blocks, {per_select} a select allowed"
    );
    for q in [
        "SELECT count(*)::text FROM t WHERE k BETWEEN 1000 AND 200000",
        "SELECT string_agg(k::text, ',' ORDER BY k) FROM t WHERE k BETWEEN 150000 AND 150300",
        "SELECT count(*)::text FROM t WHERE k IN (0, 3, 150000, 299999, 300000)",
    ] {
        assert_index_matches_table(&mut c, "t_k", q, q);
    }
    assert_verified(&mut c, "t_k");
}

/// A key above the run's last entry can only be in the delta: a probe for
/// it reads the delta page that holds it and no run page.
#[test]
fn probes_above_the_run_read_no_run_page() {
    let cluster = Cluster::start("delta_above", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g FROM generate_series(1, 100000) g;
         CREATE INDEX t_k ON t USING learned (k);
         INSERT INTO t SELECT 100000 + g FROM generate_series(1, 300) g;
         CREATE TABLE probes AS SELECT k FROM t WHERE k > 100000 ORDER BY hashint8(k) LIMIT 200;
         VACUUM ANALYZE t; ANALYZE probes;
         SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_hashjoin = off;
         SET enable_mergejoin = off; SET enable_material = off",
    );
    let delta_pages: i64 = c
        .query_one("SELECT delta_pages FROM learned_index_stats('t_k')", &[])
        .unwrap()
        .get(0);
    assert_eq!(delta_pages, 1, "300 appended rows fill one delta page");
    let probe = "SELECT count(*) FROM probes p JOIN t ON t.k = p.k";
    assert_eq!(count(&mut c, probe), 200);
    let blocks = index_blocks(&mut c, "t_k", probe);
    // One delta page a probe, plus the metapage and the directory once (204
    // here); reading the run's last page too would make it about 400.
    assert!(
        blocks <= 200 + 20,
        "{blocks} index blocks for 200 probes above the run"
    );
    // Ranges that start below the run's end still read it.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM t WHERE k BETWEEN 99990 AND 100010"
        ),
        21
    );
    assert_verified(&mut c, "t_k");
}

/// The page a backend last inserted into is a hint: a retrain's freeze closes
/// it, VACUUM may empty and free it, REINDEX and TRUNCATE replace the index's
/// storage. Inserts after each go where they belong and are found.
#[test]
fn the_last_open_page_hint_survives_what_replaces_it() {
    let cluster = Cluster::start("delta_hint", &["autovacuum = off"]);
    let mut c = cluster.connect();
    let mut other = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (id bigserial, k int8);
         INSERT INTO t (k) SELECT g FROM generate_series(1, 20000) g;
         CREATE INDEX t_k ON t USING learned (k);",
    );
    let insert = |c: &mut postgres::Client, from: i64| {
        c.execute(
            "INSERT INTO t (k) SELECT $1::int8 + (hashint8(g) & 4095) FROM generate_series(1, 700) g",
            &[&from],
        )
        .unwrap();
    };
    let check = |c: &mut postgres::Client, what: &str| {
        assert_index_matches_table(
            c,
            "t_k",
            "SELECT string_agg(k::text, ',' ORDER BY k, id) FROM t WHERE k > 0",
            what,
        );
        assert_verified(c, "t_k");
    };
    insert(&mut c, 0);
    // Another session's retrain closes the page this one inserts into.
    other
        .batch_execute("SELECT learned_retrain('t_k')")
        .unwrap();
    insert(&mut c, 30000);
    check(&mut c, "after a retrain froze the page");
    // Rows of the open page deleted and vacuumed away; the next retrain
    // retires the frozen pages, and inserts reuse them.
    run_each(
        &mut other,
        "DELETE FROM t WHERE k > 30000; VACUUM t; SELECT learned_retrain('t_k'); SELECT learned_retrain('t_k')",
    );
    insert(&mut c, 40000);
    check(&mut c, "after VACUUM, retire and reuse");
    other.batch_execute("REINDEX INDEX t_k").unwrap();
    insert(&mut c, 50000);
    check(&mut c, "after REINDEX");
    run_each(
        &mut other,
        "TRUNCATE t; INSERT INTO t (k) SELECT g FROM generate_series(1, 5000) g",
    );
    insert(&mut c, 60000);
    check(&mut c, "after TRUNCATE");
    assert_eq!(count(&mut c, "SELECT count(*) FROM t"), 5700);
}

/// Sessions appending at once from one sequence (serial ids, timestamps)
/// queue on one open delta page, as btree's queue on its rightmost leaf:
/// were each to fill a page of its own, every page would cover the same
/// keys and a lookup of a recent key would read one page per session.
/// (How often the sessions collide is up to the scheduler; with one page
/// for appends they cannot part ways however they collide.)
#[test]
fn concurrent_appenders_fill_one_page_at_a_time() {
    let cluster = Cluster::start("delta_appenders", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8);
         INSERT INTO t SELECT g FROM generate_series(1, 100000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         CREATE SEQUENCE s START 100001",
    );
    let sessions: Vec<_> = (0..3)
        .map(|_| {
            let mut s = cluster.connect();
            std::thread::spawn(move || {
                for _ in 0..40 {
                    s.batch_execute(
                        "INSERT INTO t SELECT nextval('s') FROM generate_series(1, 50)",
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    sessions.into_iter().for_each(|t| t.join().unwrap());
    run_each(
        &mut c,
        "CREATE TABLE probes AS SELECT k FROM t WHERE k > 100000 ORDER BY hashint8(k) LIMIT 500;
         VACUUM ANALYZE t; ANALYZE probes;
         SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_hashjoin = off;
         SET enable_mergejoin = off; SET enable_material = off",
    );
    let probe = "SELECT count(*) FROM probes p JOIN t ON t.k = p.k";
    assert_eq!(count(&mut c, probe), 500);
    let delta_pages = count(&mut c, "SELECT delta_pages FROM learned_index_stats('t_k')");
    // Blocks each of 200 probes reads, alone. Every probe reads the same
    // metapage, directory and run blocks, and then the delta pages whose
    // range holds its key: one, or two where a session's key arrived after
    // the page it was drawn for had filled (many of them when a session is
    // descheduled between drawing a key and inserting it, as on a loaded
    // machine: up to two fifths of the probes were seen). Were each session
    // to fill a page of its own, every page would span the keys of three,
    // and nearly every probe would read two or three.
    let keys: Vec<i64> = c
        .query("SELECT k FROM probes LIMIT 200", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut blocks: Vec<i64> = keys
        .iter()
        .map(|k| {
            index_blocks(
                &mut c,
                "t_k",
                &format!("SELECT count(*) FROM t WHERE k = {k}"),
            )
        })
        .collect();
    blocks.sort_unstable();
    let (least, median) = (blocks[0], blocks[blocks.len() / 2]);
    eprintln!(
        "index blocks of 200 probes of 6,000 appended keys in {delta_pages} delta pages: \
         least {least}, median {median}, most {}",
        blocks[blocks.len() - 1]
    );
    assert_eq!(
        median, least,
        "most probes of appended keys read more than one delta page: {blocks:?}"
    );
    assert_index_matches_table(
        &mut c,
        "t_k",
        "SELECT string_agg(k::text, ',' ORDER BY k) FROM t WHERE k > 99990",
        "appended by three sessions",
    );
    assert_verified(&mut c, "t_k");
}

/// A nested loop remembers the keys of the delta pages it read (a filter per
/// page), so a probe of a key a page did not hold skips it: under random
/// inserts into a run built full, probes of the run's keys read their run
/// page and rarely the delta page of its slice beside it. The filters skip
/// pages only: keys inserted again, spilled keys and keys in no row come out
/// as the table has them, in index and index-only scans alike.
#[test]
fn a_nested_loop_skips_delta_pages_that_do_not_hold_its_keys() {
    let cluster = Cluster::start("delta_filters", &["autovacuum = off"]);
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8, v int8);
         SELECT setseed(0.5);
         INSERT INTO t SELECT (random() * 1e12)::int8, g FROM generate_series(1, 400000) g;
         CREATE TABLE old AS SELECT k FROM t ORDER BY v LIMIT 20000;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         INSERT INTO t SELECT (random() * 1e12)::int8, -g FROM generate_series(1, 60000) g;
         CREATE TABLE new AS SELECT k FROM t WHERE v < 0 ORDER BY v LIMIT 5000;
         -- Keys of the run inserted again: both in the run and in a delta page.
         INSERT INTO t SELECT k, 0 FROM old ORDER BY k LIMIT 300;
         CREATE TABLE mixed AS
           SELECT k FROM old UNION ALL SELECT k FROM new
           UNION ALL SELECT k + 1 FROM new UNION ALL SELECT (random() * 1e12)::int8 FROM generate_series(1, 2000);
         VACUUM ANALYZE t, old, new, mixed;
         SET enable_seqscan = off; SET enable_bitmapscan = off;
         SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_memoize = off",
    );
    let delta_pages = count(&mut c, "SELECT delta_pages FROM learned_index_stats('t_k')");
    assert!(
        delta_pages >= 100,
        "too few spilled pages to tell: {delta_pages}"
    );
    let plan = texts(
        &mut c,
        "EXPLAIN (COSTS OFF) SELECT count(*) FROM old JOIN t USING (k)",
    )
    .join("\n");
    assert!(
        plan.contains("Nested Loop") && plan.contains("Index Only Scan using t_k"),
        "{plan}"
    );
    let blocks = index_blocks(&mut c, "t_k", "SELECT count(*) FROM old JOIN t USING (k)");
    let probes = 20_000;
    eprintln!("{blocks} index blocks for {probes} probes of run keys, {delta_pages} delta pages");
    // Each probe reads its run page; each delta page is read once for its
    // filter, and again for the keys it holds or its filter lets through
    // (about 3%). Without filters every probe reads a delta page too.
    let dir_pages = (delta_pages + 253) / 254;
    let allowed = probes + probes / 10 + 2 * delta_pages + dir_pages + 10;
    assert!(
        blocks <= allowed,
        "probes of run keys read the delta: {blocks} index blocks, {allowed} allowed"
    );
    for q in [
        "SELECT count(*)::text || ' ' || sum(t.v)::text FROM old JOIN t USING (k)",
        "SELECT count(*)::text || ' ' || sum(t.v)::text FROM new JOIN t USING (k)",
        "SELECT count(*)::text || ' ' || sum(t.v)::text FROM mixed JOIN t USING (k)",
        "SELECT count(*)::text FROM mixed JOIN t USING (k)",
        // A few outer rows: the table's side of these is a nested loop of
        // sequential scans.
        "SELECT count(*)::text FROM (SELECT k FROM mixed ORDER BY hashint8(k) LIMIT 200) m \
         JOIN t ON t.k = ANY (ARRAY[m.k, m.k + 1, m.k - 1])",
        "SELECT count(*)::text FROM (SELECT k FROM mixed ORDER BY hashint8(k) LIMIT 200) m \
         JOIN t ON t.k BETWEEN m.k AND m.k + 1000000",
    ] {
        c.batch_execute(
            "SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_memoize = off",
        )
        .unwrap();
        assert_index_matches_table(&mut c, "t_k", q, q);
    }
    assert_verified(&mut c, "t_k");
}

/// A nested loop paused in a cursor keeps its filters while the pages it
/// read change under it: rows inserted with the keys it probes (some filling
/// and splitting the pages it read), rows deleted and VACUUMed. It returns
/// what its snapshot sees, as the table does.
#[test]
fn a_paused_nested_loop_returns_its_snapshot_across_changed_delta_pages() {
    let cluster = Cluster::start("delta_filters_paused", &["autovacuum = off"]);
    let mut c = cluster.connect();
    let mut other = cluster.connect();
    run_each(
        &mut c,
        "CREATE TABLE t (k int8, v int8);
         SELECT setseed(0.75);
         INSERT INTO t SELECT (random() * 1e9)::int8, g FROM generate_series(1, 200000) g;
         CREATE INDEX t_k ON t USING learned (k) WITH (retrain = off);
         INSERT INTO t SELECT (random() * 1e9)::int8, -g FROM generate_series(1, 30000) g;
         CREATE TABLE probes AS SELECT k FROM t WHERE v % 10 = 0 ORDER BY random();
         VACUUM ANALYZE t, probes",
    );
    let query = "SELECT p.k::text || ':' || t.v::text FROM probes p JOIN t ON t.k = p.k";
    let mut expected = texts(&mut c, query);
    expected.sort();
    assert!(expected.len() >= 20_000, "{} rows", expected.len());
    run_each(
        &mut c,
        "SET enable_seqscan = off; SET enable_bitmapscan = off;
         SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_memoize = off",
    );
    let plan = texts(&mut c, &format!("EXPLAIN (COSTS OFF) {query}")).join("\n");
    assert!(
        plan.contains("Nested Loop") && plan.contains("using t_k"),
        "{plan}"
    );
    c.batch_execute(&format!("BEGIN; DECLARE cur CURSOR FOR {query}"))
        .unwrap();
    let mut got = texts(&mut c, "FETCH 5000 FROM cur");
    assert_eq!(got.len(), 5000);
    // The keys probed next and those probed already, once more each; a
    // thousand rows into the slice of the first key probed, which fill its
    // delta page and split it; delta rows deleted and VACUUMed (their row
    // versions stay for the cursor's snapshot).
    run_each(
        &mut other,
        "INSERT INTO t SELECT k, 1000000000 FROM probes;
         INSERT INTO t SELECT (SELECT k FROM probes LIMIT 1) + g, 2000000000
           FROM generate_series(1, 1000) g;
         DELETE FROM t WHERE v BETWEEN -20000 AND -10000;
         VACUUM t",
    );
    got.extend(texts(&mut c, "FETCH ALL FROM cur"));
    c.batch_execute("COMMIT").unwrap();
    got.sort();
    assert!(
        got == expected,
        "the paused nested loop returned {} rows, not its snapshot's {}",
        got.len(),
        expected.len()
    );
    let now = "SELECT count(*)::text || ' ' || sum(t.v)::text FROM probes p JOIN t ON t.k = p.k";
    assert_index_matches_table(&mut c, "t_k", now, now);
    assert_verified(&mut c, "t_k");
}
