//! `ambuild`: scan the heap, sort, write the run, train the model, write the
//! metapage; `ambuildempty`: the init fork of an unlogged index.
//!
//! While the heap delivers entries in key order (a serial id, an append-only
//! timestamp) they go straight to run pages and the trainer: no sort at all. The
//! first entry out of order (or a page whose keys do not fit 4-byte offsets, or
//! more NULLs than fit the side buffer) moves everything written so far into a
//! tuplesort, which holds memory to `maintenance_work_mem` and spills beyond it.

use super::datum::{index_kind, ordinal};
use super::handler::{PHASE_SCAN, PHASE_SORT, PHASE_WRITE};
use crate::key::KeyKind;
use crate::model::Trainer;
use crate::storage::meta::{Meta, META_BLOCK, META_LEN};
use crate::storage::page::{self, PageKind};
use crate::storage::run::{tid_from_ptr, Section, SectionWriter, Tid};
use crate::storage::{model_pages, Buf};
use pgrx::pg_sys;
use pgrx::prelude::*;

/// One entry of the sort, packed so that byte order is (is null, ordinal, TID)
/// order: the built-in `uuid` type compares with memcmp, which lets PostgreSQL's
/// own tuplesort (abbreviated keys, spilling, memory accounting) do the sorting.
fn pack(key: Option<u64>, tid: Tid) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = key.is_none() as u8;
    b[1..9].copy_from_slice(&key.unwrap_or(0).to_be_bytes());
    b[9..15].copy_from_slice(&tid.to_be_bytes()[2..8]);
    b
}

fn unpack(b: &[u8; 16]) -> (Option<u64>, Tid) {
    let key = u64::from_be_bytes(b[1..9].try_into().unwrap());
    let mut t = [0u8; 8];
    t[2..8].copy_from_slice(&b[9..15]);
    ((b[0] == 0).then_some(key), u64::from_be_bytes(t))
}

/// A tuplesort of packed entries.
pub struct Sorter {
    state: *mut pg_sys::Tuplesortstate,
}

impl Sorter {
    pub fn new(random_access: bool) -> Sorter {
        // SAFETY: the uuid type and its "<" operator are built in; the sort state
        // lives in its own memory context, released by `end` or by abort.
        unsafe {
            let tc = pg_sys::lookup_type_cache(pg_sys::UUIDOID, pg_sys::TYPECACHE_LT_OPR as i32);
            let opt = if random_access { pg_sys::TUPLESORT_RANDOMACCESS as i32 } else { 0 };
            let state = pg_sys::tuplesort_begin_datum(
                pg_sys::UUIDOID,
                (*tc).lt_opr,
                pg_sys::InvalidOid,
                false,
                pg_sys::maintenance_work_mem,
                std::ptr::null_mut(),
                opt,
            );
            Sorter { state }
        }
    }

    pub fn put(&mut self, key: Option<u64>, tid: Tid) {
        self.put_bytes(pack(key, tid));
    }

    /// Adds 16 bytes that sort by memcmp.
    pub fn put_bytes(&mut self, b: [u8; 16]) {
        // SAFETY: tuplesort copies the 16 bytes the datum points to.
        unsafe { pg_sys::tuplesort_putdatum(self.state, pg_sys::Datum::from(b.as_ptr()), false) };
    }

    pub fn sort(&mut self) {
        // SAFETY: the state is live and in its loading phase.
        unsafe { pg_sys::tuplesort_performsort(self.state) };
    }

    pub fn rescan(&mut self) {
        // SAFETY: the sort was begun with random access.
        unsafe { pg_sys::tuplesort_rescan(self.state) };
    }

    pub fn next(&mut self) -> Option<(Option<u64>, Tid)> {
        self.next_bytes().map(|b| unpack(&b))
    }

    pub fn next_bytes(&mut self) -> Option<[u8; 16]> {
        let mut d = pg_sys::Datum::from(0usize);
        let mut isnull = false;
        // SAFETY: the sort is performed. The returned datum points to 16 bytes:
        // a fresh palloc'd copy (pg15, freed here) or memory owned by the sort
        // and valid until the next call (pg16+, copy = false).
        unsafe {
            #[cfg(feature = "pg15")]
            let more = pg_sys::tuplesort_getdatum(self.state, true, &mut d, &mut isnull, std::ptr::null_mut());
            #[cfg(not(feature = "pg15"))]
            let more = pg_sys::tuplesort_getdatum(self.state, true, false, &mut d, &mut isnull, std::ptr::null_mut());
            if !more {
                return None;
            }
            let p = d.cast_mut_ptr::<u8>();
            let e = *(p as *const [u8; 16]);
            #[cfg(feature = "pg15")]
            pg_sys::pfree(p.cast());
            Some(e)
        }
    }

