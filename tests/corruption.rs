//! A damaged index page gives an ERROR that names the index, never a crash and
//! never silently wrong rows. Each case damages a fresh throwaway index on disk
//! while the server is stopped, then queries it and runs `learned_verify`.

mod common;

use common::Cluster;

const BLCKSZ: u64 = 8192;
const CONTENT: u64 = 24; // page header size: our content starts here

struct Damage {
    what: &'static str,
    block: Block,
    offset: u64,
    bytes: &'static [u8],
    /// Text the error must contain besides the index name.
    expect: &'static str,
    /// Only `learned_verify` can see it: readers trust what is damaged.
    verify_only: bool,
    /// The SQLSTATE: index_corrupted (XX002) for what we detect, data_corrupted
    /// (XX001) for a page header PostgreSQL rejects before we see the page,
    /// feature_not_supported for a format this build does not read.
    sqlstate: &'static str,
}

#[derive(Clone, Copy)]
enum Block {
    Meta,
    FirstRun,
    Model,
    FirstDelta,
    DeltaDir,
}

const CASES: &[Damage] = &[
    Damage {
        what: "metapage format version from a newer build",
        block: Block::Meta,
        offset: CONTENT + 4,
        bytes: &[99, 0, 0, 0],
        expect: "format version 99",
        verify_only: false,
        sqlstate: "0A000",
    },
    Damage {
        what: "metapage magic",
        block: Block::Meta,
        offset: CONTENT,
        bytes: &[0xde, 0xad, 0xbe, 0xef],
        expect: "magic",
        verify_only: false,
        sqlstate: "XX002",
    },
    Damage {
        what: "metapage run length",
        block: Block::Meta,
        // Meta::run_entries: after magic, version, key kind and padding, target
        // window, generations (24 bytes) and run_pages (4), aligned to 8.
        offset: CONTENT + 32,
        bytes: &[0xff, 0xff, 0xff, 0x7f],
        expect: "corrupted",
        verify_only: false,
        sqlstate: "XX002",
    },
    Damage {
        what: "page header pd_lower",
        block: Block::FirstRun,
        offset: 12,
        bytes: &[0xff, 0x7f],
        expect: "invalid page",
        verify_only: false,
        sqlstate: "XX001",
    },
    Damage {
        what: "page header pd_special",
        block: Block::Meta,
        offset: 16,
        bytes: &[0x00, 0x10],
        expect: "invalid page",
        verify_only: false,
        sqlstate: "XX001",
    },
    Damage {
        what: "run page entry count",
        block: Block::FirstRun,
        // After the fence (key and TID): 16 bytes.
        offset: CONTENT + 16,
        bytes: &[0x01, 0x00],
        expect: "entries",
        verify_only: false,
        sqlstate: "XX002",
    },
    Damage {
        what: "run page group table",
        block: Block::FirstRun,
        // The second group's first key, after the 24-byte header and the
        // first group's: larger than the third's.
        offset: CONTENT + 24 + 8,
        bytes: &[0xff; 8],
        expect: "encoding is damaged",
        // A lookup checks the groups it decodes (one, for 10..20, which the
        // damage does not touch); a lookup that reads group 1 fails.
        verify_only: true,
        sqlstate: "XX002",
    },
    Damage {
        what: "run page group bytes",
        block: Block::FirstRun,
        // The first group's mode byte. The 5000 keys pack into one page:
        // after the 24-byte header come 40 groups' first keys and ends (400
        // bytes) and the tombstone bitmap (79 words, 632 bytes).
        offset: CONTENT + 24 + 400 + 632,
        bytes: &[0xff],
        expect: "encoding is damaged",
        verify_only: false,
        sqlstate: "XX002",
    },
    Damage {
        what: "run page insert-area count",
        block: Block::FirstRun,
        offset: CONTENT + 20,
        bytes: &[0x05, 0x00],
        expect: "layout",
        verify_only: false,
        sqlstate: "XX002",
    },
    Damage {
        what: "page kind",
        block: Block::FirstRun,
        offset: BLCKSZ - 6,
        bytes: &[0x06],
        expect: "expected a run page",
        verify_only: false,
        sqlstate: "XX002",
    },
    Damage {
        what: "model length",
        block: Block::Model,
        offset: CONTENT,
        bytes: &[0xff, 0xff, 0x00, 0x00],
        expect: "model",
        verify_only: false,
        sqlstate: "XX002",
    },
    Damage {
        what: "model content",
        block: Block::Model,
        offset: CONTENT + 100,
        bytes: &[0x55, 0x55, 0x55],
        expect: "model",
        verify_only: false,
        sqlstate: "XX002",
    },
    Damage {
        what: "delta page entry count",
        block: Block::FirstDelta,
        offset: CONTENT + 16,
        bytes: &[0xff, 0x7f],
        expect: "delta page header",
        verify_only: false,
        sqlstate: "XX002",
    },
    Damage {
        what: "open delta page marked sorted",
        block: Block::FirstDelta,
        // After the header's min, max, count, state and NULL flag.
        offset: CONTENT + 20,
        bytes: &[1],
        expect: "marked sorted",
        verify_only: true,
        sqlstate: "XX002",
    },
    Damage {
        what: "delta directory count",
        block: Block::DeltaDir,
        offset: CONTENT,
        bytes: &[0xff, 0xff, 0x00, 0x00],
        expect: "directory",
        verify_only: false,
        sqlstate: "XX002",
    },
    Damage {
        what: "open delta page's key bound in its directory entry",
        block: Block::DeltaDir,
        // The first entry's min: after the directory header (8 bytes) and the
        // entry's block, generation, state, NULL flag and padding (16).
        offset: CONTENT + 8 + 16,
        bytes: &[0xff; 8],
        expect: "below its directory entry's bound",
        verify_only: true,
        sqlstate: "XX002",
    },
];

