//! Retraining again and again under a stream of inserts and deletes: every
//! generation's answers are exact, and the blocks of retired generations are
//! reused, so the index stays within a small factor of a fresh REINDEX.

mod common;

use common::{assert_verified, run_each, texts, Cluster};

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
    let size = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT pg_relation_size('t_k')", &[])
            .unwrap()
            .get(0)
    };
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
        sizes.push(size(&mut c));
    }
    assert_verified(&mut c, "t_k");
    let generation: i64 = c
        .query_one("SELECT generation FROM learned_index_stats('t_k')", &[])
        .unwrap()
        .get(0);
    assert_eq!(generation, 13);
    let q = "SELECT string_agg(k::text, ',' ORDER BY k, id) FROM t WHERE k BETWEEN 1000 AND 90000";
    c.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        .unwrap();
    let plan = texts(&mut c, &format!("EXPLAIN (COSTS OFF) {q}")).join("\n");
    assert!(plan.contains("t_k"), "{plan}");
    let by_index = texts(&mut c, q);
    c.batch_execute("RESET ALL; SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off")
        .unwrap();
    let by_table = texts(&mut c, q);
    c.batch_execute("RESET ALL").unwrap();
    assert!(
        by_index == by_table,
        "index and table disagree after the retrains"
    );
    let retrained = size(&mut c);
    c.batch_execute("REINDEX INDEX t_k").unwrap();
    let fresh = size(&mut c);
    eprintln!("sizes after each retrain: {sizes:?}; after REINDEX: {fresh}");
    // A full rewrite needs the current generation and the one before it;
    // without reuse, twelve retrains would leave twelve generations.
    assert!(
        retrained <= fresh * 5 / 2,
        "{retrained} bytes after 12 retrains against {fresh} after REINDEX"
    );
}
