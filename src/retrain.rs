//! `learned_retrain(index)`: merge the delta into a new generation of the
//! run, train its model, and switch to it (DESIGN.md section 3b).
//!
//! 0. **Retire** the generation before the current one, once no snapshot can
//!    read it: its blocks join the free list, and the delta pages merged into
//!    the current run become free delta pages. Until then a retrain is
//!    refused.
//! 1. **Freeze** ([`delta::freeze`]): new delta pages carry the next
//!    generation number; the open ones are closed. The pages tagged earlier
//!    (and not merged by an earlier generation) are the frozen delta.
//! 2. **Merge**: the run's live entries, its NULLs and the frozen delta's
//!    entries go through the external sort; a first pass trains the model and
//!    chooses the key width, so the page count is known before anything is
//!    written.
//! 3. **Write** the new run, NULL and model pages into free blocks and blocks
//!    added at the end of the index ([`Extents`]), then WAL-log them whole
//!    (`log_newpage_range`). Nothing points at them yet.
//! 4. **Switch**: one WAL record, the metapage, makes them current. Scans that
//!    began before read the previous generation and the frozen delta, which
//!    stay as they were; VACUUM keeps both free of dead entries until they are
//!    retired.
//!
//! Readers and writers wait only for the metapage lock of each step. A
//! retrain excludes VACUUM and other retrains of the table by taking
//! `ShareUpdateExclusiveLock`, as VACUUM does.

use crate::am::build::relation_needs_wal;
use crate::am::sort::{maintenance_budget, Sorted, Sorter};
use crate::model::{ModelView, Trainer};
use crate::stats::Opened;
use crate::storage::buffer::{nblocks, BulkRead};
use crate::storage::delta::{self, DeltaPage, CLOSED, FREE};
use crate::storage::extents::{Extent, Extents, MAX_EXTENTS};
use crate::storage::meta::META_BLOCK;
use crate::storage::run::{capacity, Section, SectionWriter, NULL_CAPACITY};
use crate::storage::wal::Wal;
use crate::storage::{model_pages, Buf, Meta};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgRelation;

/// What a retrain did.
pub struct Report {
    pub generation: u32,
    pub entries: u64,
    pub merged: u64,
    pub dropped: u64,
    pub pages_written: u32,
    pub seconds: f64,
}

#[allow(clippy::type_complexity)]
#[pg_extern(volatile)]
fn learned_retrain(
    index: PgRelation,
) -> TableIterator<
    'static,
    (
        name!(generation, i64),
        name!(entries, i64),
        name!(delta_merged, i64),
        name!(dead_dropped, i64),
        name!(pages_written, i64),
        name!(seconds, f64),
        name!(path, String),
    ),
> {
    let rel = Opened::with_locks(
        index,
        pg_sys::ShareUpdateExclusiveLock as i32,
        pg_sys::RowExclusiveLock as i32,
    );
    let Some(r) = retrain(&rel) else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            format!(
                "learned index \"{}\": transactions older than its last retrain are still running",
                // SAFETY: the index is open.
                unsafe { crate::storage::page::relation_name(rel.index) }
            ),
            "Its previous generation must stay readable until they end; retrain again later."
        );
    };
    TableIterator::once((
        r.generation as i64,
        r.entries as i64,
        r.merged as i64,
        r.dropped as i64,
        r.pages_written as i64,
        r.seconds,
        "merge".to_string(),
    ))
}

