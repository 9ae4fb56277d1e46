//! `learned_retrain(index)`: merge the delta into a new generation of the
//! run, train its model, and switch to it (DESIGN.md section 3b).
//!
//! 0. **Retire** the generation before the current one, once no snapshot can
//!    read it: its blocks join the free list, and the delta pages merged into
//!    the current run become free delta pages. Until then a retrain is
//!    refused. The worker and VACUUM retire it sooner ([`retire_unread`]).
//! 1. **Freeze** ([`delta::freeze`]): new delta pages carry the next
//!    generation number; the open ones the metapage lists are closed. The
//!    pages tagged earlier (and not merged by an earlier generation) are the
//!    frozen delta. Its open bounded pages (spilled rows) are closed once the
//!    retrain knows it merges them ([`delta::close_bounded`]); those it
//!    carries over stay open.
//! 2. **Append or merge**: when every frozen key lies at or above the run's
//!    last, the run's full pages are kept and only its tail and the model's
//!    last leaf are redone ([`append`]). A few rows that spilled below the
//!    run's last (fewer than a merge is worth, [`carry_over`]) do not stop
//!    it: their pages become delta pages of the new generation. Otherwise a
//!    run long enough to cut has one segment merged with the frozen pages it
//!    owns, the rest kept (`partial`); else the run's live entries, its NULLs
//!    and the frozen delta go through the external sort ([`merge`]). A first pass trains the model and packs the
//!    pages without writing them, so the page count is known before anything
//!    is written.
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
use crate::pause::pause_point;
use crate::stats::{IndexArg, Opened};
use crate::storage::buffer::{nblocks, BulkRead, Strategy};
use crate::storage::delta::{self, DeltaPage, DirEntry, CLOSED, OPEN, SPLIT};
use crate::storage::extents::{Extent, Extents, MAX_EXTENTS};
use crate::storage::meta::META_BLOCK;
use crate::storage::page::{recycled_error, PageKind};
use crate::storage::run::{PageCounter, Section, SectionWriter, Tid};
use crate::storage::search::{self, Directory};
use crate::storage::wal::{self, Wal};
use crate::storage::{model_pages, Buf, Meta};
use pgrx::pg_sys;
use pgrx::prelude::*;

mod partial;

thread_local! {
    /// The table and index of the retrain the worker runs in this process
    /// (see [`retrain_giving_way`]).
    static GIVING_WAY: std::cell::Cell<Option<(pg_sys::Relation, pg_sys::Relation)>> =
        const { std::cell::Cell::new(None) };
    /// Set when that retrain gave way, for the worker's statistics.
    static GAVE_WAY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// [`retrain`], giving way as autovacuum does: until the switch, every
/// interrupt check raises an ERROR (`55P03`) once another session waits for
/// a lock that conflicts with the retrain's on the table, or for one on the
/// index that inserts would queue behind (`ALTER INDEX`). DDL queued behind
/// a long retrain would queue every query on the table behind it. What the
/// retrain took is reclaimed as after any failed one, and the worker
/// retrains the index at its next visit. (A manual `learned_retrain` waits,
/// as a manual VACUUM does.) The caller holds the table in
/// `ShareUpdateExclusiveLock`.
pub fn retrain_giving_way(rel: &Opened) -> Option<Report> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            GIVING_WAY.set(None);
        }
    }
    let update = pg_sys::ShareUpdateExclusiveLock as i32;
    // The index in this mode too, which inserts and scans do not conflict
    // with, so that its waiters can be told: LockHasWaiters needs the lock
    // held in the mode asked about, and in the main lock table (the row
    // exclusive lock of a retrain takes the fast path, which it cannot read).
    // SAFETY: the index is open; a conditional lock, kept to the
    // transaction's end.
    if !unsafe { pg_sys::ConditionalLockRelationOid((*rel.index).rd_id, update) } {
        give_way(rel.index);
    }
    GIVING_WAY.set(Some((rel.heap, rel.index)));
    let _reset = Reset;
    retrain(rel)
}

/// Whether the last [`retrain_giving_way`] gave way (once).
pub fn gave_way() -> bool {
    GAVE_WAY.replace(false)
}

/// A retrain's interrupt check (see [`retrain_giving_way`]).
fn interrupts() {
    pgrx::check_for_interrupts!();
    let Some((heap, index)) = GIVING_WAY.get() else {
        return;
    };
    // Only where a cancel could end it: not while a buffer lock is held
    // (the switch absorbs under the metapage's), which holds interrupts off.
    // SAFETY: reads this backend's counters.
    if unsafe { pg_sys::InterruptHoldoffCount > 0 || pg_sys::CritSectionCount > 0 } {
        return;
    }
    let update = pg_sys::ShareUpdateExclusiveLock as i32;
    // SAFETY: both relations are open, and held by this backend in this
    // mode until the retrain's transaction ends.
    if unsafe {
        pg_sys::LockHasWaitersRelation(heap, update)
            || pg_sys::LockHasWaitersRelation(index, update)
    } {
        give_way(index);
    }
}

fn give_way(index: pg_sys::Relation) -> ! {
    GAVE_WAY.set(true);
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
        format!(
            "the retrain of index \"{}\" gave way to a session waiting for a lock on it or its table",
            // SAFETY: the index is open.
            unsafe { crate::storage::page::relation_name(index) }
        ),
        "The worker retrains it at its next visit."
    );
}

/// What a retrain did.
pub struct Report {
    pub generation: u32,
    pub entries: u64,
    pub merged: u64,
    pub dropped: u64,
    pub pages_written: u32,
    /// The index's size in blocks after the switch, and how many of them
    /// are free (the previous generation's stay in use until it is retired).
    pub blocks: u32,
    pub free_blocks: u64,
    pub seconds: f64,
    pub path: Path,
}

/// How a retrain built the new generation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Path {
    /// The delta's keys all lay at or above the run's last: the run's full
    /// pages are kept, the rest is written after them.
    Append,
    /// Everything was sorted together and written anew.
    Merge,
    /// One segment of the run was merged with the delta pages it owns; the
    /// pages around it are kept, the other delta pages carried over.
    Partial,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Append => "append",
            Path::Merge => "merge",
            Path::Partial => "partial",
        }
    }
}

