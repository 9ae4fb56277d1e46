//! `ambuild`: scan the heap, sort, write the run, train the model, write the
//! metapage; `ambuildempty`: the init fork of an unlogged index.
//!
//! While the heap delivers entries in key order (a serial id, an append-only
//! timestamp) they go straight to run pages and the trainer: no sort at all. The
//! first entry out of order (or more NULLs than fit the side buffer) moves
//! everything written so far into an
//! external sort ([`super::sort`]), which holds memory to `maintenance_work_mem`
//! and spills beyond it.

use super::datum::{index_kind, ordinal};
use super::handler::{PHASE_SCAN, PHASE_SORT, PHASE_WRITE};
use super::sort::{maintenance_budget, try_grow, Sorted, Sorter};
use crate::key::KeyKind;
use crate::model::Trainer;
use crate::storage::extents::Extents;
use crate::storage::meta::{Meta, FIRST_GENERATION, META_BLOCK};
use crate::storage::page::{self, PageKind};
use crate::storage::run::{tid_from_ptr, Section, SectionWriter, Tid};
use crate::storage::{model_pages, Buf};
use pgrx::pg_sys;
use pgrx::prelude::*;

pub fn progress(param: u32, value: i64) {
    // SAFETY: updates this backend's progress slot; a no-op when not reporting.
    unsafe { pg_sys::pgstat_progress_update_param(param as i32, value) };
}

/// Entries arriving in order, written as they come.
struct Direct {
    run: SectionWriter,
    trainer: Trainer,
    nulls: Vec<Tid>,
    last: Option<(u64, Tid)>,
}

struct BuildState {
    index: pg_sys::Relation,
    direct: Option<Direct>,
    /// After the direct path gave up: every entry, NULLs included.
    sorter: Option<Sorter>,
    null_budget: usize,
    tuples: f64,
}

impl BuildState {
    fn add(&mut self, key: Option<u64>, tid: Tid) {
        self.tuples += 1.0;
        if let Some(d) = self.direct.as_mut() {
            let in_order = match (key, d.last) {
                (None, _) => d.nulls.len() < self.null_budget,
                (Some(k), Some(last)) => (k, tid) >= last,
                (Some(_), None) => true,
            };
            if in_order {
                match key {
                    None => {
                        if d.nulls.len() == d.nulls.capacity() {
                            let more = d.nulls.capacity().max(1024).min(self.null_budget.max(1024));
                            try_grow(&mut d.nulls, more, "learned index build");
                        }
                        d.nulls.push(tid);
                        return;
                    }
                    Some(k) => {
                        d.run.push(k, tid);
                        d.trainer.push(k);
                        d.last = Some((k, tid));
                        return;
                    }
                }
            }
            self.spill();
        }
        self.sorter
            .as_mut()
            .expect("sorting after spill")
            .put_entry(key, tid);
    }

    /// Moves what the direct path wrote into the external sort. The NULLs it
    /// held count against the budget until they are moved too.
    fn spill(&mut self) {
        let d = self.direct.take().expect("direct path active");
        let budget = maintenance_budget();
        let held = d.nulls.capacity() * std::mem::size_of::<Tid>();
        let mut sorter = Sorter::new(budget.saturating_sub(held));
        // The writer's last page goes to disk too, and everything is read
        // back; the sorted run is written over the same blocks.
        let entries = d.run.entries;
        let counts = d.run.finish();
        let place = after_metapage();
        let written = Section {
            place: &place,
            first: 0,
            pages: counts.len() as u32,
            entries,
            kind: PageKind::Run,
            generation: FIRST_GENERATION,
            base: FIRST_GENERATION,
            dir: None,
            fingerprints: false,
        };
        for i in 0..written.pages {
            let page = written.read(self.index, i);
            for s in 0..page.len() {
                let (k, t) = page.entry(s);
                sorter.put(k, t);
            }
        }
        for &t in &d.nulls {
            sorter.put_entry(None, t);
        }
        drop(d.nulls);
        sorter.set_budget(budget);
        self.sorter = Some(sorter);
    }
}

