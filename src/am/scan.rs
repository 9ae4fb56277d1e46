//! Index scans: `ambeginscan`, `amrescan`, `amgettuple`, `amgetbitmap`,
//! `amendscan`, `amcanreturn`.
//!
//! What a scan returns, ascending: for each interval of its plan, the run
//! entries in it merged with the delta entries in it (a delta entry comes
//! before a run entry iff its key is smaller), then the NULLs (NULL pages,
//! then delta NULLs). A backward scan returns the same sequence reversed,
//! and a scan may change direction at any point, as btree's can.
//!
//! The scan walks that sequence in batches: one run page's slice of an
//! interval with the delta entries that fall among it, or one NULL page. A
//! batch read forward and the same batch read backward may split the delta
//! entries at a different place, but both are pieces of the one sequence, so
//! moving back and forth over batches returns each entry in its place.
//!
//! Pins (DESIGN.md section 3a, nbtree's "dropping pins"): a scan that returns
//! index tuples (index-only) or runs under a non-MVCC snapshot keeps the pin on
//! the page of the current batch and on every delta page it took entries from,
//! until it moves off the batch or the scan ends; VACUUM removes entries only
//! under a cleanup lock, so it waits for such scans. Other scans copy a batch
//! and release its page at once, so a nested-loop probe pins nothing it has
//! finished with.

use super::datum::{datum, index_kind};
use super::scankey::{self, Plan};
use crate::key::KeyKind;
use crate::storage::buffer::{HeldPin, Strategy};
use crate::storage::delta::{self, DeltaEntry, DeltaPage, DirEntry};
use crate::storage::run::{tid_to_ptr, RunPage, Section, Tid};
use crate::storage::{model_pages, Meta};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;

/// What a scan reads once and keeps across rescans. Both are hints: the
/// delta may have grown since, which an MVCC scan cannot see anyway (its
/// snapshot is older than this read), and entries are only ever removed from
/// pages under a cleanup lock.
struct Hints {
    meta: Meta,
    dir: Vec<DirEntry>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Segment {
    Interval(usize),
    /// NULL page `i`; `i == null_pages` is the delta NULLs.
    Nulls(u32),
}

/// The batch the scan is on: where it lies, its page's pin, and the position
/// of the scan in it.
struct Batch {
    bounds: Bounds,
    /// Index in `items` of the entry returned last; -1 or `items.len()` when
    /// none of this batch has been returned yet.
    cur: isize,
    /// The batch's page, kept pinned when the scan must keep pins.
    pin: Option<HeldPin>,
}

/// Where a batch lies in the scan's sequence.
#[derive(Clone, Copy)]
struct Bounds {
    segment: Segment,
    /// Run positions `[run_lo, run_hi)` of the interval covered.
    run_lo: u64,
    run_hi: u64,
    /// No run entry of the interval lies after `run_hi` / before `run_lo`.
    run_end_fwd: bool,
    run_end_bwd: bool,
    /// Delta entries covered: `delta[d0..d1]`.
    d0: usize,
    d1: usize,
}

impl Batch {
    fn bounds(&self) -> Bounds {
        self.bounds
    }

