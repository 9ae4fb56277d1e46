//! Index scans: `ambeginscan`, `amrescan`, `amgettuple`, `amgetbitmap`,
//! `amendscan`, `amcanreturn`.
//!
//! What a scan returns, ascending: for each interval of its plan, the run
//! entries in it merged with the delta entries in it, in (key, TID) order,
//! then the NULLs (NULL pages merged with delta NULLs) in TID order. A
//! backward scan returns the same sequence reversed, and a scan may change
//! direction at any point, as btree's can.
//!
//! The scan walks that sequence in batches: one run page's slice of an
//! interval with the delta entries that fall among it, or one NULL page. A
//! batch read forward and the same batch read backward may split the delta
//! entries at a different place, but both are pieces of the one sequence, so
//! moving back and forth over batches returns each entry in its place.
//!
//! Every generation holds the entries of the one before (less what VACUUM
//! removed, plus what was inserted since) in that same order, so a scan that
//! meets a page a newer generation reused, or finds its generation retired
//! (a hot standby query that outlived a retrain and the retirement after it:
//! the primary cannot see its snapshot), starts over from the metapage just
//! after the entry it returned last (DESIGN.md section 3).
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
use crate::storage::delta::{self, DeltaEntry, DeltaPage, PageFilters, Summary};
use crate::storage::meta::META_BLOCK;
use crate::storage::page::{recycled_error, Recycled};
use crate::storage::run::{tid_to_ptr, RunPage, Section, Tid};
use crate::storage::{model_pages, Buf, Meta};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;
use std::rc::Rc;