/// Retrains the index of `rel`, which the caller holds with the locks above;
/// `None` while transactions older than the last retrain still run.
pub fn retrain(rel: &Opened) -> Option<Report> {
    let idx = rel.index;
    // SAFETY: reads the clock.
    let started = unsafe { pg_sys::GetCurrentTimestamp() };
    let ring = BulkRead::new();
    let before = Meta::read(idx);
    if before.prev_generation != 0 && !retired(rel, &before) {
        return None;
    }
    if before.prev_generation != 0 {
        retire(idx, ring.get());
    }
    let next = before.insert_generation.max(before.generation) + 1;
    let meta = delta::freeze(idx, next);

    // Merge: the run's live entries, its NULLs, and the frozen delta.
    let mut sorter = Sorter::new(maintenance_budget());
    let (mut dropped, mut merged) = (0u64, 0u64);
    for section in [Section::run(&meta), Section::nulls(&meta)] {
        for i in 0..section.pages {
            let page = section.read_with(idx, i, ring.get());
            dropped += (page.len() - page.live().count()) as u64;
            for s in page.live() {
                let key = (section.width != 0).then(|| page.key(s));
                sorter.put_entry(key, page.tid(s));
            }
            pgrx::check_for_interrupts!();
        }
    }
    let frozen = delta::directory(idx, &meta, ring.get())
        .into_iter()
        .filter(|d| d.state != FREE && d.generation >= meta.generation && d.generation < next);
    for d in frozen {
        let page = DeltaPage::read(idx, d.blk, ring.get());
        for e in page.entries() {
            merged += 1;
            sorter.put_entry((!e.null).then_some(e.key), e.tid);
        }
    }
    let mut sorted = sorter.finish();
    let shape = plan(&mut sorted, meta.target_window);

    // Place the pages, then write them.
    let total = shape.run_pages + shape.null_pages + shape.model_pages;
    let place = allocate(idx, total);
    sorted.rewind();
    let mut run = SectionWriter::new(idx, (place, 0), shape.width, next);
    while let Some((key, tid)) = sorted.next_key() {
        run.push(key, tid)
            .expect("the first pass chose a width that fits");
    }
    let key_range = run.key_range;
    let (run_pages, run_entries) = run.finish();
    let mut nulls = SectionWriter::new(idx, (place, run_pages), 0, next);
    while let Some((key, tid)) = sorted.next_entry() {
        debug_assert!(key.is_none(), "the keys were written before");
        nulls.push(0, tid).expect("NULL pages have no keys");
    }
    let (null_pages, null_entries) = nulls.finish();
    sorted.end();
    let model_pages = model_pages::write(
        idx,
        (place, run_pages + null_pages),
        next,
        &shape.model,
        true,
    );
    assert_eq!(
        (run_pages, null_pages, model_pages),
        (shape.run_pages, shape.null_pages, shape.model_pages),
        "the first pass counted the pages"
    );
    // SAFETY: the index is open; the extents were written above.
    unsafe {
        if relation_needs_wal(idx) {
            for e in place.as_slice() {
                pg_sys::log_newpage_range(
                    idx,
                    pg_sys::ForkNumber::MAIN_FORKNUM,
                    e.start,
                    e.start + e.len,
                    true,
                );
            }
        }
    }

    // The switch: one record, the metapage.
    let view = ModelView::open(&shape.model).expect("freshly trained model");
    // This transaction's id, taken before the metapage lock: every snapshot
    // that can have read the previous generation's metapage was taken before
    // it ended, so has an xmin at or below it; once it is below every
    // horizon, nothing reads the previous generation.
    // SAFETY: assigns (or returns) the top transaction's id.
    let retired_at = unsafe { pg_sys::GetTopFullTransactionId() };
    let meta_buf = Buf::read_exclusive(idx, META_BLOCK);
    // SAFETY: block 0, pinned and exclusive-locked.
    let mut m = unsafe { Meta::from_page(idx, meta_buf.page()) };
    m.prev_generation = m.generation;
    m.prev_key_width = m.key_width;
    m.prev_place = m.place;
    m.prev_run_pages = m.run_pages;
    m.prev_run_entries = m.run_entries;
    m.prev_null_pages = m.null_pages;
    m.prev_null_entries = m.null_entries;
    m.prev_model_pages = m.model_pages;
    m.prev_retired = retired_at.value;
    m.generation = next;
    m.key_width = shape.width;
    m.place = place;
    (m.run_pages, m.run_entries) = (run_pages, run_entries);
    (m.null_pages, m.null_entries) = (null_pages, null_entries);
    m.model_pages = model_pages;
    m.model_bytes = shape.model.len() as u64;
    m.model_leaves = view.nleaves() as u32;
    m.max_window = view.max_window();
    m.mean_window = view.mean_window();
    // The planner's view of the delta: the closed pages not merged.
    (m.key_lo, m.key_hi) = key_range.unwrap_or((u64::MAX, 0));
    (m.closed_pages, m.closed_width) = (0, 0.0);
    for d in delta::directory(idx, &m, ring.get()) {
        if d.state == CLOSED && d.generation >= next && d.min <= d.max {
            m.closed_pages += 1;
            m.closed_width += (d.max - d.min) as f64;
            (m.key_lo, m.key_hi) = (m.key_lo.min(d.min), m.key_hi.max(d.max));
        }
    }
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    m.retrained_at = now;
    m.retrain_count += 1;
    m.retrain_us = (now - started).max(0) as u64;
    let mut wal = Wal::start(idx);
    m.write(&mut wal, &meta_buf);
    wal.finish();
    Some(Report {
        generation: next,
        entries: run_entries + null_entries,
        merged,
        dropped,
        pages_written: total,
        seconds: m.retrain_us as f64 / 1e6,
    })
}