#[allow(clippy::type_complexity)]
#[pg_extern(volatile)]
fn learned_retrain(
    index: IndexArg,
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
        r.path.name().to_string(),
    ))
}

/// A generation written and not yet switched to.
struct Written {
    path: Path,
    place: Extents,
    run_last: Option<(u64, Tid)>,
    /// Each run page's entry count: the page directory.
    counts: Vec<u16>,
    run_pages: u32,
    run_entries: u64,
    run_dead: u64,
    run_base: u32,
    /// Leading and trailing run pages kept from the current generation.
    shared_pages: u32,
    shared_tail: u32,
    /// The keys of the run pages written anew lie above the first and up to
    /// the second (`None`: from the run's start, to its end); the shared
    /// pages hold the rest.
    rewritten: (Option<u64>, Option<u64>),
    null_pages: u32,
    null_entries: u64,
    model: Vec<u8>,
    model_pages: u32,
    key_range: Option<(u64, u64)>,
    pages_written: u32,
    merged: u64,
    dropped: u64,
}

impl Written {
    /// Whether run page `i` is one the current generation has too.
    fn shares(&self, i: u32) -> bool {
        i < self.shared_pages || i >= self.run_pages - self.shared_tail
    }

    /// Whether `d` is an open bounded page that stays open across the
    /// switch to generation `next`: one it reads, whose keys all belong in
    /// shared run pages, so `absorb` could not move them, and rows that
    /// spill into its slice go on joining it.
    fn keeps_open(&self, d: &DirEntry, next: u32) -> bool {
        let (lo, hi) = self.rewritten;
        d.state == OPEN
            && d.bounded
            && d.generation >= next
            && d.min <= d.max
            && (lo.is_some_and(|l| d.max < l) || hi.is_some_and(|h| d.min > h))
    }

    /// The blocks this retrain wrote: all but the shared run pages.
    fn new_blocks(&self) -> Vec<Extent> {
        let mut new = self
            .place
            .range(self.shared_pages, self.run_pages - self.shared_tail);
        new.extend(self.place.tail(self.run_pages));
        new
    }
}

/// Retrains the index of `rel`, which the caller holds with the locks above;
/// `None` while transactions older than the last retrain still run.
pub fn retrain(rel: &Opened) -> Option<Report> {
    let idx = rel.index;
    // SAFETY: reads the clock.
    let started = unsafe { pg_sys::GetCurrentTimestamp() };
    let ring = BulkRead::new();
    if !retire_unread(idx, rel.heap) {
        return None;
    }
    let before = Meta::read(idx);
    let next = before.insert_generation.max(before.generation) + 1;
    let meta = delta::freeze(idx, next);
    pause_point("freeze");
    // Read under the metapage lock, so that no split is half done: the open
    // bounded pages among them may be split until they are closed.
    let frozen: Vec<DirEntry> = delta::directory_consistent(idx, ring.get())
        .into_iter()
        .filter(|d| d.is_live() && d.generation >= meta.generation && d.generation < next)
        .collect();
    let written = match carry_over(idx, &meta, &frozen, ring.get()) {
        Some((appended, spilled)) => match append(idx, &meta, &appended, next, ring.get()) {
            Some(w) => {
                carry(idx, &spilled, next);
                w
            }
            None => partial_or_merge(idx, &meta, &frozen, next, ring.get()),
        },
        None => match append(idx, &meta, &frozen, next, ring.get()) {
            Some(w) => w,
            None => partial_or_merge(idx, &meta, &frozen, next, ring.get()),
        },
    };
    pause_point("write");
    // SAFETY: the index is open.
    if unsafe { relation_needs_wal(idx) } {
        // The new pages were written above and nothing points at them yet.
        for e in written.new_blocks() {
            wal::log_new_blocks(idx, e.start, e.start + e.len);
        }
    }
    let mut written = written;
    written.merged += absorb_rounds(idx, next, &written, ring.get());
    pause_point("switch");
    interrupts();
    let report = switch(idx, next, written, started, ring.get());
    pause_point("switched");
    Some(report)
}

/// Carries frozen delta pages over to generation `next`: the new generation
/// reads them as its delta; so does the current one until the switch (both
/// read pages tagged `next`). The open ones stay open.
fn carry(idx: pg_sys::Relation, pages: &[DirEntry], next: u32) {
    for (i, d) in pages.iter().enumerate() {
        if i > 0 {
            pause_point("carry");
        }
        delta::retag(idx, d, next);
    }
}

/// A partial merge ([`partial::partial`]) if the run can be cut, else the
/// whole run merged.
fn partial_or_merge(
    idx: pg_sys::Relation,
    meta: &Meta,
    frozen: &[DirEntry],
    next: u32,
    strategy: Strategy,
) -> Written {
    match partial::partial(idx, meta, frozen, next, strategy) {
        Some((w, carried)) => {
            carry(idx, &carried, next);
            w
        }
        None => merge(
            idx,
            meta,
            &delta::close_bounded(idx, frozen),
            next,
            strategy,
        ),
    }
}

