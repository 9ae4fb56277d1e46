//! `#[pg_test]` tests: the access method inside a transaction.

#[pgrx::pg_schema]
mod tests {
    use pgrx::pg_sys;
    use pgrx::prelude::*;

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    fn texts(sql: &str) -> Vec<String> {
        Spi::get_one::<Vec<String>>(sql)
            .unwrap()
            .unwrap_or_default()
    }

    /// A scan key of one scalar, as the executor builds it.
    fn scalar(strategy: u16, subtype: pg_sys::Oid, arg: i64) -> pg_sys::ScanKeyData {
        // SAFETY: ScanKeyData is plain data; a zeroed one is a key with no
        // flags and no function, which `plan` never calls.
        let mut sk: pg_sys::ScanKeyData = unsafe { std::mem::zeroed() };
        sk.sk_strategy = strategy;
        sk.sk_subtype = subtype;
        sk.sk_argument = pg_sys::Datum::from(arg);
        sk
    }

    /// The allocation-free path for one scalar key plans what `plan` does,
    /// for every strategy, same-type and cross-type, reusing a plan that
    /// held something else.
    #[pg_test]
    fn one_scalar_key_plans_as_plan_does() {
        let cases = [
            (crate::key::KeyKind::Int8, pg_sys::InvalidOid),
            (crate::key::KeyKind::Int8, pg_sys::INT8OID),
            (crate::key::KeyKind::Int8, pg_sys::INT4OID),
            (crate::key::KeyKind::Int4, pg_sys::INT8OID),
            (crate::key::KeyKind::Int2, pg_sys::INT8OID),
            // Lossy: the comparison depends on the time zone.
            (crate::key::KeyKind::Timestamp, pg_sys::TIMESTAMPTZOID),
        ];
        for (kind, subtype) in cases {
            for strategy in 1..=5u16 {
                for arg in [i64::MIN, -70_000, -1, 0, 1, 42, 70_000, i64::MAX] {
                    let keys = [scalar(strategy, subtype, arg)];
                    let mut out = crate::am::scankey::Plan {
                        intervals: vec![(1, 2), (5, 9)],
                        nulls: true,
                        recheck: true,
                    };
                    // SAFETY: the keys are well formed (above).
                    unsafe { crate::am::scankey::plan_into(kind, &keys, &mut out) };
                    let want = unsafe { crate::am::scankey::plan(kind, &keys) };
                    assert_eq!(
                        out, want,
                        "{kind:?} strategy {strategy} arg {arg} subtype {subtype:?}"
                    );
                }
            }
        }
    }

    #[pg_test]
    fn builds_and_finds_every_key() {
        Spi::run("CREATE TABLE t AS SELECT g AS k FROM generate_series(1, 20000) g").unwrap();
        Spi::run("CREATE INDEX t_k ON t USING learned (k)").unwrap();
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        assert_eq!(
            count("SELECT count(*) FROM t WHERE k BETWEEN 100 AND 199"),
            100
        );
        assert_eq!(count("SELECT count(*) FROM t WHERE k = 20000"), 1);
        assert_eq!(count("SELECT count(*) FROM t WHERE k > 20000"), 0);
        assert_eq!(
            count("SELECT count(*) FROM t WHERE k = ANY('{5, 5, 7, 30000}')"),
            2
        );
        assert_eq!(
            Spi::get_one::<bool>("SELECT learned_verify('t_k')").unwrap(),
            Some(true)
        );
    }

    #[pg_test]
    fn delta_entries_merge_in_key_order() {
        Spi::run("CREATE TABLE d (k int4)").unwrap();
        // One run page: the odd keys inserted below its last go to its insert
        // area (packed as it fills), those above to the delta, so scans merge
        // both with the run.
        Spi::run("INSERT INTO d SELECT g * 2 FROM generate_series(1, 4812) g").unwrap();
        Spi::run("CREATE INDEX d_k ON d USING learned (k)").unwrap();
        // Odd keys arrive after the build, in descending order, plus NULLs.
        Spi::run("INSERT INTO d SELECT g * 2 + 1 FROM generate_series(5000, 1, -1) g").unwrap();
        Spi::run("INSERT INTO d VALUES (NULL), (NULL)").unwrap();
        Spi::run("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off").unwrap();
        let asc = texts("SELECT array_agg(k::text) FROM (SELECT k FROM d WHERE k BETWEEN 100 AND 110 ORDER BY k) s");
        assert_eq!(asc, (100..=110).map(|i| i.to_string()).collect::<Vec<_>>());
        let desc = texts("SELECT array_agg(coalesce(k::text, 'NULL')) FROM (SELECT k FROM d ORDER BY k DESC LIMIT 4) s");
        assert_eq!(desc, ["NULL", "NULL", "10001", "9999"]);
        assert_eq!(
            count("SELECT count(*) FROM (SELECT k FROM d ORDER BY k) s"),
            9814
        );
        let stats = Spi::get_two::<i64, i64>(
            "SELECT delta_entries, null_entries FROM learned_index_stats('d_k')",
        )
        .unwrap();
        let (delta, nulls) = (stats.0.unwrap(), stats.1.unwrap());
        assert!(delta > 0 && delta < 5002, "{delta} in the delta");
        assert_eq!(nulls, 0);
        assert_eq!(
            Spi::get_one::<bool>("SELECT learned_verify('d_k')").unwrap(),
            Some(true)
        );
    }