/// Whether no running snapshot can still read the previous generation: the
/// transaction that switched away from it is older than every snapshot's
/// horizon (nbtree's rule for recycling deleted pages). The horizon is
/// computed afresh: the cached GlobalVis bounds only move when this backend
/// sees new transaction ids, and could refuse long after the last old
/// snapshot ended.
fn retired(rel: &Opened, meta: &Meta) -> bool {
    // SAFETY: the heap is open; computing the horizon reads the proc array.
    let horizon = unsafe { pg_sys::GetOldestNonRemovableTransactionId(rel.heap) };
    // The 32-bit xid of a recent full one.
    let retired = pg_sys::TransactionId::from(meta.prev_retired as u32);
    // SAFETY: plain xid arithmetic.
    unsafe { pg_sys::TransactionIdPrecedes(retired, horizon) }
}

/// The new generation's shape, from a first pass over the sorted entries.
struct Shape {
    width: u8,
    run_pages: u32,
    null_pages: u32,
    model_pages: u32,
    model: Vec<u8>,
}

/// Trains the model on the keys, and chooses 4-byte keys unless some page's
/// keys span more than 32 bits.
fn plan(sorted: &mut Sorted, target_window: u32) -> Shape {
    let cap4 = capacity(4) as u64;
    let mut trainer = Trainer::new(target_window);
    let (mut keys, mut nulls) = (0u64, 0u64);
    let mut fits4 = true;
    let mut page_first = 0u64;
    while let Some((key, _)) = sorted.next_entry() {
        let Some(key) = key else {
            nulls += 1;
            continue;
        };
        if keys.is_multiple_of(cap4) {
            page_first = key;
        }
        fits4 &= key - page_first <= u32::MAX as u64;
        trainer.push(key);
        keys += 1;
        if keys.is_multiple_of(65536) {
            pgrx::check_for_interrupts!();
        }
    }
    let width = if fits4 { 4 } else { 8 };
    let model = trainer.finish();
    Shape {
        width,
        run_pages: keys.div_ceil(capacity(width) as u64) as u32,
        null_pages: nulls.div_ceil(NULL_CAPACITY as u64) as u32,
        model_pages: model.len().div_ceil(model_pages::PAYLOAD) as u32,
        model,
    }
}

/// Once no snapshot can read the previous generation: the delta pages merged
/// into the current run become free delta pages, and the previous
/// generation's blocks join the free list (one record, the metapage).
fn retire(idx: pg_sys::Relation, strategy: crate::storage::buffer::Strategy) {
    let meta = Meta::read(idx);
    for d in delta::directory(idx, &meta, strategy) {
        if d.state == CLOSED && d.generation < meta.generation {
            delta::discard(idx, &d);
        }
    }
    let meta_buf = Buf::read_exclusive(idx, META_BLOCK);
    // SAFETY: block 0, pinned and exclusive-locked.
    let mut m = unsafe { Meta::from_page(idx, meta_buf.page()) };
    for e in m.prev_place.as_slice().to_vec() {
        m.free.free(e);
    }
    m.prev_generation = 0;
    m.prev_key_width = 0;
    m.prev_place = Extents::default();
    (m.prev_run_pages, m.prev_run_entries) = (0, 0);
    (m.prev_null_pages, m.prev_null_entries) = (0, 0);
    m.prev_model_pages = 0;
    let mut wal = Wal::start(idx);
    m.write(&mut wal, &meta_buf);
    wal.finish();
}

/// Places `n` pages: in blocks retired generations left free (a metapage
/// record takes them off the free list), and for the rest in blocks added at
/// the end of the index under one hold of the extension lock, so that they
/// are contiguous. A crash before the switch leaves the blocks taken unused.
fn allocate(idx: pg_sys::Relation, n: u32) -> Extents {
    let mut place = Extents::default();
    {
        let meta_buf = Buf::read_exclusive(idx, META_BLOCK);
        // SAFETY: block 0, pinned and exclusive-locked.
        let mut m = unsafe { Meta::from_page(idx, meta_buf.page()) };
        // Keep one extent for the blocks added at the end.
        if m.free.take(n, &mut place, MAX_EXTENTS - 1) > 0 {
            let mut wal = Wal::start(idx);
            m.write(&mut wal, &meta_buf);
            wal.finish();
        }
    }
    let rest = n - place.blocks() as u32;
    if rest > 0 {
        // SAFETY: the index is open; the extension lock serializes this with
        // inserters that add delta pages.
        unsafe {
            pg_sys::LockRelationForExtension(idx, pg_sys::ExclusiveLock as i32);
            let start = nblocks(idx);
            for _ in 0..rest {
                drop(Buf::extend(idx, false));
            }
            pg_sys::UnlockRelationForExtension(idx, pg_sys::ExclusiveLock as i32);
            let pushed = place.push(Extent { start, len: rest });
            debug_assert!(pushed, "one extent was kept for the end");
        }
    }
    place
}