/// The merge path: the run's live entries, its NULLs and the frozen delta go
/// through the external sort; a first pass trains the model and packs the
/// pages, so their count is known before anything is written.
fn merge(
    idx: pg_sys::Relation,
    meta: &Meta,
    frozen: &[DirEntry],
    next: u32,
    strategy: Strategy,
) -> Written {
    let mut sorter = Sorter::new(maintenance_budget());
    let (mut dropped, mut inserted) = (0u64, 0u64);
    for section in [Section::run(meta), Section::nulls(meta)] {
        for i in 0..section.pages {
            let page = section.read_with(idx, i, strategy);
            dropped += (page.len() - page.live().count()) as u64;
            for s in page.live() {
                let (key, tid) = page.entry(s);
                sorter.put_entry((section.kind == PageKind::Run).then_some(key), tid);
            }
            for (key, tid) in page.inserted_all() {
                sorter.put_entry(Some(key), tid);
                inserted += 1;
            }
            interrupts();
        }
    }
    let merged = put_delta(idx, frozen, &mut sorter, strategy) + inserted;
    let mut sorted = sorter.finish();
    // Inserts that fell among the run's entries will go on doing so: leave
    // them room in every page.
    let scattered = inserted > 0
        || meta.spilled != 0
        || frozen
            .iter()
            .any(|d| d.min <= d.max && meta.run_last().is_some_and(|(k, _)| d.min <= k));
    // SAFETY: the index is open.
    let fillfactor = unsafe { crate::am::options::fillfactor(idx, scattered) };
    let shape = plan(&mut sorted, meta.target_window, fillfactor);

    let run_pages = shape.run_counts.len() as u32;
    let total = run_pages + shape.null_pages + shape.model_pages;
    // At most half the extent list: the appends that follow add an extent
    // each, and consolidating them (`kept_pages`) takes in only extents as
    // small as what it writes, not a merge's large ones.
    let place = allocate(idx, total, Fit::UpTo(MAX_EXTENTS / 2));
    sorted.rewind();
    let mut run = SectionWriter::new(idx, (place, 0), Some(fillfactor), next);
    while let Some((key, tid)) = sorted.next_key() {
        run.push(key, tid);
    }
    let key_range = run.key_range;
    let run_last = run.last;
    let run_entries = run.entries;
    let counts = run.finish();
    let (null_pages, null_entries) = write_nulls(idx, (place, run_pages), &mut sorted, next);
    sorted.end();
    assert!(
        counts == shape.run_counts && null_pages == shape.null_pages,
        "the first pass packed the pages as they were written"
    );
    let model_pages = model_pages::write(
        idx,
        (place, run_pages + null_pages),
        next,
        (&shape.model, &counts),
        true,
    );
    Written {
        path: Path::Merge,
        place,
        counts,
        run_last,
        run_pages,
        run_entries,
        run_dead: 0,
        run_base: next,
        shared_pages: 0,
        shared_tail: 0,
        rewritten: (None, None),
        null_pages,
        null_entries,
        model: shape.model,
        model_pages,
        key_range,
        pages_written: total,
        merged,
        dropped,
    }
}

/// The append path, when every key of the frozen delta lies at or above the
/// run's last key: the run's pages but its last stay where they are, shared
/// with the previous generation (with their insert areas, which go on taking
/// inserts); its last page is copied with its tombstones and its inserted
/// entries sorted in, then come the delta's keys, the NULLs and the model.
/// The model keeps its leaves up to the one holding the last position kept,
/// and the rest is trained again over the copied page and the new keys
/// ([`Trainer::resume`]). Its cost follows the delta, one leaf of the run and
/// the NULLs, not the run.
///
/// `None`, before anything is written, when the merge path must run: the
/// delta has a smaller key, the run is empty or a fifth dead (a merge drops
/// tombstones), or the generation's extents are many and cannot be
/// consolidated within the memory budget.
fn append(
    idx: pg_sys::Relation,
    meta: &Meta,
    frozen: &[DirEntry],
    next: u32,
    strategy: Strategy,
) -> Option<Written> {
    if meta.run_entries == 0 || meta.run_dead * 5 > meta.run_entries {
        return None;
    }
    let (run_max, _) = meta.run_last()?;
    // (An open page is a bounded one, of keys inside the run.)
    if frozen
        .iter()
        .any(|d| d.state != CLOSED || (d.min <= d.max && d.min < run_max))
    {
        return None;
    }
    let (model_bytes, starts) = model_pages::read(idx, meta);
    let shared = kept_pages(meta, &starts, frozen.len())?;
    let kept = meta.place.head(shared);
    let run = Section::run(meta).with(Directory::new(&starts));
    // The last entry that stays where it is: the run stays in (key, TID)
    // order, which scans rely on to start over (src/am/scan.rs), so
    // everything written after it must come after it. The copied pages'
    // entries, their inserted ones and the frozen entries of the run's
    // largest key are sorted together (`head`).
    let (copy_from, _) = run.page_span(shared);
    let mut copied: Vec<(u64, Tid, bool)> = Vec::new();
    let mut kept_last = None;
    for i in shared..meta.run_pages {
        let page = run.read_with(idx, i, strategy);
        if i == shared {
            kept_last = page.fence();
        }
        copied.extend((0..page.len()).map(|s| {
            let (key, tid) = page.entry(s);
            (key, tid, page.dead(s))
        }));
        copied.extend(page.inserted_all().map(|(k, t)| (k, t, false)));
        interrupts();
    }
    let inserted = copied.len() as u64 - (run.entries - copy_from);

    let old = ModelView::open(&model_bytes).expect("validated by read");
    let (mut trainer, keep) = resume_training(idx, (&run, &old), copy_from, meta, strategy);

    let mut sorter = Sorter::new(maintenance_budget());
    let merged = put_delta(idx, frozen, &mut sorter, strategy);
    let dropped = put_nulls(idx, meta, &mut sorter, strategy);
    let mut sorted = sorter.finish();
    // The new entries of the run's largest key join the copied page's.
    let mut head = copied;
    let mut in_order = true;
    while sorted.peek_key() == Some(run_max) {
        let (key, tid) = sorted.next_key().expect("peeked");
        in_order &= kept_last.is_none_or(|last| (key, tid) > last);
        head.push((key, tid, false));
    }
    head.sort_unstable_by_key(|&(key, tid, _)| (key, tid));
    // SAFETY: the index is open.
    let fillfactor = unsafe { crate::am::options::fillfactor(idx, false) };
    let mut run_counter = PageCounter::new(Some(fillfactor));
    let mut null_counter = PageCounter::new(None);
    for &(key, tid, dead) in &head {
        trainer.push(key);
        run_counter.push(key, tid, dead);
    }
    let (mut added, mut null_entries) = (0u64, 0u64);
    while let Some((key, tid)) = sorted.next_entry() {
        let Some(key) = key else {
            null_counter.push(0, tid, false);
            null_entries += 1;
            continue;
        };
        // Checked here on the keys themselves, not only on the directory's
        // ranges above.
        in_order &= key > run_max;
        trainer.push(key);
        run_counter.push(key, tid, false);
        added += 1;
        if added.is_multiple_of(65536) {
            interrupts();
        }
    }
    if !in_order {
        sorted.end();
        return None;
    }
    let model = trainer.finish_after(&old, keep);
    let new_counts = run_counter.finish();
    let run_entries = copy_from + head.len() as u64 + added;
    let run_pages = shared + new_counts.len() as u32;
    let null_pages = null_counter.finish().len() as u32;
    let model_pages = model_pages::pages_for(model.len(), run_pages);
    let new_pages = new_counts.len() as u32 + null_pages + model_pages;

    // The run pages in one extent, so the next generation's shared pages
    // take one more; the NULL and model pages, which it will not share, in
    // any free blocks.
    let mut place = kept;
    let run_part = allocate(idx, new_counts.len() as u32, Fit::One);
    let rest = Fit::UpTo(MAX_EXTENTS - place.as_slice().len() - 1);
    let rest_part = allocate(idx, null_pages + model_pages, rest);
    for e in run_part.as_slice().iter().chain(rest_part.as_slice()) {
        let pushed = place.push(*e);
        debug_assert!(pushed, "the extents were counted");
    }
    sorted.rewind();
    while sorted.peek_key() == Some(run_max) {
        sorted.next_key();
    }
    let mut writer =
        SectionWriter::new(idx, (place, shared), Some(fillfactor), next).after(kept_last);
    for &(key, tid, dead) in &head {
        if dead {
            writer.push_dead(key, tid);
        } else {
            writer.push(key, tid);
        }
    }
    while let Some((key, tid)) = sorted.next_key() {
        writer.push(key, tid);
    }
    let last = writer.key_range.map(|r| r.1);
    let run_last = writer.last.or(meta.run_last());
    let written = writer.finish();
    assert!(
        written == new_counts,
        "the first pass packed the pages as they were written"
    );
    let (written_nulls, _) = write_nulls(idx, (place, run_pages), &mut sorted, next);
    debug_assert_eq!(written_nulls, null_pages);
    sorted.end();
    let mut counts: Vec<u16> = page_counts(&starts[..=shared as usize]).collect();
    counts.extend_from_slice(&new_counts);
    let written_model = model_pages::write(
        idx,
        (place, run_pages + null_pages),
        next,
        (&model, &counts),
        true,
    );
    debug_assert_eq!(written_model, model_pages);
    let first = run.read_with(idx, 0, strategy).key(0);
    Some(Written {
        path: Path::Append,
        place,
        counts,
        run_last,
        run_pages,
        run_entries,
        run_dead: meta.run_dead,
        run_base: if shared > 0 { meta.run_base } else { next },
        shared_pages: shared,
        shared_tail: 0,
        rewritten: (kept_last.map(|(key, _)| key), None),
        null_pages,
        null_entries,
        model,
        model_pages,
        key_range: Some((first, last.unwrap_or(run_max))),
        pages_written: new_pages,
        merged: merged + inserted,
        dropped,
    })
}