    /// learned_verify is not a check that cannot fail: a row the index never
    /// saw (index maintenance switched off behind its back) is reported.
    #[pg_test(
        error = "learned index \"v_k\" failed verification: row (0,4) with key 42 is not in the index"
    )]
    fn verify_reports_a_row_missing_from_the_index() {
        Spi::run("CREATE TABLE v (k int8)").unwrap();
        Spi::run("INSERT INTO v VALUES (1), (2), (3)").unwrap();
        Spi::run("CREATE INDEX v_k ON v USING learned (k)").unwrap();
        Spi::run("UPDATE pg_index SET indisready = false WHERE indexrelid = 'v_k'::regclass")
            .unwrap();
        Spi::run("INSERT INTO v VALUES (42)").unwrap();
        Spi::run("UPDATE pg_index SET indisready = true WHERE indexrelid = 'v_k'::regclass")
            .unwrap();
        Spi::run("SELECT learned_verify('v_k')").unwrap();
    }

    /// What HypoPG's planner hook does to a hypothetical index: marks it
    /// `hypothetical` with an OID that no relation has.
    const HYPO_OID: u32 = 1;
    static HYPO_AM: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    #[pg_guard]
    unsafe extern "C-unwind" fn make_hypothetical(
        _root: *mut pg_sys::PlannerInfo,
        _relid: pg_sys::Oid,
        _inhparent: bool,
        rel: *mut pg_sys::RelOptInfo,
    ) {
        let list = (*rel).indexlist;
        if list.is_null() {
            return;
        }
        let am = HYPO_AM.load(std::sync::atomic::Ordering::Relaxed);
        for i in 0..(*list).length as usize {
            let info = (*(*list).elements.add(i)).ptr_value as *mut pg_sys::IndexOptInfo;
            if (*info).relam.to_u32() == am {
                (*info).hypothetical = true;
                (*info).indexoid = pg_sys::Oid::from(HYPO_OID);
            }
        }
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn hypothetical_name(oid: pg_sys::Oid) -> *const std::ffi::c_char {
        if oid.to_u32() == HYPO_OID {
            c"hypothetical_learned".as_ptr()
        } else {
            std::ptr::null()
        }
    }

    /// Restores the planner hooks however the test ends.
    struct Hooks(
        pg_sys::get_relation_info_hook_type,
        pg_sys::explain_get_index_name_hook_type,
    );

    impl Drop for Hooks {
        fn drop(&mut self) {
            // SAFETY: puts back the hooks saved when the test installed its own.
            unsafe {
                pg_sys::get_relation_info_hook = self.0;
                pg_sys::explain_get_index_name_hook = self.1;
            }
        }
    }

    /// A hypothetical learned index (HypoPG and the like) has no pages and no
    /// relation to open: the cost estimate works from the catalog's numbers.
    #[pg_test]
    fn hypothetical_indexes_are_costed_without_pages() {
        Spi::run("CREATE TABLE h AS SELECT g::int8 AS k FROM generate_series(1, 100000) g")
            .unwrap();
        Spi::run("CREATE INDEX h_k ON h USING learned (k)").unwrap();
        Spi::run("ANALYZE h").unwrap();
        let am = Spi::get_one::<pg_sys::Oid>("SELECT oid FROM pg_am WHERE amname = 'learned'")
            .unwrap()
            .unwrap();
        HYPO_AM.store(am.to_u32(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: this backend's planner hooks, restored by `_restore`.
        let _restore = unsafe {
            let saved = Hooks(
                pg_sys::get_relation_info_hook,
                pg_sys::explain_get_index_name_hook,
            );
            pg_sys::get_relation_info_hook = Some(make_hypothetical);
            pg_sys::explain_get_index_name_hook = Some(hypothetical_name);
            saved
        };
        let plan: Vec<String> = Spi::connect(|c| {
            c.select(
                "EXPLAIN (COSTS OFF) SELECT k FROM h WHERE k = 42",
                None,
                &[],
            )
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap_or_default())
            .collect()
        });
        assert!(
            plan.iter()
                .any(|l| l.contains("using hypothetical_learned")),
            "{plan:?}"
        );
    }

    #[pg_test]
    fn cross_type_and_float_semantics() {
        Spi::run("CREATE TABLE f (x float4, i int2)").unwrap();
        Spi::run("INSERT INTO f VALUES ('-0', 1), ('0', 2), ('NaN', 3), ('Infinity', 4), (0.5, 5), (NULL, NULL)").unwrap();
        Spi::run(
            "CREATE INDEX f_x ON f USING learned (x); CREATE INDEX f_i ON f USING learned (i)",
        )
        .unwrap();
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        assert_eq!(count("SELECT count(*) FROM f WHERE x = 0::float8"), 2);
        assert_eq!(
            count("SELECT count(*) FROM f WHERE x > 'Infinity'::float8"),
            1
        );
        assert_eq!(count("SELECT count(*) FROM f WHERE x < 0.5::float8"), 2);
        assert_eq!(
            count("SELECT count(*) FROM f WHERE i >= 3::int8 AND i < 100000::int4"),
            3
        );
        assert_eq!(count("SELECT count(*) FROM f WHERE i > 40000::int4"), 0);
    }

    /// The TIDs an index scan of `scan` returns for `k = key` (int8),
    /// rescanning it.
    ///
    /// # Safety
    /// `scan` must be an open index scan of an int8 column.
    unsafe fn tids_for(scan: pg_sys::IndexScanDesc, key: i64) -> usize {
        let mut sk: pg_sys::ScanKeyData = std::mem::zeroed();
        pg_sys::ScanKeyInit(
            &mut sk,
            1,
            pg_sys::BTEqualStrategyNumber as u16,
            pg_sys::Oid::from(pg_sys::F_INT8EQ),
            pg_sys::Datum::from(key),
        );
        pg_sys::index_rescan(scan, &mut sk, 1, std::ptr::null_mut(), 0);
        let mut n = 0;
        while !pg_sys::index_getnext_tid(scan, pg_sys::ScanDirection::ForwardScanDirection)
            .is_null()
        {
            n += 1;
        }
        n
    }

    /// A scan under a dirty snapshot, rescanned, finds what was inserted
    /// since it last read the index (here a row that spilled into the
    /// delta of a run whose generation had not spilled before).
    #[pg_test]
    fn a_dirty_rescan_finds_rows_inserted_since_the_scan_began() {
        Spi::run("CREATE TABLE r (k int8)").unwrap();
        Spi::run(
            "INSERT INTO r SELECT g * 1000 + (hashint8(g) & 511) FROM generate_series(1, 20000) g",
        )
        .unwrap();
        Spi::run("CREATE INDEX r_k ON r USING learned (k) WITH (retrain = off)").unwrap();
        let oid = |name: &str| {
            Spi::get_one::<pg_sys::Oid>(&format!("SELECT '{name}'::regclass::oid"))
                .unwrap()
                .unwrap()
        };
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        // SAFETY: the relations are opened and closed here, the snapshot
        // outlives the scan, and the scan is of the int8 index just built.
        unsafe {
            let heap = pg_sys::table_open(oid("r"), lock);
            let index = pg_sys::index_open(oid("r_k"), lock);
            let mut dirty: pg_sys::SnapshotData = std::mem::zeroed();
            dirty.snapshot_type = pg_sys::SnapshotType::SNAPSHOT_DIRTY;
            #[cfg(not(feature = "pg18"))]
            let scan = pg_sys::index_beginscan(heap, index, &mut dirty, 1, 0);
            #[cfg(feature = "pg18")]
            let scan = pg_sys::index_beginscan(heap, index, &mut dirty, std::ptr::null_mut(), 1, 0);
            assert_eq!(tids_for(scan, 5000999), 0);
            // Its run page is full: the row goes to the delta.
            Spi::run("INSERT INTO r VALUES (5000999)").unwrap();
            assert_eq!(
                count("SELECT delta_entries FROM learned_index_stats('r_k')"),
                1
            );
            assert_eq!(tids_for(scan, 5000999), 1, "the rescan missed the new row");
            pg_sys::index_endscan(scan);
            pg_sys::index_close(index, lock);
            pg_sys::table_close(heap, lock);
        }
    }
}