/// Runs the table AM's index build scan (`table_index_build_scan`), handing
/// each row's key ordinal (`None` for NULL) and TID to `f`. `scan` may be a
/// scan the caller began with its own snapshot; otherwise the table AM picks
/// the snapshot a build uses. Returns the number of heap tuples seen.
///
/// # Safety
/// `heap` and `index` must be open and suitably locked; `info` built for `index`.
pub unsafe fn scan_heap(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    info: *mut pg_sys::IndexInfo,
    progress: bool,
    scan: pg_sys::TableScanDesc,
    mut f: impl FnMut(Option<u64>, Tid),
) -> f64 {
    struct State<'a> {
        kind: KeyKind,
        f: &'a mut dyn FnMut(Option<u64>, Tid),
    }
    #[pg_guard]
    unsafe extern "C-unwind" fn callback(
        _index: pg_sys::Relation,
        tid: pg_sys::ItemPointer,
        values: *mut pg_sys::Datum,
        isnull: *mut bool,
        _alive: bool,
        state: *mut std::ffi::c_void,
    ) {
        // SAFETY: `state` is the State below, alive for the whole scan; the
        // one-column index gives one value and one null flag.
        let st = &mut *(state as *mut State);
        let key = (!*isnull).then(|| ordinal(st.kind, *values));
        (st.f)(key, tid_from_ptr(&*tid));
    }
    let mut state = State {
        kind: index_kind(index),
        f: &mut f,
    };
    pg_sys::table_index_build_scan(
        heap,
        index,
        info,
        true,
        progress,
        Some(callback),
        &mut state as *mut State as *mut std::ffi::c_void,
        scan,
    )
}

/// Rejects index definitions the access method does not implement.
unsafe fn check_definition(index: pg_sys::Relation) {
    let name = page::relation_name(index);
    let opt = *(*index).rd_indoption;
    if opt != 0 {
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("learned index \"{name}\": DESC and NULLS FIRST are not supported"),
            "learneddb",
        )
        .set_hint("Create it ascending: a learned index is scanned backward for descending order.")
        .report(PgLogLevel::ERROR);
    }
    let _ = index_kind(index);
}

#[pg_guard]
pub unsafe extern "C-unwind" fn ambuild(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    index_info: *mut pg_sys::IndexInfo,
) -> *mut pg_sys::IndexBuildResult {
    check_definition(index);
    if pg_sys::RelationGetNumberOfBlocksInFork(index, pg_sys::ForkNumber::MAIN_FORKNUM) != 0 {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "index \"{}\" already contains data",
                page::relation_name(index)
            )
        );
    }
    let kind = index_kind(index);
    let target_window = super::options::target_window(index);
    // Block 0 first, so that the run starts at block 1.
    let meta_buf = Buf::extend(index, false);
    page::init(meta_buf.page(), PageKind::Meta, FIRST_GENERATION, 0);
    pg_sys::MarkBufferDirty(meta_buf.buffer());
    drop(meta_buf);

    let mut meta = Meta::new(kind, target_window);
    let (model, heap_tuples, index_tuples) =
        match super::parallel::ParallelBuild::launch(heap, index, index_info) {
            Some(mut parallel) => {
                progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_SCAN);
                let (sorted, heap_tuples, index_tuples) = parallel.sort(heap, index, index_info);
                progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_TOTAL, index_tuples as i64);
                let model = write_sorted(index, sorted, target_window, &mut meta);
                parallel.end();
                (model, heap_tuples, index_tuples)
            }
            None => build_serial(heap, index, index_info, target_window, &mut meta),
        };
    finish_build(index, model, &mut meta);
    let result = pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBuildResult>())
        as *mut pg_sys::IndexBuildResult;
    (*result).heap_tuples = heap_tuples;
    (*result).index_tuples = index_tuples;
    result
}