fn block_no(c: &mut postgres::Client, b: Block) -> u64 {
    // Block numbers from the metapage, through the stats function where possible.
    let q = |c: &mut postgres::Client, sql: &str| -> i64 { c.query_one(sql, &[]).unwrap().get(0) };
    match b {
        Block::Meta => 0,
        Block::FirstRun => 1,
        Block::Model => 1 + q(c, "SELECT run_pages FROM learned_index_stats('dmg')") as u64,
        // The delta pages are appended after the build; the first is a
        // directory page or a delta page depending on allocation order.
        Block::FirstDelta | Block::DeltaDir => {
            let size: i64 = q(c, "SELECT pg_relation_size('dmg') / 8192");
            let model_end = 1 + q(c, "SELECT run_pages FROM learned_index_stats('dmg')") as u64 + 1;
            // new_page extends the delta page first, then its directory page.
            let first = model_end;
            assert!(
                size as u64 >= first + 2,
                "expected delta pages after the model"
            );
            if matches!(b, Block::FirstDelta) {
                first
            } else {
                first + 1
            }
        }
    }
}

#[test]
fn damaged_pages_raise_errors_naming_the_index() {
    // Without data checksums: with them, the server itself reports every
    // damaged page before we read it.
    let cluster = Cluster::start_major("corrupt", common::PG_MAJOR, &[], "", common::NO_CHECKSUMS);
    let mut c = cluster.connect();
    c.batch_execute("CREATE EXTENSION learneddb").unwrap();
    c.batch_execute(
        "CREATE TABLE t (k int8); INSERT INTO t SELECT g FROM generate_series(1, 5000) g",
    )
    .unwrap();
    let datadir = cluster.dir.join("data");
    for case in CASES {
        c.batch_execute(
            "CREATE INDEX dmg ON t USING learned (k); INSERT INTO t VALUES (6000), (6001)",
        )
        .unwrap();
        let blk = block_no(&mut c, case.block);
        let path: String = c
            .query_one("SELECT pg_relation_filepath('dmg')", &[])
            .unwrap()
            .get(0);
        c.batch_execute("CHECKPOINT").unwrap();
        drop(c);
        cluster.stop("fast");
        let at = blk * BLCKSZ + case.offset;
        let old = common::overwrite(&datadir.join(&path), at, case.bytes);
        assert_ne!(
            old, case.bytes,
            "{}: damage would change nothing",
            case.what
        );
        cluster.restart();
        c = cluster.connect();
        c.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
            .unwrap();
        // Every query that reads the damaged block must fail. A lookup of 6000,
        // above the run's last key, reads only the delta, so it survives damage
        // to the run and the model; a lookup of 10..20 reads neither the
        // delta page nor its directory, whose keys are all above it.
        let mut queries = vec!["SELECT learned_verify('dmg')"];
        if !case.verify_only && !matches!(case.block, Block::FirstDelta | Block::DeltaDir) {
            queries.push("SELECT count(*) FROM t WHERE k BETWEEN 10 AND 20");
        }
        if !case.verify_only && !matches!(case.block, Block::FirstRun | Block::Model) {
            queries.push("SELECT count(*) FROM t WHERE k = 6000");
        }
        for sql in queries {
            let err = c.query(sql, &[]).expect_err(&format!(
                "{}: {sql} succeeded on a damaged index",
                case.what
            ));
            let db = err
                .as_db_error()
                .unwrap_or_else(|| panic!("{}: not a database error: {err}", case.what));
            let text = format!(
                "{} {} {}",
                db.message(),
                db.where_().unwrap_or(""),
                db.hint().unwrap_or("")
            );
            assert_eq!(
                db.code().code(),
                case.sqlstate,
                "{}: wrong SQLSTATE: {text}",
                case.what
            );
            assert!(
                text.contains("dmg"),
                "{}: error does not name the index: {text}",
                case.what
            );
            assert!(
                text.contains(case.expect),
                "{}: error does not say \"{}\": {text}",
                case.what,
                case.expect
            );
        }
        // The server is still up; without the index the table is intact.
        let one: i32 = c.query_one("SELECT 1", &[]).unwrap().get(0);
        assert_eq!(one, 1);
        c.batch_execute("RESET ALL; DROP INDEX dmg").unwrap();
        let n: i64 = c.query_one("SELECT count(*) FROM t", &[]).unwrap().get(0);
        assert_eq!(n, 5002);
        c.batch_execute("DELETE FROM t WHERE k >= 6000").unwrap();
    }
}