    pub fn end(self) {
        // SAFETY: the state is live; this releases its memory and temp files.
        unsafe { pg_sys::tuplesort_end(self.state) };
    }
}

fn progress(param: u32, value: i64) {
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
    kind: KeyKind,
    direct: Option<Direct>,
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
                        d.nulls.push(tid);
                        return;
                    }
                    Some(k) => {
                        if d.run.push(k, tid).is_ok() {
                            d.trainer.push(k);
                            d.last = Some((k, tid));
                            return;
                        }
                    }
                }
            }
            self.spill();
        }
        self.sorter.as_mut().expect("sorting after spill").put(key, tid);
    }

    /// Moves what the direct path wrote into a tuplesort.
    fn spill(&mut self) {
        let d = self.direct.take().expect("direct path active");
        let mut sorter = Sorter::new(true);
        let written = Section { start: META_BLOCK + 1, pages: d.run.pages, entries: d.run.pages as u64 * crate::storage::run::capacity(4) as u64, width: 4 };
        for i in 0..written.pages {
            let (_buf, page) = written.read(self.index, i);
            for s in 0..page.len() {
                sorter.put(Some(page.key(s)), page.tid(s));
            }
        }
        for (k, t) in d.run.pending() {
            sorter.put(Some(k), t);
        }
        for &t in &d.nulls {
            sorter.put(None, t);
        }
        self.sorter = Some(sorter);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn build_callback(
    _index: pg_sys::Relation,
    tid: pg_sys::ItemPointer,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    _alive: bool,
    state: *mut std::ffi::c_void,
) {
    // SAFETY: `state` is the BuildState passed to table_index_build_scan; the
    // one-column index gives one value and one null flag.
    let st = &mut *(state as *mut BuildState);
    let key = (!*isnull).then(|| ordinal(st.kind, *values));
    st.add(key, tid_from_ptr(&*tid));
}

/// Rejects index definitions the access method does not implement.
unsafe fn check_definition(index: pg_sys::Relation) {
    let name = page::relation_name(index);
    let opt = *(*index).rd_indoption;
    if opt != 0 {
        error!("learned index \"{name}\": DESC and NULLS FIRST are not supported; a learned index is scanned backward for descending order");
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
        error!("index \"{}\" already contains data", page::relation_name(index));
    }
    let kind = index_kind(index);
    let target_window = super::options::target_window(index);
    // Block 0 first, so that the run starts at block 1.
    let meta_buf = Buf::extend(index, false);
    page::init(meta_buf.page(), PageKind::Meta, 0);
    pg_sys::MarkBufferDirty(meta_buf.buffer());
    drop(meta_buf);

    let mut st = BuildState {
        index,
        kind,
        direct: Some(Direct { run: SectionWriter::new(index, META_BLOCK + 1, 4), trainer: Trainer::new(target_window), nulls: Vec::new(), last: None }),
        sorter: None,
        null_budget: (pg_sys::maintenance_work_mem as usize * 1024 / 2) / std::mem::size_of::<Tid>(),
        tuples: 0.0,
    };
    progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_SCAN);
    let heap_tuples = pg_sys::table_index_build_scan(
        heap,
        index,
        index_info,
        true,
        true,
        Some(build_callback),
        &mut st as *mut BuildState as *mut std::ffi::c_void,
        std::ptr::null_mut(),
    );
    progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_TOTAL, st.tuples as i64);

    let mut meta = Meta::new(kind, target_window);
    let model = match st.direct.take() {
        Some(d) => write_direct(index, d, &mut meta),
        None => write_sorted(index, st.sorter.take().unwrap(), target_window, &mut meta),
    };
    meta.model_start = meta.null_start + meta.null_pages;
    meta.model_bytes = model.len() as u64;
    meta.model_pages = model_pages::write(index, meta.model_start, &model, false);
    let view = crate::model::ModelView::open(&model).expect("freshly trained model");
    meta.model_leaves = view.nleaves() as u32;
    meta.max_window = view.max_window();
    meta.mean_window = view.mean_window();
    write_meta(index, &meta);

    if relation_needs_wal(index) {
        let nblocks = pg_sys::RelationGetNumberOfBlocksInFork(index, pg_sys::ForkNumber::MAIN_FORKNUM);
        pg_sys::log_newpage_range(index, pg_sys::ForkNumber::MAIN_FORKNUM, 0, nblocks, true);
    }

    let result = pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBuildResult>()) as *mut pg_sys::IndexBuildResult;
    (*result).heap_tuples = heap_tuples;
    (*result).index_tuples = st.tuples;
    result
}