    fn release(self) {
        if let Some(p) = self.pin {
            p.release();
        }
    }
}

struct ScanState {
    kind: KeyKind,
    hints: Option<Hints>,
    plan: Plan,
    keep_pins: bool,
    /// Memory for what a rescan allocates through PostgreSQL (array keys),
    /// reset at every rescan.
    rescan_cxt: pg_sys::MemoryContext,
    /// The matching delta entries, sorted, and delta NULLs: gathered when the
    /// scan starts or restarts, with the pins of their pages if kept.
    gathered: bool,
    delta: Vec<DeltaEntry>,
    delta_nulls: Vec<Tid>,
    delta_pins: Vec<HeldPin>,
    batch: Option<Batch>,
    /// The entries of the current batch, ascending.
    items: Vec<(Option<u64>, Tid)>,
    /// Scratch: a run page's slice of live entries.
    run_items: Vec<(u64, Tid)>,
    /// The index tuple an index-only scan returns, rewritten in place for
    /// every entry (no allocation per tuple).
    itup: [u64; 3],
}

#[pg_guard]
pub unsafe extern "C-unwind" fn ambeginscan(
    index: pg_sys::Relation,
    nkeys: i32,
    norderbys: i32,
) -> pg_sys::IndexScanDesc {
    let scan = pg_sys::RelationGetIndexScan(index, nkeys, norderbys);
    // A child of the scan's memory context: it goes away with the scan.
    let rescan_cxt = pg_sys::AllocSetContextCreateInternal(
        pg_sys::CurrentMemoryContext,
        c"learned index rescan".as_ptr(),
        pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
        pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
        pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
    );
    let state = ScanState {
        kind: index_kind(index),
        hints: None,
        plan: Plan::default(),
        keep_pins: false,
        rescan_cxt,
        gathered: false,
        delta: Vec::new(),
        delta_nulls: Vec::new(),
        delta_pins: Vec::new(),
        batch: None,
        items: Vec::new(),
        run_items: Vec::new(),
        itup: [0; 3],
    };
    // The state is dropped when the scan's memory context goes away, which
    // also covers scans an error interrupts before amendscan (their pins are
    // the resource owner's to release, see `HeldPin`).
    let mut cxt = PgMemoryContexts::CurrentMemoryContext;
    (*scan).opaque = cxt.leak_and_drop_on_delete(Some(state)).cast();
    (*scan).xs_itupdesc = (*index).rd_att;
    scan
}

unsafe fn state<'a>(scan: pg_sys::IndexScanDesc) -> &'a mut ScanState {
    // SAFETY (callers): `opaque` was set by ambeginscan and is cleared only by
    // amendscan, after which the executor makes no further calls.
    (*((*scan).opaque as *mut Option<ScanState>))
        .as_mut()
        .expect("scan is open")
}

/// PostgreSQL's `IsMVCCSnapshot`.
unsafe fn is_mvcc(snapshot: pg_sys::Snapshot) -> bool {
    !snapshot.is_null()
        && matches!(
            (*snapshot).snapshot_type,
            pg_sys::SnapshotType::SNAPSHOT_MVCC | pg_sys::SnapshotType::SNAPSHOT_HISTORIC_MVCC
        )
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amrescan(
    scan: pg_sys::IndexScanDesc,
    keys: pg_sys::ScanKey,
    nkeys: i32,
    _orderbys: pg_sys::ScanKey,
    _norderbys: i32,
) {
    if !keys.is_null() && nkeys > 0 {
        std::ptr::copy(keys, (*scan).keyData, nkeys as usize);
    }
    let st = state(scan);
    st.invalidate();
    // Index-only scans set xs_want_itup before the first rescan.
    st.keep_pins = (*scan).xs_want_itup || !is_mvcc((*scan).xs_snapshot);
    let n = (*scan).numberOfKeys as usize;
    let keys = if n == 0 {
        &[][..]
    } else {
        std::slice::from_raw_parts((*scan).keyData, n)
    };
    pg_sys::MemoryContextReset(st.rescan_cxt);
    let kind = st.kind;
    st.plan = PgMemoryContexts::For(st.rescan_cxt).switch_to(|_| scankey::plan(kind, keys));
}

impl ScanState {
    fn hints(&mut self, rel: pg_sys::Relation) -> &Hints {
        self.hints.get_or_insert_with(|| {
            let meta = Meta::read(rel);
            let dir = delta::directory(rel, &meta, Strategy::DEFAULT);
            Hints { meta, dir }
        })
    }

    fn meta(&self) -> &Meta {
        &self
            .hints
            .as_ref()
            .expect("read when the scan started")
            .meta
    }

    /// Forgets the position and releases every pin: the next call starts over
    /// in its own direction, as btree does after a scan ran off either end.
    fn invalidate(&mut self) {
        if let Some(b) = self.batch.take() {
            b.release();
        }
        self.items.clear();
        self.gathered = false;
        self.delta.clear();
        self.delta_nulls.clear();
        self.delta_pins.drain(..).for_each(HeldPin::release);
    }

    /// Makes `b` the current batch, releasing the one before.
    fn set_batch(&mut self, b: Batch) {
        if let Some(old) = self.batch.replace(b) {
            old.release();
        }
    }

    /// Gathers the delta entries the plan can return, from the delta pages
    /// whose directory entry says they may hold some.
    fn gather(&mut self, rel: pg_sys::Relation) {
        self.hints(rel);
        let hints = self.hints.as_ref().unwrap();
        let hull = self.plan.hull();
        let plan = &self.plan;
        // Delta pages of earlier generations are merged into this one's run.
        let current = hints
            .dir
            .iter()
            .filter(|d| d.generation >= hints.meta.generation);
        for d in current {
            let keys = hull.is_some_and(|(lo, hi)| d.may_hold(lo, hi));
            let nulls = plan.nulls && d.may_hold_nulls();
            if !(keys || nulls) {
                continue;
            }
            let page = DeltaPage::read(rel, d.blk, Strategy::DEFAULT);
            let before = self.delta.len() + self.delta_nulls.len();
            for e in page.entries() {
                if e.null {
                    if plan.nulls {
                        self.delta_nulls.push(e.tid);
                    }
                } else if plan.contains(e.key) {
                    self.delta.push(e);
                }
            }
            if self.keep_pins && self.delta.len() + self.delta_nulls.len() > before {
                self.delta_pins.push(page.into_pin().into_held());
            }
        }
        self.delta.sort_unstable_by_key(|e| (e.key, e.tid));
        self.gathered = true;
        // SAFETY: counts an index scan in pg_stat_all_indexes, as
        // pgstat_count_index_scan does.
        unsafe { count_scan(rel) };
    }

    /// Delta entries of interval `k`: `delta[dlo..dhi]`.
    fn delta_range(&self, k: usize) -> (usize, usize) {
        let (lo, hi) = self.plan.intervals[k];
        (
            self.delta.partition_point(|e| e.key < lo),
            self.delta.partition_point(|e| e.key <= hi),
        )
    }

    /// Positions the scan on the first (forward) or last batch. False if the
    /// plan selects nothing at all.
    fn begin(&mut self, rel: pg_sys::Relation, forward: bool) -> bool {
        if !self.gathered {
            self.gather(rel);
        }
        let n = self.plan.intervals.len();
        if forward {
            if n > 0 {
                self.start_interval(rel, 0, true);
            } else if self.plan.nulls {
                self.load_nulls(rel, 0, true);
            } else {
                return false;
            }
        } else if self.plan.nulls {
            let last = Section::nulls(self.meta()).pages;
            self.load_nulls(rel, last, false);
        } else if n > 0 {
            self.start_interval(rel, n - 1, false);
        } else {
            return false;
        }
        true
    }

    /// Seeks the run for interval `k`: its first entry (forward) or the entry
    /// after its last (backward), and loads the batch there.
    fn start_interval(&mut self, rel: pg_sys::Relation, k: usize, forward: bool) {
        let (lo, hi) = self.plan.intervals[k];
        let (dlo, dhi) = self.delta_range(k);
        let meta = *self.meta();
        let run = Section::run(&meta);
        let seek_key = if forward { Some(lo) } else { hi.checked_add(1) };
        let (pos, page) = match seek_key {
            // Backward from the largest ordinal: the end of the run.
            None => (run.entries, None),
            Some(key) => {
                // The view lives only inside this callback: rd_amcache may be
                // rebuilt between callbacks.
                let model = model_pages::load(rel, &meta);
                run.seek(rel, key, model.window(key))
            }
        };
        if forward {
            self.load_forward(rel, k, pos, page, dlo, true);
        } else {
            self.load_backward(rel, k, pos, page, dhi, true);
        }
    }

    /// Reads the run page holding position `pos`, unless `page` is it.
    fn page_at(&self, rel: pg_sys::Relation, pos: u64, page: Option<RunPage>) -> RunPage {
        let run = Section::run(self.meta());
        let i = run.page_of(pos);
        match page {
            Some(p) if p.buf().blkno() == run.block(rel, i) => p,
            _ => run.read(rel, i),
        }
    }

    /// Loads the batch of interval `k` that begins at run position `start`
    /// and delta entry `d0`, reading forward. `end_bwd`: nothing of the
    /// interval lies before it.
    fn load_forward(
        &mut self,
        rel: pg_sys::Relation,
        k: usize,
        start: u64,
        page: Option<RunPage>,
        d0: usize,
        end_bwd: bool,
    ) {
        let hi = self.plan.intervals[k].1;
        let (_, dhi) = self.delta_range(k);
        let run = Section::run(self.meta());
        let mut b = Bounds {
            segment: Segment::Interval(k),
            run_lo: start,
            run_hi: start,
            run_end_fwd: true,
            run_end_bwd: end_bwd,
            d0,
            d1: dhi,
        };
        let mut pin = None;
        self.run_items.clear();
        if start < run.entries {
            let page = self.page_at(rel, start, page);
            let (ps, pe) = run.page_span(run.page_of(start));
            let mut s = (start - ps) as usize;
            let mut last = None;
            while s < page.len() {
                let key = page.key(s);
                if key > hi {
                    break;
                }
                if !page.dead(s) {
                    self.run_items.push((key, page.tid(s)));
                }
                last = Some(key);
                s += 1;
            }
            b.run_hi = ps + s as u64;
            b.run_end_fwd = s < page.len() || pe == run.entries;
            if let (false, Some(last)) = (b.run_end_fwd, last) {
                // Delta entries below the slice's last key fall among it; the
                // rest come after it.
                b.d1 = d0 + self.delta[d0..dhi].partition_point(|e| e.key < last);
            }
            pin = self.keep_pins.then(|| page.into_pin().into_held());
        }
        self.merge(b, pin, true);
    }

    /// Loads the batch of interval `k` that ends before run position `end`
    /// and delta entry `d1`, reading backward. `end_fwd`: nothing of the
    /// interval lies after it.
    fn load_backward(
        &mut self,
        rel: pg_sys::Relation,
        k: usize,
        end: u64,
        page: Option<RunPage>,
        d1: usize,
        end_fwd: bool,
    ) {
        let lo = self.plan.intervals[k].0;
        let (dlo, _) = self.delta_range(k);
        let run = Section::run(self.meta());
        let mut b = Bounds {
            segment: Segment::Interval(k),
            run_lo: end,
            run_hi: end,
            run_end_fwd: end_fwd,
            run_end_bwd: true,
            d0: dlo,
            d1,
        };
        let mut pin = None;
        self.run_items.clear();
        if end > 0 {
            let page = self.page_at(rel, end - 1, page);
            let (ps, _) = run.page_span(run.page_of(end - 1));
            let stop = (end - ps) as usize;
            let mut s = stop;
            while s > 0 && page.key(s - 1) >= lo {
                s -= 1;
            }
            self.run_items.extend(
                (s..stop)
                    .filter(|&i| !page.dead(i))
                    .map(|i| (page.key(i), page.tid(i))),
            );
            b.run_lo = ps + s as u64;
            b.run_end_bwd = s > 0 || ps == 0;
            if !b.run_end_bwd && s < stop {
                // Delta entries from the slice's first key on fall among it;
                // those below it come before it.
                let first = page.key(s);
                b.d0 = dlo + self.delta[dlo..d1].partition_point(|e| e.key < first);
            }
            pin = self.keep_pins.then(|| page.into_pin().into_held());
        }
        self.merge(b, pin, false);
    }

    /// Makes `b` the current batch: its run slice (in `run_items`) merged
    /// with its delta entries.
    fn merge(&mut self, b: Bounds, pin: Option<HeldPin>, forward: bool) {
        self.items.clear();
        let delta = &self.delta[b.d0..b.d1];
        let mut d = 0;
        for &(key, tid) in &self.run_items {
            while d < delta.len() && delta[d].key < key {
                self.items.push((Some(delta[d].key), delta[d].tid));
                d += 1;
            }
            self.items.push((Some(key), tid));
        }
        self.items
            .extend(delta[d..].iter().map(|e| (Some(e.key), e.tid)));
        let cur = if forward {
            -1
        } else {
            self.items.len() as isize
        };
        self.set_batch(Batch {
            bounds: b,
            cur,
            pin,
        });
    }

    /// NULL page `i`, or the delta NULLs when `i` is the number of NULL pages.
    fn load_nulls(&mut self, rel: pg_sys::Relation, i: u32, forward: bool) {
        let nulls = Section::nulls(self.meta());
        self.items.clear();
        let mut pin = None;
        if i < nulls.pages {
            let page = nulls.read(rel, i);
            self.items.extend(page.live().map(|s| (None, page.tid(s))));
            pin = self.keep_pins.then(|| page.into_pin().into_held());
        } else {
            self.items
                .extend(self.delta_nulls.iter().map(|&t| (None, t)));
        }
        self.set_batch(Batch {
            bounds: Bounds {
                segment: Segment::Nulls(i),
                run_lo: 0,
                run_hi: 0,
                run_end_fwd: true,
                run_end_bwd: true,
                d0: 0,
                d1: 0,
            },
            cur: if forward {
                -1
            } else {
                self.items.len() as isize
            },
            pin,
        });
    }

    /// Moves to the batch after the current one; false at the end.
    fn next_batch(&mut self, rel: pg_sys::Relation) -> bool {
        // The new batch replaces (and releases) the current one.
        let b = self.batch.as_ref().expect("positioned").bounds();
        let n = self.plan.intervals.len();
        match b.segment {
            Segment::Interval(k) => {
                // A batch that reached the end of the interval's run part
                // also took the interval's remaining delta entries.
                debug_assert!(!b.run_end_fwd || b.d1 == self.delta_range(k).1);
                if !b.run_end_fwd {
                    self.load_forward(rel, k, b.run_hi, None, b.d1, false);
                } else if k + 1 < n {
                    self.start_interval(rel, k + 1, true);
                } else if self.plan.nulls {
                    self.load_nulls(rel, 0, true);
                } else {
                    return false;
                }
            }
            Segment::Nulls(i) => {
                if i < Section::nulls(self.meta()).pages {
                    self.load_nulls(rel, i + 1, true);
                } else {
                    return false;
                }
            }
        }
        true
    }

    /// Moves to the batch before the current one; false at the start.
    fn prev_batch(&mut self, rel: pg_sys::Relation) -> bool {
        let b = self.batch.as_ref().expect("positioned").bounds();
        let n = self.plan.intervals.len();
        match b.segment {
            Segment::Interval(k) => {
                debug_assert!(!b.run_end_bwd || b.d0 == self.delta_range(k).0);
                if !b.run_end_bwd {
                    self.load_backward(rel, k, b.run_lo, None, b.d0, false);
                } else if k > 0 {
                    self.start_interval(rel, k - 1, false);
                } else {
                    return false;
                }
            }
            Segment::Nulls(i) => {
                if i > 0 {
                    self.load_nulls(rel, i - 1, false);
                } else if n > 0 {
                    self.start_interval(rel, n - 1, false);
                } else {
                    return false;
                }
            }
        }
        true
    }

    /// The next entry in `forward` direction, or `None` when the scan ran off
    /// that end (and is then no longer positioned).
    fn step(&mut self, rel: pg_sys::Relation, forward: bool) -> Option<(Option<u64>, Tid)> {
        if self.batch.is_none() && !self.begin(rel, forward) {
            self.invalidate();
            return None;
        }
        loop {
            let b = self.batch.as_mut().unwrap();
            b.cur += if forward { 1 } else { -1 };
            if b.cur >= 0 && (b.cur as usize) < self.items.len() {
                return Some(self.items[b.cur as usize]);
            }
            let moved = if forward {
                self.next_batch(rel)
            } else {
                self.prev_batch(rel)
            };
            if !moved {
                self.invalidate();
                return None;
            }
        }
    }
}

unsafe fn count_scan(rel: pg_sys::Relation) {
    if (*rel).pgstat_enabled {
        if (*rel).pgstat_info.is_null() {
            pg_sys::pgstat_assoc_relation(rel);
        }
        if !(*rel).pgstat_info.is_null() {
            (*(*rel).pgstat_info).t_counts.t_numscans += 1;
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amgettuple(
    scan: pg_sys::IndexScanDesc,
    direction: pg_sys::ScanDirection::Type,
) -> bool {
    let rel = (*scan).indexRelation;
    let st = state(scan);
    let forward = direction != pg_sys::ScanDirection::BackwardScanDirection;
    let Some((key, tid)) = st.step(rel, forward) else {
        return false;
    };
    (*scan).xs_heaptid = tid_to_ptr(tid);
    (*scan).xs_recheck = st.plan.recheck;
    if (*scan).xs_want_itup {
        (*scan).xs_itup = form_tuple(&mut st.itup, st.kind, key);
    }
    true
}

/// Writes the index tuple `index_form_tuple` would build for one by-value key
/// column: an 8-byte header, then the value at offset 8 (every supported
/// type's alignment divides 8), or for NULL the null bitmap and no data.
fn form_tuple(buf: &mut [u64; 3], kind: KeyKind, key: Option<u64>) -> pg_sys::IndexTuple {
    const INDEX_NULL_MASK: u64 = 0x8000;
    *buf = [0; 3];
    match key {
        None => buf[0] = (16 | INDEX_NULL_MASK) << 48, // t_info: size 16, has nulls; bitmap bit 0 clear
        Some(k) => {
            let d = datum(kind, k).value() as u64;
            buf[0] = 16 << 48; // t_info: size 16
            buf[1] = match kind {
                KeyKind::Int2 => d & 0xffff,
                KeyKind::Int4 | KeyKind::Date | KeyKind::Float4 => d & 0xffff_ffff,
                _ => d,
            };
        }
    }
    buf.as_mut_ptr().cast()
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amgetbitmap(
    scan: pg_sys::IndexScanDesc,
    tbm: *mut pg_sys::TIDBitmap,
) -> i64 {
    let rel = (*scan).indexRelation;
    let st = state(scan);
    st.invalidate();
    let mut total = 0i64;
    let mut tids: Vec<pg_sys::ItemPointerData> = Vec::new();
    let mut more = st.begin(rel, true);
    while more {
        tids.clear();
        tids.extend(st.items.iter().map(|&(_, t)| tid_to_ptr(t)));
        if !tids.is_empty() {
            pg_sys::tbm_add_tuples(tbm, tids.as_mut_ptr(), tids.len() as i32, st.plan.recheck);
            total += tids.len() as i64;
        }
        pgrx::check_for_interrupts!();
        more = st.next_batch(rel);
    }
    st.invalidate();
    total
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amendscan(scan: pg_sys::IndexScanDesc) {
    let slot = (*scan).opaque as *mut Option<ScanState>;
    if let Some(mut st) = (*slot).take() {
        // Pins are released here, on the normal path only: after an abort the
        // resource owner has released them and the state is just memory.
        st.invalidate();
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amcanreturn(_index: pg_sys::Relation, _attno: i32) -> bool {
    true
}
