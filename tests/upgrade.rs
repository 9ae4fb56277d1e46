//! `pg_upgrade` from PostgreSQL 15 to 18 keeps learned indexes usable as they
//! are: pg_upgrade copies index files byte for byte, so the on-disk format
//! must not depend on the server major. A 15 cluster with learned indexes on
//! every key type (NULLs, a delta, tombstones, retrained generations) is
//! upgraded with 18's pg_upgrade; on 18 every index passes `learned_verify`
//! with the heap check, answers every query shape as the table does and as
//! it did on 15, and goes on taking inserts, retrains and VACUUM.
//!
//! Runs in the PostgreSQL 18 suite and needs learneddb installed for 15 too
//! (tools/test.sh runs the 15 suite first).
//!
//! And `ALTER EXTENSION learneddb UPDATE` from the previous version.
#![cfg(feature = "pg18")]

mod common;

use common::{assert_index_matches_table, assert_verified, pg_bin_for, run_each, texts, Cluster};

/// Key type and the key of row `g` (NULL every 40th row).
const TYPES: &[(&str, &str)] = &[
    ("int2", "(g % 20000 - 10000)::int2"),
    ("int4", "(g * 7 - 9000)::int4"),
    ("int8", "g::int8 * 1000003"),
    ("float4", "(g / 7.0)::float4"),
    (
        "float8",
        "CASE g % 1000 WHEN 1 THEN 'NaN' WHEN 2 THEN '-0' WHEN 3 THEN 'Infinity' ELSE g * 0.001 - 3 END::float8",
    ),
    ("date", "DATE '2020-01-01' + (g % 3000)"),
    ("timestamp", "TIMESTAMP '2024-01-01' + g * INTERVAL '1 minute'"),
    (
        "timestamptz",
        "TIMESTAMPTZ '2024-01-01 00:00+00' + g * INTERVAL '17 seconds'",
    ),
];

/// Query shapes, `{t}` the table: points, ranges, ordered scans both ways,
/// index-only scans, NULLs and arrays.
/// What each index holds, as its statistics say: the upgraded files are the
/// same indexes, not rebuilt ones.
const HOLDINGS: &str = "SELECT format('%s gen %s entries %s delta %s run pages %s', index_name, \
     generation, entries, delta_entries, run_pages) FROM pg_stat_learned_indexes ORDER BY 1";

const QUERIES: &[&str] = &[
    "SELECT id FROM {t} WHERE k = (SELECT k FROM {t} WHERE id = 2500) ORDER BY id",
    "SELECT count(*) FROM {t} WHERE k < (SELECT k FROM {t} WHERE id = 3000)",
    "SELECT k FROM {t} WHERE k BETWEEN (SELECT k FROM {t} WHERE id = 1000) AND (SELECT k FROM {t} WHERE id = 1300) ORDER BY k",
    "SELECT k FROM {t} WHERE k > (SELECT k FROM {t} WHERE id = 4900) ORDER BY k",
    "SELECT k FROM {t} ORDER BY k LIMIT 30",
    "SELECT k FROM {t} ORDER BY k DESC LIMIT 30",
    "SELECT id FROM {t} WHERE k IS NULL ORDER BY id",
    "SELECT count(*) FROM {t} WHERE k IS NOT NULL",
    "SELECT count(*) FROM {t} WHERE k = ANY(ARRAY(SELECT k FROM {t} WHERE id % 97 = 0))",
];

fn answers(c: &mut postgres::Client, stage: &str) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for (ty, _) in TYPES {
        let t = format!("t_{ty}");
        for q in QUERIES {
            let sql = q.replace("{t}", &t);
            all.push(assert_index_matches_table(
                c,
                &format!("{t}_k"),
                &sql,
                &format!("{stage}: {sql}"),
            ));
        }
    }
    all
}