fn write_direct(index: pg_sys::Relation, d: Direct, meta: &mut Meta) -> Vec<u8> {
    progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_WRITE);
    let (pages, entries) = d.run.finish();
    meta.key_width = 4;
    meta.run_pages = pages;
    meta.run_entries = entries;
    meta.null_start = meta.run_start + pages;
    let mut nulls = d.nulls;
    nulls.sort_unstable();
    let mut w = SectionWriter::new(index, meta.null_start, 0);
    for t in nulls {
        w.push(0, t).expect("null pages have no keys");
    }
    (meta.null_pages, meta.null_entries) = w.finish();
    progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE, (meta.run_entries + meta.null_entries) as i64);
    d.trainer.finish()
}

/// Two tries over the sorted entries: 4-byte keys, and 8-byte keys if some page
/// spans more than 32 bits.
fn write_sorted(index: pg_sys::Relation, mut sorter: Sorter, target_window: u32, meta: &mut Meta) -> Vec<u8> {
    progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_SORT);
    sorter.sort();
    progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_WRITE);
    for width in [4u8, 8] {
        if width == 8 {
            sorter.rescan();
        }
        let mut run = SectionWriter::new(index, meta.run_start, width);
        let mut trainer = Trainer::new(target_window);
        let mut nulls: Option<SectionWriter> = None;
        let mut done = 0i64;
        let mut too_wide = false;
        while let Some((key, tid)) = sorter.next() {
            match key {
                Some(k) => {
                    if run.push(k, tid).is_err() {
                        too_wide = true;
                        break;
                    }
                    trainer.push(k);
                }
                None => {
                    let w = nulls.get_or_insert_with(|| SectionWriter::new(index, run.end_block(), 0));
                    w.push(0, tid).expect("null pages have no keys");
                }
            }
            done += 1;
            if done % 4096 == 0 {
                progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE, done);
                pgrx::check_for_interrupts!();
            }
        }
        if too_wide {
            continue;
        }
        let (pages, entries) = run.finish();
        meta.key_width = width;
        meta.run_pages = pages;
        meta.run_entries = entries;
        meta.null_start = meta.run_start + pages;
        if let Some(w) = nulls {
            (meta.null_pages, meta.null_entries) = w.finish();
        }
        progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE, done);
        sorter.end();
        return trainer.finish();
    }
    unreachable!("8-byte keys always fit")
}

fn write_meta(index: pg_sys::Relation, meta: &Meta) {
    let buf = Buf::read_exclusive(index, META_BLOCK);
    // SAFETY: block 0, pinned and exclusive-locked during the build.
    unsafe {
        let p = buf.page();
        page::init(p, PageKind::Meta, META_LEN);
        meta.to_page(p);
        pg_sys::MarkBufferDirty(buf.buffer());
    }
}

/// PostgreSQL's `RelationNeedsWAL`.
unsafe fn relation_needs_wal(rel: pg_sys::Relation) -> bool {
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
    meta.model_pages = 1;
    // The init fork is copied over the main fork at startup after a crash: it
    // must be a whole empty index, always WAL-logged.
    for blk in 0..2u32 {
        let buf = pg_sys::ReadBufferExtended(index, pg_sys::ForkNumber::INIT_FORKNUM, pg_sys::InvalidBlockNumber, pg_sys::ReadBufferMode::RBM_NORMAL, std::ptr::null_mut());
        pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
        debug_assert_eq!(pg_sys::BufferGetBlockNumber(buf), blk);
        pg_sys::CritSectionCount += 1;
        let p = pg_sys::BufferGetPage(buf);
        if blk == 0 {
            page::init(p, PageKind::Meta, META_LEN);
            meta.to_page(p);
        } else {
            page::init(p, PageKind::Model, 8 + model.len());
            let base = page::content(p);
            base.cast::<u32>().write_unaligned(model.len() as u32);
            std::ptr::copy_nonoverlapping(model.as_ptr(), base.add(8), model.len());
        }
        pg_sys::MarkBufferDirty(buf);
        pg_sys::log_newpage_buffer(buf, true);
        pg_sys::CritSectionCount -= 1;
        pg_sys::UnlockReleaseBuffer(buf);
    }
}