/// The run pages an append keeps where they are, shared with the previous
/// generation: all but the last, which it copies. Each append adds an extent
/// (its new run pages), so when the kept pages lie on many extents the last
/// ones are copied too, into the new pages' extent. An extent is taken in
/// while it is no longer than what is written after it anyway (the new pages,
/// estimated from the frozen delta, and the extents taken in so far), so an
/// extent taken in at least doubles, a page is copied a logarithmic number
/// of times as the run grows, and the extents stay few. What is copied is
/// held in memory, within `maintenance_work_mem`. `None` when the extents
/// cannot be brought down: the retrain merges instead.
fn kept_pages(meta: &Meta, starts: &[u64], frozen_pages: usize) -> Option<u32> {
    /// Kept extents past which an append consolidates: the new run pages
    /// take one more extent, the NULL and model pages at least one, and a
    /// few spare let appends go on while consolidation would copy too much.
    const CONSOLIDATE_AT: usize = MAX_EXTENTS - 8;
    let mut shared = meta.run_pages - 1;
    let kept = meta.place.head(shared);
    let mut n = kept.as_slice().len();
    if n <= CONSOLIDATE_AT {
        return Some(shared);
    }
    let per_page = meta.run_entries / meta.run_pages.max(1) as u64;
    let new_entries = frozen_pages as u64 * delta::DELTA_CAPACITY as u64;
    let mut written = 1 + new_entries.div_ceil(per_page.max(1));
    // (key, TID, dead) triples, and room for the rows inserted into them.
    let most = (maintenance_budget() / 48) as u64;
    let entries = |from: u32| starts[meta.run_pages as usize] - starts[from as usize];
    while n > 1 {
        let e = kept.as_slice()[n - 1];
        if e.len as u64 > written || entries(shared - e.len) > most {
            break;
        }
        shared -= e.len;
        written += e.len as u64;
        n -= 1;
    }
    (n + 2 <= MAX_EXTENTS).then_some(shared)
}

/// A trainer for a run whose positions from `pos` on change: the model's
/// leaves that end before `pos` stay, and training resumes at the leaf
/// holding `pos - 1`, with its keys before `pos` pushed again. Returns it and
/// how many leaves it keeps ([`Trainer::finish_after`]).
fn resume_training(
    idx: pg_sys::Relation,
    (run, old): (&Section, &ModelView),
    pos: u64,
    meta: &Meta,
    strategy: Strategy,
) -> (Trainer, usize) {
    let keep = if pos == 0 {
        0
    } else {
        old.leaf_at_position(pos - 1)
    };
    let mut trainer = Trainer::resume(meta.target_window, old, keep);
    let from = old.leaf_start(keep.min(old.nleaves() - 1));
    push_keys(idx, run, (from, pos), &mut trainer, strategy);
    (trainer, keep)
}

/// Pushes the keys of run positions `[from, to)`, tombstoned ones too (they
/// keep their positions), into `trainer`.
fn push_keys(
    idx: pg_sys::Relation,
    run: &Section,
    (from, to): (u64, u64),
    trainer: &mut Trainer,
    strategy: Strategy,
) {
    if from >= to {
        return;
    }
    for i in run.page_of(from)..=run.page_of(to - 1) {
        let page = run.read_with(idx, i, strategy);
        let (at, end) = run.page_span(i);
        for s in from.saturating_sub(at)..to.min(end) - at {
            trainer.push(page.key(s as usize));
        }
        interrupts();
    }
}

