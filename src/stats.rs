//! `learned_index_stats(regclass)`, the view over it, and `learned_verify`.

use crate::am::build::scan_heap;
use crate::am::datum::index_kind;
use crate::am::sort::Sorter;
use crate::key::{KeyKind, RawValue};
use crate::model::ModelView;
use crate::storage::delta::{self, DeltaEntry, CLOSED, OPEN};
use crate::storage::run::{Section, Tid};
use crate::storage::{model_pages, Meta};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgRelation;

/// An open learned index and its table, closed on drop.
struct Opened {
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
}

impl Opened {
    /// Locks table then index in AccessShareLock, as amcheck does, and checks
    /// that the relation is a learned index.
    fn new(index: PgRelation) -> Opened {
        let oid = index.oid();
        drop(index);
        // SAFETY: plain catalog lookups and relation opens; errors are raised
        // by PostgreSQL for a missing relation.
        unsafe {
            if pg_sys::get_rel_relkind(oid) != pg_sys::RELKIND_INDEX as std::ffi::c_char {
                error!("\"{}\" is not a learned index", name_of(oid));
            }
            let heap_oid = pg_sys::IndexGetRelation(oid, false);
            let heap = pg_sys::table_open(heap_oid, pg_sys::AccessShareLock as i32);
            let index = pg_sys::index_open(oid, pg_sys::AccessShareLock as i32);
            let am = pg_sys::get_am_name((*(*index).rd_rel).relam);
            if am.is_null() || std::ffi::CStr::from_ptr(am).to_bytes() != b"learned" {
                error!(
                    "\"{}\" is not a learned index",
                    crate::storage::page::relation_name(index)
                );
            }
            Opened { heap, index }
        }
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: opened with these lock modes in `new`.
            unsafe {
                pg_sys::index_close(self.index, pg_sys::AccessShareLock as i32);
                pg_sys::table_close(self.heap, pg_sys::AccessShareLock as i32);
            }
        }
    }
}

fn timestamp(t: i64) -> Option<TimestampWithTimeZone> {
    (t != 0)
        .then(|| TimestampWithTimeZone::try_from(t).ok())
        .flatten()
}

unsafe fn name_of(oid: pg_sys::Oid) -> String {
    let p = pg_sys::get_rel_name(oid);
    if p.is_null() {
        String::new()
    } else {
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_safe)]
fn learned_index_stats(
    index: PgRelation,
) -> TableIterator<
    'static,
    (
        name!(schema_name, String),
        name!(table_name, String),
        name!(index_name, String),
        name!(key_type, String),
        name!(entries, i64),
        name!(run_pages, i64),
        name!(null_entries, i64),
        name!(delta_entries, i64),
        name!(delta_pages, i64),
        name!(model_leaves, i64),
        name!(model_bytes, i64),
        name!(max_error, i64),
        name!(mean_error, f64),
        name!(generation, i64),
        name!(built_at, Option<TimestampWithTimeZone>),
        name!(last_retrain, Option<TimestampWithTimeZone>),
        name!(retrain_count, i64),
        name!(index_size, i64),
        name!(idx_scan, i64),
        name!(idx_tup_read, i64),
    ),
> {
    let rel = Opened::new(index);
    let meta = Meta::read(rel.index);
    let (delta_entries, delta_pages) = delta::count(rel.index, &meta);
    // SAFETY: both relations are open and locked; the pgstat functions read
    // this backend's snapshot of the cumulative statistics.
    let row = unsafe {
        let oid = (*rel.index).rd_id;
        let nsp = pg_sys::get_namespace_name((*(*rel.index).rd_rel).relnamespace);
        let nblocks =
            pg_sys::RelationGetNumberOfBlocksInFork(rel.index, pg_sys::ForkNumber::MAIN_FORKNUM);
        let scans = stat_counter(pg_sys::pg_stat_get_numscans, oid);
        let read = stat_counter(pg_sys::pg_stat_get_tuples_returned, oid);
        (
            std::ffi::CStr::from_ptr(nsp).to_string_lossy().into_owned(),
            name_of((*rel.heap).rd_id),
            name_of(oid),
            meta.kind().sql_name().to_string(),
            (meta.run_entries + meta.null_entries + delta_entries) as i64,
            meta.run_pages as i64,
            meta.null_entries as i64,
            delta_entries as i64,
            delta_pages as i64,
            meta.model_leaves as i64,
            meta.model_bytes as i64,
            meta.max_window as i64,
            meta.mean_window as f64,
            meta.generation as i64,
            timestamp(meta.built_at),
            timestamp(meta.retrained_at),
            meta.retrain_count as i64,
            nblocks as i64 * crate::storage::page::BLCKSZ as i64,
            scans,
            read,
        )
    };
    TableIterator::once(row)
}