/// What a scan reads once and keeps across rescans (an MVCC scan's; any
/// other reads them again at each rescan). Both are hints: the delta may
/// have grown since, which an MVCC scan cannot see anyway (its snapshot is
/// older than this read), and entries are only ever removed from pages
/// under a cleanup lock (or with the whole page, once nothing reads it).
struct Hints {
    /// Shared with the sections a batch reads through (which borrow its
    /// extent lists) while the scan's state changes.
    meta: Rc<Meta>,
    /// The delta directory's summary, read by the first rescan whose keys
    /// the delta may hold: a lookup of a key below the run's last one, in a
    /// generation that has not spilled, does not read the directory (a delta
    /// of a million appended rows has nine directory pages).
    delta: Option<Summary>,
    /// Filters of the keys of the delta pages rescans read, so that a later
    /// probe of a key a page did not hold skips it (`key_filter.rs` says why
    /// that is exact). An MVCC scan's only: a dirty snapshot sees rows
    /// inserted after the read (its hints live for one rescan, but a scan
    /// that ran off an end and turns around gathers again).
    filters: PageFilters,
    /// Read during recovery: the standby's checks of [`ScanState::gather`]
    /// go on for this scan after a promotion (its session survives one),
    /// since retirements replayed before it did not wait for its snapshot.
    in_recovery: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Segment {
    Interval(usize),
    /// NULL page `i` with the delta NULLs among its TIDs; with no NULL pages,
    /// `Nulls(0)` is the delta NULLs alone.
    Nulls(u32),
}

/// Most times one call starts over on meeting recycled pages before it
/// gives up with a serialization failure.
const MAX_RESTARTS: u32 = 8;

/// Run slots the first forward batch of an interval reads at most (then up
/// to its group's end): a packed page holds up to 16,384 entries, and a scan
/// that stops early (a LIMIT) should not decode them all. Each batch after
/// it may read twice as many, so that a long scan reads a page a few times
/// at most.
const BATCH: usize = 512;

/// The entry a scan returned last: where it starts over from.
#[derive(Clone, Copy, Debug)]
struct Position {
    /// Its interval, `None` for a NULL.
    interval: Option<usize>,
    key: u64,
    tid: Tid,
}

/// The batch the scan is on: where it lies, its page's pin, and the position
/// of the scan in it.
struct Batch {
    bounds: Bounds,
    /// Index in `items` of the entry returned last; -1 or `items.len()` when
    /// none of this batch has been returned yet.
    cur: isize,
    /// Whether an entry of this batch has been returned (a repositioned
    /// batch's `cur` may point at an entry before the one returned last).
    returned: bool,
    /// A batch of NULLs (their `items` keys are 0).
    nulls: bool,
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
    /// Delta entries covered: `delta[d0..d1]` (of `delta_nulls` for NULLs).
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
    /// The scan descriptor this state belongs to (it outlives the state).
    scan: pg_sys::IndexScanDesc,
    kind: KeyKind,
    hints: Option<Hints>,
    plan: Plan,
    keep_pins: bool,
    /// The scan's snapshot is an MVCC one (see [`Hints::filters`]).
    mvcc: bool,
    /// Run slots the next forward batch reads at most: [`BATCH`] at an
    /// interval's start, doubled for each batch that goes on from there.
    batch_max: usize,
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
    /// The entry returned last before the current batch, while the scan is
    /// positioned (see [`ScanState::last_returned`]: it is not written per
    /// row).
    at: Option<Position>,
    /// The entries of the current batch, ascending (key 0 in a NULL batch).
    items: Vec<(u64, Tid)>,
    /// Scratch: a run page's slice of live entries.
    run_items: Vec<(u64, Tid)>,
    /// Scratch: the page's inserted entries the batch takes.
    ins_items: Vec<(u64, Tid)>,
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
        scan,
        kind: index_kind(index),
        hints: None,
        plan: Plan::default(),
        keep_pins: false,
        mvcc: false,
        batch_max: BATCH,
        rescan_cxt,
        gathered: false,
        delta: Vec::new(),
        delta_nulls: Vec::new(),
        delta_pins: Vec::new(),
        batch: None,
        at: None,
        items: Vec::new(),
        run_items: Vec::new(),
        ins_items: Vec::new(),
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
    let mvcc = is_mvcc((*scan).xs_snapshot);
    // The hints leave out only what was inserted after they were read,
    // which no MVCC snapshot sees; a dirty one, rescanned after its caller
    // waited for a row's inserter or updater (logical replication's apply
    // on PostgreSQL 18 does), must find the row's new version, wherever it
    // went meanwhile.
    if !mvcc {
        st.hints = None;
    }
    // Index-only scans set xs_want_itup before the first rescan.
    st.keep_pins = (*scan).xs_want_itup || !mvcc;
    st.mvcc = mvcc;
    let n = (*scan).numberOfKeys as usize;
    let keys = if n == 0 {
        &[][..]
    } else {
        std::slice::from_raw_parts((*scan).keyData, n)
    };
    // A scalar key allocates nothing there: skip the call (a guarded one)
    // for a nested loop's every probe, as MemoryContextReset itself would
    // do nothing. SAFETY: the context is ours, alive until amendscan.
    if !(*st.rescan_cxt).isReset || !(*st.rescan_cxt).firstchild.is_null() {
        pg_sys::MemoryContextReset(st.rescan_cxt);
    }
    let kind = st.kind;
    let plan = &mut st.plan;
    PgMemoryContexts::For(st.rescan_cxt).switch_to(|_| scankey::plan_into(kind, keys, plan));
}

impl ScanState {
    /// Reads the hints if this scan has none yet, and returns the metapage
    /// they were read from, still share-locked: the first gather reads the
    /// directory under that lock, if at all, rather than read the metapage
    /// again (see [`delta::directory_consistent`]).
    fn read_hints(&mut self, rel: pg_sys::Relation) -> Option<Buf> {
        if self.hints.is_some() {
            return None;
        }
        let buf = Buf::read_shared(rel, META_BLOCK);
        self.hints = Some(Hints {
            // SAFETY: block 0, pinned and share-locked.
            meta: Rc::new(unsafe { Meta::from_page(rel, buf.page()) }),
            delta: None,
            // SAFETY: reads a GUC of this process.
            filters: PageFilters::new(unsafe { pg_sys::work_mem as usize } * 1024),
            // SAFETY: reads shared memory (once recovery has ended, a flag
            // of this process).
            in_recovery: unsafe { pg_sys::RecoveryInProgress() },
        });
        Some(buf)
    }

    fn meta(&self) -> &Meta {
        self.meta_rc()
    }

    /// The metapage the hints were read from, for sections to borrow.
    fn shared_meta(&self) -> Rc<Meta> {
        Rc::clone(self.meta_rc())
    }

    fn meta_rc(&self) -> &Rc<Meta> {
        &self
            .hints
            .as_ref()
            .expect("read when the scan started")
            .meta
    }

    /// Forgets the position and releases every pin: the next call starts over
    /// in its own direction, as btree does after a scan ran off either end.
    fn invalidate(&mut self) {
        self.at = None;
        self.release_pages();
    }