/// Each run page's entry count, from where each page begins and where the
/// last ends.
fn page_counts(starts: &[u64]) -> impl Iterator<Item = u16> + '_ {
    starts.windows(2).map(|w| (w[1] - w[0]) as u16)
}

/// Puts the live entries of the NULL pages into the sort; returns how many
/// VACUUM had tombstoned (dropped).
fn put_nulls(idx: pg_sys::Relation, meta: &Meta, sorter: &mut Sorter, strategy: Strategy) -> u64 {
    let nulls = Section::nulls(meta);
    let mut dropped = 0u64;
    for i in 0..nulls.pages {
        let page = nulls.read_with(idx, i, strategy);
        dropped += (page.len() - page.live().count()) as u64;
        for s in page.live() {
            sorter.put_entry(None, page.tid(s));
        }
    }
    dropped
}

/// Puts the frozen delta's entries into the sort; returns how many.
fn put_delta(
    idx: pg_sys::Relation,
    frozen: &[DirEntry],
    sorter: &mut Sorter,
    strategy: Strategy,
) -> u64 {
    let mut merged = 0;
    for d in frozen {
        let page = DeltaPage::read(idx, d.blk, strategy);
        // An open page could take rows after they were read here.
        assert!(
            page.header().state == CLOSED,
            "a retrain merges closed delta pages only"
        );
        for e in page.entries() {
            merged += 1;
            sorter.put_entry((!e.null).then_some(e.key), e.tid);
        }
    }
    merged
}

/// Writes the NULL entries left in `sorted` as NULL pages from page `first`
/// of `place`; returns (pages, entries).
fn write_nulls(
    idx: pg_sys::Relation,
    (place, first): (Extents, u32),
    sorted: &mut Sorted,
    generation: u32,
) -> (u32, u64) {
    let mut nulls = SectionWriter::new(idx, (place, first), None, generation);
    while let Some((key, tid)) = sorted.next_entry() {
        debug_assert!(key.is_none(), "the keys were written before");
        nulls.push(0, tid);
    }
    let entries = nulls.entries;
    (nulls.finish().len() as u32, entries)
}