/// One backend scans the heap; entries that arrive in order skip the sort.
/// Returns the model and the heap and index tuple counts.
unsafe fn build_serial(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    index_info: *mut pg_sys::IndexInfo,
    target_window: u32,
    meta: &mut Meta,
) -> (Built, f64, f64) {
    let mut st = BuildState {
        index,
        direct: Some(Direct {
            run: SectionWriter::new(
                index,
                (after_metapage(), 0),
                Some(build_fillfactor(index)),
                FIRST_GENERATION,
            ),
            trainer: Trainer::new(target_window),
            nulls: Vec::new(),
            last: None,
        }),
        sorter: None,
        null_budget: maintenance_budget() / 4 / std::mem::size_of::<Tid>(),
        tuples: 0.0,
    };
    progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_SCAN);
    let heap_tuples = scan_heap(
        heap,
        index,
        index_info,
        true,
        std::ptr::null_mut(),
        |key, tid| st.add(key, tid),
    );
    progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_TOTAL, st.tuples as i64);
    let model = match st.direct.take() {
        Some(d) => write_direct(index, d, meta),
        None => {
            progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_SORT);
            let sorted = st.sorter.take().unwrap().finish();
            write_sorted(index, sorted, target_window, meta)
        }
    };
    (model, heap_tuples, st.tuples)
}

/// Writes the model pages and the metapage after the run, and WAL-logs the
/// whole index.
unsafe fn finish_build(index: pg_sys::Relation, (model, counts): Built, meta: &mut Meta) {
    meta.model_bytes = model.len() as u64;
    meta.model_pages = model_pages::write(
        index,
        (after_metapage(), meta.run_pages + meta.null_pages),
        meta.generation,
        (&model, &counts),
        false,
    );
    let used = meta.run_pages + meta.null_pages + meta.model_pages;
    meta.place = Extents::single(META_BLOCK + 1, used);
    // A direct write given up for the sort can leave pages past the end of
    // the sorted one: they are free blocks.
    let nblocks = crate::storage::buffer::nblocks(index);
    if nblocks > META_BLOCK + 1 + used {
        meta.free.free(crate::storage::extents::Extent {
            start: META_BLOCK + 1 + used,
            len: nblocks - (META_BLOCK + 1 + used),
        });
    }
    let view = crate::model::ModelView::open(&model).expect("freshly trained model");
    meta.model_leaves = view.nleaves() as u32;
    meta.max_window = view.max_window();
    meta.mean_window = view.mean_window();
    write_meta(index, meta);

    if relation_needs_wal(index) {
        let nblocks =
            pg_sys::RelationGetNumberOfBlocksInFork(index, pg_sys::ForkNumber::MAIN_FORKNUM);
        crate::storage::wal::log_new_blocks(index, 0, nblocks);
    }
}

/// A build's model and its run pages' entry counts (the page directory).
type Built = (Vec<u8>, Vec<u16>);

fn write_direct(index: pg_sys::Relation, d: Direct, meta: &mut Meta) -> Built {
    progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_WRITE);
    let counts = finish_run(d.run, meta);
    let mut nulls = d.nulls;
    nulls.sort_unstable();
    let mut w = SectionWriter::new(
        index,
        (after_metapage(), meta.run_pages),
        None,
        meta.generation,
    );
    for t in nulls {
        w.push(0, t);
    }
    finish_nulls(w, meta);
    (d.trainer.finish(), counts)
}

/// Writes the sorted entries: the run, trained on as it is written, then
/// the NULLs, which follow the keys in the sort.
fn write_sorted(
    index: pg_sys::Relation,
    mut sorted: Sorted,
    target_window: u32,
    meta: &mut Meta,
) -> Built {
    progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_WRITE);
    let mut run = SectionWriter::new(
        index,
        (after_metapage(), 0),
        Some(build_fillfactor(index)),
        meta.generation,
    );
    let mut trainer = Trainer::new(target_window);
    while let Some((key, tid)) = sorted.next_key() {
        run.push(key, tid);
        trainer.push(key);
        if run.entries.is_multiple_of(65536) {
            progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE, run.entries as i64);
            pgrx::check_for_interrupts!();
        }
    }
    let counts = finish_run(run, meta);
    let mut w = SectionWriter::new(
        index,
        (after_metapage(), meta.run_pages),
        None,
        meta.generation,
    );
    while let Some((key, tid)) = sorted.next_entry() {
        debug_assert!(key.is_none(), "the keys were written before");
        w.push(0, tid);
    }
    finish_nulls(w, meta);
    sorted.end();
    (trainer.finish(), counts)
}