unsafe fn stat_counter(
    f: unsafe fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum,
    oid: pg_sys::Oid,
) -> i64 {
    let r: Option<i64> = pgrx::direct_function_call(f, &[oid.into_datum()]);
    r.unwrap_or(0)
}

/// Checks a learned index; raises an ERROR that says what is wrong.
#[pg_extern(volatile)]
fn learned_verify(index: PgRelation, heapallindexed: default!(bool, true)) -> bool {
    let rel = Opened::new(index);
    let idx = rel.index;
    let meta = Meta::read(idx);
    // SAFETY: the index is open and locked.
    let kind = unsafe { index_kind(idx) };
    if kind != meta.kind() {
        fail(
            idx,
            &format!(
                "metapage key type {:?} differs from the column type {:?}",
                meta.kind(),
                kind
            ),
        );
    }
    // SAFETY: the index is open and locked.
    let nblocks =
        unsafe { pg_sys::RelationGetNumberOfBlocksInFork(idx, pg_sys::ForkNumber::MAIN_FORKNUM) };
    for (start, len) in meta.sections() {
        if start as u64 + len as u64 > nblocks as u64 {
            fail(idx, &format!("metapage places blocks {start}..{} past the end of the index ({nblocks} blocks)", start as u64 + len as u64));
        }
    }
    let model_bytes = model_pages::read(idx, &meta);
    let model = ModelView::open(&model_bytes).expect("validated by read");
    check_run(idx, &meta, &model);
    let nulls = Section::nulls(&meta);
    for i in 0..nulls.pages {
        nulls.read(idx, i); // validates the page
    }
    let delta_entries = check_delta(idx, &meta);
    if heapallindexed {
        check_heap(&rel, &meta, kind, &delta_entries);
    }
    true
}

fn fail(idx: pg_sys::Relation, what: &str) -> ! {
    // SAFETY: `idx` is open.
    let name = unsafe { crate::storage::page::relation_name(idx) };
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
        format!("learned index \"{name}\" failed verification: {what}")
    );
}

fn show(kind: KeyKind, ord: u64) -> String {
    match kind.value(ord) {
        RawValue::Int(v) => format!("{v}"),
        RawValue::Float(f) => format!("{f}"),
    }
}

/// The run is sorted and every key, and the gap after it, lies in its window.
fn check_run(idx: pg_sys::Relation, meta: &Meta, model: &ModelView) {
    let run = Section::run(meta);
    let kind = meta.kind();
    let in_window = |key: u64, pos: u64| {
        let w = model.window(key);
        if pos < w.lo || pos > w.hi {
            fail(
                idx,
                &format!(
                    "key {} has lower bound {pos}, outside its model window [{}, {}]",
                    show(kind, key),
                    w.lo,
                    w.hi
                ),
            );
        }
    };
    let mut prev: Option<u64> = None;
    for i in 0..run.pages {
        let (_buf, page) = run.read(idx, i);
        let (ps, _) = run.page_span(i);
        for s in 0..page.len() {
            let key = page.key(s);
            let pos = ps + s as u64;
            match prev {
                Some(p) if key < p => fail(idx, &format!("run is not sorted at position {pos}")),
                Some(p) if key == p => continue,
                Some(p) if key > p + 1 => in_window(p + 1, pos),
                _ => {}
            }
            in_window(key, pos);
            prev = Some(key);
        }
    }
    if let Some(p) = prev.filter(|&p| p < u64::MAX) {
        in_window(p + 1, run.entries);
    }
}

/// Directory and pages agree; closed pages' entries lie in their ranges.
fn check_delta(idx: pg_sys::Relation, meta: &Meta) -> Vec<DeltaEntry> {
    let dir = delta::directory(idx, meta);
    let mut all = Vec::new();
    let open: Vec<u32> = meta.open[..meta.n_open as usize].to_vec();
    for d in &dir {
        let mut entries = Vec::new();
        delta::read_page(idx, d.blk, &mut entries, |_| true);
        let listed_open = open.contains(&d.blk);
        if listed_open && d.state != OPEN {
            fail(
                idx,
                &format!(
                    "delta page {} is open in the metapage but not in the directory",
                    d.blk
                ),
            );
        }
        if d.state == CLOSED {
            for e in &entries {
                if (e.null && !d.has_nulls) || (!e.null && (e.key < d.min || e.key > d.max)) {
                    fail(
                        idx,
                        &format!(
                            "delta page {} holds an entry outside its directory range",
                            d.blk
                        ),
                    );
                }
            }
        }
        if d.state != OPEN && d.state != CLOSED && !entries.is_empty() {
            fail(idx, &format!("free delta page {} holds entries", d.blk));
        }
        all.extend(entries);
    }
    if dir.len() as u32 != meta.delta_pages {
        fail(
            idx,
            &format!(
                "directory lists {} delta pages, the metapage {}",
                dir.len(),
                meta.delta_pages
            ),
        );
    }
    all
}