#[test]
fn pg_upgrade_from_15_keeps_learned_indexes() {
    let bin15 = pg_bin_for("15");
    let bin18 = pg_bin_for("18");
    let lib15 = bin15.join("../lib/learneddb.so");
    assert!(
        lib15.exists(),
        "learneddb is not installed for PostgreSQL 15 ({}): run the 15 suite first (tools/test.sh)",
        lib15.display()
    );

    let old = Cluster::start_major("upgrade-15", "15", &["autovacuum = off"], "", "");
    let mut c = old.connect();
    c.batch_execute("CREATE EXTENSION learneddb").unwrap();
    for (i, (ty, key)) in TYPES.iter().enumerate() {
        let t = format!("t_{ty}");
        let k = |from: i32, to: i32| {
            format!(
                "INSERT INTO {t} SELECT g, CASE WHEN g % 40 = 0 THEN NULL ELSE {key} END \
                 FROM generate_series({from}, {to}) g"
            )
        };
        run_each(
            &mut c,
            &format!(
                "CREATE TABLE {t} (id int, k {ty}); {}; CREATE INDEX {t}_k ON {t} USING learned (k)",
                k(1, 4000)
            ),
        );
        // Half the indexes are retrained once: a second generation, and the
        // pages of the first waiting to be recycled.
        if i % 2 == 0 {
            run_each(
                &mut c,
                &format!("{}; SELECT learned_retrain('{t}_k')", k(4001, 4500)),
            );
        }
        // A delta, and tombstones in the run and the delta.
        run_each(
            &mut c,
            &format!(
                "{}; DELETE FROM {t} WHERE id % 13 = 0; VACUUM {t}",
                k(if i % 2 == 0 { 4501 } else { 4001 }, 5000)
            ),
        );
        assert_verified(&mut c, &format!("{t}_k"));
    }
    let before = answers(&mut c, "PostgreSQL 15");
    let held = texts(&mut c, HOLDINGS);
    assert!(held.iter().any(|h| h.contains(" gen 2 ")), "{held:?}");
    // The PostgreSQL 15 on this machine (Debian 15.20) gives every column an
    // attribute option `pg_attver` that stock PostgreSQL 18 does not know, so
    // pg_upgrade's schema restore fails on it ("unrecognized parameter").
    // It has nothing to do with the index; clear it on the tables.
    c.batch_execute(
        "UPDATE pg_attribute SET attoptions = NULL \
         WHERE attrelid >= 16384 AND array_to_string(attoptions, ',') LIKE 'pg_attver=%'",
    )
    .unwrap();
    drop(c);
    old.stop("fast");

    // pg_upgrade needs the same checksum setting on both sides; 15's initdb
    // leaves checksums off, 18's turns them on.
    let new = Cluster::start_major(
        "upgrade-18",
        "18",
        &["autovacuum = off"],
        "",
        common::NO_CHECKSUMS,
    );
    new.stop("fast");
    common::as_postgres(
        &new.dir,
        &[
            bin18.join("pg_upgrade").to_str().unwrap(),
            "-b",
            bin15.to_str().unwrap(),
            "-B",
            bin18.to_str().unwrap(),
            "-d",
            old.dir.join("data").to_str().unwrap(),
            "-D",
            new.dir.join("data").to_str().unwrap(),
            "-p",
            &old.port.to_string(),
            "-P",
            &new.port.to_string(),
            "-s",
            new.dir.join("sock").to_str().unwrap(),
            "-U",
            "postgres",
            "--copy",
        ],
    );
    new.restart();
    let mut c = new.connect();
    let version: i32 = c
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .unwrap()
        .get(0);
    assert!(version >= 180000, "not upgraded: {version}");
    for (ty, _) in TYPES {
        assert_verified(&mut c, &format!("t_{ty}_k"));
    }
    let after = answers(&mut c, "PostgreSQL 18 after pg_upgrade");
    assert!(before == after, "answers changed across pg_upgrade");
    assert_eq!(held, texts(&mut c, HOLDINGS));

    // The upgraded indexes keep working: inserts, a retrain, VACUUM.
    for (ty, key) in TYPES {
        let t = format!("t_{ty}");
        run_each(
            &mut c,
            &format!(
                "INSERT INTO {t} SELECT g, {key} FROM generate_series(5001, 6000) g; \
                 SELECT learned_retrain('{t}_k'); DELETE FROM {t} WHERE id % 11 = 0; VACUUM {t}"
            ),
        );
        assert_verified(&mut c, &format!("{t}_k"));
    }
    answers(&mut c, "PostgreSQL 18 after inserts, retrain and VACUUM");
    let stats: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_learned_indexes WHERE retrain_count >= 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(stats, TYPES.len() as i64);
}

/// `ALTER EXTENSION learneddb UPDATE` from 0.1.0 as its last build installed
/// it: `learned_index_stats` gains `missing_ok`, the view passes it and is
/// readable by every role; a view built on it stays; the indexes stay as
/// they are. (The 0.1.0 script
/// is this build's, with what 0.2.0 changed taken out.)
#[test]
fn alter_extension_update_from_0_1_0() {
    let bin = pg_bin_for(common::PG_MAJOR);
    let out = std::process::Command::new(bin.join("pg_config"))
        .arg("--sharedir")
        .output()
        .unwrap();
    let dir =
        std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("extension");
    let mut old = std::fs::read_to_string(dir.join("learneddb--0.2.0.sql")).unwrap();
    for (new, was) in [
        (
            "\"index\" regclass, /* IndexArg */\n\t\"missing_ok\" bool DEFAULT false /* bool */\n",
            "\"index\" regclass /* IndexArg */\n",
        ),
        (
            "learned_index_stats(c.oid::regclass, missing_ok => true)",
            "learned_index_stats(c.oid::regclass)",
        ),
        ("GRANT SELECT ON pg_stat_learned_indexes TO PUBLIC;", ""),
    ] {
        assert!(old.contains(new), "the 0.2.0 script has no {new:?}");
        old = old.replace(new, was);
    }
    std::fs::write(dir.join("learneddb--0.1.0.sql"), old).unwrap();

    let cluster = Cluster::start_major("ext_update", common::PG_MAJOR, &[], "", "");
    let mut c = cluster.connect();
    run_each(
        &mut c,
        "CREATE EXTENSION learneddb VERSION '0.1.0';
         CREATE TABLE t (k int8);
         INSERT INTO t SELECT g FROM generate_series(1, 5000) g;
         CREATE INDEX t_k ON t USING learned (k);
         CREATE ROLE reader;
         CREATE VIEW my_stats AS SELECT index_name FROM pg_stat_learned_indexes;
         GRANT SELECT ON my_stats TO reader;",
    );
    let view = "SELECT index_name FROM pg_stat_learned_indexes";
    // The old definition calls this library with one argument: an ERROR.
    assert!(c.query(view, &[]).is_err());
    run_each(&mut c, "ALTER EXTENSION learneddb UPDATE");
    let version = "SELECT extversion FROM pg_extension WHERE extname = 'learneddb'";
    assert_eq!(texts(&mut c, version), ["0.2.0"]);
    assert_eq!(texts(&mut c, view), ["t_k"]);
    // A view built on it stays, and works.
    assert_eq!(texts(&mut c, "SELECT index_name FROM my_stats"), ["t_k"]);
    run_each(&mut c, "SET ROLE reader");
    assert_eq!(texts(&mut c, view), ["t_k"]);
    let refused = c.query("SELECT learned_retrain('t_k')", &[]).unwrap_err();
    assert_eq!(common::sqlstate(&refused), "42501");
    run_each(&mut c, "RESET ROLE");
    assert_verified(&mut c, "t_k");
}