/// Writes the run's last pages and records the run in `meta`.
fn finish_run(run: SectionWriter, meta: &mut Meta) -> Vec<u16> {
    (meta.key_lo, meta.key_hi) = run.key_range.unwrap_or((u64::MAX, 0));
    (meta.run_last_key, meta.run_last_tid) = run.last.unwrap_or((0, 0));
    meta.run_entries = run.entries;
    let counts = run.finish();
    meta.run_pages = counts.len() as u32;
    counts
}

fn finish_nulls(w: SectionWriter, meta: &mut Meta) {
    meta.null_entries = w.entries;
    meta.null_pages = w.finish().len() as u32;
    progress(
        pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE,
        (meta.run_entries + meta.null_entries) as i64,
    );
}

fn write_meta(index: pg_sys::Relation, meta: &Meta) {
    let buf = Buf::read_exclusive(index, META_BLOCK);
    // SAFETY: block 0, pinned and exclusive-locked during the build.
    unsafe {
        meta.init_page(buf.page());
        pg_sys::MarkBufferDirty(buf.buffer());
    }
}

/// How full a build packs its run pages: full unless the `fillfactor`
/// reloption asks for room.
fn build_fillfactor(index: pg_sys::Relation) -> u32 {
    // SAFETY: the index being built is open.
    unsafe { super::options::fillfactor(index, false) }
}

/// Every block after the metapage: where a build writes, in order.
fn after_metapage() -> Extents {
    Extents::single(META_BLOCK + 1, u32::MAX - META_BLOCK - 2)
}

/// PostgreSQL's `RelationNeedsWAL`.
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn relation_needs_wal(rel: pg_sys::Relation) -> bool {
    if (*(*rel).rd_rel).relpersistence != pg_sys::RELPERSISTENCE_PERMANENT as std::ffi::c_char {
        return false;
    }
    let wal_needed = pg_sys::wal_level >= pg_sys::WalLevel::WAL_LEVEL_REPLICA as i32;
    #[cfg(feature = "pg15")]
    let first = (*rel).rd_firstRelfilenodeSubid;
    #[cfg(not(feature = "pg15"))]
    let first = (*rel).rd_firstRelfilelocatorSubid;
    wal_needed || ((*rel).rd_createSubid == 0 && first == 0)
}

#[pg_guard]
pub unsafe extern "C-unwind" fn ambuildempty(index: pg_sys::Relation) {
    check_definition(index);
    let kind = index_kind(index);
    let target_window = super::options::target_window(index);
    let model = Trainer::new(target_window).finish();
    let mut meta = Meta::new(kind, target_window);
    meta.model_bytes = model.len() as u64;
    meta.model_pages = model_pages::pages_for(model.len(), 0);
    debug_assert_eq!(meta.model_pages, 1);
    meta.place = Extents::single(META_BLOCK + 1, 1);
    // The init fork is copied over the main fork at startup after a crash: it
    // must be a whole empty index, always WAL-logged.
    for blk in 0..2u32 {
        let buf = pg_sys::ReadBufferExtended(
            index,
            pg_sys::ForkNumber::INIT_FORKNUM,
            pg_sys::InvalidBlockNumber,
            pg_sys::ReadBufferMode::RBM_NORMAL,
            std::ptr::null_mut(),
        );
        pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
        debug_assert_eq!(pg_sys::BufferGetBlockNumber(buf), blk);
        pg_sys::CritSectionCount += 1;
        let p = pg_sys::BufferGetPage(buf);
        if blk == 0 {
            meta.init_page(p);
        } else {
            model_pages::init_page(p, meta.generation, &model);
        }
        pg_sys::MarkBufferDirty(buf);
        pg_sys::log_newpage_buffer(buf, true);
        pg_sys::CritSectionCount -= 1;
        pg_sys::UnlockReleaseBuffer(buf);
    }
}