/// Makes the written generation current: one record, the metapage.
fn switch(
    idx: pg_sys::Relation,
    next: u32,
    mut w: Written,
    started: pg_sys::TimestampTz,
    strategy: Strategy,
) -> Report {
    let view = ModelView::open(&w.model).expect("freshly trained model");
    assert!(
        w.run_last.is_some() == (w.run_entries > 0),
        "a run of {} entries has a last entry: {:?}",
        w.run_entries,
        w.run_last
    );
    // This transaction's id, taken before the metapage lock: every snapshot
    // that can have read the previous generation's metapage was taken before
    // it ended, so has an xmin at or below it; once it is below every
    // horizon, nothing reads the previous generation.
    // SAFETY: assigns (or returns) the top transaction's id.
    let retired_at = unsafe { pg_sys::GetTopFullTransactionId() };
    let meta_buf = Buf::read_exclusive(idx, META_BLOCK);
    // SAFETY: block 0, pinned and exclusive-locked.
    let mut m = unsafe { Meta::from_page(idx, meta_buf.page()) };
    // The pages opened since the freeze carry over to the new generation.
    // Closing those the metapage lists makes every appender read the
    // metapage again, and so learn the new run's last entry before it adds
    // another (the rule its cached open page relies on, src/am/insert.rs).
    // Bounded pages are only written after a read of the metapage; those
    // whose keys the new run holds in pages it wrote are closed, so that
    // `absorb` moves their entries there.
    delta::close_open(idx, &mut m, &meta_buf, |d| w.keeps_open(d, next));
    // What was inserted since the last round of `absorb_rounds`: little, and
    // absorbed under the lock, so that no insert follows it unabsorbed.
    w.merged += absorb(idx, &m, next, &w, strategy);
    m.prev_generation = m.generation;
    m.prev_place = m.place;
    m.prev_run_base = m.run_base;
    m.prev_run_pages = m.run_pages;
    m.prev_run_entries = m.run_entries;
    m.prev_null_pages = m.null_pages;
    m.prev_null_entries = m.null_entries;
    m.prev_model_pages = m.model_pages;
    m.prev_retired = retired_at.value;
    m.generation = next;
    (m.rewrite_first, m.rewrite_end) = (0, 0);
    // Every page the new generation reads, kept ones too, is one this
    // build's format reads.
    m.version = crate::storage::meta::FORMAT_VERSION;
    // A retrain excludes VACUUM: a flag still set is from one that failed.
    m.vacuuming = 0;
    (m.run_last_key, m.run_last_tid) = w.run_last.unwrap_or((0, 0));
    m.place = w.place;
    m.pending = Extents::default();
    (m.run_pages, m.run_entries, m.run_dead) = (w.run_pages, w.run_entries, w.run_dead);
    (m.run_base, m.shared_pages, m.shared_tail) = (w.run_base, w.shared_pages, w.shared_tail);
    (m.null_pages, m.null_entries) = (w.null_pages, w.null_entries);
    m.model_pages = w.model_pages;
    m.model_bytes = w.model.len() as u64;
    m.model_leaves = view.nleaves() as u32;
    m.max_window = view.max_window();
    m.mean_window = view.mean_window();
    // The planner's view of the delta: the closed pages not merged.
    (m.key_lo, m.key_hi) = w.key_range.unwrap_or((u64::MAX, 0));
    (m.closed_pages, m.closed_width) = (0, 0.0);
    m.spilled = 0;
    for d in delta::directory(idx, &m, strategy) {
        // Every open page the current generation reads was closed, or
        // carried over (retagged): the new one does not read it.
        assert!(
            !(d.state == OPEN && d.is_live() && d.generation < next),
            "delta page {} is open, and not carried over to generation {next}",
            d.blk
        );
        if !d.is_live() || d.generation < next || d.min > d.max {
            continue;
        }
        // Entries whose place is inside the new run (carried over, or
        // inserted while the retrain ran): scans must read the delta for
        // every key.
        if m.run_last().is_some_and(|(k, _)| d.min <= k) {
            m.spilled = 1;
        }
        if d.state == CLOSED {
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
    Report {
        generation: next,
        entries: w.run_entries + w.null_entries,
        merged: w.merged,
        dropped: w.dropped,
        pages_written: w.pages_written,
        blocks: nblocks(idx),
        free_blocks: m.free.blocks(),
        seconds: m.retrain_us as f64 / 1e6,
        path: w.path,
    }
}

/// The frozen pages split into those an append can take (keys at or above
/// the run's last, or none) and those of rows that spilled below it, when
/// there are both and the spilled rows are too few to call for a merge
/// (`worker::spilled_call_for_merge`): the stragglers of concurrent
/// appenders, whose keys land just below the keys appended last. An append
/// then carries them over as delta pages of the new generation instead of
/// merging the whole run for them; `None` when it cannot.
fn carry_over(
    idx: pg_sys::Relation,
    meta: &Meta,
    frozen: &[DirEntry],
    strategy: Strategy,
) -> Option<(Vec<DirEntry>, Vec<DirEntry>)> {
    let (run_max, _) = meta.run_last()?;
    let (spilled, appended): (Vec<DirEntry>, Vec<DirEntry>) = frozen
        .iter()
        .partition(|d| d.state == OPEN || (d.min <= d.max && d.min < run_max));
    if spilled.is_empty() || appended.is_empty() {
        return None;
    }
    let rows: u64 = spilled
        .iter()
        .map(|d| DeltaPage::read(idx, d.blk, strategy).len() as u64)
        .sum();
    let pages = spilled.len() as u64;
    (!crate::worker::spilled_call_for_merge(idx, meta, (rows, pages)))
        .then_some((appended, spilled))
}

/// Rounds of [`absorb`] before the switch, each after closing the delta
/// pages open at its start: inserts go on into pages opened after it, so
/// each round takes what was inserted during the one before, and the switch,
/// which absorbs the rest under the metapage lock, finds little left.
fn absorb_rounds(idx: pg_sys::Relation, next: u32, w: &Written, strategy: Strategy) -> u64 {
    let mut moved = 0;
    for _ in 0..ABSORB_ROUNDS {
        {
            let meta_buf = Buf::read_exclusive(idx, META_BLOCK);
            // SAFETY: block 0, pinned and exclusive-locked.
            let mut m = unsafe { Meta::from_page(idx, meta_buf.page()) };
            delta::close_open(idx, &mut m, &meta_buf, |d| w.keeps_open(d, next));
        }
        let n = absorb(idx, &Meta::read(idx), next, w, strategy);
        moved += n;
        if n < ABSORB_ENOUGH {
            break;
        }
    }
    moved
}

/// At most this many rounds before the switch ...
const ABSORB_ROUNDS: usize = 4;
/// ... and no more once a round moved fewer entries than this.
const ABSORB_ENOUGH: u64 = 2000;

/// Moves the entries of the delta pages closed since the freeze into the
/// insert areas of the new run's pages, which nothing reads yet, and gives
/// those delta pages the current generation's number (`delta::retag`): the
/// current generation still reads them, the new one will not. Without it,
/// rows inserted while a merge ran would spill in the generation it writes
/// (random keys: every lookup would read them until the next merge).
///
/// A page moves whole or not at all: every entry must have a key, lie at or
/// below the new run's last entry, belong to a page the new generation does
/// not share with the current one, and find room there. Pages that do not
/// carry over as before. Returns the entries moved.
fn absorb(idx: pg_sys::Relation, meta: &Meta, next: u32, w: &Written, strategy: Strategy) -> u64 {
    let Some(last) = w.run_last else {
        return 0;
    };
    let starts = search::starts(w.counts.iter().copied()).expect("pages hold entries");
    let run = Section {
        place: &w.place,
        first: 0,
        pages: w.run_pages,
        entries: w.run_entries,
        kind: PageKind::Run,
        generation: next,
        base: w.run_base,
        dir: Some(Directory::new(&starts)),
        // The switch makes the index this build's format.
        fingerprints: true,
    };
    let model = ModelView::open(&w.model).expect("freshly trained model");
    let mut moved = 0;
    for d in delta::directory(idx, meta, strategy) {
        if d.state != CLOSED
            || d.generation < next
            || d.has_nulls
            || (d.min <= d.max && d.max > last.0)
        {
            continue;
        }
        let page = DeltaPage::read(idx, d.blk, strategy);
        // Closed unsorted: a full bounded page closed to be split, whose
        // split, under way, copies its entries into two pages this
        // generation reads (or a crash left it so: it carries over).
        if !page.is_sorted() {
            continue;
        }
        let entries: Vec<(u64, Tid)> = page.entries().map(|e| (e.key, e.tid)).collect();
        drop(page);
        let mut targets: Vec<u32> = Vec::with_capacity(entries.len());
        for &pair in &entries {
            if pair > last {
                break;
            }
            // The new pages are this retrain's own: nothing can reuse them.
            let (pos, _) = run
                .seek_pair(idx, pair, model.window(pair.0))
                .unwrap_or_else(|_| recycled_error(idx));
            targets.push(run.page_of(pos.min(run.entries - 1)));
        }
        if targets.len() < entries.len() || targets.iter().any(|&i| w.shares(i)) {
            continue;
        }
        let mut by_page: Vec<(u32, (u64, Tid))> =
            targets.into_iter().zip(entries.iter().copied()).collect();
        by_page.sort_unstable();
        let pages: Vec<(u32, Vec<(u64, Tid)>)> = by_page
            .chunk_by(|a, b| a.0 == b.0)
            .map(|same| (same[0].0, same.iter().map(|&(_, e)| e).collect()))
            .collect();
        // Nothing else writes the new generation's pages, so what fits now
        // still fits below.
        let open = |i: u32| run.open(idx, Buf::read_exclusive(idx, run.block(idx, i)), i);
        if !pages.iter().all(|(i, add)| open(*i).can_take(add)) {
            continue;
        }
        for (i, add) in &pages {
            open(*i).take(idx, add);
        }
        delta::retag(idx, &d, meta.generation);
        moved += entries.len() as u64;
        interrupts();
    }
    moved
}

/// Retires the previous generation of `index` (see [`retire`]) if there is
/// one and no running snapshot can still read it, so that the delta that
/// follows reuses the merged delta pages rather than extend the index. The
/// caller holds the locks a retrain (or VACUUM) takes; `heap` is the index's
/// table, or null for the horizon of every table. True once there is
/// nothing left to retire. First frees what a retrain that ended without
/// its switch took ([`reclaim_pending`]) and, with no previous generation,
/// the merged delta pages a crash while retiring left closed: the worker
/// and VACUUM come by even when no retrain is due.
pub fn retire_unread(index: pg_sys::Relation, heap: pg_sys::Relation) -> bool {
    if nblocks(index) == 0 {
        return true;
    }
    let meta = Meta::read(index);
    if meta.pending.n != 0 {
        reclaim_pending(index);
    }
    if meta.prev_generation == 0 {
        discard_merged(index, BulkRead::new().get());
        return true;
    }
    if !retired(heap, &meta) {
        return false;
    }
    retire(index, BulkRead::new().get());
    true
}

/// Whether no running snapshot can still read the previous generation: the
/// transaction that switched away from it is older than every snapshot's
/// horizon (nbtree's rule for recycling deleted pages) for `heap` (null: for
/// every table, the most cautious). The horizon is computed afresh: the
/// cached GlobalVis bounds only move when this backend sees new transaction
/// ids, and could refuse long after the last old snapshot ended.
fn retired(heap: pg_sys::Relation, meta: &Meta) -> bool {
    // SAFETY: `heap` is open or null; computing the horizon reads the proc
    // array, and the next xid shared memory.
    let (horizon, next) = unsafe {
        (
            pg_sys::GetOldestNonRemovableTransactionId(heap),
            pg_sys::ReadNextFullTransactionId().value,
        )
    };
    // Compared as full xids: a 32-bit comparison turns around once 2^31
    // transactions have passed since the switch with nothing retiring.
    meta.prev_retired < full_xid_before(next, horizon.into_inner())
}

/// The full xid of `xid`, which lies at or before the next full xid `next`
/// and within 2^31 of it (as a horizon does): `FullXidRelativeTo`.
fn full_xid_before(next: u64, xid: u32) -> u64 {
    let behind = (next as u32).wrapping_sub(xid) as i32 as i64;
    (next as i64 - behind) as u64
}

/// The new generation's shape, from a first pass over the sorted entries.
struct Shape {
    /// Each run page's entry count.
    run_counts: Vec<u16>,
    null_pages: u32,
    model_pages: u32,
    model: Vec<u8>,
}

/// Trains the model on the keys and packs the run and NULL pages as the
/// writer will, without writing them.
fn plan(sorted: &mut Sorted, target_window: u32, fillfactor: u32) -> Shape {
    let mut trainer = Trainer::new(target_window);
    let mut run = PageCounter::new(Some(fillfactor));
    let mut nulls = PageCounter::new(None);
    let mut keys = 0u64;
    while let Some((key, tid)) = sorted.next_entry() {
        let Some(key) = key else {
            nulls.push(0, tid, false);
            continue;
        };
        trainer.push(key);
        run.push(key, tid, false);
        keys += 1;
        if keys.is_multiple_of(65536) {
            interrupts();
        }
    }
    let model = trainer.finish();
    let run_counts = run.finish();
    Shape {
        model_pages: model_pages::pages_for(model.len(), run_counts.len() as u32),
        run_counts,
        null_pages: nulls.finish().len() as u32,
        model,
    }
}

/// Once no snapshot can read the previous generation: its blocks join the
/// free list (one record, the metapage), then the delta pages merged into the
/// current run become free delta pages. In that order: a hot standby scan,
/// which nothing protects, checks the metapage after reading the directory,
/// so it cannot miss a page freed here while the metapage still lists its
/// generation (src/am/scan.rs). A crash between the two leaves merged pages
/// closed, which no generation reads; the next VACUUM, worker visit or
/// retrain frees them ([`discard_merged`]).
fn retire(idx: pg_sys::Relation, strategy: Strategy) {
    {
        let meta_buf = Buf::read_exclusive(idx, META_BLOCK);
        // SAFETY: block 0, pinned and exclusive-locked.
        let mut m = unsafe { Meta::from_page(idx, meta_buf.page()) };
        for e in m.prev_own() {
            m.free.free(e);
        }
        m.prev_generation = 0;
        (m.prev_run_base, m.shared_pages, m.shared_tail) = (0, 0, 0);
        m.prev_place = Extents::default();
        (m.prev_run_pages, m.prev_run_entries) = (0, 0);
        (m.prev_null_pages, m.prev_null_entries) = (0, 0);
        m.prev_model_pages = 0;
        let mut wal = Wal::start(idx);
        m.write(&mut wal, &meta_buf);
        wal.finish();
    }
    pause_point("recycle");
    discard_merged(idx, strategy);
}

/// Frees the closed delta pages of generations before the current one,
/// which its run holds, while no previous generation is kept (after
/// [`retire`], or a crash in it).
fn discard_merged(idx: pg_sys::Relation, strategy: Strategy) {
    let meta = Meta::read(idx);
    if meta.prev_generation != 0 {
        return;
    }
    for d in delta::directory(idx, &meta, strategy) {
        if (d.state == CLOSED || d.state == SPLIT) && d.generation < meta.generation {
            delta::discard(idx, &d);
        }
    }
}

/// Blocks added at the end of the index under one hold of the extension
/// lock (4 MB).
const EXTEND_CHUNK: u32 = 512;

/// How many extents new pages may take.
enum Fit {
    UpTo(usize),
    /// As `UpTo`, from one free extent that holds them all, else the largest
    /// free extents: a segment a partial merge rewrites takes the blocks of
    /// the one the merge before it freed, not the small pieces NULL and
    /// model pages left.
    Largest(usize),
    /// One: a free extent that holds them all, or the end of the index.
    One,
}

/// Places `n` pages: in blocks retired generations left free (a metapage
/// record takes them off the free list), and for the rest in blocks added at
/// the end of the index, in chunks that join one extent unless an inserter
/// added a delta page between them (within the extents `fit` allows). The
/// blocks taken are noted as pending in the metapage: if the retrain ends
/// without its switch, [`reclaim_pending`] frees them. (A crash right after
/// an extension, before its note, loses that chunk.) Each chunk's last
/// block is logged before its note ([`log_extension`]), and the WAL is
/// flushed before the caller writes any of them ([`wal::flush_own_records`]).
fn allocate(idx: pg_sys::Relation, n: u32, fit: Fit) -> Extents {
    let mut place = Extents::default();
    if n == 0 {
        return place;
    }
    {
        let meta_buf = Buf::read_exclusive(idx, META_BLOCK);
        // SAFETY: block 0, pinned and exclusive-locked.
        let mut m = unsafe { Meta::from_page(idx, meta_buf.page()) };
        let took = match fit {
            Fit::One => m.free.take_whole(n).map(|e| place.push(e)).is_some(),
            // Keep one extent for the blocks added at the end.
            Fit::UpTo(room) => m.free.take(n, &mut place, room - 1) > 0,
            Fit::Largest(room) => match m.free.take_whole(n) {
                Some(e) => place.push(e),
                None => m.free.take_largest(n, &mut place, room - 1) > 0,
            },
        };
        if took {
            for e in place.as_slice() {
                m.pending.free(*e);
            }
            let mut wal = Wal::start(idx);
            m.write(&mut wal, &meta_buf);
            wal.finish();
        }
    }
    let room = match fit {
        Fit::One => 1,
        Fit::UpTo(room) | Fit::Largest(room) => room,
    };
    let mut rest = n - place.blocks() as u32;
    while rest > 0 {
        // Added in chunks, the extension lock released between them: an
        // inserter that needs a delta page waits for one chunk, not for a
        // whole generation (10M rows: 15,000 blocks, 0.25 s, with every
        // scan queued behind the inserter's metapage lock). The last
        // extent allowed takes all that is left in one hold.
        let chunk = if place.as_slice().len() + 1 < room {
            rest.min(EXTEND_CHUNK)
        } else {
            rest
        };
        // SAFETY: the index is open; the extension lock serializes this with
        // inserters that add delta pages.
        let (start, last) = unsafe {
            pg_sys::LockRelationForExtension(idx, pg_sys::ExclusiveLock as i32);
            let start = nblocks(idx);
            for _ in 1..chunk {
                drop(Buf::extend(idx, false));
            }
            let last = Buf::extend(idx, false);
            pg_sys::UnlockRelationForExtension(idx, pg_sys::ExclusiveLock as i32);
            (start, last)
        };
        log_extension(idx, last);
        // A chunk that follows the one before joins its extent.
        let e = Extent { start, len: chunk };
        let pushed = place.push(e);
        debug_assert!(pushed, "one extent was kept for the end");
        note_pending(idx, e);
        rest -= chunk;
    }
    // SAFETY: the index is open.
    if unsafe { relation_needs_wal(idx) } {
        wal::flush_own_records();
    }
    place
}

/// Logs `last`, the last block of a chunk just added to the index (locked),
/// as an empty page, before the metapage notes the chunk pending: replaying
/// it extends the index over the chunk, on a standby and after an operating
/// system crash. Nothing else logs those blocks until the retrain logs the
/// pages it wrote there, and a retrain that fails first leaves them to the
/// free list: a standby promoted then (or a primary whose extension was
/// lost) would list blocks past its end as free, add its next delta page
/// at the first of them, and a later retrain would write over that page.
fn log_extension(idx: pg_sys::Relation, last: Buf) {
    let mut wal = Wal::start(idx);
    let image = wal.page(&last, true);
    // SAFETY: the WAL image of a page of the index, locked by `extend`.
    // Generation 0 is none: no generation reads the page before a retrain
    // writes it anew.
    unsafe { crate::storage::page::init(image, PageKind::Run, 0, 0) };
    wal.finish();
}

/// Notes blocks `e`, just added to the index, as pending (see
/// [`allocate`]).
fn note_pending(idx: pg_sys::Relation, e: Extent) {
    let meta_buf = Buf::read_exclusive(idx, META_BLOCK);
    // SAFETY: block 0, pinned and exclusive-locked.
    let mut m = unsafe { Meta::from_page(idx, meta_buf.page()) };
    m.pending.free(e);
    let mut wal = Wal::start(idx);
    m.write(&mut wal, &meta_buf);
    wal.finish();
}

/// Frees the blocks a retrain took and never switched to, having ended in
/// an ERROR or a crash. The caller holds the table lock a retrain takes,
/// so none is under way. Blocks past the end of the index (an extension
/// an operating system crash lost) are dropped.
fn reclaim_pending(idx: pg_sys::Relation) {
    let meta_buf = Buf::read_exclusive(idx, META_BLOCK);
    // SAFETY: block 0, pinned and exclusive-locked.
    let mut m = unsafe { Meta::from_page(idx, meta_buf.page()) };
    if m.pending.n == 0 {
        return;
    }
    let size = nblocks(idx) as u64;
    for e in m.pending.as_slice() {
        let end = e.end().min(size);
        if end > e.start as u64 {
            m.free.free(Extent {
                start: e.start,
                len: (end - e.start as u64) as u32,
            });
        }
    }
    m.pending = Extents::default();
    let mut wal = Wal::start(idx);
    m.write(&mut wal, &meta_buf);
    wal.finish();
}

#[cfg(test)]
mod tests {
    use super::full_xid_before;

    #[test]
    fn horizons_become_full_xids_across_epochs() {
        let epoch = 1u64 << 32;
        assert_eq!(full_xid_before(1000, 900), 900);
        assert_eq!(full_xid_before(1000, 1000), 1000);
        // The next xid wrapped into epoch 1; the horizon is still in epoch 0.
        assert_eq!(full_xid_before(epoch + 100, u32::MAX - 49), epoch - 50);
        // Both in a later epoch, 2^31 - 1 apart.
        let next = 5 * epoch + 10;
        let far = next - ((1u64 << 31) - 1);
        assert_eq!(full_xid_before(next, far as u32), far);
        // A switch 3 billion xids ago precedes a horizon 1,000 behind next:
        // the 32-bit comparison said the opposite.
        let switched = next - 3_000_000_000;
        assert!(switched < full_xid_before(next, (next - 1000) as u32));
    }
}