    /// Releases the batch, the gathered delta and every pin, keeping the
    /// position.
    fn release_pages(&mut self) {
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
    ///
    /// On a hot standby nothing holds retirement back for this scan's
    /// snapshot: once the scan's generation is retired, the delta pages
    /// merged into the next one's run are freed (the metapage says so first,
    /// `retire` in src/retrain.rs), and their rows are in neither place the
    /// scan reads. So there, a delta page freed since the directory was
    /// read, or a metapage read after the delta pages that no longer lists
    /// the scan's generation, is `Recycled`: the scan starts over from the
    /// current generation. (On a primary the scan's snapshot holds
    /// retirement back; a scan that read the metapage before a promotion
    /// goes on checking.)
    fn gather(&mut self, rel: pg_sys::Relation) -> Result<(), Recycled> {
        let mut locked_meta = self.read_hints(rel);
        let hints = self.hints.as_mut().unwrap();
        let plan = &self.plan;
        // Unless the generation spilled, the delta holds keys only above the
        // run's last entry: the others are in the run pages' insert areas.
        let floor = match hints.meta.run_last() {
            Some((key, _)) if hints.meta.spilled == 0 => key,
            _ => 0,
        };
        let hull = plan
            .hull()
            .map(|(lo, hi)| (lo.max(floor), hi))
            .filter(|(lo, hi)| lo <= hi);
        if hull.is_none() && !plan.nulls {
            self.gathered = true;
            return Ok(());
        }
        let meta = &hints.meta;
        let standby = hints.in_recovery;
        // Delta pages of earlier generations are merged into this one's run.
        // What a standby must check against the metapage afterwards: the
        // directory, when read now, and any delta page read.
        let mut unchecked = hints.delta.is_none();
        // A probe of single keys, rescanned: the keys a filter must rule
        // out for the scan to skip a page (ranges read the pages).
        let points = self.mvcc && hints.delta.is_some() && !plan.nulls && plan.points_from(floor);
        let summary = match &mut hints.delta {
            Some(summary) => {
                // Rescanned: ordered once for every rescan to come.
                summary.order();
                summary
            }
            None => {
                // The directory as of one moment (a split changes two of its
                // pages at once): under the metapage's share lock.
                let dir = match locked_meta.take() {
                    Some(_locked) => delta::directory(rel, meta, Strategy::DEFAULT),
                    None => delta::directory_consistent(rel, Strategy::DEFAULT),
                };
                hints.delta.insert(Summary::new(dir, meta.generation))
            }
        };
        for d in summary.candidates(hull, plan.nulls) {
            let filter = if points {
                hints.filters.get(d.blk)
            } else {
                None
            };
            let filtered = filter.is_some();
            if let Some(filter) = filter {
                // The plan's keys the page may hold (sorted: a long array
                // costs a page only its own part of it).
                let (lo, hi) = d.range();
                let from = plan.intervals.partition_point(|&(k, _)| k < lo.max(floor));
                let keys = plan.intervals[from..].iter().map(|&(k, _)| k);
                if !keys.take_while(|&k| k <= hi).any(|k| filter.may_contain(k)) {
                    continue;
                }
            }
            let page = DeltaPage::read(rel, d.blk, Strategy::DEFAULT);
            unchecked = true;
            // A tag that changed since the directory was read is no sign:
            // carry raises a page's tag, absorb lowers it, and the scan's
            // generation reads the page either way (see the check below).
            if standby && page.is_free() {
                return Err(Recycled);
            }
            if points && !filtered {
                let keys = page.entries().filter(|e| !e.null).map(|e| e.key);
                hints.filters.remember(d.blk, keys, page.len());
            }
            let before = self.delta.len() + self.delta_nulls.len();
            if plan.nulls {
                for e in page.entries() {
                    if e.null {
                        self.delta_nulls.push(e.tid);
                    } else if plan.contains(e.key) {
                        self.delta.push(e);
                    }
                }
            } else if let Some((lo, hi)) = plan.hull() {
                self.delta
                    .extend(page.keys_in(lo, hi).filter(|e| plan.contains(e.key)));
            }
            if self.keep_pins && self.delta.len() + self.delta_nulls.len() > before {
                self.delta_pins.push(page.into_pin().into_held());
            }
        }
        // A directory read after a retire lists the merged pages free, and a
        // page freed and reused is not always told by its tag (one opened
        // after a retrain's freeze is tagged with the next generation;
        // absorbed, its tag is lowered; retired, freed; reused, tagged with
        // the next generation again). The retire made the metapage stop
        // listing the scan's generation first: read after the directory and
        // the pages, the metapage tells. (A page VACUUM emptied and an insert
        // reused holds only rows newer than the scan's snapshot.) A rescan
        // that reads no delta page reads nothing to check.
        if standby && unchecked && !Meta::read(rel).readable(meta.generation) {
            return Err(Recycled);
        }
        self.delta.sort_unstable_by_key(|e| (e.key, e.tid));
        self.delta_nulls.sort_unstable();
        self.gathered = true;
        Ok(())
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
    fn begin(&mut self, rel: pg_sys::Relation, forward: bool) -> Result<bool, Recycled> {
        if !self.gathered {
            self.gather(rel)?;
            // SAFETY: `self.scan` is the live descriptor of this scan.
            unsafe { count_search(self.scan) };
        }
        let n = self.plan.intervals.len();
        if forward {
            if n > 0 {
                self.start_interval(rel, 0, true)?;
            } else if self.plan.nulls {
                self.load_nulls(rel, 0, true, None)?;
            } else {
                return Ok(false);
            }
        } else if self.plan.nulls {
            let last = self.null_batches() - 1;
            self.load_nulls(rel, last, false, None)?;
        } else if n > 0 {
            self.start_interval(rel, n - 1, false)?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// Starts over from a fresh read of the metapage, just after `at` in
    /// direction `forward`: the batch of the run page that owns `at` (or
    /// the delta entries above the run) is loaded whole and the scan placed
    /// next to `at` in it.
    fn reposition(
        &mut self,
        rel: pg_sys::Relation,
        at: Position,
        forward: bool,
    ) -> Result<(), Recycled> {
        self.gather(rel)?;
        let pair = (at.key, at.tid);
        let Some(k) = at.interval else {
            return self.reposition_nulls(rel, at.tid, forward);
        };
        let meta = self.shared_meta();
        let g = model_pages::load(rel, &meta)?;
        let run = Section::run(&meta).with(g.dir);
        let (pos, page) = run.seek_pair(rel, pair, g.model.window(at.key))?;
        let (dlo, _) = self.delta_range(k);
        if pos < run.entries {
            let page = self.page_at(rel, &run, pos, page)?;
            let (ps, _) = run.page_span(page.index());
            let d0 = self.delta_after(dlo, page.fence());
            // The whole page, whose entries (and inserted ones) the pair
            // may lie anywhere among.
            self.load_forward(rel, k, ps, Some(page), d0, ps == 0, usize::MAX)?;
        } else {
            let d0 = self.delta_after(dlo, self.meta().run_last());
            self.load_forward(rel, k, run.entries, None, d0, false, usize::MAX)?;
        }
        let cur = if forward {
            self.items.partition_point(|&e| e <= pair) as isize - 1
        } else {
            self.items.partition_point(|&e| e < pair) as isize
        };
        self.batch.as_mut().expect("just loaded").cur = cur;
        Ok(())
    }

    /// The first of the interval's delta entries from `dlo` on that lies
    /// above `fence`.
    fn delta_after(&self, dlo: usize, fence: Option<(u64, Tid)>) -> usize {
        match fence {
            None => dlo,
            Some(f) => dlo + self.delta[dlo..].partition_point(|e| (e.key, e.tid) <= f),
        }
    }

    /// [`ScanState::reposition`] among the NULLs, which are in TID order.
    fn reposition_nulls(
        &mut self,
        rel: pg_sys::Relation,
        tid: Tid,
        forward: bool,
    ) -> Result<(), Recycled> {
        // The last NULL page whose first TID is at most `tid`, or the first.
        let nulls = Section::nulls(self.meta());
        let (mut lo, mut hi) = (0u32, nulls.pages);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if nulls.try_read(rel, mid)?.tid(0) <= tid {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.load_nulls(rel, lo, forward, None)?;
        let b = self.batch.as_mut().expect("just loaded");
        b.cur = if forward {
            self.items.partition_point(|&(_, t)| t <= tid) as isize - 1
        } else {
            self.items.partition_point(|&(_, t)| t < tid) as isize
        };
        Ok(())
    }

    /// Seeks the run for interval `k`: its first entry (forward) or the entry
    /// after its last (backward), and loads the batch there.
    fn start_interval(
        &mut self,
        rel: pg_sys::Relation,
        k: usize,
        forward: bool,
    ) -> Result<(), Recycled> {
        let (lo, hi) = self.plan.intervals[k];
        let (dlo, dhi) = self.delta_range(k);
        let meta = self.shared_meta();
        let run = Section::run(&meta);
        let seek_key = if forward { Some(lo) } else { hi.checked_add(1) };
        let above_run = |key: u64| self.meta().run_last().is_none_or(|(last, _)| key > last);
        let (pos, page) = match seek_key {
            // Backward from the largest ordinal: the end of the run.
            None => (run.entries, None),
            // Nothing of the run, its insert areas included, lies above its
            // last entry: keys being appended (timestamps) read no run page.
            Some(key) if forward && above_run(key) => (run.entries, None),
            Some(key) => {
                // The view lives only inside this callback: rd_amcache may be
                // rebuilt between callbacks.
                let g = model_pages::load(rel, self.meta())?;
                run.with(g.dir).seek(rel, key, g.model.window(key))?
            }
        };
        if forward {
            self.batch_max = BATCH;
            return self.load_forward(rel, k, pos, page, dlo, true, BATCH);
        }
        let run = if pos < run.entries {
            self.run(rel, &meta)?
        } else {
            run
        };
        if pos < run.entries && run.starts_page(pos) {
            // The interval's last entries may be inserted ones of the page
            // that begins here, below its first entry: its batch comes last.
            let page = self.page_at(rel, &run, pos, page)?;
            let d0 = self.delta_after(dlo, page.fence()).min(dhi);
            self.load_forward(rel, k, pos, Some(page), d0, pos == 0, BATCH)?;
            let b = self.batch.as_mut().expect("just loaded");
            b.cur = self.items.len() as isize;
            Ok(())
        } else {
            self.load_backward(rel, k, pos, page, dhi, true)
        }
    }

    /// The current generation's run with its page directory (cached with
    /// the model; the view lives only inside this callback).
    fn run<'m>(&self, rel: pg_sys::Relation, meta: &'m Meta) -> Result<Section<'m>, Recycled> {
        let g = model_pages::load(rel, meta)?;
        Ok(Section::run(meta).with(g.dir))
    }

    /// Reads the page of `run` holding position `pos`, unless `page` is it
    /// (a page of `run`: its span tells, without a search of the directory).
    fn page_at(
        &self,
        rel: pg_sys::Relation,
        run: &Section,
        pos: u64,
        page: Option<RunPage>,
    ) -> Result<RunPage, Recycled> {
        if let Some(p) = page {
            let (ps, pe) = run.page_span(p.index());
            if ps <= pos && pos < pe && p.buf().blkno() == run.block(rel, p.index()) {
                return Ok(p);
            }
        }
        run.try_read(rel, run.page_of(pos))
    }

    /// Loads the batch of interval `k` that begins at run position `start`
    /// and delta entry `d0`, reading forward at most `max` run slots (then
    /// to its group's end). `end_bwd`: nothing of the interval lies before
    /// it.
    #[allow(clippy::too_many_arguments)]
    fn load_forward(
        &mut self,
        rel: pg_sys::Relation,
        k: usize,
        start: u64,
        page: Option<RunPage>,
        d0: usize,
        end_bwd: bool,
        max: usize,
    ) -> Result<(), Recycled> {
        let hi = self.plan.intervals[k].1;
        let (_, dhi) = self.delta_range(k);
        let run_entries = self.meta().run_entries;
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
        self.ins_items.clear();
        if start < run_entries {
            let meta = self.shared_meta();
            let run = self.run(rel, &meta)?;
            let lo = self.plan.intervals[k].0;
            let page = self.page_at(rel, &run, start, page)?;
            let (ps, pe) = run.page_span(page.index());
            let s = (start - ps) as usize;
            let f = page.collect_forward(s, (lo, hi), max, &mut self.run_items);
            // A batch cut short of the page's end on its size owns the
            // inserted and delta entries below the next run entry, as a
            // backward batch ending there does; the next batch takes those
            // above that entry. (At the page's end, the next page owns what
            // lies above this one's last entry.)
            let cut = (!f.above && f.stop < page.len()).then(|| page.entry(f.stop));
            // Inserted entries the batch takes: all the page owns (from its
            // first slot), or those of the interval above the run entry
            // before the slice (at the interval's start), or those from its
            // first entry on (going on from a cut: an inserted pair can equal
            // a tombstoned run entry whose heap TID was reused); below `cut`.
            let from = (s > 0).then(|| {
                if end_bwd {
                    (page.entry(s - 1), false)
                } else {
                    (page.entry(s), true)
                }
            });
            self.ins_items
                .extend(page.inserted_in(lo, hi).filter(|&(key, tid)| {
                    from.is_none_or(|(a, equal)| (key, tid) > a || equal && (key, tid) == a)
                        && cut.is_none_or(|c| (key, tid) < c)
                }));
            b.run_hi = ps + f.stop as u64;
            b.run_end_fwd = f.above || (f.stop == page.len() && pe == run.entries);
            if let (false, Some(bound)) = (b.run_end_fwd, cut.or(f.last)) {
                // Delta entries below the bound fall among the batch; the
                // rest come after it.
                b.d1 = d0 + self.delta[d0..dhi].partition_point(|e| (e.key, e.tid) < bound);
            }
            pin = self.keep_pins.then(|| page.into_pin().into_held());
        }
        self.merge(b, pin, true);
        Ok(())
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
    ) -> Result<(), Recycled> {
        let lo = self.plan.intervals[k].0;
        let (dlo, _) = self.delta_range(k);
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
        self.ins_items.clear();
        if end > 0 {
            let meta = self.shared_meta();
            let run = self.run(rel, &meta)?;
            let hi = self.plan.intervals[k].1;
            let page = self.page_at(rel, &run, end - 1, page)?;
            let (ps, _) = run.page_span(page.index());
            let stop = (end - ps) as usize;
            // Inserted entries the batch takes: those of the interval below
            // the run entry after the slice (all the page owns, to its end).
            let before = (stop < page.len()).then(|| page.entry(stop));
            self.ins_items.extend(
                page.inserted_in(lo, hi)
                    .filter(|&(key, tid)| before.is_none_or(|b| (key, tid) < b)),
            );
            let mut s = stop;
            while s > 0 && page.key(s - 1) >= lo {
                s -= 1;
            }
            self.run_items
                .extend((s..stop).filter(|&i| !page.dead(i)).map(|i| page.entry(i)));
            b.run_lo = ps + s as u64;
            b.run_end_bwd = s > 0 || ps == 0;
            if !b.run_end_bwd {
                // Delta entries above the page's fence fall among it (as
                // its inserted entries do); those below come before it.
                b.d0 = self.delta_after(dlo, page.fence()).min(d1);
            }
            pin = self.keep_pins.then(|| page.into_pin().into_held());
        }
        self.merge(b, pin, false);
        Ok(())
    }

    /// Makes `b` the current batch: its run slice (in `run_items`) merged
    /// with its delta entries.
    fn merge(&mut self, b: Bounds, pin: Option<HeldPin>, forward: bool) {
        if !self.ins_items.is_empty() {
            // The page's inserted entries join its run slice in order.
            // Sorted, then merged in place from the back: no allocation
            // once the scratch vectors have grown.
            self.ins_items.sort_unstable();
            let (n, m) = (self.run_items.len(), self.ins_items.len());
            self.run_items.resize(n + m, (0, 0));
            let (mut r, mut i) = (n, m);
            for out in (0..n + m).rev() {
                if i == 0 {
                    break;
                }
                if r > 0 && self.run_items[r - 1] > self.ins_items[i - 1] {
                    self.run_items[out] = self.run_items[r - 1];
                    r -= 1;
                } else {
                    self.run_items[out] = self.ins_items[i - 1];
                    i -= 1;
                }
            }
            self.ins_items.clear();
        }
        let delta = &self.delta[b.d0..b.d1];
        if delta.is_empty() {
            // The common case: the run slice is the batch, no copy.
            std::mem::swap(&mut self.items, &mut self.run_items);
        } else {
            self.items.clear();
            let mut d = 0;
            for &e in &self.run_items {
                while d < delta.len() && (delta[d].key, delta[d].tid) < e {
                    self.items.push((delta[d].key, delta[d].tid));
                    d += 1;
                }
                self.items.push(e);
            }
            self.items.extend(delta[d..].iter().map(|e| (e.key, e.tid)));
        }
        let cur = if forward {
            -1
        } else {
            self.items.len() as isize
        };
        self.set_batch(Batch {
            bounds: b,
            cur,
            returned: false,
            nulls: false,
            pin,
        });
    }

    /// Batches of NULLs: one per NULL page, or one for the delta NULLs alone.
    fn null_batches(&self) -> u32 {
        Section::nulls(self.meta()).pages.max(1)
    }

    /// Loads NULL batch `i`: NULL page `i` merged with the delta NULLs among
    /// its TIDs. `edge` is where the batch the scan comes from ended in
    /// `delta_nulls`; the other end follows from the page's TIDs (a delta
    /// NULL between two pages goes with whichever is read first, as delta
    /// entries between run pages do).
    fn load_nulls(
        &mut self,
        rel: pg_sys::Relation,
        i: u32,
        forward: bool,
        edge: Option<usize>,
    ) -> Result<(), Recycled> {
        let meta = self.shared_meta();
        let nulls = Section::nulls(&meta);
        let last_batch = i + 1 >= nulls.pages.max(1);
        let all = self.delta_nulls.len();
        // The page's live TIDs, in the scratch run slice (keys unused).
        self.run_items.clear();
        let (mut d0, mut d1) = (
            if i == 0 { 0 } else { all },
            if last_batch { all } else { 0 },
        );
        let mut pin = None;
        if i < nulls.pages {
            let page = nulls.try_read(rel, i)?;
            self.run_items.extend(page.live().map(|s| (0, page.tid(s))));
            let (first, last) = (page.tid(0), page.tid(page.len() - 1));
            if i > 0 {
                d0 = self.delta_nulls.partition_point(|&t| t < first);
            }
            if !last_batch {
                d1 = self.delta_nulls.partition_point(|&t| t <= last);
            }
            pin = self.keep_pins.then(|| page.into_pin().into_held());
        }
        match (edge, forward) {
            (Some(e), true) => d0 = e,
            (Some(e), false) => d1 = e,
            (None, _) => {}
        }
        let d1 = d1.max(d0);
        self.items.clear();
        let delta = &self.delta_nulls[d0..d1];
        let mut d = 0;
        for &(_, t) in &self.run_items {
            while d < delta.len() && delta[d] < t {
                self.items.push((0, delta[d]));
                d += 1;
            }
            self.items.push((0, t));
        }
        self.items.extend(delta[d..].iter().map(|&t| (0, t)));
        self.set_batch(Batch {
            bounds: Bounds {
                segment: Segment::Nulls(i),
                run_lo: 0,
                run_hi: 0,
                run_end_fwd: true,
                run_end_bwd: true,
                d0,
                d1,
            },
            cur: if forward {
                -1
            } else {
                self.items.len() as isize
            },
            returned: false,
            nulls: true,
            pin,
        });
        Ok(())
    }

    /// Moves to the batch after the current one; false at the end.
    fn next_batch(&mut self, rel: pg_sys::Relation) -> Result<bool, Recycled> {
        // The new batch replaces (and releases) the current one.
        let b = self.batch.as_ref().expect("positioned").bounds();
        let n = self.plan.intervals.len();
        match b.segment {
            Segment::Interval(k) => {
                // A batch that reached the end of the interval's run part
                // also took the interval's remaining delta entries.
                debug_assert!(!b.run_end_fwd || b.d1 == self.delta_range(k).1);
                if !b.run_end_fwd {
                    self.batch_max = self.batch_max.saturating_mul(2);
                    self.load_forward(rel, k, b.run_hi, None, b.d1, false, self.batch_max)?;
                } else if k + 1 < n {
                    self.start_interval(rel, k + 1, true)?;
                } else if self.plan.nulls {
                    self.load_nulls(rel, 0, true, None)?;
                } else {
                    return Ok(false);
                }
            }
            Segment::Nulls(i) => {
                if i + 1 < self.null_batches() {
                    self.load_nulls(rel, i + 1, true, Some(b.d1))?;
                } else {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Moves to the batch before the current one; false at the start.
    fn prev_batch(&mut self, rel: pg_sys::Relation) -> Result<bool, Recycled> {
        let b = self.batch.as_ref().expect("positioned").bounds();
        let n = self.plan.intervals.len();
        match b.segment {
            Segment::Interval(k) => {
                debug_assert!(!b.run_end_bwd || b.d0 == self.delta_range(k).0);
                if !b.run_end_bwd {
                    self.load_backward(rel, k, b.run_lo, None, b.d0, false)?;
                } else if k > 0 {
                    self.start_interval(rel, k - 1, false)?;
                } else {
                    return Ok(false);
                }
            }
            Segment::Nulls(i) => {
                if i > 0 {
                    self.load_nulls(rel, i - 1, false, Some(b.d0))?;
                } else if n > 0 {
                    self.start_interval(rel, n - 1, false)?;
                } else {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The next entry in `forward` direction, or `None` when the scan ran off
    /// that end (and is then no longer positioned). A scan that meets a page
    /// a newer generation reused starts over from the metapage after the
    /// entry it returned last.
    #[inline]
    fn step(&mut self, rel: pg_sys::Relation, forward: bool) -> Option<(Option<u64>, Tid)> {
        self.step_in_batch(forward)
            .or_else(|| self.step_across(rel, forward))
    }

    /// The next entry of the current batch, if it has one: what most rows
    /// take, kept small so that `amgettuple` is.
    #[inline]
    fn step_in_batch(&mut self, forward: bool) -> Option<(Option<u64>, Tid)> {
        let b = self.batch.as_mut()?;
        let cur = b.cur + if forward { 1 } else { -1 };
        let &(key, tid) = self.items.get(usize::try_from(cur).ok()?)?;
        b.cur = cur;
        b.returned = true;
        Some((if b.nulls { None } else { Some(key) }, tid))
    }

    /// [`ScanState::step`] when the batch has no next entry: a batch is read,
    /// or the scan starts over.
    #[inline(never)]
    fn step_across(&mut self, rel: pg_sys::Relation, forward: bool) -> Option<(Option<u64>, Tid)> {
        for _ in 0..MAX_RESTARTS {
            match self.try_step(rel, forward) {
                Ok(next) => return next,
                Err(Recycled) => {
                    self.at = self.last_returned();
                    self.release_pages();
                    self.hints = None;
                }
            }
        }
        recycled_error(rel)
    }

    /// The entry returned last: in the current batch at `cur` (or next to
    /// it, once `cur` has stepped off the batch's end), else `at`. Kept this
    /// way so that returning a row writes nothing but `cur`.
    fn last_returned(&self) -> Option<Position> {
        let Some(b) = &self.batch else {
            return self.at;
        };
        let n = self.items.len() as isize;
        if !b.returned || n == 0 {
            return self.at;
        }
        // `cur` moves one entry a step, and a step off the batch leaves it:
        // off its end, the entry before was returned last; off its start,
        // the one after.
        let (key, tid) = self.items[b.cur.clamp(0, n - 1) as usize];
        Some(Position {
            interval: match b.bounds.segment {
                Segment::Interval(k) => Some(k),
                Segment::Nulls(_) => None,
            },
            key,
            tid,
        })
    }

    fn try_step(
        &mut self,
        rel: pg_sys::Relation,
        forward: bool,
    ) -> Result<Option<(Option<u64>, Tid)>, Recycled> {
        if self.batch.is_none() {
            match self.at {
                // Starting over after meeting a recycled page.
                Some(at) => self.reposition(rel, at, forward)?,
                None => {
                    if !self.begin(rel, forward)? {
                        self.invalidate();
                        return Ok(None);
                    }
                }
            }
        }
        loop {
            if let Some(next) = self.step_in_batch(forward) {
                return Ok(Some(next));
            }
            // Leaving the batch (the step leaves `cur` off it): what it
            // returned last is where a restart would begin.
            self.batch.as_mut().unwrap().cur += if forward { 1 } else { -1 };
            self.at = self.last_returned();
            let moved = if forward {
                self.next_batch(rel)?
            } else {
                self.prev_batch(rel)?
            };
            if !moved {
                self.invalidate();
                return Ok(None);
            }
        }
    }
}

/// Counts one descent of the index, as `_bt_first` does: in
/// `pg_stat_all_indexes.idx_scan` (`pgstat_count_index_scan`) and, from
/// PostgreSQL 18, in the "Index Searches" line of `EXPLAIN ANALYZE`.
///
/// # Safety
/// `scan` must be a live index scan descriptor.
unsafe fn count_search(scan: pg_sys::IndexScanDesc) {
    let rel = (*scan).indexRelation;
    if (*rel).pgstat_enabled {
        if (*rel).pgstat_info.is_null() {
            pg_sys::pgstat_assoc_relation(rel);
        }
        if !(*rel).pgstat_info.is_null() {
            // PostgreSQL 16 renamed t_counts.t_numscans to counts.numscans.
            #[cfg(feature = "pg15")]
            {
                (*(*rel).pgstat_info).t_counts.t_numscans += 1;
            }
            #[cfg(not(feature = "pg15"))]
            {
                (*(*rel).pgstat_info).counts.numscans += 1;
            }
        }
    }
    // PostgreSQL 18 hands the scan an instrumentation struct when EXPLAIN
    // ANALYZE (or a parallel leader) wants the number of searches.
    #[cfg(feature = "pg18")]
    if !(*scan).instrument.is_null() {
        (*(*scan).instrument).nsearches += 1;
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
    let mut total = 0i64;
    let mut tids: Vec<pg_sys::ItemPointerData> = Vec::new();
    // On meeting a recycled page the whole scan starts over from the
    // metapage: the bitmap is a set, so TIDs added twice are added once.
    for _ in 0..MAX_RESTARTS {
        st.invalidate();
        let mut pass = || -> Result<(), Recycled> {
            let mut more = st.begin(rel, true)?;
            while more {
                tids.clear();
                tids.extend(st.items.iter().map(|&(_, t)| tid_to_ptr(t)));
                if !tids.is_empty() {
                    // SAFETY: `tbm` is the executor's bitmap; the TIDs are
                    // valid item pointers of this batch.
                    unsafe {
                        pg_sys::tbm_add_tuples(
                            tbm,
                            tids.as_mut_ptr(),
                            tids.len() as i32,
                            st.plan.recheck,
                        )
                    };
                    total += tids.len() as i64;
                }
                pgrx::check_for_interrupts!();
                more = st.next_batch(rel)?;
            }
            Ok(())
        };
        if pass().is_ok() {
            st.invalidate();
            return total;
        }
        st.hints = None;
    }
    recycled_error(rel)
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

/// Index-only scans, except on a hot standby. An index-only scan returns a
/// row without visiting the heap when the visibility map says its page is
/// all-visible, so the entry must not be removed between the scan reading it
/// and the executor checking the map. On a primary, VACUUM removes entries
/// only under a cleanup lock, which waits for the scan's pin (module
/// comment). On a standby, the replay of that VACUUM is a Generic WAL record,
/// and its redo takes no cleanup lock (btree's own vacuum redo does): replay
/// would remove the entry, free the heap slot and set the map while the scan
/// holds the pin, and the scan would return the deleted row. Plain index scans
/// check every row in the heap and stay exact.
#[pg_guard]
pub unsafe extern "C-unwind" fn amcanreturn(_index: pg_sys::Relation, _attno: i32) -> bool {
    !pg_sys::RecoveryInProgress()
}