/// Sort item for the TID-ordered comparison: TID and NULL flag, then key.
fn pack(tid: Tid, key: Option<u64>) -> (u64, u64) {
    ((tid << 1) | key.is_none() as u64, key.unwrap_or(0))
}

fn unpack((a, b): (u64, u64)) -> (Tid, Option<u64>) {
    (a >> 1, (a & 1 == 0).then_some(b))
}

/// Every row visible to a fresh MVCC snapshot is in the index exactly once,
/// with its key. Both sides are sorted by TID and merged.
fn check_heap(rel: &Opened, meta: &Meta, kind: KeyKind, delta_entries: &[DeltaEntry]) {
    let idx = rel.index;
    let mut index_side = Sorter::new();
    for section in [Section::run(meta), Section::nulls(meta)] {
        for i in 0..section.pages {
            let (_buf, page) = section.read(idx, i);
            for s in 0..page.len() {
                if !page.dead(s) {
                    let key = (section.width != 0).then(|| page.key(s));
                    let (a, b) = pack(page.tid(s), key);
                    index_side.put(a, b);
                }
            }
        }
    }
    for e in delta_entries {
        let (a, b) = pack(e.tid, (!e.null).then_some(e.key));
        index_side.put(a, b);
    }
    let mut index_side = index_side.finish();

    let mut heap_side = Sorter::new();
    // SAFETY: the amcheck recipe: an MVCC snapshot scan through the table AM's
    // index build scan, with ii_Concurrent so that it uses that snapshot.
    unsafe {
        let info = pg_sys::BuildIndexInfo(idx);
        (*info).ii_Concurrent = true;
        let snapshot = pg_sys::RegisterSnapshot(pg_sys::GetTransactionSnapshot());
        let scan =
            pg_sys::table_beginscan_strat(rel.heap, snapshot, 0, std::ptr::null_mut(), true, false);
        scan_heap(rel.heap, idx, info, false, scan, |key, tid| {
            let (a, b) = pack(tid, key);
            heap_side.put(a, b);
        });
        pg_sys::UnregisterSnapshot(snapshot);
    }
    let mut heap_side = heap_side.finish();

    let mut pending = index_side.next().map(unpack);
    let mut last_tid: Option<Tid> = None;
    while let Some(hb) = heap_side.next() {
        let (tid, key) = unpack(hb);
        // Index entries of rows this snapshot does not see are allowed.
        while let Some((t, _)) = pending.filter(|(t, _)| *t < tid) {
            if last_tid == Some(t) {
                fail(idx, &format!("heap TID {} is indexed twice", show_tid(t)));
            }
            last_tid = Some(t);
            pending = index_side.next().map(unpack);
        }
        match pending {
            Some((t, k)) if t == tid => {
                if k != key {
                    fail(
                        idx,
                        &format!(
                            "row {} is indexed with key {} but has key {}",
                            show_tid(tid),
                            show_key(kind, k),
                            show_key(kind, key)
                        ),
                    );
                }
                pending = index_side.next().map(unpack);
                if pending.is_some_and(|(t2, _)| t2 == tid) {
                    fail(idx, &format!("heap TID {} is indexed twice", show_tid(tid)));
                }
                last_tid = Some(tid);
            }
            _ => fail(
                idx,
                &format!(
                    "row {} with key {} is not in the index",
                    show_tid(tid),
                    show_key(kind, key)
                ),
            ),
        }
    }
    while let Some((t, _)) = pending {
        if last_tid == Some(t) {
            fail(idx, &format!("heap TID {} is indexed twice", show_tid(t)));
        }
        last_tid = Some(t);
        pending = index_side.next().map(unpack);
    }
    index_side.end();
    heap_side.end();
}

fn show_key(kind: KeyKind, k: Option<u64>) -> String {
    k.map_or("NULL".into(), |k| show(kind, k))
}

fn show_tid(t: Tid) -> String {
    format!("({},{})", t >> 16, t & 0xffff)
}
